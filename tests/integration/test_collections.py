#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_collections.py: automatic collection on the due date (docs/collections.md, "Automatic collection") end to
end: the real binary (`settled serve` with its worker pool, `settled work`, `settled collect --at`), real PostgreSQL
and Redis, and the project's Xero, Stripe and GoCardless mocks, whose webhooks bring the outcomes back.

- a card invoice is charged once on its due date (not a second before local midnight, in UTC and in
  Pacific/Auckland), with the PaymentIntent off-session and the metadata, and its attempt ends succeeded;
- a declined card is retried on the policy's days (3,5,7) and no more; a retry stops once the invoice is paid;
- authentication_required ends action_required, not retried, with the collection_failed notice (e-mail, portal);
- nothing is collected for an invoice paid, pending, voided, or paused (invoice and customer; through the API);
- a GoCardless payment is created ahead so that its charge_date is the due date (or the mandate's next possible
  charge date), with retry_if_possible and the metadata;
- two instances planning and sending at once, one killed with -9 at random instants: one attempt and one
  PaymentIntent per invoice;
- the planning function's skip rules at the SQL level (collect_candidate).

``python3 test_collections.py test_a`` runs only the named tests."""

import json
import os
import random
import re
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
import openapi_check  # noqa: E402
import paymentslib as pm  # noqa: E402
import pipelinelib as pl  # noqa: E402
from harness import expect, expect_eq  # noqa: E402
from test_api_invoices import JWT_SECRET, mint  # noqa: E402

DUE = "2025-01-31"  # pipelinelib.invoice's DueDate


class Scene(pm.World):
    """A World (serve with workers, the three mocks) whose organisation collects automatically by default."""

    def __init__(self, **env):
        settings = dict(SETTLED_COLLECT_INTERVAL=0, SETTLED_XERO_SYNC_INTERVAL=0, SETTLED_JWT_SECRET=JWT_SECRET,
                        SETTLED_WORKER_POLL_MS=200, SETTLED_HTTP_TIMEOUT_MS=3000, SETTLED_WORKER_LEASE_MS=1000)
        settings.update(env)
        super().__init__({}, mirror=False, **settings)
        h.sql(self.db, "INSERT INTO payment_terms (organisation_id, customer_id, type, day, auto_collect)"
                       " VALUES ($1::bigint, NULL, 'DAYSAFTERBILLDATE', 30, true)", self.org)
        self.admin = mint(201, self.org, "admin")

    def customer(self, method="succeed", kind="card", email="payer@example.com", exp_year=2030, raw="{}",
                 preferred=None):
        """A portal customer linked to a new Xero contact, with a default method (a card: the Stripe mock's outcome
        of confirming it, e.g. succeed, card_declined, authentication_required; a direct debit: the mandate's id);
        returns (id, contact)."""
        contact = str(uuid.uuid4())
        cid = h.sql_value(self.db, "WITH i AS (INSERT INTO customers (organisation_id, name, email) VALUES"
                                   " ($1::bigint, $2, nullif($3, '')) RETURNING id) SELECT id FROM i", self.org, f"Payer {contact[:6]}", email or "")
        h.sql(self.db, "INSERT INTO customer_links (organisation_id, provider, external_id, customer_id, rule)"
                       " VALUES ($1::bigint, 'xero', $2, $3::bigint, 'admin')", self.org, contact, cid)
        provider = "stripe" if kind == "card" else "gocardless"
        cus = f"cus_{contact[:8]}" if kind == "card" else None
        if cus:
            self.stripe.ctl("PUT", f"objects/customers/{cus}", {})
            outcome, method = method, f"pm_{contact.replace('-', '')[:20]}"
            self.stripe.ctl("PUT", f"objects/payment_methods/{method}", {"customer": cus, "mock_outcome": outcome})
            self.last_method = method
        else:
            self.gc.ctl("PUT", f"objects/mandates/{method}", {"status": "active", **json.loads(raw)})
        h.sql(self.db, "INSERT INTO payment_methods (organisation_id, provider, object_id, customer_id, kind,"
                       " exp_month, exp_year, status, is_default, raw, provider_customer) VALUES ($1::bigint, $2, $3,"
                       " $4::bigint, $5, CASE WHEN $5 = 'card' THEN 12 END, CASE WHEN $5 = 'card' THEN $6::smallint"
                       " END, 'active', true, $7::jsonb, nullif($8, ''))",
              self.org, provider, method, cid, kind, str(exp_year), raw, cus or "")
        if preferred:
            h.sql(self.db, "INSERT INTO payment_terms (organisation_id, customer_id, type, day, auto_collect,"
                           " preferred_method) VALUES ($1::bigint, $2::bigint, 'DAYSAFTERBILLDATE', 30, true, $3)",
                  self.org, cid, preferred)
        return cid, contact

    def invoice(self, contact, total="120.00", status="AUTHORISED"):
        iid = str(uuid.uuid4())
        self.xero.put(self.tenant, "invoices", iid,
                      pl.invoice(iid, int(time.time() * 1000), total, status=status, contact_id=contact))
        return iid

    def sync(self):
        res = h.run_settled(["sync", "xero"], self.env, timeout=120)
        expect_eq(res.returncode, 0, f"settled sync xero (stderr {res.stderr[-1500:]!r})")

    def collect(self, at):
        """`settled collect --at at`; returns how many attempts it planned."""
        res = h.run_settled(["collect", "--at", at], self.env, timeout=120)
        expect_eq(res.returncode, 0, f"settled collect --at {at} (stderr {res.stderr[-1500:]!r})")
        m = re.search(r"planned (\d+), sent (\d+), notified (\d+)", res.stdout)
        expect(m is not None, "settled collect prints what it did", res.stdout)
        return int(m.group(1))

    def attempts(self, iid):
        return [dict(zip(["attempt", "status", "method", "code", "object", "charge_date", "amount", "notified"], r))
                for r in h.sql_rows(self.db, "SELECT attempt, status, method, failure_code, provider_object_id,"
                                             " charge_date::text, amount_minor, notified_at IS NOT NULL"
                                             " FROM collection_attempts WHERE invoice_id = $1::uuid ORDER BY attempt",
                                    iid)]

    def wait_settled(self, iid, n, what):
        """Waits until iid has n attempts, none planned, sending or (for Stripe) submitted."""
        def done():
            self.settle()
            a = self.attempts(iid)
            return len(a) == n and all(x["status"] not in ("planned", "sending", "submitted") for x in a)
        pl.wait_for(done, 60, what)
        return self.attempts(iid)

    def pis(self, sid):
        return [p for p in self.stripe.ctl("GET", "objects/payment_intents")
                if p.get("metadata", {}).get("settled_invoice_id") == sid]

    def api(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Authorization": f"Bearer {self.admin}"}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        status, rh, out = self.server.request(method, path, body=data, headers=hdrs)
        openapi_check.response(method, path, status, rh, out)
        return status, (json.loads(out) if out else None)

    def notices(self, sid):
        return sorted(tuple(r) for r in h.sql_rows(
            self.db, "SELECT kind, channel FROM notifications WHERE invoice_id = $1", sid))


def scene(fn, **env):
    w = Scene(**env)
    try:
        fn(w)
    finally:
        w.close()


def test_card_charged_once_on_the_due_date():
    def body(w):
        _, contact = w.customer("succeed")
        iid = w.invoice(contact, "120.00")
        w.sync()
        sid = w.settled_invoice_id(iid)
        expect_eq(w.collect("2025-01-30T23:59:59Z"), 0,
                  "nothing a second before the due date (UTC)")
        expect_eq(w.collect(f"{DUE}T00:00:01Z"), 1, "one attempt a second into the due date")
        a = w.wait_settled(iid, 1, "the attempt's outcome")
        expect_eq([x["status"] for x in a], ["succeeded"], "the attempt succeeded through the webhook")
        pis = w.pis(sid)
        expect_eq(len(pis), 1, "one PaymentIntent")
        pi = pis[0]
        expect_eq((pi["amount"], pi["currency"], pi["payment_method"], pi["status"]),
                  (12000, "gbp", w.last_method, "succeeded"), "the PaymentIntent charges the outstanding amount")
        expect_eq(pi["metadata"], {"settled_invoice_id": sid, "xero_invoice_id": iid,
                                   "settled_collection_attempt": h.sql_value(
                                       w.db, "SELECT id FROM collection_attempts WHERE invoice_id = $1::uuid", iid)},
                  "the metadata names the invoice and the attempt")
        expect_eq(a[0]["object"], pi["id"], "the attempt holds the PaymentIntent")
        expect_eq(w.state(iid)["state"], "paid", "the ledger has the payment")
        expect_eq(w.collect(f"{DUE}T12:00:00Z"), 0, "no second attempt the same day")
        expect_eq(w.collect("2025-02-03T12:00:00Z"), 0, "nor later")
        expect_eq(len(w.pis(sid)), 1, "still one PaymentIntent")
        st, doc = w.api("GET", f"/v1/admin/invoices/{sid}/collections")
        expect_eq(st, 200, "the timeline")
        expect_eq([(x["attempt"], x["status"], x["amount"], x["currency"], x["method"]) for x in doc["attempts"]],
                  [(1, "succeeded", "120.00", "GBP", "card")], "the timeline's attempt, its amount a decimal")
        actions = h.sql(w.db, "SELECT string_agg(action, ',' ORDER BY id) FROM audit_log"
                              " WHERE entity_type = 'collection_attempt'")
        expect_eq(actions, "collection.attempt.plan,collection.attempt.send,collection.attempt.submitted,"
                           "collection.attempt.succeeded", "every step of the attempt is audited")

    scene(body)


def test_due_date_in_the_organisations_time_zone():
    def body(w):
        h.sql(w.db, "UPDATE organisations SET timezone = 'Pacific/Auckland' WHERE id = $1::bigint", w.org)
        _, contact = w.customer("succeed")
        iid = w.invoice(contact)
        w.sync()
        # 31 January 00:00 in Auckland (NZDT, UTC+13) is 30 January 11:00 UTC
        expect_eq(w.collect("2025-01-30T10:59:59Z"), 0, "23:59:59 on the 30th in Auckland: not due")
        expect_eq(w.collect("2025-01-30T11:00:01Z"), 1, "00:00:01 on the 31st in Auckland: due")
        w.wait_settled(iid, 1, "the attempt's outcome")
        h.sql(w.db, "UPDATE organisations SET timezone = 'America/Los_Angeles' WHERE id = $1::bigint", w.org)
        _, contact2 = w.customer("succeed")
        iid2 = w.invoice(contact2)
        w.sync()
        # 31 January 00:00 in Los Angeles (PST, UTC-8) is 31 January 08:00 UTC
        expect_eq(w.collect("2025-01-31T07:59:59Z"), 0, "still the 30th in Los Angeles")
        expect_eq(w.collect("2025-01-31T08:00:01Z"), 1, "the 31st in Los Angeles")
        w.wait_settled(iid2, 1, "the second attempt's outcome")

    scene(body)


def test_declined_card_retried_per_policy():
    def body(w):
        _, contact = w.customer("card_declined")
        iid = w.invoice(contact)
        w.sync()
        sid = w.settled_invoice_id(iid)
        days = {"2025-01-31": 1, "2025-02-02": 0, "2025-02-03": 1, "2025-02-07": 0, "2025-02-08": 1,
                "2025-02-14": 0, "2025-02-15": 1, "2025-02-16": 0, "2025-03-15": 0}
        n = 0
        for day, want in days.items():
            expect_eq(w.collect(f"{day}T09:00:00Z"), want, f"attempts planned on {day}")
            n += want
            a = w.wait_settled(iid, n, f"the attempts of {day}")
        expect_eq([(x["attempt"], x["status"], x["code"], x["charge_date"]) for x in a],
                  [("1", "failed", "generic_decline", "2025-01-31"), ("2", "failed", "generic_decline", "2025-02-03"),
                   ("3", "failed", "generic_decline", "2025-02-08"), ("4", "failed", "generic_decline", "2025-02-15")],
                  "the due date, then 3, 5 and 7 days after each failure, then no more")
        expect_eq(len({p["id"] for p in w.pis(sid)}), 4, "one PaymentIntent per attempt (a new key each)")
        pl.wait_for(lambda: all(x["notified"] == "t" for x in w.attempts(iid)), 20, "the notices")
        expect_eq(w.notices(sid), sorted([("collection_failed", "email"), ("collection_failed", "portal")] * 4),
                  "each failure sends the collection_failed notice by e-mail and in the portal")

    scene(body)


def test_retry_stops_once_paid():
    def body(w):
        _, contact = w.customer("card_declined")
        iid = w.invoice(contact, "50.00")
        w.sync()
        sid = w.settled_invoice_id(iid)
        expect_eq(w.collect(f"{DUE}T09:00:00Z"), 1, "the first attempt")
        w.wait_settled(iid, 1, "its failure")
        pm.stripe_pi(w, "pi_paid_by_hand", 5000, settled_invoice_id=sid)
        w.stripe.ctl("POST", "payment_intents/pi_paid_by_hand/succeed", {})
        pl.wait_for(lambda: (w.settle(), w.state(iid)["state"])[1] == "paid", 30, "the invoice paid another way")
        expect_eq(w.collect("2025-02-03T09:00:00Z"), 0, "no retry of a paid invoice")
        expect_eq(len(w.attempts(iid)), 1, "one attempt")

    scene(body)


def test_authentication_required_asks_the_customer():
    def body(w):
        _, contact = w.customer("authentication_required")
        iid = w.invoice(contact)
        w.sync()
        sid = w.settled_invoice_id(iid)
        expect_eq(w.collect(f"{DUE}T09:00:00Z"), 1, "the attempt")
        a = w.wait_settled(iid, 1, "its outcome")
        expect_eq((a[0]["status"], a[0]["code"]), ("action_required", "authentication_required"),
                  "authentication required: the customer must act")
        expect(a[0]["object"] and a[0]["object"].startswith("pi_"), "the PaymentIntent is recorded", a)
        pl.wait_for(lambda: w.attempts(iid)[0]["notified"] == "t", 20, "the notice")
        expect_eq(w.notices(sid), [("collection_failed", "email"), ("collection_failed", "portal")],
                  "an e-mail and a portal notification ask to pay in the portal")
        expect_eq(w.collect("2025-02-03T09:00:00Z"), 0, "never retried")
        expect_eq(len(w.pis(sid)), 1, "one PaymentIntent")

    scene(body)


def test_nothing_collected_when_paid_pending_voided_or_paused():
    def body(w):
        cases = {}
        for name in ("paid", "pending", "voided", "invoice_paused", "customer_paused", "collected"):
            cid, contact = w.customer("succeed")
            cases[name] = (cid, w.invoice(contact, "30.00", status="VOIDED" if name == "voided" else "AUTHORISED"))
        w.sync()
        sids = {k: w.settled_invoice_id(v[1]) for k, v in cases.items()}
        for name, state in (("paid", "succeed"), ("pending", "processing")):
            pid = f"pi_{name}_by_hand"
            pm.stripe_pi(w, pid, 3000, settled_invoice_id=sids[name])
            w.stripe.ctl("POST", f"payment_intents/{pid}/{state}", {})
        st, doc = w.api("POST", f"/v1/admin/invoices/{sids['invoice_paused']}/collection-pause",
                        {"reason": "disputed by phone"})
        expect_eq((st, doc["paused"], doc["pause"]["reason"]), (200, True, "disputed by phone"), "invoice paused")
        st, doc = w.api("POST", f"/v1/admin/customers/{cases['customer_paused'][0]}/collection-pause",
                        {"reason": "payment plan"})
        expect_eq((st, doc["paused"]), (200, True), "customer paused")
        st, _ = w.api("POST", f"/v1/admin/invoices/{sids['invoice_paused']}/collection-pause", {})
        expect_eq(st, 400, "a pause needs a reason")
        pl.wait_for(lambda: (w.settle(), w.state(cases["pending"][1])["state"])[1] == "pending", 30, "pending")
        expect_eq(w.state(cases["paid"][1])["state"], "paid", "paid")
        expect_eq(w.collect(f"{DUE}T09:00:00Z"), 1, "only the invoice nothing stands in the way of")
        w.wait_settled(cases["collected"][1], 1, "its attempt")
        for name in ("paid", "pending", "voided", "invoice_paused", "customer_paused"):
            expect_eq(w.attempts(cases[name][1]), [], f"no attempt for the {name} invoice")
            expect_eq(w.pis(sids[name]) if name not in ("paid", "pending") else [], [], f"no PaymentIntent: {name}")
        st, doc = w.api("GET", f"/v1/admin/invoices/{sids['invoice_paused']}/collections")
        expect_eq((st, doc["invoice_pause"]["reason"], doc["attempts"]), (200, "disputed by phone", []),
                  "the timeline shows the pause")
        st, doc = w.api("DELETE", f"/v1/admin/invoices/{sids['invoice_paused']}/collection-pause")
        expect_eq((st, doc["paused"]), (200, False), "invoice unpaused")
        st, doc = w.api("DELETE", f"/v1/admin/customers/{cases['customer_paused'][0]}/collection-pause")
        expect_eq((st, doc["paused"]), (200, False), "customer unpaused")
        expect_eq(w.collect(f"{DUE}T10:00:00Z"), 2, "both unpaused invoices are collected")
        expect_eq(h.sql(w.db, "SELECT string_agg(action, ',' ORDER BY id) FROM audit_log"
                              " WHERE action LIKE 'collection.%pause'"),
                  "collection.pause,collection.pause,collection.unpause,collection.unpause",
                  "pauses and unpauses are audited")
        other = mint(202, int(w.org) + 1000, "admin")
        status, _, _ = w.server.request("GET", f"/v1/admin/invoices/{sids['collected']}/collections",
                                        headers={"Authorization": f"Bearer {other}"})
        expect_eq(status, 404, "another organisation's invoice is 404")

    scene(body)


def test_gocardless_charged_on_the_due_date():
    def body(w):
        _, c1 = w.customer("MD000COLLECT1", kind="direct_debit", preferred="direct_debit",
                           raw='{"next_possible_charge_date": "2025-01-28"}')
        _, c2 = w.customer("MD000COLLECT2", kind="direct_debit", preferred="direct_debit",
                           raw='{"next_possible_charge_date": "2025-02-04"}')
        i1, i2 = w.invoice(c1, "80.00"), w.invoice(c2, "90.00")
        w.sync()
        expect_eq(w.collect("2025-01-23T09:00:00Z"), 0, "eight days before: not yet")
        expect_eq(w.collect("2025-01-24T09:00:00Z"), 2, "seven days before (the lead): both planned")
        w.settle()
        got = {p["links"]["mandate"]: p for p in w.gc.ctl("GET", "objects/payments")}
        expect_eq(sorted(got), ["MD000COLLECT1", "MD000COLLECT2"], "one payment per mandate")
        p1, p2 = got["MD000COLLECT1"], got["MD000COLLECT2"]
        expect_eq((p1["amount"], p1["currency"], p1["charge_date"], p1["retry_if_possible"]),
                  (8000, "GBP", "2025-01-31", True), "charged on the due date, GoCardless retrying")
        expect_eq(p2["charge_date"], "2025-02-04", "or on the mandate's next possible charge date when later")
        expect_eq(p1["metadata"]["settled_invoice_id"], w.settled_invoice_id(i1), "the metadata names the invoice")
        for iid, pid in ((i1, p1["id"]), (i2, p2["id"])):
            a = w.attempts(iid)
            expect_eq([(x["method"], x["status"], x["object"]) for x in a], [("direct_debit", "submitted", pid)],
                      "the attempt holds the payment")
        expect_eq(w.collect("2025-01-31T09:00:00Z"), 0, "not again on the due date")
        w.gc.ctl("POST", f"payments/{p1['id']}/submitted", {})
        w.gc.ctl("POST", f"payments/{p1['id']}/failed", {})
        pl.wait_for(lambda: (w.settle(), w.attempts(i1)[0]["status"])[1] == "failed", 30, "the failure")
        expect_eq(w.collect("2025-02-05T09:00:00Z"), 0, "a failed direct debit is not resubmitted by settled")

    scene(body, SETTLED_COLLECT_DIRECT_DEBIT_RETRY="true")


def test_two_instances_and_kill9_collect_each_invoice_once():
    def body(w):
        h.sql(w.db, "UPDATE organisations SET timezone = 'UTC' WHERE id = $1::bigint", w.org)
        rng = random.Random()
        worker = pl.Worker(w.env)
        try:
            for rnd in range(3):
                ids = []
                for _ in range(4):
                    _, contact = w.customer("succeed")
                    ids.append(w.invoice(contact, f"{rng.randint(10, 99)}.00"))
                w.sync()
                # due today: both instances plan (every second) and send
                h.sql(w.db, "UPDATE xero_invoices SET due_date = (now() AT TIME ZONE 'UTC')::date"
                            " WHERE invoice_id = ANY ($1::uuid[])", "{" + ",".join(ids) + "}")
                w.stripe.ctl("POST", "faults", [{"mode": "slow", "delay_ms": rng.randint(100, 900),
                                                "path_prefix": "/v1/payment_intents", "method": "POST",
                                                "count": 0}])
                time.sleep(rng.uniform(0.0, 2.5))
                worker.kill9()
                worker.start()
                for iid in ids:
                    a = w.wait_settled(iid, 1, f"round {rnd}: the attempt of {iid}")
                    expect_eq(a[0]["status"], "succeeded", "the attempt succeeded")
                    expect_eq(len(w.pis(w.settled_invoice_id(iid))), 1, f"round {rnd}: one PaymentIntent")
                w.stripe.ctl("DELETE", "faults")
        finally:
            worker.stop()

    scene(body, SETTLED_COLLECT_INTERVAL=1)


def test_sql_planning_skip_rules():
    """collect_candidate's reasons, each case in a transaction rolled back."""
    def body(w):
        cid, contact = w.customer("succeed")
        iid = w.invoice(contact, "40.00")
        w.sync()
        sid = w.settled_invoice_id(iid)
        tenant = w.tenant

        def reason(mutation="SELECT 1", at=f"{DUE}T09:00:00Z"):
            out = h.sql(w.db, f"BEGIN; {mutation}; SELECT 'R=' || coalesce(reason, 'ok') || ':' ||"
                              f" coalesce(charge_date::text, '-') FROM collect_candidate({w.org}, '{tenant}',"
                              f" '{iid}', '{at}', '{{3,5,7}}', 7, 3, false); ROLLBACK;")
            m = re.search(r"R=([a-z_]+):(\S+)", out)
            expect(m is not None, "collect_candidate answers", out)
            return m.group(1)

        inv = f"organisation_id = {w.org} AND invoice_id = '{iid}'"
        expect_eq(reason(), "ok", "a due card invoice is collected")
        expect_eq(reason(at="2025-01-30T23:00:00Z"), "not_due", "before the due date")
        expect_eq(reason(at="2025-02-04T09:00:00Z"), "too_late", "after the catch-up days")
        expect_eq(reason(f"UPDATE xero_invoices SET status = 'VOIDED' WHERE {inv}"), "voided", "voided")
        expect_eq(reason(f"UPDATE invoice_payment_states SET outstanding_minor = 0 WHERE {inv}"),
                  "nothing_outstanding", "nothing outstanding")
        expect_eq(reason(f"UPDATE invoice_payment_states SET disputed_minor = 100 WHERE {inv}"), "disputed",
                  "disputed")
        pay = ("INSERT INTO payments (organisation_id, provider, object_id, xero_tenant_id, xero_invoice_id,"
               f" amount_minor, currency, status, raw) VALUES ({w.org}, '%s', 'obj1', '{tenant}', '{iid}', 100,"
               " 'GBP', '%s', '{}')")
        expect_eq(reason(pay % ("stripe", "processing")), "pending", "a Stripe payment processing")
        expect_eq(reason(pay % ("gocardless", "pending_submission")), "pending", "a GoCardless payment pending")
        expect_eq(reason(pay % ("stripe", "succeeded")), "paid", "a Stripe payment received")
        expect_eq(reason(pay % ("stripe", "requires_payment_method")), "ok", "a failed payment stands in no way")
        expect_eq(reason(f"UPDATE payment_terms SET auto_collect = false WHERE organisation_id = {w.org}"),
                  "auto_collect_off", "auto-collect off")
        expect_eq(reason(f"INSERT INTO payment_terms (organisation_id, customer_id, type, day, auto_collect)"
                         f" VALUES ({w.org}, {cid}, 'DAYSAFTERBILLDATE', 30, false)"),
                  "auto_collect_off", "a customer's override turns it off")
        expect_eq(reason(f"INSERT INTO collection_pauses (organisation_id, customer_id, reason, paused_by)"
                         f" VALUES ({w.org}, {cid}, 'x', 'test')"), "customer_paused", "customer paused")
        expect_eq(reason(f"INSERT INTO collection_pauses (organisation_id, tenant_id, invoice_id, reason, paused_by)"
                         f" VALUES ({w.org}, '{tenant}', '{iid}', 'x', 'test')"), "invoice_paused",
                  "invoice paused")
        expect_eq(reason(f"UPDATE payment_methods SET exp_year = 2024 WHERE organisation_id = {w.org}"),
                  "no_usable_method", "a card expired by the charge date")
        expect_eq(reason(f"UPDATE payment_methods SET is_default = false WHERE organisation_id = {w.org}"),
                  "no_usable_method", "no default method")
        expect_eq(reason(f"UPDATE payment_terms SET preferred_method = 'direct_debit'"
                         f" WHERE organisation_id = {w.org}"), "no_usable_method", "not of the preferred kind")
        expect_eq(reason(f"DELETE FROM payment_methods"
                         f" WHERE organisation_id = {w.org}; DELETE FROM customer_links WHERE customer_id = {cid}"),
                  "no_customer", "an invoice of no customer")
        att = ("INSERT INTO collection_attempts (organisation_id, customer_id, tenant_id, invoice_id,"
               " settled_invoice_id, attempt, method, provider, payment_method, amount_minor, currency,"
               f" charge_date, status, planned_at) VALUES ({w.org}, {cid}, '{tenant}', '{iid}', '{sid}', 1, 'card',"
               " 'stripe', 'pm_x', 4000, 'GBP', '2025-01-31', '%s', now())")
        expect_eq(reason(att % "submitted"), "attempted", "an attempt under way")
        expect_eq(reason(att % "action_required"), "attempted", "an attempt waiting for the customer")
        expect_eq(reason(att % "failed", at="2025-02-02T09:00:00Z"), "retry_not_due", "a retry before its day")
        expect_eq(reason(att % "failed", at="2025-02-03T09:00:00Z"), "ok", "a retry on its day")
        expect_eq(reason(att % "cancelled"), "ok", "a cancelled attempt is planned again")
        # the plan itself: one attempt however often it runs
        out = h.sql(w.db, f"SELECT count(*) FROM collect_plan('{DUE}T09:00:00Z', {w.org}, '{{3,5,7}}', 7, 3, false);"
                          f" SELECT count(*) FROM collect_plan('{DUE}T09:00:01Z', {w.org}, '{{3,5,7}}', 7, 3, false)")
        expect_eq(out.split(), ["1", "0"], "collect_plan plans once")

    scene(body, SETTLED_WORKERS=1)


if __name__ == "__main__":
    try:
        h.run(globals())
    finally:
        pm.stop_mocks()
