/* SPDX-License-Identifier: MIT */
/*
 * mailer.h: the sender of the notification e-mails (the outbox notifications, schema/functions/notifications.sql;
 * docs/collections.md, "E-mail and notifications"). A thread of the worker pool claims due e-mails with a lease
 * (FOR UPDATE SKIP LOCKED, fenced by the lease owner), marks each 'sending' and commits before the SMTP
 * transaction starts, sends it through SETTLED_SMTP_URL (infra/smtp.h) and records the outcome at once: 'sent' on
 * the server's 250; a 4xx or no connection retried on SETTLED_RETRY_SCHEDULE, 'dead' after the last; a 5xx for
 * the sender, the recipient or the message 'dead' at once with the server's reply. A mailer that dies mid-send
 * leaves the row 'sending' until its lease expires; then it is sent again, with the same Message-ID: the only way a
 * message goes out twice is a crash between the server's 250 and the commit of 'sent'.
 *
 * Reminders carry List-Unsubscribe (and List-Unsubscribe-Post: List-Unsubscribe=One-Click when SETTLED_PORTAL_URL
 * is set); receipts and notices do not.
 *
 * Blocking: its own thread (gw_mailer_start), or a caller that may block (gw_mailer_round).
 */
#ifndef GW_MAILER_H
#define GW_MAILER_H

#include <stdatomic.h>
#include <stddef.h>
#include "config.h"
#include "db.h"

/* The LISTEN channel notify_enqueue notifies. */
#define GW_MAILER_CHANNEL "settled_notifications"
/* E-mails claimed at once. */
#define GW_MAILER_BATCH 10

/* One round of a mailer named owner on db: parks e-mails whose senders kept dying, claims up to limit due ones
 * and sends each. Returns how many were claimed, or -1 when the database failed. */
int gw_mailer_round(const gw_config_t *cfg, gw_dbs_t *db, const char *owner, int limit, const atomic_bool *stop);

typedef struct st_gw_mailer_t gw_mailer_t;

/* Starts the mailer thread with a session of its own; it stops once *stop is true. Without SETTLED_SMTP_URL no
 * thread is started (e-mails wait in the outbox) and *mailer is NULL. Returns 0, or -1 with err when the database
 * cannot be reached. */
int gw_mailer_start(const gw_config_t *cfg, const atomic_bool *stop, const char *host, gw_mailer_t **mailer, char *err,
                    size_t errlen);
/* Waits for the thread (*stop must be true already) and frees it; NULL is allowed. */
void gw_mailer_stop(gw_mailer_t *m);

#endif
