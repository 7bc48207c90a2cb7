#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""stripe_api.py: a mock of the Stripe REST API (v1) as settled uses it, with signed webhook emission, for
settled's tests and offline demos.

    python3 tests/mock/stripe_api.py --port PORT [--host 127.0.0.1] [--state FILE.json] [--demo] [--quiet]

Prints ``stripe-mock listening on http://HOST:PORT`` (flushed) once it accepts connections (--port 0 picks
a free port, printed in that line) and exits 0 on SIGTERM or SIGINT. Python 3 standard library only; the
only outbound connections are webhook POSTs to the loopback URL set with PUT /_mock/webhook.

The protocol facts it imitates are in /work/shared/providers/PROVIDERS.md section 1 (cited below as
"P1.x") and the example objects in fixtures/stripe/. tests/mock/README.md documents every endpoint,
control call and default; tests/integration/test_stripe_mock.py is its self-test.

Design points a client author must know:
  * Auth is a secret key as Bearer or as the Basic user name (P1.5); 401 otherwise, with Stripe's error
    envelope (P1.8). Objects are scoped per Stripe-Account (Connect).
  * POST bodies are form-encoded with bracket notation (metadata[k]=v), as v1 requires (P1.5). Unknown
    parameters are refused, as Stripe does.
  * Idempotency-Key (P1.7): the first response of a key is saved once execution begins (402s and 500s
    included, validation 400s not) and replayed with Idempotent-Replayed: true; another endpoint or other
    parameters under the same key get 400 idempotency_error; a key still in flight gets 409
    idempotency_key_in_use; keys expire after 24 h of the mock's clock.
  * Lists (P1.9) are newest first with limit (1..100, default 10), starting_after, ending_before and
    created[gt|gte|lt|lte].
  * Rate limits (P1.6) are per account and per second: 25 reads + 25 writes (sandbox). Real 429s carry
    code rate_limit and no Retry-After (P1.6 says not to depend on either header).
  * Every state change, by the API or the control API, is recorded as an event (GET /v1/events) and, if a
    webhook endpoint is configured, delivered signed with Stripe-Signature t=..,v1=.. (P1.1, P1.2).
"""

import base64
import copy
import hashlib
import json
import os
import re
import secrets
import string
import sys
import threading
import time
from collections import deque
from urllib.parse import parse_qsl, urlencode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mock_common import (BadRequest, BaseHandler, CallStats, Faults, WebhookSender, Window,  # noqa: E402
                         hmac_sha256_hex, jdump, parse_form, run)

NAME = "stripe-mock"
API_VERSION = "2026-07-29.dahlia"  # P1.5: stripe-go APIVersion at the snapshot PROVIDERS.md read
KINDS = {  # control/API name -> (id prefix, object name)
    "payment_intents": ("pi_", "payment_intent"),
    "charges": ("ch_", "charge"),
    "refunds": ("re_", "refund"),
    "disputes": ("dp_", "dispute"),
    "customers": ("cus_", "customer"),
    "payment_methods": ("pm_", "payment_method"),
    "setup_intents": ("seti_", "setup_intent"),
    "checkout_sessions": ("cs_test_", "checkout.session"),  # served at /v1/checkout/sessions
    "events": ("evt_", "event"),
}
OBJECT_KIND = {v[1].split(".")[0]: k for k, v in KINDS.items()}  # event type prefix -> kind ("checkout" too)
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf",
                "xof", "xpf"}  # P1.12
THREE_DECIMAL = {"bhd", "jod", "kwd", "omr", "tnd"}  # P1.12
CURRENCIES = ZERO_DECIMAL | THREE_DECIMAL | {
    "usd", "eur", "gbp", "aud", "cad", "nzd", "chf", "sek", "nok", "dkk", "pln", "czk", "huf", "isk", "sgd", "hkd",
    "mxn", "brl", "inr", "zar", "aed", "ils", "thb", "myr", "php", "idr", "ron", "bgn", "try", "twd", "cny"}
# Stripe's test payment methods (magic ids usable without creating them) and what confirming them does.
MAGIC_PMS = {
    "pm_card_visa": "succeed", "pm_card_mastercard": "succeed", "pm_card_amex": "succeed",
    "pm_card_chargeDeclined": "card_declined", "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
    "pm_card_chargeDeclinedExpiredCard": "expired_card", "pm_card_authenticationRequired": "authentication_required",
    "pm_card_threeDSecureRequired": "authentication_required",
}
OUTCOMES = ("succeed", "card_declined", "insufficient_funds", "expired_card", "authentication_required",
            "processing", "processing_error")
DECLINES = {  # outcome -> (code, decline_code, message)  (P1.8 codes; messages as Stripe words them)
    "card_declined": ("card_declined", "generic_decline", "Your card was declined."),
    "insufficient_funds": ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    "expired_card": ("expired_card", "expired_card", "Your card has expired."),
    "processing_error": ("processing_error", "processing_error",
                         "An error occurred while processing your card. Try again in a little bit."),
    "authentication_required": ("authentication_required", "authentication_required",
                                "Your card was declined. This transaction requires authentication."),
}
DOC = "https://stripe.com/docs/error-codes/"
DAY = 86400.0


def default_config():
    """The knobs of the mock; PUT /_mock/config changes any of them."""
    return {
        "api_keys": ["sk_test_mock"],  # accepted secret keys (P1.5)
        "api_version": API_VERSION,  # the account default: used without Stripe-Version and for events (P1.2)
        "limits": {"read": 25, "write": 25, "concurrent": None},  # per account per second, sandbox (P1.6)
        "enforce_limits": True,  # False: never 429 for a limit, but still count the violations
        "idempotency_ttl": DAY,  # P1.7: keys may be pruned after 24 h
        "refund_status": "succeeded",  # the status a new card refund starts in (pending is also real)
        "livemode": False,
        "pretty": True,  # Stripe pretty-prints its JSON (two-space indent)
    }


def rand_id(prefix, n=24):
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


class StripeError(Exception):
    """An API error in Stripe's envelope (P1.8). saved=False: a validation failure, which is not saved under
    an idempotency key (P1.7)."""

    def __init__(self, status, etype, message, code=None, param=None, saved=False, headers=None, **extra):
        super().__init__(message)
        self.status, self.saved, self.headers = status, saved, headers or {}
        err = {"type": etype, "message": message}
        if code:
            err["code"] = code
            err["doc_url"] = DOC + code.replace("_", "-")
        if param:
            err["param"] = param
        err.update(extra)
        self.body = {"error": err}


def missing(kind, rid, param="id"):
    return StripeError(404, "invalid_request_error", f"No such {KINDS[kind][1]}: '{rid}'", "resource_missing", param)


def bad(message, param=None, code=None, status=400):
    return StripeError(status, "invalid_request_error", message, code, param)


def to_int(v, param):
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v):
        return int(v)
    raise bad(f"Invalid integer: {v}", param, "parameter_invalid_integer")


def to_bool(v, param):
    if isinstance(v, bool):
        return v
    if v in ("true", "false"):
        return v == "true"
    raise bad(f"Invalid boolean: {v}", param)


def check_params(params, allowed):
    for k in params:
        if k not in allowed:
            raise bad(f"Received unknown parameter: {k}", k, "parameter_unknown")


def check_metadata(md):
    if md in (None, ""):
        return {}
    if not isinstance(md, dict):
        raise bad("Invalid hash", "metadata")
    if len(md) > 50:
        raise bad("Metadata can have up to 50 keys", "metadata")
    for k, v in md.items():
        if len(k) > 40 or len(str(v)) > 500:
            raise bad("Metadata keys are limited to 40 characters and values to 500", "metadata")
    return {k: str(v) for k, v in md.items()}


def check_amount(amount, currency, param="amount"):
    """P1.10 (eight digits) and P1.12 (ISK multiples of 100, three-decimal last digit 0)."""
    if amount < 1:
        raise bad("This value must be greater than or equal to 1.", param, "amount_too_small")
    if amount > 99999999:
        raise bad("Amount must be no more than 99999999 in the currency's smallest unit.", param, "amount_too_large")
    if currency == "isk" and amount % 100:
        raise bad("Amounts in ISK must be multiples of 100 (ISK has no decimals).", param,
                  "invalid_charge_amount_no_decimal_compatible")
    if currency in THREE_DECIMAL and amount % 10:
        # [unverified] the code Stripe uses here; P1.12 only says the last digit must be 0
        raise bad(f"Amounts in {currency.upper()} must end in 0.", param, "invalid_amount")


def check_currency(cur, param="currency"):
    if cur in (None, ""):
        raise bad(f"Missing required param: {param}.", param, "parameter_missing")
    c = str(cur).lower()  # Stripe accepts any case and answers lowercase (P1.10)
    if c not in CURRENCIES:
        raise bad(f"Invalid currency: {cur}. Stripe currently supports these currencies: "
                  + ", ".join(sorted(CURRENCIES)), param, "invalid_currency")  # [unverified] code
    return c


class Store:
    """The objects of one account (the platform is account None)."""

    def __init__(self):
        self.objs = {k: {} for k in KINDS}  # kind -> id -> dict (insertion order = creation order)
        self.seq = {}  # id -> creation sequence number (tie-break within one second)


class State:
    def __init__(self):
        self.lock = threading.RLock()
        self.offset = 0.0
        self.seed = []
        self.faults = Faults(self.mono)
        self.webhook = WebhookSender(NAME, self.now, self.build_delivery)
        self.reset()

    # clocks ------------------------------------------------------------------------------------
    def now(self):
        return time.time() + self.offset

    def mono(self):
        return time.monotonic() + self.offset

    def reset(self):
        with self.lock:
            self.config = default_config()
            self.accounts = {None: Store()}
            self.outcomes = {}  # (account, pm id) -> outcome of confirming with it
            self.cs_extra = {}  # (account, cs id) -> {line_items, payment_intent_data, setup_intent_data}: not served
            self.idem = {}  # (account, key) -> entry
            self.faults.rules = []
            self.webhook.clear()
            self.counter = 0
            self.reset_stats()

    def reset_stats(self):
        with self.lock:
            self.generation = getattr(self, "generation", 0) + 1
            self.stats = CallStats()
            self.acct_stats = {}
            self.limiter = {}  # (account, "read"|"write") -> Window(1 s) of admitted calls
            self.acct_inflight = {}
            self.unauth = {"401": 0, "403": 0}
            self.idem_stats = {"saved": 0, "replayed": 0, "mismatch": 0, "in_use": 0, "expired": 0}
            self.log = deque(maxlen=5000)

    def store(self, account, create=False):
        s = self.accounts.get(account)
        if s is None:
            if not create:
                return None
            s = self.accounts[account] = Store()
        return s

    # objects -----------------------------------------------------------------------------------
    def put(self, account, kind, obj):
        s = self.store(account, create=True)
        if obj["id"] not in s.objs[kind]:
            self.counter += 1
            s.seq[obj["id"]] = self.counter
        s.objs[kind][obj["id"]] = obj
        return obj

    def get(self, account, kind, rid):
        s = self.store(account)
        return s.objs[kind].get(rid) if s else None

    def must(self, account, kind, rid, param="id"):
        o = self.get(account, kind, rid)
        if o is None:
            raise missing(kind, rid, param)
        return o

    def base(self, kind, rid=None):
        return {"id": rid or rand_id(KINDS[kind][0]), "object": KINDS[kind][1], "created": int(self.now()),
                "livemode": self.config["livemode"]}

    def new_object(self, kind, fields, rid=None):
        """A complete object of kind with the P1.10 fields, fields merged over the defaults."""
        o = self.base(kind, rid or fields.get("id"))
        cur = (fields.get("currency") or "usd").lower()
        amount = fields.get("amount", 1000)
        if kind == "payment_intents":
            o.update({"amount": amount, "amount_capturable": 0, "amount_received": 0, "currency": cur,
                      "status": "requires_payment_method", "customer": None, "payment_method": None,
                      "latest_charge": None, "last_payment_error": None, "next_action": None,
                      "cancellation_reason": None, "canceled_at": None, "capture_method": "automatic",
                      "confirmation_method": "automatic", "description": None, "invoice": None, "metadata": {},
                      "payment_method_types": ["card"], "setup_future_usage": None,
                      "client_secret": None})
        elif kind == "charges":
            o.update({"amount": amount, "amount_captured": amount, "amount_refunded": 0, "currency": cur,
                      "status": "succeeded", "paid": True, "captured": True, "refunded": False, "disputed": False,
                      "payment_intent": None, "customer": None, "payment_method": None, "invoice": None,
                      "balance_transaction": rand_id("txn_"), "failure_code": None, "failure_message": None,
                      "outcome": {"network_status": "approved_by_network", "type": "authorized"},
                      "description": None, "metadata": {}, "refunds": None})
        elif kind == "refunds":
            o.update({"amount": amount, "currency": cur, "status": "succeeded", "charge": None,
                      "payment_intent": None, "reason": None, "failure_reason": None,
                      "failure_balance_transaction": None, "balance_transaction": rand_id("txn_"),
                      "next_action": None, "metadata": {}})
        elif kind == "disputes":
            o.update({"amount": amount, "currency": cur, "status": "needs_response", "reason": "general",
                      "charge": None, "payment_intent": None, "balance_transactions": [],
                      "is_charge_refundable": False, "evidence": {}, "metadata": {},
                      "evidence_details": {"due_by": int(self.now()) + 7 * 86400, "has_evidence": False,
                                           "past_due": False, "submission_count": 0}})
        elif kind == "customers":
            o.update({"email": None, "name": None, "description": None, "metadata": {}, "currency": None,
                      "invoice_settings": {"default_payment_method": None, "custom_fields": None, "footer": None}})
        elif kind == "payment_methods":
            o.update({"type": "card", "customer": None, "metadata": {}, "billing_details": {
                "address": None, "email": None, "name": None, "phone": None},
                "card": {"brand": "visa", "display_brand": "visa", "last4": "4242", "exp_month": 12,
                         "exp_year": 2034, "funding": "credit", "country": "US", "fingerprint": rand_id("", 16),
                         "wallet": None}})
        elif kind == "checkout_sessions":
            o.update({"mode": "payment", "status": "open", "payment_status": "unpaid", "amount_subtotal": amount,
                      "amount_total": amount, "currency": cur, "customer": None, "customer_email": None,
                      "customer_creation": "if_required", "customer_details": None, "client_reference_id": None,
                      "payment_intent": None, "setup_intent": None, "subscription": None, "invoice": None,
                      "metadata": {}, "expires_at": int(self.now()) + 86400, "ui_mode": "hosted_page",
                      "success_url": None, "cancel_url": None, "return_url": None, "client_secret": None,
                      "payment_method_types": ["card"], "url": None})
        elif kind == "setup_intents":
            o.update({"status": "requires_payment_method", "usage": "off_session", "customer": None,
                      "payment_method": None, "last_setup_error": None, "latest_attempt": None, "mandate": None,
                      "next_action": None, "cancellation_reason": None, "metadata": {}, "description": None,
                      "payment_method_types": ["card"], "client_secret": None})
        for k, v in fields.items():
            if isinstance(v, dict) and isinstance(o.get(k), dict) and k != "metadata":
                o[k] = {**o[k], **v}
            else:
                o[k] = v
        if isinstance(o.get("currency"), str):
            o["currency"] = o["currency"].lower()
        if kind in ("payment_intents", "setup_intents") and not o.get("client_secret"):
            o["client_secret"] = o["id"] + "_secret_" + rand_id("", 24)
        if kind == "checkout_sessions" and o["ui_mode"] == "hosted_page" and o["status"] == "open" and not o["url"]:
            o["url"] = "https://checkout.stripe.com/c/pay/" + o["id"]  # null once complete or expired
        if kind == "charges" and o.get("refunds") is None:
            o["refunds"] = {"object": "list", "data": [], "has_more": False, "total_count": 0,
                            "url": f"/v1/charges/{o['id']}/refunds"}
        return o

    # events and webhooks (P1.2) ----------------------------------------------------------------
    def emit(self, account, etype, obj, previous=None, request=None):
        ev = {"id": rand_id("evt_"), "object": "event", "api_version": self.config["api_version"],
              "created": int(self.now()), "data": {"object": copy.deepcopy(obj)}, "livemode": self.config["livemode"],
              "pending_webhooks": 0, "request": request or {"id": None, "idempotency_key": None}, "type": etype}
        if previous is not None:
            ev["data"]["previous_attributes"] = copy.deepcopy(previous)
        if account:
            ev["account"] = account
        cfg = self.webhook.config
        if cfg and cfg.get("api_version"):
            ev["api_version"] = cfg["api_version"]
        if cfg and cfg.get("enabled", True):
            ev["pending_webhooks"] = 1
        self.put(account, "events", ev)
        self.webhook.enqueue([ev])
        return ev

    def build_delivery(self, events, cfg, attempt):
        """One event per POST, pretty-printed like Stripe's; Stripe-Signature over "t.body" (P1.1)."""
        body = (json.dumps(events[0], indent=2) + "\n").encode("utf-8")
        t = int(self.now()) + int(cfg.get("timestamp_offset_s") or 0)
        signed = f"{t}.".encode() + body
        parts = [f"t={t}"]
        secret = cfg["secret"] if not cfg.get("bad_signature") else cfg["secret"] + "-wrong"
        parts.append("v1=" + hmac_sha256_hex(secret, signed))
        if cfg.get("extra_secret"):  # a rolled secret: Stripe sends one v1 per active secret (P1.1)
            parts.append("v1=" + hmac_sha256_hex(cfg["extra_secret"], signed))
        parts.append("v0=" + hmac_sha256_hex("v0-" + cfg["secret"], signed))  # ignored by every SDK (P1.1)
        return body, {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-cache",
                      "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                      "Stripe-Signature": ",".join(parts)}

    # state transitions shared by the API and the control API ----------------------------------
    def new_charge(self, account, pi, status, decline=None):
        ch = self.new_object("charges", {
            "amount": pi["amount"], "currency": pi["currency"], "payment_intent": pi["id"], "customer": pi["customer"],
            "payment_method": pi["payment_method"], "invoice": pi.get("invoice"), "metadata": dict(pi["metadata"]),
            "description": pi.get("description"), "status": status, "paid": status == "succeeded",
            "captured": status == "succeeded", "amount_captured": pi["amount"] if status == "succeeded" else 0,
            "balance_transaction": rand_id("txn_") if status == "succeeded" else None})
        if decline:
            ch["failure_code"], ch["failure_message"] = decline[0], decline[2]
            ch["outcome"] = {"network_status": "declined_by_network", "type": "issuer_declined",
                             "reason": decline[1]}
        self.put(account, "charges", ch)
        pi["latest_charge"] = ch["id"]
        return ch

    def pi_succeed(self, account, pi, request=None, amount_received=None):
        if pi["status"] in ("succeeded", "canceled"):
            raise BadRequest(f"payment_intent {pi['id']} is {pi['status']}", 409)
        pi.update(status="succeeded", amount_received=pi["amount"] if amount_received is None else amount_received,
                  last_payment_error=None, next_action=None, amount_capturable=0)
        ch = self.get(account, "charges", pi["latest_charge"]) if pi["latest_charge"] else None
        if ch is None or ch["status"] == "failed":
            ch = self.new_charge(account, pi, "succeeded")
        else:
            ch.update(status="succeeded", paid=True, captured=True, amount_captured=ch["amount"],
                      balance_transaction=ch["balance_transaction"] or rand_id("txn_"))
        self.emit(account, "charge.succeeded", ch, request=request)
        self.emit(account, "payment_intent.succeeded", pi, request=request)

    def pi_fail(self, account, pi, outcome="card_declined", request=None, message=None):
        if pi["status"] in ("succeeded", "canceled"):
            raise BadRequest(f"payment_intent {pi['id']} is {pi['status']}", 409)
        d = DECLINES.get(outcome) or DECLINES["card_declined"]
        if message:
            d = (d[0], d[1], message)
        ch = self.get(account, "charges", pi["latest_charge"]) if pi["latest_charge"] else None
        if ch is not None and ch["status"] == "pending":  # a delayed method's charge fails in place
            ch.update(status="failed", paid=False, failure_code=d[0], failure_message=d[2],
                      outcome={"network_status": "declined_by_network", "type": "issuer_declined", "reason": d[1]})
        else:
            ch = self.new_charge(account, pi, "failed", d)
        pi.update(status="requires_payment_method", amount_received=0, next_action=None)
        pi["last_payment_error"] = {"type": "card_error", "code": d[0], "decline_code": d[1], "message": d[2],
                                    "doc_url": DOC + d[0].replace("_", "-"), "charge": ch["id"],
                                    "payment_method": self.pm_view(account, pi["payment_method"])}
        self.emit(account, "charge.failed", ch, request=request)
        self.emit(account, "payment_intent.payment_failed", pi, request=request)
        return ch, d

    # Checkout Sessions ------------------------------------------------------------------------
    def cs_complete(self, account, cs, method="card", pmid=None):
        """The customer pays (or saves a card) on the session's page. Since API 2022-08-01 the PaymentIntent is
        created only now, with payment_intent_data; the session's own metadata stays on the session (real
        Stripe copies it nowhere). method "delayed": a bank debit, so the PI is processing and the session
        completes unpaid until async_succeed / async_fail."""
        if cs["status"] != "open":
            raise BadRequest(f"checkout session {cs['id']} is {cs['status']}", 409)
        if cs["mode"] == "setup" and method != "card":
            raise BadRequest("setup mode completes with a card only", 409)
        extra = self.cs_extra.get((account, cs["id"]), {})
        pm = self.cs_payment_method(account, cs, method, pmid)
        if cs["mode"] == "setup":
            si = self.put(account, "setup_intents", self.new_object("setup_intents", {
                "customer": cs["customer"], "payment_method": pm["id"], "status": "succeeded",
                "latest_attempt": rand_id("setatt_"),
                "metadata": dict(extra.get("setup_intent_data", {}).get("metadata", {}))}))
            cs.update(setup_intent=si["id"], payment_status="no_payment_required")
            self.emit(account, "setup_intent.created", si)
            self.emit(account, "setup_intent.succeeded", si)
            if cs["customer"]:
                pm["customer"] = cs["customer"]
                self.emit(account, "payment_method.attached", pm)
        else:
            pid = extra.get("payment_intent_data", {})
            pi = self.put(account, "payment_intents", self.new_object("payment_intents", {
                "amount": cs["amount_total"], "currency": cs["currency"], "customer": cs["customer"],
                "payment_method": pm["id"], "payment_method_types": [pm["type"]],
                "metadata": dict(pid.get("metadata", {})), "description": pid.get("description"),
                "status": "requires_confirmation"}))
            cs["payment_intent"] = pi["id"]
            self.emit(account, "payment_intent.created", pi)
            if method == "card":
                self.pi_succeed(account, pi)
                cs["payment_status"] = "paid"
            else:
                pi["status"] = "processing"
                self.emit(account, "charge.pending", self.new_charge(account, pi, "pending"))
                self.emit(account, "payment_intent.processing", pi)
        cust = self.get(account, "customers", cs["customer"]) if cs["customer"] else None
        cs.update(status="complete", url=None, customer_details={
            "email": (cust or {}).get("email") or cs["customer_email"], "name": (cust or {}).get("name"),
            "address": None, "phone": None, "tax_exempt": "none", "tax_ids": []})
        self.emit(account, "checkout.session.completed", cs)
        return cs

    def cs_payment_method(self, account, cs, method, pmid):
        if method not in ("card", "delayed"):
            raise BadRequest("method is card or delayed")
        if pmid:
            pm = self.get(account, "payment_methods", pmid)
            if pm is None:
                raise BadRequest(f"no payment_method {pmid!r}", 404)
            return pm
        if method == "card":
            return self.put(account, "payment_methods", self.new_object("payment_methods", {}))
        kind = {"gbp": "bacs_debit", "eur": "sepa_debit"}.get(cs["currency"], "us_bank_account")
        return self.put(account, "payment_methods", self.new_object("payment_methods", {
            "type": kind, "card": None, kind: {"last4": "2345", "fingerprint": rand_id("", 16)}}))

    def cs_async(self, account, cs, succeed, outcome="insufficient_funds"):
        """The delayed payment of a completed, unpaid session settles or fails."""
        pi = self.get(account, "payment_intents", cs["payment_intent"] or "")
        if cs["status"] != "complete" or cs["payment_status"] != "unpaid" or pi is None or pi["status"] != "processing":
            raise BadRequest(f"checkout session {cs['id']} has no delayed payment in progress", 409)
        if succeed:
            self.pi_succeed(account, pi)
            cs["payment_status"] = "paid"
            self.emit(account, "checkout.session.async_payment_succeeded", cs)
        else:
            self.pi_fail(account, pi, outcome)
            self.emit(account, "checkout.session.async_payment_failed", cs)
        return cs

    def cs_expire(self, account, cs, request=None):
        if cs["status"] != "open":
            raise bad(f"Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session "
                      f"has a status of \"{cs['status']}\".", None)  # [unverified] wording
        cs.update(status="expired", url=None)
        self.emit(account, "checkout.session.expired", cs, request=request)
        return cs

    def pm_view(self, account, pmid):
        if not pmid:
            return None
        return copy.deepcopy(self.get(account, "payment_methods", pmid)) or {"id": pmid, "object": "payment_method"}

    def refund(self, account, ch, amount=None, reason=None, metadata=None, request=None, pi_param=False):
        """POST /v1/refunds and its control twin. Validates like Stripe (P1.8 codes)."""
        param = "payment_intent" if pi_param else "charge"
        if ch["status"] != "succeeded":
            raise bad(f"Charge {ch['id']} has not succeeded; a refund is impossible.", param)
        left = ch["amount"] - ch["amount_refunded"]
        if ch["refunded"] or left <= 0:
            raise bad(f"Charge {ch['id']} has already been refunded.", param, "charge_already_refunded")
        if ch["disputed"]:
            dps = [d for d in self.store(account).objs["disputes"].values() if d["charge"] == ch["id"]]
            if dps and not dps[-1]["is_charge_refundable"]:
                raise bad(f"Charge {ch['id']} has been charged back; cannot issue a refund.", param,
                          "charge_disputed")
        amount = left if amount is None else amount
        if amount < 1:
            raise bad("This value must be greater than or equal to 1.", "amount")
        if amount > left:
            raise bad(f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})", "amount",
                      "amount_too_large")
        re_ = self.new_object("refunds", {"amount": amount, "currency": ch["currency"], "charge": ch["id"],
                                          "payment_intent": ch["payment_intent"], "reason": reason,
                                          "metadata": metadata or {}, "status": self.config["refund_status"]})
        self.put(account, "refunds", re_)
        prev = {"amount_refunded": ch["amount_refunded"], "refunded": ch["refunded"],
                "refunds": copy.deepcopy(ch["refunds"])}
        ch["amount_refunded"] += amount
        ch["refunded"] = ch["amount_refunded"] >= ch["amount"]  # true only when fully refunded (P1.10)
        ch["refunds"]["data"].insert(0, copy.deepcopy(re_))
        ch["refunds"]["total_count"] += 1
        self.emit(account, "charge.refunded", ch, previous=prev, request=request)  # P1.4
        self.emit(account, "refund.created", re_, request=request)
        return re_

    def sync_refund_in_charge(self, account, re_):
        ch = self.get(account, "charges", re_["charge"])
        if ch:
            ch["refunds"]["data"] = [copy.deepcopy(re_) if r["id"] == re_["id"] else r for r in ch["refunds"]["data"]]
        return ch

    # limits (P1.6) and stats ------------------------------------------------------------------
    def begin(self, account, method, path_key):
        """Counts an authenticated call and decides whether the limits admit it: None or the limit name."""
        now = self.mono()
        self.stats.begin(now, path_key)
        ast = self.acct_stats.setdefault(account or "platform", CallStats())
        ast.begin(now, path_key)
        L = self.config["limits"]
        kind = "read" if method == "GET" else "write"
        w = self.limiter.setdefault((account, kind), Window(1.0))
        over = None
        if L.get(kind) is not None and w.count(now) >= L[kind]:
            over = kind
        elif L.get("concurrent") is not None and self.acct_inflight.get(account, 0) >= L["concurrent"]:
            over = "concurrent"
        if over:
            self.stats.violation(over)
            ast.violation(over)
            if self.config["enforce_limits"]:
                self.stats.sent_429_limit += 1
                ast.sent_429_limit += 1
                return over
        w.add(now)
        self.acct_inflight[account] = self.acct_inflight.get(account, 0) + 1
        return None

    def end(self, account, status, admitted, generation):
        if generation != self.generation:  # the stats were reset while this call ran
            return
        self.stats.end(status)
        self.acct_stats[account or "platform"].end(status)
        if admitted:
            self.acct_inflight[account] -= 1

    def stats_json(self):
        return {"violations": self.stats.violations, "limits": self.config["limits"],
                "enforce_limits": self.config["enforce_limits"], "calls": self.stats.as_json(),
                "accounts": {k: v.as_json() for k, v in self.acct_stats.items()}, "unauthorised": dict(self.unauth),
                "idempotency": dict(self.idem_stats), "faults_pending": self.faults.view(),
                "webhooks": self.webhook_stats()}

    def webhook_stats(self):
        log = self.webhook.log
        ok = sum(1 for d in log if d["status"] and 200 <= d["status"] < 300)
        return {"attempts": len(log), "succeeded": ok, "failed": len(log) - ok, **self.webhook.view()}

    # configuration and load documents ---------------------------------------------------------
    def update_config(self, changes):
        if not isinstance(changes, dict):
            raise BadRequest("the configuration is a JSON object")
        cfg = copy.deepcopy(self.config)
        for k, v in changes.items():
            if k not in cfg:
                raise BadRequest(f"unknown setting {k!r}")
            if k == "limits":
                if not isinstance(v, dict) or set(v) - {"read", "write", "concurrent"}:
                    raise BadRequest("limits takes read, write and concurrent")
                cfg["limits"].update(v)
            elif k == "api_keys":
                if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                    raise BadRequest("api_keys is a list of strings")
                cfg[k] = v
            elif k == "refund_status":
                if v not in ("succeeded", "pending"):
                    raise BadRequest("refund_status is succeeded or pending")
                cfg[k] = v
            elif type(v) is not type(cfg[k]) and not (isinstance(cfg[k], float) and isinstance(v, int)):
                raise BadRequest(f"{k} must be a {type(cfg[k]).__name__}")
            else:
                cfg[k] = v
        self.config = cfg
        return cfg

    def seed_object(self, kind, spec, account=None, rid=None):
        if kind not in KINDS or kind == "events":
            raise BadRequest(f"unknown kind {kind!r} ({', '.join(k for k in KINDS if k != 'events')})", 404)
        if not isinstance(spec, dict):
            raise BadRequest("an object is a JSON object")
        spec = dict(spec)
        account = spec.pop("_account", account)
        outcome = spec.pop("mock_outcome", None)
        if rid and spec.get("id") not in (None, rid):
            raise BadRequest("the body id differs from the path id")
        if rid:
            spec["id"] = rid
        if spec.get("id") and not spec["id"].startswith(KINDS[kind][0]):
            raise BadRequest(f"{kind} ids start with {KINDS[kind][0]}")
        o = self.new_object(kind, spec)
        if outcome is not None:
            if kind != "payment_methods" or outcome not in OUTCOMES:
                raise BadRequest(f"mock_outcome is for payment_methods: one of {', '.join(OUTCOMES)}")
            self.outcomes[(account, o["id"])] = outcome
        existed = self.get(account, kind, o["id"]) is not None
        self.put(account, kind, o)
        return o, not existed

    def load(self, doc):
        if isinstance(doc, str):
            doc = json.loads(doc)
        if doc.get("reset"):
            self.reset()
        if "config" in doc:
            self.update_config(doc["config"])
        for a in doc.get("accounts", []):
            self.store(a, create=True)
        n = 0
        for kind, objs in (doc.get("objects") or {}).items():
            for o in objs:
                self.seed_object(kind, o)
                n += 1
        if "webhook" in doc:
            self.webhook.configure(doc["webhook"], WEBHOOK_EXTRA)
        if "faults" in doc:
            self.faults.set(doc["faults"])
        return {"objects": n, "accounts": [a for a in self.accounts if a]}

    def demo_document(self):
        return {"config": {"api_keys": ["sk_test_demo", "sk_test_mock"]}, "objects": {
            "customers": [{"id": "cus_demo", "email": "demo@example.com", "name": "Demo Customer",
                           "invoice_settings": {"default_payment_method": "pm_demo_visa"}}],
            "payment_methods": [{"id": "pm_demo_visa", "customer": "cus_demo", "mock_outcome": "succeed"},
                                {"id": "pm_demo_declined", "customer": "cus_demo", "mock_outcome": "card_declined",
                                 "card": {"last4": "0002"}}],
            "payment_intents": [{"id": "pi_demo_succeeded", "amount": 2500, "currency": "gbp", "customer": "cus_demo",
                                 "payment_method": "pm_demo_visa", "status": "succeeded", "amount_received": 2500,
                                 "metadata": {"invoice_number": "INV-0001"}}]}}


WEBHOOK_EXTRA = ("api_version", "bad_signature", "extra_secret", "timestamp_offset_s")
STATE = State()


def match_created(created, f):
    if isinstance(f, dict):
        for op, v in f.items():
            v = to_int(v, f"created[{op}]")
            if op == "gt" and not created > v or op == "gte" and not created >= v:
                return False
            if op == "lt" and not created < v or op == "lte" and not created <= v:
                return False
            if op not in ("gt", "gte", "lt", "lte"):
                raise bad(f"Received unknown parameter: created[{op}]", f"created[{op}]", "parameter_unknown")
        return True
    return created == to_int(f, "created")


INDEXED_HASH = re.compile(r"^(\w+)\[(\d+)\]\[(.+)$")


def parse_stripe_form(text):
    """parse_form, plus lists of hashes such as line_items[0][price_data][currency]=gbp (parse_form keeps lists
    to scalars, enough for expand[]): each index's keys are parsed as a form of their own."""
    flat, lists = [], {}
    for k, v in parse_qsl(text, keep_blank_values=True):
        m = INDEXED_HASH.match(k)
        if m:
            lists.setdefault(m[1], {}).setdefault(int(m[2]), []).append((m[3].replace("]", "", 1), v))
        else:
            flat.append((k, v))
    out = parse_form(urlencode(flat))
    for name, items in lists.items():
        if name in out:
            raise ValueError(f"parameter {name!r} mixes a list and a hash")
        out[name] = [parse_form(urlencode(items[i])) for i in sorted(items)]
    return out


def type_match(pattern, t):
    if "*" in pattern:
        return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), t) is not None
    return pattern == t


LIST_FILTERS = {  # kind -> equality filters besides created/limit/cursors/expand (P1.9)
    "payment_intents": {"customer"},
    "charges": {"customer", "payment_intent"},
    "refunds": {"charge", "payment_intent"},
    "disputes": {"charge", "payment_intent"},
    "events": {"type", "types", "delivery_success"},
    "customers": {"email"},
    "checkout_sessions": {"customer", "payment_intent", "status"},
}
EXPANDABLE = {"latest_charge": "charges", "payment_intent": "payment_intents", "charge": "charges",
              "customer": "customers", "payment_method": "payment_methods", "setup_intent": "setup_intents"}


class Handler(BaseHandler):
    server_version = "nginx"  # api.stripe.com answers with Server: nginx
    mock_name = NAME

    # API ---------------------------------------------------------------------------------------
    def api(self, method, path, query, body):
        st = STATE
        req_id = rand_id("req_", 14)
        hdrs = {"Request-Id": req_id, "Stripe-Version": st.config["api_version"],
                "Access-Control-Allow-Origin": "*"}
        account = self.headers.get("Stripe-Account") or None
        entry = {"t_ms": int(st.now() * 1000), "method": method, "path": path, "query": query, "account": account,
                 "request_id": req_id, "idempotency_key": self.headers.get("Idempotency-Key"),
                 "stripe_version": self.headers.get("Stripe-Version"), "status": None, "replayed": False,
                 "fault": None, "limit": None}
        admitted = counted = False
        status = 500
        try:
            with st.lock:
                st.log.append(entry)
                generation = st.generation
                key = self.api_key()
                if key is None:
                    st.unauth["401"] += 1
                    raise self.auth_error()
                ver = self.headers.get("Stripe-Version")
                if ver is not None:
                    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?", ver.strip()):
                        raise bad(f"Invalid Stripe API version: {ver}", None, "invalid_api_version")  # [unverified]
                    hdrs["Stripe-Version"] = ver.strip()
                if account is not None and account not in st.accounts:
                    st.unauth["403"] += 1
                    raise StripeError(403, "invalid_request_error",  # [unverified] exact status/wording
                                      f"The provided key '{key[:8]}****{key[-4:]}' does not have access to account "
                                      f"'{account}' (or that account does not exist). Application access may have "
                                      "been revoked.", "account_invalid")
                segs = path.split("/")
                fixed = 4 if path.startswith("/v1/checkout/") else 3  # /v1/checkout/sessions is one resource
                path_key = method + " " + "/".join("ID" if i >= fixed else s for i, s in enumerate(segs))
                counted = True
                limit = st.begin(account, method, path_key)
                if limit:
                    entry["limit"] = limit
                    raise StripeError(429, "invalid_request_error",  # P1.6: no Retry-After
                                      "Request rate limit exceeded. Learn more about rate limits here "
                                      "https://stripe.com/docs/rate-limits.", "rate_limit")
                admitted = True
                fault = st.faults.take(method, path, account)
            delay = 0.0
            if fault:
                entry["fault"] = fault["mode"]
                delay = fault["delay_ms"] / 1000.0
                if fault["mode"] not in ("slow", "drop"):
                    time.sleep(delay)
                    self.raise_fault(fault, st)
            status, obj, extra = self.handle_write(method, path, query, body, account, req_id, entry, delay)
            hdrs.update(extra)
            if fault and fault["mode"] == "drop":
                status = "drop"
                return self.drop()
            return self.reply(status, self.render(obj), headers=hdrs)
        except StripeError as e:
            status = e.status
            hdrs.update(e.headers)
            if status == 401:
                hdrs["WWW-Authenticate"] = 'Basic realm="Stripe"'
            return self.reply(status, self.render(e.body), headers=hdrs)
        finally:
            with st.lock:
                entry["status"] = status
                if counted:
                    st.end(account, status, admitted, generation)

    def render(self, obj):
        return json.dumps(obj, indent=2) + "\n" if STATE.config["pretty"] else jdump(obj) + "\n"

    def api_key(self):
        """The secret key from Bearer or Basic (key as user, P1.5), if it is one the mock accepts."""
        h = self.headers.get("Authorization") or ""
        key = None
        if h[:7].lower() == "bearer ":
            key = h[7:].strip()
        elif h[:6].lower() == "basic ":
            try:
                key = base64.b64decode(h[6:].strip(), validate=True).decode("utf-8").split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        self._given_key = key
        return key if key and key in STATE.config["api_keys"] else None

    def auth_error(self):
        key = self._given_key
        if not key:
            return StripeError(401, "invalid_request_error",
                               "You did not provide an API key. You need to provide your API key in the Authorization "
                               "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                               "https://stripe.com/docs/api#authentication for details, or we can help at "
                               "https://support.stripe.com/.")
        shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else key
        return StripeError(401, "invalid_request_error", f"Invalid API Key provided: {shown}", "api_key_invalid")

    def raise_fault(self, f, st):
        mode = f["mode"]
        h = {"Retry-After": str(f["retry_after"])} if f["retry_after"] is not None else {}
        with st.lock:
            if mode == "429":
                st.stats.sent_429_fault += 1
        if mode == "429":
            code = f["code"] or "rate_limit"
            msg = ("This object cannot be accessed right now because another API request or Stripe process is "
                   "currently accessing it. If you see this error intermittently, retry the request."
                   if code == "lock_timeout" else
                   "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.")
            raise StripeError(429, "invalid_request_error", msg, code, headers=h)
        if mode == "409":
            raise StripeError(409, "idempotency_error", "There is currently another in-progress request using this "
                              "Stripe token (probably the same idempotent key). Please try again later.",
                              f["code"] or "idempotency_key_in_use", headers=h)
        if mode in ("500", "502", "503", "504"):
            h["Stripe-Should-Retry"] = "true"
            raise StripeError(int(mode), "api_error", "An unknown error occurred", headers=h)

    # POST with Idempotency-Key (P1.7) -----------------------------------------------------------
    def handle_write(self, method, path, query, body, account, req_id, entry, delay=0.0):
        """Runs the call; a slow/drop fault's delay is spent during execution, after an idempotency key
        has been marked in flight, so a concurrent twin sees idempotency_key_in_use."""
        st = STATE
        key = (self.headers.get("Idempotency-Key") or "").strip() or None
        if method == "GET" or key is None or method not in ("POST", "DELETE"):
            time.sleep(delay)
        if method == "GET":
            with st.lock:
                return (*self.route(method, path, self.params(method, query, body), account, None), {})
        params = self.params(method, query, body)
        if key is None or method not in ("POST", "DELETE"):
            with st.lock:
                return (*self.route(method, path, params, account, {"id": req_id, "idempotency_key": None}), {})
        if len(key) > 255:
            raise bad("Idempotency keys are limited to 255 characters.", None, "idempotency_key_invalid")
        fp = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        with st.lock:
            k = (account, key)
            e = st.idem.get(k)
            if e and st.now() - e["t"] >= st.config["idempotency_ttl"]:
                st.idem_stats["expired"] += 1
                del st.idem[k]
                e = None
            if e:
                if e["in_flight"]:
                    st.idem_stats["in_use"] += 1
                    raise StripeError(409, "idempotency_error", "There is currently another in-progress request "
                                      "using this Stripe token (probably the same idempotent key). Please try again "
                                      "later.", "idempotency_key_in_use")
                endpoint = f"{method} {path}"
                if e["endpoint"] != endpoint:
                    st.idem_stats["mismatch"] += 1
                    raise StripeError(400, "idempotency_error", "Keys for idempotent requests can only be used for "
                                      f"the same endpoint they were first used for ('{endpoint}' vs "
                                      f"'{e['endpoint']}'). Try using a key other than '{key}' if you meant to "
                                      "execute a different request.")
                if e["fp"] != fp:
                    st.idem_stats["mismatch"] += 1
                    raise StripeError(400, "idempotency_error", "Keys for idempotent requests can only be used with "
                                      "the same parameters they were first used with. Try using a key other than "
                                      f"'{key}' if you meant to execute a different request.")
                st.idem_stats["replayed"] += 1
                entry["replayed"] = True
                h = {"Idempotent-Replayed": "true", "Original-Request": e["request_id"], "Idempotency-Key": key}
                if e["status"] >= 400:
                    err = StripeError(e["status"], "api_error", "", headers=h)
                    err.body = copy.deepcopy(e["body"])
                    raise err
                return e["status"], e["body"], h
            e = st.idem[k] = {"in_flight": True, "endpoint": f"{method} {path}", "fp": fp, "t": st.now(),
                              "request_id": req_id}
        time.sleep(delay)
        try:
            with st.lock:
                status, obj = self.route(method, path, params, account, {"id": req_id, "idempotency_key": key})
            saved = (status, obj)
        except StripeError as err:
            saved = (err.status, err.body) if err.saved else None
            raise
        finally:
            with st.lock:
                if saved is None:
                    st.idem.pop(k, None)  # a validation failure is not saved (P1.7)
                else:
                    e.update(in_flight=False, status=saved[0], body=copy.deepcopy(saved[1]))
                    st.idem_stats["saved"] += 1
        return status, obj, {"Idempotency-Key": key}

    def params(self, method, query, body):
        try:
            if method == "GET" or not body:
                return parse_stripe_form(query) if query else {}
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "application/json":
                raise bad("Invalid request: v1 API requests must be form-encoded "
                          "(Content-Type: application/x-www-form-urlencoded).")
            return parse_stripe_form(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise bad(f"Invalid request: {e}") from None

    # routes --------------------------------------------------------------------------------------
    def route(self, method, path, params, account, request):
        st = STATE
        segs = [s for s in path.split("/") if s]
        if segs[:3] == ["v1", "checkout", "sessions"]:
            segs = ["v1", "checkout_sessions"] + segs[3:]
        elif len(segs) >= 2 and segs[1] == "checkout_sessions":
            segs = []  # only /v1/checkout/sessions is the real path
        if len(segs) >= 2 and segs[0] == "v1" and segs[1] in KINDS:
            kind = segs[1]
            if len(segs) == 2 and method == "GET" and kind in LIST_FILTERS:
                return 200, self.list(kind, params, account)
            if len(segs) == 3 and method == "GET":
                check_params(params, {"expand"})
                return 200, self.expand(st.must(account, kind, segs[2]), params.get("expand"), account)
            if len(segs) == 2 and method == "POST" and kind == "payment_intents":
                return self.create_payment_intent(params, account, request)
            if len(segs) == 2 and method == "POST" and kind == "refunds":
                return self.create_refund(params, account, request)
            if len(segs) == 2 and method == "POST" and kind == "customers":
                return self.create_customer(params, account, request)
            if len(segs) == 2 and method == "POST" and kind == "setup_intents":
                return self.create_setup_intent(params, account, request)
            if len(segs) == 4 and method == "POST" and kind == "payment_methods" and segs[3] == "detach":
                return self.detach_payment_method(segs[2], params, account, request)
            if kind == "checkout_sessions":
                return self.route_checkout(method, segs[2:], params, account, request)
        raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}). Please see "
                          "https://stripe.com/docs or we can help at https://support.stripe.com/.")

    def expand(self, obj, exp, account, prefix=""):
        obj = copy.deepcopy(obj)
        for e in exp or []:
            if prefix and not e.startswith(prefix):
                continue
            f = e[len(prefix):]
            if f == "line_items" and obj.get("object") == "checkout.session":
                obj[f] = self.line_items(obj, {}, account)
            elif f in EXPANDABLE and isinstance(obj.get(f), str):
                o = STATE.get(account, EXPANDABLE[f], obj[f])
                if o:
                    obj[f] = copy.deepcopy(o)
            elif f not in EXPANDABLE:
                raise bad(f"This property cannot be expanded ({f}).", "expand")
        return obj

    def list(self, kind, params, account):
        """P1.9: newest first; limit 1..100 (default 10); starting_after / ending_before; created ranges."""
        st = STATE
        check_params(params, {"limit", "starting_after", "ending_before", "created", "expand"} | LIST_FILTERS[kind])
        limit = to_int(params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise bad("This value must be between 1 and 100 (inclusive).", "limit")  # [unverified] wording
        sa, eb = params.get("starting_after"), params.get("ending_before")
        if sa and eb:
            raise bad("You may only specify one of these parameters: ending_before, starting_after.", "ending_before")
        s = st.store(account) or Store()
        items = sorted(s.objs[kind].values(), key=lambda o: (o["created"], s.seq[o["id"]]), reverse=True)

        def keep(o):
            if "created" in params and not match_created(o["created"], params["created"]):
                return False
            for f in LIST_FILTERS[kind] - {"type", "types", "delivery_success"}:
                if f in params and o.get(f) != params[f]:
                    return False
            if kind == "events":
                if "type" in params and not type_match(params["type"], o["type"]):
                    return False
                if "types" in params:
                    ts = params["types"] if isinstance(params["types"], list) else [params["types"]]
                    if len(ts) > 20:
                        raise bad("You may pass up to 20 types.", "types")
                    if not any(type_match(t, o["type"]) for t in ts):
                        return False
            return True

        items = [o for o in items if keep(o)]
        ids = [o["id"] for o in items]
        if sa or eb:
            cur = sa or eb
            if st.get(account, kind, cur) is None:
                raise missing(kind, cur, "starting_after" if sa else "ending_before")
            if cur not in ids:  # filtered out: place it by its own position
                ref = st.get(account, kind, cur)
                pos = sum(1 for o in items if (o["created"], s.seq[o["id"]]) > (ref["created"], s.seq[cur]))
                i = pos - 1 if sa else pos
            else:
                i = ids.index(cur)
            if sa:
                page = items[i + 1:i + 1 + limit]
                has_more = len(items) > i + 1 + limit
            else:
                start = max(0, i - limit)
                page = items[start:i]
                has_more = start > 0
        else:
            page = items[:limit]
            has_more = len(items) > limit
        exp = params.get("expand") or []
        data = [self.expand(o, exp, account, "data.") for o in page]
        url = "/v1/checkout/sessions" if kind == "checkout_sessions" else f"/v1/{kind}"
        return {"object": "list", "data": data, "has_more": has_more, "url": url}

    def create_payment_intent(self, p, account, request):
        """P1.11: create, and with confirm=true confirm at once (off_session with a saved payment method)."""
        st = STATE
        check_params(p, {"amount", "currency", "customer", "payment_method", "confirm", "off_session", "metadata",
                         "description", "error_on_requires_action", "setup_future_usage", "capture_method",
                         "payment_method_types", "automatic_payment_methods", "return_url", "mandate",
                         "receipt_email", "statement_descriptor", "expand"})
        if "amount" not in p:
            raise bad("Missing required param: amount.", "amount", "parameter_missing")
        amount = to_int(p["amount"], "amount")
        cur = check_currency(p.get("currency"))
        check_amount(amount, cur)
        confirm = to_bool(p.get("confirm", "false"), "confirm")
        off = p.get("off_session")
        off = to_bool(off, "off_session") if off not in (None, "") else False
        eora = to_bool(p.get("error_on_requires_action", "false"), "error_on_requires_action")
        for name in ("off_session", "error_on_requires_action", "return_url", "mandate"):
            if name in p and not confirm:
                raise bad(f"You can only pass `{name}` when `confirm` is true.", name)  # [unverified] wording
        cust = p.get("customer") or None
        if cust and st.get(account, "customers", cust) is None:
            raise bad(f"No such customer: '{cust}'", "customer", "resource_missing")
        pmid = p.get("payment_method") or None
        outcome = "succeed"
        if pmid:
            pm = st.get(account, "payment_methods", pmid)
            if pm is None and pmid in MAGIC_PMS:
                pm = st.put(account, "payment_methods", st.new_object("payment_methods", {"id": pmid}))
                st.outcomes[(account, pmid)] = MAGIC_PMS[pmid]
            if pm is None:
                raise bad(f"No such PaymentMethod: '{pmid}'", "payment_method", "resource_missing")
            if pm["customer"] and pm["customer"] != cust:  # P1.11: a customer's PM needs that customer
                raise bad(f"The provided PaymentMethod {pmid} belongs to another Customer; pass "
                          f"customer={pm['customer']} to use it.", "payment_method")
            if pm["customer"] is None and cust and pmid not in MAGIC_PMS:
                raise bad(f"The provided PaymentMethod {pmid} is not attached to Customer {cust}.", "payment_method")
            outcome = st.outcomes.get((account, pmid), "succeed")
        if confirm and not pmid:
            raise bad("You cannot confirm this PaymentIntent because it's missing a payment method. To confirm the "
                      "PaymentIntent with a customer, you must provide payment_method.", "payment_method",
                      "payment_intent_unexpected_state")
        sfu = p.get("setup_future_usage")
        if sfu not in (None, "", "on_session", "off_session"):
            raise bad(f"Invalid setup_future_usage: must be one of on_session or off_session", "setup_future_usage")
        pi = st.new_object("payment_intents", {
            "amount": amount, "currency": cur, "customer": cust, "payment_method": pmid,
            "metadata": check_metadata(p.get("metadata")), "description": p.get("description") or None,
            "setup_future_usage": sfu or None, "capture_method": p.get("capture_method") or "automatic",
            "status": "requires_confirmation" if pmid else "requires_payment_method"})
        st.put(account, "payment_intents", pi)
        st.emit(account, "payment_intent.created", pi, request=request)
        if not confirm:
            return 200, self.expand(pi, p.get("expand"), account)
        if outcome == "authentication_required" and not off and not eora:
            pi.update(status="requires_action", next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}})
            st.emit(account, "payment_intent.requires_action", pi, request=request)
            return 200, self.expand(pi, p.get("expand"), account)
        if outcome == "processing":
            pi["status"] = "processing"
            ch = st.new_charge(account, pi, "pending")
            st.emit(account, "charge.pending", ch, request=request)
            st.emit(account, "payment_intent.processing", pi, request=request)
            return 200, self.expand(pi, p.get("expand"), account)
        if outcome == "succeed":
            st.pi_succeed(account, pi, request)
            return 200, self.expand(pi, p.get("expand"), account)
        ch, d = st.pi_fail(account, pi, outcome, request)
        # P1.11: a card_error (402, P1.8) whose body carries the PaymentIntent; execution began, so it is saved
        raise StripeError(402, "card_error", d[2], d[0], saved=True, decline_code=d[1], charge=ch["id"],
                          payment_intent=copy.deepcopy(pi), payment_method=st.pm_view(account, pmid),
                          request_log_url=f"https://dashboard.stripe.com/test/logs/{request['id']}")

    def route_checkout(self, method, rest, params, account, request):
        """/v1/checkout/sessions beyond list and retrieve: create, expire, line_items."""
        st = STATE
        if not rest and method == "POST":
            return self.create_checkout_session(params, account, request)
        if len(rest) == 2 and rest[1] == "expire" and method == "POST":
            check_params(params, {"expand"})
            cs = st.cs_expire(account, st.must(account, "checkout_sessions", rest[0], "session"), request)
            return 200, self.expand(cs, params.get("expand"), account)
        if len(rest) == 2 and rest[1] == "line_items" and method == "GET":
            cs = st.must(account, "checkout_sessions", rest[0], "session")
            return 200, self.line_items(cs, params, account)
        raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: /v1/checkout/sessions/"
                          f"{'/'.join(rest)}). Please see https://stripe.com/docs or we can help at "
                          "https://support.stripe.com/.")

    def line_items(self, cs, params, account):
        """GET /v1/checkout/sessions/{id}/line_items, and expand[]=line_items: a list object (one page)."""
        check_params(params, {"limit", "starting_after", "ending_before", "expand"})
        items = STATE.cs_extra.get((account, cs["id"]), {}).get("line_items", [])
        return {"object": "list", "data": copy.deepcopy(items), "has_more": False,
                "url": f"/v1/checkout/sessions/{cs['id']}/line_items"}

    def create_checkout_session(self, p, account, request):
        """POST /v1/checkout/sessions, modes payment and setup. No event: Stripe has no checkout.session.created.
        The PaymentIntent / SetupIntent is created when the session completes (API 2022-08-01)."""
        st = STATE
        check_params(p, {"mode", "line_items", "currency", "customer", "customer_email", "customer_creation",
                         "client_reference_id", "metadata", "payment_intent_data", "setup_intent_data", "success_url",
                         "cancel_url", "return_url", "ui_mode", "payment_method_types", "expires_at", "expand",
                         "locale", "submit_type", "billing_address_collection", "allow_promotion_codes"})
        mode = p.get("mode") or None
        if mode is None:
            raise bad("Missing required param: mode.", "mode", "parameter_missing")
        if mode not in ("payment", "setup", "subscription"):
            raise bad("Invalid mode: must be one of payment, setup, or subscription", "mode")
        if mode == "subscription":
            raise bad("The mock does not implement subscription mode.", "mode")
        fields = {"mode": mode, **self.cs_ui(p), **self.cs_customer(p, account), "expires_at": self.cs_expiry(p),
                  "metadata": check_metadata(p.get("metadata")), "client_reference_id": p.get("client_reference_id")
                  or None}
        if p.get("payment_method_types") not in (None, ""):
            pmt = p["payment_method_types"]
            fields["payment_method_types"] = pmt if isinstance(pmt, list) else [pmt]
        extra = {"line_items": [], "payment_intent_data": {}, "setup_intent_data": {}}
        cur = check_currency(p["currency"]) if p.get("currency") not in (None, "") else None
        if mode == "payment":
            if p.get("setup_intent_data"):
                raise bad("You can not pass `setup_intent_data` in `payment` mode.", "setup_intent_data")
            extra["line_items"], cur = self.cs_line_items(p.get("line_items"), cur)
            total = sum(li["amount_total"] for li in extra["line_items"])
            check_amount(total, cur, "line_items")
            extra["payment_intent_data"] = self.cs_intent_data(p, "payment_intent_data", {
                "metadata", "description", "setup_future_usage", "capture_method", "statement_descriptor",
                "statement_descriptor_suffix", "receipt_email"})
            fields.update(amount_subtotal=total, amount_total=total, currency=cur, payment_status="unpaid")
        else:
            for name in ("line_items", "payment_intent_data"):
                if p.get(name) not in (None, ""):
                    raise bad(f"You can not pass `{name}` in `setup` mode.", name)  # [unverified] wording
            if cur is None and "payment_method_types" not in fields:
                raise bad("currency is required in setup mode when payment_method_types is not set.", "currency",
                          "parameter_missing")
            extra["setup_intent_data"] = self.cs_intent_data(p, "setup_intent_data", {"metadata", "description"})
            fields.update(amount_subtotal=None, amount_total=None, currency=cur, payment_status="no_payment_required")
        cs = st.put(account, "checkout_sessions", st.new_object("checkout_sessions", fields))
        if cs["ui_mode"] != "hosted_page":
            cs["client_secret"] = cs["id"] + "_secret_" + rand_id("", 24)
        st.cs_extra[(account, cs["id"])] = extra
        return 200, self.expand(cs, p.get("expand"), account)

    @staticmethod
    def cs_ui(p):
        """ui_mode (the names of API 2026-03-25.dahlia) and its URLs: a hosted page needs success_url
        ([unverified] that current versions still require it), embedded forms take return_url instead."""
        ui = p.get("ui_mode") or "hosted_page"
        if ui not in ("hosted_page", "embedded_page", "elements"):
            raise bad("Invalid ui_mode: must be one of hosted_page, embedded_page, or elements", "ui_mode")
        urls = {k: p.get(k) or None for k in ("success_url", "cancel_url", "return_url")}
        if ui == "hosted_page":
            if not urls["success_url"]:
                raise bad("Missing required param: success_url.", "success_url", "parameter_missing")
            if urls["return_url"]:
                raise bad("You can only pass `return_url` when `ui_mode` is embedded_page or elements.", "return_url")
        else:
            for k in ("success_url", "cancel_url"):
                if urls[k]:
                    raise bad(f"You can not pass `{k}` when `ui_mode` is {ui}.", k)  # [unverified] wording
        return {"ui_mode": ui, **urls}

    @staticmethod
    def cs_customer(p, account):
        cust, email = p.get("customer") or None, p.get("customer_email") or None
        if cust and email:
            raise bad("You may only specify one of these parameters: customer, customer_email.", "customer_email")
        if cust and STATE.get(account, "customers", cust) is None:
            raise bad(f"No such customer: '{cust}'", "customer", "resource_missing")
        creation = p.get("customer_creation") or "if_required"
        if creation not in ("if_required", "always"):
            raise bad("Invalid customer_creation: must be one of if_required or always", "customer_creation")
        return {"customer": cust, "customer_email": email, "customer_creation": creation}

    @staticmethod
    def cs_expiry(p):
        now = int(STATE.now())
        if p.get("expires_at") in (None, ""):
            return now + 86400  # 24 h by default
        t = to_int(p["expires_at"], "expires_at")
        if not now + 1800 <= t <= now + 86400:
            raise bad("The `expires_at` timestamp must be between 30 minutes and 24 hours from now.", "expires_at")
        return t

    @staticmethod
    def cs_intent_data(p, name, allowed):
        d = p.get(name)
        if d in (None, ""):
            return {}
        if not isinstance(d, dict):
            raise bad("Invalid hash", name)
        for k in d:
            if k not in allowed:
                raise bad(f"Received unknown parameter: {name}[{k}]", f"{name}[{k}]", "parameter_unknown")
        return {**d, "metadata": check_metadata(d.get("metadata"))}

    @staticmethod
    def cs_line_items(raw, cur):
        """line_items[N][price_data][currency|unit_amount|product_data][name]] and [quantity]: the mock has no
        Price objects, so line_items[N][price] gets resource_missing. One currency for all (and for currency)."""
        if not raw:
            raise bad("`line_items` is required in `payment` mode.", "line_items", "parameter_missing")  # [unverified]
        if not isinstance(raw, list) or not all(isinstance(li, dict) for li in raw):
            raise bad("Invalid array", "line_items")
        out = []
        for n, li in enumerate(raw):
            param = f"line_items[{n}]"
            check_params({f"{param}[{k}]": v for k, v in li.items()},
                         {f"{param}[{k}]" for k in ("price", "price_data", "quantity")})
            if li.get("price"):
                raise bad(f"No such price: '{li['price']}'", f"{param}[price]", "resource_missing")
            pd = li.get("price_data")
            if not isinstance(pd, dict):
                raise bad(f"Missing required param: {param}[price_data].", f"{param}[price_data]", "parameter_missing")
            c = check_currency(pd.get("currency"), f"{param}[price_data][currency]")
            if cur is not None and c != cur:
                raise bad("All line items must use the same currency as the Checkout Session.",  # [unverified]
                          f"{param}[price_data][currency]")
            cur = c
            if pd.get("unit_amount") in (None, ""):
                raise bad(f"Missing required param: {param}[price_data][unit_amount].",
                          f"{param}[price_data][unit_amount]", "parameter_missing")
            unit = to_int(pd["unit_amount"], f"{param}[price_data][unit_amount]")
            name = (pd.get("product_data") or {}).get("name") if isinstance(pd.get("product_data"), dict) else None
            if not name and not pd.get("product"):
                raise bad(f"Missing required param: {param}[price_data][product_data].",
                          f"{param}[price_data][product_data]", "parameter_missing")
            if li.get("quantity") in (None, ""):
                raise bad(f"Missing required param: {param}[quantity].", f"{param}[quantity]", "parameter_missing")
            qty = to_int(li["quantity"], f"{param}[quantity]")
            if unit < 0 or qty < 1:
                raise bad("This value must be greater than or equal to 1.", f"{param}[quantity]" if qty < 1 else
                          f"{param}[price_data][unit_amount]")
            out.append({"id": rand_id("li_"), "object": "item", "amount_discount": 0, "amount_subtotal": unit * qty,
                        "amount_tax": 0, "amount_total": unit * qty, "currency": c, "description": name,
                        "quantity": qty, "price": {"id": rand_id("price_"), "object": "price", "currency": c,
                                                   "unit_amount": unit, "product": pd.get("product")
                                                   or rand_id("prod_"), "type": "one_time", "active": False}})
        return out, cur

    def create_refund(self, p, account, request):
        st = STATE
        check_params(p, {"charge", "payment_intent", "amount", "reason", "metadata", "expand", "instructions_email"})
        chid, piid = p.get("charge") or None, p.get("payment_intent") or None
        if not chid and not piid:
            raise bad("One of the following params should be provided for this request: payment_intent or charge.",
                      None, "parameter_missing")
        if chid and piid:
            raise bad("You can only pass one of charge or payment_intent.", "payment_intent")  # [unverified]
        if piid:
            pi = st.get(account, "payment_intents", piid)
            if pi is None:
                raise bad(f"No such payment_intent: '{piid}'", "payment_intent", "resource_missing")
            ch = st.get(account, "charges", pi["latest_charge"]) if pi["latest_charge"] else None
            if pi["status"] != "succeeded" or ch is None:
                raise bad(f"This PaymentIntent ({piid}) does not have a successful charge to refund.",
                          "payment_intent", "charge_not_refundable")  # [unverified] code
        else:
            ch = st.get(account, "charges", chid)
            if ch is None:
                raise bad(f"No such charge: '{chid}'", "charge", "resource_missing")
        reason = p.get("reason") or None
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            raise bad("Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer", "reason")
        amount = to_int(p["amount"], "amount") if p.get("amount") not in (None, "") else None
        re_ = st.refund(account, ch, amount, reason, check_metadata(p.get("metadata")), request, pi_param=bool(piid))
        return 200, re_

    def create_customer(self, p, account, request):
        """POST /v1/customers (P1.10 fields): email, name, description, metadata; emits customer.created."""
        st = STATE
        check_params(p, {"email", "name", "description", "metadata", "phone", "address", "invoice_settings",
                         "payment_method", "expand"})
        email = p.get("email") or None
        if email is not None and (len(email) > 512 or "@" not in email):
            raise bad("Invalid email address: " + email, "email", "email_invalid")
        cus = st.new_object("customers", {"email": email, "name": p.get("name") or None,
                                          "description": p.get("description") or None,
                                          "metadata": check_metadata(p.get("metadata"))})
        st.put(account, "customers", cus)
        st.emit(account, "customer.created", cus, request=request)
        return 200, self.expand(cus, p.get("expand"), account)

    def create_setup_intent(self, p, account, request):
        """POST /v1/setup_intents: customer (must exist), usage (on_session|off_session, default off_session),
        payment_method_types, metadata; status requires_payment_method, with its client_secret; emits
        setup_intent.created. The control API's POST /_mock/setup_intents/{id}/succeed confirms it."""
        st = STATE
        check_params(p, {"customer", "usage", "payment_method_types", "metadata", "description", "payment_method",
                         "confirm", "automatic_payment_methods", "expand"})
        cust = p.get("customer") or None
        if cust and st.get(account, "customers", cust) is None:
            raise bad(f"No such customer: '{cust}'", "customer", "resource_missing")
        usage = p.get("usage") or "off_session"
        if usage not in ("on_session", "off_session"):
            raise bad("Invalid usage: must be one of on_session or off_session", "usage")
        types = p.get("payment_method_types") or ["card"]
        if isinstance(types, str):
            types = [types]
        if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
            raise bad("Invalid array", "payment_method_types")
        si = st.new_object("setup_intents", {"customer": cust, "usage": usage, "payment_method_types": types,
                                             "metadata": check_metadata(p.get("metadata")),
                                             "description": p.get("description") or None})
        st.put(account, "setup_intents", si)
        st.emit(account, "setup_intent.created", si, request=request)
        return 200, self.expand(si, p.get("expand"), account)

    def detach_payment_method(self, pmid, p, account, request):
        """POST /v1/payment_methods/{id}/detach: customer becomes null, payment_method.detached is emitted (its
        previous_attributes name the customer); a method attached to none is a 400 (P1.8 envelope)."""
        st = STATE
        check_params(p, {"expand"})
        pm = st.get(account, "payment_methods", pmid)
        if pm is None:
            raise missing("payment_methods", pmid)
        if not pm.get("customer"):
            raise bad("The payment method you provided is not attached to a customer so detachment is impossible.",
                      None, "payment_method_unexpected_state")  # [unverified] the code Stripe gives it
        prev = {"customer": pm["customer"]}
        pm["customer"] = None
        st.emit(account, "payment_method.detached", pm, prev, request=request)
        return 200, self.expand(pm, p.get("expand"), account)

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
            if head == "accounts":
                if method == "PUT" and len(parts) == 2:
                    if not parts[1].startswith("acct_"):
                        raise BadRequest("account ids start with acct_")
                    st.store(parts[1], create=True)
                    return self.reply_json(200, {"id": parts[1]})
                if method == "GET" and len(parts) == 1:
                    return self.reply_json(200, [a for a in st.accounts if a])
                raise BadRequest("PUT /_mock/accounts/{acct_id} or GET /_mock/accounts", 405)
            if head == "clock" and len(parts) == 1:
                if method == "POST":
                    adv = (self.body_json(body, {}) or {}).get("advance", 0)
                    if not isinstance(adv, (int, float)) or adv < 0:
                        raise BadRequest("advance must be a non-negative number of seconds")
                    st.offset += adv
                return self.reply_json(200, {"offset_s": st.offset, "now": int(st.now())})
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
            if head == "idempotency" and method == "GET":
                return self.reply_json(200, [{"account": k[0], "key": k[1], "endpoint": e["endpoint"],
                                              "status": e.get("status"), "age_s": round(st.now() - e["t"], 3),
                                              "in_flight": e["in_flight"]} for k, e in st.idem.items()])
            if (method, head) == ("POST", "load"):
                return self.reply_json(200, st.load(self.body_json(body, {})))
            if head == "webhook":
                return self.control_webhook(method, parts[1:], body)
            if head == "deliveries" and len(parts) == 1:
                if method == "DELETE":
                    st.webhook.log.clear()
                    return self.reply(204)
                return self.reply_json(200, list(st.webhook.log))
            if head == "events" and method == "POST":
                return self.control_event(parts[1:], q, body)
            if head in ("payment_intents", "charges", "refunds", "disputes", "setup_intents", "customers",
                        "checkout_sessions") \
                    and method == "POST" and len(parts) == 3:
                spec = self.body_json(body, {}) or {}
                account = spec.pop("account", None) or q.get("account") or None
                return self.reply_json(200, self.transition(head, parts[1], parts[2], spec, account))
        raise BadRequest(f"no control endpoint {method} /_mock/{'/'.join(parts)}", 404)

    def control_objects(self, method, parts, q, body):
        st = STATE
        account = q.get("account") or None
        if not parts or parts[0] not in KINDS:
            raise BadRequest(f"/_mock/objects/{{{'|'.join(KINDS)}}}[/{{id}}]", 404)
        kind = parts[0]
        s = st.store(account)
        if len(parts) == 1:
            if method == "GET":
                return self.reply_json(200, list(s.objs[kind].values()) if s else [])
            if method == "POST":  # create with a fresh id
                o, _ = st.seed_object(kind, self.body_json(body, {}) or {}, account)
                if q.get("emit"):
                    st.emit(account, q["emit"], o)
                return self.reply_json(201, o)
            raise BadRequest("GET or POST /_mock/objects/{kind}", 405)
        rid = parts[1]
        if method == "PUT":
            o, created = st.seed_object(kind, self.body_json(body, {}) or {}, account, rid)
            if q.get("emit"):  # ?emit=customer.created
                st.emit(account, q["emit"], o)
            return self.reply_json(201 if created else 200, o)
        o = st.get(account, kind, rid)
        if o is None:
            return self.reply_json(404, {"error": "no such object"})
        if method == "GET":
            return self.reply_json(200, o)
        if method == "DELETE":
            del s.objs[kind][rid]
            return self.reply(204)
        raise BadRequest("GET, PUT or DELETE /_mock/objects/{kind}/{id}", 405)

    def control_event(self, parts, q, body):
        """POST /_mock/events {type, kind, id, previous_attributes?, account?}: emit an event of the object's
        current snapshot. POST /_mock/events/{evt}/resend: deliver a stored event again (a duplicate)."""
        st = STATE
        spec = self.body_json(body, {}) or {}
        account = spec.get("account") or q.get("account") or None
        if len(parts) == 2 and parts[1] == "resend":
            ev = st.get(account, "events", parts[0])
            if ev is None:
                raise BadRequest("no such event", 404)
            st.webhook.enqueue([ev])
            return self.reply_json(200, ev)
        if parts:
            raise BadRequest("POST /_mock/events or /_mock/events/{id}/resend", 404)
        kind = spec.get("kind") or OBJECT_KIND.get(str(spec.get("type", "")).split(".")[0])
        if not spec.get("type") or kind not in KINDS:
            raise BadRequest("type (and kind unless the type names it) are required")
        o = st.get(account, kind, spec.get("id", ""))
        if o is None:
            raise BadRequest(f"no {kind} {spec.get('id')!r}", 404)
        return self.reply_json(200, st.emit(account, spec["type"], o, spec.get("previous_attributes")))

    def control_webhook(self, method, parts, body):
        st = STATE
        if not parts:
            if method == "PUT":
                return self.reply_json(200, st.webhook.configure(self.body_json(body, {}) or {}, WEBHOOK_EXTRA))
            if method == "GET":
                return self.reply_json(200, st.webhook.view())
            if method == "DELETE":
                st.webhook.clear()
                return self.reply(204)
        if method == "POST" and parts == ["flush"]:
            spec = self.body_json(body, {}) or {}
            return self.reply_json(200, {"released": st.webhook.flush(spec.get("order", "fifo"), spec.get("seed"))})
        if method == "POST" and parts == ["drain"]:
            spec = self.body_json(body, {}) or {}
            timeout = float(spec.get("timeout_s", 10))
            st.lock.release()  # let deliveries that emit nothing but need no lock finish; re-taken below
            try:
                ok = st.webhook.drain(timeout)
            finally:
                st.lock.acquire()
            return self.reply_json(200 if ok else 504, {"drained": ok, **st.webhook.view()})
        raise BadRequest("PUT/GET/DELETE /_mock/webhook, POST /_mock/webhook/flush|drain", 404)

    def transition(self, kind, rid, action, spec, account):
        """The lifecycle moves a test drives; each emits the events Stripe would (P1.4)."""
        st = STATE
        o = st.get(account, kind, rid)
        if o is None:
            raise BadRequest(f"no {kind} {rid!r}", 404)
        if kind == "payment_intents":
            if action == "succeed":
                st.pi_succeed(account, o, amount_received=spec.get("amount_received"))
            elif action == "fail":
                st.pi_fail(account, o, spec.get("outcome", "card_declined"), message=spec.get("message"))
            elif action == "processing":
                o["status"] = "processing"
                st.emit(account, "payment_intent.processing", o)
            elif action == "requires_action":
                o.update(status="requires_action", next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}})
                st.emit(account, "payment_intent.requires_action", o)
            elif action == "cancel":
                if o["status"] in ("succeeded", "canceled", "processing"):
                    raise BadRequest(f"a {o['status']} payment_intent cannot be canceled", 409)
                o.update(status="canceled", canceled_at=int(st.now()),
                         cancellation_reason=spec.get("cancellation_reason", "requested_by_customer"))
                st.emit(account, "payment_intent.canceled", o)
            else:
                raise BadRequest("payment_intents: succeed, fail, processing, requires_action, cancel", 404)
            return o
        if kind == "charges":
            if action == "refund":
                try:
                    return st.refund(account, o, spec.get("amount"), spec.get("reason"), spec.get("metadata"))
                except StripeError as e:
                    raise BadRequest(e.body["error"]["message"], 409) from None
            if action == "dispute":
                dp = st.new_object("disputes", {
                    "amount": spec.get("amount", o["amount"]), "currency": o["currency"], "charge": o["id"],
                    "payment_intent": o["payment_intent"], "reason": spec.get("reason", "fraudulent"),
                    "status": spec.get("status", "needs_response"),
                    "is_charge_refundable": bool(spec.get("is_charge_refundable", False)),
                    "balance_transactions": [{"id": rand_id("txn_"), "object": "balance_transaction",
                                              "amount": -spec.get("amount", o["amount"]), "currency": o["currency"],
                                              "type": "adjustment", "reporting_category": "dispute"}]})
                st.put(account, "disputes", dp)
                o["disputed"] = True
                st.emit(account, "charge.dispute.created", dp)
                return dp
            raise BadRequest("charges: refund, dispute", 404)
        if kind == "disputes":
            prev = {"status": o["status"]}
            if action == "close":
                status = spec.get("status", "lost")
                if status not in ("won", "lost", "warning_closed", "prevented"):
                    raise BadRequest("status: won, lost, warning_closed or prevented")
                o["status"] = status
                if status == "won":  # funds reinstated: a second balance transaction (P1.10)
                    o["balance_transactions"].append({"id": rand_id("txn_"), "object": "balance_transaction",
                                                      "amount": o["amount"], "currency": o["currency"],
                                                      "type": "adjustment", "reporting_category": "dispute_reversal"})
                st.emit(account, "charge.dispute.closed", o)
            elif action == "update":
                o["status"] = spec.get("status", "under_review")
                st.emit(account, "charge.dispute.updated", o, prev)
            else:
                raise BadRequest("disputes: update, close", 404)
            return o
        if kind == "refunds":
            prev = {"status": o["status"]}
            if action == "fail":
                if o["status"] in ("failed", "canceled"):
                    raise BadRequest(f"refund is {o['status']}", 409)
                o.update(status="failed", failure_reason=spec.get("failure_reason", "expired_or_canceled_card"),
                         failure_balance_transaction=rand_id("txn_"))
                ch = st.get(account, "charges", o["charge"])
                if ch:  # the failed amount is no longer refunded
                    ch["amount_refunded"] -= o["amount"]
                    ch["refunded"] = ch["amount_refunded"] >= ch["amount"]
                st.sync_refund_in_charge(account, o)
                st.emit(account, "refund.failed", o, prev)
            elif action == "succeed":
                if o["status"] != "pending":
                    raise BadRequest("only a pending refund can succeed", 409)
                o["status"] = "succeeded"
                st.sync_refund_in_charge(account, o)
                st.emit(account, "refund.updated", o, prev)
            else:
                raise BadRequest("refunds: fail, succeed", 404)
            return o
        if kind == "setup_intents" and action == "succeed":
            pmid = spec.get("payment_method") or o.get("payment_method")
            if not pmid:
                pm = st.put(account, "payment_methods", st.new_object("payment_methods", {}))
                pmid = pm["id"]
            pm = st.get(account, "payment_methods", pmid)
            if pm is None:
                raise BadRequest(f"no payment_method {pmid!r}", 404)
            o.update(status="succeeded", payment_method=pmid, latest_attempt=rand_id("setatt_"))
            st.emit(account, "setup_intent.succeeded", o)
            if o["customer"] and pm["customer"] != o["customer"]:
                pm["customer"] = o["customer"]  # attached on success (P1.10)
                st.emit(account, "payment_method.attached", pm)
            return o
        if kind == "checkout_sessions":
            return self.transition_checkout(o, action, spec, account)
        if kind == "customers" and action == "update":
            prev = {k: copy.deepcopy(o.get(k)) for k in spec}
            o.update(spec)
            st.emit(account, "customer.updated", o, prev)
            return o
        raise BadRequest(f"no transition {action!r} for {kind}", 404)


    @staticmethod
    def transition_checkout(cs, action, spec, account):
        """complete {method: card|delayed, payment_method?}, async_succeed, async_fail {outcome?}, expire."""
        st = STATE
        if action == "complete":
            return st.cs_complete(account, cs, spec.get("method", "card"), spec.get("payment_method"))
        if action in ("async_succeed", "async_fail"):
            return st.cs_async(account, cs, action == "async_succeed", spec.get("outcome", "insufficient_funds"))
        if action == "expire":
            try:
                return st.cs_expire(account, cs)
            except StripeError as e:
                raise BadRequest(e.body["error"]["message"], 409) from None
        raise BadRequest("checkout_sessions: complete, async_succeed, async_fail, expire", 404)


def main(argv=None):
    return run(NAME, Handler, STATE, "Mock of the Stripe REST API (v1) for settled's tests.", argv=argv)


if __name__ == "__main__":
    sys.exit(main())
