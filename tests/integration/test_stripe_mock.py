#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_stripe_mock.py: self-test of the mock Stripe API (tests/mock/stripe_api.py) that settled's Stripe
tests use.

Python 3 standard library only; needs neither settled nor PostgreSQL. Starts the mock on a free loopback
port (--port 0) and a webhook receiver, drives both over HTTP, stops the mock by its PID at the end, prints
one line per test and ``N passed, N failed``; exits 1 on any failure. ``python3 test_stripe_mock.py
test_a`` runs only the named tests.
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from urllib.parse import urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mocktest import Failure, Mock, Receiver, expect, expect_eq, parallel, run_tests  # noqa: E402

MOCK = os.path.join(os.path.dirname(HERE), "mock", "stripe_api.py")
KEY = "sk_test_mock"
SECRET = "whsec_test_secret"
M = R = None


def api(method, path, params=None, key=KEY, headers=None, basic=False):
    h = dict(headers or {})
    if key is not None:
        h["Authorization"] = ("Basic " + base64.b64encode(f"{key}:".encode()).decode()) if basic else f"Bearer {key}"
    body = None
    if params is not None and method == "GET":
        path += "?" + urlencode(params, doseq=True)
    elif params is not None:
        body = urlencode(params, doseq=True)
        h["Content-Type"] = "application/x-www-form-urlencoded"
    return M.call(method, path, body, h)


def setup(**config):
    M.ctl("POST", "reset")
    R.clear(epoch=True)  # a delivery still in flight from the last test is not recorded
    if config:
        M.ctl("PUT", "config", config)
    M.ctl("PUT", "objects/customers/cus_A", {"email": "a@example.com"})
    M.ctl("PUT", "objects/payment_methods/pm_ok", {"customer": "cus_A", "mock_outcome": "succeed"})


def hook(**kw):
    M.ctl("PUT", "webhook", {"url": R.url("/webhooks/stripe"), "secret": SECRET, **kw})


def verify(d, secret=SECRET):
    """Verifies a delivery like stripe-python does (P1.1): any v1 over "t.body" with the secret as bytes."""
    parts = [p.split("=", 1) for p in d["headers"]["stripe-signature"].split(",")]
    t = [v for k, v in parts if k == "t"][0]
    want = hmac.new(secret.encode(), t.encode() + b"." + d["body"], hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v, want) for k, v in parts), int(t)


def offsession(pm="pm_ok", key=None, amount=1500, **extra):
    p = {"amount": amount, "currency": "GBP", "customer": "cus_A", "payment_method": pm, "confirm": "true",
         "off_session": "true", "metadata[invoice]": "INV-1", **extra}
    return api("POST", "/v1/payment_intents", p, headers={"Idempotency-Key": key} if key else None)


def test_startup_line_and_health():
    expect(M.line.startswith("stripe-mock listening on http://127.0.0.1:"), M.line)
    expect_eq(M.ctl("GET", "health"), {"ok": True}, "health")


def test_auth_bearer_basic_and_401_envelope():
    setup()
    r = api("GET", "/v1/customers/cus_A", key=None)
    expect_eq(r.status, 401, "no key")
    e = r.json()["error"]
    expect_eq(e["type"], "invalid_request_error", "type")
    expect("You did not provide an API key" in e["message"], e["message"])
    r = api("GET", "/v1/customers/cus_A", key="sk_test_wrongwrongwrong1234")
    expect_eq(r.status, 401, "wrong key")
    expect_eq(r.json()["error"]["code"], "api_key_invalid", "code")
    expect("1234" in r.json()["error"]["message"] and "wrongwrong" not in r.json()["error"]["message"],
           "the key is masked: " + r.json()["error"]["message"])
    expect(r.headers.get("request-id", "").startswith("req_"), "Request-Id")
    expect_eq(api("GET", "/v1/customers/cus_A").status, 200, "bearer")
    r = api("GET", "/v1/customers/cus_A", basic=True)
    expect_eq(r.status, 200, "basic with the key as user")
    expect_eq(r.json()["email"], "a@example.com", "customer")
    expect_eq(M.ctl("GET", "stats")["unauthorised"]["401"], 2, "401s counted")


def test_errors_404_unknown_param_and_version():
    setup()
    r = api("GET", "/v1/charges/ch_nope")
    expect_eq(r.status, 404, "missing charge")
    expect_eq(r.json()["error"]["code"], "resource_missing", "code")
    expect_eq(r.json()["error"]["message"], "No such charge: 'ch_nope'", "message")
    r = api("GET", "/v1/nothing")
    expect_eq(r.status, 404, "unknown URL")
    expect("Unrecognized request URL" in r.json()["error"]["message"], r)
    r = api("POST", "/v1/payment_intents", {"amount": 100, "currency": "usd", "colour": "red"})
    expect_eq((r.status, r.json()["error"].get("param")), (400, "colour"), "unknown parameter")
    r = api("POST", "/v1/payment_intents", {"currency": "usd"})
    expect_eq(r.json()["error"]["code"], "parameter_missing", "missing amount")
    r = api("POST", "/v1/payment_intents", {"amount": 150, "currency": "isk"})
    expect_eq(r.json()["error"]["code"], "invalid_charge_amount_no_decimal_compatible", "ISK (P1.12)")
    r = M.call("POST", "/v1/payment_intents", '{"amount":1}', {"Authorization": "Bearer " + KEY,
                                                              "Content-Type": "application/json"})
    expect_eq(r.status, 400, "v1 wants form bodies")
    r = api("GET", "/v1/customers/cus_A", headers={"Stripe-Version": "2024-06-20"})
    expect_eq(r.headers.get("stripe-version"), "2024-06-20", "version echoed")
    expect_eq(api("GET", "/v1/customers/cus_A").headers.get("stripe-version"), "2026-07-29.dahlia", "default")
    expect_eq(api("GET", "/v1/customers/cus_A", headers={"Stripe-Version": "latest!"}).status, 400, "bad version")


def test_object_shapes_and_offsession_success():
    setup()
    r = offsession()
    expect_eq(r.status, 200, f"create+confirm {r}")
    pi = r.json()
    for f in ("id", "object", "amount", "amount_received", "currency", "status", "metadata", "latest_charge",
              "customer", "payment_method", "created", "livemode", "client_secret"):
        expect(f in pi, f"PaymentIntent has {f}")
    expect_eq((pi["object"], pi["status"], pi["amount_received"], pi["currency"]),
              ("payment_intent", "succeeded", 1500, "gbp"), "succeeded in minor units, lowercase currency")
    expect_eq(pi["metadata"], {"invoice": "INV-1"}, "metadata")
    ch = api("GET", f"/v1/charges/{pi['latest_charge']}").json()
    expect_eq((ch["object"], ch["payment_intent"], ch["status"], ch["paid"], ch["refunded"], ch["amount_refunded"],
               ch["disputed"]), ("charge", pi["id"], "succeeded", True, False, 0, False), "charge")
    expect_eq(ch["metadata"], {"invoice": "INV-1"}, "charge metadata")
    x = api("GET", f"/v1/payment_intents/{pi['id']}", {"expand[]": "latest_charge"}).json()
    expect_eq(x["latest_charge"]["id"], ch["id"], "expand latest_charge")
    expect_eq(api("GET", "/v1/payment_methods/pm_ok").json()["card"]["last4"], "4242", "payment method")


def test_offsession_decline_and_authentication_required():
    setup()
    M.ctl("PUT", "objects/payment_methods/pm_nsf", {"customer": "cus_A", "mock_outcome": "insufficient_funds"})
    M.ctl("PUT", "objects/payment_methods/pm_3ds", {"customer": "cus_A", "mock_outcome": "authentication_required"})
    r = offsession("pm_nsf")
    expect_eq(r.status, 402, "decline is 402 (P1.8)")
    e = r.json()["error"]
    expect_eq((e["type"], e["code"], e["decline_code"]), ("card_error", "card_declined", "insufficient_funds"), "err")
    expect_eq(e["payment_intent"]["status"], "requires_payment_method", "PI in the error body")
    expect_eq(api("GET", f"/v1/charges/{e['charge']}").json()["status"], "failed", "failed charge")
    r = offsession("pm_3ds")
    e = r.json()["error"]
    expect_eq((r.status, e["code"], e["decline_code"]), (402, "authentication_required", "authentication_required"),
              "off-session authentication (P1.11)")
    p = {"amount": 900, "currency": "usd", "customer": "cus_A", "payment_method": "pm_3ds", "confirm": "true"}
    r = api("POST", "/v1/payment_intents", p)
    expect_eq((r.status, r.json()["status"]), (200, "requires_action"), "on-session: requires_action")
    r = offsession("pm_card_chargeDeclined", customer="")
    expect_eq(r.json()["error"]["decline_code"], "generic_decline", "magic test PM")
    M.ctl("PUT", "objects/customers/cus_B", {})
    r = api("POST", "/v1/payment_intents", {**p, "customer": "cus_B", "payment_method": "pm_ok"})
    expect_eq((r.status, r.json()["error"]["param"]), (400, "payment_method"), "another customer's PM (P1.11)")
    r = api("POST", "/v1/payment_intents", {"amount": 5, "currency": "usd", "off_session": "true"})
    expect_eq((r.status, r.json()["error"]["param"]), (400, "off_session"), "off_session needs confirm")


def test_idempotency_replay_mismatch_and_expiry():
    setup()
    a = offsession(key="inv-1-attempt-1")
    b = offsession(key="inv-1-attempt-1")
    expect_eq((a.status, b.status), (200, 200), "both 200")
    expect_eq(b.json()["id"], a.json()["id"], "the same PaymentIntent replayed")
    expect_eq(b.body, a.body, "the same body replayed")
    expect_eq(b.headers.get("idempotent-replayed"), "true", "Idempotent-Replayed")
    expect("idempotent-replayed" not in a.headers, "not on the first response")
    expect_eq(len(api("GET", "/v1/payment_intents").json()["data"]), 1, "one PaymentIntent only")
    c = offsession(key="inv-1-attempt-1", amount=1600)
    expect_eq((c.status, c.json()["error"]["type"]), (400, "idempotency_error"), "other params")
    pi = a.json()["id"]
    d = api("POST", "/v1/refunds", {"payment_intent": pi}, headers={"Idempotency-Key": "inv-1-attempt-1"})
    expect_eq((d.status, d.json()["error"]["type"]), (400, "idempotency_error"), "other endpoint")
    # a validation failure is not saved: the same key with good parameters then works (P1.7)
    v = api("POST", "/v1/payment_intents", {"amount": "x", "currency": "gbp"}, headers={"Idempotency-Key": "k2"})
    expect_eq(v.status, 400, "invalid")
    v = api("POST", "/v1/payment_intents", {"amount": 100, "currency": "gbp"}, headers={"Idempotency-Key": "k2"})
    expect_eq((v.status, v.headers.get("idempotent-replayed")), (200, None), "fresh after a validation failure")
    # a 402 is saved and replayed
    M.ctl("PUT", "objects/payment_methods/pm_nsf", {"customer": "cus_A", "mock_outcome": "insufficient_funds"})
    x, y = offsession("pm_nsf", key="k3"), offsession("pm_nsf", key="k3")
    expect_eq((x.status, y.status, y.headers.get("idempotent-replayed")), (402, 402, "true"), "402 replayed")
    expect_eq(y.json()["error"]["payment_intent"]["id"], x.json()["error"]["payment_intent"]["id"], "same PI")
    M.ctl("POST", "clock", {"advance": 86400})
    e = offsession(key="inv-1-attempt-1")
    expect_eq(e.status, 200, "after 24 h")
    expect(e.json()["id"] != pi and "idempotent-replayed" not in e.headers, "a pruned key creates anew")
    expect_eq(M.ctl("GET", "stats")["idempotency"]["replayed"], 2, "replays counted")


def test_idempotency_key_in_use_409():
    setup()
    M.ctl("POST", "faults", {"mode": "slow", "delay_ms": 600, "method": "POST"})
    out = parallel(2, lambda i: (time.sleep(0.15 * i), offsession(key="same"))[1])
    st = sorted(r.status for r in out)
    expect_eq(st, [200, 409], "one runs, the concurrent twin gets 409")
    e = [r for r in out if r.status == 409][0].json()["error"]
    expect_eq(e["code"], "idempotency_key_in_use", "code")


def test_pagination_cursors_and_created_filter():
    setup()
    ids = []
    for i in range(25):
        ids.append(M.ctl("PUT", f"objects/payment_intents/pi_{i:03d}", {"amount": 100 + i, "created": 1700000000 + i})["id"])
    r = api("GET", "/v1/payment_intents").json()
    expect_eq((r["object"], r["url"], len(r["data"]), r["has_more"]), ("list", "/v1/payment_intents", 10, True), "page")
    expect_eq(r["data"][0]["id"], "pi_024", "newest first")
    seen, after = [], None
    while True:
        p = {"limit": 7, **({"starting_after": after} if after else {})}
        page = api("GET", "/v1/payment_intents", p).json()
        seen += [o["id"] for o in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    expect_eq(seen, list(reversed(ids)), "every object once, newest first")
    back = api("GET", "/v1/payment_intents", {"limit": 3, "ending_before": "pi_010"}).json()
    expect_eq(([o["id"] for o in back["data"]], back["has_more"]), (["pi_013", "pi_012", "pi_011"], True),
              "ending_before")
    f = api("GET", "/v1/payment_intents", {"created[gte]": 1700000020, "limit": 100}).json()
    expect_eq(len(f["data"]), 5, "created[gte]")
    f = api("GET", "/v1/payment_intents", {"created[gt]": 1700000020, "created[lte]": 1700000022}).json()
    expect_eq([o["id"] for o in f["data"]], ["pi_022", "pi_021"], "a created range")
    expect_eq(api("GET", "/v1/payment_intents", {"limit": 0}).status, 400, "limit 0")
    expect_eq(api("GET", "/v1/payment_intents", {"limit": 101}).status, 400, "limit 101")
    expect_eq(api("GET", "/v1/payment_intents", {"starting_after": "pi_001", "ending_before": "pi_005"}).status,
              400, "both cursors")
    expect_eq(api("GET", "/v1/payment_intents", {"starting_after": "pi_zzz"}).status, 404, "unknown cursor")


def test_events_list_and_type_filter():
    setup()
    offsession()
    ev = api("GET", "/v1/events", {"limit": 100}).json()["data"]
    expect_eq([e["type"] for e in ev], ["payment_intent.succeeded", "charge.succeeded", "payment_intent.created"],
              "events newest first")
    only = api("GET", "/v1/events", {"type": "payment_intent.*"}).json()["data"]
    expect_eq(len(only), 2, "wildcard type")
    one = api("GET", f"/v1/events/{ev[0]['id']}").json()
    expect_eq(one["data"]["object"]["status"], "succeeded", "GET an event")


def test_rate_limit_429_and_fault_retry_after():
    setup(limits={"read": 5})
    out = [api("GET", "/v1/customers/cus_A") for _ in range(8)]
    n429 = [r for r in out if r.status == 429]
    expect(len(n429) >= 3, f"reads over 5/s refused: {[r.status for r in out]}")
    e = n429[0].json()["error"]
    expect_eq(e["code"], "rate_limit", "code (P1.6)")
    expect("retry-after" not in n429[0].headers, "no Retry-After on a real limit (P1.6)")
    s = M.ctl("GET", "stats")
    expect(s["violations"] >= 3 and s["calls"]["max_calls_in_any_1s_window"] >= 8, f"stats {s['calls']}")
    time.sleep(1.05)
    expect_eq(api("POST", "/v1/payment_intents", {"amount": 100, "currency": "usd"}).status, 200,
              "writes have their own bucket")
    M.ctl("PUT", "config", {"limits": {"read": 25}})
    M.ctl("DELETE", "stats")
    M.ctl("POST", "faults", [{"mode": "429", "count": 2, "retry_after": 3},
                             {"mode": "429", "code": "lock_timeout", "count": 1}])
    a, b, c, d = (api("GET", "/v1/customers/cus_A") for _ in range(4))
    expect_eq((a.status, a.headers.get("retry-after"), b.status), (429, "3", 429), "fault 429 with Retry-After")
    expect_eq((c.status, c.json()["error"]["code"]), (429, "lock_timeout"), "lock_timeout 429 (P1.5)")
    expect_eq(d.status, 200, "then normal")
    s = M.ctl("GET", "stats")
    expect_eq((s["violations"], s["calls"]["sent_429_fault"]), (0, 3), "injected 429s are no violations")


def test_faults_5xx_window_drop_refuse_slow():
    setup()
    M.ctl("POST", "faults", {"mode": "503", "count": 2})
    st = [api("GET", "/v1/customers/cus_A").status for _ in range(3)]
    expect_eq(st, [503, 503, 200], "503 for the next 2 calls")
    M.ctl("POST", "faults", {"mode": "500", "for_s": 0.5})
    expect_eq(api("GET", "/v1/customers/cus_A").json()["error"]["type"], "api_error", "500 body")
    time.sleep(0.6)
    expect_eq(api("GET", "/v1/customers/cus_A").status, 200, "the window ended")
    M.ctl("POST", "faults", {"mode": "drop", "method": "POST"})
    try:
        offsession(key="lost")
        raise Failure("a dropped response should fail the client")
    except (ConnectionError, OSError, Exception) as e:  # noqa: BLE001
        if isinstance(e, Failure):
            raise
    r = offsession(key="lost")
    expect_eq(r.headers.get("idempotent-replayed"), "true", "the dropped POST executed; the retry replays it")
    M.ctl("POST", "faults", {"mode": "refuse", "count": 1})
    try:
        api("GET", "/v1/customers/cus_A")
        raise Failure("a refused connection should fail the client")
    except (ConnectionError, OSError) as e:
        pass
    expect_eq(api("GET", "/v1/customers/cus_A").status, 200, "then normal")
    M.ctl("POST", "faults", {"mode": "slow", "delay_ms": 300})
    t0 = time.monotonic()
    api("GET", "/v1/customers/cus_A")
    expect(time.monotonic() - t0 >= 0.28, "slow")


def test_connect_accounts_scope_objects():
    setup()
    acct = {"Stripe-Account": "acct_1X"}
    r = api("GET", "/v1/customers/cus_A", headers=acct)
    expect_eq(r.status, 403, "unknown connected account")
    M.ctl("PUT", "accounts/acct_1X")
    M.ctl("PUT", "objects/customers/cus_C?account=acct_1X", {})
    expect_eq(api("GET", "/v1/customers/cus_A", headers=acct).status, 404, "platform object not in the account")
    expect_eq(api("GET", "/v1/customers/cus_C", headers=acct).status, 200, "account object")
    expect_eq(api("GET", "/v1/customers/cus_C").status, 404, "account object not on the platform")
    hook()
    M.ctl("PUT", "objects/payment_intents/pi_c?account=acct_1X", {"amount": 300})
    M.ctl("POST", "payment_intents/pi_c/succeed", {"account": "acct_1X"})
    got = R.wait(2)
    expect_eq(json.loads(got[1]["body"])["account"], "acct_1X", "Connect events carry account (P1.2)")


def test_refunds_partial_full_and_errors():
    setup()
    hook()
    pi = offsession(amount=1000).json()
    r = api("POST", "/v1/refunds", {"payment_intent": pi["id"], "amount": 400, "reason": "requested_by_customer"})
    expect_eq(r.status, 200, f"partial {r}")
    re1 = r.json()
    expect_eq((re1["object"], re1["status"], re1["amount"], re1["payment_intent"], re1["charge"]),
              ("refund", "succeeded", 400, pi["id"], pi["latest_charge"]), "refund")
    ch = api("GET", f"/v1/charges/{pi['latest_charge']}").json()
    expect_eq((ch["amount_refunded"], ch["refunded"]), (400, False), "partial leaves refunded false (P1.10)")
    r = api("POST", "/v1/refunds", {"charge": ch["id"], "amount": 700})
    expect_eq(r.json()["error"]["code"], "amount_too_large", "over the rest")
    expect_eq(api("POST", "/v1/refunds", {"charge": ch["id"]}).json()["amount"], 600, "the rest by default")
    ch = api("GET", f"/v1/charges/{ch['id']}").json()
    expect_eq((ch["amount_refunded"], ch["refunded"], len(ch["refunds"]["data"])), (1000, True, 2), "full")
    r = api("POST", "/v1/refunds", {"charge": ch["id"]})
    expect_eq(r.json()["error"]["code"], "charge_already_refunded", "again")
    expect_eq(len(api("GET", "/v1/refunds", {"charge": ch["id"]}).json()["data"]), 2, "list refunds by charge")
    got = R.wait(7)
    types = [json.loads(d["body"])["type"] for d in got]
    expect_eq(types.count("charge.refunded"), 2, f"charge.refunded twice in {types}")
    ev = [json.loads(d["body"]) for d in got if json.loads(d["body"])["type"] == "charge.refunded"][0]
    expect_eq(ev["data"]["previous_attributes"]["amount_refunded"], 0, "previous_attributes (P1.4)")
    M.ctl("POST", "webhook/drain")
    re_ = M.ctl("POST", f"refunds/{re1['id']}/fail", {"failure_reason": "lost_or_stolen_card"})
    expect_eq((re_["status"], re_["failure_reason"]), ("failed", "lost_or_stolen_card"), "refund failed")
    expect_eq(api("GET", f"/v1/charges/{ch['id']}").json()["amount_refunded"], 600, "failed amount returned")


def test_dispute_lifecycle_blocks_refund():
    setup()
    hook()
    pi = offsession(amount=2000).json()
    dp = M.ctl("POST", f"charges/{pi['latest_charge']}/dispute", {"reason": "fraudulent"})
    got = api("GET", f"/v1/disputes/{dp['id']}").json()
    expect_eq((got["object"], got["charge"], got["payment_intent"], got["amount"], got["status"]),
              ("dispute", pi["latest_charge"], pi["id"], 2000, "needs_response"), "dispute")
    expect_eq(api("GET", f"/v1/charges/{pi['latest_charge']}").json()["disputed"], True, "charge disputed")
    r = api("POST", "/v1/refunds", {"payment_intent": pi["id"]})
    expect_eq(r.json()["error"]["code"], "charge_disputed", "no refund of a disputed charge")
    M.ctl("POST", f"disputes/{dp['id']}/close", {"status": "lost"})
    types = [json.loads(d["body"])["type"] for d in R.wait(5)]
    expect_eq(types[-2:], ["charge.dispute.created", "charge.dispute.closed"], "dispute events")
    expect_eq(len(api("GET", "/v1/disputes", {"payment_intent": pi["id"]}).json()["data"]), 1, "list disputes")


def test_webhook_signature_envelope_and_request():
    setup()
    hook()
    pi = offsession(key="idem-9").json()
    M.ctl("PUT", "objects/payment_intents/pi_ctl", {"amount": 700, "currency": "eur", "customer": "cus_A"})
    M.ctl("POST", "payment_intents/pi_ctl/succeed")
    got = R.wait(5)
    now = M.ctl("GET", "clock")["now"]
    for d in got:
        ok, t = verify(d)
        expect(ok, "Stripe-Signature v1 verifies with the secret")
        expect(abs(t - now) < 30, f"t is the mock's now: {t} vs {now}")
        expect(not verify(d, "whsec_other")[0], "and not with another secret")
        expect_eq(d["path"], "/webhooks/stripe", "path")
    ev = [json.loads(d["body"]) for d in got]
    for e in ev:
        for f in ("id", "object", "api_version", "created", "data", "livemode", "pending_webhooks", "request", "type"):
            expect(f in e, f"event has {f}")
        expect(e["id"].startswith("evt_") and e["object"] == "event" and e["livemode"] is False, "envelope")
    expect_eq(ev[0]["request"], {"id": ev[0]["request"]["id"], "idempotency_key": "idem-9"}, "API-caused request")
    expect(ev[0]["request"]["id"].startswith("req_"), "request id")
    expect_eq(ev[3]["request"], {"id": None, "idempotency_key": None}, "control-caused: automatic")
    expect_eq([e["type"] for e in ev[3:]], ["charge.succeeded", "payment_intent.succeeded"], "control transition")
    expect_eq(ev[4]["data"]["object"]["status"], "succeeded", "snapshot")
    expect_eq(ev[2]["data"]["object"]["id"], pi["id"], "PI snapshot")
    end = time.monotonic() + 5  # the receiver records a delivery before the mock logs its answer
    while len(log := M.ctl("GET", "deliveries")) < 5 and time.monotonic() < end:
        time.sleep(0.02)
    expect_eq([d["status"] for d in log], [200] * 5, "delivery log")


def test_webhook_hold_reverse_duplicate_retry_and_bad_signature():
    setup()
    for i in range(3):
        M.ctl("PUT", f"objects/customers/cus_{i}", {})
    hook(hold=True)
    for i in range(3):
        M.ctl("POST", f"customers/cus_{i}/update", {"name": f"N{i}"})
    time.sleep(0.2)
    expect_eq(len(R.got), 0, "held")
    expect_eq(M.ctl("POST", "webhook/flush", {"order": "reverse"})["released"], 3, "released")
    got = R.wait(3)
    expect_eq([json.loads(d["body"])["data"]["object"]["id"] for d in got], ["cus_2", "cus_1", "cus_0"], "reversed")
    expect_eq(json.loads(got[0]["body"])["data"]["previous_attributes"], {"name": None}, "previous_attributes")
    R.clear()
    hook(hold=False, duplicate=1)
    M.ctl("POST", "customers/cus_0/update", {"name": "again"})
    got = R.wait(2)
    expect_eq(got[0]["body"], got[1]["body"], "the same event twice")
    R.clear()
    hook(duplicate=0, retries=2, retry_delay_ms=50)
    R.statuses = [500, 503]
    M.ctl("POST", "customers/cus_0/update", {"name": "retry"})
    got = R.wait(3)
    expect_eq([d["status"] for d in got], [500, 503, 200], "retried until a 2xx")
    expect_eq(len({json.loads(d["body"])["id"] for d in got}), 1, "one event id")
    R.clear()
    hook(retries=0, bad_signature=True)
    M.ctl("POST", "customers/cus_0/update", {"name": "bad"})
    expect(not verify(R.wait(1)[0])[0], "bad_signature does not verify")
    R.clear()
    hook(bad_signature=False, extra_secret="whsec_rolled")
    M.ctl("POST", "customers/cus_0/update", {"name": "rolled"})
    d = R.wait(1)[0]
    expect(verify(d)[0] and verify(d, "whsec_rolled")[0], "two v1 entries while a secret rolls (P1.1)")
    R.clear()
    ev = api("GET", "/v1/events", {"limit": 1}).json()["data"][0]
    M.ctl("POST", f"events/{ev['id']}/resend")
    expect_eq(json.loads(R.wait(1)[0]["body"])["id"], ev["id"], "resend a stored event")


def test_setup_intent_attaches_payment_method():
    setup()
    hook()
    M.ctl("PUT", "objects/setup_intents/seti_1", {"customer": "cus_A"})
    M.ctl("PUT", "objects/payment_methods/pm_new", {})
    si = M.ctl("POST", "setup_intents/seti_1/succeed", {"payment_method": "pm_new"})
    expect_eq((si["status"], si["usage"], si["payment_method"]), ("succeeded", "off_session", "pm_new"), "seti")
    expect_eq(api("GET", "/v1/payment_methods/pm_new").json()["customer"], "cus_A", "attached")
    types = [json.loads(d["body"])["type"] for d in R.wait(2)]
    expect_eq(types, ["setup_intent.succeeded", "payment_method.attached"], "events")
    expect_eq(api("GET", "/v1/setup_intents/seti_1").json()["status"], "succeeded", "GET setup_intent")


def test_demo_seed_and_sigterm():
    m = Mock(MOCK, "stripe-mock", "--demo")
    try:
        r = m.call("GET", "/v1/payment_intents/pi_demo_succeeded", headers={"Authorization": "Bearer sk_test_demo"})
        expect_eq((r.status, r.json()["status"]), (200, "succeeded"), "demo PI")
    finally:
        t0 = time.monotonic()
        rc = m.stop()
    expect_eq(rc, 0, "exit status on SIGTERM")
    expect(time.monotonic() - t0 < 3, "and promptly")


def checkout(mode="payment", **extra):
    p = {"mode": mode, "success_url": "https://portal.example/paid?cs={CHECKOUT_SESSION_ID}",
         "customer": "cus_A", "metadata[settled_invoice_id]": "inv_1"}
    if mode == "payment":
        p.update({"line_items[0][price_data][currency]": "GBP", "line_items[0][price_data][unit_amount]": 1250,
                  "line_items[0][price_data][product_data][name]": "INV-1", "line_items[0][quantity]": 2,
                  "line_items[1][price_data][currency]": "gbp", "line_items[1][price_data][unit_amount]": 500,
                  "line_items[1][price_data][product_data][name]": "Fee", "line_items[1][quantity]": 1,
                  "payment_intent_data[metadata][xero_invoice_id]": "X-1"})
    p.update(extra)
    return api("POST", "/v1/checkout/sessions", {k: v for k, v in p.items() if v is not None})


def events(types_prefix=""):
    return [json.loads(d["body"]) for d in R.got if json.loads(d["body"])["type"].startswith(types_prefix)]


def test_checkout_create_retrieve_and_validation():
    setup()
    r = checkout()
    expect_eq(r.status, 200, f"create {r}")
    cs = r.json()
    expect(cs["id"].startswith("cs_test_"), cs["id"])
    expect_eq((cs["object"], cs["mode"], cs["status"], cs["payment_status"], cs["amount_total"], cs["currency"],
               cs["customer"], cs["payment_intent"], cs["setup_intent"], cs["livemode"]),
              ("checkout.session", "payment", "open", "unpaid", 3000, "gbp", "cus_A", None, None, False),
              "an open session: 2 x 1250 + 500 minor units, no PaymentIntent before completion (API 2022-08-01)")
    expect_eq(cs["metadata"], {"settled_invoice_id": "inv_1"}, "session metadata")
    expect_eq(cs["url"], "https://checkout.stripe.com/c/pay/" + cs["id"], "hosted url")
    expect(isinstance(cs["created"], int) and cs["expires_at"] == cs["created"] + 86400, "expires in 24 h")
    got = api("GET", f"/v1/checkout/sessions/{cs['id']}", {"expand[]": ["customer", "line_items"]}).json()
    expect_eq(got["customer"]["email"], "a@example.com", "expand customer")
    expect_eq([(li["quantity"], li["amount_total"], li["price"]["unit_amount"]) for li in got["line_items"]["data"]],
              [(2, 2500, 1250), (1, 500, 500)], "expand line_items")
    expect_eq(len(api("GET", f"/v1/checkout/sessions/{cs['id']}/line_items").json()["data"]), 2, "GET line_items")
    r = api("GET", "/v1/checkout/sessions/cs_test_nope")
    expect_eq((r.status, r.json()["error"]["message"]), (404, "No such checkout.session: 'cs_test_nope'"), "404")
    expect_eq(api("GET", "/v1/checkout_sessions").status, 404, "only the real path")
    jpy = checkout(**{"line_items[0][price_data][currency]": "jpy", "line_items[1][price_data][currency]": "jpy",
                      "line_items[0][price_data][unit_amount]": 1500}).json()
    expect_eq((jpy["amount_total"], jpy["currency"]), (3500, "jpy"), "JPY is zero-decimal: whole yen")
    bad_cases = [
        ({"mode": None}, "mode", "parameter_missing"),
        ({"mode": "subscription"}, "mode", None),
        ({"success_url": None}, "success_url", "parameter_missing"),
        ({"line_items[1][price_data][currency]": "eur"}, "line_items[1][price_data][currency]", None),
        ({"line_items[0][quantity]": None}, "line_items[0][quantity]", "parameter_missing"),
        ({"line_items[0][price]": "price_x"}, "line_items[0][price]", "resource_missing"),
        ({"line_items[0][colour]": "red"}, "line_items[0][colour]", "parameter_unknown"),
        ({"customer": "cus_nope"}, "customer", "resource_missing"),
        ({"ui_mode": "embedded"}, "ui_mode", None),
        ({"payment_intent_data[colour]": "red"}, "payment_intent_data[colour]", "parameter_unknown"),
        ({"setup_intent_data[metadata][a]": "b"}, "setup_intent_data", None),
        ({"line_items[0][price_data][currency]": "kwd", "line_items[1][price_data][currency]": "kwd",
          "line_items[0][price_data][unit_amount]": 1255, "line_items[0][quantity]": 1}, "line_items",
         "invalid_amount"),
    ]
    for change, param, code in bad_cases:
        r = checkout(**change)
        e = r.json().get("error", {})
        expect_eq((r.status, e.get("param"), e.get("code")), (400, param, code), f"refused: {change}")
    r = checkout("setup", success_url=None, ui_mode="embedded_page", return_url="https://portal.example/r",
                 currency="gbp")
    cs = r.json()
    expect_eq((r.status, cs["mode"], cs["payment_status"], cs["amount_total"], cs["url"], cs["ui_mode"]),
              (200, "setup", "no_payment_required", None, None, "embedded_page"), f"setup, embedded {r}")
    expect(cs["client_secret"].startswith(cs["id"] + "_secret_"), "embedded sessions carry a client_secret")
    r = checkout("setup")
    expect_eq((r.status, r.json()["error"]["param"]), (400, "currency"), "setup needs currency without pm types")
    r = checkout("setup", currency="gbp", **{"line_items[0][quantity]": 1})
    expect_eq((r.status, r.json()["error"]["param"]), (400, "line_items"), "no line_items in setup mode")
    expect_eq(len(R.got), 0, "creating a session emits nothing (no checkout.session.created)")


def test_checkout_card_completion_creates_succeeded_payment_intent():
    setup()
    hook()
    cs = checkout().json()
    done = M.ctl("POST", f"checkout_sessions/{cs['id']}/complete", {"method": "card"})
    expect_eq((done["status"], done["payment_status"], done["url"]), ("complete", "paid", None), "complete, paid")
    pi = api("GET", f"/v1/payment_intents/{done['payment_intent']}").json()
    expect_eq((pi["status"], pi["amount"], pi["amount_received"], pi["currency"], pi["customer"]),
              ("succeeded", 3000, 3000, "gbp", "cus_A"), "the PI carries the session's amount")
    expect_eq(pi["metadata"], {"xero_invoice_id": "X-1"},
              "the PI has payment_intent_data.metadata only; the session's metadata stays on the session")
    ch = api("GET", f"/v1/charges/{pi['latest_charge']}").json()
    expect_eq((ch["status"], ch["metadata"]), ("succeeded", {"xero_invoice_id": "X-1"}), "charge")
    got = R.wait(4)
    ev = [json.loads(d["body"]) for d in got]
    expect_eq([e["type"] for e in ev], ["payment_intent.created", "charge.succeeded", "payment_intent.succeeded",
                                        "checkout.session.completed"], "events")
    expect(all(verify(d)[0] for d in got), "every delivery is signed")
    snap = ev[-1]["data"]["object"]
    expect_eq((snap["object"], snap["payment_intent"], snap["payment_status"], snap["metadata"]),
              ("checkout.session", pi["id"], "paid", {"settled_invoice_id": "inv_1"}), "completed snapshot")
    x = api("GET", f"/v1/checkout/sessions/{cs['id']}", {"expand[]": "payment_intent"}).json()
    expect_eq((x["payment_intent"]["id"], x["payment_intent"]["status"]), (pi["id"], "succeeded"), "expand PI")
    lst = api("GET", "/v1/checkout/sessions", {"payment_intent": pi["id"]}).json()
    expect_eq([o["id"] for o in lst["data"]], [cs["id"]], "list by payment_intent")
    r = M.call("POST", f"/_mock/checkout_sessions/{cs['id']}/complete", "{}", {"Content-Type": "application/json"})
    expect_eq((r.status, r.json()["error"]), (409, "mock_bad_request"), "a complete session cannot complete again")
    r = api("POST", f"/v1/checkout/sessions/{cs['id']}/expire")
    expect_eq(r.status, 400, "a complete session cannot expire")
    ev = M.ctl("POST", "events", {"type": "checkout.session.completed", "id": cs["id"]})
    expect_eq(ev["data"]["object"]["id"], cs["id"], "control events know checkout sessions")


def test_checkout_delayed_payment_succeeds_or_fails_later():
    setup()
    hook()
    a, b = checkout().json(), checkout().json()
    for cs in (a, b):
        done = M.ctl("POST", f"checkout_sessions/{cs['id']}/complete", {"method": "delayed"})
        expect_eq((done["status"], done["payment_status"]), ("complete", "unpaid"), "complete but unpaid")
        pi = api("GET", f"/v1/payment_intents/{done['payment_intent']}").json()
        expect_eq((pi["status"], pi["payment_method_types"]), ("processing", ["bacs_debit"]), "GBP debit processing")
    R.wait(8)
    expect_eq([e["type"] for e in events()][:4], ["payment_intent.created", "charge.pending",
                                                  "payment_intent.processing", "checkout.session.completed"],
              "delayed completion events")
    R.clear()
    ok = M.ctl("POST", f"checkout_sessions/{a['id']}/async_succeed")
    expect_eq(ok["payment_status"], "paid", "paid later")
    expect_eq(api("GET", f"/v1/payment_intents/{ok['payment_intent']}").json()["status"], "succeeded", "PI")
    types = [json.loads(d["body"])["type"] for d in R.wait(3)]
    expect_eq(types, ["charge.succeeded", "payment_intent.succeeded", "checkout.session.async_payment_succeeded"],
              "async success events")
    R.clear()
    ko = M.ctl("POST", f"checkout_sessions/{b['id']}/async_fail")
    expect_eq((ko["status"], ko["payment_status"]), ("complete", "unpaid"), "failed: still unpaid")
    pi = api("GET", f"/v1/payment_intents/{ko['payment_intent']}").json()
    expect_eq((pi["status"], pi["last_payment_error"]["decline_code"]), ("requires_payment_method",
                                                                          "insufficient_funds"), "PI failed")
    expect_eq(api("GET", f"/v1/charges/{pi['latest_charge']}").json()["status"], "failed", "the pending charge fails")
    types = [json.loads(d["body"])["type"] for d in R.wait(3)]
    expect_eq(types, ["charge.failed", "payment_intent.payment_failed", "checkout.session.async_payment_failed"],
              "async failure events")
    r = M.call("POST", f"/_mock/checkout_sessions/{a['id']}/async_fail", "{}", {"Content-Type": "application/json"})
    expect_eq(r.status, 409, "nothing in progress any more")


def test_checkout_setup_mode_and_expiry():
    setup()
    hook()
    cs = checkout("setup", currency="gbp", **{"setup_intent_data[metadata][purpose]": "autopay"}).json()
    done = M.ctl("POST", f"checkout_sessions/{cs['id']}/complete")
    expect_eq((done["status"], done["payment_status"], done["payment_intent"]), ("complete", "no_payment_required",
                                                                                   None), "setup complete")
    si = api("GET", f"/v1/setup_intents/{done['setup_intent']}").json()
    expect_eq((si["status"], si["customer"], si["metadata"]), ("succeeded", "cus_A", {"purpose": "autopay"}), "seti")
    expect_eq(api("GET", f"/v1/payment_methods/{si['payment_method']}").json()["customer"], "cus_A", "attached")
    x = api("GET", f"/v1/checkout/sessions/{cs['id']}", {"expand[]": "setup_intent"}).json()
    expect_eq(x["setup_intent"]["id"], si["id"], "expand setup_intent")
    types = [json.loads(d["body"])["type"] for d in R.wait(4)]
    expect_eq(types, ["setup_intent.created", "setup_intent.succeeded", "payment_method.attached",
                      "checkout.session.completed"], "setup events")
    R.clear()
    e1, e2 = checkout().json(), checkout().json()
    r = api("POST", f"/v1/checkout/sessions/{e1['id']}/expire", headers={"Idempotency-Key": "exp-1"})
    expect_eq((r.status, r.json()["status"], r.json()["url"]), (200, "expired", None), "API expire")
    again = api("POST", f"/v1/checkout/sessions/{e1['id']}/expire", headers={"Idempotency-Key": "exp-1"})
    expect_eq(again.headers.get("idempotent-replayed"), "true", "expire replays under its key")
    expect_eq(M.ctl("POST", f"checkout_sessions/{e2['id']}/expire")["status"], "expired", "control expire")
    ev = [json.loads(d["body"]) for d in R.wait(2)]
    expect_eq([(e["type"], e["data"]["object"]["id"]) for e in ev],
              [("checkout.session.expired", e1["id"]), ("checkout.session.expired", e2["id"])], "expired events")
    expect(ev[0]["request"]["idempotency_key"] == "exp-1" and ev[1]["request"]["id"] is None, "request of each")
    r = M.call("POST", f"/_mock/checkout_sessions/{e1['id']}/complete", "{}", {"Content-Type": "application/json"})
    expect_eq(r.status, 409, "an expired session cannot complete")
    expect_eq(len(api("GET", "/v1/checkout/sessions", {"status": "expired"}).json()["data"]), 2, "list by status")


def test_checkout_list_created_filter_and_pagination():
    setup()
    ids = []
    for i in range(12):
        ids.append(M.ctl("PUT", f"objects/checkout_sessions/cs_test_{i:03d}",
                         {"amount_total": 100 + i, "currency": "gbp", "created": 1700000000 + i})["id"])
    seen, after = [], None
    while True:
        p = {"created[gte]": 1700000003, "limit": 4, **({"starting_after": after} if after else {})}
        page = api("GET", "/v1/checkout/sessions", p).json()
        expect_eq(page["url"], "/v1/checkout/sessions", "list url")
        seen += [o["id"] for o in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    expect_eq(seen, list(reversed(ids[3:])), "created[gte] over pages, newest first, each once")
    r = api("GET", "/v1/checkout/sessions", {"limit": 101})
    expect_eq(r.status, 400, "limit 101")
    s = M.ctl("GET", "stats")["calls"]["calls_by_path"]
    expect("GET /v1/checkout/sessions" in s, f"the list counts as one path: {sorted(s)}")


def start():
    global M, R
    M = Mock(MOCK, "stripe-mock")
    R = Receiver()


def stop():
    R.close()
    rc = M.stop()
    return rc, M.stderr()


if __name__ == "__main__":
    sys.exit(run_tests(globals(), start, stop))
