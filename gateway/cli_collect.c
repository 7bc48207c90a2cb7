/* SPDX-License-Identifier: MIT */
/* cli_collect.c: `settled collect`: an operator's (and the tests') way to run one round of automatic collection at
 * an instant of their choosing: plan what is due then (collect_plan), send it, enqueue the notices of failures. */
#include "cli_collect.h"
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "accounts.h"
#include "args.h"
#include "collector.h"
#include "db.h"
#include "fetch.h"
#include "http_client.h"

void gw_cli_collect_usage(FILE *out)
{
    fprintf(out,
            "usage: settled collect [--at TIMESTAMP] [--organisation SLUG]\n"
            "\n"
            "Run one round of automatic collection: plan the attempts due at TIMESTAMP (default now; e.g.\n"
            "2026-03-31T23:30:00Z, or with an offset) in each organisation's time zone, send every attempt\n"
            "that is due (Stripe PaymentIntents off-session, GoCardless payments; each once, under its\n"
            "Idempotency-Key), and enqueue the collection_failed notices of attempts that failed. The outcome\n"
            "of a payment arrives later through the webhooks. --organisation plans for one organisation only.\n"
            "Prints what was planned, sent and notified. docs/collections.md, \"Automatic collection\".\n"
            "\n"
            "exit codes: 0 the round ran; 1 failed (the database, Redis, an unknown organisation); 2 usage error\n");
}

int gw_cli_collect(const gw_config_t *cfg, int argc, char **argv)
{
    const char *at = NULL, *org = NULL, *config = NULL;
    for (int i = 0; i < argc; ++i) {
        int r;
        if ((r = gw_args_value("collect", argc, argv, &i, "--at", &at)) != 0 ||
            (r = gw_args_value("collect", argc, argv, &i, "--organisation", &org)) != 0 ||
            (r = gw_args_value("collect", argc, argv, &i, "--config", &config)) != 0) {
            if (r < 0)
                return GW_ARGS_USAGE;
            continue;
        }
        return gw_args_unknown("collect", argv[i]);
    }
    if (cfg->database_url == NULL || cfg->database_url[0] == '\0') {
        fprintf(stderr, "settled: SETTLED_DATABASE_URL: required by collect\n");
        return 1;
    }
    char msg[512];
    gw_fetch_ctx_t ctx = {.cfg = cfg};
    if ((ctx.db = gw_dbs_connect(cfg->database_url, msg, sizeof(msg))) == NULL) {
        fprintf(stderr, "settled: %s\n", msg);
        return 1;
    }
    if (at != NULL) {
        const char *p[] = {at};
        gw_dbs_result_t *r = gw_dbs_query(ctx.db, "SELECT $1::timestamptz", 1, p);
        bool valid = r != NULL;
        gw_dbs_result_free(r);
        if (!valid) {
            fprintf(stderr, "settled: collect: --at: not a timestamp (e.g. 2026-01-31T00:00:00Z)\n");
            gw_dbs_close(ctx.db);
            return GW_ARGS_USAGE;
        }
    }
    int64_t org_id = 0;
    gw_err_t err = GW_ERR_INIT;
    if (org != NULL) {
        int found = gw_accounts_organisation(ctx.db, org, &org_id, &err);
        if (found != 1) {
            fprintf(stderr, "settled: collect: %s\n", found < 0 ? err.detail : "unknown organisation");
            gw_dbs_close(ctx.db);
            return 1;
        }
    }
    if (gw_http_init_config(cfg) != 0) {
        fprintf(stderr, "settled: cannot start the HTTP client\n");
        gw_dbs_close(ctx.db);
        return 1;
    }
    if (gw_fetch_quotas_create(&ctx, &err) != 0) {
        fprintf(stderr, "settled: %s\n", err.detail);
        gw_http_shutdown();
        gw_dbs_close(ctx.db);
        return 1;
    }
    int ret = 0;
    gw_collect_stats_t stats = {0};
    stats.planned = gw_collect_plan(&ctx, at, org_id, msg, sizeof(msg));
    if (stats.planned < 0) {
        fprintf(stderr, "settled: collect: %s\n", msg);
        ret = 1;
    }
    char host[64] = "unknown", owner[128];
    gethostname(host, sizeof(host) - 1);
    snprintf(owner, sizeof(owner), "%s:%d:cli-collect", host, (int)getpid());
    /* what is due now is sent; an attempt waiting for a retry of its call stays for the workers */
    for (int round = 0; ret == 0 && round != 100; ++round) {
        int n = gw_collect_send(&ctx, owner, GW_COLLECTOR_BATCH, NULL, &stats);
        if (n < 0) {
            fprintf(stderr, "settled: collect: the database failed while sending\n");
            ret = 1;
        }
        if (n <= 0)
            break;
    }
    if (ret == 0)
        printf("planned %d, sent %d, notified %d\n", stats.planned, stats.claimed, stats.notified);
    gw_fetch_quotas_destroy(&ctx);
    gw_http_shutdown();
    gw_dbs_close(ctx.db);
    return ret;
}
