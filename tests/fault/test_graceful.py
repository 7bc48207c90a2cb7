# SPDX-License-Identifier: MIT
"""SIGTERM under load: settled finishes what it has started, exits 0 in time, and loses no acknowledged event.

Several threads post distinct signed Stripe events over keep-alive connections; in the middle of the
stream the server gets SIGTERM. It must exit with status 0 within SETTLED_SHUTDOWN_TIMEOUT_MS (plus a
little for the last replies), every request that was sent before the signal must get an HTTP answer
(its commit was finished, not dropped), and every event answered 2xx must be in webhook_events
exactly once (checked after a restart on the same database).

Why this can fail: a server that exited without waiting for its in-flight commits would leave requests
sent before the signal unanswered (or answer them before their commit, losing them), and one that
waited forever would miss the deadline.
"""
import os
import signal
import subprocess
import sys
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
    harness.expect(all(e[3] == 200 for e in in_flight), "requests in flight at SIGTERM are answered 200",
                   [e[3] for e in in_flight])
    after = [e for e in load.log if e[0] >= t_term]
    statuses_after = {}
    for e in after:
        statuses_after[e[3]] = statuses_after.get(e[3], 0) + 1
    print(f"# exit 0 {t_exit - t_term:.2f} s after SIGTERM; {len(in_flight)} requests in flight at the signal, "
          f"all 200; {len(after)} requests sent after it: {statuses_after} (None = no answer, e.g. refused)")

    server.start()
    faultlib.assert_all_stored(db, load.acked)
    rows = int(harness.sql_value(db, "SELECT count(*) FROM webhook_events"))
    print(f"# {len(load.acked)} acknowledged, all stored once; {rows} rows; statuses {load.statuses}, "
          f"{load.errors} without an answer")
    server.stop()


if __name__ == "__main__":
    harness.run(globals())
