/* SPDX-License-Identifier: MIT */
/*
 * events.c: the admin's webhook event log and replay. Every route runs on the offload pool (task.h) through the
 * domain functions of `settled events` and `settled replay` (replay.h), with the admin's organisation as their
 * scope: another organisation's event is simply not found (404). A replay is audited as "user:<id>" with the
 * request id; a dry run changes nothing (its transaction is rolled back) and says, per event, what would change.
 */
#include "events.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "mem.h"
#include "replay.h"
#include "task.h"

static const char *const providers[] = {"stripe", "xero", "gocardless", NULL};
static const char *const statuses[] = {"pending", "processing", "done", "ignored", "failed", "dead", NULL};

enum { L_LIMIT, L_CURSOR, L_PROVIDER, L_STATUS, L_TYPE, L_SINCE, L_UNTIL };
const gw_input_t gw_events_list_inputs[GW_EVENTS_LIST_NINPUTS] = {
    [L_LIMIT] = {"limit", GW_IN_QUERY, GW_IN_INT, .min = 1, .max = 100, .def = "25"},
    [L_CURSOR] = {"cursor", GW_IN_QUERY, GW_IN_CURSOR, .max = 64},
    [L_PROVIDER] = {"provider", GW_IN_QUERY, GW_IN_ENUM, .values = providers},
    [L_STATUS] = {"status", GW_IN_QUERY, GW_IN_ENUM, .values = statuses},
    [L_TYPE] = {"type", GW_IN_QUERY, GW_IN_STRING, .min = 1, .max = 200},
    [L_SINCE] = {"since", GW_IN_QUERY, GW_IN_STRING, .min = 1, .max = 64},
    [L_UNTIL] = {"until", GW_IN_QUERY, GW_IN_STRING, .min = 1, .max = 64},
};
enum { G_ID };
const gw_input_t gw_events_get_inputs[GW_EVENTS_GET_NINPUTS] = {
    [G_ID] = {"id", GW_IN_PATH, GW_IN_INT, .required = true, .min = 1, .max = INT64_MAX},
};
enum { O_ID, O_DRY_RUN };
const gw_input_t gw_events_replay_one_inputs[GW_EVENTS_REPLAY_ONE_NINPUTS] = {
    [O_ID] = {"id", GW_IN_PATH, GW_IN_INT, .required = true, .min = 1, .max = INT64_MAX},
    [O_DRY_RUN] = {"dry_run", GW_IN_BODY, GW_IN_BOOL, .def = "false"},
};
enum { R_SINCE, R_PROVIDER, R_STATUS, R_TYPE, R_DRY_RUN };
const gw_input_t gw_events_replay_inputs[GW_EVENTS_REPLAY_NINPUTS] = {
    [R_SINCE] = {"since", GW_IN_BODY, GW_IN_STRING, .required = true, .min = 1, .max = 64},
    [R_PROVIDER] = {"provider", GW_IN_BODY, GW_IN_ENUM, .values = providers},
    [R_STATUS] = {"status", GW_IN_BODY, GW_IN_ENUM, .values = statuses},
    [R_TYPE] = {"type", GW_IN_BODY, GW_IN_STRING, .min = 1, .max = 200},
    [R_DRY_RUN] = {"dry_run", GW_IN_BODY, GW_IN_BOOL, .def = "false"},
};

#define UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* The audit rows of an event: its replays (entity webhook_event) and what its processing did (rows carrying its
 * correlation id), oldest first. $1 organisation, $2 the event's id, $3 its correlation id. */
static const char sql_event_audit[] =
    "SELECT id, " UTC("at") ", actor, action, entity_type, entity_id, correlation_id, before ->> 'status',"
                            "       after ->> 'status' FROM audit_log WHERE organisation_id = $1::bigint"
                            "   AND ((entity_type = 'webhook_event' AND entity_id = $2) OR ($3::text IS NOT NULL AND "
                            "correlation_id = $3))"
                            " ORDER BY id LIMIT 500";

static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

int gw_events_api_time(gw_task_t *t, const char *name, const char *text, char **out)
{
    gw_err_t err = GW_ERR_INIT;
    *out = NULL;
    if (text == NULL)
        return 0;
    if (gw_since_resolve(t->db, text, out, &err) == 0)
        return 0;
    if (err.code == gw_err_invalid_argument)
        return gw_task_fail(t, gw_err_parameter_invalid, 400, name,
                            "'%s' must be a time (2026-01-31T00:00:00Z) or an age (90s, 30m, 2h, 7d).", name);
    t->err = err;
    return -1;
}

/* A domain error for the API: a bad filter is the input's fault, an unknown event is 404. */
static void domain_fail(gw_task_t *t, const gw_err_t *err)
{
    if (err->code == gw_err_event_unknown)
        gw_task_fail(t, gw_err_not_found, 404, NULL, "No such event.");
    else if (err->code == gw_err_invalid_argument)
        gw_task_fail(t, gw_err_parameter_invalid, 400, NULL, "%s", err->detail);
    else
        t->err = *err;
}

/* ---- the list ---- */

static json_t *event_json(const gw_event_t *e)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(e->id));
    json_object_set_new(o, "provider", str_or_null(e->provider));
    json_object_set_new(o, "source", str_or_null(e->source));
    json_object_set_new(o, "account", str_or_null(e->account));
    json_object_set_new(o, "event_id", str_or_null(e->event_id));
    json_object_set_new(o, "type", str_or_null(e->event_type));
    json_object_set_new(o, "resource_id", str_or_null(e->resource_id));
    json_object_set_new(o, "status", str_or_null(e->status));
    json_object_set_new(o, "attempts", json_integer(e->attempts));
    json_object_set_new(o, "last_error", str_or_null(e->last_error));
    json_object_set_new(o, "correlation_id", str_or_null(e->correlation_id));
    json_object_set_new(o, "received_at", str_or_null(e->received_at));
    json_object_set_new(o, "next_attempt_at", str_or_null(e->next_attempt_at));
    json_object_set_new(o, "processed_at", str_or_null(e->processed_at));
    return o;
}

static void on_list(gw_task_t *t)
{
    gw_events_filter_t f = {.organisation_id = t->organisation_id,
                            .provider = t->in[L_PROVIDER],
                            .statuses = t->in[L_STATUS],
                            .type = t->in[L_TYPE],
                            .limit = (long)t->ini[L_LIMIT] + 1}; /* one more: is there a next page? */
    char *since = NULL, *until = NULL;
    if (t->in[L_CURSOR] != NULL && (f.before_id = gw_task_cursor_id(t->in[L_CURSOR])) <= 0) {
        gw_task_fail(t, gw_err_parameter_invalid, 400, "cursor", "'cursor' is not a cursor settled issued.");
        return;
    }
    if (gw_events_api_time(t, "since", t->in[L_SINCE], &since) != 0 ||
        gw_events_api_time(t, "until", t->in[L_UNTIL], &until) != 0)
        goto Exit;
    f.since = since;
    f.until = until;
    gw_event_list_t list;
    gw_err_t err = GW_ERR_INIT;
    if (gw_events_list(t->db, &f, &list, &err) != 0) {
        domain_fail(t, &err);
        goto Exit;
    }
    size_t shown = list.n > (size_t)t->ini[L_LIMIT] ? (size_t)t->ini[L_LIMIT] : list.n;
    json_t *data = json_array();
    for (size_t i = 0; i != shown; ++i)
        json_array_append_new(data, event_json(&list.events[i]));
    t->doc = json_object();
    json_object_set_new(t->doc, "data", data);
    json_object_set_new(t->doc, "next_cursor",
                        list.n > shown && shown != 0 ? gw_task_cursor(list.events[shown - 1].id) : json_null());
    gw_event_list_free(&list);
Exit:
    free(since);
    free(until);
}

int gw_events_api_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return gw_task_run(loop, req, call, on_list, true);
}

/* ---- one event ---- */

static json_t *audit_entry(gw_dbs_result_t *r, size_t i)
{
    json_t *o = json_object();
    json_object_set_new(o, "audit_id", json_integer(strtoll(gw_dbs_value(r, i, 0), NULL, 10)));
    json_object_set_new(o, "at", str_or_null(gw_dbs_value(r, i, 1)));
    json_object_set_new(o, "actor", str_or_null(gw_dbs_value(r, i, 2)));
    json_object_set_new(o, "action", str_or_null(gw_dbs_value(r, i, 3)));
    json_object_set_new(o, "entity_type", str_or_null(gw_dbs_value(r, i, 4)));
    json_object_set_new(o, "entity_id", str_or_null(gw_dbs_value(r, i, 5)));
    json_object_set_new(o, "request_id", str_or_null(gw_dbs_value(r, i, 6)));
    return o;
}

static void on_get(gw_task_t *t)
{
    gw_event_t e;
    gw_err_t err = GW_ERR_INIT;
    if (gw_events_get(t->db, t->organisation_id, t->ini[G_ID], &e, &err) != 0) {
        domain_fail(t, &err);
        return;
    }
    json_t *doc = event_json(&e);
    json_object_set_new(doc, "verified_at", str_or_null(e.verified_at));
    json_object_set_new(doc, "stored_at", str_or_null(e.stored_at));
    json_t *headers = e.headers != NULL ? json_loads(e.headers, 0, NULL) : NULL;
    json_object_set_new(doc, "headers", json_is_object(headers) ? headers : json_object());
    if (headers != NULL && !json_is_object(headers))
        json_decref(headers);
    /* the raw bytes: as text when they are UTF-8 (jansson refuses anything else), else base64 */
    json_t *text = json_stringn((const char *)e.body, e.body_len);
    if (text != NULL) {
        json_object_set_new(doc, "body", text);
        json_object_set_new(doc, "body_encoding", json_string("utf-8"));
    } else {
        char *b64 = gw_xmalloc(GW_BASE64_ENCODED_SIZE(e.body_len));
        size_t n = gw_base64_encode(e.body, e.body_len, 0, b64);
        json_object_set_new(doc, "body", json_stringn(b64, n));
        json_object_set_new(doc, "body_encoding", json_string("base64"));
        free(b64);
    }
    json_object_set_new(doc, "body_bytes", json_integer((json_int_t)e.body_len));

    char org[24], id[24];
    snprintf(org, sizeof(org), "%" PRId64, t->organisation_id);
    snprintf(id, sizeof(id), "%" PRId64, e.id);
    const char *p[] = {org, id, e.correlation_id};
    gw_dbs_result_t *r = gw_dbs_query(t->db, sql_event_audit, 3, p);
    if (r == NULL) {
        (void)gw_dbs_err(t->db, &t->err);
        json_decref(doc);
        gw_event_free(&e);
        return;
    }
    json_t *replays = json_array(), *effects = json_array();
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
        json_t *a = audit_entry(r, i);
        if (strcmp(gw_dbs_value(r, i, 4), "webhook_event") == 0 && strcmp(gw_dbs_value(r, i, 5), id) == 0 &&
            strcmp(gw_dbs_value(r, i, 3), "event.replay") == 0) {
            json_object_set_new(a, "status_before", str_or_null(gw_dbs_value(r, i, 7)));
            json_object_set_new(a, "status_after", str_or_null(gw_dbs_value(r, i, 8)));
            json_array_append_new(replays, a);
        } else {
            json_array_append_new(effects, a);
        }
    }
    gw_dbs_result_free(r);
    json_t *outcome = json_object();
    json_object_set_new(outcome, "status", str_or_null(e.status));
    json_object_set_new(outcome, "attempts", json_integer(e.attempts));
    json_object_set_new(outcome, "last_error", str_or_null(e.last_error));
    json_object_set_new(outcome, "processed_at", str_or_null(e.processed_at));
    json_object_set_new(outcome, "effects", effects);
    json_object_set_new(doc, "outcome", outcome);
    json_object_set_new(doc, "replays", replays);
    gw_event_free(&e);
    t->doc = doc;
}

int gw_events_api_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return gw_task_run(loop, req, call, on_get, true);
}

/* ---- replay ---- */

/* The dry run of ids into t->doc: one rolled-back transaction each, through a second session for Xero's tokens. */
static void dry_run(gw_task_t *t, const int64_t *ids, size_t n, bool one)
{
    char msg[256];
    gw_dbs_t *token_db = gw_dbs_connect(t->cfg->database_url, msg, sizeof(msg));
    if (token_db == NULL) {
        gw_task_fail(t, gw_err_store_unavailable, 503, NULL, "The database cannot answer now; retry later.");
        return;
    }
    json_t *events = json_array(), *errors = json_array();
    for (size_t i = 0; i != n; ++i) {
        gw_replay_diff_t d;
        gw_err_t err = GW_ERR_INIT;
        if (gw_replay_dry_run(t->cfg, t->db, token_db, t->organisation_id, ids[i], &d, &err) != 0) {
            if (one) { /* the one event asked for: its error is the answer */
                domain_fail(t, &err);
                json_decref(events);
                json_decref(errors);
                gw_dbs_close(token_db);
                return;
            }
            json_t *e = json_object();
            json_object_set_new(e, "id", json_integer(ids[i]));
            json_object_set_new(e, "code", json_string(err.code != NULL ? err.code : gw_err_internal));
            json_object_set_new(e, "detail", json_string(err.detail));
            json_array_append_new(errors, e);
            continue;
        }
        json_array_append_new(events, gw_replay_diff_json(&d));
        gw_replay_diff_free(&d);
    }
    gw_dbs_close(token_db);
    t->doc = json_object();
    json_object_set_new(t->doc, "dry_run", json_true());
    json_object_set_new(t->doc, "selected", json_integer((json_int_t)n));
    json_object_set_new(t->doc, "events", events);
    json_object_set_new(t->doc, "errors", errors);
}

/* The real replay of ids, audited as the admin with the request id. */
static void reset(gw_task_t *t, const int64_t *ids, size_t n, bool one)
{
    char actor[48];
    snprintf(actor, sizeof(actor), "user:%" PRId64, t->user_id);
    gw_replay_counts_t counts = {0};
    gw_err_t err = GW_ERR_INIT;
    if (gw_replay_reset(t->db, t->organisation_id, ids, n, actor, t->request_id[0] != '\0' ? t->request_id : NULL,
                        &counts, &err) != 0) {
        domain_fail(t, &err);
        return;
    }
    if (one && counts.unknown != 0) {
        gw_task_fail(t, gw_err_not_found, 404, NULL, "No such event.");
        return;
    }
    if (one && counts.busy != 0) {
        gw_task_fail(t, gw_err_conflict, 409, NULL,
                     "A worker is processing this event right now; replay it once it is done.");
        return;
    }
    t->doc = json_object();
    json_object_set_new(t->doc, "dry_run", json_false());
    json_object_set_new(t->doc, "selected", json_integer((json_int_t)n));
    json_object_set_new(t->doc, "reset", json_integer((json_int_t)counts.reset));
    json_object_set_new(t->doc, "busy", json_integer((json_int_t)counts.busy));
    json_object_set_new(t->doc, "unknown", json_integer((json_int_t)counts.unknown));
    json_object_set_new(t->doc, "actor", json_string(actor));
    json_object_set_new(t->doc, "request_id", json_string(t->request_id));
}

static void on_replay_one(gw_task_t *t)
{
    int64_t id = t->ini[O_ID];
    if (t->ini[O_DRY_RUN] != 0)
        dry_run(t, &id, 1, true);
    else
        reset(t, &id, 1, true);
}

int gw_events_api_replay_one(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return gw_task_run(loop, req, call, on_replay_one, false);
}

static void on_replay(gw_task_t *t)
{
    char *since = NULL;
    if (gw_events_api_time(t, "since", t->in[R_SINCE], &since) != 0)
        return;
    /* as `settled replay --since`: the failed and dead events unless a status is named */
    gw_events_filter_t f = {.organisation_id = t->organisation_id,
                            .provider = t->in[R_PROVIDER],
                            .statuses = t->in[R_STATUS] != NULL ? t->in[R_STATUS] : "failed,dead",
                            .type = t->in[R_TYPE],
                            .since = since,
                            .limit = GW_ADMIN_REPLAY_MAX + 1};
    int64_t *ids = NULL;
    size_t n = 0;
    gw_err_t err = GW_ERR_INIT;
    if (gw_replay_select(t->db, &f, &ids, &n, &err) != 0) {
        domain_fail(t, &err);
    } else if (n > GW_ADMIN_REPLAY_MAX) {
        gw_task_fail(t, gw_err_replay_too_large, 400, "since",
                     "More than %d events match; one request replays at most %d. Narrow the filter (a later "
                     "'since', a provider, a status, a type), or use `settled replay --since` on the server.",
                     GW_ADMIN_REPLAY_MAX, GW_ADMIN_REPLAY_MAX);
    } else if (t->ini[R_DRY_RUN] != 0) {
        dry_run(t, ids, n, false);
    } else {
        reset(t, ids, n, false);
    }
    free(ids);
    free(since);
}

int gw_events_api_replay(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return gw_task_run(loop, req, call, on_replay, false);
}
