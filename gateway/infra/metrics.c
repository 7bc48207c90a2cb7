/* SPDX-License-Identifier: MIT */
/* metrics.c: lock-free metric storage and its Prometheus text rendering. */
#include "metrics.h"
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "log.h"

const char *const gw_db_state_names[GW_DB_STATE_MAX] = {"disconnected", "connecting", "preparing", "idle", "busy"};

#define STATUS_MIN 100
#define STATUS_MAX 600

static const double latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
#define NLAT (sizeof(latency_bounds) / sizeof(latency_bounds[0]))
static const unsigned batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define NBATCH (sizeof(batch_bounds) / sizeof(batch_bounds[0]))

const char *const gw_worker_outcome_names[GW_OUTCOME_MAX] = {"done",        "coalesced", "ignored",
                                                             "rescheduled", "failed",    "dead"};
static const char *const queue_statuses[] = {"pending", "failed", "processing", "dead"};
#define NQUEUE (sizeof(queue_statuses) / sizeof(queue_statuses[0]))
static const char *const record_kinds[] = {"xero.contacts", "xero.invoices", "xero.creditnotes"};
#define NKINDS (sizeof(record_kinds) / sizeof(record_kinds[0]))
static const double lag_bounds[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600};
#define NLAG (sizeof(lag_bounds) / sizeof(lag_bounds[0]))
static const int call_statuses[] = {0, 200, 400, 401, 403, 404, 429, 500, 502, 503, 504};
#define NCALL (sizeof(call_statuses) / sizeof(call_statuses[0]))

static const char *const dead_providers[] = {"stripe", "xero", "gocardless", "other"};
#define NDEAD (sizeof(dead_providers) / sizeof(dead_providers[0]))
static const char *const writeback_outcomes[] = {"written", "deleted", "in_sync", "refused",
                                                 "retried", "waited",  "dead",    "unconfigured"};
#define NWRITEBACK (sizeof(writeback_outcomes) / sizeof(writeback_outcomes[0]))
static const char *const guard_reasons[] = {"unauthenticated", "revoked", "role", "invalid"};
#define NGUARD (sizeof(guard_reasons) / sizeof(guard_reasons[0]))
static const char *const alert_results[] = {"sent", "failed", "dropped"};
#define NALERT (sizeof(alert_results) / sizeof(alert_results[0]))
static const char *const circuit_states[] = {"closed", "open", "half_open"};
#define NCIRCUIT_STATES (sizeof(circuit_states) / sizeof(circuit_states[0]))

/* The circuits, replaced as a whole by whichever worker last read them. */
static pthread_mutex_t circuits_lock = PTHREAD_MUTEX_INITIALIZER;
static gw_metrics_circuit_t circuits[GW_METRICS_MAX_CIRCUITS];
static size_t ncircuits;

/* The routes, as named by gw_metrics_routes (set once before any request, then only read). */
static const char *route_names[GW_METRICS_MAX_ROUTES] = {"other"}, *route_providers[GW_METRICS_MAX_ROUTES];
static size_t nroutes; /* index nroutes is "other" */

static struct {
    atomic_uint_fast64_t requests[GW_METRICS_MAX_ROUTES][STATUS_MAX - STATUS_MIN];
    atomic_uint_fast64_t latency[GW_METRICS_MAX_ROUTES][NLAT + 1];
    atomic_uint_fast64_t latency_sum_us[GW_METRICS_MAX_ROUTES];
    atomic_uint_fast64_t received[GW_METRICS_MAX_ROUTES], stored[GW_METRICS_MAX_ROUTES];
    atomic_uint_fast64_t batch[NBATCH + 1], batch_sum, batch_count;
    atomic_int_fast64_t db_state[GW_DB_STATE_MAX];
    atomic_int_fast64_t redis_up;
    atomic_uint_fast64_t outcomes[GW_OUTCOME_MAX];
    atomic_uint_fast64_t lag[NLAG + 1], lag_sum_ms, lag_count;
    atomic_int_fast64_t queue[NQUEUE];
    atomic_int_fast64_t xero_reauth;
    atomic_uint_fast64_t drift_changed[NKINDS], drift_unchanged[NKINDS];
    atomic_uint_fast64_t xero_calls[NCALL + 1];
    atomic_int_fast64_t quota_fallback;
    atomic_uint_fast64_t dead_letters[NDEAD];
    atomic_uint_fast64_t alerts[NALERT];
    atomic_uint_fast64_t writebacks[NWRITEBACK];
    atomic_uint_fast64_t revocation_unchecked;
    atomic_uint_fast64_t guard_refused[NGUARD];
} m;

void gw_metrics_circuits(const gw_metrics_circuit_t *c, size_t n)
{
    if (n > GW_METRICS_MAX_CIRCUITS)
        n = GW_METRICS_MAX_CIRCUITS;
    pthread_mutex_lock(&circuits_lock);
    memcpy(circuits, c, n * sizeof(*c));
    ncircuits = n;
    pthread_mutex_unlock(&circuits_lock);
}

size_t gw_metrics_circuits_open(gw_metrics_circuit_t *out, size_t cap)
{
    size_t n = 0;
    pthread_mutex_lock(&circuits_lock);
    for (size_t i = 0; i != ncircuits; ++i)
        if (strcmp(circuits[i].state, "closed") != 0) {
            if (n < cap)
                out[n] = circuits[i];
            ++n;
        }
    pthread_mutex_unlock(&circuits_lock);
    return n;
}

void gw_metrics_dead_letter(const char *provider)
{
    size_t i = 0;
    while (i != NDEAD - 1 && (provider == NULL || strcmp(dead_providers[i], provider) != 0))
        ++i;
    atomic_fetch_add_explicit(&m.dead_letters[i], 1, memory_order_relaxed);
}

void gw_metrics_writeback(const char *outcome, uint64_t n)
{
    for (size_t i = 0; i != NWRITEBACK; ++i)
        if (strcmp(writeback_outcomes[i], outcome) == 0)
            atomic_fetch_add_explicit(&m.writebacks[i], n, memory_order_relaxed);
}

void gw_metrics_alert(const char *result)
{
    for (size_t i = 0; i != NALERT; ++i)
        if (strcmp(alert_results[i], result) == 0)
            atomic_fetch_add_explicit(&m.alerts[i], 1, memory_order_relaxed);
}

/* The shared gauges (gw_metrics_shared_set), under their lock. */
static const char *const shared_providers[] = {"stripe", "xero", "gocardless"};
#define NSHARED_PROVIDERS (sizeof(shared_providers) / sizeof(shared_providers[0]))
static struct {
    pthread_mutex_t lock;
    bool read;
    int64_t read_at;
    int64_t depth[NSHARED_PROVIDERS][NQUEUE];
    int64_t oldest[NSHARED_PROVIDERS]; /* of the rows still to do: pending and failed */
    int64_t xero_reauth;
} shared = {.lock = PTHREAD_MUTEX_INITIALIZER};

void gw_metrics_shared_set(const gw_metrics_queue_row_t *rows, size_t n, int64_t xero_reauth, int64_t read_at)
{
    pthread_mutex_lock(&shared.lock);
    memset(shared.depth, 0, sizeof(shared.depth));
    memset(shared.oldest, 0, sizeof(shared.oldest));
    for (size_t i = 0; i != n; ++i)
        for (size_t p = 0; p != NSHARED_PROVIDERS; ++p)
            for (size_t q = 0; q != NQUEUE; ++q)
                if (strcmp(rows[i].provider, shared_providers[p]) == 0 &&
                    strcmp(rows[i].status, queue_statuses[q]) == 0) {
                    shared.depth[p][q] = rows[i].count;
                    bool to_do = strcmp(queue_statuses[q], "pending") == 0 || strcmp(queue_statuses[q], "failed") == 0;
                    if (to_do && rows[i].count != 0 && rows[i].oldest_seconds > shared.oldest[p])
                        shared.oldest[p] = rows[i].oldest_seconds;
                }
    shared.xero_reauth = xero_reauth;
    shared.read = true;
    shared.read_at = read_at;
    pthread_mutex_unlock(&shared.lock);
    gw_metrics_xero_reauth(xero_reauth);
}

void gw_metrics_worker_outcome(enum gw_worker_outcome outcome, uint64_t n)
{
    atomic_fetch_add_explicit(&m.outcomes[outcome], n, memory_order_relaxed);
}

void gw_metrics_processing_lag(double seconds)
{
    size_t i = 0;
    while (i != NLAG && seconds > lag_bounds[i])
        ++i;
    atomic_fetch_add_explicit(&m.lag[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m.lag_sum_ms, (uint64_t)(seconds * 1000), memory_order_relaxed);
    atomic_fetch_add_explicit(&m.lag_count, 1, memory_order_relaxed);
}

void gw_metrics_queue_depth(const char *status, int64_t n)
{
    for (size_t i = 0; i != NQUEUE; ++i)
        if (strcmp(queue_statuses[i], status) == 0)
            atomic_store_explicit(&m.queue[i], n, memory_order_relaxed);
}

void gw_metrics_xero_reauth(int64_t n)
{
    atomic_store_explicit(&m.xero_reauth, n, memory_order_relaxed);
}

int64_t gw_metrics_xero_reauth_get(void)
{
    return atomic_load_explicit(&m.xero_reauth, memory_order_relaxed);
}

void gw_metrics_xero_drift(const char *record_kind, uint64_t changed, uint64_t unchanged)
{
    for (size_t i = 0; i != NKINDS; ++i)
        if (strcmp(record_kinds[i], record_kind) == 0) {
            atomic_fetch_add_explicit(&m.drift_changed[i], changed, memory_order_relaxed);
            atomic_fetch_add_explicit(&m.drift_unchanged[i], unchanged, memory_order_relaxed);
        }
}

void gw_metrics_xero_call(long status)
{
    size_t i = 0;
    while (i != NCALL && call_statuses[i] != status)
        ++i;
    atomic_fetch_add_explicit(&m.xero_calls[i], 1, memory_order_relaxed);
}

void gw_metrics_quota_fallback(bool active)
{
    atomic_store_explicit(&m.quota_fallback, active ? 1 : 0, memory_order_relaxed);
}

void gw_metrics_routes(const char *const *names, const char *const *providers, size_t n)
{
    if (n >= GW_METRICS_MAX_ROUTES)
        n = GW_METRICS_MAX_ROUTES - 1;
    for (size_t i = 0; i != n; ++i) {
        route_names[i] = names[i];
        route_providers[i] = providers[i];
    }
    route_names[n] = "other";
    route_providers[n] = NULL;
    nroutes = n;
}

void gw_metrics_request(size_t route, int status, uint64_t micros)
{
    if (status < STATUS_MIN || status >= STATUS_MAX)
        status = 599;
    if (route > nroutes)
        route = nroutes;
    atomic_fetch_add_explicit(&m.requests[route][status - STATUS_MIN], 1, memory_order_relaxed);
    if (route_providers[route] != NULL) {
        size_t i = 0;
        while (i != NLAT && (double)micros > latency_bounds[i] * 1e6)
            ++i;
        atomic_fetch_add_explicit(&m.latency[route][i], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&m.latency_sum_us[route], micros, memory_order_relaxed);
    }
}

void gw_metrics_events(size_t route, uint64_t received, uint64_t stored)
{
    if (route >= nroutes || route_providers[route] == NULL)
        return;
    atomic_fetch_add_explicit(&m.received[route], received, memory_order_relaxed);
    atomic_fetch_add_explicit(&m.stored[route], stored, memory_order_relaxed);
}

void gw_metrics_batch(size_t n)
{
    size_t i = 0;
    while (i != NBATCH && n > batch_bounds[i])
        ++i;
    atomic_fetch_add_explicit(&m.batch[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m.batch_sum, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&m.batch_count, 1, memory_order_relaxed);
}

void gw_metrics_db_state(enum gw_db_conn_state from, enum gw_db_conn_state to)
{
    if (from < GW_DB_STATE_MAX)
        atomic_fetch_sub_explicit(&m.db_state[from], 1, memory_order_relaxed);
    if (to < GW_DB_STATE_MAX)
        atomic_fetch_add_explicit(&m.db_state[to], 1, memory_order_relaxed);
}

void gw_metrics_redis_up(int delta)
{
    atomic_fetch_add_explicit(&m.redis_up, delta, memory_order_relaxed);
}

void gw_metrics_revocation_unchecked(void)
{
    atomic_fetch_add_explicit(&m.revocation_unchecked, 1, memory_order_relaxed);
}

void gw_metrics_guard_refused(const char *reason)
{
    for (size_t i = 0; i != NGUARD; ++i)
        if (strcmp(guard_reasons[i], reason) == 0)
            atomic_fetch_add_explicit(&m.guard_refused[i], 1, memory_order_relaxed);
}

typedef struct st_out_t {
    char *buf;
    size_t len, cap;
} out_t;

__attribute__((format(printf, 2, 3))) static void out(out_t *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = o->cap * 2 + (size_t)(n > 0 ? n : 0);
        if ((o->buf = realloc(o->buf, o->cap)) == NULL)
            abort();
    }
}

/* o's samples with instance_id="<id>" as their first label, and the settled_instance_info sample (o as it is when
 * gw_log_set_instance was never called). */
static out_t relabel(const out_t *o)
{
    const char *id = gw_log_instance(); /* only [A-Za-z0-9._:-]: nothing to escape in a label */
    out_t r = {malloc(o->len * 3 / 2 + 256), 0, o->len * 3 / 2 + 256};
    if (r.buf == NULL)
        abort();
    if (id[0] == '\0') { /* no instance id was set (unit tests): the samples as they are */
        memcpy(r.buf, o->buf, o->len);
        r.len = o->len;
        return r;
    }
    out(&r,
        "# HELP settled_instance_info This process; its instance_id labels every per-process metric.\n"
        "# TYPE settled_instance_info gauge\nsettled_instance_info{instance_id=\"%s\"} 1\n",
        id);
    for (size_t at = 0; at < o->len;) {
        const char *line = o->buf + at, *nl = memchr(line, '\n', o->len - at);
        size_t n = nl != NULL ? (size_t)(nl - line) + 1 : o->len - at;
        if (line[0] == '#') {
            out(&r, "%.*s", (int)n, line);
        } else {
            size_t name = strcspn(line, "{ ");
            if (line[name] == '{')
                out(&r, "%.*s{instance_id=\"%s\",%.*s", (int)name, line, id, (int)(n - name - 1), line + name + 1);
            else
                out(&r, "%.*s{instance_id=\"%s\"}%.*s", (int)name, line, id, (int)(n - name), line + name);
        }
        at += n;
    }
    return r;
}

/* The gauges of shared state, unlabelled by instance: every process reports the same. */
static void render_shared(out_t *o)
{
    pthread_mutex_lock(&shared.lock);
    out(o, "# HELP settled_queue_depth Inbox rows by provider and work status, read from PostgreSQL (shared state, "
           "at most a few seconds old).\n# TYPE settled_queue_depth gauge\n");
    for (size_t p = 0; p != NSHARED_PROVIDERS; ++p)
        for (size_t q = 0; q != NQUEUE; ++q)
            out(o, "settled_queue_depth{provider=\"%s\",status=\"%s\"} %lld\n", shared_providers[p], queue_statuses[q],
                (long long)shared.depth[p][q]);
    out(o, "# HELP settled_dead_letters Inbox rows parked as dead (given up on), by provider.\n"
           "# TYPE settled_dead_letters gauge\n");
    for (size_t p = 0; p != NSHARED_PROVIDERS; ++p)
        out(o, "settled_dead_letters{provider=\"%s\"} %lld\n", shared_providers[p],
            (long long)shared.depth[p][NQUEUE - 1]);
    out(o, "# HELP settled_oldest_pending_seconds Age of the oldest inbox row still to do (pending or failed), by "
           "provider; 0 when there is none.\n# TYPE settled_oldest_pending_seconds gauge\n");
    for (size_t p = 0; p != NSHARED_PROVIDERS; ++p)
        out(o, "settled_oldest_pending_seconds{provider=\"%s\"} %lld\n", shared_providers[p],
            (long long)shared.oldest[p]);
    out(o,
        "# HELP settled_xero_connections_needing_reauth Xero token sets that an admin must re-authorise.\n"
        "# TYPE settled_xero_connections_needing_reauth gauge\nsettled_xero_connections_needing_reauth %lld\n",
        (long long)shared.xero_reauth);
    out(o,
        "# HELP settled_shared_gauges_age_seconds Seconds since the shared gauges were read from PostgreSQL; -1 if "
        "they never were (the database is unreachable).\n# TYPE settled_shared_gauges_age_seconds gauge\n"
        "settled_shared_gauges_age_seconds %lld\n",
        shared.read ? (long long)(time(NULL) - shared.read_at) : -1LL);
    pthread_mutex_unlock(&shared.lock);
}

char *gw_metrics_render(size_t *len)
{
    out_t o = {malloc(16384), 0, 16384};
    if (o.buf == NULL)
        abort();

    out(&o, "# HELP settled_http_requests_total HTTP requests answered, by route and status.\n"
            "# TYPE settled_http_requests_total counter\n");
    for (size_t r = 0; r <= nroutes; ++r)
        for (int s = 0; s != STATUS_MAX - STATUS_MIN; ++s) {
            uint64_t v = atomic_load_explicit(&m.requests[r][s], memory_order_relaxed);
            if (v != 0)
                out(&o, "settled_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n", route_names[r],
                    s + STATUS_MIN, (unsigned long long)v);
        }

    out(&o, "# HELP settled_intake_seconds Time from request start to reply on webhook routes.\n"
            "# TYPE settled_intake_seconds histogram\n");
    for (size_t r = 0; r != nroutes; ++r) {
        if (route_providers[r] == NULL)
            continue;
        uint64_t cum = 0;
        for (size_t i = 0; i <= NLAT; ++i) {
            cum += atomic_load_explicit(&m.latency[r][i], memory_order_relaxed);
            if (i == NLAT)
                out(&o, "settled_intake_seconds_bucket{provider=\"%s\",le=\"+Inf\"} %llu\n", route_providers[r],
                    (unsigned long long)cum);
            else
                out(&o, "settled_intake_seconds_bucket{provider=\"%s\",le=\"%g\"} %llu\n", route_providers[r],
                    latency_bounds[i], (unsigned long long)cum);
        }
        uint64_t sum = atomic_load_explicit(&m.latency_sum_us[r], memory_order_relaxed);
        out(&o, "settled_intake_seconds_sum{provider=\"%s\"} %llu.%06llu\n", route_providers[r],
            (unsigned long long)(sum / 1000000), (unsigned long long)(sum % 1000000));
        out(&o, "settled_intake_seconds_count{provider=\"%s\"} %llu\n", route_providers[r], (unsigned long long)cum);
    }

    out(&o, "# HELP settled_events_received_total Webhook events received with a valid signature (stored or "
            "duplicate).\n# TYPE settled_events_received_total counter\n");
    for (size_t r = 0; r != nroutes; ++r)
        if (route_providers[r] != NULL)
            out(&o, "settled_events_received_total{provider=\"%s\"} %llu\n", route_providers[r],
                (unsigned long long)atomic_load_explicit(&m.received[r], memory_order_relaxed));
    out(&o, "# HELP settled_events_stored_total Webhook events newly stored in the inbox.\n"
            "# TYPE settled_events_stored_total counter\n");
    for (size_t r = 0; r != nroutes; ++r)
        if (route_providers[r] != NULL)
            out(&o, "settled_events_stored_total{provider=\"%s\"} %llu\n", route_providers[r],
                (unsigned long long)atomic_load_explicit(&m.stored[r], memory_order_relaxed));

    out(&o, "# HELP settled_db_batch_size Requests committed together in one transaction.\n"
            "# TYPE settled_db_batch_size histogram\n");
    uint64_t cum = 0;
    for (size_t i = 0; i <= NBATCH; ++i) {
        cum += atomic_load_explicit(&m.batch[i], memory_order_relaxed);
        if (i == NBATCH)
            out(&o, "settled_db_batch_size_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        else
            out(&o, "settled_db_batch_size_bucket{le=\"%u\"} %llu\n", batch_bounds[i], (unsigned long long)cum);
    }
    out(&o, "settled_db_batch_size_sum %llu\nsettled_db_batch_size_count %llu\n",
        (unsigned long long)atomic_load_explicit(&m.batch_sum, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&m.batch_count, memory_order_relaxed));

    out(&o, "# HELP settled_db_connections Database connections of all event loops, by state.\n"
            "# TYPE settled_db_connections gauge\n");
    for (int s = 0; s != GW_DB_STATE_MAX; ++s)
        out(&o, "settled_db_connections{state=\"%s\"} %lld\n", gw_db_state_names[s],
            (long long)atomic_load_explicit(&m.db_state[s], memory_order_relaxed));

    out(&o,
        "# HELP settled_redis_connections_up Event loops whose Redis connection is up.\n"
        "# TYPE settled_redis_connections_up gauge\nsettled_redis_connections_up %lld\n",
        (long long)atomic_load_explicit(&m.redis_up, memory_order_relaxed));
    out(&o,
        "# HELP settled_api_revocation_unchecked_total API access tokens accepted without a revocation check (Redis "
        "down or not configured).\n"
        "# TYPE settled_api_revocation_unchecked_total counter\nsettled_api_revocation_unchecked_total %llu\n",
        (unsigned long long)atomic_load_explicit(&m.revocation_unchecked, memory_order_relaxed));
    out(&o, "# HELP settled_api_refused_total API requests the guard refused, by reason.\n"
            "# TYPE settled_api_refused_total counter\n");
    for (size_t i = 0; i != NGUARD; ++i)
        out(&o, "settled_api_refused_total{reason=\"%s\"} %llu\n", guard_reasons[i],
            (unsigned long long)atomic_load_explicit(&m.guard_refused[i], memory_order_relaxed));

    out(&o, "# HELP settled_worker_events_total Inbox events finished by the queue workers, by outcome.\n"
            "# TYPE settled_worker_events_total counter\n");
    for (int i = 0; i != GW_OUTCOME_MAX; ++i)
        out(&o, "settled_worker_events_total{outcome=\"%s\"} %llu\n", gw_worker_outcome_names[i],
            (unsigned long long)atomic_load_explicit(&m.outcomes[i], memory_order_relaxed));
    out(&o, "# HELP settled_processing_lag_seconds Time from storing an event to finishing it.\n"
            "# TYPE settled_processing_lag_seconds histogram\n");
    cum = 0;
    for (size_t i = 0; i <= NLAG; ++i) {
        cum += atomic_load_explicit(&m.lag[i], memory_order_relaxed);
        if (i == NLAG)
            out(&o, "settled_processing_lag_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        else
            out(&o, "settled_processing_lag_seconds_bucket{le=\"%g\"} %llu\n", lag_bounds[i], (unsigned long long)cum);
    }
    uint64_t lag_ms = atomic_load_explicit(&m.lag_sum_ms, memory_order_relaxed);
    out(&o, "settled_processing_lag_seconds_sum %llu.%03llu\nsettled_processing_lag_seconds_count %llu\n",
        (unsigned long long)(lag_ms / 1000), (unsigned long long)(lag_ms % 1000),
        (unsigned long long)atomic_load_explicit(&m.lag_count, memory_order_relaxed));
    out(&o, "# HELP settled_xero_drift_total Records a drift-repair sweep found changed (missed by webhooks) or "
            "unchanged.\n# TYPE settled_xero_drift_total counter\n");
    for (size_t i = 0; i != NKINDS; ++i) {
        out(&o, "settled_xero_drift_total{kind=\"%s\",result=\"changed\"} %llu\n", record_kinds[i],
            (unsigned long long)atomic_load_explicit(&m.drift_changed[i], memory_order_relaxed));
        out(&o, "settled_xero_drift_total{kind=\"%s\",result=\"unchanged\"} %llu\n", record_kinds[i],
            (unsigned long long)atomic_load_explicit(&m.drift_unchanged[i], memory_order_relaxed));
    }
    out(&o, "# HELP settled_xero_api_calls_total Calls to the Xero API by HTTP status (0: no response).\n"
            "# TYPE settled_xero_api_calls_total counter\n");
    for (size_t i = 0; i <= NCALL; ++i) {
        uint64_t v = atomic_load_explicit(&m.xero_calls[i], memory_order_relaxed);
        if (v == 0)
            continue;
        if (i == NCALL)
            out(&o, "settled_xero_api_calls_total{status=\"other\"} %llu\n", (unsigned long long)v);
        else
            out(&o, "settled_xero_api_calls_total{status=\"%d\"} %llu\n", call_statuses[i], (unsigned long long)v);
    }
    out(&o,
        "# HELP settled_quota_fallback_active 1 while quotas run on local limits because Redis is unreachable.\n"
        "# TYPE settled_quota_fallback_active gauge\nsettled_quota_fallback_active %lld\n",
        (long long)atomic_load_explicit(&m.quota_fallback, memory_order_relaxed));

    out(&o, "# HELP settled_dead_letters_total Inbox events that went dead (retries exhausted, a permanent failure, "
            "or workers that kept dying), by provider.\n# TYPE settled_dead_letters_total counter\n");
    for (size_t i = 0; i != NDEAD; ++i)
        out(&o, "settled_dead_letters_total{provider=\"%s\"} %llu\n", dead_providers[i],
            (unsigned long long)atomic_load_explicit(&m.dead_letters[i], memory_order_relaxed));
    out(&o, "# HELP settled_xero_writebacks_total Steps of the payment write-back to Xero, by outcome (dead: given up "
            "after the retry schedule, refused: for an admin).\n# TYPE settled_xero_writebacks_total counter\n");
    for (size_t i = 0; i != NWRITEBACK; ++i)
        out(&o, "settled_xero_writebacks_total{outcome=\"%s\"} %llu\n", writeback_outcomes[i],
            (unsigned long long)atomic_load_explicit(&m.writebacks[i], memory_order_relaxed));
    out(&o, "# HELP settled_alerts_total Operational alerts posted to SETTLED_ALERT_WEBHOOK_URL, by result.\n"
            "# TYPE settled_alerts_total counter\n");
    for (size_t i = 0; i != NALERT; ++i)
        out(&o, "settled_alerts_total{result=\"%s\"} %llu\n", alert_results[i],
            (unsigned long long)atomic_load_explicit(&m.alerts[i], memory_order_relaxed));
    out(&o, "# HELP settled_provider_circuit State of the circuit of each provider account that ever failed (1 for "
            "its state), as last read by a worker.\n# TYPE settled_provider_circuit gauge\n");
    size_t nopen = 0;
    pthread_mutex_lock(&circuits_lock);
    for (size_t i = 0; i != ncircuits; ++i) {
        const gw_metrics_circuit_t *c = &circuits[i];
        nopen += strcmp(c->state, "closed") != 0;
        for (size_t k = 0; k != NCIRCUIT_STATES; ++k)
            out(&o, "settled_provider_circuit{provider=\"%s\",account=\"%s\",state=\"%s\"} %d\n", c->provider,
                c->account, circuit_states[k], strcmp(c->state, circuit_states[k]) == 0);
    }
    pthread_mutex_unlock(&circuits_lock);
    out(&o,
        "# HELP settled_provider_circuits_open Provider accounts whose circuit is open or half-open.\n"
        "# TYPE settled_provider_circuits_open gauge\nsettled_provider_circuits_open %zu\n",
        nopen);

    out_t r = relabel(&o);
    free(o.buf);
    render_shared(&r);
    *len = r.len;
    return r.buf;
}
