/* SPDX-License-Identifier: MIT */
/* cli_dunning.c: `settled dunning`: one evaluation of the dunning plans, receipts and warnings at an instant, for
 * the tests (a simulated clock: one run per day) and for operators (the workers run one every
 * SETTLED_DUNNING_INTERVAL seconds). */
#include "cli_dunning.h"
#include <stdlib.h>
#include <string.h>
#include "args.h"
#include "db.h"
#include "dunning.h"

void gw_cli_dunning_usage(FILE *out)
{
    fprintf(out, "usage: settled dunning [--at TIMESTAMP] [--organisation SLUG]\n"
                 "\n"
                 "Run one dunning evaluation: enqueue the reminders of each open invoice's dunning plan whose day\n"
                 "has come, the receipts of succeeded payments, and the expiring-card and ended-mandate warnings,\n"
                 "each once ever (its dedupe key), for every organisation or the one of SLUG. settled work (or\n"
                 "serve) sends the e-mails.\n"
                 "  --at   the instant to evaluate at, as PostgreSQL reads a timestamptz (2026-03-01T09:00:00Z);\n"
                 "         default now. The organisation's date at that instant (its time zone) is \"today\".\n"
                 "Prints what was enqueued. Audited as system:dunning.\n"
                 "\n"
                 "exit codes: 0 evaluated; 1 failed (the database, an unknown organisation); 2 usage error\n");
}

int gw_cli_dunning(const gw_config_t *cfg, int argc, char **argv)
{
    const char *at = NULL, *org = NULL, *config = NULL;
    for (int i = 0; i < argc; ++i) {
        int r;
        if ((r = gw_args_value("dunning", argc, argv, &i, "--at", &at)) != 0 ||
            (r = gw_args_value("dunning", argc, argv, &i, "--organisation", &org)) != 0 ||
            (r = gw_args_value("dunning", argc, argv, &i, "--config", &config)) != 0) {
            if (r < 0)
                return GW_ARGS_USAGE;
            continue;
        }
        return gw_args_unknown("dunning", argv[i]);
    }
    if (cfg->database_url == NULL || cfg->database_url[0] == '\0') {
        fprintf(stderr, "settled: SETTLED_DATABASE_URL: required by dunning\n");
        return 1;
    }
    char msg[600];
    gw_dbs_t *db = gw_dbs_connect(cfg->database_url, msg, sizeof(msg));
    if (db == NULL) {
        fprintf(stderr, "settled: %s\n", msg);
        return 1;
    }
    if (at != NULL) {
        const char *params[] = {at};
        gw_dbs_result_t *r = gw_dbs_query(db, "SELECT $1::timestamptz", 1, params);
        if (r == NULL) {
            fprintf(stderr, "settled: dunning: --at: not a timestamp: %s\n", at);
            gw_dbs_close(db);
            return GW_ARGS_USAGE;
        }
        gw_dbs_result_free(r);
    }
    gw_dunning_counts_t c = {0};
    int n = gw_dunning_run(cfg, db, org, at, &c, msg, sizeof(msg));
    gw_dbs_close(db);
    if (n < 0) {
        fprintf(stderr, "settled: %s\n", msg);
        return 1;
    }
    if (n == 0 && org != NULL) {
        fprintf(stderr, "settled: dunning: unknown organisation\n");
        return 1;
    }
    printf("dunning: %d organisation%s: %d reminders (%d suppressed), %d receipts, %d warnings enqueued; %d skipped, "
           "%d failed\n",
           n, n == 1 ? "" : "s", c.reminders, c.suppressed, c.receipts, c.warnings, c.skipped, c.failed);
    return c.failed != 0 ? 1 : 0;
}
