/* SPDX-License-Identifier: MIT */
/* xero_admin.h: the admin's Xero connection: GET /v1/admin/xero/connect (the authorisation URL, bound to the admin)
 * and GET /v1/admin/xero (token sets, tenants and their remaining quotas; never a token). docs/api.md, "Admin:
 * Xero". */
#ifndef GW_XERO_ADMIN_H
#define GW_XERO_ADMIN_H

#include "api.h"

int gw_xero_admin_connect(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_xero_admin_status(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

#endif
