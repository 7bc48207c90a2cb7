# SPDX-License-Identifier: MIT
"""test_api_invoices.py: the portal API's guard and its first routes (GET /v1/me, /v1/invoices, /v1/invoices/{id})
against the real binary, PostgreSQL and Redis. Two organisations X and Y; customers A and B of X, C of Y; invoices
seeded in SQL as the Xero mirror stores them, with payment states and payments.

What is checked: a client sees only its own customer's visible invoices (never DRAFT, SUBMITTED, DELETED, never a
bill), with money as exact decimal strings in the currency's decimals (GBP, JPY, KWD); paging covers every invoice
exactly once; another customer's or organisation's invoice is 404; anonymous, malformed, wrongly signed, expired,
wrong-audience and revoked (Redis deny list) tokens are 401 with WWW-Authenticate; unknown and out-of-range query
parameters are 400 naming the field; ETag and If-None-Match give 304; an admin sees its organisation's invoices
only; CORS is off unless configured. And an access matrix generated from `settled routes --json`: every /v1 route
of the table x anonymous / client A / client B / admin X / admin Y, so a new route joins it by being in the table.

Tokens are minted here (HS256 with SETTLED_JWT_SECRET, the claims of gateway/domain/auth.h as auth.c checks them:
sub, org and a client's customer as decimal strings, role, iss "settled", aud "settled-portal", iat, nbf, exp, a
base64url jti), independently of auth.c's own issuer.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import time
import urllib.parse

import harness as h
import openapi_check
from harness import expect, expect_eq, expect_in

JWT_SECRET = "test-portal-jwt-secret-0123456789abcdef"
TX = "11111111-1111-4111-8111-111111111111"
TY = "22222222-2222-4222-8222-222222222222"
FILLERS = 21  # extra AUTHORISED invoices of customer A, for paging


def jwt_env():
    """The server's settings: the token key, and no queue workers (their payments sweep would reconcile the seeded
    invoices, and the states seeded here are what is checked); a Xero app, so that GET /v1/admin/xero/connect can
    make its URL."""
    return {"SETTLED_WORKERS": 0, "SETTLED_JWT_SECRET": JWT_SECRET, "SETTLED_XERO_CLIENT_ID": "matrix-client",
            "SETTLED_XERO_CLIENT_SECRET": "matrix-client-secret",
            "SETTLED_SECRET_KEY": base64.b64encode(bytes(range(32))).decode(),
            "SETTLED_XERO_REDIRECT_URI": "http://127.0.0.1:9/v1/xero/callback"}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(sub, org, role, customer=None, secret=JWT_SECRET, exp_in=600, nbf_in=0, iss="settled",
         aud="settled-portal", alg="HS256", jti=None):
    """An access token as gateway/domain/auth.h describes it."""
    now = int(time.time())
    payload = {"sub": str(sub), "org": str(org), "role": role, "iss": iss, "aud": aud, "iat": now,
               "nbf": now + nbf_in, "exp": now + exp_in, "jti": jti or secrets.token_urlsafe(16)}
    if customer is not None:
        payload["customer"] = str(customer)
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    sig = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def redis_cmd(*args):
    """One command to the test Redis in RESP, standard library only; returns the raw reply line."""
    u = urllib.parse.urlsplit(h.redis_url())
    with socket.create_connection((u.hostname, u.port or 6379), timeout=5) as s:
        msg = f"*{len(args)}\r\n" + "".join(f"${len(str(a).encode())}\r\n{a}\r\n" for a in args)
        s.sendall(msg.encode())
        return s.recv(1024).decode()


def seed(db):
    """Organisations X and Y, customers A, B (X) and C (Y), their Xero contacts and invoices. Returns ids."""
    ids = {}
    for slug in ("org-x", "org-y"):
        ids[slug] = h.sql_value(db, "WITH i AS (INSERT INTO organisations (slug, name) VALUES ($1, $1) RETURNING id) "
                                     "SELECT id FROM i", slug)
    x, y = ids["org-x"], ids["org-y"]
    for name, org in (("A", x), ("B", x), ("C", y)):
        ids[name] = h.sql_value(db, "WITH i AS (INSERT INTO customers (organisation_id, name, email) "
                                    "VALUES ($1, $2, $3) RETURNING id) SELECT id FROM i", org, f"Customer {name}", f"{name.lower()}@example.com")
    contacts = {"A": (x, TX, "aaaaaaaa-0000-4000-8000-000000000001"),
                "B": (x, TX, "bbbbbbbb-0000-4000-8000-000000000002"),
                "C": (y, TY, "cccccccc-0000-4000-8000-000000000003")}
    for name, (org, tenant, cid) in contacts.items():
        h.sql(db, "INSERT INTO xero_contacts (organisation_id, tenant_id, contact_id, name, updated_date_utc, raw, "
                  "customer_id) VALUES ($1, $2, $3, $4, now(), '{}', $5)", org, tenant, cid, f"Contact {name}",
              ids[name])

    n = [0]

    def invoice(owner, sid, status="AUTHORISED", currency="GBP", total="100.00", paid="0.00", due=None,
                credited="0.00", date="2026-01-15", due_date="2026-02-15", kind="ACCREC"):
        org, tenant, cid = contacts[owner]
        n[0] += 1
        iid = f"00000000-0000-4000-8000-{n[0]:012d}"
        h.sql(db, "INSERT INTO xero_invoices (organisation_id, tenant_id, invoice_id, invoice_number, type, status, "
                  "contact_id, currency_code, date, due_date, total, amount_due, amount_paid, amount_credited, "
                  "updated_date_utc, raw, settled_invoice_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                  "$11, $12, $13, $14, now(), '{}', $15)",
              org, tenant, iid, f"INV-{n[0]:04d}", kind, status, cid, currency, date, due_date, total,
              due if due is not None else total, paid, credited, sid)
        return iid

    a = {}
    a["inv_a1"] = invoice("A", "inv_a1", total="100.30", paid="0.30", due="100.00", date="2026-03-01",
                          due_date="2026-03-31")
    a["inv_a2"] = invoice("A", "inv_a2", currency="JPY", total="7891", due="7891", paid="0", credited="0",
                          date="2026-02-20")
    a["inv_a3"] = invoice("A", "inv_a3", currency="KWD", total="12.345", due="12.345", paid="0.000",
                          credited="0.000", date="2026-02-10")
    a["inv_a4"] = invoice("A", "inv_a4", status="VOIDED", date="2026-02-05")
    a["inv_a5"] = invoice("A", "inv_a5", status="PAID", total="50.00", due="0.00", paid="50.00", date="2026-02-01")
    hidden = {}
    for st in ("DRAFT", "SUBMITTED", "DELETED"):
        hidden[f"inv_a_{st.lower()}"] = invoice("A", f"inv_a_{st.lower()}", status=st, date="2026-02-02")
    hidden["inv_a_bill"] = invoice("A", "inv_a_bill", kind="ACCPAY", date="2026-02-03")
    for i in range(FILLERS):  # several on one day, so the keyset tie-break on the id is exercised
        sid = f"inv_af{i:02d}"
        a[sid] = invoice("A", sid, total=f"{i}.05", date=f"2026-01-{1 + i // 3:02d}", due_date=f"2026-01-{10 + i:02d}")
    b1 = invoice("B", "inv_b1", total="9.99")
    c1 = invoice("C", "inv_c1", total="1.00")

    # reconciliation's state for inv_a5 (paid from the ledger) and a Stripe payment and two lines on inv_a1
    h.sql(db, "INSERT INTO invoice_payment_states (organisation_id, tenant_id, invoice_id, currency, due_minor, "
              "paid_minor, net_paid_minor, outstanding_minor, state) VALUES ($1, $2, $3, 'GBP', 5000, 5000, 5000, 0, "
              "'paid')", x, TX, a["inv_a5"])
    h.sql(db, "INSERT INTO xero_invoice_lines (organisation_id, tenant_id, invoice_id, line_item_id, synthetic_id, "
              "position, description, quantity, unit_amount, line_amount, tax_amount, account_code) VALUES "
              "($1, $2, $3, gen_random_uuid(), false, 1, 'Consulting', 2.5000, 40.1200, 100.30, 0.00, '200'), "
              "($1, $2, $3, gen_random_uuid(), false, 2, $4, 1.0000, 0.0000, 0.00, 0.00, '200')",
          x, TX, a["inv_a1"], ROUNDING)
    h.sql(db, "INSERT INTO payments (organisation_id, provider, object_id, customer_id, xero_tenant_id, "
              "xero_invoice_id, amount_minor, currency, status, method, raw) VALUES ($1, 'stripe', 'pi_test_1', $2, "
              "$3, $4, 30, 'GBP', 'succeeded', 'card', '{}')", x, ids["A"], TX, a["inv_a1"])
    h.sql(db, "INSERT INTO users (id, organisation_id, email, role, customer_id, password_hash) "
              "VALUES (101, $1, 'ann@a.example', 'client', $2, '$scrypt$test$x')", x, ids["A"])
    # one stored webhook event of X, for the admin event routes of the access matrix
    ids["event_x"] = h.sql_value(db, "WITH i AS (INSERT INTO inbox_events (organisation_id, provider, source, event_id, "
                                     "event_type, body, headers, verified_at, received_at, correlation_id, status, "
                                     "attempts) VALUES ($1, 'stripe', 'default', 'evt_matrix_1', 'customer.created', "
                                     "'{}', '{}', now(), now(), 'matrix-1', 'done', 1) RETURNING id) SELECT id FROM i",
                             x)
    # one portal notification of A, for the notification routes of the access matrix
    ids["notification_a"] = h.sql_value(db, "SELECT id FROM notify_enqueue($1, $2, 'inv_a1', 'invoice_due', "
                                            "'portal', 'matrix-notification-a', NULL, 'Invoice INV-0001 is due', "
                                            "'Dear A', NULL, 'test', NULL)", x, ids["A"])
    ids.update(a_visible=a, a_hidden=hidden, b1=b1, c1=c1)
    return ids


class World:
    def __init__(self, env=None):
        self.db = h.new_database("api")
        self.ids = seed(self.db)
        x, y = self.ids["org-x"], self.ids["org-y"]
        self.tokens = {
            "client_a": mint(101, x, "client", self.ids["A"]),
            "client_b": mint(102, x, "client", self.ids["B"]),
            "admin_x": mint(201, x, "admin"),
            "admin_y": mint(202, y, "admin"),
        }
        self.env = jwt_env()
        self.env.update(env or {})
        self.server = None

    def get(self, path, who=None, headers=None, token=None):
        hdrs = dict(headers or {})
        tok = token or (self.tokens[who] if who else None)
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        status, rh, body = self.server.get(path, headers=hdrs)
        if path.startswith("/v1/"):
            openapi_check.response("GET", path, status, rh, body)  # the description holds for every answer
        return status, rh, body

    def send(self, method, path, who=None, body=None):
        """A write request with a JSON body (None: no body), checked against docs/openapi.yaml like GETs."""
        hdrs = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        status, rh, out = self.server.request(method, path, body=data, headers=hdrs)
        openapi_check.response(method, path, status, rh, out)
        return status, rh, out

    def json(self, path, who, status=200):
        st, rh, body = self.get(path, who)
        expect_eq(st, status, f"GET {path} as {who} (body {body[:300]!r})")
        return json.loads(body)


_world = None


def world():
    """The seeded database, made once for every test of the file."""
    global _world
    if _world is None:
        _world = World()
    return _world


def api_test(fn):
    """A test of its own server on the shared database (the harness stops every server after each test); the server
    must stop cleanly (no sanitizer report)."""
    def run():
        w = world()
        w.server = h.Settled(w.db, env=w.env)
        fn(w)
        w.server.stop()
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def list_all(w, who, query="", limit=7):
    """Every invoice of GET /v1/invoices, page by page; returns (ids in order, pages)."""
    seen, pages, cursor = [], 0, None
    while True:
        q = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "") + (f"&{query}" if query else "")
        doc = w.json(f"/v1/invoices?{q}", who)
        pages += 1
        expect(len(doc["data"]) <= limit, f"a page holds at most {limit}")
        seen += [inv["id"] for inv in doc["data"]]
        cursor = doc["next_cursor"]
        if cursor is None:
            return seen, pages
        expect(pages < 50, "paging ends")


@api_test
def test_client_lists_only_its_visible_invoices_exactly_once(w):
    ids, pages = list_all(w, "client_a")
    want = set(w.ids["a_visible"])
    expect_eq(len(ids), len(set(ids)), "no invoice is listed twice")
    expect_eq(set(ids), want, "client A sees exactly its visible invoices")
    expect_eq(pages, -(-len(want) // 7), "pages of 7")
    # the order is newest first, the id breaking ties
    st, rh, body = w.get("/v1/invoices?limit=100", "client_a")
    doc = json.loads(body)
    keys = [(inv["date"], inv["id"]) for inv in doc["data"]]
    expect_eq(keys, sorted(keys, reverse=True), "newest first, then by id")
    expect_eq(doc["next_cursor"], None, "one page of 100 holds everything")
    for hidden in w.ids["a_hidden"]:
        expect(hidden not in ids, f"{hidden} is not shown to a client")
    expect("inv_b1" not in ids and "inv_c1" not in ids, "no other customer's invoice")
    # the other orders page through the same invoices exactly once, each in its order
    for sort, key in (("due_date", lambda i: (i["due_date"] or "9999-12-31", i["id"])),
                      ("number", lambda i: (i["number"] or "", i["id"]))):
        ids, _ = list_all(w, "client_a", f"sort={sort}", limit=4)
        expect_eq(sorted(ids), sorted(want), f"sort={sort} lists every visible invoice once")
        doc = w.json(f"/v1/invoices?limit=100&sort={sort}", "client_a")
        keys = [key(i) for i in doc["data"]]
        expect_eq(keys, sorted(keys), f"sort={sort} ascending, then by id")
        expect_eq([i["id"] for i in doc["data"]], ids, f"sort={sort}: the pages in the same order as one page")
    # a cursor belongs to its order
    first = w.json("/v1/invoices?limit=2", "client_a")
    st, _, body = w.get(f"/v1/invoices?limit=2&sort=number&cursor={first['next_cursor']}", "client_a")
    expect_eq((st, json.loads(body).get("field")), (400, "cursor"), "another order's cursor is refused")
    # the default limit is 25
    doc = w.json("/v1/invoices", "client_a")
    expect_eq(len(doc["data"]), 25, "default limit")
    expect(doc["next_cursor"] is not None, "a next page after 25")


@api_test
def test_money_is_exact_decimal_strings(w):
    doc = w.json("/v1/invoices?limit=100", "client_a")
    by = {inv["id"]: inv for inv in doc["data"]}
    a1 = by["inv_a1"]
    expect_eq((a1["currency"], a1["total"], a1["amount_paid"], a1["amount_outstanding"], a1["amount_credited"]),
              ("GBP", "100.30", "0.30", "100.00", "0.00"), "GBP amounts")
    expect_eq((by["inv_a2"]["currency"], by["inv_a2"]["total"]), ("JPY", "7891"), "JPY has no decimals")
    expect_eq((by["inv_a3"]["currency"], by["inv_a3"]["total"]), ("KWD", "12.345"), "KWD has three")
    expect_eq(by["inv_a4"]["payment_state"], "voided", "a VOIDED invoice shows as voided")
    expect_eq(by["inv_a4"]["status"], "VOIDED", "Xero's status as it is")
    a5 = by["inv_a5"]
    expect_eq((a5["payment_state"], a5["amount_paid"], a5["amount_outstanding"]), ("paid", "50.00", "0.00"),
              "reconciliation's state and amounts")
    expect_eq(by["inv_af00"]["payment_state"], "unreconciled", "an invoice reconciliation has not seen yet")
    raw = w.get("/v1/invoices?limit=100", "client_a")[2].decode()
    expect(re.search(r'"total":\s*[0-9]', raw) is None, "no amount is a JSON number")
    expect_eq(sorted(a1.keys()), sorted(["id", "xero_invoice_id", "number", "status", "payment_state", "currency",
                                         "date", "due_date", "total", "amount_credited", "amount_paid",
                                         "amount_outstanding"]), "the fields of a listed invoice")


# a description with every character JSON must escape, and text beyond ASCII: the detail writes its JSON itself
ROUNDING = 'Rounding "adj." \\ 1/2\n\ttab \x01\x1f Café — ✓ 𝄞'


@api_test
def test_detail_has_lines_and_payments(w):
    d = w.json("/v1/invoices/inv_a1", "client_a")
    expect_eq(d["id"], "inv_a1", "id")
    expect_eq(d["xero_invoice_id"], w.ids["a_visible"]["inv_a1"], "xero id")
    expect_eq([(l["position"], l["description"], l["quantity"], l["unit_amount"], l["line_amount"])
               for l in d["lines"]],
              [(1, "Consulting", "2.5", "40.12", "100.30"), (2, ROUNDING, "1", "0.00", "0.00")], "lines")
    expect_eq([(p["provider"], p["amount"], p["currency"], p["status"]) for p in d["payments"]],
              [("stripe", "0.30", "GBP", "succeeded")], "payments")


@api_test
def test_other_customers_and_organisations_are_404(w):
    for who, sid in (("client_b", "inv_a1"), ("client_a", "inv_b1"), ("client_a", "inv_c1"),
                     ("admin_y", "inv_a1"), ("admin_x", "inv_c1"), ("client_a", "inv_a_draft"),
                     ("client_a", "inv_a_bill"), ("client_a", "inv_nonexistent")):
        st, rh, body = w.get(f"/v1/invoices/{sid}", who)
        h.expect_problem((st, rh, body), 404, "not_found", f"{who} on {sid}")
    # the problem of a missing invoice and of another's invoice are the same bytes but for the request id
    one = json.loads(w.get("/v1/invoices/inv_a1", "client_b")[2])
    two = json.loads(w.get("/v1/invoices/inv_nope", "client_b")[2])
    one.pop("request_id"), two.pop("request_id")
    expect_eq(one, two, "another's invoice is indistinguishable from none")


@api_test
def test_admin_sees_its_organisation_only(w):
    ids, _ = list_all(w, "admin_x", limit=10)
    want = set(w.ids["a_visible"]) | {"inv_b1", "inv_a_draft", "inv_a_submitted", "inv_a_deleted"}
    expect_eq(set(ids), want, "admin X: every sales invoice of X (drafts too), no bill, nothing of Y")
    ids_y, _ = list_all(w, "admin_y")
    expect_eq(ids_y, ["inv_c1"], "admin Y sees Y's only")
    expect_eq(w.json("/v1/invoices/inv_b1", "admin_x")["total"], "9.99", "admin X reads B's invoice")


@api_test
def test_filters(w):
    doc = w.json("/v1/invoices?status=VOIDED", "client_a")
    expect_eq([i["id"] for i in doc["data"]], ["inv_a4"], "status filter")
    doc = w.json("/v1/invoices?payment_state=paid", "client_a")
    expect_eq([i["id"] for i in doc["data"]], ["inv_a5"], "payment_state filter")
    doc = w.json("/v1/invoices?due_before=2026-01-12&limit=100", "client_a")
    expect_eq(sorted(i["id"] for i in doc["data"]), ["inv_af00", "inv_af01"], "due_before is exclusive")
    doc = w.json("/v1/invoices?due_after=2026-03-30&limit=100", "client_a")
    expect_eq([i["id"] for i in doc["data"]], ["inv_a1"], "due_after")
    ids, _ = list_all(w, "client_a", query="status=AUTHORISED", limit=4)
    expect_eq(len(ids), len(set(ids)), "filtered paging lists nothing twice")
    expect_eq(set(ids), {k for k in w.ids["a_visible"] if k not in ("inv_a4", "inv_a5")}, "filtered paging")


@api_test
def test_authentication(w):
    x = w.ids["org-x"]
    cases = {
        "anonymous": None,
        "garbage": "not-a-token",
        "wrong key": mint(101, x, "client", w.ids["A"], secret="another-secret-0123456789abcdefghij"),
        "expired": mint(101, x, "client", w.ids["A"], exp_in=-120),
        "not yet valid": mint(101, x, "client", w.ids["A"], nbf_in=300),
        "wrong audience": mint(101, x, "client", w.ids["A"], aud="someone-else"),
        "wrong issuer": mint(101, x, "client", w.ids["A"], iss="evil"),
        "alg none": mint(101, x, "client", w.ids["A"], alg="none"),
        "unknown role": mint(101, x, "superuser"),
    }
    for what, tok in cases.items():
        for path in ("/v1/invoices", "/v1/invoices/inv_a1", "/v1/me"):
            st, rh, body = w.get(path, token=tok)
            h.expect_problem((st, rh, body), 401, "unauthenticated", f"{what} on {path}")
            expect_in("Bearer", rh.get("www-authenticate", ""), f"WWW-Authenticate for {what}")
    st, rh, body = w.server.get("/v1/invoices", headers={"Authorization": f"Basic {w.tokens['client_a']}"})
    h.expect_problem((st, rh, body), 401, "unauthenticated", "not a Bearer token")
    # 401 comes before input checks: an anonymous caller learns nothing of the parameters
    st, rh, body = w.get("/v1/invoices?bogus=1")
    h.expect_problem((st, rh, body), 401, "unauthenticated", "anonymous with a bad parameter")


@api_test
def test_revoked_token(w):
    jti = secrets.token_urlsafe(16)
    tok = mint(101, w.ids["org-x"], "client", w.ids["A"], jti=jti)
    expect_eq(w.get("/v1/invoices", token=tok)[0], 200, "before logout")
    expect_in("+OK", redis_cmd("SET", f"settled:revoked:jti:{jti}", "1", "EX", "600"), "the deny-list key is set")
    st, rh, body = w.get("/v1/invoices", token=tok)
    h.expect_problem((st, rh, body), 401, "unauthenticated", "a revoked token")
    st, rh, body = w.get("/v1/invoices?bogus=1", token=tok)
    h.expect_problem((st, rh, body), 401, "unauthenticated", "a revoked token learns nothing of the parameters")
    expect_eq(w.get("/v1/invoices", "client_a")[0], 200, "another token of the same user still works")


@api_test
def test_parameters(w):
    for q, field in (("bogus=1", "bogus"), ("limit=10&Limit=3", "Limit")):
        st, rh, body = w.get(f"/v1/invoices?{q}", "client_a")
        p = h.expect_problem((st, rh, body), 400, "parameter_unknown", q)
        expect_eq(json.loads(body).get("field"), field, f"the problem names {field}")
        expect_in(field, json.loads(body)["detail"], "the detail names it")
    for q, field in (("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=", "limit"),
                     ("limit=1&limit=2", "limit"), ("status=authorised", "status"), ("due_before=2026-02-30",
                     "due_before"), ("due_after=yesterday", "due_after"), ("cursor=%%%", None),
                     ("cursor=abc", "cursor"), ("cursor=bad%20cursor", "cursor")):
        st, rh, body = w.get(f"/v1/invoices?{q}", "client_a")
        h.expect_problem((st, rh, body), 400, "parameter_invalid", q)
        if field:
            expect_eq(json.loads(body).get("field"), field, f"{q}: the problem names {field}")
    expect_eq(w.get("/v1/invoices?limit=1", "client_a")[0], 200, "limit=1")
    expect_eq(w.get("/v1/invoices?limit=100", "client_a")[0], 200, "limit=100")
    # a GET takes no body
    st, rh, body = w.server.request("GET", "/v1/invoices", body=b'{"a":1}',
                                   headers={"Authorization": f"Bearer {w.tokens['client_a']}",
                                            "Content-Type": "application/json"})
    h.expect_problem((st, rh, body), 400, "json_invalid", "a body on a GET")


@api_test
def test_etag_and_if_none_match(w):
    for path in ("/v1/invoices?limit=5", "/v1/invoices/inv_a1", "/v1/me"):
        st, rh, body = w.get(path, "client_a")
        expect_eq(st, 200, path)
        etag = rh.get("etag", "")
        expect(re.fullmatch(r'"[0-9a-f]{32}"', etag) is not None, f"a strong ETag on {path}: {etag!r}")
        expect_eq(etag, '"' + hashlib.sha256(body).hexdigest()[:32] + '"', "the ETag is a digest of the body")
        st, rh2, body2 = w.get(path, "client_a", headers={"If-None-Match": etag})
        expect_eq((st, body2), (304, b""), f"If-None-Match on {path}")
        expect_eq(rh2.get("etag"), etag, "a 304 repeats the ETag")
        st, _, _ = w.get(path, "client_a", headers={"If-None-Match": '"0000", W/' + etag})
        expect_eq(st, 304, "a list naming it (weakly)")
        st, _, _ = w.get(path, "client_a", headers={"If-None-Match": '"0000"'})
        expect_eq(st, 200, "another tag")
        st, rh3, body3 = w.server.request("HEAD", path, headers={"Authorization": f"Bearer {w.tokens['client_a']}"})
        expect_eq((st, body3, rh3.get("etag")), (200, b"", etag), f"HEAD {path}: the headers of the GET, no body")
    st, rh, body = w.server.request("HEAD", "/v1/me")
    expect_eq((st, body), (401, b""), "HEAD is guarded too")
    # another caller's representation differs, and so does its tag
    ea = w.get("/v1/me", "client_a")[1]["etag"]
    eb = w.get("/v1/me", "client_b")[1]["etag"]
    expect(ea != eb, "per-caller representations")


@api_test
def test_me(w):
    me = w.json("/v1/me", "client_a")
    expect_eq((me["user"], me["role"], me["organisation"]["slug"], me["customer"]["id"], me["customer"]["name"]),
              ({"id": "101", "email": "ann@a.example"}, "client", "org-x", w.ids["A"], "Customer A"), "client A")
    me = w.json("/v1/me", "admin_y")
    expect_eq((me["role"], me["organisation"]["id"], me["customer"], me["user"]["email"]),
              ("admin", w.ids["org-y"], None, None), "admin Y (no users row here)")


@api_test
def test_cors(w):
    hdrs = {"Origin": "https://portal.example.com"}
    st, rh, _ = w.get("/v1/me", "client_a", headers=hdrs)
    expect_eq((st, rh.get("access-control-allow-origin")), (200, None), "CORS is off by default")
    st, _, _ = w.server.request("OPTIONS", "/v1/me", headers=dict(hdrs, **{"Access-Control-Request-Method": "GET"}))
    expect_eq(st, 405, "no preflight without SETTLED_CORS_ORIGINS")
    env = jwt_env()
    env["SETTLED_CORS_ORIGINS"] = "https://portal.example.com,http://localhost:5173"
    with h.Settled(w.db, env=env) as s:
        st, rh, _ = s.get("/v1/me", headers=dict(hdrs, Authorization=f"Bearer {w.tokens['client_a']}"))
        expect_eq((st, rh.get("access-control-allow-origin")), (200, "https://portal.example.com"), "allowed origin")
        expect_in("Origin", rh.get("vary", ""), "Vary: Origin")
        st, rh, body = s.request("OPTIONS", "/v1/invoices/inv_a1",
                                 headers=dict(hdrs, **{"Access-Control-Request-Method": "GET"}))
        expect_eq((st, body), (204, b""), "preflight")
        expect_in("GET", rh.get("access-control-allow-methods", ""), "allowed methods")
        expect_in("Authorization", rh.get("access-control-allow-headers", ""), "allowed headers")
        st, rh, _ = s.get("/v1/me", headers={"Origin": "https://evil.example.com",
                                             "Authorization": f"Bearer {w.tokens['client_a']}"})
        expect_eq(rh.get("access-control-allow-origin"), None, "another origin gets no CORS header")
        st, _, _ = s.request("OPTIONS", "/v1/me", headers={"Origin": "https://evil.example.com",
                                                           "Access-Control-Request-Method": "GET"})
        expect_eq(st, 405, "no preflight for another origin")
        st, rh, _ = s.get("/v1/invoices", headers=hdrs)
        expect_eq((st, rh.get("access-control-allow-origin")), (401, "https://portal.example.com"),
                  "a 401 carries CORS too, so the portal can read it")


@api_test
def test_body_limit(w):
    env = jwt_env()
    env["SETTLED_API_BODY_LIMIT"] = "1k"
    with h.Settled(w.db, env=env) as s:
        st, rh, body = s.request("GET", "/v1/invoices", body=b"x" * 2000,
                                headers={"Authorization": f"Bearer {w.tokens['client_a']}"})
        h.expect_problem((st, rh, body), 413, "body_too_large", "a body over SETTLED_API_BODY_LIMIT")


def routes():
    res = h.run_settled(["routes", "--json"])
    expect_eq(res.returncode, 0, f"settled routes --json ({res.stderr!r})")
    return [json.loads(line) for line in res.stdout.splitlines()]


def sample_path(route, w=None):
    """A concrete path of a route: {id} of an invoice of customer A (organisation X), of X's stored event on the
    event routes, or customer A's id on the admin's customer routes; any other {param} made up."""
    w = w or _world
    sample = "inv_a1"
    if route["path"].startswith("/v1/admin/events/") and w is not None:
        sample = w.ids["event_x"]
    elif route["path"].startswith("/v1/admin/customers/") and w is not None:
        sample = w.ids["A"]
    elif route["path"].startswith("/v1/notifications/") and w is not None:
        sample = w.ids["notification_a"]
    return re.sub(r"\{([a-z_]+)\}", lambda m: sample if m.group(1) == "id" else "sample", route["path"])


# The valid body of each write route in the matrix (a write route without one here is left out of it).
SAMPLE_BODIES = {
    "admin_events_replay_one": {"dry_run": True},
    "admin_events_replay": {"since": "1h", "dry_run": True},
    "admin_audit_verify": None,
    # collections (test_api_terms.py has their own matrix too)
    "admin_timezone_put": {"timezone": "UTC"},
    "admin_dunning_put": {"steps": []},
    "admin_customer_dunning_put": {"steps": []},
    "admin_customer_dunning_delete": None,
    "notifications_read": None,
    # reminders and unsubscribe (test_dunning.py checks the public /v1/unsubscribe rows)
    "me_reminders_put": {"reminders_opt_out": False},
    # automatic collection (test_collections.py)
    "admin_customer_collection_pause": {"reason": "matrix"},
    "admin_customer_collection_unpause": None,
    "admin_invoice_collection_pause": {"reason": "matrix"},
    "admin_invoice_collection_unpause": None,
}


@api_test
def test_access_matrix(w):
    """Every api route of the table x every kind of caller. Expected: anonymous 401 on every guarded route; a role
    the route does not serve 404; a role it serves 200, or 404 for an object outside the caller's scope (client B,
    admin Y on A's invoice). A route with a {param} is tried with A's object."""
    callers = ["anonymous", "client_a", "client_b", "admin_x", "admin_y", "disabled"]
    # a disabled user: a valid token of a client of A whose user the deny list names, as `settled user disable` and
    # POST /v1/admin/users/{id}/disable set it (a random id: every test file shares one Redis)
    disabled = 800000000 + secrets.randbelow(100000000)
    w.tokens["disabled"] = mint(disabled, w.ids["org-x"], "client", w.ids["A"])
    redis_cmd("SET", f"settled:revoked:user:{disabled}", "1", "EX", "600")
    api = [r for r in routes() if r["api"]]
    expect(len(api) >= 3, "the table has api routes")
    owner = {"client_a": True, "client_b": False, "admin_x": True, "admin_y": False}
    rows = []
    for r in api:
        if r["method"] != "GET" and r["name"] not in SAMPLE_BODIES:
            continue  # a write route joins the matrix with a valid body of its own (SAMPLE_BODIES)
        if r["name"] == "invoice_pdf":
            continue  # calls Xero: test_api_payments.py's matrix covers it against the mock
        path = sample_path(r, w)
        scoped = "{" in r["path"]
        for who in callers:
            if r["access"] == "public":
                want = 200
            elif who in ("anonymous", "disabled"):
                want = 401
            elif who.split("_")[0] not in r["access"].split("|"):
                want = 404
            elif scoped and not owner[who]:
                want = 404
            else:
                want = 200
            if r["method"] == "GET":
                st, rh, body = w.get(path, None if who == "anonymous" else who)
            else:
                st, rh, body = w.send(r["method"], path, None if who == "anonymous" else who,
                                      SAMPLE_BODIES[r["name"]])
            rows.append((r["name"], who, st))
            expect_eq(st, want, f"{r['method']} {path} as {who} (body {body[:200]!r})")
            if st in (401, 404):
                expect_eq(rh.get("content-type"), "application/problem+json", "errors are problem+json")
    print(f"# access matrix: {len(rows)} cells over {len(api)} api routes")


def test_openapi_lists_every_route():
    """docs/openapi.yaml describes every /v1 route of the table, with its method, and every declared input: a path or
    query input as a parameter of its name, a body input as a property of the request body's schema."""
    text = open(os.path.join(h.source_dir(), "docs", "openapi.yaml"), encoding="utf-8").read()
    expect(text.startswith("openapi: 3.1"), "OpenAPI 3.1")
    paths = openapi_check.spec().get("paths", {})

    def properties(schema):
        schema = openapi_check._ref(schema)
        props = set(schema.get("properties", {}))
        for sub in schema.get("allOf", []) + schema.get("oneOf", []) + schema.get("anyOf", []):
            props |= properties(sub)
        return props

    for r in routes():
        if not r["path"].startswith("/v1/"):
            continue
        expect_in(r["path"], paths, f"docs/openapi.yaml has {r['path']}")
        op = paths[r["path"]].get(r["method"].lower())
        expect(op is not None, f"docs/openapi.yaml has {r['method']} {r['path']}")
        params = [openapi_check._ref(p) for p in paths[r["path"]].get("parameters", []) + op.get("parameters", [])]
        body = openapi_check._ref(op.get("requestBody", {})).get("content", {}).get("application/json", {})
        props = properties(body.get("schema", {})) if body else set()
        for inp in r["inputs"]:
            if inp["in"] == "body":
                ok = inp["name"] in props
            else:
                ok = any(p.get("name") == inp["name"] and p.get("in") == inp["in"] for p in params)
            expect(ok, f"docs/openapi.yaml documents {inp['in']} input {inp['name']} of {r['method']} {r['path']}")


def test_redis_down_accepts_and_counts():
    """With no Redis the deny list cannot be read: tokens are accepted and counted (docs/api.md)."""
    w = world()
    env = jwt_env()
    env["SETTLED_REDIS_URL"] = None
    with h.Settled(w.db, env=env) as s:
        st, _, _ = s.get("/v1/me", headers={"Authorization": f"Bearer {w.tokens['client_a']}"})
        expect_eq(st, 200, "accepted without Redis")
        m = s.metrics()
        expect(h.metric_sum(m, "settled_api_revocation_unchecked_total") >= 1, "counted")


def test_without_token_settings_the_api_is_unavailable():
    """Without a key to check tokens with (no SETTLED_JWT_SECRET), every guarded route is 503 auth_unavailable (the
    log says why at start), whatever token comes; webhooks and the operator endpoints go on."""
    w = world()
    with h.Settled(w.db, env={"SETTLED_WORKERS": 0}) as s:
        for path in ("/v1/me", "/v1/invoices", "/v1/invoices/inv_a1"):
            st, rh, body = s.get(path, headers={"Authorization": f"Bearer {w.tokens['client_a']}"})
            h.expect_problem((st, rh, body), 503, "auth_unavailable", path)
            expect_in("retry-after", rh, "Retry-After")
        expect_eq(s.get("/healthz")[0], 200, "healthz")
        expect_in("the portal API is off", s.log(), "the log says why")


if __name__ == "__main__":
    h.run(globals())
