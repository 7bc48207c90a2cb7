# SPDX-License-Identifier: MIT
"""test_provider_outage.py: a Xero outage much longer than the retry schedule's budget, through the real binary, a
real PostgreSQL and Redis and the project's mock Xero (runs serially: it times recovery).

- connections refused: the API base is a TCP relay of this test in front of the mock, closed for the outage
  (connection refused, and the connections in use reset) and opened again on the same port. The schedule's
  budget is 300 ms (SETTLED_RETRY_SCHEDULE=100ms,200ms: dead at the third failure), the outage lasts 8 s. The
  circuit of the tenant opens after SETTLED_CIRCUIT_FAILURES (2) failures; while open, /readyz stays 200 and
  names it, /metrics shows it open, no event is dead and no event's attempts pass 2, and Xero sees only the probes
  (one event at a time, at least SETTLED_CIRCUIT_COOLDOWN_MS apart). Once the relay is back, the circuit closes
  and every event is mirrored: nothing lost, nothing dead.
- 503s, and the wake-up: with a schedule of one 1 h wait, the events of one group that failed before the circuit
  opened wait an hour by their schedule; when the circuit closes they are made due at once, and every event is
  done within a few seconds of Xero's recovery, not an hour later.

Why these can fail: without circuits (the old code), every event is dead after its few attempts, long before the
outage ends; a circuit that lets every worker keep calling shows up as many calls and growing attempts; a close
that does not wake the waiting rows leaves them pending for the schedule's hour.
"""
import os
import socket
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness as h  # noqa: E402
import pipelinelib as pl  # noqa: E402
from harness import expect, expect_eq  # noqa: E402

_mock = None


def mock():
    global _mock
    pl.require("SETTLED_TEST_PG_URL", "SETTLED_BIN", "SETTLED_SOURCE_DIR")
    if _mock is None:
        _mock = pl.Mock()
    return _mock


class Relay:
    """A TCP relay on 127.0.0.1:port to target (host, port). close() refuses new connections and resets the open
    ones; open() listens again on the same port."""

    def __init__(self, target):
        self.target, self.port, self.conns, self.lock, self.listener = target, 0, [], threading.Lock(), None
        self.open()

    def open(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self.port = ls.getsockname()[1]
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress: close() alone would not
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()  # linger 0: a reset, as when the far end dies
            except OSError:
                pass


def circuit(db, tenant):
    rows = h.sql_rows(db, "SELECT state, failures FROM provider_circuits WHERE provider = 'xero' AND account = $1",
                      tenant)
    return rows[0][0] if rows else None


def readyz(s):
    status, _, body = s.get("/readyz")
    import json
    return status, json.loads(body)


def test_connections_refused_for_longer_than_the_schedule():
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "outage_refused")
    ids = [str(uuid.uuid4()) for _ in range(12)]
    for k, iid in enumerate(ids):
        m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, f"{k + 1}.00"))
    host, port = m.base.split("//")[1].split(":")
    relay = Relay((host, int(port.rstrip("/"))))
    env = pl.settled_env(m, db, SETTLED_WORKERS=2, SETTLED_XERO_COALESCE_MS=0, SETTLED_WORKER_POLL_MS=100,
                         SETTLED_XERO_API_BASE=f"http://127.0.0.1:{relay.port}",
                         SETTLED_RETRY_SCHEDULE="100ms,200ms", SETTLED_CIRCUIT_FAILURES=2,
                         SETTLED_CIRCUIT_COOLDOWN_MS=500, SETTLED_CIRCUIT_COOLDOWN_MAX_MS=1500,
                         SETTLED_HTTP_CONNECT_TIMEOUT_MS=1000)
    with h.Settled(db, env=env) as s:
        relay.close()
        m.ctl("DELETE", "requests")
        # three deliveries (three claims at least): the failures come from more than one fetch
        for chunk in (ids[:4], ids[4:8], ids[8:]):
            pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE") for iid in chunk]))
            time.sleep(0.3)
        pl.wait_for(lambda: circuit(db, t) in ("open", "half_open"), 15, "the tenant's circuit to open")
        opened = time.monotonic()
        pl.wait_for(lambda: pl.metric(s, "settled_provider_circuits_open") == 1.0, 10,
                    "settled_provider_circuits_open = 1")
        status, doc = readyz(s)
        expect_eq(status, 200, "readyz stays 200 while a provider is down (intake goes on)")
        expect_eq((doc.get("circuits_open"), [c["account"] for c in doc.get("circuits", [])]), (1, [t]),
                  f"readyz names the open circuit ({doc})")
        # the outage goes on, 8 s in all: nothing dies, attempts stay put
        max_attempts = 0
        while time.monotonic() - opened < 8:
            rows = h.sql_rows(db, "SELECT status, attempts FROM webhook_events")
            expect(all(r[0] != "dead" for r in rows), "no event dead during the outage", rows)
            max_attempts = max([max_attempts] + [int(r[1]) for r in rows])
            time.sleep(0.2)
        expect(max_attempts <= 2, "attempts never reach the schedule's end while the circuit is open", max_attempts)
        expect_eq(pl.metric(s, "settled_provider_circuit", provider="xero", state="open")
                  + pl.metric(s, "settled_provider_circuit", provider="xero", state="half_open"), 1.0,
                  "settled_provider_circuit shows the tenant's circuit open")
        expect_eq(len(m.api_calls("Invoices")), 0, "nothing reached Xero while the relay was closed")

        relay.open()
        back = time.monotonic()
        pl.wait_drained(db, 20, "every event to be processed after the outage", expect_rows=len(ids))
        took = time.monotonic() - back
        expect_eq(pl.queue_counts(db), {"done": len(ids)}, "every event done, none dead")
        expect(took < 1.5 * 1.2 + 3, "processed within the longest probe wait after Xero came back", took)
        expect_eq(circuit(db, t), "closed", "the circuit closed")
        expect_eq(h.sql_value(db, "SELECT count(*) FROM xero_invoices WHERE tenant_id = $1", t), str(len(ids)),
                  "every invoice mirrored")
        pl.wait_for(lambda: pl.metric(s, "settled_provider_circuits_open") == 0.0, 10, "no open circuit shown")
        expect_eq(pl.metric(s, "settled_dead_letters_total"), 0.0, "no dead letter")
        lines = [r.get("msg") for r in s.log_records()]
        expect("circuit open" in lines and "circuit closed" in lines, "the log says when it opened and closed",
               [x for x in lines if x and "circuit" in x])
        s.check_log()
    relay.close()


def test_closing_the_circuit_wakes_the_events_waiting_on_their_schedule():
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "outage_wake")
    iid, cid = str(uuid.uuid4()), str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "5.00"))
    m.put(t, "contacts", cid, pl.contact(cid, pl.BASE_MS, "Wake Ltd", email=f"{cid[:8]}@example.com"))
    m.faults({"mode": "503", "count": 0, "tenant": t})
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0, SETTLED_WORKER_POLL_MS=100,
                         SETTLED_RETRY_SCHEDULE="1h", SETTLED_CIRCUIT_FAILURES=2, SETTLED_CIRCUIT_COOLDOWN_MS=500,
                         SETTLED_CIRCUIT_COOLDOWN_MAX_MS=1000)
    with h.Settled(db, env=env) as s:
        # one claim, two groups (an invoice and a contact): the first fails and waits 1 h, the second opens
        pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE"), pl.xero_event(t, cid, "CONTACT")]))
        pl.wait_for(lambda: circuit(db, t) in ("open", "half_open"), 15, "the circuit to open")
        waiting = h.sql_rows(db, "SELECT status, next_attempt_at > now() + interval '50 minutes' FROM webhook_events"
                                 " WHERE status = 'failed'")
        expect_eq(waiting, [["failed", "t"]], "one event waits an hour by its schedule")
        time.sleep(3)
        m.clear_faults()
        back = time.monotonic()
        pl.wait_drained(db, 15, "both events to be processed after Xero recovered", expect_rows=2)
        took = time.monotonic() - back
        expect(took < 5, "done within seconds of the recovery, not after the schedule's hour", took)
        expect_eq(pl.queue_counts(db), {"done": 2}, "both done")
        expect_eq(h.sql_rows(db, "SELECT attempts FROM webhook_events ORDER BY attempts"), [["1"], ["2"]],
                  "attempts: the probes and the failure that opened the circuit were not counted")
        s.check_log()


try:
    h.run(globals())
finally:
    if _mock is not None:
        _mock.stop()
