/* SPDX-License-Identifier: MIT */
/*
 * xero_terms.h: the Xero organisation's default sales terms (GET /api.xro/2.0/Organisation, PaymentTerms.Sales
 * {Day, Type}) stored as the organisation's default payment terms while no admin has set them
 * (terms_apply_xero_default in schema/functions/terms.sql). Called by every `settled sync xero` and mirror sweep of
 * a tenant (sync.c). docs/collections.md "Xero's defaults".
 *
 * Blocking: the command line and the sweep's thread only.
 */
#ifndef GW_XERO_TERMS_H
#define GW_XERO_TERMS_H

#include <stddef.h>
#include <stdint.h>
#include "fetch.h"

/*
 * The outcome of one Organisation document (its body, len bytes) for organisation_id: "stored", "updated",
 * "unchanged", "admin_set" (terms_apply_xero_default's), "none" (no PaymentTerms.Sales, or not Xero's shape) or
 * NULL when the database call failed (err says why).
 */
const char *gw_xero_terms_apply(gw_dbs_t *db, int64_t organisation_id, const char *body, size_t len,
                                const char *correlation, char *err, size_t errlen);

/*
 * Reads tenant's Organisation and applies its sales terms (gw_xero_terms_apply), when SETTLED_XERO_SCOPES names
 * accounting.settings or accounting.settings.read (else "no_scope", no call: Xero would refuse it). Never fails a
 * sync: a refusal (a connection made before the scope was added), a failed call or a database error is logged and
 * the outcome is "skipped". Returns the outcome.
 */
const char *gw_xero_terms_read(gw_fetch_ctx_t *ctx, int64_t organisation_id, const char *tenant, int64_t token_id);

#endif
