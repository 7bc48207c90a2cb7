# SPDX-License-Identifier: MIT
"""test_users.py: the portal's accounts on the real binary and a real PostgreSQL: `settled user add` (a password
from standard input, stored as a scrypt string that Python's own hashlib.scrypt recomputes from the password, so
the stored hash is real and not just well-formed; the C verifier is tested in tests/unit/domain/auth.c), `user add
--invite` (a one-time link whose token's SHA-256 is all the database keeps), `user list` (never a hash), `user
disable` (which revokes every refresh token); each bad input refused with a clear message, its exit code, and
nothing stored; and the SQL functions the portal's routes will call (schema/functions/auth.sql): refresh-token
rotation, the revocation of a whole family when a spent token comes back, sign-out, invitations and resets used
once and not after they expire, each change audited."""

import base64
import hashlib
import os
import pty
import re
import select
import subprocess
import time

import harness as h
from harness import expect, expect_eq, expect_in, expect_not_in

PASSWORD = "Tr0ub4dor&3-horse"


def settled(args, env, stdin=None, timeout=60):
    """run_settled with bytes (or text) on standard input (run_settled gives /dev/null)."""
    if isinstance(stdin, str):
        stdin = stdin.encode()
    res = subprocess.run([h.settled_bin()] + list(args), env=h.settled_env(env), input=stdin or b"",
                         capture_output=True, timeout=timeout)
    res.stdout = res.stdout.decode(errors="replace")
    res.stderr = res.stderr.decode(errors="replace")
    report = h.sanitizer_report(res.stderr)
    if report:
        raise h.Failure(f"`settled {' '.join(args)}` has a sanitizer report:\n{report}")
    return res


def setup():
    """A fresh database with two organisations, each with a customer. Returns (env, url, ids)."""
    url = h.new_database("users")
    ids = {}
    for slug in ("acme", "other"):
        ids[slug] = h.sql_value(url, "WITH o AS (INSERT INTO organisations (slug, name) VALUES ($1, $1) RETURNING id) "
                                     "SELECT id FROM o", slug)
        ids[slug + "_customer"] = h.sql_value(
            url, "WITH c AS (INSERT INTO customers (organisation_id, name) VALUES ($1, 'C') RETURNING id) "
                 "SELECT id FROM c", ids[slug])
    return {"SETTLED_DATABASE_URL": url}, url, ids


def add(env, *args, password=PASSWORD + "\n"):
    return settled(["user", "add"] + list(args), env, stdin=password)


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def expect_scrypt_of(stored, password, what):
    """stored is $scrypt$ln=15,r=8,p=1$salt$hash and hash = scrypt(password, salt) (Python's own scrypt)."""
    m = re.fullmatch(r"\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)", stored or "")
    expect(m is not None, f"{what}: the stored hash is a scrypt string", stored)
    ln, r, p = int(m[1]), int(m[2]), int(m[3])
    expect_eq((ln, r, p), (15, 8, 1), f"{what}: scrypt parameters")
    salt, digest = b64url_decode(m[4]), b64url_decode(m[5])
    expect_eq(len(salt), 16, f"{what}: salt bytes")
    expect_eq(len(digest), 32, f"{what}: hash bytes")
    again = hashlib.scrypt(password.encode(), salt=salt, n=1 << ln, r=r, p=p, maxmem=64 << 20, dklen=32)
    expect_eq(again, digest, f"{what}: the stored hash is scrypt of the password")
    wrong = hashlib.scrypt((password + "x").encode(), salt=salt, n=1 << ln, r=r, p=p, maxmem=64 << 20, dklen=32)
    expect(wrong != digest, f"{what}: another password gives another hash")


def user_count(url):
    return h.sql_value(url, "SELECT count(*) FROM users")


def test_help():
    for args in (["user", "--help"], ["user", "add", "--help"], ["help", "user"], ["user", "disable", "-h"]):
        res = h.run_settled(args, {"SETTLED_THREADS": "many"})  # a broken configuration does not hide the help
        expect_eq(res.returncode, 0, f"{args}: exit code")
        expect_in("settled user add --organisation SLUG", res.stdout, f"{args}: usage")
        expect_in("settled user disable", res.stdout, f"{args}: usage")


def test_add_list_and_the_stored_hash():
    env, url, ids = setup()
    res = add(env, "--organisation", "acme", "--email", "Boss@Acme.example", "--role", "admin", "--actor", "ops")
    expect_eq(res.returncode, 0, f"add admin: exit code (stderr {res.stderr!r})")
    expect_in("added user", res.stdout, "add admin: stdout")
    # a client, with the password ending in CRLF (the CR is not part of it either)
    res = add(env, "--organisation", "acme", "--email", "client@cust.example", "--role", "client", "--customer",
              ids["acme_customer"], password=PASSWORD + "\r\n")
    expect_eq(res.returncode, 0, f"add client: exit code (stderr {res.stderr!r})")
    for email in ("Boss@Acme.example", "client@cust.example"):
        stored = h.sql_value(url, "SELECT password_hash FROM users WHERE email = $1", email)
        expect_scrypt_of(stored, PASSWORD, email)
    rows = h.sql_rows(url, "SELECT email, email_normalised, role, customer_id, status, organisation_id FROM users "
                           "ORDER BY id")
    expect_eq(rows, [["Boss@Acme.example", "boss@acme.example", "admin", None, "active", ids["acme"]],
                     ["client@cust.example", "client@cust.example", "client", ids["acme_customer"], "active",
                      ids["acme"]]], "users rows")
    audit = h.sql_rows(url, "SELECT actor, action, entity_type, after::text FROM audit_log ORDER BY id")
    expect_eq([a[:3] for a in audit][0], ["cli:ops", "user.create", "user"], "audit of the admin")
    expect_eq(audit[1][1], "user.create", "audit of the client")
    expect(all("$scrypt" not in (a[3] or "") for a in audit), "no hash in the audit log", audit)
    expect_eq(h.sql_value(url, "SELECT audit_verify($1)", ids["acme"]), None, "the audit chain is whole")

    # list: every user, or one organisation's; never a hash
    res = settled(["user", "list"], env)
    expect_eq(res.returncode, 0, f"list: exit code (stderr {res.stderr!r})")
    expect_in("Boss@Acme.example", res.stdout, "list")
    expect_in("client@cust.example", res.stdout, "list")
    expect_in("(2 users)", res.stdout, "list count")
    expect_not_in("$scrypt", res.stdout, "list shows no hash")
    expect_not_in(PASSWORD, res.stdout + res.stderr, "list shows no password")
    res = settled(["user", "list", "--organisation", "other"], env)
    expect_eq(res.returncode, 0, "list other: exit code")
    expect_in("(0 users)", res.stdout, "list of an organisation without users")
    res = settled(["user", "list", "--organisation", "nope"], env)
    expect_eq(res.returncode, 1, "list of an unknown organisation: exit code")
    expect_in("unknown organisation nope", res.stderr, "list of an unknown organisation")


def test_bad_input_is_refused_and_stores_nothing():
    env, url, ids = setup()
    res = add(env, "--organisation", "acme", "--email", "taken@acme.example", "--role", "admin")
    expect_eq(res.returncode, 0, f"the first add (stderr {res.stderr!r})")
    cases = [
        (["--organisation", "nope", "--email", "a@b.example", "--role", "admin"], PASSWORD, 1,
         "unknown organisation nope"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "client", "--customer",
          ids["other_customer"]], PASSWORD, 1, "has no customer"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "client", "--customer", "999999"],
         PASSWORD, 1, "has no customer"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "client"], PASSWORD, 2, "needs --customer"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "admin", "--customer",
          ids["acme_customer"]], PASSWORD, 2, "leave out --customer"),
        (["--organisation", "acme", "--email", " TAKEN@acme.example ", "--role", "admin"], PASSWORD, 1,
         "already has a user with the email"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "admin"], "", 2, "10 to 1024 bytes"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "admin"], "short", 2, "10 to 1024 bytes"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "admin"], "aaaaaaaaaaaaaaaa", 2, "too weak"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "admin"], "x" * 2000, 2, "10 to 1024 bytes"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "root"], PASSWORD, 2,
         "--role must be admin or client"),
        (["--organisation", "acme", "--email", "not-an-address", "--role", "admin"], PASSWORD, 2,
         "not an email address"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "client", "--customer", "12x"], PASSWORD, 2,
         "--customer must be"),
        (["--organisation", "acme", "--role", "admin"], PASSWORD, 2, "are required"),
        (["--organisation", "acme", "--email", "a@b.example", "--role", "admin", "--bogus"], PASSWORD, 2,
         "unknown option --bogus"),
        (["--organisation", "acme", "--email", "a@b.example", "--role"], PASSWORD, 2, "--role needs a value"),
    ]
    for args, password, code, words in cases:
        res = add(env, *args, password=password + "\n")
        what = f"user add {' '.join(args)} (password {password[:12]!r})"
        expect_eq(res.returncode, code, f"{what}: exit code (stderr {res.stderr!r})")
        expect_in(words, res.stderr, f"{what}: stderr")
        for noise in ("ERROR", "SQLSTATE", "violat"):
            expect_not_in(noise, res.stderr, f"{what}: no SQL in the message")
        if len(password) >= 4:
            expect_not_in(password, res.stdout + res.stderr, f"{what}: the password is never echoed")
        expect_eq(user_count(url), "1", f"{what}: nothing stored")
    expect_eq(h.sql_value(url, "SELECT count(*) FROM invitations"), "0", "no invitation either")
    for args, words in ((["user"], "add, list, disable or reset"), (["user", "remove"], "unknown subcommand remove"),
                        (["user", "disable", "--organisation", "acme"], "are required")):
        res = settled(args, env)
        expect_eq(res.returncode, 2, f"{args}: exit code")
        expect_in(words, res.stderr, f"{args}: stderr")


def test_invite_prints_a_one_time_link():
    env, url, ids = setup()
    res = settled(["user", "add", "--organisation", "acme", "--email", "new@cust.example", "--role", "client",
                   "--customer", ids["acme_customer"], "--invite", "--portal-url", "https://portal.example/"], env)
    expect_eq(res.returncode, 0, f"invite: exit code (stderr {res.stderr!r})")
    m = re.search(r"https://portal\.example/invite#token=([A-Za-z0-9_-]{43})\n", res.stdout)
    expect(m is not None, "invite: the link", res.stdout)
    token = m[1]
    digest = hashlib.sha256(token.encode()).hexdigest()
    row = h.sql_rows(url, "SELECT digest, email, role, customer_id, expires_at - created_at, used_at FROM invitations")
    expect_eq(row, [[digest, "new@cust.example", "client", ids["acme_customer"], "3 days", None]],
              "the invitation keeps the token's digest only, 72 hours")
    expect_eq(user_count(url), "0", "an invitation makes no user")
    # the default link is on SETTLED_LISTEN
    res = settled(["user", "add", "--organisation", "acme", "--email", "boss2@acme.example", "--role", "admin",
                   "--invite"], dict(env, SETTLED_LISTEN="127.0.0.1:8099"))
    expect_eq(res.returncode, 0, f"invite admin: exit code (stderr {res.stderr!r})")
    expect_in("http://127.0.0.1:8099/invite#token=", res.stdout, "the default portal address")
    # SETTLED_PORTAL_URL, when set, is the base (as for the admin's POST /v1/admin/invitations)
    res = settled(["user", "add", "--organisation", "acme", "--email", "boss3@acme.example", "--role", "admin",
                   "--invite"], dict(env, SETTLED_PORTAL_URL="https://pay.acme.example/portal/"))
    expect_eq(res.returncode, 0, f"invite with SETTLED_PORTAL_URL: exit code (stderr {res.stderr!r})")
    expect_in("https://pay.acme.example/portal/invite#token=", res.stdout, "the configured portal address")
    # accepting it: once, and not an unknown token
    hashed = "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    first = h.sql_rows(url, "SELECT result, role, customer_id FROM auth_invitation_consume($1, $2, 'corr-1')",
                       digest, hashed)
    expect_eq(first, [["created", "client", ids["acme_customer"]]], "the first use creates the user")
    again = h.sql_value(url, "SELECT result FROM auth_invitation_consume($1, $2, 'corr-2')", digest, hashed)
    expect_eq(again, "used", "the second use")
    expect_eq(h.sql_value(url, "SELECT result FROM auth_invitation_consume($1, $2, 'c')", "0" * 64, hashed),
              "unknown", "an unknown token")
    expect_eq(user_count(url), "1", "one user from one invitation")
    # an expired invitation makes nothing
    res = settled(["user", "add", "--organisation", "acme", "--email", "late@acme.example", "--role", "admin",
                   "--invite"], env)
    late = hashlib.sha256(re.search(r"#token=(\S+)", res.stdout)[1].encode()).hexdigest()
    h.sql(url, "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE digest = $1", late)
    expect_eq(h.sql_value(url, "SELECT result FROM auth_invitation_consume($1, $2, 'c')", late, hashed), "expired",
              "an expired invitation")
    expect_eq(user_count(url), "1", "nothing from an expired invitation")
    # an invitation for an address that has a user is refused
    res = settled(["user", "add", "--organisation", "acme", "--email", "NEW@cust.example", "--role", "admin",
                   "--invite"], env)
    expect_eq(res.returncode, 1, f"invite a taken address: exit code (stderr {res.stderr!r})")
    expect_in("already has a user", res.stderr, "invite a taken address")


def on_terminal(args, env, typed):
    """Runs settled with its standard input and error on a new terminal, types each line of typed after each
    prompt, and returns (exit code, everything the terminal showed, stdout)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([h.settled_bin()] + list(args), env=h.settled_env(env), stdin=slave, stderr=slave,
                            stdout=subprocess.PIPE)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 30
    for line in typed:
        while b": " not in shown.split(b"\n")[-1] and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                shown += os.read(master, 4096)
        os.write(master, line.encode() + b"\n")
        time.sleep(0.2)
        shown += b"\n"  # the next prompt is on a line of its own
    out, _ = proc.communicate(timeout=60)
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.returncode, shown.decode(errors="replace"), out.decode(errors="replace")


def test_password_asked_twice_without_echo_on_a_terminal():
    env, url, ids = setup()
    code, shown, out = on_terminal(["user", "add", "--organisation", "acme", "--email", "tty@acme.example", "--role",
                                    "admin"], env, [PASSWORD, PASSWORD])
    expect_eq(code, 0, f"exit code (terminal {shown!r})")
    expect_in("Password: ", shown, "the first prompt")
    expect_in("Repeat it: ", shown, "the second prompt")
    expect_not_in(PASSWORD, shown, "the password is not echoed")
    expect_in("added user", out, "stdout")
    expect_scrypt_of(h.sql_value(url, "SELECT password_hash FROM users"), PASSWORD, "typed on a terminal")
    code, shown, out = on_terminal(["user", "add", "--organisation", "acme", "--email", "tty2@acme.example", "--role",
                                    "admin"], env, [PASSWORD, PASSWORD + "!"])
    expect_eq(code, 2, f"two different passwords: exit code (terminal {shown!r})")
    expect_in("the two passwords differ", shown, "two different passwords")
    expect_eq(user_count(url), "1", "nothing stored for two different passwords")


def sign_in(url, user_id, digest, ttl=3600):
    """auth_login_record as the login route calls it: the first refresh token of a new family."""
    rows = h.sql_rows(url, "SELECT result, family_id FROM auth_login_record($1, $2, $3, NULL, 'test-agent', "
                           "'127.0.0.1', 'corr-login')", user_id, digest, ttl)
    expect_eq(rows[0][0], "ok", "sign-in")
    return rows[0][1]


def rotate(url, old, new, ttl=3600):
    return h.sql_rows(url, "SELECT result, user_id, role, customer_id, family_id FROM auth_refresh_rotate($1, $2, $3, "
                           "'test-agent', '127.0.0.1', 'corr-refresh')", old, new, ttl)[0]


def d(c):
    return c * 64  # a digest-shaped value; the SQL never sees tokens


def test_refresh_rotation_and_family_revocation():
    env, url, ids = setup()
    res = add(env, "--organisation", "acme", "--email", "c@cust.example", "--role", "client", "--customer",
              ids["acme_customer"])
    expect_eq(res.returncode, 0, f"add (stderr {res.stderr!r})")
    uid = h.sql_value(url, "SELECT id FROM users")
    lookup = h.sql_rows(url, "SELECT user_id, role, customer_id, status FROM auth_login_lookup('acme', ' C@CUST.example')")
    expect_eq(lookup, [[uid, "client", ids["acme_customer"], "active"]], "login lookup, whatever the case")
    expect_eq(h.sql_rows(url, "SELECT * FROM auth_login_lookup('other', 'c@cust.example')"), [],
              "no user of that address in another organisation")
    expect_eq(h.sql_value(url, "SELECT last_login_at IS NOT NULL FROM users"), "f", "never signed in")

    fam = sign_in(url, uid, d("a"))
    other_fam = sign_in(url, uid, d("9"))  # a second device
    expect_eq(h.sql_value(url, "SELECT last_login_at IS NOT NULL FROM users"), "t", "last sign-in recorded")
    r = rotate(url, d("a"), d("b"))
    expect_eq(r, ["rotated", uid, "client", ids["acme_customer"], fam], "a -> b")
    r = rotate(url, d("b"), d("c"))
    expect_eq(r[0], "rotated", "b -> c")
    expect_eq(h.sql_value(url, "SELECT parent_digest FROM refresh_tokens WHERE digest = $1", d("c")), d("b"),
              "c's parent is b")
    # a spent token comes back: the whole family goes, c (the live one) with it
    r = rotate(url, d("a"), d("x"))
    expect_eq(r[0], "reused", "a again")
    expect_eq(r[4], fam, "the family that was revoked")
    expect_eq(h.sql_value(url, "SELECT count(*) FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL", fam),
              "0", "every token of the family is revoked")
    expect_eq(h.sql_value(url, "SELECT count(*) FROM refresh_tokens WHERE digest = $1", d("x")), "0",
              "the reuse issued nothing")
    expect_eq(rotate(url, d("c"), d("y"))[0], "revoked", "the family's live token no longer works")
    expect_eq(rotate(url, d("f"), d("y"))[0], "unknown", "an unknown token")
    expect_eq(h.sql_value(url, "SELECT count(*) FROM audit_log WHERE action = 'user.refresh_reused'"), "1",
              "the reuse is audited")
    # the other device's family is untouched
    expect_eq(rotate(url, d("9"), d("8"))[0], "rotated", "another family lives on")
    # expiry
    h.sql(url, "UPDATE refresh_tokens SET issued_at = now() - interval '2 hours', "
               "expires_at = now() - interval '1 second' WHERE digest = $1", d("8"))
    expect_eq(rotate(url, d("8"), d("7"))[0], "expired", "an expired token")
    # sign-out revokes the family of the token
    fam3 = sign_in(url, uid, d("1"))
    expect_eq(rotate(url, d("1"), d("2"))[0], "rotated", "1 -> 2")
    expect_eq(h.sql_value(url, "SELECT auth_refresh_revoke($1, 'user:' || $2, 'corr-logout')", d("2"), uid), "1",
              "sign-out revokes the live token")
    expect_eq(rotate(url, d("2"), d("3"))[0], "revoked", "after sign-out")
    expect_eq(h.sql_value(url, "SELECT auth_refresh_revoke($1, 'x', 'c')", d("2")), "0", "signing out twice")
    expect(fam3 != fam and fam3 != other_fam, "each sign-in starts a family")
    expect_eq(h.sql_value(url, "SELECT audit_verify($1)", ids["acme"]), None, "the audit chain is whole")


def test_disable_revokes_every_refresh_token():
    env, url, ids = setup()
    add(env, "--organisation", "acme", "--email", "c@cust.example", "--role", "client", "--customer",
        ids["acme_customer"])
    add(env, "--organisation", "acme", "--email", "keep@acme.example", "--role", "admin")
    uid = h.sql_value(url, "SELECT id FROM users WHERE email = 'c@cust.example'")
    keep = h.sql_value(url, "SELECT id FROM users WHERE email = 'keep@acme.example'")
    sign_in(url, uid, d("a"))
    sign_in(url, uid, d("b"))
    rotate(url, d("b"), d("c"))
    sign_in(url, keep, d("e"))
    res = settled(["user", "disable", "--organisation", "acme", "--email", "C@cust.example"], env)
    expect_eq(res.returncode, 0, f"disable: exit code (stderr {res.stderr!r})")
    expect_in("disabled C@cust.example of acme; revoked 2 refresh tokens", res.stdout, "disable: stdout")
    expect_eq(h.sql_value(url, "SELECT status FROM users WHERE id = $1", uid), "disabled", "status")
    expect_eq(h.sql_value(url, "SELECT count(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL", uid),
              "0", "no live token of the disabled user")
    expect_eq(h.sql_value(url, "SELECT count(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL",
                          keep), "1", "another user's token lives")
    expect_eq(rotate(url, d("c"), d("z"))[0], "revoked", "the disabled user cannot refresh")
    expect_eq(h.sql_value(url, "SELECT result FROM auth_login_record($1, $2, 3600, NULL, NULL, NULL, 'c')", uid,
                          d("f")), "inactive", "nor sign in")
    actions = [r[0] for r in h.sql_rows(url, "SELECT action FROM audit_log WHERE entity_id = $1 ORDER BY id", uid)]
    expect_in("user.disable", actions, "the disable is audited")
    expect_in("user.sessions_revoked", actions, "the revocation is audited")
    res = settled(["user", "disable", "--organisation", "acme", "--email", "c@cust.example"], env)
    expect_eq(res.returncode, 0, "disable twice: exit code")
    expect_in("already disabled", res.stdout, "disable twice")
    for org, email, words in (("acme", "nobody@acme.example", "has no user with the email"),
                              ("nope", "c@cust.example", "unknown organisation nope"),
                              ("other", "c@cust.example", "has no user with the email")):
        res = settled(["user", "disable", "--organisation", org, "--email", email], env)
        expect_eq(res.returncode, 1, f"disable {org} {email}: exit code")
        expect_in(words, res.stderr, f"disable {org} {email}")


def test_password_reset_once_and_not_late():
    env, url, ids = setup()
    add(env, "--organisation", "acme", "--email", "r@acme.example", "--role", "admin")
    uid = h.sql_value(url, "SELECT id FROM users")
    sign_in(url, uid, d("a"))
    expect_eq(h.sql_value(url, "SELECT auth_reset_create($1, 'nobody@acme.example', $2, 'c')", ids["acme"], d("0")),
              None, "no reset for an unknown address")
    expect_eq(h.sql_value(url, "SELECT auth_reset_create($1, 'R@acme.example', $2, 'c')", ids["acme"], d("1")), uid,
              "a reset")
    expect_eq(h.sql_value(url, "SELECT auth_reset_create($1, 'r@acme.example', $2, 'c')", ids["acme"], d("2")), uid,
              "another reset")
    new_hash = "$scrypt$ln=15,r=8,p=1$BBBBBBBBBBBBBBBBBBBBBB$BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
    expect_eq(h.sql_value(url, "SELECT expires_at - created_at FROM password_resets WHERE digest = $1", d("1")),
              "00:30:00", "valid 30 minutes")
    expect_eq(h.sql_rows(url, "SELECT * FROM auth_reset_consume($1, $2, 'c')", d("1"), new_hash), [["reset", uid]],
              "the reset")
    expect_eq(h.sql_value(url, "SELECT password_hash FROM users"), new_hash, "the new hash")
    expect_eq(h.sql_value(url, "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL"), "0",
              "a reset ends every session")
    expect_eq(h.sql_value(url, "SELECT result FROM auth_reset_consume($1, $2, 'c')", d("1"), new_hash), "used",
              "used once")
    expect_eq(h.sql_value(url, "SELECT result FROM auth_reset_consume($1, $2, 'c')", d("2"), new_hash), "used",
              "the other open reset is spent with it")
    h.sql(url, "INSERT INTO password_resets (digest, user_id, created_at, expires_at) "
               "VALUES ($1, $2, now() - interval '31 minutes', now() - interval '1 minute')", d("3"), uid)
    expect_eq(h.sql_value(url, "SELECT result FROM auth_reset_consume($1, $2, 'c')", d("3"), new_hash), "expired",
              "an expired reset")


def test_self_registration_waits_for_approval():
    env, url, ids = setup()
    hashed = "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    reg = "SELECT result FROM auth_register($1, $2, $3, $4, 'Subject', 'text', '<p>html</p>', 'c')"
    expect_eq(h.sql_value(url, "SELECT self_registration FROM organisations WHERE slug = 'acme'"), "off",
              "off by default")
    expect_eq(h.sql_value(url, reg, "acme", "s@x.example", hashed, d("1")), "closed", "no sign-up while off")
    expect_eq(h.sql_value(url, reg, "nope", "s@x.example", hashed, d("1")), "closed",
              "an unknown organisation looks the same")
    h.sql(url, "UPDATE organisations SET self_registration = 'approval' WHERE slug = 'acme'")
    rows = h.sql_rows(url, reg.replace("SELECT result", "SELECT result, user_id, notification_id"), "acme",
                      "s@x.example", hashed, d("1"))
    expect_eq(rows[0][0], "pending", "a sign-up")
    uid = rows[0][1]
    expect_eq(h.sql_rows(url, "SELECT kind, recipient, user_id, customer_id, status FROM notifications WHERE id = $1",
                         rows[0][2]), [["email_verification", "s@x.example", uid, None, "pending"]],
              "its verification e-mail, to the user")
    expect_eq(h.sql_value(url, reg, "acme", "S@X.example", hashed, d("2")), "email_taken", "the same address again")
    expect_eq(h.sql_rows(url, "SELECT role, customer_id, status FROM auth_login_lookup('acme', 's@x.example')"),
              [["client", None, "pending_verification"]], "unverified: the login route refuses it")
    expect_eq(h.sql_value(url, "SELECT result FROM auth_login_record($1, $2, 3600, NULL, NULL, NULL, 'c')", uid,
                          d("a")), "inactive", "no session while unverified")
    res = settled(["user", "disable", "--organisation", "acme", "--email", "s@x.example"], env)
    expect_eq(res.returncode, 1, f"disabling a sign-up: exit code (stderr {res.stderr!r})")
    expect_in("is a sign-up still waiting", res.stderr, "disabling a sign-up: why not")
    expect_eq(h.sql_value(url, "SELECT status FROM users WHERE id = $1", uid), "pending_verification", "unchanged")
    expect_eq(h.sql_value(url, "SELECT auth_user_approve($1, $2, $3, 'cli:t', 'c')", ids["acme"], uid,
                          ids["acme_customer"]), "unknown", "an unverified account cannot be approved")
    expect_eq(h.sql_rows(url, "SELECT result, status FROM auth_verify_email($1, 'c')", d("1")),
              [["verified", "pending_approval"]], "verified; no customer has the address")
    expect_eq(h.sql_value(url, "SELECT result FROM auth_verify_email($1, 'c')", d("1")), "used", "once")
    expect_eq(h.sql_value(url, "SELECT result FROM auth_login_record($1, $2, 3600, NULL, NULL, NULL, 'c')", uid,
                          d("a")), "inactive", "no session while pending")
    expect_eq(h.sql_value(url, "SELECT auth_user_approve($1, $2, $3, 'cli:t', 'c')", ids["acme"], uid,
                          ids["other_customer"]), "customer_unknown", "another organisation's customer")
    expect_eq(h.sql_value(url, "SELECT auth_user_approve($1, $2, $3, 'cli:t', 'c')", ids["other"], uid,
                          ids["other_customer"]), "unknown", "approved by another organisation")
    expect_eq(h.sql_value(url, "SELECT auth_user_approve($1, $2, $3, 'cli:t', 'c')", ids["acme"], uid,
                          ids["acme_customer"]), "approved", "approved")
    expect_eq(h.sql_rows(url, "SELECT customer_id, status FROM users WHERE id = $1", uid),
              [[ids["acme_customer"], "active"]], "bound to its customer")
    expect_eq(h.sql_value(url, "SELECT auth_user_approve($1, $2, $3, 'cli:t', 'c')", ids["acme"], uid,
                          ids["acme_customer"]), "unknown", "approving twice")


if __name__ == "__main__":
    h.run(globals())
