/* SPDX-License-Identifier: MIT */
/*
 * mirror.h: brings Xero records into the mirror tables. One fetch is one planned API call made with the
 * tenant's access token, under the shared quota, with Xero's 401/429 rules; one apply hands the raw
 * response to the SQL upsert functions, which parse every amount exactly (jsonb numerics) and keep the
 * newer of two versions by UpdatedDateUTC. Used by the queue workers and by `settled sync`.
 *
 * Blocking: worker threads and the command line only.
 */
#ifndef GW_MIRROR_H
#define GW_MIRROR_H

#include <stdbool.h>
#include <stdint.h>
#include "config.h"
#include "connector.h"
#include "db.h"
#include "http_client.h"
#include "quota.h"

/* What a thread needs to fetch and apply. */
typedef struct st_gw_mirror_ctx_t {
    const gw_config_t *cfg;
    gw_dbs_t *db;
    gw_quota_t *quota;
} gw_mirror_ctx_t;

typedef enum {
    GW_FETCH_OK,         /* res holds the 200 response */
    GW_FETCH_RESCHEDULE, /* a quota or a 429 says wait wait_ms: not a failure of the events */
    GW_FETCH_FAILED,     /* a transient failure: retry with backoff (error says why) */
    GW_FETCH_REAUTH,     /* the tenant's connection needs re-authorisation by an admin */
} gw_fetch_status_t;

typedef struct st_gw_fetch_result_t {
    gw_fetch_status_t status;
    uint64_t wait_ms;
    char error[300];
    gw_http_response_t res;
} gw_fetch_result_t;

/* Makes the call f for tenant (a Xero tenantId) with the access token of token set token_id. if_modified_since
 * (may be NULL) is sent as the If-Modified-Since header. On GW_FETCH_OK the caller frees out->res with
 * gw_http_response_free; otherwise out->res is empty. */
gw_fetch_status_t gw_mirror_fetch(gw_mirror_ctx_t *ctx, const char *tenant, int64_t token_id, const cn_fetch_t *f,
                                  const char *if_modified_since, gw_fetch_result_t *out);

typedef struct st_gw_apply_counts_t {
    long inserted, updated, unchanged, stale;
} gw_apply_counts_t;

/* Applies a fetched body of record_kind for (organisation, tenant) in one transaction. For credit notes, the ids
 * of the invoices they are allocated to are appended to *refetch (a malloc'd array of malloc'd strings, *nrefetch
 * long) so the caller brings those invoices up to date too. Returns 0, or -1 with err (nothing applied). */
int gw_mirror_apply(gw_mirror_ctx_t *ctx, int64_t organisation_id, const char *tenant, const char *record_kind,
                    const char *body, const char *correlation, gw_apply_counts_t *counts, char ***refetch,
                    size_t *nrefetch, char *err, size_t errlen);

/* Looks up the token set serving tenant in organisation_id. Returns it, or 0 if the tenant is not connected. */
int64_t gw_mirror_token_of(gw_mirror_ctx_t *ctx, int64_t organisation_id, const char *tenant);

/* The API base in use: SETTLED_XERO_API_BASE or the real Xero host. */
const char *gw_mirror_api_base(const gw_config_t *cfg);

#endif
