/* SPDX-License-Identifier: MIT */
/* connector.c: what every connector shares: the error codes, the byte-level helpers (hex, base64, copying) and the
 * skeleton of parse() (JSON, envelope, one record per event). */
#include "connector.h"
#include <jansson.h>
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

/*
 * Every event object gets its record before the next is looked at, so the first bad event (in the order sent) is the
 * one the detail names. The records are allocated up front and published only on success: a refused body costs at
 * most the memory an accepted body of the same size would.
 */
const char *cn_parse_events(cn_str_t body, const cn_alloc_t *alloc, cn_body_shape_t shape,
                            cn_event_parser_t parse_event, cn_event_t **events, size_t *count, const char **detail)
{
    const char *err = cn_err_body_malformed, *why = NULL; /* what a goto Exit returns, until the events are looked at */
    json_t *root = json_loadb(body.base != NULL ? body.base : "", body.len, JSON_REJECT_DUPLICATES, NULL), *list = NULL;
    cn_event_t *evs = NULL;
    size_t n = 1;

    if (root == NULL) {
        why = "The body is not valid JSON (or repeats a key).";
        goto Exit;
    }
    if (shape == CN_BODY_EVENT && !json_is_object(root)) {
        why = "The body is not a JSON object.";
        goto Exit;
    }
    if (shape == CN_BODY_EVENTS) {
        if (!json_is_object(root) || !json_is_array(list = json_object_get(root, "events"))) {
            why = "The body is not a JSON object with an \"events\" array.";
            goto Exit;
        }
        n = json_array_size(list);
    }

    err = cn_err_event_invalid;
    if (n != 0)
        evs = alloc->alloc(alloc->ctx, n * sizeof(*evs));
    for (size_t i = 0; i != n; ++i) {
        const json_t *event = list != NULL ? json_array_get(list, i) : root;
        if (!json_is_object(event)) {
            why = "An event is not a JSON object.";
            goto Exit;
        }
        evs[i] = (cn_event_t){{NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}};
        if ((why = parse_event(event, alloc, &evs[i])) != NULL)
            goto Exit;
    }
    err = NULL;
    *events = evs;
    *count = n;

Exit:
    if (detail != NULL)
        *detail = why;
    json_decref(root);
    return err;
}

bool cn_json_is_nonempty_string(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) != 0;
}

bool cn_json_is_token(const json_t *v)
{
    if (!json_is_string(v))
        return false;
    const char *s = json_string_value(v);
    for (size_t i = 0, len = json_string_length(v); i != len; ++i)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

cn_str_t cn_json_copy(const cn_alloc_t *alloc, const json_t *v)
{
    return cn_strdup(alloc, json_string_value(v), json_string_length(v));
}

int cn_json_copy_optional(const cn_alloc_t *alloc, const json_t *v, cn_str_t *out)
{
    *out = (cn_str_t){NULL, 0};
    if (!cn_json_is_nonempty_string(v))
        return 0;
    if (json_string_length(v) > CN_MAX_FIELD)
        return -1;
    *out = cn_json_copy(alloc, v);
    return 0;
}

cn_str_t cn_json_join(const cn_alloc_t *alloc, const json_t *const *parts, size_t n, char sep, unsigned upper)
{
    size_t len = n - 1;
    for (size_t i = 0; i != n; ++i)
        len += json_string_length(parts[i]);
    char *buf = alloc->alloc(alloc->ctx, len + 1), *p = buf;
    for (size_t i = 0; i != n; ++i) {
        size_t partlen = json_string_length(parts[i]);
        if (i != 0)
            *p++ = sep;
        memcpy(p, json_string_value(parts[i]), partlen);
        if ((upper >> i & 1) != 0)
            for (size_t j = 0; j != partlen; ++j)
                if (p[j] >= 'a' && p[j] <= 'z')
                    p[j] = (char)(p[j] - 'a' + 'A');
        p += partlen;
    }
    *p = '\0';
    return (cn_str_t){buf, len};
}
