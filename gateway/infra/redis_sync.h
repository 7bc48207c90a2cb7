/* SPDX-License-Identifier: MIT */
/*
 * redis_sync.h: a blocking Redis connection for threads that may block (workers, the CLI), never for an
 * event loop, with a connect timeout, a command timeout and lazy reconnection, so a Redis that is down or
 * hangs costs a caller at most its timeouts and never an unbounded stall. Part of the Redis module (see
 * redis.h); no hiredis type appears here.
 */
#ifndef GW_REDIS_SYNC_H
#define GW_REDIS_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "err.h"

/* One connection. It is not thread-safe: use one per thread, or hand it between threads under a lock. */
typedef struct st_gw_redis_sync_t gw_redis_sync_t;

/* Why a call failed, compared by pointer. Every one but the last two means Redis is unavailable. */
extern const char gw_redis_sync_err_down[];    /* not connected, and the last failure was less than 1 s ago */
extern const char gw_redis_sync_err_connect[]; /* connecting, AUTH or SELECT failed or timed out */
extern const char gw_redis_sync_err_timeout[]; /* the server did not answer within the command timeout */
extern const char gw_redis_sync_err_io[];      /* the connection broke */
extern const char gw_redis_sync_err_reply[];   /* Redis answered with an error (gw_redis_sync_last_error) */
extern const char gw_redis_sync_err_type[];    /* the reply had a shape the caller did not ask for */

/* What one connection has done since it was created. */
typedef struct st_gw_redis_sync_stats_t {
    uint64_t connects;         /* connections established (AUTH and SELECT included) */
    uint64_t connect_failures; /* attempts that failed */
    uint64_t timeouts;         /* commands that timed out */
    uint64_t evalsha;          /* EVALSHA sent */
    uint64_t eval;             /* EVAL sent (after NOSCRIPT) */
    uint64_t noscript;         /* NOSCRIPT answers to EVALSHA */
} gw_redis_sync_stats_t;

/*
 * Creates a connection to url (redis://[:password@]host[:port][/db], as gw_redis_parse_url reads it)
 * without connecting: the first call connects. connect_timeout_ms bounds connecting (and each of AUTH and
 * SELECT is a command); command_timeout_ms bounds each read and write of a command. After a failure the
 * connection is closed and the next call reconnects, but not within 1 s of the failure (that call fails
 * at once with gw_redis_sync_err_down). Returns NULL if url cannot be parsed or a timeout is not positive.
 */
GW_MUSTCHECK gw_redis_sync_t *gw_redis_sync_create(const char *url, int connect_timeout_ms, int command_timeout_ms);
/* Closes the connection and frees r (NULL is allowed). */
void gw_redis_sync_destroy(gw_redis_sync_t *r);

/*
 * Runs one command of argc NUL-terminated arguments whose reply is an integer (stored in *out), a status
 * or nil (*out = 0). Returns 0, or -1 with *err (may be NULL) set to one of the errors above. A command
 * that fails on a connection that was idle and found closed by the server (EOF, reset) is retried once on
 * a new connection, so a Redis restart costs no error; a timeout is never retried.
 */
GW_MUSTCHECK int gw_redis_sync_command(gw_redis_sync_t *r, size_t argc, const char *const *argv, long long *out,
                                       const char **err);

/*
 * Runs the Lua script source with nkeys KEYS and nargs ARGV by EVALSHA, learning its SHA1 once per
 * connection with SCRIPT LOAD, and falls back to EVAL (which caches it again) when Redis answers NOSCRIPT
 * (after a restart or SCRIPT FLUSH). The script must return an integer, an array of integers or nil: they
 * are stored in out[0..*n) (nil gives *n = 0). Returns 0, or -1 with *err set: gw_redis_sync_err_type if
 * the reply holds anything else or more than cap elements, gw_redis_sync_err_reply for a script error.
 */
GW_MUSTCHECK int gw_redis_sync_eval(gw_redis_sync_t *r, const char *source, size_t nkeys, const char *const *keys,
                                    size_t nargs, const char *const *args, long long *out, size_t cap, size_t *n,
                                    const char **err);

/* True if err means that Redis could not be reached or did not answer in time (not an error reply). */
bool gw_redis_sync_err_is_unavailable(const char *err);
/* True while a connection is open (the last call did not fail with an unavailable error). */
bool gw_redis_sync_is_connected(const gw_redis_sync_t *r);
/* The text of the last failure, for logs ("" if none); never holds the password. Valid until the next call. */
const char *gw_redis_sync_last_error(const gw_redis_sync_t *r);
/* Copies the connection's counters into *out. */
void gw_redis_sync_get_stats(const gw_redis_sync_t *r, gw_redis_sync_stats_t *out);

#endif
