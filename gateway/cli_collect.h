/* SPDX-License-Identifier: MIT */
/* cli_collect.h: `settled collect`, one round of automatic collection at a given instant (domain/collector.h). */
#ifndef GW_CLI_COLLECT_H
#define GW_CLI_COLLECT_H

#include <stdio.h>
#include "config.h"

/* `settled collect ...` with argv the arguments after "collect". Returns the exit code: 0 the round ran; 1 failed
 * (the database, Redis, an unknown organisation); 2 usage. */
int gw_cli_collect(const gw_config_t *cfg, int argc, char **argv);
void gw_cli_collect_usage(FILE *out);

#endif
