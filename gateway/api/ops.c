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

/* Ready when this loop has a live database connection. Redis, the Xero connections and the providers' circuits are
 * reported but never gate readiness: webhooks are accepted without them (an open circuit means a provider API is
 * down, and intake must go on storing its webhooks). xero_reauth counts token sets an admin must re-authorise, and
 * circuits lists (up to READYZ_CIRCUITS of) the provider accounts whose circuit is open or half-open, as last read by
 * a queue worker. */
#define READYZ_CIRCUITS 16
int gw_ops_readyz(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    bool pg = gw_db_is_up(loop->db);
    const char *redis = loop->redis == NULL ? "disabled" : gw_redis_is_up(loop->redis) ? "up" : "down";
    long long reauth = (long long)gw_metrics_xero_reauth_get();
    gw_metrics_circuit_t open[READYZ_CIRCUITS];
    size_t nopen = gw_metrics_circuits_open(open, READYZ_CIRCUITS);
    size_t cap = 256 + READYZ_CIRCUITS * (sizeof(open[0]) + 80), len = 0;
    char *body = h2o_mem_alloc_pool(&req->pool, cap);
    len += (size_t)snprintf(
        body, cap,
        "{\"status\":\"%s\",\"postgres\":\"%s\",\"redis\":\"%s\",\"xero\":\"%s\",\"xero_reauth\":%lld,"
        "\"circuits_open\":%zu,\"circuits\":[",
        pg ? "ready" : "unavailable", pg ? "up" : "down", redis, reauth != 0 ? "needs_reauth" : "ok", reauth, nopen);
    for (size_t i = 0; i != nopen && i != READYZ_CIRCUITS; ++i)
        len += (size_t)snprintf(body + len, cap - len,
                                "%s{\"provider\":\"%s\",\"account\":\"%s\",\"state\":\"%s\",\"retry_in_ms\":%lld}",
                                i != 0 ? "," : "", open[i].provider, open[i].account, open[i].state,
                                (long long)(open[i].retry_in_ms > 0 ? open[i].retry_in_ms : 0));
    len += (size_t)snprintf(body + len, cap - len, "]}");
    gw_reply_json(req, pg ? 200 : 503, body, len);
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
