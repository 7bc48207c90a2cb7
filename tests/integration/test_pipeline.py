# SPDX-License-Identifier: MIT
"""test_pipeline.py: the processing pipeline end to end, through the real binary, a real PostgreSQL and
the project's mock Xero (tests/mock/xero_api.py): signed Xero webhooks go into the inbox, queue workers
claim them, fetch the objects from the mock with a connected tenant's token, and apply them through the
SQL upserts (docs/data-model.md, gateway/domain/worker.c, gateway/domain/xero_mirror.c, gateway/domain/sync.c).

- convergence: whatever order versions are served and events delivered in (stale reads, duplicates),
  the mirror ends with the newest version, and never holds an older one after a newer one;
- coalescing: a burst of events for one invoice becomes at most two API calls;
- exact money: amounts go from the wire to numeric(19,4) without passing through a float;
- dead-lettering after the last wait of SETTLED_RETRY_SCHEDULE, and the operator's replay of a dead row:

      UPDATE webhook_events SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL
       WHERE id = <id> AND status = 'dead';

  (a worker picks it up at its next poll, SETTLED_WORKER_POLL_MS: an UPDATE sends no notification);
- `settled sync xero`: counts, a second run that changes nothing, and drift repair without webhooks
  (by hand and by the scheduled sweep);
- an event of a tenant no organisation has connected is ignored (not retried, never dead), and the first
  sweep after the tenant is connected backfills what it named.
"""

import decimal
import os
import random
import re
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


# ---------------------------------------------------------------------------------------------------
# 1. Convergence

HOUR = 3600 * 1000


def _inv_version(iid, v):
    """Version v (1, 2, 3) of invoice iid: (raw text, expected state). Newer versions have a later
    UpdatedDateUTC, another status, other totals and other lines."""
    lines = {
        1: [("100.10", "1.0000", "100.10")],
        2: [("100.10", "2.0000", "50.05"), ("100.10", "1.0000", "100.10")],
        3: [("111.11", "1.0000", "111.11"), ("111.11", "3.0000", "37.0367"), ("111.11", "0.5000", "222.22")],
    }[v]
    total = {1: "100.10", 2: "200.20", 3: "333.33"}[v]
    status = {1: "DRAFT", 2: "SUBMITTED", 3: "AUTHORISED"}[v]
    items = []
    for pos, (amount, qty, unit) in enumerate(lines, 1):
        lid = str(uuid.uuid5(uuid.UUID(iid), f"v{v}-line{pos}"))
        items.append((lid, f"v{v} line {pos}", qty, unit, amount))
    text = pl.invoice(iid, pl.BASE_MS + v * HOUR, total, status=status, number=f"INV-{iid[:6]}",
                      lines=[pl.line_item(*i) for i in items])
    expected = {
        "total": pl.n4(total), "status": status, "updated_ms": str(pl.BASE_MS + v * HOUR),
        "lines": [[str(pos), lid, desc, pl.n4(q), pl.n4(u), pl.n4(a)]
                  for pos, (lid, desc, q, u, a) in enumerate(items, 1)],
    }
    return text, expected


def _con_version(cid, v):
    name = f"Customer {cid[:6]} v{v}"
    email = f"v{v}.{cid[:8]}@example.com"
    return pl.contact(cid, pl.BASE_MS + v * HOUR, name, email), {
        "name": name, "email": email, "updated_ms": str(pl.BASE_MS + v * HOUR)}


def _invoice_state(db, t, iid):
    row = h.sql_rows(db, "SELECT total::text, status, (extract(epoch FROM updated_date_utc) * 1000)::bigint"
                         " FROM xero_invoices WHERE tenant_id = $1 AND invoice_id = $2", t, iid)
    if not row:
        return None
    lines = h.sql_rows(db, "SELECT position::text, line_item_id::text, description, quantity::text,"
                           " unit_amount::text, line_amount::text FROM xero_invoice_lines"
                           " WHERE tenant_id = $1 AND invoice_id = $2 ORDER BY position", t, iid)
    return {"total": row[0][0], "status": row[0][1], "updated_ms": row[0][2], "lines": lines}


def _contact_state(db, t, cid):
    row = h.sql_rows(db, "SELECT name, email, (extract(epoch FROM updated_date_utc) * 1000)::bigint"
                         " FROM xero_contacts WHERE tenant_id = $1 AND contact_id = $2", t, cid)
    return {"name": row[0][0], "email": row[0][1], "updated_ms": row[0][2]} if row else None


def test_convergence_any_order_ends_in_the_newest_version():
    """Three invoices and three contacts, each with versions v1 < v2 < v3 (UpdatedDateUTC). In each of
    four rounds the mock serves one version per object (an adversarial order per object: v3 first and
    then stale v1/v2 reads, or v1 first, ...) and one new event per object is delivered, in a shuffled
    order, with an event repeated inside a delivery and the previous round's delivery re-sent. After each
    round the queue drains and the mirror must hold the newest version served so far (exact numeric
    text, status, lines); after the last, v3. The audit has one upsert per actual change only."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_conv")
    seed = int(os.environ.get("PIPELINE_SEED") or time.time_ns() % 1_000_000)
    print(f"# PIPELINE_SEED={seed}")
    rng = random.Random(seed)
    orders = [[3, 1, 2, 1], [1, 3, 2, 3], [2, 1, 3, 2]]
    invoices = [str(uuid.uuid4()) for _ in orders]
    contacts = [str(uuid.uuid4()) for _ in orders]
    rows = 0
    previous = None
    env = pl.settled_env(m, db, SETTLED_WORKERS=2, SETTLED_XERO_COALESCE_MS=0)
    with h.Settled(db, env=env) as s:
        for rnd in range(4):
            calls_before = {i: len(m.api_calls("Invoices", i)) for i in invoices}
            calls_before.update({c: len(m.api_calls("Contacts", c)) for c in contacts})
            for k, order in enumerate(orders):
                m.put(t, "invoices", invoices[k], _inv_version(invoices[k], order[rnd])[0])
                m.put(t, "contacts", contacts[k], _con_version(contacts[k], order[rnd])[0])
            events = [pl.xero_event(t, i, "INVOICE") for i in invoices] + [
                pl.xero_event(t, c, "CONTACT") for c in contacts]
            rng.shuffle(events)
            first = pl.delivery(events[:3] + [events[0]])  # the same event twice in one delivery
            second = pl.delivery(events[3:], seq=4)
            pl.post(s, first, f"round {rnd}: first delivery")
            pl.post(s, second, f"round {rnd}: second delivery")
            pl.post(s, second, f"round {rnd}: second delivery again")
            if previous is not None:
                pl.post(s, previous, f"round {rnd}: the previous round's delivery again")
            previous = first
            rows += len(events)
            pl.wait_drained(db, 60, f"round {rnd}: the queue to drain", expect_rows=rows)
            expect_eq(h.sql_value(db, "SELECT count(*) FROM webhook_events"), str(rows),
                      f"round {rnd}: inbox rows (one per distinct event; duplicates add none)")
            expect_eq(pl.queue_counts(db), {"done": rows}, f"round {rnd}: every row done")
            for k, order in enumerate(orders):
                newest = max(order[: rnd + 1])
                for rid, coll in ((invoices[k], "Invoices"), (contacts[k], "Contacts")):
                    expect(len(m.api_calls(coll, rid)) > calls_before[rid],
                           f"round {rnd}: the mock served v{order[rnd]} of {coll} {rid} (it was fetched)")
                expect_eq(_invoice_state(db, t, invoices[k]), _inv_version(invoices[k], newest)[1],
                          f"round {rnd}: invoice {k} (served v{order[rnd]}, newest so far v{newest})")
                expect_eq(_contact_state(db, t, contacts[k]), _con_version(contacts[k], newest)[1],
                          f"round {rnd}: contact {k} (served v{order[rnd]}, newest so far v{newest})")
        metrics = s.metrics()
    for k, order in enumerate(orders):
        changes = sum(1 for r in range(len(order)) if order[r] > max([0] + order[:r]))
        for rid, action in ((invoices[k], "xero.invoice.upsert"), (contacts[k], "xero.contact.upsert")):
            expect_eq(h.sql_value(db, "SELECT count(*) FROM audit_log WHERE action = $1 AND entity_id = $2",
                                  action, rid), str(changes),
                      f"{action} audit rows of object {k} (order {order}: one per newer version)")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM xero_invoices"), "3", "mirrored invoices")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM xero_contacts"), "3", "mirrored contacts")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM organisations WHERE audit_verify(id) IS NOT NULL"), "0",
              "every audit chain verifies")
    done = h.metric_sum(metrics, "settled_worker_events_total", outcome="done") or 0
    coalesced = h.metric_sum(metrics, "settled_worker_events_total", outcome="coalesced") or 0
    expect_eq(done + coalesced, float(rows), "settled_worker_events_total done + coalesced")
    expect_eq(m.stats()["violations"], 0, "rate-limit violations at the mock")


# ---------------------------------------------------------------------------------------------------
# 2. Coalescing


def test_burst_of_events_for_one_invoice_is_one_fetch():
    """20 distinct events (different eventDateUtc) for one invoice, each in its own delivery, sent as
    fast as possible: inside SETTLED_XERO_COALESCE_MS they become at most 2 Invoices calls, and all 20
    rows are done."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_coalesce")
    iid = str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "42.00", lines=[
        pl.line_item(str(uuid.uuid4()), "one", "1.0000", "42.00", "42.00")]))
    m.ctl("DELETE", "requests")
    env = pl.settled_env(m, db, SETTLED_WORKERS=2, SETTLED_XERO_COALESCE_MS=2000)
    with h.Settled(db, env=env) as s:
        started = time.monotonic()
        for i in range(20):
            pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE")], seq=i + 1), f"event {i}")
        took = time.monotonic() - started
        expect(took < 1.8, "the 20 deliveries were sent inside the coalescing window (the test's premise)",
               f"{took:.2f}s")
        counts = pl.wait_drained(db, 30, expect_rows=20)
        metrics = s.metrics()
    expect_eq(counts, {"done": 20}, "inbox rows")
    calls = m.api_calls("Invoices", iid)
    expect(1 <= len(calls) <= 2, "Invoices calls for the burst (at most 2)",
           [(c["path"], c["query"], c["status"]) for c in calls])
    expect_eq(len(m.api_calls()), len(calls), "API calls in all (nothing else was fetched)")
    expect_eq(h.sql_value(db, "SELECT total::text FROM xero_invoices WHERE invoice_id = $1", iid), "42.0000",
              "the invoice is mirrored")
    coalesced = h.metric_sum(metrics, "settled_worker_events_total", outcome="coalesced") or 0
    done = h.metric_sum(metrics, "settled_worker_events_total", outcome="done") or 0
    expect_eq(done + coalesced, 20.0, "settled_worker_events_total done + coalesced")


# ---------------------------------------------------------------------------------------------------
# 3. Exact money


def test_money_is_exact_from_the_wire_to_the_mirror():
    """Amounts are copied verbatim by the mock (pretty-printed with CRLF, as Xero does) and must land in
    numeric(19,4) exactly: 1234567.89, line amounts 0.1 + 0.2 = 0.3, a four-place unit amount, and a
    value with 18 significant digits that no binary float holds (98765432109876.5432 would come back as
    ...876.5469 through a double)."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_money", pretty=True)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    l1, l2 = str(uuid.uuid4()), str(uuid.uuid4())
    m.put(t, "invoices", a, pl.invoice(a, pl.BASE_MS, "1234567.89", amount_due="1234567.89", lines=[
        pl.line_item(l1, "a tenth", "1.0000", "0.1", "0.1"),
        pl.line_item(l2, "a fifth", "0.0162", "12.3456", "0.2"),
    ]))
    m.put(t, "invoices", b, pl.invoice(b, pl.BASE_MS, "98765432109876.5432", amount_due="0.0001",
                                       amount_paid="98765432109876.5431", sub_total="98765432109876.5432"))
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0)
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(t, a, "INVOICE"), pl.xero_event(t, b, "INVOICE")]))
        expect_eq(pl.wait_drained(db, 30, expect_rows=2), {"done": 2}, "inbox rows")
    expect_eq(h.sql_value(db, "SELECT total = 1234567.89 FROM xero_invoices WHERE invoice_id = $1", a), "t",
              "total = 1234567.89 (numeric equality)")
    expect_eq(h.sql_rows(db, "SELECT total::text, sub_total::text, amount_due::text, raw->>'Total'"
                             " FROM xero_invoices WHERE invoice_id = $1", a),
              [["1234567.8900", "1234567.8900", "1234567.8900", "1234567.89"]], "invoice amounts as text")
    expect_eq(h.sql_rows(db, "SELECT quantity::text, unit_amount::text, line_amount::text FROM xero_invoice_lines"
                             " WHERE invoice_id = $1 ORDER BY position", a),
              [["1.0000", "0.1000", "0.1000"], ["0.0162", "12.3456", "0.2000"]], "line amounts")
    expect_eq(h.sql_value(db, "SELECT sum(line_amount) = 0.3 FROM xero_invoice_lines WHERE invoice_id = $1", a),
              "t", "the lines add up to exactly 0.3")
    expect_eq(h.sql_value(db, "SELECT sum(line_amount)::text FROM xero_invoice_lines WHERE invoice_id = $1", a),
              "0.3000", "sum of the lines as text")
    expect_eq(h.sql_rows(db, "SELECT total::text, amount_due::text, amount_paid::text,"
                             " total = amount_due + amount_paid FROM xero_invoices WHERE invoice_id = $1", b),
              [["98765432109876.5432", "0.0001", "98765432109876.5431", "t"]],
              "18 significant digits survive (no float on the way)")
    expect_eq(h.sql_value(db, "SELECT (after->'total')::numeric = 98765432109876.5432 FROM audit_log"
                              " WHERE action = 'xero.invoice.upsert' AND entity_id = $1", b),
              "t", "the audit row carries the exact amount")


# ---------------------------------------------------------------------------------------------------
# 4. Dead-lettering and replay


def test_event_whose_workers_keep_dying_is_parked():
    """An event whose worker stops before finishing it (a lease that expired) as many times as the schedule allows attempts
    times is parked as dead instead of being claimed again, so an event that crashes workers cannot do so
    forever. The crashes are staged in SQL: a row left 'processing' with an expired lease and its attempts
    used up, beside one that still has an attempt left."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_poison")
    poison, retry = str(uuid.uuid4()), str(uuid.uuid4())
    m.put(t, "invoices", retry, pl.invoice(retry, pl.BASE_MS, "7.00"))
    env = pl.settled_env(m, db, SETTLED_WORKERS=0, SETTLED_XERO_COALESCE_MS=0, SETTLED_RETRY_SCHEDULE="1s,1s")
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(t, poison, "INVOICE"), pl.xero_event(t, retry, "INVOICE")]))
    h.sql(db, "UPDATE webhook_events SET status = 'processing', lease_owner = 'gone:1:0',"
              " next_attempt_at = now() - interval '1 second',"
              " attempts = CASE WHEN resource_id = $1 THEN 3 ELSE 2 END", poison)
    with h.Settled(db, env=dict(env, SETTLED_WORKERS=1)) as s:
        pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM webhook_events WHERE resource_id = $1", retry)
                    == "done", 30, "the row with an attempt left to be processed")
        pl.wait_for(lambda: pl.metric(s, "settled_worker_events_total", outcome="dead") == 1.0, 15,
                    "the parked row to be counted")
        expect_in("parked 1 events as dead", s.log(), "the log says why")
    expect_eq(h.sql_rows(db, "SELECT status, attempts, lease_owner, last_error FROM webhook_events"
                             " WHERE resource_id = $1", poison),
              [["dead", "3", None, "the worker processing it stopped before finishing, 3 times"]], "the parked row")
    expect_eq(h.sql_value(db, "SELECT attempts FROM webhook_events WHERE resource_id = $1", retry), "3",
              "the other row's lost attempt counted")
    expect_eq(len(m.api_calls("Invoices", poison)), 0, "no call for the parked event")


def test_failing_event_is_parked_dead_and_an_operator_can_replay_it():
    """Every call answers 500: after the 3 attempts SETTLED_RETRY_SCHEDULE="50ms,100ms" allows, the row is
    'dead' with attempts 3 and the 500 in last_error, and exactly 3 calls were made. Once Xero is healthy
    again nothing happens to the dead row by itself; the operator's replay (status pending, attempts 0,
    due now) processes it."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_dead")
    iid = str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "10.00"))
    m.faults({"mode": "500", "count": 0, "tenant": t})
    m.ctl("DELETE", "requests")
    env = pl.settled_env(m, db, SETTLED_WORKERS=2, SETTLED_XERO_COALESCE_MS=0, SETTLED_RETRY_SCHEDULE="50ms,100ms")
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE")]))
        pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM webhook_events") == "dead", 30,
                    "the row to be parked dead")
        row = h.sql_rows(db, "SELECT id, status, attempts, last_error, lease_owner, processed_at FROM webhook_events")
        rid, status, attempts, last_error, lease_owner, processed_at = row[0]
        expect_eq((status, attempts, lease_owner, processed_at), ("dead", "3", None, None), "the parked row")
        expect_in("500", last_error or "", "last_error names Xero's answer")
        expect_eq(len(m.api_calls("Invoices", iid)), 3, "calls to Xero: one per attempt")
        metrics = s.metrics()
        expect_eq(h.metric_sum(metrics, "settled_worker_events_total", outcome="dead"), 1.0, "dead outcomes")
        expect_eq(h.metric_sum(metrics, "settled_worker_events_total", outcome="failed"), 2.0, "failed outcomes")
        expect_eq(h.metric_sum(metrics, "settled_xero_api_calls_total", status="500"), 3.0, "calls answered 500")

        # Xero recovers; a parked row stays parked (10 x the longest backoff, 10 polls)
        m.clear_faults()
        time.sleep(2.0)
        expect_eq(h.sql_rows(db, "SELECT status, attempts FROM webhook_events"), [["dead", "3"]],
                  "the dead row after Xero recovered")
        expect_eq(len(m.api_calls("Invoices", iid)), 3, "no call for a dead row")
        expect_eq(h.sql_value(db, "SELECT count(*) FROM xero_invoices"), "0", "nothing mirrored")
        pl.wait_for(lambda: pl.metric(s, "settled_queue_depth", status="dead") == 1.0, 15,
                    "settled_queue_depth{status=dead} = 1")

        # the operator's replay
        h.sql(db, "UPDATE webhook_events SET status = 'pending', attempts = 0, next_attempt_at = now(),"
                  " last_error = NULL WHERE id = $1 AND status = 'dead'", rid)
        pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM webhook_events") == "done", 30,
                    "the replayed row to be done")
    expect_eq(h.sql_rows(db, "SELECT status, attempts, last_error, processed_at IS NOT NULL FROM webhook_events"),
              [["done", "1", None, "t"]], "the replayed row")
    expect_eq(h.sql_value(db, "SELECT total::text FROM xero_invoices WHERE invoice_id = $1", iid), "10.0000",
              "the invoice is mirrored after the replay")
    expect_eq(len(m.api_calls("Invoices", iid)), 4, "one more call, for the replay")


def test_retry_waits_follow_the_schedule():
    """docs/configuration.md: SETTLED_RETRY_SCHEDULE lists the waits between attempts, each lengthened by at most a
    fifth, and the event is dead when the attempt after the last wait fails. With waits of 400, 800, 400, 800 and
    400 ms, every failed attempt must be due again at most its wait + 20% after it failed. The row is watched as it
    fails: the time left until next_attempt_at, seen right after the failure was committed, can only be smaller
    than the wait the worker chose, so a value above wait x 1.2 proves a wrong one (the old doubling backoff gives
    400, 800, 1600, 3200 ms)."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_backoff")
    iid = str(uuid.uuid4())
    m.put(t, "invoices", iid, pl.invoice(iid, pl.BASE_MS, "10.00"))
    m.faults({"mode": "500", "count": 0, "tenant": t})
    waits = {"1": 400, "2": 800, "3": 400, "4": 800, "5": 400}
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_COALESCE_MS=0, SETTLED_WORKER_POLL_MS=100,
                         SETTLED_RETRY_SCHEDULE="400ms,800ms,400ms,800ms,400ms", SETTLED_CIRCUIT_FAILURES=100)
    left = {}  # attempts -> ms until next_attempt_at when first seen failed
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(t, iid, "INVOICE")]))
        deadline = time.monotonic() + 40
        while True:
            row = h.sql_rows(db, "SELECT status, attempts, (extract(epoch FROM next_attempt_at - clock_timestamp())"
                                 " * 1000)::int FROM webhook_events")
            if row and row[0][0] == "failed" and row[0][1] not in left:
                left[row[0][1]] = int(row[0][2])
            if row and row[0][0] == "dead":
                break
            expect(time.monotonic() < deadline, "the row reached dead within 40 s", (row, left))
    expect_eq(sorted(left), ["1", "2", "3", "4", "5"], "failed attempts observed before the row was parked")
    over = {k: v for k, v in left.items() if v > waits[k] * 1.2}
    expect(not over, "attempts due again later than their wait of the schedule + 20%", (left, waits))
    expect(left["2"] > 400 * 1.2, "the second wait is the schedule's 800 ms, not the first's again", left)
    expect_eq(h.sql_value(db, "SELECT attempts FROM webhook_events"), "6", "attempts: one, then one per wait")


# ---------------------------------------------------------------------------------------------------
# 5. settled sync xero

SYNC_LINE = re.compile(r"^\s+(contacts|invoices|creditnotes)\s+fetched (\d+), changed (\d+), unchanged (\d+)\s*$",
                       re.M)


def _sync(m, db, what):
    res = h.run_settled(["sync", "xero"], pl.settled_env(m, db), timeout=120)
    expect_eq(res.returncode, 0, f"{what}: settled sync xero exit code (stderr {res.stderr[-2000:]!r})")
    counts = {k: (int(f), int(c), int(u)) for k, f, c, u in SYNC_LINE.findall(res.stdout)}
    expect_eq(sorted(counts), ["contacts", "creditnotes", "invoices"], f"{what}: count lines (stdout {res.stdout!r})")
    return counts


def test_sync_counts_second_run_and_drift_repair():
    """`settled sync xero` pages through everything (150 invoices: 2 pages) and prints counts that match
    the mirror; a second run sends If-Modified-Since and changes nothing (the records within 5 minutes of
    the newest mirrored UpdatedDateUTC of their kind, the sweep's overlap, come back unchanged); a record changed in Xero without any webhook is picked up by the next
    run, and by the scheduled sweep of `settled serve` (SETTLED_XERO_SYNC_INTERVAL) with its metric."""
    m = mock()
    t = pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_sync")
    now = int(time.time() * 1000)
    old, recent = now - 20 * 60 * 1000, now - 60 * 1000
    inv_ids = [str(uuid.uuid4()) for _ in range(150)]
    con_ids = [str(uuid.uuid4()) for _ in range(3)]
    cn_ids = [str(uuid.uuid4()) for _ in range(2)]
    invoices = [pl.invoice(iid, (old if k < 145 else recent) + k, f"{k + 1}.{k % 100:02d}", lines=[
        pl.line_item(str(uuid.uuid5(uuid.UUID(iid), "l")), f"line of {k}", "1.0000", f"{k + 1}.{k % 100:02d}",
                     f"{k + 1}.{k % 100:02d}")]) for k, iid in enumerate(inv_ids)]
    contacts = [pl.contact(cid, (old if k < 2 else recent) + k, f"Sync Contact {k}", f"sync{k}@example.com")
                for k, cid in enumerate(con_ids)]
    notes = [pl.credit_note(cnid, old + k, "5.50") for k, cnid in enumerate(cn_ids)]
    m.load('{"tenants": {"%s": {"invoices": [%s], "contacts": [%s], "creditnotes": [%s]}}}'
           % (t, ", ".join(invoices), ", ".join(contacts), ", ".join(notes)))
    m.ctl("DELETE", "requests")
    expected_total = sum(decimal.Decimal(f"{k + 1}.{k % 100:02d}") for k in range(150))

    first = _sync(m, db, "first run")
    expect_eq(first, {"contacts": (3, 3, 0), "invoices": (150, 150, 0), "creditnotes": (2, 2, 0)}, "first run counts")
    expect_eq(h.sql_rows(db, "SELECT (SELECT count(*) FROM xero_invoices), (SELECT sum(total) FROM xero_invoices),"
                             " (SELECT count(*) FROM xero_invoice_lines), (SELECT count(*) FROM xero_contacts),"
                             " (SELECT count(*) FROM xero_credit_notes)"),
              [["150", str(expected_total.quantize(decimal.Decimal("0.0001"))), "150", "3", "2"]],
              "the mirror after the first run (invoices, sum of totals, lines, contacts, credit notes)")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM audit_log WHERE action = 'xero.invoice.upsert'"
                              " AND correlation_id = $1", f"sync:{t}:invoices"), "150", "invoice upserts audited")
    pages = [r["query"] for r in m.api_calls("Invoices")]
    expect_eq(len(pages), 2, f"Invoices pages fetched (100 + 50): {pages}")
    expect(all(r["if_modified_since"] is None for r in m.api_calls()), "the first run has no If-Modified-Since")
    expect_eq(h.sql_rows(db, "SELECT resource, last_fetched::text, last_changed::text, last_unchanged::text"
                             " FROM xero_sync_state ORDER BY resource"),
              [["contacts", "3", "3", "0"], ["creditnotes", "2", "2", "0"], ["invoices", "150", "150", "0"]],
              "xero_sync_state after the first run")

    upserts = "SELECT count(*) FROM audit_log WHERE action LIKE 'xero.%.upsert'"
    audits = h.sql_value(db, upserts)
    m.ctl("DELETE", "requests")
    second = _sync(m, db, "second run")
    # the overlap is measured on Xero's clock, from the newest record of each kind: the recent contact, the 5
    # recent invoices, and both credit notes (a millisecond apart) come back, unchanged
    expect_eq(second, {"contacts": (1, 0, 1), "invoices": (5, 0, 5), "creditnotes": (2, 0, 2)},
              "second run counts (only the records of the overlap come back, unchanged)")
    expect(all(r["if_modified_since"] for r in m.api_calls()), "the second run sends If-Modified-Since",
           [r["if_modified_since"] for r in m.api_calls()])
    expect_eq(h.sql_value(db, upserts), audits, "upserts audited by the second run (none)")

    # drift: Xero changes an old invoice and a contact, and no webhook says so
    m.put(t, "invoices", inv_ids[0], pl.invoice(inv_ids[0], now + 1000, "999.99", status="PAID", lines=[
        pl.line_item(str(uuid.uuid4()), "changed", "1.0000", "999.99", "999.99")]))
    m.put(t, "contacts", con_ids[0], pl.contact(con_ids[0], now + 1000, "Renamed Contact", "renamed@example.com"))
    third = _sync(m, db, "third run")
    expect_eq(third, {"contacts": (2, 1, 1), "invoices": (6, 1, 5), "creditnotes": (2, 0, 2)}, "third run counts")
    expect_eq(h.sql_rows(db, "SELECT total::text, status FROM xero_invoices WHERE invoice_id = $1", inv_ids[0]),
              [["999.9900", "PAID"]], "the drifted invoice is repaired")
    expect_eq(h.sql_rows(db, "SELECT description, line_amount::text FROM xero_invoice_lines WHERE invoice_id = $1",
                         inv_ids[0]), [["changed", "999.9900"]], "with its lines")
    expect_eq(h.sql_value(db, "SELECT name FROM xero_contacts WHERE contact_id = $1", con_ids[0]), "Renamed Contact",
              "the drifted contact is repaired")
    expect_eq(int(h.sql_value(db, upserts)) - int(audits), 2, "upserts audited by the third run (one per change)")

    # the scheduled sweep does the same inside `settled serve`, and counts it
    m.put(t, "invoices", inv_ids[1], pl.invoice(inv_ids[1], now + 2000, "1.23", status="VOIDED"))
    time.sleep(1.2)  # the last run is now older than the 1-second interval
    env = pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_SYNC_INTERVAL=1)
    with h.Settled(db, env=env) as s:
        pl.wait_for(lambda: h.sql_value(db, "SELECT status FROM xero_invoices WHERE invoice_id = $1",
                                        inv_ids[1]) == "VOIDED", 30, "the scheduled sweep to repair the drift")
        pl.wait_for(lambda: pl.metric(s, "settled_xero_drift_total", kind="xero.invoices", result="changed") == 1.0,
                    10, "settled_xero_drift_total{kind=xero.invoices,result=changed} = 1")
        expect_in("drift repaired", s.log(), "the sweep logs the repair")
    expect_eq(h.sql_value(db, "SELECT total::text FROM xero_invoices WHERE invoice_id = $1", inv_ids[1]), "1.2300",
              "the swept invoice")


# ---------------------------------------------------------------------------------------------------
# 6. A tenant that is not connected


def test_event_of_a_tenant_no_organisation_connected_is_ignored():
    """A delivery carries an event of a connected tenant and one of a tenant no organisation has connected
    (the Xero app's webhooks cover every tenant connected to the app, wherever). The first is done; the
    second is ignored at its first attempt, with a log line naming the tenant: it is neither retried as a
    failure nor parked dead, and nothing calls Xero for it. Once the tenant is connected, its first drift
    sweep (a backfill) brings in the invoice the ignored event named."""
    m = mock()
    t, unknown = pl.new_tenant(), pl.new_tenant()
    db = pl.connected_db(m, [t], "pipe_tenant")
    good, orphan = str(uuid.uuid4()), str(uuid.uuid4())
    m.put(t, "invoices", good, pl.invoice(good, pl.BASE_MS, "1.00"))
    m.put(unknown, "invoices", orphan, pl.invoice(orphan, pl.BASE_MS, "2.00"))
    env = pl.settled_env(m, db, SETTLED_WORKERS=2, SETTLED_XERO_COALESCE_MS=0,
                         SETTLED_RETRY_SCHEDULE="100ms,200ms,400ms,400ms,400ms,400ms,400ms,400ms,400ms")
    with h.Settled(db, env=env) as s:
        pl.post(s, pl.delivery([pl.xero_event(unknown, orphan, "INVOICE"), pl.xero_event(t, good, "INVOICE")]))
        expect_eq(pl.wait_drained(db, 30, expect_rows=2), {"done": 1, "ignored": 1}, "inbox rows")
        expect_eq(h.sql_rows(db, "SELECT status, attempts, last_error, processed_at IS NOT NULL FROM webhook_events"
                                 " WHERE account = $1", unknown), [["ignored", "1", None, "t"]],
                  "the unconnected tenant's event: ignored at its first attempt, not failed")
        time.sleep(1.0)  # 10 x the backoff: a failed row would have been retried by now
        expect_eq(h.sql_value(db, "SELECT attempts FROM webhook_events WHERE account = $1", unknown), "1",
                  "it is not retried")
        expect_in(f"Xero tenant {unknown} is connected to no organisation", s.log(), "the log names the tenant")
        expect_eq(m.api_calls(tenant=unknown), [], "no call to Xero for a tenant without a connection")
        expect_eq(pl.metric(s, "settled_worker_events_total", outcome="ignored"), 1.0, "ignored outcomes")
        expect_eq(pl.metric(s, "settled_worker_events_total", outcome="failed") or 0, 0, "failed outcomes")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM xero_invoices WHERE tenant_id = $1", unknown), "0",
              "nothing mirrored for it")

    # an admin connects the tenant: the first sweep backfills what the ignored event named
    m.authorise("RT-PIPE-2", [t, unknown])
    pl.connect(m, db, "RT-PIPE-2")
    w = pl.Worker(pl.settled_env(m, db, SETTLED_WORKERS=1, SETTLED_XERO_SYNC_INTERVAL=3600))
    try:
        pl.wait_for(lambda: h.sql_value(db, "SELECT total::text FROM xero_invoices WHERE tenant_id = $1"
                                            " AND invoice_id = $2", unknown, orphan) == "2.0000", 30,
                    "the first sweep of the newly connected tenant to mirror the invoice")
    finally:
        w.stop()
    expect_in("first sweep backfilled", w.log(), "the sweep was a backfill")


try:
    h.run(globals())
finally:
    if _mock is not None:
        _mock.stop()
