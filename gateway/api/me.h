/* SPDX-License-Identifier: MIT */
/* me.h: GET /v1/me, who the caller is: its user, role, organisation and (a client's) customer. docs/api.md. */
#ifndef GW_ME_H
#define GW_ME_H

#include "api.h"

int gw_me_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

/* The statement the route submits. */
extern const gw_module_t gw_me_module;

#endif
