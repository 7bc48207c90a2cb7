/* SPDX-License-Identifier: MIT */
/*
 * db_session.c: the blocking half of the db module. Queue workers and the command line run their SQL
 * through these sessions, and their multi-statement transactions through gw_dbs_tx; event loops use the
 * pipelined pool in db.c instead. libpq stays inside the db module either way.
 */
#include <libpq-fe.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "db.h"
#include "log.h"
#include "mem.h"

struct st_gw_dbs_t {
    char *url;
    PGconn *pg;
    char error[512];
    char sqlstate[6];
    /* while gw_dbs_tx runs a body */
    bool in_tx;
    bool tx_broken;         /* the connection broke: the transaction is gone */
    bool tx_ended;          /* a statement of the body ended the transaction */
    char tx_retry_state[6]; /* "" or the SQLSTATE of a serialization failure or deadlock that a statement hit */
};

static bool is_retryable(const char *state)
{
    return strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0;
}

/* Records why the last call failed: res's SQLSTATE and primary message (no DETAIL: it can quote row values), or
 * libpq's message when there is no result. Inside a transaction, also what it means for the transaction. */
static void set_error(gw_dbs_t *s, const char *msg, const PGresult *res)
{
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (primary == NULL)
        primary = msg;
    gw_log_one_line(s->error, sizeof(s->error), primary != NULL && *primary != '\0' ? primary : "unknown error");
    snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", state != NULL ? state : "");
    if (s->in_tx) {
        if (is_retryable(s->sqlstate))
            memcpy(s->tx_retry_state, s->sqlstate, sizeof(s->tx_retry_state));
        if (s->pg == NULL || PQstatus(s->pg) != CONNECTION_OK)
            s->tx_broken = true;
    }
}

/* Server warnings go to the log as one line, not to stderr as libpq prints them. */
static void on_notice(void *arg, const char *message)
{
    char msg[256];
    gw_log(GW_LOG_WARN, "database: %s", gw_log_one_line(msg, sizeof(msg), message));
}

static int ensure_connected(gw_dbs_t *s)
{
    if (s->pg != NULL && PQstatus(s->pg) == CONNECTION_OK)
        return 0;
    if (s->in_tx) {
        /* a new connection would run the rest of the body outside its transaction */
        set_error(s, "the database connection broke during the transaction", NULL);
        return -1;
    }
    if (s->pg != NULL)
        PQfinish(s->pg); /* any LISTEN is gone with it: callers re-issue theirs */
    const char *keys[] = {"dbname", "application_name", NULL};
    const char *vals[] = {s->url, "settled", NULL};
    s->pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(s->pg) != CONNECTION_OK) {
        set_error(s, PQerrorMessage(s->pg), NULL);
        return -1;
    }
    PQsetNoticeProcessor(s->pg, on_notice, NULL);
    PQclear(PQexec(s->pg, "SET client_min_messages = warning"));
    return 0;
}

/* A session for url, connected or not (then s->error says why). */
static gw_dbs_t *new_session(const char *url)
{
    gw_dbs_t *s = gw_xcalloc(1, sizeof(*s));
    s->url = gw_xstrdup(url);
    (void)ensure_connected(s);
    return s;
}

gw_dbs_t *gw_dbs_open(const char *url, gw_err_t *err)
{
    gw_dbs_t *s = new_session(url);
    if (s->pg == NULL || PQstatus(s->pg) != CONNECTION_OK) {
        gw_err_set(err, gw_err_store_unavailable, 503, "cannot connect to the database: %s", s->error);
        gw_dbs_close(s);
        return NULL;
    }
    return s;
}

gw_dbs_t *gw_dbs_connect(const char *url, char *err, size_t errlen)
{
    gw_dbs_t *s = new_session(url);
    if (s->pg == NULL || PQstatus(s->pg) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the database: %s", s->error);
        gw_dbs_close(s);
        return NULL;
    }
    return s;
}

void gw_dbs_close(gw_dbs_t *s)
{
    if (s == NULL)
        return;
    if (s->pg != NULL)
        PQfinish(s->pg);
    free(s->url);
    free(s);
}

gw_dbs_result_t *gw_dbs_query(gw_dbs_t *s, const char *sql, int nparams, const char *const *params)
{
    s->error[0] = s->sqlstate[0] = '\0';
    if (s->in_tx && s->tx_ended) {
        set_error(s, "a statement of the transaction body ended the transaction", NULL);
        return NULL;
    }
    if (ensure_connected(s) != 0)
        return NULL;
    PGresult *res = PQexecParams(s->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        set_error(s, PQerrorMessage(s->pg), res);
        PQclear(res);
        return NULL;
    }
    /* a COMMIT or ROLLBACK in the body: what follows must not run outside the transaction, one by one */
    if (s->in_tx && PQtransactionStatus(s->pg) == PQTRANS_IDLE)
        s->tx_ended = true;
    return (gw_dbs_result_t *)res;
}

long long gw_dbs_exec(gw_dbs_t *s, const char *sql, int nparams, const char *const *params)
{
    gw_dbs_result_t *r = gw_dbs_query(s, sql, nparams, params);
    if (r == NULL)
        return -1;
    const char *n = PQcmdTuples((PGresult *)r);
    long long rows = n != NULL && *n != '\0' ? strtoll(n, NULL, 10) : 0;
    PQclear((PGresult *)r);
    return rows;
}

size_t gw_dbs_nrows(const gw_dbs_result_t *r)
{
    return (size_t)PQntuples((const PGresult *)r);
}

const char *gw_dbs_value(const gw_dbs_result_t *r, size_t row, size_t col)
{
    const PGresult *res = (const PGresult *)r;
    if (PQgetisnull(res, (int)row, (int)col))
        return NULL;
    return PQgetvalue(res, (int)row, (int)col);
}

void gw_dbs_result_free(gw_dbs_result_t *r)
{
    PQclear((PGresult *)r);
}

const char *gw_dbs_error(const gw_dbs_t *s)
{
    return s->error;
}

const char *gw_dbs_sqlstate(const gw_dbs_t *s)
{
    return s->sqlstate;
}

/* True if the SQLSTATE means the store cannot do it now but may later (the server, not the statement). */
static bool is_unavailable(const char *state)
{
    static const char *const states[] = {
        "57P01", /* admin_shutdown */
        "57P02", /* crash_shutdown */
        "57P03", /* cannot_connect_now */
        "57014", /* query_canceled: statement_timeout */
        "55P03", /* lock_not_available: lock_timeout, NOWAIT */
        "25006", /* read_only_sql_transaction: a standby after a failover */
    };
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 || strncmp(state, "58", 2) == 0)
        return true; /* connection exception, insufficient resources, system error */
    for (size_t i = 0; i != sizeof(states) / sizeof(states[0]); ++i)
        if (strcmp(state, states[i]) == 0)
            return true;
    return false;
}

int gw_dbs_err(const gw_dbs_t *s, gw_err_t *err)
{
    const char *state = s->sqlstate;
    if (s->pg == NULL || PQstatus(s->pg) != CONNECTION_OK || is_unavailable(state))
        return gw_err_set(err, gw_err_store_unavailable, 503, "The database is unavailable (SQLSTATE %s).",
                          *state != '\0' ? state : "none");
    if (is_retryable(state) || strcmp(state, "23505") == 0 || strcmp(state, "23P01") == 0)
        return gw_err_set(err, gw_err_conflict, 409, "The change conflicts with a concurrent one (SQLSTATE %s).",
                          state);
    return gw_err_set(err, gw_err_internal, 500, "A database statement failed (SQLSTATE %s).",
                      *state != '\0' ? state : "none");
}

int gw_dbs_wait_notify(gw_dbs_t *s, int timeout_ms)
{
    int ret = -1;
    if (ensure_connected(s) != 0)
        return -1;
    PGnotify *n;
    bool got = false;
    if (PQconsumeInput(s->pg) != 1)
        goto Exit;
    while ((n = PQnotifies(s->pg)) != NULL) {
        PQfreemem(n);
        got = true;
    }
    if (!got) {
        struct pollfd pfd = {.fd = PQsocket(s->pg), .events = POLLIN};
        if (poll(&pfd, 1, timeout_ms) <= 0) {
            ret = 0;
            goto Exit;
        }
        if (PQconsumeInput(s->pg) != 1)
            goto Exit;
        while ((n = PQnotifies(s->pg)) != NULL) {
            PQfreemem(n);
            got = true;
        }
    }
    ret = got ? 1 : 0;
Exit:
    if (ret < 0) {
        set_error(s, PQerrorMessage(s->pg), NULL);
        PQfinish(s->pg);
        s->pg = NULL;
    }
    return ret;
}

/* ---- transactions ---- */

/* Runs a transaction-control statement; returns its result (the caller clears it), or NULL with the error set. */
static PGresult *control(gw_dbs_t *s, const char *sql)
{
    PGresult *res = PQexec(s->pg, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        set_error(s, PQerrorMessage(s->pg), res);
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Ends a failed attempt. What it finds (an aborted transaction, a broken connection) changes nothing: the
 * transaction is gone either way, and the body's error stays the session's last error. */
static void rollback(gw_dbs_t *s)
{
    if (s->pg != NULL && PQstatus(s->pg) == CONNECTION_OK && PQtransactionStatus(s->pg) != PQTRANS_IDLE)
        PQclear(PQexec(s->pg, "ROLLBACK"));
}

static int begin(gw_dbs_t *s, gw_dbs_isolation_t isolation)
{
    static const char *const sql[] = {
        [GW_DBS_READ_COMMITTED] = "BEGIN ISOLATION LEVEL READ COMMITTED",
        [GW_DBS_REPEATABLE_READ] = "BEGIN ISOLATION LEVEL REPEATABLE READ",
        [GW_DBS_SERIALIZABLE] = "BEGIN ISOLATION LEVEL SERIALIZABLE",
    };
    /* a connection the server closed while the session was idle shows only when it is used: nothing of the
     * transaction has run yet, so one new connection is safe */
    for (int tries = 0; tries != 2; ++tries) {
        s->error[0] = s->sqlstate[0] = '\0';
        if (ensure_connected(s) != 0)
            return -1;
        PGresult *res = control(s, sql[isolation]);
        if (res != NULL) {
            PQclear(res);
            return 0;
        }
        if (PQstatus(s->pg) == CONNECTION_OK)
            return -1;
    }
    return -1;
}

/* A pause of 1 to 5 * 2^attempt ms (at most 80 ms), so retries of colliding transactions drift apart. */
static void backoff(int attempt)
{
    static _Thread_local uint64_t seed;
    if (seed == 0) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        seed = ((uint64_t)t.tv_nsec << 20) ^ (uint64_t)t.tv_sec ^ (uint64_t)(uintptr_t)&seed;
        seed |= 1;
    }
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17; /* xorshift64 */
    long cap_ms = 5L << (attempt < 4 ? attempt : 4);
    long ms = 1 + (long)(seed % (uint64_t)cap_ms);
    struct timespec d = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&d, NULL);
}

enum attempt_outcome { ATTEMPT_COMMITTED, ATTEMPT_FAILED, ATTEMPT_RETRY };

/* One BEGIN .. COMMIT of body. On ATTEMPT_FAILED err is set; on ATTEMPT_RETRY the transaction is rolled back. */
static enum attempt_outcome attempt(gw_dbs_t *s, gw_dbs_isolation_t isolation, gw_dbs_tx_cb body, void *arg,
                                    gw_err_t *err)
{
    enum attempt_outcome outcome = ATTEMPT_FAILED;
    PGresult *res = NULL;
    gw_err_t why = GW_ERR_INIT;
    if (begin(s, isolation) != 0) {
        gw_dbs_err(s, &why);
        gw_err_set(err, why.code, why.status, "Cannot start a transaction. %s", why.detail);
        return ATTEMPT_FAILED;
    }
    s->in_tx = true, s->tx_broken = s->tx_ended = false, s->tx_retry_state[0] = '\0';
    gw_err_clear(err);
    int rc = body(s, arg, err);
    s->in_tx = false;

    if (s->tx_retry_state[0] != '\0') {
        outcome = ATTEMPT_RETRY;
        goto Exit;
    }
    if (s->tx_broken || PQstatus(s->pg) != CONNECTION_OK) {
        gw_err_set(err, gw_err_store_unavailable, 503, "The database connection broke during the transaction.");
        goto Exit;
    }
    if (rc != 0) {
        if (!gw_err_is_set(err))
            gw_err_set(err, gw_err_internal, 500, "The transaction failed.");
        goto Exit;
    }
    if (s->tx_ended || PQtransactionStatus(s->pg) == PQTRANS_IDLE) {
        gw_err_set(err, gw_err_internal, 500, "The transaction body ended the transaction itself.");
        goto Exit;
    }
    if ((res = control(s, "COMMIT")) == NULL) {
        if (is_retryable(s->sqlstate)) {
            memcpy(s->tx_retry_state, s->sqlstate, sizeof(s->tx_retry_state));
            outcome = ATTEMPT_RETRY;
        } else if (PQstatus(s->pg) != CONNECTION_OK) {
            gw_err_set(err, gw_err_store_unavailable, 503,
                       "The database connection broke during COMMIT: the outcome is unknown.");
        } else {
            gw_dbs_err(s, &why);
            gw_err_set(err, why.code, why.status, "COMMIT failed. %s", why.detail);
        }
        goto Exit;
    }
    /* COMMIT of a transaction in which a statement failed succeeds, with the tag ROLLBACK */
    if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        set_error(s, "COMMIT rolled back the transaction: one of its statements had failed", NULL);
        gw_err_set(err, gw_err_internal, 500, "COMMIT rolled back the transaction: one of its statements had failed.");
        goto Exit;
    }
    outcome = ATTEMPT_COMMITTED;
Exit:
    PQclear(res);
    if (outcome != ATTEMPT_COMMITTED)
        rollback(s);
    return outcome;
}

int gw_dbs_tx_isolated(gw_dbs_t *s, gw_dbs_isolation_t isolation, gw_dbs_tx_cb body, void *arg, gw_err_t *err)
{
    gw_err_t local = GW_ERR_INIT;
    if (err == NULL)
        err = &local;
    if (s->in_tx)
        return gw_err_set(err, gw_err_internal, 500, "A transaction cannot start inside another one.");
    if ((unsigned)isolation > GW_DBS_SERIALIZABLE)
        return gw_err_set(err, gw_err_internal, 500, "No such isolation level.");
    for (int i = 1;; ++i) {
        switch (attempt(s, isolation, body, arg, err)) {
        case ATTEMPT_COMMITTED:
            gw_err_clear(err);
            return 0;
        case ATTEMPT_FAILED:
            return -1;
        case ATTEMPT_RETRY:
            break;
        }
        if (i == GW_DBS_TX_ATTEMPTS)
            break;
        gw_log(GW_LOG_DEBUG, "database: transaction attempt %d of %d hit SQLSTATE %s; retrying", i, GW_DBS_TX_ATTEMPTS,
               s->tx_retry_state);
        backoff(i);
    }
    gw_log(GW_LOG_WARN, "database: transaction gave up after %d attempts (SQLSTATE %s)", GW_DBS_TX_ATTEMPTS,
           s->tx_retry_state);
    return gw_err_set(err, gw_err_conflict, 409,
                      "The transaction kept conflicting with concurrent ones (%d attempts); retry later.",
                      GW_DBS_TX_ATTEMPTS);
}

int gw_dbs_tx(gw_dbs_t *s, gw_dbs_tx_cb body, void *arg, gw_err_t *err)
{
    return gw_dbs_tx_isolated(s, GW_DBS_READ_COMMITTED, body, arg, err);
}
