/* SPDX-License-Identifier: MIT */
/*
 * processor.h: what a provider plugs into the queue workers. worker.c keeps one table from provider to processor;
 * the queue (queue.h) knows no provider, and a processor knows nothing of claiming. A processor is given every
 * row of its provider that one claim took, and finishes each of them through the queue exactly once.
 */
#ifndef GW_PROCESSOR_H
#define GW_PROCESSOR_H

#include <stdatomic.h>
#include <stddef.h>
#include "config.h"
#include "fetch.h"
#include "queue.h"

/* One thread of the worker pool: its fetch context (session, quotas), its queue handle (the same session), and the
 * pool's stop flag, set once the pool is stopping (SIGTERM): work that can take long looks at it between steps. */
typedef struct st_gw_work_t {
    gw_fetch_ctx_t fetch;
    gw_queue_t queue;
    const atomic_bool *stop;
} gw_work_t;

typedef struct st_gw_processor_t {
    const char *provider;
    /* How long a fresh event of the provider waits before it may be claimed, so that a burst of events for one
     * object is claimed together and becomes one fetch (0: at once). */
    int (*claim_delay_ms)(const gw_config_t *cfg);
    /* Processes rows (all of this provider, claimed together at claimed_at) and finishes every one of them through
     * w->queue: done, ignored, failed, rescheduled, or covered. */
    void (*process)(gw_work_t *w, gw_queue_row_t *const *rows, size_t n, const char *claimed_at);
    /* Optional, run by worker 0 every few seconds: the provider's own gauges (e.g. connections needing
     * re-authorisation). */
    void (*gauges)(gw_work_t *w);
    /* Optional: the provider's scheduled work (e.g. the drift sweep), run on the pool's periodic thread (its own
     * session; never a queue worker, so however long it takes, claiming goes on), at once when the pool starts and
     * then every periodic_ms(cfg) milliseconds. It must return soon after *w->stop becomes true. */
    void (*periodic)(gw_work_t *w);
    /* How often periodic runs, in milliseconds; 0: not at all with this configuration (no thread, no session is
     * spent on it). Required with periodic. */
    int (*periodic_ms)(const gw_config_t *cfg);
} gw_processor_t;

#endif
