/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/infra/resolve.c: lookups run on a thread while the loop keeps running (a slow DNS never stalls
 * it), one lookup serves every request that may share it, a request after a failure gets a new lookup (a name
 * that moved is followed), a name that does not resolve is logged once, and a resolver destroyed in the middle of
 * a lookup leaks nothing and crashes nothing. This file defines getaddrinfo itself, so resolve.c's calls land here:
 * names under .test get the answers the tests set, after the delay they set; any other name goes to the C library.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "resolve.h"

/* --- the fake DNS -------------------------------------------------------------------------------------------- */

static pthread_mutex_t dns_mutex = PTHREAD_MUTEX_INITIALIZER;
static char dns_answer[256][64]; /* per test name: comma-separated addresses, or "" for "no such name" */
static char dns_name[256][64];
static size_t dns_n;
static atomic_int dns_delay_ms, dns_calls, dns_calls_on_main;
static pthread_t main_thread;

static void dns_set(const char *name, const char *addrs)
{
    pthread_mutex_lock(&dns_mutex);
    size_t i = 0;
    while (i != dns_n && strcmp(dns_name[i], name) != 0)
        ++i;
    if (i == dns_n)
        snprintf(dns_name[dns_n++], sizeof(dns_name[0]), "%s", name);
    snprintf(dns_answer[i], sizeof(dns_answer[0]), "%s", addrs);
    pthread_mutex_unlock(&dns_mutex);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static char fake_marker[] = "fake"; /* the ai_canonname of the answers made here */

static bool is_test_name(const char *node)
{
    size_t n = node != NULL ? strlen(node) : 0;
    return n > 5 && strcmp(node + n - 5, ".test") == 0;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    if (!is_test_name(node)) {
        int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
            (int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))dlsym(RTLD_NEXT,
                                                                                                    "getaddrinfo");
        return real(node, service, hints, res);
    }
    atomic_fetch_add(&dns_calls, 1);
    if (pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&dns_calls_on_main, 1);
    sleep_ms(atomic_load(&dns_delay_ms));
    char addrs[64] = "";
    pthread_mutex_lock(&dns_mutex);
    for (size_t i = 0; i != dns_n; ++i)
        if (strcmp(dns_name[i], node) == 0)
            snprintf(addrs, sizeof(addrs), "%s", dns_answer[i]);
    pthread_mutex_unlock(&dns_mutex);
    *res = NULL;
    struct addrinfo **tail = res;
    for (char *save = NULL, *a = strtok_r(addrs, ",", &save); a != NULL; a = strtok_r(NULL, ",", &save)) {
        struct addrinfo *ai = calloc(1, sizeof(*ai) + sizeof(struct sockaddr_in6));
        struct sockaddr_in6 *sa = (struct sockaddr_in6 *)(ai + 1);
        ai->ai_addr = (struct sockaddr *)sa;
        ai->ai_socktype = SOCK_STREAM;
        ai->ai_canonname = fake_marker;
        if (inet_pton(AF_INET, a, &((struct sockaddr_in *)sa)->sin_addr) == 1) {
            ai->ai_family = sa->sin6_family = AF_INET;
            ai->ai_addrlen = sizeof(struct sockaddr_in);
        } else {
            if (inet_pton(AF_INET6, a, &sa->sin6_addr) != 1)
                abort(); /* a mistake in a test's answer (and this may run off the main thread) */
            ai->ai_family = sa->sin6_family = AF_INET6;
            ai->ai_addrlen = sizeof(struct sockaddr_in6);
        }
        *tail = ai;
        tail = &ai->ai_next;
    }
    return *res != NULL ? 0 : EAI_NONAME;
}

void freeaddrinfo(struct addrinfo *res)
{
    if (res != NULL && res->ai_canonname != fake_marker) {
        void (*real)(struct addrinfo *) = (void (*)(struct addrinfo *))dlsym(RTLD_NEXT, "freeaddrinfo");
        real(res);
        return;
    }
    while (res != NULL) {
        struct addrinfo *next = res->ai_next;
        free(res);
        res = next;
    }
}

/* --- helpers ------------------------------------------------------------------------------------------------- */

typedef struct st_waiter_t {
    gw_resolve_req_t req;
    int fired;
    uint64_t started_at;
    size_t naddrs;
    char first[INET6_ADDRSTRLEN];
    char error[200];
} waiter_t;

static void on_answer(gw_resolve_req_t *req, const gw_resolved_t *answer)
{
    waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, req, req);
    ++w->fired;
    w->started_at = answer->started_at;
    w->naddrs = answer->naddrs;
    snprintf(w->first, sizeof(w->first), "%s", answer->naddrs != 0 ? answer->addrs[0].host : "");
    snprintf(w->error, sizeof(w->error), "%s", answer->error != NULL ? answer->error : "");
}

static h2o_evloop_t *loop;

static void run_until_fired(waiter_t *w)
{
    for (int i = 0; i != 300 && w->fired == 0; ++i)
        h2o_evloop_run(loop, 10);
    assert_int_equal(w->fired, 1);
}

static void run_ms(int ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        h2o_evloop_run(loop, 10);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

/* Runs the loop until at least one ms of loop time has gone by, so that a failure and a lookup after it are
 * told apart. */
static void next_ms(void)
{
    uint64_t t = h2o_now(loop);
    while (h2o_now(loop) == t) {
        sleep_ms(2);
        h2o_evloop_run(loop, 0);
    }
}

/* A repeating 10 ms timer: how often the loop went round while a lookup ran. */
static h2o_timeout_t tick_timeout;
static h2o_timeout_entry_t tick_entry;
static int ticks;

static void on_tick(h2o_timeout_entry_t *entry)
{
    ++ticks;
    h2o_timeout_link(loop, &tick_timeout, &tick_entry);
}

/* Counts the lines of stderr written while fn runs that contain needle. */
static int count_log_lines(void (*fn)(void *), void *arg, const char *needle)
{
    char path[] = "/tmp/settled-resolve-log.XXXXXX";
    int fd = mkstemp(path), saved = dup(2);
    assert_true(fd >= 0 && saved >= 0);
    unlink(path);
    dup2(fd, 2);
    fn(arg);
    dup2(saved, 2);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)len + 1);
    assert_int_equal(pread(fd, text, (size_t)len, 0), len);
    close(fd);
    int n = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
        n += strstr(line, needle) != NULL;
    free(text);
    return n;
}

static int setup(void **state)
{
    main_thread = pthread_self();
    loop = h2o_evloop_create();
    h2o_timeout_init(loop, &tick_timeout, 10);
    tick_entry = (h2o_timeout_entry_t){.cb = on_tick};
    return 0;
}

/* --- tests --------------------------------------------------------------------------------------------------- */

static void test_numeric(void **state)
{
    assert_true(gw_resolve_is_numeric("127.0.0.1"));
    assert_true(gw_resolve_is_numeric("::1"));
    assert_true(gw_resolve_is_numeric("2001:db8::5"));
    assert_false(gw_resolve_is_numeric("localhost"));
    assert_false(gw_resolve_is_numeric("db.example"));
    assert_false(gw_resolve_is_numeric("/run/postgresql"));
    assert_false(gw_resolve_is_numeric(""));
}

/* A lookup that takes 300 ms runs on another thread: the loop goes round all the while. */
static void test_slow_lookup_does_not_stall_the_loop(void **state)
{
    dns_set("slow.test", "10.0.0.7");
    atomic_store(&dns_delay_ms, 300);
    atomic_store(&dns_calls, 0);
    atomic_store(&dns_calls_on_main, 0);
    const char *names[] = {"slow.test"};
    gw_resolver_t *r = gw_resolver_create(loop, "TEST_URL", names, 1, false);
    waiter_t w = {0};
    ticks = 0;
    h2o_timeout_link(loop, &tick_timeout, &tick_entry);
    assert_null(gw_resolve(r, 0, &w.req, on_answer));
    run_until_fired(&w);
    h2o_timeout_unlink(&tick_entry);
    assert_string_equal(w.first, "10.0.0.7");
    assert_int_equal(atomic_load(&dns_calls), 1);
    assert_int_equal(atomic_load(&dns_calls_on_main), 0); /* never on the loop's thread */
    if (ticks < 15)
        fail_msg("the loop went round %d times in 10 ms steps during a 300 ms lookup", ticks);
    atomic_store(&dns_delay_ms, 0);
    gw_resolver_destroy(r);
}

/* One lookup answers every request waiting at the time, and its answer is cached for the requests that may share
 * it; a request made after a failure gets a new lookup, which sees the name's new address. */
static void test_cache_and_re_resolution(void **state)
{
    dns_set("moving.test", "10.0.0.1");
    atomic_store(&dns_calls, 0);
    const char *names[] = {"moving.test"};
    gw_resolver_t *r = gw_resolver_create(loop, "TEST_URL", names, 1, false);
    waiter_t a = {0}, b = {0}, c = {0};
    assert_null(gw_resolve(r, 0, &a.req, on_answer));
    assert_null(gw_resolve(r, 0, &b.req, on_answer));
    run_until_fired(&a);
    assert_int_equal(b.fired, 1);
    assert_int_equal(atomic_load(&dns_calls), 1);
    assert_string_equal(b.first, "10.0.0.1");

    /* cached: answered at once, no lookup, no callback */
    const gw_resolved_t *cached = gw_resolve(r, 0, &c.req, on_answer);
    assert_non_null(cached);
    assert_string_equal(cached->addrs[0].host, "10.0.0.1");
    assert_int_equal(atomic_load(&dns_calls), 1);

    /* the name moves (a failover), a connection fails: its reconnect asks for a lookup after the failure */
    dns_set("moving.test", "10.0.0.2");
    next_ms();
    uint64_t failed_at = h2o_now(loop);
    next_ms();
    assert_null(gw_resolve(r, failed_at, &c.req, on_answer));
    run_until_fired(&c);
    assert_string_equal(c.first, "10.0.0.2");
    assert_true(c.started_at >= failed_at);
    assert_int_equal(atomic_load(&dns_calls), 2);
    /* an answer from before the failure is not good enough even while that lookup is still running */
    waiter_t d = {0}, e = {0};
    atomic_store(&dns_delay_ms, 100);
    next_ms();
    assert_null(gw_resolve(r, h2o_now(loop), &d.req, on_answer)); /* starts lookup 3 */
    dns_set("moving.test", "10.0.0.3");
    next_ms();
    assert_null(gw_resolve(r, h2o_now(loop), &e.req, on_answer)); /* lookup 3 started too early for it */
    run_until_fired(&d);
    run_until_fired(&e);
    assert_true(e.started_at > d.started_at);
    assert_string_equal(e.first, "10.0.0.3");
    assert_int_equal(atomic_load(&dns_calls), 4);
    atomic_store(&dns_delay_ms, 0);

    /* a cancelled request is never called */
    waiter_t f = {0};
    next_ms();
    assert_null(gw_resolve(r, h2o_now(loop), &f.req, on_answer));
    gw_resolve_cancel(&f.req);
    run_ms(100);
    assert_int_equal(f.fired, 0);
    gw_resolver_destroy(r);
}

/* Addresses come per name in order, IPv4 first with prefer_ipv4; a name that does not resolve leaves the others. */
static void test_addresses_and_partial_failure(void **state)
{
    dns_set("dual.test", "::1,127.0.0.1,127.0.0.1");
    dns_set("other.test", "10.1.1.1");
    const char *names[] = {"dual.test", "nowhere.test", "other.test"};
    for (int prefer = 0; prefer != 2; ++prefer) {
        gw_resolver_t *r = gw_resolver_create(loop, "TEST_URL", names, 3, prefer);
        waiter_t w = {0};
        assert_null(gw_resolve(r, 0, &w.req, on_answer));
        run_until_fired(&w);
        const gw_resolved_t *a = gw_resolve(r, 0, &w.req, on_answer);
        assert_non_null(a);
        assert_int_equal(a->naddrs, 3); /* the duplicate is dropped */
        assert_string_equal(a->addrs[0].host, prefer ? "127.0.0.1" : "::1");
        assert_string_equal(a->addrs[1].host, prefer ? "::1" : "127.0.0.1");
        assert_int_equal(a->addrs[0].name, 0);
        assert_string_equal(a->addrs[2].host, "10.1.1.1");
        assert_int_equal(a->addrs[2].name, 2);
        assert_non_null(a->error);
        assert_non_null(strstr(a->error, "nowhere.test"));
        gw_resolver_destroy(r);
    }
}

static gw_resolver_t *fail_r;

static void fail_five_times(void *arg)
{
    for (int i = 0; i != 5; ++i) {
        waiter_t w = {0};
        next_ms();
        assert_null(gw_resolve(fail_r, h2o_now(loop), &w.req, on_answer));
        run_until_fired(&w);
        assert_int_equal(w.naddrs, 0);
        assert_non_null(strstr(w.error, "cannot resolve nx.test"));
    }
}

static void resolve_once(void *arg)
{
    waiter_t w = {0};
    next_ms();
    assert_null(gw_resolve(fail_r, h2o_now(loop), &w.req, on_answer));
    run_until_fired(&w);
    assert_int_equal(w.naddrs, 1);
}

/* A name that does not resolve is logged once however often it is retried, and once more when it resolves. Two
 * resolvers (two loops) of the same setting share the one line. */
static void test_failure_is_logged_once(void **state)
{
    dns_set("nx.test", "");
    const char *names[] = {"nx.test"};
    fail_r = gw_resolver_create(loop, "TEST_URL", names, 1, false);
    assert_int_equal(count_log_lines(fail_five_times, NULL, "nx.test"), 1);
    gw_resolver_t *first = fail_r;
    fail_r = gw_resolver_create(loop, "TEST_URL", names, 1, false); /* another loop's */
    assert_int_equal(count_log_lines(fail_five_times, NULL, "nx.test"), 0);
    dns_set("nx.test", "10.9.9.9");
    assert_int_equal(count_log_lines(resolve_once, NULL, "nx.test resolves again"), 1);
    dns_set("nx.test", "");
    assert_int_equal(count_log_lines(fail_five_times, NULL, "cannot resolve host nx.test"), 1);
    dns_set("nx.test", "10.9.9.9");
    assert_int_equal(count_log_lines(resolve_once, NULL, "resolves again"), 1);
    gw_resolver_destroy(fail_r);
    gw_resolver_destroy(first);
}

/* Destroyed while its lookup runs, or after the answer arrived but before the loop took it: nothing is called,
 * nothing leaks (ASan), and the abandoned thread finishes on its own. */
static void test_destroy_during_a_lookup(void **state)
{
    dns_set("gone.test", "10.0.0.9");
    const char *names[] = {"gone.test"};
    atomic_store(&dns_delay_ms, 150);
    gw_resolver_t *r = gw_resolver_create(loop, "TEST_URL", names, 1, false);
    waiter_t w = {0};
    assert_null(gw_resolve(r, 0, &w.req, on_answer));
    gw_resolver_destroy(r); /* the thread is in getaddrinfo */

    r = gw_resolver_create(loop, "TEST_URL", names, 1, false);
    assert_null(gw_resolve(r, 0, &w.req, on_answer));
    sleep_ms(300);          /* the answer is sent, the loop has not run */
    gw_resolver_destroy(r); /* takes the message back */
    atomic_store(&dns_delay_ms, 0);
    sleep_ms(100);
    run_ms(50);
    assert_int_equal(w.fired, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numeric),
        cmocka_unit_test(test_slow_lookup_does_not_stall_the_loop),
        cmocka_unit_test(test_cache_and_re_resolution),
        cmocka_unit_test(test_addresses_and_partial_failure),
        cmocka_unit_test(test_failure_is_logged_once),
        cmocka_unit_test(test_destroy_during_a_lookup),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
