/* SPDX-License-Identifier: MIT */
/* cli_notify.h: `settled notify`, enqueueing one notification from the command line (domain/notifications.h). */
#ifndef GW_CLI_NOTIFY_H
#define GW_CLI_NOTIFY_H

#include <stdio.h>
#include "config.h"

/* `settled notify ...` with argv the arguments after "notify". Returns the exit code: 0 enqueued (or already
 * enqueued under the key); 1 failed (the database, an unknown organisation or customer, no address); 2 usage. */
int gw_cli_notify(const gw_config_t *cfg, int argc, char **argv);
void gw_cli_notify_usage(FILE *out);

#endif
