#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_notifications.py: the notification outbox and its e-mail (docs/collections.md, "E-mail and notifications"):
a real `settled serve` (its worker pool runs the mailer) against settled's own SMTP sink (tests/mock/smtp_sink.py).
Messages are enqueued with `settled notify`, which renders the templates of gateway/templates/.

Needs SETTLED_BIN and SETTLED_TEST_PG_URL like the other integration tests. ``python3 test_notifications.py
test_a`` runs only the named tests."""

import email
import email.policy
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
import openapi_check  # noqa: E402
from mocktest import Mock  # noqa: E402
from test_api_invoices import JWT_SECRET, mint  # noqa: E402

SINK = os.path.join(os.path.dirname(HERE), "mock", "smtp_sink.py")
FROM = "billing@acme.example"
PORTAL = "https://portal.acme.example"
SECRET_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
S = None  # the sink
SERVER = [None]  # the shared serve of the tests that do not start their own
DB = None
IDS = {}


def sink_env(**extra):
    env = {"SETTLED_SMTP_URL": f"smtp://127.0.0.1:{S.ctl('GET', 'info')['smtp_port']}",
           "SETTLED_SMTP_FROM": FROM, "SETTLED_SMTP_STARTTLS": "off", "SETTLED_PORTAL_URL": PORTAL,
           "SETTLED_RETRY_SCHEDULE": "300ms,300ms", "SETTLED_WORKER_POLL_MS": "200",
           "SETTLED_HTTP_TIMEOUT_MS": "3000", "SETTLED_WORKER_LEASE_MS": "1000",
           # the key of the unsubscribe tokens; no dunning evaluation (this file enqueues with settled notify)
           "SETTLED_SECRET_KEY": SECRET_KEY, "SETTLED_DUNNING_INTERVAL": "0"}
    env["SETTLED_JWT_SECRET"] = JWT_SECRET
    env.update(extra)
    return env


def notify(*args, env=None):
    res = h.run_settled(["notify", "--organisation", "acme", *args],
                        {"SETTLED_DATABASE_URL": DB, "SETTLED_PORTAL_URL": PORTAL, **(env or {})})
    h.expect_eq(res.returncode, 0, f"settled notify {args}: {res.stderr}")
    return res.stdout.split()[1], res.stdout.split()[2]


def messages(n, timeout=15):
    """Waits until the sink holds at least n messages; returns them parsed."""
    deadline = time.monotonic() + timeout
    while True:
        got = S.ctl("GET", "messages")
        if len(got) >= n or time.monotonic() > deadline:
            return [(m, email.message_from_string(m["data"], policy=email.policy.default)) for m in got]
        time.sleep(0.1)


def row(nid):
    r = h.sql_rows(DB, "SELECT status, attempts, coalesce(last_error, ''), sent_at IS NOT NULL FROM notifications "
                       "WHERE id = $1", nid)[0]
    return r[0], int(r[1]), r[2], r[3]


def wait_status(nid, status, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if row(nid)[0] == status:
            return row(nid)
        time.sleep(0.1)
    raise h.Failure(f"notification {nid}: expected {status}, has {row(nid)}")


def parts(msg):
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    return text, html


def seed():
    org = h.sql_value(DB, "WITH i AS (INSERT INTO organisations (slug, name) VALUES ('acme', 'Acme & Sons') "
                          "RETURNING id) SELECT id FROM i")
    other = h.sql_value(DB, "WITH i AS (INSERT INTO organisations (slug, name) VALUES ('other', 'Other') "
                            "RETURNING id) SELECT id FROM i")
    IDS["org"], IDS["other"] = org, other

    def customer(name, mail, opt_out=False, org_id=org):
        return h.sql_value(DB, "WITH i AS (INSERT INTO customers (organisation_id, name, email, reminders_opt_out) "
                               "VALUES ($1, $2, $3, $4) RETURNING id) SELECT id FROM i", org_id, name, mail,
                           "true" if opt_out else "false")
    IDS["bob"] = customer("Bob <script>alert(1)</script> & Co", "bob@client.example")
    IDS["opt"] = customer("Opted Out Ltd", "opt@client.example", True)
    IDS["bad"] = customer("Gone Ltd", "gone@client.example")
    IDS["slow"] = customer("Slow Ltd", "slow@client.example")
    tenant = "00000000-0000-4000-8000-0000000000aa"
    for n, (sid, currency, due) in enumerate([("inv_gbp", "GBP", "1234.50"), ("inv_jpy", "JPY", "1235"),
                                              ("inv_kwd", "KWD", "0.125")]):
        h.sql(DB, "INSERT INTO xero_invoices (organisation_id, tenant_id, invoice_id, invoice_number, type, status, "
                  "currency_code, date, due_date, total, amount_due, amount_paid, amount_credited, updated_date_utc, "
                  "raw, settled_invoice_id) VALUES ($1, $2, $3, $4, 'ACCREC', 'AUTHORISED', $5, '2026-11-01', "
                  "'2026-12-15', $6, $6, 0, 0, now(), '{}', $7)",
              org, tenant, f"00000000-0000-4000-8000-{n + 1:012d}", f"INV-{n + 1:04d}", currency, due, sid)


def test_reminder_reaches_the_sink_once_with_headers_and_exact_amounts():
    S.ctl("DELETE", "messages")
    nid, status = notify("--customer", str(IDS["bob"]), "--kind", "invoice_due", "--invoice", "inv_gbp")
    h.expect_eq(status, "pending", "an e-mail is pending until sent")
    again, status2 = notify("--customer", str(IDS["bob"]), "--kind", "invoice_due", "--invoice", "inv_gbp")
    h.expect_eq(again, nid, "the same dedupe key: the same notification")
    wait_status(nid, "sent")
    time.sleep(0.5)
    got = messages(1)
    h.expect_eq(len(got), 1, "one mail for one dedupe key, enqueued twice")
    env, msg = got[0]
    h.expect_eq(env["mail_from"], FROM, "MAIL FROM")
    h.expect_eq(env["rcpt"], ["bob@client.example"], "RCPT TO")
    h.expect_eq(str(msg["From"]), FROM, "From")
    h.expect_eq(str(msg["To"]), "bob@client.example", "To")
    h.expect_eq(str(msg["Subject"]), "Invoice INV-0001 is due on 2026-12-15", "Subject")
    h.expect(msg["Message-ID"] is not None and msg["Date"] is not None, "Message-ID and Date")
    h.expect_in(f"<{PORTAL}/v1/unsubscribe?token=u1.{IDS['org']}.{IDS['bob']}.", str(msg["List-Unsubscribe"]),
                "List-Unsubscribe names the unsubscribe page with the customer's token (test_dunning.py checks it)")
    h.expect_in(f"<mailto:{FROM}", str(msg["List-Unsubscribe"]), "and a mailto")
    h.expect_eq(str(msg["List-Unsubscribe-Post"]), "List-Unsubscribe=One-Click", "one-click")
    h.expect_eq(msg.get_content_type(), "multipart/alternative", "text and HTML")
    text, html = parts(msg)
    h.expect_in("GBP 1,234.50", text, "the exact amount in the text")
    h.expect_in("GBP 1,234.50", html, "and in the HTML")
    h.expect_in("Dear Bob <script>alert(1)</script> & Co,", text, "the text body keeps the name as it is")
    h.expect_in("Bob &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co", html, "the HTML body escapes it")
    h.expect_not_in("<script>", html, "no markup from a value")
    h.expect_in("Acme &amp; Sons", html, "the organisation's name escaped")
    h.expect_in(f'href="{PORTAL}/invoices/inv_gbp"', html, "the payment link")
    audit = h.sql_value(DB, "SELECT string_agg(action, ',' ORDER BY id) FROM audit_log WHERE entity_type = "
                            "'notification' AND entity_id = $1", nid)
    h.expect_eq(audit, "notification.enqueue,notification.sent", "audited")


def test_currency_decimals():
    S.ctl("DELETE", "messages")
    a, _ = notify("--customer", str(IDS["bob"]), "--kind", "overdue", "--invoice", "inv_jpy")
    b, _ = notify("--customer", str(IDS["bob"]), "--kind", "overdue", "--invoice", "inv_kwd")
    wait_status(a, "sent")
    wait_status(b, "sent")
    bodies = [parts(m)[0] for _, m in messages(2)]
    h.expect(any("JPY 1,235 " in t for t in bodies), f"yen without decimals: {bodies}")
    h.expect(any("KWD 0.125 " in t for t in bodies), f"dinar with three: {bodies}")


def test_receipt_has_no_unsubscribe_and_opt_out_suppresses_reminders_only():
    S.ctl("DELETE", "messages")
    rem, st = notify("--customer", str(IDS["opt"]), "--kind", "final_notice", "--invoice", "inv_gbp")
    h.expect_eq(st, "suppressed", "an opted-out customer's reminder is suppressed")
    rec, st = notify("--customer", str(IDS["opt"]), "--kind", "receipt", "--invoice", "inv_gbp",
                     "--amount", "1234.5", "--currency", "GBP")
    h.expect_eq(st, "pending", "a receipt is still sent")
    wait_status(rec, "sent")
    time.sleep(0.8)
    got = messages(1)
    h.expect_eq([m["rcpt"] for m, _ in got], [["opt@client.example"]], "only the receipt went out")
    msg = got[0][1]
    h.expect_eq(msg["List-Unsubscribe"], None, "no List-Unsubscribe on a receipt")
    h.expect_eq(msg["List-Unsubscribe-Post"], None, "nor one-click")
    h.expect_in("we received GBP 1,234.50", parts(msg)[0], "the receipt's amount")
    h.expect_eq(row(rem)[0], "suppressed", "the reminder stays suppressed")


def test_451_then_success_is_retried_and_sent_once():
    S.ctl("DELETE", "messages")
    S.ctl("PUT", "faults", {"data": [451]})
    nid, _ = notify("--customer", str(IDS["bob"]), "--kind", "due_today", "--invoice", "inv_gbp")
    status, attempts, _, _ = wait_status(nid, "sent")
    h.expect_eq(attempts, 2, "one failed attempt, one that worked")
    time.sleep(0.5)
    h.expect_eq(len(messages(1)), 1, "sent once")


def test_550_is_dead_at_once_with_the_reason_and_visible_to_admins():
    S.ctl("DELETE", "messages")
    S.ctl("PUT", "faults", {"rcpt": {"gone@client.example": 550}})
    nid, _ = notify("--customer", str(IDS["bad"]), "--kind", "invoice_due", "--invoice", "inv_gbp")
    status, attempts, error, _ = wait_status(nid, "dead")
    h.expect_eq(attempts, 1, "no retry after a 5xx")
    h.expect_in("550", error, "the reason names the reply")
    h.expect_in("no such user", error, "with the server's words")
    h.expect_eq(h.sql_value(DB, "SELECT count(*) FROM audit_log WHERE entity_type = 'notification' AND "
                                "entity_id = $1 AND action = 'notification.dead'", nid), "1", "audited")


def test_temporary_failures_use_up_the_schedule_then_dead():
    S.ctl("DELETE", "messages")
    S.ctl("PUT", "faults", {"rcpt": {"slow@client.example": 451}})
    nid, _ = notify("--customer", str(IDS["slow"]), "--kind", "collection_failed", "--invoice", "inv_gbp")
    status, attempts, error, _ = wait_status(nid, "dead")
    h.expect_eq(attempts, 3, "tried once and after each of the two waits")
    h.expect_in("451", error, "the last reason")
    S.ctl("PUT", "faults", {})


def test_kill9_while_sending_resends_without_duplicate():
    S.ctl("DELETE", "messages")
    S.ctl("PUT", "faults", {"slow_ms": 2500})
    srv = h.Settled(DB, env=sink_env())
    try:
        nid, _ = notify("--customer", str(IDS["bob"]), "--kind", "overdue", "--invoice", "inv_gbp",
                        "--dedupe", "kill9-test")
        deadline = time.monotonic() + 10
        while row(nid)[0] != "sending" and time.monotonic() < deadline:
            time.sleep(0.05)
        h.expect_eq(row(nid)[0], "sending", "claimed")
        time.sleep(0.5)  # the message is in the sink's slow DATA
        srv.kill9()
    finally:
        srv.kill9()
    S.ctl("PUT", "faults", {})
    time.sleep(2.5)
    h.expect_eq(len(S.ctl("GET", "messages")), 0, "the sink kept nothing: its client died before the 250")
    h.expect_eq(row(nid)[0], "sending", "still sending under the dead server's lease")
    with h.Settled(DB, env=sink_env()):
        status, attempts, _, _ = wait_status(nid, "sent", timeout=20)
        h.expect_eq(attempts, 2, "sent again once the lease expired")
        time.sleep(0.5)
    got = messages(1)
    h.expect_eq(len(got), 1, "exactly one message arrived")


def test_two_instances_send_each_message_once():
    S.ctl("DELETE", "messages")
    S.ctl("PUT", "faults", {"slow_ms": 50})
    one, two = h.Settled(DB, env=sink_env()), h.Settled(DB, env=sink_env())
    try:
        ids = [notify("--customer", str(IDS["bob"]), "--kind", "receipt", "--invoice", "inv_gbp",
                      "--dedupe", f"two-instances-{i}")[0] for i in range(12)]
        for nid in ids:
            wait_status(nid, "sent", timeout=30)
        time.sleep(0.5)
    finally:
        one.stop()
        two.stop()
        S.ctl("PUT", "faults", {})
    got = messages(12)
    ids_seen = sorted(str(m["Message-ID"]) for _, m in got)
    h.expect_eq(len(got), 12, "twelve messages for twelve notifications")
    h.expect_eq(len(set(ids_seen)), 12, "none twice")
    owners = h.sql_value(DB, "SELECT count(DISTINCT correlation_id) FROM audit_log WHERE action = 'notification.sent' "
                             "AND entity_id = ANY($1::text[])", "{" + ",".join(ids) + "}")
    h.expect_eq(owners, "12", "each sent once, audited once")


def test_starttls_required_sends_nothing_in_clear():
    S.ctl("DELETE", "messages")
    srv = h.Settled(DB, env=sink_env(SETTLED_SMTP_STARTTLS="required", SETTLED_RETRY_SCHEDULE="10s"))
    try:
        nid, _ = notify("--customer", str(IDS["bob"]), "--kind", "invoice_due", "--invoice", "inv_jpy",
                        "--dedupe", "tls-test")
        deadline = time.monotonic() + 10
        while row(nid)[1] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        status, attempts, error, _ = row(nid)
        h.expect_eq(status, "pending", "retried later, not sent")
        h.expect(error != "", "with the reason")
        h.expect_eq(S.ctl("GET", "messages"), [], "nothing reached a server without STARTTLS")
    finally:
        srv.stop()
    h.sql(DB, "UPDATE notifications SET status = 'dead' WHERE id = $1", nid)


def test_sigterm_stops_promptly():
    srv = h.Settled(DB, env=sink_env())
    t0 = time.monotonic()
    srv.stop()
    h.expect(time.monotonic() - t0 < 5, "stopped within 5 s of SIGTERM")


def test_secret_never_printed():
    res = h.run_settled(["check-config"], {"SETTLED_DATABASE_URL": DB, "SETTLED_SMTP_URL": "smtp://127.0.0.1:2525",
                                           "SETTLED_SMTP_FROM": FROM, "SETTLED_SMTP_USER": "mailer",
                                           "SETTLED_SMTP_PASSWORD": "hunter2-very-secret"})
    h.expect_eq(res.returncode, 0, f"check-config: {res.stderr}")
    h.expect_not_in("hunter2-very-secret", res.stdout + res.stderr, "the SMTP password is redacted")
    res = h.run_settled(["check-config"], {"SETTLED_SMTP_URL": "smtp://127.0.0.1:2525"})
    h.expect(res.returncode != 0 and "SETTLED_SMTP_FROM" in res.stderr, "a URL without a sender is refused")


def api(method, path, token):
    status, rh, body = SERVER[0].request(method, path, headers={"Authorization": f"Bearer {token}"})
    openapi_check.response(method, path, status, rh, body)  # every answer against docs/openapi.yaml
    return status, (json.loads(body) if body else None)


def test_portal_notifications_and_admin_dead_letters():
    bob = mint(7001, IDS["org"], "client", IDS["bob"])
    opt = mint(7002, IDS["org"], "client", IDS["opt"])
    admin = mint(7003, IDS["org"], "admin")
    other_admin = mint(7004, IDS["other"], "admin")
    first, st = notify("--customer", str(IDS["bob"]), "--kind", "overdue", "--invoice", "inv_gbp", "--channel", "portal")
    h.expect_eq(st, "sent", "a portal notification is delivered at once")
    second, _ = notify("--customer", str(IDS["bob"]), "--kind", "receipt", "--invoice", "inv_kwd", "--channel",
                       "portal")
    status, doc = api("GET", "/v1/notifications?limit=1", bob)
    h.expect_eq(status, 200, "the client's list")
    h.expect_eq([(n["id"], n["read"]) for n in doc["data"]], [(second, False)], "newest first, unread")
    h.expect_in("KWD 0.125", doc["data"][0]["body"], "the rendered text")
    h.expect(doc["next_cursor"] is not None, "a next page")
    status, doc2 = api("GET", f"/v1/notifications?cursor={doc['next_cursor']}", bob)
    h.expect_eq([n["id"] for n in doc2["data"]], [first], "the next page")
    status, doc3 = api("GET", "/v1/notifications", opt)
    h.expect_eq(doc3["data"], [], "another customer sees none of them")
    h.expect_eq(api("POST", f"/v1/notifications/{first}/read", opt)[0], 404, "nor marks them read")
    status, read = api("POST", f"/v1/notifications/{first}/read", bob)
    h.expect_eq((status, read["read"]), (200, True), "marked read")
    again = api("POST", f"/v1/notifications/{first}/read", bob)[1]
    h.expect_eq(again["read_at"], read["read_at"], "a repeat keeps the first time")
    email_id = h.sql_value(DB, "SELECT min(id) FROM notifications WHERE channel = 'email'")
    h.expect_eq(api("POST", f"/v1/notifications/{email_id}/read", bob)[0], 404, "an e-mail is not a portal one")
    h.expect_eq(api("GET", "/v1/notifications", admin)[0], 404, "the client's route is not the admins'")
    status, dead = api("GET", "/v1/admin/notifications?status=dead", admin)
    h.expect_eq(status, 200, "the admins' dead letters")
    gone = [n for n in dead["data"] if n["recipient"] == "gone@client.example"]
    h.expect(gone and all(n["status"] == "dead" for n in dead["data"]), f"only dead ones, the 550 among them: {dead}")
    h.expect_in("550", gone[0]["last_error"], "with the reason")
    h.expect_eq(api("GET", "/v1/admin/notifications?status=dead", other_admin)[1]["data"], [],
                "another organisation's admin sees none")
    h.expect_eq(api("GET", "/v1/admin/notifications?status=dead", bob)[0], 404, "a client cannot list them")
    h.expect_eq(api("GET", "/v1/admin/notifications?status=lost", admin)[0], 400, "an unknown status")


TESTS = [v for k, v in list(globals().items()) if k.startswith("test_")]


def main():
    global S, DB
    S = Mock(SINK, "smtp-sink")
    failed = 0
    try:
        DB = h.new_database("notif")
        seed()
        wanted = sys.argv[1:]
        server = None
        for t in TESTS:
            if wanted and t.__name__ not in wanted:
                continue
            own = t.__name__ in ("test_kill9_while_sending_resends_without_duplicate",
                                 "test_two_instances_send_each_message_once",
                                 "test_starttls_required_sends_nothing_in_clear", "test_sigterm_stops_promptly",
                                 "test_secret_never_printed")
            if own and server is not None:
                server.stop()
                server = None
            if not own and server is None:
                server = h.Settled(DB, env=sink_env())
            SERVER[0] = server
            t0 = time.monotonic()
            try:
                t()
                print(f"ok - {t.__name__} ({time.monotonic() - t0:.1f}s)")
            except Exception as e:  # noqa: BLE001
                failed += 1
                print(f"not ok - {t.__name__}\n  {e}")
                if server is not None:
                    print("  " + server.log_tail(30).replace("\n", "\n  "))
            sys.stdout.flush()
        if server is not None:
            server.stop()
    finally:
        S.stop()
    print(f"{'all passed' if failed == 0 else f'{failed} failed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
