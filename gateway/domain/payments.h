/* SPDX-License-Identifier: MIT */
/*
 * payments.h: the Stripe and GoCardless processors, and each invoice's payment state.
 *
 * An event names which object changed; its state is refetched (fetch.h), never taken from the event. Every event
 * of a payment resolves to the payment it is about (Stripe: the PaymentIntent of a charge, refund, dispute or
 * checkout session, or a Charge that belongs to none; GoCardless: the payment of a refund), and each distinct
 * payment of a claim is fetched once with all its refunds and disputes (GoCardless: its events, for what it went
 * through) and applied in one transaction through the SQL functions of schema/functions/payments.sql: the
 * current rows of payments, refunds and disputes, their facts in the append-only ledger, the invoice link named
 * by the metadata, and then, in the same transaction, the payment state of every invoice concerned, derived by
 * reconcile.c from the mirrored invoice and all its payments (docs/reconciliation.md).
 *
 * Blocking: worker threads and the command line only.
 */
#ifndef GW_PAYMENTS_H
#define GW_PAYMENTS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "db.h"
#include "err.h"
#include "fetch.h"
#include "processor.h"

extern const gw_processor_t gw_stripe_processor;
extern const gw_processor_t gw_gocardless_processor;

/* A mirrored invoice: its Xero tenant and InvoiceID (lower-case UUID text). */
typedef struct st_gw_invoice_ref_t {
    char tenant[37];
    char invoice[37];
} gw_invoice_ref_t;

/* Derives and stores the payment state of the n invoices of organisation org (duplicates are fine), inside the
 * caller's transaction on db: locks the invoices, reads them and their payments, runs gw_reconcile and stores the
 * result with pay_store_states, auditing each change with event_id (an inbox row id, may be NULL) and
 * correlation. Returns 0, or -1 with err (the caller rolls back). */
GW_MUSTCHECK int gw_payments_reconcile(gw_dbs_t *db, int64_t org, const gw_invoice_ref_t *refs, size_t n,
                                       const char *event_id, const char *correlation, gw_err_t *err);

/* Runs body in a transaction of ctx->db; in a dry run (ctx->read_only), whose session is already inside the
 * transaction that will be rolled back, in that transaction. */
GW_MUSTCHECK int gw_payments_tx(gw_fetch_ctx_t *ctx, gw_dbs_tx_cb body, void *arg, gw_err_t *err);

typedef struct st_gw_payments_sync_counts_t {
    long listed;  /* distinct objects found (payments, mandates, payment methods, customers) */
    long applied; /* of them, fetched and applied */
} gw_payments_sync_counts_t;

/* Drift repair for one organisation: lists the provider's payment objects (Stripe: PaymentIntents, Charges,
 * Refunds, Disputes and Checkout Sessions created since since, and the objects of the events since then, which
 * Stripe keeps 30 days; GoCardless: payments created since, and the objects every event since names) with the
 * provider's pagination, and applies each like a webhook's refetch. since is a timestamp PostgreSQL reads.
 * progress draws a progress line on stderr; stop (may be NULL) is looked at between objects. Returns 0, or -1
 * with err at the first failure (what was applied stays applied: it is idempotent). source names the webhook
 * source whose API key is used (NULL: the default); on Stripe, the platform account is listed and then every
 * connected account whose events arrived through that source. */
GW_MUSTCHECK int gw_payments_sync(gw_fetch_ctx_t *ctx, const char *provider, int64_t org, const char *source,
                                  const char *since, bool progress, const atomic_bool *stop,
                                  gw_payments_sync_counts_t *counts, char *err, size_t errlen);

#endif
