/* SPDX-License-Identifier: MIT */
/*
 * quota.h: a provider's rate limits (per tenant: calls in progress, calls per rolling window, calls per UTC
 * day; per app: calls per rolling window), kept in Redis so that every instance of settled shares them, and
 * kept in-process under conservative limits while Redis is unreachable. One gw_quota_t serves one provider:
 *   Xero        per tenant 5 in progress, 60 a rolling minute, 5,000 a UTC day; 10,000 a minute per app
 *   Stripe      per account (platform or connected) 25 a second (the per-endpoint default), some in progress
 *   GoCardless  per access token 1,000 a minute
 * (providers/PROVIDERS.md; SETTLED_<PROVIDER>_LIMIT_* tune them). A "tenant" is whatever the provider counts
 * by: a Xero tenant id, a Stripe account, a GoCardless creditor. Every API call is bracketed by
 * gw_quota_acquire and gw_quota_release, and every response is shown to gw_quota_observe (fetch.c does it).
 *
 * Calls block (on Redis, bounded by its timeouts), so they belong in worker threads, never on an event loop.
 */
#ifndef GW_QUOTA_H
#define GW_QUOTA_H

#include <stdbool.h>
#include <stdint.h>
#include "config.h"
#include "err.h"

/* The longest tenant id accepted (Xero's are 36-character UUIDs). */
#define GW_QUOTA_TENANT_MAX 64

/* One gw_quota_t serves every worker thread of a process: it is thread-safe. */
typedef struct st_gw_quota_t gw_quota_t;

/* Which limit denied a call. */
enum gw_quota_limit {
    GW_QUOTA_LIMIT_NONE = 0,    /* not denied */
    GW_QUOTA_LIMIT_BLOCKED,     /* the tenant is blocked (a 429, or a *Limit-Remaining of 0) */
    GW_QUOTA_LIMIT_CONCURRENT,  /* the tenant has every call slot in use */
    GW_QUOTA_LIMIT_MINUTE,      /* the tenant's rolling minute is full */
    GW_QUOTA_LIMIT_DAY,         /* the tenant's UTC day is used up */
    GW_QUOTA_LIMIT_APP_BLOCKED, /* the app is blocked (a 429 naming appminute, or X-AppMinLimit-Remaining of 0) */
    GW_QUOTA_LIMIT_APP_MINUTE,  /* the app's rolling minute is full */
};

/* A call slot, filled by gw_quota_acquire and given back with gw_quota_release. The caller owns the
 * memory (a local variable will do); members starting with _ are private. */
typedef struct st_gw_quota_slot_t {
    enum gw_quota_limit limit; /* after gw_quota_acquire: what denied the call, or GW_QUOTA_LIMIT_NONE */
    int _kind;
    char _tenant[GW_QUOTA_TENANT_MAX + 1];
    char _token[33];
} gw_quota_slot_t;

/* The limits of one provider. The fallback ones hold for one process while Redis is unreachable (or not configured),
 * when the instances can no longer share counts: each must then keep to its own share of every limit. */
typedef struct st_gw_quota_limits_t {
    const char *name;            /* "xero", "stripe", "gocardless": the Redis key tag */
    const char *label;           /* for log lines: "Xero" */
    int concurrent;              /* calls in progress per tenant */
    int per_window;              /* calls per tenant per rolling window */
    int window_ms;               /* the window: 60000 (a minute) or 1000 (a second) */
    int day;                     /* calls per tenant per UTC day; 0: no daily limit */
    int app_per_window;          /* calls per window for the whole app; 0: no app-wide limit */
    int fallback_concurrent;     /* calls in progress per tenant; 0: none at all until Redis is back */
    int fallback_per_window;     /* calls per tenant per window (at least 1) */
    int fallback_day;            /* calls per tenant per UTC day; 0: no daily limit */
    int fallback_app_per_window; /* calls per window for the whole app; 0: no app-wide limit */
} gw_quota_limits_t;

/*
 * Fills *out with provider's limits from cfg: Xero's SETTLED_XERO_LIMIT_*, Stripe's SETTLED_STRIPE_LIMIT_*,
 * GoCardless's SETTLED_GOCARDLESS_LIMIT_*. The fallback limits are this instance's share of them, so that the
 * SETTLED_INSTANCES instances of a fleet, each on its own, never exceed a limit together: each limit divided by
 * the number of instances (rounded down), and at most SETTLED_QUOTA_FALLBACK_CONCURRENT in progress and, per
 * window, SETTLED_QUOTA_FALLBACK_MINUTE (Xero) or a quarter of the window limit (Stripe, GoCardless). When there
 * are more instances than some limit has units, an instance has no share: fallback_concurrent is 0, and no call
 * is made until Redis is back. Returns 0, or -1 for an unknown provider.
 */
GW_MUSTCHECK int gw_quota_limits_of(const gw_config_t *cfg, const char *provider, gw_quota_limits_t *out);

/*
 * Creates the quotas of one provider for one process from cfg (gw_quota_limits_of) and Redis (SETTLED_REDIS_URL;
 * when it is NULL the fallback limits always apply). Values are copied, so cfg may go. Nothing connects yet.
 * Returns NULL if the provider is unknown or the Redis URL cannot be parsed.
 */
gw_quota_t *gw_quota_create(const gw_config_t *cfg, const char *provider);
/* The same from explicit limits (copied) and redis_url (may be NULL); http_timeout_ms sizes the slot lease. */
gw_quota_t *gw_quota_create_limits(const gw_quota_limits_t *limits, const char *redis_url, int http_timeout_ms);
/* Frees q. Slots still held in Redis expire with their lease. */
void gw_quota_destroy(gw_quota_t *q);

/*
 * Asks for one call to tenant, taking all of its quota or none of it, and never
 * waits for quota (only for Redis, at most its connect and command timeouts, and only when reconnecting
 * or when a command hangs). Returns:
 *   0  acquired: *slot holds a call slot that the caller MUST give back with gw_quota_release when the
 *      call is over (after gw_quota_observe), whatever its outcome;
 *   1  denied: nothing was taken; slot->limit says why and *wait_ms (> 0) when to ask again at the
 *      earliest; for GW_QUOTA_LIMIT_CONCURRENT it is a short poll interval (at most 100 ms), as a slot
 *      may come free at any moment;
 *  -1  tenant is NULL, empty or longer than GW_QUOTA_TENANT_MAX bytes.
 * While Redis is unreachable the in-process fallback limits apply (see gw_quota_is_fallback); a denial by the
 * app's fallback limit is GW_QUOTA_LIMIT_APP_MINUTE, and with no fallback share at all GW_QUOTA_LIMIT_CONCURRENT
 * with a wait of a second (when Redis is tried again).
 */
__attribute__((warn_unused_result)) int gw_quota_acquire(gw_quota_t *q, const char *tenant, gw_quota_slot_t *slot,
                                                         uint64_t *wait_ms);
/* Gives the slot back (and dates the call's entry in the minute window to now). A slot that was not
 * acquired, or was already released, is ignored. */
void gw_quota_release(gw_quota_t *q, gw_quota_slot_t *slot);

/*
 * Learns from one response to a call for tenant: status is the HTTP status, the others the values of Retry-After
 * and of Xero's X-Rate-Limit-Problem, X-MinLimit-Remaining, X-DayLimit-Remaining and X-AppMinLimit-Remaining (NULL
 * when absent; for another provider, min_remaining is its remaining count of the window, e.g. GoCardless's
 * RateLimit-Remaining). For every instance sharing the Redis:
 *   429               blocks the tenant (the app, if the problem is "appminute") for Retry-After seconds
 *                     (at least 1), or without it until the minute window rolls (minute), the next UTC
 *                     day (day), 1 s (concurrent) or 60 s (anything else or no problem named);
 *   MinLimit 0        blocks the tenant until its oldest call of the rolling minute leaves the window;
 *   DayLimit 0        blocks the tenant until the next UTC day;
 *   AppMinLimit 0     blocks the app until its oldest call of the rolling minute leaves the window.
 * On a 429 with Retry-After, Retry-After alone decides the block of what the 429 names (the remaining
 * counts of that response add nothing to it). A block only ever lengthens. Values that do not parse are
 * ignored. Call it before gw_quota_release.
 */
void gw_quota_observe(gw_quota_t *q, const char *tenant, int status, const char *retry_after,
                      const char *rate_limit_problem, const char *min_remaining, const char *day_remaining,
                      const char *app_min_remaining);

/* True while q uses its in-process fallback limits (Redis unreachable, or not configured). */
bool gw_quota_is_fallback(const gw_quota_t *q);
/* True while any gw_quota_t of the process uses its fallback limits: a gauge for /metrics. */
bool gw_quota_fallback_active(void);
/* "none", "blocked", "concurrent", "minute", "day", "app_blocked" or "app_minute", for logs and metrics. */
const char *gw_quota_limit_name(enum gw_quota_limit limit);

/* What is left of one tenant's quotas, as Redis counts them for every instance. */
typedef struct st_gw_quota_remaining_t {
    int concurrent;      /* call slots free now */
    int window;          /* calls left in the tenant's rolling window */
    int day;             /* calls left today (UTC); -1: no daily limit */
    int app_window;      /* calls left in the app's rolling window; -1: no app-wide limit */
    uint64_t blocked_ms; /* the tenant or the app is blocked for this long (a 429, a Remaining of 0); 0: not */
    uint64_t window_ms;  /* the window's length */
} gw_quota_remaining_t;

/* Reads (never takes or changes) what is left of tenant's quotas in Redis, on a connection of its own (blocking: a
 * worker thread). Returns 0 with *out, or -1 when Redis is not configured or cannot be reached (or tenant is not a
 * tenant): nobody knows what the other instances used, so the remaining quota is unknown. */
GW_MUSTCHECK int gw_quota_peek(gw_quota_t *q, const char *tenant, gw_quota_remaining_t *out);

/*
 * For tests: sets the length of the rolling "minute" window and of the slot lease (the time after which
 * a slot that was never released, e.g. by a crashed process, frees itself), and the prefix of every
 * Redis key (default "settled:quota:"). Call right after gw_quota_create, before any other use; 0 or
 * NULL keeps a value.
 */
void gw_quota_test_tune(gw_quota_t *q, uint64_t window_ms, uint64_t lease_ms, const char *key_prefix);

#endif
