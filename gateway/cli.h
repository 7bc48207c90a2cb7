/* SPDX-License-Identifier: MIT */
/*
 * cli.h: the subcommands of settled that operators run by hand and that take arguments of their own: `settled
 * connect xero ...` (domain/xero_oauth.h) and `settled sync xero ...` (domain/sync.h). This is where their flags
 * are parsed and their progress, results and errors printed; what they do lives in the domain.
 *
 * Each takes the loaded configuration and the arguments after its command word (argv[0] is the provider), skips
 * --config FILE (main.c reads it), follows the option rules of args.h (--help, "--since needs a value"), starts and
 * stops the HTTP client itself (so the caller must not have started it), and returns the process's exit code: 0, 1
 * on a failure (a message on stderr), 2 on a usage error.
 */
#ifndef GW_CLI_H
#define GW_CLI_H

#include <stdio.h>
#include "config.h"

/*
 * `settled connect ...`:
 *   xero --refresh-token T|- [--organisation SLUG]  connect with an existing refresh token ('-': read it from stdin)
 *   xero --authorize [--organisation SLUG]          print the URL an administrator opens to connect
 *   xero --callback URL                             finish that connection with the address Xero
 *                                                   redirected the browser to (code and state)
 *   xero --check [--force-refresh] [--organisation SLUG]
 *                                                   get a working access token for every token set of
 *                                                   the organisation and list its tenants with it
 * The organisation defaults to cfg->organisation and is created if missing.
 */
int gw_cli_connect(const gw_config_t *cfg, int argc, char **argv);

/* Prints the usage of `settled connect` (what --help shows) to out. */
void gw_cli_connect_usage(FILE *out);

/* `settled sync xero [--since T] [--tenant ID]`: brings the Xero mirror of every connected tenant (or of one) up to
 * date, with a progress line on stderr when it is a terminal and the counts of each kind on stdout. */
int gw_cli_sync(const gw_config_t *cfg, int argc, char **argv);

/* Prints the usage of `settled sync` (what --help shows) to out. */
void gw_cli_sync_usage(FILE *out);

#endif
