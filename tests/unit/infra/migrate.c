/* SPDX-License-Identifier: MIT */
/* migrate.c: tests gw_migrate_run and gw_migrate_check against a real PostgreSQL (SETTLED_TEST_PG_URL, a superuser
 * URL that deploy/test.sh exports): each test gets a fresh database, which it drops at the end. */
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
#include "db.h"
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

/* Runs gw_migrate_run with files and functions and returns its result; *output receives what it printed
 * (malloc'd). */
static int migrate_with(const testdb_t *db, const gw_schema_file_t *files, size_t nfiles,
                        const gw_schema_file_t *functions, size_t nfunctions, char **output)
{
    size_t len = 0;
    FILE *out = open_memstream(output, &len);
    assert_non_null(out);
    int ret = gw_migrate_run(db->conninfo, files, nfiles, functions, nfunctions, out);
    fclose(out);
    return ret;
}

/* Runs gw_migrate_run with files and the real functions files. */
static int migrate(const testdb_t *db, const gw_schema_file_t *files, size_t nfiles, char **output)
{
    return migrate_with(db, files, nfiles, gw_schema_functions, gw_schema_nfunctions, output);
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

static int by_name(const void *a, const void *b)
{
    return strcmp(((const gw_schema_file_t *)a)->name, ((const gw_schema_file_t *)b)->name);
}

/* The real functions files and extra ones, sorted by name (an extra one replaces a real one of its name). */
static gw_schema_file_t *functions_with(const gw_schema_file_t *extra, size_t nextra, size_t *n)
{
    gw_schema_file_t *files = calloc(gw_schema_nfunctions + nextra, sizeof(*files));
    *n = 0;
    for (size_t i = 0; i != gw_schema_nfunctions; ++i) {
        bool replaced = false;
        for (size_t j = 0; j != nextra; ++j)
            replaced |= strcmp(extra[j].name, gw_schema_functions[i].name) == 0;
        if (!replaced)
            files[(*n)++] = gw_schema_functions[i];
    }
    memcpy(files + *n, extra, nextra * sizeof(*files));
    *n += nextra;
    qsort(files, *n, sizeof(*files), by_name);
    return files;
}

/* The real functions file called name. */
static const gw_schema_file_t *real_function_file(const char *name)
{
    for (size_t i = 0; i != gw_schema_nfunctions; ++i)
        if (strcmp(gw_schema_functions[i].name, name) == 0)
            return &gw_schema_functions[i];
    fail_msg("no functions file %s is embedded", name);
    return NULL;
}

/* Every function of the public schema as pg_get_functiondef prints it, in one text (malloc'd). */
static char *function_defs(const testdb_t *db)
{
    return query1(
        db,
        "SELECT coalesce(string_agg(pg_get_functiondef(p.oid), E'\n' ORDER BY p.oid::regprocedure::text), '') "
        "FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace",
        NULL);
}

/* The rows of schema_functions, in one text (malloc'd). */
static char *function_records(const testdb_t *db)
{
    return query1(db,
                  "SELECT coalesce(string_agg(name || ' ' || checksum || ' ' || applied_at::text, ',' ORDER BY name), "
                  "'') FROM schema_functions",
                  NULL);
}

/* The transaction id that last wrote the catalog row of function proname (it changes when the function is
 * replaced, even by the same text), or "" if there is no such function (malloc'd). */
static char *proc_xmin(const testdb_t *db, const char *proname)
{
    return query1(db, "SELECT (SELECT xmin::text FROM pg_proc WHERE proname = $1)", proname);
}

static long count_function_records(const testdb_t *db)
{
    char *v = query1(db, "SELECT count(*) FROM schema_functions", NULL);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

/* The checksum recorded for functions file name, or "" (malloc'd). */
static char *function_checksum(const testdb_t *db, const char *name)
{
    return query1(db, "SELECT (SELECT checksum FROM schema_functions WHERE name = $1)", name);
}

/* What SELECT sql returns (one value, malloc'd), e.g. a test function's answer. */
static char *select1(const testdb_t *db, const char *sql)
{
    return query1(db, sql, NULL);
}

static void assert_strings_equal(const char *what, const char *before, const char *after)
{
    if (strcmp(before, after) != 0)
        fail_msg("%s changed:\n--- before\n%s\n--- after\n%s", what, before, after);
}

/* Runs gw_migrate_check over a new session to db; returns its result and copies its message to err. */
static int check(const testdb_t *db, char *err, size_t errlen)
{
    char cerr[256];
    gw_dbs_t *s = gw_dbs_connect(db->conninfo, cerr, sizeof(cerr));
    if (s == NULL)
        fail_msg("%s", cerr);
    err[0] = '\0';
    int ret = gw_migrate_check(s, err, errlen);
    gw_dbs_close(s);
    return ret;
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
    /* and the functions table is what schema/functions/ holds, likewise, named after the domain */
    assert_true(gw_schema_nfunctions >= 4);
    static const char *const domains[] = {"audit.sql", "match.sql", "queue.sql", "xero_mirror.sql"};
    for (size_t i = 0; i != sizeof(domains) / sizeof(domains[0]); ++i)
        assert_non_null(real_function_file(domains[i]));
    for (size_t i = 0; i != gw_schema_nfunctions; ++i) {
        const gw_schema_file_t *f = &gw_schema_functions[i];
        if (i != 0)
            assert_true(strcmp(gw_schema_functions[i - 1].name, f->name) < 0);
        size_t stem = strspn(f->name, "abcdefghijklmnopqrstuvwxyz0123456789_");
        if (stem == 0 || strcmp(f->name + stem, ".sql") != 0)
            fail_msg("functions/%s: not a what.sql name", f->name);
        char path[512];
        snprintf(path, sizeof(path), "%s/schema/functions/%s", SETTLED_SOURCE_DIR, f->name);
        FILE *fp = fopen(path, "rb");
        if (fp == NULL)
            fail_msg("cannot open %s", path);
        char *buf = malloc(f->len + 2);
        size_t got = fread(buf, 1, f->len + 1, fp);
        fclose(fp);
        bool same = got == f->len && memcmp(buf, f->sql, got) == 0;
        free(buf);
        if (!same)
            fail_msg("%s: %zu bytes on disk differ from the %zu embedded (rebuild?)", path, got, f->len);
        assert_int_equal(f->sql[f->len], '\0');
        if (strncmp(f->sql, "-- SPDX-License-Identifier: MIT\n", 32) != 0)
            fail_msg("functions/%s does not open with the SPDX line", f->name);
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
    for (size_t i = 0; i != gw_schema_nfunctions; ++i) {
        char line[256];
        snprintf(line, sizeof(line), "applied functions/%s\n", gw_schema_functions[i].name);
        assert_contains(out, line);
    }
    /* the functions files come after every numbered file */
    assert_true(strstr(out, "applied functions/") > strstr(out, "applied 0002_pipeline.sql"));
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
    assert_true(table_exists(db, "schema_functions"));
    assert_int_equal(count_function_records(db), (long)gw_schema_nfunctions);
    for (size_t i = 0; i != gw_schema_nfunctions; ++i) {
        char expected[65];
        gw_crypto_sha256_hex(gw_schema_functions[i].sql, gw_schema_functions[i].len, expected);
        char *checksum = function_checksum(db, gw_schema_functions[i].name);
        assert_string_equal(checksum, expected);
        free(checksum);
    }

    /* the second run changes nothing */
    char *before = query1(db, "SELECT string_agg(name || applied_at::text, ',') FROM schema_migrations", NULL);
    char *records_before = function_records(db), *write_before = proc_xmin(db, "audit_write");
    ret = migrate(db, gw_schema_files, gw_schema_nfiles, &out);
    if (ret != 0)
        fail_msg("second run failed:\n%s", out);
    assert_null(strstr(out, "applied "));
    char expected[96];
    snprintf(expected, sizeof(expected), "up to date (%zu migration%s, %zu functions file%s)\n", gw_schema_nfiles,
             gw_schema_nfiles == 1 ? "" : "s", gw_schema_nfunctions, gw_schema_nfunctions == 1 ? "" : "s");
    assert_string_equal(out, expected);
    free(out);
    char *after = query1(db, "SELECT string_agg(name || applied_at::text, ',') FROM schema_migrations", NULL);
    assert_string_equal(before, after);
    free(before);
    free(after);
    /* unchanged functions files were not run again: their records and the functions' catalog rows are as they were */
    char *records_after = function_records(db), *write_after = proc_xmin(db, "audit_write");
    assert_strings_equal("schema_functions", records_before, records_after);
    assert_string_equal(write_before, write_after);
    free(records_before);
    free(records_after);
    free(write_before);
    free(write_after);
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

    /* and a changed functions file in the same run: the refusal stops before the functions files */
    static const gw_schema_file_t extra_fn[] = {
        FILE_OF("t_answer.sql", "CREATE OR REPLACE FUNCTION t_answer() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n")};
    size_t nfn;
    gw_schema_file_t *functions = functions_with(extra_fn, 1, &nfn);
    char *records_before = function_records(db);

    assert_int_equal(migrate_with(db, files, n, functions, nfn, &out), -1);
    assert_contains(out, "0001_organisations_and_inbox.sql was changed after it was applied");
    assert_null(strstr(out, "applied 9001"));
    assert_null(strstr(out, "applied functions/"));
    free(out);
    assert_false(table_exists(db, "t_after_edit"));
    assert_false(recorded(db, "9001_after_edit.sql"));
    assert_int_equal(count_records(db), (long)gw_schema_nfiles);
    char *v = proc_xmin(db, "t_answer"), *records_after = function_records(db);
    assert_string_equal(v, "");
    assert_strings_equal("schema_functions", records_before, records_after);
    free(v);
    free(records_before);
    free(records_after);
    free(functions);
    free(edited);
    free(files);
}

/* An edited functions file is applied again (its new text is live) and only it: the unchanged ones are not run. */
static void test_edited_functions_file_reapplied(void **state)
{
    testdb_t *db = *state;
    static const gw_schema_file_t v1[] = {
        FILE_OF("t_answer.sql",
                "-- v1\nCREATE OR REPLACE FUNCTION t_answer() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n"),
        FILE_OF("t_other.sql", "CREATE OR REPLACE FUNCTION t_other() RETURNS text LANGUAGE sql AS $$ SELECT 'o' $$;\n"),
    };
    size_t n;
    gw_schema_file_t *functions = functions_with(v1, 2, &n);
    char *out;
    int ret = migrate_with(db, gw_schema_files, gw_schema_nfiles, functions, n, &out);
    if (ret != 0)
        fail_msg("first run failed:\n%s", out);
    assert_contains(out, "applied functions/t_answer.sql\n");
    assert_contains(out, "applied functions/t_other.sql\n");
    free(out);
    free(functions);
    char *v = select1(db, "SELECT t_answer()");
    assert_string_equal(v, "1");
    free(v);
    char *other_xmin = proc_xmin(db, "t_other"), *answer_xmin = proc_xmin(db, "t_answer");
    char *audit_xmin = proc_xmin(db, "audit_write"), *upsert_xmin = proc_xmin(db, "xero_upsert_invoices");
    char *other_record =
        query1(db, "SELECT checksum || applied_at::text FROM schema_functions WHERE name = $1", "t_other.sql");
    char *audit_record =
        query1(db, "SELECT checksum || applied_at::text FROM schema_functions WHERE name = $1", "audit.sql");

    /* the developer edits t_answer.sql (and one comment of a real file, which is re-applied as a whole) */
    const gw_schema_file_t *queue = real_function_file("queue.sql");
    char *queue_edited = malloc(queue->len + 32);
    memcpy(queue_edited, queue->sql, queue->len);
    strcpy(queue_edited + queue->len, "-- edited\n");
    gw_schema_file_t v2[] = {
        FILE_OF("t_answer.sql",
                "-- v2\nCREATE OR REPLACE FUNCTION t_answer() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;\n"),
        FILE_OF("t_other.sql", "CREATE OR REPLACE FUNCTION t_other() RETURNS text LANGUAGE sql AS $$ SELECT 'o' $$;\n"),
        {"queue.sql", queue_edited, queue->len + strlen("-- edited\n")},
    };
    char *notify_xmin = proc_xmin(db, "webhook_events_notify");
    functions = functions_with(v2, 3, &n);
    ret = migrate_with(db, gw_schema_files, gw_schema_nfiles, functions, n, &out);
    if (ret != 0)
        fail_msg("second run failed:\n%s", out);
    assert_contains(out, "applied functions/queue.sql\napplied functions/t_answer.sql\n");
    assert_null(strstr(out, "t_other"));
    assert_null(strstr(out, "audit.sql"));
    assert_null(strstr(out, "applied 0"));
    free(out);

    /* the new body is live, and recorded */
    v = select1(db, "SELECT t_answer()");
    assert_string_equal(v, "2");
    free(v);
    char expected[65];
    gw_crypto_sha256_hex(v2[0].sql, v2[0].len, expected);
    v = function_checksum(db, "t_answer.sql");
    assert_string_equal(v, expected);
    free(v);
    v = proc_xmin(db, "t_answer");
    assert_string_not_equal(v, answer_xmin);
    free(v);
    v = proc_xmin(db, "webhook_events_notify");
    assert_string_not_equal(v, notify_xmin);
    free(v);
    /* the unchanged files were not run: their functions' catalog rows and their records did not move */
    v = proc_xmin(db, "t_other");
    assert_string_equal(v, other_xmin);
    free(v);
    v = proc_xmin(db, "audit_write");
    assert_string_equal(v, audit_xmin);
    free(v);
    v = proc_xmin(db, "xero_upsert_invoices");
    assert_string_equal(v, upsert_xmin);
    free(v);
    v = query1(db, "SELECT checksum || applied_at::text FROM schema_functions WHERE name = $1", "t_other.sql");
    assert_string_equal(v, other_record);
    free(v);
    v = query1(db, "SELECT checksum || applied_at::text FROM schema_functions WHERE name = $1", "audit.sql");
    assert_string_equal(v, audit_record);
    free(v);

    /* back to the real files: queue.sql is applied again; t_*.sql are noted as unknown, not dropped */
    ret = migrate(db, gw_schema_files, gw_schema_nfiles, &out);
    if (ret != 0)
        fail_msg("third run failed:\n%s", out);
    assert_contains(out, "applied functions/queue.sql\n");
    assert_contains(out, "note: the database also has functions/t_answer.sql, which this binary does not know");
    free(out);
    v = select1(db, "SELECT t_answer()");
    assert_string_equal(v, "2");
    free(v);

    free(functions);
    free(queue_edited);
    free(notify_xmin);
    free(other_xmin);
    free(answer_xmin);
    free(audit_xmin);
    free(upsert_xmin);
    free(other_record);
    free(audit_record);
}

/* A functions file that fails to apply leaves the database exactly as it was: the files before it in the same
 * run are not applied either, and no record changes. */
static void test_bad_functions_file_rolls_back_all(void **state)
{
    testdb_t *db = *state;
    static const gw_schema_file_t v1[] = {
        FILE_OF("t_a.sql", "CREATE OR REPLACE FUNCTION t_a() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n"),
        FILE_OF("t_b.sql",
                "CREATE OR REPLACE FUNCTION t_b() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;\n"),
    };
    size_t n;
    gw_schema_file_t *functions = functions_with(v1, 2, &n);
    char *out;
    assert_int_equal(migrate_with(db, gw_schema_files, gw_schema_nfiles, functions, n, &out), 0);
    free(out);
    free(functions);
    char *defs_before = function_defs(db), *records_before = function_records(db);
    char *migrations_before = query1(db,
                                     "SELECT string_agg(name || checksum || applied_at::text, ',') "
                                     "FROM schema_migrations",
                                     NULL);

    /* the first file changes and a new one comes; the second has a syntax error in its PL/pgSQL body, which
     * PostgreSQL finds at CREATE time only with check_function_bodies on (it parses PL/pgSQL bodies then, and looks
     * up the objects they name only when they run) */
    static const gw_schema_file_t bad_body[] = {
        FILE_OF("t_a.sql", "CREATE OR REPLACE FUNCTION t_a() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;\n"
                           "CREATE OR REPLACE FUNCTION t_new() RETURNS int LANGUAGE sql AS $$ SELECT 3 $$;\n"),
        FILE_OF("t_b.sql",
                "CREATE OR REPLACE FUNCTION t_b() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETRUN 2; END $$;\n"),
    };
    /* a statement that does not parse at all */
    static const gw_schema_file_t bad_statement[] = {
        FILE_OF("t_a.sql", "CREATE OR REPLACE FUNCTION t_a() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;\n"),
        FILE_OF("t_b.sql", "CREATE OR REPLACE FUNCTON t_b() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;\n"),
    };
    /* a SQL-language function calling a function that does not exist (check_function_bodies validates SQL bodies
     * against the catalog), and the real match.sql, changed, before it in name order */
    const gw_schema_file_t *match = real_function_file("match.sql");
    char *match_edited = malloc(match->len + 32);
    memcpy(match_edited, match->sql, match->len);
    strcpy(match_edited + match->len, "-- edited\n");
    gw_schema_file_t bad_call[] = {
        FILE_OF("t_a.sql", "CREATE OR REPLACE FUNCTION t_a() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;\n"),
        FILE_OF("t_b.sql", "CREATE OR REPLACE FUNCTION t_b() RETURNS int LANGUAGE sql AS $$ SELECT t_missing() $$;\n"),
        {"match.sql", match_edited, match->len + strlen("-- edited\n")},
    };
    static const char *const detail[] = {"RETRUN", "FUNCTON", "t_missing"};
    const gw_schema_file_t *cases[] = {bad_body, bad_statement, bad_call};
    const size_t ncases[] = {2, 2, 3};
    for (size_t c = 0; c != 3; ++c) {
        functions = functions_with(cases[c], ncases[c], &n);
        assert_int_equal(migrate_with(db, gw_schema_files, gw_schema_nfiles, functions, n, &out), -1);
        assert_contains(out, "migrate: functions/t_b.sql failed, none of the functions files was applied");
        assert_contains(out, detail[c]);
        assert_null(strstr(out, "applied "));
        assert_null(strstr(out, "up to date"));
        free(out);
        free(functions);
        char *v = select1(db, "SELECT t_a()");
        assert_string_equal(v, "1");
        free(v);
        v = proc_xmin(db, "t_new");
        assert_string_equal(v, "");
        free(v);
        char *defs_after = function_defs(db), *records_after = function_records(db);
        char *migrations_after = query1(db,
                                        "SELECT string_agg(name || checksum || applied_at::text, ',') "
                                        "FROM schema_migrations",
                                        NULL);
        assert_strings_equal("the functions", defs_before, defs_after);
        assert_strings_equal("schema_functions", records_before, records_after);
        assert_strings_equal("schema_migrations", migrations_before, migrations_after);
        free(defs_after);
        free(records_after);
        free(migrations_after);
    }

    /* fixed, the same run goes through */
    static const gw_schema_file_t fixed[] = {
        FILE_OF("t_a.sql", "CREATE OR REPLACE FUNCTION t_a() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;\n"),
        FILE_OF("t_b.sql",
                "CREATE OR REPLACE FUNCTION t_b() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 2; END $$;\n"),
    };
    functions = functions_with(fixed, 2, &n);
    int ret = migrate_with(db, gw_schema_files, gw_schema_nfiles, functions, n, &out);
    if (ret != 0)
        fail_msg("fixed run failed:\n%s", out);
    assert_contains(out, "applied functions/t_a.sql\napplied functions/t_b.sql\n");
    free(out);
    free(functions);
    char *v = select1(db, "SELECT t_a() + t_b()");
    assert_string_equal(v, "4");
    free(v);

    /* a functions file that ends the transaction is reported and not recorded */
    static const gw_schema_file_t commits[] = {
        FILE_OF("t_b.sql", "COMMIT; CREATE OR REPLACE FUNCTION t_b() RETURNS int LANGUAGE sql AS $$ SELECT 5 $$;\n"),
    };
    functions = functions_with(commits, 1, &n);
    assert_int_equal(migrate_with(db, gw_schema_files, gw_schema_nfiles, functions, n, &out), -1);
    assert_contains(out, "functions/t_b.sql ends the transaction it runs in");
    free(out);
    free(functions);
    v = function_checksum(db, "t_b.sql");
    char expected[65];
    gw_crypto_sha256_hex(fixed[1].sql, fixed[1].len, expected);
    assert_string_equal(v, expected);
    free(v);

    free(match_edited);
    free(defs_before);
    free(records_before);
    free(migrations_before);
}

/* Every function of the schema has one home in schema/functions/, and the functions files can be applied again
 * over themselves (CREATE OR REPLACE only) without changing any definition. */
static void test_functions_have_a_home(void **state)
{
    testdb_t *db = *state;
    char *out;
    int ret = migrate(db, gw_schema_files, gw_schema_nfiles, &out);
    if (ret != 0)
        fail_msg("run failed:\n%s", out);
    free(out);

    PGresult *res = PQexec(db->conn, "SELECT proname, count(*) FROM pg_proc "
                                     "WHERE pronamespace = 'public'::regnamespace GROUP BY proname ORDER BY proname");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_true(PQntuples(res) >= 27);
    for (int i = 0; i != PQntuples(res); ++i) {
        const char *proname = PQgetvalue(res, i, 0);
        long overloads = strtol(PQgetvalue(res, i, 1), NULL, 10), homes = 0;
        char needle[128];
        snprintf(needle, sizeof(needle), "\nCREATE OR REPLACE FUNCTION %s(", proname);
        for (size_t f = 0; f != gw_schema_nfunctions; ++f)
            for (const char *p = gw_schema_functions[f].sql; (p = strstr(p, needle)) != NULL; p += strlen(needle))
                ++homes;
        if (homes != overloads)
            fail_msg("function %s: %ld definition(s) in the database, %ld in schema/functions/", proname, overloads,
                     homes);
    }
    PQclear(res);

    /* re-applying every functions file changes no definition */
    char *defs_before = function_defs(db);
    PQclear(PQexec(db->conn, "DELETE FROM schema_functions"));
    ret = migrate(db, gw_schema_files, gw_schema_nfiles, &out);
    if (ret != 0)
        fail_msg("re-applying the functions files failed:\n%s", out);
    assert_contains(out, "applied functions/audit.sql\n");
    free(out);
    assert_int_equal(count_function_records(db), (long)gw_schema_nfunctions);
    char *defs_after = function_defs(db);
    assert_strings_equal("the functions", defs_before, defs_after);
    free(defs_before);
    free(defs_after);
}

/* gw_migrate_check passes only when every migration is applied and every functions file is recorded with the
 * checksum of the embedded one. */
static void test_check(void **state)
{
    testdb_t *db = *state;
    char err[512], *out;
    assert_int_equal(check(db, err, sizeof(err)), -1);
    assert_contains(err, "run `settled migrate`");

    /* the tables, not the functions files */
    assert_int_equal(migrate_with(db, gw_schema_files, gw_schema_nfiles, NULL, 0, &out), 0);
    free(out);
    assert_int_equal(check(db, err, sizeof(err)), -1);
    assert_contains(err, "SQL functions");
    assert_contains(err, "run `settled migrate`");

    assert_int_equal(migrate(db, gw_schema_files, gw_schema_nfiles, &out), 0);
    free(out);
    if (check(db, err, sizeof(err)) != 0)
        fail_msg("check failed on a migrated database: %s", err);

    /* a stale checksum (the database has another text of audit.sql), then a missing record */
    char *checksum = function_checksum(db, "audit.sql");
    PQclear(PQexec(db->conn, "UPDATE schema_functions SET checksum = repeat('0', 64) WHERE name = 'audit.sql'"));
    assert_int_equal(check(db, err, sizeof(err)), -1);
    assert_contains(err, "SQL functions");
    assert_contains(err, "run `settled migrate`");
    assert_int_equal(migrate(db, gw_schema_files, gw_schema_nfiles, &out), 0);
    assert_contains(out, "applied functions/audit.sql\n");
    assert_null(strstr(out, "match.sql"));
    free(out);
    char *again = function_checksum(db, "audit.sql");
    assert_string_equal(checksum, again);
    free(checksum);
    free(again);
    if (check(db, err, sizeof(err)) != 0)
        fail_msg("check failed after migrate: %s", err);

    PQclear(PQexec(db->conn, "DELETE FROM schema_functions WHERE name = 'queue.sql'"));
    assert_int_equal(check(db, err, sizeof(err)), -1);
    assert_contains(err, "SQL functions");

    /* an edited real file was applied (by another binary): this one's text is not the database's */
    const gw_schema_file_t *queue = real_function_file("queue.sql");
    char *edited = malloc(queue->len + 32);
    memcpy(edited, queue->sql, queue->len);
    strcpy(edited + queue->len, "-- edited\n");
    gw_schema_file_t other[] = {{"queue.sql", edited, queue->len + strlen("-- edited\n")}};
    size_t n;
    gw_schema_file_t *functions = functions_with(other, 1, &n);
    assert_int_equal(migrate_with(db, gw_schema_files, gw_schema_nfiles, functions, n, &out), 0);
    free(out);
    free(functions);
    free(edited);
    assert_int_equal(check(db, err, sizeof(err)), -1);
    assert_contains(err, "SQL functions");

    /* a functions file this binary does not know (a newer one applied it) is not a reason to refuse */
    static const gw_schema_file_t newer[] = {
        FILE_OF("t_newer.sql", "CREATE OR REPLACE FUNCTION t_newer() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n")};
    functions = functions_with(newer, 1, &n);
    assert_int_equal(migrate_with(db, gw_schema_files, gw_schema_nfiles, functions, n, &out), 0);
    assert_contains(out, "applied functions/queue.sql\n");
    free(out);
    free(functions);
    if (check(db, err, sizeof(err)) != 0)
        fail_msg("check failed with an extra functions file: %s", err);

    /* and a missing numbered migration still fails it */
    PQclear(PQexec(db->conn, "DELETE FROM schema_migrations WHERE name = '0002_pipeline.sql'"));
    assert_int_equal(check(db, err, sizeof(err)), -1);
    assert_contains(err, "not migrated to this version");
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

    static const gw_schema_file_t fn_unordered[] = {FILE_OF("b.sql", "SELECT 1;"), FILE_OF("a.sql", "SELECT 1;")};
    assert_int_equal(migrate_with(db, gw_schema_files, gw_schema_nfiles, fn_unordered, 2, &out), -1);
    assert_contains(out, "functions/b.sql and functions/a.sql are not in name order");
    free(out);
    static const char *const bad_names[] = {"Audit.sql", "audit.SQL", ".sql", "0001_x.sql.bak", "sub/x.sql"};
    for (size_t i = 0; i != sizeof(bad_names) / sizeof(bad_names[0]); ++i) {
        const gw_schema_file_t bad[] = {{bad_names[i], "SELECT 1;", 9}};
        assert_int_equal(migrate_with(db, gw_schema_files, gw_schema_nfiles, bad, 1, &out), -1);
        assert_contains(out, "a functions file is named what.sql");
        free(out);
    }
    /* nothing ran: the order and name checks come before connecting */
    assert_false(table_exists(db, "schema_functions"));
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

    static const gw_schema_file_t fn_nul[] = {
        FILE_OF("a.sql", "CREATE OR REPLACE FUNCTION t_a() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;"),
        FILE_OF("b_nul.sql", "SELECT 1;\0DROP TABLE x;")};
    assert_int_equal(migrate_with(db, NULL, 0, fn_nul, 2, &out), -1);
    assert_contains(out, "functions/b_nul.sql: contains a NUL byte, none of the functions files was applied");
    free(out);
    assert_int_equal(count_function_records(db), 0);
    char *v = proc_xmin(db, "t_a");
    assert_string_equal(v, "");
    free(v);

    size_t len = 0;
    FILE *fp = open_memstream(&out, &len);
    assert_int_equal(
        gw_migrate_run("", gw_schema_files, gw_schema_nfiles, gw_schema_functions, gw_schema_nfunctions, fp), -1);
    assert_int_equal(gw_migrate_run("host=127.0.0.1 port=1 connect_timeout=2", gw_schema_files, gw_schema_nfiles,
                                    gw_schema_functions, gw_schema_nfunctions, fp),
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
    r->ret = gw_migrate_run(r->db->conninfo, gw_schema_files, gw_schema_nfiles, gw_schema_functions,
                            gw_schema_nfunctions, out);
    fclose(out);
    return NULL;
}

/* Concurrent migrators serialise on the advisory lock: all succeed and each file, functions files included, is
 * applied once. */
static void test_concurrent_runs(void **state)
{
    testdb_t *db = *state;
    struct race races[4];
    pthread_t threads[4];
    for (int i = 0; i != 4; ++i) {
        races[i] = (struct race){.db = db};
        assert_int_equal(pthread_create(&threads[i], NULL, on_race, &races[i]), 0);
    }
    int applied = 0, applied_functions = 0;
    for (int i = 0; i != 4; ++i) {
        pthread_join(threads[i], NULL);
        if (races[i].ret != 0)
            fail_msg("migrator %d failed:\n%s", i, races[i].out);
        applied += strstr(races[i].out, "applied 0001_organisations_and_inbox.sql") != NULL;
        applied_functions += strstr(races[i].out, "applied functions/xero_mirror.sql") != NULL;
        free(races[i].out);
    }
    assert_int_equal(applied, 1);
    assert_int_equal(applied_functions, 1);
    assert_int_equal(count_records(db), (long)gw_schema_nfiles);
    assert_int_equal(count_function_records(db), (long)gw_schema_nfunctions);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_files),
        cmocka_unit_test_setup_teardown(test_fresh_then_noop, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_new_file_applied_later, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_edited_file_refused, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_edited_functions_file_reapplied, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_bad_functions_file_rolls_back_all, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_functions_have_a_home, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_check, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_bad_sql_rolled_back, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_refuses_bad_input, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_concurrent_runs, setup_db, teardown_db),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
