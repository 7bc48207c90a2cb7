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

/* Creates the pool of one loop and starts connecting (cfg->db_connections connections). The statements
 * array must outlive the pool. */
gw_db_t *gw_db_create(h2o_evloop_t *loop, const gw_config_t *cfg, const gw_db_statement_t *stmts, size_t nstmts);
/* Closes every connection. Jobs still queued or in flight fail with "shutting down" first. */
void gw_db_destroy(gw_db_t *db);

/*
 * Queues statement stmt (an index into the statements given to gw_db_create) with params for the next
 * batch. Returns the job, whose cb will fire exactly once, or NULL if the store cannot take it now (no
 * connection is up, or the queue is full); then cb never fires and the caller answers 503.
 */
gw_db_job_t *gw_db_submit(gw_db_t *db, size_t stmt, const gw_db_param_t *params, size_t nparams, gw_db_job_cb cb,
                          void *data);
/* Tells the pool that nobody waits for job any more (its request went away): the job still runs, its
 * callback does not fire. */
void gw_db_job_detach(gw_db_job_t *job);

/* True if at least one connection is connected (idle or busy). */
bool gw_db_is_up(const gw_db_t *db);
/* True if no job is queued or in flight. */
bool gw_db_is_idle(const gw_db_t *db);

/*
 * Blocking, for start-up only (before any loop runs): connects to cfg->database_url, checks that every
 * migration compiled into the binary has been applied, and writes into ids[i] the id of organisation
 * slugs[i], creating the organisations that do not exist yet. Returns 0, or -1 with a message in err.
 */
__attribute__((warn_unused_result)) int gw_db_bootstrap(const gw_config_t *cfg, const char *const *slugs, size_t n,
                                                        int64_t *ids, char *err, size_t errlen);

#endif
