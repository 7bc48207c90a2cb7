/* SPDX-License-Identifier: MIT */
/*
 * worker.c: the queue workers, and the table from provider to processor.
 *
 * One round of a worker: park the rows whose workers kept dying, claim up to SETTLED_WORKER_BATCH due rows of the
 * providers in the table (queue.c), hand each provider's rows to its processor, which finishes every one of them.
 * Effects are idempotent (keyed by the providers' own ids), so a row processed twice after a lost lease changes
 * nothing the second time. Worker 0 also keeps the gauges. The processors' periodic work (the drift sweep) runs on
 * a thread of its own with its own session, so a sweep that takes minutes never holds up claiming; it is started
 * and stopped with the pool.
 */
#include "worker.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "alert.h"
#include "circuit.h"
#include "db.h"
#include "http_client.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "orgs.h"
#include "processor.h"
#include "retention.h"
#include "sdnotify.h"
#include "payments.h"
#include "xero_mirror.h"
#include "xero_writeback.h"
#include "mailer.h"
#include "dunning.h"
#include "collector.h"

#define WAIT_SLICE_MS 250    /* how often a sleeping worker looks at the stop flag */
#define GAUGES_EVERY_MS 5000 /* queue depth and the processors' gauges */
#define DB_RETRY_MS 1000

/* The providers whose events are processed, one row each. */
static const gw_processor_t *const processors[] = {&gw_xero_processor, &gw_stripe_processor, &gw_gocardless_processor};
#define NPROCESSORS (sizeof(processors) / sizeof(processors[0]))

struct st_gw_workers_t {
    const gw_config_t *cfg;
    gw_fetch_ctx_t shared; /* the quotas, shared by every thread */
    atomic_bool stopping;
    int n;
    struct st_worker_t *threads;
    /* the periodic thread, when a processor has periodic work with this configuration */
    bool periodic;
    pthread_t periodic_tid;
    gw_work_t periodic_work;
    pthread_mutex_t lock; /* with wake: the periodic thread's sleep, which gw_workers_stop cuts short */
    pthread_cond_t wake;
    gw_retention_job_t *retention; /* the pruning job (SETTLED_RETENTION_DAYS), NULL when off */
    gw_writeback_t *writeback;     /* the sender of the payment write-back to Xero (xero_writeback.h) */
    gw_mailer_t *mailer;           /* the sender of the notification e-mails (mailer.h); NULL without SMTP */
    gw_dunning_t *dunning;         /* the periodic dunning evaluation (dunning.h); NULL when off */
    gw_collector_t *collector;     /* automatic collection: planning rounds and the sender (collector.h) */
};

typedef struct st_worker_t {
    gw_workers_t *pool;
    int index;
    pthread_t tid;
    gw_work_t work;
    uint64_t next_gauges;
} worker_t;

static const char *processed_providers[NPROCESSORS];

/* While the database is down every worker fails every round: one warning, then a summary a minute. */
static gw_log_limit_t claim_failed = GW_LOG_LIMIT_INIT(GW_LOG_WARN, 60000);

const gw_processor_t *gw_worker_processor(const char *provider)
{
    for (size_t i = 0; i != NPROCESSORS; ++i)
        if (provider != NULL && strcmp(processors[i]->provider, provider) == 0)
            return processors[i];
    return NULL;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The longest claim delay of the processors: after a notification, fresh rows may still be inside it. */
static int max_claim_delay(const gw_config_t *cfg)
{
    int max = 0;
    for (size_t i = 0; i != NPROCESSORS; ++i) {
        int d = processors[i]->claim_delay_ms != NULL ? processors[i]->claim_delay_ms(cfg) : 0;
        if (d > max)
            max = d;
    }
    return max;
}

/* Hands each processor its rows of batch. */
static void dispatch(worker_t *w, gw_queue_batch_t *batch)
{
    gw_queue_row_t **rows = gw_xcalloc(batch->n, sizeof(*rows));
    for (size_t p = 0; p != NPROCESSORS; ++p) {
        size_t k = 0;
        for (size_t i = 0; i != batch->n; ++i)
            if (strcmp(batch->rows[i].provider, processors[p]->provider) == 0)
                rows[k++] = &batch->rows[i];
        if (k != 0)
            processors[p]->process(&w->work, rows, k, batch->claimed_at);
    }
    free(rows);
}

static int lane_delay(const gw_processor_t *p, const gw_config_t *cfg)
{
    return p->claim_delay_ms != NULL ? p->claim_delay_ms(cfg) : 0;
}

/* Takes the probe of one open circuit whose wait is over, if any, and tries one event of its account. Returns the
 * number of rows claimed (0 or 1), or -1 if the database failed. */
static int run_probe(worker_t *w)
{
    const gw_config_t *cfg = w->pool->cfg;
    char provider[32], account[128];
    int got = gw_circuit_take_probe(&w->work.queue, processed_providers, NPROCESSORS, provider, sizeof(provider),
                                    account, sizeof(account));
    if (got <= 0)
        return got;
    gw_queue_lane_t lane = {NULL, 0};
    for (size_t i = 0; i != NPROCESSORS; ++i)
        if (strcmp(processors[i]->provider, provider) == 0)
            lane = (gw_queue_lane_t){processors[i]->provider, lane_delay(processors[i], cfg)};
    gw_queue_batch_t batch;
    gw_err_t err = GW_ERR_INIT;
    if (lane.provider == NULL || gw_queue_claim_probe(&w->work.queue, &lane, account, &batch, &err) != 0) {
        if (lane.provider != NULL)
            gw_log(GW_LOG_WARN, "worker %d: %s", w->index, err.detail);
        gw_circuit_release_probe(&w->work.queue, provider, account);
        return lane.provider == NULL ? 0 : -1;
    }
    if (batch.n == 0) {
        gw_circuit_release_probe(&w->work.queue, provider, account); /* nothing to try it with yet */
        return 0;
    }
    dispatch(w, &batch);
    gw_queue_batch_free(&batch);
    return 1;
}

/* Claims and processes one batch; returns the number of rows claimed, or -1 if the database failed. */
static int run_round(worker_t *w)
{
    const gw_config_t *cfg = w->pool->cfg;
    (void)gw_queue_park_lost(&w->work.queue, processed_providers, NPROCESSORS);
    int probed = run_probe(w);
    if (probed < 0)
        return -1;

    gw_queue_lane_t lanes[NPROCESSORS];
    for (size_t i = 0; i != NPROCESSORS; ++i)
        lanes[i] = (gw_queue_lane_t){processors[i]->provider, lane_delay(processors[i], cfg)};
    gw_queue_batch_t batch;
    gw_err_t err = GW_ERR_INIT;
    if (gw_queue_claim(&w->work.queue, lanes, NPROCESSORS, &batch, &err) != 0) {
        gw_log_limited(&claim_failed, "worker %d: %s", w->index, err.detail);
        return -1;
    }
    gw_log_limit_settle(&claim_failed);
    if (batch.n == 0)
        return probed;
    dispatch(w, &batch);
    int n = (int)batch.n;
    gw_queue_batch_free(&batch);
    return n + probed;
}

static void update_gauges(worker_t *w)
{
    gw_queue_gauges(&w->work.queue, processed_providers, NPROCESSORS);
    gw_circuit_gauges(&w->work.queue);
    for (size_t i = 0; i != NPROCESSORS; ++i)
        if (processors[i]->gauges != NULL)
            processors[i]->gauges(&w->work);
    gw_metrics_quota_fallback(gw_quota_fallback_active());
}

/* Sleeps until notified, timeout_ms passes or the pool stops. */
static void wait_for_work(worker_t *w, int timeout_ms)
{
    gw_dbs_t *db = w->work.fetch.db;
    if (gw_dbs_exec(db, "LISTEN settled_events", 0, NULL) < 0) {
        gw_log_limited(&claim_failed, "worker %d: cannot LISTEN for new events: %s", w->index, gw_dbs_error(db));
        usleep(DB_RETRY_MS * 1000);
        return;
    }
    for (int waited = 0; waited < timeout_ms && !atomic_load(&w->pool->stopping); waited += WAIT_SLICE_MS) {
        int slice = timeout_ms - waited < WAIT_SLICE_MS ? timeout_ms - waited : WAIT_SLICE_MS;
        int rc = gw_dbs_wait_notify(db, slice);
        if (rc != 0)
            return; /* notified, or the connection broke (the next round reconnects) */
    }
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    const gw_config_t *cfg = w->pool->cfg;
    bool short_wait = false, db_failed = false;
    while (!atomic_load(&w->pool->stopping)) {
        uint64_t now = now_ms();
        if (w->index == 0 && now >= w->next_gauges) {
            update_gauges(w);
            w->next_gauges = now + GAUGES_EVERY_MS;
        }
        int n = run_round(w);
        if (n > 0) {
            short_wait = true;
            continue;
        }
        if (n < 0) {
            db_failed = true;
            usleep(DB_RETRY_MS * 1000);
            continue;
        }
        if (db_failed) { /* the database is back: what this worker held when it broke is due now, not in a lease */
            (void)gw_queue_release_leases(&w->work.queue);
            db_failed = false;
            continue;
        }
        /* after a notification, fresh rows may still be inside a claim delay: look again soon */
        int delay = max_claim_delay(cfg);
        int timeout = short_wait && delay + 100 < cfg->worker_poll_ms ? delay + 100 : cfg->worker_poll_ms;
        short_wait = false;
        uint64_t before = now_ms();
        wait_for_work(w, timeout);
        if (now_ms() - before < (uint64_t)timeout)
            short_wait = true; /* woken by a notification */
    }
    return NULL;
}

/* How often processor p's periodic work runs with cfg (ms); 0: never. */
static int periodic_ms(const gw_processor_t *p, const gw_config_t *cfg)
{
    return p->periodic != NULL && p->periodic_ms != NULL ? p->periodic_ms(cfg) : 0;
}

/* Sleeps until the monotonic time until_ms, or until the pool stops. */
static void periodic_sleep(gw_workers_t *pool, uint64_t until_ms)
{
    struct timespec ts = {.tv_sec = (time_t)(until_ms / 1000), .tv_nsec = (long)(until_ms % 1000) * 1000000};
    pthread_mutex_lock(&pool->lock);
    while (!atomic_load(&pool->stopping) && now_ms() < until_ms)
        if (pthread_cond_timedwait(&pool->wake, &pool->lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&pool->lock);
}

/* The periodic thread: each processor's periodic work at once, then every periodic_ms after it last finished. */
static void *periodic_main(void *arg)
{
    gw_workers_t *pool = arg;
    uint64_t next[NPROCESSORS] = {0};
    while (!atomic_load(&pool->stopping)) {
        uint64_t soonest = UINT64_MAX;
        for (size_t i = 0; i != NPROCESSORS && !atomic_load(&pool->stopping); ++i) {
            int every = periodic_ms(processors[i], pool->cfg);
            if (every <= 0)
                continue;
            if (now_ms() >= next[i]) {
                processors[i]->periodic(&pool->periodic_work);
                next[i] = now_ms() + (uint64_t)every;
            }
            if (next[i] < soonest)
                soonest = next[i];
        }
        if (soonest == UINT64_MAX)
            break; /* nothing periodic after all */
        periodic_sleep(pool, soonest);
    }
    return NULL;
}

/* Starts the periodic thread if a processor has periodic work with pool's configuration. Returns 0, or -1 with err
 * if its session cannot be opened. */
static int start_periodic(gw_workers_t *pool, const char *host, char *err, size_t errlen)
{
    const gw_config_t *cfg = pool->cfg;
    bool wanted = false;
    for (size_t i = 0; i != NPROCESSORS; ++i)
        wanted |= periodic_ms(processors[i], cfg) > 0;
    if (!wanted)
        return 0;
    gw_work_t *work = &pool->periodic_work;
    work->fetch = pool->shared;
    if ((work->fetch.db = gw_dbs_connect(cfg->database_url, err, errlen)) == NULL)
        return -1;
    work->queue = (gw_queue_t){.cfg = cfg, .db = work->fetch.db, .index = -1};
    snprintf(work->queue.owner, sizeof(work->queue.owner), "%s:%d:periodic", host, (int)getpid());
    work->stop = &pool->stopping;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&pool->lock, NULL);
    if (pthread_create(&pool->periodic_tid, NULL, periodic_main, pool) != 0) {
        gw_log(GW_LOG_ERROR, "cannot start the periodic thread: %s", strerror(errno));
        abort();
    }
    pool->periodic = true;
    return 0;
}

gw_workers_t *gw_workers_start(const gw_config_t *cfg, int nthreads, char *err, size_t errlen)
{
    for (size_t i = 0; i != NPROCESSORS; ++i)
        processed_providers[i] = processors[i]->provider;
    gw_workers_t *pool = gw_xcalloc(1, sizeof(*pool));
    pool->cfg = cfg;
    pool->n = nthreads;
    pool->shared.cfg = cfg;
    gw_err_t qerr = GW_ERR_INIT;
    if (gw_fetch_quotas_create(&pool->shared, &qerr) != 0) {
        snprintf(err, errlen, "%s", qerr.detail);
        free(pool);
        return NULL;
    }
    pool->threads = gw_xcalloc((size_t)nthreads, sizeof(*pool->threads));
    char host[64] = "unknown";
    gethostname(host, sizeof(host) - 1);
    for (int i = 0; i != nthreads; ++i) {
        worker_t *w = &pool->threads[i];
        w->pool = pool;
        w->index = i;
        w->work.fetch = pool->shared;
        if ((w->work.fetch.db = gw_dbs_connect(cfg->database_url, err, errlen)) == NULL) {
            for (int j = 0; j != i; ++j)
                gw_dbs_close(pool->threads[j].work.fetch.db);
            gw_fetch_quotas_destroy(&pool->shared);
            free(pool->threads);
            free(pool);
            return NULL;
        }
        w->work.queue = (gw_queue_t){.cfg = cfg, .db = w->work.fetch.db, .index = i};
        snprintf(w->work.queue.owner, sizeof(w->work.queue.owner), "%s:%d:%d", host, (int)getpid(), i);
        w->work.stop = &pool->stopping;
    }
    /* the write-back sender is a thread of its own, woken by its own channel: a write-back goes out within a
     * moment of being planned, whatever the queue workers and the periodic thread are busy with */
    if (start_periodic(pool, host, err, errlen) != 0 ||
        (pool->writeback = gw_writeback_start(cfg, &pool->shared, &pool->stopping, host, err, errlen)) == NULL ||
        gw_mailer_start(cfg, &pool->stopping, host, &pool->mailer, err, errlen) != 0 ||
        gw_dunning_start(cfg, &pool->stopping, host, &pool->dunning, err, errlen) != 0 ||
        (pool->collector = gw_collector_start(cfg, &pool->shared, &pool->stopping, host, err, errlen)) == NULL) {
        atomic_store(&pool->stopping, true);
        gw_dunning_stop(pool->dunning); /* (NULL when it did not start) */
        pool->dunning = NULL;
        if (pool->writeback != NULL) {
            atomic_store(&pool->stopping, true);
            gw_writeback_stop(pool->writeback);
        }
        if (pool->mailer != NULL) {
            atomic_store(&pool->stopping, true);
            gw_mailer_stop(pool->mailer);
        }
        if (pool->periodic) {
            atomic_store(&pool->stopping, true);
            pthread_join(pool->periodic_tid, NULL);
            gw_dbs_close(pool->periodic_work.fetch.db);
        }
        for (int j = 0; j != nthreads; ++j)
            gw_dbs_close(pool->threads[j].work.fetch.db);
        gw_fetch_quotas_destroy(&pool->shared);
        free(pool->threads);
        free(pool);
        return NULL;
    }
    for (int i = 0; i != nthreads; ++i)
        if (pthread_create(&pool->threads[i].tid, NULL, worker_main, &pool->threads[i]) != 0) {
            gw_log(GW_LOG_ERROR, "cannot start worker thread %d: %s", i, strerror(errno));
            abort();
        }
    pool->retention = gw_retention_start(cfg);
    gw_alert_start(cfg);
    gw_log(GW_LOG_INFO, "%d queue worker%s started%s, the Xero write-back sender, the collector%s%s", nthreads,
           nthreads == 1 ? "" : "s", pool->periodic ? ", the periodic thread (drift sweeps)" : "",
           pool->mailer != NULL ? ", the mailer" : " (no mailer: SETTLED_SMTP_URL is not set)",
           pool->dunning != NULL ? " and the dunning evaluation" : "");
    return pool;
}

void gw_workers_stop(gw_workers_t *pool)
{
    gw_retention_stop(pool->retention);
    if (pool->periodic)
        pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->stopping, true);
    if (pool->periodic) {
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
    }
    for (int i = 0; i != pool->n; ++i)
        pthread_join(pool->threads[i].tid, NULL);
    gw_writeback_stop(pool->writeback);
    gw_mailer_stop(pool->mailer);
    gw_dunning_stop(pool->dunning);
    gw_collector_stop(pool->collector);
    if (pool->periodic) {
        pthread_join(pool->periodic_tid, NULL);
        gw_dbs_close(pool->periodic_work.fetch.db);
        pthread_cond_destroy(&pool->wake);
        pthread_mutex_destroy(&pool->lock);
    }
    for (int i = 0; i != pool->n; ++i)
        gw_dbs_close(pool->threads[i].work.fetch.db);
    gw_alert_stop();
    gw_fetch_quotas_destroy(&pool->shared);
    free(pool->threads);
    free(pool);
}

static atomic_bool work_stop;

static void on_work_signal(int signo)
{
    (void)signo;
    atomic_store(&work_stop, true);
}

int gw_worker_main(const gw_config_t *cfg)
{
    if (cfg->database_url == NULL || cfg->database_url[0] == '\0') {
        gw_log(GW_LOG_ERROR, "SETTLED_DATABASE_URL: required by work");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_work_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (gw_http_init_config(cfg) != 0) {
        gw_log(GW_LOG_ERROR, "cannot start the outbound HTTP client");
        return 1;
    }
    char err[512];
    /* a worker must not process against a schema (or function text) other than the one it was built for */
    if (gw_orgs_bootstrap(cfg, NULL, 0, NULL, err, sizeof(err)) != 0) {
        gw_log(GW_LOG_ERROR, "%s", err);
        gw_http_shutdown();
        return 1;
    }
    gw_workers_t *pool = gw_workers_start(cfg, cfg->workers > 0 ? cfg->workers : 1, err, sizeof(err));
    if (pool == NULL) {
        gw_log(GW_LOG_ERROR, "%s", err);
        gw_http_shutdown();
        return 1;
    }
    if (gw_sd_notify("READY=1") < 0) /* Type=notify */
        gw_log(GW_LOG_WARN, "NOTIFY_SOCKET: cannot tell systemd we are ready: %s", strerror(errno));
    while (!atomic_load(&work_stop))
        usleep(100 * 1000);
    gw_workers_stop(pool);
    gw_http_shutdown();
    gw_log(GW_LOG_INFO, "workers stopped");
    return 0;
}
