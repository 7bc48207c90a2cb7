/* SPDX-License-Identifier: MIT */
/* audit_api.h: the admin's audit log: GET /v1/admin/audit and POST /v1/admin/audit/verify (docs/api.md, "Admin:
 * audit"), scoped to the admin's organisation, on the offload pool. (audit.c is the domain's room of the log.) */
#ifndef GW_AUDIT_API_H
#define GW_AUDIT_API_H

#include "api.h"

#define GW_AUDIT_LIST_NINPUTS 6
extern const gw_input_t gw_audit_list_inputs[GW_AUDIT_LIST_NINPUTS];

int gw_audit_api_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_audit_api_verify(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

#endif
