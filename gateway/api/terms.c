/* SPDX-License-Identifier: MIT */
/*
 * terms.c: payment terms, the organisation's default and a customer's override. One statement per route on the
 * loop's async pool (admin_terms_get, admin_terms_put, admin_terms_delete of schema/functions/admin.sql), scoped by
 * the admin's organisation and audited ('terms.set', 'terms.delete'). The guard checks the type (one of Xero's four)
 * and that day is an integer of 0..365; the function checks it against the type (1..31 for OFCURRENTMONTH and
 * OFFOLLOWINGMONTH, a day of the month; 0..365 days for DAYSAFTERBILLDATE and DAYSAFTERBILLMONTH) and answers 400
 * naming day otherwise, writing nothing. Nothing blocks: no offload.
 *
 * The collections routes (docs/collections.md): the organisation's time zone (GET/PUT /v1/admin/timezone; the
 * function checks the name against PostgreSQL's tz database, 'organisation.timezone') and dunning plans
 * (GET/PUT /v1/admin/dunning-plan, the organisation's; GET/PUT/DELETE /v1/admin/customers/{id}/dunning-plan, a
 * customer's override; 'dunning.set', 'dunning.delete'). The guard checks that steps is a JSON array of at most 10;
 * admin_dunning_put checks each step and answers 400 naming its field ("steps[2].offset_days").
 */
#include "terms.h"
#include "admin.h"
#include "query.h"
#include "reply.h"

static const char *const term_types[] = {"DAYSAFTERBILLDATE", "DAYSAFTERBILLMONTH", "OFCURRENTMONTH",
                                         "OFFOLLOWINGMONTH", NULL};
static const char *const methods[] = {"card", "direct_debit", NULL};

#define TERMS_BODY_INPUTS                                                                                              \
    {"type", GW_IN_BODY, GW_IN_ENUM, .required = true, .values = term_types},                                          \
        {"day", GW_IN_BODY, GW_IN_INT, .required = true, .min = 0, .max = 365},                                        \
        {"auto_collect", GW_IN_BODY, GW_IN_BOOL, .def = "false"},                                                      \
    {                                                                                                                  \
        "preferred_method", GW_IN_BODY, GW_IN_ENUM, .values = methods                                                  \
    }

const gw_input_t gw_terms_put_inputs[GW_TERMS_PUT_NINPUTS] = {TERMS_BODY_INPUTS};
const gw_input_t gw_terms_customer_inputs[GW_TERMS_CUSTOMER_NINPUTS] = {GW_ADMIN_ID_INPUT};
const gw_input_t gw_terms_customer_put_inputs[GW_TERMS_CUSTOMER_PUT_NINPUTS] = {GW_ADMIN_ID_INPUT, TERMS_BODY_INPUTS};

const gw_input_t gw_terms_timezone_put_inputs[GW_TERMS_TIMEZONE_PUT_NINPUTS] = {
    {"timezone", GW_IN_BODY, GW_IN_STRING, .required = true, .min = 1, .max = 64}};
const gw_input_t gw_terms_dunning_put_inputs[GW_TERMS_DUNNING_PUT_NINPUTS] = {
    {"steps", GW_IN_BODY, GW_IN_ARRAY, .required = true, .max = 10}};
const gw_input_t gw_terms_dunning_customer_put_inputs[GW_TERMS_DUNNING_CUSTOMER_PUT_NINPUTS] = {
    GW_ADMIN_ID_INPUT, {"steps", GW_IN_BODY, GW_IN_ARRAY, .required = true, .max = 10}};

enum {
    STMT_GET,
    STMT_PUT,
    STMT_DELETE,
    STMT_TZ_GET,
    STMT_TZ_PUT,
    STMT_DUNNING_GET,
    STMT_DUNNING_PUT,
    STMT_DUNNING_DELETE,
    STMT_MAX
};
static const gw_db_statement_t statements[STMT_MAX] = {
    {"admin_terms_get", "SELECT admin_terms_get($1::bigint, $2::bigint)::text", 2},
    {"admin_terms_put",
     "SELECT result, field, detail, doc::text FROM admin_terms_put($1::bigint, $2::bigint, $3, $4::integer, "
     "$5::boolean, $6, $7, $8)",
     8},
    {"admin_terms_delete",
     "SELECT result, field, detail, doc::text FROM admin_terms_delete($1::bigint, $2::bigint, $3, $4)", 4},
    {"terms_timezone_get", "SELECT terms_timezone_get($1::bigint)::text", 1},
    {"terms_timezone_put", "SELECT result, field, detail, doc::text FROM terms_timezone_put($1::bigint, $2, $3, $4)",
     4},
    {"admin_dunning_get", "SELECT admin_dunning_get($1::bigint, $2::bigint)::text", 2},
    {"admin_dunning_put",
     "SELECT result, field, detail, doc::text FROM admin_dunning_put($1::bigint, $2::bigint, $3::jsonb, $4, $5)", 5},
    {"admin_dunning_delete",
     "SELECT result, field, detail, doc::text FROM admin_dunning_delete($1::bigint, $2::bigint, $3, $4)", 4},
};

const gw_module_t gw_terms_module = {
    .name = "terms",
    .statements = statements,
    .nstatements = STMT_MAX,
};

/* customer: the path id's input, or NULL for the organisation's default; body: the index of the first body input */
static int put(gw_loop_t *loop, h2o_req_t *req, const gw_call_t *call, const gw_value_t *customer, size_t body)
{
    gw_db_param_t params[8] = {
        gw_admin_org(req, &call->scope),     customer != NULL ? gw_admin_value(customer) : gw_query_null(),
        gw_admin_value(&call->in[body]),     gw_admin_value(&call->in[body + 1]),
        gw_admin_value(&call->in[body + 2]), gw_admin_value(&call->in[body + 3]),
        gw_admin_actor(req, &call->scope),   gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_PUT], params, 8);
}

int gw_terms_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[2] = {gw_admin_org(req, &call->scope), gw_query_null()};
    return gw_admin_read(loop, req, &statements[STMT_GET], params, 2);
}

int gw_terms_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return put(loop, req, call, NULL, 0);
}

int gw_terms_customer_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[2] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[0])};
    return gw_admin_read(loop, req, &statements[STMT_GET], params, 2);
}

int gw_terms_customer_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return put(loop, req, call, &call->in[0], 1);
}

int gw_terms_customer_delete(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[4] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[0]),
                               gw_admin_actor(req, &call->scope), gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_DELETE], params, 4);
}

int gw_terms_timezone_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[1] = {gw_admin_org(req, &call->scope)};
    return gw_admin_read(loop, req, &statements[STMT_TZ_GET], params, 1);
}

int gw_terms_timezone_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[4] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[0]),
                               gw_admin_actor(req, &call->scope), gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_TZ_PUT], params, 4);
}

/* customer: the path id's input, or NULL for the organisation's plan; steps: the steps input */
static int dunning_put(gw_loop_t *loop, h2o_req_t *req, const gw_call_t *call, const gw_value_t *customer,
                       const gw_value_t *steps)
{
    gw_db_param_t params[5] = {gw_admin_org(req, &call->scope),
                               customer != NULL ? gw_admin_value(customer) : gw_query_null(), gw_admin_value(steps),
                               gw_admin_actor(req, &call->scope), gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_DUNNING_PUT], params, 5);
}

int gw_terms_dunning_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[2] = {gw_admin_org(req, &call->scope), gw_query_null()};
    return gw_admin_read(loop, req, &statements[STMT_DUNNING_GET], params, 2);
}

int gw_terms_dunning_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return dunning_put(loop, req, call, NULL, &call->in[0]);
}

int gw_terms_dunning_customer_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[2] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[0])};
    return gw_admin_read(loop, req, &statements[STMT_DUNNING_GET], params, 2);
}

int gw_terms_dunning_customer_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return dunning_put(loop, req, call, &call->in[0], &call->in[1]);
}

int gw_terms_dunning_customer_delete(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[4] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[0]),
                               gw_admin_actor(req, &call->scope), gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_DUNNING_DELETE], params, 4);
}
