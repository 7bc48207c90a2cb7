/* SPDX-License-Identifier: MIT */
/* cli.c: `settled connect` and `settled sync`: their flags, their output and their exit codes, over the domain. */
#include "cli.h"
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "args.h"
#include "crypto.h"
#include "db.h"
#include "http_client.h"
#include "mem.h"
#include "migrate.h"
#include "orgs.h"
#include "quota.h"
#include "orgs.h"
#include "payments.h"
#include "sync.h"
#include "xero_oauth.h"

/* ---- small helpers ---- */

static bool is_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* Frees a string that held a secret, wiping it first. */
static void free_secret(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* Reads one line from in (the refresh token), without its line end or trailing spaces. Returns it malloc'd, or NULL
 * at the end of the input. */
static char *read_line(FILE *in)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, in);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
        line[--n] = '\0';
    return line;
}

/* Finds query parameter name in url (the first one; the query ends at a '#') and percent-decodes its value ('+' is
 * a space) into *out (malloc'd). Returns 0, 1 if there is none (*out is then NULL), or -1 if its value is not
 * validly percent-encoded or holds a NUL (*out is then NULL). */
static int query_value(const char *url, const char *name, char **out)
{
    const char *q = strchr(url, '?');
    size_t nlen = strlen(name);
    *out = NULL;
    while (q != NULL) {
        ++q;
        size_t len = strcspn(q, "&#");
        if (len > nlen && strncmp(q, name, nlen) == 0 && q[nlen] == '=') {
            size_t vlen = len - nlen - 1, n = 0;
            char *v = gw_xmalloc(vlen + 1);
            if (gw_percent_decode(q + nlen + 1, vlen, GW_PERCENT_PLUS_SPACE, v, &n) != 0) {
                free(v);
                return -1;
            }
            *out = v;
            return 0;
        }
        q = q[len] == '&' ? q + len : NULL;
    }
    return 1;
}

/* ---- settled connect ---- */

void gw_cli_connect_usage(FILE *out)
{
    fprintf(out, "usage: settled connect xero --refresh-token TOKEN|- [--organisation SLUG]\n"
                 "       settled connect xero --authorize [--organisation SLUG]\n"
                 "       settled connect xero --callback URL\n"
                 "       settled connect xero --check [--refresh|--force-refresh] [--organisation SLUG]\n"
                 "\n"
                 "  --refresh-token  connect with an existing refresh token (it is used once and retired);\n"
                 "                   '-' reads it from standard input, which keeps it out of `ps` and shell history\n"
                 "  --authorize      print the URL an administrator opens to connect Xero (it works once)\n"
                 "  --callback       finish that connection with the address Xero redirected the browser to\n"
                 "                   (for when SETTLED_XERO_REDIRECT_URI does not reach a running settled)\n"
                 "  --check          list the tenants of every Xero token set of the organisation with its stored\n"
                 "                   access token; writes nothing (an expired access token is reported unverified)\n"
                 "  --refresh        with --check: refresh access tokens when needed (stores the rotated token)\n"
                 "                   and store the tenants of a token set that has none; --force-refresh: always\n"
                 "  --organisation   the organisation's slug (default SETTLED_ORGANISATION); created if missing\n"
                 "  --config FILE    read settings from FILE as well as the environment\n");
}

static void print_tenants(const gw_xero_tenants_t *tenants)
{
    for (size_t i = 0; i != tenants->n; ++i)
        printf("  %s  %s\n", tenants->list[i].tenant_id, tenants->list[i].name);
}

/* --refresh-token: connects with an existing refresh token. */
static int connect_refresh_token(gw_dbs_t *s, const gw_config_t *cfg, int64_t org_id, const char *refresh_token)
{
    gw_xero_connection_t c;
    gw_err_t err = GW_ERR_INIT;
    if (gw_xero_connect_refresh_token(s, cfg, org_id, refresh_token, &c, &err) != 0) {
        fprintf(stderr, "settled: %s\n", err.detail);
        return 1;
    }
    printf("xero token set %lld stored for organisation %lld; tenants:\n", (long long)c.token_id,
           (long long)c.organisation_id);
    print_tenants(&c.tenants);
    gw_xero_connection_free(&c);
    return 0;
}

/* --callback: completes an authorization from the address Xero redirected the browser to. */
static int connect_callback(gw_dbs_t *s, const gw_config_t *cfg, const char *url)
{
    char *code, *state, *error;
    int rc_code = query_value(url, "code", &code), rc_state = query_value(url, "state", &state),
        rc_error = query_value(url, "error", &error);
    int ret = 1;
    if (rc_code < 0 || rc_state < 0 || rc_error < 0) {
        fprintf(stderr, "settled: connect xero --callback: the URL has a malformed parameter (a bad %%-escape)\n");
    } else if (error != NULL) {
        bool safe = strlen(error) < 64 && strspn(error, "abcdefghijklmnopqrstuvwxyz_") == strlen(error);
        fprintf(stderr, "settled: Xero did not authorise the connection (%s)\n", safe ? error : "error");
    } else if (code == NULL || state == NULL) {
        fprintf(stderr, "settled: connect xero --callback: the URL has no code and state parameters\n");
    } else {
        gw_xero_connection_t c;
        gw_err_t err = GW_ERR_INIT;
        if (gw_xero_complete_authorization(s, cfg, code, state, NULL, &c, &err) != 0) {
            fprintf(stderr, "settled: %s\n", err.detail);
        } else {
            char summary[512];
            gw_xero_connection_summary(&c, summary, sizeof(summary));
            printf("%s\n", summary);
            gw_xero_connection_free(&c);
            ret = 0;
        }
    }
    free_secret(code);
    free(state);
    free(error);
    return ret;
}

/* --check: each token set of the organisation proven by GET /connections; mode GW_XERO_CHECK_READ writes nothing. */
static int connect_check(gw_dbs_t *s, const gw_config_t *cfg, int64_t org_id, int mode)
{
    gw_xero_token_set_t *sets;
    size_t n;
    gw_err_t err = GW_ERR_INIT;
    if (gw_xero_token_sets(s, org_id, &sets, &n, &err) != 0) {
        fprintf(stderr, "settled: %s\n", err.detail);
        return 1;
    }
    int ret = 0;
    if (n == 0) {
        fprintf(stderr, "settled: organisation %lld has no Xero connection: run `settled connect xero --authorize`\n",
                (long long)org_id);
        ret = 1;
    }
    for (size_t i = 0; i != n; ++i) {
        gw_xero_tenants_t tenants;
        gw_err_clear(&err);
        int rc = gw_xero_check_token_set(s, cfg, org_id, &sets[i], mode, &tenants, &err);
        if (rc == GW_XERO_UNVERIFIED) {
            printf("xero token set %lld: unverified, %zu tenant%s stored\n", (long long)sets[i].id,
                   sets[i].stored_tenants, sets[i].stored_tenants == 1 ? "" : "s");
            fprintf(stderr, "settled: %s\n", err.detail);
            continue;
        }
        if (rc != 0) {
            printf("xero token set %lld: %s\n", (long long)sets[i].id,
                   rc == GW_XERO_NEEDS_REAUTH ? "needs_reauth" : "error");
            fprintf(stderr, "settled: %s\n", err.detail);
            ret = 1;
            continue;
        }
        printf("xero token set %lld: ok, %zu tenant%s\n", (long long)sets[i].id, tenants.n, tenants.n == 1 ? "" : "s");
        print_tenants(&tenants);
        if (mode == GW_XERO_CHECK_READ && sets[i].stored_tenants == 0 && tenants.n != 0) {
            fprintf(stderr,
                    "settled: xero token set %lld: none of these organisations is stored yet: "
                    "`settled connect xero --check --refresh` stores them\n",
                    (long long)sets[i].id);
            ret = 1;
        }
        gw_xero_tenants_free(&tenants);
    }
    free(sets);
    return ret;
}

/* --check without --refresh: reads only (the organisation is looked up, not created; nothing is refreshed). */
static int connect_check_read_only(const gw_config_t *cfg, const char *slug)
{
    char msg[512];
    gw_err_t err = GW_ERR_INIT;
    int64_t org_id = 0;
    gw_dbs_t *s = gw_dbs_connect(cfg->database_url, msg, sizeof(msg));
    if (s == NULL) {
        fprintf(stderr, "settled: %s\n", msg);
        return 1;
    }
    int ret = 1, rc;
    if (gw_migrate_check(s, msg, sizeof(msg)) != 0) {
        fprintf(stderr, "settled: %s\n", msg);
    } else if ((rc = gw_xero_find_organisation(s, slug, &org_id, &err)) != 0) {
        if (rc > 0)
            fprintf(stderr, "settled: organisation %s does not exist, so it has no Xero connection\n", slug);
        else
            fprintf(stderr, "settled: %s\n", err.detail);
    } else {
        gw_http_options_t opts = {.timeout_ms = cfg->http_timeout_ms > 0 ? cfg->http_timeout_ms : 30000,
                                  .connect_timeout_ms =
                                      cfg->http_connect_timeout_ms > 0 ? cfg->http_connect_timeout_ms : 5000,
                                  .max_host_connections = 4,
                                  .max_body = 1 << 20};
        if (gw_http_init(&opts) != 0) {
            fprintf(stderr, "settled: cannot start the HTTP client\n");
        } else {
            ret = connect_check(s, cfg, org_id, GW_XERO_CHECK_READ);
            gw_http_shutdown();
        }
    }
    gw_dbs_close(s);
    return ret;
}

int gw_cli_connect(const gw_config_t *cfg, int argc, char **argv)
{
    const char *refresh_arg = NULL, *callback = NULL, *slug = cfg->organisation;
    bool authorize = false, check = false, force = false, refresh = false;
    if (argc < 1 || strcmp(argv[0], "xero") != 0) {
        fprintf(stderr, "settled: connect: unknown provider%s%s (only xero can be connected)\n", argc < 1 ? "" : ": ",
                argc < 1 ? "" : argv[0]);
        gw_cli_connect_usage(stderr);
        return 2;
    }
    static const char cmd[] = "connect xero";
    for (int i = 1; i < argc; ++i) {
        const char *config;
        int rc;
        if ((rc = gw_args_value(cmd, argc, argv, &i, "--refresh-token", &refresh_arg)) != 0 ||
            (rc = gw_args_value(cmd, argc, argv, &i, "--callback", &callback)) != 0 ||
            (rc = gw_args_value(cmd, argc, argv, &i, "--organisation", &slug)) != 0 ||
            (rc = gw_args_value(cmd, argc, argv, &i, "--config", &config)) != 0) { /* --config: read by main */
            if (rc < 0)
                return GW_ARGS_USAGE;
        } else if (strcmp(argv[i], "--authorize") == 0) {
            authorize = true;
        } else if (strcmp(argv[i], "--check") == 0) {
            check = true;
        } else if (strcmp(argv[i], "--force-refresh") == 0) {
            force = true;
        } else if (strcmp(argv[i], "--refresh") == 0) {
            refresh = true;
        } else if (gw_args_is_help(argv[i])) {
            gw_cli_connect_usage(stdout);
            return 0;
        } else {
            gw_args_unknown(cmd, argv[i]);
            gw_cli_connect_usage(stderr);
            return GW_ARGS_USAGE;
        }
    }
    if ((refresh_arg != NULL) + (callback != NULL) + authorize + check != 1 || ((force || refresh) && !check)) {
        fprintf(stderr,
                "settled: connect xero: give exactly one of --refresh-token, --authorize, --callback and --check\n");
        gw_cli_connect_usage(stderr);
        return 2;
    }
    if (!is_set(slug)) {
        fprintf(stderr, "settled: SETTLED_ORGANISATION: required (or give --organisation SLUG)\n");
        return 2;
    }

    /* every setting first, so a missing one is named before anything happens */
    gw_err_t err = GW_ERR_INIT;
    if (!is_set(cfg->database_url)) {
        fprintf(stderr, "settled: SETTLED_DATABASE_URL: required to connect Xero\n");
        return 1;
    }
    if (gw_xero_settings_check(
            cfg, (authorize ? 0 : GW_XERO_NEED_CLIENT) | (authorize || callback != NULL ? GW_XERO_NEED_REDIRECT : 0),
            &err) != 0) {
        fprintf(stderr, "settled: %s\n", err.detail);
        return 1;
    }

    char msg[512];
    int64_t org_id = 0;
    const char *slugs[] = {slug};
    int check_mode = force ? GW_XERO_CHECK_FORCE : refresh ? GW_XERO_CHECK_REFRESH : GW_XERO_CHECK_READ;
    if (check && check_mode == GW_XERO_CHECK_READ)
        return connect_check_read_only(cfg, slug);
    /* (a callback's organisation is the one its state names) */
    if (gw_orgs_bootstrap(cfg, slugs, callback != NULL ? 0 : 1, &org_id, msg, sizeof(msg)) != 0) {
        fprintf(stderr, "settled: %s\n", msg);
        return 1;
    }
    if (authorize) {
        /* the state's nonce is recorded, so that its callback can be used once */
        gw_dbs_t *s = gw_dbs_connect(cfg->database_url, msg, sizeof(msg));
        if (s == NULL) {
            fprintf(stderr, "settled: %s\n", msg);
            return 1;
        }
        char *url = gw_xero_authorize_url(s, cfg, org_id, 0, &err);
        gw_dbs_close(s);
        if (url == NULL) {
            fprintf(stderr, "settled: %s\n", err.detail);
            return 1;
        }
        printf("Open this URL as an administrator of the Xero organisation to connect it to '%s' "
               "(valid for %d minutes, once):\n%s\n",
               slug, GW_XERO_STATE_TTL / 60, url);
        free(url);
        return 0;
    }

    char *refresh_token = NULL;
    if (refresh_arg != NULL) {
        refresh_token = strcmp(refresh_arg, "-") == 0 ? read_line(stdin) : gw_xstrdup(refresh_arg);
        if (!is_set(refresh_token)) {
            fprintf(stderr, "settled: connect xero: the refresh token is empty\n");
            free_secret(refresh_token);
            return 2;
        }
    }
    gw_dbs_t *s = gw_dbs_connect(cfg->database_url, msg, sizeof(msg));
    if (s == NULL) {
        fprintf(stderr, "settled: %s\n", msg);
        free_secret(refresh_token);
        return 1;
    }
    gw_http_options_t opts = {.timeout_ms = cfg->http_timeout_ms > 0 ? cfg->http_timeout_ms : 30000,
                              .connect_timeout_ms =
                                  cfg->http_connect_timeout_ms > 0 ? cfg->http_connect_timeout_ms : 5000,
                              .max_host_connections = 4,
                              .max_body = 1 << 20};
    if (gw_http_init(&opts) != 0) {
        fprintf(stderr, "settled: cannot start the HTTP client\n");
        gw_dbs_close(s);
        free_secret(refresh_token);
        return 1;
    }
    int ret;
    if (check)
        ret = connect_check(s, cfg, org_id, check_mode);
    else if (callback != NULL)
        ret = connect_callback(s, cfg, callback); /* the organisation is the one the state names */
    else
        ret = connect_refresh_token(s, cfg, org_id, refresh_token);
    gw_http_shutdown();
    gw_dbs_close(s);
    free_secret(refresh_token);
    return ret;
}

/* ---- settled sync ---- */

/* --since, as PostgreSQL reads a timestamptz, in the form Xero's If-Modified-Since takes (UTC, no zone). */
static const char sql_since[] = "SELECT to_char($1::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')";

/* "xero.invoices" -> "invoices" */
static const char *kind_name(const char *kind)
{
    const char *dot = strchr(kind, '.');
    return dot != NULL ? dot + 1 : kind;
}

void gw_cli_sync_usage(FILE *out)
{
    fprintf(out, "usage: settled sync xero [--since 2026-01-31T00:00:00Z] [--tenant TENANT_ID] [--config FILE]\n"
                 "       settled sync stripe|gocardless [--since T] [--source NAME] [--config FILE]\n"
                 "\n"
                 "Bring the Xero mirror (invoices, contacts, credit notes) of every connected tenant up to date,\n"
                 "fetching what changed since the last sync (or everything, the first time). A progress line\n"
                 "is drawn in place on stderr when it is a terminal; the counts of each kind go to stdout.\n"
                 "\n"
                 "  --since   fetch what changed since this time instead (a timestamp PostgreSQL reads)\n"
                 "  --tenant  only this tenant: its Xero tenant id, as `settled connect xero --check` lists it\n"
                 "  --config  read settings from FILE as well as the environment\n"
                 "\n"
                 "sync stripe|gocardless lists the provider's payments, refunds, disputes (and, through the events\n"
                 "since T, every object that changed) and applies them like webhooks do, for the organisation of\n"
                 "the webhook source NAME (default: the default source). --since (a timestamp or an age: 90s, 30m,\n"
                 "2h, 7d) defaults to 30d.\n");
}

/* settled sync stripe|gocardless */
static int sync_payments(const gw_config_t *cfg, const char *provider, int argc, char **argv)
{
    char cmd[32];
    snprintf(cmd, sizeof(cmd), "sync %s", provider);
    const char *since = "30d", *source = NULL;
    for (int i = 1; i < argc; ++i) {
        const char *config;
        int rc;
        if ((rc = gw_args_value(cmd, argc, argv, &i, "--since", &since)) != 0 ||
            (rc = gw_args_value(cmd, argc, argv, &i, "--source", &source)) != 0 ||
            (rc = gw_args_value(cmd, argc, argv, &i, "--config", &config)) != 0) { /* --config: read by main */
            if (rc < 0)
                return GW_ARGS_USAGE;
        } else if (gw_args_is_help(argv[i])) {
            gw_cli_sync_usage(stdout);
            return 0;
        } else {
            return gw_args_unknown(cmd, argv[i]);
        }
    }
    const gw_source_t *src = gw_config_find_source(cfg, provider, source, source != NULL ? strlen(source) : 0);
    if (src == NULL) {
        fprintf(stderr, "settled: %s: no %s webhook source named %s is configured\n", cmd, provider,
                source != NULL ? source : "default");
        return 1;
    }
    if (gw_config_api_key(cfg, provider, src->name) == NULL) {
        const char *setting =
            strcmp(provider, "stripe") == 0 ? "SETTLED_STRIPE_SECRET_KEY" : "SETTLED_GOCARDLESS_ACCESS_TOKEN";
        if (strcmp(src->name, "default") == 0)
            fprintf(stderr, "settled: %s: %s is required to read the provider's objects\n", cmd, setting);
        else
            fprintf(stderr,
                    "settled: %s: %s__<SOURCE> (for source %s) or %s is required to read the provider's objects\n", cmd,
                    setting, src->name, setting);
        return 1;
    }
    if (!is_set(cfg->database_url)) {
        fprintf(stderr, "settled: SETTLED_DATABASE_URL: required by sync\n");
        return 1;
    }
    char msg[512];
    int64_t org;
    const char *slug = src->organisation;
    if (gw_orgs_bootstrap(cfg, &slug, 1, &org, msg, sizeof(msg)) != 0) {
        fprintf(stderr, "settled: %s: %s\n", cmd, msg);
        return 1;
    }
    gw_fetch_ctx_t ctx = {.cfg = cfg};
    if ((ctx.db = gw_dbs_connect(cfg->database_url, msg, sizeof(msg))) == NULL) {
        fprintf(stderr, "settled: %s\n", msg);
        return 1;
    }
    gw_err_t err = GW_ERR_INIT;
    if (gw_http_init_config(cfg) != 0 || gw_fetch_quotas_create(&ctx, &err) != 0) {
        fprintf(stderr, "settled: %s: %s\n", cmd, err.detail[0] != '\0' ? err.detail : "cannot start the HTTP client");
        gw_http_shutdown();
        gw_dbs_close(ctx.db);
        return 1;
    }
    printf("%s: source %s, organisation %s, objects since %s\n", provider, src->name, slug, since);
    fflush(stdout);
    gw_payments_sync_counts_t counts;
    int ret =
        gw_payments_sync(&ctx, provider, org, src->name, since, isatty(STDERR_FILENO), NULL, &counts, msg, sizeof(msg));
    if (ret != 0) {
        fprintf(stderr, "settled: %s failed after %ld of %ld objects: %s\n", cmd, counts.applied, counts.listed, msg);
        ret = strncmp(msg, "--since", 7) == 0 ? 2 : 1;
    } else {
        printf("  listed %ld objects, applied %ld\n", counts.listed, counts.applied);
    }
    gw_fetch_quotas_destroy(&ctx);
    gw_http_shutdown();
    gw_dbs_close(ctx.db);
    return ret;
}

/* Whether s has the shape of a UUID (8-4-4-4-12 hex digits), as every Xero tenant id does. */
static bool is_uuid(const char *s)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    if (strlen(s) != sizeof(shape) - 1)
        return false;
    for (size_t i = 0; shape[i] != '\0'; ++i)
        if (shape[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

int gw_cli_sync(const gw_config_t *cfg, int argc, char **argv)
{
    static const char cmd[] = "sync xero";
    const char *since = NULL, *only_tenant = NULL;
    if (argc >= 1 && (strcmp(argv[0], "stripe") == 0 || strcmp(argv[0], "gocardless") == 0))
        return sync_payments(cfg, argv[0], argc, argv);
    if (argc < 1 || strcmp(argv[0], "xero") != 0) {
        fprintf(stderr, "settled: sync: unknown provider%s%s (xero, stripe or gocardless)\n", argc < 1 ? "" : ": ",
                argc < 1 ? "" : argv[0]);
        gw_cli_sync_usage(stderr);
        return GW_ARGS_USAGE;
    }
    for (int i = 1; i < argc; ++i) {
        const char *config;
        int rc;
        if ((rc = gw_args_value(cmd, argc, argv, &i, "--since", &since)) != 0 ||
            (rc = gw_args_value(cmd, argc, argv, &i, "--tenant", &only_tenant)) != 0 ||
            (rc = gw_args_value(cmd, argc, argv, &i, "--config", &config)) != 0) { /* --config: read by main */
            if (rc < 0)
                return GW_ARGS_USAGE;
        } else if (gw_args_is_help(argv[i])) {
            gw_cli_sync_usage(stdout);
            return 0;
        } else {
            return gw_args_unknown(cmd, argv[i]);
        }
    }
    /* a tenant id that cannot be one is unknown: said here, rather than as PostgreSQL's complaint about a uuid */
    if (only_tenant != NULL && !is_uuid(only_tenant)) {
        fprintf(stderr,
                "settled: sync xero: unknown tenant %.80s: Xero tenant ids are UUIDs; "
                "`settled connect xero --check` lists the connected ones\n",
                only_tenant);
        return 1;
    }
    if (!is_set(cfg->database_url)) {
        fprintf(stderr, "settled: SETTLED_DATABASE_URL: required by sync\n");
        return 1;
    }
    char msg[512];
    gw_fetch_ctx_t ctx = {.cfg = cfg};
    if ((ctx.db = gw_dbs_connect(cfg->database_url, msg, sizeof(msg))) == NULL) {
        fprintf(stderr, "settled: %s\n", msg);
        return 1;
    }
    char since_iso[64] = "";
    if (since != NULL) {
        const char *p[] = {since};
        gw_dbs_result_t *r = gw_dbs_query(ctx.db, sql_since, 1, p);
        if (r == NULL) {
            fprintf(stderr, "settled: sync: --since: not a timestamp (e.g. 2026-01-31T00:00:00Z)\n");
            gw_dbs_close(ctx.db);
            return 2;
        }
        snprintf(since_iso, sizeof(since_iso), "%s", gw_dbs_value(r, 0, 0));
        gw_dbs_result_free(r);
    }
    if (gw_http_init_config(cfg) != 0) {
        fprintf(stderr, "settled: cannot start the HTTP client\n");
        gw_dbs_close(ctx.db);
        return 1;
    }
    gw_err_t err = GW_ERR_INIT;
    if (gw_fetch_quotas_create(&ctx, &err) != 0) {
        fprintf(stderr, "settled: %s\n", err.detail);
        gw_http_shutdown();
        gw_dbs_close(ctx.db);
        return 1;
    }
    gw_xero_stored_tenant_t *tenants = NULL;
    size_t n = 0;
    int ret = 0;
    if (gw_xero_stored_tenants(ctx.db, only_tenant, &tenants, &n, &err) != 0) {
        fprintf(stderr, "settled: sync: %s\n", err.detail);
        ret = 1;
    } else if (n == 0) {
        if (only_tenant != NULL)
            fprintf(stderr,
                    "settled: sync xero: unknown tenant %s: no connected Xero tenant has that id "
                    "(`settled connect xero --check` lists them)\n",
                    only_tenant);
        else
            fprintf(stderr, "settled: sync xero: no connected Xero tenant (connect one with `settled connect xero`)\n");
        ret = 1;
    }
    bool tty = isatty(STDERR_FILENO);
    for (size_t i = 0; ret == 0 && i != n; ++i) {
        const gw_xero_stored_tenant_t *t = &tenants[i];
        gw_sync_counts_t counts[GW_SYNC_NKINDS];
        printf("tenant %s (%s)\n", t->tenant_id, t->name);
        fflush(stdout);
        if (gw_sync_tenant(&ctx, t->organisation_id, t->tenant_id, t->token_id, since != NULL ? since_iso : NULL, tty,
                           counts, msg, sizeof(msg)) != 0) {
            /* (on a terminal, after the progress line it interrupts) */
            fprintf(stderr, "%ssettled: sync of tenant %s failed: %s\n", tty ? "\n" : "", t->tenant_id, msg);
            ret = 1;
            break;
        }
        for (int k = 0; k != GW_SYNC_NKINDS; ++k)
            printf("  %-12s fetched %ld, changed %ld, unchanged %ld\n", kind_name(gw_sync_kinds[k]), counts[k].fetched,
                   counts[k].changed, counts[k].unchanged);
    }
    gw_xero_stored_tenants_free(tenants, n);
    gw_fetch_quotas_destroy(&ctx);
    gw_http_shutdown();
    gw_dbs_close(ctx.db);
    return ret;
}
