/* SPDX-License-Identifier: MIT */
/*
 * notifications.h: the messages settled sends customers (docs/collections.md, "E-mail and notifications"). A
 * message is rendered from the templates of gateway/templates/ (compiled in: templates.h) when it is enqueued, and
 * stored rendered in the outbox (table notifications; notify_enqueue in schema/functions/notifications.sql), from
 * which the mailer (mailer.h) sends the e-mails.
 *
 * A template is <kind>.txt (a first line "Subject: ...", a blank line, the plain-text body) and <kind>.html (the
 * HTML body). Placeholders are {{name}}: customer_name, invoice_number, amount, due_date, payment_link,
 * organisation_name, link (the one-time link of an account e-mail: account_mail.h). The amount is the currency's code
 * and the decimal with exactly the currency's ISO 4217 decimals and a comma between thousands ("GBP 1,234.50", "JPY
 * 1,235", "KWD 0.125"), from minor units (money.h), never a float. In the HTML body every value is HTML-escaped; in the
 * subject and text body control characters become spaces (no header injection). A value that is missing renders as its
 * fallback (customer_name: "customer", others: "-"); an unknown placeholder is an error.
 *
 * Blocking: gw_notify_enqueue runs a statement on a blocking session (the offload pool, a worker, the CLI).
 */
#ifndef GW_NOTIFICATIONS_H
#define GW_NOTIFICATIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "db.h"

/* What a template may show; NULL (has_amount false) when unknown. */
typedef struct st_gw_notify_values_t {
    const char *customer_name;
    const char *invoice_number;
    const char *currency; /* ISO 4217 code of amount_minor */
    int64_t amount_minor;
    bool has_amount;
    const char *due_date; /* YYYY-MM-DD */
    const char *payment_link;
    const char *organisation_name;
    const char *link; /* the one-time link of an account e-mail (invitation, reset, verification) */
} gw_notify_values_t;

/* A rendered message (malloc'd strings). */
typedef struct st_gw_rendered_t {
    char *subject;
    char *text;
    char *html;
} gw_rendered_t;

/* Whether kind is one of the notification kinds of the outbox. */
bool gw_notify_kind_valid(const char *kind);
/* Whether kind is a reminder (a customer may opt out of those; never of receipts and notices). */
bool gw_notify_is_reminder(const char *kind);
/* Whether kind is an account e-mail (invitation, password_reset, email_verification: account_mail.h), which goes
 * to a user or an invited address rather than a customer and carries a one-time link. */
bool gw_notify_is_account(const char *kind);

/* Formats minor units of currency as the templates show them ("GBP 1,234.50") into buf. Returns the length, or -1
 * for an unknown currency or a buffer too small. */
int gw_notify_format_amount(int64_t minor, const char *currency, char *buf, size_t cap);

/* Renders the templates of kind with values into out. Returns 0; -1 with err when kind has no template or a
 * template names an unknown placeholder. */
int gw_notify_render(const char *kind, const gw_notify_values_t *values, gw_rendered_t *out, char *err, size_t errlen);
void gw_rendered_free(gw_rendered_t *r);

/* One message to enqueue. */
typedef struct st_gw_notify_t {
    int64_t organisation_id;
    int64_t customer_id;
    const char *invoice_id; /* settled_invoice_id, or NULL */
    const char *kind;
    const char *channel;    /* "email" or "portal" */
    const char *dedupe_key; /* one message per key, ever */
    const char *recipient;  /* e-mail address (channel email) */
    const char *actor;      /* the audit actor, e.g. "system:dunning" */
    const char *correlation;
} gw_notify_t;

/* Renders and enqueues n on db (notify_enqueue: idempotent on the dedupe key; an opted-out customer's reminder is
 * stored suppressed). Writes the row's id and status into id[24] and status[16] (the first row's when the key was
 * used before) and sets *created. Returns 0; -1 with err (rendering, the database). */
int gw_notify_enqueue(gw_dbs_t *db, const gw_notify_t *n, const gw_notify_values_t *values, char id[24],
                      char status[16], bool *created, char *err, size_t errlen);

/* Enqueues n with the values read from the database: the customer's name (and e-mail address, unless
 * n->recipient names one), the organisation's name, and for n->invoice_id the invoice's number, amount due,
 * currency and due date; the payment link is portal_url/invoices/<invoice id> (none without portal_url or an
 * invoice). amount (has_amount) replaces the amount due (a receipt's payment). Returns 0; 1 when the customer is
 * not the organisation's, or an e-mail is asked for a customer without an address; -1 with err. */
int gw_notify_customer(gw_dbs_t *db, const char *portal_url, const gw_notify_t *n, bool has_amount,
                       int64_t amount_minor, const char *currency, char id[24], char status[16], bool *created,
                       char *err, size_t errlen);

#endif
