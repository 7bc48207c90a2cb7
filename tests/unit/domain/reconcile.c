/* SPDX-License-Identifier: MIT */
/*
 * reconcile.c: gw_reconcile against an independent model, and exact money.
 *
 * The property test does not restate the definitions over final states, as reconcile.c does: it plays random
 * provider histories event by event (a PaymentIntent that goes processing, then succeeds, is partly refunded, is
 * disputed and loses; a GoCardless payment that is submitted, confirmed, paid out, charged back, has the chargeback
 * cancelled; ...), keeps running totals that each event moves (+pending on processing, -pending and +paid on
 * success, ...), and hands gw_reconcile only the objects' final states. The two must agree on every amount, the
 * state and the flags, for every history and for every order of the payments.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "money.h"
#include "reconcile.h"

#define MAX_PAYMENTS 6
#define MAX_REFUNDS 4
#define HISTORIES 10000

/* xorshift64*: the same histories on every run */
static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static int64_t between(int64_t lo, int64_t hi) /* inclusive */
{
    return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}
static int chance(int percent)
{
    return (int)(rnd() % 100) < percent;
}

/* The model's running totals, moved by events. */
typedef struct st_model_t {
    int64_t paid, pending, refunded, charged_back, late_failed, disputed;
    unsigned flags;
    size_t mismatched;
} model_t;

typedef struct st_history_t {
    gw_invoice_facts_t inv;
    gw_pay_facts_t pays[MAX_PAYMENTS];
    gw_stripe_refund_t refunds[MAX_PAYMENTS][MAX_REFUNDS];
    gw_stripe_dispute_t disputes[MAX_PAYMENTS][1];
    size_t n;
    model_t m;
    char story[2048]; /* the events played, for a failure message */
} history_t;

static void say(history_t *h, const char *fmt, ...)
{
    size_t len = strlen(h->story);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->story + len, sizeof(h->story) - len, fmt, ap);
    va_end(ap);
}

/* A PaymentIntent's life, event by event. */
static void play_stripe(history_t *h, size_t k, model_t *m, bool counted)
{
    gw_pay_facts_t *p = &h->pays[k];
    int64_t amount = p->amount;
    p->u.stripe.status = GW_STRIPE_PI_REQUIRES_PAYMENT_METHOD;
    say(h, " [pi%zu %lld:", k, (long long)amount);
    if (chance(15)) {
        p->u.stripe.status = chance(50) ? GW_STRIPE_PI_CANCELED : GW_STRIPE_PI_REQUIRES_ACTION;
        say(h, " never paid]");
        return;
    }
    bool processing = chance(40);
    if (processing) {
        p->u.stripe.status = GW_STRIPE_PI_PROCESSING;
        if (counted)
            m->pending += amount;
        say(h, " processing");
        if (chance(25)) {
            say(h, " (still)]");
            return;
        }
        if (counted)
            m->pending -= amount; /* processing ends, whatever comes next */
        if (chance(20)) {
            p->u.stripe.status = GW_STRIPE_PI_REQUIRES_PAYMENT_METHOD; /* payment_failed */
            say(h, " payment_failed]");
            return;
        }
    }
    int64_t received = chance(15) ? between(1, amount) : amount; /* a partial capture now and then */
    p->u.stripe.status = GW_STRIPE_PI_SUCCEEDED;
    p->u.stripe.amount_received = received;
    if (counted)
        m->paid += received;
    say(h, " succeeded %lld", (long long)received);

    int64_t refundable = received;
    size_t nref = (size_t)(chance(35) ? between(1, MAX_REFUNDS) : 0);
    for (size_t i = 0; i != nref && refundable > 0; ++i) {
        gw_stripe_refund_t *f = &h->refunds[k][p->u.stripe.nrefunds++];
        f->amount = between(1, refundable);
        f->status = GW_STRIPE_REFUND_PENDING; /* refund.created */
        if (counted)
            m->refunded += f->amount;
        refundable -= f->amount;
        int end = (int)(rnd() % 10);
        if (end < 6) {
            f->status = GW_STRIPE_REFUND_SUCCEEDED;
        } else if (end < 8) {
            f->status = chance(50) ? GW_STRIPE_REFUND_FAILED : GW_STRIPE_REFUND_CANCELED; /* refund.failed */
            if (counted)
                m->refunded -= f->amount;
            refundable += f->amount;
        } else if (end == 8) {
            f->status = GW_STRIPE_REFUND_REQUIRES_ACTION;
            if (counted)
                m->refunded -= f->amount; /* waits on the customer: not counted */
        }                                 /* else: still pending */
        say(h, " refund %lld->%d", (long long)f->amount, (int)f->status);
    }
    p->u.stripe.refunds = h->refunds[k];

    if (chance(25)) {
        gw_stripe_dispute_t *d = &h->disputes[k][0];
        p->u.stripe.disputes = h->disputes[k];
        p->u.stripe.ndisputes = 1;
        d->amount = between(1, received);
        bool warning = chance(30); /* an inquiry first */
        d->status = warning ? GW_STRIPE_DISPUTE_WARNING_NEEDS_RESPONSE : GW_STRIPE_DISPUTE_NEEDS_RESPONSE;
        if (counted)
            m->disputed += d->amount;
        say(h, " dispute %lld%s", (long long)d->amount, warning ? " (inquiry)" : "");
        int end = (int)(rnd() % 10);
        if (end < 2) {
            d->status = warning ? GW_STRIPE_DISPUTE_WARNING_UNDER_REVIEW : GW_STRIPE_DISPUTE_UNDER_REVIEW;
            say(h, " under_review");
        } else if (warning && end < 5) {
            d->status = GW_STRIPE_DISPUTE_WARNING_CLOSED;
            if (counted)
                m->disputed -= d->amount;
            say(h, " inquiry closed");
        } else if (end < 7) {
            d->status = GW_STRIPE_DISPUTE_WON;
            if (counted) {
                m->disputed -= d->amount;
                m->flags |= GW_FLAG_DISPUTE_WON;
            }
            say(h, " won");
        } else if (end < 9 || !warning) {
            d->status = GW_STRIPE_DISPUTE_LOST;
            if (counted) {
                m->disputed -= d->amount;
                m->charged_back += d->amount;
            }
            say(h, " lost");
        } /* else: still open */
    }
    say(h, "]");
}

/* A GoCardless payment's life, event by event. */
static void play_gocardless(history_t *h, size_t k, model_t *m, bool counted)
{
    gw_pay_facts_t *p = &h->pays[k];
    int64_t amount = p->amount;
    p->u.gc.status = GW_GC_PENDING_SUBMISSION;
    say(h, " [pm%zu %lld:", k, (long long)amount);
    int start = (int)(rnd() % 10);
    if (start == 0) {
        p->u.gc.status = GW_GC_CANCELLED;
        say(h, " cancelled]");
        return;
    }
    if (start == 1) {
        p->u.gc.status = chance(50) ? GW_GC_PENDING_CUSTOMER_APPROVAL : GW_GC_CUSTOMER_APPROVAL_DENIED;
        say(h, " approval]");
        return;
    }
    if (start == 2) {
        say(h, " pending_submission]");
        return;
    }
    p->u.gc.status = GW_GC_SUBMITTED;
    if (counted)
        m->pending += amount;
    say(h, " submitted");
    int next = (int)(rnd() % 10);
    if (next < 2) {
        say(h, "]");
        return;
    }
    if (counted)
        m->pending -= amount;
    if (next < 3) {
        p->u.gc.status = GW_GC_FAILED; /* failed before it was ever collected: no money */
        say(h, " failed]");
        return;
    }
    p->u.gc.status = GW_GC_CONFIRMED;
    p->u.gc.was_collected = true;
    if (counted)
        m->paid += amount;
    say(h, " confirmed");
    if (chance(60)) {
        p->u.gc.status = GW_GC_PAID_OUT;
        say(h, " paid_out");
    }
    int after = (int)(rnd() % 10);
    if (after < 2) {
        p->u.gc.status = GW_GC_FAILED; /* late_failure_settled */
        if (counted) {
            m->late_failed += amount;
            m->flags |= GW_FLAG_LATE_FAILURE;
        }
        say(h, " late failure");
    } else if (after < 4) {
        p->u.gc.status = GW_GC_CHARGED_BACK;
        if (counted)
            m->charged_back += amount;
        say(h, " charged_back");
        if (chance(40)) {
            p->u.gc.status = GW_GC_PAID_OUT; /* chargeback_cancelled: the money is back */
            p->u.gc.chargeback_cancelled = true;
            if (counted) {
                m->charged_back -= amount;
                m->flags |= GW_FLAG_CHARGEBACK_REVERSED;
            }
            say(h, " chargeback_cancelled");
        }
    } else if (after < 6) {
        int64_t r = chance(40) ? amount : between(1, amount); /* a full refund, or a part */
        p->u.gc.amount_refunded = r;
        if (counted)
            m->refunded += r;
        say(h, " refunded %lld", (long long)r);
    }
    say(h, "]");
}

static const char *const currencies[] = {"GBP", "EUR", "JPY", "KWD", "USD"};

/* An invoice with n payments of the given providers (mask of 1 << gw_pay_provider_t). */
static void generate(history_t *h, unsigned providers)
{
    memset(h, 0, sizeof(*h));
    const char *cur = currencies[rnd() % 5];
    memcpy(h->inv.currency, cur, 4);
    int big = chance(10);
    h->inv.total = between(0, big ? 10000000 : 50000);
    h->inv.credited = chance(20) ? between(0, h->inv.total) : 0;
    if (chance(3))
        h->inv.credited = h->inv.total + between(1, 100); /* over-credited: due below zero */
    h->inv.status = chance(90) ? GW_INVOICE_OPEN : (chance(50) ? GW_INVOICE_VOIDED : GW_INVOICE_DELETED);
    int64_t due = h->inv.total - h->inv.credited;
    say(h, "%s total %lld credited %lld status %d:", cur, (long long)h->inv.total, (long long)h->inv.credited,
        (int)h->inv.status);
    h->n = (size_t)between(0, MAX_PAYMENTS);
    for (size_t k = 0; k != h->n; ++k) {
        gw_pay_facts_t *p = &h->pays[k];
        do
            p->provider = (gw_pay_provider_t)(rnd() % 3);
        while (!(providers >> p->provider & 1));
        /* mostly the invoice's currency; sometimes another one, which must count nowhere */
        const char *pc = cur;
        if (chance(8))
            while ((pc = currencies[rnd() % 5]) == cur)
                ;
        memcpy(p->currency, pc, 4);
        bool counted = strcmp(pc, cur) == 0;
        if (!counted)
            ++h->m.mismatched, h->m.flags |= GW_FLAG_CURRENCY_MISMATCH;
        /* amounts around the due amount: exact payments, partial ones, overpayments */
        int kind = (int)(rnd() % 4);
        int64_t base = due > 0 ? due : 1000;
        p->amount = kind == 0   ? base
                    : kind == 1 ? between(1, base)
                    : kind == 2 ? base / (int64_t)(h->n) + 1
                                : between(1, 3 * base);
        switch (p->provider) {
        case GW_PAY_STRIPE:
            play_stripe(h, k, &h->m, counted);
            break;
        case GW_PAY_GOCARDLESS:
            play_gocardless(h, k, &h->m, counted);
            break;
        case GW_PAY_XERO:
            p->u.xero.from_writeback = chance(50);
            if (counted && !p->u.xero.from_writeback)
                h->m.paid += p->amount;
            say(h, " [xero %lld%s]", (long long)p->amount, p->u.xero.from_writeback ? " written back" : "");
            break;
        }
    }
}

/* The state table of docs/reconciliation.md, as rows: the first row that holds names the state. */
static gw_invoice_pay_state_t model_state(int64_t due, const model_t *m, int64_t net, unsigned *flags)
{
    struct {
        bool holds;
        gw_invoice_pay_state_t state;
    } rows[] = {
        {m->disputed > 0, GW_STATE_DISPUTED},
        {net > due && m->paid > 0, GW_STATE_OVERPAID},
        {net == due, GW_STATE_PAID},
        {m->charged_back > 0, GW_STATE_CHARGED_BACK},
        {m->refunded > 0 && net <= 0, GW_STATE_REFUNDED},
        {m->refunded > 0, GW_STATE_PARTIALLY_REFUNDED},
        {m->pending > 0, GW_STATE_PENDING},
        {net > 0, GW_STATE_PARTIALLY_PAID},
        {true, GW_STATE_UNPAID},
    };
    if (net > due && m->paid > 0)
        *flags |= GW_FLAG_OVERPAID;
    for (size_t i = 0;; ++i)
        if (rows[i].holds)
            return rows[i].state;
}

static void check_history(history_t *h, unsigned *seen_states)
{
    int64_t due = h->inv.total - h->inv.credited;
    int64_t net = h->m.paid - h->m.refunded - h->m.charged_back - h->m.late_failed;
    unsigned flags = h->m.flags;
    gw_invoice_pay_state_t state = model_state(due, &h->m, net, &flags);
    if (h->inv.status != GW_INVOICE_OPEN && h->m.paid > 0)
        flags |= GW_FLAG_PAID_AFTER_VOID;

    /* every order of the payments gives the same answer: a few random permutations of each history */
    for (int round = 0; round != 3; ++round) {
        gw_pay_facts_t order[MAX_PAYMENTS];
        memcpy(order, h->pays, sizeof(order));
        for (size_t i = h->n; i > 1; --i) {
            size_t j = rnd() % i;
            gw_pay_facts_t t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        gw_reconciled_t r;
        if (gw_reconcile(&h->inv, order, h->n, &r) != 0)
            fail_msg("gw_reconcile refused a valid history: %s", h->story);
#define SAME(field, want)                                                                                              \
    if ((int64_t)(r.field) != (int64_t)(want))                                                                         \
        fail_msg(#field ": reconcile %lld, model %lld\n  %s", (long long)(r.field), (long long)(want), h->story);
        SAME(due, due);
        SAME(paid, h->m.paid);
        SAME(pending, h->m.pending);
        SAME(refunded, h->m.refunded);
        SAME(charged_back, h->m.charged_back);
        SAME(late_failed, h->m.late_failed);
        SAME(disputed, h->m.disputed);
        SAME(net_paid, net);
        SAME(outstanding, due - net);
        SAME(mismatched, h->m.mismatched);
#undef SAME
        if (r.state != state)
            fail_msg("state: reconcile %s, model %s\n  %s", gw_invoice_pay_state_name(r.state),
                     gw_invoice_pay_state_name(state), h->story);
        if (r.flags != flags)
            fail_msg("flags: reconcile %#x, model %#x\n  %s", r.flags, flags, h->story);
    }
    *seen_states |= 1u << state;
}

static void run_property(unsigned providers, uint64_t seed)
{
    rng_state = seed;
    unsigned seen = 0;
    static history_t h;
    for (int i = 0; i != HISTORIES; ++i) {
        generate(&h, providers);
        check_history(&h, &seen);
    }
    /* the generator reaches every state, so no row of the table goes unchecked */
    for (int s = 0; s != GW_STATE_COUNT_; ++s) {
        bool reachable = !(s == GW_STATE_DISPUTED && !(providers & (1u << GW_PAY_STRIPE)));
        if (reachable && !(seen >> s & 1))
            fail_msg("no history of providers %#x reached state %s", providers, gw_invoice_pay_state_name(s));
    }
}

static void test_property_stripe(void **state)
{
    run_property(1u << GW_PAY_STRIPE | 1u << GW_PAY_XERO, 0x5eed0001);
}

static void test_property_gocardless(void **state)
{
    run_property(1u << GW_PAY_GOCARDLESS | 1u << GW_PAY_XERO, 0x5eed0002);
}

static void test_property_mixed(void **state)
{
    run_property(7u, 0x5eed0003);
}

/* A few histories written out, with the numbers worked by hand. */
static void test_worked_examples(void **state)
{
    gw_invoice_facts_t inv = {"GBP", 12000, 2000, GW_INVOICE_OPEN}; /* due 100.00 */
    gw_reconciled_t r;

    /* a partial payment is recorded: 40.00 of 100.00 */
    gw_pay_facts_t part = {.provider = GW_PAY_STRIPE, .currency = "GBP", .amount = 4000};
    part.u.stripe.status = GW_STRIPE_PI_SUCCEEDED;
    part.u.stripe.amount_received = 4000;
    assert_int_equal(gw_reconcile(&inv, &part, 1, &r), 0);
    assert_int_equal(r.paid, 4000);
    assert_int_equal(r.outstanding, 6000);
    assert_int_equal(r.state, GW_STATE_PARTIALLY_PAID);

    /* two payments for one invoice: it is paid, in either order */
    gw_pay_facts_t two[2] = {part, {.provider = GW_PAY_GOCARDLESS, .currency = "GBP", .amount = 6000}};
    two[1].u.gc.status = GW_GC_CONFIRMED;
    two[1].u.gc.was_collected = true;
    assert_int_equal(gw_reconcile(&inv, two, 2, &r), 0);
    assert_int_equal(r.state, GW_STATE_PAID);
    gw_pay_facts_t swapped[2] = {two[1], two[0]};
    assert_int_equal(gw_reconcile(&inv, swapped, 2, &r), 0);
    assert_int_equal(r.state, GW_STATE_PAID);
    assert_int_equal(r.outstanding, 0);

    /* the same payment written back to Xero is not counted twice */
    gw_pay_facts_t with_xero[3] = {two[0], two[1], {.provider = GW_PAY_XERO, .currency = "GBP", .amount = 6000}};
    with_xero[2].u.xero.from_writeback = true;
    assert_int_equal(gw_reconcile(&inv, with_xero, 3, &r), 0);
    assert_int_equal(r.paid, 10000);
    with_xero[2].u.xero.from_writeback = false; /* a payment entered in Xero by hand is money too */
    assert_int_equal(gw_reconcile(&inv, with_xero, 3, &r), 0);
    assert_int_equal(r.state, GW_STATE_OVERPAID);
    assert_true(r.flags & GW_FLAG_OVERPAID);

    /* a late failure nets to nothing and is flagged */
    gw_pay_facts_t late = two[1];
    late.amount = 10000;
    late.u.gc.status = GW_GC_FAILED;
    assert_int_equal(gw_reconcile(&inv, &late, 1, &r), 0);
    assert_int_equal(r.paid, 10000);
    assert_int_equal(r.late_failed, 10000);
    assert_int_equal(r.net_paid, 0);
    assert_int_equal(r.state, GW_STATE_UNPAID);
    assert_true(r.flags & GW_FLAG_LATE_FAILURE);
    late.u.gc.was_collected = false; /* failed before collection: no money moved at all */
    assert_int_equal(gw_reconcile(&inv, &late, 1, &r), 0);
    assert_int_equal(r.paid, 0);
    assert_int_equal(r.flags, 0);

    /* a lost dispute of part of a payment */
    gw_stripe_dispute_t lost = {2500, GW_STRIPE_DISPUTE_LOST};
    gw_pay_facts_t full = part;
    full.amount = full.u.stripe.amount_received = 10000;
    full.u.stripe.disputes = &lost;
    full.u.stripe.ndisputes = 1;
    assert_int_equal(gw_reconcile(&inv, &full, 1, &r), 0);
    assert_int_equal(r.charged_back, 2500);
    assert_int_equal(r.outstanding, 2500);
    assert_int_equal(r.state, GW_STATE_CHARGED_BACK);

    /* JPY has no minor unit: 5000 is five thousand yen, and a payment in GBP counts nowhere */
    gw_invoice_facts_t yen = {"JPY", 5000, 0, GW_INVOICE_OPEN};
    gw_pay_facts_t mixed[2] = {full, part};
    memcpy(mixed[0].currency, "JPY", 4);
    mixed[0].amount = mixed[0].u.stripe.amount_received = 5000;
    mixed[0].u.stripe.ndisputes = 0;
    assert_int_equal(gw_reconcile(&yen, mixed, 2, &r), 0);
    assert_int_equal(r.state, GW_STATE_PAID);
    assert_int_equal(r.mismatched, 1);
    assert_true(r.flags & GW_FLAG_CURRENCY_MISMATCH);

    /* money against a voided invoice */
    gw_invoice_facts_t voided = inv;
    voided.status = GW_INVOICE_VOIDED;
    assert_int_equal(gw_reconcile(&voided, &part, 1, &r), 0);
    assert_true(r.flags & GW_FLAG_PAID_AFTER_VOID);
}

static void test_refuses_negative_and_overflow(void **state)
{
    gw_invoice_facts_t inv = {"GBP", 100, 0, GW_INVOICE_OPEN};
    gw_reconciled_t r = {.state = GW_STATE_UNPAID};
    gw_pay_facts_t p = {.provider = GW_PAY_XERO, .currency = "GBP", .amount = -1};
    assert_int_equal(gw_reconcile(&inv, &p, 1, &r), -1);
    gw_pay_facts_t big[2] = {{.provider = GW_PAY_XERO, .currency = "GBP", .amount = INT64_MAX},
                             {.provider = GW_PAY_XERO, .currency = "GBP", .amount = 1}};
    assert_int_equal(gw_reconcile(&inv, big, 2, &r), -1);
    gw_invoice_facts_t bad = {"GBP", 100, 200, GW_INVOICE_OPEN};
    assert_int_equal(gw_reconcile(&bad, NULL, 0, &r), 0); /* over-credited: due is negative, still exact */
    assert_int_equal(r.due, -100);
    gw_invoice_facts_t neg = {"GBP", -1, 0, GW_INVOICE_OPEN};
    assert_int_equal(gw_reconcile(&neg, NULL, 0, &r), -1);
}

static void test_names(void **state)
{
    assert_string_equal(gw_invoice_pay_state_name(GW_STATE_PARTIALLY_REFUNDED), "partially_refunded");
    assert_string_equal(gw_invoice_pay_state_name(GW_STATE_UNPAID), "unpaid");
    assert_string_equal(gw_reconcile_flag_name(GW_FLAG_PAID_AFTER_VOID), "paid_after_void");
    assert_string_equal(gw_reconcile_flag_name(GW_FLAG_OVERPAID), "overpaid");
    assert_string_equal(gw_reconcile_flag_name(3), "unknown");
}

static void test_currency_exponents(void **state)
{
    assert_int_equal(gw_currency_exponent("GBP"), 2);
    assert_int_equal(gw_currency_exponent("eur"), 2);
    assert_int_equal(gw_currency_exponent("JPY"), 0);
    assert_int_equal(gw_currency_exponent("ISK"), 0);
    assert_int_equal(gw_currency_exponent("KWD"), 3);
    assert_int_equal(gw_currency_exponent("CLF"), 4);
    assert_int_equal(gw_currency_exponent("XAU"), -1); /* no minor unit: refused, not guessed */
    assert_int_equal(gw_currency_exponent("GB"), -1);
    assert_int_equal(gw_currency_exponent("GBPX"), -1);
    assert_int_equal(gw_currency_exponent("G1P"), -1);
    assert_int_equal(gw_currency_exponent(NULL), -1);
}

static void test_money_parse_and_format(void **state)
{
    static const struct {
        const char *text;
        int exponent, rc;
        int64_t minor;
    } cases[] = {
        {"1234.5", 2, 0, 123450},
        {"1234.50", 2, 0, 123450},
        {"1234.5000", 2, 0, 123450},
        {"-0.25", 2, 0, -25},
        {"100", 0, 0, 100},
        {"100.0000", 0, 0, 100},
        {"1.005", 3, 0, 1005},
        {"1.5", 3, 0, 1500},
        {"+7", 2, 0, 700},
        {".5", 2, 0, 50},
        {"10.005", 2, -2, 0},
        {"100.5", 0, -2, 0},
        {"1.23456", 4, -2, 0},
        {"", 2, -1, 0},
        {"-", 2, -1, 0},
        {"1.2.3", 2, -1, 0},
        {"1e5", 2, -1, 0},
        {"12a", 2, -1, 0},
        {"100.", 2, -1, 0},
        {" 1", 2, -1, 0},
        {"92233720368547758.07", 2, 0, INT64_MAX},
        {"-92233720368547758.08", 2, 0, INT64_MIN},
        {"92233720368547758.08", 2, -1, 0},
        {"922337203685477580.7", 2, -1, 0},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        int64_t v = 0;
        int rc = gw_money_parse(cases[i].text, strlen(cases[i].text), cases[i].exponent, &v);
        if (rc != cases[i].rc || (rc == 0 && v != cases[i].minor))
            fail_msg("gw_money_parse(\"%s\", %d) = %d, %lld; want %d, %lld", cases[i].text, cases[i].exponent, rc,
                     (long long)v, cases[i].rc, (long long)cases[i].minor);
    }
    char buf[32];
    assert_int_equal(gw_money_format(123450, 2, buf, sizeof(buf)), 7);
    assert_string_equal(buf, "1234.50");
    gw_money_format(-5, 2, buf, sizeof(buf));
    assert_string_equal(buf, "-0.05");
    gw_money_format(500, 0, buf, sizeof(buf));
    assert_string_equal(buf, "500");
    gw_money_format(1005, 3, buf, sizeof(buf));
    assert_string_equal(buf, "1.005");
    gw_money_format(INT64_MIN, 2, buf, sizeof(buf));
    assert_string_equal(buf, "-92233720368547758.08");
    assert_int_equal(gw_money_format(123450, 2, buf, 7), -1); /* no room for the NUL */
    /* every formatted amount parses back to itself */
    rng_state = 42;
    for (int i = 0; i != 20000; ++i) {
        int64_t v = (int64_t)rnd() >> (rnd() % 60);
        int e = (int)(rnd() % 5), n = gw_money_format(v, e, buf, sizeof(buf));
        int64_t back;
        assert_true(n > 0);
        if (gw_money_parse(buf, (size_t)n, e, &back) != 0 || back != v)
            fail_msg("%lld at exponent %d formats as %s, which does not parse back", (long long)v, e, buf);
    }
}

static void test_provider_units(void **state)
{
    int64_t v;
    assert_int_equal(gw_money_to_iso(GW_MONEY_STRIPE, "isk", 50000, &v), 0);
    assert_int_equal(v, 500); /* Stripe counts krónur in hundredths */
    assert_int_equal(gw_money_to_iso(GW_MONEY_STRIPE, "isk", 50050, &v), -2);
    assert_int_equal(gw_money_to_iso(GW_MONEY_STRIPE, "mga", 500, &v), 0);
    assert_int_equal(v, 50000); /* Stripe counts ariary whole; ISO has 2 decimals */
    assert_int_equal(gw_money_to_iso(GW_MONEY_STRIPE, "mga", INT64_MAX / 10, &v), -2);
    assert_int_equal(gw_money_to_iso(GW_MONEY_STRIPE, "jpy", 500, &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(gw_money_to_iso(GW_MONEY_STRIPE, "kwd", 5120, &v), 0);
    assert_int_equal(v, 5120);
    assert_int_equal(gw_money_to_iso(GW_MONEY_ISO, "ISK", 501, &v), 0);
    assert_int_equal(v, 501);
    assert_int_equal(gw_money_to_iso(GW_MONEY_ISO, "XAU", 1, &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_property_stripe),
        cmocka_unit_test(test_property_gocardless),
        cmocka_unit_test(test_property_mixed),
        cmocka_unit_test(test_worked_examples),
        cmocka_unit_test(test_refuses_negative_and_overflow),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_currency_exponents),
        cmocka_unit_test(test_money_parse_and_format),
        cmocka_unit_test(test_provider_units),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
