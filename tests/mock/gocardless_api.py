#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""gocardless_api.py: a mock of the GoCardless Pro API as settled uses it, with signed webhook emission, for
settled's tests and offline demos.

    python3 tests/mock/gocardless_api.py --port PORT [--host 127.0.0.1] [--state FILE.json] [--demo] [--quiet]

Prints ``gocardless-mock listening on http://HOST:PORT`` (flushed) once it accepts connections (--port 0
picks a free port, printed in that line) and exits 0 on SIGTERM or SIGINT. Python 3 standard library only;
the only outbound connections are webhook POSTs to the loopback URL set with PUT /_mock/webhook.

The protocol facts it imitates are in /work/shared/providers/PROVIDERS.md section 3 (cited below as
"P3.x") and fixtures/gocardless/. tests/mock/README.md documents every endpoint, control call and default;
tests/integration/test_gocardless_mock.py is its self-test.

Design points a client author must know:
  * Every call needs Authorization: Bearer <token> and GoCardless-Version: 2015-07-06 (P3.2, P3.3).
  * Bodies are JSON enveloped by resource name, both ways (P3.3). Errors use GoCardless's envelope
    {"error": {type, code, message, documentation_url, request_id, errors: [...]}}.
  * Rate limit: 1000 calls per 60 s window with RateLimit-Limit/-Remaining/-Reset on every response and
    429 over it (P3.3). The window is fixed (it starts with the first call after the previous one ended)
    and RateLimit-Reset is the window's end as an HTTP date [unverified format, P3.3].
  * A repeated Idempotency-Key on POST /payments or /refunds returns 409 invalid_state with
    idempotent_creation_conflict and links.conflicting_resource_id, whatever the parameters (P3.3).
  * Lists are cursor-paged: limit (1..500, default 50), after, before; meta.cursors.{before,after}
    (P3.3). Oldest first [unverified: P3.3 does not say].
  * Webhooks are batches {"events": [...], "meta": {"webhook_id"}} signed Webhook-Signature =
    hex(HMAC-SHA256(secret, body)) (P3.1); events carry ids only, so a client must re-fetch (P3.8).
"""

import copy
import email.utils
import json
import os
import re
import secrets
import string
import sys
import threading
import time
import uuid
from collections import deque
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qsl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mock_common import (BadRequest, BaseHandler, CallStats, Faults, WebhookSender,  # noqa: E402
                         hmac_sha256_hex, jdump, run)

NAME = "gocardless-mock"
VERSION = "2015-07-06"  # P3.2: the only version the SDKs send
DOCS = "https://developer.gocardless.com/api-reference#"
KINDS = {  # path / envelope name -> id prefix
    "payments": "PM", "mandates": "MD", "customers": "CU", "refunds": "RF", "customer_bank_accounts": "BA",
    "billing_requests": "BRQ", "billing_request_flows": "BRF", "events": "EV",
}
CURRENCIES = ("AUD", "CAD", "DKK", "EUR", "GBP", "NZD", "SEK", "USD")  # P3.4
SCHEME_CURRENCY = {"bacs": "GBP", "sepa_core": "EUR", "ach": "USD", "becs": "AUD", "becs_nz": "NZD", "pad": "CAD",
                   "autogiro": "SEK", "betalingsservice": "DKK", "faster_payments": "GBP"}
PAYABLE_MANDATE = ("pending_customer_approval", "pending_submission", "submitted", "active")  # P3.4

# Payment lifecycle (P3.1, P3.4, P3.8): action -> (allowed from, new status or None, details)
PAYMENT_MOVES = {
    "submitted": (("pending_submission",), "submitted",
                  {"origin": "gocardless", "cause": "payment_submitted",
                   "description": "Payment submitted to the banks. As a result, it can no longer be cancelled."}),
    "confirmed": (("submitted",), "confirmed",
                  {"origin": "gocardless", "cause": "payment_confirmed",
                   "description": "Enough time has passed since the payment was submitted for the banks to return "
                                  "an error, so this payment is now confirmed."}),
    "paid_out": (("confirmed",), "paid_out",
                 {"origin": "gocardless", "cause": "payment_paid_out",
                  "description": "The payment has been paid out by GoCardless."}),
    "failed": (("pending_submission", "submitted"), "failed",
               {"origin": "bank", "cause": "insufficient_funds", "scheme": "bacs", "reason_code": "ARUDD-0",
                "description": "The customer's account had insufficient funds to make this payment.",
                "will_attempt_retry": False}),
    "late_failure": (("confirmed", "paid_out"), "failed",  # P3.8: failed after confirmed
                     {"origin": "bank", "cause": "insufficient_funds", "scheme": "bacs", "reason_code": "ARUDD-0",
                      "description": "The customer's bank reported a late failure: insufficient funds.",
                      "will_attempt_retry": False}),
    "late_failure_settled": (("failed",), None,
                             {"origin": "gocardless", "cause": "late_failure_settled",
                              "description": "This late failure was settled against a payout."}),
    "charged_back": (("confirmed", "paid_out"), "charged_back",
                     {"origin": "bank", "cause": "authorisation_disputed", "scheme": "bacs", "reason_code": "DDICA-1",
                      "description": "The customer has disputed that the amount taken differs from the amount they "
                                     "were notified of."}),
    "chargeback_cancelled": (("charged_back",), "__previous__",
                             {"origin": "bank", "cause": "payment_charged_back_cancelled",
                              "description": "The customer's bank has cancelled the chargeback request."}),
    "chargeback_settled": (("charged_back",), None,
                           {"origin": "gocardless", "cause": "payment_charged_back_settled",
                            "description": "This chargeback has been deducted from a payout."}),
    "cancelled": (("pending_submission", "pending_customer_approval"), "cancelled",
                  {"origin": "api", "cause": "payment_cancelled", "description": "Payment cancelled."}),
    "customer_approval_denied": (("pending_customer_approval",), "customer_approval_denied",
                                 {"origin": "customer", "cause": "customer_approval_denied",
                                  "description": "The customer denied approval for this payment."}),
    "resubmission_requested": (("failed",), "pending_submission",
                               {"origin": "api", "cause": "payment_retried",
                                "description": "An attempt to collect this payment has been requested."}),
}
# event action per control action (late_failure is a "failed" event)
PAYMENT_ACTION = {"late_failure": "failed"}
MANDATE_MOVES = {
    "customer_approval_granted": (("pending_customer_approval",), "pending_submission",
                                  {"origin": "customer", "cause": "customer_approval_granted",
                                   "description": "The customer granted approval for this mandate."}),
    "submitted": (("pending_submission",), "submitted",
                  {"origin": "gocardless", "cause": "mandate_submitted",
                   "description": "The mandate has been submitted to the banks."}),
    "active": (("pending_submission", "submitted"), "active",
               {"origin": "gocardless", "cause": "mandate_activated",
                "description": "The time window after submission for the banks to refuse a mandate has ended "
                               "without any errors being received, so this mandate is now active."}),
    "cancelled": (("pending_customer_approval", "pending_submission", "submitted", "active", "suspended_by_payer"),
                  "cancelled",
                  {"origin": "bank", "cause": "mandate_cancelled", "scheme": "bacs", "reason_code": "ADDACS-0",
                   "description": "The mandate was cancelled at a bank branch."}),
    "failed": (("pending_submission", "submitted"), "failed",
               {"origin": "bank", "cause": "invalid_bank_details", "scheme": "bacs", "reason_code": "AUDDIS-B",
                "description": "The specified bank account does not exist or was closed."}),
    "expired": (("active",), "expired",
                {"origin": "gocardless", "cause": "mandate_expired",
                 "description": "The mandate is being marked as expired, because no payments have been collected "
                                "against it for the dormancy period of your service user number."}),
    "reinstated": (("cancelled", "expired"), "active",
                   {"origin": "bank", "cause": "mandate_reinstated",
                    "description": "A cancelled mandate has been re-instated by the customer's bank."}),
}
REFUND_MOVES = {  # P3.5 statuses; actions [unverified] per P3.8
    "submitted": (("created", "pending_submission"), "submitted", "refund_submitted"),
    "paid": (("created", "pending_submission", "submitted"), "paid", "refund_paid"),
    "refund_settled": (("paid",), None, "refund_settled"),
    "bounced": (("submitted", "paid"), "bounced", "refund_bounced"),
    "funds_returned": (("created", "pending_submission", "submitted", "bounced"), "funds_returned",
                       "refund_funds_returned"),
    "cancelled": (("created", "pending_submission"), "cancelled", "refund_cancelled"),
}
REFUND_REVERSES = ("bounced", "funds_returned", "cancelled")  # the money did not reach the customer


def default_config():
    return {
        "access_tokens": ["gc_sandbox_mock_token"],
        "rate_limit": 1000,  # per 60 s (P3.3)
        "rate_window_s": 60,
        "enforce_limits": True,
        "organisation": "OR000MOCK00001",
        "creditor": "CR000MOCK00001",
        "idempotency_ttl": None,  # seconds; None = keys never expire (the real lifetime is unverified, P3.3)
        "require_total_amount_confirmation": True,  # refunds
    }


def rand_id(prefix, n=12):
    return prefix + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(n))


def iso_ms(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(t * 1000) % 1000:03d}Z"


class GCError(Exception):
    """An API error in GoCardless's envelope (P3.3)."""

    def __init__(self, status, etype, message, errors=None, reason=None, headers=None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        reason = reason or (errors[0].get("reason") if errors and errors[0].get("reason") else etype)
        self.body = {"error": {"message": message, "documentation_url": DOCS + reason, "type": etype,
                               "request_id": None, "code": status, "errors": errors or [{"reason": reason,
                                                                                         "message": message}]}}


def invalid(field, message):
    return GCError(422, "validation_failed", "Validation failed",
                   [{"field": field, "message": message, "request_pointer": "/" + field.replace(".", "/")}],
                   reason="validation_failed")


def not_found():
    return GCError(404, "invalid_api_usage", "Resource not found",
                   [{"reason": "resource_not_found", "message": "Resource not found"}])


def invalid_state(reason, message, links=None):
    e = {"reason": reason, "message": message}
    if links:
        e["links"] = links
    return GCError(409, "invalid_state", message, [e])


class Batch(list):
    """The events of one webhook delivery; webhook_id stays the same across retries."""

    webhook_id = None


class State:
    def __init__(self):
        self.lock = threading.RLock()
        self.offset = 0.0
        self.seed = []
        self.faults = Faults(self.mono)
        self.webhook = WebhookSender(NAME, self.now, self.build_delivery)
        self.reset()

    def now(self):
        return time.time() + self.offset

    def mono(self):
        return time.monotonic() + self.offset

    def today(self):
        return datetime.fromtimestamp(self.now(), timezone.utc).date()

    def reset(self):
        with self.lock:
            self.config = default_config()
            self.objs = {k: {} for k in KINDS}
            self.seq = {}
            self.counter = 0
            self.idem = {}  # (kind, key) -> (resource id, time)
            self.pending = Batch()  # events waiting to fill a batch
            self.faults.rules = []
            self.webhook.clear()
            self.reset_stats()

    def reset_stats(self):
        with self.lock:
            self.generation = getattr(self, "generation", 0) + 1
            self.stats = CallStats()
            self.window_start = None
            self.window_count = 0
            self.unauth = {"401": 0, "400_version": 0}
            self.idem_stats = {"created": 0, "conflicts": 0}
            self.log = deque(maxlen=5000)

    # objects -----------------------------------------------------------------------------------
    def put(self, kind, obj):
        if obj["id"] not in self.objs[kind]:
            self.counter += 1
            self.seq[obj["id"]] = self.counter
        self.objs[kind][obj["id"]] = obj
        return obj

    def get(self, kind, rid):
        return self.objs[kind].get(rid)

    def new_object(self, kind, fields):
        o = {"id": fields.get("id") or rand_id(KINDS[kind]), "created_at": iso_ms(self.now())}
        cr = self.config["creditor"]
        if kind == "payments":
            o.update({"amount": 1000, "amount_refunded": 0, "currency": "GBP", "status": "pending_submission",
                      "charge_date": self.next_working_day(self.today() + timedelta(days=3)).isoformat(),
                      "reference": None, "description": None, "scheme": "bacs", "retry_if_possible": False,
                      "metadata": {}, "fx": {"fx_currency": None, "fx_amount": None, "exchange_rate": None,
                                             "estimated_exchange_rate": None},
                      "links": {"mandate": None, "creditor": cr}})
        elif kind == "mandates":
            o.update({"reference": "MOCK-" + o["id"][-6:], "status": "active", "scheme": "bacs",
                      "next_possible_charge_date": self.next_working_day(self.today() + timedelta(days=3)).isoformat(),
                      "payments_require_approval": False, "metadata": {},
                      "links": {"creditor": cr, "customer": None, "customer_bank_account": None}})
        elif kind == "customers":
            o.update({k: None for k in ("email", "given_name", "family_name", "company_name", "address_line1",
                                        "address_line2", "address_line3", "city", "region", "postal_code",
                                        "phone_number", "danish_identity_number", "swedish_identity_number")})
            o.update({"country_code": "GB", "language": "en", "metadata": {}})
        elif kind == "refunds":
            o.update({"amount": 0, "currency": "GBP", "status": "created", "reference": None, "metadata": {},
                      "fx": {"fx_currency": None, "fx_amount": None, "exchange_rate": None,
                             "estimated_exchange_rate": None}, "links": {"payment": None, "mandate": None}})
        elif kind == "customer_bank_accounts":
            o.update({"account_holder_name": "MOCK HOLDER", "account_number_ending": "11", "bank_name": "MOCK BANK",
                      "country_code": "GB", "currency": "GBP", "account_type": None, "enabled": True,
                      "metadata": {}, "links": {"customer": None}})
        elif kind == "billing_requests":
            o.update({"status": "pending", "mandate_request": None, "payment_request": None, "metadata": {},
                      "actions": [], "links": {"customer": None, "customer_bank_account": None, "creditor": cr,
                                               "organisation": self.config["organisation"]}})
        for k, v in fields.items():
            if k == "links" and isinstance(v, dict):
                o["links"] = {**o.get("links", {}), **v}
            else:
                o[k] = v
        if kind == "customer_bank_accounts":  # P3.7: the full number is never stored or returned
            full = o.pop("account_number", None) or o.pop("iban", None)
            if full:
                digits = re.sub(r"\s", "", str(full))
                o["account_number_ending"] = digits[-4:] if o.get("currency") == "NZD" else digits[-2:]
        return o

    @staticmethod
    def next_working_day(d):
        while d.weekday() >= 5:  # P3.4: a non-working day rolls forward (bank holidays are not modelled)
            d += timedelta(days=1)
        return d

    # events and webhooks (P3.1) ----------------------------------------------------------------
    def event(self, resource_type, action, links, details, resource=None):
        ev = {"id": rand_id("EV"), "created_at": iso_ms(self.now()), "resource_type": resource_type,
              "action": action, "links": {**links, "organisation": self.config["organisation"]},
              "details": dict(details), "metadata": {},
              "resource_metadata": copy.deepcopy((resource or {}).get("metadata", {}))}
        self.put("events", ev)
        return ev

    def send(self, events):
        """Queues the events of one happening as one delivery, or into the pending batch (switch batch)."""
        cfg = self.webhook.config
        if not cfg or not events:
            return
        n = int(cfg.get("batch") or 1)
        if n <= 1:
            b = Batch(events)
            b.webhook_id = rand_id("WB")
            self.webhook.enqueue(b)
            return
        self.pending.extend(events)
        while len(self.pending) >= n:
            b = Batch(self.pending[:n])
            b.webhook_id = rand_id("WB")
            del self.pending[:n]
            self.webhook.enqueue(b)

    def flush_pending(self):
        if self.pending:
            b = Batch(self.pending)
            b.webhook_id = rand_id("WB")
            self.pending = Batch()
            self.webhook.enqueue(b)

    def build_delivery(self, events, cfg, attempt):
        evs = list(events)
        if cfg.get("reverse_in_batch"):
            evs.reverse()
        body = jdump({"events": evs, "meta": {"webhook_id": events.webhook_id}}).encode("utf-8")
        secret = cfg["secret"] if not cfg.get("bad_signature") else cfg["secret"] + "-wrong"
        return body, {"Content-Type": "application/json", "Origin": "https://api-sandbox.gocardless.com",
                      "User-Agent": "gocardless-webhook-service/1.2", "Webhook-Signature": hmac_sha256_hex(secret, body)}

    # lifecycle ---------------------------------------------------------------------------------
    def move_payment(self, p, action, override=None):
        if action not in PAYMENT_MOVES:
            raise BadRequest(f"payment actions: {', '.join(PAYMENT_MOVES)}", 404)
        frm, to, details = PAYMENT_MOVES[action]
        if p["status"] not in frm:
            raise BadRequest(f"a {p['status']} payment cannot become {action} (from {', '.join(frm)})", 409)
        if to == "__previous__":
            to = p.pop("_before_chargeback", "paid_out")
        if action == "charged_back":
            p["_before_chargeback"] = p["status"]
        if action == "paid_out":
            p["links"]["payout"] = rand_id("PO")
        if to:
            p["status"] = to
        links = {"payment": p["id"]}
        if action == "resubmission_requested":
            p["_retries"] = p.get("_retries", 0) + 1
        return self.event("payments", PAYMENT_ACTION.get(action, action), links, {**details, **(override or {})}, p)

    def move_mandate(self, m, action, override=None):
        if action not in MANDATE_MOVES:
            raise BadRequest(f"mandate actions: {', '.join(MANDATE_MOVES)}", 404)
        frm, to, details = MANDATE_MOVES[action]
        if m["status"] not in frm:
            raise BadRequest(f"a {m['status']} mandate cannot become {action} (from {', '.join(frm)})", 409)
        m["status"] = to
        evs = [self.event("mandates", action, {"mandate": m["id"]}, {**details, **(override or {})}, m)]
        if to in ("cancelled", "failed", "expired"):
            m["next_possible_charge_date"] = None  # P3.5
            for p in self.objs["payments"].values():  # unsubmitted payments die with their mandate
                if p["links"].get("mandate") == m["id"] and p["status"] in ("pending_submission",
                                                                             "pending_customer_approval"):
                    p["status"] = "cancelled"
                    evs.append(self.event("payments", "cancelled", {"payment": p["id"], "mandate": m["id"]}, {
                        "origin": "gocardless", "cause": f"mandate_{to}",
                        "description": f"The mandate for this payment was {to}."}, p))
        elif to == "active" and action == "reinstated":
            m["next_possible_charge_date"] = self.next_working_day(self.today() + timedelta(days=3)).isoformat()
        return evs

    def move_refund(self, r, action):
        if action not in REFUND_MOVES:
            raise BadRequest(f"refund actions: {', '.join(REFUND_MOVES)}", 404)
        frm, to, cause = REFUND_MOVES[action]
        if r["status"] not in frm:
            raise BadRequest(f"a {r['status']} refund cannot become {action}", 409)
        if to in REFUND_REVERSES and r["status"] not in REFUND_REVERSES:
            p = self.get("payments", r["links"]["payment"])
            if p:
                p["amount_refunded"] -= r["amount"]
        if to:
            r["status"] = to
        return self.event("refunds", action, {"refund": r["id"]},
                          {"origin": "gocardless", "cause": cause, "description": f"Refund {action}."}, r)

    def fulfil_billing_request(self, br):
        if br["status"] not in ("pending", "ready_to_fulfil"):
            raise BadRequest(f"a {br['status']} billing request cannot be fulfilled", 409)
        links = br["links"]
        evs = []
        cu = self.get("customers", links.get("customer") or "") or self.put("customers", self.new_object("customers", {}))
        ba = self.get("customer_bank_accounts", links.get("customer_bank_account") or "") or self.put(
            "customer_bank_accounts", self.new_object("customer_bank_accounts", {"links": {"customer": cu["id"]}}))
        links.update(customer=cu["id"], customer_bank_account=ba["id"])
        if br.get("mandate_request"):
            mr = br["mandate_request"]
            m = self.put("mandates", self.new_object("mandates", {
                "status": "pending_submission", "scheme": mr.get("scheme", "bacs"),
                "links": {"customer": cu["id"], "customer_bank_account": ba["id"]}}))
            links["mandate_request_mandate"] = m["id"]
            evs.append(self.event("mandates", "created", {"mandate": m["id"]}, {
                "origin": "api", "cause": "mandate_created", "description": "Mandate created via a billing request."},
                m))
        if br.get("payment_request"):
            pr = br["payment_request"]
            p = self.put("payments", self.new_object("payments", {
                "amount": pr.get("amount", 1000), "currency": pr.get("currency", "GBP"),
                "description": pr.get("description"), "links": {"mandate": links.get("mandate_request_mandate")}}))
            links["payment_request_payment"] = p["id"]
            evs.append(self.event("payments", "created", {"payment": p["id"]}, {
                "origin": "api", "cause": "payment_created", "description": "Payment created via a billing request."},
                p))
        br["status"] = "fulfilled"
        evs.append(self.event("billing_requests", "fulfilled", {"billing_request": br["id"], "customer": cu["id"],
                                                                "customer_bank_account": ba["id"], **{
                                                                    k: v for k, v in links.items() if
                                                                    k in ("mandate_request_mandate",
                                                                          "payment_request_payment")}},
                              {"origin": "api", "cause": "billing_request_fulfilled",
                               "description": "This billing request has been fulfilled, and the resources have been "
                                              "created."}, br))
        return evs

    # limits and stats (P3.3) -------------------------------------------------------------------
    def rate(self):
        """Counts one call in the fixed window; returns (admitted, headers)."""
        now = self.now()
        L, span = self.config["rate_limit"], self.config["rate_window_s"]
        if self.window_start is None or now >= self.window_start + span:
            self.window_start, self.window_count = now, 0
        over = self.window_count >= L
        if over:
            self.stats.violation("minute")
        admitted = not over or not self.config["enforce_limits"]
        if admitted:
            self.window_count += 1
        h = {"RateLimit-Limit": str(L), "RateLimit-Remaining": str(max(0, L - self.window_count)),
             "RateLimit-Reset": email.utils.formatdate(self.window_start + span, usegmt=True)}
        return admitted, h

    def stats_json(self):
        log = self.webhook.log
        ok = sum(1 for d in log if d["status"] and 200 <= d["status"] < 300)
        return {"violations": self.stats.violations, "rate_limit": self.config["rate_limit"],
                "window_count": self.window_count, "calls": self.stats.as_json(), "unauthorised": dict(self.unauth),
                "idempotency": dict(self.idem_stats), "faults_pending": self.faults.view(),
                "webhooks": {"attempts": len(log), "succeeded": ok, "failed": len(log) - ok,
                             "pending_batch": len(self.pending), **self.webhook.view()}}

    def update_config(self, changes):
        if not isinstance(changes, dict):
            raise BadRequest("the configuration is a JSON object")
        cfg = dict(self.config)
        for k, v in changes.items():
            if k not in cfg:
                raise BadRequest(f"unknown setting {k!r}")
            if k == "access_tokens" and not (isinstance(v, list) and all(isinstance(x, str) and x for x in v)):
                raise BadRequest("access_tokens is a list of strings")
            if k in ("rate_limit", "rate_window_s") and not (isinstance(v, int) and v > 0):
                raise BadRequest(f"{k} is a positive integer")
            cfg[k] = v
        self.config = cfg
        return cfg

    def seed_object(self, kind, spec, rid=None):
        if kind not in KINDS or kind == "events":
            raise BadRequest(f"unknown kind {kind!r}", 404)
        if not isinstance(spec, dict):
            raise BadRequest("an object is a JSON object")
        spec = dict(spec)
        if rid:
            if spec.get("id") not in (None, rid):
                raise BadRequest("the body id differs from the path id")
            spec["id"] = rid
        o = self.new_object(kind, spec)
        existed = o["id"] in self.objs[kind]
        self.put(kind, o)
        return o, not existed

    def load(self, doc):
        if doc.get("reset"):
            self.reset()
        if "config" in doc:
            self.update_config(doc["config"])
        n = 0
        for kind, objs in (doc.get("objects") or {}).items():
            for o in objs:
                self.seed_object(kind, o)
                n += 1
        if "webhook" in doc:
            self.webhook.configure(doc["webhook"], WEBHOOK_EXTRA)
        if "faults" in doc:
            self.faults.set(doc["faults"])
        return {"objects": n}

    def demo_document(self):
        return {"config": {"access_tokens": ["gc_sandbox_demo_token", "gc_sandbox_mock_token"]}, "objects": {
            "customers": [{"id": "CU000DEMO00001", "email": "demo@example.com", "given_name": "Demo",
                           "family_name": "Customer"}],
            "customer_bank_accounts": [{"id": "BA000DEMO00001", "account_number": "55779911",
                                        "links": {"customer": "CU000DEMO00001"}}],
            "mandates": [{"id": "MD000DEMO00001", "status": "active",
                          "links": {"customer": "CU000DEMO00001", "customer_bank_account": "BA000DEMO00001"}}],
            "payments": [{"id": "PM000DEMO00001", "amount": 2500, "status": "confirmed",
                          "metadata": {"invoice_number": "INV-0001"}, "links": {"mandate": "MD000DEMO00001"}}]}}


WEBHOOK_EXTRA = ("batch", "reverse_in_batch", "bad_signature")
STATE = State()
LIST_FILTERS = {
    "payments": {"mandate": ("links", "mandate"), "customer": ("_customer",), "status": ("status",)},
    "mandates": {"customer": ("links", "customer"), "status": ("status",)},
    "refunds": {"payment": ("links", "payment"), "mandate": ("links", "mandate")},
    "customers": {},
    "customer_bank_accounts": {"customer": ("links", "customer")},
    "billing_requests": {"status": ("status",), "customer": ("links", "customer")},
    "events": {"resource_type": ("resource_type",), "action": ("action",), "payment": ("links", "payment"),
               "mandate": ("links", "mandate"), "refund": ("links", "refund"),
               "billing_request": ("links", "billing_request")},
}


def public(o):
    return {k: v for k, v in o.items() if not k.startswith("_")}


class Handler(BaseHandler):
    server_version = "gocardless-mock/1.0"
    mock_name = NAME

    def api(self, method, path, query, body):
        st = STATE
        req_id = str(uuid.uuid4())
        hdrs = {"X-Request-Id": req_id}
        entry = {"t_ms": int(st.now() * 1000), "method": method, "path": path, "query": query, "status": None,
                 "request_id": req_id, "idempotency_key": self.headers.get("Idempotency-Key"),
                 "version": self.headers.get("GoCardless-Version"), "fault": None}
        counted = False
        status = 500
        generation = st.generation
        try:
            with st.lock:
                st.log.append(entry)
                h = self.headers.get("Authorization") or ""
                token = h[7:].strip() if h[:7].lower() == "bearer " else None
                if token not in st.config["access_tokens"]:
                    st.unauth["401"] += 1
                    # [unverified] reasons: the GoCardless API reference lists authentication errors by these names
                    reason = "missing_authorization_header" if not h else "authentication_failed"
                    raise GCError(401, "invalid_api_usage",
                                  "Authorization header missing" if not h else "Invalid access token", reason=reason)
                ver = self.headers.get("GoCardless-Version")
                if ver != VERSION:
                    st.unauth["400_version"] += 1
                    if ver is None:
                        raise GCError(400, "invalid_api_usage", "GoCardless-Version header missing",
                                      reason="missing_version_header")  # [unverified] wording
                    raise GCError(400, "invalid_api_usage", f"Version {ver} not found", reason="version_not_found")
                counted = True
                st.stats.begin(st.mono(), method + " " + re.sub(r"/[A-Z]{2,3}[0-9A-Z]+", "/ID", path))
                admitted, rl = st.rate()
                hdrs.update(rl)
                if not admitted:
                    st.stats.sent_429_limit += 1
                    raise GCError(429, "invalid_api_usage", "Rate limit exceeded",
                                  [{"reason": "rate_limit_exceeded", "message": "Rate limit exceeded"}])
                fault = st.faults.take(method, path)
            if fault:
                entry["fault"] = fault["mode"]
                time.sleep(fault["delay_ms"] / 1000.0)
                fh = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
                if fault["mode"] == "429":
                    with st.lock:
                        st.stats.sent_429_fault += 1
                    raise GCError(429, "invalid_api_usage", "Rate limit exceeded",
                                  [{"reason": "rate_limit_exceeded", "message": "Rate limit exceeded"}], headers=fh)
                if fault["mode"] in ("500", "502", "503", "504"):
                    raise GCError(int(fault["mode"]), "gocardless", "Uh-oh! Something went wrong.",
                                  [{"reason": "internal_server_error", "message": "Internal server error"}],
                                  headers=fh)
                if fault["mode"] == "409":
                    raise invalid_state("conflict", "Conflict")
            with st.lock:
                status, obj, events = self.route(method, path, query, body)
                st.send(events)
            if fault and fault["mode"] == "drop":
                status = "drop"
                return self.drop()
            return self.reply(status, jdump(obj) + "\n", headers=hdrs)
        except GCError as e:
            status = e.status
            e.body["error"]["request_id"] = req_id
            hdrs.update(e.headers)
            return self.reply(status, jdump(e.body) + "\n", headers=hdrs)
        finally:
            with st.lock:
                entry["status"] = status
                if counted and generation == st.generation:
                    st.stats.end(status)

    def route(self, method, path, query, body):
        st = STATE
        segs = [s for s in path.split("/") if s]
        if not segs or segs[0] not in KINDS:
            raise not_found()
        kind = segs[0]
        if method == "GET" and len(segs) == 1 and kind in LIST_FILTERS:
            return 200, self.list(kind, query), []
        if method == "GET" and len(segs) == 2:
            o = st.get(kind, segs[1])
            if o is None:
                raise not_found()
            return 200, {kind: public(o)}, []
        if method == "POST" and len(segs) == 1 and kind in ("payments", "refunds", "billing_requests",
                                                              "billing_request_flows"):
            return self.create(kind, body)
        if method == "POST" and len(segs) == 4 and kind == "mandates" and segs[2] == "actions":
            return self.mandate_action(segs[1], segs[3], body)
        if method == "POST" and len(segs) == 4 and kind == "payments" and segs[2] == "actions":
            return self.payment_action(segs[1], segs[3], body)
        raise not_found()

    def list(self, kind, query):
        st = STATE
        q = dict(parse_qsl(query, keep_blank_values=True))
        allowed = set(LIST_FILTERS[kind]) | {"limit", "after", "before"}
        for k in q:
            base = k.split("[")[0]
            if base not in allowed and base not in ("created_at", "charge_date"):
                raise invalid(k, "is not a permitted parameter")  # [unverified] wording
        try:
            limit = int(q.get("limit", 50))
        except ValueError:
            raise invalid("limit", "must be a number") from None
        if not 1 <= limit <= 500:
            raise invalid("limit", "must be between 1 and 500")
        items = sorted(st.objs[kind].values(), key=lambda o: st.seq[o["id"]])

        def keep(o):
            for f, pth in LIST_FILTERS[kind].items():
                if f not in q:
                    continue
                if pth == ("_customer",):
                    m = st.get("mandates", o["links"].get("mandate") or "")
                    v = m["links"].get("customer") if m else None
                else:
                    v = o
                    for p in pth:
                        v = (v or {}).get(p)
                if v != q[f]:
                    return False
            for fld in ("created_at", "charge_date"):
                for op in ("gt", "gte", "lt", "lte"):
                    want = q.get(f"{fld}[{op}]")
                    if want is None:
                        continue
                    have = o.get(fld)
                    if have is None:
                        return False
                    if (op == "gt" and not have > want) or (op == "gte" and not have >= want) or \
                            (op == "lt" and not have < want) or (op == "lte" and not have <= want):
                        return False
            return True

        items = [o for o in items if keep(o)]
        ids = [o["id"] for o in items]
        after, before = q.get("after"), q.get("before")
        if after and before:
            raise invalid("after", "cannot be combined with before")
        for name, cur in (("after", after), ("before", before)):
            if cur and cur not in ids:
                raise invalid(name, "is not a valid cursor")
        if after:
            i = ids.index(after) + 1
            page = items[i:i + limit]
            start = i
        elif before:
            end = ids.index(before)
            start = max(0, end - limit)
            page = items[start:end]
        else:
            start = 0
            page = items[:limit]
        more_after = start + len(page) < len(items)
        more_before = start > 0
        return {kind: [public(o) for o in page], "meta": {"cursors": {
            "before": page[0]["id"] if page and more_before else None,
            "after": page[-1]["id"] if page and more_after else None}, "limit": limit}}

    def envelope(self, kind, body):
        try:
            doc = json.loads(body.decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError):
            raise GCError(400, "invalid_api_usage", "Invalid JSON", reason="invalid_json") from None
        if not isinstance(doc, dict) or not isinstance(doc.get(kind), dict):
            raise GCError(400, "invalid_api_usage", f"The body must be a JSON object with a '{kind}' member",
                          reason="invalid_document_structure")
        return doc[kind]

    def check_metadata(self, md):
        if md is None:
            return {}
        if not isinstance(md, dict) or len(md) > 3:  # P3.4: max 3 keys
            raise invalid("metadata", "must have at most 3 keys")
        for k, v in md.items():
            if len(k) > 50 or not isinstance(v, str) or len(v) > 500:
                raise invalid("metadata", "keys are at most 50 characters and values strings of at most 500")
        return md

    def create(self, kind, body):
        """POST /payments and POST /refunds with GoCardless's idempotent creation (P3.3)."""
        st = STATE
        spec = self.envelope(kind, body)
        key = (self.headers.get("Idempotency-Key") or "").strip() or None
        if key:
            prior = st.idem.get((kind, key))
            ttl = st.config["idempotency_ttl"]
            if prior and ttl is not None and st.now() - prior[1] >= ttl:
                prior = None
            if prior:
                st.idem_stats["conflicts"] += 1
                raise invalid_state("idempotent_creation_conflict",
                                    "A resource has already been created with this idempotency key",
                                    {"conflicting_resource_id": prior[0]})
        o, events = {"payments": self.create_payment, "refunds": self.create_refund,
                     "billing_requests": self.create_billing_request,
                     "billing_request_flows": self.create_billing_request_flow}[kind](spec)
        if key:
            st.idem[(kind, key)] = (o["id"], st.now())
            st.idem_stats["created"] += 1
        return 201, {kind: public(o)}, events

    def create_payment(self, s):
        st = STATE
        allowed = {"amount", "currency", "charge_date", "description", "reference", "metadata", "retry_if_possible",
                   "links", "app_fee"}
        for k in s:
            if k not in allowed:
                raise invalid(k, "is not a permitted parameter")  # [unverified] wording
        amount = s.get("amount")
        if amount is None:
            raise invalid("amount", "is missing")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
            raise invalid("amount", "must be an integer greater than or equal to 1 (minor units)")
        cur = s.get("currency")
        if cur not in CURRENCIES:
            raise invalid("currency", f"must be one of {', '.join(CURRENCIES)}")
        mid = (s.get("links") or {}).get("mandate")
        if not mid:
            raise invalid("links.mandate", "is missing")
        m = st.get("mandates", mid)
        if m is None:
            raise invalid("links.mandate", "not found")  # [unverified] how GoCardless reports an unknown link
        if m["status"] not in PAYABLE_MANDATE:
            raise invalid_state("mandate_is_inactive", "The mandate is not in a state that allows payments")
        if SCHEME_CURRENCY.get(m["scheme"], cur) != cur:
            raise invalid("currency", f"must be {SCHEME_CURRENCY[m['scheme']]} for a {m['scheme']} mandate")
        npcd = m.get("next_possible_charge_date")
        cd = s.get("charge_date")
        if cd is not None:
            try:
                d = date.fromisoformat(cd)
            except (TypeError, ValueError):
                raise invalid("charge_date", "must be a date YYYY-MM-DD") from None
            if npcd and cd < npcd:  # P3.4: before next_possible_charge_date fails
                raise invalid("charge_date", "must be on or after mandate's next_possible_charge_date")
            cd = st.next_working_day(d).isoformat()  # P3.4: rolled forward; read it back
        else:
            cd = npcd or st.next_working_day(st.today() + timedelta(days=3)).isoformat()
        p = st.new_object("payments", {
            "amount": amount, "currency": cur, "charge_date": cd, "description": s.get("description"),
            "reference": s.get("reference"), "metadata": self.check_metadata(s.get("metadata")),
            "retry_if_possible": bool(s.get("retry_if_possible", False)), "scheme": m["scheme"],
            "status": "pending_customer_approval" if m.get("payments_require_approval") else "pending_submission",
            "links": {"mandate": mid}})
        st.put("payments", p)
        return p, [st.event("payments", "created", {"payment": p["id"], "mandate": mid}, {
            "origin": "api", "cause": "payment_created", "description": "Payment created via the API."}, p)]

    def create_refund(self, s):
        st = STATE
        for k in s:
            if k not in ("amount", "total_amount_confirmation", "reference", "metadata", "links"):
                raise invalid(k, "is not a permitted parameter")
        pid = (s.get("links") or {}).get("payment")
        p = st.get("payments", pid or "")
        if not pid:
            raise invalid("links.payment", "is missing")
        if p is None:
            raise invalid("links.payment", "not found")
        amount = s.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
            raise invalid("amount", "must be an integer greater than or equal to 1")
        if p["status"] not in ("confirmed", "paid_out"):
            raise invalid_state("refund_payment_invalid_state", "Payments can only be refunded once confirmed")
        if amount > p["amount"] - p["amount_refunded"]:
            raise invalid("amount", "exceeds the amount of the payment that has not been refunded")
        tac = s.get("total_amount_confirmation")
        if st.config["require_total_amount_confirmation"] and tac != p["amount_refunded"] + amount:
            # the total refunded including this one, which guards against double refunds [unverified wording]
            raise GCError(422, "invalid_state", "Total amount confirmation is invalid",
                          [{"reason": "total_amount_confirmation_invalid",
                            "message": "The total_amount_confirmation does not match the total refunded amount"}])
        r = st.new_object("refunds", {"amount": amount, "currency": p["currency"], "reference": s.get("reference"),
                                      "metadata": self.check_metadata(s.get("metadata")),
                                      "links": {"payment": pid, "mandate": p["links"].get("mandate")}})
        st.put("refunds", r)
        p["amount_refunded"] += amount
        return r, [st.event("refunds", "created", {"refund": r["id"]}, {
            "origin": "api", "cause": "refund_created", "description": "The refund has been created."}, r)]

    def create_billing_request(self, s):
        """POST /billing_requests (PROVIDERS.md 3.6): mandate_request{scheme, currency?, verify?, metadata?} and/or
        payment_request{amount, currency, description?}, links{customer?, customer_bank_account?}, metadata. A
        customer is made now unless links name one (its details come later, in the flow); status pending, with the
        actions the payer still has to do. The control API's POST /_mock/billing_requests/{id}/fulfil completes it."""
        st = STATE
        for k in s:
            if k not in ("mandate_request", "payment_request", "links", "metadata", "fallback_enabled",
                         "purpose_code"):
                raise invalid(k, "is not a permitted parameter")
        mr, pr = s.get("mandate_request"), s.get("payment_request")
        if mr is None and pr is None:
            raise invalid("mandate_request", "one of mandate_request or payment_request is required")
        if mr is not None:
            if not isinstance(mr, dict):
                raise invalid("mandate_request", "must be an object")
            for k in mr:
                if k not in ("scheme", "currency", "verify", "metadata", "description", "reference"):
                    raise invalid(f"mandate_request.{k}", "is not a permitted parameter")
            scheme = mr.get("scheme")
            if scheme is not None and scheme not in SCHEME_CURRENCY:
                raise invalid("mandate_request.scheme", f"must be one of {', '.join(SCHEME_CURRENCY)}")
            if mr.get("verify", "recommended") not in ("minimum", "recommended", "when_available", "always"):
                raise invalid("mandate_request.verify", "must be one of minimum, recommended, when_available, always")
            cur = mr.get("currency") or SCHEME_CURRENCY.get(scheme or "bacs", "GBP")
            if cur not in CURRENCIES:
                raise invalid("mandate_request.currency", f"must be one of {', '.join(CURRENCIES)}")
            mr = {"currency": cur, "scheme": scheme, "verify": mr.get("verify", "recommended"),
                  "metadata": self.check_metadata(mr.get("metadata")), "links": {}}
        if pr is not None:
            if not isinstance(pr, dict) or not isinstance(pr.get("amount"), int) or pr["amount"] < 1:
                raise invalid("payment_request.amount", "must be an integer greater than or equal to 1")
            if pr.get("currency") not in CURRENCIES:
                raise invalid("payment_request.currency", f"must be one of {', '.join(CURRENCIES)}")
        links = s.get("links") or {}
        if not isinstance(links, dict) or any(k not in ("customer", "customer_bank_account") for k in links):
            raise invalid("links", "may name customer and customer_bank_account")
        if links.get("customer") and st.get("customers", links["customer"]) is None:
            raise invalid("links.customer", "not found")  # [unverified] how GoCardless reports an unknown link
        cu = st.get("customers", links.get("customer") or "") or st.put("customers", st.new_object("customers", {}))
        br = st.new_object("billing_requests", {
            "mandate_request": mr, "payment_request": pr, "metadata": self.check_metadata(s.get("metadata")),
            "fallback_enabled": bool(s.get("fallback_enabled", False)),
            "actions": [{"type": t, "required": True, "completes_actions": [], "requires_actions": [],
                         "status": "pending"} for t in ("collect_customer_details", "collect_bank_account",
                                                        "confirm_payer_details")],
            "links": {"customer": cu["id"], "customer_billing_detail": rand_id("CBD"),
                      "customer_bank_account": links.get("customer_bank_account"),
                      **({"mandate_request": rand_id("MRQ")} if mr else {}),
                      **({"payment_request": rand_id("PRQ")} if pr else {})}})
        st.put("billing_requests", br)
        return br, [st.event("billing_requests", "created", {"billing_request": br["id"], "customer": cu["id"]}, {
            "origin": "api", "cause": "billing_request_created",
            "description": "This billing request has been created."}, br)]

    def create_billing_request_flow(self, s):
        """POST /billing_request_flows (PROVIDERS.md 3.6): redirect_uri, exit_uri, links{billing_request},
        prefilled_customer, lock_*; answers the authorisation_url of a page of this mock, valid 7 days."""
        st = STATE
        for k in s:
            if k not in ("redirect_uri", "exit_uri", "links", "prefilled_customer", "prefilled_bank_account",
                         "lock_bank_account", "lock_customer_details", "lock_currency", "language", "show_redirect_buttons",
                         "show_success_redirect_button", "skip_success_screen", "customer_details_captured"):
                raise invalid(k, "is not a permitted parameter")
        brq = (s.get("links") or {}).get("billing_request")
        if not brq:
            raise invalid("links.billing_request", "is missing")
        br = st.get("billing_requests", brq)
        if br is None:
            raise invalid("links.billing_request", "not found")
        if br["status"] not in ("pending", "ready_to_fulfil"):
            raise invalid_state("billing_request_not_pending", f"The billing request is {br['status']}")
        for u in ("redirect_uri", "exit_uri"):
            if s.get(u) is not None and not re.match(r"^https?://[^\s]+$", str(s[u])):
                raise invalid(u, "must be a URL")
        fid = rand_id("BRF")
        host = self.headers.get("Host") or "localhost"
        flow = {"id": fid, "created_at": iso_ms(st.now()), "expires_at": iso_ms(st.now() + 7 * 86400),
                "authorisation_url": f"http://{host}/billing/static/flow?id={fid}",
                "redirect_uri": s.get("redirect_uri"), "exit_uri": s.get("exit_uri"),
                "session_token": None, "auto_fulfil": True, "language": s.get("language"),
                "lock_bank_account": bool(s.get("lock_bank_account", False)),
                "lock_customer_details": bool(s.get("lock_customer_details", False)),
                "lock_currency": bool(s.get("lock_currency", False)),
                "prefilled_customer": s.get("prefilled_customer"),
                "links": {"billing_request": brq}}
        st.put("billing_request_flows", flow)
        return flow, [st.event("billing_requests", "flow_created", {"billing_request": brq,
                                                                    "billing_request_flow": fid}, {
            "origin": "api", "cause": "billing_request_flow_created",
            "description": "A billing request flow has been created against this billing request."}, br)]

    def mandate_action(self, mid, action, body):
        """POST /mandates/{id}/actions/cancel (with an optional {"data": {"metadata"}}); a mandate that cannot be
        cancelled any more is a 409 invalid_state."""
        st = STATE
        m = st.get("mandates", mid)
        if m is None:
            raise not_found()
        if action != "cancel":
            raise not_found()
        if body:
            try:
                doc = json.loads(body.decode("utf-8") or "null")
            except (ValueError, UnicodeDecodeError):
                raise GCError(400, "invalid_api_usage", "Invalid JSON", reason="invalid_json") from None
            if doc is not None and (not isinstance(doc, dict) or set(doc) - {"data"}):
                raise GCError(400, "invalid_api_usage", "The body must be a JSON object with a 'data' member",
                              reason="invalid_document_structure")
        if m["status"] in ("cancelled", "failed", "expired", "consumed", "blocked"):
            raise invalid_state("mandate_already_cancelled" if m["status"] == "cancelled" else "mandate_not_active",
                                f"The mandate is {m['status']} and cannot be cancelled")  # [unverified] reasons
        evs = st.move_mandate(m, "cancelled", {"origin": "api", "cause": "mandate_cancelled", "scheme": None,
                                               "reason_code": None,
                                               "description": "The mandate was cancelled via the API."})
        return 200, {"mandates": public(m)}, evs

    def payment_action(self, pid, action, body):
        """POST /payments/{id}/actions/cancel|retry (P3.4)."""
        st = STATE
        p = st.get("payments", pid)
        if p is None:
            raise not_found()
        if action == "cancel":
            if p["status"] not in ("pending_submission", "pending_customer_approval"):
                raise invalid_state("cancellation_failed", "This payment cannot be cancelled")
            ev = st.move_payment(p, "cancelled")
        elif action == "retry":
            m = st.get("mandates", p["links"].get("mandate") or "")
            if p["status"] != "failed" or not m or m["status"] != "active" or p.get("_retries", 0) >= 3:
                raise invalid_state("retry_failed", "This payment cannot be retried")
            ev = st.move_payment(p, "resubmission_requested")
        else:
            raise not_found()
        return 200, {"payments": public(p)}, [ev]

    # control API ---------------------------------------------------------------------------------
    def control(self, method, parts, query, body):
        st = STATE
        q = dict(parse_qsl(query, keep_blank_values=True))
        head = parts[0] if parts else ""
        with st.lock:
            if (method, head) == ("GET", "health"):
                return self.reply_json(200, {"ok": True})
            if (method, head) == ("POST", "reset"):
                opts = self.body_json(body, {}) or {}
                st.reset()
                if opts.get("seed"):
                    for doc in st.seed:
                        st.load(doc)
                return self.reply_json(200, {"ok": True})
            if head == "config" and len(parts) == 1:
                if method == "PUT":
                    st.update_config(self.body_json(body, {}))
                elif method != "GET":
                    raise BadRequest("GET or PUT /_mock/config", 405)
                return self.reply_json(200, st.config)
            if head == "clock" and len(parts) == 1:
                if method == "POST":
                    adv = (self.body_json(body, {}) or {}).get("advance", 0)
                    if not isinstance(adv, (int, float)) or adv < 0:
                        raise BadRequest("advance must be a non-negative number of seconds")
                    st.offset += adv
                return self.reply_json(200, {"offset_s": st.offset, "now": iso_ms(st.now())})
            if head == "objects":
                return self.control_objects(method, parts[1:], q, body)
            if head == "faults" and len(parts) == 1:
                if method == "POST":
                    st.faults.set(self.body_json(body, {"mode": "none"}))
                elif method == "DELETE":
                    st.faults.rules = []
                elif method != "GET":
                    raise BadRequest("GET, POST or DELETE /_mock/faults", 405)
                return self.reply_json(200, st.faults.view())
            if head == "stats" and len(parts) == 1:
                if method == "DELETE":
                    st.reset_stats()
                    return self.reply(204)
                return self.reply_json(200, st.stats_json())
            if head == "requests" and len(parts) == 1:
                if method == "DELETE":
                    st.log.clear()
                    return self.reply(204)
                return self.reply_json(200, list(st.log))
            if (method, head) == ("POST", "load"):
                return self.reply_json(200, st.load(self.body_json(body, {})))
            if head == "webhook":
                return self.control_webhook(method, parts[1:], body)
            if head == "deliveries" and len(parts) == 1:
                if method == "DELETE":
                    st.webhook.log.clear()
                    return self.reply(204)
                return self.reply_json(200, list(st.webhook.log))
            if head == "events" and method == "POST" and len(parts) == 3 and parts[2] == "resend":
                ev = st.get("events", parts[1])
                if ev is None:
                    raise BadRequest("no such event", 404)
                st.send([ev])
                return self.reply_json(200, ev)
            if method == "POST" and len(parts) == 3 and head in ("payments", "mandates", "refunds", "billing_requests"):
                o = st.get(head, parts[1])
                if o is None:
                    raise BadRequest(f"no {head} {parts[1]!r}", 404)
                spec = self.body_json(body, {}) or {}
                if head == "payments":
                    evs = [st.move_payment(o, parts[2], spec.get("details"))]
                elif head == "mandates":
                    evs = st.move_mandate(o, parts[2], spec.get("details"))
                elif head == "refunds":
                    evs = [st.move_refund(o, parts[2])]
                elif parts[2] == "fulfil":
                    evs = st.fulfil_billing_request(o)
                elif parts[2] == "cancel":
                    o["status"] = "cancelled"
                    evs = [st.event("billing_requests", "cancelled", {"billing_request": o["id"]}, {
                        "origin": "api", "cause": "billing_request_cancelled",
                        "description": "This billing request has been cancelled."}, o)]
                else:
                    raise BadRequest("billing_requests: fulfil, cancel", 404)
                st.send(evs)
                return self.reply_json(200, {head: public(o), "events": evs})
        raise BadRequest(f"no control endpoint {method} /_mock/{'/'.join(parts)}", 404)

    def control_objects(self, method, parts, q, body):
        st = STATE
        if not parts or parts[0] not in KINDS:
            raise BadRequest(f"/_mock/objects/{{{'|'.join(KINDS)}}}[/{{id}}]", 404)
        kind = parts[0]
        if len(parts) == 1:
            if method == "GET":
                return self.reply_json(200, [public(o) for o in st.objs[kind].values()])
            if method == "POST":
                o, _ = st.seed_object(kind, self.body_json(body, {}) or {})
                return self.reply_json(201, public(o))
            raise BadRequest("GET or POST /_mock/objects/{kind}", 405)
        if method == "PUT":
            o, created = st.seed_object(kind, self.body_json(body, {}) or {}, parts[1])
            if q.get("emit"):  # ?emit=created: an event "<kind>.created" for it
                link = {"payments": "payment", "mandates": "mandate", "refunds": "refund", "customers": "customer",
                        "billing_requests": "billing_request"}.get(kind, kind)
                st.send([st.event(kind, q["emit"], {link: o["id"]}, {
                    "origin": "api", "cause": f"{link}_{q['emit']}", "description": f"{link} {q['emit']}."}, o)])
            return self.reply_json(201 if created else 200, public(o))
        o = st.get(kind, parts[1])
        if o is None:
            return self.reply_json(404, {"error": "no such object"})
        if method == "GET":
            return self.reply_json(200, public(o))
        if method == "DELETE":
            del st.objs[kind][parts[1]]
            return self.reply(204)
        raise BadRequest("GET, PUT or DELETE /_mock/objects/{kind}/{id}", 405)

    def control_webhook(self, method, parts, body):
        st = STATE
        if not parts:
            if method == "PUT":
                return self.reply_json(200, st.webhook.configure(self.body_json(body, {}) or {}, WEBHOOK_EXTRA))
            if method == "GET":
                return self.reply_json(200, {**st.webhook.view(), "pending_batch": len(st.pending)})
            if method == "DELETE":
                st.webhook.clear()
                st.pending = Batch()
                return self.reply(204)
        if method == "POST" and parts == ["flush"]:
            spec = self.body_json(body, {}) or {}
            st.flush_pending()
            return self.reply_json(200, {"released": st.webhook.flush(spec.get("order", "fifo"), spec.get("seed"))})
        if method == "POST" and parts == ["drain"]:
            spec = self.body_json(body, {}) or {}
            st.lock.release()
            try:
                ok = st.webhook.drain(float(spec.get("timeout_s", 10)))
            finally:
                st.lock.acquire()
            return self.reply_json(200 if ok else 504, {"drained": ok, **st.webhook.view()})
        raise BadRequest("PUT/GET/DELETE /_mock/webhook, POST /_mock/webhook/flush|drain", 404)


def main(argv=None):
    return run(NAME, Handler, STATE, "Mock of the GoCardless Pro API for settled's tests.", argv=argv)


if __name__ == "__main__":
    sys.exit(main())
