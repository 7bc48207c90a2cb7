# SPDX-License-Identifier: MIT
"""test_cli.py: the command line's manners, on the real binary: every subcommand answers --help and -h
with its usage on stdout and exit 0 (before any setting is read, so a broken configuration does not
hide the help), `settled help CMD` says the same, an option without its value says "--X needs a
value", an unknown option names itself, `--version` prints the CMake project's version, and
`sync xero --tenant` with an id that is not a connected tenant says the tenant is unknown instead of
showing PostgreSQL's error; sync's progress line is drawn once (in place on a terminal, where it is
erased when done, so each kind's counts appear once, on stdout); `serve` and `work` tell systemd when they are ready (Type=notify)."""

import os
import pty
import re
import signal
import socket
import subprocess
import time
import uuid

import harness as h
import pipelinelib as pl
from harness import expect, expect_eq, expect_in, expect_not_in

# A configuration that cannot load: --help must not need it.
BROKEN = {"SETTLED_THREADS": "many", "SETTLED_NO_SUCH_SETTING": "1"}


def commands():
    res = h.run_settled(["help", "--commands"])
    expect_eq(res.returncode, 0, f"help --commands exit code (stderr {res.stderr!r})")
    names = res.stdout.split()
    expect(len(names) >= 8, "help --commands lists the commands", res.stdout)
    return names


def test_every_command_has_help():
    names = commands()
    for required in ("serve", "work", "migrate", "check-config", "connect", "sync", "version", "help"):
        expect_in(required, names, "help --commands")
    top = h.run_settled(["--help"], BROKEN)
    expect_eq(top.returncode, 0, "settled --help exit code")
    for name in names:
        expect(re.search(r"^  " + re.escape(name) + r" ", top.stdout, re.M), f"settled --help lists {name}", top.stdout)
        for flag in ("--help", "-h"):
            for args in ([name, flag], [name, "xero", flag] if name in ("connect", "sync") else None):
                if args is None:
                    continue
                res = h.run_settled(args, BROKEN)
                what = "settled " + " ".join(args)
                expect_eq(res.returncode, 0, f"{what}: exit code (stderr {res.stderr!r})")
                expect(res.stdout.startswith("usage: settled " + name), f"{what}: usage on stdout", res.stdout)
                expect_eq(res.stderr, "", f"{what}: stderr")
        via_help = h.run_settled(["help", name])
        expect_eq(via_help.returncode, 0, f"settled help {name}: exit code")
        expect_eq(via_help.stdout, h.run_settled([name, "--help"]).stdout, f"settled help {name} = {name} --help")
    res = h.run_settled(["help", "nonsense"])
    expect_eq(res.returncode, 2, "help nonsense: exit code")
    expect_in("unknown command nonsense", res.stderr, "help nonsense")


def test_version_is_the_project_version():
    cmake = open(os.path.join(h.source_dir(), "CMakeLists.txt"), encoding="utf-8").read()
    m = re.search(r"project\(settled VERSION ([0-9.]+)", cmake)
    expect(m, "CMakeLists.txt declares project(settled VERSION x.y.z)")
    for args in (["--version"], ["version"]):
        res = h.run_settled(args, BROKEN)
        expect_eq(res.returncode, 0, f"settled {args[0]}: exit code")
        expect_eq(res.stdout, f"settled {m.group(1)}\n", f"settled {args[0]}: output")


def test_missing_values_and_unknown_options():
    cases = [
        (["serve", "--config"], "settled: serve: --config needs a value"),
        (["check-config", "--config="], "settled: check-config: --config needs a value"),
        (["sync", "xero", "--since"], "settled: sync xero: --since needs a value"),
        (["sync", "xero", "--since", "--tenant", "x"], "settled: sync xero: --since needs a value"),
        (["sync", "xero", "--tenant"], "settled: sync xero: --tenant needs a value"),
        (["connect", "xero", "--refresh-token"], "settled: connect xero: --refresh-token needs a value"),
        (["connect", "xero", "--callback"], "settled: connect xero: --callback needs a value"),
        (["connect", "xero", "--check", "--organisation"], "settled: connect xero: --organisation needs a value"),
        (["serve", "--bogus"], "settled: serve: unknown option --bogus"),
        (["work", "extra"], "settled: work: unexpected argument extra"),
        (["migrate", "--list-keys"], "settled: migrate: unknown option --list-keys"),
        (["sync", "xero", "--bogus"], "settled: sync xero: unknown option --bogus"),
        (["connect", "xero", "--bogus"], "settled: connect xero: unknown option --bogus"),
        (["version", "--bogus"], "settled: version: unknown option --bogus"),
        (["nonsense"], "settled: unknown command: nonsense"),
    ]
    for args, want in cases:
        res = h.run_settled(args, {"SETTLED_DATABASE_URL": "postgresql://127.0.0.1:1/unreachable"})
        what = "settled " + " ".join(args)
        expect_eq(res.returncode, 2, f"{what}: exit code (stderr {res.stderr!r})")
        expect_in(want, res.stderr, f"{what}: stderr")


def test_sync_unknown_tenant():
    url = h.new_database("cli")
    env = {"SETTLED_DATABASE_URL": url, "SETTLED_REDIS_URL": h.redis_url()}
    for tenant in ("nonsense", "0b5b8c4e-0000-4000-8000-00000000abcd", "'; DROP TABLE xero_tenants; --"):
        res = h.run_settled(["sync", "xero", "--tenant", tenant], env)
        what = f"sync xero --tenant {tenant!r}"
        expect_eq(res.returncode, 1, f"{what}: exit code (stderr {res.stderr!r})")
        expect_in(f"unknown tenant {tenant}", res.stderr, f"{what}: stderr")
        for sql_noise in ("uuid", "invalid input syntax", "SELECT", "ERROR"):
            expect_not_in(sql_noise, res.stderr.replace("UUIDs", ""), f"{what}: stderr shows no SQL")
    expect_eq(h.sql_value(url, "SELECT count(*) FROM xero_tenants"), "0", "xero_tenants still there (and empty)")


SYNC_LINE = re.compile(r"^\s+(contacts|invoices|creditnotes)\s+fetched \d+, changed", re.M)


def run_sync_on_pty(env):
    """`settled sync xero` with stderr on a pseudo-terminal (stdout a pipe). Returns (exit code, stdout, the bytes
    written to the terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([h.settled_bin(), "sync", "xero"], env=h.settled_env(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    tty = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        tty += chunk
    out = proc.stdout.read().decode()
    rc = proc.wait(timeout=120)
    os.close(master)
    return rc, out, tty


def test_sync_progress_is_drawn_once():
    m = pl.Mock()
    try:
        t = pl.new_tenant()
        db = pl.connected_db(m, [t], "cli_sync")
        now = int(time.time() * 1000)
        invoices = [pl.invoice(str(uuid.uuid4()), now - 600000 + k, "1.00") for k in range(150)]  # 2 pages
        m.load('{"tenants": {"%s": {"invoices": [%s], "contacts": [], "creditnotes": []}}}' % (t, ", ".join(invoices)))
        rc, out, tty = run_sync_on_pty(pl.settled_env(m, db))
        expect_eq(rc, 0, f"sync on a terminal: exit code (terminal {tty[-2000:]!r})")
        kinds = SYNC_LINE.findall(out)
        expect_eq(sorted(kinds), ["contacts", "creditnotes", "invoices"], f"each kind's counts once on stdout ({out!r})")
        expect(b"page 2" in tty and b"150 fetched" in tty, "the terminal saw the progress of both pages", tty)
        # drawn in place: every redraw returns to the start of the line and clears it; no line is ended
        expect_not_in(b"\n", tty.replace(b"\r\n", b"\n"), "the terminal's progress lines (no newline: drawn in place)")
        expect(tty.endswith(b"\r\x1b[K"), "the progress line is erased when done", tty[-200:])
        # not a terminal: no progress at all, the counts once
        res = h.run_settled(["sync", "xero"], pl.settled_env(m, db), timeout=120)
        expect_eq(res.returncode, 0, f"sync to a pipe: exit code (stderr {res.stderr!r})")
        expect_eq(res.stderr, "", "sync to a pipe: nothing on stderr")
        expect_eq(sorted(SYNC_LINE.findall(res.stdout)), ["contacts", "creditnotes", "invoices"], "counts once")
    finally:
        m.stop()


def notify_socket():
    path = os.path.join(h.scratch_dir(), f"notify-{os.getpid()}-{os.urandom(3).hex()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    return sock, path


def test_serve_and_work_notify_systemd():
    url = h.new_database("notify")
    sock, path = notify_socket()
    with h.Settled(url, env={"NOTIFY_SOCKET": path}):
        expect_eq(sock.recv(256), b"READY=1", "serve's message to NOTIFY_SOCKET")
    env = {"SETTLED_DATABASE_URL": url, "SETTLED_WORKERS": "1", "NOTIFY_SOCKET": path}
    if h.redis_url():
        env["SETTLED_REDIS_URL"] = h.redis_url()
    log_path = os.path.join(h.scratch_dir(), "work-notify.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [h.settled_bin(), "work"], env=h.settled_env(env), stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        expect_eq(sock.recv(256), b"READY=1", "work's message to NOTIFY_SOCKET")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    out = open(log_path, encoding="utf-8", errors="replace").read()
    expect_eq(rc, 0, f"settled work exit code after SIGTERM (log {out[-2000:]!r})")
    expect_eq(h.sanitizer_report(out), "", "settled work: sanitizer report")
    sock.close()


if __name__ == "__main__":
    h.run(globals())
