#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_gocardless_mock.py: self-test of the mock GoCardless Pro API (tests/mock/gocardless_api.py) that
settled's GoCardless tests use.

Python 3 standard library only; needs neither settled nor PostgreSQL. Starts the mock on a free loopback
port (--port 0) and a webhook receiver, drives both over HTTP, stops the mock by its PID at the end, prints
one line per test and ``N passed, N failed``; exits 1 on any failure. ``python3 test_gocardless_mock.py
test_a`` runs only the named tests.
"""

import hashlib
import hmac
import json
import os
import sys
import time
from urllib.parse import urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mocktest import Failure, Mock, Receiver, expect, expect_eq, run_tests  # noqa: E402

MOCK = os.path.join(os.path.dirname(HERE), "mock", "gocardless_api.py")
TOKEN = "gc_sandbox_mock_token"
SECRET = "ED7D658C-D8EB-4941-948B-3973214F2D49"
M = R = None


def api(method, path, body=None, token=TOKEN, version="2015-07-06", key=None, query=None):
    h = {"Accept": "application/json"}
    if token is not None:
        h["Authorization"] = "Bearer " + token
    if version is not None:
        h["GoCardless-Version"] = version
    if key:
        h["Idempotency-Key"] = key
    if body is not None:
        h["Content-Type"] = "application/json"
    if query:
        path += "?" + urlencode(query)
    return M.call(method, path, body, h)


def setup(**config):
    M.ctl("POST", "reset")
    R.clear(epoch=True)  # a delivery still in flight from the last test is not recorded
    if config:
        M.ctl("PUT", "config", config)
    M.ctl("PUT", "objects/customers/CU1", {"email": "a@example.com", "given_name": "Ann"})
    M.ctl("PUT", "objects/customer_bank_accounts/BA1", {"account_number": "55779911", "links": {"customer": "CU1"}})
    M.ctl("PUT", "objects/mandates/MD1", {"status": "active", "next_possible_charge_date": "2030-01-07",
                                          "links": {"customer": "CU1", "customer_bank_account": "BA1"}})


def hook(**kw):
    M.ctl("PUT", "webhook", {"url": R.url("/webhooks/gocardless"), "secret": SECRET, **kw})


def signed_ok(d, secret=SECRET):
    want = hmac.new(secret.encode(), d["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(d["headers"].get("webhook-signature", ""), want)


def pay(amount=2000, key=None, **extra):
    return api("POST", "/payments", {"payments": {"amount": amount, "currency": "GBP", "links": {"mandate": "MD1"},
                                                  "metadata": {"invoice": "INV-1"}, **extra}}, key=key)


def events_of(deliveries):
    return [e for d in deliveries for e in json.loads(d["body"])["events"]]


def test_startup_line_and_health():
    expect(M.line.startswith("gocardless-mock listening on http://127.0.0.1:"), M.line)
    expect_eq(M.ctl("GET", "health"), {"ok": True}, "health")


def test_auth_version_and_error_envelope():
    setup()
    r = api("GET", "/payments", token=None)
    expect_eq(r.status, 401, "no token")
    e = r.json()["error"]
    for f in ("type", "code", "message", "documentation_url", "request_id", "errors"):
        expect(f in e, f"error envelope has {f}")
    expect_eq((e["code"], e["type"]), (401, "invalid_api_usage"), "401 envelope")
    expect_eq(api("GET", "/payments", token="nope").status, 401, "bad token")
    r = api("GET", "/payments", version=None)
    expect_eq((r.status, r.json()["error"]["errors"][0]["reason"]), (400, "missing_version_header"), "no version")
    expect_eq(api("GET", "/payments", version="2020-01-01").json()["error"]["errors"][0]["reason"],
              "version_not_found", "wrong version")
    r = api("GET", "/payments/PM404")
    expect_eq((r.status, r.json()["error"]["errors"][0]["reason"]), (404, "resource_not_found"), "404")
    expect_eq(r.json()["error"]["request_id"], r.headers.get("x-request-id"), "request id in body and header")
    expect_eq(api("GET", "/payments").status, 200, "good call")


def test_get_objects_enveloped_and_bank_account_masked():
    setup()
    r = api("GET", "/customers/CU1").json()
    expect_eq((r["customers"]["id"], r["customers"]["email"]), ("CU1", "a@example.com"), "customer envelope")
    ba = api("GET", "/customer_bank_accounts/BA1").json()["customer_bank_accounts"]
    expect_eq(ba["account_number_ending"], "11", "last 2 digits (P3.7)")
    expect("account_number" not in ba and "55779911" not in json.dumps(ba), "never the full number")
    expect("55779911" not in json.dumps(M.ctl("GET", "objects/customer_bank_accounts/BA1")), "not even stored")
    md = api("GET", "/mandates/MD1").json()["mandates"]
    expect_eq((md["status"], md["links"]["customer"], md["next_possible_charge_date"]),
              ("active", "CU1", "2030-01-07"), "mandate")
    M.ctl("PUT", "objects/billing_requests/BRQ1", {"mandate_request": {"scheme": "bacs", "currency": "GBP"}})
    expect_eq(api("GET", "/billing_requests/BRQ1").json()["billing_requests"]["status"], "pending", "billing request")


def test_create_payment_validation_and_charge_date():
    setup()
    r = pay()
    expect_eq(r.status, 201, f"created {r}")
    p = r.json()["payments"]
    expect_eq((p["status"], p["amount"], p["currency"], p["links"]["mandate"], p["charge_date"]),
              ("pending_submission", 2000, "GBP", "MD1", "2030-01-07"), "payment from next_possible_charge_date")
    r = pay(charge_date="2030-01-12")  # a Saturday
    expect_eq(r.json()["payments"]["charge_date"], "2030-01-14", "rolled forward to Monday (P3.4)")
    r = pay(charge_date="2030-01-01")
    e = r.json()["error"]
    expect_eq((r.status, e["type"], e["errors"][0]["field"]), (422, "validation_failed", "charge_date"), "too early")
    expect_eq(pay(amount=0).json()["error"]["errors"][0]["field"], "amount", "amount")
    expect_eq(pay(currency="EUR").json()["error"]["errors"][0]["field"], "currency", "bacs needs GBP")
    expect_eq(pay(metadata={"a": "1", "b": "2", "c": "3", "d": "4"}).status, 422, "4 metadata keys (P3.4)")
    M.ctl("PUT", "objects/mandates/MD2", {"status": "cancelled"})
    r = api("POST", "/payments", {"payments": {"amount": 5, "currency": "GBP", "links": {"mandate": "MD2"}}})
    expect_eq(r.json()["error"]["errors"][0]["reason"], "mandate_is_inactive", "inactive mandate")
    expect_eq(api("POST", "/payments", {"amount": 5}).status, 400, "not enveloped")


def test_idempotent_creation_conflict():
    setup()
    a = pay(key="inv-1-due")
    b = pay(key="inv-1-due")
    expect_eq((a.status, b.status), (201, 409), "second create with the same key")
    e = b.json()["error"]
    expect_eq((e["type"], e["code"], e["errors"][0]["reason"]), ("invalid_state", 409, "idempotent_creation_conflict"),
              "conflict envelope (P3.3)")
    expect_eq(e["errors"][0]["links"]["conflicting_resource_id"], a.json()["payments"]["id"], "conflicting id")
    expect_eq(pay(amount=99, key="inv-1-due").status, 409, "whatever the parameters")
    expect_eq(len(api("GET", "/payments").json()["payments"]), 1, "one payment")
    expect_eq(pay(amount=0, key="bad-first").status, 422, "invalid")
    expect_eq(pay(key="bad-first").status, 201, "a failed validation does not use up the key")


def test_list_cursor_pagination_and_filters():
    setup()
    ids = [pay(amount=100 + i).json()["payments"]["id"] for i in range(12)]
    seen, after, pages = [], None, 0
    while True:
        q = {"limit": 5, **({"after": after} if after else {})}
        page = api("GET", "/payments", query=q).json()
        expect_eq(page["meta"]["limit"], 5, "meta.limit")
        seen += [p["id"] for p in page["payments"]]
        pages += 1
        after = page["meta"]["cursors"]["after"]
        if after is None:
            break
    expect_eq((seen, pages), (ids, 3), "every payment once over 3 pages")
    back = api("GET", "/payments", query={"limit": 3, "before": ids[6]}).json()
    expect_eq([p["id"] for p in back["payments"]], ids[3:6], "before")
    expect_eq(back["meta"]["cursors"]["before"], ids[3], "before cursor")
    expect_eq(api("GET", "/payments", query={"limit": 501}).status, 422, "limit over 500")
    expect_eq(len(api("GET", "/payments", query={"mandate": "MD1", "limit": 500}).json()["payments"]), 12, "by mandate")
    expect_eq(len(api("GET", "/payments", query={"customer": "CU1"}).json()["payments"]), 12, "by customer")
    expect_eq(len(api("GET", "/payments", query={"status": "paid_out"}).json()["payments"]), 0, "by status")
    expect_eq(len(api("GET", "/payments", query={"charge_date[gte]": "2030-01-08"}).json()["payments"]), 0,
              "charge_date[gte]")
    ev = api("GET", "/events", query={"resource_type": "payments", "action": "created", "limit": 500}).json()
    expect_eq(len(ev["events"]), 12, "events list")


def test_rate_limit_headers_and_429():
    setup(rate_limit=5)
    r = api("GET", "/payments")
    expect_eq((r.headers.get("ratelimit-limit"), r.headers.get("ratelimit-remaining")), ("5", "4"), "headers")
    expect(r.headers.get("ratelimit-reset", "").endswith("GMT"), "reset is an HTTP date")
    st = [api("GET", "/payments").status for _ in range(6)]
    expect_eq(st, [200, 200, 200, 200, 429, 429], "429 after 5 in the window")
    r = api("GET", "/payments")
    e = r.json()["error"]
    expect_eq((e["type"], e["errors"][0]["reason"], r.headers.get("ratelimit-remaining")),
              ("invalid_api_usage", "rate_limit_exceeded", "0"), "the SDK fixture's 429 (P3.3)")
    s = M.ctl("GET", "stats")
    expect_eq(s["violations"], 3, "violations")
    M.ctl("POST", "clock", {"advance": 60})
    expect_eq(api("GET", "/payments").headers.get("ratelimit-remaining"), "4", "a new window")
    M.ctl("PUT", "config", {"rate_limit": 1000})
    M.ctl("POST", "faults", {"mode": "429", "count": 1, "retry_after": 7})
    r = api("GET", "/payments")
    expect_eq((r.status, r.headers.get("retry-after")), (429, "7"), "fault 429 with Retry-After")


def test_faults_5xx_window_drop():
    setup()
    M.ctl("POST", "faults", {"mode": "500", "count": 2})
    expect_eq([api("GET", "/payments").status for _ in range(3)], [500, 500, 200], "500 twice")
    M.ctl("POST", "faults", {"mode": "503", "for_s": 0.4, "retry_after": 1})
    r = api("GET", "/payments")
    expect_eq((r.status, r.json()["error"]["type"], r.headers.get("retry-after")), (503, "gocardless", "1"), "503")
    time.sleep(0.5)
    expect_eq(api("GET", "/payments").status, 200, "window over")
    M.ctl("POST", "faults", {"mode": "drop", "method": "POST"})
    try:
        pay(key="lost")
        raise Failure("a dropped response should fail the client")
    except (ConnectionError, OSError):
        pass
    r = pay(key="lost")
    expect_eq(r.status, 409, "the dropped create happened: the retry conflicts")
    cid = r.json()["error"]["errors"][0]["links"]["conflicting_resource_id"]
    expect_eq(api("GET", f"/payments/{cid}").status, 200, "and the conflicting payment can be fetched (P3.3)")


def test_refunds_total_amount_confirmation():
    setup()
    pid = pay(amount=1000).json()["payments"]["id"]
    body = {"refunds": {"amount": 300, "total_amount_confirmation": 300, "links": {"payment": pid}}}
    r = api("POST", "/refunds", body)
    expect_eq(r.json()["error"]["errors"][0]["reason"], "refund_payment_invalid_state", "not confirmed yet")
    for a in ("submitted", "confirmed"):
        M.ctl("POST", f"payments/{pid}/{a}")
    r = api("POST", "/refunds", body, key="rf-1")
    expect_eq(r.status, 201, f"refund {r}")
    rf = r.json()["refunds"]
    expect_eq((rf["status"], rf["amount"], rf["links"]["payment"]), ("created", 300, pid), "refund")
    expect_eq(api("GET", f"/payments/{pid}").json()["payments"]["amount_refunded"], 300, "amount_refunded")
    expect_eq(api("POST", "/refunds", body, key="rf-1").status, 409, "idempotent conflict on refunds")
    r = api("POST", "/refunds", body)  # total should now be 600
    expect_eq(r.json()["error"]["errors"][0]["reason"], "total_amount_confirmation_invalid", "confirmation guard")
    body["refunds"].update(amount=800, total_amount_confirmation=1100)
    expect_eq(api("POST", "/refunds", body).status, 422, "over the rest")
    M.ctl("POST", f"refunds/{rf['id']}/bounced", expect_status=(409,))
    M.ctl("POST", f"refunds/{rf['id']}/paid")
    M.ctl("POST", f"refunds/{rf['id']}/bounced")
    expect_eq(api("GET", f"/refunds/{rf['id']}").json()["refunds"]["status"], "bounced", "bounced")
    expect_eq(api("GET", f"/payments/{pid}").json()["payments"]["amount_refunded"], 0, "bounce returns the amount")


def test_payment_lifecycle_events_and_signature():
    setup()
    hook()
    pid = pay().json()["payments"]["id"]
    for a in ("submitted", "confirmed", "paid_out", "charged_back", "chargeback_cancelled"):
        M.ctl("POST", f"payments/{pid}/{a}")
    p = api("GET", f"/payments/{pid}").json()["payments"]
    expect_eq(p["status"], "paid_out", "chargeback cancelled restores paid_out")
    expect(p["links"]["payout"].startswith("PO"), "links.payout once paid out (P3.2)")
    M.ctl("POST", f"payments/{pid}/late_failure", {"details": {"cause": "bank_account_closed"}})
    expect_eq(api("GET", f"/payments/{pid}").json()["payments"]["status"], "failed", "late failure (P3.8)")
    M.ctl("POST", f"payments/{pid}/confirmed", expect_status=(409,))
    got = R.wait(7)
    for d in got:
        expect(signed_ok(d), "Webhook-Signature = hex(HMAC-SHA256(secret, body))")
        expect(not signed_ok(d, "other"), "not with another secret")
        expect_eq((d["headers"]["content-type"], d["headers"]["origin"]),
                  ("application/json", "https://api-sandbox.gocardless.com"), "headers (P3.1)")
        expect(json.loads(d["body"])["meta"]["webhook_id"].startswith("WB"), "meta.webhook_id")
    evs = events_of(got)
    expect_eq([e["action"] for e in evs], ["created", "submitted", "confirmed", "paid_out", "charged_back",
                                           "chargeback_cancelled", "failed"], "actions")
    e = evs[-1]
    for f in ("id", "created_at", "resource_type", "action", "links", "details", "metadata"):
        expect(f in e, f"event has {f}")
    expect(e["id"].startswith("EV") and e["created_at"].endswith("Z"), "ids and times")
    expect_eq((e["resource_type"], e["links"]["payment"], e["details"]["cause"], e["details"]["origin"]),
              ("payments", pid, "bank_account_closed", "bank"), "late failure event")
    expect_eq(e["links"]["organisation"], "OR000MOCK00001", "links.organisation")
    expect_eq(api("GET", f"/events/{e['id']}").json()["events"]["action"], "failed", "GET /events/{id}")


def test_mandate_cancel_cancels_pending_payments_in_one_batch():
    setup()
    pid = pay().json()["payments"]["id"]
    hook()
    M.ctl("POST", "mandates/MD1/cancelled")
    got = R.wait(1)
    evs = events_of(got)
    expect_eq([(e["resource_type"], e["action"]) for e in evs],
              [("mandates", "cancelled"), ("payments", "cancelled")], "both events in one delivery")
    expect_eq(evs[1]["details"]["cause"], "mandate_cancelled", "cause")
    expect_eq(api("GET", f"/payments/{pid}").json()["payments"]["status"], "cancelled", "payment cancelled")
    md = api("GET", "/mandates/MD1").json()["mandates"]
    expect_eq((md["status"], md["next_possible_charge_date"]), ("cancelled", None), "mandate (P3.5)")
    M.ctl("POST", "mandates/MD1/reinstated")
    expect_eq(api("GET", "/mandates/MD1").json()["mandates"]["status"], "active", "reinstated")


def test_webhook_batch_reorder_duplicate_retry():
    setup()
    M.ctl("PUT", "objects/mandates/MD9", {"status": "pending_submission"})
    hook(batch=3)
    for a in ("submitted", "active", "expired"):
        M.ctl("POST", f"mandates/MD9/{a}")
    got = R.wait(1)
    expect_eq([e["action"] for e in events_of(got)], ["submitted", "active", "expired"], "3 events in one batch")
    R.clear()
    hook(batch=1, hold=True)
    pid = pay().json()["payments"]["id"]
    for a in ("submitted", "confirmed"):
        M.ctl("POST", f"payments/{pid}/{a}")
    time.sleep(0.2)
    expect_eq(len(R.got), 0, "held")
    M.ctl("POST", "webhook/flush", {"order": "reverse"})
    expect_eq([e["action"] for e in events_of(R.wait(3))], ["confirmed", "submitted", "created"], "out of order")
    R.clear()
    hook(hold=False, duplicate=1)
    M.ctl("POST", f"payments/{pid}/paid_out")
    got = R.wait(2)
    expect_eq(got[0]["body"], got[1]["body"], "the same delivery twice")
    R.clear()
    hook(duplicate=0, retries=1, retry_delay_ms=50)
    R.statuses = [498]
    M.ctl("POST", f"payments/{pid}/charged_back")
    got = R.wait(2)
    expect_eq([d["status"] for d in got], [498, 200], "retried after a non-2xx")
    expect_eq(json.loads(got[0]["body"])["meta"], json.loads(got[1]["body"])["meta"], "same webhook_id on retry")
    R.clear()
    hook(retries=0, bad_signature=True)
    M.ctl("POST", f"payments/{pid}/chargeback_cancelled")
    expect(not signed_ok(R.wait(1)[0]), "bad_signature")
    R.clear()
    hook(bad_signature=False, reverse_in_batch=True, batch=2)
    M.ctl("POST", "mandates/MD9/reinstated")
    M.ctl("POST", "mandates/MD9/cancelled")
    expect_eq([e["action"] for e in events_of(R.wait(1))], ["cancelled", "reinstated"], "reversed in a batch")


def test_billing_request_fulfil():
    setup()
    hook()
    M.ctl("PUT", "objects/billing_requests/BRQ1", {"mandate_request": {"scheme": "bacs"},
                                                    "payment_request": {"amount": 500, "currency": "GBP"}})
    M.ctl("POST", "billing_requests/BRQ1/fulfil")
    br = api("GET", "/billing_requests/BRQ1").json()["billing_requests"]
    expect_eq(br["status"], "fulfilled", "fulfilled (P3.6)")
    m = api("GET", f"/mandates/{br['links']['mandate_request_mandate']}").json()["mandates"]
    p = api("GET", f"/payments/{br['links']['payment_request_payment']}").json()["payments"]
    expect_eq((m["status"], p["amount"], p["links"]["mandate"]), ("pending_submission", 500, m["id"]), "created")
    evs = events_of(R.wait(1))
    expect_eq([(e["resource_type"], e["action"]) for e in evs][-1], ("billing_requests", "fulfilled"), "event")
    expect_eq(evs[-1]["links"]["mandate_request_mandate"], m["id"], "links")


def test_payment_actions_cancel_and_retry():
    setup()
    pid = pay().json()["payments"]["id"]
    r = api("POST", f"/payments/{pid}/actions/cancel", {"data": {}})
    expect_eq((r.status, r.json()["payments"]["status"]), (200, "cancelled"), "cancel")
    expect_eq(api("POST", f"/payments/{pid}/actions/cancel", {}).json()["error"]["errors"][0]["reason"],
              "cancellation_failed", "cannot cancel twice")
    pid = pay().json()["payments"]["id"]
    M.ctl("POST", f"payments/{pid}/failed")
    r = api("POST", f"/payments/{pid}/actions/retry", {})
    expect_eq(r.json()["payments"]["status"], "pending_submission", "retried (P3.4)")


def test_demo_seed_and_sigterm():
    m = Mock(MOCK, "gocardless-mock", "--demo")
    try:
        r = m.call("GET", "/payments/PM000DEMO00001", headers={"Authorization": "Bearer gc_sandbox_demo_token",
                                                               "GoCardless-Version": "2015-07-06"})
        expect_eq((r.status, json.loads(r.body)["payments"]["status"]), (200, "confirmed"), "demo payment")
    finally:
        t0 = time.monotonic()
        rc = m.stop()
    expect_eq(rc, 0, "exit status on SIGTERM")
    expect(time.monotonic() - t0 < 3, "and promptly")


def start():
    global M, R
    M = Mock(MOCK, "gocardless-mock")
    R = Receiver()


def stop():
    R.close()
    rc = M.stop()
    return rc, M.stderr()


if __name__ == "__main__":
    sys.exit(run_tests(globals(), start, stop))
