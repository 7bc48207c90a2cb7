/* SPDX-License-Identifier: MIT */
/*
 * server.c: starts one event loop per thread, each accepting on its own SO_REUSEPORT socket, and
 * stops them gracefully: on SIGTERM/SIGINT every loop closes its listener, waits until its database
 * pool has no job queued or in flight (bounded by SETTLED_SHUTDOWN_TIMEOUT_MS), flushes replies and
 * returns.
 */
#include "server.h"
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "crypto.h"
#include "guard.h"
#include "http_client.h"
#include "listen_lock.h"
#include "log.h"
#include "loop.h"
#include "mem.h"
#include "ops.h"
#include "orgs.h"
#include "routes.h"
#include "sdnotify.h"
#include "worker.h"

#define LOOP_WAIT_MS 100
#define FLUSH_GRACE_MS 200

static atomic_bool stopping;
/* Kept until exit: keep-alive connections still open at shutdown point into the loops and the configuration. */
static gw_loop_t *all_loops;
static h2o_globalconf_t conf;

/* h2o 2.2 caches freed socket buffers per thread with no call to release the cache; give them back before the
 * thread ends (a chunk's first word links to the next, as in h2o's lib/common/memory.c). */
void gw_server_release_buffer_cache(void)
{
    struct chunk {
        struct chunk *next;
    } *c = (struct chunk *)h2o_socket_buffer_prototype.allocator._link;
    while (c != NULL) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
    h2o_socket_buffer_prototype.allocator._link = NULL;
    h2o_socket_buffer_prototype.allocator.cnt = 0;
}

static void on_signal(int signo)
{
    (void)signo;
    atomic_store(&stopping, true);
}

static int open_listener(const gw_config_t *cfg)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", cfg->listen_port);
    int rc = getaddrinfo(cfg->listen_host, port, &hints, &res);
    if (rc != 0) {
        gw_log(GW_LOG_ERROR, "SETTLED_LISTEN: cannot resolve %s: %s", cfg->listen_host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        gw_log(GW_LOG_ERROR, "SETTLED_LISTEN: cannot listen on %s:%u: %s", cfg->listen_host, cfg->listen_port,
               strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    freeaddrinfo(res);
    return fd;
}

/* One accepted connection, until its socket closes. idle_bytes: how much of it had been read when its last request
 * finished; more than that means a request is being uploaded or handled. */
typedef struct st_conn_t {
    h2o_linklist_t link; /* in gw_loop_t.conns */
    h2o_socket_t *sock;
    size_t idle_bytes;
} conn_t;

static void on_conn_close(void *data)
{
    conn_t *c = data;
    h2o_linklist_unlink(&c->link);
    free(c);
}

void gw_server_request_done(h2o_req_t *req)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket != NULL ? req->conn->callbacks->get_socket(req->conn) : NULL;
    if (sock != NULL && sock->on_close.cb == on_conn_close)
        ((conn_t *)sock->on_close.data)->idle_bytes = sock->bytes_read;
}

/* Whether a connection of loop has a request that is still arriving or not yet answered. */
static bool requests_in_progress(gw_loop_t *loop)
{
    for (h2o_linklist_t *l = loop->conns.next; l != &loop->conns; l = l->next) {
        conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, link, l);
        if (c->sock->bytes_read > c->idle_bytes)
            return true;
    }
    return false;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    gw_loop_t *loop = listener->data;
    if (err != NULL)
        return;
    /* accept a few at a time so one loop does not starve its other work */
    for (int i = 0; i != 16; ++i) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        conn_t *c = gw_xcalloc(1, sizeof(*c));
        c->sock = sock;
        h2o_linklist_insert(&loop->conns, &c->link);
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = c;
        h2o_accept(&loop->accept_ctx, sock);
    }
}

static void *run_loop(void *arg)
{
    gw_loop_t *loop = arg;
    const gw_config_t *cfg = loop->cfg;

    loop->listener = h2o_evloop_socket_create(loop->evloop, loop->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    loop->listener->data = loop;
    h2o_socket_read_start(loop->listener, on_accept);

    while (!atomic_load(&stopping))
        h2o_evloop_run(loop->evloop, LOOP_WAIT_MS);

    /* stop accepting; connections already accepted keep being served while commits finish, and are closed after
     * their reply */
    loop->state = GW_LOOP_STOPPING;
    h2o_socket_read_stop(loop->listener);
    h2o_socket_close(loop->listener);
    loop->listener = NULL;
    /* requests still being uploaded (h2o 2.2 hands a request over only once its body is complete) or handled are
     * finished too, within the same deadline */
    uint64_t deadline = h2o_now(loop->evloop) + (uint64_t)cfg->shutdown_timeout_ms;
    while ((!gw_db_is_idle(loop->db) || requests_in_progress(loop)) && h2o_now(loop->evloop) < deadline)
        h2o_evloop_run(loop->evloop, 10);
    if (!gw_db_is_idle(loop->db))
        gw_log(GW_LOG_WARN, "loop %d: shutdown timeout with database work in flight (nothing was acknowledged)",
               loop->index);
    else if (requests_in_progress(loop))
        gw_log(GW_LOG_WARN, "loop %d: shutdown timeout with requests still arriving (they are not acknowledged)",
               loop->index);
    /* let the last replies reach their sockets; a request read meanwhile is refused before any commit starts */
    loop->state = GW_LOOP_FLUSHING;
    uint64_t flush_until = h2o_now(loop->evloop) + FLUSH_GRACE_MS;
    while (h2o_now(loop->evloop) < flush_until)
        h2o_evloop_run(loop->evloop, 10);
    gw_server_release_buffer_cache();
    return NULL;
}

int gw_server_run(gw_config_t *cfg)
{
    char err[512];
    if (cfg->database_url == NULL || cfg->database_url[0] == '\0') {
        gw_log(GW_LOG_ERROR, "SETTLED_DATABASE_URL: required by serve");
        return 1;
    }
    if (cfg->redis_url != NULL) {
        char *host, *password;
        int port, db;
        if (gw_redis_parse_url(cfg->redis_url, &host, &port, &password, &db) != 0) {
            gw_log(GW_LOG_ERROR, "SETTLED_REDIS_URL: must look like redis://[:password@]host[:port][/db]");
            return 1;
        }
        free(host);
        free(password);
    }
    if (cfg->nsources == 0)
        gw_log(GW_LOG_WARN, "no webhook secrets configured: every webhook route answers 404");
    if (gw_orgs_resolve_sources(cfg, err, sizeof(err)) != 0) {
        gw_log(GW_LOG_ERROR, "%s", err);
        return 1;
    }

    /* one settled serve per address, unless a SETTLED_REUSEPORT_GROUP says otherwise (listen_lock.h) */
    gw_listen_lock_t *lock = gw_listen_lock_acquire(cfg);
    if (lock == NULL)
        return 1;

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    h2o_config_init(&conf);
    conf.max_request_entity_size = cfg->body_limit;
    conf.server_name = h2o_iovec_init(H2O_STRLIT("settled"));
    h2o_hostconf_t *host = h2o_config_register_host(&conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    gw_routes_register(host);
    gw_guard_start(cfg); /* the access-token rules every loop's guard shares */

    int nloops = cfg->threads;
    if (gw_http_init_config(cfg) != 0) {
        gw_log(GW_LOG_ERROR, "cannot start the outbound HTTP client");
        return 1;
    }
    gw_offload_t *offload = gw_offload_create(2);
    if (offload == NULL)
        abort();
    gw_workers_t *workers = NULL;
    if (cfg->workers > 0 && (workers = gw_workers_start(cfg, cfg->workers, err, sizeof(err))) == NULL) {
        gw_log(GW_LOG_ERROR, "%s", err);
        return 1;
    }

    /* every module's statements, prepared on every connection of every loop */
    size_t nstmts = 0;
    for (size_t i = 0; i != gw_nmodules; ++i)
        nstmts += gw_modules[i]->nstatements;
    const gw_db_statement_t **stmts = gw_xcalloc(nstmts, sizeof(*stmts));
    nstmts = 0;
    for (size_t i = 0; i != gw_nmodules; ++i)
        for (size_t j = 0; j != gw_modules[i]->nstatements; ++j)
            stmts[nstmts++] = &gw_modules[i]->statements[j];

    gw_loop_t *loops = all_loops = gw_xcalloc((size_t)nloops, sizeof(*loops));
    for (int i = 0; i != nloops; ++i) {
        gw_loop_t *loop = &loops[i];
        loop->index = i;
        loop->cfg = cfg;
        h2o_linklist_init_anchor(&loop->conns);
        if ((loop->listen_fd = open_listener(cfg)) < 0)
            return 1;
        unsigned char rnd[8];
        gw_crypto_random(rnd, sizeof(rnd));
        gw_hex_encode(rnd, sizeof(rnd), loop->request_prefix);
        loop->evloop = h2o_evloop_create();
        h2o_context_init(&loop->ctx, loop->evloop, &conf);
        loop->accept_ctx.ctx = &loop->ctx;
        loop->accept_ctx.hosts = conf.hosts;
        loop->db = gw_db_create(loop->evloop, cfg, stmts, nstmts);
        if (cfg->redis_url != NULL)
            loop->redis = gw_redis_create(loop->evloop, cfg->redis_url);
        loop->offload = gw_offload_loop_create(offload, loop->evloop);
        for (size_t m = 0; m != gw_nmodules && m != GW_LOOP_MAX_MODULES; ++m) {
            const gw_module_t *module = gw_modules[m];
            loop->modules[m].module = module;
            loop->modules[m].state = module->on_loop_init != NULL ? module->on_loop_init(loop) : NULL;
            loop->nmodules = m + 1;
        }
    }

    gw_logline_t line;
    gw_log_begin(&line, GW_LOG_INFO, "listening");
    char addr[300];
    int n = snprintf(addr, sizeof(addr), "%s:%u", cfg->listen_host, cfg->listen_port);
    gw_log_str(&line, "listen", addr, (size_t)n);
    gw_log_int(&line, "threads", nloops);
    gw_log_int(&line, "sources", (long long)cfg->nsources);
    gw_log_end(&line);

    for (int i = 0; i != nloops; ++i)
        if (pthread_create(&loops[i].tid, NULL, run_loop, &loops[i]) != 0) {
            gw_log(GW_LOG_ERROR, "cannot start thread %d: %s", i, strerror(errno));
            abort();
        }
    if (gw_sd_notify("READY=1") < 0) /* Type=notify: every listener is open and the loops run */
        gw_log(GW_LOG_WARN, "NOTIFY_SOCKET: cannot tell systemd we are ready: %s", strerror(errno));
    for (int i = 0; i != nloops; ++i)
        pthread_join(loops[i].tid, NULL);

    for (int i = 0; i != nloops; ++i) {
        if (loops[i].redis != NULL)
            gw_redis_destroy(loops[i].redis);
        gw_offload_loop_destroy(loops[i].offload);
        loops[i].offload = NULL;
        gw_db_destroy(loops[i].db);
        for (size_t m = 0; m != loops[i].nmodules; ++m) {
            const gw_module_t *module = loops[i].modules[m].module;
            if (module->on_loop_dispose != NULL)
                module->on_loop_dispose(&loops[i], loops[i].modules[m].state);
        }
    }
    if (workers != NULL)
        gw_workers_stop(workers); /* they finish the batch in hand */
    gw_offload_destroy(offload);
    gw_guard_stop();
    gw_ops_gauges_shutdown();
    gw_http_shutdown();
    gw_listen_lock_release(lock);
    free(stmts);
    gw_log(GW_LOG_INFO, "stopped");
    /* the loops and contexts stay allocated: live keep-alive connections still point into them */
    return 0;
}
