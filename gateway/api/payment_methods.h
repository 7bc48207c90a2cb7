/* SPDX-License-Identifier: MIT */
/*
 * payment_methods.h: a client's payment methods (docs/api.md, "Payments, payment methods and invoice PDFs"):
 * GET /v1/payment-methods (its cards and direct-debit mandates, the default flagged), POST /v1/payment-methods/card
 * (a Stripe SetupIntent for its Stripe customer, which is created and linked when it has none), POST
 * /v1/payment-methods/direct-debit (a GoCardless billing request and flow), DELETE /v1/payment-methods/{id} (the
 * card detached or the mandate cancelled at the provider, idempotently, and the local row updated at once through
 * the functions the webhooks use) and PUT /v1/payment-methods/{id}/default (the client's choice, audited).
 */
#ifndef GW_API_PAYMENT_METHODS_H
#define GW_API_PAYMENT_METHODS_H

#include "api.h"

enum { GW_PM_DIRECT_DEBIT_NINPUTS = 1, GW_PM_ID_NINPUTS = 1 };
extern const gw_input_t gw_pm_direct_debit_inputs[GW_PM_DIRECT_DEBIT_NINPUTS];
extern const gw_input_t gw_pm_id_inputs[GW_PM_ID_NINPUTS];

int gw_pm_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_pm_card(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_pm_direct_debit(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_pm_delete(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_pm_default(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

/* The statement the list submits. */
extern const gw_module_t gw_pm_module;

/* Exposed for the tests: whether v (len bytes) may be an Idempotency-Key a client sends: 1 to 100 characters of
 * letters, digits and "-_.:". */
bool gw_pm_idempotency_key_ok(const char *v, size_t len);

#endif
