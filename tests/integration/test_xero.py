# SPDX-License-Identifier: MIT
"""test_xero.py: Xero deliveries through the real binary (POST /webhooks/xero): the intent-to-receive
rules (200 with an empty body and no cookies for a good signature, 401 empty for a bad one, well
under 5 s), derived event keys, and duplicates (providers/PROVIDERS.md section 2.1)."""

import json
import time

import harness as h
from harness import expect, expect_eq, expect_not_in

TENANT_A = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
TENANT_B = "5f1c1b7a-2f7e-4e57-9a43-0f2d0c6c8b11"
INVOICE = "0b4b2f7f-6a4c-4a8e-9c57-2d9a0e7c3f10"
CONTACT = "717f2bfc-c6d4-41fd-b238-3f2f0c0cf777"


def event(tenant, resource, category, kind, date):
    plural = {"INVOICE": "Invoices", "CONTACT": "Contacts", "CREDITNOTE": "CreditNotes"}[category.upper()]
    return {
        "resourceUrl": f"https://api.xero.com/api.xro/2.0/{plural}/{resource}",
        "resourceId": resource,
        "eventDateUtc": date,
        "eventType": kind,
        "eventCategory": category,
        "tenantId": tenant,
        "tenantType": "ORGANISATION",
    }


def delivery(events, seq=1, entropy="ENTROPYENTROPYENTROPY"):
    return json.dumps(
        {"events": events, "firstEventSequence": seq, "lastEventSequence": seq + len(events) - 1, "entropy": entropy},
        separators=(",", ":"),
    ).encode()


def key(tenant, resource, category, kind, date):
    return f"{tenant}:{resource}:{category.upper()}:{kind.upper()}:{date}"


def rows(db):
    return h.sql_rows(
        db,
        "SELECT provider, source, event_id, event_type, account, resource_id, encode(body, 'hex'), status"
        " FROM webhook_events ORDER BY id",
    )


def expect_bare(resp, status, what, started=None):
    """Xero's rules: the status, no body at all, no cookies, and (when started is given) fast."""
    got, headers, body = resp
    expect_eq(got, status, f"{what}: status")
    expect_eq(body, b"", f"{what}: body")
    expect_not_in("set-cookie", headers, f"{what}: response headers")
    if started is not None:
        took = time.monotonic() - started
        expect(took < 2.0, f"{what}: answered well under Xero's 5 s", f"{took:.2f}s")


def test_intent_to_receive():
    db = h.new_database("xero_itr")
    itr = h.fixture("xero/webhook_intent_to_receive.json")
    # Xero sends a series of posts, some signed correctly and some deliberately not, and wants 200 for
    # each good one and 401 for each bad one, in whatever order they come.
    sequence = [True, False, True, True, False, False, True, False]
    with h.Settled(db) as s:
        for i, good in enumerate(sequence):
            body = itr.replace(b"S0m3r4Nd0mt3xt", f"entropy{i:04d}".encode())
            sig = h.sign_xero(body) if good else h.sign_xero(body, "not-the-webhook-key")
            started = time.monotonic()
            resp = s.post("/webhooks/xero", body, {"x-xero-signature": sig})
            expect_bare(resp, 200 if good else 401, f"post {i} ({'good' if good else 'bad'} signature)", started)
        # the fixture itself, as Xero's page shows it
        expect_bare(s.post_xero(itr), 200, "the fixture")
        expect_bare(s.post("/webhooks/xero", itr), 401, "no x-xero-signature")
        expect_bare(s.post("/webhooks/xero", itr, {"x-xero-signature": "bm90IGEgbWFj"}), 401, "a short signature")
    expect_eq(rows(db), [], "rows after intent-to-receive (it carries no events)")


def test_two_events_become_two_rows():
    db = h.new_database("xero_two")
    e1 = event(TENANT_A, INVOICE, "INVOICE", "UPDATE", "2024-06-21T01:15:39.902")
    e2 = event(TENANT_B, CONTACT, "CONTACT", "CREATE", "2018-02-09T09:18:28.917Z")
    body = delivery([e1, e2])
    with h.Settled(db) as s:
        expect_bare(s.post_xero(body), 200, "two events")
    got = rows(db)
    expect_eq(len(got), 2, "rows")
    want = [
        ("xero", "default", key(TENANT_A, INVOICE, "INVOICE", "UPDATE", e1["eventDateUtc"]), "INVOICE.UPDATE",
         TENANT_A, INVOICE),
        ("xero", "default", key(TENANT_B, CONTACT, "CONTACT", "CREATE", e2["eventDateUtc"]), "CONTACT.CREATE",
         TENANT_B, CONTACT),
    ]
    for i, (row, w) in enumerate(zip(got, want)):
        expect_eq(tuple(row[:6]), w, f"row {i}: provider, source, event_id, event_type, account, resource_id")
        expect_eq(bytes.fromhex(row[6]), body, f"row {i}: the whole delivery, byte for byte")
        expect_eq(row[7], "pending", f"row {i}: status")


def test_the_official_example_is_stored():
    db = h.new_database("xero_example")
    body = h.fixture("xero/webhook_contact_update.json")
    e = json.loads(body)["events"][0]
    with h.Settled(db) as s:
        expect_bare(s.post_xero(body), 200, "fixtures/xero/webhook_contact_update.json")
    expect_eq(
        [r[2:4] for r in rows(db)],
        [[key(e["tenantId"], e["resourceId"], "CONTACT", "UPDATE", e["eventDateUtc"]), "CONTACT.UPDATE"]],
        "event_id, event_type",
    )


def test_duplicates_and_mixed_case():
    db = h.new_database("xero_dup")
    date = "2024-07-01T10:00:00.123"
    upper = event(TENANT_A, INVOICE, "INVOICE", "UPDATE", date)
    body = delivery([upper])
    with h.Settled(db) as s:
        expect_bare(s.post_xero(body), 200, "first delivery")
        expect_bare(s.post_xero(body), 200, "the same delivery again")
        # Xero retries may come with another sequence number and entropy: the event is the same
        expect_bare(s.post_xero(delivery([upper], seq=7, entropy="OTHER")), 200, "same event, other envelope")
        # Xero's own pages show "Update": it must be the same key as "UPDATE"
        mixed = event(TENANT_A, INVOICE, "Invoice", "Update", date)
        expect_bare(s.post_xero(delivery([mixed])), 200, "mixed-case copy of a stored event")
        expect_eq(len(rows(db)), 1, "rows after four deliveries of one event")
        # a new event in mixed case is stored under the upper-case key and type
        fresh = event(TENANT_A, INVOICE, "invoice", "Update", "2024-07-01T10:05:00.000")
        expect_bare(s.post_xero(delivery([fresh])), 200, "new mixed-case event")
        # a delivery mixing a known event and a new one stores only the new one
        other = event(TENANT_B, INVOICE, "INVOICE", "UPDATE", date)
        expect_bare(s.post_xero(delivery([upper, other])), 200, "one known, one new")
    expect_eq(
        [r[2:4] for r in rows(db)],
        [
            [key(TENANT_A, INVOICE, "INVOICE", "UPDATE", date), "INVOICE.UPDATE"],
            [key(TENANT_A, INVOICE, "INVOICE", "UPDATE", "2024-07-01T10:05:00.000"), "INVOICE.UPDATE"],
            [key(TENANT_B, INVOICE, "INVOICE", "UPDATE", date), "INVOICE.UPDATE"],
        ],
        "event_id, event_type of the stored rows",
    )


def test_bad_signature_stores_nothing_and_an_unparsable_body_is_kept_ignored():
    db = h.new_database("xero_bad")
    good = delivery([event(TENANT_A, INVOICE, "INVOICE", "UPDATE", "2024-06-21T01:15:39.902")])
    with h.Settled(db) as s:
        expect_bare(s.post_xero(good, key="wrong-key"), 401, "events signed with another key")
        expect_bare(s.post("/webhooks/xero", good), 401, "events without a signature")
        expect_bare(
            s.post("/webhooks/xero", good, {"x-xero-signature": h.sign_xero(good) + "x"}), 401, "signature + junk"
        )
    expect_eq(rows(db), [], "rows")
    with h.Settled(db) as s:
        # a good signature over a body that is not Xero's envelope: 200 as intent-to-receive requires, no body, and
        # the delivery is kept as one ignored row (never processed)
        for bad in (b'{"events": [', b"[]", b'{"events": {}}', b"", b'{"events":[{"resourceId":"x"}]}'):
            expect_bare(s.post_xero(bad), 200, f"signed body {bad!r}")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM webhook_events WHERE status = 'ignored' AND event_type = "
                              "'unparsable'"), "5", "the unparsable deliveries, kept as ignored")


if __name__ == "__main__":
    h.run(globals())
