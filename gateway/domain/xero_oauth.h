/* SPDX-License-Identifier: MIT */
/*
 * xero_oauth.h: Xero OAuth 2.0 for settled: connecting an organisation (authorization code or an existing refresh
 * token), discovering and storing its tenants, and handing out access tokens while refreshing the rotating refresh
 * token single-flight across threads and instances (providers/PROVIDERS.md section 2.3). The command line that
 * drives it is gateway/cli.c; the browser's way back is api/xero_callback.c.
 *
 * Everything here blocks (database sessions, gw_http_do): call it from queue workers, the command line or
 * offloaded tasks (offload.h), never from an event loop. Tokens are stored sealed with SETTLED_SECRET_KEY
 * (AES-256-GCM) and never logged.
 *
 * Failures carry gw_err_xero_connect_failed (502, the code docs/errors.md gives a failed connection) and a detail
 * that says which step failed and is safe to show an administrator: it never holds a token, a code or a secret.
 */
#ifndef GW_XERO_OAUTH_H
#define GW_XERO_OAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "err.h"

/* How long the state of an authorization request stays valid, in seconds. */
#define GW_XERO_STATE_TTL 600
/* An access token handed out stays valid for at least this many seconds. */
#define GW_XERO_TOKEN_MIN_TTL 60

/* gw_xero_access_token, gw_xero_check_token_set: the token set needs an administrator to connect Xero again. */
#define GW_XERO_NEEDS_REAUTH (-2)

/* A refresh lease lasts SETTLED_HTTP_TIMEOUT_MS plus this many seconds: the token call plus connecting and storing. */
#define GW_XERO_LEASE_MARGIN 5
/* A caller that finds the lease held polls the token set every GW_XERO_WAIT_POLL_MS, for at most the length of a
 * lease plus GW_XERO_WAIT_MARGIN seconds. */
#define GW_XERO_WAIT_POLL_MS 100
#define GW_XERO_WAIT_MARGIN 2
/* The rotated refresh token is stored in at most this many transactions, GW_XERO_STORE_BACKOFF_MS apart at first,
 * doubling up to GW_XERO_STORE_BACKOFF_MAX_MS (about a minute in all). */
#define GW_XERO_STORE_ATTEMPTS 12
#define GW_XERO_STORE_BACKOFF_MS 250
#define GW_XERO_STORE_BACKOFF_MAX_MS 8000

/*
 * Returns in *token_out (malloc'd, the caller frees it) an access token of token set token_id (a row of
 * xero_tokens) that stays valid for at least GW_XERO_TOKEN_MIN_TTL seconds. When the stored one does
 * not, or force_refresh is set (Xero answered 401 to the current one), it refreshes the token set
 * single-flight across threads and instances, without holding a transaction across the call to Xero:
 *
 * 1. the lease: one committed UPDATE sets refreshing_until (now + SETTLED_HTTP_TIMEOUT_MS +
 *    GW_XERO_LEASE_MARGIN s) and refreshing_by, only where no live lease is held (an expired one, whose
 *    holder died, is taken over);
 * 2. the token call, with no transaction open;
 * 3. the rotated refresh token stored in a new transaction that clears the lease, only if the row still
 *    holds the refresh token that was used (a holder whose lease expired and was taken over never
 *    overwrites a newer token), retried up to GW_XERO_STORE_ATTEMPTS times with backoff, each failure
 *    logged: it is the only copy.
 *
 * A caller that finds the lease held waits (polling, see GW_XERO_WAIT_POLL_MS) and uses the holder's
 * result; if the holder gave up, it takes the lease itself. A transient failure of the token call clears
 * the lease at once.
 *
 * Returns 0; -1 with a message in err on a transient failure (database, network, timeout, Xero 5xx or
 * 429, a lease held longer than the wait: the stored refresh token is kept, retry later); or
 * GW_XERO_NEEDS_REAUTH (-2) when Xero rejected the refresh token (invalid_grant) or the token set was
 * already marked so: the token set is then 'needs_reauth' (recorded, audited) and the caller stops using
 * it until an administrator reconnects. s must not be inside a transaction.
 */
GW_MUSTCHECK int gw_xero_access_token(gw_dbs_t *s, const gw_config_t *cfg, int64_t token_id, bool force_refresh,
                                      char **token_out, char *err, size_t errlen);

/* ---- settings ---- */

#define GW_XERO_NEED_CLIENT 0x1   /* the client id and secret of the Xero app (every call to the token endpoint) */
#define GW_XERO_NEED_REDIRECT 0x2 /* the client id and the redirect URI (the authorization code flow) */
/* Checks, in this order, the settings needs names (GW_XERO_NEED_*) and SETTLED_SECRET_KEY (always: tokens are
 * stored sealed), so a caller names a missing one before anything happens. Returns 0, or -1 with err naming the
 * setting (never its value). */
GW_MUSTCHECK int gw_xero_settings_check(const gw_config_t *cfg, int needs, gw_err_t *err);

/* ---- tenants and connections ---- */

/* One Xero organisation (tenant) a token set reaches, as GET /connections lists it. */
typedef struct st_gw_xero_tenant_t {
    char *tenant_id;     /* a UUID */
    char *name;          /* "" if Xero gave none */
    char *connection_id; /* NULL if Xero gave none */
} gw_xero_tenant_t;

typedef struct st_gw_xero_tenants_t {
    gw_xero_tenant_t *list;
    size_t n;
    char *auth_event_id; /* the authorisation that connected them, NULL if unknown */
} gw_xero_tenants_t;

/* Frees what t holds and empties it (an empty t may be freed again). */
void gw_xero_tenants_free(gw_xero_tenants_t *t);

/* A new token set, stored with the tenants it reaches. */
typedef struct st_gw_xero_connection_t {
    int64_t organisation_id;
    int64_t token_id;
    gw_xero_tenants_t tenants; /* never empty */
} gw_xero_connection_t;

void gw_xero_connection_free(gw_xero_connection_t *c);
/* The one line an administrator is shown: "Connected Xero (token set 7): Org One, Org Two", into out (truncated
 * to len bytes, NUL included). */
void gw_xero_connection_summary(const gw_xero_connection_t *c, char *out, size_t len);

/*
 * `settled connect xero --refresh-token T`: refreshes T once (which retires T), stores the new token set sealed
 * for organisation_id, discovers its tenants (GET /connections), stores every ORGANISATION tenant in
 * xero_tenants and audits 'xero.token_set.create' and 'xero.connect'. Returns 0 with the connection in *out (the
 * caller frees it with gw_xero_connection_free), or -1 with err set and *out empty (once the token set is stored,
 * the detail says so: T itself cannot be used again).
 */
GW_MUSTCHECK int gw_xero_connect_refresh_token(gw_dbs_t *s, const gw_config_t *cfg, int64_t organisation_id,
                                               const char *refresh_token, gw_xero_connection_t *out, gw_err_t *err);

/*
 * The URL an administrator of organisation_id opens to connect Xero:
 * {login_base}/identity/connect/authorize?response_type=code&client_id=..&redirect_uri=..&scope=..&state=..
 * The state is signed with a key derived from SETTLED_SECRET_KEY, expires after GW_XERO_STATE_TTL seconds and
 * carries a random nonce, which is recorded in xero_oauth_states (on s) so that the callback can consume it
 * once, with user_id (the admin who asked through the API; 0: none, the command line), so that the callback audits
 * the connection as "user:<id>" (else "system:oauth-callback"). The settings are checked before s is used. Returns
 * the URL (malloc'd, the caller frees it), or NULL with err naming the missing setting or saying that the state
 * could not be recorded.
 */
GW_MUSTCHECK char *gw_xero_authorize_url(gw_dbs_t *s, const gw_config_t *cfg, int64_t organisation_id, int64_t user_id,
                                         gw_err_t *err);

/*
 * The callback of an authorization: checks state (gw_xero_state_verify), consumes its nonce (one UPDATE of
 * xero_oauth_states, so of two callbacks with the same state exactly one goes on), exchanges code for a token
 * set, stores it sealed, discovers and stores the tenants of the organisation the state names, and audits
 * 'xero.connect' with correlation_id (the request id of the callback; NULL: a new one). Nothing reaches Xero
 * before the nonce is consumed. Returns 0 with the connection in *out (free it with gw_xero_connection_free), or
 * -1 with err set and *out empty:
 * - gw_err_oauth_callback_invalid (400): the state is forged, expired or unknown, or there is no code;
 * - gw_err_oauth_state_used (400): the state was already used (a replay, or a second tab);
 * - gw_err_store_unavailable (503) and the other codes of gw_dbs_err: the nonce could not be consumed (the
 *   detail names the SQLSTATE only; the database's message is logged);
 * - gw_err_xero_connect_failed (502): a setting is missing, Xero refused the code, or storing failed (the
 *   detail says which step, and may quote the database's message: log it, do not show it to a browser).
 */
GW_MUSTCHECK int gw_xero_complete_authorization(gw_dbs_t *s, const gw_config_t *cfg, const char *code,
                                                const char *state, const char *correlation_id,
                                                gw_xero_connection_t *out, gw_err_t *err);

/* ---- checking the token sets of an organisation ---- */

typedef struct st_gw_xero_token_set_t {
    int64_t id;
    size_t stored_tenants; /* how many tenants xero_tenants holds for it */
} gw_xero_token_set_t;

/* The token sets of organisation_id worth checking (active ones, and any other that still serves a tenant), in id
 * order. Returns 0 with a malloc'd array (free it) of *n of them in *out, or -1 with err set. */
GW_MUSTCHECK int gw_xero_token_sets(gw_dbs_t *s, int64_t organisation_id, gw_xero_token_set_t **out, size_t *n,
                                    gw_err_t *err);

/* What gw_xero_check_token_set may do. */
#define GW_XERO_CHECK_READ 0    /* only read: the stored access token, if it still lives, lists the tenants */
#define GW_XERO_CHECK_REFRESH 1 /* refresh when needed (stores the rotated token), store missing tenants */
#define GW_XERO_CHECK_FORCE 2   /* GW_XERO_CHECK_REFRESH, and always refresh */
/* gw_xero_check_token_set with GW_XERO_CHECK_READ: the stored access token has expired, so nothing could be proven
 * without a refresh (which writes). */
#define GW_XERO_UNVERIFIED (-3)

/*
 * Proves that token set set (of organisation_id) works by listing its tenants at Xero (GET /connections).
 * GW_XERO_CHECK_READ writes nothing anywhere: it uses the stored access token if it lives at least
 * GW_XERO_TOKEN_MIN_TTL more seconds, and returns GW_XERO_UNVERIFIED (with err saying so) otherwise. The other
 * modes get an access token (gw_xero_access_token: refreshing it when needed, always with GW_XERO_CHECK_FORCE) and,
 * if Xero refuses it (401), refresh once and list again; when the token set has no tenant stored yet (a connect
 * whose listing failed), they store them, with their audit. Returns 0 with the tenants in *out (free them with
 * gw_xero_tenants_free); GW_XERO_NEEDS_REAUTH, GW_XERO_UNVERIFIED or -1 with err set when no access token could be
 * had; or -1 with err set (its detail starting "xero token set N: ") when the tenants could not be listed or
 * stored. s must not be inside a transaction.
 */
GW_MUSTCHECK int gw_xero_check_token_set(gw_dbs_t *s, const gw_config_t *cfg, int64_t organisation_id,
                                         const gw_xero_token_set_t *set, int mode, gw_xero_tenants_t *out,
                                         gw_err_t *err);

/* The id of the organisation slug, without creating it (a read). Returns 0 with it in *id, 1 if there is none, or
 * -1 with err set. */
GW_MUSTCHECK int gw_xero_find_organisation(gw_dbs_t *s, const char *slug, int64_t *id, gw_err_t *err);

/*
 * Deletes the token sets retired for more than grace_hours (a token set is retired when a newer connection of its
 * organisation took over all its tenants), in transactions of at most 100, each deletion audited
 * ('xero.token_set.delete'). Run by the drift sweep's periodic thread. Returns 0 with how many went in *removed, or
 * -1 with err set.
 */
GW_MUSTCHECK int gw_xero_prune_retired(gw_dbs_t *s, int grace_hours, size_t *removed, gw_err_t *err);

/* ---- the stored tenants ---- */

/* A row of xero_tenants: a connected Xero organisation and the token set that reaches it. */
typedef struct st_gw_xero_stored_tenant_t {
    int64_t organisation_id;
    int64_t token_id;
    char *tenant_id; /* a UUID */
    char *name;      /* "" if unknown */
} gw_xero_stored_tenant_t;

/* Every stored tenant, or only tenant only_tenant (a UUID) when it is not NULL, ordered by organisation and name.
 * Returns 0 with a malloc'd array of *n of them in *out (free it with gw_xero_stored_tenants_free), or -1 with
 * err set (gw_err_internal, 500; the detail is the database's message, e.g. for an only_tenant that is not a
 * UUID). */
GW_MUSTCHECK int gw_xero_stored_tenants(gw_dbs_t *s, const char *only_tenant, gw_xero_stored_tenant_t **out, size_t *n,
                                        gw_err_t *err);
void gw_xero_stored_tenants_free(gw_xero_stored_tenant_t *list, size_t n);

/* ---- building blocks, public for the tests ---- */

/* What a state says: the organisation, when it expires (Unix seconds) and its nonce as 32 hex digits. */
#define GW_XERO_STATE_NONCE_HEX 33 /* NUL included */
typedef struct st_gw_xero_state_t {
    int64_t organisation_id;
    int64_t expires_at;
    char nonce[GW_XERO_STATE_NONCE_HEX];
} gw_xero_state_t;

/* Writes the state of an authorization for organisation_id, valid until now + GW_XERO_STATE_TTL, with a fresh
 * random nonce, signed with key (32 bytes, SETTLED_SECRET_KEY's), into out as base64url text, and what it says
 * into *made (may be NULL). Returns 0, or -1 if outlen is too small (GW_XERO_STATE_MAX bytes always suffice) or
 * OpenSSL fails. */
#define GW_XERO_STATE_MAX 96
GW_MUSTCHECK int gw_xero_state_make(const unsigned char key[GW_CRYPTO_KEY_LEN], int64_t organisation_id, int64_t now,
                                    char *out, size_t outlen, gw_xero_state_t *made);
/* Checks a state made by gw_xero_state_make: well-formed, its MAC right (constant-time) and not expired
 * at now. Returns 0 with what it says in *out, or -1 (*out untouched). Pure: no I/O. */
GW_MUSTCHECK int gw_xero_state_check(const unsigned char key[GW_CRYPTO_KEY_LEN], const char *state, int64_t now,
                                     gw_xero_state_t *out);
/*
 * gw_xero_state_check with the key of cfg (SETTLED_SECRET_KEY), for the callback's event loop: no database, no
 * network. Returns 0 with what the state says in *out; or -1 with err set: gw_err_oauth_callback_invalid (400,
 * "invalid or has expired") for a state that does not check, gw_err_xero_connect_failed (502, naming the setting)
 * when SETTLED_SECRET_KEY is missing or malformed.
 */
GW_MUSTCHECK int gw_xero_state_verify(const gw_config_t *cfg, const char *state, int64_t now, gw_xero_state_t *out,
                                      gw_err_t *err);
/* The authorize URL for an already made state (what gw_xero_authorize_url returns once the state is recorded).
 * Returns it malloc'd, or NULL with err naming the missing setting. */
GW_MUSTCHECK char *gw_xero_authorize_url_with(const gw_config_t *cfg, const char *state, gw_err_t *err);

#endif
