/* SPDX-License-Identifier: MIT */
/* Tests of gateway/infra/http_client.c against a loopback python3 server (http_test_server.py beside this file). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "http_client.h"
#include "../http_test_server.h"

#define MAX_BODY (4 * 1024 * 1024)

/* ---- helpers ------------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int setup(void **state)
{
    if (test_server_start() != 0) {
        test_server_stop();
        return -1;
    }
    gw_http_options_t opts = {
        .timeout_ms = 10000, .connect_timeout_ms = 2000, .max_host_connections = 16, .max_body = MAX_BODY};
    return gw_http_init(&opts);
}

static int teardown(void **state)
{
    gw_http_shutdown();
    test_server_stop();
    return 0;
}

/* Decodes the echo server's JSON; the caller json_decref's it. */
static json_t *parse_echo(const gw_http_response_t *res)
{
    json_error_t err;
    json_t *doc = json_loadb(res->body, res->body_len, 0, &err);
    if (doc == NULL)
        fail_msg("echo body is not JSON: %s", err.text);
    return doc;
}

/* The value of the request header name as the echo server saw it, or NULL. */
static const char *echoed_header(json_t *doc, const char *name)
{
    json_t *headers = json_object_get(doc, "headers"), *pair;
    size_t i;
    json_array_foreach(headers, i, pair)
    {
        if (strcasecmp(json_string_value(json_array_get(pair, 0)), name) == 0)
            return json_string_value(json_array_get(pair, 1));
    }
    return NULL;
}

/* Compares the echoed body (hex) with body/len byte for byte. */
static bool echoed_body_is(json_t *doc, const char *body, size_t len)
{
    const char *hex = json_string_value(json_object_get(doc, "body_hex"));
    if (hex == NULL || strlen(hex) != len * 2)
        return false;
    for (size_t i = 0; i != len; ++i) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1 || (unsigned char)body[i] != v)
            return false;
    }
    return true;
}

static void assert_failed(const gw_http_response_t *res)
{
    assert_non_null(res->error);
    assert_int_equal(res->status, 0);
    assert_non_null(res->body);
    assert_int_equal(res->body_len, 0);
    assert_string_equal(res->body, "");
    assert_int_equal(res->nheaders, 0);
}

static int server_counts(int *connections);

/* ---- blocking calls ----------------------------------------------------------------------------- */

static void test_get_echo(void **state)
{
    const char *headers[] = {"X-Custom: Hello World", "Authorization: Bearer t0ken", "accept: application/json", NULL};
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/echo?x=1&y=%20"), .headers = headers};
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), 0);
    assert_null(res.error);
    assert_int_equal(res.status, 200);
    assert_true(res.seconds > 0 && res.seconds < 5);
    assert_string_equal(gw_http_response_header(&res, "Content-Type"), "application/json");
    assert_string_equal(gw_http_response_header(&res, "CONTENT-TYPE"), "application/json");
    assert_null(gw_http_response_header(&res, "x-nope"));
    bool found = false;
    for (size_t i = 0; i != res.nheaders; ++i)
        if (strcmp(res.headers[i].name, "content-length") == 0) {
            assert_int_equal(strtoul(res.headers[i].value, NULL, 10), res.body_len);
            found = true;
        }
    assert_true(found);
    assert_int_equal(res.body[res.body_len], '\0');

    json_t *doc = parse_echo(&res);
    assert_string_equal(json_string_value(json_object_get(doc, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(doc, "path")), "/echo?x=1&y=%20");
    assert_string_equal(echoed_header(doc, "x-custom"), "Hello World");
    assert_string_equal(echoed_header(doc, "authorization"), "Bearer t0ken");
    assert_string_equal(echoed_header(doc, "accept"), "application/json");
    assert_null(echoed_header(doc, "content-type"));
    assert_null(echoed_header(doc, "content-length"));
    assert_true(echoed_body_is(doc, "", 0));
    json_decref(doc);
    gw_http_response_free(&res);
    assert_null(res.body);
    assert_int_equal(res.nheaders, 0);
}

static void check_body_method(const char *method, const char *content_type)
{
    char body[1000];
    for (size_t i = 0; i != sizeof(body); ++i)
        body[i] = (char)(i * 7 % 256); /* NULs, 0xff, CR, LF: binary */
    char ct[100];
    snprintf(ct, sizeof(ct), "Content-Type: %s", content_type != NULL ? content_type : "");
    const char *headers[] = {content_type != NULL ? ct : "X-Other: 1", "X-Idempotency-Key: k-42", NULL};
    gw_http_request_t req = {
        .method = method, .url = test_server_url("/echo"), .headers = headers, .body = body, .body_len = sizeof(body)};
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), 0);
    assert_int_equal(res.status, 200);
    json_t *doc = parse_echo(&res);
    assert_string_equal(json_string_value(json_object_get(doc, "method")), method);
    assert_true(echoed_body_is(doc, body, sizeof(body)));
    assert_string_equal(echoed_header(doc, "content-length"), "1000");
    assert_string_equal(echoed_header(doc, "x-idempotency-key"), "k-42");
    if (content_type != NULL)
        assert_string_equal(echoed_header(doc, "content-type"), content_type);
    else
        assert_null(echoed_header(doc, "content-type")); /* libcurl made none up */
    json_decref(doc);
    gw_http_response_free(&res);
}

static void test_post_put_binary(void **state)
{
    check_body_method("POST", "application/octet-stream");
    check_body_method("PUT", "application/json");
    check_body_method("POST", NULL);
    check_body_method("PATCH", "application/json");

    /* POST without a body sends Content-Length: 0 */
    gw_http_request_t req = {.method = "post", .url = test_server_url("/echo")};
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), 0);
    json_t *doc = parse_echo(&res);
    assert_string_equal(json_string_value(json_object_get(doc, "method")), "POST");
    assert_string_equal(echoed_header(doc, "content-length"), "0");
    json_decref(doc);
    gw_http_response_free(&res);

    req = (gw_http_request_t){.method = "DELETE", .url = test_server_url("/echo")};
    assert_int_equal(gw_http_do(&req, &res), 0);
    doc = parse_echo(&res);
    assert_string_equal(json_string_value(json_object_get(doc, "method")), "DELETE");
    json_decref(doc);
    gw_http_response_free(&res);
}

/* An interim 100 response carries X-Interim; only the final response's headers are returned. */
static void test_final_headers_only(void **state)
{
    const char body[] = "{\"a\":1}";
    const char *headers[] = {"Expect: 100-continue", "Content-Type: application/json", NULL};
    gw_http_request_t req = {
        .method = "PUT", .url = test_server_url("/echo"), .headers = headers, .body = body, .body_len = strlen(body)};
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), 0);
    assert_int_equal(res.status, 200);
    assert_null(gw_http_response_header(&res, "x-interim"));
    assert_string_equal(gw_http_response_header(&res, "content-type"), "application/json");
    json_t *doc = parse_echo(&res);
    assert_string_equal(echoed_header(doc, "expect"), "100-continue");
    assert_true(echoed_body_is(doc, body, strlen(body)));
    json_decref(doc);
    gw_http_response_free(&res);
}

static void test_status_and_headers(void **state)
{
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/status/429")};
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), 0);
    assert_null(res.error);
    assert_int_equal(res.status, 429);
    assert_string_equal(gw_http_response_header(&res, "Retry-After"), "7");
    assert_string_equal(gw_http_response_header(&res, "retry-after"), "7");
    assert_string_equal(gw_http_response_header(&res, "x-mixed-case"), "padded value");
    assert_string_equal(res.body, "status 429");
    assert_int_equal(res.body_len, 10);
    bool lower = false;
    for (size_t i = 0; i != res.nheaders; ++i)
        if (strcmp(res.headers[i].name, "x-mixed-case") == 0)
            lower = true;
    assert_true(lower);
    gw_http_response_free(&res);

    req.url = test_server_url("/status/503");
    assert_int_equal(gw_http_do(&req, &res), 0);
    assert_int_equal(res.status, 503);
    assert_null(gw_http_response_header(&res, "retry-after"));
    gw_http_response_free(&res);
}

static void test_timeout(void **state)
{
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/slow?ms=3000"), .timeout_ms = 300};
    gw_http_response_t res;
    double t0 = now_s();
    assert_int_equal(gw_http_do(&req, &res), -1);
    double took = now_s() - t0;
    assert_failed(&res);
    assert_non_null(strstr(res.error, "Timeout was reached"));
    assert_true(took >= 0.25 && took < 2.0);
    assert_true(res.seconds >= 0.25 && res.seconds < 2.0);
    gw_http_response_free(&res);
}

static void test_connect_refused(void **state)
{
    /* a bound socket that does not listen: connecting to it is refused, and nobody can take the port */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof(sin);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &slen), 0);
    char u[100];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/", ntohs(sin.sin_port));

    gw_http_request_t req = {.method = "GET", .url = u};
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), -1);
    assert_failed(&res);
    assert_non_null(strstr(res.error, "Couldn't connect to server"));
    gw_http_response_free(&res);
    close(fd);
}

static void check_big(const char *path, int rc)
{
    gw_http_request_t req = {.method = "GET", .url = test_server_url(path)};
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), rc);
    if (rc == 0) {
        assert_int_equal(res.status, 200);
        assert_int_equal(res.body_len, MAX_BODY);
        for (size_t i = 0; i < res.body_len; i += 4099)
            if (res.body[i] != '0' + (int)(i % 10))
                fail_msg("%s: byte %zu is %d", path, i, res.body[i]);
        assert_int_equal(res.body[res.body_len], '\0');
    } else {
        assert_failed(&res);
        assert_string_equal(res.error, "response body too large");
    }
    gw_http_response_free(&res);
}

static void test_body_cap(void **state)
{
    check_big("/big?bytes=4194304", 0);
    check_big("/big?bytes=4194305", -1);
    check_big("/big?bytes=4194304&chunked=1", 0);
    check_big("/big?bytes=4194305&chunked=1", -1);
    check_big("/big?bytes=20000000&chunked=1", -1);
}

static void test_redirect_not_followed(void **state)
{
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/redirect")};
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), 0);
    assert_int_equal(res.status, 302);
    assert_string_equal(gw_http_response_header(&res, "location"), "/echo");
    assert_string_equal(res.body, "moved");
    gw_http_response_free(&res);
}

static void test_connection_drop(void **state)
{
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/drop")};
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), -1);
    assert_failed(&res);
    assert_non_null(strstr(res.error, "Server returned nothing"));
    gw_http_response_free(&res);

    /* the pool recovers: the next call on the same host works */
    req.url = test_server_url("/status/200");
    assert_int_equal(gw_http_do(&req, &res), 0);
    assert_int_equal(res.status, 200);
    gw_http_response_free(&res);
}

/* Sequential calls to one host share one kept-alive connection. */
static void test_connection_reuse(void **state)
{
    int conns_before, conns_after;
    server_counts(&conns_before);
    for (int i = 0; i != 20; ++i) {
        gw_http_request_t req = {
            .method = i % 2 ? "POST" : "GET", .url = test_server_url("/status/200"), .body = "x", .body_len = 1};
        gw_http_response_t res;
        assert_int_equal(gw_http_do(&req, &res), 0);
        assert_int_equal(res.status, 200);
        gw_http_response_free(&res);
    }
    server_counts(&conns_after);
    assert_int_equal(conns_after, conns_before);
}

static void check_invalid(const gw_http_request_t *req, const char *error_part)
{
    gw_http_response_t res;
    assert_int_equal(gw_http_do(req, &res), -1);
    assert_failed(&res);
    const char *error = res.error != NULL ? res.error : "(none)";
    if (strstr(error, error_part) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", error, error_part);
    gw_http_response_free(&res);
}

static void test_invalid_requests(void **state)
{
    const char *crlf[] = {"X-A: 1\r\nX-Injected: 1", NULL};
    const char *noname[] = {": value", NULL};
    const char *nocolon[] = {"X-A 1", NULL};
    check_invalid(&(gw_http_request_t){.method = "GET", .url = test_server_url("/echo"), .headers = crlf},
                  "bad header");
    check_invalid(&(gw_http_request_t){.method = "GET", .url = test_server_url("/echo"), .headers = noname},
                  "bad header");
    check_invalid(&(gw_http_request_t){.method = "GET", .url = test_server_url("/echo"), .headers = nocolon},
                  "bad header");
    check_invalid(&(gw_http_request_t){.method = "GE T", .url = test_server_url("/echo")}, "bad method");
    check_invalid(&(gw_http_request_t){.method = "GET\r\n", .url = test_server_url("/echo")}, "bad method");
    check_invalid(&(gw_http_request_t){.method = "GET"}, "url are required");
    check_invalid(&(gw_http_request_t){.method = "GET", .url = test_server_url("/echo"), .timeout_ms = -1},
                  "bad timeout");
    check_invalid(&(gw_http_request_t){.method = "GET", .url = "file:///etc/passwd"}, "Unsupported protocol");
    check_invalid(&(gw_http_request_t){.method = "GET", .url = "ftp://127.0.0.1/x"}, "Unsupported protocol");
    check_invalid(&(gw_http_request_t){.method = "GET", .url = "not a url"}, "");
}

/* ---- many threads at once ----------------------------------------------------------------------- */

#define NTHREADS 8
#define NCALLS 50

typedef struct {
    int first, step, last;
    const char *path;
    int ok, bad;
} worker_arg_t;

/* Each call posts a unique body and checks its own echo; no cmocka asserts off the main thread. */
static void *concurrent_worker(void *p)
{
    worker_arg_t *a = p;
    for (int i = a->first; i < a->last; i += a->step) {
        char body[64], hdr[64];
        int blen = snprintf(body, sizeof(body), "call %d\x01%c", i, '\0');
        blen += 1; /* keep the trailing NUL: binary */
        snprintf(hdr, sizeof(hdr), "X-Call: %d", i);
        const char *headers[] = {hdr, "Content-Type: application/octet-stream", NULL};
        gw_http_request_t req = {.method = "POST",
                                 .url = test_server_url(a->path),
                                 .headers = headers,
                                 .body = body,
                                 .body_len = (size_t)blen};
        gw_http_response_t res;
        bool good = gw_http_do(&req, &res) == 0 && res.status == 200;
        if (good && strcmp(a->path, "/echo") == 0) {
            json_t *doc = json_loadb(res.body, res.body_len, 0, NULL);
            char want[16];
            snprintf(want, sizeof(want), "%d", i);
            good = doc != NULL && echoed_body_is(doc, body, (size_t)blen) && echoed_header(doc, "x-call") != NULL &&
                   strcmp(echoed_header(doc, "x-call"), want) == 0;
            json_decref(doc);
        }
        if (good)
            ++a->ok;
        else
            ++a->bad;
        gw_http_response_free(&res);
    }
    return NULL;
}

static void run_threads(const char *path, int ncalls, int *ok, int *bad)
{
    pthread_t tids[NTHREADS];
    worker_arg_t args[NTHREADS];
    for (int t = 0; t != NTHREADS; ++t) {
        args[t] = (worker_arg_t){.first = t, .step = NTHREADS, .last = ncalls, .path = path};
        assert_int_equal(pthread_create(&tids[t], NULL, concurrent_worker, &args[t]), 0);
    }
    *ok = *bad = 0;
    for (int t = 0; t != NTHREADS; ++t) {
        pthread_join(tids[t], NULL);
        *ok += args[t].ok;
        *bad += args[t].bad;
    }
}

static void test_concurrent(void **state)
{
    int ok, bad;
    run_threads("/echo", NCALLS, &ok, &bad);
    assert_int_equal(bad, 0);
    assert_int_equal(ok, NCALLS);
}

/* Not a benchmark of libcurl: the python server is the bottleneck. Prints the figure for the record. */
static void test_throughput(void **state)
{
    int ok, bad, n = 2000;
    double t0 = now_s();
    run_threads("/status/200", n, &ok, &bad);
    double took = now_s() - t0;
    assert_int_equal(bad, 0);
    assert_int_equal(ok, n);
    printf("    gw_http_do: %d requests from %d threads in %.3f s = %.0f req/s\n", n, NTHREADS, took, n / took);
}

/* ---- calls from an event loop ---------------------------------------------------------------------- */

typedef struct {
    int fired;
    pthread_t thread;
    gw_http_response_t res;
} result_t;

static void on_result(void *data, gw_http_response_t *res)
{
    result_t *r = data;
    ++r->fired;
    r->thread = pthread_self();
    gw_http_response_free(&r->res); /* a second firing must not leak: the count catches it */
    r->res = *res;
}

static void run_until(h2o_evloop_t *loop, const int *fired, int want)
{
    for (int i = 0; i != 1000 && *fired < want; ++i)
        h2o_evloop_run(loop, 10);
}

static void spin(h2o_evloop_t *loop, int ms)
{
    double end = now_s() + ms / 1000.0;
    while (now_s() < end)
        h2o_evloop_run(loop, 10);
}

/* How many requests (this one included) and connections the server has seen. */
static int server_counts(int *connections)
{
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/count")};
    gw_http_response_t res;
    int n = -1, c = -1;
    if (gw_http_do(&req, &res) != 0 || sscanf(res.body, "%d %d", &n, &c) != 2)
        fail_msg("/count failed: %s", res.error != NULL ? res.error : res.body);
    gw_http_response_free(&res);
    if (connections != NULL)
        *connections = c;
    return n;
}

static int server_count(void)
{
    return server_counts(NULL);
}

static void wait_arrivals(int before, int n)
{
    for (int i = 0; i != 200; ++i) {
        if (server_count() - before - (i + 1) >= n)
            return;
        sleep_ms(10);
    }
    fail_msg("the server did not see %d requests", n);
}

static void test_loop_delivery(void **state)
{
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_http_loop_t *hl = gw_http_loop_create(loop);
    const char *headers[] = {"X-From-Loop: yes", "Content-Type: text/plain", NULL};
    gw_http_request_t req = {
        .method = "POST", .url = test_server_url("/echo"), .headers = headers, .body = "hello\0loop", .body_len = 10};
    result_t r = {0};
    assert_non_null(gw_http_start(hl, &req, on_result, &r));
    run_until(loop, &r.fired, 1);
    assert_int_equal(r.fired, 1);
    assert_true(pthread_equal(r.thread, pthread_self()));
    assert_null(r.res.error);
    assert_int_equal(r.res.status, 200);
    json_t *doc = parse_echo(&r.res);
    assert_true(echoed_body_is(doc, "hello\0loop", 10));
    assert_string_equal(echoed_header(doc, "x-from-loop"), "yes");
    json_decref(doc);
    gw_http_response_free(&r.res);

    /* a failure is delivered the same way */
    req = (gw_http_request_t){.method = "GET", .url = test_server_url("/slow?ms=2000"), .timeout_ms = 200};
    r = (result_t){0};
    assert_non_null(gw_http_start(hl, &req, on_result, &r));
    run_until(loop, &r.fired, 1);
    assert_int_equal(r.fired, 1);
    assert_failed(&r.res);
    gw_http_response_free(&r.res);

    /* an unusable request: NULL, and the callback never fires */
    req = (gw_http_request_t){.method = "GET", .url = NULL};
    r = (result_t){0};
    assert_null(gw_http_start(hl, &req, on_result, &r));
    spin(loop, 100);
    assert_int_equal(r.fired, 0);

    /* many at once, all on the loop thread */
    enum { N = 40 };
    result_t rs[N];
    int total = 0;
    memset(rs, 0, sizeof(rs));
    for (int i = 0; i != N; ++i) {
        req = (gw_http_request_t){.method = "GET", .url = test_server_url(i % 2 ? "/status/201" : "/status/202")};
        assert_non_null(gw_http_start(hl, &req, on_result, &rs[i]));
    }
    for (int i = 0; i != 1000 && total < N; ++i) {
        h2o_evloop_run(loop, 10);
        total = 0;
        for (int j = 0; j != N; ++j)
            total += rs[j].fired;
    }
    for (int i = 0; i != N; ++i) {
        assert_int_equal(rs[i].fired, 1);
        assert_true(pthread_equal(rs[i].thread, pthread_self()));
        assert_int_equal(rs[i].res.status, i % 2 ? 201 : 202);
        gw_http_response_free(&rs[i].res);
    }

    gw_http_loop_destroy(hl);
    h2o_evloop_destroy(loop);
}

typedef struct st_pair_t pair_t;
typedef struct {
    pair_t *pair;
    int index, fired;
} pair_slot_t;
struct st_pair_t {
    gw_http_call_t *calls[2];
    pair_slot_t slot[2];
    long status;
};

/* The first of two calls to finish detaches the other. */
static void on_pair(void *data, gw_http_response_t *res)
{
    pair_slot_t *s = data;
    ++s->fired;
    s->pair->status = res->status;
    gw_http_detach(s->pair->calls[1 - s->index]);
    gw_http_response_free(res);
}

static void test_detach(void **state)
{
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_http_loop_t *hl = gw_http_loop_create(loop);
    result_t a = {0}, b = {0}, c = {0}, d = {0}, e = {0};
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/slow?ms=300")};

    /* detached at once (queued or just started) */
    gw_http_call_t *ca = gw_http_start(hl, &req, on_result, &a);
    assert_non_null(ca);
    gw_http_detach(ca);
    req.url = test_server_url("/slow?ms=600");
    assert_non_null(gw_http_start(hl, &req, on_result, &b));
    run_until(loop, &b.fired, 1);
    assert_int_equal(b.fired, 1);
    assert_int_equal(b.res.status, 200);
    assert_int_equal(a.fired, 0);

    /* detached while the server is working on it */
    int before = server_count();
    req.url = test_server_url("/slow?ms=1500");
    gw_http_call_t *ce = gw_http_start(hl, &req, on_result, &e);
    assert_non_null(ce);
    wait_arrivals(before, 1);
    gw_http_detach(ce);

    /* detached after the result was sent to the loop but before the loop read it */
    req.url = test_server_url("/status/200");
    gw_http_call_t *cc = gw_http_start(hl, &req, on_result, &c);
    assert_non_null(cc);
    sleep_ms(500); /* the loop does not run: the result waits in its queue */
    gw_http_detach(cc);
    assert_non_null(gw_http_start(hl, &req, on_result, &d));
    run_until(loop, &d.fired, 1);
    assert_int_equal(d.fired, 1);
    spin(loop, 1700); /* long enough for the detached slow call to have ended had it run on */
    assert_int_equal(c.fired, 0);
    assert_int_equal(e.fired, 0);
    assert_int_equal(a.fired, 0);

    /* detached from inside another call's callback, while both results are in the same batch */
    pair_t pair = {0};
    pair.calls[0] = gw_http_start(hl, &req, on_pair, &pair.slot[0]);
    pair.calls[1] = gw_http_start(hl, &req, on_pair, &pair.slot[1]);
    assert_non_null(pair.calls[0]);
    assert_non_null(pair.calls[1]);
    pair.slot[0].pair = pair.slot[1].pair = &pair;
    pair.slot[1].index = 1;
    sleep_ms(500); /* both results wait in the loop's queue */
    spin(loop, 200);
    assert_int_equal(pair.slot[0].fired + pair.slot[1].fired, 1);
    assert_int_equal(pair.status, 200);

    gw_http_response_free(&b.res);
    gw_http_response_free(&d.res);
    gw_http_loop_destroy(hl);
    h2o_evloop_destroy(loop);
}

/* gw_http_loop_destroy answers what is still pending: a finished result as is, an unfinished call with an error. */
static void test_loop_destroy_pending(void **state)
{
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_http_loop_t *hl = gw_http_loop_create(loop);
    result_t slow = {0}, done = {0}, gone = {0};
    int before = server_count();
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/slow?ms=3000")};
    assert_non_null(gw_http_start(hl, &req, on_result, &slow));
    wait_arrivals(before, 1);
    req.url = test_server_url("/status/202");
    assert_non_null(gw_http_start(hl, &req, on_result, &done));
    gw_http_call_t *cg = gw_http_start(hl, &req, on_result, &gone);
    assert_non_null(cg);
    sleep_ms(500);
    gw_http_detach(cg);
    double t0 = now_s();
    gw_http_loop_destroy(hl);
    assert_true(now_s() - t0 < 1.0);
    assert_int_equal(slow.fired, 1);
    assert_failed(&slow.res);
    assert_string_equal(slow.res.error, "shutting down");
    assert_int_equal(done.fired, 1);
    assert_int_equal(done.res.status, 202);
    assert_int_equal(gone.fired, 0);
    gw_http_response_free(&slow.res);
    gw_http_response_free(&done.res);
    spin(loop, 100);
    assert_int_equal(slow.fired, 1);
    assert_int_equal(done.fired, 1);
    h2o_evloop_destroy(loop);
}

/* ---- shutdown --------------------------------------------------------------------------------------- */

typedef struct {
    int rc;
    gw_http_response_t res;
} blocked_t;

static void *blocked_call(void *p)
{
    blocked_t *b = p;
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/slow?ms=5000")};
    b->rc = gw_http_do(&req, &b->res);
    return NULL;
}

static void test_shutdown_in_flight(void **state)
{
    enum { NBLOCKED = 4, NLOOP = 3 };
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_http_loop_t *hl = gw_http_loop_create(loop);
    pthread_t tids[NBLOCKED];
    blocked_t blocked[NBLOCKED];
    result_t rs[NLOOP];
    memset(blocked, 0, sizeof(blocked));
    memset(rs, 0, sizeof(rs));

    int before = server_count();
    for (int i = 0; i != NBLOCKED; ++i)
        assert_int_equal(pthread_create(&tids[i], NULL, blocked_call, &blocked[i]), 0);
    gw_http_request_t req = {.method = "GET", .url = test_server_url("/slow?ms=5000")};
    for (int i = 0; i != NLOOP; ++i)
        assert_non_null(gw_http_start(hl, &req, on_result, &rs[i]));
    wait_arrivals(before, NBLOCKED + NLOOP);

    double t0 = now_s();
    gw_http_shutdown();
    assert_true(now_s() - t0 < 2.0);
    for (int i = 0; i != NBLOCKED; ++i) {
        pthread_join(tids[i], NULL);
        assert_int_equal(blocked[i].rc, -1);
        assert_failed(&blocked[i].res);
        assert_string_equal(blocked[i].res.error, "shutting down");
        gw_http_response_free(&blocked[i].res);
    }
    int total = 0;
    for (int i = 0; i != 1000 && total < NLOOP; ++i) {
        h2o_evloop_run(loop, 10);
        total = 0;
        for (int j = 0; j != NLOOP; ++j)
            total += rs[j].fired;
    }
    spin(loop, 100);
    for (int i = 0; i != NLOOP; ++i) {
        assert_int_equal(rs[i].fired, 1);
        assert_true(pthread_equal(rs[i].thread, pthread_self()));
        assert_failed(&rs[i].res);
        assert_string_equal(rs[i].res.error, "shutting down");
        gw_http_response_free(&rs[i].res);
    }

    /* stopped: no new work, and the refusals say so */
    result_t late = {0};
    assert_null(gw_http_start(hl, &req, on_result, &late));
    gw_http_response_t res;
    assert_int_equal(gw_http_do(&req, &res), -1);
    assert_failed(&res);
    assert_string_equal(res.error, "http client not running");
    gw_http_response_free(&res);
    gw_http_shutdown(); /* twice is harmless */
    gw_http_loop_destroy(hl);
    h2o_evloop_destroy(loop);
    assert_int_equal(late.fired, 0);

    /* and it starts again */
    gw_http_options_t opts = {.max_body = MAX_BODY};
    assert_int_equal(gw_http_init(&opts), 0);
    assert_int_equal(gw_http_init(&opts), -1);
    req.url = test_server_url("/status/200");
    assert_int_equal(gw_http_do(&req, &res), 0);
    assert_int_equal(res.status, 200);
    gw_http_response_free(&res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_echo),
        cmocka_unit_test(test_post_put_binary),
        cmocka_unit_test(test_final_headers_only),
        cmocka_unit_test(test_status_and_headers),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_redirect_not_followed),
        cmocka_unit_test(test_connection_drop),
        cmocka_unit_test(test_connection_reuse),
        cmocka_unit_test(test_invalid_requests),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_throughput),
        cmocka_unit_test(test_loop_delivery),
        cmocka_unit_test(test_detach),
        cmocka_unit_test(test_loop_destroy_pending),
        cmocka_unit_test(test_shutdown_in_flight),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
