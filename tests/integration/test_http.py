# SPDX-License-Identifier: MIT
"""test_http.py: what every route shares, through the real binary: 404 / 405 / 413 / 400 replies as
problem+json with stable codes, X-Request-Id, /healthz, /readyz, /metrics, the organisation of the
default sources, and a clean exit on SIGTERM (every Settled.stop() checks it)."""

import json
import re
import time

import harness as h
from harness import expect, expect_eq, expect_in, expect_problem

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def count(db):
    return int(h.sql_value(db, "SELECT count(*) FROM webhook_events"))


def stripe_event(event_id, pad=0):
    """A small valid Stripe event, padded with spaces inside a string to reach a wanted size."""
    return (
        b'{"id":"' + event_id.encode() + b'","object":"event","type":"customer.updated",'
        b'"data":{"object":{"id":"cus_http"}},"pad":"' + b" " * pad + b'"}'
    )


def test_healthz():
    db = h.new_database("http_health")
    with h.Settled(db) as s:
        status, headers, body = s.get("/healthz")
        expect_eq(status, 200, "GET /healthz status")
        expect_eq(headers.get("content-type", "").split(";")[0], "application/json", "Content-Type")
        expect_eq(json.loads(body), {"status": "ok"}, "GET /healthz body")


def test_readyz():
    db = h.new_database("http_ready")
    with h.Settled(db, env={"SETTLED_REDIS_URL": None}) as s:
        # ready once the store is reachable: the pool connects in the background after start-up
        doc = wait_for_readyz(s, "postgres", "up")
        expect_eq((doc.get("postgres"), doc.get("redis")), ("up", "disabled"), f"readyz without Redis ({doc})")
    if h.redis_url():
        with h.Settled(db) as s:
            doc = wait_for_readyz(s, "redis", "up")
            expect_eq(doc.get("postgres"), "up", f"readyz with Redis ({doc})")
    else:
        print("# SETTLED_TEST_REDIS_URL is not set: readyz with a live Redis not checked")
    # Redis is optional: when it is down the gateway still takes webhooks and says so.
    dead = f"redis://127.0.0.1:{h.free_port()}"
    with h.Settled(db, env={"SETTLED_REDIS_URL": dead}) as s:
        doc = wait_for_readyz(s, "redis", "down")
        expect_eq(doc.get("postgres"), "up", f"readyz with Redis down ({doc})")
        status, _, _ = s.post_stripe(stripe_event("evt_redis_down"))
        expect_eq(status, 200, "a webhook while Redis is down")
    expect_eq(count(db), 1, "rows")


def wait_for_readyz(s, key, want, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = s.get("/readyz")
        doc = json.loads(body)
        if status == 200 and doc.get(key) == want:
            return doc
        if time.monotonic() > deadline:
            raise h.Failure(f"/readyz never said {key}={want!r} in {timeout}s: last {status} {doc!r}")
        time.sleep(0.1)


def test_method_not_allowed():
    db = h.new_database("http_405")
    with h.Settled(db) as s:
        for method, path in (
            ("GET", "/webhooks/stripe"),
            ("PUT", "/webhooks/xero"),
            ("DELETE", "/webhooks/gocardless"),
        ):
            resp = s.request(method, path)
            expect_problem(resp, 405, "method_not_allowed", f"{method} {path}")
            expect_eq(resp[1].get("allow"), "POST", f"{method} {path}: Allow")


def test_not_found():
    db = h.new_database("http_404")
    with h.Settled(db) as s:
        expect_problem(s.get("/nope"), 404, "not_found", "GET /nope")
        expect_problem(s.post("/webhooks/paypal", b"{}"), 404, "not_found", "POST /webhooks/paypal")
        expect_problem(s.post("/", b"{}"), 404, "not_found", "POST /")
        expect_problem(
            s.post_stripe(stripe_event("evt_404"), path="/webhooks/stripe/a/b"),
            404,
            ("not_found", "source_unknown"),
            "POST /webhooks/stripe/a/b",
        )
    expect_eq(count(db), 0, "rows")


def test_body_over_the_limit_is_413():
    db = h.new_database("http_413")
    limit = 2048
    base = len(stripe_event("evt_limit_ok"))
    exact = stripe_event("evt_limit_ok", pad=limit - base)
    expect_eq(len(exact), limit, "test body size")
    with h.Settled(db, env={"SETTLED_BODY_LIMIT": limit}) as s:
        status, _, body = s.post_stripe(exact)
        expect_eq(status, 200, f"a body of exactly SETTLED_BODY_LIMIT bytes (reply {body!r})")
        for size in (limit + 1, 10 * limit):
            big = stripe_event("evt_limit_over", pad=size - base)
            expect_problem(s.post_stripe(big), 413, "body_too_large", f"a signed body of {size} bytes")
        # the server is still fine afterwards
        expect_eq(s.get("/healthz")[0], 200, "healthz after 413s")
    expect_eq(h.sql_rows(db, "SELECT event_id FROM webhook_events"), [["evt_limit_ok"]], "stored event ids")


def test_malformed_json_after_a_good_signature():
    db = h.new_database("http_400")
    bad_bodies = [b'{"id": "evt_1", ', b"not json", b"[]", b'"string"', b"{}", b"\xff\xfe{}"]
    with h.Settled(db) as s:
        for bad in bad_bodies:
            expect_problem(s.post_stripe(bad), 400, ("body_malformed", "event_invalid"), f"stripe {bad!r}")
            expect_problem(
                s.post_gocardless(bad), 400, ("body_malformed", "event_invalid"), f"gocardless {bad!r}"
            )
            # Xero disables an endpoint that refuses a correctly signed payload (intent-to-receive): 200, and the
            # body is kept, as ignored (test_protocol_edges.py)
            status, headers, body = s.post_xero(bad)
            expect_eq((status, body), (200, b""), f"xero {bad!r}: status and (empty) body")
            expect("set-cookie" not in headers, f"xero {bad!r}: no cookie", headers)
        # plainly broken JSON is body_malformed, for each provider that has a body
        expect_problem(s.post_stripe(b'{"id": '), 400, "body_malformed", "stripe: truncated JSON")
        expect_problem(s.post_gocardless(b'{"events": ['), 400, "body_malformed", "gocardless: truncated JSON")
        # the envelope is right but an event is not
        expect_problem(
            s.post_gocardless(b'{"events":[{"id":"EV1"}]}'),
            400,
            ("event_invalid", "body_malformed"),
            "gocardless event without resource_type/action",
        )
    expect_eq(h.sql_rows(db, "SELECT provider, status, count(*) FROM webhook_events GROUP BY 1, 2"),
              [["xero", "ignored", str(len(bad_bodies))]], "rows after malformed bodies: only Xero's, ignored")


def test_request_id():
    db = h.new_database("http_reqid")
    with h.Settled(db) as s:
        mine = "abc-123.XYZ_9"
        status, headers, _ = s.post_stripe(stripe_event("evt_reqid"), headers={"X-Request-Id": mine})
        expect_eq(status, 200, "stored")
        expect_eq(headers.get("x-request-id"), mine, "a valid X-Request-Id is echoed")
        expect_eq(
            h.sql_value(db, "SELECT correlation_id FROM webhook_events WHERE event_id = $1", "evt_reqid"),
            mine,
            "the row's correlation_id",
        )
        longest = "r" * 128
        expect_eq(s.get("/healthz", {"X-Request-Id": longest})[1].get("x-request-id"), longest, "128 chars echoed")
        seen = set()
        for given in (None, "bad id!", "r" * 129, "semi;colon", "ünï"):
            hdrs = {} if given is None else {"X-Request-Id": given}
            for method, path in (("GET", "/healthz"), ("GET", "/nope"), ("POST", "/webhooks/stripe")):
                _, headers, _ = s.request(method, path, b"{}" if method == "POST" else None, hdrs)
                rid = headers.get("x-request-id")
                expect(rid is not None, f"{method} {path} with X-Request-Id {given!r}: has an X-Request-Id", headers)
                expect(REQUEST_ID.match(rid), f"generated X-Request-Id {rid!r} is 1-128 of [A-Za-z0-9._-]")
                expect(rid != given, f"an invalid X-Request-Id {given!r} is replaced")
                expect(rid not in seen, f"generated X-Request-Id {rid!r} is unique")
                seen.add(rid)
        # and a generated id lands in the row
        status, headers, _ = s.post_stripe(stripe_event("evt_reqid_gen"))
        expect_eq(
            h.sql_value(db, "SELECT correlation_id FROM webhook_events WHERE event_id = $1", "evt_reqid_gen"),
            headers.get("x-request-id"),
            "a generated id is the row's correlation_id",
        )


def test_metrics_after_traffic():
    db = h.new_database("http_metrics")
    with h.Settled(db) as s:
        for i in range(3):
            expect_eq(s.post_stripe(stripe_event(f"evt_m{i}"))[0], 200, f"stripe {i}")
        expect_eq(s.post_stripe(stripe_event("evt_m0"))[0], 200, "stripe duplicate")
        expect_eq(s.post_stripe(stripe_event("evt_mbad"), secret="whsec_nope")[0], 400, "stripe bad signature")
        gc = h.fixture("gocardless/sdk_webhook_body.json")
        expect_eq(s.post_gocardless(gc)[0], 204, "gocardless batch of 2")
        expect_eq(s.get("/nope")[0], 404, "not found")
        status, headers, body = s.get("/metrics")
        expect_eq(status, 200, "GET /metrics")
        expect_in("text/plain", headers.get("content-type", ""), "/metrics Content-Type")
        text = body.decode()
        m = h.parse_metrics(text)
        expect_eq(h.metric_sum(m, "settled_events_stored_total", provider="stripe"), 3.0, "stripe events stored")
        expect_eq(h.metric_sum(m, "settled_events_stored_total", provider="gocardless"), 2.0, "gocardless stored")
        ok = h.metric_sum(m, "settled_http_requests_total", status="200")
        expect(ok is not None and ok >= 4, "settled_http_requests_total{status=\"200\"} >= 4", ok)
        expect(
            (h.metric_sum(m, "settled_http_requests_total", status="400") or 0) >= 1,
            "settled_http_requests_total{status=\"400\"} >= 1",
            text,
        )
        expect(
            (h.metric_sum(m, "settled_http_requests_total", status="204") or 0) >= 1,
            "settled_http_requests_total{status=\"204\"} >= 1",
            text,
        )
        routes = [k for k in m if k.startswith("settled_http_requests_total{") and "route=" in k]
        expect(any("stripe" in k for k in routes), "a settled_http_requests_total sample for the stripe route", routes)
        expect(
            (h.metric_sum(m, "settled_intake_seconds_count") or 0) >= 4,
            "settled_intake_seconds_count counts the intake requests",
            text,
        )
        expect(h.metric_sum(m, "settled_intake_seconds_bucket") is not None, "settled_intake_seconds buckets", text)
        inf = [v for k, v in m.items() if k.startswith("settled_intake_seconds_bucket{") and 'le="+Inf"' in k]
        expect(inf and sum(inf) == h.metric_sum(m, "settled_intake_seconds_count"), "+Inf bucket equals count", text)
        expect((h.metric_sum(m, "settled_db_batch_size_count") or 0) >= 1, "settled_db_batch_size_count >= 1", text)
        expect(h.metric_sum(m, "settled_db_connections") is not None, "settled_db_connections is exported", text)
        expect_in("# TYPE settled_http_requests_total counter", text, "/metrics TYPE line")
        expect_in("# TYPE settled_intake_seconds histogram", text, "/metrics TYPE line")


def test_default_organisation():
    db = h.new_database("http_org")
    with h.Settled(db) as s:
        expect_eq(s.post_stripe(stripe_event("evt_org_default"))[0], 200, "stored")
    with h.Settled(db, env={"SETTLED_ORGANISATION": "acme-ltd"}) as s:
        expect_eq(s.post_stripe(stripe_event("evt_org_acme"))[0], 200, "stored")
    expect_eq(
        h.sql_rows(
            db,
            "SELECT e.event_id, o.slug FROM webhook_events e JOIN organisations o ON o.id = e.organisation_id"
            " ORDER BY e.id",
        ),
        [["evt_org_default", "default"], ["evt_org_acme", "acme-ltd"]],
        "organisation of each stored event",
    )


def test_sigterm_with_several_threads():
    db = h.new_database("http_threads")
    with h.Settled(db, threads=2) as s:
        for i in range(20):
            expect_eq(s.post_stripe(stripe_event(f"evt_thr{i}"))[0], 200, f"post {i}")
    # leaving the block sent SIGTERM and checked exit code 0 and a clean sanitizer log
    expect_eq(count(db), 20, "rows")


if __name__ == "__main__":
    h.run(globals())
