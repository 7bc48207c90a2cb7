/* SPDX-License-Identifier: MIT */
/*
 * xero_callback.h: GET /v1/xero/callback, where Xero sends an admin back after they authorised settled
 * (the path of SETTLED_XERO_REDIRECT_URI). The code exchange and tenant discovery block, so they run on
 * the offload pool; the reply comes back on the loop.
 */
#ifndef GW_XERO_CALLBACK_H
#define GW_XERO_CALLBACK_H

#include "api.h"

int gw_xero_callback_handle(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);

/* Finds query parameter name in query (without the '?') and percent-decodes it into the pool. Returns 0, 1 if
 * absent, or -1 if it is malformed or longer than max bytes. Exposed for tests. */
int gw_query_param(h2o_mem_pool_t *pool, h2o_iovec_t query, const char *name, size_t max, h2o_iovec_t *out);

#endif
