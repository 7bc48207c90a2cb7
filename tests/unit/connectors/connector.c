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

#include <jansson.h>

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

/* A test event parser: keeps "id" (when it is a string) as the event id, refuses an event with "refuse", and records
 * each call. It sets nothing else, so the other fields show what the skeleton hands it. */
static const char refused[] = "The test parser refuses this event.";

static struct {
    size_t calls;
    const cn_alloc_t *alloc;
} seen;

static const char *on_event(const json_t *event, const cn_alloc_t *alloc, cn_event_t *out)
{
    ++seen.calls;
    seen.alloc = alloc;
    assert_true(json_is_object(event));
    assert_null(out->event_id.base);
    assert_null(out->event_type.base);
    assert_null(out->account.base);
    assert_null(out->resource_id.base);
    if (json_object_get(event, "refuse") != NULL)
        return refused;
    const json_t *id = json_object_get(event, "id");
    if (json_is_string(id))
        out->event_id = cn_json_copy(alloc, id);
    return NULL;
}

/* Parses body and checks it succeeds with the given ids in order (NULL: no "id"), every other field absent. */
static void assert_parses(cn_body_shape_t shape, cn_str_t body, size_t count, const char *const *ids)
{
    cn_event_t sentinel, *events = &sentinel;
    size_t got = 12345;
    const char *detail = "unset";
    memset(&seen, 0, sizeof(seen));
    assert_err(cn_parse_events(body, &test_alloc, shape, on_event, &events, &got, &detail), NULL);
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
    const char *err = cn_parse_events(body, &test_alloc, shape, on_event, &events, &count, &detail);
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
        assert_err(cn_parse_events(str(cases[i].unique), &test_alloc, CN_BODY_EVENTS, on_event, &events, &count, NULL),
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
    const char *detail = NULL;
    cn_event_t *events;
    size_t count;
    assert_err(cn_parse_events(str("{\"events\":[{\"refuse\":1}]}"), &test_alloc, CN_BODY_EVENTS, on_event, &events,
                               &count, &detail),
               cn_err_event_invalid);
    assert_ptr_equal(detail, refused);
}

static void test_parse_events_detail_may_be_null(void **state)
{
    cn_event_t *events = NULL;
    size_t count = 0;
    assert_err(cn_parse_events(str("{"), &test_alloc, CN_BODY_EVENTS, on_event, &events, &count, NULL),
               cn_err_body_malformed);
    assert_err(cn_parse_events(str("{\"events\":[5]}"), &test_alloc, CN_BODY_EVENTS, on_event, &events, &count, NULL),
               cn_err_event_invalid);
    assert_null(events);
    assert_err(cn_parse_events(str("{\"events\":[{\"id\":\"a\"}]}"), &test_alloc, CN_BODY_EVENTS, on_event, &events,
                               &count, NULL),
               NULL);
    assert_int_equal(count, 1);
    assert_cn_str(events[0].event_id, "a");
}

/* --- field helpers ------------------------------------------------------------------------------------------ */

/* A JSON string of exactly these bytes (which may not be valid UTF-8). */
static json_t *jstr(const char *s, size_t len)
{
    json_t *v = json_stringn_nocheck(s, len);
    assert_non_null(v);
    return v;
}

static void test_json_is_nonempty_string(void **state)
{
    json_t *a = json_string("a"), *empty = json_string(""), *five = json_integer(5), *null = json_null(),
           *arr = json_array();
    assert_true(cn_json_is_nonempty_string(a));
    assert_false(cn_json_is_nonempty_string(empty));
    assert_false(cn_json_is_nonempty_string(five));
    assert_false(cn_json_is_nonempty_string(null));
    assert_false(cn_json_is_nonempty_string(arr));
    assert_false(cn_json_is_nonempty_string(NULL));
    json_decref(a), json_decref(empty), json_decref(five), json_decref(null), json_decref(arr);
}

static void test_json_is_token(void **state)
{
    /* every byte value alone: only 0x21..0x7e are token bytes */
    for (unsigned c = 0; c != 256; ++c) {
        char b = (char)c;
        json_t *v = jstr(&b, 1);
        if (cn_json_is_token(v) != (c >= 0x21 && c <= 0x7e))
            fail_msg("byte 0x%02x: got %d", c, !(c >= 0x21 && c <= 0x7e));
        json_decref(v);
    }
    /* one bad byte anywhere spoils it */
    static const char *const bad[] = {"EV 1", " EV1", "EV1 ", "EV1\n", "EV\x7f", "EV\xc3\xa9", "EV\xc2\x80"};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        json_t *v = jstr(bad[i], strlen(bad[i]));
        if (cn_json_is_token(v))
            fail_msg("\"%s\" taken for a token", bad[i]);
        json_decref(v);
    }
    json_t *good = json_string("evt_1ABC-x.y:z~!"), *empty = json_string(""), *five = json_integer(5);
    assert_true(cn_json_is_token(good));
    assert_true(cn_json_is_token(empty)); /* as documented: callers check non-emptiness apart */
    assert_false(cn_json_is_token(five));
    assert_false(cn_json_is_token(NULL));
    json_decref(good), json_decref(empty), json_decref(five);
}

static void test_json_copy(void **state)
{
    json_t *v = json_string("abc");
    cn_str_t s = cn_json_copy(&test_alloc, v);
    assert_cn_str(s, "abc");
    assert_ptr_not_equal(s.base, json_string_value(v)); /* copied into the pool, not borrowed from the document */
    json_decref(v);
    assert_cn_str(s, "abc");
}

static void test_json_copy_optional(void **state)
{
    char max[CN_MAX_FIELD + 1];
    memset(max, 'x', sizeof(max));
    json_t *at_limit = jstr(max, CN_MAX_FIELD), *over = jstr(max, CN_MAX_FIELD + 1), *one = json_string("a");
    cn_str_t out = {"unset", 5};

    assert_int_equal(cn_json_copy_optional(&test_alloc, at_limit, &out), 0);
    assert_int_equal(out.len, CN_MAX_FIELD);
    assert_memory_equal(out.base, max, CN_MAX_FIELD);
    assert_int_equal(out.base[CN_MAX_FIELD], '\0');
    assert_ptr_not_equal(out.base, json_string_value(at_limit));
    assert_int_equal(cn_json_copy_optional(&test_alloc, one, &out), 0);
    assert_cn_str(out, "a");

    /* too long: refused, and nothing half-copied is left behind */
    out = (cn_str_t){"unset", 5};
    assert_int_equal(cn_json_copy_optional(&test_alloc, over, &out), -1);
    assert_null(out.base);
    assert_int_equal(out.len, 0);

    /* absent, null, another type or empty: left out, not an error */
    json_t *empty = json_string(""), *null = json_null(), *five = json_integer(5), *obj = json_object();
    json_t *const absent[] = {NULL, empty, null, five, obj};
    for (size_t i = 0; i != sizeof(absent) / sizeof(absent[0]); ++i) {
        out = (cn_str_t){"unset", 5};
        assert_int_equal(cn_json_copy_optional(&test_alloc, absent[i], &out), 0);
        assert_null(out.base);
        assert_int_equal(out.len, 0);
    }
    json_decref(at_limit), json_decref(over), json_decref(one), json_decref(empty), json_decref(null),
        json_decref(five), json_decref(obj);
}

static void test_json_join(void **state)
{
    json_t *a = json_string("Invoice"), *b = json_string("update"), *c = json_string("2018-02-09t09:18z"),
           *e = json_string("caf\xc3\xa9");
    const json_t *abc[] = {a, b, c}, *ae[] = {a, e};

    assert_cn_str(cn_json_join(&test_alloc, abc, 3, ':', 0), "Invoice:update:2018-02-09t09:18z");
    assert_cn_str(cn_json_join(&test_alloc, abc, 3, '.', 1u << 1), "Invoice.UPDATE.2018-02-09t09:18z");
    assert_cn_str(cn_json_join(&test_alloc, abc, 3, ':', 1u << 0 | 1u << 2), "INVOICE:update:2018-02-09T09:18Z");
    assert_cn_str(cn_json_join(&test_alloc, abc, 1, ':', 1u), "INVOICE");
    /* upper-casing is ASCII only: other bytes pass as they are */
    assert_cn_str(cn_json_join(&test_alloc, ae, 2, '.', 3u), "INVOICE.CAF\xc3\xa9");
    /* the parts themselves are not changed */
    assert_string_equal(json_string_value(a), "Invoice");
    json_decref(a), json_decref(b), json_decref(c), json_decref(e);
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
        TEST(test_json_is_nonempty_string),
        TEST(test_json_is_token),
        TEST(test_json_copy),
        TEST(test_json_copy_optional),
        TEST(test_json_join),
    };
    return cmocka_run_group_tests_name("connectors/connector", tests, NULL, NULL);
}
