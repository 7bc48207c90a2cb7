/* SPDX-License-Identifier: MIT */
/*
 * dunning.h: the dunning evaluation (docs/collections.md, "Reminders and dunning", "Receipts and warnings") and the
 * reminders' unsubscribe token ("Unsubscribe").
 *
 * One evaluation of an organisation at an instant: schema/functions/dunning.sql decides what is due (the reminders
 * of each open invoice's plan, the receipts of succeeded payments, the warnings about an expiring default card or
 * an ended mandate), each row with its dedupe key and never one the outbox already holds; this module renders each
 * (notifications.h) and enqueues it through notify_enqueue, a reminder in one transaction with a last check that
 * its invoice is still open. Idempotent: an evaluation run twice, or on two instances at once, enqueues each key
 * once. `settled dunning --at` runs one at a given instant (tests, operators); the workers run one for every
 * organisation every SETTLED_DUNNING_INTERVAL seconds on a thread of their own (gw_dunning_start).
 *
 * Blocking: everything here runs statements on a blocking session (the dunning thread, the CLI).
 */
#ifndef GW_DUNNING_H
#define GW_DUNNING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "db.h"

/* What one evaluation enqueued (created: new rows; a suppressed reminder is counted in suppressed too). */
typedef struct st_gw_dunning_counts_t {
    int reminders, receipts, warnings, suppressed, skipped, failed;
} gw_dunning_counts_t;

/* Evaluates organisation org at the instant at (an ISO 8601 timestamp PostgreSQL reads; NULL: now) and enqueues
 * what is due, adding to *counts. Returns 0; -1 with err (the database; a message that cannot be rendered is
 * counted failed and logged, and the others still go). */
int gw_dunning_evaluate(const gw_config_t *cfg, gw_dbs_t *db, int64_t org, const char *at, gw_dunning_counts_t *counts,
                        char *err, size_t errlen);

/* Evaluates every organisation (slug NULL) or the one of slug at at. Returns the number of organisations
 * evaluated (0: no such slug), or -1 with err. */
int gw_dunning_run(const gw_config_t *cfg, gw_dbs_t *db, const char *slug, const char *at, gw_dunning_counts_t *counts,
                   char *err, size_t errlen);

/* The periodic evaluation: a thread with its own session evaluating every organisation at once and then every
 * SETTLED_DUNNING_INTERVAL seconds; none when that is 0. It returns soon after *stop becomes true. */
typedef struct st_gw_dunning_t gw_dunning_t;
int gw_dunning_start(const gw_config_t *cfg, const atomic_bool *stop, const char *host, gw_dunning_t **out, char *err,
                     size_t errlen);
void gw_dunning_stop(gw_dunning_t *d);

/* ---- the unsubscribe token ----
 * "u1.<organisation>.<customer>.<mac>", mac = base64url(HMAC-SHA256(k, "u1.<organisation>.<customer>")) with k =
 * HMAC-SHA256(SETTLED_SECRET_KEY's 32 bytes, "settled unsubscribe"): a token names its customer, and only the
 * holder of the key can make one, so no customer can be unsubscribed by guessing ids. It does not expire (a link
 * in an old e-mail still works); changing SETTLED_SECRET_KEY voids every one. */
#define GW_UNSUBSCRIBE_TOKEN_MAX 96

/* Writes customer's token into out (GW_UNSUBSCRIBE_TOKEN_MAX). Returns its length, or -1 without a usable
 * SETTLED_SECRET_KEY. */
int gw_unsubscribe_token(const gw_config_t *cfg, int64_t org, int64_t customer, char *out);
/* Checks token (len bytes; the MAC compared in constant time) and sets *org and *customer. Returns 0, or -1 for a
 * token that is malformed, tampered with, or made with another key (or no key configured). */
int gw_unsubscribe_verify(const gw_config_t *cfg, const char *token, size_t len, int64_t *org, int64_t *customer);
/* The unsubscribe URL of customer: <SETTLED_PUBLIC_URL, else SETTLED_PORTAL_URL>/v1/unsubscribe?token=<token>.
 * Returns its length, or -1 without a base URL or a key (the e-mail then carries the mailto form only). */
int gw_unsubscribe_url(const gw_config_t *cfg, int64_t org, int64_t customer, char *out, size_t cap);

#endif
