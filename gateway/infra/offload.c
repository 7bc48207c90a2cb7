/* SPDX-License-Identifier: MIT */
/*
 * offload.c: runs blocking tasks on a few threads for the event loops, so that a route such as the Xero
 * OAuth callback (a database transaction and a token call) never blocks a loop.
 *
 * One mutex guards everything shared: the queue of calls waiting for a thread, and per loop attachment
 * the list of finished calls and whether its wake-up message is in flight. Each attachment owns one
 * h2o_multithread_message_t and sends it only when the finished list goes from empty to not empty, so
 * the message is never linked twice and a burst of results costs one wake-up. The message is sent while
 * holding the mutex, so gw_offload_loop_destroy (which takes it) never frees a receiver a pool thread is
 * about to use.
 *
 * The queue is bounded: nqueued counts the calls in it, and gw_offload_run refuses a call that would
 * exceed max_queued.
 */
#include "offload.h"
#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include "mem.h"

enum call_state { CALL_QUEUED, CALL_RUNNING, CALL_FINISHED };

struct st_gw_offload_t {
    pthread_mutex_t mutex;
    pthread_cond_t work_cond; /* a call was queued, or the pool is stopping */
    pthread_cond_t idle_cond; /* a call of an attachment being destroyed has finished */
    h2o_linklist_t queue;     /* calls waiting for a thread, oldest first */
    size_t nqueued;           /* how many */
    size_t max_queued;
    bool stopping;
    size_t nloops;
    int nthreads;
    pthread_t *threads;
};

struct st_gw_offload_loop_t {
    gw_offload_t *pool;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t receiver;
    h2o_multithread_message_t message; /* linked while message_sent */
    /* under pool->mutex */
    h2o_linklist_t finished; /* calls whose done or release is due on the loop */
    size_t running;          /* calls of this attachment that a pool thread is running */
    bool message_sent;
    bool destroying;
};

struct st_gw_offload_call_t {
    gw_offload_loop_t *ol;
    gw_offload_cb work, done, release;
    void *arg;
    h2o_linklist_t link; /* in pool->queue or ol->finished (under pool->mutex) */
    enum call_state state;
    bool detached;
};

/* Puts call on its attachment's finished list and wakes the loop if needed. Called with the mutex held. */
static void finish_locked(gw_offload_call_t *call)
{
    gw_offload_loop_t *ol = call->ol;
    call->state = CALL_FINISHED;
    h2o_linklist_insert(&ol->finished, &call->link);
    if (!ol->message_sent) {
        ol->message_sent = true;
        h2o_multithread_send_message(&ol->receiver, &ol->message);
    }
}

static void *on_thread(void *data)
{
    gw_offload_t *pool = data;
    pthread_mutex_lock(&pool->mutex);
    for (;;) {
        while (h2o_linklist_is_empty(&pool->queue) && !pool->stopping)
            pthread_cond_wait(&pool->work_cond, &pool->mutex);
        if (h2o_linklist_is_empty(&pool->queue))
            break; /* stopping, and nothing left */
        gw_offload_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_offload_call_t, link, pool->queue.next);
        h2o_linklist_unlink(&call->link);
        --pool->nqueued;
        call->state = CALL_RUNNING;
        ++call->ol->running;
        pthread_mutex_unlock(&pool->mutex);

        if (call->work != NULL)
            call->work(call->arg);

        pthread_mutex_lock(&pool->mutex);
        gw_offload_loop_t *ol = call->ol;
        --ol->running;
        finish_locked(call);
        if (ol->destroying)
            pthread_cond_broadcast(&pool->idle_cond);
    }
    pthread_mutex_unlock(&pool->mutex);
    return NULL;
}

gw_offload_t *gw_offload_create(int nthreads)
{
    return gw_offload_create_bounded(nthreads, GW_OFFLOAD_QUEUE_MAX);
}

gw_offload_t *gw_offload_create_bounded(int nthreads, size_t max_queued)
{
    gw_offload_t *pool = gw_xcalloc(1, sizeof(*pool));
    pool->max_queued = max_queued > 0 ? max_queued : 1;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->work_cond, NULL);
    pthread_cond_init(&pool->idle_cond, NULL);
    h2o_linklist_init_anchor(&pool->queue);
    pool->threads = gw_xcalloc(nthreads > 0 ? (size_t)nthreads : 1, sizeof(pthread_t));
    for (int i = 0; i < (nthreads > 0 ? nthreads : 1); ++i) {
        if (pthread_create(&pool->threads[i], NULL, on_thread, pool) != 0) {
            gw_offload_destroy(pool);
            return NULL;
        }
        ++pool->nthreads;
    }
    return pool;
}

void gw_offload_destroy(gw_offload_t *pool)
{
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->mutex);
    assert(pool->nloops == 0 && "gw_offload_destroy: a loop attachment is still alive");
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 0; i != pool->nthreads; ++i)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->idle_cond);
    pthread_cond_destroy(&pool->work_cond);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->threads);
    free(pool);
}

/* Runs done or release of every finished call; on the loop thread, without the mutex. */
static void dispatch(h2o_linklist_t *calls, bool release_all)
{
    while (!h2o_linklist_is_empty(calls)) {
        gw_offload_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_offload_call_t, link, calls->next);
        h2o_linklist_unlink(&call->link);
        /* detached is only ever set on this thread, so it can be read without the mutex */
        if (call->detached || release_all) {
            if (call->release != NULL)
                call->release(call->arg);
        } else {
            call->done(call->arg);
        }
        free(call);
    }
}

static void on_message(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    gw_offload_loop_t *ol = H2O_STRUCT_FROM_MEMBER(gw_offload_loop_t, receiver, receiver);
    while (!h2o_linklist_is_empty(messages))
        h2o_linklist_unlink(messages->next); /* only ever ol->message */
    h2o_linklist_t calls;
    h2o_linklist_init_anchor(&calls);
    pthread_mutex_lock(&ol->pool->mutex);
    h2o_linklist_insert_list(&calls, &ol->finished);
    ol->message_sent = false;
    pthread_mutex_unlock(&ol->pool->mutex);
    dispatch(&calls, false);
}

gw_offload_loop_t *gw_offload_loop_create(gw_offload_t *pool, h2o_evloop_t *loop)
{
    gw_offload_loop_t *ol = gw_xcalloc(1, sizeof(*ol));
    ol->pool = pool;
    h2o_linklist_init_anchor(&ol->finished);
    ol->queue = h2o_multithread_create_queue(loop);
    h2o_multithread_register_receiver(ol->queue, &ol->receiver, on_message);
    pthread_mutex_lock(&pool->mutex);
    ++pool->nloops;
    pthread_mutex_unlock(&pool->mutex);
    return ol;
}

void gw_offload_loop_destroy(gw_offload_loop_t *ol)
{
    if (ol == NULL)
        return;
    gw_offload_t *pool = ol->pool;
    h2o_linklist_t calls;
    h2o_linklist_init_anchor(&calls);

    pthread_mutex_lock(&pool->mutex);
    ol->destroying = true;
    /* calls no thread has taken yet are cancelled */
    for (h2o_linklist_t *l = pool->queue.next, *next; l != &pool->queue; l = next) {
        next = l->next;
        gw_offload_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_offload_call_t, link, l);
        if (call->ol == ol) {
            h2o_linklist_unlink(&call->link);
            --pool->nqueued;
            call->state = CALL_FINISHED;
            h2o_linklist_insert(&calls, &call->link);
        }
    }
    while (ol->running != 0)
        pthread_cond_wait(&pool->idle_cond, &pool->mutex);
    h2o_linklist_insert_list(&calls, &ol->finished);
    /* No thread will touch this attachment again, so a message still in flight can be taken back
     * without h2o's lock (h2o_multithread_unregister_receiver insists that none is pending). */
    if (ol->message_sent && h2o_linklist_is_linked(&ol->message.link))
        h2o_linklist_unlink(&ol->message.link);
    ol->message_sent = false;
    --pool->nloops;
    pthread_mutex_unlock(&pool->mutex);

    dispatch(&calls, true);
    h2o_multithread_unregister_receiver(ol->queue, &ol->receiver);
    h2o_multithread_destroy_queue(ol->queue);
#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR <= 2
    free(ol->queue); /* 2.2's destroy_queue closes the eventfd but forgets to free the queue itself */
#endif
    free(ol);
}

gw_offload_call_t *gw_offload_run(gw_offload_loop_t *ol, gw_offload_cb work, gw_offload_cb done, gw_offload_cb release,
                                  void *arg, gw_err_t *err)
{
    gw_offload_t *pool = ol->pool;
    pthread_mutex_lock(&pool->mutex);
    if (pool->stopping || ol->destroying) {
        pthread_mutex_unlock(&pool->mutex);
        gw_err_set(err, gw_err_store_unavailable, 503, "The server is shutting down.");
        return NULL;
    }
    if (pool->nqueued >= pool->max_queued) {
        size_t max = pool->max_queued;
        pthread_mutex_unlock(&pool->mutex);
        gw_err_set(err, gw_err_store_unavailable, 503,
                   "The server is busy (%zu tasks are waiting for a thread); try again shortly.", max);
        return NULL;
    }
    gw_offload_call_t *call = gw_xcalloc(1, sizeof(*call));
    *call = (gw_offload_call_t){.ol = ol, .work = work, .done = done, .release = release, .arg = arg};
    call->state = CALL_QUEUED;
    h2o_linklist_insert(&pool->queue, &call->link);
    ++pool->nqueued;
    pthread_cond_signal(&pool->work_cond);
    pthread_mutex_unlock(&pool->mutex);
    return call;
}

void gw_offload_detach(gw_offload_call_t *call)
{
    gw_offload_t *pool = call->ol->pool;
    pthread_mutex_lock(&pool->mutex);
    call->detached = true;
    if (call->state == CALL_QUEUED) {
        /* cancelled: release runs from the loop's next wake-up, never from inside this call */
        h2o_linklist_unlink(&call->link);
        --pool->nqueued;
        finish_locked(call);
    }
    pthread_mutex_unlock(&pool->mutex);
}
