/* SPDX-License-Identifier: MIT */
/* query.c: the request-scoped read of query.h, so no handler repeats the pool, the dispose hook and the 503. */
#include "query.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "reply.h"

/* In the request's pool; its dispose hook detaches the job, so a late result never touches a dead request. */
typedef struct st_pending_t {
    h2o_req_t *req;
    gw_db_job_t *job;
    gw_query_cb cb;
    void *data;
} pending_t;

static void on_pending_dispose(void *p)
{
    pending_t *pending = p;
    if (pending->job != NULL)
        gw_db_job_detach(pending->job);
    pending->req = NULL;
}

static void reply_unavailable(h2o_req_t *req)
{
    gw_reply_retry_after(req, gw_loop_of(req)->cfg->retry_after);
    gw_reply_problem(req, 503, gw_err_store_unavailable, "The database cannot answer now; retry later.");
}

static void on_rows(void *data, const char *error, const gw_db_rows_t *rows)
{
    pending_t *pending = data;
    h2o_req_t *req = pending->req;
    pending->job = NULL;
    if (req == NULL)
        return;
    if (error != NULL)
        reply_unavailable(req);
    else
        pending->cb(req, rows, pending->data);
}

int gw_query(gw_loop_t *loop, h2o_req_t *req, const gw_db_statement_t *stmt, const gw_db_param_t *params,
             size_t nparams, gw_query_cb cb, void *data)
{
    pending_t *pending = h2o_mem_alloc_shared(&req->pool, sizeof(*pending), on_pending_dispose);
    *pending = (pending_t){.req = req, .cb = cb, .data = data};
    if ((pending->job = gw_db_submit_read(loop->db, stmt, params, nparams, on_rows, pending)) == NULL)
        reply_unavailable(req);
    return 0;
}

gw_db_param_t gw_query_int(h2o_req_t *req, int64_t v)
{
    char *s = h2o_mem_alloc_pool(&req->pool, 24);
    int n = snprintf(s, 24, "%lld", (long long)v);
    return (gw_db_param_t){s, (size_t)n, false};
}

void gw_query_scope(h2o_req_t *req, const gw_scope_t *scope, gw_db_param_t params[2])
{
    params[0] = gw_query_int(req, scope->organisation_id);
    params[1] = scope->role == GW_ROLE_CLIENT ? gw_query_int(req, scope->customer_id) : gw_query_null();
}

void gw_query_reply(h2o_req_t *req, json_t *doc)
{
    char *body = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (body == NULL) {
        gw_reply_problem(req, 500, gw_err_internal, NULL);
        return;
    }
    gw_reply_json_cached(req, body, strlen(body));
    free(body);
}
