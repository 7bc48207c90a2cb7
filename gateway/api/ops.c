/* SPDX-License-Identifier: MIT */
/* ops.c: liveness, readiness and Prometheus metrics, answered on the loop without touching the store. */
#include "ops.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "reply.h"

int gw_ops_healthz(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    gw_reply_json(req, 200, H2O_STRLIT("{\"status\":\"ok\"}"));
    return 0;
}

/* Ready when this loop has a live database connection. Redis and the Xero connections are reported but never
 * gate readiness: webhooks are accepted without them. xero_reauth counts token sets an admin must re-authorise
 * (as last counted by a queue worker). */
int gw_ops_readyz(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    bool pg = gw_db_is_up(loop->db);
    const char *redis = loop->redis == NULL ? "disabled" : gw_redis_is_up(loop->redis) ? "up" : "down";
    long long reauth = (long long)gw_metrics_xero_reauth_get();
    char *body = h2o_mem_alloc_pool(&req->pool, 192);
    int n = snprintf(
        body, 192, "{\"status\":\"%s\",\"postgres\":\"%s\",\"redis\":\"%s\",\"xero\":\"%s\",\"xero_reauth\":%lld}",
        pg ? "ready" : "unavailable", pg ? "up" : "down", redis, reauth != 0 ? "needs_reauth" : "ok", reauth);
    gw_reply_json(req, pg ? 200 : 503, body, (size_t)n);
    return 0;
}

int gw_ops_metrics(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    size_t len;
    char *text = gw_metrics_render(&len);
    char *copy = h2o_mem_alloc_pool(&req->pool, len);
    memcpy(copy, text, len);
    free(text);
    gw_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", copy, len);
    return 0;
}
