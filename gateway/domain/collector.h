/* SPDX-License-Identifier: MIT */
/*
 * collector.h: automatic collection on the due date (docs/collections.md, "Automatic collection"). A planning round
 * (collect_plan in schema/functions/collections.sql, at an instant: now, or `settled collect --at`) inserts one
 * outbox row per invoice and attempt number in the transaction that checked the invoice's rules and its ledger
 * (nothing pending or received, not paused, voided or disputed, a usable default method of the preferred kind, the
 * due date in the organisation's time zone). The sender claims attempts with a lease (FOR UPDATE SKIP LOCKED,
 * fenced by the lease owner) and makes one provider call per claim through gw_fetch: Stripe POST /v1/payment_intents
 * (confirm, off_session, the saved method) or GoCardless POST /payments (the mandate, charge_date,
 * retry_if_possible), under the Idempotency-Key settled-collect-<invoice>-<attempt>, so a crash or a second
 * instance repeating the call gets the same provider object. The outcome arrives with the payment's webhook (the
 * trigger on payments maps it to the attempt); a Stripe decline answered at once is recorded at once. Failed and
 * authentication_required attempts send the customer the collection_failed notice (e-mail and portal); card
 * failures are retried by later rounds on SETTLED_COLLECT_CARD_RETRY_DAYS, each a new attempt.
 *
 * Blocking: its own thread of the worker pool (gw_collector_start), or a caller that may block (gw_collect_round).
 */
#ifndef GW_COLLECTOR_H
#define GW_COLLECTOR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "fetch.h"

/* The LISTEN channel collect_plan notifies. */
#define GW_COLLECTOR_CHANNEL "settled_collections"
/* Attempts claimed at once. */
#define GW_COLLECTOR_BATCH 10

/* What one round did. */
typedef struct st_gw_collect_stats_t {
    int planned;  /* attempts planned */
    int claimed;  /* attempts claimed and sent (or cancelled) */
    int notified; /* collection_failed notices enqueued */
} gw_collect_stats_t;

/* Plans the attempts due at the instant at (an RFC 3339 / PostgreSQL timestamp; NULL: now) for organisation org
 * (0: every organisation) on ctx->db. Returns the number planned, or -1 when the database failed (err says why). */
int gw_collect_plan(gw_fetch_ctx_t *ctx, const char *at, int64_t org, char *err, size_t errlen);

/* Sends the due attempts (up to limit) as owner, then enqueues the notices of failed attempts. Returns how many
 * attempts were claimed, or -1 when the database failed. A read-only ctx sends nothing. */
int gw_collect_send(gw_fetch_ctx_t *ctx, const char *owner, int limit, const atomic_bool *stop,
                    gw_collect_stats_t *stats);

typedef struct st_gw_collector_t gw_collector_t;

/* Starts the collector thread (plans every SETTLED_COLLECT_INTERVAL, sends what is due) with a session of its own
 * and the quotas of shared; it stops once *stop is true. Returns NULL with err when the database cannot be
 * reached. */
gw_collector_t *gw_collector_start(const gw_config_t *cfg, const gw_fetch_ctx_t *shared, const atomic_bool *stop,
                                   const char *host, char *err, size_t errlen);
/* Waits for the thread (*stop must be true already) and frees it; NULL is allowed. */
void gw_collector_stop(gw_collector_t *c);

#endif
