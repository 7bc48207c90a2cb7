/* SPDX-License-Identifier: MIT */
/*
 * invoices.c: the portal's invoice routes. Each is one prepared statement on the loop's async pool, scoped in SQL
 * by the caller's organisation and, for a client, its customer (through xero_contacts.customer_id), so an invoice
 * outside the scope is simply not found (404, never 403). Amounts leave as decimal strings made by money.c from
 * PostgreSQL's exact numeric text or the ledger's minor units: no double ever holds one.
 */
#include "invoices.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "jsonw.h"
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

/* The columns every statement returns, in this order; then the list's sort key (C_SORT), or the detail's row kind. */
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
};
/* The detail's rows: the invoice's (kind '0', the columns above), then its lines ('1') and payments ('2') in the
 * same first columns, each row's kind in column D_KIND (where a list has its sort key). */
enum { D_KIND = C_SORT };
enum { D_POSITION, D_DESCRIPTION, D_QUANTITY, D_UNIT, D_LINE_AMOUNT, D_TAX_AMOUNT, D_ACCOUNT_CODE, D_ITEM_CODE };
enum { D_PAY_ID, D_PAY_PROVIDER, D_PAY_STATUS, D_PAY_MINOR, D_PAY_CURRENCY, D_PAY_METHOD, D_PAY_CREATED };

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
    /* $3 the settled invoice id. One row per invoice, line and payment, as text (no JSON to parse on the loop). */
    {"invoices_get",
     "WITH inv (o, t, x, c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14) AS ("
     "  SELECT i.organisation_id, i.tenant_id, i.invoice_id, " INVOICE_COLUMNS " FROM xero_invoices i "
     "  LEFT JOIN invoice_payment_states s USING (organisation_id, tenant_id, invoice_id) "
     "  WHERE " INVOICE_SCOPE "AND i.settled_invoice_id = $3) "
     "SELECT c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14::text, '0', 0::bigint FROM inv "
     "UNION ALL "
     "SELECT l.position::text, l.description, l.quantity::text, l.unit_amount::text, l.line_amount::text, "
     "  l.tax_amount::text, l.account_code, l.item_code, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '1', "
     "  l.position::bigint FROM inv JOIN xero_invoice_lines l ON l.organisation_id = inv.o AND l.tenant_id = inv.t "
     "  AND l.invoice_id = inv.x "
     "UNION ALL "
     "SELECT p.id::text, p.provider::text, p.status, p.amount_minor::text, p.currency::text, p.method, "
     "  to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), NULL, NULL, NULL, NULL, NULL, "
     "  NULL, NULL, NULL, '2', row_number() OVER (ORDER BY p.created_at, p.id) FROM inv "
     "  JOIN payments p ON p.organisation_id = inv.o AND p.xero_tenant_id = inv.t::text AND p.xero_invoice_id = inv.x "
     "  AND NOT p.from_writeback "
     "ORDER BY 16, 17",
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

/* The ledger's minor units (decimal text) as the currency's decimal into buf; the length, or -1 when unknown. */
static int minor_text(const char *minor, const char *currency, char *buf, size_t size)
{
    int e = currency != NULL ? gw_currency_exponent(currency) : -1;
    char *end;
    if (e < 0 || minor == NULL)
        return -1;
    errno = 0;
    long long v = strtoll(minor, &end, 10);
    if (end == minor || *end != '\0' || errno != 0)
        return -1;
    return gw_money_format((int64_t)v, e, buf, size);
}

json_t *gw_invoices_minor_json(const char *minor, const char *currency)
{
    char buf[48];
    int n = minor_text(minor, currency, buf, sizeof(buf));
    return n < 0 ? json_null() : json_stringn(buf, (size_t)n);
}

/* Drops the zeros after the decimal point beyond keep decimals ("2.5000" -> "2.5" with keep 0), and the point when
 * nothing follows it. Returns the new length. */
static size_t trim_decimals(char *buf, size_t len, size_t keep)
{
    char *dot = memchr(buf, '.', len);
    if (dot == NULL)
        return len;
    size_t min = (size_t)(dot - buf) + (keep > 0 ? keep + 1 : 0);
    while (len > min && buf[len - 1] == '0')
        --len;
    if (len != 0 && buf[len - 1] == '.')
        --len;
    buf[len] = '\0';
    return len;
}

/* A unit price may carry up to 4 decimals (Xero's unitdp=4): the currency's decimals, more only when needed. */
static int unit_text(const char *numeric, size_t len, const char *currency, char *buf, size_t size)
{
    int e = currency != NULL ? gw_currency_exponent(currency) : -1, dp = e > 4 ? e : 4;
    int64_t minor;
    int n;
    if (e < 0 || numeric == NULL || gw_money_parse(numeric, len, dp, &minor) != 0 ||
        (n = gw_money_format(minor, dp, buf, size)) < 0)
        return -1;
    return (int)trim_decimals(buf, (size_t)n, (size_t)e);
}

/* A quantity: numeric text without trailing zeros ("2.5000" -> "2.5"). */
static int quantity_text(const char *numeric, size_t len, char *buf, size_t size)
{
    if (numeric == NULL || len >= size)
        return -1;
    memcpy(buf, numeric, len);
    buf[len] = '\0';
    return (int)trim_decimals(buf, len, 0);
}

/* Writes key: the text of column c of row r (null when NULL). */
static void put_text(gw_jsonw_t *w, const char *key, const gw_db_rows_t *rows, size_t r, int c)
{
    size_t len;
    const char *v = gw_db_rows_value(rows, r, (size_t)c, &len);
    gw_jsonw_member(w, key, v, len);
}

/* Writes key: a formatted amount of n bytes in buf, or null when n < 0 (unknown, or not exact in its currency). */
static void put_formatted(gw_jsonw_t *w, const char *key, const char *buf, int n)
{
    gw_jsonw_member(w, key, n < 0 ? NULL : buf, n < 0 ? 0 : (size_t)n);
}

/* Writes key: column c of row r, an exact numeric, as an amount of currency. */
static void put_money(gw_jsonw_t *w, const char *key, const gw_db_rows_t *rows, size_t r, int c, const char *currency)
{
    size_t len;
    char buf[48];
    const char *v = gw_db_rows_value(rows, r, (size_t)c, &len);
    put_formatted(w, key, buf, v != NULL ? gw_invoices_money(v, len, currency, buf, sizeof(buf)) : -1);
}

/* One invoice of rows (row r) as the API shows it, as the members of the object open in w. */
static void put_invoice(gw_jsonw_t *w, const gw_db_rows_t *rows, size_t r)
{
    const char *currency = gw_db_rows_value(rows, r, C_CURRENCY, NULL);
    const char *state_currency = gw_db_rows_value(rows, r, C_STATE_CURRENCY, NULL);
    put_text(w, "id", rows, r, C_ID);
    put_text(w, "xero_invoice_id", rows, r, C_XERO_ID);
    put_text(w, "number", rows, r, C_NUMBER);
    put_text(w, "status", rows, r, C_STATUS);
    put_text(w, "payment_state", rows, r, C_STATE);
    put_text(w, "currency", rows, r, C_CURRENCY);
    put_text(w, "date", rows, r, C_DATE);
    put_text(w, "due_date", rows, r, C_DUE);
    put_money(w, "total", rows, r, C_TOTAL, currency);
    put_money(w, "amount_credited", rows, r, C_CREDITED, currency);
    /* paid and outstanding: reconciliation's, from the ledger, once the invoice is reconciled; Xero's until then */
    const char *net = gw_db_rows_value(rows, r, C_NET_PAID, NULL),
               *out = gw_db_rows_value(rows, r, C_OUTSTANDING, NULL);
    char buf[48];
    if (net != NULL)
        put_formatted(w, "amount_paid", buf, minor_text(net, state_currency, buf, sizeof(buf)));
    else
        put_money(w, "amount_paid", rows, r, C_XPAID, currency);
    if (out != NULL)
        put_formatted(w, "amount_outstanding", buf, minor_text(out, state_currency, buf, sizeof(buf)));
    else
        put_money(w, "amount_outstanding", rows, r, C_XDUE, currency);
}

/* The detail's lines (rows of kind 1) and payments (kind 2) after the invoice's row, as members of the object. */
static void put_detail(gw_jsonw_t *w, const gw_db_rows_t *rows, const char *currency)
{
    size_t n = gw_db_rows_count(rows), r = 1;
    char buf[48];
    size_t len;
    const char *v;
    gw_jsonw_key(w, "lines");
    gw_jsonw_open(w, '[');
    for (; r != n && gw_db_rows_value(rows, r, D_KIND, NULL)[0] == '1'; ++r) {
        gw_jsonw_open(w, '{');
        v = gw_db_rows_value(rows, r, D_POSITION, &len);
        gw_jsonw_key(w, "position");
        if (v != NULL)
            gw_jsonw_raw(w, v, len); /* an integer */
        else
            gw_jsonw_str(w, NULL, 0);
        put_text(w, "description", rows, r, D_DESCRIPTION);
        v = gw_db_rows_value(rows, r, D_QUANTITY, &len);
        put_formatted(w, "quantity", buf, quantity_text(v, len, buf, sizeof(buf)));
        v = gw_db_rows_value(rows, r, D_UNIT, &len);
        put_formatted(w, "unit_amount", buf, unit_text(v, len, currency, buf, sizeof(buf)));
        put_money(w, "line_amount", rows, r, D_LINE_AMOUNT, currency);
        put_money(w, "tax_amount", rows, r, D_TAX_AMOUNT, currency);
        put_text(w, "account_code", rows, r, D_ACCOUNT_CODE);
        put_text(w, "item_code", rows, r, D_ITEM_CODE);
        gw_jsonw_close(w, '}');
    }
    gw_jsonw_close(w, ']');
    gw_jsonw_key(w, "payments");
    gw_jsonw_open(w, '[');
    for (; r != n; ++r) {
        const char *pcur = gw_db_rows_value(rows, r, D_PAY_CURRENCY, NULL);
        gw_jsonw_open(w, '{');
        put_text(w, "id", rows, r, D_PAY_ID);
        put_text(w, "provider", rows, r, D_PAY_PROVIDER);
        put_text(w, "status", rows, r, D_PAY_STATUS);
        put_formatted(w, "amount", buf,
                      minor_text(gw_db_rows_value(rows, r, D_PAY_MINOR, NULL), pcur, buf, sizeof(buf)));
        put_text(w, "currency", rows, r, D_PAY_CURRENCY);
        put_text(w, "method", rows, r, D_PAY_METHOD);
        put_text(w, "created_at", rows, r, D_PAY_CREATED);
        gw_jsonw_close(w, '}');
    }
    gw_jsonw_close(w, ']');
}

/* ---- cursors: base64url of "<sort>:<key>:<settled id>" of the last invoice of a page ---- */

static const char sort_tag[NSORTS] = {'d', 'u', 'n'};

static void put_cursor(gw_jsonw_t *w, const gw_db_rows_t *rows, size_t r, int sort)
{
    char plain[240], enc[GW_BASE64_ENCODED_SIZE(240)];
    int n = snprintf(plain, sizeof(plain), "%c:%s:%s", sort_tag[sort], gw_db_rows_value(rows, r, C_SORT, NULL),
                     gw_db_rows_value(rows, r, C_ID, NULL));
    if (n < 0 || (size_t)n >= sizeof(plain)) {
        gw_jsonw_member(w, "next_cursor", NULL, 0);
        return;
    }
    size_t len = gw_base64_encode(plain, (size_t)n, GW_BASE64_URL | GW_BASE64_NOPAD, enc);
    gw_jsonw_member(w, "next_cursor", enc, len);
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

/* Sends the document w holds (200 with its ETag, or 304) and frees it. */
static void reply_doc(h2o_req_t *req, gw_jsonw_t *w)
{
    gw_reply_json_cached(req, w->out.p, w->out.len);
    free(w->out.p);
}

static void on_list_rows(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    const int64_t *page = data; /* the limit, the sort order */
    int64_t limit = page[0];
    size_t n = gw_db_rows_count(rows), shown = n > (size_t)limit ? (size_t)limit : n;
    gw_jsonw_t w = {0};
    gw_jsonw_open(&w, '{');
    gw_jsonw_key(&w, "data");
    gw_jsonw_open(&w, '[');
    for (size_t r = 0; r != shown; ++r) {
        gw_jsonw_open(&w, '{');
        put_invoice(&w, rows, r);
        gw_jsonw_close(&w, '}');
    }
    gw_jsonw_close(&w, ']');
    if (n > shown && shown != 0)
        put_cursor(&w, rows, shown - 1, (int)page[1]);
    else
        gw_jsonw_member(&w, "next_cursor", NULL, 0);
    gw_jsonw_close(&w, '}');
    reply_doc(req, &w);
}

static void on_get_rows(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    if (gw_db_rows_count(rows) == 0 || gw_db_rows_value(rows, 0, D_KIND, NULL)[0] != '0') {
        gw_reply_problem(req, 404, gw_err_not_found, NULL);
        return;
    }
    gw_jsonw_t w = {0};
    gw_jsonw_open(&w, '{');
    put_invoice(&w, rows, 0);
    put_detail(&w, rows, gw_db_rows_value(rows, 0, C_CURRENCY, NULL));
    gw_jsonw_close(&w, '}');
    reply_doc(req, &w);
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
