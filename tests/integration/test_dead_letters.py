# SPDX-License-Identifier: MIT
"""test_dead_letters.py: events that go dead are visible, through the real binary, a real PostgreSQL and Redis,
the project's mock Xero and a local alert receiver (an HTTP server of this test on 127.0.0.1).

- a permanent refusal (the mock's 403) makes the event dead at its first attempt, with the reason in last_error,
  one API call only (no retry), one "event dead" log line with the event's id, provider, type, attempts, last
  error and correlation id, and settled_dead_letters_total{provider="xero"} 1;
- the alert webhook (SETTLED_ALERT_WEBHOOK_URL) receives an "event.dead" alert for it, signed exactly as Stripe
  signs (the test checks the HMAC itself, and that a tampered body would not pass), retried after the receiver
  answered 503 once;
- transient failures follow SETTLED_RETRY_SCHEDULE and the event goes dead after the last wait, with its log line
  and alert too;
- a Xero token set refused with invalid_grant raises a signed "connection.needs_reauth" alert naming it.

Why these can fail: the old code retried a 403 SETTLED_WORKER_MAX_ATTEMPTS times, logged only "events failed",
counted no dead letters and posted nothing; an alert signed over other bytes, or with another key, fails the HMAC
check; an alert lost after one failed POST is never seen twice.
"""
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness as h
import pipelinelib as pl
from harness import expect, expect_eq, expect_in

ALERT_SECRET = "alert-secret-" + uuid.uuid4().hex
_mock = None


def mock():
    global _mock
    pl.require("SETTLED_TEST_PG_URL", "SETTLED_BIN", "SETTLED_SOURCE_DIR")
    if _mock is None:
        _mock = pl.Mock()
    return _mock


class Receiver:
    """A local alert receiver: records every POST (headers and raw body); answers the first `fail` of them 503."""

    def __init__(self, fail=0):
        self.posts, self.fail, self.lock = [], fail, threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.posts.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                           "at": time.time()})
                    status = 503 if receiver.fail > 0 else 200
                    receiver.fail -= 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, type_=None):
        with self.lock:
            out = [dict(p, doc=json.loads(p["body"])) for p in self.posts]
        return [p for p in out if type_ is None or p["doc"].get("type") == type_]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def verify_stripe_signature(header, body, secret, tolerance=300):
    """Stripe's scheme: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>. Returns None or why it fails."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return f"no t= or v1= in {header!r}"
    if abs(time.time() - int(parts["t"])) > tolerance:
        return f"timestamp {parts['t']} is outside the tolerance"
    want = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(want, parts["v1"]) else "v1 does not match the HMAC of t.body"


def dead_lines(s):
    return [r for r in s.log_records() if r.get("msg") == "event dead"]


def test_permanent_failure_is_dead_at_once_logged_counted_and_alerted():
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "dead_perm")
    iid = str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "10.00"))
    m.faults({"mode": "403", "count": 0, "tenant": t})
    m.ctl("DELETE", "requests")
    rx = Receiver(fail=1)
    try:
        env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0,
                             SETTLED_ALERT_WEBHOOK_URL=rx.url, SETTLED_ALERT_WEBHOOK_SECRET=ALERT_SECRET)
        with h.Settled(db, env=env) as s:
            pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE")]))
            pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM webhook_events") == "dead", 30,
                        "the refused event to be dead")
            rid, event_id, etype, attempts, last_error, corr = h.sql_rows(
                db, "SELECT id, event_id, event_type, attempts, last_error, correlation_id FROM webhook_events")[0]
            expect_eq(attempts, "1", "attempts of a permanent failure: the first only")
            expect_eq(last_error, "permanent failure, not retried: Xero API answered 403", "last_error says why")
            time.sleep(1.0)
            expect_eq(len(m.api_calls("Invoices", iid)), 1, "calls to Xero: no retry of a 403")
            pl.wait_for(lambda: len(dead_lines(s)) == 1, 10, "one 'event dead' log line")
            line = dead_lines(s)[0]
            expect_eq({k: line.get(k) for k in ("id", "provider", "event_id", "type", "attempts", "error",
                                                "correlation_id")},
                      {"id": rid, "provider": "xero", "event_id": event_id, "type": etype, "attempts": 1,
                       "error": last_error, "correlation_id": corr}, "the dead letter's log line")
            expect_eq(line.get("level"), "warn", "the dead letter's log level")
            expect_eq(pl.metric(s, "settled_dead_letters_total", provider="xero"), 1.0, "dead letters counted")

            # the alert: the receiver refused the first POST, so it comes twice, the second after ~1 s
            pl.wait_for(lambda: len(rx.alerts("event.dead")) == 2, 15, "the alert, posted again after a 503")
            first, second = rx.alerts("event.dead")
            expect_eq(first["doc"]["id"], second["doc"]["id"], "the retry posts the same alert")
            expect(second["at"] - first["at"] >= 0.9, "the retry waits about a second", second["at"] - first["at"])
            for p in (first, second):
                why = verify_stripe_signature(p["headers"].get("stripe-signature", ""), p["body"], ALERT_SECRET)
                expect(why is None, "the alert's Stripe-Signature verifies", (why, p["headers"]))
                expect_eq(p["headers"].get("content-type"), "application/json", "the alert's content type")
            expect(verify_stripe_signature(second["headers"]["stripe-signature"], second["body"] + b" ",
                                           ALERT_SECRET) is not None, "a changed body does not verify")
            expect(verify_stripe_signature(second["headers"]["stripe-signature"], second["body"], "other")
                   is not None, "another key does not verify")
            doc = second["doc"]
            expect_eq(doc["type"], "event.dead", "alert type")
            expect(isinstance(doc.get("created"), int) and doc["id"].startswith("alert_"), "alert id and time", doc)
            expect_eq(doc["data"], {"id": rid, "provider": "xero", "event_id": event_id, "event_type": etype,
                                    "attempts": 1, "last_error": last_error, "correlation_id": corr},
                      "the alert's data")
            pl.wait_for(lambda: pl.metric(s, "settled_alerts_total", result="sent") == 1.0, 10, "alerts sent: 1")
            s.check_log()
    finally:
        rx.close()
        m.clear_faults()


def test_transient_failures_follow_the_schedule_then_die_with_an_alert():
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "dead_sched")
    iid = str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "10.00"))
    m.faults({"mode": "500", "count": 0, "tenant": t})
    m.ctl("DELETE", "requests")
    rx = Receiver()
    try:
        env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0, SETTLED_WORKER_POLL_MS=100,
                             SETTLED_RETRY_SCHEDULE="300ms,600ms", SETTLED_CIRCUIT_FAILURES=100,
                             SETTLED_ALERT_WEBHOOK_URL=rx.url, SETTLED_ALERT_WEBHOOK_SECRET=ALERT_SECRET)
        with h.Settled(db, env=env) as s:
            pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE")]))
            pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM webhook_events") == "dead", 30,
                        "the failing event to be dead after the schedule")
            calls = m.api_calls("Invoices", iid)
            expect_eq(len(calls), 3, "calls: the first attempt and one after each of the 2 waits")
            expect_eq(h.sql_rows(db, "SELECT attempts, last_error FROM webhook_events"),
                      [["3", "Xero API answered 500"]], "the dead row")
            pl.wait_for(lambda: len(rx.alerts("event.dead")) == 1, 15, "the alert")
            expect_eq(rx.alerts("event.dead")[0]["doc"]["data"]["attempts"], 3, "the alert's attempts")
            expect_eq(len(dead_lines(s)), 1, "one 'event dead' line")
            expect_in("Xero API answered 500", dead_lines(s)[0].get("error", ""), "its error")
    finally:
        rx.close()
        m.clear_faults()


def test_a_connection_needing_reauthorisation_is_alerted():
    """The tenant's refresh token dies (the mock's clock moves past its 60 days): the worker's refresh gets
    invalid_grant, the token set is parked needs_reauth, and a signed connection.needs_reauth alert names it.
    Runs last: the mock keeps its clock offset across resets."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "dead_reauth", grace=0)
    iid = str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "10.00"))
    org, token_id = h.sql_rows(db, "SELECT organisation_id, token_id FROM xero_tenants")[0]
    m.ctl("POST", "clock", {"advance": 61 * 86400})
    rx = Receiver()
    try:
        env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0,
                             SETTLED_ALERT_WEBHOOK_URL=rx.url, SETTLED_ALERT_WEBHOOK_SECRET=ALERT_SECRET)
        with h.Settled(db, env=env) as s:
            pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE")]))
            pl.wait_for(lambda: rx.alerts("connection.needs_reauth"), 20, "the re-authorisation alert")
            alert = rx.alerts("connection.needs_reauth")[0]
            why = verify_stripe_signature(alert["headers"].get("stripe-signature", ""), alert["body"], ALERT_SECRET)
            expect(why is None, "the alert's signature verifies", why)
            data = alert["doc"]["data"]
            expect_eq((data["provider"], str(data["organisation_id"]), str(data["token_id"])), ("xero", org, token_id),
                      "the alert names the connection")
            expect_in("invalid_grant", data["reason"], "the alert says why")
            expect_eq(h.sql_value(db, "SELECT status FROM xero_tokens WHERE id = $1", token_id), "needs_reauth",
                      "the token set is parked")
            expect_eq(h.sql_value(db, "SELECT status FROM webhook_events"), "pending",
                      "the event waits for the reconnection (not dead)")
            expect_eq(len(rx.alerts("event.dead")), 0, "no dead-letter alert")
    finally:
        rx.close()


try:
    h.run(globals())
finally:
    if _mock is not None:
        _mock.stop()
