/* SPDX-License-Identifier: MIT */
/* cli_prune.c: `settled prune`: its flags, its progress line and summary, and its exit codes, over domain/retention. */
#include "cli_prune.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "args.h"
#include "db.h"
#include "retention.h"

void gw_cli_prune_usage(FILE *out)
{
    fprintf(out, "usage: settled prune --older-than AGE [--dry-run]\n"
                 "\n"
                 "  --older-than  delete done and ignored events received more than AGE ago: a number of days\n"
                 "                (30 or 30d) or hours (12h); pending, failed, processing and dead events are\n"
                 "                never deleted, nor the audit log. Deliveries go once no event refers to them.\n"
                 "  --dry-run     count what would be deleted, and change nothing\n"
                 "\n"
                 "A pruned event cannot be replayed. SETTLED_RETENTION_DAYS makes the workers do this every hour.\n");
}

/* Parses AGE: digits with an optional d (days, the default) or h (hours) suffix, at least one hour in all. */
static int parse_age(const char *s, int64_t *seconds, char *shown, size_t shownlen)
{
    char *end;
    if (s[0] < '0' || s[0] > '9')
        return -1;
    long long n = strtoll(s, &end, 10);
    int64_t unit = 86400;
    const char *name = "day";
    if (*end == 'h')
        unit = 3600, name = "hour", ++end;
    else if (*end == 'd')
        ++end;
    if (*end != '\0' || n < 1 || n > 36500LL * 24)
        return -1;
    *seconds = (int64_t)n * unit;
    snprintf(shown, shownlen, "%lld %s%s", n, name, n == 1 ? "" : "s");
    return 0;
}

typedef struct st_progress_t {
    bool tty;
} progress_t;

static void on_progress(void *arg, const gw_retention_counts_t *so_far)
{
    progress_t *p = arg;
    if (!p->tty)
        return; /* one summary line at the end is enough for a log */
    printf("\rpruned %lld events and %lld deliveries so far...", so_far->events, so_far->deliveries);
    fflush(stdout);
}

int gw_cli_prune(const gw_config_t *cfg, int argc, char **argv)
{
    const char *age = NULL, *config = NULL; /* --config: main.c has read it */
    bool dry_run = false;
    for (int i = 0; i < argc; ++i) {
        int rc = gw_args_value("prune", argc, argv, &i, "--older-than", &age);
        if (rc == 0)
            rc = gw_args_value("prune", argc, argv, &i, "--config", &config);
        if (rc < 0)
            return GW_ARGS_USAGE;
        if (rc > 0)
            continue;
        if (strcmp(argv[i], "--dry-run") == 0)
            dry_run = true;
        else
            return gw_args_unknown("prune", argv[i]);
    }
    int64_t seconds;
    char shown[64];
    if (age == NULL) {
        fprintf(stderr, "settled: prune: --older-than is required\n");
        gw_cli_prune_usage(stderr);
        return 2;
    }
    if (parse_age(age, &seconds, shown, sizeof(shown)) != 0) {
        fprintf(stderr, "settled: prune: --older-than must be a number of days (90 or 90d) or hours (12h), at least "
                        "1 hour\n");
        return 2;
    }
    if (cfg->database_url == NULL) {
        fprintf(stderr, "settled: SETTLED_DATABASE_URL: required by prune\n");
        return 1;
    }
    gw_err_t err = GW_ERR_INIT;
    gw_dbs_t *db = gw_dbs_open(cfg->database_url, &err);
    if (db == NULL) {
        fprintf(stderr, "settled: %s\n", err.detail);
        return 1;
    }
    int ret = 1;
    gw_retention_counts_t n;
    if (dry_run) {
        if (gw_retention_preview(db, seconds, &n, &err) != 0) {
            fprintf(stderr, "settled: prune: %s\n", err.detail);
            goto Exit;
        }
        printf("would delete %lld done or ignored events received more than %s ago%s%s%s, and %lld deliveries no "
               "other event refers to; nothing was changed (--dry-run)\n",
               n.events, shown, n.oldest[0] != '\0' ? " (the oldest received " : "", n.oldest,
               n.oldest[0] != '\0' ? ")" : "", n.deliveries);
        ret = 0;
        goto Exit;
    }
    progress_t p = {.tty = isatty(STDOUT_FILENO) == 1};
    gw_retention_run_t run = {.older_than_s = seconds, .on_progress = on_progress, .arg = &p};
    bool busy;
    int rc = gw_retention_prune(db, &run, &n, &busy, &err);
    if (p.tty && n.events != 0)
        printf("\r\033[K"); /* clear the progress line: the summary replaces it */
    if (rc != 0) {
        fprintf(stderr, "settled: prune: %s (%lld events and %lld deliveries were deleted before)\n", err.detail,
                n.events, n.deliveries);
        goto Exit;
    }
    if (busy) {
        fprintf(stderr,
                "settled: prune: another settled is pruning now (%lld events deleted here before it); try "
                "again later\n",
                n.events);
        goto Exit;
    }
    printf("deleted %lld done or ignored events received more than %s ago, and %lld deliveries no event refers to "
           "any more\n",
           n.events, shown, n.deliveries);
    ret = 0;
Exit:
    gw_dbs_close(db);
    return ret;
}
