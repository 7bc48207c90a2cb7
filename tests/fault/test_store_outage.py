# SPDX-License-Identifier: MIT
"""PostgreSQL goes away under load and comes back: 503 + Retry-After meanwhile, recovery without a restart.

The test runs its own PostgreSQL cluster (harness.PgCluster), because it stops it. With events being
posted from a few threads, the cluster is stopped (`pg_ctl stop -m fast`, then, in a second round,
`-m immediate`, which is a crash of the database server), and while it is down every delivery must
be answered 503 with a Retry-After header (never 2xx) and /readyz must answer 503. Then the cluster is
started again on the same port and, without restarting settled, deliveries must be accepted again
within a bounded wait. At the end every event answered 2xx is in webhook_events exactly once (events
answered 503 may or may not be stored), and settled exits 0 on SIGTERM.

Why this can fail: a server that answered 2xx before PostgreSQL confirmed the commit would lose the
acknowledged events of the transaction a stop rolls back (fast mode terminates the backends,
immediate mode kills them without a checkpoint), or would answer 2xx during the outage.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
import harness  # noqa: E402

RECOVERY_TIMEOUT = 30.0  # settled retries a lost connection with a backoff of at most 5 s
OUTAGE = 2.0  # seconds the store stays down under load
THREADS, DB_CONNECTIONS = 2, 2
CONNECTIONS = THREADS * DB_CONNECTIONS


def post_one(server, client=None):
    eid, body, headers = faultlib.stripe_delivery()
    c = client or faultlib.KeepAlive(server.port)
    try:
        status, hdrs, reply = c.request("POST", "/webhooks/stripe", body, headers)
    finally:
        if client is None:
            c.close()
    return eid, status, hdrs, reply


def connections_up(server):
    """Database connections of all loops that are connected (idle or busy), from /metrics."""
    m = server.metrics()
    idle = harness.metric_sum(m, "settled_db_connections", state="idle")
    busy = harness.metric_sum(m, "settled_db_connections", state="busy")
    harness.expect(idle is not None and busy is not None, "/metrics has settled_db_connections{state=idle|busy}")
    return int(idle + busy)


def expect_503(status, hdrs, what):
    harness.expect_eq(status, 503, f"{what}: status")
    ra = hdrs.get("retry-after")
    harness.expect(ra is not None and ra.isdigit() and int(ra) >= 1,
                   f"{what}: Retry-After must be a positive number of seconds", ra)


def outage_round(pg, server, mode, acked):
    """Stops the store under load, checks the outage answers, restarts it and waits for recovery.
    Appends every acknowledged event id to acked."""
    load = faultlib.Load(server.port, workers=4, record_log=True, pause=0.002)
    load.start()
    try:
        faultlib.wait_for(lambda: load.n_acked() >= 100, 30, what="the first 100 acknowledgements")
        time.sleep(0.3)
        t_stopping = time.monotonic()
        pg.stop(mode=mode)
        t_down = time.monotonic()

        # settled notices: /readyz goes 503 (a fast or immediate stop closes its connections)
        faultlib.wait_for(lambda: faultlib.status_of(server.port, "/readyz") == 503, 10,
                          what=f"/readyz 503 after `pg_ctl stop -m {mode}`")
        # one delivery on a fresh connection, checked on its own
        _, status, hdrs, reply = post_one(server)
        expect_503(status, hdrs, f"POST while PostgreSQL is stopped ({mode})")
        harness.expect_eq(hdrs.get("content-type", "").split(";")[0], "application/problem+json",
                          f"Content-Type of the 503 (body {reply[:200]!r})")
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - t_down)))
        harness.expect_eq(faultlib.status_of(server.port, "/readyz"), 503, "/readyz at the end of the outage")

        t_starting = time.monotonic()
        pg.start()
        t_up = time.monotonic()
        # the running server must come back by itself: first one loop...
        def probe():
            eid, status, _, _ = post_one(server)
            if status == 200:
                acked.append(eid)
            return status == 200

        faultlib.wait_for(probe, RECOVERY_TIMEOUT, interval=0.1,
                          what=f"a 200 after PostgreSQL restarted (mode {mode}), without restarting settled")
        t_first = time.monotonic()
        # ...then every connection of every loop (each reconnects on its own backoff)
        faultlib.wait_for(lambda: connections_up(server) == CONNECTIONS, RECOVERY_TIMEOUT, interval=0.1,
                          what=f"all {CONNECTIONS} database connections up again (mode {mode})")
        t_recovered = time.monotonic()
        time.sleep(0.3)  # some load after the recovery too
    finally:
        load.stop()

    # Every request that began after the store was down and ended before it was started again saw the
    # outage: each must be a 503 with Retry-After (no 2xx, no dropped connection).
    during = [e for e in load.log if e[0] >= t_down and e[1] <= t_starting]
    bad = [e for e in during if e[3] != 503 or not (e[4] or "").isdigit()]
    harness.expect(len(during) >= 20, f"the load kept posting during the outage ({mode})", len(during))
    harness.expect(not bad, f"{len(bad)} of {len(during)} deliveries during the outage ({mode}) were not "
                            "503 with Retry-After (start, end, id, status, Retry-After)", bad[:5])
    around_stop = [e for e in load.log if e[1] >= t_stopping and e[0] < t_down]
    after = [e for e in load.log if e[0] >= t_recovered]
    harness.expect(after and all(e[3] == 200 for e in after),
                   f"every delivery after the recovery ({mode}) is 200", [e[3] for e in after][:20])
    print(f"# {mode}: stop took {t_down - t_stopping:.2f} s, {len(around_stop)} deliveries overlapped it "
          f"(statuses {sorted(set(e[3] for e in around_stop), key=str)}); {len(during)} deliveries during the "
          f"outage, all 503 + Retry-After; first 200 {t_first - t_up:.2f} s and all connections up "
          f"{t_recovered - t_up:.2f} s after PostgreSQL was up; "
          f"load statuses {load.statuses}, {load.errors} without an answer")
    acked.extend(load.acked)


def test_store_outage_then_recovery():
    pg = harness.start_cluster()
    try:
        db = harness.new_database("outage", pg_url=pg.url())
        server = harness.Settled(db, threads=THREADS, env={"SETTLED_DB_CONNECTIONS": DB_CONNECTIONS})
        acked = []
        client = faultlib.KeepAlive(server.port)
        for i in range(20):
            eid, status, _, reply = post_one(server, client)
            harness.expect_eq((status, reply), (200, b'{"received":true}'), f"delivery {i + 1} before the outage")
            acked.append(eid)
        client.close()
        harness.expect_eq(faultlib.status_of(server.port, "/readyz"), 200, "/readyz before the outage")

        for mode in ("fast", "immediate"):
            outage_round(pg, server, mode, acked)

        client = faultlib.KeepAlive(server.port)
        for i in range(20):
            eid, status, _, reply = post_one(server, client)
            harness.expect_eq((status, reply), (200, b'{"received":true}'), f"delivery {i + 1} after the outages")
            acked.append(eid)
        client.close()
        harness.expect_eq(faultlib.status_of(server.port, "/readyz"), 200, "/readyz after the outages")

        faultlib.assert_all_stored(db, acked)
        rows = int(harness.sql_value(db, "SELECT count(*) FROM webhook_events"))
        print(f"# {len(acked)} acknowledged, all stored once; {rows} rows in all")
        server.stop()  # SIGTERM: exit status 0 and a clean log, or it fails
    finally:
        pg.destroy()


if __name__ == "__main__":
    harness.run(globals())
