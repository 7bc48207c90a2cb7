/* SPDX-License-Identifier: MIT */
/*
 * session.c: sign-in, refresh and sign-out (session.h), and the sign-in throttle: failure counters in Redis with
 * a local fallback.
 */
#include "session.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <inttypes.h>
#include "account_mail.h"
#include "log.h"
#include "mem.h"

#define EMAIL_MAX 254

void gw_session_tokens_free(gw_session_tokens_t *t)
{
    if (t->access_token != NULL)
        gw_free_secret(t->access_token);
    memset(t, 0, sizeof(*t));
}

size_t gw_session_jti_key(const char *jti, char out[96])
{
    int n = snprintf(out, 96, "settled:revoked:jti:%s", jti);
    return n > 0 && n < 96 ? (size_t)n : 0;
}

size_t gw_session_user_key(int64_t user_id, char out[64])
{
    int n = snprintf(out, 64, "settled:revoked:user:%lld", (long long)user_id);
    return n > 0 && n < 64 ? (size_t)n : 0;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* ---- the throttle ---- */

typedef struct st_throttle_keys_t {
    char account_ip[160], ip[96], account[128];
} throttle_keys_t;

static const int limits[] = {GW_SESSION_FAILS_ACCOUNT_IP, GW_SESSION_FAILS_IP, GW_SESSION_FAILS_ACCOUNT};

/* The keys never hold an address in clear: the account is the SHA-256 of the email as the database compares it
 * (trimmed, lower case), whatever organisation is named, so naming one organisation, another or none does not
 * multiply an attacker's guesses at one address. kind names the counters: "login" (sign-ins and password changes
 * count their failures), "mail" (password-reset requests and registrations count every request: each may send an
 * e-mail), "verify" (failed e-mail verifications, whose "account" is the client's address). */
static void throttle_keys(const char *kind, const char *email, const char *ip, throttle_keys_t *k)
{
    char material[EMAIL_MAX + 2], digest[65];
    size_t n = 0;
    const char *p = email, *end = email + strlen(email);
    while (p != end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        ++p;
    while (end != p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
        --end;
    for (; p != end && n + 1 < sizeof(material); ++p)
        material[n++] = *p >= 'A' && *p <= 'Z' ? (char)(*p - 'A' + 'a') : *p;
    material[n] = '\0';
    gw_auth_token_digest(material, n, digest);
    const char *addr = ip != NULL && ip[0] != '\0' ? ip : "-";
    snprintf(k->account_ip, sizeof(k->account_ip), "settled:%s:ai:%.32s:%.60s", kind, digest, addr);
    snprintf(k->ip, sizeof(k->ip), "settled:%s:ip:%.60s", kind, addr);
    snprintf(k->account, sizeof(k->account), "settled:%s:a:%.32s", kind, digest);
}

/* The local fallback: a small table of counters, shared by the pool's threads. A slot taken by another key is
 * reused when its window ended, else the key with the fewest failures gives way (counts can only be lost, never
 * invented: the fallback errs towards letting a user in). */
#define LOCAL_SLOTS 4096
typedef struct st_local_slot_t {
    uint64_t hash;
    int count;
    int64_t until;
} local_slot_t;
static local_slot_t local_slots[LOCAL_SLOTS];
static pthread_mutex_t local_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; ++s)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h | 1; /* 0 marks a free slot */
}

static local_slot_t *local_find(const char *key, bool create, int64_t now)
{
    uint64_t h = fnv1a(key);
    local_slot_t *victim = NULL;
    for (size_t i = 0; i != 8; ++i) {
        local_slot_t *s = &local_slots[(h + i) % LOCAL_SLOTS];
        if (s->hash == h)
            return s->until > now ? s : (create ? (s->count = 0, s->until = now + GW_SESSION_WINDOW_S, s) : NULL);
        if (victim == NULL || s->until <= now || (victim->until > now && s->count < victim->count))
            victim = s;
    }
    if (!create)
        return NULL;
    *victim = (local_slot_t){.hash = h, .count = 0, .until = now + GW_SESSION_WINDOW_S};
    return victim;
}

static int local_limit(const gw_config_t *cfg, int limit)
{
    int n = limit / GW_SESSION_LOCAL_DIVISOR / (cfg->instances > 1 ? cfg->instances : 1);
    return n > 0 ? n : 1;
}

void gw_session_throttle_reset(void)
{
    pthread_mutex_lock(&local_lock);
    memset(local_slots, 0, sizeof(local_slots));
    pthread_mutex_unlock(&local_lock);
}

static const char check_script[] = "local wait = 0\n"
                                   "for i, k in ipairs(KEYS) do\n"
                                   "  local n = tonumber(redis.call('GET', k) or '0')\n"
                                   "  if n >= tonumber(ARGV[i]) then\n"
                                   "    local t = redis.call('PTTL', k)\n"
                                   "    if t > wait then wait = t end\n"
                                   "  end\n"
                                   "end\n"
                                   "return wait\n";
static const char fail_script[] = "for i, k in ipairs(KEYS) do\n"
                                  "  if redis.call('INCR', k) == 1 then redis.call('PEXPIRE', k, ARGV[1]) end\n"
                                  "end\n"
                                  "return 0\n";

/* Seconds to wait before key set k may try again (0: now). */
static uint32_t throttle_check(const gw_session_ctx_t *ctx, const throttle_keys_t *k)
{
    const char *keys[] = {k->account_ip, k->ip, k->account};
    if (ctx->redis != NULL) {
        char a[3][16];
        const char *args[3];
        for (size_t i = 0; i != 3; ++i)
            snprintf(a[i], sizeof(a[i]), "%d", limits[i]), args[i] = a[i];
        long long out[1];
        size_t n = 0;
        const char *err = NULL;
        if (gw_redis_sync_eval(ctx->redis, check_script, 3, keys, 3, args, out, 1, &n, &err) == 0)
            return n == 1 && out[0] > 0 ? (uint32_t)((out[0] + 999) / 1000) : 0;
        gw_log(GW_LOG_WARN, "sign-in throttle: Redis unavailable (%s); the stricter local throttle counts",
               gw_redis_sync_last_error(ctx->redis));
    }
    int64_t now = now_s(), wait = 0;
    pthread_mutex_lock(&local_lock);
    for (size_t i = 0; i != 3; ++i) {
        local_slot_t *s = local_find(keys[i], false, now);
        if (s != NULL && s->count >= local_limit(ctx->cfg, limits[i]) && s->until - now > wait)
            wait = s->until - now;
    }
    pthread_mutex_unlock(&local_lock);
    return (uint32_t)wait;
}

/* Counts a failed sign-in against every key of k, in Redis when it answers, else locally. */
static void throttle_fail(const gw_session_ctx_t *ctx, const throttle_keys_t *k)
{
    const char *keys[] = {k->account_ip, k->ip, k->account};
    if (ctx->redis != NULL) {
        char window[24];
        snprintf(window, sizeof(window), "%d", GW_SESSION_WINDOW_S * 1000);
        const char *args[] = {window};
        long long out[1];
        size_t n = 0;
        const char *err = NULL;
        if (gw_redis_sync_eval(ctx->redis, fail_script, 3, keys, 1, args, out, 1, &n, &err) == 0)
            return;
    }
    int64_t now = now_s();
    pthread_mutex_lock(&local_lock);
    for (size_t i = 0; i != 3; ++i)
        ++local_find(keys[i], true, now)->count;
    pthread_mutex_unlock(&local_lock);
}

/* A successful sign-in forgets the failures of its account from its address (not the others: an attacker who
 * knows one password does not reset the counts of the accounts it guesses). */
static void throttle_success(const gw_session_ctx_t *ctx, const throttle_keys_t *k)
{
    if (ctx->redis != NULL) {
        const char *argv[] = {"DEL", k->account_ip};
        long long out;
        const char *err = NULL;
        if (gw_redis_sync_command(ctx->redis, 2, argv, &out, &err) == 0)
            return;
    }
    int64_t now = now_s();
    pthread_mutex_lock(&local_lock);
    local_slot_t *s = local_find(k->account_ip, false, now);
    if (s != NULL)
        s->count = 0;
    pthread_mutex_unlock(&local_lock);
}

/* ---- tokens ---- */

static gw_role_t role_of(const char *text)
{
    return text != NULL && strcmp(text, "admin") == 0 ? GW_ROLE_ADMIN : GW_ROLE_CLIENT;
}

/* Fills out with claims c and a new access token (the refresh token is already in out). */
static int issue(const gw_session_ctx_t *ctx, gw_claims_t *c, gw_session_tokens_t *out, gw_err_t *err)
{
    int64_t now = now_s();
    char *token = gw_auth_issue_access(ctx->auth, c, now, err);
    if (token == NULL)
        return -1;
    out->access_token = token;
    out->expires_in = gw_auth_access_ttl(ctx->auth);
    out->refresh_expires_in = gw_auth_refresh_ttl(ctx->auth);
    out->claims = *c;
    return 0;
}

static int claims_from(gw_claims_t *c, const char *user, const char *org, const char *role, const char *customer)
{
    *c = (gw_claims_t){.user_id = strtoll(user, NULL, 10),
                       .organisation_id = strtoll(org, NULL, 10),
                       .role = role_of(role),
                       .customer_id = customer != NULL ? strtoll(customer, NULL, 10) : 0};
    return c->user_id > 0 && c->organisation_id > 0 ? 0 : -1;
}

static int store_err(const gw_session_ctx_t *ctx, const char *what, gw_err_t *err)
{
    gw_log(GW_LOG_WARN, "%s failed: %s", what, gw_dbs_error(ctx->db));
    return gw_err_set(err, gw_err_store_unavailable, 503, "The database is unavailable; try again shortly.");
}

static int refuse_credentials(gw_err_t *err)
{
    return gw_err_set(err, gw_err_invalid_credentials, 401, "The email address or the password is not right.");
}

/* Opens a session for user (a decimal id) whose password was just checked (or set): the first refresh token of a
 * new family, then an access token for the claims the database returns. newhash (may be NULL) replaces the stored
 * hash (a rehash). */
static int sign_in(const gw_session_ctx_t *ctx, const char *user, const char *newhash,
                   const gw_session_client_t *client, gw_session_tokens_t *out, gw_err_t *err)
{
    char digest[65], ttl[24];
    if (gw_auth_refresh_token(out->refresh_token, digest) != 0)
        return gw_err_set(err, gw_err_internal, 500, "no random bytes for a refresh token");
    snprintf(ttl, sizeof(ttl), "%lld", (long long)gw_auth_refresh_ttl(ctx->auth));
    const char *rp[] = {user, digest, ttl, newhash, client->user_agent, client->ip, client->correlation};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db,
                                      "SELECT result, family_id, organisation_id, role, customer_id"
                                      " FROM auth_login_record($1::bigint, $2, $3::int, $4, $5, $6::inet, $7)",
                                      7, rp);
    if (r == NULL || gw_dbs_nrows(r) != 1) {
        gw_dbs_result_free(r);
        memset(out->refresh_token, 0, sizeof(out->refresh_token));
        return store_err(ctx, "recording a sign-in", err);
    }
    gw_claims_t c;
    int rc = strcmp(gw_dbs_value(r, 0, 0), "ok") == 0 &&
                     claims_from(&c, user, gw_dbs_value(r, 0, 2), gw_dbs_value(r, 0, 3), gw_dbs_value(r, 0, 4)) == 0
                 ? 0
                 : -1;
    gw_dbs_result_free(r);
    if (rc != 0) { /* disabled meanwhile */
        memset(out->refresh_token, 0, sizeof(out->refresh_token));
        return refuse_credentials(err);
    }
    if (issue(ctx, &c, out, err) != 0) {
        memset(out->refresh_token, 0, sizeof(out->refresh_token));
        return -1;
    }
    return 0;
}

int gw_session_login(const gw_session_ctx_t *ctx, const char *organisation, const char *email, const char *password,
                     size_t len, const gw_session_client_t *client, gw_session_tokens_t *out, uint32_t *retry_after,
                     gw_err_t *err)
{
    memset(out, 0, sizeof(*out));
    *retry_after = 0;
    throttle_keys_t keys;
    throttle_keys("login", email, client->ip, &keys);
    uint32_t wait = throttle_check(ctx, &keys);
    if (wait != 0) {
        *retry_after = wait;
        gw_log(GW_LOG_INFO, "sign-in throttled from %s for %u s", client->ip != NULL ? client->ip : "-", wait);
        return gw_err_set(err, gw_err_too_many_attempts, 429, "Too many failed sign-ins; try again in %u seconds.",
                          wait);
    }

    const char *p[] = {organisation, email};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db,
                                      "SELECT user_id, organisation_id, role, customer_id, password_hash, status"
                                      " FROM auth_login_lookup($1, $2) ORDER BY user_id LIMIT 8", /* MAX_CANDIDATES */
                                      2, p);
    if (r == NULL)
        return store_err(ctx, "looking up a sign-in", err);
    /* every candidate's hash is checked (at least one hash runs, for an unknown address too), so the time tells
     * nothing about which of them, if any, exists */
    size_t match = SIZE_MAX;
    bool rehash = false;
    if (gw_dbs_nrows(r) == 0)
        (void)gw_auth_password_verify(NULL, password, len, &rehash);
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
        bool rh = false;
        /* the first match, but an active one before any other (a disabled account of the same address and
         * password in another organisation must not hide the active one) */
        if (gw_auth_password_verify(gw_dbs_value(r, i, 4), password, len, &rh) &&
            (match == SIZE_MAX ||
             (strcmp(gw_dbs_value(r, match, 5), "active") != 0 && strcmp(gw_dbs_value(r, i, 5), "active") == 0))) {
            match = i;
            rehash = rh;
        }
    }
    const char *status = match != SIZE_MAX ? gw_dbs_value(r, match, 5) : NULL;
    if (status == NULL || strcmp(status, "disabled") == 0) {
        gw_dbs_result_free(r);
        throttle_fail(ctx, &keys);
        gw_log(GW_LOG_INFO, "sign-in refused from %s: wrong address or password",
               client->ip != NULL ? client->ip : "-");
        return refuse_credentials(err);
    }
    if (strcmp(status, "pending_verification") == 0) {
        gw_dbs_result_free(r);
        return gw_err_set(err, gw_err_email_unverified, 403,
                          "Confirm the e-mail address first, with the link sent to it when you registered.");
    }
    if (strcmp(status, "active") != 0) {
        gw_dbs_result_free(r);
        return gw_err_set(err, gw_err_account_pending, 403,
                          "This account waits for an administrator's approval; you can sign in once it is approved.");
    }

    char user[24];
    snprintf(user, sizeof(user), "%s", gw_dbs_value(r, match, 0));
    gw_dbs_result_free(r);
    char *newhash = NULL;
    if (rehash) {
        gw_err_t herr = GW_ERR_INIT;
        newhash = gw_auth_password_hash(password, len, &herr); /* NULL: keep the old one, sign in all the same */
    }
    int rc = sign_in(ctx, user, newhash, client, out, err);
    gw_free_secret(newhash);
    if (rc == 0)
        throttle_success(ctx, &keys);
    return rc;
}

int gw_session_refresh(const gw_session_ctx_t *ctx, const char *token, size_t len, const gw_session_client_t *client,
                       gw_session_tokens_t *out, gw_err_t *err)
{
    memset(out, 0, sizeof(*out));
    char digest[65], fresh[65], ttl[24];
    gw_auth_token_digest(token, len, digest);
    if (gw_auth_refresh_token(out->refresh_token, fresh) != 0)
        return gw_err_set(err, gw_err_internal, 500, "no random bytes for a refresh token");
    snprintf(ttl, sizeof(ttl), "%lld", (long long)gw_auth_refresh_ttl(ctx->auth));
    const char *p[] = {digest, fresh, ttl, client->user_agent, client->ip, client->correlation};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db,
                                      "SELECT result, user_id, organisation_id, role, customer_id"
                                      " FROM auth_refresh_rotate($1, $2, $3::int, $4, $5::inet, $6)",
                                      6, p);
    if (r == NULL || gw_dbs_nrows(r) != 1) {
        gw_dbs_result_free(r);
        memset(out->refresh_token, 0, sizeof(out->refresh_token));
        return store_err(ctx, "rotating a refresh token", err);
    }
    const char *result = gw_dbs_value(r, 0, 0);
    gw_claims_t c;
    bool ok = strcmp(result, "rotated") == 0 && claims_from(&c, gw_dbs_value(r, 0, 1), gw_dbs_value(r, 0, 2),
                                                            gw_dbs_value(r, 0, 3), gw_dbs_value(r, 0, 4)) == 0;
    if (!ok) {
        gw_log(strcmp(result, "reused") == 0 ? GW_LOG_WARN : GW_LOG_INFO, "refresh refused from %s: %s%s",
               client->ip != NULL ? client->ip : "-", result,
               strcmp(result, "reused") == 0 ? " (a rotated token came back: its family is revoked)" : "");
        gw_dbs_result_free(r);
        memset(out->refresh_token, 0, sizeof(out->refresh_token));
        return gw_err_set(err, gw_err_invalid_refresh, 401, "The refresh token is not valid; sign in again.");
    }
    gw_dbs_result_free(r);
    if (issue(ctx, &c, out, err) != 0) {
        memset(out->refresh_token, 0, sizeof(out->refresh_token));
        return -1;
    }
    return 0;
}

int gw_session_logout(const gw_session_ctx_t *ctx, const char *token, size_t len, const gw_claims_t *claims,
                      const gw_session_client_t *client, bool *denied, gw_err_t *err)
{
    *denied = false;
    if (claims != NULL && ctx->redis != NULL) {
        char key[96], ex[24];
        int64_t left = claims->exp - now_s() + 60; /* the verifier's leeway, and then some */
        snprintf(ex, sizeof(ex), "%lld", (long long)(left > 1 ? left : 1));
        if (gw_session_jti_key(claims->jti, key) != 0) {
            const char *argv[] = {"SET", key, "1", "EX", ex};
            long long out;
            const char *rerr = NULL;
            *denied = gw_redis_sync_command(ctx->redis, 5, argv, &out, &rerr) == 0;
            if (!*denied)
                gw_log(GW_LOG_WARN,
                       "sign-out: Redis did not take the access token's jti (%s); it stays valid until "
                       "it expires",
                       gw_redis_sync_last_error(ctx->redis));
        }
    }
    if (token == NULL || len == 0)
        return 0;
    char digest[65], actor[40];
    gw_auth_token_digest(token, len, digest);
    if (claims != NULL)
        snprintf(actor, sizeof(actor), "user:%lld", (long long)claims->user_id);
    else
        snprintf(actor, sizeof(actor), "anonymous");
    const char *p[] = {digest, actor, client->correlation};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, "SELECT auth_refresh_revoke($1, $2, $3)", 3, p);
    if (r == NULL)
        return store_err(ctx, "revoking a refresh token", err);
    gw_dbs_result_free(r);
    return 0;
}

int gw_session_deny_user(gw_redis_sync_t *redis, const gw_config_t *cfg, int64_t user_id)
{
    char key[64], ex[24];
    if (redis == NULL || gw_session_user_key(user_id, key) == 0)
        return -1;
    snprintf(ex, sizeof(ex), "%d", cfg->access_token_ttl + 60);
    const char *argv[] = {"SET", key, "1", "EX", ex};
    long long out;
    const char *err = NULL;
    return gw_redis_sync_command(redis, 5, argv, &out, &err);
}

/* ---- password change, invitations, resets, registration ---- */

/* Hashes password for a new credential; a password that breaks the rules is gw_err_parameter_invalid (400) naming
 * field. */
static char *new_hash(const char *password, size_t len, const char *field, gw_err_t *err)
{
    gw_err_t herr = GW_ERR_INIT;
    char *hash = gw_auth_password_hash(password, len, &herr);
    if (hash == NULL) {
        if (herr.code == gw_err_invalid_argument)
            gw_err_set(err, gw_err_parameter_invalid, 400, "'%s' %s", field, herr.detail);
        else
            *err = herr;
    }
    return hash;
}

int gw_session_password_change(const gw_session_ctx_t *ctx, int64_t user_id, int64_t organisation_id,
                               const char *current, size_t clen, const char *fresh, size_t flen,
                               const gw_session_client_t *client, gw_session_tokens_t *out, uint32_t *retry_after,
                               gw_err_t *err)
{
    memset(out, 0, sizeof(*out));
    *retry_after = 0;
    char user[24], org[24];
    snprintf(user, sizeof(user), "%lld", (long long)user_id);
    snprintf(org, sizeof(org), "%lld", (long long)organisation_id);
    const char *p[] = {user, org};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db,
                                      "SELECT email, password_hash FROM users"
                                      " WHERE id = $1::bigint AND organisation_id = $2::bigint AND status = 'active'",
                                      2, p);
    if (r == NULL)
        return store_err(ctx, "looking up a password change", err);
    if (gw_dbs_nrows(r) != 1) { /* disabled, or gone, since the token was made */
        gw_dbs_result_free(r);
        return gw_err_set(err, gw_err_unauthenticated, 401, "A valid access token is required.");
    }
    /* the current password is a sign-in in all but name: the same throttle, so a stolen access token cannot guess
     * it faster than a sign-in could */
    throttle_keys_t keys;
    throttle_keys("login", gw_dbs_value(r, 0, 0), client->ip, &keys);
    uint32_t wait = throttle_check(ctx, &keys);
    if (wait != 0) {
        gw_dbs_result_free(r);
        *retry_after = wait;
        return gw_err_set(err, gw_err_too_many_attempts, 429, "Too many failed attempts; try again in %u seconds.",
                          wait);
    }
    bool ok = gw_auth_password_verify(gw_dbs_value(r, 0, 1), current, clen, NULL);
    gw_dbs_result_free(r);
    if (!ok) {
        throttle_fail(ctx, &keys);
        return gw_err_set(err, gw_err_password_incorrect, 403, "The current password is not right.");
    }
    char *hash = new_hash(fresh, flen, "new_password", err);
    if (hash == NULL)
        return -1;
    const char *cp[] = {user, hash, client->correlation};
    r = gw_dbs_query(ctx->db, "SELECT auth_password_change($1::bigint, $2, $3)", 3, cp);
    gw_free_secret(hash);
    if (r == NULL || gw_dbs_nrows(r) != 1) {
        gw_dbs_result_free(r);
        return store_err(ctx, "changing a password", err);
    }
    bool changed = strcmp(gw_dbs_value(r, 0, 0), "changed") == 0;
    gw_dbs_result_free(r);
    if (!changed)
        return gw_err_set(err, gw_err_unauthenticated, 401, "A valid access token is required.");
    throttle_success(ctx, &keys);
    return sign_in(ctx, user, NULL, client, out, err);
}

static int refuse_token(gw_err_t *err)
{
    return gw_err_set(err, gw_err_token_invalid, 400, "'token' is unknown, already used or expired.");
}

/* Spends one-time token (tlen bytes) with a new hash of password through sql ($1 the token's digest, $2 the hash, $3
 * the correlation; its first column the result). live ($1 the digest) says first whether the token can be spent at
 * all, so that a flood of made-up tokens costs a lookup each, not a deliberately slow hash. Returns the result row,
 * or NULL with err set. */
static gw_dbs_result_t *consume(const gw_session_ctx_t *ctx, const char *live, const char *sql, const char *what,
                                const char *token, size_t tlen, const char *password, size_t plen,
                                const gw_session_client_t *client, gw_err_t *err)
{
    char digest[65];
    gw_auth_token_digest(token, tlen, digest);
    const char *lp[] = {digest};
    gw_dbs_result_t *l = gw_dbs_query(ctx->db, live, 1, lp);
    if (l == NULL) {
        store_err(ctx, what, err);
        return NULL;
    }
    bool alive = gw_dbs_nrows(l) == 1;
    gw_dbs_result_free(l);
    if (!alive) {
        gw_log(GW_LOG_INFO, "%s refused from %s: unknown, used or expired", what,
               client->ip != NULL ? client->ip : "-");
        refuse_token(err);
        return NULL;
    }
    char *hash = new_hash(password, plen, "password", err);
    if (hash == NULL)
        return NULL;
    const char *p[] = {digest, hash, client->correlation};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql, 3, p);
    gw_free_secret(hash);
    if (r == NULL || gw_dbs_nrows(r) != 1) {
        gw_dbs_result_free(r);
        store_err(ctx, what, err);
        return NULL;
    }
    if (strcmp(gw_dbs_value(r, 0, 0), "created") != 0 && strcmp(gw_dbs_value(r, 0, 0), "reset") != 0)
        gw_log(GW_LOG_INFO, "%s refused from %s: %s", what, client->ip != NULL ? client->ip : "-",
               gw_dbs_value(r, 0, 0));
    return r;
}

int gw_session_invitation_accept(const gw_session_ctx_t *ctx, const char *token, size_t tlen, const char *password,
                                 size_t plen, const gw_session_client_t *client, gw_session_tokens_t *out,
                                 gw_err_t *err)
{
    memset(out, 0, sizeof(*out));
    gw_dbs_result_t *r =
        consume(ctx, "SELECT 1 FROM invitations WHERE digest = $1 AND used_at IS NULL AND expires_at > now()",
                "SELECT result, user_id FROM auth_invitation_consume($1, $2, $3)", "accepting an invitation", token,
                tlen, password, plen, client, err);
    if (r == NULL)
        return -1;
    char user[24];
    const char *result = gw_dbs_value(r, 0, 0);
    snprintf(user, sizeof(user), "%s", gw_dbs_value(r, 0, 1) != NULL ? gw_dbs_value(r, 0, 1) : "");
    int rc = 0;
    if (strcmp(result, "created") != 0)
        rc = strcmp(result, "email_taken") == 0
                 ? gw_err_set(err, gw_err_email_taken, 409, "The organisation already has a user with this address.")
                 : refuse_token(err);
    gw_dbs_result_free(r);
    return rc != 0 ? rc : sign_in(ctx, user, NULL, client, out, err);
}

/* Counts a request of kind "mail" for email from client against the throttle; returns the seconds to wait (0: go
 * on, and it is counted). */
static uint32_t mail_throttle(const gw_session_ctx_t *ctx, const char *email, const gw_session_client_t *client)
{
    throttle_keys_t keys;
    throttle_keys("mail", email, client->ip, &keys);
    uint32_t wait = throttle_check(ctx, &keys);
    if (wait == 0)
        throttle_fail(ctx, &keys);
    return wait;
}

static int too_many(gw_err_t *err, uint32_t wait, uint32_t *retry_after)
{
    *retry_after = wait;
    return gw_err_set(err, gw_err_too_many_attempts, 429, "Too many requests; try again in %u seconds.", wait);
}

/* Draws a one-time token, its link to page and the rendered message of kind for organisation org: into token,
 * digest and *msg. Returns 0, or -1 with err. */
static int account_mail(const gw_session_ctx_t *ctx, int64_t org, const char *kind, const char *page, char token[64],
                        char digest[65], gw_rendered_t *msg, gw_err_t *err)
{
    if (gw_auth_refresh_token(token, digest) != 0) /* the same kind of one-time token */
        return gw_err_set(err, gw_err_internal, 500, "no random bytes for a one-time token");
    char link[600];
    gw_account_mail_link(ctx->cfg, NULL, page, token, link, sizeof(link));
    int rc = gw_account_mail_render(ctx->db, org, kind, link, msg, err);
    explicit_bzero(link, sizeof(link));
    if (rc != 0)
        explicit_bzero(token, 64);
    return rc;
}

static void free_mail(gw_rendered_t *msg, char token[64])
{
    if (msg->text != NULL)
        explicit_bzero(msg->text, strlen(msg->text));
    if (msg->html != NULL)
        explicit_bzero(msg->html, strlen(msg->html));
    gw_rendered_free(msg);
    explicit_bzero(token, 64);
}

int gw_session_reset_request(const gw_session_ctx_t *ctx, const char *organisation, const char *email,
                             const gw_session_client_t *client, uint32_t *retry_after, gw_err_t *err)
{
    *retry_after = 0;
    uint32_t wait = mail_throttle(ctx, email, client);
    if (wait != 0)
        return too_many(err, wait, retry_after);
    const char *p[] = {organisation, email};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db,
                                      "SELECT user_id, organisation_id FROM auth_login_lookup($1, $2)"
                                      " WHERE status = 'active' ORDER BY user_id LIMIT 8",
                                      2, p);
    if (r == NULL) {
        gw_log(GW_LOG_WARN, "password reset request not looked up: %s", gw_dbs_error(ctx->db));
        return 0; /* answered the same */
    }
    /* one reset, and one e-mail, per account of that address: each organisation's account is its own */
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
        int64_t org = strtoll(gw_dbs_value(r, i, 1), NULL, 10);
        char token[64], digest[65], orgs[24];
        gw_rendered_t msg = {0};
        gw_err_t merr = GW_ERR_INIT;
        if (account_mail(ctx, org, "password_reset", GW_ACCOUNT_PAGE_RESET, token, digest, &msg, &merr) != 0) {
            gw_log(GW_LOG_WARN, "password reset for user %s not mailed: %s", gw_dbs_value(r, i, 0), merr.detail);
            continue;
        }
        snprintf(orgs, sizeof(orgs), "%" PRId64, org);
        const char *mp[] = {orgs, email, digest, msg.subject, msg.text, msg.html, client->correlation};
        gw_dbs_result_t *m = gw_dbs_query(
            ctx->db, "SELECT user_id, notification_id FROM auth_reset_mail($1::bigint, $2, $3, $4, $5, $6, $7)", 7, mp);
        free_mail(&msg, token);
        if (m == NULL)
            gw_log(GW_LOG_WARN, "password reset for user %s not stored: %s", gw_dbs_value(r, i, 0),
                   gw_dbs_error(ctx->db));
        else if (gw_dbs_nrows(m) == 1)
            gw_log(GW_LOG_INFO, "password reset for user %s e-mailed (notification %s)", gw_dbs_value(m, 0, 0),
                   gw_dbs_value(m, 0, 1));
        gw_dbs_result_free(m);
    }
    gw_dbs_result_free(r);
    return 0;
}

int gw_session_reset_confirm(const gw_session_ctx_t *ctx, const char *token, size_t tlen, const char *password,
                             size_t plen, const gw_session_client_t *client, gw_err_t *err)
{
    gw_dbs_result_t *r =
        consume(ctx, "SELECT 1 FROM password_resets WHERE digest = $1 AND used_at IS NULL AND expires_at > now()",
                "SELECT result FROM auth_reset_consume($1, $2, $3)", "resetting a password", token, tlen, password,
                plen, client, err);
    if (r == NULL)
        return -1;
    int rc = strcmp(gw_dbs_value(r, 0, 0), "reset") == 0 ? 0 : refuse_token(err);
    gw_dbs_result_free(r);
    return rc;
}

int gw_session_register(const gw_session_ctx_t *ctx, const char *organisation, const char *email, const char *password,
                        size_t plen, const gw_session_client_t *client, uint32_t *retry_after, gw_err_t *err)
{
    *retry_after = 0;
    uint32_t wait = mail_throttle(ctx, email, client);
    if (wait != 0)
        return too_many(err, wait, retry_after);
    const char *op[] = {organisation};
    gw_dbs_result_t *o = gw_dbs_query(ctx->db, "SELECT id FROM organisations WHERE slug = $1", 1, op);
    if (o == NULL)
        return store_err(ctx, "registering", err);
    int64_t org = gw_dbs_nrows(o) == 1 ? strtoll(gw_dbs_value(o, 0, 0), NULL, 10) : 0;
    gw_dbs_result_free(o);
    char *hash = new_hash(password, plen, "password", err);
    if (hash == NULL)
        return -1;
    char token[64] = "", digest[65] = "";
    gw_rendered_t msg = {0};
    /* an unknown organisation is refused below, by auth_register, like a closed one */
    if (org != 0 &&
        account_mail(ctx, org, "email_verification", GW_ACCOUNT_PAGE_VERIFY, token, digest, &msg, err) != 0) {
        gw_free_secret(hash);
        return -1;
    }
    const char *p[] = {organisation, email,    hash,     org != 0 ? digest : NULL,
                       msg.subject,  msg.text, msg.html, client->correlation};
    gw_dbs_result_t *r =
        gw_dbs_query(ctx->db, "SELECT result FROM auth_register($1, $2, $3, $4, $5, $6, $7, $8)", 8, p);
    gw_free_secret(hash);
    free_mail(&msg, token);
    if (r == NULL || gw_dbs_nrows(r) != 1) {
        gw_dbs_result_free(r);
        return store_err(ctx, "registering", err);
    }
    const char *result = gw_dbs_value(r, 0, 0);
    int rc = 0;
    if (strcmp(result, "closed") == 0)
        rc = gw_err_set(err, gw_err_registration_closed, 403, "This organisation does not take registrations.");
    else if (strcmp(result, "email_invalid") == 0)
        rc = gw_err_set(err, gw_err_parameter_invalid, 400, "'email' is not an email address.");
    else if (strcmp(result, "pending") != 0) /* email_taken: answered like a registration, so it tells nothing */
        gw_log(GW_LOG_INFO, "registration from %s not stored: %s", client->ip != NULL ? client->ip : "-", result);
    gw_dbs_result_free(r);
    return rc;
}

int gw_session_verify_email(const gw_session_ctx_t *ctx, const char *token, size_t tlen,
                            const gw_session_client_t *client, char status[24], uint32_t *retry_after, gw_err_t *err)
{
    *retry_after = 0;
    status[0] = '\0';
    /* the token is 256 random bits: the throttle is against a flood, counted per client address */
    const char *addr = client->ip != NULL ? client->ip : "-";
    throttle_keys_t keys;
    throttle_keys("verify", addr, client->ip, &keys);
    uint32_t wait = throttle_check(ctx, &keys);
    if (wait != 0)
        return too_many(err, wait, retry_after);
    char digest[65];
    gw_auth_token_digest(token, tlen, digest);
    const char *p[] = {digest, client->correlation};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, "SELECT result, status FROM auth_verify_email($1, $2)", 2, p);
    if (r == NULL || gw_dbs_nrows(r) != 1) {
        gw_dbs_result_free(r);
        return store_err(ctx, "verifying an e-mail address", err);
    }
    int rc = 0;
    if (strcmp(gw_dbs_value(r, 0, 0), "verified") == 0) {
        snprintf(status, 24, "%s", gw_dbs_value(r, 0, 1));
    } else {
        gw_log(GW_LOG_INFO, "e-mail verification refused from %s: %s", addr, gw_dbs_value(r, 0, 0));
        throttle_fail(ctx, &keys);
        rc = refuse_token(err);
    }
    gw_dbs_result_free(r);
    return rc;
}
