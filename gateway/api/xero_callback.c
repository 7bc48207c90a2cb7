/* SPDX-License-Identifier: MIT */
/* xero_callback.c: the OAuth 2.0 redirect target for connecting Xero, answered without blocking the loop. */
#include "xero_callback.h"
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "db.h"
#include "log.h"
#include "mem.h"
#include "offload.h"
#include "reply.h"
#include "xero_oauth.h"

#define PARAM_MAX 4096

/* The parameters Xero may send; anything else is refused (declared inputs only). */
static const char *const known_params[] = {"code", "state", "scope", "session_state", "error", "error_description"};

typedef struct st_callback_t {
    /* in */
    const gw_config_t *cfg;
    char *code, *state;
    /* out */
    int rc;
    char summary[512];
    gw_err_t err;
    /* the request, until it goes away; slot is the request's pointer to this (cleared when done) */
    h2o_req_t *req;
    struct st_callback_t **slot;
    gw_offload_call_t *call;
} callback_t;

int gw_query_param(h2o_mem_pool_t *pool, h2o_iovec_t query, const char *name, size_t max, h2o_iovec_t *out)
{
    size_t nlen = strlen(name);
    const char *p = query.base, *end = query.base + query.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (eq != NULL && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
            const char *v = eq + 1;
            size_t vlen = (size_t)(stop - v), n = 0;
            if (vlen > max * 3)
                return -1;
            char *buf = h2o_mem_alloc_pool(pool, vlen + 1);
            if (gw_percent_decode(v, vlen, GW_PERCENT_PLUS_SPACE, buf, &n) != 0 || n > max)
                return -1;
            *out = h2o_iovec_init(buf, n);
            return 0;
        }
        p = stop + 1;
    }
    return 1;
}

static void on_work(void *arg)
{
    callback_t *cb = arg;
    char msg[sizeof(cb->err.detail)];
    gw_xero_connection_t c;
    gw_dbs_t *s = gw_dbs_connect(cb->cfg->database_url, msg, sizeof(msg));
    if (s == NULL) {
        cb->rc = gw_err_set(&cb->err, gw_err_xero_connect_failed, 502, "%s", msg);
        return;
    }
    cb->rc = gw_xero_complete_authorization(s, cb->cfg, cb->code, cb->state, &c, &cb->err);
    gw_dbs_close(s);
    if (cb->rc == 0) {
        gw_xero_connection_summary(&c, cb->summary, sizeof(cb->summary));
        gw_xero_connection_free(&c);
    }
}

static void free_callback(callback_t *cb)
{
    free(cb->code);
    free(cb->state);
    free(cb);
}

static void on_done(void *arg)
{
    callback_t *cb = arg;
    h2o_req_t *req = cb->req;
    if (cb->rc == 0) {
        gw_log(GW_LOG_INFO, "Xero connected: %s", cb->summary);
        char *body = h2o_mem_alloc_pool(&req->pool, sizeof(cb->summary) * 2 + 64);
        size_t n = 0;
        n += (size_t)sprintf(body, "{\"connected\":true,\"summary\":\"");
        for (const char *p = cb->summary; *p != '\0'; ++p)
            if (*p == '"' || *p == '\\')
                body[n++] = '\\', body[n++] = *p;
            else if ((unsigned char)*p >= 0x20)
                body[n++] = *p;
        n += (size_t)sprintf(body + n, "\"}");
        gw_reply_json(req, 200, body, n);
    } else {
        gw_log(GW_LOG_WARN, "connecting Xero failed: %s", cb->err.detail);
        gw_reply_err(req, &cb->err);
    }
    *cb->slot = NULL; /* the request's dispose hook must not see it any more */
    free_callback(cb);
}

static void on_release(void *arg)
{
    free_callback(arg);
}

/* The request went away before the work finished: the work still completes (the connection is stored),
 * nobody is told. */
static void on_request_dispose(void *p)
{
    callback_t **slot = p;
    if (*slot != NULL)
        gw_offload_detach((*slot)->call); /* on_release frees it, without touching the request or slot */
}

int gw_xero_callback_handle(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    h2o_iovec_t query = h2o_iovec_init(NULL, 0);
    if (req->query_at != SIZE_MAX)
        query = h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);

    /* only the parameters Xero sends */
    for (const char *p = query.base, *end = query.base + query.len; p != NULL && p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        size_t klen = (size_t)((eq != NULL ? eq : stop) - p);
        bool known = false;
        for (size_t i = 0; i != sizeof(known_params) / sizeof(known_params[0]) && !known; ++i)
            known = strlen(known_params[i]) == klen && memcmp(known_params[i], p, klen) == 0;
        if (!known && klen != 0) {
            gw_reply_problem(req, 400, gw_err_oauth_callback_invalid, "Unknown query parameter.");
            return 0;
        }
        p = stop + 1;
    }
    h2o_iovec_t code, state, error;
    if (gw_query_param(&req->pool, query, "error", 200, &error) == 0) {
        gw_reply_problem(req, 400, gw_err_oauth_callback_invalid,
                         "Xero did not authorise the connection (the request was denied or cancelled).");
        return 0;
    }
    if (gw_query_param(&req->pool, query, "code", PARAM_MAX, &code) != 0 ||
        gw_query_param(&req->pool, query, "state", PARAM_MAX, &state) != 0 || code.len == 0 || state.len == 0) {
        gw_reply_problem(req, 400, gw_err_oauth_callback_invalid, "The callback needs a code and a state.");
        return 0;
    }
    if (loop->offload == NULL) {
        gw_reply_problem(req, 503, gw_err_store_unavailable, "The server is shutting down.");
        return 0;
    }
    callback_t *cb = gw_xcalloc(1, sizeof(*cb));
    cb->code = gw_xstrndup(code.base, code.len);
    cb->state = gw_xstrndup(state.base, state.len);
    cb->err = (gw_err_t)GW_ERR_INIT;
    cb->cfg = loop->cfg;
    cb->req = req;
    callback_t **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), on_request_dispose);
    *slot = cb;
    cb->slot = slot;
    cb->call = gw_offload_run(loop->offload, on_work, on_done, on_release, cb);
    if (cb->call == NULL) {
        *slot = NULL;
        free_callback(cb);
        gw_reply_problem(req, 503, gw_err_store_unavailable, "The server is shutting down.");
    }
    return 0;
}
