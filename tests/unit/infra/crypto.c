/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/infra/crypto.c: the AES-256-GCM sealing of stored tokens (round trip, a known answer, any
 * altered byte refused), SETTLED_SECRET_KEY parsing (errors name the key and never echo it), and known
 * vectors of HMAC-SHA256 and SHA-256.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"

static const unsigned char key1[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                       17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static void hex_of(const unsigned char *p, size_t len, char *out)
{
    for (size_t i = 0; i != len; ++i)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static void test_seal_open_round_trip(void **state)
{
    static const char aad[] = "settled/xero_tokens.refresh_token/organisation=1";
    const char *plains[] = {"", "x", "a refresh token of some length", "0123456789abcdef0123456789abcdef!"};
    for (size_t i = 0; i != sizeof(plains) / sizeof(plains[0]); ++i) {
        size_t len = strlen(plains[i]);
        unsigned char sealed[128], opened[128];
        size_t outlen = 999;
        assert_int_equal(gw_crypto_seal(key1, plains[i], len, aad, strlen(aad), sealed), 0);
        assert_int_equal(sealed[0], GW_CRYPTO_SEAL_VERSION);
        if (len != 0)
            assert_memory_not_equal(sealed + 13, plains[i], len); /* the ciphertext is not the plaintext */
        assert_int_equal(gw_crypto_open(key1, sealed, len + GW_CRYPTO_SEAL_OVERHEAD, aad, strlen(aad), opened, &outlen),
                         0);
        assert_int_equal(outlen, len);
        assert_memory_equal(opened, plains[i], len);
    }
    /* without associated data too */
    unsigned char sealed[64], opened[64];
    size_t outlen = 0;
    assert_int_equal(gw_crypto_seal(key1, "abc", 3, NULL, 0, sealed), 0);
    assert_int_equal(gw_crypto_open(key1, sealed, 3 + GW_CRYPTO_SEAL_OVERHEAD, NULL, 0, opened, &outlen), 0);
    assert_int_equal(outlen, 3);
    assert_memory_equal(opened, "abc", 3);
}

static void test_seal_uses_a_fresh_nonce(void **state)
{
    unsigned char a[64], b[64];
    assert_int_equal(gw_crypto_seal(key1, "same", 4, NULL, 0, a), 0);
    assert_int_equal(gw_crypto_seal(key1, "same", 4, NULL, 0, b), 0);
    assert_memory_not_equal(a + 1, b + 1, 12);                  /* nonces differ */
    assert_memory_not_equal(a, b, 4 + GW_CRYPTO_SEAL_OVERHEAD); /* so do the whole messages */
}

/* McGrew and Viega's GCM test case 14: key, nonce and plaintext all zero (AES-256). */
static void test_open_known_answer(void **state)
{
    static const unsigned char zero_key[32];
    static const unsigned char ct[16] = {0xce, 0xa7, 0x40, 0x3d, 0x4d, 0x60, 0x6b, 0x6e,
                                         0x07, 0x4e, 0xc5, 0xd3, 0xba, 0xf3, 0x9d, 0x18};
    static const unsigned char tag[16] = {0xd0, 0xd1, 0xc8, 0xa7, 0x99, 0x99, 0x6b, 0xf0,
                                          0x26, 0x5b, 0x98, 0xb5, 0xd4, 0x8a, 0xb9, 0x19};
    unsigned char sealed[1 + 12 + 16 + 16] = {GW_CRYPTO_SEAL_VERSION}, out[16], zeros[16] = {0};
    memcpy(sealed + 13, ct, 16);
    memcpy(sealed + 29, tag, 16);
    size_t outlen = 0;
    assert_int_equal(gw_crypto_open(zero_key, sealed, sizeof(sealed), NULL, 0, out, &outlen), 0);
    assert_int_equal(outlen, 16);
    assert_memory_equal(out, zeros, 16);
}

/* Every byte of a sealed message is covered: version, nonce, ciphertext and tag. */
static void test_open_refuses_any_altered_byte(void **state)
{
    static const char plain[] = "refresh-token-value";
    static const char aad[] = "aad";
    size_t len = strlen(plain), slen = len + GW_CRYPTO_SEAL_OVERHEAD;
    unsigned char sealed[64], copy[64], out[64];
    size_t outlen;
    assert_int_equal(gw_crypto_seal(key1, plain, len, aad, 3, sealed), 0);
    const char *region_names[] = {"version", "nonce", "ciphertext", "tag"};
    size_t region_start[] = {0, 1, 13, 13 + len}, region_end[] = {1, 13, 13 + len, slen};
    for (size_t r = 0; r != 4; ++r) {
        for (size_t i = region_start[r]; i != region_end[r]; ++i) {
            for (int bit = 0; bit < 8; bit += 7) /* the lowest and the highest bit */ {
                memcpy(copy, sealed, slen);
                copy[i] ^= (unsigned char)(1 << bit);
                memset(out, 0x55, sizeof(out));
                if (gw_crypto_open(key1, copy, slen, aad, 3, out, &outlen) != -1)
                    fail_msg("flipping bit %d of byte %zu (%s) was not detected", bit, i, region_names[r]);
                assert_int_equal(outlen, 0);
                for (size_t j = 0; j != len; ++j)
                    assert_int_equal(out[j], 0); /* nothing of a refused message is left in out */
            }
        }
    }
    /* truncated or extended messages */
    for (size_t n = 0; n != slen; ++n)
        assert_int_equal(gw_crypto_open(key1, sealed, n, aad, 3, out, &outlen), -1);
    memcpy(copy, sealed, slen);
    copy[slen] = 0;
    assert_int_equal(gw_crypto_open(key1, copy, slen + 1, aad, 3, out, &outlen), -1);
    /* wrong associated data */
    assert_int_equal(gw_crypto_open(key1, sealed, slen, "aae", 3, out, &outlen), -1);
    assert_int_equal(gw_crypto_open(key1, sealed, slen, NULL, 0, out, &outlen), -1);
    /* untouched it still opens */
    assert_int_equal(gw_crypto_open(key1, sealed, slen, aad, 3, out, &outlen), 0);
    assert_memory_equal(out, plain, len);
}

static void test_open_refuses_wrong_key(void **state)
{
    unsigned char key2[32], sealed[64], out[64];
    size_t outlen;
    memcpy(key2, key1, 32);
    key2[31] ^= 1;
    assert_int_equal(gw_crypto_seal(key1, "token", 5, NULL, 0, sealed), 0);
    assert_int_equal(gw_crypto_open(key2, sealed, 5 + GW_CRYPTO_SEAL_OVERHEAD, NULL, 0, out, &outlen), -1);
}

static void test_key_from_setting_accepts_hex_and_base64(void **state)
{
    unsigned char key[32];
    char err[300] = "", hex[65];
    hex_of(key1, 32, hex);
    assert_int_equal(gw_crypto_key_from_setting(hex, key, err, sizeof(err)), 0);
    assert_memory_equal(key, key1, 32);
    for (char *p = hex; *p; ++p)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    memset(key, 0, 32);
    assert_int_equal(gw_crypto_key_from_setting(hex, key, err, sizeof(err)), 0);
    assert_memory_equal(key, key1, 32);
    /* base64 of 1..32 (python3 -c "import base64; print(base64.b64encode(bytes(range(1,33))).decode())") */
    memset(key, 0, 32);
    assert_int_equal(gw_crypto_key_from_setting("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=", key, err, sizeof(err)),
                     0);
    assert_memory_equal(key, key1, 32);
    /* the URL-safe alphabet: 32 bytes of 0xfb encode with '+' and '/' in standard base64 */
    unsigned char fb[32], key_std[32], key_url[32];
    memset(fb, 0xfb, 32);
    assert_int_equal(
        gw_crypto_key_from_setting("+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s=", key_std, err, sizeof(err)), 0);
    assert_int_equal(
        gw_crypto_key_from_setting("-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s=", key_url, err, sizeof(err)), 0);
    assert_memory_equal(key_std, fb, 32);
    assert_memory_equal(key_url, fb, 32);
}

static void expect_rejected(const char *value)
{
    unsigned char key[32];
    char err[400] = "";
    if (gw_crypto_key_from_setting(value, key, err, sizeof(err)) != -1)
        fail_msg("a SETTLED_SECRET_KEY of %zu characters was accepted", value != NULL ? strlen(value) : 0);
    assert_non_null(strstr(err, "SETTLED_SECRET_KEY"));
    if (value != NULL && strlen(value) >= 8 && strstr(err, value) != NULL)
        fail_msg("the error echoes the key: %s", err);
    /* not even a recognisable piece of it */
    if (value != NULL && strlen(value) >= 12) {
        char piece[13];
        memcpy(piece, value + 4, 12);
        piece[12] = '\0';
        if (strstr(err, piece) != NULL)
            fail_msg("the error echoes part of the key: %s", err);
    }
}

static void test_key_from_setting_rejects_other_values(void **state)
{
    expect_rejected(NULL);
    expect_rejected("");
    expect_rejected("secretsecretsecretsecret");                                           /* a passphrase */
    expect_rejected("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA");                        /* 43: padding missing */
    expect_rejected("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA==");                      /* 45 */
    expect_rejected("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyB=");                       /* non-zero spare bits */
    expect_rejected("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eH*A=");                       /* not base64 */
    expect_rejected("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e=yA=");                       /* '=' inside */
    expect_rejected("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2");    /* 63 */
    expect_rejected("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2000"); /* 66 */
    expect_rejected("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fzz");   /* not hex */
    expect_rejected("0102030405060708090a0b0c0d0e0f10");                                   /* 16 bytes of hex */
    expect_rejected("AQIDBAUGBwgJCgsMDQ4PEA==");                                           /* 16 bytes of base64 */
}

/* RFC 4231 test case 2. */
static void test_hmac_sha256_known_vector(void **state)
{
    cn_str_t parts[] = {{"what do ya ", 11}, {"want for nothing?", 17}};
    unsigned char mac[32];
    char hex[65];
    assert_int_equal(gw_crypto_hmac_sha256("Jefe", 4, parts, 2, mac), 0);
    hex_of(mac, 32, hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

/* FIPS 180-2 "abc", and the empty string. */
static void test_sha256_hex_known_vectors(void **state)
{
    char out[65];
    gw_crypto_sha256_hex("abc", 3, out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    gw_crypto_sha256_hex("", 0, out);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seal_open_round_trip),
        cmocka_unit_test(test_seal_uses_a_fresh_nonce),
        cmocka_unit_test(test_open_known_answer),
        cmocka_unit_test(test_open_refuses_any_altered_byte),
        cmocka_unit_test(test_open_refuses_wrong_key),
        cmocka_unit_test(test_key_from_setting_accepts_hex_and_base64),
        cmocka_unit_test(test_key_from_setting_rejects_other_values),
        cmocka_unit_test(test_hmac_sha256_known_vector),
        cmocka_unit_test(test_sha256_hex_known_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
