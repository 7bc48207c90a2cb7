/* SPDX-License-Identifier: MIT */
/* Tests of gateway/api/reply.c: problem+json bodies are valid JSON with the stable code and escaped text, and the
 * body gw_reply_err sends for a gw_err_t is the one gw_reply_problem sends for its parts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>
#include "reply.h"
#include "connector.h"

static void test_problem_body(void **state)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    h2o_iovec_t body = gw_reply_problem_body(&pool, 400, cn_err_signature_mismatch, "a \"quoted\"\nline\\",
                                             h2o_iovec_init(H2O_STRLIT("rid-1")));
    json_error_t jerr;
    json_t *j = json_loadb(body.base, body.len, 0, &jerr);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "code")), "signature_mismatch");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "urn:settled:error:signature_mismatch");
    assert_string_equal(json_string_value(json_object_get(j, "title")), "Signature does not match");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 400);
    assert_string_equal(json_string_value(json_object_get(j, "detail")), "a \"quoted\"\nline\\");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "rid-1");
    json_decref(j);
    h2o_mem_clear_pool(&pool);
}

static void test_problem_body_without_detail(void **state)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    h2o_iovec_t body = gw_reply_problem_body(&pool, 404, gw_err_not_found, NULL, h2o_iovec_init(NULL, 0));
    json_t *j = json_loadb(body.base, body.len, 0, NULL);
    assert_non_null(j);
    assert_null(json_object_get(j, "detail"));
    assert_null(json_object_get(j, "request_id"));
    assert_string_equal(json_string_value(json_object_get(j, "code")), "not_found");
    json_decref(j);
    h2o_mem_clear_pool(&pool);
}

static void test_reasons(void **state)
{
    assert_string_equal(gw_reply_reason(498), "Token Invalid");
    assert_string_equal(gw_reply_reason(413), "Payload Too Large");
    assert_string_equal(gw_reply_reason(503), "Service Unavailable");
    /* every status a gateway code answers with has its phrase */
    assert_string_equal(gw_reply_reason(409), "Conflict");
    assert_string_equal(gw_reply_reason(502), "Bad Gateway");
    assert_string_equal(gw_reply_reason(500), "Internal Server Error");
}

/* The body of err must be byte for byte the problem body of (expect_status, expect_code, expect_detail); expect_code
 * is a code constant (titles are found by pointer). */
static void check_err_body(const gw_err_t *err, int expect_status, const char *expect_code, const char *expect_detail)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    h2o_iovec_t rid = h2o_iovec_init(H2O_STRLIT("rid-2"));
    int status = -1;
    h2o_iovec_t body = gw_reply_err_body(&pool, err, rid, &status);
    h2o_iovec_t want = gw_reply_problem_body(&pool, expect_status, expect_code, expect_detail, rid);
    assert_int_equal(status, expect_status);
    if (body.len != want.len || memcmp(body.base, want.base, body.len) != 0)
        fail_msg("gw_reply_err_body:\n  %.*s\nexpected:\n  %.*s", (int)body.len, body.base, (int)want.len, want.base);
    json_t *j = json_loadb(body.base, body.len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "code")), expect_code);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), expect_status);
    if (expect_detail != NULL)
        assert_string_equal(json_string_value(json_object_get(j, "detail")), expect_detail);
    else
        assert_null(json_object_get(j, "detail"));
    json_decref(j);
    h2o_mem_clear_pool(&pool);
}

static void test_err_body(void **state)
{
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_err_set(&err, gw_err_conflict, 409, "Row %d \"changed\".", 3), -1);
    check_err_body(&err, 409, gw_err_conflict, "Row 3 \"changed\".");
    /* a connector's code keeps its status; no detail, no "detail" member */
    gw_err_set(&err, cn_err_signature_mismatch, 498, NULL);
    check_err_body(&err, 498, cn_err_signature_mismatch, NULL);
    gw_err_set(&err, gw_err_store_unavailable, 503, "%s", "");
    check_err_body(&err, 503, gw_err_store_unavailable, NULL);
}

static void test_err_body_without_an_error(void **state)
{
    /* no error at all is a bug of the caller: 500 internal, never a 200 or an empty code */
    check_err_body(NULL, 500, gw_err_internal, NULL);
    gw_err_t err = GW_ERR_INIT;
    check_err_body(&err, 500, gw_err_internal, NULL);
    gw_err_set(&err, gw_err_conflict, 409, "gone");
    gw_err_clear(&err);
    check_err_body(&err, 500, gw_err_internal, NULL);
    /* a status that is no HTTP status answers 500, with the code kept */
    err = (gw_err_t){.code = gw_err_provider_rejected, .status = 42};
    check_err_body(&err, 500, gw_err_provider_rejected, NULL);
    err = (gw_err_t){.code = gw_err_provider_rejected, .status = 0};
    check_err_body(&err, 500, gw_err_provider_rejected, NULL);
}

static void test_err_body_with_the_longest_detail(void **state)
{
    /* a detail cut at the size of gw_err_t, full of characters that need escaping, is still valid JSON */
    char long_detail[1000];
    memset(long_detail, '"', sizeof(long_detail) - 1);
    long_detail[sizeof(long_detail) - 1] = '\0';
    gw_err_t err = GW_ERR_INIT;
    gw_err_set(&err, gw_err_internal, 500, "%s", long_detail);
    assert_int_equal(strlen(err.detail), sizeof(err.detail) - 1);
    check_err_body(&err, 500, gw_err_internal, err.detail);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_problem_body),
        cmocka_unit_test(test_problem_body_without_detail),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_err_body),
        cmocka_unit_test(test_err_body_without_an_error),
        cmocka_unit_test(test_err_body_with_the_longest_detail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
