# SPDX-License-Identifier: MIT
"""test_scale_out.py: the scale-out topology, through the real binary, one PostgreSQL, one Redis and the
project's mock Xero (docs/operations.md, "Scale-out").

1. Two `settled serve` instances on different ports (each with one queue worker) and one `settled work`
   (two workers) share one database and one Redis. A Python load loop posts signed Xero deliveries, each
   one to both instances (a duplicate of every delivery), and one instance is killed with SIGKILL in the
   middle. Then: every event answered 2xx by either instance is stored exactly once (nothing lost, no
   duplicate row); every event ends done (the killed instance's leased rows come back when their lease
   expires); each invoice is mirrored once and audited once (the audit chain verifies: no effect happened
   twice); and the mock Xero, which enforces small limits, saw no call beyond them from the three
   processes together (the quota is shared through Redis, not per process).
2. The same intake through Debian's pgbouncer on loopback, in session mode: every acknowledged event is
   stored and processed. In transaction mode settled's intake cannot work (it prepares named statements
   once per connection, and pgbouncer 1.18 hands each transaction to any server connection): settled
   says so in its log, naming the likely cause, and never answers 2xx for an event that is not stored.

Why this can fail: an instance that acknowledged before its commit, or a worker that applied an event
another worker also applied, shows as a missing row or a second audit entry; per-process quotas show as
calls above the mock's limits; a pooler in transaction mode that silently lost events shows as an
acknowledged event without a row. Every wait is bounded; the whole file takes about a minute.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import faultlib  # noqa: E402
import harness as h  # noqa: E402
import pipelinelib as pl  # noqa: E402
from harness import expect, expect_eq, expect_in  # noqa: E402

INVOICES = 30
LIMITS = {"concurrent": 2, "minute": 60}
_mock = None


def mock():
    global _mock
    pl.require("SETTLED_TEST_PG_URL", "SETTLED_TEST_REDIS_URL", "SETTLED_BIN", "SETTLED_SOURCE_DIR")
    if _mock is None:
        _mock = pl.Mock()
    return _mock


def _setup(prefix, db=None):
    """A connected tenant with INVOICES invoices at the mock, which enforces LIMITS and answers in 50 ms."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], prefix)
    m.ctl("PUT", "app", {"limits": LIMITS})
    ids = [str(uuid.uuid4()) for _ in range(INVOICES)]
    for k, iid in enumerate(ids):
        m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, f"{100 + k}.00"))
    m.faults([{"mode": "slow", "delay_ms": 50, "count": 0, "tenant": t}])
    m.ctl("DELETE", "stats")
    return m, t, db, ids


def _event_id(e):
    return ":".join(pl.event_key(e))


class XeroLoad:
    """Threads that post signed Xero deliveries (3 events each) to every port of `ports` in turn (each delivery
    to all of them: duplicates), over keep-alive connections that survive a killed server, and record the
    event ids of every delivery answered 200 by at least one instance."""

    def __init__(self, tenant, ids, ports, threads=3, seed=0):
        self.tenant, self.ids, self.ports = tenant, ids, list(ports)
        self.acked, self.sent, self.errors, self.statuses = set(), 0, 0, {}
        self.ok_by_port = {p: 0 for p in self.ports}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self):
        clients = {p: faultlib.KeepAlive(p, timeout=5) for p in self.ports}
        try:
            while not self._stop.is_set():
                with self._lock:
                    rids = [self._rng.choice(self.ids) for _ in range(3)]
                events = [pl.xero_event(self.tenant, r, "INVOICE") for r in rids]
                body = pl.delivery(events)
                headers = {"x-xero-signature": h.sign_xero(body), "Content-Type": "application/json"}
                ok = False
                for p, c in clients.items():
                    try:
                        status, _, _ = c.request("POST", "/webhooks/xero", body, headers)
                    except OSError:
                        status = None
                    with self._lock:
                        self.sent += 1
                        if status is None:
                            self.errors += 1
                        else:
                            self.statuses[status] = self.statuses.get(status, 0) + 1
                    ok = ok or status == 200
                    if status == 200:
                        with self._lock:
                            self.ok_by_port[p] += 1
                if ok:
                    with self._lock:
                        self.acked.update(_event_id(e) for e in events)
                time.sleep(0.01)
        finally:
            for c in clients.values():
                c.close()


def _stored(db, tenant):
    return {r[0]: int(r[1]) for r in h.sql_rows(
        db, "SELECT event_id, count(*) FROM webhook_events WHERE provider = 'xero' AND event_id LIKE $1 || ':%'"
            " GROUP BY event_id", tenant)}


def _check_effects(m, db, tenant, ids, what):
    """Each invoice mirrored once, at the mock's values, audited once; the chain verifies; the mock's limits kept."""
    rows = h.sql_rows(db, "SELECT invoice_id::text, count(*) FROM xero_invoices WHERE tenant_id = $1 GROUP BY 1",
                      tenant)
    mirrored = {r[0]: int(r[1]) for r in rows}
    touched = set(mirrored)
    expect(touched <= set(ids), f"{what}: only the tenant's invoices are mirrored", touched - set(ids))
    expect(len(touched) >= INVOICES // 2, f"{what}: the invoices the events named are mirrored", len(touched))
    audits = {r[0]: int(r[1]) for r in h.sql_rows(
        db, "SELECT entity_id, count(*) FROM audit_log WHERE action = 'xero.invoice.upsert' GROUP BY 1")}
    expect_eq({i: audits.get(i) for i in touched}, {i: 1 for i in touched},
              f"{what}: one audited effect per invoice (nothing applied twice)")
    expect_eq(h.sql(db, "SELECT count(*) FROM organisations WHERE audit_verify(id) IS NOT NULL"), "0",
              f"{what}: organisations whose audit chain does not verify")
    st = m.tenant_stats(tenant)
    expect_eq(st.get("over_limit_count", 0), 0, f"{what}: calls the mock refused as over its limits")
    expect(st.get("max_concurrent", 0) <= LIMITS["concurrent"], f"{what}: calls in flight at once", st)
    expect(st.get("max_calls_in_any_60s_window", 0) <= LIMITS["minute"], f"{what}: calls in any 60 s", st)
    return st


def test_two_serves_and_a_worker_one_killed_mid_load():
    m, t, db, ids = _setup("scale")
    common = dict(SETTLED_XERO_COALESCE_MS=0, SETTLED_WORKER_LEASE_MS=3000, SETTLED_WORKER_BATCH=10,
                  SETTLED_XERO_LIMIT_CONCURRENT=LIMITS["concurrent"], SETTLED_XERO_LIMIT_MINUTE=LIMITS["minute"],
                  SETTLED_INSTANCES=3)
    a = h.Settled(db, env=pl.settled_env(m, db, SETTLED_WORKERS=1, **common))
    b = h.Settled(db, env=pl.settled_env(m, db, SETTLED_WORKERS=1, **common))
    w = pl.Worker(pl.settled_env(m, db, SETTLED_WORKERS=2, **common))
    load = XeroLoad(t, ids, [a.port, b.port], seed=int(time.time()) % 1000).start()
    try:
        faultlib.wait_for(lambda: len(load.acked) >= 150, 30, what="150 acknowledged events")
        time.sleep(random.uniform(0.2, 1.0))
        a.kill9()
        acked_at_kill = len(load.acked)
        faultlib.wait_for(lambda: len(load.acked) >= acked_at_kill + 150, 30,
                          what="150 more events acknowledged by the surviving instance")
    finally:
        load.stop()
    acked = set(load.acked)
    stored = _stored(db, t)
    missing = sorted(acked - set(stored))
    expect_eq(missing[:5], [], f"acknowledged events missing from the inbox (of {len(acked)})")
    expect_eq(sorted(e for e, n in stored.items() if n != 1)[:5], [], "events stored more than once")
    expect(min(load.ok_by_port.values()) >= 20, "both instances acknowledged deliveries", load.ok_by_port)
    expect(load.errors > 0, "posts to the killed instance failed", load.errors)
    pl.wait_drained(db, 60, "every event to be processed after the kill")
    counts = pl.queue_counts(db)
    expect_eq(set(counts), {"done"}, "statuses at the end (nothing dead or failed for good)")
    st = _check_effects(m, db, t, ids, "two serves and a worker")
    calls_w = pl.metric(b, "settled_xero_api_calls_total")
    pl.stop_all(w, b)
    print(f"# {len(acked)} events acknowledged ({acked_at_kill} before the kill), {len(stored)} stored once, "
          f"{load.sent} posts ({load.errors} without an answer, statuses {load.statuses}); mock: "
          f"{st.get('calls_total')} calls, max {st.get('max_concurrent')} in flight, "
          f"{st.get('max_calls_in_any_60s_window')} in a minute; surviving instance made {calls_w:.0f}")


# ---------------------------------------------------------------------------------------------------
# pgbouncer


class Pgbouncer:
    """Debian's pgbouncer on a free loopback port in front of the test PostgreSQL (trust auth), in one pool mode."""

    def __init__(self, pg_url, mode, pool_size=10, server_lifetime=3600):
        exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(exe):
            raise h.Failure("pgbouncer is not installed: deploy/lib.sh installs it (Debian package pgbouncer)")
        from urllib.parse import urlsplit
        u = urlsplit(pg_url)
        self.port = h.free_port()
        self.dir = os.path.join(h.scratch_dir(), f"pgbouncer-{mode}-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        self.user = u.username or "settled"
        with open(os.path.join(self.dir, "users.txt"), "w") as f:
            f.write(f'"{self.user}" ""\n')
        ini = os.path.join(self.dir, "pgbouncer.ini")
        with open(ini, "w") as f:
            f.write(f"""[databases]
* = host={u.hostname} port={u.port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = {mode}
default_pool_size = {pool_size}
server_lifetime = {server_lifetime}
max_client_conn = 200
ignore_startup_parameters = extra_float_digits,options
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
""")
        cmd = [exe, ini]
        run_as = os.environ.get("SETTLED_TEST_RUN_AS")
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            os.system(f"chown -R {run_as or 'nobody'} {self.dir}")
            cmd = ["runuser", "-u", run_as or "nobody", "--"] + cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, preexec_fn=h._die_with_parent)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                h.sql(self.url("postgres"), "SELECT 1")
                return
            except Exception:  # noqa: BLE001 (not up yet)
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        raise h.Failure(f"pgbouncer did not start: {self.log()[-1500:]}")

    def url(self, dbname):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def log(self):
        try:
            with open(os.path.join(self.dir, "pgbouncer.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # its own child: ended by its PID
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _dbname(db):
    return db.rsplit("/", 1)[1]


def test_intake_and_workers_through_pgbouncer_session_mode():
    """Session mode: every connection of settled keeps its server connection, so prepared statements, the
    intake's session settings, LISTEN and the sweep's advisory locks all work: the same load through pgbouncer
    loses nothing and every event is processed once."""
    m, t, db, ids = _setup("scale_pgb")
    bouncer = Pgbouncer(os.environ["SETTLED_TEST_PG_URL"], "session")
    try:
        via = bouncer.url(_dbname(db))
        common = dict(SETTLED_XERO_COALESCE_MS=0, SETTLED_XERO_LIMIT_CONCURRENT=LIMITS["concurrent"],
                      SETTLED_XERO_LIMIT_MINUTE=LIMITS["minute"])
        s = h.Settled(via, env=pl.settled_env(m, via, SETTLED_WORKERS=0, **common))
        w = pl.Worker(pl.settled_env(m, via, SETTLED_WORKERS=2, **common))
        load = XeroLoad(t, ids, [s.port]).start()
        try:
            faultlib.wait_for(lambda: len(load.acked) >= 150, 30, what="150 events acknowledged through pgbouncer")
        finally:
            load.stop()
        stored = _stored(db, t)
        expect_eq(sorted(set(load.acked) - set(stored))[:5], [], "acknowledged events missing from the inbox")
        expect_eq(set(load.statuses), {200}, "answers through pgbouncer in session mode")
        pl.wait_drained(db, 60, "every event to be processed through pgbouncer")
        _check_effects(m, db, t, ids, "pgbouncer session mode")
        pl.stop_all(w, s)
    finally:
        bouncer.stop()


def test_transaction_mode_is_refused_clearly_and_loses_nothing():
    """Transaction mode: the intake's named prepared statements exist only on the server connection that
    prepared them, so statements fail (SQLSTATE 26000) once pgbouncer hands a transaction to another one. settled
    logs what that means (a pooler in transaction mode; use session mode), retries or answers 503 what it could
    not store, and every event it answered 200 is stored."""
    m, t, db, ids = _setup("scale_pgbt")
    # Two server connections for settled's eight, each closed after a second: transactions must move between
    # server connections, and new ones keep arriving that never saw settled's PREPARE, so the failure is
    # certain. (With ten long-lived ones, a quiet run could pin each client to one server connection, or end
    # with every server connection holding the statements, and see nothing wrong.)
    bouncer = Pgbouncer(os.environ["SETTLED_TEST_PG_URL"], "transaction", pool_size=2, server_lifetime=1)
    try:
        via = bouncer.url(_dbname(db))
        # two loops, four connections each: the statements are prepared on whichever server connections
        # pgbouncer lends at that moment, and the loops' batches then run on others
        s = h.Settled(via, threads=2, env=pl.settled_env(m, via, SETTLED_WORKERS=0, SETTLED_DB_CONNECTIONS=4))
        load = XeroLoad(t, ids, [s.port], threads=6).start()
        try:
            faultlib.wait_for(lambda: load.sent >= 600, 40, what="600 posts through pgbouncer in transaction mode")
        finally:
            load.stop()
        stored = _stored(db, t)
        expect_eq(sorted(set(load.acked) - set(stored))[:5], [], "events answered 200 but not stored")
        expect_in("transaction mode", s.log(), "settled's log names the cause")
        # A batch that failed is retried delivery by delivery (DESIGN.md 1: innocent neighbours are not lost), so
        # a run may store everything after the failures the log names; what it could not store is 503, never
        # another status, and never a 200 (checked above).
        expect(set(load.statuses) <= {200, 503}, "every answer is 200 (stored) or 503 (not stored)", load.statuses)
        print(f"# transaction mode: {load.statuses}, {len(load.acked)} acknowledged, all stored")
        s.stop()
    finally:
        bouncer.stop()


try:
    h.run(globals())
finally:
    if _mock is not None:
        _mock.stop()
