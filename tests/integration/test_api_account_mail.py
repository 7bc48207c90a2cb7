#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_api_account_mail.py: the account e-mails (docs/api.md "Account e-mails", docs/security.md): invitations,
password resets and the e-mail verification of self-registrations, sent through the notification outbox by a real
`settled serve` (its worker pool runs the mailer) to settled's own SMTP sink (tests/mock/smtp_sink.py).

The invitation's link reaches the sink and its token accepts once; a reset is mailed for an existing account and
the answer is the same, with no mail, for an unknown address; a registration whose verified address matches
exactly one active customer becomes its client, two customers or none wait for approval; nothing is granted before
the address is verified; a tampered, expired or reused verification token is refused; the stored bodies lose the
token once sent; the requests that send mail are throttled. Every answer is checked against docs/openapi.yaml.

Needs SETTLED_BIN, SETTLED_TEST_PG_URL and SETTLED_TEST_REDIS_URL like the other integration tests.
``python3 test_api_account_mail.py test_a`` runs only the named tests."""

import email
import email.policy
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
import test_api_auth as auth_tests  # noqa: E402
from harness import expect, expect_eq, expect_in, expect_not_in  # noqa: E402
from mocktest import Mock  # noqa: E402
from test_api_invoices import JWT_SECRET  # noqa: E402

SINK = os.path.join(os.path.dirname(HERE), "mock", "smtp_sink.py")
FROM = "accounts@acme.example"
PORTAL = "https://portal.acme.example"
PASSWORD = "correct horse battery 7"
RUN = secrets.token_hex(3)  # the throttle's keys outlive a run: every run has its own addresses
TOKEN_RE = r"([A-Za-z0-9_-]{43})"
S = None  # the sink
SERVER = None
DB = None
IDS = {}


def sink_env():
    return {"SETTLED_SMTP_URL": f"smtp://127.0.0.1:{S.ctl('GET', 'info')['smtp_port']}", "SETTLED_SMTP_FROM": FROM,
            "SETTLED_SMTP_STARTTLS": "off", "SETTLED_PORTAL_URL": PORTAL, "SETTLED_RETRY_SCHEDULE": "300ms,300ms",
            "SETTLED_WORKER_POLL_MS": "200", "SETTLED_HTTP_TIMEOUT_MS": "3000", "SETTLED_WORKER_LEASE_MS": "1000",
            "SETTLED_JWT_SECRET": JWT_SECRET, "SETTLED_REDIS_URL": h.redis_url()}


def redis_flush_throttle():
    import socket
    import urllib.parse
    u = urllib.parse.urlsplit(h.redis_url())
    script = ("for _, p in ipairs({'settled:login:*', 'settled:mail:*', 'settled:verify:*'}) do "
              "for _, k in ipairs(redis.call('KEYS', p)) do redis.call('DEL', k) end end return 0")
    args = ["EVAL", script, "0"]
    with socket.create_connection((u.hostname, u.port or 6379), timeout=5) as s:
        s.sendall((f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)).encode())
        s.recv(1024)


class _Target:
    server = None  # the shared serve, once started


def call(method, path, body=None, token=None, src="127.0.0.1"):
    """One request from source address src, checked against docs/openapi.yaml (test_api_auth's World.call)."""
    return auth_tests.World.call(_Target, method, path, body, token=token, src=src)


def problem(resp, status, code, what):
    h.expect_problem(resp, status, code, what)
    return json.loads(resp[2])


def cli(*args, stdin=None, smtp=True):
    env = {"SETTLED_DATABASE_URL": DB, "SETTLED_PORTAL_URL": PORTAL}
    if smtp:
        env.update({k: v for k, v in sink_env().items() if k.startswith("SETTLED_SMTP")})
    res = subprocess.run([h.settled_bin()] + list(args), input=stdin, env=h.settled_env(env), capture_output=True,
                         text=True, timeout=60)
    expect_eq(h.sanitizer_report(res.stderr), "", f"settled {args[:2]}: no sanitizer report")
    return res


def add_user(role="client", customer=None):
    addr = f"{role}-{secrets.token_hex(4)}-{RUN}@example.com"
    args = ["user", "add", "--organisation", "acme", "--email", addr, "--role", role]
    if customer is not None:
        args += ["--customer", str(customer)]
    res = cli(*args, stdin=PASSWORD + "\n")
    expect_eq(res.returncode, 0, f"user add ({res.stderr!r})")
    return addr, h.sql_value(DB, "SELECT id FROM users WHERE email = $1", addr)


def login(addr, password=PASSWORD, want=200):
    st, rh, out = call("POST", "/v1/auth/login", {"email": addr, "password": password})
    expect_eq(st, want, f"login {addr} ({out[:300]!r})")
    return json.loads(out) if st == 200 else (st, rh, out)


def mails_to(addr, n=1, timeout=15):
    """Waits until the sink holds at least n messages to addr; returns them parsed."""
    deadline = time.monotonic() + timeout
    while True:
        got = [m for m in S.ctl("GET", "messages") if addr in m["rcpt"]]
        if len(got) >= n or time.monotonic() > deadline:
            return [email.message_from_string(m["data"], policy=email.policy.default) for m in got]
        time.sleep(0.1)


def link_of(msg, page):
    """The token of the one link to page in both parts of msg (the same in each)."""
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    found = re.findall(re.escape(f"{PORTAL}/{page}#token=") + TOKEN_RE, text)
    expect(found, f"the text part links {PORTAL}/{page}#token=...", text)
    expect_in(f'href="{PORTAL}/{page}#token={found[0]}"', html, "the HTML part links the same")
    return found[0]


def wait_sent(nid, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if h.sql_value(DB, "SELECT status FROM notifications WHERE id = $1", nid) == "sent":
            return
        time.sleep(0.1)
    raise h.Failure(f"notification {nid} not sent: "
                    f"{h.sql_rows(DB, 'SELECT status, last_error FROM notifications WHERE id = $1', nid)}")


def seed():
    # the deny keys of disabled users are named by user id in the one test Redis that every test file shares: ids
    # of this run's own
    h.sql(DB, f"ALTER SEQUENCE users_id_seq RESTART WITH {secrets.randbelow(10**9) + 10**6}")
    IDS["org"] = h.sql_value(DB, "WITH i AS (INSERT INTO organisations (slug, name, self_registration) VALUES "
                                 "('acme', 'Acme & Sons', 'approval') RETURNING id) SELECT id FROM i")
    IDS["other"] = h.sql_value(DB, "WITH i AS (INSERT INTO organisations (slug, name, self_registration) VALUES "
                                   "('other', 'Other', 'approval') RETURNING id) SELECT id FROM i")

    def customer(name, mail, org="org", opt_out=False, archived=False):
        return h.sql_value(DB, "WITH i AS (INSERT INTO customers (organisation_id, name, email, reminders_opt_out, "
                               "archived_at) VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END) RETURNING id) "
                               "SELECT id FROM i", IDS[org], name, mail, "true" if opt_out else "false",
                           "true" if archived else "false")
    IDS["quiet"] = customer("Quiet Ltd", "quiet@cust.example", opt_out=True)
    IDS["solo"] = customer("Solo Ltd", f" Solo-{RUN}@Cust.Example ")
    customer("Twin One", f"twin-{RUN}@cust.example")
    customer("Twin Two", f"TWIN-{RUN}@cust.example")
    customer("Gone Ltd", f"gone-{RUN}@cust.example", archived=True)
    customer("Elsewhere Ltd", f"elsewhere-{RUN}@cust.example", org="other")
    IDS["admin_email"], IDS["admin"] = add_user("admin")


def test_invitation_email_reaches_the_sink_and_its_token_accepts_once():
    invitee = f"invitee-{RUN}@example.com"
    st, rh, out = call("POST", "/v1/admin/invitations", {"email": invitee, "role": "client",
                                                         "customer_id": IDS["quiet"]}, token=IDS["admin_token"])
    expect_eq(st, 201, f"invited ({out!r})")
    doc = json.loads(out)
    expect_not_in("token", out.decode(), "the answer carries no token")
    expect_not_in("#", out.decode(), "nor a link")
    msgs = mails_to(invitee)
    expect_eq(len(msgs), 1, "one invitation e-mail")
    msg = msgs[0]
    expect_eq(str(msg["To"]), invitee, "To")
    expect_eq(str(msg["Subject"]), "Your invitation to the Acme & Sons portal", "Subject")
    expect(msg["List-Unsubscribe"] is None, "an account e-mail has no List-Unsubscribe")
    token = link_of(msg, "invite")
    # a customer who opted out of reminders still gets its users' account e-mails
    expect_eq(h.sql_value(DB, "SELECT reminders_opt_out FROM customers WHERE id = $1", IDS["quiet"]), "t", "opted out")
    wait_sent(doc["notification_id"])
    row = h.sql_rows(DB, "SELECT kind, coalesce(customer_id::text, '-'), body_text, body_html FROM notifications "
                         "WHERE id = $1", doc["notification_id"])[0]
    expect_eq(row[:2], ["invitation", "-"], "an account e-mail: no customer")
    expect_not_in(token, row[2] + row[3], "once sent, the stored bodies no longer hold the token")
    expect_in("invite#token=(removed)", row[2], "the link is cut where the token was")
    expect_not_in(token, h.sql_value(DB, "SELECT string_agg(coalesce(before::text, '') || after::text, ' ') "
                                         "FROM audit_log"), "the audit log never saw the token")
    st, rh, out = call("POST", "/v1/auth/invitations/accept", {"token": token, "password": PASSWORD})
    expect_eq(st, 200, f"the token accepts ({out!r})")
    t = json.loads(out)
    st, _, me = call("GET", "/v1/me", token=t["access_token"])
    expect_eq((st, json.loads(me)["customer"]["id"]), (200, str(IDS["quiet"])), "a client of the invited customer")
    problem(call("POST", "/v1/auth/invitations/accept", {"token": token, "password": PASSWORD}), 400,
            "token_invalid", "the second use is refused")
    expect_eq(h.sql_value(DB, "SELECT email_verified_at IS NOT NULL FROM users WHERE email = $1", invitee), "t",
              "the invited address counts as verified")


def test_cli_invite_mails_with_smtp_and_prints_the_link_without():
    mailed = f"cli-mail-{RUN}@example.com"
    res = cli("user", "add", "--organisation", "acme", "--email", mailed, "--role", "admin", "--invite")
    expect_eq(res.returncode, 0, f"invite ({res.stderr!r})")
    expect_not_in("#token=", res.stdout, "with SMTP the link is not printed")
    expect_in("e-mailed", res.stdout, "it says so")
    token = link_of(mails_to(mailed)[0], "invite")
    expect_eq(h.sql_value(DB, "SELECT count(*) FROM invitations WHERE digest = $1",
                          hashlib.sha256(token.encode()).hexdigest()), "1", "the mailed token is the invitation's")
    printed = f"cli-print-{RUN}@example.com"
    res = cli("user", "add", "--organisation", "acme", "--email", printed, "--role", "admin", "--invite", smtp=False)
    expect_eq(res.returncode, 0, f"invite without SMTP ({res.stderr!r})")
    expect_in("SETTLED_SMTP_URL is not set, so no e-mail is sent", res.stdout, "it says why it prints the link")
    expect(re.search(re.escape(f"{PORTAL}/invite#token=") + TOKEN_RE, res.stdout), "the link is printed", res.stdout)
    expect_eq(h.sql_value(DB, "SELECT count(*) FROM notifications WHERE recipient = $1", printed), "0",
              "and nothing waits in the outbox")


def test_reset_mailed_for_an_account_and_the_same_answer_without_mail_for_an_unknown_address():
    addr, uid = add_user("client", IDS["solo"])
    old = login(addr)
    unknown = f"nobody-{RUN}@example.com"
    answers = []
    for who in (addr, unknown, addr.upper()):
        st, rh, out = call("POST", "/v1/auth/password-reset", {"email": who}, src="127.0.0.21")
        answers.append((st, out))
    expect_eq(answers[1], answers[0], "an unknown address is answered exactly as a known one")
    expect_eq(answers[0], (202, b'{"status":"accepted"}'), "202 accepted")
    msgs = mails_to(addr, 2)
    expect_eq(len(msgs), 2, "two requests, two e-mails to the account")
    expect_eq(str(msgs[0]["Subject"]), "Reset your Acme & Sons portal password", "Subject")
    tokens = [link_of(m, "reset") for m in msgs]
    time.sleep(0.5)
    expect_eq(mails_to(unknown, timeout=0), [], "no e-mail to an unknown address")
    expect_eq(h.sql_value(DB, "SELECT count(*) FROM notifications WHERE recipient = $1", unknown), "0",
              "nor a row in the outbox")
    expect_eq(h.sql_value(DB, "SELECT count(*) FROM password_resets WHERE user_id = $1 AND digest = ANY($2::text[])",
                          uid, "{" + ",".join(hashlib.sha256(t.encode()).hexdigest() for t in tokens) + "}"), "2",
              "only the digests are stored")
    new = "a brand new password 42"
    expect_eq(call("POST", "/v1/auth/password-reset/confirm", {"token": tokens[1], "password": new})[0], 204,
              "the mailed link resets")
    problem(call("POST", "/v1/auth/password-reset/confirm", {"token": tokens[0], "password": new}), 400,
            "token_invalid", "the other open reset is spent too")
    problem(call("POST", "/v1/auth/refresh", {"refresh_token": old["refresh_token"]}), 401, "invalid_refresh",
            "the sessions before the reset are revoked")
    login(addr, new)


def test_mail_requests_are_throttled_for_known_and_unknown_addresses():
    for who in (f"flood-{RUN}@example.com", IDS["admin_email"]):
        statuses = [call("POST", "/v1/auth/password-reset", {"email": who}, src="127.0.0.22")[0] for _ in range(6)]
        expect_eq(statuses, [202] * 5 + [429], f"the sixth request in 15 minutes is refused ({who})")
        st, rh, out = call("POST", "/v1/auth/password-reset", {"email": who}, src="127.0.0.22")
        problem((st, rh, out), 429, "too_many_attempts", "still refused")
        expect(int(rh["retry-after"]) > 0, "with Retry-After", rh)
    expect_eq(call("POST", "/v1/auth/password-reset", {"email": f"flood-{RUN}@example.com"},
                   src="127.0.0.23")[0], 202, "another address may still ask")


def register(addr, src="127.0.0.31"):
    st, rh, out = call("POST", "/v1/auth/register", {"organisation": "acme", "email": addr, "password": PASSWORD},
                       src=src)
    expect_eq((st, out), (202, b'{"status":"accepted"}'), f"registered {addr}")
    return link_of(mails_to(addr)[0], "verify-email")


def verify(token, want_status):
    st, rh, out = call("POST", "/v1/auth/verify-email", {"token": token})
    expect_eq((st, json.loads(out)), (200, {"status": want_status}), "verified")
    expect_eq(rh.get("cache-control"), "no-store", "no-store")


def test_verified_address_of_exactly_one_customer_becomes_its_client():
    addr = f"solo-{RUN}@cust.example"  # the customer's address has another case and blanks around it
    token = register(addr)
    msg = mails_to(addr)[0]
    expect_eq(str(msg["Subject"]), "Confirm your e-mail address for the Acme & Sons portal", "Subject")
    uid = h.sql_value(DB, "SELECT id FROM users WHERE email = $1", addr)
    expect_eq(h.sql_rows(DB, "SELECT status, customer_id, email_verified_at FROM users WHERE id = $1", uid),
              [["pending_verification", None, None]], "nothing is granted before the address is verified")
    problem(login(addr, want=403), 403, "email_unverified", "no sign-in while unverified")
    verify(token, "active")
    expect_eq(h.sql_rows(DB, "SELECT status, customer_id FROM users WHERE id = $1", uid),
              [["active", IDS["solo"]]], "a client of the one customer with that address")
    t = login(addr)
    st, _, me = call("GET", "/v1/me", token=t["access_token"])
    expect_eq((st, json.loads(me)["customer"]["id"]), (200, str(IDS["solo"])), "it reads its customer")
    audit = h.sql_rows(DB, "SELECT actor, before::jsonb->>'status', after::jsonb->>'status', "
                           "after::jsonb->>'matching_customers' FROM audit_log WHERE action = 'user.email_verified' "
                           "AND entity_id = $1", uid)
    expect_eq(audit, [[f"user:{uid}", "pending_verification", "active", "1"]], "audited with before and after")
    expect_eq(h.sql_value(DB, "SELECT count(*) FROM audit_log WHERE action = 'user.register' AND entity_id = $1", uid),
              "1", "the registration audited")


def test_two_customers_none_or_an_archived_one_wait_for_approval():
    cases = [(f"twin-{RUN}@cust.example", "two customers have it"),
             (f"none-{RUN}@cust.example", "no customer has it"),
             (f"gone-{RUN}@cust.example", "only an archived customer has it"),
             (f"elsewhere-{RUN}@cust.example", "only another organisation's customer has it")]
    for n, (addr, why) in enumerate(cases):
        verify(register(addr, src=f"127.0.0.{40 + n}"), "pending_approval")
        expect_eq(h.sql_rows(DB, "SELECT status, customer_id FROM users WHERE email = $1", addr),
                  [["pending_approval", None]], f"waits for approval: {why}")
        problem(login(addr, want=403), 403, "account_pending", f"no sign-in: {why}")
    # the admin then approves one, as before
    uid = h.sql_value(DB, "SELECT id FROM users WHERE email = $1", cases[0][0])
    st, _, out = call("POST", f"/v1/admin/users/{uid}/approve", {"customer_id": str(IDS["solo"])},
                      token=IDS["admin_token"])
    expect_eq(st, 200, f"approved ({out!r})")
    login(cases[0][0])


def test_tampered_expired_and_reused_verification_tokens_are_refused():
    addr = f"tamper-{RUN}@cust.example"
    token = register(addr, src="127.0.0.51")
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad, what in ((flipped, "tampered"), (token[:-1], "cut"), ("q" * 43, "made up")):
        problem(call("POST", "/v1/auth/verify-email", {"token": bad}, src="127.0.0.52"), 400, "token_invalid", what)
    expect_eq(h.sql_value(DB, "SELECT status FROM users WHERE email = $1", addr), "pending_verification",
              "refused tokens change nothing")
    uid = h.sql_value(DB, "SELECT id FROM users WHERE email = $1", addr)
    problem(call("POST", f"/v1/admin/users/{uid}/approve", {"customer_id": str(IDS["solo"])},
                 token=IDS["admin_token"]), 409, "conflict", "an unverified account cannot be approved")
    problem(call("POST", f"/v1/admin/users/{uid}/disable", token=IDS["admin_token"]), 409, "conflict",
            "nor disabled (it can do nothing anyway)")
    verify(token, "pending_approval")
    problem(call("POST", "/v1/auth/verify-email", {"token": token}), 400, "token_invalid", "reused")
    late = f"late-{RUN}@cust.example"
    token = register(late, src="127.0.0.53")
    h.sql(DB, "UPDATE email_verifications SET expires_at = now() - interval '1 second' WHERE used_at IS NULL AND "
              "user_id = (SELECT id FROM users WHERE email = $1)", late)
    problem(call("POST", "/v1/auth/verify-email", {"token": token}), 400, "token_invalid", "expired")
    problem(login(late, want=403), 403, "email_unverified", "still unverified")
    # refused tokens are throttled per client address (5 per 15 minutes)
    statuses = [call("POST", "/v1/auth/verify-email", {"token": "z" * 43}, src="127.0.0.54")[0] for _ in range(6)]
    expect_eq(statuses, [400] * 5 + [429], "the sixth refused token from one address is 429")


def test_a_taken_address_registers_silently_and_gets_no_mail():
    addr = IDS["admin_email"]
    before = len(mails_to(addr, 0, timeout=0))
    st, _, out = call("POST", "/v1/auth/register", {"organisation": "acme", "email": addr, "password": PASSWORD},
                      src="127.0.0.61")
    expect_eq((st, out), (202, b'{"status":"accepted"}'), "answered as a registration")
    time.sleep(0.5)
    expect_eq(len(mails_to(addr, 0, timeout=0)), before, "no e-mail")
    expect_eq(h.sql_value(DB, "SELECT status FROM users WHERE email = $1", addr), "active", "the account unchanged")


TESTS = [v for k, v in list(globals().items()) if k.startswith("test_")]


def main():
    global S, DB, SERVER
    S = Mock(SINK, "smtp-sink")
    failed = 0
    try:
        DB = h.new_database("acctmail")
        redis_flush_throttle()
        seed()
        SERVER = h.Settled(DB, env=sink_env())
        _Target.server = SERVER
        IDS["admin_token"] = login(IDS["admin_email"])["access_token"]
        wanted = sys.argv[1:]
        for t in TESTS:
            if wanted and t.__name__ not in wanted:
                continue
            t0 = time.monotonic()
            try:
                t()
                print(f"ok - {t.__name__} ({time.monotonic() - t0:.1f}s)")
            except Exception as e:  # noqa: BLE001
                failed += 1
                print(f"not ok - {t.__name__}\n  {e}")
                print("  " + SERVER.log_tail(30).replace("\n", "\n  "))
            sys.stdout.flush()
        SERVER.stop()
        expect_not_in(PASSWORD, SERVER.log(), "no password in the log")
        tokens = re.findall(r"#token=" + TOKEN_RE, SERVER.log())
        expect_eq(tokens, [], "no token in the log")
    finally:
        if SERVER is not None and SERVER.running():
            SERVER.stop()
        S.stop()
    print(f"{'all passed' if failed == 0 else f'{failed} failed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
