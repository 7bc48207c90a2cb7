/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/domain/queue.c against a real PostgreSQL (SETTLED_TEST_PG_URL), in a database of its own
 * migrated with the embedded schema: the claim serves only its lanes' providers and waits out their delays,
 * takes a lease and counts the attempt; finishing is fenced by the lease; failures back off and go dead after
 * the last attempt; rescheduling does not count an attempt; covering finishes exactly the waiting rows of the
 * fetched objects (whatever characters their ids hold); rows whose workers kept dying are parked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "db.h"
#include "migrate.h"
#include "circuit.h"
#include "queue.h"

static char dbname[64], dburl[512];
static gw_config_t cfg;
static gw_dbs_t *s;

static void admin(const char *sql)
{
    char err[256];
    gw_dbs_t *a = gw_dbs_connect(getenv("SETTLED_TEST_PG_URL"), err, sizeof(err));
    if (a == NULL)
        fail_msg("%s", err);
    if (gw_dbs_exec(a, sql, 0, NULL) < 0)
        fail_msg("%s: %s", sql, gw_dbs_error(a));
    gw_dbs_close(a);
}

static int setup(void **state)
{
    const char *url = getenv("SETTLED_TEST_PG_URL");
    if (url == NULL)
        return -1;
    snprintf(dbname, sizeof(dbname), "t_queue_%d", (int)getpid());
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", dbname);
    admin(sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
    admin(sql);
    const char *slash = strrchr(url, '/');
    snprintf(dburl, sizeof(dburl), "%.*s/%s", (int)(slash - url), url, dbname);
    FILE *devnull = fopen("/dev/null", "w");
    int rc =
        gw_migrate_run(dburl, gw_schema_files, gw_schema_nfiles, gw_schema_functions, gw_schema_nfunctions, devnull);
    fclose(devnull);
    if (rc != 0)
        return -1;
    char err[256];
    if ((s = gw_dbs_connect(dburl, err, sizeof(err))) == NULL)
        return -1;
    cfg = (gw_config_t){.worker_batch = 50,
                        .worker_lease_ms = 60000,
                        .worker_max_attempts = 3,
                        .retry_schedule = {.n = 2, .ms = {1000, 2000}},
                        .circuit_failures = 2,
                        .circuit_cooldown_ms = 30000,
                        .circuit_cooldown_max_ms = 600000};
    return gw_dbs_exec(s, "INSERT INTO organisations (slug, name) VALUES ('q', 'q'), ('r', 'r')", 0, NULL) == 2 ? 0
                                                                                                                : -1;
}

static int teardown(void **state)
{
    gw_dbs_close(s);
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", dbname);
    admin(sql);
    return 0;
}

static int reset(void **state)
{
    return gw_dbs_exec(s, "DELETE FROM inbox_events", 0, NULL) >= 0 ? 0 : -1;
}

/* Stores an event stored age_ms ago. */
static void add(const char *provider, const char *event_id, const char *org, const char *account, const char *type,
                const char *resource, long age_ms)
{
    static const char sql[] =
        "INSERT INTO inbox_events (organisation_id, provider, source, account, event_id, event_type, resource_id,"
        " body, headers, verified_at, received_at, correlation_id, stored_at)"
        " SELECT id, $1, 'default', $3, $2, $4, $5, 'x', '{}', now(), now(), 'corr-' || $2,"
        "        now() - $7::bigint * interval '1 millisecond' FROM organisations WHERE slug = $6";
    char age[24];
    snprintf(age, sizeof(age), "%ld", age_ms);
    const char *params[] = {provider, event_id, account, type, resource, org, age};
    if (gw_dbs_exec(s, sql, 7, params) != 1)
        fail_msg("insert %s: %s", event_id, gw_dbs_error(s));
}

/* One column of the event event_id, as text ("<null>" for NULL); in a static buffer. */
static const char *col(const char *event_id, const char *expr)
{
    static char buf[256];
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT (%s)::text FROM webhook_events WHERE event_id = $1", expr);
    const char *params[] = {event_id};
    gw_dbs_result_t *r = gw_dbs_query(s, sql, 1, params);
    if (r == NULL || gw_dbs_nrows(r) != 1)
        fail_msg("%s of %s: %s", expr, event_id, r == NULL ? gw_dbs_error(s) : "no such row");
    const char *v = gw_dbs_value(r, 0, 0);
    snprintf(buf, sizeof(buf), "%s", v != NULL ? v : "<null>");
    gw_dbs_result_free(r);
    return buf;
}

static gw_queue_t queue_as(const char *owner)
{
    gw_queue_t q = {.cfg = &cfg, .db = s, .index = 0};
    snprintf(q.owner, sizeof(q.owner), "%s", owner);
    return q;
}

static size_t claim(gw_queue_t *q, const gw_queue_lane_t *lanes, size_t nlanes, gw_queue_batch_t *b)
{
    gw_err_t err = GW_ERR_INIT;
    if (gw_queue_claim(q, lanes, nlanes, b, &err) != 0)
        fail_msg("claim: %s", err.detail);
    return b->n;
}

static void test_claim_lanes_and_delays(void **state)
{
    add("xero", "x-old", "q", "T1", "INVOICE.UPDATE", "inv-1", 10000);
    add("xero", "x-fresh", "q", "T1", "INVOICE.UPDATE", "inv-2", 0);
    add("stripe", "s-1", "q", "acct", "charge.succeeded", "ch_1", 0);
    gw_queue_t q = queue_as("w1");
    gw_queue_batch_t b;

    /* the xero lane waits 5 s for fresh rows; stripe has no lane */
    gw_queue_lane_t xero_only[] = {{"xero", 5000}};
    assert_int_equal(claim(&q, xero_only, 1, &b), 1);
    assert_string_equal(b.rows[0].id, col("x-old", "id"));
    assert_string_equal(b.rows[0].provider, "xero");
    assert_string_equal(b.rows[0].account, "T1");
    assert_string_equal(b.rows[0].event_type, "INVOICE.UPDATE");
    assert_string_equal(b.rows[0].resource_id, "inv-1");
    assert_string_equal(b.rows[0].correlation, "corr-x-old");
    assert_int_equal(b.rows[0].attempts, 1);
    assert_true(b.claimed_at[0] != '\0');
    gw_queue_batch_free(&b);
    assert_string_equal(col("x-old", "status"), "processing");
    assert_string_equal(col("x-old", "lease_owner"), "w1");
    assert_string_equal(col("x-fresh", "status"), "pending");
    assert_string_equal(col("s-1", "status"), "pending");

    /* a leased row is not claimed again; with both lanes and no delay the other two are */
    gw_queue_t q2 = queue_as("w2");
    gw_queue_lane_t both[] = {{"xero", 0}, {"stripe", 0}};
    assert_int_equal(claim(&q2, both, 2, &b), 2);
    for (size_t i = 0; i != b.n; ++i)
        assert_string_not_equal(b.rows[i].id, col("x-old", "id"));
    gw_queue_batch_free(&b);
    assert_string_equal(col("s-1", "lease_owner"), "w2");
    assert_int_equal(claim(&q2, both, 2, &b), 0);
    assert_null(b.rows);
}

static void test_finish_is_fenced_by_the_lease(void **state)
{
    add("xero", "f-1", "q", "T1", "INVOICE.UPDATE", "inv-1", 10000);
    gw_queue_t owner = queue_as("w1"), other = queue_as("w2");
    gw_queue_lane_t lanes[] = {{"xero", 0}};
    gw_queue_batch_t b;
    assert_int_equal(claim(&owner, lanes, 1, &b), 1);
    gw_queue_row_t *rows[] = {&b.rows[0]};

    gw_queue_finish(&other, rows, 1, GW_QUEUE_DONE); /* lost its lease, or never had it: changes nothing */
    gw_queue_fail(&other, rows, 1, GW_QUEUE_TRANSIENT, "late");
    gw_queue_reschedule(&other, rows, 1, 1000, "late");
    assert_string_equal(col("f-1", "status"), "processing");
    assert_string_equal(col("f-1", "last_error"), "<null>");

    gw_queue_finish(&owner, rows, 1, GW_QUEUE_IGNORED);
    assert_string_equal(col("f-1", "status"), "ignored");
    assert_string_equal(col("f-1", "lease_owner"), "<null>");
    assert_string_equal(col("f-1", "processed_at IS NOT NULL"), "true");
    gw_queue_finish(&owner, rows, 1, GW_QUEUE_DONE); /* finished once only */
    assert_string_equal(col("f-1", "status"), "ignored");
    gw_queue_batch_free(&b);
}

static void test_fail_follows_the_schedule_then_dies(void **state)
{
    add("stripe", "d-1", "q", "acct", "charge.refunded", "ch_9", 10000);
    gw_queue_t q = queue_as("w1");
    gw_queue_lane_t lanes[] = {{"stripe", 0}};
    gw_queue_batch_t b;
    for (int attempt = 1; attempt <= 3; ++attempt) {
        /* due again at once, so the next round can claim it */
        assert_true(
            gw_dbs_exec(s, "UPDATE webhook_events SET next_attempt_at = now() WHERE event_id = 'd-1'", 0, NULL) == 1);
        assert_int_equal(claim(&q, lanes, 1, &b), 1);
        assert_int_equal(b.rows[0].attempts, attempt);
        gw_queue_row_t *rows[] = {&b.rows[0]};
        gw_queue_fail(&q, rows, 1, GW_QUEUE_TRANSIENT, "Stripe API answered 503");
        gw_queue_batch_free(&b);
        assert_string_equal(col("d-1", "last_error"), "Stripe API answered 503");
        if (attempt < 3) {
            assert_string_equal(col("d-1", "status"), "failed");
            /* the schedule's wait after this attempt (1 s, then 2 s), lengthened by at most a fifth */
            double wait = atof(col("d-1", "extract(epoch FROM next_attempt_at - now())"));
            double step = (double)cfg.retry_schedule.ms[attempt - 1] / 1000;
            if (!(wait > step - 0.5 && wait <= step * 1.2 + 0.05))
                fail_msg("attempt %d: due again in %.3f s, the schedule says %.3f s (+20%%)", attempt, wait, step);
        }
    }
    assert_string_equal(col("d-1", "status"), "dead");
    assert_string_equal(col("d-1", "attempts"), "3");
}

static void test_permanent_failure_is_dead_at_once(void **state)
{
    add("xero", "p-1", "q", "T1", "INVOICE.UPDATE", "inv-1", 10000);
    gw_queue_t q = queue_as("w1");
    gw_queue_lane_t lanes[] = {{"xero", 0}};
    gw_queue_batch_t b;
    assert_int_equal(claim(&q, lanes, 1, &b), 1);
    gw_queue_row_t *rows[] = {&b.rows[0]};
    gw_queue_fail(&q, rows, 1, GW_QUEUE_PERMANENT, "Xero API answered 404");
    gw_queue_batch_free(&b);
    assert_string_equal(col("p-1", "status"), "dead");
    assert_string_equal(col("p-1", "attempts"), "1");
    assert_string_equal(col("p-1", "last_error"), "permanent failure, not retried: Xero API answered 404");
}

/* The state of the circuit of (xero, account), or "<none>". */
static const char *circuit(const char *account)
{
    static char buf[32];
    const char *params[] = {account};
    gw_dbs_result_t *r =
        gw_dbs_query(s, "SELECT state FROM provider_circuits WHERE provider = 'xero' AND account = $1", 1, params);
    snprintf(buf, sizeof(buf), "%s", r != NULL && gw_dbs_nrows(r) == 1 ? gw_dbs_value(r, 0, 0) : "<none>");
    gw_dbs_result_free(r);
    return buf;
}

static void test_outage_opens_the_circuit_without_burning_attempts(void **state)
{
    assert_true(gw_dbs_exec(s, "DELETE FROM provider_circuits", 0, NULL) >= 0);
    add("xero", "o-1", "q", "T1", "INVOICE.UPDATE", "inv-1", 10000);
    add("xero", "o-2", "q", "T1", "INVOICE.UPDATE", "inv-2", 9000);
    add("xero", "o-other", "q", "T2", "INVOICE.UPDATE", "inv-3", 8000);
    gw_queue_t q = queue_as("w1");
    gw_queue_batch_t b;
    gw_queue_lane_t lanes[] = {{"xero", 0}};

    /* the first outage failure is an ordinary attempt: the circuit counts it, still closed */
    cfg.worker_batch = 1;
    assert_int_equal(claim(&q, lanes, 1, &b), 1);
    assert_string_equal(b.rows[0].id, col("o-1", "id"));
    gw_queue_row_t *rows[] = {&b.rows[0]};
    gw_queue_fail(&q, rows, 1, GW_QUEUE_OUTAGE, "Xero API answered 503");
    gw_queue_batch_free(&b);
    assert_string_equal(col("o-1", "status"), "failed");
    assert_string_equal(col("o-1", "attempts"), "1");
    assert_string_equal(circuit("T1"), "closed");

    /* the second (SETTLED_CIRCUIT_FAILURES = 2) opens it: that row waits for the probe without spending an attempt */
    assert_int_equal(claim(&q, lanes, 1, &b), 1);
    assert_string_equal(b.rows[0].id, col("o-2", "id"));
    rows[0] = &b.rows[0];
    gw_queue_fail(&q, rows, 1, GW_QUEUE_OUTAGE, "Xero API call failed: Connection refused");
    gw_queue_batch_free(&b);
    cfg.worker_batch = 50;
    assert_string_equal(circuit("T1"), "open");
    assert_string_equal(col("o-2", "status"), "pending");
    assert_string_equal(col("o-2", "attempts"), "0");
    assert_non_null(strstr(col("o-2", "last_error"), "circuit open"));
    double wait = atof(col("o-2", "extract(epoch FROM next_attempt_at - now())"));
    assert_true(wait > 29 && wait <= 30);

    /* while open, the tenant's events are not claimed, even when due; another tenant's are */
    assert_true(gw_dbs_exec(s, "UPDATE webhook_events SET next_attempt_at = now()", 0, NULL) == 3);
    assert_int_equal(claim(&q, lanes, 1, &b), 1);
    assert_string_equal(b.rows[0].account, "T2");
    gw_queue_row_t *other[] = {&b.rows[0]};
    gw_queue_finish(&q, other, 1, GW_QUEUE_DONE);
    gw_queue_batch_free(&b);
    assert_int_equal(claim(&q, lanes, 1, &b), 0);

    /* no probe before the cool-down; then one, and only one, with one row */
    const char *providers[] = {"xero"};
    char provider[32], account[128];
    assert_int_equal(gw_circuit_take_probe(&q, providers, 1, provider, sizeof(provider), account, sizeof(account)), 0);
    assert_true(gw_dbs_exec(s, "UPDATE provider_circuits SET retry_at = now() - interval '1 second'", 0, NULL) == 1);
    assert_int_equal(gw_circuit_take_probe(&q, providers, 1, provider, sizeof(provider), account, sizeof(account)), 1);
    assert_string_equal(provider, "xero");
    assert_string_equal(account, "T1");
    assert_string_equal(circuit("T1"), "half_open");
    gw_queue_t q2 = queue_as("w2");
    assert_int_equal(gw_circuit_take_probe(&q2, providers, 1, provider, sizeof(provider), account, sizeof(account)), 0);
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_queue_claim_probe(&q, lanes, "T1", &b, &err), 0);
    assert_int_equal(b.n, 1);
    gw_queue_batch_t b2;
    assert_int_equal(claim(&q2, lanes, 1, &b2), 0); /* the tenant's other row waits for the probe */

    /* the probe fails: open again, for twice the cool-down (+ up to a fifth), and its attempt is not counted */
    rows[0] = &b.rows[0];
    gw_queue_fail(&q, rows, 1, GW_QUEUE_OUTAGE, "Xero API answered 503");
    const char *probed = b.rows[0].id;
    assert_string_equal(circuit("T1"), "open");
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT attempts FROM webhook_events WHERE id = %s", probed);
    gw_dbs_result_t *r = gw_dbs_query(s, sql, 0, NULL);
    assert_non_null(r);
    int attempts_after = atoi(gw_dbs_value(r, 0, 0));
    gw_dbs_result_free(r);
    assert_true(attempts_after <= 1);
    gw_queue_batch_free(&b);
    wait = atof(col("o-2", "(SELECT extract(epoch FROM retry_at - now()) FROM provider_circuits)"));
    if (!(wait > 59 && wait <= 72.1))
        fail_msg("the second wait is %.3f s, expected 60 s to 72 s", wait);

    /* the next probe succeeds: closed, and the tenant's waiting rows are due at once */
    assert_true(gw_dbs_exec(s, "UPDATE provider_circuits SET retry_at = now() - interval '1 second'", 0, NULL) == 1);
    assert_true(gw_dbs_exec(s,
                            "UPDATE webhook_events SET next_attempt_at = now() + interval '1 hour'"
                            " WHERE account = 'T1'",
                            0, NULL) == 2);
    assert_int_equal(gw_circuit_take_probe(&q, providers, 1, provider, sizeof(provider), account, sizeof(account)), 1);
    gw_circuit_success(&q, "xero", "T1");
    assert_string_equal(circuit("T1"), "closed");
    assert_string_equal(col("o-1", "next_attempt_at <= now()"), "true");
    assert_string_equal(col("o-2", "next_attempt_at <= now()"), "true");
    assert_int_equal(claim(&q, lanes, 1, &b), 2);
    gw_queue_batch_free(&b);

    /* a success with nothing to close writes nothing */
    gw_circuit_success(&q, "xero", "T9");
    assert_string_equal(circuit("T9"), "<none>");
}

static void test_reschedule_does_not_count(void **state)
{
    add("gocardless", "r-1", "q", "CR1", "payments.confirmed", "PM1", 10000);
    gw_queue_t q = queue_as("w1");
    gw_queue_lane_t lanes[] = {{"gocardless", 0}};
    gw_queue_batch_t b;
    assert_int_equal(claim(&q, lanes, 1, &b), 1);
    gw_queue_row_t *rows[] = {&b.rows[0]};
    gw_queue_reschedule(&q, rows, 1, 30000, "waiting for the GoCardless quota");
    gw_queue_batch_free(&b);
    assert_string_equal(col("r-1", "status"), "pending");
    assert_string_equal(col("r-1", "attempts"), "0");
    assert_string_equal(col("r-1", "last_error"), "waiting for the GoCardless quota");
    double wait = atof(col("r-1", "extract(epoch FROM next_attempt_at - now())"));
    assert_true(wait > 29 && wait <= 30);
    assert_int_equal(claim(&q, lanes, 1, &b), 0); /* not due yet */
}

static void test_cover_finishes_exactly_the_waiting_rows_of_the_objects(void **state)
{
    /* ids with the characters an array literal must escape */
    static const char *const odd = "in\"v,{1}\\x";
    add("xero", "c-claimed", "q", "T1", "INVOICE.UPDATE", "inv-1", 20000);
    add("xero", "c-same", "q", "T1", "INVOICE.CREATE", "inv-1", 15000);
    add("xero", "c-odd", "q", "T1", "INVOICE.UPDATE", odd, 15000);
    add("xero", "c-other-resource", "q", "T1", "INVOICE.UPDATE", "inv-2", 15000);
    add("xero", "c-other-category", "q", "T1", "CONTACT.UPDATE", "inv-1", 15000);
    add("xero", "c-other-account", "q", "T2", "INVOICE.UPDATE", "inv-1", 15000);
    add("xero", "c-other-org", "r", "T1", "INVOICE.UPDATE", "inv-1", 15000);
    add("stripe", "c-other-provider", "q", "T1", "INVOICE.UPDATE", "inv-1", 15000);
    add("xero", "c-after", "q", "T1", "INVOICE.UPDATE", "inv-1", -60000); /* stored after the claim */
    gw_queue_t q = queue_as("w1");
    gw_queue_batch_t b;
    /* claim just the oldest row: batch of one */
    cfg.worker_batch = 1;
    gw_queue_lane_t lanes[] = {{"xero", 0}};
    assert_int_equal(claim(&q, lanes, 1, &b), 1);
    cfg.worker_batch = 50;
    assert_string_equal(b.rows[0].id, col("c-claimed", "id"));
    const char *ids[] = {"inv-1", odd};
    size_t covered = gw_queue_cover(&q, &b.rows[0], "INVOICE", ids, 2, b.claimed_at);
    gw_queue_batch_free(&b);
    assert_int_equal(covered, 2);
    assert_string_equal(col("c-same", "status"), "done");
    assert_string_equal(col("c-odd", "status"), "done");
    assert_string_equal(col("c-claimed", "status"), "processing"); /* its own finish is its worker's */
    const char *untouched[] = {"c-other-resource", "c-other-category", "c-other-account",
                               "c-other-org",      "c-other-provider", "c-after"};
    for (size_t i = 0; i != sizeof(untouched) / sizeof(untouched[0]); ++i)
        if (strcmp(col(untouched[i], "status"), "pending") != 0)
            fail_msg("%s was covered", untouched[i]);
}

static void test_park_lost_and_gauges(void **state)
{
    add("xero", "p-lost", "q", "T1", "INVOICE.UPDATE", "inv-1", 10000);
    add("xero", "p-young", "q", "T1", "INVOICE.UPDATE", "inv-2", 10000);
    add("stripe", "p-stripe", "q", "acct", "charge.succeeded", "ch_1", 10000);
    /* three workers died holding p-lost (its lease expired each time); p-young was tried once */
    assert_true(gw_dbs_exec(s,
                            "UPDATE webhook_events SET status = 'processing', lease_owner = 'dead-worker',"
                            " attempts = CASE event_id WHEN 'p-lost' THEN 3 ELSE 1 END,"
                            " next_attempt_at = now() - interval '1 second' WHERE provider = 'xero'",
                            0, NULL) == 2);
    gw_queue_t q = queue_as("w1");
    const char *stripe_only[] = {"stripe"}, *xero_only[] = {"xero"};
    assert_int_equal(gw_queue_park_lost(&q, stripe_only, 1), 0); /* another provider's rows are not touched */
    assert_int_equal(gw_queue_park_lost(&q, xero_only, 1), 1);
    assert_string_equal(col("p-lost", "status"), "dead");
    assert_non_null(strstr(col("p-lost", "last_error"), "stopped before finishing, 3 times"));
    assert_string_equal(col("p-young", "status"), "processing");
    gw_queue_gauges(&q, xero_only, 1); /* runs through the partial indexes; the metrics test checks rendering */
}

static void test_release_leases_after_a_database_failure(void **state)
{
    add("xero", "l-mine", "q", "T1", "INVOICE.UPDATE", "inv-1", 10000);
    add("xero", "l-theirs", "q", "T2", "INVOICE.UPDATE", "inv-2", 9000);
    gw_queue_t mine = queue_as("w1"), theirs = queue_as("w2"), other = queue_as("w3");
    gw_queue_lane_t lanes[] = {{"xero", 0}};
    gw_queue_batch_t b;
    cfg.worker_batch = 1;
    assert_int_equal(claim(&mine, lanes, 1, &b), 1);
    gw_queue_batch_free(&b);
    assert_int_equal(claim(&theirs, lanes, 1, &b), 1);
    gw_queue_batch_free(&b);
    cfg.worker_batch = 50;
    assert_int_equal(claim(&other, lanes, 1, &b), 0); /* both leased for a minute */

    assert_int_equal(gw_queue_release_leases(&mine), 1);
    assert_string_equal(col("l-mine", "next_attempt_at <= now()"), "true");
    assert_string_equal(col("l-theirs", "next_attempt_at > now() + interval '50 seconds'"), "true");
    assert_int_equal(claim(&other, lanes, 1, &b), 1); /* due at once, not at the lease's end */
    assert_string_equal(b.rows[0].id, col("l-mine", "id"));
    assert_int_equal(b.rows[0].attempts, 2); /* the attempt that was under way stays counted */
    gw_queue_batch_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_claim_lanes_and_delays, reset),
        cmocka_unit_test_setup(test_finish_is_fenced_by_the_lease, reset),
        cmocka_unit_test_setup(test_fail_follows_the_schedule_then_dies, reset),
        cmocka_unit_test_setup(test_permanent_failure_is_dead_at_once, reset),
        cmocka_unit_test_setup(test_outage_opens_the_circuit_without_burning_attempts, reset),
        cmocka_unit_test_setup(test_reschedule_does_not_count, reset),
        cmocka_unit_test_setup(test_cover_finishes_exactly_the_waiting_rows_of_the_objects, reset),
        cmocka_unit_test_setup(test_park_lost_and_gauges, reset),
        cmocka_unit_test_setup(test_release_leases_after_a_database_failure, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
