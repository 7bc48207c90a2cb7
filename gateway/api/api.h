/* SPDX-License-Identifier: MIT */
/*
 * api.h: the contract between the front door and the handlers of the API floor. A route row declares method,
 * path, whether a /{source} segment may follow, and the handler; the front door (routes.c) matches, answers
 * 404/405 itself, stamps the request id, and only then calls the handler, which never checks method or path
 * again. A module is what a handler file brings to every event loop: the prepared statements it submits to the
 * loop's database pool, and per-loop state with its init and dispose (as an h2o handler declares
 * on_context_init). The route table lists the modules; the server prepares their statements on every
 * connection and runs their init on every loop before it serves.
 */
#ifndef GW_API_H
#define GW_API_H

#include <stdbool.h>
#include <stddef.h>
#include "db.h"
#include "loop.h"

typedef struct st_gw_route_t gw_route_t;

/* A handler answers req (now or later) and returns 0. source is the /{source} segment, or empty. */
typedef int (*gw_handler_cb)(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);

struct st_gw_route_t {
    const char *name; /* the label of the route in metrics and logs */
    const char *method;
    const char *path;
    bool source_suffix;
    gw_handler_cb handler;
    const void *data;     /* the handler's own: for webhook routes, the connector */
    const char *provider; /* for webhook routes, the provider (intake latency and events are counted by it) */
    bool ops;             /* an operator endpoint: also served on settled work's SETTLED_OPS_LISTEN */
    bool head;            /* a GET route that also answers HEAD (the same status and headers, no body) */
    size_t id;            /* the row's position in the route table, set when the table is registered */
};

typedef struct st_gw_module_t {
    const char *name;
    /* the statements the module submits to a loop's pool (gw_db_submit takes a pointer into this array) */
    const gw_db_statement_t *statements;
    size_t nstatements;
    /* runs on each loop's thread before it serves; returns the module's state on that loop (may be NULL) */
    void *(*on_loop_init)(gw_loop_t *loop);
    /* runs once the loop stopped serving and its database pool is gone, with what on_loop_init returned */
    void (*on_loop_dispose)(gw_loop_t *loop, void *state);
} gw_module_t;

/* The state module keeps on loop (what its on_loop_init returned there), or NULL. */
static inline void *gw_module_state(const gw_loop_t *loop, const gw_module_t *module)
{
    for (size_t i = 0; i != loop->nmodules; ++i)
        if (loop->modules[i].module == module)
            return loop->modules[i].state;
    return NULL;
}

#endif
