/* SPDX-License-Identifier: MIT */
/*
 * ops.c: liveness, readiness and Prometheus metrics. /healthz and /readyz are answered on the loop without touching
 * the store. /metrics also reports gauges of shared state (queue depth by provider and status, dead letters, the
 * oldest row still to do, Xero connections needing re-authorisation), read from PostgreSQL with one query by
 * whichever process is scraped, so they are right in every topology (serve with workers, serve without, work alone).
 * The query runs on an offload thread, never on the loop, at most once per GW_OPS_GAUGES_TTL_MS however many loops
 * and scrapers ask; a scrape in between gets the cached values.
 */
#include "ops.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "log.h"
#include "mem.h"
#include "reply.h"

int gw_ops_healthz(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    gw_reply_json(req, 200, H2O_STRLIT("{\"status\":\"ok\"}"));
    return 0;
}

/* Ready when this loop has a live database connection. Redis, the Xero connections and the providers' circuits are
 * reported but never gate readiness: webhooks are accepted without them (an open circuit means a provider API is
 * down, and intake must go on storing its webhooks). xero_reauth counts token sets an admin must re-authorise, and
 * circuits lists (up to READYZ_CIRCUITS of) the provider accounts whose circuit is open or half-open, as last read by
 * a queue worker; instance names this process (log.h). */
#define READYZ_CIRCUITS 16
int gw_ops_readyz(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    bool pg = gw_db_is_up(loop->db);
    const char *redis = loop->redis == NULL ? "disabled" : gw_redis_is_up(loop->redis) ? "up" : "down";
    long long reauth = (long long)gw_metrics_xero_reauth_get();
    gw_metrics_circuit_t open[READYZ_CIRCUITS];
    size_t nopen = gw_metrics_circuits_open(open, READYZ_CIRCUITS);
    size_t cap = 256 + READYZ_CIRCUITS * (sizeof(open[0]) + 80), len = 0;
    char *body = h2o_mem_alloc_pool(&req->pool, cap);
    len +=
        (size_t)snprintf(body, cap,
                         "{\"status\":\"%s\",\"postgres\":\"%s\",\"redis\":\"%s\",\"xero\":\"%s\",\"xero_reauth\":%lld,"
                         "\"instance\":\"%s\",\"circuits_open\":%zu,\"circuits\":[",
                         pg ? "ready" : "unavailable", pg ? "up" : "down", redis, reauth != 0 ? "needs_reauth" : "ok",
                         reauth, gw_log_instance(), nopen);
    for (size_t i = 0; i != nopen && i != READYZ_CIRCUITS; ++i)
        len += (size_t)snprintf(body + len, cap - len,
                                "%s{\"provider\":\"%s\",\"account\":\"%s\",\"state\":\"%s\",\"retry_in_ms\":%lld}",
                                i != 0 ? "," : "", open[i].provider, open[i].account, open[i].state,
                                (long long)(open[i].retry_in_ms > 0 ? open[i].retry_in_ms : 0));
    len += (size_t)snprintf(body + len, cap - len, "]}");
    gw_reply_json(req, pg ? 200 : 503, body, len);
    return 0;
}

/* ---- the shared gauges ---- */

/* One statement, through the partial indexes of the rows still to do and of the dead ones: done and ignored rows
 * (nearly all of the table) are never read. */
static const char sql_gauges[] =
    "SELECT provider, status, count(*), coalesce(extract(epoch FROM now() - min(received_at))::bigint, 0)"
    "  FROM inbox_events WHERE status IN ('pending', 'failed', 'processing') GROUP BY provider, status"
    " UNION ALL SELECT provider, 'dead', count(*), 0 FROM inbox_events WHERE status = 'dead' GROUP BY provider"
    " UNION ALL SELECT '', 'xero_reauth', count(*), 0 FROM xero_tokens WHERE status = 'needs_reauth'";

static struct {
    pthread_mutex_t lock; /* one reader at a time; held across the query */
    gw_dbs_t *db;         /* the reader's session, opened on first use */
    uint64_t read_at_ms;  /* monotonic time of the last attempt; 0: never */
} gauges = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool gauges_stale(void)
{
    pthread_mutex_lock(&gauges.lock);
    bool stale = gauges.read_at_ms == 0 || mono_ms() - gauges.read_at_ms >= GW_OPS_GAUGES_TTL_MS;
    pthread_mutex_unlock(&gauges.lock);
    return stale;
}

/* Reads the gauges if nobody did within the TTL (blocking: an offload thread). A failed read keeps the last values
 * (their age metric says how old they are) and is retried after the TTL, so an unreachable database costs one
 * connection attempt per TTL, not one per scrape. */
static void refresh_gauges(const gw_config_t *cfg)
{
    pthread_mutex_lock(&gauges.lock);
    if (gauges.read_at_ms != 0 && mono_ms() - gauges.read_at_ms < GW_OPS_GAUGES_TTL_MS) {
        pthread_mutex_unlock(&gauges.lock);
        return;
    }
    gauges.read_at_ms = mono_ms();
    char err[512];
    if (gauges.db == NULL && (gauges.db = gw_dbs_connect(cfg->database_url, err, sizeof(err))) == NULL) {
        gw_log(GW_LOG_WARN, "metrics: the shared gauges were not read: %s", err);
        pthread_mutex_unlock(&gauges.lock);
        return;
    }
    gw_dbs_result_t *r = gw_dbs_query(gauges.db, sql_gauges, 0, NULL);
    if (r == NULL) {
        gw_log(GW_LOG_WARN, "metrics: the shared gauges were not read: %s", gw_dbs_error(gauges.db));
        pthread_mutex_unlock(&gauges.lock);
        return;
    }
    size_t n = gw_dbs_nrows(r), k = 0;
    gw_metrics_queue_row_t *rows = gw_xcalloc(n + 1, sizeof(*rows));
    int64_t reauth = 0;
    for (size_t i = 0; i != n; ++i) {
        if (strcmp(gw_dbs_value(r, i, 1), "xero_reauth") == 0) {
            reauth = strtoll(gw_dbs_value(r, i, 2), NULL, 10);
            continue;
        }
        rows[k++] = (gw_metrics_queue_row_t){gw_dbs_value(r, i, 0), gw_dbs_value(r, i, 1),
                                             strtoll(gw_dbs_value(r, i, 2), NULL, 10),
                                             strtoll(gw_dbs_value(r, i, 3), NULL, 10)};
    }
    gw_metrics_shared_set(rows, k, reauth, (int64_t)time(NULL));
    free(rows);
    gw_dbs_result_free(r);
    pthread_mutex_unlock(&gauges.lock);
}

void gw_ops_gauges_shutdown(void)
{
    pthread_mutex_lock(&gauges.lock);
    gw_dbs_close(gauges.db);
    gauges.db = NULL;
    pthread_mutex_unlock(&gauges.lock);
}

static void reply_metrics(h2o_req_t *req)
{
    size_t len;
    char *text = gw_metrics_render(&len);
    char *copy = h2o_mem_alloc_pool(&req->pool, len);
    memcpy(copy, text, len);
    free(text);
    gw_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", copy, len);
}

/* A scrape waiting for the gauges: malloc'd (the offload call owns it until done or release); link, in the request's
 * pool, lets the request's end detach the call. */
typedef struct st_scrape_t {
    h2o_req_t *req;
    const gw_config_t *cfg;
    gw_offload_call_t *call;
    struct st_scrape_t **link;
} scrape_t;

static void on_scrape_work(void *arg)
{
    scrape_t *s = arg;
    refresh_gauges(s->cfg);
}

static void on_scrape_done(void *arg)
{
    scrape_t *s = arg;
    *s->link = NULL;
    reply_metrics(s->req);
    free(s);
}

static void on_scrape_release(void *arg)
{
    free(arg);
}

static void on_scrape_dispose(void *p)
{
    scrape_t *s = *(scrape_t **)p;
    if (s != NULL) {
        s->req = NULL;
        gw_offload_detach(s->call); /* release frees s */
    }
}

int gw_ops_metrics(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    if (loop->offload == NULL || loop->cfg->database_url == NULL || !gauges_stale()) {
        reply_metrics(req);
        return 0;
    }
    scrape_t *s = gw_xcalloc(1, sizeof(*s));
    s->req = req;
    s->cfg = loop->cfg;
    s->link = h2o_mem_alloc_shared(&req->pool, sizeof(*s->link), on_scrape_dispose);
    *s->link = NULL;
    gw_err_t err = GW_ERR_INIT;
    if ((s->call = gw_offload_run(loop->offload, on_scrape_work, on_scrape_done, on_scrape_release, s, &err)) == NULL) {
        free(s);
        reply_metrics(req); /* the offload queue is full: the cached values will do */
        return 0;
    }
    *s->link = s;
    return 0;
}
