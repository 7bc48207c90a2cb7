# SPDX-License-Identifier: MIT
"""test_config.py: the configuration contract of the binary (`settled check-config`, `serve`,
`migrate`): a bad setting exits 1 with "settled: SETTLED_KEY: message", a secret is never printed,
and every key --list-keys names is documented in docs/configuration.md."""

import os
import re
import time

import harness as h
from harness import expect, expect_eq, expect_in, expect_not_in

SECRETS = {
    "SETTLED_STRIPE_WEBHOOK_SECRETS": "whsec_cfgtest_stripe_AAAA1111,whsec_cfgtest_stripe_BBBB2222",
    "SETTLED_XERO_WEBHOOK_KEY": "cfgtest-xero-key-CCCC3333",
    "SETTLED_GOCARDLESS_WEBHOOK_SECRETS": "cfgtest-gocardless-DDDD4444",
    "SETTLED_GOCARDLESS_WEBHOOK_SECRETS__ACME": "cfgtest-gocardless-acme-EEEE5555",
    "SETTLED_DATABASE_URL": "postgresql://settled:cfgtest-pgpass-FFFF6666@127.0.0.1:1/nowhere",
    "SETTLED_REDIS_URL": "redis://:cfgtest-redispass-GGGG7777@127.0.0.1:1/3",
    "SETTLED_XERO_API_BASE": "http://apiuser:cfgtest-apipass-HHHH8888@127.0.0.1:1/xero",
}
SECRET_VALUES = [
    "whsec_cfgtest_stripe_AAAA1111",
    "whsec_cfgtest_stripe_BBBB2222",
    "cfgtest-xero-key-CCCC3333",
    "cfgtest-gocardless-DDDD4444",
    "cfgtest-gocardless-acme-EEEE5555",
    "cfgtest-pgpass-FFFF6666",
    "cfgtest-redispass-GGGG7777",
    "cfgtest-apipass-HHHH8888",
]


def expect_no_secret(res, what):
    out = res.stdout + res.stderr
    for value in SECRET_VALUES:
        expect_not_in(value, out, f"{what}: output")


def expect_rejected(res, key, what):
    expect_eq(res.returncode, 1, f"{what}: exit code (stderr {res.stderr!r})")
    expect(
        re.search(r"^settled: " + re.escape(key) + r": \S", res.stderr, re.M),
        f'{what}: stderr has a line "settled: {key}: message"',
        res.stderr,
    )


def test_check_config_accepts_and_redacts():
    res = h.run_settled(["check-config"], SECRETS)
    expect_eq(res.returncode, 0, f"check-config exit code (stderr {res.stderr!r})")
    expect_no_secret(res, "check-config")
    expect_in("SETTLED_STRIPE_WEBHOOK_SECRETS=", res.stdout, "check-config lists the Stripe secrets setting")
    expect_in("SETTLED_GOCARDLESS_WEBHOOK_SECRETS__ACME=", res.stdout, "check-config lists the acme source")
    # the passwords inside URLs show as ***, the rest of each URL as it is
    for line in (
        "SETTLED_DATABASE_URL=postgresql://settled:***@127.0.0.1:1/nowhere",
        "SETTLED_REDIS_URL=redis://:***@127.0.0.1:1/3",
        "SETTLED_XERO_API_BASE=http://apiuser:***@127.0.0.1:1/xero",
    ):
        expect_in(line, res.stdout.splitlines(), "check-config output")


def test_bad_values_name_their_key():
    cases = [
        ("SETTLED_BODY_LIMIT", "lots"),
        ("SETTLED_BODY_LIMIT", "10"),  # below the minimum
        ("SETTLED_LISTEN", "not-a-listen-address"),
        ("SETTLED_LISTEN", "127.0.0.1:70000"),
        ("SETTLED_THREADS", "-1"),
        ("SETTLED_STRIPE_TOLERANCE", "5 minutes"),
        ("SETTLED_ORGANISATION", "Not A Slug"),
        ("SETTLED_LOG_LEVEL", "chatty"),
    ]
    for key, value in cases:
        env = dict(SECRETS, **{key: value})
        res = h.run_settled(["check-config"], env)
        expect_rejected(res, key, f"{key}={value!r}")
        expect_no_secret(res, f"{key}={value!r}")


def test_unknown_key_is_rejected():
    res = h.run_settled(["check-config"], {"SETTLED_NO_SUCH_SETTING": "1"})
    expect_rejected(res, "SETTLED_NO_SUCH_SETTING", "an unknown SETTLED_ key")


def test_bad_secret_is_never_echoed():
    for key, value in (
        ("SETTLED_STRIPE_WEBHOOK_SECRETS", "whsec_cfgtest_stripe_AAAA1111,,whsec_cfgtest_stripe_BBBB2222"),
        ("SETTLED_GOCARDLESS_WEBHOOK_SECRETS__ACME", "cfgtest-gocardless-acme-EEEE5555,"),
        ("SETTLED_XERO_WEBHOOK_KEY", "cfgtest-xero-key-CCCC3333" * 200),
    ):
        env = dict(SECRETS, **{key: value})
        res = h.run_settled(["check-config"], env)
        expect_rejected(res, key, f"a bad {key}")
        expect_no_secret(res, f"a bad {key}")


def test_serve_refuses_a_bad_setting_at_once():
    started = time.monotonic()
    res = h.run_settled(["serve"], dict(SECRETS, SETTLED_LISTEN="127.0.0.1:0x50"), timeout=30)
    expect_rejected(res, "SETTLED_LISTEN", "serve with a bad SETTLED_LISTEN")
    expect_no_secret(res, "serve with a bad SETTLED_LISTEN")
    expect(time.monotonic() - started < 10, "serve exits promptly on a bad setting")


def test_migrate_needs_a_database_url():
    res = h.run_settled(["migrate"], {})
    expect_eq(res.returncode, 1, f"migrate without SETTLED_DATABASE_URL: exit code (stderr {res.stderr!r})")
    expect_in("SETTLED_DATABASE_URL", res.stderr, "migrate without SETTLED_DATABASE_URL: stderr")


def test_migrate_twice_changes_nothing():
    db = h.new_database("cfg_migrate")  # migrated once
    tables = h.sql(db, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'")
    res = h.run_settled(["migrate"], {"SETTLED_DATABASE_URL": db})
    expect_eq(res.returncode, 0, f"second migrate: exit code (stderr {res.stderr!r})")
    expect_in("inbox_events", tables, "tables after migrate")
    expect_eq(h.sql_value(db, "SELECT relkind FROM pg_class WHERE relname = 'webhook_events'"), "v",
              "webhook_events, the operators' view of the inbox")
    expect_eq(
        h.sql(db, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'"),
        tables,
        "tables after a second migrate",
    )


def test_list_keys_are_documented():
    res = h.run_settled(["check-config", "--list-keys"], {})
    expect_eq(res.returncode, 0, f"--list-keys exit code (stderr {res.stderr!r})")
    keys = [line.strip() for line in res.stdout.splitlines() if line.strip() and not line.startswith("#")]
    for key in (
        "SETTLED_LISTEN",
        "SETTLED_DATABASE_URL",
        "SETTLED_REDIS_URL",
        "SETTLED_THREADS",
        "SETTLED_BODY_LIMIT",
        "SETTLED_STRIPE_TOLERANCE",
        "SETTLED_ORGANISATION",
        "SETTLED_STRIPE_WEBHOOK_SECRETS",
        "SETTLED_XERO_WEBHOOK_KEY",
        "SETTLED_GOCARDLESS_WEBHOOK_SECRETS",
    ):
        expect_in(key, keys, "--list-keys")
    for key in keys:
        expect(re.match(r"^SETTLED_[A-Z0-9_]+(__<SOURCE>)?$", key), "a listed key looks like SETTLED_NAME", key)
    doc_path = os.path.join(h.source_dir(), "docs", "configuration.md")
    expect(os.path.exists(doc_path), "docs/configuration.md exists", doc_path)
    doc = open(doc_path, encoding="utf-8").read()
    missing = [k for k in keys if k.replace("__<SOURCE>", "") not in doc]
    expect_eq(missing, [], "keys of --list-keys missing from docs/configuration.md")


def test_run_time_failures_refused_at_start():
    """check-config and serve refuse, at start and naming the key, what would only fail later: a secret key that
    is not 32 random bytes, a URL without a usable host, Xero scopes without offline_access, an HS256 key
    shorter than 32 bytes, a JWT algorithm outside HS256/RS256/ES256; the value is never echoed."""
    cases = [
        ("SETTLED_SECRET_KEY", "cfgtest-passphrase-IIII9999", "44 base64 characters or 64 hex digits"),
        ("SETTLED_SECRET_KEY", "A" * 43 + "=", "repeat too much to be random"),
        ("SETTLED_XERO_API_BASE", "http://cfgtest-JJJJ0000:99999/", "port from 1 to 65535"),
        ("SETTLED_XERO_REDIRECT_URI", "https:///v1/xero/callback", "must have a host"),
        ("SETTLED_REDIS_URL", "cache.example:6379", "redis://"),
        ("SETTLED_XERO_SCOPES", "accounting.transactions accounting.contacts", "offline_access"),
        ("SETTLED_JWT_SECRET", "cfgtest-jwt-KKKK1111", "at least 32 bytes"),
        ("SETTLED_JWT_ALG", "HS384", "must be HS256, RS256 or ES256"),
    ]
    for key, value, words in cases:
        for cmd in (["check-config"], ["serve"]):
            env = dict(SECRETS, SETTLED_LISTEN="127.0.0.1:1", **{key: value})
            res = h.run_settled(cmd, env, timeout=30)
            what = f"{cmd[0]} with a bad {key}"
            expect_rejected(res, key, what)
            expect_in(words, res.stderr, f"{what}: stderr")
            expect_no_secret(res, what)
            if key != "SETTLED_XERO_SCOPES":
                expect_not_in(value, res.stderr, f"{what}: the value is not echoed")


if __name__ == "__main__":
    h.run(globals())
