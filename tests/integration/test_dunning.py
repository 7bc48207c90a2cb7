#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_dunning.py: the dunning evaluation, receipts, warnings and the unsubscribe link (docs/collections.md,
"Reminders and dunning", "Receipts and warnings", "Unsubscribe").

A simulated clock: `settled dunning --at <day> 09:00 in the organisation's zone (Pacific/Auckland)` once per day over
30 days, against invoices seeded as the Xero mirror stores them, with a real `settled serve` whose mailer sends what
the evaluations enqueue to settled's own SMTP sink (tests/mock/smtp_sink.py). A payment recorded mid-way goes
through the ledger's own functions (pay_apply_stripe, then pay_store_states as reconciliation stores the state).

Checked: each step of the default plan once, on its day; nothing after the payment, and its receipt once with the
exact amount; an opted-out customer's reminders suppressed and its receipt sent; no reminder for an invoice paid,
pending, disputed, voided or paid in Xero, nor the due-date one for an invoice collected automatically; a step
whose next step's day has come is skipped, not sent late; two concurrent evaluations enqueue each key once; the
mail's List-Unsubscribe and List-Unsubscribe-Post; the token's page (no change on GET), its one-click POST (the
opt-out set, audited, later reminders suppressed, receipts not) and a tampered token refused; expiring-card and
ended-mandate warnings once per method and state; the client's and the admins' opt-out routes, checked against
docs/openapi.yaml, with their access rows.

``python3 test_dunning.py test_a`` runs only the named tests (they build on each other in file order)."""

import datetime
import hashlib
import email
import email.policy
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
import openapi_check  # noqa: E402
from mocktest import Mock  # noqa: E402
from test_api_invoices import JWT_SECRET, mint  # noqa: E402

SINK = os.path.join(os.path.dirname(HERE), "mock", "smtp_sink.py")
FROM = "billing@acme.example"
PORTAL = "https://portal.acme.example"
SECRET_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
TENANT = "00000000-0000-4000-8000-0000000000aa"
ZONE = "Pacific/Auckland"  # NZDT (+13:00) in March: 09:00 there is 20:00 UTC the day before
S = None
SERVER = None
DB = None
IDS = {}
SENT_ON = {}  # dedupe key -> the simulated day its evaluation enqueued it
PLAN_DAYS = {-10: "2026-03-05", -5: "2026-03-10", -1: "2026-03-14", 0: "2026-03-15", 3: "2026-03-18",
             7: "2026-03-22"}
TEMPLATES = {-10: "due_soon", -5: "due_soon", -1: "due_soon", 0: "due_today", 3: "overdue", 7: "final_notice"}


def env(**extra):
    e = {"SETTLED_DATABASE_URL": DB, "SETTLED_PORTAL_URL": PORTAL, "SETTLED_SECRET_KEY": SECRET_KEY,
         "SETTLED_PUBLIC_URL": f"http://127.0.0.1:{IDS['port']}"}
    e.update(extra)
    return e


def dunning(day, *args):
    """One evaluation at 09:00 of day in Auckland; returns its summary line."""
    res = h.run_settled(["dunning", "--at", f"{day}T09:00:00+13:00", *args], env())
    h.expect_eq(res.returncode, 0, f"settled dunning --at {day}: {res.stdout} {res.stderr[-2000:]}")
    return res.stdout


def customer(name, mail, opt_out=False):
    cid = h.sql_value(DB, "WITH i AS (INSERT INTO customers (organisation_id, name, email, reminders_opt_out) "
                          "VALUES ($1, $2, $3, $4) RETURNING id) SELECT id FROM i", IDS["org"], name, mail,
                      "true" if opt_out else "false")
    contact = f"cccccccc-0000-4000-8000-{int(cid):012d}"
    h.sql(DB, "INSERT INTO customer_links (organisation_id, provider, external_id, customer_id, rule) "
              "VALUES ($1, 'xero', $2, $3, 'admin')", IDS["org"], contact, cid)
    IDS[f"contact:{cid}"] = contact
    return cid


def sid_of(name):
    """settled's id of the test's invoice called name (what settled_invoice_id looks like: inv_ and 32 hex)."""
    return "inv_" + hashlib.md5(name.encode()).hexdigest()


def invoice(sid, cid, amount, due="2026-03-15", status="AUTHORISED", currency="GBP", state=None):
    """A sales invoice of customer cid as the mirror stores it; state: an invoice_payment_states row's state (with
    the amounts it implies)."""
    IDS["n"] = IDS.get("n", 0) + 1
    iid = f"00000000-0000-4000-8000-{IDS['n']:012d}"
    h.sql(DB, "INSERT INTO xero_invoices (organisation_id, tenant_id, invoice_id, invoice_number, type, status, "
              "contact_id, currency_code, date, due_date, total, amount_due, amount_paid, amount_credited, "
              "updated_date_utc, raw, settled_invoice_id) VALUES ($1, $2, $3, $4, 'ACCREC', $5, $6, $7, "
              "'2026-02-13', $8, $9, $10, 0, 0, now(), '{}', $11)",
          IDS["org"], TENANT, iid, f"INV-{IDS['n']:04d}", status, IDS[f"contact:{cid}"], currency, due, amount,
          "0" if status == "PAID" else amount, sid_of(sid))
    IDS[sid] = iid
    if state is not None:
        minor = int(round(float(amount) * 100))
        st = {"tenant_id": TENANT, "invoice_id": iid, "currency": currency, "due_minor": minor, "paid_minor": 0,
              "pending_minor": 0, "disputed_minor": 0, "net_paid_minor": 0, "outstanding_minor": minor,
              "state": state}
        if state == "paid":
            st.update(paid_minor=minor, net_paid_minor=minor, outstanding_minor=0)
        elif state == "pending":
            st.update(pending_minor=minor)
        elif state == "disputed":
            st.update(paid_minor=minor, net_paid_minor=minor, disputed_minor=minor, outstanding_minor=0)
        h.sql(DB, "SELECT pay_store_states($1, $2::jsonb, NULL, 'test')", IDS["org"], json.dumps([st]))
    return iid


def pay(sid, pid, minor):
    """A succeeded Stripe PaymentIntent naming invoice sid, applied by the ledger's function, then the state that
    reconciliation would store for it (paid in full)."""
    pi = {"object": "payment_intent", "id": pid, "amount": minor, "amount_received": minor, "currency": "gbp",
          "status": "succeeded", "created": int(time.time()), "metadata": {"settled_invoice_id": sid_of(sid)}}
    h.sql(DB, "SELECT count(*) FROM pay_apply_stripe($1, NULL, now(), $2::jsonb, '[]', '[]', NULL, 'test')",
          IDS["org"], json.dumps(pi))
    st = {"tenant_id": TENANT, "invoice_id": IDS[sid], "currency": "GBP", "due_minor": minor, "paid_minor": minor,
          "pending_minor": 0, "disputed_minor": 0, "net_paid_minor": minor, "outstanding_minor": 0, "state": "paid"}
    h.sql(DB, "SELECT pay_store_states($1, $2::jsonb, NULL, 'test')", IDS["org"], json.dumps([st]))
    return h.sql_value(DB, "SELECT id FROM payments WHERE object_id = $1", pid)


def keys(prefix):
    return sorted(r[0] for r in h.sql_rows(DB, "SELECT dedupe_key FROM notifications WHERE dedupe_key LIKE $1",
                                           prefix + "%"))


def messages(n, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        got = S.ctl("GET", "messages")
        if len(got) >= n or time.monotonic() > deadline:
            return [(m, email.message_from_string(m["data"], policy=email.policy.default)) for m in got]
        time.sleep(0.2)


def wait_sent(timeout=30):
    """Waits until the outbox has no pending e-mail left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if h.sql_value(DB, "SELECT count(*) FROM notifications WHERE channel = 'email' AND status IN "
                           "('pending', 'sending')") == "0":
            return
        time.sleep(0.2)
    raise h.Failure("e-mails still pending: " + str(h.sql_rows(DB, "SELECT dedupe_key, status, last_error FROM "
                                                                    "notifications WHERE status <> 'sent'")))


def text_of(msg):
    return msg.get_body(("plain",)).get_content()


def seed():
    IDS["org"] = h.sql_value(DB, "WITH i AS (INSERT INTO organisations (slug, name, timezone) VALUES ('acme', "
                                 "'Acme Ltd', $1) RETURNING id) SELECT id FROM i", ZONE)
    IDS["other"] = h.sql_value(DB, "WITH i AS (INSERT INTO organisations (slug, name) VALUES ('other', 'Other') "
                                   "RETURNING id) SELECT id FROM i")
    IDS["bob"] = customer("Bob Builder", "bob@client.example")
    IDS["carol"] = customer("Carol", "carol@client.example")
    IDS["opt"] = customer("Opted Out Ltd", "opt@client.example", opt_out=True)
    IDS["auto"] = customer("Auto Ltd", "auto@client.example")
    IDS["dave"] = customer("Dave", "dave@client.example")
    invoice("inv_open", IDS["bob"], "1234.50")
    invoice("inv_paid_mid", IDS["carol"], "100.00")
    invoice("inv_opt", IDS["opt"], "50.00")
    invoice("inv_opt_paid", IDS["opt"], "75.25")
    invoice("inv_auto", IDS["auto"], "20.00")
    invoice("inv_paid", IDS["bob"], "10.00", state="paid")
    invoice("inv_pending", IDS["bob"], "11.00", state="pending")
    invoice("inv_disputed", IDS["bob"], "12.00", state="disputed")
    invoice("inv_voided", IDS["bob"], "13.00", status="VOIDED")
    invoice("inv_xero_paid", IDS["bob"], "14.00", status="PAID")
    # a customer collected automatically: auto-collect on in its terms and a usable default card
    h.sql(DB, "INSERT INTO payment_terms (organisation_id, customer_id, type, day, auto_collect) "
              "VALUES ($1, $2, 'DAYSAFTERBILLDATE', 30, true)", IDS["org"], IDS["auto"])
    h.sql(DB, "INSERT INTO payment_methods (organisation_id, provider, object_id, customer_id, kind, brand, last4, "
              "exp_month, exp_year, status, is_default, raw) VALUES ($1, 'stripe', 'pm_auto', $2, 'card', 'visa', "
              "'4242', 12, 2030, 'active', true, '{}')", IDS["org"], IDS["auto"])


# ---------------------------------------------------------------------------------------------------------------


def test_thirty_days_send_each_step_once_on_its_day():
    day = datetime.date(2026, 3, 1)
    for i in range(30):
        d = (day + datetime.timedelta(days=i)).isoformat()
        before = set(keys(""))
        dunning(d)
        for k in set(keys("")) - before:
            SENT_ON[k] = d
        if d == "2026-03-12":
            IDS["payment"] = pay("inv_paid_mid", "pi_mid_month", 10000)
            IDS["payment_opt"] = pay("inv_opt_paid", "pi_opt", 7525)
    # the open invoice: every step of the default plan, once, on its day
    want = {f"dunning:{sid_of('inv_open')}:{o}:{TEMPLATES[o]}": PLAN_DAYS[o] for o in PLAN_DAYS}
    got = {k: v for k, v in SENT_ON.items() if k.startswith("dunning:" + sid_of("inv_open") + ":")}
    h.expect_eq(got, want, "inv_open: each step on its day")
    h.expect_eq(h.sql_value(DB, "SELECT count(*) FROM notifications WHERE invoice_id = $1", sid_of("inv_open")), "6",
                "six rows, one per step")
    kinds = h.sql_rows(DB, "SELECT kind FROM notifications WHERE invoice_id = $1 ORDER BY id", sid_of("inv_open"))
    h.expect_eq([k[0] for k in kinds], ["invoice_due"] * 3 + ["due_today", "overdue", "final_notice"],
                "the kinds the templates name")
    # paid on the 12th: the steps before it, none after, and its receipt
    got = {k: v for k, v in SENT_ON.items() if k.startswith("dunning:" + sid_of("inv_paid_mid") + ":")}
    h.expect_eq(got, {"dunning:" + sid_of("inv_paid_mid") + ":-10:due_soon": "2026-03-05",
                      "dunning:" + sid_of("inv_paid_mid") + ":-5:due_soon": "2026-03-10"}, "the plan ends with the payment")
    h.expect_eq(SENT_ON.get(f"receipt:{IDS['payment']}"), "2026-03-13", "the receipt, by the next evaluation")
    # the opted-out customer: every reminder stored suppressed, its receipt pending as any
    rows = h.sql_rows(DB, "SELECT dedupe_key, status FROM notifications WHERE invoice_id = $1 ORDER BY id", sid_of("inv_opt"))
    h.expect_eq(len(rows), 6, "inv_opt: the six steps evaluated")
    h.expect(all(r[1] == "suppressed" for r in rows), f"suppressed: {rows}")
    st = h.sql_value(DB, "SELECT status FROM notifications WHERE dedupe_key = $1", f"receipt:{IDS['payment_opt']}")
    h.expect(st in ("pending", "sending", "sent"), f"an opted-out customer's receipt is sent ({st})")
    # nothing for an invoice paid, pending, disputed, voided or paid in Xero
    for sid in ("inv_paid", "inv_pending", "inv_disputed", "inv_voided", "inv_xero_paid"):
        h.expect_eq(keys(f"dunning:{sid_of(sid)}:"), [], f"no reminder for {sid}")
    # collected automatically: no due-date reminder, the others as planned
    got = sorted(k for k in SENT_ON if k.startswith("dunning:" + sid_of("inv_auto") + ":"))
    h.expect_eq(got, sorted(f"dunning:{sid_of('inv_auto')}:{o}:{TEMPLATES[o]}" for o in PLAN_DAYS if o != 0),
                "the due-date step skipped for an invoice collected automatically")
    # the time zone: at 09:00 in Auckland on the 5th it is still the 4th in UTC
    h.expect_eq(h.sql_value(DB, "SELECT organisation_today($1, '2026-03-05T09:00:00+13:00')", IDS["org"]),
                "2026-03-05", "the organisation's today")
    audit = h.sql_value(DB, "SELECT count(*) FROM audit_log WHERE actor = 'system:dunning' AND action IN "
                            "('notification.enqueue', 'notification.suppress')")
    h.expect_eq(audit, h.sql_value(DB, "SELECT count(*) FROM notifications"), "every message audited")


def test_a_second_pass_over_the_month_sends_nothing():
    n = h.sql_value(DB, "SELECT count(*) FROM notifications")
    for d in ("2026-03-05", "2026-03-15", "2026-03-22"):
        out = dunning(d)
        h.expect_in("0 reminders (0 suppressed), 0 receipts, 0 warnings", out, f"{d} again")
    h.expect_eq(h.sql_value(DB, "SELECT count(*) FROM notifications"), n, "nothing new")


def test_a_step_whose_next_step_has_come_is_skipped_not_sent_late():
    # an invoice first seen on the 19th (due on the 15th): -10, -5, -1 and 0 are past and followed by a later
    # step whose day has come: only the overdue notice (+3, the 18th, within SETTLED_DUNNING_GRACE_DAYS) goes
    invoice("inv_late", IDS["bob"], "40.00")
    dunning("2026-03-19")
    h.expect_eq(keys("dunning:" + sid_of("inv_late") + ":"), ["dunning:" + sid_of("inv_late") + ":3:overdue"], "only the latest step due")
    # long overdue (the last step 10 days ago): nothing, however often it is evaluated
    invoice("inv_old", IDS["bob"], "41.00", due="2026-03-01")
    dunning("2026-03-18")
    h.expect_eq(keys("dunning:" + sid_of("inv_old") + ":"), [], "the final notice 10 days late is not sent")


def test_two_concurrent_evaluations_enqueue_each_key_once():
    for i in range(25):
        invoice(f"inv_race_{i:02d}", IDS["carol"], f"{i + 1}.00", due="2026-04-10")
    args = [h.settled_bin(), "dunning", "--at", "2026-04-10T09:00:00+13:00"]
    procs = [subprocess.Popen(args, env=h.settled_env(env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        h.expect_eq(p.returncode, 0, f"both evaluations succeed: {out!r} {err[-1000:]!r}")
    created = sum(int(re.search(rb"(\d+) reminders", out).group(1)) for out, _ in outs)
    h.expect_eq(created, 25, "25 reminders enqueued between the two, none twice")
    race = [sid_of(f"inv_race_{i:02d}") for i in range(25)]
    h.expect_eq(h.sql_value(DB, "SELECT count(*) FROM notifications WHERE invoice_id = ANY ($1::text[])",
                            "{" + ",".join(race) + "}"), "25", "one row per invoice")
    h.expect_eq(h.sql_value(DB, "SELECT count(*) FROM audit_log a JOIN notifications n ON n.id::text = a.entity_id "
                                "AND a.entity_type = 'notification' AND a.action = 'notification.enqueue' "
                                "WHERE n.invoice_id = ANY ($1::text[])", "{" + ",".join(race) + "}"), "25",
                "each audited once")


def test_mail_reaches_the_sink_with_headers_and_exact_amounts():
    wait_sent()
    got = messages(1)
    by_subject = {}
    for env_, msg in got:
        by_subject.setdefault((env_["rcpt"][0], str(msg["Subject"])), []).append(msg)
    bob = by_subject.get(("bob@client.example", "Invoice INV-0001 is due on 2026-03-15"))
    h.expect(bob is not None and len(bob) == 3, f"three due-soon e-mails to bob: {sorted(by_subject)[:20]}")
    msg = bob[0]
    h.expect_in("GBP 1,234.50", text_of(msg), "the exact amount")
    h.expect_in(f"{PORTAL}/invoices/{sid_of('inv_open')}", text_of(msg), "the payment link")
    lu = str(msg["List-Unsubscribe"])
    m = re.search(r"<(http://127\.0\.0\.1:\d+/v1/unsubscribe\?token=([^>]+))>", lu)
    h.expect(m is not None, f"List-Unsubscribe has the unsubscribe URL: {lu}")
    IDS["token"] = m.group(2)
    h.expect(IDS["token"].startswith(f"u1.{IDS['org']}.{IDS['bob']}."), "the token names bob")
    h.expect_in(f"<mailto:{FROM}?subject=unsubscribe%20{IDS['token']}>", lu, "and a mailto with the token")
    h.expect_eq(str(msg["List-Unsubscribe-Post"]), "List-Unsubscribe=One-Click", "RFC 8058 one-click")
    h.expect(not any(e["rcpt"] == ["opt@client.example"] and "Receipt" not in str(m_["Subject"])
                     for e, m_ in got), "no reminder mail to the opted-out customer")
    rec = by_subject.get(("carol@client.example", "Receipt for invoice INV-0002"))
    h.expect(rec is not None and len(rec) == 1, "one receipt to carol")
    h.expect_in("we received GBP 100.00 for invoice INV-0002", text_of(rec[0]), "the receipt's exact amount")
    h.expect_eq(rec[0]["List-Unsubscribe"], None, "no List-Unsubscribe on a receipt")
    rec = by_subject.get(("opt@client.example", "Receipt for invoice INV-0004"))
    h.expect(rec is not None and len(rec) == 1, "the opted-out customer's receipt is sent")
    h.expect_in("GBP 75.25", text_of(rec[0]), "with its amount")


def page(method, query, body=None, headers=None):
    status, rh, out = SERVER.request(method, "/v1/unsubscribe" + query, body=body, headers=headers or {})
    openapi_check.response(method, "/v1/unsubscribe" + query, status, rh, out)
    return status, rh, out


def opt_out(cid):
    return h.sql_value(DB, "SELECT reminders_opt_out FROM customers WHERE id = $1", cid)


def test_unsubscribe_token_page_tamper_and_one_click():
    tok = IDS["token"]
    q = "?token=" + urllib.parse.quote(tok)
    status, rh, out = page("GET", q)
    h.expect_eq(status, 200, f"the page ({out[:200]!r})")
    h.expect_in("text/html", rh.get("content-type", ""), "HTML")
    h.expect_in(b'method="post"', out, "a button that posts")
    h.expect_eq(rh.get("cache-control"), "no-store", "not cached")
    h.expect_eq(opt_out(IDS["bob"]), "f", "GET changes nothing")
    # tampered: a flipped MAC character, another customer's id under bob's MAC, a truncated token, none at all
    mac = tok.rsplit(".", 1)[1]
    flipped = tok[:-1] + ("A" if tok[-1] != "A" else "B")
    other = f"u1.{IDS['org']}.{IDS['carol']}.{mac}"
    for bad in (flipped, other, tok[:-2], "u1.1.1." + "A" * 43, ""):
        status, rh, out = page("GET", "?token=" + urllib.parse.quote(bad))
        h.expect_eq(status, 400, f"GET with a bad token {bad!r}")
        status, rh, out = page("POST", "?token=" + urllib.parse.quote(bad), body=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        h.expect_problem((status, rh, out), 400, "unsubscribe_token_invalid", f"POST with a bad token {bad!r}")
    status, rh, out = page("GET", q + "&customer=1")
    h.expect_eq(status, 400, "only token is accepted")
    h.expect_eq(opt_out(IDS["carol"]), "f", "carol untouched")
    h.expect_eq(opt_out(IDS["bob"]), "f", "bob untouched")
    # RFC 8058: POST to the URL with the form body, no token of any other kind
    for _ in range(2):
        status, rh, out = page("POST", q, body=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        h.expect_eq(status, 200, f"one-click ({out[:200]!r})")
    h.expect_eq(opt_out(IDS["bob"]), "t", "bob opted out")
    rows = h.sql_rows(DB, "SELECT actor, before ->> 'reminders_opt_out', after ->> 'reminders_opt_out', "
                          "after ->> 'changed_by' FROM audit_log WHERE action = 'customer.reminders_opt_out' "
                          "AND entity_id = $1", IDS["bob"])
    h.expect_eq(rows, [[f"unsubscribe:{IDS['bob']}", "false", "true", "unsubscribe"]], "audited once")
    # from now on bob's reminders are suppressed, his receipts are not
    invoice("inv_after", IDS["bob"], "60.00", due="2026-05-10")
    dunning("2026-05-10")
    h.expect_eq(h.sql_value(DB, "SELECT status FROM notifications WHERE dedupe_key = $1", "dunning:" + sid_of("inv_after") + ":0:due_today"),
                "suppressed", "a reminder after unsubscribing is suppressed")
    pid = pay("inv_after", "pi_after", 6000)
    dunning("2026-05-10")
    h.expect_eq(h.sql_value(DB, "SELECT status FROM notifications WHERE dedupe_key = $1", f"receipt:{pid}") in
                ("pending", "sending", "sent"), True, "the receipt is not suppressed")


def test_warnings_once_per_method_and_state():
    # dave's default card ends in February; his invoice is due on 15 March
    invoice("inv_dave", IDS["dave"], "30.00")
    h.sql(DB, "INSERT INTO payment_methods (organisation_id, provider, object_id, customer_id, kind, brand, last4, "
              "exp_month, exp_year, status, is_default, raw) VALUES ($1, 'stripe', 'pm_dave', $2, 'card', 'visa', "
              "'1111', 2, 2026, 'active', true, '{}')", IDS["org"], IDS["dave"])
    mandate = h.sql_value(DB, "WITH i AS (INSERT INTO payment_methods (organisation_id, provider, object_id, "
                              "customer_id, kind, scheme, status, raw) VALUES ($1, 'gocardless', 'MD_dave', $2, "
                              "'direct_debit', 'bacs', 'active', '{}') RETURNING id) SELECT id FROM i",
                          IDS["org"], IDS["dave"])
    card = h.sql_value(DB, "SELECT id FROM payment_methods WHERE object_id = 'pm_dave'")
    for _ in range(2):
        dunning("2026-03-01")
    h.expect_eq(keys("method_expiring:"), [f"method_expiring:{card}:2026-02"], "the expiring card, once")
    h.expect_eq(keys("mandate_ended:"), [], "an active mandate is fine")
    h.sql(DB, "UPDATE payment_methods SET status = 'cancelled', updated_at = now() WHERE id = $1", mandate)
    for _ in range(2):
        dunning("2026-03-02")
    h.sql(DB, "UPDATE payment_methods SET status = 'expired', updated_at = now() WHERE id = $1", mandate)
    dunning("2026-03-03")
    h.expect_eq(keys("mandate_ended:"), [f"mandate_ended:{mandate}:cancelled", f"mandate_ended:{mandate}:expired"],
                "once per mandate and state")
    # a card valid past the due date: no warning (auto's, which expires in 2030)
    h.expect_eq(h.sql_value(DB, "SELECT count(*) FROM notifications WHERE kind = 'method_expiring' AND "
                                "customer_id = $1", IDS["auto"]), "0", "a card that will do")
    # notices are not reminders: an opted-out customer gets them
    h.sql(DB, "UPDATE customers SET reminders_opt_out = true WHERE id = $1", IDS["dave"])
    h.sql(DB, "UPDATE payment_methods SET status = 'failed', updated_at = now() WHERE id = $1", mandate)
    dunning("2026-03-04")
    h.expect_eq(h.sql_value(DB, "SELECT status FROM notifications WHERE dedupe_key = $1",
                            f"mandate_ended:{mandate}:failed") in ("pending", "sending", "sent"), True,
                "a mandate notice is never suppressed")


def api(method, path, token, body=None):
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    status, rh, out = SERVER.request(method, path, body=data, headers=hdrs)
    openapi_check.response(method, path, status, rh, out)
    return status, (json.loads(out) if out and rh.get("content-type", "").endswith("json") else out)


def test_client_and_admin_opt_out_routes_and_access():
    carol = mint(9101, IDS["org"], "client", IDS["carol"])
    admin = mint(9102, IDS["org"], "admin")
    other_admin = mint(9103, IDS["other"], "admin")
    status, doc = api("GET", "/v1/me/reminders", carol)
    h.expect_eq((status, doc["reminders_opt_out"], doc["customer_id"]), (200, False, str(IDS["carol"])), "GET")
    status, doc = api("PUT", "/v1/me/reminders", carol, {"reminders_opt_out": True})
    h.expect_eq((status, doc["reminders_opt_out"], doc["changed_by"]), (200, True, "client"), "PUT")
    h.expect_eq(opt_out(IDS["carol"]), "t", "stored")
    status, doc = api("PUT", "/v1/me/reminders", carol, {"reminders_opt_out": "yes"})
    h.expect_eq(status, 400, "a boolean")
    status, doc = api("PUT", "/v1/me/reminders", carol, {"reminders_opt_out": False, "customer_id": "1"})
    h.expect_eq((status, doc.get("field") if isinstance(doc, dict) else None), (400, "customer_id"),
                "an unknown field is named")
    h.expect_eq(h.sql_value(DB, "SELECT count(*) FROM audit_log WHERE action = 'customer.reminders_opt_out' AND "
                                "actor = 'user:9101' AND entity_id = $1", IDS["carol"]), "1", "audited as the user")
    # the admins: the customer resource shows it, PATCH changes it
    status, doc = api("GET", f"/v1/admin/customers/{IDS['carol']}", admin)
    h.expect_eq((status, doc["reminders_opt_out"]), (200, True), "the admin sees it")
    status, doc = api("PATCH", f"/v1/admin/customers/{IDS['carol']}", admin, {"reminders_opt_out": False})
    h.expect_eq((status, doc["reminders_opt_out"]), (200, False), "the admin changes it")
    h.expect_eq(h.sql_value(DB, "SELECT reminders_opt_out_by FROM customers WHERE id = $1", IDS["carol"]), "admin",
                "by an admin")
    status, doc = api("PATCH", f"/v1/admin/customers/{IDS['carol']}", other_admin, {"reminders_opt_out": True})
    h.expect_eq(status, 404, "another organisation's admin")
    h.expect_eq(opt_out(IDS["carol"]), "f", "unchanged by it")
    # access: anonymous 401, the wrong role 404, a token on the public page is not looked at
    rows = [("GET", "/v1/me/reminders", None, None, 401), ("PUT", "/v1/me/reminders", None,
                                                           {"reminders_opt_out": True}, 401),
            ("GET", "/v1/me/reminders", admin, None, 404), ("PUT", "/v1/me/reminders", admin,
                                                            {"reminders_opt_out": True}, 404),
            ("GET", "/v1/me/reminders", carol, None, 200), ("PUT", "/v1/me/reminders", carol,
                                                            {"reminders_opt_out": False}, 200),
            ("GET", "/v1/unsubscribe?token=" + IDS["token"], None, None, 200),
            ("GET", "/v1/unsubscribe?token=" + IDS["token"], admin, None, 200),
            ("GET", "/v1/unsubscribe?token=" + IDS["token"], carol, None, 200),
            ("GET", "/v1/unsubscribe", carol, None, 400),
            ("POST", "/v1/unsubscribe", admin, None, 400),
            ("DELETE", "/v1/unsubscribe", None, None, 405),
            ("DELETE", "/v1/me/reminders", carol, None, 405)]
    for method, path, tok, body, want in rows:
        status, _ = api(method, path, tok, body) if method != "DELETE" else (
            SERVER.request(method, path, headers={"Authorization": f"Bearer {tok}"} if tok else {})[0], None)
        h.expect_eq(status, want, f"{method} {path} as {'anonymous' if tok is None else 'a token'}")


def test_bad_at_is_a_usage_error():
    res = h.run_settled(["dunning", "--at", "the day after tomorrow"], env())
    h.expect_eq(res.returncode, 2, "a timestamp PostgreSQL does not read")
    res = h.run_settled(["dunning", "--organisation", "nope"], env())
    h.expect_eq(res.returncode, 1, "an unknown organisation")
    res = h.run_settled(["dunning", "--organisation", "other", "--at", "2026-03-15T00:00:00Z"], env())
    h.expect_eq(res.returncode, 0, f"one organisation ({res.stderr[-500:]})")
    h.expect_in("dunning: 1 organisation: 0 reminders", res.stdout, "the other organisation has nothing")


TESTS = [v for k, v in list(globals().items()) if k.startswith("test_")]


def main():
    global S, DB, SERVER
    S = Mock(SINK, "smtp-sink")
    failed = 0
    try:
        DB = h.new_database("dunning")
        IDS["port"] = h.free_port()
        seed()
        SERVER = h.Settled(DB, port=IDS["port"], env={
            "SETTLED_SMTP_URL": f"smtp://127.0.0.1:{S.ctl('GET', 'info')['smtp_port']}", "SETTLED_SMTP_FROM": FROM,
            "SETTLED_SMTP_STARTTLS": "off", "SETTLED_PORTAL_URL": PORTAL, "SETTLED_SECRET_KEY": SECRET_KEY,
            "SETTLED_PUBLIC_URL": f"http://127.0.0.1:{IDS['port']}", "SETTLED_JWT_SECRET": JWT_SECRET,
            "SETTLED_WORKERS": 1, "SETTLED_WORKER_POLL_MS": 200, "SETTLED_DUNNING_INTERVAL": 0,
            "SETTLED_RETRY_SCHEDULE": "300ms,300ms", "SETTLED_HTTP_TIMEOUT_MS": 3000})
        wanted = sys.argv[1:]
        for t in TESTS:
            if wanted and t.__name__ not in wanted:
                continue
            t0 = time.monotonic()
            try:
                t()
                print(f"ok - {t.__name__} ({time.monotonic() - t0:.1f}s)")
            except Exception as e:  # noqa: BLE001
                failed += 1
                print(f"not ok - {t.__name__}\n  {e}")
                print("  " + SERVER.log_tail(20).replace("\n", "\n  "))
            sys.stdout.flush()
        SERVER.stop()
    finally:
        S.stop()
    print(f"{'all passed' if failed == 0 else f'{failed} failed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
