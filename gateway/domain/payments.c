/* SPDX-License-Identifier: MIT */
/* payments.c: the Stripe and GoCardless processors (resolving events to payments, refetching them, applying them
 * through schema/functions/payments.sql) and the reconciliation of invoices (reconcile.c) in the same transaction. */
#include "payments.h"
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "circuit.h"
#include "log.h"
#include "mem.h"
#include "money.h"
#include "reconcile.h"
#include "replay.h"
#include "xero_mirror.h"

#define MAX_LIST_PAGES 50 /* a payment with more than 5000 refunds or events is not one settled can reconcile */

/* ---- transactions ---- */

int gw_payments_tx(gw_fetch_ctx_t *ctx, gw_dbs_tx_cb body, void *arg, gw_err_t *err)
{
    /* A dry run: the session is inside the transaction the dry run rolls back, and its diff is made of the audit
     * rows of that transaction itself (a savepoint's rows would carry another xid), so the body runs in it as it
     * is; a body that fails leaves it aborted, which the dry run reports. */
    return ctx->read_only ? body(ctx->db, arg, err) : gw_dbs_tx(ctx->db, body, arg, err);
}

/* ---- reconciliation: facts in, states out ---- */

/* The invoices, locked so that two transactions reconciling one invoice run one after the other (the second reads
 * the payments the first committed), with the payments recorded in Xero that are not settled's own write-backs
 * (whose Reference starts with "settled:"), as a list of amounts: from the invoice's Payments when Xero sent them,
 * else its AmountPaid less what settled's write-backs had written there when the invoice was fetched, as one
 * payment. */
static const char sql_invoices[] =
    "SELECT i.tenant_id, i.invoice_id, upper(coalesce(i.currency_code, '')), coalesce(i.total, 0)::text,"
    "       coalesce(i.amount_credited, 0)::text, coalesce(i.status, ''),"
    "       CASE WHEN jsonb_typeof(i.raw -> 'Payments') = 'array' THEN"
    "            coalesce((SELECT string_agg(p ->> 'Amount', ' ') FROM jsonb_array_elements(i.raw -> 'Payments') AS p"
    "                      WHERE coalesce(p ->> 'Reference', '') NOT LIKE 'settled:%'"
    "                        AND coalesce(p ->> 'Status', '') <> 'DELETED'), '')"
    "            WHEN i.amount_paid > 0 THEN i.amount_paid::text ELSE '' END,"
    "       coalesce(jsonb_typeof(i.raw -> 'Payments') = 'array', false),"
    "       coalesce((SELECT sum(w.written_minor) FROM xero_writebacks w WHERE w.organisation_id = i.organisation_id"
    "                 AND w.written_tenant_id = i.tenant_id AND w.written_invoice_id = i.invoice_id"
    "                 AND w.xero_payment_id IS NOT NULL AND w.updated_at < i.fetched_at), 0)"
    " FROM xero_invoices i"
    " WHERE i.organisation_id = $1::bigint"
    "   AND (i.tenant_id, i.invoice_id) IN (SELECT * FROM unnest($2::uuid[], $3::uuid[]))"
    " ORDER BY i.tenant_id, i.invoice_id FOR UPDATE OF i";

/* Their Stripe and GoCardless payments, each with its refunds and disputes as "status amount" lists. */
static const char sql_payments[] =
    "SELECT p.xero_tenant_id, p.xero_invoice_id::text, p.provider, p.currency, p.amount_minor, p.received_minor,"
    "       p.refunded_minor, p.status, p.was_collected, p.chargeback_cancelled,"
    "       coalesce((SELECT string_agg(r.status || ' ' || r.amount_minor, ' ' ORDER BY r.id) FROM refunds r"
    "                 WHERE r.payment_id = p.id AND r.currency = p.currency), ''),"
    "       coalesce((SELECT string_agg(d.status || ' ' || d.amount_minor, ' ' ORDER BY d.id) FROM disputes d"
    "                 WHERE d.payment_id = p.id AND d.currency = p.currency), ''),"
    "       p.id, coalesce(p.paid_on::text, '')"
    " FROM payments p"
    " WHERE p.organisation_id = $1::bigint AND p.provider IN ('stripe', 'gocardless')"
    "   AND (p.xero_tenant_id, p.xero_invoice_id) IN"
    "       (SELECT t::text, v FROM unnest($2::uuid[], $3::uuid[]) AS k(t, v))"
    " ORDER BY p.xero_tenant_id, p.xero_invoice_id, p.id";

static const char sql_store[] = "SELECT pay_store_states($1::bigint, $2::jsonb, $3::bigint, $4)";
/* The write-backs of these invoices whose payment is linked to no invoice any more (its metadata no longer names
 * one, or names one not mirrored): what Xero holds for them on the old invoice is taken off again. A payment moved
 * to another invoice needs nothing here: that invoice is reconciled too, and its plan moves the row. */
static const char sql_unlinked[] =
    "SELECT xero_writeback_plan($1::bigint, w.payment_id, w.tenant_id, w.invoice_id, w.currency, 0, w.paid_on, $4)"
    " FROM xero_writebacks w JOIN payments p ON p.id = w.payment_id"
    " WHERE w.organisation_id = $1::bigint AND p.xero_invoice_id IS NULL AND w.target_minor <> 0"
    "   AND (w.tenant_id, w.invoice_id) IN (SELECT * FROM unnest($2::uuid[], $3::uuid[]))"
    " ORDER BY w.id";
static const char sql_plan[] =
    "SELECT xero_writeback_plan($1::bigint, (e ->> 'payment_id')::bigint, (e ->> 'tenant')::uuid,"
    " (e ->> 'invoice')::uuid, e ->> 'currency', (e ->> 'target')::bigint, nullif(e ->> 'paid_on', '')::date, $3)"
    " FROM jsonb_array_elements($2::jsonb) AS e";

static int word_index(const char *word, const char *const *words, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        if (strcmp(word, words[i]) == 0)
            return (int)i;
    return -1;
}

#define WORD_INDEX(w, words) word_index((w), (words), sizeof(words) / sizeof((words)[0]))

/* The enums of reconcile.h, in their order, by the providers' own words. */
static const char *const stripe_pi_words[] = {"requires_payment_method",
                                              "requires_confirmation",
                                              "requires_action",
                                              "processing",
                                              "requires_capture",
                                              "canceled",
                                              "succeeded"};
static const char *const stripe_refund_words[] = {"pending", "requires_action", "succeeded", "failed", "canceled"};
static const char *const stripe_dispute_words[] = {"warning_needs_response",
                                                   "warning_under_review",
                                                   "warning_closed",
                                                   "needs_response",
                                                   "under_review",
                                                   "won",
                                                   "lost"};
static const char *const gc_words[] = {"pending_customer_approval",
                                       "pending_submission",
                                       "submitted",
                                       "confirmed",
                                       "paid_out",
                                       "cancelled",
                                       "customer_approval_denied",
                                       "failed",
                                       "charged_back"};

/* A "status amount status amount ..." list into refunds or disputes (one of them non-NULL), up to cap. Unknown
 * statuses are left out (they count nowhere). Returns how many. */
static size_t parse_children(char *list, gw_stripe_refund_t *refunds, gw_stripe_dispute_t *disputes, size_t cap)
{
    size_t n = 0;
    char *save = NULL;
    for (char *status = strtok_r(list, " ", &save); status != NULL && n != cap; status = strtok_r(NULL, " ", &save)) {
        char *amount = strtok_r(NULL, " ", &save);
        if (amount == NULL)
            break;
        int k = refunds != NULL ? WORD_INDEX(status, stripe_refund_words) : WORD_INDEX(status, stripe_dispute_words);
        if (k < 0)
            continue;
        int64_t a = strtoll(amount, NULL, 10);
        if (refunds != NULL)
            refunds[n++] = (gw_stripe_refund_t){a, (gw_stripe_refund_status_t)k};
        else
            disputes[n++] = (gw_stripe_dispute_t){a, (gw_stripe_dispute_status_t)k};
    }
    return n;
}

static size_t count_words(const char *s)
{
    size_t n = 0;
    for (bool in = false; *s != '\0'; ++s) {
        if (*s != ' ' && !in)
            ++n;
        in = *s != ' ';
    }
    return n;
}

/* What one invoice needs from the two queries. */
typedef struct st_inv_t {
    const char *tenant, *invoice;
    gw_invoice_facts_t facts;
    const char *problem; /* set: not reconcilable */
    gw_pay_facts_t *pays;
    size_t npays;
    size_t nxero; /* pays[0..nxero) are Xero's own, the others Stripe's and GoCardless's */
    size_t *prow; /* for those: their row of sql_payments */
    void **owned; /* what the facts point into */
    size_t nowned;
} inv_t;

static void inv_free(inv_t *v)
{
    free(v->pays);
    free(v->prow);
    for (size_t i = 0; i != v->nowned; ++i)
        free(v->owned[i]);
    free(v->owned);
}

static void *own(inv_t *v, void *p)
{
    v->owned = gw_xrealloc(v->owned, sizeof(*v->owned) * (v->nowned + 1));
    return v->owned[v->nowned++] = p;
}

/* The invoice's own facts from a row of sql_invoices, and its Xero-recorded payments. */
static void load_invoice(inv_t *v, gw_dbs_result_t *r, size_t row)
{
    v->tenant = gw_dbs_value(r, row, 0);
    v->invoice = gw_dbs_value(r, row, 1);
    const char *cur = gw_dbs_value(r, row, 2), *status = gw_dbs_value(r, row, 5);
    int e = gw_currency_exponent(cur);
    if (e < 0 || gw_currency_normalise(cur, v->facts.currency) != 0) {
        v->problem = *cur == '\0' ? "the invoice has no currency" : "the invoice's currency is not an ISO 4217 code";
        return;
    }
    const char *total = gw_dbs_value(r, row, 3), *credited = gw_dbs_value(r, row, 4);
    if (gw_money_parse(total, strlen(total), e, &v->facts.total) != 0 ||
        gw_money_parse(credited, strlen(credited), e, &v->facts.credited) != 0) {
        v->problem = "the invoice's total or credits are not exact amounts of its currency";
        return;
    }
    v->facts.status = strcmp(status, "VOIDED") == 0    ? GW_INVOICE_VOIDED
                      : strcmp(status, "DELETED") == 0 ? GW_INVOICE_DELETED
                                                       : GW_INVOICE_OPEN;
    /* Xero's own payments: amounts of the invoice's currency */
    char *list = own(v, gw_xstrdup(gw_dbs_value(r, row, 6))), *save = NULL;
    size_t cap = count_words(list);
    if (cap == 0)
        return;
    v->pays = gw_xcalloc(cap, sizeof(*v->pays));
    for (char *a = strtok_r(list, " ", &save); a != NULL; a = strtok_r(NULL, " ", &save)) {
        gw_pay_facts_t *p = &v->pays[v->npays];
        *p = (gw_pay_facts_t){.provider = GW_PAY_XERO};
        memcpy(p->currency, v->facts.currency, 4);
        if (gw_money_parse(a, strlen(a), e, &p->amount) != 0 || p->amount < 0) {
            v->problem = "a payment recorded in Xero is not an exact amount of the invoice's currency";
            return;
        }
        if (strcmp(gw_dbs_value(r, row, 7), "t") != 0) { /* AmountPaid: without what settled wrote back */
            int64_t ours = strtoll(gw_dbs_value(r, row, 8), NULL, 10);
            p->amount = p->amount > ours ? p->amount - ours : 0;
        }
        ++v->npays;
    }
}

/* Appends the payment of row r of sql_payments to v. */
static void load_payment(inv_t *v, gw_dbs_result_t *r, size_t row)
{
    const char *provider = gw_dbs_value(r, row, 2), *status = gw_dbs_value(r, row, 7);
    gw_pay_facts_t p = {.amount = strtoll(gw_dbs_value(r, row, 4), NULL, 10)};
    snprintf(p.currency, sizeof(p.currency), "%s", gw_dbs_value(r, row, 3));
    if (strcmp(provider, "stripe") == 0) {
        int k = WORD_INDEX(status, stripe_pi_words);
        p.provider = GW_PAY_STRIPE;
        p.u.stripe.status = k >= 0 ? (gw_stripe_pi_status_t)k : GW_STRIPE_PI_REQUIRES_PAYMENT_METHOD;
        p.u.stripe.amount_received = strtoll(gw_dbs_value(r, row, 5), NULL, 10);
        char *refunds = gw_xstrdup(gw_dbs_value(r, row, 10)), *disputes = gw_xstrdup(gw_dbs_value(r, row, 11));
        size_t nr = count_words(refunds) / 2, nd = count_words(disputes) / 2;
        if (nr != 0) {
            gw_stripe_refund_t *a = own(v, gw_xcalloc(nr, sizeof(*a)));
            p.u.stripe.nrefunds = parse_children(refunds, a, NULL, nr);
            p.u.stripe.refunds = a;
        }
        if (nd != 0) {
            gw_stripe_dispute_t *a = own(v, gw_xcalloc(nd, sizeof(*a)));
            p.u.stripe.ndisputes = parse_children(disputes, NULL, a, nd);
            p.u.stripe.disputes = a;
        }
        free(refunds);
        free(disputes);
    } else {
        int k = WORD_INDEX(status, gc_words);
        p.provider = GW_PAY_GOCARDLESS;
        p.u.gc.status = k >= 0 ? (gw_gc_status_t)k : GW_GC_PENDING_SUBMISSION;
        p.u.gc.amount_refunded = strtoll(gw_dbs_value(r, row, 6), NULL, 10);
        p.u.gc.was_collected = strcmp(gw_dbs_value(r, row, 8), "t") == 0;
        p.u.gc.chargeback_cancelled = strcmp(gw_dbs_value(r, row, 9), "t") == 0;
    }
    v->pays = gw_xrealloc(v->pays, sizeof(*v->pays) * (v->npays + 1));
    v->prow = gw_xrealloc(v->prow, sizeof(*v->prow) * (v->npays + 1 - v->nxero));
    v->prow[v->npays - v->nxero] = row;
    v->pays[v->npays++] = p;
}

/* What Xero should hold for each Stripe and GoCardless payment of v (docs/reconciliation.md, Write-back): its own
 * net contribution (paid - refunded - charged back - late failed, never below 0) when it is in the invoice's
 * currency and the invoice is open, else nothing. Appended to plans. */
static void writeback_targets(const inv_t *v, gw_dbs_result_t *rp, json_t *plans)
{
    for (size_t i = v->nxero; i != v->npays; ++i) {
        const gw_pay_facts_t *p = &v->pays[i];
        int64_t target = 0;
        gw_invoice_facts_t alone = {.status = GW_INVOICE_OPEN};
        memcpy(alone.currency, v->facts.currency, sizeof(alone.currency));
        gw_reconciled_t rc;
        if (v->problem == NULL && v->facts.status == GW_INVOICE_OPEN && strcmp(p->currency, v->facts.currency) == 0 &&
            gw_reconcile(&alone, p, 1, &rc) == 0 && rc.net_paid > 0)
            target = rc.net_paid;
        size_t row = v->prow[i - v->nxero];
        json_array_append_new(plans,
                              json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}", "payment_id", gw_dbs_value(rp, row, 12),
                                        "tenant", v->tenant, "invoice", v->invoice, "currency", p->currency, "target",
                                        (json_int_t)target, "paid_on", gw_dbs_value(rp, row, 13)));
    }
}

static json_t *state_json(const inv_t *v)
{
    json_t *o = json_pack("{s:s, s:s}", "tenant_id", v->tenant, "invoice_id", v->invoice);
    gw_reconciled_t rc;
    const char *problem = v->problem;
    if (problem == NULL && gw_reconcile(&v->facts, v->pays, v->npays, &rc) != 0)
        problem = "the amounts do not fit 64-bit minor units";
    if (problem != NULL) {
        json_object_set_new(o, "state", json_string("not_reconcilable"));
        json_object_set_new(o, "problem", json_string(problem));
        if (v->facts.currency[0] != '\0')
            json_object_set_new(o, "currency", json_string(v->facts.currency));
        return o;
    }
    const struct {
        const char *name;
        int64_t value;
    } amounts[] = {{"due_minor", rc.due},
                   {"paid_minor", rc.paid},
                   {"pending_minor", rc.pending},
                   {"refunded_minor", rc.refunded},
                   {"charged_back_minor", rc.charged_back},
                   {"late_failed_minor", rc.late_failed},
                   {"disputed_minor", rc.disputed},
                   {"net_paid_minor", rc.net_paid},
                   {"outstanding_minor", rc.outstanding}};
    json_object_set_new(o, "currency", json_string(v->facts.currency));
    for (size_t i = 0; i != sizeof(amounts) / sizeof(amounts[0]); ++i)
        json_object_set_new(o, amounts[i].name, json_integer((json_int_t)amounts[i].value));
    json_object_set_new(o, "state", json_string(gw_invoice_pay_state_name(rc.state)));
    json_t *flags = json_array();
    for (unsigned b = 0; b != GW_FLAG_COUNT_; ++b)
        if (rc.flags & (1u << b))
            json_array_append_new(flags, json_string(gw_reconcile_flag_name(1u << b)));
    json_object_set_new(o, "flags", flags);
    return o;
}

/* "{a,b,c}" of the tenants or the invoices of refs. */
static char *uuid_array(const gw_invoice_ref_t *refs, size_t n, bool invoices)
{
    char *s = gw_xmalloc(3 + n * 38);
    size_t len = 0;
    s[len++] = '{';
    for (size_t i = 0; i != n; ++i)
        len += (size_t)sprintf(s + len, "%s%s", i != 0 ? "," : "", invoices ? refs[i].invoice : refs[i].tenant);
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

int gw_payments_reconcile(gw_dbs_t *db, int64_t org, const gw_invoice_ref_t *refs, size_t n, const char *event_id,
                          const char *correlation, gw_err_t *err)
{
    if (n == 0)
        return 0;
    char orgs[24], *tenants = uuid_array(refs, n, false), *invoices = uuid_array(refs, n, true);
    snprintf(orgs, sizeof(orgs), "%lld", (long long)org);
    const char *params[] = {orgs, tenants, invoices};
    int rc = -1;
    /* the organisation's audit lock before any row lock, as every writer of the organisation takes them */
    gw_dbs_result_t *ri = NULL, *rp = NULL;
    if (gw_dbs_exec(db, "SELECT audit_lock($1::bigint)", 1, params) < 0 ||
        (ri = gw_dbs_query(db, sql_invoices, 3, params)) == NULL ||
        (rp = gw_dbs_query(db, sql_payments, 3, params)) == NULL) {
        rc = gw_dbs_err(db, err);
        goto Exit;
    }
    size_t ninv = gw_dbs_nrows(ri), np = gw_dbs_nrows(rp), k = 0;
    json_t *states = json_array(), *plans = json_array();
    for (size_t i = 0; i != ninv; ++i) {
        inv_t v = {0};
        load_invoice(&v, ri, i);
        v.nxero = v.npays;
        /* both queries are ordered by (tenant, invoice) */
        for (; k != np; ++k) {
            int c = strcmp(gw_dbs_value(rp, k, 0), v.tenant);
            if (c == 0)
                c = strcmp(gw_dbs_value(rp, k, 1), v.invoice);
            if (c > 0)
                break;
            if (c == 0 && v.problem == NULL)
                load_payment(&v, rp, k);
        }
        json_array_append_new(states, state_json(&v));
        writeback_targets(&v, rp, plans);
        inv_free(&v);
    }
    char *doc = json_dumps(states, JSON_COMPACT);
    json_decref(states);
    const char *sp[] = {orgs, doc, event_id, correlation};
    gw_dbs_result_t *rs = gw_dbs_query(db, sql_store, 4, sp);
    free(doc);
    if (rs == NULL) {
        json_decref(plans);
        rc = gw_dbs_err(db, err);
        goto Exit;
    }
    gw_dbs_result_free(rs);
    /* the write-back outbox, in the same transaction as the facts (xero_writeback.h sends it) */
    doc = json_dumps(plans, JSON_COMPACT);
    json_decref(plans);
    const char *wp[] = {orgs, doc, correlation};
    rs = gw_dbs_query(db, sql_plan, 3, wp);
    free(doc);
    if (rs == NULL) {
        rc = gw_dbs_err(db, err);
        goto Exit;
    }
    gw_dbs_result_free(rs);
    const char *up[] = {orgs, tenants, invoices, correlation};
    if ((rs = gw_dbs_query(db, sql_unlinked, 4, up)) == NULL) {
        rc = gw_dbs_err(db, err);
        goto Exit;
    }
    gw_dbs_result_free(rs);
    rc = 0;
Exit:
    gw_dbs_result_free(ri);
    gw_dbs_result_free(rp);
    free(tenants);
    free(invoices);
    return rc;
}

/* ---- one group of events: fetching and applying ---- */

/* A set of object ids (provider ids are short ASCII strings), in first-seen order. */
typedef struct st_idset_t {
    char **v;
    size_t n;
} idset_t;

static void idset_add(idset_t *s, const char *id)
{
    if (id == NULL || *id == '\0')
        return;
    for (size_t i = 0; i != s->n; ++i)
        if (strcmp(s->v[i], id) == 0)
            return;
    s->v = gw_xrealloc(s->v, sizeof(*s->v) * (s->n + 1));
    s->v[s->n++] = gw_xstrdup(id);
}

static void idset_free(idset_t *s)
{
    for (size_t i = 0; i != s->n; ++i)
        free(s->v[i]);
    free(s->v);
    *s = (idset_t){0};
}

/* The rows of one (organisation, account) of a claim, and how their processing went. */
typedef struct st_run_t {
    gw_work_t *w;
    const char *provider; /* "stripe" or "gocardless" */
    int64_t org;
    char orgs[24];
    const char *account; /* Stripe: the connected account (NULL: the platform); GoCardless: the creditor */
    const char *source;  /* the webhook source whose API key calls the provider (NULL: the default source) */
    const char *event_id, *correlation, *observed_at;
    const char **ignore; /* per row: why it is ignored, or NULL */
    bool failed;
    gw_fetch_result_t fail; /* the first failure (res empty) */
    idset_t wanted;         /* Xero InvoiceIDs the payments named that are not mirrored */
    /* settled sync: a progress line on stderr, and how many objects were applied of how many */
    bool progress;
    size_t total, applied;
    int max_pages;  /* of one list (0: MAX_LIST_PAGES) */
    bool stoppable; /* *w->stop ends the run between two objects */
} run_t;

static void run_fail(run_t *r, const gw_fetch_result_t *res)
{
    if (r->failed)
        return;
    r->failed = true;
    r->fail = *res;
    memset(&r->fail.res, 0, sizeof(r->fail.res));
}

static void run_fail_db(run_t *r, const char *what, const gw_err_t *err)
{
    gw_fetch_result_t res = {.status = GW_FETCH_FAILED};
    snprintf(res.error, sizeof(res.error), "%s failed: %s", what, err->detail);
    run_fail(r, &res);
}

/* One object applied (or tried). */
static void tick(run_t *r)
{
    if (r->failed)
        return;
    if (r->stoppable && *r->w->stop) {
        gw_fetch_result_t res = {.status = GW_FETCH_RESCHEDULE};
        snprintf(res.error, sizeof(res.error), "stopped");
        run_fail(r, &res);
        return;
    }
    ++r->applied;
    if (r->progress && (r->applied % 10 == 0 || r->applied == r->total))
        fprintf(stderr, "\r  %s: applied %zu of %zu objects", r->provider, r->applied, r->total);
}

/* GET path of the run's provider as a JSON object (the caller json_decrefs it), or NULL with the failure
 * recorded. */
static json_t *get_json(run_t *r, const char *path)
{
    if (r->failed)
        return NULL;
    gw_fetch_call_t call = {.provider = r->provider, .path = path, .account = r->account, .source = r->source};
    gw_fetch_result_t res = {0};
    if (gw_fetch(&r->w->fetch, &call, &res) != GW_FETCH_OK) {
        run_fail(r, &res);
        return NULL;
    }
    json_t *doc = json_loadb(res.res.body, res.res.body_len, 0, NULL);
    gw_http_response_free(&res.res);
    if (!json_is_object(doc)) {
        json_decref(doc);
        res = (gw_fetch_result_t){.status = GW_FETCH_REJECTED, .http_status = res.http_status};
        snprintf(res.error, sizeof(res.error), "%s answered %.200s without a JSON object", r->provider, path);
        run_fail(r, &res);
        return NULL;
    }
    return doc;
}

/* GET /<collection>/<id>[?query] as the object (GoCardless wraps it in {"<collection>": {...}}). */
static json_t *get_object(run_t *r, const char *collection, const char *id, const char *query)
{
    char path[512];
    bool stripe = strcmp(r->provider, "stripe") == 0;
    snprintf(path, sizeof(path), "%s/%s/%s%s%s", stripe ? "/v1" : "", collection, id, query != NULL ? "?" : "",
             query != NULL ? query : "");
    json_t *doc = get_json(r, path);
    if (doc == NULL || stripe)
        return doc;
    json_t *o = json_incref(json_object_get(doc, collection));
    json_decref(doc);
    if (!json_is_object(o)) {
        json_decref(o);
        gw_fetch_result_t res = {.status = GW_FETCH_REJECTED, .http_status = 200};
        snprintf(res.error, sizeof(res.error), "GoCardless answered %.200s without a %.40s object", path, collection);
        run_fail(r, &res);
        return NULL;
    }
    return o;
}

/* Every element of a list, following the provider's pagination (Stripe: has_more and starting_after; GoCardless:
 * meta.cursors.after), as one JSON array; NULL with the failure recorded. query holds the filter. */
static json_t *get_list(run_t *r, const char *collection, const char *query)
{
    bool stripe = strcmp(r->provider, "stripe") == 0;
    json_t *all = json_array();
    char cursor[256] = "";
    int max_pages = r->max_pages > 0 ? r->max_pages : MAX_LIST_PAGES;
    for (int page = 0; page != max_pages; ++page) {
        char path[768];
        snprintf(path, sizeof(path), "%s/%s?%s&limit=%d%s%s", stripe ? "/v1" : "", collection, query,
                 stripe ? 100 : 500,
                 *cursor == '\0' ? ""
                 : stripe        ? "&starting_after="
                                 : "&after=",
                 cursor);
        json_t *doc = get_json(r, path);
        if (doc == NULL) {
            json_decref(all);
            return NULL;
        }
        json_t *items = json_object_get(doc, stripe ? "data" : collection);
        if (!json_is_array(items)) {
            json_decref(doc);
            json_decref(all);
            gw_fetch_result_t res = {.status = GW_FETCH_REJECTED, .http_status = 200};
            snprintf(res.error, sizeof(res.error), "%s answered %.200s without a list", r->provider, path);
            run_fail(r, &res);
            return NULL;
        }
        json_array_extend(all, items);
        const char *next = NULL;
        if (stripe && json_is_true(json_object_get(doc, "has_more")) && json_array_size(items) != 0)
            next = json_string_value(json_object_get(json_array_get(items, json_array_size(items) - 1), "id"));
        else if (!stripe)
            next =
                json_string_value(json_object_get(json_object_get(json_object_get(doc, "meta"), "cursors"), "after"));
        snprintf(cursor, sizeof(cursor), "%s", next != NULL ? next : "");
        json_decref(doc);
        if (*cursor == '\0')
            return all;
    }
    json_decref(all);
    gw_fetch_result_t res = {.status = GW_FETCH_REJECTED, .http_status = 200};
    snprintf(res.error, sizeof(res.error), "%s: more than %d pages of %s for %.100s", r->provider, max_pages,
             collection, query);
    run_fail(r, &res);
    return NULL;
}

/* The id of a reference that may be an id or an expanded object. */
static const char *ref_id(const json_t *v)
{
    return json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, "id"));
}

/* One statement applied in a transaction, and the invoices it returns reconciled in the same one. */
typedef struct st_apply_t {
    run_t *run;
    const char *sql;
    const char *params[8];
    int nparams;
    bool returns_invoices; /* rows of (tenant_id, invoice_id, wanted) */
    idset_t wanted;
} apply_t;

static int apply_body(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    apply_t *a = arg;
    idset_free(&a->wanted);
    gw_dbs_result_t *r = gw_dbs_query(s, a->sql, a->nparams, a->params);
    if (r == NULL)
        return gw_dbs_err(s, err);
    size_t n = a->returns_invoices ? gw_dbs_nrows(r) : 0, k = 0;
    gw_invoice_ref_t *refs = gw_xcalloc(n + 1, sizeof(*refs));
    for (size_t i = 0; i != n; ++i) {
        const char *t = gw_dbs_value(r, i, 0), *v = gw_dbs_value(r, i, 1), *want = gw_dbs_value(r, i, 2);
        if (t != NULL && v != NULL) {
            snprintf(refs[k].tenant, sizeof(refs[k].tenant), "%s", t);
            snprintf(refs[k].invoice, sizeof(refs[k].invoice), "%s", v);
            ++k;
        }
        if (want != NULL && strlen(want) == 36) /* a Xero InvoiceID the mirror may fetch */
            idset_add(&a->wanted, want);
    }
    gw_dbs_result_free(r);
    int rc = gw_payments_reconcile(s, a->run->org, refs, k, a->run->event_id, a->run->correlation, err);
    free(refs);
    return rc;
}

/* Applies the statement; on failure records it for the run's rows. */
static void apply(run_t *r, apply_t *a, const char *what)
{
    if (r->failed)
        return;
    a->run = r;
    gw_err_t err = GW_ERR_INIT;
    if (gw_payments_tx(&r->w->fetch, apply_body, a, &err) != 0)
        run_fail_db(r, what, &err);
    else
        for (size_t i = 0; i != a->wanted.n; ++i)
            idset_add(&r->wanted, a->wanted.v[i]);
    idset_free(&a->wanted);
}

static void apply_json(run_t *r, const char *sql, json_t *const *docs, size_t ndocs, bool returns_invoices,
                       const char *what)
{
    apply_t a = {.sql = sql, .returns_invoices = returns_invoices};
    char *texts[4] = {0};
    a.params[a.nparams++] = r->orgs;
    if (returns_invoices || strcmp(r->provider, "stripe") == 0)
        a.params[a.nparams++] = r->account;
    /* the claim time: a row keeps the newest observation (payments.sql, payment_methods.sql) */
    a.params[a.nparams++] = r->observed_at;
    for (size_t i = 0; i != ndocs && i != 4; ++i)
        a.params[a.nparams++] = texts[i] = docs[i] != NULL ? json_dumps(docs[i], JSON_COMPACT) : NULL;
    if (returns_invoices)
        a.params[a.nparams++] = r->event_id;
    a.params[a.nparams++] = r->correlation;
    apply(r, &a, what);
    for (size_t i = 0; i != 4; ++i)
        free(texts[i]);
}

/* Asks the mirror for the invoices the payments named that it does not have yet: fetched now from every Xero
 * tenant of the organisation. A failure is only logged: the payments wait linked to nothing, and the sweep asks
 * again. */
static void fetch_wanted(run_t *r)
{
    if (r->wanted.n == 0 || r->w->fetch.read_only)
        return;
    char err[300];
    if (gw_xero_mirror_fetch_invoices(&r->w->fetch, r->org, (const char *const *)r->wanted.v, r->wanted.n,
                                      r->correlation, err, sizeof(err)) != 0)
        gw_log(GW_LOG_WARN,
               "organisation %lld: fetching %zu invoice%s named by %s payments failed: %s (correlation %s)",
               (long long)r->org, r->wanted.n, r->wanted.n == 1 ? "" : "s", r->provider, err, r->correlation);
}

/* Finishes the rows: ignored (with the reason) as marked, the others as the run went. */
static void finish(run_t *r, gw_queue_row_t *const *rows, size_t n, const char *claimed_at)
{
    gw_queue_row_t **keep = gw_xcalloc(n, sizeof(*keep));
    size_t k = 0;
    for (size_t i = 0; i != n; ++i) {
        if (r->ignore[i] != NULL)
            gw_queue_ignore(&r->w->queue, &rows[i], 1, r->ignore[i]);
        else
            keep[k++] = rows[i];
    }
    if (r->failed && r->fail.http_status != 0 && !r->fail.outage)
        gw_circuit_success(&r->w->queue, r->provider, r->account != NULL ? r->account : "");
    if (k == 0) {
        free(keep);
        return;
    }
    if (!r->failed) {
        gw_queue_finish(&r->w->queue, keep, k, GW_QUEUE_DONE);
        /* rows of the same objects stored before the claim and still waiting: the state just fetched covers them */
        for (size_t i = 0; i != k; ++i) {
            const char *dot = strchr(keep[i]->event_type, '.');
            char category[64];
            snprintf(category, sizeof(category), "%.*s",
                     (int)(dot != NULL ? dot - keep[i]->event_type : (ptrdiff_t)strlen(keep[i]->event_type)),
                     keep[i]->event_type);
            const char *ids[] = {keep[i]->resource_id};
            if (keep[i]->resource_id != NULL)
                (void)gw_queue_cover(&r->w->queue, keep[i], category, ids, 1, claimed_at);
        }
        gw_circuit_success(&r->w->queue, r->provider, r->account != NULL ? r->account : "");
    } else {
        switch (r->fail.status) {
        case GW_FETCH_RESCHEDULE:
        case GW_FETCH_REAUTH:
            gw_queue_reschedule(&r->w->queue, keep, k, r->fail.wait_ms, r->fail.error);
            break;
        case GW_FETCH_REJECTED:
            gw_queue_fail(&r->w->queue, keep, k, GW_QUEUE_PERMANENT, r->fail.error);
            break;
        default:
            gw_queue_fail(&r->w->queue, keep, k, r->fail.outage ? GW_QUEUE_OUTAGE : GW_QUEUE_TRANSIENT, r->fail.error);
            break;
        }
    }
    free(keep);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* A provider id fit for a URL path: letters, digits and '_' only. */
static bool is_id(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 255)
        return false;
    for (; *s != '\0'; ++s)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
            return false;
    return true;
}

/* ---- Stripe ---- */

static const char sql_stripe_payment[] =
    "SELECT tenant_id, invoice_id, wanted FROM pay_apply_stripe($1::bigint, $2, $3::timestamptz, $4::jsonb, $5::jsonb,"
    " $6::jsonb, $7::bigint, $8)";
static const char sql_stripe_pm[] =
    "SELECT pm_apply_stripe_payment_method($1::bigint, $2, $3::timestamptz, $4::jsonb, $5)";
static const char sql_stripe_setup[] =
    "SELECT pm_apply_stripe_setup_intent($1::bigint, $2, $3::timestamptz, $4::jsonb, $5)";
static const char sql_stripe_customer[] =
    "SELECT pm_apply_stripe_customer($1::bigint, $2, $3::timestamptz, $4::jsonb, $5)";

typedef struct st_stripe_sets_t {
    idset_t pis, charges, setups, pms, customers;
} stripe_sets_t;

/* Where a fetched charge, refund or dispute leads: its PaymentIntent, else its Charge. */
static void stripe_follow(stripe_sets_t *s, json_t *obj, bool is_charge)
{
    const char *pi = ref_id(json_object_get(obj, "payment_intent"));
    if (pi != NULL)
        idset_add(&s->pis, pi);
    else
        idset_add(&s->charges, is_charge ? ref_id(obj) : ref_id(json_object_get(obj, "charge")));
}

/* Resolves row i to the objects to fetch, or marks it ignored. */
static void stripe_resolve(run_t *r, stripe_sets_t *s, gw_queue_row_t *row, size_t i)
{
    const char *t = row->event_type, *id = row->resource_id;
    if (!is_id(id)) {
        r->ignore[i] = "the event names no Stripe object settled can fetch";
        return;
    }
    json_t *o = NULL;
    if (starts_with(t, "payment_intent.")) {
        idset_add(&s->pis, id);
    } else if (starts_with(t, "charge.dispute.")) {
        if ((o = get_object(r, "disputes", id, NULL)) != NULL)
            stripe_follow(s, o, false);
    } else if (starts_with(t, "refund.") || strcmp(t, "charge.refund.updated") == 0) {
        if ((o = get_object(r, "refunds", id, NULL)) != NULL)
            stripe_follow(s, o, false);
    } else if (starts_with(t, "charge.")) {
        if ((o = get_object(r, "charges", id, NULL)) != NULL)
            stripe_follow(s, o, true);
    } else if (starts_with(t, "checkout.session.")) {
        if ((o = get_object(r, "checkout/sessions", id, NULL)) != NULL) {
            const char *mode = json_string_value(json_object_get(o, "mode"));
            const char *pi = ref_id(json_object_get(o, "payment_intent"));
            const char *seti = ref_id(json_object_get(o, "setup_intent"));
            if (pi != NULL)
                idset_add(&s->pis, pi);
            else if (seti != NULL)
                idset_add(&s->setups, seti);
            else
                r->ignore[i] = mode != NULL && strcmp(mode, "subscription") == 0
                                   ? "a subscription checkout session: settled does not use Stripe subscriptions"
                                   : "the checkout session has no PaymentIntent or SetupIntent (yet)";
        }
    } else if (starts_with(t, "setup_intent.")) {
        idset_add(&s->setups, id);
    } else if (starts_with(t, "payment_method.")) {
        idset_add(&s->pms, id);
    } else if (starts_with(t, "customer.")) {
        idset_add(&s->customers, id);
    } else {
        r->ignore[i] = "settled does not use this Stripe event type (docs/providers.md)";
    }
    json_decref(o);
}

/* Fetches payment id (a PaymentIntent or a lone Charge) with all its refunds and disputes and applies it. */
static void stripe_payment(run_t *r, const char *id, bool charge)
{
    char filter[320];
    snprintf(filter, sizeof(filter), "%s=%s", charge ? "charge" : "payment_intent", id);
    json_t *docs[3] = {charge ? get_object(r, "charges", id, NULL)
                              : get_object(r, "payment_intents", id, "expand%5B%5D=latest_charge"),
                       NULL, NULL};
    if (docs[0] != NULL)
        docs[1] = get_list(r, "refunds", filter);
    if (docs[1] != NULL)
        docs[2] = get_list(r, "disputes", filter);
    if (docs[2] != NULL)
        apply_json(r, sql_stripe_payment, docs, 3, true, "applying a Stripe payment");
    for (size_t i = 0; i != 3; ++i)
        json_decref(docs[i]);
}

static void stripe_apply_one(run_t *r, const char *collection, const char *id, const char *query, const char *sql,
                             const char *what)
{
    json_t *o = get_object(r, collection, id, query);
    if (o != NULL)
        apply_json(r, sql, &o, 1, false, what);
    json_decref(o);
}

/* Fetches and applies every object of s, payments first; then frees s. */
static void stripe_apply_sets(run_t *r, stripe_sets_t *s)
{
    /* charges that belong to no PaymentIntent are payments of their own */
    for (size_t i = 0; i != s->charges.n && !r->failed; ++i, tick(r))
        stripe_payment(r, s->charges.v[i], true);
    for (size_t i = 0; i != s->pis.n && !r->failed; ++i, tick(r))
        stripe_payment(r, s->pis.v[i], false);
    for (size_t i = 0; i != s->customers.n && !r->failed; ++i, tick(r))
        stripe_apply_one(r, "customers", s->customers.v[i], NULL, sql_stripe_customer, "applying a Stripe customer");
    for (size_t i = 0; i != s->setups.n && !r->failed; ++i, tick(r))
        stripe_apply_one(r, "setup_intents", s->setups.v[i], "expand%5B%5D=payment_method", sql_stripe_setup,
                         "applying a Stripe SetupIntent");
    for (size_t i = 0; i != s->pms.n && !r->failed; ++i, tick(r))
        stripe_apply_one(r, "payment_methods", s->pms.v[i], "expand%5B%5D=customer", sql_stripe_pm,
                         "applying a Stripe PaymentMethod");
    idset_free(&s->pis);
    idset_free(&s->charges);
    idset_free(&s->setups);
    idset_free(&s->pms);
    idset_free(&s->customers);
}

static void stripe_group(run_t *r, gw_queue_row_t *const *rows, size_t n)
{
    stripe_sets_t s = {0};
    for (size_t i = 0; i != n && !r->failed; ++i)
        stripe_resolve(r, &s, rows[i], i);
    stripe_apply_sets(r, &s);
}

/* Where a listed object (or an event's snapshot of one) leads, without fetching it again. */
static void stripe_note(stripe_sets_t *s, json_t *o)
{
    const char *kind = json_string_value(json_object_get(o, "object")), *id = ref_id(o);
    if (kind == NULL || !is_id(id))
        return;
    if (strcmp(kind, "payment_intent") == 0)
        idset_add(&s->pis, id);
    else if (strcmp(kind, "charge") == 0 || strcmp(kind, "refund") == 0 || strcmp(kind, "dispute") == 0)
        stripe_follow(s, o, strcmp(kind, "charge") == 0);
    else if (strcmp(kind, "checkout.session") == 0) {
        idset_add(&s->pis, ref_id(json_object_get(o, "payment_intent")));
        idset_add(&s->setups, ref_id(json_object_get(o, "setup_intent")));
    } else if (strcmp(kind, "setup_intent") == 0)
        idset_add(&s->setups, id);
    else if (strcmp(kind, "payment_method") == 0)
        idset_add(&s->pms, id);
    else if (strcmp(kind, "customer") == 0)
        idset_add(&s->customers, id);
}

/* ---- GoCardless ---- */

static const char sql_gc_payment[] =
    "SELECT tenant_id, invoice_id, wanted FROM pay_apply_gocardless($1::bigint, $2, $3::timestamptz, $4::jsonb,"
    " $5::jsonb, $6::jsonb, $7::bigint, $8)";
static const char sql_gc_mandate[] =
    "SELECT pm_apply_gocardless_mandate($1::bigint, $2::timestamptz, $3::jsonb, $4::jsonb, $5::jsonb, $6)";
static const char sql_gc_customer[] = "SELECT pm_apply_gocardless_customer($1::bigint, $2::timestamptz, $3::jsonb, $4)";

typedef struct st_gc_sets_t {
    idset_t payments, mandates, customers;
} gc_sets_t;

static void gc_resolve(run_t *r, gc_sets_t *s, gw_queue_row_t *row, size_t i)
{
    const char *t = row->event_type, *id = row->resource_id;
    if (!is_id(id)) {
        r->ignore[i] = "the event names no GoCardless object settled can fetch";
        return;
    }
    json_t *o = NULL;
    if (starts_with(t, "payments.")) {
        idset_add(&s->payments, id);
    } else if (starts_with(t, "refunds.")) {
        if ((o = get_object(r, "refunds", id, NULL)) != NULL)
            idset_add(&s->payments, json_string_value(json_object_get(json_object_get(o, "links"), "payment")));
    } else if (starts_with(t, "mandates.")) {
        idset_add(&s->mandates, id);
    } else if (starts_with(t, "customers.")) {
        idset_add(&s->customers, id);
    } else if (starts_with(t, "billing_requests.")) {
        if ((o = get_object(r, "billing_requests", id, NULL)) != NULL) {
            json_t *links = json_object_get(o, "links");
            idset_add(&s->customers, json_string_value(json_object_get(links, "customer")));
            idset_add(&s->mandates, json_string_value(json_object_get(links, "mandate_request_mandate")));
            idset_add(&s->payments, json_string_value(json_object_get(links, "payment_request_payment")));
        }
    } else {
        r->ignore[i] = "settled does not use this GoCardless event type (docs/providers.md)";
    }
    json_decref(o);
}

static void gc_payment(run_t *r, const char *id)
{
    char filter[128];
    snprintf(filter, sizeof(filter), "payment=%s", id);
    json_t *docs[3] = {get_object(r, "payments", id, NULL), NULL, NULL};
    if (docs[0] != NULL)
        docs[1] = get_list(r, "events", filter);
    if (docs[1] != NULL)
        docs[2] = get_list(r, "refunds", filter);
    if (docs[2] != NULL)
        apply_json(r, sql_gc_payment, docs, 3, true, "applying a GoCardless payment");
    for (size_t i = 0; i != 3; ++i)
        json_decref(docs[i]);
}

/* A mandate with its bank account and customer (either may be missing: NULL is applied). */
static void gc_mandate(run_t *r, const char *id)
{
    json_t *docs[3] = {get_object(r, "mandates", id, NULL), NULL, NULL};
    json_t *links = json_object_get(docs[0], "links");
    const char *ba = json_string_value(json_object_get(links, "customer_bank_account"));
    const char *cu = json_string_value(json_object_get(links, "customer"));
    if (docs[0] != NULL && is_id(ba))
        docs[1] = get_object(r, "customer_bank_accounts", ba, NULL);
    if (docs[0] != NULL && is_id(cu))
        docs[2] = get_object(r, "customers", cu, NULL);
    if (docs[0] != NULL)
        apply_json(r, sql_gc_mandate, docs, 3, false, "applying a GoCardless mandate");
    for (size_t i = 0; i != 3; ++i)
        json_decref(docs[i]);
}

static void gc_apply_sets(run_t *r, gc_sets_t *s)
{
    for (size_t i = 0; i != s->customers.n && !r->failed; ++i, tick(r)) {
        json_t *o = get_object(r, "customers", s->customers.v[i], NULL);
        if (o != NULL)
            apply_json(r, sql_gc_customer, &o, 1, false, "applying a GoCardless customer");
        json_decref(o);
    }
    /* mandates before payments: a payment's customer is its mandate's */
    for (size_t i = 0; i != s->mandates.n && !r->failed; ++i, tick(r))
        gc_mandate(r, s->mandates.v[i]);
    for (size_t i = 0; i != s->payments.n && !r->failed; ++i, tick(r))
        gc_payment(r, s->payments.v[i]);
    idset_free(&s->payments);
    idset_free(&s->mandates);
    idset_free(&s->customers);
}

static void gc_group(run_t *r, gw_queue_row_t *const *rows, size_t n)
{
    gc_sets_t s = {0};
    for (size_t i = 0; i != n && !r->failed; ++i)
        gc_resolve(r, &s, rows[i], i);
    gc_apply_sets(r, &s);
}

/* ---- the processors ---- */

static bool same_text(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

/* Rows are fetched together when one key serves them all: the same organisation, account and source. */
static bool same_group(const gw_queue_row_t *a, const gw_queue_row_t *b)
{
    return a->organisation_id == b->organisation_id && same_text(a->account, b->account) &&
           same_text(a->source, b->source);
}

static void process_group(gw_work_t *w, const char *provider, gw_queue_row_t *const *rows, size_t n,
                          const char *claimed_at)
{
    run_t r = {.w = w,
               .provider = provider,
               .org = rows[0]->organisation_id,
               .account = rows[0]->account,
               .source = rows[0]->source,
               .event_id = rows[0]->id,
               .correlation = rows[0]->correlation,
               .observed_at = claimed_at};
    snprintf(r.orgs, sizeof(r.orgs), "%lld", (long long)r.org);
    r.ignore = gw_xcalloc(n, sizeof(*r.ignore));
    if (strcmp(provider, "stripe") == 0)
        stripe_group(&r, rows, n);
    else
        gc_group(&r, rows, n);
    finish(&r, rows, n, claimed_at);
    fetch_wanted(&r);
    idset_free(&r.wanted);
    free(r.ignore);
}

static void process(gw_work_t *w, const char *provider, gw_queue_row_t *const *rows, size_t n, const char *claimed_at)
{
    gw_queue_row_t **group = gw_xcalloc(n, sizeof(*group));
    bool *grouped = gw_xcalloc(n, sizeof(*grouped));
    for (size_t i = 0; i != n; ++i) {
        if (grouped[i])
            continue;
        size_t k = 0;
        for (size_t j = i; j != n; ++j)
            if (!grouped[j] && same_group(rows[i], rows[j])) {
                grouped[j] = true;
                group[k++] = rows[j];
            }
        process_group(w, provider, group, k, claimed_at);
    }
    free(grouped);
    free(group);
}

static void process_stripe(gw_work_t *w, gw_queue_row_t *const *rows, size_t n, const char *claimed_at)
{
    process(w, "stripe", rows, n, claimed_at);
}

static void process_gocardless(gw_work_t *w, gw_queue_row_t *const *rows, size_t n, const char *claimed_at)
{
    process(w, "gocardless", rows, n, claimed_at);
}

static int claim_delay_ms(const gw_config_t *cfg)
{
    return cfg->payments_coalesce_ms;
}

/* ---- drift repair: settled sync stripe|gocardless ---- */

#define SYNC_MAX_PAGES 1000 /* of one list: 100000 Stripe objects, 500000 GoCardless ones */

/* Stripe's events are kept 30 days: changes to objects created earlier are looked for there. */
static void stripe_sync_lists(run_t *r, stripe_sets_t *s, long long since)
{
    static const char *const lists[] = {"payment_intents", "charges", "refunds", "disputes", "checkout/sessions"};
    char q[128];
    snprintf(q, sizeof(q), "created%%5Bgte%%5D=%lld", since);
    for (size_t k = 0; k != sizeof(lists) / sizeof(lists[0]) && !r->failed; ++k) {
        json_t *items = get_list(r, lists[k], q);
        for (size_t i = 0; i != json_array_size(items); ++i)
            stripe_note(s, json_array_get(items, i));
        json_decref(items);
    }
    long long month = (long long)time(NULL) - 30LL * 86400;
    snprintf(q, sizeof(q), "created%%5Bgte%%5D=%lld", since > month ? since : month);
    json_t *events = r->failed ? NULL : get_list(r, "events", q);
    for (size_t i = 0; i != json_array_size(events); ++i)
        stripe_note(s, json_object_get(json_object_get(json_array_get(events, i), "data"), "object"));
    json_decref(events);
}

static void gc_sync_lists(run_t *r, gc_sets_t *s, const char *since_iso)
{
    char q[128];
    snprintf(q, sizeof(q), "created_at%%5Bgte%%5D=%s", since_iso);
    json_t *payments = get_list(r, "payments", q);
    for (size_t i = 0; i != json_array_size(payments); ++i)
        idset_add(&s->payments, ref_id(json_array_get(payments, i)));
    json_decref(payments);
    /* what changed since: every event names its object by a link, resolved like a webhook's */
    json_t *events = r->failed ? NULL : get_list(r, "events", q);
    const char *scratch[1];
    const char **ignore = r->ignore;
    r->ignore = scratch;
    for (size_t i = 0; i != json_array_size(events) && !r->failed; ++i) {
        json_t *e = json_array_get(events, i);
        const char *rt = json_string_value(json_object_get(e, "resource_type"));
        static const struct {
            const char *resource_type, *link;
        } links[] = {{"payments", "payment"},
                     {"refunds", "refund"},
                     {"mandates", "mandate"},
                     {"customers", "customer"},
                     {"billing_requests", "billing_request"}};
        for (size_t k = 0; rt != NULL && k != sizeof(links) / sizeof(links[0]); ++k) {
            if (strcmp(rt, links[k].resource_type) != 0)
                continue;
            char type[64];
            snprintf(type, sizeof(type), "%s.sync", rt);
            gw_queue_row_t row = {
                .event_type = type,
                .resource_id = (char *)json_string_value(json_object_get(json_object_get(e, "links"), links[k].link))};
            gc_resolve(r, s, &row, 0);
        }
    }
    r->ignore = ignore;
    json_decref(events);
}

int gw_payments_sync(gw_fetch_ctx_t *ctx, const char *provider, int64_t org, const char *source, const char *since,
                     bool progress, const atomic_bool *stop, gw_payments_sync_counts_t *counts, char *err,
                     size_t errlen)
{
    *counts = (gw_payments_sync_counts_t){0};
    /* the claim time of the fetches (convergence: payments.sql), and since as both forms the providers take */
    char *resolved = NULL;
    gw_err_t e = GW_ERR_INIT;
    if (gw_since_resolve(ctx->db, since, &resolved, &e) != 0) {
        snprintf(err, errlen, "%s", e.detail);
        return -1;
    }
    const char *p[] = {resolved};
    gw_dbs_result_t *t =
        gw_dbs_query(ctx->db,
                     "SELECT now(), extract(epoch FROM $1::timestamptz)::bigint,"
                     " to_char($1::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                     1, p);
    free(resolved);
    if (t == NULL) {
        snprintf(err, errlen, "reading the time failed: %s", gw_dbs_error(ctx->db));
        return -1;
    }
    static const atomic_bool never = false;
    gw_work_t w = {.fetch = *ctx, .stop = stop != NULL ? stop : &never};
    w.queue = (gw_queue_t){.cfg = ctx->cfg, .db = ctx->db, .index = -1};
    char observed[64], correlation[64];
    snprintf(observed, sizeof(observed), "%s", gw_dbs_value(t, 0, 0));
    snprintf(correlation, sizeof(correlation), "sync:%s", provider);
    run_t r = {.w = &w,
               .provider = strcmp(provider, "stripe") == 0 ? "stripe" : "gocardless",
               .org = org,
               .source = source,
               .correlation = correlation,
               .observed_at = observed,
               .progress = progress,
               .max_pages = SYNC_MAX_PAGES,
               .stoppable = true};
    snprintf(r.orgs, sizeof(r.orgs), "%lld", (long long)org);
    if (strcmp(r.provider, "stripe") == 0) {
        /* the platform account's objects, then those of every connected account (Stripe Connect) whose events
         * arrived through this source: the same key lists them with a Stripe-Account header */
        const char *ap[] = {r.orgs, source != NULL ? source : "default"};
        gw_dbs_result_t *accounts =
            gw_dbs_query(ctx->db,
                         "SELECT DISTINCT account FROM inbox_events WHERE organisation_id = $1::bigint"
                         " AND provider = 'stripe' AND source = $2 AND account IS NOT NULL ORDER BY 1",
                         2, ap);
        if (accounts == NULL) {
            snprintf(err, errlen, "reading the connected accounts failed: %s", gw_dbs_error(ctx->db));
            gw_dbs_result_free(t);
            return -1;
        }
        long long since_epoch = strtoll(gw_dbs_value(t, 0, 1), NULL, 10);
        for (size_t a = 0; a != gw_dbs_nrows(accounts) + 1 && !r.failed; ++a) {
            r.account = a == 0 ? NULL : gw_dbs_value(accounts, a - 1, 0);
            stripe_sets_t s = {0};
            stripe_sync_lists(&r, &s, since_epoch);
            r.total += s.pis.n + s.charges.n + s.setups.n + s.pms.n + s.customers.n;
            counts->listed = (long)r.total;
            stripe_apply_sets(&r, &s);
        }
        r.account = NULL;
        gw_dbs_result_free(accounts);
    } else {
        gc_sets_t s = {0};
        gc_sync_lists(&r, &s, gw_dbs_value(t, 0, 2));
        r.total = s.payments.n + s.mandates.n + s.customers.n;
        counts->listed = (long)r.total;
        gc_apply_sets(&r, &s);
    }
    gw_dbs_result_free(t);
    if (progress && r.total != 0)
        fputc('\n', stderr);
    counts->applied = (long)r.applied;
    fetch_wanted(&r);
    idset_free(&r.wanted);
    if (r.failed) {
        snprintf(err, errlen, "%s", r.fail.error);
        return -1;
    }
    return 0;
}

/* ---- the sweep ---- */

#define SWEEP_BATCH 500 /* the LIMIT of sql_unreconciled */

/* Invoices without a payment state (mirrored before payments existed, or whose reconciliation failed), oldest
 * first. */
static const char sql_unreconciled[] =
    "SELECT i.organisation_id, i.tenant_id, i.invoice_id FROM xero_invoices i"
    " WHERE NOT EXISTS (SELECT 1 FROM invoice_payment_states s WHERE s.organisation_id = i.organisation_id"
    "                   AND s.tenant_id = i.tenant_id AND s.invoice_id = i.invoice_id)"
    " ORDER BY i.organisation_id, i.fetched_at LIMIT 500";

/* Payments waiting for a Xero invoice the mirror does not have. */
static const char sql_waiting[] = "SELECT organisation_id, link_wanted FROM payments"
                                  " WHERE link_wanted ~ '^[0-9a-f-]{36}$' ORDER BY organisation_id, id LIMIT 50";

typedef struct st_sweep_t {
    int64_t org;
    gw_invoice_ref_t *refs;
    size_t n;
} sweep_t;

static int sweep_body(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    sweep_t *x = arg;
    return gw_payments_reconcile(s, x->org, x->refs, x->n, NULL, "sweep:payments", err);
}

static void sweep(gw_work_t *w)
{
    gw_dbs_t *db = w->fetch.db;
    for (int round = 0; round != 100 && !*w->stop; ++round) {
        gw_dbs_result_t *r = gw_dbs_query(db, sql_unreconciled, 0, NULL);
        if (r == NULL) {
            gw_log(GW_LOG_WARN, "payments sweep: listing unreconciled invoices failed: %s", gw_dbs_error(db));
            return;
        }
        size_t n = gw_dbs_nrows(r), done = 0;
        bool failed = false;
        for (size_t i = 0; i != n && !failed;) {
            sweep_t x = {.org = strtoll(gw_dbs_value(r, i, 0), NULL, 10),
                         .refs = gw_xcalloc(n, sizeof(gw_invoice_ref_t))};
            for (; i != n && strtoll(gw_dbs_value(r, i, 0), NULL, 10) == x.org; ++i, ++x.n) {
                snprintf(x.refs[x.n].tenant, sizeof(x.refs[x.n].tenant), "%s", gw_dbs_value(r, i, 1));
                snprintf(x.refs[x.n].invoice, sizeof(x.refs[x.n].invoice), "%s", gw_dbs_value(r, i, 2));
            }
            gw_err_t err = GW_ERR_INIT;
            if (gw_dbs_tx(db, sweep_body, &x, &err) != 0) {
                gw_log(GW_LOG_WARN, "payments sweep: reconciling %zu invoices of organisation %lld failed: %s", x.n,
                       (long long)x.org, err.detail);
                failed = true;
            } else {
                done += x.n;
            }
            free(x.refs);
        }
        gw_dbs_result_free(r);
        if (done != 0)
            gw_log(GW_LOG_INFO, "payments sweep: reconciled %zu invoices that had no payment state", done);
        if (failed || n < SWEEP_BATCH)
            break;
    }
    gw_dbs_result_t *r = gw_dbs_query(db, sql_waiting, 0, NULL);
    if (r == NULL)
        return;
    for (size_t i = 0; i != gw_dbs_nrows(r) && !*w->stop;) {
        int64_t org = strtoll(gw_dbs_value(r, i, 0), NULL, 10);
        idset_t ids = {0};
        for (; i != gw_dbs_nrows(r) && strtoll(gw_dbs_value(r, i, 0), NULL, 10) == org; ++i)
            idset_add(&ids, gw_dbs_value(r, i, 1));
        char err[300];
        if (gw_xero_mirror_fetch_invoices(&w->fetch, org, (const char *const *)ids.v, ids.n, "sweep:payments", err,
                                          sizeof(err)) != 0)
            gw_log(GW_LOG_WARN, "payments sweep: organisation %lld: fetching %zu invoices payments wait for failed: %s",
                   (long long)org, ids.n, err);
        idset_free(&ids);
    }
    gw_dbs_result_free(r);
}

/* The scheduled drift repair of one webhook source of a provider, for its organisation, when due. */
static void sync_source_due(gw_work_t *w, const gw_source_t *src)
{
    const gw_config_t *cfg = w->fetch.cfg;
    const char *provider = src->connector->name;
    char interval[24];
    snprintf(interval, sizeof(interval), "%d", cfg->payments_sync_interval);
    const char *p[] = {src->organisation, provider, interval, src->name};
    /* due: never synced (look a day back), or the last one ended more than the interval ago (five minutes of
     * overlap, so an object changed while the last one listed is not missed) */
    gw_dbs_result_t *r = gw_dbs_query(
        w->fetch.db,
        "SELECT o.id, coalesce(s.synced_until - interval '5 minutes', now() - interval '1 day')::text, now()::text"
        " FROM organisations o LEFT JOIN payments_sync_state s ON s.organisation_id = o.id AND s.provider = $2"
        "      AND s.source = $4"
        " WHERE o.slug = $1 AND (s.synced_until IS NULL OR s.synced_until < now() - $3::int * interval '1 second')",
        4, p);
    if (r == NULL || gw_dbs_nrows(r) != 1) {
        gw_dbs_result_free(r);
        return;
    }
    int64_t org = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
    char since[64], started[64], err[300];
    snprintf(since, sizeof(since), "%s", gw_dbs_value(r, 0, 1));
    snprintf(started, sizeof(started), "%s", gw_dbs_value(r, 0, 2));
    gw_dbs_result_free(r);
    gw_payments_sync_counts_t counts;
    if (gw_payments_sync(&w->fetch, provider, org, src->name, since, false, w->stop, &counts, err, sizeof(err)) != 0) {
        gw_log(GW_LOG_WARN, "%s drift repair of source %s (organisation %lld) failed after %ld of %ld objects: %s",
               provider, src->name, (long long)org, counts.applied, counts.listed, err);
        return;
    }
    char orgs[24];
    snprintf(orgs, sizeof(orgs), "%lld", (long long)org);
    const char *sp[] = {orgs, provider, started, src->name};
    if (gw_dbs_exec(
            w->fetch.db,
            "INSERT INTO payments_sync_state (organisation_id, provider, synced_until, source)"
            " VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (organisation_id, provider, source) DO UPDATE SET synced_until = EXCLUDED.synced_until,"
            " updated_at = now()",
            4, sp) < 0)
        gw_log(GW_LOG_WARN, "recording the %s drift repair failed: %s", provider, gw_dbs_error(w->fetch.db));
    else if (counts.listed != 0)
        gw_log(GW_LOG_INFO, "%s drift repair of source %s (organisation %lld): %ld objects listed and applied",
               provider, src->name, (long long)org, counts.applied);
}

/* The scheduled drift repair of every webhook source of provider that has an API key. */
static void sync_due(gw_work_t *w, const char *provider)
{
    const gw_config_t *cfg = w->fetch.cfg;
    if (cfg->payments_sync_interval == 0)
        return;
    for (size_t i = 0; i != cfg->nsources && !*w->stop; ++i) {
        const gw_source_t *src = &cfg->sources[i];
        if (strcmp(src->connector->name, provider) == 0 && gw_config_api_key(cfg, provider, src->name) != NULL)
            sync_source_due(w, src);
    }
}

static void periodic(gw_work_t *w)
{
    sweep(w);
    sync_due(w, "stripe");
    sync_due(w, "gocardless");
}

static int periodic_ms(const gw_config_t *cfg)
{
    (void)cfg;
    return 60000;
}

const gw_processor_t gw_stripe_processor = {
    .provider = "stripe",
    .claim_delay_ms = claim_delay_ms,
    .process = process_stripe,
    /* the payments sweep (every invoice's state, waiting payments) and both providers' scheduled drift repair
     * run once, with Stripe's */
    .periodic = periodic,
    .periodic_ms = periodic_ms,
};

const gw_processor_t gw_gocardless_processor = {
    .provider = "gocardless",
    .claim_delay_ms = claim_delay_ms,
    .process = process_gocardless,
};
