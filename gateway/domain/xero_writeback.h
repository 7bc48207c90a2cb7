/* SPDX-License-Identifier: MIT */
/*
 * xero_writeback.h: the sender of the payment write-back to Xero. The payment processors plan, in the transaction
 * of their ledger facts, how much Xero should hold for each provider payment applied to a Xero invoice
 * (xero_writeback_plan, schema/functions/xero_writeback.sql: one outbox row per payment). The sender claims due
 * rows with a lease (FOR UPDATE SKIP LOCKED, fenced by the lease owner and the row's generation) and makes one
 * Xero call per claim through gw_fetch, until Xero holds the target: it deletes our Xero payment when it no longer
 * matches (POST /Payments/{PaymentID} {"Status":"DELETED"}) and creates one when none exists (PUT /Payments with
 * the Reference settled:{provider}:{object id}:g{generation}), each under an Idempotency-Key derived from the row.
 * After a call whose answer was lost (a crash, no answer), the next attempt looks for our payment by its Reference
 * before creating one, so a payment is never made twice. Refusals retrying cannot fix go to 'refused' (the admins'
 * queue); transient failures are retried on SETTLED_RETRY_SCHEDULE and go 'dead' after the last. The rules are in
 * docs/reconciliation.md, "Write-back".
 *
 * Blocking: its own thread of the worker pool (gw_writeback_start), or a caller that may block.
 */
#ifndef GW_XERO_WRITEBACK_H
#define GW_XERO_WRITEBACK_H

#include <stdatomic.h>
#include <stddef.h>
#include "config.h"
#include "fetch.h"

/* The LISTEN channel xero_writeback_plan notifies. */
#define GW_WRITEBACK_CHANNEL "settled_writebacks"
/* Rows claimed at once. */
#define GW_WRITEBACK_BATCH 10

/* How long a claim's lease lasts (ms): SETTLED_WORKER_LEASE_MS, but at least long enough for the longest gw_fetch
 * (a token refresh, quota waits and a call, each retried once on a 401), so that a lease never expires under a
 * call still in flight. It is renewed before each call. */
int gw_writeback_lease_ms(const gw_config_t *cfg);

/* One round of a sender named owner (unique among every sender sharing the database) on ctx (its session, the
 * shared quotas): marks rows that have no account 'unconfigured' (and those that now have one due again), parks
 * rows whose senders kept dying, claims up to limit due rows and brings each one step closer to its target.
 * Returns how many rows were claimed, or -1 when the database failed. A read-only ctx (a replay's dry run) sends
 * nothing: 0 at once. */
int gw_writeback_round(gw_fetch_ctx_t *ctx, const char *owner, int limit);

typedef struct st_gw_writeback_t gw_writeback_t;

/* Starts the sender thread with a session of its own and the quotas of shared (which must outlive it); it stops
 * once *stop is true (within about 250 ms when idle; after the call in hand otherwise). host names it in the
 * lease owner. Returns NULL with err when the database cannot be reached. */
gw_writeback_t *gw_writeback_start(const gw_config_t *cfg, const gw_fetch_ctx_t *shared, const atomic_bool *stop,
                                   const char *host, char *err, size_t errlen);
/* Waits for the thread (*stop must be true already) and frees it; NULL is allowed. */
void gw_writeback_stop(gw_writeback_t *wb);

#endif
