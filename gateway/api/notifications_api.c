/* SPDX-License-Identifier: MIT */
/*
 * notifications_api.c: the notification routes. Each is one statement on the loop's async pool calling a function
 * of schema/functions/notifications.sql, scoped in SQL: the client's by its organisation and customer (another
 * customer's notification is 404), the admins' by the organisation. Nothing here blocks.
 */
#include "notifications_api.h"
#include "admin.h"
#include "query.h"

enum { IN_LIMIT, IN_CURSOR, IN_STATUS };
const gw_input_t gw_notifications_list_inputs[GW_NOTIFICATIONS_LIST_NINPUTS] = {GW_ADMIN_PAGE_INPUTS};
const gw_input_t gw_notifications_read_inputs[GW_NOTIFICATIONS_READ_NINPUTS] = {GW_ADMIN_ID_INPUT};
static const char *const statuses[] = {"pending", "sending", "sent", "failed", "dead", "suppressed", NULL};
const gw_input_t gw_notifications_admin_inputs[GW_NOTIFICATIONS_ADMIN_NINPUTS] = {
    GW_ADMIN_PAGE_INPUTS,
    [IN_STATUS] = {"status", GW_IN_QUERY, GW_IN_ENUM, .values = statuses},
};

enum { STMT_LIST, STMT_READ, STMT_ADMIN, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    {"notifications_client_list",
     "SELECT notifications_client_list($1::bigint, $2::bigint, $3::bigint, $4::integer)::text", 4},
    {"notification_client_read",
     "SELECT result, field, detail, doc::text FROM notification_client_read($1::bigint, $2::bigint, $3::bigint)", 3},
    {"notifications_admin_list", "SELECT notifications_admin_list($1::bigint, $2, $3::bigint, $4::integer)::text", 4},
};

const gw_module_t gw_notifications_module = {
    .name = "notifications",
    .statements = statements,
    .nstatements = STMT_MAX,
};

int gw_notifications_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[4];
    if (gw_admin_cursor(req, &call->in[IN_CURSOR], &params[2]) != 0)
        return 0;
    gw_query_scope(req, &call->scope, params); /* a client: $2 is its customer */
    params[3] = gw_admin_value(&call->in[IN_LIMIT]);
    return gw_admin_read(loop, req, &statements[STMT_LIST], params, 4);
}

int gw_notifications_read(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[3];
    gw_query_scope(req, &call->scope, params);
    params[2] = gw_admin_value(&call->in[0]);
    return gw_admin_write(loop, req, &statements[STMT_READ], params, 3);
}

int gw_notifications_admin_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[4];
    if (gw_admin_cursor(req, &call->in[IN_CURSOR], &params[2]) != 0)
        return 0;
    params[0] = gw_admin_org(req, &call->scope);
    params[1] = gw_admin_value(&call->in[IN_STATUS]);
    params[3] = gw_admin_value(&call->in[IN_LIMIT]);
    return gw_admin_read(loop, req, &statements[STMT_ADMIN], params, 4);
}
