# SPDX-License-Identifier: MIT
"""test_xero_fidelity.py: what settled asks Xero for, and for whom, through the real binary, a real PostgreSQL and
the project's mock Xero (tests/mock/xero_api.py; PROVIDERS.md section 2):

- unit amounts: every Invoices and CreditNotes call asks for unitdp=4 (the webhook refetch and `settled sync`),
  so a line's UnitAmount 1.2345 is mirrored as 1.2345, where the mock, like Xero, answers 1.23 to a call that
  does not ask;
"""

import json
import urllib.parse
import uuid

import harness as h
import pipelinelib as pl
from harness import expect, expect_eq

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


try:
    h.run(globals())
finally:
    if _mock is not None:
        _mock.stop()
