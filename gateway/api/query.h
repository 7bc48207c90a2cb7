/* SPDX-License-Identifier: MIT */
/*
 * query.h: one read for one request, on the loop's async pool. The api handlers' common path: submit a prepared
 * statement of their module, answer 503 (store_unavailable, Retry-After) when the pool cannot take or run it, and
 * hand the rows to the handler only while the request is alive (a client that hung up detaches the job).
 */
#ifndef GW_QUERY_H
#define GW_QUERY_H

#include "api.h"

/* Gets the rows of a query that succeeded, with req still alive; answers req. */
typedef void (*gw_query_cb)(h2o_req_t *req, const gw_db_rows_t *rows, void *data);

/* Submits stmt with params for req; cb(req, rows, data) fires at most once (never when req goes away first, or the
 * query fails: then req is answered 503 here). data must live as long as req (its pool). Returns 0. */
int gw_query(gw_loop_t *loop, h2o_req_t *req, const gw_db_statement_t *stmt, const gw_db_param_t *params,
             size_t nparams, gw_query_cb cb, void *data);

/* A text parameter of the decimal v, in req's pool; gw_query_null, SQL NULL. */
gw_db_param_t gw_query_int(h2o_req_t *req, int64_t v);
static inline gw_db_param_t gw_query_null(void)
{
    return (gw_db_param_t){NULL, 0, false};
}
/* The caller's scope as $1 (organisation) and $2 (customer for a client, NULL for an admin) into params[0..1]. */
void gw_query_scope(h2o_req_t *req, const gw_scope_t *scope, gw_db_param_t params[2]);

/* Sends doc (taking it) as a cached JSON representation (gw_reply_json_cached). */
void gw_query_reply(h2o_req_t *req, json_t *doc);

#endif
