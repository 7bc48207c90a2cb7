/* SPDX-License-Identifier: MIT */
/* ops.h: the operator endpoints /healthz, /readyz and /metrics. */
#ifndef GW_OPS_H
#define GW_OPS_H

#include "api.h"

int gw_ops_healthz(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);
int gw_ops_readyz(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);
/* How long the shared gauges of /metrics are reused before a scrape reads them again from PostgreSQL. */
#define GW_OPS_GAUGES_TTL_MS 2000
/* /metrics: the process's metrics and the shared gauges (read again through loop->offload when older than the
 * TTL; without an offload pool, the cached ones). */
int gw_ops_metrics(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);

/* Closes the shared gauges' database session (at exit, once no loop runs). */
void gw_ops_gauges_shutdown(void);

#endif
