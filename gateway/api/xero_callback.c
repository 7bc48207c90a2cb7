/* SPDX-License-Identifier: MIT */
/*
 * xero_callback.c: the OAuth 2.0 redirect target for connecting Xero, answered without blocking the loop. The
 * state is checked on the loop (its signature and expiry need no database), so a forged or expired one costs
 * nothing and is refused even while the database is down; only then does the work (consume the state's nonce,
 * exchange the code, store the connection) go to the offload pool, whose bounded queue answers 503 when full.
 * Replies to the browser carry generic details; the specifics (which may quote the database) go to the log
 * with the request id.
 */
#include "xero_callback.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "crypto.h"
#include "db.h"
#include "log.h"
#include "mem.h"
#include "offload.h"
#include "reply.h"
#include "xero_oauth.h"

#define PARAM_MAX 4096
#define REQUEST_ID_MAX 136

/* The parameters Xero may send; anything else is refused (declared inputs only). */
static const char *const known_params[] = {"code", "state", "scope", "session_state", "error", "error_description"};

typedef struct st_callback_t {
    /* in */
    const gw_config_t *cfg;
    char *code, *state;
    char request_id[REQUEST_ID_MAX];
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
        cb->rc = gw_err_set(&cb->err, gw_err_store_unavailable, 503, "%s", msg);
        return;
    }
    cb->rc = gw_xero_complete_authorization(s, cb->cfg, cb->code, cb->state, cb->request_id, &c, &cb->err);
    gw_dbs_close(s);
    if (cb->rc == 0) {
        gw_xero_connection_summary(&c, cb->summary, sizeof(cb->summary));
        gw_xero_connection_free(&c);
    }
}

static void free_callback(callback_t *cb)
{
    if (cb->code != NULL)
        explicit_bzero(cb->code, strlen(cb->code));
    free(cb->code);
    free(cb->state);
    free(cb);
}

/* The request id the front door stamped on req ("" if none). */
static h2o_iovec_t request_id_of(h2o_req_t *req)
{
    ssize_t i = h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1);
    return i != -1 ? req->res.headers.entries[i].value : h2o_iovec_init("", 0);
}

/* Logs a failure with its specifics (the detail may quote the database: never the browser's business). */
static void log_failure(h2o_req_t *req, const gw_err_t *err)
{
    if (!gw_log_enabled(GW_LOG_WARN))
        return;
    h2o_iovec_t rid = request_id_of(req);
    gw_logline_t line;
    gw_log_begin(&line, GW_LOG_WARN, "connecting Xero failed");
    gw_log_str(&line, "provider", "xero", 4);
    gw_log_str(&line, "request_id", rid.base, rid.len);
    gw_log_str(&line, "code", err->code != NULL ? err->code : "internal",
               strlen(err->code != NULL ? err->code : "internal"));
    gw_log_int(&line, "status", err->status);
    gw_log_str(&line, "detail", err->detail, strlen(err->detail));
    gw_log_end(&line);
}

void gw_xero_callback_public_err(const gw_err_t *err, bool own_detail, gw_err_t *out)
{
    *out = (gw_err_t)GW_ERR_INIT;
    if (own_detail || err->code == gw_err_oauth_callback_invalid || err->code == gw_err_oauth_state_used) {
        *out = *err;
    } else if (err->code == gw_err_store_unavailable) {
        gw_err_set(out, err->code, 503, "The database is unavailable; try again shortly.");
    } else if (err->code == gw_err_xero_connect_failed) {
        gw_err_set(out, err->code, 502,
                   "Connecting Xero did not complete; the server log has the reason under this request id. Start "
                   "connecting Xero again.");
    } else {
        gw_err_set(out, err->code != NULL ? err->code : gw_err_internal, err->status != 0 ? err->status : 500,
                   "The connection could not be completed; the server log has the reason under this request id.");
    }
}

/* Answers a failure (gw_xero_callback_public_err), after logging its specifics; a 503 carries Retry-After. */
static void reply_failure(h2o_req_t *req, const gw_config_t *cfg, const gw_err_t *err, bool own_detail)
{
    log_failure(req, err);
    gw_err_t out;
    gw_xero_callback_public_err(err, own_detail, &out);
    if (out.status == 503)
        gw_reply_retry_after(req, cfg->retry_after > 0 ? cfg->retry_after : 5);
    gw_reply_err(req, &out);
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
        reply_failure(req, cb->cfg, &cb->err, false);
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

    /* the state's signature and expiry, here on the loop: no database, no thread */
    gw_err_t err = GW_ERR_INIT;
    gw_xero_state_t st;
    char *state_z = h2o_mem_alloc_pool(&req->pool, state.len + 1);
    memcpy(state_z, state.base, state.len);
    state_z[state.len] = '\0';
    if (gw_xero_state_verify(loop->cfg, state_z, (int64_t)time(NULL), &st, &err) != 0) {
        reply_failure(req, loop->cfg, &err, false);
        return 0;
    }

    if (loop->offload == NULL) {
        gw_err_set(&err, gw_err_store_unavailable, 503, "The server is shutting down.");
        reply_failure(req, loop->cfg, &err, true);
        return 0;
    }
    callback_t *cb = gw_xcalloc(1, sizeof(*cb));
    cb->code = gw_xstrndup(code.base, code.len);
    cb->state = gw_xstrdup(state_z);
    h2o_iovec_t rid = request_id_of(req);
    snprintf(cb->request_id, sizeof(cb->request_id), "%.*s",
             (int)(rid.len < REQUEST_ID_MAX ? rid.len : REQUEST_ID_MAX - 1), rid.base);
    cb->err = (gw_err_t)GW_ERR_INIT;
    cb->cfg = loop->cfg;
    cb->req = req;
    callback_t **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), on_request_dispose);
    *slot = cb;
    cb->slot = slot;
    cb->call = gw_offload_run(loop->offload, on_work, on_done, on_release, cb, &err);
    if (cb->call == NULL) {
        /* the pool is stopping, or its queue is full: nothing runs, the browser may retry */
        *slot = NULL;
        free_callback(cb);
        reply_failure(req, loop->cfg, &err, true);
    }
    return 0;
}
