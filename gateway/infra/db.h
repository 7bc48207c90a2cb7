/* SPDX-License-Identifier: MIT */
/*
 * db.h: asynchronous PostgreSQL for one event loop. A few libpq connections in pipeline mode with
 * adaptive group commit: jobs that arrive while a commit is in flight form the next batch, and a batch
 * is one implicit transaction ended by a Sync. Nothing here ever blocks the loop: connecting,
 * reconnecting, sending and reading are all driven by socket readiness.
 *
 * The only module that calls libpq on a loop.
 */
#ifndef GW_DB_H
#define GW_DB_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "metrics.h"

/* A statement prepared on every connection. Only these run through the pool (parameterised SQL only). */
typedef struct st_gw_db_statement_t {
    const char *name;
    const char *sql;
    int nparams;
} gw_db_statement_t;

/* One parameter of a job; copied at gw_db_job_new, so the caller's memory may go at once. */
typedef struct st_gw_db_param_t {
    const void *data;
    size_t len;
    bool binary; /* sent in binary format (bytea); otherwise text, which must not contain NUL */
} gw_db_param_t;

typedef struct st_gw_db_t gw_db_t;
typedef struct st_gw_db_job_t gw_db_job_t;

/* Called once a job's transaction has committed (error == NULL, rows = the statement's row count) or
 * failed (error = a short message; nothing of the job is committed). The job is freed right after. */
typedef void (*gw_db_job_cb)(void *data, const char *error, uint64_t rows);

/* Creates the pool of one loop and starts connecting (cfg->db_connections connections). Every statement of
 * stmts[0..nstmts) is prepared on every connection; the array and the statements must outlive the pool, and
 * their names must be unique. */
gw_db_t *gw_db_create(h2o_evloop_t *loop, const gw_config_t *cfg, const gw_db_statement_t *const *stmts, size_t nstmts);
/* Closes every connection. Jobs still queued or in flight fail with "shutting down" first. */
void gw_db_destroy(gw_db_t *db);

/*
 * Queues statement stmt (one of the statements given to gw_db_create) with params for the next
 * batch. Returns the job, whose cb (may be NULL) will fire exactly once, or NULL if the store cannot take it
 * now (every connection is down, or the queue is full); then cb never fires and the caller answers 503. While
 * a connection is being made, jobs wait for it (at most SETTLED_DB_COMMIT_TIMEOUT_MS).
 */
gw_db_job_t *gw_db_submit(gw_db_t *db, const gw_db_statement_t *stmt, const gw_db_param_t *params, size_t nparams,
                          gw_db_job_cb cb, void *data);
/* Tells the pool that nobody waits for job any more (its request went away): the job still runs, its
 * callback does not fire. */
void gw_db_job_detach(gw_db_job_t *job);

/* True if at least one connection is connected (idle or busy). */
bool gw_db_is_up(const gw_db_t *db);
/* True if no job is queued or in flight. */
bool gw_db_is_idle(const gw_db_t *db);

/*
 * Blocking sessions, for threads that may block (queue workers, the CLI, offloaded tasks) and never
 * for an event loop. One session is one libpq connection used by one thread at a time.
 */
typedef struct st_gw_dbs_t gw_dbs_t;
typedef struct st_gw_dbs_result_t gw_dbs_result_t;

/* Connects to url. Returns the session, or NULL with a message in err. */
gw_dbs_t *gw_dbs_connect(const char *url, char *err, size_t errlen);
void gw_dbs_close(gw_dbs_t *s);
/* Runs sql with text parameters (a NULL value is SQL NULL). Returns the result (free it with
 * gw_dbs_result_free), or NULL on error: gw_dbs_error and gw_dbs_sqlstate then say why. A broken
 * connection is re-established on the next call. */
gw_dbs_result_t *gw_dbs_query(gw_dbs_t *s, const char *sql, int nparams, const char *const *params);
/* Runs a command; returns the number of rows it affected, or -1 on error. */
long long gw_dbs_exec(gw_dbs_t *s, const char *sql, int nparams, const char *const *params);
size_t gw_dbs_nrows(const gw_dbs_result_t *r);
/* The value at (row, col) as text, or NULL for SQL NULL. */
const char *gw_dbs_value(const gw_dbs_result_t *r, size_t row, size_t col);
void gw_dbs_result_free(gw_dbs_result_t *r);
/* The last error of the session, one line, or "" (never contains parameter values). */
const char *gw_dbs_error(const gw_dbs_t *s);
/* The SQLSTATE of the last error (e.g. "40001"), or "". */
const char *gw_dbs_sqlstate(const gw_dbs_t *s);
/* Waits up to timeout_ms for a notification on a channel the session LISTENs to. Returns 1 if one or
 * more arrived (all are consumed), 0 on timeout, -1 if the connection failed. */
int gw_dbs_wait_notify(gw_dbs_t *s, int timeout_ms);

#endif
