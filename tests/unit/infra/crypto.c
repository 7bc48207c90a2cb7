/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/infra/crypto.c: the AES-256-GCM sealing of stored tokens (round trip, a known answer, any
 * altered byte refused), SETTLED_SECRET_KEY parsing (errors name the key and never echo it), known
 * vectors of HMAC-SHA256 and SHA-256, and the one codec: hex, base64 and base64url (the RFC 4648 vectors,
 * round trips of every length and byte, every malformed input refused) and RFC 3986 percent-encoding.
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
    gw_err_t err = GW_ERR_INIT;
    char hex[65];
    hex_of(key1, 32, hex);
    assert_int_equal(gw_crypto_key_from_setting(hex, key, &err), 0);
    assert_memory_equal(key, key1, 32);
    for (char *p = hex; *p; ++p)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    memset(key, 0, 32);
    assert_int_equal(gw_crypto_key_from_setting(hex, key, &err), 0);
    assert_memory_equal(key, key1, 32);
    /* base64 of 1..32 (python3 -c "import base64; print(base64.b64encode(bytes(range(1,33))).decode())") */
    memset(key, 0, 32);
    assert_int_equal(gw_crypto_key_from_setting("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=", key, &err), 0);
    assert_memory_equal(key, key1, 32);
    /* the URL-safe alphabet: the bytes 0xe0..0xff encode with '+' and '/' in standard base64 */
    unsigned char hi[32], key_std[32], key_url[32];
    for (int i = 0; i != 32; ++i)
        hi[i] = (unsigned char)(0xe0 + i);
    assert_int_equal(gw_crypto_key_from_setting("4OHi4+Tl5ufo6err7O3u7/Dx8vP09fb3+Pn6+/z9/v8=", key_std, &err), 0);
    assert_int_equal(gw_crypto_key_from_setting("4OHi4-Tl5ufo6err7O3u7_Dx8vP09fb3-Pn6-_z9_v8=", key_url, &err), 0);
    assert_memory_equal(key_std, hi, 32);
    assert_memory_equal(key_url, hi, 32);
    /* both alphabets in one value, as before the codec existed */
    memset(key, 0, 32);
    assert_int_equal(gw_crypto_key_from_setting("4OHi4-Tl5ufo6err7O3u7/Dx8vP09fb3+Pn6+/z9/v8=", key, &err), 0);
    assert_memory_equal(key, hi, 32);
    assert_null(err.code);
}

static void expect_rejected(const char *value)
{
    unsigned char key[32];
    gw_err_t e = GW_ERR_INIT;
    if (gw_crypto_key_from_setting(value, key, &e) != -1)
        fail_msg("a SETTLED_SECRET_KEY of %zu characters was accepted", value != NULL ? strlen(value) : 0);
    assert_ptr_equal(e.code, gw_err_config_invalid);
    assert_int_equal(e.status, 500);
    const char *err = e.detail;
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
    /* well encoded, but not random: one byte repeated, a short pattern repeated */
    expect_rejected("+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s=");
    expect_rejected("0000000000000000000000000000000000000000000000000000000000000000");
    expect_rejected("0102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f00");
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
    expect_rejected("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHy==");                       /* 31 bytes, 44 long */
    expect_rejected("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eH A=");                       /* a space */
    expect_rejected("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f 0");   /* a space */
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

/* ---- the codec ---- */

static void test_hex(void **state)
{
    char out[2 * 256 + 1];
    unsigned char all[256], back[256];
    for (int i = 0; i != 256; ++i)
        all[i] = (unsigned char)i;
    gw_hex_encode("", 0, out);
    assert_string_equal(out, "");
    gw_hex_encode("\x00\x01\xab\xff", 4, out);
    assert_string_equal(out, "0001abff");
    gw_hex_encode(all, 256, out);
    assert_int_equal(strlen(out), 512);
    assert_memory_equal(out + 2 * 0xa5, "a5", 2); /* lower case, in order */
    memset(back, 0x55, sizeof(back));
    assert_int_equal(gw_hex_decode(out, 512, back), 0);
    assert_memory_equal(back, all, 256);
    /* upper case and mixed case decode too */
    assert_int_equal(gw_hex_decode("ABcdEF09", 8, back), 0);
    assert_memory_equal(back, "\xab\xcd\xef\x09", 4);
    assert_int_equal(gw_hex_decode("", 0, back), 0);
    /* the length given, not a NUL, ends the input */
    assert_int_equal(gw_hex_decode("0a0bzz", 4, back), 0);
    assert_memory_equal(back, "\x0a\x0b", 2);
}

static void test_hex_refuses_bad_input(void **state)
{
    unsigned char out[8];
    static const char *const bad[] = {"0", "abc", "0g", "g0", "0 ", " 0", "0x", "+1", "-1", "\xc3\xa9", "1:"};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        memset(out, 0x55, sizeof(out));
        if (gw_hex_decode(bad[i], strlen(bad[i]), out) != -1)
            fail_msg("hex \"%s\" was accepted", bad[i]);
        for (size_t j = 0; j != strlen(bad[i]) / 2; ++j)
            assert_int_equal(out[j], 0); /* nothing of a refused input is left */
    }
    /* every byte that is not a hex digit, at either place of a pair */
    for (int c = 0; c != 256; ++c) {
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
            continue;
        char in[4] = {'a', '0', 'b', '1'};
        in[1] = (char)c;
        if (gw_hex_decode(in, 4, out) != -1)
            fail_msg("hex with byte 0x%02x was accepted", c);
        in[1] = '0', in[2] = (char)c;
        if (gw_hex_decode(in, 4, out) != -1)
            fail_msg("hex with byte 0x%02x was accepted", c);
    }
}

/* RFC 4648 section 10. */
static void test_base64_rfc4648_vectors(void **state)
{
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *const nopad[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (size_t i = 0; i != 7; ++i) {
        char out[GW_BASE64_ENCODED_SIZE(6)];
        unsigned char back[8];
        size_t len = strlen(in[i]), n = 99;
        assert_int_equal(gw_base64_encode(in[i], len, 0, out), strlen(std[i]));
        assert_string_equal(out, std[i]);
        assert_int_equal(gw_base64_encode(in[i], len, GW_BASE64_URL | GW_BASE64_NOPAD, out), strlen(nopad[i]));
        assert_string_equal(out, nopad[i]);
        assert_int_equal(gw_base64_decode(std[i], strlen(std[i]), 0, back, sizeof(back), &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(back, in[i], len);
        n = 99;
        assert_int_equal(
            gw_base64_decode(nopad[i], strlen(nopad[i]), GW_BASE64_URL | GW_BASE64_NOPAD, back, sizeof(back), &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(back, in[i], len);
    }
}

/* The two alphabets differ in 62 and 63 only (RFC 4648 sections 4 and 5). */
static void test_base64_alphabets(void **state)
{
    static const unsigned char in[] = {0xfb, 0xff, 0xbf, 0xfe};
    char out[GW_BASE64_ENCODED_SIZE(4)];
    unsigned char back[4];
    size_t n = 0;
    gw_base64_encode(in, 4, 0, out);
    assert_string_equal(out, "+/+//g==");
    gw_base64_encode(in, 4, GW_BASE64_URL, out);
    assert_string_equal(out, "-_-__g==");
    gw_base64_encode(in, 4, GW_BASE64_NOPAD, out);
    assert_string_equal(out, "+/+//g");
    /* each decoder takes its own alphabet only; GW_BASE64_ANY takes both, mixed */
    assert_int_equal(gw_base64_decode("+/+//g==", 8, 0, back, 4, &n), 0);
    assert_int_equal(gw_base64_decode("-_-__g==", 8, 0, back, 4, &n), -1);
    assert_int_equal(gw_base64_decode("-_-__g==", 8, GW_BASE64_URL, back, 4, &n), 0);
    assert_int_equal(gw_base64_decode("+/+//g==", 8, GW_BASE64_URL, back, 4, &n), -1);
    assert_int_equal(gw_base64_decode("-/+_/g==", 8, GW_BASE64_ANY, back, 4, &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(back, in, 4);
}

/* Every length from 0 to 70 and every byte value survive every flavour. */
static void test_base64_round_trips(void **state)
{
    static const int flavours[] = {0, GW_BASE64_URL, GW_BASE64_NOPAD, GW_BASE64_URL | GW_BASE64_NOPAD};
    unsigned char in[256], back[256];
    char text[GW_BASE64_ENCODED_SIZE(256)];
    for (int i = 0; i != 256; ++i)
        in[i] = (unsigned char)(i * 7 + 3);
    for (size_t f = 0; f != 4; ++f) {
        for (size_t len = 0; len <= 70; ++len) {
            size_t tlen = gw_base64_encode(in + len, len, flavours[f], text), n = 0;
            assert_int_equal(tlen, strlen(text));
            if ((flavours[f] & GW_BASE64_NOPAD) == 0)
                assert_int_equal(tlen, (len + 2) / 3 * 4);
            else
                assert_int_equal(tlen, (len * 4 + 2) / 3);
            assert_true(tlen + 1 <= GW_BASE64_ENCODED_SIZE(len));
            if (gw_base64_decode(text, tlen, flavours[f], back, len, &n) != 0)
                fail_msg("flavour %d, %zu bytes: \"%s\" does not decode", flavours[f], len, text);
            assert_int_equal(n, len);
            assert_memory_equal(back, in + len, len);
            /* and no less room than the bytes will do */
            if (len != 0)
                assert_int_equal(gw_base64_decode(text, tlen, flavours[f], back, len - 1, &n), -1);
        }
        for (int b = 0; b != 256; ++b) {
            unsigned char one[3] = {(unsigned char)b, (unsigned char)~b, (unsigned char)(b ^ 0x5a)};
            size_t tlen = gw_base64_encode(one, 3, flavours[f], text), n = 0;
            assert_int_equal(gw_base64_decode(text, tlen, flavours[f], back, 3, &n), 0);
            assert_int_equal(n, 3);
            assert_memory_equal(back, one, 3);
        }
    }
}

static void expect_base64_refused(const char *in, int flags)
{
    unsigned char out[64];
    size_t n = 99;
    memset(out, 0x55, sizeof(out));
    if (gw_base64_decode(in, strlen(in), flags, out, sizeof(out), &n) != -1)
        fail_msg("base64 \"%s\" (flags %d) was accepted", in, flags);
    assert_int_equal(n, 0);
    for (size_t i = 0; i != strlen(in) * 3 / 4 && i != sizeof(out); ++i)
        if (out[i] != 0 && out[i] != 0x55)
            fail_msg("base64 \"%s\": byte %zu of a refused input was left in out", in, i);
}

static void test_base64_refuses_bad_input(void **state)
{
    const int url = GW_BASE64_URL | GW_BASE64_NOPAD;
    /* padded: the length must be a multiple of 4, '=' only at the end, as many as the last group needs */
    static const char *const padded[] = {
        "Zg",   "Zg=",      "Zm8",       "Zg===",    "Zm9v=",    "====",     "=",       "Zm8==",   "Zg=a",
        "Z===", "Zm=v",     "=m9v",      "Zh==",     "Zm9=",     "Zm8 ",     " Zm8=",   "Zm\n8=",  "Zm-8",
        "Zm_8", "Zm9vY===", "Zm9vYmE==", "Zm9vYg=x", "Zg==Zg==", "Zm8=Zm8=", "Zm9\x80", "Zm9\xff",
    };
    for (size_t i = 0; i != sizeof(padded) / sizeof(padded[0]); ++i)
        expect_base64_refused(padded[i], 0);
    /* unpadded: no '=' at all; a length of 4n + 1 encodes nothing; spare bits are zero */
    static const char *const bare[] = {"Z",    "Zg=",  "Zg==", "Zm8=",    "Zh",       "Zm9",   "Zm9vY", "Zm+8",
                                       "Zm/8", "Zm 8", "Zm.8", "Zm9vYmF", "Zm9vYmE=", "AAAAB", "A"};
    for (size_t i = 0; i != sizeof(bare) / sizeof(bare[0]); ++i)
        expect_base64_refused(bare[i], url);
    /* a NUL inside the given length */
    unsigned char out[8];
    size_t n = 0;
    assert_int_equal(gw_base64_decode("Zm\0v", 4, 0, out, sizeof(out), &n), -1);
    assert_int_equal(gw_base64_decode("Zm\0v", 4, url, out, sizeof(out), &n), -1);
    /* every byte outside both alphabets, anywhere in a group */
    for (int c = 0; c != 256; ++c) {
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
            c == '-' || c == '_')
            continue;
        for (int at = 0; at != 4; ++at) {
            char in[5] = "Zm9v";
            in[at] = (char)c;
            if (c == '=' && at >= 2)
                continue; /* padding, checked above */
            if (gw_base64_decode(in, 4, GW_BASE64_ANY, out, sizeof(out), &n) != -1)
                fail_msg("base64 with byte 0x%02x at %d was accepted", c, at);
        }
    }
}

static void expect_percent_encoded(const char *in, size_t len, const char *want)
{
    char *got = malloc(GW_PERCENT_ENCODED_SIZE(len));
    assert_int_equal(gw_percent_encode(in, len, got), strlen(want));
    assert_string_equal(got, want);
    free(got);
}

static void test_percent_encode(void **state)
{
    expect_percent_encoded("", 0, "");
    expect_percent_encoded("AZaz09-._~", 10, "AZaz09-._~"); /* unreserved stay */
    expect_percent_encoded("a b", 3, "a%20b");              /* never '+' */
    expect_percent_encoded("a+b", 3, "a%2Bb");
    expect_percent_encoded(":/?#[]@!$&'()*,;=%", 18, "%3A%2F%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2C%3B%3D%25");
    expect_percent_encoded("\xc3\xa9", 2, "%C3%A9"); /* UTF-8 bytes, upper-case hex */
    expect_percent_encoded("a\0b", 3, "a%00b");      /* len, not the NUL, ends the input */
    expect_percent_encoded("\x7f\x80\xff", 3, "%7F%80%FF");
    expect_percent_encoded("https://example.com/v1/xero/callback?x=1", 40,
                           "https%3A%2F%2Fexample.com%2Fv1%2Fxero%2Fcallback%3Fx%3D1");
    /* every byte: unreserved ones stay, the rest are %XX, and it all decodes back */
    unsigned char all[256];
    char enc[GW_PERCENT_ENCODED_SIZE(256)], dec[257];
    for (int i = 0; i != 256; ++i)
        all[i] = (unsigned char)i;
    size_t elen = gw_percent_encode(all, 256, enc), dlen = 0;
    assert_int_equal(elen, 66 + 3 * (256 - 66));                              /* 66 unreserved characters */
    assert_int_equal(gw_percent_decode(enc + 3, elen - 3, 0, dec, &dlen), 0); /* without the %00 */
    assert_int_equal(dlen, 255);
    assert_memory_equal(dec, all + 1, 255);
}

static void expect_percent_decoded(const char *in, int flags, const char *want)
{
    char out[64];
    size_t n = 99;
    if (gw_percent_decode(in, strlen(in), flags, out, &n) != 0)
        fail_msg("\"%s\" does not decode", in);
    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
}

static void expect_percent_refused(const char *in, size_t len, int flags)
{
    char out[64];
    size_t n = 99;
    memset(out, 0x55, sizeof(out));
    if (gw_percent_decode(in, len, flags, out, &n) != -1)
        fail_msg("\"%s\" was accepted", in);
    assert_int_equal(n, 0);
    for (size_t i = 0; i <= len; ++i)
        if (out[i] != 0 && out[i] != 0x55)
            fail_msg("\"%s\": byte %zu of a refused input was left in out", in, i);
}

static void test_percent_decode(void **state)
{
    expect_percent_decoded("", 0, "");
    expect_percent_decoded("abc", 0, "abc");
    expect_percent_decoded("x%2By%3D", 0, "x+y=");
    expect_percent_decoded("%c3%A9", 0, "\xc3\xa9"); /* either case */
    expect_percent_decoded("a+b", 0, "a+b");         /* '+' stays, unless asked */
    expect_percent_decoded("a+b%2B", GW_PERCENT_PLUS_SPACE, "a b+");
    expect_percent_decoded("%25%32%30", 0, "%20"); /* decoded once, never twice */
    expect_percent_decoded("a b~", 0, "a b~");     /* anything else passes as it is */
    /* the length given ends the input */
    char out[8];
    size_t n = 0;
    assert_int_equal(gw_percent_decode("ab%41cd", 5, 0, out, &n), 0);
    assert_string_equal(out, "abA");
    /* malformed escapes and NULs are refused */
    expect_percent_refused("%", 1, 0);
    expect_percent_refused("%4", 2, 0);
    expect_percent_refused("a%4", 3, 0);
    expect_percent_refused("%zz", 3, 0);
    expect_percent_refused("%g0", 3, 0);
    expect_percent_refused("%0g", 3, 0);
    expect_percent_refused("% 20", 4, 0);
    expect_percent_refused("%+20", 4, GW_PERCENT_PLUS_SPACE);
    expect_percent_refused("a%00b", 5, 0);
    expect_percent_refused("a\0b", 3, 0);
    expect_percent_refused("abc%41%", 7, 0);
    expect_percent_refused("ab%4", 4, GW_PERCENT_PLUS_SPACE);
    assert_int_equal(gw_percent_decode("ab%41cd", 4, 0, out, &n), -1); /* "ab%4" */
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
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_hex_refuses_bad_input),
        cmocka_unit_test(test_base64_rfc4648_vectors),
        cmocka_unit_test(test_base64_alphabets),
        cmocka_unit_test(test_base64_round_trips),
        cmocka_unit_test(test_base64_refuses_bad_input),
        cmocka_unit_test(test_percent_encode),
        cmocka_unit_test(test_percent_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
