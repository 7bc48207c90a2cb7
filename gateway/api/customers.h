/* SPDX-License-Identifier: MIT */
/*
 * customers.h: the admin's customers (GET/POST /v1/admin/customers, GET/PATCH /v1/admin/customers/{id},
 * POST /v1/admin/customers/{id}/archive): its organisation's portal customers with their links to Xero contacts,
 * Stripe and GoCardless customers. docs/api.md, "Admin".
 */
#ifndef GW_CUSTOMERS_H
#define GW_CUSTOMERS_H

#include "api.h"

enum {
    GW_CUSTOMERS_LIST_NINPUTS = 4,
    GW_CUSTOMERS_GET_NINPUTS = 1,
    GW_CUSTOMERS_CREATE_NINPUTS = 4,
    GW_CUSTOMERS_UPDATE_NINPUTS = 6,
    GW_CUSTOMERS_ARCHIVE_NINPUTS = 1
};
extern const gw_input_t gw_customers_list_inputs[GW_CUSTOMERS_LIST_NINPUTS];
extern const gw_input_t gw_customers_get_inputs[GW_CUSTOMERS_GET_NINPUTS];
extern const gw_input_t gw_customers_create_inputs[GW_CUSTOMERS_CREATE_NINPUTS];
extern const gw_input_t gw_customers_update_inputs[GW_CUSTOMERS_UPDATE_NINPUTS];
extern const gw_input_t gw_customers_archive_inputs[GW_CUSTOMERS_ARCHIVE_NINPUTS];

int gw_customers_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_customers_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_customers_create(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_customers_update(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_customers_archive(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

extern const gw_module_t gw_customers_module;

#endif
