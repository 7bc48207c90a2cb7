#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_api_collections_view.py: what admins see of collections (docs/collections.md, "Timeline and dashboard"):
GET /v1/admin/dashboard and GET /v1/admin/invoices/{id}/timeline, on a real `settled serve` against invoices,
payments and collection attempts seeded as the mirror, the ledger and the collector store them.

Checked, with every figure worked out here from the seeded rows: per currency the outstanding, overdue and due-this-
week amounts and counts (only AUTHORISED invoices reconciliation has seen; voided, paid and other organisations'
left out; JPY with no decimals), the AUTHORISED invoices not reconciled yet, the money collected this month by
provider and method (Stripe succeeded, GoCardless collected; not last month's, not a payment still processing, not
another organisation's), this month's failed and authentication-needing attempts (not a succeeded one, not last
month's); the other organisation's admin sees only its own. The timeline: each step of the default plan with its
day and status before and after `settled dunning` enqueues the one that is due, the next step, the messages, the
attempts, and the plan ended once the invoice is paid; another organisation's invoice is 404. An attempt sent
and unanswered for 23 hours is parked dead rather than sent again under a key the provider may have forgotten.
Every answer is checked against docs/openapi.yaml."""

import datetime
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
import openapi_check  # noqa: E402
from harness import expect, expect_eq  # noqa: E402
from test_api_invoices import JWT_SECRET, jwt_env, mint  # noqa: E402

TX = "11111111-1111-4111-8111-111111111111"
TY = "22222222-2222-4222-8222-222222222222"
ZONE = "Pacific/Auckland"


class Scene:
    def __init__(self):
        self.db = h.new_database("view")
        db = self.db
        self.org = {}
        for slug in ("x", "y"):
            self.org[slug] = h.sql_value(db, "WITH i AS (INSERT INTO organisations (slug, name, timezone) VALUES "
                                             "($1, $1, $2) RETURNING id) SELECT id FROM i", f"org-{slug}", ZONE)
        self.customers, self.contacts, self.n = {}, {}, 0
        for name, slug, tenant in (("A", "x", TX), ("B", "x", TX), ("C", "y", TY)):
            org = self.org[slug]
            cid = h.sql_value(db, "WITH i AS (INSERT INTO customers (organisation_id, name, email) VALUES ($1, $2, $3)"
                                  " RETURNING id) SELECT id FROM i", org, f"Customer {name}", f"{name.lower()}@example.com")
            contact = f"cccccccc-0000-4000-8000-{int(cid):012d}"
            h.sql(db, "INSERT INTO xero_contacts (organisation_id, tenant_id, contact_id, name, updated_date_utc, raw, "
                      "customer_id) VALUES ($1, $2, $3, $4, now(), '{}', $5)", org, tenant, contact, name, cid)
            h.sql(db, "INSERT INTO customer_links (organisation_id, provider, external_id, customer_id, rule) "
                      "VALUES ($1, 'xero', $2, $3, 'admin')", org, contact, cid)
            self.customers[name], self.contacts[name] = cid, (org, tenant, contact)
        self.today = datetime.date.fromisoformat(
            h.sql_value(db, "SELECT organisation_today($1, now())::text", self.org["x"]))
        self.month_start = self.today.replace(day=1)
        self.invoices = {}

    def invoice(self, key, owner, total, due_in, currency="GBP", status="AUTHORISED", state=None, paid=0):
        """A sales invoice of owner due due_in days from the organisation's today; state: the payment state
        reconciliation stored (None: not reconciled), with paid minor units paid of the total."""
        org, tenant, contact = self.contacts[owner]
        self.n += 1
        iid = f"00000000-0000-4000-8000-{self.n:012d}"
        due = (self.today + datetime.timedelta(days=due_in)).isoformat()
        h.sql(self.db, "INSERT INTO xero_invoices (organisation_id, tenant_id, invoice_id, invoice_number, type, "
                       "status, contact_id, currency_code, date, due_date, total, amount_due, amount_paid, "
                       "amount_credited, updated_date_utc, raw, settled_invoice_id) VALUES ($1, $2, $3, $4, 'ACCREC', "
                       "$5, $6, $7, $8::date - 30, $8, $9, $9, 0, 0, now(), '{}', $10)",
              org, tenant, iid, f"INV-{self.n:04d}", status, contact, currency, due, total, f"inv_view_{key}")
        if state is not None:
            exp = 0 if currency == "JPY" else 2
            minor = int(round(float(total) * 10 ** exp))
            st = {"tenant_id": tenant, "invoice_id": iid, "currency": currency, "due_minor": minor,
                  "paid_minor": paid, "pending_minor": 0, "disputed_minor": 0, "net_paid_minor": paid,
                  "outstanding_minor": minor - paid, "state": state}
            h.sql(self.db, "SELECT pay_store_states($1, $2::jsonb, NULL, 'test')", org, json.dumps([st]))
        self.invoices[key] = (org, tenant, iid, f"inv_view_{key}", owner)
        return f"inv_view_{key}"

    def payment(self, slug, provider, oid, minor, received, status, method, paid_on, collected=False):
        h.sql(self.db, "INSERT INTO payments (organisation_id, provider, object_id, amount_minor, received_minor, "
                       "currency, status, method, raw, paid_on, was_collected) VALUES ($1, $2, $3, $4, $5, 'GBP', $6, "
                       "$7, '{}', $8, $9)", self.org[slug], provider, oid, minor, received, status, method,
              paid_on.isoformat(), "true" if collected else "false")

    def attempt(self, key, n, method, provider, minor, status, completed):
        org, tenant, iid, sid, owner = self.invoices[key]
        h.sql(self.db, "INSERT INTO collection_attempts (organisation_id, customer_id, tenant_id, invoice_id, "
                       "settled_invoice_id, attempt, method, provider, payment_method, amount_minor, currency, "
                       "charge_date, status, planned_at, completed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
                       "'pm_view', $9, 'GBP', $10, $11, $12::timestamptz, $12::timestamptz)",
              org, self.customers[owner], tenant, iid, sid, n, method, provider, minor, self.today.isoformat(),
              status, completed)


def get(s, path, token, status=200):
    st, rh, body = s.get(path, headers={"Authorization": f"Bearer {token}"})
    openapi_check.response("GET", path, st, rh, body)
    expect_eq(st, status, f"GET {path} (body {body[:300]!r})")
    return json.loads(body) if st == 200 else None


def figure(doc, currency, name):
    cur = [c for c in doc["currencies"] if c["currency"] == currency]
    expect_eq(len(cur), 1, f"one entry for {currency}")
    return cur[0][name] if name != "entry" else cur[0]


def test_dashboard_and_timeline():
    sc = Scene()
    x, y = sc.org["x"], sc.org["y"]
    today, month_start = sc.today, sc.month_start
    sc.invoice("over", "A", "100.00", -10, state="unpaid")
    sc.invoice("week", "A", "50.50", 3, state="partially_paid", paid=3000)
    sc.invoice("later", "B", "20.00", 30, state="unpaid")
    sc.invoice("jpy", "B", "1000", -1, currency="JPY", state="unpaid")
    sc.invoice("eur", "B", "75.00", 5, currency="EUR")                   # not reconciled yet
    sc.invoice("paid", "A", "10.00", -3, state="paid", paid=1000)        # nothing outstanding
    sc.invoice("void", "A", "50.00", -3, status="VOIDED", state="unpaid")
    sc.invoice("y", "C", "999.00", -5, state="unpaid")                   # the other organisation's

    last_month = month_start - datetime.timedelta(days=1)
    sc.payment("x", "stripe", "pi_view_1", 3000, 3000, "succeeded", "card", today)
    sc.payment("x", "stripe", "pi_view_2", 1000, 0, "processing", "card", today)
    sc.payment("x", "gocardless", "PMVIEW1", 1234, 0, "paid_out", "bacs", today, collected=True)
    sc.payment("x", "stripe", "pi_view_old", 700, 700, "succeeded", "card", last_month)
    sc.payment("y", "stripe", "pi_view_y", 5555, 5555, "succeeded", "card", today)

    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    before_month = (datetime.datetime.combine(month_start, datetime.time(0))
                    - datetime.timedelta(days=2)).isoformat() + "+00:00"
    sc.attempt("over", 1, "card", "stripe", 10000, "failed", now)
    sc.attempt("over", 2, "card", "stripe", 10000, "action_required", now)
    sc.attempt("week", 1, "direct_debit", "gocardless", 2050, "succeeded", now)
    sc.attempt("later", 1, "card", "stripe", 2000, "failed", before_month)

    env = jwt_env()
    admin_x, admin_y = mint(201, x, "admin"), mint(202, y, "admin")
    with h.Settled(sc.db, env=env) as s:
        d = get(s, "/v1/admin/dashboard", admin_x)
        expect_eq((d["today"], d["timezone"], d["month_start"]), (today.isoformat(), ZONE, month_start.isoformat()),
                  "the organisation's today, zone and month")
        expect_eq(sorted(c["currency"] for c in d["currencies"]), ["EUR", "GBP", "JPY"], "the currencies")
        expect_eq(figure(d, "GBP", "outstanding"), {"amount": "140.50", "invoices": 3}, "GBP outstanding")
        expect_eq(figure(d, "GBP", "overdue"), {"amount": "100.00", "invoices": 1}, "GBP overdue")
        expect_eq(figure(d, "GBP", "due_this_week"), {"amount": "20.50", "invoices": 1}, "GBP due this week")
        expect_eq(figure(d, "JPY", "outstanding"), {"amount": "1000", "invoices": 1}, "JPY outstanding")
        expect_eq(figure(d, "JPY", "overdue"), {"amount": "1000", "invoices": 1}, "JPY overdue (yesterday)")
        expect_eq(figure(d, "JPY", "due_this_week"), {"amount": "0", "invoices": 0}, "JPY due this week")
        expect_eq(figure(d, "EUR", "unreconciled_invoices"), 1, "EUR not reconciled yet")
        expect_eq(figure(d, "EUR", "outstanding"), {"amount": "0.00", "invoices": 0}, "EUR: nothing reconciled")
        expect_eq(figure(d, "GBP", "collected_this_month"),
                  {"amount": "42.34", "payments": 2,
                   "by_method": [{"provider": "gocardless", "method": "bacs", "amount": "12.34", "payments": 1},
                                 {"provider": "stripe", "method": "card", "amount": "30.00", "payments": 1}]},
                  "collected this month")
        expect_eq(figure(d, "GBP", "failed_collections_this_month"),
                  {"amount": "200.00", "attempts": 2,
                   "by_method": [{"provider": "stripe", "method": "card", "amount": "200.00", "attempts": 2}]},
                  "failed collections this month")
        dy = get(s, "/v1/admin/dashboard", admin_y)
        expect_eq([c["currency"] for c in dy["currencies"]], ["GBP"], "Y sees only its own")
        expect_eq(figure(dy, "GBP", "outstanding"), {"amount": "999.00", "invoices": 1}, "Y's outstanding")
        expect_eq(figure(dy, "GBP", "collected_this_month")["amount"], "55.55", "Y's collected")

        # the timeline of the invoice due in 3 days: the default plan (-10, -5, -1, 0, 3, 7 days)
        path = "/v1/admin/invoices/inv_view_week/timeline"
        t = get(s, path, admin_x)
        day = lambda off: (today + datetime.timedelta(days=3 + off)).isoformat()  # noqa: E731
        expect_eq((t["due_date"], t["due_date_source"], t["open"], t["auto_collected"], t["plan_source"]),
                  (day(0), "xero", True, False, "default"), "the invoice's dates and plan")
        expect_eq([(st["offset_days"], st["day"], st["status"]) for st in t["steps"]],
                  [(-10, day(-10), "skipped"), (-5, day(-5), "due"), (-1, day(-1), "upcoming"),
                   (0, day(0), "upcoming"), (3, day(3), "upcoming"), (7, day(7), "upcoming")],
                  "nothing enqueued yet: the latest step whose day came is due, the one before skipped, the others upcoming")
        expect_eq(t["next_step"]["offset_days"], -1, "the next step")
        expect_eq([(a["attempt"], a["status"], a["amount"]) for a in t["attempts"]], [(1, "succeeded", "20.50")],
                  "the attempts")
        expect_eq(t["messages"], [], "no message yet")

        res = h.run_settled(["dunning", "--at", now], {"SETTLED_DATABASE_URL": sc.db})
        expect_eq(res.returncode, 0, f"settled dunning: {res.stdout} {res.stderr[-1000:]}")
        t = get(s, path, admin_x)
        sent = [st for st in t["steps"] if st["offset_days"] == -5][0]
        expect(sent["status"] in ("pending", "sending", "sent"), f"the step due 2 days ago is enqueued: {sent}")
        expect(sent["notification_id"] is not None, "with its notification")
        expect_eq([(m["id"], m["kind"], m["channel"]) for m in t["messages"]],
                  [(sent["notification_id"], "invoice_due", "email")], "the reminder is the invoice's message")
        expect_eq([st["status"] for st in t["steps"] if st["offset_days"] == -10], ["skipped"], "-10 stays skipped")

        # paid: the plan ends
        org, tenant, iid, sid, owner = sc.invoices["week"]
        h.sql(sc.db, "SELECT pay_store_states($1, $2::jsonb, NULL, 'test')", org, json.dumps([{
            "tenant_id": tenant, "invoice_id": iid, "currency": "GBP", "due_minor": 5050, "paid_minor": 5050,
            "pending_minor": 0, "disputed_minor": 0, "net_paid_minor": 5050, "outstanding_minor": 0,
            "state": "paid"}]))
        h.sql(sc.db, "UPDATE xero_invoices SET status = 'PAID', amount_due = 0 WHERE invoice_id = $1", iid)
        t = get(s, path, admin_x)
        expect_eq((t["open"], t["next_step"]), (False, None), "the plan ended")
        expect_eq([st["status"] for st in t["steps"] if st["offset_days"] >= -1], ["ended"] * 4,
                  "the steps to come ended with it")
        d = get(s, "/v1/admin/dashboard", admin_x)
        expect_eq(figure(d, "GBP", "due_this_week"), {"amount": "0.00", "invoices": 0}, "paid: not due any more")

        # an attempt sent and unanswered for 23 hours is not sent again under its key (Stripe may have forgotten it)
        org, tenant, iid, sid, owner = sc.invoices["later"]
        ids = {}
        for n, age in ((2, "24 hours"), (3, "1 hour")):
            ids[age] = h.sql_value(sc.db, "WITH i AS (INSERT INTO collection_attempts (organisation_id, customer_id, "
                                          "tenant_id, invoice_id, settled_invoice_id, attempt, method, provider, "
                                          "payment_method, amount_minor, currency, charge_date, status, planned_at, "
                                          "lease_owner, lease_until, sending_since) VALUES ($1, $2, $3, $4, $5, $6, "
                                          "'card', 'stripe', 'pm_view', 2000, 'GBP', current_date, 'sending', now(), "
                                          "'view-owner', now() + interval '1 minute', now() - $7::interval) "
                                          "RETURNING id) SELECT id FROM i",
                                   org, sc.customers[owner], tenant, iid, sid, n, age)
        expect_eq(h.sql_value(sc.db, "SELECT collect_begin($1, 'view-owner')", ids["24 hours"]), "dead",
                  "unanswered for a day: dead")
        expect_eq(h.sql_rows(sc.db, "SELECT status, failure_code FROM collection_attempts WHERE id = $1",
                             ids["24 hours"]), [["dead", "idempotency_window_passed"]], "parked with why")
        expect_eq(h.sql_value(sc.db, "SELECT count(*) FROM audit_log WHERE action = 'collection.attempt.dead' "
                                     "AND entity_id = $1", ids["24 hours"]), "1", "audited")
        expect_eq(h.sql_value(sc.db, "SELECT collect_begin($1, 'view-owner')", ids["1 hour"]), "send",
                  "unanswered for an hour: sent again under the same key")
        get(s, "/v1/admin/invoices/inv_view_y/timeline", admin_x, status=404)   # Y's invoice
        get(s, "/v1/admin/invoices/inv_view_nothing/timeline", admin_x, status=404)
        get(s, "/v1/admin/dashboard", mint(101, x, "client", sc.customers["A"]), status=404)


if __name__ == "__main__":
    h.run(globals())
