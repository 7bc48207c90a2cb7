/* SPDX-License-Identifier: MIT */
/*
 * metrics.h: process-wide counters, gauges and histograms, updated with relaxed atomics from every
 * loop thread and rendered in the Prometheus text format at /metrics.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

/* The most routes requests can be counted by, the "other" bucket included. */
#define GW_METRICS_MAX_ROUTES 128

/* Names the routes requests are counted by: route i (an index below n < GW_METRICS_MAX_ROUTES) is labelled
 * names[i], and is a webhook route of provider providers[i] when that is not NULL (its intake latency and events
 * are then counted by provider). Index n is "other": requests that matched no route. The strings must outlive the
 * process's metrics. Call once, before any request is counted. */
void gw_metrics_routes(const char *const *names, const char *const *providers, size_t n);

/* Database connection states, as reported by the db module. */
enum gw_db_conn_state {
    GW_DB_DISCONNECTED,
    GW_DB_CONNECTING,
    GW_DB_PREPARING,
    GW_DB_IDLE,
    GW_DB_BUSY,
    GW_DB_STATE_MAX
};
extern const char *const gw_db_state_names[GW_DB_STATE_MAX];

/* Counts a finished request of route (an index given to gw_metrics_routes) and, for webhook routes, its intake
 * latency. */
void gw_metrics_request(size_t route, int status, uint64_t micros);
/* Counts events newly stored (inserted) and received (inserted or duplicate) for a webhook route. */
void gw_metrics_events(size_t route, uint64_t received, uint64_t stored);
/* Counts one committed batch of n requests. */
void gw_metrics_batch(size_t n);
/* Moves one connection from state from to state to (from may equal GW_DB_STATE_MAX for a new one). */
void gw_metrics_db_state(enum gw_db_conn_state from, enum gw_db_conn_state to);
/* Records whether a loop's Redis connection is up (+1) or went down (-1). */
void gw_metrics_redis_up(int delta);
/* An API access token was accepted without its revocation being checked (Redis down or not configured). */
void gw_metrics_revocation_unchecked(void);
/* An API request the guard refused, by reason: "unauthenticated", "revoked", "role", "invalid". */
void gw_metrics_guard_refused(const char *reason);

/* Queue workers: what happened to inbox events. */
enum gw_worker_outcome {
    GW_OUTCOME_DONE,        /* processed */
    GW_OUTCOME_COALESCED,   /* covered by the fetch of another event for the same object */
    GW_OUTCOME_IGNORED,     /* nothing to do for this event type */
    GW_OUTCOME_RESCHEDULED, /* waiting for a quota, a rate limit or re-authorisation (not an attempt) */
    GW_OUTCOME_FAILED,      /* failed, will be retried */
    GW_OUTCOME_DEAD,        /* failed for the last time */
    GW_OUTCOME_MAX
};
extern const char *const gw_worker_outcome_names[GW_OUTCOME_MAX];
void gw_metrics_worker_outcome(enum gw_worker_outcome outcome, uint64_t n);
/* Seconds from storing an event to finishing it. */
void gw_metrics_processing_lag(double seconds);
/* Sets the inbox rows by status (pending, failed, processing, dead), as last counted by a worker. */
void gw_metrics_queue_depth(const char *status, int64_t n);
/* Sets the number of Xero token sets that need re-authorisation; read back by /readyz. */
void gw_metrics_xero_reauth(int64_t n);
int64_t gw_metrics_xero_reauth_get(void);
/* Counts records a drift-repair sweep found changed (missed by webhooks) or unchanged, per record kind. */
void gw_metrics_xero_drift(const char *record_kind, uint64_t changed, uint64_t unchanged);
/* Counts Xero API calls by HTTP status (0: no response). */
void gw_metrics_xero_call(long status);
/* Sets whether quotas run on local fallback limits (Redis unreachable). */
void gw_metrics_quota_fallback(bool active);

/* The circuits of the provider accounts (domain/circuit.h), as last read from PostgreSQL by a worker. */
#define GW_METRICS_MAX_CIRCUITS 256
typedef struct st_gw_metrics_circuit_t {
    char provider[16];
    char account[72];
    char state[12];      /* closed, open, half_open */
    int failures;        /* consecutive transient failures */
    int64_t retry_in_ms; /* open, half_open: until the next probe (or the end of the probe's lease) */
} gw_metrics_circuit_t;
/* Replaces the circuits shown (n at most GW_METRICS_MAX_CIRCUITS; the rest are left out). Thread-safe. */
void gw_metrics_circuits(const gw_metrics_circuit_t *c, size_t n);
/* Copies up to cap circuits that are not closed into out; returns how many are not closed in all. */
size_t gw_metrics_circuits_open(gw_metrics_circuit_t *out, size_t cap);
/* Counts one event that went dead (of provider: stripe, xero, gocardless; others count as "other"). */
void gw_metrics_dead_letter(const char *provider);
/* Counts n steps of the payment write-back to Xero by outcome: written, deleted, in_sync, refused, retried, waited,
 * dead or unconfigured (others are not counted). */
void gw_metrics_writeback(const char *outcome, uint64_t n);
/* Counts an operational alert by result: "sent", "failed" (every try failed) or "dropped" (the queue was full). */
void gw_metrics_alert(const char *result);

/* Gauges of shared state, read from PostgreSQL by whichever process serves /metrics (api/ops.c), so that they are
 * right whatever runs the workers. One row: the inbox rows of provider in status, and the age in seconds of the
 * oldest of them (by received_at). */
typedef struct st_gw_metrics_queue_row_t {
    const char *provider, *status;
    int64_t count;
    int64_t oldest_seconds;
} gw_metrics_queue_row_t;
/* Replaces the shared gauges with rows[0..n) (providers and statuses the metrics do not know are skipped; the
 * others not in rows become 0) and the count of Xero token sets needing re-authorisation (also what /readyz
 * reports); read_at is the unix time of the read. */
void gw_metrics_shared_set(const gw_metrics_queue_row_t *rows, size_t n, int64_t xero_reauth, int64_t read_at);

/* Renders every metric; the per-process ones carry the label instance_id (log.h's instance id), the shared gauges
 * none (they are the same in every process). Returns a malloc'd buffer of *len bytes that the caller frees. */
char *gw_metrics_render(size_t *len);

#endif
