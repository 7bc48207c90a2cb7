# SPDX-License-Identifier: MIT
"""test_stripe.py: Stripe deliveries through the real binary (POST /webhooks/stripe): signature rules
of providers/PROVIDERS.md section 1.1, the reply contract of DESIGN.md section 2, and what lands in
webhook_events."""

import glob
import json
import os
import time

import harness as h
from harness import expect, expect_eq, expect_not_in, expect_problem


def stripe_fixtures():
    return sorted(glob.glob(os.path.join(h.source_dir(), "fixtures", "stripe", "event_*.json")))


def rows(db, where="TRUE", *params):
    return h.sql_rows(
        db,
        "SELECT provider, source, event_id, event_type, resource_id, account, status, attempts,"
        " encode(body, 'hex'), correlation_id, verified_at IS NOT NULL, received_at IS NOT NULL"
        f" FROM webhook_events WHERE {where} ORDER BY id",
        *params,
    )


def count(db):
    return int(h.sql_value(db, "SELECT count(*) FROM webhook_events"))


def expect_accepted(resp, what):
    status, headers, body = resp
    expect_eq(status, 200, f"{what}: status (body {body[:300]!r})")
    expect_eq(headers.get("content-type", "").split(";")[0], "application/json", f"{what}: Content-Type")
    expect_eq(json.loads(body), {"received": True}, f"{what}: body")


def unique_id(path):
    """The fixture's bytes with its event id made unique to the file (several fixtures share an id),
    every other byte untouched, and the decoded event."""
    body = open(path, "rb").read()
    old = json.loads(body)["id"]
    stem = os.path.basename(path)[len("event_") : -len(".json")]
    body = body.replace(old.encode(), f"evt_fx_{stem}".encode(), 1)
    event = json.loads(body)
    expect_eq(event["id"], f"evt_fx_{stem}", f"{path}: the event id is the first occurrence of {old}")
    return body, event


def test_every_fixture_is_stored():
    paths = stripe_fixtures()
    expect(len(paths) >= 10, "fixtures/stripe/event_*.json are there", paths)
    db = h.new_database("stripe_fixtures")
    deliveries = [unique_id(p) for p in paths]
    with h.Settled(db) as s:
        for path, (body, _) in zip(paths, deliveries):
            expect_accepted(s.post_stripe(body), os.path.basename(path))
    stored = rows(db)
    expect_eq(len(stored), len(paths), "one row per fixture")
    for path, (body, event), row in zip(paths, deliveries, stored):
        name = os.path.basename(path)
        provider, source, event_id, event_type, resource_id, account, status, attempts, hexbody, corr, ver, rec = row
        expect_eq(provider, "stripe", f"{name}: provider")
        expect_eq(source, "default", f"{name}: source")
        expect_eq(event_id, event["id"], f"{name}: event_id")
        expect_eq(event_type, event["type"], f"{name}: event_type")
        expect_eq(resource_id, event["data"]["object"]["id"], f"{name}: resource_id")
        expect_eq(account, None, f"{name}: account (no Connect account in the fixture)")
        expect_eq(status, "pending", f"{name}: status")
        expect_eq(attempts, "0", f"{name}: attempts")
        expect_eq(bytes.fromhex(hexbody), body, f"{name}: body stored byte for byte")
        expect(corr, f"{name}: correlation_id is set", corr)
        expect_eq((ver, rec), ("t", "t"), f"{name}: verified_at and received_at are set")


def test_fixtures_sharing_an_id_are_one_event():
    # The fixtures come from a project that reused event ids across files: to the inbox, a second
    # delivery with a known id is a duplicate, whatever its type, and the first delivery wins.
    paths = stripe_fixtures()
    db = h.new_database("stripe_shared_ids")
    first = {}
    with h.Settled(db) as s:
        for path in paths:
            body = open(path, "rb").read()
            expect_accepted(s.post_stripe(body), os.path.basename(path))
            event = json.loads(body)
            first.setdefault(event["id"], (event["type"], body))
    stored = h.sql_rows(db, "SELECT event_id, event_type, encode(body, 'hex') FROM webhook_events ORDER BY event_id")
    expect_eq(
        [(r[0], r[1], bytes.fromhex(r[2])) for r in stored],
        sorted((k, t, b) for k, (t, b) in first.items()),
        "one row per distinct event id, from its first delivery",
    )


def test_second_secret_of_a_rotation():
    db = h.new_database("stripe_rotation")
    old, new = h.STRIPE_SECRET, h.STRIPE_SECRET_2
    env = {"SETTLED_STRIPE_WEBHOOK_SECRETS": f"{old},{new}"}
    base = json.loads(h.fixture("stripe/event_charge_succeeded.json"))
    with h.Settled(db, env=env) as s:
        one = dict(base, id="evt_rotation_new")
        body = json.dumps(one).encode()
        expect_accepted(s.post_stripe(body, secret=new), "signed with the second secret")
        two = dict(base, id="evt_rotation_old")
        body = json.dumps(two).encode()
        expect_accepted(s.post_stripe(body, secret=old), "signed with the first secret")
        # During a roll Stripe sends one v1 per secret; one match is enough, wherever it is.
        three = dict(base, id="evt_rotation_both")
        body = json.dumps(three).encode()
        t = int(time.time())
        wrong = h.sign_stripe(body, "whsec_not_ours", t).split(",v1=")[1]
        right = h.sign_stripe(body, new, t).split(",v1=")[1]
        expect_accepted(s.post_stripe(body, headers={"Stripe-Signature": f"t={t},v1={wrong},v1={right}"}), "two v1")
        # v0 is not the scheme: a valid MAC under v0 alone proves nothing.
        four = dict(base, id="evt_rotation_v0")
        body = json.dumps(four).encode()
        v0 = h.sign_stripe(body, new, t).split(",v1=")[1]
        expect_problem(
            s.post_stripe(body, headers={"Stripe-Signature": f"t={t},v0={v0}"}),
            400,
            ("signature_mismatch", "signature_malformed"),
            "only a v0 signature",
        )
        # A secret that is not configured.
        expect_problem(s.post_stripe(body, secret="whsec_elsewhere"), 400, "signature_mismatch", "unknown secret")
    expect_eq(
        [r[2] for r in rows(db)],
        ["evt_rotation_new", "evt_rotation_old", "evt_rotation_both"],
        "stored event ids",
    )


def test_bad_signature_stores_nothing():
    db = h.new_database("stripe_bad")
    body = h.fixture("stripe/event_charge_refunded.json")
    with h.Settled(db) as s:
        expect_problem(s.post_stripe(body, secret="whsec_wrong"), 400, "signature_mismatch", "wrong secret")
        # the signature covers every byte: one more space breaks it
        sig = h.sign_stripe(body)
        expect_problem(
            s.post("/webhooks/stripe", body + b" ", {"Stripe-Signature": sig}), 400, "signature_mismatch", "body changed"
        )
        # a signature for another timestamp
        t = int(time.time())
        mac = h.sign_stripe(body, t=t).split(",v1=")[1]
        expect_problem(
            s.post("/webhooks/stripe", body, {"Stripe-Signature": f"t={t - 1},v1={mac}"}),
            400,
            "signature_mismatch",
            "t altered",
        )
    expect_eq(count(db), 0, "rows after bad signatures")


def test_stale_timestamp():
    db = h.new_database("stripe_stale")
    base = json.loads(h.fixture("stripe/event_customer_updated.json"))
    now = int(time.time())
    with h.Settled(db) as s:  # default tolerance: 300 s
        body = json.dumps(dict(base, id="evt_stale")).encode()
        expect_problem(s.post_stripe(body, t=now - 400), 400, "timestamp_stale", "t 400 s old")
        body = json.dumps(dict(base, id="evt_recent")).encode()
        expect_accepted(s.post_stripe(body, t=now - 200), "t 200 s old")
        # The SDKs reject only stale timestamps, never future ones (PROVIDERS.md 1.1).
        body = json.dumps(dict(base, id="evt_future")).encode()
        expect_accepted(s.post_stripe(body, t=now + 600), "t 600 s ahead")
    expect_eq([r[2] for r in rows(db)], ["evt_recent", "evt_future"], "stored event ids")

    db = h.new_database("stripe_tolerance")
    with h.Settled(db, env={"SETTLED_STRIPE_TOLERANCE": 10}) as s:
        body = json.dumps(dict(base, id="evt_tol_10")).encode()
        expect_problem(s.post_stripe(body, t=now - 60), 400, "timestamp_stale", "t 60 s old, tolerance 10")
    with h.Settled(db, env={"SETTLED_STRIPE_TOLERANCE": 0}) as s:
        body = json.dumps(dict(base, id="evt_tol_0")).encode()
        expect_accepted(s.post_stripe(body, t=now - 100000), "tolerance 0 disables the check")
    expect_eq([r[2] for r in rows(db)], ["evt_tol_0"], "stored event ids")


def test_missing_or_malformed_header():
    db = h.new_database("stripe_header")
    body = h.fixture("stripe/event_setup_intent_succeeded.json")
    with h.Settled(db) as s:
        expect_problem(s.post("/webhooks/stripe", body), 400, "signature_missing", "no Stripe-Signature")
        for value in ("garbage", "t=abc,v1=00", "v1=" + "0" * 64, "t=123", ""):
            expect_problem(
                s.post("/webhooks/stripe", body, {"Stripe-Signature": value}),
                400,
                ("signature_malformed", "signature_mismatch", "signature_missing"),
                f"Stripe-Signature {value!r}",
            )
        expect_problem(
            s.post("/webhooks/stripe", body, {"Stripe-Signature": "garbage"}), 400, "signature_malformed", "garbage"
        )
    expect_eq(count(db), 0, "rows")


def test_duplicate_delivery_gets_the_same_answer_and_no_row():
    db = h.new_database("stripe_dup")
    body = h.fixture("stripe/event_payment_intent_succeeded.json")
    with h.Settled(db) as s:
        first = s.post_stripe(body)
        expect_accepted(first, "first delivery")
        time.sleep(1.1)  # Stripe re-signs every retry
        second = s.post_stripe(body)
        expect_accepted(second, "second delivery")
        expect_eq(second[2], first[2], "the duplicate's body")
        # a retry whose bytes differ (pending_webhooks went down) is still the same event
        event = json.loads(body)
        event["pending_webhooks"] = 1
        changed = json.dumps(event).encode()
        expect_accepted(s.post_stripe(changed), "same id, other bytes")
    stored = rows(db)
    expect_eq(len(stored), 1, "rows for one event delivered three times")
    expect_eq(bytes.fromhex(stored[0][8]), body, "the first delivery's bytes are kept")


def test_raw_body_is_stored_byte_for_byte():
    db = h.new_database("stripe_raw")
    # Odd but valid JSON: CRLF line ends, tabs, escaped and literal non-ASCII, keys in an odd order,
    # a trailing newline. Whatever the bytes, they come back exactly.
    body = (
        b'{\r\n\t"type" : "customer.updated",\r\n\t"object":"event", "id":"evt_raw_1",\r\n'
        b'\t"data": {"object": {"id": "cus_raw", "name": "Ren\xc3\xa9e \\u00e9\\ud83d\\ude00", "n": 1.50e+2}},'
        b'\r\n\t"created": 1619697430, "livemode": false }\r\n'
    )
    with h.Settled(db) as s:
        expect_accepted(s.post_stripe(body), "odd JSON")
    stored = rows(db)
    expect_eq(len(stored), 1, "rows")
    expect_eq(bytes.fromhex(stored[0][8]), body, "stored body")
    expect_eq(stored[0][4], "cus_raw", "resource_id")


def test_headers_column_has_no_signature():
    db = h.new_database("stripe_headers")
    body = h.fixture("stripe/event_payment_method_attached.json")
    sig = h.sign_stripe(body)
    with h.Settled(db) as s:
        expect_accepted(
            s.post("/webhooks/stripe", body, {"Stripe-Signature": sig, "User-Agent": "Stripe/1.0"}), "delivery"
        )
    text = h.sql_value(db, "SELECT headers::text FROM webhook_events")
    headers = json.loads(text)
    expect(isinstance(headers, dict), "headers is a JSON object", headers)
    expect_not_in("stripe-signature", {k.lower() for k in headers}, "header names stored")
    expect_not_in(sig.split(",v1=")[1], text, "headers column")
    expect_not_in(h.STRIPE_SECRET, text, "headers column")


def test_header_values_are_stored_as_valid_json():
    """Kept header values are reduced to printable ASCII and escaped, so quotes, backslashes and bytes outside
    ASCII never break the JSON the row is inserted with (the delivery is still accepted and stored)."""
    db = h.new_database("stripe_header_escaping")
    body = h.fixture("stripe/event_payment_method_attached.json")
    agent = 'Stripe/1.0 (+"quoted" \\ back\\slash) caf\xe9'.encode("latin-1")
    with h.Settled(db) as s:
        expect_accepted(
            s.post(
                "/webhooks/stripe",
                body,
                {"Stripe-Signature": h.sign_stripe(body), "User-Agent": agent, "Origin": "x" * 600},
            ),
            "delivery",
        )
    headers = json.loads(h.sql_value(db, "SELECT headers::text FROM webhook_events"))
    expect_eq(headers.get("user-agent"), 'Stripe/1.0 (+"quoted" \\ back\\slash) caf?', "user-agent, escaped")
    expect_eq(headers.get("origin"), "x" * 512, "a long value is cut at 512 bytes")


def test_connect_account_is_recorded():
    db = h.new_database("stripe_connect")
    event = json.loads(h.fixture("stripe/event_charge_dispute_created.json"))
    event["account"] = "acct_1ConnectTest"
    with h.Settled(db) as s:
        expect_accepted(s.post_stripe(json.dumps(event).encode()), "Connect event")
    expect_eq(
        h.sql_rows(db, "SELECT account, resource_id FROM webhook_events"),
        [["acct_1ConnectTest", event["data"]["object"]["id"]]],
        "account and resource_id",
    )


if __name__ == "__main__":
    h.run(globals())
