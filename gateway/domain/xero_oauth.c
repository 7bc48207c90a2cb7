/* SPDX-License-Identifier: MIT */
/*
 * xero_oauth.c: Xero OAuth 2.0. Xero rotates refresh tokens (each refresh retires the one it used), so
 * a token set must be refreshed by one holder at a time and the new refresh token must be durable before
 * anything relies on it; this file owns that rule for every thread and instance (providers/PROVIDERS.md
 * section 2.3). The single flight is a lease in the token set's row (refreshing_until, refreshing_by),
 * taken and released by committed statements: no transaction is open while Xero is called, so a server
 * that ends idle transactions (idle_in_transaction_session_timeout) or a pgbouncer in transaction mode
 * never cuts a refresh in half.
 *
 * Residual risk, by design: once Xero has rotated the token, the new refresh token exists only in this
 * process until it is stored. Storing is retried (GW_XERO_STORE_ATTEMPTS, about a minute); if the database
 * stays away longer, or the process dies in between, the stored (old) token is retired, and Xero still
 * accepts it for its grace period, so the next refresh, which reads the old token again, recovers. Only an
 * outage longer than the grace period turns this into invalid_grant, which marks the token set
 * 'needs_reauth' (an administrator reconnects); it never loops.
 *
 * No token, code or secret is ever logged or put into an error message; token responses are never
 * logged, only their status and OAuth error code.
 */
#include "xero_oauth.h"
#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "alert.h"
#include "audit.h"
#include "http_client.h"
#include "log.h"
#include "mem.h"

#define DEFAULT_LOGIN_BASE "https://login.xero.com"
#define DEFAULT_IDENTITY_BASE "https://identity.xero.com"
#define DEFAULT_API_BASE "https://api.xero.com"
#define DEFAULT_EXPIRES_IN 1800
#define STATE_VERSION 1
#define STATE_NONCE_LEN 16
#define STATE_PAYLOAD_LEN (1 + 8 + 8 + STATE_NONCE_LEN)
#define STATE_RAW_LEN (STATE_PAYLOAD_LEN + 32)

/* ---- small helpers ---- */

/* Fills err with the code of every failure of this module (see xero_oauth.h). Returns -1. */
__attribute__((format(printf, 2, 3))) static int fail(gw_err_t *err, const char *fmt, ...)
{
    gw_err_set(err, gw_err_xero_connect_failed, 502, NULL);
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Frees a string that held a secret, wiping it first. */
static void free_secret(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* A growable NUL-terminated string; out of memory aborts. */
typedef struct st_buf_t {
    char *base;
    size_t len, cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap != 0 ? b->cap : 128;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = gw_xmalloc(cap);
    if (b->base != NULL) {
        memcpy(p, b->base, b->len);
        explicit_bzero(b->base, b->cap); /* buffers carry tokens: never leave a copy behind */
        free(b->base);
    }
    b->base = p;
    b->cap = cap;
    b->base[b->len] = '\0';
}

static void buf_add(buf_t *b, const char *s, size_t len)
{
    buf_reserve(b, len);
    memcpy(b->base + b->len, s, len);
    b->len += len;
    b->base[b->len] = '\0';
}

static void buf_adds(buf_t *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* Appends s percent-encoded (RFC 3986), in place: no other copy of a secret is made. */
static void buf_add_encoded(buf_t *b, const char *s)
{
    size_t len = strlen(s);
    buf_reserve(b, GW_PERCENT_ENCODED_SIZE(len));
    b->len += gw_percent_encode(s, len, b->base + b->len);
}

static void buf_wipe(buf_t *b)
{
    if (b->base != NULL) {
        explicit_bzero(b->base, b->cap);
        free(b->base);
    }
    *b = (buf_t){0};
}

static bool is_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* base (without trailing slashes, or dflt when unset) followed by path. */
static char *join_url(const char *base, const char *dflt, const char *path)
{
    if (!is_set(base))
        base = dflt;
    size_t blen = strlen(base);
    while (blen != 0 && base[blen - 1] == '/')
        --blen;
    buf_t b = {0};
    buf_add(&b, base, blen);
    buf_adds(&b, path);
    return b.base;
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; --i, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i != 8; ++i)
        v = v << 8 | p[i];
    return v;
}

/* ---- the signed state of an authorization request ---- */

/* The MAC key of states: derived from SETTLED_SECRET_KEY, so the sealing key is never used to MAC. */
static int state_key(const unsigned char key[GW_CRYPTO_KEY_LEN], unsigned char out[32])
{
    static const char label[] = "settled/xero-oauth-state/v1";
    cn_str_t part = {label, sizeof(label) - 1};
    return gw_crypto_hmac_sha256(key, GW_CRYPTO_KEY_LEN, &part, 1, out);
}

int gw_xero_state_make(const unsigned char key[GW_CRYPTO_KEY_LEN], int64_t organisation_id, int64_t now, char *out,
                       size_t outlen, gw_xero_state_t *made)
{
    unsigned char raw[STATE_RAW_LEN], mkey[32];
    if (outlen < GW_XERO_STATE_MAX || state_key(key, mkey) != 0)
        return -1;
    raw[0] = STATE_VERSION;
    put_be64(raw + 1, (uint64_t)organisation_id);
    put_be64(raw + 9, (uint64_t)(now + GW_XERO_STATE_TTL));
    gw_crypto_random(raw + 17, STATE_NONCE_LEN);
    cn_str_t part = {(const char *)raw, STATE_PAYLOAD_LEN};
    int ret = gw_crypto_hmac_sha256(mkey, sizeof(mkey), &part, 1, raw + STATE_PAYLOAD_LEN);
    explicit_bzero(mkey, sizeof(mkey));
    if (ret != 0)
        return -1;
    gw_base64_encode(raw, sizeof(raw), GW_BASE64_URL | GW_BASE64_NOPAD, out);
    if (made != NULL) {
        made->organisation_id = organisation_id;
        made->expires_at = now + GW_XERO_STATE_TTL;
        gw_hex_encode(raw + 17, STATE_NONCE_LEN, made->nonce);
    }
    return 0;
}

int gw_xero_state_check(const unsigned char key[GW_CRYPTO_KEY_LEN], const char *state, int64_t now,
                        gw_xero_state_t *out)
{
    unsigned char raw[STATE_RAW_LEN], mac[32], mkey[32];
    size_t rawlen = 0;
    if (state == NULL ||
        gw_base64_decode(state, strlen(state), GW_BASE64_URL | GW_BASE64_NOPAD, raw, sizeof(raw), &rawlen) != 0 ||
        rawlen != sizeof(raw) || state_key(key, mkey) != 0)
        return -1;
    cn_str_t part = {(const char *)raw, STATE_PAYLOAD_LEN};
    int ret = gw_crypto_hmac_sha256(mkey, sizeof(mkey), &part, 1, mac);
    explicit_bzero(mkey, sizeof(mkey));
    if (ret != 0 || !gw_crypto_equal(mac, raw + STATE_PAYLOAD_LEN, sizeof(mac)))
        return -1;
    /* only a state this key signed gets here */
    if (raw[0] != STATE_VERSION)
        return -1;
    int64_t org = (int64_t)get_be64(raw + 1), expires = (int64_t)get_be64(raw + 9);
    if (org <= 0 || now >= expires || expires - now > GW_XERO_STATE_TTL)
        return -1;
    out->organisation_id = org;
    out->expires_at = expires;
    gw_hex_encode(raw + 17, STATE_NONCE_LEN, out->nonce);
    return 0;
}

/* ---- settings ---- */

static int need(const char *value, const char *name, const char *what, gw_err_t *err)
{
    if (is_set(value))
        return 0;
    return fail(err, "%s: required to %s", name, what);
}

/* The sealing key, and the client credentials when with_client is set. */
static int load_key(const gw_config_t *cfg, bool with_client, unsigned char key[GW_CRYPTO_KEY_LEN], gw_err_t *err)
{
    if (with_client) {
        if (need(cfg->xero_client_id, "SETTLED_XERO_CLIENT_ID", "connect Xero (the client id of the Xero app)", err) !=
                0 ||
            need(cfg->xero_client_secret, "SETTLED_XERO_CLIENT_SECRET",
                 "connect Xero (the client secret of the Xero app)", err) != 0)
            return -1;
    }
    gw_err_t kerr = GW_ERR_INIT;
    if (gw_crypto_key_from_setting(cfg->secret_key, key, &kerr) != 0)
        return fail(err, "%s", kerr.detail); /* the detail names the setting; the code is this module's */
    return 0;
}

int gw_xero_settings_check(const gw_config_t *cfg, int needs, gw_err_t *err)
{
    unsigned char key[GW_CRYPTO_KEY_LEN];
    int ret = load_key(cfg, (needs & GW_XERO_NEED_CLIENT) != 0, key, err);
    explicit_bzero(key, sizeof(key));
    if (ret != 0)
        return -1;
    if ((needs & GW_XERO_NEED_REDIRECT) != 0 &&
        (need(cfg->xero_client_id, "SETTLED_XERO_CLIENT_ID", "connect Xero", err) != 0 ||
         need(cfg->xero_redirect_uri, "SETTLED_XERO_REDIRECT_URI",
              "connect Xero (where Xero sends the administrator back)", err) != 0))
        return -1;
    return 0;
}

int gw_xero_state_verify(const gw_config_t *cfg, const char *state, int64_t now, gw_xero_state_t *out, gw_err_t *err)
{
    unsigned char key[GW_CRYPTO_KEY_LEN];
    if (load_key(cfg, false, key, err) != 0)
        return -1;
    int rc = gw_xero_state_check(key, state, now, out);
    explicit_bzero(key, sizeof(key));
    if (rc != 0)
        return gw_err_set(err, gw_err_oauth_callback_invalid, 400,
                          "The authorization request is invalid or has expired: start connecting Xero again.");
    return 0;
}

/* ---- sealing tokens for the database ---- */

/* The associated data of a sealed token: its column and its organisation. */
static void token_aad(char *aad, size_t len, const char *column, int64_t organisation_id)
{
    snprintf(aad, len, "settled/xero_tokens.%s/organisation=%lld", column, (long long)organisation_id);
}

/* Seals token for column into a bytea literal in hex form ("\x..."), malloc'd. */
static char *seal_token(const unsigned char *key, int64_t organisation_id, const char *column, const char *token)
{
    char aad[96];
    token_aad(aad, sizeof(aad), column, organisation_id);
    size_t len = strlen(token), slen = len + GW_CRYPTO_SEAL_OVERHEAD;
    unsigned char *sealed = gw_xmalloc(slen);
    if (gw_crypto_seal(key, token, len, aad, strlen(aad), sealed) != 0) {
        free(sealed);
        return NULL;
    }
    char *out = gw_xmalloc(2 + 2 * slen + 1);
    out[0] = '\\', out[1] = 'x';
    gw_hex_encode(sealed, slen, out + 2);
    free(sealed);
    return out;
}

/* Opens a sealed token given as hex digits (encode(col, 'hex')). Returns it malloc'd, or NULL. */
static char *open_token(const unsigned char *key, int64_t organisation_id, const char *column, const char *hextext)
{
    if (hextext == NULL)
        return NULL;
    size_t hlen = strlen(hextext);
    if (hlen % 2 != 0 || hlen / 2 < GW_CRYPTO_SEAL_OVERHEAD)
        return NULL;
    size_t slen = hlen / 2;
    unsigned char *sealed = gw_xmalloc(slen);
    if (gw_hex_decode(hextext, hlen, sealed) != 0) {
        free(sealed);
        return NULL;
    }
    char aad[96];
    token_aad(aad, sizeof(aad), column, organisation_id);
    char *out = gw_xmalloc(slen - GW_CRYPTO_SEAL_OVERHEAD + 1);
    size_t outlen = 0;
    int ret = gw_crypto_open(key, sealed, slen, aad, strlen(aad), (unsigned char *)out, &outlen);
    free(sealed);
    if (ret != 0 || memchr(out, '\0', outlen) != NULL) {
        explicit_bzero(out, slen - GW_CRYPTO_SEAL_OVERHEAD + 1);
        free(out);
        return NULL;
    }
    out[outlen] = '\0';
    return out;
}

/* ---- the token endpoint ---- */

enum token_outcome {
    TOKEN_OK,
    TOKEN_INVALID_GRANT, /* the refresh token or code is dead: reconnect */
    TOKEN_TRANSIENT,     /* network, timeout, 5xx, 429: try again later with the same token */
    TOKEN_FAILED,        /* anything else (client credentials, malformed answers): needs an operator */
};

typedef struct st_token_set_t {
    char *access_token;
    char *refresh_token; /* NULL if the answer had none */
    long expires_in;     /* seconds from now, the time of the call already subtracted */
} token_set_t;

static void token_set_wipe(token_set_t *t)
{
    free_secret(t->access_token);
    free_secret(t->refresh_token);
    *t = (token_set_t){0};
}

/* Takes a string member of a token answer and wipes jansson's copy. */
static char *take_secret(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    if (!json_is_string(v) || json_string_length(v) == 0)
        return NULL;
    char *copy = gw_xstrdup(json_string_value(v));
    explicit_bzero((char *)json_string_value(v), json_string_length(v));
    return copy;
}

/* An OAuth error code of an answer ("invalid_grant"...), if it has a safe one (letters and '_' only). */
static void oauth_error(const gw_http_response_t *res, char *out, size_t outlen)
{
    out[0] = '\0';
    json_t *doc = res->body != NULL ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    const char *e = json_string_value(json_object_get(doc, "error"));
    if (e != NULL && strlen(e) < outlen && strspn(e, "abcdefghijklmnopqrstuvwxyz_") == strlen(e))
        snprintf(out, outlen, "%s", e);
    json_decref(doc);
}

static void log_call(enum gw_log_level level, const char *msg, const char *what, long long token_id,
                     const gw_http_response_t *res, const char *oauth_err)
{
    if (!gw_log_enabled(level))
        return;
    gw_logline_t line;
    gw_log_begin(&line, level, msg);
    gw_log_str(&line, "provider", "xero", 4);
    gw_log_str(&line, "call", what, strlen(what));
    if (token_id != 0)
        gw_log_int(&line, "token_id", token_id);
    gw_log_int(&line, "status", res->status);
    if (res->error != NULL)
        gw_log_str(&line, "transfer_error", res->error, strlen(res->error));
    if (oauth_err != NULL && oauth_err[0] != '\0')
        gw_log_str(&line, "oauth_error", oauth_err, strlen(oauth_err));
    gw_log_ms(&line, "ms", res->seconds * 1000);
    gw_log_end(&line);
}

/* POSTs form (a form body holding a grant) to the token endpoint with the client's Basic credentials. */
static enum token_outcome token_call(const gw_config_t *cfg, const char *grant, const buf_t *form, long long token_id,
                                     token_set_t *out, gw_err_t *err)
{
    *out = (token_set_t){0};
    char *url = join_url(cfg->xero_identity_base, DEFAULT_IDENTITY_BASE, "/connect/token");
    buf_t cred = {0}, auth = {0};
    /* RFC 6749 section 2.3.1: each form-encoded, then base64 (a no-op for Xero's [A-Za-z0-9_-] values) */
    buf_add_encoded(&cred, cfg->xero_client_id);
    buf_adds(&cred, ":");
    buf_add_encoded(&cred, cfg->xero_client_secret);
    buf_adds(&auth, "Authorization: Basic ");
    buf_reserve(&auth, GW_BASE64_ENCODED_SIZE(cred.len));
    auth.len += gw_base64_encode(cred.base, cred.len, 0, auth.base + auth.len);
    const char *headers[] = {auth.base, "Content-Type: application/x-www-form-urlencoded", "Accept: application/json",
                             NULL};
    gw_http_request_t req = {
        .method = "POST", .url = url, .headers = headers, .body = form->base, .body_len = form->len};
    gw_http_response_t res = {0};
    (void)gw_http_do(&req, &res); /* res says what happened either way */
    buf_wipe(&cred);
    buf_wipe(&auth);
    free(url);

    enum token_outcome outcome;
    char oerr[48] = "";
    if (res.status == 200) {
        json_t *doc = res.body != NULL ? json_loadb(res.body, res.body_len, 0, NULL) : NULL;
        json_t *exp = json_object_get(doc, "expires_in");
        out->access_token = take_secret(doc, "access_token");
        out->refresh_token = take_secret(doc, "refresh_token");
        long expires_in = json_is_integer(exp) ? (long)json_integer_value(exp) : DEFAULT_EXPIRES_IN;
        if (expires_in <= 0 || expires_in > 86400)
            expires_in = DEFAULT_EXPIRES_IN;
        out->expires_in = expires_in - (long)res.seconds - 1; /* the clock started before the call */
        json_decref(doc);
        if (out->access_token == NULL) {
            fail(err, "the Xero token endpoint answered 200 without an access token");
            outcome = TOKEN_FAILED;
        } else {
            outcome = TOKEN_OK;
        }
    } else if (res.status == 0 || res.status == 429 || res.status >= 500) {
        if (res.status == 0)
            fail(err, "the Xero token endpoint could not be reached: %s",
                 res.error != NULL ? res.error : "unknown error");
        else
            fail(err, "the Xero token endpoint answered %ld (temporary; try again later)", res.status);
        outcome = TOKEN_TRANSIENT;
    } else {
        oauth_error(&res, oerr, sizeof(oerr));
        if (strcmp(oerr, "invalid_grant") == 0) {
            fail(err,
                 "Xero rejected the %s (invalid_grant): it was already used, revoked or has expired; connect "
                 "Xero again",
                 grant);
            outcome = TOKEN_INVALID_GRANT;
        } else if (strcmp(oerr, "invalid_client") == 0 || strcmp(oerr, "unauthorized_client") == 0) {
            fail(err,
                 "Xero rejected the client credentials (%s): check SETTLED_XERO_CLIENT_ID and "
                 "SETTLED_XERO_CLIENT_SECRET",
                 oerr);
            outcome = TOKEN_FAILED;
        } else {
            fail(err, "the Xero token endpoint answered %ld%s%s%s", res.status, oerr[0] ? " (" : "", oerr,
                 oerr[0] ? ")" : "");
            outcome = TOKEN_FAILED;
        }
    }
    log_call(outcome == TOKEN_OK ? GW_LOG_INFO : GW_LOG_WARN,
             outcome == TOKEN_OK ? "xero token call succeeded" : "xero token call failed", grant, token_id, &res, oerr);
    if (res.body != NULL)
        explicit_bzero(res.body, res.body_len);
    gw_http_response_free(&res);
    if (outcome != TOKEN_OK)
        token_set_wipe(out);
    return outcome;
}

/* ---- database ---- */

/* Correlation ids: ours ("xero-refresh-<hex>") or a request id (at most 128 bytes). */
#define CORR_MAX 136

/* Fills err after a failed statement of s: what failed and the database's reason. Returns -1. */
static int db_fail(gw_dbs_t *s, const char *what, gw_err_t *err)
{
    const char *e = gw_dbs_error(s);
    bool unmigrated =
        strstr(e, "does not exist") != NULL && (strstr(e, "relation") != NULL || strstr(e, "column") != NULL);
    return fail(err, "%s: %s%s", what, e, unmigrated ? " (run `settled migrate`)" : "");
}

static void new_correlation(const char *prefix, char out[CORR_MAX])
{
    unsigned char r[8];
    gw_crypto_random(r, sizeof(r));
    int n = snprintf(out, CORR_MAX, "%s-", prefix);
    if (n > 0 && (size_t)n + 2 * sizeof(r) < CORR_MAX)
        gw_hex_encode(r, sizeof(r), out + n);
}

static double monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
        /* interrupted by a signal: sleep the rest */
    }
}

/* One row of xero_tokens, as read for gw_xero_access_token. */
typedef struct st_token_row_t {
    int64_t organisation_id;
    bool needs_reauth;
    bool retired;      /* replaced by a newer token set of the organisation: never used again */
    bool access_valid; /* an access token that lives at least GW_XERO_TOKEN_MIN_TTL more seconds */
    bool leased;       /* a refresh lease that has not expired is held */
    char *access_hex;
    char *refresh_hex; /* only when the lease was just taken */
    char *refreshed_at;
    char *last_error;
    char *lease_until, *lease_by; /* the lease, expired or not; NULL when there is none */
    char *taken_from;             /* only when the lease was just taken: the holder of the expired lease, or NULL */
} token_row_t;

static void token_row_free(token_row_t *r)
{
    free(r->access_hex);
    free(r->refresh_hex);
    free(r->refreshed_at);
    free(r->last_error);
    free(r->lease_until);
    free(r->lease_by);
    free(r->taken_from);
    *r = (token_row_t){0};
}

/* The columns of a token_row_t ($2: GW_XERO_TOKEN_MIN_TTL); then come the refresh token and the holder of the
 * lease taken over (or NULLs). */
#define TOKEN_COLUMNS                                                                                                  \
    "organisation_id, status, encode(access_token, 'hex'), "                                                           \
    "access_token IS NOT NULL AND access_expires_at > clock_timestamp() + make_interval(secs => $2::int), "            \
    "refreshed_at::text, last_error, coalesce(refreshing_until >= clock_timestamp(), false), refreshing_until::text, " \
    "refreshing_by"

/* Runs sql (TOKEN_COLUMNS of token set id) with params id, GW_XERO_TOKEN_MIN_TTL and extra. Returns 0 with the row
 * in *row, 1 if there is none, or -1 on a database error. */
static int token_row_query(gw_dbs_t *s, const char *sql, const char *id, int nextra, const char *const *extra,
                           token_row_t *row)
{
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%d", GW_XERO_TOKEN_MIN_TTL);
    const char *p[4] = {id, ttl};
    for (int i = 0; i != nextra && i != 2; ++i)
        p[2 + i] = extra[i];
    *row = (token_row_t){0};
    gw_dbs_result_t *r = gw_dbs_query(s, sql, 2 + nextra, p);
    if (r == NULL)
        return -1;
    if (gw_dbs_nrows(r) != 1) {
        gw_dbs_result_free(r);
        return 1;
    }
    row->organisation_id = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
    row->needs_reauth = strcmp(gw_dbs_value(r, 0, 1), "needs_reauth") == 0;
    row->retired = strcmp(gw_dbs_value(r, 0, 1), "retired") == 0;
    row->access_hex = gw_xstrdup(gw_dbs_value(r, 0, 2));
    row->access_valid = gw_dbs_value(r, 0, 3) != NULL && strcmp(gw_dbs_value(r, 0, 3), "t") == 0;
    row->refreshed_at = gw_xstrdup(gw_dbs_value(r, 0, 4) != NULL ? gw_dbs_value(r, 0, 4) : "");
    row->last_error = gw_xstrdup(gw_dbs_value(r, 0, 5));
    row->leased = strcmp(gw_dbs_value(r, 0, 6), "t") == 0;
    row->lease_until = gw_xstrdup(gw_dbs_value(r, 0, 7));
    row->lease_by = gw_xstrdup(gw_dbs_value(r, 0, 8));
    row->refresh_hex = gw_xstrdup(gw_dbs_value(r, 0, 9));
    row->taken_from = gw_xstrdup(gw_dbs_value(r, 0, 10));
    gw_dbs_result_free(r);
    return 0;
}

/* Reads token set id, without any lock. */
static int read_token_row(gw_dbs_t *s, const char *id, token_row_t *row)
{
    static const char sql[] = "SELECT " TOKEN_COLUMNS ", NULL, NULL FROM xero_tokens WHERE id = $1";
    return token_row_query(s, sql, id, 0, NULL, row);
}

/*
 * Takes the refresh lease of token set id for owner, for lease_ms milliseconds: one statement, committed on its
 * own, that succeeds only for an active token set whose lease is free or expired (a holder that died is taken
 * over). Returns 0 with the row, its refresh token and the holder of an expired lease it replaced (as the
 * statement's snapshot saw it: for the log) in *row, 1 if the lease was not taken (held, or the token set is gone
 * or needs_reauth: read it to know which), or -1 on a database error.
 */
static int take_lease(gw_dbs_t *s, const char *id, const char *lease_ms, const char *owner, token_row_t *row)
{
    static const char sql[] =
        "WITH prev AS (SELECT refreshing_by FROM xero_tokens WHERE id = $1) "
        "UPDATE xero_tokens SET refreshing_until = now() + make_interval(secs => $3::double precision / 1000), "
        "refreshing_by = $4 WHERE id = $1 AND status = 'active' AND (refreshing_until IS NULL OR refreshing_until < "
        "now()) RETURNING " TOKEN_COLUMNS ", encode(refresh_token, 'hex'), (SELECT refreshing_by FROM prev)";
    const char *extra[] = {lease_ms, owner};
    return token_row_query(s, sql, id, 2, extra, row);
}

static const char sql_release[] =
    "UPDATE xero_tokens SET refreshing_until = NULL, refreshing_by = NULL WHERE id = $1 AND refreshing_by = $2";

/* Gives the lease of owner back (a lease someone else has taken over is left alone). If the database cannot be
 * reached, the lease expires by itself. */
static void release_lease(gw_dbs_t *s, long long tid, const char *id, const char *owner)
{
    const char *p[] = {id, owner};
    if (gw_dbs_exec(s, sql_release, 2, p) < 0) {
        char why[256];
        gw_log(GW_LOG_WARN, "xero token set %lld: cannot release the refresh lease (%s); it expires by itself", tid,
               gw_log_one_line(why, sizeof(why), gw_dbs_error(s)));
    }
}

/* A name for the holder of a lease, for operators: host:pid:random. */
static void lease_owner(char *out, size_t len)
{
    char host[64] = "";
    unsigned char r[4];
    char hex[9];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    gw_crypto_random(r, sizeof(r));
    gw_hex_encode(r, sizeof(r), hex);
    snprintf(out, len, "%s:%ld:%s", host, (long)getpid(), hex);
}

static int needs_reauth_error(long long token_id, const token_row_t *row, gw_err_t *err)
{
    fail(err, "Xero token set %lld needs to be reconnected by an administrator (%s)", token_id,
         row->last_error != NULL ? row->last_error : "needs_reauth");
    return GW_XERO_NEEDS_REAUTH;
}

/* A token set replaced by a newer one: transient for the caller, whose next look at xero_tenants finds the newer. */
static int retired_error(long long token_id, gw_err_t *err)
{
    return fail(err, "Xero token set %lld was replaced by a newer connection; try again with the newer token set",
                token_id);
}

/* Hands out the stored access token of row. */
static int use_stored(const unsigned char *key, long long token_id, const token_row_t *row, char **token_out,
                      gw_err_t *err)
{
    if ((*token_out = open_token(key, row->organisation_id, "access_token", row->access_hex)) == NULL)
        return fail(err, "cannot decrypt Xero token set %lld: SETTLED_SECRET_KEY is not the key it was stored with",
                    token_id);
    return 0;
}

/* The rotated token set, to be stored over the refresh token it replaces. */
typedef struct st_store_refresh_t {
    const char *id, *sealed_refresh, *sealed_access, *expires, *old_refresh_hex, *owner;
    enum { STORE_STORED, STORE_ALREADY, STORE_SUPERSEDED } outcome; /* out */
} store_refresh_t;

/*
 * The body of the transaction that stores a refresh: the new tokens replace the old only where the row still
 * holds the refresh token that was used, and the lease of the owner is cleared with them. Safe to repeat: a
 * previous attempt whose COMMIT's outcome was unknown is recognised by the new token being there already; a row
 * that holds another token was refreshed by someone who took over an expired lease, and is left alone.
 */
static int store_refresh_tx(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    static const char sql_store[] =
        "UPDATE xero_tokens SET refresh_token = $2::bytea, access_token = $3::bytea, "
        "access_expires_at = clock_timestamp() + make_interval(secs => $4::int), "
        "status = CASE status WHEN 'retired' THEN 'retired' ELSE 'active' END, last_error = NULL, "
        "refreshed_at = clock_timestamp(), updated_at = now(), "
        "refreshing_until = CASE WHEN refreshing_by = $6 THEN NULL ELSE refreshing_until END, "
        "refreshing_by = CASE WHEN refreshing_by = $6 THEN NULL ELSE refreshing_by END "
        "WHERE id = $1 AND refresh_token = decode($5, 'hex')";
    static const char sql_check[] = "SELECT refresh_token = $2::bytea FROM xero_tokens WHERE id = $1";
    store_refresh_t *a = arg;
    const char *p[] = {a->id, a->sealed_refresh, a->sealed_access, a->expires, a->old_refresh_hex, a->owner};
    long long n = gw_dbs_exec(s, sql_store, 6, p);
    if (n < 0)
        return gw_dbs_err(s, err);
    if (n == 1) {
        a->outcome = STORE_STORED;
        return 0;
    }
    gw_dbs_result_t *r = gw_dbs_query(s, sql_check, 2, p);
    if (r == NULL)
        return gw_dbs_err(s, err);
    bool ours = gw_dbs_nrows(r) == 1 && gw_dbs_value(r, 0, 0) != NULL && strcmp(gw_dbs_value(r, 0, 0), "t") == 0;
    gw_dbs_result_free(r);
    a->outcome = ours ? STORE_ALREADY : STORE_SUPERSEDED;
    const char *pr[] = {a->id, a->owner};
    if (!ours && gw_dbs_exec(s, sql_release, 2, pr) < 0)
        return gw_dbs_err(s, err);
    return 0;
}

/* Stores a refresh (store_refresh_tx), retrying until it is stored: the rotated refresh token exists nowhere else.
 * Every failed attempt is logged. Returns 0, or -1 with err set after GW_XERO_STORE_ATTEMPTS attempts. */
static int store_refresh(gw_dbs_t *s, long long tid, store_refresh_t *st, gw_err_t *err)
{
    long backoff = GW_XERO_STORE_BACKOFF_MS;
    for (int attempt = 1;; ++attempt) {
        gw_err_t e = GW_ERR_INIT;
        if (gw_dbs_tx(s, store_refresh_tx, st, &e) == 0) {
            if (attempt > 1)
                gw_log(GW_LOG_WARN, "xero token set %lld: the rotated refresh token is stored (attempt %d)", tid,
                       attempt);
            return 0;
        }
        bool last = attempt == GW_XERO_STORE_ATTEMPTS;
        enum gw_log_level level = last ? GW_LOG_ERROR : GW_LOG_WARN;
        if (gw_log_enabled(level)) {
            char why[256];
            gw_log_one_line(why, sizeof(why), gw_dbs_error(s));
            gw_logline_t line;
            gw_log_begin(&line, level,
                         last ? "xero rotated refresh token lost: it could not be stored"
                              : "xero rotated refresh token not stored yet; retrying");
            gw_log_str(&line, "provider", "xero", 4);
            gw_log_int(&line, "token_id", tid);
            gw_log_int(&line, "attempt", attempt);
            gw_log_int(&line, "attempts", GW_XERO_STORE_ATTEMPTS);
            gw_log_str(&line, "error", e.detail, strlen(e.detail));
            if (why[0] != '\0')
                gw_log_str(&line, "db_error", why, strlen(why));
            if (!last)
                gw_log_int(&line, "retry_in_ms", backoff);
            gw_log_end(&line);
        }
        if (last)
            return fail(err,
                        "Xero token set %lld was refreshed, but the rotated refresh token could not be stored in %d "
                        "attempts (%.80s); Xero accepts the previous one for its grace period",
                        tid, GW_XERO_STORE_ATTEMPTS, e.detail);
        sleep_ms(backoff);
        backoff = backoff * 2 > GW_XERO_STORE_BACKOFF_MAX_MS ? GW_XERO_STORE_BACKOFF_MAX_MS : backoff * 2;
    }
}

/* What Xero's invalid_grant does to a token set. */
typedef struct st_mark_reauth_t {
    const char *id, *reason, *old_refresh_hex, *owner, *corr;
    int64_t organisation_id;
    bool marked; /* out: false if the row no longer holds the refresh token that was refused */
} mark_reauth_t;

/* The body of the transaction that parks a token set as needs_reauth, with its audit (safe to repeat). */
static int mark_reauth_tx(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    static const char sql_reauth[] =
        "UPDATE xero_tokens SET status = 'needs_reauth', last_error = $2, access_token = NULL, access_expires_at = "
        "NULL, refreshing_until = NULL, refreshing_by = NULL, updated_at = now() WHERE id = $1 AND status = 'active' "
        "AND refresh_token = decode($3, 'hex')";
    mark_reauth_t *a = arg;
    const char *p[] = {a->id, a->reason, a->old_refresh_hex};
    a->marked = false;
    long long n = gw_dbs_exec(s, sql_reauth, 3, p);
    if (n < 0)
        return gw_dbs_err(s, err);
    if (n == 0) {
        /* refreshed (or parked) by someone who took over an expired lease: their outcome stands */
        const char *pr[] = {a->id, a->owner};
        return gw_dbs_exec(s, sql_release, 2, pr) < 0 ? gw_dbs_err(s, err) : 0;
    }
    json_t *before = json_pack("{s:s}", "status", "active");
    json_t *after = json_pack("{s:s, s:s}", "status", "needs_reauth", "last_error", a->reason);
    char *b = json_dumps(before, JSON_COMPACT | JSON_SORT_KEYS), *af = json_dumps(after, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = gw_audit_write(s, a->organisation_id, "system:xero", "xero.needs_reauth", "xero_tokens", a->id, b, af,
                            a->corr, err);
    free(b);
    free(af);
    json_decref(before);
    json_decref(after);
    if (rc != 0)
        return -1;
    a->marked = true;
    return 0;
}

/* gw_xero_access_token with a gw_err_t. */
static int access_token(gw_dbs_t *s, const gw_config_t *cfg, int64_t token_id, bool force_refresh, char **token_out,
                        gw_err_t *err)
{
    unsigned char key[GW_CRYPTO_KEY_LEN];
    token_row_t row0 = {0}, row = {0};
    token_set_t fresh = {0};
    char *refresh = NULL, *sealed_refresh = NULL, *sealed_access = NULL;
    char id[24], lease_ms[24], owner[128];
    long long tid = (long long)token_id;
    int ret = -1, rc;
    bool holding = false; /* this call holds the lease */

    *token_out = NULL;
    snprintf(id, sizeof(id), "%lld", tid);
    if (load_key(cfg, false, key, err) != 0)
        return -1;

    /* 1. the common case: a stored access token that still lives long enough */
    if ((rc = read_token_row(s, id, &row0)) != 0) {
        if (rc > 0)
            fail(err, "there is no Xero token set %lld", tid);
        else
            db_fail(s, "cannot read the Xero token set", err);
        goto Exit;
    }
    if (row0.retired) {
        ret = retired_error(tid, err);
        goto Exit;
    }
    if (row0.needs_reauth) {
        ret = needs_reauth_error(tid, &row0, err);
        goto Exit;
    }
    if (!force_refresh && row0.access_valid) {
        ret = use_stored(key, tid, &row0, token_out, err);
        goto Exit;
    }
    if (need(cfg->xero_client_id, "SETTLED_XERO_CLIENT_ID", "refresh Xero tokens", err) != 0 ||
        need(cfg->xero_client_secret, "SETTLED_XERO_CLIENT_SECRET", "refresh Xero tokens", err) != 0)
        goto Exit;

    /* 2. the lease: whoever takes it refreshes; the others poll until its result is stored, or the lease is free
     * again (the holder failed, or died and its lease expired), and then take it themselves */
    long long lease =
        (long long)(cfg->http_timeout_ms > 0 ? cfg->http_timeout_ms : 30000) + GW_XERO_LEASE_MARGIN * 1000LL;
    snprintf(lease_ms, sizeof(lease_ms), "%lld", lease);
    lease_owner(owner, sizeof(owner));
    double deadline = monotonic_ms() + (double)lease + GW_XERO_WAIT_MARGIN * 1000.0;
    bool waiting_logged = false;
    int free_retries = 0;
    for (;;) {
        if ((rc = take_lease(s, id, lease_ms, owner, &row)) < 0) {
            db_fail(s, "cannot take the refresh lease of the Xero token set", err);
            goto Exit;
        }
        if (rc == 0) {
            holding = true;
            break;
        }
        if ((rc = read_token_row(s, id, &row)) != 0) {
            if (rc > 0)
                fail(err, "there is no Xero token set %lld", tid);
            else
                db_fail(s, "cannot read the Xero token set", err);
            goto Exit;
        }
        if (row.retired) {
            ret = retired_error(tid, err);
            goto Exit;
        }
        if (row.needs_reauth) {
            ret = needs_reauth_error(tid, &row, err);
            goto Exit;
        }
        bool refreshed_meanwhile = strcmp(row.refreshed_at, row0.refreshed_at) != 0;
        if (row.access_valid && (!force_refresh || refreshed_meanwhile)) {
            ret = use_stored(key, tid, &row, token_out, err); /* the holder's result */
            goto Exit;
        }
        if (monotonic_ms() >= deadline) {
            fail(err,
                 "another refresh of Xero token set %lld is taking too long (lease held by %.100s until %.40s); "
                 "try again later",
                 tid, row.lease_by != NULL ? row.lease_by : "?", row.lease_until != NULL ? row.lease_until : "?");
            gw_log(GW_LOG_WARN, "xero token set %lld: %s", tid, err != NULL ? err->detail : "lease held too long");
            goto Exit;
        }
        if (row.leased) {
            if (!waiting_logged && gw_log_enabled(GW_LOG_INFO)) {
                gw_logline_t line;
                gw_log_begin(&line, GW_LOG_INFO, "xero refresh lease held elsewhere; waiting for its result");
                gw_log_str(&line, "provider", "xero", 4);
                gw_log_int(&line, "token_id", tid);
                gw_log_str(&line, "refreshing_by", row.lease_by, row.lease_by != NULL ? strlen(row.lease_by) : 0);
                gw_log_str(&line, "refreshing_until", row.lease_until,
                           row.lease_until != NULL ? strlen(row.lease_until) : 0);
                gw_log_end(&line);
                waiting_logged = true;
            }
            sleep_ms(GW_XERO_WAIT_POLL_MS);
        } else if (free_retries++ != 0) {
            sleep_ms(GW_XERO_WAIT_POLL_MS / 10); /* free, yet taken by someone else first: never spin */
        }
        token_row_free(&row);
    }
    if (row.taken_from != NULL && gw_log_enabled(GW_LOG_WARN)) {
        gw_logline_t line;
        gw_log_begin(&line, GW_LOG_WARN, "xero refresh lease taken over: its holder let it expire");
        gw_log_str(&line, "provider", "xero", 4);
        gw_log_int(&line, "token_id", tid);
        gw_log_str(&line, "previous_holder", row.taken_from, strlen(row.taken_from));
        gw_log_end(&line);
    }
    bool refreshed_meanwhile = strcmp(row.refreshed_at, row0.refreshed_at) != 0;
    if (row.access_valid && (!force_refresh || refreshed_meanwhile)) {
        ret = use_stored(key, tid, &row, token_out, err);
        goto Exit;
    }
    if ((refresh = open_token(key, row.organisation_id, "refresh_token", row.refresh_hex)) == NULL) {
        fail(err, "cannot decrypt Xero token set %lld: SETTLED_SECRET_KEY is not the key it was stored with", tid);
        goto Exit;
    }

    /* 3. the token call, with no transaction open */
    buf_t form = {0};
    buf_adds(&form, "grant_type=refresh_token&refresh_token=");
    buf_add_encoded(&form, refresh);
    gw_err_t terr = GW_ERR_INIT;
    enum token_outcome outcome = token_call(cfg, "refresh token", &form, tid, &fresh, &terr);
    buf_wipe(&form);
    if (outcome != TOKEN_OK && err != NULL)
        *err = terr;

    switch (outcome) {
    case TOKEN_OK: {
        /* 4. the rotated refresh token, stored until it is */
        /* Xero always rotates; if an answer ever lacks a refresh token, the current one stays valid */
        const char *next_refresh = fresh.refresh_token != NULL ? fresh.refresh_token : refresh;
        char expires[24];
        snprintf(expires, sizeof(expires), "%ld", fresh.expires_in > 0 ? fresh.expires_in : 1);
        sealed_refresh = seal_token(key, row.organisation_id, "refresh_token", next_refresh);
        sealed_access = seal_token(key, row.organisation_id, "access_token", fresh.access_token);
        if (sealed_refresh == NULL || sealed_access == NULL) {
            fail(err, "cannot encrypt the Xero token set");
            gw_log(GW_LOG_ERROR,
                   "xero token set %lld: refreshed but could not be encrypted; the old refresh token "
                   "stays usable during Xero's grace period",
                   tid);
            goto Exit;
        }
        store_refresh_t st = {id, sealed_refresh, sealed_access, expires, row.refresh_hex, owner, STORE_STORED};
        if (store_refresh(s, tid, &st, err) != 0)
            goto Exit;   /* logged; the lease is given back below, or expires */
        holding = false; /* cleared with the tokens, or given back */
        if (st.outcome == STORE_SUPERSEDED)
            gw_log(GW_LOG_WARN,
                   "xero token set %lld: refreshed elsewhere meanwhile (an expired lease was taken over); the newer "
                   "stored refresh token is kept",
                   tid);
        *token_out = fresh.access_token; /* valid either way: Xero keeps earlier access tokens until they expire */
        fresh.access_token = NULL;
        ret = 0;
        break;
    }
    case TOKEN_INVALID_GRANT: {
        char corr[CORR_MAX];
        gw_err_t aerr = GW_ERR_INIT;
        new_correlation("xero-refresh", corr);
        mark_reauth_t mr = {id, terr.detail, row.refresh_hex, owner, corr, row.organisation_id, false};
        if (gw_dbs_tx(s, mark_reauth_tx, &mr, &aerr) != 0) {
            db_fail(s, "cannot mark the Xero token set needs_reauth", err);
            goto Exit;
        }
        holding = false;
        if (!mr.marked) {
            fail(err, "Xero token set %lld was refreshed elsewhere meanwhile; try again", tid);
            goto Exit;
        }
        if (gw_log_enabled(GW_LOG_WARN)) {
            gw_logline_t line;
            gw_log_begin(&line, GW_LOG_WARN, "xero token set needs reauthorisation");
            gw_log_str(&line, "provider", "xero", 4);
            gw_log_int(&line, "token_id", tid);
            gw_log_int(&line, "organisation_id", (long long)row.organisation_id);
            gw_log_str(&line, "correlation_id", corr, strlen(corr));
            gw_log_end(&line);
        }
        gw_alert_reauth("xero", row.organisation_id, (int64_t)tid, terr.detail, corr);
        ret = GW_XERO_NEEDS_REAUTH;
        break;
    }
    default:
        break; /* transient or failed: the stored refresh token is kept, the lease given back */
    }

Exit:
    if (holding)
        release_lease(s, tid, id, owner);
    explicit_bzero(key, sizeof(key));
    free_secret(refresh);
    free(sealed_refresh);
    free(sealed_access);
    token_set_wipe(&fresh);
    token_row_free(&row0);
    token_row_free(&row);
    return ret;
}

int gw_xero_access_token(gw_dbs_t *s, const gw_config_t *cfg, int64_t token_id, bool force_refresh, char **token_out,
                         char *err, size_t errlen)
{
    gw_err_t e = GW_ERR_INIT;
    int ret = access_token(s, cfg, token_id, force_refresh, token_out, &e);
    if (ret != 0)
        snprintf(err, errlen, "%s", e.detail);
    return ret;
}

/* ---- tenants: discovery and storage ---- */

void gw_xero_tenants_free(gw_xero_tenants_t *t)
{
    for (size_t i = 0; i != t->n; ++i) {
        free(t->list[i].tenant_id);
        free(t->list[i].name);
        free(t->list[i].connection_id);
    }
    free(t->list);
    free(t->auth_event_id);
    *t = (gw_xero_tenants_t){0};
}

static bool is_uuid(const char *s)
{
    if (s == NULL || strlen(s) != 36)
        return false;
    for (int i = 0; i != 36; ++i) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* GET {api}/connections with access_token; keeps the ORGANISATION tenants. Returns 0, or -1 with the
 * HTTP status (0 if none arrived) in *status when status is not NULL. */
static int discover_tenants(const gw_config_t *cfg, const char *access_token, gw_xero_tenants_t *out, long *status,
                            gw_err_t *err)
{
    *out = (gw_xero_tenants_t){0};
    char *url = join_url(cfg->xero_api_base, DEFAULT_API_BASE, "/connections");
    buf_t auth = {0};
    buf_adds(&auth, "Authorization: Bearer ");
    buf_adds(&auth, access_token);
    const char *headers[] = {auth.base, "Accept: application/json", NULL};
    gw_http_request_t req = {.method = "GET", .url = url, .headers = headers};
    gw_http_response_t res = {0};
    (void)gw_http_do(&req, &res);
    buf_wipe(&auth);
    free(url);
    int ret = -1;
    json_t *doc = NULL;
    if (status != NULL)
        *status = res.status;
    if (res.status != 200) {
        log_call(GW_LOG_WARN, "xero connections call failed", "connections", 0, &res, NULL);
        if (res.status == 0)
            fail(err, "GET /connections failed: %s", res.error != NULL ? res.error : "unknown error");
        else
            fail(err, "GET /connections answered %ld", res.status);
        goto Exit;
    }
    doc = json_loadb(res.body != NULL ? res.body : "", res.body_len, 0, NULL);
    if (!json_is_array(doc)) {
        fail(err, "GET /connections did not answer a JSON array");
        goto Exit;
    }
    out->list = gw_xmalloc(sizeof(gw_xero_tenant_t) * (json_array_size(doc) + 1));
    size_t i;
    json_t *c;
    json_array_foreach(doc, i, c)
    {
        const char *type = json_string_value(json_object_get(c, "tenantType"));
        const char *tid = json_string_value(json_object_get(c, "tenantId"));
        const char *name = json_string_value(json_object_get(c, "tenantName"));
        const char *conn = json_string_value(json_object_get(c, "id"));
        const char *ev = json_string_value(json_object_get(c, "authEventId"));
        if (type == NULL || strcmp(type, "ORGANISATION") != 0)
            continue;
        if (!is_uuid(tid)) {
            fail(err, "GET /connections listed an organisation without a valid tenantId");
            goto Exit;
        }
        out->list[out->n++] =
            (gw_xero_tenant_t){gw_xstrdup(tid), gw_xstrdup(name != NULL ? name : ""), gw_xstrdup(conn)};
        if (out->auth_event_id == NULL && ev != NULL)
            out->auth_event_id = gw_xstrdup(ev);
    }
    ret = 0;
Exit:
    json_decref(doc);
    gw_http_response_free(&res);
    if (ret != 0)
        gw_xero_tenants_free(out);
    return ret;
}

/* The tenants of an organisation as a JSON array (for the audit's before and after). */
static char *tenants_json(gw_dbs_t *s, const char *org)
{
    static const char sql[] =
        "SELECT coalesce(jsonb_agg(jsonb_build_object('tenant_id', tenant_id, 'tenant_name', tenant_name, "
        "'token_id', token_id) ORDER BY tenant_id), '[]'::jsonb)::text FROM xero_tenants WHERE organisation_id = $1";
    const char *p[] = {org};
    gw_dbs_result_t *r = gw_dbs_query(s, sql, 1, p);
    if (r == NULL)
        return NULL;
    char *out = gw_xstrdup(gw_dbs_nrows(r) == 1 && gw_dbs_value(r, 0, 0) != NULL ? gw_dbs_value(r, 0, 0) : "[]");
    gw_dbs_result_free(r);
    return out;
}

typedef struct st_store_tenants_t {
    int64_t organisation_id;
    const char *id, *actor, *corr;
    const gw_xero_tenants_t *tenants;
    size_t moved;        /* out: tenants stored for this token set (the others are served by a newer one) */
    int64_t replaced_by; /* out: when this token set ended up retired, the newest token set of the organisation */
} store_tenants_t;

/* Retires, with their audit, the token sets of organisation org that serve no tenant while a newer one does (the
 * newest serving one replaces them): they are never used again and their needs_reauth, if any, no longer counts. */
static int retire_replaced(gw_dbs_t *s, int64_t organisation_id, const char *org, const char *actor, const char *corr)
{
    static const char sql_retire[] =
        "WITH newest AS (SELECT max(token_id) AS id FROM xero_tenants WHERE organisation_id = $1), "
        "stale AS (SELECT t.id, t.status FROM xero_tokens t, newest WHERE t.organisation_id = $1 AND t.id < newest.id "
        "AND t.status <> 'retired' AND NOT EXISTS (SELECT 1 FROM xero_tenants x WHERE x.organisation_id = $1 AND "
        "x.token_id = t.id)) "
        "UPDATE xero_tokens t SET status = 'retired', retired_at = now(), replaced_by = newest.id, access_token = "
        "NULL, access_expires_at = NULL, updated_at = now() FROM stale, newest WHERE t.id = stale.id "
        "RETURNING t.id, stale.status, newest.id";
    const char *p[] = {org};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_retire, 1, p);
    if (r == NULL)
        return -1;
    int ret = 0;
    for (size_t i = 0; i != gw_dbs_nrows(r) && ret == 0; ++i) {
        json_t *before = json_pack("{s:s}", "status", gw_dbs_value(r, i, 1));
        json_t *after = json_pack("{s:s, s:I}", "status", "retired", "replaced_by",
                                  (json_int_t)strtoll(gw_dbs_value(r, i, 2), NULL, 10));
        char *b = json_dumps(before, JSON_COMPACT | JSON_SORT_KEYS),
             *a = json_dumps(after, JSON_COMPACT | JSON_SORT_KEYS);
        gw_err_t aerr = GW_ERR_INIT;
        if (gw_audit_write(s, organisation_id, actor, "xero.token_set.retire", "xero_tokens", gw_dbs_value(r, i, 0), b,
                           a, corr, &aerr) != 0)
            ret = -1;
        free(b);
        free(a);
        json_decref(before);
        json_decref(after);
    }
    gw_dbs_result_free(r);
    return ret;
}

/* The body of store_tenants' transaction (gw_dbs_tx may run it again after a deadlock). */
static int store_tenants_tx(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    /* the token sets of the organisation, locked: connections of one organisation are stored one at a time */
    static const char sql_lock[] =
        "SELECT id, status FROM xero_tokens WHERE organisation_id = $1 ORDER BY id FOR UPDATE";
    static const char sql_event[] = "UPDATE xero_tokens SET auth_event_id = $2, updated_at = now() WHERE id = $1";
    /* a tenant moves only to a newer token set (or stays on its own): never back to an older one */
    static const char sql_tenant[] =
        "INSERT INTO xero_tenants (organisation_id, tenant_id, token_id, tenant_name, tenant_type, connection_id) "
        "VALUES ($1, $2::uuid, $3, $4, 'ORGANISATION', $5) ON CONFLICT (organisation_id, tenant_id) DO UPDATE SET "
        "token_id = EXCLUDED.token_id, tenant_name = EXCLUDED.tenant_name, tenant_type = EXCLUDED.tenant_type, "
        "connection_id = EXCLUDED.connection_id, updated_at = now() WHERE xero_tenants.token_id <= EXCLUDED.token_id";
    static const char sql_self[] = "SELECT status, replaced_by FROM xero_tokens WHERE id = $1";
    store_tenants_t *a = arg;
    char org[24], *before = NULL, *after = NULL;
    gw_err_t aerr = GW_ERR_INIT;
    gw_dbs_result_t *r = NULL;
    int ret = -1;
    snprintf(org, sizeof(org), "%lld", (long long)a->organisation_id);
    a->moved = 0;
    a->replaced_by = 0;
    const char *po[] = {org};
    if ((r = gw_dbs_query(s, sql_lock, 1, po)) == NULL)
        goto Exit;
    gw_dbs_result_free(r);
    r = NULL;
    if ((before = tenants_json(s, org)) == NULL)
        goto Exit;
    if (a->tenants->auth_event_id != NULL) {
        const char *pe[] = {a->id, a->tenants->auth_event_id};
        if (gw_dbs_exec(s, sql_event, 2, pe) < 0)
            goto Exit;
    }
    for (size_t i = 0; i != a->tenants->n; ++i) {
        const gw_xero_tenant_t *t = &a->tenants->list[i];
        const char *pt[] = {org, t->tenant_id, a->id, t->name, t->connection_id};
        long long n = gw_dbs_exec(s, sql_tenant, 5, pt);
        if (n < 0)
            goto Exit;
        a->moved += (size_t)n;
    }
    if (retire_replaced(s, a->organisation_id, org, a->actor, a->corr) != 0)
        goto Exit;
    const char *ps[] = {a->id};
    if ((r = gw_dbs_query(s, sql_self, 1, ps)) == NULL)
        goto Exit;
    if (gw_dbs_nrows(r) == 1 && strcmp(gw_dbs_value(r, 0, 0), "retired") == 0)
        a->replaced_by = gw_dbs_value(r, 0, 1) != NULL ? strtoll(gw_dbs_value(r, 0, 1), NULL, 10) : -1;
    if ((after = tenants_json(s, org)) == NULL)
        goto Exit;
    if (gw_audit_write(s, a->organisation_id, a->actor, "xero.connect", "xero_tokens", a->id, before, after, a->corr,
                       &aerr) != 0)
        goto Exit;
    ret = 0;
Exit:
    if (ret != 0)
        db_fail(s, "cannot store the Xero tenants", err);
    gw_dbs_result_free(r);
    free(before);
    free(after);
    return ret;
}

/*
 * Stores the tenants of token set id for organisation_id (each one that no newer token set serves), retires the
 * token sets this replaces, and audits the change, in one transaction. Returns 0, or -1 with err set; when the
 * token set itself ended up retired (a newer connection of the organisation serves all its tenants: an older
 * authorisation completed late), -1 with a detail naming the newer one, and nothing moved.
 */
static int store_tenants(gw_dbs_t *s, int64_t organisation_id, const char *id, const gw_xero_tenants_t *tenants,
                         const char *actor, const char *corr, gw_err_t *err)
{
    store_tenants_t arg = {organisation_id, id, actor, corr, tenants, 0, 0};
    if (gw_dbs_tx(s, store_tenants_tx, &arg, err) != 0)
        return -1;
    if (arg.replaced_by != 0)
        return fail(err,
                    "token set %s was replaced by a newer connection (token set %lld) before its organisations were "
                    "stored; it is retired and the organisations stay with the newer one",
                    id, (long long)arg.replaced_by);
    return 0;
}

/* ---- connecting: store a new token set, discover its tenants ---- */

void gw_xero_connection_free(gw_xero_connection_t *c)
{
    gw_xero_tenants_free(&c->tenants);
    *c = (gw_xero_connection_t){0};
}

void gw_xero_connection_summary(const gw_xero_connection_t *c, char *out, size_t len)
{
    if (len == 0)
        return;
    int n = snprintf(out, len, "Connected Xero (token set %lld):", (long long)c->token_id);
    for (size_t i = 0; i != c->tenants.n && n >= 0 && (size_t)n < len; ++i)
        n += snprintf(out + n, len - (size_t)n, "%s %s", i == 0 ? "" : ",", c->tenants.list[i].name);
}

typedef struct st_store_token_set_t {
    int64_t organisation_id;
    const char *org, *sealed_refresh, *sealed_access, *expires, *grant, *actor, *corr;
    char *id; /* out: the new token set's id (24 bytes) */
} store_token_set_t;

/* The body of the transaction that stores a new token set with its audit (may run again after a deadlock). */
static int store_token_set_tx(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    static const char sql_insert[] =
        "INSERT INTO xero_tokens (organisation_id, refresh_token, access_token, access_expires_at, status, "
        "refreshed_at) VALUES ($1, $2::bytea, $3::bytea, clock_timestamp() + make_interval(secs => $4::int), "
        "'active', clock_timestamp()) RETURNING id";
    store_token_set_t *a = arg;
    const char *pi[] = {a->org, a->sealed_refresh, a->sealed_access, a->expires};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_insert, 4, pi);
    if (r == NULL)
        return db_fail(s, "cannot store the Xero token set", err);
    snprintf(a->id, 24, "%s", gw_dbs_value(r, 0, 0));
    gw_dbs_result_free(r);
    json_t *after = json_pack("{s:s, s:s}", "grant", a->grant, "status", "active");
    char *as = json_dumps(after, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = as == NULL ? -1
                        : gw_audit_write(s, a->organisation_id, a->actor, "xero.token_set.create", "xero_tokens", a->id,
                                         NULL, as, a->corr, err);
    free(as);
    json_decref(after);
    return rc != 0 ? db_fail(s, "cannot store the Xero token set", err) : 0;
}

/*
 * Stores fresh (just obtained with grant) as a new token set of organisation_id, then discovers and
 * stores its tenants. Returns 0 with the connection in *out, or -1 with err set.
 */
static int connect_token_set(gw_dbs_t *s, const gw_config_t *cfg, const unsigned char *key, int64_t organisation_id,
                             const token_set_t *fresh, const char *grant, const char *actor, const char *corr,
                             gw_xero_connection_t *out, gw_err_t *err)
{
    char org[24], id[24] = "", expires[24];
    char *sealed_refresh = NULL, *sealed_access = NULL;
    gw_xero_tenants_t tenants = {0};
    gw_err_t e2 = GW_ERR_INIT;
    int ret = -1;

    snprintf(org, sizeof(org), "%lld", (long long)organisation_id);
    snprintf(expires, sizeof(expires), "%ld", fresh->expires_in > 0 ? fresh->expires_in : 1);
    if (fresh->refresh_token == NULL) {
        fail(err, "Xero answered without a refresh token: is offline_access in SETTLED_XERO_SCOPES?");
        goto Exit;
    }
    sealed_refresh = seal_token(key, organisation_id, "refresh_token", fresh->refresh_token);
    sealed_access = seal_token(key, organisation_id, "access_token", fresh->access_token);
    if (sealed_refresh == NULL || sealed_access == NULL) {
        fail(err, "cannot encrypt the Xero token set");
        goto Exit;
    }

    /* 1. the rotated refresh token is durable before anything else happens */
    store_token_set_t st = {organisation_id, org, sealed_refresh, sealed_access, expires, grant, actor, corr, id};
    if (gw_dbs_tx(s, store_token_set_tx, &st, &e2) != 0) {
        fail(err, "%.150s (Xero accepts the same refresh token again for a short grace period)", e2.detail);
        goto Exit;
    }

    /* 2. the organisations this token set reaches */
    if (discover_tenants(cfg, fresh->access_token, &tenants, NULL, &e2) != 0) {
        fail(err, "Xero token set %s is stored, but listing its organisations failed: %s", id, e2.detail);
        goto Exit;
    }
    if (tenants.n == 0) {
        fail(err,
             "Xero token set %s is stored, but it gives access to no organisation: connect again and choose an "
             "organisation in Xero",
             id);
        goto Exit;
    }

    /* 3. tenants, in one transaction with their audit */
    if (store_tenants(s, organisation_id, id, &tenants, actor, corr, &e2) != 0) {
        fail(err, "Xero token set %s is stored, but %s", id, e2.detail);
        goto Exit;
    }

    if (gw_log_enabled(GW_LOG_INFO)) {
        gw_logline_t line;
        gw_log_begin(&line, GW_LOG_INFO, "xero connected");
        gw_log_str(&line, "provider", "xero", 4);
        gw_log_int(&line, "organisation_id", (long long)organisation_id);
        gw_log_int(&line, "token_id", strtoll(id, NULL, 10));
        gw_log_int(&line, "tenants", (long long)tenants.n);
        gw_log_str(&line, "correlation_id", corr, strlen(corr));
        gw_log_end(&line);
    }
    *out = (gw_xero_connection_t){.organisation_id = organisation_id, .token_id = strtoll(id, NULL, 10)};
    out->tenants = tenants;
    tenants = (gw_xero_tenants_t){0};
    ret = 0;
Exit:
    free(sealed_refresh);
    free(sealed_access);
    gw_xero_tenants_free(&tenants);
    return ret;
}

int gw_xero_connect_refresh_token(gw_dbs_t *s, const gw_config_t *cfg, int64_t organisation_id,
                                  const char *refresh_token, gw_xero_connection_t *out, gw_err_t *err)
{
    unsigned char key[GW_CRYPTO_KEY_LEN];
    token_set_t fresh = {0};
    int ret = -1;
    *out = (gw_xero_connection_t){0};
    if (!is_set(refresh_token))
        return fail(err, "the refresh token is empty");
    if (load_key(cfg, true, key, err) != 0)
        return -1;
    buf_t form = {0};
    buf_adds(&form, "grant_type=refresh_token&refresh_token=");
    buf_add_encoded(&form, refresh_token);
    enum token_outcome outcome = token_call(cfg, "refresh token", &form, 0, &fresh, err);
    buf_wipe(&form);
    if (outcome == TOKEN_OK) {
        char corr[CORR_MAX];
        new_correlation("xero-connect", corr);
        ret = connect_token_set(s, cfg, key, organisation_id, &fresh, "refresh_token", "system:cli", corr, out, err);
    }
    token_set_wipe(&fresh);
    explicit_bzero(key, sizeof(key));
    return ret;
}

/* The settings an authorize URL needs (before the key). */
static int url_settings(const gw_config_t *cfg, gw_err_t *err)
{
    if (need(cfg->xero_client_id, "SETTLED_XERO_CLIENT_ID", "connect Xero (the client id of the Xero app)", err) != 0 ||
        need(cfg->xero_redirect_uri, "SETTLED_XERO_REDIRECT_URI",
             "connect Xero (where Xero sends the administrator back: https://<host>/v1/xero/callback)", err) != 0 ||
        need(cfg->xero_scopes, "SETTLED_XERO_SCOPES", "connect Xero", err) != 0)
        return -1;
    return 0;
}

char *gw_xero_authorize_url_with(const gw_config_t *cfg, const char *state, gw_err_t *err)
{
    if (url_settings(cfg, err) != 0)
        return NULL;
    char *base = join_url(cfg->xero_login_base, DEFAULT_LOGIN_BASE, "/identity/connect/authorize");
    buf_t b = {0};
    buf_adds(&b, base);
    free(base);
    buf_adds(&b, "?response_type=code&client_id=");
    buf_add_encoded(&b, cfg->xero_client_id);
    buf_adds(&b, "&redirect_uri=");
    buf_add_encoded(&b, cfg->xero_redirect_uri);
    buf_adds(&b, "&scope=");
    buf_add_encoded(&b, cfg->xero_scopes);
    buf_adds(&b, "&state=");
    buf_add_encoded(&b, state);
    return b.base;
}

char *gw_xero_authorize_url(gw_dbs_t *s, const gw_config_t *cfg, int64_t organisation_id, int64_t user_id,
                            gw_err_t *err)
{
    static const char sql_prune[] = "DELETE FROM xero_oauth_states WHERE expires_at < now() - interval '1 day'";
    static const char sql_record[] = "INSERT INTO xero_oauth_states (nonce, organisation_id, expires_at, user_id) "
                                     "VALUES ($1, $2, to_timestamp($3::bigint), $4::bigint)";
    unsigned char key[GW_CRYPTO_KEY_LEN];
    char state[GW_XERO_STATE_MAX], org[24], expires[24], user[24];
    gw_xero_state_t made;
    if (url_settings(cfg, err) != 0 || load_key(cfg, false, key, err) != 0)
        return NULL;
    int rc = gw_xero_state_make(key, organisation_id, (int64_t)time(NULL), state, sizeof(state), &made);
    explicit_bzero(key, sizeof(key));
    if (rc != 0) {
        fail(err, "cannot sign the authorization state");
        return NULL;
    }
    /* the nonce is recorded before anyone can see the URL, so its callback always finds it */
    snprintf(org, sizeof(org), "%lld", (long long)organisation_id);
    snprintf(expires, sizeof(expires), "%lld", (long long)made.expires_at);
    snprintf(user, sizeof(user), "%lld", (long long)user_id);
    const char *p[] = {made.nonce, org, expires, user_id > 0 ? user : NULL};
    if (gw_dbs_exec(s, sql_prune, 0, NULL) < 0 || gw_dbs_exec(s, sql_record, 4, p) != 1) {
        db_fail(s, "cannot record the authorization request", err);
        return NULL;
    }
    return gw_xero_authorize_url_with(cfg, state, err);
}

/*
 * Consumes the nonce of st once, for the callback correlation id corr: one UPDATE, so of two callbacks with the
 * same state exactly one gets the row. Writes who connects into actor (actorlen bytes): "user:<id>" of the admin
 * who asked for the URL through the API, else "system:oauth-callback". Returns 0, or -1 with err set:
 * oauth_state_used for a state already consumed, oauth_callback_invalid for one never recorded (or expired),
 * gw_dbs_err's code when the database fails (its message is logged here, never put in err).
 */
static int consume_state(gw_dbs_t *s, const gw_xero_state_t *st, const char *corr, char *actor, size_t actorlen,
                         gw_err_t *err)
{
    static const char sql_consume[] =
        "UPDATE xero_oauth_states SET used_at = now(), used_by = $3 WHERE nonce = $1 AND organisation_id = $2 "
        "AND used_at IS NULL AND expires_at > now() RETURNING user_id";
    static const char sql_why[] = "SELECT used_at IS NOT NULL FROM xero_oauth_states WHERE nonce = $1";
    char org[24];
    snprintf(org, sizeof(org), "%lld", (long long)st->organisation_id);
    const char *p[] = {st->nonce, org, corr};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_consume, 3, p);
    long long n = r != NULL ? (long long)gw_dbs_nrows(r) : -1;
    if (n == 1) {
        const char *user = gw_dbs_value(r, 0, 0);
        if (user != NULL)
            snprintf(actor, actorlen, "user:%s", user);
        else
            snprintf(actor, actorlen, "system:oauth-callback");
        gw_dbs_result_free(r);
        return 0;
    }
    gw_dbs_result_free(r);
    r = NULL;
    if (n < 0 || (r = gw_dbs_query(s, sql_why, 1, p)) == NULL) {
        char why[256];
        gw_log(GW_LOG_WARN, "xero authorization %s: cannot consume its state: %s", corr,
               gw_log_one_line(why, sizeof(why), gw_dbs_error(s)));
        return gw_dbs_err(s, err);
    }
    bool used = gw_dbs_nrows(r) == 1 && gw_dbs_value(r, 0, 0) != NULL && strcmp(gw_dbs_value(r, 0, 0), "t") == 0;
    gw_dbs_result_free(r);
    if (used)
        return gw_err_set(err, gw_err_oauth_state_used, 400,
                          "This authorization request was already used: start connecting Xero again "
                          "(`settled connect xero --authorize`).");
    return gw_err_set(err, gw_err_oauth_callback_invalid, 400,
                      "The authorization request is unknown or has expired: start connecting Xero again.");
}

int gw_xero_complete_authorization(gw_dbs_t *s, const gw_config_t *cfg, const char *code, const char *state,
                                   const char *correlation_id, gw_xero_connection_t *out, gw_err_t *err)
{
    unsigned char key[GW_CRYPTO_KEY_LEN];
    token_set_t fresh = {0};
    gw_xero_state_t st;
    char corr[CORR_MAX];
    int ret = -1;
    *out = (gw_xero_connection_t){0};
    if (is_set(correlation_id))
        snprintf(corr, sizeof(corr), "%s", correlation_id);
    else
        new_correlation("xero-connect", corr);
    if (load_key(cfg, true, key, err) != 0 ||
        need(cfg->xero_redirect_uri, "SETTLED_XERO_REDIRECT_URI", "connect Xero", err) != 0)
        goto Exit;
    /* 1. signature and expiry: no database */
    if (gw_xero_state_verify(cfg, state, (int64_t)time(NULL), &st, err) != 0)
        goto Exit;
    if (!is_set(code)) {
        gw_err_set(err, gw_err_oauth_callback_invalid, 400, "Xero sent no authorization code.");
        goto Exit;
    }
    /* 2. single use: the nonce is consumed before the code goes anywhere */
    char actor[48];
    if (consume_state(s, &st, corr, actor, sizeof(actor), err) != 0)
        goto Exit;
    /* 3. the code exchange, then the token set and its tenants */
    buf_t form = {0};
    buf_adds(&form, "grant_type=authorization_code&code=");
    buf_add_encoded(&form, code);
    buf_adds(&form, "&redirect_uri=");
    buf_add_encoded(&form, cfg->xero_redirect_uri);
    enum token_outcome outcome = token_call(cfg, "authorization code", &form, 0, &fresh, err);
    buf_wipe(&form);
    if (outcome == TOKEN_OK)
        ret = connect_token_set(s, cfg, key, st.organisation_id, &fresh, "authorization_code", actor, corr, out, err);
Exit:
    token_set_wipe(&fresh);
    explicit_bzero(key, sizeof(key));
    return ret;
}

/* ---- checking token sets ---- */

int gw_xero_token_sets(gw_dbs_t *s, int64_t organisation_id, gw_xero_token_set_t **out, size_t *n, gw_err_t *err)
{
    static const char sql[] = "SELECT t.id, (SELECT count(*) FROM xero_tenants n WHERE n.token_id = t.id) "
                              "FROM xero_tokens t WHERE t.organisation_id = $1 AND (t.status = 'active' OR EXISTS "
                              "(SELECT 1 FROM xero_tenants n WHERE n.token_id = t.id)) ORDER BY t.id";
    char org[24];
    snprintf(org, sizeof(org), "%lld", (long long)organisation_id);
    const char *p[] = {org};
    *out = NULL;
    *n = 0;
    gw_dbs_result_t *r = gw_dbs_query(s, sql, 1, p);
    if (r == NULL)
        return db_fail(s, "cannot list the Xero token sets", err);
    size_t rows = gw_dbs_nrows(r);
    gw_xero_token_set_t *sets = gw_xcalloc(rows + 1, sizeof(*sets));
    for (size_t i = 0; i != rows; ++i) {
        sets[i].id = strtoll(gw_dbs_value(r, i, 0), NULL, 10);
        sets[i].stored_tenants = (size_t)strtoull(gw_dbs_value(r, i, 1), NULL, 10);
    }
    gw_dbs_result_free(r);
    *out = sets;
    *n = rows;
    return 0;
}

/* --check that only reads: the stored access token, if it still lives, lists the tenants; nothing is refreshed,
 * stored or marked (no write at all, in the database or at Xero). */
static int check_read_only(gw_dbs_t *s, const gw_config_t *cfg, const gw_xero_token_set_t *set, gw_xero_tenants_t *out,
                           gw_err_t *err)
{
    unsigned char key[GW_CRYPTO_KEY_LEN];
    token_row_t row = {0};
    char id[24], *token = NULL;
    long long tid = (long long)set->id;
    long status = 0;
    gw_err_t e2 = GW_ERR_INIT;
    int ret = -1, rc;
    snprintf(id, sizeof(id), "%lld", tid);
    if (load_key(cfg, false, key, err) != 0)
        return -1;
    if ((rc = read_token_row(s, id, &row)) != 0) {
        if (rc > 0)
            fail(err, "there is no Xero token set %lld", tid);
        else
            db_fail(s, "cannot read the Xero token set", err);
        goto Exit;
    }
    if (row.retired) {
        ret = retired_error(tid, err);
        goto Exit;
    }
    if (row.needs_reauth) {
        ret = needs_reauth_error(tid, &row, err);
        goto Exit;
    }
    if (!row.access_valid) {
        fail(err,
             "xero token set %lld: its access token has expired (it is refreshed when next used); a check that only "
             "reads cannot prove the refresh token: `settled connect xero --check --refresh` does, and stores the "
             "rotated token",
             tid);
        ret = GW_XERO_UNVERIFIED;
        goto Exit;
    }
    if (use_stored(key, tid, &row, &token, err) != 0)
        goto Exit;
    if (discover_tenants(cfg, token, out, &status, &e2) != 0) {
        if (status == 401)
            fail(err,
                 "xero token set %lld: Xero refused the stored access token (401); `settled connect xero --check "
                 "--refresh` gets a new one",
                 tid);
        else
            fail(err, "xero token set %lld: %s", tid, e2.detail);
        goto Exit;
    }
    ret = 0;
Exit:
    explicit_bzero(key, sizeof(key));
    free_secret(token);
    token_row_free(&row);
    return ret;
}

int gw_xero_check_token_set(gw_dbs_t *s, const gw_config_t *cfg, int64_t organisation_id,
                            const gw_xero_token_set_t *set, int mode, gw_xero_tenants_t *out, gw_err_t *err)
{
    long long tid = (long long)set->id;
    char *token = NULL;
    long status = 0;
    gw_err_t e2 = GW_ERR_INIT;
    *out = (gw_xero_tenants_t){0};
    if (mode == GW_XERO_CHECK_READ)
        return check_read_only(s, cfg, set, out, err);
    bool force_refresh = mode == GW_XERO_CHECK_FORCE;
    int rc = access_token(s, cfg, set->id, force_refresh, &token, err);
    if (rc != 0)
        return rc;
    rc = discover_tenants(cfg, token, out, &status, &e2);
    free_secret(token);
    if (rc != 0 && status == 401) {
        /* Xero no longer takes the stored access token: refresh once and try again */
        token = NULL;
        if ((rc = access_token(s, cfg, set->id, true, &token, err)) != 0)
            return rc;
        rc = discover_tenants(cfg, token, out, NULL, &e2);
        free_secret(token);
    }
    if (rc != 0)
        return fail(err, "xero token set %lld: %s", tid, e2.detail);
    if (set->stored_tenants == 0 && out->n != 0) {
        /* a connect whose tenant listing failed: store them now */
        char id[24], corr[CORR_MAX];
        snprintf(id, sizeof(id), "%lld", tid);
        new_correlation("xero-connect", corr);
        if (store_tenants(s, organisation_id, id, out, "system:cli", corr, &e2) != 0) {
            gw_xero_tenants_free(out);
            return fail(err, "xero token set %lld: %s", tid, e2.detail);
        }
    }
    return 0;
}

int gw_xero_find_organisation(gw_dbs_t *s, const char *slug, int64_t *id, gw_err_t *err)
{
    static const char sql[] = "SELECT id FROM organisations WHERE slug = $1";
    const char *p[] = {slug};
    *id = 0;
    gw_dbs_result_t *r = gw_dbs_query(s, sql, 1, p);
    if (r == NULL)
        return db_fail(s, "cannot look up the organisation", err);
    if (gw_dbs_nrows(r) == 1)
        *id = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
    gw_dbs_result_free(r);
    return *id != 0 ? 0 : 1;
}

/* ---- retired token sets: removed after their grace period ---- */

typedef struct st_prune_t {
    const char *hours, *corr;
    size_t removed; /* out */
} prune_t;

static int prune_tx(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    /* at most 100 at a time; a retired token set serves no tenant (never deleted while one points at it) */
    static const char sql_prune[] =
        "DELETE FROM xero_tokens t WHERE t.id IN (SELECT id FROM xero_tokens WHERE status = 'retired' AND "
        "retired_at < now() - make_interval(hours => $1::int) ORDER BY retired_at LIMIT 100 FOR UPDATE SKIP LOCKED) "
        "AND NOT EXISTS (SELECT 1 FROM xero_tenants x WHERE x.organisation_id = t.organisation_id AND x.token_id = "
        "t.id) RETURNING t.id, t.organisation_id, t.retired_at::text, t.replaced_by";
    prune_t *a = arg;
    const char *p[] = {a->hours};
    a->removed = 0;
    gw_dbs_result_t *r = gw_dbs_query(s, sql_prune, 1, p);
    if (r == NULL)
        return gw_dbs_err(s, err);
    int ret = 0;
    for (size_t i = 0; i != gw_dbs_nrows(r) && ret == 0; ++i) {
        const char *replaced = gw_dbs_value(r, i, 3);
        json_t *before =
            json_pack("{s:s, s:s, s:o}", "status", "retired", "retired_at", gw_dbs_value(r, i, 2), "replaced_by",
                      replaced != NULL ? json_integer(strtoll(replaced, NULL, 10)) : json_null());
        char *b = json_dumps(before, JSON_COMPACT | JSON_SORT_KEYS);
        ret = gw_audit_write(s, strtoll(gw_dbs_value(r, i, 1), NULL, 10), "system:xero", "xero.token_set.delete",
                             "xero_tokens", gw_dbs_value(r, i, 0), b, NULL, a->corr, err);
        free(b);
        json_decref(before);
    }
    a->removed = gw_dbs_nrows(r);
    gw_dbs_result_free(r);
    return ret;
}

int gw_xero_prune_retired(gw_dbs_t *s, int grace_hours, size_t *removed, gw_err_t *err)
{
    char hours[24], corr[CORR_MAX];
    snprintf(hours, sizeof(hours), "%d", grace_hours);
    new_correlation("xero-prune", corr);
    *removed = 0;
    for (;;) {
        prune_t a = {hours, corr, 0};
        if (gw_dbs_tx(s, prune_tx, &a, err) != 0)
            return -1;
        *removed += a.removed;
        if (a.removed != 0 && gw_log_enabled(GW_LOG_INFO)) {
            gw_logline_t line;
            gw_log_begin(&line, GW_LOG_INFO, "retired xero token sets removed");
            gw_log_str(&line, "provider", "xero", 4);
            gw_log_int(&line, "removed", (long long)a.removed);
            gw_log_int(&line, "grace_hours", grace_hours);
            gw_log_str(&line, "correlation_id", corr, strlen(corr));
            gw_log_end(&line);
        }
        if (a.removed < 100)
            return 0;
    }
}

/* ---- the stored tenants ---- */

int gw_xero_stored_tenants(gw_dbs_t *s, const char *only_tenant, gw_xero_stored_tenant_t **out, size_t *n,
                           gw_err_t *err)
{
    static const char sql[] =
        "SELECT t.organisation_id, t.tenant_id::text, t.token_id, coalesce(t.tenant_name, '') FROM xero_tenants t"
        " WHERE $1::uuid IS NULL OR t.tenant_id = $1::uuid ORDER BY t.organisation_id, t.tenant_name";
    const char *p[] = {only_tenant};
    *out = NULL;
    *n = 0;
    gw_dbs_result_t *r = gw_dbs_query(s, sql, 1, p);
    if (r == NULL)
        return gw_err_set(err, gw_err_internal, 500, "%s", gw_dbs_error(s));
    size_t rows = gw_dbs_nrows(r);
    gw_xero_stored_tenant_t *list = gw_xcalloc(rows + 1, sizeof(*list));
    for (size_t i = 0; i != rows; ++i) {
        list[i].organisation_id = strtoll(gw_dbs_value(r, i, 0), NULL, 10);
        list[i].tenant_id = gw_xstrdup(gw_dbs_value(r, i, 1));
        list[i].token_id = strtoll(gw_dbs_value(r, i, 2), NULL, 10);
        list[i].name = gw_xstrdup(gw_dbs_value(r, i, 3));
    }
    gw_dbs_result_free(r);
    *out = list;
    *n = rows;
    return 0;
}

void gw_xero_stored_tenants_free(gw_xero_stored_tenant_t *list, size_t n)
{
    for (size_t i = 0; i != n; ++i) {
        free(list[i].tenant_id);
        free(list[i].name);
    }
    free(list);
}
