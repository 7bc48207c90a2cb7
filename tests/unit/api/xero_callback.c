/* SPDX-License-Identifier: MIT */
/* Tests of gateway/api/xero_callback.c: query parameters are found, percent-decoded (by the codec of infra/crypto.c),
 * bounded and refused when bad. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "xero_callback.h"

static h2o_iovec_t iov(const char *s)
{
    return h2o_iovec_init(s, strlen(s));
}

static void test_query_param(void **state)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    h2o_iovec_t v;
    assert_int_equal(gw_query_param(&pool, iov("code=abc&state=x%2By%3D"), "state", 100, &v), 0);
    assert_int_equal(v.len, 4);
    assert_memory_equal(v.base, "x+y=", 4);
    assert_int_equal(gw_query_param(&pool, iov("code=a+b&state=s"), "code", 100, &v), 0);
    assert_string_equal(v.base, "a b");
    assert_int_equal(gw_query_param(&pool, iov("codex=1&xcode=2"), "code", 100, &v), 1); /* no prefix matches */
    assert_int_equal(gw_query_param(&pool, iov("code="), "code", 100, &v), 0);
    assert_int_equal(v.len, 0);
    assert_int_equal(gw_query_param(&pool, iov(""), "code", 100, &v), 1);
    assert_int_equal(gw_query_param(&pool, iov("code=%4"), "code", 100, &v), -1);    /* truncated escape */
    assert_int_equal(gw_query_param(&pool, iov("code=%zz"), "code", 100, &v), -1);   /* not hex */
    assert_int_equal(gw_query_param(&pool, iov("code=a%00b"), "code", 100, &v), -1); /* NUL */
    assert_int_equal(gw_query_param(&pool, iov("code=12345"), "code", 4, &v), -1);   /* too long */
    assert_int_equal(gw_query_param(&pool, iov("code=1234"), "code", 4, &v), 0);
    /* the bound is on the decoded value: four escapes are four bytes */
    assert_int_equal(gw_query_param(&pool, iov("code=%41%42%43%44"), "code", 4, &v), 0);
    assert_string_equal(v.base, "ABCD");
    assert_int_equal(gw_query_param(&pool, iov("code=%41%42%43%44%45"), "code", 4, &v), -1);
    assert_int_equal(gw_query_param(&pool, iov("state=%2b%2F"), "state", 100, &v), 0); /* either case */
    assert_string_equal(v.base, "+/");
    assert_int_equal(gw_query_param(&pool, iov("code=a%"), "code", 100, &v), -1);          /* a lone '%' */
    assert_int_equal(gw_query_param(&pool, iov("code=ok&state=%zz"), "code", 100, &v), 0); /* only the asked one */
    assert_int_equal(gw_query_param(&pool, iov("code=ok&state=%zz"), "state", 100, &v), -1);
    /* a raw NUL inside the query (the iovec carries its length) */
    h2o_iovec_t nul = h2o_iovec_init("code=a\0b", 8);
    assert_int_equal(gw_query_param(&pool, nul, "code", 100, &v), -1);
    h2o_mem_clear_pool(&pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_query_param)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
