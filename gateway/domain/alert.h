/* SPDX-License-Identifier: MIT */
/*
 * alert.h: the operational webhook. When SETTLED_ALERT_WEBHOOK_URL is set, what an operator must act on is POSTed
 * there as one JSON object: an event that went dead, a provider connection that needs re-authorisation, a provider
 * account whose circuit opened or closed. Each POST is signed the way Stripe signs its webhooks
 * (Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with SETTLED_ALERT_WEBHOOK_SECRET>), so any
 * Stripe webhook library verifies it. Alerts wait in a bounded in-memory queue and are posted by one thread of
 * their own through the outbound HTTP module, retried a few times: raising one never blocks the caller, and when
 * the queue is full the alert is dropped (counted, and logged) rather than held. The payload is in
 * docs/operations.md ("Alerts").
 */
#ifndef GW_ALERT_H
#define GW_ALERT_H

#include <stdint.h>
#include "config.h"
#include "queue.h"

/* The most alerts waiting to be posted; more are dropped. */
#define GW_ALERT_QUEUE_MAX 256
/* Tries of one alert, and the waits between them (ms). */
#define GW_ALERT_TRIES 4

/* Starts the alert thread when cfg names SETTLED_ALERT_WEBHOOK_URL (gw_http_init must have been called); without
 * it, alerts are not raised at all. cfg must outlive gw_alert_stop. Calling it again before gw_alert_stop does
 * nothing. */
void gw_alert_start(const gw_config_t *cfg);
/* Stops the thread: an alert being posted finishes its try; those still waiting are dropped (and counted). */
void gw_alert_stop(void);

/* Raises "event.dead" for d. */
void gw_alert_dead(const gw_queue_dead_t *d);
/* Raises "connection.needs_reauth": the token set token_id of organisation_id was refused by provider (reason: one
 * line, no secret). */
void gw_alert_reauth(const char *provider, int64_t organisation_id, int64_t token_id, const char *reason,
                     const char *correlation);
/* Raises "writeback.refused" or "writeback.dead" (status) for the write-back row id of organisation_id, for the
 * provider payment payment_id (payments.id), with the reason (one line, no secret). */
void gw_alert_writeback(const char *status, const char *id, int64_t organisation_id, const char *payment_id,
                        int attempts, const char *reason);
/* Raises "circuit.open" or "circuit.closed" (state) for provider's account; error is the failure that opened it. */
void gw_alert_circuit(const char *provider, const char *account, const char *state, const char *error);

#endif
