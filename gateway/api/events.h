/* SPDX-License-Identifier: MIT */
/*
 * events.h: the admin routes of the webhook event log and its replay (docs/api.md, "Admin: events and replay"):
 * GET /v1/admin/events, GET /v1/admin/events/{id}, POST /v1/admin/events/{id}/replay and POST
 * /v1/admin/events/replay, each scoped to the admin's organisation, each run on the offload pool through the domain
 * functions `settled events` and `settled replay` use (gateway/domain/replay.h).
 */
#ifndef GW_EVENTS_H
#define GW_EVENTS_H

#include "api.h"

/* The most events one POST /v1/admin/events/replay may replay or dry-run; more is 400 replay_too_large (the
 * command line, `settled replay --since`, has no bound). */
#define GW_ADMIN_REPLAY_MAX 1000

#define GW_EVENTS_LIST_NINPUTS 7
#define GW_EVENTS_GET_NINPUTS 1
#define GW_EVENTS_REPLAY_ONE_NINPUTS 2
#define GW_EVENTS_REPLAY_NINPUTS 5
extern const gw_input_t gw_events_list_inputs[GW_EVENTS_LIST_NINPUTS];
extern const gw_input_t gw_events_get_inputs[GW_EVENTS_GET_NINPUTS];
extern const gw_input_t gw_events_replay_one_inputs[GW_EVENTS_REPLAY_ONE_NINPUTS];
extern const gw_input_t gw_events_replay_inputs[GW_EVENTS_REPLAY_NINPUTS];

int gw_events_api_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_events_api_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_events_api_replay_one(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_events_api_replay(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

/* The timestamp of input name (text: a time PostgreSQL reads, or an age such as 2h) resolved on t's session into
 * *out (malloc'd; NULL when text is NULL). Returns 0, or -1 with t's error set (400 parameter_invalid naming name,
 * or the database's). Shared by the event and audit routes. */
struct st_gw_task_t;
int gw_events_api_time(struct st_gw_task_t *t, const char *name, const char *text, char **out);

#endif
