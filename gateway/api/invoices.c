/* SPDX-License-Identifier: MIT */
/*
 * invoices.c: the portal's invoice routes. Each is one prepared statement on the loop's async pool, scoped in SQL
 * by the caller's organisation and, for a client, its customer (through xero_contacts.customer_id), so an invoice
 * outside the scope is simply not found (404, never 403). Amounts leave as decimal strings made by money.c from
 * PostgreSQL's exact numeric text or the ledger's minor units: no double ever holds one.
 */
#include "invoices.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "money.h"
#include "query.h"
#include "reply.h"

static const char *const xero_statuses[] = {"DRAFT", "SUBMITTED", "AUTHORISED", "PAID", "VOIDED", "DELETED", NULL};
static const char *const payment_states[] = {"unpaid",
                                             "partially_paid",
                                             "paid",
                                             "overpaid",
                                             "pending",
                                             "refunded",
                                             "partially_refunded",
                                             "charged_back",
                                             "disputed",
                                             "not_reconcilable",
                                             "unreconciled",
                                             "voided",
                                             NULL};

static const char *const sorts[] = {"date", "due_date", "number", NULL};
enum { SORT_DATE, SORT_DUE, SORT_NUMBER, NSORTS };

enum { IN_LIMIT, IN_CURSOR, IN_STATUS, IN_PAYMENT_STATE, IN_DUE_BEFORE, IN_DUE_AFTER, IN_SORT };
const gw_input_t gw_invoices_list_inputs[GW_INVOICES_LIST_NINPUTS] = {
    [IN_LIMIT] = {"limit", GW_IN_QUERY, GW_IN_INT, .min = 1, .max = 100, .def = "25"},
    [IN_CURSOR] = {"cursor", GW_IN_QUERY, GW_IN_CURSOR, .max = 256},
    [IN_STATUS] = {"status", GW_IN_QUERY, GW_IN_ENUM, .values = xero_statuses},
    [IN_PAYMENT_STATE] = {"payment_state", GW_IN_QUERY, GW_IN_ENUM, .values = payment_states},
    [IN_DUE_BEFORE] = {"due_before", GW_IN_QUERY, GW_IN_DATE},
    [IN_DUE_AFTER] = {"due_after", GW_IN_QUERY, GW_IN_DATE},
    [IN_SORT] = {"sort", GW_IN_QUERY, GW_IN_ENUM, .values = sorts, .def = "date"},
};
enum { IN_ID };
const gw_input_t gw_invoices_get_inputs[GW_INVOICES_GET_NINPUTS] = {
    [IN_ID] = {"id", GW_IN_PATH, GW_IN_STRING, .required = true, .min = 1, .max = 64},
};

/* The columns every statement returns, in this order; then the list's sort key (C_SORT), or the detail's lines and
 * payments. */
#define INVOICE_COLUMNS                                                                                                \
    "i.settled_invoice_id, i.invoice_id::text, i.invoice_number, i.status, upper(i.currency_code), i.date::text, "     \
    "i.due_date::text, i.total::text, i.amount_credited::text, i.amount_paid::text, i.amount_due::text, "              \
    "CASE WHEN i.status = 'VOIDED' THEN 'voided' ELSE coalesce(s.state, 'unreconciled') END, "                         \
    "s.net_paid_minor::text, s.outstanding_minor::text, s.currency"
enum {
    C_ID,
    C_XERO_ID,
    C_NUMBER,
    C_STATUS,
    C_CURRENCY,
    C_DATE,
    C_DUE,
    C_TOTAL,
    C_CREDITED,
    C_XPAID,
    C_XDUE,
    C_STATE,
    C_NET_PAID,
    C_OUTSTANDING,
    C_STATE_CURRENCY,
    C_SORT,
    C_LINES,
    C_PAYMENTS
};

#define INVOICE_SCOPE GW_INVOICE_SCOPE

/* The list's filters: $3 status, $4 payment state, $5 due before, $6 due after. */
#define LIST_FILTERS                                                                                                   \
    "AND ($3::text IS NULL OR i.status = $3) "                                                                         \
    "AND ($4::text IS NULL OR CASE WHEN i.status = 'VOIDED' THEN 'voided' ELSE coalesce(s.state, 'unreconciled') "     \
    "END = $4) "                                                                                                       \
    "AND ($5::date IS NULL OR i.due_date < $5::date) AND ($6::date IS NULL OR i.due_date > $6::date) "

/* The keyset of one sort order: KEY (with the settled id as the tie-break) in DIR, the page after ($7, $8) of the
 * cursor ($7 cast to TYPE), $9 rows. */
#define LIST_KEYSET(KEY, CMP, DIR, TYPE)                                                                               \
    "AND ($7::text IS NULL OR ((" KEY "), i.settled_invoice_id) " CMP " ($7::" TYPE ", $8::text)) "                    \
    "ORDER BY (" KEY ") " DIR ", i.settled_invoice_id " DIR " LIMIT $9::int"

/* A client's list and an admin's are two statements: one statement with "$2 IS NULL OR <the customer's contacts>"
 * makes PostgreSQL plan for the organisation and scan all its invoices to keep one customer's (the portal benchmark
 * measured 18 lists a second). A client's starts from its customer's contacts (xero_contacts_customer_idx, then
 * xero_invoices_contact_idx); an admin's walks xero_invoices_list_idx (0019) in the page's order (by date; the
 * other orders sort the organisation's invoices). */
#define LIST_CLIENT(KEY)                                                                                               \
    "SELECT " INVOICE_COLUMNS ", (" KEY ")::text FROM xero_contacts c "                                                \
    "JOIN xero_invoices i ON i.organisation_id = c.organisation_id AND i.tenant_id = c.tenant_id "                     \
    "  AND i.contact_id = c.contact_id "                                                                               \
    "LEFT JOIN invoice_payment_states s ON s.organisation_id = i.organisation_id AND s.tenant_id = i.tenant_id "       \
    "  AND s.invoice_id = i.invoice_id "                                                                               \
    "WHERE c.organisation_id = $1::bigint AND c.customer_id = $2::bigint AND i.type = 'ACCREC' "                       \
    "AND i.status NOT IN ('DRAFT', 'SUBMITTED', 'DELETED') " LIST_FILTERS
#define LIST_ADMIN(KEY)                                                                                                \
    "SELECT " INVOICE_COLUMNS ", (" KEY ")::text FROM xero_invoices i "                                                \
    "LEFT JOIN invoice_payment_states s USING (organisation_id, tenant_id, invoice_id) "                               \
    "WHERE i.organisation_id = $1::bigint AND $2::bigint IS NULL AND i.type = 'ACCREC' " LIST_FILTERS

/* The sort orders: newest first (the default), due soonest first (no due date last), by number. */
#define KEY_DATE "coalesce(i.date, '0001-01-01'::date)"
#define KEY_DUE "coalesce(i.due_date, '9999-12-31'::date)"
#define KEY_NUMBER "coalesce(i.invoice_number, '')"
#define KEYSET_DATE LIST_KEYSET(KEY_DATE, "<", "DESC", "date")
#define KEYSET_DUE LIST_KEYSET(KEY_DUE, ">", "ASC", "date")
#define KEYSET_NUMBER LIST_KEYSET(KEY_NUMBER, ">", "ASC", "text")

/* statements[2 * sort + (admin ? 1 : 0)] lists; then the detail */
enum { STMT_GET = 2 * NSORTS, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    {"invoices_list_client_date", LIST_CLIENT(KEY_DATE) KEYSET_DATE, 9},
    {"invoices_list_admin_date", LIST_ADMIN(KEY_DATE) KEYSET_DATE, 9},
    {"invoices_list_client_due", LIST_CLIENT(KEY_DUE) KEYSET_DUE, 9},
    {"invoices_list_admin_due", LIST_ADMIN(KEY_DUE) KEYSET_DUE, 9},
    {"invoices_list_client_number", LIST_CLIENT(KEY_NUMBER) KEYSET_NUMBER, 9},
    {"invoices_list_admin_number", LIST_ADMIN(KEY_NUMBER) KEYSET_NUMBER, 9},
    /* $3 the settled invoice id */
    {"invoices_get",
     "SELECT " INVOICE_COLUMNS ", NULL, "
     "(SELECT coalesce(json_agg(json_build_object('position', l.position, 'description', l.description, "
     "  'quantity', l.quantity::text, 'unit_amount', l.unit_amount::text, 'line_amount', l.line_amount::text, "
     "  'tax_amount', l.tax_amount::text, 'account_code', l.account_code, 'item_code', l.item_code) "
     "  ORDER BY l.position), '[]') FROM xero_invoice_lines l WHERE l.organisation_id = i.organisation_id "
     "  AND l.tenant_id = i.tenant_id AND l.invoice_id = i.invoice_id)::text, "
     "(SELECT coalesce(json_agg(json_build_object('id', p.id::text, 'provider', p.provider::text, 'status', p.status, "
     "  'amount_minor', p.amount_minor::text, 'currency', p.currency::text, 'method', p.method, 'created_at', "
     "  to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) ORDER BY p.created_at, p.id), "
     "  '[]') FROM payments p WHERE p.organisation_id = i.organisation_id AND p.xero_tenant_id = i.tenant_id::text "
     "  AND p.xero_invoice_id = i.invoice_id AND NOT p.from_writeback)::text "
     "FROM xero_invoices i LEFT JOIN invoice_payment_states s USING (organisation_id, tenant_id, invoice_id) "
     "WHERE " INVOICE_SCOPE "AND i.settled_invoice_id = $3",
     3},
};

const gw_module_t gw_invoices_module = {
    .name = "invoices",
    .statements = statements,
    .nstatements = STMT_MAX,
};

/* ---- money ---- */

int gw_invoices_money(const char *numeric, size_t len, const char *currency, char *out, size_t size)
{
    int e = currency != NULL ? gw_currency_exponent(currency) : -1;
    int64_t minor;
    if (e < 0 || numeric == NULL || gw_money_parse(numeric, len, e, &minor) != 0)
        return -1;
    return gw_money_format(minor, e, out, size);
}

/* A JSON string of an amount, or null when it is unknown or not exact in the currency. */
static json_t *money_json(const char *numeric, size_t len, const char *currency)
{
    char buf[48];
    int n = gw_invoices_money(numeric, len, currency, buf, sizeof(buf));
    return n < 0 ? json_null() : json_stringn(buf, (size_t)n);
}

json_t *gw_invoices_minor_json(const char *minor, const char *currency)
{
    int e = currency != NULL ? gw_currency_exponent(currency) : -1;
    char *end, buf[48];
    long long v = minor != NULL ? strtoll(minor, &end, 10) : 0;
    if (e < 0 || minor == NULL || *end != '\0' || gw_money_format((int64_t)v, e, buf, sizeof(buf)) < 0)
        return json_null();
    return json_string(buf);
}

/* A unit price may carry up to 4 decimals (Xero's unitdp=4): the currency's decimals, more only when needed. */
static json_t *unit_json(const char *numeric, const char *currency)
{
    int e = currency != NULL ? gw_currency_exponent(currency) : -1;
    int64_t minor;
    char buf[48];
    if (e < 0 || numeric == NULL || gw_money_parse(numeric, strlen(numeric), e > 4 ? e : 4, &minor) != 0 ||
        gw_money_format(minor, e > 4 ? e : 4, buf, sizeof(buf)) < 0)
        return json_null();
    /* drop trailing zeros beyond the currency's own decimals */
    char *dot = strchr(buf, '.');
    if (dot != NULL) {
        size_t keep = (size_t)(dot - buf) + (e > 0 ? (size_t)e + 1 : 0), len = strlen(buf);
        while (len > keep && buf[len - 1] == '0')
            buf[--len] = '\0';
        if (len != 0 && buf[len - 1] == '.')
            buf[--len] = '\0';
    }
    return json_string(buf);
}

/* A quantity: numeric text without trailing zeros ("2.5000" -> "2.5"), or null. */
static json_t *quantity_json(const char *numeric)
{
    if (numeric == NULL)
        return json_null();
    char buf[48];
    snprintf(buf, sizeof(buf), "%s", numeric);
    if (strchr(buf, '.') != NULL) {
        size_t len = strlen(buf);
        while (len != 0 && buf[len - 1] == '0')
            buf[--len] = '\0';
        if (len != 0 && buf[len - 1] == '.')
            buf[--len] = '\0';
    }
    return json_string(buf);
}

static json_t *text_json(const gw_db_rows_t *rows, size_t r, int c)
{
    size_t len;
    const char *v = gw_db_rows_value(rows, r, (size_t)c, &len);
    return v != NULL ? json_stringn(v, len) : json_null();
}

static json_t *col_money(const gw_db_rows_t *rows, size_t r, int c, const char *currency)
{
    size_t len;
    const char *v = gw_db_rows_value(rows, r, (size_t)c, &len);
    return v != NULL ? money_json(v, len, currency) : json_null();
}

/* One invoice of rows (row r) as the API shows it. */
static json_t *invoice_json(const gw_db_rows_t *rows, size_t r)
{
    const char *currency = gw_db_rows_value(rows, r, C_CURRENCY, NULL);
    const char *state_currency = gw_db_rows_value(rows, r, C_STATE_CURRENCY, NULL);
    json_t *o = json_object();
    json_object_set_new(o, "id", text_json(rows, r, C_ID));
    json_object_set_new(o, "xero_invoice_id", text_json(rows, r, C_XERO_ID));
    json_object_set_new(o, "number", text_json(rows, r, C_NUMBER));
    json_object_set_new(o, "status", text_json(rows, r, C_STATUS));
    json_object_set_new(o, "payment_state", text_json(rows, r, C_STATE));
    json_object_set_new(o, "currency", text_json(rows, r, C_CURRENCY));
    json_object_set_new(o, "date", text_json(rows, r, C_DATE));
    json_object_set_new(o, "due_date", text_json(rows, r, C_DUE));
    json_object_set_new(o, "total", col_money(rows, r, C_TOTAL, currency));
    json_object_set_new(o, "amount_credited", col_money(rows, r, C_CREDITED, currency));
    /* paid and outstanding: reconciliation's, from the ledger, once the invoice is reconciled; Xero's until then */
    const char *net = gw_db_rows_value(rows, r, C_NET_PAID, NULL),
               *out = gw_db_rows_value(rows, r, C_OUTSTANDING, NULL);
    json_object_set_new(o, "amount_paid",
                        net != NULL ? gw_invoices_minor_json(net, state_currency)
                                    : col_money(rows, r, C_XPAID, currency));
    json_object_set_new(o, "amount_outstanding",
                        out != NULL ? gw_invoices_minor_json(out, state_currency)
                                    : col_money(rows, r, C_XDUE, currency));
    return o;
}

static json_t *json_member_text(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key)) != NULL ? json_string(json_string_value(json_object_get(o, key)))
                                                              : json_null();
}

/* The detail's lines and payments, from the statement's JSON columns. */
static void add_detail(json_t *o, const gw_db_rows_t *rows, const char *currency)
{
    json_t *lines = json_array(), *payments = json_array();
    const char *text = gw_db_rows_value(rows, 0, C_LINES, NULL);
    json_t *src = text != NULL ? json_loads(text, 0, NULL) : NULL;
    size_t k;
    json_t *l;
    json_array_foreach(src, k, l)
    {
        json_t *line = json_object();
        json_object_set(line, "position", json_object_get(l, "position"));
        json_object_set_new(line, "description", json_member_text(l, "description"));
        json_object_set_new(line, "quantity", quantity_json(json_string_value(json_object_get(l, "quantity"))));
        json_object_set_new(line, "unit_amount",
                            unit_json(json_string_value(json_object_get(l, "unit_amount")), currency));
        const char *amounts[] = {"line_amount", "tax_amount"};
        for (size_t a = 0; a != 2; ++a) {
            const char *v = json_string_value(json_object_get(l, amounts[a]));
            json_object_set_new(line, amounts[a], v != NULL ? money_json(v, strlen(v), currency) : json_null());
        }
        json_object_set_new(line, "account_code", json_member_text(l, "account_code"));
        json_object_set_new(line, "item_code", json_member_text(l, "item_code"));
        json_array_append_new(lines, line);
    }
    json_decref(src);
    text = gw_db_rows_value(rows, 0, C_PAYMENTS, NULL);
    src = text != NULL ? json_loads(text, 0, NULL) : NULL;
    json_array_foreach(src, k, l)
    {
        json_t *p = json_object();
        const char *pcur = json_string_value(json_object_get(l, "currency"));
        json_object_set_new(p, "id", json_member_text(l, "id"));
        json_object_set_new(p, "provider", json_member_text(l, "provider"));
        json_object_set_new(p, "status", json_member_text(l, "status"));
        json_object_set_new(p, "amount",
                            gw_invoices_minor_json(json_string_value(json_object_get(l, "amount_minor")), pcur));
        json_object_set_new(p, "currency", json_member_text(l, "currency"));
        json_object_set_new(p, "method", json_member_text(l, "method"));
        json_object_set_new(p, "created_at", json_member_text(l, "created_at"));
        json_array_append_new(payments, p);
    }
    json_decref(src);
    json_object_set_new(o, "lines", lines);
    json_object_set_new(o, "payments", payments);
}

/* ---- cursors: base64url of "<sort>:<key>:<settled id>" of the last invoice of a page ---- */

static const char sort_tag[NSORTS] = {'d', 'u', 'n'};

static json_t *make_cursor(const gw_db_rows_t *rows, size_t r, int sort)
{
    char plain[240], enc[GW_BASE64_ENCODED_SIZE(240)];
    int n = snprintf(plain, sizeof(plain), "%c:%s:%s", sort_tag[sort], gw_db_rows_value(rows, r, C_SORT, NULL),
                     gw_db_rows_value(rows, r, C_ID, NULL));
    if (n < 0 || (size_t)n >= sizeof(plain))
        return json_null();
    size_t len = gw_base64_encode(plain, (size_t)n, GW_BASE64_URL | GW_BASE64_NOPAD, enc);
    return json_stringn(enc, len);
}

static bool is_date(const char *s, size_t len)
{
    if (len != 10)
        return false;
    for (size_t i = 0; i != 10; ++i)
        if (i == 4 || i == 7 ? s[i] != '-' : (s[i] < '0' || s[i] > '9'))
            return false;
    return true;
}

/* Splits a cursor of sort order sort into its key (out 200 bytes) and id (out 100 bytes); returns 0, or -1 for
 * anything settled did not issue for this order (another order's cursor included). */
static int read_cursor(h2o_iovec_t cursor, int sort, char key[200], char id[100])
{
    char plain[320];
    size_t len;
    if (gw_base64_decode(cursor.base, cursor.len, GW_BASE64_URL | GW_BASE64_NOPAD, plain, sizeof(plain) - 1, &len) !=
            0 ||
        len < 4 || plain[0] != sort_tag[sort] || plain[1] != ':')
        return -1;
    plain[len] = '\0';
    const char *last = strrchr(plain + 2, ':'); /* ids hold no ':'; an invoice number may */
    if (last == NULL || memchr(plain, '\0', len) != NULL)
        return -1;
    size_t klen = (size_t)(last - (plain + 2)), ilen = len - (size_t)(last + 1 - plain);
    if (klen >= 200 || ilen == 0 || ilen >= 100 || (sort != SORT_NUMBER && !is_date(plain + 2, klen)))
        return -1;
    for (const char *p = last + 1; *p != '\0'; ++p)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-'))
            return -1;
    memcpy(key, plain + 2, klen);
    key[klen] = '\0';
    memcpy(id, last + 1, ilen + 1);
    return 0;
}

/* ---- the requests ---- */

static void on_list_rows(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    const int64_t *page = data; /* the limit, the sort order */
    int64_t limit = page[0];
    size_t n = gw_db_rows_count(rows), shown = n > (size_t)limit ? (size_t)limit : n;
    json_t *doc = json_object(), *list = json_array();
    for (size_t r = 0; r != shown; ++r)
        json_array_append_new(list, invoice_json(rows, r));
    json_object_set_new(doc, "data", list);
    json_object_set_new(doc, "next_cursor",
                        n > shown && shown != 0 ? make_cursor(rows, shown - 1, (int)page[1]) : json_null());
    gw_query_reply(req, doc);
}

static void on_get_rows(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    if (gw_db_rows_count(rows) == 0) {
        gw_reply_problem(req, 404, gw_err_not_found, NULL);
        return;
    }
    json_t *doc = invoice_json(rows, 0);
    add_detail(doc, rows, gw_db_rows_value(rows, 0, C_CURRENCY, NULL));
    gw_query_reply(req, doc);
}

static gw_db_param_t value_param(const gw_value_t *v)
{
    return v->present ? (gw_db_param_t){v->str.base, v->str.len, false} : gw_query_null();
}

int gw_invoices_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[9];
    gw_query_scope(req, &call->scope, params);
    params[2] = value_param(&call->in[IN_STATUS]);
    params[3] = value_param(&call->in[IN_PAYMENT_STATE]);
    params[4] = value_param(&call->in[IN_DUE_BEFORE]);
    params[5] = value_param(&call->in[IN_DUE_AFTER]);
    params[6] = params[7] = gw_query_null();
    int sort = (int)call->in[IN_SORT].i;
    if (call->in[IN_CURSOR].present) {
        char *key = h2o_mem_alloc_pool(&req->pool, 200), *id = h2o_mem_alloc_pool(&req->pool, 100);
        if (read_cursor(call->in[IN_CURSOR].str, sort, key, id) != 0) {
            gw_err_t err = GW_ERR_INIT;
            gw_err_set(&err, gw_err_parameter_invalid, 400, "'cursor' is not a cursor settled issued.");
            gw_reply_err_field(req, &err, "cursor");
            return 0;
        }
        params[6] = (gw_db_param_t){key, strlen(key), false};
        params[7] = (gw_db_param_t){id, strlen(id), false};
    }
    int64_t *page = h2o_mem_alloc_pool(&req->pool, 2 * sizeof(*page));
    page[0] = call->in[IN_LIMIT].i;
    page[1] = sort;
    params[8] = gw_query_int(req, page[0] + 1); /* one more: is there a next page? */
    const gw_db_statement_t *st = &statements[2 * sort + (call->scope.role == GW_ROLE_CLIENT ? 0 : 1)];
    return gw_query(loop, req, st, params, 9, on_list_rows, page);
}

int gw_invoices_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[3];
    gw_query_scope(req, &call->scope, params);
    params[2] = value_param(&call->in[IN_ID]);
    return gw_query(loop, req, &statements[STMT_GET], params, 3, on_get_rows, NULL);
}
