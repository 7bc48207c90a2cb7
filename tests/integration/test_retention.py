# SPDX-License-Identifier: MIT
"""test_retention.py: pruning finished events (`settled prune`, SETTLED_RETENTION_DAYS). Only done and ignored
events older than the cut-off go, in batches; pending, failed, processing and dead ones never do, whatever their
age; a delivery goes with its last event; --dry-run counts and changes nothing; one pruner at a time; the
workers' background job prunes on its own."""

import subprocess
import time

import harness as h
import pipelinelib as pl
from harness import expect, expect_eq, expect_in

STATUSES = ["pending", "processing", "done", "failed", "dead", "ignored"]


def seed(db, bulk=0):
    """One organisation; per status an old (60 days) and a new (1 day) single-event row; two old GoCardless
    deliveries of two events each: one all done (it goes), one with a done and a dead event (it stays); and bulk
    more old done events."""
    h.sql(db, "INSERT INTO organisations (slug, name) VALUES ('ret', 'Retention') ON CONFLICT DO NOTHING")
    org = h.sql_value(db, "SELECT id FROM organisations WHERE slug = 'ret'")
    for st in STATUSES:
        for age in (60, 1):
            h.sql(db, "INSERT INTO inbox_events (organisation_id, provider, source, event_id, event_type, body,"
                      " headers, verified_at, received_at, correlation_id, status)"
                      " VALUES ($1, 'stripe', 'default', $2, 'customer.updated', '\\x7b7d', '{}',"
                      " now() - $3::int * interval '1 day', now() - $3::int * interval '1 day', 'c', $4)",
                  org, f"evt_{st}_{age}", str(age), st)
    for name, statuses in (("all_done", ("done", "ignored")), ("one_dead", ("done", "dead"))):
        did = h.sql_value(db, "WITH d AS (INSERT INTO webhook_deliveries (organisation_id, provider, source, body, headers,"
                              " verified_at, received_at, correlation_id)"
                              " VALUES ($1, 'gocardless', 'default', '\\x7b7d', '{}', now() - interval '60 days',"
                              " now() - interval '60 days', $2) RETURNING id) SELECT id FROM d", org, name)
        for i, st in enumerate(statuses):
            h.sql(db, "INSERT INTO inbox_events (organisation_id, provider, source, event_id, event_type, delivery_id,"
                      " verified_at, received_at, correlation_id, status)"
                      " VALUES ($1, 'gocardless', 'default', $2, 'payments.confirmed', $3,"
                      " now() - interval '60 days', now() - interval '60 days', $4, $5)",
                  org, f"EV_{name}_{i}", did, name, st)
    if bulk:
        h.sql(db, "INSERT INTO inbox_events (organisation_id, provider, source, event_id, event_type, body, headers,"
                  " verified_at, received_at, correlation_id, status)"
                  " SELECT $1, 'stripe', 'bulk', 'evt_bulk_' || g, 'x', '\\x7b7d', '{}', now() - interval '90 days',"
                  " now() - interval '90 days' + g * interval '1 second', 'bulk', 'done'"
                  " FROM generate_series(1, $2::int) g", org, str(bulk))
    h.sql(db, "INSERT INTO audit_log (organisation_id, actor, action, entity_type, entity_id, correlation_id)"
              " SELECT $1, 'test', 'test.action', 'webhook_event', id::text, 'c' FROM inbox_events"
              " WHERE event_id = 'evt_done_60'", org)


def snapshot(db):
    """Everything the pruning could touch, as text: inbox rows, deliveries, the audit log."""
    return (h.sql(db, "SELECT id, event_id, status, delivery_id FROM inbox_events ORDER BY id"),
            h.sql(db, "SELECT id, correlation_id FROM webhook_deliveries ORDER BY id"),
            h.sql(db, "SELECT count(*) FROM audit_log"))


def remaining(db):
    return set(h.sql(db, "SELECT event_id FROM inbox_events WHERE source <> 'bulk'").split())


def prune(db, *args, env=None):
    return h.run_settled(["prune", *args], dict({"SETTLED_DATABASE_URL": db}, **(env or {})), timeout=120)


def test_prune_dry_run_then_batches():
    db = h.new_database("ret_prune")
    seed(db, bulk=1200)
    before = snapshot(db)
    res = prune(db, "--older-than", "30d", "--dry-run")
    expect_eq(res.returncode, 0, f"dry run exit code ({res.stderr!r})")
    # old done + old ignored + 2 of the all-done delivery + the done one of the other + 1200 bulk = 1205
    expect_in("would delete 1205 done or ignored events received more than 30 days ago", res.stdout, "dry run")
    expect_in("and 1 deliveries", res.stdout, "dry run: deliveries")
    expect_eq(snapshot(db), before, "the dry run changed nothing")

    res = prune(db, "--older-than", "30d", env={"SETTLED_LOG_LEVEL": "debug"})
    expect_eq(res.returncode, 0, f"prune exit code ({res.stderr!r})")
    expect_in("deleted 1205 done or ignored events received more than 30 days ago, and 1 deliveries", res.stdout,
              "prune summary")
    batches = [line for line in res.stderr.splitlines() if '"retention batch"' in line]
    expect_eq(len(batches), 3, f"batches of 500 for 1205 events: {batches}")
    expect_in('"events":500', batches[0], "first batch")
    expect_in('"events":205', batches[2], "last batch")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM inbox_events WHERE source = 'bulk'"), "0", "bulk rows left")
    left = remaining(db)
    expected = {f"evt_{st}_1" for st in STATUSES} | {f"evt_{st}_60" for st in STATUSES if st not in ("done", "ignored")}
    expected |= {"EV_one_dead_1"}
    expect_eq(left, expected, "rows left: every new row, and every old row that is not done or ignored")
    expect_eq(h.sql(db, "SELECT correlation_id FROM webhook_deliveries"), "one_dead",
              "the delivery whose dead event remains stays; the other went with its last event")
    expect_eq(snapshot(db)[2], before[2], "the audit log is never pruned")

    # nothing left to do: a second run deletes nothing
    res = prune(db, "--older-than", "30")
    expect_in("deleted 0 done or ignored events", res.stdout, "second run")


def test_prune_usage_and_lock():
    db = h.new_database("ret_lock")
    seed(db)
    for args, words in ((["--older-than"], "needs a value"), ([], "--older-than is required"),
                        (["--older-than", "0d"], "at least 1 hour"), (["--older-than", "3w"], "number of days"),
                        (["--bogus"], "unknown option --bogus")):
        res = prune(db, *args)
        expect_eq(res.returncode, 2, f"prune {args}: exit code")
        expect_in(words, res.stderr, f"prune {args}: stderr")
    res = prune(db, "--help")
    expect_eq(res.returncode, 0, "prune --help")
    expect_in("usage: settled prune", res.stdout, "prune --help")

    # another session holds the retention lock: prune deletes nothing and says so
    holder = subprocess.Popen(["psql", "-X", "-q", "-At", "-d", db], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        holder.stdin.write(b"BEGIN;\nSELECT pg_advisory_xact_lock(hashtext('settled.retention')) IS NULL;\n\\echo locked\n")
        holder.stdin.flush()
        lines = [holder.stdout.readline().strip() for _ in range(2)]
        expect_eq(lines[-1], b"locked", f"the test holds the lock ({lines})")
        before = snapshot(db)
        res = prune(db, "--older-than", "30d")
        expect_eq(res.returncode, 1, f"prune while another prunes: exit code ({res.stdout!r})")
        expect_in("another settled is pruning now", res.stderr, "prune while another prunes")
        expect_eq(snapshot(db), before, "nothing deleted while another holds the lock")
    finally:
        holder.stdin.write(b"ROLLBACK;\n\\q\n")
        holder.stdin.close()
        holder.wait(timeout=30)


def test_workers_prune_in_the_background():
    db = h.new_database("ret_work")
    seed(db)
    # the workers process Stripe and GoCardless events: the seeded waiting rows are not due, so they stay as seeded
    h.sql(db, "UPDATE inbox_events SET next_attempt_at = now() + interval '1 hour'"
              " WHERE status IN ('pending', 'failed', 'processing')")
    w = pl.Worker({"SETTLED_DATABASE_URL": db, "SETTLED_RETENTION_DAYS": "30", "SETTLED_WORKERS": "1",
                   "SETTLED_XERO_SYNC_INTERVAL": "0", "SETTLED_WORKER_POLL_MS": "200"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "evt_done_60" in remaining(db):
            time.sleep(0.2)
        left = remaining(db)
        expect("evt_done_60" not in left and "evt_ignored_60" not in left, "the job pruned old finished rows", left)
        for st in ("pending", "failed", "dead"):
            expect(f"evt_{st}_60" in left, f"an old {st} row stays", left)
        expect("evt_done_1" in left, "a new done row stays", left)
        expect_in("retention: pruned finished events", w.log(), "the job's log line")
    finally:
        w.stop()


if __name__ == "__main__":
    h.run(globals())
