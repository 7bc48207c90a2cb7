/* SPDX-License-Identifier: MIT */
/*
 * main.c: the settled binary's command line. One table names every subcommand with its usage and what runs it, so
 * that `settled --help`, `settled CMD --help`, the man page (generated at build time from these texts by
 * cmake/manpage.py) and the dispatch cannot disagree. serve, work, migrate and check-config are here; connect and
 * sync are in cli.c.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "args.h"
#include "cli.h"
#include "cli_prune.h"
#include "cli_events.h"
#include "cli_user.h"
#include "cli_notify.h"
#include "cli_dunning.h"
#include "cli_collect.h"
#include "config.h"
#include "log.h"
#include "migrate.h"
#include "routes.h"
#include "server.h"
#include "work.h"

extern char **environ;

#ifndef SETTLED_VERSION
#define SETTLED_VERSION "0.0.0-unknown"
#endif

/* One subcommand. usage prints its full help (the first line "usage: settled NAME ..."); run gets the loaded
 * configuration (or NULL when loads_config is false) and the arguments after the command word, --config FILE
 * included (it was read already; commands that parse their own arguments skip it), and returns the exit code. */
typedef struct st_gw_command_t {
    const char *name;
    const char *summary;
    void (*usage)(FILE *out);
    int (*run)(gw_config_t *cfg, int argc, char **argv);
    bool loads_config;
    bool own_args; /* parses its own arguments; otherwise main accepts only --config (and flags listed in run) */
} gw_command_t;

static const char settings_note[] = "\nSettings come from SETTLED_* environment variables and an optional KEY=value "
                                    "file given with\n--config FILE (or SETTLED_CONFIG); see settled(8) and "
                                    "docs/configuration.md.\n";

/* ---- serve, work, migrate, check-config, version, help ---- */

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: settled serve [--config FILE]\n"
            "\n"
            "Receive webhooks and serve the API and /healthz, /readyz, /metrics on SETTLED_LISTEN\n"
            "(default 127.0.0.1:8080), with SETTLED_WORKERS queue workers in the same process.\n"
            "Refuses to start until `settled migrate` has applied this binary's schema. Stops\n"
            "gracefully on SIGTERM or SIGINT. Tells systemd when it is ready (Type=notify).\n%s",
            settings_note);
}

static int serve_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_server_run(cfg);
}

static void work_usage(FILE *out)
{
    fprintf(out,
            "usage: settled work [--config FILE]\n"
            "\n"
            "Run queue workers only (SETTLED_WORKERS of them, at least one), to scale processing out\n"
            "beyond the workers of `settled serve`. Any number of them may share one database.\n"
            "Serves /healthz, /readyz and /metrics on SETTLED_OPS_LISTEN (default 127.0.0.1:9464; off to\n"
            "disable). Stops on SIGTERM or SIGINT after the batch in hand. Tells systemd when it is ready.\n%s",
            settings_note);
}

static int work_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_work_run(cfg);
}

static void migrate_usage(FILE *out)
{
    fprintf(out,
            "usage: settled migrate [--config FILE]\n"
            "\n"
            "Apply the database migrations and SQL functions compiled into this binary to\n"
            "SETTLED_DATABASE_URL. Run it after installing a new binary and before starting it.\n"
            "Running it again is harmless; several hosts may run it at once.\n%s",
            settings_note);
}

static int migrate_run(gw_config_t *cfg, int argc, char **argv)
{
    if (cfg->database_url == NULL || cfg->database_url[0] == '\0') {
        fprintf(stderr, "settled: SETTLED_DATABASE_URL: required by migrate\n");
        return 1;
    }
    /* 1 on failure, as the other commands */
    return gw_migrate_run(cfg->database_url, gw_schema_files, gw_schema_nfiles, gw_schema_functions,
                          gw_schema_nfunctions, stdout) != 0;
}

static void check_config_usage(FILE *out)
{
    fprintf(out,
            "usage: settled check-config [--config FILE] [--list-keys]\n"
            "\n"
            "Validate the configuration and print it, secrets redacted; exit 1 with\n"
            "\"settled: SETTLED_KEY: problem\" on the first bad setting.\n"
            "\n"
            "  --list-keys  print the name of every setting, one a line, and exit\n%s",
            settings_note);
}

static int check_config_run(gw_config_t *cfg, int argc, char **argv)
{
    gw_config_dump(cfg, stdout);
    printf("# configuration is valid\n");
    return 0;
}

static void version_usage(FILE *out)
{
    fprintf(out, "usage: settled version   (or settled --version)\n"
                 "\n"
                 "Print \"settled VERSION\" and exit.\n");
}

static int version_run(gw_config_t *cfg, int argc, char **argv)
{
    printf("settled %s\n", SETTLED_VERSION);
    return 0;
}

static int connect_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_cli_connect(cfg, argc, argv);
}

static int events_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_cli_events(cfg, argc, argv);
}

static int replay_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_cli_replay(cfg, argc, argv);
}

static int prune_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_cli_prune(cfg, argc, argv);
}

static int user_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_cli_user(cfg, argc, argv);
}

static int notify_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_cli_notify(cfg, argc, argv);
}

static int dunning_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_cli_dunning(cfg, argc, argv);
}

static int collect_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_cli_collect(cfg, argc, argv);
}

static int sync_run(gw_config_t *cfg, int argc, char **argv)
{
    return gw_cli_sync(cfg, argc, argv);
}

static void routes_usage(FILE *out)
{
    fprintf(out, "usage: settled routes [--json]\n"
                 "\n"
                 "Print the route table: method, path, who may call it (public, client, admin, admin|client) and the\n"
                 "route's name; with --json one JSON object a line, with the inputs each route declares. The tests\n"
                 "check docs/openapi.yaml and the access matrix against it.\n");
}

static int routes_run(gw_config_t *cfg, int argc, char **argv)
{
    bool json = false;
    for (int i = 0; i != argc; ++i) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            return gw_args_unknown("routes", argv[i]);
    }
    gw_routes_print(stdout, json);
    return 0;
}

static void help_usage(FILE *out)
{
    fprintf(out, "usage: settled help [COMMAND]\n"
                 "       settled help --commands\n"
                 "\n"
                 "Print the usage of settled, or of one command (the same as `settled COMMAND --help`).\n"
                 "\n"
                 "  --commands  print the name of every command, one a line\n");
}

static int help_run(gw_config_t *cfg, int argc, char **argv);

static const gw_command_t commands[] = {
    {"serve", "receive webhooks and serve the API (SETTLED_LISTEN, default 127.0.0.1:8080)", serve_usage, serve_run,
     true, false},
    {"work", "run queue workers only (SETTLED_WORKERS of them); /healthz, /readyz, /metrics on SETTLED_OPS_LISTEN",
     work_usage, work_run, true, false},
    {"migrate", "apply the database migrations compiled into this binary", migrate_usage, migrate_run, true, false},
    {"check-config", "validate the configuration and print it, secrets redacted", check_config_usage, check_config_run,
     true, false},
    {"connect", "connect a Xero organisation (connect xero --authorize | --refresh-token | --callback | --check)",
     gw_cli_connect_usage, connect_run, true, true},
    {"sync", "repair drift: sync xero [--since T] [--tenant ID] | sync stripe|gocardless [--since T] [--source S]",
     gw_cli_sync_usage, sync_run, true, true},
    {"events", "the stored webhook events: list [filters], show ID, forward ID --to URL --secret S",
     gw_cli_events_usage, events_run, true, true},
    {"replay", "process events again: ID... | --since T [filters] [--dry-run]", gw_cli_replay_usage, replay_run, true,
     true},
    {"prune", "delete done and ignored events older than --older-than AGE [--dry-run]", gw_cli_prune_usage, prune_run,
     true, true},
    {"routes", "print the route table (method, path, access, inputs)", routes_usage, routes_run, false, true},
    {"user", "portal users: add (or --invite), list, disable", gw_cli_user_usage, user_run, true, true},
    {"notify", "enqueue one rendered notification for a customer (e-mail or portal)", gw_cli_notify_usage, notify_run,
     true, true},
    {"dunning", "one dunning evaluation: reminders, receipts, warnings [--at TIMESTAMP] [--organisation SLUG]",
     gw_cli_dunning_usage, dunning_run, true, true},
    {"collect", "run one round of automatic collection: collect [--at TIMESTAMP] [--organisation SLUG]",
     gw_cli_collect_usage, collect_run, true, true},
    {"version", "print the version", version_usage, version_run, false, false},
    {"help", "print this help, or a command's", help_usage, help_run, false, true},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const gw_command_t *find_command(const char *name)
{
    for (size_t i = 0; i != NCOMMANDS; ++i)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: settled <command> [options] [--config FILE]\n"
                 "       settled <command> --help\n"
                 "       settled --version\n"
                 "\n"
                 "commands:\n");
    for (size_t i = 0; i != NCOMMANDS; ++i)
        fprintf(out, "  %-13s %s\n", commands[i].name, commands[i].summary);
    fputs(settings_note, out);
}

static int help_run(gw_config_t *cfg, int argc, char **argv)
{
    if (argc == 0) {
        usage(stdout);
        return 0;
    }
    if (gw_args_want_help(argc, argv)) {
        help_usage(stdout);
        return 0;
    }
    if (strcmp(argv[0], "--commands") == 0 && argc == 1) {
        for (size_t i = 0; i != NCOMMANDS; ++i)
            printf("%s\n", commands[i].name);
        return 0;
    }
    const gw_command_t *c = argc == 1 ? find_command(argv[0]) : NULL;
    if (c == NULL) {
        fprintf(stderr, "settled: help: unknown command %s (see `settled --help`)\n", argv[0]);
        return GW_ARGS_USAGE;
    }
    c->usage(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return GW_ARGS_USAGE;
    }
    const char *name = argv[1];
    if (gw_args_is_help(name)) {
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0)
        name = "version";
    const gw_command_t *cmd = find_command(name);
    if (cmd == NULL) {
        fprintf(stderr, "settled: unknown command: %s\n", name);
        usage(stderr);
        return GW_ARGS_USAGE;
    }
    int cargc = argc - 2;
    char **cargv = argv + 2;
    /* `settled CMD --help` prints the command's usage whatever else is there, before any setting is read */
    if (cmd->run != help_run && gw_args_want_help(cargc, cargv)) {
        cmd->usage(stdout);
        return 0;
    }

    const char *config_path = NULL;
    bool list_keys = false;
    for (int i = 0; i < cargc; ++i) {
        int rc = gw_args_value(cmd->name, cargc, cargv, &i, "--config", &config_path);
        if (rc < 0)
            return GW_ARGS_USAGE;
        if (rc > 0 || cmd->own_args)
            continue;
        if (strcmp(cargv[i], "--list-keys") == 0 && cmd->run == check_config_run)
            list_keys = true;
        else
            return gw_args_unknown(cmd->name, cargv[i]);
    }
    if (list_keys) {
        gw_config_list_keys(stdout);
        return 0;
    }
    if (!cmd->loads_config)
        return cmd->run(NULL, cargc, cargv);

    gw_config_t cfg;
    char err[512];
    if (gw_config_load(&cfg, config_path, environ, err, sizeof(err)) != 0) {
        fprintf(stderr, "settled: %s\n", err);
        return 1;
    }
    gw_log_min_level = cfg.log_level;
    gw_log_set_instance(cfg.instance_id);
    int ret = cmd->run(&cfg, cargc, cargv);
    gw_config_free(&cfg);
    return ret;
}
