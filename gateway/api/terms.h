/* SPDX-License-Identifier: MIT */
/*
 * terms.h: payment terms (GET/PUT /v1/admin/terms, the organisation's default; GET/PUT/DELETE
 * /v1/admin/customers/{id}/terms, a customer's override): Xero's four term types with a day number, auto-collect and
 * the preferred method. Stored and validated here; what they mean for due dates and collection is the collections
 * issue's. docs/api.md, "Admin".
 * The collections routes (docs/collections.md): GET/PUT /v1/admin/timezone, the organisation's time zone; GET/PUT
 * /v1/admin/dunning-plan and GET/PUT/DELETE /v1/admin/customers/{id}/dunning-plan, dunning plans.
 */
#ifndef GW_TERMS_H
#define GW_TERMS_H

#include "api.h"

enum {
    GW_TERMS_GET_NINPUTS = 0,
    GW_TERMS_PUT_NINPUTS = 4,
    GW_TERMS_CUSTOMER_NINPUTS = 1,
    GW_TERMS_CUSTOMER_PUT_NINPUTS = 5,
    GW_TERMS_TIMEZONE_PUT_NINPUTS = 1,
    GW_TERMS_DUNNING_PUT_NINPUTS = 1,
    GW_TERMS_DUNNING_CUSTOMER_PUT_NINPUTS = 2
};
extern const gw_input_t gw_terms_timezone_put_inputs[GW_TERMS_TIMEZONE_PUT_NINPUTS];
extern const gw_input_t gw_terms_dunning_put_inputs[GW_TERMS_DUNNING_PUT_NINPUTS];
extern const gw_input_t gw_terms_dunning_customer_put_inputs[GW_TERMS_DUNNING_CUSTOMER_PUT_NINPUTS];
extern const gw_input_t gw_terms_put_inputs[GW_TERMS_PUT_NINPUTS];
extern const gw_input_t gw_terms_customer_inputs[GW_TERMS_CUSTOMER_NINPUTS];
extern const gw_input_t gw_terms_customer_put_inputs[GW_TERMS_CUSTOMER_PUT_NINPUTS];

int gw_terms_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_customer_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_customer_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_customer_delete(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_timezone_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_timezone_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_dunning_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_dunning_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_dunning_customer_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_dunning_customer_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_terms_dunning_customer_delete(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

extern const gw_module_t gw_terms_module;

#endif
