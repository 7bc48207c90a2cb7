/* SPDX-License-Identifier: MIT */
/*
 * unsubscribe.c: the unsubscribe page and its one-click POST, and the client's own reminders opt-out
 * (unsubscribe.h).
 */
#include "unsubscribe.h"
#include <stdio.h>
#include <string.h>
#include "admin.h"
#include "dunning.h"
#include "query.h"
#include "reply.h"
#include "xero_callback.h"

const gw_input_t gw_me_reminders_put_inputs[GW_ME_REMINDERS_PUT_NINPUTS] = {
    {"reminders_opt_out", GW_IN_BODY, GW_IN_BOOL, .required = true}};

enum { STMT_GET, STMT_SET, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    {"dunning_opt_out_get", "SELECT dunning_opt_out_get($1::bigint, $2::bigint)::text", 2},
    {"dunning_opt_out_set",
     "SELECT result, field, detail, doc::text FROM dunning_opt_out_set($1::bigint, $2::bigint, $3::boolean, $4, $5, "
     "$6)",
     6},
};

const gw_module_t gw_unsubscribe_module = {
    .name = "unsubscribe",
    .statements = statements,
    .nstatements = STMT_MAX,
};

/* ---- the public page ---- */

static const char page_head[] = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                                "<meta name=\"viewport\" content=\"width=device-width\">"
                                "<meta name=\"robots\" content=\"noindex\"><title>";
static const char page_style[] = "</title><style>body{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 "
                                 "1em}button{font-size:1em;padding:.5em 1em}</style></head><body>";

/* A page: the title, the body's HTML (no value of the request in either but the checked token). */
static void reply_page(h2o_req_t *req, int status, const char *title, const char *html)
{
    size_t cap = sizeof(page_head) + sizeof(page_style) + strlen(title) * 2 + strlen(html) + 64;
    char *body = h2o_mem_alloc_pool(&req->pool, cap);
    int n = snprintf(body, cap, "%s%s%s<h1>%s</h1>%s</body></html>\n", page_head, title, page_style, title, html);
    /* the token is in the URL: not to be cached, sent on, or framed (a hidden button) */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL,
                          H2O_STRLIT("no-referrer"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"), 0, NULL,
                          H2O_STRLIT("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                     "frame-ancestors 'none'"));
    gw_reply_text(req, status, "text/html; charset=utf-8", body, (size_t)n);
}

/* The request's token, checked: 0 with *org and *customer and the token in *token, or -1 after answering 400 (an
 * HTML page, or problem+json for the POST). */
static int checked_token(gw_loop_t *loop, h2o_req_t *req, bool html, h2o_iovec_t *token, int64_t *org,
                         int64_t *customer)
{
    h2o_iovec_t query = h2o_iovec_init(NULL, 0);
    if (req->query_at != SIZE_MAX && req->query_at < req->path.len)
        query = h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    bool ok = true;
    /* only token= (anything else is refused, as the guard refuses undeclared inputs) */
    for (const char *p = query.base, *end = query.base + query.len; p != NULL && p < end && ok;) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp != NULL ? amp : end;
        ok = stop - p >= 6 && memcmp(p, "token=", 6) == 0;
        p = stop + 1;
    }
    ok = ok && gw_query_param(&req->pool, query, "token", GW_UNSUBSCRIBE_TOKEN_MAX, token) == 0 &&
         gw_unsubscribe_verify(loop->cfg, token->base, token->len, org, customer) == 0;
    if (ok)
        return 0;
    if (html)
        reply_page(req, 400, "This link does not work",
                   "<p>The unsubscribe link is incomplete or not valid. Use the link of a recent e-mail, or sign in "
                   "to the portal to change which e-mails you receive.</p>");
    else
        gw_reply_problem(req, 400, gw_err_unsubscribe_token_invalid,
                         "The token is missing, malformed, or not one settled signed.");
    return -1;
}

int gw_unsubscribe_page(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    h2o_iovec_t token;
    int64_t org, customer;
    if (checked_token(loop, req, true, &token, &org, &customer) != 0)
        return 0;
    /* nothing changes on GET (link scanners fetch it): the button posts the same token to the same URL */
    size_t cap = token.len + 512;
    char *html = h2o_mem_alloc_pool(&req->pool, cap);
    snprintf(html, cap,
             "<p>Stop the payment reminders for your invoices? Receipts and notices about your payments are still "
             "sent.</p><form method=\"post\" action=\"?token=%.*s\"><button type=\"submit\">Unsubscribe from "
             "reminders</button></form>",
             (int)token.len, token.base);
    reply_page(req, 200, "Unsubscribe from payment reminders", html);
    return 0;
}

static void on_unsubscribed(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    const char *result = gw_db_rows_count(rows) == 1 ? gw_db_rows_value(rows, 0, 0, NULL) : NULL;
    if (result != NULL && strcmp(result, "ok") == 0)
        reply_page(req, 200, "You are unsubscribed",
                   "<p>You will not receive payment reminders any more. Receipts and notices about your payments are "
                   "still sent. You can turn reminders back on in the portal.</p>");
    else if (result != NULL && strcmp(result, "not_found") == 0)
        gw_reply_problem(req, 400, gw_err_unsubscribe_token_invalid, "The token names no customer.");
    else
        gw_reply_problem(req, 500, gw_err_internal, NULL);
}

int gw_unsubscribe_post(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    /* the body is RFC 8058's "List-Unsubscribe=One-Click" (or the page's empty form): the token is what counts */
    h2o_iovec_t token;
    int64_t org, customer;
    if (checked_token(loop, req, false, &token, &org, &customer) != 0)
        return 0;
    char *actor = h2o_mem_alloc_pool(&req->pool, 40);
    int n = snprintf(actor, 40, "unsubscribe:%lld", (long long)customer);
    ssize_t rid = h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1);
    gw_db_param_t params[6] = {gw_query_int(req, org),
                               gw_query_int(req, customer),
                               {"true", 4, false},
                               {"unsubscribe", 11, false},
                               {actor, (size_t)n, false},
                               rid != -1 ? (gw_db_param_t){req->res.headers.entries[rid].value.base,
                                                           req->res.headers.entries[rid].value.len, false}
                                         : gw_query_null()};
    return gw_query(loop, req, &statements[STMT_SET], params, 6, on_unsubscribed, NULL);
}

/* ---- the client's own ---- */

int gw_me_reminders_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[2] = {gw_admin_org(req, &call->scope), gw_query_int(req, call->scope.customer_id)};
    return gw_admin_read(loop, req, &statements[STMT_GET], params, 2);
}

int gw_me_reminders_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    const gw_value_t *v = &call->in[0];
    gw_db_param_t params[6] = {gw_admin_org(req, &call->scope),
                               gw_query_int(req, call->scope.customer_id),
                               v->i ? (gw_db_param_t){"true", 4, false} : (gw_db_param_t){"false", 5, false},
                               {"client", 6, false},
                               gw_admin_actor(req, &call->scope),
                               gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_SET], params, 6);
}
