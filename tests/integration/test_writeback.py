# SPDX-License-Identifier: MIT
"""test_writeback.py: the payment write-back to Xero end to end: the real binary (`settled work`), real
PostgreSQL, the shared Redis and the project's mock Xero (tests/mock/xero_api.py, its Payments section). A
provider payment is inserted into `payments` with SQL (the processors are not under test here) and planned with
xero_writeback_plan, as the processors do; the assertions are on the mock: each payment made once with the
exact amount (GBP, JPY, KWD), the invoice's AmountDue = total - target after each new target (a refund deletes
and rewrites, 0 deletes), refusals (a lock date, three decimals) parked as 'refused' without a retry loop, 5xx
retried to in sync, lost answers (fail_after_commit) and kill -9 at random instants during a burst never making
a second payment, no account configured: 'unconfigured' and nothing sent. Every wait is bounded; loopback only.

Through the real processors as well (paymentslib.World: settled serve and the Stripe, GoCardless and Xero mocks):
a payment moved to another invoice and then unlinked by its metadata leaves its old invoice (AmountDue back to the
total), and replayed events with kill -9 at random instants never make a second Xero payment.
"""

import decimal
import json
import os
import random
import socket
import time
import urllib.parse
import urllib.request
import uuid

import harness as h
import paymentslib as pm
import pipelinelib as pl
from harness import expect, expect_eq

D = decimal.Decimal
PAID_ON = "2026-02-10"
SCHEDULE = "0s,1s,1s,2s"  # four retries: a test of 5xx does not wait for the default 10 s


class Scene:
    """A mock Xero with one connected tenant, a migrated database, and `settled work` running."""

    def __init__(self, prefix, account="090", start=True, **extra):
        pl.require("SETTLED_TEST_PG_URL", "SETTLED_BIN")
        self.mock = pl.Mock()
        self.tenant = pl.new_tenant()
        self.db = pl.connected_db(self.mock, [self.tenant], prefix)
        self.org = h.sql_value(self.db, "SELECT organisation_id FROM xero_tenants")
        env = dict(SETTLED_RETRY_SCHEDULE=SCHEDULE, SETTLED_HTTP_TIMEOUT_MS=1000, SETTLED_WORKER_LEASE_MS=1000,
                   SETTLED_LOG_LEVEL="debug")
        if account is not None:
            env["SETTLED_XERO_PAYMENT_ACCOUNT"] = account
        env.update(extra)
        self.env = pl.settled_env(self.mock, self.db, **env)
        self.worker = pl.Worker(self.env, start=start)
        self.n = 0

    def close(self):
        try:
            self.worker.stop()
        finally:
            self.mock.stop()

    def invoice(self, total, currency="GBP"):
        """An AUTHORISED invoice of total (decimal text) in the mock; returns its InvoiceID."""
        iid = str(uuid.uuid4())
        text = pl.invoice(iid, pl.BASE_MS, total).replace('"CurrencyCode": "GBP"', f'"CurrencyCode": "{currency}"')
        self.mock.put(self.tenant, "invoices", iid, text)
        return iid

    def payment(self, iid, currency="GBP", amount=1000):
        """A Stripe payment row linked to invoice iid; returns (payments.id, object id)."""
        self.n += 1
        obj = f"pi_{uuid.uuid4().hex[:16]}"
        pid = h.sql_value(
            self.db,
            "WITH i AS (INSERT INTO payments (organisation_id, provider, object_id, xero_tenant_id, xero_invoice_id,"
            " amount_minor, received_minor, currency, status, raw) VALUES ($1::bigint, 'stripe', $2, $3, $4::uuid,"
            " $5::bigint, $5::bigint, $6, 'succeeded', '{}') RETURNING id) SELECT id FROM i",
            self.org, obj, self.tenant, iid, str(amount), currency,
        )
        return pid, obj

    def plan(self, pid, iid, target, currency="GBP", paid_on=PAID_ON):
        return h.sql_value(
            self.db,
            "SELECT xero_writeback_plan($1::bigint, $2::bigint, $3::uuid, $4::uuid, $5, $6::bigint, $7::date, 'test')",
            self.org, pid, self.tenant, iid, currency, str(target), paid_on,
        )

    def row(self, pid):
        r = h.sql_rows(self.db, "SELECT status, target_minor, written_minor, xero_payment_id, last_error, generation,"
                                " attempts FROM xero_writebacks WHERE payment_id = $1::bigint", pid)
        return dict(zip(["status", "target", "written", "xero_payment", "error", "generation", "attempts"], r[0]))

    def wait_status(self, pid, status, timeout=20):
        def ok():
            r = self.row(pid)
            return r if r["status"] == status and (status != "in_sync" or r["written"] == r["target"]) else None
        try:
            return pl.wait_for(ok, timeout, f"write-back of payment {pid} to be {status}", interval=0.05)
        except h.Failure as e:
            raise h.Failure(f"{e}: row {self.row(pid)}\n{self.worker.log_tail(30)}")

    def payments(self, iid=None):
        """The mock's record of every payment made through the API (deleted included)."""
        got = self.mock.ctl("GET", f"tenants/{self.tenant}/payments")
        return [p for p in got if iid is None or p["InvoiceID"].lower() == iid.lower()]

    def authorised(self, iid):
        return [p for p in self.payments(iid) if p["Status"] == "AUTHORISED"]

    def amount_due(self, iid):
        status, _, body = self.mock.call("GET", f"/_mock/tenants/{self.tenant}/invoices/{iid}")
        expect_eq(status, 200, "the mock's invoice")
        return D(str(json.loads(body, parse_float=D)["AmountDue"]))

    def payment_calls(self, method=None):
        return [r for r in self.mock.api_calls("Payments", tenant=self.tenant)
                if method is None or r.get("method") == method]

    def metric(self, outcome):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.worker.ops_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return h.metric_sum(h.parse_metrics(text), "settled_xero_writebacks_total", outcome=outcome)


def scene(prefix, fn, **kw):
    s = Scene(prefix, **kw)
    try:
        fn(s)
    finally:
        s.close()


def test_written_once_then_follows_a_refund_and_a_full_refund():
    def body(s):
        iid = s.invoice("100.00")
        pid, obj = s.payment(iid, amount=10000)
        started = time.monotonic()
        expect_eq(s.plan(pid, iid, 10000), "planned", "plan")
        r = s.wait_status(pid, "in_sync")
        took = time.monotonic() - started
        print(f"# planned -> in sync through the mock in {took * 1000:.0f} ms")
        expect(took < 2.0, "sent within about a second of being planned", f"{took:.2f}s")
        pays = s.authorised(iid)
        expect_eq([(D(p["Amount"]), p["Date"], p["Account"]) for p in pays], [(D("100.00"), PAID_ON, "090")],
                  "one payment of 100.00 on the day paid into the account")
        expect_eq(pays[0]["Reference"], f"settled:stripe:{obj}:g1", "the Reference names the provider payment")
        expect_eq(pays[0]["PaymentID"], r["xero_payment"], "the row holds the Xero PaymentID")
        expect_eq(s.amount_due(iid), D("0"), "AmountDue after the payment")
        expect_eq(s.plan(pid, iid, 10000), "unchanged", "the same target again")
        time.sleep(0.5)
        expect_eq(len(s.payment_calls("PUT")), 1, "PUT /Payments calls")

        # a partial refund of 40.00: the old payment is deleted and the net 60.00 written
        expect_eq(s.plan(pid, iid, 6000), "planned", "refund")
        s.wait_status(pid, "in_sync")
        all_pays = s.payments(iid)
        expect_eq([(p["Status"], D(p["Amount"])) for p in all_pays],
                  [("DELETED", D("100.00")), ("AUTHORISED", D("60.00"))], "the first deleted, the net written")
        expect_eq(all_pays[1]["Reference"], f"settled:stripe:{obj}:g2", "the new payment's Reference")
        expect_eq(s.amount_due(iid), D("40.00"), "AmountDue = total - target after the refund")
        deletes = [r for r in s.payment_calls("POST") if r["path"].lower().endswith(all_pays[0]["PaymentID"].lower())]
        expect_eq(len(deletes), 1, "one delete call")

        # refunded in full: target 0 deletes what is there
        expect_eq(s.plan(pid, iid, 0), "planned", "full refund")
        r = s.wait_status(pid, "in_sync")
        expect_eq((r["written"], r["xero_payment"]), ("0", None), "nothing written any more")
        expect_eq(s.authorised(iid), [], "no payment left on the invoice")
        expect_eq(s.amount_due(iid), D("100.00"), "AmountDue back to the total")
        expect_eq(len(s.payment_calls("PUT")), 2, "PUT calls in all")
        expect_eq(s.metric("written"), 2, "settled_xero_writebacks_total{outcome=written}")
        expect_eq(s.metric("deleted"), 2, "settled_xero_writebacks_total{outcome=deleted}")
        audit = h.sql_rows(s.db, "SELECT action FROM audit_log WHERE entity_type = 'xero_writeback' ORDER BY id")
        expect_eq([a[0] for a in audit], ["xero.writeback.plan", "xero.writeback.written", "xero.writeback.plan",
                                          "xero.writeback.deleted", "xero.writeback.written", "xero.writeback.plan",
                                          "xero.writeback.deleted"], "the audit trail")
        stats = s.mock.stats()
        expect_eq(stats.get("violations", 0), 0, "no rate-limit violations at the mock")

    scene("wb_refund", body)


def test_currency_exponents():
    def body(s):
        jpy = s.invoice("8000", "JPY")
        kwd = s.invoice("20.000", "KWD")
        kwd3 = s.invoice("20.000", "KWD")
        p1, _ = s.payment(jpy, "JPY", 5000)
        p2, _ = s.payment(kwd, "KWD", 12340)
        p3, _ = s.payment(kwd3, "KWD", 12345)
        s.plan(p1, jpy, 5000, "JPY")
        s.plan(p2, kwd, 12340, "KWD")
        s.plan(p3, kwd3, 12345, "KWD")
        s.wait_status(p1, "in_sync")
        s.wait_status(p2, "in_sync")
        expect_eq([D(p["Amount"]) for p in s.authorised(jpy)], [D("5000")], "JPY 5000 (exponent 0)")
        expect_eq(s.amount_due(jpy), D("3000"), "JPY AmountDue")
        expect_eq([D(p["Amount"]) for p in s.authorised(kwd)], [D("12.34")], "KWD 12.340 (exponent 3)")
        expect_eq(s.amount_due(kwd), D("7.66"), "KWD AmountDue")
        # 12.345 KWD: Xero holds two decimals only, so it is refused (for an admin), never rounded
        r = s.wait_status(p3, "refused")
        expect("more than 2 decimal places" in r["error"], "the reason of the refusal", r["error"])
        expect_eq(s.payments(kwd3), [], "nothing made for 12.345 KWD")

    scene("wb_currency", body)


def test_lock_date_is_refused_without_a_retry_loop():
    def body(s):
        s.mock.ctl("PUT", f"tenants/{s.tenant}/organisation", {"PeriodLockDate": "2026-02-28"})
        iid = s.invoice("50.00")
        pid, _ = s.payment(iid, amount=5000)
        s.plan(pid, iid, 5000)
        r = s.wait_status(pid, "refused")
        expect("period lock date" in r["error"], "the reason names the lock date", r["error"])
        time.sleep(3)  # longer than the whole retry schedule
        expect_eq(len(s.payment_calls("PUT")), 1, "PUT calls: one, no retry loop")
        expect_eq(s.row(pid)["status"], "refused", "still refused")
        expect_eq(s.metric("refused"), 1, "settled_xero_writebacks_total{outcome=refused}")
        expect("write-back refused by Xero" in s.worker.log(), "a log line", s.worker.log_tail(10))
        queue = h.sql_rows(s.db, "SELECT id, status, last_error FROM xero_writebacks"
                                 " WHERE status IN ('refused', 'dead', 'unconfigured')")
        expect_eq(len(queue), 1, "the admins' queue (docs/reconciliation.md)")
        # the admin moves the lock date and retries
        s.mock.ctl("PUT", f"tenants/{s.tenant}/organisation", {"PeriodLockDate": None})
        expect_eq(h.sql_value(s.db, "SELECT xero_writeback_retry($1::bigint, $2::bigint, 'cli:admin', 'x')",
                              s.org, queue[0][0]), "t", "retry")
        s.wait_status(pid, "in_sync")
        expect_eq([D(p["Amount"]) for p in s.authorised(iid)], [D("50.00")], "written after the retry")

    scene("wb_lock", body)


def test_5xx_is_retried_until_in_sync():
    def body(s):
        s.mock.faults([{"mode": "503", "count": 2, "path_prefix": "/api.xro/2.0/Payments", "tenant": s.tenant}])
        iid = s.invoice("30.00")
        pid, _ = s.payment(iid, amount=3000)
        s.plan(pid, iid, 3000)
        s.wait_status(pid, "in_sync", timeout=30)
        expect_eq([D(p["Amount"]) for p in s.authorised(iid)], [D("30.00")], "one payment")
        expect_eq(len(s.payments(iid)), 1, "and no other")
        statuses = [r["status"] for r in s.payment_calls()]
        expect_eq(statuses.count(503), 2, f"two 503s answered (calls {statuses})")
        expect(s.metric("retried") >= 1, "retries counted", s.metric("retried"))

    scene("wb_5xx", body)


def test_a_lost_answer_makes_no_second_payment():
    def body(s):
        s.mock.ctl("PUT", "app", {"fail_after_commit": 2, "fail_after_commit_mode": "drop"})
        iid = s.invoice("80.00")
        pid, _ = s.payment(iid, amount=8000)
        s.plan(pid, iid, 8000)
        s.wait_status(pid, "in_sync", timeout=30)
        expect_eq([D(p["Amount"]) for p in s.payments(iid)], [D("80.00")], "one payment made, though its answer "
                                                                            "was lost")
        s.plan(pid, iid, 2000)  # and the delete's answer is lost too
        s.wait_status(pid, "in_sync", timeout=30)
        expect_eq([(p["Status"], D(p["Amount"])) for p in s.payments(iid)],
                  [("DELETED", D("80.00")), ("AUTHORISED", D("20.00"))], "deleted once, written once")
        expect_eq(s.amount_due(iid), D("60.00"), "AmountDue")
        expect_eq(s.mock.ctl("GET", "app")["fail_after_commit"], 0, "both lost answers were used")

    scene("wb_lost", body)


def test_a_refused_payment_is_written_once_room_is_freed():
    """Two payments of the whole invoice: Xero refuses the second (above AmountDue). When the first is refunded
    (target 0, deleted), the second gets another try and is written: AmountDue ends at total - the second."""
    def body(s):
        iid = s.invoice("100.00")
        p1, _ = s.payment(iid, amount=10000)
        p2, _ = s.payment(iid, amount=10000)
        s.plan(p1, iid, 10000)
        s.wait_status(p1, "in_sync")
        s.plan(p2, iid, 10000)
        r = s.wait_status(p2, "refused")
        expect("exceeds the amount outstanding" in r["error"], "refused as above AmountDue", r["error"])
        s.plan(p1, iid, 0)  # the first one refunded in full
        s.wait_status(p1, "in_sync")
        r = s.wait_status(p2, "in_sync")
        expect_eq(r["written"], "10000", "the second is written now")
        expect_eq([D(p["Amount"]) for p in s.authorised(iid)], [D("100.00")], "one live payment: the second")
        expect_eq(s.amount_due(iid), D("0"), "AmountDue")
        retries = h.sql_rows(s.db, "SELECT actor FROM audit_log WHERE action = 'xero.writeback.retry'")
        expect_eq(retries, [["system:writeback"]], "the retry is audited")

    scene("wb_room", body)


def test_a_lost_answer_then_target_0_leaves_nothing():
    """A PUT commits at Xero but its answer is lost; before the retry the payment is refunded in full (or unlinked:
    target 0). The row holds nothing it knows of, yet Xero has the payment: the sender looks for it by its
    Reference and deletes it, instead of calling the row in sync."""
    def body(s):
        s.mock.ctl("PUT", "app", {"fail_after_commit": 1, "fail_after_commit_mode": "drop"})
        iid = s.invoice("70.00")
        pid, obj = s.payment(iid, amount=7000)
        s.plan(pid, iid, 7000)
        pl.wait_for(lambda: len(s.authorised(iid)) == 1 and h.sql_value(
            s.db, "SELECT unsure AND status = 'pending' AND last_error IS NOT NULL FROM xero_writebacks"
                  " WHERE payment_id = $1::bigint", pid) == "t", 20, "the PUT made at Xero, its answer lost")
        expect_eq(s.row(pid)["xero_payment"], None, "nothing recorded of it")
        expect_eq(s.plan(pid, iid, 0), "planned", "refunded in full before the retry")
        r = s.wait_status(pid, "in_sync")
        expect_eq((r["written"], r["xero_payment"]), ("0", None), "nothing held")
        expect_eq(s.authorised(iid), [], "the payment the lost answer made is deleted")
        expect_eq(s.amount_due(iid), D("70.00"), "AmountDue back to the total")
        expect_eq([p["Reference"] for p in s.payments(iid)], [f"settled:stripe:{obj}:g1"], "made once")
        expect("deleted an unrecorded payment" in s.worker.log(), "logged", s.worker.log_tail(10))

    # the retry after the lost answer waits 5 s: long enough for the new target to come first
    scene("wb_lost0", body, SETTLED_RETRY_SCHEDULE="5s,5s")


def test_kill9_at_random_instants_during_a_burst():
    def body(s):
        rnd = random.Random(int(os.environ.get("SETTLED_TEST_SEED", "0")) or None)
        s.mock.ctl("PUT", "app", {"fail_after_commit": 3, "fail_after_commit_mode": "500"})
        # each payment call takes 120 ms, so that the burst lasts and the kills land with calls in flight
        s.mock.faults([{"mode": "slow", "delay_ms": 120, "count": 0, "path_prefix": "/api.xro/2.0/Payments"}])
        invoices = []
        for i in range(12):
            iid = s.invoice("100.00")
            pid, _ = s.payment(iid, amount=10000)
            invoices.append([iid, pid, 10000 - 500 * i])
        for iid, pid, target in invoices:
            s.plan(pid, iid, target)
        kills, in_flight = 0, 0
        for round_ in range(3):
            time.sleep(rnd.uniform(0.05, 0.6))
            s.worker.kill9()
            kills += 1
            # rows a killed sender held: their calls' outcome is unknown to the database
            in_flight += int(h.sql_value(s.db, "SELECT count(*) FROM xero_writebacks WHERE lease_owner IS NOT NULL"))
            if round_ == 1:  # refunds arrive while the sender is down
                for k in range(0, len(invoices), 3):
                    invoices[k][2] -= 1000
                    s.plan(invoices[k][1], invoices[k][0], invoices[k][2])
            s.worker.start()
        for iid, pid, target in invoices:
            s.wait_status(pid, "in_sync", timeout=90)
        for iid, pid, target in invoices:
            live = s.authorised(iid)
            expect_eq([D(p["Amount"]) for p in live], [D(target) / 100],
                      f"invoice {iid}: exactly one payment of the final target")
            expect_eq(s.amount_due(iid), D("100.00") - D(target) / 100, f"invoice {iid}: AmountDue")
            made = s.payments(iid)
            expect(len(made) <= 3, f"invoice {iid}: at most the first, a refund's rewrite and one cleanup", made)
        print(f"# {kills} kills with {in_flight} rows held, {len(s.payments())} payments made in all for "
              f"{len(invoices)} invoices")
        expect(in_flight >= 1, "at least one kill landed while the sender held a row", in_flight)

    scene("wb_kill", body)


def stripe_set_metadata(w, pi, metadata):
    """The integrator changes the metadata of a PaymentIntent and of its Charge (POST /v1/payment_intents/{id} and
    /v1/charges/{id}): Stripe sends charge.updated for the Charge's (a PaymentIntent's metadata change sends no
    event), and settled refetches the PaymentIntent through it."""
    o = w.stripe.ctl("GET", f"objects/payment_intents/{pi}")
    w.stripe.ctl("PUT", f"objects/payment_intents/{pi}", dict(o, metadata=metadata))
    ch = w.stripe.ctl("GET", f"objects/charges/{o['latest_charge']}")
    w.stripe.ctl("PUT", f"objects/charges/{ch['id']}", dict(ch, metadata=metadata))
    w.stripe.ctl("POST", "events", {"type": "charge.updated", "id": ch["id"],
                                    "previous_attributes": {"metadata": ch["metadata"]}})


def test_a_payment_moved_or_unlinked_leaves_its_old_invoice():
    """End to end (settled serve, the Stripe and Xero mocks): a payment written back to invoice A whose metadata
    then names invoice B is taken off A and written to B; when its metadata names no invoice any more it is taken
    off B too. Each time the old invoice's AmountDue in Xero returns to its total and settled's outstanding
    follows."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    w = pm.World({a: "100.00", b: "100.00"})
    try:
        def row():
            r = h.sql_rows(w.db, "SELECT w.invoice_id::text, w.target_minor, w.written_minor, w.status,"
                                 " p.xero_invoice_id::text FROM xero_writebacks w JOIN payments p ON p.id = w.payment_id"
                                 " WHERE p.object_id = 'pi_moved1'")
            return r[0] if r else None

        def settled_to(invoice, target, what):
            w.settle()
            pl.wait_for(lambda: (r := row()) is not None and r[0] == invoice and r[1:4] == [str(target), str(target),
                                                                                           "in_sync"],
                        30, what)

        def live():
            return [(p["InvoiceID"].lower(), D(str(p["Amount"]))) for p in w.xero.ctl("GET", f"tenants/{w.tenant}/payments")
                    if p["Status"] == "AUTHORISED"]

        pm.stripe_pi(w, "pi_moved1", 10000, xero_invoice_id=a)
        w.stripe.ctl("POST", "payment_intents/pi_moved1/succeed", {})
        settled_to(a, 10000, "the payment written back to A")
        expect_eq((w.xero_amount_due(a), w.state(a)["outstanding"]), (0, 0), "A paid, in Xero and in settled")
        expect_eq(live(), [(a, D("100.00"))], "one Xero payment, on A")

        # the integrator corrects the invoice: B
        stripe_set_metadata(w, "pi_moved1", {"xero_invoice_id": b})
        settled_to(b, 10000, "the write-back moved to B")
        expect_eq(row()[4], b, "the payment is linked to B")
        expect_eq((w.xero_amount_due(a), w.state(a)["outstanding"], w.state(a)["state"]), (10000, 10000, "unpaid"),
                  "A: AmountDue back to its total, and unpaid in settled")
        expect_eq((w.xero_amount_due(b), w.state(b)["outstanding"]), (0, 0), "B paid")
        expect_eq(live(), [(b, D("100.00"))], "one Xero payment, on B")

        # and then removes the link: the payment names no invoice
        stripe_set_metadata(w, "pi_moved1", {})
        settled_to(b, 0, "the write-back on B taken back to 0")
        expect_eq(row()[4], None, "linked to no invoice")
        expect_eq((w.xero_amount_due(b), w.state(b)["outstanding"], w.state(b)["state"]), (10000, 10000, "unpaid"),
                  "B: AmountDue back to its total, and unpaid in settled")
        expect_eq(w.xero_amount_due(a), 10000, "A untouched")
        expect_eq(live(), [], "no live Xero payment of ours")
        expect_eq(h.sql_value(w.db, "SELECT count(*) FROM unapplied_payments WHERE object_id = 'pi_moved1'"), "1",
                  "an unapplied payment for an admin to allocate")
        made = [(p["InvoiceID"].lower(), p["Status"]) for p in w.xero.ctl("GET", f"tenants/{w.tenant}/payments")]
        expect_eq(sorted(made), sorted([(a, "DELETED"), (b, "DELETED")]), "made once on each, both deleted")
        plans = h.sql_rows(w.db, "SELECT after ->> 'invoice_id', after ->> 'target_minor' FROM audit_log"
                                 " WHERE action = 'xero.writeback.plan' ORDER BY id")
        expect_eq(plans, [[a, "10000"], [b, "10000"], [b, "0"]], "three plans, audited")
    finally:
        w.close()


def own_redis(db):
    """The test Redis's database number db, emptied: for a test whose killed processes leave quota slots behind
    (they free themselves only after a minute), so that neither its next run nor the tests running beside it
    wait for them. None without Redis."""
    url = h.redis_url()
    if not url:
        return None
    hostport = urllib.parse.urlsplit(url).netloc.rsplit("@", 1)[-1]
    host, port = hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as c:
        c.sendall(f"*2\r\n$6\r\nSELECT\r\n${len(str(db))}\r\n{db}\r\n*1\r\n$7\r\nFLUSHDB\r\n".encode())
        got = b""
        while got.count(b"\r\n") < 2:
            chunk = c.recv(100)
            expect(chunk, "Redis answers SELECT and FLUSHDB", got)
            got += chunk
    expect_eq(got, b"+OK\r\n+OK\r\n", "SELECT and FLUSHDB")
    return f"redis://{hostport}/{db}"


def test_replays_and_kill9_never_duplicate_a_write_back():
    """Stripe and GoCardless payments through the real processors (settled serve takes the webhooks, one
    `settled work` processes them and sends the write-backs) while every stored event is replayed again and again
    (`settled replay --since ... --status done,ignored,failed,dead`, also while the worker is down) and the worker
    is killed with SIGKILL at random instants and restarted; Xero's payment calls are slow and some answers are
    lost. Afterwards the mock Xero holds exactly one live payment per provider payment, of its net amount, and
    each invoice's AmountDue equals settled's outstanding."""
    rnd = random.Random(int(os.environ.get("SETTLED_TEST_SEED", "0")) or None)
    started = time.monotonic()
    invoices = [str(uuid.uuid4()) for _ in range(8)]
    redis = own_redis(11)
    w = pm.World({iid: "100.00" for iid in invoices}, workers=0, SETTLED_WORKER_LEASE_MS=1000,
                 SETTLED_HTTP_TIMEOUT_MS=1000, SETTLED_RETRY_SCHEDULE="100ms,200ms,400ms,800ms,1s,1s",
                 **({"SETTLED_REDIS_URL": redis} if redis else {}))
    worker = None
    try:
        # Xero forgets an Idempotency-Key after a second here, so that only settled's own care (the Reference
        # looked for after a lost answer or a kill) keeps a payment from being made twice
        w.xero.ctl("PUT", "app", {"fail_after_commit": 2, "fail_after_commit_mode": "drop", "idempotency_ttl": 1})
        w.xero.faults([{"mode": "slow", "delay_ms": 150, "count": 0, "path_prefix": "/api.xro/2.0/Payments"}])
        payments = {}  # provider payment id -> (provider, invoice, net minor units)
        for i, iid in enumerate(invoices):
            if i % 3 == 2:
                pid = f"PM00RK{i:04d}"
                pm.gc_payment(w, pid, 9000 - 100 * i, emit=True, xero_invoice_id=iid)
                for action in ("submitted", "confirmed"):
                    w.gc.ctl("POST", f"payments/{pid}/{action}", {})
                payments[pid] = ("gocardless", iid, 9000 - 100 * i)
            else:
                pid = f"pi_rk{i:03d}"
                pm.stripe_pi(w, pid, 10000 - 500 * i, xero_invoice_id=iid)
                w.stripe.ctl("POST", f"payment_intents/{pid}/succeed", {})
                payments[pid] = ("stripe", iid, 10000 - 500 * i)
        worker = pl.Worker(w.env)

        def replay(what):
            res = h.run_settled(["replay", "--since", "2000-01-01T00:00:00Z", "--status", "done,ignored,failed,dead"],
                                w.env, timeout=30)
            expect_eq(res.returncode, 0, f"settled replay {what} (stderr {res.stderr[-800:]!r})")

        kills = held = 0
        for round_ in range(4):
            # the events processed so far (all of them, when the worker keeps up) are replayed, and the worker is
            # killed while it processes them again and sends what it planned
            pl.wait_for(lambda: h.sql_value(w.db, "SELECT count(*) FROM webhook_events WHERE status IN"
                                                  " ('pending', 'processing', 'failed')") == "0",
                        20, "the worker to catch up")
            replay("while the worker runs")
            time.sleep(rnd.uniform(0.0, 0.5))
            worker.kill9()
            kills += 1
            held += int(h.sql_value(w.db, "SELECT count(*) FROM xero_writebacks WHERE lease_owner IS NOT NULL"))
            if round_ == 1:  # refunds arrive meanwhile: new targets, new generations
                for pid, (provider, iid, net) in list(payments.items())[:4]:
                    if provider == "stripe":
                        ch = w.stripe.ctl("GET", f"objects/payment_intents/{pid}")["latest_charge"]
                        w.stripe.ctl("POST", f"charges/{ch}/refund", {"amount": 1500})
                        payments[pid] = (provider, iid, net - 1500)
            replay("while the worker is down")
            worker.start()
        w.settle(30)
        pl.wait_for(lambda: h.sql_value(w.db, "SELECT count(*) FILTER (WHERE status <> 'in_sync') = 0"
                                              " AND count(*) = $1::bigint FROM xero_writebacks",
                                        str(len(payments))) == "t", 45, "every write-back in sync")
        made = w.xero.ctl("GET", f"tenants/{w.tenant}/payments")
        for pid, (provider, iid, net) in payments.items():
            ours = [p for p in made if p["Reference"].startswith(f"settled:{provider}:{pid}:")]
            live = [(p["InvoiceID"].lower(), D(str(p["Amount"]))) for p in ours if p["Status"] == "AUTHORISED"]
            expect_eq(live, [(iid, D(net) / 100)], f"{pid}: exactly one live Xero payment of its net amount")
        for iid in invoices:
            expect_eq(w.xero_amount_due(iid), w.state(iid)["outstanding"], f"invoice {iid}: AmountDue = outstanding")
        dead = h.sql_rows(w.db, "SELECT event_type, last_error FROM webhook_events WHERE status = 'dead'")
        expect_eq(dead, [], "no dead event")
        replayed = h.sql_value(w.db, "SELECT count(*) FROM audit_log WHERE action = 'event.replay'")
        took = time.monotonic() - started
        print(f"# {kills} kills with {held} write-backs held, {replayed} events replayed, {len(made)} Xero payments"
              f" made for {len(payments)} provider payments, in {took:.1f}s")
        expect(int(replayed) > len(payments), "events were replayed", replayed)
        expect(took < 60, "bounded in time", f"{took:.1f}s")
    finally:
        if worker is not None:
            worker.kill9()
        # the mocks are shared by this process's tests
        w.xero.ctl("PUT", "app", {"idempotency_ttl": 3600, "fail_after_commit": 0})
        w.xero.ctl("DELETE", "faults")
        w.close()


def test_unconfigured_account_sends_nothing():
    def body(s):
        iid = s.invoice("10.00")
        pid, _ = s.payment(iid, amount=1000)
        s.plan(pid, iid, 1000)
        r = s.wait_status(pid, "unconfigured")
        expect("SETTLED_XERO_PAYMENT_ACCOUNT" in r["error"], "the reason", r["error"])
        time.sleep(1)
        expect_eq(s.payment_calls(), [], "no call to /Payments")
        expect("wait as unconfigured" in s.worker.log(), "a warning in the log", s.worker.log_tail(10))
        expect_eq(s.metric("unconfigured"), 1, "settled_xero_writebacks_total{outcome=unconfigured}")
        h.sql(s.db, "UPDATE organisations SET xero_payment_account = '970' WHERE id = $1::bigint", s.org)
        s.wait_status(pid, "in_sync")
        expect_eq([(D(p["Amount"]), p["Account"]) for p in s.authorised(iid)], [(D("10.00"), "970")],
                  "sent into the organisation's own account once it has one")

    scene("wb_unconf", body, account=None)


def test_sigterm_stops_promptly():
    def body(s):
        iid = s.invoice("10.00")
        pid, _ = s.payment(iid, amount=1000)
        s.plan(pid, iid, 1000)
        s.wait_status(pid, "in_sync")
        started = time.monotonic()
        s.worker.stop()
        took = time.monotonic() - started
        expect(took < 3.0, "settled work (with the sender) exits soon after SIGTERM", f"{took:.2f}s")

    scene("wb_term", body)


if __name__ == "__main__":
    try:
        h.run(globals())
    finally:
        pm.stop_mocks()
