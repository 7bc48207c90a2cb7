# SPDX-License-Identifier: MIT
"""test_api_auth.py: the portal's sessions and account flows (/v1/auth/*) against the real binary, PostgreSQL and
Redis: sign-in and the token on /v1/me; one answer for a wrong password and an unknown address; the brute-force
throttle (429 with Retry-After) and the real password from another address afterwards; refresh rotation and reuse
revoking the family; sign-out denying the access token and the refresh token; a disabled user's token refused at
once; forged tokens over HTTP; Redis down (the stricter local throttle); cookie mode with and without the CSRF
header; invitations, password resets (single use, expiry), registration -> approval -> sign-in; password change.
Every answer is checked against docs/openapi.yaml, and an access matrix covers every /v1/auth route of the table.

The client's address: settled takes the socket's peer address and trusts no X-Forwarded-For, so "another address"
is a client socket bound to another loopback address (127.0.0.2, ...: Linux routes all of 127/8 to lo).
"""

import base64
import hashlib
import hmac
import http.client
import json
import re
import secrets
import subprocess
import time

import harness as h
import openapi_check
from harness import expect, expect_eq, expect_in, expect_not_in

JWT_SECRET = "test-portal-jwt-secret-0123456789abcdef"
PASSWORD = "correct horse battery 1"
RUN = secrets.token_hex(3)  # the throttle's per-account keys outlive a run: every run has its own addresses


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(claims, secret=JWT_SECRET, alg="HS256"):
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    if alg == "none":
        return f"{head}.{body}."
    sig = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def redis_eval(script):
    import socket
    import urllib.parse
    u = urllib.parse.urlsplit(h.redis_url())
    args = ["EVAL", script, "0"]
    with socket.create_connection((u.hostname, u.port or 6379), timeout=5) as s:
        s.sendall((f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)).encode())
        return s.recv(1024).decode()


class World:
    def __init__(self):
        self.db = h.new_database("auth")
        self.org = {}
        for slug in ("org-x", "org-y"):
            self.org[slug] = h.sql_value(self.db, "WITH i AS (INSERT INTO organisations (slug, name) VALUES ($1, $1) "
                                                  "RETURNING id) SELECT id FROM i", slug)
        self.customer = h.sql_value(self.db, "WITH i AS (INSERT INTO customers (organisation_id, name, email) VALUES "
                                             "($1, 'Customer A', 'a@example.com') RETURNING id) SELECT id FROM i",
                                    self.org["org-x"])
        # the deny keys of disabled users are named by user id in the one test Redis that every test file shares:
        # ids of this run's own (test_api_invoices mints tokens for users 101 to 202)
        h.sql(self.db, f"ALTER SEQUENCE users_id_seq RESTART WITH {secrets.randbelow(10**9) + 10**6}")
        self.env = {"SETTLED_WORKERS": 0, "SETTLED_JWT_SECRET": JWT_SECRET}
        self.server = None
        # the throttle's counters of earlier runs (per address) would refuse this one's first attempts
        redis_eval("for _, p in ipairs({'settled:login:*', 'settled:mail:*', 'settled:verify:*'}) do "
                   "for _, k in ipairs(redis.call('KEYS', p)) do redis.call('DEL', k) end end return 0")

    def cli_env(self):
        return {"SETTLED_DATABASE_URL": self.db, "SETTLED_REDIS_URL": h.redis_url()}

    def settled(self, *args, stdin=None):
        res = subprocess.run([h.settled_bin()] + list(args), input=stdin, env=h.settled_env(self.cli_env()),
                             capture_output=True, text=True, timeout=60)
        expect_eq(h.sanitizer_report(res.stderr), "", f"settled {args[:2]}: no sanitizer report")
        return res

    def user(self, role="client", password=PASSWORD, org="org-x"):
        """A new user (settled user add, the password on standard input); returns its address."""
        email = f"{role}-{secrets.token_hex(4)}-{RUN}@example.com"
        args = ["user", "add", "--organisation", org, "--email", email, "--role", role]
        if role == "client":
            args += ["--customer", str(self.customer)]
        res = self.settled(*args, stdin=password + "\n")
        expect_eq(res.returncode, 0, f"user add ({res.stderr!r})")
        return email

    def call(self, method, path, body=None, token=None, headers=None, src="127.0.0.1", server=None, raw=None):
        """One request from source address src; checks the answer against docs/openapi.yaml."""
        s = server or self.server
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30, source_address=(src, 0))
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            out = resp.read()
            rh = {}
            for k, v in resp.getheaders():
                k = k.lower()
                rh[k] = f"{rh[k]}, {v}" if k in rh else v
        finally:
            conn.close()
        openapi_check.response(method, path, resp.status, rh, out)
        return resp.status, rh, out

    def login(self, email, password=PASSWORD, src="127.0.0.1", want=200, server=None, **extra):
        body = {"email": email, "password": password}
        body.update(extra)
        st, rh, out = self.call("POST", "/v1/auth/login", body, src=src, server=server)
        expect_eq(st, want, f"login {email} from {src} (body {out[:300]!r})")
        return json.loads(out) if st == 200 else (st, rh, out)

    def me(self, token, server=None):
        return self.call("GET", "/v1/me", token=token, server=server)[0]

    def refresh(self, token, server=None):
        return self.call("POST", "/v1/auth/refresh", {"refresh_token": token}, server=server)


_world = None


def world():
    global _world
    if _world is None:
        _world = World()
    return _world


def auth_test(fn):
    def run():
        w = world()
        w.server = h.Settled(w.db, env=w.env)
        fn(w)
        w.server.stop()
        expect_not_in(PASSWORD, w.server.log(), "no password in the log")
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def problem(resp, status, code, what):
    h.expect_problem(resp, status, code, what)
    return json.loads(resp[2])


@auth_test
def test_login_and_me(w):
    """A sign-in answers the documented shape, and its access token works on /v1/me (the right user)."""
    email = w.user()
    t = w.login(email)
    expect_eq(t["token_type"], "Bearer", "token_type")
    expect_eq(t["expires_in"], 900, "expires_in (SETTLED_ACCESS_TOKEN_TTL)")
    expect(re.fullmatch(r"[A-Za-z0-9_-]{43}", t["refresh_token"]) is not None, "an opaque refresh token")
    st, rh, out = w.call("GET", "/v1/me", token=t["access_token"])
    expect_eq(st, 200, f"/v1/me ({out!r})")
    me = json.loads(out)
    expect_eq(me["user"]["email"], email, "the signed-in user")
    expect_eq(me["customer"]["id"], str(w.customer), "its customer")
    # the organisation may be named; another organisation's slug does not find the user
    w.login(email, organisation="org-x")
    problem(w.login(email, organisation="org-y", want=401), 401, "invalid_credentials", "another organisation")
    # only the digest of the refresh token is stored
    expect_eq(h.sql_value(w.db, "SELECT count(*) FROM refresh_tokens WHERE digest = $1",
                          hashlib.sha256(t["refresh_token"].encode()).hexdigest()), "1", "its digest is stored")
    expect_not_in(t["refresh_token"], h.sql_value(w.db, "SELECT string_agg(digest, ',') FROM refresh_tokens"),
                  "never the token itself")


@auth_test
def test_wrong_password_and_unknown_email_are_one_answer(w):
    """A wrong password, an unknown address and a disabled user get the same 401 (only the request id differs)."""
    email = w.user()
    disabled = w.user()
    expect_eq(w.settled("user", "disable", "--organisation", "org-x", "--email", disabled).returncode, 0, "disable")
    answers = []
    for who, pw in ((email, "wrong password 123"), (f"nobody-{RUN}@example.com", PASSWORD), (disabled, PASSWORD)):
        st, rh, out = w.login(who, pw, src="127.0.0.3", want=401)
        doc = problem((st, rh, out), 401, "invalid_credentials", who)
        doc.pop("request_id", None)
        answers.append(doc)
    expect_eq(answers[1], answers[0], "unknown address = wrong password")
    expect_eq(answers[2], answers[0], "disabled user = wrong password")
    # missing and unknown fields are the guard's 400 naming the field
    st, rh, out = w.call("POST", "/v1/auth/login", {"email": email})
    expect_eq(problem((st, rh, out), 400, "parameter_invalid", "no password")["field"], "password", "names it")
    st, rh, out = w.call("POST", "/v1/auth/login", {"email": email, "password": PASSWORD, "remember": True})
    expect_eq(problem((st, rh, out), 400, "parameter_unknown", "unknown field")["field"], "remember", "names it")
    st, rh, out = w.call("POST", "/v1/auth/login", {"email": email, "password": 12345678901})
    expect_eq(problem((st, rh, out), 400, "parameter_invalid", "a number")["field"], "password", "names it")
    problem(w.call("POST", "/v1/auth/login", raw=b'{"email": "a@b.c", "password": '), 400, "json_invalid", "bad JSON")
    # the same time too: every refusal runs one password hash (a loose bound: the machine is shared)
    times = {}
    for who, pw in ((email, "wrong password 123"), (f"nobody2-{RUN}@example.com", PASSWORD)):
        started = time.monotonic()
        w.login(who, pw, src="127.0.0.6", want=401)
        times[who] = time.monotonic() - started
    a, b = times.values()
    expect(0.25 < a / b < 4, f"an unknown address takes as long as a wrong password ({times})")


@auth_test
def test_brute_force_is_throttled_and_another_address_still_signs_in(w):
    """Five wrong passwords for one account from one address: the sixth attempt is 429 with Retry-After, even with
    the right password; the right password from another address signs in."""
    email = w.user()
    for i in range(5):
        problem(w.login(email, f"guess number {i}", src="127.0.0.2", want=401), 401, "invalid_credentials", f"#{i}")
    st, rh, out = w.login(email, "guess number 6", src="127.0.0.2", want=429)
    problem((st, rh, out), 429, "too_many_attempts", "the sixth")
    retry = int(rh.get("retry-after", "0"))
    expect(0 < retry <= 900, f"Retry-After within the 15-minute window ({retry})")
    problem(w.login(email, PASSWORD, src="127.0.0.2", want=429), 429, "too_many_attempts",
            "the right password from the same address waits too")
    t = w.login(email, PASSWORD, src="127.0.0.1")
    expect_eq(w.me(t["access_token"]), 200, "signed in from another address")


@auth_test
def test_refresh_rotates_and_reuse_revokes_the_family(w):
    """A refresh answers new tokens and spends the old refresh token; presenting it again revokes the family, so
    its live successor fails too; another sign-in's family is untouched."""
    email = w.user()
    t1 = w.login(email)
    other = w.login(email)
    st, rh, out = w.refresh(t1["refresh_token"])
    expect_eq(st, 200, f"refresh ({out!r})")
    t2 = json.loads(out)
    expect(t2["refresh_token"] != t1["refresh_token"], "rotated")
    expect(t2["access_token"] != t1["access_token"], "a new access token")
    expect_eq(w.me(t2["access_token"]), 200, "the new access token works")
    problem(w.refresh(t1["refresh_token"]), 401, "invalid_refresh", "the spent token again")
    problem(w.refresh(t2["refresh_token"]), 401, "invalid_refresh", "its successor, revoked with the family")
    expect_eq(w.refresh(other["refresh_token"])[0], 200, "another sign-in is not touched")
    problem(w.refresh("x" * 43), 401, "invalid_refresh", "an unknown token")
    problem(w.call("POST", "/v1/auth/refresh", {}), 400, "parameter_invalid", "no token")


@auth_test
def test_logout_denies_the_access_token_and_the_refresh_token(w):
    email = w.user(role="admin")
    t = w.login(email)
    st, rh, out = w.call("POST", "/v1/auth/logout", {"refresh_token": t["refresh_token"]}, token=t["access_token"])
    expect_eq(st, 204, f"logout ({out!r})")
    expect_eq(w.me(t["access_token"]), 401, "the access token is denied")
    problem(w.refresh(t["refresh_token"]), 401, "invalid_refresh", "the refresh token is dead")
    # the deny key lives as long as the token could
    ttl = int(redis_eval(f"return redis.call('TTL', 'settled:revoked:jti:"
                         f"{json.loads(unb64(t['access_token'].split('.')[1]))['jti']}')")[1:].strip())
    expect(800 < ttl <= 960, f"the deny key expires with the token ({ttl})")
    expect_eq(w.call("POST", "/v1/auth/logout", {})[0], 401, "logout needs a token")


@auth_test
def test_a_disabled_users_token_is_refused_at_once(w):
    email = w.user()
    t = w.login(email)
    expect_eq(w.me(t["access_token"]), 200, "before")
    res = w.settled("user", "disable", "--organisation", "org-x", "--email", email)
    expect_eq(res.returncode, 0, f"disable ({res.stderr!r})")
    expect_in("refused from now on", res.stdout, "the CLI says the tokens are denied")
    expect_eq(w.me(t["access_token"]), 401, "the access token is refused at once")
    problem(w.refresh(t["refresh_token"]), 401, "invalid_refresh", "the refresh token is revoked")
    problem(w.login(email, want=401), 401, "invalid_credentials", "no new sign-in")


@auth_test
def test_forged_tokens_are_401(w):
    """alg none, a wrong key, expired, not yet valid, wrong iss, wrong aud, a tampered payload: 401 over HTTP."""
    email = w.user()
    t = w.login(email)
    real = json.loads(unb64(t["access_token"].split(".")[1]))
    now = int(time.time())
    cases = {
        "alg none": mint(real, alg="none"),
        "wrong key": mint(real, secret="another-secret-0123456789abcdefghij"),
        "expired": mint(dict(real, iat=now - 3600, nbf=now - 3600, exp=now - 1800)),
        "not yet valid": mint(dict(real, nbf=now + 600, exp=now + 1200)),
        "wrong iss": mint(dict(real, iss="evil")),
        "wrong aud": mint(dict(real, aud="evil")),
    }
    head, body, sig = t["access_token"].split(".")
    tampered = dict(real, role="admin")
    tampered.pop("customer", None)
    cases["tampered payload"] = f"{head}.{b64(json.dumps(tampered).encode())}.{sig}"
    for what, tok in cases.items():
        for method, path, body in (("GET", "/v1/me", None), ("POST", "/v1/auth/logout", {}),
                                   ("POST", "/v1/auth/password", {"current_password": PASSWORD,
                                                                  "new_password": "another one 12345"})):
            st, rh, out = w.call(method, path, body, token=tok)
            problem((st, rh, out), 401, "unauthenticated", f"{what} on {path}")
    expect_eq(w.me(t["access_token"]), 200, "the real one still works (nothing was changed)")


def test_redis_down_keeps_sign_in_under_the_local_throttle():
    """With Redis unreachable, signing in works, and brute force meets the stricter local throttle (2 failures per
    account and address)."""
    w = world()
    closed = h.free_port()
    env = dict(w.env, SETTLED_REDIS_URL=f"redis://127.0.0.1:{closed}")
    email = w.user()
    with h.Settled(w.db, env=env) as s:
        t = w.login(email, server=s)
        expect_eq(w.me(t["access_token"], server=s), 200, "the token works (the deny list is unchecked)")
        for i in range(2):
            problem(w.login(email, f"guess number {i}", src="127.0.0.4", want=401, server=s), 401,
                    "invalid_credentials", f"#{i}")
        st, rh, out = w.login(email, "guess number 3", src="127.0.0.4", want=429, server=s)
        expect(int(rh.get("retry-after", "0")) > 0, "Retry-After")
        t = w.login(email, server=s, src="127.0.0.1")
        expect_in("the stricter local throttle counts", s.log(), "the log says why")
        # sign-out still revokes the refresh family; the access token cannot be denied (the documented limit)
        st, _, _ = w.call("POST", "/v1/auth/logout", {"refresh_token": t["refresh_token"]}, token=t["access_token"],
                          server=s)
        expect_eq(st, 204, "logout without Redis")
        problem(w.refresh(t["refresh_token"], server=s), 401, "invalid_refresh", "the family is revoked")
        expect_eq(w.me(t["access_token"], server=s), 200, "the access token runs until it expires")
    # disabling without Redis says that the access tokens live on
    res = subprocess.run([h.settled_bin(), "user", "disable", "--organisation", "org-x", "--email", email],
                         env=h.settled_env({"SETTLED_DATABASE_URL": w.db,
                                            "SETTLED_REDIS_URL": f"redis://127.0.0.1:{closed}"}),
                         capture_output=True, text=True, timeout=60)
    expect_eq(res.returncode, 0, f"disabled ({res.stderr!r})")
    expect_in("keep working until they expire", res.stderr, "the CLI warns")


def test_cookie_mode():
    """SETTLED_REFRESH_COOKIE=on: the refresh token is an HttpOnly, Secure, SameSite=Strict cookie, not in the body;
    refresh and logout read it, and only with X-Settled-CSRF: 1 and a trusted Origin."""
    w = world()
    env = dict(w.env, SETTLED_REFRESH_COOKIE="on", SETTLED_CORS_ORIGINS="https://portal.example")
    email = w.user()
    with h.Settled(w.db, env=env) as s:
        st, rh, out = w.call("POST", "/v1/auth/login", {"email": email, "password": PASSWORD}, server=s)
        expect_eq(st, 200, f"login ({out!r})")
        expect_not_in("refresh_token", json.loads(out), "not in the body")
        cookie = rh.get("set-cookie", "")
        for attr in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/v1/auth"):
            expect_in(attr, cookie, "cookie attribute")
        value = re.match(r"settled_refresh=([A-Za-z0-9_-]{43});", cookie).group(1)
        jar = {"Cookie": f"settled_refresh={value}"}
        problem(w.call("POST", "/v1/auth/refresh", raw=b"", headers=jar, server=s), 403, "csrf_failed",
                "no CSRF header")
        problem(w.call("POST", "/v1/auth/refresh", raw=b"",
                       headers=dict(jar, **{"X-Settled-CSRF": "1", "Origin": "https://evil.example"}), server=s),
                403, "csrf_failed", "an untrusted Origin")
        st, rh, out = w.call("POST", "/v1/auth/refresh", raw=b"",
                             headers=dict(jar, **{"X-Settled-CSRF": "1", "Origin": "https://portal.example"}), server=s)
        expect_eq(st, 200, f"refresh with the header ({out!r})")
        t = json.loads(out)
        value2 = re.match(r"settled_refresh=([A-Za-z0-9_-]{43});", rh.get("set-cookie", "")).group(1)
        expect(value2 != value, "rotated cookie")
        jar2 = {"Cookie": f"other=1; settled_refresh={value2}"}
        problem(w.call("POST", "/v1/auth/logout", raw=b"", headers=jar2, token=t["access_token"], server=s), 403,
                "csrf_failed", "logout without the header")
        st, rh, out = w.call("POST", "/v1/auth/logout", raw=b"", headers=dict(jar2, **{"X-Settled-CSRF": "1"}),
                             token=t["access_token"], server=s)
        expect_eq(st, 204, "logout")
        expect_in("Max-Age=0", rh.get("set-cookie", ""), "the cookie is cleared")
        problem(w.call("POST", "/v1/auth/refresh", raw=b"", headers=dict(jar2, **{"X-Settled-CSRF": "1"}), server=s),
                401, "invalid_refresh", "signed out")


@auth_test
def test_invitation_accept_is_single_use(w):
    email = f"invited-{RUN}@example.com"
    res = w.settled("user", "add", "--organisation", "org-x", "--email", email, "--role", "client", "--customer",
                    str(w.customer), "--invite")
    expect_eq(res.returncode, 0, f"invite ({res.stderr!r})")
    token = re.search(r"#token=([A-Za-z0-9_-]+)", res.stdout).group(1)
    st, rh, out = w.call("POST", "/v1/auth/invitations/accept", {"token": token, "password": "short"})
    expect_eq(problem((st, rh, out), 400, "parameter_invalid", "a weak password")["field"], "password", "field")
    st, rh, out = w.call("POST", "/v1/auth/invitations/accept", {"token": token, "password": PASSWORD})
    expect_eq(st, 200, f"accepted ({out!r})")
    expect_eq(w.me(json.loads(out)["access_token"]), 200, "signed in")
    w.login(email)
    st, rh, out = w.call("POST", "/v1/auth/invitations/accept", {"token": token, "password": PASSWORD})
    expect_eq(problem((st, rh, out), 400, "token_invalid", "used twice")["field"], "token", "field")
    problem(w.call("POST", "/v1/auth/invitations/accept", {"token": "y" * 43, "password": PASSWORD}), 400,
            "token_invalid", "unknown")
    # an expired one (72 hours)
    res = w.settled("user", "add", "--organisation", "org-x", "--email", f"late-{RUN}@example.com", "--role", "admin",
                    "--invite")
    late = re.search(r"#token=([A-Za-z0-9_-]+)", res.stdout).group(1)
    h.sql(w.db, "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
    problem(w.call("POST", "/v1/auth/invitations/accept", {"token": late, "password": PASSWORD}), 400,
            "token_invalid", "expired")
    expect_eq(h.sql_value(w.db, "SELECT count(*) FROM users WHERE email = $1", f"late-{RUN}@example.com"), "0",
              "no user made")


@auth_test
def test_password_reset_single_use_and_expiry(w):
    email = w.user()
    old = w.login(email)
    for who in (email, f"nobody-{RUN}@example.com"):
        st, rh, out = w.call("POST", "/v1/auth/password-reset", {"email": who})
        expect_eq((st, json.loads(out)), (202, {"status": "accepted"}), f"reset request for {who}")
    # the known address got a reset and its e-mail (waiting in the outbox: no SMTP here), the unknown one nothing
    expect_eq(h.sql_value(w.db, "SELECT count(*) FROM password_resets r JOIN users u ON u.id = r.user_id "
                                "WHERE u.email = $1", email), "1", "one reset for the account")
    expect_eq(h.sql_value(w.db, "SELECT string_agg(recipient, ',') FROM notifications WHERE kind = 'password_reset'"
                                " AND recipient IN ($1, $2)", email, f"nobody-{RUN}@example.com"), email,
              "one e-mail, to the account only")
    res = w.settled("user", "reset", "--organisation", "org-x", "--email", email)
    expect_eq(res.returncode, 0, f"user reset ({res.stderr!r})")
    token = re.search(r"/reset#token=([A-Za-z0-9_-]{43})", res.stdout).group(1)
    st, rh, out = w.call("POST", "/v1/auth/password-reset/confirm", {"token": token, "password": "aaaaaaaaaaaa"})
    expect_eq(problem((st, rh, out), 400, "parameter_invalid", "weak")["field"], "password", "field")
    new = "a brand new password 9"
    expect_eq(w.call("POST", "/v1/auth/password-reset/confirm", {"token": token, "password": new})[0], 204, "reset")
    problem(w.call("POST", "/v1/auth/password-reset/confirm", {"token": token, "password": new + "x"}), 400,
            "token_invalid", "single use")
    problem(w.refresh(old["refresh_token"]), 401, "invalid_refresh", "sessions before the reset are revoked")
    w.login(email, new)
    problem(w.login(email, PASSWORD, src="127.0.0.5", want=401), 401, "invalid_credentials", "the old password")
    # an expired one
    res = w.settled("user", "reset", "--organisation", "org-x", "--email", email)
    token = re.search(r"/reset#token=([A-Za-z0-9_-]{43})", res.stdout).group(1)
    h.sql(w.db, "UPDATE password_resets SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
    problem(w.call("POST", "/v1/auth/password-reset/confirm", {"token": token, "password": PASSWORD}), 400,
            "token_invalid", "expired")
    w.login(email, new)
    expect_eq(w.settled("user", "reset", "--organisation", "org-x", "--email", "none@example.com").returncode, 1,
              "user reset of an unknown address")


@auth_test
def test_register_pending_approve_login(w):
    email = f"self-{RUN}@example.com"
    problem(w.call("POST", "/v1/auth/register", {"organisation": "org-x", "email": email, "password": PASSWORD}),
            403, "registration_closed", "self_registration off")
    h.sql(w.db, "UPDATE organisations SET self_registration = 'approval' WHERE slug = 'org-x'")
    st, rh, out = w.call("POST", "/v1/auth/register", {"organisation": "org-x", "email": email, "password": PASSWORD})
    expect_eq(st, 202, f"registered ({out!r})")
    st, _, _ = w.call("POST", "/v1/auth/register", {"organisation": "org-x", "email": email, "password": PASSWORD})
    expect_eq(st, 202, "a taken address is answered the same")
    st, rh, out = w.call("POST", "/v1/auth/register", {"organisation": "org-x", "email": "x@y.z", "password": "short"})
    expect_eq(problem((st, rh, out), 400, "parameter_invalid", "weak")["field"], "password", "field")
    problem(w.login(email, want=403), 403, "email_unverified", "nothing before the address is verified")
    body = h.sql_value(w.db, "SELECT body_text FROM notifications WHERE kind = 'email_verification' AND recipient = $1",
                       email)
    token = re.search(r"/verify-email#token=([A-Za-z0-9_-]{43})", body).group(1)
    st, rh, out = w.call("POST", "/v1/auth/verify-email", {"token": token})
    expect_eq((st, json.loads(out)), (200, {"status": "pending_approval"}), "no customer has the address")
    problem(w.login(email, want=403), 403, "account_pending", "waits for approval")
    uid = h.sql_value(w.db, "SELECT id FROM users WHERE email = $1", email)
    expect_eq(h.sql_value(w.db, "SELECT auth_user_approve($1, $2, $3, 'test', 'test')", w.org["org-x"], uid,
                          w.customer), "approved", "approved")
    t = w.login(email)
    expect_eq(w.me(t["access_token"]), 200, "signed in")
    h.sql(w.db, "UPDATE organisations SET self_registration = 'off' WHERE slug = 'org-x'")


@auth_test
def test_password_change(w):
    email = w.user(role="admin")
    t = w.login(email)
    other = w.login(email)
    path = "/v1/auth/password"
    problem(w.call("POST", path, {"current_password": "not it at all", "new_password": "another one 12345"},
                   token=t["access_token"]), 403, "password_incorrect", "wrong current password")
    st, rh, out = w.call("POST", path, {"current_password": PASSWORD, "new_password": "short"},
                         token=t["access_token"])
    expect_eq(problem((st, rh, out), 400, "parameter_invalid", "weak")["field"], "new_password", "field")
    st, rh, out = w.call("POST", path, {"current_password": PASSWORD, "new_password": "another one 12345"},
                         token=t["access_token"])
    expect_eq(st, 200, f"changed ({out!r})")
    fresh = json.loads(out)
    problem(w.refresh(other["refresh_token"]), 401, "invalid_refresh", "other sessions are signed out")
    problem(w.refresh(t["refresh_token"]), 401, "invalid_refresh", "this one's old family too")
    expect_eq(w.refresh(fresh["refresh_token"])[0], 200, "the new session lives")
    w.login(email, "another one 12345")
    expect_eq(h.sql_value(w.db, "SELECT count(*) FROM audit_log WHERE action = 'user.password_change'"), "1",
              "audited")


def routes():
    res = h.run_settled(["routes", "--json"])
    expect_eq(res.returncode, 0, f"settled routes --json ({res.stderr!r})")
    return [json.loads(line) for line in res.stdout.splitlines()]


@auth_test
def test_access_matrix(w):
    """Every /v1/auth route of the table x anonymous, a client, an admin and a disabled user, each with a valid
    body. A public route ignores the token; a guarded one is 401 without a valid (or with a disabled user's) token."""
    client, admin, gone = w.user(), w.user(role="admin"), w.user()
    gone_token = w.login(gone)["access_token"]
    expect_eq(w.settled("user", "disable", "--organisation", "org-x", "--email", gone).returncode, 0, "disable")
    target = w.user()  # signs in on the login route for every caller
    bodies = {
        "auth_login": lambda: ({"email": target, "password": PASSWORD}, 200),
        "auth_refresh": lambda: ({"refresh_token": w.login(target)["refresh_token"]}, 200),
        "auth_logout": lambda: ({"refresh_token": "z" * 43}, 204),
        "auth_password": lambda: ({"current_password": "not the password", "new_password": "whatever 123456"}, 403),
        "auth_invitation_accept": lambda: ({"token": "q" * 43, "password": PASSWORD}, 400),
        "auth_password_reset": lambda: ({"email": target}, 202),
        "auth_password_reset_confirm": lambda: ({"token": "q" * 43, "password": PASSWORD}, 400),
        "auth_register": lambda: ({"organisation": "org-y", "email": "r@example.com", "password": PASSWORD}, 403),
        "auth_verify_email": lambda: ({"token": "q" * 43}, 400),
    }
    auth_routes = [r for r in routes() if r["path"].startswith("/v1/auth/")]
    expect_eq(sorted(r["name"] for r in auth_routes), sorted(bodies), "every /v1/auth route is in the matrix")
    cells = 0
    for r in auth_routes:
        for who in ("anonymous", "client", "admin", "disabled"):
            token = {"anonymous": None, "disabled": gone_token}.get(who)
            if who in ("client", "admin"):
                token = w.login(client if who == "client" else admin)["access_token"]
            body, ok = bodies[r["name"]]()
            if r["access"] == "public":
                want = ok
            elif who in ("anonymous", "disabled"):
                want = 401
            else:
                want = ok
            st, rh, out = w.call(r["method"], r["path"], body, token=token)
            expect_eq(st, want, f"{r['method']} {r['path']} as {who} ({out[:200]!r})")
            cells += 1
    print(f"# access matrix: {cells} cells over {len(auth_routes)} routes")


if __name__ == "__main__":
    h.run(globals())
