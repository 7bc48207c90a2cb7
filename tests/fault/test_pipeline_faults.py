# SPDX-License-Identifier: MIT
"""test_pipeline_faults.py: the processing pipeline under faults, through the real binary, a real
PostgreSQL, Redis and the project's mock Xero (runs serially: it measures rates and stops Redis).

- a 429 storm against two settled processes sharing one Redis, with small limits on both sides: the
  mock sees no violation, never more calls in flight or in any 60 s than the limits, and every event
  converges to the mock's final values;
- Redis stopped mid-run: events are processed under the local fallback limits (the gauge says so), none
  is lost, and the shared limits come back with Redis;
- kill -9 of a worker holding leased rows: another worker takes them once the lease expires, and the
  lost attempt is counted.

Why these can fail: a quota that is not shared, or not honoured after a 429, makes the mock count
violations or a window above the limit; a worker that gives up when Redis is down leaves rows undone;
a lease that is never reclaimed (or reclaimed too early) leaves rows processing (or done before expiry).
Set PIPELINE_SEED to replay the shuffles.
"""
import os
import random
import socket
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness as h  # noqa: E402
import pipelinelib as pl  # noqa: E402
from harness import expect, expect_eq, expect_in  # noqa: E402

_mock = None


def mock():
    global _mock
    pl.require("SETTLED_TEST_PG_URL", "SETTLED_TEST_REDIS_URL", "SETTLED_BIN", "SETTLED_SOURCE_DIR")
    if _mock is None:
        _mock = pl.Mock()
    return _mock


def _seed():
    seed = int(os.environ.get("PIPELINE_SEED") or time.time_ns() % 1_000_000)
    print(f"# PIPELINE_SEED={seed}")
    return random.Random(seed)


def _total(k, version):
    return f"{version * 1000 + k}.{(k * 7) % 100:02d}"


def _put_invoices(m, t, ids, version, updated_ms):
    for k, iid in enumerate(ids):
        m.put(t, "invoices", iid, pl.invoice(iid, updated_ms, _total(k, version), status=f"V{version}"))


def _mirror(db, t, ids):
    rows = h.sql_rows(db, "SELECT invoice_id::text, total::text, status FROM xero_invoices WHERE tenant_id = $1", t)
    got = {r[0]: (r[1], r[2]) for r in rows}
    return [got.get(i) for i in ids]


def _expect_mirror(db, t, ids, version, what):
    expect_eq(_mirror(db, t, ids), [(pl.n4(_total(k, version)), f"V{version}") for k in range(len(ids))], what)


# ---------------------------------------------------------------------------------------------------
# 7. A 429 storm under small limits, two processes, one Redis

STORM_DEADLINE = 150  # seconds for the whole run to converge


def test_429_storm_two_processes_stay_inside_the_limits():
    """1000 events for 50 invoices of one tenant (20 per invoice, each with its own eventDateUtc),
    streamed in 100 deliveries while a `settled serve` (2 workers) and a `settled work` (2 workers)
    process them with batches of 10 and no coalescing delay. Limits are 2 calls in flight and 20 a
    minute, at the mock and in settled. The mock answers 429 (Retry-After 1, minute) to the first 6
    calls, and to 6 more after the invoices change half-way; every other call takes 400 ms. Demand is
    far above 20 calls a minute, so the shared quota must pace both processes: the mock reports
    violations == 0, max_concurrent <= 2, max_calls_in_any_60s_window <= 20, and every row ends done
    with every invoice at its final version. About 65 s: one full minute window has to roll."""
    m = mock()
    rng = _seed()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_storm")
    m.ctl("PUT", "app", {"limits": {"concurrent": 2, "minute": 20}})
    ids = [str(uuid.uuid4()) for _ in range(50)]
    _put_invoices(m, t, ids, 1, pl.BASE_MS)
    # the first 6 calls get a 429; every other call takes 400 ms, so calls overlap and the concurrency
    # limit matters
    storm = [{"mode": "429", "count": 6, "retry_after": 1, "problem": "minute", "tenant": t},
             {"mode": "slow", "delay_ms": 400, "count": 0, "tenant": t}]
    m.faults(storm)
    m.ctl("DELETE", "stats")
    env = pl.settled_env(m, db, SETTLED_WORKERS=2, SETTLED_WORKER_BATCH=10, SETTLED_XERO_COALESCE_MS=0,
                         SETTLED_XERO_LIMIT_CONCURRENT=2, SETTLED_XERO_LIMIT_MINUTE=20)
    started = time.monotonic()
    serve = h.Settled(db, env=env, threads=1)
    work = pl.Worker(env)

    def stream(deliveries, first):
        for d in range(first, first + deliveries):
            events = [pl.xero_event(t, ids[(d * 10 + j) % 50], "INVOICE") for j in range(10)]
            rng.shuffle(events)
            pl.post(serve, pl.delivery(events, seq=d * 10 + 1), f"delivery {d}")
            time.sleep(0.08)

    stream(60, 0)  # 600 events
    # the first storm has been answered and the first minute's quota is being used
    pl.wait_for(lambda: m.tenant_stats(t).get("sent_429_fault", 0) >= 6, 60, "the first 6 injected 429s")
    # Xero changes every invoice, and a second storm comes with the next calls
    _put_invoices(m, t, ids, 2, pl.BASE_MS + 3600 * 1000)
    m.faults(storm)
    stream(40, 60)  # 400 more events, after the change
    counts = pl.wait_drained(db, max(10, STORM_DEADLINE - (time.monotonic() - started)),
                             "all 1000 events to be processed", expect_rows=1000)
    took = time.monotonic() - started
    serve_calls = sum(v for k, v in serve.metrics().items() if k.startswith("settled_xero_api_calls_total"))
    pl.stop_all(work, serve)

    stats = m.stats()
    ts = stats["tenants"].get(t) or {}
    print(f"# storm: converged in {took:.1f} s; {ts.get('calls_total')} calls ({serve_calls:.0f} by serve), "
          f"max {ts.get('max_calls_in_any_60s_window')} in 60 s, max {ts.get('max_concurrent')} in flight, "
          f"statuses {ts.get('statuses')}")
    expect_eq(counts, {"done": 1000}, "inbox rows")
    expect_eq(stats["violations"], 0, f"violations at the mock (stats {ts})")
    expect(ts["max_concurrent"] <= 2, "calls in flight at once <= 2", ts["max_concurrent"])
    expect(ts["max_calls_in_any_60s_window"] <= 20, "calls in any 60 s <= 20", ts["max_calls_in_any_60s_window"])
    expect_eq(ts["sent_429_fault"], 12, "injected 429s answered (both storms happened)")
    expect_eq(ts["sent_429_limit"], 0, "429s for a real limit")
    expect(ts["calls_total"] > 20, "the demand exceeded one minute's quota (the limit was binding)",
           ts["calls_total"])
    expect(0 < serve_calls < ts["calls_total"], "both processes called Xero (serve's calls vs all calls)",
           (serve_calls, ts["calls_total"]))
    _expect_mirror(db, t, ids, 2, "the 50 invoices hold the mock's final version")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM webhook_events WHERE attempts > 10"), "0",
              "rate limits cost no attempts")


# ---------------------------------------------------------------------------------------------------
# 8. Redis stopped mid-run


def _redis_keys(port, pattern):
    """KEYS pattern on the Redis at port (a minimal RESP client); [] if it cannot answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            p = pattern.encode()
            s.sendall(b"*2\r\n$4\r\nKEYS\r\n$%d\r\n%s\r\n" % (len(p), p))
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                lines = data.split(b"\r\n")
                if lines[0].startswith(b"*"):
                    n = int(lines[0][1:])
                    if len(lines) >= 2 * n + 2:
                        return [lines[2 + 2 * i].decode() for i in range(n)]
                else:
                    return []
    except OSError:
        return []
    return []


def test_redis_outage_falls_back_to_local_limits_and_loses_nothing():
    """Own redis-server. Wave 1 is processed with the quota in Redis (its keys exist). Redis is stopped
    (SIGTERM to its PID): wave 2 is accepted and processed all the same, under the local fallback
    (settled_quota_fallback_active 1). Redis is started again on the same port: wave 3 is processed,
    the gauge returns to 0 and the quota is in Redis again. Every event of every wave is done and
    every invoice mirrored."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_redis")
    redis = pl.RedisServer().start()
    env = pl.settled_env(m, db, SETTLED_REDIS_URL=redis.url(), SETTLED_WORKERS=2, SETTLED_XERO_COALESCE_MS=0)
    waves = [[str(uuid.uuid4()) for _ in range(10)] for _ in range(3)]
    rows = 0

    def wave(n, s):
        nonlocal rows
        ids = waves[n]
        _put_invoices(m, t, ids, n + 1, pl.BASE_MS + n * 1000)
        for half in (ids[:5], ids[5:]):
            events = [pl.xero_event(t, i, "INVOICE") for i in half for _ in range(2)]
            pl.post(s, pl.delivery(events), f"wave {n + 1}")
        rows += 20
        pl.wait_drained(db, 60, f"wave {n + 1} to be processed", expect_rows=rows)
        _expect_mirror(db, t, ids, n + 1, f"wave {n + 1}: the invoices are mirrored")

    pattern = "settled:quota:{xero:%s}*" % t
    with h.Settled(db, env=env) as s:
        wave(0, s)
        expect(_redis_keys(redis.port, pattern), "wave 1: the tenant's quota keys are in Redis", pattern)
        expect_eq(pl.metric(s, "settled_quota_fallback_active"), 0.0, "wave 1: fallback gauge")

        redis.stop()
        expect(not redis.ping(), "Redis is down")
        wave(1, s)
        pl.wait_for(lambda: pl.metric(s, "settled_quota_fallback_active") == 1.0, 15,
                    "settled_quota_fallback_active = 1 while Redis is down")
        expect_in("Redis is unavailable", s.log(), "the switch to local limits is logged")

        redis.start()
        wave(2, s)
        pl.wait_for(lambda: pl.metric(s, "settled_quota_fallback_active") == 0.0, 15,
                    "settled_quota_fallback_active = 0 once Redis is back")
        expect(_redis_keys(redis.port, pattern), "wave 3: the quota keys are in Redis again", pattern)
        expect_in("Redis is back", s.log(), "the return to shared limits is logged")
    expect_eq(pl.queue_counts(db), {"done": 60}, "every event of the three waves")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM xero_invoices"), "30", "mirrored invoices")
    expect_eq(m.stats()["violations"], 0, "violations at the mock")
    redis.stop()


# ---------------------------------------------------------------------------------------------------
# 9. Lease expiry after kill -9


def test_kill9_worker_rows_are_retaken_after_the_lease():
    """`settled serve` without workers takes the webhooks; one `settled work` with a 2 s lease claims
    them and hangs in an 8 s Xero call (the mock's slow fault). It is killed with SIGKILL while its rows
    are 'processing' under its lease. A new `settled work` takes them only once the lease has expired,
    and finishes them with attempts = 2 (the lost attempt counted)."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_lease")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    _put_invoices(m, t, ids, 1, pl.BASE_MS)
    m.faults({"mode": "slow", "delay_ms": 8000, "count": 0, "tenant": t})
    serve = h.Settled(db, env=pl.settled_env(m, db, SETTLED_WORKERS=0))
    wenv = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_WORKER_LEASE_MS=2000, SETTLED_XERO_COALESCE_MS=0)
    first = pl.Worker(wenv)
    pl.post(serve, pl.delivery([pl.xero_event(t, i, "INVOICE") for i in ids]))
    pl.wait_for(lambda: m.tenant_stats(t).get("in_flight", 0) >= 1, 20, "the worker's call to hang at the mock")
    held = h.sql_rows(db, "SELECT status, lease_owner, attempts, (extract(epoch FROM next_attempt_at) * 1000)::bigint"
                          " FROM webhook_events ORDER BY id")
    expect_eq([r[0] for r in held], ["processing"] * 3, "rows are processing when the worker is killed")
    expect(all(r[1] and f":{first.proc.pid}:" in r[1] for r in held), "the rows are leased to that worker", held)
    expect_eq([r[2] for r in held], ["1"] * 3, "attempts before the kill")
    lease_expiry = max(int(r[3]) for r in held)
    first.kill9()
    first.check_log()
    m.clear_faults()

    second = pl.Worker(wenv)
    counts = pl.wait_drained(db, 30, "the rows to be retaken and finished", expect_rows=3)
    expect_eq(counts, {"done": 3}, "inbox rows")
    rows = h.sql_rows(db, "SELECT attempts, lease_owner, (extract(epoch FROM processed_at) * 1000)::bigint"
                          " FROM webhook_events ORDER BY id")
    expect_eq([r[0] for r in rows], ["2"] * 3, "attempts (the killed worker's attempt counted)")
    expect_eq([r[1] for r in rows], [None] * 3, "leases released")
    expect(all(int(r[2]) >= lease_expiry for r in rows), "no row was taken before its lease expired",
           (lease_expiry, [r[2] for r in rows]))
    _expect_mirror(db, t, ids, 1, "the invoices are mirrored")
    pl.stop_all(second, serve)


try:
    h.run(globals())
finally:
    if _mock is not None:
        _mock.stop()
