# SPDX-License-Identifier: MIT
"""test_request_log.py: the log lines explain. The request line of a webhook says which source it came to, the
provider's event id once the signature let it be read, whether it was a duplicate, the problem code and its own
detail sentence when it was refused, and the client's address; SETTLED_LOG_LEVEL=debug adds the workers'
decisions (claims, the refetch plan, coalescing)."""

import json
import time
import uuid

import harness as h
import pipelinelib as pl
from harness import expect, expect_eq, expect_in, expect_not_in


def stripe_event(event_id):
    return (b'{"id":"' + event_id.encode() + b'","object":"event","type":"customer.updated",'
            b'"data":{"object":{"id":"cus_log"}}}')


def request_line(server, request_id):
    """The request log line of the request with X-Request-Id request_id (waits a moment for it)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for r in server.log_records():
            if r.get("msg") == "request" and r.get("request_id") == request_id:
                return r
        time.sleep(0.05)
    raise h.Failure(f"no request line for {request_id}:\n{server.log_tail()}")


def expect_fields(line, expected, what):
    for k, v in expected.items():
        expect_eq(line.get(k), v, f"{what}: {k} of {json.dumps(line)}")


def test_request_lines_of_webhooks():
    db = h.new_database("reqlog")
    gc_secret = h.GOCARDLESS_SECRET
    env = {"SETTLED_GOCARDLESS_WEBHOOK_SECRETS__ACME": "gc-acme-secret"}
    with h.Settled(db, env=env) as s:
        body = stripe_event("evt_log_1")
        # accepted, then the same delivery again: a duplicate
        for rid, dup in (("log-first", False), ("log-again", True)):
            status, _, _ = s.post_stripe(body, headers={"X-Request-Id": rid})
            expect_eq(status, 200, f"{rid}: status")
            line = request_line(s, rid)
            expect_fields(line, {"route": "webhooks_stripe", "provider": "stripe", "status": 200, "source": "default",
                                 "event_id": "evt_log_1", "events": 1, "new_events": 0 if dup else 1,
                                 "duplicate": dup, "client": "127.0.0.1"}, rid)
            expect("problem" not in line, f"{rid}: no problem code on an accepted delivery", line)

        # refused: each code with its own detail; the body is never parsed, so no event id
        cases = [
            ("log-mismatch", {"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"}, 400, "signature_mismatch",
             "No active secret of this source produces the signature of this body."),
            ("log-missing", {}, 400, "signature_missing", "The request has no signature header for this provider."),
            ("log-malformed", {"Stripe-Signature": "garbage"}, 400, "signature_malformed",
             "The signature header cannot be parsed."),
        ]
        for rid, headers, status, code, detail in cases:
            got, _, _ = s.post("/webhooks/stripe", stripe_event("evt_log_refused"), dict(headers, **{"X-Request-Id": rid}))
            expect_eq(got, status, f"{rid}: status")
            line = request_line(s, rid)
            expect_fields(line, {"status": status, "problem": code, "detail": detail, "source": "default",
                                 "client": "127.0.0.1"}, rid)
            expect("event_id" not in line and "duplicate" not in line,
                   f"{rid}: nothing read from an unverified body", line)
        stale_t = int(time.time()) - 3600
        got, _, _ = s.post("/webhooks/stripe", body, {"Stripe-Signature": h.sign_stripe(body, t=stale_t),
                                                      "X-Request-Id": "log-stale"})
        expect_eq(got, 400, "stale: status")
        expect_fields(request_line(s, "log-stale"), {
            "problem": "timestamp_stale",
            "detail": "The signature matches, but its timestamp is older than SETTLED_STRIPE_TOLERANCE allows."},
            "stale")

        # Xero answers a bad signature with an empty 401: the log line still has the code
        xbody = b'{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"x"}'
        got, _, rbody = s.post("/webhooks/xero", xbody, {"x-xero-signature": "bm9wZQ==", "X-Request-Id": "log-xero"})
        expect_eq((got, rbody), (401, b""), "xero bad signature: the bare reply")
        expect_fields(request_line(s, "log-xero"), {"problem": "signature_mismatch", "provider": "xero",
                                                   "status": 401}, "xero")

        # an unknown source, and a body that verifies but is not JSON
        got, _, _ = s.post("/webhooks/stripe/nope", body, {"X-Request-Id": "log-nosource"})
        expect_fields(request_line(s, "log-nosource"), {"status": 404, "problem": "source_unknown"}, "no source")
        bad = b"not json"
        got, _, _ = s.post("/webhooks/stripe", bad, {"Stripe-Signature": h.sign_stripe(bad), "X-Request-Id": "log-bad"})
        expect_eq(got, 400, "not JSON: status")
        line = request_line(s, "log-bad")
        expect_fields(line, {"problem": "body_malformed"}, "not JSON")
        expect(line.get("detail"), "not JSON: a detail sentence", line)

        # a GoCardless batch to a named source, sent twice with one new event the second time
        def gc(ids):
            return json.dumps({"events": [{"id": i, "action": "confirmed", "resource_type": "payments",
                                           "links": {"payment": "PM1"}, "created_at": "2026-01-01T00:00:00Z"}
                                          for i in ids]}).encode()
        for rid, ids, new, dup in (("log-gc-1", ["EV1", "EV2"], 2, False), ("log-gc-2", ["EV1", "EV2", "EV3"], 1, False),
                                   ("log-gc-3", ["EV1", "EV2", "EV3"], 0, True)):
            b = gc(ids)
            got, _, _ = s.post("/webhooks/gocardless/acme", b,
                               {"Webhook-Signature": h.sign_gocardless(b, "gc-acme-secret"), "X-Request-Id": rid})
            expect_eq(got, 204, f"{rid}: status")
            expect_fields(request_line(s, rid), {"source": "acme", "event_id": "EV1", "events": len(ids),
                                                "new_events": new, "duplicate": dup}, rid)
        # no secret ever appears in the log
        log = s.log()
        for secret in (h.STRIPE_SECRET, gc_secret, "gc-acme-secret", h.XERO_KEY):
            expect_not_in(secret, log, "the server log")


def test_debug_level_logs_the_decisions():
    pl.require("SETTLED_TEST_PG_URL", "SETTLED_BIN", "SETTLED_SOURCE_DIR")
    m = pl.Mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "reqlog_debug")
    iid = str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "10.00", lines=[
        pl.line_item(str(uuid.uuid4()), "one", "1.0000", "10.00", "10.00")]))
    for level, expect_debug in (("info", False), ("debug", True)):
        env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=300, SETTLED_LOG_LEVEL=level)
        with h.Settled(db, env=env) as s:
            before = int(h.sql_value(db, "SELECT count(*) FROM webhook_events"))
            for i in range(3):
                pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE")], seq=100 * (level == "debug") + i + 1))
            pl.wait_drained(db, 30, expect_rows=before + 3)
            time.sleep(0.3)
            msgs = [r.get("msg") for r in s.log_records()]
            plans = [r for r in s.log_records() if r.get("msg") == "refetch plan"]
        for msg in ("claimed", "refetch plan", "finished as done"):
            expect_eq(msg in msgs, expect_debug, f"SETTLED_LOG_LEVEL={level}: a {msg!r} line")
        if expect_debug:
            expect(all(p.get("level") == "debug" for p in plans), "the plan is a debug line", plans)
            expect_in(iid, plans[0].get("fetch_1", ""), "the plan names the invoice it fetches")
            expect_eq(plans[0].get("tenant"), t, "the plan's tenant")


if __name__ == "__main__":
    h.run(globals())
