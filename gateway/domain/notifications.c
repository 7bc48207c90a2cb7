/* SPDX-License-Identifier: MIT */
/*
 * notifications.c: rendering the notification templates (templates.h) and enqueueing the rendered messages into
 * the outbox (notify_enqueue). See notifications.h for the placeholders and the amount format.
 */
#include "notifications.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mem.h"
#include "money.h"
#include "templates.h"

static const char *const kinds[] = {"invoice_due", "due_today",         "overdue",           "final_notice",
                                    "receipt",     "collection_failed", "method_expiring",   "mandate_ended",
                                    "invitation",  "password_reset",    "email_verification"};

bool gw_notify_kind_valid(const char *kind)
{
    for (size_t i = 0; kind != NULL && i != sizeof(kinds) / sizeof(kinds[0]); ++i)
        if (strcmp(kind, kinds[i]) == 0)
            return true;
    return false;
}

bool gw_notify_is_reminder(const char *kind)
{
    return kind != NULL && (strcmp(kind, "invoice_due") == 0 || strcmp(kind, "due_today") == 0 ||
                            strcmp(kind, "overdue") == 0 || strcmp(kind, "final_notice") == 0);
}

bool gw_notify_is_account(const char *kind)
{
    return kind != NULL && (strcmp(kind, "invitation") == 0 || strcmp(kind, "password_reset") == 0 ||
                            strcmp(kind, "email_verification") == 0);
}

int gw_notify_format_amount(int64_t minor, const char *currency, char *buf, size_t cap)
{
    char code[4], plain[48];
    int e;
    if (currency == NULL || gw_currency_normalise(currency, code) != 0 || (e = gw_currency_exponent(code)) < 0)
        return -1;
    if (gw_money_format(minor, e, plain, sizeof(plain)) < 0)
        return -1;
    /* plain is [-]digits[.digits]: group the integer digits by three */
    const char *digits = plain[0] == '-' ? plain + 1 : plain;
    const char *dot = strchr(digits, '.');
    size_t nint = dot != NULL ? (size_t)(dot - digits) : strlen(digits);
    char out[80];
    size_t len = 0;
    len += (size_t)snprintf(out + len, sizeof(out) - len, "%s %s", code, plain[0] == '-' ? "-" : "");
    for (size_t i = 0; i != nint; ++i) {
        if (i != 0 && (nint - i) % 3 == 0)
            out[len++] = ',';
        out[len++] = digits[i];
    }
    out[len] = '\0';
    if (dot != NULL)
        len += (size_t)snprintf(out + len, sizeof(out) - len, "%s", dot);
    if (len + 1 > cap)
        return -1;
    memcpy(buf, out, len + 1);
    return (int)len;
}

/* Appends value: HTML-escaped (html), else with control characters as spaces. */
static void put_value(gw_strbuf_t *b, const char *v, bool html)
{
    for (; *v != '\0'; ++v) {
        unsigned char c = (unsigned char)*v;
        if (html && c == '<')
            gw_strbuf_put(b, "&lt;", 4);
        else if (html && c == '>')
            gw_strbuf_put(b, "&gt;", 4);
        else if (html && c == '&')
            gw_strbuf_put(b, "&amp;", 5);
        else if (html && c == '"')
            gw_strbuf_put(b, "&quot;", 6);
        else if (html && c == '\'')
            gw_strbuf_put(b, "&#39;", 5);
        else if (c < 0x20 || c == 0x7f)
            gw_strbuf_put(b, " ", 1);
        else
            gw_strbuf_put(b, v, 1);
    }
}

/* The value of placeholder name (len bytes), its fallback when missing; NULL for an unknown name. */
static const char *lookup(const gw_notify_values_t *v, const char *name, size_t len, char *amount, size_t cap)
{
#define IS(s) (len == sizeof(s) - 1 && memcmp(name, s, len) == 0)
    const char *value;
    if (IS("customer_name"))
        return v->customer_name != NULL && v->customer_name[0] != '\0' ? v->customer_name : "customer";
    if (IS("invoice_number"))
        value = v->invoice_number;
    else if (IS("amount"))
        value =
            v->has_amount && gw_notify_format_amount(v->amount_minor, v->currency, amount, cap) >= 0 ? amount : NULL;
    else if (IS("due_date"))
        value = v->due_date;
    else if (IS("payment_link"))
        value = v->payment_link;
    else if (IS("organisation_name"))
        value = v->organisation_name;
    else if (IS("link"))
        value = v->link;
    else
        return NULL;
#undef IS
    return value != NULL && value[0] != '\0' ? value : "-";
}

/* Renders template text [s, s + n) into out. Returns 0, or -1 with err for an unknown or unclosed placeholder. */
static int render(const char *s, size_t n, const gw_notify_values_t *v, bool html, gw_strbuf_t *out, const char *file,
                  char *err, size_t errlen)
{
    const char *end = s + n;
    while (s < end) {
        const char *open = NULL;
        for (const char *p = s; p + 1 < end; ++p)
            if (p[0] == '{' && p[1] == '{') {
                open = p;
                break;
            }
        if (open == NULL) {
            gw_strbuf_put(out, s, (size_t)(end - s));
            break;
        }
        gw_strbuf_put(out, s, (size_t)(open - s));
        const char *name = open + 2, *close = NULL;
        for (const char *p = name; p + 1 < end; ++p)
            if (p[0] == '}' && p[1] == '}') {
                close = p;
                break;
            }
        char amount[80];
        const char *value = close != NULL ? lookup(v, name, (size_t)(close - name), amount, sizeof(amount)) : NULL;
        if (value == NULL) {
            snprintf(err, errlen, "template %s: unknown placeholder {{%.*s}}", file,
                     close != NULL ? (int)(close - name) : 0, name);
            return -1;
        }
        put_value(out, value, html);
        s = close + 2;
    }
    if (out->p == NULL)
        gw_strbuf_put(out, "", 0);
    return 0;
}

static const gw_template_file_t *find_template(const char *kind, const char *ext)
{
    char name[64];
    snprintf(name, sizeof(name), "%s.%s", kind, ext);
    for (size_t i = 0; i != gw_template_nfiles; ++i)
        if (gw_template_files[i].name != NULL && strcmp(gw_template_files[i].name, name) == 0)
            return &gw_template_files[i];
    return NULL;
}

int gw_notify_render(const char *kind, const gw_notify_values_t *values, gw_rendered_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const gw_template_file_t *txt = kind != NULL ? find_template(kind, "txt") : NULL;
    const gw_template_file_t *html = kind != NULL ? find_template(kind, "html") : NULL;
    if (txt == NULL || html == NULL) {
        snprintf(err, errlen, "no template for notifications of kind %s", kind != NULL ? kind : "(none)");
        return -1;
    }
    /* the text template: "Subject: ...\n\n" then the body */
    static const char prefix[] = "Subject: ";
    const char *nl = memchr(txt->data, '\n', txt->len);
    if (txt->len < sizeof(prefix) - 1 || memcmp(txt->data, prefix, sizeof(prefix) - 1) != 0 || nl == NULL) {
        snprintf(err, errlen, "template %s: the first line must be \"Subject: ...\"", txt->name);
        return -1;
    }
    const char *body = nl + 1, *end = txt->data + txt->len;
    if (body < end && *body == '\n')
        ++body;
    gw_strbuf_t subject = {0}, text = {0}, h = {0};
    const char *subj = txt->data + sizeof(prefix) - 1;
    if (render(subj, (size_t)(nl - subj), values, false, &subject, txt->name, err, errlen) != 0 ||
        render(body, (size_t)(end - body), values, false, &text, txt->name, err, errlen) != 0 ||
        render(html->data, html->len, values, true, &h, html->name, err, errlen) != 0) {
        free(subject.p), free(text.p), free(h.p);
        return -1;
    }
    /* the text body keeps its line breaks: only the values lost theirs */
    out->subject = subject.p;
    out->text = text.p;
    out->html = h.p;
    return 0;
}

void gw_rendered_free(gw_rendered_t *r)
{
    if (r == NULL)
        return;
    free(r->subject), free(r->text), free(r->html);
    memset(r, 0, sizeof(*r));
}

static const char sql_enqueue[] = "SELECT id, status, created FROM notify_enqueue($1::bigint, $2::bigint, $3, $4, $5,"
                                  " $6, $7, $8, $9, $10, $11, $12)";

int gw_notify_enqueue(gw_dbs_t *db, const gw_notify_t *n, const gw_notify_values_t *values, char id[24],
                      char status[16], bool *created, char *err, size_t errlen)
{
    if (!gw_notify_kind_valid(n->kind)) {
        snprintf(err, errlen, "unknown notification kind %s", n->kind != NULL ? n->kind : "(none)");
        return -1;
    }
    gw_rendered_t r;
    if (gw_notify_render(n->kind, values, &r, err, errlen) != 0)
        return -1;
    char org[24], customer[24];
    snprintf(org, sizeof(org), "%lld", (long long)n->organisation_id);
    snprintf(customer, sizeof(customer), "%lld", (long long)n->customer_id);
    bool email = strcmp(n->channel, "email") == 0;
    const char *params[] = {
        org,       customer, n->invoice_id,         n->kind,  n->channel,    n->dedupe_key, email ? n->recipient : NULL,
        r.subject, r.text,   email ? r.html : NULL, n->actor, n->correlation};
    gw_dbs_result_t *res = gw_dbs_query(db, sql_enqueue, 12, params);
    gw_rendered_free(&r);
    if (res == NULL) {
        snprintf(err, errlen, "cannot enqueue the notification: %s", gw_dbs_error(db));
        return -1;
    }
    snprintf(id, 24, "%s", gw_dbs_value(res, 0, 0));
    snprintf(status, 16, "%s", gw_dbs_value(res, 0, 1));
    *created = strcmp(gw_dbs_value(res, 0, 2), "t") == 0;
    gw_dbs_result_free(res);
    return 0;
}

static const char sql_values[] =
    "SELECT c.name, c.email, o.name, i.invoice_number, upper(i.currency_code), i.amount_due::text, i.due_date::text"
    "  FROM customers c JOIN organisations o ON o.id = c.organisation_id"
    "  LEFT JOIN xero_invoices i ON i.organisation_id = c.organisation_id AND i.settled_invoice_id = $3"
    " WHERE c.organisation_id = $1::bigint AND c.id = $2::bigint";

int gw_notify_customer(gw_dbs_t *db, const char *portal_url, const gw_notify_t *n, bool has_amount,
                       int64_t amount_minor, const char *currency, char id[24], char status[16], bool *created,
                       char *err, size_t errlen)
{
    char org[24], customer[24];
    snprintf(org, sizeof(org), "%lld", (long long)n->organisation_id);
    snprintf(customer, sizeof(customer), "%lld", (long long)n->customer_id);
    const char *params[] = {org, customer, n->invoice_id};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_values, 3, params);
    if (r == NULL) {
        snprintf(err, errlen, "cannot read the customer: %s", gw_dbs_error(db));
        return -1;
    }
    if (gw_dbs_nrows(r) != 1) {
        snprintf(err, errlen, "the organisation has no customer %s", customer);
        gw_dbs_result_free(r);
        return 1;
    }
    gw_notify_t m = *n;
    if (m.recipient == NULL)
        m.recipient = gw_dbs_value(r, 0, 1);
    if (strcmp(m.channel, "email") == 0 && (m.recipient == NULL || m.recipient[0] == '\0')) {
        snprintf(err, errlen, "customer %s has no e-mail address", customer);
        gw_dbs_result_free(r);
        return 1;
    }
    gw_notify_values_t v = {.customer_name = gw_dbs_value(r, 0, 0),
                            .organisation_name = gw_dbs_value(r, 0, 2),
                            .invoice_number = gw_dbs_value(r, 0, 3),
                            .currency = has_amount ? currency : gw_dbs_value(r, 0, 4),
                            .amount_minor = amount_minor,
                            .has_amount = has_amount,
                            .due_date = gw_dbs_value(r, 0, 6)};
    const char *due = gw_dbs_value(r, 0, 5);
    int e = v.currency != NULL ? gw_currency_exponent(v.currency) : -1;
    if (!has_amount && due != NULL && e >= 0 && gw_money_parse(due, strlen(due), e, &v.amount_minor) == 0)
        v.has_amount = true;
    char link[600];
    if (portal_url != NULL && portal_url[0] != '\0' && n->invoice_id != NULL) {
        size_t len = strlen(portal_url);
        snprintf(link, sizeof(link), "%.*s/invoices/%s", (int)(portal_url[len - 1] == '/' ? len - 1 : len), portal_url,
                 n->invoice_id);
        v.payment_link = link;
    }
    int rc = gw_notify_enqueue(db, &m, &v, id, status, created, err, errlen);
    gw_dbs_result_free(r);
    return rc;
}
