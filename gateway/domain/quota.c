/* SPDX-License-Identifier: MIT */
/*
 * quota.c: a provider's rate limits shared by every instance through Redis, with one atomic Lua script per
 * decision so that two instances can never both take the last unit of a limit, and Redis' own clock
 * (TIME) so that the instances' clocks do not matter. When Redis cannot be reached the process goes on
 * under conservative in-process limits (one mutex), its share of the fleet's (SETTLED_INSTANCES), and probes
 * Redis once a second to come back.
 *
 * Keys (prefix "settled:quota:" by default), P being the provider ("xero", "stripe", "gocardless"). One tenant's
 * keys share the hash tag {P:<tenant>}, so one script may touch them all, also in a Redis Cluster:
 *   {P:T}:blocked  string   blocked-until, ms of Redis time (expires by itself)
 *   {P:T}:slots    zset     call slots in progress: token -> lease expiry (expired ones are trimmed)
 *   {P:T}:minute   zset     calls of the rolling window (a minute for Xero and GoCardless, a second for Stripe):
 *                           token -> acquire time + lease while the call is in progress, then its release time
 *   {P:T}:day      hash     d = UTC day number, n = calls that day (expires an hour after the day ends)
 * The app's keys share the tag {P-app}: {P-app}:blocked and {P-app}:minute (acquire times); a provider without an
 * app-wide limit (Stripe, GoCardless) has none.
 *
 * Cluster forbids one script over both tags, so an acquire is two scripts: the tenant's (check and take
 * everything of the tenant), then the app's (check and take the app minute); if the app denies, a third
 * script gives the tenant's units back. Between the two, another instance can see the tenant's units
 * taken and be denied for a moment: the error is only ever on the safe side.
 */
#include "quota.h"
#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "crypto.h"
#include "log.h"
#include "mem.h"
#include "redis_sync.h"

#define CONNECT_TIMEOUT_MS 250
#define COMMAND_TIMEOUT_MS 500
#define PROBE_INTERVAL_MS 1000
#define BUSY_WAIT_MS 100   /* what a caller denied for concurrency is told to wait */
#define MIN_LEASE_MS 60000 /* a slot frees itself this long after it was taken, at the least */
#define UNKNOWN_429_BLOCK_MS 60000
#define CONCURRENT_429_BLOCK_MS 1000
#define MAX_RETRY_AFTER_MS (2 * DAY_MS)
#define DAY_MS 86400000ULL
#define NBUCKETS 256
#define KEY_MAX 192

enum { KIND_NONE = 0, KIND_REDIS, KIND_LOCAL };
enum { MODE_REDIS, MODE_FALLBACK, MODE_LOCAL };

/* Every script starts from the Redis server's clock, in ms, so the instances' clocks never matter. */
#define LUA_NOW                                                                                                        \
    "local t = redis.call('TIME')\n"                                                                                   \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/*
 * KEYS: blocked, slots, minute, day. ARGV: token, concurrent, minute and day limits, window ms, lease ms,
 * busy wait ms. Returns {0, 0, day} when everything was taken, else {limit, wait ms, day} having taken
 * nothing (the trims only drop what has expired). An entry of the minute window counts from its acquire
 * until window ms after its release, so that however long a call takes on its way to Xero, no window
 * at Xero's end can hold more calls than the limit.
 */
static const char TENANT_ACQUIRE_LUA[] =
    LUA_NOW "local climit, mlimit, dlimit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"
            "local window, lease, busy = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])\n"
            "local day = math.floor(now / 86400000)\n"
            "local blocked = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
            "if blocked > now then return {1, blocked - now, day} end\n"
            "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
            "if redis.call('ZCARD', KEYS[2]) >= climit then\n"
            "  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')\n"
            "  return {2, math.min(tonumber(first[2]) - now, busy), day}\n"
            "end\n"
            "redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)\n"
            "local calls = redis.call('ZCARD', KEYS[3])\n"
            "if calls >= mlimit then\n"
            "  local e = redis.call('ZRANGE', KEYS[3], calls - mlimit, calls - mlimit, 'WITHSCORES')\n"
            "  local s = tonumber(e[2])\n"
            "  if s > now then return {3, busy, day} end\n"
            "  return {3, s + window - now, day}\n"
            "end\n"
            "local d = redis.call('HMGET', KEYS[4], 'd', 'n')\n"
            "local used = 0\n"
            "if tonumber(d[1]) == day then used = tonumber(d[2]) or 0 end\n"
            "if used >= dlimit then return {4, (day + 1) * 86400000 - now, day} end\n"
            "redis.call('ZADD', KEYS[2], now + lease, ARGV[1])\n"
            "if redis.call('PTTL', KEYS[2]) < lease then redis.call('PEXPIRE', KEYS[2], lease) end\n"
            "redis.call('ZADD', KEYS[3], now + lease, ARGV[1])\n"
            "if redis.call('PTTL', KEYS[3]) < lease + window then redis.call('PEXPIRE', KEYS[3], lease + window) end\n"
            "redis.call('HSET', KEYS[4], 'd', day, 'n', used + 1)\n"
            "redis.call('PEXPIREAT', KEYS[4], (day + 1) * 86400000 + 3600000)\n"
            "return {0, 0, day}\n";

/* KEYS: app blocked, app minute. ARGV: token, limit, window ms. Returns {0, 0} or {limit, wait ms}. */
static const char APP_ACQUIRE_LUA[] =
    LUA_NOW "local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
            "local blocked = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
            "if blocked > now then return {5, blocked - now} end\n"
            "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)\n"
            "local calls = redis.call('ZCARD', KEYS[2])\n"
            "if calls >= limit then\n"
            "  local e = redis.call('ZRANGE', KEYS[2], calls - limit, calls - limit, 'WITHSCORES')\n"
            "  return {6, tonumber(e[2]) + window - now}\n"
            "end\n"
            "redis.call('ZADD', KEYS[2], now, ARGV[1])\n"
            "if redis.call('PTTL', KEYS[2]) < window then redis.call('PEXPIRE', KEYS[2], window) end\n"
            "return {0, 0}\n";

/* KEYS: slots, minute, day. ARGV: token, day. Gives back what TENANT_ACQUIRE_LUA took. */
static const char TENANT_UNDO_LUA[] = "redis.call('ZREM', KEYS[1], ARGV[1])\n"
                                      "redis.call('ZREM', KEYS[2], ARGV[1])\n"
                                      "local d = redis.call('HMGET', KEYS[3], 'd', 'n')\n"
                                      "if tonumber(d[1]) == tonumber(ARGV[2]) and (tonumber(d[2]) or 0) > 0 then\n"
                                      "  redis.call('HINCRBY', KEYS[3], 'n', -1)\n"
                                      "end\n"
                                      "return 0\n";

/* KEYS: slots, minute. ARGV: token. Frees the slot and dates the call's minute entry to now. */
static const char TENANT_RELEASE_LUA[] = LUA_NOW "redis.call('ZREM', KEYS[1], ARGV[1])\n"
                                                 "redis.call('ZADD', KEYS[2], 'XX', now, ARGV[1])\n"
                                                 "return 0\n";

/*
 * KEYS: blocked, minute window. ARGV: how ('for', 'window' or 'day'), ms (the block, or the window).
 * 'window' blocks until the oldest call of the window leaves it. A block only lengthens. Returns how long
 * the block now lasts, in ms.
 */
static const char OBSERVE_LUA[] =
    LUA_NOW "local how, ms = ARGV[1], tonumber(ARGV[2])\n"
            "local untl\n"
            "if how == 'for' then\n"
            "  untl = now + ms\n"
            "elseif how == 'window' then\n"
            "  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ms)\n"
            "  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')\n"
            "  untl = now + ms\n"
            "  if first[2] and tonumber(first[2]) < now then untl = tonumber(first[2]) + ms end\n"
            "else\n"
            "  untl = (math.floor(now / 86400000) + 1) * 86400000\n"
            "end\n"
            "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
            "if untl > cur then redis.call('SET', KEYS[1], untl, 'PX', untl - now) else untl = cur end\n"
            "return untl - now\n";

/* In-process state of one tenant: its fallback counters, and blocks observed (kept in every mode). */
typedef struct st_local_tenant_t {
    struct st_local_tenant_t *next;
    char *name;
    uint64_t blocked_until; /* monotonic ms */
    int inflight;           /* fallback slots held */
    uint64_t *ring;         /* release times of the fallback calls of the window, oldest first */
    size_t ring_cap, ring_head, ring_len;
    int64_t day;
    int day_calls;
} local_tenant_t;

struct st_gw_quota_t {
    char name[16], label[24];
    int limit_concurrent, limit_minute, limit_day, limit_app_minute; /* minute: per window; day, app: 0 = none */
    int fallback_concurrent, fallback_minute, fallback_day, fallback_app_minute; /* concurrent 0: no calls */
    uint64_t window_ms, lease_ms;
    char prefix[65];
    char *url; /* NULL: no Redis, fallback limits for good */
    atomic_bool fallback;

    pthread_mutex_t lock; /* guards everything below */
    int mode;
    bool probing;        /* one thread is trying Redis while in fallback */
    uint64_t next_probe; /* monotonic ms */
    gw_redis_sync_t **idle;
    size_t nidle, idle_cap;
    local_tenant_t *buckets[NBUCKETS];
    local_tenant_t app;         /* the app's fallback counters (calls in progress and the window; its name is NULL) */
    uint64_t app_blocked_until; /* monotonic ms */
};

static atomic_int fallback_quotas;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t ms_to_next_utc_day(void)
{
    uint64_t w = wall_ms();
    return (w / DAY_MS + 1) * DAY_MS - w;
}

static int at_least_one(int v)
{
    return v < 1 ? 1 : v;
}

static bool valid_tenant(const char *tenant)
{
    return tenant != NULL && tenant[0] != '\0' && strlen(tenant) <= GW_QUOTA_TENANT_MAX;
}

static void tenant_key(const gw_quota_t *q, const char *tenant, const char *what, char *buf)
{
    snprintf(buf, KEY_MAX, "%s{%s:%s}:%s", q->prefix, q->name, tenant, what);
}

static void app_key(const gw_quota_t *q, const char *what, char *buf)
{
    snprintf(buf, KEY_MAX, "%s{%s-app}:%s", q->prefix, q->name, what);
}

static local_tenant_t *tenant_get(gw_quota_t *q, const char *name, bool create)
{
    uint32_t h = 2166136261u;
    for (const char *p = name; *p != '\0'; ++p)
        h = (h ^ (unsigned char)*p) * 16777619u;
    local_tenant_t **slot = &q->buckets[h % NBUCKETS];
    for (local_tenant_t *t = *slot; t != NULL; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    if (!create)
        return NULL;
    local_tenant_t *t = gw_xcalloc(1, sizeof(*t));
    t->name = gw_xstrdup(name);
    t->day = -1;
    t->next = *slot;
    *slot = t;
    return t;
}

static void ring_trim(const gw_quota_t *q, local_tenant_t *t, uint64_t now)
{
    while (t->ring_len != 0 && t->ring[t->ring_head] + q->window_ms <= now) {
        t->ring_head = (t->ring_head + 1) % t->ring_cap;
        --t->ring_len;
    }
}

/* Records a call released at now in the window of t, whose limit (and so the ring's size) is cap. */
static void ring_push(const gw_quota_t *q, local_tenant_t *t, size_t cap, uint64_t now)
{
    if (t->ring == NULL) {
        t->ring_cap = cap;
        t->ring = gw_xcalloc(t->ring_cap, sizeof(*t->ring));
    }
    ring_trim(q, t, now);
    if (t->ring_len == t->ring_cap) { /* cannot happen: acquire keeps len + inflight within the limit */
        t->ring_head = (t->ring_head + 1) % t->ring_cap;
        --t->ring_len;
    }
    t->ring[(t->ring_head + t->ring_len) % t->ring_cap] = now;
    ++t->ring_len;
}

/* How long an observed block lasts when decided locally. */
enum how { HOW_FOR, HOW_WINDOW, HOW_DAY };

static uint64_t local_block_ms(gw_quota_t *q, local_tenant_t *t, enum how how, uint64_t ms, uint64_t now)
{
    switch (how) {
    case HOW_FOR:
        return ms;
    case HOW_WINDOW:
        if (t != NULL) {
            ring_trim(q, t, now);
            if (t->ring_len != 0)
                return t->ring[t->ring_head] + q->window_ms - now;
        }
        return q->window_ms;
    case HOW_DAY:
    default:
        return ms_to_next_utc_day();
    }
}

static const char *window_name(const gw_quota_t *q)
{
    return q->window_ms == 1000 ? "second" : q->window_ms == 60000 ? "minute" : "window";
}

static void set_fallback_flag(gw_quota_t *q, bool on)
{
    if (atomic_exchange(&q->fallback, on) != on)
        atomic_fetch_add(&fallback_quotas, on ? 1 : -1);
}

/* Called with the lock held when Redis failed. Logs only on the switch. */
static void enter_fallback(gw_quota_t *q, const char *why)
{
    q->probing = false;
    q->next_probe = mono_ms() + PROBE_INTERVAL_MS;
    if (q->mode != MODE_REDIS)
        return;
    q->mode = MODE_FALLBACK;
    set_fallback_flag(q, true);
    gw_log(GW_LOG_WARN,
           "quota: Redis is unavailable (%s); %s calls go on under this instance's share of the limits: %d in "
           "progress and %d per %s per tenant%s",
           why, q->label, q->fallback_concurrent, q->fallback_minute, window_name(q),
           q->fallback_concurrent == 0 ? " (none: SETTLED_INSTANCES leaves it no share; calls wait for Redis)" : "");
}

/* Called with the lock held when the probe reached Redis. */
static void leave_fallback(gw_quota_t *q)
{
    q->probing = false;
    if (q->mode != MODE_FALLBACK)
        return;
    q->mode = MODE_REDIS;
    set_fallback_flag(q, false);
    gw_log(GW_LOG_WARN, "quota: Redis is back; %s quotas are shared by all instances again", q->label);
}

static gw_redis_sync_t *conn_pop(gw_quota_t *q)
{
    if (q->nidle != 0)
        return q->idle[--q->nidle];
    gw_redis_sync_t *c = gw_redis_sync_create(q->url, CONNECT_TIMEOUT_MS, COMMAND_TIMEOUT_MS);
    if (c == NULL) /* the URL parsed in gw_quota_create */
        abort();
    return c;
}

static void conn_push(gw_quota_t *q, gw_redis_sync_t *c)
{
    if (q->nidle == q->idle_cap) {
        q->idle_cap = q->idle_cap == 0 ? 8 : q->idle_cap * 2;
        q->idle = gw_xrealloc(q->idle, q->idle_cap * sizeof(*q->idle));
    }
    q->idle[q->nidle++] = c;
}

static void fail_reason(gw_redis_sync_t *c, const char *err, char *why, size_t len)
{
    const char *detail = gw_redis_sync_last_error(c);
    snprintf(why, len, "%s", detail[0] != '\0' ? detail : err != NULL ? err : "unexpected script reply");
}

/* 0 acquired, 1 denied, -1 Redis failed (why says how). */
static int redis_acquire(gw_quota_t *q, gw_redis_sync_t *c, const char *tenant, gw_quota_slot_t *slot,
                         uint64_t *wait_ms, char *why, size_t whylen)
{
    char k_blocked[KEY_MAX], k_slots[KEY_MAX], k_minute[KEY_MAX], k_day[KEY_MAX], k_app_blocked[KEY_MAX],
        k_app_minute[KEY_MAX];
    tenant_key(q, tenant, "blocked", k_blocked);
    tenant_key(q, tenant, "slots", k_slots);
    tenant_key(q, tenant, "minute", k_minute);
    tenant_key(q, tenant, "day", k_day);
    app_key(q, "blocked", k_app_blocked);
    app_key(q, "minute", k_app_minute);
    char climit[24], mlimit[24], dlimit[24], alimit[24], window[24], lease[24], busy[24], day[24];
    snprintf(climit, sizeof(climit), "%d", q->limit_concurrent);
    snprintf(mlimit, sizeof(mlimit), "%d", q->limit_minute);
    snprintf(dlimit, sizeof(dlimit), "%d", q->limit_day != 0 ? q->limit_day : INT_MAX);
    snprintf(alimit, sizeof(alimit), "%d", q->limit_app_minute);
    snprintf(window, sizeof(window), "%llu", (unsigned long long)q->window_ms);
    snprintf(lease, sizeof(lease), "%llu", (unsigned long long)q->lease_ms);
    snprintf(busy, sizeof(busy), "%d", BUSY_WAIT_MS);

    const char *err = NULL;
    long long res[3];
    size_t n;
    const char *tkeys[] = {k_blocked, k_slots, k_minute, k_day};
    const char *targs[] = {slot->_token, climit, mlimit, dlimit, window, lease, busy};
    if (gw_redis_sync_eval(c, TENANT_ACQUIRE_LUA, 4, tkeys, 7, targs, res, 3, &n, &err) != 0 || n != 3 || res[0] < 0 ||
        res[0] > GW_QUOTA_LIMIT_DAY) {
        fail_reason(c, err, why, whylen);
        return -1;
    }
    if (res[0] != 0) {
        slot->limit = (enum gw_quota_limit)res[0];
        *wait_ms = res[1] > 0 ? (uint64_t)res[1] : 1;
        return 1;
    }
    snprintf(day, sizeof(day), "%lld", res[2]);
    if (q->limit_app_minute == 0) { /* no app-wide limit */
        slot->_kind = KIND_REDIS;
        return 0;
    }

    const char *akeys[] = {k_app_blocked, k_app_minute};
    const char *aargs[] = {slot->_token, alimit, window};
    long long app[2];
    int rc = gw_redis_sync_eval(c, APP_ACQUIRE_LUA, 2, akeys, 3, aargs, app, 2, &n, &err);
    bool ok = rc == 0 && n == 2 &&
              (app[0] == 0 || app[0] == GW_QUOTA_LIMIT_APP_BLOCKED || app[0] == GW_QUOTA_LIMIT_APP_MINUTE);
    if (!ok || app[0] != 0) {
        if (!ok)
            fail_reason(c, err, why, whylen);
        /* give the tenant's units back (fails at once if Redis just failed: the lease then frees the slot) */
        const char *ukeys[] = {k_slots, k_minute, k_day};
        const char *uargs[] = {slot->_token, day};
        long long ignored[1];
        (void)!gw_redis_sync_eval(c, TENANT_UNDO_LUA, 3, ukeys, 2, uargs, ignored, 1, &n, NULL);
        if (!ok)
            return -1;
        slot->limit = (enum gw_quota_limit)app[0];
        *wait_ms = app[1] > 0 ? (uint64_t)app[1] : 1;
        return 1;
    }
    slot->_kind = KIND_REDIS;
    return 0;
}

/* With the lock held: a block observed for the tenant or the app. */
static bool local_blocked(gw_quota_t *q, const char *tenant, uint64_t now, gw_quota_slot_t *slot, uint64_t *wait_ms)
{
    local_tenant_t *t = tenant_get(q, tenant, false);
    if (t != NULL && t->blocked_until > now) {
        slot->limit = GW_QUOTA_LIMIT_BLOCKED;
        *wait_ms = t->blocked_until - now;
        return true;
    }
    if (q->app_blocked_until > now) {
        slot->limit = GW_QUOTA_LIMIT_APP_BLOCKED;
        *wait_ms = q->app_blocked_until - now;
        return true;
    }
    return false;
}

/* With the lock held: true if the window of t (its calls in progress and those released within the window)
 * holds limit calls; *wait_ms then says when the one that must go leaves it. */
static bool window_full(const gw_quota_t *q, local_tenant_t *t, int limit, uint64_t now, uint64_t *wait_ms)
{
    if (t->ring != NULL)
        ring_trim(q, t, now);
    size_t used = t->ring_len + (size_t)t->inflight;
    if (used < (size_t)limit)
        return false;
    size_t i = used - (size_t)limit;
    *wait_ms = i < t->ring_len ? t->ring[(t->ring_head + i) % t->ring_cap] + q->window_ms - now : BUSY_WAIT_MS;
    return true;
}

/* With the lock held: the fallback limits, this instance's share of each (gw_quota_limits_of). */
static int local_acquire(gw_quota_t *q, const char *tenant, gw_quota_slot_t *slot, uint64_t *wait_ms)
{
    uint64_t now = mono_ms();
    local_tenant_t *t = tenant_get(q, tenant, true);
    if (t->inflight >= q->fallback_concurrent) {
        slot->limit = GW_QUOTA_LIMIT_CONCURRENT;
        *wait_ms = q->fallback_concurrent == 0 ? PROBE_INTERVAL_MS : BUSY_WAIT_MS;
        return 1;
    }
    if (window_full(q, t, q->fallback_minute, now, wait_ms)) {
        slot->limit = GW_QUOTA_LIMIT_MINUTE;
        return 1;
    }
    int64_t day = (int64_t)(wall_ms() / DAY_MS);
    if (t->day != day) {
        t->day = day;
        t->day_calls = 0;
    }
    if (q->fallback_day != 0 && t->day_calls >= q->fallback_day) {
        slot->limit = GW_QUOTA_LIMIT_DAY;
        *wait_ms = ms_to_next_utc_day();
        return 1;
    }
    if (q->fallback_app_minute != 0 && window_full(q, &q->app, q->fallback_app_minute, now, wait_ms)) {
        slot->limit = GW_QUOTA_LIMIT_APP_MINUTE;
        return 1;
    }
    ++t->inflight;
    ++t->day_calls;
    if (q->fallback_app_minute != 0)
        ++q->app.inflight;
    slot->_kind = KIND_LOCAL;
    return 0;
}

static int min_int(int a, int b)
{
    return a < b ? a : b;
}

/* The published limits of each provider (providers/PROVIDERS.md), as SETTLED_<PROVIDER>_LIMIT_* set them, and this
 * instance's share of them for when Redis is unreachable. */
int gw_quota_limits_of(const gw_config_t *cfg, const char *provider, gw_quota_limits_t *out)
{
    *out = (gw_quota_limits_t){.fallback_concurrent = at_least_one(cfg->quota_fallback_concurrent)};
    if (strcmp(provider, "xero") == 0) {
        /* per tenant: 5 in progress, 60 a rolling minute, 5,000 a UTC day; per app: 10,000 a minute */
        *out = (gw_quota_limits_t){.name = "xero",
                                   .label = "Xero",
                                   .concurrent = at_least_one(cfg->xero_limit_concurrent),
                                   .per_window = at_least_one(cfg->xero_limit_minute),
                                   .window_ms = 60000,
                                   .day = at_least_one(cfg->xero_limit_day),
                                   .app_per_window = at_least_one(cfg->xero_limit_app_minute),
                                   .fallback_concurrent = at_least_one(cfg->quota_fallback_concurrent),
                                   .fallback_per_window = at_least_one(cfg->quota_fallback_minute)};
    } else if (strcmp(provider, "stripe") == 0) {
        /* per account: 25 requests a second per endpoint by default (100 a second in all, live mode) */
        out->name = "stripe", out->label = "Stripe";
        out->concurrent = at_least_one(cfg->stripe_limit_concurrent);
        out->per_window = at_least_one(cfg->stripe_limit_second);
        out->window_ms = 1000;
    } else if (strcmp(provider, "gocardless") == 0) {
        /* per access token: 1,000 requests a minute */
        out->name = "gocardless", out->label = "GoCardless";
        out->concurrent = at_least_one(cfg->gocardless_limit_concurrent);
        out->per_window = at_least_one(cfg->gocardless_limit_minute);
        out->window_ms = 60000;
    } else {
        return -1;
    }
    if (out->fallback_per_window == 0) /* a hedge, should the instance count be set too low */
        out->fallback_per_window = at_least_one(out->per_window / 4);

    /* alone, each of n instances may take 1/n of every limit: together they can never exceed it */
    int n = at_least_one(cfg->instances);
    out->fallback_concurrent = min_int(out->fallback_concurrent, out->concurrent / n);
    out->fallback_per_window = min_int(out->fallback_per_window, out->per_window / n);
    out->fallback_day = out->day / n;
    out->fallback_app_per_window = out->app_per_window / n;
    if (out->fallback_per_window == 0 || (out->day != 0 && out->fallback_day == 0) ||
        (out->app_per_window != 0 && out->fallback_app_per_window == 0)) {
        /* more instances than some limit has units: no share can be given to every one, so none gets any */
        out->fallback_concurrent = 0;
        out->fallback_per_window = at_least_one(out->fallback_per_window);
        out->fallback_day = out->day != 0 ? at_least_one(out->fallback_day) : 0;
        out->fallback_app_per_window = out->app_per_window != 0 ? at_least_one(out->fallback_app_per_window) : 0;
    }
    return 0;
}

gw_quota_t *gw_quota_create(const gw_config_t *cfg, const char *provider)
{
    gw_quota_limits_t limits;
    if (gw_quota_limits_of(cfg, provider, &limits) != 0)
        return NULL;
    return gw_quota_create_limits(&limits, cfg->redis_url, cfg->http_timeout_ms);
}

gw_quota_t *gw_quota_create_limits(const gw_quota_limits_t *limits, const char *redis_url, int http_timeout_ms)
{
    gw_quota_t *q = gw_xcalloc(1, sizeof(*q));
    snprintf(q->name, sizeof(q->name), "%s", limits->name);
    snprintf(q->label, sizeof(q->label), "%s", limits->label != NULL ? limits->label : limits->name);
    q->limit_concurrent = at_least_one(limits->concurrent);
    q->limit_minute = at_least_one(limits->per_window);
    q->limit_day = limits->day > 0 ? limits->day : 0;
    q->limit_app_minute = limits->app_per_window > 0 ? limits->app_per_window : 0;
    q->fallback_concurrent = limits->fallback_concurrent > 0 ? limits->fallback_concurrent : 0;
    q->fallback_minute = at_least_one(limits->fallback_per_window);
    q->fallback_day = limits->fallback_day > 0 ? limits->fallback_day : 0;
    q->fallback_app_minute = limits->fallback_app_per_window > 0 ? limits->fallback_app_per_window : 0;
    q->window_ms = limits->window_ms > 0 ? (uint64_t)limits->window_ms : 60000;
    q->lease_ms = MIN_LEASE_MS;
    if (http_timeout_ms > 0 && (uint64_t)http_timeout_ms + 5000 > q->lease_ms)
        q->lease_ms = (uint64_t)http_timeout_ms + 5000; /* a slot must outlive the longest call */
    snprintf(q->prefix, sizeof(q->prefix), "settled:quota:");
    atomic_init(&q->fallback, false);
    pthread_mutex_init(&q->lock, NULL);
    if (redis_url != NULL && redis_url[0] != '\0') {
        gw_redis_sync_t *c = gw_redis_sync_create(redis_url, CONNECT_TIMEOUT_MS, COMMAND_TIMEOUT_MS);
        if (c == NULL) {
            pthread_mutex_destroy(&q->lock);
            free(q);
            return NULL;
        }
        q->url = gw_xstrdup(redis_url);
        conn_push(q, c);
        q->mode = MODE_REDIS;
    } else {
        q->mode = MODE_LOCAL;
        set_fallback_flag(q, true);
        gw_log(GW_LOG_WARN,
               "quota: SETTLED_REDIS_URL is not set; %s calls are limited to this instance's share: %d in progress "
               "and %d per %s per tenant%s",
               q->label, q->fallback_concurrent, q->fallback_minute, window_name(q),
               q->fallback_concurrent == 0 ? " (none: SETTLED_INSTANCES leaves it no share; no calls are made)" : "");
    }
    return q;
}

void gw_quota_destroy(gw_quota_t *q)
{
    if (q == NULL)
        return;
    set_fallback_flag(q, false);
    for (size_t i = 0; i != q->nidle; ++i)
        gw_redis_sync_destroy(q->idle[i]);
    free(q->idle);
    for (size_t i = 0; i != NBUCKETS; ++i) {
        for (local_tenant_t *t = q->buckets[i], *next; t != NULL; t = next) {
            next = t->next;
            free(t->ring);
            free(t->name);
            free(t);
        }
    }
    free(q->app.ring);
    pthread_mutex_destroy(&q->lock);
    free(q->url);
    free(q);
}

static int quota_acquire(gw_quota_t *q, const char *tenant, gw_quota_slot_t *slot, uint64_t *wait_ms)
{
    slot->limit = GW_QUOTA_LIMIT_NONE;
    slot->_kind = KIND_NONE;
    slot->_tenant[0] = slot->_token[0] = '\0';
    *wait_ms = 0;
    if (!valid_tenant(tenant))
        return -1;
    memcpy(slot->_tenant, tenant, strlen(tenant) + 1);

    pthread_mutex_lock(&q->lock);
    if (local_blocked(q, tenant, mono_ms(), slot, wait_ms)) {
        pthread_mutex_unlock(&q->lock);
        return 1;
    }
    bool probe = false;
    if (q->mode == MODE_FALLBACK && !q->probing && mono_ms() >= q->next_probe)
        probe = q->probing = true;
    gw_redis_sync_t *c = q->mode == MODE_REDIS || probe ? conn_pop(q) : NULL;
    pthread_mutex_unlock(&q->lock);

    if (c != NULL) {
        unsigned char rnd[16];
        gw_crypto_random(rnd, sizeof(rnd));
        gw_hex_encode(rnd, sizeof(rnd), slot->_token);
        char why[256];
        int rc = redis_acquire(q, c, tenant, slot, wait_ms, why, sizeof(why));
        pthread_mutex_lock(&q->lock);
        conn_push(q, c);
        if (rc >= 0) {
            if (probe)
                leave_fallback(q);
            pthread_mutex_unlock(&q->lock);
            return rc;
        }
        enter_fallback(q, why);
        slot->limit = GW_QUOTA_LIMIT_NONE;
        slot->_token[0] = '\0';
    } else {
        pthread_mutex_lock(&q->lock);
    }
    int rc = local_acquire(q, tenant, slot, wait_ms);
    pthread_mutex_unlock(&q->lock);
    return rc;
}

int gw_quota_acquire(gw_quota_t *q, const char *tenant, gw_quota_slot_t *slot, uint64_t *wait_ms)
{
    int rc = quota_acquire(q, tenant, slot, wait_ms);
    if (rc == 1 && gw_log_enabled(GW_LOG_DEBUG)) {
        static const char *const limits[] = {"none", "tenant blocked", "concurrent", "minute",
                                             "day",  "app blocked",    "app minute"};
        const char *limit = (size_t)slot->limit < sizeof(limits) / sizeof(limits[0]) ? limits[slot->limit] : "?";
        gw_logline_t line;
        gw_log_begin(&line, GW_LOG_DEBUG, "quota wait: the call waits for its provider's limit");
        gw_log_str(&line, "provider", q->label, strlen(q->label));
        gw_log_str(&line, "tenant", tenant, strlen(tenant));
        gw_log_str(&line, "limit", limit, strlen(limit));
        gw_log_int(&line, "wait_ms", (long long)*wait_ms);
        gw_log_str(&line, "counts", q->mode == MODE_REDIS ? "shared (Redis)" : "local (fallback)",
                   q->mode == MODE_REDIS ? 14 : 16);
        gw_log_end(&line);
    }
    return rc;
}

void gw_quota_release(gw_quota_t *q, gw_quota_slot_t *slot)
{
    int kind = slot->_kind;
    slot->_kind = KIND_NONE;
    if (kind == KIND_LOCAL) {
        pthread_mutex_lock(&q->lock);
        local_tenant_t *t = tenant_get(q, slot->_tenant, true);
        uint64_t now = mono_ms();
        if (t->inflight > 0) {
            --t->inflight;
            ring_push(q, t, (size_t)q->fallback_minute, now);
        }
        if (q->fallback_app_minute != 0 && q->app.inflight > 0) {
            --q->app.inflight;
            ring_push(q, &q->app, (size_t)q->fallback_app_minute, now);
        }
        pthread_mutex_unlock(&q->lock);
    } else if (kind == KIND_REDIS) {
        pthread_mutex_lock(&q->lock);
        /* in fallback the slot is left to its lease rather than wait for a Redis that is down */
        gw_redis_sync_t *c = q->mode == MODE_REDIS ? conn_pop(q) : NULL;
        pthread_mutex_unlock(&q->lock);
        if (c == NULL)
            return;
        char k_slots[KEY_MAX], k_minute[KEY_MAX], why[256];
        tenant_key(q, slot->_tenant, "slots", k_slots);
        tenant_key(q, slot->_tenant, "minute", k_minute);
        const char *keys[] = {k_slots, k_minute}, *args[] = {slot->_token}, *err = NULL;
        long long res[1];
        size_t n;
        int rc = gw_redis_sync_eval(c, TENANT_RELEASE_LUA, 2, keys, 1, args, res, 1, &n, &err);
        if (rc != 0)
            fail_reason(c, err, why, sizeof(why));
        pthread_mutex_lock(&q->lock);
        conn_push(q, c);
        if (rc != 0)
            enter_fallback(q, why);
        pthread_mutex_unlock(&q->lock);
    }
}

/* Reads a header value that must be a non-negative decimal integer; -1 if it is not. */
static long long parse_count(const char *s)
{
    if (s == NULL)
        return -1;
    while (*s == ' ' || *s == '\t')
        ++s;
    if (!isdigit((unsigned char)*s))
        return -1;
    long long v = 0;
    for (; isdigit((unsigned char)*s); ++s) {
        if (v > 1000000000000LL)
            return -1;
        v = v * 10 + (*s - '0');
    }
    while (*s == ' ' || *s == '\t')
        ++s;
    return *s == '\0' ? v : -1;
}

/* Retry-After (delta-seconds or an HTTP-date) in ms, capped at two days; -1 if absent or unreadable. */
static long long parse_retry_after(const char *s)
{
    if (s == NULL)
        return -1;
    long long secs = parse_count(s);
    if (secs < 0) {
        struct tm tm = {0};
        while (*s == ' ')
            ++s;
        const char *end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        if (end == NULL || *end != '\0')
            return -1;
        time_t at = timegm(&tm), now = time(NULL);
        secs = at > now ? (long long)(at - now) : 0;
    }
    long long ms = secs * 1000;
    return ms > (long long)MAX_RETRY_AFTER_MS ? (long long)MAX_RETRY_AFTER_MS : ms;
}

/* True if the X-Rate-Limit-Problem value names want, ignoring case and anything but letters. */
static bool problem_is(const char *problem, const char *want)
{
    if (problem == NULL)
        return false;
    for (const char *p = problem;; ++p) {
        while (*p != '\0' && !isalpha((unsigned char)*p))
            ++p;
        if (*p == '\0' || *want == '\0')
            return *p == '\0' && *want == '\0';
        if (tolower((unsigned char)*p) != *want++)
            return false;
    }
}

typedef struct st_block_t {
    bool app;
    enum how how;
    uint64_t ms;
} block_t;

void gw_quota_observe(gw_quota_t *q, const char *tenant, int status, const char *retry_after,
                      const char *rate_limit_problem, const char *min_remaining, const char *day_remaining,
                      const char *app_min_remaining)
{
    if (!valid_tenant(tenant))
        return;
    block_t blocks[4];
    size_t nblocks = 0;
    long long ra = parse_retry_after(retry_after);
    if (status == 429) {
        uint64_t ms = ra < 1000 ? 1000 : (uint64_t)ra;
        if (problem_is(rate_limit_problem, "appminute"))
            blocks[nblocks++] = ra >= 0 ? (block_t){true, HOW_FOR, ms} : (block_t){true, HOW_WINDOW, 0};
        else if (ra >= 0)
            blocks[nblocks++] = (block_t){false, HOW_FOR, ms};
        else if (problem_is(rate_limit_problem, "minute"))
            blocks[nblocks++] = (block_t){false, HOW_WINDOW, 0};
        else if (problem_is(rate_limit_problem, "day"))
            blocks[nblocks++] = (block_t){false, HOW_DAY, 0};
        else if (problem_is(rate_limit_problem, "concurrent"))
            blocks[nblocks++] = (block_t){false, HOW_FOR, CONCURRENT_429_BLOCK_MS};
        else
            blocks[nblocks++] = (block_t){false, HOW_FOR, UNKNOWN_429_BLOCK_MS};
    }
    /* on a 429 with Retry-After, Xero has said when to come back: the remaining counts add nothing to it */
    bool tenant_told = status == 429 && ra >= 0 && !problem_is(rate_limit_problem, "appminute");
    bool app_told = status == 429 && ra >= 0 && problem_is(rate_limit_problem, "appminute");
    if (!tenant_told && parse_count(min_remaining) == 0)
        blocks[nblocks++] = (block_t){false, HOW_WINDOW, 0};
    if (!tenant_told && parse_count(day_remaining) == 0)
        blocks[nblocks++] = (block_t){false, HOW_DAY, 0};
    if (!app_told && parse_count(app_min_remaining) == 0)
        blocks[nblocks++] = (block_t){true, HOW_WINDOW, 0};
    if (nblocks == 0)
        return;

    pthread_mutex_lock(&q->lock);
    gw_redis_sync_t *c = q->mode == MODE_REDIS ? conn_pop(q) : NULL;
    pthread_mutex_unlock(&q->lock);

    uint64_t lasts[4];
    bool redis_failed = false;
    char why[256] = "";
    for (size_t i = 0; i != nblocks; ++i) {
        lasts[i] = UINT64_MAX; /* decided locally below */
        if (c == NULL || redis_failed)
            continue;
        char k_blocked[KEY_MAX], k_minute[KEY_MAX], ms[24];
        if (blocks[i].app) {
            app_key(q, "blocked", k_blocked);
            app_key(q, "minute", k_minute);
        } else {
            tenant_key(q, tenant, "blocked", k_blocked);
            tenant_key(q, tenant, "minute", k_minute);
        }
        snprintf(ms, sizeof(ms), "%llu",
                 (unsigned long long)(blocks[i].how == HOW_WINDOW ? q->window_ms : blocks[i].ms));
        const char *keys[] = {k_blocked, k_minute};
        const char *args[] = {blocks[i].how == HOW_FOR ? "for" : blocks[i].how == HOW_WINDOW ? "window" : "day", ms};
        const char *err = NULL;
        long long res[1];
        size_t n;
        if (gw_redis_sync_eval(c, OBSERVE_LUA, 2, keys, 2, args, res, 1, &n, &err) == 0 && n == 1 && res[0] >= 0) {
            lasts[i] = (uint64_t)res[0];
        } else {
            fail_reason(c, err, why, sizeof(why));
            redis_failed = true;
        }
    }

    pthread_mutex_lock(&q->lock);
    if (c != NULL)
        conn_push(q, c);
    if (redis_failed)
        enter_fallback(q, why);
    /* every block is kept in-process too, so it holds if Redis goes away */
    uint64_t now = mono_ms();
    local_tenant_t *t = tenant_get(q, tenant, true);
    for (size_t i = 0; i != nblocks; ++i) {
        uint64_t ms = lasts[i] != UINT64_MAX
                          ? lasts[i]
                          : local_block_ms(q, blocks[i].app ? NULL : t, blocks[i].how, blocks[i].ms, now);
        uint64_t *until = blocks[i].app ? &q->app_blocked_until : &t->blocked_until;
        if (now + ms > *until)
            *until = now + ms;
    }
    pthread_mutex_unlock(&q->lock);
}

bool gw_quota_is_fallback(const gw_quota_t *q)
{
    return atomic_load(&((gw_quota_t *)q)->fallback);
}

bool gw_quota_fallback_active(void)
{
    return atomic_load(&fallback_quotas) > 0;
}

const char *gw_quota_limit_name(enum gw_quota_limit limit)
{
    static const char *const names[] = {"none", "blocked", "concurrent", "minute", "day", "app_blocked", "app_minute"};
    return (unsigned)limit < sizeof(names) / sizeof(names[0]) ? names[limit] : "unknown";
}

void gw_quota_test_tune(gw_quota_t *q, uint64_t window_ms, uint64_t lease_ms, const char *key_prefix)
{
    pthread_mutex_lock(&q->lock);
    if (window_ms != 0)
        q->window_ms = window_ms;
    if (lease_ms != 0)
        q->lease_ms = lease_ms;
    if (key_prefix != NULL)
        snprintf(q->prefix, sizeof(q->prefix), "%s", key_prefix);
    pthread_mutex_unlock(&q->lock);
}

/* KEYS: blocked, slots, minute, day (one tenant's) or blocked, minute (the app's: then ARGV[2] is "app"). ARGV:
 * window ms. Reads only (the trims of an acquire are left to the acquire): {in progress, calls of the window, calls
 * today, ms blocked}. */
static const char PEEK_LUA[] =
    LUA_NOW "local window = tonumber(ARGV[1])\n"
            "local app = ARGV[2] == 'app'\n"
            "local blocked = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
            "local b = 0\n"
            "if blocked > now then b = blocked - now end\n"
            "if app then return {0, redis.call('ZCOUNT', KEYS[2], '(' .. (now - window), '+inf'), 0, b} end\n"
            "local slots = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')\n"
            "local calls = redis.call('ZCOUNT', KEYS[3], '(' .. (now - window), '+inf')\n"
            "local d = redis.call('HMGET', KEYS[4], 'd', 'n')\n"
            "local used = 0\n"
            "if tonumber(d[1]) == math.floor(now / 86400000) then used = tonumber(d[2]) or 0 end\n"
            "return {slots, calls, used, b}\n";

static int clamp_left(int limit, long long used)
{
    return used >= limit ? 0 : limit - (int)used;
}

int gw_quota_peek(gw_quota_t *q, const char *tenant, gw_quota_remaining_t *out)
{
    memset(out, 0, sizeof(*out));
    if (q->url == NULL || !valid_tenant(tenant))
        return -1;
    gw_redis_sync_t *c = gw_redis_sync_create(q->url, CONNECT_TIMEOUT_MS, COMMAND_TIMEOUT_MS);
    if (c == NULL)
        return -1;
    char k_blocked[KEY_MAX], k_slots[KEY_MAX], k_minute[KEY_MAX], k_day[KEY_MAX], window[24];
    tenant_key(q, tenant, "blocked", k_blocked);
    tenant_key(q, tenant, "slots", k_slots);
    tenant_key(q, tenant, "minute", k_minute);
    tenant_key(q, tenant, "day", k_day);
    snprintf(window, sizeof(window), "%llu", (unsigned long long)q->window_ms);
    const char *tkeys[] = {k_blocked, k_slots, k_minute, k_day}, *targs[] = {window, "tenant"};
    long long t[4], a[4] = {0};
    size_t n = 0, an = 4;
    int rc = gw_redis_sync_eval(c, PEEK_LUA, 4, tkeys, 2, targs, t, 4, &n, NULL);
    if (rc == 0 && n == 4 && q->limit_app_minute != 0) {
        app_key(q, "blocked", k_blocked);
        app_key(q, "minute", k_minute);
        const char *akeys[] = {k_blocked, k_minute}, *aargs[] = {window, "app"};
        rc = gw_redis_sync_eval(c, PEEK_LUA, 2, akeys, 2, aargs, a, 4, &an, NULL);
    }
    gw_redis_sync_destroy(c);
    if (rc != 0 || n != 4 || an != 4)
        return -1;
    out->window_ms = q->window_ms;
    out->concurrent = clamp_left(q->limit_concurrent, t[0]);
    out->window = clamp_left(q->limit_minute, t[1]);
    out->day = q->limit_day != 0 ? clamp_left(q->limit_day, t[2]) : -1;
    out->app_window = q->limit_app_minute != 0 ? clamp_left(q->limit_app_minute, a[1]) : -1;
    out->blocked_ms = (uint64_t)(t[3] > a[3] ? t[3] : a[3]);
    return 0;
}
