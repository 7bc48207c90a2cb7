/* SPDX-License-Identifier: MIT */
/* Tests of gateway/infra/redis.c: URL parsing, and the h2o adapter against a real Redis (SETTLED_TEST_REDIS_URL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "redis.h"

static void test_parse_url(void **state)
{
    char *host, *pw;
    int port, db;
    assert_int_equal(gw_redis_parse_url("redis://127.0.0.1:6390/2", &host, &port, &pw, &db), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6390);
    assert_int_equal(db, 2);
    assert_null(pw);
    free(host);
    assert_int_equal(gw_redis_parse_url("redis://:s3cret@localhost", &host, &port, &pw, &db), 0);
    assert_string_equal(host, "localhost");
    assert_int_equal(port, 6379);
    assert_string_equal(pw, "s3cret");
    assert_int_equal(db, 0);
    free(host);
    free(pw);
    assert_int_equal(gw_redis_parse_url("redis://user:pw@h:1/", &host, &port, &pw, &db), 0);
    assert_string_equal(pw, "pw");
    free(host);
    free(pw);
    assert_int_equal(gw_redis_parse_url("http://h:1", &host, &port, &pw, &db), -1);
    assert_int_equal(gw_redis_parse_url("redis://h:0", &host, &port, &pw, &db), -1);
    assert_int_equal(gw_redis_parse_url("redis://h:99999", &host, &port, &pw, &db), -1);
    assert_int_equal(gw_redis_parse_url("redis://h:12x", &host, &port, &pw, &db), -1);
    assert_int_equal(gw_redis_parse_url("redis://", &host, &port, &pw, &db), -1);
    assert_int_equal(gw_redis_parse_url("redis://h/notanumber", &host, &port, &pw, &db), -1);
}

static void test_live_ping(void **state)
{
    const char *url = getenv("SETTLED_TEST_REDIS_URL");
    if (url == NULL || *url == '\0')
        fail_msg("SETTLED_TEST_REDIS_URL is not set: run the tests through deploy/test.sh");
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_redis_t *r = gw_redis_create(loop, url);
    assert_non_null(r);
    for (int i = 0; i != 300 && !gw_redis_is_up(r); ++i)
        h2o_evloop_run(loop, 10);
    assert_true(gw_redis_is_up(r));
    gw_redis_destroy(r);

    /* nothing listens on port 1: the connection reports down and the loop goes on */
    r = gw_redis_create(loop, "redis://127.0.0.1:1");
    for (int i = 0; i != 30; ++i)
        h2o_evloop_run(loop, 10);
    assert_false(gw_redis_is_up(r));
    gw_redis_destroy(r);
    h2o_evloop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse_url), cmocka_unit_test(test_live_ping)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
