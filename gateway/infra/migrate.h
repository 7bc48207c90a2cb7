/* SPDX-License-Identifier: MIT */
/* migrate.h: applies the SQL of schema/ (compiled into the binary): the numbered migrations once each, then the
 * functions files of schema/functions/ whenever their text changes. */
#ifndef GW_MIGRATE_H
#define GW_MIGRATE_H

#include <stddef.h>
#include <stdio.h>
#include "db.h"
#include "err.h"

/* One embedded SQL file; the tables are generated at build time by cmake/embed_schema.cmake. */
typedef struct st_gw_schema_file_t {
    const char *name; /* file name, e.g. "0001_organisations_and_inbox.sql", or "audit.sql" for a functions file */
    const char *sql;  /* its whole text */
    size_t len;
} gw_schema_file_t;

/* The numbered migrations of schema/, sorted by name. */
extern const gw_schema_file_t gw_schema_files[];
extern const size_t gw_schema_nfiles;
/* The functions files of schema/functions/, sorted by name, named without the folder ("audit.sql"). */
extern const gw_schema_file_t gw_schema_functions[];
extern const size_t gw_schema_nfunctions;

/*
 * Connects to conninfo (blocking: never call from an event loop) and takes a session advisory lock, so that
 * concurrent migrators serialise. Then:
 *
 * 1. applies, in name order, every numbered file of files[0..nfiles) not yet recorded in schema_migrations, each
 *    in its own transaction together with its record (name, sha256 checksum, applied_at). Refuses (returns -1,
 *    applies nothing further, functions files included) when an applied file's checksum differs from the
 *    recorded one: numbered files are forward-only.
 * 2. applies every functions file of functions[0..nfunctions) whose checksum differs from the one recorded in
 *    schema_functions, or that has no record, all in ONE transaction together with their records. If one fails,
 *    none of them is applied and no record changes (the numbered files of step 1 stay applied). Unchanged files
 *    are not run. The files are run in name order with check_function_bodies on, so a SQL-language function can
 *    only call functions that exist already or come earlier in that order.
 *
 * Both arrays must be in strictly increasing name order; functions file names are [a-z0-9_]+.sql (functions may
 * be NULL when nfunctions is 0). Progress ("applied 0002_pipeline.sql", "applied functions/audit.sql", "up to
 * date (...)") and errors, which name the file, go to out. Returns 0 on success, -1 on any failure.
 */
GW_MUSTCHECK int gw_migrate_run(const char *conninfo, const gw_schema_file_t *files, size_t nfiles,
                                const gw_schema_file_t *functions, size_t nfunctions, FILE *out);

/* Checks, over session s, that every migration compiled into this binary has been applied and that every
 * functions file compiled into it is recorded with this binary's checksum, so that a new binary never runs
 * against old function text. Returns 0, or -1 with a message in err that tells the operator to run
 * `settled migrate`. */
GW_MUSTCHECK int gw_migrate_check(gw_dbs_t *s, char *err, size_t errlen);

#endif
