# SPDX-License-Identifier: MIT
"""test_one_process_per_address.py: a second `settled serve` on an address another settled already serves refuses
to start, with the address and the other process's pid in its error; processes started with the same
SETTLED_REUSEPORT_GROUP share the address (a deliberate handover), and after the first one stops the second holds
the address alone (a third without the group is refused again).

Why this can fail: the loops' sockets use SO_REUSEPORT, so before the address lock a second process bound the same
port silently and took part of the traffic.
"""

import http.client
import time

import harness as h
from harness import expect, expect_eq, expect_in


def serve_once(db, port, env=None):
    """Runs a serve on port that is expected to refuse to start; returns (exit code, output)."""
    e = {"SETTLED_LISTEN": f"127.0.0.1:{port}", "SETTLED_DATABASE_URL": db, "SETTLED_WORKERS": 0}
    e.update(env or {})
    res = h.run_settled(["serve"], e, timeout=30)
    return res.returncode, res.stderr


def hits(server):
    return h.metric_sum(server.metrics(), "settled_http_requests_total", route="healthz") or 0.0


def test_second_serve_on_the_same_address_refuses():
    db = h.new_database("addr_refuse")
    with h.Settled(db, env={"SETTLED_WORKERS": 0}) as first:
        rc, err = serve_once(db, first.port)
        expect_eq(rc, 1, "exit code of a second serve on the same address")
        expect_in(f"SETTLED_LISTEN 127.0.0.1:{first.port}: already served by settled process {first.proc.pid}", err,
                  "its error names the address and the process that serves it")
        # a group of its own does not let it in either
        rc, err = serve_once(db, first.port, {"SETTLED_REUSEPORT_GROUP": "blue"})
        expect_eq(rc, 1, "exit code of a second serve with a group the first does not have")
        expect_in("refusing to share it", err, "its error")
        # the same address spelt as a wildcard is the same address
        rc, err = serve_once(db, first.port, {"SETTLED_LISTEN": f"0.0.0.0:{first.port}"})
        expect_eq(rc, 1, "exit code of a second serve on 0.0.0.0 of the same port")
        status, _, _ = first.get("/healthz")
        expect_eq(status, 200, "the first one still serves")


def test_same_group_shares_and_hands_over():
    db = h.new_database("addr_group")
    group = {"SETTLED_WORKERS": 0, "SETTLED_REUSEPORT_GROUP": "deploy"}
    old = h.Settled(db, env=group)
    new = h.Settled(db, env=group, port=old.port, start=False)
    new.starts = 100  # a log file of its own (the harness names them by port and start)
    new.start()  # (returns once /healthz answers, which the old one may do: wait for the new one's own word)
    try:
        deadline = time.monotonic() + 20
        while "listening" not in new.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        expect_in(f"sharing the address with settled process {old.proc.pid}", new.log(),
                  "the second one joined the first")
        # fresh connections are spread over both processes by the kernel
        for _ in range(64):
            c = http.client.HTTPConnection("127.0.0.1", old.port, timeout=10)
            c.request("GET", "/healthz")
            expect_eq(c.getresponse().status, 200, "GET /healthz while both serve")
            c.close()
        a, b = hits(old), hits(new)
        print(f"# /healthz answered by the old process {a:.0f} times, by the new one {b:.0f} times")
        expect(a > 1 and b > 1, "both processes of the group receive connections", (a, b))
        old.stop()
        # the new process takes the lock over within a second or so; then no one outside the group gets in
        deadline = time.monotonic() + 10
        while "now holds the address lock" not in new.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        expect_in("now holds the address lock", new.log(), "the remaining process took the lock over")
        rc, err = serve_once(db, new.port)
        expect_eq(rc, 1, "a serve without the group after the handover")
        expect_in(f"already served by settled process {new.proc.pid} (SETTLED_REUSEPORT_GROUP=deploy)", err,
                  "its error names the new holder and its group")
        status, _, _ = new.get("/healthz")
        expect_eq(status, 200, "the new process serves alone")
    finally:
        new.stop()
        old.stop()


def test_an_address_used_by_another_program_is_refused():
    db = h.new_database("addr_other")
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even a program that would share
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    port = s.getsockname()[1]
    try:
        rc, err = serve_once(db, port)
        expect_eq(rc, 1, "serve on an address another program listens on")
        expect_in("already in use by another process", err, "its error")
    finally:
        s.close()


if __name__ == "__main__":
    h.run(globals())
