# SPDX-License-Identifier: MIT
"""test_api_events.py: the admin routes of the webhook event log and replay, the Xero connection and the audit log
(gateway/api/events.c, xero_admin.c, audit_api.c; docs/api.md "Admin: events, replay, Xero, audit") against the real
binary, PostgreSQL, Redis and the project's mock Xero.

Events are seeded through the real intake (signed Xero and Stripe webhooks) and processed by the server's worker.
What is checked: the list covers every event of the organisation exactly once, page by page, newest first, with
no bodies, and each filter (provider, status, type or category, since/until) selects what SQL says; the detail has
the raw body byte-exact and the headers; another organisation's admin gets 404 and a client 404 on every route
(the access matrix); a replay's dry run changes no row of any table and its diff is what the real replay then
changes; the real replay's audit row names the admin and the request id; a replay of more than 1000 events is 400
replay_too_large and changes nothing; audit verify is ok, then names a row tampered with in SQL as the first broken
link; the Xero connect URL's state is accepted by the callback once, and the connection is audited as the admin.
Every response is checked against docs/openapi.yaml.
"""

import decimal
import json
import urllib.parse
import uuid

import harness as h
import openapi_check
import pipelinelib as pl
from harness import expect, expect_eq, expect_in
from test_api_invoices import JWT_SECRET, mint

ADMIN_X, ADMIN_Y, CLIENT_X = 301, 302, 303

_world = None


class World:
    """One database with the mock Xero connected for organisation X (the default one), organisation Y, a customer
    of X and its client, and a fixed port (the Xero redirect URI names it)."""

    def __init__(self):
        self.m = pl.Mock()
        self.t = pl.new_tenant()
        self.db = pl.connected_db(self.m, [self.t], "api_events")
        self.x = h.sql_value(self.db, "SELECT organisation_id FROM xero_tokens ORDER BY id LIMIT 1")
        self.y = h.sql_value(self.db, "WITH i AS (INSERT INTO organisations (slug, name) VALUES ('org-y', 'Y') "
                                      "RETURNING id) SELECT id FROM i")
        cust = h.sql_value(self.db, "WITH i AS (INSERT INTO customers (organisation_id, name, email) VALUES ($1, "
                                    "'C', 'c@example.com') RETURNING id) SELECT id FROM i", self.x)
        self.tokens = {"admin_x": mint(ADMIN_X, self.x, "admin"), "admin_y": mint(ADMIN_Y, self.y, "admin"),
                       "client_x": mint(CLIENT_X, self.x, "client", cust)}
        self.port = h.free_port()
        self.redirect = f"http://127.0.0.1:{self.port}/v1/xero/callback"
        self.m.ctl("PUT", "app", {"redirect_uris": [self.redirect]})
        self.env = pl.settled_env(self.m, self.db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0,
                                  SETTLED_WORKER_MAX_ATTEMPTS=2, SETTLED_WORKER_BACKOFF_MS=50,
                                  SETTLED_WORKER_BACKOFF_MAX_MS=100, SETTLED_JWT_SECRET=JWT_SECRET,
                                  SETTLED_XERO_REDIRECT_URI=self.redirect)
        self.server = None
        self.seeded = False

    def call(self, method, path, who=None, body=None, headers=None):
        hdrs = dict(headers or {})
        if who:
            hdrs["Authorization"] = f"Bearer {self.tokens[who]}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        st, rh, out = self.server.request(method, path, body=data, headers=hdrs)
        openapi_check.response(method, path, st, rh, out)
        return st, rh, out

    def json(self, method, path, who, body=None, status=200, headers=None):
        st, rh, out = self.call(method, path, who, body, headers)
        expect_eq(st, status, f"{method} {path} as {who} (body {out[:400]!r})")
        return json.loads(out)

    def seed(self):
        """Once: a Xero event (invoice a, done) and three Stripe events through the intake, processed."""
        if self.seeded:
            return
        self.a = str(uuid.uuid4())
        self.m.put(self.t, "invoices", self.a, pl.invoice(self.a, pl.BASE_MS, "10.00"))
        pl.post(self.server, pl.delivery([pl.xero_event(self.t, self.a)]))
        self.stripe_bodies = {}
        for i, kind in enumerate(("payment_intent.succeeded", "charge.refunded", "customer.created")):
            eid = f"evt_api_{i}_{uuid.uuid4().hex[:8]}"
            # odd spacing and non-ASCII text: the stored bytes must come back exactly
            body = ('{"id": "%s",  "object":"event", "type": "%s", "created": 1767225600, "livemode": false, '
                    '"data": {"object": {"id": "obj_%d", "object": "thing", "description": "caf\u00e9 \u2713"}}}'
                    % (eid, kind, i)).encode()
            st, _, _ = self.server.post_stripe(body)
            expect_eq(st, 200, f"stripe webhook {kind} accepted")
            self.stripe_bodies[eid] = body
        pl.wait_drained(self.db, 30, "the seeded events")
        self.seeded = True


def world():
    global _world
    if _world is None:
        pl.require("SETTLED_TEST_PG_URL", "SETTLED_TEST_REDIS_URL", "SETTLED_BIN", "SETTLED_SOURCE_DIR")
        _world = World()
    return _world


def api_test(fn):
    def run():
        w = world()
        w.server = h.Settled(w.db, env=w.env, port=w.port)
        w.seed()
        fn(w)
        w.server.stop()
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def event_ids(w, where="", *params):
    """The ids of organisation X's events matching a SQL condition, newest first."""
    q = "SELECT id FROM inbox_events WHERE organisation_id = $1" + (f" AND {where}" if where else "") + \
        " ORDER BY id DESC"
    return [int(i) for (i,) in h.sql_rows(w.db, q, w.x, *params)]


def list_all(w, query="", limit=2, who="admin_x", path="/v1/admin/events"):
    seen, pages, cursor = [], 0, None
    while True:
        q = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "") + (f"&{query}" if query else "")
        doc = w.json("GET", f"{path}?{q}", who)
        pages += 1
        expect(len(doc["data"]) <= limit, f"a page holds at most {limit}")
        seen += [e["id"] for e in doc["data"]]
        if path == "/v1/admin/events":
            for e in doc["data"]:
                expect("body" not in e and "headers" not in e, "no bodies or headers in the list")
        cursor = doc["next_cursor"]
        if cursor is None:
            return seen, pages
        expect(pages < 200, "paging ends")


@api_test
def test_list_filters_and_pages_exactly_once(w):
    want = event_ids(w)
    expect(len(want) >= 4, f"at least the 4 seeded events ({want})")
    ids, pages = list_all(w)
    expect_eq(ids, want, "every event of X once, newest first")
    expect_eq(pages, -(-len(want) // 2), "pages of 2")
    # HEAD and If-None-Match, as on every GET of the API
    st, rh, body = w.call("GET", "/v1/admin/events", "admin_x")
    st2, rh2, body2 = w.call("HEAD", "/v1/admin/events", "admin_x")
    expect_eq((st2, body2, rh2.get("etag")), (200, b"", rh.get("etag")), "HEAD: the GET's status and ETag, no body")
    st3, _, body3 = w.call("GET", "/v1/admin/events", "admin_x", headers={"If-None-Match": rh["etag"]})
    expect_eq((st3, body3), (304, b""), "If-None-Match")
    for query, where, params in (("provider=stripe", "provider = 'stripe'", ()),
                                 ("provider=xero", "provider = 'xero'", ()),
                                 ("status=done", "status = 'done'", ()),
                                 ("type=INVOICE", "event_type LIKE 'INVOICE.%'", ()),
                                 ("type=charge.refunded", "event_type = 'charge.refunded'", ())):
        got, _ = list_all(w, query)
        expect_eq(got, event_ids(w, where, *params), f"filter {query}")
    expect(len(list_all(w, "provider=stripe")[0]) == 3, "three Stripe events")
    # since (inclusive) and until (exclusive) by the receive time of the second-oldest event
    mid = h.sql_value(w.db, "SELECT received_at::text FROM inbox_events WHERE id = $1", str(sorted(want)[1]))
    q = urllib.parse.urlencode({"since": mid})
    expect_eq(list_all(w, q)[0], event_ids(w, "received_at >= $2::timestamptz", mid), "since")
    q = urllib.parse.urlencode({"until": mid})
    expect_eq(list_all(w, q)[0], event_ids(w, "received_at < $2::timestamptz", mid), "until")
    expect_eq(list_all(w, "since=1h")[0], want, "since as an age")
    for q, field in (("since=not-a-time", "since"), ("until=2026-13-45", "until"), ("cursor=Zm9v", "cursor"),
                     ("status=bogus", "status"), ("provider=paypal", "provider"), ("limit=101", "limit")):
        st, rh, body = w.call("GET", f"/v1/admin/events?{q}", "admin_x")
        h.expect_problem((st, rh, body), 400, "parameter_invalid", q)
        expect_eq(json.loads(body).get("field"), field, f"{q} names {field}")
    st, rh, body = w.call("GET", "/v1/admin/events?body=1", "admin_x")
    h.expect_problem((st, rh, body), 400, "parameter_unknown", "an unknown parameter")
    # organisation Y has none of X's events
    expect_eq(w.json("GET", "/v1/admin/events", "admin_y")["data"], [], "Y's log is empty")


@api_test
def test_detail_has_the_raw_body_and_is_scoped(w):
    for eid, body in w.stripe_bodies.items():
        iid = int(h.sql_value(w.db, "SELECT id FROM inbox_events WHERE event_id = $1", eid))
        d = w.json("GET", f"/v1/admin/events/{iid}", "admin_x")
        expect_eq((d["id"], d["provider"], d["event_id"], d["body_encoding"]), (iid, "stripe", eid, "utf-8"),
                  "the detail")
        expect_eq(d["body"].encode("utf-8"), body, "the raw body, byte-exact")
        expect_eq(d["body_bytes"], len(body), "its size")
        expect_in("content-type", {k.lower() for k in d["headers"]}, "the stored headers")
        row = h.sql_rows(w.db, "SELECT status, attempts, last_error FROM inbox_events WHERE id = $1", str(iid))[0]
        expect_eq((d["status"], d["attempts"], d["last_error"]), (row[0], int(row[1]), row[2]), "status, attempts")
        expect_eq((d["outcome"]["status"], d["outcome"]["attempts"]), (row[0], int(row[1])), "the outcome")
        # another organisation's event is not found, like no event at all
        st, rh, out = w.call("GET", f"/v1/admin/events/{iid}", "admin_y")
        h.expect_problem((st, rh, out), 404, "not_found", "Y on X's event")
        one = json.loads(out)
        st, rh, out = w.call("GET", "/v1/admin/events/999999999", "admin_y")
        two = json.loads(out)
        one.pop("request_id"), two.pop("request_id")
        expect_eq(one, two, "another's event is indistinguishable from none")
    # the Xero event's processing: its audit rows (the invoice's upsert) are its effects
    xid = event_ids(w, "provider = 'xero'")[-1]
    d = w.json("GET", f"/v1/admin/events/{xid}", "admin_x")
    expect_eq(d["outcome"]["status"], "done", "the Xero event was processed")
    expect(any(e["entity_type"] == "xero_invoice" and e["entity_id"] == w.a for e in d["outcome"]["effects"]),
           f"its effects name invoice a ({d['outcome']['effects']})")
    # a stored body that is not UTF-8 comes back as base64
    sid = event_ids(w, "provider = 'stripe'")[0]
    h.sql(w.db, "UPDATE inbox_events SET body = '\\xff00fe7b'::bytea, delivery_id = NULL WHERE id = $1", str(sid))
    d = w.json("GET", f"/v1/admin/events/{sid}", "admin_x")
    expect_eq((d["body"], d["body_encoding"], d["body_bytes"]), ("/wD+ew==", "base64", 4), "a binary body")


@api_test
def test_access_matrix(w):
    """Every admin route of this area x anonymous / client of X / admin X / admin Y, with valid inputs: anonymous
    401, the client 404 (the route is not its role's), admin X 200, admin Y 200 on lists and 404 on X's event."""
    eid = event_ids(w, "provider = 'stripe'")[0]
    routes = [("GET", "/v1/admin/events", None, False), ("GET", f"/v1/admin/events/{eid}", None, True),
              ("POST", f"/v1/admin/events/{eid}/replay", {"dry_run": True}, True),
              ("POST", "/v1/admin/events/replay", {"since": "1h", "dry_run": True}, False),
              ("GET", "/v1/admin/xero", None, False), ("GET", "/v1/admin/xero/connect", None, False),
              ("GET", "/v1/admin/audit", None, False), ("POST", "/v1/admin/audit/verify", None, False)]
    table = {r["path"] for r in openapi_routes() if r["path"].startswith("/v1/admin/") and
             r["name"].startswith(("admin_events", "admin_xero", "admin_audit"))}
    expect_eq(table, {"/v1/admin/events", "/v1/admin/events/{id}", "/v1/admin/events/{id}/replay",
                      "/v1/admin/events/replay", "/v1/admin/xero", "/v1/admin/xero/connect", "/v1/admin/audit",
                      "/v1/admin/audit/verify"}, "the routes of this area in the table")
    for method, path, body, scoped in routes:
        for who in (None, "client_x", "admin_x", "admin_y"):
            want = 401 if who is None else 404 if who == "client_x" else 404 if (scoped and who == "admin_y") else 200
            st, rh, out = w.call(method, path, who, body)
            expect_eq(st, want, f"{method} {path} as {who or 'anonymous'} (body {out[:300]!r})")
            if st != 200:
                expect_eq(rh.get("content-type"), "application/problem+json", "errors are problem+json")


def openapi_routes():
    res = h.run_settled(["routes", "--json"])
    expect_eq(res.returncode, 0, "settled routes --json")
    return [json.loads(line) for line in res.stdout.splitlines()]


# ---------------------------------------------------------------------------------------------------
# replay


def dump(db):
    """{table: md5 of every row's text} of the tables a replay may touch, and of every other table."""
    tables = [t for (t,) in h.sql_rows(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                                           " ORDER BY tablename")]
    for must in ("inbox_events", "payments", "ledger_entries", "invoice_payment_states", "audit_log",
                 "xero_invoices", "xero_tokens", "xero_tenants"):
        expect_in(must, tables, "a table the dump covers")
    return {t: h.sql_value(db, f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM \"{t}\" x")
            for t in tables}


def dec(text):
    return json.loads(text, parse_float=decimal.Decimal) if text is not None else None


def row_state(db, table, key):
    """A row's fields as its audit rows record them (the dry run's diff is made from those)."""
    if table == "xero_invoices":
        v = h.sql_value(db, "SELECT xero_invoice_json(i)::text FROM xero_invoices i WHERE invoice_id = $1", key)
    elif table == "invoice_payment_states":
        v = h.sql_value(db, "SELECT pay_state_audit(s)::text FROM invoice_payment_states s WHERE invoice_id = $1",
                        key)
    elif table == "webhook_events":
        st, att, err = h.sql_rows(db, "SELECT status, attempts, last_error FROM webhook_events WHERE id = $1", key)[0]
        return {"status": st, "attempts": int(att), "last_error": err}
    else:
        raise h.Failure(f"no reader for {table}")
    return dec(v)


def field_diff(before, after):
    before, after = before or {}, after or {}
    return {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}


@api_test
def test_replay_dry_run_changes_nothing_and_predicts_the_replay(w):
    m, db, t = w.m, w.db, w.t
    a, b = w.a, str(uuid.uuid4())
    # Xero has a new version of a and a new invoice b, and fails every call: both events go dead
    m.put(t, "invoices", a, pl.invoice(a, pl.BASE_MS + 3600000, "20.00", status="PAID", amount_due="0.00",
                                       amount_paid="20.00"))
    m.put(t, "invoices", b, pl.invoice(b, pl.BASE_MS, "7.50"))
    dead_before = int(h.sql_value(db, "SELECT count(*) FROM inbox_events WHERE status = 'dead'"))
    m.faults({"mode": "500", "count": 0, "tenant": t})
    pl.post(w.server, pl.delivery([pl.xero_event(t, a)], seq=2))
    pl.post(w.server, pl.delivery([pl.xero_event(t, b)], seq=3))
    pl.wait_for(lambda: int(h.sql_value(db, "SELECT count(*) FROM inbox_events WHERE status = 'dead'")) ==
                dead_before + 2, 30, "both events to be dead")
    m.clear_faults()
    ea, eb = [int(i) for (i,) in h.sql_rows(db, "SELECT id FROM inbox_events WHERE status = 'dead' AND provider = "
                                                "'xero' ORDER BY id DESC LIMIT 2")][::-1]

    # the dry run of one event: no row of any table changes
    sums = dump(db)
    dry = w.json("POST", f"/v1/admin/events/{ea}/replay", "admin_x", {"dry_run": True})
    expect_eq(dump(db), sums, "every table before and after the dry run of one event")
    expect_eq((dry["dry_run"], len(dry["events"]), dry["errors"]), (True, 1, []), "one event, no error")
    d = dry["events"][0]
    expect_eq((d["id"], d["outcome"], d["last_error"]), (ea, "done", None), "the dry run's outcome")
    predicted = {}
    for c in d["changes"]:
        expect(c["before"] is None or isinstance(c["before"], str), "before is a JSON text")
        predicted.setdefault((c["table"], c["key"]), {})[c["field"]] = (dec(c["before"]), dec(c["after"]))
    expect_eq(set(predicted), {("xero_invoices", a), ("invoice_payment_states", a), ("webhook_events", str(ea))},
              "the rows the diff names")
    expect_eq(predicted[("xero_invoices", a)]["total"], (decimal.Decimal("10.0000"), decimal.Decimal("20.0000")),
              "the total would go from 10 to 20")

    # the dry run of a filter: both dead events (the default statuses failed and dead), still nothing changes
    many = w.json("POST", "/v1/admin/events/replay", "admin_x", {"since": "1h", "provider": "xero", "dry_run": True})
    expect_eq(dump(db), sums, "every table before and after the dry run of a filter")
    expect_eq(sorted(e["id"] for e in many["events"]), [ea, eb], "the filter's dry run covers the dead events")
    expect_eq(next(e for e in many["events"] if e["id"] == ea)["changes"], d["changes"], "the same diff for ea")
    st, rh, out = w.call("POST", "/v1/admin/events/replay", "admin_x", {"since": "1h", "dry_run": True, "x": 1})
    h.expect_problem((st, rh, out), 400, "parameter_unknown", "an unknown body field")
    st, rh, out = w.call("POST", "/v1/admin/events/replay", "admin_x", {"dry_run": True})
    h.expect_problem((st, rh, out), 400, "parameter_invalid", "since is required")
    expect_eq(json.loads(out)["field"], "since", "names since")
    st, rh, out = w.call("POST", f"/v1/admin/events/{ea}/replay", "admin_x", {"dry_run": "yes"})
    h.expect_problem((st, rh, out), 400, "parameter_invalid", "dry_run must be a boolean")
    expect_eq(dump(db), sums, "refused requests change nothing")

    # the real replay changes what the dry run said, audited as the admin with the request id
    before = {k: row_state(db, *k) for k in predicted}
    rid = "replay-test-" + uuid.uuid4().hex[:8]
    res = w.json("POST", f"/v1/admin/events/{ea}/replay", "admin_x", {}, headers={"X-Request-Id": rid})
    expect_eq((res["dry_run"], res["reset"], res["actor"], res["request_id"]), (False, 1, f"user:{ADMIN_X}", rid),
              "the replay")
    pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM inbox_events WHERE id = $1", str(ea)) == "done", 30,
                "the replayed event to be done")
    real = {k: field_diff(before[k], row_state(db, *k)) for k in predicted}
    expect_eq(real, predicted, "what the replay changed = what the dry run said")
    after = dump(db)
    changed = {n for n in sums if sums[n] != after[n]} - {"provider_circuits"}
    expect_eq(changed, {"xero_invoices", "invoice_payment_states", "inbox_events", "audit_log"},
              "the tables the replay changed (the ones the diff names, and the audit log)")
    audit = h.sql_rows(db, "SELECT actor, correlation_id, before ->> 'status', after ->> 'status' FROM audit_log "
                           "WHERE action = 'event.replay' AND entity_id = $1", str(ea))
    expect_eq(audit, [[f"user:{ADMIN_X}", rid, "dead", "pending"]], "the replay's audit row names the admin")
    det = w.json("GET", f"/v1/admin/events/{ea}", "admin_x")
    expect_eq([(r["actor"], r["request_id"], r["status_before"]) for r in det["replays"]],
              [(f"user:{ADMIN_X}", rid, "dead")], "the detail lists the replay")

    # another organisation's admin cannot replay it, dry or not
    for body in ({"dry_run": True}, {}):
        st, rh, out = w.call("POST", f"/v1/admin/events/{eb}/replay", "admin_y", body)
        h.expect_problem((st, rh, out), 404, "not_found", f"Y replays X's event {body}")
    res = w.json("POST", "/v1/admin/events/replay", "admin_y", {"since": "1h"})
    expect_eq((res["selected"], res["reset"]), (0, 0), "Y's filter replay selects none of X's events")
    expect_eq(h.sql_value(db, "SELECT status FROM inbox_events WHERE id = $1", str(eb)), "dead", "b is untouched")

    # a filter replay: b
    res = w.json("POST", "/v1/admin/events/replay", "admin_x", {"since": "1h", "provider": "xero"})
    expect_eq((res["selected"], res["reset"], res["actor"]), (1, 1, f"user:{ADMIN_X}"), "the filter replay")
    pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM inbox_events WHERE id = $1", str(eb)) == "done", 30,
                "b to be done")


@api_test
def test_replay_bound(w):
    """More than 1000 matching events: 400 replay_too_large naming the bound, nothing changes (rows of
    organisation Y, made in SQL: a thousand webhooks would only slow the test down)."""
    db = w.db
    h.sql(db, "INSERT INTO inbox_events (organisation_id, provider, source, account, event_id, event_type, "
              "resource_id, body, headers, verified_at, received_at, stored_at, correlation_id, status, attempts, "
              "last_error) "
              "SELECT $1, 'stripe', 'default', 'acct', 'evt_bound_' || g, 'charge.failed', 'ch_' || g, '{}'::bytea, "
              "'{}'::jsonb, now(), now(), now(), 'corr-' || g, 'dead', 3, 'boom' FROM generate_series(1, 1001) g", w.y)
    sums = dump(db)
    for dry in (True, False):
        st, rh, out = w.call("POST", "/v1/admin/events/replay", "admin_y", {"since": "1h", "dry_run": dry})
        h.expect_problem((st, rh, out), 400, "replay_too_large", f"1001 events, dry_run {dry}")
        expect_in("1000", json.loads(out)["detail"], "the detail names the bound")
        expect_eq(json.loads(out)["field"], "since", "the field")
    expect_eq(dump(db), sums, "nothing changed")
    res = w.json("POST", "/v1/admin/events/replay", "admin_y", {"since": "1h", "type": "charge", "dry_run": True,
                                                               "provider": "gocardless"})
    expect_eq(res["selected"], 0, "a narrower filter is within the bound")
    h.sql(db, "DELETE FROM inbox_events WHERE organisation_id = $1", w.y)


# ---------------------------------------------------------------------------------------------------
# audit


@api_test
def test_audit_list_and_verify(w):
    db = w.db
    n = int(h.sql_value(db, "SELECT count(*) FROM audit_log WHERE organisation_id = $1", w.x))
    expect(n >= 2, f"X has audit rows ({n})")
    ids, _ = list_all(w, limit=3, path="/v1/admin/audit")
    expect_eq(ids, [int(i) for (i,) in h.sql_rows(db, "SELECT id FROM audit_log WHERE organisation_id = $1 "
                                                      "ORDER BY id DESC", w.x)], "every audit row of X once")
    row = h.sql_rows(db, "SELECT entity_type, entity_id FROM audit_log WHERE organisation_id = $1 ORDER BY id "
                         "LIMIT 1", w.x)[0]
    q = urllib.parse.urlencode({"entity_type": row[0], "entity_id": row[1]})
    got, _ = list_all(w, q, path="/v1/admin/audit")
    expect_eq(got, [int(i) for (i,) in h.sql_rows(db, "SELECT id FROM audit_log WHERE organisation_id = $1 AND "
                                                      "entity_type = $2 AND entity_id = $3 ORDER BY id DESC",
                                                  w.x, row[0], row[1])], "entity filter")
    expect_eq(w.json("GET", "/v1/admin/audit?until=2000-01-01T00:00:00Z", "admin_x")["data"], [], "until")
    expect_eq(w.json("GET", "/v1/admin/audit", "admin_y")["data"],
              [], "Y sees none of X's rows") if h.sql_value(db, "SELECT count(*) FROM audit_log WHERE "
                                                                "organisation_id = $1", w.y) == "0" else None

    v = w.json("POST", "/v1/admin/audit/verify", "admin_x")
    expect_eq(v, {"ok": True, "checked": n, "first_broken": None}, "the chain verifies")
    # tamper with a row in the middle (as the superuser, past the append-only trigger): it is the first broken link
    victim, actor = h.sql_rows(db, "SELECT id, actor FROM audit_log WHERE organisation_id = $1 ORDER BY id "
                                   "OFFSET $2 LIMIT 1", w.x, str(n // 2))[0]
    tamper = ("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only; "
              "UPDATE audit_log SET actor = $1 WHERE id = $2; "
              "ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    for stmt, params in zip(tamper.split("; "), ((), ("user:evil", victim), ())):
        h.sql(db, stmt, *params)
    try:
        v = w.json("POST", "/v1/admin/audit/verify", "admin_x")
        expect_eq((v["ok"], v["checked"], v["first_broken"]["id"], v["first_broken"]["actor"]),
                  (False, n, int(victim), "user:evil"), "the tampered row is the first broken link")
        # Y's chain is its own
        expect_eq(w.json("POST", "/v1/admin/audit/verify", "admin_y")["ok"], True, "Y's chain is whole")
    finally:
        for stmt, params in zip(tamper.split("; "), ((), (actor, victim), ())):
            h.sql(db, stmt, *params)
    expect_eq(w.json("POST", "/v1/admin/audit/verify", "admin_x")["ok"], True, "restored, it verifies again")
    st, rh, out = w.call("POST", "/v1/admin/audit/verify", "admin_x", {"x": 1})
    h.expect_problem((st, rh, out), 400, "json_invalid", "verify takes no body")


# ---------------------------------------------------------------------------------------------------
# Xero


@api_test
def test_xero_status_and_connect(w):
    db, m = w.db, w.m
    st = w.json("GET", "/v1/admin/xero", "admin_x")
    expect_eq((st["connected"], st["quotas"], [t["tenant_id"] for t in st["tenants"]]), (True, "redis", [w.t]),
              "X is connected to the tenant, quotas from Redis")
    q = st["tenants"][0]["quota"]
    expect(isinstance(q, dict) and 0 <= q["minute"] <= 60 and q["concurrent"] == 5 and q["day"] <= 5000,
           f"the tenant's remaining quota ({q})")
    raw = w.call("GET", "/v1/admin/xero", "admin_x")[2].decode()
    for secret in h.sql_rows(db, "SELECT encode(refresh_token, 'hex') FROM xero_tokens"):
        expect(secret[0] not in raw, "no token in the answer")
    expect("refresh_token" not in raw and "access_token\"" not in raw, "no token field")
    y = w.json("GET", "/v1/admin/xero", "admin_y")
    expect_eq((y["connected"], y["tenants"], y["token_sets"]), (False, [], []), "Y has no connection")

    doc = w.json("GET", "/v1/admin/xero/connect", "admin_x")
    url = doc["authorization_url"]
    expect(url.startswith(m.base), f"the URL goes to Xero's login ({url})")
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["state"]
    expect_eq(h.sql_rows(db, "SELECT organisation_id, user_id FROM xero_oauth_states ORDER BY created_at DESC "
                             "LIMIT 1"), [[w.x, str(ADMIN_X)]], "the state is bound to the admin")
    status, headers, _ = m.call("GET", url[len(m.base):])
    expect_eq(status, 302, "Xero's consent redirects")
    location = headers["location"]
    expect_in(f"state={urllib.parse.quote(state, safe='')}", location.replace("%3D", "="), "the same state back")
    path = location[len(f"http://127.0.0.1:{w.port}"):]
    status, _, body = w.server.get(path)
    expect_eq(status, 200, f"the callback accepts the state (body {body[:300]!r})")
    status, _, body = w.server.get(path)
    h.expect_problem((status, _, body), 400, "oauth_state_used", "the state is accepted once")
    expect_eq(h.sql_value(db, "SELECT actor FROM audit_log WHERE action = 'xero.connect' ORDER BY id DESC LIMIT 1"),
              f"user:{ADMIN_X}", "the connection is audited as the admin who asked")

    # without Redis the remaining quotas are unknown
    w.server.stop()
    env = dict(w.env)
    env["SETTLED_REDIS_URL"] = None
    w.server = h.Settled(db, env=env, port=w.port)
    st = w.json("GET", "/v1/admin/xero", "admin_x")
    expect_eq((st["quotas"], {t["quota"] for t in st["tenants"]}), ("unknown", {"unknown"}), "no Redis: unknown")


if __name__ == "__main__":
    h.run(globals())
