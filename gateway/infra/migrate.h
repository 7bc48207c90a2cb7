/* SPDX-License-Identifier: MIT */
/* migrate.h: applies the numbered SQL files of schema/ (compiled into the binary) once each. */
#ifndef GW_MIGRATE_H
#define GW_MIGRATE_H

#include <stddef.h>
#include <stdio.h>
#include "db.h"

/* One embedded migration; the table is generated at build time by cmake/embed_schema.cmake. */
typedef struct st_gw_schema_file_t {
    const char *name; /* file name, e.g. "0001_organisations_and_inbox.sql" */
    const char *sql;  /* its whole text */
    size_t len;
} gw_schema_file_t;

extern const gw_schema_file_t gw_schema_files[];
extern const size_t gw_schema_nfiles;
/* The functions files of schema/functions/, sorted by name, named without the folder ("audit.sql"). */
extern const gw_schema_file_t gw_schema_functions[];
extern const size_t gw_schema_nfunctions;

/*
 * Connects to conninfo (blocking: never call from an event loop), then applies, in name order, every
 * file of files[0..nfiles) not yet recorded in schema_migrations, each in its own transaction together
 * with its record (name, sha256 checksum, applied_at). Refuses (returns -1, applies nothing further)
 * when an applied file's checksum differs from the recorded one. Progress and errors go to out.
 * Takes a session advisory lock so concurrent migrators serialise. Returns 0 on success.
 */
__attribute__((warn_unused_result)) int gw_migrate_run(const char *conninfo, const gw_schema_file_t *files,
                                                       size_t nfiles, FILE *out);

/* Checks, over session s, that every migration compiled into this binary has been applied. Returns 0, or -1
 * with a message in err that tells the operator to run `settled migrate`. */
__attribute__((warn_unused_result)) int gw_migrate_check(gw_dbs_t *s, char *err, size_t errlen);

#endif
