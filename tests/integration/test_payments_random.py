# SPDX-License-Identifier: MIT
"""test_payments_random.py: randomized payment histories end to end (issue 9, Tests): seeded random Stripe and
GoCardless lifecycles against Xero invoices, played through the mocks into the real binary with deliveries held,
shuffled, duplicated and (GoCardless) batched, and every invoice's row of invoice_payment_state compared with an
independent reference model computed from the mocks' final objects.

The reference model (reference() below) is written from the definitions of issue 9 item 5 and
docs/reconciliation.md, not from gateway/domain/reconcile.c: it reads only what Stripe and GoCardless themselves
say (the mocks' objects and events) and the invoice as it was put into the Xero mock.

The seed is printed; PAYMENTS_SEED=N reproduces a run (PAYMENTS_ROUNDS and PAYMENTS_INVOICES change its size). A
mismatch prints the invoice's history and both results. Python 3 standard library only; every wait is bounded.
"""

import collections
import decimal
import json
import os
import random
import time
import uuid

import harness as h
import paymentslib as pm
import pipelinelib as pl
from harness import Failure, expect, expect_eq

ROUNDS = int(os.environ.get("PAYMENTS_ROUNDS") or 3)
INVOICES = int(os.environ.get("PAYMENTS_INVOICES") or 12)
EXPONENT = {"GBP": 2, "EUR": 2, "USD": 2, "JPY": 0}
GC_CURRENCIES = ("GBP", "EUR", "USD")  # of EXPONENT, those GoCardless collects (P3.4): no JPY
OPEN_DISPUTES = ("needs_response", "under_review", "warning_needs_response", "warning_under_review")


def decimal_text(minor, currency):
    """Minor units as the decimal text Xero would send (JPY has no decimals)."""
    e = EXPONENT[currency]
    return str(minor) if e == 0 else f"{minor // 10 ** e}.{minor % 10 ** e:0{e}d}"


# ---------------------------------------------------------------------------------------------------
# Talking to the mocks


def move(mock, path, body=None):
    """A lifecycle move through a mock's control API: its reply, or None when the mock refuses the move as
    impossible (409), which a random history simply skips."""
    status, _, reply = mock.call("POST", "/_mock/" + path, json.dumps(body or {}).encode(),
                                 {"Content-Type": "application/json"})
    if status == 409:
        return None
    expect(status in (200, 201), f"mock POST /_mock/{path}", (status, reply[:400]))
    return json.loads(reply)


def gc_api(w, method, path, obj=None):
    """A call to the GoCardless mock's real API (as an integrator makes it): (status, decoded body)."""
    status, _, reply = w.gc.call(method, path, json.dumps(obj).encode() if obj is not None else None,
                                 {"Authorization": f"Bearer {pm.GC_TOKEN}", "GoCardless-Version": pm.GC_VERSION,
                                  "Content-Type": "application/json"})
    return status, json.loads(reply) if reply else None


# ---------------------------------------------------------------------------------------------------
# The generator: invoices, their payments, and each payment's lifecycle as a generator of moves


class Invoice:
    def __init__(self, rng, n):
        self.id = str(uuid.uuid4())
        self.currency = rng.choice(["GBP", "GBP", "EUR", "JPY"])
        scale = 10 ** EXPONENT[self.currency]
        self.total = rng.randint(10, 500) * scale + (rng.randrange(scale) if rng.random() < 0.5 else 0)
        self.credited = 0
        if rng.random() < 0.25:  # a credit note allocated to it; now and then all of it
            self.credited = self.total if rng.random() < 0.15 else rng.randint(1, self.total - 1)
        self.voided = rng.random() < 0.12
        self.xero_paid = 0  # a payment recorded in Xero itself (not through settled)
        if not self.voided and self.total > self.credited and rng.random() < 0.12:
            self.xero_paid = rng.randint(1, self.total - self.credited)
        self.payments = []
        self.n = n
        # put into Xero only after settled's first sync: its payments name it before it is mirrored, wait for it
        # and have settled fetch it (so they name it by its Xero InvoiceID: settled's own id does not exist yet)
        self.late = n > 0 and rng.random() < 0.15
        self.amended = None  # what changed in Xero half-way (amend_invoices)

    def spec(self):
        c = self.currency
        return {"total": decimal_text(self.total, c), "currency": c, "status": "VOIDED" if self.voided else "AUTHORISED",
                "credited": decimal_text(self.credited, c), "amount_paid": decimal_text(self.xero_paid, c),
                "amount_due": decimal_text(self.total - self.credited - self.xero_paid, c)}

    def describe(self):
        return (f"invoice {self.id} {self.currency} total {self.total} credited {self.credited} xero_paid "
                f"{self.xero_paid}{' VOIDED' if self.voided else ''}{' (put into Xero late)' if self.late else ''}"
                f"{' (' + self.amended + ')' if self.amended else ''}")


class Payment:
    def __init__(self, rng, inv, k, round_no):
        gc_ok = inv.currency in GC_CURRENCIES
        self.provider = "gocardless" if (gc_ok and rng.random() < 0.5) or (not gc_ok and rng.random() < 0.15) \
            else "stripe"
        self.id = f"PM{round_no:02d}R{k:04d}" if self.provider == "gocardless" else f"pi_r{round_no}x{k:03d}"
        own = inv.currency if (self.provider == "stripe" or gc_ok) else None
        if own is None or rng.random() < 0.12:  # another currency than the invoice's
            pool = GC_CURRENCIES if self.provider == "gocardless" else tuple(EXPONENT)
            self.currency = rng.choice([c for c in pool if c != inv.currency])
        else:
            self.currency = inv.currency
        due = inv.total - inv.credited - inv.xero_paid
        if self.currency != inv.currency or due <= 0:
            self.amount = rng.randint(1, 20000)
        else:
            self.amount = rng.choice([due, due, max(1, due // inv.n), rng.randint(1, due), due + rng.randint(1, 500)])
        self.key = "settled_invoice_id" if not inv.late and rng.random() < 0.3 else "xero_invoice_id"
        # Stripe: the key only in the metadata of the PaymentIntent's Charge, which settled reads when the
        # PaymentIntent's own metadata names no invoice
        self.on_charge = self.provider == "stripe" and rng.random() < 0.15
        self.log = []

    def describe(self):
        return (f"  {self.provider} {self.id} {self.amount} {self.currency} by {self.key}"
                f"{' in its Charge' if self.on_charge else ''}: "
                + ("; ".join(self.log) or "(no moves)"))


def stripe_history(w, rng, p, link):
    """Seeds p's PaymentIntent and plays a random lifecycle, one move per step (a generator)."""
    if p.on_charge:
        charge = "ch_" + p.id[3:]
        w.stripe.ctl("PUT", f"objects/charges/{charge}", {
            "amount": p.amount, "currency": p.currency.lower(), "payment_intent": p.id, "status": "pending",
            "paid": False, "captured": False, "amount_captured": 0, "metadata": {p.key: link}})
        w.stripe.ctl("PUT", f"objects/payment_intents/{p.id}", {
            "amount": p.amount, "currency": p.currency.lower(), "metadata": {}, "latest_charge": charge})
    else:
        pm.stripe_pi(w, p.id, p.amount, p.currency.lower(), **{p.key: link})
    status, received, charge = "requires_payment_method", 0, None
    # a failed attempt would make a new Charge without the key (the mock copies the PaymentIntent's metadata)
    tries = ["succeed", "succeed", "processing", "processing", "cancel", "requires_action"] + \
        ([] if p.on_charge else ["fail"])
    refunds = {}  # id -> [amount, status]
    dispute = None  # [id, status]
    for step in range(rng.randint(1, 6)):
        if status in ("requires_payment_method", "requires_action"):
            act = rng.choice(tries)
        elif status == "processing":
            act = rng.choice([t for t in tries if t in ("succeed", "fail")])
        elif status == "succeeded":
            acts = ["refund"]
            acts += ["refund_succeed", "refund_fail"] if any(r[1] == "pending" for r in refunds.values()) else []
            acts += ["dispute"] if dispute is None else (["dispute_update", "dispute_close", "dispute_close"]
                                                          if dispute[1] in OPEN_DISPUTES else [])
            act = rng.choice(acts)
        else:
            return
        what = act
        if act in ("succeed", "processing", "fail", "cancel", "requires_action"):
            body = {}
            if act == "succeed" and rng.random() < 0.3:
                body = {"amount_received": rng.randint(1, p.amount)}  # a partial capture
                what += f" received {body['amount_received']}"
            r = move(w.stripe, f"payment_intents/{p.id}/{act}", body)
            if r is None:
                p.log.append(what + " (409)")
                continue
            status, received, charge = r["status"], r["amount_received"], r["latest_charge"]
        elif act == "refund":
            left = received - sum(a for a, s in refunds.values() if s != "failed")
            if left <= 0:
                continue
            amount = left if rng.random() < 0.4 else rng.randint(1, left)
            pending = rng.random() < 0.3
            if pending:
                w.stripe.ctl("PUT", "config", {"refund_status": "pending"})
            r = move(w.stripe, f"charges/{charge}/refund", {"amount": amount})
            if pending:
                w.stripe.ctl("PUT", "config", {"refund_status": "succeeded"})
            what = f"refund {amount}" + (" pending" if pending else "")
            if r is not None:
                refunds[r["id"]] = [amount, r["status"]]
        elif act in ("refund_succeed", "refund_fail"):
            rid = rng.choice([k for k, v in refunds.items() if v[1] == "pending"])
            r = move(w.stripe, f"refunds/{rid}/{act[7:]}", {})
            what = f"refund {refunds[rid][0]} {act[7:]}"
            if r is not None:
                refunds[rid][1] = r["status"]
        elif act == "dispute":
            amount = received if rng.random() < 0.6 else rng.randint(1, received)
            first = rng.choice(["needs_response", "needs_response", "warning_needs_response"])
            r = move(w.stripe, f"charges/{charge}/dispute", {"amount": amount, "status": first})
            what = f"dispute {amount} {first}"
            if r is not None:
                dispute = [r["id"], r["status"]]
        elif act == "dispute_update":
            to = "warning_under_review" if dispute[1].startswith("warning") else "under_review"
            r = move(w.stripe, f"disputes/{dispute[0]}/update", {"status": to})
            what = f"dispute -> {to}"
            if r is not None:
                dispute[1] = r["status"]
        elif act == "dispute_close":
            to = "warning_closed" if dispute[1].startswith("warning") else rng.choice(["won", "lost"])
            r = move(w.stripe, f"disputes/{dispute[0]}/close", {"status": to})
            what = f"dispute closed {to}"
            if r is not None:
                dispute[1] = r["status"]
        p.log.append(what + ("" if r is not None else " (409)"))
        yield step


GC_MOVES = {  # the payment moves a random history takes from each status (repeats weigh them)
    "pending_submission": ["submitted", "submitted", "submitted", "failed", "cancelled"],
    "submitted": ["confirmed", "confirmed", "confirmed", "failed"],
    "confirmed": ["paid_out", "late_failure", "charged_back", "refund", "refund"],
    "paid_out": ["late_failure", "charged_back", "refund", "refund", "refund_move"],
    "charged_back": ["chargeback_cancelled"],
}


def gc_history(w, rng, p, link):
    """Seeds p's GoCardless payment (its created event included) and plays a random lifecycle (a generator)."""
    pm.gc_payment(w, p.id, p.amount, p.currency, emit=True, **{p.key: link})
    status, chargeback_undone = "pending_submission", False
    refunds = {}  # id -> [amount, status]
    for step in range(rng.randint(0, 6)):
        acts = list(GC_MOVES.get(status, []))
        if status == "charged_back" and chargeback_undone:
            acts = []  # one chargeback and one cancellation: enough to reach every flag
        if any(s in ("created", "submitted") for _, s in refunds.values()):
            acts.append("refund_move")
        elif "refund_move" in acts:
            acts.remove("refund_move")
        if not acts:
            return
        act = rng.choice(acts)
        r, what = None, act
        if act == "refund":
            cur = w.gc.ctl("GET", f"objects/payments/{p.id}")
            left = cur["amount"] - cur["amount_refunded"]
            if left <= 0:
                continue
            amount = left if rng.random() < 0.4 else rng.randint(1, left)
            st, r = gc_api(w, "POST", "/refunds", {"refunds": {
                "amount": amount, "total_amount_confirmation": cur["amount_refunded"] + amount,
                "links": {"payment": p.id}}})
            expect_eq(st, 201, f"GoCardless POST /refunds for {p.id} ({r})")
            refunds[r["refunds"]["id"]] = [amount, "created"]
            what = f"refund {amount}"
        elif act == "refund_move":
            rid = rng.choice([k for k, v in refunds.items() if v[1] in ("created", "submitted")])
            to = rng.choice(["paid", "paid", "submitted", "cancelled", "bounced"])
            r = move(w.gc, f"refunds/{rid}/{to}")
            what = f"refund {refunds[rid][0]} {to}"
            if r is not None:
                refunds[rid][1] = r["refunds"]["status"]
        else:
            r = move(w.gc, f"payments/{p.id}/{act}")
            if r is not None:
                status = r["payments"]["status"]
                chargeback_undone |= act == "chargeback_cancelled"
        p.log.append(what + ("" if r is not None else " (409)"))
        yield step


def interleave(rng, gens):
    """Runs the generators' steps in a random interleaving until all are done."""
    gens = list(gens)
    while gens:
        g = rng.choice(gens)
        try:
            next(g)
        except StopIteration:
            gens.remove(g)


# ---------------------------------------------------------------------------------------------------
# The reference model: issue 9 item 5, from the providers' own final objects


def contribution(p, f):
    """What one payment in the invoice's currency counts, from its provider's final objects f: a Counter of
    paid, pending, refunded, charged_back, late_failed, disputed, and the set of flags it raises."""
    c, flags = collections.Counter(), set()
    if p.provider == "stripe":
        pi = f["pi"]
        if pi["status"] == "succeeded":
            c["paid"] += pi["amount_received"]
        elif pi["status"] == "processing":
            c["pending"] += pi["amount"]
        c["refunded"] += sum(r["amount"] for r in f["refunds"] if r["status"] in ("succeeded", "pending"))
        for d in f["disputes"]:
            if d["status"] == "lost":
                c["charged_back"] += d["amount"]
            elif d["status"] in OPEN_DISPUTES:
                c["disputed"] += d["amount"]
            elif d["status"] == "won":
                flags.add("dispute_won")
    else:
        gp = f["payment"]
        actions = [e["action"] for e in f["events"]]
        collected = "confirmed" in actions or "paid_out" in actions
        if gp["status"] in ("confirmed", "paid_out", "charged_back"):
            c["paid"] += gp["amount"]
        elif gp["status"] == "failed" and collected:  # a late failure: it was collected, then reversed
            c["paid"] += gp["amount"]
            c["late_failed"] += gp["amount"]
            flags.add("late_failure")
        elif gp["status"] == "submitted":
            c["pending"] += gp["amount"]
        if gp["status"] == "charged_back":
            c["charged_back"] += gp["amount"]
        if "chargeback_cancelled" in actions:
            flags.add("chargeback_reversed")
        c["refunded"] += gp["amount_refunded"]
    return c, flags


def net(c):
    return c["paid"] - c["refunded"] - c["charged_back"] - c["late_failed"]


def reference(inv, final):
    """The expected state of inv from final: for each of its payments settled heard of, the provider's final
    objects ({"pi"|"payment": ..., "refunds": [...], "disputes": [...], "events": [...]})."""
    total = collections.Counter(paid=inv.xero_paid)  # Xero's own payments count as paid (none is a write-back)
    flags = set()
    for p in inv.payments:
        f = final.get(p.id)
        if f is None:
            continue  # settled never heard of it
        if p.currency != inv.currency:
            flags.add("currency_mismatch")  # listed, counted nowhere
            continue
        c, fl = contribution(p, f)
        total.update(c)
        flags |= fl
    paid, pending, refunded = total["paid"], total["pending"], total["refunded"]
    charged_back, late_failed, disputed = total["charged_back"], total["late_failed"], total["disputed"]
    due = inv.total - inv.credited
    net_paid = paid - refunded - charged_back - late_failed
    if inv.voided and paid > 0:
        flags.add("paid_after_void")
    if net_paid > due and paid > 0:
        flags.add("overpaid")
    if disputed > 0:
        state = "disputed"
    elif net_paid > due and paid > 0:
        state = "overpaid"
    elif net_paid == due:
        state = "paid"
    elif charged_back > 0:
        state = "charged_back"
    elif refunded > 0 and net_paid <= 0:
        state = "refunded"
    elif refunded > 0:
        state = "partially_refunded"
    elif pending > 0:
        state = "pending"
    elif net_paid > 0:
        state = "partially_paid"
    else:
        state = "unpaid"
    return {"state": state, "due": due, "paid": paid, "pending": pending, "refunded": refunded,
            "charged_back": charged_back, "late_failed": late_failed, "disputed": disputed, "net_paid": net_paid,
            "outstanding": due - net_paid, "flags": sorted(flags)}


def edge_cases(inv, final):
    """The corners of the definitions this invoice's history reached (printed, so a run shows what it covered)."""
    cases = set()
    counted = 0
    for p in inv.payments:
        f = final.get(p.id)
        if f is None:
            continue
        mismatch = p.currency != inv.currency
        obj = f.get("pi") or f.get("payment")
        if p.provider == "stripe":
            if mismatch and f["disputes"]:
                cases.add("mismatch_disputed")
            if obj["status"] == "succeeded" and obj["amount_received"] < obj["amount"] and f["refunds"]:
                cases.add("partial_capture_refunded")
            if any(r["status"] == "pending" for r in f["refunds"]):
                cases.add("refund_pending")
            if f["refunds"] and f["disputes"]:
                cases.add("refund_and_dispute")
            if p.on_charge and obj["status"] == "succeeded":
                cases.add("linked_by_charge_metadata")
        else:
            collected = any(e["action"] in ("confirmed", "paid_out") for e in f["events"])
            if mismatch and (collected and obj["status"] == "failed" or obj["status"] == "charged_back"):
                cases.add("mismatch_late_failure_or_chargeback")
            if obj["amount_refunded"] and obj["status"] in ("failed", "charged_back"):
                cases.add("refunded_then_reversed")
        if not mismatch and obj["status"] in ("succeeded", "confirmed", "paid_out"):
            counted += 1
    if counted > 1:
        cases.add("several_counted_payments")
    if inv.voided and not reference(inv, final)["paid"] and any(p.id in final for p in inv.payments):
        cases.add("void_without_money")
    if inv.credited == inv.total:
        cases.add("fully_credited")
    if inv.late:
        cases.add("late_invoice")
    return cases


def final_objects(w, invoices):
    """Per payment id that emitted at least one event (the only ones settled can know), the mocks' objects."""
    s_refunds = w.stripe.ctl("GET", "objects/refunds")
    s_disputes = w.stripe.ctl("GET", "objects/disputes")
    s_events = w.stripe.ctl("GET", "objects/events")
    g_events = w.gc.ctl("GET", "objects/events")
    seen_stripe = {(e["data"]["object"].get("payment_intent") if e["data"]["object"].get("object") != "payment_intent"
                    else e["data"]["object"]["id"]) for e in s_events}
    out = {}
    for inv in invoices:
        for p in inv.payments:
            if p.provider == "stripe":
                if p.id not in seen_stripe:
                    continue
                out[p.id] = {"pi": w.stripe.ctl("GET", f"objects/payment_intents/{p.id}"),
                             "refunds": [r for r in s_refunds if r["payment_intent"] == p.id],
                             "disputes": [d for d in s_disputes if d["payment_intent"] == p.id]}
            else:
                evs = sorted((e for e in g_events if e["links"].get("payment") == p.id), key=lambda e: e["created_at"])
                out[p.id] = {"payment": w.gc.ctl("GET", f"objects/payments/{p.id}"), "events": evs,
                             "refunds": [r for r in w.gc.ctl("GET", "objects/refunds")
                                         if r["links"]["payment"] == p.id]}
    return out


# ---------------------------------------------------------------------------------------------------
# One world


def play_world(rng, round_no, seen):
    """Generates, plays and checks one world; returns the list of mismatch reports (empty when all agree).

    Deliveries are held and released shuffled at the end ("held"), also once half-way so that processing overlaps
    the moves ("midway"), or sent as they happen while 2-4 workers race on them ("live"); duplicated or not;
    GoCardless events batched 1-4 per delivery. Half-way, some invoices change in Xero (voided, or credited)."""
    invoices = [Invoice(rng, rng.choice([0, 1, 1, 2, 2, 3])) for _ in range(INVOICES)]
    workers, mode = rng.randint(2, 4), rng.choice(["held", "midway", "live"])
    dup, batch, flush_seed = rng.randint(0, 1), rng.randint(1, 4), rng.randrange(1 << 30)
    started = time.monotonic()
    w = pm.World({inv.id: inv.spec() for inv in invoices if not inv.late}, workers=workers)
    try:
        for inv in invoices:
            if inv.late:
                w.put_invoice(inv.id, **inv.spec())
        w.stripe.ctl("PUT", "webhook", {"hold": mode != "live", "duplicate": dup})
        w.gc.ctl("PUT", "webhook", {"hold": mode != "live", "duplicate": dup, "batch": batch})
        gens = payment_histories(w, rng, invoices, round_no)
        interleave(rng, gens[: len(gens) // 2])
        if mode == "midway":
            for m in (w.stripe, w.gc):
                m.ctl("POST", "webhook/flush", {"order": "shuffle", "seed": flush_seed + 1})
        amended = amend_invoices(w, rng, invoices)
        interleave(rng, gens[len(gens) // 2:])
        for m in (w.stripe, w.gc):
            m.ctl("POST", "webhook/flush", {"order": "shuffle", "seed": flush_seed})
        resend_stale(w, rng)
        w.settle(60)
        late = [inv.id for inv in invoices if inv.late]
        if late:
            pl.wait_for(lambda: h.sql_value(w.db, "SELECT count(*) FROM xero_invoices WHERE invoice_id::text ="
                                                  " ANY($1::text[])", "{" + ",".join(late) + "}") == str(len(late)),
                        30, f"settled to fetch the {len(late)} invoices payments named before they were mirrored")
            pl.wait_drained(w.db, 30)
        print(f"# round {round_no}: {len(invoices)} invoices ({len(late)} put into Xero late, {amended} changed in"
              f" Xero half-way), {len(gens)} payments, {workers} workers, deliveries {mode}, duplicate {dup},"
              f" GoCardless batch {batch}; played and settled in {time.monotonic() - started:.1f}s")
        return check_world(w, invoices, seen)
    finally:
        w.close()


def payment_histories(w, rng, invoices, round_no):
    """Each invoice's payments, generated and attached to it, as lifecycle generators ready to interleave."""
    k, gens = 0, []
    for inv in invoices:
        sid = None if inv.late else w.settled_invoice_id(inv.id)
        for _ in range(inv.n):
            k += 1
            p = Payment(rng, inv, k, round_no)
            inv.payments.append(p)
            link = sid if p.key == "settled_invoice_id" else inv.id
            gens.append((stripe_history if p.provider == "stripe" else gc_history)(w, rng, p, link))
    return gens


def xero_invoice(w, inv):
    """The invoice as the Xero mock holds it now: (Status, AmountDue in minor units of its currency)."""
    status, _, body = w.xero.call("GET", f"/_mock/tenants/{w.tenant}/invoices/{inv.id}")
    expect_eq(status, 200, f"the mock Xero's invoice {inv.id}")
    doc = json.loads(body, parse_float=decimal.Decimal)
    return doc["Status"], int(decimal.Decimal(str(doc["AmountDue"])) * 10 ** EXPONENT[inv.currency])


def amend_invoices(w, rng, invoices):
    """Voids or credits a few mirrored invoices in Xero, as an accountant would there (the mock's amend: atomic
    with the write-backs settled may be making meanwhile, and refused as Xero refuses it: no voiding while a
    payment is applied, no credit above AmountDue), and tells settled by a signed Xero webhook (which makes it
    refetch them); returns how many."""
    changed = []
    for inv in invoices:
        if inv.late or inv.voided or rng.random() >= 0.15:
            continue
        path = f"/_mock/tenants/{w.tenant}/invoices/{inv.id}/amend"
        if inv.xero_paid == 0 and rng.random() < 0.5:
            status, _, _ = w.xero.call("POST", path, b'{"status": "VOIDED"}')
            if status == 409:  # settled has written a payment back to it already
                continue
            expect_eq(status, 200, f"voiding {inv.id} in the mock Xero")
            inv.voided, inv.amended = True, "voided in Xero half-way"
        else:
            st, due = xero_invoice(w, inv)
            if st != "AUTHORISED" or due <= 0:
                continue
            credit = rng.randint(1, due)
            status, _, _ = w.xero.call("POST", path, json.dumps({"credit": decimal_text(credit, inv.currency)})
                                       .encode())
            if status == 409:  # a write-back lowered AmountDue meanwhile
                continue
            expect_eq(status, 200, f"crediting {inv.id} in the mock Xero")
            inv.credited += credit
            inv.amended = f"credited {credit} more in Xero half-way"
        changed.append(inv.id)
    if changed:
        pl.post(w.server, pl.delivery([pl.xero_event(w.tenant, iid) for iid in changed]), "the Xero webhook")
    return len(changed)


def resend_stale(w, rng):
    """Delivers a few random old events once more, after everything else: stale news must change nothing."""
    for m in (w.stripe, w.gc):
        evs = m.ctl("GET", "objects/events")
        for ev in rng.sample(evs, min(3, len(evs))):
            m.ctl("POST", f"events/{ev['id']}/resend")
    w.gc.ctl("POST", "webhook/flush", {"order": "fifo"})  # closes a partly filled GoCardless batch


def check_world(w, invoices, seen):
    final = final_objects(w, invoices)
    problems = []
    for inv in invoices:
        want = reference(inv, final)
        seen.update([want["state"], *("flag:" + f for f in want["flags"]),
                     *("case:" + c for c in edge_cases(inv, final))])
        got = w.state(inv.id)
        got = {**got, "flags": sorted(f for f in (got["flags"] or "").split(",") if f)}
        if got != want:
            diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
            problems.append("\n".join([f"{inv.describe()}: (actual, expected) {diff}",
                                       *[p.describe() for p in inv.payments],
                                       f"  actual   {got}", f"  expected {want}"]))
    problems += check_tables(w, invoices, final)
    problems += check_xero(w, invoices, final)
    return problems


def check_xero(w, invoices, final):
    """Once the write-back outbox has drained, every invoice's AmountDue in the mock Xero equals settled's
    outstanding_minor (in the currency's minor units), except where Xero cannot hold what settled counts:

    - a VOIDED invoice (from the start, or voided half-way): Xero takes no payment on it, so settled writes none
      back (a voided invoice's target is 0) and its AmountDue is not a balance anyone owes, while settled's
      outstanding goes on saying what arrived (flag paid_after_void when money did). Skipped.
    - flag overpaid (net paid above due): Xero refuses a payment above AmountDue, so what does not fit stays
      'refused' for an admin, and AmountDue stops at 0 while outstanding goes below it. Checked instead: AmountDue
      is between 0 and the amount due, and a write-back of the invoice was refused.
    - a payment that lost more than it kept (net below 0: refunded in full and then a lost dispute, or refunded
      and then failed late): settled's outstanding counts the loss (the customer owes it again), but Xero holds no
      negative payment, so its write-back is 0. No flag marks it, so it is not skipped: AmountDue must equal
      outstanding less those losses (shortfall below), which is exactly what Xero cannot show.

    No other flag needs an exception: a payment in another currency (currency_mismatch) is counted nowhere and
    never written back (its target is 0); an open dispute moves neither net_paid nor the target; a lost dispute, a
    chargeback, a late failure and refunds lower both; a payment recorded in Xero itself is in both; a pending
    payment is in neither. A payment that does not fit, refused, while another one is later taken off the invoice
    again, is not excused either: AmountDue must still end equal to outstanding."""
    pl.wait_for(lambda: h.sql_value(w.db, "SELECT count(*) FROM xero_writebacks WHERE status IN"
                                          " ('pending', 'unconfigured') OR lease_owner IS NOT NULL") == "0",
                60, "the write-back outbox to drain")
    problems = []
    for inv in invoices:
        st = w.state(inv.id)
        status, due_x = xero_invoice(w, inv)
        rows = h.sql_rows(w.db, "SELECT p.object_id, w.target_minor, w.written_minor, w.status, w.last_error"
                                " FROM xero_writebacks w JOIN payments p ON p.id = w.payment_id"
                                " WHERE w.invoice_id = $1 ORDER BY w.id", inv.id)
        where = f"{inv.describe()}: Xero {status} AmountDue {due_x}, settled {st}, write-backs {rows}\n" + \
            "\n".join(p.describe() for p in inv.payments)
        if inv.voided:
            continue
        shortfall = sum(min(0, net(contribution(p, final[p.id])[0])) for p in inv.payments
                        if p.id in final and p.currency == inv.currency)
        if "overpaid" in (st["flags"] or "").split(","):
            if not (0 <= due_x <= st["due"]) or not any(r[3] == "refused" for r in rows):
                problems.append(f"overpaid, yet AmountDue is not within [0, due] or nothing was refused: {where}")
        elif due_x != st["outstanding"] + shortfall:
            problems.append(f"Xero's AmountDue differs from settled's outstanding (less {-shortfall} Xero cannot"
                            f" hold): {where}")
        if any(r[3] == "dead" for r in rows):
            problems.append(f"a write-back is dead: {where}")
    return problems


def check_tables(w, invoices, final):
    """One payments row per provider payment settled heard of, in the provider's final status; refunds and
    disputes as the provider has them; no fact twice in the ledger."""
    problems = []
    rows = h.sql_rows(w.db, "SELECT provider, object_id, status, currency, count(*) OVER (PARTITION BY provider,"
                            " object_id) FROM payments WHERE provider IN ('stripe', 'gocardless') ORDER BY object_id")
    got = {r[1]: (r[0], r[2], r[3]) for r in rows}
    if any(r[4] != "1" for r in rows):
        problems.append(f"a provider payment has more than one payments row: {rows}")
    want = {}
    for inv in invoices:
        for p in inv.payments:
            if p.id in final:
                obj = final[p.id]["pi" if p.provider == "stripe" else "payment"]
                want[p.id] = (p.provider, obj["status"], p.currency)
    if got != want:
        problems.append("payments rows (provider, status, currency) differ from the providers' objects: "
                        f"only in settled {sorted(set(got.items()) - set(want.items()))}, "
                        f"only at the providers {sorted(set(want.items()) - set(got.items()))}")
    got_children = {(r[0], r[1], r[2], int(r[3])) for r in h.sql_rows(
        w.db, "SELECT 'refund', object_id, status, amount_minor FROM refunds"
              " UNION ALL SELECT 'dispute', object_id, status, amount_minor FROM disputes")}
    want_children = set()
    for f in final.values():
        want_children |= {("refund", r["id"], r["status"], r["amount"]) for r in f.get("refunds", [])}
        want_children |= {("dispute", d["id"], d["status"], d["amount"]) for d in f.get("disputes", [])}
    if got_children != want_children:
        problems.append("refunds/disputes rows (kind, id, status, amount) differ from the providers' objects: "
                        f"only in settled {sorted(got_children - want_children)}, "
                        f"only at the providers {sorted(want_children - got_children)}")
    dups = h.sql_rows(w.db, "SELECT provider, object_type, object_id, state, amount_minor, count(*) FROM ledger_entries"
                            " GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1")
    if dups:
        problems.append(f"ledger facts recorded more than once: {dups}")
    strangers = h.sql_rows(w.db, "SELECT DISTINCT object_id FROM ledger_entries WHERE NOT (object_id = ANY($1::text[]))",
                           "{" + ",".join(sorted(want) + sorted(c[1] for c in want_children)) + "}")
    if strangers:
        problems.append(f"ledger facts about objects no provider has: {strangers}")
    dead = h.sql_rows(w.db, "SELECT provider, event_type, last_error FROM webhook_events WHERE status = 'dead'")
    if dead:
        problems.append(f"dead inbox events: {dead}")
    for m in (w.stripe, w.gc):
        bad = [(d["seq"], d["status"], d["error"]) for d in m.ctl("GET", "deliveries")
               if not (isinstance(d["status"], int) and 200 <= d["status"] < 300)]
        violations = m.ctl("GET", "stats")["violations"]
        if bad or violations:
            problems.append(f"{m.base}: deliveries settled did not accept {bad[:5]}, rate-limit violations {violations}")
    return problems


def test_random_payment_histories():
    seed = int(os.environ.get("PAYMENTS_SEED") or random.randrange(1 << 31))
    print(f"# PAYMENTS_SEED={seed} (set it to replay this run)")
    rng = random.Random(seed)
    started = time.monotonic()
    problems, seen = [], collections.Counter()
    for round_no in range(ROUNDS):
        problems += [f"round {round_no}: {p}" for p in play_world(rng, round_no, seen)]
    print(f"# {ROUNDS} rounds in {time.monotonic() - started:.1f}s; expected states and flags: "
          + ", ".join(f"{k} {n}" for k, n in sorted(seen.items())))
    if problems:
        raise Failure(f"PAYMENTS_SEED={seed}: {len(problems)} mismatches with the reference\n" + "\n".join(problems))


try:
    h.run(globals())
finally:
    pm.stop_mocks()
