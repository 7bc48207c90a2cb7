/* SPDX-License-Identifier: MIT */
/*
 * xero_callback.h: GET /v1/xero/callback, where Xero sends an admin back after they authorised settled
 * (the path of SETTLED_XERO_REDIRECT_URI). The state's signature and expiry are checked on the loop, before
 * any database work; the nonce's consumption, the code exchange and tenant discovery block, so they run on
 * the offload pool (a full queue answers 503); the reply comes back on the loop.
 */
#ifndef GW_XERO_CALLBACK_H
#define GW_XERO_CALLBACK_H

#include "api.h"

int gw_xero_callback_handle(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);

/* Finds query parameter name in query (without the '?') and percent-decodes it into the pool. Returns 0, 1 if
 * absent, or -1 if it is malformed or longer than max bytes. Exposed for tests. */
int gw_query_param(h2o_mem_pool_t *pool, h2o_iovec_t query, const char *name, size_t max, h2o_iovec_t *out);

/* The error a browser is shown for err: the same code and status, and a detail that names no database, address or
 * library message. err's detail is kept when own_detail is set (a sentence of the handler or the offload pool) and
 * for the 400s of the domain (oauth_callback_invalid, oauth_state_used: sentences for the administrator); any
 * other is replaced by a generic one pointing at the log line of the request id. Exposed for tests. */
void gw_xero_callback_public_err(const gw_err_t *err, bool own_detail, gw_err_t *out);

#endif
