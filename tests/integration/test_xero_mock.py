#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_xero_mock.py: self-test of the mock Xero (tests/mock/xero_api.py) that settled's Xero tests use.

Python 3 standard library only; needs neither settled nor PostgreSQL. Starts the mock itself on a free
loopback port (--port 0), drives it over HTTP, stops it (by its PID) at the end, and prints one line per
test and ``N passed, N failed``; exits 1 on any failure. ``python3 test_xero_mock.py test_a`` runs only
the named tests. Runs in well under 60 s.
"""

import base64
import ctypes
import decimal
import hashlib
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
MOCK = os.path.join(os.path.dirname(HERE), "mock", "xero_api.py")

CLIENT_ID, CLIENT_SECRET = "test-client", "test-secret"
T1 = "11111111-1111-4111-8111-111111111111"
T2 = "22222222-2222-4222-8222-222222222222"
T3 = "33333333-3333-4333-8333-333333333333"
INV = "aaaaaaaa-0000-4000-8000-000000000001"


class Failure(AssertionError):
    pass


def expect(cond, what):
    if not cond:
        raise Failure(what)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise Failure(f"{what}: expected {expected!r}, got {actual!r}")


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent():
    if _prctl is not None:  # PR_SET_PDEATHSIG: the mock never outlives this test
        _prctl(1, signal.SIGKILL, 0, 0, 0)


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body, parse_float=decimal.Decimal)

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class Mock:
    """One mock process on a free port."""

    def __init__(self, *args):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, MOCK, "--port", "0", "--quiet", *args], stdout=subprocess.PIPE,
                                     stderr=self.err, preexec_fn=_die_with_parent)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline().decode() if ready else ""
        self.line = line.rstrip("\n")
        if not self.line.startswith("xero-mock listening on http://127.0.0.1:"):
            self.stop()
            raise Failure(f"the mock did not start: stdout {line!r}, stderr {self.stderr()!r}")
        self.port = int(self.line.rsplit(":", 1)[1])

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def stop(self, timeout=5):
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by PID
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def call(self, method, path, body=None, headers=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def ctl(self, method, path, obj=None, expect_status=(200, 201, 204)):
        r = self.call(method, "/_mock/" + path, obj)
        if r.status not in expect_status:
            raise Failure(f"control {method} /_mock/{path}: {r}")
        return r.json() if r.body else None

    # OAuth helpers -------------------------------------------------------------------------------
    def token(self, form, basic=True, client=(CLIENT_ID, CLIENT_SECRET)):
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        form = dict(form)
        if basic:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
        else:
            form.update(client_id=client[0], client_secret=client[1])
        return self.call("POST", "/connect/token", urllib.parse.urlencode(form), headers)

    def refresh(self, rt, **kw):
        return self.token({"grant_type": "refresh_token", "refresh_token": rt}, **kw)

    def api(self, path, at="at-1", tenant=T1, headers=None, timeout=10):
        h = {"Accept": "application/json"}
        if at:
            h["Authorization"] = "Bearer " + at
        if tenant:
            h["xero-tenant-id"] = tenant
        h.update(headers or {})
        return self.call("GET", path, headers=h, timeout=timeout)


M = None  # the mock of most tests


def setup(limits=None, **app):
    """Fresh state: the test app, one authorisation (refresh token rt-1, access token at-1) to T1, T2."""
    M.ctl("POST", "reset")
    settings = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **app}
    if limits is not None:
        settings["limits"] = limits
    M.ctl("PUT", "app", settings)
    return M.ctl("POST", "authorisations", {"refresh_token": "rt-1", "access_token": "at-1",
                                            "tenants": [{"tenantId": T1, "tenantName": "Org One"},
                                                        {"tenantId": T2, "tenantName": "Org Two"}]})


def put(kind, rid, text, tenant=T1, updated_ms=None):
    q = f"?updated_ms={updated_ms}" if updated_ms is not None else ""
    r = M.call("PUT", f"/_mock/tenants/{tenant}/{kind}/{rid}{q}", text)
    expect(r.status in (200, 201), f"PUT record: {r}")
    return r.json()


def invoice(rid, updated_ms, extra=""):
    return ('{"Type":"ACCREC","InvoiceID":"%s","InvoiceNumber":"INV-%s","Status":"AUTHORISED",'
            '"LineItems":[{"Description":"x","Quantity":1.0,"UnitAmount":1.00,"LineAmount":1.00}],'
            '"Total":1.00,"UpdatedDateUTC":"/Date(%d+0000)/"%s}' % (rid, rid[-4:], updated_ms, extra))


# ---------------------------------------------------------------------------------------------------
# Tests


def test_startup_line_and_health():
    expect(M.line == f"xero-mock listening on http://127.0.0.1:{M.port}", f"startup line {M.line!r}")
    expect_eq(M.ctl("GET", "health"), {"ok": True}, "health")


def test_refresh_rotation_grace_and_invalid_grant():
    setup()
    r1 = M.refresh("rt-1")
    expect_eq(r1.status, 200, "first refresh")
    t1 = r1.json()
    expect_eq(list(t1), ["id_token", "access_token", "expires_in", "token_type", "refresh_token", "scope"],
              "token response keys (fixtures/xero/oauth_token_refresh_response.json)")
    expect_eq((t1["expires_in"], t1["token_type"]), (1800, "Bearer"), "expires_in, token_type")
    expect(t1["refresh_token"] != "rt-1", "the refresh token rotated")
    expect("offline_access" in t1["scope"], "scope")
    # the old token again, inside the grace period: the same pair
    again = M.refresh("rt-1", basic=False).json()
    expect_eq((again["access_token"], again["refresh_token"]), (t1["access_token"], t1["refresh_token"]),
              "grace retry returns the pair issued for that token")
    # the new token rotates normally
    t2 = M.refresh(t1["refresh_token"]).json()
    expect(t2["refresh_token"] not in ("rt-1", t1["refresh_token"]), "second rotation")
    expect_eq(M.api("/connections", at=t2["access_token"], tenant=None).status, 200, "new access token works")
    expect_eq(M.api("/connections", at=t1["access_token"], tenant=None).status, 200, "old access token lives on")
    # past the grace period
    M.ctl("POST", "clock", {"advance": 1801})
    bad = M.refresh("rt-1")
    expect_eq((bad.status, bad.body), (400, b'{"error":"invalid_grant"}'),
              "outside grace (fixtures/xero/oauth_token_error_invalid_grant.json)")
    expect_eq(M.refresh(t1["refresh_token"]).status, 400, "second-generation token outside grace")
    expect_eq(M.refresh("never-issued").status, 400, "unknown refresh token")
    t3 = M.refresh(t2["refresh_token"])
    expect_eq(t3.status, 200, "the newest token still rotates")
    st = M.ctl("GET", "stats")["oauth"]
    expect_eq((st["token_refreshes"], st["grace_replays"], st["invalid_grant"]), (3, 1, 3), "oauth stats")


def test_grace_is_configurable_and_short_access_ttl():
    setup(grace=5, access_ttl=10)
    t = M.refresh("rt-1").json()
    expect_eq(t["expires_in"], 10, "configured access_ttl")
    M.ctl("POST", "clock", {"advance": 4})
    r = M.refresh("rt-1").json()
    expect_eq(r["refresh_token"], t["refresh_token"], "inside a 5 s grace")
    expect(r["expires_in"] in (5, 6), f"replayed expires_in counts down: {r['expires_in']}")
    M.ctl("POST", "clock", {"advance": 2})
    expect_eq(M.refresh("rt-1").status, 400, "after a 5 s grace")
    M.ctl("POST", "clock", {"advance": 5})
    expect_eq(M.api("/connections", at=t["access_token"], tenant=None).status, 401, "access token expired")


def test_client_authentication():
    setup()
    r = M.refresh("rt-1", client=(CLIENT_ID, "wrong"))
    expect_eq((r.status, r.json()), (401, {"error": "invalid_client"}), "wrong secret, Basic")
    r = M.refresh("rt-1", basic=False, client=("other", CLIENT_SECRET))
    expect_eq((r.status, r.json()), (401, {"error": "invalid_client"}), "wrong client id, body")
    r = M.call("POST", "/connect/token", "grant_type=refresh_token&refresh_token=rt-1",
               {"Content-Type": "application/x-www-form-urlencoded"})
    expect_eq(r.status, 401, "no client credentials")
    r = M.call("POST", "/connect/token", json.dumps({"grant_type": "refresh_token", "refresh_token": "rt-1"}),
               {"Content-Type": "application/json"})
    expect_eq((r.status, r.json()), (400, {"error": "invalid_request"}), "the token endpoint takes a form only")
    r = M.token({"grant_type": "password"})
    expect_eq((r.status, r.json()), (400, {"error": "unsupported_grant_type"}), "grant type")
    expect_eq(M.refresh("rt-1", basic=False).status, 200, "body credentials (as the recorded request)")
    expect_eq(M.ctl("GET", "stats")["oauth"]["invalid_client"], 3, "invalid_client count")


def test_authorize_code_flow_with_pkce():
    setup()
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    q = urllib.parse.urlencode({"response_type": "code", "client_id": CLIENT_ID,
                                "redirect_uri": "http://127.0.0.1:9/cb",
                                "scope": "openid offline_access accounting.transactions", "state": "xyz",
                                "code_challenge": challenge, "code_challenge_method": "S256"})
    r = M.call("GET", "/identity/connect/authorize?" + q)
    expect_eq(r.status, 302, "authorize redirects at once")
    loc = urllib.parse.urlsplit(r.headers["location"])
    params = dict(urllib.parse.parse_qsl(loc.query))
    expect_eq((loc.netloc, loc.path, params.get("state")), ("127.0.0.1:9", "/cb", "xyz"), "redirect target and state")
    code = params["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/cb",
            "code_verifier": verifier}
    expect_eq(M.token({**form, "redirect_uri": "http://127.0.0.1:9/other"}).status, 400, "redirect_uri must match")
    expect_eq(M.token({**form, "code_verifier": "w" * 50}).status, 400, "PKCE verifier must match")
    ok = M.token(form)
    expect_eq(ok.status, 200, "code exchange")
    tok = ok.json()
    expect("refresh_token" in tok, "offline_access gives a refresh token")
    expect_eq(M.token(form).json(), {"error": "invalid_grant"}, "a code is single use")
    conns = M.api("/connections", at=tok["access_token"], tenant=None).json()
    expect_eq(sorted(c["tenantId"] for c in conns), sorted([T1, T2]), "consent connects the known tenants")
    bad = M.call("GET", "/identity/connect/authorize?" + urllib.parse.urlencode(
        {"response_type": "code", "client_id": "nope", "redirect_uri": "http://127.0.0.1:9/cb"}))
    expect_eq(bad.status, 400, "unknown client_id")


def test_connections_and_tenant_header():
    auth = setup()
    r = M.api("/connections", tenant=None)
    expect_eq(r.status, 200, "connections")
    conns = r.json()
    expect_eq([(c["tenantId"], c["tenantName"], c["tenantType"]) for c in conns],
              [(T1, "Org One", "ORGANISATION"), (T2, "Org Two", "ORGANISATION")], "connections")
    expect_eq(set(conns[0]), {"id", "authEventId", "tenantId", "tenantType", "tenantName", "createdDateUtc",
                              "updatedDateUtc"}, "connection fields")
    expect_eq(conns[0]["authEventId"], auth["authEventId"], "authEventId")
    put("invoices", INV, invoice(INV, 1_600_000_000_000))
    put("invoices", INV, invoice(INV, 1_600_000_000_000), tenant=T3)
    expect_eq(M.api(f"/api.xro/2.0/Invoices/{INV}").status, 200, "right tenant")
    expect_eq(M.api(f"/api.xro/2.0/Invoices/{INV}", tenant=T1.upper()).status, 200, "tenant id case-insensitive")
    expect_eq(M.api(f"/api.xro/2.0/Invoices/{INV}", tenant=None).status, 403, "no xero-tenant-id")
    expect_eq(M.api(f"/api.xro/2.0/Invoices/{INV}", tenant=T3).status, 403, "tenant not of this token")
    expect_eq(M.api(f"/api.xro/2.0/Invoices/{INV}", at="bogus").status, 401, "unknown bearer")
    expect_eq(M.api(f"/api.xro/2.0/Invoices/{INV}", at=None).status, 401, "no bearer")
    expect_eq(M.api(f"/api.xro/2.0/Invoices/{INV}", tenant=T2).status, 404, "other tenant of the token: no invoice")
    st = M.ctl("GET", "stats")
    expect_eq(st["unauthorised"], {"401": 2, "403": 2}, "refused calls are counted apart")
    expect_eq(st["tenants"][T1]["calls_total"], 2, "only authenticated calls count for a tenant")


def test_exact_decimals_verbatim():
    setup()
    raw = ('{"Type":"ACCREC","InvoiceID":"%s","InvoiceNumber":"INV-9","Status":"AUTHORISED",'
           '"LineItems":[{"Description":"a","Quantity":3.0000,"UnitAmount":12.3456,"LineAmount":37.04},'
           '{"Description":"b","Quantity":1,"UnitAmount":0.1,"LineAmount":0.1},'
           '{"Description":"c","Quantity":1,"UnitAmount":0.2,"LineAmount":0.2}],'
           '"SubTotal":1234567.89,"TotalTax":0.30,"Total":1234568.19,"AmountDue":100.10,"AmountPaid":0.0,'
           '"CurrencyRate":1.000000,"Big":12345678901234567890.123456789,'
           '"UpdatedDateUTC":"/Date(1552329729002+0000)/","CurrencyCode":"NZD"}' % INV)
    put("invoices", INV, raw)
    expect_eq(M.call("GET", f"/_mock/tenants/{T1}/invoices/{INV}").body.decode(), raw, "stored verbatim")
    escaped = raw.replace("/Date(1552329729002+0000)/", "\\/Date(1552329729002+0000)\\/")
    one = M.api(f"/api.xro/2.0/Invoices/{INV}?unitdp=4")  # four-place unit amounts as stored (P2.5)
    expect_eq(one.status, 200, "GET by id")
    body = one.body.decode()
    expect(escaped in body, f"the record is spliced byte for byte, with \\/Date escaped: {body}")
    for tok in ('"UnitAmount":12.3456', '"UnitAmount":0.1,', '"UnitAmount":0.2,', '"SubTotal":1234567.89',
                '"AmountDue":100.10', '"TotalTax":0.30', '"CurrencyRate":1.000000',
                '"Big":12345678901234567890.123456789'):
        expect(tok in body, f"{tok} verbatim")
    env = one.json()
    expect_eq(list(env)[:4], ["Id", "Status", "ProviderName", "DateTimeUTC"], "envelope")
    expect_eq(env["Status"], "OK", "Status")
    expect(body.count('"DateTimeUTC":"\\/Date(') == 1, "DateTimeUTC escaped on the wire")
    inv = env["Invoices"][0]
    expect_eq((inv["SubTotal"], inv["LineItems"][1]["UnitAmount"], inv["AmountDue"]),
              (decimal.Decimal("1234567.89"), decimal.Decimal("0.1"), decimal.Decimal("100.10")), "decoded")
    lst = M.api(f"/api.xro/2.0/Invoices?IDs={INV}&page=1&unitdp=4").body.decode()
    expect(escaped in lst, "paged list splices verbatim too")
    # a contact and a credit note keep theirs as well
    c = '{"ContactID":"c1","Name":"Zoë","Balances":{"AccountsReceivable":{"Outstanding":0.10}}}'
    put("contacts", "c1", c, updated_ms=1)
    expect('"Outstanding":0.10' in M.api("/api.xro/2.0/Contacts/c1").body.decode(), "contact decimals")
    cn = '{"CreditNoteID":"cn1","Total":14.20,"RemainingCredit":0.01}'
    put("creditnotes", "cn1", cn, updated_ms=2)
    b = M.api("/api.xro/2.0/CreditNotes/cn1").body.decode()
    expect('"Total":14.20' in b and '"RemainingCredit":0.01' in b, "credit note decimals")


def test_unit_amounts_rounded_unless_unitdp_4():
    """P2.5: without unitdp=4 Xero rounds line-item unit amounts to 2 decimals; with it they keep 4. Only
    UnitAmount changes (Quantity, LineAmount and totals keep their text), on single GETs and paged lists
    of invoices and credit notes alike."""
    auth = setup()["authEventId"]
    raw = ('{"Type":"ACCREC","InvoiceID":"%s","Status":"AUTHORISED","LineItems":['
           '{"Description":"a","Quantity":2.5000,"UnitAmount":1.2345,"LineAmount":3.09},'
           '{"Description":"b","Quantity":1,"UnitAmount":0.125,"LineAmount":0.13},'
           '{"Description":"c","Quantity":1,"UnitAmount":-0.005,"LineAmount":-0.01},'
           '{"Description":"d","Quantity":1,"UnitAmount":100.10,"LineAmount":100.10},'
           '{"Description":"e","Quantity":1,"UnitAmount":7,"LineAmount":7}],'
           '"Total":110.31,"UpdatedDateUTC":"/Date(1552329729002+0000)/"}' % INV)
    put("invoices", INV, raw)
    cn = '{"CreditNoteID":"cn1","LineItems":[{"UnitAmount":12.3456,"Quantity":1.0000}],"Total":12.35}'
    put("creditnotes", "cn1", cn, updated_ms=2)

    def units(body, key="Invoices"):
        return [str(li["UnitAmount"]) for li in json.loads(body, parse_float=decimal.Decimal)[key][0]["LineItems"]]

    rounded = ["1.23", "0.13", "-0.01", "100.10", "7"]  # half away from zero; 2 places or fewer untouched
    for path in (f"/api.xro/2.0/Invoices/{INV}", f"/api.xro/2.0/Invoices?IDs={INV}&page=1",
                 f"/api.xro/2.0/Invoices/{INV}?unitdp=2"):
        b = M.api(path).body.decode()
        expect_eq(units(b), rounded, f"{path}: unit amounts rounded")
        expect('"Quantity":2.5000' in b and '"LineAmount":3.09' in b and '"Total":110.31' in b,
               f"{path}: the other amounts are verbatim: {b}")
    for path in (f"/api.xro/2.0/Invoices/{INV}?unitdp=4", f"/api.xro/2.0/Invoices?page=1&unitdp=4&IDs={INV}",
                 f"/api.xro/2.0/Invoices/{INV}?UnitDP=4"):
        b = M.api(path).body.decode()
        expect_eq(units(b), ["1.2345", "0.125", "-0.005", "100.10", "7"], f"{path}: four places kept")
        expect('"UnitAmount":1.2345,' in b, f"{path}: byte for byte")
    expect_eq(units(M.api("/api.xro/2.0/CreditNotes/cn1").body.decode(), "CreditNotes"), ["12.35"],
              "credit-note unit amounts are rounded too")
    expect_eq(units(M.api("/api.xro/2.0/CreditNotes?page=1&unitdp=4").body.decode(), "CreditNotes"), ["12.3456"],
              "and kept with unitdp=4")
    expect_eq(M.call("GET", f"/_mock/tenants/{T1}/invoices/{INV}").body.decode(), raw, "the stored text is unchanged")
    log = M.ctl("GET", "requests")
    expect(any("unitdp=4" in e["query"] for e in log), "the request log keeps the query (a client can be checked)")
    expect_eq({e["auth"] for e in log}, {auth}, "and the authorisation whose token made each call")


def test_ids_paging_if_modified_since_and_lineitems():
    setup(limits={"minute": 1000})
    base = 1_700_000_000_000
    recs = ",".join(invoice("bbbbbbbb-0000-4000-8000-%012d" % i, base + i * 1000) for i in range(250))
    summary = M.ctl("POST", "load", json.loads('{"tenants":{"%s":{"invoices":[%s]}}}' % (T1, recs)))
    expect_eq(summary["records"], 250, "load")
    ids = ["bbbbbbbb-0000-4000-8000-%012d" % i for i in range(250)]
    pages = []
    for p in (1, 2, 3, 4):
        r = M.api(f"/api.xro/2.0/Invoices?page={p}")
        expect_eq(r.status, 200, f"page {p}")
        pages.append(r.json())
    expect_eq([len(p["Invoices"]) for p in pages], [100, 100, 50, 0], "100 per page, an empty page at the end")
    expect_eq(pages[0]["pagination"], {"page": 1, "pageSize": 100, "pageCount": 3, "itemCount": 250}, "pagination")
    got = [i["InvoiceID"] for p in pages for i in p["Invoices"]]
    expect_eq(got, ids, "every record once, oldest UpdatedDateUTC first")
    expect("LineItems" in pages[0]["Invoices"][0], "paged lists carry line items")
    r = M.api(f"/api.xro/2.0/Invoices?IDs={ids[5]},{ids[7].upper()},cccccccc-0000-4000-8000-000000000000")
    inv = r.json()["Invoices"]
    expect_eq([i["InvoiceID"] for i in inv], [ids[5], ids[7]], "IDs: unknown ids are absent")
    expect("LineItems" not in inv[0] and inv[0]["Total"] == decimal.Decimal("1.00"), "unpaged list: no LineItems")
    expect("pagination" not in r.json(), "no pagination without page")
    # If-Modified-Since: strictly after, ISO 8601 and RFC 1123
    cut = base + 239 * 1000  # record 239 was updated exactly then
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut // 1000))
    r = M.api("/api.xro/2.0/Invoices?page=1", headers={"If-Modified-Since": iso})
    expect_eq([i["InvoiceID"] for i in r.json()["Invoices"]], ids[240:], "ISO 8601, strictly after")
    rfc = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(cut // 1000))
    r = M.api("/api.xro/2.0/Invoices?page=1", headers={"If-Modified-Since": rfc})
    expect_eq(len(r.json()["Invoices"]), 10, "RFC 1123")
    iso_ms = iso + ".500Z"
    r = M.api("/api.xro/2.0/Invoices?page=1", headers={"If-Modified-Since": iso_ms})
    expect_eq(len(r.json()["Invoices"]), 10, "ISO with milliseconds and Z")
    off = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut // 1000 - 8 * 3600)) + ".000-08:00"
    r = M.api("/api.xro/2.0/Invoices?page=1", headers={"If-Modified-Since": off})
    expect_eq(len(r.json()["Invoices"]), 10, "ISO with an offset")
    r = M.api("/api.xro/2.0/Invoices?page=1", headers={"If-Modified-Since": "yesterday-ish"})
    expect_eq(r.status, 400, "an unparseable If-Modified-Since is refused")
    r = M.api("/api.xro/2.0/Invoices?page=1&pageSize=7&order=UpdatedDateUTC%20DESC")
    expect_eq([i["InvoiceID"] for i in r.json()["Invoices"]], ids[::-1][:7], "pageSize and order DESC")
    log = M.ctl("GET", "requests")
    expect(any(e["if_modified_since"] == rfc for e in log), "the request log keeps If-Modified-Since")


def test_record_control_updated_ms_and_delete():
    setup()
    created = put("invoices", INV, '{"Status":"DRAFT","UpdatedDateUTC":"/Date(1000+0000)/","UpdatedDateUTCString":"x"}')
    expect_eq(created["updated_ms"], 1000, "UpdatedDateUTC read from the record")
    r = put("invoices", INV, '{"InvoiceID":"%s","Status":"PAID","UpdatedDateUTC":"/Date(1000+0000)/",'
            '"UpdatedDateUTCString":"x","Contact":{"UpdatedDateUTC":"/Date(5+0000)/"}}' % INV, updated_ms=1552329729002)
    expect_eq(r["updated_ms"], 1552329729002, "updated_ms rewrites it")
    inv = M.api(f"/api.xro/2.0/Invoices/{INV}").json()["Invoices"][0]
    expect_eq((inv["UpdatedDateUTC"], inv["UpdatedDateUTCString"], inv["Contact"]["UpdatedDateUTC"]),
              ("/Date(1552329729002+0000)/", "2019-03-11T18:42:09Z", "/Date(5+0000)/"),
              "top-level date rewritten, nested one untouched")
    bad = M.call("PUT", f"/_mock/tenants/{T1}/invoices/{INV}", '{"InvoiceID":"other"}')
    expect_eq(bad.status, 400, "body id must match the path")
    expect_eq(M.call("PUT", f"/_mock/tenants/{T1}/invoices/x", "[1]").status, 400, "not an object")
    expect_eq(M.api("/api.xro/2.0/Invoices/INV-none").status, 404, "unknown id")
    expect_eq(M.call("DELETE", f"/_mock/tenants/{T1}/invoices/{INV}").status, 204, "delete")
    expect_eq(M.api(f"/api.xro/2.0/Invoices/{INV}").status, 404, "deleted")
    expect_eq(M.call("DELETE", f"/_mock/tenants/{T1}/invoices/{INV}").status, 404, "delete twice")


def test_minute_limit_70_calls():
    setup()
    put("invoices", INV, invoice(INV, 1))
    statuses, mins = [], []
    for _ in range(70):
        r = M.api(f"/api.xro/2.0/Invoices/{INV}")
        statuses.append(r.status)
        if r.status == 200:
            mins.append(int(r.headers["x-minlimit-remaining"]))
            for h in ("x-daylimit-remaining", "x-appminlimit-remaining"):
                expect(h in r.headers, f"{h} on every response")
        else:
            last429 = r
    expect_eq((statuses.count(200), statuses.count(429)), (60, 10), "60 per minute, then 429")
    expect_eq(statuses[:60], [200] * 60, "the first 60 pass")
    expect_eq(mins[0], 59, "X-MinLimit-Remaining after the first call")
    expect_eq(mins[-1], 0, "after the 60th")
    expect_eq(last429.headers.get("x-rate-limit-problem"), "minute", "X-Rate-Limit-Problem")
    ra = int(last429.headers["retry-after"])
    expect(1 <= ra <= 60, f"Retry-After {ra}")
    expect_eq(last429.headers.get("x-minlimit-remaining"), "0", "X-MinLimit-Remaining on the 429")
    st = M.ctl("GET", "stats")
    t = st["tenants"][T1]
    expect_eq((t["calls_total"], t["max_calls_in_any_60s_window"], t["over_limit_count"], t["sent_429"]),
              (70, 70, 10, 10), "tenant stats")
    expect_eq(t["over_limit_by_problem"], {"minute": 10}, "by problem")
    expect_eq(st["violations"], 10, "violations")
    expect_eq(st["app"]["max_calls_per_minute"], 70, "app max per minute")
    expect_eq(M.api(f"/api.xro/2.0/Invoices/{INV}", tenant=T2).status, 404, "the other tenant has its own quota")
    M.ctl("POST", "clock", {"advance": 61})
    expect_eq(M.api(f"/api.xro/2.0/Invoices/{INV}").status, 200, "a minute later")


def _parallel(n, fn):
    out = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_concurrency_limit():
    setup()
    put("invoices", INV, invoice(INV, 1))
    M.ctl("POST", "faults", {"mode": "slow", "delay_ms": 2000, "count": 0})
    t0 = time.monotonic()
    res = _parallel(8, lambda: M.api(f"/api.xro/2.0/Invoices/{INV}"))
    codes = sorted(r.status for r in res)
    expect_eq(codes, [200] * 5 + [429] * 3, "5 concurrent, the rest 429")
    expect(time.monotonic() - t0 < 6, "slow calls ran in parallel (the lock is not held while sleeping)")
    rej = [r for r in res if r.status == 429]
    expect_eq({r.headers["x-rate-limit-problem"] for r in rej}, {"concurrent"}, "problem concurrent")
    t = M.ctl("GET", "stats")["tenants"][T1]
    expect(t["max_concurrent"] >= 6, f"max_concurrent counts every attempt: {t['max_concurrent']}")
    expect_eq(t["over_limit_by_problem"], {"concurrent": 3}, "violations")
    expect_eq(t["in_flight"], 0, "nothing left in flight")


def test_well_behaved_client_has_no_violations():
    setup()
    put("invoices", INV, invoice(INV, 1))
    M.ctl("POST", "faults", {"mode": "slow", "delay_ms": 300, "count": 0})
    for _ in range(3):  # waves of 5: a client that keeps to 5 in flight
        res = _parallel(5, lambda: M.api(f"/api.xro/2.0/Invoices/{INV}"))
        expect_eq([r.status for r in res], [200] * 5, "5 in flight")
    st = M.ctl("GET", "stats")
    t = st["tenants"][T1]
    expect_eq((st["violations"], t["max_concurrent"]), (0, 5), "no violations, 5 at most")
    expect(t["max_calls_in_any_60s_window"] <= 60, "within the minute limit")


def test_day_and_app_limits_and_non_enforcing_mode():
    setup(limits={"day": 3, "appminute": 5})
    put("invoices", INV, invoice(INV, 1))
    s = [M.api(f"/api.xro/2.0/Invoices/{INV}") for _ in range(4)]
    expect_eq([r.status for r in s], [200, 200, 200, 429], "day limit 3")
    expect_eq((s[3].headers["x-rate-limit-problem"], s[3].headers["x-daylimit-remaining"]), ("day", "0"), "day 429")
    expect(int(s[3].headers["retry-after"]) > 60, "day Retry-After is long")
    s = [M.api(f"/api.xro/2.0/Invoices/{INV}", tenant=T2) for _ in range(3)]
    expect_eq([r.status for r in s], [404, 404, 429], "app minute 5 across tenants (3 + 2)")
    expect_eq(s[2].headers["x-rate-limit-problem"], "appminute", "appminute")
    st = M.ctl("GET", "stats")
    expect_eq((st["app"]["over_limit_count"], st["violations"]), (1, 2), "app and tenant violations")
    # measuring without refusing
    setup(limits={"minute": 2}, enforce_limits=False)
    put("invoices", INV, invoice(INV, 1))
    s = [M.api(f"/api.xro/2.0/Invoices/{INV}").status for _ in range(4)]
    expect_eq(s, [200] * 4, "enforce_limits false never refuses")
    expect_eq(M.ctl("GET", "stats")["tenants"][T1]["over_limit_count"], 2, "but counts")


def test_faults():
    setup()
    put("invoices", INV, invoice(INV, 1))
    path = f"/api.xro/2.0/Invoices/{INV}"
    M.ctl("POST", "faults", {"mode": "429", "count": 3, "retry_after": 7, "problem": "minute"})
    s = [M.api(path) for _ in range(4)]
    expect_eq([r.status for r in s], [429, 429, 429, 200], "429 storm of 3")
    expect_eq((s[0].headers["retry-after"], s[0].headers["x-rate-limit-problem"], s[0].headers["x-minlimit-remaining"]),
              ("7", "minute", "0"), "429 headers")
    expect_eq(s[0].body, b"oauth_problem=rate%20limit%20exceeded&oauth_problem_advice=please%20wait%20before"
              b"%20retrying%20the%20xero%20api", "429 body (fixtures/xero/api_429_rate_limited_day.http)")
    M.ctl("POST", "faults", {"mode": "429", "count": 1, "retry_after": 3600, "problem": "day"})
    r = M.api(path)
    expect_eq((r.status, r.headers["x-rate-limit-problem"], r.headers["retry-after"]), (429, "day", "3600"), "day")
    M.ctl("POST", "faults", {"mode": "500", "count": 1})
    expect_eq([M.api(path).status, M.api(path).status], [500, 200], "one 500")
    M.ctl("POST", "faults", {"mode": "slow", "delay_ms": 400, "count": 1})
    t0 = time.monotonic()
    expect_eq(M.api(path).status, 200, "slow still answers")
    expect(time.monotonic() - t0 >= 0.38, "slow waited")
    M.ctl("POST", "faults", {"mode": "drop", "count": 1})
    try:
        r = M.api(path)
        raise Failure(f"drop answered {r}")
    except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine):
        pass
    expect_eq(M.api(path).status, 200, "after the drop")
    M.ctl("POST", "faults", {"mode": "500", "count": 0, "tenant": T2})
    expect_eq([M.api(path, tenant=T2).status, M.api(path, tenant=T2).status, M.api(path).status], [500, 500, 200],
              "a tenant fault until cleared hits only that tenant")
    M.ctl("POST", "faults", {"mode": "none"})
    expect_eq(M.api(path, tenant=T2).status, 404, "cleared")
    t = M.ctl("GET", "stats")["tenants"][T1]
    expect_eq((t["sent_429_fault"], t["over_limit_count"]), (4, 0), "injected 429s are not violations")
    expect_eq(t["statuses"].get("drop"), 1, "drop counted")


def test_token_response_lost_then_grace_retry():
    setup()
    M.ctl("POST", "faults", {"mode": "drop", "target": "token", "count": 1})
    try:
        r = M.refresh("rt-1")
        raise Failure(f"drop answered {r}")
    except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine):
        pass
    r = M.refresh("rt-1")
    expect_eq(r.status, 200, "the retry of the lost refresh works inside grace")
    st = M.ctl("GET", "stats")["oauth"]
    expect_eq((st["token_refreshes"], st["grace_replays"]), (1, 1), "the lost one did rotate")
    M.ctl("POST", "faults", {"mode": "500", "target": "token", "count": 1})
    expect_eq(M.refresh(r.json()["refresh_token"]).status, 500, "token 500")
    expect_eq(M.refresh(r.json()["refresh_token"]).status, 200, "a 500 did not rotate")


def test_pretty_crlf_keeps_decimals():
    setup(pretty=True)
    put("invoices", INV, '{"InvoiceID":"%s","Total":100.10,"Lines":[],"UpdatedDateUTC":"/Date(7+0000)/"}' % INV)
    b = M.api(f"/api.xro/2.0/Invoices/{INV}").body.decode()
    expect(b.startswith('{\r\n  "Id": "'), f"pretty with CRLF: {b[:40]!r}")
    expect('"Total": 100.10' in b and '"Lines": []' in b and '"\\/Date(7+0000)\\/"' in b, b)


def test_revocation():
    setup()
    t = M.refresh("rt-1").json()
    r = M.call("POST", "/connect/revocation", urllib.parse.urlencode(
        {"token": t["refresh_token"], "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
        {"Content-Type": "application/x-www-form-urlencoded"})
    expect_eq(r.status, 200, "revocation")
    expect_eq(M.api("/connections", at=t["access_token"], tenant=None).status, 401, "revoked access token")
    expect_eq(M.refresh(t["refresh_token"]).status, 400, "revoked refresh token")


def test_state_file_seed():
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write('{"app":{"client_id":"sf","client_secret":"sfs","access_ttl":60},'
                '"authorisations":[{"refresh_token":"sf-rt","tenants":["%s"]}],'
                '"tenants":{"%s":{"tenantName":"Seeded","contacts":[{"ContactID":"k1","Discount":13.50}],'
                '"invoices":["{\\"InvoiceID\\":\\"i1\\",\\"Total\\":0.30}"]}}}' % (T3, T3))
    m = Mock("--state", f.name)
    try:
        r = m.token({"grant_type": "refresh_token", "refresh_token": "sf-rt"}, client=("sf", "sfs"))
        expect_eq(r.status, 200, "seeded app and refresh token")
        at = r.json()["access_token"]
        expect_eq(r.json()["expires_in"], 60, "seeded access_ttl")
        expect_eq(m.api("/connections", at=at, tenant=None).json()[0]["tenantName"], "Seeded", "seeded tenant")
        expect('"Discount":13.50' in m.api("/api.xro/2.0/Contacts/k1", at=at, tenant=T3).body.decode(), "raw kept")
        expect('"Total":0.30' in m.api("/api.xro/2.0/Invoices/i1", at=at, tenant=T3).body.decode(), "string record")
        m.ctl("POST", "reset", {"seed": True})
        expect_eq(m.ctl("GET", "tenants")[T3]["contacts"], 1, "reset with seed restores it")
        m.ctl("POST", "reset")
        expect_eq(m.ctl("GET", "tenants"), {}, "plain reset empties")
    finally:
        m.stop()
        os.unlink(f.name)


def test_demo_seed_and_sigterm():
    m = Mock("--demo")
    try:
        r = m.token({"grant_type": "refresh_token", "refresh_token": "demo-refresh-token"},
                    client=("demo-client", "demo-secret"), basic=False)
        expect_eq(r.status, 200, "demo credentials")
        at = r.json()["access_token"]
        conns = m.api("/connections", at=at, tenant=None).json()
        expect_eq(len(conns), 1, "one demo tenant")
        tid = conns[0]["tenantId"]
        b = m.api("/api.xro/2.0/Invoices/a03ffcd2-5d91-4c7e-b483-318584e9e439", at=at, tenant=tid).body.decode()
        expect('"Amount": 148062.76' in b, "the fixture invoice, verbatim")
        expect_eq(m.api("/api.xro/2.0/Invoices/INV-0006", at=at, tenant=tid).status, 200, "by InvoiceNumber")
        inv = m.api("/api.xro/2.0/Invoices?page=1", at=at, tenant=tid).json()["Invoices"]
        expect_eq(len(inv), 4, "four fixture invoices")
        # the contact of fixtures/xero/webhook_contact_update.json
        wh = json.load(open(os.path.join(os.path.dirname(os.path.dirname(HERE)), "fixtures", "xero",
                                         "webhook_contact_update.json")))["events"][0]
        expect_eq(tid, wh["tenantId"], "the demo tenant is the webhook fixture's")
        expect_eq(m.api(f"/api.xro/2.0/Contacts/{wh['resourceId']}", at=at, tenant=tid).status, 200, "webhook contact")
        expect_eq(len(m.api("/api.xro/2.0/CreditNotes?page=1", at=at, tenant=tid).json()["CreditNotes"]), 1,
                  "a credit note")
    finally:
        t0 = time.monotonic()
        rc = m.stop()
    expect_eq(rc, 0, "SIGTERM exits 0")
    expect(time.monotonic() - t0 < 3, "and promptly")


def main():
    global M
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    wanted = sys.argv[1:]
    if wanted:
        tests = [(n, f) for n, f in tests if n in wanted]
    passed = failed = 0
    try:
        M = Mock()
    except Failure as e:
        print(f"not ok - start the mock\n  {e}\n0 passed, 1 failed")
        return 1
    try:
        for name, fn in tests:
            t0 = time.monotonic()
            try:
                fn()
            except Exception:  # noqa: BLE001 (any error fails the test)
                failed += 1
                msg = traceback.format_exc() if not isinstance(sys.exc_info()[1], Failure) else str(sys.exc_info()[1])
                print(f"not ok - {name}\n" + "\n".join("  " + x for x in msg.splitlines()))
            else:
                passed += 1
                print(f"ok - {name} ({time.monotonic() - t0:.1f}s)")
            sys.stdout.flush()
    finally:
        rc = M.stop()
        err = M.stderr()
    if "internal error" in err:
        failed += 1
        print("not ok - the mock logged internal errors\n" + err)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or rc not in (0, None) else 0


if __name__ == "__main__":
    sys.exit(main())
