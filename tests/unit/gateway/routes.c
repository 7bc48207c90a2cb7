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

static void test_match_pattern(void **state)
{
    h2o_iovec_t params[GW_PATH_PARAMS_MAX];
    size_t n = 99;
    assert_true(match_pattern("/v1/invoices/{id}", iov("/v1/invoices/inv_1"), params, &n));
    assert_int_equal(n, 1);
    assert_memory_equal(params[0].base, "inv_1", 5);
    assert_false(match_pattern("/v1/invoices/{id}", iov("/v1/invoices/"), params, &n));
    assert_false(match_pattern("/v1/invoices/{id}", iov("/v1/invoices"), params, &n));
    assert_false(match_pattern("/v1/invoices/{id}", iov("/v1/invoices/a/b"), params, &n));
    assert_false(match_pattern("/v1/invoices/{id}", iov("/v1/invoicesX/a"), params, &n));
    assert_true(match_pattern("/v1/a/{x}/b/{y}", iov("/v1/a/1/b/22"), params, &n));
    assert_int_equal(n, 2);
    assert_int_equal(params[1].len, 2);
    assert_false(match_pattern("/v1/a/{x}/b/{y}", iov("/v1/a/1/c/22"), params, &n));
    /* the table: a pattern row matches only its shape; an exact row stays exact */
    assert_string_equal(gw_routes_classify(iov("/v1/invoices/inv_1"))->name, "invoices_get");
    assert_string_equal(gw_routes_classify(iov("/v1/invoices"))->name, "invoices_list");
    assert_null(gw_routes_classify(iov("/v1/invoices/inv_1/x")));
}

/* Every api row declares a role, and inputs only of its own path's {params} in the path. */
static void test_api_rows(void **state)
{
    size_t napi = 0;
    for (size_t i = 0; i != gw_nroutes; ++i) {
        const gw_route_t *r = &gw_routes[i];
        assert_true(r->handler == NULL || r->api == NULL);
        if (r->api == NULL) {
            assert_int_equal(r->access, GW_ACCESS_PUBLIC); /* the routes with their own parsing keep theirs */
            assert_int_equal(r->ninputs, 0);
            continue;
        }
        ++napi;
        assert_non_null(r->summary);
        assert_true(r->ninputs <= GW_INPUTS_MAX);
        assert_int_equal(strncmp(r->path, "/v1/", 4), 0);
        for (size_t k = 0; k != r->ninputs; ++k)
            if (r->inputs[k].where == GW_IN_PATH) {
                char seg[80];
                snprintf(seg, sizeof(seg), "{%s}", r->inputs[k].name);
                assert_non_null(strstr(r->path, seg));
            }
    }
    assert_true(napi >= 3);
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
        cmocka_unit_test(test_match_pattern),
        cmocka_unit_test(test_api_rows),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_table_ids_names_and_providers),
        cmocka_unit_test(test_module_statement_names_unique),
        cmocka_unit_test(test_valid_request_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
