/* SPDX-License-Identifier: MIT */
/* connector.c: tests the helpers every connector shares (error codes, hex decoding, base64 encoding, copying). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connector.h"

#include "scaffold.h"

static void test_error_codes(void **state)
{
    const char *const codes[] = {cn_err_signature_missing, cn_err_signature_malformed, cn_err_signature_mismatch,
                                 cn_err_timestamp_stale,   cn_err_no_secret,           cn_err_body_malformed,
                                 cn_err_event_invalid};
    const char *const texts[] = {"signature_missing", "signature_malformed", "signature_mismatch", "timestamp_stale",
                                 "no_secret",         "body_malformed",      "event_invalid"};
    for (size_t i = 0; i != sizeof(codes) / sizeof(codes[0]); ++i) {
        assert_string_equal(codes[i], texts[i]);
        for (size_t j = 0; j != i; ++j)
            assert_ptr_not_equal(codes[i], codes[j]);
    }
}

static const unsigned char seq[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                      16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

static void test_hex32_decode(void **state)
{
    unsigned char out[32];

    memset(out, 0x5a, sizeof(out));
    assert_int_equal(
        cn_hex32_decode(CN_STR_LIT("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"), out), 0);
    assert_memory_equal(out, seq, 32);
    /* either case, mixed too */
    assert_int_equal(
        cn_hex32_decode(CN_STR_LIT("000102030405060708090A0B0C0D0E0F101112131415161718191a1B1c1D1e1F"), out), 0);
    assert_memory_equal(out, seq, 32);
    assert_int_equal(
        cn_hex32_decode(CN_STR_LIT("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"), out), 0);
    for (size_t i = 0; i != 32; ++i)
        assert_int_equal(out[i], 0xff);
}

static void test_hex32_decode_rejects(void **state)
{
    static const char *const bad[] = {
        "",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",   /* 63 */
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0", /* 65 */
        "g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1G",
        " 00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    };
    unsigned char out[32], untouched[32];
    memset(out, 0x5a, sizeof(out));
    memset(untouched, 0x5a, sizeof(untouched));
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        if (cn_hex32_decode((cn_str_t){bad[i], strlen(bad[i])}, out) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_memory_equal(out, untouched, 32);
    }
    assert_int_equal(cn_hex32_decode((cn_str_t){NULL, 0}, out), -1);
    assert_int_equal(cn_hex32_decode((cn_str_t){NULL, 64}, out), -1);
    /* a NUL inside is not a digit */
    static const char with_nul[64] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1";
    assert_int_equal(cn_hex32_decode((cn_str_t){with_nul, 64}, out), -1);
}

/* Vectors from python3 -c 'import base64; print(base64.b64encode(bytes.fromhex(HEX)).decode())'. */
static void test_base64_vectors(void **state)
{
    char out[45];
    unsigned char in[32];

    memset(in, 0, 32);
    cn_base64_32_encode(in, out);
    assert_string_equal(out, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    memset(in, 0xff, 32);
    cn_base64_32_encode(in, out);
    assert_string_equal(out, "//////////////////////////////////////////8=");
    cn_base64_32_encode(seq, out);
    assert_string_equal(out, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    for (size_t i = 0; i != 30; i += 3) {
        in[i] = 0xfb;
        in[i + 1] = 0xef;
        in[i + 2] = 0xbe;
    }
    in[30] = 0xfb;
    in[31] = 0xf0;
    cn_base64_32_encode(in, out);
    assert_string_equal(out, "+++++++++++++++++++++++++++++++++++++++++/A=");
}

/* An independent, table-driven encoder to compare the mask-based one with. */
static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void reference_encode(const unsigned char in[32], char out[45])
{
    size_t o = 0;
    for (size_t i = 0; i < 32; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < 32 ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < 32 ? in[i + 2] : 0);
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = i + 1 < 32 ? alphabet[v >> 6 & 63] : '=';
        out[o++] = i + 2 < 32 ? alphabet[v & 63] : '=';
    }
    out[o] = '\0';
}

static void test_base64_every_sextet(void **state)
{
    unsigned char in[32];
    char got[45], want[45];

    /* every value in the first position of a group */
    for (unsigned v = 0; v != 64; ++v) {
        memset(in, 0, 32);
        in[0] = (unsigned char)(v << 2);
        cn_base64_32_encode(in, got);
        if (got[0] != alphabet[v])
            fail_msg("sextet %u: got '%c', want '%c'", v, got[0], alphabet[v]);
    }
    /* pseudo-random inputs against the reference */
    uint32_t x = 2463534242u;
    for (int round = 0; round != 2000; ++round) {
        for (size_t i = 0; i != 32; ++i) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            in[i] = (unsigned char)x;
        }
        cn_base64_32_encode(in, got);
        reference_encode(in, want);
        assert_string_equal(got, want);
        assert_int_equal(strlen(got), 44);
    }
}

static void test_strdup(void **state)
{
    cn_str_t s = cn_strdup(&test_alloc, "abcdef", 3);
    assert_int_equal(s.len, 3);
    assert_string_equal(s.base, "abc");
    s = cn_strdup(&test_alloc, NULL, 0);
    assert_non_null(s.base);
    assert_int_equal(s.len, 0);
    assert_string_equal(s.base, "");
    /* bytes are copied, not borrowed */
    char src[] = "xyz";
    s = cn_strdup(&test_alloc, src, 3);
    src[0] = 'X';
    assert_string_equal(s.base, "xyz");
    assert_true(s.base != src);
}

#define TEST(f) cmocka_unit_test_teardown(f, pool_release)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_error_codes),    TEST(test_hex32_decode),        TEST(test_hex32_decode_rejects),
        TEST(test_base64_vectors), TEST(test_base64_every_sextet), TEST(test_strdup),
    };
    return cmocka_run_group_tests_name("connectors/connector", tests, NULL, NULL);
}
