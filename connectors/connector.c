/* SPDX-License-Identifier: MIT */
/* connector.c: the error codes and the few byte-level helpers (hex, base64, copying) that every connector shares. */
#include "connector.h"
#include <string.h>

const char cn_err_signature_missing[] = "signature_missing";
const char cn_err_signature_malformed[] = "signature_malformed";
const char cn_err_signature_mismatch[] = "signature_mismatch";
const char cn_err_timestamp_stale[] = "timestamp_stale";
const char cn_err_no_secret[] = "no_secret";
const char cn_err_body_malformed[] = "body_malformed";
const char cn_err_event_invalid[] = "event_invalid";

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The input is what a client sent (never a secret), so an early return on a bad digit leaks nothing. */
int cn_hex32_decode(cn_str_t s, unsigned char out[32])
{
    unsigned char tmp[32];

    if (s.base == NULL || s.len != 64)
        return -1;
    for (size_t i = 0; i != 32; ++i) {
        int hi = hex_digit((unsigned char)s.base[i * 2]), lo = hex_digit((unsigned char)s.base[i * 2 + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        tmp[i] = (unsigned char)(hi << 4 | lo);
    }
    memcpy(out, tmp, 32);
    return 0;
}

/*
 * The bytes encoded here are a freshly computed MAC, which the caller then compares with what the client sent: a
 * table lookup indexed by them could leak them through the cache, so each sextet is mapped to its character with
 * masks only (the technique of libsodium's sodium_bin2base64).
 */
#define MASK_LT(x, y) ((unsigned)((int)(x) - (int)(y)) >> 8 & 0xff)    /* 0xff if x < y (both < 256) */
#define MASK_GE(x, y) (MASK_LT(x, y) ^ 0xff)                           /* 0xff if x >= y */
#define MASK_EQ(x, y) (((unsigned)((int)((x) ^ (y)) - 1) >> 8) & 0xff) /* 0xff if x == y */

static char sextet_to_char(unsigned x)
{
    return (char)((MASK_LT(x, 26) & (x + 'A')) | (MASK_GE(x, 26) & MASK_LT(x, 52) & (x + ('a' - 26))) |
                  (MASK_GE(x, 52) & MASK_LT(x, 62) & (x + ('0' - 52))) | (MASK_EQ(x, 62) & '+') |
                  (MASK_EQ(x, 63) & '/'));
}

void cn_base64_32_encode(const unsigned char in[32], char out[45])
{
    size_t o = 0;

    /* 30 bytes make 10 full groups of four characters */
    for (size_t i = 0; i != 30; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = sextet_to_char(v >> 18 & 0x3f);
        out[o++] = sextet_to_char(v >> 12 & 0x3f);
        out[o++] = sextet_to_char(v >> 6 & 0x3f);
        out[o++] = sextet_to_char(v & 0x3f);
    }
    /* the last 2 bytes make three characters and one '=' */
    unsigned v = (unsigned)in[30] << 16 | (unsigned)in[31] << 8;
    out[o++] = sextet_to_char(v >> 18 & 0x3f);
    out[o++] = sextet_to_char(v >> 12 & 0x3f);
    out[o++] = sextet_to_char(v >> 6 & 0x3f);
    out[o++] = '=';
    out[o] = '\0';
}

cn_str_t cn_strdup(const cn_alloc_t *alloc, const char *s, size_t len)
{
    char *p = alloc->alloc(alloc->ctx, len + 1);
    if (len != 0)
        memcpy(p, s, len);
    p[len] = '\0';
    return (cn_str_t){p, len};
}
