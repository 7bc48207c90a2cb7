/* SPDX-License-Identifier: MIT */
/*
 * customers.c: the admin's customers. Every route is one statement on the loop's async pool calling one function of
 * schema/functions/admin.sql (admin_customers_list, admin_customer_get, _create, _update, _archive), scoped by the
 * admin's organisation: a write is a single statement whose function validates, changes and audits (actor
 * "user:<id>", before and after, the request id) in its one transaction, so nothing of a refused write is stored.
 * Nothing here blocks, so nothing goes to the offload pool. Archiving keeps the customer, its links, invoices and
 * users; it only takes the customer out of matching (schema/0018_admin.sql) and out of the list unless asked for.
 */
#include "customers.h"
#include <string.h>
#include "admin.h"
#include "query.h"
#include "reply.h"

enum { IN_LIMIT, IN_CURSOR, IN_Q, IN_ARCHIVED };
const gw_input_t gw_customers_list_inputs[GW_CUSTOMERS_LIST_NINPUTS] = {
    GW_ADMIN_PAGE_INPUTS,
    [IN_Q] = {"q", GW_IN_QUERY, GW_IN_STRING, .min = 1, .max = 200},
    [IN_ARCHIVED] = {"include_archived", GW_IN_QUERY, GW_IN_BOOL, .def = "false"},
};
enum { IN_ID };
const gw_input_t gw_customers_get_inputs[GW_CUSTOMERS_GET_NINPUTS] = {GW_ADMIN_ID_INPUT};
const gw_input_t gw_customers_archive_inputs[GW_CUSTOMERS_ARCHIVE_NINPUTS] = {GW_ADMIN_ID_INPUT};
enum { IN_NAME, IN_EMAIL, IN_TAX, IN_ACCOUNT };
const gw_input_t gw_customers_create_inputs[GW_CUSTOMERS_CREATE_NINPUTS] = {
    [IN_NAME] = {"name", GW_IN_BODY, GW_IN_STRING, .required = true, .min = 1, .max = 200},
    [IN_EMAIL] = {"email", GW_IN_BODY, GW_IN_STRING, .max = 254},
    [IN_TAX] = {"tax_number", GW_IN_BODY, GW_IN_STRING, .max = 50},
    [IN_ACCOUNT] = {"account_number", GW_IN_BODY, GW_IN_STRING, .max = 50},
};
/* PATCH: the path id, then the same fields, none required; a field sent as null is cleared (name cannot be) */
const gw_input_t gw_customers_update_inputs[GW_CUSTOMERS_UPDATE_NINPUTS] = {
    GW_ADMIN_ID_INPUT,
    {"name", GW_IN_BODY, GW_IN_STRING, .min = 1, .max = 200},
    {"email", GW_IN_BODY, GW_IN_STRING, .max = 254},
    {"tax_number", GW_IN_BODY, GW_IN_STRING, .max = 50},
    {"account_number", GW_IN_BODY, GW_IN_STRING, .max = 50},
    /* the reminders opt-out (docs/collections.md, "Unsubscribe"); null leaves it */
    {"reminders_opt_out", GW_IN_BODY, GW_IN_BOOL},
};

enum { STMT_LIST, STMT_GET, STMT_CREATE, STMT_UPDATE, STMT_ARCHIVE, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    {"admin_customers_list", "SELECT admin_customers_list($1::bigint, $2, $3::boolean, $4::bigint, $5::integer)::text",
     5},
    {"admin_customer_get", "SELECT admin_customer_get($1::bigint, $2::bigint)::text", 2},
    {"admin_customer_create",
     "SELECT result, field, detail, doc::text FROM admin_customer_create($1::bigint, $2, $3, "
     "$4, $5, $6, $7)",
     7},
    {"admin_customer_update",
     "SELECT result, field, detail, doc::text FROM admin_customer_update($1::bigint, $2::bigint, $3::jsonb, $4, $5)",
     5},
    {"admin_customer_archive",
     "SELECT result, field, detail, doc::text FROM admin_customer_archive($1::bigint, $2::bigint, $3, $4)", 4},
};

const gw_module_t gw_customers_module = {
    .name = "customers",
    .statements = statements,
    .nstatements = STMT_MAX,
};

int gw_customers_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[5];
    if (gw_admin_cursor(req, &call->in[IN_CURSOR], &params[3]) != 0)
        return 0;
    params[0] = gw_admin_org(req, &call->scope);
    params[1] = gw_admin_value(&call->in[IN_Q]);
    params[2] = gw_admin_value(&call->in[IN_ARCHIVED]);
    params[4] = gw_admin_value(&call->in[IN_LIMIT]);
    return gw_admin_read(loop, req, &statements[STMT_LIST], params, 5);
}

int gw_customers_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[2] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[IN_ID])};
    return gw_admin_read(loop, req, &statements[STMT_GET], params, 2);
}

int gw_customers_create(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[7] = {gw_admin_org(req, &call->scope),       gw_admin_value(&call->in[IN_NAME]),
                               gw_admin_value(&call->in[IN_EMAIL]),   gw_admin_value(&call->in[IN_TAX]),
                               gw_admin_value(&call->in[IN_ACCOUNT]), gw_admin_actor(req, &call->scope),
                               gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_CREATE], params, 7);
}

int gw_customers_update(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    /* the guard checked every member of the body (declared, typed, in bounds; null allowed): it is the patch */
    char *patch = call->body != NULL ? json_dumps(call->body, JSON_COMPACT) : NULL;
    h2o_iovec_t text = h2o_strdup(&req->pool, patch != NULL ? patch : "{}", SIZE_MAX);
    free(patch);
    gw_db_param_t params[5] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[IN_ID]),
                               (gw_db_param_t){text.base, text.len, false}, gw_admin_actor(req, &call->scope),
                               gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_UPDATE], params, 5);
}

int gw_customers_archive(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[4] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[IN_ID]),
                               gw_admin_actor(req, &call->scope), gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_ARCHIVE], params, 4);
}
