/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/infra/redis.c: URL parsing, and the h2o adapter against a real Redis (SETTLED_TEST_REDIS_URL),
 * also given by a host name, which is never looked up on the loop's thread: this file defines getaddrinfo itself
 * to see where names are looked up (and to delay them, and to make names under .test unknown); everything goes on
 * to the C library.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "redis.h"
#include "redis_sync.h"

static pthread_t main_thread; /* the loop's */
static atomic_int name_lookups, name_lookups_on_loop, name_delay_ms;

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    unsigned char buf[16];
    if (node != NULL && inet_pton(AF_INET, node, buf) != 1 && inet_pton(AF_INET6, node, buf) != 1) {
        atomic_fetch_add(&name_lookups, 1);
        if (pthread_equal(pthread_self(), main_thread))
            atomic_fetch_add(&name_lookups_on_loop, 1);
        int ms = atomic_load(&name_delay_ms);
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
        size_t n = strlen(node);
        if (n > 5 && strcmp(node + n - 5, ".test") == 0)
            return EAI_NONAME;
    }
    int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
        (int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))dlsym(RTLD_NEXT,
                                                                                                "getaddrinfo");
    return real(node, service, hints, res);
}

static void test_parse_url(void **state)
{
    char *host, *pw;
    int port, db;
    assert_int_equal(gw_redis_parse_url("redis://127.0.0.1:6390/2", &host, &port, &pw, &db), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6390);
    assert_int_equal(db, 2);
    assert_null(pw);
    free(host);
    assert_int_equal(gw_redis_parse_url("redis://:s3cret@localhost", &host, &port, &pw, &db), 0);
    assert_string_equal(host, "localhost");
    assert_int_equal(port, 6379);
    assert_string_equal(pw, "s3cret");
    assert_int_equal(db, 0);
    free(host);
    free(pw);
    assert_int_equal(gw_redis_parse_url("redis://user:pw@h:1/", &host, &port, &pw, &db), 0);
    assert_string_equal(pw, "pw");
    free(host);
    free(pw);
    assert_int_equal(gw_redis_parse_url("http://h:1", &host, &port, &pw, &db), -1);
    assert_int_equal(gw_redis_parse_url("redis://h:0", &host, &port, &pw, &db), -1);
    assert_int_equal(gw_redis_parse_url("redis://h:99999", &host, &port, &pw, &db), -1);
    assert_int_equal(gw_redis_parse_url("redis://h:12x", &host, &port, &pw, &db), -1);
    assert_int_equal(gw_redis_parse_url("redis://", &host, &port, &pw, &db), -1);
    assert_int_equal(gw_redis_parse_url("redis://h/notanumber", &host, &port, &pw, &db), -1);
}

static void on_exists(void *data, int result)
{
    int *answer = data;
    assert_int_equal(*answer, 99); /* once */
    *answer = result;
}

static void test_live_ping(void **state)
{
    const char *url = getenv("SETTLED_TEST_REDIS_URL");
    if (url == NULL || *url == '\0')
        fail_msg("SETTLED_TEST_REDIS_URL is not set: run the tests through deploy/test.sh");
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_redis_t *r = gw_redis_create(loop, url);
    assert_non_null(r);
    for (int i = 0; i != 300 && !gw_redis_is_up(r); ++i)
        h2o_evloop_run(loop, 10);
    assert_true(gw_redis_is_up(r));

    /* EXISTS: 0 for a key that is not there, and the callback fires once */
    int answer = 99;
    char key[64];
    snprintf(key, sizeof(key), "settled:test:exists:%d", (int)getpid());
    assert_int_equal(gw_redis_exists(r, key, strlen(key), on_exists, &answer), 0);
    for (int i = 0; i != 300 && answer == 99; ++i)
        h2o_evloop_run(loop, 10);
    assert_int_equal(answer, 0);
    assert_int_equal(gw_redis_exists(NULL, key, strlen(key), on_exists, &answer), -1); /* not configured */

    /* EXISTS of several keys (the guard's jti and user keys): 1 when any of them is there */
    char other[64];
    snprintf(other, sizeof(other), "settled:test:exists:%d:b", (int)getpid());
    gw_redis_sync_t *rs = gw_redis_sync_create(url, 2000, 2000);
    long long out;
    const char *set[] = {"SET", other, "1", "EX", "60"}, *del[] = {"DEL", other};
    assert_int_equal(gw_redis_sync_command(rs, 5, set, &out, NULL), 0);
    const char *keys[] = {key, other};
    size_t lens[] = {strlen(key), strlen(other)};
    answer = 99;
    assert_int_equal(gw_redis_exists_any(r, keys, lens, 2, on_exists, &answer), 0);
    for (int i = 0; i != 300 && answer == 99; ++i)
        h2o_evloop_run(loop, 10);
    assert_int_equal(answer, 1);
    answer = 99;
    assert_int_equal(gw_redis_exists_any(r, keys, lens, 1, on_exists, &answer), 0); /* the first alone: absent */
    for (int i = 0; i != 300 && answer == 99; ++i)
        h2o_evloop_run(loop, 10);
    assert_int_equal(answer, 0);
    assert_int_equal(gw_redis_exists_any(r, keys, lens, 0, on_exists, &answer), -1);
    assert_int_equal(gw_redis_exists_any(r, keys, lens, GW_REDIS_EXISTS_MAX + 1, on_exists, &answer), -1);
    assert_int_equal(gw_redis_sync_command(rs, 2, del, &out, NULL), 0);
    gw_redis_sync_destroy(rs);
    gw_redis_destroy(r);

    /* nothing listens on port 1: the connection reports down and the loop goes on */
    r = gw_redis_create(loop, "redis://127.0.0.1:1");
    for (int i = 0; i != 30; ++i)
        h2o_evloop_run(loop, 10);
    assert_false(gw_redis_is_up(r));
    answer = 99;
    assert_int_equal(gw_redis_exists(r, key, strlen(key), on_exists, &answer), -1); /* down: no callback */
    assert_int_equal(answer, 99);
    gw_redis_destroy(r);
    h2o_evloop_destroy(loop);
}

/* The test Redis given as localhost, with a DNS that takes 300 ms: it comes up, the name was looked up off the
 * loop's thread, and the loop went round meanwhile. A name that does not resolve stays down and is logged once. */
static void test_host_name_resolved_off_the_loop(void **state)
{
    const char *url = getenv("SETTLED_TEST_REDIS_URL");
    if (url == NULL || *url == '\0')
        fail_msg("SETTLED_TEST_REDIS_URL is not set: run the tests through deploy/test.sh");
    char *host, *pw, named[512];
    int port, db;
    assert_int_equal(gw_redis_parse_url(url, &host, &port, &pw, &db), 0);
    snprintf(named, sizeof(named), "redis://%s%s%slocalhost:%d/%d", pw != NULL ? ":" : "", pw != NULL ? pw : "",
             pw != NULL ? "@" : "", port, db);
    free(host);
    free(pw);
    main_thread = pthread_self();
    atomic_store(&name_delay_ms, 300);
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_redis_t *r = gw_redis_create(loop, named);
    assert_non_null(r);
    int rounds = 0;
    for (; rounds != 300 && !gw_redis_is_up(r); ++rounds)
        h2o_evloop_run(loop, 10);
    assert_true(gw_redis_is_up(r));
    if (atomic_load(&name_lookups_on_loop) != 0)
        fail_msg("%d of %d lookups of localhost ran on the loop's thread", atomic_load(&name_lookups_on_loop),
                 atomic_load(&name_lookups));
    assert_true(atomic_load(&name_lookups) >= 1);
    if (rounds < 20)
        fail_msg("the loop went round %d times in 10 ms steps while a 300 ms lookup ran", rounds);
    gw_redis_destroy(r);

    /* a name that does not resolve: down, retried every second, one log line */
    atomic_store(&name_delay_ms, 0);
    char path[] = "/tmp/settled-redis-log.XXXXXX";
    int fd = mkstemp(path), saved = dup(2), before = atomic_load(&name_lookups);
    assert_true(fd >= 0 && saved >= 0);
    unlink(path);
    dup2(fd, 2);
    r = gw_redis_create(loop, "redis://cache-nowhere.test:6379");
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do { /* 2.5 s: h2o_evloop_run returns early whenever something happened */
        h2o_evloop_run(loop, 10);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 2500);
    assert_false(gw_redis_is_up(r));
    gw_redis_destroy(r);
    dup2(saved, 2);
    close(saved);
    char text[8192] = "";
    ssize_t len = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    text[len > 0 ? len : 0] = '\0';
    int lines = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
        lines += strstr(line, "cache-nowhere.test") != NULL;
    if (atomic_load(&name_lookups) - before < 2)
        fail_msg("%d lookups in 2.5 s: the connection should retry", atomic_load(&name_lookups) - before);
    if (lines != 1)
        fail_msg("%d log lines name cache-nowhere.test, expected 1:\n%s", lines, text);
    h2o_evloop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse_url), cmocka_unit_test(test_live_ping),
                                       cmocka_unit_test(test_host_name_resolved_off_the_loop)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
