/* SPDX-License-Identifier: MIT */
/* Tests of gateway/infra/retry_schedule.c: good lists parse to the waits they say, bad ones fail naming the wait
 * and the reason, and the canonical form reads back as the same schedule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include "retry_schedule.h"

static void parses(const char *text, size_t n, const int64_t *ms, const char *canonical)
{
    gw_retry_schedule_t s;
    char err[256] = "", buf[512];
    if (gw_retry_schedule_parse(text, &s, err, sizeof(err)) != 0)
        fail_msg("\"%s\": expected to parse, got: %s", text, err);
    if (s.n != n)
        fail_msg("\"%s\": %zu waits, expected %zu", text, s.n, n);
    for (size_t i = 0; i != n; ++i)
        if (s.ms[i] != ms[i])
            fail_msg("\"%s\": wait %zu is %lld ms, expected %lld", text, i + 1, (long long)s.ms[i], (long long)ms[i]);
    gw_retry_schedule_format(&s, buf, sizeof(buf));
    if (strcmp(buf, canonical) != 0)
        fail_msg("\"%s\": printed as \"%s\", expected \"%s\"", text, buf, canonical);
    gw_retry_schedule_t again;
    assert_int_equal(gw_retry_schedule_parse(buf, &again, err, sizeof(err)), 0);
    assert_memory_equal(&again, &s, sizeof(s));
}

static void refuses(const char *text, const char *expected)
{
    gw_retry_schedule_t s;
    char err[256] = "";
    if (gw_retry_schedule_parse(text, &s, err, sizeof(err)) != -1)
        fail_msg("\"%s\": expected a refusal", text);
    if (strcmp(err, expected) != 0)
        fail_msg("\"%s\": expected \"%s\", got \"%s\"", text, expected, err);
}

static void test_good_lists(void **state)
{
    static const int64_t dflt[] = {0, 10000, 60000, 300000, 1800000, 7200000, 18000000, 36000000, 36000000};
    parses("0s,10s,1m,5m,30m,2h,5h,10h,10h", 9, dflt, "0s,10s,1m,5m,30m,2h,5h,10h,10h");
    static const int64_t mixed[] = {500, 1500, 90000, 86400000, 7 * 86400000LL};
    parses(" 500ms , 1500ms,90s,\t1d,7d ", 5, mixed, "500ms,1500ms,90s,1d,7d");
    static const int64_t one[] = {120000};
    parses("120s", 1, one, "2m");
    parses("none", 0, NULL, "none");
    gw_retry_schedule_t s;
    char err[256];
    assert_int_equal(gw_retry_schedule_parse("0s,10s,1m,5m,30m,2h,5h,10h,10h", &s, err, sizeof(err)), 0);
    assert_int_equal(gw_retry_schedule_span_ms(&s), 99370000); /* 27 h 36 min 10 s */
    char many[32 * 4 + 8] = "";
    for (int i = 0; i != GW_RETRY_SCHEDULE_MAX; ++i)
        strcat(many, i == 0 ? "1s" : ",1s");
    assert_int_equal(gw_retry_schedule_parse(many, &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, GW_RETRY_SCHEDULE_MAX);
}

static void test_bad_lists(void **state)
{
    refuses("", "must list at least one wait (e.g. 0s,10s,1m,5m), or be \"none\" for no retries");
    refuses("   ", "must list at least one wait (e.g. 0s,10s,1m,5m), or be \"none\" for no retries");
    refuses("10", "wait 1 (\"10\") needs a unit: ms, s, m, h or d (e.g. 10s, 5m, 2h)");
    refuses("1s,,5m", "wait 2 is empty (separate waits with single commas, e.g. 0s,10s,1m)");
    refuses("1s,5m,", "wait 3 is empty (separate waits with single commas, e.g. 0s,10s,1m)");
    refuses("1s,-5m", "wait 2 (\"-5m\") must start with a whole number, e.g. 30s");
    refuses("1.5s", "wait 1 (\"1.5s\") needs a unit: ms, s, m, h or d (e.g. 10s, 5m, 2h)");
    refuses("10 s", "wait 1 (\"10 s\") needs a unit: ms, s, m, h or d (e.g. 10s, 5m, 2h)");
    refuses("1w", "wait 1 (\"1w\") needs a unit: ms, s, m, h or d (e.g. 10s, 5m, 2h)");
    refuses("8d", "wait 1 (\"8d\") is longer than 7 days");
    refuses("99999999999999999999999s", "wait 1 (\"99999999999999999999999s\") is longer than 7 days");
    refuses("none,1s", "wait 1 (\"none\") must start with a whole number, e.g. 30s");
    char many[33 * 4 + 8] = "";
    for (int i = 0; i != GW_RETRY_SCHEDULE_MAX + 1; ++i)
        strcat(many, i == 0 ? "1s" : ",1s");
    refuses(many, "lists more than 32 waits");
}

static void test_pg_array(void **state)
{
    (void)state;
    gw_retry_schedule_t rs;
    char err[128], buf[256];
    assert_int_equal(gw_retry_schedule_parse("0s,10s,1m", &rs, err, sizeof(err)), 0);
    assert_string_equal(gw_retry_schedule_pg_array(&rs, buf, sizeof(buf)), "{0,10000,60000}");
    assert_int_equal(gw_retry_schedule_parse("none", &rs, err, sizeof(err)), 0);
    assert_string_equal(gw_retry_schedule_pg_array(&rs, buf, sizeof(buf)), "{}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_lists),
        cmocka_unit_test(test_bad_lists),
        cmocka_unit_test(test_pg_array),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
