/* SPDX-License-Identifier: MIT */
/* migrate.c: tests gw_migrate_run against a real PostgreSQL (SETTLED_TEST_PG_URL, a superuser URL that
 * deploy/test.sh exports): each test gets a fresh database, which it drops at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "crypto.h"
#include "migrate.h"

/* --- a fresh database per test --------------------------------------------------------------------------- */

typedef struct st_testdb_t {
    char name[64];
    char *conninfo; /* key=value connection string of the fresh database */
    PGconn *conn;   /* a connection to it, for checks */
} testdb_t;

static PGconn *connect_or_fail(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        print_error("cannot connect to %s: %s", conninfo, PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PGresult *res = PQexec(conn, "SET client_min_messages = warning");
    PQclear(res);
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

/* Runs "verb name suffix" on the admin connection: CREATE or DROP DATABASE, whose name cannot be a parameter
 * (it is ours, and escaped anyway). */
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
    snprintf(db->name, sizeof(db->name), "settled_test_migrate_%ld_%ld_%u", (long)getpid(), (long)time(NULL), seq++);
    if (admin_exec(admin, "CREATE DATABASE", db->name, "") != 0) {
        PQfinish(admin);
        free(db);
        return -1;
    }
    /* the same server and user, another database: from the options of the live admin connection */
    size_t len = 0;
    PQconninfoOption *opts = PQconninfo(admin);
    for (PQconninfoOption *o = opts; o->keyword != NULL; ++o)
        if (o->val != NULL && o->val[0] != '\0' && strcmp(o->keyword, "dbname") != 0)
            append_param(&db->conninfo, &len, o->keyword, o->val);
    append_param(&db->conninfo, &len, "dbname", db->name);
    PQconninfoFree(opts);
    PQfinish(admin);
    if ((db->conn = connect_or_fail(db->conninfo)) == NULL)
        return -1;
    *state = db;
    return 0;
}

static int teardown_db(void **state)
{
    testdb_t *db = *state;
    if (db == NULL)
        return 0;
    PQfinish(db->conn);
    /* FORCE: a failed migrator's session may still be closing on the server */
    PGconn *admin = connect_or_fail(getenv("SETTLED_TEST_PG_URL"));
    int ret = admin != NULL ? admin_exec(admin, "DROP DATABASE IF EXISTS", db->name, " WITH (FORCE)") : -1;
    PQfinish(admin);
    free(db->conninfo);
    free(db);
    return ret;
}

/* --- helpers ---------------------------------------------------------------------------------------------- */

/* Runs gw_migrate_run and returns its result; *output receives what it printed (malloc'd). */
static int migrate(const testdb_t *db, const gw_schema_file_t *files, size_t nfiles, char **output)
{
    size_t len = 0;
    FILE *out = open_memstream(output, &len);
    assert_non_null(out);
    int ret = gw_migrate_run(db->conninfo, files, nfiles, out);
    fclose(out);
    return ret;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) == NULL)
        fail_msg("expected \"%s\" in:\n%s", needle, haystack);
}

/* The one-value result of a query with an optional text parameter ("" for SQL NULL), malloc'd. */
static char *query1(const testdb_t *db, const char *sql, const char *param)
{
    const char *params[] = {param};
    PGresult *res = PQexecParams(db->conn, sql, param != NULL, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        fail_msg("%s: %s", sql, PQerrorMessage(db->conn));
    char *value = strdup(PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
    PQclear(res);
    return value;
}

static bool table_exists(const testdb_t *db, const char *table)
{
    char *v = query1(db, "SELECT to_regclass($1)::text", table);
    bool exists = v[0] != '\0';
    free(v);
    return exists;
}

static long count_records(const testdb_t *db)
{
    char *v = query1(db, "SELECT count(*) FROM schema_migrations", NULL);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

static bool recorded(const testdb_t *db, const char *name)
{
    char *v = query1(db, "SELECT count(*) FROM schema_migrations WHERE name = $1", name);
    bool r = strcmp(v, "1") == 0;
    free(v);
    return r;
}

/* The real schema files followed by extra ones (files must stay in name order). */
static gw_schema_file_t *with_extra(const gw_schema_file_t *extra, size_t nextra, size_t *n)
{
    *n = gw_schema_nfiles + nextra;
    gw_schema_file_t *files = calloc(*n, sizeof(*files));
    memcpy(files, gw_schema_files, gw_schema_nfiles * sizeof(*files));
    memcpy(files + gw_schema_nfiles, extra, nextra * sizeof(*files));
    return files;
}

#define FILE_OF(name, sql)                                                                                             \
    {                                                                                                                  \
        (name), (sql), sizeof(sql) - 1                                                                                 \
    }

/* --- tests ------------------------------------------------------------------------------------------------ */

static void test_embedded_files(void **state)
{
    /* the embedded table is what schema/ holds, byte for byte, sorted by name */
    assert_true(gw_schema_nfiles >= 1);
    assert_string_equal(gw_schema_files[0].name, "0001_organisations_and_inbox.sql");
    for (size_t i = 0; i != gw_schema_nfiles; ++i) {
        if (i != 0)
            assert_true(strcmp(gw_schema_files[i - 1].name, gw_schema_files[i].name) < 0);
        char path[512];
        snprintf(path, sizeof(path), "%s/schema/%s", SETTLED_SOURCE_DIR, gw_schema_files[i].name);
        FILE *fp = fopen(path, "rb");
        if (fp == NULL)
            fail_msg("cannot open %s", path);
        char *buf = malloc(gw_schema_files[i].len + 2);
        size_t got = fread(buf, 1, gw_schema_files[i].len + 1, fp);
        fclose(fp);
        bool same = got == gw_schema_files[i].len && memcmp(buf, gw_schema_files[i].sql, got) == 0;
        free(buf);
        if (!same)
            fail_msg("%s: %zu bytes on disk differ from the %zu embedded (rebuild?)", path, got,
                     gw_schema_files[i].len);
        assert_int_equal(gw_schema_files[i].sql[gw_schema_files[i].len], '\0');
    }
}

static void test_fresh_then_noop(void **state)
{
    testdb_t *db = *state;
    char *out;
    int ret = migrate(db, gw_schema_files, gw_schema_nfiles, &out);
    if (ret != 0)
        fail_msg("first run failed:\n%s", out);
    assert_contains(out, "applied 0001_organisations_and_inbox.sql\n");
    free(out);
    assert_true(table_exists(db, "organisations"));
    assert_true(table_exists(db, "webhook_events"));
    assert_true(table_exists(db, "schema_migrations"));
    assert_int_equal(count_records(db), (long)gw_schema_nfiles);
    for (size_t i = 0; i != gw_schema_nfiles; ++i) {
        char expected[65];
        gw_crypto_sha256_hex(gw_schema_files[i].sql, gw_schema_files[i].len, expected);
        char *checksum = query1(db, "SELECT checksum FROM schema_migrations WHERE name = $1", gw_schema_files[i].name);
        assert_string_equal(checksum, expected);
        free(checksum);
    }
    char *applied_at =
        query1(db, "SELECT count(*) FROM schema_migrations WHERE applied_at > now() - interval '1 hour'", NULL);
    assert_int_equal(strtol(applied_at, NULL, 10), (long)gw_schema_nfiles);
    free(applied_at);

    /* the second run changes nothing */
    char *before = query1(db, "SELECT string_agg(name || applied_at::text, ',') FROM schema_migrations", NULL);
    ret = migrate(db, gw_schema_files, gw_schema_nfiles, &out);
    if (ret != 0)
        fail_msg("second run failed:\n%s", out);
    assert_null(strstr(out, "applied "));
    char expected[64];
    snprintf(expected, sizeof(expected), "up to date (%zu migration%s)\n", gw_schema_nfiles,
             gw_schema_nfiles == 1 ? "" : "s");
    assert_string_equal(out, expected);
    free(out);
    char *after = query1(db, "SELECT string_agg(name || applied_at::text, ',') FROM schema_migrations", NULL);
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_new_file_applied_later(void **state)
{
    testdb_t *db = *state;
    char *out;
    assert_int_equal(migrate(db, gw_schema_files, gw_schema_nfiles, &out), 0);
    free(out);
    static const gw_schema_file_t extra[] = {
        FILE_OF("9001_two_statements.sql",
                "CREATE TABLE t_one (id int);\n-- a comment\nCREATE TABLE t_two (id int);\n"),
        FILE_OF("9002_only_comments.sql", "-- nothing to do\n"),
    };
    size_t n;
    gw_schema_file_t *files = with_extra(extra, 2, &n);
    int ret = migrate(db, files, n, &out);
    if (ret != 0)
        fail_msg("run failed:\n%s", out);
    assert_null(strstr(out, "applied 0001"));
    assert_contains(out, "applied 9001_two_statements.sql\napplied 9002_only_comments.sql\n");
    free(out);
    assert_true(table_exists(db, "t_one"));
    assert_true(table_exists(db, "t_two"));
    assert_true(recorded(db, "9002_only_comments.sql"));

    /* a binary that does not know the newer files notes them and succeeds */
    assert_int_equal(migrate(db, gw_schema_files, gw_schema_nfiles, &out), 0);
    assert_contains(out, "note: the database also has 9001_two_statements.sql");
    free(out);
    free(files);
}

static void test_edited_file_refused(void **state)
{
    testdb_t *db = *state;
    char *out;
    assert_int_equal(migrate(db, gw_schema_files, gw_schema_nfiles, &out), 0);
    free(out);

    /* the applied first file, edited by one byte, and a new file after it */
    size_t n;
    static const gw_schema_file_t extra[] = {FILE_OF("9001_after_edit.sql", "CREATE TABLE t_after_edit (id int);")};
    gw_schema_file_t *files = with_extra(extra, 1, &n);
    char *edited = malloc(files[0].len + 1);
    memcpy(edited, files[0].sql, files[0].len + 1);
    edited[files[0].len - 1] = edited[files[0].len - 1] == ' ' ? '\t' : ' ';
    files[0].sql = edited;

    assert_int_equal(migrate(db, files, n, &out), -1);
    assert_contains(out, "0001_organisations_and_inbox.sql was changed after it was applied");
    assert_null(strstr(out, "applied 9001"));
    free(out);
    assert_false(table_exists(db, "t_after_edit"));
    assert_false(recorded(db, "9001_after_edit.sql"));
    assert_int_equal(count_records(db), (long)gw_schema_nfiles);
    free(edited);
    free(files);
}

static void test_bad_sql_rolled_back(void **state)
{
    testdb_t *db = *state;
    static const gw_schema_file_t extra[] = {
        FILE_OF("9001_good.sql", "CREATE TABLE t_good (id int);"),
        FILE_OF("9002_bad.sql",
                "CREATE TABLE t_bad (id int);\nINSERT INTO t_bad VALUES (1);\nSELECT no_such_function();\n"),
        FILE_OF("9003_never.sql", "CREATE TABLE t_never (id int);"),
    };
    size_t n;
    gw_schema_file_t *files = with_extra(extra, 3, &n);
    char *out;
    assert_int_equal(migrate(db, files, n, &out), -1);
    assert_contains(out, "applied 9001_good.sql\n");
    assert_contains(out, "9002_bad.sql failed");
    assert_contains(out, "no_such_function");
    assert_null(strstr(out, "9003"));
    free(out);
    /* the files before it stay applied; its own statements and record are gone; nothing after it ran */
    assert_true(table_exists(db, "organisations"));
    assert_true(table_exists(db, "t_good"));
    assert_true(recorded(db, "9001_good.sql"));
    assert_false(table_exists(db, "t_bad"));
    assert_false(recorded(db, "9002_bad.sql"));
    assert_false(table_exists(db, "t_never"));
    assert_false(recorded(db, "9003_never.sql"));

    /* a file that ends the transaction it runs in is reported and not recorded */
    static const gw_schema_file_t sneaky[] = {
        FILE_OF("9001_good.sql", "CREATE TABLE t_good (id int);"),
        FILE_OF("9002_commits.sql", "COMMIT; CREATE TABLE t_half (id int);"),
    };
    free(files);
    files = with_extra(sneaky, 2, &n);
    assert_int_equal(migrate(db, files, n, &out), -1);
    assert_contains(out, "9002_commits.sql ends the transaction it runs in");
    free(out);
    assert_false(recorded(db, "9002_commits.sql"));
    free(files);
}

static void test_refuses_bad_input(void **state)
{
    testdb_t *db = *state;
    char *out;
    static const gw_schema_file_t unordered[] = {FILE_OF("0002_b.sql", "SELECT 1;"),
                                                 FILE_OF("0001_a.sql", "SELECT 1;")};
    assert_int_equal(migrate(db, unordered, 2, &out), -1);
    assert_contains(out, "not in name order");
    free(out);
    static const gw_schema_file_t nul[] = {FILE_OF("0001_nul.sql", "SELECT 1;\0DROP TABLE x;")};
    assert_int_equal(migrate(db, nul, 1, &out), -1);
    assert_contains(out, "0001_nul.sql: contains a NUL byte");
    free(out);
    assert_false(recorded(db, "0001_nul.sql"));

    size_t len = 0;
    FILE *fp = open_memstream(&out, &len);
    assert_int_equal(gw_migrate_run("", gw_schema_files, gw_schema_nfiles, fp), -1);
    assert_int_equal(gw_migrate_run("host=127.0.0.1 port=1 connect_timeout=2", gw_schema_files, gw_schema_nfiles, fp),
                     -1);
    fclose(fp);
    assert_contains(out, "no database to migrate");
    assert_contains(out, "cannot connect to the database");
    free(out);
}

struct race {
    const testdb_t *db;
    int ret;
    char *out;
};

static void *on_race(void *arg)
{
    struct race *r = arg;
    size_t len = 0;
    FILE *out = open_memstream(&r->out, &len);
    r->ret = gw_migrate_run(r->db->conninfo, gw_schema_files, gw_schema_nfiles, out);
    fclose(out);
    return NULL;
}

/* Concurrent migrators serialise on the advisory lock: all succeed and each file is applied once. */
static void test_concurrent_runs(void **state)
{
    testdb_t *db = *state;
    struct race races[4];
    pthread_t threads[4];
    for (int i = 0; i != 4; ++i) {
        races[i] = (struct race){.db = db};
        assert_int_equal(pthread_create(&threads[i], NULL, on_race, &races[i]), 0);
    }
    int applied = 0;
    for (int i = 0; i != 4; ++i) {
        pthread_join(threads[i], NULL);
        if (races[i].ret != 0)
            fail_msg("migrator %d failed:\n%s", i, races[i].out);
        applied += strstr(races[i].out, "applied 0001_organisations_and_inbox.sql") != NULL;
        free(races[i].out);
    }
    assert_int_equal(applied, 1);
    assert_int_equal(count_records(db), (long)gw_schema_nfiles);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_files),
        cmocka_unit_test_setup_teardown(test_fresh_then_noop, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_new_file_applied_later, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_edited_file_refused, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_bad_sql_rolled_back, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_refuses_bad_input, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_concurrent_runs, setup_db, teardown_db),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
