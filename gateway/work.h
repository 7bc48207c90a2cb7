/* SPDX-License-Identifier: MIT */
/*
 * work.h: `settled work`: the queue workers of worker.h, plus one event loop on a thread of its own that serves
 * /healthz, /readyz and /metrics on SETTLED_OPS_LISTEN, so that a workers-only process can be monitored like serve.
 */
#ifndef GW_WORK_H
#define GW_WORK_H

#include "config.h"

/* Runs the workers until SIGTERM or SIGINT (gw_worker_main), serving the operator endpoints on SETTLED_OPS_LISTEN
 * meanwhile unless it is off. Returns the exit code: 1 (after logging why) if the ops address cannot be bound. */
int gw_work_run(const gw_config_t *cfg);

#endif
