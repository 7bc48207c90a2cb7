/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/domain/quota.c against a real Redis (SETTLED_TEST_REDIS_URL), with the "minute" shortened
 * through gw_quota_test_tune so nothing sleeps a minute: every limit denies exactly at its edge and frees
 * on time, two gw_quota_t stand for two instances sharing Redis, eight threads never hold more than the
 * concurrency limit, and the process goes on under the fallback limits while Redis is unreachable (a small
 * TCP proxy in this file makes Redis vanish and come back), two instances' fallback limits together never
 * exceed a provider's limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "quota.h"
#include "redis.h"
#include "redis_sync.h"

static const char *redis_url(void)
{
    const char *url = getenv("SETTLED_TEST_REDIS_URL");
    if (url == NULL || *url == '\0')
        fail_msg("SETTLED_TEST_REDIS_URL is not set: run the tests through deploy/test.sh");
    return url;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t ms_to_utc_midnight(void)
{
    uint64_t w = wall_us() / 1000, day = 86400000;
    return (w / day + 1) * day - w;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Sleeps until the monotonic clock reads at (ms); returns at once if it is past. */
static void sleep_until(uint64_t at)
{
    uint64_t now = mono_ms();
    if (at > now)
        sleep_ms(at - now);
}

#define assert_in_range_msg(v, lo, hi)                                                                                 \
    do {                                                                                                               \
        unsigned long long v_ = (v), lo_ = (lo), hi_ = (hi);                                                           \
        if (v_ < lo_ || v_ > hi_)                                                                                      \
            fail_msg("%s = %llu, expected within [%llu, %llu]", #v, v_, lo_, hi_);                                     \
    } while (0)

static gw_config_t make_config(const char *url)
{
    gw_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.redis_url = (char *)url;
    cfg.xero_limit_concurrent = 5;
    cfg.xero_limit_minute = 60;
    cfg.xero_limit_day = 5000;
    cfg.xero_limit_app_minute = 10000;
    cfg.quota_fallback_concurrent = 1;
    cfg.quota_fallback_minute = 20;
    cfg.http_timeout_ms = 30000;
    return cfg;
}

/* A fresh key prefix, so runs and tests never see each other's counters. */
static void fresh_prefix(char *buf, size_t len)
{
    static int n;
    snprintf(buf, len, "test:quota:%d:%d:%d:", (int)getpid(), (int)(wall_us() % 1000000), ++n);
}

static gw_quota_t *make_quota(const gw_config_t *cfg, uint64_t window_ms, uint64_t lease_ms, const char *prefix)
{
    gw_quota_t *q = gw_quota_create(cfg, "xero");
    assert_non_null(q);
    gw_quota_test_tune(q, window_ms, lease_ms, prefix);
    return q;
}

/* Acquires and releases at once; returns what acquire returned. */
static int call_once(gw_quota_t *q, const char *tenant, gw_quota_slot_t *slot, uint64_t *wait)
{
    int rc = gw_quota_acquire(q, tenant, slot, wait);
    if (rc == 0)
        gw_quota_release(q, slot);
    return rc;
}

static void test_invalid_tenant(void **state)
{
    gw_config_t cfg = make_config(NULL);
    gw_quota_t *q = gw_quota_create(&cfg, "xero");
    gw_quota_slot_t slot;
    uint64_t wait = 7;
    char longname[GW_QUOTA_TENANT_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(gw_quota_acquire(q, NULL, &slot, &wait), -1);
    assert_int_equal(gw_quota_acquire(q, "", &slot, &wait), -1);
    assert_int_equal(gw_quota_acquire(q, longname, &slot, &wait), -1);
    longname[GW_QUOTA_TENANT_MAX] = '\0';
    assert_int_equal(gw_quota_acquire(q, longname, &slot, &wait), 0);
    gw_quota_release(q, &slot);
    gw_quota_release(q, &slot); /* a second release is ignored */
    gw_quota_destroy(q);

    gw_config_t bad = make_config("http://nope");
    assert_null(gw_quota_create(&bad, "xero"));
    assert_string_equal(gw_quota_limit_name(GW_QUOTA_LIMIT_APP_MINUTE), "app_minute");
}

static void test_minute_limit(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    gw_quota_t *q = make_quota(&cfg, 1000, 0, prefix);
    gw_quota_slot_t slot;
    uint64_t wait;
    for (int i = 0; i != 60; ++i) {
        if (call_once(q, "tenant-m", &slot, &wait) != 0)
            fail_msg("call %d was denied by %s", i + 1, gw_quota_limit_name(slot.limit));
    }
    assert_false(gw_quota_is_fallback(q));
    assert_int_equal(gw_quota_acquire(q, "tenant-m", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_MINUTE);
    assert_in_range_msg(wait, 500, 1000);
    uint64_t until = mono_ms() + wait;
    /* another tenant has its own minute */
    assert_int_equal(call_once(q, "tenant-m2", &slot, &wait), 0);
    assert_int_equal(gw_quota_acquire(q, "tenant-m", &slot, &wait), 1);
    sleep_until(until + 20);
    assert_int_equal(call_once(q, "tenant-m", &slot, &wait), 0);
    gw_quota_destroy(q);
}

static void test_window_is_rolling(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    cfg.xero_limit_minute = 3;
    gw_quota_t *q = make_quota(&cfg, 1000, 0, prefix);
    gw_quota_slot_t slot;
    /* each window entry is dated between the two clock readings around its call; Redis counts whole ms */
    uint64_t wait, a0 = mono_ms();
    assert_int_equal(call_once(q, "tenant-r", &slot, &wait), 0);
    uint64_t a1 = mono_ms();
    sleep_until(a0 + 600);
    uint64_t b0 = mono_ms();
    assert_int_equal(call_once(q, "tenant-r", &slot, &wait), 0);
    assert_int_equal(call_once(q, "tenant-r", &slot, &wait), 0);
    uint64_t b1 = mono_ms(), n0 = mono_ms();
    assert_int_equal(gw_quota_acquire(q, "tenant-r", &slot, &wait), 1);
    uint64_t n1 = mono_ms();
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_MINUTE);
    assert_in_range_msg(wait, a0 + 1000 - n1 - 2, a1 + 1000 - n0 + 2); /* the first call leaves first */
    sleep_until(a0 + 1050);
    /* a fixed window would now allow three calls; the rolling one still holds the two from a0 + 600 */
    assert_int_equal(call_once(q, "tenant-r", &slot, &wait), 0);
    n0 = mono_ms();
    assert_int_equal(gw_quota_acquire(q, "tenant-r", &slot, &wait), 1);
    n1 = mono_ms();
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_MINUTE);
    assert_in_range_msg(wait, b0 + 1000 - n1 - 2, b1 + 1000 - n0 + 2);
    assert_in_range_msg(wait, 300, 600);
    gw_quota_destroy(q);
}

/* Threads make calls that take a while "at Xero" and record when each happened (between acquire and release). */
typedef struct st_window_run_t {
    const char *tenant;
    uint64_t until_ms;
    pthread_mutex_t lock;
    uint64_t at_us[1000];
    size_t n;
    atomic_int denied_minute;
} window_run_t;

typedef struct st_window_arg_t {
    window_run_t *run;
    gw_quota_t *q;
    unsigned seed;
} window_arg_t;

static void *window_thread(void *p)
{
    window_arg_t *arg = p;
    window_run_t *run = arg->run;
    while (mono_ms() < run->until_ms) {
        gw_quota_slot_t slot;
        uint64_t wait;
        if (gw_quota_acquire(arg->q, run->tenant, &slot, &wait) != 0) {
            if (slot.limit == GW_QUOTA_LIMIT_MINUTE)
                atomic_fetch_add(&run->denied_minute, 1);
            sleep_ms(wait < 5 ? wait : 5);
            continue;
        }
        sleep_ms((uint64_t)(rand_r(&arg->seed) % 40)); /* on the way to Xero */
        uint64_t at = wall_us();                       /* Xero counts the call */
        pthread_mutex_lock(&run->lock);
        if (run->n < sizeof(run->at_us) / sizeof(run->at_us[0]))
            run->at_us[run->n++] = at;
        pthread_mutex_unlock(&run->lock);
        sleep_ms((uint64_t)(rand_r(&arg->seed) % 40)); /* the response on its way back */
        gw_quota_release(arg->q, &slot);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_no_window_at_xero_exceeds_the_limit(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    cfg.xero_limit_minute = 5;
    window_run_t run = {.tenant = "tenant-w", .until_ms = mono_ms() + 2500, .lock = PTHREAD_MUTEX_INITIALIZER};
    gw_quota_t *a = make_quota(&cfg, 500, 0, prefix), *b = make_quota(&cfg, 500, 0, prefix);
    pthread_t th[6];
    window_arg_t args[6];
    for (int i = 0; i != 6; ++i) {
        args[i] = (window_arg_t){&run, i < 3 ? a : b, (unsigned)i * 7919u + 1}; /* three threads per instance */
        assert_int_equal(pthread_create(&th[i], NULL, window_thread, &args[i]), 0);
    }
    for (int i = 0; i != 6; ++i)
        pthread_join(th[i], NULL);
    qsort(run.at_us, run.n, sizeof(run.at_us[0]), cmp_u64);
    /* any 6 consecutive calls span at least the window (500 ms; Redis counts whole ms) */
    for (size_t i = 0; i + 5 < run.n; ++i) {
        uint64_t span = run.at_us[i + 5] - run.at_us[i];
        if (span < 499000)
            fail_msg("calls %zu..%zu happened within %llu us: more than 5 in a 500 ms window", i, i + 5,
                     (unsigned long long)span);
    }
    /* the limit was reached, and used: about 5 per 500 ms over 2.5 s */
    assert_true(atomic_load(&run.denied_minute) > 0);
    assert_in_range_msg(run.n, 15, 30);
    gw_quota_destroy(a);
    gw_quota_destroy(b);
}

static void test_concurrency_limit(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    gw_quota_t *q = make_quota(&cfg, 0, 0, prefix);
    gw_quota_slot_t slots[7];
    uint64_t wait;
    for (int i = 0; i != 5; ++i)
        assert_int_equal(gw_quota_acquire(q, "tenant-c", &slots[i], &wait), 0);
    assert_int_equal(gw_quota_acquire(q, "tenant-c", &slots[5], &wait), 1);
    assert_int_equal(slots[5].limit, GW_QUOTA_LIMIT_CONCURRENT);
    assert_in_range_msg(wait, 1, 100);
    gw_quota_release(q, &slots[2]);
    assert_int_equal(gw_quota_acquire(q, "tenant-c", &slots[5], &wait), 0);
    assert_int_equal(gw_quota_acquire(q, "tenant-c", &slots[6], &wait), 1);
    assert_int_equal(slots[6].limit, GW_QUOTA_LIMIT_CONCURRENT);
    gw_quota_release(q, &slots[2]); /* already released: ignored, frees nothing */
    assert_int_equal(gw_quota_acquire(q, "tenant-c", &slots[6], &wait), 1);
    for (int i = 0; i != 6; ++i)
        gw_quota_release(q, &slots[i]);
    for (int i = 0; i != 5; ++i)
        assert_int_equal(gw_quota_acquire(q, "tenant-c", &slots[i], &wait), 0);
    for (int i = 0; i != 5; ++i)
        gw_quota_release(q, &slots[i]);
    gw_quota_destroy(q);
}

static int unused_port(void);

/* gw_quota_peek reads what is left without taking any of it; without Redis it knows nothing. */
static void test_peek_reads_what_is_left(void **state)
{
    char prefix[64], url[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    gw_quota_t *q = make_quota(&cfg, 0, 0, prefix);
    gw_quota_remaining_t left;
    assert_int_equal(gw_quota_peek(q, "tenant-p", &left), 0);
    assert_int_equal(left.concurrent, 5);
    assert_int_equal(left.window, 60);
    assert_int_equal(left.day, 5000);
    assert_int_equal(left.app_window, 10000);
    assert_int_equal(left.blocked_ms, 0);
    gw_quota_slot_t held[2], done;
    uint64_t wait;
    assert_int_equal(gw_quota_acquire(q, "tenant-p", &held[0], &wait), 0);
    assert_int_equal(gw_quota_acquire(q, "tenant-p", &held[1], &wait), 0);
    assert_int_equal(call_once(q, "tenant-p", &done, &wait), 0);
    for (int i = 0; i != 2; ++i) { /* peeking twice takes nothing */
        assert_int_equal(gw_quota_peek(q, "tenant-p", &left), 0);
        assert_int_equal(left.concurrent, 3);
        assert_int_equal(left.window, 57);
        assert_int_equal(left.day, 4997);
        assert_int_equal(left.app_window, 10000 - 3);
    }
    assert_int_equal(gw_quota_peek(q, "tenant-other", &left), 0);
    assert_int_equal(left.window, 60);
    assert_int_equal(left.app_window, 10000 - 3);
    gw_quota_release(q, &held[0]);
    gw_quota_release(q, &held[1]);
    assert_int_equal(gw_quota_peek(q, "tenant-p", &left), 0);
    assert_int_equal(left.concurrent, 5);
    gw_quota_observe(q, "tenant-p", 429, "30", "minute", NULL, NULL, NULL);
    assert_int_equal(gw_quota_peek(q, "tenant-p", &left), 0);
    assert_in_range_msg(left.blocked_ms, 28000, 30000);
    assert_int_equal(gw_quota_peek(q, "", &left), -1);
    gw_quota_destroy(q);

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", unused_port());
    gw_config_t down = make_config(url);
    q = make_quota(&down, 0, 0, prefix);
    assert_int_equal(gw_quota_peek(q, "tenant-p", &left), -1);
    gw_quota_destroy(q);
    gw_config_t none = make_config(NULL);
    q = make_quota(&none, 0, 0, prefix);
    assert_int_equal(gw_quota_peek(q, "tenant-p", &left), -1);
    gw_quota_destroy(q);
}

static void test_crashed_holder_slot_expires(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    gw_quota_t *crashed = make_quota(&cfg, 5000, 300, prefix), *alive = make_quota(&cfg, 5000, 300, prefix);
    gw_quota_slot_t slots[6], kept;
    uint64_t wait;
    for (int i = 0; i != 4; ++i)
        assert_int_equal(gw_quota_acquire(crashed, "tenant-x", &slots[i], &wait), 0);
    uint64_t t0 = mono_ms();   /* the crashed slots' leases end by t0 + 300 */
    gw_quota_destroy(crashed); /* the process dies holding four slots */
    sleep_ms(150);
    assert_int_equal(gw_quota_acquire(alive, "tenant-x", &kept, &wait), 0); /* lease until ~t0 + 450 */
    assert_int_equal(gw_quota_acquire(alive, "tenant-x", &slots[5], &wait), 1);
    assert_int_equal(slots[5].limit, GW_QUOTA_LIMIT_CONCURRENT);
    assert_in_range_msg(wait, 1, 100);
    sleep_until(t0 + 320);
    /* the four expired slots are trimmed (the set itself lives on: kept's lease runs) */
    for (int i = 0; i != 4; ++i)
        assert_int_equal(gw_quota_acquire(alive, "tenant-x", &slots[i], &wait), 0);
    assert_int_equal(gw_quota_acquire(alive, "tenant-x", &slots[5], &wait), 1);
    assert_int_equal(slots[5].limit, GW_QUOTA_LIMIT_CONCURRENT);
    for (int i = 0; i != 4; ++i)
        gw_quota_release(alive, &slots[i]);
    gw_quota_release(alive, &kept);
    gw_quota_destroy(alive);
}

static void test_day_limit(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    cfg.xero_limit_day = 3;
    gw_quota_t *q = make_quota(&cfg, 0, 0, prefix);
    gw_quota_slot_t slot;
    uint64_t wait;
    for (int i = 0; i != 3; ++i)
        assert_int_equal(call_once(q, "tenant-d", &slot, &wait), 0);
    assert_int_equal(gw_quota_acquire(q, "tenant-d", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_DAY);
    uint64_t expect = ms_to_utc_midnight();
    assert_in_range_msg(wait, expect - 2000, expect + 2000);
    assert_int_equal(call_once(q, "tenant-d2", &slot, &wait), 0);
    gw_quota_destroy(q);
}

static void test_app_limit_across_tenants(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    cfg.xero_limit_app_minute = 3;
    cfg.xero_limit_day = 2;
    gw_quota_t *q = make_quota(&cfg, 1000, 0, prefix), *other = make_quota(&cfg, 1000, 0, prefix);
    gw_quota_slot_t slot;
    uint64_t wait;
    assert_int_equal(call_once(q, "tenant-a", &slot, &wait), 0);
    assert_int_equal(call_once(q, "tenant-a", &slot, &wait), 0);
    assert_int_equal(call_once(other, "tenant-b", &slot, &wait), 0);
    assert_int_equal(gw_quota_acquire(other, "tenant-b", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_APP_MINUTE);
    assert_in_range_msg(wait, 800, 1000);
    assert_int_equal(gw_quota_acquire(q, "tenant-c", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_APP_MINUTE);
    assert_int_equal(gw_quota_acquire(q, "tenant-a", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_DAY); /* the tenant's own limits are checked first */
    sleep_ms(1020);
    /* the app's denials gave back what they had taken of tenant-b: its day still has one call */
    assert_int_equal(call_once(other, "tenant-b", &slot, &wait), 0);
    assert_int_equal(gw_quota_acquire(other, "tenant-b", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_DAY);
    gw_quota_destroy(q);
    gw_quota_destroy(other);
}

static void test_429_blocks_every_instance(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    gw_quota_t *a = make_quota(&cfg, 0, 0, prefix), *b = make_quota(&cfg, 0, 0, prefix);
    gw_quota_slot_t slot;
    uint64_t wait;
    assert_int_equal(gw_quota_acquire(a, "tenant-429", &slot, &wait), 0);
    gw_quota_observe(a, "tenant-429", 429, "2", "minute", "0", "4000", "9000");
    gw_quota_release(a, &slot);
    uint64_t t0 = mono_ms();
    assert_int_equal(gw_quota_acquire(b, "tenant-429", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_BLOCKED);
    assert_in_range_msg(wait, 1800, 2000);
    assert_int_equal(gw_quota_acquire(a, "tenant-429", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_BLOCKED);
    /* other tenants go on */
    assert_int_equal(call_once(b, "tenant-ok", &slot, &wait), 0);
    sleep_until(t0 + 2030);
    assert_int_equal(call_once(b, "tenant-429", &slot, &wait), 0);
    assert_int_equal(call_once(a, "tenant-429", &slot, &wait), 0);

    /* a 429 naming the app's minute blocks every tenant of every instance */
    gw_quota_observe(a, "tenant-429", 429, " 1 ", "AppMinute", NULL, NULL, NULL);
    assert_int_equal(gw_quota_acquire(b, "tenant-other", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_APP_BLOCKED);
    assert_in_range_msg(wait, 800, 1000);
    sleep_ms(wait + 20);
    assert_int_equal(call_once(b, "tenant-other", &slot, &wait), 0);

    /* an HTTP-date Retry-After; a block only lengthens */
    char date[64];
    time_t at = time(NULL) + 3;
    struct tm tm;
    gmtime_r(&at, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    gw_quota_observe(a, "tenant-date", 429, date, NULL, NULL, NULL, NULL);
    gw_quota_observe(a, "tenant-date", 429, "1", "minute", NULL, NULL, NULL);
    assert_int_equal(gw_quota_acquire(b, "tenant-date", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_BLOCKED);
    assert_in_range_msg(wait, 1900, 3000);
    /* junk headers change nothing */
    gw_quota_observe(a, "tenant-junk", 200, "soon", "minute", "x", "-1", "");
    assert_int_equal(call_once(b, "tenant-junk", &slot, &wait), 0);
    gw_quota_destroy(a);
    gw_quota_destroy(b);
}

static void test_min_remaining_zero_blocks_until_window_rolls(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    gw_quota_t *a = make_quota(&cfg, 1000, 0, prefix), *b = make_quota(&cfg, 1000, 0, prefix);
    gw_quota_slot_t slot;
    uint64_t wait, t0 = mono_ms();
    assert_int_equal(call_once(a, "tenant-min", &slot, &wait), 0);
    uint64_t t1 = mono_ms();
    sleep_ms(200);
    assert_int_equal(gw_quota_acquire(a, "tenant-min", &slot, &wait), 0);
    gw_quota_observe(a, "tenant-min", 200, NULL, NULL, "0", "4000", "9000");
    gw_quota_release(a, &slot);
    /* Xero's minute is full: blocked until the first call leaves the window, at about t0 + 1000 */
    uint64_t n0 = mono_ms();
    assert_int_equal(gw_quota_acquire(b, "tenant-min", &slot, &wait), 1);
    uint64_t n1 = mono_ms();
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_BLOCKED);
    assert_in_range_msg(wait, t0 + 1000 - n1 - 2, t1 + 1000 - n0 + 2);
    sleep_ms(wait + 20);
    assert_int_equal(call_once(b, "tenant-min", &slot, &wait), 0);

    /* X-AppMinLimit-Remaining: 0 blocks the app the same way */
    gw_quota_observe(b, "tenant-min", 200, NULL, NULL, "50", "4000", "0");
    assert_int_equal(gw_quota_acquire(a, "tenant-any", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_APP_BLOCKED);
    assert_in_range_msg(wait, 1, 1000);
    gw_quota_destroy(a);
    gw_quota_destroy(b);
}

static void test_day_remaining_zero_blocks_until_next_utc_day(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    gw_quota_t *a = make_quota(&cfg, 0, 0, prefix), *b = make_quota(&cfg, 0, 0, prefix);
    gw_quota_slot_t slot;
    uint64_t wait;
    gw_quota_observe(a, "tenant-day0", 200, NULL, NULL, "59", "0", "9999");
    assert_int_equal(gw_quota_acquire(b, "tenant-day0", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_BLOCKED);
    uint64_t expect = ms_to_utc_midnight();
    assert_in_range_msg(wait, expect - 2000, expect + 2000);
    /* a 429 for the day without Retry-After: the same */
    gw_quota_observe(a, "tenant-day429", 429, NULL, "day", NULL, NULL, NULL);
    assert_int_equal(gw_quota_acquire(b, "tenant-day429", &slot, &wait), 1);
    assert_in_range_msg(wait, expect - 2000, expect + 2000);
    /* with Retry-After, that wins */
    gw_quota_observe(a, "tenant-day-ra", 429, "5", "day", NULL, "0", NULL);
    assert_int_equal(gw_quota_acquire(b, "tenant-day-ra", &slot, &wait), 1);
    assert_in_range_msg(wait, 4800, 5000);
    gw_quota_destroy(a);
    gw_quota_destroy(b);
}

typedef struct st_hammer_t {
    gw_quota_t *q;
    uint64_t until_ms;
    atomic_int holders, max_holders, acquired, denied;
} hammer_t;

typedef struct st_hammer_arg_t {
    hammer_t *h;
    gw_quota_t *q;
} hammer_arg_t;

static void *hammer_thread(void *p)
{
    hammer_arg_t *arg = p;
    hammer_t *h = arg->h;
    while (mono_ms() < h->until_ms) {
        gw_quota_slot_t slot;
        uint64_t wait;
        int rc = gw_quota_acquire(arg->q, "tenant-hammer", &slot, &wait);
        if (rc != 0) {
            if (rc != 1 || slot.limit != GW_QUOTA_LIMIT_CONCURRENT)
                atomic_store(&h->max_holders, 1000); /* fails the test below */
            atomic_fetch_add(&h->denied, 1);
            sleep_ms(1);
            continue;
        }
        int now = atomic_fetch_add(&h->holders, 1) + 1;
        for (int seen = atomic_load(&h->max_holders); now > seen;)
            if (atomic_compare_exchange_weak(&h->max_holders, &seen, now))
                break;
        atomic_fetch_add(&h->acquired, 1);
        sleep_ms(2);
        atomic_fetch_sub(&h->holders, 1);
        gw_quota_release(arg->q, &slot);
    }
    return NULL;
}

static void test_threads_never_exceed_concurrency(void **state)
{
    char prefix[64];
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(redis_url());
    cfg.xero_limit_minute = 1000000;
    cfg.xero_limit_day = 1000000;
    gw_quota_t *a = make_quota(&cfg, 0, 0, prefix), *b = make_quota(&cfg, 0, 0, prefix);
    hammer_t h = {.until_ms = mono_ms() + 1500};
    hammer_arg_t args[8];
    pthread_t th[8];
    for (int i = 0; i != 8; ++i) {
        args[i] = (hammer_arg_t){&h, i % 2 == 0 ? a : b}; /* two instances, four threads each */
        assert_int_equal(pthread_create(&th[i], NULL, hammer_thread, &args[i]), 0);
    }
    for (int i = 0; i != 8; ++i)
        pthread_join(th[i], NULL);
    if (atomic_load(&h.max_holders) != 5)
        fail_msg("at most %d calls were in progress at once; the limit is 5 and 8 threads compete",
                 atomic_load(&h.max_holders));
    assert_true(atomic_load(&h.acquired) > 100);
    assert_true(atomic_load(&h.denied) > 0);
    assert_false(gw_quota_is_fallback(a));
    assert_false(gw_quota_is_fallback(b));
    /* every slot came back */
    gw_quota_slot_t slots[5];
    uint64_t wait;
    for (int i = 0; i != 5; ++i)
        assert_int_equal(gw_quota_acquire(a, "tenant-hammer", &slots[i], &wait), 0);
    for (int i = 0; i != 5; ++i)
        gw_quota_release(a, &slots[i]);
    gw_quota_destroy(a);
    gw_quota_destroy(b);
}

static int unused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static void check_fallback_limits(gw_quota_t *q)
{
    gw_quota_slot_t s1, s2, s3;
    uint64_t wait, t0 = mono_ms();
    assert_int_equal(gw_quota_acquire(q, "tenant-f", &s1, &wait), 0);
    assert_true(mono_ms() - t0 < 300);
    assert_true(gw_quota_is_fallback(q));
    assert_true(gw_quota_fallback_active());
    /* one call in progress per tenant */
    assert_int_equal(gw_quota_acquire(q, "tenant-f", &s2, &wait), 1);
    assert_int_equal(s2.limit, GW_QUOTA_LIMIT_CONCURRENT);
    assert_in_range_msg(wait, 1, 100);
    assert_int_equal(gw_quota_acquire(q, "tenant-g", &s3, &wait), 0);
    gw_quota_release(q, &s3);
    gw_quota_release(q, &s1);
    /* three calls a window per tenant */
    assert_int_equal(call_once(q, "tenant-f", &s1, &wait), 0);
    assert_int_equal(call_once(q, "tenant-f", &s1, &wait), 0);
    assert_int_equal(gw_quota_acquire(q, "tenant-f", &s1, &wait), 1);
    assert_int_equal(s1.limit, GW_QUOTA_LIMIT_MINUTE);
    assert_in_range_msg(wait, 800, 1000);
    /* observed 429s hold locally */
    gw_quota_observe(q, "tenant-g", 429, "1", "minute", NULL, NULL, NULL);
    assert_int_equal(gw_quota_acquire(q, "tenant-g", &s1, &wait), 1);
    assert_int_equal(s1.limit, GW_QUOTA_LIMIT_BLOCKED);
    assert_in_range_msg(wait, 900, 1000);
    gw_quota_observe(q, "tenant-h", 200, NULL, NULL, "0", NULL, NULL);
    assert_int_equal(gw_quota_acquire(q, "tenant-h", &s1, &wait), 1);
    assert_int_equal(s1.limit, GW_QUOTA_LIMIT_BLOCKED);
    assert_in_range_msg(wait, 900, 1000);
}

static void test_fallback_when_redis_is_unreachable(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", unused_port());
    gw_config_t cfg = make_config(url);
    cfg.quota_fallback_concurrent = 1;
    cfg.quota_fallback_minute = 3;
    gw_quota_t *q = make_quota(&cfg, 1000, 0, NULL);
    assert_false(gw_quota_is_fallback(q)); /* nothing tried yet */
    check_fallback_limits(q);
    gw_quota_destroy(q);
    assert_false(gw_quota_fallback_active());

    /* without a Redis URL the fallback limits are the limits */
    gw_config_t none = make_config(NULL);
    none.quota_fallback_minute = 3;
    q = make_quota(&none, 1000, 0, NULL);
    assert_true(gw_quota_is_fallback(q));
    check_fallback_limits(q);
    gw_quota_destroy(q);
    assert_false(gw_quota_fallback_active());
}

/* Each instance's share of every limit (SETTLED_INSTANCES), as gw_quota_limits_of computes it. */
static void test_fallback_limits_are_shares(void **state)
{
    static const struct {
        const char *provider;
        int instances;
        int concurrent, per_window, day, app; /* the fallback limits expected */
    } cases[] = {
        /* Xero's defaults: 5 in progress, 60 a minute, 5,000 a day, 10,000 a minute for the app; fallback 1 and 20 */
        {"xero", 1, 1, 20, 5000, 10000},
        {"xero", 2, 1, 20, 2500, 5000},
        {"xero", 3, 1, 20, 1666, 3333},
        {"xero", 4, 1, 15, 1250, 2500},
        {"xero", 5, 1, 12, 1000, 2000},
        {"xero", 6, 0, 10, 833, 1666}, /* 5 calls in progress cannot be shared by 6: no calls without Redis */
        /* Stripe: 10 in progress, 25 a second; fallback 1 in progress and a quarter of the window */
        {"stripe", 1, 1, 6, 0, 0},
        {"stripe", 5, 1, 5, 0, 0},
        {"stripe", 30, 0, 1, 0, 0}, /* 25 a second cannot be shared by 30 */
        /* GoCardless: 10 in progress, 1,000 a minute */
        {"gocardless", 1, 1, 250, 0, 0},
        {"gocardless", 8, 1, 125, 0, 0},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        gw_config_t cfg = make_config(NULL);
        cfg.stripe_limit_concurrent = 10;
        cfg.stripe_limit_second = 25;
        cfg.gocardless_limit_concurrent = 10;
        cfg.gocardless_limit_minute = 1000;
        cfg.instances = cases[i].instances;
        gw_quota_limits_t l;
        assert_int_equal(gw_quota_limits_of(&cfg, cases[i].provider, &l), 0);
        if (l.fallback_concurrent != cases[i].concurrent || l.fallback_per_window != cases[i].per_window ||
            l.fallback_day != cases[i].day || l.fallback_app_per_window != cases[i].app)
            fail_msg("%s with %d instances: fallback %d/%d/%d/%d, expected %d/%d/%d/%d", cases[i].provider,
                     cases[i].instances, l.fallback_concurrent, l.fallback_per_window, l.fallback_day,
                     l.fallback_app_per_window, cases[i].concurrent, cases[i].per_window, cases[i].day, cases[i].app);
    }
}

/* Takes call slots of tenant from q1 and q2 in turn, never giving one back, until both are denied; returns how many
 * were granted and leaves them in slots (room for max). */
static int take_all(gw_quota_t *q1, gw_quota_t *q2, const char *tenant, gw_quota_slot_t *slots, int max,
                    gw_quota_t **owners, enum gw_quota_limit *why)
{
    int n = 0;
    bool denied1 = false, denied2 = false;
    uint64_t wait;
    while (!(denied1 && denied2) && n != max) {
        gw_quota_t *q = n % 2 == 0 && !denied1 ? q1 : !denied2 ? q2 : q1;
        gw_quota_slot_t slot;
        if (gw_quota_acquire(q, tenant, &slot, &wait) == 0) {
            slots[n] = slot;
            owners[n++] = q;
        } else {
            *why = slot.limit;
            *(q == q1 ? &denied1 : &denied2) = true;
        }
    }
    return n;
}

/* Acquires and releases at once on q1 and q2 in turn until both are denied; returns the calls made. */
static int call_all(gw_quota_t *q1, gw_quota_t *q2, const char *tenant, int max, enum gw_quota_limit *why)
{
    int n = 0;
    bool denied1 = false, denied2 = false;
    gw_quota_slot_t slot;
    uint64_t wait;
    for (int i = 0; !(denied1 && denied2) && n != max; ++i) {
        gw_quota_t *q = i % 2 == 0 && !denied1 ? q1 : !denied2 ? q2 : q1;
        if (call_once(q, tenant, &slot, &wait) == 0) {
            ++n;
        } else {
            *why = slot.limit;
            *(q == q1 ? &denied1 : &denied2) = true;
        }
    }
    return n;
}

/*
 * Two gw_quota_t stand for the two instances of a fleet (SETTLED_INSTANCES=2) that cannot reach their Redis: alone,
 * each keeps to half of every limit, so together they never exceed one: calls in progress, the window and the day
 * of a tenant, and the app's window. The fallback limits are set as high as the provider's, so each instance on
 * its own would take all of it.
 */
static void test_fallback_instances_never_exceed_the_limits_together(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", unused_port());
    for (int with_url = 0; with_url != 2; ++with_url) {
        gw_config_t cfg = make_config(with_url ? url : NULL); /* Redis down, or none at all */
        cfg.instances = 2;
        cfg.xero_limit_concurrent = 4;
        cfg.xero_limit_minute = 6;
        cfg.xero_limit_day = 10;
        cfg.xero_limit_app_minute = 14;
        cfg.quota_fallback_concurrent = 4;
        cfg.quota_fallback_minute = 6;
        gw_quota_t *q1 = make_quota(&cfg, 300, 0, NULL), *q2 = make_quota(&cfg, 300, 0, NULL);
        gw_quota_slot_t slots[64];
        gw_quota_t *owners[64];
        enum gw_quota_limit why = GW_QUOTA_LIMIT_NONE;

        /* calls in progress for one tenant: 4 in all, 2 each */
        int held = take_all(q1, q2, "tenant-i", slots, 64, owners, &why);
        assert_true(gw_quota_is_fallback(q1) && gw_quota_is_fallback(q2));
        if (held != 4)
            fail_msg("%d calls in progress for one tenant on two instances, the limit is 4", held);
        assert_int_equal(why, GW_QUOTA_LIMIT_CONCURRENT);
        for (int i = 0; i != held; ++i)
            gw_quota_release(owners[i], &slots[i]);

        /* the window of that tenant: those 4, and 2 more (6 in all, 3 each) */
        int calls = call_all(q1, q2, "tenant-i", 64, &why);
        if (held + calls != 6)
            fail_msg("%d calls in one window for one tenant on two instances, the limit is 6", held + calls);
        assert_int_equal(why, GW_QUOTA_LIMIT_MINUTE);

        /* the next window: 4 more calls make the day's 10 (5 each) */
        sleep_ms(320);
        calls += call_all(q1, q2, "tenant-i", 64, &why);
        if (held + calls != 10)
            fail_msg("%d calls in one day for one tenant on two instances, the limit is 10", held + calls);
        assert_int_equal(why, GW_QUOTA_LIMIT_DAY);

        /* the app's window, over many tenants (each within its own limits): 14 in all, 7 each */
        sleep_ms(320);
        int app = 0, denied = 0;
        for (int t = 0; t != 64 && denied != 3; ++t) {
            char tenant[32];
            snprintf(tenant, sizeof(tenant), "tenant-app-%d", t);
            gw_quota_t *q = t % 2 == 0 && !(denied & 1) ? q1 : !(denied & 2) ? q2 : q1;
            gw_quota_slot_t slot;
            uint64_t wait;
            if (call_once(q, tenant, &slot, &wait) == 0) {
                ++app;
            } else {
                assert_int_equal(slot.limit, GW_QUOTA_LIMIT_APP_MINUTE);
                denied |= q == q1 ? 1 : 2;
            }
        }
        if (app != 14)
            fail_msg("%d calls in one window for the app on two instances, the limit is 14", app);
        gw_quota_destroy(q1);
        gw_quota_destroy(q2);
    }

    /* more instances than the 4 calls in progress: none gets a share, and a denial says to ask again in a second */
    gw_config_t many = make_config(NULL);
    many.instances = 5;
    many.xero_limit_concurrent = 4;
    gw_quota_t *q = make_quota(&many, 300, 0, NULL);
    gw_quota_slot_t slot;
    uint64_t wait;
    assert_int_equal(gw_quota_acquire(q, "tenant-none", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_CONCURRENT);
    assert_int_equal(wait, 1000);
    gw_quota_destroy(q);
}

/* A TCP proxy to the test Redis that can be switched on and off, to make Redis vanish and come back. */
typedef struct st_proxy_t {
    int port, upstream_port;
    char upstream_host[64];
    pthread_t thread;
    atomic_bool stop;
} proxy_t;

static int connect_upstream(const proxy_t *p)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->upstream_port)};
    inet_pton(AF_INET, strcmp(p->upstream_host, "localhost") == 0 ? "127.0.0.1" : p->upstream_host, &sin.sin_addr);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *proxy_main(void *arg)
{
    proxy_t *p = arg;
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sin = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)p->port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(lfd, 16) != 0)
        abort();
    enum { MAXFD = 64 };
    struct pollfd fds[MAXFD];
    int peer[MAXFD];
    size_t n = 1;
    fds[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    while (!atomic_load(&p->stop)) {
        if (poll(fds, n, 20) <= 0)
            continue;
        if (fds[0].revents & POLLIN) {
            int c = accept(lfd, NULL, NULL), u = c >= 0 ? connect_upstream(p) : -1;
            if (c >= 0 && u >= 0 && n + 2 <= MAXFD) {
                fds[n] = (struct pollfd){.fd = c, .events = POLLIN}, peer[n++] = u;
                fds[n] = (struct pollfd){.fd = u, .events = POLLIN}, peer[n++] = c;
            } else {
                if (c >= 0)
                    close(c);
                if (u >= 0)
                    close(u);
            }
        }
        for (size_t i = 1; i < n; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[16384];
            ssize_t r = read(fds[i].fd, buf, sizeof(buf));
            if (r > 0 && write(peer[i], buf, (size_t)r) == r)
                continue;
            /* one side closed: close both */
            for (size_t j = 1; j < n; ++j)
                if (fds[j].fd == peer[i])
                    fds[j].fd = -1;
            close(peer[i]);
            close(fds[i].fd);
            fds[i].fd = -1;
        }
    }
    for (size_t i = 0; i < n; ++i)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    return NULL;
}

static void proxy_start(proxy_t *p)
{
    atomic_store(&p->stop, false);
    assert_int_equal(pthread_create(&p->thread, NULL, proxy_main, p), 0);
    sleep_ms(50);
}

static void proxy_stop(proxy_t *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
}

static void test_fallback_and_back(void **state)
{
    char *host, *pw, url[256], prefix[64];
    int db;
    proxy_t p = {.port = unused_port()};
    assert_int_equal(gw_redis_parse_url(redis_url(), &host, &p.upstream_port, &pw, &db), 0);
    snprintf(p.upstream_host, sizeof(p.upstream_host), "%s", host);
    snprintf(url, sizeof(url), "redis://%s%s%s127.0.0.1:%d/%d", pw != NULL ? ":" : "", pw != NULL ? pw : "",
             pw != NULL ? "@" : "", p.port, db);
    free(host);
    free(pw);
    fresh_prefix(prefix, sizeof(prefix));
    gw_config_t cfg = make_config(url);
    gw_quota_t *q = make_quota(&cfg, 1000, 0, prefix);
    gw_quota_slot_t slot, local;
    uint64_t wait;

    /* Redis unreachable: local limits */
    assert_int_equal(gw_quota_acquire(q, "tenant-fb", &local, &wait), 0);
    assert_true(gw_quota_is_fallback(q));
    assert_int_equal(gw_quota_acquire(q, "tenant-fb", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_CONCURRENT);

    /* Redis appears: within a second the next call uses it again, with its limits (5 in progress) */
    proxy_start(&p);
    sleep_ms(1050);
    gw_quota_slot_t slots[5];
    for (int i = 0; i != 4; ++i)
        assert_int_equal(gw_quota_acquire(q, "tenant-fb", &slots[i], &wait), 0);
    assert_false(gw_quota_is_fallback(q));
    gw_quota_release(q, &local); /* a fallback slot given back after the switch */
    assert_int_equal(gw_quota_acquire(q, "tenant-fb", &slots[4], &wait), 0);
    assert_int_equal(gw_quota_acquire(q, "tenant-fb", &slot, &wait), 1);
    assert_int_equal(slot.limit, GW_QUOTA_LIMIT_CONCURRENT);
    for (int i = 0; i != 5; ++i)
        gw_quota_release(q, &slots[i]);

    /* Redis vanishes: the next call falls back at once */
    proxy_stop(&p);
    uint64_t t0 = mono_ms();
    assert_int_equal(gw_quota_acquire(q, "tenant-fb", &slot, &wait), 0);
    assert_true(mono_ms() - t0 < 600);
    assert_true(gw_quota_is_fallback(q));
    gw_quota_release(q, &slot);
    gw_quota_destroy(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_tenant),
        cmocka_unit_test(test_minute_limit),
        cmocka_unit_test(test_window_is_rolling),
        cmocka_unit_test(test_no_window_at_xero_exceeds_the_limit),
        cmocka_unit_test(test_concurrency_limit),
        cmocka_unit_test(test_crashed_holder_slot_expires),
        cmocka_unit_test(test_day_limit),
        cmocka_unit_test(test_app_limit_across_tenants),
        cmocka_unit_test(test_429_blocks_every_instance),
        cmocka_unit_test(test_min_remaining_zero_blocks_until_window_rolls),
        cmocka_unit_test(test_day_remaining_zero_blocks_until_next_utc_day),
        cmocka_unit_test(test_threads_never_exceed_concurrency),
        cmocka_unit_test(test_fallback_when_redis_is_unreachable),
        cmocka_unit_test(test_fallback_and_back),
        cmocka_unit_test(test_peek_reads_what_is_left),
        cmocka_unit_test(test_fallback_limits_are_shares),
        cmocka_unit_test(test_fallback_instances_never_exceed_the_limits_together),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
