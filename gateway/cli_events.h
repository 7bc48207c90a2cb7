/* SPDX-License-Identifier: MIT */
/*
 * cli_events.h: `settled events ...` and `settled replay ...`, the operator's view of the inbox and the way back
 * for events that failed: their flags, output and exit codes, over domain/replay.h.
 *
 * Each takes the loaded configuration and the arguments after its command word, skips --config FILE (main.c reads
 * it), and returns the process's exit code: 0; 1 when the operation failed or named an event that does not exist
 * (a message on stderr); 2 on a usage error (an unknown option, a missing or invalid value, conflicting options).
 */
#ifndef GW_CLI_EVENTS_H
#define GW_CLI_EVENTS_H

#include <stdio.h>
#include "config.h"

/* `settled events list|show|forward ...` */
int gw_cli_events(const gw_config_t *cfg, int argc, char **argv);

/* `settled replay ID... | --since T [filters] [--dry-run]` */
int gw_cli_replay(const gw_config_t *cfg, int argc, char **argv);

/* Their usage, as --help prints it. */
void gw_cli_events_usage(FILE *out);
void gw_cli_replay_usage(FILE *out);

#endif
