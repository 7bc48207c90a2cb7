/* SPDX-License-Identifier: MIT */
/*
 * reply.h: the one reply path. Every error leaves as application/problem+json with a stable machine
 * code (listed in docs/errors.md), or as the bare reply a provider mandates.
 */
#ifndef GW_REPLY_H
#define GW_REPLY_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include "err.h"

/* Sends err as problem+json with its status, code and detail, and the request id of req (X-Request-Id of the
 * response) when it has one. An err that is NULL or has no code answers 500 internal; one whose status is not an
 * HTTP status answers its code with 500. The one way an error leaves settled, except the bare replies a provider
 * mandates (gw_reply_empty with err->status). */
void gw_reply_err(h2o_req_t *req, const gw_err_t *err);
/* Notes err's code and detail for the request's log line (notes.h); gw_reply_err and gw_reply_problem do it
 * themselves, a handler that answers err with a bare status (a provider's mandate) calls it. */
void gw_reply_note_err(h2o_req_t *req, const gw_err_t *err);
/* Builds the problem+json body gw_reply_err sends for err into pool, and stores the status it answers with in
 * *status. */
h2o_iovec_t gw_reply_err_body(h2o_mem_pool_t *pool, const gw_err_t *err, h2o_iovec_t request_id, int *status);

/* Sends a problem+json reply: code is an error-code constant, detail a sentence (may be NULL). For callers
 * that have no gw_err_t; new code fills one and calls gw_reply_err. */
void gw_reply_problem(h2o_req_t *req, int status, const char *code, const char *detail);
/* As gw_reply_err, with an extension member "field" naming the input to blame (field may be NULL: none). */
void gw_reply_err_field(h2o_req_t *req, const gw_err_t *err, const char *field);
/* Sends body (len bytes) as a 200 application/json representation of a GET: with a strong ETag (a digest of the
 * body) and Cache-Control: private, no-cache; or 304 without a body when If-None-Match names that ETag (or *). */
void gw_reply_json_cached(h2o_req_t *req, const char *body, size_t len);
/* True if the If-None-Match list value names etag (a quoted strong tag), weakly compared, or is "*". */
bool gw_reply_etag_listed(h2o_iovec_t list, const char *etag, size_t elen);
/* Sends body (len bytes) as application/json. */
void gw_reply_json(h2o_req_t *req, int status, const char *body, size_t len);
/* Sends body with the given content type. */
void gw_reply_text(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len);
/* Sends a reply with no body at all (Content-Length: 0). */
void gw_reply_empty(h2o_req_t *req, int status);
/* Adds Retry-After: seconds. */
void gw_reply_retry_after(h2o_req_t *req, int seconds);
/* The reason phrase of an HTTP status. */
const char *gw_reply_reason(int status);
/* Builds the problem+json body for code into the request's pool. */
h2o_iovec_t gw_reply_problem_body(h2o_mem_pool_t *pool, int status, const char *code, const char *detail,
                                  h2o_iovec_t request_id);

#endif
