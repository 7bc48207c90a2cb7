/* SPDX-License-Identifier: MIT */
/*
 * notes.h: what a handler learnt about a request that its log line should say (the problem code of a refusal, the
 * webhook source, the provider's event id, whether the delivery was a duplicate). Notes live in the request (its
 * env vector, in its pool), so they die with it; the front door's access log reads them when the request ends.
 * Never note a secret, a signature or a body.
 */
#ifndef GW_NOTES_H
#define GW_NOTES_H

#include <h2o.h>

/* The notes the access log prints, in this order, as "key":"value" ("events" and "new_events" as numbers,
 * "duplicate" as a boolean). */
#define GW_NOTE_PROBLEM "problem"       /* the problem code of a refusal (also of a bare reply) */
#define GW_NOTE_DETAIL "detail"         /* its detail sentence */
#define GW_NOTE_SOURCE "source"         /* the webhook source */
#define GW_NOTE_EVENT_ID "event_id"     /* the provider's event id (the first, for a delivery of several) */
#define GW_NOTE_EVENTS "events"         /* events in the delivery */
#define GW_NOTE_NEW_EVENTS "new_events" /* of them, stored by this delivery (the others were stored before) */
#define GW_NOTE_DUPLICATE "duplicate"   /* "true" when every event of the delivery was already stored */

/* Records key (a GW_NOTE_* constant) as len bytes of value (copied into the request's pool); a later note of the
 * same key replaces it. A NULL value records nothing. */
void gw_note(h2o_req_t *req, const char *key, const char *value, size_t len);
/* Records key as a decimal integer. */
void gw_note_int(h2o_req_t *req, const char *key, long long value);
/* The value noted for key, or {NULL, 0}. */
h2o_iovec_t gw_note_get(h2o_req_t *req, const char *key);

#endif
