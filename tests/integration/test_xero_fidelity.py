# SPDX-License-Identifier: MIT
"""test_xero_fidelity.py: what settled asks Xero for, and for whom, through the real binary, a real PostgreSQL and
the project's mock Xero (tests/mock/xero_api.py; PROVIDERS.md section 2):

- unit amounts: every Invoices and CreditNotes call asks for unitdp=4 (the webhook refetch and `settled sync`),
  so a line's UnitAmount 1.2345 is mirrored as 1.2345, where the mock, like Xero, answers 1.23 to a call that
  does not ask;
- credit notes: every invoice a credit note is allocated to is refetched, in calls of 50 ids, however many
  there are, also when one of those calls fails and the event is retried;
- one Xero app, several organisations: an event is routed by its tenantId to every organisation connected to
  that tenant, each fetching with its own token set and matching and auditing in its own organisation, whether
  or not the organisation of the webhook source is one of them; an organisation needing re-authorisation does
  not hold back the others.
"""

import json
import time
import urllib.parse
import uuid

import harness as h
import pipelinelib as pl
from harness import expect, expect_eq, expect_in

_mock = None


def mock():
    global _mock
    pl.require("SETTLED_TEST_PG_URL", "SETTLED_TEST_REDIS_URL", "SETTLED_BIN", "SETTLED_SOURCE_DIR")
    if _mock is None:
        _mock = pl.Mock()
    return _mock


def _query(call):
    return dict(urllib.parse.parse_qsl(call.get("query") or ""))


def _line_units(db, iid):
    return h.sql_rows(db, "SELECT quantity::text, unit_amount::text, line_amount::text FROM xero_invoice_lines"
                          " WHERE invoice_id = $1 ORDER BY position", iid)


# ---------------------------------------------------------------------------------------------------
# 1. unitdp=4


def _credit_note_with_line(cnid, updated_ms, unit):
    """A credit note with one line item (pl.credit_note has none)."""
    text = pl.credit_note(cnid, updated_ms, "2.35")
    line = pl.line_item(str(uuid.uuid5(uuid.UUID(cnid), "l")), "credit line", "1.0000", unit, "2.35")
    return text[:-1] + f", \"LineItems\": [{line}]}}"


def test_every_invoice_and_credit_note_call_asks_for_four_place_unit_amounts():
    """An invoice line with UnitAmount 1.2345 and a credit-note line with 2.3456, refetched for webhooks, are
    mirrored with their four places; the mock answers 1.23 to the same call without unitdp=4 (so the test can
    tell), and every Invoices and CreditNotes call settled made carries unitdp=4 (Contacts calls do not need it).
    Then the invoice changes in Xero without a webhook (UnitAmount 5.6789) and `settled sync xero` pages it in
    with four places too."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "fid_unitdp")
    iid, cnid, cid = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "2.47", lines=[
        pl.line_item(str(uuid.uuid4()), "four places", "2.0000", "1.2345", "2.47")]))
    m.put(t, "creditnotes", cnid, _credit_note_with_line(cnid, pl.BASE_MS, "2.3456"))
    m.put(t, "contacts", cid, pl.contact(cid, pl.BASE_MS, "Unitdp Contact"))
    m.ctl("DELETE", "requests")
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0)
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE"), pl.xero_event(t, cnid, "CREDITNOTE"),
                                pl.xero_event(t, cid, "CONTACT")]))
        expect_eq(pl.wait_drained(db, 30, expect_rows=3), {"done": 3}, "inbox rows")
    expect_eq(_line_units(db, iid), [["2.0000", "1.2345", "2.4700"]], "the invoice line keeps its four places")
    expect_eq(h.sql_value(db, "SELECT raw->'LineItems'->0->>'UnitAmount' FROM xero_credit_notes"
                              " WHERE credit_note_id = $1", cnid), "2.3456", "the credit-note line too")
    calls = m.api_calls()
    for coll in ("Invoices", "CreditNotes"):
        mine = [c for c in calls if c["path"].startswith(f"/api.xro/2.0/{coll}")]
        expect(mine, f"settled called {coll}", calls)
        expect_eq([_query(c).get("unitdp") for c in mine], ["4"] * len(mine), f"unitdp of every {coll} call")
    expect(all("unitdp" not in _query(c) for c in calls if c["path"].startswith("/api.xro/2.0/Contacts")),
           "Contacts calls carry no unitdp", calls)

    # the same call without unitdp=4, with an access token of our own: Xero's (and the mock's) default is 2 places
    m.ctl("POST", "authorisations", {"access_token": "AT-FID-PROBE", "tenants": [t]})
    probe = {"Authorization": "Bearer AT-FID-PROBE", "xero-tenant-id": t, "Accept": "application/json"}
    status, _, body = m.call("GET", f"/api.xro/2.0/Invoices?page=1&IDs={iid}", headers=probe)
    expect_eq(status, 200, "the probe call")
    expect_eq(str(json.loads(body, parse_float=str)["Invoices"][0]["LineItems"][0]["UnitAmount"]), "1.23",
              "without unitdp=4 the mock rounds the unit amount to 2 places (as Xero does)")

    # drift without a webhook: the sync's pages ask for four places as well
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS + 1000, "11.36", lines=[
        pl.line_item(str(uuid.uuid4()), "changed", "2.0000", "5.6789", "11.36")]))
    m.ctl("DELETE", "requests")
    res = h.run_settled(["sync", "xero"], pl.settled_env(m, db), timeout=120)
    expect_eq(res.returncode, 0, f"settled sync xero exit code (stderr {res.stderr[-2000:]!r})")
    expect_eq(_line_units(db, iid), [["2.0000", "5.6789", "11.3600"]], "the synced line keeps its four places")
    pages = [c for c in m.api_calls() if c["path"].startswith(("/api.xro/2.0/Invoices", "/api.xro/2.0/CreditNotes"))]
    expect(pages, "the sync paged invoices and credit notes", m.api_calls())
    expect_eq([_query(c).get("unitdp") for c in pages], ["4"] * len(pages), "unitdp of every sync page")


# ---------------------------------------------------------------------------------------------------
# 2. Credit-note allocations


def _allocated_credit_note(cnid, updated_ms, invoice_ids):
    allocations = ", ".join(
        '{"Amount": 0.01, "Date": "%s", "Invoice": {"InvoiceID": "%s"}}' % (pl.ms_date(pl.BASE_MS), i)
        for i in invoice_ids)
    total = f"{len(invoice_ids) / 100:.2f}"
    text = pl.credit_note(cnid, updated_ms, total)
    return text.replace('"Allocations": []', f'"Allocations": [{allocations}]')


def _load_invoices(m, t, ids):
    docs = [pl.invoice(iid, pl.BASE_MS + k, f"{k + 1}.00", amount_due=f"{k + 1}.00", lines=[
        pl.line_item(str(uuid.uuid5(uuid.UUID(iid), "l")), f"line {k}", "1.0000", f"{k + 1}.00", f"{k + 1}.00")])
        for k, iid in enumerate(ids)]
    m.load('{"tenants": {"%s": {"invoices": [%s]}}}' % (t, ", ".join(docs)))


def _invoice_batches(m, t):
    """The ids of each Invoices call settled made for tenant t, in order."""
    return [[x for x in _query(c).get("IDs", "").split(",") if x]
            for c in m.api_calls("Invoices", tenant=t)]


def test_credit_note_allocated_to_250_invoices_refetches_every_one():
    """A credit note allocated to 250 invoices (more than the 4 x 50 a round used to plan): one CREDITNOTE event
    refetches all 250, in 5 calls of at most 50 ids that together name each invoice once, and all 250 are
    mirrored."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "fid_alloc")
    ids = sorted(str(uuid.uuid4()) for _ in range(250))
    _load_invoices(m, t, ids)
    cnid = str(uuid.uuid4())
    m.put(t, "creditnotes", cnid, _allocated_credit_note(cnid, pl.BASE_MS, ids))
    m.ctl("DELETE", "requests")
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0)
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(t, cnid, "CREDITNOTE")]))
        expect_eq(pl.wait_drained(db, 60, expect_rows=1), {"done": 1}, "inbox rows")
    expect_eq(h.sql_value(db, "SELECT jsonb_array_length(allocations) FROM xero_credit_notes"
                              " WHERE credit_note_id = $1", cnid), "250", "the credit note's allocations")
    batches = _invoice_batches(m, t)
    expect_eq(len(batches), 5, f"Invoices calls (250 ids, 50 a call): sizes {[len(b) for b in batches]}")
    expect(all(len(b) <= 50 for b in batches), "at most 50 ids a call", [len(b) for b in batches])
    named = [x.lower() for b in batches for x in b]
    expect_eq(sorted(named), ids, "the calls name every allocated invoice once")
    expect_eq(h.sql_rows(db, "SELECT count(*), count(DISTINCT invoice_id), sum(total)::text FROM xero_invoices"
                             " WHERE tenant_id = $1", t), [["250", "250", f"{250 * 251 // 2}.0000"]],
              "all 250 invoices mirrored (count, distinct, sum of totals 1 + ... + 250)")
    expect_eq(m.stats()["violations"], 0, "rate-limit violations at the mock")


def test_allocated_invoices_are_all_refetched_when_a_batch_fails_and_the_event_is_retried():
    """The third of five invoice calls of a credit note's allocations fails (500). The credit note itself was
    applied, so the retry finds it unchanged: it must still refetch every allocated invoice (the SQL names the
    allocations of an unchanged credit note), and all 250 end up mirrored."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "fid_alloc_retry")
    ids = sorted(str(uuid.uuid4()) for _ in range(250))
    _load_invoices(m, t, ids)
    cnid = str(uuid.uuid4())
    m.put(t, "creditnotes", cnid, _allocated_credit_note(cnid, pl.BASE_MS, ids))
    m.ctl("DELETE", "requests")
    # the first matching rule applies: two invoice calls pass untouched, the third gets a 500
    m.faults([{"mode": "slow", "delay_ms": 0, "count": 2, "tenant": t, "path_prefix": "/api.xro/2.0/Invoices"},
              {"mode": "500", "count": 1, "tenant": t, "path_prefix": "/api.xro/2.0/Invoices"}])
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0, SETTLED_RETRY_SCHEDULE="100ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms")
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(t, cnid, "CREDITNOTE")]))
        expect_eq(pl.wait_drained(db, 60, expect_rows=1), {"done": 1}, "inbox rows")
    expect_eq(h.sql_rows(db, "SELECT status, attempts FROM webhook_events"), [["done", "2"]],
              "the event failed once and was retried")
    statuses = [c["status"] for c in m.api_calls("Invoices", tenant=t)]
    expect_eq(statuses, [200, 200, 500, 200, 200, 200, 200, 200], "invoice calls: 2 + the failure, then all 5 again")
    expect_eq(len(m.api_calls("CreditNotes", tenant=t)), 2, "the credit note was fetched once per attempt")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM xero_invoices WHERE tenant_id = $1", t), "250",
              "every allocated invoice mirrored after the retry")


# ---------------------------------------------------------------------------------------------------
# 3. One Xero app, several organisations

OTHER = "beta"  # the second organisation's slug


def _two_organisations(m, tenants_a, tenants_b, prefix):
    """A database where the default organisation (that of the webhook source) connects tenants_a with one
    authorisation and the organisation OTHER connects tenants_b with another, both through the same Xero app.
    Returns (db, org_a, org_b, auth_a, auth_b): organisation ids and the mock's authEventIds."""
    m.ctl("POST", "reset")
    m.ctl("PUT", "app", {"client_id": pl.CLIENT_ID, "client_secret": pl.CLIENT_SECRET})
    auth = {}
    for rt, tenants in (("RT-ORG-A", tenants_a), ("RT-ORG-B", tenants_b)):
        auth[rt] = m.ctl("POST", "authorisations", {"refresh_token": rt, "tenants": tenants})["authEventId"]
    db = h.new_database(prefix)
    pl.connect(m, db, "RT-ORG-A")
    res = h.run_settled(["connect", "xero", "--refresh-token", "RT-ORG-B", "--organisation", OTHER],
                        pl.settled_env(m, db), timeout=120)
    expect_eq(res.returncode, 0, f"settled connect xero --organisation {OTHER} (stderr {res.stderr[-2000:]!r})")
    org_a = h.sql_value(db, "SELECT id FROM organisations WHERE slug = 'default'")
    org_b = h.sql_value(db, "SELECT id FROM organisations WHERE slug = $1", OTHER)
    expect_eq(h.sql_value(db, "SELECT count(*) FROM xero_tenants"), str(len(tenants_a) + len(tenants_b)),
              "connections")
    return db, org_a, org_b, auth["RT-ORG-A"], auth["RT-ORG-B"]


def test_two_organisations_sharing_one_xero_app_both_get_the_mirror():
    """Organisations A (the webhook source's) and B both connected tenant T, each with its own token set; B also
    connected T2, which A did not. One INVOICE and one CONTACT event of T update both mirrors: each organisation's
    rows are fetched with its own token set (the mock logs which authorisation made each call), audited in its own
    chain, and the contact is matched to each organisation's own customer. An event of T2 is routed to B alone
    (today's code failed it as 'not connected'). Every row is done, once."""
    m = mock()
    t, t2 = pl.new_tenant(), pl.new_tenant()
    db, org_a, org_b, auth_a, auth_b = _two_organisations(m, [t], [t, t2], "fid_orgs")
    iid, cid, iid2 = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "12.34", contact_id=cid, lines=[
        pl.line_item(str(uuid.uuid4()), "shared", "1.0000", "12.34", "12.34")]))
    m.put(t, "contacts", cid, pl.contact(cid, pl.BASE_MS, "Shared Customer", "shared@example.com"))
    m.put(t2, "invoices", iid2, pl.invoice(iid2, pl.BASE_MS, "56.78"))
    customer = {}
    for org in (org_a, org_b):
        h.sql(db, "INSERT INTO customers (organisation_id, name, email)"
                  " VALUES ($1, 'Shared Customer', 'shared@example.com')", org)
        customer[org] = h.sql_value(db, "SELECT id FROM customers WHERE organisation_id = $1", org)
    m.ctl("DELETE", "requests")
    env = pl.settled_env(m, db, SETTLED_WORKERS=2, SETTLED_XERO_COALESCE_MS=0)
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE"), pl.xero_event(t, cid, "CONTACT"),
                                pl.xero_event(t2, iid2, "INVOICE")]))
        expect_eq(pl.wait_drained(db, 30, expect_rows=3), {"done": 3}, "inbox rows")
    expect_eq(h.sql_rows(db, "SELECT DISTINCT organisation_id::text FROM webhook_events"), [[org_a]],
              "every event was stored under the webhook source's organisation (A)")
    expect_eq(h.sql_rows(db, "SELECT organisation_id::text, tenant_id::text, total::text FROM xero_invoices"
                             " ORDER BY organisation_id, tenant_id"),
              sorted([[org_a, t, "12.3400"], [org_b, t, "12.3400"], [org_b, t2, "56.7800"]]),
              "T's invoice in both mirrors, T2's in B's only")
    expect_eq(h.sql_rows(db, "SELECT organisation_id::text, count(*) FROM xero_invoice_lines GROUP BY 1 ORDER BY 1"),
              sorted([[org_a, "1"], [org_b, "1"]]), "with its line in each")
    expect_eq(h.sql_rows(db, "SELECT c.organisation_id::text, l.customer_id::text FROM xero_contacts c"
                             " JOIN customer_links l ON l.organisation_id = c.organisation_id"
                             "  AND l.provider = 'xero' AND l.external_id = c.contact_id::text"
                             " ORDER BY 1"),
              sorted([[org_a, customer[org_a]], [org_b, customer[org_b]]]),
              "the contact is matched to each organisation's own customer")
    expect_eq(h.sql_rows(db, "SELECT organisation_id::text, action, count(*) FROM audit_log"
                             " WHERE action IN ('xero.invoice.upsert', 'xero.contact.upsert') GROUP BY 1, 2 ORDER BY 1, 2"),
              sorted([[org_a, "xero.contact.upsert", "1"], [org_a, "xero.invoice.upsert", "1"],
                      [org_b, "xero.contact.upsert", "1"], [org_b, "xero.invoice.upsert", "2"]]),
              "each organisation audits its own changes")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM organisations WHERE audit_verify(id) IS NOT NULL"), "0",
              "every audit chain verifies")
    by_auth = {}
    for c in m.api_calls():
        by_auth.setdefault((c["tenant"].lower(), c["path"].split("?")[0].split("/")[3], c["auth"]), []).append(c)
    expect_eq(sorted(by_auth), sorted([(t, "Invoices", auth_a), (t, "Invoices", auth_b), (t, "Contacts", auth_a),
                                       (t, "Contacts", auth_b), (t2, "Invoices", auth_b)]),
              "each organisation fetched with its own token set (tenant, collection, authorisation)")
    expect(all(len(v) == 1 for v in by_auth.values()), "one call each", {k: len(v) for k, v in by_auth.items()})


def test_an_organisation_needing_reauthorisation_does_not_hold_back_the_others():
    """A and B share tenant T; B's token set needs re-authorisation (its admin revoked it). An event of T is
    done for A, with a warning naming B, and calls Xero with A's token only; an event of T2, which only B
    connected, waits for B's re-authorisation (rescheduled, not failed, not dead), as for a single organisation."""
    m = mock()
    t, t2 = pl.new_tenant(), pl.new_tenant()
    db, org_a, org_b, auth_a, auth_b = _two_organisations(m, [t], [t, t2], "fid_reauth")
    iid, iid2 = str(uuid.uuid4()), str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "3.00"))
    m.put(t2, "invoices", iid2, pl.invoice(iid2, pl.BASE_MS, "4.00"))
    h.sql(db, "UPDATE xero_tokens SET status = 'needs_reauth', last_error = 'revoked in the test'"
              " WHERE organisation_id = $1", org_b)
    m.ctl("DELETE", "requests")
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0)
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE"), pl.xero_event(t2, iid2, "INVOICE")]))
        pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM webhook_events WHERE account = $1", t) == "done", 30,
                    "T's event to be done")
        pl.wait_for(lambda: h.sql_value(db, "SELECT next_attempt_at > now() + interval '30 seconds'"
                                            " FROM webhook_events WHERE account = $1", t2) == "t", 30,
                    "T2's event to be rescheduled for B's re-authorisation")
        expect_eq(h.sql_rows(db, "SELECT status, attempts FROM webhook_events WHERE account = $1", t2),
                  [["pending", "0"]], "T2's event waits (no attempt counted)")
        expect_in("needs re-authorisation", s.log(), "the log warns that B misses the event")
    expect_eq(h.sql_rows(db, "SELECT organisation_id::text, tenant_id::text FROM xero_invoices"), [[org_a, t]],
              "only A's mirror was written")
    expect_eq(sorted({c["auth"] for c in m.api_calls()}), [auth_a], "only A's token set called Xero")


try:
    h.run(globals())
finally:
    if _mock is not None:
        _mock.stop()
