/* SPDX-License-Identifier: MIT */
/* Tests of gateway/metrics.c: what is counted is what /metrics renders, in Prometheus' text format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "metrics.h"

static void assert_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL)
        fail_msg("metrics output lacks \"%s\"", needle);
}

static void test_render(void **state)
{
    gw_metrics_request(GW_ROUTE_STRIPE, 200, 300);   /* 0.3 ms: in the 0.0005 bucket */
    gw_metrics_request(GW_ROUTE_STRIPE, 200, 20000); /* 20 ms: in the 0.025 bucket */
    gw_metrics_request(GW_ROUTE_XERO, 401, 100);
    gw_metrics_request(GW_ROUTE_OTHER, 404, 10);
    gw_metrics_events(GW_ROUTE_GOCARDLESS, 3, 2);
    gw_metrics_batch(1);
    gw_metrics_batch(30);
    gw_metrics_db_state(GW_DB_STATE_MAX, GW_DB_IDLE);
    gw_metrics_db_state(GW_DB_STATE_MAX, GW_DB_IDLE);
    gw_metrics_db_state(GW_DB_IDLE, GW_DB_BUSY);
    size_t len;
    char *text = gw_metrics_render(&len);
    assert_int_equal(strlen(text) >= len ? 1 : 0, 1);
    assert_contains(text, "settled_http_requests_total{route=\"webhooks_stripe\",status=\"200\"} 2\n");
    assert_contains(text, "settled_http_requests_total{route=\"webhooks_xero\",status=\"401\"} 1\n");
    assert_contains(text, "settled_http_requests_total{route=\"other\",status=\"404\"} 1\n");
    assert_contains(text, "settled_intake_seconds_bucket{provider=\"stripe\",le=\"0.0005\"} 1\n");
    assert_contains(text, "settled_intake_seconds_bucket{provider=\"stripe\",le=\"0.01\"} 1\n");
    assert_contains(text, "settled_intake_seconds_bucket{provider=\"stripe\",le=\"0.025\"} 2\n");
    assert_contains(text, "settled_intake_seconds_bucket{provider=\"stripe\",le=\"+Inf\"} 2\n");
    assert_contains(text, "settled_intake_seconds_sum{provider=\"stripe\"} 0.020300\n");
    assert_contains(text, "settled_events_received_total{provider=\"gocardless\"} 3\n");
    assert_contains(text, "settled_events_stored_total{provider=\"gocardless\"} 2\n");
    assert_contains(text, "settled_db_batch_size_bucket{le=\"1\"} 1\n");
    assert_contains(text, "settled_db_batch_size_bucket{le=\"16\"} 1\n");
    assert_contains(text, "settled_db_batch_size_bucket{le=\"32\"} 2\n");
    assert_contains(text, "settled_db_batch_size_sum 31\n");
    assert_contains(text, "settled_db_connections{state=\"idle\"} 1\n");
    assert_contains(text, "settled_db_connections{state=\"busy\"} 1\n");
    /* routes with no traffic are not listed */
    assert_null(strstr(text, "route=\"metrics\""));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_render)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
