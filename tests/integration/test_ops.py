# SPDX-License-Identifier: MIT
"""test_ops.py: every process is observable. `settled work` serves /healthz, /readyz and /metrics on
SETTLED_OPS_LISTEN; the gauges of shared state (queue depth by provider and status, dead letters, the oldest row
still to do, Xero connections needing re-authorisation) are read from PostgreSQL by whichever process is scraped,
so a workers-only process and a serve without workers both report them right; per-process metrics and every log
line carry the instance id; HEAD works on /healthz and /readyz.

Why these can fail: before, `settled work` had no listener at all, the queue gauges were counted only by worker 0
of a process running workers (a serve with SETTLED_WORKERS=0 reported 0 whatever the queue held), and nothing named
the process in logs or metrics.
"""

import json
import socket
import time

import harness as h
import pipelinelib as pl
from harness import expect, expect_eq, expect_in


def post_stripe_events(db, n, prefix):
    """Stores n Stripe events (which no processor takes yet: they stay 'pending') through a real serve."""
    with h.Settled(db, env={"SETTLED_WORKERS": 0}) as s:
        for i in range(n):
            body = json.dumps({"id": f"evt_{prefix}_{i}", "object": "event", "type": "customer.updated",
                               "created": 1700000000, "data": {"object": {"id": f"cus_{prefix}_{i}"}}}).encode()
            status, _, _ = s.post_stripe(body)
            expect_eq(status, 200, f"stripe delivery {i}")


def get(port, path, method="GET"):
    conn = __import__("http.client").client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def metrics_of(port):
    status, _, body = get(port, "/metrics")
    expect_eq(status, 200, "GET /metrics")
    return h.parse_metrics(body.decode())


def wait_metric(port, name, want, timeout=15, **labels):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = h.metric_sum(metrics_of(port), name, **labels)
        if got == want:
            return
        time.sleep(0.3)
    raise h.Failure(f"{name}{labels} = {got}, want {want} (within {timeout} s)")


def test_workers_only_process_serves_ops_and_shared_gauges():
    db = h.new_database("ops_work")
    post_stripe_events(db, 5, "w")
    h.sql(db, "UPDATE inbox_events SET status = 'dead', last_error = 'test' WHERE event_id IN ('evt_w_0', 'evt_w_1')")
    # the workers process Stripe events: these wait, not due for an hour, so the gauges see them pending
    h.sql(db, "UPDATE inbox_events SET next_attempt_at = now() + interval '1 hour'")
    w = pl.Worker({"SETTLED_DATABASE_URL": db, "SETTLED_INSTANCE_ID": "work-test-1"})
    try:
        status, _, body = get(w.ops_port, "/healthz")
        expect_eq(status, 200, "settled work /healthz")
        status, _, body = get(w.ops_port, "/readyz")
        expect_eq(status, 200, f"settled work /readyz ({body!r})")
        expect_eq(json.loads(body)["instance"], "work-test-1", "/readyz names the instance")
        m = metrics_of(w.ops_port)
        expect_eq(h.metric_sum(m, "settled_queue_depth", provider="stripe", status="pending"), 3.0,
                  "queue depth of pending stripe rows, read from PostgreSQL by the workers-only process")
        expect_eq(h.metric_sum(m, "settled_dead_letters", provider="stripe"), 2.0, "dead letters")
        expect_eq(h.metric_sum(m, "settled_queue_depth", provider="xero", status="pending"), 0.0, "no xero rows")
        expect(h.metric_sum(m, "settled_oldest_pending_seconds", provider="stripe") >= 0, "oldest pending age")
        expect_eq(h.metric_sum(m, "settled_instance_info", instance_id="work-test-1"), 1.0, "instance info")
        # the per-process counters carry the instance id, the shared gauges do not (they are the same everywhere)
        keys = [k for k in m if k.startswith("settled_worker_events_total")]
        expect(keys and all('instance_id="work-test-1"' in k for k in keys),
               "per-process counters are labelled with the instance id", keys)
        expect(not any("instance_id" in k for k in m if k.startswith("settled_queue_depth")),
               "shared gauges carry no instance id")
        # more rows arrive: a later scrape (after the cache's few seconds) sees them
        h.sql(db, "UPDATE inbox_events SET status = 'pending' WHERE event_id = 'evt_w_0'")
        wait_metric(w.ops_port, "settled_queue_depth", 4.0, provider="stripe", status="pending")
        # only the ops endpoints are served there
        status, _, _ = get(w.ops_port, "/webhooks/stripe")
        expect_eq(status, 404, "webhook routes are not served on the ops listener")
        # a second workers-only process on the same ops address refuses to start, naming the key
        res = h.run_settled(["work"], {"SETTLED_DATABASE_URL": db,
                                       "SETTLED_OPS_LISTEN": f"127.0.0.1:{w.ops_port}"}, timeout=30)
        expect_eq(res.returncode, 1, "a second settled work on the same SETTLED_OPS_LISTEN")
        expect_in("SETTLED_OPS_LISTEN: cannot listen on", res.stderr, "its error")
    finally:
        w.stop()
    lines = [json.loads(l) for l in w.log().splitlines() if l.startswith("{")]
    expect(lines and all(r.get("instance") == "work-test-1" for r in lines),
           "every log line of settled work carries the instance id", [r for r in lines if "instance" not in r][:3])


def test_serve_without_workers_reports_the_shared_gauges():
    db = h.new_database("ops_serve")
    post_stripe_events(db, 3, "s")
    with h.Settled(db, env={"SETTLED_WORKERS": 0, "SETTLED_INSTANCE_ID": "web-1"}) as s:
        m = s.metrics()
        expect_eq(h.metric_sum(m, "settled_queue_depth", provider="stripe", status="pending"), 3.0,
                  "a serve running no workers reports the queue depth")
        expect_eq(h.metric_sum(m, "settled_http_requests_total", instance_id="web-1", route="healthz"), 1.0,
                  "request counters carry the instance id")
    lines = [json.loads(l) for l in s.log().splitlines() if l.startswith("{")]
    expect(lines and all(r.get("instance") == "web-1" for r in lines), "every log line of serve names the instance")


def test_default_instance_id_is_host_and_pid():
    db = h.new_database("ops_inst")
    with h.Settled(db, env={"SETTLED_WORKERS": 0}) as s:
        pid = s.proc.pid
        m = s.metrics()
    want = f"{socket.gethostname()[:63]}:{pid}"
    expect_eq(h.metric_sum(m, "settled_instance_info", instance_id=want), 1.0, f"instance id {want}")


def raw(port, request):
    """Sends request bytes on a fresh connection, reads until the server closes (Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(request)
        out = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_head_on_healthz_and_readyz():
    db = h.new_database("ops_head")
    with h.Settled(db, env={"SETTLED_WORKERS": 0}) as s:
        # readiness needs the loop's database connection, which may still be opening when /healthz first answers
        deadline = time.monotonic() + 10
        while s.request("GET", "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        for path in ("/healthz", "/readyz"):
            reply = raw(s.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            head, _, body = reply.partition(b"\r\n\r\n")
            expect(head.startswith(b"HTTP/1.1 200"), f"HEAD {path} status", head[:80])
            expect_in(b"content-type: application/json", head.lower(), f"HEAD {path} headers")
            expect_eq(body, b"", f"HEAD {path} sends no body")
        status, hdrs, _ = s.request("HEAD", "/metrics")
        expect_eq(status, 405, "HEAD /metrics is not offered")
        status, hdrs, _ = s.request("POST", "/healthz", b"")
        expect_eq(status, 405, "POST /healthz")
        expect_eq(hdrs.get("allow"), "GET, HEAD", "Allow of /healthz")
    w = pl.Worker({"SETTLED_DATABASE_URL": db})
    try:
        reply = raw(w.ops_port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        expect(reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\n"), "HEAD /healthz on settled work",
               reply[:200])
    finally:
        w.stop()


if __name__ == "__main__":
    h.run(globals())
