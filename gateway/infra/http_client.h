/* SPDX-License-Identifier: MIT */
/*
 * http_client.h: outbound HTTP for the whole process. One thread runs a libcurl multi handle; requests
 * come in through a mutex-protected inbox (woken with curl_multi_wakeup) and results go back either to
 * a blocked caller (gw_http_do, for threads that may block: workers, the CLI) or to an event loop
 * through h2o's cross-thread queue (gw_http_start). TLS verification is always on; connections are
 * reused; every request has a connect and a total timeout.
 *
 * The only module that calls libcurl.
 */
#ifndef GW_HTTP_CLIENT_H
#define GW_HTTP_CLIENT_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdbool.h>
#include <stddef.h>
#include "config.h"
#include "err.h"

typedef struct st_gw_http_header_t {
    char *name;  /* lower-case */
    char *value; /* trimmed */
} gw_http_header_t;

/* A request. Every pointer is copied when the request is submitted, so the caller's memory may go. */
typedef struct st_gw_http_request_t {
    const char *method; /* "GET", "POST", "PUT" */
    const char *url;
    const char *const *headers; /* "Name: value" strings, NULL-terminated; may be NULL */
    const char *body;           /* may be NULL */
    size_t body_len;
    long timeout_ms;         /* total; 0 means the module default (SETTLED_HTTP_TIMEOUT_MS) */
    long connect_timeout_ms; /* 0 means the module default (SETTLED_HTTP_CONNECT_TIMEOUT_MS) */
} gw_http_request_t;

/* A response; the receiver owns it and frees it with gw_http_response_free. */
typedef struct st_gw_http_response_t {
    long status; /* HTTP status, or 0 when the request failed (error is then set; body empty, no headers) */
    char *error; /* NULL, or why the transfer failed (timeout, refused, TLS, ...) */
    char *body;  /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t body_len;
    gw_http_header_t *headers; /* every response header of the final response */
    size_t nheaders;
    double seconds; /* total time of the transfer */
} gw_http_response_t;

typedef struct st_gw_http_options_t {
    long timeout_ms;           /* default total timeout */
    long connect_timeout_ms;   /* default connect timeout */
    long max_host_connections; /* CURLMOPT_MAX_HOST_CONNECTIONS */
    size_t max_body;           /* responses larger than this fail with an error (no partial body) */
} gw_http_options_t;

/* Starts the HTTP thread (call once, before any other function, from the main thread). Returns 0 or -1. */
GW_MUSTCHECK int gw_http_init(const gw_http_options_t *opts);
/* gw_http_init with the SETTLED_HTTP_* settings (and a 64 MiB cap on response bodies). */
GW_MUSTCHECK int gw_http_init_config(const gw_config_t *cfg);
/* Stops the thread; requests still in flight complete with the error "shutting down" first (those of a loop
 * when that loop next runs). Calling it again, or without gw_http_init, does nothing. */
void gw_http_shutdown(void);

/* Performs req and blocks the calling thread until it completes. Never call from an event loop.
 * Fills *res (always, also on failure; res->error says why). Returns 0 if a complete response arrived, else -1.
 * Not GW_MUSTCHECK: *res carries the outcome as well, and callers read it there. */
int gw_http_do(const gw_http_request_t *req, gw_http_response_t *res);

/* Per-loop attachment: results for gw_http_start arrive on that loop's thread. */
typedef struct st_gw_http_loop_t gw_http_loop_t;
gw_http_loop_t *gw_http_loop_create(h2o_evloop_t *loop);
/* Loop thread only, never from inside a gw_http_cb. Calls still pending fire now: a result that has already
 * arrived as is, any other with the error "shutting down". */
void gw_http_loop_destroy(gw_http_loop_t *hl);

/* Called on the loop thread with the response (the callee owns its contents and frees them with
 * gw_http_response_free; the struct itself is valid until cb returns, so copy *res to keep it). */
typedef void (*gw_http_cb)(void *data, gw_http_response_t *res);
typedef struct st_gw_http_call_t gw_http_call_t;
/* Starts req (loop thread only); cb fires exactly once on hl's loop, unless the call is detached first.
 * Returns NULL, and cb never fires, when req is unusable or the client is not running. */
GW_MUSTCHECK gw_http_call_t *gw_http_start(gw_http_loop_t *hl, const gw_http_request_t *req, gw_http_cb cb, void *data);
/* The caller no longer wants the result (e.g. its request went away): cb will not fire. Loop thread only,
 * and only before cb has fired. */
void gw_http_detach(gw_http_call_t *call);

/* The value of header name (case-insensitive), or NULL. */
const char *gw_http_response_header(const gw_http_response_t *res, const char *name);
void gw_http_response_free(gw_http_response_t *res);

#endif
