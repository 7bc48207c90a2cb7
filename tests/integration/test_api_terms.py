# SPDX-License-Identifier: MIT
"""test_api_terms.py: the collections admin routes of gateway/api/terms.c (docs/collections.md) against the real
binary, PostgreSQL, Redis and the mock Xero: the organisation's time zone (GET/PUT /v1/admin/timezone: a tz
database name or 400 naming timezone, audited, its "today"), dunning plans (GET/PUT /v1/admin/dunning-plan and
GET/PUT/DELETE /v1/admin/customers/{id}/dunning-plan: the default plan, validation naming the step's field with
nothing written, a customer's override, another organisation's customer 404), the Xero organisation's default terms
stored by `settled sync xero` only while no admin has set them, and an access matrix of these routes (anonymous
401, clients 404, the other organisation's admin 404 on a customer's plan). Every response is checked against
docs/openapi.yaml (openapi_check).
"""

import json

import harness as h
import openapi_check
import pipelinelib as pl
import test_api_invoices as ti
from harness import expect, expect_eq

ADMIN_X, ADMIN_Y, CLIENT_A = 91201, 91202, 91101
STEP = {"offset_days": -3, "channel": "email", "template": "due_soon"}


class World:
    """The mock Xero connected for organisation X, organisation Y; customer A of X, C of Y; admins of both and a
    client of A."""

    def __init__(self):
        self.m = pl.Mock()
        self.t = pl.new_tenant()
        self.db = pl.connected_db(self.m, [self.t], "api_terms")
        self.x = h.sql_value(self.db, "SELECT organisation_id FROM xero_tenants LIMIT 1")
        self.y = h.sql_value(self.db, "WITH i AS (INSERT INTO organisations (slug, name) VALUES ('org-y', 'Y') "
                                      "RETURNING id) SELECT id FROM i")
        self.a = h.sql_value(self.db, "WITH i AS (INSERT INTO customers (organisation_id, name) VALUES ($1, 'A') "
                                      "RETURNING id) SELECT id FROM i", self.x)
        self.c = h.sql_value(self.db, "WITH i AS (INSERT INTO customers (organisation_id, name) VALUES ($1, 'C') "
                                      "RETURNING id) SELECT id FROM i", self.y)
        self.tokens = {"admin_x": ti.mint(ADMIN_X, self.x, "admin"), "admin_y": ti.mint(ADMIN_Y, self.y, "admin"),
                       "client_a": ti.mint(CLIENT_A, self.x, "client", self.a)}
        env = ti.jwt_env()
        for k in ("SETTLED_XERO_CLIENT_ID", "SETTLED_XERO_CLIENT_SECRET", "SETTLED_SECRET_KEY"):
            env.pop(k)
        # the Organisation (Xero's default terms) is read only when the scopes ask for the settings
        env["SETTLED_XERO_SCOPES"] = "offline_access accounting.transactions accounting.contacts " \
                                     "accounting.settings.read"
        self.env = pl.settled_env(self.m, self.db, **env)
        self.server = None

    def call(self, method, path, who=None, body=None, raw=None):
        hdrs = {}
        if who:
            hdrs["Authorization"] = f"Bearer {self.tokens[who]}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        st, rh, out = self.server.request(method, path, body=data, headers=hdrs)
        openapi_check.response(method, path, st, rh, out)
        return st, rh, out

    def ok(self, method, path, who="admin_x", body=None):
        st, rh, out = self.call(method, path, who, body)
        expect_eq(st, 200, f"{method} {path} as {who} (body {out[:400]!r})")
        return json.loads(out), rh

    def audits(self, rid):
        return h.sql_rows(self.db, "SELECT actor, action, entity_id, before::text, after::text FROM audit_log "
                                   "WHERE correlation_id = $1 ORDER BY id", rid)

    def state(self):
        return (h.sql(self.db, "SELECT id, timezone FROM organisations ORDER BY id"),
                h.sql(self.db, "SELECT organisation_id, customer_id, steps::text FROM dunning_plans "
                               "ORDER BY organisation_id, customer_id"),
                h.sql(self.db, "SELECT count(*), max(id) FROM audit_log"))


_world = None


def world():
    global _world
    if _world is None:
        pl.require("SETTLED_TEST_PG_URL", "SETTLED_TEST_REDIS_URL", "SETTLED_BIN", "SETTLED_SOURCE_DIR")
        _world = World()
    return _world


def api_test(fn):
    def run():
        w = world()
        w.server = h.Settled(w.db, env=w.env)
        fn(w)
        w.server.stop()
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


@api_test
def test_timezone(w):
    """UTC until set; a tz database name is stored and audited; anything else is 400 naming timezone, nothing
    written; Y's zone is Y's."""
    doc, _ = w.ok("GET", "/v1/admin/timezone")
    expect_eq(doc["timezone"], "UTC", "UTC by default")
    before = w.state()
    for bad in ["Mars/Olympus", "pacific/auckland", "+13:00", "UTC' OR '1'='1"]:
        got = h.expect_problem(w.call("PUT", "/v1/admin/timezone", "admin_x", {"timezone": bad}), 400,
                               "parameter_invalid", f"zone {bad!r}")
        expect_eq(got.get("field"), "timezone", f"names the field ({bad!r})")
    for body, field in [({}, "timezone"), ({"timezone": 13}, "timezone"), ({"timezone": ""}, "timezone"),
                        ({"timezone": "UTC", "offset": 1}, "offset")]:
        got = h.expect_problem(w.call("PUT", "/v1/admin/timezone", "admin_x", body), 400,
                               "parameter_unknown" if field == "offset" else "parameter_invalid", f"body {body}")
        expect_eq(got.get("field"), field, f"names {field}")
    expect_eq(w.state(), before, "refusals write nothing")
    doc, rh = w.ok("PUT", "/v1/admin/timezone", body={"timezone": "Pacific/Auckland"})
    expect_eq(doc["timezone"], "Pacific/Auckland", "set")
    today = h.sql_value(w.db, "SELECT (now() AT TIME ZONE 'Pacific/Auckland')::date::text")
    expect_eq(doc["today"], today, "today in Auckland")
    expect_eq([(r[0], r[1], r[3], r[4]) for r in w.audits(rh["x-request-id"])],
              [(f"user:{ADMIN_X}", "organisation.timezone", '{"timezone": "UTC"}',
                '{"timezone": "Pacific/Auckland"}')], "audited with the actor and the request id")
    _, rh = w.ok("PUT", "/v1/admin/timezone", body={"timezone": "Pacific/Auckland"})
    expect_eq(w.audits(rh["x-request-id"]), [], "the same zone again: no audit row")
    doc, _ = w.ok("GET", "/v1/admin/timezone", who="admin_y")
    expect_eq(doc["timezone"], "UTC", "Y's zone is its own")


@api_test
def test_dunning_plan(w):
    """The default plan until one is set; every bad plan is 400 naming the field and writes nothing; a plan and a
    customer's override are stored, audited and shown; another organisation's customer is 404."""
    doc, _ = w.ok("GET", "/v1/admin/dunning-plan")
    expect_eq((doc["source"], [s["offset_days"] for s in doc["steps"]]), ("default", [-10, -5, -1, 0, 3, 7]),
              "the default plan")
    before = w.state()
    bad = [
        ({}, "steps"),
        ({"steps": "-10,-5"}, "steps"),
        ({"steps": [dict(STEP, offset_days=i) for i in range(11)]}, "steps"),
        ({"steps": [STEP], "name": "x"}, "name"),
        ({"steps": [dict(STEP, offset_days=91)]}, "steps[0].offset_days"),
        ({"steps": [dict(STEP, offset_days=-61)]}, "steps[0].offset_days"),
        ({"steps": [STEP, STEP]}, "steps[1].offset_days"),
        ({"steps": [dict(STEP, offset_days=3), dict(STEP, offset_days=1)]}, "steps[1].offset_days"),
        ({"steps": [dict(STEP, channel="sms")]}, "steps[0].channel"),
        ({"steps": [dict(STEP, template="rude")]}, "steps[0].template"),
        ({"steps": [dict(STEP, extra=True)]}, "steps[0].extra"),
        ({"steps": [1]}, "steps[0]"),
    ]
    for body, field in bad:
        code = "parameter_unknown" if field == "name" else "parameter_invalid"
        got = h.expect_problem(w.call("PUT", "/v1/admin/dunning-plan", "admin_x", body), 400, code,
                               f"plan {json.dumps(body)[:80]}")
        expect_eq(got.get("field"), field, f"names {field}")
    got = h.expect_problem(w.call("PUT", f"/v1/admin/customers/{w.a}/dunning-plan", "admin_x",
                                  {"steps": [dict(STEP, channel="fax")]}), 400, "parameter_invalid", "override")
    expect_eq(got.get("field"), "steps[0].channel", "an override is validated too")
    expect_eq(w.state(), before, "refusals write nothing")
    plan = [{"offset_days": -7, "channel": "email", "template": "due_soon"},
            {"offset_days": 0, "channel": "portal", "template": "due_today"},
            {"offset_days": 14, "channel": "email", "template": "final_notice"}]
    doc, rh = w.ok("PUT", "/v1/admin/dunning-plan", body={"steps": plan})
    expect_eq((doc["source"], doc["steps"]), ("organisation", plan), "stored as given")
    expect_eq([(r[1], r[2]) for r in w.audits(rh["x-request-id"])], [("dunning.set", "default")], "audited")
    doc, _ = w.ok("GET", f"/v1/admin/customers/{w.a}/dunning-plan")
    expect_eq((doc["override"], doc["effective"]), (None, plan), "A follows the organisation's plan")
    doc, rh = w.ok("PUT", f"/v1/admin/customers/{w.a}/dunning-plan", body={"steps": []})
    expect_eq((doc["override"]["steps"], doc["effective"]), ([], []), "an empty override: no messages for A")
    expect_eq([(r[1], r[2]) for r in w.audits(rh["x-request-id"])], [("dunning.set", str(w.a))], "audited")
    doc, _ = w.ok("GET", "/v1/admin/dunning-plan", who="admin_y")
    expect_eq(doc["source"], "default", "Y still has the default plan")
    for method, body in (("GET", None), ("PUT", {"steps": []}), ("DELETE", None)):
        h.expect_problem(w.call(method, f"/v1/admin/customers/{w.a}/dunning-plan", "admin_y", body), 404,
                         "not_found", f"{method} X's customer as Y")
    h.expect_problem(w.call("GET", "/v1/admin/customers/999999999/dunning-plan", "admin_x"), 404, "not_found",
                     "no such customer")
    doc, rh = w.ok("DELETE", f"/v1/admin/customers/{w.a}/dunning-plan")
    expect_eq((doc["override"], doc["effective"]), (None, plan), "removed: the organisation's plan again")
    expect_eq([r[1] for r in w.audits(rh["x-request-id"])], ["dunning.delete"], "audited")
    _, rh = w.ok("DELETE", f"/v1/admin/customers/{w.a}/dunning-plan")
    expect_eq(w.audits(rh["x-request-id"]), [], "deleting nothing: no audit row")


def sync(w, env=None):
    res = h.run_settled(["sync", "xero"], env or w.env, timeout=120)
    expect_eq(res.returncode, 0, f"settled sync xero (stderr {res.stderr[-1500:]!r})")


def default_terms(w):
    return h.sql_rows(w.db, "SELECT type, day::text, source FROM payment_terms WHERE organisation_id = $1 "
                            "AND customer_id IS NULL", w.x)


@api_test
def test_xero_default_terms(w):
    """`settled sync xero` stores the Xero organisation's PaymentTerms.Sales as X's default terms (source xero)
    while no admin has set them, follows Xero's changes, and never replaces an admin's."""
    h.sql(w.db, "DELETE FROM payment_terms WHERE organisation_id = $1", w.x)
    sync(w)  # the mock's Organisation has "PaymentTerms": {}, as the example of Xero's spec
    expect_eq(default_terms(w), [], "Xero has no sales terms: none stored")
    st, _, _ = w.m.call("PUT", f"/_mock/tenants/{w.t}/organisation",
                        json.dumps({"PaymentTerms": {"Sales": {"Day": 40, "Type": "OFCURRENTMONTH"}}}).encode(),
                        {"Content-Type": "application/json"})
    expect_eq(st, 400, "the mock refuses terms Xero would not hold")
    w.m.ctl("PUT", f"tenants/{w.t}/organisation", {"PaymentTerms": {"Bills": {"Day": 15, "Type": "OFCURRENTMONTH"}}})
    sync(w)
    expect_eq(default_terms(w), [], "only bills' terms: none stored")
    w.m.ctl("PUT", f"tenants/{w.t}/organisation",
            {"PaymentTerms": {"Bills": {"Day": 15, "Type": "OFCURRENTMONTH"},
                              "Sales": {"Day": 10, "Type": "DAYSAFTERBILLMONTH"}}})
    sync(w)
    expect_eq(default_terms(w), [["DAYSAFTERBILLMONTH", "10", "xero"]], "Xero's sales terms (not the bills')")
    doc, _ = w.ok("GET", "/v1/admin/terms")
    expect_eq((doc["default"]["type"], doc["default"]["day"], doc["default"]["source"]),
              ("DAYSAFTERBILLMONTH", 10, "xero"), "shown with their source")
    expect_eq(h.sql_rows(w.db, "SELECT actor, action FROM audit_log WHERE organisation_id = $1 AND action = "
                               "'terms.xero_default'", w.x), [["system:xero", "terms.xero_default"]], "audited")
    w.m.ctl("PUT", f"tenants/{w.t}/organisation", {"PaymentTerms": {"Sales": {"Day": 20, "Type": "OFFOLLOWINGMONTH"}}})
    sync(w)
    expect_eq(default_terms(w), [["OFFOLLOWINGMONTH", "20", "xero"]], "Xero's change followed")
    # without the settings scope the sync does not ask (Xero would refuse): nothing changes
    w.m.ctl("PUT", f"tenants/{w.t}/organisation", {"PaymentTerms": {"Sales": {"Day": 9, "Type": "OFFOLLOWINGMONTH"}}})
    w.m.ctl("DELETE", "requests")
    sync(w, dict(w.env, SETTLED_XERO_SCOPES="offline_access accounting.transactions accounting.contacts"))
    expect_eq(default_terms(w), [["OFFOLLOWINGMONTH", "20", "xero"]], "not read without the scope")
    expect_eq([c for c in w.m.api_calls() if c["path"].startswith("/api.xro/2.0/Organisation")], [],
              "no Organisation call")
    doc, _ = w.ok("PUT", "/v1/admin/terms", body={"type": "DAYSAFTERBILLDATE", "day": 30})
    expect_eq(doc["default"]["source"], "admin", "the admin's")
    w.m.ctl("PUT", f"tenants/{w.t}/organisation", {"PaymentTerms": {"Sales": {"Day": 5, "Type": "OFCURRENTMONTH"}}})
    sync(w)
    expect_eq(default_terms(w), [["DAYSAFTERBILLDATE", "30", "admin"]], "an admin's default is never replaced")
    w.m.ctl("PUT", f"tenants/{w.t}/organisation", {"PaymentTerms": None})


@api_test
def test_access_matrix(w):
    """Every route of this file's area x every kind of caller: anonymous 401, clients 404, X's admin 200, Y's admin
    404 on X's customer (and 200 on its own organisation's routes)."""
    names = {"admin_timezone_get": None, "admin_timezone_put": {"timezone": "UTC"}, "admin_dunning_get": None,
             "admin_dunning_put": {"steps": [STEP]}, "admin_customer_dunning_get": None,
             "admin_customer_dunning_put": {"steps": [STEP]}, "admin_customer_dunning_delete": None}
    routes = [r for r in ti.routes() if r["name"] in names]
    expect_eq(sorted(r["name"] for r in routes), sorted(names), "every route of the area is in the table")
    cells = 0
    for r in routes:
        path = r["path"].replace("{id}", str(w.a))
        scoped = "{id}" in r["path"]
        for who in ("anonymous", "client_a", "admin_y", "admin_x"):
            st, rh, out = w.call(r["method"], path, None if who == "anonymous" else who, names[r["name"]])
            want = 401 if who == "anonymous" else 404 if who == "client_a" or (who == "admin_y" and scoped) else 200
            expect_eq(st, want, f"{r['method']} {path} as {who} (body {out[:300]!r})")
            if st != 200:
                expect_eq(rh.get("content-type"), "application/problem+json", "errors are problem+json")
            cells += 1
    expect(cells == 28, "28 cells", cells)


if __name__ == "__main__":
    h.run(globals())
