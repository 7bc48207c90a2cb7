# SPDX-License-Identifier: MIT
"""test_events_cli.py: `settled events list|show|forward` and `settled replay` through the real binary, a real
PostgreSQL and the project's mock Xero (gateway/cli_events.c, gateway/domain/replay.c, docs/operations.md "Dead
letters and replay").

- usage: every command's --help exits 0; bad values, missing values and conflicting options exit 2 and name the
  option; an unknown id exits 1;
- list and show: each filter (provider, status, type or category, since as a time or an age, limit) selects
  exactly the rows it should; show prints the raw body pretty-printed and its headers;
- forward: a local receiver gets the stored bytes unchanged, and the signature it checks with the given secret
  verifies (Stripe, Xero, GoCardless schemes); a receiver's 500 is exit 1;
- replay --dry-run: a checksum of every row of every table is the same before and after it, and the diff it
  printed is exactly what the real replay then changes (the mirror row's typed state, the inbox row), in no
  other table than those it names (and the audit log);
- replay: the event is processed again from its stored bytes and audited with who asked; --since replays the
  failed and dead rows of the filter and nothing else.
"""

import hashlib
import hmac
import base64
import decimal
import http.server
import json
import os
import subprocess
import threading
import time
import uuid

import harness as h
import pipelinelib as pl
from harness import expect, expect_eq, expect_in

_mock = None


def mock():
    global _mock
    pl.require("SETTLED_TEST_PG_URL", "SETTLED_TEST_REDIS_URL", "SETTLED_BIN", "SETTLED_SOURCE_DIR")
    if _mock is None:
        _mock = pl.Mock()
    return _mock


def settled(args, db, env=None, timeout=120):
    e = {"SETTLED_DATABASE_URL": db}
    e.update(env or {})
    return h.run_settled(args, e, timeout=timeout)


def settled_json(args, db, env=None):
    res = settled(args + ["--json"], db, env)
    expect_eq(res.returncode, 0, f"settled {' '.join(args)} --json exit code (stderr {res.stderr[-1500:]!r})")
    return json.loads(res.stdout)


# ---------------------------------------------------------------------------------------------------
# Usage


def test_help_and_usage_errors():
    db = h.new_database("ev_usage")
    for args in (["events", "--help"], ["events", "list", "--help"], ["events", "show", "--help"],
                 ["events", "forward", "--help"], ["replay", "--help"]):
        res = settled(args, db)
        expect_eq(res.returncode, 0, f"settled {' '.join(args)}: exit code")
        expect_in("usage: settled", res.stdout, f"settled {' '.join(args)}: usage on stdout")
    bad = [
        (["events", "list", "--status", "deadish"], "--status"),
        (["events", "list", "--provider", "paypal"], "--provider"),
        (["events", "list", "--since", "yesterday-ish"], "--since"),
        (["events", "list", "--limit", "0"], "--limit"),
        (["events", "list", "--limit"], "--limit needs a value"),
        (["events", "list", "--bogus"], "unknown argument"),
        (["events", "show"], "give an event id"),
        (["events", "show", "12x"], "not an event id"),
        (["events", "forward", "1", "--to", "ftp://127.0.0.1/x", "--secret", "s"], "only http:// and https://"),
        (["events", "forward", "1", "--to", "http://127.0.0.1:1/"], "--secret"),
        (["events", "frobnicate"], "unknown subcommand"),
        (["replay"], "give event ids"),
        (["replay", "1", "--since", "1h"], "not both"),
        (["replay", "1", "--status", "dead"], "not both"),
        (["replay", "--since", "1h", "--status", "nope"], "--status"),
        (["replay", "--since", "a week ago or so"], "--since"),
        (["replay", "--actor"], "--actor needs a value"),
    ]
    for args, needle in bad:
        res = settled(args, db)
        expect_eq(res.returncode, 2, f"settled {' '.join(args)}: exit code (stderr {res.stderr!r})")
        expect_in(needle, res.stderr, f"settled {' '.join(args)}: the message")
    for args in (["events", "show", "424242"], ["replay", "424242"], ["replay", "424242", "--dry-run"]):
        res = settled(args, db)
        expect_eq(res.returncode, 1, f"settled {' '.join(args)}: exit code (stderr {res.stderr!r})")
    expect_in("no stored event has id 424242", settled(["events", "show", "424242"], db).stderr, "unknown id")
    expect_in("name no stored event", settled(["replay", "424242"], db).stderr, "replay of an unknown id")
    res = settled(["events", "list"], "", env={"SETTLED_DATABASE_URL": None})
    expect_eq(res.returncode, 1, "events list without a database: exit code")
    expect_in("SETTLED_DATABASE_URL", res.stderr, "events list without a database names the setting")


# ---------------------------------------------------------------------------------------------------
# list and show

STRIPE_EVENT = {
    "id": "evt_cli_1", "object": "event", "type": "payment_intent.succeeded", "created": 1735689600,
    "data": {"object": {"id": "pi_cli_1", "object": "payment_intent", "amount": 1999, "currency": "gbp"}},
    "livemode": False, "api_version": "2024-06-20",
}


def gocardless_body():
    return json.dumps({"events": [{"id": "EVCLI1", "created_at": "2025-01-01T00:00:00.000Z", "resource_type":
                                   "payments", "action": "confirmed", "links": {"payment": "PMCLI1"},
                                   "details": {"origin": "gocardless", "cause": "payment_confirmed"}}]}).encode()


def stored(db):
    """{(provider, event_type): id}"""
    return {(p, t): int(i) for i, p, t in h.sql_rows(db, "SELECT id, provider, event_type FROM webhook_events")}


def test_list_and_show_filters():
    db = h.new_database("ev_list")
    tenant = str(uuid.uuid4())
    stripe_body = json.dumps(STRIPE_EVENT, separators=(",", ":")).encode()
    with h.Settled(db, env={"SETTLED_WORKERS": 0}) as s:
        expect_eq(s.post_stripe(stripe_body)[0], 200, "stripe delivery")
        xero = pl.delivery([pl.xero_event(tenant, str(uuid.uuid4()), "INVOICE"),
                            pl.xero_event(tenant, str(uuid.uuid4()), "CONTACT")])
        expect_eq(s.post_xero(xero)[0], 200, "xero delivery")
        expect_eq(s.post_gocardless(gocardless_body())[0], 204, "gocardless delivery")
    ids = stored(db)
    expect_eq(len(ids), 4, f"rows stored ({ids})")
    inv, con = ids[("xero", "INVOICE.UPDATE")], ids[("xero", "CONTACT.UPDATE")]
    h.sql(db, "UPDATE webhook_events SET status = 'dead', attempts = 5, last_error = 'Xero API answered 500'"
              " WHERE id = $1", str(inv))

    def listed(*args):
        return [e["id"] for e in settled_json(["events", "list", *args], db)]

    everything = sorted(ids.values(), reverse=True)
    expect_eq(listed(), everything, "every event, newest first")
    expect_eq(listed("--provider", "xero"), sorted([inv, con], reverse=True), "--provider xero")
    expect_eq(listed("--provider", "stripe"), [ids[("stripe", "payment_intent.succeeded")]], "--provider stripe")
    expect_eq(listed("--status", "dead"), [inv], "--status dead")
    expect_eq(listed("--status", "pending"), [i for i in everything if i != inv], "--status pending")
    expect_eq(listed("--status", "dead,pending"), everything, "--status dead,pending")
    expect_eq(listed("--type", "INVOICE"), [inv], "--type INVOICE (a category)")
    expect_eq(listed("--type", "CONTACT.UPDATE"), [con], "--type CONTACT.UPDATE")
    expect_eq(listed("--type", "CONTACT.UPD"), [], "--type matches a whole type or category only")
    expect_eq(listed("--since", "1h"), everything, "--since 1h")
    expect_eq(listed("--since", "2099-01-01T00:00:00Z"), [], "--since in the future")
    expect_eq(listed("--since", "2000-01-01 00:00:00+00"), everything, "--since long ago")
    expect_eq(listed("--limit", "2"), everything[:2], "--limit 2")
    expect_eq(listed("--provider", "xero", "--status", "pending", "--type", "CONTACT"), [con], "filters combined")

    text = settled(["events", "list", "--status", "dead"], db)
    expect_eq(text.returncode, 0, "events list (table): exit code")
    lines = text.stdout.splitlines()
    expect(lines[0].split()[:3] == ["ID", "RECEIVED", "PROVIDER"], "the table's header", lines[0])
    expect(lines[1].split()[0] == str(inv) and "dead" in lines[1] and "Xero API answered 500" in lines[1],
           "the dead row's line", lines[1])
    expect_eq(lines[-1], "1 event", "the count line")

    shown = settled_json(["events", "show", str(ids[("stripe", "payment_intent.succeeded")])], db)
    expect_eq(shown["body"], STRIPE_EVENT, "show --json: the body")
    expect_eq((shown["provider"], shown["event_id"], shown["status"], shown["attempts"]),
              ("stripe", "evt_cli_1", "pending", 0), "show --json: metadata")
    expect("stripe-signature" not in json.dumps(shown["headers"]).lower(), "no signature among the stored headers",
           shown["headers"])
    res = settled(["events", "show", str(inv)], db)
    expect_eq(res.returncode, 0, "events show: exit code")
    for needle in ("  status          dead", "  attempts        5", "  last error      Xero API answered 500",
                   "headers\n", "body (", '\n  "events": [\n', f'"tenantId": "{tenant}"'):
        expect_in(needle, res.stdout, "events show: the text")
    # the pretty-printed body is the stored delivery's JSON
    body_text = res.stdout.split("pretty-printed)\n", 1)[1]
    expect_eq(json.loads(body_text), json.loads(xero), "events show: the body is the stored delivery")


# ---------------------------------------------------------------------------------------------------
# forward


class Receiver:
    """A local HTTP receiver that records each POST (headers, body) and answers self.status."""

    def __init__(self):
        self.got = []
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                n = int(self.headers.get("Content-Length") or 0)
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def raw_body(db, eid):
    return bytes.fromhex(h.sql_value(db, "SELECT encode(body, 'hex') FROM webhook_events WHERE id = $1", str(eid)))


def test_forward_resigns_the_stored_bytes():
    db = h.new_database("ev_fwd")
    tenant = str(uuid.uuid4())
    stripe_body = json.dumps(STRIPE_EVENT).encode()
    with h.Settled(db, env={"SETTLED_WORKERS": 0}) as s:
        expect_eq(s.post_stripe(stripe_body)[0], 200, "stripe delivery")
        expect_eq(s.post_xero(pl.delivery([pl.xero_event(tenant, str(uuid.uuid4()))]))[0], 200, "xero delivery")
        expect_eq(s.post_gocardless(gocardless_body())[0], 204, "gocardless delivery")
    ids = stored(db)
    r = Receiver()
    secret = "whsec_for_my_own_receiver"
    try:
        checks = {
            "stripe": lambda hd, b: (lambda t, v1: hmac.compare_digest(
                v1, hmac.new(secret.encode(), t.encode() + b"." + b, hashlib.sha256).hexdigest())
                and abs(int(t) - time.time()) < 60)(
                *[p.split("=", 1)[1] for p in hd["stripe-signature"].split(",")]),
            "xero": lambda hd, b: hmac.compare_digest(
                hd["x-xero-signature"], base64.b64encode(hmac.new(secret.encode(), b, hashlib.sha256).digest()).decode()),
            "gocardless": lambda hd, b: hmac.compare_digest(
                hd["webhook-signature"], hmac.new(secret.encode(), b, hashlib.sha256).hexdigest()),
        }
        for (provider, _), eid in sorted(ids.items()):
            before = len(r.got)
            res = settled(["events", "forward", str(eid), "--to", r.url, "--secret", secret], db)
            expect_eq(res.returncode, 0, f"forward {provider}: exit code (stderr {res.stderr!r})")
            expect_in("HTTP 200", res.stdout, f"forward {provider}: the receiver's status")
            expect_eq(len(r.got), before + 1, f"forward {provider}: one POST")
            hd, body = r.got[-1]
            expect_eq(body, raw_body(db, eid), f"forward {provider}: the stored bytes, unchanged")
            expect(checks[provider](hd, body), f"forward {provider}: the signature verifies with the secret", hd)
            expect(not checks[provider](hd, body + b" "), f"forward {provider}: and not for other bytes")
        # the secret from standard input (kept out of ps), and a receiver that fails
        r.status = 500
        eid = ids[("stripe", "payment_intent.succeeded")]
        env = h.settled_env({"SETTLED_DATABASE_URL": db})
        res = subprocess.run([h.settled_bin(), "events", "forward", str(eid), "--to", r.url, "--secret", "-"],
                             input=(secret + "\n").encode(), env=env, capture_output=True, timeout=60)
        expect_eq(res.returncode, 1, f"forward to a receiver answering 500: exit code ({res.stderr!r})")
        expect_in(b"HTTP 500", res.stdout, "forward: the receiver's 500 is shown")
        expect(checks["stripe"](*r.got[-1]), "the secret read from stdin signed it", r.got[-1][0])
        expect(secret.encode() not in res.stdout + res.stderr, "the secret is never printed")
    finally:
        r.close()


# ---------------------------------------------------------------------------------------------------
# replay and its dry run


def checksums(db):
    """{table: md5 of every row's text, in order} for every table of the public schema."""
    tables = [t for (t,) in h.sql_rows(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                                           " ORDER BY tablename")]
    out = {}
    for t in tables:
        out[t] = h.sql_value(db, f'SELECT md5(coalesce(string_agg(x::text, \'|\' ORDER BY x::text), \'\'))'
                                 f' FROM "{t}" x')
    return out


def invoice_json(db, iid):
    v = h.sql_value(db, "SELECT xero_invoice_json(i)::text FROM xero_invoices i WHERE invoice_id = $1", iid)
    return dec(v)


def payment_state_json(db, iid):
    """The invoice's payment state as its audit rows record it (pay_state_audit)."""
    v = h.sql_value(db, "SELECT pay_state_audit(s)::text FROM invoice_payment_states s WHERE invoice_id = $1", iid)
    return dec(v)


def dec(text):
    """A JSON text decoded with every number exact (Decimal); None stays None."""
    return json.loads(text, parse_float=decimal.Decimal) if text is not None else None


def inbox_state(db, eid):
    st, att, err = h.sql_rows(db, "SELECT status, attempts, last_error FROM webhook_events WHERE id = $1",
                              str(eid))[0]
    return {"status": st, "attempts": int(att), "last_error": err}


def field_diff(before, after):
    """{field: (before, after)} of the fields that differ between two dicts (None: absent)."""
    before, after = before or {}, after or {}
    return {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}


def test_dry_run_changes_nothing_and_predicts_the_replay():
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "ev_replay")
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    m.put(t, "invoices", a, pl.invoice(a, pl.BASE_MS, "10.00"))
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0, SETTLED_WORKER_MAX_ATTEMPTS=2,
                         SETTLED_WORKER_BACKOFF_MS=50, SETTLED_WORKER_BACKOFF_MAX_MS=100)
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(t, a)]))
        pl.wait_drained(db, 30, "the first version of invoice a", expect_rows=1)
        expect_eq(invoice_json(db, a)["total"], decimal.Decimal("10.00"), "invoice a mirrored at 10.00")
        # Xero then has a new version of a and a new invoice b, and fails every call: both events go dead
        m.put(t, "invoices", a, pl.invoice(a, pl.BASE_MS + 3600000, "20.00", status="PAID", amount_due="0.00",
                                           amount_paid="20.00"))
        m.put(t, "invoices", b, pl.invoice(b, pl.BASE_MS, "7.50"))
        m.faults({"mode": "500", "count": 0, "tenant": t})
        pl.post(s, pl.delivery([pl.xero_event(t, a)]))
        pl.post(s, pl.delivery([pl.xero_event(t, b)]))
        pl.wait_for(lambda: h.sql_value(db, "SELECT count(*) FROM webhook_events WHERE status = 'dead'") == "2", 30,
                    "both events to be dead")
        m.clear_faults()
        ea, eb = [int(i) for (i,) in h.sql_rows(db, "SELECT id FROM webhook_events WHERE status = 'dead' ORDER BY id")]

        # the dry run: nothing changes in any table, but the invoice was fetched (a GET)
        calls = len(m.api_calls("Invoices", a))
        sums = checksums(db)
        dry = settled_json(["replay", str(ea), "--dry-run"], db, env)
        expect_eq(checksums(db), sums, "a checksum of every table before and after the dry run")
        expect_eq(len(m.api_calls("Invoices", a)), calls + 1, "the dry run fetched the invoice once")
        expect(all(r.get("method", "GET") == "GET" for r in m.api_calls()), "only GETs were made")
        expect_eq(len(dry["events"]), 1, "one event in the dry run")
        d = dry["events"][0]
        expect_eq((d["id"], d["outcome"], d["last_error"], d["audit_rows"]), (ea, "done", None, 2),
                  "the dry run's outcome (the invoice's audit row and its payment state's)")
        predicted = {}
        for c in d["changes"]:
            predicted.setdefault((c["table"], c["key"]), {})[c["field"]] = (dec(c["before"]), dec(c["after"]))
        expect_eq(set(predicted), {("xero_invoices", a), ("invoice_payment_states", a), ("webhook_events", str(ea))},
                  "the rows the diff names")
        expect_eq(predicted[("invoice_payment_states", a)]["state"], ("unpaid", "paid"),
                  "the invoice paid in Xero would be paid")
        expect_eq(predicted[("xero_invoices", a)]["total"], (decimal.Decimal("10.0000"), decimal.Decimal("20.0000")),
                  "the total would go from 10 to 20")
        expect_eq(predicted[("webhook_events", str(ea))]["status"], ("dead", "done"), "the event would be done")
        text = settled(["replay", str(ea), "--dry-run"], db, env)
        expect_eq(text.returncode, 0, "dry run (text): exit code")
        expect_in(f"xero_invoices {a} total: 10.0000 -> 20.0000", text.stdout, "the text diff")
        expect_in("nothing was changed", text.stdout.splitlines()[-1], "the summary line")
        expect_eq(checksums(db), sums, "still nothing changed after a second dry run")

        # the real replay changes exactly what the dry run said, and nothing else but the audit log
        inv_before, inbox_before = invoice_json(db, a), inbox_state(db, ea)
        state_before = payment_state_json(db, a)
        res = settled_json(["replay", str(ea), "--actor", "tester"], db, env)
        expect_eq((res["reset"], res["busy"], res["unknown"], res["actor"]), (1, 0, 0, "cli:tester"), "the replay")
        pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM webhook_events WHERE id = $1", str(ea)) == "done", 30,
                    "the replayed event to be done")
        real = {("xero_invoices", a): field_diff(inv_before, invoice_json(db, a)),
                ("invoice_payment_states", a): field_diff(state_before, payment_state_json(db, a)),
                ("webhook_events", str(ea)): field_diff(inbox_before, inbox_state(db, ea))}
        expect_eq(real, predicted, "what the replay changed = what the dry run printed")
        after = checksums(db)
        # provider_circuits is the workers' operational state (a success closes or refreshes the account's
        # circuit), not an effect of the event: the dry run's diff rightly leaves it out
        changed = {tname for tname in sums if sums[tname] != after[tname]} - {"provider_circuits"}
        expect_eq(changed, {"xero_invoices", "invoice_payment_states", "inbox_events", "audit_log"},
                  "the tables the replay changed")
        audit = h.sql_rows(db, "SELECT actor, before ->> 'status', after ->> 'status', after ->> 'attempts'"
                               " FROM audit_log WHERE action = 'event.replay' AND entity_id = $1", str(ea))
        expect_eq(audit, [["cli:tester", "dead", "pending", "0"]], "the replay's audit row")
        expect_in("replayed by cli:tester (dead -> pending)", settled(["events", "show", str(ea)], db).stdout,
                  "events show lists the replay")
        expect_eq(h.sql_value(db, "SELECT count(*) FROM organisations o WHERE audit_verify(o.id) IS NOT NULL"), "0",
                  "the audit chain verifies")

        # --since: the dead b, not the done a (default statuses failed,dead); its filters are honoured
        res = settled_json(["replay", "--since", "1h", "--provider", "stripe"], db, env)
        expect_eq(res["selected"], 0, "replay --since of another provider selects nothing")
        res = settled_json(["replay", "--since", "1h", "--provider", "xero"], db, env)
        expect_eq((res["selected"], res["reset"]), (1, 1), "replay --since 1h --provider xero")
        pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM webhook_events WHERE id = $1", str(eb)) == "done", 30,
                    "b to be done")
        expect_eq(invoice_json(db, b)["total"], decimal.Decimal("7.50"), "invoice b mirrored after its replay")
        expect_eq(h.sql_value(db, "SELECT count(*) FROM audit_log WHERE action = 'event.replay'"), "2",
                  "one replay audit row per replayed event")
        res = settled(["replay", "--since", "1h"], db, env)
        expect_in("0 events selected", res.stdout, "nothing left to replay")


if __name__ == "__main__":
    h.run(globals())
