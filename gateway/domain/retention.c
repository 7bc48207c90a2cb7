/* SPDX-License-Identifier: MIT */
/*
 * retention.c: the pruning of finished events, by batch (see retention.h), and the workers' background job that
 * runs it. Why batches: one DELETE of millions of rows holds its locks and its WAL for minutes and bloats the
 * table at once; batches of a few hundred rows, each its own transaction under a statement timeout, with a pause
 * between them, leave intake and the workers their share of the database.
 */
#include "retention.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "log.h"
#include "mem.h"

static const char sql_prune[] = "SELECT events, deliveries FROM retention_prune("
                                "now() - $1::bigint * interval '1 second', $2::integer)";
static const char sql_preview[] = "SELECT events, deliveries, coalesce(to_char(oldest AT TIME ZONE 'UTC', "
                                  "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') "
                                  "FROM retention_preview(now() - $1::bigint * interval '1 second')";

int gw_retention_preview(gw_dbs_t *db, int64_t older_than_s, gw_retention_counts_t *out, gw_err_t *err)
{
    memset(out, 0, sizeof(*out));
    char age[24];
    snprintf(age, sizeof(age), "%lld", (long long)older_than_s);
    const char *params[] = {age};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_preview, 1, params);
    if (r == NULL)
        return gw_dbs_err(db, err);
    out->events = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
    out->deliveries = strtoll(gw_dbs_value(r, 0, 1), NULL, 10);
    snprintf(out->oldest, sizeof(out->oldest), "%s", gw_dbs_value(r, 0, 2));
    gw_dbs_result_free(r);
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* One batch: its own transaction, under a statement timeout that ends with it (SET LOCAL, so a pooled connection,
 * pgbouncer in transaction mode, keeps its own timeout). */
typedef struct st_batch_t {
    const char *age, *limit;
    long long events, deliveries;
} batch_t;

static int on_batch(gw_dbs_t *db, void *arg, gw_err_t *err)
{
    batch_t *b = arg;
    char timeout[64];
    snprintf(timeout, sizeof(timeout), "SET LOCAL statement_timeout = %d", GW_RETENTION_STATEMENT_MS);
    if (gw_dbs_exec(db, timeout, 0, NULL) < 0)
        return gw_dbs_err(db, err);
    const char *params[] = {b->age, b->limit};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_prune, 2, params);
    if (r == NULL)
        return gw_dbs_err(db, err);
    b->events = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
    b->deliveries = strtoll(gw_dbs_value(r, 0, 1), NULL, 10);
    gw_dbs_result_free(r);
    return 0;
}

int gw_retention_prune(gw_dbs_t *db, const gw_retention_run_t *run, gw_retention_counts_t *out, bool *busy,
                       gw_err_t *err)
{
    memset(out, 0, sizeof(*out));
    *busy = false;
    int batch = run->batch > 0 ? run->batch : GW_RETENTION_BATCH;
    int pause = run->pause_ms == 0 ? GW_RETENTION_PAUSE_MS : run->pause_ms < 0 ? 0 : run->pause_ms;
    char age[24], limit[16];
    snprintf(age, sizeof(age), "%lld", (long long)run->older_than_s);
    snprintf(limit, sizeof(limit), "%d", batch);
    for (;;) {
        if (run->stop != NULL && atomic_load(run->stop))
            return 0;
        batch_t b = {.age = age, .limit = limit};
        if (gw_dbs_tx(db, on_batch, &b, err) != 0)
            return -1;
        if (b.events < 0) {
            *busy = true; /* another session is pruning: it finishes the job */
            return 0;
        }
        out->events += b.events;
        out->deliveries += b.deliveries;
        if (gw_log_enabled(GW_LOG_DEBUG)) {
            gw_logline_t line;
            gw_log_begin(&line, GW_LOG_DEBUG, "retention batch");
            gw_log_int(&line, "events", b.events);
            gw_log_int(&line, "deliveries", b.deliveries);
            gw_log_end(&line);
        }
        if (run->on_progress != NULL)
            run->on_progress(run->arg, out);
        if (b.events < batch)
            return 0; /* nothing old is left (rows others hold are left for the next run) */
        if (pause != 0)
            sleep_ms(pause);
    }
}

/* The background job */

struct st_gw_retention_job_t {
    const gw_config_t *cfg;
    pthread_t tid;
    atomic_bool stopping;
    pthread_mutex_t lock; /* with wake: the sleep between runs, which gw_retention_stop cuts short */
    pthread_cond_t wake;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void job_sleep(gw_retention_job_t *job, uint64_t ms)
{
    uint64_t until = mono_ms() + ms;
    struct timespec ts = {.tv_sec = (time_t)(until / 1000), .tv_nsec = (long)(until % 1000) * 1000000};
    pthread_mutex_lock(&job->lock);
    while (!atomic_load(&job->stopping) && mono_ms() < until)
        if (pthread_cond_timedwait(&job->wake, &job->lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&job->lock);
}

static void *on_job(void *arg)
{
    gw_retention_job_t *job = arg;
    const gw_config_t *cfg = job->cfg;
    gw_dbs_t *db = NULL;
    while (!atomic_load(&job->stopping)) {
        uint64_t next = GW_RETENTION_EVERY_MS;
        gw_err_t err = GW_ERR_INIT;
        if (db == NULL)
            db = gw_dbs_open(cfg->database_url, &err);
        if (db == NULL) {
            gw_log(GW_LOG_WARN, "retention: cannot connect to the database: %s; trying again in a minute", err.detail);
            next = 60000;
        } else {
            gw_retention_run_t run = {.older_than_s = (int64_t)cfg->retention_days * 86400, .stop = &job->stopping};
            gw_retention_counts_t n;
            bool busy;
            if (gw_retention_prune(db, &run, &n, &busy, &err) != 0) {
                gw_log(GW_LOG_WARN, "retention: pruning stopped after %lld events: %s; trying again in a minute",
                       n.events, err.detail);
                next = 60000;
            } else if (n.events != 0 || busy) {
                gw_logline_t line;
                gw_log_begin(&line, GW_LOG_INFO,
                             busy ? "retention: another instance is pruning" : "retention: pruned finished events");
                gw_log_int(&line, "events", n.events);
                gw_log_int(&line, "deliveries", n.deliveries);
                gw_log_int(&line, "retention_days", cfg->retention_days);
                gw_log_end(&line);
            }
        }
        job_sleep(job, next);
    }
    gw_dbs_close(db);
    return NULL;
}

gw_retention_job_t *gw_retention_start(const gw_config_t *cfg)
{
    if (cfg->retention_days <= 0 || cfg->database_url == NULL)
        return NULL;
    gw_retention_job_t *job = gw_xcalloc(1, sizeof(*job));
    job->cfg = cfg;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&job->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&job->lock, NULL);
    if (pthread_create(&job->tid, NULL, on_job, job) != 0) {
        gw_log(GW_LOG_ERROR, "cannot start the retention thread: %s", strerror(errno));
        abort();
    }
    gw_log(GW_LOG_INFO, "retention: done and ignored events older than %d days are pruned every hour",
           cfg->retention_days);
    return job;
}

void gw_retention_stop(gw_retention_job_t *job)
{
    if (job == NULL)
        return;
    pthread_mutex_lock(&job->lock);
    atomic_store(&job->stopping, true);
    pthread_cond_broadcast(&job->wake);
    pthread_mutex_unlock(&job->lock);
    pthread_join(job->tid, NULL);
    pthread_cond_destroy(&job->wake);
    pthread_mutex_destroy(&job->lock);
    free(job);
}
