/* SPDX-License-Identifier: MIT */
/* Tests of gateway/routes.c: path matching with the /{source} segment, classification, request ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "../../../gateway/routes.c"

static h2o_iovec_t iov(const char *s)
{
    return h2o_iovec_init(s, strlen(s));
}

static void test_match_path(void **state)
{
    const gw_route_t *stripe = &gw_routes[0], *healthz = &gw_routes[3];
    h2o_iovec_t source = iov("unset");
    assert_true(match_path(stripe, iov("/webhooks/stripe"), &source));
    assert_int_equal(source.len, 0);
    assert_true(match_path(stripe, iov("/webhooks/stripe/acme"), &source));
    assert_int_equal(source.len, 4);
    assert_memory_equal(source.base, "acme", 4);
    assert_false(match_path(stripe, iov("/webhooks/stripe/"), &source));
    assert_false(match_path(stripe, iov("/webhooks/stripe/a/b"), &source));
    assert_false(match_path(stripe, iov("/webhooks/stripeX"), &source));
    assert_false(match_path(stripe, iov("/webhooks/strip"), &source));
    assert_true(match_path(healthz, iov("/healthz"), &source));
    assert_false(match_path(healthz, iov("/healthz/x"), &source)); /* no source segment on ops routes */
}

static void test_classify(void **state)
{
    assert_int_equal(gw_routes_classify(iov("/webhooks/xero")), GW_ROUTE_XERO);
    assert_int_equal(gw_routes_classify(iov("/webhooks/gocardless/other")), GW_ROUTE_GOCARDLESS);
    assert_int_equal(gw_routes_classify(iov("/metrics")), GW_ROUTE_METRICS);
    assert_int_equal(gw_routes_classify(iov("/")), GW_ROUTE_OTHER);
    assert_int_equal(gw_routes_classify(h2o_iovec_init(NULL, 0)), GW_ROUTE_OTHER);
}

static void test_table_order_matches_route_ids(void **state)
{
    /* the access log indexes gw_routes by route id for the webhook routes */
    for (size_t i = 0; i != gw_nroutes; ++i)
        assert_int_equal(gw_routes[i].id, (int)i);
    assert_ptr_equal(gw_routes[GW_ROUTE_STRIPE].data, &cn_stripe_connector);
    assert_ptr_equal(gw_routes[GW_ROUTE_XERO].data, &cn_xero_connector);
    assert_ptr_equal(gw_routes[GW_ROUTE_GOCARDLESS].data, &cn_gocardless_connector);
}

static void test_valid_request_id(void **state)
{
    assert_true(valid_request_id(iov("abc-123_x.y")));
    assert_false(valid_request_id(iov("")));
    assert_false(valid_request_id(iov("has space")));
    assert_false(valid_request_id(iov("quote\"")));
    assert_false(valid_request_id(iov("new\nline")));
    char longid[130];
    memset(longid, 'a', 129);
    longid[129] = '\0';
    assert_false(valid_request_id(iov(longid)));
    longid[128] = '\0';
    assert_true(valid_request_id(iov(longid)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_path),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_table_order_matches_route_ids),
        cmocka_unit_test(test_valid_request_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
