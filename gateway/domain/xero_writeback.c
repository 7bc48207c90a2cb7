/* SPDX-License-Identifier: MIT */
/*
 * xero_writeback.c: the sender of the payment write-back to Xero (the outbox xero_writebacks and its functions in
 * schema/functions/xero_writeback.sql), and its thread in the worker pool. Each claim of a row makes at most one
 * Xero call (two when a crash left a payment of ours behind) and records it in one statement, so that what Xero
 * holds from us is committed before the next call is made.
 */
#include "xero_writeback.h"
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "alert.h"
#include "crypto.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "money.h"

#define WAIT_SLICE_MS 250 /* how often an idle sender looks at the stop flag */
#define DB_RETRY_MS 1000  /* after the database failed */
#define REASON_MAX 300

static const char sql_accounts[] = "SELECT unconfigured, revived FROM xero_writeback_accounts($1)";
static const char sql_park_lost[] = "SELECT id, organisation_id, payment_id, attempts, last_error"
                                    " FROM xero_writeback_park_lost($1::integer)";
static const char sql_claim[] =
    "SELECT id, organisation_id, payment_id, provider, object_id, tenant_id, invoice_id, currency, target_minor,"
    "       generation, written_minor, xero_payment_id, written_tenant_id, written_invoice_id, account_code, paid_on,"
    "       attempts, unsure, token_id, written_token_id"
    "  FROM xero_writeback_claim($1, $2::bigint, $3::integer, $4)";
static const char sql_renew[] = "SELECT xero_writeback_renew($1::bigint, $2, $3::bigint)";
static const char sql_step[] = "SELECT xero_writeback_step($1::bigint, $2, $3::integer, $4, $5::uuid, $6::bigint,"
                               " $7::uuid, $8::uuid, $9, $10)";
static const char sql_fail[] = "SELECT xero_writeback_fail($1::bigint, $2, $3::integer, $4, $5, $6::bigint[],"
                               " $7::bigint, $8)";
static const char sql_release_mine[] =
    "UPDATE xero_writebacks SET lease_owner = NULL, lease_until = NULL, next_attempt_at = now()"
    " WHERE lease_owner = $1 AND status = 'pending'";
static const char sql_next_due[] = "SELECT xero_writeback_next_due_ms()";

/* While the database is down the sender fails every round: one warning, then a summary a minute. */
static gw_log_limit_t db_failed_log = GW_LOG_LIMIT_INIT(GW_LOG_WARN, 60000);

/* One claimed row (xero_writeback_claim's columns). Empty strings stand for NULL. */
typedef struct st_row_t {
    char id[24], organisation[24], payment_id[24], provider[16], object_id[256];
    char tenant[40], invoice[40], currency[8], generation[16];
    int64_t target, written;
    char xero_payment[40], written_tenant[40], written_invoice[40], account[16], paid_on[16];
    int attempts;
    bool unsure;                        /* a call may have reached Xero without its outcome being recorded */
    int64_t token_id, written_token_id; /* 0: the organisation has not connected that tenant */
    char correlation[64];
} row_t;

/* The sender's handle for one round. */
typedef struct st_sender_t {
    gw_fetch_ctx_t *ctx;
    const char *owner;
    char lease[16];
} sender_t;

int gw_writeback_lease_ms(const gw_config_t *cfg)
{
    /* gw_fetch may refresh the token (a call, or a wait for another refresher's), wait for a quota (up to 5 s)
     * and make the call, and the call once more after a 401 */
    long long floor = 3LL * cfg->http_timeout_ms + 10000;
    long long lease = cfg->worker_lease_ms > floor ? cfg->worker_lease_ms : floor;
    return lease > 86400000 ? 86400000 : (int)lease;
}

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

static void read_row(gw_dbs_result_t *r, size_t i, row_t *row)
{
    memset(row, 0, sizeof(*row));
    copy(row->id, sizeof(row->id), gw_dbs_value(r, i, 0));
    copy(row->organisation, sizeof(row->organisation), gw_dbs_value(r, i, 1));
    copy(row->payment_id, sizeof(row->payment_id), gw_dbs_value(r, i, 2));
    copy(row->provider, sizeof(row->provider), gw_dbs_value(r, i, 3));
    copy(row->object_id, sizeof(row->object_id), gw_dbs_value(r, i, 4));
    copy(row->tenant, sizeof(row->tenant), gw_dbs_value(r, i, 5));
    copy(row->invoice, sizeof(row->invoice), gw_dbs_value(r, i, 6));
    copy(row->currency, sizeof(row->currency), gw_dbs_value(r, i, 7));
    row->target = strtoll(gw_dbs_value(r, i, 8), NULL, 10);
    copy(row->generation, sizeof(row->generation), gw_dbs_value(r, i, 9));
    row->written = strtoll(gw_dbs_value(r, i, 10), NULL, 10);
    copy(row->xero_payment, sizeof(row->xero_payment), gw_dbs_value(r, i, 11));
    copy(row->written_tenant, sizeof(row->written_tenant), gw_dbs_value(r, i, 12));
    copy(row->written_invoice, sizeof(row->written_invoice), gw_dbs_value(r, i, 13));
    copy(row->account, sizeof(row->account), gw_dbs_value(r, i, 14));
    copy(row->paid_on, sizeof(row->paid_on), gw_dbs_value(r, i, 15));
    row->attempts = atoi(gw_dbs_value(r, i, 16));
    row->unsure = strcmp(gw_dbs_value(r, i, 17), "t") == 0;
    const char *t = gw_dbs_value(r, i, 18), *wt = gw_dbs_value(r, i, 19);
    row->token_id = t != NULL ? strtoll(t, NULL, 10) : 0;
    row->written_token_id = wt != NULL ? strtoll(wt, NULL, 10) : 0;
    snprintf(row->correlation, sizeof(row->correlation), "writeback:%s:g%s", row->id, row->generation);
}

/* One line for a row's outcome. */
static void log_row(enum gw_log_level level, const char *msg, const row_t *row, const char *key, const char *value)
{
    if (!gw_log_enabled(level))
        return;
    gw_logline_t line;
    gw_log_begin(&line, level, msg);
    gw_log_str(&line, "writeback", row->id, strlen(row->id));
    gw_log_str(&line, "organisation", row->organisation, strlen(row->organisation));
    gw_log_str(&line, "payment", row->payment_id, strlen(row->payment_id));
    gw_log_str(&line, "provider", row->provider, strlen(row->provider));
    gw_log_str(&line, "tenant", row->tenant, strlen(row->tenant));
    gw_log_str(&line, "invoice", row->invoice, strlen(row->invoice));
    gw_log_int(&line, "target_minor", (long long)row->target);
    gw_log_str(&line, "currency", row->currency, strlen(row->currency));
    gw_log_int(&line, "attempt", row->attempts);
    if (key != NULL && value != NULL)
        gw_log_str(&line, key, value, strlen(value));
    gw_log_str(&line, "correlation_id", row->correlation, strlen(row->correlation));
    gw_log_end(&line);
}

/* Extends the lease before a call. Returns false when the row is not ours any more (or the database failed):
 * the call must not be made. */
static bool renew(sender_t *s, const row_t *row)
{
    const char *params[] = {row->id, s->owner, s->lease};
    gw_dbs_result_t *r = gw_dbs_query(s->ctx->db, sql_renew, 3, params);
    bool ok = r != NULL && gw_dbs_nrows(r) == 1 && strcmp(gw_dbs_value(r, 0, 0), "t") == 0;
    if (r == NULL)
        gw_log_limited(&db_failed_log, "write-back %s: cannot renew its lease: %s", row->id, gw_dbs_error(s->ctx->db));
    else if (!ok)
        log_row(GW_LOG_WARN, "write-back lease lost: another sender has it", row, NULL, NULL);
    gw_dbs_result_free(r);
    return ok;
}

/* Records a step that worked (action: deleted, written, checked). */
static void step(sender_t *s, const row_t *row, const char *action, const char *xero_payment, int64_t amount)
{
    char amt[24];
    snprintf(amt, sizeof(amt), "%lld", (long long)amount);
    bool written = strcmp(action, "written") == 0;
    const char *params[] = {row->id,
                            s->owner,
                            row->generation,
                            action,
                            written ? xero_payment : NULL,
                            written ? amt : NULL,
                            written ? row->tenant : NULL,
                            written ? row->invoice : NULL,
                            written ? row->account : NULL,
                            row->correlation};
    gw_dbs_result_t *r = gw_dbs_query(s->ctx->db, sql_step, 10, params);
    if (r == NULL) {
        /* what Xero did is not recorded: the next claim looks for it by its Reference, or repeats the delete */
        gw_log_limited(&db_failed_log, "write-back %s: cannot record %s: %s", row->id, action,
                       gw_dbs_error(s->ctx->db));
        return;
    }
    const char *status = gw_dbs_value(r, 0, 0);
    if (status == NULL) {
        log_row(GW_LOG_WARN, "write-back step not recorded: its lease was taken over", row, "step", action);
    } else {
        if (strcmp(action, "checked") != 0) {
            gw_metrics_writeback(action, 1);
            log_row(GW_LOG_INFO, written ? "write-back: Xero payment created" : "write-back: Xero payment deleted", row,
                    "xero_payment", written ? xero_payment : row->xero_payment);
        }
        if (strcmp(status, "in_sync") == 0)
            gw_metrics_writeback("in_sync", 1);
    }
    gw_dbs_result_free(r);
}

/* "{0,10000,...}": the waits of the retry schedule. */
static void schedule_array(const gw_retry_schedule_t *rs, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "{");
    for (size_t i = 0; i != rs->n && len < cap; ++i)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i != 0 ? "," : "", (long long)rs->ms[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "}");
}

/* Records a step that did not work (kind: refused, transient, wait). */
static void fail(sender_t *s, const row_t *row, const char *kind, const char *error, uint64_t wait_ms)
{
    char waits[1024], wait[24];
    schedule_array(&s->ctx->cfg->retry_schedule, waits, sizeof(waits));
    snprintf(wait, sizeof(wait), "%llu", (unsigned long long)wait_ms);
    const char *params[] = {row->id, s->owner, row->generation, kind, error, waits, wait, row->correlation};
    gw_dbs_result_t *r = gw_dbs_query(s->ctx->db, sql_fail, 8, params);
    if (r == NULL) {
        gw_log_limited(&db_failed_log, "write-back %s: cannot record a failure: %s", row->id, gw_dbs_error(s->ctx->db));
        return;
    }
    const char *status = gw_dbs_value(r, 0, 0);
    if (status != NULL && (strcmp(status, "refused") == 0 || strcmp(status, "dead") == 0)) {
        gw_metrics_writeback(status, 1);
        log_row(GW_LOG_WARN, strcmp(status, "dead") == 0 ? "write-back dead" : "write-back refused by Xero", row,
                "error", error);
        gw_alert_writeback(status, row->id, strtoll(row->organisation, NULL, 10), row->payment_id, row->attempts,
                           error);
    } else if (status != NULL && strcmp(kind, "wait") != 0) {
        gw_metrics_writeback("retried", 1);
        log_row(GW_LOG_WARN, "write-back failed, retried later", row, "error", error);
    } else if (status != NULL && wait_ms != 0) {
        gw_metrics_writeback("waited", 1);
        log_row(GW_LOG_DEBUG, "write-back waits", row, "why", error);
    }
    gw_dbs_result_free(r);
}

/* Appends the Message members of a ValidationErrors array to out. */
static void append_messages(json_t *errors, char *out, size_t cap)
{
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        const char *m = json_string_value(json_object_get(e, "Message"));
        if (m == NULL)
            continue;
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", len != 0 ? "; " : "", m);
    }
}

/* The validation messages of a Xero answer (a 200 element, or a 400 ValidationException) into out; "" if none. */
static void validation_messages(json_t *doc, char *out, size_t cap)
{
    out[0] = '\0';
    const char *lists[] = {"Payments", "Elements"};
    for (size_t l = 0; l != 2; ++l) {
        size_t i;
        json_t *el;
        json_array_foreach(json_object_get(doc, lists[l]), i, el)
            append_messages(json_object_get(el, "ValidationErrors"), out, cap);
    }
    const char *m = json_string_value(json_object_get(doc, "Message"));
    if (out[0] == '\0' && m != NULL)
        snprintf(out, cap, "%s", m);
}

/* The reason of a refusal: Xero's messages when its answer has any, else what gw_fetch said. */
static void refusal_reason(const gw_fetch_result_t *res, char *out, size_t cap)
{
    char msgs[REASON_MAX] = "";
    json_t *doc = res->res.body != NULL ? json_loadb(res->res.body, res->res.body_len, 0, NULL) : NULL;
    if (doc != NULL)
        validation_messages(doc, msgs, sizeof(msgs));
    json_decref(doc);
    if (msgs[0] != '\0')
        snprintf(out, cap, "Xero refused it (%ld): %s", res->http_status, msgs);
    else
        snprintf(out, cap, "%s", res->error);
}

/* Records the failure of a call that did not succeed (not GW_FETCH_OK), and frees what it kept. */
static void call_failed(sender_t *s, const row_t *row, gw_fetch_result_t *res)
{
    char reason[REASON_MAX + 40];
    switch (res->status) {
    case GW_FETCH_RESCHEDULE:
    case GW_FETCH_REAUTH:
        fail(s, row, "wait", res->error, res->wait_ms);
        break;
    case GW_FETCH_REJECTED:
        refusal_reason(res, reason, sizeof(reason));
        fail(s, row, "refused", reason, 0);
        break;
    default:
        fail(s, row, "transient", res->error, 0);
        break;
    }
    gw_http_response_free(&res->res);
}

/* The Reference of the row's current generation, and the prefix every generation's Reference starts with. */
static void references(const row_t *row, char *ref, size_t refcap, char *prefix, size_t prefixcap)
{
    snprintf(prefix, prefixcap, "settled:%s:%s:g", row->provider, row->object_id);
    snprintf(ref, refcap, "%s%s", prefix, row->generation);
}

/* Calls Xero for row's tenant (the target's, or that of what was written). */
static gw_fetch_status_t call(sender_t *s, const row_t *row, bool written_tenant, const char *method, const char *path,
                              const char *body, const char *key, gw_fetch_result_t *res)
{
    gw_fetch_call_t c = {.provider = "xero",
                         .method = method,
                         .path = path,
                         .account = written_tenant ? row->written_tenant : row->tenant,
                         .token_id = written_tenant ? row->written_token_id : row->token_id,
                         .body = body,
                         .body_len = body != NULL ? strlen(body) : 0,
                         .idempotency_key = key,
                         .keep_rejected_body = true};
    return gw_fetch(s->ctx, &c, res);
}

/* Deletes Xero payment pid of the row's written tenant under its Idempotency-Key. Returns 1 when it is deleted
 * (now, or already: a repeat whose key Xero has forgotten, or a payment Xero no longer knows), 0 when the failure
 * was recorded. */
static int delete_payment(sender_t *s, const row_t *row, const char *pid)
{
    char path[128], key[128];
    snprintf(path, sizeof(path), "/api.xro/2.0/Payments/%s", pid);
    snprintf(key, sizeof(key), "settled-wb-del-%s-%s", row->id, pid);
    if (!renew(s, row))
        return 0;
    gw_fetch_result_t res;
    gw_fetch_status_t st = call(s, row, true, "POST", path, "{\"Payments\":[{\"Status\":\"DELETED\"}]}", key, &res);
    if (st == GW_FETCH_OK) {
        gw_http_response_free(&res.res);
        return 1;
    }
    if (st == GW_FETCH_REJECTED && res.http_status == 404) {
        gw_http_response_free(&res.res);
        log_row(GW_LOG_WARN, "write-back: Xero no longer knows our payment; taken as deleted", row, "xero_payment",
                pid);
        return 1;
    }
    if (st == GW_FETCH_REJECTED && res.http_status == 400) {
        /* deleted already (by our own earlier call whose answer was lost, its key since forgotten)? */
        gw_fetch_result_t got;
        if (call(s, row, true, NULL, path, NULL, NULL, &got) == GW_FETCH_OK) {
            json_t *doc = json_loadb(got.res.body, got.res.body_len, 0, NULL);
            const char *status =
                json_string_value(json_object_get(json_array_get(json_object_get(doc, "Payments"), 0), "Status"));
            bool deleted = status != NULL && strcmp(status, "DELETED") == 0;
            json_decref(doc);
            gw_http_response_free(&got.res);
            if (deleted) {
                gw_http_response_free(&res.res);
                return 1;
            }
        } else {
            gw_http_response_free(&got.res);
        }
    }
    call_failed(s, row, &res);
    return 0;
}

/* Looks, before creating a payment after an attempt whose outcome is unknown, for one of ours on the invoice:
 * AUTHORISED, with a Reference of this provider payment. Returns 1 with its PaymentID in pid and exact set when
 * its Reference is the current generation's, 0 when there is none, -1 when the failure was recorded. */
static int find_ours(sender_t *s, const row_t *row, char pid[40], bool *exact)
{
    char where[160], enc[GW_PERCENT_ENCODED_SIZE(sizeof(where))], path[600], ref[320], prefix[300];
    int wlen = snprintf(where, sizeof(where), "Invoice.InvoiceID==Guid(\"%s\")", row->invoice);
    gw_percent_encode(where, (size_t)wlen, enc);
    snprintf(path, sizeof(path), "/api.xro/2.0/Payments?where=%s", enc);
    references(row, ref, sizeof(ref), prefix, sizeof(prefix));
    if (!renew(s, row))
        return -1;
    gw_fetch_result_t res;
    if (call(s, row, false, NULL, path, NULL, NULL, &res) != GW_FETCH_OK) {
        call_failed(s, row, &res);
        return -1;
    }
    json_t *doc = json_loadb(res.res.body, res.res.body_len, 0, NULL);
    gw_http_response_free(&res.res);
    json_t *list = json_object_get(doc, "Payments");
    if (!json_is_array(list)) {
        json_decref(doc);
        fail(s, row, "transient", "Xero answered GET /Payments without a Payments list", 0);
        return -1;
    }
    int found = 0;
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p)
    {
        const char *r = json_string_value(json_object_get(p, "Reference"));
        const char *st = json_string_value(json_object_get(p, "Status"));
        const char *id = json_string_value(json_object_get(p, "PaymentID"));
        if (r == NULL || st == NULL || id == NULL || strcmp(st, "AUTHORISED") != 0 ||
            strncmp(r, prefix, strlen(prefix)) != 0)
            continue;
        bool this_one = strcmp(r, ref) == 0;
        if (found == 0 || this_one) { /* the current generation's wins over an older one left behind */
            snprintf(pid, 40, "%s", id);
            *exact = this_one;
            found = 1;
        }
    }
    json_decref(doc);
    return found;
}

/* Whether the organisation has connected the Xero tenant (token_id non-zero); if not, the row is refused with that
 * reason: nothing can be done there until an admin connects it. */
static bool connected(sender_t *s, const row_t *row, int64_t token_id, const char *tenant)
{
    if (token_id != 0)
        return true;
    char reason[200];
    snprintf(reason, sizeof(reason), "Xero tenant %s is not connected to organisation %s", tenant, row->organisation);
    fail(s, row, "refused", reason, 0);
    return false;
}

/* Deletes pid, a payment of ours on the row's invoice that an attempt whose answer was lost created and nothing
 * recorded. Returns true when it is gone, false when the failure was recorded. */
static bool delete_unrecorded(sender_t *s, const row_t *row, const char *pid)
{
    row_t older = *row;
    copy(older.written_tenant, sizeof(older.written_tenant), row->tenant);
    older.written_token_id = row->token_id;
    if (delete_payment(s, &older, pid) != 1)
        return false;
    log_row(GW_LOG_WARN, "write-back: deleted an unrecorded payment of an older target", row, "xero_payment", pid);
    return true;
}

/* A row that wants nothing in Xero and holds nothing there, but whose last call's outcome is unknown (a PUT whose
 * answer was lost, then a full refund or an unlinked payment): what that call may have created is looked for by
 * its Reference and deleted before the row counts as in sync. */
static void clear_unrecorded(sender_t *s, const row_t *row)
{
    if (!connected(s, row, row->token_id, row->tenant))
        return;
    for (int i = 0; i != 4; ++i) { /* one lost answer leaves one; a few more rounds cost nothing when none is left */
        char pid[40];
        bool exact = false;
        int found = find_ours(s, row, pid, &exact);
        if (found < 0 || (found == 1 && !delete_unrecorded(s, row, pid)))
            return;
        if (found == 0)
            break;
    }
    step(s, row, "checked", NULL, 0);
}

/* Creates the Xero payment of the row's target (none exists). */
static void create_payment(sender_t *s, const row_t *row)
{
    char reason[REASON_MAX + 40];
    if (row->account[0] == '\0') { /* the claim takes none such: given back, xero_writeback_accounts marks it */
        fail(s, row, "wait", "no Xero account to pay into", 0);
        return;
    }
    if (!connected(s, row, row->token_id, row->tenant))
        return;
    int exponent = gw_currency_exponent(row->currency);
    char amount[48];
    if (exponent < 0 || gw_money_format(row->target, exponent, amount, sizeof(amount)) < 0) {
        snprintf(reason, sizeof(reason), "currency %s has no ISO 4217 exponent settled knows", row->currency);
        fail(s, row, "refused", reason, 0);
        return;
    }
    if (row->unsure) {
        /* an earlier call may have created it and lost the answer (a crash, a timeout), perhaps for an older
         * target, and its key may be forgotten by now: find it by its Reference rather than make a second one */
        char pid[40];
        bool exact = false;
        int found = find_ours(s, row, pid, &exact);
        if (found < 0)
            return;
        if (found == 1 && exact) {
            log_row(GW_LOG_INFO, "write-back: found the payment an earlier attempt created", row, "xero_payment", pid);
            step(s, row, "written", pid, row->target);
            return;
        }
        if (found == 1) { /* one of an older target, never recorded: remove it, then write this one */
            if (delete_unrecorded(s, row, pid))
                step(s, row, "checked", NULL, 0);
            return;
        }
    }

    char ref[320], prefix[300], key[96];
    references(row, ref, sizeof(ref), prefix, sizeof(prefix));
    snprintf(key, sizeof(key), "settled-wb-%s-g%s", row->id, row->generation);
    json_t *jref = json_string(ref), *jcode = json_string(row->account);
    char *ref_text = json_dumps(jref, JSON_ENCODE_ANY), *code_text = json_dumps(jcode, JSON_ENCODE_ANY);
    json_decref(jref);
    json_decref(jcode);
    /* the amount is written as its exact decimal text: never through a double */
    size_t cap = strlen(ref_text) + strlen(code_text) + 256;
    char *body = gw_xmalloc(cap);
    snprintf(body, cap,
             "{\"Payments\":[{\"Invoice\":{\"InvoiceID\":\"%s\"},\"Account\":{\"Code\":%s},\"Date\":\"%s\","
             "\"Amount\":%s,\"Reference\":%s}]}",
             row->invoice, code_text, row->paid_on, amount, ref_text);
    free(ref_text);
    free(code_text);
    if (!renew(s, row)) {
        free(body);
        return;
    }
    gw_fetch_result_t res;
    gw_fetch_status_t st = call(s, row, false, "PUT", "/api.xro/2.0/Payments?summarizeErrors=false", body, key, &res);
    free(body);
    if (st != GW_FETCH_OK) {
        call_failed(s, row, &res);
        return;
    }
    /* with summarizeErrors=false a 200 may still carry a refusal: look at the element */
    json_t *doc = json_loadb(res.res.body, res.res.body_len, 0, NULL);
    gw_http_response_free(&res.res);
    json_t *el = json_array_get(json_object_get(doc, "Payments"), 0);
    const char *pid = json_string_value(json_object_get(el, "PaymentID"));
    if (el != NULL && json_is_true(json_object_get(el, "HasValidationErrors"))) {
        char msgs[REASON_MAX] = "";
        append_messages(json_object_get(el, "ValidationErrors"), msgs, sizeof(msgs));
        snprintf(reason, sizeof(reason), "Xero refused it: %s", msgs[0] != '\0' ? msgs : "a validation error");
        fail(s, row, "refused", reason, 0);
    } else if (pid == NULL || strlen(pid) != 36 || strcmp(pid, "00000000-0000-0000-0000-000000000000") == 0) {
        fail(s, row, "transient", "Xero answered PUT /Payments without a PaymentID", 0);
    } else {
        step(s, row, "written", pid, row->target);
    }
    json_decref(doc);
}

/* Brings row one step closer to its target. */
static void process_row(sender_t *s, const row_t *row)
{
    bool have = row->xero_payment[0] != '\0';
    bool matches =
        row->written == row->target &&
        (!have || (strcmp(row->written_tenant, row->tenant) == 0 && strcmp(row->written_invoice, row->invoice) == 0));
    if (have && !matches) {
        if (!connected(s, row, row->written_token_id, row->written_tenant))
            return;
        if (delete_payment(s, row, row->xero_payment) == 1)
            step(s, row, "deleted", NULL, 0);
    } else if (!have && row->target > 0) {
        create_payment(s, row);
    } else if (!have && row->unsure) {
        clear_unrecorded(s, row);
    } else {
        step(s, row, "checked", NULL, 0); /* Xero already holds the target */
    }
}

/* Marks the rows without an account, and revives those that have one now. Returns -1 if the database failed. */
static int accounts(gw_fetch_ctx_t *ctx)
{
    const char *account = ctx->cfg->xero_payment_account;
    const char *params[] = {account != NULL ? account : ""};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql_accounts, 1, params);
    if (r == NULL)
        return -1;
    long long unconfigured = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
    long long revived = strtoll(gw_dbs_value(r, 0, 1), NULL, 10);
    gw_dbs_result_free(r);
    if (unconfigured > 0) {
        gw_metrics_writeback("unconfigured", (uint64_t)unconfigured);
        gw_log(GW_LOG_WARN,
               "%lld payment write-back%s to Xero wait as unconfigured: no Xero account to pay into (set "
               "SETTLED_XERO_PAYMENT_ACCOUNT or the organisation's xero_payment_account)",
               unconfigured, unconfigured == 1 ? "" : "s");
    }
    if (revived > 0)
        gw_log(GW_LOG_INFO, "%lld unconfigured payment write-back%s to Xero now have an account: due now", revived,
               revived == 1 ? "" : "s");
    return 0;
}

/* Parks the rows whose senders kept dying. Returns -1 if the database failed. */
static int park_lost(gw_fetch_ctx_t *ctx)
{
    char max[16];
    snprintf(max, sizeof(max), "%d", ctx->cfg->worker_max_attempts);
    const char *params[] = {max};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql_park_lost, 1, params);
    if (r == NULL)
        return -1;
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
        const char *id = gw_dbs_value(r, i, 0), *error = gw_dbs_value(r, i, 4);
        gw_metrics_writeback("dead", 1);
        gw_log(GW_LOG_WARN, "write-back %s dead (organisation %s, payment %s): %s", id, gw_dbs_value(r, i, 1),
               gw_dbs_value(r, i, 2), error);
        gw_alert_writeback("dead", id, strtoll(gw_dbs_value(r, i, 1), NULL, 10), gw_dbs_value(r, i, 2),
                           atoi(gw_dbs_value(r, i, 3)), error);
    }
    gw_dbs_result_free(r);
    return 0;
}

/* One round, with the stop flag (NULL: none): rows not started once it is set are given back, due now. */
static int round_until(gw_fetch_ctx_t *ctx, const char *owner, int limit, const atomic_bool *stop)
{
    if (ctx->read_only)
        return 0; /* a dry run never writes to Xero */
    if (accounts(ctx) != 0 || park_lost(ctx) != 0) {
        gw_log_limited(&db_failed_log, "write-back: %s", gw_dbs_error(ctx->db));
        return -1;
    }
    sender_t s = {.ctx = ctx, .owner = owner};
    snprintf(s.lease, sizeof(s.lease), "%d", gw_writeback_lease_ms(ctx->cfg));
    char n[16];
    snprintf(n, sizeof(n), "%d", limit);
    const char *account = ctx->cfg->xero_payment_account;
    const char *params[] = {owner, s.lease, n, account != NULL ? account : ""};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql_claim, 4, params);
    if (r == NULL) {
        gw_log_limited(&db_failed_log, "write-back: claiming failed: %s", gw_dbs_error(ctx->db));
        return -1;
    }
    gw_log_limit_settle(&db_failed_log);
    size_t claimed = gw_dbs_nrows(r);
    for (size_t i = 0; i != claimed; ++i) {
        row_t row;
        read_row(r, i, &row);
        if (stop != NULL && atomic_load(stop))
            fail(&s, &row, "wait", "the sender is stopping", 0);
        else
            process_row(&s, &row);
    }
    gw_dbs_result_free(r);
    return (int)claimed;
}

int gw_writeback_round(gw_fetch_ctx_t *ctx, const char *owner, int limit)
{
    return round_until(ctx, owner, limit, NULL);
}

/* ---- the sender thread ---- */

struct st_gw_writeback_t {
    gw_fetch_ctx_t ctx;
    const atomic_bool *stop;
    pthread_t tid;
    char owner[96];
};

/* Sleeps until notified, the next row is due (at most SETTLED_WORKER_POLL_MS) or the pool stops. */
static void wait_for_work(gw_writeback_t *wb)
{
    gw_dbs_t *db = wb->ctx.db;
    int timeout = wb->ctx.cfg->worker_poll_ms;
    gw_dbs_result_t *r = gw_dbs_query(db, sql_next_due, 0, NULL);
    if (r != NULL && gw_dbs_value(r, 0, 0) != NULL) {
        long long due = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
        if (due < timeout)
            timeout = (int)due;
    }
    gw_dbs_result_free(r);
    if (timeout <= 0)
        return;
    if (gw_dbs_exec(db, "LISTEN " GW_WRITEBACK_CHANNEL, 0, NULL) < 0) {
        usleep(WAIT_SLICE_MS * 1000);
        return;
    }
    for (int waited = 0; waited < timeout && !atomic_load(wb->stop); waited += WAIT_SLICE_MS) {
        int slice = timeout - waited < WAIT_SLICE_MS ? timeout - waited : WAIT_SLICE_MS;
        if (gw_dbs_wait_notify(db, slice) != 0)
            return; /* notified, or the connection broke (the next round reconnects) */
    }
}

static void *sender_main(void *arg)
{
    gw_writeback_t *wb = arg;
    bool db_failed = false;
    while (!atomic_load(wb->stop)) {
        int n = round_until(&wb->ctx, wb->owner, GW_WRITEBACK_BATCH, wb->stop);
        if (n > 0)
            continue;
        if (n < 0) {
            db_failed = true;
            for (int t = 0; t < DB_RETRY_MS && !atomic_load(wb->stop); t += WAIT_SLICE_MS)
                usleep(WAIT_SLICE_MS * 1000);
            continue;
        }
        if (db_failed) {
            /* the database is back: what this sender held when it broke is due now, not in a lease (the next
             * attempt finds by its Reference what an unrecorded call did) */
            const char *params[] = {wb->owner};
            if (gw_dbs_exec(wb->ctx.db, sql_release_mine, 1, params) < 0)
                continue; /* down again: db_failed stays set */
            db_failed = false;
            continue;
        }
        wait_for_work(wb);
    }
    return NULL;
}

gw_writeback_t *gw_writeback_start(const gw_config_t *cfg, const gw_fetch_ctx_t *shared, const atomic_bool *stop,
                                   const char *host, char *err, size_t errlen)
{
    gw_writeback_t *wb = gw_xcalloc(1, sizeof(*wb));
    wb->ctx = *shared;
    wb->ctx.cfg = cfg;
    wb->ctx.token_db = NULL;
    wb->ctx.read_only = false;
    wb->stop = stop;
    snprintf(wb->owner, sizeof(wb->owner), "%s:%d:writeback", host, (int)getpid());
    if ((wb->ctx.db = gw_dbs_connect(cfg->database_url, err, errlen)) == NULL) {
        free(wb);
        return NULL;
    }
    if (pthread_create(&wb->tid, NULL, sender_main, wb) != 0) {
        gw_log(GW_LOG_ERROR, "cannot start the write-back thread: %s", strerror(errno));
        abort();
    }
    return wb;
}

void gw_writeback_stop(gw_writeback_t *wb)
{
    if (wb == NULL)
        return;
    pthread_join(wb->tid, NULL);
    gw_dbs_close(wb->ctx.db);
    free(wb);
}
