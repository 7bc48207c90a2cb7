/* SPDX-License-Identifier: MIT */
/*
 * dunning.c: the dunning evaluation and the unsubscribe token (dunning.h). What is due is decided in SQL
 * (schema/functions/dunning.sql: dunning_due, dunning_receipts_due, dunning_warnings_due); here each row is
 * rendered from its template and enqueued under its dedupe key.
 */
#include "dunning.h"
#include <errno.h>
#include <inttypes.h>
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

#define WAIT_SLICE_MS 250
#define ACTOR "system:dunning"

static const char sql_due[] = "SELECT customer_id, settled_invoice_id, kind, channel, dedupe_key, offset_days,"
                              " step_date, due_date, invoice_number, currency, amount_due, outstanding_minor,"
                              " customer_name, email, organisation_name"
                              " FROM dunning_due($1::bigint, coalesce($2::timestamptz, now()), $3::integer)";
static const char sql_still_due[] = "SELECT dunning_still_due($1::bigint, $2)";
static const char sql_receipts[] = "SELECT payment_id, customer_id, settled_invoice_id, dedupe_key, invoice_number,"
                                   " currency, amount_minor, due_date, customer_name, email, organisation_name"
                                   " FROM dunning_receipts_due($1::bigint)";
static const char sql_warnings[] = "SELECT method_id, customer_id, kind, dedupe_key, settled_invoice_id, due_date,"
                                   " invoice_number, currency, amount_due, outstanding_minor, customer_name, email,"
                                   " organisation_name"
                                   " FROM dunning_warnings_due($1::bigint, coalesce($2::timestamptz, now()))";
static const char sql_orgs[] = "SELECT id, slug FROM dunning_organisations($1)";

static gw_log_limit_t failed_log = GW_LOG_LIMIT_INIT(GW_LOG_WARN, 60000);

/* portal_url/invoices/<invoice> into buf, or NULL without either. */
static const char *payment_link(const gw_config_t *cfg, const char *invoice, char *buf, size_t cap)
{
    if (cfg->portal_url == NULL || cfg->portal_url[0] == '\0' || invoice == NULL)
        return NULL;
    size_t len = strlen(cfg->portal_url);
    snprintf(buf, cap, "%.*s/invoices/%s", (int)(cfg->portal_url[len - 1] == '/' ? len - 1 : len), cfg->portal_url,
             invoice);
    return buf;
}

/* The amount a reminder shows: the ledger's outstanding amount when reconciled, else Xero's amount due. */
static bool reminder_amount(const char *currency, const char *amount_due, const char *outstanding, int64_t *minor)
{
    char *end = NULL;
    if (outstanding != NULL) {
        errno = 0;
        long long v = strtoll(outstanding, &end, 10);
        if (errno == 0 && end != outstanding && *end == '\0') {
            *minor = v;
            return true;
        }
    }
    int e = currency != NULL ? gw_currency_exponent(currency) : -1;
    return amount_due != NULL && e >= 0 && gw_money_parse(amount_due, strlen(amount_due), e, minor) == 0;
}

static void log_enqueued(const char *what, int64_t org, const char *key, const char *status)
{
    if (!gw_log_enabled(GW_LOG_INFO))
        return;
    gw_logline_t line;
    gw_log_begin(&line, GW_LOG_INFO, what);
    gw_log_int(&line, "organisation", org);
    gw_log_str(&line, "dedupe_key", key, strlen(key));
    gw_log_str(&line, "status", status, strlen(status));
    gw_log_end(&line);
}

/* One reminder in its transaction: the invoice still open, then the enqueue. */
typedef struct st_reminder_tx_t {
    const gw_notify_t *n;
    const gw_notify_values_t *v;
    bool open, created;
    char id[24], status[16];
    char msg[512];
} reminder_tx_t;

static int reminder_body(gw_dbs_t *db, void *arg, gw_err_t *err)
{
    reminder_tx_t *t = arg;
    t->open = t->created = false;
    char org[24];
    snprintf(org, sizeof(org), "%" PRId64, t->n->organisation_id);
    const char *params[] = {org, t->n->invoice_id};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_still_due, 2, params);
    if (r == NULL)
        return gw_dbs_err(db, err);
    t->open = strcmp(gw_dbs_value(r, 0, 0), "t") == 0;
    gw_dbs_result_free(r);
    if (!t->open)
        return 0;
    if (gw_notify_enqueue(db, t->n, t->v, t->id, t->status, &t->created, t->msg, sizeof(t->msg)) != 0)
        return gw_err_set(err, gw_err_internal, 500, "%s", t->msg);
    return 0;
}

static int reminders(const gw_config_t *cfg, gw_dbs_t *db, int64_t org, const char *org_text, const char *at,
                     gw_dunning_counts_t *c, char *err, size_t errlen)
{
    char grace[16];
    snprintf(grace, sizeof(grace), "%d", cfg->dunning_grace_days);
    const char *params[] = {org_text, at, grace};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_due, 3, params);
    if (r == NULL) {
        snprintf(err, errlen, "dunning: cannot evaluate the reminders: %s", gw_dbs_error(db));
        return -1;
    }
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
        const char *channel = gw_dbs_value(r, i, 3), *email = gw_dbs_value(r, i, 13);
        const char *key = gw_dbs_value(r, i, 4), *currency = gw_dbs_value(r, i, 9);
        if (strcmp(channel, "email") == 0 && (email == NULL || email[0] == '\0')) {
            ++c->skipped; /* no address: nothing to send it to (the next evaluation looks again) */
            continue;
        }
        char link[600];
        gw_notify_values_t v = {.customer_name = gw_dbs_value(r, i, 12),
                                .invoice_number = gw_dbs_value(r, i, 8),
                                .currency = currency,
                                .due_date = gw_dbs_value(r, i, 7),
                                .payment_link = payment_link(cfg, gw_dbs_value(r, i, 1), link, sizeof(link)),
                                .organisation_name = gw_dbs_value(r, i, 14)};
        v.has_amount = reminder_amount(currency, gw_dbs_value(r, i, 10), gw_dbs_value(r, i, 11), &v.amount_minor) &&
                       v.amount_minor > 0;
        gw_notify_t n = {.organisation_id = org,
                         .customer_id = strtoll(gw_dbs_value(r, i, 0), NULL, 10),
                         .invoice_id = gw_dbs_value(r, i, 1),
                         .kind = gw_dbs_value(r, i, 2),
                         .channel = channel,
                         .dedupe_key = key,
                         .recipient = strcmp(channel, "email") == 0 ? email : NULL,
                         .actor = ACTOR,
                         .correlation = key};
        reminder_tx_t t = {.n = &n, .v = &v};
        gw_err_t e = GW_ERR_INIT;
        if (gw_dbs_tx(db, reminder_body, &t, &e) != 0) {
            ++c->failed;
            gw_log_limited(&failed_log, "dunning: %s not enqueued: %s", key, e.detail);
            continue;
        }
        if (!t.open) {
            ++c->skipped;
            continue;
        }
        if (t.created) {
            ++c->reminders;
            c->suppressed += strcmp(t.status, "suppressed") == 0;
            log_enqueued("dunning: reminder enqueued", org, key, t.status);
        }
    }
    gw_dbs_result_free(r);
    return 0;
}

/* Enqueues one receipt or warning (no transaction of its own: notify_enqueue is one statement). */
static void enqueue_one(gw_dbs_t *db, gw_notify_t *n, const gw_notify_values_t *v, int *count, gw_dunning_counts_t *c,
                        const char *what)
{
    if (n->recipient == NULL || n->recipient[0] == '\0') {
        ++c->skipped;
        return;
    }
    char id[24], status[16], msg[512];
    bool created = false;
    if (gw_notify_enqueue(db, n, v, id, status, &created, msg, sizeof(msg)) != 0) {
        ++c->failed;
        gw_log_limited(&failed_log, "dunning: %s not enqueued: %s", n->dedupe_key, msg);
        return;
    }
    if (created) {
        ++*count;
        log_enqueued(what, n->organisation_id, n->dedupe_key, status);
    }
}

static int receipts(const gw_config_t *cfg, gw_dbs_t *db, int64_t org, const char *org_text, gw_dunning_counts_t *c,
                    char *err, size_t errlen)
{
    const char *params[] = {org_text};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_receipts, 1, params);
    if (r == NULL) {
        snprintf(err, errlen, "dunning: cannot find the receipts due: %s", gw_dbs_error(db));
        return -1;
    }
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
        char link[600];
        gw_notify_values_t v = {.customer_name = gw_dbs_value(r, i, 8),
                                .invoice_number = gw_dbs_value(r, i, 4),
                                .currency = gw_dbs_value(r, i, 5),
                                .amount_minor = strtoll(gw_dbs_value(r, i, 6), NULL, 10),
                                .has_amount = true,
                                .due_date = gw_dbs_value(r, i, 7),
                                .payment_link = payment_link(cfg, gw_dbs_value(r, i, 2), link, sizeof(link)),
                                .organisation_name = gw_dbs_value(r, i, 10)};
        gw_notify_t n = {.organisation_id = org,
                         .customer_id = strtoll(gw_dbs_value(r, i, 1), NULL, 10),
                         .invoice_id = gw_dbs_value(r, i, 2),
                         .kind = "receipt",
                         .channel = "email",
                         .dedupe_key = gw_dbs_value(r, i, 3),
                         .recipient = gw_dbs_value(r, i, 9),
                         .actor = ACTOR,
                         .correlation = gw_dbs_value(r, i, 3)};
        enqueue_one(db, &n, &v, &c->receipts, c, "dunning: receipt enqueued");
    }
    gw_dbs_result_free(r);
    return 0;
}

static int warnings(const gw_config_t *cfg, gw_dbs_t *db, int64_t org, const char *org_text, const char *at,
                    gw_dunning_counts_t *c, char *err, size_t errlen)
{
    const char *params[] = {org_text, at};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_warnings, 2, params);
    if (r == NULL) {
        snprintf(err, errlen, "dunning: cannot find the warnings due: %s", gw_dbs_error(db));
        return -1;
    }
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
        char link[600];
        const char *currency = gw_dbs_value(r, i, 7);
        gw_notify_values_t v = {.customer_name = gw_dbs_value(r, i, 10),
                                .invoice_number = gw_dbs_value(r, i, 6),
                                .currency = currency,
                                .due_date = gw_dbs_value(r, i, 5),
                                .payment_link = payment_link(cfg, gw_dbs_value(r, i, 4), link, sizeof(link)),
                                .organisation_name = gw_dbs_value(r, i, 12)};
        v.has_amount = reminder_amount(currency, gw_dbs_value(r, i, 8), gw_dbs_value(r, i, 9), &v.amount_minor);
        gw_notify_t n = {.organisation_id = org,
                         .customer_id = strtoll(gw_dbs_value(r, i, 1), NULL, 10),
                         .invoice_id = gw_dbs_value(r, i, 4),
                         .kind = gw_dbs_value(r, i, 2),
                         .channel = "email",
                         .dedupe_key = gw_dbs_value(r, i, 3),
                         .recipient = gw_dbs_value(r, i, 11),
                         .actor = ACTOR,
                         .correlation = gw_dbs_value(r, i, 3)};
        enqueue_one(db, &n, &v, &c->warnings, c, "dunning: warning enqueued");
    }
    gw_dbs_result_free(r);
    return 0;
}

int gw_dunning_evaluate(const gw_config_t *cfg, gw_dbs_t *db, int64_t org, const char *at, gw_dunning_counts_t *counts,
                        char *err, size_t errlen)
{
    char org_text[24];
    snprintf(org_text, sizeof(org_text), "%" PRId64, org);
    /* receipts first: a payment that just settled an invoice is thanked before anything else is looked at */
    if (receipts(cfg, db, org, org_text, counts, err, errlen) != 0 ||
        reminders(cfg, db, org, org_text, at, counts, err, errlen) != 0 ||
        warnings(cfg, db, org, org_text, at, counts, err, errlen) != 0)
        return -1;
    return 0;
}

int gw_dunning_run(const gw_config_t *cfg, gw_dbs_t *db, const char *slug, const char *at, gw_dunning_counts_t *counts,
                   char *err, size_t errlen)
{
    const char *params[] = {slug};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_orgs, 1, params);
    if (r == NULL) {
        snprintf(err, errlen, "dunning: cannot list the organisations: %s", gw_dbs_error(db));
        return -1;
    }
    int n = 0, rc = 0;
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
        if (gw_dunning_evaluate(cfg, db, strtoll(gw_dbs_value(r, i, 0), NULL, 10), at, counts, err, errlen) != 0) {
            rc = -1; /* the next organisations still get theirs; the error is the last one's */
            continue;
        }
        ++n;
    }
    gw_dbs_result_free(r);
    return rc != 0 ? -1 : n;
}

/* ---- the thread ---- */

struct st_gw_dunning_t {
    const gw_config_t *cfg;
    gw_dbs_t *db;
    const atomic_bool *stop;
    pthread_t tid;
};

static void *dunning_main(void *arg)
{
    gw_dunning_t *d = arg;
    while (!atomic_load(d->stop)) {
        gw_dunning_counts_t c = {0};
        char err[600];
        if (gw_dunning_run(d->cfg, d->db, NULL, NULL, &c, err, sizeof(err)) < 0)
            gw_log_limited(&failed_log, "%s", err);
        else
            gw_log_limit_settle(&failed_log);
        if (c.reminders + c.receipts + c.warnings != 0)
            gw_log(GW_LOG_INFO, "dunning: %d reminders (%d suppressed), %d receipts, %d warnings enqueued", c.reminders,
                   c.suppressed, c.receipts, c.warnings);
        long long wait = (long long)d->cfg->dunning_interval * 1000;
        for (long long t = 0; t < wait && !atomic_load(d->stop); t += WAIT_SLICE_MS)
            usleep(WAIT_SLICE_MS * 1000);
    }
    return NULL;
}

int gw_dunning_start(const gw_config_t *cfg, const atomic_bool *stop, const char *host, gw_dunning_t **out, char *err,
                     size_t errlen)
{
    (void)host;
    *out = NULL;
    if (cfg->dunning_interval <= 0)
        return 0;
    gw_dunning_t *d = gw_xcalloc(1, sizeof(*d));
    d->cfg = cfg;
    d->stop = stop;
    if ((d->db = gw_dbs_connect(cfg->database_url, err, errlen)) == NULL) {
        free(d);
        return -1;
    }
    if (pthread_create(&d->tid, NULL, dunning_main, d) != 0) {
        gw_log(GW_LOG_ERROR, "cannot start the dunning thread: %s", strerror(errno));
        abort();
    }
    *out = d;
    return 0;
}

void gw_dunning_stop(gw_dunning_t *d)
{
    if (d == NULL)
        return;
    pthread_join(d->tid, NULL);
    gw_dbs_close(d->db);
    free(d);
}

/* ---- the unsubscribe token ---- */

/* The token key, derived from SETTLED_SECRET_KEY; -1 without one. */
static int token_key(const gw_config_t *cfg, unsigned char out[32])
{
    unsigned char master[GW_CRYPTO_KEY_LEN];
    gw_err_t err = GW_ERR_INIT;
    if (cfg->secret_key == NULL || cfg->secret_key[0] == '\0' ||
        gw_crypto_key_from_setting(cfg->secret_key, master, &err) != 0)
        return -1;
    cn_str_t label = CN_STR_LIT("settled unsubscribe");
    int rc = gw_crypto_hmac_sha256(master, sizeof(master), &label, 1, out);
    explicit_bzero(master, sizeof(master));
    return rc;
}

/* The MAC of payload (base64url, no padding) into out[44]; -1 without a key. */
static int token_mac(const gw_config_t *cfg, const char *payload, size_t len, char out[44])
{
    unsigned char key[32], mac[32];
    if (token_key(cfg, key) != 0)
        return -1;
    cn_str_t part = {payload, len};
    int rc = gw_crypto_hmac_sha256(key, sizeof(key), &part, 1, mac);
    explicit_bzero(key, sizeof(key));
    if (rc != 0)
        return -1;
    gw_base64_encode(mac, sizeof(mac), GW_BASE64_URL | GW_BASE64_NOPAD, out);
    return 0;
}

int gw_unsubscribe_token(const gw_config_t *cfg, int64_t org, int64_t customer, char *out)
{
    char payload[64], mac[44];
    int n = snprintf(payload, sizeof(payload), "u1.%" PRId64 ".%" PRId64, org, customer);
    if (org <= 0 || customer <= 0 || token_mac(cfg, payload, (size_t)n, mac) != 0)
        return -1;
    return snprintf(out, GW_UNSUBSCRIBE_TOKEN_MAX, "%s.%s", payload, mac);
}

/* A positive decimal id of at most 18 digits at [p, end), without a leading zero. */
static bool parse_id(const char *p, const char *end, int64_t *out)
{
    if (end - p < 1 || end - p > 18 || *p == '0')
        return false;
    int64_t v = 0;
    for (; p != end; ++p) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return true;
}

int gw_unsubscribe_verify(const gw_config_t *cfg, const char *token, size_t len, int64_t *org, int64_t *customer)
{
    *org = *customer = 0;
    if (len < 3 + 43 || len >= GW_UNSUBSCRIBE_TOKEN_MAX || memcmp(token, "u1.", 3) != 0)
        return -1;
    const char *end = token + len, *mac = end - 43;
    if (mac[-1] != '.')
        return -1;
    const char *p = token + 3, *dot = memchr(p, '.', (size_t)(mac - 1 - p));
    int64_t o, c;
    if (dot == NULL || !parse_id(p, dot, &o) || !parse_id(dot + 1, mac - 1, &c))
        return -1;
    char want[44];
    if (token_mac(cfg, token, (size_t)(mac - 1 - token), want) != 0 || !gw_crypto_equal(want, mac, 43))
        return -1;
    *org = o, *customer = c;
    return 0;
}

int gw_unsubscribe_url(const gw_config_t *cfg, int64_t org, int64_t customer, char *out, size_t cap)
{
    const char *base = cfg->public_url != NULL && cfg->public_url[0] != '\0' ? cfg->public_url : cfg->portal_url;
    char token[GW_UNSUBSCRIBE_TOKEN_MAX];
    if (base == NULL || base[0] == '\0' || gw_unsubscribe_token(cfg, org, customer, token) < 0)
        return -1;
    size_t len = strlen(base);
    int n =
        snprintf(out, cap, "%.*s/v1/unsubscribe?token=%s", (int)(base[len - 1] == '/' ? len - 1 : len), base, token);
    return n > 0 && (size_t)n < cap ? n : -1;
}
