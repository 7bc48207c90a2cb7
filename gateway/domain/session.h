/* SPDX-License-Identifier: MIT */
/*
 * session.h: signing in, refreshing and signing out of the portal (POST /v1/auth/login|refresh|logout), on top of
 * the auth module (tokens, password hashes) and the accounts of schema/functions/auth.sql.
 *
 * Sign-in is throttled per account and client address, per address, and per account across addresses, in Redis
 * (shared by every instance); when Redis cannot be reached a stricter throttle local to the process takes over,
 * so signing in keeps working. A wrong password and an unknown address are one answer, in the same time.
 *
 * Blocking (a database session, Redis, a deliberately slow password hash): the offload pool or the command line,
 * never an event loop.
 */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "auth.h"
#include "config.h"
#include "db.h"
#include "err.h"
#include "redis_sync.h"

/* What a session call works with: all borrowed. redis may be NULL (then only the local throttle counts). */
typedef struct st_gw_session_ctx_t {
    const gw_config_t *cfg;
    const gw_auth_t *auth;
    gw_dbs_t *db;
    gw_redis_sync_t *redis;
} gw_session_ctx_t;

/* Who asks: the client's address (text, IPv4 or IPv6), its User-Agent (may be NULL) and the request id. */
typedef struct st_gw_session_client_t {
    const char *ip;
    const char *user_agent;
    const char *correlation;
} gw_session_client_t;

/* A signed-in session: a new access token and the next refresh token. */
typedef struct st_gw_session_tokens_t {
    char *access_token; /* malloc'd: free with gw_session_tokens_free */
    int64_t expires_in; /* seconds the access token is valid */
    char refresh_token[64];
    int64_t refresh_expires_in;
    gw_claims_t claims;
} gw_session_tokens_t;

void gw_session_tokens_free(gw_session_tokens_t *t);

/* Limits of the sign-in throttle: failures per window, per key kind. */
#define GW_SESSION_WINDOW_S 900       /* 15 minutes */
#define GW_SESSION_FAILS_ACCOUNT_IP 5 /* one account from one address */
#define GW_SESSION_FAILS_IP 30        /* one address, any account */
#define GW_SESSION_FAILS_ACCOUNT 100  /* one account from any address (a spread-out guess) */
#define GW_SESSION_LOCAL_DIVISOR 2    /* without Redis each limit is divided by this (and by SETTLED_INSTANCES) */

/*
 * Signs in email with password (len bytes) into organisation (a slug; NULL: whichever organisation has an active
 * user of that address whose password matches). On success fills *out and returns 0. Otherwise returns -1 with
 * err: gw_err_invalid_credentials (401, one answer for an unknown address, a wrong password and a disabled user),
 * gw_err_account_pending (403, the password is right but an admin has not approved the account yet),
 * gw_err_email_unverified (403, the password is right but the registered address is not verified yet),
 * gw_err_too_many_attempts (429, *retry_after set to the seconds to wait), gw_err_store_unavailable (503).
 */
GW_MUSTCHECK int gw_session_login(const gw_session_ctx_t *ctx, const char *organisation, const char *email,
                                  const char *password, size_t len, const gw_session_client_t *client,
                                  gw_session_tokens_t *out, uint32_t *retry_after, gw_err_t *err);

/*
 * Rotates refresh token (len bytes): a new access token and refresh token into *out, returns 0. A token presented
 * again after it was rotated revokes its whole family (committed) and fails like every other refusal: -1 with
 * gw_err_invalid_refresh (401); gw_err_store_unavailable (503).
 */
GW_MUSTCHECK int gw_session_refresh(const gw_session_ctx_t *ctx, const char *token, size_t len,
                                    const gw_session_client_t *client, gw_session_tokens_t *out, gw_err_t *err);

/*
 * Signs out: revokes the family of refresh token (may be NULL) and puts the access token's jti on the deny list in
 * Redis until it expires (claims may be NULL). Returns 0; -1 with gw_err_store_unavailable when the database
 * cannot revoke the refresh token. *denied tells whether the deny list took the jti (false: Redis is down, the
 * access token stays valid until it expires, at most SETTLED_ACCESS_TOKEN_TTL).
 */
GW_MUSTCHECK int gw_session_logout(const gw_session_ctx_t *ctx, const char *token, size_t len,
                                   const gw_claims_t *claims, const gw_session_client_t *client, bool *denied,
                                   gw_err_t *err);

/* The Redis keys of the deny list: one access token (by its jti, set by sign-out), and every access token of a
 * user (set by `settled user disable`). Both expire after the access-token lifetime, when no token they name can be
 * valid any more. There is no way to enable a disabled user again yet; the one that is added must delete the user
 * key (or its fresh tokens are refused until the key expires). */
size_t gw_session_jti_key(const char *jti, char out[96]);
size_t gw_session_user_key(int64_t user_id, char out[64]);

/* Denies every access token of user_id (EX the access-token lifetime): for a disabled user. Returns 0, or -1 when
 * Redis did not take it (the user's access tokens then stay valid until they expire). */
int gw_session_deny_user(gw_redis_sync_t *redis, const gw_config_t *cfg, int64_t user_id);

/*
 * Changes the password of user_id (of organisation_id, active) from current (clen bytes) to fresh (flen bytes):
 * the current one is checked under the sign-in throttle, the new one must follow the rules of auth.h. Every refresh
 * family of the user is revoked (the other devices are signed out; their access tokens run out within
 * SETTLED_ACCESS_TOKEN_TTL) and a new session is opened into *out. Returns 0, or -1 with err:
 * gw_err_password_incorrect (403), gw_err_too_many_attempts (429, *retry_after), gw_err_parameter_invalid (400,
 * 'new_password'), gw_err_unauthenticated (401, the user is no longer active), gw_err_store_unavailable (503).
 */
GW_MUSTCHECK int gw_session_password_change(const gw_session_ctx_t *ctx, int64_t user_id, int64_t organisation_id,
                                            const char *current, size_t clen, const char *fresh, size_t flen,
                                            const gw_session_client_t *client, gw_session_tokens_t *out,
                                            uint32_t *retry_after, gw_err_t *err);

/* Accepts invitation token (tlen bytes) with password: the user is created (the invitation is spent, single use) and
 * signed in into *out. -1 with gw_err_token_invalid (400: unknown, used or expired), gw_err_email_taken (409),
 * gw_err_parameter_invalid (400, 'password'), gw_err_store_unavailable (503). */
GW_MUSTCHECK int gw_session_invitation_accept(const gw_session_ctx_t *ctx, const char *token, size_t tlen,
                                              const char *password, size_t plen, const gw_session_client_t *client,
                                              gw_session_tokens_t *out, gw_err_t *err);

/* A password reset asked for email (in organisation, or NULL: every organisation). Every active account of that
 * address gets a reset token (single use, 30 minutes; its digest stored) and an e-mail with its link
 * (<portal>/reset#token=...) through the outbox; an unknown address gets nothing. Requests count against the "mail"
 * throttle (as a sign-in's failures do): -1 with gw_err_too_many_attempts (429, *retry_after). Otherwise returns 0,
 * whatever happened (a database failure is logged): the caller answers the same for every address. */
GW_MUSTCHECK int gw_session_reset_request(const gw_session_ctx_t *ctx, const char *organisation, const char *email,
                                          const gw_session_client_t *client, uint32_t *retry_after, gw_err_t *err);

/* Sets a new password with reset token (single use, 30 minutes): every refresh family of the user is revoked.
 * -1 with gw_err_token_invalid (400), gw_err_parameter_invalid (400, 'password'), gw_err_store_unavailable. */
GW_MUSTCHECK int gw_session_reset_confirm(const gw_session_ctx_t *ctx, const char *token, size_t tlen,
                                          const char *password, size_t plen, const gw_session_client_t *client,
                                          gw_err_t *err);

/* Self-registration into organisation (a slug) when its self_registration allows: a client 'pending_verification'
 * (nothing granted, no sign-in) and an e-mail with a verification link (<portal>/verify-email#token=...; single
 * use, 24 hours, its digest stored) through the outbox. An address already taken is answered as a success (it
 * tells nothing) and mailed nothing. Requests count against the "mail" throttle. -1 with
 * gw_err_registration_closed (403), gw_err_parameter_invalid (400, 'email' or 'password'), gw_err_too_many_attempts
 * (429, *retry_after), store_unavailable. */
GW_MUSTCHECK int gw_session_register(const gw_session_ctx_t *ctx, const char *organisation, const char *email,
                                     const char *password, size_t plen, const gw_session_client_t *client,
                                     uint32_t *retry_after, gw_err_t *err);

/* Verifies the address of a registration with its token (tlen bytes; single use): the account becomes an active
 * client of the one active customer of its organisation with that address (case-insensitive), else it waits for an
 * admin's approval; status (24 bytes) says which ("active" or "pending_approval"). -1 with gw_err_token_invalid
 * (400: unknown, used, expired, or the account is not waiting for a verification), gw_err_too_many_attempts (429:
 * too many refused tokens from the client's address), gw_err_store_unavailable (503). */
GW_MUSTCHECK int gw_session_verify_email(const gw_session_ctx_t *ctx, const char *token, size_t tlen,
                                         const gw_session_client_t *client, char status[24], uint32_t *retry_after,
                                         gw_err_t *err);

/* Forgets the local throttle's counts (tests). */
void gw_session_throttle_reset(void);

#endif
