/* SPDX-License-Identifier: MIT */
/*
 * me.c: GET /v1/me, so a portal knows whom it serves: the user and role of the access token, its organisation, and
 * for a client its customer, read on the loop's async pool (one statement, scoped by the token's organisation).
 */
#include "me.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "query.h"
#include "reply.h"

enum { STMT_ME, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    /* $1 organisation, $2 customer (NULL for an admin), $3 user */
    {"me_get",
     "SELECT o.id::text, o.slug, o.name, c.id::text, c.name, c.email, u.email FROM organisations o "
     "LEFT JOIN customers c ON c.organisation_id = o.id AND c.id = $2::bigint "
     "LEFT JOIN users u ON u.organisation_id = o.id AND u.id = $3::bigint WHERE o.id = $1::bigint",
     3},
};

const gw_module_t gw_me_module = {
    .name = "me",
    .statements = statements,
    .nstatements = STMT_MAX,
};

static json_t *col(const gw_db_rows_t *rows, size_t c)
{
    size_t len;
    const char *v = gw_db_rows_value(rows, 0, c, &len);
    return v != NULL ? json_stringn(v, len) : json_null();
}

static void on_rows(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    const gw_scope_t *scope = data;
    if (gw_db_rows_count(rows) == 0) { /* the token's organisation is gone */
        gw_reply_problem(req, 404, gw_err_not_found, NULL);
        return;
    }
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)scope->user_id);
    json_t *doc = json_object(), *user = json_object(), *org = json_object();
    json_object_set_new(user, "id", json_string(id));
    json_object_set_new(user, "email", col(rows, 6));
    json_object_set_new(doc, "user", user);
    json_object_set_new(doc, "role", json_string(scope->role == GW_ROLE_ADMIN ? "admin" : "client"));
    json_object_set_new(org, "id", col(rows, 0));
    json_object_set_new(org, "slug", col(rows, 1));
    json_object_set_new(org, "name", col(rows, 2));
    json_object_set_new(doc, "organisation", org);
    if (gw_db_rows_value(rows, 0, 3, NULL) != NULL) {
        json_t *customer = json_object();
        json_object_set_new(customer, "id", col(rows, 3));
        json_object_set_new(customer, "name", col(rows, 4));
        json_object_set_new(customer, "email", col(rows, 5));
        json_object_set_new(doc, "customer", customer);
    } else {
        json_object_set_new(doc, "customer", json_null());
    }
    gw_query_reply(req, doc);
}

int gw_me_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[3];
    gw_query_scope(req, &call->scope, params);
    params[2] = gw_query_int(req, call->scope.user_id);
    return gw_query(loop, req, &statements[STMT_ME], params, 3, on_rows, (void *)&call->scope);
}
