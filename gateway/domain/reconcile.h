/* SPDX-License-Identifier: MIT */
/*
 * reconcile.h: an invoice's payment state, derived from facts. A pure function: no I/O, no allocation, no clock,
 * so the same facts always give the same amounts and state, whatever order the providers delivered them in
 * (DESIGN.md 1: convergence under reordering). Amounts are int64_t minor units of the invoice's currency (money.h);
 * the definitions are those of docs/reconciliation.md, and the view invoice_payment_state uses the same names.
 */
#ifndef GW_RECONCILE_H
#define GW_RECONCILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum en_gw_pay_provider_t {
    GW_PAY_STRIPE,     /* a Stripe PaymentIntent */
    GW_PAY_GOCARDLESS, /* a GoCardless payment */
    GW_PAY_XERO,       /* a payment recorded in Xero */
} gw_pay_provider_t;

/* A Stripe PaymentIntent's status (docs.stripe.com/api/payment_intents/object). */
typedef enum en_gw_stripe_pi_status_t {
    GW_STRIPE_PI_REQUIRES_PAYMENT_METHOD,
    GW_STRIPE_PI_REQUIRES_CONFIRMATION,
    GW_STRIPE_PI_REQUIRES_ACTION,
    GW_STRIPE_PI_PROCESSING,
    GW_STRIPE_PI_REQUIRES_CAPTURE,
    GW_STRIPE_PI_CANCELED,
    GW_STRIPE_PI_SUCCEEDED,
} gw_stripe_pi_status_t;

typedef enum en_gw_stripe_refund_status_t {
    GW_STRIPE_REFUND_PENDING,
    GW_STRIPE_REFUND_REQUIRES_ACTION,
    GW_STRIPE_REFUND_SUCCEEDED,
    GW_STRIPE_REFUND_FAILED,
    GW_STRIPE_REFUND_CANCELED,
} gw_stripe_refund_status_t;

typedef enum en_gw_stripe_dispute_status_t {
    GW_STRIPE_DISPUTE_WARNING_NEEDS_RESPONSE,
    GW_STRIPE_DISPUTE_WARNING_UNDER_REVIEW,
    GW_STRIPE_DISPUTE_WARNING_CLOSED,
    GW_STRIPE_DISPUTE_NEEDS_RESPONSE,
    GW_STRIPE_DISPUTE_UNDER_REVIEW,
    GW_STRIPE_DISPUTE_WON,
    GW_STRIPE_DISPUTE_LOST,
} gw_stripe_dispute_status_t;

/* A GoCardless payment's status (developer.gocardless.com/api-reference/#core-endpoints-payments). */
typedef enum en_gw_gc_status_t {
    GW_GC_PENDING_CUSTOMER_APPROVAL,
    GW_GC_PENDING_SUBMISSION,
    GW_GC_SUBMITTED,
    GW_GC_CONFIRMED,
    GW_GC_PAID_OUT,
    GW_GC_CANCELLED,
    GW_GC_CUSTOMER_APPROVAL_DENIED,
    GW_GC_FAILED,
    GW_GC_CHARGED_BACK,
} gw_gc_status_t;

typedef struct st_gw_stripe_refund_t {
    int64_t amount;
    gw_stripe_refund_status_t status;
} gw_stripe_refund_t;

typedef struct st_gw_stripe_dispute_t {
    int64_t amount;
    gw_stripe_dispute_status_t status;
} gw_stripe_dispute_t;

/* The current facts of one payment linked to the invoice. Amounts are minor units of the payment's currency, already
 * in ISO units (gw_money_to_iso). */
typedef struct st_gw_pay_facts_t {
    gw_pay_provider_t provider;
    char currency[4]; /* upper-case ISO 4217 */
    int64_t amount;   /* Stripe: amount; GoCardless: amount; Xero: the payment's amount */
    union {
        struct {
            gw_stripe_pi_status_t status;
            int64_t amount_received;
            const gw_stripe_refund_t *refunds;
            size_t nrefunds;
            const gw_stripe_dispute_t *disputes;
            size_t ndisputes;
        } stripe;
        struct {
            gw_gc_status_t status;
            int64_t amount_refunded;
            bool was_collected;        /* the payment reached confirmed or paid_out at some point */
            bool chargeback_cancelled; /* a chargeback of it was cancelled (chargeback_cancelled) */
        } gc;
        struct {
            bool from_writeback; /* created by settled's own write-back of a Stripe or GoCardless payment */
        } xero;
    } u;
} gw_pay_facts_t;

typedef enum en_gw_invoice_status_t {
    GW_INVOICE_OPEN, /* DRAFT, SUBMITTED, AUTHORISED, PAID: anything money may be applied to */
    GW_INVOICE_VOIDED,
    GW_INVOICE_DELETED,
} gw_invoice_status_t;

typedef struct st_gw_invoice_facts_t {
    char currency[4];
    int64_t total;    /* Xero Total, minor units */
    int64_t credited; /* Xero AmountCredited, minor units (0 when absent) */
    gw_invoice_status_t status;
} gw_invoice_facts_t;

/* The state, the first of these that holds (docs/reconciliation.md). */
typedef enum en_gw_invoice_pay_state_t {
    GW_STATE_DISPUTED,
    GW_STATE_OVERPAID,
    GW_STATE_PAID,
    GW_STATE_CHARGED_BACK,
    GW_STATE_REFUNDED,
    GW_STATE_PARTIALLY_REFUNDED,
    GW_STATE_PENDING,
    GW_STATE_PARTIALLY_PAID,
    GW_STATE_UNPAID,
    GW_STATE_COUNT_,
} gw_invoice_pay_state_t;

/* Flags, as bits. */
enum {
    GW_FLAG_CURRENCY_MISMATCH = 1u << 0,
    GW_FLAG_LATE_FAILURE = 1u << 1,
    GW_FLAG_DISPUTE_WON = 1u << 2,
    GW_FLAG_CHARGEBACK_REVERSED = 1u << 3,
    GW_FLAG_PAID_AFTER_VOID = 1u << 4,
    GW_FLAG_OVERPAID = 1u << 5,
    GW_FLAG_COUNT_ = 6,
};

typedef struct st_gw_reconciled_t {
    int64_t due, paid, pending, refunded, charged_back, late_failed, disputed, net_paid, outstanding;
    gw_invoice_pay_state_t state;
    unsigned flags;
    size_t mismatched; /* payments in another currency: listed by the caller, counted nowhere, never converted */
} gw_reconciled_t;

/* Derives *out from the invoice and its n linked payments. Returns 0, or -1 if an amount is negative or a sum
 * overflows int64_t (then *out is not set: the caller records the invoice as not reconcilable, never a guess). */
int gw_reconcile(const gw_invoice_facts_t *invoice, const gw_pay_facts_t *payments, size_t n, gw_reconciled_t *out);

/* The names the view, the API and the docs use: "partially_refunded", "currency_mismatch", ... */
const char *gw_invoice_pay_state_name(gw_invoice_pay_state_t state);
const char *gw_reconcile_flag_name(unsigned flag_bit);

#endif
