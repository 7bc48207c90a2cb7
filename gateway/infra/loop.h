/* SPDX-License-Identifier: MIT */
/*
 * loop.h: the handles of one event loop. One h2o evloop per thread, each with its own SO_REUSEPORT listener,
 * database pool, Redis connection and offload attachment, sharing nothing but the read-only configuration.
 * The front door (server.c) fills them in; handlers on every floor above infra/ receive them. The modules of
 * the API floor keep per-loop state of their own in the module slots (api.h says how).
 */
#ifndef GW_LOOP_H
#define GW_LOOP_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <pthread.h>
#include <stdint.h>
#include "config.h"
#include "db.h"
#include "offload.h"
#include "redis.h"

enum { GW_LOOP_SERVING, GW_LOOP_STOPPING, GW_LOOP_FLUSHING };

/* The most modules (api.h) a server runs; each gets one per-loop state slot. */
#define GW_LOOP_MAX_MODULES 32

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
    /* GW_LOOP_SERVING; GW_LOOP_STOPPING once SIGTERM came (replies close their connection); GW_LOOP_FLUSHING once
     * the database work is done and the last replies are flushed (new requests are refused with 503) */
    int state;
    /* the connections accepted and not yet closed (server.c's conn trackers), so that a stop waits for the requests
     * still being uploaded */
    h2o_linklist_t conns;
    /* per-loop state of the modules (api.h), in the order of the module list */
    struct {
        const void *module;
        void *state;
    } modules[GW_LOOP_MAX_MODULES];
    size_t nmodules;
} gw_loop_t;

/* The loop a request runs on. */
#define gw_loop_of(req) H2O_STRUCT_FROM_MEMBER(gw_loop_t, ctx, (req)->conn->ctx)

#endif
