/* SPDX-License-Identifier: MIT */
/*
 * audit_api.c: the admin's view of its organisation's hash-chained audit log: the rows newest first (filtered by
 * entity and time, keyset-paginated by id) and the verification of the chain through the domain's one check
 * (gw_audit_verify, the SQL function audit_verify). before and after leave as the JSON texts PostgreSQL stored,
 * so an amount in them never becomes a binary float.
 */
#include "audit_api.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "audit.h"
#include "events.h"
#include "task.h"

enum { A_LIMIT, A_CURSOR, A_ENTITY_TYPE, A_ENTITY_ID, A_SINCE, A_UNTIL };
const gw_input_t gw_audit_list_inputs[GW_AUDIT_LIST_NINPUTS] = {
    [A_LIMIT] = {"limit", GW_IN_QUERY, GW_IN_INT, .min = 1, .max = 100, .def = "25"},
    [A_CURSOR] = {"cursor", GW_IN_QUERY, GW_IN_CURSOR, .max = 64},
    [A_ENTITY_TYPE] = {"entity_type", GW_IN_QUERY, GW_IN_STRING, .min = 1, .max = 100},
    [A_ENTITY_ID] = {"entity_id", GW_IN_QUERY, GW_IN_STRING, .min = 1, .max = 200},
    [A_SINCE] = {"since", GW_IN_QUERY, GW_IN_STRING, .min = 1, .max = 64},
    [A_UNTIL] = {"until", GW_IN_QUERY, GW_IN_STRING, .min = 1, .max = 64},
};

#define AUDIT_COLUMNS                                                                                                  \
    "id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), actor, action, entity_type, entity_id, " \
    "before::text, after::text, correlation_id"
/* $1 organisation, $2 entity type, $3 entity id, $4 since, $5 until (exclusive), $6 below this id, $7 limit */
static const char sql_list[] = "SELECT " AUDIT_COLUMNS " FROM audit_log WHERE organisation_id = $1::bigint"
                               " AND ($2::text IS NULL OR entity_type = $2) AND ($3::text IS NULL OR entity_id = $3)"
                               " AND ($4::timestamptz IS NULL OR at >= $4::timestamptz)"
                               " AND ($5::timestamptz IS NULL OR at < $5::timestamptz)"
                               " AND ($6::bigint IS NULL OR id < $6::bigint) ORDER BY id DESC LIMIT $7::int";
static const char sql_count[] = "SELECT count(*) FROM audit_log WHERE organisation_id = $1::bigint";
static const char sql_row[] = "SELECT " AUDIT_COLUMNS " FROM audit_log WHERE organisation_id = $1::bigint AND id = $2";

static json_t *col(gw_dbs_result_t *r, size_t i, size_t c)
{
    const char *v = gw_dbs_value(r, i, c);
    return v != NULL ? json_string(v) : json_null();
}

static json_t *row_json(gw_dbs_result_t *r, size_t i)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(strtoll(gw_dbs_value(r, i, 0), NULL, 10)));
    static const char *const names[] = {"at",        "actor",  "action", "entity_type",
                                        "entity_id", "before", "after",  "request_id"};
    for (size_t c = 0; c != sizeof(names) / sizeof(names[0]); ++c)
        json_object_set_new(o, names[c], col(r, i, c + 1));
    return o;
}

static void on_list(gw_task_t *t)
{
    char org[24], before[24], limit[24], *since = NULL, *until = NULL;
    int64_t below = 0;
    if (t->in[A_CURSOR] != NULL && (below = gw_task_cursor_id(t->in[A_CURSOR])) <= 0) {
        gw_task_fail(t, gw_err_parameter_invalid, 400, "cursor", "'cursor' is not a cursor settled issued.");
        return;
    }
    if (gw_events_api_time(t, "since", t->in[A_SINCE], &since) != 0 ||
        gw_events_api_time(t, "until", t->in[A_UNTIL], &until) != 0)
        goto Exit;
    snprintf(org, sizeof(org), "%" PRId64, t->organisation_id);
    snprintf(before, sizeof(before), "%" PRId64, below);
    snprintf(limit, sizeof(limit), "%" PRId64, t->ini[A_LIMIT] + 1); /* one more: is there a next page? */
    const char *p[] = {org, t->in[A_ENTITY_TYPE], t->in[A_ENTITY_ID], since, until, below > 0 ? before : NULL, limit};
    gw_dbs_result_t *r = gw_dbs_query(t->db, sql_list, 7, p);
    if (r == NULL) {
        (void)gw_dbs_err(t->db, &t->err);
        goto Exit;
    }
    size_t n = gw_dbs_nrows(r), shown = n > (size_t)t->ini[A_LIMIT] ? (size_t)t->ini[A_LIMIT] : n;
    json_t *data = json_array();
    for (size_t i = 0; i != shown; ++i)
        json_array_append_new(data, row_json(r, i));
    t->doc = json_object();
    json_object_set_new(t->doc, "data", data);
    json_object_set_new(t->doc, "next_cursor",
                        n > shown && shown != 0 ? gw_task_cursor(strtoll(gw_dbs_value(r, shown - 1, 0), NULL, 10))
                                                : json_null());
    gw_dbs_result_free(r);
Exit:
    free(since);
    free(until);
}

int gw_audit_api_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return gw_task_run(loop, req, call, on_list, true);
}

static void on_verify(gw_task_t *t)
{
    char org[24], id[24];
    snprintf(org, sizeof(org), "%" PRId64, t->organisation_id);
    const char *p[] = {org, id};
    int64_t broken = 0;
    if (gw_audit_verify(t->db, t->organisation_id, &broken, &t->err) != 0)
        return;
    gw_dbs_result_t *r = gw_dbs_query(t->db, sql_count, 1, p);
    if (r == NULL) {
        (void)gw_dbs_err(t->db, &t->err);
        return;
    }
    json_int_t checked = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
    gw_dbs_result_free(r);
    json_t *first = json_null();
    if (broken != 0) {
        snprintf(id, sizeof(id), "%" PRId64, broken);
        if ((r = gw_dbs_query(t->db, sql_row, 2, p)) == NULL) {
            (void)gw_dbs_err(t->db, &t->err);
            return;
        }
        first = gw_dbs_nrows(r) == 1 ? row_json(r, 0) : json_pack("{sI}", "id", (json_int_t)broken);
        gw_dbs_result_free(r);
    }
    t->doc = json_object();
    json_object_set_new(t->doc, "ok", json_boolean(broken == 0));
    json_object_set_new(t->doc, "checked", json_integer(checked));
    json_object_set_new(t->doc, "first_broken", first);
}

int gw_audit_api_verify(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return gw_task_run(loop, req, call, on_verify, false);
}
