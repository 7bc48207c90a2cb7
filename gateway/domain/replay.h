/* SPDX-License-Identifier: MIT */
/*
 * replay.h: the event log and its replay, one domain module for the command line (`settled events`, `settled
 * replay`, gateway/cli_events.c) and the admin API of the portal: select stored webhook events by filter, read one
 * with its raw delivery, reset events for reprocessing (audited with who asked, the workers woken), process one in
 * a transaction that is rolled back to say what a replay would change (a dry run), and sign a stored delivery
 * again for a developer's own receiver.
 *
 * A replay re-runs processing from the stored raw bytes: the row goes back to 'pending' with attempts 0 (so it
 * gets the full retry schedule again) and is due at once; a worker (`settled serve` or `settled work`) claims it
 * at its next notification. A row that a worker is processing right now ('processing') is never reset.
 *
 * Blocking (database sessions, outbound HTTP for the dry run): the command line and offloaded tasks only.
 */
#ifndef GW_REPLAY_H
#define GW_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "config.h"
#include "db.h"
#include "err.h"

/* How many events one page of the event log holds at most, and by default. */
#define GW_EVENTS_LIMIT_MAX 10000
#define GW_EVENTS_LIMIT_DEFAULT 50

/* Which events: every field may be NULL (or 0), meaning any. Strings are only read during the call. */
typedef struct st_gw_events_filter_t {
    int64_t organisation_id; /* 0: every organisation (the command line); the admin API passes its own */
    const char *provider;    /* stripe, xero or gocardless */
    const char *statuses;    /* one status or a comma-separated list: pending, processing, done, ignored, failed,
                                dead */
    const char *type;        /* an event type ("INVOICE.UPDATE"), or its category ("INVOICE" matches INVOICE.*) */
    const char *since;       /* received at or after: a timestamp PostgreSQL reads (2026-01-31T00:00:00Z), or an age
                                such as 90s, 30m, 2h, 7d */
    long limit;              /* 0: GW_EVENTS_LIMIT_DEFAULT (list) or no limit (replay selection) */
    const char *until;       /* received before (exclusive): as since */
    int64_t before_id;       /* 0: any; else only ids below it (the keyset of a newest-first page) */
} gw_events_filter_t;

/* One stored event. Every string is malloc'd and owned by the row (NULL when the column is). */
typedef struct st_gw_event_t {
    int64_t id, organisation_id;
    char *provider, *source, *account, *event_id, *event_type, *resource_id;
    char *status, *last_error, *correlation_id, *lease_owner;
    int attempts;
    char *received_at, *verified_at, *stored_at, *next_attempt_at, *processed_at; /* ISO 8601, UTC */
    /* gw_events_get only: the headers stored with the delivery (a JSON object text) and its raw bytes */
    char *headers;
    unsigned char *body;
    size_t body_len;
} gw_event_t;

typedef struct st_gw_event_list_t {
    gw_event_t *events;
    size_t n;
} gw_event_list_t;

/* Checks filter: a known provider and statuses, a limit within GW_EVENTS_LIMIT_MAX. Returns 0, or -1 with err
 * (gw_err_invalid_argument, naming the option). */
GW_MUSTCHECK int gw_events_filter_check(const gw_events_filter_t *filter, gw_err_t *err);

/* The events of filter, newest first. Returns 0 with *out (free it with gw_event_list_free), or -1 with err
 * (gw_err_invalid_argument for a bad filter, or as gw_dbs_err says). */
GW_MUSTCHECK int gw_events_list(gw_dbs_t *s, const gw_events_filter_t *filter, gw_event_list_t *out, gw_err_t *err);
void gw_event_list_free(gw_event_list_t *list);

/* Event id with its headers and raw body (organisation_id 0: any organisation's). Returns 0 with *out (free it with
 * gw_event_free), or -1 with err (gw_err_event_unknown, or as gw_dbs_err says). */
GW_MUSTCHECK int gw_events_get(gw_dbs_t *s, int64_t organisation_id, int64_t id, gw_event_t *out, gw_err_t *err);
void gw_event_free(gw_event_t *e);

/* The attempts a stored event has had: one row per audited replay, with who asked and when. Returns how many rows
 * were written to *out (malloc'd "at actor before->after" lines, free each and the array), or -1 with err. */
GW_MUSTCHECK long gw_events_history(gw_dbs_t *s, int64_t organisation_id, int64_t id, char ***out, gw_err_t *err);

/* The ids of the events of filter, oldest first (what `replay --since` replays). Returns 0 with *ids (malloc'd, *n
 * long; NULL when none), or -1 with err. */
GW_MUSTCHECK int gw_replay_select(gw_dbs_t *s, const gw_events_filter_t *filter, int64_t **ids, size_t *n,
                                  gw_err_t *err);

/* What gw_replay_reset did with the ids it was given. */
typedef struct st_gw_replay_counts_t {
    size_t reset;   /* back to pending, audited */
    size_t busy;    /* being processed by a worker right now: left alone */
    size_t unknown; /* no such event (or another organisation's) */
} gw_replay_counts_t;

/*
 * Resets the events ids (organisation_id 0: any organisation's) for reprocessing, in one transaction: each goes back
 * to 'pending' with attempts 0, due now, its last error and lease cleared, and gets an audit row (action
 * event.replay, entity webhook_event, before and after: status, attempts, last_error) in its own organisation with
 * actor (e.g. "cli:alice", "user:42") and correlation_id (the request id of an API call), or the event's own
 * correlation id when correlation_id is NULL; the workers are notified when it commits.
 * Adds to *counts. Returns 0, or -1 with err (nothing reset).
 */
GW_MUSTCHECK int gw_replay_reset(gw_dbs_t *s, int64_t organisation_id, const int64_t *ids, size_t n, const char *actor,
                                 const char *correlation_id, gw_replay_counts_t *counts, gw_err_t *err);

/* One field that a dry run would change: table, key (the row's id in it), field, and the values before and after
 * as JSON texts (NULL: the row did not exist before, or would not exist after). */
typedef struct st_gw_replay_change_t {
    char *table, *key, *field, *before, *after;
} gw_replay_change_t;

/* What a dry run of one event found. */
typedef struct st_gw_replay_diff_t {
    int64_t id;
    char *outcome;     /* the status the event would end in: done, ignored, failed, dead, pending (waiting: a quota, a
                          re-authorisation), or "unprocessed" (no processor for its provider: it would wait) */
    char *last_error;  /* why, when it would not be done; NULL otherwise */
    size_t audit_rows; /* audit rows the processing wrote */
    gw_replay_change_t *changes;
    size_t n;
} gw_replay_diff_t;

/*
 * The dry run of event id: in one transaction on s, the event is claimed as a replay would leave it (attempts 1) and
 * processed by its provider's processor exactly as a worker would (fetching through the provider's API: GETs only,
 * any other call is refused), the changes are read from the audit rows the transaction wrote (each carries the
 * entity's typed state before and after; rows of the same entity are folded into one before and one after) and from
 * the event's own row, and the transaction is rolled back: nothing of it is ever committed. token_db is a second
 * session through which Xero's access tokens are read and, when they expire, refreshed (a refresh commits there:
 * the rotated refresh token must be kept). Columns no audit covers (fetched_at, raw) are not in the diff.
 * Returns 0 with *out (free it with gw_replay_diff_free), or -1 with err (gw_err_event_unknown; gw_err_conflict when
 * a worker is processing the event right now; or as gw_dbs_err says).
 */
GW_MUSTCHECK int gw_replay_dry_run(const gw_config_t *cfg, gw_dbs_t *s, gw_dbs_t *token_db, int64_t organisation_id,
                                   int64_t id, gw_replay_diff_t *out, gw_err_t *err);
void gw_replay_diff_free(gw_replay_diff_t *d);
/* d as the command line's --json and the admin API show it: {id, outcome, last_error, audit_rows, changes: [{table,
 * key, field, before, after}]}, before and after the JSON texts PostgreSQL wrote (strings, or null). A new reference.
 */
json_t *gw_replay_diff_json(const gw_replay_diff_t *d);

/* The signature header that provider's receivers check, for body signed with secret (Stripe: t=<now>,v1=<hex
 * HMAC-SHA256 of "t.body">; Xero: base64 HMAC-SHA256 of the body; GoCardless: hex HMAC-SHA256 of the body), as one
 * "Name: value" line in out (outlen bytes, at least 256). Returns 0, or -1 for an unknown provider. */
GW_MUSTCHECK int gw_replay_sign(const char *provider, const char *secret, const unsigned char *body, size_t body_len,
                                int64_t now, char *out, size_t outlen);

/* A --since (a timestamp PostgreSQL reads, or an age such as 90s, 30m, 2h, 7d) as a timestamptz text PostgreSQL
 * wrote (*out malloc'd; NULL when since is NULL). Returns 0, or -1 with err (gw_err_invalid_argument for a since
 * that is neither). Used by replay and by settled sync stripe|gocardless. */
GW_MUSTCHECK int gw_since_resolve(gw_dbs_t *s, const char *since, char **out, gw_err_t *err);

#endif
