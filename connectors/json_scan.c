/* SPDX-License-Identifier: MIT */
/*
 * json_scan.c: a validating single pass over a JSON text that keeps only asked-for strings (see json_scan.h).
 *
 * Recursive descent, one function per production, like jansson's own parser, whose acceptance it mirrors rule by
 * rule (the rule is named where it is not plain RFC 8259). Nothing is allocated for a value that is not asked for:
 * strings are checked in place, numbers are checked by their digits, and a repeated key is found through one hash
 * set of (object, key) for the whole text. Bodies reach this only after their signature verified, so the hash
 * needs no protection against chosen collisions; the set grows, so a text of many keys stays linear anyway.
 */
#include "json_scan.h"
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SEGMENTS_MAX 8
#define KEYSET_INLINE 512 /* slots on the stack: a Stripe event has about 100 keys in all */

static const char not_json[] = "The body is not valid JSON (or repeats a key).";
static const char not_object[] = "The body is not a JSON object.";
static const char not_envelope[] = "The body is not a JSON object with an \"events\" array.";

typedef struct st_key_slot_t {
    const char *key; /* NULL: empty slot */
    uint32_t len, object, hash;
} key_slot_t;

typedef struct st_scanner_t {
    const unsigned char *p, *end;
    const cn_alloc_t *alloc;
    size_t nfields;
    struct {
        const char *seg[SEGMENTS_MAX];
        size_t seglen[SEGMENTS_MAX], nseg;
    } path[CN_SCAN_FIELDS_MAX];
    bool events_shape;
    bool events_found;
    unsigned depth;
    uint32_t objects; /* objects opened so far: each key's object number */
    cn_jv_t *cur;     /* the current event's fields, or NULL outside any event */
    /* the events seen, grown by doubling in alloc */
    size_t nevents, evcap;
    bool *is_object;
    cn_jv_t *fields;
    /* the repeated-key check */
    key_slot_t *slots, inline_slots[KEYSET_INLINE];
    size_t nslots, used;
} scanner_t;

/* Bytes a string may hold as they are: not '"', '\\', a control character or a non-ASCII byte. */
static const unsigned char plain[256] = {
#define R8(v) v, v, v, v, v, v, v, v
    R8(0), R8(0), R8(0), R8(0),                                                  /* 0x00-0x1f */
    1,     1,     0,     1,     1,     1,     1,     1,     R8(1), R8(1), R8(1), /* 0x20-0x3f, '"' */
    R8(1), R8(1), R8(1), 1,     1,     1,     1,     0,     1,     1,     1,     /* 0x40-0x5f, '\\' */
    R8(1), R8(1), R8(1), R8(1),                                                  /* 0x60-0x7f */
    R8(0), R8(0), R8(0), R8(0), R8(0), R8(0), R8(0), R8(0),                      /* 0x80-0xbf */
    R8(0), R8(0), R8(0), R8(0), R8(0), R8(0), R8(0), R8(0),                      /* 0xc0-0xff */
#undef R8
};

static void skip_ws(scanner_t *s)
{
    while (s->p != s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        ++s->p;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits of a \u escape at p (p + 4 <= end checked by the caller). Returns the unit or -1. */
static int32_t read_u4(const unsigned char *p)
{
    int32_t v = 0;
    for (int i = 0; i != 4; ++i) {
        int h = hexval(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/* The length of the well-formed UTF-8 sequence at p (jansson's utf8_check_first and utf8_check_full: no overlong
 * form, no surrogate, nothing above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = *p;
    size_t n;
    uint32_t v;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2, v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3, v = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, v = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i != n; ++i) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3f);
    }
    if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    return n;
}

/*
 * Checks the string whose opening quote is at s->p and moves past its closing quote. *raw is its content as written,
 * *escaped whether it holds an escape. Returns 0, or -1 if it is not a string jansson takes: a control character, an
 * unknown escape, \u0000 (jansson's default refuses NUL), a lone or reversed surrogate, or malformed UTF-8.
 */
static int scan_string(scanner_t *s, cn_str_t *raw, bool *escaped)
{
    const unsigned char *p = ++s->p, *end = s->end;
    *escaped = false;
    for (;;) {
        while (p != end && plain[*p])
            ++p;
        if (p == end)
            return -1;
        if (*p == '"')
            break;
        if (*p == '\\') {
            *escaped = true;
            if (++p == end)
                return -1;
            switch (*p) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                ++p;
                break;
            case 'u': {
                if (end - p < 5)
                    return -1;
                int32_t u = read_u4(p + 1);
                p += 5;
                if (u <= 0 || (u >= 0xdc00 && u <= 0xdfff))
                    return -1;
                if (u >= 0xd800 && u <= 0xdbff) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
                        return -1;
                    int32_t lo = read_u4(p + 2);
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return -1;
                    p += 6;
                }
                break;
            }
            default:
                return -1;
            }
        } else if (*p < 0x20) {
            return -1;
        } else {
            size_t n = utf8_len(p, end);
            if (n == 0)
                return -1;
            p += n;
        }
    }
    *raw = (cn_str_t){(const char *)s->p, (size_t)(p - s->p)};
    s->p = p + 1;
    return 0;
}

static char *put_utf8(char *o, uint32_t v)
{
    if (v < 0x80) {
        *o++ = (char)v;
    } else if (v < 0x800) {
        *o++ = (char)(0xc0 | v >> 6);
        *o++ = (char)(0x80 | (v & 0x3f));
    } else if (v < 0x10000) {
        *o++ = (char)(0xe0 | v >> 12);
        *o++ = (char)(0x80 | (v >> 6 & 0x3f));
        *o++ = (char)(0x80 | (v & 0x3f));
    } else {
        *o++ = (char)(0xf0 | v >> 18);
        *o++ = (char)(0x80 | (v >> 12 & 0x3f));
        *o++ = (char)(0x80 | (v >> 6 & 0x3f));
        *o++ = (char)(0x80 | (v & 0x3f));
    }
    return o;
}

/* The value of a string scan_string accepted, decoded into alloc and NUL-terminated. No escape decodes to more bytes
 * than it is written with, so raw.len + 1 bytes suffice. */
static cn_str_t decode_string(const cn_alloc_t *alloc, cn_str_t raw, bool escaped)
{
    char *out = alloc->alloc(alloc->ctx, raw.len + 1), *o = out;
    if (!escaped) {
        memcpy(out, raw.base, raw.len);
        o += raw.len;
    } else {
        const unsigned char *p = (const unsigned char *)raw.base, *end = p + raw.len;
        while (p != end) {
            if (*p != '\\') {
                *o++ = (char)*p++;
                continue;
            }
            switch (*++p) {
            case 'b':
                *o++ = '\b';
                ++p;
                break;
            case 'f':
                *o++ = '\f';
                ++p;
                break;
            case 'n':
                *o++ = '\n';
                ++p;
                break;
            case 'r':
                *o++ = '\r';
                ++p;
                break;
            case 't':
                *o++ = '\t';
                ++p;
                break;
            case 'u': {
                uint32_t v = (uint32_t)read_u4(p + 1);
                p += 5;
                if (v >= 0xd800 && v <= 0xdbff) {
                    v = 0x10000 + ((v - 0xd800) << 10) + ((uint32_t)read_u4(p + 2) - 0xdc00);
                    p += 6;
                }
                o = put_utf8(o, v);
                break;
            }
            default:
                *o++ = (char)*p++;
                break; /* '"', '\\', '/' */
            }
        }
    }
    *o = '\0';
    return (cn_str_t){out, (size_t)(o - out)};
}

/*
 * jansson's lexer reads one byte past a number or a literal and ungets it; an ungot NUL byte is lost, because its
 * stream_get takes a NUL in its buffer for "nothing buffered" and reads on. So jansson accepts "[1\0]" and
 * "{\"a\":null\0}" as if the NUL were not there (only one, and only right after such a token), and so does this.
 */
static void skip_lost_nul(scanner_t *s)
{
    if (s->p != s->end && *s->p == '\0')
        ++s->p;
}

/* Checks the number at s->p and moves past it: jansson's lex_scan_number. An integer (no fraction, no exponent)
 * must fit int64_t; a real must not overflow a double. */
static int scan_number(scanner_t *s)
{
    const unsigned char *start = s->p, *p = s->p, *end = s->end;
    bool negative = false, integer = true;
    if (p != end && *p == '-')
        ++p, negative = true;
    const unsigned char *digits = p;
    if (p == end || *p < '0' || *p > '9')
        return -1;
    if (*p == '0') {
        ++p;
        if (p != end && *p >= '0' && *p <= '9')
            return -1;
    } else {
        while (p != end && *p >= '0' && *p <= '9')
            ++p;
    }
    size_t ndigits = (size_t)(p - digits);
    if (p != end && *p == '.') {
        integer = false;
        if (++p == end || *p < '0' || *p > '9')
            return -1;
        while (p != end && *p >= '0' && *p <= '9')
            ++p;
    }
    if (p != end && (*p == 'e' || *p == 'E')) {
        integer = false;
        if (++p != end && (*p == '+' || *p == '-'))
            ++p;
        if (p == end || *p < '0' || *p > '9')
            return -1;
        while (p != end && *p >= '0' && *p <= '9')
            ++p;
    }
    s->p = p;
    skip_lost_nul(s);
    if (integer) {
        /* no leading zeros, so the digit count decides, and at 19 digits the text compares as the number */
        static const char max[] = "9223372036854775807", min[] = "9223372036854775808";
        return ndigits < 19 || (ndigits == 19 && memcmp(digits, negative ? min : max, 19) <= 0) ? 0 : -1;
    }
    /* a real: only its overflow is refused, which strtod tells (the text is short: copy it to terminate it) */
    size_t len = (size_t)(p - start);
    char buf[64], *text = len < sizeof(buf) ? buf : malloc(len + 1);
    if (text == NULL)
        return -1;
    memcpy(text, start, len);
    text[len] = '\0';
    errno = 0;
    double v = strtod(text, NULL);
    int r = (v == HUGE_VAL || v == -HUGE_VAL) && errno == ERANGE ? -1 : 0;
    if (text != buf)
        free(text);
    return r;
}

static uint32_t hash_key(const char *key, size_t len, uint32_t object)
{
    uint32_t h = 2166136261u ^ object * 16777619u; /* FNV-1a, seeded with the object's number */
    for (size_t i = 0; i != len; ++i)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h;
}

/* Adds key (decoded) of the given object to the set. Returns 0, or -1 if the object already has it (or on ENOMEM). */
static int add_key(scanner_t *s, const char *key, size_t len, uint32_t object)
{
    if ((s->used + 1) * 2 > s->nslots) {
        size_t n = s->nslots * 2;
        key_slot_t *bigger = calloc(n, sizeof(*bigger));
        if (bigger == NULL)
            return -1;
        for (size_t i = 0; i != s->nslots; ++i) {
            if (s->slots[i].key == NULL)
                continue;
            size_t j = s->slots[i].hash & (n - 1);
            while (bigger[j].key != NULL)
                j = (j + 1) & (n - 1);
            bigger[j] = s->slots[i];
        }
        if (s->slots != s->inline_slots)
            free(s->slots);
        s->slots = bigger;
        s->nslots = n;
    }
    uint32_t h = hash_key(key, len, object);
    size_t j = h & (s->nslots - 1);
    for (; s->slots[j].key != NULL; j = (j + 1) & (s->nslots - 1))
        if (s->slots[j].hash == h && s->slots[j].object == object && s->slots[j].len == len &&
            memcmp(s->slots[j].key, key, len) == 0)
            return -1;
    s->slots[j] = (key_slot_t){key, (uint32_t)len, object, h};
    ++s->used;
    return 0;
}

static void set_fields(scanner_t *s, uint32_t mask, cn_jv_kind_t kind, cn_str_t value)
{
    for (size_t f = 0; mask != 0; ++f, mask >>= 1)
        if (mask & 1)
            s->cur[f] = (cn_jv_t){kind, value};
}

/* Starts event number s->nevents: its slot, whether it is an object, its fields all absent. */
static void begin_event(scanner_t *s, bool is_object)
{
    if (s->nevents == s->evcap) {
        size_t cap = s->evcap == 0 ? 8 : s->evcap * 2;
        bool *objs = s->alloc->alloc(s->alloc->ctx, cap * sizeof(*objs));
        cn_jv_t *fields = s->alloc->alloc(s->alloc->ctx, cap * (s->nfields ? s->nfields : 1) * sizeof(*fields));
        if (s->nevents != 0) {
            memcpy(objs, s->is_object, s->nevents * sizeof(*objs));
            memcpy(fields, s->fields, s->nevents * s->nfields * sizeof(*fields));
        }
        s->is_object = objs, s->fields = fields, s->evcap = cap;
    }
    s->is_object[s->nevents] = is_object;
    s->cur = s->fields + s->nevents * s->nfields;
    for (size_t f = 0; f != s->nfields; ++f)
        s->cur[f] = (cn_jv_t){CN_JV_ABSENT, {NULL, 0}};
    ++s->nevents;
}

static int scan_value(scanner_t *s, uint32_t capture, uint32_t descend, size_t level, bool events);

static int scan_object(scanner_t *s, uint32_t mask, size_t level)
{
    uint32_t object = ++s->objects;
    bool root = s->depth == 1;
    ++s->p; /* '{' */
    skip_ws(s);
    if (s->p != s->end && *s->p == '}') {
        ++s->p;
        return 0;
    }
    for (;;) {
        cn_str_t raw, key;
        bool escaped;
        if (s->p == s->end || *s->p != '"' || scan_string(s, &raw, &escaped) != 0)
            return -1;
        key = escaped ? decode_string(s->alloc, raw, true) : raw;
        if (add_key(s, key.base, key.len, object) != 0)
            return -1;
        skip_ws(s);
        if (s->p == s->end || *s->p != ':')
            return -1;
        ++s->p;
        skip_ws(s);
        uint32_t capture = 0, descend = 0;
        for (size_t f = 0; f != s->nfields; ++f) {
            if (!(mask >> f & 1) || s->path[f].nseg <= level || s->path[f].seglen[level] != key.len ||
                memcmp(s->path[f].seg[level], key.base, key.len) != 0)
                continue;
            if (s->path[f].nseg == level + 1)
                capture |= 1u << f;
            else
                descend |= 1u << f;
        }
        bool events = root && s->events_shape && key.len == 6 && memcmp(key.base, "events", 6) == 0;
        if (scan_value(s, capture, descend, level + 1, events) != 0)
            return -1;
        skip_ws(s);
        if (s->p == s->end)
            return -1;
        if (*s->p == '}') {
            ++s->p;
            return 0;
        }
        if (*s->p != ',')
            return -1;
        ++s->p;
        skip_ws(s);
    }
}

/* An array; the top-level "events" array of CN_BODY_EVENTS makes each of its elements an event. */
static int scan_array(scanner_t *s, bool events)
{
    uint32_t all = (uint32_t)((1ull << s->nfields) - 1);
    ++s->p; /* '[' */
    skip_ws(s);
    if (s->p != s->end && *s->p == ']') {
        ++s->p;
        return 0;
    }
    for (;;) {
        if (events) {
            begin_event(s, s->p != s->end && *s->p == '{');
            if (scan_value(s, 0, all, 0, false) != 0)
                return -1;
            s->cur = NULL;
        } else if (scan_value(s, 0, 0, 0, false) != 0) {
            return -1;
        }
        skip_ws(s);
        if (s->p == s->end)
            return -1;
        if (*s->p == ']') {
            ++s->p;
            return 0;
        }
        if (*s->p != ',')
            return -1;
        ++s->p;
        skip_ws(s);
    }
}

static int scan_literal(scanner_t *s, const char *word, size_t len)
{
    if ((size_t)(s->end - s->p) < len || memcmp(s->p, word, len) != 0)
        return -1;
    s->p += len;
    /* jansson reads a whole run of letters as one token: "nullx" is no literal */
    if (s->p != s->end && ((*s->p >= 'a' && *s->p <= 'z') || (*s->p >= 'A' && *s->p <= 'Z')))
        return -1;
    skip_lost_nul(s);
    return 0;
}

/*
 * One value at s->p (whitespace skipped). capture: the fields this value is; descend: the fields below it, when it
 * is an object; level: how many segments of their paths are matched. Depth counts every value, as jansson's
 * parse_value does.
 */
static int scan_value(scanner_t *s, uint32_t capture, uint32_t descend, size_t level, bool events)
{
    if (++s->depth > CN_SCAN_DEPTH_MAX || s->p == s->end)
        return -1;
    int r;
    cn_str_t none = {NULL, 0};
    switch (*s->p) {
    case '{':
        set_fields(s, capture, CN_JV_OTHER, none);
        r = scan_object(s, descend, level);
        break;
    case '[':
        set_fields(s, capture, CN_JV_OTHER, none);
        s->events_found |= events;
        r = scan_array(s, events);
        break;
    case '"': {
        cn_str_t raw;
        bool escaped;
        if ((r = scan_string(s, &raw, &escaped)) == 0 && capture != 0)
            set_fields(s, capture, CN_JV_STRING, decode_string(s->alloc, raw, escaped));
        break;
    }
    case 't':
        r = scan_literal(s, "true", 4);
        set_fields(s, capture, CN_JV_OTHER, none);
        break;
    case 'f':
        r = scan_literal(s, "false", 5);
        set_fields(s, capture, CN_JV_OTHER, none);
        break;
    case 'n':
        r = scan_literal(s, "null", 4);
        set_fields(s, capture, CN_JV_NULL, none);
        break;
    default:
        r = scan_number(s);
        set_fields(s, capture, CN_JV_OTHER, none);
        break;
    }
    --s->depth;
    return r;
}

const char *cn_json_scan(cn_str_t body, cn_body_shape_t shape, const char *const *paths, size_t nfields,
                         const cn_alloc_t *alloc, cn_scan_t *out)
{
    scanner_t *s = malloc(sizeof(*s));
    const char *err = not_json;
    if (s == NULL || nfields > CN_SCAN_FIELDS_MAX)
        goto Exit;
    *s = (scanner_t){.p = (const unsigned char *)body.base,
                     .end = (const unsigned char *)body.base + body.len,
                     .alloc = alloc,
                     .nfields = nfields,
                     .events_shape = shape == CN_BODY_EVENTS};
    s->slots = s->inline_slots;
    s->nslots = KEYSET_INLINE;
    memset(s->inline_slots, 0, sizeof(s->inline_slots));
    for (size_t f = 0; f != nfields; ++f) {
        const char *seg = paths[f], *dot;
        do {
            if (s->path[f].nseg == SEGMENTS_MAX)
                goto Exit;
            dot = strchr(seg, '.');
            s->path[f].seg[s->path[f].nseg] = seg;
            s->path[f].seglen[s->path[f].nseg++] = dot != NULL ? (size_t)(dot - seg) : strlen(seg);
            seg = dot + 1;
        } while (dot != NULL);
    }

    if (body.base == NULL)
        goto Exit;
    skip_ws(s);
    /* jansson without JSON_DECODE_ANY: the text is an object or an array */
    if (s->p == s->end || (*s->p != '{' && *s->p != '['))
        goto Exit;
    bool root_object = *s->p == '{';
    if (shape == CN_BODY_EVENT && root_object)
        begin_event(s, true);
    if (scan_value(s, 0, shape == CN_BODY_EVENT ? (uint32_t)((1ull << nfields) - 1) : 0, 0, false) != 0)
        goto Exit;
    skip_ws(s);
    if (s->p != s->end)
        goto Exit;

    if (shape == CN_BODY_EVENT && !root_object) {
        err = not_object;
        goto Exit;
    }
    if (shape == CN_BODY_EVENTS && !(root_object && s->events_found)) {
        err = not_envelope;
        goto Exit;
    }
    *out = (cn_scan_t){s->nevents, s->is_object, s->fields};
    err = NULL;

Exit:
    if (s != NULL && s->slots != s->inline_slots)
        free(s->slots);
    free(s);
    return err;
}
