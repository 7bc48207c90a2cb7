/* SPDX-License-Identifier: MIT */
/*
 * queue.h: the work queue, which is the inbox table itself (inbox_events), and knows no provider. A worker
 * claims due rows in one UPDATE ... FOR UPDATE SKIP LOCKED that takes a lease (the row is 'processing' until
 * next_attempt_at) and counts the attempt; then every claimed row is finished exactly one way: done or ignored,
 * failed (transient: retried after the next wait of SETTLED_RETRY_SCHEDULE, dead after the last; permanent: dead at
 * once), rescheduled (waiting for a quota, a re-authorisation or an open circuit: not an attempt), or covered (its
 * object was fetched for another row). Finishing is fenced by the lease owner, so a worker whose lease expired
 * changes nothing. A row whose lease expired as many times as the schedule allows attempts (its worker died each
 * time) is parked as dead. Every row that goes dead writes one log line, counts in settled_dead_letters_total and
 * is posted to the alert webhook when one is configured (alert.h).
 *
 * The events of a provider account whose circuit is open (circuit.h) are not claimed, except by the one probe that
 * holds it half-open.
 *
 * Blocking (a database session): worker threads only.
 */
#ifndef GW_QUEUE_H
#define GW_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "db.h"
#include "err.h"

/* One claimed row. The strings are owned by the batch. */
typedef struct st_gw_queue_row_t {
    char id[24];
    int64_t organisation_id;
    char *provider;
    char *account; /* NULL when the event names none */
    char *event_type;
    char *resource_id; /* NULL when the event names none */
    char *correlation;
    char *source; /* the webhook source the event arrived through ("default" for the route without a suffix) */
    int attempts;
} gw_queue_row_t;

/* What one claim returned. */
typedef struct st_gw_queue_batch_t {
    gw_queue_row_t *rows;
    size_t n;
    char claimed_at[64]; /* the database's now() at the claim: rows stored before it are covered by its fetches */
} gw_queue_batch_t;

/* A worker's handle on the queue: its session and the lease owner name it claims with. */
typedef struct st_gw_queue_t {
    const gw_config_t *cfg;
    gw_dbs_t *db;
    char owner[96]; /* host, pid and thread: unique among every worker sharing the queue */
    int index;      /* for log lines */
} gw_queue_t;

/* A provider the claim serves, and how long its fresh rows wait before they may be claimed (so that a burst of
 * events for one object is claimed together and becomes one fetch). */
typedef struct st_gw_queue_lane_t {
    const char *provider;
    int delay_ms;
} gw_queue_lane_t;

/* Claims up to SETTLED_WORKER_BATCH due rows of the lanes' providers, oldest due first, skipping the accounts whose
 * circuit is not closed. Returns 0 with the rows in *out (n may be 0; free it with gw_queue_batch_free), or -1 with
 * err when the database failed. */
GW_MUSTCHECK int gw_queue_claim(gw_queue_t *q, const gw_queue_lane_t *lanes, size_t nlanes, gw_queue_batch_t *out,
                                gw_err_t *err);
/* Claims at most one due row of lane's provider and account ("" for rows naming none), whose circuit the caller
 * holds half-open (gw_circuit_take_probe): the probe. Returns like gw_queue_claim. */
GW_MUSTCHECK int gw_queue_claim_probe(gw_queue_t *q, const gw_queue_lane_t *lane, const char *account,
                                      gw_queue_batch_t *out, gw_err_t *err);
void gw_queue_batch_free(gw_queue_batch_t *b);

/* How a row ended when nothing failed. */
enum gw_queue_end { GW_QUEUE_DONE, GW_QUEUE_IGNORED };

/* Finishes rows as done, or as ignored (there is nothing to do for such an event). */
void gw_queue_finish(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, enum gw_queue_end end);
/* Finishes rows as ignored, with the reason (one line, no secret) kept in their last_error for operators. */
void gw_queue_ignore(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, const char *reason);
/* What kind of failure an attempt met. */
enum gw_queue_failure {
    GW_QUEUE_TRANSIENT, /* it may work later (e.g. our database failed): the next wait of the schedule */
    GW_QUEUE_OUTAGE,    /* the provider did not answer, or answered 5xx, 408 or 409: transient, and counted by the
                         * circuit of the rows' provider account; once that is open, the rows wait for it (no attempt) */
    GW_QUEUE_PERMANENT, /* retrying cannot help (another 4xx, a malformed object): dead at once */
};
/* Records a failed attempt of rows with error (one line, no secret), of the kind given. Rows of GW_QUEUE_OUTAGE must
 * be of one provider account. Logs one line for the rows retried and one per row that went dead. */
void gw_queue_fail(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, enum gw_queue_failure kind, const char *error);

/* A row that went dead, for its log line, its metric and its alert. Strings are only read during the call. */
typedef struct st_gw_queue_dead_t {
    const char *id; /* the inbox row's id */
    const char *provider;
    const char *event_id; /* the provider's event id */
    const char *event_type;
    int attempts;
    const char *error;
    const char *correlation;
} gw_queue_dead_t;
/* Writes the "event dead" log line, counts settled_dead_letters_total and queues the alert. */
void gw_queue_dead_letter(const gw_queue_dead_t *d);
/* Gives rows back without counting the attempt, due again in wait_ms (a quota, a rate limit, re-authorisation). */
void gw_queue_reschedule(gw_queue_t *q, gw_queue_row_t *const *rows, size_t n, uint64_t wait_ms, const char *why);
/* Finishes as done the rows still waiting (pending or failed, not leased) of provider in like's organisation and
 * account whose event type starts with category and whose resource is one of resource_ids, stored before before
 * (a claimed_at): the state just fetched for them covers them. Returns how many. */
size_t gw_queue_cover(gw_queue_t *q, const gw_queue_row_t *like, const char *category, const char *const *resource_ids,
                      size_t nids, const char *before);
/* Parks the rows of providers whose lease expired as many times as the schedule allows attempts. Returns how many. */
size_t gw_queue_park_lost(gw_queue_t *q, const char *const *providers, size_t nproviders);
/* Makes the rows still leased by q's owner due now: called between rounds (so none of them is in hand) after the
 * database failed, whose finishing statements may have been lost with it; otherwise those rows would wait for their
 * lease to expire. The attempt stays counted. Returns how many. */
size_t gw_queue_release_leases(gw_queue_t *q);
/* Sets the queue-depth gauges: rows pending, failed and processing of providers, and dead rows of any. */
void gw_queue_gauges(gw_queue_t *q, const char *const *providers, size_t nproviders);

#endif
