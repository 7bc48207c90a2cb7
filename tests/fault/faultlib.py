# SPDX-License-Identifier: MIT
"""faultlib: what the fault tests share beyond tests/integration/harness.py.

- a keep-alive HTTP client that survives a server being killed under it (KeepAlive),
- realistic signed Stripe deliveries with unique event ids (stripe_delivery),
- a multi-threaded load driver that records every event id acknowledged with a 2xx (Load),
- checks of the inbox against the acknowledged ids (stored_counts, assert_all_stored).

Python 3 standard library only. Every wait is bounded.
"""
import http.client
import itertools
import json
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402  (tests/integration/harness.py, written by the integration tests' owner)

_seq = itertools.count(1)
_run = uuid.uuid4().hex[:10]


def new_event_id(tag="f"):
    """A Stripe-looking event id that no other call in any run returns (evt_ + 24 characters)."""
    return f"evt_{tag}{_run}{next(_seq):013d}"[:28].ljust(28, "0")


def stripe_body(event_id):
    """A payment_intent.succeeded event (the envelope Stripe sends, pretty-printed, about 1 KB) for event_id."""
    now = int(time.time())
    pi = "pi_" + event_id[4:]
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2023-10-16",
            "created": now,
            "data": {
                "object": {
                    "id": pi,
                    "object": "payment_intent",
                    "amount": 12345,
                    "amount_received": 12345,
                    "capture_method": "automatic",
                    "client_secret": pi + "_secret_fault",
                    "created": now,
                    "currency": "gbp",
                    "customer": "cus_FaultTestCustomer",
                    "description": "fault test payment",
                    "latest_charge": "ch_" + event_id[4:],
                    "livemode": False,
                    "metadata": {"test": "fault"},
                    "payment_method": "pm_" + event_id[4:],
                    "payment_method_types": ["card"],
                    "status": "succeeded",
                }
            },
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": "req_" + event_id[4:], "idempotency_key": None},
            "type": "payment_intent.succeeded",
        },
        indent=2,
    ).encode()


def stripe_delivery(event_id=None, secret=harness.STRIPE_SECRET):
    """Returns (event_id, body, headers) of a freshly signed Stripe delivery."""
    event_id = event_id or new_event_id()
    body = stripe_body(event_id)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": harness.sign_stripe(body, secret),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    return event_id, body, headers


class KeepAlive:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port. request() returns (status, headers, body),
    or raises OSError / http.client.HTTPException when the connection fails (it is then dropped, and the
    next request opens a new one). A request that raised may or may not have been processed."""

    def __init__(self, port, timeout=10.0):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            if r.will_close:
                self.close()
            return r.status, hdrs, data
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None


def status_of(port, path, timeout=2.0):
    """GET path on a fresh connection; the status, or None when the server does not answer."""
    c = KeepAlive(port, timeout)
    try:
        return c.request("GET", path)[0]
    except (OSError, http.client.HTTPException):
        return None
    finally:
        c.close()


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value (returned) or timeout seconds pass (harness.Failure)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise harness.Failure(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


class Load:
    """Posts distinct signed Stripe deliveries to /webhooks/stripe from `workers` threads, each over its
    own keep-alive connection, until stop(). Every response and failure is recorded:

      acked     ids answered 2xx (the server promised they are committed)
      statuses  status -> count
      errors    requests that got no HTTP answer (connection refused/reset/timeout)
      log       (t_start, t_end, event_id, status or None, retry_after header or None) per request,
                monotonic times, when record_log is true

    The port can change between rounds (retarget()). A worker whose request fails backs off briefly, so a
    dead server is not hammered with connect attempts."""

    def __init__(self, port, workers=4, record_log=False, pause=0.0, secret=harness.STRIPE_SECRET):
        self.port = port
        self.secret = secret
        self.workers = workers
        self.record_log = record_log
        self.pause = pause
        self.lock = threading.Lock()
        self.acked = []
        self.statuses = {}
        self.errors = 0
        self.log = []
        self._stop = threading.Event()
        self._threads = []

    def retarget(self, port):
        self.port = port

    def start(self):
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout=30.0):
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self._threads if t.is_alive()]
        if alive:
            raise harness.Failure(f"{len(alive)} load thread(s) did not stop within {timeout} s")
        self._threads = []

    def total(self):
        with self.lock:
            return sum(self.statuses.values()) + self.errors

    def n_acked(self):
        with self.lock:
            return len(self.acked)

    def _run(self):
        port = self.port
        c = KeepAlive(port, timeout=15.0)
        while not self._stop.is_set():
            if port != self.port:
                c.close()
                port = self.port
                c = KeepAlive(port, timeout=15.0)
            eid, body, headers = stripe_delivery(secret=self.secret)
            t0 = time.monotonic()
            try:
                status, hdrs, _ = c.request("POST", "/webhooks/stripe", body, headers)
            except (OSError, http.client.HTTPException):
                t1 = time.monotonic()
                with self.lock:
                    self.errors += 1
                    if self.record_log:
                        self.log.append((t0, t1, eid, None, None))
                self._stop.wait(0.02)
                continue
            t1 = time.monotonic()
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    self.acked.append(eid)
                if self.record_log:
                    self.log.append((t0, t1, eid, status, hdrs.get("retry-after")))
            if self.pause:
                self._stop.wait(self.pause)
        c.close()


def stored_counts(db_url, provider="stripe"):
    """event_id -> number of rows in webhook_events for provider."""
    out = harness.sql(db_url, f"SELECT event_id, count(*) FROM webhook_events WHERE provider = '{provider}' "
                              "GROUP BY event_id")
    counts = {}
    for line in out.splitlines():
        if line.strip():
            eid, n = line.split("|")
            counts[eid] = int(n)
    return counts


def assert_all_stored(db_url, acked, what=""):
    """Asserts that every id in acked is in webhook_events exactly once. Returns the stored counts."""
    counts = stored_counts(db_url)
    missing = [e for e in acked if counts.get(e, 0) == 0]
    doubled = [e for e in acked if counts.get(e, 0) > 1]
    harness.expect(len(set(acked)) == len(acked), f"{what}the load sent an event id twice (a bug of the test)")
    harness.expect(not missing, f"{what}{len(missing)} of {len(acked)} acknowledged events are not stored",
                   missing[:5])
    harness.expect(not doubled, f"{what}{len(doubled)} acknowledged events are stored more than once", doubled[:5])
    return counts


