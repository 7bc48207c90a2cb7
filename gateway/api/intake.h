/* SPDX-License-Identifier: MIT */
/*
 * intake.h: the webhook route. Verify the signature on the raw bytes, parse just enough to know the
 * events, queue one INSERT ... ON CONFLICT DO NOTHING for them, and answer only once it committed.
 * No business logic and no outbound call happen here.
 */
#ifndef GW_INTAKE_H
#define GW_INTAKE_H

#include "api.h"

/* The module of the intake: its statements, and the per-loop state that paces worker wake-ups. */
extern const gw_module_t gw_intake_module;

#define GW_NOTIFY_INTERVAL_MS 100

/* The handler of POST /webhooks/<provider>[/<source>]; route->data is the provider's connector. */
int gw_intake_handle(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);

#endif
