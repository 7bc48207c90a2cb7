/* SPDX-License-Identifier: MIT */
/* audit.c: writing and verifying the hash-chained audit log through its SQL functions, from one place. */
#include "audit.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char sql_write[] = "SELECT audit_write($1::bigint, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8)";
static const char sql_verify[] = "SELECT audit_verify($1::bigint)";

/* Fills err after a failed statement of s: what failed, and a code that says whether to retry. The detail names
 * the SQLSTATE but not the database's message, whose DETAIL can quote the row (the JSON of before and after). */
static int db_err(gw_dbs_t *s, const char *what, gw_err_t *err)
{
    const char *state = gw_dbs_sqlstate(s);
    if (state[0] == '\0' || strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0)
        return gw_err_set(err, gw_err_store_unavailable, 503, "%s: the database is unavailable", what);
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return gw_err_set(err, gw_err_conflict, 409, "%s: a concurrent change got in the way; retry", what);
    return gw_err_set(err, gw_err_internal, 500, "%s: the database refused it (SQLSTATE %s)", what, state);
}

int gw_audit_write(gw_dbs_t *s, int64_t organisation_id, const char *actor, const char *action, const char *entity_type,
                   const char *entity_id, const char *before_json, const char *after_json, const char *correlation_id,
                   gw_err_t *err)
{
    char org[24];
    snprintf(org, sizeof(org), "%" PRId64, organisation_id);
    const char *p[] = {org, actor, action, entity_type, entity_id, before_json, after_json, correlation_id};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_write, 8, p);
    if (r == NULL)
        return db_err(s, "cannot write the audit log", err);
    gw_dbs_result_free(r);
    return 0;
}

int gw_audit_verify(gw_dbs_t *s, int64_t organisation_id, int64_t *first_broken, gw_err_t *err)
{
    char org[24];
    snprintf(org, sizeof(org), "%" PRId64, organisation_id);
    const char *p[] = {org};
    *first_broken = 0;
    gw_dbs_result_t *r = gw_dbs_query(s, sql_verify, 1, p);
    if (r == NULL)
        return db_err(s, "cannot verify the audit log", err);
    const char *id = gw_dbs_nrows(r) == 1 ? gw_dbs_value(r, 0, 0) : NULL;
    if (id != NULL)
        *first_broken = strtoll(id, NULL, 10);
    gw_dbs_result_free(r);
    return 0;
}
