/* SPDX-License-Identifier: MIT */
/*
 * task.h: one blocking piece of work for one API request, on the offload pool (offload.h), so that an api handler
 * whose work needs a blocking database session (a transaction with business logic, a domain function of the
 * command line, a Redis read of the quotas) never blocks its loop. The task copies what the work needs of the call
 * (the scope and every validated input) before it leaves the loop, opens a gw_dbs session on the pool thread, runs
 * the work there, and answers the request back on the loop: a JSON document, or the error. A full offload queue or
 * an unreachable database answers 503 store_unavailable with Retry-After; a request that goes away detaches the task
 * (the work still finishes, nobody is answered).
 */
#ifndef GW_TASK_H
#define GW_TASK_H

#include "api.h"
#include "db.h"

/* What the work gets, on a pool thread: everything is its own (malloc'd copies), valid until the task ends. */
typedef struct st_gw_task_t {
    const gw_config_t *cfg;
    gw_dbs_t *db; /* open on the pool thread before the work runs */
    int64_t organisation_id, user_id;
    char *request_id;
    char *in[GW_INPUTS_MAX]; /* the text of each given input (NULL: absent), in the row's order */
    int64_t ini[GW_INPUTS_MAX];
    /* the work's answer: doc (taken) with status, or, when err.code is set, the error (and field to blame) */
    json_t *doc;
    int status;
    bool cached; /* answer doc as a cached GET representation (ETag, If-None-Match) */
    gw_err_t err;
    const char *field; /* a static string naming the input to blame, or NULL */
} gw_task_t;

/* Runs on a pool thread: fills t->doc (and t->status, default 200) or t->err. */
typedef void (*gw_task_cb)(gw_task_t *t);

/* Starts work for req with call's scope and inputs; answers req later (or now, with 503, when the pool refuses).
 * cached: answer a success as a cached GET representation. Returns 0. */
int gw_task_run(gw_loop_t *loop, h2o_req_t *req, const gw_call_t *call, gw_task_cb work, bool cached);

/* For a work: sets t->err (code, status, and a printf detail) and the field to blame; returns -1. */
int gw_task_fail(gw_task_t *t, const char *code, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The cursor of a page that ends at id (keyset by id, newest first): base64url of the decimal id. */
json_t *gw_task_cursor(int64_t id);
/* The id of a cursor gw_task_cursor made, or 0 when cursor is not one. */
int64_t gw_task_cursor_id(const char *cursor);

#endif
