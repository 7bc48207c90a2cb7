/* SPDX-License-Identifier: MIT */
/*
 * intake.h: the webhook route. Verify the signature on the raw bytes, parse just enough to know the
 * events, queue one INSERT ... ON CONFLICT DO NOTHING for them, and answer only once it committed.
 * No business logic and no outbound call happen here.
 */
#ifndef GW_INTAKE_H
#define GW_INTAKE_H

#include "routes.h"

/* The statements the intake runs, prepared on every database connection. */
extern const gw_db_statement_t gw_intake_statements[];
extern const size_t gw_intake_nstatements;

#define GW_NOTIFY_INTERVAL_MS 100

/* Sets up a loop's worker wake-ups (call once per loop before it runs). */
void gw_intake_loop_init(gw_loop_t *loop);

/* The handler of POST /webhooks/<provider>[/<source>]; route->data is the provider's connector. */
int gw_intake_handle(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);

/* Start-up (blocking, before the loops run): checks the schema is migrated and resolves every source's
 * organisation id, creating missing organisations. Returns 0, or -1 with a message in err. */
__attribute__((warn_unused_result)) int gw_intake_bootstrap(gw_config_t *cfg, char *err, size_t errlen);

#endif
