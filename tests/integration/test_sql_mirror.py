# SPDX-License-Identifier: MIT
"""test_sql_mirror.py: the SQL side of the pipeline (schema/0002_pipeline.sql), driven through psql on a
fresh database migrated by the real `settled migrate`: exact money, Xero dates as they arrive on the
wire, the UpdatedDateUTC guard and convergence, invoice lines, credit-note allocations, matching, the
audit chain, tenant isolation and the work-queue additions to the inbox.

Python 3 standard library only. Environment:
  SETTLED_TEST_PG_URL  a PostgreSQL superuser URL; a database is created there and dropped at the end
  SETTLED_BIN          the settled binary (built after the schema files changed, so they are embedded)
  SETTLED_SOURCE_DIR   the source tree (default: two folders above this file)
Prints ``ok - name`` / ``not ok - name`` per test and ``N passed, N failed``; exits 1 on any failure.
``python3 test_sql_mirror.py test_a test_b`` runs only the named tests.
"""

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SETTLED_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))

TENANT = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
TENANT_2 = "9a7f3c1e-0000-4000-8000-00000000beef"


class Failure(AssertionError):
    pass


def expect_eq(actual, expected, what):
    if actual != expected:
        raise Failure(f"{what}:\n      expected: {expected!r}\n      actual:   {actual!r}")


def expect(cond, what, detail=None):
    if not cond:
        raise Failure(what if detail is None else f"{what}: {detail!r}")


# ---------------------------------------------------------------------------------------------------
# psql

_NULL = "\x02NULL\x03"
DB_URL = None  # the test database, set by main()


_big_values = []


def _psql_args(url, variables):
    """psql's command line; with it, a prefix for the script that sets the variables too big for one
    command-line argument (Linux caps one at 128 KiB) from files: `\\set name `cat file``."""
    args = ["psql", "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-F", "\x1f", "-R", "\x1e", "-P", "null=" + _NULL]
    prefix, paths = "", []
    for name, value in (variables or {}).items():
        value = value if isinstance(value, str) else str(value)
        if "\0" in value:
            raise ValueError("psql variables cannot hold NUL bytes")
        if len(value.encode()) < 32768:
            args += ["-v", f"{name}={value}"]
            continue
        fd, path = tempfile.mkstemp(prefix="sql_mirror.", suffix=".txt",
                                    dir=os.environ.get("SETTLED_TEST_TMP") or None)
        with os.fdopen(fd, "wb") as f:
            f.write(value.encode())
        paths.append(path)
        prefix += f"\\set {name} `cat {path}`\n"
    return args + ["-d", url, "-f", "-"], prefix, paths


def _forget(paths):
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def psql_popen(script, url=None, **variables):
    """Starts psql on a script (see psql_run) and returns the Popen; its stdin is written and closed."""
    args, prefix, paths = _psql_args(url or DB_URL, variables)
    _big_values.extend(paths)  # removed at the end of the run
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write((prefix + script).encode())
    p.stdin.close()
    return p


def psql_run(script, url=None, **variables):
    """Runs a script (one transaction per statement unless it says BEGIN). Variables are psql variables:
    the script refers to them as :'name' (a quoted literal, any text, backslashes included)."""
    args, prefix, paths = _psql_args(url or DB_URL, variables)
    try:
        res = subprocess.run(args, input=(prefix + script).encode(), capture_output=True, timeout=120)
    finally:
        _forget(paths)
    return res.returncode, res.stdout.decode(), res.stderr.decode(errors="replace")


def rows(script, url=None, **variables):
    """The rows the script prints, as lists of strings (None for NULL)."""
    rc, out, err = psql_run(script, url, **variables)
    if rc != 0:
        raise Failure(f"psql failed ({rc}): {err.strip()}\n      script: {script.strip()[:600]}")
    if out.endswith("\n"):
        out = out[:-1]
    if out == "":
        return []
    return [[None if c == _NULL else c for c in rec.split("\x1f")] for rec in out.split("\x1e")]


def value(script, url=None, **variables):
    r = rows(script, url, **variables)
    if not r:
        return None
    if len(r) != 1 or len(r[0]) != 1:
        raise Failure(f"expected one value, got {r!r} from {script.strip()[:300]}")
    return r[0][0]


def fails(script, pattern, url=None, **variables):
    """Runs a script that must fail with an error matching pattern; returns the error text."""
    rc, out, err = psql_run(script, url, **variables)
    if rc == 0:
        raise Failure(f"expected an error matching {pattern!r}, but the script succeeded: {script.strip()[:300]}")
    if not re.search(pattern, err):
        raise Failure(f"expected an error matching {pattern!r}, got: {err.strip()}")
    return err


def with_database(url, dbname):
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + urllib.parse.quote(dbname), u.query, u.fragment))


def settled_env(extra):
    # settled refuses unknown SETTLED_* keys, and the test's own variables are such
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLED_")}
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------------
# Xero documents. Amounts are written as exact decimal text (Dec), never through a Python float; the
# text handed to SQL is what Xero puts on the wire: "\/Date(...)\/" with escaped slashes, CRLF lines.


class Dec:
    def __init__(self, text):
        self.text = text


def _encode(obj):
    if isinstance(obj, Dec):
        return "\x01" + obj.text + "\x01"
    raise TypeError(type(obj))


def wire(doc):
    text = json.dumps(doc, indent=2, default=_encode)
    text = re.sub(r'"\\u0001([^"\\]*)\\u0001"', r"\1", text)
    text = text.replace("/Date(", "\\/Date(").replace(")/", ")\\/")
    return text.replace("\n", "\r\n")


def ms_date(ms, offset="+0000"):
    return f"/Date({ms}{offset})/"


T0 = 1551981568133  # 2019-03-07T17:59:28.133Z


def invoice(inv_id, updated_ms, total="100.00", status="AUTHORISED", lines=None, contact=None, number="INV-1",
            **extra):
    doc = {
        "Type": "ACCREC",
        "InvoiceID": inv_id,
        "InvoiceNumber": number,
        "Contact": {"ContactID": contact or "430fa14a-f945-44d3-9f97-5df5e28441b8", "Name": "Someone"},
        "DateString": "2019-03-07T00:00:00",
        "Date": ms_date(1551916800000),
        "DueDateString": "2019-03-13T00:00:00",
        "DueDate": ms_date(1552435200000),
        "Status": status,
        "LineAmountTypes": "Exclusive",
        "SubTotal": Dec(total),
        "TotalTax": Dec("0.00"),
        "Total": Dec(total),
        "AmountDue": Dec(total),
        "AmountPaid": Dec("0.00"),
        "AmountCredited": Dec("0.00"),
        "UpdatedDateUTC": ms_date(updated_ms),
        "CurrencyCode": "NZD",
    }
    if lines is not None:
        doc["LineItems"] = lines
    doc.update(extra)
    return doc


def line(line_id, amount, description="Item", quantity="1.0", unit=None):
    d = {"Description": description, "Quantity": Dec(quantity), "UnitAmount": Dec(unit or amount),
         "LineAmount": Dec(amount), "TaxAmount": Dec("0.00"), "TaxType": "NONE", "AccountCode": "200"}
    if line_id:
        d["LineItemID"] = line_id
    return d


def contact(contact_id, updated_ms, name, email=None, tax=None, account=None, is_customer=True, is_supplier=False,
            status="ACTIVE"):
    d = {"ContactID": contact_id, "ContactStatus": status, "Name": name, "UpdatedDateUTC": ms_date(updated_ms),
         "IsCustomer": is_customer, "IsSupplier": is_supplier}
    if email is not None:
        d["EmailAddress"] = email
    if tax is not None:
        d["TaxNumber"] = tax
    if account is not None:
        d["AccountNumber"] = account
    return d


def credit_note(cn_id, updated_ms, allocations, total="50.00", remaining="0.00"):
    return {
        "Type": "ACCRECCREDIT", "CreditNoteID": cn_id, "CreditNoteNumber": "CN-1", "Status": "AUTHORISED",
        "Contact": {"ContactID": "430fa14a-f945-44d3-9f97-5df5e28441b8"}, "DateString": "2019-03-08T00:00:00",
        "Date": ms_date(1552003200000), "SubTotal": Dec(total), "TotalTax": Dec("0.00"), "Total": Dec(total),
        "RemainingCredit": Dec(remaining), "CurrencyCode": "NZD", "UpdatedDateUTC": ms_date(updated_ms),
        "Allocations": [{"Amount": Dec(a), "Date": ms_date(1552003200000), "Invoice": {"InvoiceID": i}}
                        for i, a in allocations],
    }


def envelope(key, records):
    return {"Id": str(uuid.uuid4()), "Status": "OK", "ProviderName": "settled tests",
            "DateTimeUTC": "/Date(1552326816230)/", key: records}


def upsert_invoices(org, records, corr="corr-test", tenant=TENANT):
    return rows("SELECT invoice_id, outcome FROM xero_upsert_invoices(:'org', :'tenant', :'doc', :'corr')",
                org=org, tenant=tenant, doc=wire(envelope("Invoices", records)), corr=corr)


def upsert_contacts(org, records, create=False, corr="corr-test", tenant=TENANT):
    return rows("SELECT contact_id, outcome, match FROM xero_upsert_contacts(:'org', :'tenant', :'doc', :'corr', "
                ":'create')", org=org, tenant=tenant, doc=wire(envelope("Contacts", records)), corr=corr,
                create="true" if create else "false")


def upsert_credit_notes(org, records, corr="corr-test", tenant=TENANT):
    return rows("SELECT credit_note_id, outcome, invoice_ids FROM xero_upsert_credit_notes(:'org', :'tenant', "
                ":'doc', :'corr')", org=org, tenant=tenant, doc=wire(envelope("CreditNotes", records)), corr=corr)


def new_org(slug=None):
    slug = slug or "org-" + uuid.uuid4().hex[:12]
    return value("INSERT INTO organisations (slug, name) VALUES (:'s', :'s') RETURNING id", s=slug)


def audit_count(org):
    return int(value("SELECT count(*) FROM audit_log WHERE organisation_id = :'org'", org=org))


def new_id():
    return str(uuid.uuid4())


def fixture_text(name):
    with open(os.path.join(SOURCE_DIR, "fixtures", "xero", name), "rb") as f:
        return f.read().decode("utf-8")


# ---------------------------------------------------------------------------------------------------
# Tests


def test_migration_applied_once():
    expect_eq(value("SELECT count(*) FROM schema_migrations WHERE name = '0002_pipeline.sql'"), "1",
              "0002_pipeline.sql recorded")
    res = subprocess.run([os.environ["SETTLED_BIN"], "migrate"], env=settled_env({"SETTLED_DATABASE_URL": DB_URL}),
                         capture_output=True, timeout=60)
    expect_eq(res.returncode, 0, f"second migrate exits 0 (stderr: {res.stderr.decode(errors='replace')})")
    expect("applied" not in res.stdout.decode(), "second migrate applies nothing", res.stdout.decode())


def test_inbox_work_queue_columns_index_view():
    cols = [r[0] for r in rows("SELECT column_name FROM information_schema.columns WHERE table_name = "
                               "'webhook_events' AND column_name IN ('lease_owner', 'processed_at') ORDER BY 1")]
    expect_eq(cols, ["lease_owner", "processed_at"], "new inbox columns")
    idx = value("SELECT pg_get_indexdef('webhook_events_due_idx'::regclass)")
    expect("processing" in idx and "pending" in idx and "failed" in idx, "due index covers processing", idx)
    org = new_org()
    rows("""INSERT INTO inbox_events (organisation_id, provider, source, event_id, event_type, body, verified_at,
                received_at, correlation_id, status, next_attempt_at)
            VALUES (:'org', 'xero', 'default', 'q1', 'INVOICE.UPDATE', '\\x7b7d', now(), now(), 'c', 'pending',
                    now() - interval '1 minute'),
                   (:'org', 'xero', 'default', 'q2', 'INVOICE.UPDATE', '\\x7b7d', now(), now(), 'c', 'processing',
                    now() - interval '1 second'),
                   (:'org', 'xero', 'default', 'q4', 'INVOICE.UPDATE', '\\x7b7d', now(), now(), 'c', 'processing',
                    now() + interval '5 minutes'),
                   (:'org', 'stripe', 'default', 'q3', 'charge.succeeded', '\\x7b7d', now(), now(), 'c', 'done',
                    now())""", org=org)
    depth = rows("SELECT status, provider, count FROM v_queue_depth ORDER BY status, provider")
    expect_eq(depth, [["pending", "xero", "1"], ["processing", "xero", "2"]], "v_queue_depth (done is not depth)")
    # a processing row whose lease expired is due again, through the same index
    due = rows("SET enable_seqscan = off; SELECT event_id FROM webhook_events WHERE status IN "
               "('pending', 'failed', 'processing') AND next_attempt_at <= now() ORDER BY next_attempt_at")
    expect_eq(due, [["q1"], ["q2"]], "due rows: pending and an expired lease, not a live lease")


def test_insert_notifies_listeners():
    org = new_org()
    rc, out, err = psql_run(f"""
        LISTEN settled_events;
        INSERT INTO inbox_events (organisation_id, provider, source, event_id, event_type, body, verified_at,
            received_at, correlation_id) VALUES ({int(org)}, 'gocardless', 'default', 'n1', 'payments.paid_out',
            '\\x7b7d', now(), now(), 'c'), ({int(org)}, 'gocardless', 'default', 'n2', 'payments.paid_out',
            '\\x7b7d', now(), now(), 'c');
        SELECT 1;
    """)
    expect_eq(rc, 0, f"psql (stderr {err})")
    both = out + err
    expect_eq(both.count('notification "settled_events"'), 1, "one notification for one two-row INSERT")
    rc, out, err = psql_run(f"""
        SET settled.notify = off;
        LISTEN settled_events;
        INSERT INTO inbox_events (organisation_id, provider, source, event_id, event_type, body, verified_at,
            received_at, correlation_id) VALUES ({int(org)}, 'gocardless', 'default', 'n3', 'payments.paid_out',
            '\\x7b7d', now(), now(), 'c');
        SELECT 1;
    """)
    expect_eq(rc, 0, f"psql (stderr {err})")
    expect_eq((out + err).count('notification "settled_events"'), 0, "a session with settled.notify = off is silent")


def test_parse_dates_every_form():
    r = rows(r"""
        SET TimeZone = 'Pacific/Auckland';
        SELECT to_char(xero_parse_date(d) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS') FROM (VALUES
            ('/Date(1552329729002)/'), ('/Date(1552329729002+0000)/'), ('/Date(1552329729002+1300)/'),
            ('/Date(1552329729002-0800)/'), (E'\\/Date(1552329729002+0000)\\/'), (E'\\/Date(1552329729002)\\/'),
            ('2019-03-07T00:00:00'), ('2019-03-07T00:00:00Z'), ('2019-03-07T13:00:00+13:00'),
            ('2020-02-06T12:17:43.202-08:00'), ('2018-02-09T09:18:28.917Z'), ('2024-06-21T01:15:39.902'),
            ('2019-03-07'), (' 2019-03-07 '), ('/Date(-86400000)/')) v(d)
    """)
    expect_eq([x[0] for x in r], [
        "2019-03-11T18:42:09.002", "2019-03-11T18:42:09.002", "2019-03-11T18:42:09.002", "2019-03-11T18:42:09.002",
        "2019-03-11T18:42:09.002", "2019-03-11T18:42:09.002",
        "2019-03-07T00:00:00.000", "2019-03-07T00:00:00.000", "2019-03-07T00:00:00.000",
        "2020-02-06T20:17:43.202", "2018-02-09T09:18:28.917", "2024-06-21T01:15:39.902",
        "2019-03-07T00:00:00.000", "2019-03-07T00:00:00.000", "1969-12-31T00:00:00.000"], "xero_parse_date")
    expect_eq(rows("SELECT xero_parse_date(NULL) IS NULL, xero_parse_date('') IS NULL, xero_parse_date('  ') IS NULL"),
              [["t", "t", "t"]], "NULL and blank are NULL")
    r = rows(r"""SELECT xero_parse_day(d)::text FROM (VALUES ('2019-03-07T00:00:00'), ('/Date(1551916800000+0000)/'),
                  (E'\\/Date(1552435200000+0000)\\/'), ('2019-03-13'), ('2019-03-13T23:30:00-05:00'),
                  ('/Date(1551916799999+1300)/')) v(d)""")
    expect_eq([x[0] for x in r], ["2019-03-07", "2019-03-07", "2019-03-13", "2019-03-13", "2019-03-13", "2019-03-06"],
              "xero_parse_day (ISO: the written date; /Date()/: the UTC day)")
    for garbage in ["garbage", "/Date(abc)/", "2019-02-30", "2019-13-01T00:00:00", "07/03/2019", "/Date(1552329729002",
                    "2019-03-07T25:00:00"]:
        fails("SELECT xero_parse_date(:'d')", r"xero_parse_date: not a", d=garbage)
    fails("SELECT xero_parse_day('tomorrow')", r"xero_parse_date: not a Xero date")
    expect_eq(value("SELECT provolatile FROM pg_proc WHERE proname = 'xero_parse_date'"), "i", "IMMUTABLE")


def test_exact_money_round_trips():
    org = new_org()
    inv = new_id()
    lines = [line(new_id(), "0.1", "a"), line(new_id(), "0.2", "b"),
             line(new_id(), "1234567.89", "c", quantity="2.5", unit="493827.156"),
             line(new_id(), "12.3456", "d", unit="12.3456"),
             line(new_id(), "123456789012345.6789", "e")]
    doc = invoice(inv, T0, total="1234567.89", lines=lines, AmountPaid=Dec("0.30"), AmountCredited=Dec("0.0"))
    text = wire(envelope("Invoices", [doc]))
    expect('"Total": 1234567.89' in text and '"UnitAmount": 12.3456' in text, "amounts are bare JSON numbers")
    expect_eq(upsert_invoices(org, [doc]), [[inv, "inserted"]], "inserted")
    r = rows("""SELECT total::text, trim_scale(total)::text, raw->>'Total', trim_scale(amount_paid)::text,
                       amount_credited::text, pg_typeof(total)::text
                FROM xero_invoices WHERE organisation_id = :'org' AND invoice_id = :'inv'""", org=org, inv=inv)
    expect_eq(r, [["1234567.8900", "1234567.89", "1234567.89", "0.3", "0.0000", "numeric"]], "invoice amounts")
    r = rows("""SELECT description, trim_scale(line_amount)::text, trim_scale(unit_amount)::text,
                       trim_scale(quantity)::text
                FROM xero_invoice_lines WHERE organisation_id = :'org' AND invoice_id = :'inv' ORDER BY position""",
             org=org, inv=inv)
    expect_eq(r, [["a", "0.1", "0.1", "1"], ["b", "0.2", "0.2", "1"], ["c", "1234567.89", "493827.156", "2.5"],
                  ["d", "12.3456", "12.3456", "1"], ["e", "123456789012345.6789", "123456789012345.6789", "1"]],
              "line amounts are the wire text")
    r = rows("""SELECT sum(line_amount)::text, sum(line_amount) = 0.30
                FROM xero_invoice_lines WHERE organisation_id = :'org' AND invoice_id = :'inv'
                  AND description IN ('a', 'b')""", org=org, inv=inv)
    expect_eq(r, [["0.3000", "t"]], "0.1 + 0.2 summed in SQL is 0.30")
    expect_eq(value("""SELECT line_amount::text FROM xero_invoice_lines WHERE organisation_id = :'org'
                       AND invoice_id = :'inv' AND description = 'e'""", org=org, inv=inv),
              "123456789012345.6789", "19 significant digits survive (a double keeps 17)")
    # an amount numeric(19,4) would round is refused, and the whole document changes nothing
    before = audit_count(org)
    bad = invoice(inv, T0 + 1000, total="10.00001", lines=[])
    fails("SELECT * FROM xero_upsert_invoices(:'org', :'tenant', :'doc', 'c')", r"more than 4 decimal places",
          org=org, tenant=TENANT, doc=wire(envelope("Invoices", [bad])))
    expect_eq(value("SELECT trim_scale(total)::text FROM xero_invoices WHERE organisation_id = :'org' AND "
                    "invoice_id = :'inv'", org=org, inv=inv), "1234567.89", "refused document changed nothing")
    expect_eq(audit_count(org), before, "refused document audited nothing")
    fails("SELECT xero_decimal('\"12,50\"'::jsonb, 'Total')", r"not a decimal number")
    fails("SELECT xero_decimal('1e20'::jsonb, 'Total')", r"too large")


def test_fixture_invoice_as_on_the_wire():
    raw = fixture_text("api_get_invoice_by_id_response.json")
    # Xero escapes the slashes of its dates and ends lines with CRLF
    text = raw.replace("/Date(", "\\/Date(").replace(")/", ")\\/").replace("\r\n", "\n").replace("\n", "\r\n")
    expect('"\\/Date(1551981568133+0000)\\/"' in text, "the document carries escaped dates")
    org = new_org()
    r = rows("SELECT invoice_id, outcome FROM xero_upsert_invoices(:'org', :'tenant', :'doc', 'corr-fixture')",
             org=org, tenant=TENANT, doc=text)
    expect_eq(r, [["a03ffcd2-5d91-4c7e-b483-318584e9e439", "inserted"]], "fixture upserted")
    r = rows("""SET TimeZone = 'America/New_York';
                SELECT invoice_number, type, status, contact_id, currency_code, date::text, due_date::text,
                       line_amount_types, trim_scale(total)::text, trim_scale(amount_paid)::text,
                       trim_scale(amount_due)::text, amount_credited IS NULL,
                       to_char(updated_date_utc AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS'),
                       raw->>'UpdatedDateUTC'
                FROM xero_invoices WHERE organisation_id = :'org'""", org=org)
    expect_eq(r, [["INV-0006", "ACCREC", "PAID", "430fa14a-f945-44d3-9f97-5df5e28441b8", "NZD", "2019-03-07",
                   "2019-03-13", "Exclusive", "148062.76", "148062.76", "0", "t", "2019-03-07T17:59:28.133",
                   "/Date(1551981568133+0000)/"]], "typed columns from the fixture")
    r = rows("""SELECT line_item_id, synthetic_id, position, description, trim_scale(quantity)::text,
                       trim_scale(unit_amount)::text, trim_scale(line_amount)::text, trim_scale(tax_amount)::text,
                       account_code, item_code, tax_type
                FROM xero_invoice_lines WHERE organisation_id = :'org'""", org=org)
    expect_eq(r, [["b18f39d9-7739-4246-9288-72afe939d2d5", "f", "1", "Guitars Fender Strat", "1", "148062.76",
                   "148062.76", "0", "200", "123", "NONE"]], "fixture line")
    # the same response again is unchanged; the list fixture upserts too
    r = rows("SELECT outcome FROM xero_upsert_invoices(:'org', :'tenant', :'doc', 'corr-fixture-2')",
             org=org, tenant=TENANT, doc=text)
    expect_eq(r, [["unchanged"]], "refetch of the same state")
    listing = fixture_text("api_get_invoices_list_response.json").replace("/Date(", "\\/Date(").replace(")/", ")\\/")
    r = rows("SELECT outcome FROM xero_upsert_invoices(:'org', :'tenant', :'doc', 'corr-list')",
             org=org, tenant=TENANT, doc=listing)
    expect_eq(r, [["inserted"]] * 3, "list fixture")
    contacts = fixture_text("api_get_contacts_list_response.json").replace("/Date(", "\\/Date(").replace(")/", ")\\/")
    r = rows("SELECT outcome FROM xero_upsert_contacts(:'org', :'tenant', :'doc', 'corr-c', false)",
             org=org, tenant=TENANT, doc=contacts)
    expect_eq(r, [["inserted"]] * 2, "contacts list fixture")
    expect_eq(rows("SELECT tax_number IS NULL, is_customer::text FROM xero_contacts WHERE organisation_id = :'org' "
                   "ORDER BY name", org=org), [["t", "true"], ["t", "false"]], "blank TaxNumber is NULL")


def test_guard_stale_tie_unchanged():
    org = new_org()
    inv = new_id()
    v_old = invoice(inv, T0, total="10.00", status="DRAFT",
                    lines=[line("11111111-0000-4000-8000-000000000001", "10.00")])
    v_new = invoice(inv, T0 + 60000, total="20.00", status="AUTHORISED",
                    lines=[line("11111111-0000-4000-8000-000000000002", "20.00")])
    expect_eq(upsert_invoices(org, [v_new]), [[inv, "inserted"]], "newer first")
    n = audit_count(org)
    expect_eq(upsert_invoices(org, [v_old]), [[inv, "stale"]], "older after newer")
    expect_eq(rows("SELECT status, trim_scale(total)::text FROM xero_invoices WHERE organisation_id = :'org'", org=org),
              [["AUTHORISED", "20"]], "stale changed nothing")
    expect_eq(value("SELECT line_item_id FROM xero_invoice_lines WHERE organisation_id = :'org'", org=org),
              "11111111-0000-4000-8000-000000000002", "stale kept the lines")
    expect_eq(audit_count(org), n, "stale is not audited")
    expect_eq(upsert_invoices(org, [v_new]), [[inv, "unchanged"]], "identical refetch")
    expect_eq(audit_count(org), n, "unchanged is not audited")
    tie = invoice(inv, T0 + 60000, total="20.00", status="PAID", lines=[line("11111111-0000-4000-8000-000000000002",
                                                                             "20.00")], AmountDue=Dec("0.00"),
                  AmountPaid=Dec("20.00"))
    expect_eq(upsert_invoices(org, [tie]), [[inv, "updated"]], "equal UpdatedDateUTC: the refetched state wins")
    expect_eq(rows("SELECT status, trim_scale(amount_due)::text FROM xero_invoices WHERE organisation_id = :'org'",
                   org=org), [["PAID", "0"]], "tie overwrote")
    expect_eq(audit_count(org), n + 1, "update audited once")
    a = rows("""SELECT actor, action, entity_type, entity_id, before->>'status', after->>'status', after->>'total',
                       correlation_id, after->>'updated_date_utc'
                FROM audit_log WHERE organisation_id = :'org' ORDER BY id DESC LIMIT 1""", org=org)
    expect_eq(a, [["system:xero", "xero.invoice.upsert", "xero_invoice", inv, "AUTHORISED", "PAID", "20.0000",
                   "corr-test", "2019-03-07T18:00:28.133Z"]], "audit row of the update")
    # contacts and credit notes follow the same guard
    cid = new_id()
    expect_eq(upsert_contacts(org, [contact(cid, T0 + 5, "New Name")]), [[cid, "inserted", "none"]], "contact new")
    expect_eq(upsert_contacts(org, [contact(cid, T0, "Old Name")]), [[cid, "stale", None]], "contact stale")
    expect_eq(value("SELECT name FROM xero_contacts WHERE organisation_id = :'org'", org=org), "New Name", "kept")
    expect_eq(upsert_contacts(org, [contact(cid, T0 + 5, "New Name")]), [[cid, "unchanged", None]], "contact same")
    expect_eq(upsert_contacts(org, [contact(cid, T0 + 5, "Tie Name")]), [[cid, "updated", "none"]],
              "contact tie wins (and is matched again)")
    expect_eq(value("SELECT name FROM xero_contacts WHERE organisation_id = :'org'", org=org), "Tie Name", "tie")
    cn = new_id()
    expect_eq(upsert_credit_notes(org, [credit_note(cn, T0 + 5, [])]), [[cn, "inserted", "{}"]], "credit note new")
    expect_eq(upsert_credit_notes(org, [credit_note(cn, T0, [], total="1.00")]), [[cn, "stale", "{}"]], "cn stale")
    expect_eq(upsert_credit_notes(org, [credit_note(cn, T0 + 5, [])]), [[cn, "unchanged", "{}"]], "cn same")
    expect_eq(upsert_credit_notes(org, [credit_note(cn, T0 + 5, [], total="7.00")]), [[cn, "updated", "{}"]],
              "cn tie wins")
    expect_eq(value("SELECT trim_scale(total)::text FROM xero_credit_notes WHERE organisation_id = :'org'", org=org),
              "7", "cn tie")


def test_every_permutation_converges():
    versions = [
        (T0, "DRAFT", "10.00", [line("22222222-0000-4000-8000-000000000001", "10.00")]),
        (T0 + 1000, "AUTHORISED", "15.50", [line("22222222-0000-4000-8000-000000000001", "10.00"),
                                            line("22222222-0000-4000-8000-000000000002", "5.50")]),
        (T0 + 2000, "PAID", "15.5", [line("22222222-0000-4000-8000-000000000003", "15.5", "final")]),
    ]
    org = new_org()
    for perm in itertools.permutations(range(3)):
        inv = new_id()
        cid = new_id()
        cn = new_id()
        for i in perm:
            ms, status, total, lines = versions[i]
            upsert_invoices(org, [invoice(inv, ms, total=total, status=status, lines=lines)])
            upsert_contacts(org, [contact(cid, ms, f"Name v{i}", email=f"v{i}@example.com")])
            upsert_credit_notes(org, [credit_note(cn, ms, [(inv, total)], total=total)])
        what = f"permutation {perm}"
        expect_eq(rows("""SELECT status, trim_scale(total)::text, raw->>'Status' FROM xero_invoices
                          WHERE organisation_id = :'org' AND invoice_id = :'inv'""", org=org, inv=inv),
                  [["PAID", "15.5", "PAID"]], what + ": invoice")
        expect_eq(rows("""SELECT line_item_id, description FROM xero_invoice_lines
                          WHERE organisation_id = :'org' AND invoice_id = :'inv' ORDER BY position""",
                       org=org, inv=inv), [["22222222-0000-4000-8000-000000000003", "final"]], what + ": lines")
        expect_eq(rows("SELECT name, email FROM xero_contacts WHERE organisation_id = :'org' AND contact_id = :'c'",
                       org=org, c=cid), [["Name v2", "v2@example.com"]], what + ": contact")
        expect_eq(rows("SELECT trim_scale(total)::text FROM xero_credit_notes WHERE organisation_id = :'org' AND "
                       "credit_note_id = :'c'", org=org, c=cn), [["15.5"]], what + ": credit note")
        # duplicates after the fact change nothing
        for i in perm:
            ms, status, total, lines = versions[i]
            want = "unchanged" if i == 2 else "stale"
            r = upsert_invoices(org, [invoice(inv, ms, total=total, status=status, lines=lines)])
            expect_eq(r[0][1], want, what + f": invoice replay of v{i}")
            r = upsert_contacts(org, [contact(cid, ms, f"Name v{i}", email=f"v{i}@example.com")])
            expect_eq(r[0][1], want, what + f": contact replay of v{i}")
            r = upsert_credit_notes(org, [credit_note(cn, ms, [(inv, total)], total=total)])
            expect_eq(r[0][1], want, what + f": credit note replay of v{i}")


def test_lines_replaced():
    org = new_org()
    inv = new_id()
    v1 = invoice(inv, T0, lines=[line("33333333-0000-4000-8000-000000000001", "1.00", "one"),
                                 line(None, "2.00", "no id"),
                                 line("33333333-0000-4000-8000-000000000003", "3.00", "three")])
    upsert_invoices(org, [v1])
    r = rows("""SELECT line_item_id, synthetic_id, position, description FROM xero_invoice_lines
                WHERE organisation_id = :'org' AND invoice_id = :'inv' ORDER BY position""", org=org, inv=inv)
    synthetic = str(uuid.UUID(hashlib.md5(f"{inv}:2".encode()).hexdigest()))
    expect_eq(r, [["33333333-0000-4000-8000-000000000001", "f", "1", "one"], [synthetic, "t", "2", "no id"],
                  ["33333333-0000-4000-8000-000000000003", "f", "3", "three"]],
              "a line without LineItemID gets md5('<InvoiceID>:<position>')")
    v2 = invoice(inv, T0 + 1, lines=[line("33333333-0000-4000-8000-000000000003", "3.50", "three, changed"),
                                     line("33333333-0000-4000-8000-000000000004", "4.00", "four")])
    expect_eq(upsert_invoices(org, [v2]), [[inv, "updated"]], "v2")
    r = rows("""SELECT line_item_id, position, description, trim_scale(line_amount)::text FROM xero_invoice_lines
                WHERE organisation_id = :'org' AND invoice_id = :'inv' ORDER BY position""", org=org, inv=inv)
    expect_eq(r, [["33333333-0000-4000-8000-000000000003", "1", "three, changed", "3.5"],
                  ["33333333-0000-4000-8000-000000000004", "2", "four", "4"]], "lines are exactly v2's")
    a = rows("""SELECT jsonb_array_length(before->'lines'), jsonb_array_length(after->'lines')
                FROM audit_log WHERE organisation_id = :'org' ORDER BY id DESC LIMIT 1""", org=org)
    expect_eq(a, [["3", "2"]], "audit before/after carry the lines")
    # a record without LineItems (GET /Invoices without page=) keeps the stored lines
    v3 = invoice(inv, T0 + 2, status="PAID")
    expect_eq(upsert_invoices(org, [v3]), [[inv, "updated"]], "v3 without LineItems")
    expect_eq(value("SELECT count(*) FROM xero_invoice_lines WHERE organisation_id = :'org' AND invoice_id = :'inv'",
                    org=org, inv=inv), "2", "lines kept when LineItems is absent")
    v4 = invoice(inv, T0 + 3, status="VOIDED", lines=[])
    upsert_invoices(org, [v4])
    expect_eq(value("SELECT count(*) FROM xero_invoice_lines WHERE organisation_id = :'org' AND invoice_id = :'inv'",
                    org=org, inv=inv), "0", "an empty LineItems array clears the lines")
    dup = invoice(inv, T0 + 4, lines=[line("33333333-0000-4000-8000-000000000009", "1.00"),
                                      line("33333333-0000-4000-8000-000000000009", "1.00")])
    fails("SELECT * FROM xero_upsert_invoices(:'org', :'tenant', :'doc', 'c')", r"repeats a LineItemID",
          org=org, tenant=TENANT, doc=wire(envelope("Invoices", [dup])))


def test_full_page_of_invoices():
    # GET /Invoices?page=N returns up to 100 invoices with their lines: far more than one command-line
    # argument can carry, so this also checks the large-document path of the helper
    org = new_org()
    invs = [invoice(new_id(), T0, number=f"INV-{n:04d}", lines=[line(new_id(), "12.34", f"l{k}") for k in range(10)])
            for n in range(100)]
    page = wire(envelope("Invoices", invs))
    expect(len(page) > 200000, "a page is large", len(page))
    timings = []
    for want, doc in (("inserted", page), ("unchanged", page),
                      ("updated", wire(envelope("Invoices", [dict(x, Status="PAID", UpdatedDateUTC=ms_date(T0 + 5))
                                                              for x in invs])))):
        started = time.monotonic()
        r = rows("SELECT outcome, count(*) FROM xero_upsert_invoices(:'org', :'tenant', :'doc', 'corr-page') "
                 "GROUP BY outcome", org=org, tenant=TENANT, doc=doc)
        timings.append(f"{want} {time.monotonic() - started:.2f}s")
        expect_eq(r, [[want, "100"]], f"page {want}")
    expect_eq(rows("SELECT count(*), sum(line_amount)::text FROM xero_invoice_lines WHERE organisation_id = :'org'",
                   org=org), [["1000", "12340.0000"]], "1000 lines, summed exactly")
    print("# 100 invoices x 10 lines: " + ", ".join(timings))


def test_credit_note_allocations_returned():
    org = new_org()
    cn, a, b, c = new_id(), new_id(), new_id(), new_id()
    r = upsert_credit_notes(org, [credit_note(cn, T0, [(a, "10.10"), (b, "0.20")], total="10.30")])
    expect_eq(r[0][:2], [cn, "inserted"], "inserted")
    expect_eq(sorted(r[0][2].strip("{}").split(",")), sorted([a, b]), "invoice_ids of the allocations")
    r = rows("""SELECT a->>'invoice_id', a->>'amount', a->>'date', trim_scale(total)::text,
                       trim_scale(remaining_credit)::text, date::text
                FROM xero_credit_notes, jsonb_array_elements(allocations) a
                WHERE organisation_id = :'org' AND credit_note_id = :'cn'""", org=org, cn=cn)
    expect_eq(r, [[a, "10.10", "2019-03-08", "10.3", "0", "2019-03-08"],
                  [b, "0.20", "2019-03-08", "10.3", "0", "2019-03-08"]], "allocations stored exactly")
    # allocation to b removed, c added: a, b and c all changed
    r = upsert_credit_notes(org, [credit_note(cn, T0 + 1, [(a, "10.10"), (c, "0.20")], total="10.30")])
    expect_eq(r[0][1], "updated", "updated")
    expect_eq(sorted(r[0][2].strip("{}").split(",")), sorted([a, b, c]), "before and after allocations")
    r = upsert_credit_notes(org, [credit_note(cn, T0 + 1, [(a, "10.10"), (c, "0.20")], total="10.30")])
    expect_eq(r[0][:2], [cn, "unchanged"], "unchanged")
    expect_eq(sorted(r[0][2].strip("{}").split(",")), sorted([a, c]),
              "unchanged names the invoices allocated now (a retry after a failed refetch must refetch them)")
    r = upsert_credit_notes(org, [credit_note(cn, T0, [(a, "10.10")], total="10.30")])
    expect_eq(r, [[cn, "stale", "{}"]], "stale names no invoice")
    expect_eq(value("""SELECT count(*) FROM xero_credit_notes WHERE organisation_id = :'org'
                       AND allocations @> jsonb_build_array(jsonb_build_object('invoice_id', :'c'::text))""",
                    org=org, c=c), "1", "allocations are searchable by invoice")
    expect_eq(value("""SELECT after->>'remaining_credit' FROM audit_log WHERE organisation_id = :'org'
                       AND action = 'xero.credit_note.upsert' ORDER BY id DESC LIMIT 1""", org=org), "0.0000",
              "credit note audited")


def add_customer(org, name, email=None, tax=None, account=None):
    return value("INSERT INTO customers (organisation_id, name, email, tax_number, account_number) "
                 "VALUES (:'org', :'n', nullif(:'e', ''), nullif(:'t', ''), nullif(:'a', '')) RETURNING id",
                 org=org, n=name, e=email or "", t=tax or "", a=account or "")


def match(org, cid, create=False):
    return value("SELECT match_contact(:'org', :'tenant', :'c', 'corr-match', :'create')", org=org, tenant=TENANT,
                 c=cid, create="true" if create else "false")


def test_matching_rules():
    org = new_org()
    c_email = add_customer(org, "Email Person", email="Ann@Example.com ")
    c_tax = add_customer(org, "Tax Person", tax="123-22-3456")
    c_acct = add_customer(org, "Account Person", account="acc 42")
    c_name = add_customer(org, "Joe   Bloggs  Ltd")
    c_amb1 = add_customer(org, "Twin A", email="twin@example.com")
    c_amb2 = add_customer(org, "Twin B", email=" TWIN@example.com")

    ids = {k: new_id() for k in ["email", "tax", "acct", "name", "amb", "none", "create", "supplier", "prec"]}
    upsert_contacts(org, [contact(ids["email"], T0, "Whatever", email="  ann@example.COM")])
    r = {row[0]: row[2] for row in upsert_contacts(org, [
        contact(ids["tax"], T0, "Other", email="nobody@example.com", tax="123 22 3456"),
        contact(ids["acct"], T0, "Other 2", tax="", account="ACC-42"),
        contact(ids["name"], T0, "  joe bloggs\tLTD "),
        contact(ids["amb"], T0, "Twin", email="twin@example.com"),
        contact(ids["none"], T0, "Nobody Known", email="stranger@example.com"),
        contact(ids["prec"], T0, "Tax Person", email="ann@example.com", tax="123223456"),
    ])}
    expect_eq(value("SELECT customer_id FROM xero_contacts WHERE contact_id = :'c'", c=ids["email"]), c_email,
                    "email link sets xero_contacts.customer_id")
    expect_eq(r[ids["tax"]], "tax_number", "tax number (punctuation ignored)")
    expect_eq(r[ids["acct"]], "account_number", "account number (case and punctuation ignored)")
    expect_eq(r[ids["name"]], "name", "normalised name")
    expect_eq(r[ids["amb"]], "ambiguous", "two customers share the email")
    expect_eq(r[ids["none"]], "none", "nothing matches, no create")
    expect_eq(r[ids["prec"]], "email", "email is tried before tax number and name")
    links = dict((row[0], row[1:]) for row in rows(
        "SELECT external_id, customer_id::text, rule FROM customer_links WHERE organisation_id = :'org'", org=org))
    expect_eq(links.get(ids["email"]), [c_email, "email"], "email link")
    expect_eq(links.get(ids["tax"]), [c_tax, "tax_number"], "tax link")
    expect_eq(links.get(ids["acct"]), [c_acct, "account_number"], "account link")
    expect_eq(links.get(ids["name"]), [c_name, "name"], "name link")
    expect_eq(links.get(ids["prec"]), [c_email, "email"], "precedence link")
    expect(ids["amb"] not in links and ids["none"] not in links, "queued contacts are not linked")
    q = rows("""SELECT external_id, reasons->>'kind', reasons->>'rule', candidate_ids::text, status, external_name
                FROM matching_queue WHERE organisation_id = :'org' ORDER BY id""", org=org)
    expect_eq(q, [[ids["amb"], "ambiguous", "email", "{%s,%s}" % (c_amb1, c_amb2), "open", "Twin"],
                  [ids["none"], "none", None, "{}", "open", "Nobody Known"]], "matching queue")

    # idempotence: running matching again changes nothing and writes no audit row
    n_audit, n_links, n_queue, n_customers = (audit_count(org), len(links),
                                              value("SELECT count(*) FROM matching_queue WHERE organisation_id = "
                                                    ":'org'", org=org),
                                              value("SELECT count(*) FROM customers WHERE organisation_id = :'org'",
                                                    org=org))
    for k in ["email", "tax", "acct", "name", "prec"]:
        expect_eq(match(org, ids[k]), "existing", f"{k} again")
    expect_eq(match(org, ids["amb"]), "ambiguous", "ambiguous again")
    expect_eq(match(org, ids["none"]), "none", "none again")
    expect_eq(audit_count(org), n_audit, "re-running matching writes no audit row")
    expect_eq(value("SELECT count(*) FROM matching_queue WHERE organisation_id = :'org'", org=org), n_queue,
              "no second queue entry")

    # create: a new customer from the contact, linked 'created'; again: 'existing', nothing new
    expect_eq(upsert_contacts(org, [contact(ids["create"], T0, "Brand New Co", email="New@Co.example",
                                            tax="NZ 99")], create=True), [[ids["create"], "inserted", "created"]],
              "create")
    cust = rows("""SELECT c.id::text, c.name, c.email, c.tax_number, l.rule FROM customers c
                   JOIN customer_links l ON l.customer_id = c.id AND l.organisation_id = c.organisation_id
                   WHERE l.external_id = :'x'""", x=ids["create"])
    expect_eq([r_[1:] for r_ in cust], [["Brand New Co", "New@Co.example", "NZ 99", "created"]], "created customer")
    n_customers = int(n_customers) + 1
    expect_eq(match(org, ids["create"], create=True), "existing", "create again")
    expect_eq(value("SELECT count(*) FROM customers WHERE organisation_id = :'org'", org=org), str(n_customers),
              "create is not repeated")
    acts = [r_[0] for r_ in rows("""SELECT action FROM audit_log WHERE organisation_id = :'org'
                                    AND correlation_id = 'corr-test' AND (entity_id = :'cust' OR
                                    entity_id = 'xero:' || :'x' OR entity_id = :'x') ORDER BY id""",
                                 org=org, cust=cust[0][0], x=ids["create"])]
    expect_eq(acts, ["xero.contact.upsert", "match.create", "match.link"], "create audited")
    # suppliers only are never created: queued 'none'
    expect_eq(upsert_contacts(org, [contact(ids["supplier"], T0, "Paper Supplies", is_customer=False,
                                            is_supplier=True)], create=True),
              [[ids["supplier"], "inserted", "none"]], "supplier only is not created")
    expect_eq(value("SELECT reasons->>'not_created' FROM matching_queue WHERE external_id = :'x'",
                    x=ids["supplier"]), "supplier_only", "queue says why")

    # a contact whose details change is matched again; an admin link resolves the queue entry
    upsert_contacts(org, [contact(ids["amb"], T0 + 1, "Twin", email="twin@example.com", tax="T-1")])
    expect_eq(value("SELECT count(*) FROM matching_queue WHERE external_id = :'x'", x=ids["amb"]), "1",
              "same ambiguity: the open entry stays the only one")
    expect_eq(value("SELECT match_link(:'org', 'xero', :'x', :'c', 'admin', 'user:7', 'corr-admin')",
                    org=org, x=ids["amb"], c=c_amb2), "t", "admin link")
    expect_eq(rows("SELECT status, resolved_at IS NOT NULL FROM matching_queue WHERE external_id = :'x'",
                   x=ids["amb"]), [["resolved", "t"]], "queue entry resolved")
    expect_eq(value("SELECT customer_id FROM xero_contacts WHERE contact_id = :'x'", x=ids["amb"]), c_amb2,
              "admin link sets customer_id")
    expect_eq(value("SELECT match_link(:'org', 'xero', :'x', :'c', 'admin', 'user:7', 'corr-admin')",
                    org=org, x=ids["amb"], c=c_amb2), "f", "same link again is a no-op")
    fails("SELECT match_link(:'org', 'xero', :'x', :'c', 'admin', 'user:7', 'c')", r"already linked",
          org=org, x=ids["amb"], c=c_amb1)
    expect_eq(value("SELECT actor || ' ' || action FROM audit_log WHERE correlation_id = 'corr-admin'"),
              "user:7 match.link", "admin link audited once")
    # a dismissed entry is not raised again for the same situation
    rows("UPDATE matching_queue SET status = 'dismissed', resolved_at = now() WHERE external_id = :'x'",
         x=ids["none"])
    n = audit_count(org)
    expect_eq(match(org, ids["none"]), "none", "dismissed contact")
    expect_eq(value("SELECT count(*) FROM matching_queue WHERE external_id = :'x' AND status = 'open'",
                    x=ids["none"]), "0", "dismissal respected")
    expect_eq(audit_count(org), n, "nothing audited")
    expect_eq(value("SELECT audit_verify(:'org')", org=org), None, "chain whole after matching")


def test_matching_concurrent_creates_one_customer():
    org = new_org()
    a, b = new_id(), new_id()
    docs = [wire(envelope("Contacts", [contact(x, T0, "Same Person", email="same@example.com")])) for x in (a, b)]
    procs = []
    for d in docs:
        script = ("BEGIN; DO $$BEGIN PERFORM pg_sleep(0.3); END$$; "
                  "SELECT match FROM xero_upsert_contacts(:'org', :'tenant', :'doc', 'corr-conc', true); COMMIT;")
        procs.append(psql_popen(script, org=org, tenant=TENANT, doc=d))
    outs = []
    for p in procs:
        p.wait(timeout=60)
        expect_eq(p.returncode, 0, f"concurrent upsert: {p.stderr.read().decode()}")
        outs.append(p.stdout.read().decode().strip("\x1e\n"))
    expect_eq(sorted(outs), ["created", "email"], "one creates, the other links to it")
    expect_eq(value("SELECT count(*) FROM customers WHERE organisation_id = :'org'", org=org), "1", "one customer")
    expect_eq(value("SELECT audit_verify(:'org')", org=org), None, "chain whole")


def test_concurrent_overlapping_documents_do_not_deadlock():
    # a webhook refetch and a sweep page naming the same records in another order, at the same time
    org = new_org()
    invs = [new_id() for _ in range(15)]
    cids = [new_id() for _ in range(15)]
    for round_ in range(3):
        ms = T0 + round_ * 1000
        inv_docs = [wire(envelope("Invoices", [invoice(i, ms + k, lines=[line(None, "1.00")]) for i in order]))
                    for k, order in enumerate((invs, invs[::-1]))]
        con_docs = [wire(envelope("Contacts", [contact(c, ms + k, f"C {c[:8]}", email=f"{c[:8]}@example.com")
                                               for c in order]))
                    for k, order in enumerate((cids, cids[::-1]))]
        procs = []
        for inv_doc, con_doc in zip(inv_docs, con_docs):
            script = ("BEGIN; SELECT count(*) FROM xero_upsert_invoices(:'org', :'tenant', :'inv', 'corr-dl'); "
                      "SELECT count(*) FROM xero_upsert_contacts(:'org', :'tenant', :'con', 'corr-dl', true); "
                      "COMMIT;")
            procs.append(psql_popen(script, org=org, tenant=TENANT, inv=inv_doc, con=con_doc))
        for p in procs:
            p.wait(timeout=120)
            expect_eq(p.returncode, 0, f"round {round_}: concurrent upsert failed: {p.stderr.read().decode()}")
    expect_eq(value("SELECT count(*) FROM xero_invoices WHERE organisation_id = :'org' AND updated_date_utc = "
                    "xero_parse_date(:'d')", org=org, d=ms_date(T0 + 2001)), "15", "newest state everywhere")
    expect_eq(value("SELECT count(*) FROM customers WHERE organisation_id = :'org'", org=org), "15",
              "one customer per contact")
    expect_eq(value("SELECT audit_verify(:'org')", org=org), None, "chain whole")


def test_audit_chain():
    org, org2 = new_org(), new_org()
    ids = [value("SELECT audit_write(:'org', 'user:1', 'test.write', 'thing', :'n', NULL, "
                 "jsonb_build_object('n', :'n'::int, 'amount', 12.3400), 'corr-audit')", org=org, n=i)
           for i in range(5)]
    ids2 = [value("SELECT audit_write(:'org', 'user:2', 'test.write', 'thing', '1', '{\"a\":1}', NULL, NULL)",
                  org=org2) for _ in range(2)]
    expect(all(int(x) > int(y) for x, y in zip(ids[1:], ids)), "ids increase along the chain", ids)
    r = rows("""SELECT prev_hash IS NULL, length(hash),
                       prev_hash = lag(hash) OVER (ORDER BY id)
                FROM audit_log WHERE organisation_id = :'org' ORDER BY id""", org=org)
    expect_eq(r[0][:2], ["t", "32"], "first row of an organisation has no prev_hash")
    expect(all(x[2] == "t" for x in r[1:]), "each prev_hash is the previous hash", r)
    expect_eq(rows("SELECT prev_hash IS NULL FROM audit_log WHERE organisation_id = :'o' ORDER BY id", o=org2),
              [["t"], ["f"]], "each organisation has its own chain")
    expect_eq(value("SELECT audit_verify(:'org')", org=org), None, "good chain verifies")
    expect_eq(value("SELECT audit_verify(:'org')", org=org2), None, "second chain verifies")
    # the hash is sha256(prev_hash || canonical row) and can be recomputed outside the database
    row = rows("""SELECT encode(prev_hash, 'hex'), encode(hash, 'hex'), id, organisation_id,
                         (extract(epoch FROM at) * 1000000)::bigint, actor, action, entity_type, entity_id,
                         before::text, after::text, correlation_id
                  FROM audit_log WHERE id = :'id'""", id=ids[1])[0]
    canon = "[%s, %s, %s, %s, %s, %s, %s, null, %s, %s]" % (
        row[2], row[3], row[4], json.dumps(row[5]), json.dumps(row[6]), json.dumps(row[7]), json.dumps(row[8]),
        row[10], json.dumps(row[11]))
    expect_eq(hashlib.sha256(bytes.fromhex(row[0]) + canon.encode()).hexdigest(), row[1], "hash recomputed in Python")
    # append-only
    fails("UPDATE audit_log SET actor = 'x' WHERE id = :'id'", r"append-only", id=ids[0])
    fails("DELETE FROM audit_log WHERE id = :'id'", r"append-only", id=ids[0])
    fails("TRUNCATE audit_log", r"append-only")
    fails("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT audit_write(:'org', 'a', 'b', 'c', 'd', NULL, NULL, NULL);",
          r"READ COMMITTED", org=org)
    # tamper (superuser, trigger off for that step only): the tampered row is reported
    rows("""ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
            UPDATE audit_log SET after = jsonb_build_object('n', 999) WHERE id = :'id';
            ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;""", id=ids[2])
    expect_eq(value("SELECT audit_verify(:'org')", org=org), ids[2], "tampered row found")
    expect_eq(value("SELECT audit_verify(:'org')", org=org2), None, "other organisation unaffected")
    # tamper and recompute that row's hash: the next link breaks
    rows("""ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
            UPDATE audit_log a SET hash = sha256(coalesce(a.prev_hash, '\\x'::bytea) || audit_canonical(a))
            WHERE id = :'id';
            ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;""", id=ids[2])
    expect_eq(value("SELECT audit_verify(:'org')", org=org), ids[3], "re-hashed row breaks the next link")
    # a deleted row breaks the link of its successor
    rows("""ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
            DELETE FROM audit_log WHERE id = :'id';
            ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;""", id=ids2[0])
    expect_eq(value("SELECT audit_verify(:'org')", org=org2), ids2[1], "deletion found")
    expect_eq(value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass AND tgenabled = 'D'"),
              "0", "triggers enabled again")


def test_audit_chain_concurrent_writers():
    org = new_org()
    procs = []
    script = "".join("SELECT audit_write(:'org', 'w', 'test.concurrent', 'x', '%d', NULL, NULL, NULL);\n" % i
                     for i in range(40))
    for _ in range(4):
        procs.append(psql_popen(script, org=org))
    for p in procs:
        p.wait(timeout=120)
        expect_eq(p.returncode, 0, f"writer: {p.stderr.read().decode()}")
    expect_eq(value("SELECT count(*) FROM audit_log WHERE organisation_id = :'org'", org=org), "160", "all rows")
    expect_eq(value("SELECT count(*) FROM audit_log WHERE organisation_id = :'org' AND prev_hash IS NULL", org=org),
              "1", "one chain start")
    expect_eq(value("SELECT count(DISTINCT prev_hash) FROM audit_log WHERE organisation_id = :'org'", org=org),
              "159", "no fork")
    expect_eq(value("SELECT audit_verify(:'org')", org=org), None, "concurrent chain verifies")


def test_tenant_isolation():
    org_a, org_b = new_org(), new_org()
    inv, cid, cn = new_id(), new_id(), new_id()
    upsert_invoices(org_a, [invoice(inv, T0, total="1.00", lines=[line("44444444-0000-4000-8000-000000000001",
                                                                       "1.00", "A line")])])
    upsert_invoices(org_b, [invoice(inv, T0 - 1000, total="2.00", lines=[line("44444444-0000-4000-8000-000000000001",
                                                                              "2.00", "B line")])])
    expect_eq(upsert_invoices(org_b, [invoice(inv, T0 - 1000, total="2.00", lines=[
        line("44444444-0000-4000-8000-000000000001", "2.00", "B line")])]), [[inv, "unchanged"]],
        "org B compares with its own row, not org A's newer one")
    r = rows("""SELECT organisation_id::text, trim_scale(i.total)::text, l.description FROM xero_invoices i
                JOIN xero_invoice_lines l USING (organisation_id, tenant_id, invoice_id)
                WHERE invoice_id = :'inv' ORDER BY organisation_id""", inv=inv)
    expect_eq(r, [[org_a, "1", "A line"], [org_b, "2", "B line"]], "same tenant and invoice ids, separate rows")
    # matching only sees the organisation's own customers
    add_customer(org_b, "B's customer", email="shared@example.com")
    expect_eq(upsert_contacts(org_a, [contact(cid, T0, "Shared", email="shared@example.com")]),
              [[cid, "inserted", "none"]], "org A does not match org B's customer")
    expect_eq(upsert_contacts(org_b, [contact(cid, T0, "Shared", email="shared@example.com")]),
              [[cid, "inserted", "email"]], "org B matches its own")
    expect_eq(rows("SELECT organisation_id::text, customer_id IS NULL FROM xero_contacts WHERE contact_id = :'c' "
                   "ORDER BY organisation_id", c=cid), [[org_a, "t"], [org_b, "f"]], "link only in org B")
    b_customer = value("SELECT id FROM customers WHERE organisation_id = :'o'", o=org_b)
    fails("SELECT match_link(:'o', 'xero', :'c', :'k', 'admin', 'user:1', 'c')", r"has no customer",
          o=org_a, c=cid, k=b_customer)
    fails("UPDATE xero_contacts SET customer_id = :'k' WHERE organisation_id = :'o' AND contact_id = :'c'",
          r"foreign key", o=org_a, c=cid, k=b_customer)
    upsert_credit_notes(org_a, [credit_note(cn, T0, [(inv, "1.00")])])
    expect_eq(value("SELECT count(*) FROM xero_credit_notes WHERE organisation_id = :'o'", o=org_b), "0",
              "credit note only in org A")
    # a second tenant of the same organisation is separate too
    expect_eq(upsert_invoices(org_a, [invoice(inv, T0 - 5000, total="3.00", lines=[])], tenant=TENANT_2),
              [[inv, "inserted"]], "other tenant, same invoice id")
    expect_eq(value("SELECT trim_scale(total)::text FROM xero_invoices WHERE organisation_id = :'o' AND tenant_id = "
                    ":'t'", o=org_a, t=TENANT), "1", "first tenant untouched")
    expect_eq(rows("SELECT o::text FROM (SELECT DISTINCT organisation_id AS o FROM audit_log WHERE entity_id = :'i') s "
                   "ORDER BY o", i=inv),
              [[org_a], [org_b]], "each organisation audits in its own chain")
    expect_eq(value("SELECT audit_verify(:'o')", o=org_a), None, "chain A")
    expect_eq(value("SELECT audit_verify(:'o')", o=org_b), None, "chain B")


def test_bad_documents_change_nothing():
    org = new_org()
    good, bad_id = new_id(), new_id()
    cases = [
        ('{"Status": "OK"}', r"no \"Invoices\" array|a Xero response with"),
        ('[1, 2]', r"a Xero response with"),
        (wire(envelope("Invoices", [invoice(good, T0), {"InvoiceID": "not-a-uuid", "Type": "ACCREC"}])),
         r"InvoiceID is not a uuid"),
        (wire(envelope("Invoices", [invoice(good, T0), invoice(bad_id, T0, UpdatedDateUTC=None)])),
         r"has no UpdatedDateUTC"),
        (wire(envelope("Invoices", [invoice(good, T0), invoice(bad_id, T0, UpdatedDateUTC="yesterday")])),
         r"not a Xero date"),
        (wire(envelope("Invoices", [invoice(good, T0), invoice(bad_id, T0, Total="lots")])), r"not a decimal"),
    ]
    for doc, pattern in cases:
        fails("SELECT * FROM xero_upsert_invoices(:'org', :'tenant', :'doc', 'c')", pattern, org=org, tenant=TENANT,
              doc=doc)
    expect_eq(value("SELECT count(*) FROM xero_invoices WHERE organisation_id = :'org'", org=org), "0",
              "no invoice stored, not even the good one before the bad one")
    expect_eq(audit_count(org), 0, "nothing audited")
    fails("SELECT * FROM xero_upsert_contacts(:'org', :'tenant', '{\"Contacts\": [{\"Name\": \"x\"}]}', 'c', false)",
          r"ContactID is missing", org=org, tenant=TENANT)
    fails("SELECT * FROM xero_upsert_credit_notes(:'org', NULL, '{\"CreditNotes\": []}', 'c')",
          r"organisation and tenant are required", org=org)
    expect_eq(rows("SELECT * FROM xero_upsert_credit_notes(:'org', :'tenant', '{\"CreditNotes\": []}', 'c')",
                   org=org, tenant=TENANT), [], "an empty page is fine")


def test_xero_connection_tables():
    org_a, org_b = new_org(), new_org()
    tok = value("INSERT INTO xero_tokens (organisation_id, refresh_token) VALUES (:'o', '\\x0102') RETURNING id",
                o=org_a)
    expect_eq(rows("SELECT status, access_token IS NULL FROM xero_tokens WHERE id = :'t'", t=tok), [["active", "t"]],
              "token defaults")
    rows("INSERT INTO xero_tenants (tenant_id, organisation_id, token_id, tenant_name, tenant_type) "
         "VALUES (:'tn', :'o', :'t', 'Demo Company', 'ORGANISATION')", tn=TENANT, o=org_a, t=tok)
    fails("INSERT INTO xero_tenants (tenant_id, organisation_id, token_id) VALUES (:'tn', :'o', :'t')",
          r"foreign key", tn=TENANT, o=org_b, t=tok)
    fails("UPDATE xero_tokens SET status = 'broken' WHERE id = :'t'", r"check constraint", t=tok)
    rows("INSERT INTO xero_sync_state (organisation_id, tenant_id, resource, high_water) VALUES "
         "(:'o', :'tn', 'invoices', xero_parse_date('2019-03-07T17:59:28.133'))", o=org_a, tn=TENANT)
    fails("INSERT INTO xero_sync_state (organisation_id, tenant_id, resource) VALUES (:'o', :'tn', 'payments')",
          r"check constraint", o=org_a, tn=TENANT)


def test_inbox_rules_are_enforced():
    """The inbox's provider, status and attempts rules (domains, cheaper than CHECK constraints on the hot
    insert path) still refuse bad values, on insert and on update."""
    org = new_org()
    base = ("INSERT INTO inbox_events (organisation_id, provider, source, event_id, event_type, body, verified_at,"
            " received_at, correlation_id) VALUES (:'o', :'p', 'default', :'e', 't', '\\x00', now(), now(), 'c')")
    fails(base, r"violates check constraint", o=org, p="paypal", e="e-bad-provider")
    rid = value(base + " RETURNING id", o=org, p="stripe", e="e-rules")
    fails("UPDATE webhook_events SET status = 'pendng' WHERE id = :'i'", r"violates check constraint", i=rid)
    fails("UPDATE webhook_events SET attempts = -1 WHERE id = :'i'", r"violates check constraint", i=rid)
    rows("UPDATE webhook_events SET status = 'dead', attempts = 3 WHERE id = :'i'", i=rid)
    expect_eq(rows("SELECT status, attempts FROM webhook_events WHERE id = :'i'", i=rid), [["dead", "3"]],
              "a valid update")


def test_inbox_references_checked_per_statement():
    """0005: the inbox's organisation and delivery are checked once per INSERT statement (no per-row foreign key
    trigger), and what the foreign keys also guaranteed still holds: a statement naming a missing organisation or
    delivery stores nothing of itself, organisations are never deleted, a referenced delivery is kept, an event's
    references never change."""
    fks = rows("SELECT conname FROM pg_constraint WHERE conrelid = 'inbox_events'::regclass AND contype = 'f'")
    expect_eq(fks, [], "no per-row foreign key on inbox_events")
    org = new_org()
    ins = ("INSERT INTO inbox_events (organisation_id, provider, source, event_id, event_type, body, verified_at,"
           " received_at, correlation_id, delivery_id) SELECT o, 'stripe', 'default', e, 't', '\\x00', now(), now(),"
           " 'c', d FROM (VALUES {}) AS v(o, e, d)")
    # one bad row among good ones: the whole statement is refused
    fails(ins.format("(:'o'::bigint, 'r1', NULL::bigint), (:'o'::bigint, 'r2', NULL), (-5, 'r3', NULL)"),
          r"names an organisation that does not exist", o=org)
    fails(ins.format("(:'o'::bigint, 'r4', NULL::bigint), (:'o'::bigint, 'r5', 987654321)"),
          r"names a delivery that does not exist", o=org)
    expect_eq(value("SELECT count(*) FROM inbox_events WHERE event_id IN ('r1','r2','r3','r4','r5')"), "0",
              "nothing of a refused statement is stored")
    did = value("INSERT INTO webhook_deliveries (organisation_id, provider, source, body, headers, verified_at,"
                " received_at, correlation_id) VALUES (:'o', 'gocardless', 'default', '\\x00', '{}', now(), now(),"
                " 'c') RETURNING id", o=org)
    rows(ins.format("(:'o'::bigint, 'r6', :'d'::bigint), (:'o'::bigint, 'r7', NULL)"), o=org, d=did)
    expect_eq(value("SELECT count(*) FROM inbox_events WHERE event_id IN ('r6', 'r7')"), "2", "good rows stored")
    fails("DELETE FROM webhook_deliveries WHERE id = :'d'", r"is referred to by inbox events", d=did)
    fails("DELETE FROM organisations WHERE id = :'o'", r"organisations are never deleted", o=org)
    fails("TRUNCATE organisations CASCADE", r"organisations are never deleted")
    other = new_org()
    fails("UPDATE inbox_events SET organisation_id = :'x' WHERE event_id = 'r6'", r"never change", x=other)
    fails("UPDATE inbox_events SET delivery_id = NULL WHERE event_id = 'r6'", r"never change")
    rows("UPDATE inbox_events SET status = 'done' WHERE event_id = 'r6'")
    expect_eq(value("SELECT status FROM webhook_events WHERE event_id = 'r6'"), "done", "other columns still update")
    # a delivery no event refers to may go
    lone = value("INSERT INTO webhook_deliveries (organisation_id, provider, source, body, headers, verified_at,"
                 " received_at, correlation_id) VALUES (:'o', 'gocardless', 'default', '\\x00', '{}', now(), now(),"
                 " 'c') RETURNING id", o=org)
    rows("DELETE FROM webhook_deliveries WHERE id = :'d'", d=lone)


def test_ledger_facts_once_and_append_only():
    """0011: a fact (object, state, amount) is recorded once however often it is seen; the ledger refuses UPDATE,
    DELETE and TRUNCATE; money is bigint minor units of a well-formed currency code; payment methods keep at most
    one default per customer and never more than the last four digits."""
    org = new_org()
    rec = ("SELECT ledger_record(:'o', 'stripe', 'payment', 'pi_1', :'s', :'a', 'gbp', NULL, 'c')")
    expect_eq(value(rec, o=org, s="processing", a="5000"), "t", "a new fact")
    expect_eq(value(rec, o=org, s="processing", a="5000"), "f", "the same fact again adds nothing")
    expect_eq(value(rec, o=org, s="succeeded", a="5000"), "t", "the next state is a new fact")
    expect_eq(value(rec, o=org, s="succeeded", a="4000"), "t", "a different amount is a new fact")
    expect_eq(rows("SELECT state, amount_minor, currency FROM ledger_entries WHERE organisation_id = :'o' ORDER BY id",
                   o=org),
              [["processing", "5000", "GBP"], ["succeeded", "5000", "GBP"], ["succeeded", "4000", "GBP"]],
              "three facts, currency upper-cased")
    fails("UPDATE ledger_entries SET amount_minor = 1 WHERE organisation_id = :'o'", r"append-only", o=org)
    fails("DELETE FROM ledger_entries WHERE organisation_id = :'o'", r"append-only", o=org)
    fails("TRUNCATE ledger_entries", r"append-only")
    fails(rec.replace("'gbp'", "'pounds'"), r"currency_code", o=org, s="x", a="1")
    fails(rec, r"violates check constraint", o=org, s="y", a="-1")
    # concurrent recorders of one fact: exactly one of them records it
    procs = [psql_popen("SELECT ledger_record(:'o', 'gocardless', 'payment', 'PM1', 'confirmed', 700, 'EUR', NULL, "
                        "'c')", o=org) for _ in range(6)]
    outs = []
    for p in procs:
        p.wait(timeout=60)
        expect_eq(p.returncode, 0, f"racing recorder: {p.stderr.read().decode()}")
        outs.append(p.stdout.read().decode().strip())
    expect_eq(sorted(outs), ["f"] * 5 + ["t"], "six racing recorders: one new fact")
    # payments: one row per provider object; payment methods: one default per customer, last4 only
    cust = value("INSERT INTO customers (organisation_id, name) VALUES (:'o', 'Ada') RETURNING id", o=org)
    pm = ("INSERT INTO payment_methods (organisation_id, provider, object_id, customer_id, kind, last4, status,"
          " is_default, raw) VALUES (:'o', 'stripe', :'id', :'c', 'card', :'l', 'active', :'d', '{}')")
    rows(pm, o=org, id="pm_1", c=cust, l="4242", d="true")
    fails(pm, r"payment_methods_default_key", o=org, id="pm_2", c=cust, l="1881", d="true")
    fails(pm, r"violates check constraint", o=org, id="pm_3", c=cust, l="4242424242424242", d="false")
    other = new_org()
    fails(pm, r"payment_methods_customer_fkey", o=other, id="pm_4", c=cust, l="1111", d="false")


# ---------------------------------------------------------------------------------------------------
# Runner


def main():
    run(globals(), "sql_mirror", "xero_upsert_invoices", "schema/0002_pipeline.sql")


def run(namespace, prefix, required_function, schema_file):
    """Runs the test_* functions of namespace (a module's globals()) on a fresh database named after prefix,
    migrated by the real `settled migrate` and holding required_function (else: rebuild, so that schema_file
    is embedded); prints the report and exits. Other SQL test modules import it with these psql helpers."""
    global DB_URL
    missing = [k for k in ("SETTLED_TEST_PG_URL", "SETTLED_BIN") if not os.environ.get(k)]
    if missing or not os.access(os.environ.get("SETTLED_BIN", ""), os.X_OK):
        why = (f"{', '.join(missing)} not set" if missing
               else f"SETTLED_BIN={os.environ['SETTLED_BIN']} is not executable")
        print(f"not ok - environment: {why}: run through deploy/test.sh or export them; these tests never pass "
              "by skipping")
        print("0 passed, 1 failed")
        sys.exit(1)
    base = os.environ["SETTLED_TEST_PG_URL"]
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    wanted = sys.argv[1:]
    if wanted:
        unknown = set(wanted) - {n for n, _ in tests}
        if unknown:
            print(f"unknown tests: {', '.join(sorted(unknown))}")
            sys.exit(2)
        tests = [(n, f) for n, f in tests if n in wanted]
    dbname = f"{prefix}_{os.getpid()}_{os.urandom(3).hex()}"
    passed = failed = 0
    created = False
    try:
        rows('CREATE DATABASE :"d"', url=base, d=dbname)
        created = True
        DB_URL = with_database(base, dbname)
        res = subprocess.run([os.environ["SETTLED_BIN"], "migrate"],
                             env=settled_env({"SETTLED_DATABASE_URL": DB_URL}), capture_output=True, timeout=120)
        if res.returncode != 0:
            raise Failure(f"settled migrate exited {res.returncode}: {res.stderr.decode(errors='replace')[-3000:]}")
        if value("SELECT to_regproc(:'f') IS NOT NULL", f=required_function) != "t":
            raise Failure(f"the migrated database has no {required_function}: rebuild settled so that "
                          f"{schema_file} is embedded (cmake --build)")
    except Exception as e:  # noqa: BLE001
        print(f"not ok - setup\n      {e}")
        failed += 1
        tests = []
    for name, fn in tests:
        started = time.monotonic()
        try:
            fn()
        except Failure as e:
            failed += 1
            print(f"not ok - {name}\n" + "\n".join("      " + x for x in str(e).splitlines()))
        except Exception:  # noqa: BLE001
            failed += 1
            print(f"not ok - {name}\n" + "\n".join("      " + x for x in traceback.format_exc().splitlines()))
        else:
            passed += 1
            print(f"ok - {name} ({time.monotonic() - started:.1f}s)")
        sys.stdout.flush()
    _forget(_big_values)
    if created:
        try:
            rows('DROP DATABASE IF EXISTS :"d" WITH (FORCE)', url=base, d=dbname)
        except Failure as e:
            print(f"# could not drop database {dbname}: {e}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
