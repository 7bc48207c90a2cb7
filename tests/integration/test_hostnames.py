# SPDX-License-Identifier: MIT
"""test_hostnames.py: SETTLED_DATABASE_URL and SETTLED_REDIS_URL given with a host name (localhost) instead
of an address: the event loops resolve it off the loop (gateway/infra/resolve.c) and hand libpq and hiredis
the address, and a webhook goes through end to end, stored and answered 200."""

import json
import time
import urllib.parse

import harness as h
from harness import expect, expect_eq


def with_host(url, host):
    """url with its host replaced by host (user, password, port, path and query kept)."""
    u = urllib.parse.urlsplit(url)
    userinfo = u.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + host + (f":{u.port}" if u.port else "")
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def wait_for_ready(s, want_redis, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = s.get("/readyz")
        doc = json.loads(body)
        if status == 200 and doc.get("postgres") == "up" and doc.get("redis") == want_redis:
            return doc
        if time.monotonic() > deadline:
            raise h.Failure(f"/readyz never said postgres up, redis {want_redis} in {timeout}s: last {status} {doc!r}")
        time.sleep(0.1)


def test_webhook_with_host_names():
    db = h.new_database("hostnames")
    named_db = with_host(db, "localhost")
    expect("@localhost:" in named_db, "the database URL names localhost", named_db)
    env = {"SETTLED_REDIS_URL": with_host(h.redis_url(), "localhost") if h.redis_url() else None}
    body = (
        b'{"id":"evt_hostname_1","object":"event","type":"customer.updated",'
        b'"data":{"object":{"id":"cus_hostname"}}}'
    )
    # two loops: each resolves on its own, and neither blocks on it
    with h.Settled(named_db, env=env, threads=2) as s:
        wait_for_ready(s, "up" if h.redis_url() else "disabled")
        status, _, reply = s.post_stripe(body)
        expect_eq(status, 200, f"a webhook with SETTLED_DATABASE_URL={named_db} (body {reply[:200]!r})")
        expect_eq(json.loads(reply), {"received": True}, "the reply")
        # a second delivery on a fresh connection may land on the other loop
        status, _, _ = s.post_stripe(body.replace(b"evt_hostname_1", b"evt_hostname_2"))
        expect_eq(status, 200, "a second webhook")
        log = s.log()
    expect_eq(
        h.sql_value(db, "SELECT string_agg(event_id, ',' ORDER BY event_id) FROM webhook_events"),
        "evt_hostname_1,evt_hostname_2",
        "stored events",
    )
    expect("cannot resolve" not in log, "no resolution failure in the log", log[-2000:])


if __name__ == "__main__":
    h.run(globals())
