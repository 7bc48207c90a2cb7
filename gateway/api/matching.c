/* SPDX-License-Identifier: MIT */
/*
 * matching.c: the admin's matching queue. Every route is one statement on the loop's async pool: the list reads
 * admin_matching_list, each decision calls admin_match_decide (schema/functions/admin.sql), which links the provider
 * customer exactly as the automatic matching does (match_link; for Stripe and GoCardless pm_customer_seen, so the
 * customer's payment methods follow), closes the entry and audits the decision (actor "user:<id>", the entry before
 * and after, the request id) in the statement's one transaction. Nothing blocks: no offload.
 */
#include "matching.h"
#include <string.h>
#include "admin.h"
#include "query.h"
#include "reply.h"

enum { IN_LIMIT, IN_CURSOR };
const gw_input_t gw_matching_list_inputs[GW_MATCHING_LIST_NINPUTS] = {GW_ADMIN_PAGE_INPUTS};
enum { IN_ID, IN_CUSTOMER };
const gw_input_t gw_matching_pick_inputs[GW_MATCHING_PICK_NINPUTS] = {
    GW_ADMIN_ID_INPUT,
    [IN_CUSTOMER] = {"customer_id", GW_IN_BODY, GW_IN_STRING, .required = true, .min = 1, .max = 20},
};
const gw_input_t gw_matching_item_inputs[GW_MATCHING_ITEM_NINPUTS] = {GW_ADMIN_ID_INPUT};

enum { STMT_LIST, STMT_DECIDE, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    {"admin_matching_list", "SELECT admin_matching_list($1::bigint, $2::bigint, $3::integer)::text", 3},
    {"admin_match_decide",
     "SELECT result, field, detail, doc::text FROM admin_match_decide($1::bigint, $2::bigint, $3, $4::bigint, $5, $6)",
     6},
};

const gw_module_t gw_matching_module = {
    .name = "matching",
    .statements = statements,
    .nstatements = STMT_MAX,
};

int gw_matching_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[3];
    if (gw_admin_cursor(req, &call->in[IN_CURSOR], &params[1]) != 0)
        return 0;
    params[0] = gw_admin_org(req, &call->scope);
    params[2] = gw_admin_value(&call->in[IN_LIMIT]);
    return gw_admin_read(loop, req, &statements[STMT_LIST], params, 3);
}

static int decide(gw_loop_t *loop, h2o_req_t *req, const gw_call_t *call, const char *action, bool pick)
{
    gw_db_param_t params[6] = {gw_admin_org(req, &call->scope),   gw_admin_value(&call->in[IN_ID]),
                               {action, strlen(action), false},   gw_query_null(),
                               gw_admin_actor(req, &call->scope), gw_admin_request_id(&call->scope)};
    if (pick && gw_admin_id_field(req, &call->in[IN_CUSTOMER], "customer_id", &params[3]) != 0)
        return 0;
    return gw_admin_write(loop, req, &statements[STMT_DECIDE], params, 6);
}

int gw_matching_accept(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return decide(loop, req, call, "accept", true);
}

int gw_matching_link(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return decide(loop, req, call, "link", true);
}

int gw_matching_reject(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return decide(loop, req, call, "reject", false);
}

int gw_matching_create_customer(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return decide(loop, req, call, "create", false);
}
