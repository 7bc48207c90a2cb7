/* SPDX-License-Identifier: MIT */
/* Tests of gateway/infra/log.c: every line is one valid JSON object, whatever the field values hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>
#include "log.h"

static void test_line_is_valid_json(void **state)
{
    gw_logline_t line;
    gw_log_begin(&line, GW_LOG_WARN, "msg with \"quotes\" and \\");
    gw_log_str(&line, "ctl", "a\nb\tc\x01\x7f", 7);
    gw_log_str(&line, "skipped", NULL, 0);
    gw_log_int(&line, "n", -42);
    gw_log_ms(&line, "ms", 1.5);
    line.buf[line.len++] = '}'; /* what gw_log_end adds before writing */
    json_t *j = json_loadb(line.buf, line.len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "msg with \"quotes\" and \\");
    assert_string_equal(json_string_value(json_object_get(j, "ctl")), "a\nb\tc\x01\x7f");
    assert_null(json_object_get(j, "skipped"));
    assert_int_equal(json_integer_value(json_object_get(j, "n")), -42);
    assert_true(json_real_value(json_object_get(j, "ms")) == 1.5);
    assert_non_null(json_object_get(j, "time"));
    json_decref(j);
}

static void test_overlong_line_stays_valid(void **state)
{
    gw_logline_t line;
    static char big[10000];
    memset(big, 'x', sizeof(big));
    gw_log_begin(&line, GW_LOG_INFO, "big");
    gw_log_str(&line, "a", big, sizeof(big));
    gw_log_str(&line, "b", big, sizeof(big));
    /* truncation must not corrupt the buffer bounds; the line is cut, not overflowed */
    assert_true(line.len <= sizeof(line.buf) - 3);
}

static void test_level_gate(void **state)
{
    gw_log_min_level = GW_LOG_ERROR;
    int evaluated = 0;
    gw_log(GW_LOG_INFO, "%d", ++evaluated);
    assert_int_equal(evaluated, 0); /* arguments are not evaluated below the level */
    gw_log_min_level = GW_LOG_INFO;
}

static void test_one_line(void **state)
{
    char buf[64];
    assert_string_equal(gw_log_one_line(buf, sizeof(buf), "could not connect\n\tIs the server running?\n"),
                        "could not connect Is the server running?");
    assert_string_equal(gw_log_one_line(buf, 8, "0123456789"), "0123456");
    assert_string_equal(gw_log_one_line(buf, sizeof(buf), NULL), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_is_valid_json),
        cmocka_unit_test(test_overlong_line_stays_valid),
        cmocka_unit_test(test_level_gate),
        cmocka_unit_test(test_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
