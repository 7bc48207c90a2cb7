# SPDX-License-Identifier: MIT
"""SIGTERM under load: settled finishes what it has started, exits 0 in time, and loses no acknowledged event.

Several threads post distinct signed Stripe events over keep-alive connections; in the middle of the
stream the server gets SIGTERM. It must exit with status 0 within SETTLED_SHUTDOWN_TIMEOUT_MS (plus a
little for the last replies), every request that was sent before the signal must get an HTTP answer
(its commit was finished, not dropped; or, read only after the last commit, refused with 503), and every
event answered 2xx must be in webhook_events exactly once (checked after a restart on the same database).

Why this can fail: a server that exited without waiting for its in-flight commits would leave requests
sent before the signal unanswered (or answer them before their commit, losing them), and one that
waited forever would miss the deadline.
"""
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
import harness  # noqa: E402

SHUTDOWN_TIMEOUT_MS = 5000
FLUSH_MARGIN = 1.5  # seconds beyond the shutdown timeout for the last replies and the exit itself


def test_sigterm_under_load():
    db = harness.new_database("graceful")
    server = harness.Settled(db, threads=2, env={"SETTLED_SHUTDOWN_TIMEOUT_MS": SHUTDOWN_TIMEOUT_MS})
    load = faultlib.Load(server.port, workers=8, record_log=True)
    load.start()
    try:
        faultlib.wait_for(lambda: load.n_acked() >= 200, 30, what="the first 200 acknowledgements")
        time.sleep(0.5)
        t_term = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        try:
            rc = server.proc.wait(timeout=SHUTDOWN_TIMEOUT_MS / 1000 + FLUSH_MARGIN)
        except subprocess.TimeoutExpired:
            server.kill9()
            raise harness.Failure(f"settled did not exit within {SHUTDOWN_TIMEOUT_MS} ms + {FLUSH_MARGIN} s of "
                                  f"SIGTERM under load:\n{server.log_tail()}")
        t_exit = time.monotonic()
    finally:
        load.stop()
    server.check_log()
    harness.expect_eq(rc, 0, f"exit status after SIGTERM (log {server.log_path}:\n{server.log_tail()})")

    # Requests sent before the signal were in flight when it came: each must have its answer.
    in_flight = [e for e in load.log if e[0] < t_term and e[1] >= t_term]
    unanswered = [e for e in in_flight if e[3] is None]
    harness.expect(not unanswered, f"{len(unanswered)} of {len(in_flight)} requests in flight at SIGTERM got no "
                                   "answer (start, end, id, status, Retry-After)", unanswered[:5])
    # one the server read before its last commit was done is committed (200); one it read only while flushing its
    # last replies (the client sent it just before the signal) is refused before any commit (503 + Retry-After)
    harness.expect(all(e[3] == 200 or (e[3] == 503 and e[4] is not None) for e in in_flight),
                   "requests in flight at SIGTERM are answered 200, or 503 with Retry-After",
                   [(e[3], e[4]) for e in in_flight])
    after = [e for e in load.log if e[0] >= t_term]
    statuses_after = {}
    for e in after:
        statuses_after[e[3]] = statuses_after.get(e[3], 0) + 1
    in_flight_statuses = {}
    for e in in_flight:
        in_flight_statuses[e[3]] = in_flight_statuses.get(e[3], 0) + 1
    print(f"# exit 0 {t_exit - t_term:.2f} s after SIGTERM; {len(in_flight)} requests in flight at the signal: "
          f"{in_flight_statuses}; {len(after)} requests sent after it: {statuses_after} (None = no answer, e.g. "
          "refused)")

    server.start()
    faultlib.assert_all_stored(db, load.acked)
    rows = int(harness.sql_value(db, "SELECT count(*) FROM webhook_events"))
    print(f"# {len(load.acked)} acknowledged, all stored once; {rows} rows; statuses {load.statuses}, "
          f"{load.errors} without an answer")
    server.stop()


def test_after_sigterm_replies_close_and_late_requests_are_refused():
    """Once SIGTERM arrives, every reply carries Connection: close; a request read while the last replies are
    flushed (after the last commit) is answered 503 with Retry-After and starts no commit.

    One loop, so every connection is served by the loop that stops. A trigger makes the commits of events whose id
    starts with evt_s take 1.5 s, which holds the loop in its stopping phase while the test watches it."""
    db = harness.new_database("graceful_close")
    harness.sql(db, """
        CREATE FUNCTION t_slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.event_id LIKE 'evt_s%' THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$;
        CREATE TRIGGER t_slow BEFORE INSERT ON inbox_events FOR EACH ROW EXECUTE FUNCTION t_slow();""")
    server = harness.Settled(db, threads=1, env={"SETTLED_SHUTDOWN_TIMEOUT_MS": SHUTDOWN_TIMEOUT_MS})
    slow_conn, during, late = (faultlib.KeepAlive(server.port) for _ in range(3))
    try:
        for c in (during, late):  # accepted before the signal, and kept alive
            _, body, headers = faultlib.stripe_delivery(faultlib.new_event_id("w"))
            harness.expect_eq(c.request("POST", "/webhooks/stripe", body, headers)[0], 200, "warm-up delivery")
        slow_id, slow_body, slow_headers = faultlib.stripe_delivery(faultlib.new_event_id("s"))
        result = {}

        def post_slow():
            result["slow"] = slow_conn.request("POST", "/webhooks/stripe", slow_body, slow_headers)

        t = threading.Thread(target=post_slow)
        t.start()
        time.sleep(0.3)  # the slow commit is in flight
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        mid_id, body, headers = faultlib.stripe_delivery(faultlib.new_event_id("m"))
        status, hdrs, _ = during.request("POST", "/webhooks/stripe", body, headers)
        harness.expect_eq(status, 200, "a delivery read while the last commit runs is still committed")
        harness.expect_eq(hdrs.get("connection", "").lower(), "close", "its reply closes the connection")
        t.join(10)
        status, hdrs, _ = result["slow"]
        harness.expect_eq(status, 200, "the slow delivery in flight at SIGTERM")
        harness.expect_eq(hdrs.get("connection", "").lower(), "close", "the slow reply closes the connection")
        # the last commit is done (and, within 100 ms, the workers' wake-up after it): the loop then flushes its
        # replies for 200 ms and refuses what it reads meanwhile
        time.sleep(0.15)
        late_id, body, headers = faultlib.stripe_delivery(faultlib.new_event_id("l"))
        status, hdrs, _ = late.request("POST", "/webhooks/stripe", body, headers)
        harness.expect_eq(status, 503, "a delivery read during the flush")
        harness.expect(hdrs.get("retry-after", "").isdigit(), "its Retry-After", hdrs)
        harness.expect_eq(hdrs.get("connection", "").lower(), "close", "the refusal closes the connection")
        harness.expect_eq(server.proc.wait(timeout=SHUTDOWN_TIMEOUT_MS / 1000 + FLUSH_MARGIN), 0, "exit status")
    finally:
        for c in (slow_conn, during, late):
            c.close()
    stored = faultlib.stored_counts(db)
    harness.expect_eq((stored.get(slow_id), stored.get(mid_id), stored.get(late_id)), (1, 1, None),
                      "stored: the slow and the mid delivery, not the refused one")


if __name__ == "__main__":
    harness.run(globals())
