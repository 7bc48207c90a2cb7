/* SPDX-License-Identifier: MIT */
/* ops.h: the operator endpoints /healthz, /readyz and /metrics. */
#ifndef GW_OPS_H
#define GW_OPS_H

#include "api.h"

int gw_ops_healthz(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);
int gw_ops_readyz(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);
int gw_ops_metrics(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);

#endif
