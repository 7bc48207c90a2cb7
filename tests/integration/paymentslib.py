# SPDX-License-Identifier: MIT
"""paymentslib: what the payments end-to-end tests (tests/integration/test_payments.py and
tests/integration/test_payments_random.py) share beyond harness.py and pipelinelib.py.

- the three mocks (Xero, Stripe, GoCardless), started once per test process and stopped by stop_mocks();
- World: a fresh database with one connected Xero tenant holding invoices, and one `settled serve` (with its
  queue workers) pointed at the mocks, whose webhooks the Stripe and GoCardless mocks post to;
- seeding a Stripe PaymentIntent or a GoCardless payment (with its mandate) that names an invoice in metadata.

Python 3 standard library only; every wait is bounded and every process is stopped by its PID.
"""

import decimal
import json
import time

import harness as h
import pipelinelib as pl
from harness import expect_eq

STRIPE_KEY = "sk_test_mock"  # the mocks' default credentials (tests/mock/README.md)
GC_TOKEN = "gc_sandbox_mock_token"
GC_VERSION = "2015-07-06"

_mocks = {}


def mocks():
    """The Xero, Stripe and GoCardless mocks of this process (started on first use)."""
    if not _mocks:
        _mocks["xero"] = pl.Mock()
        _mocks["stripe"] = pl.Mock("stripe_api.py", "stripe-mock")
        _mocks["gocardless"] = pl.Mock("gocardless_api.py", "gocardless-mock")
    return _mocks["xero"], _mocks["stripe"], _mocks["gocardless"]


def stop_mocks():
    for m in _mocks.values():
        m.stop()
    _mocks.clear()


class World:
    """A fresh database with one connected Xero tenant holding invoices, the three mocks reset, and one
    `settled serve` (with its queue workers) pointed at them, whose webhook endpoints the Stripe and
    GoCardless mocks post to.

    invoices maps a Xero InvoiceID to its Total (a decimal text) or to the keyword arguments of put_invoice."""

    def __init__(self, invoices, workers=2, mirror=True, **env):
        self.xero, self.stripe, self.gc = mocks()
        self.tenant = pl.new_tenant()
        self.db = pl.connected_db(self.xero, [self.tenant], "pay")
        self.invoices = {}
        for iid, spec in invoices.items():
            self.put_invoice(iid, **(spec if isinstance(spec, dict) else {"total": spec}))
        settings = dict(SETTLED_STRIPE_API_BASE=self.stripe.base, SETTLED_STRIPE_SECRET_KEY=STRIPE_KEY,
                        SETTLED_GOCARDLESS_API_BASE=self.gc.base, SETTLED_GOCARDLESS_ACCESS_TOKEN=GC_TOKEN,
                        SETTLED_PAYMENTS_COALESCE_MS=50, SETTLED_WORKERS=workers,
                        SETTLED_RETRY_SCHEDULE="100ms,200ms,400ms", SETTLED_PAYMENTS_SYNC_INTERVAL=0,
                        SETTLED_XERO_PAYMENT_ACCOUNT="090")
        settings.update(env)
        self.env = pl.settled_env(self.xero, self.db, **settings)
        if mirror and invoices:
            res = h.run_settled(["sync", "xero"], self.env, timeout=120)
            expect_eq(res.returncode, 0, f"settled sync xero (stderr {res.stderr[-1500:]!r})")
        for m in (self.stripe, self.gc):
            m.ctl("POST", "reset")
        self.server = h.Settled(self.db, env=self.env)
        self.stripe.ctl("PUT", "webhook", {"url": self.server.url("/webhooks/stripe"), "secret": h.STRIPE_SECRET})
        self.gc.ctl("PUT", "webhook", {"url": self.server.url("/webhooks/gocardless"),
                                       "secret": h.GOCARDLESS_SECRET})
        self.org = h.sql_value(self.db, "SELECT organisation_id FROM xero_tenants LIMIT 1")

    def put_invoice(self, iid, total, status="AUTHORISED", currency="GBP", credited="0.00", amount_paid="0.00",
                    amount_due=None):
        """Stores an ACCREC invoice in the Xero mock. Total, AmountCredited, AmountPaid and AmountDue (Total when
        None) are decimal texts copied verbatim; an AmountPaid is a payment recorded in Xero itself."""
        text = pl.invoice(iid, int(time.time() * 1000), total, status=status, amount_paid=amount_paid,
                          amount_due=amount_due)
        text = text.replace('"CurrencyCode": "GBP"', f'"CurrencyCode": "{currency}"')
        text = text.replace('"AmountCredited": 0.00', f'"AmountCredited": {credited}')
        self.xero.put(self.tenant, "invoices", iid, text)
        self.invoices[iid] = total

    def settle(self, timeout=30):
        """Waits until both mocks delivered everything and the inbox is drained."""
        for m in (self.stripe, self.gc):
            m.ctl("POST", "webhook/drain", {"timeout_s": timeout})
        pl.wait_drained(self.db, timeout)

    def state(self, iid):
        """The invoice_payment_state row of iid: amounts as ints, state and flags (comma-joined) as text."""
        rows = h.sql_rows(self.db, "SELECT state, due_minor, paid_minor, pending_minor, refunded_minor,"
                                   " charged_back_minor, late_failed_minor, disputed_minor, net_paid_minor,"
                                   " outstanding_minor, array_to_string(flags, ',') FROM invoice_payment_state"
                                   " WHERE invoice_id = $1", iid)
        expect_eq(len(rows), 1, f"one invoice_payment_state row for {iid}")
        r = rows[0]
        keys = ["state", "due", "paid", "pending", "refunded", "charged_back", "late_failed", "disputed",
                "net_paid", "outstanding", "flags"]
        return {k: (v if k in ("state", "flags") or v is None else int(v)) for k, v in zip(keys, r)}

    def settled_invoice_id(self, iid):
        return h.sql_value(self.db, "SELECT settled_invoice_id FROM xero_invoices WHERE invoice_id = $1", iid)

    def xero_amount_due(self, iid):
        """The invoice's AmountDue in the mock Xero, as a minor-unit integer (GBP)."""
        status, _, body = self.xero.call("GET", f"/_mock/tenants/{self.tenant}/invoices/{iid}")
        expect_eq(status, 200, "the mock Xero's invoice")
        return int(decimal.Decimal(str(json.loads(body, parse_float=decimal.Decimal)["AmountDue"])) * 100)

    def wait_written_back(self, iid, what):
        """Waits until every write-back of the invoice is in sync, then returns the mock Xero's AmountDue."""
        pl.wait_for(lambda: h.sql_value(self.db, "SELECT count(*) FILTER (WHERE status <> 'in_sync') = 0"
                                                 " AND count(*) > 0 FROM xero_writebacks WHERE invoice_id = $1",
                                        iid) == "t", 30, what)
        return self.xero_amount_due(iid)

    def close(self):
        self.server.stop()


def amounts(st, **want):
    """The subset of st (a state) named by want, for one comparison."""
    return {k: st[k] for k in want}


def stripe_pi(w, pid, amount, currency="gbp", **metadata):
    """Seeds a PaymentIntent in the Stripe mock (no event: the first lifecycle move sends one)."""
    w.stripe.ctl("PUT", f"objects/payment_intents/{pid}", {"amount": amount, "currency": currency,
                                                           "metadata": metadata})


def gc_payment(w, pid, amount, currency="GBP", emit=False, **metadata):
    """Seeds a pending_submission GoCardless payment on an active mandate of its own; with emit, the mock also
    sends its payments.created event."""
    mandate = "MD" + pid[2:]
    w.gc.ctl("PUT", f"objects/mandates/{mandate}", {"status": "active"})
    w.gc.ctl("PUT", f"objects/payments/{pid}" + ("?emit=created" if emit else ""),
             {"amount": amount, "currency": currency, "status": "pending_submission",
              "links": {"mandate": mandate}, "metadata": metadata})
