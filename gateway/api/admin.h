/* SPDX-License-Identifier: MIT */
/*
 * admin.h: what the admin routes (customers.c, matching.c, terms.c, users.c) share. Each of them is one statement on
 * the loop's async pool calling one function of schema/functions/admin.sql, which does the whole change in the
 * statement's transaction, scoped by the admin's organisation and audited with actor "user:<id>" and the request id.
 * A read returns one JSON document (NULL: not in the organisation, 404); a write returns (result, field, detail,
 * doc), which gw_admin_write turns into the answer. docs/api.md, "Admin".
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include "api.h"

/* The inputs of a keyset-paginated list: limit (1..100, default 25) and cursor, as the first two of a row's inputs. */
#define GW_ADMIN_PAGE_INPUTS                                                                                           \
    {"limit", GW_IN_QUERY, GW_IN_INT, .min = 1, .max = 100, .def = "25"},                                              \
    {                                                                                                                  \
        "cursor", GW_IN_QUERY, GW_IN_CURSOR, .max = 64                                                                 \
    }

/* A path {id}: a positive decimal id (anything else is not found). */
#define GW_ADMIN_ID_INPUT                                                                                              \
    {                                                                                                                  \
        "id", GW_IN_PATH, GW_IN_INT, .required = true, .min = 1, .max = INT64_MAX                                      \
    }

/* Submits a read: answers its document (ETag, If-None-Match) or 404 when it is NULL. Returns 0. */
int gw_admin_read(gw_loop_t *loop, h2o_req_t *req, const gw_db_statement_t *stmt, const gw_db_param_t *params,
                  size_t nparams);
/* Submits a write: answers 'ok' 200 or 'created' 201 with doc, 'not_found' 404, 'conflict' 409 (detail), 'invalid'
 * 400 parameter_invalid naming field. Returns 0. */
int gw_admin_write(gw_loop_t *loop, h2o_req_t *req, const gw_db_statement_t *stmt, const gw_db_param_t *params,
                   size_t nparams);

/* Answers a write's row (as gw_admin_write does); for a handler that ran the statement itself (the offload pool).
 * doc, field and detail may be NULL. */
void gw_admin_answer(h2o_req_t *req, const char *result, const char *field, const char *detail, const char *doc);

/* The parameter of an input: its text, or SQL NULL when absent. */
gw_db_param_t gw_admin_value(const gw_value_t *v);
/* The parameters $1 organisation and, for a write, the actor "user:<id>" and the request id. */
gw_db_param_t gw_admin_org(h2o_req_t *req, const gw_scope_t *scope);
gw_db_param_t gw_admin_actor(h2o_req_t *req, const gw_scope_t *scope);
gw_db_param_t gw_admin_request_id(const gw_scope_t *scope);

/* The id after which a page starts, from a cursor input (SQL NULL when absent), into *out; returns 0, or answers 400
 * naming the cursor and returns -1. */
int gw_admin_cursor(h2o_req_t *req, const gw_value_t *cursor, gw_db_param_t *out);
/* A customer id given as a string body field (ids are decimal strings, as the API answers them) into *out (SQL NULL
 * when absent); returns 0, or answers 400 naming field and returns -1. */
int gw_admin_id_field(h2o_req_t *req, const gw_value_t *v, const char *field, gw_db_param_t *out);

#endif
