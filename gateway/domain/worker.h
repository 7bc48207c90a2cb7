/* SPDX-License-Identifier: MIT */
/*
 * worker.h: the queue workers. The inbox table is the queue: each worker thread claims due rows with
 * FOR UPDATE SKIP LOCKED and a lease, processes them, and marks them done, failed (retried on SETTLED_RETRY_SCHEDULE)
 * or dead (after its last wait, or at once for a permanent failure). Each round first takes the probe of one open
 * circuit whose wait is over (circuit.h), if any. Any number of threads and processes share one
 * queue; a killed worker's lease expires and another takes its rows. Idle workers sleep on LISTEN settled_events
 * with a poll backstop. The processors' periodic work (the Xero drift sweep) runs on one more thread of the pool,
 * with its own session, so however long it takes, the workers go on claiming.
 *
 * Worker threads block (on PostgreSQL, Redis and outbound HTTP); they are never event loops.
 */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include "config.h"

typedef struct st_gw_workers_t gw_workers_t;

/* Starts nthreads worker threads, the periodic thread when a processor has periodic work with cfg (e.g.
 * SETTLED_XERO_SYNC_INTERVAL is not 0), and the Xero write-back sender (xero_writeback.h: a thread of its own with
 * its own session, woken on its own channel); gw_http_init must have been called. Returns NULL with err if the
 * database cannot be reached. */
gw_workers_t *gw_workers_start(const gw_config_t *cfg, int nthreads, char *err, size_t errlen);
/* Asks every worker to stop after the batch in hand, and the periodic thread at its next step (a sweep stops before
 * its next call to Xero, or at once if it is waiting), and waits for them all. */
void gw_workers_stop(gw_workers_t *w);

/* The processor of provider's events (worker.c's table), or NULL when its events are not processed (they wait as
 * 'pending'). Used by the dry run of a replay (replay.h), which processes one event the way a worker would. */
const struct st_gw_processor_t *gw_worker_processor(const char *provider);

/* `settled work`: runs workers only, until SIGTERM or SIGINT. Returns the exit code. */
int gw_worker_main(const gw_config_t *cfg);

#endif
