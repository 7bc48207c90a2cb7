/* SPDX-License-Identifier: MIT */
/*
 * xero_mirror.h: brings Xero records into the mirror tables, and is the queue's processor for Xero events. A
 * Xero webhook names only ids: the events one claim took are grouped by (organisation, tenant, record kind), the
 * connector plans list calls of up to 50 ids per group (events for the same object coalesce into one fetch), and
 * for every organisation connected to the tenant (one Xero app serves several) each call goes through fetch.c under
 * that organisation's token set and the tenant's quota, and the raw response goes to the SQL upsert functions of
 * schema/functions/xero_mirror.sql, which parse every amount exactly (jsonb numerics) and keep the newer of two
 * versions by UpdatedDateUTC. Rows of the same objects stored before the claim and still waiting are finished
 * with them: the fetched state covers them. Events of a tenant no organisation has connected are ignored. Also
 * used by `settled sync`.
 *
 * Blocking: worker threads and the command line only.
 */
#ifndef GW_XERO_MIRROR_H
#define GW_XERO_MIRROR_H

#include <stdbool.h>
#include <stdint.h>
#include "config.h"
#include "connector.h"
#include "fetch.h"
#include "processor.h"

/* The processor of Xero events (worker.c's table). */
extern const gw_processor_t gw_xero_processor;

/* Makes the planned call f for tenant (a Xero tenantId) with the access token of token set token_id, through
 * gw_fetch; if_modified_since (may be NULL) is sent as If-Modified-Since. A 200 without the list f->record_kind
 * names is a failure. On GW_FETCH_OK the caller frees out->res with gw_http_response_free. */
gw_fetch_status_t gw_xero_mirror_fetch(gw_fetch_ctx_t *ctx, const char *tenant, int64_t token_id, const cn_fetch_t *f,
                                       const char *if_modified_since, gw_fetch_result_t *out);

typedef struct st_gw_apply_counts_t {
    long inserted, updated, unchanged, stale;
} gw_apply_counts_t;

/* Applies a fetched body of record_kind for (organisation, tenant) in one transaction. For credit notes, the ids
 * of the invoices they are allocated to are appended to *refetch (a malloc'd array of malloc'd strings, *nrefetch
 * long) so the caller brings those invoices up to date too. Returns 0, or -1 with err (nothing applied). */
GW_MUSTCHECK int gw_xero_mirror_apply(gw_fetch_ctx_t *ctx, int64_t organisation_id, const char *tenant,
                                      const char *record_kind, const char *body, const char *correlation,
                                      gw_apply_counts_t *counts, char ***refetch, size_t *nrefetch, char *err,
                                      size_t errlen);

/* Fetches the invoices ids (Xero InvoiceIDs) from every Xero tenant connected to the organisation and applies
 * them (payments that wait for them are linked): for payments that name an invoice the mirror does not have yet.
 * Returns 0 (also when no tenant is connected), or -1 with err at the first call or apply that failed. */
GW_MUSTCHECK int gw_xero_mirror_fetch_invoices(gw_fetch_ctx_t *ctx, int64_t organisation_id, const char *const *ids,
                                               size_t n, const char *correlation, char *err, size_t errlen);

#endif
