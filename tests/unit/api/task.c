/* SPDX-License-Identifier: MIT */
/* Tests of gateway/api/task.c: the keyset cursors of the admin lists (the event log, the audit log) round-trip,
 * and anything settled did not issue is refused (0) rather than read as some id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "task.h"

static void test_round_trip(void **state)
{
    const int64_t ids[] = {1, 42, 812, 1000000007, INT64_MAX};
    for (size_t i = 0; i != sizeof(ids) / sizeof(ids[0]); ++i) {
        json_t *c = gw_task_cursor(ids[i]);
        assert_non_null(json_string_value(c));
        assert_null(strpbrk(json_string_value(c), "+/=")); /* base64url without padding */
        assert_int_equal(gw_task_cursor_id(json_string_value(c)), ids[i]);
        json_decref(c);
    }
}

static void test_refused(void **state)
{
    assert_int_equal(gw_task_cursor_id(NULL), 0);
    assert_int_equal(gw_task_cursor_id(""), 0);
    assert_int_equal(gw_task_cursor_id("Zm9v"), 0);                         /* "foo" */
    assert_int_equal(gw_task_cursor_id("MDQy"), 0);                         /* "042": no leading zero */
    assert_int_equal(gw_task_cursor_id("LTE"), 0);                          /* "-1" */
    assert_int_equal(gw_task_cursor_id("ODEy=="), 0);                       /* padded */
    assert_int_equal(gw_task_cursor_id("%%%"), 0);                          /* not base64 */
    assert_int_equal(gw_task_cursor_id("OTIyMzM3MjAzNjg1NDc3NTgwODk5"), 0); /* 20 digits */
    assert_int_equal(gw_task_cursor_id("ODEy"), 812);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
