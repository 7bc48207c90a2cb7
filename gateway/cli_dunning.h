/* SPDX-License-Identifier: MIT */
/* cli_dunning.h: `settled dunning`, one dunning evaluation at a given instant (domain/dunning.h). */
#ifndef GW_CLI_DUNNING_H
#define GW_CLI_DUNNING_H

#include <stdio.h>
#include "config.h"

/* `settled dunning ...` with argv the arguments after "dunning". Returns the exit code: 0 evaluated; 1 failed (the
 * database, an unknown organisation); 2 usage (a timestamp PostgreSQL does not read). */
int gw_cli_dunning(const gw_config_t *cfg, int argc, char **argv);
void gw_cli_dunning_usage(FILE *out);

#endif
