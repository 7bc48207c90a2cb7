/* SPDX-License-Identifier: MIT */
/* portal_task.c: the offloaded portal request of portal_task.h. */
#include "portal_task.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db.h"
#include "log.h"
#include "mem.h"
#include "offload.h"
#include "reply.h"

#define RETRY_AFTER_MIN 1

/* ---- the loop's quotas ---- */

static void *on_loop_init(gw_loop_t *loop)
{
    gw_fetch_ctx_t *ctx = gw_xcalloc(1, sizeof(*ctx));
    ctx->cfg = loop->cfg;
    gw_err_t err = GW_ERR_INIT;
    if (gw_fetch_quotas_create(ctx, &err) != 0) {
        gw_log(GW_LOG_WARN, "portal provider calls are off: %s", err.detail);
        free(ctx);
        return NULL;
    }
    return ctx;
}

static void on_loop_dispose(gw_loop_t *loop, void *state)
{
    gw_fetch_ctx_t *ctx = state;
    if (ctx == NULL)
        return;
    gw_fetch_quotas_destroy(ctx);
    free(ctx);
}

const gw_module_t gw_portal_task_module = {
    .name = "portal_task",
    .on_loop_init = on_loop_init,
    .on_loop_dispose = on_loop_dispose,
};

/* ---- tasks ---- */

gw_portal_task_t *gw_portal_task_new(gw_loop_t *loop, const gw_call_t *call, gw_portal_task_cb work, void *data)
{
    gw_portal_task_t *t = gw_xcalloc(1, sizeof(*t));
    t->cfg = loop->cfg;
    t->organisation_id = call->scope.organisation_id;
    t->customer_id = call->scope.customer_id;
    t->user_id = call->scope.user_id;
    t->role = call->scope.role;
    snprintf(t->request_id, sizeof(t->request_id), "%.*s",
             (int)(call->scope.request_id.len < GW_PORTAL_TASK_ID_MAX ? call->scope.request_id.len
                                                                      : GW_PORTAL_TASK_ID_MAX - 1),
             call->scope.request_id.base != NULL ? call->scope.request_id.base : "");
    t->work = work;
    t->data = data;
    t->err = (gw_err_t)GW_ERR_INIT;
    t->status = 200;
    return t;
}

static void free_task(gw_portal_task_t *t)
{
    json_decref(t->doc);
    free(t->body);
    free(t->data);
    free(t);
}

typedef struct st_job_t {
    gw_portal_task_t *task;
    gw_fetch_ctx_t *shared; /* the loop's quotas (live until the loop's offload attachment is gone) */
} job_t;

static void on_task_work(void *arg)
{
    job_t *job = arg;
    gw_portal_task_t *t = job->task;
    if (job->shared == NULL) {
        gw_err_set(&t->err, gw_err_provider_unavailable, 503, "Provider calls cannot be made now; retry later.");
        return;
    }
    gw_fetch_ctx_t ctx = {.cfg = t->cfg};
    memcpy(ctx.quota, job->shared->quota, sizeof(ctx.quota));
    if ((ctx.db = gw_dbs_open(t->cfg->database_url, &t->err)) == NULL) {
        gw_log(GW_LOG_WARN, "portal request %s: %s", t->request_id, t->err.detail);
        gw_err_set(&t->err, gw_err_store_unavailable, 503, "The database cannot answer now; retry later.");
        return;
    }
    t->work(t, &ctx);
    gw_dbs_close(ctx.db);
}

bool gw_portal_etag_listed(h2o_req_t *req, const char *etag)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    return i != -1 && etag[0] != '\0' && gw_reply_etag_listed(req->headers.entries[i].value, etag, strlen(etag));
}

void gw_portal_reply_entity(h2o_req_t *req, const char *content_type, const char *etag, const char *body, size_t len)
{
    size_t elen = strlen(etag);
    if (elen != 0) {
        char *e = h2o_mem_alloc_pool(&req->pool, elen);
        memcpy(e, etag, elen);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, e, elen);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("private, no-cache"));
        if (gw_portal_etag_listed(req, etag)) {
            gw_reply_empty(req, 304);
            return;
        }
    }
    char *copy = h2o_mem_alloc_pool(&req->pool, len + 1);
    memcpy(copy, body, len);
    gw_reply_text(req, 200, content_type, copy, len);
}

static void reply(h2o_req_t *req, gw_portal_task_t *t)
{
    if (gw_err_is_set(&t->err)) {
        if (t->err.status == 503)
            gw_reply_retry_after(req, t->cfg->retry_after > RETRY_AFTER_MIN ? t->cfg->retry_after : RETRY_AFTER_MIN);
        gw_reply_err(req, &t->err);
    } else if (t->body != NULL) {
        gw_portal_reply_entity(req, t->content_type, t->etag, t->body, t->body_len);
    } else if (t->doc != NULL) {
        char *text = json_dumps(t->doc, JSON_COMPACT);
        if (text == NULL) {
            gw_reply_problem(req, 500, gw_err_internal, NULL);
            return;
        }
        gw_reply_json(req, t->status, text, strlen(text));
        free(text);
    } else {
        gw_reply_empty(req, t->status == 200 ? 204 : t->status);
    }
}

static void on_task_done(void *arg)
{
    job_t *job = arg;
    gw_portal_task_t *t = job->task;
    reply(t->req, t);
    *t->slot = NULL; /* the request's dispose hook must not see it any more */
    free_task(t);
    free(job);
}

static void on_task_release(void *arg)
{
    job_t *job = arg;
    free_task(job->task);
    free(job);
}

static void on_request_dispose(void *p)
{
    gw_portal_task_t **slot = p;
    if (*slot != NULL)
        gw_offload_detach((*slot)->call); /* on_task_release frees it */
}

int gw_portal_task_run(gw_loop_t *loop, h2o_req_t *req, gw_portal_task_t *t)
{
    gw_err_t err = GW_ERR_INIT;
    if (loop->offload == NULL || loop->cfg->database_url == NULL) {
        free_task(t);
        gw_reply_retry_after(req, loop->cfg->retry_after > RETRY_AFTER_MIN ? loop->cfg->retry_after : RETRY_AFTER_MIN);
        gw_reply_problem(req, 503, gw_err_store_unavailable, "The server cannot take this request now; retry later.");
        return 0;
    }
    job_t *job = gw_xcalloc(1, sizeof(*job));
    job->task = t;
    job->shared = gw_module_state(loop, &gw_portal_task_module);
    t->req = req;
    gw_portal_task_t **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), on_request_dispose);
    *slot = t;
    t->slot = slot;
    if ((t->call = gw_offload_run(loop->offload, on_task_work, on_task_done, on_task_release, job, &err)) == NULL) {
        *slot = NULL;
        free_task(t);
        free(job);
        gw_reply_retry_after(req, loop->cfg->retry_after > RETRY_AFTER_MIN ? loop->cfg->retry_after : RETRY_AFTER_MIN);
        gw_reply_err(req, &err);
    }
    return 0;
}

void gw_portal_task_fetch_err(gw_portal_task_t *t, const char *what, const gw_fetch_result_t *res)
{
    gw_log(GW_LOG_WARN, "portal request %s: %s: %s", t->request_id, what, res->error);
    switch (res->status) {
    case GW_FETCH_RESCHEDULE:
        gw_err_set(&t->err, gw_err_provider_unavailable, 503, "%s: the provider's rate limit says wait; retry later.",
                   what);
        break;
    case GW_FETCH_REJECTED:
        gw_err_set(&t->err, gw_err_provider_rejected, 502,
                   "%s: the provider refused the call; the server log has the reason under this request id.", what);
        break;
    case GW_FETCH_REAUTH:
        gw_err_set(&t->err, gw_err_provider_unavailable, 503,
                   "%s: the provider connection needs an administrator to reconnect it.", what);
        break;
    default:
        if (res->http_status == 409) /* Stripe: another request with the same Idempotency-Key is in flight */
            gw_err_set(&t->err, gw_err_provider_unavailable, 503,
                       "%s: a request like this one is still in progress; retry shortly.", what);
        else
            gw_err_set(&t->err, gw_err_provider_unavailable, 502, "%s: the provider could not be reached; retry later.",
                       what);
        break;
    }
}
