/* SPDX-License-Identifier: MIT */
/* reconcile.c: an invoice's amounts and payment state from its facts (see reconcile.h, docs/reconciliation.md). */
#include "reconcile.h"
#include <string.h>

/* *sum += v, refusing a negative amount and an overflow. */
static int add(int64_t *sum, int64_t v)
{
    if (v < 0)
        return -1;
    return __builtin_add_overflow(*sum, v, sum) ? -1 : 0;
}

static bool stripe_dispute_open(gw_stripe_dispute_status_t s)
{
    return s == GW_STRIPE_DISPUTE_NEEDS_RESPONSE || s == GW_STRIPE_DISPUTE_UNDER_REVIEW ||
           s == GW_STRIPE_DISPUTE_WARNING_NEEDS_RESPONSE || s == GW_STRIPE_DISPUTE_WARNING_UNDER_REVIEW;
}

static int add_stripe(const gw_pay_facts_t *p, gw_reconciled_t *r)
{
    if (p->u.stripe.status == GW_STRIPE_PI_SUCCEEDED && add(&r->paid, p->u.stripe.amount_received) != 0)
        return -1;
    if (p->u.stripe.status == GW_STRIPE_PI_PROCESSING && add(&r->pending, p->amount) != 0)
        return -1;
    for (size_t i = 0; i != p->u.stripe.nrefunds; ++i) {
        const gw_stripe_refund_t *f = &p->u.stripe.refunds[i];
        if ((f->status == GW_STRIPE_REFUND_SUCCEEDED || f->status == GW_STRIPE_REFUND_PENDING) &&
            add(&r->refunded, f->amount) != 0)
            return -1;
    }
    for (size_t i = 0; i != p->u.stripe.ndisputes; ++i) {
        const gw_stripe_dispute_t *d = &p->u.stripe.disputes[i];
        if (d->status == GW_STRIPE_DISPUTE_LOST && add(&r->charged_back, d->amount) != 0)
            return -1;
        if (stripe_dispute_open(d->status) && add(&r->disputed, d->amount) != 0)
            return -1;
        if (d->status == GW_STRIPE_DISPUTE_WON)
            r->flags |= GW_FLAG_DISPUTE_WON;
    }
    return 0;
}

/* A GoCardless payment counts as paid once collected: confirmed, paid out, charged back, or failed after it had
 * been collected (a late failure, which then also counts as late_failed, so that it nets to nothing). */
static int add_gocardless(const gw_pay_facts_t *p, gw_reconciled_t *r)
{
    gw_gc_status_t s = p->u.gc.status;
    bool late_failure = s == GW_GC_FAILED && p->u.gc.was_collected;
    if ((s == GW_GC_CONFIRMED || s == GW_GC_PAID_OUT || s == GW_GC_CHARGED_BACK || late_failure) &&
        add(&r->paid, p->amount) != 0)
        return -1;
    if (s == GW_GC_SUBMITTED && add(&r->pending, p->amount) != 0)
        return -1;
    if (s == GW_GC_CHARGED_BACK && add(&r->charged_back, p->amount) != 0)
        return -1;
    if (late_failure) {
        if (add(&r->late_failed, p->amount) != 0)
            return -1;
        r->flags |= GW_FLAG_LATE_FAILURE;
    }
    if (add(&r->refunded, p->u.gc.amount_refunded) != 0)
        return -1;
    if (p->u.gc.chargeback_cancelled)
        r->flags |= GW_FLAG_CHARGEBACK_REVERSED;
    return 0;
}

int gw_reconcile(const gw_invoice_facts_t *inv, const gw_pay_facts_t *payments, size_t n, gw_reconciled_t *out)
{
    gw_reconciled_t r;
    memset(&r, 0, sizeof(r));
    if (inv->total < 0 || inv->credited < 0 || __builtin_sub_overflow(inv->total, inv->credited, &r.due))
        return -1;
    for (size_t i = 0; i != n; ++i) {
        const gw_pay_facts_t *p = &payments[i];
        if (p->amount < 0)
            return -1;
        if (strcmp(p->currency, inv->currency) != 0) {
            ++r.mismatched;
            r.flags |= GW_FLAG_CURRENCY_MISMATCH;
            continue;
        }
        int rc = 0;
        switch (p->provider) {
        case GW_PAY_STRIPE:
            rc = add_stripe(p, &r);
            break;
        case GW_PAY_GOCARDLESS:
            rc = add_gocardless(p, &r);
            break;
        case GW_PAY_XERO:
            /* a payment settled wrote back to Xero is the Stripe or GoCardless payment above: never twice */
            if (!p->u.xero.from_writeback)
                rc = add(&r.paid, p->amount);
            break;
        default:
            rc = -1;
        }
        if (rc != 0)
            return -1;
    }
    if (__builtin_sub_overflow(r.paid, r.refunded, &r.net_paid) ||
        __builtin_sub_overflow(r.net_paid, r.charged_back, &r.net_paid) ||
        __builtin_sub_overflow(r.net_paid, r.late_failed, &r.net_paid) ||
        __builtin_sub_overflow(r.due, r.net_paid, &r.outstanding))
        return -1;

    bool overpaid = r.net_paid > r.due && r.paid > 0;
    if (r.disputed > 0)
        r.state = GW_STATE_DISPUTED;
    else if (overpaid)
        r.state = GW_STATE_OVERPAID;
    else if (r.net_paid == r.due)
        r.state = GW_STATE_PAID;
    else if (r.charged_back > 0)
        r.state = GW_STATE_CHARGED_BACK;
    else if (r.refunded > 0 && r.net_paid <= 0)
        r.state = GW_STATE_REFUNDED;
    else if (r.refunded > 0)
        r.state = GW_STATE_PARTIALLY_REFUNDED;
    else if (r.pending > 0)
        r.state = GW_STATE_PENDING;
    else if (r.net_paid > 0)
        r.state = GW_STATE_PARTIALLY_PAID;
    else
        r.state = GW_STATE_UNPAID;
    if (overpaid)
        r.flags |= GW_FLAG_OVERPAID;
    if (inv->status != GW_INVOICE_OPEN && r.paid > 0)
        r.flags |= GW_FLAG_PAID_AFTER_VOID;
    *out = r;
    return 0;
}

static const char *const state_names[GW_STATE_COUNT_] = {
    "disputed",           "overpaid", "paid",           "charged_back", "refunded",
    "partially_refunded", "pending",  "partially_paid", "unpaid",
};

static const char *const flag_names[GW_FLAG_COUNT_] = {
    "currency_mismatch", "late_failure", "dispute_won", "chargeback_reversed", "paid_after_void", "overpaid",
};

const char *gw_invoice_pay_state_name(gw_invoice_pay_state_t state)
{
    return (unsigned)state < GW_STATE_COUNT_ ? state_names[state] : "unknown";
}

const char *gw_reconcile_flag_name(unsigned flag_bit)
{
    for (unsigned i = 0; i != GW_FLAG_COUNT_; ++i)
        if (flag_bit == 1u << i)
            return flag_names[i];
    return "unknown";
}
