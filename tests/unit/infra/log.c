/* SPDX-License-Identifier: MIT */
/* Tests of gateway/infra/log.c: every line is one valid JSON object, whatever the field values hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
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

/* --- rate-limited messages, on a clock the test moves --------------------------------------------------------- */

static uint64_t fake_now;
static uint64_t fake_clock(void)
{
    return fake_now;
}

/* stderr goes to a temporary file while a test captures it */
static FILE *captured;
static int saved_stderr = -1;

static void capture_begin(void)
{
    captured = tmpfile();
    assert_non_null(captured);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    dup2(fileno(captured), STDERR_FILENO);
}

/* Restores stderr and returns the lines written meanwhile as a JSON array of objects (each line must parse). */
static json_t *capture_end(void)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    rewind(captured);
    json_t *lines = json_array();
    char buf[8192];
    while (fgets(buf, sizeof(buf), captured) != NULL) {
        json_t *j = json_loads(buf, 0, NULL);
        if (j == NULL)
            fail_msg("a log line is not JSON: %s", buf);
        json_array_append_new(lines, j);
    }
    fclose(captured);
    return lines;
}

static const char *msg_of(json_t *lines, size_t i)
{
    return json_string_value(json_object_get(json_array_get(lines, i), "msg"));
}

static void test_limited_repeats_are_summarised(void **state)
{
    uint64_t (*real_clock)(void) = gw_log_clock;
    gw_log_clock = fake_clock;
    fake_now = 1000000;
    static gw_log_limit_t lim = GW_LOG_LIMIT_INIT(GW_LOG_WARN, 60000);
    capture_begin();
    /* a database outage: one failure a second for 150 s */
    for (int i = 0; i != 150; ++i) {
        gw_log_limited(&lim, "worker 0: cannot claim: attempt %d", i);
        fake_now += 1000;
    }
    /* it recovers: the repeats since the last summary are reported once */
    gw_log_limit_settle(&lim);
    gw_log_limit_settle(&lim); /* nothing more to say */
    /* and a new failure later is written at once */
    fake_now += 5000;
    gw_log_limited(&lim, "worker 0: cannot claim: again");
    json_t *lines = capture_end();
    if (json_array_size(lines) != 5)
        fail_msg("expected 5 lines, got %zu: %s", json_array_size(lines), json_dumps(lines, 0));
    assert_string_equal(msg_of(lines, 0), "worker 0: cannot claim: attempt 0");
    /* attempts 1..60 happen at +1 s .. +60 s: the 60th, at +60 s, closes the first period */
    assert_string_equal(msg_of(lines, 1), "worker 0: cannot claim: attempt 60 (repeated 60 times in the last 60 s)");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(lines, 1), "repeated")), 60);
    assert_string_equal(json_string_value(json_object_get(json_array_get(lines, 1), "level")), "warn");
    assert_string_equal(msg_of(lines, 2), "worker 0: cannot claim: attempt 120 (repeated 60 times in the last 60 s)");
    /* attempts 121..149, then settled at +150 s: 29 repeats over the last 30 s */
    assert_string_equal(msg_of(lines, 3), "worker 0: cannot claim: attempt 149 (repeated 29 times in the last 30 s)");
    assert_string_equal(msg_of(lines, 4), "worker 0: cannot claim: again");
    json_decref(lines);
    gw_log_clock = real_clock;
}

static void test_limited_quiet_period_writes_again(void **state)
{
    uint64_t (*real_clock)(void) = gw_log_clock;
    gw_log_clock = fake_clock;
    fake_now = 0;
    static gw_log_limit_t lim = GW_LOG_LIMIT_INIT(GW_LOG_WARN, 60000);
    capture_begin();
    gw_log_limited(&lim, "first");
    fake_now = 61000; /* no repeat within the period: the next one is news, written as it is */
    gw_log_limited(&lim, "second");
    fake_now = 62000;
    gw_log_limited(&lim, "third"); /* a repeat: counted */
    /* below the level: neither written nor counted, its arguments not evaluated */
    static gw_log_limit_t debug = GW_LOG_LIMIT_INIT(GW_LOG_DEBUG, 60000);
    int evaluated = 0;
    gw_log_limited(&debug, "%d", ++evaluated);
    json_t *lines = capture_end();
    assert_int_equal(evaluated, 0);
    assert_int_equal(json_array_size(lines), 2);
    assert_string_equal(msg_of(lines, 0), "first");
    assert_string_equal(msg_of(lines, 1), "second");
    assert_int_equal(lim.repeats, 1);
    json_decref(lines);
    gw_log_clock = real_clock;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_is_valid_json),
        cmocka_unit_test(test_overlong_line_stays_valid),
        cmocka_unit_test(test_level_gate),
        cmocka_unit_test(test_one_line),
        cmocka_unit_test(test_limited_repeats_are_summarised),
        cmocka_unit_test(test_limited_quiet_period_writes_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
