/* SPDX-License-Identifier: MIT */
/*
 * auth.c: access tokens (JWTs through libjwt 1.10, which signs and checks signatures but validates nothing else, so
 * the algorithm, the times, the issuer, the audience and every claim's type are checked here), refresh tokens
 * (random, stored as digests) and password hashes (scrypt through infra/crypto). The only libjwt user of the tree.
 */
#include "auth.h"
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "crypto.h"
#include "mem.h"

#define LEEWAY 30          /* seconds of clock skew exp and nbf allow */
#define TOKEN_MAX 4096     /* longest access token looked at */
#define KEY_FILE_MAX 65536 /* largest PEM key file read */
#define JTI_BYTES 16       /* random bytes of a jti (22 base64url characters) */
#define REFRESH_BYTES 32   /* random bytes of a refresh token (43 base64url characters) */
#define ACCESS_TTL_DEFAULT 900
#define REFRESH_TTL_DEFAULT 2592000

/* The password hash of this version: scrypt, N = 2^15, r = 8, p = 1 (32 MiB, docs/security.md has the time). */
#define PW_LN 15
#define PW_R 8
#define PW_P 1
#define PW_SALT 16
#define PW_HASH 32
#define PW_PREFIX "$scrypt$"

struct st_gw_auth_t {
    jwt_alg_t alg;
    unsigned char *sign_key; /* HS256: the secret; RS256/ES256: the private key's PEM text */
    size_t sign_len;
    unsigned char *verify_key; /* HS256: the secret again; RS256/ES256: the public key's PEM text */
    size_t verify_len;
    char *issuer, *audience;
    int64_t access_ttl, refresh_ttl;
};

/* ---- keys ---- */

/* Reads the whole of path (at most KEY_FILE_MAX bytes) into a malloc'd NUL-terminated buffer. The error names the
 * setting and the path, never the content. */
static char *read_key_file(const char *setting, const char *path, size_t *len, gw_err_t *err)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        gw_err_set(err, gw_err_config_invalid, 500, "%s: cannot open %s: %s", setting, path, strerror(errno));
        return NULL;
    }
    char *buf = gw_xmalloc(KEY_FILE_MAX + 1);
    size_t n = fread(buf, 1, KEY_FILE_MAX + 1, fp);
    bool bad = ferror(fp) != 0;
    fclose(fp);
    if (bad || n == 0 || n > KEY_FILE_MAX) {
        gw_err_set(err, gw_err_config_invalid, 500, "%s: %s is %s", setting, path,
                   bad      ? "unreadable"
                   : n == 0 ? "empty"
                            : "larger than 64 KiB");
        gw_free_secret(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Loads the asymmetric keys of auth (alg RS256 or ES256) from the files cfg names. */
static int load_key_pair(gw_auth_t *auth, const gw_config_t *cfg, gw_err_t *err)
{
    const char *want = auth->alg == JWT_ALG_RS256 ? "an RSA key of at least 2048 bits" : "an EC key on P-256";
    gw_crypto_key_type_t want_type = auth->alg == JWT_ALG_RS256 ? GW_CRYPTO_KEY_RSA : GW_CRYPTO_KEY_EC_P256;
    char *priv = NULL, *pub = NULL, *derived = NULL, *given = NULL;
    size_t privlen = 0, publen = 0, dlen = 0, glen = 0;
    int ret = -1, bits = 0;
    gw_crypto_key_type_t type;

    if (cfg->jwt_private_key_file == NULL) {
        gw_err_set(err, gw_err_config_invalid, 500, "SETTLED_JWT_PRIVATE_KEY_FILE: required with SETTLED_JWT_ALG=%s",
                   jwt_alg_str(auth->alg));
        goto Exit;
    }
    if ((priv = read_key_file("SETTLED_JWT_PRIVATE_KEY_FILE", cfg->jwt_private_key_file, &privlen, err)) == NULL)
        goto Exit;
    derived = gw_crypto_public_pem(priv, privlen, false, &type, &bits, &dlen);
    if (derived == NULL || type != want_type || (type == GW_CRYPTO_KEY_RSA && bits < 2048)) {
        gw_err_set(err, gw_err_config_invalid, 500, "SETTLED_JWT_PRIVATE_KEY_FILE: %s is not %s in PEM (unencrypted)",
                   cfg->jwt_private_key_file, want);
        goto Exit;
    }
    if (cfg->jwt_public_key_file != NULL) {
        if ((pub = read_key_file("SETTLED_JWT_PUBLIC_KEY_FILE", cfg->jwt_public_key_file, &publen, err)) == NULL)
            goto Exit;
        given = gw_crypto_public_pem(pub, publen, true, &type, &bits, &glen);
        if (given == NULL || type != want_type) {
            gw_err_set(err, gw_err_config_invalid, 500, "SETTLED_JWT_PUBLIC_KEY_FILE: %s is not %s's public key in PEM",
                       cfg->jwt_public_key_file, want);
            goto Exit;
        }
        if (glen != dlen || memcmp(given, derived, dlen) != 0) {
            gw_err_set(err, gw_err_config_invalid, 500,
                       "SETTLED_JWT_PUBLIC_KEY_FILE: %s is not the public half of SETTLED_JWT_PRIVATE_KEY_FILE",
                       cfg->jwt_public_key_file);
            goto Exit;
        }
    }
    auth->sign_key = (unsigned char *)priv, auth->sign_len = privlen, priv = NULL;
    auth->verify_key = (unsigned char *)derived, auth->verify_len = dlen, derived = NULL;
    ret = 0;
Exit:
    gw_free_secret(priv);
    free(pub);
    free(derived);
    free(given);
    return ret;
}

gw_auth_t *gw_auth_create(const gw_config_t *cfg, gw_err_t *err)
{
    gw_auth_t *auth = gw_xcalloc(1, sizeof(*auth));
    const char *alg = cfg->jwt_alg != NULL ? cfg->jwt_alg : "HS256";
    if (strcmp(alg, "HS256") == 0) {
        auth->alg = JWT_ALG_HS256;
    } else if (strcmp(alg, "RS256") == 0) {
        auth->alg = JWT_ALG_RS256;
    } else if (strcmp(alg, "ES256") == 0) {
        auth->alg = JWT_ALG_ES256;
    } else {
        gw_err_set(err, gw_err_config_invalid, 500, "SETTLED_JWT_ALG: must be HS256, RS256 or ES256");
        goto Fail;
    }
    if (auth->alg == JWT_ALG_HS256) {
        size_t n = cfg->jwt_secret != NULL ? strlen(cfg->jwt_secret) : 0;
        if (n < 32) {
            gw_err_set(err, gw_err_config_invalid, 500, "SETTLED_JWT_SECRET: %s",
                       n == 0 ? "required with SETTLED_JWT_ALG=HS256" : "must be at least 32 bytes");
            goto Fail;
        }
        auth->sign_key = (unsigned char *)gw_xstrdup(cfg->jwt_secret), auth->sign_len = n;
        auth->verify_key = (unsigned char *)gw_xstrdup(cfg->jwt_secret), auth->verify_len = n;
    } else if (load_key_pair(auth, cfg, err) != 0) {
        goto Fail;
    }
    auth->issuer = gw_xstrdup(cfg->jwt_issuer != NULL ? cfg->jwt_issuer : "settled");
    auth->audience = gw_xstrdup(cfg->jwt_audience != NULL ? cfg->jwt_audience : "settled-portal");
    auth->access_ttl = cfg->access_token_ttl > 0 ? cfg->access_token_ttl : ACCESS_TTL_DEFAULT;
    auth->refresh_ttl = cfg->refresh_token_ttl > 0 ? cfg->refresh_token_ttl : REFRESH_TTL_DEFAULT;

    /* one token made and checked now, so a key libjwt cannot use fails at start rather than at the first sign-in */
    gw_claims_t probe = {.user_id = 1, .organisation_id = 1, .role = GW_ROLE_ADMIN};
    gw_claims_t back;
    gw_err_t perr = GW_ERR_INIT;
    int64_t now = 1700000000;
    char *token = gw_auth_issue_access(auth, &probe, now, &perr);
    int ok = token != NULL && gw_auth_verify_access(auth, token, strlen(token), now, &back, &perr) == 0;
    free(token);
    if (!ok) {
        gw_err_set(err, gw_err_config_invalid, 500,
                   "SETTLED_JWT_ALG=%s: the configured key cannot sign and check a token", alg);
        goto Fail;
    }
    return auth;
Fail:
    gw_auth_destroy(auth);
    return NULL;
}

void gw_auth_destroy(gw_auth_t *auth)
{
    if (auth == NULL)
        return;
    if (auth->sign_key != NULL)
        explicit_bzero(auth->sign_key, auth->sign_len);
    if (auth->verify_key != NULL)
        explicit_bzero(auth->verify_key, auth->verify_len);
    free(auth->sign_key);
    free(auth->verify_key);
    free(auth->issuer);
    free(auth->audience);
    free(auth);
}

int64_t gw_auth_access_ttl(const gw_auth_t *auth)
{
    return auth->access_ttl;
}

int64_t gw_auth_refresh_ttl(const gw_auth_t *auth)
{
    return auth->refresh_ttl;
}

/* ---- access tokens ---- */

/* Parses a positive decimal id as the tokens carry it: [1-9][0-9]*, at most INT64_MAX. */
static bool parse_id(const char *s, int64_t *out)
{
    if (s == NULL || s[0] < '1' || s[0] > '9')
        return false;
    int64_t v = 0;
    for (; *s != '\0'; ++s) {
        if (*s < '0' || *s > '9' || v > (INT64_MAX - (*s - '0')) / 10)
            return false;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return true;
}

static bool is_base64url(const char *s, size_t len)
{
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == len;
}

static const char *string_claim(json_t *claims, const char *name)
{
    json_t *v = json_object_get(claims, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool int_claim(json_t *claims, const char *name, int64_t *out)
{
    json_t *v = json_object_get(claims, name);
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

#define REFUSE(...)                                                                                                    \
    do {                                                                                                               \
        gw_err_set(err, gw_err_invalid_argument, 401, __VA_ARGS__);                                                    \
        goto Exit;                                                                                                     \
    } while (0)

int gw_auth_verify_access(const gw_auth_t *auth, const char *token, size_t len, int64_t now, gw_claims_t *out,
                          gw_err_t *err)
{
    int ret = -1;
    char *text = NULL, *claims_json = NULL;
    jwt_t *jwt = NULL;
    json_t *claims = NULL;
    gw_claims_t c = {0};
    memset(out, 0, sizeof(*out));

    if (len == 0 || len > TOKEN_MAX || memchr(token, '\0', len) != NULL)
        REFUSE("access token: empty, too long or not text");
    text = gw_xmalloc(len + 1);
    memcpy(text, token, len);
    text[len] = '\0';
    /* a key is always given (libjwt skips the signature check without one), and is never empty */
    if (jwt_decode(&jwt, text, auth->verify_key, (int)auth->verify_len) != 0 || jwt == NULL)
        REFUSE("access token: malformed or bad signature");
    /* libjwt checked the signature with the algorithm the token names: it must be the configured one, or a token
     * HMAC-signed with the public key's PEM as the secret would pass */
    if (jwt_get_alg(jwt) != auth->alg)
        REFUSE("access token: alg %s is not the configured %s", jwt_alg_str(jwt_get_alg(jwt)), jwt_alg_str(auth->alg));
    /* the claims as JSON, so every type is checked (jwt_get_grant_int reads a string claim as 0) */
    if ((claims_json = jwt_get_grants_json(jwt, NULL)) == NULL ||
        (claims = json_loads(claims_json, JSON_REJECT_DUPLICATES, NULL)) == NULL || !json_is_object(claims))
        REFUSE("access token: the claims are not a JSON object");

    if (!int_claim(claims, "exp", &c.exp) || !int_claim(claims, "nbf", &c.nbf) || !int_claim(claims, "iat", &c.iat))
        REFUSE("access token: exp, nbf and iat must be integers");
    if (now >= c.exp + LEEWAY)
        REFUSE("access token: expired");
    if (c.nbf > now + LEEWAY || c.iat > now + LEEWAY)
        REFUSE("access token: not valid yet");
    if (c.exp <= c.nbf)
        REFUSE("access token: exp is not after nbf");
    const char *iss = string_claim(claims, "iss"), *aud = string_claim(claims, "aud");
    if (iss == NULL || strcmp(iss, auth->issuer) != 0)
        REFUSE("access token: wrong or missing iss");
    if (aud == NULL || strcmp(aud, auth->audience) != 0)
        REFUSE("access token: wrong or missing aud");
    if (!parse_id(string_claim(claims, "sub"), &c.user_id) ||
        !parse_id(string_claim(claims, "org"), &c.organisation_id))
        REFUSE("access token: sub and org must be decimal ids in strings");
    const char *role = string_claim(claims, "role");
    if (role != NULL && strcmp(role, "admin") == 0) {
        c.role = GW_ROLE_ADMIN;
    } else if (role != NULL && strcmp(role, "client") == 0) {
        c.role = GW_ROLE_CLIENT;
    } else {
        REFUSE("access token: role must be admin or client");
    }
    json_t *customer = json_object_get(claims, "customer");
    if (c.role == GW_ROLE_CLIENT) {
        if (!parse_id(json_string_value(customer), &c.customer_id))
            REFUSE("access token: a client's token must carry its customer as a decimal id in a string");
    } else if (customer != NULL) {
        REFUSE("access token: an admin's token must not carry a customer");
    }
    const char *jti = string_claim(claims, "jti");
    size_t jtilen = jti != NULL ? strlen(jti) : 0;
    if (jtilen == 0 || jtilen >= sizeof(c.jti) || !is_base64url(jti, jtilen))
        REFUSE("access token: jti must be base64url text");
    memcpy(c.jti, jti, jtilen + 1);

    *out = c;
    ret = 0;
Exit:
    json_decref(claims);
    free(claims_json);
    jwt_free(jwt);
    free(text);
    return ret;
}

#undef REFUSE

char *gw_auth_issue_access(const gw_auth_t *auth, gw_claims_t *c, int64_t now, gw_err_t *err)
{
    char *token = NULL;
    jwt_t *jwt = NULL;
    if (c->user_id <= 0 || c->organisation_id <= 0 || (c->role != GW_ROLE_ADMIN && c->role != GW_ROLE_CLIENT) ||
        (c->role == GW_ROLE_CLIENT) != (c->customer_id > 0) || (c->role == GW_ROLE_ADMIN && c->customer_id != 0)) {
        gw_err_set(err, gw_err_internal, 500, "access token: the claims are not those of an admin or a client");
        return NULL;
    }
    unsigned char raw[JTI_BYTES];
    gw_crypto_random(raw, sizeof(raw));
    gw_base64_encode(raw, sizeof(raw), GW_BASE64_URL | GW_BASE64_NOPAD, c->jti);
    c->iat = c->nbf = now;
    c->exp = now + auth->access_ttl;

    char sub[24], org[24], customer[24];
    snprintf(sub, sizeof(sub), "%" PRId64, c->user_id);
    snprintf(org, sizeof(org), "%" PRId64, c->organisation_id);
    snprintf(customer, sizeof(customer), "%" PRId64, c->customer_id);
    if (jwt_new(&jwt) != 0 || jwt_add_grant(jwt, "iss", auth->issuer) != 0 ||
        jwt_add_grant(jwt, "aud", auth->audience) != 0 || jwt_add_grant(jwt, "sub", sub) != 0 ||
        jwt_add_grant(jwt, "org", org) != 0 ||
        jwt_add_grant(jwt, "role", c->role == GW_ROLE_ADMIN ? "admin" : "client") != 0 ||
        (c->role == GW_ROLE_CLIENT && jwt_add_grant(jwt, "customer", customer) != 0) ||
        jwt_add_grant(jwt, "jti", c->jti) != 0 || jwt_add_grant_int(jwt, "iat", (long)c->iat) != 0 ||
        jwt_add_grant_int(jwt, "nbf", (long)c->nbf) != 0 || jwt_add_grant_int(jwt, "exp", (long)c->exp) != 0 ||
        jwt_set_alg(jwt, auth->alg, auth->sign_key, (int)auth->sign_len) != 0 || (token = jwt_encode_str(jwt)) == NULL)
        gw_err_set(err, gw_err_internal, 500, "access token: libjwt could not make it");
    jwt_free(jwt);
    return token;
}

/* ---- refresh tokens ---- */

int gw_auth_refresh_token(char token[64], char digest[65])
{
    unsigned char raw[REFRESH_BYTES];
    gw_crypto_random(raw, sizeof(raw));
    size_t n = gw_base64_encode(raw, sizeof(raw), GW_BASE64_URL | GW_BASE64_NOPAD, token);
    explicit_bzero(raw, sizeof(raw));
    gw_auth_token_digest(token, n, digest);
    return 0;
}

void gw_auth_token_digest(const char *token, size_t len, char digest[65])
{
    gw_crypto_sha256_hex(token, len, digest);
}

/* ---- passwords ---- */

/* The parameters and bytes of a stored password hash. */
typedef struct st_pw_hash_t {
    unsigned ln, r, p;
    unsigned char salt[64], hash[64];
    size_t saltlen, hashlen;
} pw_hash_t;

static uint64_t scrypt_maxmem(uint64_t n, uint64_t r, uint64_t p)
{
    return 128 * r * (n + 2) + 128 * r * p + 65536;
}

/* Reads an unsigned decimal of at most 4 digits at *s followed by stop, advancing *s past stop. */
static bool read_param(const char **s, const char *name, char stop, unsigned *out)
{
    size_t nl = strlen(name);
    if (strncmp(*s, name, nl) != 0)
        return false;
    const char *q = *s + nl;
    unsigned v = 0;
    size_t digits = 0;
    for (; *q >= '0' && *q <= '9' && digits != 4; ++q, ++digits)
        v = v * 10 + (unsigned)(*q - '0');
    if (digits == 0 || *q != stop || (digits > 1 && (*s)[nl] == '0'))
        return false;
    *s = q + 1;
    *out = v;
    return true;
}

/* Parses "$scrypt$ln=L,r=R,p=P$<salt>$<hash>" (salt and hash base64url without padding). Refuses parameters no
 * version of settled writes and that would cost more than 256 MiB or 2^20 rounds, so a tampered row cannot make a
 * sign-in exhaust the server. */
static bool parse_pw_hash(const char *stored, pw_hash_t *h)
{
    if (stored == NULL || strncmp(stored, PW_PREFIX, sizeof(PW_PREFIX) - 1) != 0)
        return false;
    const char *s = stored + sizeof(PW_PREFIX) - 1;
    if (!read_param(&s, "ln=", ',', &h->ln) || !read_param(&s, "r=", ',', &h->r) || !read_param(&s, "p=", '$', &h->p))
        return false;
    if (h->ln < 10 || h->ln > 20 || h->r < 1 || h->r > 32 || h->p < 1 || h->p > 16 ||
        scrypt_maxmem((uint64_t)1 << h->ln, h->r, h->p) > ((uint64_t)256 << 20))
        return false;
    const char *dollar = strchr(s, '$');
    if (dollar == NULL)
        return false;
    const char *hash = dollar + 1;
    size_t hashchars = strlen(hash);
    if (gw_base64_decode(s, (size_t)(dollar - s), GW_BASE64_URL | GW_BASE64_NOPAD, h->salt, sizeof(h->salt),
                         &h->saltlen) != 0 ||
        gw_base64_decode(hash, hashchars, GW_BASE64_URL | GW_BASE64_NOPAD, h->hash, sizeof(h->hash), &h->hashlen) != 0)
        return false;
    return h->saltlen >= 8 && h->hashlen >= 16;
}

char *gw_auth_password_hash(const char *password, size_t len, gw_err_t *err)
{
    if (len < GW_AUTH_PASSWORD_MIN || len > GW_AUTH_PASSWORD_MAX) {
        gw_err_set(err, gw_err_invalid_argument, 400, "the password must be %d to %d bytes long", GW_AUTH_PASSWORD_MIN,
                   GW_AUTH_PASSWORD_MAX);
        return NULL;
    }
    size_t distinct = 0;
    bool seen[256] = {false};
    for (size_t i = 0; i != len; ++i)
        if (!seen[(unsigned char)password[i]])
            seen[(unsigned char)password[i]] = true, ++distinct;
    if (distinct < 4) {
        gw_err_set(err, gw_err_invalid_argument, 400,
                   "the password is too weak: it has fewer than 4 distinct characters");
        return NULL;
    }
    unsigned char salt[PW_SALT], hash[PW_HASH];
    gw_crypto_random(salt, sizeof(salt));
    uint64_t n = (uint64_t)1 << PW_LN;
    if (gw_crypto_scrypt(password, len, salt, sizeof(salt), n, PW_R, PW_P, scrypt_maxmem(n, PW_R, PW_P), hash,
                         sizeof(hash)) != 0) {
        gw_err_set(err, gw_err_internal, 500, "the password could not be hashed (scrypt failed)");
        return NULL;
    }
    char salt64[GW_BASE64_ENCODED_SIZE(PW_SALT)], hash64[GW_BASE64_ENCODED_SIZE(PW_HASH)];
    gw_base64_encode(salt, sizeof(salt), GW_BASE64_URL | GW_BASE64_NOPAD, salt64);
    gw_base64_encode(hash, sizeof(hash), GW_BASE64_URL | GW_BASE64_NOPAD, hash64);
    explicit_bzero(hash, sizeof(hash));
    char *out = gw_xmalloc(sizeof(PW_PREFIX) + 32 + sizeof(salt64) + sizeof(hash64));
    sprintf(out, PW_PREFIX "ln=%d,r=%d,p=%d$%s$%s", PW_LN, PW_R, PW_P, salt64, hash64);
    explicit_bzero(hash64, sizeof(hash64));
    return out;
}

bool gw_auth_password_verify(const char *stored, const char *password, size_t len, bool *rehash)
{
    bool match = false;
    pw_hash_t h;
    unsigned char got[64];
    if (rehash != NULL)
        *rehash = false;
    bool parsed = parse_pw_hash(stored, &h);
    if (!parsed) {
        /* unknown user or unreadable row: spend the time of a real check, so the time does not tell which */
        h = (pw_hash_t){.ln = PW_LN, .r = PW_R, .p = PW_P, .saltlen = PW_SALT, .hashlen = PW_HASH};
    }
    if (len > GW_AUTH_PASSWORD_MAX)
        return false;
    uint64_t n = (uint64_t)1 << h.ln;
    if (gw_crypto_scrypt(password, len, h.salt, h.saltlen, n, h.r, h.p, scrypt_maxmem(n, h.r, h.p), got, h.hashlen) ==
            0 &&
        parsed)
        match = gw_crypto_equal(got, h.hash, h.hashlen);
    explicit_bzero(got, sizeof(got));
    if (match && rehash != NULL)
        *rehash = h.ln < PW_LN || h.r < PW_R || h.p < PW_P || h.saltlen < PW_SALT || h.hashlen < PW_HASH;
    return match;
}
