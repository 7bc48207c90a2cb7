/* SPDX-License-Identifier: MIT */
/*
 * migrate.c: applies the numbered, forward-only SQL files of schema/ (embedded in the binary) exactly once
 * each, recording a checksum so that a file edited after it was applied is refused instead of silently
 * diverging. Blocking libpq: only `settled migrate` and tests call it, never an event loop.
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
static const char sql_create[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                 "name text PRIMARY KEY, "
                                 "checksum text NOT NULL, "
                                 "applied_at timestamptz NOT NULL DEFAULT now())";
static const char sql_lock[] = GW_MIGRATE_LOCK_SQL;
static const char sql_select_checksum[] = "SELECT checksum FROM schema_migrations WHERE name = $1";
static const char sql_insert[] = "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)";
static const char sql_select_names[] = "SELECT name FROM schema_migrations ORDER BY name";

/* Passes the server's warnings (client_min_messages = warning hides NOTICEs) to the progress output. */
static void on_notice(void *arg, const char *message)
{
    fprintf(arg, "migrate: %s", message);
}

/* Runs a statement without parameters; on failure prints what failed and returns -1. */
static int exec_simple(PGconn *conn, const char *sql, ExecStatusType expect, const char *what, FILE *out)
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

/* Looks name up in schema_migrations: returns 1 and copies its checksum, 0 if absent, -1 on error. */
static int recorded_checksum(PGconn *conn, const char *name, char checksum[65], FILE *out)
{
    const char *params[] = {name};
    PGresult *res = PQexecParams(conn, sql_select_checksum, 1, NULL, params, NULL, NULL, 0);
    int ret = -1;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(out, "migrate: %s: reading schema_migrations failed: %s", name, PQerrorMessage(conn));
    } else if (PQntuples(res) == 0) {
        ret = 0;
    } else {
        snprintf(checksum, 65, "%s", PQgetvalue(res, 0, 0));
        ret = 1;
    }
    PQclear(res);
    return ret;
}

/* Applies one file and its record in one transaction; on failure rolls back and returns -1. */
static int apply(PGconn *conn, const gw_schema_file_t *file, const char *checksum, FILE *out)
{
    /* PQexec needs a NUL-terminated text; the embedded files have one, a caller's array may not */
    char *sql = malloc(file->len + 1);
    if (sql == NULL) {
        fputs("settled: fatal: out of memory\n", stderr);
        abort();
    }
    memcpy(sql, file->sql, file->len);
    sql[file->len] = '\0';
    int ret = -1;
    if (memchr(sql, '\0', file->len) != NULL) {
        fprintf(out, "migrate: %s: contains a NUL byte\n", file->name);
        goto Exit;
    }
    if (exec_simple(conn, "BEGIN", PGRES_COMMAND_OK, "BEGIN", out) != 0)
        goto Exit;
    /* several statements in one PQexec run inside the transaction opened above */
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        fprintf(out, "migrate: %s failed, nothing of it was applied: %s", file->name, PQerrorMessage(conn));
        goto Rollback;
    }
    if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
        /* a COMMIT or ROLLBACK in the file ended the transaction: what came after it is not atomic any more */
        fprintf(out,
                "migrate: %s ends the transaction it runs in (COMMIT, ROLLBACK or END in the file), so it was not "
                "recorded and part of it may be applied: remove the transaction control from the file\n",
                file->name);
        goto Rollback;
    }
    const char *params[] = {file->name, checksum};
    res = PQexecParams(conn, sql_insert, 2, NULL, params, NULL, NULL, 0);
    st = PQresultStatus(res);
    PQclear(res);
    if (st != PGRES_COMMAND_OK) {
        fprintf(out, "migrate: %s: recording it failed, nothing of it was applied: %s", file->name,
                PQerrorMessage(conn));
        goto Rollback;
    }
    res = PQexec(conn, "COMMIT");
    st = PQresultStatus(res);
    /* COMMIT of an aborted transaction reports success as "ROLLBACK" */
    bool committed = st == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0;
    PQclear(res);
    if (!committed) {
        fprintf(out, "migrate: %s: COMMIT failed, nothing of it was applied: %s", file->name, PQerrorMessage(conn));
        goto Exit;
    }
    fprintf(out, "applied %s\n", file->name);
    ret = 0;
    goto Exit;
Rollback:
    if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
        res = PQexec(conn, "ROLLBACK");
        PQclear(res);
    }
Exit:
    free(sql);
    return ret;
}

/* Notes migrations that the database has but files lacks (a newer binary applied them). */
static int note_unknown(PGconn *conn, const gw_schema_file_t *files, size_t nfiles, FILE *out)
{
    PGresult *res = PQexecParams(conn, sql_select_names, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(out, "migrate: reading schema_migrations failed: %s", PQerrorMessage(conn));
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
                    "note: the database also has %s, which this binary does not know (a newer version applied it)\n",
                    name);
    }
    PQclear(res);
    return 0;
}

int gw_migrate_run(const char *conninfo, const gw_schema_file_t *files, size_t nfiles, FILE *out)
{
    if (conninfo == NULL || conninfo[0] == '\0') {
        fputs("migrate: no database to migrate: set SETTLED_DATABASE_URL\n", out);
        return -1;
    }
    for (size_t i = 1; i < nfiles; ++i) {
        if (strcmp(files[i - 1].name, files[i].name) >= 0) {
            fprintf(out, "migrate: %s and %s are not in name order\n", files[i - 1].name, files[i].name);
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
        exec_simple(conn, sql_create, PGRES_COMMAND_OK, "creating schema_migrations", out) != 0)
        goto Exit;

    for (size_t i = 0; i != nfiles; ++i) {
        const gw_schema_file_t *file = &files[i];
        char checksum[65], recorded[65];
        gw_crypto_sha256_hex(file->sql, file->len, checksum);
        int found = recorded_checksum(conn, file->name, recorded, out);
        if (found < 0)
            goto Exit;
        if (found) {
            if (strcmp(recorded, checksum) != 0) {
                fprintf(out,
                        "migrate: %s was changed after it was applied (recorded sha256 %s, now %s): refusing to go on. "
                        "Restore the file as it was and put the change into a new migration.\n",
                        file->name, recorded, checksum);
                goto Exit;
            }
            continue;
        }
        if (apply(conn, file, checksum, out) != 0)
            goto Exit;
    }
    if (note_unknown(conn, files, nfiles, out) != 0)
        goto Exit;
    fprintf(out, "up to date (%zu migration%s)\n", nfiles, nfiles == 1 ? "" : "s");
    ret = 0;
Exit:
    /* closing the session releases the advisory lock */
    PQfinish(conn);
    return ret;
}

int gw_migrate_check(gw_dbs_t *s, char *err, size_t errlen)
{
    static const char sql_applied[] = "SELECT count(*) FROM schema_migrations WHERE name = ANY($1::text[])";
    /* the names of the embedded migrations, as a text[] literal (names are [0-9a-z_.] by construction) */
    size_t cap = 3;
    for (size_t i = 0; i != gw_schema_nfiles; ++i)
        cap += strlen(gw_schema_files[i].name) + 3;
    char *names = gw_xmalloc(cap), *p = names;
    *p++ = '{';
    for (size_t i = 0; i != gw_schema_nfiles; ++i)
        p += sprintf(p, "%s\"%s\"", i != 0 ? "," : "", gw_schema_files[i].name);
    *p++ = '}', *p = '\0';
    const char *params[] = {names};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_applied, 1, params);
    free(names);
    bool current = r != NULL && strtoull(gw_dbs_value(r, 0, 0), NULL, 10) == (unsigned long long)gw_schema_nfiles;
    gw_dbs_result_free(r);
    if (!current) {
        snprintf(err, errlen, "the database is not migrated to this version: run `settled migrate` first");
        return -1;
    }
    return 0;
}
