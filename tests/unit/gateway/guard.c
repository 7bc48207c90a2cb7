/* SPDX-License-Identifier: MIT */
/* Tests of gateway/guard.c: the validator of a route's declared inputs (each type, bounds, defaults, required,
 * unknown parameters and fields, repeated ones, malformed JSON, a body's array), and the deny-list key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "guard.h"

static const char *const colours[] = {"red", "dark_blue", NULL};

enum { I_ID, I_S, I_N, I_B, I_E, I_D, I_M, I_C, I_R };
static const gw_input_t query_inputs[] = {
    [I_ID] = {"id", GW_IN_PATH, GW_IN_STRING, .required = true, .min = 1, .max = 8},
    [I_S] = {"s", GW_IN_QUERY, GW_IN_STRING, .min = 2, .max = 5},
    [I_N] = {"n", GW_IN_QUERY, GW_IN_INT, .min = 1, .max = 100, .def = "25"},
    [I_B] = {"b", GW_IN_QUERY, GW_IN_BOOL},
    [I_E] = {"e", GW_IN_QUERY, GW_IN_ENUM, .values = colours},
    [I_D] = {"d", GW_IN_QUERY, GW_IN_DATE},
    [I_M] = {"m", GW_IN_QUERY, GW_IN_MONEY},
    [I_C] = {"c", GW_IN_QUERY, GW_IN_CURSOR, .max = 8},
    [I_R] = {"r", GW_IN_QUERY, GW_IN_INT, .required = true, .min = -5, .max = 5},
};
static const gw_route_t query_route = {.name = "q",
                                       .method = "GET",
                                       .path = "/v1/q/{id}",
                                       .inputs = query_inputs,
                                       .ninputs = sizeof(query_inputs) / sizeof(query_inputs[0])};

enum { J_NAME, J_AGE, J_OK, J_AMOUNT };
static const gw_input_t body_inputs[] = {
    [J_NAME] = {"name", GW_IN_BODY, GW_IN_STRING, .required = true, .min = 1, .max = 10},
    [J_AGE] = {"age", GW_IN_BODY, GW_IN_INT, .min = 0, .max = 150},
    [J_OK] = {"ok", GW_IN_BODY, GW_IN_BOOL},
    [J_AMOUNT] = {"amount", GW_IN_BODY, GW_IN_MONEY},
};
static const gw_route_t body_route = {.name = "b",
                                      .method = "POST",
                                      .path = "/v1/b",
                                      .inputs = body_inputs,
                                      .ninputs = sizeof(body_inputs) / sizeof(body_inputs[0])};

static const gw_input_t array_inputs[] = {{"steps", GW_IN_BODY, GW_IN_ARRAY, .required = true, .max = 3}};
static const gw_route_t array_route = {
    .name = "a", .method = "PUT", .path = "/v1/a", .inputs = array_inputs, .ninputs = 1};

static h2o_iovec_t iov(const char *s)
{
    return s != NULL ? h2o_iovec_init(s, strlen(s)) : h2o_iovec_init(NULL, 0);
}

typedef struct st_result_t {
    int rc;
    gw_err_t err;
    const char *field;
    gw_call_t call;
} result_t;

static h2o_mem_pool_t pool;

static result_t run(const gw_route_t *route, const char *id, const char *query, const char *body, const char *ctype)
{
    result_t r;
    memset(&r, 0, sizeof(r));
    h2o_iovec_t params[1] = {iov(id)};
    r.rc = gw_guard_validate(&pool, route, params, id != NULL ? 1 : 0, iov(query), iov(body), iov(ctype), &r.call,
                             &r.err, &r.field);
    json_decref(r.call.body);
    r.call.body = NULL;
    return r;
}

static result_t q(const char *query)
{
    return run(&query_route, "x1", query, NULL, NULL);
}

/* query fails with code naming field */
static void expect_refused(result_t r, const char *code, const char *field)
{
    assert_int_equal(r.rc, -1);
    assert_ptr_equal(r.err.code, code);
    if (field == NULL)
        assert_null(r.field);
    else
        assert_string_equal(r.field, field);
    if (code == gw_err_parameter_invalid || code == gw_err_parameter_unknown)
        assert_int_equal(r.err.status, 400);
}

static void test_defaults_and_required(void **state)
{
    result_t r = q("r=0");
    assert_int_equal(r.rc, 0);
    assert_true(r.call.in[I_ID].present);
    assert_string_equal(r.call.in[I_ID].str.base, "x1");
    assert_true(r.call.in[I_N].present); /* the default */
    assert_int_equal(r.call.in[I_N].i, 25);
    assert_false(r.call.in[I_S].present);
    assert_int_equal(r.call.in[I_R].i, 0);
    expect_refused(q(""), gw_err_parameter_invalid, "r");
    expect_refused(q("n=3"), gw_err_parameter_invalid, "r");
    assert_non_null(strstr(q("").err.detail, "'r' is required"));
}

static void test_unknown_and_repeated(void **state)
{
    expect_refused(q("r=1&x=2"), gw_err_parameter_unknown, "x");
    assert_non_null(strstr(q("r=1&bogus=2").err.detail, "'bogus'"));
    expect_refused(q("r=1&R=2"), gw_err_parameter_unknown, "R"); /* names are exact */
    expect_refused(q("r=1&r=2"), gw_err_parameter_invalid, "r");
    expect_refused(q("r=1&id=2"), gw_err_parameter_unknown, "id"); /* a path parameter is not a query one */
    assert_int_equal(q("r=1&&").rc, 0);                            /* empty pairs are nothing */
    expect_refused(q("r=1&%zz=1"), gw_err_parameter_invalid, NULL);
}

static void test_integers(void **state)
{
    assert_int_equal(q("r=1&n=1").call.in[I_N].i, 1);
    assert_int_equal(q("r=1&n=100").call.in[I_N].i, 100);
    assert_int_equal(q("r=-5").call.in[I_R].i, -5);
    const char *bad[] = {"r=1&n=0",   "r=1&n=101",  "r=1&n=",
                         "r=1&n=abc", "r=1&n=1.5",  "r=1&n=+3",
                         "r=1&n=03",  "r=1&n=-0x1", "r=1&n=99999999999999999999",
                         "r=-6",      "r=6",        "r=1&n=%2B3"};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i)
        expect_refused(q(bad[i]), gw_err_parameter_invalid, strstr(bad[i], "&n") != NULL ? "n" : "r");
    assert_non_null(strstr(q("r=1&n=0").err.detail, "between 1 and 100"));
}

static void test_strings(void **state)
{
    assert_string_equal(q("r=1&s=ab").call.in[I_S].str.base, "ab");
    assert_string_equal(q("r=1&s=a+b%21").call.in[I_S].str.base, "a b!"); /* decoded */
    assert_string_equal(q("r=1&s=%C3%A9t%C3%A9").call.in[I_S].str.base, "\xc3\xa9t\xc3\xa9");
    expect_refused(q("r=1&s=a"), gw_err_parameter_invalid, "s");
    expect_refused(q("r=1&s=abcdef"), gw_err_parameter_invalid, "s");
    expect_refused(q("r=1&s=a%0Ab"), gw_err_parameter_invalid, "s");  /* a control character */
    expect_refused(q("r=1&s=a%00b"), gw_err_parameter_invalid, "s");  /* an encoded NUL */
    expect_refused(q("r=1&s=%C3%28"), gw_err_parameter_invalid, "s"); /* not UTF-8 */
    expect_refused(q("r=1&s=ab%4"), gw_err_parameter_invalid, "s");   /* a truncated escape */
}

static void test_bool_enum_date_money_cursor(void **state)
{
    assert_int_equal(q("r=1&b=true").call.in[I_B].i, 1);
    assert_int_equal(q("r=1&b=false").call.in[I_B].i, 0);
    expect_refused(q("r=1&b=1"), gw_err_parameter_invalid, "b");
    expect_refused(q("r=1&b=TRUE"), gw_err_parameter_invalid, "b");
    assert_int_equal(q("r=1&e=dark_blue").call.in[I_E].i, 1);
    expect_refused(q("r=1&e=dark"), gw_err_parameter_invalid, "e");
    expect_refused(q("r=1&e=Red"), gw_err_parameter_invalid, "e");
    assert_int_equal(q("r=1&d=2024-02-29").call.in[I_D].i, 20240229);
    const char *bad_dates[] = {"2023-02-29", "2024-13-01",           "2024-00-10", "2024-04-31", "2024-1-01",
                               "20240101",   "2024-01-01T00:00:00Z", "0000-01-01", "yesterday"};
    char buf[64];
    for (size_t i = 0; i != sizeof(bad_dates) / sizeof(bad_dates[0]); ++i) {
        snprintf(buf, sizeof(buf), "r=1&d=%s", bad_dates[i]);
        expect_refused(q(buf), gw_err_parameter_invalid, "d");
    }
    const char *good_money[] = {"0", "12.30", "-5", "7891", "1.2345", "999999999999999"};
    for (size_t i = 0; i != sizeof(good_money) / sizeof(good_money[0]); ++i) {
        snprintf(buf, sizeof(buf), "r=1&m=%s", good_money[i]);
        assert_int_equal(q(buf).rc, 0);
        assert_string_equal(q(buf).call.in[I_M].str.base, good_money[i]);
    }
    const char *bad_money[] = {"1.23456", "1e3", "01", "1.", ".5", "--1", "1,00", "NaN", "1000000000000000", ""};
    for (size_t i = 0; i != sizeof(bad_money) / sizeof(bad_money[0]); ++i) {
        snprintf(buf, sizeof(buf), "r=1&m=%s", bad_money[i]);
        expect_refused(q(buf), gw_err_parameter_invalid, "m");
    }
    assert_string_equal(q("r=1&c=ab-_09Z").call.in[I_C].str.base, "ab-_09Z");
    expect_refused(q("r=1&c=abcdefghi"), gw_err_parameter_invalid, "c"); /* over max */
    expect_refused(q("r=1&c=ab%2Bc"), gw_err_parameter_invalid, "c");    /* '+' is not base64url */
    expect_refused(q("r=1&c="), gw_err_parameter_invalid, "c");
}

static void test_path_parameters(void **state)
{
    assert_int_equal(run(&query_route, "abc", "r=1", NULL, NULL).rc, 0);
    /* a path value that does not validate is no such object: 404, no field named */
    result_t r = run(&query_route, "123456789", "r=1", NULL, NULL);
    assert_int_equal(r.rc, -1);
    assert_ptr_equal(r.err.code, gw_err_not_found);
    assert_int_equal(r.err.status, 404);
    r = run(&query_route, NULL, "r=1", NULL, NULL);
    assert_ptr_equal(r.err.code, gw_err_not_found);
}

static result_t b(const char *body)
{
    return run(&body_route, NULL, NULL, body, "application/json");
}

static void test_body(void **state)
{
    result_t r = b("{\"name\":\"Ann\",\"age\":42,\"ok\":true,\"amount\":\"12.30\"}");
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.call.in[J_NAME].str.base, "Ann");
    assert_int_equal(r.call.in[J_AGE].i, 42);
    assert_int_equal(r.call.in[J_OK].i, 1);
    assert_string_equal(r.call.in[J_AMOUNT].str.base, "12.30");
    assert_int_equal(b("{\"name\":\"Ann\",\"age\":null}").rc, 0); /* null is "not given" */
    expect_refused(b("{\"name\":\"Ann\",\"role\":\"admin\"}"), gw_err_parameter_unknown, "role");
    expect_refused(b("{\"age\":3}"), gw_err_parameter_invalid, "name");
    expect_refused(b(""), gw_err_parameter_invalid, "name");
    expect_refused(b("{\"name\":\"Ann\",\"age\":\"42\"}"), gw_err_parameter_invalid, "age"); /* a string */
    expect_refused(b("{\"name\":\"Ann\",\"age\":4.2}"), gw_err_parameter_invalid, "age");
    expect_refused(b("{\"name\":\"Ann\",\"age\":151}"), gw_err_parameter_invalid, "age");
    expect_refused(b("{\"name\":\"Ann\",\"ok\":1}"), gw_err_parameter_invalid, "ok");
    expect_refused(b("{\"name\":\"Ann\",\"amount\":12.3}"), gw_err_parameter_invalid, "amount"); /* never a float */
    expect_refused(b("{\"name\":42}"), gw_err_parameter_invalid, "name");
    expect_refused(b("{\"name\":\"much too long\"}"), gw_err_parameter_invalid, "name");
    expect_refused(b("{\"name\":\"Ann\""), gw_err_json_invalid, NULL);
    expect_refused(b("[1]"), gw_err_json_invalid, NULL);
    expect_refused(b("{\"name\":\"a\",\"name\":\"b\"}"), gw_err_json_invalid, NULL); /* a repeated key */
    expect_refused(run(&body_route, NULL, NULL, "{\"name\":\"Ann\"}", "text/plain"), gw_err_json_invalid, NULL);
    assert_int_equal(run(&body_route, NULL, NULL, "{\"name\":\"Ann\"}", "application/json; charset=utf-8").rc, 0);
    expect_refused(run(&body_route, NULL, "name=Ann", "{\"name\":\"Ann\"}", "application/json"),
                   gw_err_parameter_unknown, "name"); /* a body field is not a query parameter */
    /* a route without body inputs takes no body */
    expect_refused(run(&query_route, "x", "r=1", "{}", "application/json"), gw_err_json_invalid, NULL);
}

static void test_array(void **state)
{
    result_t r = run(&array_route, NULL, NULL, "{\"steps\": [ {\"a\": 1}, 2 ,\"x\"]}", "application/json");
    assert_int_equal(r.rc, 0);
    assert_true(r.call.in[0].present);
    assert_string_equal(r.call.in[0].str.base, "[{\"a\":1},2,\"x\"]"); /* compact JSON for the handler */
    r = run(&array_route, NULL, NULL, "{\"steps\": []}", "application/json");
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.call.in[0].str.base, "[]");
    expect_refused(run(&array_route, NULL, NULL, "{\"steps\": [1,2,3,4]}", "application/json"),
                   gw_err_parameter_invalid, "steps"); /* more than max elements */
    expect_refused(run(&array_route, NULL, NULL, "{\"steps\": \"[1]\"}", "application/json"), gw_err_parameter_invalid,
                   "steps"); /* a string is no array */
    expect_refused(run(&array_route, NULL, NULL, "{\"steps\": {\"0\": 1}}", "application/json"),
                   gw_err_parameter_invalid, "steps");
    expect_refused(run(&array_route, NULL, NULL, "{}", "application/json"), gw_err_parameter_invalid, "steps");
    expect_refused(run(&array_route, NULL, NULL, "{\"steps\": [], \"more\": 1}", "application/json"),
                   gw_err_parameter_unknown, "more");
}

static void test_roles(void **state)
{
    assert_true(gw_guard_allows(GW_ACCESS_PUBLIC, GW_ROLE_NONE));
    assert_true(gw_guard_allows(GW_ACCESS_PUBLIC, GW_ROLE_CLIENT));
    assert_false(gw_guard_allows(GW_ACCESS_CLIENT, GW_ROLE_NONE));
    assert_true(gw_guard_allows(GW_ACCESS_CLIENT, GW_ROLE_CLIENT));
    assert_false(gw_guard_allows(GW_ACCESS_CLIENT, GW_ROLE_ADMIN));
    assert_false(gw_guard_allows(GW_ACCESS_ADMIN, GW_ROLE_CLIENT));
    assert_true(gw_guard_allows(GW_ACCESS_ADMIN, GW_ROLE_ADMIN));
    assert_false(gw_guard_allows(GW_ACCESS_ADMIN, GW_ROLE_NONE));
    assert_true(gw_guard_allows(GW_ACCESS_ADMIN_CLIENT, GW_ROLE_CLIENT));
    assert_true(gw_guard_allows(GW_ACCESS_ADMIN_CLIENT, GW_ROLE_ADMIN));
    assert_false(gw_guard_allows(GW_ACCESS_ADMIN_CLIENT, GW_ROLE_NONE));
}

static void test_revoked_key(void **state)
{
    char key[96];
    size_t n = gw_guard_revoked_key("abc_-123", key);
    assert_string_equal(key, "settled:revoked:jti:abc_-123");
    assert_int_equal(n, strlen(key));
}

static int setup(void **state)
{
    h2o_mem_init_pool(&pool);
    return 0;
}

static int teardown(void **state)
{
    h2o_mem_clear_pool(&pool);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_required),
        cmocka_unit_test(test_unknown_and_repeated),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_bool_enum_date_money_cursor),
        cmocka_unit_test(test_path_parameters),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_array),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_revoked_key),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
