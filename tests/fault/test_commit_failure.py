# SPDX-License-Identifier: MIT
"""A transaction that fails at COMMIT is a failure: no delivery of its batch is answered 2xx.

A deferred constraint trigger on the inbox refuses, at commit time, every event whose id starts with
"evt_b". Every statement of a batch succeeds; only the COMMIT at the batch's Sync fails. Eight threads
post mixed deliveries concurrently over keep-alive connections (one in five refused), so refused and
innocent deliveries share batches. Each innocent delivery is re-posted, as a provider retries, until it
is answered 2xx.

What must hold: every delivery answered 2xx is in the table; no refused event is stored and every one of
them was answered 503 with Retry-After, never 2xx; every innocent delivery was accepted in the end (its
neighbour's failure cost it at most a retry); a GoCardless batch holding one refused event is refused as
a whole and accepted in full once the cause is gone.

Why this can fail: a server that reads a batch's Sync as "committed" whatever came before it answers 2xx
for every delivery of a batch whose COMMIT failed, and loses them all.
"""
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
import harness  # noqa: E402

WORKERS = 8
PER_WORKER = 60
MAX_TRIES = 20

REFUSE_AT_COMMIT = """
CREATE FUNCTION t_refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event_id LIKE 'evt_b%' THEN
        RAISE EXCEPTION 'refused at commit: %', NEW.event_id;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER t_refuse_at_commit AFTER INSERT ON {table}
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION t_refuse_at_commit();
"""


def inbox_table(db):
    """The table the intake inserts events into (webhook_events, or its base table if it is a view)."""
    kind = harness.sql_value(db, "SELECT relkind FROM pg_class WHERE relname = 'webhook_events'")
    return "webhook_events" if kind == "r" else "inbox_events"


def test_commit_failures_are_never_acknowledged():
    db = harness.new_database("commit_failure")
    table = inbox_table(db)
    harness.sql(db, REFUSE_AT_COMMIT.format(table=table))
    server = harness.Settled(db, threads=2)
    lock = threading.Lock()
    acked, refused_answers, innocent_tries, failures = [], {}, {}, []

    def worker(w):
        client = faultlib.KeepAlive(server.port, timeout=15.0)
        try:
            for i in range(PER_WORKER):
                bad = i % 5 == 2
                eid = faultlib.new_event_id("b" if bad else "o")  # refused ids start with evt_b
                _, body, headers = faultlib.stripe_delivery(eid)
                for attempt in range(1, MAX_TRIES + 1):
                    status, hdrs, _ = client.request("POST", "/webhooks/stripe", body, headers)
                    with lock:
                        if 200 <= status < 300:
                            acked.append(eid)
                        if bad:
                            refused_answers.setdefault(eid, []).append((status, hdrs.get("retry-after")))
                    if bad or 200 <= status < 300:
                        break
                    if status != 503:
                        with lock:
                            failures.append((eid, status))
                        break
                with lock:
                    if not bad:
                        innocent_tries[eid] = attempt
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    harness.expect(not any(t.is_alive() for t in threads), "the posting threads finished")
    harness.expect_eq(failures, [], "answers other than 2xx and 503")

    counts = faultlib.assert_all_stored(db, acked, "every 2xx is stored: ")
    bad_stored = [e for e in counts if e.startswith("evt_b")]
    harness.expect_eq(bad_stored, [], "refused events stored")
    bad_acked = [e for e in acked if e.startswith("evt_b")]
    harness.expect_eq(bad_acked, [], "refused events answered 2xx")
    for eid, answers in refused_answers.items():
        status, retry_after = answers[0]
        harness.expect_eq(status, 503, f"{eid}: refused at commit")
        harness.expect(retry_after is not None and retry_after.isdigit(), f"{eid}: Retry-After", retry_after)
    innocent = [e for e in innocent_tries]
    not_accepted = [e for e in innocent if e not in set(acked)]
    harness.expect_eq(not_accepted, [], "innocent deliveries never accepted")
    retried = sum(1 for n in innocent_tries.values() if n > 1)
    print(f"# {len(acked)} acknowledged, all stored; {len(refused_answers)} refused at commit, none stored; "
          f"{retried} of {len(innocent)} innocent deliveries needed a retry")

    # A batch delivery with one refused event is refused whole, then accepted whole once the cause is gone.
    events = [{"id": f"EVCF{i:04d}", "created_at": "2026-12-03T10:00:00.000Z", "resource_type": "payments",
               "action": "confirmed", "links": {"payment": f"PMCF{i:04d}", "organisation": "OR123"}}
              for i in range(5)]
    events[3]["id"] = "evt_bad_in_batch"
    body = json.dumps({"events": events}).encode()
    headers = {"Content-Type": "application/json", "Webhook-Signature": harness.sign_gocardless(body)}
    client = faultlib.KeepAlive(server.port)
    try:
        status, hdrs, _ = client.request("POST", "/webhooks/gocardless", body, headers)
        harness.expect_eq(status, 503, "a batch with a refused event")
        stored = int(harness.sql_value(db, "SELECT count(*) FROM webhook_events WHERE provider = 'gocardless'"))
        harness.expect_eq(stored, 0, "events of the refused batch stored")
        harness.sql(db, f"DROP TRIGGER t_refuse_at_commit ON {table}")
        status, _, _ = client.request("POST", "/webhooks/gocardless", body, headers)
        harness.expect_eq(status, 204, "the same batch, once the cause is gone")
    finally:
        client.close()
    stored = int(harness.sql_value(db, "SELECT count(*) FROM webhook_events WHERE provider = 'gocardless'"))
    harness.expect_eq(stored, 5, "events of the accepted batch")
    server.stop()


if __name__ == "__main__":
    harness.run(globals())
