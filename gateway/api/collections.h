/* SPDX-License-Identifier: MIT */
/*
 * collections.h: the admins' automatic-collection routes (docs/collections.md, "Automatic collection"; docs/api.md,
 * "Automatic collection"): POST/DELETE /v1/admin/customers/{id}/collection-pause and
 * /v1/admin/invoices/{id}/collection-pause (pause with a reason, unpause), GET /v1/admin/invoices/{id}/collections
 * (the invoice's pauses and attempts), GET /v1/admin/invoices/{id}/timeline (with its reminders and messages).
 */
#ifndef GW_API_COLLECTIONS_H
#define GW_API_COLLECTIONS_H

#include "api.h"

enum {
    GW_COLLECTIONS_CUSTOMER_PAUSE_NINPUTS = 2,
    GW_COLLECTIONS_CUSTOMER_NINPUTS = 1,
    GW_COLLECTIONS_INVOICE_PAUSE_NINPUTS = 2,
    GW_COLLECTIONS_INVOICE_NINPUTS = 1
};
extern const gw_input_t gw_collections_customer_pause_inputs[GW_COLLECTIONS_CUSTOMER_PAUSE_NINPUTS];
extern const gw_input_t gw_collections_customer_inputs[GW_COLLECTIONS_CUSTOMER_NINPUTS];
extern const gw_input_t gw_collections_invoice_pause_inputs[GW_COLLECTIONS_INVOICE_PAUSE_NINPUTS];
extern const gw_input_t gw_collections_invoice_inputs[GW_COLLECTIONS_INVOICE_NINPUTS];

int gw_collections_customer_pause(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_collections_customer_unpause(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_collections_invoice_pause(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_collections_invoice_unpause(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_collections_invoice_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_collections_invoice_timeline(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

extern const gw_module_t gw_collections_module;

#endif
