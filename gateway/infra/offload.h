/* SPDX-License-Identifier: MIT */
/*
 * offload.h: a small pool of threads that run blocking tasks (a database session, a blocking HTTP call)
 * for the event loops, which must never block. A task's work runs on a pool thread; its done callback
 * then runs on the loop that started it, through h2o's cross-thread queue.
 *
 * Callback rule (STYLE.md): when gw_offload_run returns a call, exactly one of done and release runs,
 * exactly once, on the loop thread, after work has returned (or instead of work, for a call detached
 * before a pool thread took it). When it returns NULL, none of the callbacks ever runs.
 *
 * The queue of calls waiting for a thread is bounded (GW_OFFLOAD_QUEUE_MAX for the server's pool): a loop
 * that would queue more is refused at once, so a burst of slow tasks (a slow Xero or database) costs a
 * 503 instead of memory and minutes of waiting.
 */
#ifndef GW_OFFLOAD_H
#define GW_OFFLOAD_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include "err.h"

typedef struct st_gw_offload_t gw_offload_t;
typedef struct st_gw_offload_loop_t gw_offload_loop_t;
typedef struct st_gw_offload_call_t gw_offload_call_t;

/* Called with the arg given to gw_offload_run. */
typedef void (*gw_offload_cb)(void *arg);

/* How many calls the pool of gw_offload_create keeps waiting for a thread, across all its loops (calls
 * running on a thread are not counted). */
#define GW_OFFLOAD_QUEUE_MAX 32

/* Starts a pool of nthreads threads (at least 1) that queues at most GW_OFFLOAD_QUEUE_MAX calls. Returns the
 * pool, or NULL if a thread cannot be started. */
GW_MUSTCHECK gw_offload_t *gw_offload_create(int nthreads);
/* gw_offload_create with a bound of max_queued waiting calls (at least 1). */
GW_MUSTCHECK gw_offload_t *gw_offload_create_bounded(int nthreads, size_t max_queued);
/* Stops the threads and frees the pool. Every loop attachment must have been destroyed first. */
void gw_offload_destroy(gw_offload_t *pool);

/* Attaches the pool to loop (registers an h2o_multithread receiver on it). Call on the loop's thread;
 * done and release callbacks of calls started through the attachment run on that thread. */
gw_offload_loop_t *gw_offload_loop_create(gw_offload_t *pool, h2o_evloop_t *loop);
/* Detaches: every call of the attachment that is still pending is treated as detached (its release
 * runs instead of its done, before this returns). Waits for work already running on a pool thread to
 * return, so call it when the loop stops, on the loop's thread. */
void gw_offload_loop_destroy(gw_offload_loop_t *ol);

/*
 * Runs work(arg) on a pool thread, then done(arg) on ol's loop. done must not be NULL; work and release
 * may be. release(arg) runs instead of done when the call was detached (gw_offload_detach, or
 * gw_offload_loop_destroy): that is where an arg owned by the call is freed, so detaching never leaks
 * it. Returns the call, a handle that is valid until done or release has started; or NULL with err set
 * (then nothing runs and the caller keeps arg): gw_err_store_unavailable (503) when the pool is stopping or
 * its queue already holds its maximum of waiting calls (the detail says which, in words fit for a reply).
 */
GW_MUSTCHECK gw_offload_call_t *gw_offload_run(gw_offload_loop_t *ol, gw_offload_cb work, gw_offload_cb done,
                                               gw_offload_cb release, void *arg, gw_err_t *err);
/*
 * The caller no longer wants the result (e.g. its HTTP request went away). Loop thread only, and only
 * before done has run. done will not run; release(arg) will, later on the loop thread (never inside
 * this call), once work has returned. A call that no pool thread has taken yet is cancelled: its work
 * never runs.
 */
void gw_offload_detach(gw_offload_call_t *call);

#endif
