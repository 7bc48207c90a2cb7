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
#include "err.h"
#include "metrics.h"

/* A statement prepared on every connection. Only these run through the pool (parameterised SQL only). */
typedef struct st_gw_db_statement_t {
    const char *name;
    const char *sql;
    int nparams;
    /*
     * Optional, for an INSERT of at most one row per job: jobs of this statement that are queued together (up to
     * GW_DB_MERGE_MAX) run as one statement, merge_sql, so PostgreSQL parses, plans and starts one executor per
     * batch instead of one per job. merge_sql takes the same nparams parameters, each an array of that parameter's
     * values, one element per job in queue order: $k is text[] when the jobs pass parameter k as text, bytea[] when
     * they pass it binary (the arrays travel in binary, so a body is never hex-encoded). It typically reads them
     * with unnest($1::text[], ...), and must end with a RETURNING of the value that parameter merge_key (0-based)
     * binds for each row inserted: that is how each job learns whether its row was inserted. A merged statement
     * that fails runs again job by job, so one bad job never fails its neighbours. NULL merge_sql: never merged.
     */
    const char *merge_sql;
    int merge_key;
} gw_db_statement_t;

/* The most jobs merged into one statement. */
#define GW_DB_MERGE_MAX 64

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
GW_MUSTCHECK gw_db_job_t *gw_db_submit(gw_db_t *db, const gw_db_statement_t *stmt, const gw_db_param_t *params,
                                       size_t nparams, gw_db_job_cb cb, void *data);
/* The rows a read returned (the result of its one statement, in text format); valid only during its callback. */
typedef struct st_gw_db_rows_t gw_db_rows_t;
/* Called once a read's batch has committed (error == NULL, rows its result: zero rows is an answer, not an error)
 * or failed (error a short message, rows NULL). The rows are freed right after. */
typedef void (*gw_db_rows_cb)(void *data, const char *error, const gw_db_rows_t *rows);
/* As gw_db_submit, for a statement whose rows the caller reads (a SELECT, or a write with RETURNING): cb gets them.
 * A read is never merged (its statement has no merge_sql). Returns the job, or NULL (then cb never fires). */
GW_MUSTCHECK gw_db_job_t *gw_db_submit_read(gw_db_t *db, const gw_db_statement_t *stmt, const gw_db_param_t *params,
                                            size_t nparams, gw_db_rows_cb cb, void *data);
/* The number of rows (0 for NULL rows). */
size_t gw_db_rows_count(const gw_db_rows_t *rows);
/* The text of (row, col), NUL-terminated, its length in *len (may be NULL); NULL for SQL NULL or out of range. */
const char *gw_db_rows_value(const gw_db_rows_t *rows, size_t row, size_t col, size_t *len);

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

/* Connects to url. Returns the session, or NULL with err (may be NULL) set to gw_err_store_unavailable, whose
 * detail is libpq's reason (it names the server, never the password). */
GW_MUSTCHECK gw_dbs_t *gw_dbs_open(const char *url, gw_err_t *err);
/* gw_dbs_open with the reason as text: "cannot connect to the database: <libpq's reason>" in err (errlen bytes). */
GW_MUSTCHECK gw_dbs_t *gw_dbs_connect(const char *url, char *err, size_t errlen);
/* Closes the connection and frees s (NULL is allowed). */
void gw_dbs_close(gw_dbs_t *s);
/* Runs sql with text parameters (a NULL value is SQL NULL). Returns the result (free it with
 * gw_dbs_result_free), or NULL on error: gw_dbs_error and gw_dbs_sqlstate then say why, and gw_dbs_err turns it
 * into a gw_err_t. A broken connection is re-established on the next call, except inside gw_dbs_tx, where every
 * later statement of the transaction fails instead. */
GW_MUSTCHECK gw_dbs_result_t *gw_dbs_query(gw_dbs_t *s, const char *sql, int nparams, const char *const *params);
/* Runs a command; returns the number of rows it affected, or -1 on error (as gw_dbs_query). */
GW_MUSTCHECK long long gw_dbs_exec(gw_dbs_t *s, const char *sql, int nparams, const char *const *params);
size_t gw_dbs_nrows(const gw_dbs_result_t *r);
/* The value at (row, col) as text, or NULL for SQL NULL. */
const char *gw_dbs_value(const gw_dbs_result_t *r, size_t row, size_t col);
void gw_dbs_result_free(gw_dbs_result_t *r);
/* The last error of the session, one line, or "": for a failed statement the server's primary message (without
 * its DETAIL, which can quote row values), else libpq's. For logs: it may name a column, a constraint or a
 * function, and an input that does not parse is quoted. */
const char *gw_dbs_error(const gw_dbs_t *s);
/* The SQLSTATE of the last error (e.g. "40001"), or "". */
const char *gw_dbs_sqlstate(const gw_dbs_t *s);
/*
 * Fills err (may be NULL) from the last error of s and returns -1, so a transaction body can end with
 * `return gw_dbs_err(s, err);`. The code follows the SQLSTATE: gw_err_store_unavailable (503) for a broken
 * connection, a server shutting down or out of resources, a lock or statement timeout, or a read-only server;
 * gw_err_conflict (409) for a serialization failure, a deadlock, or a unique or exclusion constraint already
 * taken; gw_err_internal (500) for anything else (a bug: bad SQL, a violated check or foreign key, an exception
 * raised by a function). The detail names the SQLSTATE only; gw_dbs_error has the message for the log.
 */
int gw_dbs_err(const gw_dbs_t *s, gw_err_t *err);
/* Waits up to timeout_ms for a notification on a channel the session LISTENs to. Returns 1 if one or
 * more arrived (all are consumed), 0 on timeout, -1 if the connection failed. */
GW_MUSTCHECK int gw_dbs_wait_notify(gw_dbs_t *s, int timeout_ms);

/* The body of a transaction: runs its statements on s and returns 0, or -1 with err set (gw_dbs_err, or a code
 * of its own). It may run more than once (see gw_dbs_tx), so it must not have effects outside the database, or
 * must tolerate repeating them, and must reset whatever it accumulates in arg at its start. It must not end the
 * transaction itself (COMMIT, ROLLBACK) nor start another gw_dbs_tx on s; a SAVEPOINT is fine. */
typedef int (*gw_dbs_tx_cb)(gw_dbs_t *s, void *arg, gw_err_t *err);

typedef enum en_gw_dbs_isolation_t {
    GW_DBS_READ_COMMITTED = 0, /* PostgreSQL's default */
    GW_DBS_REPEATABLE_READ,
    GW_DBS_SERIALIZABLE,
} gw_dbs_isolation_t;

/* How often gw_dbs_tx runs a body that keeps failing with a serialization failure or a deadlock. */
#define GW_DBS_TX_ATTEMPTS 5

/*
 * Runs body(s, arg, err) in one transaction: BEGIN, the body, COMMIT. Returns 0 once COMMIT has committed, or
 * -1 with err (may be NULL) set, and then nothing of the body is committed (except after a broken connection at
 * COMMIT, below):
 * - The body failed: the transaction is rolled back and err is the body's (gw_err_internal if it set none).
 * - A statement failed with a serialization failure (40001) or a deadlock (40P01), whatever the body did about
 *   it, or COMMIT did: the transaction is rolled back and the body runs again from BEGIN, after a short random
 *   pause, up to GW_DBS_TX_ATTEMPTS times in all; then gw_err_conflict (409).
 * - COMMIT failed (a deferred constraint or constraint trigger) or did not commit (a statement failed and the
 *   body went on, so PostgreSQL answered ROLLBACK): err as gw_dbs_err says, gw_err_internal for the latter.
 * - The body ended the transaction itself, or called gw_dbs_tx on s: gw_err_internal (what the body committed
 *   itself stays committed).
 * - The connection broke: gw_err_store_unavailable (503). A session that is found broken at BEGIN is reconnected
 *   once; inside the transaction nothing reconnects, so no statement of the body runs outside it. If it broke
 *   during COMMIT, the outcome is unknown: the detail says so, and a caller that repeats the work must find it
 *   possibly done.
 * gw_dbs_tx uses READ COMMITTED; gw_dbs_tx_isolated takes the isolation level.
 */
GW_MUSTCHECK int gw_dbs_tx(gw_dbs_t *s, gw_dbs_tx_cb body, void *arg, gw_err_t *err);
GW_MUSTCHECK int gw_dbs_tx_isolated(gw_dbs_t *s, gw_dbs_isolation_t isolation, gw_dbs_tx_cb body, void *arg,
                                    gw_err_t *err);

#endif
