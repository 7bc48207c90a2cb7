/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/infra/offload.c: work runs on pool threads and done exactly once on the loop thread, for
 * one task and for 100; a detached call (queued, running or finished) never runs done but always runs
 * release, so its arg is freed (ASan's leak check runs at exit); destroying a loop attachment with calls
 * pending releases them all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "offload.h"

typedef struct st_task_t {
    atomic_int started;
    atomic_int work_runs;
    int done_runs, release_runs;
    pthread_t work_thread, done_thread;
    atomic_int *gate;     /* work waits until *gate != 0, when set */
    atomic_int *finished; /* incremented when work returns, when set */
    int *released;        /* incremented by release (the task itself is freed there) */
} task_t;

static pthread_t loop_thread;

static void on_work(void *arg)
{
    task_t *t = arg;
    t->work_thread = pthread_self();
    atomic_store(&t->started, 1);
    if (t->gate != NULL)
        while (atomic_load(t->gate) == 0)
            usleep(1000);
    atomic_fetch_add(&t->work_runs, 1);
    if (t->finished != NULL)
        atomic_fetch_add(t->finished, 1);
}

static void on_done(void *arg)
{
    task_t *t = arg;
    ++t->done_runs;
    t->done_thread = pthread_self();
}

static int done_total;

static void on_done_count(void *arg)
{
    on_done(arg);
    ++done_total;
}

/* done for a task the call owns: counts, then frees it */
static void on_done_count_free(void *arg)
{
    on_done_count(arg);
    free(arg);
}

static void on_release(void *arg)
{
    task_t *t = arg;
    assert_true(pthread_equal(pthread_self(), loop_thread)); /* also on the loop */
    if (t->released != NULL)
        ++*t->released;
    free(t);
}

static void on_done_unexpected(void *arg)
{
    fail_msg("done ran for a detached call");
}

/* Runs loop until *cond becomes at least want, for at most 10 s. */
static void run_until(h2o_evloop_t *loop, const int *cond, int want)
{
    time_t deadline = time(NULL) + 10;
    while (*cond < want) {
        if (time(NULL) > deadline)
            fail_msg("timed out: %d of %d", *cond, want);
        h2o_evloop_run(loop, 10);
    }
}

static void wait_atomic(const atomic_int *v, int want)
{
    time_t deadline = time(NULL) + 10;
    while (atomic_load(v) < want) {
        if (time(NULL) > deadline)
            fail_msg("timed out waiting for work: %d of %d", atomic_load(v), want);
        usleep(1000);
    }
}

static void finish_loop(h2o_evloop_t *loop)
{
    /* the queue's socket is freed on the loop's next turn */
    h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
}

static void test_done_runs_on_the_loop_exactly_once(void **state)
{
    loop_thread = pthread_self();
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_offload_t *pool = gw_offload_create(2);
    assert_non_null(pool);
    gw_offload_loop_t *ol = gw_offload_loop_create(pool, loop);
    task_t t = {0};
    done_total = 0;
    assert_non_null(gw_offload_run(ol, on_work, on_done_count, NULL, &t, NULL));
    run_until(loop, &done_total, 1);
    /* more turns of the loop change nothing */
    for (int i = 0; i != 5; ++i)
        h2o_evloop_run(loop, 5);
    assert_int_equal(atomic_load(&t.work_runs), 1);
    assert_int_equal(t.done_runs, 1);
    assert_false(pthread_equal(t.work_thread, loop_thread));
    assert_true(pthread_equal(t.done_thread, loop_thread));
    gw_offload_loop_destroy(ol);
    gw_offload_destroy(pool);
    finish_loop(loop);
}

static void test_hundred_tasks(void **state)
{
    loop_thread = pthread_self();
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_offload_t *pool = gw_offload_create_bounded(4, 100); /* room for all of them at once */
    assert_non_null(pool);
    gw_offload_loop_t *ol = gw_offload_loop_create(pool, loop);
    task_t *tasks = calloc(100, sizeof(task_t));
    done_total = 0;
    for (int i = 0; i != 100; ++i)
        assert_non_null(gw_offload_run(ol, on_work, on_done_count, NULL, &tasks[i], NULL));
    run_until(loop, &done_total, 100);
    for (int i = 0; i != 5; ++i)
        h2o_evloop_run(loop, 5);
    assert_int_equal(done_total, 100);
    for (int i = 0; i != 100; ++i) {
        assert_int_equal(atomic_load(&tasks[i].work_runs), 1);
        assert_int_equal(tasks[i].done_runs, 1);
        assert_false(pthread_equal(tasks[i].work_thread, loop_thread));
        assert_true(pthread_equal(tasks[i].done_thread, loop_thread));
    }
    free(tasks);
    gw_offload_loop_destroy(ol);
    gw_offload_destroy(pool);
    finish_loop(loop);
}

static task_t *new_task(atomic_int *gate, atomic_int *finished, int *released)
{
    task_t *t = calloc(1, sizeof(*t));
    t->gate = gate;
    t->finished = finished;
    t->released = released;
    return t;
}

/* A call can be detached while queued, while running and after its work returned: each time done never
 * runs, release runs exactly once on the loop (never inside gw_offload_detach), and the arg is freed. */
static void test_detach_releases_and_never_runs_done(void **state)
{
    loop_thread = pthread_self();
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_offload_t *pool = gw_offload_create(1); /* one thread, so a blocked task keeps the others queued */
    assert_non_null(pool);
    gw_offload_loop_t *ol = gw_offload_loop_create(pool, loop);
    atomic_int gate = 0, finished = 0, queued_work = 0;
    int released = 0;
    done_total = 0;

    /* a running call, blocked on the gate */
    task_t *running = new_task(&gate, &finished, &released);
    gw_offload_call_t *running_call = gw_offload_run(ol, on_work, on_done_unexpected, on_release, running, NULL);
    assert_non_null(running_call);
    wait_atomic(&running->started, 1); /* the thread has it */
    /* a queued call behind it */
    task_t *queued = new_task(NULL, &queued_work, &released);
    gw_offload_call_t *queued_call = gw_offload_run(ol, on_work, on_done_unexpected, on_release, queued, NULL);
    assert_non_null(queued_call);

    gw_offload_detach(queued_call);
    assert_int_equal(released, 0); /* never from inside detach */
    gw_offload_detach(running_call);
    assert_int_equal(released, 0);
    run_until(loop, &released, 1); /* the cancelled one is released without waiting for the gate */
    assert_int_equal(atomic_load(&finished), 0);

    atomic_store(&gate, 1);
    run_until(loop, &released, 2);
    assert_int_equal(atomic_load(&finished), 1);    /* the running work completed */
    assert_int_equal(atomic_load(&queued_work), 0); /* the cancelled work never ran */

    /* a call whose work has returned but whose done has not run yet */
    task_t *done_pending = new_task(NULL, &finished, &released);
    gw_offload_call_t *pending_call = gw_offload_run(ol, on_work, on_done_unexpected, on_release, done_pending, NULL);
    assert_non_null(pending_call);
    wait_atomic(&finished, 2);
    gw_offload_detach(pending_call);
    run_until(loop, &released, 3);

    /* a detached call without release: nothing to free, nothing runs */
    task_t plain = {0};
    gw_offload_call_t *plain_call = gw_offload_run(ol, on_work, on_done_unexpected, NULL, &plain, NULL);
    assert_non_null(plain_call);
    gw_offload_detach(plain_call);
    for (int i = 0; i != 20 && atomic_load(&plain.work_runs) == 0; ++i)
        h2o_evloop_run(loop, 5);

    /* and a normal call still works after all that */
    task_t normal = {0};
    assert_non_null(gw_offload_run(ol, on_work, on_done_count, on_release, &normal, NULL));
    run_until(loop, &done_total, 1);
    assert_int_equal(normal.done_runs, 1);
    assert_int_equal(released, 3);

    gw_offload_loop_destroy(ol);
    gw_offload_destroy(pool);
    finish_loop(loop);
}

static void *open_gate_later(void *arg)
{
    usleep(50000);
    atomic_store((atomic_int *)arg, 1);
    return NULL;
}

/* Destroying an attachment with calls queued, running and finished releases every arg. */
static void test_loop_destroy_releases_pending_calls(void **state)
{
    loop_thread = pthread_self();
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_offload_t *pool = gw_offload_create(1);
    assert_non_null(pool);
    gw_offload_loop_t *ol = gw_offload_loop_create(pool, loop);
    atomic_int gate = 0, finished = 0;
    int released = 0;

    /* finished, its wake-up message in flight */
    assert_non_null(
        gw_offload_run(ol, on_work, on_done_unexpected, on_release, new_task(NULL, &finished, &released), NULL));
    wait_atomic(&finished, 1);
    /* running, released once the gate opens */
    task_t *blocked = new_task(&gate, &finished, &released);
    assert_non_null(gw_offload_run(ol, on_work, on_done_unexpected, on_release, blocked, NULL));
    /* queued behind it */
    for (int i = 0; i != 3; ++i)
        assert_non_null(
            gw_offload_run(ol, on_work, on_done_unexpected, on_release, new_task(NULL, &finished, &released), NULL));
    wait_atomic(&blocked->started, 1);
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, open_gate_later, &gate), 0);
    gw_offload_loop_destroy(ol); /* cancels the queued calls, then waits for the running one */
    pthread_join(opener, NULL);
    assert_int_equal(released, 5);
    assert_true(atomic_load(&finished) >= 2); /* (the queued ones were cancelled unless the thread was faster) */
    gw_offload_destroy(pool);
    finish_loop(loop);
}

/* Two loops on one pool: each call's done runs on its own loop. */
typedef struct st_loop_ctx_t {
    h2o_evloop_t *loop;
    gw_offload_t *pool;
    int done;
    bool ok;
} loop_ctx_t;

typedef struct st_owned_task_t {
    loop_ctx_t *ctx;
    pthread_t self;
} owned_task_t;

static void on_owned_done(void *arg)
{
    owned_task_t *t = arg;
    if (!pthread_equal(pthread_self(), t->self))
        t->ctx->ok = false;
    ++t->ctx->done;
    free(t);
}

static void *run_second_loop(void *arg)
{
    loop_ctx_t *ctx = arg;
    ctx->loop = h2o_evloop_create();
    gw_offload_loop_t *ol = gw_offload_loop_create(ctx->pool, ctx->loop);
    for (int i = 0; i != 50; ++i) {
        owned_task_t *t = malloc(sizeof(*t));
        *t = (owned_task_t){ctx, pthread_self()};
        if (gw_offload_run(ol, NULL, on_owned_done, free, t, NULL) == NULL)
            ctx->ok = false;
    }
    time_t deadline = time(NULL) + 10;
    while (ctx->done < 50 && time(NULL) <= deadline)
        h2o_evloop_run(ctx->loop, 10);
    gw_offload_loop_destroy(ol);
    h2o_evloop_run(ctx->loop, 0);
    h2o_evloop_destroy(ctx->loop);
    return NULL;
}

static void test_two_loops_share_a_pool(void **state)
{
    gw_offload_t *pool = gw_offload_create_bounded(3, 100);
    assert_non_null(pool);
    loop_ctx_t a = {.pool = pool, .ok = true}, b = {.pool = pool, .ok = true};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, run_second_loop, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, run_second_loop, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.done, 50);
    assert_int_equal(b.done, 50);
    assert_true(a.ok);
    assert_true(b.ok);
    gw_offload_destroy(pool);
}

/* The queue is bounded: with the thread busy, max_queued calls wait and the next one is refused at once with a 503
 * (and none of its callbacks ever runs); a slot comes back when a queued call is taken, cancelled or finished. The
 * server's pool (gw_offload_create) holds GW_OFFLOAD_QUEUE_MAX. */
static void test_queue_is_bounded(void **state)
{
    loop_thread = pthread_self();
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_offload_t *pool = gw_offload_create_bounded(1, 3);
    assert_non_null(pool);
    gw_offload_loop_t *ol = gw_offload_loop_create(pool, loop);
    atomic_int gate = 0, finished = 0;
    int released = 0;
    done_total = 0;

    task_t *blocked = new_task(&gate, &finished, &released);
    assert_non_null(gw_offload_run(ol, on_work, on_done_count_free, on_release, blocked, NULL));
    wait_atomic(&blocked->started, 1); /* running: not counted */
    gw_offload_call_t *queued[3];
    task_t *qt[3];
    for (int i = 0; i != 3; ++i) {
        qt[i] = new_task(NULL, &finished, &released);
        gw_err_t err = GW_ERR_INIT;
        assert_non_null(queued[i] = gw_offload_run(ol, on_work, on_done_count_free, on_release, qt[i], &err));
        assert_null(err.code);
    }
    task_t refused = {0};
    gw_err_t err = GW_ERR_INIT;
    assert_null(gw_offload_run(ol, on_work, on_done_unexpected, on_release, &refused, &err));
    assert_ptr_equal(err.code, gw_err_store_unavailable);
    assert_int_equal(err.status, 503);
    assert_non_null(strstr(err.detail, "busy"));
    /* a cancelled call gives its slot back */
    gw_offload_detach(queued[0]);
    run_until(loop, &released, 1);
    task_t *again = new_task(NULL, &finished, &released);
    gw_err_clear(&err);
    assert_non_null(gw_offload_run(ol, on_work, on_done_count_free, on_release, again, &err));
    gw_err_clear(&err);
    assert_null(gw_offload_run(ol, on_work, on_done_unexpected, on_release, &refused, &err));
    assert_ptr_equal(err.code, gw_err_store_unavailable);
    /* the refused call never ran anything, on either side */
    for (int i = 0; i != 5; ++i)
        h2o_evloop_run(loop, 5);
    assert_int_equal(atomic_load(&refused.work_runs), 0);
    assert_int_equal(refused.done_runs + refused.release_runs, 0);

    /* once the thread is free, the queue drains and takes calls again */
    atomic_store(&gate, 1);
    run_until(loop, &done_total, 4); /* blocked, queued[1], queued[2], again */
    assert_int_equal(atomic_load(&finished), 4);
    for (int i = 0; i != 3; ++i) {
        task_t *t = new_task(NULL, &finished, &released);
        assert_non_null(gw_offload_run(ol, on_work, on_done_count_free, on_release, t, NULL));
    }
    run_until(loop, &done_total, 7);
    gw_offload_loop_destroy(ol);
    gw_offload_destroy(pool);
    finish_loop(loop);
}

/* The server's pool: GW_OFFLOAD_QUEUE_MAX calls wait behind a busy thread, the next is refused. */
static void test_default_bound(void **state)
{
    loop_thread = pthread_self();
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_offload_t *pool = gw_offload_create(1);
    assert_non_null(pool);
    gw_offload_loop_t *ol = gw_offload_loop_create(pool, loop);
    atomic_int gate = 0, finished = 0;
    int released = 0;
    task_t *blocked = new_task(&gate, &finished, &released);
    assert_non_null(gw_offload_run(ol, on_work, on_done_unexpected, on_release, blocked, NULL));
    wait_atomic(&blocked->started, 1);
    for (int i = 0; i != GW_OFFLOAD_QUEUE_MAX; ++i)
        assert_non_null(
            gw_offload_run(ol, on_work, on_done_unexpected, on_release, new_task(NULL, &finished, &released), NULL));
    task_t refused = {0};
    gw_err_t err = GW_ERR_INIT;
    assert_null(gw_offload_run(ol, on_work, on_done_unexpected, on_release, &refused, &err));
    assert_int_equal(err.status, 503);
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, open_gate_later, &gate), 0);
    gw_offload_loop_destroy(ol); /* releases every one of them */
    pthread_join(opener, NULL);
    assert_int_equal(released, GW_OFFLOAD_QUEUE_MAX + 1);
    gw_offload_destroy(pool);
    finish_loop(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_done_runs_on_the_loop_exactly_once),
        cmocka_unit_test(test_hundred_tasks),
        cmocka_unit_test(test_detach_releases_and_never_runs_done),
        cmocka_unit_test(test_loop_destroy_releases_pending_calls),
        cmocka_unit_test(test_two_loops_share_a_pool),
        cmocka_unit_test(test_queue_is_bounded),
        cmocka_unit_test(test_default_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
