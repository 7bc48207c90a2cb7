/* SPDX-License-Identifier: MIT */
/*
 * xero_auth.c: Xero OAuth 2.0. Xero rotates refresh tokens (each refresh retires the one it used), so
 * a token set must be refreshed by one holder at a time and the new refresh token must be durable before
 * anything relies on it; this file owns that rule for every thread and instance, using the token set's
 * row lock in PostgreSQL as the single-flight lock (providers/PROVIDERS.md section 2.3).
 *
 * Residual risk, by design: the refresh call to Xero runs while the row lock is held, and its result is
 * written in the same transaction. If that COMMIT fails after Xero has rotated the token (the database
 * or the connection goes away at that instant), the new refresh token is lost and the stored one is
 * already retired; Xero still accepts the retired token for a grace period (30 minutes), so the next
 * attempt, which reads the stored (old) token again, recovers. Only a database outage longer than the
 * grace period turns this into invalid_grant, which marks the token set 'needs_reauth' (an administrator
 * reconnects); it never loops.
 *
 * No token, code or secret is ever logged or put into an error message; token responses are never
 * logged, only their status and OAuth error code.
 */
#include "xero_oauth.h"
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "http_client.h"
#include "log.h"
#include "orgs.h"

#define DEFAULT_LOGIN_BASE "https://login.xero.com"
#define DEFAULT_IDENTITY_BASE "https://identity.xero.com"
#define DEFAULT_API_BASE "https://api.xero.com"
#define DEFAULT_EXPIRES_IN 1800
#define STATE_VERSION 1
#define STATE_NONCE_LEN 16
#define STATE_PAYLOAD_LEN (1 + 8 + 8 + STATE_NONCE_LEN)
#define STATE_RAW_LEN (STATE_PAYLOAD_LEN + 32)

/* ---- small helpers ---- */

static void *xmalloc(size_t n)
{
    void *p = malloc(n != 0 ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "settled: fatal: out of memory\n");
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
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
    char *p = xmalloc(cap);
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

static void buf_add_encoded(buf_t *b, const char *s)
{
    char *e = gw_xero_percent_encode(s, strlen(s));
    buf_adds(b, e);
    free_secret(e);
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

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Base64 of len bytes into out (room for 4 * ((len + 2) / 3) + 1 bytes); padded unless url. */
static void b64_encode(const unsigned char *in, size_t len, bool url, char *out)
{
    const char *abc = url ? b64_url : b64_std;
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = abc[v >> 18 & 63], out[o++] = abc[v >> 12 & 63], out[o++] = abc[v >> 6 & 63], out[o++] = abc[v & 63];
    }
    if (len - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = abc[v >> 18 & 63], out[o++] = abc[v >> 12 & 63];
        if (!url)
            out[o++] = '=', out[o++] = '=';
    } else if (len - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = abc[v >> 18 & 63], out[o++] = abc[v >> 12 & 63], out[o++] = abc[v >> 6 & 63];
        if (!url)
            out[o++] = '=';
    }
    out[o] = '\0';
}

/* Decodes unpadded base64url text of exactly the length that encodes outlen bytes. Returns 0 or -1. */
static int b64url_decode_exact(const char *in, unsigned char *out, size_t outlen)
{
    size_t inlen = strlen(in), want = outlen / 3 * 4 + (outlen % 3 != 0 ? outlen % 3 + 1 : 0);
    if (inlen != want)
        return -1;
    unsigned long acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i != inlen; ++i) {
        const char *p = strchr(b64_url, in[i]);
        if (in[i] == '\0' || p == NULL)
            return -1;
        acc = (acc << 6 | (unsigned long)(p - b64_url)) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    if (n != outlen || (acc & ((1ul << bits) - 1)) != 0) /* the unused bits of the last character are zero */
        return -1;
    return 0;
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

char *gw_xero_percent_encode(const char *in, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = xmalloc(len * 3 + 1), *o = out;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)in[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~') {
            *o++ = (char)c;
        } else {
            *o++ = '%', *o++ = hex[c >> 4], *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
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
                       size_t outlen)
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
    b64_encode(raw, sizeof(raw), true, out);
    return 0;
}

int gw_xero_state_check(const unsigned char key[GW_CRYPTO_KEY_LEN], const char *state, int64_t now,
                        int64_t *organisation_id)
{
    unsigned char raw[STATE_RAW_LEN], mac[32], mkey[32];
    if (state == NULL || b64url_decode_exact(state, raw, sizeof(raw)) != 0 || state_key(key, mkey) != 0)
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
    *organisation_id = org;
    return 0;
}

/* ---- settings ---- */

static int need(const char *value, const char *name, const char *what, char *err, size_t errlen)
{
    if (is_set(value))
        return 0;
    snprintf(err, errlen, "%s: required to %s", name, what);
    return -1;
}

/* The sealing key, and the client credentials when with_client is set. */
static int load_key(const gw_config_t *cfg, bool with_client, unsigned char key[GW_CRYPTO_KEY_LEN], char *err,
                    size_t errlen)
{
    if (with_client) {
        if (need(cfg->xero_client_id, "SETTLED_XERO_CLIENT_ID", "connect Xero (the client id of the Xero app)", err,
                 errlen) != 0 ||
            need(cfg->xero_client_secret, "SETTLED_XERO_CLIENT_SECRET",
                 "connect Xero (the client secret of the Xero app)", err, errlen) != 0)
            return -1;
    }
    return gw_crypto_key_from_setting(cfg->secret_key, key, err, errlen);
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
    static const char hex[] = "0123456789abcdef";
    char aad[96];
    token_aad(aad, sizeof(aad), column, organisation_id);
    size_t len = strlen(token), slen = len + GW_CRYPTO_SEAL_OVERHEAD;
    unsigned char *sealed = xmalloc(slen);
    if (gw_crypto_seal(key, token, len, aad, strlen(aad), sealed) != 0) {
        free(sealed);
        return NULL;
    }
    char *out = xmalloc(2 + 2 * slen + 1), *o = out;
    *o++ = '\\', *o++ = 'x';
    for (size_t i = 0; i != slen; ++i)
        *o++ = hex[sealed[i] >> 4], *o++ = hex[sealed[i] & 15];
    *o = '\0';
    free(sealed);
    return out;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
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
    unsigned char *sealed = xmalloc(slen);
    for (size_t i = 0; i != slen; ++i) {
        int hi = hexval((unsigned char)hextext[2 * i]), lo = hexval((unsigned char)hextext[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(sealed);
            return NULL;
        }
        sealed[i] = (unsigned char)(hi << 4 | lo);
    }
    char aad[96];
    token_aad(aad, sizeof(aad), column, organisation_id);
    char *out = xmalloc(slen - GW_CRYPTO_SEAL_OVERHEAD + 1);
    size_t outlen = 0;
    int ret = gw_crypto_open(key, sealed, slen, aad, strlen(aad), (unsigned char *)out, &outlen);
    free(sealed);
    if (ret != 0 || memchr(out, '\0', outlen) != NULL) {
        free_secret(out);
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
    char *copy = xstrdup(json_string_value(v));
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
                                     token_set_t *out, char *err, size_t errlen)
{
    *out = (token_set_t){0};
    char *url = join_url(cfg->xero_identity_base, DEFAULT_IDENTITY_BASE, "/connect/token");
    buf_t cred = {0}, auth = {0};
    /* RFC 6749 section 2.3.1: each form-encoded, then base64 (a no-op for Xero's [A-Za-z0-9_-] values) */
    buf_add_encoded(&cred, cfg->xero_client_id);
    buf_adds(&cred, ":");
    buf_add_encoded(&cred, cfg->xero_client_secret);
    buf_adds(&auth, "Authorization: Basic ");
    buf_reserve(&auth, (cred.len + 2) / 3 * 4);
    b64_encode((const unsigned char *)cred.base, cred.len, false, auth.base + auth.len);
    auth.len += strlen(auth.base + auth.len);
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
            snprintf(err, errlen, "the Xero token endpoint answered 200 without an access token");
            outcome = TOKEN_FAILED;
        } else {
            outcome = TOKEN_OK;
        }
    } else if (res.status == 0 || res.status == 429 || res.status >= 500) {
        if (res.status == 0)
            snprintf(err, errlen, "the Xero token endpoint could not be reached: %s",
                     res.error != NULL ? res.error : "unknown error");
        else
            snprintf(err, errlen, "the Xero token endpoint answered %ld (temporary; try again later)", res.status);
        outcome = TOKEN_TRANSIENT;
    } else {
        oauth_error(&res, oerr, sizeof(oerr));
        if (strcmp(oerr, "invalid_grant") == 0) {
            snprintf(err, errlen,
                     "Xero rejected the %s (invalid_grant): it was already used, revoked or has expired; connect "
                     "Xero again",
                     grant);
            outcome = TOKEN_INVALID_GRANT;
        } else if (strcmp(oerr, "invalid_client") == 0 || strcmp(oerr, "unauthorized_client") == 0) {
            snprintf(err, errlen,
                     "Xero rejected the client credentials (%s): check SETTLED_XERO_CLIENT_ID and "
                     "SETTLED_XERO_CLIENT_SECRET",
                     oerr);
            outcome = TOKEN_FAILED;
        } else {
            snprintf(err, errlen, "the Xero token endpoint answered %ld%s%s%s", res.status, oerr[0] ? " (" : "", oerr,
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

static void rollback(gw_dbs_t *s)
{
    if (gw_dbs_exec(s, "ROLLBACK", 0, NULL) < 0) {
        /* nothing to do: a broken connection has no transaction left */
    }
}

static int db_fail(gw_dbs_t *s, const char *what, char *err, size_t errlen)
{
    const char *e = gw_dbs_error(s);
    if (strstr(e, "does not exist") != NULL && strstr(e, "relation") != NULL)
        snprintf(err, errlen, "%s: %s (run `settled migrate`)", what, e);
    else
        snprintf(err, errlen, "%s: %s", what, e);
    return -1;
}

static void new_correlation(const char *prefix, char out[48])
{
    unsigned char r[8];
    gw_crypto_random(r, sizeof(r));
    int n = snprintf(out, 48, "%s-", prefix);
    for (size_t i = 0; i != sizeof(r) && n + 2 < 48; ++i)
        n += snprintf(out + n, 48 - (size_t)n, "%02x", r[i]);
}

static const char sql_audit[] = "SELECT audit_write($1::bigint, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8)";

static int audit(gw_dbs_t *s, const char *org, const char *actor, const char *action, const char *entity_type,
                 const char *entity_id, const char *before, const char *after, const char *correlation)
{
    const char *p[] = {org, actor, action, entity_type, entity_id, before, after, correlation};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_audit, 8, p);
    if (r == NULL)
        return -1;
    gw_dbs_result_free(r);
    return 0;
}

/* One row of xero_tokens, as read for gw_xero_access_token. */
typedef struct st_token_row_t {
    int64_t organisation_id;
    bool needs_reauth;
    bool access_valid; /* an access token that lives at least GW_XERO_TOKEN_MIN_TTL more seconds */
    char *access_hex;
    char *refresh_hex; /* only when read for update */
    char *refreshed_at;
    char *last_error;
} token_row_t;

static void token_row_free(token_row_t *r)
{
    free(r->access_hex);
    free(r->refresh_hex);
    free(r->refreshed_at);
    free(r->last_error);
    *r = (token_row_t){0};
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? xstrdup(s) : NULL;
}

/* Reads token set id (for update: locked, with its refresh token). Returns 0, 1 if there is no such
 * row, or -1 on a database error. */
static int read_token_row(gw_dbs_t *s, const char *id, bool for_update, token_row_t *row)
{
    static const char sql_read[] =
        "SELECT organisation_id, status, encode(access_token, 'hex'), "
        "access_token IS NOT NULL AND access_expires_at > clock_timestamp() + make_interval(secs => $2::int), "
        "refreshed_at::text, last_error, NULL FROM xero_tokens WHERE id = $1";
    static const char sql_lock[] =
        "SELECT organisation_id, status, encode(access_token, 'hex'), "
        "access_token IS NOT NULL AND access_expires_at > clock_timestamp() + make_interval(secs => $2::int), "
        "refreshed_at::text, last_error, encode(refresh_token, 'hex') FROM xero_tokens WHERE id = $1 FOR UPDATE";
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%d", GW_XERO_TOKEN_MIN_TTL);
    const char *p[] = {id, ttl};
    *row = (token_row_t){0};
    gw_dbs_result_t *r = gw_dbs_query(s, for_update ? sql_lock : sql_read, 2, p);
    if (r == NULL)
        return -1;
    if (gw_dbs_nrows(r) != 1) {
        gw_dbs_result_free(r);
        return 1;
    }
    row->organisation_id = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
    row->needs_reauth = strcmp(gw_dbs_value(r, 0, 1), "active") != 0;
    row->access_hex = dup_or_null(gw_dbs_value(r, 0, 2));
    row->access_valid = gw_dbs_value(r, 0, 3) != NULL && strcmp(gw_dbs_value(r, 0, 3), "t") == 0;
    row->refreshed_at = xstrdup(gw_dbs_value(r, 0, 4) != NULL ? gw_dbs_value(r, 0, 4) : "");
    row->last_error = dup_or_null(gw_dbs_value(r, 0, 5));
    row->refresh_hex = dup_or_null(gw_dbs_value(r, 0, 6));
    gw_dbs_result_free(r);
    return 0;
}

static int needs_reauth_error(long long token_id, const token_row_t *row, char *err, size_t errlen)
{
    snprintf(err, errlen, "Xero token set %lld needs to be reconnected by an administrator (%s)", token_id,
             row->last_error != NULL ? row->last_error : "needs_reauth");
    return GW_XERO_NEEDS_REAUTH;
}

/* Hands out the stored access token of row. */
static int use_stored(const unsigned char *key, long long token_id, const token_row_t *row, char **token_out, char *err,
                      size_t errlen)
{
    if ((*token_out = open_token(key, row->organisation_id, "access_token", row->access_hex)) == NULL) {
        snprintf(err, errlen,
                 "cannot decrypt Xero token set %lld: SETTLED_SECRET_KEY is not the key it was stored with", token_id);
        return -1;
    }
    return 0;
}

int gw_xero_access_token(gw_dbs_t *s, const gw_config_t *cfg, int64_t token_id, bool force_refresh, char **token_out,
                         char *err, size_t errlen)
{
    static const char sql_store[] =
        "UPDATE xero_tokens SET refresh_token = $2::bytea, access_token = $3::bytea, "
        "access_expires_at = clock_timestamp() + make_interval(secs => $4::int), status = 'active', last_error = NULL, "
        "refreshed_at = clock_timestamp(), updated_at = now() WHERE id = $1";
    static const char sql_reauth[] = "UPDATE xero_tokens SET status = 'needs_reauth', last_error = $2, "
                                     "access_token = NULL, access_expires_at = NULL, updated_at = now() WHERE id = $1";
    unsigned char key[GW_CRYPTO_KEY_LEN];
    token_row_t row0 = {0}, row = {0};
    token_set_t fresh = {0};
    char *refresh = NULL, *sealed_refresh = NULL, *sealed_access = NULL;
    char id[24], lock_timeout[48];
    long long tid = (long long)token_id;
    int ret = -1, rc;
    bool in_tx = false;

    *token_out = NULL;
    snprintf(id, sizeof(id), "%lld", tid);
    if (load_key(cfg, false, key, err, errlen) != 0)
        return -1;

    /* 1. the common case: a stored access token that still lives long enough, read without a lock */
    if ((rc = read_token_row(s, id, false, &row0)) != 0) {
        if (rc > 0)
            snprintf(err, errlen, "there is no Xero token set %lld", tid);
        else
            db_fail(s, "cannot read the Xero token set", err, errlen);
        goto exit;
    }
    if (row0.needs_reauth) {
        ret = needs_reauth_error(tid, &row0, err, errlen);
        goto exit;
    }
    if (!force_refresh && row0.access_valid) {
        ret = use_stored(key, tid, &row0, token_out, err, errlen);
        goto exit;
    }
    if (need(cfg->xero_client_id, "SETTLED_XERO_CLIENT_ID", "refresh Xero tokens", err, errlen) != 0 ||
        need(cfg->xero_client_secret, "SETTLED_XERO_CLIENT_SECRET", "refresh Xero tokens", err, errlen) != 0)
        goto exit;

    /* 2. refresh single-flight: whoever holds the row lock refreshes; the others wait, then use its result */
    if (gw_dbs_exec(s, "BEGIN", 0, NULL) < 0) {
        db_fail(s, "cannot start a transaction", err, errlen);
        goto exit;
    }
    in_tx = true;
    /* waiters give up a while after the holder's token call would have timed out */
    snprintf(lock_timeout, sizeof(lock_timeout), "%d",
             (cfg->http_timeout_ms > 0 ? cfg->http_timeout_ms : 30000) + 15000);
    const char *lp[] = {lock_timeout};
    gw_dbs_result_t *lr = gw_dbs_query(s, "SELECT set_config('lock_timeout', $1, true)", 1, lp);
    if (lr == NULL) {
        db_fail(s, "cannot set lock_timeout", err, errlen);
        goto exit;
    }
    gw_dbs_result_free(lr);
    if ((rc = read_token_row(s, id, true, &row)) != 0) {
        if (rc > 0)
            snprintf(err, errlen, "there is no Xero token set %lld", tid);
        else if (strcmp(gw_dbs_sqlstate(s), "55P03") == 0)
            snprintf(err, errlen, "another refresh of Xero token set %lld is taking too long; try again later", tid);
        else
            db_fail(s, "cannot lock the Xero token set", err, errlen);
        goto exit;
    }
    if (row.needs_reauth) {
        ret = needs_reauth_error(tid, &row, err, errlen);
        goto exit;
    }
    bool refreshed_meanwhile = strcmp(row.refreshed_at, row0.refreshed_at) != 0;
    if (row.access_valid && (!force_refresh || refreshed_meanwhile)) {
        ret = use_stored(key, tid, &row, token_out, err, errlen);
        goto exit;
    }
    if ((refresh = open_token(key, row.organisation_id, "refresh_token", row.refresh_hex)) == NULL) {
        snprintf(err, errlen,
                 "cannot decrypt Xero token set %lld: SETTLED_SECRET_KEY is not the key it was stored with", tid);
        goto exit;
    }

    buf_t form = {0};
    buf_adds(&form, "grant_type=refresh_token&refresh_token=");
    buf_add_encoded(&form, refresh);
    enum token_outcome outcome = token_call(cfg, "refresh token", &form, tid, &fresh, err, errlen);
    buf_wipe(&form);

    char org[24];
    snprintf(org, sizeof(org), "%lld", (long long)row.organisation_id);
    switch (outcome) {
    case TOKEN_OK: {
        /* Xero always rotates; if an answer ever lacks a refresh token, the current one stays valid */
        const char *next_refresh = fresh.refresh_token != NULL ? fresh.refresh_token : refresh;
        char expires[24];
        snprintf(expires, sizeof(expires), "%ld", fresh.expires_in > 0 ? fresh.expires_in : 1);
        sealed_refresh = seal_token(key, row.organisation_id, "refresh_token", next_refresh);
        sealed_access = seal_token(key, row.organisation_id, "access_token", fresh.access_token);
        if (sealed_refresh == NULL || sealed_access == NULL) {
            snprintf(err, errlen, "cannot encrypt the Xero token set");
            gw_log(GW_LOG_ERROR,
                   "xero token set %lld: refreshed but could not be encrypted; the old refresh token "
                   "stays usable during Xero's grace period",
                   tid);
            goto exit;
        }
        const char *p[] = {id, sealed_refresh, sealed_access, expires};
        if (gw_dbs_exec(s, sql_store, 4, p) != 1 || gw_dbs_exec(s, "COMMIT", 0, NULL) < 0) {
            db_fail(s, "cannot store the refreshed Xero token set", err, errlen);
            gw_log(GW_LOG_ERROR,
                   "xero token set %lld: the rotated refresh token could not be stored (%s); the old one stays usable "
                   "during Xero's grace period",
                   tid, gw_dbs_error(s));
            goto exit;
        }
        in_tx = false;
        *token_out = fresh.access_token;
        fresh.access_token = NULL;
        ret = 0;
        break;
    }
    case TOKEN_INVALID_GRANT: {
        char corr[48];
        new_correlation("xero-refresh", corr);
        const char *p[] = {id, err};
        json_t *before = json_pack("{s:s}", "status", "active");
        json_t *after = json_pack("{s:s, s:s}", "status", "needs_reauth", "last_error", err);
        char *b = json_dumps(before, JSON_COMPACT | JSON_SORT_KEYS),
             *a = json_dumps(after, JSON_COMPACT | JSON_SORT_KEYS);
        int ok = gw_dbs_exec(s, sql_reauth, 2, p) == 1 &&
                 audit(s, org, "system:xero", "xero.needs_reauth", "xero_tokens", id, b, a, corr) == 0 &&
                 gw_dbs_exec(s, "COMMIT", 0, NULL) >= 0;
        free(b);
        free(a);
        json_decref(before);
        json_decref(after);
        if (!ok) {
            char e2[256];
            db_fail(s, "cannot mark the Xero token set needs_reauth", e2, sizeof(e2));
            snprintf(err, errlen, "%s", e2);
            goto exit;
        }
        in_tx = false;
        gw_logline_t line;
        if (gw_log_enabled(GW_LOG_WARN)) {
            gw_log_begin(&line, GW_LOG_WARN, "xero token set needs reauthorisation");
            gw_log_str(&line, "provider", "xero", 4);
            gw_log_int(&line, "token_id", tid);
            gw_log_int(&line, "organisation_id", (long long)row.organisation_id);
            gw_log_str(&line, "correlation_id", corr, strlen(corr));
            gw_log_end(&line);
        }
        ret = GW_XERO_NEEDS_REAUTH;
        break;
    }
    default:
        break; /* transient or failed: roll back, keep the stored refresh token */
    }

exit:
    if (in_tx)
        rollback(s);
    explicit_bzero(key, sizeof(key));
    free_secret(refresh);
    free(sealed_refresh);
    free(sealed_access);
    token_set_wipe(&fresh);
    token_row_free(&row0);
    token_row_free(&row);
    return ret;
}

/* ---- connecting: store a new token set, discover its tenants ---- */

typedef struct st_tenant_t {
    char *tenant_id, *name, *connection_id;
} tenant_t;

typedef struct st_tenants_t {
    tenant_t *list;
    size_t n;
    char *auth_event_id;
} tenants_t;

static void tenants_free(tenants_t *t)
{
    for (size_t i = 0; i != t->n; ++i) {
        free(t->list[i].tenant_id);
        free(t->list[i].name);
        free(t->list[i].connection_id);
    }
    free(t->list);
    free(t->auth_event_id);
    *t = (tenants_t){0};
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
static int discover_tenants(const gw_config_t *cfg, const char *access_token, tenants_t *out, long *status, char *err,
                            size_t errlen)
{
    *out = (tenants_t){0};
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
            snprintf(err, errlen, "GET /connections failed: %s", res.error != NULL ? res.error : "unknown error");
        else
            snprintf(err, errlen, "GET /connections answered %ld", res.status);
        goto exit;
    }
    doc = json_loadb(res.body != NULL ? res.body : "", res.body_len, 0, NULL);
    if (!json_is_array(doc)) {
        snprintf(err, errlen, "GET /connections did not answer a JSON array");
        goto exit;
    }
    out->list = xmalloc(sizeof(tenant_t) * (json_array_size(doc) + 1));
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
            snprintf(err, errlen, "GET /connections listed an organisation without a valid tenantId");
            goto exit;
        }
        out->list[out->n++] = (tenant_t){xstrdup(tid), xstrdup(name != NULL ? name : ""), dup_or_null(conn)};
        if (out->auth_event_id == NULL && ev != NULL)
            out->auth_event_id = xstrdup(ev);
    }
    ret = 0;
exit:
    json_decref(doc);
    gw_http_response_free(&res);
    if (ret != 0)
        tenants_free(out);
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
    char *out = xstrdup(gw_dbs_nrows(r) == 1 && gw_dbs_value(r, 0, 0) != NULL ? gw_dbs_value(r, 0, 0) : "[]");
    gw_dbs_result_free(r);
    return out;
}

/*
 * Stores the tenants of token set id (organisation org) in one transaction with their audit
 * ('xero.connect', before and after: the organisation's tenants). Returns 0, or -1 with a message.
 */
static int store_tenants(gw_dbs_t *s, const char *org, const char *id, const tenants_t *tenants, const char *actor,
                         const char *corr, char *err, size_t errlen)
{
    static const char sql_event[] = "UPDATE xero_tokens SET auth_event_id = $2, updated_at = now() WHERE id = $1";
    static const char sql_tenant[] =
        "INSERT INTO xero_tenants (organisation_id, tenant_id, token_id, tenant_name, tenant_type, connection_id) "
        "VALUES ($1, $2::uuid, $3, $4, 'ORGANISATION', $5) ON CONFLICT (organisation_id, tenant_id) DO UPDATE SET "
        "token_id = EXCLUDED.token_id, tenant_name = EXCLUDED.tenant_name, tenant_type = EXCLUDED.tenant_type, "
        "connection_id = EXCLUDED.connection_id, updated_at = now()";
    char *before = NULL, *after = NULL;
    int ret = -1;
    if (gw_dbs_exec(s, "BEGIN", 0, NULL) < 0) {
        db_fail(s, "cannot store the Xero tenants", err, errlen);
        return -1;
    }
    if ((before = tenants_json(s, org)) == NULL)
        goto exit;
    if (tenants->auth_event_id != NULL) {
        const char *pe[] = {id, tenants->auth_event_id};
        if (gw_dbs_exec(s, sql_event, 2, pe) < 0)
            goto exit;
    }
    for (size_t i = 0; i != tenants->n; ++i) {
        const tenant_t *t = &tenants->list[i];
        const char *pt[] = {org, t->tenant_id, id, t->name, t->connection_id};
        if (gw_dbs_exec(s, sql_tenant, 5, pt) < 0)
            goto exit;
    }
    if ((after = tenants_json(s, org)) == NULL)
        goto exit;
    if (audit(s, org, actor, "xero.connect", "xero_tokens", id, before, after, corr) != 0 ||
        gw_dbs_exec(s, "COMMIT", 0, NULL) < 0)
        goto exit;
    ret = 0;
exit:
    if (ret != 0) {
        db_fail(s, "cannot store the Xero tenants", err, errlen);
        rollback(s);
    }
    free(before);
    free(after);
    return ret;
}

/*
 * Stores fresh (just obtained with grant) as a new token set of organisation_id, then discovers and
 * stores its tenants. Writes a summary line into summary and, when out is set, the tenants to out.
 */
static int connect_token_set(gw_dbs_t *s, const gw_config_t *cfg, const unsigned char *key, int64_t organisation_id,
                             const token_set_t *fresh, const char *grant, const char *actor, FILE *out, char *summary,
                             size_t summary_len, char *err, size_t errlen)
{
    static const char sql_insert[] =
        "INSERT INTO xero_tokens (organisation_id, refresh_token, access_token, access_expires_at, status, "
        "refreshed_at) VALUES ($1, $2::bytea, $3::bytea, clock_timestamp() + make_interval(secs => $4::int), "
        "'active', clock_timestamp()) RETURNING id";
    char org[24], id[24] = "", expires[24], corr[48];
    char *sealed_refresh = NULL, *sealed_access = NULL;
    tenants_t tenants = {0};
    bool in_tx = false;
    int ret = -1;

    snprintf(org, sizeof(org), "%lld", (long long)organisation_id);
    snprintf(expires, sizeof(expires), "%ld", fresh->expires_in > 0 ? fresh->expires_in : 1);
    new_correlation("xero-connect", corr);
    if (fresh->refresh_token == NULL) {
        snprintf(err, errlen, "Xero answered without a refresh token: is offline_access in SETTLED_XERO_SCOPES?");
        goto exit;
    }
    sealed_refresh = seal_token(key, organisation_id, "refresh_token", fresh->refresh_token);
    sealed_access = seal_token(key, organisation_id, "access_token", fresh->access_token);
    if (sealed_refresh == NULL || sealed_access == NULL) {
        snprintf(err, errlen, "cannot encrypt the Xero token set");
        goto exit;
    }

    /* 1. the rotated refresh token is durable before anything else happens */
    if (gw_dbs_exec(s, "BEGIN", 0, NULL) < 0) {
        db_fail(s, "cannot store the Xero token set", err, errlen);
        goto exit;
    }
    in_tx = true;
    const char *pi[] = {org, sealed_refresh, sealed_access, expires};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_insert, 4, pi);
    if (r == NULL) {
        char e2[256];
        db_fail(s, "cannot store the Xero token set", e2, sizeof(e2));
        snprintf(err, errlen, "%s (Xero accepts the same refresh token again for a short grace period)", e2);
        goto exit;
    }
    snprintf(id, sizeof(id), "%s", gw_dbs_value(r, 0, 0));
    gw_dbs_result_free(r);
    {
        json_t *a = json_pack("{s:s, s:s}", "grant", grant, "status", "active");
        char *as = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
        int rc = audit(s, org, actor, "xero.token_set.create", "xero_tokens", id, NULL, as, corr);
        free(as);
        json_decref(a);
        if (rc != 0 || gw_dbs_exec(s, "COMMIT", 0, NULL) < 0) {
            char e2[256];
            db_fail(s, "cannot store the Xero token set", e2, sizeof(e2));
            snprintf(err, errlen, "%s (Xero accepts the same refresh token again for a short grace period)", e2);
            goto exit;
        }
    }
    in_tx = false;

    /* 2. the organisations this token set reaches */
    char derr[256];
    if (discover_tenants(cfg, fresh->access_token, &tenants, NULL, derr, sizeof(derr)) != 0) {
        snprintf(err, errlen, "Xero token set %s is stored, but listing its organisations failed: %s", id, derr);
        goto exit;
    }
    if (tenants.n == 0) {
        snprintf(err, errlen,
                 "Xero token set %s is stored, but it gives access to no organisation: connect again and choose an "
                 "organisation in Xero",
                 id);
        goto exit;
    }

    /* 3. tenants, in one transaction with their audit */
    char terr[300];
    if (store_tenants(s, org, id, &tenants, actor, corr, terr, sizeof(terr)) != 0) {
        snprintf(err, errlen, "Xero token set %s is stored, but %s", id, terr);
        goto exit;
    }

    size_t n = (size_t)snprintf(summary, summary_len, "Connected Xero (token set %s):", id);
    for (size_t i = 0; i != tenants.n && n < summary_len; ++i)
        n += (size_t)snprintf(summary + n, summary_len - n, "%s %s", i == 0 ? "" : ",", tenants.list[i].name);
    if (out != NULL) {
        fprintf(out, "xero token set %s stored for organisation %s; tenants:\n", id, org);
        for (size_t i = 0; i != tenants.n; ++i)
            fprintf(out, "  %s  %s\n", tenants.list[i].tenant_id, tenants.list[i].name);
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
    ret = 0;
exit:
    if (in_tx)
        rollback(s);
    free(sealed_refresh);
    free(sealed_access);
    tenants_free(&tenants);
    return ret;
}

int gw_xero_connect_refresh_token(gw_dbs_t *s, const gw_config_t *cfg, int64_t organisation_id,
                                  const char *refresh_token, FILE *out, char *err, size_t errlen)
{
    unsigned char key[GW_CRYPTO_KEY_LEN];
    token_set_t fresh = {0};
    char summary[512];
    int ret = -1;
    if (!is_set(refresh_token)) {
        snprintf(err, errlen, "the refresh token is empty");
        return -1;
    }
    if (load_key(cfg, true, key, err, errlen) != 0)
        return -1;
    buf_t form = {0};
    buf_adds(&form, "grant_type=refresh_token&refresh_token=");
    buf_add_encoded(&form, refresh_token);
    enum token_outcome outcome = token_call(cfg, "refresh token", &form, 0, &fresh, err, errlen);
    buf_wipe(&form);
    if (outcome == TOKEN_OK)
        ret = connect_token_set(s, cfg, key, organisation_id, &fresh, "refresh_token", "system:cli", out, summary,
                                sizeof(summary), err, errlen);
    token_set_wipe(&fresh);
    explicit_bzero(key, sizeof(key));
    return ret;
}

char *gw_xero_authorize_url(const gw_config_t *cfg, int64_t organisation_id, char *err, size_t errlen)
{
    unsigned char key[GW_CRYPTO_KEY_LEN];
    char state[GW_XERO_STATE_MAX];
    if (need(cfg->xero_client_id, "SETTLED_XERO_CLIENT_ID", "connect Xero (the client id of the Xero app)", err,
             errlen) != 0 ||
        need(cfg->xero_redirect_uri, "SETTLED_XERO_REDIRECT_URI",
             "connect Xero (where Xero sends the administrator back: https://<host>/v1/xero/callback)", err,
             errlen) != 0 ||
        need(cfg->xero_scopes, "SETTLED_XERO_SCOPES", "connect Xero", err, errlen) != 0 ||
        gw_crypto_key_from_setting(cfg->secret_key, key, err, errlen) != 0)
        return NULL;
    int rc = gw_xero_state_make(key, organisation_id, (int64_t)time(NULL), state, sizeof(state));
    explicit_bzero(key, sizeof(key));
    if (rc != 0) {
        snprintf(err, errlen, "cannot sign the authorization state");
        return NULL;
    }
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

int gw_xero_complete_authorization(gw_dbs_t *s, const gw_config_t *cfg, const char *code, const char *state,
                                   char *summary, size_t summary_len, char *err, size_t errlen)
{
    unsigned char key[GW_CRYPTO_KEY_LEN];
    token_set_t fresh = {0};
    int64_t org = 0;
    int ret = -1;
    summary[0] = '\0';
    if (load_key(cfg, true, key, err, errlen) != 0 ||
        need(cfg->xero_redirect_uri, "SETTLED_XERO_REDIRECT_URI", "connect Xero", err, errlen) != 0)
        goto exit;
    if (gw_xero_state_check(key, state, (int64_t)time(NULL), &org) != 0) {
        snprintf(err, errlen, "the authorization request is invalid or has expired: start connecting Xero again");
        goto exit;
    }
    if (!is_set(code)) {
        snprintf(err, errlen, "Xero sent no authorization code");
        goto exit;
    }
    buf_t form = {0};
    buf_adds(&form, "grant_type=authorization_code&code=");
    buf_add_encoded(&form, code);
    buf_adds(&form, "&redirect_uri=");
    buf_add_encoded(&form, cfg->xero_redirect_uri);
    enum token_outcome outcome = token_call(cfg, "authorization code", &form, 0, &fresh, err, errlen);
    buf_wipe(&form);
    if (outcome == TOKEN_OK)
        ret = connect_token_set(s, cfg, key, org, &fresh, "authorization_code", "system:oauth-callback", NULL, summary,
                                summary_len, err, errlen);
exit:
    token_set_wipe(&fresh);
    explicit_bzero(key, sizeof(key));
    return ret;
}

/* ---- the command line ---- */

static void cli_usage(FILE *out)
{
    fprintf(out, "usage: settled connect xero --refresh-token TOKEN|- [--organisation SLUG]\n"
                 "       settled connect xero --authorize [--organisation SLUG]\n"
                 "       settled connect xero --callback URL\n"
                 "       settled connect xero --check [--force-refresh] [--organisation SLUG]\n"
                 "\n"
                 "  --refresh-token  connect with an existing refresh token (it is used once and retired);\n"
                 "                   '-' reads it from standard input, which keeps it out of `ps` and shell history\n"
                 "  --authorize      print the URL an administrator opens to connect Xero\n"
                 "  --callback       finish that connection with the address Xero redirected the browser to\n"
                 "                   (for when SETTLED_XERO_REDIRECT_URI does not reach a running settled)\n"
                 "  --check          get a working access token for every Xero token set of the organisation\n"
                 "                   (refreshing it when needed; --force-refresh always) and list its tenants\n"
                 "  --organisation   the organisation's slug (default SETTLED_ORGANISATION); created if missing\n");
}

/* Reads one line from stdin (the refresh token), without its line end. */
static char *read_stdin_line(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
        line[--n] = '\0';
    return line;
}

/* The percent-decoded value of query parameter name in url (malloc'd), or NULL. */
static char *query_value(const char *url, const char *name)
{
    const char *q = strchr(url, '?');
    size_t nlen = strlen(name);
    while (q != NULL) {
        ++q;
        size_t len = strcspn(q, "&#");
        if (len > nlen && strncmp(q, name, nlen) == 0 && q[nlen] == '=') {
            char *out = xmalloc(len), *o = out;
            for (const char *v = q + nlen + 1, *end = q + len; v < end; ++v) {
                if (*v == '%' && end - v >= 3 && hexval((unsigned char)v[1]) >= 0 && hexval((unsigned char)v[2]) >= 0) {
                    *o++ = (char)(hexval((unsigned char)v[1]) << 4 | hexval((unsigned char)v[2]));
                    v += 2;
                } else {
                    *o++ = *v == '+' ? ' ' : *v;
                }
            }
            *o = '\0';
            return out;
        }
        q = q[len] == '&' ? q + len : NULL;
    }
    return NULL;
}

/* --callback: completes an authorization from the address Xero redirected the browser to. */
static int cli_callback(gw_dbs_t *s, const gw_config_t *cfg, const char *url)
{
    char *code = query_value(url, "code"), *state = query_value(url, "state"), *error = query_value(url, "error");
    char err[512], summary[512];
    int ret = 1;
    if (error != NULL) {
        bool safe = strlen(error) < 64 && strspn(error, "abcdefghijklmnopqrstuvwxyz_") == strlen(error);
        fprintf(stderr, "settled: Xero did not authorise the connection (%s)\n", safe ? error : "error");
    } else if (code == NULL || state == NULL) {
        fprintf(stderr, "settled: connect xero --callback: the URL has no code and state parameters\n");
    } else if (gw_xero_complete_authorization(s, cfg, code, state, summary, sizeof(summary), err, sizeof(err)) != 0) {
        fprintf(stderr, "settled: %s\n", err);
    } else {
        printf("%s\n", summary);
        ret = 0;
    }
    free_secret(code);
    free(state);
    free(error);
    return ret;
}

/* --check: a working access token for each token set of the organisation, proven by GET /connections. */
static int cli_check(gw_dbs_t *s, const gw_config_t *cfg, int64_t org_id, bool force)
{
    static const char sql[] = "SELECT t.id, t.status, (SELECT count(*) FROM xero_tenants n WHERE n.token_id = t.id) "
                              "FROM xero_tokens t WHERE t.organisation_id = $1 AND (t.status = 'active' OR EXISTS "
                              "(SELECT 1 FROM xero_tenants n WHERE n.token_id = t.id)) ORDER BY t.id";
    char org[24], err[512];
    snprintf(org, sizeof(org), "%lld", (long long)org_id);
    const char *p[] = {org};
    gw_dbs_result_t *r = gw_dbs_query(s, sql, 1, p);
    if (r == NULL) {
        db_fail(s, "cannot list the Xero token sets", err, sizeof(err));
        fprintf(stderr, "settled: %s\n", err);
        return 1;
    }
    size_t n = gw_dbs_nrows(r);
    int64_t *ids = xmalloc(sizeof(int64_t) * (n + 1)), *stored = xmalloc(sizeof(int64_t) * (n + 1));
    for (size_t i = 0; i != n; ++i) {
        ids[i] = strtoll(gw_dbs_value(r, i, 0), NULL, 10);
        stored[i] = strtoll(gw_dbs_value(r, i, 2), NULL, 10);
    }
    gw_dbs_result_free(r);
    int ret = 0;
    if (n == 0) {
        fprintf(stderr, "settled: organisation %lld has no Xero connection: run `settled connect xero --authorize`\n",
                (long long)org_id);
        ret = 1;
    }
    for (size_t i = 0; i != n; ++i) {
        char *token = NULL;
        int rc = gw_xero_access_token(s, cfg, ids[i], force, &token, err, sizeof(err));
        if (rc != 0) {
            fprintf(stdout, "xero token set %lld: %s\n", (long long)ids[i],
                    rc == GW_XERO_NEEDS_REAUTH ? "needs_reauth" : "error");
            fprintf(stderr, "settled: %s\n", err);
            ret = 1;
            continue;
        }
        tenants_t tenants;
        long status = 0;
        rc = discover_tenants(cfg, token, &tenants, &status, err, sizeof(err));
        free_secret(token);
        if (rc != 0 && status == 401) {
            /* Xero no longer takes the stored access token: refresh once and try again */
            token = NULL;
            rc = gw_xero_access_token(s, cfg, ids[i], true, &token, err, sizeof(err));
            if (rc != 0) {
                fprintf(stdout, "xero token set %lld: %s\n", (long long)ids[i],
                        rc == GW_XERO_NEEDS_REAUTH ? "needs_reauth" : "error");
                fprintf(stderr, "settled: %s\n", err);
                ret = 1;
                continue;
            }
            rc = discover_tenants(cfg, token, &tenants, NULL, err, sizeof(err));
            free_secret(token);
        }
        if (rc != 0) {
            fprintf(stdout, "xero token set %lld: error\n", (long long)ids[i]);
            fprintf(stderr, "settled: xero token set %lld: %s\n", (long long)ids[i], err);
            ret = 1;
            continue;
        }
        if (stored[i] == 0 && tenants.n != 0) {
            /* a connect whose tenant listing failed: store them now */
            char id[24], corr[48];
            snprintf(id, sizeof(id), "%lld", (long long)ids[i]);
            new_correlation("xero-connect", corr);
            if (store_tenants(s, org, id, &tenants, "system:cli", corr, err, sizeof(err)) != 0) {
                fprintf(stdout, "xero token set %lld: error\n", (long long)ids[i]);
                fprintf(stderr, "settled: xero token set %lld: %s\n", (long long)ids[i], err);
                tenants_free(&tenants);
                ret = 1;
                continue;
            }
        }
        fprintf(stdout, "xero token set %lld: ok, %zu tenant%s\n", (long long)ids[i], tenants.n,
                tenants.n == 1 ? "" : "s");
        for (size_t j = 0; j != tenants.n; ++j)
            fprintf(stdout, "  %s  %s\n", tenants.list[j].tenant_id, tenants.list[j].name);
        tenants_free(&tenants);
    }
    free(ids);
    free(stored);
    return ret;
}

int gw_xero_cli(const gw_config_t *cfg, int argc, char **argv)
{
    const char *refresh_arg = NULL, *callback = NULL, *slug = cfg->organisation;
    bool authorize = false, check = false, force = false;
    if (argc < 1 || strcmp(argv[0], "xero") != 0) {
        fprintf(stderr, "settled: connect: unknown provider%s%s (only xero can be connected)\n", argc < 1 ? "" : ": ",
                argc < 1 ? "" : argv[0]);
        cli_usage(stderr);
        return 2;
    }
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--refresh-token") == 0 && i + 1 < argc) {
            refresh_arg = argv[++i];
        } else if (strcmp(argv[i], "--callback") == 0 && i + 1 < argc) {
            callback = argv[++i];
        } else if (strcmp(argv[i], "--organisation") == 0 && i + 1 < argc) {
            slug = argv[++i];
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            ++i; /* read by main */
        } else if (strcmp(argv[i], "--authorize") == 0) {
            authorize = true;
        } else if (strcmp(argv[i], "--check") == 0) {
            check = true;
        } else if (strcmp(argv[i], "--force-refresh") == 0) {
            force = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cli_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "settled: connect xero: unknown or incomplete argument: %s\n", argv[i]);
            cli_usage(stderr);
            return 2;
        }
    }
    if ((refresh_arg != NULL) + (callback != NULL) + authorize + check != 1 || (force && !check)) {
        fprintf(stderr,
                "settled: connect xero: give exactly one of --refresh-token, --authorize, --callback and --check\n");
        cli_usage(stderr);
        return 2;
    }
    if (!is_set(slug)) {
        fprintf(stderr, "settled: SETTLED_ORGANISATION: required (or give --organisation SLUG)\n");
        return 2;
    }

    char err[512];
    unsigned char key[GW_CRYPTO_KEY_LEN];
    /* every setting first, so a missing one is named before anything happens */
    if (need(cfg->database_url, "SETTLED_DATABASE_URL", "connect Xero", err, sizeof(err)) != 0 ||
        load_key(cfg, !authorize, key, err, sizeof(err)) != 0 ||
        ((authorize || callback != NULL) &&
         (need(cfg->xero_client_id, "SETTLED_XERO_CLIENT_ID", "connect Xero", err, sizeof(err)) != 0 ||
          need(cfg->xero_redirect_uri, "SETTLED_XERO_REDIRECT_URI",
               "connect Xero (where Xero sends the administrator back)", err, sizeof(err)) != 0))) {
        fprintf(stderr, "settled: %s\n", err);
        return 1;
    }
    explicit_bzero(key, sizeof(key));

    int64_t org_id = 0;
    const char *slugs[] = {slug};
    /* (a callback's organisation is the one its state names) */
    if (gw_orgs_bootstrap(cfg, slugs, callback != NULL ? 0 : 1, &org_id, err, sizeof(err)) != 0) {
        fprintf(stderr, "settled: %s\n", err);
        return 1;
    }
    if (authorize) {
        char *url = gw_xero_authorize_url(cfg, org_id, err, sizeof(err));
        if (url == NULL) {
            fprintf(stderr, "settled: %s\n", err);
            return 1;
        }
        printf("Open this URL as an administrator of the Xero organisation to connect it to '%s' "
               "(valid for %d minutes):\n%s\n",
               slug, GW_XERO_STATE_TTL / 60, url);
        free(url);
        return 0;
    }

    char *refresh_token = NULL;
    if (refresh_arg != NULL) {
        refresh_token = strcmp(refresh_arg, "-") == 0 ? read_stdin_line() : xstrdup(refresh_arg);
        if (!is_set(refresh_token)) {
            fprintf(stderr, "settled: connect xero: the refresh token is empty\n");
            free_secret(refresh_token);
            return 2;
        }
    }
    gw_dbs_t *s = gw_dbs_connect(cfg->database_url, err, sizeof(err));
    if (s == NULL) {
        fprintf(stderr, "settled: %s\n", err);
        free_secret(refresh_token);
        return 1;
    }
    gw_http_options_t opts = {.timeout_ms = cfg->http_timeout_ms > 0 ? cfg->http_timeout_ms : 30000,
                              .connect_timeout_ms =
                                  cfg->http_connect_timeout_ms > 0 ? cfg->http_connect_timeout_ms : 5000,
                              .max_host_connections = 4,
                              .max_body = 1 << 20};
    if (gw_http_init(&opts) != 0) {
        fprintf(stderr, "settled: cannot start the HTTP client\n");
        gw_dbs_close(s);
        free_secret(refresh_token);
        return 1;
    }
    int ret;
    if (check) {
        ret = cli_check(s, cfg, org_id, force);
    } else if (callback != NULL) {
        ret = cli_callback(s, cfg, callback); /* the organisation is the one the state names */
    } else if (gw_xero_connect_refresh_token(s, cfg, org_id, refresh_token, stdout, err, sizeof(err)) != 0) {
        fprintf(stderr, "settled: %s\n", err);
        ret = 1;
    } else {
        ret = 0;
    }
    gw_http_shutdown();
    gw_dbs_close(s);
    free_secret(refresh_token);
    return ret;
}
