# SPDX-License-Identifier: MIT
"""test_sql_writeback.py: the SQL side of the payment write-back to Xero (schema/0013_xero_writebacks.sql and
schema/functions/xero_writeback.sql), through psql on fresh databases migrated by the real `settled migrate`:
what xero_writeback_plan does with a new, the same and a changed target (generations, 'unchanged', audit rows),
the claim's lease and its fencing by owner and generation, the retry schedule and 'dead', refusals, accounts
('unconfigured'), parking rows whose senders kept dying, and an admin's retry.

Python 3 standard library only; run through ctest (integration/test_sql_writeback) or directly with
SETTLED_TEST_PG_URL and SETTLED_BIN set.
"""

import json

import harness as h
from harness import expect, expect_eq

TENANT = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
INVOICE = "0b4b2f7f-6a4c-4a8e-9c57-2d9a0e7c3f10"
INVOICE_2 = "5d2f6e1a-8c3b-4f7e-9a1d-2b3c4d5e6f70"
XPAY = "9f0e8d7c-6b5a-4938-8271-605f4e3d2c1b"
WAITS = "{0,1000,2000}"  # a retry schedule of three waits: dead at the fourth failed attempt


def setup(prefix):
    """A migrated database with organisation 1 (and 2) and one Stripe payment of organisation 1; returns (db,
    payment id)."""
    db = h.new_database(prefix)
    h.sql(db, "INSERT INTO organisations (slug, name) VALUES ('acme', 'Acme'), ('other', 'Other')")
    pid = new_payment(db, "pi_1")
    return db, pid


def new_payment(db, object_id, org=1):
    return h.sql_value(
        db,
        "WITH i AS (INSERT INTO payments (organisation_id, provider, object_id, xero_tenant_id, xero_invoice_id,"
        " amount_minor, currency, status, raw) VALUES ($1::bigint, 'stripe', $2, $3, $4::uuid, 1000, 'GBP',"
        " 'succeeded', '{}') RETURNING id) SELECT id FROM i",
        str(org), object_id, TENANT, INVOICE,
    )


def plan(db, pid, target, invoice=INVOICE, currency="gbp", paid_on="2026-01-15", org=1, correlation="req-1"):
    return h.sql_value(
        db, "SELECT xero_writeback_plan($1::bigint, $2::bigint, $3::uuid, $4::uuid, $5, $6::bigint, $7::date, $8)",
        str(org), pid, TENANT, invoice, currency, str(target), paid_on, correlation,
    )


def row(db, pid):
    r = h.sql_rows(
        db,
        "SELECT id, status, generation, target_minor, written_minor, xero_payment_id, attempts, currency, paid_on,"
        " last_error, lease_owner FROM xero_writebacks WHERE payment_id = $1::bigint",
        pid,
    )
    if not r:
        return None
    keys = ["id", "status", "generation", "target", "written", "xero_payment", "attempts", "currency", "paid_on",
            "error", "owner"]
    return dict(zip(keys, r[0]))


def audit(db, wid):
    return [
        (a, act, json.loads(b) if b else None, json.loads(af), c)
        for a, act, b, af, c in h.sql_rows(
            db,
            "SELECT actor, action, before, after, correlation_id FROM audit_log"
            " WHERE entity_type = 'xero_writeback' AND entity_id = $1 ORDER BY id",
            wid,
        )
    ]


def claim(db, owner, lease_ms=60000, limit=10, account="090"):
    return h.sql_rows(
        db, "SELECT id, generation, attempts, account_code, paid_on, provider, object_id, token_id"
            " FROM xero_writeback_claim($1, $2::bigint, $3::integer, $4)",
        owner, str(lease_ms), str(limit), account,
    )


def step(db, wid, owner, gen, action, xpay=None, amount=None, invoice=INVOICE):
    q = ("SELECT xero_writeback_step($1::bigint, $2, $3::integer, $4, " +
         ("$5::uuid, $6::bigint, $7::uuid, $8::uuid, '090', 'c'" if xpay else "NULL, NULL, NULL, NULL, NULL, 'c'") +
         ")")
    args = [wid, owner, str(gen), action] + ([xpay, str(amount), TENANT, invoice] if xpay else [])
    return h.sql_value(db, q, *args)


def fail(db, wid, owner, gen, kind, error="boom", wait_ms=0):
    return h.sql_value(
        db, "SELECT xero_writeback_fail($1::bigint, $2, $3::integer, $4, $5, $6::bigint[], $7::bigint, 'c')",
        wid, owner, str(gen), kind, error, WAITS, str(wait_ms),
    )


def expect_fails(fn, needle, what):
    """fn() must fail with an error that contains needle."""
    try:
        fn()
    except h.Failure as e:
        expect(needle in str(e), f"{what}: the error says {needle!r}", str(e))
    else:
        raise h.Failure(f"{what}: succeeded")


def make_due(db, wid):
    h.sql(db, "UPDATE xero_writebacks SET next_attempt_at = now() WHERE id = $1::bigint", wid)


def test_a_new_target_is_planned_once_and_audited():
    db, pid = setup("wb_plan")
    expect_eq(plan(db, pid, 1250), "planned", "first plan")
    r = row(db, pid)
    expect_eq((r["status"], r["generation"], r["target"], r["written"], r["xero_payment"], r["currency"],
               r["paid_on"], r["attempts"]),
              ("pending", "1", "1250", "0", None, "GBP", "2026-01-15", "0"), "the new row")
    for again in range(2):  # a duplicate delivery, a replay, a refetch
        expect_eq(plan(db, pid, 1250, correlation=f"dup-{again}"), "unchanged", f"same target again ({again})")
    r2 = row(db, pid)
    expect_eq((r2["generation"], r2["status"]), ("1", "pending"), "generation and status after the same target")
    a = audit(db, r["id"])
    expect_eq(len(a), 1, "audit rows: one per new target, none for 'unchanged'")
    expect_eq(a[0][:2], ("system:payments", "xero.writeback.plan"), "actor and action")
    expect_eq((a[0][2], a[0][3]["target_minor"], a[0][3]["generation"], a[0][4]), (None, 1250, 1, "req-1"),
              "before, after's target and generation, correlation")
    expect_eq(h.sql_value(db, "SELECT audit_verify(1)"), None, "the audit chain verifies")


def test_a_changed_target_bumps_the_generation():
    db, pid = setup("wb_gen")
    plan(db, pid, 1000)
    wid = row(db, pid)["id"]
    got = claim(db, "A")
    expect_eq([g[:2] for g in got], [[wid, "1"]], "claimed row and generation")
    expect_eq(step(db, wid, "A", 1, "written", XPAY, 1000), "in_sync", "written at the target")
    r = row(db, pid)
    expect_eq((r["status"], r["written"], r["xero_payment"], r["attempts"], r["owner"]),
              ("in_sync", "1000", XPAY, "0", None), "in sync")
    expect_eq(plan(db, pid, 1000), "unchanged", "the same target once in sync")
    # a refund: the net contribution falls
    expect_eq(plan(db, pid, 600, correlation="refund-1"), "planned", "a lower target")
    r = row(db, pid)
    expect_eq((r["status"], r["generation"], r["target"], r["written"], r["xero_payment"]),
              ("pending", "2", "600", "1000", XPAY), "pending at generation 2, the old payment still recorded")
    expect_eq(plan(db, pid, 0, correlation="refund-2"), "planned", "target 0")
    expect_eq((row(db, pid)["generation"], row(db, pid)["target"]), ("3", "0"), "generation 3, target 0")
    # moving to another invoice is a new target too, even at the same amount
    expect_eq(plan(db, pid, 0, invoice=INVOICE_2), "planned", "another invoice")
    expect_eq(row(db, pid)["generation"], "4", "generation after a new invoice")
    a = audit(db, wid)
    plans = [x for x in a if x[1] == "xero.writeback.plan"]
    expect_eq([(x[2] or {}).get("target_minor") for x in plans], [None, 1000, 600, 0], "before of each plan")
    expect_eq([x[3]["target_minor"] for x in plans], [1000, 600, 0, 0], "after of each plan")
    expect_eq([x[4] for x in plans][1], "refund-1", "the correlation of the refund's plan")
    written = [x for x in a if x[1] == "xero.writeback.written"]
    expect_eq(len(written), 1, "the write is audited once")
    expect_eq((written[0][0], written[0][3]["written_minor"], written[0][3]["xero_payment_id"]),
              ("system:writeback", 1000, XPAY), "actor, written amount, Xero payment")
    expect_eq(h.sql_value(db, "SELECT audit_verify(1)"), None, "the audit chain verifies")


def test_zero_for_a_payment_never_planned_makes_no_row():
    db, pid = setup("wb_zero")
    expect_eq(plan(db, pid, 0), "unchanged", "target 0, nothing written ever")
    expect_eq(row(db, pid), None, "no row")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM audit_log WHERE entity_type = 'xero_writeback'"), "0", "no audit")


def test_the_payment_must_be_the_organisations():
    db, pid = setup("wb_org")
    expect_fails(lambda: plan(db, pid, 500, org=2), "is not one of organisation 2", "another organisation's payment")
    expect_eq(row(db, pid), None, "no row")
    expect_fails(lambda: plan(db, pid, -1), "at least 0", "a negative target")


def test_the_day_paid_follows_without_a_new_target():
    db, pid = setup("wb_day")
    plan(db, pid, 700, paid_on="2026-01-15")
    expect_eq(plan(db, pid, 700, paid_on="2026-01-17"), "unchanged", "another day, same amount")
    r = row(db, pid)
    expect_eq((r["paid_on"], r["generation"]), ("2026-01-17", "1"), "the day follows, generation stays")
    expect_eq(claim(db, "A")[0][4], "2026-01-17", "the claim's paid_on")


def test_claims_are_leased_and_fenced():
    db, pid = setup("wb_lease")
    plan(db, pid, 1000)
    wid = row(db, pid)["id"]
    got = claim(db, "A")
    expect_eq([g[0] for g in got], [wid], "A claims it")
    expect_eq(got[0][2:8], ["1", "090", "2026-01-15", "stripe", "pi_1", None],
              "attempts, account, day, provider, object id, token (no tenant connected)")
    expect_eq(claim(db, "B"), [], "B cannot claim a leased row")
    expect_eq(step(db, wid, "B", 1, "checked"), None, "B cannot record a step on A's row")
    expect_eq(fail(db, wid, "B", 1, "refused"), None, "nor a failure")
    expect_eq(h.sql_value(db, "SELECT xero_writeback_renew($1::bigint, 'B', 1000)", wid), "f", "nor renew it")
    expect_eq(h.sql_value(db, "SELECT xero_writeback_renew($1::bigint, 'A', 60000)", wid), "t", "A renews it")
    # a new target while A is sending: the lease stays A's, nobody else may take the row
    expect_eq(plan(db, pid, 400), "planned", "a new target during the send")
    expect_eq(claim(db, "B"), [], "still A's while its lease lasts")
    # A finishes the call it made for generation 1: recorded, but generation 2 still needs work
    expect_eq(step(db, wid, "A", 1, "written", XPAY, 1000), "pending", "A's write of the older target")
    r = row(db, pid)
    expect_eq((r["written"], r["xero_payment"], r["generation"], r["owner"]), ("1000", XPAY, "2", None),
              "written recorded, lease released")
    got = claim(db, "B")
    expect_eq([g[:3] for g in got], [[wid, "2", "1"]], "B claims generation 2 with a fresh attempt count")
    # a failure recorded for an older generation does not back the row off or refuse it
    expect_eq(plan(db, pid, 300), "planned", "generation 3")
    expect_eq(fail(db, wid, "B", 2, "refused", "locked"), "pending", "B's refusal of generation 2")
    r = row(db, pid)
    expect_eq((r["status"], r["error"]), ("pending", None), "generation 3 is not refused")
    expect(h.sql_value(db, "SELECT next_attempt_at <= now() FROM xero_writebacks WHERE id = $1::bigint", wid) == "t",
           "and it is due now")
    # an expired lease may be taken over
    claim(db, "C", lease_ms=1)
    h.sql(db, "SELECT pg_sleep(0.05)")
    got = claim(db, "D")
    expect_eq([g[0] for g in got], [wid], "D takes over C's expired lease")
    expect_eq(step(db, wid, "C", 3, "checked"), None, "C's late step changes nothing")
    expect_eq(row(db, pid)["owner"], "D", "the row is D's")


def test_an_unrecorded_call_is_remembered_across_new_targets():
    db, pid = setup("wb_unsure")
    plan(db, pid, 1000)
    wid = row(db, pid)["id"]
    got = h.sql_rows(db, "SELECT attempts, unsure FROM xero_writeback_claim('A', 1, 10, '090')")
    expect_eq(got, [["1", "f"]], "the first claim: nothing was ever sent")
    expect_eq(h.sql_value(db, "SELECT xero_writeback_renew($1::bigint, 'A', 1)", wid), "t", "A is about to call")
    # A dies with its call in flight; a refund replans the row meanwhile
    h.sql(db, "SELECT pg_sleep(0.05)")
    expect_eq(plan(db, pid, 400), "planned", "a new target")
    got = h.sql_rows(db, "SELECT attempts, unsure, generation FROM xero_writeback_claim('B', 60000, 10, '090')")
    expect_eq(got, [["1", "t", "2"]], "B's claim: a fresh attempt count, but A's call is still unaccounted for")
    expect_eq(step(db, wid, "B", 2, "checked"), "pending", "B finds nothing of ours in Xero")
    got = h.sql_rows(db, "SELECT unsure FROM xero_writeback_claim('B', 60000, 10, '090')")
    expect_eq(got, [["f"]], "a recorded step clears it")


def test_transient_failures_follow_the_schedule_then_dead():
    db, pid = setup("wb_retry")
    plan(db, pid, 1000)
    wid = row(db, pid)["id"]
    statuses = []
    for attempt in range(1, 5):
        make_due(db, wid)
        got = claim(db, "A")
        expect_eq([g[0] for g in got], [wid], f"claim {attempt}")
        expect_eq(got[0][2], str(attempt), f"attempts at claim {attempt}")
        statuses.append(fail(db, wid, "A", 1, "transient", f"Xero API answered 503 ({attempt})"))
        if attempt == 2:
            wait = h.sql_value(db, "SELECT extract(epoch FROM next_attempt_at - now()) FROM xero_writebacks"
                                   " WHERE id = $1::bigint", wid)
            expect(0.8 <= float(wait) <= 1.3, "the second wait is the schedule's 1 s (+ up to a fifth)", wait)
    expect_eq(statuses, ["pending", "pending", "pending", "dead"], "dead after the schedule's three waits")
    r = row(db, pid)
    expect_eq((r["status"], r["error"]), ("dead", "Xero API answered 503 (4)"), "dead with the reason")
    expect_eq(claim(db, "A"), [], "a dead row is not claimed")
    a = audit(db, wid)
    expect_eq([x[1] for x in a], ["xero.writeback.plan", "xero.writeback.dead"], "plan and dead are audited")
    # a 429 is not an attempt
    pid2 = new_payment(db, "pi_2")
    plan(db, pid2, 10)
    w2 = row(db, pid2)["id"]
    claim(db, "A")
    expect_eq(fail(db, w2, "A", 1, "wait", "Xero rate limit (minute)", 30000), "pending", "a 429")
    r = row(db, pid2)
    expect_eq((r["attempts"], r["error"]), ("0", "Xero rate limit (minute)"), "the attempt is given back")
    wait = h.sql_value(db, "SELECT extract(epoch FROM next_attempt_at - now()) FROM xero_writebacks"
                           " WHERE id = $1::bigint", w2)
    expect(29 <= float(wait) <= 30.5, "due after Retry-After", wait)


def test_refused_rows_wait_for_an_admin_or_a_new_target():
    db, pid = setup("wb_refused")
    plan(db, pid, 1000)
    wid = row(db, pid)["id"]
    claim(db, "A")
    reason = "Xero refused it: The document date cannot be before the period lock date, currently set at 31-Jan-2026"
    expect_eq(fail(db, wid, "A", 1, "refused", reason), "refused", "refused")
    expect_eq(claim(db, "A"), [], "not claimed: no retry loop")
    expect_eq(plan(db, pid, 1000), "unchanged", "the same target does not revive it")
    expect_eq(row(db, pid)["status"], "refused", "still refused")
    queue = h.sql_rows(db, "SELECT w.id, w.last_error FROM xero_writebacks w WHERE w.organisation_id = 1"
                           " AND w.status IN ('refused', 'dead', 'unconfigured') ORDER BY w.updated_at")
    expect_eq(queue, [[wid, reason]], "the admins' queue (docs/reconciliation.md)")
    expect_eq(h.sql_value(db, "SELECT xero_writeback_retry(2, $1::bigint, 'cli:someone', 'x')", wid), "f",
              "another organisation cannot retry it")
    expect_eq(h.sql_value(db, "SELECT xero_writeback_retry(1, $1::bigint, 'cli:admin', 'x')", wid), "t",
              "the admin retries it")
    r = row(db, pid)
    expect_eq((r["status"], r["generation"], r["attempts"], r["error"]), ("pending", "2", "0", None),
              "due again, with new keys (generation 2)")
    expect_eq([x[:2] for x in audit(db, wid)][-2:], [("system:writeback", "xero.writeback.refused"),
                                                    ("cli:admin", "xero.writeback.retry")], "audited")
    claim(db, "A")
    fail(db, wid, "A", 2, "refused", reason)
    expect_eq(plan(db, pid, 900), "planned", "a new target")
    expect_eq((row(db, pid)["status"], row(db, pid)["generation"]), ("pending", "3"), "due again at generation 3")


def test_unconfigured_until_an_account_is_known():
    db, pid = setup("wb_account")
    plan(db, pid, 1000)
    wid = row(db, pid)["id"]
    expect_eq(claim(db, "A", account=""), [], "a payment to create is not claimed without an account")
    expect_eq(h.sql_rows(db, "SELECT * FROM xero_writeback_accounts('')"), [["1", "0"]], "marked unconfigured")
    r = row(db, pid)
    expect_eq(r["status"], "unconfigured", "status")
    expect("SETTLED_XERO_PAYMENT_ACCOUNT" in r["error"], "the reason names the setting", r["error"])
    expect_eq(claim(db, "A", account=""), [], "nothing to claim")
    expect_eq(h.sql_rows(db, "SELECT * FROM xero_writeback_accounts('')"), [["0", "0"]], "nothing new")
    # a row with only a delete to do needs no account
    pid2 = new_payment(db, "pi_2")
    plan(db, pid2, 500)
    w2 = row(db, pid2)["id"]
    h.sql(db, "UPDATE xero_writebacks SET written_minor = 500, xero_payment_id = $1::uuid, written_tenant_id ="
              " tenant_id, written_invoice_id = invoice_id, status = 'in_sync' WHERE id = $2::bigint", XPAY, w2)
    plan(db, pid2, 0)
    h.sql_rows(db, "SELECT * FROM xero_writeback_accounts('')")
    expect_eq(row(db, pid2)["status"], "pending", "a delete is not held up")
    expect_eq([g[0] for g in claim(db, "A", account="")], [w2], "and is claimed")
    # the organisation's own account revives the first
    h.sql(db, "UPDATE organisations SET xero_payment_account = '970' WHERE id = 1")
    expect_eq(h.sql_rows(db, "SELECT * FROM xero_writeback_accounts('')"), [["0", "1"]], "revived")
    got = claim(db, "A", account="090")
    expect_eq([(g[0], g[3]) for g in got], [(wid, "970")], "the organisation's account wins over the default")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM audit_log WHERE action = 'xero.writeback.unconfigured'"), "0",
              "(unconfigured is a state of the configuration, not audited)")
    expect_fails(lambda: h.sql(db, "UPDATE organisations SET xero_payment_account = 'no spaces' WHERE id = 1"),
                 "xero_payment_account_check", "a malformed account code")


def test_rows_whose_senders_kept_dying_are_parked():
    db, pid = setup("wb_park")
    plan(db, pid, 1000)
    wid = row(db, pid)["id"]
    for _ in range(3):
        make_due(db, wid)
        claim(db, "A", lease_ms=1)
    h.sql(db, "SELECT pg_sleep(0.05)")
    expect_eq(h.sql_rows(db, "SELECT id FROM xero_writeback_park_lost(4)"), [], "3 lost leases of 4 allowed")
    make_due(db, wid)
    claim(db, "A", lease_ms=1)
    h.sql(db, "SELECT pg_sleep(0.05)")
    got = h.sql_rows(db, "SELECT id, payment_id, attempts, last_error FROM xero_writeback_park_lost(4)")
    expect_eq([g[:3] for g in got], [[wid, pid, "4"]], "parked at the fourth")
    expect("stopped before finishing, 4 times" in got[0][3], "the reason", got[0][3])
    expect_eq(row(db, pid)["status"], "dead", "dead")
    expect_eq([x[1] for x in audit(db, wid)][-1], "xero.writeback.dead", "audited")


if __name__ == "__main__":
    h.run(globals())
