/* SPDX-License-Identifier: MIT */
/*
 * routes.h: the one route table and the module list. Each row (api/api.h) declares method, path, whether a
 * /{source} segment may follow, the handler and the route's name; a route's id is its position in the table.
 * The dispatcher matches, answers 404/405 itself, stamps the request id, and only then calls the handler.
 * Handlers never check method or path again.
 */
#ifndef GW_ROUTES_H
#define GW_ROUTES_H

#include <stdbool.h>
#include <stdio.h>
#include "api.h"

extern gw_route_t gw_routes[];
extern const size_t gw_nroutes;

/* The handler modules, whose statements every database pool prepares and whose per-loop init every loop runs. */
extern const gw_module_t *const gw_modules[];
extern const size_t gw_nmodules;

/* Numbers the routes, gives their names to the metrics, and registers the dispatcher, the access logger and the
 * reply filter on host. Call once, before any loop runs. */
void gw_routes_register(h2o_hostconf_t *host);
/* As gw_routes_register, but only the operator endpoints (rows with ops set) are served; every other path is 404.
 * For settled work's SETTLED_OPS_LISTEN. */
void gw_routes_register_ops(h2o_hostconf_t *host);
/* Writes the route table to out: one line per route (method, path, access, name), or with json one JSON object a
 * line ({"name", "method", "path", "access", "api", "summary", "inputs": [{"name", "in", "type", "required", "min",
 * "max", "values", "default"}]}). */
void gw_routes_print(FILE *out, bool json);
/* The route a path belongs to, or NULL (for requests h2o answered before any handler ran). */
const gw_route_t *gw_routes_classify(h2o_iovec_t path);

#endif
