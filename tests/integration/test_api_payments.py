# SPDX-License-Identifier: MIT
"""test_api_payments.py: the client's payments, payment methods and invoice PDFs (GET /v1/payments, GET
/v1/payment-methods, POST /v1/payment-methods/card and /direct-debit, DELETE /v1/payment-methods/{id}, PUT
/v1/payment-methods/{id}/default, GET /v1/invoices/{id}/pdf) against the real binary, PostgreSQL, Redis and the three
provider mocks (paymentslib.World: a connected Xero tenant, `settled serve` with its queue workers, the Stripe and
GoCardless mocks posting webhooks to it).

What is checked: a client lists its own customer's payments only, money as exact decimal strings, page by page; a
card SetupIntent makes exactly one Stripe customer across two requests, linked to the portal customer, and the
client_secret is the mock's; confirming it in the mock makes the card appear (through the webhook) as the default;
a direct-debit flow answers an authorisation URL of the mock and fulfilling its billing request makes the mandate
appear; choosing the default is audited; deleting detaches the card or cancels the mandate at the mock, and a
second delete is 204 without another provider call; another customer's method is 404 for delete and default; the
PDF is the mock's bytes, a second request is served from the cache (one Xero call in the mock's log), a changed
invoice is fetched again, another customer gets 404. Every answer is checked against docs/openapi.yaml, and an
access matrix generated from `settled routes --json` covers these routes for every kind of caller.
"""

import json
import time

import harness as h
import openapi_check
import paymentslib as pay
import pipelinelib as pl
from harness import expect, expect_eq, expect_in
from test_api_invoices import JWT_SECRET, mint, routes

PORTAL = "https://portal.example.com/app"
ROUTES = {"invoice_pdf", "payments_list", "payment_methods_list", "payment_methods_card",
          "payment_methods_direct_debit", "payment_methods_delete", "payment_methods_default"}


class World:
    """One paymentslib world (made once per file) with organisation X holding customers A and B (their Xero
    contacts, one invoice each in the mock Xero and the mirror, ledger payments) and organisation Y, and tokens."""

    def __init__(self):
        self.p = pay.World({}, mirror=False, SETTLED_JWT_SECRET=JWT_SECRET, SETTLED_PORTAL_URL=PORTAL,
                           SETTLED_STRIPE_PUBLISHABLE_KEY="pk_test_portal")
        self.p.server.stop()
        self.db, self.org, self.tenant = self.p.db, self.p.org, self.p.tenant
        db, x = self.db, self.org
        self.y = h.sql_value(db, "WITH i AS (INSERT INTO organisations (slug, name) VALUES ('org-y', 'Y') "
                                 "RETURNING id) SELECT id FROM i")
        self.cust = {}
        for name in ("A", "B"):
            self.cust[name] = h.sql_value(db, "WITH i AS (INSERT INTO customers (organisation_id, name, email) VALUES "
                                              "($1, $2, $3) RETURNING id) SELECT id FROM i",
                                          x, f"Customer {name}", f"{name.lower()}@pay.example")
        self.invoices = {}
        for name, n in (("A", 1), ("B", 2)):
            contact = f"cccccccc-0000-4000-8000-00000000000{n}"
            iid = f"dddddddd-0000-4000-8000-00000000000{n}"
            h.sql(db, "INSERT INTO xero_contacts (organisation_id, tenant_id, contact_id, name, updated_date_utc, raw,"
                      " customer_id) VALUES ($1, $2, $3, $4, now(), '{}', $5)", x, self.tenant, contact,
                  f"Contact {name}", self.cust[name])
            self.p.xero.put(self.tenant, "invoices", iid, pl.invoice(iid, 1767225600000 + n, "120.00",
                                                                     number=f"INV-P{n}", contact_id=contact))
            sid = f"inv_p{name.lower()}"
            h.sql(db, "INSERT INTO xero_invoices (organisation_id, tenant_id, invoice_id, invoice_number, type, status,"
                      " contact_id, currency_code, date, due_date, total, amount_due, amount_paid, amount_credited,"
                      " updated_date_utc, raw, settled_invoice_id) VALUES ($1, $2, $3, $4, 'ACCREC', 'AUTHORISED', $5,"
                      " 'GBP', '2026-01-01', '2026-01-31', 120.00, 120.00, 0, 0, '2026-01-01T00:00:00Z', '{}', $6)",
                  x, self.tenant, iid, f"INV-P{n}", contact, sid)
            self.invoices[name] = (sid, iid)
        self.payments = self.seed_payments()
        # methods for the access matrix: A's detached card (delete is done already) and an active card
        for obj, status in (("pm_seed_gone", "detached"), ("pm_seed_live", "active")):
            h.sql(db, "INSERT INTO payment_methods (organisation_id, provider, object_id, customer_id, kind, brand,"
                      " last4, exp_month, exp_year, status, raw, provider_created_at) VALUES ($1, 'stripe', $2, $3,"
                      " 'card', 'mastercard', '4444', 1, 2031, $4, '{}', '2020-01-01')", x, obj, self.cust["A"],
                  status)
        self.seeded = {o: h.sql_value(db, "SELECT id FROM payment_methods WHERE object_id = $1", o)
                       for o in ("pm_seed_gone", "pm_seed_live")}
        self.tokens = {
            "client_a": mint(301, x, "client", self.cust["A"]),
            "client_b": mint(302, x, "client", self.cust["B"]),
            "admin_x": mint(401, x, "admin"),
            "admin_y": mint(402, self.y, "admin"),
        }
        self.server = None

    def seed_payments(self):
        """A: three payments (GBP with a refund and a dispute, JPY, a GoCardless one), a write-back (not listed) and
        one of an unmatched provider customer that pays A's invoice (listed for A); B: one. Returns the ids."""
        db, x, a, b = self.db, self.org, self.cust["A"], self.cust["B"]
        rows = [("stripe", "pi_pay_a1", a, 1230, "GBP", "succeeded", "card", self.invoices["A"][1], False),
                ("stripe", "pi_pay_a2", a, 7891, "JPY", "succeeded", "card", None, False),
                ("gocardless", "PM00PAYA3", a, 500, "GBP", "paid_out", "bacs", None, False),
                ("xero", "wb-pay-a4", a, 100, "GBP", "AUTHORISED", None, None, True),
                ("stripe", "pi_pay_a5", "", 250, "GBP", "succeeded", "card", self.invoices["A"][1], False),
                ("stripe", "pi_pay_b1", b, 999, "GBP", "succeeded", "card", self.invoices["B"][1], False)]
        ids = {}
        for prov, obj, cust, amount, cur, status, method, inv, wb in rows:
            ids[obj] = h.sql_value(db, "WITH i AS (INSERT INTO payments (organisation_id, provider, object_id, "
                                       "customer_id, xero_tenant_id, xero_invoice_id, amount_minor, currency, status, "
                                       "method, from_writeback, raw) VALUES ($1, $2, $3, nullif($4, '')::bigint, nullif($5, ''), nullif($6, '')::uuid, $7, $8, $9, "
                                       "nullif($10, ''), "
                                       "$11, '{}') RETURNING id) SELECT id FROM i", x, prov, obj, cust,
                                   self.tenant if inv else "", inv or "", amount, cur, status, method or "",
                                   "true" if wb else "false")
        pid = ids["pi_pay_a1"]
        h.sql(db, "INSERT INTO refunds (organisation_id, provider, object_id, payment_id, amount_minor, currency, "
                  "status, raw) VALUES ($1, 'stripe', 're_pay_1', $2, 230, 'GBP', 'succeeded', '{}')", x, pid)
        h.sql(db, "INSERT INTO disputes (organisation_id, provider, object_id, payment_id, amount_minor, currency, "
                  "status, raw) VALUES ($1, 'stripe', 'dp_pay_1', $2, 1000, 'GBP', 'needs_response', '{}')", x, pid)
        return ids

    def start(self):
        self.server = h.Settled(self.db, env=self.p.env)
        self.p.server = self.server
        self.p.stripe.ctl("PUT", "webhook", {"url": self.server.url("/webhooks/stripe"), "secret": h.STRIPE_SECRET})
        self.p.gc.ctl("PUT", "webhook", {"url": self.server.url("/webhooks/gocardless"),
                                         "secret": h.GOCARDLESS_SECRET})

    def call(self, method, path, who=None, body=None, headers=None, status=None):
        """One request as who, checked against docs/openapi.yaml (and against status when given)."""
        hdrs = dict(headers or {})
        if who:
            hdrs["Authorization"] = f"Bearer {self.tokens[who]}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        st, rh, out = self.server.request(method, path, body=data, headers=hdrs, timeout=30)
        openapi_check.response(method, path, st, rh, out)
        if status is not None:
            expect_eq(st, status, f"{method} {path} as {who} (body {out[:300]!r})")
        return st, rh, out

    def json(self, method, path, who, body=None, status=200):
        return json.loads(self.call(method, path, who, body, status=status)[2])

    def methods(self, who="client_a"):
        return self.json("GET", "/v1/payment-methods", who)["data"]


_world = None


def world():
    global _world
    if _world is None:
        _world = World()
    return _world


def api_test(fn):
    """A test of its own server on the shared world (the harness stops every server after each test)."""
    def run():
        w = world()
        w.start()
        fn(w)
        w.server.stop()
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def settle(w):
    w.p.settle()


@api_test
def test_payments_scoped_exact_and_paged(w):
    doc = w.json("GET", "/v1/payments?limit=100", "client_a")
    ids = [p["id"] for p in doc["data"]]
    a = w.payments
    expect_eq(ids, [a["pi_pay_a5"], a["PM00PAYA3"], a["pi_pay_a2"], a["pi_pay_a1"]],
              "A's payments and the one paying A's invoice, newest first, no write-back")
    by = {p["id"]: p for p in doc["data"]}
    p1 = by[a["pi_pay_a1"]]
    expect_eq((p1["provider"], p1["amount"], p1["currency"], p1["invoice_id"], p1["method"]),
              ("stripe", "12.30", "GBP", "inv_pa", "card"), "the GBP payment and the invoice it pays")
    expect_eq([(r["amount"], r["status"]) for r in p1["refunds"]], [("2.30", "succeeded")], "its refund")
    expect_eq([(d["amount"], d["status"]) for d in p1["disputes"]], [("10.00", "needs_response")], "its dispute")
    expect_eq(by[a["pi_pay_a2"]]["amount"], "7891", "JPY has no decimals")
    expect_eq((by[a["PM00PAYA3"]]["provider"], by[a["PM00PAYA3"]]["amount"]), ("gocardless", "5.00"), "GoCardless")
    expect(a["pi_pay_b1"] not in ids, "not B's payment")
    expect_eq([p["id"] for p in w.json("GET", "/v1/payments", "client_b")["data"]], [a["pi_pay_b1"]], "B sees its own")
    raw = w.call("GET", "/v1/payments", "client_a")[2].decode()
    expect('"amount":1' not in raw and '"amount":7' not in raw, "no amount is a JSON number")
    # pages of one cover the three exactly once
    seen, cursor, pages = [], None, 0
    for _ in range(6):
        pages += 1
        page = w.json("GET", "/v1/payments?limit=1" + (f"&cursor={cursor}" if cursor else ""), "client_a")
        seen += [p["id"] for p in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expect_eq(seen, ids, "paging lists every payment once")
    expect_eq(pages, 4, "four pages of one")
    # an admin sees its organisation's; another organisation's admin none of them
    admin = [p["id"] for p in w.json("GET", "/v1/payments?limit=100", "admin_x")["data"]]
    expect_eq(sorted(admin), sorted(ids + [a["pi_pay_b1"]]), "admin X: every payment of X but the write-back")
    expect_eq(w.json("GET", "/v1/payments", "admin_y")["data"], [], "admin Y: none")
    # ETag
    st, rh, _ = w.call("GET", "/v1/payments", "client_a", status=200)
    expect_eq(w.call("GET", "/v1/payments", "client_a", headers={"If-None-Match": rh["etag"]})[0], 304, "304")
    for q, field in (("cursor=abc", "cursor"), ("limit=0", "limit"), ("bogus=1", "bogus")):
        st, rh, body = w.call("GET", f"/v1/payments?{q}", "client_a")
        expect_eq((st, json.loads(body).get("field")), (400, field), f"?{q}")


@api_test
def test_card_setup_confirm_default_delete(w):
    stripe = w.p.stripe
    before = stripe.ctl("GET", "objects/customers")
    one = w.json("POST", "/v1/payment-methods/card", "client_a", status=201)
    two = w.json("POST", "/v1/payment-methods/card", "client_a", status=201)
    expect_eq(one["publishable_key"], "pk_test_portal", "the publishable key")
    made = [c for c in stripe.ctl("GET", "objects/customers") if c not in before]
    expect_eq(len(made), 1, "exactly one Stripe customer across two requests")
    cus = made[0]
    expect_eq((cus["email"], cus["metadata"].get("settled_customer_id")), ("a@pay.example", w.cust["A"]),
              "the Stripe customer names settled's customer")
    expect_eq(h.sql_value(w.db, "SELECT customer_id || ':' || rule FROM customer_links WHERE provider = 'stripe' AND "
                                "external_id = $1", cus["id"]), f"{w.cust['A']}:created", "linked as matching links")
    expect(one["setup_intent_id"] != two["setup_intent_id"], "each request its own SetupIntent")
    seti = stripe.ctl("GET", f"objects/setup_intents/{one['setup_intent_id']}")
    expect_eq((seti["client_secret"], seti["customer"], seti["usage"], seti["metadata"].get("settled_customer_id")),
              (one["client_secret"], cus["id"], "off_session", w.cust["A"]), "the mock knows the SetupIntent")
    # the same Idempotency-Key answers the same SetupIntent
    st, _, b1 = w.call("POST", "/v1/payment-methods/card", "client_a", headers={"Idempotency-Key": "try-1"})
    st2, _, b2 = w.call("POST", "/v1/payment-methods/card", "client_a", headers={"Idempotency-Key": "try-1"})
    expect_eq((st, st2, json.loads(b1)["setup_intent_id"]), (201, 201, json.loads(b2)["setup_intent_id"]),
              "a retry with the same Idempotency-Key")
    st, rh, body = w.call("POST", "/v1/payment-methods/card", "client_a", headers={"Idempotency-Key": "bad key!"})
    expect_eq((st, json.loads(body).get("field")), (400, "Idempotency-Key"), "a malformed Idempotency-Key")

    # the payer confirms with Stripe.js: the mock's control API does it, and the webhooks make the card appear
    stripe.ctl("POST", f"setup_intents/{one['setup_intent_id']}/succeed")
    pm = stripe.ctl("GET", f"objects/setup_intents/{one['setup_intent_id']}")["payment_method"]
    pl.wait_for(lambda: any(m["brand"] == "visa" for m in w.methods() if m["kind"] == "card"), 30,
                "the confirmed card in GET /v1/payment-methods")
    card = next(m for m in w.methods() if m.get("brand") == "visa")
    expect_eq((card["last4"], card["exp_month"], card["exp_year"], card["is_default"], card["provider"]),
              ("4242", 12, 2034, True, "stripe"), "the new card is the default (the newest usable)")
    expect_eq(sum(1 for m in w.methods() if m["is_default"]), 1, "one default")

    # choosing the seeded card as the default, audited; B cannot
    live = w.seeded["pm_seed_live"]
    w.call("PUT", f"/v1/payment-methods/{live}/default", "client_b", status=404)
    w.call("PUT", f"/v1/payment-methods/{live}/default", "client_a", status=204)
    defaults = {m["id"]: m["is_default"] for m in w.methods()}
    expect_eq((defaults[live], defaults[card["id"]]), (True, False), "the chosen default")
    expect_eq(h.sql_value(w.db, "SELECT actor FROM audit_log WHERE action = 'payment_method.choose_default' "
                                "ORDER BY id DESC LIMIT 1"), "user:301", "audited with the user")
    w.call("PUT", f"/v1/payment-methods/{card['id']}/default", "client_a", status=204)
    expect_eq([m["id"] for m in w.methods() if m["is_default"]], [card["id"]], "chosen back")

    # delete: B gets 404 and nothing changes; A detaches at the mock; again is 204 without a call
    w.call("DELETE", f"/v1/payment-methods/{card['id']}", "client_b", status=404)
    expect_eq(stripe.ctl("GET", f"objects/payment_methods/{pm}")["customer"], cus["id"], "still attached")
    stripe.ctl("DELETE", "requests")
    w.call("DELETE", f"/v1/payment-methods/{card['id']}", "client_a", status=204)
    expect_eq(stripe.ctl("GET", f"objects/payment_methods/{pm}")["customer"], None, "detached at the mock")
    expect(card["id"] not in [m["id"] for m in w.methods()], "gone from the list at once")
    expect_eq(h.sql_value(w.db, "SELECT status FROM payment_methods WHERE id = $1", card["id"]), "detached",
              "the row, through pm_apply_stripe_payment_method")
    expect_eq(h.sql_value(w.db, "SELECT actor FROM audit_log WHERE action = 'payment_method.remove' ORDER BY id DESC "
                                "LIMIT 1"), "user:301", "the removal is audited")
    w.call("DELETE", f"/v1/payment-methods/{card['id']}", "client_a", status=204)
    detaches = [r for r in stripe.ctl("GET", "requests") if r["path"].endswith("/detach")]
    expect_eq(len(detaches), 1, "one detach call for two deletes")
    settle(w)  # the payment_method.detached webhook changes nothing more
    expect_eq(pl.queue_counts(w.db).get("dead", 0), 0, "every webhook of the flow was processed")
    expect(card["id"] not in [m["id"] for m in w.methods()], "still gone after the webhook")
    expect_eq([m["id"] for m in w.methods() if m["is_default"]], [live], "the default moved to the other card")


@api_test
def test_card_detached_at_stripe_already(w):
    """A card detached at Stripe (not yet here) deletes as done: 204, the row detached."""
    stripe = w.p.stripe
    cus = h.sql_value(w.db, "SELECT external_id FROM customer_links WHERE provider = 'stripe' AND customer_id = $1",
                      w.cust["A"])
    if cus is None:
        w.call("POST", "/v1/payment-methods/card", "client_a", status=201)
        cus = h.sql_value(w.db, "SELECT external_id FROM customer_links WHERE provider = 'stripe' AND customer_id = $1",
                          w.cust["A"])
    stripe.ctl("PUT", "objects/payment_methods/pm_gone_at_stripe", {"customer": None})
    h.sql(w.db, "INSERT INTO payment_methods (organisation_id, provider, object_id, customer_id, provider_customer, "
                "kind, brand, last4, status, raw) VALUES ($1, 'stripe', 'pm_gone_at_stripe', $2, $3, 'card', 'visa', "
                "'1111', 'active', '{}')", w.org, w.cust["A"], cus)
    mid = h.sql_value(w.db, "SELECT id FROM payment_methods WHERE object_id = 'pm_gone_at_stripe'")
    w.call("DELETE", f"/v1/payment-methods/{mid}", "client_a", status=204)
    expect_eq(h.sql_value(w.db, "SELECT status FROM payment_methods WHERE id = $1", mid), "detached", "detached here")
    w.call("DELETE", "/v1/payment-methods/999999999", "client_a", status=404)
    w.call("DELETE", "/v1/payment-methods/not-a-number", "client_a", status=404)


@api_test
def test_provider_failures(w):
    """A provider that fails answers problem+json, never a hang: Stripe's 409 (a twin request in flight) is 503 with
    Retry-After, a 500 is 502 provider_unavailable, a 4xx 502 provider_rejected; GoCardless likewise; nothing is
    half-linked (a retry after the fault works)."""
    stripe, gc = w.p.stripe, w.p.gc
    try:
        for mode, status, code in (("409", 503, "provider_unavailable"), ("500", 502, "provider_unavailable")):
            stripe.ctl("POST", "faults", {"mode": mode, "path_prefix": "/v1/setup_intents", "method": "POST",
                                          "count": 1})
            st, rh, body = w.call("POST", "/v1/payment-methods/card", "client_a")
            h.expect_problem((st, rh, body), status, code, f"Stripe fault {mode}")
            if status == 503:
                expect_in("retry-after", rh, "Retry-After")
        stripe.ctl("DELETE", "faults")
        w.call("POST", "/v1/payment-methods/card", "client_a", status=201)
        gc.ctl("POST", "faults", {"mode": "500", "path_prefix": "/billing_request_flows", "count": 1})
        st, rh, body = w.call("POST", "/v1/payment-methods/direct-debit", "client_a", {"scheme": "sepa_core"})
        h.expect_problem((st, rh, body), 502, "provider_unavailable", "GoCardless fault 500")
        gc.ctl("DELETE", "faults")
        doc = w.json("POST", "/v1/payment-methods/direct-debit", "client_a", {"scheme": "sepa_core"}, status=201)
        br = gc.ctl("GET", f"objects/billing_requests/{doc['billing_request_id']}")
        expect_eq(br["mandate_request"]["currency"], "EUR", "the scheme's currency")
        # a card the provider does not know: the detach is refused (a 404), the method stays
        h.sql(w.db, "INSERT INTO payment_methods (organisation_id, provider, object_id, customer_id, kind, status, "
                    "raw) VALUES ($1, 'stripe', 'pm_unknown_at_stripe', $2, 'card', 'active', '{}')",
              w.org, w.cust["A"])
        mid = h.sql_value(w.db, "SELECT id FROM payment_methods WHERE object_id = 'pm_unknown_at_stripe'")
        st, rh, body = w.call("DELETE", f"/v1/payment-methods/{mid}", "client_a")
        h.expect_problem((st, rh, body), 502, "provider_rejected", "an unknown card")
        expect_eq(h.sql_value(w.db, "SELECT status FROM payment_methods WHERE id = $1", mid), "active", "unchanged")
    finally:
        stripe.ctl("DELETE", "faults")
        gc.ctl("DELETE", "faults")


@api_test
def test_client_gone_during_provider_call(w):
    """A client that hangs up while its SetupIntent is being created: the work finishes on the pool (the SetupIntent
    exists at the mock), nobody is answered, the server goes on and stops cleanly (no sanitizer report)."""
    stripe = w.p.stripe
    before = len(stripe.ctl("GET", "objects/setup_intents"))
    stripe.ctl("POST", "faults", {"mode": "slow", "delay_ms": 1500, "path_prefix": "/v1/setup_intents", "count": 1})
    try:
        try:
            w.server.request("POST", "/v1/payment-methods/card",
                             headers={"Authorization": f"Bearer {w.tokens['client_a']}"}, timeout=0.3)
            raise h.Failure("the slow call answered within 0.3 s")
        except (TimeoutError, OSError):
            pass  # gave up, as a browser tab closed
        pl.wait_for(lambda: len(stripe.ctl("GET", "objects/setup_intents")) == before + 1, 15,
                    "the SetupIntent of the abandoned request")
    finally:
        stripe.ctl("DELETE", "faults")
    time.sleep(0.3)
    w.call("POST", "/v1/payment-methods/card", "client_a", status=201)
    w.call("GET", "/v1/payment-methods", "client_a", status=200)


@api_test
def test_direct_debit_flow_mandate_delete(w):
    gc = w.p.gc
    doc = w.json("POST", "/v1/payment-methods/direct-debit", "client_b", {"scheme": "bacs"}, status=201)
    expect(doc["authorisation_url"].startswith(gc.base + "/"), f"a URL of the mock: {doc['authorisation_url']}")
    br = gc.ctl("GET", f"objects/billing_requests/{doc['billing_request_id']}")
    expect_eq((br["mandate_request"]["scheme"], br["metadata"].get("settled_customer_id")), ("bacs", w.cust["B"]),
              "the billing request")
    flow = gc.ctl("GET", f"objects/billing_request_flows/{doc['billing_request_flow_id']}")
    expect_eq((flow["redirect_uri"], flow["exit_uri"], flow["links"]["billing_request"]),
              (PORTAL + "/payment-methods/direct-debit/complete", PORTAL + "/payment-methods",
               doc["billing_request_id"]), "the flow's URIs under SETTLED_PORTAL_URL")
    cu = br["links"]["customer"]
    expect_eq(h.sql_value(w.db, "SELECT customer_id FROM customer_links WHERE provider = 'gocardless' AND "
                                "external_id = $1", cu), w.cust["B"], "GoCardless's customer is linked")
    st, _, body = w.call("POST", "/v1/payment-methods/direct-debit", "client_b", {"scheme": "visa"})
    expect_eq((st, json.loads(body).get("field")), (400, "scheme"), "an unknown scheme")
    st, _, body = w.call("POST", "/v1/payment-methods/direct-debit", "client_b", {"bogus": 1})
    expect_eq((st, json.loads(body).get("field")), (400, "bogus"), "an unknown field")

    gc.ctl("POST", f"billing_requests/{doc['billing_request_id']}/fulfil")
    pl.wait_for(lambda: any(m["kind"] == "direct_debit" for m in w.methods("client_b")), 30, "the mandate listed")
    mandate = next(m for m in w.methods("client_b") if m["kind"] == "direct_debit")
    expect_eq((mandate["provider"], mandate["scheme"], mandate["bank_name"], mandate["account_number_ending"],
               mandate["is_default"]), ("gocardless", "bacs", "MOCK BANK", "11", True), "the mandate")
    md = h.sql_value(w.db, "SELECT object_id FROM payment_methods WHERE id = $1", mandate["id"])
    w.call("DELETE", f"/v1/payment-methods/{mandate['id']}", "client_a", status=404)
    w.call("PUT", f"/v1/payment-methods/{mandate['id']}/default", "client_a", status=404)
    expect_eq(gc.ctl("GET", f"objects/mandates/{md}")["status"], "pending_submission", "untouched by A")
    w.call("DELETE", f"/v1/payment-methods/{mandate['id']}", "client_b", status=204)
    expect_eq(gc.ctl("GET", f"objects/mandates/{md}")["status"], "cancelled", "cancelled at the mock")
    expect_eq(w.methods("client_b"), [], "gone from the list")
    w.call("DELETE", f"/v1/payment-methods/{mandate['id']}", "client_b", status=204)
    settle(w)
    expect_eq(pl.queue_counts(w.db).get("dead", 0), 0, "every webhook of the flow was processed")
    expect_eq(w.methods("client_b"), [], "still gone after the mandates.cancelled webhook")
    # cancelled at GoCardless before settled knew: the cancel's 409 is read back as done
    gc.ctl("PUT", "objects/mandates/MD00PAYGONE", {"status": "cancelled", "links": {"customer": cu}})
    h.sql(w.db, "INSERT INTO payment_methods (organisation_id, provider, object_id, customer_id, provider_customer, "
                "kind, scheme, status, raw) VALUES ($1, 'gocardless', 'MD00PAYGONE', $2, $3, 'direct_debit', 'bacs', "
                "'active', '{}')", w.org, w.cust["B"], cu)
    mid = h.sql_value(w.db, "SELECT id FROM payment_methods WHERE object_id = 'MD00PAYGONE'")
    w.call("DELETE", f"/v1/payment-methods/{mid}", "client_b", status=204)
    expect_eq(h.sql_value(w.db, "SELECT status FROM payment_methods WHERE id = $1", mid), "cancelled", "read back")


@api_test
def test_invoice_pdf_cached(w):
    xero = w.p.xero
    sid, iid = w.invoices["A"]
    want = xero.call("GET", f"/_mock/tenants/{w.tenant}/invoices/{iid}/pdf")[2]
    expect(want.startswith(b"%PDF-"), "the mock renders a PDF")
    xero.ctl("DELETE", "requests")
    st, rh, one = w.call("GET", f"/v1/invoices/{sid}/pdf", "client_a", status=200)
    expect_eq((rh.get("content-type"), one), ("application/pdf", want), "the mock's bytes")
    st, rh2, two = w.call("GET", f"/v1/invoices/{sid}/pdf", "client_a", status=200)
    expect_eq((two, rh2.get("etag")), (want, rh.get("etag")), "the same bytes and tag again")
    calls = [r for r in xero.api_calls("Invoices", iid)]
    expect_eq(len(calls), 1, "one Xero call for two requests (the second from the cache)")
    expect_eq(w.call("GET", f"/v1/invoices/{sid}/pdf", "client_a", headers={"If-None-Match": rh["etag"]})[0], 304,
              "If-None-Match")
    expect_eq(w.call("GET", f"/v1/invoices/{sid}/pdf", "admin_x", status=200)[2], want, "admin X reads it")
    for who in ("client_b", "admin_y"):
        st, rh3, body = w.call("GET", f"/v1/invoices/{sid}/pdf", who, status=404)
        h.expect_problem((st, rh3, body), 404, "not_found", f"{who} on A's PDF")
    expect_eq(len(xero.api_calls("Invoices", iid)), 1, "still one call")
    # the invoice changes (the mirror sees a newer UpdatedDateUTC): the new PDF is fetched once
    xero.put(w.tenant, "invoices", iid, pl.invoice(iid, 1767225700000, "130.00", number="INV-P1",
                                                   contact_id="cccccccc-0000-4000-8000-000000000001"))
    h.sql(w.db, "UPDATE xero_invoices SET updated_date_utc = updated_date_utc + interval '1 hour', total = 130 "
                "WHERE invoice_id = $1", iid)
    new = xero.call("GET", f"/_mock/tenants/{w.tenant}/invoices/{iid}/pdf")[2]
    expect(new != want, "the mock renders the changed invoice differently")
    st, rh4, body = w.call("GET", f"/v1/invoices/{sid}/pdf", "client_a", status=200)
    expect_eq(body, new, "the changed invoice's PDF")
    expect(rh4["etag"] != rh["etag"], "a new tag")
    w.call("GET", f"/v1/invoices/{sid}/pdf", "client_a", status=200)
    expect_eq(len(xero.api_calls("Invoices", iid)), 2, "one more call for the new version")


def sample(w, route, who):
    """A concrete path and body for route as tried by who: {id} of an object of customer A."""
    path = route["path"]
    if "{id}" in path:
        oid = w.invoices["A"][0] if path.startswith("/v1/invoices") else (
            w.seeded["pm_seed_gone"] if route["method"] == "DELETE" else w.seeded["pm_seed_live"])
        path = path.replace("{id}", oid)
    body = {"scheme": "bacs"} if route["name"] == "payment_methods_direct_debit" else None
    return path, body


@api_test
def test_access_matrix(w):
    """Every route of this area x anonymous, client A, client B, admin X, admin Y. Expected: 401 without a token; 404
    for a role the route does not serve; for a role it serves its success status, or 404 on an object of A's for B
    and admin Y."""
    mine = [r for r in routes() if r["name"] in ROUTES]
    expect_eq({r["name"] for r in mine}, ROUTES, "every route of the area is in the table")
    ok = {"GET": 200, "POST": 201, "DELETE": 204, "PUT": 204}
    owner = {"client_a": True, "client_b": False, "admin_x": True, "admin_y": False}
    cells = 0
    for r in mine:
        for who in ("anonymous", "client_a", "client_b", "admin_x", "admin_y"):
            path, body = sample(w, r, who)
            if who == "anonymous":
                want = 401
            elif who.split("_")[0] not in r["access"].split("|"):
                want = 404
            elif "{" in r["path"] and not owner[who]:
                want = 404
            else:
                want = ok[r["method"]]
            st, rh, out = w.call(r["method"], path, None if who == "anonymous" else who, body)
            expect_eq(st, want, f"{r['method']} {path} as {who} (body {out[:300]!r})")
            cells += 1
    print(f"# access matrix: {cells} cells over {len(mine)} routes")


if __name__ == "__main__":
    try:
        h.run(globals())
    finally:
        pay.stop_mocks()
