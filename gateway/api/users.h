/* SPDX-License-Identifier: MIT */
/*
 * users.h: the admin's users and invitations (GET /v1/admin/users, POST /v1/admin/invitations,
 * POST /v1/admin/users/{id}/disable, POST /v1/admin/users/{id}/approve) and the organisation's settings
 * (GET/PUT /v1/admin/settings: self_registration). docs/api.md, "Admin".
 */
#ifndef GW_USERS_H
#define GW_USERS_H

#include "api.h"

enum {
    GW_USERS_LIST_NINPUTS = 3,
    GW_USERS_INVITE_NINPUTS = 3,
    GW_USERS_DISABLE_NINPUTS = 1,
    GW_USERS_APPROVE_NINPUTS = 2,
    GW_SETTINGS_PUT_NINPUTS = 1
};
extern const gw_input_t gw_users_list_inputs[GW_USERS_LIST_NINPUTS];
extern const gw_input_t gw_users_invite_inputs[GW_USERS_INVITE_NINPUTS];
extern const gw_input_t gw_users_disable_inputs[GW_USERS_DISABLE_NINPUTS];
extern const gw_input_t gw_users_approve_inputs[GW_USERS_APPROVE_NINPUTS];
extern const gw_input_t gw_settings_put_inputs[GW_SETTINGS_PUT_NINPUTS];

int gw_users_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_users_invite(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_users_disable(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_users_approve(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_settings_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_settings_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

extern const gw_module_t gw_users_module;

#endif
