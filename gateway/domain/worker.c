/* SPDX-License-Identifier: MIT */
/*
 * worker.c: claims due inbox rows and turns them into effects.
 *
 * One round of a worker: claim up to SETTLED_WORKER_BATCH due rows (status pending/failed, or processing with an
 * expired lease) in one UPDATE ... FOR UPDATE SKIP LOCKED that also takes the lease and counts the attempt; group
 * them by (organisation, tenant, kind); let the connector plan one list call per group (events for the same
 * object coalesce into one fetch); fetch under the tenant's quota; apply through the SQL upsert functions; then
 * finish the rows. Rows of the same objects that were stored before the claim and are still waiting are finished
 * with them: the fetched state covers them. Effects are idempotent (guarded upserts keyed by Xero's ids), so a
 * row processed twice after a lost lease changes nothing the second time.
 */
#include "worker.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "db.h"
#include "http_client.h"
#include "log.h"
#include "metrics.h"
#include "xero_mirror.h"
#include "quota.h"
#include "sync.h"

#define MAX_FETCHES 32       /* list calls planned per group and round */
#define WAIT_SLICE_MS 250    /* how often a sleeping worker looks at the stop flag */
#define GAUGES_EVERY_MS 5000 /* queue depth and re-auth gauges */
#define SWEEP_CHECK_MS 60000 /* how often worker 0 looks for tenants due a drift sweep */
#define DB_RETRY_MS 1000

static const char sql_claim[] =
    "WITH due AS ("
    " SELECT id FROM webhook_events"
    "  WHERE status IN ('pending', 'failed', 'processing') AND next_attempt_at <= now()"
    "    AND provider = ANY($1::text[])"
    "    AND (provider <> 'xero' OR stored_at <= now() - $2::bigint * interval '1 millisecond')"
    "  ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
    " UPDATE webhook_events e SET status = 'processing', attempts = e.attempts + 1, lease_owner = $4,"
    "        next_attempt_at = now() + $5::bigint * interval '1 millisecond'"
    "   FROM due WHERE e.id = due.id"
    " RETURNING e.id, e.organisation_id, e.provider, e.account, e.event_type, e.resource_id, e.attempts,"
    "           e.correlation_id, now()";

static const char sql_done[] =
    "UPDATE webhook_events SET status = $3, processed_at = now(), lease_owner = NULL, last_error = NULL"
    " WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND status = 'processing'"
    " RETURNING extract(epoch FROM now() - stored_at)::float8";

static const char sql_coalesce[] =
    "UPDATE webhook_events SET status = 'done', processed_at = now(), lease_owner = NULL, last_error = NULL"
    " WHERE id IN (SELECT id FROM webhook_events"
    "  WHERE status IN ('pending', 'failed') AND provider = 'xero' AND organisation_id = $1 AND account = $2"
    "    AND split_part(event_type, '.', 1) = $3 AND resource_id = ANY($4::text[])"
    "    AND stored_at <= $5::timestamptz FOR UPDATE SKIP LOCKED)"
    " RETURNING extract(epoch FROM now() - stored_at)::float8";

static const char sql_fail[] =
    "UPDATE webhook_events SET status = CASE WHEN attempts >= $3 THEN 'dead' ELSE 'failed' END,"
    "       next_attempt_at = now() + least($5::float8, $4::float8 * power(2, least(attempts - 1, 40))"
    "                                                 * (1 + random() * 0.5)) * interval '1 millisecond',"
    "       last_error = $2, lease_owner = NULL"
    " WHERE id = ANY($1::bigint[]) AND lease_owner = $6 AND status = 'processing'"
    " RETURNING status";

static const char sql_reschedule[] =
    "UPDATE webhook_events SET status = 'pending', attempts = greatest(attempts - 1, 0),"
    "       next_attempt_at = now() + $2::bigint * interval '1 millisecond', last_error = $3, lease_owner = NULL"
    " WHERE id = ANY($1::bigint[]) AND lease_owner = $4 AND status = 'processing'";

/* A row whose lease expired SETTLED_WORKER_MAX_ATTEMPTS times (its worker died each time: an event that crashes
 * workers) is parked instead of being claimed again. */
static const char sql_park_lost[] =
    "UPDATE webhook_events SET status = 'dead', lease_owner = NULL,"
    "       last_error = 'the worker processing it stopped before finishing, ' || attempts || ' times'"
    " WHERE provider = ANY($2::text[]) AND status = 'processing' AND next_attempt_at <= now() AND attempts >= $1";

/* Counted through the partial indexes only (the due index, led by provider, and the dead index): the events of
 * providers that are not processed yet wait as 'pending' in unbounded numbers and must not be scanned every few
 * seconds. */
static const char sql_depth[] = "SELECT status, count(*) FROM webhook_events"
                                " WHERE provider = ANY($1::text[]) AND status IN ('pending', 'failed', 'processing')"
                                " GROUP BY status"
                                " UNION ALL SELECT 'dead', count(*) FROM webhook_events WHERE status = 'dead'";
static const char sql_reauth[] = "SELECT count(*) FROM xero_tokens WHERE status = 'needs_reauth'";

/* The providers whose events are processed in this release; the others stay pending for later releases. */
static const char handled_providers[] = "{xero}";

struct st_gw_workers_t {
    const gw_config_t *cfg;
    gw_quota_t *quota;
    atomic_bool stopping;
    int n;
    struct st_worker_t *threads;
};

typedef struct st_worker_t {
    gw_workers_t *pool;
    int index;
    pthread_t tid;
    char owner[96]; /* the lease owner: host, pid and thread */
    gw_mirror_ctx_t ctx;
    uint64_t next_gauges, next_sweep_check;
} worker_t;

/* One claimed row. */
typedef struct st_row_t {
    char id[24];
    int64_t organisation_id;
    char *account, *event_type, *resource_id, *correlation;
    int attempts;
    bool grouped;
} row_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Builds "{1,2,3}" for the rows in group. */
static char *id_array(row_t **group, size_t n)
{
    size_t cap = 3 + n * 24, len = 1;
    char *s = malloc(cap);
    if (s == NULL)
        abort();
    s[0] = '{';
    for (size_t i = 0; i != n; ++i)
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i != 0 ? "," : "", group[i]->id);
    snprintf(s + len, cap - len, "}");
    return s;
}

/* Builds a text[] literal of the rows' resource ids (Xero ids are UUIDs; anything else is left out). */
static char *resource_array(row_t **group, size_t n)
{
    size_t cap = 3 + n * 40, len = 1;
    char *s = malloc(cap);
    if (s == NULL)
        abort();
    s[0] = '{';
    size_t k = 0;
    for (size_t i = 0; i != n; ++i) {
        const char *r = group[i]->resource_id;
        if (r == NULL || strlen(r) != 36 || strspn(r, "0123456789abcdefABCDEF-") != 36)
            continue;
        len += (size_t)snprintf(s + len, cap - len, "%s%s", k++ != 0 ? "," : "", r);
    }
    snprintf(s + len, cap - len, "}");
    return s;
}

static void record_lags(gw_dbs_result_t *r)
{
    for (size_t i = 0; r != NULL && i != gw_dbs_nrows(r); ++i) {
        const char *v = gw_dbs_value(r, i, 0);
        if (v != NULL)
            gw_metrics_processing_lag(strtod(v, NULL));
    }
}

static void finish_done(worker_t *w, row_t **group, size_t n, const char *status, enum gw_worker_outcome outcome)
{
    char *ids = id_array(group, n);
    const char *params[] = {ids, w->owner, status};
    gw_dbs_result_t *r = gw_dbs_query(w->ctx.db, sql_done, 3, params);
    if (r == NULL)
        gw_log(GW_LOG_WARN, "worker %d: cannot finish events: %s", w->index, gw_dbs_error(w->ctx.db));
    else
        gw_metrics_worker_outcome(outcome, gw_dbs_nrows(r));
    record_lags(r);
    gw_dbs_result_free(r);
    free(ids);
}

static void finish_failed(worker_t *w, row_t **group, size_t n, const char *error)
{
    const gw_config_t *cfg = w->pool->cfg;
    char *ids = id_array(group, n), max[16], base[24], cap[24];
    snprintf(max, sizeof(max), "%d", cfg->worker_max_attempts);
    snprintf(base, sizeof(base), "%d", cfg->worker_backoff_ms);
    snprintf(cap, sizeof(cap), "%d", cfg->worker_backoff_max_ms);
    const char *params[] = {ids, error, max, base, cap, w->owner};
    gw_dbs_result_t *r = gw_dbs_query(w->ctx.db, sql_fail, 6, params);
    if (r == NULL) {
        gw_log(GW_LOG_WARN, "worker %d: cannot record a failure: %s", w->index, gw_dbs_error(w->ctx.db));
    } else {
        for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
            bool dead = strcmp(gw_dbs_value(r, i, 0), "dead") == 0;
            gw_metrics_worker_outcome(dead ? GW_OUTCOME_DEAD : GW_OUTCOME_FAILED, 1);
        }
        gw_logline_t line;
        gw_log_begin(&line, GW_LOG_WARN, "events failed");
        gw_log_int(&line, "worker", w->index);
        gw_log_int(&line, "events", (long long)n);
        gw_log_str(&line, "error", error, strlen(error));
        gw_log_str(&line, "correlation_id", group[0]->correlation, strlen(group[0]->correlation));
        gw_log_end(&line);
    }
    gw_dbs_result_free(r);
    free(ids);
}

static void finish_rescheduled(worker_t *w, row_t **group, size_t n, uint64_t wait_ms, const char *why)
{
    char *ids = id_array(group, n), wait[24];
    snprintf(wait, sizeof(wait), "%llu", (unsigned long long)wait_ms);
    const char *params[] = {ids, wait, why, w->owner};
    long long rows = gw_dbs_exec(w->ctx.db, sql_reschedule, 4, params);
    if (rows < 0)
        gw_log(GW_LOG_WARN, "worker %d: cannot reschedule events: %s", w->index, gw_dbs_error(w->ctx.db));
    else
        gw_metrics_worker_outcome(GW_OUTCOME_RESCHEDULED, (uint64_t)rows);
    free(ids);
}

static void coalesce(worker_t *w, row_t **group, size_t n, const char *category, const char *claimed_at)
{
    char org[24], *resources = resource_array(group, n);
    snprintf(org, sizeof(org), "%lld", (long long)group[0]->organisation_id);
    const char *params[] = {org, group[0]->account, category, resources, claimed_at};
    gw_dbs_result_t *r = gw_dbs_query(w->ctx.db, sql_coalesce, 5, params);
    if (r != NULL)
        gw_metrics_worker_outcome(GW_OUTCOME_COALESCED, gw_dbs_nrows(r));
    record_lags(r);
    gw_dbs_result_free(r);
    free(resources);
}

/* Fetches and applies every planned call; on credit notes, also the invoices they are allocated to. */
static gw_fetch_status_t run_fetches(worker_t *w, row_t **group, int64_t token_id, cn_fetch_t *fetches, int nfetch,
                                     gw_fetch_result_t *res, int depth)
{
    for (int i = 0; i != nfetch; ++i) {
        gw_fetch_status_t st = gw_mirror_fetch(&w->ctx, group[0]->account, token_id, &fetches[i], NULL, res);
        if (st != GW_FETCH_OK)
            return st;
        gw_apply_counts_t counts = {0};
        char **refetch = NULL, err[300];
        size_t nrefetch = 0;
        int rc = gw_mirror_apply(&w->ctx, group[0]->organisation_id, group[0]->account, fetches[i].record_kind,
                                 res->res.body, group[0]->correlation, &counts, &refetch, &nrefetch, err, sizeof(err));
        gw_http_response_free(&res->res);
        memset(&res->res, 0, sizeof(res->res));
        if (rc != 0) {
            res->status = GW_FETCH_FAILED;
            snprintf(res->error, sizeof(res->error), "%s", err);
            for (size_t k = 0; k != nrefetch; ++k)
                free(refetch[k]);
            free(refetch);
            return res->status;
        }
        gw_fetch_status_t st2 = GW_FETCH_OK;
        if (nrefetch != 0 && depth == 0) {
            cn_str_t *ids = calloc(nrefetch, sizeof(*ids));
            for (size_t k = 0; k != nrefetch; ++k)
                ids[k] = (cn_str_t){refetch[k], strlen(refetch[k])};
            cn_fetch_t more[4];
            int nmore = cn_xero_connector.plan_fetches(CN_STR_LIT("INVOICE.UPDATE"), ids, nrefetch, more, 4);
            free(ids);
            if (nmore > 0)
                st2 = run_fetches(w, group, token_id, more, nmore, res, depth + 1);
        }
        for (size_t k = 0; k != nrefetch; ++k)
            free(refetch[k]);
        free(refetch);
        if (st2 != GW_FETCH_OK)
            return st2;
    }
    return GW_FETCH_OK;
}

/* Processes the rows of one (organisation, tenant, category). */
static void process_group(worker_t *w, row_t **group, size_t n, const char *claimed_at)
{
    const char *type = group[0]->event_type, *dot = strchr(type, '.');
    char category[64];
    snprintf(category, sizeof(category), "%.*s", (int)(dot != NULL ? (size_t)(dot - type) : strlen(type)), type);

    cn_str_t *ids = calloc(n, sizeof(*ids));
    if (ids == NULL)
        abort();
    for (size_t i = 0; i != n; ++i)
        if (group[i]->resource_id != NULL)
            ids[i] = (cn_str_t){group[i]->resource_id, strlen(group[i]->resource_id)};
    cn_fetch_t *fetches = calloc(MAX_FETCHES, sizeof(*fetches));
    if (fetches == NULL)
        abort();
    int nfetch = cn_xero_connector.plan_fetches((cn_str_t){type, strlen(type)}, ids, n, fetches, MAX_FETCHES);
    free(ids);

    if (nfetch <= 0 || group[0]->account == NULL) {
        /* nothing to fetch (e.g. SUBSCRIPTION events, or no well-formed id): done as is */
        finish_done(w, group, n, "ignored", GW_OUTCOME_IGNORED);
        free(fetches);
        return;
    }
    int64_t token_id = gw_mirror_token_of(&w->ctx, group[0]->organisation_id, group[0]->account);
    if (token_id == 0) {
        char err[160];
        snprintf(err, sizeof(err), "Xero tenant %s is not connected to this organisation", group[0]->account);
        finish_failed(w, group, n, err);
        free(fetches);
        return;
    }
    gw_fetch_result_t res;
    switch (run_fetches(w, group, token_id, fetches, nfetch, &res, 0)) {
    case GW_FETCH_OK:
        finish_done(w, group, n, "done", GW_OUTCOME_DONE);
        coalesce(w, group, n, category, claimed_at);
        break;
    case GW_FETCH_RESCHEDULE:
    case GW_FETCH_REAUTH:
        finish_rescheduled(w, group, n, res.wait_ms, res.error);
        break;
    case GW_FETCH_FAILED:
        finish_failed(w, group, n, res.error);
        break;
    }
    free(fetches);
}

static bool same_group(const row_t *a, const row_t *b)
{
    const char *da = strchr(a->event_type, '.'), *db = strchr(b->event_type, '.');
    size_t la = da != NULL ? (size_t)(da - a->event_type) : strlen(a->event_type);
    size_t lb = db != NULL ? (size_t)(db - b->event_type) : strlen(b->event_type);
    return a->organisation_id == b->organisation_id && la == lb && memcmp(a->event_type, b->event_type, la) == 0 &&
           (a->account == NULL ? b->account == NULL : b->account != NULL && strcmp(a->account, b->account) == 0);
}

/* Claims and processes one batch; returns the number of rows claimed, or -1 if the database failed. */
static int run_round(worker_t *w)
{
    const gw_config_t *cfg = w->pool->cfg;
    char coalesce_ms[16], batch[16], lease[16];
    snprintf(coalesce_ms, sizeof(coalesce_ms), "%d", cfg->xero_coalesce_ms);
    snprintf(batch, sizeof(batch), "%d", cfg->worker_batch);
    snprintf(lease, sizeof(lease), "%d", cfg->worker_lease_ms);
    char max[16];
    snprintf(max, sizeof(max), "%d", cfg->worker_max_attempts);
    const char *park[] = {max, handled_providers};
    long long parked = gw_dbs_exec(w->ctx.db, sql_park_lost, 2, park);
    if (parked > 0) {
        gw_metrics_worker_outcome(GW_OUTCOME_DEAD, (uint64_t)parked);
        gw_log(GW_LOG_WARN,
               "worker %d: parked %lld events as dead: their workers stopped before finishing them %s times", w->index,
               parked, max);
    }
    const char *params[] = {handled_providers, coalesce_ms, batch, w->owner, lease};
    gw_dbs_result_t *r = gw_dbs_query(w->ctx.db, sql_claim, 5, params);
    if (r == NULL) {
        gw_log(GW_LOG_WARN, "worker %d: claiming failed: %s", w->index, gw_dbs_error(w->ctx.db));
        return -1;
    }
    size_t n = gw_dbs_nrows(r);
    if (n == 0) {
        gw_dbs_result_free(r);
        return 0;
    }
    row_t *rows = calloc(n, sizeof(*rows));
    row_t **group = calloc(n, sizeof(*group));
    if (rows == NULL || group == NULL)
        abort();
    char claimed_at[64];
    snprintf(claimed_at, sizeof(claimed_at), "%s", gw_dbs_value(r, 0, 8));
    for (size_t i = 0; i != n; ++i) {
        row_t *row = &rows[i];
        snprintf(row->id, sizeof(row->id), "%s", gw_dbs_value(r, i, 0));
        row->organisation_id = strtoll(gw_dbs_value(r, i, 1), NULL, 10);
        const char *v;
        row->account = (v = gw_dbs_value(r, i, 3)) != NULL ? strdup(v) : NULL;
        row->event_type = strdup(gw_dbs_value(r, i, 4));
        row->resource_id = (v = gw_dbs_value(r, i, 5)) != NULL ? strdup(v) : NULL;
        row->attempts = atoi(gw_dbs_value(r, i, 6));
        row->correlation = strdup(gw_dbs_value(r, i, 7));
    }
    gw_dbs_result_free(r);

    for (size_t i = 0; i != n; ++i) {
        if (rows[i].grouped)
            continue;
        size_t k = 0;
        for (size_t j = i; j != n; ++j)
            if (!rows[j].grouped && same_group(&rows[i], &rows[j])) {
                rows[j].grouped = true;
                group[k++] = &rows[j];
            }
        process_group(w, group, k, claimed_at);
    }

    for (size_t i = 0; i != n; ++i) {
        free(rows[i].account);
        free(rows[i].event_type);
        free(rows[i].resource_id);
        free(rows[i].correlation);
    }
    free(rows);
    free(group);
    return (int)n;
}

static void update_gauges(worker_t *w)
{
    static const char *const statuses[] = {"pending", "failed", "processing", "dead"};
    const char *params[] = {handled_providers};
    gw_dbs_result_t *r = gw_dbs_query(w->ctx.db, sql_depth, 1, params);
    if (r != NULL) {
        for (size_t s = 0; s != 4; ++s) {
            int64_t v = 0;
            for (size_t i = 0; i != gw_dbs_nrows(r); ++i)
                if (strcmp(gw_dbs_value(r, i, 0), statuses[s]) == 0)
                    v = strtoll(gw_dbs_value(r, i, 1), NULL, 10);
            gw_metrics_queue_depth(statuses[s], v);
        }
        gw_dbs_result_free(r);
    }
    if ((r = gw_dbs_query(w->ctx.db, sql_reauth, 0, NULL)) != NULL) {
        gw_metrics_xero_reauth(strtoll(gw_dbs_value(r, 0, 0), NULL, 10));
        gw_dbs_result_free(r);
    }
    gw_metrics_quota_fallback(gw_quota_fallback_active());
}

/* Sleeps until notified, timeout_ms passes or the pool stops. */
static void wait_for_work(worker_t *w, int timeout_ms)
{
    if (gw_dbs_exec(w->ctx.db, "LISTEN settled_events", 0, NULL) < 0) {
        usleep(DB_RETRY_MS * 1000);
        return;
    }
    for (int waited = 0; waited < timeout_ms && !atomic_load(&w->pool->stopping); waited += WAIT_SLICE_MS) {
        int slice = timeout_ms - waited < WAIT_SLICE_MS ? timeout_ms - waited : WAIT_SLICE_MS;
        int rc = gw_dbs_wait_notify(w->ctx.db, slice);
        if (rc != 0)
            return; /* notified, or the connection broke (the next round reconnects) */
    }
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    const gw_config_t *cfg = w->pool->cfg;
    bool short_wait = false;
    while (!atomic_load(&w->pool->stopping)) {
        uint64_t now = now_ms();
        if (w->index == 0 && now >= w->next_gauges) {
            update_gauges(w);
            w->next_gauges = now + GAUGES_EVERY_MS;
        }
        if (w->index == 0 && cfg->xero_sync_interval != 0 && now >= w->next_sweep_check) {
            gw_sync_sweep_due(&w->ctx);
            w->next_sweep_check = now + SWEEP_CHECK_MS;
        }
        int n = run_round(w);
        if (n > 0) {
            short_wait = true;
            continue;
        }
        if (n < 0) {
            usleep(DB_RETRY_MS * 1000);
            continue;
        }
        /* after a notification, fresh Xero rows may still be inside the coalescing window: look again soon */
        int timeout = short_wait && cfg->xero_coalesce_ms + 100 < cfg->worker_poll_ms ? cfg->xero_coalesce_ms + 100
                                                                                      : cfg->worker_poll_ms;
        short_wait = false;
        uint64_t before = now_ms();
        wait_for_work(w, timeout);
        if (now_ms() - before < (uint64_t)timeout)
            short_wait = true; /* woken by a notification */
    }
    return NULL;
}

gw_workers_t *gw_workers_start(const gw_config_t *cfg, int nthreads, char *err, size_t errlen)
{
    gw_workers_t *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        abort();
    pool->cfg = cfg;
    pool->n = nthreads;
    pool->quota = gw_quota_create(cfg);
    pool->threads = calloc((size_t)nthreads, sizeof(*pool->threads));
    if (pool->threads == NULL)
        abort();
    char host[64] = "unknown";
    gethostname(host, sizeof(host) - 1);
    for (int i = 0; i != nthreads; ++i) {
        worker_t *w = &pool->threads[i];
        w->pool = pool;
        w->index = i;
        snprintf(w->owner, sizeof(w->owner), "%s:%d:%d", host, (int)getpid(), i);
        w->ctx.cfg = cfg;
        w->ctx.quota = pool->quota;
        if ((w->ctx.db = gw_dbs_connect(cfg->database_url, err, errlen)) == NULL) {
            for (int j = 0; j != i; ++j)
                gw_dbs_close(pool->threads[j].ctx.db);
            gw_quota_destroy(pool->quota);
            free(pool->threads);
            free(pool);
            return NULL;
        }
    }
    for (int i = 0; i != nthreads; ++i)
        if (pthread_create(&pool->threads[i].tid, NULL, worker_main, &pool->threads[i]) != 0) {
            gw_log(GW_LOG_ERROR, "cannot start worker thread %d: %s", i, strerror(errno));
            abort();
        }
    gw_log(GW_LOG_INFO, "%d queue worker%s started", nthreads, nthreads == 1 ? "" : "s");
    return pool;
}

void gw_workers_stop(gw_workers_t *pool)
{
    atomic_store(&pool->stopping, true);
    for (int i = 0; i != pool->n; ++i)
        pthread_join(pool->threads[i].tid, NULL);
    for (int i = 0; i != pool->n; ++i)
        gw_dbs_close(pool->threads[i].ctx.db);
    gw_quota_destroy(pool->quota);
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
    gw_workers_t *pool = gw_workers_start(cfg, cfg->workers > 0 ? cfg->workers : 1, err, sizeof(err));
    if (pool == NULL) {
        gw_log(GW_LOG_ERROR, "%s", err);
        gw_http_shutdown();
        return 1;
    }
    while (!atomic_load(&work_stop))
        usleep(100 * 1000);
    gw_workers_stop(pool);
    gw_http_shutdown();
    gw_log(GW_LOG_INFO, "workers stopped");
    return 0;
}
