/* SPDX-License-Identifier: MIT */
/*
 * dashboard.c: see dashboard.h. The rows of admin_dashboard are grouped here into one object per currency, each
 * with every figure (zero when nothing counts), the amounts formatted by money.c from PostgreSQL's sums of minor
 * units. A sum that does not fit int64, or a currency settled does not know, is null (never rounded, never a
 * float).
 */
#include "dashboard.h"
#include <stdlib.h>
#include <string.h>
#include "admin.h"
#include "invoices.h"
#include "query.h"
#include "reply.h"

enum { C_TODAY, C_ZONE, C_MONTH, C_FIGURE, C_CURRENCY, C_PROVIDER, C_METHOD, C_MINOR, C_ITEMS };

static const gw_db_statement_t statements[] = {
    {"admin_dashboard",
     "SELECT today::text, timezone, month_start::text, figure, currency, provider, method, amount_minor::text, "
     "items::text FROM admin_dashboard($1::bigint, now()) "
     "ORDER BY figure <> 'as_of', currency, figure, provider NULLS FIRST, method",
     1},
};

const gw_module_t gw_dashboard_module = {
    .name = "dashboard",
    .statements = statements,
    .nstatements = sizeof(statements) / sizeof(statements[0]),
};

/* The figures every currency shows: the name of their count, and whether they are split by provider and method. */
static const struct {
    const char *name, *count;
    bool by_method;
} figures[] = {{"outstanding", "invoices", false},
               {"overdue", "invoices", false},
               {"due_this_week", "invoices", false},
               {"collected_this_month", "payments", true},
               {"failed_collections_this_month", "attempts", true}};
#define NFIGURES (sizeof(figures) / sizeof(figures[0]))

static json_t *count_json(const char *text)
{
    return json_integer(text != NULL ? (json_int_t)strtoll(text, NULL, 10) : 0);
}

/* A new currency's object, every figure at zero. */
static json_t *currency_new(const char *currency)
{
    json_t *c = json_object();
    json_object_set_new(c, "currency", json_string(currency));
    for (size_t f = 0; f != NFIGURES; ++f) {
        json_t *fig = json_object();
        json_object_set_new(fig, "amount", gw_invoices_minor_json("0", currency));
        json_object_set_new(fig, figures[f].count, json_integer(0));
        if (figures[f].by_method)
            json_object_set_new(fig, "by_method", json_array());
        json_object_set_new(c, figures[f].name, fig);
    }
    json_object_set_new(c, "unreconciled_invoices", json_integer(0));
    return c;
}

static void on_rows(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    size_t n = gw_db_rows_count(rows);
    if (n == 0 || strcmp(gw_db_rows_value(rows, 0, C_FIGURE, NULL), "as_of") != 0) {
        gw_reply_problem(req, 404, gw_err_not_found, NULL);
        return;
    }
    json_t *list = json_array(), *c = NULL;
    for (size_t r = 1; r != n; ++r) {
        const char *figure = gw_db_rows_value(rows, r, C_FIGURE, NULL),
                   *currency = gw_db_rows_value(rows, r, C_CURRENCY, NULL),
                   *provider = gw_db_rows_value(rows, r, C_PROVIDER, NULL),
                   *minor = gw_db_rows_value(rows, r, C_MINOR, NULL), *items = gw_db_rows_value(rows, r, C_ITEMS, NULL);
        if (currency == NULL)
            continue; /* an invoice without a currency: nothing to show it in */
        if (c == NULL || strcmp(json_string_value(json_object_get(c, "currency")), currency) != 0) {
            c = currency_new(currency); /* the rows come ordered by currency */
            json_array_append_new(list, c);
        }
        if (strcmp(figure, "unreconciled") == 0) {
            json_object_set_new(c, "unreconciled_invoices", count_json(items));
            continue;
        }
        size_t f = 0;
        while (f != NFIGURES && strcmp(figures[f].name, figure) != 0)
            ++f;
        if (f == NFIGURES)
            continue;
        json_t *fig = json_object_get(c, figure);
        if (provider == NULL) { /* the figure's total */
            json_object_set_new(fig, "amount", gw_invoices_minor_json(minor, currency));
            json_object_set_new(fig, figures[f].count, count_json(items));
        } else if (figures[f].by_method) {
            json_t *m = json_object();
            json_object_set_new(m, "provider", json_string(provider));
            json_object_set_new(m, "method", json_string(gw_db_rows_value(rows, r, C_METHOD, NULL)));
            json_object_set_new(m, "amount", gw_invoices_minor_json(minor, currency));
            json_object_set_new(m, figures[f].count, count_json(items));
            json_array_append_new(json_object_get(fig, "by_method"), m);
        }
    }
    json_t *doc = json_object();
    json_object_set_new(doc, "today", json_string(gw_db_rows_value(rows, 0, C_TODAY, NULL)));
    json_object_set_new(doc, "timezone", json_string(gw_db_rows_value(rows, 0, C_ZONE, NULL)));
    json_object_set_new(doc, "month_start", json_string(gw_db_rows_value(rows, 0, C_MONTH, NULL)));
    json_object_set_new(doc, "currencies", list);
    gw_query_reply(req, doc);
}

int gw_dashboard_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[1] = {gw_admin_org(req, &call->scope)};
    return gw_query(loop, req, &statements[0], params, 1, on_rows, NULL);
}
