/* SPDX-License-Identifier: MIT */
/*
 * migrate.c: applies the numbered, forward-only SQL files of schema/ (embedded in the binary) exactly once
 * each, recording a checksum so that a file edited after it was applied is refused instead of silently
 * diverging; then re-applies the functions files of schema/functions/ (CREATE OR REPLACE FUNCTION ...)
 * whenever their checksum changes, all of them in one transaction, so that the current text of a function is in
 * one readable file. Blocking libpq: only `settled migrate` and tests call it, never an event loop.
 */
#include "migrate.h"
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "mem.h"

/* The session advisory lock that serialises concurrent migrators: an arbitrary key that never changes. */
#define GW_MIGRATE_LOCK_SQL "SELECT pg_advisory_lock(8386112629140447090)"

static const char sql_quiet[] = "SET client_min_messages = warning";
static const char sql_lock[] = GW_MIGRATE_LOCK_SQL;
static const char sql_create[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                 "name text PRIMARY KEY, "
                                 "checksum text NOT NULL, "
                                 "applied_at timestamptz NOT NULL DEFAULT now())";
static const char sql_select_checksum[] = "SELECT checksum FROM schema_migrations WHERE name = $1";
static const char sql_insert[] = "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)";
static const char sql_select_names[] = "SELECT name FROM schema_migrations ORDER BY name";
/* The functions files: one row per file, its checksum and applied_at replaced whenever it is re-applied. */
static const char sql_create_functions[] = "CREATE TABLE IF NOT EXISTS schema_functions ("
                                           "name text PRIMARY KEY, "
                                           "checksum text NOT NULL, "
                                           "applied_at timestamptz NOT NULL DEFAULT now())";
static const char sql_select_function_checksum[] = "SELECT checksum FROM schema_functions WHERE name = $1";
static const char sql_upsert_function[] = "INSERT INTO schema_functions (name, checksum) VALUES ($1, $2) "
                                          "ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, "
                                          "applied_at = now()";
static const char sql_select_function_names[] = "SELECT name FROM schema_functions ORDER BY name";

/* Passes the server's warnings (client_min_messages = warning hides NOTICEs) to the progress output. */
static void on_notice(void *arg, const char *message)
{
    fprintf(arg, "migrate: %s", message);
}

/* Runs a statement without parameters; on failure prints what failed and returns -1. */
GW_MUSTCHECK static int exec_simple(PGconn *conn, const char *sql, ExecStatusType expect, const char *what, FILE *out)
{
    PGresult *res = PQexec(conn, sql);
    int ret = 0;
    if (PQresultStatus(res) != expect) {
        fprintf(out, "migrate: %s failed: %s", what, PQerrorMessage(conn));
        ret = -1;
    }
    PQclear(res);
    return ret;
}

/* Runs a statement with text parameters that returns no rows; on failure prints label and what failed. */
GW_MUSTCHECK static int exec_params(PGconn *conn, const char *sql, int nparams, const char *const *params,
                                    const char *label, const char *what, FILE *out)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    int ret = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(out, "migrate: %s: %s failed: %s", label, what, PQerrorMessage(conn));
        ret = -1;
    }
    PQclear(res);
    return ret;
}

/* Commits the open transaction. Returns true if it committed (COMMIT of an aborted transaction reports success as
 * "ROLLBACK"). */
static bool commit(PGconn *conn)
{
    PGresult *res = PQexec(conn, "COMMIT");
    bool committed = PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0;
    PQclear(res);
    return committed;
}

/* Rolls back the open transaction, if there is one. */
static void rollback(PGconn *conn)
{
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "ROLLBACK"));
}

/* Looks name up with select (one of the sql_select_*checksum statements): returns 1 and copies its checksum, 0 if
 * absent, -1 on error. */
GW_MUSTCHECK static int recorded_checksum(PGconn *conn, const char *select, const char *label, const char *name,
                                          char checksum[65], FILE *out)
{
    const char *params[] = {name};
    PGresult *res = PQexecParams(conn, select, 1, NULL, params, NULL, NULL, 0);
    int ret = -1;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(out, "migrate: %s: reading its record failed: %s", label, PQerrorMessage(conn));
    } else if (PQntuples(res) == 0) {
        ret = 0;
    } else {
        snprintf(checksum, 65, "%s", PQgetvalue(res, 0, 0));
        ret = 1;
    }
    PQclear(res);
    return ret;
}

/*
 * Runs the whole text of file inside the transaction that the caller opened. label names the file in messages
 * ("0002_pipeline.sql", "functions/audit.sql"), lost says what a failure leaves undone, and partial what may be
 * applied when the file itself ends the transaction. Returns 0, or -1 with a message (the caller rolls back).
 */
GW_MUSTCHECK static int run_file(PGconn *conn, const gw_schema_file_t *file, const char *label, const char *lost,
                                 const char *partial, FILE *out)
{
    int ret = -1;
    /* PQexec needs a NUL-terminated text; the embedded files have one, a caller's array may not */
    char *sql = gw_xstrndup(file->sql, file->len);
    if (memchr(file->sql, '\0', file->len) != NULL) {
        fprintf(out, "migrate: %s: contains a NUL byte, %s\n", label, lost);
        goto Exit;
    }
    /* several statements in one PQexec run inside the transaction the caller opened */
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        fprintf(out, "migrate: %s failed, %s: %s", label, lost, PQerrorMessage(conn));
        goto Exit;
    }
    if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
        /* a COMMIT or ROLLBACK in the file ended the transaction: what came after it is not atomic any more */
        fprintf(out,
                "migrate: %s ends the transaction it runs in (COMMIT, ROLLBACK or END in the file), so it was not "
                "recorded and %s may be applied: remove the transaction control from the file\n",
                label, partial);
        goto Exit;
    }
    ret = 0;
Exit:
    free(sql);
    return ret;
}

/* Applies one numbered file and its record in one transaction; on failure rolls back and returns -1. */
GW_MUSTCHECK static int apply(PGconn *conn, const gw_schema_file_t *file, const char *checksum, FILE *out)
{
    static const char lost[] = "nothing of it was applied";
    const char *params[] = {file->name, checksum};
    int ret = -1;
    if (exec_simple(conn, "BEGIN", PGRES_COMMAND_OK, "BEGIN", out) != 0 ||
        run_file(conn, file, file->name, lost, "part of it", out) != 0 ||
        exec_params(conn, sql_insert, 2, params, file->name, "recording it", out) != 0)
        goto Exit;
    if (!commit(conn)) {
        fprintf(out, "migrate: %s: COMMIT failed, %s: %s", file->name, lost, PQerrorMessage(conn));
        goto Exit;
    }
    fprintf(out, "applied %s\n", file->name);
    ret = 0;
Exit:
    /* ends a failed transaction; after a commit there is none */
    rollback(conn);
    return ret;
}

/*
 * Applies, in one transaction, every functions file whose checksum differs from its record in schema_functions (or
 * that has none) together with its new record. If any fails, rolls all back and returns -1; the progress lines are
 * printed only once the transaction committed.
 */
GW_MUSTCHECK static int apply_functions(PGconn *conn, const gw_schema_file_t *files, size_t nfiles, FILE *out)
{
    static const char lost[] = "none of the functions files was applied";
    bool *changed = gw_xcalloc(nfiles != 0 ? nfiles : 1, sizeof(*changed));
    size_t nchanged = 0;
    int ret = -1;
    if (exec_simple(conn, "BEGIN", PGRES_COMMAND_OK, "BEGIN", out) != 0)
        goto Exit;
    for (size_t i = 0; i != nfiles; ++i) {
        const gw_schema_file_t *file = &files[i];
        char label[256], checksum[65], recorded[65];
        snprintf(label, sizeof(label), "functions/%s", file->name);
        gw_crypto_sha256_hex(file->sql, file->len, checksum);
        int found = recorded_checksum(conn, sql_select_function_checksum, label, file->name, recorded, out);
        if (found < 0)
            goto Exit;
        if (found && strcmp(recorded, checksum) == 0)
            continue;
        const char *params[] = {file->name, checksum};
        if (run_file(conn, file, label, lost, "part of it and the functions files before it (with their records)",
                     out) != 0 ||
            exec_params(conn, sql_upsert_function, 2, params, label, "recording it", out) != 0)
            goto Exit;
        changed[i] = true;
        ++nchanged;
    }
    if (nchanged == 0) {
        ret = 0; /* nothing was written: the rollback below ends the read-only transaction */
        goto Exit;
    }
    if (!commit(conn)) {
        fprintf(out, "migrate: functions: COMMIT failed, %s: %s", lost, PQerrorMessage(conn));
        goto Exit;
    }
    for (size_t i = 0; i != nfiles; ++i)
        if (changed[i])
            fprintf(out, "applied functions/%s\n", files[i].name);
    ret = 0;
Exit:
    /* ends a failed or read-only transaction; after a commit there is none */
    rollback(conn);
    free(changed);
    return ret;
}

/* Notes the records of select (names in one of the record tables) that files lacks: a newer binary applied them.
 * prefix is prepended to the names in the note ("" or "functions/"). */
GW_MUSTCHECK static int note_unknown(PGconn *conn, const char *select, const char *prefix,
                                     const gw_schema_file_t *files, size_t nfiles, FILE *out)
{
    PGresult *res = PQexecParams(conn, select, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(out, "migrate: reading the %srecords failed: %s", prefix, PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    for (int i = 0; i != PQntuples(res); ++i) {
        const char *name = PQgetvalue(res, i, 0);
        bool known = false;
        for (size_t j = 0; j != nfiles && !known; ++j)
            known = strcmp(files[j].name, name) == 0;
        if (!known)
            fprintf(out,
                    "note: the database also has %s%s, which this binary does not know (a newer version applied it)\n",
                    prefix, name);
    }
    PQclear(res);
    return 0;
}

/* True if name is a functions file name: [a-z0-9_]+\.sql (the embed step enforces the same). */
static bool is_functions_name(const char *name)
{
    size_t n = strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_");
    return n != 0 && strcmp(name + n, ".sql") == 0;
}

/* Checks that files[0..nfiles) is in strictly increasing name order; prints the first pair that is not. */
static bool in_name_order(const gw_schema_file_t *files, size_t nfiles, const char *prefix, FILE *out)
{
    for (size_t i = 1; i < nfiles; ++i) {
        if (strcmp(files[i - 1].name, files[i].name) >= 0) {
            fprintf(out, "migrate: %s%s and %s%s are not in name order\n", prefix, files[i - 1].name, prefix,
                    files[i].name);
            return false;
        }
    }
    return true;
}

int gw_migrate_run(const char *conninfo, const gw_schema_file_t *files, size_t nfiles,
                   const gw_schema_file_t *functions, size_t nfunctions, FILE *out)
{
    if (conninfo == NULL || conninfo[0] == '\0') {
        fputs("migrate: no database to migrate: set SETTLED_DATABASE_URL\n", out);
        return -1;
    }
    if (!in_name_order(files, nfiles, "", out) || !in_name_order(functions, nfunctions, "functions/", out))
        return -1;
    for (size_t i = 0; i != nfunctions; ++i) {
        if (!is_functions_name(functions[i].name)) {
            fprintf(out, "migrate: functions/%s: a functions file is named what.sql ([a-z0-9_]+.sql)\n",
                    functions[i].name);
            return -1;
        }
    }

    /* conninfo may be a URI or key=value string: pass it as an expandable dbname and add only a fallback name */
    const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *const values[] = {conninfo, "settled migrate", NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    int ret = -1;
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(out, "migrate: cannot connect to the database: %s", PQerrorMessage(conn));
        goto Exit;
    }
    PQsetNoticeProcessor(conn, on_notice, out);
    if (exec_simple(conn, sql_quiet, PGRES_COMMAND_OK, "setting client_min_messages", out) != 0 ||
        exec_simple(conn, sql_lock, PGRES_TUPLES_OK, "taking the migration lock", out) != 0 ||
        exec_simple(conn, sql_create, PGRES_COMMAND_OK, "creating schema_migrations", out) != 0 ||
        exec_simple(conn, sql_create_functions, PGRES_COMMAND_OK, "creating schema_functions", out) != 0)
        goto Exit;

    for (size_t i = 0; i != nfiles; ++i) {
        const gw_schema_file_t *file = &files[i];
        char checksum[65], recorded[65];
        gw_crypto_sha256_hex(file->sql, file->len, checksum);
        int found = recorded_checksum(conn, sql_select_checksum, file->name, file->name, recorded, out);
        if (found < 0)
            goto Exit;
        if (found) {
            if (strcmp(recorded, checksum) != 0) {
                fprintf(out,
                        "migrate: %s was changed after it was applied (recorded sha256 %s, now %s): refusing to go on. "
                        "Restore the file as it was and put the change into a new migration (or, for a function, "
                        "into its file in schema/functions/).\n",
                        file->name, recorded, checksum);
                goto Exit;
            }
            continue;
        }
        if (apply(conn, file, checksum, out) != 0)
            goto Exit;
    }
    if (apply_functions(conn, functions, nfunctions, out) != 0)
        goto Exit;
    if (note_unknown(conn, sql_select_names, "", files, nfiles, out) != 0 ||
        note_unknown(conn, sql_select_function_names, "functions/", functions, nfunctions, out) != 0)
        goto Exit;
    fprintf(out, "up to date (%zu migration%s, %zu functions file%s)\n", nfiles, nfiles == 1 ? "" : "s", nfunctions,
            nfunctions == 1 ? "" : "s");
    ret = 0;
Exit:
    /* closing the session releases the advisory lock */
    PQfinish(conn);
    return ret;
}

/* A text[] literal of the names of files[0..n), or of their sha256 checksums when checksums is true. Names are
 * [0-9a-z_.] by construction (the embed step checks them), checksums hex, so neither needs quoting beyond "". */
static char *array_literal(const gw_schema_file_t *files, size_t n, bool checksums)
{
    size_t cap = 3;
    for (size_t i = 0; i != n; ++i)
        cap += (checksums ? 64 : strlen(files[i].name)) + 3;
    char *lit = gw_xmalloc(cap), *p = lit;
    *p++ = '{';
    for (size_t i = 0; i != n; ++i) {
        char checksum[65];
        if (checksums)
            gw_crypto_sha256_hex(files[i].sql, files[i].len, checksum);
        p += sprintf(p, "%s\"%s\"", i != 0 ? "," : "", checksums ? checksum : files[i].name);
    }
    *p++ = '}', *p = '\0';
    return lit;
}

int gw_migrate_check(gw_dbs_t *s, char *err, size_t errlen)
{
    /* how many of the embedded migrations are applied, and how many embedded functions files are recorded with
     * exactly the embedded checksum */
    static const char sql_applied[] =
        "SELECT (SELECT count(*) FROM schema_migrations WHERE name = ANY($1::text[])), "
        "(SELECT count(*) FROM schema_functions f JOIN unnest($2::text[], $3::text[]) AS e (name, checksum) "
        "ON f.name = e.name AND f.checksum = e.checksum)";
    char *names = array_literal(gw_schema_files, gw_schema_nfiles, false);
    char *function_names = array_literal(gw_schema_functions, gw_schema_nfunctions, false);
    char *function_checksums = array_literal(gw_schema_functions, gw_schema_nfunctions, true);
    const char *params[] = {names, function_names, function_checksums};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_applied, 3, params);
    free(names);
    free(function_names);
    free(function_checksums);
    int ret = -1;
    if (r == NULL) {
        snprintf(err, errlen, "the database is not migrated to this version (%s): run `settled migrate` first",
                 gw_dbs_error(s));
    } else if (strtoull(gw_dbs_value(r, 0, 0), NULL, 10) != (unsigned long long)gw_schema_nfiles) {
        snprintf(err, errlen, "the database is not migrated to this version: run `settled migrate` first");
    } else if (strtoull(gw_dbs_value(r, 0, 1), NULL, 10) != (unsigned long long)gw_schema_nfunctions) {
        snprintf(err, errlen,
                 "the database's SQL functions are not this version's (a file of schema/functions/ is not applied "
                 "or was applied with another text): run `settled migrate` first");
    } else {
        ret = 0;
    }
    gw_dbs_result_free(r);
    return ret;
}
