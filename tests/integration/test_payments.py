# SPDX-License-Identifier: MIT
"""test_payments.py: Stripe and GoCardless payments end to end through the real binary, the mock
Stripe, GoCardless and Xero APIs (tests/mock/) and a real PostgreSQL: signed webhooks from the mocks,
refetch, the ledger, the invoice link by metadata, and each invoice's payment state in the view
invoice_payment_state (docs/reconciliation.md).

Python 3 standard library only; every wait is bounded and every process is stopped by its PID.
``python3 test_payments.py test_a test_b`` runs only the named tests.
"""

import decimal
import time
import uuid

import harness as h
import paymentslib as pm
import pipelinelib as pl
from harness import expect, expect_eq, expect_in

STRIPE_KEY = pm.STRIPE_KEY
World, mocks, amounts, stripe_pi, gc_payment = pm.World, pm.mocks, pm.amounts, pm.stripe_pi, pm.gc_payment


def test_stripe_payment_pays_its_invoice():
    inv = str(uuid.uuid4())
    w = World({inv: "100.00"})
    try:
        expect_eq(w.state(inv)["state"], "unpaid", "a mirrored invoice without payments is reconciled as unpaid")
        expect_eq(w.state(inv)["outstanding"], 10000, "its outstanding amount is its total")
        stripe_pi(w, "pi_full1", 10000, xero_invoice_id=inv)
        w.stripe.ctl("POST", "payment_intents/pi_full1/processing", {})
        w.settle()
        expect_eq(amounts(w.state(inv), state=1, pending=1, outstanding=1),
                  {"state": "pending", "pending": 10000, "outstanding": 10000}, "processing is pending")
        w.stripe.ctl("POST", "payment_intents/pi_full1/succeed", {})
        w.settle()
        expect_eq(amounts(w.state(inv), state=1, paid=1, pending=1, outstanding=1),
                  {"state": "paid", "paid": 10000, "pending": 0, "outstanding": 0}, "succeeded pays the invoice")
        # the ledger holds each fact once, whatever the number of events
        facts = h.sql_rows(w.db, "SELECT object_type, state, amount_minor FROM ledger_entries"
                                 " WHERE object_id = 'pi_full1' ORDER BY id")
        expect_eq(facts, [["payment", "processing", "10000"], ["payment", "succeeded", "10000"]], "ledger facts")
        row = h.sql_rows(w.db, "SELECT provider, currency, status, received_minor, link_key, xero_invoice_id::text"
                               " FROM payments WHERE object_id = 'pi_full1'")
        expect_eq(row, [["stripe", "GBP", "succeeded", "10000", "xero_invoice_id", inv]], "the payments row")
        audit = h.sql_rows(w.db, "SELECT after ->> 'state' FROM audit_log WHERE action = 'invoice.payment_state'"
                                 " AND entity_id = $1 ORDER BY id", inv)
        expect_eq([a[0] for a in audit], ["unpaid", "pending", "paid"], "each state change is audited once")
        # replaying the events changes nothing
        n = h.sql_value(w.db, "SELECT count(*) FROM ledger_entries")
        res = h.run_settled(["replay", "--since", "2000-01-01T00:00:00Z", "--provider", "stripe"], w.env)
        expect_eq(res.returncode, 0, f"settled replay (stderr {res.stderr[-800:]!r})")
        pl.wait_drained(w.db, 30)
        expect_eq(h.sql_value(w.db, "SELECT count(*) FROM ledger_entries"), n, "a replay adds no fact")
        expect_eq(w.state(inv)["state"], "paid", "and the state holds")
    finally:
        w.close()


def test_partial_payment_refund_and_settled_invoice_id():
    inv = str(uuid.uuid4())
    w = World({inv: "250.00"})
    try:
        sid = h.sql_value(w.db, "SELECT settled_invoice_id FROM xero_invoices WHERE invoice_id = $1", inv)
        expect(sid.startswith("inv_") and len(sid) == 36, f"a settled invoice id: {sid!r}")
        stripe_pi(w, "pi_part1", 10000, settled_invoice_id=sid)
        w.stripe.ctl("POST", "payment_intents/pi_part1/succeed", {})
        w.settle()
        expect_eq(amounts(w.state(inv), state=1, paid=1, outstanding=1),
                  {"state": "partially_paid", "paid": 10000, "outstanding": 15000}, "a partial payment is recorded")
        ch = w.stripe.ctl("GET", "objects/payment_intents/pi_part1")["latest_charge"]
        w.stripe.ctl("POST", f"charges/{ch}/refund", {"amount": 2500})
        w.settle()
        expect_eq(amounts(w.state(inv), state=1, paid=1, refunded=1, net_paid=1, outstanding=1),
                  {"state": "partially_refunded", "paid": 10000, "refunded": 2500, "net_paid": 7500,
                   "outstanding": 17500}, "a partial refund")
        expect_eq(h.sql_rows(w.db, "SELECT status, amount_minor FROM refunds"), [["succeeded", "2500"]], "refunds row")
        # written back to Xero: its AmountDue equals settled's outstanding, with one live Xero payment of ours
        expect_eq(w.wait_written_back(inv, "the write-back of the net payment"), 17500, "Xero's AmountDue = outstanding")
        live = [p for p in w.xero.ctl("GET", f"tenants/{w.tenant}/payments")
                if p["InvoiceID"].lower() == inv and p["Status"] == "AUTHORISED"]
        expect_eq([(decimal.Decimal(str(p["Amount"])), p["Reference"].startswith("settled:stripe:pi_part1:"))
                   for p in live], [(decimal.Decimal("75.00"), True)],
                  "one Xero payment of the net amount, referenced as settled's")
    finally:
        w.close()


def test_gocardless_payment_and_late_failure():
    inv = str(uuid.uuid4())
    w = World({inv: "40.00"})
    try:
        gc_payment(w, "PM0001LATE", 4000, xero_invoice_id=inv)
        for action in ("submitted", "confirmed"):
            w.gc.ctl("POST", f"payments/PM0001LATE/{action}", {})
        w.settle()
        expect_eq(amounts(w.state(inv), state=1, paid=1, outstanding=1),
                  {"state": "paid", "paid": 4000, "outstanding": 0}, "a confirmed direct debit pays the invoice")
        w.gc.ctl("POST", "payments/PM0001LATE/paid_out", {})
        w.gc.ctl("POST", "payments/PM0001LATE/late_failure", {})
        w.settle()
        st = w.state(inv)
        expect_eq(amounts(st, state=1, paid=1, late_failed=1, net_paid=1, outstanding=1),
                  {"state": "unpaid", "paid": 4000, "late_failed": 4000, "net_paid": 0, "outstanding": 4000},
                  "a late failure takes the money back")
        expect_in("late_failure", st["flags"], "and is flagged")
    finally:
        w.close()


def test_payment_before_its_invoice_waits_and_asks_the_mirror():
    inv = str(uuid.uuid4())
    w = World({inv: "30.00"}, mirror=False)
    try:
        expect_eq(h.sql_value(w.db, "SELECT count(*) FROM xero_invoices"), "0", "the invoice is not mirrored")
        stripe_pi(w, "pi_early1", 3000, xero_invoice_id=inv)
        w.stripe.ctl("POST", "payment_intents/pi_early1/succeed", {})
        w.settle()
        pl.wait_for(lambda: h.sql_value(w.db, "SELECT count(*) FROM xero_invoices WHERE invoice_id = $1", inv) == "1",
                    15, "the mirror to fetch the invoice the payment named")
        expect_eq(amounts(w.state(inv), state=1, outstanding=1), {"state": "paid", "outstanding": 0},
                  "the waiting payment is applied once the invoice is mirrored")
        expect_eq(h.sql_value(w.db, "SELECT link_wanted FROM payments WHERE object_id = 'pi_early1'"), None,
                  "it waits no more")
    finally:
        w.close()


def test_unapplied_payment_and_ignored_events():
    inv = str(uuid.uuid4())
    w = World({inv: "10.00"})
    try:
        stripe_pi(w, "pi_none1", 1000)
        w.stripe.ctl("POST", "payment_intents/pi_none1/succeed", {})
        stripe_pi(w, "pi_bad1", 1000, xero_invoice_id="not-a-uuid")
        w.stripe.ctl("POST", "payment_intents/pi_bad1/succeed", {})
        w.settle()
        rows = h.sql_rows(w.db, "SELECT object_id, link_error IS NOT NULL FROM unapplied_payments ORDER BY object_id")
        expect_eq(rows, [["pi_bad1", "t"], ["pi_none1", "f"]], "payments naming no usable invoice are unapplied")
        expect_eq(w.state(inv)["state"], "unpaid", "and change no invoice")
        # an event of a type settled does not use is stored as ignored with the reason
        ignored = h.sql_rows(w.db, "SELECT event_type, last_error FROM webhook_events WHERE status = 'ignored'")
        expect(all(r[1] for r in ignored), f"every ignored event has a reason: {ignored}")
        expect_eq(h.sql_value(w.db, "SELECT count(*) FROM webhook_events WHERE status = 'dead'"), "0", "none dead")
    finally:
        w.close()


def test_invoices_settled_cannot_reconcile_exactly():
    bad_cur, bad_digits, jpy = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    w = World({}, mirror=False)
    try:
        w.put_invoice(bad_cur, "10.00", currency="XYZ")
        w.put_invoice(bad_digits, "10.50", currency="JPY")  # yen have no decimals
        w.put_invoice(jpy, "1200.00", currency="JPY")
        res = h.run_settled(["sync", "xero"], w.env, timeout=120)
        expect_eq(res.returncode, 0, f"settled sync xero (stderr {res.stderr[-800:]!r})")
        for inv, why in ((bad_cur, "not an ISO 4217 code"), (bad_digits, "not exact amounts")):
            row = h.sql_rows(w.db, "SELECT state, due_minor, problem FROM invoice_payment_states WHERE invoice_id = $1",
                             inv)
            expect_eq(row[0][:2], ["not_reconcilable", None], "no amounts, never a guess")
            expect_in(why, row[0][2], "the reason")
        expect_eq(amounts(w.state(jpy), state=1, due=1), {"state": "unpaid", "due": 1200},
                  "yen counted in whole yen (exponent 0)")
        stripe_pi(w, "pi_jpy1", 1200, currency="jpy", xero_invoice_id=jpy)
        w.stripe.ctl("POST", "payment_intents/pi_jpy1/succeed", {})
        w.settle()
        expect_eq(amounts(w.state(jpy), state=1, paid=1, outstanding=1),
                  {"state": "paid", "paid": 1200, "outstanding": 0}, "a yen payment pays a yen invoice")
    finally:
        w.close()


def test_shuffled_duplicated_deliveries_converge():
    invs = [str(uuid.uuid4()) for _ in range(3)]
    w = World({invs[0]: "50.00", invs[1]: "80.00", invs[2]: "20.00"}, workers=2)
    try:
        for m in (w.stripe, w.gc):
            m.ctl("PUT", "webhook", {"hold": True, "duplicate": 1})
        stripe_pi(w, "pi_mix1", 2000, xero_invoice_id=invs[0])
        stripe_pi(w, "pi_mix2", 3000, xero_invoice_id=invs[0])
        for p in ("pi_mix1", "pi_mix2"):
            w.stripe.ctl("POST", f"payment_intents/{p}/processing", {})
            w.stripe.ctl("POST", f"payment_intents/{p}/succeed", {})
        stripe_pi(w, "pi_mix3", 8000, xero_invoice_id=invs[1])
        w.stripe.ctl("POST", "payment_intents/pi_mix3/succeed", {})
        ch = w.stripe.ctl("GET", "objects/payment_intents/pi_mix3")["latest_charge"]
        w.stripe.ctl("POST", f"charges/{ch}/dispute", {})
        disputes = w.stripe.ctl("GET", "objects/disputes")
        did = [d["id"] for d in (disputes.get("data") if isinstance(disputes, dict) else disputes)][0]
        w.stripe.ctl("POST", f"disputes/{did}/close", {"status": "lost"})
        gc_payment(w, "PM0001MIX", 2000, xero_invoice_id=invs[2])
        for action in ("submitted", "confirmed", "paid_out", "charged_back", "chargeback_cancelled"):
            w.gc.ctl("POST", f"payments/PM0001MIX/{action}", {})
        for m in (w.stripe, w.gc):
            m.ctl("POST", "webhook/flush", {"order": "shuffle", "seed": 7})
        w.settle(60)
        expect_eq(amounts(w.state(invs[0]), state=1, paid=1, outstanding=1),
                  {"state": "paid", "paid": 5000, "outstanding": 0}, "two payments of one invoice")
        expect_eq(amounts(w.state(invs[1]), state=1, paid=1, charged_back=1, outstanding=1),
                  {"state": "charged_back", "paid": 8000, "charged_back": 8000, "outstanding": 8000},
                  "a lost dispute")
        st = w.state(invs[2])
        expect_eq(amounts(st, state=1, paid=1, outstanding=1), {"state": "paid", "paid": 2000, "outstanding": 0},
                  "a cancelled chargeback")
        expect_in("chargeback_reversed", st["flags"], "flagged")
        expect_eq(h.sql_value(w.db, "SELECT count(*) FROM payments"), "4", "one payments row per provider payment")
    finally:
        w.close()


def test_regressions_races_other_systems_shipped():
    """Two events for one invoice in the same instant left a paid invoice open; two racing events for one
    payment created two payments. Four workers, no coalescing, every delivery sent four times."""
    inv = str(uuid.uuid4())
    w = World({inv: "60.00"}, workers=4, SETTLED_PAYMENTS_COALESCE_MS=0)
    try:
        w.stripe.ctl("PUT", "webhook", {"hold": True, "duplicate": 3})
        for p, amount in (("pi_race1", 2500), ("pi_race2", 3500)):
            stripe_pi(w, p, amount, xero_invoice_id=inv)
            w.stripe.ctl("POST", f"payment_intents/{p}/succeed", {})
        w.stripe.ctl("POST", "webhook/flush", {"order": "fifo"})
        w.settle(60)
        expect_eq(amounts(w.state(inv), state=1, paid=1, outstanding=1),
                  {"state": "paid", "paid": 6000, "outstanding": 0}, "both payments counted")
        expect_eq(h.sql_rows(w.db, "SELECT object_id, count(*) FROM payments GROUP BY 1 ORDER BY 1"),
                  [["pi_race1", "1"], ["pi_race2", "1"]], "one payments row each")
        expect_eq(h.sql_value(w.db, "SELECT count(*) FROM (SELECT object_id, state FROM ledger_entries"
                                    " GROUP BY 1, 2 HAVING count(*) > 1) d"), "0", "no fact twice")
        sent = w.stripe.ctl("GET", "deliveries")
        sent = sent.get("deliveries", sent) if isinstance(sent, dict) else sent
        stored = int(h.sql_value(w.db, "SELECT count(*) FROM webhook_events WHERE provider = 'stripe'"))
        expect(len(sent) >= 4 * stored and stored >= 4, f"{len(sent)} deliveries of {stored} distinct events")
    finally:
        w.close()


def test_payment_methods_from_events():
    w = World({})
    try:
        w.stripe.ctl("PUT", "objects/customers/cus_pm1", {"email": "Pay.Methods@example.com", "name": "PM Ltd"})
        w.stripe.ctl("PUT", "objects/payment_methods/pm_card1", {})
        w.stripe.ctl("PUT", "objects/setup_intents/seti_pm1", {"customer": "cus_pm1"})
        w.stripe.ctl("POST", "setup_intents/seti_pm1/succeed", {"payment_method": "pm_card1"})
        w.gc.ctl("PUT", "objects/customers/CU0001PM", {"email": "dd@example.com", "company_name": "DD Ltd"})
        w.gc.ctl("PUT", "objects/customer_bank_accounts/BA0001PM", {"links": {"customer": "CU0001PM"}})
        w.gc.ctl("PUT", "objects/mandates/MD0001PM", {"status": "submitted", "scheme": "bacs", "links": {
            "customer": "CU0001PM", "customer_bank_account": "BA0001PM"}})
        w.gc.ctl("POST", "mandates/MD0001PM/active", {})
        w.settle()
        rows = h.sql_rows(w.db, "SELECT provider, object_id, kind, status, coalesce(last4 ~ '^[0-9]{4}$', false)"
                                " FROM payment_methods"
                                " ORDER BY object_id")
        expect_eq(rows, [["gocardless", "MD0001PM", "direct_debit", "active", "f"],
                         ["stripe", "pm_card1", "card", "active", "t"]],
                  "the mandate from mandates.active, the card from setup_intent.succeeded")
        expect_eq(h.sql_value(w.db, "SELECT count(*) FROM matching_queue WHERE provider = 'stripe'"
                                    " AND external_id = 'cus_pm1'"), "1",
                  "its customer matches no portal customer: it waits in the matching queue")
        expect_eq(h.sql_value(w.db, "SELECT count(*) FROM webhook_events WHERE status IN ('dead', 'failed')"), "0",
                  "no payment-method event failed")
    finally:
        w.close()


def test_sync_repairs_missed_webhooks():
    inv_s, inv_g = str(uuid.uuid4()), str(uuid.uuid4())
    w = World({inv_s: "12.00", inv_g: "34.00"})
    try:
        for m in (w.stripe, w.gc):
            m.ctl("PUT", "webhook", {"enabled": False})  # every webhook is lost
        stripe_pi(w, "pi_sync1", 1200, xero_invoice_id=inv_s)
        w.stripe.ctl("POST", "payment_intents/pi_sync1/succeed", {})
        ch = w.stripe.ctl("GET", "objects/payment_intents/pi_sync1")["latest_charge"]
        w.stripe.ctl("POST", f"charges/{ch}/refund", {"amount": 200})
        gc_payment(w, "PM0001SYNC", 3400, xero_invoice_id=inv_g)
        for action in ("submitted", "confirmed"):
            w.gc.ctl("POST", f"payments/PM0001SYNC/{action}", {})
        time.sleep(0.5)
        expect_eq(h.sql_value(w.db, "SELECT count(*) FROM payments"), "0", "no webhook arrived")
        env = dict(w.env, SETTLED_STRIPE_WEBHOOK_SECRETS=h.STRIPE_SECRET,
                   SETTLED_GOCARDLESS_WEBHOOK_SECRETS=h.GOCARDLESS_SECRET)
        res = h.run_settled(["sync", "stripe", "--since", "1h"], env, timeout=120)
        expect_eq(res.returncode, 0, f"sync stripe (stderr {res.stderr[-800:]!r})")
        expect_in("listed 1 objects, applied 1", res.stdout, "the summary")
        res = h.run_settled(["sync", "gocardless"], env, timeout=120)
        expect_eq(res.returncode, 0, f"sync gocardless (stderr {res.stderr[-800:]!r})")
        expect_eq(amounts(w.state(inv_s), state=1, refunded=1, outstanding=1),
                  {"state": "partially_refunded", "refunded": 200, "outstanding": 200}, "stripe repaired")
        expect_eq(amounts(w.state(inv_g), state=1, outstanding=1), {"state": "paid", "outstanding": 0},
                  "gocardless repaired")
        n = h.sql_value(w.db, "SELECT count(*) FROM ledger_entries")
        res = h.run_settled(["sync", "stripe", "--since", "1h"], env, timeout=120)
        expect_eq((res.returncode, h.sql_value(w.db, "SELECT count(*) FROM ledger_entries")), (0, n),
                  "a second sync adds no fact")
        # bad input: clear errors, nothing written
        res = h.run_settled(["sync", "stripe", "--since", "not a time"], env)
        expect_eq(res.returncode, 2, "a bad --since is a usage error")
        expect_in("--since: not a timestamp", res.stderr, "names the flag")
        res = h.run_settled(["sync", "stripe", "--source", "nope"], env)
        expect_eq(res.returncode, 1, "an unknown source")
        expect_in("no stripe webhook source named nope", res.stderr, "names the source")
        res = h.run_settled(["sync", "stripe"], dict(env, SETTLED_STRIPE_SECRET_KEY=None))
        expect_in("SETTLED_STRIPE_SECRET_KEY is required", res.stderr, "no key")
        expect(STRIPE_KEY not in res.stdout + res.stderr, "the key is never printed")
    finally:
        w.close()


def test_per_source_api_keys_and_connect_accounts():
    """SETTLED_STRIPE_SECRET_KEY__<SOURCE>: the events of a source are refetched with its own key, and `settled sync
    stripe --source S` lists with it, the platform's objects and then each connected account's whose events came
    through the source; the default source keeps the provider's key (which the mock now refuses)."""
    inv_eu, inv_conn, inv_def = (str(uuid.uuid4()) for _ in range(3))
    eu_secret, eu_key = "whsec_eu_source_secret_1", "sk_test_eu_source"
    w = World({inv_eu: "10.00", inv_conn: "20.00", inv_def: "30.00"},
              SETTLED_STRIPE_WEBHOOK_SECRETS__EU=eu_secret, SETTLED_STRIPE_SECRET_KEY__EU=eu_key)
    try:
        w.stripe.ctl("PUT", "config", {"api_keys": [eu_key]})  # the provider-wide key no longer works
        w.stripe.ctl("PUT", "webhook", {"url": w.server.url("/webhooks/stripe/eu"), "secret": eu_secret})
        stripe_pi(w, "pi_eu1", 1000, xero_invoice_id=inv_eu)
        w.stripe.ctl("POST", "payment_intents/pi_eu1/succeed", {})
        w.settle()
        expect_eq(w.state(inv_eu)["state"], "paid", "the eu source's event was refetched with the eu key")

        # a connected account: its event names it, the refetch carries Stripe-Account
        w.stripe.ctl("PUT", "accounts/acct_conn1")
        w.stripe.ctl("PUT", "objects/payment_intents/pi_conn1?account=acct_conn1",
                     {"amount": 2000, "currency": "gbp", "metadata": {"xero_invoice_id": inv_conn}})
        w.stripe.ctl("POST", "payment_intents/pi_conn1/processing", {"account": "acct_conn1"})
        w.settle()
        expect_eq(w.state(inv_conn)["state"], "pending", "the connected account's payment is processing")
        expect_eq(h.sql_value(w.db, "SELECT account FROM payments WHERE object_id = 'pi_conn1'"), "acct_conn1",
                  "the payment belongs to the connected account")
        # its success is never delivered: the sync of the eu source finds it in the connected account
        w.stripe.ctl("PUT", "webhook", {"enabled": False})
        w.stripe.ctl("POST", "payment_intents/pi_conn1/succeed", {"account": "acct_conn1"})
        time.sleep(0.3)
        expect_eq(w.state(inv_conn)["state"], "pending", "nothing arrived")
        env = dict(w.env, SETTLED_STRIPE_WEBHOOK_SECRETS=h.STRIPE_SECRET)
        res = h.run_settled(["sync", "stripe", "--source", "eu", "--since", "1h"], env, timeout=120)
        expect_eq(res.returncode, 0, f"sync of the eu source (stderr {res.stderr[-800:]!r})")
        expect_in("stripe: source eu,", res.stdout, "the summary names the source")
        expect_eq(w.state(inv_conn)["state"], "paid", "the connected account's payment was listed and applied")
        calls = [c for c in w.stripe.ctl("GET", "requests") if c["path"].startswith("/v1/payment_intents")]
        expect(any(c["account"] == "acct_conn1" for c in calls), "the sync called the connected account")
        expect(any(c["account"] is None for c in calls), "and the platform account")

        # the default source has no key of its own: the provider-wide one, which the mock refuses
        w.stripe.ctl("PUT", "webhook", {"enabled": True, "url": w.server.url("/webhooks/stripe"),
                                        "secret": h.STRIPE_SECRET})
        stripe_pi(w, "pi_def1", 3000, xero_invoice_id=inv_def)
        w.stripe.ctl("POST", "payment_intents/pi_def1/succeed", {})
        pl.wait_for(lambda: h.sql_value(w.db, "SELECT count(*) FROM webhook_events WHERE source = 'default'"
                                              " AND status IN ('failed', 'dead') AND last_error LIKE '%401%'") != "0",
                    30, "the default source's event fails on the refused key")
        expect_eq(w.state(inv_def)["state"], "unpaid", "nothing was applied with the refused key")
        res = h.run_settled(["sync", "stripe", "--since", "1h"], env, timeout=120)
        expect_eq(res.returncode, 1, "the default source's sync fails")
        expect_in("401", res.stderr, "with the provider's refusal")
        for out in (res.stdout, res.stderr):
            expect(eu_key not in out and STRIPE_KEY not in out, "no key is printed")
    finally:
        w.close()


def test_scheduled_drift_repair():
    inv = str(uuid.uuid4())
    w = World({inv: "15.00"}, SETTLED_PAYMENTS_SYNC_INTERVAL=1)
    try:
        w.stripe.ctl("PUT", "webhook", {"enabled": False})
        stripe_pi(w, "pi_sched1", 1500, xero_invoice_id=inv)
        w.stripe.ctl("POST", "payment_intents/pi_sched1/succeed", {})
        w.server.stop()
        w.server.start()  # the workers' periodic thread runs at once when the pool starts
        pl.wait_for(lambda: h.sql_value(w.db, "SELECT state FROM invoice_payment_state WHERE invoice_id = $1",
                                        inv) == "paid", 30, "the scheduled repair to apply the missed payment")
        pl.wait_for(lambda: h.sql_value(w.db, "SELECT string_agg(provider, ',' ORDER BY provider)"
                                              " FROM payments_sync_state") == "gocardless,stripe", 15,
                    "the high-water marks of both providers' repairs")
    finally:
        w.close()


try:
    h.run(globals())
finally:
    pm.stop_mocks()
