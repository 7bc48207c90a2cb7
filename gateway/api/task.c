/* SPDX-License-Identifier: MIT */
/* task.c: one request's blocking work on the offload pool (task.h), so no handler repeats the copies, the session,
 * the detach on a request that went away and the 503 of a full queue. */
#include "task.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include "crypto.h"
#include "log.h"
#include "mem.h"
#include "offload.h"
#include "query.h"
#include "reply.h"

typedef struct st_task_t {
    gw_task_t t;
    gw_task_cb work;
    h2o_req_t *req;
    struct st_task_t **slot; /* in the request's pool: the request's link to the task, cleared when done */
    gw_offload_call_t *call;
} task_t;

static void task_free(task_t *k)
{
    for (size_t i = 0; i != GW_INPUTS_MAX; ++i)
        free(k->t.in[i]);
    free(k->t.request_id);
    json_decref(k->t.doc);
    free(k);
}

int gw_task_fail(gw_task_t *t, const char *code, int status, const char *field, const char *fmt, ...)
{
    char detail[sizeof(t->err.detail)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    t->field = field;
    return gw_err_set(&t->err, code, status, "%s", detail);
}

static void on_work(void *arg)
{
    task_t *k = arg;
    char msg[256];
    if ((k->t.db = gw_dbs_connect(k->t.cfg->database_url, msg, sizeof(msg))) == NULL) {
        gw_log(GW_LOG_WARN, "api %s: no database session: %s", k->t.request_id, msg);
        gw_err_set(&k->t.err, gw_err_store_unavailable, 503, "The database cannot answer now; retry later.");
        return;
    }
    k->work(&k->t);
    gw_dbs_close(k->t.db);
    k->t.db = NULL;
}

static void on_done(void *arg)
{
    task_t *k = arg;
    h2o_req_t *req = k->req;
    *k->slot = NULL;
    if (k->t.err.code != NULL) {
        if (k->t.err.status == 503)
            gw_reply_retry_after(req, k->t.cfg->retry_after > 0 ? k->t.cfg->retry_after : 5);
        if (k->t.err.status >= 500 && k->t.err.code != gw_err_store_unavailable)
            gw_log(GW_LOG_WARN, "api %s: %s: %s", k->t.request_id, k->t.err.code, k->t.err.detail);
        gw_reply_err_field(req, &k->t.err, k->t.field);
    } else if (k->t.cached && (k->t.status == 0 || k->t.status == 200)) {
        gw_query_reply(req, k->t.doc);
        k->t.doc = NULL;
    } else {
        char *body = k->t.doc != NULL ? json_dumps(k->t.doc, JSON_COMPACT) : NULL;
        if (body == NULL) {
            gw_reply_problem(req, 500, gw_err_internal, NULL);
        } else {
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
            size_t len = strlen(body);
            char *copy = h2o_mem_alloc_pool(&req->pool, len);
            memcpy(copy, body, len);
            free(body);
            gw_reply_json(req, k->t.status != 0 ? k->t.status : 200, copy, len);
        }
    }
    task_free(k);
}

static void on_release(void *arg)
{
    task_free(arg);
}

static void on_request_dispose(void *p)
{
    task_t **slot = p;
    if (*slot != NULL)
        gw_offload_detach((*slot)->call); /* on_release frees it */
}

int gw_task_run(gw_loop_t *loop, h2o_req_t *req, const gw_call_t *call, gw_task_cb work, bool cached)
{
    gw_err_t err = GW_ERR_INIT;
    if (loop->offload == NULL || loop->cfg->database_url == NULL) {
        gw_reply_retry_after(req, loop->cfg->retry_after > 0 ? loop->cfg->retry_after : 5);
        gw_reply_problem(req, 503, gw_err_store_unavailable, "The server is shutting down; retry later.");
        return 0;
    }
    task_t *k = gw_xcalloc(1, sizeof(*k));
    k->t.cfg = loop->cfg;
    k->t.organisation_id = call->scope.organisation_id;
    k->t.user_id = call->scope.user_id;
    k->t.request_id =
        gw_xstrndup(call->scope.request_id.base != NULL ? call->scope.request_id.base : "", call->scope.request_id.len);
    for (size_t i = 0; i != GW_INPUTS_MAX; ++i)
        if (call->in[i].present) {
            k->t.in[i] = gw_xstrndup(call->in[i].str.base != NULL ? call->in[i].str.base : "", call->in[i].str.len);
            k->t.ini[i] = call->in[i].i;
        }
    k->t.cached = cached;
    k->t.err = (gw_err_t)GW_ERR_INIT;
    k->work = work;
    k->req = req;
    k->slot = h2o_mem_alloc_shared(&req->pool, sizeof(*k->slot), on_request_dispose);
    *k->slot = k;
    if ((k->call = gw_offload_run(loop->offload, on_work, on_done, on_release, k, &err)) == NULL) {
        *k->slot = NULL;
        task_free(k);
        gw_reply_retry_after(req, loop->cfg->retry_after > 0 ? loop->cfg->retry_after : 5);
        gw_reply_err(req, &err);
    }
    return 0;
}

json_t *gw_task_cursor(int64_t id)
{
    char plain[24], enc[GW_BASE64_ENCODED_SIZE(24)];
    int n = snprintf(plain, sizeof(plain), "%" PRId64, id);
    return json_stringn(enc, gw_base64_encode(plain, (size_t)n, GW_BASE64_URL | GW_BASE64_NOPAD, enc));
}

int64_t gw_task_cursor_id(const char *cursor)
{
    char plain[24];
    size_t len;
    if (cursor == NULL ||
        gw_base64_decode(cursor, strlen(cursor), GW_BASE64_URL | GW_BASE64_NOPAD, plain, sizeof(plain) - 1, &len) !=
            0 ||
        len == 0 || len > 19)
        return 0;
    plain[len] = '\0';
    if (strspn(plain, "0123456789") != len || plain[0] == '0')
        return 0;
    return strtoll(plain, NULL, 10);
}
