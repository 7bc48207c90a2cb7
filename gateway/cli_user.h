/* SPDX-License-Identifier: MIT */
/* cli_user.h: `settled user add|list|disable`, the portal's users from the command line (domain/accounts.h). */
#ifndef GW_CLI_USER_H
#define GW_CLI_USER_H

#include <stdio.h>
#include "config.h"

/* `settled user add|list|disable ...` with argv the arguments after "user" (--config FILE among them is skipped:
 * main has read it). Returns the exit code: 0 done; 1 failed (the database, an unknown organisation, customer or
 * user, an email already taken); 2 usage (an unknown option, a missing or invalid value, a weak password). */
int gw_cli_user(const gw_config_t *cfg, int argc, char **argv);
/* The usage of `settled user`, as --help prints it. */
void gw_cli_user_usage(FILE *out);

#endif
