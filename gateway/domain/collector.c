/* SPDX-License-Identifier: MIT */
/*
 * collector.c: the planning rounds and the sender of automatic collection (collector.h; the outbox
 * collection_attempts and its functions in schema/functions/collections.sql), and its thread in the worker pool.
 * Modelled on the Xero write-back sender: each claim of an attempt makes one provider call, under the attempt's
 * Idempotency-Key, and records it in one statement fenced by the lease owner.
 */
#include "collector.h"
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "crypto.h"
#include "log.h"
#include "mem.h"
#include "money.h"
#include "notifications.h"
#include "xero_writeback.h"

#define WAIT_SLICE_MS 250
#define DB_RETRY_MS 1000
#define REASON_MAX 400

static const char sql_plan[] =
    "SELECT count(*) FROM collect_plan(coalesce($1::timestamptz, now()), $2::bigint, $3::integer[], $4::integer,"
    " $5::integer, $6::boolean)";
static const char sql_claim[] =
    "SELECT id, organisation_id, settled_invoice_id, invoice_id, attempt, provider, source, account,"
    "       provider_customer, payment_method, amount_minor, currency, charge_date::text, retry_if_possible, tries"
    "  FROM collect_claim($1, $2::bigint, $3::integer)";
static const char sql_begin[] = "SELECT collect_begin($1::bigint, $2)";
static const char sql_record[] = "SELECT collect_record($1::bigint, $2, $3, $4, $5, $6, $7::date)";
static const char sql_fail[] = "SELECT collect_fail($1::bigint, $2, $3, $4, $5::bigint[], $6::bigint)";
static const char sql_notices[] = "SELECT id, organisation_id, customer_id, settled_invoice_id, status, amount_minor,"
                                  " currency FROM collect_notices_due($1::integer)";
static const char sql_noticed[] = "SELECT collect_noticed($1::bigint)";
static const char sql_next_due[] = "SELECT collect_next_due_ms()";
static const char sql_release_mine[] =
    "UPDATE collection_attempts SET lease_owner = NULL, lease_until = NULL, next_attempt_at = now()"
    " WHERE lease_owner = $1 AND status IN ('planned', 'sending')";

static gw_log_limit_t db_failed_log = GW_LOG_LIMIT_INIT(GW_LOG_WARN, 60000);

/* One claimed attempt. Empty strings stand for NULL. */
typedef struct st_attempt_t {
    char id[24], organisation[24], invoice[80], xero_invoice[40], attempt[12], provider[16], source[64], account[128],
        customer[128], method[128], currency[8], charge_date[16];
    int64_t amount;
    bool retry;
    int tries;
} attempt_t;

typedef struct st_sender_t {
    gw_fetch_ctx_t *ctx;
    const char *owner;
} sender_t;

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

static void read_attempt(gw_dbs_result_t *r, size_t i, attempt_t *a)
{
    memset(a, 0, sizeof(*a));
    copy(a->id, sizeof(a->id), gw_dbs_value(r, i, 0));
    copy(a->organisation, sizeof(a->organisation), gw_dbs_value(r, i, 1));
    copy(a->invoice, sizeof(a->invoice), gw_dbs_value(r, i, 2));
    copy(a->xero_invoice, sizeof(a->xero_invoice), gw_dbs_value(r, i, 3));
    copy(a->attempt, sizeof(a->attempt), gw_dbs_value(r, i, 4));
    copy(a->provider, sizeof(a->provider), gw_dbs_value(r, i, 5));
    copy(a->source, sizeof(a->source), gw_dbs_value(r, i, 6));
    copy(a->account, sizeof(a->account), gw_dbs_value(r, i, 7));
    copy(a->customer, sizeof(a->customer), gw_dbs_value(r, i, 8));
    copy(a->method, sizeof(a->method), gw_dbs_value(r, i, 9));
    a->amount = strtoll(gw_dbs_value(r, i, 10), NULL, 10);
    copy(a->currency, sizeof(a->currency), gw_dbs_value(r, i, 11));
    copy(a->charge_date, sizeof(a->charge_date), gw_dbs_value(r, i, 12));
    a->retry = strcmp(gw_dbs_value(r, i, 13), "t") == 0;
    a->tries = atoi(gw_dbs_value(r, i, 14));
}

static void log_attempt(enum gw_log_level level, const char *msg, const attempt_t *a, const char *key,
                        const char *value)
{
    if (!gw_log_enabled(level))
        return;
    gw_logline_t line;
    gw_log_begin(&line, level, msg);
    gw_log_str(&line, "collection_attempt", a->id, strlen(a->id));
    gw_log_str(&line, "organisation", a->organisation, strlen(a->organisation));
    gw_log_str(&line, "invoice", a->invoice, strlen(a->invoice));
    gw_log_str(&line, "attempt", a->attempt, strlen(a->attempt));
    gw_log_str(&line, "provider", a->provider, strlen(a->provider));
    gw_log_int(&line, "amount_minor", (long long)a->amount);
    gw_log_str(&line, "currency", a->currency, strlen(a->currency));
    if (key != NULL && value != NULL)
        gw_log_str(&line, key, value, strlen(value));
    gw_log_end(&line);
}

/* Records the provider's answer (result: submitted, failed, action_required, dead). */
static void record(sender_t *s, const attempt_t *a, const char *result, const char *object, const char *code,
                   const char *message, const char *charge_date)
{
    const char *params[] = {a->id, s->owner, result, object, code, message, charge_date};
    gw_dbs_result_t *r = gw_dbs_query(s->ctx->db, sql_record, 7, params);
    if (r == NULL) {
        /* not recorded: the next claim repeats the call under the same key and gets the same object */
        gw_log_limited(&db_failed_log, "collection %s: cannot record %s: %s", a->id, result, gw_dbs_error(s->ctx->db));
        return;
    }
    const char *status = gw_dbs_value(r, 0, 0);
    if (status == NULL)
        log_attempt(GW_LOG_INFO, "collection: answer not recorded (the webhook came first, or the lease was lost)", a,
                    "result", result);
    else
        log_attempt(strcmp(status, "dead") == 0 ? GW_LOG_WARN : GW_LOG_INFO, "collection attempt made", a, "status",
                    status);
    gw_dbs_result_free(r);
}

static void schedule_array(const gw_retry_schedule_t *rs, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "{");
    for (size_t i = 0; i != rs->n && len < cap; ++i)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i != 0 ? "," : "", (long long)rs->ms[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "}");
}

/* Records a call without a usable answer (kind: transient, wait). */
static void fail(sender_t *s, const attempt_t *a, const char *kind, const char *error, uint64_t wait_ms)
{
    char waits[1024], wait[24];
    schedule_array(&s->ctx->cfg->retry_schedule, waits, sizeof(waits));
    snprintf(wait, sizeof(wait), "%llu", (unsigned long long)wait_ms);
    const char *params[] = {a->id, s->owner, kind, error, waits, wait};
    gw_dbs_result_t *r = gw_dbs_query(s->ctx->db, sql_fail, 6, params);
    if (r == NULL) {
        gw_log_limited(&db_failed_log, "collection %s: cannot record a failure: %s", a->id, gw_dbs_error(s->ctx->db));
        return;
    }
    const char *status = gw_dbs_value(r, 0, 0);
    if (status != NULL && strcmp(status, "dead") == 0)
        log_attempt(GW_LOG_WARN, "collection attempt dead: the provider could not be reached", a, "error", error);
    else if (status != NULL && strcmp(kind, "transient") == 0)
        log_attempt(GW_LOG_WARN, "collection attempt failed, sent again later", a, "error", error);
    gw_dbs_result_free(r);
}

/* The call failed without a provider's answer worth reading: waits or retries. Frees what res kept. */
static void call_failed(sender_t *s, const attempt_t *a, gw_fetch_result_t *res)
{
    if (res->status == GW_FETCH_RESCHEDULE || res->status == GW_FETCH_REAUTH)
        fail(s, a, "wait", res->error, res->wait_ms);
    else
        fail(s, a, "transient", res->error, 0);
    gw_http_response_free(&res->res);
}

static json_t *answer_json(const gw_fetch_result_t *res)
{
    return res->res.body != NULL ? json_loadb(res->res.body, res->res.body_len, 0, NULL) : NULL;
}

/* Appends "&name=value" (value percent-encoded) to the form in buf. */
static void form_add(char *buf, size_t cap, const char *name, const char *value)
{
    size_t vlen = strlen(value);
    char *enc = gw_xmalloc(GW_PERCENT_ENCODED_SIZE(vlen));
    gw_percent_encode(value, vlen, enc);
    size_t len = strlen(buf);
    snprintf(buf + len, cap - len, "%s%s=%s", len != 0 ? "&" : "", name, enc);
    free(enc);
}

/* Stripe's amount for ISO minor units (ISK and MGA count hundredths there). Returns -1 for an unknown currency. */
static int64_t stripe_amount(const char *currency, int64_t iso)
{
    int64_t hundred = 0;
    if (gw_money_to_iso(GW_MONEY_STRIPE, currency, 100, &hundred) != 0)
        return -1;
    return hundred == 1 ? iso * 100 : iso;
}

static void send_stripe(sender_t *s, const attempt_t *a, const char *key)
{
    char amount[32], currency[8], form[2048] = "";
    int64_t amt = stripe_amount(a->currency, a->amount);
    if (amt < 0 || a->customer[0] == '\0') {
        record(s, a, "dead", NULL, "not_sendable",
               a->customer[0] == '\0' ? "no Stripe customer for the card" : "currency unknown to settled", NULL);
        return;
    }
    snprintf(amount, sizeof(amount), "%lld", (long long)amt);
    for (size_t i = 0; i != sizeof(currency) - 1 && a->currency[i] != '\0'; ++i)
        currency[i] = (char)(a->currency[i] | 0x20), currency[i + 1] = '\0';
    form_add(form, sizeof(form), "amount", amount);
    form_add(form, sizeof(form), "currency", currency);
    form_add(form, sizeof(form), "customer", a->customer);
    form_add(form, sizeof(form), "payment_method", a->method);
    form_add(form, sizeof(form), "confirm", "true");
    form_add(form, sizeof(form), "off_session", "true");
    form_add(form, sizeof(form), "metadata[settled_invoice_id]", a->invoice);
    form_add(form, sizeof(form), "metadata[xero_invoice_id]", a->xero_invoice);
    form_add(form, sizeof(form), "metadata[settled_collection_attempt]", a->id);
    gw_fetch_call_t c = {.provider = "stripe",
                         .method = "POST",
                         .path = "/v1/payment_intents",
                         .account = a->account[0] != '\0' ? a->account : NULL,
                         .source = a->source[0] != '\0' ? a->source : NULL,
                         .body = form,
                         .body_len = strlen(form),
                         .idempotency_key = key,
                         .content_type = "application/x-www-form-urlencoded",
                         .keep_rejected_body = true};
    gw_fetch_result_t res;
    gw_fetch_status_t st = gw_fetch(s->ctx, &c, &res);
    if (st == GW_FETCH_OK) {
        json_t *doc = answer_json(&res);
        gw_http_response_free(&res.res);
        const char *id = json_string_value(json_object_get(doc, "id"));
        const char *status = json_string_value(json_object_get(doc, "status"));
        if (id == NULL)
            fail(s, a, "transient", "Stripe answered POST /v1/payment_intents without an id", 0);
        else if (status != NULL && strcmp(status, "requires_action") == 0)
            record(s, a, "action_required", id, "authentication_required", "the customer must authenticate", NULL);
        else
            record(s, a, "submitted", id, NULL, NULL, NULL);
        json_decref(doc);
        return;
    }
    if (st != GW_FETCH_REJECTED) {
        call_failed(s, a, &res);
        return;
    }
    /* a decline is a 402 card_error carrying the PaymentIntent it left behind */
    json_t *doc = answer_json(&res);
    gw_http_response_free(&res.res);
    json_t *e = json_object_get(doc, "error");
    const char *pi = json_string_value(json_object_get(json_object_get(e, "payment_intent"), "id"));
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *decline = json_string_value(json_object_get(e, "decline_code"));
    const char *message = json_string_value(json_object_get(e, "message"));
    char reason[REASON_MAX];
    snprintf(reason, sizeof(reason), "Stripe refused it (%ld): %s", res.http_status,
             message != NULL ? message : res.error);
    if (res.http_status == 402 && pi != NULL) {
        bool sca = (code != NULL && strcmp(code, "authentication_required") == 0) ||
                   (decline != NULL && strcmp(decline, "authentication_required") == 0);
        record(s, a, sca ? "action_required" : "failed", pi,
               decline != NULL ? decline : (code != NULL ? code : "declined"), message, NULL);
    } else {
        record(s, a, "dead", NULL, code != NULL ? code : "refused", reason, NULL);
    }
    json_decref(doc);
}

static void send_gocardless(sender_t *s, const attempt_t *a, const char *key)
{
    json_t *md = json_pack("{s:s, s:s, s:s}", "settled_invoice_id", a->invoice, "xero_invoice_id", a->xero_invoice,
                           "settled_collection_attempt", a->id);
    json_t *p = json_pack("{s:I, s:s, s:s, s:b, s:{s:s}, s:o}", "amount", (json_int_t)a->amount, "currency",
                          a->currency, "charge_date", a->charge_date, "retry_if_possible", a->retry, "links", "mandate",
                          a->method, "metadata", md);
    json_t *body = json_pack("{s:o}", "payments", p);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    gw_fetch_call_t c = {.provider = "gocardless",
                         .method = "POST",
                         .path = "/payments",
                         .account = a->account[0] != '\0' ? a->account : NULL,
                         .source = a->source[0] != '\0' ? a->source : NULL,
                         .body = text,
                         .body_len = strlen(text),
                         .idempotency_key = key,
                         .keep_rejected_body = true,
                         .keep_conflict_body = true};
    gw_fetch_result_t res;
    gw_fetch_status_t st = gw_fetch(s->ctx, &c, &res);
    free(text);
    json_t *doc = st == GW_FETCH_OK || res.res.body != NULL ? answer_json(&res) : NULL;
    if (st == GW_FETCH_OK) {
        gw_http_response_free(&res.res);
        json_t *pay = json_object_get(doc, "payments");
        const char *id = json_string_value(json_object_get(pay, "id"));
        if (id == NULL)
            fail(s, a, "transient", "GoCardless answered POST /payments without an id", 0);
        else
            record(s, a, "submitted", id, NULL, NULL, json_string_value(json_object_get(pay, "charge_date")));
        json_decref(doc);
        return;
    }
    json_t *err0 = json_array_get(json_object_get(json_object_get(doc, "error"), "errors"), 0);
    const char *reason = json_string_value(json_object_get(err0, "reason"));
    const char *message = json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
    const char *conflict =
        json_string_value(json_object_get(json_object_get(err0, "links"), "conflicting_resource_id"));
    if (res.http_status == 409 && reason != NULL && strcmp(reason, "idempotent_creation_conflict") == 0 &&
        conflict != NULL) {
        /* an earlier call under this key made the payment and its answer was lost: that one is ours */
        gw_http_response_free(&res.res);
        log_attempt(GW_LOG_INFO, "collection: found the payment an earlier call made", a, "payment", conflict);
        record(s, a, "submitted", conflict, NULL, NULL, NULL);
    } else if (st == GW_FETCH_REJECTED) {
        char why[REASON_MAX];
        snprintf(why, sizeof(why), "GoCardless refused it (%ld): %s", res.http_status,
                 message != NULL ? message : res.error);
        gw_http_response_free(&res.res);
        record(s, a, "dead", NULL, reason != NULL ? reason : "refused", why, NULL);
    } else {
        call_failed(s, a, &res);
    }
    json_decref(doc);
}

static void process(sender_t *s, const attempt_t *a)
{
    const char *params[] = {a->id, s->owner};
    gw_dbs_result_t *r = gw_dbs_query(s->ctx->db, sql_begin, 2, params);
    if (r == NULL) {
        gw_log_limited(&db_failed_log, "collection %s: %s", a->id, gw_dbs_error(s->ctx->db));
        return;
    }
    const char *what = gw_dbs_value(r, 0, 0);
    bool send = what != NULL && strcmp(what, "send") == 0;
    if (what != NULL && strcmp(what, "cancelled") == 0)
        log_attempt(GW_LOG_INFO, "collection attempt cancelled before it was sent", a, NULL, NULL);
    else if (what != NULL && strcmp(what, "dead") == 0)
        log_attempt(GW_LOG_WARN, "collection attempt unanswered for 23 hours: dead, not sent again under its key", a,
                    NULL, NULL);
    gw_dbs_result_free(r);
    if (!send)
        return;
    /* one key per invoice and attempt: whoever sends it, however often, the provider makes one object */
    char key[160];
    snprintf(key, sizeof(key), "settled-collect-%s-%s", a->invoice, a->attempt);
    if (strcmp(a->provider, "stripe") == 0)
        send_stripe(s, a, key);
    else
        send_gocardless(s, a, key);
}

/* Enqueues the collection_failed notices (e-mail and portal) of failed attempts. Returns how many attempts. */
static int notices(gw_fetch_ctx_t *ctx)
{
    const char *params[] = {"20"};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql_notices, 1, params);
    if (r == NULL)
        return -1;
    int n = 0;
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
        const char *id = gw_dbs_value(r, i, 0), *invoice = gw_dbs_value(r, i, 3);
        int64_t org = strtoll(gw_dbs_value(r, i, 1), NULL, 10), customer = strtoll(gw_dbs_value(r, i, 2), NULL, 10);
        int64_t amount = strtoll(gw_dbs_value(r, i, 5), NULL, 10);
        const char *currency = gw_dbs_value(r, i, 6);
        bool ok = true;
        const char *channels[] = {"email", "portal"};
        for (size_t c = 0; c != 2; ++c) {
            char key[128], corr[48], nid[24], status[16], err[256];
            snprintf(key, sizeof(key), "collection_failed:attempt:%s:%s", id, channels[c]);
            snprintf(corr, sizeof(corr), "collect:%s", id);
            gw_notify_t msg = {.organisation_id = org,
                               .customer_id = customer,
                               .invoice_id = invoice,
                               .kind = "collection_failed",
                               .channel = channels[c],
                               .dedupe_key = key,
                               .actor = "system:collector",
                               .correlation = corr};
            bool created = false;
            int rc = gw_notify_customer(ctx->db, ctx->cfg->portal_url, &msg, true, amount, currency, nid, status,
                                        &created, err, sizeof(err));
            if (rc < 0) {
                gw_log(GW_LOG_WARN, "collection %s: cannot enqueue its %s notice: %s", id, channels[c], err);
                ok = false;
            }
        }
        if (ok) {
            const char *p[] = {id};
            if (gw_dbs_exec(ctx->db, sql_noticed, 1, p) < 0)
                ok = false;
        }
        n += ok;
    }
    gw_dbs_result_free(r);
    return n;
}

static char *retry_days_array(const gw_config_t *cfg)
{
    const char *d = cfg->collect_card_retry_days != NULL ? cfg->collect_card_retry_days : "";
    size_t cap = strlen(d) + 3;
    char *out = gw_xmalloc(cap);
    snprintf(out, cap, "{%s}", d);
    return out;
}

int gw_collect_plan(gw_fetch_ctx_t *ctx, const char *at, int64_t org, char *err, size_t errlen)
{
    if (ctx->read_only)
        return 0;
    char orgs[24], lead[16], catch_up[16];
    snprintf(orgs, sizeof(orgs), "%lld", (long long)org);
    snprintf(lead, sizeof(lead), "%d", ctx->cfg->collect_dd_lead_days);
    snprintf(catch_up, sizeof(catch_up), "%d", ctx->cfg->collect_catch_up_days);
    char *days = retry_days_array(ctx->cfg);
    const char *params[] = {at, org > 0 ? orgs : NULL, days, lead, catch_up, ctx->cfg->collect_dd_retry ? "t" : "f"};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql_plan, 6, params);
    free(days);
    if (r == NULL) {
        snprintf(err, errlen, "collection planning failed: %s", gw_dbs_error(ctx->db));
        return -1;
    }
    int n = atoi(gw_dbs_value(r, 0, 0));
    gw_dbs_result_free(r);
    if (n > 0)
        gw_log(GW_LOG_INFO, "collection: %d attempt%s planned", n, n == 1 ? "" : "s");
    return n;
}

int gw_collect_send(gw_fetch_ctx_t *ctx, const char *owner, int limit, const atomic_bool *stop,
                    gw_collect_stats_t *stats)
{
    if (ctx->read_only)
        return 0;
    char lease[16], n[16];
    snprintf(lease, sizeof(lease), "%d", gw_writeback_lease_ms(ctx->cfg));
    snprintf(n, sizeof(n), "%d", limit);
    const char *params[] = {owner, lease, n};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql_claim, 3, params);
    if (r == NULL) {
        gw_log_limited(&db_failed_log, "collection: claiming failed: %s", gw_dbs_error(ctx->db));
        return -1;
    }
    gw_log_limit_settle(&db_failed_log);
    sender_t s = {.ctx = ctx, .owner = owner};
    size_t claimed = gw_dbs_nrows(r);
    for (size_t i = 0; i != claimed; ++i) {
        attempt_t a;
        read_attempt(r, i, &a);
        if (stop != NULL && atomic_load(stop))
            fail(&s, &a, "wait", "the sender is stopping", 0);
        else
            process(&s, &a);
    }
    gw_dbs_result_free(r);
    int told = notices(ctx);
    if (stats != NULL) {
        stats->claimed += (int)claimed;
        stats->notified += told > 0 ? told : 0;
    }
    return told < 0 ? -1 : (int)claimed;
}

/* ---- the collector thread ---- */

struct st_gw_collector_t {
    gw_fetch_ctx_t ctx;
    const atomic_bool *stop;
    pthread_t tid;
    char owner[96];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void wait_for_work(gw_collector_t *c, int timeout)
{
    gw_dbs_t *db = c->ctx.db;
    gw_dbs_result_t *r = gw_dbs_query(db, sql_next_due, 0, NULL);
    if (r != NULL && gw_dbs_value(r, 0, 0) != NULL) {
        long long due = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
        if (due < timeout)
            timeout = (int)due;
    }
    gw_dbs_result_free(r);
    if (timeout <= 0)
        return;
    if (gw_dbs_exec(db, "LISTEN " GW_COLLECTOR_CHANNEL, 0, NULL) < 0) {
        usleep(WAIT_SLICE_MS * 1000);
        return;
    }
    for (int waited = 0; waited < timeout && !atomic_load(c->stop); waited += WAIT_SLICE_MS) {
        int slice = timeout - waited < WAIT_SLICE_MS ? timeout - waited : WAIT_SLICE_MS;
        if (gw_dbs_wait_notify(db, slice) != 0)
            return;
    }
}

static void *collector_main(void *arg)
{
    gw_collector_t *c = arg;
    const gw_config_t *cfg = c->ctx.cfg;
    uint64_t next_plan = 0;
    bool db_failed = false;
    while (!atomic_load(c->stop)) {
        if (cfg->collect_interval > 0 && now_ms() >= next_plan) {
            char err[512];
            if (gw_collect_plan(&c->ctx, NULL, 0, err, sizeof(err)) < 0) {
                gw_log_limited(&db_failed_log, "%s", err);
                next_plan = now_ms() + DB_RETRY_MS;
            } else {
                next_plan = now_ms() + (uint64_t)cfg->collect_interval * 1000;
            }
        }
        int n = gw_collect_send(&c->ctx, c->owner, GW_COLLECTOR_BATCH, c->stop, NULL);
        if (n > 0)
            continue;
        if (n < 0) {
            db_failed = true;
            for (int t = 0; t < DB_RETRY_MS && !atomic_load(c->stop); t += WAIT_SLICE_MS)
                usleep(WAIT_SLICE_MS * 1000);
            continue;
        }
        if (db_failed) {
            const char *params[] = {c->owner};
            if (gw_dbs_exec(c->ctx.db, sql_release_mine, 1, params) < 0)
                continue;
            db_failed = false;
            continue;
        }
        int timeout = cfg->worker_poll_ms;
        if (cfg->collect_interval > 0) {
            uint64_t now = now_ms();
            uint64_t until = next_plan > now ? next_plan - now : 0;
            if (until < (uint64_t)timeout)
                timeout = (int)until;
        }
        wait_for_work(c, timeout);
    }
    return NULL;
}

gw_collector_t *gw_collector_start(const gw_config_t *cfg, const gw_fetch_ctx_t *shared, const atomic_bool *stop,
                                   const char *host, char *err, size_t errlen)
{
    gw_collector_t *c = gw_xcalloc(1, sizeof(*c));
    c->ctx = *shared;
    c->ctx.cfg = cfg;
    c->ctx.token_db = NULL;
    c->ctx.read_only = false;
    c->stop = stop;
    snprintf(c->owner, sizeof(c->owner), "%s:%d:collector", host, (int)getpid());
    if ((c->ctx.db = gw_dbs_connect(cfg->database_url, err, errlen)) == NULL) {
        free(c);
        return NULL;
    }
    if (pthread_create(&c->tid, NULL, collector_main, c) != 0) {
        gw_log(GW_LOG_ERROR, "cannot start the collector thread: %s", strerror(errno));
        abort();
    }
    return c;
}

void gw_collector_stop(gw_collector_t *c)
{
    if (c == NULL)
        return;
    pthread_join(c->tid, NULL);
    gw_dbs_close(c->ctx.db);
    free(c);
}
