# SPDX-License-Identifier: MIT
"""test_sql_terms.py: the payment-terms functions (schema/functions/terms.sql, tables in schema/0018_admin.sql and
0022_terms.sql) on a fresh database migrated by the real `settled migrate`: every row of fixtures/terms_cases.csv
through terms_due_date and every row of fixtures/terms_zone_cases.csv through PostgreSQL's tz database (the same
tables tests/unit/domain/terms.c runs through gateway/domain/terms.c, so the C and SQL rules cannot drift), the
organisation's time zone and "today", each invoice's effective due date and its source (invoice_due_dates), the
Xero organisation's default terms applied only while no admin has set them, and dunning-plan validation.

Python 3 standard library only; the psql helpers and the runner are test_sql_mirror's. Environment as there:
SETTLED_TEST_PG_URL, SETTLED_BIN. ``python3 test_sql_terms.py test_a test_b`` runs only the named tests.
"""

import csv
import json
import os
import uuid

import test_sql_mirror as sm
from test_sql_mirror import Failure, audit_count, expect, expect_eq, new_org, rows, value  # noqa: F401

CORR = "corr-terms"
ACTOR = "user:7"


def fixture_rows(name):
    with open(os.path.join(sm.SOURCE_DIR, "fixtures", name), encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def add_customer(org, name):
    return value("INSERT INTO customers (organisation_id, name) VALUES (:'o', :'n') RETURNING id", o=org, n=name)


def link_contact(org, contact, customer):
    value("INSERT INTO customer_links (organisation_id, provider, external_id, customer_id, rule) "
          "VALUES (:'o', 'xero', :'x', :'c', 'admin') RETURNING 1", o=org, x=contact, c=customer)


def add_invoice(org, tenant, contact, date, due=None, kind="ACCREC"):
    inv = str(uuid.uuid4())
    return value("INSERT INTO xero_invoices (organisation_id, tenant_id, invoice_id, type, status, contact_id, date, "
                 "due_date, updated_date_utc, raw) VALUES (:'o', :'t', :'i', :'k', 'AUTHORISED', :'c', "
                 "nullif(:'d', '')::date, nullif(:'due', '')::date, now(), '{}') RETURNING settled_invoice_id",
                 o=org, t=tenant, i=inv, k=kind, c=contact, d=date or "", due=due or "")


def set_terms(org, customer, kind, day):
    return rows("SELECT result, field FROM admin_terms_put(:'o', nullif(:'c', '')::bigint, :'t', :'d', false, NULL, "
                ":'a', :'r')", o=org, c=customer or "", t=kind, d=day, a=ACTOR, r=CORR)[0]


def due_of(org, settled_id):
    return rows("SELECT due_date::text, source FROM invoice_effective_due_date(:'o', :'s')", o=org, s=settled_id)


# ---------------------------------------------------------------------------------------------------
# Tests

def test_due_dates_table():
    cases = fixture_rows("terms_cases.csv")
    expect(len(cases) >= 30, "the table holds the cases", len(cases))
    got = rows("SELECT c->>'n', coalesce(terms_due_date(c->>'type', (c->>'day')::int, (c->>'invoice_date')::date)"
               "::text, '') FROM jsonb_array_elements(:'cases'::jsonb) c",
               cases=json.dumps([dict(r, n=str(i)) for i, r in enumerate(cases)]))
    expect_eq(len(got), len(cases), "one answer per case")
    for n, due in got:
        c = cases[int(n)]
        expect_eq(due, c["due_date"], f"{c['type']} {c['day']} from {c['invoice_date']} ({c['case']})")
    expect_eq(value("SELECT terms_due_date(NULL, 3, '2026-01-01')"), None, "no type, no date")
    expect_eq(value("SELECT terms_due_date('NEXTWEEK', 3, '2026-01-01')"), None, "an unknown type")


def test_zone_table():
    cases = fixture_rows("terms_zone_cases.csv")
    got = rows("SELECT c->>'n', organisation_utc_offset(c->>'zone', (c->>'instant')::timestamptz), "
               "organisation_date(c->>'zone', (c->>'instant')::timestamptz)::text "
               "FROM jsonb_array_elements(:'cases'::jsonb) c",
               cases=json.dumps([dict(r, n=str(i)) for i, r in enumerate(cases)]))
    expect_eq(len(got), len(cases), "one answer per case")
    for n, offset, date in got:
        c = cases[int(n)]
        expect_eq((offset, date), (c["offset_seconds"], c["date"]), f"{c['instant']} in {c['zone']} ({c['case']})")


def test_timezone():
    org = new_org()
    expect_eq(value("SELECT timezone FROM organisations WHERE id = :'o'", o=org), "UTC", "UTC by default")
    n = audit_count(org)
    for bad in ["Mars/Olympus", "", "pacific/auckland", "UTC; DROP TABLE organisations"]:
        got = rows("SELECT result, field FROM terms_timezone_put(:'o', :'z', :'a', :'r')", o=org, z=bad, a=ACTOR,
                   r=CORR)
        expect_eq(got, [["invalid", "timezone"]], f"refused: {bad!r}")
    expect_eq(audit_count(org), n, "a refusal writes nothing")
    got = rows("SELECT result, doc->>'timezone' FROM terms_timezone_put(:'o', 'Pacific/Auckland', :'a', :'r')",
               o=org, a=ACTOR, r=CORR)
    expect_eq(got, [["ok", "Pacific/Auckland"]], "set")
    expect_eq(audit_count(org), n + 1, "audited")
    expect_eq(rows("SELECT actor, action, before->>'timezone', after->>'timezone' FROM audit_log "
                   "WHERE organisation_id = :'o' ORDER BY id DESC LIMIT 1", o=org),
              [[ACTOR, "organisation.timezone", "UTC", "Pacific/Auckland"]], "the audit row")
    rows("SELECT result FROM terms_timezone_put(:'o', 'Pacific/Auckland', :'a', :'r')", o=org, a=ACTOR, r=CORR)
    expect_eq(audit_count(org), n + 1, "the same zone again changes nothing")
    # the organisation's today: 2026-12-03T11:00Z is already the 4th in Auckland, still the 3rd in UTC
    expect_eq(value("SELECT organisation_today(:'o', '2026-12-03T11:00:00Z')", o=org), "2026-12-04", "Auckland")
    expect_eq(value("SELECT organisation_today(:'o', '2026-12-03T10:59:59Z')", o=org), "2026-12-03", "not yet")
    rows("SELECT result FROM terms_timezone_put(:'o', 'America/Los_Angeles', :'a', :'r')", o=org, a=ACTOR, r=CORR)
    expect_eq(value("SELECT organisation_today(:'o', '2026-12-04T05:00:00Z')", o=org), "2026-12-03",
              "still yesterday in Los Angeles")
    expect_eq(value("SELECT organisation_today(-1, now())"), None, "no organisation")


def test_invoice_due_dates():
    org, other = new_org(), new_org()
    tenant = str(uuid.uuid4())
    ada, bob = add_customer(org, "Ada"), add_customer(org, "Bob")
    c_ada, c_bob, c_none = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    link_contact(org, c_ada, ada)
    link_contact(org, c_bob, bob)
    xero = add_invoice(org, tenant, c_ada, "2026-01-20", due="2026-03-01")
    ada_inv = add_invoice(org, tenant, c_ada, "2026-01-31")
    bob_inv = add_invoice(org, tenant, c_bob, "2026-01-31")
    lone = add_invoice(org, tenant, c_none, "2026-12-31")
    undated = add_invoice(org, tenant, c_bob, None)
    bill = add_invoice(org, tenant, c_ada, "2026-01-31", kind="ACCPAY")
    expect_eq(due_of(org, xero), [["2026-03-01", "xero"]], "Xero's DueDate wins")
    expect_eq(due_of(org, ada_inv), [[None, None]], "no terms, no due date")
    expect_eq(set_terms(org, None, "OFFOLLOWINGMONTH", 31), ["ok", None], "a default")
    expect_eq(set_terms(org, ada, "DAYSAFTERBILLMONTH", 30), ["ok", None], "Ada's override")
    expect_eq(due_of(org, xero), [["2026-03-01", "xero"]], "Xero's DueDate still wins over terms")
    expect_eq(due_of(org, ada_inv), [["2026-03-02", "customer_terms"]], "the override")
    expect_eq(due_of(org, bob_inv), [["2026-02-28", "organisation_terms"]], "the default, clamped")
    expect_eq(due_of(org, lone), [["2027-01-31", "organisation_terms"]], "an unlinked contact: the default")
    expect_eq(due_of(org, undated), [[None, None]], "an undated invoice has no computed date")
    expect_eq(due_of(org, bill), [], "a bill is not a sales invoice")
    expect_eq(due_of(other, ada_inv), [], "another organisation's invoice is not there")
    # the other organisation's terms never apply to this one's invoices
    expect_eq(set_terms(other, None, "DAYSAFTERBILLDATE", 1), ["ok", None], "other's default")
    expect_eq(due_of(org, bob_inv), [["2026-02-28", "organisation_terms"]], "still this organisation's")
    value("DELETE FROM payment_terms WHERE organisation_id = :'o' AND customer_id = :'c' RETURNING 1", o=org, c=ada)
    expect_eq(due_of(org, ada_inv), [["2026-02-28", "organisation_terms"]], "override removed: the default")


def test_xero_default():
    org = new_org()
    n = audit_count(org)

    def apply(kind, day):
        return value("SELECT terms_apply_xero_default(:'o', :'t', :'d', :'r')", o=org, t=kind, d=day, r=CORR)

    def stored():
        return rows("SELECT type, day::text, source FROM payment_terms WHERE organisation_id = :'o' "
                    "AND customer_id IS NULL", o=org)

    expect_eq(apply("OFCURRENTMONTH", 0), "invalid", "day 0 of a month")
    expect_eq(apply("SOMETIME", 5), "invalid", "an unknown type")
    expect_eq((stored(), audit_count(org)), ([], n), "nothing written")
    expect_eq(apply("DAYSAFTERBILLMONTH", 10), "stored", "none set: Xero's stored")
    expect_eq(stored(), [["DAYSAFTERBILLMONTH", "10", "xero"]], "marked xero")
    expect_eq(audit_count(org), n + 1, "audited")
    expect_eq(rows("SELECT actor, action FROM audit_log WHERE organisation_id = :'o' ORDER BY id DESC LIMIT 1",
                   o=org), [["system:xero", "terms.xero_default"]], "as the system")
    expect_eq(apply("DAYSAFTERBILLMONTH", 10), "unchanged", "again")
    expect_eq(audit_count(org), n + 1, "unchanged writes nothing")
    expect_eq(apply("OFFOLLOWINGMONTH", 20), "updated", "Xero's changed: still Xero's, updated")
    expect_eq(stored(), [["OFFOLLOWINGMONTH", "20", "xero"]], "updated")
    # an admin's terms win, even when they equal Xero's
    expect_eq(set_terms(org, None, "OFFOLLOWINGMONTH", 20), ["ok", None], "the admin sets the same terms")
    expect_eq(stored(), [["OFFOLLOWINGMONTH", "20", "admin"]], "now the admin's")
    expect_eq(apply("DAYSAFTERBILLDATE", 7), "admin_set", "Xero's no longer applied")
    expect_eq(stored(), [["OFFOLLOWINGMONTH", "20", "admin"]], "kept")
    expect_eq(value("SELECT admin_terms_get(:'o', NULL)->'default'->>'source'", o=org), "admin", "in the JSON")


STEP = {"offset_days": -3, "channel": "email", "template": "due_soon"}


def put_plan(org, customer, steps):
    return rows("SELECT result, field, detail, doc::text FROM admin_dunning_put(:'o', nullif(:'c', '')::bigint, "
                ":'s'::jsonb, :'a', :'r')", o=org, c=customer or "", s=json.dumps(steps), a=ACTOR, r=CORR)[0]


def test_dunning_plan():
    org = new_org()
    ada = add_customer(org, "Ada")
    doc = json.loads(value("SELECT admin_dunning_get(:'o', NULL)", o=org))
    expect_eq(doc["source"], "default", "no plan: the default")
    expect_eq([(s["offset_days"], s["template"]) for s in doc["steps"]],
              [(-10, "due_soon"), (-5, "due_soon"), (-1, "due_soon"), (0, "due_today"), (3, "overdue"),
               (7, "final_notice")], "the default steps")
    n = audit_count(org)
    bad = [
        ("not an array", {"offset_days": 1}, "steps"),
        ("eleven steps", [dict(STEP, offset_days=i) for i in range(11)], "steps"),
        ("not an object", [STEP, 5], "steps[1]"),
        ("an unknown field", [dict(STEP, colour="red")], "steps[0].colour"),
        ("no offset", [{"channel": "email", "template": "due_soon"}], "steps[0].offset_days"),
        ("offset a string", [dict(STEP, offset_days="-3")], "steps[0].offset_days"),
        ("offset a fraction", [dict(STEP, offset_days=1.5)], "steps[0].offset_days"),
        ("offset -61", [dict(STEP, offset_days=-61)], "steps[0].offset_days"),
        ("offset 91", [dict(STEP, offset_days=91)], "steps[0].offset_days"),
        ("offset repeated", [STEP, dict(STEP)], "steps[1].offset_days"),
        ("unsorted", [dict(STEP, offset_days=5), dict(STEP, offset_days=1)], "steps[1].offset_days"),
        ("a channel", [dict(STEP, channel="sms")], "steps[0].channel"),
        ("no channel", [{"offset_days": 1, "template": "due_soon"}], "steps[0].channel"),
        ("a template", [dict(STEP, template="threat")], "steps[0].template"),
        ("template not a string", [dict(STEP, template=["due_soon"])], "steps[0].template"),
    ]
    for what, steps, field in bad:
        got = put_plan(org, None, steps)
        expect_eq(got[:2], ["invalid", field], what)
    expect_eq(audit_count(org), n, "refusals write nothing")
    expect_eq(value("SELECT count(*) FROM dunning_plans WHERE organisation_id = :'o'", o=org), "0", "nor a plan")
    ten = [dict(STEP, offset_days=d) for d in (-60, -30, -10, -5, -1, 0, 3, 7, 30, 90)]
    got = put_plan(org, None, ten)
    expect_eq(got[0], "ok", "ten steps, the bounds included")
    expect_eq(json.loads(got[3])["source"], "organisation", "the organisation's plan")
    expect_eq(audit_count(org), n + 1, "audited")
    put_plan(org, None, ten)
    expect_eq(audit_count(org), n + 1, "the same plan again changes nothing")
    # a customer's override, an empty one included
    got = put_plan(org, ada, [])
    expect_eq(got[0], "ok", "an empty override")
    doc = json.loads(got[3])
    expect_eq((doc["effective"], len(doc["plan"]["steps"])), ([], 10), "the override applies")
    expect_eq(put_plan(org, "999999999", ten)[0], "not_found", "another organisation's customer")
    other = new_org()
    expect_eq(put_plan(other, ada, ten)[0], "not_found", "Ada is not the other organisation's")
    got = rows("SELECT result, doc::text FROM admin_dunning_delete(:'o', :'c', :'a', :'r')", o=org, c=ada, a=ACTOR,
               r=CORR)[0]
    expect_eq((got[0], len(json.loads(got[1])["effective"])), ("ok", 10), "removed: the organisation's plan")
    expect_eq(audit_count(org), n + 3, "set and delete audited")
    expect_eq(rows("SELECT action, entity_id FROM audit_log WHERE organisation_id = :'o' ORDER BY id DESC LIMIT 1",
                   o=org), [["dunning.delete", ada]], "the delete's audit row")


if __name__ == "__main__":
    sm.run(globals(), "sql_terms", "terms_due_date", "schema/functions/terms.sql")
