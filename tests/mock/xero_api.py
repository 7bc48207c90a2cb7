#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""xero_api.py: a mock of Xero's three hosts (identity, login, api) for settled's tests and demos.

    python3 tests/mock/xero_api.py --port PORT [--host 127.0.0.1] [--state FILE.json] [--demo] [--quiet]

Prints ``xero-mock listening on http://HOST:PORT`` (flushed) once it accepts connections (--port 0
picks a free port, printed in that line) and exits 0 on SIGTERM or SIGINT. Python 3 standard library
only; it never opens a connection itself. Point settled at it with SETTLED_XERO_API_BASE,
SETTLED_XERO_IDENTITY_BASE and SETTLED_XERO_LOGIN_BASE all set to http://127.0.0.1:PORT.

The protocol facts it imitates are in /work/shared/providers/PROVIDERS.md section 2 (cited below as
"P2.x") and the examples in fixtures/xero/. tests/mock/README.md documents every endpoint, control
call and default; tests/integration/test_xero_mock.py is its self-test.

Design points a client author must know (details in the README):
  * Records are stored as the raw JSON text they were given and spliced into responses verbatim, so
    numbers (1234567.89, 0.1, 14.20, 12.3456) reach the client byte for byte. The only rewrites are:
    /Date(...)/ slashes escaped as on the wire (P2.2), LineItems dropped from unpaged lists (Xero
    returns line items only for single GETs and paged lists), the top-level UpdatedDateUTC when
    a test asks for it, and line-item UnitAmounts with more than 2 decimals rounded to 2 unless the
    call asks for unitdp=4 (P2.5), as Xero does.
  * Refresh tokens rotate (P2.3). A retired refresh token used again within the grace period returns
    the SAME token pair that its first use issued (idempotent retry of a lost response); after the
    grace period, or for an unknown token, 400 {"error":"invalid_grant"}.
  * Rate limits (P2.4) are enforced per tenant (5 concurrent, 60 per rolling 60 s, 5000 per rolling
    24 h) and per app (10000 per rolling 60 s). Only admitted calls consume quota; every
    authenticated attempt is counted in /_mock/stats, so a test can assert that a client never went
    over a limit.
  * Payments (P2.5): PUT/POST /Payments validate like Xero (AUTHORISED invoice, AmountDue, a bank or
    payments-enabled account, lock dates) and update the invoice's stored text (AmountPaid, AmountDue,
    Status, Payments[], FullyPaidOnDate, UpdatedDateUTC) and nothing else in it; POST /Payments/{id}
    deletes and reverts. Without summarizeErrors=false a failing element makes the call a 400, and the
    valid elements are still made, as observed of Xero (summarize_errors_atomic switches that off).
    Idempotency-Key answers are replayed byte for byte; fail_after_commit loses the answer of a write
    that committed.
"""

import argparse
import base64
import decimal
import email.utils
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "fixtures", "xero"))

# The scope string of the recorded refresh response (fixtures/xero/oauth_token_refresh_response.json).
DEFAULT_SCOPE = (
    "email profile openid accounting.reports.read accounting.attachments.read accounting.settings "
    "accounting.settings.read accounting.attachments accounting.transactions accounting.journals.read "
    "accounting.transactions.read accounting.contacts accounting.contacts.read offline_access"
)

# The three resources mirrored by settled. "kind" is the control-API name, "collection" the Accounting
# API name (path segment and envelope key, P2.2).
KINDS = {
    "invoices": {"collection": "Invoices", "id": "InvoiceID", "number": "InvoiceNumber", "lines": True},
    "contacts": {"collection": "Contacts", "id": "ContactID", "number": "ContactNumber", "lines": False},
    "creditnotes": {"collection": "CreditNotes", "id": "CreditNoteID", "number": "CreditNoteNumber", "lines": True},
}
COLLECTIONS = {v["collection"].lower(): k for k, v in KINDS.items()}

# Scopes (P2.3). Only the routes below check them (the record GETs above do not, as before). A call whose token
# lacks every scope of its route gets 401 "AuthorizationUnsuccessful", as Xero answers a missing scope
# (XeroAPI/Xero-NetStandard #178: GET /Accounts without accounting.settings; #298). The granular scopes of
# apps created after 2 March 2026 (accounting.payments[.read]) are accepted beside the broad ones.
SCOPES_PAYMENTS_WRITE = ("accounting.transactions", "accounting.payments")
SCOPES_PAYMENTS_READ = SCOPES_PAYMENTS_WRITE + ("accounting.transactions.read", "accounting.payments.read")
SCOPES_SETTINGS_READ = ("accounting.settings", "accounting.settings.read")

# Xero's AccountType enum (xero_accounting.yaml, schema AccountType) and the Class each type belongs to.
ACCOUNT_CLASSES = {
    "BANK": "ASSET", "CURRENT": "ASSET", "FIXED": "ASSET", "INVENTORY": "ASSET", "NONCURRENT": "ASSET",
    "PREPAYMENT": "ASSET", "EQUITY": "EQUITY", "DEPRECIATN": "EXPENSE", "DIRECTCOSTS": "EXPENSE",
    "EXPENSE": "EXPENSE", "OVERHEADS": "EXPENSE", "SUPERANNUATIONEXPENSE": "EXPENSE", "WAGESEXPENSE": "EXPENSE",
    "CURRLIAB": "LIABILITY", "LIABILITY": "LIABILITY", "TERMLIAB": "LIABILITY", "PAYGLIABILITY": "LIABILITY",
    "SUPERANNUATIONLIABILITY": "LIABILITY", "OTHERINCOME": "REVENUE", "REVENUE": "REVENUE", "SALES": "REVENUE",
}
ACCOUNT_FIELDS = ("AccountID", "Code", "Name", "Type", "Status", "EnablePaymentsToAccount", "TaxType",
                  "BankAccountNumber", "CurrencyCode", "Description")
# The chart of accounts every tenant starts with. 090 and 200 are the usual bank and sales accounts; 970 is the
# equity account of the spec's own payment example (fixtures/xero/api_put_payments_request.json), which can
# take payments only because payments are enabled on it.
DEFAULT_ACCOUNTS = (
    {"Code": "090", "Name": "Business Bank Account", "Type": "BANK", "TaxType": "NONE",
     "BankAccountNumber": "0000000000"},
    {"Code": "200", "Name": "Sales", "Type": "REVENUE", "TaxType": "OUTPUT2"},
    {"Code": "970", "Name": "Owner A Funds Introduced", "Type": "EQUITY", "TaxType": "NONE",
     "EnablePaymentsToAccount": True},
)

# What Xero puts where an element that failed validation would have its id (the 400 fixture
# api_400_validation_error_contacts_put.json; XeroAPI/Xero-Net #354: "All Payment Ids are empty if one fails").
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
IDEMPOTENCY_KEY_MAX = 128  # P2.5: "128 character max"
PAYMENT_WRITE_ROUTES = ("PUT /Payments", "POST /Payments", "POST /Payments/{PaymentID}")

# The 429 body of fixtures/xero/api_429_rate_limited_day.http (P2.4: do not depend on it).
RATE_LIMIT_BODY = (
    b"oauth_problem=rate%20limit%20exceeded&oauth_problem_advice=please%20wait%20before%20retrying%20the%20xero%20api"
)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MINUTE = 60.0
DAY = 86400.0



PAYMENT_TERM_TYPES = ("DAYSAFTERBILLDATE", "DAYSAFTERBILLMONTH", "OFCURRENTMONTH", "OFFOLLOWINGMONTH")


def payment_terms(v):
    """An Organisation's PaymentTerms as Xero's schema has it: {Bills?: Bill, Sales?: Bill}, a Bill {Day, Type:
    PaymentTermType}; anything else is the control call's error."""
    if not isinstance(v, dict) or set(v) - {"Bills", "Sales"}:
        raise BadRequest("PaymentTerms is {\"Bills\"?: {Day, Type}, \"Sales\"?: {Day, Type}}")
    for side, bill in v.items():
        if (not isinstance(bill, dict) or set(bill) != {"Day", "Type"} or not isinstance(bill["Day"], int)
                or isinstance(bill["Day"], bool) or bill["Type"] not in PAYMENT_TERM_TYPES
                or not 0 <= bill["Day"] <= (31 if bill["Type"].startswith("OF") else 999)):
            # the spec says "Day of Month (0-31)", but "60 days after the bill date" is a common term: the two
            # "days after" types take more [unverified: Xero's own bound]
            raise BadRequest(f"PaymentTerms.{side} is {{Day, Type: one of {', '.join(PAYMENT_TERM_TYPES)}}}")
    return v

def default_app():
    """The app (OAuth client) and the knobs of the mock. PUT /_mock/app changes any of them."""
    return {
        "client_id": "mock-client-id",
        "client_secret": "mock-client-secret",
        "access_ttl": 1800,  # P2.3: expires_in 1800
        "grace": 1800,  # P2.3: an old refresh token may be retried for 30 minutes
        "refresh_ttl": 60 * 86400,  # P2.3: unused refresh tokens expire (60 days, [verify])
        "code_ttl": 300,  # authorisation codes
        "redirect_uris": [],  # empty: any redirect_uri is accepted by /identity/connect/authorize
        "consent_tenants": None,  # tenants a consent connects; None: every tenant the mock knows
        "limits": {"concurrent": 5, "minute": 60, "day": 5000, "appminute": 10000},  # P2.4
        "enforce_limits": True,  # False: never 429 for a limit, but still count the violations
        "pretty": False,  # True: pretty-print API bodies with CRLF line endings like real Xero (P2.2)
        "escape_slashes": True,  # "\/Date(...)\/" on the wire (P2.2)
        "strip_lineitems_unpaged": True,  # list calls without page= carry no LineItems
        "provider_name": "settled xero-mock",
        "page_size": 100,  # P2.2: up to 100 per page
        # payments (P2.5)
        "idempotency_ttl": 3600,  # seconds a stored Idempotency-Key answer is replayed ([unverified]: 6 min?)
        "summarize_errors_default": True,  # summarizeErrors when the query has none (see the README)
        "summarize_errors_atomic": False,  # True: a summarised 400 creates nothing (False: the valid ones are made)
        "fail_after_commit": 0,  # the next N payment writes that commit lose their answer
        "fail_after_commit_mode": "drop",  # how: "drop" (close without a reply) or "500"
    }


# ---------------------------------------------------------------------------------------------------
# Raw JSON text: finding the spans of values without re-serialising anything


_WS = re.compile(r"[ \t\n\r]*")
_DEC = json.JSONDecoder(parse_float=decimal.Decimal)


def _ws(s, i):
    return _WS.match(s, i).end()


def object_spans(s, i=0):
    """s has a JSON object at i (after white space). Returns ({key: (value_start, value_end,
    key_start)}, end) where end is just past the closing brace. Raises ValueError on bad JSON."""
    i = _ws(s, i)
    if s[i : i + 1] != "{":
        raise ValueError(f"expected a JSON object at offset {i}")
    i = _ws(s, i + 1)
    out = {}
    if s[i : i + 1] == "}":
        return out, i + 1
    while True:
        if s[i : i + 1] != '"':
            raise ValueError(f"expected a key at offset {i}")
        ks = i
        key, i = json.decoder.scanstring(s, i + 1)
        i = _ws(s, i)
        if s[i : i + 1] != ":":
            raise ValueError(f"expected ':' at offset {i}")
        i = _ws(s, i + 1)
        try:
            _, end = _DEC.raw_decode(s, i)
        except json.JSONDecodeError as e:
            raise ValueError(str(e)) from None
        out[key] = (i, end, ks)
        i = _ws(s, end)
        c = s[i : i + 1]
        if c == ",":
            i = _ws(s, i + 1)
            continue
        if c == "}":
            return out, i + 1
        raise ValueError(f"expected ',' or '}}' at offset {i}")


def array_spans(s, i=0):
    """Like object_spans for an array: ([(start, end), ...], end)."""
    i = _ws(s, i)
    if s[i : i + 1] != "[":
        raise ValueError(f"expected a JSON array at offset {i}")
    i = _ws(s, i + 1)
    out = []
    if s[i : i + 1] == "]":
        return out, i + 1
    while True:
        try:
            _, end = _DEC.raw_decode(s, i)
        except json.JSONDecodeError as e:
            raise ValueError(str(e)) from None
        out.append((i, end))
        i = _ws(s, end)
        c = s[i : i + 1]
        if c == ",":
            i = _ws(s, i + 1)
            continue
        if c == "]":
            return out, i + 1
        raise ValueError(f"expected ',' or ']' at offset {i}")


def whole_object(s):
    """The spans of s, which must be exactly one JSON object (surrounding white space allowed)."""
    spans, end = object_spans(s, 0)
    if _ws(s, end) != len(s):
        raise ValueError("trailing data after the JSON object")
    return spans


def remove_top_key(raw, key):
    """raw without its top-level member key (bytes elsewhere untouched)."""
    try:
        spans = whole_object(raw)
    except ValueError:
        return raw
    if key not in spans:
        return raw
    vs, ve, ks = spans[key]
    j = _ws(raw, ve)
    if raw[j : j + 1] == ",":  # not the last member: drop "key": value, and the comma
        return raw[:ks] + raw[_ws(raw, j + 1) :]
    i = ks - 1
    while i >= 0 and raw[i] in " \t\r\n":
        i -= 1
    if raw[i] == ",":  # the last member: drop the comma before it
        return raw[:i] + raw[ve:]
    return raw[:ks] + raw[ve:]  # the only member


def set_top_key(raw, key, value_text):
    """raw with the top-level member key set to value_text (replaced in place, or appended)."""
    spans = whole_object(raw)
    if key in spans:
        vs, ve, _ = spans[key]
        return raw[:vs] + value_text + raw[ve:]
    member = json.dumps(key) + ":" + value_text
    if not spans:
        close = raw.rindex("}")
        return raw[:close] + member + raw[close:]
    last = max(ve for _, ve, _ in spans.values())
    return raw[:last] + "," + member + raw[last:]


def invoice_pdf(tenant_id, r):
    """The PDF Xero renders for an invoice (GET /Invoices/{id} with Accept: application/pdf, PROVIDERS.md 2.6): here a
    small valid PDF naming the invoice, with a digest of the record (so a changed invoice has other bytes) and a
    binary comment line, as real PDFs have."""
    digest = hashlib.sha256(f"{tenant_id}:{r.raw}".encode("utf-8")).hexdigest()
    text = f"Invoice {r.number or r.id} {digest[:16]}".replace("(", "").replace(")", "").replace("\\", "")
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1", "replace")
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + o + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def round_unit_amounts(raw, places):
    """raw (one invoice or credit-note record) with the UnitAmount of each top-level LineItems element
    rounded to places decimals (half away from zero), as Xero does without ?unitdp=4 (P2.5: the
    parameter opts in to four decimal places for unit amounts; totals are unaffected). Only a number
    with more decimals than that is rewritten; every other byte is kept."""
    try:
        spans = whole_object(raw)
    except ValueError:
        return raw
    if "LineItems" not in spans:
        return raw
    try:
        items, _ = array_spans(raw, spans["LineItems"][0])
    except ValueError:
        return raw
    quantum = decimal.Decimal(1).scaleb(-places)
    edits = []  # (start, end, text), in order
    for s, _ in items:
        try:
            fields, _ = object_spans(raw, s)
        except ValueError:
            continue
        if "UnitAmount" not in fields:
            continue
        vs, ve, _ = fields["UnitAmount"]
        value = _DEC.decode(raw[vs:ve])
        if not isinstance(value, (decimal.Decimal, int)) or isinstance(value, bool):
            continue  # null or a string: Xero sends a number
        d = decimal.Decimal(value)
        if d.as_tuple().exponent >= -places:
            continue
        edits.append((vs, ve, format(d.quantize(quantum, rounding=decimal.ROUND_HALF_UP), "f")))
    for vs, ve, text in reversed(edits):
        raw = raw[:vs] + text + raw[ve:]
    return raw


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.S)


def pretty_crlf(text, indent="  "):
    """Re-indents JSON text like Xero's pretty-printed responses (CRLF), copying every string and
    number token verbatim."""
    out = []
    depth = 0
    toks = _TOKEN.findall(text)
    n = len(toks)
    i = 0
    nl = "\r\n"
    while i < n:
        t = toks[i]
        if t in "{[" and len(t) == 1:
            if i + 1 < n and toks[i + 1] == ("}" if t == "{" else "]"):
                out.append(t + toks[i + 1])
                i += 2
                continue
            depth += 1
            out.append(t + nl + indent * depth)
        elif t in "}]" and len(t) == 1:
            depth -= 1
            out.append(nl + indent * depth + t)
        elif t == ",":
            out.append("," + nl + indent * depth)
        elif t == ":":
            out.append(": ")
        else:
            out.append(t)
        i += 1
    return "".join(out)


# /Date(ms[+hhmm])/ not already escaped: escaped on the wire as Xero sends it (P2.2).
_DATE_UNESCAPED = re.compile(r'(?<!\\)/Date\(([^)"\\]*)\)/')
_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def escape_dates(raw):
    return _DATE_UNESCAPED.sub(r"\\/Date(\1)\\/", raw)


def ms_date(ms, offset=True):
    return f"/Date({ms}+0000)/" if offset else f"/Date({ms})/"


def iso_from_ms(ms):
    return (EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_when(value):
    """Milliseconds since the epoch of an If-Modified-Since value or a record's UpdatedDateUTC:
    RFC 1123 ("Wed, 21 Oct 2015 07:28:00 GMT"), ISO 8601 ("2020-02-06T12:17:43.202-08:00",
    "2019-03-11T18:02:09", "...Z"; no zone means UTC) or Xero's /Date(ms+0000)/. Raises ValueError."""
    v = value.strip()
    m = _MS_DATE.match(v.replace("\\/", "/"))
    if m:
        return int(m.group(1))  # the offset is informational: the number is UTC milliseconds
    if v[:1].isalpha():
        try:
            dt = email.utils.parsedate_to_datetime(v)
        except (TypeError, ValueError):
            raise ValueError(f"not an RFC 1123 date: {value!r}") from None
    else:
        iso = re.sub(r"[zZ]$", "+00:00", v)
        iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)  # fromisoformat takes at most 6 fractional digits
        try:
            dt = datetime.fromisoformat(iso)
        except ValueError:
            raise ValueError(f"not an ISO 8601 date: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - EPOCH) // timedelta(milliseconds=1)


def jdump(obj):
    return json.dumps(obj, separators=(",", ":"))


class BadRequest(Exception):
    """A control or API request the mock refuses; becomes a 4xx with a JSON body."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------------
# Payments (P2.5): money, dates, array edits and where filters


def xero_num(d):
    """A money amount or rate as Xero's JSON writes it (fixtures/xero: 1.0, 46.0, 229.0, 148062.76): the
    shortest decimal text, with ".0" on a whole number. Computed from a Decimal, never through a float."""
    d = decimal.Decimal(d)
    if d == 0:
        return "0.0"
    if d == d.to_integral_value():
        return format(d.quantize(decimal.Decimal(1)), "f") + ".0"
    return format(d.normalize(), "f")


def money(value):
    """The Decimal of a JSON number or numeric string, or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, decimal.Decimal)):
        return decimal.Decimal(value)
    if isinstance(value, str):
        try:
            d = decimal.Decimal(value.strip())
        except decimal.InvalidOperation:
            return None
        return d if d.is_finite() else None
    return None


_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$")


def parse_day(value):
    """The date of a request field: "YYYY-MM-DD" (P2.2), the same with a time of day, or /Date(ms+0000)/.
    Raises ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    v = value.strip().replace("\\/", "/")
    m = _MS_DATE.match(v)
    if m:
        return (EPOCH + timedelta(milliseconds=int(m.group(1)))).date()
    m = _DAY.match(v)
    if not m:
        raise ValueError(f"not a date: {value!r}")
    return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def day_ms(d):
    """Milliseconds of midnight UTC of date d, as Xero dates are sent (2019-03-12 -> /Date(1552348800000+0000)/)."""
    return (datetime(d.year, d.month, d.day, tzinfo=timezone.utc) - EPOCH) // timedelta(milliseconds=1)


def lock_text(d):
    """A lock date as Xero's message writes it: 30-Nov-2018 (P2.5)."""
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[d.month - 1]
    return f"{d.day:02d}-{month}-{d.year}"


def edit_array(raw, key, drop=None, add=None):
    """raw with its top-level array member key rebuilt from its own elements (each kept verbatim), minus those
    for which drop(decoded element) is true, plus the JSON text add at the end. A missing member, or one that is
    not an array, counts as an empty array."""
    spans = whole_object(raw)
    texts = []
    if key in spans:
        try:
            items, _ = array_spans(raw, spans[key][0])
        except ValueError:  # null (or anything but an array): replaced by an array
            items = []
        texts = [raw[s:e] for s, e in items]
    if drop is not None:
        texts = [t for t in texts if not drop(_DEC.decode(t))]
    if add is not None:
        texts.append(add)
    return set_top_key(raw, key, "[" + ",".join(texts) + "]")


_WHERE_TERM = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_.]*)\s*(==|!=)\s*'
    r'(?:"((?:[^"\\]|\\.)*)"|Guid\(\s*"([^"]*)"\s*\)|(true|false)\b|(-?\d+(?:\.\d+)?))\s*', re.I)
_WHERE_AND = re.compile(r"(?:AND|&&)", re.I)


def parse_where(text):
    """The terms of a where filter: [(path, op, value)]. Only Field=="text", Field==Guid("..."), Field==true
    and Field==12.50 (or !=) joined by AND or && are understood; anything else is refused with a 400 that
    says so, so that a client never mistakes an ignored filter for a match."""
    terms, i = [], 0
    while True:
        m = _WHERE_TERM.match(text, i)
        if not m:
            raise BadRequest(f'xero-mock: where supports only Field=="value" terms joined by AND, not {text!r}')
        path, op, s, g, b, num = m.groups()
        if s is not None:
            val = re.sub(r"\\(.)", r"\1", s)
        elif g is not None:
            val = g
        elif b is not None:
            val = b.lower() == "true"
        else:
            val = decimal.Decimal(num)
        terms.append((path.split("."), op, val))
        i = m.end()
        if i >= len(text):
            return terms
        m = _WHERE_AND.match(text, i)
        if not m:
            raise BadRequest(f'xero-mock: where supports only Field=="value" terms joined by AND, not {text!r}')
        i = m.end()


def canonical_body(body):
    """The bytes an Idempotency-Key is matched on: the body's JSON with sorted keys (numbers as written), or
    the raw bytes if it is not JSON."""
    try:
        obj = json.loads(body.decode("utf-8").lstrip("\ufeff"), parse_float=decimal.Decimal)
    except (ValueError, UnicodeDecodeError):
        return bytes(body)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def where_match(obj, terms):
    """Whether the decoded object obj satisfies every term (field names and text compared case-insensitively)."""
    for path, op, val in terms:
        cur = obj
        for seg in path:
            cur = next((v for k, v in cur.items() if k.lower() == seg.lower()), None) if isinstance(cur, dict) else None
        if isinstance(val, bool):
            eq = cur is val
        elif isinstance(val, str):
            eq = isinstance(cur, str) and cur.lower() == val.lower()
        else:
            eq = money(cur) == val if not isinstance(cur, (str, bool)) else False
        if eq != (op == "=="):
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# State


class Record:
    __slots__ = ("id", "key", "raw", "updated_ms", "number", "seq")


class Payment:
    """A payment made through the API (P2.5). Its JSON is built when served (MockState.payment_text)."""

    __slots__ = ("id", "invoice_key", "invoice_id", "invoice_number", "invoice_snapshot", "account", "day",
                 "amount", "bank_amount", "rate", "reference", "ptype", "status", "created_ms", "updated_ms",
                 "seq", "idempotency_key", "route")


class Tenant:
    def __init__(self, tid, name=None, connection_id=None):
        self.id = tid
        self.name = name or f"Mock Organisation {tid[:8]}"
        self.connection_id = connection_id or str(uuid.uuid5(uuid.NAMESPACE_URL, "xero-mock-connection:" + tid.lower()))
        self.created = datetime.now(timezone.utc)
        self.records = {k: {} for k in KINDS}
        # payments (P2.5): the chart of accounts (lower-case Code -> account), the organisation's lock dates
        # and extra fields, the payments (lower-case PaymentID -> Payment) and the Idempotency-Key answers
        ms = int(time.time() * 1000)
        self.accounts = {}
        for a in DEFAULT_ACCOUNTS:
            acct = {"AccountID": self.account_id(a["Code"]), "Status": "ACTIVE", "EnablePaymentsToAccount": False,
                    **a, "updated_ms": ms}
            self.accounts[a["Code"].lower()] = acct
        self.org = {"PeriodLockDate": None, "EndOfYearLockDate": None}
        self.org_extra = {}
        self.payments = {}
        self.idem = {}

    def account_id(self, code):
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"xero-mock-account:{self.id.lower()}:{code.lower()}"))


class Auth:
    def __init__(self, tenant_ids, scope=DEFAULT_SCOPE, auth_event_id=None):
        self.id = auth_event_id or str(uuid.uuid4())
        self.tenant_ids = list(tenant_ids)
        self.scope = scope
        self.offline = "offline_access" in scope.split()
        self.revoked = False
        self.created = datetime.now(timezone.utc)
        self.user_id = str(uuid.uuid4())


class Window:
    """Timestamps in a rolling window; count() is how many are newer than now - span."""

    def __init__(self, span):
        self.span = span
        self.q = deque()

    def trim(self, now):
        q, edge = self.q, now - self.span
        while q and q[0] <= edge:
            q.popleft()

    def count(self, now):
        self.trim(now)
        return len(self.q)


class CallStats:
    """What a client did to one tenant (or to the app as a whole): every authenticated attempt."""

    def __init__(self):
        self.calls_total = 0
        self.attempts = Window(MINUTE)
        self.max_window = 0
        self.inflight = 0
        self.max_concurrent = 0
        self.over_limit = 0
        self.over_by_problem = {}
        self.sent_429_limit = 0
        self.sent_429_fault = 0
        self.statuses = {}
        self.by_path = {}
        # limiter (admitted calls only)
        self.adm_min = Window(MINUTE)
        self.adm_day = Window(DAY)
        self.adm_inflight = 0

    def as_json(self):
        return {
            "calls_total": self.calls_total,
            "max_calls_in_any_60s_window": self.max_window,
            "max_concurrent": self.max_concurrent,
            "over_limit_count": self.over_limit,
            "over_limit_by_problem": dict(self.over_by_problem),
            "sent_429": self.sent_429_limit + self.sent_429_fault,
            "sent_429_limit": self.sent_429_limit,
            "sent_429_fault": self.sent_429_fault,
            "in_flight": self.inflight,
            "statuses": dict(self.statuses),
            "calls_by_path": dict(self.by_path),
        }


class Ticket:
    """One API call between begin_call and end_call."""

    __slots__ = ("tenant", "tstats", "admitted", "problem", "retry_after", "headers", "method", "path", "query",
                 "ims", "fault", "t_ms", "ended", "auth")


class MockState:
    def __init__(self):
        self.lock = threading.RLock()
        self.offset = 0.0  # seconds added to both clocks by POST /_mock/clock
        self.seed = []  # load documents of --demo/--state, replayed by POST /_mock/reset {"seed": true}
        self.reset()

    # clocks -----------------------------------------------------------------------------------
    def now(self):
        """Wall-clock seconds (token lifetimes, dates)."""
        return time.time() + self.offset

    def mono(self):
        """Monotonic seconds (rate-limit windows)."""
        return time.monotonic() + self.offset

    def now_ms(self):
        return int(self.now() * 1000)

    def reset(self):
        with self.lock:
            self.app = default_app()
            self.tenants = {}  # lower-case tenant id -> Tenant
            self.auths = {}  # authEventId -> Auth
            self.refresh = {}  # token -> dict
            self.access = {}  # token -> dict
            self.codes = {}  # code -> dict
            self.faults = []
            self.seq = 0
            self.reset_stats()

    def reset_stats(self):
        with self.lock:
            self.tstats = {}  # lower-case tenant id -> CallStats
            self.appstats = CallStats()
            self.oauth = {
                "token_requests": 0,
                "token_refreshes": 0,
                "grace_replays": 0,
                "code_exchanges": 0,
                "codes_issued": 0,
                "invalid_grant": 0,
                "invalid_client": 0,
                "revocations": 0,
            }
            self.unauthorised = {"401": 0, "403": 0}
            self.missing_scope = 0  # of the 401s: a token without the route's scope
            self.pay = {
                "writes_by_route": {r: 0 for r in PAYMENT_WRITE_ROUTES},  # every authenticated attempt
                "executed": 0,  # write calls that ran (not replayed, not refused before running)
                "created": 0,
                "deleted": 0,
                "element_errors": 0,  # payments refused with ValidationErrors
                "rejected_400": 0,  # write calls answered 400
                "idempotency": {"saved": 0, "replayed": 0, "mismatch": 0, "expired": 0, "too_long": 0},
                "fail_after_commit": 0,
            }
            self.log = deque(maxlen=5000)

    # tenants and records ----------------------------------------------------------------------
    def tenant(self, tid, name=None, create=True, connection_id=None):
        t = self.tenants.get(tid.lower())
        if t is None:
            if not create:
                return None
            t = self.tenants[tid.lower()] = Tenant(tid, name, connection_id)
        else:
            if name:
                t.name = name
            if connection_id:
                t.connection_id = connection_id
        return t

    def put_record(self, tid, kind, raw, path_id=None, updated_ms=None):
        """Stores raw (the JSON text of one record) verbatim. Returns (record, created)."""
        spec = KINDS[kind]
        raw = raw.strip().lstrip("\ufeff")
        try:
            spans = whole_object(raw)
        except ValueError as e:
            raise BadRequest(f"the {kind} record is not one JSON object: {e}") from None

        def field(name):
            if name not in spans:
                return None
            vs, ve, _ = spans[name]
            return json.loads(raw[vs:ve])

        rid = field(spec["id"])
        if rid is not None and not isinstance(rid, str):
            raise BadRequest(f"{spec['id']} must be a string")
        if path_id is not None:
            if rid is None:
                raw = set_top_key(raw, spec["id"], json.dumps(path_id))
                rid = path_id
            elif rid.lower() != path_id.lower():
                raise BadRequest(f"{spec['id']} {rid} in the body differs from {path_id} in the path")
        if not rid:
            raise BadRequest(f"the record has no {spec['id']}")
        if updated_ms is not None:
            raw = set_top_key(raw, "UpdatedDateUTC", json.dumps(ms_date(updated_ms)))
            if "UpdatedDateUTCString" in spans:
                raw = set_top_key(raw, "UpdatedDateUTCString", json.dumps(iso_from_ms(updated_ms)))
        else:
            upd = field("UpdatedDateUTC")
            if upd is None:
                updated_ms = self.now_ms()
                raw = set_top_key(raw, "UpdatedDateUTC", json.dumps(ms_date(updated_ms)))
            else:
                try:
                    updated_ms = parse_when(str(upd))
                except ValueError as e:
                    raise BadRequest(f"UpdatedDateUTC: {e}") from None
        number = field(spec["number"])
        t = self.tenant(tid)
        table = t.records[kind]
        old = table.get(rid.lower())
        r = Record()
        r.id, r.key, r.raw, r.updated_ms = rid, rid.lower(), raw, updated_ms
        r.number = number if isinstance(number, str) else None
        self.seq += 1
        r.seq = old.seq if old else self.seq
        table[r.key] = r
        return r, old is None

    # accounts, organisation and payments (P2.5) ------------------------------------------------
    def put_accounts(self, tenant, specs):
        """Adds or changes accounts of tenant's chart (matched by AccountID, else by Code). Returns the chart."""
        if isinstance(specs, dict):
            specs = [specs]
        if not isinstance(specs, list):
            raise BadRequest("accounts: an account object or a list of them")
        for spec in specs:
            if not isinstance(spec, dict):
                raise BadRequest("an account is a JSON object")
            unknown = set(spec) - set(ACCOUNT_FIELDS)
            if unknown:
                raise BadRequest(f"unknown account fields {sorted(unknown)} (known: {', '.join(ACCOUNT_FIELDS)})")
            old = None
            if spec.get("AccountID"):
                aid = str(spec["AccountID"]).lower()
                old = next((a for a in tenant.accounts.values() if a["AccountID"].lower() == aid), None)
            if old is None and isinstance(spec.get("Code"), str):
                old = tenant.accounts.get(spec["Code"].lower())
            if old is None and not (isinstance(spec.get("Code"), str) and spec["Code"] and spec.get("Type")):
                raise BadRequest("a new account needs a Code and a Type")
            acct = dict(old) if old else {"Status": "ACTIVE", "EnablePaymentsToAccount": False, "TaxType": "NONE"}
            acct.update(spec)
            if not isinstance(acct.get("Code"), str) or not acct["Code"]:
                raise BadRequest("Code must be a non-empty string")
            acct.setdefault("Name", acct["Code"])
            acct.setdefault("AccountID", tenant.account_id(acct["Code"]))
            if acct["Type"] not in ACCOUNT_CLASSES:
                raise BadRequest(f"Type must be one of {', '.join(sorted(ACCOUNT_CLASSES))}")
            if acct["Status"] not in ("ACTIVE", "ARCHIVED"):
                raise BadRequest("Status must be ACTIVE or ARCHIVED")
            if not isinstance(acct["EnablePaymentsToAccount"], bool):
                raise BadRequest("EnablePaymentsToAccount must be true or false")
            clash = tenant.accounts.get(acct["Code"].lower())
            if clash is not None and clash is not old and clash["AccountID"] != acct["AccountID"]:
                raise BadRequest(f"account code {acct['Code']!r} is taken by another account", 409)
            if old is not None:
                tenant.accounts.pop(old["Code"].lower(), None)
            acct["updated_ms"] = self.now_ms()
            tenant.accounts[acct["Code"].lower()] = acct
        return [self.account_json(a) for a in tenant.accounts.values()]

    @staticmethod
    def account_json(a):
        """An account as GET /Accounts shows it (schema Account)."""
        out = {"AccountID": a["AccountID"], "Code": a["Code"], "Name": a["Name"], "Status": a["Status"],
               "Type": a["Type"], "TaxType": a.get("TaxType", "NONE"), "Class": ACCOUNT_CLASSES[a["Type"]],
               "EnablePaymentsToAccount": a["EnablePaymentsToAccount"], "ShowInExpenseClaims": False}
        if a.get("Description"):
            out["Description"] = a["Description"]
        if a["Type"] == "BANK":
            out["BankAccountNumber"] = a.get("BankAccountNumber", "")
            out["BankAccountType"] = "BANK"
            out["CurrencyCode"] = a.get("CurrencyCode", "NZD")
        out["HasAttachments"] = False
        out["UpdatedDateUTC"] = ms_date(a["updated_ms"])
        return out

    def put_organisation(self, tenant, spec):
        """Sets the lock dates ("YYYY-MM-DD", /Date(ms)/ or null to clear) and any other field that GET
        /Organisation should show (null removes it)."""
        if not isinstance(spec, dict):
            raise BadRequest("the organisation is a JSON object")
        org = dict(tenant.org)
        extra = dict(tenant.org_extra)
        for k, v in spec.items():
            if k in ("PeriodLockDate", "EndOfYearLockDate"):
                try:
                    org[k] = None if v is None else parse_day(v)
                except ValueError as e:
                    raise BadRequest(f"{k}: {e}") from None
            elif k in ("OrganisationID", "Name"):
                raise BadRequest(f"{k} is the tenant's (rename it with PUT /_mock/tenants/{{tenantId}})")
            elif k == "PaymentTerms" and v is not None:
                extra[k] = payment_terms(v)
            elif v is None:
                extra.pop(k, None)
            else:
                extra[k] = v
        if org["PeriodLockDate"] and org["EndOfYearLockDate"] and org["EndOfYearLockDate"] > org["PeriodLockDate"]:
            raise BadRequest("EndOfYearLockDate (all users) cannot be after PeriodLockDate (all but advisers)")
        tenant.org, tenant.org_extra = org, extra
        return self.organisation_view(tenant)

    @staticmethod
    def organisation_view(tenant):
        out = {k: (v.isoformat() if v else None) for k, v in tenant.org.items()}
        out.update(tenant.org_extra)
        return out

    @staticmethod
    def organisation_json(tenant):
        """GET /Organisation's element: a minimal organisation (P2.7) with the lock dates if set ("Shown if
        set", as /Date(ms+0000)/ like the recorded response of the xero-python cassette)."""
        org = {"Name": tenant.name, "LegalName": tenant.name, "OrganisationID": tenant.id,
               "OrganisationStatus": "ACTIVE", "BaseCurrency": "NZD", "CountryCode": "NZ", "Version": "NZ",
               "IsDemoCompany": True,
               # Xero's default terms ({Bills: {Day, Type}, Sales: {Day, Type}}; the spec's example has none set:
               # {}); PUT /_mock/tenants/{id}/organisation {"PaymentTerms": ...} sets them
               "PaymentTerms": {}}
        for k in ("PeriodLockDate", "EndOfYearLockDate"):
            if tenant.org[k]:
                org[k] = ms_date(day_ms(tenant.org[k]))
        org.update(tenant.org_extra)
        return org

    @staticmethod
    def lock_error(tenant, day):
        """The validation message for a document dated day in a locked period, or None. Xero locks the lock
        date itself and everything before it (P2.5; the wording is that integrators report). Which message
        wins when the date is before both lock dates is [unverified]: the end-of-year one here."""
        eoy, per = tenant.org["EndOfYearLockDate"], tenant.org["PeriodLockDate"]
        if eoy and day <= eoy:
            return f"The document date cannot be before the end of year lock date, currently set at {lock_text(eoy)}"
        if per and day <= per:
            return f"The document date cannot be before the period lock date, currently set at {lock_text(per)}"
        return None

    @staticmethod
    def invoice_amounts(inv):
        """(AmountPaid, AmountDue) of a decoded invoice; AmountDue missing is Total - AmountPaid - AmountCredited."""
        paid = money(inv.get("AmountPaid")) or decimal.Decimal(0)
        due = money(inv.get("AmountDue"))
        if due is None:
            due = (money(inv.get("Total")) or 0) - paid - (money(inv.get("AmountCredited")) or 0)
        return paid, due

    def check_payment(self, tenant, elem):
        """Validates one element of PUT/POST /Payments as Xero does (P2.5, P2.8). Returns (messages, context)."""
        errs = []
        for k in ("CreditNote", "CreditNoteNumber", "Prepayment", "Overpayment"):
            if elem.get(k):
                errs.append(f"xero-mock: payments on a {k} are not implemented, only on invoices")
        ref = elem.get("Invoice") if isinstance(elem.get("Invoice"), dict) else {}
        inv_id, inv_no = ref.get("InvoiceID"), ref.get("InvoiceNumber") or elem.get("InvoiceNumber")
        table = tenant.records["invoices"]
        rec = inv = None
        given = True
        if isinstance(inv_id, str) and inv_id and inv_id != ZERO_GUID:
            rec = table.get(inv_id.lower())
        elif isinstance(inv_no, str) and inv_no:
            rec = next((r for r in table.values() if r.number == inv_no), None)
        else:
            given = False
        if not given:
            if not errs:
                errs.append("You must specify an InvoiceID or InvoiceNumber for the payment")  # [unverified] wording
        elif rec is None:
            errs.append("Invoice could not be found")  # [unverified] wording
        if rec is not None:
            inv = _DEC.decode(rec.raw)
            if inv.get("Status") != "AUTHORISED":  # P2.8; integrators report this wording
                errs.append("Payments can only be made against Authorised documents")
        amount = money(elem.get("Amount"))
        if amount is None:
            errs.append("Payment amount must be a number")  # [unverified] wording
        elif amount <= 0:
            errs.append("Payment amount must be greater than zero")  # [unverified] wording
        elif amount != amount.quantize(decimal.Decimal("0.01")):
            errs.append("Payment amount cannot have more than 2 decimal places")  # [unverified]: Xero may round
        elif inv is not None and amount > self.invoice_amounts(inv)[1]:
            errs.append("Payment amount exceeds the amount outstanding on this document")  # the spec's example
        aref = elem.get("Account") if isinstance(elem.get("Account"), dict) else {}
        code, aid = aref.get("Code"), aref.get("AccountID")
        acct = None
        if isinstance(aid, str) and aid and aid != ZERO_GUID:
            acct = next((a for a in tenant.accounts.values() if a["AccountID"].lower() == aid.lower()), None)
        elif isinstance(code, str) and code:
            acct = tenant.accounts.get(code.lower())
        else:  # wording reported by integrators (Bill.com KB)
            errs.append("You must specify an Account code or Account ID for the payment")
            aid = code = None
        if (aid or code) and (acct is None or acct["Status"] != "ACTIVE"):  # unknown or archived
            errs.append("Account must be valid.")  # [unverified] wording
        elif acct is not None and acct["Type"] != "BANK" and not acct["EnablePaymentsToAccount"]:
            errs.append("Account type is invalid for making a payment to/from")  # [unverified] wording
        day = None
        try:
            day = parse_day(elem.get("Date"))
        except ValueError:
            errs.append("A valid date must be supplied for the payment")  # [unverified]: Xero may default it
        if day is not None:
            lock = self.lock_error(tenant, day)
            if lock:
                errs.append(lock)
        rate = decimal.Decimal(1)
        if elem.get("CurrencyRate") is not None:
            rate = money(elem.get("CurrencyRate"))
            if rate is None or rate <= 0:
                errs.append("Currency rate must be greater than zero")  # [unverified] wording
        elif inv is not None and (money(inv.get("CurrencyRate")) or 0) > 0:
            rate = money(inv.get("CurrencyRate"))
        reference = elem.get("Reference")
        if reference is not None and not isinstance(reference, str):
            reference = str(reference)
        return errs, {"invoice": rec, "decoded": inv, "amount": amount, "account": acct, "day": day,
                      "rate": rate, "reference": reference}

    def move_invoice(self, tenant, rec, delta, add=None, drop_id=None, paid_day=None):
        """Applies a payment of delta (negative: a deleted one) to the invoice record rec like Xero (P2.5):
        AmountPaid and AmountDue, Status PAID at AmountDue 0 (with FullyPaidOnDate) and back to AUTHORISED,
        the entry in Payments[], and a later UpdatedDateUTC. Every other byte of the record stays as it was."""
        inv = _DEC.decode(rec.raw)
        paid, due = self.invoice_amounts(inv)
        paid, due = paid + delta, due - delta
        raw = set_top_key(rec.raw, "AmountPaid", xero_num(paid))
        raw = set_top_key(raw, "AmountDue", xero_num(due))
        if delta > 0 and due == 0 and inv.get("Status") == "AUTHORISED":
            raw = set_top_key(raw, "Status", '"PAID"')
            days = [p.day for p in tenant.payments.values() if p.invoice_key == rec.key and p.status == "AUTHORISED"]
            raw = set_top_key(raw, "FullyPaidOnDate", json.dumps(ms_date(day_ms(max(days + [paid_day])))))
        elif delta < 0 and due > 0 and inv.get("Status") == "PAID":
            raw = set_top_key(raw, "Status", '"AUTHORISED"')
            raw = remove_top_key(raw, "FullyPaidOnDate")
        drop = None
        if drop_id is not None:
            def drop(e):
                return isinstance(e, dict) and str(e.get("PaymentID", "")).lower() == drop_id.lower()
        raw = edit_array(raw, "Payments", drop=drop, add=add)
        upd = max(self.now_ms(), rec.updated_ms + 1)  # so that an If-Modified-Since GET sees the change
        raw = set_top_key(raw, "UpdatedDateUTC", json.dumps(ms_date(upd)))
        if "UpdatedDateUTCString" in whole_object(raw):
            raw = set_top_key(raw, "UpdatedDateUTCString", json.dumps(iso_from_ms(upd)))
        rec.raw, rec.updated_ms = raw, upd

    def amend_invoice(self, tenant, iid, spec):
        """What an accountant does to an invoice in Xero itself, atomically with the payments API (the state lock):
        {"credit": "12.50"} allocates that much of a credit note (AmountCredited up, AmountDue down; not more than
        AmountDue, as Xero refuses an allocation above the amount due; Status PAID at AmountDue 0), {"status":
        "VOIDED"} voids it (refused while a payment is applied: Xero makes you remove payments first). Returns
        {AmountDue, AmountCredited, Status}; a refusal is a 409 with Xero's reason."""
        rec = tenant.records["invoices"].get(iid.lower()) if tenant else None
        if rec is None:
            raise BadRequest("no such invoice", 404)
        inv = _DEC.decode(rec.raw)
        paid, due = self.invoice_amounts(inv)
        credited = money(inv.get("AmountCredited")) or decimal.Decimal(0)
        raw = rec.raw
        if set(spec) == {"credit"}:
            c = money(spec["credit"])
            if c is None or c <= 0:
                raise BadRequest("credit: a positive decimal amount")
            if inv.get("Status") != "AUTHORISED":
                raise BadRequest("Credit notes can only be allocated to Authorised documents", 409)  # [unverified]
            if c > due:  # Xero: an allocation cannot be more than the invoice's amount due [unverified wording]
                raise BadRequest("The amount allocated exceeds the amount outstanding on this document", 409)
            credited, due = credited + c, due - c
            raw = set_top_key(raw, "AmountCredited", xero_num(credited))
            raw = set_top_key(raw, "AmountDue", xero_num(due))
            if due == 0:
                raw = set_top_key(raw, "Status", '"PAID"')
        elif spec == {"status": "VOIDED"}:
            if paid > 0 or any(p.invoice_key == rec.key and p.status == "AUTHORISED" for p in tenant.payments.values()):
                raise BadRequest("This document cannot be voided as it has payments applied", 409)  # [unverified]
            raw = set_top_key(raw, "Status", '"VOIDED"')
        else:
            raise BadRequest('amend: {"credit": "<amount>"} or {"status": "VOIDED"}')
        upd = max(self.now_ms(), rec.updated_ms + 1)
        raw = set_top_key(raw, "UpdatedDateUTC", json.dumps(ms_date(upd)))
        if "UpdatedDateUTCString" in whole_object(raw):
            raw = set_top_key(raw, "UpdatedDateUTCString", json.dumps(iso_from_ms(upd)))
        rec.raw, rec.updated_ms = raw, upd
        out = _DEC.decode(raw)
        return {"AmountDue": str(money(out.get("AmountDue"))), "AmountCredited": str(money(out.get("AmountCredited"))),
                "Status": out.get("Status")}

    def add_payment(self, tenant, ctx, key, route):
        """Creates the payment that check_payment accepted and applies it to its invoice. Returns the payment."""
        rec, inv = ctx["invoice"], ctx["decoded"]
        p = Payment()
        p.id = str(uuid.uuid4())
        p.invoice_key, p.invoice_id, p.invoice_number = rec.key, rec.id, rec.number
        p.account, p.day, p.amount = ctx["account"], ctx["day"], ctx["amount"]
        p.rate, p.reference = ctx["rate"], ctx["reference"]
        p.bank_amount = p.amount if p.rate == 1 else (p.amount / p.rate).quantize(decimal.Decimal("0.01"),
                                                                                  rounding=decimal.ROUND_HALF_UP)
        p.ptype = "ACCPAYPAYMENT" if inv.get("Type") == "ACCPAY" else "ACCRECPAYMENT"
        p.status = "AUTHORISED"
        p.created_ms = p.updated_ms = self.now_ms()
        self.seq += 1
        p.seq, p.idempotency_key, p.route = self.seq, key, route
        entry = {"PaymentID": p.id, "Date": ms_date(day_ms(p.day))}
        entry_text = jdump(entry)[:-1] + ',"Amount":' + xero_num(p.amount)
        if p.reference is not None:
            entry_text += ',"Reference":' + jdump(p.reference)
        entry_text += ',"CurrencyRate":' + xero_num(p.rate) + ',"HasAccount":false,"HasValidationErrors":false}'
        self.move_invoice(tenant, rec, p.amount, add=entry_text, paid_day=p.day)
        p.invoice_snapshot = rec.raw
        tenant.payments[p.id.lower()] = p
        return p

    def remove_payment(self, tenant, p):
        """Marks p DELETED and takes it off its invoice (P2.5)."""
        rec = tenant.records["invoices"].get(p.invoice_key)
        p.status = "DELETED"
        if rec is not None:
            self.move_invoice(tenant, rec, -p.amount, drop_id=p.id)
            p.invoice_snapshot = rec.raw
        p.updated_ms = max(self.now_ms(), p.updated_ms + 1)

    def payment_text(self, tenant, p, places, invoice_raw=None, status_attr=None):
        """A payment's JSON (the shape of fixtures/xero/api_get_payment_by_id_response.json), with its invoice
        (invoice_raw, or the invoice as it is now) embedded verbatim."""
        if invoice_raw is None:
            rec = tenant.records["invoices"].get(p.invoice_key)
            invoice_raw = rec.raw if rec is not None else p.invoice_snapshot
        a = p.account
        parts = [f'"PaymentID":{jdump(p.id)}', f'"Date":{jdump(ms_date(day_ms(p.day)))}',
                 f'"BankAmount":{xero_num(p.bank_amount)}', f'"Amount":{xero_num(p.amount)}']
        if p.reference is not None:
            parts.append(f'"Reference":{jdump(p.reference)}')
        parts += [f'"CurrencyRate":{xero_num(p.rate)}', f'"PaymentType":{jdump(p.ptype)}',
                  f'"Status":{jdump(p.status)}',
                  f'"UpdatedDateUTC":{jdump(ms_date(p.updated_ms))}',
                  f'"UpdatedDateUTCString":{jdump(iso_from_ms(p.updated_ms))}',
                  '"HasAccount":true', '"IsReconciled":false',
                  '"Account":' + jdump({"AccountID": a["AccountID"], "Code": a["Code"], "Name": a["Name"]}),
                  '"Invoice":' + round_unit_amounts(invoice_raw, places)]
        if status_attr:
            parts.append(f'"StatusAttributeString":{jdump(status_attr)}')
        parts.append('"HasValidationErrors":false')
        return "{" + ",".join(parts) + "}"

    @staticmethod
    def payment_fields(p):
        """The fields of a payment that a where filter can test."""
        return {"PaymentID": p.id, "Status": p.status, "PaymentType": p.ptype, "Reference": p.reference,
                "Amount": p.amount, "CurrencyRate": p.rate, "IsReconciled": False,
                "Invoice": {"InvoiceID": p.invoice_id, "InvoiceNumber": p.invoice_number},
                "Account": {"AccountID": p.account["AccountID"], "Code": p.account["Code"]}}

    @staticmethod
    def payment_view(p):
        """A payment as GET /_mock/tenants/{id}/payments lists it (amounts as strings: exact)."""
        return {"PaymentID": p.id, "Status": p.status, "InvoiceID": p.invoice_id, "InvoiceNumber": p.invoice_number,
                "Amount": xero_num(p.amount), "CurrencyRate": xero_num(p.rate), "Date": p.day.isoformat(),
                "Reference": p.reference, "Account": p.account["Code"], "PaymentType": p.ptype,
                "created_ms": p.created_ms, "updated_ms": p.updated_ms, "idempotency_key": p.idempotency_key,
                "route": p.route}

    # load documents (POST /_mock/load, --state, --demo) ---------------------------------------
    def load(self, text):
        """Applies a load document, keeping every record's raw text. Returns a summary."""
        text = text.strip().lstrip("\ufeff")
        try:
            top = whole_object(text)
        except ValueError as e:
            raise BadRequest(f"the load document is not a JSON object: {e}") from None

        def sub(key):
            vs, ve, _ = top[key]
            return vs, ve

        summary = {"tenants": 0, "records": 0, "authorisations": []}
        with self.lock:
            if "reset" in top and json.loads(text[slice(*sub("reset"))]) is True:
                self.reset()
            if "app" in top:
                self.update_app(json.loads(text[slice(*sub("app"))]))
            if "tenants" in top:
                vs, _ = sub("tenants")
                try:
                    tspans, _ = object_spans(text, vs)
                except ValueError as e:
                    raise BadRequest(f"tenants must be an object keyed by tenant id: {e}") from None
                for tid, (tvs, tve, _) in tspans.items():
                    try:
                        body, _ = object_spans(text, tvs)
                    except ValueError as e:
                        raise BadRequest(f"tenants.{tid}: {e}") from None
                    name = None
                    for nk in ("tenantName", "name"):
                        if nk in body:
                            name = json.loads(text[body[nk][0] : body[nk][1]])
                    conn = None
                    if "connectionId" in body:
                        conn = json.loads(text[body["connectionId"][0] : body["connectionId"][1]])
                    t = self.tenant(tid, name, connection_id=conn)
                    summary["tenants"] += 1
                    if "organisation" in body:
                        self.put_organisation(t, json.loads(text[body["organisation"][0] : body["organisation"][1]]))
                    if "accounts" in body:
                        self.put_accounts(t, json.loads(text[body["accounts"][0] : body["accounts"][1]]))
                    for kind in KINDS:
                        if kind not in body:
                            continue
                        try:
                            items, _ = array_spans(text, body[kind][0])
                        except ValueError as e:
                            raise BadRequest(f"tenants.{tid}.{kind}: {e}") from None
                        for s, e in items:
                            raw = text[s:e]
                            if raw.startswith('"'):  # a record given as a JSON string of its text
                                raw = json.loads(raw)
                            self.put_record(tid, kind, raw)
                            summary["records"] += 1
            if "authorisations" in top:
                auths = json.loads(text[slice(*sub("authorisations"))])
                if not isinstance(auths, list):
                    raise BadRequest("authorisations must be a list")
                for a in auths:
                    summary["authorisations"].append(self.create_authorisation(a))
            if "faults" in top:
                self.set_faults(json.loads(text[slice(*sub("faults"))]))
        return summary

    # app --------------------------------------------------------------------------------------
    def update_app(self, changes):
        if not isinstance(changes, dict):
            raise BadRequest("the app must be a JSON object")
        app = self.app
        for k, v in changes.items():
            if k not in app:
                raise BadRequest(f"unknown app setting {k!r} (known: {', '.join(sorted(app))})")
            if k == "limits":
                if not isinstance(v, dict):
                    raise BadRequest("limits must be an object")
                for lk, lv in v.items():
                    if lk not in app["limits"]:
                        raise BadRequest(f"unknown limit {lk!r} (known: concurrent, minute, day, appminute)")
                    if not isinstance(lv, int) or isinstance(lv, bool) or lv < 0:
                        raise BadRequest(f"limits.{lk} must be a non-negative integer")
                    app["limits"][lk] = lv
                continue
            cur = app[k]
            if k == "fail_after_commit" and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise BadRequest("fail_after_commit must be a non-negative integer (a count of write calls)")
            if k == "fail_after_commit_mode" and v not in ("drop", "500"):
                raise BadRequest('fail_after_commit_mode must be "drop" or "500"')
            if isinstance(cur, bool):
                if not isinstance(v, bool):
                    raise BadRequest(f"{k} must be true or false")
            elif isinstance(cur, int):
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                    raise BadRequest(f"{k} must be a non-negative number")
            elif isinstance(cur, str):
                if not isinstance(v, str):
                    raise BadRequest(f"{k} must be a string")
            elif k == "redirect_uris":
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise BadRequest("redirect_uris must be a list of strings")
            elif k == "consent_tenants":
                if v is not None and (not isinstance(v, list) or not all(isinstance(x, (str, dict)) for x in v)):
                    raise BadRequest("consent_tenants must be null or a list of tenant ids or {tenantId, tenantName}")
            app[k] = v
        if app["page_size"] < 1:
            raise BadRequest("page_size must be at least 1")

    # authorisations and tokens ----------------------------------------------------------------
    def _tenant_refs(self, refs):
        ids = []
        for ref in refs or []:
            if isinstance(ref, str):
                ref = {"tenantId": ref}
            if not isinstance(ref, dict):
                raise BadRequest("a tenant is a tenant id or {tenantId, tenantName}")
            tid = ref.get("tenantId") or str(uuid.uuid4())
            t = self.tenant(tid, ref.get("tenantName"), connection_id=ref.get("connectionId"))
            ids.append(t.id)
        return ids

    def create_authorisation(self, spec):
        if not isinstance(spec, dict):
            raise BadRequest("an authorisation is a JSON object")
        rt = spec.get("refresh_token") or secrets.token_hex(32)
        at = spec.get("access_token")
        if rt in self.refresh:
            raise BadRequest(f"refresh token {rt!r} already exists", 409)
        if at and at in self.access:
            raise BadRequest(f"access token {at!r} already exists", 409)
        auth = Auth(self._tenant_refs(spec.get("tenants")), spec.get("scope") or DEFAULT_SCOPE, spec.get("authEventId"))
        auth.offline = True  # an authorisation made by a test always has a refresh token
        self.auths[auth.id] = auth
        self.refresh[rt] = {"auth": auth.id, "issued": self.now(), "retired": None, "successor": None}
        out = {"authEventId": auth.id, "refresh_token": rt, "connections": self.connections(auth)}
        if at:
            self.access[at] = {"auth": auth.id, "expires": self.now() + self.app["access_ttl"]}
            out["access_token"] = at
        return out

    def id_token(self, auth):
        def b64(obj):
            return base64.urlsafe_b64encode(jdump(obj).encode()).rstrip(b"=").decode()

        now = int(self.now())
        payload = {
            "iss": "https://identity.xero.com",
            "aud": self.app["client_id"],
            "iat": now,
            "exp": now + 300,
            "sub": auth.user_id,
            "xero_userid": auth.user_id,
            "authentication_event_id": auth.id,
            "email": "demo@example.invalid",
        }
        return b64({"alg": "none", "kid": "xero-mock", "typ": "JWT"}) + "." + b64(payload) + ".xero-mock"

    def issue(self, auth):
        """A new token set for auth (the response of fixtures/xero/oauth_token_refresh_response.json)."""
        at = secrets.token_urlsafe(32)
        expires = self.now() + self.app["access_ttl"]
        self.access[at] = {"auth": auth.id, "expires": expires}
        resp = {"id_token": self.id_token(auth), "access_token": at, "expires_in": int(self.app["access_ttl"]),
                "token_type": "Bearer"}
        if auth.offline:
            rt = secrets.token_hex(32)
            self.refresh[rt] = {"auth": auth.id, "issued": self.now(), "retired": None, "successor": None}
            resp["refresh_token"] = rt
        resp["scope"] = auth.scope
        return resp, expires

    def connections(self, auth):
        out = []
        for tid in auth.tenant_ids:
            t = self.tenant(tid)
            out.append({
                "id": t.connection_id,
                "authEventId": auth.id,
                "tenantId": t.id,
                "tenantType": "ORGANISATION",
                "tenantName": t.name,
                "createdDateUtc": t.created.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0",
                "updatedDateUtc": auth.created.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0",
            })
        return out

    def bearer(self, header):
        """(Auth, None) for a valid access token, else (None, reason)."""
        if not header or not header[:7].lower() == "bearer ":
            return None, "AuthenticationUnsuccessful"
        rec = self.access.get(header[7:].strip())
        if rec is None:
            return None, "AuthenticationUnsuccessful"
        if rec["expires"] <= self.now():
            return None, "TokenExpired"
        auth = self.auths.get(rec["auth"])
        if auth is None or auth.revoked:
            return None, "AuthenticationUnsuccessful"
        return auth, None

    # faults -----------------------------------------------------------------------------------
    FAULT_MODES = ("none", "401", "403", "429", "500", "503", "slow", "drop")

    def set_faults(self, spec):
        rules = spec if isinstance(spec, list) else [spec]
        new = []
        for r in rules:
            if not isinstance(r, dict):
                raise BadRequest("a fault is a JSON object")
            mode = str(r.get("mode", "none"))
            if mode not in self.FAULT_MODES:
                raise BadRequest(f"fault mode must be one of {', '.join(self.FAULT_MODES)}")
            if mode == "none":
                continue
            target = r.get("target", "api")
            if target not in ("api", "token", "any"):
                raise BadRequest("fault target must be api, token or any")
            problem = r.get("problem", "minute")
            if problem not in ("minute", "day", "concurrent", "appminute"):
                raise BadRequest("fault problem must be minute, day, concurrent or appminute")
            count = int(r.get("count", 1))
            new.append({
                "mode": mode,
                "target": target,
                "remaining": None if count == 0 else count,
                "retry_after": int(r.get("retry_after", 1)),
                "problem": problem,
                "delay_ms": int(r.get("delay_ms", 1000 if mode == "slow" else 0)),
                "tenant": r.get("tenant"),
                "path_prefix": r.get("path_prefix"),
                "applied": 0,
            })
        self.faults = new

    def take_fault(self, target, tenant_id, path):
        for f in self.faults:
            if f["target"] != "any" and f["target"] != target:
                continue
            if f["tenant"] and (tenant_id is None or f["tenant"].lower() != tenant_id.lower()):
                continue
            if f["path_prefix"] and not path.lower().startswith(f["path_prefix"].lower()):
                continue
            f["applied"] += 1
            if f["remaining"] is not None:
                f["remaining"] -= 1
                if f["remaining"] <= 0:
                    self.faults.remove(f)
            return dict(f)
        return None

    # rate limits and stats (P2.4) -------------------------------------------------------------
    def stats_for(self, tid):
        s = self.tstats.get(tid.lower())
        if s is None:
            s = self.tstats[tid.lower()] = CallStats()
        return s

    def begin_call(self, tenant_id, method, path, query, ims, auth_id=None):
        """Records an authenticated API attempt (by the authorisation auth_id) and decides whether the limits
        admit it."""
        m = self.mono()
        app, L = self.appstats, self.app["limits"]
        tk = Ticket()
        tk.tenant, tk.method, tk.path, tk.query, tk.ims = tenant_id, method, path, query, ims
        tk.auth = auth_id
        tk.fault, tk.ended = None, False
        tk.t_ms = self.now_ms()
        route = f"{method} {path}"
        for s in (app,) + ((self.stats_for(tenant_id),) if tenant_id else ()):
            s.calls_total += 1
            s.attempts.q.append(m)
            s.max_window = max(s.max_window, s.attempts.count(m))
            s.inflight += 1
            s.max_concurrent = max(s.max_concurrent, s.inflight)
            s.by_path[route] = s.by_path.get(route, 0) + 1
        ts = self.stats_for(tenant_id) if tenant_id else None
        tk.tstats = ts
        problem, retry = None, None
        if ts is not None:
            if ts.adm_day.count(m) >= L["day"]:
                problem, retry = "day", (ts.adm_day.q[0] + DAY - m) if ts.adm_day.q else 1
            elif ts.adm_min.count(m) >= L["minute"]:
                problem, retry = "minute", (ts.adm_min.q[0] + MINUTE - m) if ts.adm_min.q else 1
            elif ts.adm_inflight >= L["concurrent"]:
                problem, retry = "concurrent", 1
        if problem is None and app.adm_min.count(m) >= L["appminute"]:
            problem, retry = "appminute", (app.adm_min.q[0] + MINUTE - m) if app.adm_min.q else 1
        if problem is not None:
            owner = app if problem == "appminute" else ts
            owner.over_limit += 1
            owner.over_by_problem[problem] = owner.over_by_problem.get(problem, 0) + 1
        tk.problem = problem
        tk.retry_after = max(1, math.ceil(retry)) if retry is not None else None
        tk.admitted = problem is None or not self.app["enforce_limits"]
        if tk.admitted:
            for s in (app,) + ((ts,) if ts else ()):
                s.adm_min.q.append(m)
                s.adm_day.q.append(m)
                s.adm_inflight += 1
        h = {"X-AppMinLimit-Remaining": max(0, L["appminute"] - app.adm_min.count(m))}
        if ts is not None:
            h["X-DayLimit-Remaining"] = max(0, L["day"] - ts.adm_day.count(m))
            h["X-MinLimit-Remaining"] = max(0, L["minute"] - ts.adm_min.count(m))
        tk.headers = h
        return tk

    def end_call(self, tk, status, note=None):
        """Called once per ticket, before the response is written, so that a client that sends its
        next call as soon as it has a reply is never seen as one call too concurrent."""
        if tk.ended:
            return
        tk.ended = True
        app, ts = self.appstats, tk.tstats
        for s in (app,) + ((ts,) if ts else ()):
            s.inflight -= 1
            if tk.admitted:
                s.adm_inflight -= 1
            key = str(status)
            s.statuses[key] = s.statuses.get(key, 0) + 1
        if status == 429:
            owner = ts if (ts is not None and (tk.problem != "appminute" or tk.fault)) else app
            if tk.fault:
                owner.sent_429_fault += 1
            else:
                owner.sent_429_limit += 1
        self.log.append({
            "t_ms": tk.t_ms, "method": tk.method, "path": tk.path, "query": tk.query, "tenant": tk.tenant,
            "status": status, "problem": tk.problem, "fault": tk.fault["mode"] if tk.fault else None,
            "if_modified_since": tk.ims, "auth": tk.auth, "note": note,
        })

    def stats(self):
        tenants = {}
        for tid, s in self.tstats.items():
            t = self.tenants.get(tid)
            tenants[t.id if t else tid] = s.as_json()
        app = self.appstats.as_json()
        app["max_calls_per_minute"] = app["max_calls_in_any_60s_window"]
        violations = self.appstats.over_limit + sum(s.over_limit for s in self.tstats.values())
        return {
            "violations": violations,
            "limits": dict(self.app["limits"]),
            "enforce_limits": self.app["enforce_limits"],
            "tenants": tenants,
            "app": app,
            "oauth": dict(self.oauth),
            "unauthorised": dict(self.unauthorised),
            "missing_scope": self.missing_scope,
            "payments": json.loads(jdump(self.pay)),
            "faults_pending": [dict(f) for f in self.faults],
        }


STATE = MockState()
QUIET = False


# ---------------------------------------------------------------------------------------------------
# Demo data (--demo): the fixtures of fixtures/xero/ under one tenant


DEMO_TENANT = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"  # the tenant of fixtures/xero/webhook_contact_update.json
DEMO_WEBHOOK_CONTACT = "717f2bfc-c6d4-41fd-b238-3f2f0c0cf777"  # its resourceId
# Xero's fixtures have no credit note: this one follows the CreditNote schema of xero_accounting.yaml.
# Its amounts keep trailing zeros (14.20) and four-place unit amounts on purpose.
DEMO_CREDIT_NOTE = """{
  "Type": "ACCRECCREDIT",
  "CreditNoteID": "7df8949c-b71f-40c0-bbcf-39f2f450f286",
  "CreditNoteNumber": "CN-0001",
  "Reference": "Damaged part",
  "Contact": {"ContactID": "8138a266-fb42-49b2-a104-014b7045753d", "Name": "Acme Parts Co."},
  "DateString": "2019-03-11T00:00:00",
  "Date": "/Date(1552262400000+0000)/",
  "Status": "AUTHORISED",
  "LineAmountTypes": "Exclusive",
  "LineItems": [
    {"LineItemID": "5a0b4b0e-3c9c-4d53-9f1c-4b4a3e1f2c11", "Description": "Refund for damaged part",
     "Quantity": 1.0000, "UnitAmount": 12.3456, "TaxType": "OUTPUT2", "TaxAmount": 1.85,
     "LineAmount": 12.35, "AccountCode": "200", "Tracking": []}
  ],
  "SubTotal": 12.35,
  "TotalTax": 1.85,
  "Total": 14.20,
  "RemainingCredit": 14.20,
  "Allocations": [],
  "Payments": [],
  "UpdatedDateUTC": "/Date(1552329729002+0000)/",
  "CurrencyCode": "NZD",
  "CurrencyRate": 1.0,
  "HasAttachments": false
}"""


def fixture_records(path, collection):
    """The raw texts of the records in a fixture envelope, exactly as they are in the file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    top = whole_object(text.strip())
    text = text.strip()
    items, _ = array_spans(text, top[collection][0])
    return [text[s:e] for s, e in items]


def demo_document(fixtures):
    def fx(name):
        return os.path.join(fixtures, name)

    invoices = fixture_records(fx("api_get_invoice_by_id_response.json"), "Invoices")
    invoices += fixture_records(fx("api_get_invoices_list_response.json"), "Invoices")
    contacts = fixture_records(fx("api_get_contact_by_id_response.json"), "Contacts")
    contacts += fixture_records(fx("api_get_contacts_list_response.json"), "Contacts")
    # the contact the webhook fixture names: the single-contact fixture under that ContactID
    contacts.append(set_top_key(contacts[0], "ContactID", json.dumps(DEMO_WEBHOOK_CONTACT)))
    with open(fx("api_get_connections_response.json"), encoding="utf-8") as f:
        conn = json.load(f)[0]
    doc = {
        "app": {"client_id": "demo-client", "client_secret": "demo-secret"},
        "tenants": {DEMO_TENANT: {"tenantName": conn["tenantName"], "connectionId": conn["id"]}},
        "authorisations": [{"refresh_token": "demo-refresh-token",
                            "tenants": [{"tenantId": DEMO_TENANT, "tenantName": conn["tenantName"]}]}],
    }
    text = jdump(doc)
    # splice the raw records in (jdump would reformat their numbers)
    lists = ",".join(
        f'"{kind}":[{",".join(recs)}]'
        for kind, recs in (("invoices", invoices), ("contacts", contacts), ("creditnotes", [DEMO_CREDIT_NOTE]))
    )
    marker = '"connectionId":' + json.dumps(conn["id"])
    return text.replace(marker, marker + "," + lists, 1)


# ---------------------------------------------------------------------------------------------------
# HTTP


def list_window(items, q, ims, default_size):
    """What a list GET returns of items (records or payments, each with updated_ms and seq): those changed after
    If-Modified-Since, in UpdatedDateUTC order (order=UpdatedDateUTC DESC reverses it), and one page of them when
    the query asks for page (P2.2). q is a query_dict. Returns (items, pagination or None)."""
    if ims:
        try:
            since = parse_when(ims)
        except ValueError as e:
            raise BadRequest(f"If-Modified-Since: {e}") from None
        items = [x for x in items if x.updated_ms > since]
    order = (q.get("order") or [""])[-1].strip().lower()
    desc = order.startswith("updateddateutc") and order.endswith("desc")
    items = sorted(items, key=lambda x: (x.updated_ms, x.seq), reverse=desc)
    if "page" not in q:
        return items, None
    try:
        page = int(q["page"][-1])
        size = int(q["pagesize"][-1]) if "pagesize" in q else default_size
    except ValueError:
        raise BadRequest("page and pageSize must be integers") from None
    if page < 1 or size < 1 or size > 1000:
        raise BadRequest("page must be >= 1 and pageSize between 1 and 1000")
    total = len(items)
    pagination = {"page": page, "pageSize": size, "pageCount": math.ceil(total / size), "itemCount": total}
    return items[(page - 1) * size : page * size], pagination


def is_loopback(addr):
    return addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1") or addr.startswith("::ffff:127.")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "xero-mock/1.0"

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):  # noqa: D401 (BaseHTTPRequestHandler's hook)
        if not QUIET:
            sys.stderr.write("xero-mock: %s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    # plumbing ---------------------------------------------------------------------------------
    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def reply(self, status, body=b"", ctype="application/json; charset=utf-8", headers=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if status not in (204, 304):
            if body:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and status not in (204, 304):
            self.wfile.write(body)

    def reply_json(self, status, obj, headers=None):
        self.reply(status, jdump(obj) + "\n", headers=headers)

    def drop(self):
        """Closes the connection without a response (a lost response)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def dispatch(self, method):
        try:
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            body = self.read_body()
            low = path.lower()
            if low.startswith("/_mock/") or low == "/_mock":
                self.control(method, path, url.query, body)
            elif low == "/connect/token" and method == "POST":
                self.token(body)
            elif low == "/connect/revocation" and method == "POST":
                self.revocation(body)
            elif low == "/identity/connect/authorize" and method == "GET":
                self.authorize(url.query)
            elif low == "/connections" or low.startswith("/connections/") or low.startswith("/api.xro/2.0/"):
                self.api(method, path, url.query, body)
            else:
                self.reply(404, "The resource you're looking for cannot be found\n", "text/plain; charset=utf-8")
        except BadRequest as e:
            self.reply_json(e.status, {"error": "mock_bad_request", "message": str(e)})
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 (a bug of the mock: say so loudly, keep serving)
            sys.stderr.write("xero-mock: internal error\n" + traceback.format_exc())
            try:
                self.reply(500, "xero-mock internal error (see its stderr)\n", "text/plain; charset=utf-8",
                           {"X-Mock-Internal-Error": "1"})
            except OSError:
                self.close_connection = True

    # identity: POST /connect/token (P2.3) -----------------------------------------------------
    def client_credentials(self, form):
        """(client_id, client_secret) from HTTP Basic or the body; raises on a malformed header."""
        cid = sec = None
        h = self.headers.get("Authorization", "")
        if h[:6].lower() == "basic ":
            try:
                dec = base64.b64decode(h[6:].strip(), validate=True).decode("utf-8")
                u, _, p = dec.partition(":")
                cid, sec = unquote_plus(u), unquote_plus(p)  # RFC 6749 2.3.1: form-encoded, then base64
            except ValueError:
                return None, None
            if form.get("client_id") not in (None, cid):
                return None, None
        else:
            cid, sec = form.get("client_id"), form.get("client_secret")
        return cid, sec

    def token_error(self, status, error):
        st = STATE
        if error == "invalid_grant":
            st.oauth["invalid_grant"] += 1
        elif error == "invalid_client":
            st.oauth["invalid_client"] += 1
        return status, {"error": error}

    def token(self, body):
        st = STATE
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":  # P2.3: a form-encoded POST
            with st.lock:
                st.oauth["token_requests"] += 1
            return self.reply_json(400, {"error": "invalid_request"})
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        with st.lock:
            st.oauth["token_requests"] += 1
            fault = st.take_fault("token", None, "/connect/token")
        if fault:
            if fault["delay_ms"]:
                time.sleep(fault["delay_ms"] / 1000.0)
            mode = fault["mode"]
            if mode in ("500", "503"):
                return self.reply(int(mode), '{"error":"server_error"}\n', headers={"X-Mock-Fault": mode})
            if mode == "429":
                return self.reply(429, RATE_LIMIT_BODY, "text/html; charset=utf-8",
                                  {"Retry-After": fault["retry_after"], "X-Rate-Limit-Problem": fault["problem"],
                                   "X-Mock-Fault": "429"})
            if mode == "401":
                return self.reply_json(401, {"error": "invalid_client"}, {"X-Mock-Fault": "401"})
        with st.lock:
            status, obj = self.token_grant(form)
        if fault and fault["mode"] == "drop":  # processed (a refresh token may have rotated), reply lost
            return self.drop()
        self.reply(status, jdump(obj), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def token_grant(self, form):
        st = STATE
        app = st.app
        cid, sec = self.client_credentials(form)
        if not (cid is not None and sec is not None and hmac.compare_digest(cid, app["client_id"])
                and hmac.compare_digest(sec, app["client_secret"])):
            return self.token_error(401, "invalid_client")
        grant = form.get("grant_type")
        now = st.now()
        if grant == "authorization_code":
            c = st.codes.get(form.get("code", ""))
            if c is None or c["used"] or c["expires"] <= now or c["redirect_uri"] != form.get("redirect_uri"):
                return self.token_error(400, "invalid_grant")
            if c["challenge"]:
                v = form.get("code_verifier", "")
                if c["method"] == "S256":
                    v = base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()
                if not hmac.compare_digest(v, c["challenge"]):
                    return self.token_error(400, "invalid_grant")
            c["used"] = True
            auth = Auth(c["tenants"], c["scope"])
            st.auths[auth.id] = auth
            resp, _ = st.issue(auth)
            st.oauth["code_exchanges"] += 1
            return 200, resp
        if grant == "refresh_token":
            rt = form.get("refresh_token", "")
            rec = st.refresh.get(rt)
            auth = st.auths.get(rec["auth"]) if rec else None
            if rec is None or auth is None or auth.revoked:
                return self.token_error(400, "invalid_grant")
            if rec["retired"] is None:
                if now - rec["issued"] > app["refresh_ttl"]:
                    return self.token_error(400, "invalid_grant")
                resp, expires = st.issue(auth)
                rec["retired"] = now
                rec["successor"] = (resp, expires)
                st.oauth["token_refreshes"] += 1
                return 200, resp
            # Retired: P2.3 grace period. The retry gets the very pair its first use issued, so two
            # racing refreshers (or a client whose response was lost) end up with the same tokens.
            if now - rec["retired"] <= app["grace"]:
                resp, expires = rec["successor"]
                resp = dict(resp)
                if expires - now < 1:  # that access token has (all but) lapsed: a new one, same refresh token
                    at = secrets.token_urlsafe(32)
                    expires = now + app["access_ttl"]
                    st.access[at] = {"auth": auth.id, "expires": expires}
                    resp["access_token"] = at
                    rec["successor"] = (dict(resp), expires)
                resp["expires_in"] = max(0, int(expires - now))
                st.oauth["grace_replays"] += 1
                return 200, resp
            return self.token_error(400, "invalid_grant")
        if not grant:
            return 400, {"error": "invalid_request"}
        return 400, {"error": "unsupported_grant_type"}

    def revocation(self, body):
        st = STATE
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        with st.lock:
            cid, sec = self.client_credentials(form)
            if not (cid == st.app["client_id"] and sec == st.app["client_secret"]):
                status, obj = self.token_error(401, "invalid_client")
                return self.reply_json(status, obj)
            rec = st.refresh.get(form.get("token", ""))
            if rec and rec["auth"] in st.auths:
                st.auths[rec["auth"]].revoked = True
                st.oauth["revocations"] += 1
        self.reply(200)

    # login: GET /identity/connect/authorize (P2.3) --------------------------------------------
    def authorize(self, query):
        st = STATE
        q = dict(parse_qsl(query, keep_blank_values=True))
        with st.lock:
            app = st.app
            if q.get("client_id") != app["client_id"]:
                return self.reply(400, "unauthorized_client: unknown client_id\n", "text/plain; charset=utf-8")
            redirect = q.get("redirect_uri", "")
            if not redirect or (app["redirect_uris"] and redirect not in app["redirect_uris"]):
                return self.reply(400, "invalid_request: redirect_uri is missing or not registered\n",
                                  "text/plain; charset=utf-8")
            sep = "&" if "?" in redirect else "?"
            extra = {"state": q["state"]} if "state" in q else {}
            if q.get("response_type") != "code":
                loc = redirect + sep + urlencode({"error": "unsupported_response_type", **extra})
                return self.reply(302, headers={"Location": loc})
            if app["consent_tenants"] is not None:
                tenant_ids = st._tenant_refs(app["consent_tenants"])
            else:
                tenant_ids = [t.id for t in st.tenants.values()]
                if not tenant_ids:  # nothing known yet: one new organisation
                    tenant_ids = [st.tenant(str(uuid.uuid4()), "Demo Company (NZ)").id]
            scope = q.get("scope") or DEFAULT_SCOPE
            code = secrets.token_urlsafe(32)
            st.codes[code] = {"redirect_uri": redirect, "scope": scope, "tenants": tenant_ids, "used": False,
                              "expires": st.now() + app["code_ttl"], "challenge": q.get("code_challenge"),
                              "method": q.get("code_challenge_method", "plain")}
            st.oauth["codes_issued"] += 1
            loc = redirect + sep + urlencode({"code": code, "scope": scope, **extra,
                                              "session_state": secrets.token_hex(16)})
        self.reply(302, headers={"Location": loc})

    # api: /connections and /api.xro/2.0 (P2.2, P2.3, P2.4) ----------------------------------
    def api_error(self, status, detail):
        return self.reply_json(status, {
            "Type": None, "Title": "Unauthorized" if status == 401 else "Forbidden", "Status": status,
            "Detail": detail, "Instance": str(uuid.uuid4()), "Extensions": {},
        }, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else None)

    @staticmethod
    def route_of(method, path):
        """(scopes the route needs or None, the payment write route or None) of an API path."""
        parts = [p for p in path.lower().split("/") if p]
        if len(parts) < 3 or parts[0] != "api.xro":
            return None, None
        res = parts[2]
        if res == "payments":
            if method == "GET":
                return SCOPES_PAYMENTS_READ, None
            write = None
            if len(parts) == 3 and method in ("PUT", "POST"):
                write = f"{method} /Payments"
            elif len(parts) == 4 and method == "POST":
                write = "POST /Payments/{PaymentID}"
            return SCOPES_PAYMENTS_WRITE, write
        if res in ("accounts", "organisation"):
            return SCOPES_SETTINGS_READ, None
        return None, None

    def api(self, method, path, query, body=b""):
        st = STATE
        low = path.lower()
        ims = self.headers.get("If-Modified-Since")
        with st.lock:
            auth, why = st.bearer(self.headers.get("Authorization"))
            if auth is None:
                st.unauthorised["401"] += 1
                return self.api_error(401, why)
            tenant_id = None
            if not low.startswith("/connections"):
                hdr = (self.headers.get("xero-tenant-id") or "").strip().lower()
                ids = {t.lower() for t in auth.tenant_ids}
                if not hdr or hdr not in ids:
                    st.unauthorised["403"] += 1
                    return self.api_error(403, "AuthenticationUnsuccessful")
                tenant_id = st.tenants[hdr].id
            scopes, write = self.route_of(method, path)
            if scopes and not set(scopes) & set(auth.scope.split()):  # P2.3: the token lacks the scope
                st.unauthorised["401"] += 1
                st.missing_scope += 1
                return self.reply_json(401, {"Type": None, "Title": "Unauthorized", "Status": 401,
                                             "Detail": "AuthorizationUnsuccessful", "Instance": str(uuid.uuid4()),
                                             "Extensions": {}})
            tk = st.begin_call(tenant_id, method, path, query, ims, auth.id)
            if write:
                st.pay["writes_by_route"][write] += 1
            if tk.admitted:
                tk.fault = st.take_fault("api", tenant_id, path)
        headers = {k: v for k, v in tk.headers.items()}
        headers["Xero-Correlation-Id"] = str(uuid.uuid4())
        if not tk.admitted:  # over a real limit
            headers["Retry-After"] = tk.retry_after
            headers["X-Rate-Limit-Problem"] = tk.problem
            with st.lock:
                st.end_call(tk, 429)
            return self.reply(429, RATE_LIMIT_BODY, "text/html; charset=utf-8", headers)
        f = tk.fault
        if f:
            headers["X-Mock-Fault"] = f["mode"]
            if f["delay_ms"]:
                time.sleep(f["delay_ms"] / 1000.0)  # the lock is not held: concurrency is real
            if f["mode"] == "drop":
                with st.lock:
                    st.end_call(tk, "drop")
                return self.drop()
            if f["mode"] == "429":
                headers["Retry-After"] = f["retry_after"]
                headers["X-Rate-Limit-Problem"] = f["problem"]
                remaining = {"minute": "X-MinLimit-Remaining", "day": "X-DayLimit-Remaining",
                             "appminute": "X-AppMinLimit-Remaining"}.get(f["problem"])
                if remaining:
                    headers[remaining] = 0
                with st.lock:
                    st.end_call(tk, 429)
                return self.reply(429, RATE_LIMIT_BODY, "text/html; charset=utf-8", headers)
            if f["mode"] in ("500", "503"):
                with st.lock:
                    st.end_call(tk, int(f["mode"]))
                body = {"ErrorNumber": int(f["mode"]), "Type": "InternalServerError" if f["mode"] == "500"
                        else "ServiceUnavailable", "Message": "mock fault"}
                return self.reply(int(f["mode"]), jdump(body), headers=headers)
            if f["mode"] == "401":
                with st.lock:
                    st.end_call(tk, 401)
                return self.reply(401, jdump({"Type": None, "Title": "Unauthorized", "Status": 401,
                                              "Detail": "TokenExpired", "Instance": str(uuid.uuid4()),
                                              "Extensions": {}}), headers=headers)
            if f["mode"] == "403":  # e.g. a scope the connection lacks: retrying the same call cannot help
                with st.lock:
                    st.end_call(tk, 403)
                return self.reply(403, jdump({"Type": None, "Title": "Forbidden", "Status": 403,
                                              "Detail": "AuthorizationUnsuccessful", "Instance": str(uuid.uuid4()),
                                              "Extensions": {}}), headers=headers)
        with st.lock:
            self.after_commit, self.extra_headers, self.call_note = None, {}, None
            try:
                status, out, ctype = self.api_response(method, path, query, auth, tenant_id, ims, body)
            except BadRequest as e:
                status, ctype = e.status, "application/json; charset=utf-8"
                out = jdump({"ErrorNumber": 10, "Type": "ValidationException", "Message": str(e)})
            except Exception:
                st.end_call(tk, 500, "internal")
                raise
            if write and status == 400:
                st.pay["rejected_400"] += 1
            lost = self.after_commit
            st.end_call(tk, {"drop": "drop", "500": 500}.get(lost, status),
                        "fail_after_commit" if lost else self.call_note)
        headers.update(self.extra_headers)
        if lost == "drop":  # committed, and the answer is lost: the client must retry with its Idempotency-Key
            return self.drop()
        if lost == "500":
            headers["X-Mock-Fault"] = "fail_after_commit"
            return self.reply(500, jdump({"ErrorNumber": 500, "Type": "InternalServerError", "Message": "mock fault"}),
                              headers=headers)
        self.reply(status, out, ctype, headers)

    def envelope(self, collection, records, pagination=None):
        st = STATE
        app = st.app
        ms = ms_date(st.now_ms(), offset=False)
        head = (f'{{"Id":"{uuid.uuid4()}","Status":"OK","ProviderName":{json.dumps(app["provider_name"])},'
                f'"DateTimeUTC":{json.dumps(ms)}')
        if pagination:
            head += ',"pagination":' + jdump(pagination)
        return self.finish(head + f',"{collection}":[' + ",".join(records) + "]}")

    @staticmethod
    def finish(text):
        """An API body as it goes on the wire: \\/Date escaped and, if asked, pretty with CRLF (P2.2)."""
        app = STATE.app
        if app["escape_slashes"]:
            text = escape_dates(text)
        if app["pretty"]:
            text = pretty_crlf(text)
        return text

    def api_response(self, method, path, query, auth, tenant_id, ims, body=b""):
        """(status, body, content type) of an admitted API call; runs under the lock."""
        st = STATE
        parts = [unquote(p) for p in path.split("/") if p]
        text_404 = ("The resource you're looking for cannot be found\n", "text/plain; charset=utf-8")
        if parts[0].lower() == "connections":
            if len(parts) == 1 and method == "GET":
                qs = dict(parse_qsl(query))
                conns = [c for c in st.connections(auth)
                         if not qs.get("authEventId") or c["authEventId"] == qs["authEventId"]]
                return 200, jdump(conns), "application/json; charset=utf-8"
            if len(parts) == 2 and method == "DELETE":
                for tid in list(auth.tenant_ids):
                    if st.tenant(tid).connection_id.lower() == parts[1].lower():
                        auth.tenant_ids.remove(tid)
                        return 204, b"", ""
                return (404,) + text_404
            return 405, jdump({"error": "method not allowed"}), "application/json; charset=utf-8"
        # /api.xro/2.0/<Collection>[/<id>]
        rest = parts[2:]
        tenant = st.tenant(tenant_id)
        if rest and rest[0].lower() == "organisation" and len(rest) == 1 and method == "GET":
            org = jdump(st.organisation_json(tenant))
            return 200, self.envelope("Organisations", [org]), "application/json; charset=utf-8"
        if rest and rest[0].lower() == "payments" and len(rest) <= 2:
            return self.api_payments(method, rest, query, tenant, ims, body)
        if rest and rest[0].lower() == "accounts" and len(rest) <= 2:
            return self.api_accounts(method, rest, query, tenant)
        kind = COLLECTIONS.get(rest[0].lower()) if rest else None
        if kind is None or len(rest) > 2:
            return (404,) + text_404
        if method != "GET":
            return (501, jdump({"ErrorNumber": 501, "Type": "NotImplemented",
                                "Message": f"xero-mock serves only GET on {KINDS[kind]['collection']}"}),
                    "application/json; charset=utf-8")
        spec = KINDS[kind]
        table = tenant.records[kind]
        app = st.app
        q = self.query_dict(query)
        # P2.5: unit amounts have 2 decimals unless the call asks for unitdp=4
        places = 4 if (q.get("unitdp") or [""])[-1].strip() == "4" else 2

        def served(raw):
            return round_unit_amounts(raw, places) if spec["lines"] else raw

        if len(rest) == 2:  # a single record, by ID (or by number, as Xero allows)
            key = rest[1].lower()
            r = table.get(key)
            if r is None:
                r = next((x for x in table.values() if x.number is not None and x.number == rest[1]), None)
            if r is None:
                return (404,) + text_404
            if kind == "invoices" and "application/pdf" in (self.headers.get("Accept") or "").lower():
                return 200, invoice_pdf(tenant.id, r), "application/pdf"  # PROVIDERS.md 2.6: Accept picks the PDF
            return 200, self.envelope(spec["collection"], [served(r.raw)]), "application/json; charset=utf-8"
        recs = list(table.values())
        if "ids" in q:
            wanted = {x.strip().lower() for v in q["ids"] for x in v.split(",") if x.strip()}
            recs = [r for r in recs if r.key in wanted]
        recs, pagination = list_window(recs, q, ims, app["page_size"])
        raws = [served(r.raw) for r in recs]
        if pagination is None and spec["lines"] and app["strip_lineitems_unpaged"]:
            raws = [remove_top_key(x, "LineItems") for x in raws]
        return 200, self.envelope(spec["collection"], raws, pagination), "application/json; charset=utf-8"

    # api: /Payments and /Accounts (P2.5) -------------------------------------------------------
    JS = "application/json; charset=utf-8"
    NOT_FOUND = (404, "The resource you're looking for cannot be found\n", "text/plain; charset=utf-8")

    @staticmethod
    def query_dict(query):
        q = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            q.setdefault(k.lower(), []).append(v)
        return q

    def api_payments(self, method, rest, query, tenant, ims, body):
        st = STATE
        q = self.query_dict(query)
        places = 4 if (q.get("unitdp") or [""])[-1].strip() == "4" else 2
        if method == "GET":
            if len(rest) == 2:
                p = tenant.payments.get(rest[1].lower())
                if p is None:
                    return self.NOT_FOUND
                return 200, self.envelope("Payments", [st.payment_text(tenant, p, places)]), self.JS
            pays = list(tenant.payments.values())
            if (q.get("where") or [""])[-1].strip():
                terms = parse_where(q["where"][-1])
                pays = [p for p in pays if where_match(st.payment_fields(p), terms)]
            pays, pagination = list_window(pays, q, ims, st.app["page_size"])
            texts = [st.payment_text(tenant, p, places) for p in pays]
            return 200, self.envelope("Payments", texts, pagination), self.JS
        if len(rest) == 1 and method in ("PUT", "POST"):
            route = f"{method} /Payments"
            sv = (q.get("summarizeerrors") or [None])[-1]
            summarize = st.app["summarize_errors_default"] if sv is None else sv.strip().lower() != "false"
            return self.idempotent(tenant, route, f"{route}?summarizeErrors={summarize}", body,
                                   lambda key: self.payments_create(tenant, route, body, summarize, places, key))
        if len(rest) == 2 and method == "POST":
            return self.idempotent(tenant, "POST /Payments/{PaymentID}", f"POST /Payments/{rest[1].lower()}", body,
                                   lambda key: self.payment_delete(tenant, rest[1], body, places))
        # [unverified] what Xero answers; it has no DELETE on payments (XeroAPI/Xero-NetStandard #113)
        return 405, f"xero-mock: no {method} on /Payments{'/{PaymentID}' if len(rest) == 2 else ''}\n", \
            "text/plain; charset=utf-8"

    def idempotent(self, tenant, route, what, body, run):
        """Runs run(key) under the call's Idempotency-Key (P2.5): the first answer is kept for idempotency_ttl
        seconds and replayed, byte for byte, to the same request; the same key on another request gets a 400."""
        st = STATE
        key = self.headers.get("Idempotency-Key")
        if not key:
            return run(None)
        stats = st.pay["idempotency"]
        if len(key) > IDEMPOTENCY_KEY_MAX:  # [unverified] wording and status
            stats["too_long"] += 1
            return self.validation_message(f"The Idempotency-Key must be {IDEMPOTENCY_KEY_MAX} characters or fewer")
        now = st.now()
        saved = tenant.idem.get(key)
        if saved is not None and now - saved["t"] >= st.app["idempotency_ttl"]:
            del tenant.idem[key]
            stats["expired"] += 1
            saved = None
        fp = hashlib.sha256(what.encode() + b"\n" + canonical_body(body)).hexdigest()
        if saved is not None:
            if saved["fp"] == fp:
                stats["replayed"] += 1
                self.extra_headers["X-Mock-Idempotent-Replay"] = "true"
                self.call_note = "idempotent_replay"
                return saved["status"], saved["body"], saved["ctype"]
            stats["mismatch"] += 1  # [unverified] wording and status
            self.call_note = "idempotency_mismatch"
            return self.validation_message("The Idempotency-Key has already been used for a different request")
        status, out, ctype = run(key)
        tenant.idem[key] = {"fp": fp, "status": status, "body": out, "ctype": ctype, "t": now, "route": route}
        stats["saved"] += 1
        return status, out, ctype

    def commit_fault(self):
        """After a write that committed: the fail_after_commit switch loses its answer."""
        app = STATE.app
        if app["fail_after_commit"] > 0:
            app["fail_after_commit"] -= 1
            STATE.pay["fail_after_commit"] += 1
            self.after_commit = app["fail_after_commit_mode"]

    def post_data_invalid(self, detail):
        """Xero's answer to a body it cannot read (XeroAPI/xero-php-oauth2 #39: ErrorNumber 14)."""
        return 400, self.finish(jdump({"ErrorNumber": 14, "Type": "PostDataInvalidException",
                                       "Message": "JSON for post data was invalid," + detail})), self.JS

    def validation_message(self, message):
        """A 400 ValidationException without elements."""
        return 400, self.finish(jdump({"ErrorNumber": 10, "Type": "ValidationException", "Message": message})), self.JS

    def validation_body(self, elements):
        """The 400 of fixtures/xero/api_400_validation_error_contacts_put.json around elements (JSON texts)."""
        return self.finish('{"ErrorNumber":10,"Type":"ValidationException","Message":"A validation exception occurred",'
                           '"Elements":[' + ",".join(elements) + "]}")

    @staticmethod
    def error_element(raw, errs, status_attr=None, pid=ZERO_GUID):
        """A request element echoed verbatim with its validation result, as Xero returns elements it did not
        make (PaymentID all zeros, as in the 400 fixture)."""
        raw = set_top_key(raw, "PaymentID", jdump(pid))
        if status_attr:
            raw = set_top_key(raw, "StatusAttributeString", jdump(status_attr))
        raw = set_top_key(raw, "HasValidationErrors", "true" if errs else "false")
        return set_top_key(raw, "ValidationErrors", jdump([{"Message": m} for m in errs]))

    def body_elements(self, body):
        """The raw text of each payment in a body ({"Payments":[...]}, or one payment without the envelope), or
        a 400 (status, body, type) for a body that is not that."""
        try:
            text = body.decode("utf-8").lstrip("\ufeff").strip()
            top = whole_object(text)
        except (UnicodeDecodeError, ValueError) as e:
            return self.post_data_invalid(f" {e}")
        if "Payments" in top:
            try:
                items, _ = array_spans(text, top["Payments"][0])
            except ValueError:
                return self.post_data_invalid(" Payments must be an array")
            elems = [text[s:e] for s, e in items]
        else:
            elems = [text]
        if not elems:
            return self.post_data_invalid(" no payment was given")
        if not all(e.startswith("{") for e in elems):
            return self.post_data_invalid(" each payment must be an object")
        return elems

    def payments_create(self, tenant, route, body, summarize, places, key):
        """PUT/POST /Payments (P2.5). Elements are applied in order, so two payments of one invoice in one call
        see each other. summarizeErrors=false: 200 with each element made or carrying its ValidationErrors.
        summarizeErrors=true and an element failed: 400 ValidationException; the valid elements are still made
        (as observed of Xero, see the README) unless summarize_errors_atomic is set."""
        st = STATE
        st.pay["executed"] += 1
        elems = self.body_elements(body)
        if isinstance(elems, tuple):
            return elems
        table = tenant.records["invoices"]
        before = {}  # invoice key -> (raw, updated_ms) before this call: the atomic rollback
        results = []  # (raw element, messages, payment, the invoice's text right after it)
        for raw in elems:
            errs, ctx = st.check_payment(tenant, _DEC.decode(raw))
            if errs:
                results.append((raw, errs, None, None))
                continue
            rec = ctx["invoice"]
            before.setdefault(rec.key, (rec.raw, rec.updated_ms))
            p = st.add_payment(tenant, ctx, key, route)
            results.append((raw, [], p, rec.raw))
        made = [r[2] for r in results if r[2] is not None]
        failed = sum(1 for r in results if r[1])
        st.pay["element_errors"] += failed
        if summarize and failed:
            if st.app["summarize_errors_atomic"]:
                for k, (raw, upd) in before.items():
                    if k in table:
                        table[k].raw, table[k].updated_ms = raw, upd
                for p in made:
                    tenant.payments.pop(p.id.lower(), None)
                made = []
            st.pay["created"] += len(made)
            if made:
                self.commit_fault()
            return 400, self.validation_body([self.error_element(raw, errs) for raw, errs, _, _ in results]), self.JS
        st.pay["created"] += len(made)
        if made:
            self.commit_fault()
        out = []
        for raw, errs, p, inv_raw in results:
            if errs:
                out.append(self.error_element(raw, errs, "ERROR"))
            else:  # [unverified] that made elements say OK when summarizeErrors=false
                out.append(st.payment_text(tenant, p, places, inv_raw, None if summarize else "OK"))
        return 200, self.envelope("Payments", out), self.JS

    def payment_delete(self, tenant, pid, body, places):
        """POST /Payments/{PaymentID} with {"Payments":[{"Status":"DELETED"}]} (or the bare {"Status":"DELETED"}
        of the spec's PaymentDelete) (P2.5)."""
        st = STATE
        st.pay["executed"] += 1
        p = tenant.payments.get(pid.lower())
        if p is None:
            return self.NOT_FOUND
        elems = self.body_elements(body)
        if isinstance(elems, tuple):
            return elems
        if len(elems) != 1:
            return self.post_data_invalid(" delete one payment per call")
        raw = elems[0]
        elem = _DEC.decode(raw)
        errs = []
        if set(elem) - {"Status", "PaymentID"} or str(elem.get("PaymentID") or p.id).lower() != p.id.lower():
            errs.append("Only Status accepted for updates.")  # Xero's answer (xero-node #178, xero-php #250)
        elif elem.get("Status") != "DELETED":
            errs.append("Payment Status can only be changed to DELETED")  # [unverified] wording
        if p.status == "DELETED":
            errs.append("Payment has already been deleted")  # [unverified] wording
        lock = st.lock_error(tenant, p.day)
        if lock:
            errs.append(lock)
        if errs:
            st.pay["element_errors"] += 1
            return 400, self.validation_body([self.error_element(raw, errs, pid=p.id)]), self.JS
        st.remove_payment(tenant, p)
        st.pay["deleted"] += 1
        self.commit_fault()
        return 200, self.envelope("Payments", [st.payment_text(tenant, p, places)]), self.JS

    def api_accounts(self, method, rest, query, tenant):
        """GET /Accounts[/{AccountID}] (scope accounting.settings or .read) with where filters."""
        st = STATE
        if method != "GET":
            return 501, jdump({"ErrorNumber": 501, "Type": "NotImplemented",
                               "Message": "xero-mock serves only GET on Accounts"}), self.JS
        accts = [st.account_json(a) for a in tenant.accounts.values()]
        if len(rest) == 2:
            accts = [a for a in accts if a["AccountID"].lower() == rest[1].lower()]
            if not accts:
                return self.NOT_FOUND
        else:
            q = self.query_dict(query)
            if (q.get("where") or [""])[-1].strip():
                terms = parse_where(q["where"][-1])
                accts = [a for a in accts if where_match(a, terms)]
        return 200, self.envelope("Accounts", [jdump(a) for a in accts]), self.JS

    # control: /_mock/... ------------------------------------------------------------------------
    def control(self, method, path, query, body):
        if not is_loopback(self.client_address[0]):
            return self.reply_json(403, {"error": "the control API answers the loopback interface only"})
        st = STATE
        parts = [unquote(p) for p in path.split("/") if p][1:]
        route = (method, parts[0].lower() if parts else "")
        q = dict(parse_qsl(query, keep_blank_values=True))

        def body_json(default=None):
            if not body.strip():
                return default
            try:
                return json.loads(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise BadRequest(f"the body is not JSON: {e}") from None

        with st.lock:
            if route == ("GET", "health"):
                return self.reply_json(200, {"ok": True})
            if route == ("POST", "reset"):
                opts = body_json({}) or {}
                st.reset()
                if opts.get("seed"):
                    for doc in st.seed:
                        st.load(doc)
                return self.reply_json(200, {"ok": True})
            if parts and parts[0].lower() == "app" and len(parts) == 1:
                if method == "PUT":
                    st.update_app(body_json({}))
                elif method != "GET":
                    raise BadRequest("GET or PUT /_mock/app", 405)
                return self.reply_json(200, st.app)
            if parts and parts[0].lower() == "clock" and len(parts) == 1:
                if method == "POST":
                    adv = (body_json({}) or {}).get("advance", 0)
                    if not isinstance(adv, (int, float)) or adv < 0:
                        raise BadRequest("advance must be a non-negative number of seconds")
                    st.offset += adv
                return self.reply_json(200, {"offset_s": st.offset, "now_ms": st.now_ms()})
            if parts and parts[0].lower() == "authorisations" and len(parts) == 1:
                if method == "POST":
                    return self.reply_json(201, st.create_authorisation(body_json({})))
                if method == "GET":
                    out = []
                    for a in st.auths.values():
                        active = [t for t, r in st.refresh.items() if r["auth"] == a.id and r["retired"] is None]
                        out.append({"authEventId": a.id, "revoked": a.revoked, "scope": a.scope,
                                    "active_refresh_tokens": active, "connections": st.connections(a)})
                    return self.reply_json(200, out)
                raise BadRequest("GET or POST /_mock/authorisations", 405)
            if parts and parts[0].lower() == "tenants":
                return self.control_tenants(method, parts[1:], q, body)
            if parts and parts[0].lower() == "faults" and len(parts) == 1:
                if method == "POST":
                    st.set_faults(body_json({"mode": "none"}))
                elif method == "DELETE":
                    st.faults = []
                elif method != "GET":
                    raise BadRequest("GET, POST or DELETE /_mock/faults", 405)
                return self.reply_json(200, st.faults)
            if parts and parts[0].lower() == "stats" and len(parts) == 1:
                if method == "DELETE":
                    st.reset_stats()
                    return self.reply(204)
                return self.reply_json(200, st.stats())
            if parts and parts[0].lower() == "requests" and len(parts) == 1:
                if method == "DELETE":
                    st.log.clear()
                    return self.reply(204)
                return self.reply_json(200, list(st.log))
            if route == ("POST", "load"):
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest("the load document is not UTF-8") from None
                return self.reply_json(200, st.load(text))
        raise BadRequest(f"no control endpoint {method} {path}", 404)

    def control_tenants(self, method, parts, q, body):
        st = STATE
        if not parts:
            if method != "GET":
                raise BadRequest("GET /_mock/tenants", 405)
            return self.reply_json(200, {t.id: {"tenantName": t.name, "connectionId": t.connection_id,
                                                **{k: len(v) for k, v in t.records.items()},
                                                "payments": len(t.payments)}
                                         for t in st.tenants.values()})
        tid = parts[0]
        if len(parts) == 1:
            if method == "PUT":
                spec = json.loads(body.decode("utf-8") or "{}")
                t = st.tenant(tid, spec.get("tenantName"), connection_id=spec.get("connectionId"))
                return self.reply_json(200, {"tenantId": t.id, "tenantName": t.name})
            raise BadRequest("PUT /_mock/tenants/{tenantId}", 405)
        sub = parts[1].lower()
        if sub in ("organisation", "accounts", "payments") and len(parts) == 2:
            return self.control_tenant_books(method, sub, tid, body)
        kind = parts[1].lower()
        if kind not in KINDS:
            raise BadRequest(f"unknown resource {parts[1]!r} (invoices, contacts, creditnotes)", 404)
        t = st.tenant(tid, create=(method == "PUT"))
        if len(parts) == 2:
            if method != "GET":
                raise BadRequest("GET /_mock/tenants/{tenantId}/{kind}", 405)
            recs = sorted(t.records[kind].values(), key=lambda r: (r.updated_ms, r.seq)) if t else []
            return self.reply_json(200, [{"id": r.id, "updated_ms": r.updated_ms} for r in recs])
        if len(parts) == 4 and kind == "invoices" and parts[3].lower() == "amend" and method == "POST":
            try:
                spec = json.loads(body.decode("utf-8") or "{}")
            except (ValueError, UnicodeDecodeError) as e:
                raise BadRequest(f"the body is not JSON: {e}") from None
            return self.reply_json(200, st.amend_invoice(t, parts[2], spec))
        if len(parts) == 4 and kind == "invoices" and parts[3].lower() == "pdf" and method == "GET":
            r = t.records[kind].get(parts[2].lower()) if t else None  # the bytes the API serves for it now
            if r is None:
                return self.reply_json(404, {"error": "no such record"})
            return self.reply(200, invoice_pdf(t.id, r), "application/pdf")
        if len(parts) != 3:
            raise BadRequest("/_mock/tenants/{tenantId}/{kind}/{id}", 404)
        rid = parts[2]
        if method == "PUT":
            upd = q.get("updated_ms")
            try:
                upd = int(upd) if upd not in (None, "") else None
            except ValueError:
                raise BadRequest("updated_ms must be an integer (milliseconds since the epoch)") from None
            try:
                raw = body.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("the record is not UTF-8") from None
            r, created = st.put_record(tid, kind, raw, rid, upd)
            return self.reply_json(201 if created else 200, {"id": r.id, "updated_ms": r.updated_ms})
        r = t.records[kind].get(rid.lower()) if t else None
        if r is None:
            return self.reply_json(404, {"error": "no such record"})
        if method == "DELETE":
            del t.records[kind][rid.lower()]
            return self.reply(204)
        if method == "GET":
            return self.reply(200, r.raw)
        raise BadRequest("GET, PUT or DELETE a record", 405)


    def control_tenant_books(self, method, sub, tid, body):
        """/_mock/tenants/{tenantId}/organisation|accounts|payments (P2.5)."""
        st = STATE
        t = st.tenant(tid, create=(method == "PUT"))
        if method == "PUT" and sub != "payments":
            try:
                spec = json.loads(body.decode("utf-8") or "{}")
            except (ValueError, UnicodeDecodeError) as e:
                raise BadRequest(f"the body is not JSON: {e}") from None
            if sub == "organisation":
                return self.reply_json(200, st.put_organisation(t, spec))
            return self.reply_json(200, st.put_accounts(t, spec))
        if method != "GET":
            raise BadRequest(f"GET{'' if sub == 'payments' else ' or PUT'} /_mock/tenants/{{tenantId}}/{sub}", 405)
        if t is None:
            return self.reply_json(404, {"error": "no such tenant"})
        if sub == "organisation":
            return self.reply_json(200, st.organisation_view(t))
        if sub == "accounts":
            return self.reply_json(200, [st.account_json(a) for a in t.accounts.values()])
        return self.reply_json(200, [st.payment_view(p) for p in sorted(t.payments.values(), key=lambda p: p.seq)])


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        if not QUIET:
            super().handle_error(request, client_address)


def main(argv=None):
    global QUIET
    ap = argparse.ArgumentParser(description="Mock of Xero's identity, login and api hosts for settled's tests.")
    ap.add_argument("--port", type=int, required=True, help="TCP port (0: any free port, printed)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--state", help="a load document (see README) applied at start")
    ap.add_argument("--demo", action="store_true", help="seed the demo app, authorisation and fixture records")
    ap.add_argument("--fixtures", default=DEFAULT_FIXTURES, help="fixtures/xero folder for --demo")
    ap.add_argument("--quiet", "-q", action="store_true", help="no request log on stderr")
    args = ap.parse_args(argv)
    QUIET = args.quiet

    seed = []
    if args.demo:
        seed.append(demo_document(args.fixtures))
    if args.state:
        with open(args.state, encoding="utf-8") as f:
            seed.append(f.read())
    try:
        for doc in seed:
            STATE.load(doc)
    except BadRequest as e:
        sys.stderr.write(f"xero-mock: bad seed: {e}\n")
        return 2
    STATE.seed = seed  # replayed by POST /_mock/reset {"seed": true}
    if ":" in args.host:
        Server.address_family = socket.AF_INET6
    httpd = Server((args.host, args.port), Handler)
    port = httpd.server_address[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"xero-mock listening on http://{shown}:{port}", flush=True)

    def stop(signum, frame):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
