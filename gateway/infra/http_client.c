/* SPDX-License-Identifier: MIT */
/*
 * http_client.c: outbound HTTP on one libcurl worker thread, because h2o 2.2 has no arbitrary one-shot
 * timer to drive curl's socket API from the loops (FINDINGS.md section 5).
 *
 * A call moves through these states, each change made under `g.mu`:
 *
 *   QUEUED (in g.inbox) --worker takes it--> ACTIVE (easy handle in the multi) --transfer ends--> DONE
 *   DONE, gw_http_do: the waiter is signalled and frees the call.
 *   DONE, gw_http_start: the call is sent to its loop as an h2o_multithread message; the loop marks it
 *   DELIVERED, calls cb unless the call was detached, and frees it.
 *
 * Detaching (loop thread only) frees a QUEUED call at once, asks the worker to drop an ACTIVE one (the
 * cancel list), and leaves a DONE or DELIVERED one to the loop, which frees it without calling cb.
 * Every call of a loop is on its hl->calls list until it is delivered or freed, so that
 * gw_http_loop_destroy can find it. The only module that calls libcurl.
 */
#include "http_client.h"
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "mem.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_MAX_HOST_CONNECTIONS 16
#define DEFAULT_MAX_BODY (16 * 1024 * 1024)
#define EASY_POOL_MAX 64
#define POLL_MAX_MS 1000

static const char err_shutting_down[] = "shutting down";
static const char err_not_running[] = "http client not running";
static const char err_too_large[] = "response body too large";

enum call_state { CALL_QUEUED, CALL_ACTIVE, CALL_DONE, CALL_DELIVERED };

typedef struct st_waiter_t {
    pthread_cond_t cond;
    bool done;
} waiter_t;

struct st_gw_http_call_t {
    h2o_multithread_message_t msg; /* delivery to the loop */
    h2o_linklist_t link;           /* g.inbox (under g.mu) or the worker's active list (worker only) */
    h2o_linklist_t cancel_link;    /* g.cancels, under g.mu */
    h2o_linklist_t hl_link;        /* hl->calls, under g.mu */
    enum call_state state;         /* under g.mu */
    bool detached;                 /* written by the loop thread under g.mu */
    /* who gets the result: a waiter (gw_http_do) or a loop (gw_http_start) */
    waiter_t *waiter;
    gw_http_loop_t *hl; /* under g.mu; NULL once the loop is gone */
    gw_http_cb cb;
    void *data;
    /* the request, copied */
    char *method, *url, *body;
    size_t body_len;
    long timeout_ms, connect_timeout_ms;
    struct curl_slist *headers;
    /* the transfer: worker only */
    CURL *easy;
    char *buf;
    size_t len, cap;
    gw_http_header_t *hdrs;
    size_t nhdrs, caphdrs;
    bool too_large;
    char errbuf[CURL_ERROR_SIZE];
    /* the result */
    gw_http_response_t res;
};

struct st_gw_http_loop_t {
    h2o_evloop_t *loop;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t receiver;
    h2o_linklist_t calls; /* under g.mu */
    bool dispatching;     /* loop thread only */
};

static struct {
    pthread_mutex_t mu;
    bool running;  /* gw_http_do and gw_http_start accept work; under mu */
    bool stopping; /* the worker must finish; under mu */
    CURLM *multi;  /* set and cleared by init and shutdown; wakeups under mu while running */
    pthread_t thread;
    h2o_linklist_t inbox;   /* under mu */
    h2o_linklist_t cancels; /* under mu */
    gw_http_options_t opts;
    /* worker only */
    h2o_linklist_t active;
    CURL *pool[EASY_POOL_MAX];
    size_t npool;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL)
        h2o_fatal("no memory");
    return p;
}

static char *memdup0(const char *s, size_t len)
{
    char *p = h2o_mem_alloc(len + 1);
    if (len != 0)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* Fills res with a failure: status 0, an empty body, no headers. */
static void set_error(gw_http_response_t *res, const char *error)
{
    gw_http_response_free(res);
    res->error = gw_xstrdup(error);
    res->body = memdup0("", 0);
}

/* A method is an HTTP token: letters only here, which covers every method an API uses. */
static bool is_valid_method(const char *m)
{
    if (*m == '\0' || strlen(m) > 16)
        return false;
    for (; *m != '\0'; ++m)
        if (!((*m >= 'A' && *m <= 'Z') || (*m >= 'a' && *m <= 'z')))
            return false;
    return true;
}

/* "Name: value" with a non-empty token name and no CR or LF anywhere (no header injection). */
static bool is_valid_header(const char *h)
{
    const char *colon = strchr(h, ':');
    if (colon == NULL || colon == h || strpbrk(h, "\r\n") != NULL)
        return false;
    for (const char *p = h; p != colon; ++p)
        if (*p <= ' ' || *p >= 0x7f)
            return false;
    return true;
}

static bool has_header(const char *const *headers, const char *name)
{
    size_t n = strlen(name);
    for (; headers != NULL && *headers != NULL; ++headers)
        if (strncasecmp(*headers, name, n) == 0 && (*headers)[n] == ':')
            return true;
    return false;
}

static void call_free(gw_http_call_t *call)
{
    free(call->method);
    free(call->url);
    free(call->body);
    curl_slist_free_all(call->headers);
    free(call->buf);
    for (size_t i = 0; i != call->nhdrs; ++i) {
        free(call->hdrs[i].name);
        free(call->hdrs[i].value);
    }
    free(call->hdrs);
    gw_http_response_free(&call->res);
    free(call);
}

/* Copies req into a new call, or returns NULL with *why set when req is unusable. */
static gw_http_call_t *call_new(const gw_http_request_t *req, const char **why)
{
    if (req == NULL || req->method == NULL || req->url == NULL) {
        *why = "invalid request: method and url are required";
        return NULL;
    }
    if (!is_valid_method(req->method)) {
        *why = "invalid request: bad method";
        return NULL;
    }
    if (req->timeout_ms < 0 || req->connect_timeout_ms < 0 || (req->body == NULL && req->body_len != 0)) {
        *why = "invalid request: bad timeout or body";
        return NULL;
    }
    for (const char *const *h = req->headers; h != NULL && *h != NULL; ++h) {
        if (!is_valid_header(*h)) {
            *why = "invalid request: bad header";
            return NULL;
        }
    }

    gw_http_call_t *call = h2o_mem_alloc(sizeof(*call));
    memset(call, 0, sizeof(*call));
    call->method = gw_xstrdup(req->method);
    for (char *p = call->method; *p != '\0'; ++p)
        if (*p >= 'a' && *p <= 'z')
            *p -= 'a' - 'A';
    call->url = gw_xstrdup(req->url);
    if (req->body != NULL)
        call->body = memdup0(req->body, req->body_len);
    call->body_len = req->body_len;
    call->timeout_ms = req->timeout_ms;
    call->connect_timeout_ms = req->connect_timeout_ms;
    for (const char *const *h = req->headers; h != NULL && *h != NULL; ++h)
        if ((call->headers = curl_slist_append(call->headers, *h)) == NULL)
            h2o_fatal("no memory");
    /* what the caller gives is what is sent: no form-urlencoded Content-Type made up by libcurl */
    if (call->body != NULL && !has_header(req->headers, "content-type"))
        if ((call->headers = curl_slist_append(call->headers, "Content-Type:")) == NULL)
            h2o_fatal("no memory");
    return call;
}

/* ---- worker thread ---------------------------------------------------------------------------- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *data)
{
    gw_http_call_t *call = data;
    size_t n = size * nmemb;
    if (n > g.opts.max_body - call->len) {
        call->too_large = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (call->len + n + 1 > call->cap) {
        size_t cap = call->cap == 0 ? 4096 : call->cap;
        while (cap < call->len + n + 1)
            cap *= 2;
        call->buf = xrealloc(call->buf, cap);
        call->cap = cap;
    }
    memcpy(call->buf + call->len, ptr, n);
    call->len += n;
    return n;
}

static void clear_headers(gw_http_call_t *call)
{
    for (size_t i = 0; i != call->nhdrs; ++i) {
        free(call->hdrs[i].name);
        free(call->hdrs[i].value);
    }
    call->nhdrs = 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static char *trimmed_copy(const char *s, size_t len)
{
    while (len != 0 && is_space(*s))
        ++s, --len;
    while (len != 0 && is_space(s[len - 1]))
        --len;
    return memdup0(s, len);
}

/* Called once per header line of every response block (interim 1xx, redirects, the final one, trailers). */
static size_t on_header(char *line, size_t size, size_t nmemb, void *data)
{
    gw_http_call_t *call = data;
    size_t n = size * nmemb;

    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        clear_headers(call); /* a new response begins: keep only the final one's headers */
        return n;
    }
    if (n != 0 && (line[0] == ' ' || line[0] == '\t')) {
        /* obsolete line folding: continues the previous value */
        if (call->nhdrs != 0) {
            gw_http_header_t *h = &call->hdrs[call->nhdrs - 1];
            char *more = trimmed_copy(line, n);
            size_t a = strlen(h->value), b = strlen(more);
            h->value = xrealloc(h->value, a + b + 2);
            if (a != 0 && b != 0)
                h->value[a++] = ' ';
            memcpy(h->value + a, more, b + 1);
            free(more);
        }
        return n;
    }
    const char *colon = memchr(line, ':', n);
    if (colon == NULL || colon == line)
        return n; /* the blank line that ends a block, or garbage */

    if (call->nhdrs == call->caphdrs) {
        call->caphdrs = call->caphdrs == 0 ? 16 : call->caphdrs * 2;
        call->hdrs = xrealloc(call->hdrs, call->caphdrs * sizeof(call->hdrs[0]));
    }
    gw_http_header_t *h = &call->hdrs[call->nhdrs++];
    h->name = trimmed_copy(line, (size_t)(colon - line));
    for (char *p = h->name; *p != '\0'; ++p)
        if (*p >= 'A' && *p <= 'Z')
            *p += 'a' - 'A';
    h->value = trimmed_copy(colon + 1, n - (size_t)(colon + 1 - line));
    return n;
}

static CURL *easy_get(void)
{
    if (g.npool != 0)
        return g.pool[--g.npool];
    CURL *easy = curl_easy_init();
    if (easy == NULL)
        h2o_fatal("no memory");
    return easy;
}

static void easy_put(CURL *easy)
{
    if (g.npool == EASY_POOL_MAX) {
        curl_easy_cleanup(easy);
        return;
    }
    curl_easy_reset(easy);
    g.pool[g.npool++] = easy;
}

/* Sets every option of the transfer; 0 or -1 (an option libcurl refused; call->errbuf may say why). */
__attribute__((warn_unused_result)) static int setup_easy(gw_http_call_t *call)
{
    CURL *e = call->easy;
    long timeout = call->timeout_ms != 0 ? call->timeout_ms : g.opts.timeout_ms;
    long connect_timeout = call->connect_timeout_ms != 0 ? call->connect_timeout_ms : g.opts.connect_timeout_ms;
    CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                                                                  \
    do {                                                                                                               \
        if (rc == CURLE_OK)                                                                                            \
            rc = curl_easy_setopt(e, opt, val);                                                                        \
    } while (0)
    SET(CURLOPT_ERRORBUFFER, call->errbuf);
    SET(CURLOPT_PRIVATE, call);
    SET(CURLOPT_URL, call->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TIMEOUT_MS, timeout);
    SET(CURLOPT_CONNECTTIMEOUT_MS, connect_timeout);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)g.opts.max_body);
    SET(CURLOPT_USERAGENT, "settled");
    SET(CURLOPT_HTTPHEADER, call->headers);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, call);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, call);
    if (strcmp(call->method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (call->body != NULL || strcmp(call->method, "POST") == 0 || strcmp(call->method, "PUT") == 0 ||
               strcmp(call->method, "PATCH") == 0) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
        SET(CURLOPT_POSTFIELDS, call->body != NULL ? call->body : "");
        if (strcmp(call->method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, call->method);
    } else if (strcmp(call->method, "GET") == 0) {
        SET(CURLOPT_HTTPGET, 1L);
    } else {
        SET(CURLOPT_CUSTOMREQUEST, call->method);
    }
#undef SET
    if (rc != CURLE_OK && call->errbuf[0] == '\0')
        snprintf(call->errbuf, sizeof(call->errbuf), "%s", curl_easy_strerror(rc));
    return rc == CURLE_OK ? 0 : -1;
}

/* Hands the finished call to its waiter or loop, or frees it when nobody wants it any more. */
static void complete(gw_http_call_t *call)
{
    pthread_mutex_lock(&g.mu);
    if (call->detached) {
        if (h2o_linklist_is_linked(&call->cancel_link))
            h2o_linklist_unlink(&call->cancel_link);
        if (h2o_linklist_is_linked(&call->hl_link))
            h2o_linklist_unlink(&call->hl_link);
        pthread_mutex_unlock(&g.mu);
        call_free(call);
        return;
    }
    call->state = CALL_DONE;
    if (call->waiter != NULL) {
        call->waiter->done = true;
        pthread_cond_signal(&call->waiter->cond);
    } else {
        h2o_multithread_send_message(&call->hl->receiver, &call->msg);
    }
    pthread_mutex_unlock(&g.mu);
}

/* Takes the call's easy handle back (removing it from the multi when it is in). */
static void release_easy(gw_http_call_t *call, bool in_multi)
{
    if (call->easy == NULL)
        return;
    if (in_multi)
        curl_multi_remove_handle(g.multi, call->easy);
    easy_put(call->easy);
    call->easy = NULL;
}

static void fail(gw_http_call_t *call, const char *error)
{
    set_error(&call->res, error);
    complete(call);
}

/* Builds the response of a finished transfer and completes the call. */
static void finish(gw_http_call_t *call, CURLcode code)
{
    gw_http_response_t *res = &call->res;
    curl_off_t usec = 0;
    long status = 0;
    curl_easy_getinfo(call->easy, CURLINFO_TOTAL_TIME_T, &usec);
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
    release_easy(call, true);

    if (code == CURLE_OK && status != 0) {
        res->status = status;
        res->body = call->buf != NULL ? call->buf : memdup0("", 0);
        res->body_len = call->len;
        if (call->buf != NULL)
            res->body[call->len] = '\0';
        call->buf = NULL;
        res->headers = call->hdrs;
        res->nheaders = call->nhdrs;
        call->hdrs = NULL;
        call->nhdrs = call->caphdrs = 0;
    } else if (call->too_large || code == CURLE_FILESIZE_EXCEEDED) {
        set_error(res, err_too_large);
    } else {
        char msg[CURL_ERROR_SIZE + 100];
        if (code == CURLE_OK)
            snprintf(msg, sizeof(msg), "no HTTP status received");
        else if (call->errbuf[0] != '\0')
            snprintf(msg, sizeof(msg), "%s: %s", curl_easy_strerror(code), call->errbuf);
        else
            snprintf(msg, sizeof(msg), "%s", curl_easy_strerror(code));
        set_error(res, msg);
    }
    res->seconds = (double)usec / 1e6;
    complete(call);
}

static void start_call(gw_http_call_t *call)
{
    call->easy = easy_get();
    if (setup_easy(call) != 0) {
        char msg[CURL_ERROR_SIZE + 40];
        snprintf(msg, sizeof(msg), "invalid request: %s", call->errbuf);
        release_easy(call, false);
        fail(call, msg);
        return;
    }
    CURLMcode mc = curl_multi_add_handle(g.multi, call->easy);
    if (mc != CURLM_OK) {
        release_easy(call, false);
        fail(call, curl_multi_strerror(mc));
        return;
    }
    h2o_linklist_insert(&g.active, &call->link);
}

/* Drops calls whose loop no longer wants them (detached while ACTIVE). */
static void drop_cancelled(h2o_linklist_t *cancels)
{
    while (!h2o_linklist_is_empty(cancels)) {
        gw_http_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_http_call_t, cancel_link, cancels->next);
        h2o_linklist_unlink(&call->cancel_link);
        h2o_linklist_unlink(&call->link); /* from g.active */
        release_easy(call, true);
        pthread_mutex_lock(&g.mu);
        if (h2o_linklist_is_linked(&call->hl_link))
            h2o_linklist_unlink(&call->hl_link);
        pthread_mutex_unlock(&g.mu);
        call_free(call);
    }
}

static void *worker_main(void *unused)
{
    h2o_linklist_t incoming, cancels;
    h2o_linklist_init_anchor(&incoming);
    h2o_linklist_init_anchor(&cancels);

    for (;;) {
        pthread_mutex_lock(&g.mu);
        bool stopping = g.stopping;
        h2o_linklist_insert_list(&incoming, &g.inbox);
        h2o_linklist_insert_list(&cancels, &g.cancels);
        for (h2o_linklist_t *l = incoming.next; l != &incoming; l = l->next)
            H2O_STRUCT_FROM_MEMBER(gw_http_call_t, link, l)->state = CALL_ACTIVE;
        pthread_mutex_unlock(&g.mu);

        drop_cancelled(&cancels);
        if (stopping)
            break;
        while (!h2o_linklist_is_empty(&incoming)) {
            gw_http_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_http_call_t, link, incoming.next);
            h2o_linklist_unlink(&call->link);
            start_call(call);
        }

        int running;
        curl_multi_perform(g.multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(g.multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            char *priv = NULL;
            CURLcode code = m->data.result;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
            gw_http_call_t *call = (gw_http_call_t *)priv;
            h2o_linklist_unlink(&call->link);
            finish(call, code); /* m is invalid from here */
        }
        curl_multi_poll(g.multi, NULL, 0, POLL_MAX_MS, NULL);
    }

    /* shutting down: everything not yet finished completes with an error */
    while (!h2o_linklist_is_empty(&incoming)) {
        gw_http_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_http_call_t, link, incoming.next);
        h2o_linklist_unlink(&call->link);
        fail(call, err_shutting_down);
    }
    while (!h2o_linklist_is_empty(&g.active)) {
        gw_http_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_http_call_t, link, g.active.next);
        h2o_linklist_unlink(&call->link);
        release_easy(call, true);
        fail(call, err_shutting_down);
    }
    return NULL;
}

/* ---- process-wide start and stop ------------------------------------------------------------------ */

int gw_http_init(const gw_http_options_t *opts)
{
    pthread_mutex_lock(&g.mu);
    bool busy = g.running || g.multi != NULL;
    pthread_mutex_unlock(&g.mu);
    if (busy) {
        gw_log(GW_LOG_ERROR, "http client: gw_http_init called twice");
        return -1;
    }
    gw_http_options_t o = opts != NULL ? *opts : (gw_http_options_t){0};
    if (o.timeout_ms < 0 || o.connect_timeout_ms < 0 || o.max_host_connections < 0) {
        gw_log(GW_LOG_ERROR, "http client: negative option");
        return -1;
    }
    if (o.timeout_ms == 0)
        o.timeout_ms = DEFAULT_TIMEOUT_MS;
    if (o.connect_timeout_ms == 0)
        o.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (o.max_host_connections == 0)
        o.max_host_connections = DEFAULT_MAX_HOST_CONNECTIONS;
    if (o.max_body == 0)
        o.max_body = DEFAULT_MAX_BODY;

    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        gw_log(GW_LOG_ERROR, "http client: curl_global_init: %s", curl_easy_strerror(rc));
        return -1;
    }
    int ret = -1;
    CURLM *multi = curl_multi_init();
    if (multi == NULL)
        h2o_fatal("no memory");
    if (curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, o.max_host_connections) != CURLM_OK) {
        gw_log(GW_LOG_ERROR, "http client: CURLMOPT_MAX_HOST_CONNECTIONS refused");
        goto Exit;
    }

    pthread_mutex_lock(&g.mu);
    g.opts = o;
    g.multi = multi;
    g.stopping = false;
    h2o_linklist_init_anchor(&g.inbox);
    h2o_linklist_init_anchor(&g.cancels);
    h2o_linklist_init_anchor(&g.active);
    g.npool = 0;
    pthread_mutex_unlock(&g.mu);

    /* the worker blocks every signal: they belong to the main thread, and a SIGPIPE raised by a write
     * on a dead connection stays pending there instead of killing the process */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&g.thread, NULL, worker_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        gw_log(GW_LOG_ERROR, "http client: pthread_create: %s", strerror(err));
        pthread_mutex_lock(&g.mu);
        g.multi = NULL;
        pthread_mutex_unlock(&g.mu);
        goto Exit;
    }
    pthread_mutex_lock(&g.mu);
    g.running = true;
    pthread_mutex_unlock(&g.mu);
    ret = 0;
Exit:
    if (ret != 0) {
        curl_multi_cleanup(multi);
        curl_global_cleanup();
    }
    return ret;
}

void gw_http_shutdown(void)
{
    pthread_mutex_lock(&g.mu);
    if (g.multi == NULL) {
        pthread_mutex_unlock(&g.mu);
        return;
    }
    g.running = false;
    g.stopping = true;
    curl_multi_wakeup(g.multi);
    pthread_mutex_unlock(&g.mu);

    pthread_join(g.thread, NULL);

    pthread_mutex_lock(&g.mu);
    CURLM *multi = g.multi;
    g.multi = NULL;
    pthread_mutex_unlock(&g.mu);
    while (g.npool != 0)
        curl_easy_cleanup(g.pool[--g.npool]);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
}

/* ---- blocking calls ---------------------------------------------------------------------------- */

int gw_http_do(const gw_http_request_t *req, gw_http_response_t *res)
{
    memset(res, 0, sizeof(*res));
    const char *why;
    gw_http_call_t *call = call_new(req, &why);
    if (call == NULL) {
        set_error(res, why);
        return -1;
    }
    waiter_t w = {.done = false};
    pthread_cond_init(&w.cond, NULL);
    call->waiter = &w;

    pthread_mutex_lock(&g.mu);
    if (!g.running) {
        pthread_mutex_unlock(&g.mu);
        pthread_cond_destroy(&w.cond);
        call_free(call);
        set_error(res, err_not_running);
        return -1;
    }
    call->state = CALL_QUEUED;
    h2o_linklist_insert(&g.inbox, &call->link);
    curl_multi_wakeup(g.multi);
    while (!w.done)
        pthread_cond_wait(&w.cond, &g.mu);
    pthread_mutex_unlock(&g.mu);
    pthread_cond_destroy(&w.cond);

    *res = call->res;
    memset(&call->res, 0, sizeof(call->res));
    call_free(call);
    return res->error == NULL ? 0 : -1;
}

/* ---- calls from an event loop ---------------------------------------------------------------------- */

static void on_message(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    gw_http_loop_t *hl = H2O_STRUCT_FROM_MEMBER(gw_http_loop_t, receiver, receiver);
    h2o_linklist_t delivered;
    h2o_linklist_init_anchor(&delivered);

    pthread_mutex_lock(&g.mu);
    while (!h2o_linklist_is_empty(messages)) {
        gw_http_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_http_call_t, msg.link, messages->next);
        h2o_linklist_unlink(&call->msg.link);
        h2o_linklist_unlink(&call->hl_link);
        call->hl = NULL;
        call->state = CALL_DELIVERED;
        h2o_linklist_insert(&delivered, &call->link);
    }
    pthread_mutex_unlock(&g.mu);

    hl->dispatching = true;
    while (!h2o_linklist_is_empty(&delivered)) {
        gw_http_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_http_call_t, link, delivered.next);
        h2o_linklist_unlink(&call->link);
        if (!call->detached) {
            /* the callee owns the contents of res now; the struct itself goes with the call */
            call->cb(call->data, &call->res);
            memset(&call->res, 0, sizeof(call->res));
        }
        call_free(call);
    }
    hl->dispatching = false;
}

gw_http_loop_t *gw_http_loop_create(h2o_evloop_t *loop)
{
    gw_http_loop_t *hl = h2o_mem_alloc(sizeof(*hl));
    memset(hl, 0, sizeof(*hl));
    hl->loop = loop;
    hl->queue = h2o_multithread_create_queue(loop);
    h2o_multithread_register_receiver(hl->queue, &hl->receiver, on_message);
    h2o_linklist_init_anchor(&hl->calls);
    return hl;
}

void gw_http_loop_destroy(gw_http_loop_t *hl)
{
    if (hl->dispatching)
        h2o_fatal("gw_http_loop_destroy called from a gw_http_cb");

    /* take every call of this loop away from the worker and the queue, then answer the wanted ones */
    h2o_linklist_t owned; /* calls this thread now owns, via link */
    h2o_linklist_init_anchor(&owned);
    size_t nlost = 0, caplost = 0;
    struct {
        gw_http_cb cb;
        void *data;
    } *lost = NULL; /* ACTIVE calls: the worker keeps (and frees) them; their callers get an error */

    pthread_mutex_lock(&g.mu);
    bool wake = false;
    while (!h2o_linklist_is_empty(&hl->calls)) {
        gw_http_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_http_call_t, hl_link, hl->calls.next);
        h2o_linklist_unlink(&call->hl_link);
        call->hl = NULL;
        switch (call->state) {
        case CALL_QUEUED:
            h2o_linklist_unlink(&call->link);
            set_error(&call->res, err_shutting_down);
            h2o_linklist_insert(&owned, &call->link);
            break;
        case CALL_ACTIVE:
            if (!call->detached) {
                if (nlost == caplost) {
                    caplost = caplost == 0 ? 8 : caplost * 2;
                    lost = xrealloc(lost, caplost * sizeof(*lost));
                }
                lost[nlost].cb = call->cb;
                lost[nlost].data = call->data;
                ++nlost;
                call->detached = true;
                h2o_linklist_insert(&g.cancels, &call->cancel_link);
                wake = true;
            }
            break;
        case CALL_DONE:
            h2o_linklist_unlink(&call->msg.link); /* from hl->receiver: only the worker sends, under g.mu */
            h2o_linklist_insert(&owned, &call->link);
            break;
        case CALL_DELIVERED:
            break; /* not on hl->calls */
        }
    }
    if (wake && g.multi != NULL)
        curl_multi_wakeup(g.multi);
    pthread_mutex_unlock(&g.mu);

    h2o_multithread_unregister_receiver(hl->queue, &hl->receiver);
    h2o_multithread_destroy_queue(hl->queue);
#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR <= 2
    free(hl->queue); /* 2.2's destroy_queue closes the pipe but forgets to free the queue itself */
#endif
    free(hl);

    while (!h2o_linklist_is_empty(&owned)) {
        gw_http_call_t *call = H2O_STRUCT_FROM_MEMBER(gw_http_call_t, link, owned.next);
        h2o_linklist_unlink(&call->link);
        if (!call->detached) {
            call->cb(call->data, &call->res);
            memset(&call->res, 0, sizeof(call->res));
        }
        call_free(call);
    }
    for (size_t i = 0; i != nlost; ++i) {
        gw_http_response_t res = {0};
        set_error(&res, err_shutting_down);
        lost[i].cb(lost[i].data, &res);
    }
    free(lost);
}

gw_http_call_t *gw_http_start(gw_http_loop_t *hl, const gw_http_request_t *req, gw_http_cb cb, void *data)
{
    const char *why;
    gw_http_call_t *call = hl != NULL && cb != NULL ? call_new(req, &why) : NULL;
    if (call == NULL)
        return NULL;
    call->hl = hl;
    call->cb = cb;
    call->data = data;

    pthread_mutex_lock(&g.mu);
    if (!g.running) {
        pthread_mutex_unlock(&g.mu);
        call_free(call);
        return NULL;
    }
    call->state = CALL_QUEUED;
    h2o_linklist_insert(&g.inbox, &call->link);
    h2o_linklist_insert(&hl->calls, &call->hl_link);
    curl_multi_wakeup(g.multi);
    pthread_mutex_unlock(&g.mu);
    return call;
}

void gw_http_detach(gw_http_call_t *call)
{
    bool free_now = false;
    pthread_mutex_lock(&g.mu);
    call->detached = true;
    switch (call->state) {
    case CALL_QUEUED:
        h2o_linklist_unlink(&call->link);
        h2o_linklist_unlink(&call->hl_link);
        free_now = true;
        break;
    case CALL_ACTIVE:
        h2o_linklist_insert(&g.cancels, &call->cancel_link);
        if (g.multi != NULL)
            curl_multi_wakeup(g.multi);
        break;
    case CALL_DONE:      /* the loop frees it when the message arrives */
    case CALL_DELIVERED: /* the dispatch in progress frees it */
        break;
    }
    pthread_mutex_unlock(&g.mu);
    if (free_now)
        call_free(call);
}

/* ---- responses ------------------------------------------------------------------------------------ */

const char *gw_http_response_header(const gw_http_response_t *res, const char *name)
{
    for (size_t i = 0; i != res->nheaders; ++i)
        if (strcasecmp(res->headers[i].name, name) == 0)
            return res->headers[i].value;
    return NULL;
}

void gw_http_response_free(gw_http_response_t *res)
{
    free(res->error);
    free(res->body);
    for (size_t i = 0; i != res->nheaders; ++i) {
        free(res->headers[i].name);
        free(res->headers[i].value);
    }
    free(res->headers);
    memset(res, 0, sizeof(*res));
}

int gw_http_init_config(const gw_config_t *cfg)
{
    gw_http_options_t opts = {.timeout_ms = cfg->http_timeout_ms,
                              .connect_timeout_ms = cfg->http_connect_timeout_ms,
                              .max_host_connections = cfg->http_max_host_connections,
                              .max_body = 64 * 1024 * 1024};
    return gw_http_init(&opts);
}
