/* SPDX-License-Identifier: MIT */
/*
 * guard.h: the check before every portal API handler. For a route row with an api handler (api.h) the guard
 * authenticates the caller (Authorization: Bearer, gw_auth_verify_access, the jti deny list in Redis), authorises
 * it by the row's access (a role the route does not allow gets 404, never 403), validates every input against the
 * row (path, query, JSON body), applies CORS, and only then calls the handler with a gw_call_t: the validated
 * inputs and the caller's scope. Handlers never check roles. docs/api.md describes what callers see.
 */
#ifndef GW_GUARD_H
#define GW_GUARD_H

#include <stdbool.h>
#include "api.h"
#include "config.h"
#include "err.h"

/* The most {param} segments of a path pattern. */
#define GW_PATH_PARAMS_MAX 4

/* Makes the access-token rules shared by every loop from cfg (gw_auth_create). Call once before any loop runs.
 * When the settings cannot make them (SETTLED_JWT_* not set up), logs why and the guarded routes answer 503
 * auth_unavailable; webhooks and the operator endpoints are unaffected. */
void gw_guard_start(const gw_config_t *cfg);
/* Frees what gw_guard_start made, once every loop has stopped. */
void gw_guard_stop(void);

/* Runs the api route for req: params are the values of the path pattern's {param} segments, in order. Answers
 * (now or later) and returns 0. */
int gw_guard_run(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const h2o_iovec_t *params, size_t nparams);

/* Adds the CORS headers for req's Origin when cfg allows it (SETTLED_CORS_ORIGINS); a no-op otherwise. */
void gw_guard_cors(const gw_config_t *cfg, h2o_req_t *req);
/* True when req is a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) from an allowed origin;
 * then it is answered 204 with methods (", "-separated, e.g. "GET") allowed. */
bool gw_guard_preflight(const gw_config_t *cfg, h2o_req_t *req, const char *methods);

/*
 * Validates the inputs of route into call->in: path parameters (params, in pattern order), the query string (query,
 * without '?', may be empty) and a JSON body (body; content_type its Content-Type or empty). Values live in pool;
 * the parsed body goes to call->body (the caller frees it with json_decref). Returns 0, or -1 with err set
 * (parameter_unknown, parameter_invalid or json_invalid, 400; not_found, 404, for a path parameter) and *field
 * naming the offending input (NULL when none is to blame). Pure: exposed for the tests.
 */
GW_MUSTCHECK int gw_guard_validate(h2o_mem_pool_t *pool, const gw_route_t *route, const h2o_iovec_t *params,
                                   size_t nparams, h2o_iovec_t query, h2o_iovec_t body, h2o_iovec_t content_type,
                                   gw_call_t *call, gw_err_t *err, const char **field);

/* True when a caller of role may call a route of access (a public route: anyone). */
bool gw_guard_allows(gw_access_t access, gw_role_t role);

/* The Redis key whose existence revokes the access token of jti: "settled:revoked:jti:<jti>". Logout sets it
 * (SET key 1 EX <seconds until the token's exp>). Writes a NUL-terminated key into out (out has 96 bytes) and
 * returns its length. */
size_t gw_guard_revoked_key(const char *jti, char out[96]);

#endif
