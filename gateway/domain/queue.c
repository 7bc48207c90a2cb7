/* SPDX-License-Identifier: MIT */
/*
 * queue.c: claim, lease, finish, fail with backoff, reschedule, cover, park and the gauges of the work queue, as
 * SQL on the inbox table (inbox_events; operators read it through the view webhook_events). Every statement that
 * finishes rows is fenced by the lease owner and the 'processing' status, so a worker that lost its lease (it was too
 * slow, and another took the rows) changes nothing.
 */
#include "queue.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "mem.h"
#include "metrics.h"

/* $1 providers and $2 their claim delays (ms, parallel arrays), $3 limit, $4 lease owner, $5 lease ms. The due
 * index (provider, next_attempt_at) serves each lane; the events of providers no lane names are never walked. */
static const char sql_claim[] =
    "WITH lane AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS l(provider, delay_ms)),"
    " due AS ("
    " SELECT e.id FROM inbox_events e JOIN lane ON e.provider = lane.provider"
    "  WHERE e.status IN ('pending', 'failed', 'processing') AND e.next_attempt_at <= now()"
    "    AND e.stored_at <= now() - lane.delay_ms * interval '1 millisecond'"
    "  ORDER BY e.next_attempt_at LIMIT $3 FOR UPDATE OF e SKIP LOCKED)"
    " UPDATE inbox_events e SET status = 'processing', attempts = e.attempts + 1, lease_owner = $4,"
    "        next_attempt_at = now() + $5::bigint * interval '1 millisecond'"
    "   FROM due WHERE e.id = due.id"
    " RETURNING e.id, e.organisation_id, e.provider, e.account, e.event_type, e.resource_id, e.attempts,"
    "           e.correlation_id, now()";

static const char sql_finish[] =
    "UPDATE inbox_events SET status = $3, processed_at = now(), lease_owner = NULL, last_error = NULL"
    " WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND status = 'processing'"
    " RETURNING extract(epoch FROM now() - stored_at)::float8";

static const char sql_cover[] =
    "UPDATE inbox_events SET status = 'done', processed_at = now(), lease_owner = NULL, last_error = NULL"
    " WHERE id IN (SELECT id FROM inbox_events"
    "  WHERE status IN ('pending', 'failed') AND provider = $6 AND organisation_id = $1 AND account = $2"
    "    AND split_part(event_type, '.', 1) = $3 AND resource_id = ANY($4::text[])"
    "    AND stored_at <= $5::timestamptz FOR UPDATE SKIP LOCKED)"
    " RETURNING extract(epoch FROM now() - stored_at)::float8";

static const char sql_fail[] =
    "UPDATE inbox_events SET status = CASE WHEN attempts >= $3 THEN 'dead' ELSE 'failed' END,"
    "       next_attempt_at = now() + least($5::float8, $4::float8 * power(2, least(attempts - 1, 40))"
    "                                                 * (1 + random() * 0.5)) * interval '1 millisecond',"
    "       last_error = $2, lease_owner = NULL"
    " WHERE id = ANY($1::bigint[]) AND lease_owner = $6 AND status = 'processing'"
    " RETURNING status";

static const char sql_reschedule[] =
    "UPDATE inbox_events SET status = 'pending', attempts = greatest(attempts - 1, 0),"
    "       next_attempt_at = now() + $2::bigint * interval '1 millisecond', last_error = $3, lease_owner = NULL"
    " WHERE id = ANY($1::bigint[]) AND lease_owner = $4 AND status = 'processing'";

static const char sql_park_lost[] =
    "UPDATE inbox_events SET status = 'dead', lease_owner = NULL,"
    "       last_error = 'the worker processing it stopped before finishing, ' || attempts || ' times'"
    " WHERE provider = ANY($2::text[]) AND status = 'processing' AND next_attempt_at <= now() AND attempts >= $1";

/* Counted through the partial indexes only (the due index, led by provider, and the dead index): the events of
 * providers that are not processed wait as 'pending' in unbounded numbers and must not be scanned every few
 * seconds. */
static const char sql_depth[] = "SELECT status, count(*) FROM inbox_events"
                                " WHERE provider = ANY($1::text[]) AND status IN ('pending', 'failed', 'processing')"
                                " GROUP BY status"
                                " UNION ALL SELECT 'dead', count(*) FROM inbox_events WHERE status = 'dead'";

/* The writes that finish rows fail together while the database is down: one warning, then a summary a minute. */
static gw_log_limit_t write_failed = GW_LOG_LIMIT_INIT(GW_LOG_WARN, 60000);

/* A debug line about n rows (the first's correlation id) that a worker decided something about. */
static void log_decision(const gw_queue_t *q, const char *msg, gw_queue_row_t *const *rows, size_t n, const char *key,
                         const char *value)
{
    gw_logline_t line;
    gw_log_begin(&line, GW_LOG_DEBUG, msg);
    gw_log_int(&line, "worker", q->index);
    if (n != 0) {
        gw_log_str(&line, "provider", rows[0]->provider, strlen(rows[0]->provider));
        gw_log_str(&line, "event", rows[0]->id, strlen(rows[0]->id));
        gw_log_str(&line, "correlation_id", rows[0]->correlation, strlen(rows[0]->correlation));
    }
    gw_log_int(&line, "events", (long long)n);
    if (value != NULL)
        gw_log_str(&line, key, value, strlen(value));
    gw_log_end(&line);
}

/* A PostgreSQL array literal of n strings: each element double-quoted, with '"' and '\' escaped. */
static char *array_literal(const char *const *items, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i != n; ++i)
        cap += 2 * strlen(items[i]) + 3;
    char *s = gw_xmalloc(cap), *p = s;
    *p++ = '{';
    for (size_t i = 0; i != n; ++i) {
        if (i != 0)
            *p++ = ',';
        *p++ = '"';
        for (const char *c = items[i]; *c != '\0'; ++c) {
            if (*c == '"' || *c == '\\')
                *p++ = '\\';
            *p++ = *c;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return s;
}

/* "{1,2,3}" for the ids of rows. */
static char *id_array(gw_queue_row_t *const *rows, size_t n)
{
    size_t cap = 3 + n * 24, len = 1;
    char *s = gw_xmalloc(cap);
    s[0] = '{';
    for (size_t i = 0; i != n; ++i)
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i != 0 ? "," : "", rows[i]->id);
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

int gw_queue_claim(gw_queue_t *q, const gw_queue_lane_t *lanes, size_t nlanes, gw_queue_batch_t *out, gw_err_t *err)
{
    memset(out, 0, sizeof(*out));
    const char **names = gw_xcalloc(nlanes, sizeof(*names));
    char **delays = gw_xcalloc(nlanes, sizeof(*delays));
    for (size_t i = 0; i != nlanes; ++i) {
        names[i] = lanes[i].provider;
        delays[i] = gw_xmalloc(16);
        snprintf(delays[i], 16, "%d", lanes[i].delay_ms > 0 ? lanes[i].delay_ms : 0);
    }
    char *providers = array_literal(names, nlanes), *delay = array_literal((const char *const *)delays, nlanes);
    char batch[16], lease[16];
    snprintf(batch, sizeof(batch), "%d", q->cfg->worker_batch);
    snprintf(lease, sizeof(lease), "%d", q->cfg->worker_lease_ms);
    const char *params[] = {providers, delay, batch, q->owner, lease};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_claim, 5, params);
    for (size_t i = 0; i != nlanes; ++i)
        free(delays[i]);
    free(delays);
    free(names);
    free(providers);
    free(delay);
    if (r == NULL)
        return gw_err_set(err, gw_err_store_unavailable, 503, "claiming failed: %s", gw_dbs_error(q->db));

    out->n = gw_dbs_nrows(r);
    if (out->n != 0) {
        out->rows = gw_xcalloc(out->n, sizeof(*out->rows));
        snprintf(out->claimed_at, sizeof(out->claimed_at), "%s", gw_dbs_value(r, 0, 8));
    }
    for (size_t i = 0; i != out->n; ++i) {
        gw_queue_row_t *row = &out->rows[i];
        snprintf(row->id, sizeof(row->id), "%s", gw_dbs_value(r, i, 0));
        row->organisation_id = strtoll(gw_dbs_value(r, i, 1), NULL, 10);
        row->provider = gw_xstrdup(gw_dbs_value(r, i, 2));
        row->account = gw_xstrdup(gw_dbs_value(r, i, 3));
        row->event_type = gw_xstrdup(gw_dbs_value(r, i, 4));
        row->resource_id = gw_xstrdup(gw_dbs_value(r, i, 5));
        row->attempts = atoi(gw_dbs_value(r, i, 6));
        row->correlation = gw_xstrdup(gw_dbs_value(r, i, 7));
        if (gw_log_enabled(GW_LOG_DEBUG)) {
            gw_logline_t line;
            gw_log_begin(&line, GW_LOG_DEBUG, "claimed");
            gw_log_int(&line, "worker", q->index);
            gw_log_str(&line, "event", row->id, strlen(row->id));
            gw_log_str(&line, "provider", row->provider, strlen(row->provider));
            gw_log_str(&line, "type", row->event_type, strlen(row->event_type));
            gw_log_str(&line, "resource", row->resource_id, row->resource_id != NULL ? strlen(row->resource_id) : 0);
            gw_log_int(&line, "attempt", row->attempts);
            gw_log_str(&line, "correlation_id", row->correlation, strlen(row->correlation));
            gw_log_end(&line);
        }
    }
    gw_dbs_result_free(r);
    return 0;
}

void gw_queue_batch_free(gw_queue_batch_t *b)
{
    for (size_t i = 0; i != b->n; ++i) {
        free(b->rows[i].provider);
        free(b->rows[i].account);
        free(b->rows[i].event_type);
        free(b->rows[i].resource_id);
        free(b->rows[i].correlation);
    }
    free(b->rows);
    memset(b, 0, sizeof(*b));
}

void gw_queue_finish(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, enum gw_queue_end end)
{
    char *ids = id_array(rows, n);
    const char *params[] = {ids, q->owner, end == GW_QUEUE_DONE ? "done" : "ignored"};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_finish, 3, params);
    if (gw_log_enabled(GW_LOG_DEBUG))
        log_decision(q, end == GW_QUEUE_DONE ? "finished as done" : "finished as ignored", rows, n, NULL, NULL);
    if (r == NULL)
        gw_log_limited(&write_failed, "worker %d: cannot finish events: %s", q->index, gw_dbs_error(q->db));
    else
        gw_metrics_worker_outcome(end == GW_QUEUE_DONE ? GW_OUTCOME_DONE : GW_OUTCOME_IGNORED, gw_dbs_nrows(r));
    record_lags(r);
    gw_dbs_result_free(r);
    free(ids);
}

void gw_queue_fail(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, const char *error)
{
    const gw_config_t *cfg = q->cfg;
    char *ids = id_array(rows, n), max[16], base[24], cap[24];
    snprintf(max, sizeof(max), "%d", cfg->worker_max_attempts);
    snprintf(base, sizeof(base), "%d", cfg->worker_backoff_ms);
    snprintf(cap, sizeof(cap), "%d", cfg->worker_backoff_max_ms);
    const char *params[] = {ids, error, max, base, cap, q->owner};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_fail, 6, params);
    if (r == NULL) {
        gw_log_limited(&write_failed, "worker %d: cannot record a failure: %s", q->index, gw_dbs_error(q->db));
    } else if (gw_dbs_nrows(r) != 0) { /* none: the lease was lost, and the rows are another worker's now */
        for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
            bool dead = strcmp(gw_dbs_value(r, i, 0), "dead") == 0;
            gw_metrics_worker_outcome(dead ? GW_OUTCOME_DEAD : GW_OUTCOME_FAILED, 1);
        }
        gw_logline_t line;
        gw_log_begin(&line, GW_LOG_WARN, "events failed");
        gw_log_int(&line, "worker", q->index);
        gw_log_str(&line, "provider", rows[0]->provider, strlen(rows[0]->provider));
        gw_log_int(&line, "events", (long long)gw_dbs_nrows(r));
        gw_log_str(&line, "error", error, strlen(error));
        gw_log_str(&line, "correlation_id", rows[0]->correlation, strlen(rows[0]->correlation));
        gw_log_end(&line);
    }
    gw_dbs_result_free(r);
    free(ids);
}

void gw_queue_reschedule(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, uint64_t wait_ms, const char *why)
{
    char *ids = id_array(rows, n), wait[24];
    snprintf(wait, sizeof(wait), "%llu", (unsigned long long)wait_ms);
    const char *params[] = {ids, wait, why, q->owner};
    long long done = gw_dbs_exec(q->db, sql_reschedule, 4, params);
    if (gw_log_enabled(GW_LOG_DEBUG)) {
        char detail[600];
        snprintf(detail, sizeof(detail), "due again in %s ms: %s", wait, why != NULL ? why : "");
        log_decision(q, "rescheduled without counting the attempt", rows, n, "why", detail);
    }
    if (done < 0)
        gw_log_limited(&write_failed, "worker %d: cannot reschedule events: %s", q->index, gw_dbs_error(q->db));
    else
        gw_metrics_worker_outcome(GW_OUTCOME_RESCHEDULED, (uint64_t)done);
    free(ids);
}

size_t gw_queue_cover(gw_queue_t *q, const gw_queue_row_t *like, const char *category, const char *const *resource_ids,
                      size_t nids, const char *before)
{
    if (nids == 0 || like->account == NULL)
        return 0;
    char org[24], *resources = array_literal(resource_ids, nids);
    snprintf(org, sizeof(org), "%lld", (long long)like->organisation_id);
    const char *params[] = {org, like->account, category, resources, before, like->provider};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_cover, 6, params);
    size_t covered = r != NULL ? gw_dbs_nrows(r) : 0;
    if (covered != 0 && gw_log_enabled(GW_LOG_DEBUG)) {
        gw_logline_t line;
        gw_log_begin(&line, GW_LOG_DEBUG, "coalesced: waiting events covered by the fetch just made");
        gw_log_int(&line, "worker", q->index);
        gw_log_str(&line, "provider", like->provider, strlen(like->provider));
        gw_log_str(&line, "category", category, strlen(category));
        gw_log_int(&line, "resources", (long long)nids);
        gw_log_int(&line, "covered", (long long)covered);
        gw_log_str(&line, "correlation_id", like->correlation, strlen(like->correlation));
        gw_log_end(&line);
    }
    if (r != NULL)
        gw_metrics_worker_outcome(GW_OUTCOME_COALESCED, covered);
    record_lags(r);
    gw_dbs_result_free(r);
    free(resources);
    return covered;
}

size_t gw_queue_park_lost(gw_queue_t *q, const char *const *providers, size_t nproviders)
{
    char max[16], *list = array_literal(providers, nproviders);
    snprintf(max, sizeof(max), "%d", q->cfg->worker_max_attempts);
    const char *params[] = {max, list};
    long long parked = gw_dbs_exec(q->db, sql_park_lost, 2, params);
    free(list);
    if (parked <= 0)
        return 0;
    gw_metrics_worker_outcome(GW_OUTCOME_DEAD, (uint64_t)parked);
    gw_log(GW_LOG_WARN, "worker %d: parked %lld events as dead: their workers stopped before finishing them %s times",
           q->index, parked, max);
    return (size_t)parked;
}

void gw_queue_gauges(gw_queue_t *q, const char *const *providers, size_t nproviders)
{
    static const char *const statuses[] = {"pending", "failed", "processing", "dead"};
    char *list = array_literal(providers, nproviders);
    const char *params[] = {list};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_depth, 1, params);
    free(list);
    if (r == NULL)
        return;
    for (size_t s = 0; s != sizeof(statuses) / sizeof(statuses[0]); ++s) {
        int64_t v = 0;
        for (size_t i = 0; i != gw_dbs_nrows(r); ++i)
            if (strcmp(gw_dbs_value(r, i, 0), statuses[s]) == 0)
                v = strtoll(gw_dbs_value(r, i, 1), NULL, 10);
        gw_metrics_queue_depth(statuses[s], v);
    }
    gw_dbs_result_free(r);
}
