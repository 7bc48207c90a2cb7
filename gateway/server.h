/* SPDX-License-Identifier: MIT */
/*
 * server.h: the event loops. One h2o evloop per thread, each with its own SO_REUSEPORT listener,
 * database pool and Redis connection, sharing nothing but the read-only configuration.
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <pthread.h>
#include <stdbool.h>
#include "config.h"
#include "db.h"
#include "offload.h"
#include "redis.h"

typedef struct st_gw_loop_t {
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_evloop_t *evloop;
    h2o_socket_t *listener;
    int listen_fd;
    gw_db_t *db;
    gw_redis_t *redis;
    gw_offload_loop_t *offload; /* runs blocking work (the OAuth callback) off the loop */
    const gw_config_t *cfg;
    int index;
    pthread_t tid;
    uint64_t request_seq;
    char request_prefix[17]; /* random per loop, so request ids are unique across loops and instances */
    /* waking the queue workers after commits: at most one NOTIFY per GW_NOTIFY_INTERVAL_MS (see intake.c) */
    uint64_t last_notify_at;
    h2o_timeout_t notify_timeout;
    h2o_timeout_entry_t notify_entry;
} gw_loop_t;

/* The loop a request runs on. */
#define gw_loop_of(req) H2O_STRUCT_FROM_MEMBER(gw_loop_t, ctx, (req)->conn->ctx)

/* Serves until SIGTERM or SIGINT, then stops accepting, finishes in-flight commits and returns 0; returns
 * 1 (after logging why) if the server cannot start. Fills in the sources' organisation ids. */
int gw_server_run(gw_config_t *cfg);

#endif
