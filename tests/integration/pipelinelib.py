# SPDX-License-Identifier: MIT
"""pipelinelib: what the processing-pipeline tests (tests/integration/test_pipeline.py and
tests/fault/test_pipeline_faults.py) share beyond harness.py.

- Mock: the project's mock Xero (tests/mock/xero_api.py) on a free loopback port, with its control API;
- Worker: a `settled work` process (started, stopped with SIGTERM and checked, or killed with SIGKILL);
- RedisServer: a private redis-server on a free port, for tests that stop and restart Redis;
- records: Xero invoice and contact texts built by hand, so that every amount is sent byte for byte;
- webhooks: signed Xero deliveries, one inbox row per distinct event;
- queue: waiting (bounded) for the inbox to drain, and reading its state.

Python 3 standard library only. Every wait is bounded; every process is stopped by its own PID.
"""

import atexit
import base64
import decimal
import http.client
import itertools
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import harness as h
from harness import expect, expect_eq

CLIENT_ID, CLIENT_SECRET = "settled-pipeline-client", "settled-pipeline-client-secret"
SECRET_KEY = base64.b64encode(bytes(range(200, 232))).decode()  # SETTLED_SECRET_KEY of these tests (32 bytes)


def require(*names):
    """Fails loudly (harness.Failure) when one of the environment variables is missing."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise h.Failure(
            f"{', '.join(missing)} not set: run the tests through deploy/test.sh (or export them); "
            "pipeline tests never pass without their servers"
        )


def new_tenant():
    """A fresh Xero tenant id. Quota counters in the shared Redis are per tenant, so a fresh id per test
    keeps one test's minute window out of the next one's."""
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------------------
# The mock Xero


class Mock:
    """tests/mock/xero_api.py (or another mock of tests/mock, by its script and the name of its ready line) on a
    free loopback port (stopped by its PID: stop(), or at exit)."""

    def __init__(self, script="xero_api.py", name="xero-mock"):
        script = os.path.join(h.source_dir(), "tests", "mock", script)
        self.log_path = os.path.join(h.scratch_dir(), f"{name}-{os.getpid()}-{random.randrange(1 << 30)}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, script, "--port", "0", "--quiet"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            preexec_fn=h._die_with_parent,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith(f"{name} listening on http://127.0.0.1:"):
            self.stop()
            raise h.Failure(f"the {name} did not start: {line!r}")
        self.port = int(line.strip().rsplit(":", 1)[1])
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def call(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def ctl(self, method, path, obj=None, raw=None):
        """A control call (/_mock/path) with a JSON body (obj) or a raw text body; the decoded reply."""
        body = raw.encode() if raw is not None else (json.dumps(obj).encode() if obj is not None else None)
        status, _, reply = self.call(method, "/_mock/" + path, body, {"Content-Type": "application/json"})
        expect(status in (200, 201, 204), f"mock control {method} /_mock/{path}", (status, reply[:400]))
        return json.loads(reply) if reply else None

    def setup(self, refresh_token, tenants, **app):
        """A fresh mock: settled's app (plus app settings) and one authorisation with refresh_token that
        reaches tenants (a list of tenant ids)."""
        self.ctl("POST", "reset")
        self.ctl("PUT", "app", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **app})
        self.authorise(refresh_token, tenants)

    def authorise(self, refresh_token, tenants):
        self.ctl(
            "POST",
            "authorisations",
            {"refresh_token": refresh_token,
             "tenants": [{"tenantId": t, "tenantName": f"Org {t[:8]}"} for t in tenants]},
        )

    def put(self, tenant, kind, rid, text, updated_ms=None):
        """Stores the raw text of one record (kind: invoices, contacts, creditnotes)."""
        q = f"?updated_ms={updated_ms}" if updated_ms is not None else ""
        return self.ctl("PUT", f"tenants/{tenant}/{kind}/{rid}{q}", raw=text)

    def load(self, doc_text):
        return self.ctl("POST", "load", raw=doc_text)

    def faults(self, rules):
        return self.ctl("POST", "faults", rules)

    def clear_faults(self):
        return self.ctl("DELETE", "faults")

    def stats(self):
        return self.ctl("GET", "stats")

    def tenant_stats(self, tenant):
        return self.stats()["tenants"].get(tenant.lower()) or self.stats()["tenants"].get(tenant) or {}

    def requests(self):
        return self.ctl("GET", "requests")

    def api_calls(self, collection=None, rid=None, tenant=None):
        """The logged API calls (GET /api.xro/2.0/<collection>...), optionally naming rid in their path or
        query, optionally of one tenant."""
        out = []
        for r in self.requests():
            path, query = r.get("path") or "", r.get("query") or ""
            if not path.startswith("/api.xro/2.0/"):
                continue
            if collection is not None and not path.lower().startswith(f"/api.xro/2.0/{collection.lower()}"):
                continue
            if rid is not None and rid.lower() not in (path + "?" + query).lower():
                continue
            if tenant is not None and (r.get("tenant") or "").lower() != tenant.lower():
                continue
            out.append(r)
        return out


def settled_env(mock, db, **extra):
    """The settings every settled process of these tests gets: the database, the Xero app, the key, the
    mock as every Xero host, fast polling, and no scheduled drift sweep (a test that wants one says so:
    otherwise the workers' periodic thread would sweep every tenant at start and add calls the test does
    not expect)."""
    env = {
        "SETTLED_DATABASE_URL": db,
        "SETTLED_XERO_CLIENT_ID": CLIENT_ID,
        "SETTLED_XERO_CLIENT_SECRET": CLIENT_SECRET,
        "SETTLED_SECRET_KEY": SECRET_KEY,
        "SETTLED_XERO_API_BASE": mock.base,
        "SETTLED_XERO_IDENTITY_BASE": mock.base,
        "SETTLED_XERO_LOGIN_BASE": mock.base,
        "SETTLED_XERO_SYNC_INTERVAL": 0,
        "SETTLED_WORKER_POLL_MS": 200,
    }
    if h.redis_url():
        env["SETTLED_REDIS_URL"] = h.redis_url()
    env.update({k: v for k, v in extra.items()})
    return env


def connect(mock, db, refresh_token, env=None):
    """`settled connect xero --refresh-token T` (the mock must hold an authorisation for T); checks exit 0."""
    res = h.run_settled(["connect", "xero", "--refresh-token", refresh_token], env or settled_env(mock, db),
                        timeout=120)
    expect_eq(res.returncode, 0, f"settled connect xero exit code (stderr {res.stderr[-2000:]!r})")
    return res


def connected_db(mock, tenants, prefix, refresh_token="RT-PIPE-1", **app):
    """A fresh mock with one authorisation to tenants, a migrated database, and the tenants connected."""
    mock.setup(refresh_token, tenants, **app)
    db = h.new_database(prefix)
    connect(mock, db, refresh_token)
    n = h.sql_value(db, "SELECT count(*) FROM xero_tenants")
    expect_eq(n, str(len(tenants)), "tenants connected")
    return db


# ---------------------------------------------------------------------------------------------------
# settled work


class Worker(h.LoggedProcess):
    """One `settled work` process with settled_env(env). Its output goes to a log file. It registers
    with the harness runner, which kills it (by PID) if its test fails half-way."""

    _n = itertools.count(1)

    def __init__(self, env, start=True):
        self.env = dict(env)
        # each its own ops listener (SETTLED_OPS_LISTEN, default 127.0.0.1:9464), so that several can run at once
        if "SETTLED_OPS_LISTEN" not in self.env:
            self.env["SETTLED_OPS_LISTEN"] = f"127.0.0.1:{h.free_port()}"
        listen = self.env["SETTLED_OPS_LISTEN"]
        self.ops_port = int(listen.rsplit(":", 1)[1]) if listen != "off" else None
        self.proc = None
        self.log_path = None
        if start:
            self.start()

    def start(self):
        if self.running():
            raise h.Failure("Worker.start(): already running")
        self.log_path = os.path.join(scratch(), f"settled-work-{next(Worker._n)}.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [h.settled_bin(), "work"],
            env=h.settled_env(self.env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=h._die_with_parent,
        )
        log.close()
        if self not in h._servers:
            h._servers.append(self)
        # it logs "N queue workers started" once its database connections are up
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise h.Failure(f"settled work exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            if "queue worker" in self.log():
                return self
            time.sleep(0.05)
        self.kill9()
        raise h.Failure(f"settled work did not start in 30 s:\n{self.log_tail()}")

    def check_log(self):
        report = h.sanitizer_report(self.log())
        if report:
            raise h.Failure(f"the `settled work` log ({self.log_path}) has a sanitizer report:\n{report}")

    def stop(self, timeout=30):
        """SIGTERM; fails unless it exits 0 within timeout with a clean log."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise h.Failure(f"settled work did not exit within {timeout}s of SIGTERM:\n{self.log_tail()}")
        self.check_log()
        expect_eq(self.proc.returncode, 0, f"settled work exit code after SIGTERM (log:\n{self.log_tail()})")

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def scratch():
    return h.scratch_dir()


def stop_all(*procs):
    """Stops servers and workers (SIGTERM, exit 0, clean logs); every one is stopped even if one fails."""
    first = None
    for p in procs:
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001 (the others must stop too)
            first = first or e
    if first:
        raise first


# ---------------------------------------------------------------------------------------------------
# A private Redis


class RedisServer:
    """redis-server on a free loopback port, in the foreground as our child (stopped by its PID)."""

    def __init__(self):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise h.Failure("redis-server is not installed: the Redis outage test needs its own Redis")
        self.port = h.free_port()
        self.dir = os.path.join(scratch(), f"redis-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        _redis_servers.append(self)

    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout=15):
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=h._die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise h.Failure(f"redis-server exited with {self.proc.returncode} on port {self.port}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise h.Failure(f"redis-server on port {self.port} did not answer PING in {timeout}s")

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        """SIGTERM to our redis-server, by PID; waits for it to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_redis_servers = []


def _stop_redis_servers():
    for r in _redis_servers:
        r.stop()


atexit.register(_stop_redis_servers)

# ---------------------------------------------------------------------------------------------------
# Records. Built as text: every amount is written exactly as given (a str), never through a float.

BASE_MS = 1735689600000  # 2025-01-01T00:00:00Z


def n4(text):
    """The text PostgreSQL gives for a numeric(19,4) holding the decimal text (e.g. "0.1" -> "0.1000")."""
    return str(decimal.Decimal(text).quantize(decimal.Decimal("0.0001")))


def ms_date(ms):
    return f"/Date({ms}+0000)/"


def _obj(pairs):
    """A JSON object text from (key, raw JSON text) pairs."""
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in pairs) + "}"


def _s(v):
    return "null" if v is None else json.dumps(v)


def line_item(line_id, description, quantity, unit_amount, line_amount, tax_amount="0.00"):
    return _obj([
        ("LineItemID", _s(line_id)), ("Description", _s(description)), ("Quantity", quantity),
        ("UnitAmount", unit_amount), ("TaxType", _s("NONE")), ("TaxAmount", tax_amount),
        ("LineAmount", line_amount), ("AccountCode", _s("200")), ("Tracking", "[]"),
    ])


def invoice(iid, updated_ms, total, status="AUTHORISED", lines=None, number=None, contact_id=None,
            amount_due=None, amount_paid="0.00", sub_total=None, total_tax="0.00", reference=None):
    """The raw text of an ACCREC invoice. Amounts are strings, copied verbatim into the JSON."""
    pairs = [
        ("Type", _s("ACCREC")), ("InvoiceID", _s(iid)), ("InvoiceNumber", _s(number or f"INV-{iid[:8]}")),
        ("Reference", _s(reference or "")),
        ("Contact", _obj([("ContactID", _s(contact_id or "6d8b0b6a-0000-4000-8000-000000000001")),
                          ("Name", _s("Pipeline Customer"))])),
        ("DateString", _s("2025-01-01T00:00:00")), ("Date", _s(ms_date(BASE_MS))),
        ("DueDateString", _s("2025-01-31T00:00:00")), ("DueDate", _s(ms_date(BASE_MS + 30 * 86400000))),
        ("Status", _s(status)), ("LineAmountTypes", _s("Exclusive")),
    ]
    if lines is not None:
        pairs.append(("LineItems", "[" + ", ".join(lines) + "]"))
    pairs += [
        ("SubTotal", sub_total or total), ("TotalTax", total_tax), ("Total", total),
        ("AmountDue", amount_due or total), ("AmountPaid", amount_paid), ("AmountCredited", "0.00"),
        ("UpdatedDateUTC", _s(ms_date(updated_ms))), ("CurrencyCode", _s("GBP")),
    ]
    return _obj(pairs)


def contact(cid, updated_ms, name, email=None, status="ACTIVE"):
    return _obj([
        ("ContactID", _s(cid)), ("ContactStatus", _s(status)), ("Name", _s(name)),
        ("EmailAddress", _s(email or "")), ("IsSupplier", "false"), ("IsCustomer", "true"),
        ("UpdatedDateUTC", _s(ms_date(updated_ms))),
    ])


def credit_note(cnid, updated_ms, total, contact_id=None):
    return _obj([
        ("Type", _s("ACCRECCREDIT")), ("CreditNoteID", _s(cnid)), ("CreditNoteNumber", _s(f"CN-{cnid[:6]}")),
        ("Contact", _obj([("ContactID", _s(contact_id or "6d8b0b6a-0000-4000-8000-000000000001")),
                          ("Name", _s("Pipeline Customer"))])),
        ("DateString", _s("2025-01-02T00:00:00")), ("Date", _s(ms_date(BASE_MS + 86400000))),
        ("Status", _s("AUTHORISED")), ("LineAmountTypes", _s("Exclusive")),
        ("SubTotal", total), ("TotalTax", "0.00"), ("Total", total), ("RemainingCredit", total),
        ("Allocations", "[]"), ("UpdatedDateUTC", _s(ms_date(updated_ms))), ("CurrencyCode", _s("GBP")),
    ])


# ---------------------------------------------------------------------------------------------------
# Webhooks

_event_seq = itertools.count(1)
PLURAL = {"INVOICE": "Invoices", "CONTACT": "Contacts", "CREDITNOTE": "CreditNotes"}


def event_date():
    """A distinct eventDateUtc for each call (so each event is a new inbox row)."""
    n = next(_event_seq)
    sec, ms = divmod(n, 1000)
    minute, sec = divmod(sec, 60)
    hour, minute = divmod(minute, 60)
    return f"2026-01-01T{hour % 24:02d}:{minute:02d}:{sec:02d}.{ms:03d}"


def xero_event(tenant, resource, category="INVOICE", date=None, kind="UPDATE"):
    return {
        "resourceUrl": f"https://api.xero.com/api.xro/2.0/{PLURAL[category]}/{resource}",
        "resourceId": resource,
        "eventDateUtc": date or event_date(),
        "eventType": kind,
        "eventCategory": category,
        "tenantId": tenant,
        "tenantType": "ORGANISATION",
    }


def delivery(events, seq=1):
    return json.dumps(
        {"events": events, "firstEventSequence": seq, "lastEventSequence": seq + max(len(events), 1) - 1,
         "entropy": uuid.uuid4().hex[:20].upper()},
        separators=(",", ":"),
    ).encode()


def post(server, body, what="delivery"):
    """Posts a signed Xero delivery; fails unless it is answered 200."""
    status, _, reply = server.post_xero(body)
    expect_eq(status, 200, f"{what}: status (reply {reply[:200]!r})")


def event_key(e):
    return (e["tenantId"], e["resourceId"], e["eventCategory"], e["eventType"], e["eventDateUtc"])


# ---------------------------------------------------------------------------------------------------
# The queue


def queue_counts(db):
    """{status: rows} over webhook_events."""
    return {s: int(n) for s, n in h.sql_rows(db, "SELECT status, count(*) FROM webhook_events GROUP BY status")}


def wait_for(pred, timeout, what, interval=0.1):
    """Polls pred() until it returns a true value (returned) or timeout seconds pass (Failure)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise h.Failure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_drained(db, timeout, what="the queue to drain", expect_rows=None):
    """Waits (bounded) until no row is pending, failed or processing; returns queue_counts. When
    expect_rows is given, also waits for that many rows to exist (deliveries may still be committing)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = queue_counts(db)
        total = sum(counts.values())
        left = sum(n for s, n in counts.items() if s in ("pending", "failed", "processing"))
        if left == 0 and (expect_rows is None or total >= expect_rows):
            return counts
        if time.monotonic() >= deadline:
            errors = h.sql_rows(db, "SELECT status, attempts, last_error FROM webhook_events"
                                    " WHERE status <> 'done' ORDER BY id LIMIT 5")
            raise h.Failure(f"timed out after {timeout:.0f} s waiting for {what}: queue {counts}, "
                            f"{total} rows (expected {expect_rows}); first unfinished: {errors}")
        time.sleep(0.1)


def metric(server, name, **labels):
    return h.metric_sum(server.metrics(), name, **labels)
