# SPDX-License-Identifier: MIT
"""test_xero_oauth.py: connecting Xero through the real binary against the mock Xero
(tests/mock/xero_api.py) and a real PostgreSQL: `settled connect xero --refresh-token` stores the
rotated token set encrypted and the tenants; invalid_grant parks the token set as needs_reauth (and
it stays parked without calling Xero again); concurrent refreshes of one token set from several
processes never lose it and refresh once (single-flight through the refresh lease); no transaction is
held across the token call, so a server that ends idle transactions after 1 s does not cut a 2.5 s
refresh in half; a lease whose holder died is taken over, and a stuck one is reported; storing the
rotated token is retried; a lost token response recovers within Xero's grace period; the authorize
URL and its callback connect an organisation once (a replayed state is refused before Xero sees its
code); a forged or expired state is refused on the loop, even with the database down; error replies
carry no database detail; a full offload queue answers 503 (providers/PROVIDERS.md section 2.3;
docs/operations.md)."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
import urllib.parse

import harness as h
import pipelinelib as pl
from harness import expect, expect_eq, expect_in, expect_not_in

T1 = "11111111-1111-4111-8111-111111111111"
T2 = "22222222-2222-4222-8222-222222222222"
CLIENT_ID, CLIENT_SECRET = "settled-test-client", "settled-test-client-secret"
SECRET_KEY = base64.b64encode(bytes(range(100, 132))).decode()  # SETTLED_SECRET_KEY of these tests
REDIRECT_URI = "http://127.0.0.1:9/v1/xero/callback"


class Mock(pl.Mock):
    """The project's mock Xero (tests/integration/pipelinelib.py), set up for these tests."""

    def setup(self, refresh_token, **app):
        """A fresh mock: settled's app and one authorisation with refresh_token to T1 and T2."""
        self.ctl("POST", "reset")
        self.ctl("PUT", "app", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **app})
        self.ctl(
            "POST",
            "authorisations",
            {
                "refresh_token": refresh_token,
                "tenants": [{"tenantId": T1, "tenantName": "Org One"}, {"tenantId": T2, "tenantName": "Org Two"}],
            },
        )

    def oauth(self):
        return self.ctl("GET", "stats")["oauth"]

    def active_refresh_tokens(self):
        return [t for a in self.ctl("GET", "authorisations") for t in a["active_refresh_tokens"]]


_mock = None


def mock():
    global _mock
    if _mock is None:
        _mock = Mock()
    return _mock


def env(db, **extra):
    e = {
        "SETTLED_DATABASE_URL": db,
        "SETTLED_XERO_CLIENT_ID": CLIENT_ID,
        "SETTLED_XERO_CLIENT_SECRET": CLIENT_SECRET,
        "SETTLED_SECRET_KEY": SECRET_KEY,
        "SETTLED_XERO_API_BASE": mock().base,
        "SETTLED_XERO_IDENTITY_BASE": mock().base,
        "SETTLED_XERO_LOGIN_BASE": mock().base,
        "SETTLED_XERO_REDIRECT_URI": REDIRECT_URI,
    }
    e.update(extra)
    return e


def check_wired(stderr):
    if "unknown command: connect" in stderr or "unknown argument: xero" in stderr:
        raise h.Failure("this settled has no `connect` command: main.c must call gw_cli_connect (gateway/cli.c)")


def connect(db, *args, extra_env=None, secrets=()):
    """`settled connect xero ARGS`; checks that no secret (and no token of secrets) is printed."""
    res = h.run_settled(["connect", "xero", *args], env(db, **(extra_env or {})), timeout=120)
    check_wired(res.stderr)
    for s in (CLIENT_SECRET, SECRET_KEY, *secrets):
        expect_not_in(s, res.stdout + res.stderr, f"output of `settled connect xero {' '.join(args[:1])}`")
    return res


def token_sets(db):
    return h.sql_rows(
        db,
        "SELECT id, organisation_id, status, encode(refresh_token, 'hex'), encode(access_token, 'hex'),"
        " access_expires_at > now() + interval '60 seconds', last_error FROM xero_tokens ORDER BY id",
    )


def connected(refresh_token="RT-1", **app):
    """A migrated database with the mock's authorisation connected through --refresh-token."""
    mock().setup(refresh_token, **app)
    db = h.new_database("xero_oauth")
    res = connect(db, "--refresh-token", refresh_token, secrets=(refresh_token,))
    expect_eq(res.returncode, 0, f"connect exit code (stderr {res.stderr[-2000:]!r})")
    return db


def test_connect_with_refresh_token_stores_it_encrypted_and_rotated():
    m = mock()
    m.setup("RT-ORIGINAL-1")
    db = h.new_database("xero_oauth")
    res = connect(db, "--refresh-token", "RT-ORIGINAL-1", secrets=("RT-ORIGINAL-1",))
    expect_eq(res.returncode, 0, f"exit code (stderr {res.stderr[-2000:]!r})")
    expect_in(T1, res.stdout, "the tenants are printed")
    expect_in("Org Two", res.stdout, "the tenants are printed")

    # rotated: the mock's current refresh token is a new one, and the old one is retired
    active = m.active_refresh_tokens()
    expect_eq(len(active), 1, "the authorisation has one current refresh token")
    new_rt = active[0]
    expect(new_rt != "RT-ORIGINAL-1", "the refresh token was rotated", new_rt)
    expect_eq(m.oauth()["token_refreshes"], 1, "refreshes at Xero")

    rows = token_sets(db)
    expect_eq(len(rows), 1, "token sets stored")
    tid, org, status, rt_hex, at_hex, valid, last_error = rows[0]
    expect_eq(status, "active", "status")
    expect_eq(valid, "t", "the stored access token lives at least 60 more seconds")
    # encrypted: neither token appears in the bytea; version 1, nonce, ciphertext, tag
    for plain in (new_rt, "RT-ORIGINAL-1"):
        expect_not_in(plain.encode().hex(), rt_hex, "the stored refresh token (hex)")
        expect_not_in(plain.encode().hex(), at_hex, "the stored access token (hex)")
    expect_eq(rt_hex[:2], "01", "sealed format version")
    expect_eq(len(rt_hex) // 2, len(new_rt) + 29, "sealed length = token + version, nonce and tag")
    expect_eq(
        h.sql(db, "SELECT position(convert_to($1, 'UTF8') IN refresh_token) FROM xero_tokens", new_rt),
        "0",
        "the plaintext refresh token is nowhere in the column",
    )

    tenants = h.sql_rows(
        db, "SELECT tenant_id, tenant_name, tenant_type, token_id::text FROM xero_tenants ORDER BY tenant_id"
    )
    expect_eq(tenants, [[T1, "Org One", "ORGANISATION", tid], [T2, "Org Two", "ORGANISATION", tid]], "xero_tenants")
    expect_eq(
        h.sql(db, "SELECT slug FROM organisations WHERE id = $1", org), "default", "the default organisation was made"
    )
    actions = h.sql(db, "SELECT string_agg(action, ',' ORDER BY id) FROM audit_log")
    expect_eq(actions, "xero.token_set.create,xero.connect", "audit trail")
    expect_eq(h.sql(db, "SELECT audit_verify($1::bigint)", org), "", "the audit chain verifies")

    # the stored token set works: --check lists the tenants with it (its access token is still valid,
    # so Xero's token endpoint is not called again)
    res = connect(db, "--check", secrets=(new_rt,))
    expect_eq(res.returncode, 0, f"--check exit code (stderr {res.stderr[-2000:]!r})")
    expect_in(f"xero token set {tid}: ok, 2 tenants", res.stdout, "--check output")
    expect_eq(m.oauth()["token_refreshes"], 1, "no refresh while the access token is valid")

    # reconnecting with the now retired original token fails outside the grace period, changing nothing
    m.ctl("PUT", "app", {"grace": 0})
    res = connect(db, "--refresh-token", "RT-ORIGINAL-1", secrets=("RT-ORIGINAL-1",))
    expect(res.returncode != 0, "a retired refresh token is refused", res.returncode)
    expect_in("invalid_grant", res.stderr, "the error says why")
    expect_eq(len(token_sets(db)), 1, "no token set was added")


def test_refresh_token_from_stdin():
    m = mock()
    m.setup("RT-STDIN-1")
    db = h.new_database("xero_oauth")
    res = subprocess.run(
        [h.settled_bin(), "connect", "xero", "--refresh-token", "-", "--organisation", "acme"],
        env=h.settled_env(env(db)),
        input=b"RT-STDIN-1\n",
        capture_output=True,
        timeout=120,
    )
    out = res.stdout.decode() + res.stderr.decode()
    check_wired(out)
    expect_eq(res.returncode, 0, f"exit code ({out[-2000:]!r})")
    expect_not_in("RT-STDIN-1", out, "output")
    expect_eq(h.sanitizer_report(out), "", "sanitizer report")
    expect_eq(
        h.sql(db, "SELECT count(*) FROM xero_tenants t JOIN organisations o ON o.id = t.organisation_id"
              " WHERE o.slug = 'acme'"),
        "2",
        "tenants of the organisation named with --organisation",
    )


def test_check_stores_tenants_a_failed_connect_could_not_list():
    m = mock()
    m.setup("RT-LIST-1")
    db = h.new_database("xero_oauth")
    m.ctl("POST", "faults", {"mode": "503", "target": "api", "path_prefix": "/connections", "count": 1})
    res = connect(db, "--refresh-token", "RT-LIST-1", secrets=("RT-LIST-1",))
    expect(res.returncode != 0, "connect fails when the organisations cannot be listed", res.returncode)
    expect_in("is stored, but listing its organisations failed", res.stderr, "the error")
    expect_eq(len(token_sets(db)), 1, "the rotated token set is stored all the same")
    expect_eq(h.sql(db, "SELECT count(*) FROM xero_tenants"), "0", "no tenants yet")
    res = connect(db, "--check")
    expect_eq(res.returncode, 1, "a check that only reads reports the missing tenants")
    expect_in("--check --refresh` stores them", res.stderr, "and says how to store them")
    expect_eq(h.sql(db, "SELECT count(*) FROM xero_tenants"), "0", "a check that only reads stores nothing")
    res = connect(db, "--check", "--refresh")
    expect_eq(res.returncode, 0, f"--check exit code (stderr {res.stderr[-1500:]!r})")
    expect_eq(h.sql(db, "SELECT count(*) FROM xero_tenants"), "2", "--check stored the tenants")
    expect_eq(h.sql(db, "SELECT count(*) FROM audit_log WHERE action = 'xero.connect'"), "1", "audited")


def test_invalid_grant_marks_needs_reauth_and_stops_calling_xero():
    m = mock()
    db = connected("RT-IG-1", grace=0)
    # the stored refresh token dies: unused for longer than Xero keeps refresh tokens (the access token
    # expires too, so the next use must refresh)
    m.ctl("POST", "clock", {"advance": 61 * 86400})
    before = m.oauth()
    res = connect(db, "--check", "--refresh")
    expect(res.returncode != 0, "exit code after invalid_grant", res.returncode)
    expect_in("needs_reauth", res.stdout, "--check reports the state")
    expect_in("invalid_grant", res.stderr, "the error names invalid_grant")
    after = m.oauth()
    expect_eq(after["invalid_grant"] - before["invalid_grant"], 1, "one invalid_grant from Xero")
    rows = token_sets(db)
    expect_eq(rows[0][2], "needs_reauth", "status")
    expect_in("invalid_grant", rows[0][6] or "", "last_error")
    expect_eq(
        h.sql(db, "SELECT actor || ' ' || action FROM audit_log WHERE action = 'xero.needs_reauth'"),
        "system:xero xero.needs_reauth",
        "the change is audited",
    )
    # parked: more attempts fail at once and never call Xero again (no crash loop)
    for _ in range(3):
        res = connect(db, "--check", "--force-refresh")
        expect(res.returncode != 0, "exit code while parked", res.returncode)
        expect_in("needs to be reconnected", res.stderr, "the error says what to do")
    expect_eq(m.oauth()["token_requests"], after["token_requests"], "token requests while parked")
    # reconnecting gives a working token set again
    m.ctl("POST", "authorisations", {"refresh_token": "RT-IG-2", "tenants": [{"tenantId": T1}]})
    res = connect(db, "--refresh-token", "RT-IG-2", secrets=("RT-IG-2",))
    expect_eq(res.returncode, 0, f"reconnect exit code (stderr {res.stderr[-2000:]!r})")
    expect_eq(
        h.sql(db, "SELECT t.status FROM xero_tenants n JOIN xero_tokens t ON t.id = n.token_id WHERE n.tenant_id = $1",
              T1),
        "active",
        "the tenant uses the new token set",
    )


def _parallel(n, fn):
    results = [None] * n
    errors = []

    def run(i):
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_concurrent_refreshes_never_lose_the_connection():
    """Several processes refresh one token set at once. Without a single flight, two of them would
    use the same refresh token and the second would get invalid_grant (the grace period is 0 here);
    with it, every process ends up with a working access token and Xero never says invalid_grant."""
    m = mock()
    db = connected("RT-CC-1", grace=0)
    # every token call takes 300 ms, so the refreshes really overlap
    m.ctl("POST", "faults", {"mode": "slow", "delay_ms": 300, "target": "token", "count": 0})
    m.ctl("DELETE", "stats")
    for round_ in range(2):
        results = _parallel(6, lambda i: connect(db, "--check", "--force-refresh"))
        for i, res in enumerate(results):
            expect_eq(res.returncode, 0, f"round {round_}, process {i}: exit code (stderr {res.stderr[-1500:]!r})")
            expect_in("ok, 2 tenants", res.stdout, f"round {round_}, process {i}: a working access token")
    oauth = m.oauth()
    expect_eq(oauth["invalid_grant"], 0, "invalid_grant answers from Xero")
    expect(oauth["token_refreshes"] >= 2, "refreshes happened", oauth)
    expect_eq(oauth["grace_replays"], 0, "no refresh token was used twice")
    expect_eq(token_sets(db)[0][2], "active", "status")
    # the stored refresh token is the mock's current one: the next holder can refresh again
    m.ctl("DELETE", "faults")
    res = connect(db, "--check", "--force-refresh")
    expect_eq(res.returncode, 0, f"a refresh after the race (stderr {res.stderr[-1500:]!r})")

    # the same without --force-refresh: access tokens that live 30 s are never good enough (60 s), so
    # every process must refresh, one after the other
    m.ctl("PUT", "app", {"access_ttl": 30})
    res = connect(db, "--check", "--force-refresh")  # the stored access token now lives 30 s
    expect_eq(res.returncode, 0, f"a refresh to a short-lived token (stderr {res.stderr[-1500:]!r})")
    m.ctl("POST", "faults", {"mode": "slow", "delay_ms": 200, "target": "token", "count": 0})
    m.ctl("DELETE", "stats")
    results = _parallel(5, lambda i: connect(db, "--check", "--refresh"))
    for i, res in enumerate(results):
        expect_eq(res.returncode, 0, f"short-lived tokens, process {i}: exit code (stderr {res.stderr[-1500:]!r})")
    oauth = m.oauth()
    expect_eq(oauth["invalid_grant"], 0, "invalid_grant answers with short-lived tokens")
    expect_eq(oauth["token_refreshes"], 5, "one refresh per process, serialised")
    m.ctl("DELETE", "faults")


def test_lost_token_response_recovers_in_the_grace_period():
    """Xero rotates the token but its answer is lost: the stored (old) token stays, and the next
    attempt gets the same new pair back within the grace period."""
    m = mock()
    db = connected("RT-LOST-1")
    stored = token_sets(db)[0][3]
    m.ctl("POST", "faults", {"mode": "drop", "target": "token", "count": 1})
    res = connect(db, "--check", "--force-refresh")
    expect(res.returncode != 0, "the attempt whose answer was lost fails", res.returncode)
    rows = token_sets(db)
    expect_eq(rows[0][2], "active", "a transient failure leaves the token set active")
    expect_eq(rows[0][3], stored, "and keeps the stored refresh token")
    res = connect(db, "--check", "--force-refresh")
    expect_eq(res.returncode, 0, f"the retry succeeds (stderr {res.stderr[-1500:]!r})")
    oauth = m.oauth()
    expect_eq(oauth["grace_replays"], 1, "the retry was a grace replay")
    expect_eq(oauth["invalid_grant"], 0, "invalid_grant")
    expect(token_sets(db)[0][3] != stored, "the rotated refresh token is stored now")
    # and it is the mock's current one
    res = connect(db, "--check", "--force-refresh")
    expect_eq(res.returncode, 0, f"a later refresh (stderr {res.stderr[-1500:]!r})")


def test_transient_token_errors_keep_the_token_set():
    m = mock()
    db = connected("RT-503-1")
    stored = token_sets(db)[0][3]
    for mode in ("503", "429", "500"):
        m.ctl("POST", "faults", {"mode": mode, "target": "token", "count": 1})
        res = connect(db, "--check", "--force-refresh")
        expect(res.returncode != 0, f"{mode}: exit code", res.returncode)
        rows = token_sets(db)
        expect_eq((rows[0][2], rows[0][3]), ("active", stored), f"{mode}: status and stored refresh token")
    res = connect(db, "--check", "--force-refresh")
    expect_eq(res.returncode, 0, f"after the outage (stderr {res.stderr[-1500:]!r})")
    expect_eq(m.oauth()["invalid_grant"], 0, "invalid_grant")


def test_authorize_url_and_callback():
    m = mock()
    m.setup("RT-UNUSED")
    m.ctl("PUT", "app", {"redirect_uris": [REDIRECT_URI]})
    db = h.new_database("xero_oauth")
    res = connect(db, "--authorize", "--organisation", "acme")
    expect_eq(res.returncode, 0, f"--authorize exit code (stderr {res.stderr[-1500:]!r})")
    url = res.stdout.strip().splitlines()[-1]
    expect(url.startswith(m.base + "/identity/connect/authorize?"), "the URL goes to the login base", url)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    expect_eq(q.get("client_id"), CLIENT_ID, "client_id")
    expect_eq(q.get("redirect_uri"), REDIRECT_URI, "redirect_uri")
    expect_in("offline_access", q.get("scope", ""), "scope")
    expect(len(q.get("state", "")) > 40, "a signed state", q.get("state"))

    # the mock "consents" at once and redirects to settled's callback
    status, headers, _ = m.call("GET", url[len(m.base):])
    expect_eq(status, 302, "authorize status")
    location = headers["location"]
    expect(location.startswith(REDIRECT_URI + "?"), "redirected to the callback", location)

    # a forged state (another organisation's id would need the key) is refused before the code is used
    cb = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    forged = dict(cb, state=cb["state"][:-2] + ("AA" if not cb["state"].endswith("AA") else "BA"))
    res = connect(db, "--callback", REDIRECT_URI + "?" + urllib.parse.urlencode(forged), secrets=(cb["code"],))
    expect(res.returncode != 0, "a forged state is refused", res.returncode)
    expect_in("invalid or has expired", res.stderr, "the error")
    expect_eq(m.oauth()["code_exchanges"], 0, "the code was not exchanged for a forged state")

    res = connect(db, "--callback", location, secrets=(cb["code"],))
    expect_eq(res.returncode, 0, f"--callback exit code (stderr {res.stderr[-1500:]!r})")
    expect_in("Org One", res.stdout, "summary")
    expect_eq(
        h.sql(db, "SELECT string_agg(n.tenant_id::text, ',' ORDER BY n.tenant_id) FROM xero_tenants n"
              " JOIN organisations o ON o.id = n.organisation_id WHERE o.slug = 'acme'"),
        f"{T1},{T2}",
        "the tenants belong to the organisation the state named",
    )
    expect_eq(h.sql(db, "SELECT count(*) FROM xero_tokens WHERE status = 'active'"), "1", "token sets")
    # a code works once
    res = connect(db, "--callback", location, secrets=(cb["code"],))
    expect(res.returncode != 0, "a reused code is refused", res.returncode)
    expect_eq(h.sql(db, "SELECT count(*) FROM xero_tokens"), "1", "no token set was added")
    # a denied consent is reported
    res = connect(db, "--callback", REDIRECT_URI + "?error=access_denied&state=" + cb["state"])
    expect(res.returncode != 0, "a denied consent fails", res.returncode)
    expect_in("access_denied", res.stderr, "the error")


def test_callback_route_of_the_server():
    """The browser flow through settled serve: Xero redirects to GET /v1/xero/callback, whose code exchange runs
    off the event loop and answers with the organisations connected."""
    m = mock()
    m.setup("RT-UNUSED")
    db = h.new_database("xero_oauth")
    port = h.free_port()
    redirect = f"http://127.0.0.1:{port}/v1/xero/callback"
    m.ctl("PUT", "app", {"redirect_uris": [redirect]})
    server_env = env(db, SETTLED_XERO_REDIRECT_URI=redirect, SETTLED_WORKERS=0)
    with h.Settled(db, env=server_env, port=port) as s:
        res = h.run_settled(["connect", "xero", "--authorize"], server_env, timeout=60)
        expect_eq(res.returncode, 0, f"--authorize exit code (stderr {res.stderr[-800:]!r})")
        url = res.stdout.strip().splitlines()[-1]
        status, headers, _ = m.call("GET", url[len(m.base):])
        expect_eq(status, 302, "authorize status")
        location = headers["location"]
        expect(location.startswith(redirect + "?"), "redirected to the server's callback", location)
        path = location[len(f"http://127.0.0.1:{port}"):]
        cb = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))

        # refused before anything reaches Xero: no code, an unknown parameter, a declined consent
        h.expect_problem(s.get("/v1/xero/callback?state=" + cb["state"]), 400, "oauth_callback_invalid", "no code")
        h.expect_problem(s.get(path + "&extra=1"), 400, "oauth_callback_invalid", "unknown parameter")
        h.expect_problem(s.get("/v1/xero/callback?error=access_denied&state=x"), 400, "oauth_callback_invalid",
                         "declined consent")
        # a forged state: 400, refused on the loop, and the code is not exchanged
        forged = dict(cb, state=cb["state"][:-2] + ("AA" if not cb["state"].endswith("AA") else "BA"))
        h.expect_problem(s.get("/v1/xero/callback?" + urllib.parse.urlencode(forged)), 400, "oauth_callback_invalid",
                         "forged state")
        expect_eq(m.oauth()["code_exchanges"], 0, "the code was not exchanged for a forged state")

        status, _, body = s.get(path)
        expect_eq(status, 200, f"callback status (body {body[:300]!r})")
        doc = json.loads(body)
        expect_eq(doc.get("connected"), True, "connected")
        expect_in("Org One", doc.get("summary", ""), "summary")
        expect_not_in(cb["code"], body.decode(), "the reply")
    expect_eq(h.sql(db, "SELECT count(*) FROM xero_tenants"), "2", "tenants stored")
    expect_eq(h.sql(db, "SELECT count(*) FROM xero_tokens WHERE status = 'active'"), "1", "token sets")


# ---------------------------------------------------------------------------------------------------
# The refresh lease (gateway/domain/xero_oauth.c, access_token)


def db_name(db):
    return urllib.parse.urlsplit(db).path.lstrip("/")


def expire_access_token(db):
    """The stored access token no longer lives long enough: the next use must refresh."""
    h.sql(db, "UPDATE xero_tokens SET access_expires_at = now() - interval '1 second'")


def lease(db):
    return h.sql_rows(db, "SELECT refreshing_until::text, refreshing_by FROM xero_tokens ORDER BY id")[0]


def test_refresh_under_idle_in_transaction_timeout():
    """PostgreSQL ends any session that sits idle in a transaction for 1 s, and Xero's token endpoint
    takes 2.5 s. A refresh that kept a transaction open across the call (the row lock of old) loses
    its session mid-refresh: the rotated refresh token is never stored, and with no grace period the
    next refresh is invalid_grant, i.e. needs_reauth. With the lease, no transaction is open during the
    call: every refresh succeeds, and two processes still refresh once."""
    m = mock()
    db = connected("RT-IDLE-1", grace=0)
    h.sql(db, "ALTER DATABASE :\"p1\" SET idle_in_transaction_session_timeout = '1s'", db_name(db))
    expect_eq(h.sql(db, "SHOW idle_in_transaction_session_timeout"), "1s", "the server-side timeout (new sessions)")
    m.ctl("POST", "faults", {"mode": "slow", "delay_ms": 2500, "target": "token", "count": 0})
    m.ctl("DELETE", "stats")
    runs = [connect(db, "--check", "--force-refresh") for _ in range(2)]
    # and once Xero answers fast again, the stored refresh token is still Xero's current one (a refresh whose
    # rotated token was lost would now get invalid_grant, and park the token set as needs_reauth)
    m.ctl("DELETE", "faults")
    runs.append(connect(db, "--check", "--force-refresh"))
    expect_eq(token_sets(db)[0][2], "active", "the token set's status after three refreshes (not needs_reauth)")
    for i, res in enumerate(runs):
        expect_eq(res.returncode, 0, f"refresh {i} under a 1 s idle-in-transaction timeout (stderr {res.stderr[-1500:]!r})")
        expect_in("ok, 2 tenants", res.stdout, f"refresh {i}: a working access token")
    # two processes at once, the access token expired: one refresh, both served
    m.ctl("POST", "faults", {"mode": "slow", "delay_ms": 2500, "target": "token", "count": 0})
    expire_access_token(db)
    results = _parallel(2, lambda i: connect(db, "--check", "--refresh"))
    for i, res in enumerate(results):
        expect_eq(res.returncode, 0, f"concurrent process {i}: exit code (stderr {res.stderr[-1500:]!r})")
    oauth = m.oauth()
    expect_eq(oauth["token_refreshes"], 4, "refreshes at Xero (3 forced, then one for both processes)")
    expect_eq(oauth["invalid_grant"], 0, "invalid_grant answers")
    expect_eq(oauth["grace_replays"], 0, "no refresh token was used twice")
    expect_eq(token_sets(db)[0][2], "active", "status")
    expect_eq(lease(db), [None, None], "no lease is left behind")
    expect_eq(h.sql(db, "SELECT count(*) FROM audit_log WHERE action = 'xero.needs_reauth'"), "0", "no needs_reauth")
    m.ctl("DELETE", "faults")


def test_two_refreshers_refresh_once():
    """Two processes find the access token expired at the same moment: one takes the lease and refreshes, the
    other waits for its result (a second refresh would use a retired refresh token: invalid_grant)."""
    m = mock()
    db = connected("RT-ONCE-1", grace=0)
    m.ctl("POST", "faults", {"mode": "slow", "delay_ms": 800, "target": "token", "count": 0})
    for round_ in range(2):
        expire_access_token(db)
        m.ctl("DELETE", "stats")
        results = _parallel(2, lambda i: connect(db, "--check", "--refresh"))
        for i, res in enumerate(results):
            expect_eq(res.returncode, 0, f"round {round_}, process {i}: exit code (stderr {res.stderr[-1500:]!r})")
            expect_in("ok, 2 tenants", res.stdout, f"round {round_}, process {i}")
        oauth = m.oauth()
        expect_eq(oauth["token_refreshes"], 1, f"round {round_}: refreshes at Xero")
        expect_eq(oauth["invalid_grant"], 0, f"round {round_}: invalid_grant answers")
        expect_eq(lease(db), [None, None], f"round {round_}: the lease is cleared with the stored token")
    m.ctl("DELETE", "faults")


def test_expired_lease_is_taken_over():
    """A holder that died leaves its lease behind. While it lives, others wait (bounded by the HTTP timeout +
    margin, then a clear error naming the holder, and no call to Xero); once it has expired, the next caller takes
    it over and refreshes."""
    m = mock()
    db = connected("RT-LEASE-1", grace=0)
    fast = {"SETTLED_HTTP_TIMEOUT_MS": "1000"}  # lease 1 s + 5 s margin; a waiter gives up 2 s after that
    expire_access_token(db)
    h.sql(db, "UPDATE xero_tokens SET refreshing_until = now() + interval '1 hour', refreshing_by = 'dead-host:1:0bad'")
    before = m.oauth()
    t0 = time.monotonic()
    res = connect(db, "--check", "--refresh", extra_env=fast)
    waited = time.monotonic() - t0
    expect(res.returncode != 0, "a lease held by someone else, for longer than the wait", res.returncode)
    expect_in("taking too long", res.stderr, "the error says why")
    expect_in("dead-host:1:0bad", res.stderr, "the error names the holder")
    expect(6 <= waited < 30, "the waiter waited the lease's length and margin, no more", waited)
    expect_eq(m.oauth()["token_requests"], before["token_requests"], "no token call while the lease is held")
    expect_eq(lease(db)[1], "dead-host:1:0bad", "the live lease is left alone")

    # the holder's lease runs out in 1.5 s: the caller waits for it, then takes it over
    h.sql(db, "UPDATE xero_tokens SET refreshing_until = now() + interval '1.5 seconds'")
    m.ctl("DELETE", "stats")
    res = connect(db, "--check", "--refresh", extra_env=fast)
    expect_eq(res.returncode, 0, f"take-over exit code (stderr {res.stderr[-1500:]!r})")
    expect_in("lease taken over", res.stderr, "the take-over is logged")
    expect_in("dead-host:1:0bad", res.stderr, "with the previous holder")
    oauth = m.oauth()
    expect_eq((oauth["token_refreshes"], oauth["invalid_grant"]), (1, 0), "one refresh, no invalid_grant")
    expect_eq(lease(db), [None, None], "the lease is cleared with the stored token")
    expect_eq(token_sets(db)[0][2], "active", "status")

    # an expired lease is taken over at once
    expire_access_token(db)
    h.sql(db, "UPDATE xero_tokens SET refreshing_until = now() - interval '1 second', refreshing_by = 'gone:2:beef'")
    t0 = time.monotonic()
    res = connect(db, "--check", "--refresh", extra_env=fast)
    expect_eq(res.returncode, 0, f"expired-lease exit code (stderr {res.stderr[-1500:]!r})")
    expect(time.monotonic() - t0 < 5, "no wait for an expired lease", time.monotonic() - t0)
    expect_eq(m.oauth()["token_refreshes"], 2, "refreshes")
    expect_eq(lease(db), [None, None], "the lease is cleared")


def test_store_is_retried_until_the_rotated_token_is_stored():
    """Storing the rotated refresh token fails twice (a trigger raises): the refresh retries, logs each failure
    and stores it; the stored token is Xero's current one (no grace period here, so a lost one would be
    invalid_grant next time)."""
    m = mock()
    db = connected("RT-STORE-1", grace=0)
    h.sql(
        db,
        """CREATE SEQUENCE test_store_failures;
        CREATE FUNCTION test_fail_store() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('test_store_failures') <= 2 THEN
                RAISE EXCEPTION 'injected failure of the token store';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_fail_store BEFORE UPDATE OF refresh_token ON xero_tokens
            FOR EACH ROW EXECUTE FUNCTION test_fail_store();""",
    )
    m.ctl("DELETE", "stats")
    res = connect(db, "--check", "--force-refresh")
    expect_eq(res.returncode, 0, f"exit code (stderr {res.stderr[-2000:]!r})")
    expect_eq(res.stderr.count("not stored yet; retrying"), 2, "each failed attempt is logged")
    expect_in("injected failure of the token store", res.stderr, "with the database's reason")
    expect_eq(lease(db), [None, None], "the lease is cleared with the stored token")
    stored_ok = connect(db, "--check", "--force-refresh")
    expect_eq(stored_ok.returncode, 0, f"the stored token refreshes again (stderr {stored_ok.stderr[-1500:]!r})")
    oauth = m.oauth()
    expect_eq((oauth["token_refreshes"], oauth["invalid_grant"]), (2, 0), "refreshes, invalid_grant")


# ---------------------------------------------------------------------------------------------------
# The callback: single-use states, checked on the loop, generic replies, a bounded offload queue


def make_state(org, expires, nonce=None, key=SECRET_KEY):
    """A state as gw_xero_state_make writes it (gateway/domain/xero_oauth.c): version 1, organisation and expiry
    (big-endian 64-bit), a 16-byte nonce, then HMAC-SHA256 over those under HMAC-SHA256(key,
    "settled/xero-oauth-state/v1"); base64url without padding. Such a state passes the signature check but its
    nonce was never recorded."""
    mkey = hmac.new(base64.b64decode(key), b"settled/xero-oauth-state/v1", hashlib.sha256).digest()
    raw = b"\x01" + org.to_bytes(8, "big") + int(expires).to_bytes(8, "big") + (nonce or os.urandom(16))
    raw += hmac.new(mkey, raw, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def authorize(server_env, m, port):
    """`settled connect xero --authorize`, consented at the mock: the callback's path on the server."""
    res = h.run_settled(["connect", "xero", "--authorize"], server_env, timeout=60)
    expect_eq(res.returncode, 0, f"--authorize exit code (stderr {res.stderr[-800:]!r})")
    url = res.stdout.strip().splitlines()[-1]
    status, headers, _ = m.call("GET", url[len(m.base):])
    expect_eq(status, 302, "authorize status")
    return headers["location"][len(f"http://127.0.0.1:{port}"):]


def server_setup(db_url=None, pg_url=None):
    m = mock()
    m.setup("RT-UNUSED")
    db = db_url or h.new_database("xero_oauth", pg_url=pg_url)
    port = h.free_port()
    redirect = f"http://127.0.0.1:{port}/v1/xero/callback"
    m.ctl("PUT", "app", {"redirect_uris": [redirect]})
    return m, db, port, env(db, SETTLED_XERO_REDIRECT_URI=redirect, SETTLED_WORKERS=0)


def org_id(db):
    return int(h.sql(db, "SELECT id FROM organisations WHERE slug = 'default'"))


def test_callback_state_is_single_use():
    """The state of an authorize URL works once: of several callbacks with it at once exactly one connects, the
    others (and any later replay, through the server or the command line) are refused with oauth_state_used, and
    Xero sees the code once."""
    m, db, port, server_env = server_setup()
    with h.Settled(db, env=server_env, port=port) as s:
        path = authorize(server_env, m, port)
        state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))["state"]
        results = _parallel(4, lambda i: s.get(path, headers={"X-Request-Id": f"replay-test-{i}"}))
        statuses = sorted(r[0] for r in results)
        expect_eq(statuses, [200, 400, 400, 400], "one callback connects, the replays are refused")
        winner = [i for i, r in enumerate(results) if r[0] == 200][0]
        for i, r in enumerate(results):
            if r[0] == 400:
                h.expect_problem(r, 400, "oauth_state_used", f"replay {i}")
                expect_in("already used", json.loads(r[2])["detail"], f"replay {i}: a clear detail")
        expect_eq(m.oauth()["code_exchanges"], 1, "Xero saw the code once")
        used = h.sql_rows(db, "SELECT used_at IS NOT NULL, used_by FROM xero_oauth_states WHERE organisation_id = $1",
                          org_id(db))
        expect_eq(used, [["t", f"replay-test-{winner}"]], "the nonce is consumed, by the request that connected")
        expect_eq(
            h.sql(db, "SELECT correlation_id FROM audit_log WHERE action = 'xero.connect'"),
            f"replay-test-{winner}",
            "the connection's audit carries the callback's request id",
        )
        h.expect_problem(s.get(path), 400, "oauth_state_used", "a later replay")
    res = connect(db, "--callback", f"http://127.0.0.1:{port}{path}")
    expect(res.returncode != 0, "a replay through the command line is refused", res.returncode)
    expect_in("already used", res.stderr, "the command line's error")
    expect_eq(m.oauth()["code_exchanges"], 1, "Xero still saw the code once")
    expect_eq(h.sql(db, "SELECT count(*) FROM xero_tokens"), "1", "one token set")
    # a state whose nonce was never recorded (signed with the right key) is refused too
    fresh = make_state(org_id(db), time.time() + 300)
    res = connect(db, "--callback", f"http://127.0.0.1:{port}/v1/xero/callback?code=x&state={fresh}")
    expect(res.returncode != 0, "an unrecorded state is refused", res.returncode)
    expect_in("unknown or has expired", res.stderr, "the error")
    expect_eq(m.oauth()["code_exchanges"], 1, "and never reaches Xero")
    del state


def test_callback_checks_state_without_the_database_and_replies_generically():
    """The state's signature and expiry are checked on the event loop: with the database stopped, a forged or
    expired state is still a 400 (not a 503), and a valid one a 503 with Retry-After whose detail names no
    database, address or libpq message (the log has them, under the request id). Once the database is back,
    the same state connects."""
    pg = h.start_cluster()
    m, db, port, server_env = server_setup(pg_url=pg.url())
    with h.Settled(db, env=server_env, port=port) as s:
        path = authorize(server_env, m, port)
        cb = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
        org = org_id(db)
        # a state made here with the right key passes the signature check (its nonce is unknown): so the
        # expired one below is refused for its expiry, not for its format
        h.expect_problem(s.get("/v1/xero/callback?" + urllib.parse.urlencode(
            {"code": "x", "state": make_state(org, time.time() + 300)})), 400, "oauth_callback_invalid", "unknown")
        pg.stop()
        forged = cb["state"][:-2] + ("AA" if not cb["state"].endswith("AA") else "BA")
        expired = make_state(org, time.time() - 1)
        for what, st in (("forged", forged), ("expired", expired), ("garbage", "not-a-state")):
            r = s.get("/v1/xero/callback?" + urllib.parse.urlencode({"code": cb["code"], "state": st}))
            h.expect_problem(r, 400, "oauth_callback_invalid", f"{what} state with the database stopped")
            expect_in("invalid or has expired", json.loads(r[2])["detail"], f"{what}: the detail")
        # a valid state needs the database: 503, generic
        r = s.get(path, headers={"X-Request-Id": "db-down-1"})
        h.expect_problem(r, 503, "store_unavailable", "a valid state with the database stopped")
        expect("retry-after" in r[1], "Retry-After", r[1])
        body = r[2].decode()
        for leak in ("127.0.0.1", str(pg.port), "connection to server", "Connection refused", "libpq", "postgres",
                     "SQLSTATE", "database_url"):
            expect_not_in(leak, body, "the reply names no database detail")
        log = s.log()
        expect("db-down-1" in log and "connecting Xero failed" in log, "the log has the failure with its request id",
               log[-2000:])
        line = [ln for ln in log.splitlines() if "db-down-1" in ln and "connecting Xero failed" in ln]
        expect(line and str(pg.port) in line[0], "the log line has the specifics", line)
        expect_eq(m.oauth()["code_exchanges"], 0, "nothing reached Xero")
        pg.start()
        status, _, body = s.get(path)
        expect_eq(status, 200, f"the same state once the database is back (body {body[:300]!r})")
    pg.stop()


def test_full_offload_queue_answers_503():
    """Two callbacks occupy both offload threads (Xero's token endpoint takes 5 s for them); the queue then takes
    GW_OFFLOAD_QUEUE_MAX (32) more and refuses the rest at once with 503 and Retry-After."""
    queue_max = 32
    m, db, port, server_env = server_setup()
    with h.Settled(db, env=server_env, port=port) as s:
        slow_paths = [authorize(server_env, m, port) for _ in range(2)]
        m.ctl("POST", "faults", {"mode": "slow", "delay_ms": 5000, "target": "token", "count": 2})
        slow = [None, None]

        def run_slow(i):
            slow[i] = s.get(slow_paths[i], timeout=30)

        threads = [threading.Thread(target=run_slow, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while m.oauth()["token_requests"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        expect_eq(m.oauth()["token_requests"], 2, "both offload threads are busy at Xero")
        org = org_id(db)
        extra = 6
        queries = [urllib.parse.urlencode({"code": "x", "state": make_state(org, time.time() + 300)})
                   for _ in range(queue_max + extra)]
        results = _parallel(len(queries), lambda i: s.get("/v1/xero/callback?" + queries[i], timeout=30))
        for t in threads:
            t.join()
        refused = [r for r in results if r[0] == 503]
        expect_eq(len(refused), extra, f"refused at once (statuses {sorted(r[0] for r in results)})")
        for r in refused:
            h.expect_problem(r, 503, "store_unavailable", "a full queue")
            expect("retry-after" in r[1], "Retry-After on a full queue", r[1])
            expect_in("busy", json.loads(r[2])["detail"], "the detail")
        queued = [r for r in results if r[0] != 503]
        for r in queued:
            h.expect_problem(r, 400, "oauth_callback_invalid", "a queued callback with an unrecorded state")
        # the two slow callbacks connect the same organisation at once: connections of one organisation are stored
        # one at a time, and one that completes after a newer one is retired and refused (test_an_older_connection_
        # never_takes_tenants_back), so which of them succeeds depends on the order they reach the database
        statuses = sorted(r[0] for r in slow)
        expect(statuses in ([200, 200], [200, 502]), "the slow callbacks: one connects, the other connects too or is "
               "refused as replaced", [(r[0], r[2][:300]) for r in slow])
        for r in slow:
            if r[0] == 502:
                h.expect_problem(r, 502, "xero_connect_failed", "the connection a newer one replaced")
        # the queue is free again
        h.expect_problem(s.get("/v1/xero/callback?" + queries[0]), 400, "oauth_callback_invalid", "after the burst")


def test_missing_or_bad_settings_are_named():
    db = h.new_database("xero_oauth")
    cases = [
        ({"SETTLED_XERO_CLIENT_ID": None}, ["--refresh-token", "x"], "SETTLED_XERO_CLIENT_ID"),
        ({"SETTLED_XERO_CLIENT_SECRET": None}, ["--refresh-token", "x"], "SETTLED_XERO_CLIENT_SECRET"),
        ({"SETTLED_SECRET_KEY": None}, ["--refresh-token", "x"], "SETTLED_SECRET_KEY"),
        ({"SETTLED_SECRET_KEY": "not-a-key-but-a-passphrase-0123"}, ["--check"], "SETTLED_SECRET_KEY"),
        ({"SETTLED_XERO_REDIRECT_URI": None}, ["--authorize"], "SETTLED_XERO_REDIRECT_URI"),
        ({"SETTLED_DATABASE_URL": None}, ["--check"], "SETTLED_DATABASE_URL"),
    ]
    for extra, args, name in cases:
        res = connect(db, *args, extra_env=extra)
        expect(res.returncode != 0, f"without {name}: exit code", res.returncode)
        expect_in(name, res.stderr, f"without {name}: the error names it")
        expect_not_in("not-a-key-but-a-passphrase", res.stderr, "the error never echoes the key")
    res = connect(db, "--frobnicate")
    expect_eq(res.returncode, 2, "a usage error")
    res = connect(db, "--refresh-token", "x", "--check")
    expect_eq(res.returncode, 2, "two actions at once")


# ---------------------------------------------------------------------------------------------------
# Connection hygiene: a reconnect retires the token set it replaces, tenants never move back, --check only
# reads, retired token sets are removed after their grace period


def reauth_gauge(s):
    return h.metric_sum(s.metrics(), "settled_xero_connections_needing_reauth")


def park_needs_reauth(db):
    """The connected token set's refresh token dies (unused past Xero's 60 days, no grace): needs_reauth."""
    mock().ctl("POST", "clock", {"advance": 61 * 86400})
    res = connect(db, "--check", "--refresh")
    expect(res.returncode != 0, "the dead refresh token fails", res.returncode)
    expect_eq([r[2] for r in token_sets(db)], ["needs_reauth"], "statuses after invalid_grant")


def test_reconnect_retires_the_replaced_token_set_and_clears_the_alert():
    """An organisation whose token set needs re-authorisation connects again: the old token set is retired (not
    needs_reauth), every tenant is on the new one, the retirement is audited, and the re-authorisation gauge of
    /metrics and /readyz drops back to 0. Before, the old row stayed needs_reauth forever and so did the alert."""
    m = mock()
    db = connected("RT-RC-1", grace=0)
    park_needs_reauth(db)
    old = int(token_sets(db)[0][0])
    with h.Settled(db, env=env(db, SETTLED_WORKERS=1, SETTLED_XERO_SYNC_INTERVAL=0)) as s:
        pl.wait_for(lambda: reauth_gauge(s) == 1, 15, "the gauge to count the token set that needs re-authorisation")
        expect_in("needs_reauth", s.get("/readyz")[2].decode(), "/readyz before the reconnect")
        m.ctl(
            "POST",
            "authorisations",
            {"refresh_token": "RT-RC-2", "tenants": [{"tenantId": T1, "tenantName": "Org One"},
                                                     {"tenantId": T2, "tenantName": "Org Two"}]},
        )
        res = connect(db, "--refresh-token", "RT-RC-2", secrets=("RT-RC-2",))
        expect_eq(res.returncode, 0, f"reconnect exit code (stderr {res.stderr[-2000:]!r})")
        rows = {int(r[0]): r[2] for r in token_sets(db)}
        new = max(rows)
        expect_eq(rows, {old: "retired", new: "active"}, "token sets after the reconnect")
        expect_eq(h.sql(db, "SELECT count(*) FROM xero_tokens WHERE status = 'needs_reauth'"), "0", "needs_reauth rows")
        expect_eq(
            h.sql_rows(db, "SELECT replaced_by, retired_at IS NOT NULL, access_token IS NULL FROM xero_tokens"
                           " WHERE id = $1", old),
            [[str(new), "t", "t"]],
            "the retired token set names its replacement and keeps no access token",
        )
        expect_eq(
            h.sql_rows(db, "SELECT tenant_id::text, token_id FROM xero_tenants ORDER BY tenant_id"),
            [[T1, str(new)], [T2, str(new)]],
            "every tenant is on the new token set",
        )
        expect_eq(
            h.sql(db, "SELECT before::text || ' ' || after::text FROM audit_log WHERE action = 'xero.token_set.retire'"),
            '{"status": "needs_reauth"} {"status": "retired", "replaced_by": %d}' % new,
            "the retirement is audited",
        )
        expect_eq(h.sql(db, "SELECT audit_verify(organisation_id) FROM xero_tokens LIMIT 1"), "", "the audit chain")
        pl.wait_for(lambda: reauth_gauge(s) == 0, 15, "the re-authorisation gauge to drop to 0 after the reconnect")
        ready = s.get("/readyz")[2].decode()
        expect_not_in("needs_reauth", ready, "/readyz after the reconnect")
    # a check lists only the working token set, and exits 0
    res = connect(db, "--check")
    expect_eq(res.returncode, 0, f"--check after the reconnect (stderr {res.stderr[-1500:]!r})")
    expect_in(f"xero token set {new}: ok, 2 tenants", res.stdout, "--check output")
    expect_not_in(f"xero token set {old}:", res.stdout, "the retired token set is not checked")


def test_an_older_connection_never_takes_tenants_back():
    """Two connections of one organisation race: A's token set is stored first (lower id) but its organisations
    are listed late (a slow GET /connections), B's is stored and listed meanwhile. When A finally stores its
    tenants they stay with B's newer token set; A's token set is retired, replaced by B's, and A's connect says so."""
    m = mock()
    m.setup("RT-RACE-A")
    m.ctl("POST", "authorisations", {"refresh_token": "RT-RACE-B", "tenants": [{"tenantId": T1, "tenantName": "Org One"},
                                                                                {"tenantId": T2, "tenantName": "Org Two"}]})
    db = h.new_database("xero_oauth")
    h.sql(db, "INSERT INTO organisations (slug, name) VALUES ('default', 'default')")
    m.ctl("POST", "faults", {"mode": "slow", "delay_ms": 3000, "target": "api", "path_prefix": "/connections",
                             "count": 1})
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("a", connect(db, "--refresh-token", "RT-RACE-A",
                                                                    secrets=("RT-RACE-A",))))
    t.start()
    pl.wait_for(lambda: h.sql(db, "SELECT count(*) FROM xero_tokens") == "1", 20, "A's token set to be stored")
    b = connect(db, "--refresh-token", "RT-RACE-B", secrets=("RT-RACE-B",))
    expect_eq(b.returncode, 0, f"B's connect (stderr {b.stderr[-1500:]!r})")
    t.join(60)
    a = out["a"]
    ids = [int(r[0]) for r in token_sets(db)]
    expect_eq(len(ids), 2, "two token sets")
    ta, tb = ids
    expect(a.returncode != 0, "A's late connect fails", a.returncode)
    expect_in(f"replaced by a newer connection (token set {tb})", a.stderr, "and says which connection replaced it")
    expect_eq(
        h.sql_rows(db, "SELECT tenant_id::text, token_id FROM xero_tenants ORDER BY tenant_id"),
        [[T1, str(tb)], [T2, str(tb)]],
        "the tenants stay with the newer token set",
    )
    expect_eq(
        h.sql_rows(db, "SELECT id, status, replaced_by FROM xero_tokens ORDER BY id"),
        [[str(ta), "retired", str(tb)], [str(tb), "active", None]],
        "the older token set is retired, replaced by the newer",
    )
    m.ctl("DELETE", "faults")


def db_dump(db):
    """Every row and sequence of the database (pg_dump --data-only), for comparing before and after."""
    pgbin = os.environ.get("SETTLED_TEST_PGBIN", "/usr/lib/postgresql/15/bin")
    res = subprocess.run([os.path.join(pgbin, "pg_dump"), "--data-only", "--no-owner", "-d", db], capture_output=True,
                         text=True, timeout=60)
    expect_eq(res.returncode, 0, f"pg_dump ({res.stderr[-500:]!r})")
    # (pg_dump's \restrict lines carry a random key of each run)
    return "".join(line for line in res.stdout.splitlines(True) if not line.startswith(("\\restrict", "\\unrestrict")))


def test_check_only_reads():
    """`connect xero --check` writes nothing, in the database (a data dump, sequences included, is identical
    before and after) or at Xero (no token call): with a live access token it lists the tenants; with an expired
    one it says it cannot prove the refresh token without a refresh (before, it refreshed and stored the rotated
    token); with a token set that needs re-authorisation it says so; for an unknown organisation it creates none."""
    m = mock()
    db = connected("RT-RO-1", grace=0)
    cases = [
        ("a live access token", None, 0, "ok, 2 tenants"),
        ("an expired access token", lambda: expire_access_token(db), 0, "unverified, 2 tenants stored"),
        ("an unknown organisation", None, 1, None),
    ]
    for what, prepare, code, out in cases:
        if prepare:
            prepare()
        before, calls = db_dump(db), m.oauth()["token_requests"]
        args = ["--check"] + (["--organisation", "nobody-here"] if "unknown" in what else [])
        res = connect(db, *args)
        expect_eq(res.returncode, code, f"{what}: exit code (stderr {res.stderr[-1500:]!r})")
        if out:
            expect_in(out, res.stdout, f"{what}: output")
        after = db_dump(db)
        if after != before:
            import difflib
            diff = "".join(list(difflib.unified_diff(before.splitlines(True), after.splitlines(True), n=0))[:20])
            raise h.Failure(f"{what}: --check changed the database:\n{diff}")
        expect_eq(m.oauth()["token_requests"], calls, f"{what}: token calls at Xero")
    expect_in("cannot prove the refresh token", connect(db, "--check").stderr, "the unverified case says why")
    park_needs_reauth(db)
    before, calls = db_dump(db), m.oauth()["token_requests"]
    res = connect(db, "--check")
    expect_eq(res.returncode, 1, "needs_reauth: exit code")
    expect_in("needs_reauth", res.stdout, "needs_reauth: output")
    expect(db_dump(db) == before, "needs_reauth: the database is unchanged by --check")
    expect_eq(m.oauth()["token_requests"], calls, "needs_reauth: token calls at Xero")


def test_retired_token_sets_are_removed_after_the_grace_period():
    """Token sets retired for longer than SETTLED_XERO_RETIRED_GRACE_HOURS are deleted by the workers' periodic
    thread (at start, then every minute), audited; younger retired ones and working ones stay."""
    m = mock()
    db = connected("RT-GR-1")
    for rt in ("RT-GR-2", "RT-GR-3"):
        m.ctl("POST", "authorisations", {"refresh_token": rt, "tenants": [{"tenantId": T1}, {"tenantId": T2}]})
        res = connect(db, "--refresh-token", rt, secrets=(rt,))
        expect_eq(res.returncode, 0, f"reconnect with {rt} (stderr {res.stderr[-1500:]!r})")
    s1, s2, s3 = [int(r[0]) for r in token_sets(db)]
    expect_eq([r[2] for r in token_sets(db)], ["retired", "retired", "active"], "statuses after two reconnects")
    h.sql(db, "UPDATE xero_tokens SET retired_at = now() - interval '3 hours' WHERE id = $1", s1)
    h.sql(db, "UPDATE xero_tokens SET retired_at = now() - interval '30 minutes' WHERE id = $1", s2)
    w = pl.Worker(pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_RETIRED_GRACE_HOURS=1))
    try:
        pl.wait_for(lambda: h.sql(db, "SELECT count(*) FROM xero_tokens") == "2", 20,
                    "the token set retired 3 hours ago to be removed")
        time.sleep(1)
        expect_eq([int(r[0]) for r in token_sets(db)], [s2, s3], "what is left: the younger retired set, the active one")
        expect_eq(h.sql(db, "SELECT entity_id FROM audit_log WHERE action = 'xero.token_set.delete'"), str(s1),
                  "the removal is audited")
        expect_eq(h.sql(db, "SELECT audit_verify(organisation_id) FROM xero_tokens LIMIT 1"), "", "the audit chain")
    finally:
        w.stop()


try:
    h.run(globals())
finally:
    if _mock is not None:
        _mock.stop()
