/* SPDX-License-Identifier: MIT */
/* Tests of gateway/infra/metrics.c: what is counted is what /metrics renders, in Prometheus' text format. */
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

/* The routes as a route table would name them: three webhook routes, then two that are not. */
enum { STRIPE, XERO, GOCARDLESS, HEALTHZ, METRICS, OTHER };
static const char *const names[] = {"webhooks_stripe", "webhooks_xero", "webhooks_gocardless", "healthz", "metrics"};
static const char *const providers[] = {"stripe", "xero", "gocardless", NULL, NULL};

static void test_render(void **state)
{
    gw_metrics_routes(names, providers, OTHER);
    gw_metrics_request(STRIPE, 200, 300);   /* 0.3 ms: in the 0.0005 bucket */
    gw_metrics_request(STRIPE, 200, 20000); /* 20 ms: in the 0.025 bucket */
    gw_metrics_request(XERO, 401, 100);
    gw_metrics_request(OTHER, 404, 10);
    gw_metrics_request(HEALTHZ, 200, 10);   /* counted as a request, but no intake latency */
    gw_metrics_request(OTHER + 7, 404, 10); /* an index past the routes counts as "other" */
    gw_metrics_events(GOCARDLESS, 3, 2);
    gw_metrics_events(HEALTHZ, 5, 5); /* not a webhook route: ignored */
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
    assert_contains(text, "settled_http_requests_total{route=\"other\",status=\"404\"} 2\n");
    assert_contains(text, "settled_http_requests_total{route=\"healthz\",status=\"200\"} 1\n");
    assert_null(strstr(text, "provider=\"healthz\""));
    assert_null(strstr(text, "provider=\"(null)\""));
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
