/* SPDX-License-Identifier: MIT */
/*
 * retention.h: deleting finished events once they are old (SETTLED_RETENTION_DAYS, `settled prune`). Only 'done'
 * and 'ignored' events go, never 'pending', 'failed', 'processing' or 'dead' ones, with the deliveries no event
 * refers to any more; audit_log is never pruned. Deleting runs in small batches, each its own short transaction
 * under a statement timeout, with a pause between batches, and one pruner at a time (a transaction-level advisory
 * lock, taken per batch). The SQL is schema/functions/retention.sql.
 *
 * Blocking (a database session): worker threads and the CLI only.
 */
#ifndef GW_RETENTION_H
#define GW_RETENTION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "config.h"
#include "db.h"
#include "err.h"

#define GW_RETENTION_BATCH 500          /* events per batch */
#define GW_RETENTION_PAUSE_MS 200       /* between two batches */
#define GW_RETENTION_STATEMENT_MS 10000 /* statement timeout of a batch */
#define GW_RETENTION_EVERY_MS 3600000   /* how often the background job runs */

/* What a pruning (or its preview) counts. */
typedef struct st_gw_retention_counts_t {
    long long events, deliveries;
    char oldest[64]; /* preview only: received_at of the oldest event that would go, "" if none */
} gw_retention_counts_t;

/* The options of one pruning run. */
typedef struct st_gw_retention_run_t {
    int64_t older_than_s; /* events received more than this many seconds ago go */
    int batch;            /* events per batch (GW_RETENTION_BATCH if 0) */
    int pause_ms;         /* between batches (GW_RETENTION_PAUSE_MS if 0; -1: none) */
    atomic_bool *stop;    /* may be NULL: checked between batches */
    /* may be NULL: called after each batch with the totals so far */
    void (*on_progress)(void *arg, const gw_retention_counts_t *so_far);
    void *arg;
} gw_retention_run_t;

/* Counts what a run with older_than_s would delete, deleting and locking nothing. Returns 0, or -1 with err. */
GW_MUSTCHECK int gw_retention_preview(gw_dbs_t *db, int64_t older_than_s, gw_retention_counts_t *out, gw_err_t *err);
/* Deletes in batches until nothing old is left, the stop flag is set, or another session is pruning. Returns 0
 * with the totals in *out (also when another pruner holds the lock: then *busy is set), or -1 with err when a
 * batch failed (the batches before it stay deleted: each is complete by itself). */
GW_MUSTCHECK int gw_retention_prune(gw_dbs_t *db, const gw_retention_run_t *run, gw_retention_counts_t *out, bool *busy,
                                    gw_err_t *err);

/* The background job of the workers: a thread with its own session that prunes at start and then every
 * GW_RETENTION_EVERY_MS, while cfg->retention_days is not 0. */
typedef struct st_gw_retention_job_t gw_retention_job_t;
/* Starts the job; NULL when retention is off (SETTLED_RETENTION_DAYS=0). The database is connected lazily, so a
 * database that is down at start only delays the first run. */
gw_retention_job_t *gw_retention_start(const gw_config_t *cfg);
/* Stops the job (a batch in progress finishes) and waits for it; NULL is allowed. */
void gw_retention_stop(gw_retention_job_t *job);

#endif
