# SPDX-License-Identifier: MIT
"""test_api_admin.py: the admin routes for customers, matching, payment terms, users, invitations and settings
(gateway/api/customers.c, matching.c, terms.c, users.c; schema/functions/admin.sql) against the real binary,
PostgreSQL and Redis. Two organisations X and Y; customers A and B of X, C of Y; admins of X and Y and clients of A
and B as users rows; matching-queue entries of X (Xero contacts, a Stripe customer).

What is checked: an admin of X manages X's customers (list with search and paging, detail with links, create,
update, archive), an admin of Y gets 404 on X's customer, queue entry and user, and a client gets 404 on every admin
route (an access matrix over every /v1/admin route of `settled routes --json`, writes with a valid body); bad input
is 400 naming the field and writes nothing (rows and audit log compared before and after); SQL-injection and HTML
strings are stored and returned verbatim; each matching decision is audited with the actor and the request id and
its link shows in the customer's detail; an archived customer is no candidate any more; each term type's day
bounds; an invitation is consumed through auth_invitation_consume; a disabled user's refresh token no longer
rotates and its Redis deny key is set. Every response is checked against docs/openapi.yaml (openapi_check).
"""

import hashlib
import json
import re
import secrets

import harness as h
import openapi_check
import test_api_invoices as ti

# The disabled user's id: its Redis deny key (settled:revoked:user:<id>) outlives this test and every test file
# shares one Redis, so it must not be an id that another file's tokens carry (101, 301, ...).
VICTIM = 700000000 + secrets.randbelow(100000000)
from harness import expect, expect_eq, expect_in

TX = "11111111-1111-4111-8111-111111111111"
INJECTION = "'; DROP TABLE customers; --"
HTML = "<script>alert(1)</script>"
PW = "$scrypt$test$x"


def seed(db):
    ids = {}
    for slug in ("org-x", "org-y"):
        ids[slug] = h.sql_value(db, "WITH i AS (INSERT INTO organisations (slug, name) VALUES ($1, $1) RETURNING id) "
                                    "SELECT id FROM i", slug)
    x, y = ids["org-x"], ids["org-y"]
    for name, org in (("A", x), ("B", x), ("C", y), ("D", x), ("E", x)):
        ids[name] = h.sql_value(db, "WITH i AS (INSERT INTO customers (organisation_id, name, email) "
                                    "VALUES ($1, $2, $3) RETURNING id) SELECT id FROM i",
                                org, f"Customer {name}", f"{name.lower()}@example.com")
    users = [(101, x, "ann@a.example", "client", ids["A"], "active"),
             (102, x, "bob@b.example", "client", ids["B"], "active"),
             (201, x, "admin@x.example", "admin", None, "active"),
             (202, y, "admin@y.example", "admin", None, "active"),
             (VICTIM, x, "victim@a.example", "client", ids["A"], "active"),
             (302, x, "matrix@a.example", "client", ids["A"], "active"),
             (401, x, "pending@x.example", "client", None, "pending_approval"),
             (402, x, "pending2@x.example", "client", None, "pending_approval")]
    for uid, org, email, role, cust, status in users:
        h.sql(db, "INSERT INTO users (id, organisation_id, email, role, customer_id, password_hash, status) "
                  "VALUES ($1, $2, $3, $4, nullif($5, '')::bigint, '" + PW + "', $6)",
              uid, org, email, role, "" if cust is None else cust, status)
    ids["users"] = {u[0]: u for u in users}
    return ids


def contact(db, org, cid, name, email=None):
    h.sql(db, "INSERT INTO xero_contacts (organisation_id, tenant_id, contact_id, name, email, updated_date_utc, raw) "
              "VALUES ($1, $2, $3, $4, nullif($5, ''), now(), '{}')", org, TX, cid, name, email or "")


def enqueue(db, org, provider, ext, name, candidates):
    arr = "{" + ",".join(str(c) for c in candidates) + "}"
    return h.sql_value(db, "SELECT match_enqueue($1, $2, $3, $4, '{\"kind\": \"ambiguous\"}', $5::bigint[], 'seed')",
                       org, provider, ext, name, arr)


class World:
    def __init__(self):
        self.db = h.new_database("adm")
        self.ids = seed(self.db)
        x, y = self.ids["org-x"], self.ids["org-y"]
        self.tokens = {
            "client_a": ti.mint(101, x, "client", self.ids["A"]),
            "client_b": ti.mint(102, x, "client", self.ids["B"]),
            "admin_x": ti.mint(201, x, "admin"),
            "admin_y": ti.mint(202, y, "admin"),
        }
        self.server = None
        self.n = 0

    def call(self, method, path, who=None, body=None, raw=None, headers=None):
        hdrs = dict(headers or {})
        if who:
            hdrs["Authorization"] = f"Bearer {self.tokens[who]}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        st, rh, out = self.server.request(method, path, body=data, headers=hdrs)
        openapi_check.response(method, path, st, rh, out)
        return st, rh, out

    def ok(self, method, path, who="admin_x", body=None, status=200):
        st, rh, out = self.call(method, path, who, body)
        expect_eq(st, status, f"{method} {path} as {who} (body {out[:400]!r})")
        return json.loads(out), rh

    def uniq(self, prefix):
        self.n += 1
        return f"{prefix}-{self.n}-{secrets.token_hex(3)}"


_world = None


def world():
    global _world
    if _world is None:
        _world = World()
    return _world


def api_test(fn):
    def run():
        w = world()
        w.server = h.Settled(w.db, env=ti.jwt_env())
        fn(w)
        w.server.stop()
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def state(w):
    """What a refused write must leave unchanged: the customers, terms, queue, users, settings and the audit log."""
    return (h.sql(w.db, "SELECT id, name, email, tax_number, account_number, archived_at FROM customers ORDER BY id"),
            h.sql(w.db, "SELECT * FROM payment_terms ORDER BY organisation_id, customer_id"),
            h.sql(w.db, "SELECT id, status FROM matching_queue ORDER BY id"),
            h.sql(w.db, "SELECT id, status, customer_id FROM users ORDER BY id"),
            h.sql(w.db, "SELECT count(*) FROM invitations"),
            h.sql(w.db, "SELECT id, self_registration FROM organisations ORDER BY id"),
            h.sql(w.db, "SELECT count(*), max(id) FROM audit_log"))


def audits(w, rid):
    return h.sql_rows(w.db, "SELECT actor, action, entity_type, entity_id, before::text, after::text FROM audit_log "
                            "WHERE correlation_id = $1 ORDER BY id", rid)


@api_test
def test_customers_crud(w):
    """Create, read, search, page, update and archive X's customers; each write audited with actor and request id;
    hostile strings come back verbatim."""
    name = w.uniq("Acme") + " " + INJECTION
    doc, rh = w.ok("POST", "/v1/admin/customers", body={"name": name, "email": "ap@acme.example",
                                                         "tax_number": HTML, "account_number": None}, status=201)
    cid = doc["id"]
    expect_eq((doc["name"], doc["email"], doc["tax_number"], doc["account_number"], doc["archived"]),
              (name, "ap@acme.example", HTML, None, False), "created as sent")
    expect_eq(h.sql(w.db, "SELECT name, tax_number FROM customers WHERE id = $1", cid), f"{name}|{HTML}",
              "stored verbatim")
    expect_eq(h.sql_value(w.db, "SELECT count(*) FROM pg_tables WHERE tablename = 'customers'"), "1", "no table dropped")
    rid = rh["x-request-id"]
    rows = audits(w, rid)
    expect_eq([(r[0], r[1], r[2], r[3]) for r in rows], [("user:201", "customer.create", "customer", cid)],
              "audited with actor and request id")
    got, grh = w.ok("GET", f"/v1/admin/customers/{cid}")
    st, _, out = w.call("GET", f"/v1/admin/customers/{cid}", "admin_x", headers={"If-None-Match": grh["etag"]})
    expect_eq((st, out), (304, b""), "If-None-Match with the current ETag")
    expect_eq((got["name"], got["tax_number"], got["xero_contacts"], got["terms"]), (name, HTML, [], None), "detail")

    # search: literal, case-insensitive, over name and email; paging covers each exactly once
    page, _ = w.ok("GET", "/v1/admin/customers?q=" + "DROP%20TABLE")
    expect_in(cid, [c["id"] for c in page["data"]], "q finds the name")
    page, _ = w.ok("GET", "/v1/admin/customers?q=AP%40ACME")
    expect_eq([c["id"] for c in page["data"]], [cid], "q finds the email")
    page, _ = w.ok("GET", "/v1/admin/customers?q=%25")
    expect_eq(page["data"], [], "% is no wildcard")
    seen, cursor = [], None
    while True:
        doc, _ = w.ok("GET", "/v1/admin/customers?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        seen += [c["id"] for c in doc["data"]]
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    want = h.sql(w.db, "SELECT string_agg(id::text, ',' ORDER BY id) FROM customers WHERE organisation_id = $1 "
                       "AND archived_at IS NULL", w.ids["org-x"]).split(",")
    expect_eq(seen, want, "every active customer of X once, in id order, none of Y")
    h.expect_problem(w.call("GET", "/v1/admin/customers?cursor=bm9wZQ", "admin_x"), 400, "parameter_invalid", "forged cursor")

    # update: a field given changes, null clears, the others stay
    doc, rh = w.ok("PATCH", f"/v1/admin/customers/{cid}", body={"email": None, "account_number": HTML})
    expect_eq((doc["name"], doc["email"], doc["account_number"]), (name, None, HTML), "patched")
    st, _, _ = w.call("GET", f"/v1/admin/customers/{cid}", "admin_x", headers={"If-None-Match": grh["etag"]})
    expect_eq(st, 200, "the change changes the ETag")
    rows = audits(w, rh["x-request-id"])
    expect_eq([r[1] for r in rows], ["customer.update"], "update audited")
    expect_eq((json.loads(rows[0][4])["email"], json.loads(rows[0][5])["email"]), ("ap@acme.example", None),
              "before and after")
    n = len(h.sql_rows(w.db, "SELECT 1 FROM audit_log"))
    w.ok("PATCH", f"/v1/admin/customers/{cid}", body={"account_number": HTML})
    expect_eq(len(h.sql_rows(w.db, "SELECT 1 FROM audit_log")), n, "a patch that changes nothing audits nothing")

    # archive: idempotent, out of the list unless asked for
    doc, rh = w.ok("POST", f"/v1/admin/customers/{cid}/archive")
    expect_eq(doc["archived"], True, "archived")
    expect_eq([r[1] for r in audits(w, rh["x-request-id"])], ["customer.archive"], "archive audited")
    doc, rh = w.ok("POST", f"/v1/admin/customers/{cid}/archive")
    expect_eq(audits(w, rh["x-request-id"]), [], "archiving again audits nothing")
    page, _ = w.ok("GET", "/v1/admin/customers?q=DROP")
    expect(cid not in [c["id"] for c in page["data"]], "archived: not listed")
    page, _ = w.ok("GET", "/v1/admin/customers?q=DROP&include_archived=true")
    expect_in(cid, [c["id"] for c in page["data"]], "listed with include_archived")


@api_test
def test_bad_input_writes_nothing(w):
    """Each refused write is 400 naming the field (or 404 for the wrong object) and leaves every row as it was."""
    a = w.ids["A"]
    cases = [
        ("POST", "/v1/admin/customers", {"email": "x@y.z"}, "name"),
        ("POST", "/v1/admin/customers", {"name": "   "}, "name"),
        ("POST", "/v1/admin/customers", {"name": "n", "email": "not-an-address"}, "email"),
        ("POST", "/v1/admin/customers", {"name": "n", "colour": "red"}, "colour"),
        ("POST", "/v1/admin/customers", {"name": 7}, "name"),
        ("POST", "/v1/admin/customers", {"name": "x" * 201}, "name"),
        ("PATCH", f"/v1/admin/customers/{a}", {"name": None}, "name"),
        ("PATCH", f"/v1/admin/customers/{a}", {"email": "@"}, "email"),
        ("PATCH", f"/v1/admin/customers/{a}", {"id": "9"}, "id"),
        ("PUT", "/v1/admin/terms", {"type": "NEXTWEEK", "day": 1}, "type"),
        ("PUT", "/v1/admin/terms", {"type": "OFCURRENTMONTH", "day": 0}, "day"),
        ("PUT", "/v1/admin/terms", {"type": "OFFOLLOWINGMONTH", "day": 32}, "day"),
        ("PUT", "/v1/admin/terms", {"type": "DAYSAFTERBILLDATE", "day": 366}, "day"),
        ("PUT", "/v1/admin/terms", {"type": "DAYSAFTERBILLMONTH", "day": -1}, "day"),
        ("PUT", "/v1/admin/terms", {"type": "DAYSAFTERBILLDATE", "day": "30"}, "day"),
        ("PUT", "/v1/admin/terms", {"type": "DAYSAFTERBILLDATE", "day": 30, "preferred_method": "cash"},
         "preferred_method"),
        ("PUT", f"/v1/admin/customers/{a}/terms", {"type": "OFCURRENTMONTH", "day": 31, "auto_collect": "yes"},
         "auto_collect"),
        ("PUT", "/v1/admin/settings", {"self_registration": "open"}, "self_registration"),
        ("POST", "/v1/admin/invitations", {"email": "new@x.example", "role": "owner"}, "role"),
        ("POST", "/v1/admin/invitations", {"email": "new@x.example", "role": "client"}, "customer_id"),
        ("POST", "/v1/admin/invitations", {"email": "new@x.example", "role": "admin", "customer_id": str(a)},
         "customer_id"),
        ("POST", "/v1/admin/invitations", {"email": "new@x.example", "role": "client",
                                           "customer_id": str(w.ids["C"])}, "customer_id"),
        ("POST", "/v1/admin/invitations", {"email": "new-at-x.example", "role": "admin"}, "email"),
        ("POST", "/v1/admin/invitations", {"email": "new@x.example", "role": "client", "customer_id": "1 OR 1=1"},
         "customer_id"),
        ("POST", "/v1/admin/users/402/approve", {"customer_id": str(w.ids["C"])}, "customer_id"),
    ]
    before = state(w)
    for method, path, body, field in cases:
        doc = h.expect_problem(w.call(method, path, "admin_x", body), 400, ("parameter_invalid", "parameter_unknown"),
                               f"{method} {path} {body}")
        expect_eq(doc.get("field"), field, f"{method} {path} {body}: field")
    h.expect_problem(w.call("POST", "/v1/admin/customers", "admin_x", raw=b"{\"name\": "), 400, "json_invalid",
                     "broken JSON")
    h.expect_problem(w.call("PATCH", f"/v1/admin/customers/{w.ids['C']}", "admin_x", {"name": "mine"}), 404,
                     "not_found", "another organisation's customer")
    h.expect_problem(w.call("PUT", f"/v1/admin/customers/{w.ids['C']}/terms", "admin_x",
                            {"type": "OFCURRENTMONTH", "day": 5}), 404, "not_found", "another organisation's terms")
    h.expect_problem(w.call("POST", "/v1/admin/customers/abc/archive", "admin_x"), 404, "not_found", "not an id")
    expect_eq(state(w), before, "nothing written by any refused request")


@api_test
def test_terms(w):
    """Each term type's day bounds, the default and a customer's override, the effective terms, delete."""
    for typ, lo, hi in (("DAYSAFTERBILLDATE", 0, 365), ("DAYSAFTERBILLMONTH", 0, 365), ("OFCURRENTMONTH", 1, 31),
                        ("OFFOLLOWINGMONTH", 1, 31)):
        for day in (lo, hi):
            doc, _ = w.ok("PUT", "/v1/admin/terms", body={"type": typ, "day": day})
            expect_eq((doc["default"]["type"], doc["default"]["day"]), (typ, day), f"{typ} day {day} taken")
        for day in (lo - 1, hi + 1):
            doc = h.expect_problem(w.call("PUT", "/v1/admin/terms", "admin_x", {"type": typ, "day": day}), 400,
                                   "parameter_invalid", f"{typ} day {day}")
            expect_eq(doc["field"], "day", "names day")
    doc, rh = w.ok("PUT", "/v1/admin/terms", body={"type": "DAYSAFTERBILLDATE", "day": 30, "auto_collect": True,
                                                   "preferred_method": "card"})
    expect_eq(doc["default"]["auto_collect"], True, "auto_collect")
    rows = audits(w, rh["x-request-id"])
    expect_eq([(r[0], r[1], r[3]) for r in rows], [("user:201", "terms.set", "default")], "audited")
    b = w.ids["B"]
    doc, _ = w.ok("GET", f"/v1/admin/customers/{b}/terms")
    expect_eq((doc["override"], doc["effective"]["day"]), (None, 30), "no override: the default applies")
    doc, _ = w.ok("PUT", f"/v1/admin/customers/{b}/terms", body={"type": "OFFOLLOWINGMONTH", "day": 20,
                                                                "preferred_method": "direct_debit"})
    expect_eq((doc["override"]["type"], doc["effective"]["day"], doc["default"]["day"]), ("OFFOLLOWINGMONTH", 20, 30),
              "override")
    detail, _ = w.ok("GET", f"/v1/admin/customers/{b}")
    expect_eq(detail["terms"]["day"], 20, "the detail shows the override")
    y, _ = w.ok("GET", "/v1/admin/terms", who="admin_y")
    expect(y["default"] is None or y["default"]["day"] != 30, "Y's default is its own", y)
    h.expect_problem(w.call("GET", f"/v1/admin/customers/{b}/terms", "admin_y"), 404, "not_found", "Y on X's terms")
    doc, rh = w.ok("DELETE", f"/v1/admin/customers/{b}/terms")
    expect_eq((doc["override"], doc["effective"]["day"]), (None, 30), "override removed")
    expect_eq([r[1] for r in audits(w, rh["x-request-id"])], ["terms.delete"], "delete audited")
    doc, rh = w.ok("DELETE", f"/v1/admin/customers/{b}/terms")
    expect_eq(audits(w, rh["x-request-id"]), [], "deleting again audits nothing")


@api_test
def test_matching_decisions(w):
    """accept, link, reject and create-customer: each audited with actor and request id; the link is made as the
    automatic matching makes it (customer_links, xero_contacts.customer_id, the entry resolved) and shows in the
    customer's detail; Y cannot touch X's entries; an archived customer is no candidate."""
    x, a, b, d = w.ids["org-x"], w.ids["A"], w.ids["B"], w.ids["D"]
    c1, c2, c3, c4 = (f"dddddddd-0000-4000-8000-{i:012d}" for i in range(1, 5))
    contact(w.db, x, c1, "Ambiguous One", "amb1@example.com")
    contact(w.db, x, c2, "Hand Linked")
    contact(w.db, x, c3, "Nobody")
    contact(w.db, x, c4, "New Co " + HTML, "newco@example.com")
    e1 = enqueue(w.db, x, "xero", c1, "Ambiguous One", [a, b])
    e2 = enqueue(w.db, x, "xero", c2, "Hand Linked", [])
    e3 = enqueue(w.db, x, "xero", c3, "Nobody", [a])
    e4 = enqueue(w.db, x, "xero", c4, "New Co", [])
    e5 = enqueue(w.db, x, "stripe", "cus_admin1", "Stripe Person", [a, b])
    h.sql(w.db, "INSERT INTO payment_customers (organisation_id, provider, external_id) VALUES ($1, 'stripe', "
                "'cus_admin1')", x)
    h.sql(w.db, "INSERT INTO payment_methods (organisation_id, provider, object_id, kind, brand, last4, status, raw, "
                "provider_customer) VALUES ($1, 'stripe', 'pm_admin1', 'card', 'visa', '4242', 'active', '{}', "
                "'cus_admin1')", x)

    page, _ = w.ok("GET", "/v1/admin/matching?limit=100")
    entry = next(e for e in page["data"] if e["id"] == e1)
    expect_eq([c["id"] for c in entry["candidates"]], sorted([a, b], key=int), "candidates listed")
    h.expect_problem(w.call("POST", f"/v1/admin/matching/{e1}/accept", "admin_y", {"customer_id": a}), 404,
                     "not_found", "Y accepts X's entry")
    before = state(w)
    doc = h.expect_problem(w.call("POST", f"/v1/admin/matching/{e1}/accept", "admin_x", {"customer_id": d}), 400,
                           "parameter_invalid", "accept a non-candidate")
    expect_eq(doc["field"], "customer_id", "names customer_id")
    h.expect_problem(w.call("POST", f"/v1/admin/matching/{e2}/link", "admin_x", {"customer_id": w.ids["C"]}), 400,
                     "parameter_invalid", "link to Y's customer")
    expect_eq(state(w), before, "refused decisions write nothing")

    def decided(path, body, action, customer):
        doc, rh = w.ok("POST", path, body=body)
        rid = rh["x-request-id"]
        rows = audits(w, rid)
        expect_in(("user:201", action), [(r[0], r[1]) for r in rows], f"{action} audited with actor and request id")
        mine = next(r for r in rows if r[1] == action)
        expect_eq((json.loads(mine[4])["status"], json.loads(mine[5])["status"]),
                  ("open", "dismissed" if action == "match.reject" else "resolved"), f"{action}: before and after")
        if customer is not None:
            expect_in(("user:201", "match.link"), [(r[0], r[1]) for r in rows], f"{action}: match.link audited")
        return doc, rows

    doc, _ = decided(f"/v1/admin/matching/{e1}/accept", {"customer_id": b}, "match.accept", b)
    expect_eq((doc["status"], doc["customer_id"]), ("resolved", b), "accepted")
    expect_eq(h.sql(w.db, "SELECT customer_id, rule FROM customer_links WHERE external_id = $1", c1), f"{b}|admin",
              "linked as match_link links")
    expect_eq(h.sql_value(w.db, "SELECT customer_id FROM xero_contacts WHERE contact_id = $1", c1), b,
              "the contact carries its customer")
    detail, _ = w.ok("GET", f"/v1/admin/customers/{b}")
    expect_in(c1, [xc["contact_id"] for xc in detail["xero_contacts"]], "the link shows in the customer's detail")
    h.expect_problem(w.call("POST", f"/v1/admin/matching/{e1}/reject", "admin_x"), 409, "conflict",
                     "a decided entry cannot be decided again")

    decided(f"/v1/admin/matching/{e2}/link", {"customer_id": d}, "match.link_manual", d)
    detail, _ = w.ok("GET", f"/v1/admin/customers/{d}")
    expect_eq([(xc["contact_id"], xc["rule"]) for xc in detail["xero_contacts"]], [(c2, "admin")], "linked by hand")

    doc, rows = decided(f"/v1/admin/matching/{e3}/reject", None, "match.reject", None)
    expect_eq((doc["status"], doc["customer_id"]), ("dismissed", None), "rejected")
    expect_eq(h.sql_value(w.db, "SELECT count(*) FROM customer_links WHERE external_id = $1", c3), "0", "no link")
    expect_eq(h.sql_value(w.db, "SELECT match_enqueue($1, 'xero', $2, 'Nobody', '{\"kind\": \"ambiguous\"}', "
                                "$3::bigint[], 'again')", x, c3, "{" + a + "}"), e3,
              "the dismissed situation is not queued again")

    doc, rows = decided(f"/v1/admin/matching/{e4}/create-customer", None, "match.create_customer", True)
    new = doc["customer_id"]
    detail, _ = w.ok("GET", f"/v1/admin/customers/{new}")
    expect_eq((detail["name"], detail["email"], [xc["rule"] for xc in detail["xero_contacts"]]),
              ("New Co " + HTML, "newco@example.com", ["created"]), "made from the contact and linked")

    decided(f"/v1/admin/matching/{e5}/accept", {"customer_id": a}, "match.accept", a)
    detail, _ = w.ok("GET", f"/v1/admin/customers/{a}")
    expect_eq([(s["id"], s["rule"]) for s in detail["stripe_customers"]], [("cus_admin1", "admin")],
              "the Stripe customer shows in the detail")
    expect_eq(h.sql_value(w.db, "SELECT customer_id FROM payment_customers WHERE external_id = 'cus_admin1'"), a,
              "the payment customer follows (pm_customer_seen)")
    expect_eq(h.sql_value(w.db, "SELECT customer_id FROM payment_methods WHERE object_id = 'pm_admin1'"), a,
              "and its card joins the customer, as the automatic matching does")

    # archived: no candidate, neither offered nor matched automatically
    e6 = enqueue(w.db, x, "xero", "eeeeeeee-0000-4000-8000-000000000001", "Two", [a, w.ids["E"]])
    w.ok("POST", f"/v1/admin/customers/{w.ids['E']}/archive")
    page, _ = w.ok("GET", "/v1/admin/matching?limit=100")
    entry = next(e for e in page["data"] if e["id"] == e6)
    expect_eq([c["id"] for c in entry["candidates"]], [a], "the archived candidate is not offered")
    h.expect_problem(w.call("POST", f"/v1/admin/matching/{e6}/accept", "admin_x", {"customer_id": w.ids["E"]}), 400,
                     "parameter_invalid", "an archived customer cannot be accepted")
    rule = h.sql(w.db, "SELECT * FROM match_rules($1, 'stripe', 'cus_e', 'x', 'e@example.com', NULL, NULL, NULL, "
                       "'{}', 'test')", x)
    expect_eq(rule, "|", "match_rules does not match the archived customer's email")


@api_test
def test_users_invitations_settings(w):
    """List users; invite (the link's token is consumable once through auth_invitation_consume); approve; settings;
    disable: the refresh token no longer rotates and the Redis deny key is set; Y cannot touch X's users."""
    x, a = w.ids["org-x"], w.ids["A"]
    page, _ = w.ok("GET", "/v1/admin/users?limit=100")
    emails = [u["email"] for u in page["data"]]
    expect_in("ann@a.example", emails, "X's users listed")
    expect("admin@y.example" not in emails, "not Y's")
    page, _ = w.ok("GET", "/v1/admin/users?status=pending_approval")
    expect(all(u["status"] == "pending_approval" for u in page["data"]) and page["data"], "status filter")

    email = w.uniq("invitee") + "@a.example"
    doc, rh = w.ok("POST", "/v1/admin/invitations", body={"email": email, "role": "client", "customer_id": a},
                   status=201)
    expect_eq((doc["email"], doc["customer_id"]), (email, a), "invitation")
    expect("token" not in doc and "link" not in doc, f"the answer carries no token nor link: {doc}")
    # the token leaves settled only in the e-mail: the outbox row (no SMTP here: it waits) holds the link
    kind, to, cust, body = h.sql_rows(w.db, "SELECT kind, recipient, coalesce(customer_id::text, ''), body_text "
                                            "FROM notifications WHERE id = $1", doc["notification_id"])[0]
    expect_eq((kind, to, cust), ("invitation", email, ""), "an account e-mail to the invited address, no customer")
    token = re.search(r"/invite#token=([A-Za-z0-9_-]{43})", body).group(1)
    digest = hashlib.sha256(token.encode()).hexdigest()
    expect_eq(h.sql_value(w.db, "SELECT count(*) FROM invitations WHERE digest = $1 AND invited_by = 201", digest),
              "1", "only the digest is stored, with the inviting admin")
    expect_eq(h.sql_value(w.db, "SELECT count(*) FROM invitations WHERE digest = $1", token), "0",
              "the token itself is not stored")
    expect_eq([(r[0], r[1]) for r in audits(w, rh["x-request-id"])],
              [("user:201", "user.invite"), ("user:201", "notification.enqueue")], "audited")
    res = h.sql(w.db, "SELECT result, organisation_id, role, customer_id FROM auth_invitation_consume($1, '" + PW +
                "', 'test')", digest)
    expect_eq(res, f"created|{x}|client|{a}", "the invitation makes the user")
    expect_eq(h.sql_value(w.db, "SELECT result FROM auth_invitation_consume($1, '" + PW + "', 'test')", digest),
              "used", "once")
    h.expect_problem(w.call("POST", "/v1/admin/invitations", "admin_x", {"email": email, "role": "client",
                                                                         "customer_id": a}), 409, "conflict",
                     "the address is taken now")

    doc, rh = w.ok("POST", "/v1/admin/users/401/approve", body={"customer_id": a})
    expect_eq((doc["status"], doc["customer_id"]), ("active", a), "approved")
    expect_eq([r[1] for r in audits(w, rh["x-request-id"])], ["user.approve"], "approval audited")
    h.expect_problem(w.call("POST", "/v1/admin/users/401/approve", "admin_x", {"customer_id": a}), 409, "conflict",
                     "approved already")
    h.expect_problem(w.call("POST", "/v1/admin/users/402/approve", "admin_y", {"customer_id": a}), 404,
                     "not_found", "Y approves X's user")

    doc, _ = w.ok("GET", "/v1/admin/settings")
    expect_eq(doc, {"self_registration": "off"}, "default setting")
    doc, rh = w.ok("PUT", "/v1/admin/settings", body={"self_registration": "approval"})
    expect_eq(doc["self_registration"], "approval", "changed")
    expect_eq(h.sql_value(w.db, "SELECT self_registration FROM organisations WHERE id = $1", x), "approval", "stored")
    expect_eq([r[1] for r in audits(w, rh["x-request-id"])], ["organisation.settings"], "audited")
    doc, _ = w.ok("GET", "/v1/admin/settings", who="admin_y")
    expect_eq(doc["self_registration"], "off", "Y's own")
    w.ok("PUT", "/v1/admin/settings", body={"self_registration": "off"})

    # disable: a refresh token of the victim no longer rotates, its access tokens are denied in Redis
    token = secrets.token_urlsafe(32)
    dig = hashlib.sha256(token.encode()).hexdigest()
    h.sql(w.db, "INSERT INTO refresh_tokens (digest, user_id, family_id, expires_at) VALUES ($1, $2, "
                "gen_random_uuid(), now() + interval '1 day')", dig, VICTIM)
    ti.redis_cmd("DEL", f"settled:revoked:user:{VICTIM}")
    h.expect_problem(w.call("POST", f"/v1/admin/users/{VICTIM}/disable", "admin_y"), 404, "not_found", "Y disables X's user")
    expect_eq(h.sql_value(w.db, "SELECT status FROM users WHERE id = $1", VICTIM), "active", "Y changed nothing")
    doc, rh = w.ok("POST", f"/v1/admin/users/{VICTIM}/disable")
    expect_eq((doc["status"], doc["sessions_revoked"], doc["access_tokens_denied"]), ("disabled", 1, True), "disabled")
    expect_in("user.disable", [r[1] for r in audits(w, rh["x-request-id"])], "audited")
    expect_in(":1", ti.redis_cmd("EXISTS", f"settled:revoked:user:{VICTIM}"), "the deny key is set")
    new = hashlib.sha256(b"next").hexdigest()
    res = h.sql_value(w.db, "SELECT result FROM auth_refresh_rotate($1, $2, 3600, 'ua', '127.0.0.1', 'test')", dig, new)
    expect(res != "rotated", f"the disabled user's refresh token does not rotate ({res})")
    doc, _ = w.ok("POST", f"/v1/admin/users/{VICTIM}/disable")
    expect_eq((doc["status"], doc["sessions_revoked"]), ("disabled", 0), "disabling again is harmless")
    h.expect_problem(w.call("POST", "/v1/admin/users/201/disable", "admin_x"), 409, "conflict", "not oneself")
    h.expect_problem(w.call("POST", "/v1/admin/users/402/disable", "admin_x"), 409, "conflict",
                     "a sign-up waiting for approval stays pending")


def admin_routes():
    return [r for r in ti.routes() if r["path"].startswith("/v1/admin/") and r["name"].startswith("admin_")
            and r["path"].split("/")[3] in ("customers", "matching", "terms", "users", "invitations", "settings")
            and not r["path"].endswith("/dunning-plan")  # the collections routes: test_api_terms.py's matrix
            and not r["path"].endswith("/collection-pause")]  # automatic collection: test_api_invoices.py's matrix


@api_test
def test_access_matrix(w):
    """Every admin route of this area x anonymous, client A, client B, admin Y, admin X, writes with a valid body:
    anonymous 401; a client 404 everywhere; admin Y 404 on X's objects and its own answer elsewhere; admin X its
    answer. Each scoped write gets an object of its own, so admin X's call is the one that succeeds."""
    x, a = w.ids["org-x"], w.ids["A"]
    api = admin_routes()
    expect_eq(len(api), 21, "the area's routes")
    n = [0]

    def fresh_entry():
        n[0] += 1
        return enqueue(w.db, x, "xero", f"ffffffff-0000-4000-8000-{n[0]:012d}", f"Matrix {n[0]}", [a])

    def fresh_user(pending):
        n[0] += 1
        return h.sql_value(w.db, "WITH i AS (INSERT INTO users (organisation_id, email, role, customer_id, "
                                 "password_hash, status) VALUES ($1, $2, 'client', CASE WHEN $3 = 'active' THEN "
                                 "$4::bigint END, '" + PW + "', $3) RETURNING id) SELECT id FROM i", x,
                           f"m{n[0]}@matrix.example", "pending_approval" if pending else "active", a)

    rows = 0
    for r in api:
        path, body, want = r["path"], None, 200
        if "{id}" in path:
            if "/matching/" in path:
                oid = fresh_entry()
            elif "/users/" in path:
                oid = fresh_user(path.endswith("/approve"))
            elif path.endswith("/archive"):
                oid = h.sql_value(w.db, "WITH i AS (INSERT INTO customers (organisation_id, name) VALUES ($1, "
                                        "'To archive') RETURNING id) SELECT id FROM i", x)
            else:
                oid = a
            path = path.replace("{id}", str(oid))
        if r["method"] == "POST" and r["path"] == "/v1/admin/customers":
            body, want = {"name": "Matrix customer"}, 201
        elif r["path"].endswith("/accept") or r["path"].endswith("/link") or r["path"].endswith("/approve"):
            body = {"customer_id": a}
        elif r["method"] == "PUT" and "terms" in r["path"]:
            body = {"type": "OFCURRENTMONTH", "day": 15}
        elif r["method"] == "PUT":
            body = {"self_registration": "off"}
        elif r["method"] == "PATCH":
            body = {"name": "Customer A"}
        elif r["path"] == "/v1/admin/invitations":
            body, want = {"email": "", "role": "admin"}, 201
        scoped = "{id}" in r["path"]
        for who in ("anonymous", "client_a", "client_b", "admin_y", "admin_x"):
            b = body
            if b is not None and "email" in b:
                b = dict(b, email=w.uniq("matrix") + "@x.example")
            st, rh, out = w.call(r["method"], path, None if who == "anonymous" else who, b)
            exp = 401 if who == "anonymous" else 404 if who.startswith("client") else \
                404 if (who == "admin_y" and scoped) else want
            expect_eq(st, exp, f"{r['method']} {path} as {who} (body {out[:300]!r})")
            if st in (401, 404):
                expect_eq(rh.get("content-type"), "application/problem+json", "errors are problem+json")
            rows += 1
    print(f"# admin access matrix: {rows} cells over {len(api)} routes")


if __name__ == "__main__":
    h.run(globals())
