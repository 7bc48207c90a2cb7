/* SPDX-License-Identifier: MIT */
/*
 * portal_task.h: a portal API request whose work blocks (provider calls through fetch.c, database writes with
 * business logic), run on the offload pool and never on the loop. The handler fills a task (its inputs and the
 * caller's scope, copied: the task outlives nothing but may outlive the request), and gw_portal_task_run hands it to
 * the pool, whose bounded queue answers 503 when full. On the pool thread the work gets a blocking database session
 * and a fetch context with the loop's provider quotas (shared by every thread of the process: quota.h); back on the
 * loop the task's outcome is answered: an error as problem+json (a 503 with Retry-After), a JSON document, raw bytes
 * of a content type (a PDF), or an empty 204. A request that went away leaves the work to finish; nobody is told.
 */
#ifndef GW_PORTAL_TASK_H
#define GW_PORTAL_TASK_H

#include "api.h"
#include "fetch.h"

typedef struct st_gw_portal_task_t gw_portal_task_t;

/* Runs on a pool thread with ctx ready (ctx->db a session of its own, ctx->quota the loop's); fills the outcome. */
typedef void (*gw_portal_task_cb)(gw_portal_task_t *t, gw_fetch_ctx_t *ctx);

#define GW_PORTAL_TASK_ID_MAX 136

struct st_gw_portal_task_t {
    /* in: set by gw_portal_task_new */
    const gw_config_t *cfg;
    int64_t organisation_id, customer_id, user_id;
    gw_role_t role;
    char request_id[GW_PORTAL_TASK_ID_MAX];
    gw_portal_task_cb work;
    void *data; /* the handler's own inputs, malloc'd; freed with the task (free(data)) */
    /* out: exactly one of err (set), body (with content_type), doc, or status 204 */
    int status; /* 200, 201, 204 */
    gw_err_t err;
    json_t *doc; /* answered as application/json */
    char *body;  /* malloc'd bytes, answered with content_type (and etag, when set) */
    size_t body_len;
    const char *content_type;
    char etag[72]; /* a quoted entity tag, or "" */
    /* the request, until it goes away */
    h2o_req_t *req;
    gw_portal_task_t **slot;
    gw_offload_call_t *call;
};

/* A task for call on work, with data (malloc'd, may be NULL) to be freed with it. */
gw_portal_task_t *gw_portal_task_new(gw_loop_t *loop, const gw_call_t *call, gw_portal_task_cb work, void *data);

/* Starts t for req (taking it) and returns 0; answers 503 at once when the pool cannot take it. */
int gw_portal_task_run(gw_loop_t *loop, h2o_req_t *req, gw_portal_task_t *t);

/* Turns the outcome of a provider call that did not succeed into t->err: 503 with a wait for a quota or a 429
 * or a 409 of a twin request in flight (provider_unavailable), 502 provider_unavailable for a failure, 502
 * provider_rejected for a refusal; what is
 * the provider's own detail goes to the log, not to the caller. */
void gw_portal_task_fetch_err(gw_portal_task_t *t, const char *what, const gw_fetch_result_t *res);

/* True when req's If-None-Match names etag (weakly compared, in a list, or '*'). */
bool gw_portal_etag_listed(h2o_req_t *req, const char *etag);

/* Sends an entity (bytes of content_type with a strong etag, Cache-Control private) or 304 when If-None-Match
 * names etag. */
void gw_portal_reply_entity(h2o_req_t *req, const char *content_type, const char *etag, const char *body, size_t len);

/* The module that keeps each loop's provider quotas (listed in routes.c's module list). */
extern const gw_module_t gw_portal_task_module;

#endif
