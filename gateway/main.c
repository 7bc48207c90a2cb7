/* SPDX-License-Identifier: MIT */
/* main.c: the settled binary's command line: serve, work, migrate, check-config; connect and sync are in cli.c. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "config.h"
#include "log.h"
#include "migrate.h"
#include "server.h"
#include "work.h"

extern char **environ;

#ifndef SETTLED_VERSION
#define SETTLED_VERSION "0.1.0"
#endif

static void usage(FILE *out)
{
    fprintf(out, "usage: settled <command> [--config FILE]\n"
                 "\n"
                 "commands:\n"
                 "  serve          receive webhooks and serve the API (SETTLED_LISTEN, default 127.0.0.1:8080)\n"
                 "  migrate        apply the database migrations compiled into this binary\n"
                 "  check-config   validate the configuration and print it, secrets redacted\n"
                 "                 (--list-keys: print the name of every setting)\n"
                 "  work           run queue workers only (SETTLED_WORKERS of them, at least one); serves\n"
                 "                 /healthz, /readyz and /metrics on SETTLED_OPS_LISTEN (default 127.0.0.1:9464)\n"
                 "  sync xero      bring the Xero mirror up to date: [--since 2026-01-31T00:00:00Z] [--tenant ID]\n"
                 "  connect xero   connect a Xero organisation: --authorize (prints the URL to open),\n"
                 "                 --refresh-token T|- (migrate an existing connection), --callback URL,\n"
                 "                 --check [--force-refresh]; --organisation SLUG\n"
                 "  version        print the version\n"
                 "\n"
                 "Settings come from SETTLED_* environment variables and an optional KEY=value file;\n"
                 "see docs/configuration.md.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1], *config_path = NULL;
    int list_keys = 0;
    /* commands with arguments of their own get everything after the command; --config is theirs to skip */
    bool own_args = strcmp(cmd, "connect") == 0 || strcmp(cmd, "sync") == 0;
    for (int i = 2; own_args && i < argc; ++i)
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config_path = argv[++i];
    for (int i = 2; !own_args && i < argc; ++i) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--list-keys") == 0 && strcmp(cmd, "check-config") == 0) {
            list_keys = 1;
        } else {
            fprintf(stderr, "settled: unknown argument: %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("settled %s\n", SETTLED_VERSION);
        return 0;
    }
    if (strcmp(cmd, "check-config") == 0 && list_keys) {
        gw_config_list_keys(stdout);
        return 0;
    }
    if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "work") != 0 && strcmp(cmd, "migrate") != 0 &&
        strcmp(cmd, "check-config") != 0 && !own_args) {
        fprintf(stderr, "settled: unknown command: %s\n", cmd);
        usage(stderr);
        return 2;
    }

    gw_config_t cfg;
    char err[512];
    if (gw_config_load(&cfg, config_path, environ, err, sizeof(err)) != 0) {
        fprintf(stderr, "settled: %s\n", err);
        return 1;
    }
    gw_log_min_level = cfg.log_level;
    gw_log_set_instance(cfg.instance_id);

    int ret;
    if (strcmp(cmd, "check-config") == 0) {
        gw_config_dump(&cfg, stdout);
        printf("# configuration is valid\n");
        ret = 0;
    } else if (strcmp(cmd, "migrate") == 0) {
        if (cfg.database_url == NULL || cfg.database_url[0] == '\0') {
            fprintf(stderr, "settled: SETTLED_DATABASE_URL: required by migrate\n");
            ret = 1;
        } else {
            /* 1 on failure, as the other commands */
            ret = gw_migrate_run(cfg.database_url, gw_schema_files, gw_schema_nfiles, gw_schema_functions,
                                 gw_schema_nfunctions, stdout) != 0;
        }
    } else if (strcmp(cmd, "connect") == 0) {
        ret = gw_cli_connect(&cfg, argc - 2, argv + 2);
    } else if (strcmp(cmd, "sync") == 0) {
        ret = gw_cli_sync(&cfg, argc - 2, argv + 2);
    } else if (strcmp(cmd, "work") == 0) {
        ret = gw_work_run(&cfg);
    } else {
        ret = gw_server_run(&cfg);
    }
    gw_config_free(&cfg);
    return ret;
}
