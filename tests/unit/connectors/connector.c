/* SPDX-License-Identifier: MIT */
/* connector.c: tests what every connector shares: error codes, hex decoding, base64 encoding, copying, and the parse
 * skeleton (JSON, envelope, one record per event) with its field helpers, through a test event parser. */
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

/* --- the parse skeleton ------------------------------------------------------------------------------------- */

/* A test event parser: keeps "id" (when it is a string) as the event id, refuses an event that has "refuse" (of any
 * kind), and records each call. It sets nothing else, so the other fields show what the skeleton hands it. "id" and
 * "refuse" are two fields, so an event's fields are found at a stride of two: a skeleton that got the stride wrong
 * would hand event i another event's "id". */
static const char refused[] = "The test parser refuses this event.";
static const char *const test_paths[] = {"id", "refuse"};
static const cn_fields_t test_fields = {test_paths, 2};

static struct {
    size_t calls;
    const cn_alloc_t *alloc;
} seen;

static const char *on_event(const cn_jv_t *fields, const cn_alloc_t *alloc, cn_event_t *out)
{
    ++seen.calls;
    seen.alloc = alloc;
    assert_non_null(fields);
    assert_null(out->event_id.base);
    assert_null(out->event_type.base);
    assert_null(out->account.base);
    assert_null(out->resource_id.base);
    if (fields[1].kind != CN_JV_ABSENT)
        return refused;
    if (fields[0].kind == CN_JV_STRING)
        out->event_id = fields[0].s;
    return NULL;
}

/* Parses body and checks it succeeds with the given ids in order (NULL: no "id"), every other field absent. */
static void assert_parses(cn_body_shape_t shape, cn_str_t body, size_t count, const char *const *ids)
{
    cn_event_t sentinel, *events = &sentinel;
    size_t got = 12345;
    const char *detail = "unset";
    memset(&seen, 0, sizeof(seen));
    assert_err(cn_parse_events(body, &test_alloc, shape, &test_fields, on_event, &events, &got, &detail), NULL);
    assert_null(detail);
    assert_int_equal(got, count);
    assert_int_equal(seen.calls, count);
    if (count == 0) {
        assert_null(events);
        return;
    }
    assert_ptr_equal(seen.alloc, &test_alloc);
    assert_non_null(events);
    for (size_t i = 0; i != count; ++i) {
        assert_cn_str(events[i].event_id, ids[i]);
        assert_cn_str(events[i].event_type, NULL);
        assert_cn_str(events[i].account, NULL);
        assert_cn_str(events[i].resource_id, NULL);
    }
}

/* Parses body and checks it fails with want and exactly the detail want_detail, after calls calls of the event
 * parser, leaving the outputs as they were. */
static void assert_refused(cn_body_shape_t shape, cn_str_t body, const char *want, const char *want_detail,
                           size_t calls)
{
    cn_event_t sentinel, *events = &sentinel;
    size_t count = 12345;
    const char *detail = NULL;
    memset(&seen, 0, sizeof(seen));
    const char *err = cn_parse_events(body, &test_alloc, shape, &test_fields, on_event, &events, &count, &detail);
    if (err != want)
        fail_msg("body %.*s: got %s, want %s", (int)(body.len > 300 ? 300 : body.len),
                 body.base != NULL ? body.base : "", err != NULL ? err : "NULL (success)", want);
    assert_ptr_equal(events, &sentinel);
    assert_int_equal(count, 12345);
    assert_non_null(detail);
    assert_string_equal(detail, want_detail);
    assert_int_equal(seen.calls, calls);
}

#define NOT_JSON "The body is not valid JSON (or repeats a key)."
#define NOT_OBJECT "The body is not a JSON object."
#define NOT_ENVELOPE "The body is not a JSON object with an \"events\" array."
#define NOT_EVENT_OBJECT "An event is not a JSON object."

static void test_parse_events_in_order(void **state)
{
    static const char *const abc[] = {"a", "b", "c"}, *const mixed[] = {"a", NULL, "c"};
    assert_parses(CN_BODY_EVENTS, str("{\"events\":[{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}]}"), 3, abc);
    /* other members of the envelope and of an event are not looked at; an event may lack what the parser wants */
    assert_parses(CN_BODY_EVENTS,
                  str("{\"meta\":{\"events\":5},\"events\":[{\"id\":\"a\",\"x\":[1]},{},{\"id\":\"c\"}],\"n\":1}"), 3,
                  mixed);
    /* the fields are the event's own members, decoded; a member of a nested object or of the envelope is not one */
    assert_parses(
        CN_BODY_EVENTS,
        str("{\"id\":\"env\",\"events\":[{\"\\u0069d\":\"\\u0061\"},{\"id\":5,\"x\":{\"refuse\":1,\"id\":\"b\"}},"
            "{\"x\":{\"id\":\"b\"},\"id\":\"c\"}],\"refuse\":1}"),
        3, mixed);
}

static void test_parse_events_empty_array(void **state)
{
    assert_parses(CN_BODY_EVENTS, str("{\"events\":[]}"), 0, NULL);
    assert_parses(CN_BODY_EVENTS, str(" {\"firstEventSequence\":0, \"events\" : [ ] }\n"), 0, NULL);
}

static void test_parse_events_many(void **state)
{
    /* no cap on the number of events: the gateway's body limit bounds it */
    enum { N = 5000 };
    char *buf = pool_alloc(NULL, N * 16 + 32), **ids = pool_alloc(NULL, N * sizeof(*ids));
    size_t len = (size_t)sprintf(buf, "{\"events\":[");
    for (size_t i = 0; i != N; ++i) {
        ids[i] = pool_alloc(NULL, 8);
        sprintf(ids[i], "e%zu", i);
        len += (size_t)sprintf(buf + len, "%s{\"id\":\"%s\"}", i != 0 ? "," : "", ids[i]);
    }
    len += (size_t)sprintf(buf + len, "]}");
    assert_parses(CN_BODY_EVENTS, (cn_str_t){buf, len}, N, (const char *const *)ids);
}

static void test_parse_events_not_json(void **state)
{
    static const char *const bad[] = {
        "",
        "{",
        "{\"events\":[]",
        "{\"events\":[]}x",
        "{\"events\":[]},",
        "{'events':[]}",
        "{\"events\":[],}",
        "\xef\xbb\xbf{\"events\":[]}",           /* a byte order mark */
        "{\"events\":[{\"id\":\"\xff\"}]}",      /* not UTF-8 */
        "{\"events\":[{\"id\":\"a\\u0000b\"}]}", /* a NUL would cut every C string copied from it */
        "{\"events\":[{\"id\":\"\\ud800\"}]}",   /* a lone surrogate */
        /* jansson decodes only an object or an array at the top */
        "5",
        "\"events\"",
        "null",
        "true",
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        assert_refused(CN_BODY_EVENTS, str(bad[i]), cn_err_body_malformed, NOT_JSON, 0);
        assert_refused(CN_BODY_EVENT, str(bad[i]), cn_err_body_malformed, NOT_JSON, 0);
    }
    assert_refused(CN_BODY_EVENTS, (cn_str_t){NULL, 0}, cn_err_body_malformed, NOT_JSON, 0);
    assert_refused(CN_BODY_EVENT, (cn_str_t){NULL, 0}, cn_err_body_malformed, NOT_JSON, 0);
    /* the length is what counts, not a NUL */
    assert_refused(CN_BODY_EVENTS, (cn_str_t){"{\"events\":[]}", 12}, cn_err_body_malformed, NOT_JSON, 0);
    assert_refused(CN_BODY_EVENTS, (cn_str_t){"{\"events\":[]}\0", 14}, cn_err_body_malformed, NOT_JSON, 0);
}

static void test_parse_events_duplicate_keys(void **state)
{
    /* a repeated key anywhere refuses the body before any event is looked at: no reader may pick a different copy */
    static const struct {
        const char *dup, *unique;
    } cases[] = {
        {"{\"events\":[],\"events\":[{\"id\":\"a\"}]}", "{\"events\":[],\"Events\":[{\"id\":\"a\"}]}"},
        {"{\"events\":[{\"id\":\"a\",\"id\":\"b\"}]}", "{\"events\":[{\"id\":\"a\",\"ID\":\"b\"}]}"},
        {"{\"events\":[{\"id\":\"a\"},{\"x\":{\"k\":1,\"k\":1}}]}", "{\"events\":[{\"id\":\"a\"},{\"x\":{\"k\":1}}]}"},
        {"{\"meta\":{\"w\":1,\"w\":2},\"events\":[]}", "{\"meta\":{\"w\":1,\"v\":2},\"events\":[]}"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        assert_refused(CN_BODY_EVENTS, str(cases[i].dup), cn_err_body_malformed, NOT_JSON, 0);
        /* the same body without the repetition parses: it is the repetition that is refused */
        cn_event_t *events;
        size_t count;
        assert_err(cn_parse_events(str(cases[i].unique), &test_alloc, CN_BODY_EVENTS, &test_fields, on_event, &events,
                                   &count, NULL),
                   NULL);
    }
    static const char *const one[] = {"a"};
    assert_refused(CN_BODY_EVENT, str("{\"id\":\"a\",\"id\":\"a\"}"), cn_err_body_malformed, NOT_JSON, 0);
    assert_refused(CN_BODY_EVENT, str("{\"id\":\"a\",\"data\":{\"object\":{\"id\":1,\"id\":2}}}"),
                   cn_err_body_malformed, NOT_JSON, 0);
    assert_parses(CN_BODY_EVENT, str("{\"id\":\"a\",\"data\":{\"object\":{\"id\":1}}}"), 1, one);
}

static void test_parse_events_not_envelope(void **state)
{
    static const char *const bad[] = {
        "[]",
        "[{\"id\":\"a\"}]",
        "{}",
        "{\"events\":null}",
        "{\"events\":{}}",
        "{\"events\":\"a\"}",
        "{\"events\":5}",
        "{\"Events\":[]}",
        "{\"event\":[]}",
        "{\"data\":{\"events\":[]}}",
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i)
        assert_refused(CN_BODY_EVENTS, str(bad[i]), cn_err_body_malformed, NOT_ENVELOPE, 0);
}

static void test_parse_one_event(void **state)
{
    static const char *const evt[] = {"evt"}, *const none[] = {NULL};
    /* the body is the event; "events" means nothing in this shape */
    assert_parses(CN_BODY_EVENT, str("{\"id\":\"evt\",\"events\":[{\"id\":\"x\"},{\"id\":\"y\"}]}"), 1, evt);
    assert_parses(CN_BODY_EVENT, str("{}"), 1, none);
    static const char *const bad[] = {"[]", "[{\"id\":\"evt\"}]", "[[]]"};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i)
        assert_refused(CN_BODY_EVENT, str(bad[i]), cn_err_body_malformed, NOT_OBJECT, 0);
    assert_refused(CN_BODY_EVENT, str("{\"refuse\":1}"), cn_err_event_invalid, refused, 1);
}

static void test_parse_events_element_not_object(void **state)
{
    static const char *const elements[] = {"5", "null", "[]", "[{\"id\":\"b\"}]", "\"b\"", "true"};
    char body[128];
    for (size_t i = 0; i != sizeof(elements) / sizeof(elements[0]); ++i) {
        /* the event before it reached the parser; the one after it never does */
        snprintf(body, sizeof(body), "{\"events\":[{\"id\":\"a\"},%s,{\"id\":\"c\"}]}", elements[i]);
        assert_refused(CN_BODY_EVENTS, str(body), cn_err_event_invalid, NOT_EVENT_OBJECT, 1);
        snprintf(body, sizeof(body), "{\"events\":[%s]}", elements[i]);
        assert_refused(CN_BODY_EVENTS, str(body), cn_err_event_invalid, NOT_EVENT_OBJECT, 0);
    }
}

static void test_parse_events_refusal(void **state)
{
    /* the parser's own sentence is the detail, and the first bad event in the order sent is the one reported */
    assert_refused(CN_BODY_EVENTS, str("{\"events\":[{\"id\":\"a\"},{\"refuse\":1},{\"id\":\"c\"},5]}"),
                   cn_err_event_invalid, refused, 2);
    assert_refused(CN_BODY_EVENTS, str("{\"events\":[{\"id\":\"a\"},5,{\"refuse\":1}]}"), cn_err_event_invalid,
                   NOT_EVENT_OBJECT, 1);
    /* "refuse" of any kind is there, null too */
    assert_refused(CN_BODY_EVENTS, str("{\"events\":[{\"id\":\"a\"},{\"id\":\"b\",\"refuse\":null}]}"),
                   cn_err_event_invalid, refused, 2);
    assert_refused(CN_BODY_EVENT, str("{\"id\":\"a\",\"refuse\":\"\"}"), cn_err_event_invalid, refused, 1);
    const char *detail = NULL;
    cn_event_t *events;
    size_t count;
    assert_err(cn_parse_events(str("{\"events\":[{\"refuse\":1}]}"), &test_alloc, CN_BODY_EVENTS, &test_fields,
                               on_event, &events, &count, &detail),
               cn_err_event_invalid);
    assert_ptr_equal(detail, refused);
}

static void test_parse_events_detail_may_be_null(void **state)
{
    cn_event_t *events = NULL;
    size_t count = 0;
    assert_err(cn_parse_events(str("{"), &test_alloc, CN_BODY_EVENTS, &test_fields, on_event, &events, &count, NULL),
               cn_err_body_malformed);
    assert_err(cn_parse_events(str("{\"events\":[5]}"), &test_alloc, CN_BODY_EVENTS, &test_fields, on_event, &events,
                               &count, NULL),
               cn_err_event_invalid);
    assert_null(events);
    assert_err(cn_parse_events(str("{\"events\":[{\"id\":\"a\"}]}"), &test_alloc, CN_BODY_EVENTS, &test_fields,
                               on_event, &events, &count, NULL),
               NULL);
    assert_int_equal(count, 1);
    assert_cn_str(events[0].event_id, "a");
}

/* --- field helpers ------------------------------------------------------------------------------------------ */

/* A string field of exactly these bytes (which may not be valid UTF-8). */
static cn_jv_t jstr(const char *s, size_t len)
{
    return (cn_jv_t){CN_JV_STRING, {s, len}};
}

/* A field of a kind other than string. Its s holds a good token anyway, so that a helper that looked at s without
 * looking at the kind would be caught. */
static cn_jv_t jkind(cn_jv_kind_t kind)
{
    return (cn_jv_t){kind, {"a", 1}};
}

static void test_jv_is_nonempty_string(void **state)
{
    cn_jv_t a = jstr("a", 1), empty = jstr("", 0), nul = jstr("\0", 1);
    assert_true(cn_jv_is_nonempty_string(&a));
    assert_true(cn_jv_is_nonempty_string(&nul)); /* the length counts, not a NUL (the scan never makes one) */
    assert_false(cn_jv_is_nonempty_string(&empty));
    static const cn_jv_kind_t others[] = {CN_JV_ABSENT, CN_JV_NULL, CN_JV_OTHER};
    for (size_t i = 0; i != sizeof(others) / sizeof(others[0]); ++i) {
        cn_jv_t v = jkind(others[i]);
        if (cn_jv_is_nonempty_string(&v))
            fail_msg("kind %d taken for a non-empty string", (int)others[i]);
    }
}

static void test_jv_is_token(void **state)
{
    /* every byte value alone: only 0x21..0x7e are token bytes */
    for (unsigned c = 0; c != 256; ++c) {
        char b = (char)c;
        cn_jv_t v = jstr(&b, 1);
        if (cn_jv_is_token(&v) != (c >= 0x21 && c <= 0x7e))
            fail_msg("byte 0x%02x: got %d", c, !(c >= 0x21 && c <= 0x7e));
    }
    /* one bad byte anywhere spoils it */
    static const char *const bad[] = {"EV 1", " EV1", "EV1 ", "EV1\n", "EV\x7f", "EV\xc3\xa9", "EV\xc2\x80"};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        cn_jv_t v = jstr(bad[i], strlen(bad[i]));
        if (cn_jv_is_token(&v))
            fail_msg("\"%s\" taken for a token", bad[i]);
    }
    /* the length is what counts: a bad byte past it is not looked at, one inside it is */
    cn_jv_t prefix = jstr("EV1 x", 3), with_nul = jstr("EV\0001", 4);
    assert_true(cn_jv_is_token(&prefix));
    assert_false(cn_jv_is_token(&with_nul));
    cn_jv_t good = jstr("evt_1ABC-x.y:z~!", 16), empty = jstr("", 0);
    assert_true(cn_jv_is_token(&good));
    assert_true(cn_jv_is_token(&empty)); /* as documented: callers check non-emptiness apart */
    static const cn_jv_kind_t others[] = {CN_JV_ABSENT, CN_JV_NULL, CN_JV_OTHER};
    for (size_t i = 0; i != sizeof(others) / sizeof(others[0]); ++i) {
        cn_jv_t v = jkind(others[i]);
        if (cn_jv_is_token(&v))
            fail_msg("kind %d taken for a token", (int)others[i]);
    }
}

static void test_jv_optional(void **state)
{
    char max[CN_MAX_FIELD + 1];
    memset(max, 'x', sizeof(max));
    cn_jv_t at_limit = jstr(max, CN_MAX_FIELD), over = jstr(max, CN_MAX_FIELD + 1), one = jstr("a", 1);
    cn_str_t out = {"unset", 5};

    /* the value already lives in the parse's allocator: it is handed on as it is, not copied */
    assert_int_equal(cn_jv_optional(&at_limit, &out), 0);
    assert_ptr_equal(out.base, max);
    assert_int_equal(out.len, CN_MAX_FIELD);
    assert_int_equal(cn_jv_optional(&one, &out), 0);
    assert_cn_str(out, "a");

    /* too long: refused, and nothing is left behind */
    out = (cn_str_t){"unset", 5};
    assert_int_equal(cn_jv_optional(&over, &out), -1);
    assert_null(out.base);
    assert_int_equal(out.len, 0);

    /* absent, null, another kind or empty: left out, not an error */
    const cn_jv_t absent[] = {jkind(CN_JV_ABSENT),
                              jkind(CN_JV_NULL),
                              jkind(CN_JV_OTHER),
                              jstr("", 0),
                              /* the kind decides, even when s is long */
                              {CN_JV_OTHER, {max, CN_MAX_FIELD + 1}}};
    for (size_t i = 0; i != sizeof(absent) / sizeof(absent[0]); ++i) {
        out = (cn_str_t){"unset", 5};
        if (cn_jv_optional(&absent[i], &out) != 0)
            fail_msg("case %zu: refused", i);
        if (out.base != NULL || out.len != 0)
            fail_msg("case %zu: got \"%.*s\", want absent", i, (int)out.len, out.base != NULL ? out.base : "");
    }
}

static void test_jv_join(void **state)
{
    char invoice[] = "Invoice";
    cn_jv_t a = jstr(invoice, 7), b = jstr("update", 6), c = jstr("2018-02-09t09:18z", 17), e = jstr("caf\xc3\xa9", 5),
            empty = jstr("", 0), prefix = jstr("abcdef", 2);
    const cn_jv_t *abc[] = {&a, &b, &c}, *ae[] = {&a, &e}, *gaps[] = {&empty, &a, &empty}, *pre[] = {&b, &prefix};

    assert_cn_str(cn_jv_join(&test_alloc, abc, 3, ':', 0), "Invoice:update:2018-02-09t09:18z");
    assert_cn_str(cn_jv_join(&test_alloc, abc, 3, '.', 1u << 1), "Invoice.UPDATE.2018-02-09t09:18z");
    assert_cn_str(cn_jv_join(&test_alloc, abc, 3, ':', 1u << 0 | 1u << 2), "INVOICE:update:2018-02-09T09:18Z");
    assert_cn_str(cn_jv_join(&test_alloc, abc, 1, ':', 1u), "INVOICE");
    /* upper-casing is ASCII only: other bytes pass as they are */
    assert_cn_str(cn_jv_join(&test_alloc, ae, 2, '.', 3u), "INVOICE.CAF\xc3\xa9");
    /* empty parts still get their separators; a part is its length, not up to a NUL */
    assert_cn_str(cn_jv_join(&test_alloc, gaps, 3, ':', 0), ":Invoice:");
    assert_cn_str(cn_jv_join(&test_alloc, pre, 2, '-', 1u << 1), "update-AB");
    /* the parts themselves are not changed, and the result is not one of them */
    cn_str_t joined = cn_jv_join(&test_alloc, abc, 1, ':', 1u);
    assert_string_equal(invoice, "Invoice");
    assert_ptr_not_equal(joined.base, invoice);
}

#define TEST(f) cmocka_unit_test_teardown(f, pool_release)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_error_codes),
        TEST(test_hex32_decode),
        TEST(test_hex32_decode_rejects),
        TEST(test_base64_vectors),
        TEST(test_base64_every_sextet),
        TEST(test_strdup),
        TEST(test_parse_events_in_order),
        TEST(test_parse_events_empty_array),
        TEST(test_parse_events_many),
        TEST(test_parse_events_not_json),
        TEST(test_parse_events_duplicate_keys),
        TEST(test_parse_events_not_envelope),
        TEST(test_parse_one_event),
        TEST(test_parse_events_element_not_object),
        TEST(test_parse_events_refusal),
        TEST(test_parse_events_detail_may_be_null),
        TEST(test_jv_is_nonempty_string),
        TEST(test_jv_is_token),
        TEST(test_jv_optional),
        TEST(test_jv_join),
    };
    return cmocka_run_group_tests_name("connectors/connector", tests, NULL, NULL);
}
