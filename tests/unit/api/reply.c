/* SPDX-License-Identifier: MIT */
/* Tests of gateway/api/reply.c: problem+json bodies are valid JSON with the stable code and escaped text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
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
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_problem_body),
        cmocka_unit_test(test_problem_body_without_detail),
        cmocka_unit_test(test_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
