/* SPDX-License-Identifier: MIT */
/*
 * redis.c: hiredis 0.14 on the h2o evloop. hiredis ships no adapter for h2o, so this file is one:
 * libhiredis' fd is wrapped as a DONT_READ h2o socket, read interest maps to read_start/stop, write
 * interest to a one-shot notify_write (armed at most once), and cleanup detaches the fd without
 * closing it (hiredis closes it). hiredis 0.14 has no timers, so a one-second tick enforces connect
 * and ping timeouts and reconnects with backoff.
 *
 * redisAsyncConnect resolves a host name with getaddrinfo, synchronously, so it only ever gets an address: a
 * host name is resolved by resolve.c on a thread (again on every reconnect after a failure, so a name that
 * moved is followed), IPv4 first as hiredis itself prefers, and consecutive failed attempts go through the
 * name's addresses in turn.
 */
#include "redis.h"
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "resolve.h"

#define TICK_MS 1000
#define TIMEOUT_MS 2000
#define BACKOFF_MS 1000

struct st_gw_redis_t {
    h2o_evloop_t *loop;
    char *host, *password;
    int port, db;
    redisAsyncContext *ac;
    h2o_socket_t *sock;
    bool reading, write_armed, connected, up, ping_outstanding, closing;
    uint64_t started_at, ping_at, retry_at;
    gw_resolver_t *resolver; /* NULL when host is an address */
    gw_resolve_req_t resolve;
    bool resolving;     /* waiting for the addresses of host */
    uint64_t failed_at; /* when the last connection or attempt failed (0: none yet) */
    unsigned attempts;  /* failed attempts in a row: which of host's addresses is next */
    h2o_timeout_t tick;
    h2o_timeout_entry_t tick_entry;
};

static void set_up(gw_redis_t *r, bool up)
{
    if (r->up == up)
        return;
    r->up = up;
    gw_metrics_redis_up(up ? 1 : -1);
    gw_log(up ? GW_LOG_INFO : GW_LOG_WARN, "redis %s:%d is %s", r->host, r->port, up ? "up" : "down");
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    gw_redis_t *r = sock->data;
    if (r->ac != NULL)
        redisAsyncHandleRead(r->ac);
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    gw_redis_t *r = sock->data;
    r->write_armed = false;
    if (r->ac != NULL)
        redisAsyncHandleWrite(r->ac);
}

static void ev_add_read(void *data)
{
    gw_redis_t *r = data;
    if (r->sock != NULL && !r->reading) {
        h2o_socket_read_start(r->sock, on_readable);
        r->reading = true;
    }
}

static void ev_del_read(void *data)
{
    gw_redis_t *r = data;
    if (r->sock != NULL && r->reading) {
        h2o_socket_read_stop(r->sock);
        r->reading = false;
    }
}

static void ev_add_write(void *data)
{
    gw_redis_t *r = data;
    if (r->sock != NULL && !r->write_armed) {
        r->write_armed = true;
        h2o_socket_notify_write(r->sock, on_writable);
    }
}

static void ev_del_write(void *data)
{
    /* a notify_write cannot be disarmed; a spurious wake-up is harmless */
}

static void ev_cleanup(void *data)
{
    gw_redis_t *r = data;
    if (r->sock == NULL)
        return;
    if (r->write_armed)
        r->sock->_cb.write = NULL;
    h2o_socket_export_t info;
    if (h2o_socket_export(r->sock, &info) == 0 && info.input != NULL)
        h2o_buffer_dispose(&info.input);
    r->sock = NULL;
    r->reading = r->write_armed = false;
}

/* The connection or the attempt failed: retry after the backoff, re-resolving host. */
static void failed(gw_redis_t *r, bool attempt)
{
    r->failed_at = r->retry_at = h2o_now(r->loop);
    r->retry_at += BACKOFF_MS;
    if (attempt)
        ++r->attempts;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    gw_redis_t *r = ac->ev.data;
    r->ac = NULL;
    r->connected = r->ping_outstanding = false;
    if (!r->closing)
        set_up(r, false);
    failed(r, false);
}

static void on_pong(redisAsyncContext *ac, void *reply, void *privdata)
{
    gw_redis_t *r = privdata;
    redisReply *rep = reply;
    if (rep == NULL) /* the context is being freed */
        return;
    r->ping_outstanding = false;
    set_up(r, rep->type != REDIS_REPLY_ERROR);
}

static void send_ping(gw_redis_t *r)
{
    if (redisAsyncCommand(r->ac, on_pong, r, "PING") == REDIS_OK) {
        r->ping_outstanding = true;
        r->ping_at = h2o_now(r->loop);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    gw_redis_t *r = ac->ev.data;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        r->ac = NULL;
        failed(r, true);
        set_up(r, false);
        return;
    }
    r->connected = true;
    r->attempts = 0;
}

/* Connects to addr (an address of host, or host itself when it is one). */
static void connect_to(gw_redis_t *r, const char *addr)
{
    r->ac = redisAsyncConnect(addr, r->port);
    if (r->ac == NULL || r->ac->err) {
        if (r->ac != NULL)
            redisAsyncFree(r->ac);
        r->ac = NULL;
        failed(r, true);
        return;
    }
    r->started_at = h2o_now(r->loop);
    r->sock = h2o_evloop_socket_create(r->loop, r->ac->c.fd, H2O_SOCKET_FLAG_DONT_READ);
    r->sock->data = r;
    r->ac->ev.data = r;
    r->ac->ev.addRead = ev_add_read;
    r->ac->ev.delRead = ev_del_read;
    r->ac->ev.addWrite = ev_add_write;
    r->ac->ev.delWrite = ev_del_write;
    r->ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(r->ac, on_connect);
    redisAsyncSetDisconnectCallback(r->ac, on_disconnect);
    /* commands queue until the connection is up; AUTH and SELECT go first */
    if (r->password != NULL)
        redisAsyncCommand(r->ac, NULL, NULL, "AUTH %s", r->password);
    if (r->db != 0)
        redisAsyncCommand(r->ac, NULL, NULL, "SELECT %d", r->db);
    send_ping(r);
    ev_add_write(r);
}

static void connect_resolved(gw_redis_t *r, const gw_resolved_t *answer)
{
    if (answer->naddrs == 0) { /* down, as a server that is; resolve.c has logged why */
        failed(r, false);
        set_up(r, false);
        return;
    }
    connect_to(r, answer->addrs[r->attempts % answer->naddrs].host);
}

static void on_resolved(gw_resolve_req_t *req, const gw_resolved_t *answer)
{
    gw_redis_t *r = H2O_STRUCT_FROM_MEMBER(gw_redis_t, resolve, req);
    r->resolving = false;
    connect_resolved(r, answer);
}

static void start_connect(gw_redis_t *r)
{
    if (r->resolver == NULL) {
        connect_to(r, r->host);
        return;
    }
    /* a lookup newer than the last failure: after a failover the name may point elsewhere */
    const gw_resolved_t *answer = gw_resolve(r->resolver, r->failed_at, &r->resolve, on_resolved);
    if (answer != NULL)
        connect_resolved(r, answer);
    else
        r->resolving = true;
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    gw_redis_t *r = H2O_STRUCT_FROM_MEMBER(gw_redis_t, tick_entry, entry);
    uint64_t now = h2o_now(r->loop);
    if (r->ac == NULL) {
        if (!r->resolving && now >= r->retry_at)
            start_connect(r);
    } else if ((!r->connected && now - r->started_at > TIMEOUT_MS) ||
               (r->ping_outstanding && now - r->ping_at > TIMEOUT_MS)) {
        gw_log(GW_LOG_WARN, "redis %s:%d timed out", r->host, r->port);
        redisAsyncContext *ac = r->ac;
        bool attempt = !r->connected;
        redisAsyncFree(ac); /* fires on_disconnect (when connected) and ev_cleanup */
        r->ac = NULL;
        r->connected = r->ping_outstanding = false;
        set_up(r, false);
        failed(r, attempt);
    } else if (r->connected && !r->ping_outstanding) {
        send_ping(r);
    }
    h2o_timeout_link(r->loop, &r->tick, &r->tick_entry);
}

int gw_redis_parse_url(const char *url, char **host, int *port, char **password, int *db)
{
    *host = *password = NULL;
    *port = 6379;
    *db = 0;
    if (strncmp(url, "redis://", 8) != 0)
        return -1;
    int ret = -1;
    const char *p = url + 8, *at = strchr(p, '@'), *end;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon != NULL ? colon + 1 : p;
        *password = gw_xstrndup(pw, (size_t)(at - pw));
        p = at + 1;
    }
    for (end = p; *end != '\0' && *end != ':' && *end != '/'; ++end)
        ;
    if (end == p)
        goto Exit;
    *host = gw_xstrndup(p, (size_t)(end - p));
    if (*end == ':') {
        char *stop;
        long v = strtol(end + 1, &stop, 10);
        if (stop == end + 1 || v < 1 || v > 65535)
            goto Exit;
        *port = (int)v;
        end = stop;
    }
    if (*end == '/' && end[1] != '\0') {
        char *stop;
        long v = strtol(end + 1, &stop, 10);
        if (*stop != '\0' || v < 0 || v > 1000)
            goto Exit;
        *db = (int)v;
    } else if (*end != '\0' && strcmp(end, "/") != 0) {
        goto Exit;
    }
    ret = 0;
Exit:
    if (ret != 0) {
        free(*host);
        free(*password);
        *host = *password = NULL;
    }
    return ret;
}

gw_redis_t *gw_redis_create(h2o_evloop_t *loop, const char *url)
{
    gw_redis_t *r = h2o_mem_alloc(sizeof(*r));
    *r = (gw_redis_t){.loop = loop};
    if (gw_redis_parse_url(url, &r->host, &r->port, &r->password, &r->db) != 0) {
        free(r);
        return NULL;
    }
    h2o_timeout_init(loop, &r->tick, TICK_MS);
    r->tick_entry.cb = on_tick;
    if (!gw_resolve_is_numeric(r->host)) {
        const char *names[] = {r->host};
        r->resolver = gw_resolver_create(loop, "SETTLED_REDIS_URL", names, 1, true);
    }
    start_connect(r);
    h2o_timeout_link(loop, &r->tick, &r->tick_entry);
    return r;
}

void gw_redis_destroy(gw_redis_t *r)
{
    r->closing = true;
    if (r->ac != NULL) {
        redisAsyncFree(r->ac);
        r->ac = NULL;
    }
    gw_resolver_destroy(r->resolver);
    if (r->up) { /* shutting down is not Redis going down: no log line */
        r->up = false;
        gw_metrics_redis_up(-1);
    }
    if (h2o_timeout_is_linked(&r->tick_entry))
        h2o_timeout_unlink(&r->tick_entry);
    h2o_timeout_dispose(r->loop, &r->tick);
    free(r->host);
    free(r->password);
    free(r);
}

bool gw_redis_is_up(const gw_redis_t *r)
{
    return r->up;
}

typedef struct st_exists_call_t {
    gw_redis_exists_cb cb;
    void *data;
} exists_call_t;

static void on_exists(redisAsyncContext *ac, void *reply, void *privdata)
{
    exists_call_t *call = privdata;
    redisReply *rep = reply;
    int result = rep == NULL || rep->type != REDIS_REPLY_INTEGER ? -1 : rep->integer > 0 ? 1 : 0;
    call->cb(call->data, result);
    free(call);
}

int gw_redis_exists(gw_redis_t *r, const char *key, size_t len, gw_redis_exists_cb cb, void *data)
{
    return gw_redis_exists_any(r, &key, &len, 1, cb, data);
}

int gw_redis_exists_any(gw_redis_t *r, const char *const *keys, const size_t *lens, size_t n, gw_redis_exists_cb cb,
                        void *data)
{
    if (r == NULL || !r->up || r->ac == NULL || !r->connected || n == 0 || n > GW_REDIS_EXISTS_MAX)
        return -1;
    const char *argv[GW_REDIS_EXISTS_MAX + 1] = {"EXISTS"};
    size_t argl[GW_REDIS_EXISTS_MAX + 1] = {6};
    for (size_t i = 0; i != n; ++i)
        argv[i + 1] = keys[i], argl[i + 1] = lens[i];
    exists_call_t *call = h2o_mem_alloc(sizeof(*call));
    *call = (exists_call_t){.cb = cb, .data = data};
    if (redisAsyncCommandArgv(r->ac, on_exists, call, (int)n + 1, argv, argl) != REDIS_OK) {
        free(call);
        return -1;
    }
    return 0;
}
