/* SPDX-License-Identifier: MIT */
/*
 * queue.c: claim, lease, finish, fail on the retry schedule, reschedule, cover, park and the gauges of the work queue,
 * as SQL on the inbox table (inbox_events; operators read it through the view webhook_events). Every statement that
 * finishes rows is fenced by the lease owner and the 'processing' status, so a worker that lost its lease (it was too
 * slow, and another took the rows) changes nothing.
 */
#include "queue.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "alert.h"
#include "circuit.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"

/* $1 providers and $2 their claim delays (ms, parallel arrays), $3 limit, $4 lease owner, $5 lease ms, $6 the account
 * of a probe (NULL: an ordinary claim). The due index (provider, next_attempt_at) serves each lane; the events of
 * providers no lane names are never walked. An ordinary claim skips the events of accounts whose circuit is not
 * closed (provider_circuits, circuit.c: the provider is down for them, and their attempts are not burned); a probe
 * claims only events of its account, whose circuit it holds half-open. */
static const char sql_claim[] =
    "WITH lane AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS l(provider, delay_ms)),"
    " due AS ("
    " SELECT e.id FROM inbox_events e JOIN lane ON e.provider = lane.provider"
    "  WHERE e.status IN ('pending', 'failed', 'processing') AND e.next_attempt_at <= now()"
    "    AND e.stored_at <= now() - lane.delay_ms * interval '1 millisecond'"
    "    AND CASE WHEN $6::text IS NULL THEN NOT EXISTS (SELECT 1 FROM provider_circuits c"
    "              WHERE c.provider = e.provider AND c.account = coalesce(e.account, '') AND c.state <> 'closed')"
    "        ELSE coalesce(e.account, '') = $6 END"
    "  ORDER BY e.next_attempt_at LIMIT $3 FOR UPDATE OF e SKIP LOCKED)"
    " UPDATE inbox_events e SET status = 'processing', attempts = e.attempts + 1, lease_owner = $4,"
    "        next_attempt_at = now() + $5::bigint * interval '1 millisecond'"
    "   FROM due WHERE e.id = due.id"
    " RETURNING e.id, e.organisation_id, e.provider, e.account, e.event_type, e.resource_id, e.attempts,"
    "           e.correlation_id, now(), e.source";

static const char sql_finish[] =
    "UPDATE inbox_events SET status = $3, processed_at = now(), lease_owner = NULL, last_error = $4"
    " WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND status = 'processing'"
    " RETURNING extract(epoch FROM now() - stored_at)::float8";

static const char sql_cover[] =
    "UPDATE inbox_events SET status = 'done', processed_at = now(), lease_owner = NULL, last_error = NULL"
    " WHERE id IN (SELECT id FROM inbox_events"
    "  WHERE status IN ('pending', 'failed') AND provider = $6 AND organisation_id = $1 AND account = $2"
    "    AND split_part(event_type, '.', 1) = $3 AND resource_id = ANY($4::text[])"
    "    AND stored_at <= $5::timestamptz FOR UPDATE SKIP LOCKED)"
    " RETURNING extract(epoch FROM now() - stored_at)::float8";

/* $2 the error, $3 the schedule's waits (ms; wait k follows the failure of attempt k), $5 true for a permanent
 * failure (dead at once). A row whose attempts are past the schedule is dead. The wait is lengthened by up to a
 * fifth at random, so that events that failed together do not come back together. */
static const char sql_fail[] =
    "UPDATE inbox_events SET status = CASE WHEN $5::boolean OR attempts > cardinality($3::bigint[]) THEN 'dead'"
    "                                      ELSE 'failed' END,"
    "       next_attempt_at = now() + coalesce(($3::bigint[])[attempts], 0) * (1 + random() * 0.2)"
    "                                * interval '1 millisecond',"
    "       last_error = $2, lease_owner = NULL"
    " WHERE id = ANY($1::bigint[]) AND lease_owner = $4 AND status = 'processing'"
    " RETURNING id, status, event_id, attempts";

static const char sql_reschedule[] =
    "UPDATE inbox_events SET status = 'pending', attempts = greatest(attempts - 1, 0),"
    "       next_attempt_at = now() + $2::bigint * interval '1 millisecond', last_error = $3, lease_owner = NULL"
    " WHERE id = ANY($1::bigint[]) AND lease_owner = $4 AND status = 'processing'";

static const char sql_park_lost[] =
    "UPDATE inbox_events SET status = 'dead', lease_owner = NULL,"
    "       last_error = 'the worker processing it stopped before finishing, ' || attempts || ' times'"
    " WHERE provider = ANY($2::text[]) AND status = 'processing' AND next_attempt_at <= now() AND attempts >= $1"
    " RETURNING id, provider, event_id, event_type, attempts, last_error, correlation_id";

static const char sql_release_leases[] =
    "UPDATE inbox_events SET next_attempt_at = now() WHERE lease_owner = $1 AND status = 'processing'";

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

static int claim(gw_queue_t *q, const gw_queue_lane_t *lanes, size_t nlanes, const char *account, int limit,
                 gw_queue_batch_t *out, gw_err_t *err)
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
    snprintf(batch, sizeof(batch), "%d", limit);
    snprintf(lease, sizeof(lease), "%d", q->cfg->worker_lease_ms);
    const char *params[] = {providers, delay, batch, q->owner, lease, account};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_claim, 6, params);
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
        row->source = gw_xstrdup(gw_dbs_value(r, i, 9));
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

int gw_queue_claim(gw_queue_t *q, const gw_queue_lane_t *lanes, size_t nlanes, gw_queue_batch_t *out, gw_err_t *err)
{
    return claim(q, lanes, nlanes, NULL, q->cfg->worker_batch, out, err);
}

int gw_queue_claim_probe(gw_queue_t *q, const gw_queue_lane_t *lane, const char *account, gw_queue_batch_t *out,
                         gw_err_t *err)
{
    return claim(q, lane, 1, account, 1, out, err);
}

void gw_queue_batch_free(gw_queue_batch_t *b)
{
    for (size_t i = 0; i != b->n; ++i) {
        free(b->rows[i].provider);
        free(b->rows[i].account);
        free(b->rows[i].event_type);
        free(b->rows[i].resource_id);
        free(b->rows[i].correlation);
        free(b->rows[i].source);
    }
    free(b->rows);
    memset(b, 0, sizeof(*b));
}

static void finish(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, enum gw_queue_end end, const char *reason)
{
    char *ids = id_array(rows, n);
    const char *params[] = {ids, q->owner, end == GW_QUEUE_DONE ? "done" : "ignored", reason};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_finish, 4, params);
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

void gw_queue_finish(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, enum gw_queue_end end)
{
    finish(q, rows, n, end, NULL);
}

void gw_queue_ignore(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, const char *reason)
{
    finish(q, rows, n, GW_QUEUE_IGNORED, reason);
}

/* "{0,10000,...}": the waits of the schedule. */
static char *schedule_array(const gw_retry_schedule_t *rs)
{
    size_t cap = 3 + rs->n * 22, len = 1;
    char *s = gw_xmalloc(cap);
    s[0] = '{';
    for (size_t i = 0; i != rs->n; ++i)
        len += (size_t)snprintf(s + len, cap - len, "%s%lld", i != 0 ? "," : "", (long long)rs->ms[i]);
    snprintf(s + len, cap - len, "}");
    return s;
}

void gw_queue_dead_letter(const gw_queue_dead_t *d)
{
    gw_metrics_dead_letter(d->provider);
    gw_alert_dead(d);
    if (!gw_log_enabled(GW_LOG_WARN))
        return;
    gw_logline_t line;
    gw_log_begin(&line, GW_LOG_WARN, "event dead");
    gw_log_str(&line, "id", d->id, strlen(d->id));
    gw_log_str(&line, "provider", d->provider, strlen(d->provider));
    gw_log_str(&line, "event_id", d->event_id, d->event_id != NULL ? strlen(d->event_id) : 0);
    gw_log_str(&line, "type", d->event_type, d->event_type != NULL ? strlen(d->event_type) : 0);
    gw_log_int(&line, "attempts", d->attempts);
    gw_log_str(&line, "error", d->error, d->error != NULL ? strlen(d->error) : 0);
    gw_log_str(&line, "correlation_id", d->correlation, d->correlation != NULL ? strlen(d->correlation) : 0);
    gw_log_end(&line);
}

/* Records a failure that counts an attempt: the next wait of the schedule, or dead (at once when permanent). */
static void record_failure(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, bool permanent, const char *error)
{
    char *ids = id_array(rows, n), *waits = schedule_array(&q->cfg->retry_schedule);
    const char *params[] = {ids, error, waits, q->owner, permanent ? "true" : "false"};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_fail, 5, params);
    free(waits);
    free(ids);
    if (r == NULL) {
        gw_log_limited(&write_failed, "worker %d: cannot record a failure: %s", q->index, gw_dbs_error(q->db));
        return;
    }
    size_t failed = 0;
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) { /* none: the lease was lost, and the rows are another worker's */
        if (strcmp(gw_dbs_value(r, i, 1), "dead") != 0) {
            ++failed;
            continue;
        }
        const gw_queue_row_t *row = NULL;
        for (size_t k = 0; k != n && row == NULL; ++k)
            if (strcmp(rows[k]->id, gw_dbs_value(r, i, 0)) == 0)
                row = rows[k];
        gw_queue_dead_t d = {.id = gw_dbs_value(r, i, 0),
                             .provider = row != NULL ? row->provider : rows[0]->provider,
                             .event_id = gw_dbs_value(r, i, 2),
                             .event_type = row != NULL ? row->event_type : NULL,
                             .attempts = atoi(gw_dbs_value(r, i, 3)),
                             .error = error,
                             .correlation = row != NULL ? row->correlation : NULL};
        gw_metrics_worker_outcome(GW_OUTCOME_DEAD, 1);
        gw_queue_dead_letter(&d);
    }
    if (failed != 0) {
        gw_metrics_worker_outcome(GW_OUTCOME_FAILED, failed);
        gw_logline_t line;
        gw_log_begin(&line, GW_LOG_WARN, "events failed");
        gw_log_int(&line, "worker", q->index);
        gw_log_str(&line, "provider", rows[0]->provider, strlen(rows[0]->provider));
        gw_log_int(&line, "events", (long long)failed);
        gw_log_str(&line, "error", error, strlen(error));
        gw_log_str(&line, "correlation_id", rows[0]->correlation, strlen(rows[0]->correlation));
        gw_log_end(&line);
    }
    gw_dbs_result_free(r);
}

void gw_queue_fail(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, enum gw_queue_failure kind, const char *error)
{
    if (n == 0)
        return;
    if (kind == GW_QUEUE_PERMANENT) {
        char why[400];
        snprintf(why, sizeof(why), "permanent failure, not retried: %.360s", error);
        record_failure(q, rows, n, true, why);
        return;
    }
    if (kind == GW_QUEUE_OUTAGE) {
        /* the provider's failure, counted by its circuit; once that is open, the events wait for it to close
         * without spending an attempt (they are rows of one account: a processor fails a group at a time) */
        gw_circuit_result_t c;
        if (gw_circuit_failure(q, rows[0]->provider, rows[0]->account, error, &c) == 0 &&
            c.state != GW_CIRCUIT_CLOSED) {
            char why[400];
            snprintf(why, sizeof(why), "circuit open: %.370s", error);
            gw_queue_reschedule(q, rows, n, c.wait_ms, why);
            return;
        }
    }
    record_failure(q, rows, n, false, error);
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
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_park_lost, 2, params);
    free(list);
    size_t parked = r != NULL ? gw_dbs_nrows(r) : 0;
    if (parked != 0) {
        gw_metrics_worker_outcome(GW_OUTCOME_DEAD, (uint64_t)parked);
        gw_log(GW_LOG_WARN,
               "worker %d: parked %zu events as dead: their workers stopped before finishing them %s times", q->index,
               parked, max);
    }
    for (size_t i = 0; i != parked; ++i) {
        gw_queue_dead_t d = {.id = gw_dbs_value(r, i, 0),
                             .provider = gw_dbs_value(r, i, 1),
                             .event_id = gw_dbs_value(r, i, 2),
                             .event_type = gw_dbs_value(r, i, 3),
                             .attempts = atoi(gw_dbs_value(r, i, 4)),
                             .error = gw_dbs_value(r, i, 5),
                             .correlation = gw_dbs_value(r, i, 6)};
        gw_queue_dead_letter(&d);
    }
    gw_dbs_result_free(r);
    return parked;
}

size_t gw_queue_release_leases(gw_queue_t *q)
{
    const char *params[] = {q->owner};
    long long n = gw_dbs_exec(q->db, sql_release_leases, 1, params);
    if (n > 0)
        gw_log(GW_LOG_INFO, "worker %d: the database is back: %lld events it held are due again now", q->index, n);
    return n > 0 ? (size_t)n : 0;
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
