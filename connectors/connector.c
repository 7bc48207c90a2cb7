/* SPDX-License-Identifier: MIT */
/* connector.c: what every connector shares: the error codes, the byte-level helpers (hex, base64, copying) and the
 * skeleton of parse() (JSON, envelope, one record per event). */
#include "connector.h"
#include <string.h>
#include "json_scan.h"

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

/*
 * Every event object gets its record before the next is looked at, so the first bad event (in the order sent) is the
 * one the detail names. The scan checks the whole text first, so a syntax error anywhere outranks a bad event, as
 * it did when the body was parsed into a tree. The records are allocated up front and published only on success.
 */
const char *cn_parse_events(cn_str_t body, const cn_alloc_t *alloc, cn_body_shape_t shape, const cn_fields_t *fields,
                            cn_event_parser_t parse_event, cn_event_t **events, size_t *count, const char **detail)
{
    const char *err = cn_err_body_malformed, *why;
    cn_scan_t scan;
    cn_event_t *evs = NULL;

    if ((why = cn_json_scan(body, shape, fields->paths, fields->count, alloc, &scan)) != NULL)
        goto Exit;
    err = cn_err_event_invalid;
    if (scan.nevents != 0)
        evs = alloc->alloc(alloc->ctx, scan.nevents * sizeof(*evs));
    for (size_t i = 0; i != scan.nevents; ++i) {
        if (!scan.is_object[i]) {
            why = "An event is not a JSON object.";
            goto Exit;
        }
        evs[i] = (cn_event_t){{NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}, NULL};
        if ((why = parse_event(scan.fields + i * fields->count, alloc, &evs[i])) != NULL)
            goto Exit;
    }
    err = NULL;
    *events = evs;
    *count = scan.nevents;

Exit:
    if (detail != NULL)
        *detail = why;
    return err;
}

bool cn_jv_is_nonempty_string(const cn_jv_t *v)
{
    return v->kind == CN_JV_STRING && v->s.len != 0;
}

bool cn_jv_is_token(const cn_jv_t *v)
{
    if (v->kind != CN_JV_STRING)
        return false;
    for (size_t i = 0; i != v->s.len; ++i)
        if ((unsigned char)v->s.base[i] <= 0x20 || (unsigned char)v->s.base[i] >= 0x7f)
            return false;
    return true;
}

int cn_jv_optional(const cn_jv_t *v, cn_str_t *out)
{
    *out = (cn_str_t){NULL, 0};
    if (!cn_jv_is_nonempty_string(v))
        return 0;
    if (v->s.len > CN_MAX_FIELD)
        return -1;
    *out = v->s;
    return 0;
}

cn_str_t cn_jv_join(const cn_alloc_t *alloc, const cn_jv_t *const *parts, size_t n, char sep, unsigned upper)
{
    size_t len = n - 1;
    for (size_t i = 0; i != n; ++i)
        len += parts[i]->s.len;
    char *buf = alloc->alloc(alloc->ctx, len + 1), *p = buf;
    for (size_t i = 0; i != n; ++i) {
        size_t partlen = parts[i]->s.len;
        if (i != 0)
            *p++ = sep;
        memcpy(p, parts[i]->s.base, partlen);
        if ((upper >> i & 1) != 0)
            for (size_t j = 0; j != partlen; ++j)
                if (p[j] >= 'a' && p[j] <= 'z')
                    p[j] = (char)(p[j] - 'a' + 'A');
        p += partlen;
    }
    *p = '\0';
    return (cn_str_t){buf, len};
}
