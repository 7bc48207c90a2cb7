/* SPDX-License-Identifier: MIT */
/*
 * json_scan.c: holds cn_json_scan to jansson's json_loadb(JSON_REJECT_DUPLICATES), which it replaced and must agree
 * with text by text: the same texts accepted, and at each asked-for path the same value a chain of json_object_get
 * finds. A table of edge cases, nesting around jansson's depth limit, objects of many keys, and seeded mutants of real
 * Stripe and GoCardless bodies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "json_scan.h"

#include "scaffold.h"

/* --- the oracle --------------------------------------------------------------------------------------------- */

/* The three sentences the scanner refuses with, found once by their documented text and compared by pointer after. */
static const char *not_json, *not_object, *not_envelope;

static void find_sentences(void)
{
    cn_scan_t scan;
    not_json = cn_json_scan(str("x"), CN_BODY_EVENT, NULL, 0, &test_alloc, &scan);
    not_object = cn_json_scan(str("[]"), CN_BODY_EVENT, NULL, 0, &test_alloc, &scan);
    not_envelope = cn_json_scan(str("{}"), CN_BODY_EVENTS, NULL, 0, &test_alloc, &scan);
    assert_non_null(not_json);
    assert_non_null(not_object);
    assert_non_null(not_envelope);
    assert_string_equal(not_json, "The body is not valid JSON (or repeats a key).");
    assert_string_equal(not_object, "The body is not a JSON object.");
    assert_string_equal(not_envelope, "The body is not a JSON object with an \"events\" array.");
}

/* The text for a failure message: bytes outside printable ASCII as \xHH, cut at 600 bytes, with its length. */
static const char *describe(cn_str_t body)
{
    static char out[3000];
    size_t o = (size_t)snprintf(out, sizeof(out), "[%zu bytes] ", body.len);
    for (size_t i = 0; i != body.len && o < 2500; ++i) {
        unsigned char c = (unsigned char)body.base[i];
        if (i == 600) {
            o += (size_t)snprintf(out + o, sizeof(out) - o, "...");
            break;
        }
        if (c >= 0x20 && c < 0x7f)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", c);
    }
    out[o] = '\0';
    return out;
}

static const char *kind_name(cn_jv_kind_t kind)
{
    switch (kind) {
    case CN_JV_ABSENT:
        return "ABSENT";
    case CN_JV_NULL:
        return "NULL";
    case CN_JV_STRING:
        return "STRING";
    case CN_JV_OTHER:
        return "OTHER";
    }
    return "(not a kind)";
}

/* What a chain of json_object_get finds at the dotted path (NULL: missing, or a step that is not an object). */
static const json_t *jansson_at(const json_t *v, const char *path)
{
    for (;;) {
        const char *dot = strchr(path, '.');
        size_t len = dot != NULL ? (size_t)(dot - path) : strlen(path);
        v = json_object_getn(v, path, len); /* NULL when v is NULL or not an object */
        if (dot == NULL || v == NULL)
            return v;
        path = dot + 1;
    }
}

static cn_jv_kind_t jansson_kind(const json_t *v)
{
    return v == NULL ? CN_JV_ABSENT : json_is_string(v) ? CN_JV_STRING : json_is_null(v) ? CN_JV_NULL : CN_JV_OTHER;
}

/* Each fields[f] is what jansson finds at paths[f] of event. */
static void assert_fields_match(cn_str_t body, const json_t *event, const cn_jv_t *fields, const char *const *paths,
                                size_t n, const char *where)
{
    for (size_t f = 0; f != n; ++f) {
        const json_t *want = jansson_at(event, paths[f]);
        const cn_jv_t *got = &fields[f];
        if (got->kind != jansson_kind(want))
            fail_msg("%s, path \"%s\": scanner %s, jansson %s, in %s", where, paths[f], kind_name(got->kind),
                     kind_name(jansson_kind(want)), describe(body));
        if (got->kind != CN_JV_STRING)
            continue;
        size_t len = json_string_length(want);
        if (got->s.base == NULL || got->s.len != len || memcmp(got->s.base, json_string_value(want), len) != 0 ||
            got->s.base[len] != '\0')
            fail_msg("%s, path \"%s\": scanner \"%.*s\" (%zu bytes), jansson \"%s\" (%zu bytes), in %s", where,
                     paths[f], (int)got->s.len, got->s.base != NULL ? got->s.base : "", got->s.len,
                     json_string_value(want), len, describe(body));
    }
}

static json_t *held; /* the tree being compared, freed by the teardown when a comparison fails */

/*
 * Scans body in both shapes and checks the scanner agrees with jansson on each: the same verdict (jansson refuses:
 * not JSON; jansson accepts something that is not the shape's envelope: the envelope sentence; else success), and on
 * success the same events and the same value at every path. A refusal leaves *out as it was. Returns whether jansson
 * accepts the text.
 */
static bool assert_agrees(cn_str_t body, const char *const *paths, size_t n)
{
    json_error_t error;
    json_t *root = held = json_loadb(body.base, body.len, JSON_REJECT_DUPLICATES, &error);
    cn_scan_t scan, sentinel;
    memset(&sentinel, 0x5a, sizeof(sentinel));

    scan = sentinel;
    const char *got = cn_json_scan(body, CN_BODY_EVENT, paths, n, &test_alloc, &scan);
    const char *want = root == NULL ? not_json : json_is_object(root) ? NULL : not_object;
    if (got != want)
        fail_msg("CN_BODY_EVENT: scanner says %s, jansson %s%s, for %s", got != NULL ? got : "NULL (accepted)",
                 root != NULL ? "accepts" : "refuses: ", root != NULL ? "" : error.text, describe(body));
    if (got != NULL) {
        assert_memory_equal(&scan, &sentinel, sizeof(scan));
    } else {
        assert_int_equal(scan.nevents, 1);
        assert_true(scan.is_object[0]);
        assert_fields_match(body, root, scan.fields, paths, n, "CN_BODY_EVENT");
    }

    scan = sentinel;
    got = cn_json_scan(body, CN_BODY_EVENTS, paths, n, &test_alloc, &scan);
    const json_t *list = json_is_object(root) ? json_object_get(root, "events") : NULL;
    want = root == NULL ? not_json : json_is_array(list) ? NULL : not_envelope;
    if (got != want)
        fail_msg("CN_BODY_EVENTS: scanner says %s, jansson %s%s, for %s", got != NULL ? got : "NULL (accepted)",
                 root != NULL ? "accepts" : "refuses: ", root != NULL ? "" : error.text, describe(body));
    if (got != NULL) {
        assert_memory_equal(&scan, &sentinel, sizeof(scan));
    } else {
        if (scan.nevents != json_array_size(list))
            fail_msg("scanner %zu events, jansson %zu, in %s", scan.nevents, json_array_size(list), describe(body));
        for (size_t i = 0; i != scan.nevents; ++i) {
            const json_t *event = json_array_get(list, i);
            char where[64];
            snprintf(where, sizeof(where), "CN_BODY_EVENTS, event %zu", i);
            if (scan.is_object[i] != json_is_object(event))
                fail_msg("%s: scanner is_object %d, jansson %d, in %s", where, scan.is_object[i], json_is_object(event),
                         describe(body));
            if (scan.is_object[i])
                assert_fields_match(body, event, scan.fields + i * n, paths, n, where);
        }
    }

    bool accepted = root != NULL;
    json_decref(root);
    held = NULL;
    return accepted;
}

/* The paths the tables ask for: members, nested members, the empty key, a non-ASCII key, "events" itself. */
static const char *const table_paths[] = {"a", "b",   "a.b", "a.b.c",    "id", "data.object.id", "events",
                                          "",  "x.y", "k0",  "\xc3\xa9", "/",  "a.a.a.a"};
#define NPATHS (sizeof(table_paths) / sizeof(table_paths[0]))

/* A byte string with its length (it may hold NUL bytes), and what jansson is expected to say of it: 1 accepts, 0
 * refuses. The expectation checks the oracle: a table that jansson and the scanner got wrong together would pass the
 * comparison alone. */
typedef struct st_case_t {
    const char *text;
    size_t len;
    int accepts;
} case_t;

#define OK(s)                                                                                                          \
    {                                                                                                                  \
        (s), sizeof(s) - 1, 1                                                                                          \
    }
#define NO(s)                                                                                                          \
    {                                                                                                                  \
        (s), sizeof(s) - 1, 0                                                                                          \
    }

static void assert_case(cn_str_t body, int accepts, const char *what)
{
    bool got = assert_agrees(body, table_paths, NPATHS);
    if (got != (accepts != 0))
        fail_msg("%s: jansson %s %s, the table says it %s", what, got ? "accepts" : "refuses", describe(body),
                 accepts ? "accepts" : "refuses");
}

/* pre + mid + post in the pool; mid may hold NUL bytes. */
static cn_str_t wrap(const char *pre, cn_str_t mid, const char *post)
{
    size_t a = strlen(pre), c = strlen(post);
    char *buf = pool_alloc(NULL, a + mid.len + c + 1);
    memcpy(buf, pre, a);
    memcpy(buf + a, mid.base, mid.len);
    memcpy(buf + a + mid.len, post, c);
    buf[a + mid.len + c] = '\0';
    return (cn_str_t){buf, a + mid.len + c};
}

static void assert_cases_in(const case_t *cases, size_t ncases, const char *const (*contexts)[2], size_t ncontexts)
{
    for (size_t i = 0; i != ncases; ++i)
        for (size_t c = 0; c != ncontexts; ++c)
            assert_case(wrap(contexts[c][0], (cn_str_t){cases[i].text, cases[i].len}, contexts[c][1]), cases[i].accepts,
                        "table");
}

/* --- the tables --------------------------------------------------------------------------------------------- */

/* What may stand between the quotes of a string, as a value or as a key. */
static const case_t string_contents[] = {
    OK(""),
    OK("plain text"),
    /* every escape */
    OK("\\\""),
    OK("\\\\"),
    OK("\\/"),
    OK("\\b"),
    OK("\\f"),
    OK("\\n"),
    OK("\\r"),
    OK("\\t"),
    OK("a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti"),
    OK("\\u0041"),
    OK("\\u00e9"),
    OK("\\u00E9"),
    OK("\\u0001"),
    OK("\\u001f"),
    OK("\\u007f"),
    OK("\\u07ff"),
    OK("\\u0800"),
    OK("\\u20ac"),
    OK("\\ud7ff"),
    OK("\\ue000"),
    OK("\\ufeff"),
    OK("\\uffff"),
    OK("\\ud83d\\ude00"), /* a surrogate pair */
    OK("\\uD83D\\uDE00"),
    OK("\\ud800\\udc00"),
    OK("\\udbff\\udfff"),
    OK("x\\ud83d\\ude00y\\u00e9"),
    OK("\\\\u0000"), /* an escaped backslash, then text */
    NO("\\u0000"),   /* jansson refuses NUL without JSON_ALLOW_NUL */
    NO("a\\u0000b"),
    NO("\\ud800"), /* a lone high surrogate */
    NO("\\ud800x"),
    NO("\\ud800\\n"),
    NO("\\ud800\\u0041"),
    NO("\\ud800\\ud800"),
    NO("\\udbff"),
    NO("\\udc00"), /* a lone low surrogate */
    NO("\\udfff"),
    NO("\\ude00\\ud83d"), /* reversed */
    NO("\\ud800\\"),
    NO("\\ud800\\u"),
    NO("\\ud800\\udc0"),
    NO("\\ud800\\udcxx"),
    NO("\\u"),
    NO("\\u1"),
    NO("\\u12"),
    NO("\\u123"),
    NO("\\u12g4"),
    NO("\\u-123"),
    NO("\\U0041"),
    NO("\\x41"),
    NO("\\a"),
    NO("\\'"),
    NO("\\0"),
    NO("\\ "),
    NO("\\"), /* escapes the closing quote */
    /* control characters raw */
    NO("\x01"),
    NO("a\x1f"),
    NO("\t"),
    NO("\n"),
    NO("\r"),
    NO("a\0b"), /* a NUL byte */
    OK("\x7f"),
    OK(" "),
    /* UTF-8 */
    OK("\xc2\x80"),
    OK("\xc3\xa9"),
    OK("\xdf\xbf"),
    OK("\xe0\xa0\x80"),
    OK("\xe2\x82\xac"),
    OK("\xed\x9f\xbf"), /* U+D7FF */
    OK("\xee\x80\x80"), /* U+E000 */
    OK("\xef\xbb\xbf"), /* U+FEFF inside a string is a character */
    OK("\xef\xbf\xbf"),
    OK("\xf0\x90\x80\x80"),
    OK("\xf0\x9f\x98\x80"),
    OK("\xf4\x8f\xbf\xbf"), /* U+10FFFF */
    NO("\xc0\x80"),         /* overlong */
    NO("\xc0\xaf"),
    NO("\xc1\xbf"),
    NO("\xe0\x80\x80"),
    NO("\xe0\x9f\xbf"),
    NO("\xf0\x80\x80\x80"),
    NO("\xf0\x8f\xbf\xbf"),
    NO("\xed\xa0\x80"), /* surrogates encoded in UTF-8 */
    NO("\xed\xbf\xbf"),
    NO("\xed\xa0\xbd\xed\xb8\x80"),
    NO("\xf4\x90\x80\x80"), /* above U+10FFFF */
    NO("\xf5\x80\x80\x80"),
    NO("\xf7\xbf\xbf\xbf"),
    NO("\xf8\x88\x80\x80\x80"),
    NO("\xfc\x84\x80\x80\x80\x80"),
    NO("\xfe"),
    NO("\xff"),
    NO("\x80"), /* a continuation byte alone */
    NO("\xbf"),
    NO("a\x80\x80"),
    NO("\xc3"), /* truncated */
    NO("\xe2\x82"),
    NO("\xe2"),
    NO("\xf0\x9f\x98"),
    NO("\xf0\x9f"),
    NO("\xc3\xc3\xa9"),
    NO("\xc3\x28"),
    NO("\xe2\x28\xa1"),
    NO("\xe2\x82\x28"),
    NO("\xf0\x28\x8c\xbc"),
    NO("\xf0\x9f\x98\x28"),
};

static const char *const string_contexts[][2] = {
    {"{\"a\":\"", "\"}"},
    {"{\"", "\":1}"},
    {"[\"", "\"]"},
    {"{\"a\":{\"b\":\"", "\"}}"},
    {"{\"events\":[{\"id\":\"", "\"}]}"},
    {"{\"data\":{\"object\":{\"id\":\"", "\"}}}"},
};

/* What may stand as a value. */
static const case_t values[] = {
    OK("0"),
    OK("-0"),
    OK("1"),
    OK("-1"),
    OK("123"),
    OK("1.5"),
    OK("-0.0"),
    OK("0.000"),
    OK("0e0"),
    OK("0E-0"),
    OK("1e5"),
    OK("1E5"),
    OK("1e+5"),
    OK("1e-5"),
    OK("-1.25e-7"),
    OK("1.5e300"),
    OK("1e308"),
    OK("1.7976931348623157e308"), /* DBL_MAX */
    OK("1e-400"),                 /* underflow is no error */
    OK("-1e-400"),
    OK("4.9e-324"),
    NO("1E400"), /* overflow is */
    NO("-1e400"),
    NO("1e309"),
    NO("1.7976931348623159e308"),
    OK("9223372036854775807"),
    OK("-9223372036854775808"),
    OK("1000000000000000000"),
    OK("-999999999999999999"),
    NO("9223372036854775808"), /* "too big integer" */
    NO("-9223372036854775809"),
    NO("9999999999999999999"),
    NO("10000000000000000000"),
    NO("12345678901234567890"), /* 20 digits */
    NO("-12345678901234567890"),
    NO("99999999999999999999"),
    NO("123456789012345678901234567890"),
    OK("12345678901234567890.0"), /* the same digits as a real are fine */
    OK("12345678901234567890e0"),
    OK("-9223372036854775809.5"),
    NO("01"),
    NO("-01"),
    NO("00"),
    NO("00.5"),
    NO("1."),
    NO("1.e5"),
    NO("-0."),
    NO(".5"),
    NO("-.5"),
    NO("-"),
    NO("--1"),
    NO("+1"),
    NO("1e"),
    NO("1e+"),
    NO("1E-"),
    NO("1ee5"),
    NO("1e5.0"),
    NO("1.2.3"),
    NO("1..2"),
    NO("0x10"),
    NO("1_000"),
    NO("1 2"),
    NO("Infinity"),
    NO("-Infinity"),
    NO("NaN"),
    NO("nan"),
    OK("true"),
    OK("false"),
    OK("null"),
    OK(" null "),
    NO("nul"),
    NO("nullx"),
    NO("nulll"),
    NO("null1"),
    NO("truefalse"),
    NO("true false"),
    NO("tru"),
    NO("fals"),
    NO("t"),
    NO("n"),
    NO("True"),
    NO("NULL"),
    NO("FALSE"),
    NO("undefined"),
    NO("'a'"),
    OK("{}"),
    OK("[]"),
    OK("[null,true,false,0,\"\"]"),
    OK("{\"a\":{\"b\":{\"c\":\"d\"}}}"),
    NO("{"),
    NO("]"),
};

static const char *const value_contexts[][2] = {
    {"{\"a\":", "}"},
    {"[", "]"},
    {"{\"a\":[", "]}"},
    {"[", " ]"},
    {"{\"a\":{\"b\":", "}}"},
    {"{\"x\":1,\"a\":", ",\"b\":2}"},
    {"[0,", ",0]"},
    {"{\"events\":[", "]}"},
    {"{\"events\":[{\"id\":", "}]}"},
    {"{\"data\":{\"object\":{\"id\":", "}}}"},
    {"\n\t{\r\n\"a\" :\t", "\n}\r\n"},
};

/* Whole texts. */
static const case_t texts[] = {
    NO(""),
    NO(" "),
    NO("\t\n\r "),
    OK("{}"),
    OK("[]"),
    OK(" {} "),
    OK("\n\t\r {}\n\t\r "), /* leading and trailing whitespace */
    OK("[ ]"),
    OK("{ }"),
    NO("\x0c{}"), /* no other whitespace */
    NO("{}\x0b"),
    NO("\xc2\xa0{}"),
    NO("\xef\xbb\xbf{}"), /* a byte order mark */
    NO("{} x"),           /* trailing garbage */
    NO("{}{}"),
    NO("{},"),
    NO("[] []"),
    NO("{}]"),
    NO("[]}"),
    NO("{}\0"), /* NUL bytes anywhere */
    NO("\0{}"),
    NO("{\0}"),
    NO("[\0 1]"),
    /* jansson's lexer loses one NUL byte right after a number or a literal (it reads a byte past them and ungets it;
     * an ungot NUL reads as "nothing buffered"), so these pass as if the NUL were not there */
    OK("{\"a\":1\0}"),
    OK("[1\0]"),
    OK("[-0\0]"),
    OK("[1.5e3\0]"),
    OK("[true\0]"),
    OK("[false\0]"),
    OK("{\"a\":null\0,\"b\":1}"),
    OK("[1\0 ]"),
    OK("[1\0,2]"),
    OK("[1\0\n]"),
    OK("{\"id\":\"x\",\"n\":5\0}"),
    NO("[1\0\0]"), /* one only */
    NO("[1 \0]"),  /* right after the token only */
    NO("[\"a\"\0]"),
    NO("[[]\0]"),
    NO("{\"a\":{}\0}"),
    NO("{\"a\"\0:1}"),
    NO("[1\0002]"), /* the NUL, then a 2 */
    NO("[1\0e5]"),
    NO("[true\0false]"),
    NO("[tr\0ue]"),
    NO("[nul\0l]"),
    NO("[9223372036854775808\0]"),
    NO("[1e400\0]"),
    NO("{\"a\":\"b\0\"}"),
    NO("{\"a\0\":1}"),
    NO("[1,\0 2]"),
    NO("1"), /* jansson without JSON_DECODE_ANY: the top is an object or an array */
    NO("-0"),
    NO("\"a\""),
    NO("true"),
    NO("null"),
    NO(" 5 "),
    OK("[1,2]"),
    OK("[\"a\",{\"b\":[]}]"),
    OK("[[[]]]"),
    OK("[{}]"),
    NO("[1,]"),
    NO("[,1]"),
    NO("[,]"),
    NO("[1,,2]"),
    NO("["),
    NO("]"),
    NO("{"),
    NO("}"),
    NO("[[]"),
    NO("[]]"),
    NO("{\"a\"}"),
    NO("{\"a\":}"),
    NO("{\"a\" 1}"),
    NO("{\"a\"::1}"),
    NO("{\"a\":1,}"),
    NO("{,}"),
    NO("{,\"a\":1}"),
    NO("{1:1}"),
    NO("{null:1}"),
    NO("{'a':1}"),
    NO("{a:1}"),
    NO("{\"a\":1 \"b\":2}"),
    NO("{\"a\":1;\"b\":2}"),
    NO("[1 2]"),
    NO("[1:2]"),
    NO("{\"a\":1}}"),
    NO("{\"a\":[}"),
    NO("{\"a\":\"b}"),
    NO("{\"a\":\"b\\\"}"),
    NO("/* c */{}"),
    NO("{}// c"),
    NO("{\"a\":1}\n#"),
    OK("{\"a\":[1,{\"b\":null}],\"c\":{},\"d\":\"e\"}"),
    OK("{\"a\":\"a\"}"),
    /* repeated keys: refused in any object, comparing decoded keys */
    NO("{\"a\":1,\"a\":2}"),
    NO("{\"a\":1,\"a\":1}"),
    NO("{\"a\":null,\"a\":null}"),
    NO("{\"a\":1,\"b\":{},\"a\":2}"),
    NO("{\"a\":1,\"b\":{\"c\":1,\"c\":2}}"),
    NO("[{\"a\":1,\"a\":1}]"),
    NO("[1,[{\"x\":{\"y\":1,\"y\":1}}]]"),
    NO("{\"events\":[{\"id\":\"a\",\"id\":\"a\"}]}"),
    NO("{\"events\":[],\"events\":[]}"),
    NO("{\"a\":1,\"\\u0061\":2}"),
    NO("{\"\\u0061\":1,\"a\":2}"),
    NO("{\"\\u0061\":1,\"\\u0061\":2}"),
    NO("{\"\\u00e9\":1,\"\xc3\xa9\":2}"),
    NO("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}"),
    NO("{\"\\/\":1,\"/\":2}"),
    NO("{\"a\\nb\":1,\"a\\u000ab\":2}"),
    NO("{\"\":1,\"\":2}"),
    NO("{\"id\":\"x\",\"data\":{\"object\":{\"id\":1,\"id\":2}}}"),
    OK("{\"a\":1,\"A\":2}"),
    OK("{\"a\":1,\"a \":2}"),
    OK("{\"a\":1,\"\\u0062\":2}"),
    OK("{\"ab\":1,\"a\":1,\"b\":1}"),
    OK("{\"\":1}"),
    OK("{\"a\":{\"a\":{\"a\":1}}}"), /* the same key in nested and sibling objects */
    OK("{\"a\":{\"b\":1},\"c\":{\"b\":1}}"),
    OK("[{\"a\":1},{\"a\":1}]"),
    OK("{\"a\":{\"x\":1},\"b\":{\"x\":1,\"y\":{\"x\":1}},\"x\":1}"),
    OK("{\"events\":[{\"id\":\"a\"},{\"id\":\"a\"}]}"),
    OK("{\"\xc3\xa9\":1,\"\\u00c9\":2}"),
    /* what the "events" envelope looks at */
    OK("{\"events\":null}"),
    OK("{\"events\":{}}"),
    OK("{\"events\":\"x\"}"),
    OK("{\"Events\":[]}"),
    OK("{\"\\u0065vents\":[{\"id\":\"a\"}]}"),
    OK("{\"data\":{\"events\":[{\"id\":\"a\"}]}}"),
    OK("[{\"events\":[{\"id\":\"a\"}]}]"),
    OK("{\"events\":[{\"events\":[{\"id\":\"inner\"}],\"id\":\"outer\"}]}"),
    OK("{\"events\":[5,\"a\",null,[],{},{\"id\":\"b\"}]}"),
    /* paths through values that are not objects */
    OK("{\"data\":\"x\"}"),
    OK("{\"data\":[\"object\"]}"),
    OK("{\"data\":[{\"object\":{\"id\":\"in an array\"}}]}"),
    OK("{\"data\":null}"),
    OK("{\"data\":{\"object\":5}}"),
    OK("{\"data\":{\"object\":\"id\"}}"),
    OK("{\"data\":{\"object\":{\"id\":{\"x\":1}}}}"),
    OK("{\"data\":{\"object\":{}},\"id\":\"top\"}"),
    OK("{\"a\":\"s\",\"b\":1}"),
    OK("{\"a\":{\"b\":\"s\"},\"b\":{\"a\":{\"b\":1}}}"),
    OK("{\"a\":{\"a\":{\"a\":{\"a\":\"deep\"}}}}"),
    OK("{\"a\":{\"a\":{\"a\":[{\"a\":\"deep\"}]}}}"),
    OK("{\"x\":{\"y\":null},\"/\":\"slash\",\"\":\"empty key\",\"\xc3\xa9\":\"\\u00e9\"}"),
    OK("{\"\\u002f\":\"escaped slash key\",\"\\u00e9\":\"e\"}"),
};

static void test_sentences(void **state)
{
    /* the three are distinct; a NULL body or one of no bytes is not JSON */
    cn_scan_t scan;
    assert_ptr_not_equal(not_json, not_object);
    assert_ptr_not_equal(not_json, not_envelope);
    assert_ptr_not_equal(not_object, not_envelope);
    assert_ptr_equal(cn_json_scan((cn_str_t){NULL, 0}, CN_BODY_EVENT, NULL, 0, &test_alloc, &scan), not_json);
    assert_ptr_equal(cn_json_scan((cn_str_t){NULL, 0}, CN_BODY_EVENTS, NULL, 0, &test_alloc, &scan), not_json);
    assert_ptr_equal(cn_json_scan((cn_str_t){"{}", 0}, CN_BODY_EVENT, NULL, 0, &test_alloc, &scan), not_json);
    /* the length is what counts, not a NUL */
    assert_ptr_equal(cn_json_scan((cn_str_t){"{}", 1}, CN_BODY_EVENT, NULL, 0, &test_alloc, &scan), not_json);
    assert_ptr_equal(cn_json_scan((cn_str_t){"{}x", 2}, CN_BODY_EVENT, NULL, 0, &test_alloc, &scan), NULL);
}

static void test_strings(void **state)
{
    assert_cases_in(string_contents, sizeof(string_contents) / sizeof(string_contents[0]), string_contexts,
                    sizeof(string_contexts) / sizeof(string_contexts[0]));
}

static void test_values(void **state)
{
    assert_cases_in(values, sizeof(values) / sizeof(values[0]), value_contexts,
                    sizeof(value_contexts) / sizeof(value_contexts[0]));
}

static void test_texts(void **state)
{
    for (size_t i = 0; i != sizeof(texts) / sizeof(texts[0]); ++i)
        assert_case((cn_str_t){texts[i].text, texts[i].len}, texts[i].accepts, "texts");
}

/* Every prefix of a body holding each kind of token, each in a buffer of exactly its length (no NUL after it), so
 * that a look past the end of a cut escape, UTF-8 sequence, number or literal is a read out of bounds that ASan
 * reports. Every prefix but the whole is refused by jansson. */
static void test_every_prefix(void **state)
{
    static const char body[] = "{\"id\":\"evt_\\u00e9\\ud83d\\ude00\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\\n\\/\","
                               "\"a\":[-12.5e+3,0,-0,1E-2,true,false,null,{},[]],\"\\u0062\":{\"c\":\"\"},"
                               "\"n\":9223372036854775807,\"m\":1.5}";
    for (size_t n = 0; n != sizeof(body); ++n) {
        char *exact = pool_alloc(NULL, n);
        memcpy(exact, body, n);
        bool accepted = assert_agrees((cn_str_t){exact, n}, table_paths, NPATHS);
        if (accepted != (n == sizeof(body) - 1))
            fail_msg("jansson %s the prefix %s", accepted ? "accepts" : "refuses", describe((cn_str_t){exact, n}));
    }
}

/* Numbers longer than any buffer a scanner might keep on the stack. */
static void test_long_numbers(void **state)
{
    enum { ACCEPTS, REFUSES, REAL_10_N, INTEGER_10_N };
    static const struct {
        const char *head, *digit, *tail;
        int verdict; /* REAL_10_N: about 10^n, so fine up to n = 308; INTEGER_10_N: 10^n, fits int64_t up to n = 18 */
    } shapes[] = {
        {"1.", "0", "", ACCEPTS},     /* 1.000...: a long real */
        {"0.", "0", "1", ACCEPTS},    /* 0.000...1: underflows, which is fine */
        {"0.", "9", "e-5", ACCEPTS},  /* many significant digits */
        {"1.", "0", "e308", ACCEPTS}, /* the exponent decides, not the length */
        {"1.", "0", "e309", REFUSES}, {"-1.", "0", "e309", REFUSES}, {"1", "0", ".5", REAL_10_N},
        {"-1", "0", "e0", REAL_10_N}, {"1", "0", "", INTEGER_10_N},  {"-1", "0", "", INTEGER_10_N},
    };
    static const size_t lengths[] = {10, 17, 18, 19, 20, 61, 62, 63, 64, 65, 300, 307, 308, 309, 310, 1000, 5000};
    for (size_t s = 0; s != sizeof(shapes) / sizeof(shapes[0]); ++s) {
        for (size_t l = 0; l != sizeof(lengths) / sizeof(lengths[0]); ++l) {
            size_t nh = strlen(shapes[s].head), nt = strlen(shapes[s].tail), n = lengths[l];
            char *num = pool_alloc(NULL, nh + n + nt);
            memcpy(num, shapes[s].head, nh);
            memset(num + nh, shapes[s].digit[0], n);
            memcpy(num + nh + n, shapes[s].tail, nt);
            cn_str_t body = wrap("{\"a\":[", (cn_str_t){num, nh + n + nt}, "]}");
            bool accepted = assert_agrees(body, table_paths, NPATHS);
            bool want = shapes[s].verdict == ACCEPTS     ? true
                        : shapes[s].verdict == REFUSES   ? false
                        : shapes[s].verdict == REAL_10_N ? n <= 308
                                                         : n <= 18;
            if (accepted != want)
                fail_msg("jansson %s %s", accepted ? "accepts" : "refuses", describe(body));
        }
    }
}

/* --- explicit values: the oracle itself, checked ------------------------------------------------------------ */

/* Scans body as one event for the single path and checks what it finds (kind, and the string for CN_JV_STRING). */
static void assert_field(const char *body, const char *path, cn_jv_kind_t kind, const char *s, size_t slen)
{
    const char *paths[] = {path};
    cn_scan_t scan;
    assert_agrees(str(body), paths, 1);
    const char *err = cn_json_scan(str(body), CN_BODY_EVENT, paths, 1, &test_alloc, &scan);
    if (err != NULL)
        fail_msg("%s refused: %s", body, err);
    if (scan.fields[0].kind != kind)
        fail_msg("%s at \"%s\": got %s, want %s", body, path, kind_name(scan.fields[0].kind), kind_name(kind));
    if (kind == CN_JV_STRING &&
        (scan.fields[0].s.len != slen || memcmp(scan.fields[0].s.base, s, slen) != 0 || s[slen] != '\0'))
        fail_msg("%s at \"%s\": got \"%.*s\", want \"%s\"", body, path, (int)scan.fields[0].s.len,
                 scan.fields[0].s.base, s);
}

#define ASSERT_STRING(body, path, s) assert_field(body, path, CN_JV_STRING, s, sizeof(s) - 1)

static void test_path_values(void **state)
{
    static const char *const nests[] = {"{\"data\":\"x\"}",
                                        "{\"data\":[{\"object\":{\"id\":\"a\"}}]}",
                                        "{\"data\":null}",
                                        "{\"data\":{\"object\":5}}",
                                        "{\"data\":{\"object\":[\"id\"]}}",
                                        "{\"data\":{\"object\":\"id\"}}",
                                        "{\"data\":{\"object\":{}},\"id\":\"top\"}",
                                        "{\"data\":{\"id\":\"b\",\"object\":{\"x\":{\"id\":\"c\"}}}}"};
    for (size_t i = 0; i != sizeof(nests) / sizeof(nests[0]); ++i)
        assert_field(nests[i], "data.object.id", CN_JV_ABSENT, NULL, 0);
    assert_field("{\"data\":null}", "data", CN_JV_NULL, NULL, 0);
    assert_field("{\"data\":{\"object\":5}}", "data.object", CN_JV_OTHER, NULL, 0);
    assert_field("{\"data\":{\"object\":{\"id\":{\"x\":1}}}}", "data.object.id", CN_JV_OTHER, NULL, 0);
    static const char *const others[] = {"{}", "[]", "[\"s\"]", "true", "false", "0", "-0", "1.5e3", "{\"id\":\"x\"}"};
    for (size_t i = 0; i != sizeof(others) / sizeof(others[0]); ++i) {
        char body[128];
        snprintf(body, sizeof(body), "{\"data\":{\"object\":{\"id\":%s}}}", others[i]);
        assert_field(body, "data.object.id", CN_JV_OTHER, NULL, 0);
        snprintf(body, sizeof(body), "{\"id\":%s}", others[i]);
        assert_field(body, "id", CN_JV_OTHER, NULL, 0);
    }
    assert_field("{\"id\":null}", "id", CN_JV_NULL, NULL, 0);
    assert_field("{\"data\":{\"object\":{\"id\":null}}}", "data.object.id", CN_JV_NULL, NULL, 0);
    ASSERT_STRING("{\"data\":{\"object\":{\"id\":\"pi_1\"}}}", "data.object.id", "pi_1");
    ASSERT_STRING("{\"data\":{\"object\":{\"id\":\"\"}}}", "data.object.id", "");
    ASSERT_STRING("{\"id\":\"top\",\"data\":{\"object\":{\"id\":\"deep\"}}}", "id", "top");
    ASSERT_STRING("{\"id\":\"top\",\"data\":{\"object\":{\"id\":\"deep\"}}}", "data.object.id", "deep");
    ASSERT_STRING("{\"data\":{\"id\":\"no\",\"object\":{\"id\":\"yes\"}},\"id\":\"no\"}", "data.object.id", "yes");
    /* strings come decoded, keys are matched decoded */
    ASSERT_STRING("{\"id\":\"a\\n\\u00e9\\ud83d\\ude00\\/\\\"\\\\\\b\\f\\r\\t\"}", "id",
                  "a\n\xc3\xa9\xf0\x9f\x98\x80/\"\\\b\f\r\t");
    ASSERT_STRING("{\"\\u0069\\u0064\":\"x\"}", "id", "x");
    ASSERT_STRING("{\"d\\u0061ta\":{\"obj\\u0065ct\":{\"\\u0069d\":\"x\\u0079\"}}}", "data.object.id", "xy");
    ASSERT_STRING("{\"\xc3\xa9\":\"raw\"}", "\xc3\xa9", "raw");
    ASSERT_STRING("{\"\\u00e9\":\"escaped\"}", "\xc3\xa9", "escaped");
    ASSERT_STRING("{\"\":\"empty key\"}", "", "empty key");
    ASSERT_STRING("{\"id\":\"\xf4\x8f\xbf\xbf\"}", "id", "\xf4\x8f\xbf\xbf");
    /* a key that only starts like a path step is not it */
    assert_field("{\"idx\":\"a\",\"i\":\"b\",\"ID\":\"c\"}", "id", CN_JV_ABSENT, NULL, 0);
    assert_field("{\"data.object.id\":\"dotted key\"}", "data.object.id", CN_JV_ABSENT, NULL, 0);
}

/* Every field of several paths at once, each in its own slot; and a path asked for twice gets the value twice. */
static void test_many_paths(void **state)
{
    static const char *const paths[CN_SCAN_FIELDS_MAX] = {
        "a", "b", "c.d", "c", "c.e.f", "missing", "c.d.x", "a", "n", "t", "arr", "o.p.q.r.s", "", "u", "c.e", "z"};
    static const char body[] =
        "{\"a\":\"A\",\"b\":\"B\",\"c\":{\"d\":\"D\",\"e\":{\"f\":\"F\"}},\"n\":null,\"t\":true,"
        "\"arr\":[\"x\"],\"o\":{\"p\":{\"q\":{\"r\":{\"s\":\"deep\"}}}},\"\":\"E\",\"u\":\"\\u00fc\","
        "\"z\":1}";
    static const struct {
        cn_jv_kind_t kind;
        const char *s;
    } want[CN_SCAN_FIELDS_MAX] = {
        {CN_JV_STRING, "A"}, {CN_JV_STRING, "B"},        {CN_JV_STRING, "D"},  {CN_JV_OTHER, NULL},
        {CN_JV_STRING, "F"}, {CN_JV_ABSENT, NULL},       {CN_JV_ABSENT, NULL}, {CN_JV_STRING, "A"},
        {CN_JV_NULL, NULL},  {CN_JV_OTHER, NULL},        {CN_JV_OTHER, NULL},  {CN_JV_STRING, "deep"},
        {CN_JV_STRING, "E"}, {CN_JV_STRING, "\xc3\xbc"}, {CN_JV_OTHER, NULL},  {CN_JV_OTHER, NULL},
    };
    cn_scan_t scan;
    assert_agrees(str(body), paths, CN_SCAN_FIELDS_MAX);
    assert_null(cn_json_scan(str(body), CN_BODY_EVENT, paths, CN_SCAN_FIELDS_MAX, &test_alloc, &scan));
    for (size_t f = 0; f != CN_SCAN_FIELDS_MAX; ++f) {
        if (scan.fields[f].kind != want[f].kind)
            fail_msg("path %zu \"%s\": got %s, want %s", f, paths[f], kind_name(scan.fields[f].kind),
                     kind_name(want[f].kind));
        if (want[f].kind == CN_JV_STRING)
            assert_cn_str(scan.fields[f].s, want[f].s);
    }
}

/* --- the "events" envelope ---------------------------------------------------------------------------------- */

static void test_events_in_order(void **state)
{
    static const char *const paths[] = {"id", "links.payment"};
    static const char body[] =
        "{\"meta\":{\"events\":[{\"id\":\"no\"}]},\"events\":[{\"id\":\"a\",\"links\":{\"payment\":"
        "\"PM1\"}},5,{\"id\":\"c\"},[{\"id\":\"no\"}],null,\"s\",{},{\"events\":[{\"id\":\"no\"}],"
        "\"id\":\"h\"}],\"id\":\"envelope\"}";
    static const struct {
        bool is_object;
        const char *id, *payment;
    } want[] = {{true, "a", "PM1"},  {false, NULL, NULL}, {true, "c", NULL},  {false, NULL, NULL},
                {false, NULL, NULL}, {false, NULL, NULL}, {true, NULL, NULL}, {true, "h", NULL}};
    cn_scan_t scan;
    assert_agrees(str(body), paths, 2);
    assert_null(cn_json_scan(str(body), CN_BODY_EVENTS, paths, 2, &test_alloc, &scan));
    assert_int_equal(scan.nevents, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i != scan.nevents; ++i) {
        const cn_jv_t *f = scan.fields + i * 2;
        if (scan.is_object[i] != want[i].is_object)
            fail_msg("event %zu: is_object %d, want %d", i, scan.is_object[i], want[i].is_object);
        /* an element that is not an object has no fields */
        if (want[i].id != NULL && f[0].kind != CN_JV_STRING)
            fail_msg("event %zu: \"id\" is %s, want STRING", i, kind_name(f[0].kind));
        if (want[i].id != NULL)
            assert_cn_str(f[0].s, want[i].id);
        else if (f[0].kind != CN_JV_ABSENT)
            fail_msg("event %zu: \"id\" is %s, want ABSENT", i, kind_name(f[0].kind));
        if (want[i].payment != NULL)
            assert_cn_str(f[1].s, want[i].payment);
        else if (f[1].kind != CN_JV_ABSENT)
            fail_msg("event %zu: \"links.payment\" is %s, want ABSENT", i, kind_name(f[1].kind));
    }

    /* many events: the slots grow, in order */
    enum { N = 1000 };
    char *buf = pool_alloc(NULL, N * 24 + 32);
    size_t len = (size_t)sprintf(buf, "{\"events\":[");
    for (size_t i = 0; i != N; ++i) {
        if (i % 7 == 3)
            len += (size_t)sprintf(buf + len, "%s%zu", i != 0 ? "," : "", i);
        else
            len += (size_t)sprintf(buf + len, "%s{\"id\":\"e%zu\"}", i != 0 ? "," : "", i);
    }
    len += (size_t)sprintf(buf + len, "]}");
    assert_agrees((cn_str_t){buf, len}, paths, 2);
    assert_null(cn_json_scan((cn_str_t){buf, len}, CN_BODY_EVENTS, paths, 2, &test_alloc, &scan));
    assert_int_equal(scan.nevents, N);
    for (size_t i = 0; i != N; ++i) {
        char id[16];
        snprintf(id, sizeof(id), "e%zu", i);
        assert_int_equal(scan.is_object[i], i % 7 != 3);
        if (i % 7 != 3)
            assert_cn_str(scan.fields[i * 2].s, id);
    }

    /* no paths at all: the events are still counted */
    assert_null(cn_json_scan(str("{\"events\":[{},1,{}]}"), CN_BODY_EVENTS, NULL, 0, &test_alloc, &scan));
    assert_int_equal(scan.nevents, 3);
    assert_true(scan.is_object[0] && !scan.is_object[1] && scan.is_object[2]);
    assert_null(cn_json_scan(str(" {\"events\" : [ ] } "), CN_BODY_EVENTS, paths, 2, &test_alloc, &scan));
    assert_int_equal(scan.nevents, 0);
}

static void test_events_not_envelope(void **state)
{
    static const char *const bad[] = {
        "{}",
        "{\"events\":null}",
        "{\"events\":{}}",
        "{\"events\":{\"0\":{}}}",
        "{\"events\":\"[]\"}",
        "{\"events\":1}",
        "{\"events\":true}",
        "{\"Events\":[]}",
        "{\"event\":[]}",
        "{\"events \":[]}",
        "{\"data\":{\"events\":[]}}", /* a nested "events" does not count */
        "{\"a\":[{\"events\":[]}]}",
        "[]", /* nor does a top-level array */
        "[{\"events\":[]}]",
        "[[]]",
    };
    cn_scan_t scan;
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        assert_agrees(str(bad[i]), table_paths, NPATHS);
        const char *got = cn_json_scan(str(bad[i]), CN_BODY_EVENTS, NULL, 0, &test_alloc, &scan);
        if (got != not_envelope)
            fail_msg("%s: got %s, want the envelope sentence", bad[i], got != NULL ? got : "NULL (accepted)");
    }
    /* but a body that is not JSON says so, whatever its shape */
    assert_ptr_equal(cn_json_scan(str("{\"events\":[],}"), CN_BODY_EVENTS, NULL, 0, &test_alloc, &scan), not_json);
    assert_ptr_equal(cn_json_scan(str("[1,]"), CN_BODY_EVENTS, NULL, 0, &test_alloc, &scan), not_json);
    /* one event: "events" means nothing, and the root is the event */
    static const char *const id[] = {"id"};
    assert_null(
        cn_json_scan(str("{\"events\":[{\"id\":\"x\"}],\"id\":\"y\"}"), CN_BODY_EVENT, id, 1, &test_alloc, &scan));
    assert_int_equal(scan.nevents, 1);
    assert_true(scan.is_object[0]);
    assert_cn_str(scan.fields[0].s, "y");
}

/* --- nesting ------------------------------------------------------------------------------------------------ */

/* open^n inner close^n, in the pool. */
static cn_str_t nest(const char *open, size_t n, const char *inner, const char *close)
{
    size_t lo = strlen(open), li = strlen(inner), lc = strlen(close), len = n * (lo + lc) + li;
    char *buf = pool_alloc(NULL, len + 1), *p = buf;
    for (size_t i = 0; i != n; ++i, p += lo)
        memcpy(p, open, lo);
    memcpy(p, inner, li);
    p += li;
    for (size_t i = 0; i != n; ++i, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return (cn_str_t){buf, len};
}

/*
 * Nesting around jansson's limit, which is found here by experiment rather than assumed: for each family of texts,
 * depth d counted as jansson's parse_value counts it (every value, the innermost scalar too), jansson must accept at
 * 2040 and refuse at 2055 with exactly one change between, and the scanner must agree at every depth.
 */
static void test_depth_limit(void **state)
{
    static const struct {
        const char *name, *open, *inner, *close;
        size_t extra; /* values that are not an open: the innermost */
    } families[] = {
        {"arrays", "[", "", "]", 0},
        {"arrays around a scalar", "[", "1", "]", 1},
        {"arrays around a string", "[", "\"s\"", "]", 1},
        {"objects", "{\"a\":", "{}", "}", 1},
        {"objects around a scalar", "{\"a\":", "null", "}", 1},
        {"objects around an array", "{\"a\":", "[]", "}", 1},
        {"arrays and objects", "[{\"a\":", "0", "}]", 1},
        {"arrays beside values", "[0,", "0", ",0]", 1},
    };
    for (size_t f = 0; f != sizeof(families) / sizeof(families[0]); ++f) {
        long limit = -1, refused = -1;
        bool last = true;
        for (size_t d = 2040; d <= 2055; ++d) {
            size_t opens = d - families[f].extra;
            /* "arrays and objects" opens two values per step */
            if (strcmp(families[f].open, "[{\"a\":") == 0) {
                if (d % 2 == 0)
                    continue;
                opens = (d - 1) / 2;
            }
            cn_str_t body = nest(families[f].open, opens, families[f].inner, families[f].close);
            bool accepted = assert_agrees(body, table_paths, NPATHS);
            if (accepted && !last)
                fail_msg("%s: jansson accepts depth %zu but refused a shallower one", families[f].name, d);
            if (accepted)
                limit = (long)d;
            else if (refused < 0)
                refused = (long)d;
            last = accepted;
            pool_release(NULL);
        }
        if (limit < 0 || refused < 0)
            fail_msg("%s: jansson's limit is not inside 2040..2055 (deepest accepted %ld, shallowest refused %ld)",
                     families[f].name, limit, refused);
        print_message("%s: jansson and the scanner accept depth %ld, refuse %ld\n", families[f].name, limit, refused);
    }
    /* far beyond it: refused, without the scanner running out of stack */
    assert_agrees(nest("[", 1000000, "", "]"), table_paths, NPATHS);
    assert_agrees(nest("{\"a\":", 300000, "1", "}"), table_paths, NPATHS);
    cn_str_t opens = nest("[", 1000000, "", "");
    assert_agrees(opens, table_paths, NPATHS);
}

/* --- many keys ---------------------------------------------------------------------------------------------- */

/* A fixed-seed xorshift64*: the same texts on every run, so a failure names a text one can rerun. */
static uint64_t rng;

static void seed_random(uint64_t seed)
{
    rng = seed;
}

static uint64_t next_random(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static size_t below(size_t n)
{
    return n == 0 ? 0 : (size_t)(next_random() % n);
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* {"k0":0,"k1":1,...} of n distinct keys, then extra (which may repeat one) before the closing brace. */
static cn_str_t many_keys(size_t n, const char *extra)
{
    char *buf = malloc(n * 24 + strlen(extra) + 8);
    assert_non_null(buf);
    size_t len = 0;
    buf[len++] = '{';
    for (size_t i = 0; i != n; ++i)
        len += (size_t)sprintf(buf + len, "%s\"k%zu\":\"v%zu\"", i != 0 ? "," : "", i, i);
    len += (size_t)sprintf(buf + len, "%s}", extra);
    char *copy = pool_alloc(NULL, len + 1);
    memcpy(copy, buf, len + 1);
    free(buf);
    return (cn_str_t){copy, len};
}

/* The fastest of a few scans of body, in seconds. */
static double time_scan(cn_str_t body, const char *want)
{
    static const char *const paths[] = {"k0", "k4999"};
    double best = 1e9;
    for (int round = 0; round != 3; ++round) {
        cn_scan_t scan;
        double t0 = seconds_now();
        const char *got = cn_json_scan(body, CN_BODY_EVENT, paths, 2, &test_alloc, &scan);
        double t = seconds_now() - t0;
        assert_ptr_equal(got, want);
        if (t < best)
            best = t;
    }
    return best;
}

static void test_many_keys(void **state)
{
    static const char *const paths[] = {"k0", "k2500", "k4999", "k5000"};
    cn_str_t body = many_keys(5000, "");
    assert_true(assert_agrees(body, paths, 4));
    cn_scan_t scan;
    assert_null(cn_json_scan(body, CN_BODY_EVENT, paths, 4, &test_alloc, &scan));
    assert_cn_str(scan.fields[0].s, "v0");
    assert_cn_str(scan.fields[1].s, "v2500");
    assert_cn_str(scan.fields[2].s, "v4999");
    assert_int_equal(scan.fields[3].kind, CN_JV_ABSENT);

    /* a repetition anywhere among them */
    static const char *const repeats[] = {",\"k0\":1", ",\"k2500\":1", ",\"k4999\":1", ",\"k\\u0030\":1",
                                          ",\"k49\\u00399\":1"};
    for (size_t i = 0; i != sizeof(repeats) / sizeof(repeats[0]); ++i)
        assert_false(assert_agrees(many_keys(5000, repeats[i]), paths, 4));
    assert_true(assert_agrees(many_keys(5000, ",\"k5000\":1,\"K0\":1"), paths, 4));

    /* the same key in 5,000 sibling objects, and 5,000 objects of 5 keys each: no repetition */
    char *buf = pool_alloc(NULL, 5000 * 64 + 16);
    size_t len = (size_t)sprintf(buf, "[");
    for (size_t i = 0; i != 5000; ++i)
        len += (size_t)sprintf(buf + len, "%s{\"a\":1,\"b\":{\"a\":2}}", i != 0 ? "," : "");
    len += (size_t)sprintf(buf + len, "]");
    assert_true(assert_agrees((cn_str_t){buf, len}, paths, 4));

    /* 300,000 random keys of one object: any 32-bit hash of them has about ten colliding pairs (n^2 / 2^33), and a
     * pair that collides is still two different keys */
    enum { NRANDOM = 300000 };
    seed_random(0x6b657973u);
    char *keys = pool_alloc(NULL, (size_t)NRANDOM * 16 + 16), *k = keys;
    *k++ = '{';
    for (size_t i = 0; i != NRANDOM; ++i) {
        uint64_t x = next_random();
        if (i != 0)
            *k++ = ',';
        *k++ = '"';
        for (int j = 0; j != 10; ++j, x /= 36)
            *k++ = "abcdefghijklmnopqrstuvwxyz0123456789"[x % 36];
        memcpy(k, "\":0", 3);
        k += 3;
    }
    *k++ = '}';
    assert_true(assert_agrees((cn_str_t){keys, (size_t)(k - keys)}, paths, 4));

    /* fast: the key check is a hash, not a comparison of every pair (which 5,000 keys make 12.5 million of, and
     * 100,000 keys 5 billion) */
    double t5k = time_scan(body, NULL), t100k = time_scan(many_keys(100000, ""), NULL),
           tdup = time_scan(many_keys(100000, ",\"k99999\":0"), not_json);
    print_message("5,000 keys: %.2f ms; 100,000 keys: %.2f ms; 100,000 and a repeat: %.2f ms\n", t5k * 1e3, t100k * 1e3,
                  tdup * 1e3);
    if (t5k > 0.05 || t100k > 1.0 || tdup > 1.0)
        fail_msg("too slow: 5,000 keys %.3f s, 100,000 keys %.3f s, with a repeat %.3f s", t5k, t100k, tdup);
}

/* --- mutants of real bodies --------------------------------------------------------------------------------- */

typedef struct st_buf_t {
    char *p;
    size_t len, cap;
} buf_t;

static void buf_splice(buf_t *b, size_t at, size_t del, const char *ins, size_t inslen)
{
    if (at > b->len)
        at = b->len;
    if (del > b->len - at)
        del = b->len - at;
    if (b->len - del + inslen + 1 > b->cap) {
        b->cap = (b->len - del + inslen + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memmove(b->p + at + inslen, b->p + at + del, b->len - at - del);
    memcpy(b->p + at, ins, inslen);
    b->len = b->len - del + inslen;
    b->p[b->len] = '\0';
}

static const char *pick(const char *const *list, size_t n)
{
    return list[below(n)];
}
#define PICK(list) pick(list, sizeof(list) / sizeof(list[0]))

static const char *const escapes[] = {
    "\\n",     "\\\"",           "\\\\",           "\\/",
    "\\b",     "\\u0041",        "\\u00e9",        "\\u20AC",
    "\\uffff", "\\ud83d\\ude00", "\\udbff\\udfff", "\\u0000",
    "\\ud800", "\\udc00",        "\\ude00\\ud83d", "\\ud800\\u0041",
    "\\u12",   "\\u12g4",        "\\x41",          "\\'",
    "\\",      "\\u0069\\u0064",
};

static const char *const utf8s[] = {
    "\xc3\xa9",
    "\xe2\x82\xac",
    "\xf0\x9f\x98\x80",
    "\xf4\x8f\xbf\xbf",
    "\xef\xbb\xbf",
    "\xc0\x80",
    "\xc1\xbf",
    "\xe0\x80\x80",
    "\xf0\x80\x80\x80",
    "\xed\xa0\x80",
    "\xf4\x90\x80\x80",
    "\xf5\x80\x80\x80",
    "\xff",
    "\x80",
    "\xc3",
    "\xe2\x82",
    "\xf0\x9f\x98",
    "\x01",
    "\x1f",
    "\x7f",
    "\t",
    "\n",
};

static const char *const tokens[] = {
    "0",
    "-0",
    "1.5",
    "-1e-5",
    "1E400",
    "1e-400",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "-9223372036854775809",
    "12345678901234567890",
    "01",
    "1.",
    ".5",
    "1e",
    "1e+",
    "-",
    "true",
    "false",
    "null",
    "nul",
    "nullx",
    "truefalse",
    "\"\"",
    "\"x\"",
    "{}",
    "[]",
    "[1,]",
    "{\"a\":1}",
    "{\"a\":1,\"a\":2}",
    "\"\\u0000\"",
    "\"evt_1\"",
    "{\"id\":\"x\"}",
    "[{}]",
};

static const unsigned char interesting[] = {'"',  '\\', '{',  '}',  '[',  ']',  ',',  ':',  '0',  '9',  '-',  '+',
                                            '.',  'e',  'E',  'u',  'n',  't',  ' ',  '\t', '\n', 0x00, 0x01, 0x1f,
                                            0x7f, 0x80, 0xbf, 0xc0, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xf5, 0xff};

/* A random position just after a '"' (inside a string about half the time), or anywhere if there is none. */
static size_t after_quote(const buf_t *b)
{
    size_t start = below(b->len);
    for (size_t i = 0; i != b->len; ++i) {
        size_t j = (start + i) % b->len;
        if (b->p[j] == '"')
            return j + 1;
    }
    return start;
}

/* Finds a key at or after a random position: *at is its opening quote, *len its length with both quotes. */
static bool find_key(const buf_t *b, size_t *at, size_t *len)
{
    size_t start = below(b->len);
    for (size_t i = 0; i != b->len; ++i) {
        size_t j = (start + i) % b->len;
        /* a closing quote followed by ':' */
        if (b->p[j] != '"' || j + 1 >= b->len || b->p[j + 1] != ':' || j == 0)
            continue;
        size_t k = j;
        while (k != 0 && b->p[k - 1] != '"')
            --k;
        if (k == 0)
            continue;
        *at = k - 1;
        *len = j + 1 - *at;
        return true;
    }
    return false;
}

static void mutate(buf_t *b)
{
    char tmp[600];
    size_t at, len;
    switch (below(13)) {
    case 0: /* flip a bit */
        if (b->len != 0)
            b->p[below(b->len)] ^= (char)(1u << below(8));
        break;
    case 1: /* overwrite a byte */
        if (b->len != 0)
            b->p[below(b->len)] = (char)interesting[below(sizeof(interesting))];
        break;
    case 2: /* insert a byte */
        tmp[0] = (char)(below(3) == 0 ? (unsigned char)below(256) : interesting[below(sizeof(interesting))]);
        buf_splice(b, below(b->len + 1), 0, tmp, 1);
        break;
    case 3: /* delete a few bytes */
        buf_splice(b, below(b->len), 1 + below(4), "", 0);
        break;
    case 4: { /* an escape, mostly inside a string */
        const char *e = PICK(escapes);
        buf_splice(b, after_quote(b), 0, e, strlen(e));
        break;
    }
    case 5: { /* a UTF-8 sequence, good or bad, mostly inside a string */
        const char *u = PICK(utf8s);
        buf_splice(b, after_quote(b), 0, u, strlen(u));
        break;
    }
    case 6: /* repeat a key in its object */
        if (find_key(b, &at, &len) && len < 500) {
            memcpy(tmp, b->p + at, len);
            memcpy(tmp + len, ":0,", 3);
            buf_splice(b, at, 0, tmp, len + 3);
        }
        break;
    case 7: /* repeat a key spelled with an escape: "id" as "\u0069d" */
        if (find_key(b, &at, &len) && len > 3 && len < 500 && (unsigned char)b->p[at + 1] < 0x80 &&
            b->p[at + 1] != '\\') {
            int n = snprintf(tmp, sizeof(tmp), "\"\\u%04x%.*s:1,", (unsigned char)b->p[at + 1], (int)(len - 2),
                             b->p + at + 2);
            buf_splice(b, at, 0, tmp, (size_t)n);
        }
        break;
    case 8: { /* replace the value after a ':' with a token */
        const char *t = PICK(tokens);
        size_t start = below(b->len), colon = b->len;
        for (size_t i = 0; i != b->len; ++i)
            if (b->p[(start + i) % b->len] == ':') {
                colon = (start + i) % b->len;
                break;
            }
        if (colon == b->len)
            break;
        size_t v = colon + 1;
        while (v != b->len && (b->p[v] == ' ' || b->p[v] == '\n'))
            ++v;
        size_t e = v;
        if (e != b->len && b->p[e] == '"') {
            for (++e; e != b->len && b->p[e] != '"'; ++e)
                if (b->p[e] == '\\' && e + 1 != b->len)
                    ++e;
            if (e != b->len)
                ++e;
        } else {
            while (e != b->len && b->p[e] != '\0' && strchr("-+.0123456789eEtruefalsn", b->p[e]) != NULL)
                ++e;
        }
        buf_splice(b, v, e - v, t, strlen(t));
        break;
    }
    case 9: /* insert a token anywhere */
    {
        const char *t = PICK(tokens);
        buf_splice(b, below(b->len + 1), 0, t, strlen(t));
        break;
    }
    case 10: /* copy a chunk somewhere else */
        if (b->len > 2) {
            size_t from = below(b->len), n = 1 + below(b->len - from < 64 ? b->len - from : 64);
            memcpy(tmp, b->p + from, n);
            buf_splice(b, below(b->len + 1), 0, tmp, n);
        }
        break;
    case 11: { /* a NUL byte right after a number or a literal, where jansson loses it */
        size_t start = below(b->len);
        for (size_t i = 0; i != b->len; ++i) {
            size_t j = (start + i) % b->len;
            if ((b->p[j] >= '0' && b->p[j] <= '9') || b->p[j] == 'e' || b->p[j] == 'l') {
                buf_splice(b, j + 1, 0, "", 1);
                break;
            }
        }
        break;
    }
    default: /* cut the text short */
        if (b->len != 0)
            b->len = below(b->len), b->p[b->len] = '\0';
        break;
    }
}

static void mutate_and_compare(const char *fixture, const char *const *paths, size_t npaths, unsigned nmutants)
{
    seed_random(0x5e771edc0ffee123ull);
    cn_str_t original = read_fixture(fixture);
    char *copy = malloc(original.len + 1);
    assert_non_null(copy);
    memcpy(copy, original.base, original.len + 1);
    original.base = copy;
    pool_release(NULL);

    /* the body itself first: it must be accepted, or the mutants prove little */
    assert_true(assert_agrees(original, paths, npaths));
    unsigned accepted = 0, rejected = 0;
    buf_t b = {NULL, 0, 0};
    for (unsigned m = 0; m != nmutants; ++m) {
        b.len = 0;
        buf_splice(&b, 0, 0, original.base, original.len);
        for (size_t n = 1 + below(3); n != 0; --n)
            mutate(&b);
        if (assert_agrees((cn_str_t){b.p, b.len}, paths, npaths))
            ++accepted;
        else
            ++rejected;
        pool_release(NULL);
    }
    print_message("%s: %u mutants, %u accepted, %u rejected\n", fixture, nmutants, accepted, rejected);
    /* both verdicts must be common, or the loop tests only one side */
    if (accepted < nmutants / 10 || rejected < nmutants / 10)
        fail_msg("%s: %u accepted and %u rejected of %u: too lopsided to compare much", fixture, accepted, rejected,
                 nmutants);
    free(b.p);
    free(copy);
}

static void test_mutants_stripe(void **state)
{
    static const char *const paths[] = {"id",
                                        "type",
                                        "object",
                                        "account",
                                        "data.object.id",
                                        "data.object.amount",
                                        "data.object.metadata",
                                        "data.object.billing_details.address.city",
                                        "data.object.billing_details.address.country",
                                        "data.object.outcome.type",
                                        "data.object.payment_method_details.card.checks.cvc_check",
                                        "livemode",
                                        "request.id",
                                        "request",
                                        "created",
                                        "events"};
    mutate_and_compare("stripe/event_charge_succeeded.json", paths, sizeof(paths) / sizeof(paths[0]), 4000);
}

static void test_mutants_gocardless(void **state)
{
    static const char *const paths[] = {"id",
                                        "resource_type",
                                        "action",
                                        "links.organisation",
                                        "links.creditor",
                                        "links.subscription",
                                        "links.mandate",
                                        "links",
                                        "details.cause",
                                        "details.description",
                                        "metadata",
                                        "created_at",
                                        "events"};
    mutate_and_compare("gocardless/sdk_webhook_body.json", paths, sizeof(paths) / sizeof(paths[0]), 4000);
}

static int setup(void **state)
{
    find_sentences();
    return 0;
}

static int teardown(void **state)
{
    json_decref(held);
    held = NULL;
    return pool_release(state);
}

#define TEST(f) cmocka_unit_test_teardown(f, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_sentences),       TEST(test_strings),
        TEST(test_values),          TEST(test_texts),
        TEST(test_every_prefix),    TEST(test_long_numbers),
        TEST(test_path_values),     TEST(test_many_paths),
        TEST(test_events_in_order), TEST(test_events_not_envelope),
        TEST(test_depth_limit),     TEST(test_many_keys),
        TEST(test_mutants_stripe),  TEST(test_mutants_gocardless),
    };
    return cmocka_run_group_tests_name("connectors/json_scan", tests, setup, NULL);
}
