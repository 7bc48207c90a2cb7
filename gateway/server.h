/* SPDX-License-Identifier: MIT */
/*
 * server.h: the event loops. One h2o evloop per thread (its handles are in infra/loop.h), each with its own
 * SO_REUSEPORT listener, database pool and Redis connection, sharing nothing but the read-only configuration.
 * The route table (routes.h) hands the server its module list: the statements every pool prepares and the
 * per-loop init of every handler module.
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include "config.h"
#include "loop.h"

/* Serves until SIGTERM or SIGINT, then stops accepting, finishes in-flight commits and returns 0; returns
 * 1 (after logging why) if the server cannot start. Fills in the sources' organisation ids. */
int gw_server_run(gw_config_t *cfg);

/* Marks the connection of req as between requests (every byte read so far belonged to finished requests): a stop
 * no longer waits for it. The access logger calls it when a request is done. */
void gw_server_request_done(h2o_req_t *req);

/* Frees the calling thread's cache of h2o socket buffers (call before a thread that ran a loop ends). */
void gw_server_release_buffer_cache(void);

#endif
