/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/domain/replay.c that need no database: gw_replay_sign writes each provider's signature header
 * as its receivers check it (Stripe t=,v1= over "t.body", Xero base64, GoCardless hex; known HMAC-SHA256 values
 * computed with Python's hmac), and refuses an unknown provider; gw_events_filter_check accepts the documented
 * values and names the option of each bad one. The database side is tests/integration/test_events_cli.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "replay.h"

/* Expected values from Python: hmac.new(b"sekrit", b'{"a":1}', hashlib.sha256) (hex and base64), and over
 * b'1700000000.{"a":1}' for Stripe. */
#define BODY "{\"a\":1}"

static int sign(const char *provider, int64_t now, char *out, size_t len)
{
    return gw_replay_sign(provider, "sekrit", (const unsigned char *)BODY, strlen(BODY), now, out, len);
}

static void test_each_provider_scheme(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(sign("gocardless", 0, out, sizeof(out)), 0);
    assert_string_equal(out, "Webhook-Signature: 3378ac5a1d508b58fa19ba514a5eeecbd51ef3fc4dc8e075cf3d7e1150e8161f");
    assert_int_equal(sign("xero", 0, out, sizeof(out)), 0);
    assert_string_equal(out, "x-xero-signature: M3isWh1Qi1j6GbpRSl7uy9Ue8/xNyOB1zz1+EVDoFh8=");
    assert_int_equal(sign("stripe", 1700000000, out, sizeof(out)), 0);
    assert_string_equal(out, "Stripe-Signature: t=1700000000,"
                             "v1=ff8c920725a395b303d30eb509b37bc42837a5bdbe05bd224a07d783f101ee46");
}

static void test_unknown_provider_is_refused(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(sign("paypal", 0, out, sizeof(out)), -1);
}

static void expect_refused(const gw_events_filter_t *f, const char *option)
{
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_events_filter_check(f, &err), -1);
    assert_ptr_equal(err.code, gw_err_invalid_argument);
    assert_int_equal(err.status, 400);
    assert_non_null(strstr(err.detail, option));
}

static void test_filter_check(void **state)
{
    (void)state;
    gw_err_t err = GW_ERR_INIT;
    gw_events_filter_t ok = {.provider = "xero", .statuses = "dead,failed,pending", .type = "INVOICE", .limit = 10000};
    assert_int_equal(gw_events_filter_check(&ok, &err), 0);
    gw_events_filter_t none = {0};
    assert_int_equal(gw_events_filter_check(&none, &err), 0);
    expect_refused(&(gw_events_filter_t){.provider = "paypal"}, "--provider");
    expect_refused(&(gw_events_filter_t){.statuses = "dead,nope"}, "--status");
    expect_refused(&(gw_events_filter_t){.statuses = "dead,"}, "--status");
    expect_refused(&(gw_events_filter_t){.statuses = "Dead"}, "--status");
    expect_refused(&(gw_events_filter_t){.type = ""}, "--type");
    expect_refused(&(gw_events_filter_t){.limit = 10001}, "--limit");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_provider_scheme),
        cmocka_unit_test(test_filter_check),
        cmocka_unit_test(test_unknown_provider_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
