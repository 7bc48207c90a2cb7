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

static const char *classify(const char *path)
{
    const gw_route_t *route = gw_routes_classify(path != NULL ? iov(path) : h2o_iovec_init(NULL, 0));
    return route != NULL ? route->name : "other";
}

static void test_classify(void **state)
{
    assert_string_equal(classify("/webhooks/xero"), "webhooks_xero");
    assert_string_equal(classify("/webhooks/gocardless/other"), "webhooks_gocardless");
    assert_string_equal(classify("/metrics"), "metrics");
    assert_string_equal(classify("/v1/xero/callback"), "xero_callback");
    assert_string_equal(classify("/"), "other");
    assert_string_equal(classify(NULL), "other");
}

/* Ids and names come from the table: registering numbers the rows in order and names them to the metrics; every
 * webhook row carries its provider's connector under the provider's name. */
static void test_table_ids_names_and_providers(void **state)
{
    h2o_globalconf_t conf;
    h2o_config_init(&conf);
    h2o_hostconf_t *host = h2o_config_register_host(&conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    gw_routes_register(host);
    size_t webhooks = 0;
    for (size_t i = 0; i != gw_nroutes; ++i) {
        assert_int_equal(gw_routes[i].id, i);
        assert_non_null(gw_routes[i].name);
        for (size_t j = 0; j != i; ++j)
            assert_string_not_equal(gw_routes[i].name, gw_routes[j].name);
        if (gw_routes[i].provider != NULL) {
            const cn_connector_t *cn = gw_routes[i].data;
            assert_string_equal(cn->name, gw_routes[i].provider);
            assert_ptr_equal(gw_routes[i].handler, gw_intake_handle);
            ++webhooks;
        }
    }
    assert_int_equal(webhooks, 3);
    /* a request counted for a route renders under the route's name */
    gw_metrics_request(gw_routes_classify(iov("/readyz"))->id, 200, 1);
    size_t len;
    char *text = gw_metrics_render(&len);
    assert_non_null(strstr(text, "settled_http_requests_total{route=\"readyz\",status=\"200\"} 1\n"));
    free(text);
    h2o_config_dispose(&conf);
}

/* Every module's statements have names of their own: the pools prepare them all on one connection. */
static void test_module_statement_names_unique(void **state)
{
    for (size_t a = 0; a != gw_nmodules; ++a)
        for (size_t i = 0; i != gw_modules[a]->nstatements; ++i)
            for (size_t b = 0; b <= a; ++b)
                for (size_t j = 0; j != (b == a ? i : gw_modules[b]->nstatements); ++j)
                    assert_string_not_equal(gw_modules[a]->statements[i].name, gw_modules[b]->statements[j].name);
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
        cmocka_unit_test(test_table_ids_names_and_providers),
        cmocka_unit_test(test_module_statement_names_unique),
        cmocka_unit_test(test_valid_request_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
