/* SPDX-License-Identifier: MIT */
/* admin.c: the shared reply path of the admin routes (admin.h): a read's document, a write's result row. */
#include "admin.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "query.h"
#include "reply.h"

static void on_read(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    size_t len;
    const char *doc = gw_db_rows_count(rows) != 0 ? gw_db_rows_value(rows, 0, 0, &len) : NULL;
    if (doc == NULL) {
        gw_reply_problem(req, 404, gw_err_not_found, NULL);
        return;
    }
    gw_reply_json_cached(req, doc, len);
}

int gw_admin_read(gw_loop_t *loop, h2o_req_t *req, const gw_db_statement_t *stmt, const gw_db_param_t *params,
                  size_t nparams)
{
    return gw_query(loop, req, stmt, params, nparams, on_read, NULL);
}

void gw_admin_answer(h2o_req_t *req, const char *result, const char *field, const char *detail, const char *doc)
{
    gw_err_t err = GW_ERR_INIT;
    if (result != NULL && (strcmp(result, "ok") == 0 || strcmp(result, "created") == 0) && doc != NULL) {
        gw_reply_json(req, result[0] == 'c' ? 201 : 200, doc, strlen(doc));
    } else if (result != NULL && strcmp(result, "not_found") == 0) {
        gw_reply_problem(req, 404, gw_err_not_found, NULL);
    } else if (result != NULL && strcmp(result, "conflict") == 0) {
        gw_reply_problem(req, 409, gw_err_conflict, detail);
    } else if (result != NULL && strcmp(result, "invalid") == 0 && field != NULL) {
        gw_err_set(&err, gw_err_parameter_invalid, 400, "'%s' %s.", field, detail != NULL ? detail : "is not valid");
        gw_reply_err_field(req, &err, field);
    } else {
        gw_reply_problem(req, 500, gw_err_internal, NULL);
    }
}

static void on_write(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    if (gw_db_rows_count(rows) != 1) {
        gw_reply_problem(req, 500, gw_err_internal, NULL);
        return;
    }
    gw_admin_answer(req, gw_db_rows_value(rows, 0, 0, NULL), gw_db_rows_value(rows, 0, 1, NULL),
                    gw_db_rows_value(rows, 0, 2, NULL), gw_db_rows_value(rows, 0, 3, NULL));
}

int gw_admin_write(gw_loop_t *loop, h2o_req_t *req, const gw_db_statement_t *stmt, const gw_db_param_t *params,
                   size_t nparams)
{
    return gw_query(loop, req, stmt, params, nparams, on_write, NULL);
}

gw_db_param_t gw_admin_value(const gw_value_t *v)
{
    return v->present ? (gw_db_param_t){v->str.base, v->str.len, false} : gw_query_null();
}

gw_db_param_t gw_admin_org(h2o_req_t *req, const gw_scope_t *scope)
{
    return gw_query_int(req, scope->organisation_id);
}

gw_db_param_t gw_admin_actor(h2o_req_t *req, const gw_scope_t *scope)
{
    char *s = h2o_mem_alloc_pool(&req->pool, 32);
    int n = snprintf(s, 32, "user:%lld", (long long)scope->user_id);
    return (gw_db_param_t){s, (size_t)n, false};
}

gw_db_param_t gw_admin_request_id(const gw_scope_t *scope)
{
    return scope->request_id.len != 0 ? (gw_db_param_t){scope->request_id.base, scope->request_id.len, false}
                                      : gw_query_null();
}

/* The decimal digits of a positive id (at most 18, so it fits a bigint), or false. */
static bool is_id(const char *s, size_t len)
{
    if (len == 0 || len > 18 || s[0] == '0')
        return false;
    for (size_t i = 0; i != len; ++i)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

int gw_admin_cursor(h2o_req_t *req, const gw_value_t *cursor, gw_db_param_t *out)
{
    *out = gw_query_null();
    if (!cursor->present)
        return 0;
    char plain[48];
    size_t len;
    if (gw_base64_decode(cursor->str.base, cursor->str.len, GW_BASE64_URL | GW_BASE64_NOPAD, plain, sizeof(plain),
                         &len) != 0 ||
        len < 2 || plain[0] != 'c' || !is_id(plain + 1, len - 1)) {
        gw_err_t err = GW_ERR_INIT;
        gw_err_set(&err, gw_err_parameter_invalid, 400, "'cursor' is not a cursor settled issued.");
        gw_reply_err_field(req, &err, "cursor");
        return -1;
    }
    char *id = h2o_mem_alloc_pool(&req->pool, len);
    memcpy(id, plain + 1, len - 1);
    *out = (gw_db_param_t){id, len - 1, false};
    return 0;
}

int gw_admin_id_field(h2o_req_t *req, const gw_value_t *v, const char *field, gw_db_param_t *out)
{
    *out = gw_query_null();
    if (!v->present)
        return 0;
    if (!is_id(v->str.base, v->str.len)) {
        gw_err_t err = GW_ERR_INIT;
        gw_err_set(&err, gw_err_parameter_invalid, 400, "'%s' is not an id (a decimal string).", field);
        gw_reply_err_field(req, &err, field);
        return -1;
    }
    *out = gw_admin_value(v);
    return 0;
}
