/* SPDX-License-Identifier: MIT */
/* replay.c: the event log (filters, one event with its raw delivery), the audited reset of events for
 * reprocessing, the rolled-back dry run that says what a replay would change, and re-signing a delivery. */
#include "replay.h"
#include <ctype.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "audit.h"
#include "crypto.h"
#include "mem.h"
#include "processor.h"
#include "worker.h"

/* The err code with which a dry run's body ends its transaction: the rollback it asks for, never an error. */
static const char rolled_back[] = "dry_run_rolled_back";

#define UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* The columns of gw_event_t, in its order (columns 0 to 17). */
#define EVENT_COLUMNS                                                                                                  \
    "id, organisation_id, provider, source, account, event_id, event_type, resource_id, status, last_error,"           \
    " correlation_id, lease_owner, attempts, " UTC("received_at") ", " UTC("verified_at") ", " UTC(                    \
        "stored_at") ", " UTC("next_attempt_at") ", " UTC("processed_at")

/* $1 organisation (0: any), $2 provider, $3 statuses (text[]), $4 type or category, $5 since, $7 until, $8 the
 * keyset (ids below it): each NULL for any. ($6 is the limit.) */
#define FILTER                                                                                                         \
    " WHERE ($1::bigint = 0 OR organisation_id = $1::bigint) AND ($2::text IS NULL OR provider = $2::text)"            \
    "   AND ($3::text[] IS NULL OR status = ANY($3::text[]))"                                                          \
    "   AND ($4::text IS NULL OR event_type = $4::text OR starts_with(event_type, $4::text || '.'))"                   \
    "   AND ($5::timestamptz IS NULL OR received_at >= $5::timestamptz)"                                               \
    "   AND ($7::timestamptz IS NULL OR received_at < $7::timestamptz) AND ($8::bigint IS NULL OR id < $8::bigint)"

static const char sql_list[] = "SELECT " EVENT_COLUMNS " FROM inbox_events" FILTER " ORDER BY id DESC LIMIT $6";
static const char sql_select[] = "SELECT id FROM inbox_events" FILTER " ORDER BY id LIMIT $6";
static const char sql_get[] = "SELECT " EVENT_COLUMNS ", headers::text, encode(body, 'hex') FROM webhook_events"
                              " WHERE id = $2::bigint AND ($1::bigint = 0 OR organisation_id = $1::bigint)";
static const char sql_history[] = "SELECT " UTC(
    "a.at") ", a.actor, a.before ->> 'status', a.after ->> 'status' FROM inbox_events e"
            " JOIN audit_log a ON a.organisation_id = e.organisation_id AND a.entity_type = 'webhook_event'"
            "  AND a.entity_id = e.id::text"
            " WHERE e.id = $2::bigint AND ($1::bigint = 0 OR e.organisation_id = $1::bigint) ORDER BY a.id";
static const char sql_since_ts[] = "SELECT $1::timestamptz::text";
static const char sql_since_age[] = "SELECT (now() - $1::bigint * interval '1 second')::text";

/* Organisations first, then rows (the audit lock order, audit.sql's audit_lock). */
static const char sql_reset_lock_orgs[] =
    "SELECT audit_lock(o) FROM (SELECT DISTINCT organisation_id AS o FROM inbox_events"
    " WHERE id = ANY($1::bigint[]) AND ($2::bigint = 0 OR organisation_id = $2::bigint) ORDER BY 1) x";
static const char sql_reset_rows[] =
    "SELECT id, organisation_id, status, correlation_id,"
    "       jsonb_build_object('status', status, 'attempts', attempts, 'last_error', last_error)::text"
    " FROM inbox_events WHERE id = ANY($1::bigint[]) AND ($2::bigint = 0 OR organisation_id = $2::bigint)"
    " ORDER BY id FOR UPDATE";
static const char sql_reset[] =
    "UPDATE inbox_events SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL,"
    "       lease_owner = NULL, processed_at = NULL"
    " WHERE id = ANY($1::bigint[]) AND ($2::bigint = 0 OR organisation_id = $2::bigint) AND status <> 'processing'";
static const char sql_notify[] = "SELECT pg_notify('settled_events', '')";
static const char replay_after[] = "{\"status\": \"pending\", \"attempts\": 0, \"last_error\": null}";

static const char sql_audit_high[] = "SELECT coalesce(max(id), 0) FROM audit_log";
static const char sql_dry_before[] =
    "SELECT status, to_jsonb(attempts)::text, coalesce(to_jsonb(last_error), 'null')::text FROM inbox_events"
    " WHERE id = $2::bigint AND ($1::bigint = 0 OR organisation_id = $1::bigint) FOR UPDATE";
/* as a replay leaves it (attempts 0), then claimed as a worker claims it (attempts 1, a lease) */
static const char sql_dry_claim[] =
    "UPDATE inbox_events SET status = 'processing', attempts = 1, lease_owner = $2, last_error = NULL,"
    "       processed_at = NULL, next_attempt_at = now() + interval '10 minutes'"
    " WHERE id = $1::bigint AND status <> 'processing'"
    " RETURNING id, organisation_id, provider, account, event_type, resource_id, attempts, correlation_id, now(),"
    "           source";
static const char sql_dry_after[] = "SELECT status, to_jsonb(attempts)::text, coalesce(to_jsonb(last_error), "
                                    "'null')::text, last_error FROM inbox_events"
                                    " WHERE id = $1::bigint";
/* The audit rows this transaction wrote (ids drawn after $1; xmin ours), folded per entity: the first row's before
 * against the last row's after, one line per field that differs. */
static const char sql_dry_diff[] =
    "WITH mine AS (SELECT id, entity_type, entity_id, before, after FROM audit_log"
    "              WHERE id > $1::bigint AND xmin = pg_current_xact_id()::xid),"
    " ent AS (SELECT entity_type, entity_id, min(id) AS first_id, max(id) AS last_id FROM mine GROUP BY 1, 2)"
    " SELECT e.entity_type, e.entity_id, k.key, (b.before -> k.key)::text, (l.after -> k.key)::text,"
    "        (SELECT count(*) FROM mine)"
    " FROM ent e JOIN mine b ON b.id = e.first_id JOIN mine l ON l.id = e.last_id,"
    "      LATERAL jsonb_object_keys(coalesce(b.before, '{}') || coalesce(l.after, '{}')) AS k(key)"
    " WHERE (b.before -> k.key) IS DISTINCT FROM (l.after -> k.key)"
    " ORDER BY e.first_id, k.key";
static const char sql_dry_audit_count[] =
    "SELECT count(*) FROM audit_log WHERE id > $1::bigint AND xmin = pg_current_xact_id()::xid";

/* The table an audited entity type lives in (the audit rows name entities; the diff names tables). */
static const char *table_of(const char *entity_type)
{
    static const char *const map[][2] = {
        {"xero_invoice", "xero_invoices"},
        {"xero_contact", "xero_contacts"},
        {"xero_credit_note", "xero_credit_notes"},
        {"customer_link", "customer_links"},
        {"customer", "customers"},
        {"matching_queue", "matching_queue"},
        {"webhook_event", "webhook_events"},
        {"invoice_payment_state", "invoice_payment_states"},
    };
    for (size_t i = 0; i != sizeof(map) / sizeof(map[0]); ++i)
        if (strcmp(map[i][0], entity_type) == 0)
            return map[i][1];
    return entity_type;
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? gw_xstrdup(s) : NULL;
}

/* ---- filters ---- */

static const char *const providers[] = {"stripe", "xero", "gocardless"};
static const char *const statuses[] = {"pending", "processing", "done", "ignored", "failed", "dead"};

static bool one_of(const char *v, size_t len, const char *const *set, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        if (strlen(set[i]) == len && strncmp(set[i], v, len) == 0)
            return true;
    return false;
}

int gw_events_filter_check(const gw_events_filter_t *f, gw_err_t *err)
{
    if (f->provider != NULL && !one_of(f->provider, strlen(f->provider), providers, 3))
        return gw_err_set(err, gw_err_invalid_argument, 400,
                          "--provider: unknown provider \"%.40s\" (stripe, xero or gocardless)", f->provider);
    if (f->statuses != NULL) {
        const char *p = f->statuses;
        do {
            size_t len = strcspn(p, ",");
            if (!one_of(p, len, statuses, 6))
                return gw_err_set(err, gw_err_invalid_argument, 400,
                                  "--status: unknown status \"%.*s\" (pending, processing, done, ignored, failed or "
                                  "dead; several separated by commas)",
                                  (int)(len < 40 ? len : 40), p);
            p += len;
        } while (*p++ == ',');
    }
    if (f->type != NULL && (f->type[0] == '\0' || strlen(f->type) > 200))
        return gw_err_set(err, gw_err_invalid_argument, 400, "--type: an event type or category, 1 to 200 characters");
    if (f->limit < 0 || f->limit > GW_EVENTS_LIMIT_MAX)
        return gw_err_set(err, gw_err_invalid_argument, 400, "--limit: from 1 to %d", GW_EVENTS_LIMIT_MAX);
    return 0;
}

/* An age such as 90s, 30m, 2h or 7d, in seconds; -1 if since is not one. */
static long long age_seconds(const char *since)
{
    size_t n = strlen(since), digits = strspn(since, "0123456789");
    if (n < 2 || n > 10 || digits != n - 1)
        return -1;
    long long v = strtoll(since, NULL, 10);
    switch (since[n - 1]) {
    case 's':
        return v;
    case 'm':
        return v * 60;
    case 'h':
        return v * 3600;
    case 'd':
        return v * 86400;
    default:
        return -1;
    }
}

int gw_since_resolve(gw_dbs_t *s, const char *since, char **out, gw_err_t *err)
{
    *out = NULL;
    if (since == NULL)
        return 0;
    long long age = age_seconds(since);
    char secs[24];
    snprintf(secs, sizeof(secs), "%lld", age);
    const char *p[] = {age >= 0 ? secs : since};
    gw_dbs_result_t *r = gw_dbs_query(s, age >= 0 ? sql_since_age : sql_since_ts, 1, p);
    if (r == NULL) {
        const char *state = gw_dbs_sqlstate(s);
        if (strncmp(state, "22", 2) == 0)
            return gw_err_set(err, gw_err_invalid_argument, 400,
                              "--since: not a timestamp (e.g. 2026-01-31T00:00:00Z) or an age (e.g. 90s, 30m, 2h, "
                              "7d)");
        return gw_dbs_err(s, err);
    }
    *out = gw_xstrdup(gw_dbs_value(r, 0, 0));
    gw_dbs_result_free(r);
    return 0;
}

/* Runs a filter statement (sql_list or sql_select) with limit. */
static gw_dbs_result_t *query_filter(gw_dbs_t *s, const char *sql, const gw_events_filter_t *f, long limit,
                                     gw_err_t *err)
{
    if (gw_events_filter_check(f, err) != 0)
        return NULL;
    char *since, *until, org[24], lim[24], before[24], *status_array = NULL;
    if (gw_since_resolve(s, f->since, &since, err) != 0)
        return NULL;
    if (gw_since_resolve(s, f->until, &until, err) != 0) {
        free(since);
        return NULL;
    }
    snprintf(org, sizeof(org), "%" PRId64, f->organisation_id);
    snprintf(before, sizeof(before), "%" PRId64, f->before_id);
    if (limit > 0)
        snprintf(lim, sizeof(lim), "%ld", limit);
    if (f->statuses != NULL) {
        status_array = gw_xmalloc(strlen(f->statuses) + 3);
        sprintf(status_array, "{%s}", f->statuses); /* checked: letters and commas only */
    }
    const char *p[] = {org,          f->provider,
                       status_array, f->type,
                       since,        limit > 0 ? lim : NULL,
                       until,        f->before_id > 0 ? before : NULL};
    gw_dbs_result_t *r = gw_dbs_query(s, sql, 8, p);
    if (r == NULL)
        (void)gw_dbs_err(s, err);
    free(since);
    free(until);
    free(status_array);
    return r;
}

static void fill_event(const gw_dbs_result_t *r, size_t i, gw_event_t *e)
{
    memset(e, 0, sizeof(*e));
    e->id = strtoll(gw_dbs_value(r, i, 0), NULL, 10);
    e->organisation_id = strtoll(gw_dbs_value(r, i, 1), NULL, 10);
    char **strings[] = {&e->provider,    &e->source, &e->account,    &e->event_id,       &e->event_type,
                        &e->resource_id, &e->status, &e->last_error, &e->correlation_id, &e->lease_owner};
    for (size_t k = 0; k != sizeof(strings) / sizeof(strings[0]); ++k)
        *strings[k] = dup_or_null(gw_dbs_value(r, i, 2 + k));
    e->attempts = atoi(gw_dbs_value(r, i, 12));
    char **times[] = {&e->received_at, &e->verified_at, &e->stored_at, &e->next_attempt_at, &e->processed_at};
    for (size_t k = 0; k != sizeof(times) / sizeof(times[0]); ++k)
        *times[k] = dup_or_null(gw_dbs_value(r, i, 13 + k));
}

int gw_events_list(gw_dbs_t *s, const gw_events_filter_t *f, gw_event_list_t *out, gw_err_t *err)
{
    memset(out, 0, sizeof(*out));
    gw_dbs_result_t *r = query_filter(s, sql_list, f, f->limit > 0 ? f->limit : GW_EVENTS_LIMIT_DEFAULT, err);
    if (r == NULL)
        return -1;
    out->n = gw_dbs_nrows(r);
    out->events = out->n != 0 ? gw_xcalloc(out->n, sizeof(*out->events)) : NULL;
    for (size_t i = 0; i != out->n; ++i)
        fill_event(r, i, &out->events[i]);
    gw_dbs_result_free(r);
    return 0;
}

void gw_event_free(gw_event_t *e)
{
    char *strings[] = {e->provider,       e->source,          e->account,      e->event_id,
                       e->event_type,     e->resource_id,     e->status,       e->last_error,
                       e->correlation_id, e->lease_owner,     e->received_at,  e->verified_at,
                       e->stored_at,      e->next_attempt_at, e->processed_at, e->headers};
    for (size_t k = 0; k != sizeof(strings) / sizeof(strings[0]); ++k)
        free(strings[k]);
    free(e->body);
    memset(e, 0, sizeof(*e));
}

void gw_event_list_free(gw_event_list_t *list)
{
    for (size_t i = 0; i != list->n; ++i)
        gw_event_free(&list->events[i]);
    free(list->events);
    memset(list, 0, sizeof(*list));
}

int gw_events_get(gw_dbs_t *s, int64_t organisation_id, int64_t id, gw_event_t *out, gw_err_t *err)
{
    memset(out, 0, sizeof(*out));
    char org[24], ids[24];
    snprintf(org, sizeof(org), "%" PRId64, organisation_id);
    snprintf(ids, sizeof(ids), "%" PRId64, id);
    const char *p[] = {org, ids};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_get, 2, p);
    if (r == NULL)
        return gw_dbs_err(s, err);
    if (gw_dbs_nrows(r) == 0) {
        gw_dbs_result_free(r);
        return gw_err_set(err, gw_err_event_unknown, 404, "no stored event has id %" PRId64, id);
    }
    fill_event(r, 0, out);
    out->headers = dup_or_null(gw_dbs_value(r, 0, 18));
    const char *hex = gw_dbs_value(r, 0, 19);
    size_t hlen = hex != NULL ? strlen(hex) : 0;
    out->body = gw_xmalloc(hlen / 2 + 1);
    out->body_len = hlen / 2;
    if (gw_hex_decode(hex != NULL ? hex : "", hlen, out->body) != 0)
        out->body_len = 0;
    out->body[out->body_len] = '\0';
    gw_dbs_result_free(r);
    return 0;
}

long gw_events_history(gw_dbs_t *s, int64_t organisation_id, int64_t id, char ***out, gw_err_t *err)
{
    *out = NULL;
    char org[24], ids[24];
    snprintf(org, sizeof(org), "%" PRId64, organisation_id);
    snprintf(ids, sizeof(ids), "%" PRId64, id);
    const char *p[] = {org, ids};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_history, 2, p);
    if (r == NULL)
        return gw_dbs_err(s, err);
    size_t n = gw_dbs_nrows(r);
    *out = n != 0 ? gw_xcalloc(n, sizeof(**out)) : NULL;
    for (size_t i = 0; i != n; ++i) {
        const char *before = gw_dbs_value(r, i, 2), *after = gw_dbs_value(r, i, 3);
        size_t len = 64 + strlen(gw_dbs_value(r, i, 0)) + strlen(gw_dbs_value(r, i, 1)) +
                     (before != NULL ? strlen(before) : 1) + (after != NULL ? strlen(after) : 1);
        (*out)[i] = gw_xmalloc(len);
        snprintf((*out)[i], len, "%s  replayed by %s (%s -> %s)", gw_dbs_value(r, i, 0), gw_dbs_value(r, i, 1),
                 before != NULL ? before : "-", after != NULL ? after : "-");
    }
    gw_dbs_result_free(r);
    return (long)n;
}

int gw_replay_select(gw_dbs_t *s, const gw_events_filter_t *f, int64_t **ids, size_t *n, gw_err_t *err)
{
    *ids = NULL;
    *n = 0;
    gw_dbs_result_t *r = query_filter(s, sql_select, f, f->limit, err);
    if (r == NULL)
        return -1;
    *n = gw_dbs_nrows(r);
    *ids = *n != 0 ? gw_xcalloc(*n, sizeof(**ids)) : NULL;
    for (size_t i = 0; i != *n; ++i)
        (*ids)[i] = strtoll(gw_dbs_value(r, i, 0), NULL, 10);
    gw_dbs_result_free(r);
    return 0;
}

/* ---- reset ---- */

/* "{1,2,3}" */
static char *id_array(const int64_t *ids, size_t n)
{
    size_t cap = 3 + n * 21, len = 1;
    char *s = gw_xmalloc(cap);
    s[0] = '{';
    for (size_t i = 0; i != n; ++i)
        len += (size_t)snprintf(s + len, cap - len, "%s%" PRId64, i != 0 ? "," : "", ids[i]);
    snprintf(s + len, cap - len, "}");
    return s;
}

typedef struct st_reset_t {
    const char *ids, *org, *actor, *correlation_id;
    size_t n;
    gw_replay_counts_t counts;
} reset_t;

static int reset_body(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    reset_t *x = arg;
    memset(&x->counts, 0, sizeof(x->counts));
    const char *p[] = {x->ids, x->org};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_reset_lock_orgs, 2, p);
    if (r == NULL)
        return gw_dbs_err(s, err);
    gw_dbs_result_free(r);
    if ((r = gw_dbs_query(s, sql_reset_rows, 2, p)) == NULL)
        return gw_dbs_err(s, err);
    size_t found = gw_dbs_nrows(r);
    x->counts.unknown = x->n - found;
    int ret = 0;
    for (size_t i = 0; i != found && ret == 0; ++i) {
        if (strcmp(gw_dbs_value(r, i, 2), "processing") == 0) {
            ++x->counts.busy;
            continue;
        }
        ret = gw_audit_write(s, strtoll(gw_dbs_value(r, i, 1), NULL, 10), x->actor, "event.replay", "webhook_event",
                             gw_dbs_value(r, i, 0), gw_dbs_value(r, i, 4), replay_after,
                             x->correlation_id != NULL ? x->correlation_id : gw_dbs_value(r, i, 3), err);
        if (ret == 0)
            ++x->counts.reset;
    }
    gw_dbs_result_free(r);
    if (ret != 0)
        return -1;
    long long done = gw_dbs_exec(s, sql_reset, 2, p); /* scoped like the rows read: another organisation's stay */
    if (done < 0)
        return gw_dbs_err(s, err);
    if ((size_t)done != x->counts.reset)
        return gw_err_set(err, gw_err_internal, 500, "resetting events: %lld rows changed, %zu audited", done,
                          x->counts.reset);
    if (done > 0 && gw_dbs_exec(s, sql_notify, 0, NULL) < 0)
        return gw_dbs_err(s, err);
    return 0;
}

int gw_replay_reset(gw_dbs_t *s, int64_t organisation_id, const int64_t *ids, size_t n, const char *actor,
                    const char *correlation_id, gw_replay_counts_t *counts, gw_err_t *err)
{
    if (n == 0)
        return 0;
    if (actor == NULL || actor[0] == '\0')
        return gw_err_set(err, gw_err_invalid_argument, 400, "a replay needs an actor (who asked for it)");
    char org[24], *list = id_array(ids, n);
    snprintf(org, sizeof(org), "%" PRId64, organisation_id);
    reset_t x = {.ids = list, .org = org, .actor = actor, .correlation_id = correlation_id, .n = n};
    int rc = gw_dbs_tx(s, reset_body, &x, err);
    free(list);
    if (rc != 0)
        return -1;
    counts->reset += x.counts.reset;
    counts->busy += x.counts.busy;
    counts->unknown += x.counts.unknown;
    return 0;
}

/* ---- dry run ---- */

typedef struct st_dry_t {
    const gw_config_t *cfg;
    gw_fetch_ctx_t *fetch; /* quotas and the token session */
    const char *org, *id;
    int64_t event_id;
    gw_replay_diff_t diff;
} dry_t;

static void add_change(gw_replay_diff_t *d, const char *table, const char *key, const char *field, const char *before,
                       const char *after)
{
    d->changes = gw_xrealloc(d->changes, sizeof(*d->changes) * (d->n + 1));
    d->changes[d->n++] = (gw_replay_change_t){gw_xstrdup(table), gw_xstrdup(key), gw_xstrdup(field),
                                              dup_or_null(before), dup_or_null(after)};
}

static int dry_body(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    dry_t *x = arg;
    gw_replay_diff_free(&x->diff);
    x->diff.id = x->event_id;
    const char *p[] = {x->org, x->id};

    gw_dbs_result_t *r = gw_dbs_query(s, sql_audit_high, 0, NULL);
    if (r == NULL)
        return gw_dbs_err(s, err);
    char high[24];
    snprintf(high, sizeof(high), "%s", gw_dbs_value(r, 0, 0));
    gw_dbs_result_free(r);

    gw_dbs_result_t *before = gw_dbs_query(s, sql_dry_before, 2, p);
    if (before == NULL)
        return gw_dbs_err(s, err);
    if (gw_dbs_nrows(before) == 0) {
        gw_dbs_result_free(before);
        return gw_err_set(err, gw_err_event_unknown, 404, "no stored event has id %s", x->id);
    }
    if (strcmp(gw_dbs_value(before, 0, 0), "processing") == 0) {
        gw_dbs_result_free(before);
        return gw_err_set(err, gw_err_conflict, 409, "event %s is being processed by a worker right now", x->id);
    }
    char owner[96];
    snprintf(owner, sizeof(owner), "dry-run:%d", (int)getpid());
    const char *cp[] = {x->id, owner};
    gw_dbs_result_t *c = gw_dbs_query(s, sql_dry_claim, 2, cp);
    if (c == NULL || gw_dbs_nrows(c) != 1) {
        gw_dbs_result_free(before);
        gw_dbs_result_free(c);
        return gw_dbs_err(s, err);
    }
    gw_queue_row_t row = {.organisation_id = strtoll(gw_dbs_value(c, 0, 1), NULL, 10),
                          .provider = (char *)gw_dbs_value(c, 0, 2),
                          .account = (char *)gw_dbs_value(c, 0, 3),
                          .event_type = (char *)gw_dbs_value(c, 0, 4),
                          .resource_id = (char *)gw_dbs_value(c, 0, 5),
                          .attempts = atoi(gw_dbs_value(c, 0, 6)),
                          .correlation = (char *)gw_dbs_value(c, 0, 7),
                          .source = (char *)gw_dbs_value(c, 0, 9)};
    snprintf(row.id, sizeof(row.id), "%s", gw_dbs_value(c, 0, 0));
    const gw_processor_t *proc = gw_worker_processor(row.provider);
    if (proc == NULL) {
        x->diff.outcome = gw_xstrdup("unprocessed");
        x->diff.last_error = gw_xstrdup("settled does not process this provider's events yet: they wait as pending");
        gw_dbs_result_free(before);
        gw_dbs_result_free(c);
        return gw_err_set(err, rolled_back, 0, NULL);
    }
    static const atomic_bool never = false;
    gw_work_t work = {.fetch = *x->fetch, .stop = &never};
    work.fetch.db = s;
    work.fetch.read_only = true;
    work.queue = (gw_queue_t){.cfg = x->cfg, .db = s, .index = -1};
    snprintf(work.queue.owner, sizeof(work.queue.owner), "%s", owner);
    gw_queue_row_t *rows[] = {&row};
    proc->process(&work, rows, 1, gw_dbs_value(c, 0, 8));
    gw_dbs_result_free(c);

    const char *ap[] = {x->id};
    gw_dbs_result_t *after = gw_dbs_query(s, sql_dry_after, 1, ap);
    if (after == NULL) {
        /* a statement of the processing failed and aborted the transaction (e.g. a record the upserts refuse) */
        x->diff.outcome = gw_xstrdup("failed");
        char why[400];
        snprintf(why, sizeof(why), "the processing failed: %s", gw_dbs_error(s));
        x->diff.last_error = gw_xstrdup(why);
        gw_dbs_result_free(before);
        return gw_err_set(err, rolled_back, 0, NULL);
    }
    x->diff.outcome = gw_xstrdup(gw_dbs_value(after, 0, 0));
    x->diff.last_error = dup_or_null(gw_dbs_value(after, 0, 3));
    static const char *const fields[] = {"status", "attempts", "last_error"};
    for (size_t k = 0; k != 3; ++k) {
        char *b = k == 0 ? NULL : (char *)gw_dbs_value(before, 0, k),
             *a = k == 0 ? NULL : (char *)gw_dbs_value(after, 0, k);
        char bs[64], as[64];
        if (k == 0) { /* a status as JSON text, like the other values */
            snprintf(bs, sizeof(bs), "\"%s\"", gw_dbs_value(before, 0, 0));
            snprintf(as, sizeof(as), "\"%s\"", gw_dbs_value(after, 0, 0));
            b = bs;
            a = as;
        }
        if (strcmp(b, a) != 0)
            add_change(&x->diff, "webhook_events", x->id, fields[k], b, a);
    }
    gw_dbs_result_free(before);
    gw_dbs_result_free(after);

    const char *hp[] = {high};
    if ((r = gw_dbs_query(s, sql_dry_audit_count, 1, hp)) == NULL)
        return gw_dbs_err(s, err);
    x->diff.audit_rows = (size_t)strtoull(gw_dbs_value(r, 0, 0), NULL, 10);
    gw_dbs_result_free(r);
    if ((r = gw_dbs_query(s, sql_dry_diff, 1, hp)) == NULL)
        return gw_dbs_err(s, err);
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i)
        add_change(&x->diff, table_of(gw_dbs_value(r, i, 0)), gw_dbs_value(r, i, 1), gw_dbs_value(r, i, 2),
                   gw_dbs_value(r, i, 3), gw_dbs_value(r, i, 4));
    gw_dbs_result_free(r);
    return gw_err_set(err, rolled_back, 0, NULL);
}

int gw_replay_dry_run(const gw_config_t *cfg, gw_dbs_t *s, gw_dbs_t *token_db, int64_t organisation_id, int64_t id,
                      gw_replay_diff_t *out, gw_err_t *err)
{
    memset(out, 0, sizeof(*out));
    gw_fetch_ctx_t fetch = {.cfg = cfg, .token_db = token_db, .read_only = true};
    if (gw_fetch_quotas_create(&fetch, err) != 0)
        return -1;
    char org[24], ids[24];
    snprintf(org, sizeof(org), "%" PRId64, organisation_id);
    snprintf(ids, sizeof(ids), "%" PRId64, id);
    dry_t x = {.cfg = cfg, .fetch = &fetch, .org = org, .id = ids, .event_id = id};
    gw_err_t body_err = GW_ERR_INIT;
    int rc = gw_dbs_tx(s, dry_body, &x, &body_err);
    gw_fetch_quotas_destroy(&fetch);
    if (rc == 0) { /* cannot happen: the body always ends in a rollback */
        gw_replay_diff_free(&x.diff);
        return gw_err_set(err, gw_err_internal, 500, "the dry run of event %" PRId64 " was not rolled back", id);
    }
    if (body_err.code != rolled_back) {
        gw_replay_diff_free(&x.diff);
        *err = body_err;
        return -1;
    }
    *out = x.diff;
    return 0;
}

void gw_replay_diff_free(gw_replay_diff_t *d)
{
    for (size_t i = 0; i != d->n; ++i) {
        free(d->changes[i].table);
        free(d->changes[i].key);
        free(d->changes[i].field);
        free(d->changes[i].before);
        free(d->changes[i].after);
    }
    free(d->changes);
    free(d->outcome);
    free(d->last_error);
    memset(d, 0, sizeof(*d));
}

static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

json_t *gw_replay_diff_json(const gw_replay_diff_t *d)
{
    json_t *o = json_object(), *changes = json_array();
    json_object_set_new(o, "id", json_integer(d->id));
    json_object_set_new(o, "outcome", json_string(d->outcome));
    json_object_set_new(o, "last_error", str_or_null(d->last_error));
    json_object_set_new(o, "audit_rows", json_integer((json_int_t)d->audit_rows));
    for (size_t i = 0; i != d->n; ++i) {
        const gw_replay_change_t *c = &d->changes[i];
        json_t *ch = json_object();
        json_object_set_new(ch, "table", json_string(c->table));
        json_object_set_new(ch, "key", json_string(c->key));
        json_object_set_new(ch, "field", json_string(c->field));
        /* JSON texts, as PostgreSQL wrote them: an amount never becomes a binary float on the way */
        json_object_set_new(ch, "before", str_or_null(c->before));
        json_object_set_new(ch, "after", str_or_null(c->after));
        json_array_append_new(changes, ch);
    }
    json_object_set_new(o, "changes", changes);
    return o;
}

/* ---- re-signing ---- */

int gw_replay_sign(const char *provider, const char *secret, const unsigned char *body, size_t body_len, int64_t now,
                   char *out, size_t outlen)
{
    unsigned char mac[32];
    char t[24], enc[GW_BASE64_ENCODED_SIZE(32) + 64];
    snprintf(t, sizeof(t), "%" PRId64, now);
    cn_str_t parts[3];
    size_t nparts = 0;
    bool stripe = strcmp(provider, "stripe") == 0;
    if (stripe) {
        parts[nparts++] = (cn_str_t){t, strlen(t)};
        parts[nparts++] = (cn_str_t){".", 1};
    } else if (strcmp(provider, "xero") != 0 && strcmp(provider, "gocardless") != 0) {
        return -1;
    }
    parts[nparts++] = (cn_str_t){(const char *)body, body_len};
    if (gw_crypto_hmac_sha256(secret, strlen(secret), parts, nparts, mac) != 0)
        return -1;
    if (strcmp(provider, "xero") == 0) {
        gw_base64_encode(mac, sizeof(mac), 0, enc);
        snprintf(out, outlen, "x-xero-signature: %s", enc);
    } else {
        gw_hex_encode(mac, sizeof(mac), enc);
        if (stripe)
            snprintf(out, outlen, "Stripe-Signature: t=%s,v1=%s", t, enc);
        else
            snprintf(out, outlen, "Webhook-Signature: %s", enc);
    }
    explicit_bzero(mac, sizeof(mac));
    return 0;
}
