# SPDX-License-Identifier: MIT
"""test_sweep.py: the scheduled drift sweep (gateway/domain/sync.c) and the thread it runs on
(gateway/domain/worker.c), through the real binary, a real PostgreSQL and the project's mock Xero:

- a sweep runs on the worker pool's own periodic thread, so a slow one never holds up claiming, even with a
  single queue worker (the worker that used to run it between claims);
- two instances that both list a tenant as due sweep it once: the one that takes the tenant's lock second
  finds it swept and skips it;
- SIGTERM stops a sweep that is waiting for Xero's quota at once, and the process exits 0.

The mock's fault switches stage each case: a slow answer ("slow" with delay_ms) or a 429 with a long
Retry-After, for one tenant or one collection.
"""

import time
import uuid

import harness as h
import pipelinelib as pl
from harness import expect, expect_eq, expect_in

_mock = None


def mock():
    global _mock
    pl.require("SETTLED_TEST_PG_URL", "SETTLED_TEST_REDIS_URL", "SETTLED_BIN", "SETTLED_SOURCE_DIR")
    if _mock is None:
        _mock = pl.Mock()
    return _mock


def _sweep_calls(m, tenant):
    """The sweep's list calls for tenant (each kind's pages are ordered by UpdatedDateUTC)."""
    return [c for c in m.api_calls(tenant=tenant) if "order=UpdatedDateUTC" in (c.get("query") or "")]


def _in_flight(m, tenant):
    return m.tenant_stats(tenant).get("in_flight", 0)


def test_a_slow_sweep_does_not_hold_up_claiming():
    """`settled serve` with ONE queue worker and the sweep on: the sweep's first call (the tenant's contacts) takes
    8 s at the mock. While it is in flight, a webhook for an invoice of the same tenant is processed within a few
    seconds: claiming does not wait for the sweep. (When worker 0 ran the sweep between claims, the event waited
    for the whole sweep.)"""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "sweep_claims")
    iid = str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "9.99"))
    m.faults({"mode": "slow", "delay_ms": 8000, "count": 1, "tenant": t, "path_prefix": "/api.xro/2.0/Contacts"})
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0, SETTLED_XERO_SYNC_INTERVAL=3600)
    with h.Settled(db, env=env) as s:
        pl.wait_for(lambda: _in_flight(m, t) == 1, 20, "the sweep's slow contacts call to be in flight")
        started = time.monotonic()
        pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE")]))
        pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM webhook_events") == "done", 6,
                    "the event to be processed while the sweep waits for Xero")
        took = time.monotonic() - started
        expect_eq(_in_flight(m, t), 1, f"the sweep's call is still in flight (the event took {took:.1f}s)")
        pl.wait_for(lambda: h.sql_value(db, "SELECT count(*) FROM xero_sync_state WHERE tenant_id = $1", t) == "3",
                    30, "the sweep to finish its three kinds")
    expect_eq(h.sql_value(db, "SELECT total::text FROM xero_invoices WHERE invoice_id = $1", iid), "9.9900",
              "the invoice is mirrored")


def test_two_instances_sweep_a_tenant_once():
    """Two `settled work` instances, tenants T0 < T1 of one organisation, both due. Instance B starts first and
    sweeps T0, whose first call takes 5 s. Instance A starts meanwhile: T0 is locked, so it sweeps T1 and releases
    it. When B gets to T1 (it listed T1 as due before A swept it), it takes the free lock, finds T1 swept and
    skips it: T1 is swept once (3 calls, one per kind), not twice."""
    m = mock()
    t0, t1 = sorted([pl.new_tenant(), pl.new_tenant()])
    db = pl.connected_db(m, [t0, t1], "sweep_once")
    m.faults({"mode": "slow", "delay_ms": 5000, "count": 1, "tenant": t0})
    m.ctl("DELETE", "requests")
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_SYNC_INTERVAL=3600)
    b = pl.Worker(env)
    a = None
    try:
        pl.wait_for(lambda: _in_flight(m, t0) == 1, 20, "B's slow first call of T0's sweep")
        a = pl.Worker(env)
        pl.wait_for(lambda: h.sql_value(db, "SELECT count(*) FROM xero_sync_state WHERE tenant_id = $1", t1) == "3",
                    20, "A to sweep T1")
        expect_eq(_in_flight(m, t0), 1, "A swept T1 while B was still on T0 (the premise of the test)")
        pl.wait_for(lambda: "swept meanwhile by another instance" in b.log() or len(_sweep_calls(m, t1)) > 3, 30,
                    "B to reach T1 (and skip it, or sweep it again)")
        time.sleep(0.5)  # a second sweep, if one started, has made its calls by now
    finally:
        pl.stop_all(*[w for w in (a, b) if w is not None])
    expect_eq(len(_sweep_calls(m, t1)), 3, "T1's sweep calls (one sweep: contacts, invoices, credit notes)")
    expect_eq(len(_sweep_calls(m, t0)), 3, "T0's sweep calls (one sweep)")
    expect_in(f"Xero tenant {t1}", b.log(), "B names the tenant it skipped")
    expect_in("swept meanwhile by another instance, skipped", b.log(), "B skipped T1 after taking its lock")


def test_sigterm_stops_a_sweep_waiting_for_the_quota():
    """The sweep's first call gets a 429 with Retry-After: 30, so the sweep sleeps for the quota. SIGTERM then
    ends `settled work` within a few seconds, exit 0 and a clean log; nothing of the cut-short sweep is recorded
    as done (no sync state: the next sweep starts over from the same mark)."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "sweep_sigterm")
    m.faults({"mode": "429", "retry_after": 30, "count": 0, "tenant": t})
    w = pl.Worker(pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_SYNC_INTERVAL=3600))
    try:
        pl.wait_for(lambda: m.tenant_stats(t).get("sent_429_fault", 0) >= 1, 20, "the sweep's call to get a 429")
        time.sleep(0.5)  # now asleep for the quota
    finally:
        started = time.monotonic()
        w.stop(timeout=40)
        took = time.monotonic() - started
    expect(took < 5, "settled work exits within 5 s of SIGTERM during a sweep's quota wait", f"{took:.1f}s")
    expect_in("drift sweep of Xero tenant", w.log(), "the sweep says it stopped")
    expect_in("stopped: shutting down", w.log(), "because of the shutdown")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM xero_sync_state"), "0", "no sync state recorded")


try:
    h.run(globals())
finally:
    if _mock is not None:
        _mock.stop()
