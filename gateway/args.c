/* SPDX-License-Identifier: MIT */
/* args.c: the option rules every subcommand shares (args.h): --help, a missing value, an unknown option. */
#include "args.h"
#include <stdio.h>
#include <string.h>

bool gw_args_is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

bool gw_args_want_help(int argc, char **argv)
{
    for (int i = 0; i < argc; ++i)
        if (gw_args_is_help(argv[i]))
            return true;
    return false;
}

int gw_args_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *arg = argv[*i];
    size_t len = strlen(name);
    if (strncmp(arg, name, len) != 0 || (arg[len] != '\0' && arg[len] != '='))
        return 0;
    const char *v = NULL;
    if (arg[len] == '=') {
        v = arg + len + 1;
    } else if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
        v = argv[++*i];
    }
    if (v == NULL || v[0] == '\0') {
        fprintf(stderr, "settled: %s: %s needs a value\n", cmd, name);
        return -1;
    }
    *value = v;
    return 1;
}

int gw_args_unknown(const char *cmd, const char *arg)
{
    fprintf(stderr, "settled: %s: %s %s (see `settled %s --help`)\n", cmd,
            arg[0] == '-' ? "unknown option" : "unexpected argument", arg, cmd);
    return GW_ARGS_USAGE;
}
