/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/infra/redis_sync.c against a real Redis (SETTLED_TEST_REDIS_URL): commands and reply shapes,
 * EVALSHA with its EVAL fallback after SCRIPT FLUSH, AUTH/SELECT, the command timeout against a server that
 * never answers, the once-a-second reconnect, and the silent retry when the server dropped an idle connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "redis.h"
#include "redis_sync.h"

static const char *redis_url(void)
{
    const char *url = getenv("SETTLED_TEST_REDIS_URL");
    if (url == NULL || *url == '\0')
        fail_msg("SETTLED_TEST_REDIS_URL is not set: run the tests through deploy/test.sh");
    return url;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A listening socket on 127.0.0.1 that never accepts: connects succeed (the kernel's backlog), nothing answers. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* A port nothing listens on (bound once, then closed). */
static int dead_port(void)
{
    int port, fd = silent_listener(&port);
    close(fd);
    return port;
}

/* The test Redis URL with its database replaced by db. */
static void url_with_db(char *buf, size_t len, int db)
{
    char *host, *pw;
    int port, olddb;
    assert_int_equal(gw_redis_parse_url(redis_url(), &host, &port, &pw, &olddb), 0);
    snprintf(buf, len, "redis://%s%s%s%s:%d/%d", pw != NULL ? ":" : "", pw != NULL ? pw : "", pw != NULL ? "@" : "",
             host, port, db);
    free(host);
    free(pw);
}

static void test_create_rejects_bad_arguments(void **state)
{
    assert_null(gw_redis_sync_create("http://127.0.0.1:6379", 100, 100));
    assert_null(gw_redis_sync_create("redis://127.0.0.1:0", 100, 100));
    assert_null(gw_redis_sync_create("redis://127.0.0.1:6379", 0, 100));
    assert_null(gw_redis_sync_create("redis://127.0.0.1:6379", 100, -1));
    assert_null(gw_redis_sync_create(NULL, 100, 100));
    gw_redis_sync_t *r = gw_redis_sync_create("redis://127.0.0.1:6379", 100, 100);
    assert_non_null(r);
    assert_false(gw_redis_sync_is_connected(r)); /* lazy: nothing connected yet */
    gw_redis_sync_destroy(r);
    gw_redis_sync_destroy(NULL);
}

static void test_commands_and_reply_shapes(void **state)
{
    gw_redis_sync_t *r = gw_redis_sync_create(redis_url(), 500, 500);
    assert_non_null(r);
    long long v = -1;
    const char *err = NULL;
    char key[64];
    snprintf(key, sizeof(key), "test:redis_sync:%d:n", (int)getpid());

    assert_int_equal(gw_redis_sync_command(r, 1, (const char *[]){"PING"}, &v, &err), 0);
    assert_int_equal(v, 0);
    assert_true(gw_redis_sync_is_connected(r));
    assert_int_equal(gw_redis_sync_command(r, 2, (const char *[]){"DEL", key}, &v, &err), 0);
    assert_int_equal(gw_redis_sync_command(r, 3, (const char *[]){"INCRBY", key, "41"}, &v, &err), 0);
    assert_int_equal(v, 41);
    assert_int_equal(gw_redis_sync_command(r, 2, (const char *[]){"INCR", key}, &v, &err), 0);
    assert_int_equal(v, 42);
    /* a bulk string is not an integer reply */
    assert_int_equal(gw_redis_sync_command(r, 2, (const char *[]){"GET", key}, &v, &err), -1);
    assert_ptr_equal(err, gw_redis_sync_err_type);
    /* an error reply keeps the connection */
    assert_int_equal(gw_redis_sync_command(r, 1, (const char *[]){"NOSUCHCOMMAND"}, &v, &err), -1);
    assert_ptr_equal(err, gw_redis_sync_err_reply);
    assert_false(gw_redis_sync_err_is_unavailable(err));
    assert_non_null(strstr(gw_redis_sync_last_error(r), "unknown command"));
    assert_true(gw_redis_sync_is_connected(r));
    /* nil */
    assert_int_equal(gw_redis_sync_command(r, 2, (const char *[]){"DEL", key}, &v, &err), 0);
    assert_int_equal(v, 1);

    gw_redis_sync_stats_t st;
    gw_redis_sync_get_stats(r, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.connect_failures, 0);
    gw_redis_sync_destroy(r);
}

static const char SCRIPT[] = "return {tonumber(ARGV[1]) + 1, #KEYS, #ARGV, 42}";

static void test_evalsha_falls_back_to_eval_after_script_flush(void **state)
{
    gw_redis_sync_t *r = gw_redis_sync_create(redis_url(), 500, 500);
    assert_non_null(r);
    long long out[4], v;
    size_t n = 99;
    const char *err = NULL;
    const char *keys[] = {"test:redis_sync:k1", "test:redis_sync:k2"}, *args[] = {"9", "x", "y"};
    gw_redis_sync_stats_t st;

    assert_int_equal(gw_redis_sync_eval(r, SCRIPT, 2, keys, 3, args, out, 4, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(out[0], 10);
    assert_int_equal(out[1], 2);
    assert_int_equal(out[2], 3);
    assert_int_equal(out[3], 42);
    assert_int_equal(gw_redis_sync_eval(r, SCRIPT, 2, keys, 3, args, out, 4, &n, &err), 0);
    gw_redis_sync_get_stats(r, &st);
    assert_int_equal(st.evalsha, 2);
    assert_int_equal(st.noscript, 0);
    assert_int_equal(st.eval, 0);

    /* Redis forgets every script: the next EVALSHA gets NOSCRIPT and EVAL runs (and caches) it */
    assert_int_equal(gw_redis_sync_command(r, 2, (const char *[]){"SCRIPT", "FLUSH"}, &v, &err), 0);
    out[0] = 0;
    assert_int_equal(gw_redis_sync_eval(r, SCRIPT, 2, keys, 3, args, out, 4, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(out[0], 10);
    gw_redis_sync_get_stats(r, &st);
    assert_int_equal(st.evalsha, 3);
    assert_int_equal(st.noscript, 1);
    assert_int_equal(st.eval, 1);
    /* EVAL cached it again: EVALSHA works without another NOSCRIPT */
    assert_int_equal(gw_redis_sync_eval(r, SCRIPT, 2, keys, 3, args, out, 4, &n, &err), 0);
    gw_redis_sync_get_stats(r, &st);
    assert_int_equal(st.evalsha, 4);
    assert_int_equal(st.noscript, 1);
    assert_int_equal(st.eval, 1);

    /* shapes: too many elements, a string, nil, one integer, a script error */
    assert_int_equal(gw_redis_sync_eval(r, SCRIPT, 2, keys, 3, args, out, 3, &n, &err), -1);
    assert_ptr_equal(err, gw_redis_sync_err_type);
    assert_int_equal(n, 0);
    assert_int_equal(gw_redis_sync_eval(r, "return 'text'", 0, NULL, 0, NULL, out, 4, &n, &err), -1);
    assert_ptr_equal(err, gw_redis_sync_err_type);
    assert_int_equal(gw_redis_sync_eval(r, "return {1, 'two'}", 0, NULL, 0, NULL, out, 4, &n, &err), -1);
    assert_ptr_equal(err, gw_redis_sync_err_type);
    n = 99;
    assert_int_equal(gw_redis_sync_eval(r, "return nil", 0, NULL, 0, NULL, out, 4, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(gw_redis_sync_eval(r, "return -7", 0, NULL, 0, NULL, out, 4, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], -7);
    assert_int_equal(gw_redis_sync_eval(r, "return error('boom')", 0, NULL, 0, NULL, out, 4, &n, &err), -1);
    assert_ptr_equal(err, gw_redis_sync_err_reply);
    assert_non_null(strstr(gw_redis_sync_last_error(r), "boom"));
    assert_true(gw_redis_sync_is_connected(r));
    gw_redis_sync_destroy(r);
}

static void test_select_and_auth_from_url(void **state)
{
    char url3[256], key[64];
    url_with_db(url3, sizeof(url3), 3);
    snprintf(key, sizeof(key), "test:redis_sync:%d:db", (int)getpid());
    gw_redis_sync_t *db3 = gw_redis_sync_create(url3, 500, 500), *db0 = gw_redis_sync_create(redis_url(), 500, 500);
    long long v;
    const char *err;
    assert_int_equal(gw_redis_sync_command(db3, 3, (const char *[]){"SET", key, "1"}, &v, &err), 0);
    assert_int_equal(gw_redis_sync_command(db3, 2, (const char *[]){"EXISTS", key}, &v, &err), 0);
    assert_int_equal(v, 1);
    assert_int_equal(gw_redis_sync_command(db0, 2, (const char *[]){"EXISTS", key}, &v, &err), 0);
    assert_int_equal(v, 0);
    assert_int_equal(gw_redis_sync_command(db3, 2, (const char *[]){"DEL", key}, &v, &err), 0);
    assert_int_equal(v, 1);
    gw_redis_sync_destroy(db3);
    gw_redis_sync_destroy(db0);

    /* the test Redis has no password: AUTH fails, connecting fails, and the password is never echoed */
    char *host, *pw;
    int port, db;
    assert_int_equal(gw_redis_parse_url(redis_url(), &host, &port, &pw, &db), 0);
    if (pw == NULL) {
        char url[256];
        snprintf(url, sizeof(url), "redis://:hunter2secret@%s:%d", host, port);
        gw_redis_sync_t *r = gw_redis_sync_create(url, 500, 500);
        assert_int_equal(gw_redis_sync_command(r, 1, (const char *[]){"PING"}, &v, &err), -1);
        assert_ptr_equal(err, gw_redis_sync_err_connect);
        assert_non_null(strstr(gw_redis_sync_last_error(r), "AUTH"));
        assert_null(strstr(gw_redis_sync_last_error(r), "hunter2"));
        assert_false(gw_redis_sync_is_connected(r));
        gw_redis_sync_destroy(r);
    }
    free(host);
    free(pw);
}

static void test_timeout_on_a_server_that_never_answers(void **state)
{
    int port, lfd = silent_listener(&port);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    gw_redis_sync_t *r = gw_redis_sync_create(url, 200, 300);
    long long v;
    const char *err = NULL;

    uint64_t t0 = now_ms();
    assert_int_equal(gw_redis_sync_command(r, 1, (const char *[]){"PING"}, &v, &err), -1);
    uint64_t took = now_ms() - t0;
    assert_ptr_equal(err, gw_redis_sync_err_timeout);
    assert_true(gw_redis_sync_err_is_unavailable(err));
    if (took < 280 || took > 1000)
        fail_msg("the command took %llu ms; the command timeout is 300 ms", (unsigned long long)took);
    assert_false(gw_redis_sync_is_connected(r));

    /* within a second of the failure no reconnect is tried: the call fails at once */
    t0 = now_ms();
    assert_int_equal(gw_redis_sync_command(r, 1, (const char *[]){"PING"}, &v, &err), -1);
    assert_ptr_equal(err, gw_redis_sync_err_down);
    assert_true(now_ms() - t0 < 50);
    gw_redis_sync_stats_t st;
    gw_redis_sync_get_stats(r, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.timeouts, 1);

    /* a script times out the same way (SCRIPT LOAD is the first command) */
    sleep_ms(1050);
    long long out[1];
    size_t n;
    t0 = now_ms();
    assert_int_equal(gw_redis_sync_eval(r, "return 1", 0, NULL, 0, NULL, out, 1, &n, &err), -1);
    took = now_ms() - t0;
    assert_ptr_equal(err, gw_redis_sync_err_timeout);
    if (took < 280 || took > 1000)
        fail_msg("the script took %llu ms; the command timeout is 300 ms", (unsigned long long)took);
    gw_redis_sync_get_stats(r, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.timeouts, 2);
    gw_redis_sync_destroy(r);
    close(lfd);
}

static void test_refused_then_reconnects_once_a_second(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", dead_port());
    gw_redis_sync_t *r = gw_redis_sync_create(url, 200, 300);
    long long v;
    const char *err = NULL;
    uint64_t t0 = now_ms();
    assert_int_equal(gw_redis_sync_command(r, 1, (const char *[]){"PING"}, &v, &err), -1);
    assert_ptr_equal(err, gw_redis_sync_err_connect);
    assert_true(gw_redis_sync_err_is_unavailable(err));
    assert_true(now_ms() - t0 < 250);
    for (int i = 0; i != 5; ++i) {
        assert_int_equal(gw_redis_sync_command(r, 1, (const char *[]){"PING"}, &v, &err), -1);
        assert_ptr_equal(err, gw_redis_sync_err_down);
    }
    gw_redis_sync_stats_t st;
    gw_redis_sync_get_stats(r, &st);
    assert_int_equal(st.connect_failures, 1);
    sleep_ms(1050);
    assert_int_equal(gw_redis_sync_command(r, 1, (const char *[]){"PING"}, &v, &err), -1);
    assert_ptr_equal(err, gw_redis_sync_err_connect);
    gw_redis_sync_get_stats(r, &st);
    assert_int_equal(st.connect_failures, 2);
    assert_int_equal(st.connects, 0);
    gw_redis_sync_destroy(r);
}

static void test_idle_connection_killed_by_server_is_retried(void **state)
{
    gw_redis_sync_t *a = gw_redis_sync_create(redis_url(), 500, 500), *b = gw_redis_sync_create(redis_url(), 500, 500);
    long long id, killed, v;
    const char *err = NULL;
    assert_int_equal(gw_redis_sync_command(a, 2, (const char *[]){"CLIENT", "ID"}, &id, &err), 0);
    char ids[32];
    snprintf(ids, sizeof(ids), "%lld", id);
    assert_int_equal(gw_redis_sync_command(b, 4, (const char *[]){"CLIENT", "KILL", "ID", ids}, &killed, &err), 0);
    assert_int_equal(killed, 1);
    sleep_ms(50);
    /* a's connection is dead; the command succeeds on a new one */
    assert_int_equal(gw_redis_sync_command(a, 2, (const char *[]){"CLIENT", "ID"}, &v, &err), 0);
    assert_true(v != id);
    gw_redis_sync_stats_t st;
    gw_redis_sync_get_stats(a, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.connect_failures, 0);
    gw_redis_sync_destroy(a);
    gw_redis_sync_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_rejects_bad_arguments),
        cmocka_unit_test(test_commands_and_reply_shapes),
        cmocka_unit_test(test_evalsha_falls_back_to_eval_after_script_flush),
        cmocka_unit_test(test_select_and_auth_from_url),
        cmocka_unit_test(test_timeout_on_a_server_that_never_answers),
        cmocka_unit_test(test_refused_then_reconnects_once_a_second),
        cmocka_unit_test(test_idle_connection_killed_by_server_is_retried),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
