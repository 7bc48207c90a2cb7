/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/infra/db_session.c against a real PostgreSQL (SETTLED_TEST_PG_URL, started by deploy/test.sh):
 * gw_dbs_tx commits a body or leaves nothing of it (a failing body, a statement that failed, a COMMIT that fails
 * or rolls back, a broken connection, a body that ends the transaction itself), retries serialization failures
 * and deadlocks, in a statement or at COMMIT, a bounded number of times, and maps failures to gw_err_t codes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "db.h"

static char url[512], schema[64];

/* --- helpers: a connection of its own, outside the session under test --------------------------------------- */

static void on_notice(void *arg, const char *message)
{
}

static void exec_admin(const char *sql)
{
    PGconn *pg = PQconnectdb(url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PQsetNoticeProcessor(pg, on_notice, NULL); /* DROP ... IF EXISTS */
    /* a failed test may leave its session in a transaction: fail the next one soon rather than hang */
    PQclear(PQexec(pg, "SET lock_timeout = '5s'"));
    PGresult *res = PQexec(pg, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
}

static long long query_int(const char *sql)
{
    PGconn *pg = PQconnectdb(url);
    PGresult *res = PQexec(pg, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(pg));
    long long v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(pg);
    return v;
}

static gw_dbs_t *open_session(void)
{
    gw_err_t err = GW_ERR_INIT;
    gw_dbs_t *s = gw_dbs_open(url, &err);
    if (s == NULL)
        fail_msg("gw_dbs_open: %s", err.detail);
    return s;
}

/* Fails the test unless err holds code with status (and, if detail_prefix is not NULL, a detail starting so). */
static void assert_err(const gw_err_t *err, const char *code, int status, const char *detail_prefix)
{
    if (err->code != code || err->status != status ||
        (detail_prefix != NULL && strncmp(err->detail, detail_prefix, strlen(detail_prefix)) != 0))
        fail_msg("expected %s %d \"%s...\", got %s %d \"%s\"", code, status, detail_prefix != NULL ? detail_prefix : "",
                 err->code != NULL ? err->code : "(no code)", err->status, err->detail);
}

/* Runs sql on s and fails the test if it fails. */
static void must_exec(gw_dbs_t *s, const char *sql)
{
    if (gw_dbs_exec(s, sql, 0, NULL) < 0)
        fail_msg("%s: %s", sql, gw_dbs_error(s));
}

static int setup(void **state)
{
    const char *base = getenv("SETTLED_TEST_PG_URL");
    if (base == NULL || *base == '\0')
        fail_msg("SETTLED_TEST_PG_URL is not set: run the tests through deploy/test.sh");
    /* a schema of this process, first on every connection's search_path, so two runs never share a table */
    snprintf(schema, sizeof(schema), "t_dbs_%ld", (long)getpid());
    snprintf(url, sizeof(url), "%s", base);
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", schema, schema);
    exec_admin(sql);
    snprintf(url, sizeof(url), "%s%soptions=-csearch_path%%3D%s", base, strchr(base, '?') != NULL ? "&" : "?", schema);
    exec_admin("DROP TABLE IF EXISTS t_dbs; CREATE TABLE t_dbs (k text PRIMARY KEY, v int NOT NULL DEFAULT 0)");
    exec_admin("DROP TABLE IF EXISTS t_dbs_deferred; "
               "CREATE TABLE t_dbs_deferred (k int, CONSTRAINT t_dbs_deferred_k UNIQUE (k) DEFERRABLE INITIALLY "
               "DEFERRED)");
    /* a function that raises the SQLSTATE it is given as long as the sequence it is given has not passed limit
     * (nextval is not rolled back, so it counts attempts across rollbacks) */
    exec_admin("CREATE OR REPLACE FUNCTION t_dbs_raise_until(seq regclass, lim bigint, state text) RETURNS void "
               "LANGUAGE plpgsql AS $$ BEGIN IF nextval(seq) <= lim THEN "
               "RAISE EXCEPTION 'provoked %', state USING ERRCODE = state; END IF; END $$");
    return 0;
}

static int teardown(void **state)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", schema);
    exec_admin(sql);
    return 0;
}

/* Each test starts from empty tables. */
static int reset(void **state)
{
    exec_admin("TRUNCATE t_dbs, t_dbs_deferred");
    exec_admin("DROP TRIGGER IF EXISTS t_dbs_check ON t_dbs; DROP SEQUENCE IF EXISTS t_dbs_seq; "
               "CREATE SEQUENCE t_dbs_seq");
    return 0;
}

/* What a body was asked to do, and what it saw. */
typedef struct st_body_t {
    int calls;
    const char *sql[8]; /* run in order; a failure ends the body with gw_dbs_err unless ignore_failures */
    bool ignore_failures;
    char isolation[32]; /* SHOW transaction_isolation, as seen by the last run */
} body_t;

static int run_sql(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    body_t *b = arg;
    ++b->calls;
    gw_dbs_result_t *r = gw_dbs_query(s, "SHOW transaction_isolation", 0, NULL);
    if (r == NULL)
        return gw_dbs_err(s, err);
    snprintf(b->isolation, sizeof(b->isolation), "%s", gw_dbs_value(r, 0, 0));
    gw_dbs_result_free(r);
    for (size_t i = 0; i != sizeof(b->sql) / sizeof(b->sql[0]) && b->sql[i] != NULL; ++i)
        if (gw_dbs_exec(s, b->sql[i], 0, NULL) < 0 && !b->ignore_failures)
            return gw_dbs_err(s, err);
    return 0;
}

/* --- commit and rollback ------------------------------------------------------------------------------------ */

static void test_commits_several_statements(void **state)
{
    gw_dbs_t *s = open_session();
    body_t b = {.sql = {"INSERT INTO t_dbs (k) VALUES ('a')", "INSERT INTO t_dbs (k) VALUES ('b')",
                        "UPDATE t_dbs SET v = 7 WHERE k = 'a'", "DELETE FROM t_dbs WHERE k = 'b'",
                        "INSERT INTO t_dbs (k, v) VALUES ('c', 3)"}};
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, run_sql, &b, &err), 0);
    assert_null(err.code);
    assert_int_equal(b.calls, 1);
    assert_string_equal(b.isolation, "read committed");
    /* seen from another connection: committed, all of it */
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 2);
    assert_int_equal(query_int("SELECT sum(v) FROM t_dbs"), 10);
    /* the session is out of the transaction: a statement after it commits on its own */
    must_exec(s, "INSERT INTO t_dbs (k) VALUES ('d')");
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs WHERE k = 'd'"), 1);
    gw_dbs_close(s);
}

static void test_isolation_levels(void **state)
{
    static const struct {
        gw_dbs_isolation_t level;
        const char *name;
    } levels[] = {{GW_DBS_READ_COMMITTED, "read committed"},
                  {GW_DBS_REPEATABLE_READ, "repeatable read"},
                  {GW_DBS_SERIALIZABLE, "serializable"}};
    gw_dbs_t *s = open_session();
    for (size_t i = 0; i != 3; ++i) {
        body_t b = {0};
        gw_err_t err = GW_ERR_INIT;
        assert_int_equal(gw_dbs_tx_isolated(s, levels[i].level, run_sql, &b, &err), 0);
        assert_string_equal(b.isolation, levels[i].name);
    }
    gw_err_t err = GW_ERR_INIT;
    body_t b = {0};
    assert_int_equal(gw_dbs_tx_isolated(s, (gw_dbs_isolation_t)7, run_sql, &b, &err), -1);
    assert_err(&err, gw_err_internal, 500, NULL);
    assert_int_equal(b.calls, 0);
    gw_dbs_close(s);
}

/* A body that writes, then fails with a code of its own. */
static int insert_then_fail(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    ++*(int *)arg;
    if (gw_dbs_exec(s, "INSERT INTO t_dbs (k) VALUES ('x1'), ('x2')", 0, NULL) != 2)
        return gw_dbs_err(s, err);
    return gw_err_set(err, gw_err_source_unknown, 404, "no source %d", 7);
}

static void test_body_failure_rolls_back_with_its_error(void **state)
{
    gw_dbs_t *s = open_session();
    int calls = 0;
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, insert_then_fail, &calls, &err), -1);
    assert_err(&err, gw_err_source_unknown, 404, "no source 7");
    assert_string_equal(err.detail, "no source 7");
    assert_int_equal(calls, 1); /* not retried */
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 0);
    /* rolled back, not left open: the next statement commits by itself */
    must_exec(s, "INSERT INTO t_dbs (k) VALUES ('after')");
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 1);
    /* err may be NULL */
    assert_int_equal(gw_dbs_tx(s, insert_then_fail, &calls, NULL), -1);
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 1);
    gw_dbs_close(s);
}

/* A body that fails without saying why. */
static int fail_silently(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    if (gw_dbs_exec(s, "INSERT INTO t_dbs (k) VALUES ('silent')", 0, NULL) != 1)
        return gw_dbs_err(s, err);
    return -1;
}

static void test_body_failure_without_error_is_internal(void **state)
{
    gw_dbs_t *s = open_session();
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, fail_silently, NULL, &err), -1);
    assert_err(&err, gw_err_internal, 500, NULL);
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 0);
    gw_dbs_close(s);
}

static void test_failing_statement_rolls_back(void **state)
{
    gw_dbs_t *s = open_session();
    body_t b = {.sql = {"INSERT INTO t_dbs (k) VALUES ('y1')", "SELECT 1 / 0", "INSERT INTO t_dbs (k) VALUES ('y2')"}};
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, run_sql, &b, &err), -1);
    assert_err(&err, gw_err_internal, 500, "A database statement failed (SQLSTATE 22012)");
    assert_int_equal(b.calls, 1);
    assert_string_equal(gw_dbs_sqlstate(s), "22012");
    assert_string_equal(gw_dbs_error(s), "division by zero");
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 0);
    gw_dbs_close(s);
}

/* A body that goes on after a failed statement and returns 0: PostgreSQL answers COMMIT with ROLLBACK. */
static void test_commit_that_rolls_back_is_a_failure(void **state)
{
    gw_dbs_t *s = open_session();
    body_t b = {.sql = {"INSERT INTO t_dbs (k) VALUES ('z1')", "SELECT 1 / 0", "INSERT INTO t_dbs (k) VALUES ('z2')"},
                .ignore_failures = true};
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, run_sql, &b, &err), -1);
    assert_err(&err, gw_err_internal, 500, "COMMIT rolled back the transaction");
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 0);
    gw_dbs_close(s);
}

static void test_body_that_ends_the_transaction(void **state)
{
    gw_dbs_t *s = open_session();
    /* after its ROLLBACK, the rest of the body must not run on its own, statement by statement */
    body_t b = {.sql = {"INSERT INTO t_dbs (k) VALUES ('e1')", "ROLLBACK", "INSERT INTO t_dbs (k) VALUES ('e2')"},
                .ignore_failures = true};
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, run_sql, &b, &err), -1);
    assert_err(&err, gw_err_internal, 500, "The transaction body ended the transaction itself");
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 0);
    must_exec(s, "INSERT INTO t_dbs (k) VALUES ('e3')");
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 1);
    gw_dbs_close(s);
}

/* A body that tries to open a transaction inside its own. */
static int nested(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    if (gw_dbs_exec(s, "INSERT INTO t_dbs (k) VALUES ('outer')", 0, NULL) != 1)
        return gw_dbs_err(s, err);
    return gw_dbs_tx(s, insert_then_fail, arg, err); /* its err is the inner gw_dbs_tx's */
}

static void test_nested_transaction_is_refused(void **state)
{
    gw_dbs_t *s = open_session();
    int inner_calls = 0;
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, nested, &inner_calls, &err), -1);
    assert_err(&err, gw_err_internal, 500, "A transaction cannot start inside another one");
    assert_int_equal(inner_calls, 0);
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 0);
    gw_dbs_close(s);
}

/* --- COMMIT that fails -------------------------------------------------------------------------------------- */

static void test_deferred_constraint_fails_at_commit(void **state)
{
    gw_dbs_t *s = open_session();
    /* both INSERTs succeed: the unique check waits for COMMIT */
    body_t b = {.sql = {"INSERT INTO t_dbs (k) VALUES ('kept?')", "INSERT INTO t_dbs_deferred VALUES (1)",
                        "INSERT INTO t_dbs_deferred VALUES (1)"}};
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, run_sql, &b, &err), -1);
    assert_err(&err, gw_err_conflict, 409,
               "COMMIT failed. The change conflicts with a concurrent one (SQLSTATE 23505)");
    assert_int_equal(b.calls, 1);
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs_deferred"), 0);
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 0);
    /* the session's message has no DETAIL, which would quote the key's value */
    assert_null(strstr(gw_dbs_error(s), "Key ("));
    assert_non_null(strstr(gw_dbs_error(s), "t_dbs_deferred_k"));
    gw_dbs_close(s);
}

static void test_constraint_trigger_fails_at_commit(void **state)
{
    exec_admin("CREATE OR REPLACE FUNCTION t_dbs_no_negative() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "IF NEW.v < 0 THEN RAISE EXCEPTION 'negative'; END IF; RETURN NULL; END $$; "
               "CREATE CONSTRAINT TRIGGER t_dbs_check AFTER INSERT OR UPDATE ON t_dbs DEFERRABLE INITIALLY DEFERRED "
               "FOR EACH ROW EXECUTE FUNCTION t_dbs_no_negative()");
    gw_dbs_t *s = open_session();
    body_t b = {.sql = {"INSERT INTO t_dbs (k, v) VALUES ('n1', 1)", "INSERT INTO t_dbs (k, v) VALUES ('n2', -1)"}};
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, run_sql, &b, &err), -1);
    assert_err(&err, gw_err_internal, 500, "COMMIT failed. A database statement failed (SQLSTATE P0001)");
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 0);
    gw_dbs_close(s);
}

/* --- retries ------------------------------------------------------------------------------------------------ */

/* Serialization failure from two sessions: the body reads (its snapshot), another session updates the row and
 * commits, then the body updates the same row: 40001. Only the first run lets the other session in. */
typedef struct st_race_t {
    gw_dbs_t *other;
    int calls;
    char first_state[6];
} race_t;

static int update_after_a_concurrent_update(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    race_t *race = arg;
    ++race->calls;
    gw_dbs_result_t *r = gw_dbs_query(s, "SELECT v FROM t_dbs WHERE k = 'r'", 0, NULL);
    if (r == NULL)
        return gw_dbs_err(s, err);
    gw_dbs_result_free(r);
    if (race->calls == 1)
        must_exec(race->other, "UPDATE t_dbs SET v = v + 100 WHERE k = 'r'");
    if (gw_dbs_exec(s, "UPDATE t_dbs SET v = v + 1 WHERE k = 'r'", 0, NULL) != 1) {
        if (race->calls == 1)
            snprintf(race->first_state, sizeof(race->first_state), "%s", gw_dbs_sqlstate(s));
        return gw_dbs_err(s, err);
    }
    return 0;
}

static void test_serialization_failure_is_retried(void **state)
{
    exec_admin("INSERT INTO t_dbs (k, v) VALUES ('r', 0)");
    gw_dbs_t *s = open_session();
    race_t race = {.other = open_session()};
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx_isolated(s, GW_DBS_SERIALIZABLE, update_after_a_concurrent_update, &race, &err), 0);
    assert_null(err.code);
    assert_string_equal(race.first_state, "40001"); /* the first run did collide */
    assert_int_equal(race.calls, 2);
    assert_int_equal(query_int("SELECT v FROM t_dbs WHERE k = 'r'"), 101); /* both updates, once each */
    gw_dbs_close(race.other);
    gw_dbs_close(s);
}

/* A real deadlock: the body locks row 1; a thread locks row 2, then waits for row 1; the body asks for row 2. The
 * body waits first, so its backend detects the cycle (after deadlock_timeout) and fails with 40P01; the thread
 * then goes through, and the body's second run as well. */
typedef struct st_deadlock_t {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool locked; /* the thread holds row 2 */
    int calls;
    char first_state[6];
    char thread_error[256];
} deadlock_t;

static void *deadlock_thread(void *arg)
{
    deadlock_t *d = arg;
    PGconn *pg = PQconnectdb(url);
    PGresult *res = PQexec(pg, "BEGIN; UPDATE t_dbs SET v = v + 10 WHERE k = 'd2'");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        snprintf(d->thread_error, sizeof(d->thread_error), "lock 2: %s", PQerrorMessage(pg));
    PQclear(res);
    pthread_mutex_lock(&d->mu);
    d->locked = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->mu);
    nanosleep(&(struct timespec){.tv_nsec = 300 * 1000000L}, NULL); /* the body waits for row 2 by now */
    res = PQexec(pg, "UPDATE t_dbs SET v = v + 10 WHERE k = 'd1'");
    if (PQresultStatus(res) != PGRES_COMMAND_OK && d->thread_error[0] == '\0')
        snprintf(d->thread_error, sizeof(d->thread_error), "lock 1: %s", PQerrorMessage(pg));
    PQclear(res);
    res = PQexec(pg, "COMMIT");
    if ((PQresultStatus(res) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(res), "COMMIT") != 0) &&
        d->thread_error[0] == '\0')
        snprintf(d->thread_error, sizeof(d->thread_error), "commit: %s", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
    return NULL;
}

static int lock_both_rows(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    deadlock_t *d = arg;
    ++d->calls;
    if (gw_dbs_exec(s, "UPDATE t_dbs SET v = v + 1 WHERE k = 'd1'", 0, NULL) != 1)
        return gw_dbs_err(s, err);
    if (d->calls == 1) {
        assert_int_equal(pthread_create(&d->thread, NULL, deadlock_thread, d), 0);
        pthread_mutex_lock(&d->mu);
        while (!d->locked)
            pthread_cond_wait(&d->cond, &d->mu);
        pthread_mutex_unlock(&d->mu);
    }
    if (gw_dbs_exec(s, "UPDATE t_dbs SET v = v + 1 WHERE k = 'd2'", 0, NULL) != 1) {
        if (d->calls == 1)
            snprintf(d->first_state, sizeof(d->first_state), "%s", gw_dbs_sqlstate(s));
        return gw_dbs_err(s, err);
    }
    return 0;
}

static void test_deadlock_is_retried(void **state)
{
    exec_admin("INSERT INTO t_dbs (k, v) VALUES ('d1', 0), ('d2', 0)");
    gw_dbs_t *s = open_session();
    deadlock_t d = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    gw_err_t err = GW_ERR_INIT;
    int rc = gw_dbs_tx(s, lock_both_rows, &d, &err);
    pthread_join(d.thread, NULL);
    if (rc != 0)
        fail_msg("gw_dbs_tx: %s %s", err.code, err.detail);
    assert_string_equal(d.thread_error, "");
    assert_string_equal(d.first_state, "40P01");
    assert_int_equal(d.calls, 2);
    /* the thread's updates and the body's second run, each once */
    assert_int_equal(query_int("SELECT v FROM t_dbs WHERE k = 'd1'"), 11);
    assert_int_equal(query_int("SELECT v FROM t_dbs WHERE k = 'd2'"), 11);
    gw_dbs_close(s);
}

static void test_serialization_failure_at_commit_is_retried(void **state)
{
    /* a deferred constraint trigger that fails with 40001 at the first two COMMITs */
    exec_admin("CREATE OR REPLACE FUNCTION t_dbs_conflict_twice() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "PERFORM t_dbs_raise_until('t_dbs_seq', 2, '40001'); RETURN NULL; END $$; "
               "CREATE CONSTRAINT TRIGGER t_dbs_check AFTER INSERT ON t_dbs DEFERRABLE INITIALLY DEFERRED "
               "FOR EACH ROW EXECUTE FUNCTION t_dbs_conflict_twice()");
    gw_dbs_t *s = open_session();
    body_t b = {.sql = {"INSERT INTO t_dbs (k) VALUES ('c1')"}};
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, run_sql, &b, &err), 0);
    assert_int_equal(b.calls, 3);
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 1);
    gw_dbs_close(s);
}

static void test_retried_even_when_the_body_ignores_the_failure(void **state)
{
    gw_dbs_t *s = open_session();
    /* the body goes on after the 40001 and returns 0: the transaction is doomed, so it runs again */
    body_t b = {.sql = {"INSERT INTO t_dbs (k) VALUES ('i1')", "SELECT t_dbs_raise_until('t_dbs_seq', 1, '40001')",
                        "INSERT INTO t_dbs (k) VALUES ('i2')"},
                .ignore_failures = true};
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, run_sql, &b, &err), 0);
    assert_int_equal(b.calls, 2);
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 2);
    gw_dbs_close(s);
}

static void test_retries_are_bounded(void **state)
{
    static const char *const states[] = {"40001", "40P01"};
    gw_dbs_t *s = open_session();
    for (size_t i = 0; i != 2; ++i) {
        char sql[128];
        snprintf(sql, sizeof(sql), "SELECT t_dbs_raise_until('t_dbs_seq', 1000000, '%s')", states[i]);
        body_t b = {.sql = {"INSERT INTO t_dbs (k) VALUES ('b1')", sql}};
        gw_err_t err = GW_ERR_INIT;
        assert_int_equal(gw_dbs_tx(s, run_sql, &b, &err), -1);
        assert_err(&err, gw_err_conflict, 409, "The transaction kept conflicting");
        assert_int_equal(b.calls, GW_DBS_TX_ATTEMPTS);
        assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 0);
    }
    assert_int_equal(query_int("SELECT last_value FROM t_dbs_seq"), 2 * GW_DBS_TX_ATTEMPTS);
    gw_dbs_close(s);
}

/* --- broken connections ------------------------------------------------------------------------------------- */

static void test_connection_broken_in_the_body(void **state)
{
    gw_dbs_t *s = open_session();
    /* the body's own backend goes away mid-transaction; the body carries on regardless */
    body_t b = {.sql = {"INSERT INTO t_dbs (k) VALUES ('k1')", "SELECT pg_terminate_backend(pg_backend_pid())",
                        "INSERT INTO t_dbs (k) VALUES ('k2')"},
                .ignore_failures = true};
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_tx(s, run_sql, &b, &err), -1);
    assert_err(&err, gw_err_store_unavailable, 503, "The database connection broke during the transaction");
    assert_int_equal(b.calls, 1);
    /* k2 did not run on a new connection behind the transaction's back */
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 0);
    /* outside a transaction the session reconnects */
    must_exec(s, "INSERT INTO t_dbs (k) VALUES ('k3')");
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 1);
    gw_dbs_close(s);
}

static void test_stale_connection_is_replaced_at_begin(void **state)
{
    gw_dbs_t *s = open_session();
    gw_dbs_result_t *r = gw_dbs_query(s, "SELECT pg_backend_pid()", 0, NULL);
    assert_non_null(r);
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%s, 5000)", gw_dbs_value(r, 0, 0));
    gw_dbs_result_free(r);
    exec_admin(sql);
    body_t b = {.sql = {"INSERT INTO t_dbs (k) VALUES ('s1')"}};
    gw_err_t err = GW_ERR_INIT;
    if (gw_dbs_tx(s, run_sql, &b, &err) != 0)
        fail_msg("gw_dbs_tx: %s %s", err.code, err.detail);
    assert_int_equal(query_int("SELECT count(*) FROM t_dbs"), 1);
    gw_dbs_close(s);
}

static void test_unreachable_store(void **state)
{
    const char *bad = "postgresql://settled@127.0.0.1:1/postgres"; /* nothing listens on port 1 */
    gw_err_t err = GW_ERR_INIT;
    assert_null(gw_dbs_open(bad, &err));
    assert_err(&err, gw_err_store_unavailable, 503, "cannot connect to the database: ");
    assert_null(gw_dbs_open(bad, NULL));
    char text[512];
    assert_null(gw_dbs_connect(bad, text, sizeof(text)));
    assert_int_equal(strncmp(text, err.detail, strlen("cannot connect to the database: ")), 0);
}

/* --- gw_dbs_err --------------------------------------------------------------------------------------------- */

static void test_err_follows_the_sqlstate(void **state)
{
    static const struct {
        const char *sql;
        const char *code;
        int status;
        const char *state;
    } cases[] = {
        {"SELEC 1", gw_err_internal, 500, "42601"},
        {"INSERT INTO t_dbs (k) VALUES ('u'), ('u')", gw_err_conflict, 409, "23505"},
        {"INSERT INTO t_dbs (k, v) VALUES ('n', NULL)", gw_err_internal, 500, "23502"},
        {"SELECT t_dbs_raise_until('t_dbs_seq', 1000000, '40001')", gw_err_conflict, 409, "40001"},
        {"SELECT t_dbs_raise_until('t_dbs_seq', 1000000, '57014')", gw_err_store_unavailable, 503, "57014"},
        {"SELECT t_dbs_raise_until('t_dbs_seq', 1000000, '55P03')", gw_err_store_unavailable, 503, "55P03"},
        {"SELECT t_dbs_raise_until('t_dbs_seq', 1000000, '53300')", gw_err_store_unavailable, 503, "53300"},
    };
    gw_dbs_t *s = open_session();
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        assert_int_equal(gw_dbs_exec(s, cases[i].sql, 0, NULL), -1);
        gw_err_t err = GW_ERR_INIT;
        assert_int_equal(gw_dbs_err(s, &err), -1);
        char detail[64];
        snprintf(detail, sizeof(detail), "(SQLSTATE %s).", cases[i].state);
        assert_err(&err, cases[i].code, cases[i].status, NULL);
        if (strstr(err.detail, detail) == NULL)
            fail_msg("%s: expected \"%s\" in \"%s\"", cases[i].sql, detail, err.detail);
        assert_null(strstr(err.detail, "'u'")); /* no value in the detail */
    }
    assert_int_equal(gw_dbs_err(s, NULL), -1);
    gw_dbs_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_commits_several_statements, reset),
        cmocka_unit_test_setup(test_isolation_levels, reset),
        cmocka_unit_test_setup(test_body_failure_rolls_back_with_its_error, reset),
        cmocka_unit_test_setup(test_body_failure_without_error_is_internal, reset),
        cmocka_unit_test_setup(test_failing_statement_rolls_back, reset),
        cmocka_unit_test_setup(test_commit_that_rolls_back_is_a_failure, reset),
        cmocka_unit_test_setup(test_body_that_ends_the_transaction, reset),
        cmocka_unit_test_setup(test_nested_transaction_is_refused, reset),
        cmocka_unit_test_setup(test_deferred_constraint_fails_at_commit, reset),
        cmocka_unit_test_setup(test_constraint_trigger_fails_at_commit, reset),
        cmocka_unit_test_setup(test_serialization_failure_is_retried, reset),
        cmocka_unit_test_setup(test_deadlock_is_retried, reset),
        cmocka_unit_test_setup(test_serialization_failure_at_commit_is_retried, reset),
        cmocka_unit_test_setup(test_retried_even_when_the_body_ignores_the_failure, reset),
        cmocka_unit_test_setup(test_retries_are_bounded, reset),
        cmocka_unit_test_setup(test_connection_broken_in_the_body, reset),
        cmocka_unit_test_setup(test_stale_connection_is_replaced_at_begin, reset),
        cmocka_unit_test_setup(test_unreachable_store, reset),
        cmocka_unit_test_setup(test_err_follows_the_sqlstate, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
