/* SPDX-License-Identifier: MIT */
/*
 * xero_auth.h: Xero OAuth 2.0 for settled: connecting an organisation (authorization code or an
 * existing refresh token), discovering its tenants, and handing out access tokens while refreshing the
 * rotating refresh token single-flight across threads and instances (providers/PROVIDERS.md section 2.3).
 *
 * Everything here blocks (database sessions, gw_http_do): call it from queue workers, the command line
 * or offloaded tasks (offload.h), never from an event loop. Tokens are stored sealed with
 * SETTLED_SECRET_KEY (AES-256-GCM) and never logged.
 */
#ifndef GW_XERO_AUTH_H
#define GW_XERO_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "config.h"
#include "crypto.h"
#include "db.h"

/* How long the state of an authorization request stays valid, in seconds. */
#define GW_XERO_STATE_TTL 600
/* An access token handed out stays valid for at least this many seconds. */
#define GW_XERO_TOKEN_MIN_TTL 60

/* gw_xero_access_token: the token set needs an administrator to connect Xero again. */
#define GW_XERO_NEEDS_REAUTH (-2)

/*
 * Returns in *token_out (malloc'd, the caller frees it) an access token of token set token_id (a row of
 * xero_tokens) that stays valid for at least GW_XERO_TOKEN_MIN_TTL seconds. When the stored one does
 * not, or force_refresh is set (Xero answered 401 to the current one), it refreshes the token set under
 * the row's lock (SELECT ... FOR UPDATE), so one refresh happens at a time across threads and
 * instances; a caller that waited for another's refresh uses its result. The rotated refresh token is
 * committed before the access token is returned.
 *
 * Returns 0; -1 with a message in err on a transient failure (database, network, timeout, Xero 5xx or
 * 429: the stored refresh token is kept, retry later); or GW_XERO_NEEDS_REAUTH (-2) when Xero rejected
 * the refresh token (invalid_grant) or the token set was already marked so: the token set is then
 * 'needs_reauth' (recorded, audited) and the caller stops using it until an administrator reconnects.
 * s must not be inside a transaction.
 */
__attribute__((warn_unused_result)) int gw_xero_access_token(gw_dbs_t *s, const gw_config_t *cfg, int64_t token_id,
                                                             bool force_refresh, char **token_out, char *err,
                                                             size_t errlen);

/*
 * `settled connect xero --refresh-token T`: refreshes T once (which retires T), stores the new token
 * set sealed for organisation_id, discovers its tenants (GET /connections), stores every ORGANISATION
 * tenant in xero_tenants, audits 'xero.connect' and prints the tenants to out. Returns 0, or -1 with a
 * message in err (once the token set is stored, err says so: T itself cannot be used again).
 */
__attribute__((warn_unused_result)) int gw_xero_connect_refresh_token(gw_dbs_t *s, const gw_config_t *cfg,
                                                                      int64_t organisation_id,
                                                                      const char *refresh_token, FILE *out, char *err,
                                                                      size_t errlen);

/*
 * The URL an administrator of organisation_id opens to connect Xero:
 * {login_base}/identity/connect/authorize?response_type=code&client_id=..&redirect_uri=..&scope=..&state=..
 * The state is signed with a key derived from SETTLED_SECRET_KEY and expires after GW_XERO_STATE_TTL
 * seconds, so the callback trusts it without storing anything. Returns the URL (malloc'd, the caller
 * frees it), or NULL with a message in err naming the missing setting.
 */
__attribute__((warn_unused_result)) char *gw_xero_authorize_url(const gw_config_t *cfg, int64_t organisation_id,
                                                                char *err, size_t errlen);

/*
 * The callback of an authorization: checks state (signature, in constant time, and expiry), exchanges
 * code for a token set, stores it sealed, discovers and stores the tenants, and audits 'xero.connect'.
 * Returns 0 with a one-line summary for the administrator (the organisations connected) in summary, or
 * -1 with a message in err that is safe to show them (no secret in it).
 */
__attribute__((warn_unused_result)) int gw_xero_complete_authorization(gw_dbs_t *s, const gw_config_t *cfg,
                                                                       const char *code, const char *state,
                                                                       char *summary, size_t summary_len, char *err,
                                                                       size_t errlen);

/*
 * The `settled connect ...` subcommand; argv starts after "connect":
 *   xero --refresh-token T [--organisation SLUG]   connect with an existing refresh token
 *   xero --authorize [--organisation SLUG]          print the URL an administrator opens to connect
 *   xero --callback URL                             finish that connection with the address Xero
 *                                                   redirected the browser to (code and state)
 *   xero --check [--force-refresh] [--organisation SLUG]
 *                                                   get a working access token for every token set of
 *                                                   the organisation and list its tenants with it
 * The organisation defaults to cfg->organisation and is created if missing. Starts and stops the HTTP
 * client itself (gw_http_init), so the caller must not have started it. Returns the exit code: 0, 1 on
 * failure (a message on stderr), 2 on a usage error.
 */
int gw_xero_cli(const gw_config_t *cfg, int argc, char **argv);

/* ---- building blocks, public for the tests ---- */

/* Percent-encodes len bytes of in per RFC 3986 (everything but ALPHA / DIGIT / "-" / "." / "_" / "~"
 * becomes %XX, upper-case): for query strings and form bodies alike. Returns a malloc'd string. */
char *gw_xero_percent_encode(const char *in, size_t len);
/* Writes the state of an authorization for organisation_id, valid until now + GW_XERO_STATE_TTL, signed
 * with key (32 bytes, SETTLED_SECRET_KEY's), into out as base64url text. Returns 0, or -1 if outlen is
 * too small (GW_XERO_STATE_MAX bytes always suffice) or OpenSSL fails. */
#define GW_XERO_STATE_MAX 96
__attribute__((warn_unused_result)) int gw_xero_state_make(const unsigned char key[GW_CRYPTO_KEY_LEN],
                                                           int64_t organisation_id, int64_t now, char *out,
                                                           size_t outlen);
/* Checks a state made by gw_xero_state_make: well-formed, its MAC right (constant-time) and not expired
 * at now. Returns 0 with the organisation in *organisation_id, or -1. */
__attribute__((warn_unused_result)) int gw_xero_state_check(const unsigned char key[GW_CRYPTO_KEY_LEN],
                                                            const char *state, int64_t now, int64_t *organisation_id);

#endif
