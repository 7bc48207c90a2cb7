/* SPDX-License-Identifier: MIT */
/*
 * accounts.h: the portal's accounts in the database, for the command line (`settled user`): finding an
 * organisation, adding, inviting, listing and disabling users, through the functions of schema/functions/auth.sql
 * (whose header lists the ones the portal's routes call). Passwords arrive here already hashed
 * (gw_auth_password_hash) and tokens as digests only (gw_auth_token_digest): nothing here sees a secret.
 *
 * Blocking (a database session): the CLI and offloaded tasks only.
 */
#ifndef GW_ACCOUNTS_H
#define GW_ACCOUNTS_H

#include <stdint.h>
#include "db.h"
#include "err.h"
#include "notifications.h"

/* The results of auth_user_create, auth_invitation_create and auth_user_disable (schema/functions/auth.sql), as
 * constants compared by pointer. */
extern const char gw_accounts_created[];
extern const char gw_accounts_email_taken[];
extern const char gw_accounts_email_invalid[];
extern const char gw_accounts_role_invalid[];
extern const char gw_accounts_customer_required[];
extern const char gw_accounts_customer_not_allowed[];
extern const char gw_accounts_customer_unknown[];
extern const char gw_accounts_disabled[];
extern const char gw_accounts_already[];
extern const char gw_accounts_unknown[];
extern const char gw_accounts_pending[];

/* The id of the organisation with slug, into *id. Returns 1 when it exists, 0 when it does not, -1 with err set. */
GW_MUSTCHECK int gw_accounts_organisation(gw_dbs_t *s, const char *slug, int64_t *id, gw_err_t *err);

/* Adds a user to organisation org: role "admin" or "client", customer the client's customer id (0 for none),
 * password_hash from gw_auth_password_hash. Audited as actor with correlation. Returns 0 with *result one of the
 * constants above (gw_accounts_created with *user_id set, or why not), or -1 with err set. */
GW_MUSTCHECK int gw_accounts_user_create(gw_dbs_t *s, int64_t org, const char *email, const char *role,
                                         int64_t customer, const char *password_hash, const char *actor,
                                         const char *correlation, const char **result, int64_t *user_id, gw_err_t *err);

/* Stores an invitation (valid 72 hours) for email to organisation org with role and customer (0 for none), of
 * which digest is the token's digest, and enqueues mail (rendered with its link, account_mail.h; NULL: nothing is
 * mailed) in the same transaction. Returns 0 with *result (gw_accounts_created with the expiry, as UTC text, in
 * expires (64 bytes) and the outbox row's id in *notification (0: not mailed), or why not), or -1 with err set. */
GW_MUSTCHECK int gw_accounts_invite(gw_dbs_t *s, int64_t org, const char *email, const char *role, int64_t customer,
                                    const char digest[65], const gw_rendered_t *mail, const char *actor,
                                    const char *correlation, const char **result, char expires[64],
                                    int64_t *notification, gw_err_t *err);

/* Disables the user of organisation org with email and revokes all its refresh tokens. Returns 0 with *result
 * (gw_accounts_disabled, gw_accounts_already: it was disabled before, gw_accounts_pending: a sign-up still waiting
 * for its verification or approval, left as it is, or gw_accounts_unknown), the number of
 * refresh tokens revoked in *revoked and the user's id in *user_id (0 when unknown), or -1 with err set. */
GW_MUSTCHECK int gw_accounts_user_disable(gw_dbs_t *s, int64_t org, const char *email, const char *actor,
                                          const char *correlation, const char **result, long long *revoked,
                                          int64_t *user_id, gw_err_t *err);

/* Stores a password reset (single use, 30 minutes) of digest for the active user of organisation org with email
 * (audited). Returns 0 with *user_id (0: no active user has that address, nothing stored) and the expiry as UTC text
 * in expires, or -1 with err set. */
GW_MUSTCHECK int gw_accounts_reset_create(gw_dbs_t *s, int64_t org, const char *email, const char digest[65],
                                          const char *correlation, int64_t *user_id, char expires[64], gw_err_t *err);

/* One user as `settled user list` shows it: never its password hash. Strings point into the result. */
typedef struct st_gw_account_t {
    const char *id, *organisation, *email, *role, *customer_id, *status, *created_at, *last_login_at;
} gw_account_t;

/* Calls on_user for every user (of organisation org, or of all when org is 0), by organisation and id. Returns the
 * number of users, or -1 with err set. */
GW_MUSTCHECK long long gw_accounts_user_list(gw_dbs_t *s, int64_t org,
                                             void (*on_user)(void *arg, const gw_account_t *u), void *arg,
                                             gw_err_t *err);

#endif
