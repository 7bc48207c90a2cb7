/* SPDX-License-Identifier: MIT */
/*
 * auth.h: who a caller is. Access tokens are JWTs (libjwt 1.10 makes and parses them; alg, exp, nbf, iss, aud
 * and the claim shapes are checked here, since libjwt 1.10 checks none of them); passwords are hashed with a
 * memory-hard KDF into a self-describing string; refresh tokens are opaque random strings of which only a
 * SHA-256 digest is stored. The only libjwt user of the tree.
 *
 * Pure CPU and memory: no database, no Redis, no event loop. gw_auth_verify_access and gw_auth_issue_access are
 * cheap (microseconds) and may run on an event loop; gw_auth_password_hash and gw_auth_password_verify are
 * deliberately slow (tens of milliseconds, megabytes of memory) and must run off the loop (the offload pool).
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "err.h"

typedef enum {
    GW_ROLE_NONE = 0,   /* anonymous */
    GW_ROLE_CLIENT = 1, /* a user bound to one portal customer */
    GW_ROLE_ADMIN = 2,  /* an organisation's staff */
} gw_role_t;

/* The claims of an access token, as settled uses them (database ids, not strings). */
typedef struct st_gw_claims_t {
    int64_t user_id;         /* "sub" (the users.id, as a decimal string in the token) */
    int64_t organisation_id; /* "org" (organisations.id, as a decimal string) */
    gw_role_t role;          /* "role": "admin" or "client" */
    int64_t customer_id;     /* "customer" (customers.id, decimal string), clients only; 0 for admins */
    char jti[48];            /* "jti": random, base64url, unique per token */
    int64_t iat, nbf, exp;   /* seconds since the epoch */
} gw_claims_t;

/* The keys and rules of one configuration (SETTLED_JWT_*): made once at start, shared read-only by every loop. */
typedef struct st_gw_auth_t gw_auth_t;

/* Builds the token rules from cfg (the algorithm, its key or key file, issuer, audience, lifetimes). Returns
 * NULL with err set (gw_err_config_invalid) when the settings cannot make and check tokens. */
gw_auth_t *gw_auth_create(const gw_config_t *cfg, gw_err_t *err);
void gw_auth_destroy(gw_auth_t *auth);

/* Seconds an access token lives (15 minutes unless configured: SETTLED_ACCESS_TOKEN_TTL). */
int64_t gw_auth_access_ttl(const gw_auth_t *auth);
/* Seconds a refresh token lives from its issue (30 days unless configured: SETTLED_REFRESH_TOKEN_TTL); the
 * routes pass it to auth_refresh_issue and auth_refresh_rotate (schema/functions/auth.sql). */
int64_t gw_auth_refresh_ttl(const gw_auth_t *auth);

/* Checks token (len bytes, without "Bearer "; need not be NUL-terminated) at time now: the configured alg exactly,
 * the signature, exp > now, nbf <= now and iat <= now (each with at most 30 s of leeway), iss and aud equal to the
 * configured ones, and every claim present with its type (exp, nbf, iat JSON integers; sub, org, customer decimal
 * ids in strings; role "admin" or "client"; a client has a customer, an admin none; jti base64url). Fills *out and
 * returns 0, or returns -1 with *out zeroed (err: gw_err_invalid_argument, status 401, the reason in the detail,
 * for the log only: the caller answers a bare 401 whatever it is). */
int gw_auth_verify_access(const gw_auth_t *auth, const char *token, size_t len, int64_t now, gw_claims_t *out,
                          gw_err_t *err);

/* Makes an access token for c at time now (iat = nbf = now, exp = now + ttl, a fresh jti written back into c).
 * Returns a malloc'd NUL-terminated string (free it), or NULL with err set. */
char *gw_auth_issue_access(const gw_auth_t *auth, gw_claims_t *c, int64_t now, gw_err_t *err);

/* A new refresh token: 32 random bytes as base64url into token (at least 64 bytes), and the lower-case hex
 * SHA-256 of its text into digest (65 bytes), which is all the database ever stores. Returns 0 or -1. */
int gw_auth_refresh_token(char token[64], char digest[65]);
/* The digest of a presented refresh token (the same as gw_auth_refresh_token wrote). */
void gw_auth_token_digest(const char *token, size_t len, char digest[65]);

/* The password rules of every way a password is set (CLI, invitation, reset): GW_AUTH_PASSWORD_MIN to
 * GW_AUTH_PASSWORD_MAX bytes with at least 4 distinct characters. */
#define GW_AUTH_PASSWORD_MIN 10
#define GW_AUTH_PASSWORD_MAX 1024

/* Hashes password (len bytes) with a fresh salt into a self-describing string that carries its KDF and
 * parameters ("$scrypt$ln=15,r=8,p=1$<salt>$<hash>", salt 16 bytes and hash 32 bytes in base64url without padding);
 * malloc'd, or NULL with err set (gw_err_invalid_argument, 400, when the password breaks the rules above; the
 * detail says which and never quotes it). Slow (about 100 ms and 32 MiB, docs/security.md): off the loop. */
char *gw_auth_password_hash(const char *password, size_t len, gw_err_t *err);
/* True when password matches stored (any parameters a stored string names, within bounds that keep a tampered row
 * from costing more than 256 MiB; constant time in the hash compare). stored may be NULL or unreadable (an unknown
 * user): the KDF then runs with the current parameters anyway and the answer is false, so the time does not tell
 * the two apart. *rehash (rehash may be NULL) is set when it matched and stored uses weaker parameters than the
 * current ones: the caller then stores a new gw_auth_password_hash. Slow: off the loop. */
bool gw_auth_password_verify(const char *stored, const char *password, size_t len, bool *rehash);

#endif
