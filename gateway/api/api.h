/* SPDX-License-Identifier: MIT */
/*
 * api.h: the contract between the front door and the handlers of the API floor. A route row declares method,
 * path, whether a /{source} segment may follow, and the handler; the front door (routes.c) matches, answers
 * 404/405 itself, stamps the request id, and only then calls the handler, which never checks method or path
 * again. A portal API row (an api handler) also declares who may call it (its access) and every input it takes
 * (path parameters of a pattern like "/v1/invoices/{id}", query parameters, JSON body fields), each with its type
 * and bounds: the guard (gateway/guard.c) authenticates, authorises and validates against the row, and the
 * handler receives only a validated gw_call_t (its inputs and the caller's scope); it never checks roles. A module is
 * what a handler file brings to every event loop: the prepared statements it submits to the loop's database pool, and
 * per-loop state with its init and dispose (as an h2o handler declares on_context_init). The route table lists the
 * modules; the server prepares their statements on every connection and runs their init on every loop before it serves.
 */
#ifndef GW_API_H
#define GW_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "auth.h"
#include "db.h"
#include "loop.h"

typedef struct st_gw_route_t gw_route_t;

/* A handler answers req (now or later) and returns 0. source is the /{source} segment, or empty. */
typedef int (*gw_handler_cb)(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);

/* Who may call a portal API route. A caller whose role the route does not allow is answered 404, as if the route
 * did not exist (docs/api.md, "Roles"); a caller without a valid token 401, unless the route is public. */
typedef enum en_gw_access_t {
    GW_ACCESS_PUBLIC = 0,      /* anyone, no token needed (login); a token, if sent, is not looked at */
    GW_ACCESS_CLIENT = 1,      /* a customer's users */
    GW_ACCESS_ADMIN = 2,       /* an organisation's staff */
    GW_ACCESS_ADMIN_CLIENT = 3 /* both (each sees its own scope) */
} gw_access_t;

/* Where an input comes from. */
typedef enum en_gw_in_where_t {
    GW_IN_PATH,  /* a {name} segment of the path pattern: required; a value that does not validate answers 404 */
    GW_IN_QUERY, /* ?name=value, percent-decoded; each at most once */
    GW_IN_BODY,  /* a member of the JSON object body */
} gw_in_where_t;

/* The type of an input, and what its bounds mean. */
typedef enum en_gw_in_type_t {
    GW_IN_STRING, /* UTF-8 text without control characters, min..max bytes (max 0: 1024) */
    GW_IN_INT,    /* a decimal integer (a JSON integer in a body), min..max */
    GW_IN_BOOL,   /* true or false (in a query: "true"/"false") */
    GW_IN_ENUM,   /* one of values (NULL-terminated); the value's index in .i */
    GW_IN_DATE,   /* YYYY-MM-DD, a real calendar day; YYYYMMDD in .i */
    GW_IN_MONEY,  /* a decimal money string ("12.30", "-5", "7891"), at most 4 decimals (a JSON string in a body) */
    GW_IN_CURSOR, /* an opaque base64url token settled issued, at most max bytes (max 0: 512) */
    GW_IN_ARRAY,  /* a body's JSON array of at most max elements (max 0: 100), its compact JSON text in .str; the
                     handler (or its SQL function) validates the elements and names the field of a bad one */
} gw_in_type_t;

typedef struct st_gw_input_t {
    const char *name;
    gw_in_where_t where;
    gw_in_type_t type;
    bool required;
    int64_t min, max;          /* GW_IN_INT: the value; GW_IN_STRING / GW_IN_CURSOR: the length in bytes */
    const char *const *values; /* GW_IN_ENUM: the allowed words, NULL-terminated */
    const char *def;           /* the value (as text) a missing optional input takes, or NULL: absent */
} gw_input_t;

/* The most inputs a route declares. */
#define GW_INPUTS_MAX 16

/* One validated input. */
typedef struct st_gw_value_t {
    bool present;    /* given, or taken from the default */
    h2o_iovec_t str; /* the text (NUL-terminated, in the request's pool): strings, enums, dates, money, cursors */
    int64_t i;       /* GW_IN_INT the value, GW_IN_BOOL 0/1, GW_IN_ENUM the index, GW_IN_DATE YYYYMMDD */
} gw_value_t;

/* Who calls: taken from the verified access token, never from the request itself. */
typedef struct st_gw_scope_t {
    gw_role_t role;          /* GW_ROLE_NONE on a public route */
    int64_t organisation_id; /* every query is scoped by it */
    int64_t customer_id;     /* clients: their customer (queries are scoped by it too); admins: 0 */
    int64_t user_id;
    h2o_iovec_t request_id;
    char jti[48]; /* the access token's jti ("" on a public route): sign-out denies it */
    int64_t exp;  /* the access token's expiry (seconds since the epoch; 0 on a public route) */
} gw_scope_t;

/* What the guard hands an api handler: the caller and the route's inputs, validated, in the row's order. */
typedef struct st_gw_call_t {
    gw_scope_t scope;
    gw_value_t in[GW_INPUTS_MAX]; /* in[k] is the row's inputs[k] */
    json_t *body;                 /* the parsed JSON body (NULL without one); freed with the request */
} gw_call_t;

/* A portal API handler: answers req (now or later) and returns 0. call lives as long as the request. */
typedef int (*gw_api_cb)(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

struct st_gw_route_t {
    const char *name; /* the label of the route in metrics and logs */
    const char *method;
    const char *path;
    bool source_suffix;
    gw_handler_cb handler;    /* a route with its own parsing (webhooks, ops, the Xero callback); or ... */
    gw_api_cb api;            /* ... a portal API route, run behind the guard (path may hold {param} segments) */
    gw_access_t access;       /* api routes: who may call it */
    const gw_input_t *inputs; /* api routes: every input it takes; anything else is refused */
    size_t ninputs;
    const char *summary;  /* api routes: one line for `settled routes` and docs/openapi.yaml */
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
