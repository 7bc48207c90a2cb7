/* SPDX-License-Identifier: MIT */
/*
 * sync.h: drift repair. Pages through every contact, invoice and credit note of a Xero tenant that changed
 * since the last sweep (If-Modified-Since) and applies them like webhook-driven fetches, so anything a missed
 * or disabled webhook lost is caught. `settled sync xero` runs it by hand with a progress bar; the worker pool's
 * periodic thread (never a queue worker) runs it quietly every SETTLED_XERO_SYNC_INTERVAL seconds and reports what
 * it found changed as drift.
 *
 * Blocking: worker threads and the command line only.
 */
#ifndef GW_SYNC_H
#define GW_SYNC_H

#include <stdatomic.h>
#include <stdbool.h>
#include "fetch.h"

typedef struct st_gw_sync_counts_t {
    long pages, fetched, changed, unchanged;
    bool initial; /* no earlier sync of this kind: a backfill, so nothing it finds is drift */
} gw_sync_counts_t;

/* The record kinds a sync walks, in order (contacts first, so invoices find their contacts). */
#define GW_SYNC_NKINDS 3
extern const char *const gw_sync_kinds[GW_SYNC_NKINDS];

/* Syncs one tenant: every kind, from since (ISO 8601; NULL: from each kind's high-water mark, or everything).
 * progress draws a progress line on stderr. counts[k] receives the figures of gw_sync_kinds[k]. Returns 0, or -1
 * with err (kinds finished before the failure keep their new high-water mark). */
int gw_sync_tenant(gw_fetch_ctx_t *ctx, int64_t organisation_id, const char *tenant, int64_t token_id,
                   const char *since, bool progress, gw_sync_counts_t counts[GW_SYNC_NKINDS], char *err, size_t errlen);

/* Sweeps, quietly, every connected tenant whose last sweep is older than SETTLED_XERO_SYNC_INTERVAL; one
 * instance at a time per tenant (a session advisory lock), and a tenant is swept only if it is still due once the
 * lock is held (so one that another instance swept while this one listed is not swept twice). Drift goes to the
 * metrics and the log. Returns soon after *stop (may be NULL) becomes true: it is looked at before every call to
 * Xero and while sleeping for a quota, so at most the call in flight (SETTLED_HTTP_TIMEOUT_MS) is waited for; a
 * kind cut short keeps its old high-water mark. */
void gw_sync_sweep_due(gw_fetch_ctx_t *ctx, const atomic_bool *stop);

#endif
