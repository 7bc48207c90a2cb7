#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_xero_mock_payments.py: self-test of the payment write-back of the mock Xero (tests/mock/xero_api.py):
PUT/POST /Payments, deletes, the invoice updates they cause, lock dates, accounts, summarizeErrors,
Idempotency-Key, fail_after_commit and the control API around them (PROVIDERS.md P2.5, tests/mock/README.md
"Payments").

Python 3 standard library only; needs neither settled nor PostgreSQL. Starts the mock on a free loopback port
(--port 0), drives it over HTTP, stops it by its PID at the end, prints one line per test and ``N passed, N
failed``; exits 1 on any failure. ``python3 test_xero_mock_payments.py test_a`` runs only the named tests.
"""

import decimal
import http.client
import json
import os
import re
import sys
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mocktest import Failure, Mock, expect, expect_eq, run_tests  # noqa: E402

MOCK = os.path.join(os.path.dirname(HERE), "mock", "xero_api.py")
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "fixtures", "xero")
CLIENT_ID, CLIENT_SECRET = "test-client", "test-secret"
T1 = "11111111-1111-4111-8111-111111111111"
T2 = "22222222-2222-4222-8222-222222222222"
INV = "aaaaaaaa-0000-4000-8000-000000000001"
INV2 = "aaaaaaaa-0000-4000-8000-000000000002"
UPDATED = 1_600_000_000_000  # the invoices' UpdatedDateUTC before any payment
D = decimal.Decimal
LOST = (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine)
M = None


def j(resp):
    return json.loads(resp.body, parse_float=D)


def setup(**app):
    """Fresh state: the test app and one authorisation (access token at-1, every default scope) to T1 and T2."""
    M.ctl("POST", "reset")
    M.ctl("PUT", "app", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **app})
    M.ctl("POST", "authorisations", {"refresh_token": "rt-1", "access_token": "at-1", "tenants": [T1, T2]})


def token(at, scope, tenants=(T1,)):
    M.ctl("POST", "authorisations", {"refresh_token": "rt-" + at, "access_token": at, "scope": scope,
                                     "tenants": list(tenants)})


# The members of a test invoice, as (key, raw value text): every one but the payment fields must come back
# byte for byte after payments.
MEMBERS = [
    ("Type", '"ACCREC"'),
    ("Contact", '{"ContactID":"c1","Name":"Zoë Ltd"}'),
    ("DateString", '"2026-01-01T00:00:00"'),
    ("Date", '"/Date(1767225600000+0000)/"'),
    ("DueDate", '"/Date(1769904000000+0000)/"'),
    ("LineAmountTypes", '"Exclusive"'),
    ("LineItems", '[{"Description":"a","Quantity":1.0000,"UnitAmount":87.0435,"TaxAmount":13.06,"LineAmount":87.04}]'),
    ("SubTotal", "87.04"),
    ("TotalTax", "13.06"),
    ("Total", "100.10"),
    ("AmountCredited", "0.00"),
    ("CurrencyCode", '"NZD"'),
    ("CurrencyRate", "1.000000"),
    ("Big", "12345678901234567890.123456789"),
]


def invoice(rid, status="AUTHORISED", due="100.10", paid="0.00", number=None, typ="ACCREC", extra=()):
    mem = [("InvoiceID", json.dumps(rid)), ("InvoiceNumber", json.dumps(number or "INV-" + rid[-4:])),
           ("Status", json.dumps(status)), ("AmountDue", due), ("AmountPaid", paid), ("Payments", "[]")]
    mem += [(k, v) for k, v in MEMBERS if k != "Type"] + [("Type", json.dumps(typ))] + list(extra)
    mem.append(("UpdatedDateUTC", f'"/Date({UPDATED}+0000)/"'))
    return "{" + ",".join(f'"{k}":{v}' for k, v in mem) + "}"


def put_invoice(rid, tenant=T1, **kw):
    r = M.call("PUT", f"/_mock/tenants/{tenant}/invoices/{rid}", invoice(rid, **kw))
    expect(r.status in (200, 201), f"PUT invoice: {r}")


def el(inv=INV, amount="10.00", day="2026-01-15", code="090", ref=None, **more):
    """One payment element as JSON text (the amount is a raw token, so 12.345 stays 12.345)."""
    parts = [f'"Invoice":{{"InvoiceID":"{inv}"}}' if inv else None,
             f'"Account":{{"Code":"{code}"}}' if code else None,
             f'"Date":"{day}"' if day else None, f'"Amount":{amount}' if amount is not None else None]
    if ref is not None:
        parts.append(f'"Reference":{json.dumps(ref)}')
    parts += [f'"{k}":{str(v) if isinstance(v, D) else json.dumps(v)}' for k, v in more.items()]
    return "{" + ",".join(p for p in parts if p) + "}"


def api(method, path, body=None, at="at-1", tenant=T1, key=None, headers=None):
    h = {"Accept": "application/json", "Authorization": "Bearer " + at, "xero-tenant-id": tenant}
    if body is not None:
        h["Content-Type"] = "application/json"
    if key is not None:
        h["Idempotency-Key"] = key
    h.update(headers or {})
    return M.call(method, path, body, h)


def pay(*elems, query="?summarizeErrors=false", method="PUT", **kw):
    return api(method, "/api.xro/2.0/Payments" + query, '{"Payments":[' + ",".join(elems) + "]}", **kw)


def delete(pid, body='{"Payments":[{"Status":"DELETED"}]}', **kw):
    return api("POST", f"/api.xro/2.0/Payments/{pid}", body, **kw)


def get_invoice(rid=INV, tenant=T1):
    r = api("GET", f"/api.xro/2.0/Invoices/{rid}?unitdp=4", tenant=tenant)
    expect_eq(r.status, 200, f"GET invoice {rid}")
    return r


def payments(tenant=T1):
    return M.ctl("GET", f"tenants/{tenant}/payments")


def messages(element):
    return [v["Message"] for v in element.get("ValidationErrors", [])]


def expect_verbatim(body, skip, what):
    """Every test-invoice member not in skip is in body byte for byte (with \\/Date escaped as on the wire)."""
    for k, v in MEMBERS:
        if k not in skip:
            tok = f'"{k}":' + v.replace("/Date(", "\\/Date(").replace(")/", ")\\/")
            expect(tok in body, f"{what}: {tok} verbatim in {body}")


# ---------------------------------------------------------------------------------------------------
# Tests


def test_create_payment_updates_invoice_like_xero():
    setup()
    put_invoice(INV)
    before = get_invoice().body.decode()
    r = pay(el(amount="40.05", ref="pi_123"))
    expect_eq(r.status, 200, "PUT /Payments")
    env = j(r)
    expect_eq((env["Status"], list(env)[:4]), ("OK", ["Id", "Status", "ProviderName", "DateTimeUTC"]), "envelope")
    p = env["Payments"][0]
    expect(uuid.UUID(p["PaymentID"]) and p["PaymentID"] != "00000000-0000-0000-0000-000000000000", "a PaymentID")
    expect_eq((p["Status"], p["PaymentType"], p["HasValidationErrors"], p["StatusAttributeString"]),
              ("AUTHORISED", "ACCRECPAYMENT", False, "OK"), "created element")
    expect_eq((p["Date"], p["Amount"], p["BankAmount"], p["CurrencyRate"], p["Reference"]),
              ("/Date(1768435200000+0000)/", D("40.05"), D("40.05"), D("1.0"), "pi_123"), "payment fields")
    expect('"CurrencyRate":1.0,' in r.body.decode() and '"Date":"\\/Date(1768435200000+0000)\\/"' in r.body.decode(),
           "Xero's number and date formatting on the wire")
    expect_eq(p["Account"]["Code"], "090", "account")
    expect(re.fullmatch(r"/Date\(\d+\+0000\)/", p["UpdatedDateUTC"]) is not None, "UpdatedDateUTC")
    expect_eq((p["Invoice"]["InvoiceID"], p["Invoice"]["AmountDue"], p["Invoice"]["AmountPaid"]),
              (INV, D("60.05"), D("40.05")), "the embedded invoice after the payment")
    # the invoice record itself
    b = get_invoice().body.decode()
    inv = json.loads(b, parse_float=D)["Invoices"][0]
    expect('"AmountPaid":40.05,' in b and '"AmountDue":60.05,' in b, f"amounts in Xero's formatting: {b}")
    expect_eq(inv["Status"], "AUTHORISED", "partly paid stays AUTHORISED")
    expect("FullyPaidOnDate" not in inv, "no FullyPaidOnDate while not fully paid")
    expect_eq(inv["Payments"], [{"PaymentID": p["PaymentID"], "Date": "/Date(1768435200000+0000)/",
                                 "Amount": D("40.05"), "Reference": "pi_123", "CurrencyRate": D("1.0"),
                                 "HasAccount": False, "HasValidationErrors": False}], "the invoice's Payments[]")
    ms = int(re.search(r"Date\((\d+)", inv["UpdatedDateUTC"]).group(1))
    expect(ms > UPDATED, "UpdatedDateUTC moved")
    expect_verbatim(b, (), "after a payment")
    expect_verbatim(before, (), "before (the check itself works)")
    # the list with If-Modified-Since sees the change, and did not before
    ims = {"If-Modified-Since": "2020-09-13T12:26:40Z"}  # = UPDATED
    lst = j(api("GET", "/api.xro/2.0/Invoices?page=1", headers=ims))["Invoices"]
    expect_eq([i["InvoiceID"] for i in lst], [INV], "If-Modified-Since sees the paid invoice")
    put_invoice(INV2)
    lst = j(api("GET", "/api.xro/2.0/Invoices?page=1", headers=ims))["Invoices"]
    expect_eq([i["InvoiceID"] for i in lst], [INV], "and not the untouched one")
    expect_eq(len(payments()), 1, "one payment stored")


def test_amend_credits_and_voids_atomically_with_payments():
    setup()
    put_invoice(INV)
    amend = f"tenants/{T1}/invoices/{INV}/amend"
    r = M.call("POST", "/_mock/" + amend, '{"credit": "20.10"}')
    expect_eq((r.status, j(r)), (200, {"AmountDue": "80.0", "AmountCredited": "20.1", "Status": "AUTHORISED"}),
              "a credit allocated: AmountDue down, AmountCredited up")
    expect_eq(pay(el(amount="50.00")).status, 200, "a payment")
    inv = json.loads(get_invoice().body, parse_float=D)["Invoices"][0]
    expect_eq((inv["AmountDue"], inv["AmountPaid"], inv["AmountCredited"]), (D("30.0"), D("50.00"), D("20.1")),
              "the payment and the credit both count")
    expect_eq(M.call("POST", "/_mock/" + amend, '{"credit": "30.01"}').status, 409, "more than the amount due")
    expect_eq(M.call("POST", "/_mock/" + amend, '{"status": "VOIDED"}').status, 409, "void with a payment applied")
    delete(payments()[0]["PaymentID"])
    r = M.call("POST", "/_mock/" + amend, '{"credit": "80.00"}')
    expect_eq(j(r)["Status"], "PAID", "credited in full: PAID")
    put_invoice(INV2)
    r = M.call("POST", f"/_mock/tenants/{T1}/invoices/{INV2}/amend", '{"status": "VOIDED"}')
    expect_eq((r.status, j(r)["Status"]), (200, "VOIDED"), "voided without payments")
    expect_eq(j(pay(el(inv=INV2)))["Payments"][0]["HasValidationErrors"], True, "no payment on a voided invoice")
    expect_eq(M.call("POST", "/_mock/" + amend, '{"credit": "x"}').status, 400, "a bad amount")


def test_full_payment_sets_paid_and_fully_paid_on_date():
    setup()
    put_invoice(INV)
    expect_eq(pay(el(amount="40.05", day="2026-01-10")).status, 200, "first part")
    p2 = j(pay(el(amount="60.05", day="2026-01-20")))["Payments"][0]
    expect_eq(p2["HasValidationErrors"], False, "the rest")
    b = get_invoice().body.decode()
    inv = json.loads(b, parse_float=D)["Invoices"][0]
    expect_eq((inv["Status"], inv["AmountDue"], inv["AmountPaid"]), ("PAID", D("0"), D("100.10")), "PAID")
    expect('"AmountDue":0.0,' in b and '"AmountPaid":100.1,' in b, f"Xero-formatted amounts: {b}")
    expect_eq(inv["FullyPaidOnDate"], "/Date(1768867200000+0000)/", "FullyPaidOnDate is the last payment's date")
    expect_eq(len(inv["Payments"]), 2, "two payments on the invoice")
    expect_verbatim(b, (), "a paid invoice")
    e = j(pay(el(amount="0.01")))["Payments"][0]
    expect_eq(messages(e), ["Payments can only be made against Authorised documents",
                            "Payment amount exceeds the amount outstanding on this document"], "a PAID invoice")


def test_validation_rules_with_summarize_errors_false():
    setup()
    put_invoice(INV)
    for i, status in enumerate(("DRAFT", "SUBMITTED", "PAID", "VOIDED", "DELETED")):
        put_invoice(f"bbbbbbbb-0000-4000-8000-00000000000{i}", status=status)
    M.ctl("PUT", f"tenants/{T1}/accounts", [{"Code": "095", "Name": "Old bank", "Type": "BANK", "Status": "ARCHIVED"}])
    bad = [
        (el(inv="bbbbbbbb-0000-4000-8000-000000000000"), ["Payments can only be made against Authorised documents"]),
        (el(inv="bbbbbbbb-0000-4000-8000-000000000001"), ["Payments can only be made against Authorised documents"]),
        (el(inv="bbbbbbbb-0000-4000-8000-000000000003"), ["Payments can only be made against Authorised documents"]),
        (el(inv="bbbbbbbb-0000-4000-8000-000000000004"), ["Payments can only be made against Authorised documents"]),
        (el(amount="0"), ["Payment amount must be greater than zero"]),
        (el(amount="-5.00"), ["Payment amount must be greater than zero"]),
        (el(amount="12.345"), ["Payment amount cannot have more than 2 decimal places"]),
        (el(amount='"ten"'), ["Payment amount must be a number"]),
        (el(amount="100.11"), ["Payment amount exceeds the amount outstanding on this document"]),
        (el(code="200"), ["Account type is invalid for making a payment to/from"]),
        (el(code="999"), ["Account must be valid."]),
        (el(code="095"), ["Account must be valid."]),
        (el(code=None), ["You must specify an Account code or Account ID for the payment"]),
        (el(inv="cccccccc-0000-4000-8000-000000000000"), ["Invoice could not be found"]),
        (el(inv=None), ["You must specify an InvoiceID or InvoiceNumber for the payment"]),
        (el(day="15/01/2026"), ["A valid date must be supplied for the payment"]),
        (el(day=None), ["A valid date must be supplied for the payment"]),
    ]
    r = pay(*[e for e, _ in bad])
    expect_eq(r.status, 200, "summarizeErrors=false: 200 even though every element failed")
    got = j(r)["Payments"]
    expect_eq(len(got), len(bad), "one element per payment, in order")
    for (sent, want), g in zip(bad, got):
        expect_eq(messages(g), want, f"element {sent}")
        expect_eq((g["HasValidationErrors"], g["StatusAttributeString"], g["PaymentID"]),
                  (True, "ERROR", "00000000-0000-0000-0000-000000000000"), f"failed element {sent}")
        expect("Status" not in g, "a failed element is not AUTHORISED")
    expect('"Amount":12.345' in r.body.decode(), "a failed element echoes what was sent, verbatim")
    expect_eq(payments(), [], "nothing was created")
    expect_verbatim(get_invoice().body.decode(), (), "the invoice is untouched")
    st = M.ctl("GET", "stats")["payments"]
    expect_eq((st["element_errors"], st["created"]), (len(bad), 0), "stats")
    # the accepted ways of naming things: InvoiceNumber, Account.AccountID, /Date(ms)/, a payments-enabled account
    acct = next(a for a in j(api("GET", "/api.xro/2.0/Accounts"))["Accounts"] if a["Code"] == "970")
    ok = pay('{"Invoice":{"InvoiceNumber":"INV-0001"},"Account":{"AccountID":"%s"},'
             '"Date":"/Date(1768435200000+0000)/","Amount":"1.50"}' % acct["AccountID"],
             '{"InvoiceNumber":"INV-0001","Account":{"Code":"090"},"Date":"2026-01-15T00:00:00","Amount":2}')
    got = j(ok)["Payments"]
    expect_eq([g["HasValidationErrors"] for g in got], [False, False], f"InvoiceNumber, AccountID, /Date/: {ok}")
    expect_eq((got[0]["Account"]["Code"], got[0]["Amount"], got[1]["Amount"]), ("970", D("1.5"), D("2.0")), "made")


def test_two_payments_of_one_invoice_in_one_call_see_each_other():
    setup()
    put_invoice(INV)
    got = j(pay(el(amount="60.00"), el(amount="60.00"), el(amount="40.10")))["Payments"]
    expect_eq([messages(g) for g in got], [[], ["Payment amount exceeds the amount outstanding on this document"], []],
              "the second exceeds what the first left; the third pays the rest")
    expect_eq(j(get_invoice())["Invoices"][0]["Status"], "PAID", "paid by the first and third")


def test_lock_dates_refuse_payments_and_show_on_organisation():
    setup()
    put_invoice(INV)
    org = M.ctl("PUT", f"tenants/{T1}/organisation",
                {"PeriodLockDate": "2018-11-30", "EndOfYearLockDate": "2018-03-31"})
    expect_eq((org["PeriodLockDate"], org["EndOfYearLockDate"]), ("2018-11-30", "2018-03-31"), "control view")
    got = j(pay(el(day="2018-11-30"), el(day="2018-11-01"), el(day="2018-03-31"), el(day="2017-01-01"),
                el(day="2018-12-01")))["Payments"]
    per = "The document date cannot be before the period lock date, currently set at 30-Nov-2018"
    eoy = "The document date cannot be before the end of year lock date, currently set at 31-Mar-2018"
    expect_eq([messages(g) for g in got], [[per], [per], [eoy], [eoy], []], "on or before a lock date is refused")
    o = j(api("GET", "/api.xro/2.0/Organisation"))["Organisations"][0]
    expect_eq((o["PeriodLockDate"], o["EndOfYearLockDate"], o["OrganisationID"]),
              ("/Date(1543536000000+0000)/", "/Date(1522454400000+0000)/", T1), "GET /Organisation shows them")
    M.ctl("PUT", f"tenants/{T1}/organisation", {"PeriodLockDate": None, "EndOfYearLockDate": None})
    o = j(api("GET", "/api.xro/2.0/Organisation"))["Organisations"][0]
    expect("PeriodLockDate" not in o and "EndOfYearLockDate" not in o, "shown only if set")
    expect_eq(messages(j(pay(el(day="2018-11-30")))["Payments"][0]), [], "unlocked")
    r = M.call("PUT", f"/_mock/tenants/{T1}/organisation",
               {"PeriodLockDate": "2018-01-01", "EndOfYearLockDate": "2018-06-30"})
    expect_eq(r.status, 400, "the all-users lock date cannot be after the other")
    r = M.call("PUT", f"/_mock/tenants/{T1}/organisation", {"PeriodLockDate": "30/11/2018"})
    expect_eq(r.status, 400, "bad date")


def test_summarize_errors_true_is_a_400_and_commits_the_valid_ones_by_default():
    """Xero's observed behaviour (README): without summarizeErrors=false a failing element turns the call into
    a 400 ValidationException, but the valid elements are still made, and their ids are all zeros."""
    setup()
    put_invoice(INV)
    for query in ("", "?summarizeErrors=true"):
        setup()
        put_invoice(INV)
        r = pay(el(amount="10.00", ref="ok"), el(code="200"), query=query)
        expect_eq(r.status, 400, f"{query or 'no query'}: 400")
        e = j(r)
        expect_eq((e["ErrorNumber"], e["Type"], e["Message"]),
                  (10, "ValidationException", "A validation exception occurred"),
                  "the Error envelope (fixtures/xero/api_400_validation_error_contacts_put.json)")
        expect_eq([messages(x) for x in e["Elements"]], [[], ["Account type is invalid for making a payment to/from"]],
                  "Elements, in order")
        expect_eq([x["PaymentID"] for x in e["Elements"]], ["00000000-0000-0000-0000-000000000000"] * 2, "no ids")
        expect_eq([x["HasValidationErrors"] for x in e["Elements"]], [False, True], "HasValidationErrors")
        expect_eq([(p["Reference"], p["Amount"]) for p in payments()], [("ok", "10.0")], "the valid one WAS made")
        expect_eq(j(get_invoice())["Invoices"][0]["AmountDue"], D("90.1"), "and applied to the invoice")
    # all valid: an ordinary 200 (no StatusAttributeString when summarised)
    r = pay(el(amount="1.00"), query="")
    expect_eq((r.status, "StatusAttributeString" in j(r)["Payments"][0]), (200, False), "summarised success")
    # the switch: nothing is made, the invoice is untouched to the byte
    setup(summarize_errors_atomic=True)
    put_invoice(INV)
    before = M.call("GET", f"/_mock/tenants/{T1}/invoices/{INV}").body
    r = pay(el(amount="10.00"), el(amount="5.00"), el(code="200"), query="")
    expect_eq(r.status, 400, "atomic: 400")
    expect_eq(payments(), [], "atomic: nothing made")
    expect_eq(M.call("GET", f"/_mock/tenants/{T1}/invoices/{INV}").body, before,
              "atomic: the invoice record is as before")
    # and the default can be switched to the spec's summarizeErrors default (false)
    setup(summarize_errors_default=False)
    put_invoice(INV)
    r = pay(el(amount="10.00"), el(code="200"), query="")
    expect_eq((r.status, [g["HasValidationErrors"] for g in j(r)["Payments"]]), (200, [False, True]),
              "summarize_errors_default false: a 200 mix")


def test_post_payments_is_the_same_and_bodies_are_checked():
    setup()
    put_invoice(INV)
    r = pay(el(amount="5.00"), method="POST")
    expect_eq((r.status, j(r)["Payments"][0]["Status"]), (200, "AUTHORISED"), "POST /Payments creates")
    r = api("PUT", "/api.xro/2.0/Payments?summarizeErrors=false", el(amount="6.00"))
    expect_eq((r.status, j(r)["Payments"][0]["Amount"]), (200, D("6.0")), "one payment without the envelope")
    for body in ("{not json", '{"Payments":{}}', '{"Payments":[]}', '{"Payments":[1]}', ""):
        r = api("PUT", "/api.xro/2.0/Payments", body)
        expect_eq((r.status, j(r)["ErrorNumber"], j(r)["Type"]), (400, 14, "PostDataInvalidException"),
                  f"body {body!r}")
    expect_eq(len(payments()), 2, "bad bodies made nothing")
    r = api("DELETE", f"/api.xro/2.0/Payments/{payments()[0]['PaymentID']}")
    expect_eq(r.status, 405, "no DELETE verb on payments")


def test_fixture_request_and_response_shape():
    """fixtures/xero/api_put_payments_request.json (account 970, Amount 1) against an invoice, and the keys of
    fixtures/xero/api_put_payments_response.json."""
    setup()
    put_invoice(INV)
    with open(os.path.join(FIXTURES, "api_put_payments_request.json"), encoding="utf-8") as f:
        req = f.read().replace("00000000-0000-0000-0000-000000000000", INV)
    with open(os.path.join(FIXTURES, "api_put_payments_response.json"), encoding="utf-8") as f:
        fx = json.load(f)["Payments"][0]
    r = api("PUT", "/api.xro/2.0/Payments?summarizeErrors=false", req)
    expect_eq(r.status, 200, "the fixture request")
    p = j(r)["Payments"][0]
    want = [k for k in fx if k != "ValidationErrors"]
    expect_eq([k for k in p if k != "StatusAttributeString"], want, "the fixture response's members, in its order")
    expect('"BankAmount":1.0,"Amount":1.0,' in r.body.decode(), "Amount 1 is written 1.0, as in the fixture")
    expect_eq((p["Account"]["Code"], p["Account"]["Name"]), ("970", "Owner A Funds Introduced"), "account 970")


def test_pretty_and_escaped_bodies():
    setup(pretty=True)
    put_invoice(INV)
    r = pay(el(amount="1.00"), key="p1")
    b = r.body.decode()
    expect(b.startswith('{\r\n  "Id": "') and '"Amount": 1.0,' in b and '"Total": 100.10,' in b,
           f"pretty with CRLF, amounts verbatim: {b[:200]}")
    expect('"\\/Date(1768435200000+0000)\\/"' in b, "dates escaped")
    expect_eq(pay(el(amount="1.00"), key="p1").body, r.body, "a replay is the same bytes")
    e = pay(el(code="200"), query="")
    expect(e.body.startswith(b'{\r\n  "ErrorNumber": 10,'), f"the 400 too: {e.body[:60]!r}")


def test_currency_rate_and_bills():
    setup()
    put_invoice(INV)
    put_invoice(INV2, typ="ACCPAY")
    p = j(pay(el(amount="50.00", CurrencyRate=D("0.8")), el(inv=INV2, amount="20.00")))["Payments"]
    expect_eq((p[0]["CurrencyRate"], p[0]["BankAmount"], p[0]["Amount"]), (D("0.8"), D("62.5"), D("50.0")),
              "BankAmount = Amount / CurrencyRate")
    expect_eq((p[0]["PaymentType"], p[1]["PaymentType"]), ("ACCRECPAYMENT", "ACCPAYPAYMENT"),
              "PaymentType by invoice type")
    expect_eq(messages(j(pay(el(CurrencyRate=D("0"))))["Payments"][0]), ["Currency rate must be greater than zero"],
              "rate 0")


def test_scopes():
    setup()
    put_invoice(INV)
    token("at-contacts", "offline_access accounting.contacts")
    token("at-read", "offline_access accounting.transactions.read")
    token("at-granular", "offline_access accounting.payments")
    token("at-settings", "accounting.settings.read")
    for at in ("at-contacts", "at-read", "at-settings"):
        r = pay(el(), at=at)
        expect_eq((r.status, j(r)["Detail"], j(r)["Status"]), (401, "AuthorizationUnsuccessful", 401),
                  f"{at}: no write scope")
    expect_eq(payments(), [], "refused writes made nothing")
    expect_eq(api("GET", "/api.xro/2.0/Payments", at="at-contacts").status, 401, "no read scope")
    expect_eq(api("GET", "/api.xro/2.0/Payments", at="at-read").status, 200, ".read reads")
    expect_eq(pay(el(), at="at-granular").status, 200, "the granular accounting.payments writes")
    expect_eq(pay(el(), at="at-1").status, 200, "accounting.transactions writes")
    for path in ("/api.xro/2.0/Organisation", "/api.xro/2.0/Accounts"):
        expect_eq(api("GET", path, at="at-granular").status, 401, f"{path} needs accounting.settings")
        expect_eq(api("GET", path, at="at-settings").status, 200, f"{path} with accounting.settings.read")
    st = M.ctl("GET", "stats")
    expect_eq((st["missing_scope"], st["unauthorised"]["401"]), (6, 6), "counted as refused, not as calls")
    expect_eq(st["tenants"][T1]["calls_by_path"].get("PUT /api.xro/2.0/Payments"), 2, "only admitted writes are calls")


def test_writes_count_against_rate_limits_and_are_counted_by_route():
    setup(limits={"minute": 3})
    put_invoice(INV)
    s = [pay(el(amount="1.00")) for _ in range(4)]
    expect_eq([r.status for r in s], [200, 200, 200, 429], "60/min shared with reads (here 3)")
    expect_eq(s[3].headers.get("x-rate-limit-problem"), "minute", "a write 429 like any other")
    expect_eq(len(payments()), 3, "the refused write made nothing")
    M.ctl("POST", "clock", {"advance": 61})
    pid = payments()[0]["PaymentID"]
    delete(pid)
    pay(el(amount="1.00"), method="POST")
    api("GET", "/api.xro/2.0/Payments")
    st = M.ctl("GET", "stats")
    expect_eq(st["payments"]["writes_by_route"],
              {"PUT /Payments": 4, "POST /Payments": 1, "POST /Payments/{PaymentID}": 1},
              "write attempts by route")
    expect_eq((st["payments"]["executed"], st["payments"]["created"], st["payments"]["deleted"]), (5, 4, 1), "outcomes")
    expect_eq(st["tenants"][T1]["calls_by_path"][f"POST /api.xro/2.0/Payments/{pid}"], 1, "calls_by_path too")


def test_list_and_get_payments():
    setup()
    put_invoice(INV)
    put_invoice(INV2)
    a = j(pay(el(amount="1.00", ref="pi_A")))["Payments"][0]
    b = j(pay(el(inv=INV2, amount="2.00", ref="pi_B")))["Payments"][0]
    c = j(pay(el(amount="3.00", ref="pi_C")))["Payments"][0]
    expect_eq(delete(b["PaymentID"]).status, 200, "delete B")
    lst = j(api("GET", "/api.xro/2.0/Payments"))["Payments"]
    expect_eq([(p["Reference"], p["Status"]) for p in lst],
              [("pi_A", "AUTHORISED"), ("pi_C", "AUTHORISED"), ("pi_B", "DELETED")],
              "all, by UpdatedDateUTC (deleted too)")
    one = j(api("GET", f"/api.xro/2.0/Payments/{c['PaymentID'].upper()}"))["Payments"]
    expect_eq([(p["PaymentID"], p["Amount"], p["Invoice"]["InvoiceID"]) for p in one],
              [(c["PaymentID"], D("3.0"), INV)],
              "by id, case-insensitive")
    got = j(api("GET", f"/api.xro/2.0/Payments/{c['PaymentID']}"))["Payments"][0]
    expect_eq(got["Invoice"]["AmountPaid"], D("4.0"),
              "the embedded invoice is the invoice as it is now")
    expect_eq(api("GET", f"/api.xro/2.0/Payments/{uuid.uuid4()}").status, 404, "unknown id")

    def refs(where):
        r = api("GET", "/api.xro/2.0/Payments?where=" + urllib.parse.quote(where))
        expect_eq(r.status, 200, where)
        return [p["Reference"] for p in j(r)["Payments"]]

    expect_eq(refs('Reference=="pi_c"'), ["pi_C"], "where Reference (case-insensitive)")
    expect_eq(refs(f'Invoice.InvoiceID==Guid("{INV}") AND Status=="AUTHORISED"'), ["pi_A", "pi_C"],
              "where on the invoice")
    expect_eq(refs('Status!="AUTHORISED"'), ["pi_B"], "!=")
    expect_eq(refs("Amount==3.00"), ["pi_C"], "a number")
    expect_eq(api("GET", "/api.xro/2.0/Payments?where=Date%3E%3DDateTime(2026%2C01%2C01)").status, 400,
              "an unsupported where is refused, never ignored")
    pg = j(api("GET", "/api.xro/2.0/Payments?page=2&pageSize=2"))
    expect_eq(([p["Reference"] for p in pg["Payments"]], pg["pagination"]),
              (["pi_B"], {"page": 2, "pageSize": 2, "pageCount": 2, "itemCount": 3}), "paging")
    ims = {"If-Modified-Since": "/Date(%d)/" % int(re.search(r"\d+", c["UpdatedDateUTC"]).group())}
    expect_eq([p["Reference"] for p in j(api("GET", "/api.xro/2.0/Payments", headers=ims))["Payments"]], ["pi_B"],
              "If-Modified-Since: strictly after C (the deletion of B is later)")
    expect_eq(j(api("GET", "/api.xro/2.0/Payments", tenant=T2))["Payments"], [], "payments are per tenant")


def test_delete_payment_reverts_the_invoice():
    setup()
    put_invoice(INV)
    p1 = j(pay(el(amount="40.05")))["Payments"][0]
    p2 = j(pay(el(amount="60.05", day="2026-01-20")))["Payments"][0]
    expect_eq(j(get_invoice())["Invoices"][0]["Status"], "PAID", "paid")
    r = delete(p2["PaymentID"])
    expect_eq(r.status, 200, "delete")
    d = j(r)["Payments"][0]
    expect_eq((d["PaymentID"], d["Status"], d["Amount"]), (p2["PaymentID"], "DELETED", D("60.05")), "Status DELETED")
    b = get_invoice().body.decode()
    inv = json.loads(b, parse_float=D)["Invoices"][0]
    expect_eq((inv["Status"], inv["AmountDue"], inv["AmountPaid"]), ("AUTHORISED", D("60.05"), D("40.05")), "reverted")
    expect("FullyPaidOnDate" not in inv, "FullyPaidOnDate removed")
    expect_eq([p["PaymentID"] for p in inv["Payments"]], [p1["PaymentID"]], "the deleted payment left Payments[]")
    expect_verbatim(b, (), "after a delete")
    expect_eq(get_invoice().body.count(b'"Amount":40.05,'), 1, "the other payment's entry is kept verbatim")
    again = delete(p2["PaymentID"])
    expect_eq(again.status, 400, "a deleted payment cannot be deleted again")
    e = j(again)
    expect_eq((e["Type"], messages(e["Elements"][0])), ("ValidationException", ["Payment has already been deleted"]),
              "why")
    body = '{"Payments":[{"PaymentID":"%s","Status":"DELETED","Amount":1}]}' % p1["PaymentID"]
    r = delete(p1["PaymentID"], body=body)
    expect_eq((r.status, messages(j(r)["Elements"][0])), (400, ["Only Status accepted for updates."]), "only Status")
    r = delete(p1["PaymentID"], body='{"Payments":[{"Status":"AUTHORISED"}]}')
    expect_eq(r.status, 400, "Status must be DELETED")
    expect_eq(delete(str(uuid.uuid4())).status, 404, "unknown payment")
    M.ctl("PUT", f"tenants/{T1}/organisation", {"PeriodLockDate": "2026-01-31"})
    r = delete(p1["PaymentID"], body='{"Status":"DELETED"}')
    expect_eq((r.status, messages(j(r)["Elements"][0])),
              (400, ["The document date cannot be before the period lock date, currently set at 31-Jan-2026"]),
              "a payment in a locked period cannot be deleted")
    expect_eq(j(get_invoice())["Invoices"][0]["AmountPaid"], D("40.05"), "and stays")
    M.ctl("PUT", f"tenants/{T1}/organisation", {"PeriodLockDate": None})
    r = delete(p1["PaymentID"], body='{"Status":"DELETED"}')
    expect_eq(r.status, 200, "the spec's bare PaymentDelete body works too")
    inv = j(get_invoice())["Invoices"][0]
    expect_eq((inv["AmountDue"], inv["AmountPaid"], inv["Payments"]), (D("100.1"), D("0"), []), "back to unpaid")
    expect_eq([(p["PaymentID"], p["Status"]) for p in payments()],
              [(p1["PaymentID"], "DELETED"), (p2["PaymentID"], "DELETED")], "the control list keeps deleted payments")


def test_idempotency_key_replays_and_refuses_another_body():
    setup(access_ttl=86400)  # the clock moves an hour below
    put_invoice(INV)
    first = pay(el(amount="10.00"), key="k-1")
    again = pay(el(amount="10.00"), key="k-1")
    expect_eq((again.status, again.body), (first.status, first.body), "the same answer, byte for byte")
    expect_eq(again.headers.get("x-mock-idempotent-replay"), "true", "marked as a replay (a mock header)")
    expect("x-mock-idempotent-replay" not in first.headers, "the first is not")
    expect_eq(len(payments()), 1, "one payment only")
    expect_eq(payments()[0]["idempotency_key"], "k-1", "the control list shows the key")
    r = pay(el(amount="11.00"), key="k-1")
    expect_eq((r.status, j(r)["Type"]), (400, "ValidationException"), "the same key with another body")
    expect_eq(pay(el(amount="10.00"), key="k-1", method="POST").status, 400, "or another route")
    expect_eq(pay(el(amount="10.00"), key="k-1", query="?summarizeErrors=true").status, 400,
              "or another summarizeErrors")
    expect_eq(len(payments()), 1, "still one")
    expect_eq(pay(el(amount="10.00"), key="k-1", tenant=T2).status, 200, "keys are per tenant (T2 has no invoice: a "
              "200 with errors)")
    expect_eq(pay(el(amount="1.00"), key="x" * 129).status, 400, "a key over 128 characters")
    expect_eq(pay(el(amount="1.00"), key="x" * 128).status, 200, "128 is fine")
    # a saved 400 replays too (summarised), and is not run again
    bad = pay(el(code="200"), query="", key="k-bad")
    expect_eq((bad.status, pay(el(code="200"), query="", key="k-bad").body), (400, bad.body), "a 400 replays")
    # the delete
    pid = payments()[0]["PaymentID"]
    d1, d2 = delete(pid, key="k-del"), delete(pid, key="k-del")
    expect_eq((d1.status, d2.status, d2.body), (200, 200, d1.body),
              "a replayed delete is the same 200, not 'already deleted'")
    expect_eq(delete(pid, key="k-del2").status, 400, "a new key does run again")
    # lifetime
    n = len(payments())
    M.ctl("POST", "clock", {"advance": 3599})
    expect_eq(pay(el(amount="10.00"), key="k-1").body, first.body, "still replayed before idempotency_ttl (3600 s)")
    M.ctl("POST", "clock", {"advance": 2})
    expect_eq(pay(el(amount="10.00"), key="k-1").status, 200, "after it, the key is new")
    expect_eq(len(payments()), n + 1, "and the call ran again")
    st = M.ctl("GET", "stats")["payments"]["idempotency"]
    expect_eq((st["replayed"], st["mismatch"], st["too_long"], st["expired"]), (4, 3, 1, 1), "idempotency stats")
    M.ctl("PUT", "app", {"idempotency_ttl": 5})
    pay(el(amount="1.00"), key="k-short")
    M.ctl("POST", "clock", {"advance": 6})
    pay(el(amount="1.00"), key="k-short")
    expect_eq(sum(1 for p in payments() if p["idempotency_key"] == "k-short"), 2, "a configured lifetime")


def test_fail_after_commit_loses_the_answer_and_the_key_recovers_it():
    setup()
    put_invoice(INV)
    M.ctl("PUT", "app", {"fail_after_commit": 1})
    try:
        r = pay(el(amount="25.00"), key="kill-9")
        raise Failure(f"fail_after_commit answered {r}")
    except LOST:
        pass
    expect_eq(len(payments()), 1, "the payment was committed before the answer was lost")
    expect_eq(M.ctl("GET", "app")["fail_after_commit"], 0, "the count is used up")
    r = pay(el(amount="25.00"), key="kill-9")
    expect_eq((r.status, r.headers.get("x-mock-idempotent-replay")), (200, "true"), "the retry gets the stored answer")
    expect_eq(j(r)["Payments"][0]["PaymentID"], payments()[0]["PaymentID"], "naming the committed payment")
    expect_eq(len(payments()), 1, "and no second payment")
    # "500": the same, with a 500
    M.ctl("PUT", "app", {"fail_after_commit": 1, "fail_after_commit_mode": "500"})
    r = pay(el(amount="5.00"), key="k-500")
    expect_eq((r.status, r.headers.get("x-mock-fault")), (500, "fail_after_commit"), "a 500 after the commit")
    expect_eq(pay(el(amount="5.00"), key="k-500").status, 200, "the retry gets the stored 200")
    expect_eq(len(payments()), 2, "one payment for it")
    # a delete that loses its answer
    M.ctl("PUT", "app", {"fail_after_commit": 1, "fail_after_commit_mode": "drop"})
    pid = payments()[0]["PaymentID"]
    try:
        delete(pid, key="kd")
        raise Failure("the delete answered")
    except LOST:
        pass
    expect_eq(payments()[0]["Status"], "DELETED", "the delete was committed")
    expect_eq((delete(pid, key="kd").status, delete(pid).status), (200, 400), "the keyed retry gets 200; unkeyed, 400")
    # without a key a retry is a second payment: what a client must avoid
    M.ctl("PUT", "app", {"fail_after_commit": 1})
    try:
        pay(el(amount="1.00"))
    except LOST:
        pass
    pay(el(amount="1.00"))
    expect_eq(sum(1 for p in payments() if p["Amount"] == "1.0"), 2, "an unkeyed retry duplicates")
    # only writes that commit use it up
    M.ctl("PUT", "app", {"fail_after_commit": 1})
    expect_eq(pay(el(code="200")).status, 200, "a write that made nothing is answered")
    expect_eq(api("GET", "/api.xro/2.0/Payments").status, 200, "and so is a read")
    expect_eq(M.ctl("GET", "app")["fail_after_commit"], 1, "still armed")
    st = M.ctl("GET", "stats")
    expect_eq((st["payments"]["fail_after_commit"], st["tenants"][T1]["statuses"].get("drop")), (4, 3), "stats")
    expect_eq(M.call("PUT", "/_mock/app", {"fail_after_commit": 1.5}).status, 400, "a count is an integer")
    expect_eq(M.call("PUT", "/_mock/app", {"fail_after_commit_mode": "hang"}).status, 400, "mode drop or 500")


def test_fault_rules_apply_to_payment_routes():
    setup()
    put_invoice(INV)
    M.ctl("POST", "faults", {"mode": "503", "count": 1, "path_prefix": "/api.xro/2.0/Payments"})
    expect_eq(get_invoice().status, 200, "another path is not hit")
    r = pay(el(), key="f1")
    expect_eq((r.status, r.headers.get("x-mock-fault")), (503, "503"), "a 503 before anything runs")
    expect_eq(payments(), [], "nothing made")
    expect_eq(pay(el(), key="f1").status, 200, "the retry with the same key runs (nothing was saved)")
    M.ctl("POST", "faults", {"mode": "drop", "count": 1, "path_prefix": "/api.xro/2.0/Payments"})
    try:
        pay(el(), key="f2")
        raise Failure("drop answered")
    except LOST:
        pass
    expect_eq(len(payments()), 1, "a dropped request is not processed (unlike fail_after_commit)")
    M.ctl("POST", "faults", {"mode": "429", "count": 1, "retry_after": 9})
    r = delete(payments()[0]["PaymentID"])
    expect_eq((r.status, r.headers.get("retry-after")), (429, "9"), "a 429 on the delete")
    expect_eq(payments()[0]["Status"], "AUTHORISED", "not deleted")


def test_accounts_api_and_control():
    setup()
    put_invoice(INV)
    accts = j(api("GET", "/api.xro/2.0/Accounts"))["Accounts"]
    expect_eq([(a["Code"], a["Type"], a["Name"], a["Class"], a["EnablePaymentsToAccount"]) for a in accts],
              [("090", "BANK", "Business Bank Account", "ASSET", False), ("200", "REVENUE", "Sales", "REVENUE", False),
               ("970", "EQUITY", "Owner A Funds Introduced", "EQUITY", True)], "the default chart")
    expect(all(uuid.UUID(a["AccountID"]) for a in accts), "AccountIDs")
    banks = j(api("GET", "/api.xro/2.0/Accounts?where=Type%3D%3D%22BANK%22"))["Accounts"]
    expect_eq([a["Code"] for a in banks], ["090"], "where Type==\"BANK\"")
    one = j(api("GET", f"/api.xro/2.0/Accounts/{accts[1]['AccountID']}"))["Accounts"]
    expect_eq([a["Code"] for a in one], ["200"], "by AccountID")
    chart = M.ctl("PUT", f"tenants/{T1}/accounts", [{"Code": "091", "Name": "Stripe clearing", "Type": "BANK"},
                                                     {"Code": "610", "Name": "Owed", "Type": "CURRENT",
                                                      "EnablePaymentsToAccount": True},
                                                     {"Code": "200", "EnablePaymentsToAccount": True}])
    expect_eq([a["Code"] for a in chart], ["090", "970", "091", "610", "200"], "added and changed")
    got = j(pay(el(code="091"), el(code="610"), el(code="200")))["Payments"]
    expect_eq([messages(g) for g in got], [[], [], []], "a new bank account, and payments enabled on others")
    M.ctl("PUT", f"tenants/{T1}/accounts", {"Code": "091", "Status": "ARCHIVED"})
    expect_eq(messages(j(pay(el(code="091")))["Payments"][0]), ["Account must be valid."], "archived")
    expect_eq(j(api("GET", "/api.xro/2.0/Accounts", tenant=T2))["Accounts"][0]["Code"], "090", "T2 has its own chart")
    for bad in ({"Code": "x"}, {"Code": "y", "Type": "MAGIC"}, {"Code": "z", "Type": "BANK", "Colour": "red"}):
        expect_eq(M.call("PUT", f"/_mock/tenants/{T1}/accounts", bad).status, 400, f"refused: {bad}")


def test_load_document_seeds_organisation_and_accounts():
    setup()
    doc = {"tenants": {T1: {"organisation": {"PeriodLockDate": "2026-01-10"},
                            "accounts": [{"Code": "092", "Name": "Payouts", "Type": "BANK"}],
                            "invoices": [json.loads(invoice(INV))]}}}
    M.ctl("POST", "load", doc)
    expect_eq(M.ctl("GET", f"tenants/{T1}/organisation")["PeriodLockDate"], "2026-01-10", "organisation loaded")
    got = j(pay(el(code="092", day="2026-01-10"), el(code="092", day="2026-01-11")))["Payments"]
    expect_eq([len(messages(g)) for g in got], [1, 0], "the loaded lock date and account apply")
    expect_eq(M.ctl("GET", "tenants")[T1]["payments"], 1, "GET /_mock/tenants counts payments")


def main():
    def start():
        global M
        M = Mock(MOCK, "xero-mock")

    def stop():
        return M.stop(), M.stderr()

    return run_tests(globals(), start, stop)


if __name__ == "__main__":
    sys.exit(main())
