/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/domain/auth.c: access tokens round-trip with HS256, RS256 and ES256, and every forged or stale
 * token fails: alg "none", another HS algorithm with the same secret, HS256 signed with the RS256 public key's PEM
 * as the HMAC secret, a wrong key, expired, not yet valid (and the 30 s leeway either side), wrong iss or aud, a
 * tampered payload, missing and mistyped claims, a client without a customer and an admin with one. The forged
 * tokens are made by hand here (HMAC-SHA256 from infra/crypto, not libjwt), and a hand-made good token is accepted,
 * so a rejection is the check's doing and not the signer's. Then the settings gw_auth_create refuses, refresh
 * tokens and their digests, and scrypt password hashes: verify, wrong password, tampering, parameters read from the
 * string, the rehash flag, the password rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "auth.h"
#include "crypto.h"

#define SECRET "0123456789abcdef0123456789abcdef-test"
#define NOW 1800000000

static char tmpdir[256];

/* ---- helpers ---- */

static gw_config_t hs_config(void)
{
    gw_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.jwt_secret = SECRET;
    cfg.jwt_alg = "HS256";
    cfg.jwt_issuer = "settled";
    cfg.jwt_audience = "settled-portal";
    cfg.access_token_ttl = 900;
    return cfg;
}

static gw_auth_t *hs_auth(void)
{
    gw_config_t cfg = hs_config();
    gw_err_t err = GW_ERR_INIT;
    gw_auth_t *auth = gw_auth_create(&cfg, &err);
    if (auth == NULL)
        fail_msg("gw_auth_create: %s", err.detail);
    return auth;
}

static char *b64url(const char *s)
{
    char *out = malloc(GW_BASE64_ENCODED_SIZE(strlen(s)));
    gw_base64_encode(s, strlen(s), GW_BASE64_URL | GW_BASE64_NOPAD, out);
    return out;
}

/* A token made by hand: base64url(header).base64url(claims).sig, where sig is HMAC-SHA256 under key (keylen bytes)
 * when key is not NULL, else the literal text nosig. */
static char *forge(const char *header, const char *claims, const void *key, size_t keylen, const char *nosig)
{
    char *h = b64url(header), *c = b64url(claims);
    size_t n = strlen(h) + strlen(c) + 128;
    char *tok = malloc(n);
    snprintf(tok, n, "%s.%s", h, c);
    if (key != NULL) {
        unsigned char mac[32];
        cn_str_t part = {tok, strlen(tok)};
        assert_int_equal(gw_crypto_hmac_sha256(key, keylen, &part, 1, mac), 0);
        char sig[GW_BASE64_ENCODED_SIZE(32)];
        gw_base64_encode(mac, 32, GW_BASE64_URL | GW_BASE64_NOPAD, sig);
        strcat(tok, ".");
        strcat(tok, sig);
    } else {
        strcat(tok, ".");
        strcat(tok, nosig != NULL ? nosig : "");
    }
    free(h);
    free(c);
    return tok;
}

#define HS256_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
/* the claims of a good admin token at NOW, with one field's text replaced by what the caller gives */
static char *claims(const char *iss, const char *aud, const char *sub, const char *org, const char *role,
                    const char *customer, const char *iat, const char *nbf, const char *exp)
{
    char *out = malloc(1024), *p = out;
    p += sprintf(p, "{");
#define FIELD(name, v)                                                                                                 \
    if (v != NULL)                                                                                                     \
    p += sprintf(p, "%s\"" name "\":%s", p == out + 1 ? "" : ",", v)
    FIELD("iss", iss);
    FIELD("aud", aud);
    FIELD("sub", sub);
    FIELD("org", org);
    FIELD("role", role);
    FIELD("customer", customer);
    FIELD("jti", "\"abcDEF012-_x\"");
    FIELD("iat", iat);
    FIELD("nbf", nbf);
    FIELD("exp", exp);
#undef FIELD
    sprintf(p, "}");
    return out;
}

#define GOOD_ISS "\"settled\""
#define GOOD_AUD "\"settled-portal\""
#define T_NOW "1800000000"
#define T_EXP "1800000900"
#define ADMIN(...) claims(GOOD_ISS, GOOD_AUD, "\"7\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP)

static int verify(gw_auth_t *auth, const char *tok, int64_t now, gw_claims_t *c, gw_err_t *err)
{
    gw_err_clear(err);
    return gw_auth_verify_access(auth, tok, strlen(tok), now, c, err);
}

/* Expects tok to be refused, with a detail that contains why (so the right check refused it). */
static void refused(gw_auth_t *auth, const char *tok, int64_t now, const char *why)
{
    gw_claims_t c;
    gw_err_t err = GW_ERR_INIT;
    memset(&c, 0x5a, sizeof(c));
    int rc = verify(auth, tok, now, &c, &err);
    if (rc != -1)
        fail_msg("accepted, expected a refusal for \"%s\": %s", why, tok);
    assert_ptr_equal(err.code, gw_err_invalid_argument);
    assert_int_equal(err.status, 401);
    if (strstr(err.detail, why) == NULL)
        fail_msg("refused for \"%s\", expected \"%s\"", err.detail, why);
    assert_int_equal(c.user_id, 0); /* nothing of a refused token is left in *out */
    assert_int_equal(c.role, GW_ROLE_NONE);
}

static void accepted(gw_auth_t *auth, const char *tok, int64_t now, gw_claims_t *c)
{
    gw_err_t err = GW_ERR_INIT;
    if (verify(auth, tok, now, c, &err) != 0)
        fail_msg("refused (%s): %s", err.detail, tok);
}

/* Writes a fresh key (RSA 2048 or EC P-256) as PEM files <tmpdir>/<name>.key and <name>.pub; the public PEM text
 * comes back in *pub (malloc'd). */
static void write_key(const char *name, bool rsa, char **pub)
{
    EVP_PKEY *key = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
    assert_non_null(key);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.key", tmpdir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(fp);
    snprintf(path, sizeof(path), "%s/%s.pub", tmpdir, name);
    fp = fopen(path, "w+");
    assert_non_null(fp);
    assert_int_equal(PEM_write_PUBKEY(fp, key), 1);
    long n = ftell(fp);
    rewind(fp);
    *pub = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(*pub, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    EVP_PKEY_free(key);
}

static char *path_of(const char *file)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", tmpdir, file);
    return buf[i];
}

static gw_auth_t *key_auth(const char *alg, const char *priv, const char *pub, gw_err_t *err)
{
    gw_config_t cfg = hs_config();
    cfg.jwt_secret = NULL;
    cfg.jwt_alg = (char *)alg;
    cfg.jwt_private_key_file = priv != NULL ? path_of(priv) : NULL;
    cfg.jwt_public_key_file = pub != NULL ? path_of(pub) : NULL;
    return gw_auth_create(&cfg, err);
}

static int setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "%s/settled-auth-XXXXXX", getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    char *pub;
    write_key("rsa", true, &pub);
    free(pub);
    write_key("rsa2", true, &pub);
    free(pub);
    write_key("ec", false, &pub);
    free(pub);
    EVP_PKEY *small = EVP_RSA_gen(1024);
    FILE *fp = fopen(path_of("rsa1024.key"), "w");
    PEM_write_PrivateKey(fp, small, NULL, NULL, 0, NULL, NULL);
    fclose(fp);
    EVP_PKEY_free(small);
    fp = fopen(path_of("junk.key"), "w");
    fputs("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", fp);
    fclose(fp);
    return 0;
}

static int teardown(void **state)
{
    const char *files[] = {"rsa.key", "rsa.pub", "rsa2.key", "rsa2.pub", "ec.key", "ec.pub", "rsa1024.key", "junk.key"};
    for (size_t i = 0; i != sizeof(files) / sizeof(files[0]); ++i)
        unlink(path_of(files[i]));
    rmdir(tmpdir);
    return 0;
}

/* ---- access tokens ---- */

static void round_trip(gw_auth_t *auth)
{
    gw_err_t err = GW_ERR_INIT;
    gw_claims_t in = {.user_id = 42, .organisation_id = 9, .role = GW_ROLE_CLIENT, .customer_id = 9000000000123};
    char *tok = gw_auth_issue_access(auth, &in, NOW, &err);
    assert_non_null(tok);
    assert_int_equal(in.iat, NOW);
    assert_int_equal(in.nbf, NOW);
    assert_int_equal(in.exp, NOW + gw_auth_access_ttl(auth));
    assert_int_equal(strlen(in.jti), 22);
    gw_claims_t out;
    accepted(auth, tok, NOW + 1, &out);
    assert_int_equal(out.user_id, 42);
    assert_int_equal(out.organisation_id, 9);
    assert_int_equal(out.role, GW_ROLE_CLIENT);
    assert_int_equal(out.customer_id, 9000000000123);
    assert_string_equal(out.jti, in.jti);
    assert_int_equal(out.iat, NOW);
    assert_int_equal(out.exp, NOW + 900);
    /* the length is honoured: the token need not be NUL-terminated */
    size_t n = strlen(tok);
    char *padded = malloc(n + 8);
    memcpy(padded, tok, n);
    memcpy(padded + n, "garbage", 8);
    assert_int_equal(gw_auth_verify_access(auth, padded, n, NOW, &out, &err), 0);
    free(padded);
    /* an admin */
    gw_claims_t admin = {.user_id = 1, .organisation_id = 2, .role = GW_ROLE_ADMIN};
    char *tok2 = gw_auth_issue_access(auth, &admin, NOW, &err);
    assert_non_null(tok2);
    accepted(auth, tok2, NOW, &out);
    assert_int_equal(out.role, GW_ROLE_ADMIN);
    assert_int_equal(out.customer_id, 0);
    assert_string_not_equal(admin.jti, in.jti); /* a fresh jti per token */
    free(tok);
    free(tok2);
}

static void test_round_trip_hs256(void **state)
{
    gw_auth_t *auth = hs_auth();
    assert_int_equal(gw_auth_access_ttl(auth), 900);
    assert_int_equal(gw_auth_refresh_ttl(auth), 2592000);
    round_trip(auth);
    gw_auth_destroy(auth);
}

static void test_round_trip_rs256_and_es256(void **state)
{
    gw_err_t err = GW_ERR_INIT;
    gw_auth_t *rs = key_auth("RS256", "rsa.key", NULL, &err);
    if (rs == NULL)
        fail_msg("RS256: %s", err.detail);
    round_trip(rs);
    gw_auth_t *rs_pub = key_auth("RS256", "rsa.key", "rsa.pub", &err); /* the public key given as well */
    assert_non_null(rs_pub);
    gw_auth_t *es = key_auth("ES256", "ec.key", "ec.pub", &err);
    if (es == NULL)
        fail_msg("ES256: %s", err.detail);
    round_trip(es);
    /* a token of one key does not pass another key or algorithm */
    gw_auth_t *rs2 = key_auth("RS256", "rsa2.key", NULL, &err);
    assert_non_null(rs2);
    gw_claims_t c = {.user_id = 1, .organisation_id = 2, .role = GW_ROLE_ADMIN};
    char *tok = gw_auth_issue_access(rs, &c, NOW, &err);
    accepted(rs_pub, tok, NOW, &c);
    refused(rs2, tok, NOW, "bad signature");
    refused(es, tok, NOW, "access token:");
    gw_auth_t *hs = hs_auth();
    refused(hs, tok, NOW, "access token:");
    free(tok);
    gw_auth_destroy(hs);
    gw_auth_destroy(rs);
    gw_auth_destroy(rs_pub);
    gw_auth_destroy(rs2);
    gw_auth_destroy(es);
}

/* The hand-made signer makes tokens the verifier accepts: without this, the refusals below prove nothing. */
static void test_hand_made_good_token_is_accepted(void **state)
{
    gw_auth_t *auth = hs_auth();
    char *c = ADMIN();
    char *tok = forge(HS256_HEADER, c, SECRET, strlen(SECRET), NULL);
    gw_claims_t out;
    accepted(auth, tok, NOW, &out);
    assert_int_equal(out.user_id, 7);
    assert_int_equal(out.organisation_id, 3);
    assert_string_equal(out.jti, "abcDEF012-_x");
    free(tok);
    free(c);
    c = claims(GOOD_ISS, GOOD_AUD, "\"7\"", "\"3\"", "\"client\"", "\"11\"", T_NOW, T_NOW, T_EXP);
    tok = forge(HS256_HEADER, c, SECRET, strlen(SECRET), NULL);
    accepted(auth, tok, NOW, &out);
    assert_int_equal(out.customer_id, 11);
    free(tok);
    free(c);
    gw_auth_destroy(auth);
}

static void test_alg_none_is_refused(void **state)
{
    gw_auth_t *auth = hs_auth();
    char *c = ADMIN();
    const char *headers[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"none\"}", "{\"alg\":\"None\"}",
                             "{\"alg\":\"NONE\"}", "{\"typ\":\"JWT\"}"};
    for (size_t i = 0; i != sizeof(headers) / sizeof(headers[0]); ++i) {
        char *empty = forge(headers[i], c, NULL, 0, "");
        refused(auth, empty, NOW, "access token:");
        free(empty);
        char *fake = forge(headers[i], c, NULL, 0, "c2lnbmF0dXJl");
        refused(auth, fake, NOW, "access token:");
        free(fake);
        char *hmac = forge(headers[i], c, SECRET, strlen(SECRET), NULL); /* even with a real MAC */
        refused(auth, hmac, NOW, "access token:");
        free(hmac);
    }
    /* no signature part at all */
    char *h = b64url("{\"alg\":\"none\"}"), *p = b64url(c), two[1024];
    snprintf(two, sizeof(two), "%s.%s", h, p);
    refused(auth, two, NOW, "access token:");
    free(h);
    free(p);
    free(c);
    gw_auth_destroy(auth);
}

/* HS384 and HS512 under the same secret pass libjwt's signature check (libjwt signs them here): only the alg check
 * refuses them. */
static void test_other_hs_alg_with_the_same_secret_is_refused(void **state)
{
    gw_auth_t *auth = hs_auth();
    const jwt_alg_t algs[] = {JWT_ALG_HS384, JWT_ALG_HS512};
    const char *why[] = {"alg HS384 is not the configured HS256", "alg HS512 is not the configured HS256"};
    for (size_t i = 0; i != 2; ++i) {
        jwt_t *jwt = NULL;
        assert_int_equal(jwt_new(&jwt), 0);
        assert_int_equal(jwt_add_grants_json(jwt, "{\"iss\":\"settled\",\"aud\":\"settled-portal\",\"sub\":\"7\","
                                                  "\"org\":\"3\",\"role\":\"admin\",\"jti\":\"abc\",\"iat\":1800000000,"
                                                  "\"nbf\":1800000000,\"exp\":1800000900}"),
                         0);
        assert_int_equal(jwt_set_alg(jwt, algs[i], (const unsigned char *)SECRET, (int)strlen(SECRET)), 0);
        char *tok = jwt_encode_str(jwt);
        assert_non_null(tok);
        refused(auth, tok, NOW, why[i]);
        free(tok);
        jwt_free(jwt);
    }
    gw_auth_destroy(auth);
}

/* The classic key confusion: the server is RS256, its public key is public, and the attacker HMACs with the PEM
 * text as the secret. libjwt checks that HMAC and passes it; the alg check must refuse it. */
static void test_hs256_signed_with_the_rs256_public_key_is_refused(void **state)
{
    gw_err_t err = GW_ERR_INIT;
    gw_auth_t *auth = key_auth("RS256", "rsa.key", NULL, &err);
    assert_non_null(auth);
    FILE *fp = fopen(path_of("rsa.pub"), "r");
    char pem[4096];
    size_t n = fread(pem, 1, sizeof(pem), fp);
    fclose(fp);
    char *c = ADMIN();
    char *tok = forge(HS256_HEADER, c, pem, n, NULL);
    /* refused by the alg check, i.e. after the signature passed: the attack is real and the check stops it */
    refused(auth, tok, NOW, "alg HS256 is not the configured RS256");
    free(tok);
    free(c);
    gw_auth_destroy(auth);
}

static void test_wrong_key_is_refused(void **state)
{
    gw_auth_t *auth = hs_auth();
    char *c = ADMIN();
    const char *other = "0123456789abcdef0123456789abcdef-TEST";
    char *tok = forge(HS256_HEADER, c, other, strlen(other), NULL);
    refused(auth, tok, NOW, "bad signature");
    free(tok);
    /* the secret with one byte less */
    tok = forge(HS256_HEADER, c, SECRET, strlen(SECRET) - 1, NULL);
    refused(auth, tok, NOW, "bad signature");
    free(tok);
    free(c);
    gw_auth_destroy(auth);
}

static void test_expired_and_not_yet_valid(void **state)
{
    gw_auth_t *auth = hs_auth();
    char *c = ADMIN();
    char *tok = forge(HS256_HEADER, c, SECRET, strlen(SECRET), NULL);
    gw_claims_t out;
    accepted(auth, tok, NOW + 900 + 29, &out); /* within the leeway after exp */
    refused(auth, tok, NOW + 900 + 30, "expired");
    refused(auth, tok, NOW + 86400, "expired");
    accepted(auth, tok, NOW - 30, &out); /* within the leeway before nbf */
    refused(auth, tok, NOW - 31, "not valid yet");
    free(tok);
    free(c);
    /* nbf in the future, iat now */
    c = claims(GOOD_ISS, GOOD_AUD, "\"7\"", "\"3\"", "\"admin\"", NULL, T_NOW, "1800000100", "1800000900");
    tok = forge(HS256_HEADER, c, SECRET, strlen(SECRET), NULL);
    refused(auth, tok, NOW, "not valid yet");
    accepted(auth, tok, NOW + 100, &out);
    free(tok);
    free(c);
    /* exp not after nbf */
    c = claims(GOOD_ISS, GOOD_AUD, "\"7\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_NOW);
    tok = forge(HS256_HEADER, c, SECRET, strlen(SECRET), NULL);
    refused(auth, tok, NOW, "exp is not after nbf");
    free(tok);
    free(c);
    /* an issued token expires after the TTL */
    gw_claims_t in = {.user_id = 1, .organisation_id = 1, .role = GW_ROLE_ADMIN};
    gw_err_t err = GW_ERR_INIT;
    tok = gw_auth_issue_access(auth, &in, NOW, &err);
    refused(auth, tok, NOW + 900 + 30, "expired");
    free(tok);
    gw_auth_destroy(auth);
}

static void test_wrong_iss_and_aud(void **state)
{
    gw_auth_t *auth = hs_auth();
    struct {
        const char *iss, *aud, *why;
    } cases[] = {
        {"\"settled2\"", GOOD_AUD, "iss"},
        {"\"Settled\"", GOOD_AUD, "iss"},
        {NULL, GOOD_AUD, "iss"},
        {"1", GOOD_AUD, "iss"},
        {GOOD_ISS, "\"settled-admin\"", "aud"},
        {GOOD_ISS, NULL, "aud"},
        {GOOD_ISS, "[\"settled-portal\"]", "aud"},
        {GOOD_ISS, "\"settled-portal \"", "aud"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        char *c = claims(cases[i].iss, cases[i].aud, "\"7\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP);
        char *tok = forge(HS256_HEADER, c, SECRET, strlen(SECRET), NULL);
        refused(auth, tok, NOW, cases[i].why);
        free(tok);
        free(c);
    }
    /* a token of another configuration's issuer */
    gw_config_t cfg = hs_config();
    cfg.jwt_issuer = "elsewhere";
    gw_err_t err = GW_ERR_INIT;
    gw_auth_t *other = gw_auth_create(&cfg, &err);
    gw_claims_t in = {.user_id = 1, .organisation_id = 1, .role = GW_ROLE_ADMIN};
    char *tok = gw_auth_issue_access(other, &in, NOW, &err);
    refused(auth, tok, NOW, "iss");
    free(tok);
    gw_auth_destroy(other);
    gw_auth_destroy(auth);
}

static void test_tampered_payload_is_refused(void **state)
{
    gw_auth_t *auth = hs_auth();
    gw_err_t err = GW_ERR_INIT;
    gw_claims_t in = {.user_id = 5, .organisation_id = 1, .role = GW_ROLE_CLIENT, .customer_id = 8};
    char *tok = gw_auth_issue_access(auth, &in, NOW, &err);
    char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
    /* the payload replaced by an admin's of the same organisation, the signature kept */
    char *c = ADMIN();
    char *p = b64url(c);
    char forged[2048];
    snprintf(forged, sizeof(forged), "%.*s.%s%s", (int)(dot1 - tok), tok, p, dot2);
    refused(auth, forged, NOW, "bad signature");
    /* one character of the payload changed, and one of the signature */
    char *copy = strdup(tok);
    copy[dot1 - tok + 5] ^= 1;
    refused(auth, copy, NOW, "access token:");
    strcpy(copy, tok);
    copy[strlen(copy) - 3] = copy[strlen(copy) - 3] == 'A' ? 'B' : 'A';
    refused(auth, copy, NOW, "bad signature");
    /* the signature cut off */
    strcpy(copy, tok);
    copy[dot2 - tok + 1] = '\0';
    refused(auth, copy, NOW, "bad signature");
    free(copy);
    free(p);
    free(c);
    free(tok);
    gw_auth_destroy(auth);
}

static void test_missing_and_mistyped_claims(void **state)
{
    gw_auth_t *auth = hs_auth();
    struct {
        const char *sub, *org, *role, *customer, *iat, *nbf, *exp, *why;
    } cases[] = {
        {NULL, "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "sub"},
        {"\"7\"", NULL, "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "org"},
        {"7", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "sub"}, /* a number, not a string */
        {"\"7\"", "3", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "org"},
        {"\"07\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "sub"},
        {"\"0\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "sub"},
        {"\"-7\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "sub"},
        {"\"7 \"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "sub"},
        {"\"7x\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "sub"},
        {"\"\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "sub"},
        {"\"9223372036854775808\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, T_EXP, "sub"}, /* INT64_MAX + 1 */
        {"\"7\"", "\"3\"", NULL, NULL, T_NOW, T_NOW, T_EXP, "role"},
        {"\"7\"", "\"3\"", "\"root\"", NULL, T_NOW, T_NOW, T_EXP, "role"},
        {"\"7\"", "\"3\"", "\"Admin\"", NULL, T_NOW, T_NOW, T_EXP, "role"},
        {"\"7\"", "\"3\"", "2", NULL, T_NOW, T_NOW, T_EXP, "role"},
        {"\"7\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, NULL, "exp"},
        {"\"7\"", "\"3\"", "\"admin\"", NULL, T_NOW, NULL, T_EXP, "nbf"},
        {"\"7\"", "\"3\"", "\"admin\"", NULL, NULL, T_NOW, T_EXP, "iat"},
        {"\"7\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, "\"" T_EXP "\"", "exp"}, /* a string */
        {"\"7\"", "\"3\"", "\"admin\"", NULL, T_NOW, "\"" T_NOW "\"", T_EXP, "nbf"},
        {"\"7\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, "1800000900.5", "exp"}, /* a real */
        {"\"7\"", "\"3\"", "\"admin\"", NULL, T_NOW, T_NOW, "null", "exp"},
        /* a client must have a customer, an admin must not */
        {"\"7\"", "\"3\"", "\"client\"", NULL, T_NOW, T_NOW, T_EXP, "customer"},
        {"\"7\"", "\"3\"", "\"client\"", "11", T_NOW, T_NOW, T_EXP, "customer"},
        {"\"7\"", "\"3\"", "\"client\"", "\"0\"", T_NOW, T_NOW, T_EXP, "customer"},
        {"\"7\"", "\"3\"", "\"client\"", "null", T_NOW, T_NOW, T_EXP, "customer"},
        {"\"7\"", "\"3\"", "\"admin\"", "\"11\"", T_NOW, T_NOW, T_EXP, "customer"},
        {"\"7\"", "\"3\"", "\"admin\"", "null", T_NOW, T_NOW, T_EXP, "customer"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        char *c = claims(GOOD_ISS, GOOD_AUD, cases[i].sub, cases[i].org, cases[i].role, cases[i].customer, cases[i].iat,
                         cases[i].nbf, cases[i].exp);
        char *tok = forge(HS256_HEADER, c, SECRET, strlen(SECRET), NULL);
        refused(auth, tok, NOW, cases[i].why);
        free(tok);
        free(c);
    }
    /* jti missing or not base64url */
    const char *bad_jti[] = {"{\"iss\":\"settled\",\"aud\":\"settled-portal\",\"sub\":\"7\",\"org\":\"3\",\"role\":"
                             "\"admin\",\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}",
                             "{\"iss\":\"settled\",\"aud\":\"settled-portal\",\"sub\":\"7\",\"org\":\"3\",\"role\":"
                             "\"admin\",\"jti\":\"a b\",\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}",
                             "{\"iss\":\"settled\",\"aud\":\"settled-portal\",\"sub\":\"7\",\"org\":\"3\",\"role\":"
                             "\"admin\",\"jti\":7,\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}"};
    for (size_t i = 0; i != 3; ++i) {
        char *tok = forge(HS256_HEADER, bad_jti[i], SECRET, strlen(SECRET), NULL);
        refused(auth, tok, NOW, "jti");
        free(tok);
    }
    /* not a JWT at all */
    const char *junk[] = {"", "a", "a.b", "a.b.c", "...", "eyJhbGciOiJIUzI1NiJ9..", "Bearer x.y.z"};
    for (size_t i = 0; i != sizeof(junk) / sizeof(junk[0]); ++i)
        refused(auth, junk[i], NOW, "access token:");
    char *c = ADMIN(), *good = forge(HS256_HEADER, c, SECRET, strlen(SECRET), NULL);
    char withnul[1024];
    size_t n = strlen(good);
    memcpy(withnul, good, n + 1);
    withnul[10] = '\0';
    gw_claims_t out;
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_auth_verify_access(auth, withnul, n, NOW, &out, &err), -1);
    char *big = malloc(5000);
    memset(big, 'a', 4999);
    big[4999] = '\0';
    refused(auth, big, NOW, "too long");
    free(big);
    free(good);
    free(c);
    gw_auth_destroy(auth);
}

static void test_issue_refuses_inconsistent_claims(void **state)
{
    gw_auth_t *auth = hs_auth();
    gw_claims_t bad[] = {
        {.user_id = 0, .organisation_id = 1, .role = GW_ROLE_ADMIN},
        {.user_id = 1, .organisation_id = 0, .role = GW_ROLE_ADMIN},
        {.user_id = 1, .organisation_id = 1, .role = GW_ROLE_NONE},
        {.user_id = 1, .organisation_id = 1, .role = GW_ROLE_CLIENT},                  /* no customer */
        {.user_id = 1, .organisation_id = 1, .role = GW_ROLE_ADMIN, .customer_id = 4}, /* an admin with one */
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        gw_err_t err = GW_ERR_INIT;
        assert_null(gw_auth_issue_access(auth, &bad[i], NOW, &err));
        assert_ptr_equal(err.code, gw_err_internal);
    }
    gw_auth_destroy(auth);
}

static void create_fails(gw_config_t *cfg, const char *why)
{
    gw_err_t err = GW_ERR_INIT;
    gw_auth_t *auth = gw_auth_create(cfg, &err);
    if (auth != NULL)
        fail_msg("created, expected \"%s\"", why);
    assert_ptr_equal(err.code, gw_err_config_invalid);
    if (strstr(err.detail, why) == NULL)
        fail_msg("failed with \"%s\", expected \"%s\"", err.detail, why);
}

static void test_create_refuses_bad_settings(void **state)
{
    gw_config_t cfg = hs_config();
    cfg.jwt_secret = NULL;
    create_fails(&cfg, "SETTLED_JWT_SECRET: required");
    cfg.jwt_secret = "0123456789abcdef0123456789abcde"; /* 31 bytes */
    create_fails(&cfg, "at least 32 bytes");
    cfg = hs_config();
    cfg.jwt_alg = "none";
    create_fails(&cfg, "SETTLED_JWT_ALG");
    cfg.jwt_alg = "HS384";
    create_fails(&cfg, "SETTLED_JWT_ALG");
    cfg = hs_config();
    cfg.jwt_secret = NULL;
    cfg.jwt_alg = "RS256";
    create_fails(&cfg, "SETTLED_JWT_PRIVATE_KEY_FILE: required");
    cfg.jwt_private_key_file = path_of("missing.key");
    create_fails(&cfg, "cannot open");
    cfg.jwt_private_key_file = path_of("ec.key");
    create_fails(&cfg, "not an RSA key");
    cfg.jwt_private_key_file = path_of("rsa1024.key");
    create_fails(&cfg, "at least 2048 bits");
    cfg.jwt_private_key_file = path_of("junk.key");
    create_fails(&cfg, "not an RSA key");
    cfg.jwt_private_key_file = path_of("rsa.pub"); /* a public key where the private one belongs */
    create_fails(&cfg, "not an RSA key");
    cfg.jwt_private_key_file = path_of("rsa.key");
    cfg.jwt_public_key_file = path_of("rsa2.pub");
    create_fails(&cfg, "not the public half");
    cfg.jwt_public_key_file = path_of("ec.pub");
    create_fails(&cfg, "SETTLED_JWT_PUBLIC_KEY_FILE");
    cfg.jwt_alg = "ES256";
    cfg.jwt_private_key_file = path_of("rsa.key");
    cfg.jwt_public_key_file = NULL;
    create_fails(&cfg, "not an EC key on P-256");
    /* defaults: a zeroed config with a secret is HS256, issuer settled, audience settled-portal, 900 s */
    memset(&cfg, 0, sizeof(cfg));
    cfg.jwt_secret = SECRET;
    gw_err_t err = GW_ERR_INIT;
    gw_auth_t *auth = gw_auth_create(&cfg, &err);
    assert_non_null(auth);
    assert_int_equal(gw_auth_access_ttl(auth), 900);
    char *c = ADMIN(), *tok = forge(HS256_HEADER, c, SECRET, strlen(SECRET), NULL);
    gw_claims_t out;
    accepted(auth, tok, NOW, &out);
    free(tok);
    free(c);
    gw_auth_destroy(auth);
}

/* ---- refresh tokens ---- */

static void test_refresh_tokens(void **state)
{
    char tok[64], digest[65], again[65], tok2[64], digest2[65];
    assert_int_equal(gw_auth_refresh_token(tok, digest), 0);
    assert_int_equal(strlen(tok), 43); /* 32 bytes, base64url without padding */
    assert_int_equal(strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 43);
    unsigned char raw[32];
    size_t rawlen;
    assert_int_equal(gw_base64_decode(tok, 43, GW_BASE64_URL | GW_BASE64_NOPAD, raw, sizeof(raw), &rawlen), 0);
    assert_int_equal(rawlen, 32);
    assert_int_equal(strlen(digest), 64);
    assert_int_equal(strspn(digest, "0123456789abcdef"), 64);
    gw_auth_token_digest(tok, strlen(tok), again);
    assert_string_equal(again, digest); /* stable: the presented token finds its row */
    assert_int_equal(gw_auth_refresh_token(tok2, digest2), 0);
    assert_string_not_equal(tok, tok2);
    assert_string_not_equal(digest, digest2);
    /* the digest is SHA-256 of the token's text (what SQL's encode(sha256(...), 'hex') gives) */
    gw_auth_token_digest("abc", 3, again);
    assert_string_equal(again, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* ---- passwords ---- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_password_hash_and_verify(void **state)
{
    gw_err_t err = GW_ERR_INIT;
    const char *pw = "correct horse battery staple";
    double t0 = now_ms();
    char *h = gw_auth_password_hash(pw, strlen(pw), &err);
    double t1 = now_ms();
    assert_non_null(h);
    print_message("scrypt ln=15,r=8,p=1: hash %.1f ms (this build)\n", t1 - t0);
    /* $scrypt$ln=15,r=8,p=1$<22 chars of salt>$<43 chars of hash> */
    assert_memory_equal(h, "$scrypt$ln=15,r=8,p=1$", 22);
    assert_int_equal(strlen(h), 22 + 22 + 1 + 43);
    assert_int_equal(h[22 + 22], '$');
    bool rehash = true;
    assert_true(gw_auth_password_verify(h, pw, strlen(pw), &rehash));
    assert_false(rehash);
    assert_false(gw_auth_password_verify(h, "correct horse battery stapl", strlen(pw) - 1, &rehash));
    assert_false(gw_auth_password_verify(h, "Correct horse battery staple", strlen(pw), &rehash));
    assert_false(gw_auth_password_verify(h, "", 0, &rehash));
    /* two hashes of one password differ (fresh salt) and both verify */
    char *h2 = gw_auth_password_hash(pw, strlen(pw), &err);
    assert_string_not_equal(h, h2);
    assert_true(gw_auth_password_verify(h2, pw, strlen(pw), NULL));
    /* bytes after len are not part of the password */
    assert_true(gw_auth_password_verify(h, "correct horse battery stapleXYZ", strlen(pw), NULL));
    free(h2);
    free(h);
}

static void test_password_tampered_string_fails(void **state)
{
    gw_err_t err = GW_ERR_INIT;
    const char *pw = "s3cret-Password";
    char *h = gw_auth_password_hash(pw, strlen(pw), &err);
    assert_non_null(h);
    size_t n = strlen(h);
    char *t = malloc(n + 16);
    /* a flipped character of the salt, of the hash */
    size_t positions[] = {23, 30, 45, 50, n - 2};
    for (size_t i = 0; i != sizeof(positions) / sizeof(positions[0]); ++i) {
        strcpy(t, h);
        t[positions[i]] = t[positions[i]] == 'A' ? 'B' : 'A';
        assert_false(gw_auth_password_verify(t, pw, strlen(pw), NULL));
    }
    /* other parameters named than the hash was made with */
    const char *params[] = {"$scrypt$ln=14,r=8,p=1$", "$scrypt$ln=15,r=7,p=1$", "$scrypt$ln=15,r=8,p=2$"};
    for (size_t i = 0; i != 3; ++i) {
        sprintf(t, "%s%s", params[i], h + 22);
        assert_false(gw_auth_password_verify(t, pw, strlen(pw), NULL));
    }
    /* unreadable strings: never a match, never a crash */
    const char *bad[] = {NULL,
                         "",
                         "$scrypt$",
                         "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
                         "$scrypt$ln=15,r=8$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "$scrypt$ln=015,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "$scrypt$ln=30,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "$scrypt$ln=20,r=32,p=16$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "$scrypt$ln=15,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAA",
                         "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA$"};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        bool rehash = true;
        assert_false(gw_auth_password_verify(bad[i], pw, strlen(pw), &rehash));
        assert_false(rehash);
    }
    free(t);
    free(h);
}

/* A stored string names its own parameters: one made with ln=10 (by scrypt directly) verifies, and asks for a
 * rehash because it is weaker than the current ln=15. */
static void test_password_parameters_from_the_string(void **state)
{
    const char *pw = "older-password-1";
    unsigned char salt[16] = "0123456789abcdef", hash[32];
    assert_int_equal(gw_crypto_scrypt(pw, strlen(pw), salt, 16, 1024, 8, 2, 64 << 20, hash, 32), 0);
    char s64[32], h64[64], stored[160];
    gw_base64_encode(salt, 16, GW_BASE64_URL | GW_BASE64_NOPAD, s64);
    gw_base64_encode(hash, 32, GW_BASE64_URL | GW_BASE64_NOPAD, h64);
    snprintf(stored, sizeof(stored), "$scrypt$ln=10,r=8,p=2$%s$%s", s64, h64);
    bool rehash = false;
    assert_true(gw_auth_password_verify(stored, pw, strlen(pw), &rehash));
    assert_true(rehash);
    /* the same bytes read with other parameters do not match */
    snprintf(stored, sizeof(stored), "$scrypt$ln=10,r=8,p=1$%s$%s", s64, h64);
    assert_false(gw_auth_password_verify(stored, pw, strlen(pw), &rehash));
    /* a known answer: RFC 7914 section 12, scrypt("password", "NaCl", N=1024, r=8, p=16), first 16 bytes */
    unsigned char kat[64];
    assert_int_equal(gw_crypto_scrypt("password", 8, "NaCl", 4, 1024, 8, 16, 64 << 20, kat, 64), 0);
    static const unsigned char expect[16] = {0xfd, 0xba, 0xbe, 0x1c, 0x9d, 0x34, 0x72, 0x00,
                                             0x78, 0x56, 0xe7, 0x19, 0x0d, 0x01, 0xe9, 0xfe};
    assert_memory_equal(kat, expect, 16);
    assert_int_equal(gw_crypto_scrypt("x", 1, "y", 1, 1000, 8, 1, 64 << 20, kat, 64), -1); /* not a power of 2 */
}

static void test_password_rules(void **state)
{
    const char *weak[] = {"", "short", "123456789", "aaaaaaaaaaaaaaaa", "abababababab", "abcabcabcabc"};
    for (size_t i = 0; i != sizeof(weak) / sizeof(weak[0]); ++i) {
        gw_err_t err = GW_ERR_INIT;
        assert_null(gw_auth_password_hash(weak[i], strlen(weak[i]), &err));
        assert_ptr_equal(err.code, gw_err_invalid_argument);
        assert_int_equal(err.status, 400);
        if (weak[i][0] != '\0')
            assert_null(strstr(err.detail, weak[i])); /* never quoted */
    }
    char *big = malloc(GW_AUTH_PASSWORD_MAX + 2);
    for (size_t i = 0; i != GW_AUTH_PASSWORD_MAX + 1; ++i)
        big[i] = (char)('a' + i % 26);
    gw_err_t err = GW_ERR_INIT;
    assert_null(gw_auth_password_hash(big, GW_AUTH_PASSWORD_MAX + 1, &err));
    char *h = gw_auth_password_hash(big, GW_AUTH_PASSWORD_MAX, &err);
    assert_non_null(h);
    assert_true(gw_auth_password_verify(h, big, GW_AUTH_PASSWORD_MAX, NULL));
    assert_false(gw_auth_password_verify(h, big, GW_AUTH_PASSWORD_MAX + 1, NULL));
    free(h);
    free(big);
    const char *ok = "abcd-1234!"; /* 10 bytes, 10 distinct */
    h = gw_auth_password_hash(ok, strlen(ok), &err);
    assert_non_null(h);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_hs256),
        cmocka_unit_test(test_round_trip_rs256_and_es256),
        cmocka_unit_test(test_hand_made_good_token_is_accepted),
        cmocka_unit_test(test_alg_none_is_refused),
        cmocka_unit_test(test_other_hs_alg_with_the_same_secret_is_refused),
        cmocka_unit_test(test_hs256_signed_with_the_rs256_public_key_is_refused),
        cmocka_unit_test(test_wrong_key_is_refused),
        cmocka_unit_test(test_expired_and_not_yet_valid),
        cmocka_unit_test(test_wrong_iss_and_aud),
        cmocka_unit_test(test_tampered_payload_is_refused),
        cmocka_unit_test(test_missing_and_mistyped_claims),
        cmocka_unit_test(test_issue_refuses_inconsistent_claims),
        cmocka_unit_test(test_create_refuses_bad_settings),
        cmocka_unit_test(test_refresh_tokens),
        cmocka_unit_test(test_password_hash_and_verify),
        cmocka_unit_test(test_password_tampered_string_fails),
        cmocka_unit_test(test_password_parameters_from_the_string),
        cmocka_unit_test(test_password_rules),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
