/* SPDX-License-Identifier: MIT */
/*
 * payments.c: GET /v1/payments. One prepared statement on the loop's async pool, scoped in SQL by the caller's
 * organisation and, for a client, its customer: the payments of its customer (payments.customer_id, set when the
 * payment's provider customer was matched) and those that pay one of its invoices (as GET /v1/invoices/{id} shows
 * them), so another customer's payment is simply absent. Payments settled wrote back to Xero itself are not
 * listed (they are the same money as the provider's payment). The page is keyed by the payment's id (a bigserial:
 * newest first), the cursor is its base64url text. Amounts are the ledger's minor units formatted by money.c.
 */
#include "payments_api.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "invoices.h"
#include "money.h"
#include "query.h"
#include "reply.h"

enum { IN_LIMIT, IN_CURSOR };
const gw_input_t gw_payments_list_inputs[GW_PAYMENTS_LIST_NINPUTS] = {
    [IN_LIMIT] = {"limit", GW_IN_QUERY, GW_IN_INT, .min = 1, .max = 100, .def = "25"},
    [IN_CURSOR] = {"cursor", GW_IN_QUERY, GW_IN_CURSOR, .max = 64},
};

enum {
    C_ID,
    C_PROVIDER,
    C_STATUS,
    C_AMOUNT,
    C_RECEIVED,
    C_CURRENCY,
    C_METHOD,
    C_INVOICE,
    C_PAID_ON,
    C_CREATED,
    C_REFUNDS,
    C_DISPUTES
};

enum { STMT_LIST, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    /* $1 organisation, $2 customer (NULL: an admin), $3 the cursor (the last id shown, NULL: the first page),
     * $4 limit */
    {"payments_list",
     "SELECT p.id::text, p.provider::text, p.status, p.amount_minor::text, p.received_minor::text, "
     "upper(p.currency::text), p.method, i.settled_invoice_id, p.paid_on::text, "
     "to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
     "(SELECT coalesce(json_agg(json_build_object('id', r.id::text, 'status', r.status, "
     "  'amount_minor', r.amount_minor::text, 'currency', upper(r.currency::text)) ORDER BY r.id), '[]') "
     "  FROM refunds r WHERE r.organisation_id = p.organisation_id AND r.payment_id = p.id)::text, "
     "(SELECT coalesce(json_agg(json_build_object('id', d.id::text, 'status', d.status, "
     "  'amount_minor', d.amount_minor::text, 'currency', upper(d.currency::text)) ORDER BY d.id), '[]') "
     "  FROM disputes d WHERE d.organisation_id = p.organisation_id AND d.payment_id = p.id)::text "
     "FROM payments p LEFT JOIN xero_invoices i ON i.organisation_id = p.organisation_id "
     "  AND i.tenant_id::text = p.xero_tenant_id AND i.invoice_id = p.xero_invoice_id "
     "  AND ($2::bigint IS NULL OR i.status NOT IN ('DRAFT', 'SUBMITTED', 'DELETED')) "
     "WHERE p.organisation_id = $1::bigint AND NOT p.from_writeback "
     "AND ($2::bigint IS NULL OR p.customer_id = $2::bigint OR EXISTS (SELECT 1 FROM xero_invoices i "
     "WHERE " GW_INVOICE_SCOPE "AND i.tenant_id::text = p.xero_tenant_id AND i.invoice_id = p.xero_invoice_id)) "
     "AND ($3::bigint IS NULL OR p.id < $3::bigint) "
     "ORDER BY p.id DESC LIMIT $4::int",
     4},
};

const gw_module_t gw_payments_api_module = {
    .name = "payments",
    .statements = statements,
    .nstatements = STMT_MAX,
};

static json_t *col(const gw_db_rows_t *rows, size_t r, size_t c)
{
    size_t len;
    const char *v = gw_db_rows_value(rows, r, c, &len);
    return v != NULL ? json_stringn(v, len) : json_null();
}

/* The refunds or disputes of a payment, from the statement's JSON column. */
static json_t *children(const gw_db_rows_t *rows, size_t r, size_t c)
{
    json_t *out = json_array();
    const char *text = gw_db_rows_value(rows, r, c, NULL);
    json_t *src = text != NULL ? json_loads(text, 0, NULL) : NULL, *e;
    size_t k;
    json_array_foreach(src, k, e)
    {
        json_t *o = json_object();
        json_object_set(o, "id", json_object_get(e, "id"));
        json_object_set(o, "status", json_object_get(e, "status"));
        json_object_set_new(o, "amount",
                            gw_invoices_minor_json(json_string_value(json_object_get(e, "amount_minor")),
                                                   json_string_value(json_object_get(e, "currency"))));
        json_object_set(o, "currency", json_object_get(e, "currency"));
        json_array_append_new(out, o);
    }
    json_decref(src);
    return out;
}

static json_t *payment_json(const gw_db_rows_t *rows, size_t r)
{
    const char *currency = gw_db_rows_value(rows, r, C_CURRENCY, NULL);
    json_t *o = json_object();
    json_object_set_new(o, "id", col(rows, r, C_ID));
    json_object_set_new(o, "provider", col(rows, r, C_PROVIDER));
    json_object_set_new(o, "status", col(rows, r, C_STATUS));
    json_object_set_new(o, "currency", col(rows, r, C_CURRENCY));
    json_object_set_new(o, "amount", gw_invoices_minor_json(gw_db_rows_value(rows, r, C_AMOUNT, NULL), currency));
    json_object_set_new(o, "amount_received",
                        gw_invoices_minor_json(gw_db_rows_value(rows, r, C_RECEIVED, NULL), currency));
    json_object_set_new(o, "method", col(rows, r, C_METHOD));
    json_object_set_new(o, "invoice_id", col(rows, r, C_INVOICE));
    json_object_set_new(o, "paid_on", col(rows, r, C_PAID_ON));
    json_object_set_new(o, "created_at", col(rows, r, C_CREATED));
    json_object_set_new(o, "refunds", children(rows, r, C_REFUNDS));
    json_object_set_new(o, "disputes", children(rows, r, C_DISPUTES));
    return o;
}

static void on_rows(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    int64_t limit = *(const int64_t *)data;
    size_t n = gw_db_rows_count(rows), shown = n > (size_t)limit ? (size_t)limit : n;
    json_t *doc = json_object(), *list = json_array();
    for (size_t r = 0; r != shown; ++r)
        json_array_append_new(list, payment_json(rows, r));
    json_object_set_new(doc, "data", list);
    if (n > shown && shown != 0) {
        size_t len;
        const char *id = gw_db_rows_value(rows, shown - 1, C_ID, &len);
        char enc[GW_BASE64_ENCODED_SIZE(32)];
        json_object_set_new(doc, "next_cursor",
                            len <= 32
                                ? json_stringn(enc, gw_base64_encode(id, len, GW_BASE64_URL | GW_BASE64_NOPAD, enc))
                                : json_null());
    } else {
        json_object_set_new(doc, "next_cursor", json_null());
    }
    gw_query_reply(req, doc);
}

/* The id a cursor holds (decimal digits, at most 19) into out; 0 or -1. */
static int read_cursor(h2o_iovec_t cursor, char out[24])
{
    size_t len;
    if (gw_base64_decode(cursor.base, cursor.len, GW_BASE64_URL | GW_BASE64_NOPAD, out, 23, &len) != 0 || len == 0 ||
        len > 19)
        return -1;
    for (size_t i = 0; i != len; ++i)
        if (out[i] < '0' || out[i] > '9')
            return -1;
    out[len] = '\0';
    return 0;
}

int gw_payments_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[4];
    gw_query_scope(req, &call->scope, params);
    params[2] = gw_query_null();
    if (call->in[IN_CURSOR].present) {
        char *id = h2o_mem_alloc_pool(&req->pool, 24);
        if (read_cursor(call->in[IN_CURSOR].str, id) != 0) {
            gw_err_t err = GW_ERR_INIT;
            gw_err_set(&err, gw_err_parameter_invalid, 400, "'cursor' is not a cursor settled issued.");
            gw_reply_err_field(req, &err, "cursor");
            return 0;
        }
        params[2] = (gw_db_param_t){id, strlen(id), false};
    }
    int64_t *limit = h2o_mem_alloc_pool(&req->pool, sizeof(*limit));
    *limit = call->in[IN_LIMIT].i;
    params[3] = gw_query_int(req, *limit + 1); /* one more: is there a next page? */
    return gw_query(loop, req, &statements[STMT_LIST], params, 4, on_rows, limit);
}
