/* SPDX-License-Identifier: MIT */
/*
 * resolve.h: host names resolved off the event loop. getaddrinfo blocks for as long as DNS takes (seconds when
 * a server is slow or gone), and libpq and hiredis call it inside their "asynchronous" connects, so an event
 * loop never lets them see a name: a lookup runs on a thread of its own, its answer comes back to the loop
 * through h2o's cross-thread queue, and the clients connect to the numeric addresses.
 *
 * One resolver serves one client of one loop (its database pool, its Redis connection) and that client's host
 * names. It keeps the last answer, runs one lookup at a time (every connection that needs one waits for the
 * same), and a connection that reconnects after a failure asks for an answer from a lookup started since its
 * failure, so a name that moved (a failover) is looked up again. A name that does not resolve is logged once
 * (per setting and name, for the whole process) until it resolves again.
 */
#ifndef GW_RESOLVE_H
#define GW_RESOLVE_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct st_gw_resolver_t gw_resolver_t;

/* One address of a name. */
typedef struct st_gw_resolved_addr_t {
    size_t name;                 /* which of the resolver's names it belongs to (an index) */
    char host[INET6_ADDRSTRLEN]; /* numeric, as inet_ntop writes it ("127.0.0.1", "::1") */
} gw_resolved_addr_t;

/* The answer of one lookup of all of a resolver's names. */
typedef struct st_gw_resolved_t {
    uint64_t started_at;       /* loop time (ms) at which the lookup started */
    size_t naddrs;             /* 0: no name resolved */
    gw_resolved_addr_t *addrs; /* per name in the resolver's order, each name's in getaddrinfo's order */
    const char *error;         /* when a name did not resolve: why, for the first such name; else NULL */
} gw_resolved_t;

typedef struct st_gw_resolve_req_t gw_resolve_req_t;
/* Called on the loop with the answer, which is valid only during the call. */
typedef void (*gw_resolve_cb)(gw_resolve_req_t *req, const gw_resolved_t *answer);

/* A request waiting for an answer: the caller's memory (a member of the connection that asks). Members are
 * private; zero-initialise it once. */
struct st_gw_resolve_req_t {
    h2o_linklist_t _link;
    uint64_t _after;
    gw_resolve_cb _cb;
};

/*
 * Creates a resolver on loop (call on its thread) for names[0..nnames) (copied; at least one). label names what
 * they come from in log lines ("SETTLED_DATABASE_URL"). With prefer_ipv4, IPv4 addresses of a name come before its
 * IPv6 ones (hiredis' own order); otherwise getaddrinfo's order is kept (libpq's). Nothing is looked up yet.
 */
gw_resolver_t *gw_resolver_create(h2o_evloop_t *loop, const char *label, const char *const *names, size_t nnames,
                                  bool prefer_ipv4);
/* Frees r, on its loop's thread. Requests still waiting are dropped: their callbacks never fire. A lookup still
 * running is abandoned: its thread frees it when getaddrinfo returns. */
void gw_resolver_destroy(gw_resolver_t *r);

/*
 * Asks for the addresses of r's names from a lookup that started at `after` or later (loop ms; 0 accepts any).
 * If the last answer is that recent, returns it (valid until control returns to the loop) and cb never fires.
 * Otherwise returns NULL: a lookup runs on a thread (or is already running, if it started late enough), and
 * cb(req, answer) fires exactly once, on the loop, with the first answer that is recent enough, unless
 * gw_resolve_cancel(req) comes first. A req that is still waiting from an earlier call is re-registered.
 */
const gw_resolved_t *gw_resolve(gw_resolver_t *r, uint64_t after, gw_resolve_req_t *req, gw_resolve_cb cb);
/* Stops req from waiting; its callback will not fire. Nothing happens if it is not waiting. */
void gw_resolve_cancel(gw_resolve_req_t *req);

/* True if host is a numeric IPv4 or IPv6 address, which needs no lookup. */
bool gw_resolve_is_numeric(const char *host);

#endif
