# SPDX-License-Identifier: MIT
"""test_gocardless.py: GoCardless deliveries through the real binary (POST /webhooks/gocardless): the
official signature vector, batches of several events, 204 / 498, duplicates, and named sources
(providers/PROVIDERS.md section 3.1)."""

import hashlib
import json

import harness as h
from harness import expect_eq, expect_problem

# The official test vector of gocardless-pro-python and gocardless-pro-ruby: this secret, the SDK's
# fixture body (fixtures/gocardless/sdk_webhook_body.json, trailing newline stripped) and this signature.
OFFICIAL_SECRET = "ED7D658C-D8EB-4941-948B-3973214F2D49"
OFFICIAL_SIGNATURE = "2693754819d3e32d7e8fcb13c729631f316c6de8dc1cf634d6527f1c07276e7e"

SINGLE_EVENT_FIXTURES = [
    "webhook_mandate_active.json",
    "webhook_mandate_cancelled.json",
    "webhook_payment_confirmed.json",
    "webhook_payment_failed.json",
    "webhook_payment_paid_out.json",
]
LINK = {"payments": "payment", "mandates": "mandate", "subscriptions": "subscription"}


def batch_of_fixtures():
    """One delivery holding the event of every single-event fixture, as GoCardless batches them."""
    events = []
    for name in SINGLE_EVENT_FIXTURES:
        events += json.loads(h.fixture("gocardless/" + name))["events"]
    body = json.dumps({"events": events, "meta": {"webhook_id": "WB0000TEST01"}}, indent=2).encode()
    return body, events


def rows(db, where="TRUE", *params):
    return h.sql_rows(
        db,
        "SELECT provider, source, event_id, event_type, resource_id, account, encode(body, 'hex'), status"
        f" FROM webhook_events WHERE {where} ORDER BY id",
        *params,
    )


def expect_accepted(resp, what):
    status, _, body = resp
    expect_eq(status, 204, f"{what}: status (body {body[:300]!r})")
    expect_eq(body, b"", f"{what}: body")


def test_official_vector():
    db = h.new_database("gc_official")
    body = h.fixture("gocardless/sdk_webhook_body.json")
    with h.Settled(db, env={"SETTLED_GOCARDLESS_WEBHOOK_SECRETS": OFFICIAL_SECRET}) as s:
        expect_accepted(s.post("/webhooks/gocardless", body, {"Webhook-Signature": OFFICIAL_SIGNATURE}), "SDK vector")
        # the same bytes with the newline the SDK strips: the MAC covers every byte
        expect_problem(
            s.post("/webhooks/gocardless", body + b"\n", {"Webhook-Signature": OFFICIAL_SIGNATURE}),
            498,
            "signature_mismatch",
            "SDK vector plus a newline",
        )
    got = rows(db)
    expect_eq(
        [r[:6] for r in got],
        [
            ["gocardless", "default", "EV00BD05S5VM2T", "subscriptions.created", "SB0003JJQ2MR06", None],
            ["gocardless", "default", "EV00BD05TB8K63", "mandates.created", "MD000AMA19XGEC", None],
        ],
        "provider, source, event_id, event_type, resource_id, account",
    )
    for row in got:
        expect_eq(bytes.fromhex(row[6]), body, f"{row[2]}: the whole delivery, byte for byte")


def test_batch_becomes_one_row_per_event():
    db = h.new_database("gc_batch")
    body, events = batch_of_fixtures()
    with h.Settled(db) as s:
        expect_accepted(s.post_gocardless(body), f"a batch of {len(events)}")
    got = rows(db)
    expect_eq(len(got), len(events), "rows")
    for ev, row in zip(events, got):
        expect_eq(
            row[2:6],
            [
                ev["id"],
                f"{ev['resource_type']}.{ev['action']}",
                ev["links"][LINK[ev["resource_type"]]],
                ev["links"]["organisation"],
            ],
            f"{ev['id']}: event_id, event_type, resource_id, account",
        )
        expect_eq(bytes.fromhex(row[6]), body, f"{ev['id']}: body")
        expect_eq(row[7], "pending", f"{ev['id']}: status")


def stored_bytes(db):
    """(bodies in inbox rows, bodies in deliveries, delivery rows): what the raw bytes of deliveries cost."""
    inline = int(h.sql_value(db, "SELECT coalesce(sum(octet_length(body)), 0) FROM inbox_events"))
    shared = int(h.sql_value(db, "SELECT coalesce(sum(octet_length(body)), 0) FROM webhook_deliveries"))
    return inline, shared, int(h.sql_value(db, "SELECT count(*) FROM webhook_deliveries"))


def test_batch_body_is_stored_once():
    """A batch of 600 events (about 100 KB, as GoCardless sends at most) stores its raw bytes once, not 600 times;
    every event still shows the whole delivery in webhook_events; a retry of the same batch stores nothing; a Stripe
    delivery (one event) stays one row with its body inline."""
    db = h.new_database("gc_once")
    template = json.loads(h.fixture("gocardless/webhook_payment_confirmed.json"))["events"][0]
    events = [dict(template, id=f"EVONCE{i:06d}", links=dict(template["links"], payment=f"PMONCE{i:06d}"))
              for i in range(600)]
    body = json.dumps({"events": events, "meta": {"webhook_id": "WB0000ONCE01"}}).encode()
    stripe = h.fixture("stripe/event_payment_intent_succeeded.json")
    with h.Settled(db) as s:
        expect_accepted(s.post_gocardless(body), "a batch of 600")
        expect_eq(stored_bytes(db), (0, len(body), 1), "raw bytes stored (inline, in deliveries, deliveries)")
        expect_accepted(s.post_gocardless(body), "the same batch again")
        expect_eq(stored_bytes(db), (0, len(body), 1), "raw bytes after the retry")
        status, _, _ = s.post_stripe(stripe)
        expect_eq(status, 200, "a Stripe delivery")
    expect_eq(stored_bytes(db), (len(stripe), len(body), 1), "raw bytes after a single-event delivery")
    expect_eq(int(h.sql_value(db, "SELECT count(*) FROM inbox_events")), 601, "inbox rows")
    expect_eq(int(h.sql_value(db, "SELECT count(*) FROM webhook_events WHERE provider = 'gocardless'"
                                  " AND md5(body) = $1 AND headers ? 'content-type'", hashlib.md5(body).hexdigest())), 600,
              "every event of the batch shows the whole delivery and its headers in webhook_events")
    expect_eq(int(h.sql_value(db, "SELECT count(*) FROM webhook_events WHERE provider = 'stripe'"
                                  " AND md5(body) = $1 AND delivery_id IS NULL", hashlib.md5(stripe).hexdigest())), 1,
              "the Stripe event, inline")


def test_bad_signature_is_498():
    db = h.new_database("gc_bad")
    body, _ = batch_of_fixtures()
    with h.Settled(db) as s:
        expect_problem(s.post_gocardless(body, secret="not-our-secret"), 498, "signature_mismatch", "wrong secret")
        expect_problem(s.post("/webhooks/gocardless", body), 498, "signature_missing", "no Webhook-Signature")
        expect_problem(
            s.post("/webhooks/gocardless", body, {"Webhook-Signature": h.sign_gocardless(body)[:-2]}),
            498,
            ("signature_malformed", "signature_mismatch"),
            "a truncated signature",
        )
        sig = h.sign_gocardless(body).upper()  # hex is hex, in either case (cn_hex32_decode)
        expect_accepted(s.post("/webhooks/gocardless", body, {"Webhook-Signature": sig}), "upper-case hex")
    expect_eq(len(rows(db)), 5, "rows (only the upper-case hex delivery)")


def test_duplicate_batch_adds_nothing():
    db = h.new_database("gc_dup")
    body, events = batch_of_fixtures()
    with h.Settled(db) as s:
        expect_accepted(s.post_gocardless(body), "first delivery")
        expect_accepted(s.post_gocardless(body), "the same batch again")
        # a retry holding one known event and one new one stores only the new one
        fresh = dict(events[0], id="EVTESTNEW00001")
        partial = json.dumps({"events": [events[2], fresh]}).encode()
        expect_accepted(s.post_gocardless(partial), "one known, one new")
    expect_eq([r[2] for r in rows(db)], [e["id"] for e in events] + ["EVTESTNEW00001"], "stored event ids")


def test_named_source_has_its_own_secret():
    db = h.new_database("gc_source")
    acme_secret = "acme-gocardless-secret"
    body = h.fixture("gocardless/webhook_payment_confirmed.json")
    env = {"SETTLED_GOCARDLESS_WEBHOOK_SECRETS__ACME": acme_secret}
    with h.Settled(db, env=env) as s:
        expect_accepted(s.post_gocardless(body, path="/webhooks/gocardless/acme", secret=acme_secret), "acme")
        expect_problem(
            s.post_gocardless(body, path="/webhooks/gocardless/acme"), 498, "signature_mismatch", "acme, default secret"
        )
        expect_problem(s.post_gocardless(body, secret=acme_secret), 498, "signature_mismatch", "default, acme secret")
        # the inbox is unique per source: the same event id under the default source is another row
        expect_accepted(s.post_gocardless(body), "default")
        expect_accepted(
            s.post_gocardless(body, path="/webhooks/gocardless/acme", secret=acme_secret), "acme again (duplicate)"
        )
    expect_eq(
        [r[1:3] for r in rows(db)],
        [["acme", "EVTESTGHYBZZQV"], ["default", "EVTESTGHYBZZQV"]],
        "source, event_id",
    )


def test_unknown_source_is_404():
    db = h.new_database("gc_unknown")
    body = h.fixture("gocardless/webhook_payment_confirmed.json")
    with h.Settled(db) as s:
        expect_problem(s.post_gocardless(body, path="/webhooks/gocardless/nope"), 404, "source_unknown", "nope")
        expect_problem(
            s.post_stripe(b'{"id":"evt_1","object":"event","type":"x.y"}', path="/webhooks/stripe/nope"),
            404,
            "source_unknown",
            "stripe/nope",
        )
    expect_eq(rows(db), [], "rows")


if __name__ == "__main__":
    h.run(globals())
