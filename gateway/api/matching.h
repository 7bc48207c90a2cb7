/* SPDX-License-Identifier: MIT */
/*
 * matching.h: the admin's matching queue (GET /v1/admin/matching; POST /v1/admin/matching/{id}/accept, /link,
 * /reject, /create-customer): the provider customers (Xero contacts, Stripe and GoCardless customers) the automatic
 * matching could not link alone, and the admin's decision on each. docs/api.md, "Admin".
 */
#ifndef GW_MATCHING_H
#define GW_MATCHING_H

#include "api.h"

enum { GW_MATCHING_LIST_NINPUTS = 2, GW_MATCHING_PICK_NINPUTS = 2, GW_MATCHING_ITEM_NINPUTS = 1 };
extern const gw_input_t gw_matching_list_inputs[GW_MATCHING_LIST_NINPUTS];
/* accept and link: the entry and {"customer_id"} */
extern const gw_input_t gw_matching_pick_inputs[GW_MATCHING_PICK_NINPUTS];
/* reject and create-customer: the entry only */
extern const gw_input_t gw_matching_item_inputs[GW_MATCHING_ITEM_NINPUTS];

int gw_matching_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_matching_accept(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_matching_link(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_matching_reject(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_matching_create_customer(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

extern const gw_module_t gw_matching_module;

#endif
