/* SPDX-License-Identifier: MIT */
/*
 * routes.h: the one route table. Each row declares method, path, whether a /{source} segment may
 * follow, and the handler; the dispatcher matches, answers 404/405 itself, stamps the request id, and
 * only then calls the handler. Handlers never check method or path again.
 */
#ifndef GW_ROUTES_H
#define GW_ROUTES_H

#include <stdbool.h>
#include "metrics.h"
#include "server.h"

typedef struct st_gw_route_t gw_route_t;

/* A handler answers req (now or later) and returns 0. source is the /{source} segment, or empty. */
typedef int (*gw_handler_cb)(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);

struct st_gw_route_t {
    const char *method;
    const char *path;
    bool source_suffix;
    enum gw_route_id id;
    gw_handler_cb handler;
    const void *data; /* the handler's own: for webhook routes, the connector */
};

extern const gw_route_t gw_routes[];
extern const size_t gw_nroutes;

/* Registers the dispatcher, the access logger and the reply filter on host. */
void gw_routes_register(h2o_hostconf_t *host);
/* Which metrics route a path belongs to (for requests h2o answered before any handler ran). */
enum gw_route_id gw_routes_classify(h2o_iovec_t path);

#endif
