/* SPDX-License-Identifier: MIT */
/*
 * collections.c: the admins' automatic-collection routes (collections.h). One statement each on the loop's async
 * pool, scoped by the admin's organisation: collect_pause_set (audited 'collection.pause', 'collection.unpause';
 * another organisation's customer or invoice is 404) and collect_invoice_get (schema/functions/collections.sql),
 * whose attempts' minor units are answered as decimal strings of the currency's exponent (money.c); and the
 * invoice's whole timeline (invoice_timeline, functions/timeline.sql: the same document with its dunning steps, next
 * step and messages).
 */
#include "collections.h"
#include <jansson.h>
#include <string.h>
#include "admin.h"
#include "invoices.h"
#include "query.h"
#include "reply.h"

#define INVOICE_ID_INPUT                                                                                               \
    {                                                                                                                  \
        "id", GW_IN_PATH, GW_IN_STRING, .required = true, .min = 1, .max = 64                                          \
    }
#define REASON_INPUT                                                                                                   \
    {                                                                                                                  \
        "reason", GW_IN_BODY, GW_IN_STRING, .required = true, .min = 1, .max = 500                                     \
    }

const gw_input_t gw_collections_customer_pause_inputs[GW_COLLECTIONS_CUSTOMER_PAUSE_NINPUTS] = {GW_ADMIN_ID_INPUT,
                                                                                                REASON_INPUT};
const gw_input_t gw_collections_customer_inputs[GW_COLLECTIONS_CUSTOMER_NINPUTS] = {GW_ADMIN_ID_INPUT};
const gw_input_t gw_collections_invoice_pause_inputs[GW_COLLECTIONS_INVOICE_PAUSE_NINPUTS] = {INVOICE_ID_INPUT,
                                                                                              REASON_INPUT};
const gw_input_t gw_collections_invoice_inputs[GW_COLLECTIONS_INVOICE_NINPUTS] = {INVOICE_ID_INPUT};

enum { STMT_PAUSE, STMT_GET, STMT_TIMELINE, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    {"collect_pause_set",
     "SELECT result, field, detail, doc::text FROM collect_pause_set($1::bigint, $2::bigint, $3, $4::boolean, $5, $6,"
     " $7)",
     7},
    {"collect_invoice_get", "SELECT collect_invoice_get($1::bigint, $2)::text", 2},
    {"invoice_timeline", "SELECT invoice_timeline($1::bigint, $2, now())::text", 2},
};

const gw_module_t gw_collections_module = {
    .name = "collections",
    .statements = statements,
    .nstatements = STMT_MAX,
};

static int set_pause(gw_loop_t *loop, h2o_req_t *req, const gw_call_t *call, bool customer, bool on)
{
    static const gw_db_param_t yes = {"t", 1, false}, no = {"f", 1, false};
    gw_db_param_t params[7] = {gw_admin_org(req, &call->scope),
                               customer ? gw_admin_value(&call->in[0]) : gw_query_null(),
                               customer ? gw_query_null() : gw_admin_value(&call->in[0]),
                               on ? yes : no,
                               on ? gw_admin_value(&call->in[1]) : gw_query_null(),
                               gw_admin_actor(req, &call->scope),
                               gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_PAUSE], params, 7);
}

int gw_collections_customer_pause(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return set_pause(loop, req, call, true, true);
}

int gw_collections_customer_unpause(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return set_pause(loop, req, call, true, false);
}

int gw_collections_invoice_pause(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return set_pause(loop, req, call, false, true);
}

int gw_collections_invoice_unpause(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return set_pause(loop, req, call, false, false);
}

/* Each attempt's amount_minor (minor units of its currency) becomes amount, the exact decimal string. */
static void on_timeline(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    size_t len;
    const char *text = gw_db_rows_count(rows) != 0 ? gw_db_rows_value(rows, 0, 0, &len) : NULL;
    json_t *doc = text != NULL ? json_loadb(text, len, 0, NULL) : NULL;
    if (doc == NULL) {
        gw_reply_problem(req, text == NULL ? 404 : 500, text == NULL ? gw_err_not_found : gw_err_internal, NULL);
        return;
    }
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(doc, "attempts"), i, a)
    {
        json_object_set_new(a, "amount",
                            gw_invoices_minor_json(json_string_value(json_object_get(a, "amount_minor")),
                                                   json_string_value(json_object_get(a, "currency"))));
        json_object_del(a, "amount_minor");
    }
    gw_query_reply(req, doc);
}

int gw_collections_invoice_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[2] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[0])};
    return gw_query(loop, req, &statements[STMT_GET], params, 2, on_timeline, NULL);
}

int gw_collections_invoice_timeline(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[2] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[0])};
    return gw_query(loop, req, &statements[STMT_TIMELINE], params, 2, on_timeline, NULL);
}
