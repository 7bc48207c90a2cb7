/* SPDX-License-Identifier: MIT */
/* Tests of gateway/infra/jsonw.c: commas and nesting, escaping (RFC 8259: quote, backslash, every control
 * character; UTF-8 passed through), null for a NULL string, and documents jansson parses back to the same values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "jsonw.h"

static void test_structure(void **state)
{
    gw_jsonw_t w = {0};
    gw_jsonw_open(&w, '{');
    gw_jsonw_member(&w, "a", "x", 1);
    gw_jsonw_key(&w, "list");
    gw_jsonw_open(&w, '[');
    gw_jsonw_open(&w, '{');
    gw_jsonw_key(&w, "n");
    gw_jsonw_raw(&w, "1", 1);
    gw_jsonw_close(&w, '}');
    gw_jsonw_open(&w, '{');
    gw_jsonw_close(&w, '}');
    gw_jsonw_str(&w, NULL, 0);
    gw_jsonw_str(&w, "", 0);
    gw_jsonw_close(&w, ']');
    gw_jsonw_key(&w, "empty");
    gw_jsonw_open(&w, '[');
    gw_jsonw_close(&w, ']');
    gw_jsonw_member(&w, "none", NULL, 0);
    gw_jsonw_close(&w, '}');
    assert_string_equal(w.out.p, "{\"a\":\"x\",\"list\":[{\"n\":1},{},null,\"\"],\"empty\":[],\"none\":null}");
    assert_int_equal(w.out.len, strlen(w.out.p));
    assert_int_equal(w.depth, 0);
    free(w.out.p);
}

static void test_escaping(void **state)
{
    /* every byte 0x01..0x7f, then UTF-8 of 2, 3 and 4 bytes, then an embedded NUL (length-delimited input) */
    char in[200];
    size_t n = 0;
    for (int c = 1; c != 0x80; ++c)
        in[n++] = (char)c;
    const char *utf8 = "Caf\xc3\xa9 \xe2\x80\x94 \xf0\x9d\x84\x9e";
    memcpy(in + n, utf8, strlen(utf8));
    n += strlen(utf8);
    in[n++] = '\0';
    in[n++] = 'z';
    gw_jsonw_t w = {0};
    gw_jsonw_open(&w, '[');
    gw_jsonw_str(&w, in, n);
    gw_jsonw_close(&w, ']');
    for (size_t i = 0; i != w.out.len; ++i)
        assert_true((unsigned char)w.out.p[i] >= 0x20); /* no raw control character left */
    assert_non_null(strstr(w.out.p, "\\n\\u000b\\u000c\\r"));
    assert_non_null(strstr(w.out.p, "\\\"#"));
    assert_non_null(strstr(w.out.p, "[\\\\]"));
    json_error_t err;
    json_t *back = json_loads(w.out.p, JSON_ALLOW_NUL, &err);
    assert_non_null(back);
    json_t *s = json_array_get(back, 0);
    assert_int_equal(json_string_length(s), n);
    assert_memory_equal(json_string_value(s), in, n);
    json_decref(back);
    free(w.out.p);
}

static void test_large(void **state)
{
    /* past the first allocation: the buffer grows and stays NUL-terminated */
    gw_jsonw_t w = {0};
    gw_jsonw_open(&w, '[');
    char item[100];
    memset(item, 'q', sizeof(item));
    for (int i = 0; i != 500; ++i)
        gw_jsonw_str(&w, item, sizeof(item));
    gw_jsonw_close(&w, ']');
    assert_int_equal(w.out.len, 2 + 500 * 102 + 499);
    assert_int_equal(strlen(w.out.p), w.out.len);
    json_t *back = json_loads(w.out.p, 0, NULL);
    assert_int_equal(json_array_size(back), 500);
    json_decref(back);
    free(w.out.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
