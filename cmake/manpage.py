#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""manpage.py: writes settled(8) from the binary's own help, so the man page cannot drift from the CLI.

Run at build time (gateway/CMakeLists.txt) as: manpage.py SETTLED_BIN OUT.8
It asks the built binary for `--version`, `--help`, `help --commands`, each command's `--help` and
`check-config --list-keys`, and writes OUT.8 (roff) and OUT.8.gz (gzip -9n: no name, no time, so the
package is reproducible). Only the framing (name line, files, exit status, see also) is written here.
"""

import gzip
import os
import subprocess
import sys


def run(binary, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLED_")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")  # a sanitizer build also makes its man page
    res = subprocess.run([binary, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout.strip():
        sys.exit(f"manpage.py: `settled {' '.join(args)}` exited {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def esc(line):
    """One line of text as roff: backslashes and hyphens escaped, a leading dot or quote neutralised."""
    line = line.replace("\\", "\\e").replace("-", "\\-")
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def verbatim(text):
    return [".nf", ".RS 4"] + [esc(line) for line in text.rstrip("\n").split("\n")] + [".RE", ".fi"]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: manpage.py SETTLED_BIN OUT.8")
    binary, out = sys.argv[1], sys.argv[2]
    version = run(binary, "--version").split()[-1]
    top = run(binary, "--help")
    names = run(binary, "help", "--commands").split()
    keys = run(binary, "check-config", "--list-keys").split()

    synopsis = [line for line in top.split("\n") if line.lstrip().startswith(("usage:", "settled "))]
    summaries = {}
    for line in top.split("\n"):
        parts = line.strip().split(None, 1)
        if line.startswith("  ") and len(parts) == 2 and parts[0] in names:
            summaries[parts[0]] = parts[1]

    m = [
        '.TH SETTLED 8 "" "settled %s" "System Administration"' % version,
        ".SH NAME",
        "settled \\- integration gateway for Stripe, Xero and GoCardless webhooks",
        ".SH SYNOPSIS",
        *verbatim("\n".join(s.replace("usage: ", "", 1).strip() for s in synopsis)),
        ".SH DESCRIPTION",
        "settled receives signed webhooks from Stripe, Xero and GoCardless, stores every delivery",
        "durably in PostgreSQL before it answers 2xx, and processes the events through a work queue",
        "in the same database: Xero objects are refetched under Xero's rate limits and mirrored,",
        "payments are recorded, customers matched. Redis holds the shared quotas.",
        ".PP",
        "Every command answers",
        ".B \\-\\-help",
        "(or",
        ".BR \\-h )",
        "with its usage on standard output. The sections below are that output.",
        ".SH COMMANDS",
    ]
    for name in names:
        m += [".SS %s" % esc(name)]
        if name in summaries:
            m += [esc(summaries[name][0].upper() + summaries[name][1:]) + "."]
        m += verbatim(run(binary, name, "--help"))
    m += [
        ".SH ENVIRONMENT",
        "Settings are SETTLED_* environment variables, optionally read from a KEY=value file given with",
        ".B \\-\\-config",
        "or SETTLED_CONFIG; the environment wins. A setting that settled does not know is an error.",
        "A key ending in __<SOURCE> is given once per named webhook source.",
        "/usr/share/doc/settled/configuration.md explains each one:",
        *verbatim("\n".join(keys)),
        ".SH FILES",
        ".TP",
        ".I /etc/settled/settled.env",
        "The settings of the systemd units (EnvironmentFile=), every line commented out as shipped.",
        "Mode 0640, group settled: it holds secrets.",
        ".TP",
        ".I /lib/systemd/system/settled.service",
        "Runs",
        ".B settled serve",
        "as the user settled (Type=notify).",
        ".TP",
        ".I /lib/systemd/system/settled\\-work.service",
        "Runs",
        ".B settled work",
        "(queue workers only), for hosts that only process.",
        ".TP",
        ".I /usr/share/doc/settled/",
        "install.md (from a fresh Debian to a service behind nginx with TLS), operations.md,",
        "configuration.md and the sample configuration.",
        ".SH EXIT STATUS",
        "0 on success, 1 on a failure (a message on standard error names its cause, for a setting the",
        "SETTLED_ key), 2 on a usage error (an unknown command or option, an option without its value).",
        ".SH SEE ALSO",
        ".BR systemctl (1),",
        ".BR journalctl (1),",
        ".BR systemd.exec (5)",
        "",
    ]
    text = "\n".join(m)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    with open(out + ".gz", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            gz.write(text.encode("utf-8"))


if __name__ == "__main__":
    main()
