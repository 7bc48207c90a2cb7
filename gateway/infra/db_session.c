/* SPDX-License-Identifier: MIT */
/*
 * db_session.c: the blocking half of the db module. Queue workers and the command line run their SQL
 * through these sessions; event loops use the pipelined pool in db.c instead. libpq stays inside the
 * db module either way.
 */
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db.h"
#include "log.h"

struct st_gw_dbs_t {
    char *url;
    PGconn *pg;
    char error[512];
    char sqlstate[6];
};

static void set_error(gw_dbs_t *s, const char *msg, const PGresult *res)
{
    gw_log_one_line(s->error, sizeof(s->error), msg != NULL ? msg : "unknown error");
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", state != NULL ? state : "");
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

gw_dbs_t *gw_dbs_connect(const char *url, char *err, size_t errlen)
{
    gw_dbs_t *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->url = strdup(url)) == NULL)
        abort();
    if (ensure_connected(s) != 0) {
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
    if (ensure_connected(s) != 0)
        return NULL;
    PGresult *res = PQexecParams(s->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        set_error(s, res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(s->pg), res);
        PQclear(res);
        return NULL;
    }
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

int gw_dbs_wait_notify(gw_dbs_t *s, int timeout_ms)
{
    if (ensure_connected(s) != 0)
        return -1;
    PGnotify *n;
    int got = 0;
    if (PQconsumeInput(s->pg) != 1)
        goto broken;
    while ((n = PQnotifies(s->pg)) != NULL) {
        PQfreemem(n);
        got = 1;
    }
    if (got)
        return 1;
    struct pollfd pfd = {.fd = PQsocket(s->pg), .events = POLLIN};
    int r = poll(&pfd, 1, timeout_ms);
    if (r <= 0)
        return 0;
    if (PQconsumeInput(s->pg) != 1)
        goto broken;
    while ((n = PQnotifies(s->pg)) != NULL) {
        PQfreemem(n);
        got = 1;
    }
    return got;
broken:
    set_error(s, PQerrorMessage(s->pg), NULL);
    PQfinish(s->pg);
    s->pg = NULL;
    return -1;
}
