/* SPDX-License-Identifier: MIT */
/*
 * notifications_api.h (named so beside domain/notifications.h; the code is api/notifications_api.c): the client's
 * portal notifications (GET /v1/notifications, POST /v1/notifications/{id}/read) and the admins' view of the
 * organisation's outbox (GET /v1/admin/notifications?status=dead: the dead letters). docs/api.md, "Notifications".
 */
#ifndef GW_API_NOTIFICATIONS_H
#define GW_API_NOTIFICATIONS_H

#include "api.h"

enum { GW_NOTIFICATIONS_LIST_NINPUTS = 2, GW_NOTIFICATIONS_READ_NINPUTS = 1, GW_NOTIFICATIONS_ADMIN_NINPUTS = 3 };
extern const gw_input_t gw_notifications_list_inputs[GW_NOTIFICATIONS_LIST_NINPUTS];
extern const gw_input_t gw_notifications_read_inputs[GW_NOTIFICATIONS_READ_NINPUTS];
extern const gw_input_t gw_notifications_admin_inputs[GW_NOTIFICATIONS_ADMIN_NINPUTS];

int gw_notifications_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_notifications_read(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_notifications_admin_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

extern const gw_module_t gw_notifications_module;

#endif
