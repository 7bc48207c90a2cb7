/* SPDX-License-Identifier: MIT */
/*
 * args.h: the few rules every subcommand of settled follows when it reads its options, in one place so that each
 * command says the same thing about the same mistake: `--help`/`-h` prints the usage on stdout and exits 0, an
 * option that needs a value and has none says "--since needs a value", an unknown option names itself, and every
 * such message goes to stderr as "settled: <command>: ..." with exit code 2.
 *
 * An option's value is the next argument (`--since 2026-01-31`) or follows an '=' (`--since=2026-01-31`). A next
 * argument that starts with "--" is not taken as a value: `--since --tenant X` is a missing value, not a since of
 * "--tenant". A single "-" is a value (connect's `--refresh-token -` reads standard input).
 */
#ifndef GW_ARGS_H
#define GW_ARGS_H

#include <stdbool.h>

/* The exit code of a usage error. */
#define GW_ARGS_USAGE 2

/* Whether arg asks for help: "--help" or "-h". */
bool gw_args_is_help(const char *arg);

/* Whether any of the argc arguments of argv asks for help. */
bool gw_args_want_help(int argc, char **argv);

/*
 * Reads the value of option name at argv[*i]. Returns 1 when argv[*i] is that option and has a value (*value points
 * into argv, and *i has moved past what was read), 0 when argv[*i] is not that option (nothing changes), or -1 when
 * it is but its value is missing or empty (the message "settled: cmd: name needs a value" is on stderr).
 */
int gw_args_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value);

/* Prints "settled: cmd: unknown option ARG" (or "unexpected argument ARG" when it does not start with '-') on
 * stderr and returns GW_ARGS_USAGE. */
int gw_args_unknown(const char *cmd, const char *arg);

#endif
