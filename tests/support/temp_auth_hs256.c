/* SPDX-License-Identifier: MIT */
/*
 * temp_auth_hs256.c: TEMPORARY TEST-ONLY stand-in for gateway/domain/auth.c, linked into the test binary
 * settled_temp_auth (never into settled) while the real auth module is not merged yet, so the guard's integration
 * tests can run. It verifies HS256 access tokens in the format auth.h describes, with the secret from the
 * environment variable TEMP_AUTH_HS256_SECRET, iss "settled" and aud "settled-portal". Delete this file (and its
 * target in tests/CMakeLists.txt) once auth.c is on main.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "auth.h"
#include "crypto.h"
#include "log.h"

struct st_gw_auth_t {
    char *secret;
};

gw_auth_t *gw_auth_create(const gw_config_t *cfg, gw_err_t *err)
{
    const char *secret = getenv("TEMP_AUTH_HS256_SECRET");
    if (secret == NULL || strlen(secret) < 32) {
        gw_err_set(err, gw_err_config_invalid, 500, "TEMP_AUTH_HS256_SECRET (test verifier) is not set");
        return NULL;
    }
    gw_log(GW_LOG_WARN, "TEMPORARY test-only HS256 verifier in use (tests/support/temp_auth_hs256.c)");
    gw_auth_t *a = calloc(1, sizeof(*a));
    a->secret = strdup(secret);
    return a;
}

void gw_auth_destroy(gw_auth_t *auth)
{
    if (auth != NULL)
        free(auth->secret);
    free(auth);
}

int64_t gw_auth_access_ttl(const gw_auth_t *auth)
{
    return 900;
}

static json_t *decode_part(const char *s, size_t len)
{
    char buf[2048];
    size_t n;
    if (gw_base64_decode(s, len, GW_BASE64_URL | GW_BASE64_NOPAD, buf, sizeof(buf), &n) != 0)
        return NULL;
    return json_loadb(buf, n, JSON_REJECT_DUPLICATES, NULL);
}

static int64_t id_claim(json_t *payload, const char *name)
{
    const char *s = json_string_value(json_object_get(payload, name));
    if (s == NULL || *s == '\0')
        return -1;
    char *end;
    long long v = strtoll(s, &end, 10);
    return *end == '\0' && v >= 0 ? v : -1;
}

int gw_auth_verify_access(const gw_auth_t *auth, const char *token, size_t len, int64_t now, gw_claims_t *out,
                          gw_err_t *err)
{
    const char *d1 = memchr(token, '.', len),
               *d2 = d1 != NULL ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (d1 == NULL || d2 == NULL)
        return gw_err_set(err, gw_err_unauthenticated, 401, "malformed token");
    cn_str_t parts[] = {{token, (size_t)(d2 - token)}};
    unsigned char mac[32], sig[64];
    size_t siglen;
    if (gw_crypto_hmac_sha256(auth->secret, strlen(auth->secret), parts, 1, mac) != 0 ||
        gw_base64_decode(d2 + 1, len - (size_t)(d2 + 1 - token), GW_BASE64_URL | GW_BASE64_NOPAD, sig, sizeof(sig),
                         &siglen) != 0 ||
        siglen != 32 || !gw_crypto_equal(mac, sig, 32))
        return gw_err_set(err, gw_err_unauthenticated, 401, "bad signature");
    json_t *header = decode_part(token, (size_t)(d1 - token)), *payload = decode_part(d1 + 1, (size_t)(d2 - d1 - 1));
    int rc = -1;
    if (header == NULL || payload == NULL ||
        strcmp(json_string_value(json_object_get(header, "alg")) ?: "", "HS256") != 0) {
        gw_err_set(err, gw_err_unauthenticated, 401, "bad header");
        goto Exit;
    }
    const char *iss = json_string_value(json_object_get(payload, "iss")),
               *aud = json_string_value(json_object_get(payload, "aud")),
               *role = json_string_value(json_object_get(payload, "role")),
               *jti = json_string_value(json_object_get(payload, "jti"));
    json_t *exp = json_object_get(payload, "exp"), *nbf = json_object_get(payload, "nbf"),
           *iat = json_object_get(payload, "iat");
    if (iss == NULL || strcmp(iss, "settled") != 0 || aud == NULL || strcmp(aud, "settled-portal") != 0 ||
        role == NULL || jti == NULL || strlen(jti) >= sizeof(out->jti) || !json_is_integer(exp) ||
        !json_is_integer(nbf) || !json_is_integer(iat)) {
        gw_err_set(err, gw_err_unauthenticated, 401, "bad claims");
        goto Exit;
    }
    if (json_integer_value(exp) + 30 <= now || json_integer_value(nbf) - 30 > now) {
        gw_err_set(err, gw_err_unauthenticated, 401, "expired or not yet valid");
        goto Exit;
    }
    memset(out, 0, sizeof(*out));
    out->role = strcmp(role, "admin") == 0    ? GW_ROLE_ADMIN
                : strcmp(role, "client") == 0 ? GW_ROLE_CLIENT
                                              : GW_ROLE_NONE;
    out->user_id = id_claim(payload, "sub");
    out->organisation_id = id_claim(payload, "org");
    out->customer_id = out->role == GW_ROLE_CLIENT ? id_claim(payload, "customer") : 0;
    if (out->role == GW_ROLE_NONE || out->user_id < 0 || out->organisation_id < 0 || out->customer_id < 0) {
        gw_err_set(err, gw_err_unauthenticated, 401, "bad claims");
        goto Exit;
    }
    strcpy(out->jti, jti);
    out->exp = json_integer_value(exp);
    out->nbf = json_integer_value(nbf);
    out->iat = json_integer_value(iat);
    rc = 0;
Exit:
    json_decref(header);
    json_decref(payload);
    return rc;
}
