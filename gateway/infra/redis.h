/* SPDX-License-Identifier: MIT */
/*
 * redis.h: one asynchronous Redis connection per event loop (hiredis through a small h2o adapter),
 * with connect and command timeouts of its own (hiredis 0.14 has no timers). Redis holds only
 * loss-tolerant state: when it is down, settled goes on and reports it.
 *
 * The only module that calls hiredis.
 */
#ifndef GW_REDIS_H
#define GW_REDIS_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdbool.h>
#include "err.h"

typedef struct st_gw_redis_t gw_redis_t;

/* Creates the connection for url (redis://[:password@]host[:port][/db]) and starts connecting; it
 * reconnects by itself and pings once a second. Returns NULL if url cannot be parsed. */
GW_MUSTCHECK gw_redis_t *gw_redis_create(h2o_evloop_t *loop, const char *url);
/* Closes the connection. */
void gw_redis_destroy(gw_redis_t *r);
/* True if the last ping was answered within its timeout. */
bool gw_redis_is_up(const gw_redis_t *r);
/* The answer to gw_redis_exists: 1 the key exists, 0 it does not, -1 Redis failed to answer (an error reply, or
 * the connection went down or timed out first, within about two seconds). */
typedef void (*gw_redis_exists_cb)(void *data, int result);
/* Asks whether key (len bytes, binary-safe) exists. Returns 0, and cb fires exactly once later on this loop; or -1
 * when Redis is not up now (r may be NULL: not configured), and cb never fires. */
GW_MUSTCHECK int gw_redis_exists(gw_redis_t *r, const char *key, size_t len, gw_redis_exists_cb cb, void *data);
/* The same for n keys (at most GW_REDIS_EXISTS_MAX) in one EXISTS: cb gets 1 when any of them exists. */
#define GW_REDIS_EXISTS_MAX 4
GW_MUSTCHECK int gw_redis_exists_any(gw_redis_t *r, const char *const *keys, const size_t *lens, size_t n,
                                     gw_redis_exists_cb cb, void *data);
/* Parses url into host, port, password (may be NULL) and db; returns 0 or -1. Exposed for tests. */
GW_MUSTCHECK int gw_redis_parse_url(const char *url, char **host, int *port, char **password, int *db);

#endif
