/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/domain/fetch.c against the loopback test server (tests/unit/infra/http_test_server.py): the
 * credential and the provider's own headers each call carries, how answers are sorted (2xx, 429 with Retry-After,
 * 5xx, other 4xx, no answer), that a 429 blocks the account's quota so the next call does not reach the provider,
 * that a 401 is not retried where the credential cannot be refreshed, and that calls settled cannot make never
 * leave. Xero's token refresh and 401-once run end to end in tests/integration/test_xero_oauth.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "fetch.h"
#include "http_client.h"
#include "../http_test_server.h"

static gw_config_t cfg;
static gw_fetch_ctx_t ctx;
static char base[64];

static int setup(void **state)
{
    if (test_server_start() != 0) {
        test_server_stop();
        return -1;
    }
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", test_server_port);
    cfg = (gw_config_t){.stripe_api_base = base,
                        .gocardless_api_base = base,
                        .xero_api_base = base,
                        .stripe_secret_key = "sk_test_fetch",
                        .gocardless_access_token = "gc_token_fetch",
                        .xero_limit_concurrent = 5,
                        .xero_limit_minute = 60,
                        .xero_limit_day = 5000,
                        .xero_limit_app_minute = 10000,
                        .stripe_limit_concurrent = 10,
                        .stripe_limit_second = 25,
                        .gocardless_limit_concurrent = 10,
                        .gocardless_limit_minute = 1000,
                        .quota_fallback_concurrent = 4,
                        .quota_fallback_minute = 20,
                        .http_timeout_ms = 10000};
    ctx = (gw_fetch_ctx_t){.cfg = &cfg};
    gw_err_t err = GW_ERR_INIT;
    if (gw_fetch_quotas_create(&ctx, &err) != 0)
        return -1;
    gw_http_options_t opts = {
        .timeout_ms = 10000, .connect_timeout_ms = 2000, .max_host_connections = 4, .max_body = 1 << 20};
    return gw_http_init(&opts);
}

static int teardown(void **state)
{
    gw_http_shutdown();
    gw_fetch_quotas_destroy(&ctx);
    test_server_stop();
    return 0;
}

/* How many requests reached the test server so far. */
static int requests_so_far(void)
{
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/count")};
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), 0);
    int n = atoi(res.body);
    gw_http_response_free(&res);
    return n;
}

/* The value of header name in an /echo answer, or NULL (a pointer into doc). */
static const char *echoed_header(json_t *doc, const char *name)
{
    size_t i;
    json_t *pair;
    json_array_foreach(json_object_get(doc, "headers"), i, pair)
    {
        if (strcasecmp(json_string_value(json_array_get(pair, 0)), name) == 0)
            return json_string_value(json_array_get(pair, 1));
    }
    return NULL;
}

static json_t *fetch_echo(gw_fetch_call_t *call, gw_fetch_result_t *out)
{
    assert_int_equal(gw_fetch(&ctx, call, out), GW_FETCH_OK);
    assert_int_equal(out->http_status, 200);
    json_error_t jerr;
    json_t *doc = json_loadb(out->res.body, out->res.body_len, 0, &jerr);
    assert_non_null(doc);
    gw_http_response_free(&out->res);
    return doc;
}

static void test_stripe_headers(void **state)
{
    gw_fetch_result_t out;
    gw_fetch_call_t call = {.provider = "stripe", .path = "/echo?object=/v1/charges/ch_1"};
    json_t *doc = fetch_echo(&call, &out);
    assert_string_equal(json_string_value(json_object_get(doc, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(doc, "path")), "/echo?object=/v1/charges/ch_1");
    assert_string_equal(echoed_header(doc, "Authorization"), "Bearer sk_test_fetch");
    assert_null(echoed_header(doc, "Stripe-Account")); /* the platform's own account */
    assert_string_equal(echoed_header(doc, "Accept"), "application/json");
    assert_null(echoed_header(doc, "GoCardless-Version"));
    assert_null(echoed_header(doc, "xero-tenant-id"));
    json_decref(doc);

    /* a connected account, a write with its body and idempotency key */
    static const char body[] = "{\"amount\":1000}";
    call = (gw_fetch_call_t){.provider = "stripe",
                             .method = "POST",
                             .path = "/echo?object=/v1/payment_intents",
                             .account = "acct_1Connected",
                             .body = body,
                             .body_len = sizeof(body) - 1,
                             .idempotency_key = "settled-invoice-7-attempt-1"};
    doc = fetch_echo(&call, &out);
    assert_string_equal(json_string_value(json_object_get(doc, "method")), "POST");
    assert_string_equal(echoed_header(doc, "Stripe-Account"), "acct_1Connected");
    assert_string_equal(echoed_header(doc, "Idempotency-Key"), "settled-invoice-7-attempt-1");
    assert_string_equal(echoed_header(doc, "Content-Type"), "application/json");
    /* "{"amount":1000}" in hex */
    assert_string_equal(json_string_value(json_object_get(doc, "body_hex")), "7b22616d6f756e74223a313030307d");
    json_decref(doc);
}

static void test_gocardless_headers(void **state)
{
    gw_fetch_result_t out;
    gw_fetch_call_t call = {
        .provider = "gocardless", .path = "/echo?object=/payments/PM123", .accept = "application/pdf"};
    json_t *doc = fetch_echo(&call, &out);
    assert_string_equal(echoed_header(doc, "Accept"), "application/pdf");
    assert_string_equal(echoed_header(doc, "Authorization"), "Bearer gc_token_fetch");
    assert_string_equal(echoed_header(doc, "GoCardless-Version"), "2015-07-06");
    assert_null(echoed_header(doc, "Stripe-Account"));
    json_decref(doc);
}

static void test_statuses(void **state)
{
    gw_fetch_result_t out;
    gw_fetch_call_t call = {.provider = "stripe", .path = "/status/503", .account = "acct_statuses"};
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_FAILED);
    assert_int_equal(out.http_status, 503);
    assert_non_null(strstr(out.error, "Stripe API answered 503"));
    assert_null(out.res.body);

    assert_true(out.outage); /* the provider's own failure: its circuit counts it */

    /* transient: 408 and 409 as well as 5xx; permanent: any other 4xx */
    static const struct {
        int status;
        gw_fetch_status_t want;
    } cases[] = {{408, GW_FETCH_FAILED},   {409, GW_FETCH_FAILED},   {500, GW_FETCH_FAILED},
                 {502, GW_FETCH_FAILED},   {400, GW_FETCH_REJECTED}, {403, GW_FETCH_REJECTED},
                 {404, GW_FETCH_REJECTED}, {422, GW_FETCH_REJECTED}};
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        char path[32];
        snprintf(path, sizeof(path), "/status/%d", cases[i].status);
        call.path = path;
        gw_fetch_status_t got = gw_fetch(&ctx, &call, &out);
        if (got != cases[i].want || out.outage != (cases[i].want == GW_FETCH_FAILED))
            fail_msg("HTTP %d: status %d outage %d, expected %d outage %d", cases[i].status, (int)got, out.outage,
                     (int)cases[i].want, cases[i].want == GW_FETCH_FAILED);
        assert_int_equal(out.http_status, cases[i].status);
    }
    call.path = "/status/204";
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_OK);
    gw_http_response_free(&out.res);

    /* no answer at all: the connection is dropped */
    call.path = "/drop";
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_FAILED);
    assert_int_equal(out.http_status, 0);
    assert_non_null(strstr(out.error, "Stripe API call failed"));
    assert_true(out.outage);
}

/* A static key that Stripe refuses is not retried: only Xero's credential can be refreshed. */
static void test_401_not_retried_without_refresh(void **state)
{
    int before = requests_so_far();
    gw_fetch_result_t out;
    gw_fetch_call_t call = {.provider = "gocardless", .path = "/status/401", .account = "CR401"};
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_REJECTED);
    assert_int_equal(out.http_status, 401);
    assert_int_equal(requests_so_far() - before, 2); /* the call and this count */
}

/* A 429 asks to wait (Retry-After: 7), and the account's quota holds every later call back without a request. */
static void test_429_reschedules_and_blocks_the_account(void **state)
{
    gw_fetch_result_t out;
    gw_fetch_call_t call = {.provider = "stripe", .path = "/status/429", .account = "acct_limited"};
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_RESCHEDULE);
    assert_int_equal(out.wait_ms, 7000);
    assert_int_equal(out.http_status, 429);

    int before = requests_so_far();
    call.path = "/echo";
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_RESCHEDULE);
    assert_true(out.wait_ms > 5000 && out.wait_ms <= 7000);
    assert_non_null(strstr(out.error, "Stripe quota (blocked)"));
    assert_int_equal(requests_so_far() - before, 1); /* only the count: the call never left */

    /* another account, and the same account at another provider, are not held back */
    call.account = "acct_other";
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_OK);
    gw_http_response_free(&out.res);
    call = (gw_fetch_call_t){.provider = "gocardless", .path = "/echo", .account = "acct_limited"};
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_OK);
    gw_http_response_free(&out.res);
}

/* Calls that cannot be made never reach a provider, and say why without the secret. */
static void test_calls_that_cannot_be_made(void **state)
{
    int before = requests_so_far();
    gw_fetch_result_t out;
    gw_fetch_call_t call = {.provider = "paypal", .path = "/echo"};
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_REJECTED);
    call = (gw_fetch_call_t){.provider = "xero", .path = "/echo"}; /* Xero needs its tenant */
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_REJECTED);
    call = (gw_fetch_call_t){.provider = "stripe"}; /* no path */
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_REJECTED);

    cfg.stripe_secret_key = NULL;
    call = (gw_fetch_call_t){.provider = "stripe", .path = "/echo"};
    assert_int_equal(gw_fetch(&ctx, &call, &out), GW_FETCH_FAILED);
    assert_non_null(strstr(out.error, "SETTLED_STRIPE_SECRET_KEY is not set"));
    cfg.stripe_secret_key = "sk_test_fetch";
    assert_int_equal(requests_so_far() - before, 1); /* only the count */
}

static void test_api_base(void **state)
{
    gw_config_t none = {0};
    assert_string_equal(gw_fetch_api_base(&none, "stripe"), "https://api.stripe.com");
    assert_string_equal(gw_fetch_api_base(&none, "gocardless"), "https://api.gocardless.com");
    assert_string_equal(gw_fetch_api_base(&none, "xero"), "https://api.xero.com");
    assert_string_equal(gw_fetch_api_base(&cfg, "stripe"), base);
    assert_null(gw_fetch_api_base(&cfg, "paypal"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stripe_headers),
        cmocka_unit_test(test_gocardless_headers),
        cmocka_unit_test(test_statuses),
        cmocka_unit_test(test_401_not_retried_without_refresh),
        cmocka_unit_test(test_429_reschedules_and_blocks_the_account),
        cmocka_unit_test(test_calls_that_cannot_be_made),
        cmocka_unit_test(test_api_base),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
