/* SPDX-License-Identifier: MIT */
/*
 * work.c: `settled work` with its operator listener. The listener is bound without SO_REUSEPORT: it has one loop, and
 * a second `settled work` given the same address must fail to start (with the address named) rather than share it.
 * The loop has what the ops handlers use: a database pool of one connection (readiness) and an offload thread (the
 * shared gauges of /metrics, read from PostgreSQL there, never on the loop).
 */
#include "work.h"
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "crypto.h"
#include "log.h"
#include "loop.h"
#include "ops.h"
#include "routes.h"
#include "server.h"
#include "worker.h"

#define OPS_WAIT_MS 100

static atomic_bool ops_stop;

static int open_ops_listener(const gw_config_t *cfg, char *shown, size_t cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", cfg->ops_listen_port);
    snprintf(shown, cap, strchr(cfg->ops_listen_host, ':') != NULL ? "[%s]:%s" : "%s:%s", cfg->ops_listen_host, port);
    int rc = getaddrinfo(cfg->ops_listen_host, port, &hints, &res);
    if (rc != 0) {
        gw_log(GW_LOG_ERROR, "SETTLED_OPS_LISTEN: cannot resolve %s: %s", cfg->ops_listen_host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        gw_log(GW_LOG_ERROR, "SETTLED_OPS_LISTEN: cannot listen on %s: %s%s", shown, strerror(e),
               e == EADDRINUSE ? " (another settled work? give each its own SETTLED_OPS_LISTEN, or off)" : "");
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void on_ops_accept(h2o_socket_t *listener, const char *err)
{
    gw_loop_t *loop = listener->data;
    if (err != NULL)
        return;
    for (int i = 0; i != 16; ++i) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        h2o_accept(&loop->accept_ctx, sock);
    }
}

static void *ops_main(void *arg)
{
    gw_loop_t *loop = arg;
    loop->listener = h2o_evloop_socket_create(loop->evloop, loop->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    loop->listener->data = loop;
    h2o_socket_read_start(loop->listener, on_ops_accept);
    while (!atomic_load(&ops_stop))
        h2o_evloop_run(loop->evloop, OPS_WAIT_MS);
    loop->state = GW_LOOP_FLUSHING;
    h2o_socket_read_stop(loop->listener);
    h2o_socket_close(loop->listener);
    loop->listener = NULL;
    for (int i = 0; i != 5; ++i)
        h2o_evloop_run(loop->evloop, 10);
    gw_server_release_buffer_cache();
    return NULL;
}

int gw_work_run(const gw_config_t *cfg)
{
    if (cfg->ops_listen_host == NULL || cfg->database_url == NULL || cfg->database_url[0] == '\0')
        return gw_worker_main(cfg); /* (which names a missing SETTLED_DATABASE_URL) */

    char shown[300];
    static gw_loop_t loop; /* kept until exit: connections still open at the end point into it */
    static h2o_globalconf_t conf;
    static gw_config_t dbcfg;
    if ((loop.listen_fd = open_ops_listener(cfg, shown, sizeof(shown))) < 0)
        return 1;
    h2o_config_init(&conf);
    conf.max_request_entity_size = 4096; /* the ops endpoints take no body */
    conf.server_name = h2o_iovec_init(H2O_STRLIT("settled"));
    h2o_hostconf_t *host = h2o_config_register_host(&conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    gw_routes_register_ops(host);

    loop.cfg = cfg;
    loop.index = 0;
    h2o_linklist_init_anchor(&loop.conns);
    unsigned char rnd[8];
    gw_crypto_random(rnd, sizeof(rnd));
    gw_hex_encode(rnd, sizeof(rnd), loop.request_prefix);
    loop.evloop = h2o_evloop_create();
    h2o_context_init(&loop.ctx, loop.evloop, &conf);
    loop.accept_ctx.ctx = &loop.ctx;
    loop.accept_ctx.hosts = conf.hosts;
    dbcfg = *cfg;
    dbcfg.db_connections = 1; /* readiness only */
    loop.db = gw_db_create(loop.evloop, &dbcfg, NULL, 0);
    gw_offload_t *offload = gw_offload_create(1);
    if (offload == NULL)
        abort();
    loop.offload = gw_offload_loop_create(offload, loop.evloop);

    pthread_t tid;
    if (pthread_create(&tid, NULL, ops_main, &loop) != 0) {
        gw_log(GW_LOG_ERROR, "cannot start the ops thread: %s", strerror(errno));
        abort();
    }
    gw_logline_t line;
    gw_log_begin(&line, GW_LOG_INFO, "ops listening");
    gw_log_str(&line, "listen", shown, strlen(shown));
    gw_log_end(&line);

    int ret = gw_worker_main(cfg);

    atomic_store(&ops_stop, true);
    pthread_join(tid, NULL);
    gw_offload_loop_destroy(loop.offload);
    loop.offload = NULL;
    gw_db_destroy(loop.db);
    loop.db = NULL;
    gw_offload_destroy(offload);
    gw_ops_gauges_shutdown();
    return ret;
}
