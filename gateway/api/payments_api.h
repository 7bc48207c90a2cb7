/* SPDX-License-Identifier: MIT */
/*
 * payments_api.h (named so beside domain/payments.h; the code is api/payments.c): GET /v1/payments, the payments of the
 * ledger a caller may see (a client: its customer's; an admin: its organisation's), newest first with keyset
 * pagination, each with its refunds, disputes and the invoice it pays, money as decimal strings in the currency's own
 * decimals. docs/api.md, "Payments, payment methods and invoice PDFs".
 */
#ifndef GW_API_PAYMENTS_H
#define GW_API_PAYMENTS_H

#include "api.h"

enum { GW_PAYMENTS_LIST_NINPUTS = 2 };
extern const gw_input_t gw_payments_list_inputs[GW_PAYMENTS_LIST_NINPUTS];

int gw_payments_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

/* The statement the route submits. */
extern const gw_module_t gw_payments_api_module;

#endif
