/* SPDX-License-Identifier: MIT */
/* Tests of gateway/api/xero_callback.c: query parameters are found, percent-decoded (by the codec of infra/crypto.c),
 * bounded and refused when bad; the errors a browser is shown keep their code and status but never a database's
 * message (the end-to-end replies are checked by tests/integration/test_xero_oauth.py). */
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

static void expect_public(const gw_err_t *in, bool own, const char *code, int status, const char *detail)
{
    gw_err_t out;
    gw_xero_callback_public_err(in, own, &out);
    assert_ptr_equal(out.code, code);
    assert_int_equal(out.status, status);
    if (strstr(out.detail, detail) == NULL)
        fail_msg("detail \"%s\" lacks \"%s\"", out.detail, detail);
    static const char *const leaks[] = {"127.0.0.1", "5432",    "connection to server", "refused", "xero_tokens",
                                        "SQLSTATE",  "relation"};
    if (!own && code != gw_err_oauth_callback_invalid && code != gw_err_oauth_state_used)
        for (size_t i = 0; i != sizeof(leaks) / sizeof(leaks[0]); ++i)
            if (strstr(out.detail, leaks[i]) != NULL)
                fail_msg("the detail \"%s\" shows \"%s\"", out.detail, leaks[i]);
}

static void test_public_errors_name_no_database(void **state)
{
    gw_err_t e = GW_ERR_INIT;
    gw_err_set(&e, gw_err_store_unavailable, 503,
               "cannot connect to the database: connection to server at \"127.0.0.1\", port 5432 failed: Connection "
               "refused");
    expect_public(&e, false, gw_err_store_unavailable, 503, "database is unavailable");
    gw_err_set(&e, gw_err_xero_connect_failed, 502,
               "cannot store the Xero token set: relation \"xero_tokens\" does not exist (run `settled migrate`)");
    expect_public(&e, false, gw_err_xero_connect_failed, 502, "server log");
    gw_err_set(&e, gw_err_internal, 500, "The statement failed (SQLSTATE 42P01).");
    expect_public(&e, false, gw_err_internal, 500, "server log");
    gw_err_t none = GW_ERR_INIT;
    expect_public(&none, false, gw_err_internal, 500, "server log");
    /* the 400s of the domain and the handler's own sentences are shown as they are */
    gw_err_set(&e, gw_err_oauth_state_used, 400, "This authorization request was already used.");
    expect_public(&e, false, gw_err_oauth_state_used, 400, "already used");
    gw_err_set(&e, gw_err_oauth_callback_invalid, 400, "The authorization request is invalid or has expired.");
    expect_public(&e, false, gw_err_oauth_callback_invalid, 400, "invalid or has expired");
    gw_err_set(&e, gw_err_store_unavailable, 503, "The server is busy (32 tasks are waiting for a thread).");
    expect_public(&e, true, gw_err_store_unavailable, 503, "busy");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_query_param),
                                       cmocka_unit_test(test_public_errors_name_no_database)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
