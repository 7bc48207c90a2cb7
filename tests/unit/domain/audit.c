/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/domain/audit.c against a real PostgreSQL (SETTLED_TEST_PG_URL, a superuser URL that deploy/test.sh
 * exports), on a fresh migrated database: every argument of gw_audit_write lands in its own column (NULLs as SQL
 * NULL), the row commits or rolls back with the caller's transaction, refusals fail with the right code and say
 * what failed without quoting the database's message (which can hold the row's values), and gw_audit_verify reports a
 * whole chain as 0 and a tampered one by the id of the altered row. The chain itself (hashing, append-only,
 * concurrency) is tested in tests/integration/test_sql_mirror.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "audit.h"
#include "migrate.h"

typedef struct st_testdb_t {
    char name[64];
    char *conninfo; /* key=value connection string of the fresh database */
    PGconn *conn;   /* a superuser connection to it, for checks */
    gw_dbs_t *s;    /* the session under test */
    int64_t org;    /* an organisation */
} testdb_t;

static PGconn *connect_or_fail(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        print_error("cannot connect to %s: %s", conninfo, PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    return conn;
}

/* Appends key='value' to buf, quoting as libpq's key=value syntax wants. */
static void append_param(char **buf, size_t *len, const char *key, const char *value)
{
    size_t need = strlen(key) + 2 * strlen(value) + 5;
    *buf = realloc(*buf, *len + need);
    char *p = *buf + *len;
    p += sprintf(p, "%s%s='", *len != 0 ? " " : "", key);
    for (const char *v = value; *v != '\0'; ++v) {
        if (*v == '\'' || *v == '\\')
            *p++ = '\\';
        *p++ = *v;
    }
    *p++ = '\'';
    *p = '\0';
    *len = (size_t)(p - *buf);
}

static int admin_exec(PGconn *admin, const char *verb, const char *name, const char *suffix)
{
    char *ident = PQescapeIdentifier(admin, name, strlen(name)), sql[256];
    snprintf(sql, sizeof(sql), "%s %s%s", verb, ident, suffix);
    PQfreemem(ident);
    PGresult *res = PQexec(admin, sql);
    int ret = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
    if (ret != 0)
        print_error("%s: %s", sql, PQerrorMessage(admin));
    PQclear(res);
    return ret;
}

/* One value of a query on the check connection, malloc'd ("(null)" for SQL NULL), or NULL on an error. */
static char *value(testdb_t *db, const char *sql, const char *param)
{
    const char *p[] = {param};
    PGresult *res = PQexecParams(db->conn, sql, param != NULL ? 1 : 0, NULL, p, NULL, NULL, 0);
    char *out = NULL;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        out = strdup(PQgetisnull(res, 0, 0) ? "(null)" : PQgetvalue(res, 0, 0));
    else
        print_error("%s: %s", sql, PQerrorMessage(db->conn));
    PQclear(res);
    return out;
}

static void expect_sql(testdb_t *db, const char *sql, const char *param, const char *want)
{
    char *got = value(db, sql, param);
    if (got == NULL || strcmp(got, want) != 0)
        fail_msg("%s [%s]: got %s, expected %s", sql, param != NULL ? param : "", got != NULL ? got : "(error)", want);
    free(got);
}

static int setup_db(void **state)
{
    const char *url = getenv("SETTLED_TEST_PG_URL");
    if (url == NULL || url[0] == '\0') {
        print_error("SETTLED_TEST_PG_URL is not set: this test needs a real PostgreSQL. Set it to a superuser URL "
                    "such as postgresql://settled@127.0.0.1:55432/postgres (deploy/test.sh does).\n");
        return -1;
    }
    PGconn *admin = connect_or_fail(url);
    if (admin == NULL)
        return -1;
    testdb_t *db = calloc(1, sizeof(*db));
    static unsigned seq;
    snprintf(db->name, sizeof(db->name), "settled_test_audit_%ld_%ld_%u", (long)getpid(), (long)time(NULL), seq++);
    if (admin_exec(admin, "CREATE DATABASE", db->name, "") != 0) {
        PQfinish(admin);
        free(db);
        return -1;
    }
    size_t len = 0;
    PQconninfoOption *opts = PQconninfo(admin);
    for (PQconninfoOption *o = opts; o->keyword != NULL; ++o)
        if (o->val != NULL && o->val[0] != '\0' && strcmp(o->keyword, "dbname") != 0)
            append_param(&db->conninfo, &len, o->keyword, o->val);
    append_param(&db->conninfo, &len, "dbname", db->name);
    PQconninfoFree(opts);
    PQfinish(admin);
    *state = db;

    FILE *quiet = fopen("/dev/null", "w");
    int rc = gw_migrate_run(db->conninfo, gw_schema_files, gw_schema_nfiles, gw_schema_functions, gw_schema_nfunctions,
                            quiet);
    fclose(quiet);
    if (rc != 0) {
        print_error("settled migrate failed on %s\n", db->name);
        return -1;
    }
    char err[256];
    if ((db->conn = connect_or_fail(db->conninfo)) == NULL ||
        (db->s = gw_dbs_connect(db->conninfo, err, sizeof(err))) == NULL)
        return -1;
    char *org =
        value(db, "INSERT INTO organisations (slug, name) VALUES ('audit-test', 'Audit test') RETURNING id", NULL);
    if (org == NULL)
        return -1;
    db->org = strtoll(org, NULL, 10);
    free(org);
    return 0;
}

static int teardown_db(void **state)
{
    testdb_t *db = *state;
    if (db == NULL)
        return 0;
    if (db->s != NULL)
        gw_dbs_close(db->s);
    PQfinish(db->conn);
    PGconn *admin = connect_or_fail(getenv("SETTLED_TEST_PG_URL"));
    int ret = admin != NULL ? admin_exec(admin, "DROP DATABASE IF EXISTS", db->name, " WITH (FORCE)") : -1;
    PQfinish(admin);
    free(db->conninfo);
    free(db);
    return ret;
}

static const char sql_last[] =
    "SELECT concat_ws('|', organisation_id, actor, action, entity_type, entity_id, coalesce(before::text, 'NULL'), "
    "coalesce(after::text, 'NULL'), coalesce(correlation_id, 'NULL')) FROM audit_log ORDER BY id DESC LIMIT 1";

static void test_write_records_every_field(void **state)
{
    testdb_t *db = *state;
    gw_err_t err = GW_ERR_INIT;
    char org[24], want[512];
    snprintf(org, sizeof(org), "%lld", (long long)db->org);
    if (gw_audit_write(db->s, db->org, "user:7", "test.change", "thing", "42", "{\"a\": 1}",
                       "{\"b\": [1, 2], \"a\": 2.50}", "corr-1", &err) != 0)
        fail_msg("%s", err.detail);
    snprintf(want, sizeof(want), "%s|user:7|test.change|thing|42|{\"a\": 1}|{\"a\": 2.50, \"b\": [1, 2]}|corr-1", org);
    expect_sql(db, sql_last, NULL, want);
    /* nothing before a creation, nothing after a deletion, no correlation */
    assert_int_equal(
        gw_audit_write(db->s, db->org, "system:test", "test.create", "thing", "43", NULL, "{}", NULL, &err), 0);
    snprintf(want, sizeof(want), "%s|system:test|test.create|thing|43|NULL|{}|NULL", org);
    expect_sql(db, sql_last, NULL, want);
    assert_int_equal(gw_audit_write(db->s, db->org, "system:test", "test.delete", "thing", "43", "{}", NULL, "c", &err),
                     0);
    snprintf(want, sizeof(want), "%s|system:test|test.delete|thing|43|{}|NULL|c", org);
    expect_sql(db, sql_last, NULL, want);
    assert_null(err.code);

    int64_t broken = -1;
    assert_int_equal(gw_audit_verify(db->s, db->org, &broken, &err), 0);
    assert_int_equal(broken, 0);
    expect_sql(db, "SELECT count(*) FROM audit_log WHERE organisation_id = $1", org, "3");
}

/* The row is part of the caller's transaction: it rolls back with the change it records. */
static void test_write_joins_the_transaction(void **state)
{
    testdb_t *db = *state;
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_dbs_exec(db->s, "BEGIN", 0, NULL), 0);
    assert_int_equal(gw_audit_write(db->s, db->org, "a", "test.rolled_back", "t", "1", NULL, NULL, NULL, &err), 0);
    assert_int_equal(gw_dbs_exec(db->s, "ROLLBACK", 0, NULL), 0);
    expect_sql(db, "SELECT count(*) FROM audit_log WHERE action = $1", "test.rolled_back", "0");
    assert_int_equal(gw_dbs_exec(db->s, "BEGIN", 0, NULL), 0);
    assert_int_equal(gw_audit_write(db->s, db->org, "a", "test.committed", "t", "1", NULL, NULL, NULL, &err), 0);
    expect_sql(db, "SELECT count(*) FROM audit_log WHERE action = $1", "test.committed", "0"); /* not yet */
    assert_int_equal(gw_dbs_exec(db->s, "COMMIT", 0, NULL), 0);
    expect_sql(db, "SELECT count(*) FROM audit_log WHERE action = $1", "test.committed", "1");
}

static void expect_refused(const gw_err_t *err, const char *code, int status)
{
    if (err->code != code)
        fail_msg("code %s, expected %s (detail: %s)", err->code != NULL ? err->code : "(none)", code, err->detail);
    assert_int_equal(err->status, status);
    if (strncmp(err->detail, "cannot write the audit log: ", 28) != 0)
        fail_msg("the detail does not say what failed: %s", err->detail);
    /* the database's DETAIL quotes values ("Failing row contains ...", "parameter $6 = ..."): never in the detail */
    if (strstr(err->detail, "DETAIL") != NULL || strstr(err->detail, "row") != NULL ||
        strstr(err->detail, "parameter") != NULL || strstr(err->detail, "not json") != NULL)
        fail_msg("the detail quotes the database: %s", err->detail);
}

static void test_write_refusals(void **state)
{
    testdb_t *db = *state;
    gw_err_t err = GW_ERR_INIT;
    /* not JSON */
    assert_int_equal(gw_audit_write(db->s, db->org, "a", "test.bad", "t", "1", "not json", NULL, NULL, &err), -1);
    expect_refused(&err, gw_err_internal, 500);
    assert_non_null(strstr(err.detail, "SQLSTATE 22P02"));
    assert_non_null(strstr(gw_dbs_error(db->s), "json")); /* the session still says why, for the log */
    /* no such organisation */
    gw_err_clear(&err);
    assert_int_equal(gw_audit_write(db->s, db->org + 1000, "a", "test.bad", "t", "1", NULL, NULL, NULL, &err), -1);
    expect_refused(&err, gw_err_internal, 500);
    /* a required field missing */
    gw_err_clear(&err);
    assert_int_equal(gw_audit_write(db->s, db->org, NULL, "test.bad", "t", "1", NULL, NULL, NULL, &err), -1);
    expect_refused(&err, gw_err_internal, 500);
    /* outside READ COMMITTED the chain could fork: refused */
    gw_err_clear(&err);
    assert_int_equal(gw_dbs_exec(db->s, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL), 0);
    assert_int_equal(gw_audit_write(db->s, db->org, "a", "test.bad", "t", "1", NULL, NULL, NULL, &err), -1);
    expect_refused(&err, gw_err_internal, 500);
    assert_int_equal(gw_dbs_exec(db->s, "ROLLBACK", 0, NULL), 0);
    expect_sql(db, "SELECT count(*) FROM audit_log WHERE action = $1", "test.bad", "0");

    /* the server goes away under the session: the store is unavailable (retry later), not a bug */
    char *pid = NULL;
    gw_dbs_result_t *r = gw_dbs_query(db->s, "SELECT pg_backend_pid()", 0, NULL);
    assert_non_null(r);
    pid = strdup(gw_dbs_value(r, 0, 0));
    gw_dbs_result_free(r);
    expect_sql(db, "SELECT pg_terminate_backend($1::int)::text", pid, "true");
    free(pid);
    usleep(100 * 1000);
    gw_err_clear(&err);
    assert_int_equal(gw_audit_write(db->s, db->org, "a", "test.lost", "t", "1", NULL, NULL, NULL, &err), -1);
    if (err.code != gw_err_store_unavailable)
        fail_msg("code %s, expected store_unavailable (detail: %s; database: %s [%s])",
                 err.code != NULL ? err.code : "(none)", err.detail, gw_dbs_error(db->s), gw_dbs_sqlstate(db->s));
    assert_int_equal(err.status, 503);
    /* and the session reconnects on its next call */
    gw_err_clear(&err);
    assert_int_equal(gw_audit_write(db->s, db->org, "a", "test.after", "t", "1", NULL, NULL, NULL, &err), 0);
}

static void test_verify_finds_tampering(void **state)
{
    testdb_t *db = *state;
    gw_err_t err = GW_ERR_INIT;
    for (int i = 0; i != 4; ++i) {
        char id[8];
        snprintf(id, sizeof(id), "%d", i);
        assert_int_equal(gw_audit_write(db->s, db->org, "a", "test.chain", "t", id, NULL, "{\"n\": 1}", NULL, &err), 0);
    }
    int64_t broken = -1;
    assert_int_equal(gw_audit_verify(db->s, db->org, &broken, &err), 0);
    assert_int_equal(broken, 0);
    char *third = value(db, "SELECT id FROM audit_log WHERE action = 'test.chain' AND entity_id = $1", "2");
    assert_non_null(third);
    /* a superuser alters a row behind the trigger's back */
    PQclear(PQexec(db->conn, "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"));
    const char *p[] = {third};
    PGresult *res = PQexecParams(db->conn, "UPDATE audit_log SET after = '{\"n\": 2}' WHERE id = $1::bigint", 1, NULL,
                                 p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    PQclear(PQexec(db->conn, "ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"));
    assert_int_equal(gw_audit_verify(db->s, db->org, &broken, &err), 0);
    assert_int_equal(broken, strtoll(third, NULL, 10));
    free(third);
    /* another organisation's chain is not affected, and an organisation without rows is whole */
    assert_int_equal(gw_audit_verify(db->s, db->org + 1000, &broken, &err), 0);
    assert_int_equal(broken, 0);
    assert_null(err.code);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_records_every_field, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_write_joins_the_transaction, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_write_refusals, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_verify_finds_tampering, setup_db, teardown_db),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
