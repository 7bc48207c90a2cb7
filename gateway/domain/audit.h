/* SPDX-License-Identifier: MIT */
/*
 * audit.h: the one C room of the audit log. Every state change leaves an append-only, hash-chained row per
 * organisation (DESIGN.md promise 7); the chain is kept by the SQL functions audit_write and audit_verify
 * (schema/0002_pipeline.sql, docs/data-model.md), and C code reaches them only through this module.
 *
 * Blocking (a database session): worker threads, the command line and offloaded tasks, never an event loop.
 */
#ifndef GW_AUDIT_H
#define GW_AUDIT_H

#include <stdint.h>
#include "db.h"
#include "err.h"

/*
 * Appends one row to the audit chain of organisation_id: who (actor, e.g. "system:xero" or "user:42") did what
 * (action, e.g. "xero.connect") to which entity (entity_type and entity_id), its state before and after as JSON
 * text (either may be NULL: nothing before a creation, nothing after a deletion), and the correlation id of the
 * request or event that caused it (may be NULL). Runs in s's current transaction, if any, so the row commits or
 * rolls back with the change it records. Returns 0; or -1 with err set (gw_err_store_unavailable, 503, when the
 * database cannot be reached; gw_err_conflict, 409, on a serialization failure or deadlock: retry the
 * transaction; gw_err_internal, 500, otherwise, e.g. malformed JSON). The detail names the SQLSTATE, never a
 * value; gw_dbs_error(s) says more, for the log.
 */
GW_MUSTCHECK int gw_audit_write(gw_dbs_t *s, int64_t organisation_id, const char *actor, const char *action,
                                const char *entity_type, const char *entity_id, const char *before_json,
                                const char *after_json, const char *correlation_id, gw_err_t *err);

/*
 * Checks the audit chain of organisation_id. Returns 0 with *first_broken set to 0 when every row verifies, or to
 * the id of the first row that does not (its hash does not cover its fields, or its link to the row before is
 * broken: something was altered or deleted); or -1 with err set as gw_audit_write sets it.
 */
GW_MUSTCHECK int gw_audit_verify(gw_dbs_t *s, int64_t organisation_id, int64_t *first_broken, gw_err_t *err);

#endif
