/* SPDX-License-Identifier: MIT */
/* alert.c: the bounded queue and the thread that post the operational webhook, signed as Stripe signs. */
#include "alert.h"
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "crypto.h"
#include "http_client.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"

static const int retry_ms[GW_ALERT_TRIES - 1] = {1000, 5000, 30000};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t tid;
    bool running, stopping;
    const gw_config_t *cfg;
    char *queue[GW_ALERT_QUEUE_MAX]; /* JSON bodies, oldest at head */
    size_t head, n;
} a = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Posts body once, signed now. Returns the HTTP status (0: no answer), with why in res's error. */
static long post(const char *body, char *why, size_t whylen)
{
    const gw_config_t *cfg = a.cfg;
    char t[24], sig[65], header[160];
    snprintf(t, sizeof(t), "%lld", (long long)time(NULL));
    cn_str_t parts[] = {{t, strlen(t)}, CN_STR_LIT("."), {body, strlen(body)}};
    unsigned char mac[32];
    if (gw_crypto_hmac_sha256(cfg->alert_webhook_secret, strlen(cfg->alert_webhook_secret), parts, 3, mac) != 0) {
        snprintf(why, whylen, "cannot sign the alert");
        return 0;
    }
    gw_hex_encode(mac, sizeof(mac), sig);
    snprintf(header, sizeof(header), "Stripe-Signature: t=%s,v1=%s", t, sig);
    const char *headers[] = {"Content-Type: application/json", "User-Agent: settled-alerts", header, NULL};
    gw_http_request_t req = {.method = "POST",
                             .url = cfg->alert_webhook_url,
                             .headers = headers,
                             .body = body,
                             .body_len = strlen(body),
                             .timeout_ms = 10000};
    gw_http_response_t res;
    gw_http_do(&req, &res);
    long status = res.status;
    if (status == 0)
        snprintf(why, whylen, "%s", res.error != NULL ? res.error : "no answer");
    else
        snprintf(why, whylen, "answered %ld", status);
    gw_http_response_free(&res);
    return status;
}

/* Waits ms, or less if stopping. Called and returns with the lock held. */
static void pause_locked(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000)
        ts.tv_sec += 1, ts.tv_nsec -= 1000000000;
    while (!a.stopping && pthread_cond_timedwait(&a.wake, &a.lock, &ts) != ETIMEDOUT)
        ;
}

static void *on_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&a.lock);
    for (;;) {
        while (!a.stopping && a.n == 0)
            pthread_cond_wait(&a.wake, &a.lock);
        if (a.stopping)
            break;
        char *body = a.queue[a.head];
        a.head = (a.head + 1) % GW_ALERT_QUEUE_MAX;
        --a.n;
        bool sent = false;
        char why[300] = "";
        for (int i = 0; i != GW_ALERT_TRIES && !a.stopping; ++i) {
            if (i != 0)
                pause_locked(retry_ms[i - 1]);
            if (a.stopping)
                break;
            pthread_mutex_unlock(&a.lock);
            long status = post(body, why, sizeof(why));
            pthread_mutex_lock(&a.lock);
            if ((sent = status >= 200 && status < 300))
                break;
        }
        gw_metrics_alert(sent ? "sent" : "failed");
        if (!sent)
            gw_log(GW_LOG_WARN, "alert not delivered to SETTLED_ALERT_WEBHOOK_URL after %d tries: %s", GW_ALERT_TRIES,
                   why);
        free(body);
    }
    pthread_mutex_unlock(&a.lock);
    return NULL;
}

void gw_alert_start(const gw_config_t *cfg)
{
    if (cfg->alert_webhook_url == NULL || cfg->alert_webhook_secret == NULL)
        return;
    pthread_mutex_lock(&a.lock);
    if (!a.running) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&a.wake, &attr);
        pthread_condattr_destroy(&attr);
        a.cfg = cfg;
        a.stopping = false;
        if (pthread_create(&a.tid, NULL, on_thread, NULL) != 0) {
            gw_log(GW_LOG_ERROR, "cannot start the alert thread: %s", strerror(errno));
            abort();
        }
        a.running = true;
    }
    pthread_mutex_unlock(&a.lock);
}

void gw_alert_stop(void)
{
    pthread_mutex_lock(&a.lock);
    if (!a.running) {
        pthread_mutex_unlock(&a.lock);
        return;
    }
    a.stopping = true;
    pthread_cond_broadcast(&a.wake);
    pthread_mutex_unlock(&a.lock);
    pthread_join(a.tid, NULL);
    pthread_mutex_lock(&a.lock);
    if (a.n != 0)
        gw_log(GW_LOG_WARN, "stopping: %zu alerts not posted", a.n);
    for (; a.n != 0; --a.n) {
        free(a.queue[a.head]);
        a.head = (a.head + 1) % GW_ALERT_QUEUE_MAX;
        gw_metrics_alert("dropped");
    }
    a.running = false;
    pthread_cond_destroy(&a.wake);
    pthread_mutex_unlock(&a.lock);
}

/* Queues an alert of type with data (a reference is taken over). */
static void raise_alert(const char *type, json_t *data)
{
    pthread_mutex_lock(&a.lock);
    bool running = a.running && !a.stopping;
    pthread_mutex_unlock(&a.lock);
    if (!running) {
        json_decref(data);
        return;
    }
    unsigned char rnd[12];
    char id[40], hex[25];
    gw_crypto_random(rnd, sizeof(rnd));
    gw_hex_encode(rnd, sizeof(rnd), hex);
    snprintf(id, sizeof(id), "alert_%s", hex);
    json_t *o =
        json_pack("{s:s, s:s, s:I, s:o}", "id", id, "type", type, "created", (json_int_t)time(NULL), "data", data);
    char *body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body == NULL)
        return;
    pthread_mutex_lock(&a.lock);
    if (a.n == GW_ALERT_QUEUE_MAX) {
        pthread_mutex_unlock(&a.lock);
        free(body);
        gw_metrics_alert("dropped");
        gw_log(GW_LOG_WARN, "alert %s (%s) dropped: %d alerts are already waiting to be posted", id, type,
               GW_ALERT_QUEUE_MAX);
        return;
    }
    a.queue[(a.head + a.n) % GW_ALERT_QUEUE_MAX] = body;
    ++a.n;
    pthread_cond_signal(&a.wake);
    pthread_mutex_unlock(&a.lock);
}

/* A JSON string of s, or null. */
static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

void gw_alert_dead(const gw_queue_dead_t *d)
{
    json_t *data = json_object();
    json_object_set_new(data, "id", str_or_null(d->id));
    json_object_set_new(data, "provider", str_or_null(d->provider));
    json_object_set_new(data, "event_id", str_or_null(d->event_id));
    json_object_set_new(data, "event_type", str_or_null(d->event_type));
    json_object_set_new(data, "attempts", json_integer(d->attempts));
    json_object_set_new(data, "last_error", str_or_null(d->error));
    json_object_set_new(data, "correlation_id", str_or_null(d->correlation));
    raise_alert("event.dead", data);
}

void gw_alert_writeback(const char *status, const char *id, int64_t organisation_id, const char *payment_id,
                        int attempts, const char *reason)
{
    json_t *data = json_object();
    json_object_set_new(data, "id", str_or_null(id));
    json_object_set_new(data, "organisation_id", json_integer((json_int_t)organisation_id));
    json_object_set_new(data, "payment_id", str_or_null(payment_id));
    json_object_set_new(data, "attempts", json_integer(attempts));
    json_object_set_new(data, "reason", str_or_null(reason));
    raise_alert(strcmp(status, "dead") == 0 ? "writeback.dead" : "writeback.refused", data);
}

void gw_alert_reauth(const char *provider, int64_t organisation_id, int64_t token_id, const char *reason,
                     const char *correlation)
{
    json_t *data = json_object();
    json_object_set_new(data, "provider", str_or_null(provider));
    json_object_set_new(data, "organisation_id", json_integer((json_int_t)organisation_id));
    json_object_set_new(data, "token_id", json_integer((json_int_t)token_id));
    json_object_set_new(data, "reason", str_or_null(reason));
    json_object_set_new(data, "correlation_id", str_or_null(correlation));
    raise_alert("connection.needs_reauth", data);
}

void gw_alert_circuit(const char *provider, const char *account, const char *state, const char *error)
{
    json_t *data = json_object();
    json_object_set_new(data, "provider", str_or_null(provider));
    json_object_set_new(data, "account", str_or_null(account));
    json_object_set_new(data, "state", str_or_null(state));
    json_object_set_new(data, "last_error", str_or_null(error));
    char type[32];
    snprintf(type, sizeof(type), "circuit.%s", state);
    raise_alert(type, data);
}
