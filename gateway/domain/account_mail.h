/* SPDX-License-Identifier: MIT */
/*
 * account_mail.h: the e-mails of the portal's accounts (invitations, password resets, e-mail verification), sent
 * through the notification outbox (notifications.h) to a user or an invited address rather than to a customer.
 * The caller draws a one-time token (gw_auth_refresh_token: only its digest is stored), makes its link here and
 * renders the message with it; the SQL function that stores the digest enqueues the rendered message in the same
 * transaction (auth_invitation_mail, auth_reset_mail, auth_register of schema/functions/auth.sql). The rendered
 * bodies are the only place the token is in clear, until the message is sent or dead (docs/security.md).
 *
 * Blocking (a database session): the offload pool or the command line.
 */
#ifndef GW_ACCOUNT_MAIL_H
#define GW_ACCOUNT_MAIL_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "db.h"
#include "err.h"
#include "notifications.h"

/* Where each link points, under the portal's address (SETTLED_PORTAL_URL, else http://SETTLED_LISTEN). The token
 * rides in the fragment, which browsers never send to a server nor in a Referer. */
#define GW_ACCOUNT_PAGE_INVITE "invite"
#define GW_ACCOUNT_PAGE_RESET "reset"
#define GW_ACCOUNT_PAGE_VERIFY "verify-email"

/* Writes <base>/<page>#token=<token> into out (cap bytes); base is the portal's address of cfg, or base_override
 * (its trailing '/' dropped) when not NULL. */
void gw_account_mail_link(const gw_config_t *cfg, const char *base_override, const char *page, const char *token,
                          char *out, size_t cap);

/* Renders the message of kind ("invitation", "password_reset", "email_verification") for organisation org, whose
 * name the templates show (read on db), with link. Fills *out (free with gw_rendered_free) and returns 0; -1 with
 * err (gw_err_store_unavailable and the like from the database, gw_err_internal for a template). */
GW_MUSTCHECK int gw_account_mail_render(gw_dbs_t *db, int64_t org, const char *kind, const char *link,
                                        gw_rendered_t *out, gw_err_t *err);

/* Whether account e-mails can go out: SETTLED_SMTP_URL is set (else they would wait in the outbox). */
bool gw_account_mail_configured(const gw_config_t *cfg);

#endif
