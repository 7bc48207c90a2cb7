/* SPDX-License-Identifier: MIT */
/*
 * sessions.c: the /v1/auth routes (sessions.h). The handler copies its validated inputs and the client's address
 * into a job, which runs in the offload pool with that pool thread's own database session and blocking Redis
 * connection (opened on first use, closed when the thread ends), and is answered back on the loop. A request that
 * goes away meanwhile detaches its job: the work still completes (a token family is stored, a password changed),
 * nobody is told.
 */
#include "sessions.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "log.h"
#include "mem.h"
#include "offload.h"
#include "reply.h"
#include "session.h"

#define COOKIE_NAME "settled_refresh"
#define TOKEN_MAX 128
#define REQUEST_ID_MAX 136
#define USER_AGENT_MAX 512

/* A string field of the JSON body, required (true) or optional, of lo to hi bytes. */
#define FIELD(n, req, lo, hi)                                                                                          \
    {                                                                                                                  \
        .name = n, .where = GW_IN_BODY, .type = GW_IN_STRING, .required = req, .min = lo, .max = hi                    \
    }
#define PASSWORD(n) FIELD(n, true, 1, GW_AUTH_PASSWORD_MAX) /* the rules are checked when a password is set */
#define EMAIL FIELD("email", true, 3, 254)
#define ORGANISATION(req) FIELD("organisation", req, 1, 64)

const gw_input_t gw_sessions_login_inputs[] = {EMAIL, PASSWORD("password"), ORGANISATION(false)};
const gw_input_t gw_sessions_refresh_inputs[] = {FIELD("refresh_token", false, 1, TOKEN_MAX)};
const gw_input_t gw_sessions_logout_inputs[] = {FIELD("refresh_token", false, 1, TOKEN_MAX)};
const gw_input_t gw_sessions_password_inputs[] = {PASSWORD("current_password"), PASSWORD("new_password")};
const gw_input_t gw_sessions_token_password_inputs[] = {FIELD("token", true, 1, TOKEN_MAX), PASSWORD("password")};
const gw_input_t gw_sessions_reset_request_inputs[] = {EMAIL, ORGANISATION(false)};
const gw_input_t gw_sessions_register_inputs[] = {ORGANISATION(true), EMAIL, PASSWORD("password")};
const gw_input_t gw_sessions_verify_email_inputs[] = {FIELD("token", true, 1, TOKEN_MAX)};

/* ---- the token rules, shared by every loop ---- */

static struct {
    pthread_mutex_t lock;
    gw_auth_t *auth;
    size_t users;
} shared = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *on_loop_init(gw_loop_t *loop)
{
    pthread_mutex_lock(&shared.lock);
    if (shared.users++ == 0) {
        gw_err_t err = GW_ERR_INIT;
        shared.auth = gw_auth_create(loop->cfg, &err); /* NULL: the guard logs why; the routes answer 503 */
    }
    gw_auth_t *auth = shared.auth;
    pthread_mutex_unlock(&shared.lock);
    return auth;
}

static void on_loop_dispose(gw_loop_t *loop, void *state)
{
    pthread_mutex_lock(&shared.lock);
    if (--shared.users == 0 && shared.auth != NULL) {
        gw_auth_destroy(shared.auth);
        shared.auth = NULL;
    }
    pthread_mutex_unlock(&shared.lock);
}

const gw_module_t gw_sessions_module = {
    .name = "sessions",
    .on_loop_init = on_loop_init,
    .on_loop_dispose = on_loop_dispose,
};

/* ---- a pool thread's connections ---- */

typedef struct st_thread_conns_t {
    gw_dbs_t *db;
    gw_redis_sync_t *redis;
    bool redis_made;
} thread_conns_t;

static pthread_key_t conns_key;
static pthread_once_t conns_once = PTHREAD_ONCE_INIT;

static void on_thread_exit(void *p)
{
    thread_conns_t *c = p;
    gw_dbs_close(c->db);
    gw_redis_sync_destroy(c->redis);
    free(c);
}

static void make_key(void)
{
    if (pthread_key_create(&conns_key, on_thread_exit) != 0)
        h2o_fatal("pthread_key_create");
}

/* This thread's connections: the database session (NULL when it cannot connect: err is set) and Redis (NULL when
 * not configured). A broken session reconnects by itself on its next statement (db.h). */
static thread_conns_t *thread_conns(const gw_config_t *cfg, gw_err_t *err)
{
    pthread_once(&conns_once, make_key);
    thread_conns_t *c = pthread_getspecific(conns_key);
    if (c == NULL) {
        c = gw_xcalloc(1, sizeof(*c));
        pthread_setspecific(conns_key, c);
    }
    if (!c->redis_made) {
        c->redis_made = true;
        if (cfg->redis_url != NULL && cfg->redis_url[0] != '\0' &&
            (c->redis = gw_redis_sync_create(cfg->redis_url, 250, 250)) == NULL)
            gw_log(GW_LOG_WARN, "sign-in: SETTLED_REDIS_URL cannot be used; the local throttle counts");
    }
    if (c->db == NULL) {
        char msg[256];
        if ((c->db = gw_dbs_connect(cfg->database_url, msg, sizeof(msg))) == NULL) {
            gw_log(GW_LOG_WARN, "sign-in: %s", msg);
            gw_err_set(err, gw_err_store_unavailable, 503, "The database is unavailable; try again shortly.");
        }
    }
    return c;
}

/* ---- a job ---- */

typedef enum en_kind_t {
    K_LOGIN,
    K_REFRESH,
    K_LOGOUT,
    K_PASSWORD,
    K_INVITATION,
    K_RESET_REQUEST,
    K_RESET_CONFIRM,
    K_REGISTER,
    K_VERIFY_EMAIL,
} kind_t;

typedef struct st_job_t {
    /* in */
    kind_t kind;
    const gw_config_t *cfg;
    const gw_auth_t *auth;
    char *in[3]; /* malloc'd copies of the inputs (NULL: absent), wiped when freed */
    size_t len[3];
    gw_claims_t claims; /* the caller's token (logout, password) */
    bool has_claims;
    char ip[INET6_ADDRSTRLEN], user_agent[USER_AGENT_MAX], request_id[REQUEST_ID_MAX];
    bool has_user_agent;
    /* out */
    int rc;
    gw_err_t err;
    uint32_t retry_after;
    gw_session_tokens_t tokens;
    char status[24]; /* a verified registration's account status */
    /* the request, until it goes away; slot is the request's pointer to this (cleared when done) */
    h2o_req_t *req;
    struct st_job_t **slot;
    gw_offload_call_t *call;
} job_t;

static void free_job(job_t *job)
{
    for (size_t i = 0; i != 3; ++i)
        if (job->in[i] != NULL)
            gw_free_secret(job->in[i]);
    gw_session_tokens_free(&job->tokens);
    explicit_bzero(job, sizeof(*job));
    free(job);
}

static void on_work(void *arg)
{
    job_t *job = arg;
    job->err = (gw_err_t)GW_ERR_INIT;
    thread_conns_t *conns = thread_conns(job->cfg, &job->err);
    if (conns->db == NULL) {
        job->rc = -1;
        return;
    }
    gw_session_ctx_t ctx = {.cfg = job->cfg, .auth = job->auth, .db = conns->db, .redis = conns->redis};
    gw_session_client_t client = {.ip = job->ip[0] != '\0' ? job->ip : NULL,
                                  .user_agent = job->has_user_agent ? job->user_agent : NULL,
                                  .correlation = job->request_id[0] != '\0' ? job->request_id : NULL};
    bool denied;
    switch (job->kind) {
    case K_LOGIN:
        job->rc = gw_session_login(&ctx, job->in[2], job->in[0], job->in[1], job->len[1], &client, &job->tokens,
                                   &job->retry_after, &job->err);
        break;
    case K_REFRESH:
        job->rc = gw_session_refresh(&ctx, job->in[0], job->len[0], &client, &job->tokens, &job->err);
        break;
    case K_LOGOUT:
        job->rc = gw_session_logout(&ctx, job->in[0], job->len[0], &job->claims, &client, &denied, &job->err);
        break;
    case K_PASSWORD:
        job->rc =
            gw_session_password_change(&ctx, job->claims.user_id, job->claims.organisation_id, job->in[0], job->len[0],
                                       job->in[1], job->len[1], &client, &job->tokens, &job->retry_after, &job->err);
        break;
    case K_INVITATION:
        job->rc = gw_session_invitation_accept(&ctx, job->in[0], job->len[0], job->in[1], job->len[1], &client,
                                               &job->tokens, &job->err);
        break;
    case K_RESET_REQUEST: /* answered the same for every address (only the throttle refuses) */
        job->rc = gw_session_reset_request(&ctx, job->in[1], job->in[0], &client, &job->retry_after, &job->err);
        break;
    case K_RESET_CONFIRM:
        job->rc = gw_session_reset_confirm(&ctx, job->in[0], job->len[0], job->in[1], job->len[1], &client, &job->err);
        break;
    case K_REGISTER:
        job->rc = gw_session_register(&ctx, job->in[0], job->in[1], job->in[2], job->len[2], &client, &job->retry_after,
                                      &job->err);
        break;
    case K_VERIFY_EMAIL:
        job->rc =
            gw_session_verify_email(&ctx, job->in[0], job->len[0], &client, job->status, &job->retry_after, &job->err);
        break;
    }
}

/* Sets (or, with token NULL, clears) the refresh cookie. */
static void set_cookie(h2o_req_t *req, const char *token, int64_t max_age)
{
    char *v = h2o_mem_alloc_pool(&req->pool, 256);
    int n = snprintf(v, 256, COOKIE_NAME "=%s; Path=/v1/auth; Max-Age=%lld; HttpOnly; Secure; SameSite=Strict",
                     token != NULL ? token : "", (long long)(token != NULL ? max_age : 0));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_SET_COOKIE, NULL, v, (size_t)n);
}

static void no_store(h2o_req_t *req)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
}

static void reply_tokens(h2o_req_t *req, const job_t *job)
{
    const gw_session_tokens_t *t = &job->tokens;
    json_t *doc = json_pack("{s:s, s:s, s:I}", "access_token", t->access_token, "token_type", "Bearer", "expires_in",
                            (json_int_t)t->expires_in);
    if (job->cfg->refresh_cookie)
        set_cookie(req, t->refresh_token, t->refresh_expires_in);
    else
        json_object_set_new(doc, "refresh_token", json_string(t->refresh_token));
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    size_t len = strlen(text);
    char *body = h2o_mem_alloc_pool(&req->pool, len);
    memcpy(body, text, len);
    gw_free_secret(text);
    no_store(req);
    gw_reply_json(req, 200, body, len);
}

/* The field a 400 names: the quoted name at the start of the detail ('password' must ...), if any. */
static const char *field_of(h2o_req_t *req, const gw_err_t *err)
{
    if (err->code == gw_err_token_invalid)
        return "token";
    if (err->code != gw_err_parameter_invalid || err->detail[0] != '\'')
        return NULL;
    const char *end = strchr(err->detail + 1, '\'');
    if (end == NULL)
        return NULL;
    size_t n = (size_t)(end - err->detail - 1);
    char *f = h2o_mem_alloc_pool(&req->pool, n + 1);
    memcpy(f, err->detail + 1, n);
    f[n] = '\0';
    return f;
}

static void reply_failure(h2o_req_t *req, const gw_config_t *cfg, const gw_err_t *err, uint32_t retry_after)
{
    if (err->status == 429)
        gw_reply_retry_after(req, retry_after > 0 ? (int)retry_after : 1);
    else if (err->status == 503)
        gw_reply_retry_after(req, cfg->retry_after > 0 ? cfg->retry_after : 5);
    if (err->code == gw_err_unauthenticated)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer realm=\"settled\""));
    no_store(req);
    gw_reply_err_field(req, err, field_of(req, err));
}

static void on_done(void *arg)
{
    job_t *job = arg;
    h2o_req_t *req = job->req;
    if (job->rc != 0) {
        reply_failure(req, job->cfg, &job->err, job->retry_after);
    } else {
        switch (job->kind) {
        case K_LOGIN:
        case K_REFRESH:
        case K_PASSWORD:
        case K_INVITATION:
            reply_tokens(req, job);
            break;
        case K_LOGOUT:
            if (job->cfg->refresh_cookie)
                set_cookie(req, NULL, 0);
            gw_reply_empty(req, 204);
            break;
        case K_RESET_CONFIRM:
            gw_reply_empty(req, 204);
            break;
        case K_RESET_REQUEST:
        case K_REGISTER:
            no_store(req);
            gw_reply_json(req, 202, H2O_STRLIT("{\"status\":\"accepted\"}"));
            break;
        case K_VERIFY_EMAIL: {
            char *body = h2o_mem_alloc_pool(&req->pool, 64);
            int n = snprintf(body, 64, "{\"status\":\"%s\"}", job->status);
            no_store(req);
            gw_reply_json(req, 200, body, (size_t)n);
            break;
        }
        }
    }
    *job->slot = NULL; /* the request's dispose hook must not see it any more */
    free_job(job);
}

static void on_release(void *arg)
{
    free_job(arg);
}

static void on_request_dispose(void *p)
{
    job_t **slot = p;
    if (*slot != NULL)
        gw_offload_detach((*slot)->call); /* on_release frees it, without touching the request or slot */
}

/* The peer's address as text ("" if unknown). The address is the socket's: settled trusts no X-Forwarded-For (a
 * proxy in front makes every sign-in come from the proxy, docs/security.md). */
static void peer_of(h2o_req_t *req, char out[INET6_ADDRSTRLEN])
{
    out[0] = '\0';
    struct sockaddr_storage ss;
    if (req->conn == NULL || req->conn->callbacks->get_peername == NULL ||
        req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) == 0)
        return;
    const void *a = ss.ss_family == AF_INET    ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                    : ss.ss_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                               : NULL;
    if (a == NULL || inet_ntop(ss.ss_family, a, out, INET6_ADDRSTRLEN) == NULL)
        out[0] = '\0';
}

static job_t *new_job(gw_loop_t *loop, h2o_req_t *req, const gw_call_t *call, kind_t kind)
{
    job_t *job = gw_xcalloc(1, sizeof(*job));
    job->kind = kind;
    job->cfg = loop->cfg;
    job->auth = gw_module_state(loop, &gw_sessions_module);
    peer_of(req, job->ip);
    ssize_t ua = h2o_find_header(&req->headers, H2O_TOKEN_USER_AGENT, -1);
    if (ua != -1) {
        h2o_iovec_t v = req->headers.entries[ua].value;
        size_t n = v.len < USER_AGENT_MAX - 1 ? v.len : USER_AGENT_MAX - 1;
        /* only printable ASCII reaches the database (a cut UTF-8 sequence would not be valid text) */
        for (size_t i = 0; i != n; ++i)
            job->user_agent[i] = v.base[i] >= 0x20 && v.base[i] < 0x7f ? v.base[i] : '?';
        job->has_user_agent = true;
    }
    h2o_iovec_t rid = call->scope.request_id;
    snprintf(job->request_id, sizeof(job->request_id), "%.*s",
             (int)(rid.len < REQUEST_ID_MAX ? rid.len : REQUEST_ID_MAX - 1), rid.base != NULL ? rid.base : "");
    return job;
}

static void take(job_t *job, size_t i, const char *s, size_t len)
{
    job->in[i] = gw_xstrndup(s, len);
    job->len[i] = len;
}

/* Copies the call's inputs 0..n into the job. */
static void take_inputs(job_t *job, const gw_call_t *call, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        if (call->in[i].present)
            take(job, i, call->in[i].str.base, call->in[i].str.len);
}

/* Runs job in the offload pool (it owns job from here). */
static int run(gw_loop_t *loop, h2o_req_t *req, job_t *job)
{
    gw_err_t err = GW_ERR_INIT;
    if (job->auth == NULL) {
        free_job(job);
        gw_reply_retry_after(req, loop->cfg->retry_after > 0 ? loop->cfg->retry_after : 5);
        gw_reply_problem(req, 503, gw_err_auth_unavailable, "Access tokens cannot be made now.");
        return 0;
    }
    if (loop->offload == NULL) {
        free_job(job);
        gw_err_set(&err, gw_err_store_unavailable, 503, "The server is shutting down.");
        reply_failure(req, loop->cfg, &err, 0);
        return 0;
    }
    job->req = req;
    job_t **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), on_request_dispose);
    *slot = job;
    job->slot = slot;
    job->call = gw_offload_run(loop->offload, on_work, on_done, on_release, job, &err);
    if (job->call == NULL) { /* the pool is stopping, or its queue is full: nothing runs, the client may retry */
        *slot = NULL;
        free_job(job);
        reply_failure(req, loop->cfg, &err, 0);
    }
    return 0;
}

/* ---- the refresh cookie and its CSRF check ---- */

/* The refresh cookie's value, or an empty iovec. */
static h2o_iovec_t cookie_token(h2o_req_t *req)
{
    static const char name[] = COOKIE_NAME "=";
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_COOKIE, i)) != -1;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        const char *p = v.base, *end = v.base + v.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                ++p;
            const char *semi = memchr(p, ';', (size_t)(end - p)), *stop = semi != NULL ? semi : end;
            if ((size_t)(stop - p) > sizeof(name) - 1 && memcmp(p, name, sizeof(name) - 1) == 0)
                return h2o_iovec_init(p + sizeof(name) - 1, (size_t)(stop - p) - (sizeof(name) - 1));
            p = stop;
        }
    }
    return h2o_iovec_init(NULL, 0);
}

/* True when origin (len bytes) is listed in SETTLED_CORS_ORIGINS, or is this server's own (http or https and the
 * request's Host). */
static bool origin_allowed(const gw_config_t *cfg, h2o_req_t *req, const char *origin, size_t len)
{
    for (const char *p = cfg->cors_origins; p != NULL && *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (n == len && memcmp(p, origin, len) == 0)
            return true;
        if (end == NULL)
            break;
        p = end + 1;
    }
    h2o_iovec_t host = req->authority;
    for (size_t k = 0; k != 2; ++k) {
        const char *scheme = k == 0 ? "https://" : "http://";
        size_t s = strlen(scheme);
        if (host.len != 0 && len == s + host.len && memcmp(origin, scheme, s) == 0 &&
            memcmp(origin + s, host.base, host.len) == 0)
            return true;
    }
    return false;
}

/* A refresh token that came in the cookie is sent by the browser on its own, so the request must prove it comes
 * from the portal's script: the header X-Settled-CSRF: 1 (which a cross-site form cannot set, and a cross-site
 * script cannot send without a CORS preflight that settled refuses to origins it does not list), and an Origin, when
 * the browser sends one, that settled trusts. Answers 403 and returns false when not. */
static bool csrf_ok(gw_loop_t *loop, h2o_req_t *req)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-settled-csrf"), -1);
    bool ok =
        i != -1 && h2o_memis(req->headers.entries[i].value.base, req->headers.entries[i].value.len, H2O_STRLIT("1"));
    ssize_t o = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    if (ok && o != -1)
        ok = origin_allowed(loop->cfg, req, req->headers.entries[o].value.base, req->headers.entries[o].value.len);
    if (!ok)
        gw_reply_problem(req, 403, gw_err_csrf_failed,
                         "A refresh cookie needs the header X-Settled-CSRF: 1 and a trusted Origin.");
    return ok;
}

/* The refresh token of a refresh or logout: the body's, else (cookie mode) the cookie's after the CSRF check.
 * Returns 0 (token may be empty: none given), or -1 when it answered. */
static int refresh_token_of(gw_loop_t *loop, h2o_req_t *req, const gw_call_t *call, h2o_iovec_t *token)
{
    *token = call->in[0].present ? call->in[0].str : h2o_iovec_init(NULL, 0);
    if (token->len != 0 || !loop->cfg->refresh_cookie)
        return 0;
    h2o_iovec_t c = cookie_token(req);
    if (c.len == 0)
        return 0;
    if (c.len > TOKEN_MAX) {
        gw_reply_problem(req, 400, gw_err_parameter_invalid, "The refresh cookie is not a refresh token.");
        return -1;
    }
    if (!csrf_ok(loop, req))
        return -1;
    *token = c;
    return 0;
}

/* ---- the handlers ---- */

static void claims_of(job_t *job, const gw_scope_t *scope)
{
    job->has_claims = true;
    job->claims.user_id = scope->user_id;
    job->claims.organisation_id = scope->organisation_id;
    job->claims.role = scope->role;
    job->claims.customer_id = scope->customer_id;
    job->claims.exp = scope->exp;
    memcpy(job->claims.jti, scope->jti, sizeof(job->claims.jti));
}

/* The job of a route whose inputs go to the work as they are (the first n; with the caller's claims or not). */
static int start(gw_loop_t *loop, h2o_req_t *req, const gw_call_t *call, kind_t kind, size_t n, bool claims)
{
    job_t *job = new_job(loop, req, call, kind);
    if (claims)
        claims_of(job, &call->scope);
    take_inputs(job, call, n);
    return run(loop, req, job);
}

int gw_sessions_login(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, K_LOGIN, GW_SESSIONS_LOGIN_NINPUTS, false);
}

int gw_sessions_refresh(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    h2o_iovec_t token;
    if (refresh_token_of(loop, req, call, &token) != 0)
        return 0;
    if (token.len == 0) {
        gw_err_t err = GW_ERR_INIT;
        gw_err_set(&err, gw_err_parameter_invalid, 400, "'refresh_token' is required.");
        gw_reply_err_field(req, &err, "refresh_token");
        return 0;
    }
    job_t *job = new_job(loop, req, call, K_REFRESH);
    take(job, 0, token.base, token.len);
    return run(loop, req, job);
}

int gw_sessions_logout(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    h2o_iovec_t token;
    if (refresh_token_of(loop, req, call, &token) != 0)
        return 0;
    job_t *job = new_job(loop, req, call, K_LOGOUT);
    claims_of(job, &call->scope);
    if (token.len != 0)
        take(job, 0, token.base, token.len);
    return run(loop, req, job);
}

int gw_sessions_password(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, K_PASSWORD, GW_SESSIONS_PASSWORD_NINPUTS, true);
}

int gw_sessions_invitation_accept(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, K_INVITATION, GW_SESSIONS_TOKEN_PASSWORD_NINPUTS, false);
}

int gw_sessions_reset_request(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, K_RESET_REQUEST, GW_SESSIONS_RESET_REQUEST_NINPUTS, false);
}

int gw_sessions_reset_confirm(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, K_RESET_CONFIRM, GW_SESSIONS_TOKEN_PASSWORD_NINPUTS, false);
}

int gw_sessions_register(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, K_REGISTER, GW_SESSIONS_REGISTER_NINPUTS, false);
}

int gw_sessions_verify_email(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, K_VERIFY_EMAIL, GW_SESSIONS_VERIFY_EMAIL_NINPUTS, false);
}
