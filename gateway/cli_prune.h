/* SPDX-License-Identifier: MIT */
/* cli_prune.h: `settled prune`, the by-hand run of the retention job (domain/retention.h). */
#ifndef GW_CLI_PRUNE_H
#define GW_CLI_PRUNE_H

#include <stdio.h>
#include "config.h"

/* `settled prune --older-than D [--dry-run]` with argv the arguments after "prune" (--config FILE among them is
 * skipped: main has read it). Returns the exit code: 0 done, 1 failed (or another process is pruning), 2 usage. */
int gw_cli_prune(const gw_config_t *cfg, int argc, char **argv);
/* The usage of `settled prune`, as --help prints it. */
void gw_cli_prune_usage(FILE *out);

#endif
