/* SPDX-License-Identifier: MIT */
/*
 * circuit.h: the circuit breakers of the provider accounts (Xero: one per tenant), kept in PostgreSQL (table
 * provider_circuits, functions in schema/functions/circuit.sql) so that every worker of every instance sees the
 * same one. Closed: calls go, and consecutive transient failures (no answer, 5xx, 408, 409) are counted. Open, after
 * SETTLED_CIRCUIT_FAILURES of them: the account's events are not claimed (their attempts are not burned). After
 * SETTLED_CIRCUIT_COOLDOWN_MS one worker takes the probe (half-open) and tries one event: an answer closes the
 * circuit and makes the account's waiting events due at once (waking idle workers with NOTIFY); a failure opens it
 * again for twice as long, up to SETTLED_CIRCUIT_COOLDOWN_MAX_MS.
 *
 * Blocking (a database session): worker threads only.
 */
#ifndef GW_CIRCUIT_H
#define GW_CIRCUIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "queue.h"

enum gw_circuit_state { GW_CIRCUIT_CLOSED, GW_CIRCUIT_OPEN, GW_CIRCUIT_HALF_OPEN };

typedef struct st_gw_circuit_result_t {
    enum gw_circuit_state state; /* after the failure */
    uint64_t wait_ms;            /* not closed: until the next probe may go */
    bool opened;                 /* this failure opened it */
} gw_circuit_result_t;

/* Counts a transient failure (error: one line, no secret) of a call to provider for account (NULL: none), with q's
 * session and settings. Logs when it opens the circuit. Returns 0 with *out, or -1 when the database failed (the
 * failure then counts as an ordinary one). */
GW_MUSTCHECK int gw_circuit_failure(gw_queue_t *q, const char *provider, const char *account, const char *error,
                                    gw_circuit_result_t *out);
/* The provider answered a call for account: closes its circuit if it was not, and then makes the account's waiting
 * events due now and wakes idle workers. Logs when it closes. Cheap when there is nothing to do (no write). */
void gw_circuit_success(gw_queue_t *q, const char *provider, const char *account);

/* Takes the probe of one open circuit of providers whose wait is over: writes its provider and account into the
 * buffers and returns 1; 0 when there is none; -1 when the database failed. */
int gw_circuit_take_probe(gw_queue_t *q, const char *const *providers, size_t nproviders, char *provider,
                          size_t provider_cap, char *account, size_t account_cap);
/* The probe found no due event of its account: the circuit waits open again for SETTLED_CIRCUIT_COOLDOWN_MS. */
void gw_circuit_release_probe(gw_queue_t *q, const char *provider, const char *account);

/* Reads every circuit into the metrics (settled_provider_circuit, and the open ones /readyz shows). */
void gw_circuit_gauges(gw_queue_t *q);

#endif
