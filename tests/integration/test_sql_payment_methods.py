# SPDX-License-Identifier: MIT
"""test_sql_payment_methods.py: the payment-method functions (schema/functions/payment_methods.sql, tables in
schema/0011_ledger.sql and 0014_payment_methods.sql), driven through psql on a fresh database migrated by the real
`settled migrate`: Stripe PaymentMethods, SetupIntents and Customers and GoCardless mandates as the APIs return them,
the outcomes and their idempotency, the default rules, matching provider customers to portal customers, what of a
card is kept, tenant isolation and bad input.

Python 3 standard library only; the psql helpers and the runner are test_sql_mirror's. Environment as there:
SETTLED_TEST_PG_URL, SETTLED_BIN. ``python3 test_sql_payment_methods.py test_a test_b`` runs only the named tests.
"""

import copy
import json
import uuid

import test_sql_mirror as sm
from test_sql_mirror import Failure, audit_count, expect, expect_eq, new_org, rows, value  # noqa: F401

CORR = "corr-pm"

# ---------------------------------------------------------------------------------------------------
# Provider objects, as the Stripe and GoCardless API references show them

STRIPE_CARD = {
    "id": "pm_1Q0PsIJvEtkwdCNYMSaVuRz6", "object": "payment_method", "allow_redisplay": "unspecified",
    "billing_details": {"address": {"city": "Hamilton", "country": "NZ", "line1": "1 Main St", "line2": None,
                                    "postal_code": "3204", "state": None},
                        "email": "jenny@example.com", "name": "Jenny Rosen", "phone": "+64 21 000 000"},
    "card": {"brand": "visa", "checks": {"address_line1_check": None, "address_postal_code_check": None,
                                         "cvc_check": "pass"},
             "country": "US", "display_brand": "visa", "exp_month": 8, "exp_year": 2026,
             "fingerprint": "Xt5EWLLDS7FJjR1c", "funding": "credit", "generated_from": None, "last4": "4242",
             "networks": {"available": ["visa"], "preferred": None},
             "three_d_secure_usage": {"supported": True}, "wallet": None},
    "created": 1726673582, "customer": None, "livemode": False, "metadata": {}, "type": "card",
}

STRIPE_CUSTOMER = {
    "id": "cus_NffrFeUfNV2Hib", "object": "customer", "address": None, "balance": 0, "created": 1680893993,
    "currency": None, "default_source": None, "delinquent": False, "description": None, "discount": None,
    "email": "jennyrosen@example.com",
    "invoice_prefix": "0759376C",
    "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                         "rendering_options": None},
    "livemode": False, "metadata": {}, "name": "Jenny Rosen", "next_invoice_sequence": 1, "phone": None,
    "preferred_locales": [], "shipping": None, "tax_exempt": "none", "test_clock": None,
}

STRIPE_SETUP_INTENT = {
    "id": "seti_1Mm8s8LkdIwHu7ix0OXBfTRG", "object": "setup_intent", "application": None,
    "automatic_payment_methods": None, "cancellation_reason": None,
    "client_secret": "seti_1Mm8s8LkdIwHu7ix0OXBfTRG_secret_NXDICkPqPeiBTAFqWmkbff09lRmSVXe", "created": 1678942624,
    "customer": None, "description": None, "flow_directions": None, "last_setup_error": None,
    "latest_attempt": None, "livemode": False, "mandate": None, "metadata": {}, "next_action": None,
    "on_behalf_of": None, "payment_method": None,
    "payment_method_options": {"card": {"mandate_options": None, "network": None,
                                        "request_three_d_secure": "automatic"}},
    "payment_method_types": ["card"], "single_use_mandate": None, "status": "requires_payment_method",
    "usage": "off_session",
}

GC_MANDATE = {
    "id": "MD123", "created_at": "2014-05-08T17:01:06.000Z", "reference": "REF-123", "status": "pending_submission",
    "scheme": "bacs", "next_possible_charge_date": "2014-11-10", "payments_require_approval": False,
    "metadata": {"contract": "ABCD1234"},
    "links": {"customer_bank_account": "BA123", "creditor": "CR123", "customer": "CU123"},
}

GC_BANK_ACCOUNT = {
    "id": "BA123", "created_at": "2014-05-08T17:01:06.000Z", "account_number_ending": "1235",
    "account_holder_name": "NAOMI WATSON", "account_type": None, "bank_name": "BARCLAYS BANK PLC", "currency": "GBP",
    "country_code": "GB", "metadata": {}, "enabled": True, "links": {"customer": "CU123"},
}

GC_CUSTOMER = {
    "id": "CU123", "created_at": "2014-05-08T17:01:06.000Z", "email": "user@example.com", "given_name": "Frank",
    "family_name": "Osborne", "address_line1": "27 Acer Road", "address_line2": "Apt 2", "address_line3": None,
    "city": "London", "region": None, "postal_code": "E8 3GX", "country_code": "GB", "language": "en",
    "phone_number": None, "swedish_identity_number": None, "danish_identity_number": None,
    "metadata": {"salesforce_id": "ABCD1234"}, "company_name": None,
}


def uid(prefix):
    return prefix + uuid.uuid4().hex[:14]


def card(pm_id=None, customer=None, created=1726673582, **card_fields):
    o = copy.deepcopy(STRIPE_CARD)
    o.update(id=pm_id or uid("pm_"), customer=customer, created=created)
    o["card"].update(card_fields)
    return o


def stripe_customer(cus_id=None, email="jennyrosen@example.com", name="Jenny Rosen", default=None, **extra):
    o = copy.deepcopy(STRIPE_CUSTOMER)
    o.update(id=cus_id or uid("cus_"), email=email, name=name, **extra)
    o["invoice_settings"]["default_payment_method"] = default
    return o


def mandate(md_id="MD123", customer="CU123", bank="BA123", status="pending_submission",
            created_at="2014-05-08T17:01:06.000Z"):
    o = copy.deepcopy(GC_MANDATE)
    o.update(id=md_id, status=status, created_at=created_at)
    o["links"].update(customer=customer, customer_bank_account=bank)
    return o


def jtext(obj):
    return None if obj is None else json.dumps(obj)


# When an object was observed (the processor passes the claim time of its fetch): at=None is the call's own
# transaction time, so calls made one after the other are observed in that order; at=n is n seconds after a fixed
# instant in the past, for playing observations out of order.
AT = "coalesce(timestamptz '2026-01-01 00:00:00+00' + nullif(:'at', '')::int * interval '1 second', now())"


def at_var(at):
    return "" if at is None else str(at)


def apply_pm(org, obj, account="", at=None):
    return value(f"SELECT pm_apply_stripe_payment_method(:'org', nullif(:'acct', ''), {AT}, :'obj', :'corr')",
                 org=org, acct=account, at=at_var(at), obj=json.dumps(obj), corr=CORR)


def apply_customer(org, obj, at=None):
    return value(f"SELECT pm_apply_stripe_customer(:'org', NULL, {AT}, :'obj', :'corr')", org=org, at=at_var(at),
                 obj=json.dumps(obj), corr=CORR)


def apply_setup(org, obj, at=None):
    return value(f"SELECT pm_apply_stripe_setup_intent(:'org', NULL, {AT}, :'obj', :'corr')", org=org, at=at_var(at),
                 obj=json.dumps(obj), corr=CORR)


def apply_mandate(org, obj, bank=None, customer=None, at=None):
    # an absent document is SQL NULL, as the processor passes it
    return value(f"SELECT pm_apply_gocardless_mandate(:'org', {AT}, :'obj', nullif(:'bank', '')::jsonb, "
                 "nullif(:'cust', '')::jsonb, :'corr')", org=org, at=at_var(at), obj=json.dumps(obj),
                 bank=jtext(bank) or "", cust=jtext(customer) or "", corr=CORR)


def apply_gc_customer(org, obj, at=None):
    return value(f"SELECT pm_apply_gocardless_customer(:'org', {AT}, :'obj', :'corr')", org=org, at=at_var(at),
                 obj=json.dumps(obj), corr=CORR)


def add_customer(org, name, email=None):
    return value("INSERT INTO customers (organisation_id, name, email) VALUES (:'o', :'n', nullif(:'e', '')) "
                 "RETURNING id", o=org, n=name, e=email or "")


def link(org, provider, external_id, customer):
    value("SELECT match_link(:'o', :'p', :'x', :'c', 'admin', 'user:1', 'corr-admin')", o=org, p=provider,
          x=external_id, c=customer)


def linked_customer(org, name="Ada", email=None):
    """A portal customer and a Stripe customer id linked to it by an admin."""
    customer, cus = add_customer(org, name, email), uid("cus_")
    link(org, "stripe", cus, customer)
    return customer, cus


def method(org, object_id, cols="customer_id, kind, status, is_default"):
    r = rows(f"SELECT {cols} FROM payment_methods WHERE organisation_id = :'o' AND object_id = :'x'", o=org,
             x=object_id)
    return r[0] if r else None


def default_of(org, customer):
    return [r[0] for r in rows("SELECT object_id FROM payment_methods WHERE organisation_id = :'o' AND "
                               "customer_id = :'c' AND is_default", o=org, c=customer)]


def queue(org, external_id):
    return rows("SELECT status, reasons->>'kind', reasons->>'rule', candidate_ids::text, external_name "
                "FROM matching_queue WHERE organisation_id = :'o' AND external_id = :'x' ORDER BY id", o=org,
                x=external_id)


def expect_idempotent(org, fn, expected, what):
    """fn() again returns expected and writes no audit row."""
    before = audit_count(org)
    expect_eq(fn(), expected, what + ": outcome again")
    expect_eq(audit_count(org), before, what + ": no second audit row")


# ---------------------------------------------------------------------------------------------------
# Tests


def test_card_inserted_updated_unchanged():
    org = new_org()
    ada, cus = linked_customer(org, "Ada Lovelace", "ada@example.com")
    pm = card(customer=cus)
    n = audit_count(org)
    expect_eq(apply_pm(org, pm, "acct_1Nv0FGQ9RKHgCVdK"), "inserted", "first apply")
    expect_eq(method(org, pm["id"], "customer_id, provider_customer, kind, brand, last4, exp_month, exp_year, "
                     "fingerprint, status, is_default, provider_created_at = to_timestamp(1726673582)"),
              [ada, cus, "card", "visa", "4242", "8", "2026", "Xt5EWLLDS7FJjR1c", "active", "t", "t"],
              "the card row: its customer through the link, the newest usable method is the default")
    acts = rows("SELECT actor, action, correlation_id FROM (SELECT * FROM audit_log WHERE organisation_id = :'o' "
                "ORDER BY id DESC LIMIT :'k') s ORDER BY id", o=org, k=audit_count(org) - n)
    expect_eq(acts, [["system:payments", "payment_method.upsert", CORR],
                     ["system:payments", "payment_method.default", CORR]], "audited as system:payments")
    expect_idempotent(org, lambda: apply_pm(org, pm, "acct_1Nv0FGQ9RKHgCVdK"), "unchanged", "same PaymentMethod")
    pm2 = copy.deepcopy(pm)
    pm2["card"].update(exp_month=9, exp_year=2030)
    expect_eq(apply_pm(org, pm2, "acct_1Nv0FGQ9RKHgCVdK"), "updated", "new expiry")
    expect_eq(method(org, pm["id"], "exp_month, exp_year, is_default"), ["9", "2030", "t"], "expiry updated")
    expect_idempotent(org, lambda: apply_pm(org, pm2, "acct_1Nv0FGQ9RKHgCVdK"), "unchanged", "updated again")
    expect_eq(value("SELECT audit_verify(:'o')", o=org), None, "the audit chain verifies")


def test_card_fields_only():
    org = new_org()
    pm = card("pm_cardfieldsonly", customer="cus_cardfieldsonly")
    # what a careless integration might send: none of it may be stored
    pm["card"].update(number="4242424242424242", cvc="831", exp="08/26")
    pm["card"]["wallet"] = {"type": "apple_pay", "dynamic_last4": "9999"}
    expect_eq(apply_pm(org, pm), "inserted", "inserted")
    raw = json.loads(value("SELECT raw FROM payment_methods WHERE organisation_id = :'o' AND object_id = :'x'",
                           o=org, x=pm["id"]))
    expect_eq(sorted(raw), ["card", "created", "customer", "id", "livemode", "object", "type"], "raw's keys")
    expect_eq(raw["card"], {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2026,
                            "fingerprint": "Xt5EWLLDS7FJjR1c"}, "raw keeps only the card's five fields")
    whole = value("SELECT to_jsonb(m)::text FROM payment_methods m WHERE organisation_id = :'o' AND object_id = :'x'",
                  o=org, x=pm["id"])
    for secret in ["4242424242424242", '"cvc"', '"number"', '"exp"', "Jenny", "Hamilton", "wallet", "apple_pay",
                   "08/26", "cvc_check", "credit", "display_brand"]:
        expect(secret not in whole, f"{secret!r} is not stored", whole)
    audits = value("SELECT string_agg(coalesce(before::text, '') || after::text, ' ') FROM audit_log "
                   "WHERE organisation_id = :'o'", o=org)
    expect("4242424242424242" not in audits and "Jenny" not in audits, "nor audited", audits)
    # a full number where last4 belongs is dropped, not stored and not an error
    bad = card(customer=uid("cus_"), last4="4242424242424242")
    expect_eq(apply_pm(org, bad), "inserted", "a bad last4 is not an exception")
    expect_eq(method(org, bad["id"], "last4, raw->'card' ? 'last4'"), [None, "f"], "a bad last4 is dropped")


def test_stripe_bank_debits():
    org = new_org()
    sepa = {"id": uid("pm_"), "object": "payment_method", "billing_details": {"email": "jenny@example.com",
            "name": "Jenny Rosen"}, "created": 1726673600, "customer": uid("cus_"), "livemode": False,
            "metadata": {}, "type": "sepa_debit",
            "sepa_debit": {"bank_code": "37040044", "branch_code": None, "country": "DE",
                           "fingerprint": "vifs0Ho7vwRn1Miu", "generated_from": {"charge": None,
                           "setup_attempt": None}, "last4": "3000"}}
    expect_eq(apply_pm(org, sepa), "inserted", "sepa_debit")
    expect_eq(method(org, sepa["id"], "kind, scheme, account_number_ending, bank_name, brand, last4, status"),
              ["direct_debit", "sepa_debit", "3000", None, None, None, "active"], "a SEPA debit method")
    us = {"id": uid("pm_"), "object": "payment_method", "billing_details": {"name": "Jenny Rosen"},
          "created": 1726673601, "customer": uid("cus_"), "livemode": False, "metadata": {},
          "type": "us_bank_account",
          "us_bank_account": {"account_holder_type": "individual", "account_type": "checking",
                              "bank_name": "STRIPE TEST BANK", "financial_connections_account": None,
                              "fingerprint": "LstWJFsCK7P349Bg", "last4": "6789",
                              "networks": {"preferred": "ach", "supported": ["ach"]},
                              "routing_number": "110000000", "status_details": {}}}
    expect_eq(apply_pm(org, us), "inserted", "us_bank_account")
    expect_eq(method(org, us["id"], "kind, scheme, account_number_ending, bank_name"),
              ["direct_debit", "us_bank_account", "6789", "STRIPE TEST BANK"], "a US bank account method")
    whole = value("SELECT to_jsonb(m)::text FROM payment_methods m WHERE organisation_id = :'o' AND object_id = :'x'",
                  o=org, x=us["id"])
    expect("110000000" not in whole and "37040044" not in whole, "no routing number or bank code", whole)


def test_detach_clears_default():
    org = new_org()
    ada, cus = linked_customer(org)
    old, new = card(customer=cus, created=1700000000), card(customer=cus, created=1700000100, last4="1881")
    expect_eq([apply_pm(org, old), apply_pm(org, new)], ["inserted", "inserted"], "two cards")
    expect_eq(default_of(org, ada), [new["id"]], "the newest is the default")
    gone = dict(new, customer=None)
    expect_eq(apply_pm(org, gone), "detached", "customer null: detached")
    expect_eq(method(org, new["id"], "status, is_default, customer_id, provider_customer"),
              ["detached", "f", ada, cus], "detached, not default, still shows whose it was")
    expect_eq(default_of(org, ada), [old["id"]], "the other usable card becomes the default")
    expect_idempotent(org, lambda: apply_pm(org, gone), "unchanged", "detached again")
    expect_eq(apply_pm(org, dict(old, customer=None)), "detached", "the last card detached")
    expect_eq(default_of(org, ada), [], "no usable method: no default")
    # Stripe never attaches a detached PaymentMethod again (PROVIDERS.md: detach is permanent): a copy showing it
    # attached is an older one, whenever it is applied
    expect_idempotent(org, lambda: apply_pm(org, old), "stale", "an attached copy after the detach")
    expect_eq(method(org, old["id"]), [ada, "card", "detached", "f"], "still detached")
    expect_eq(default_of(org, ada), [], "and still no default")


def test_detach_then_stale_attach():
    """Events out of order: the detach is applied first, then a copy of the card fetched before it."""
    org = new_org()
    ada, cus = linked_customer(org)
    other = card(customer=cus, created=1700000000, last4="1111")
    pm = card(customer=cus, created=1700000100)
    expect_eq(apply_pm(org, other, at=5), "inserted", "another card of the customer")
    # the detach observed at 30, the attached copy at 20: the card was detached after the attached copy was fetched
    expect_eq(apply_pm(org, dict(pm, customer=None), at=30), "detached", "first seen detached")
    expect_eq(method(org, pm["id"], "status, provider_customer, observed_at = timestamptz '2026-01-01 00:00:30+00'"),
              ["detached", None, "t"], "a detached card, never seen attached, observed at 30")
    n = audit_count(org)
    expect_eq(apply_pm(org, pm, at=20), "stale", "the older attached copy")
    expect_eq(method(org, pm["id"]), [None, "card", "detached", "f"], "still detached, nobody's, not a default")
    expect_eq(default_of(org, ada), [other["id"]], "the other card stays the default")
    expect_eq(audit_count(org), n, "a stale copy writes no audit row")
    # attached first (at 10), detached at 30, then the copy of 20 applied last
    pm2 = card(customer=cus, created=1700000200, last4="2222")
    expect_eq(apply_pm(org, pm2, at=10), "inserted", "attached at 10")
    expect_eq(default_of(org, ada), [pm2["id"]], "the newest card is the default")
    expect_eq(apply_pm(org, dict(pm2, customer=None), at=30), "detached", "detached at 30")
    expect_eq(apply_pm(org, pm2, at=20), "stale", "the copy of 20 after the detach of 30")
    expect_eq(method(org, pm2["id"], "customer_id, provider_customer, status, is_default"),
              [ada, cus, "detached", "f"], "still detached")
    expect_eq(default_of(org, ada), [other["id"]], "the default stays with the card still attached")
    # a copy observed even later that shows it attached: Stripe never re-attaches a detached method
    expect_eq(apply_pm(org, pm2, at=40), "stale", "attached again, observed later")
    expect_eq(method(org, pm2["id"], "status"), ["detached"], "detach is permanent at Stripe")
    # a SetupIntent carrying an old copy of the method is no different
    seti = dict(STRIPE_SETUP_INTENT, id=uid("seti_"), status="succeeded", customer=cus, payment_method=pm2)
    expect_eq(apply_setup(org, seti, at=50), "stale", "an old expanded copy in a SetupIntent")


def test_stale_update_after_newer_update():
    org = new_org()
    ada, cus = linked_customer(org)
    pm = card(customer=cus, exp_month=8, exp_year=2026)
    newer = card(pm["id"], customer=cus, exp_month=9, exp_year=2030)
    expect_eq(apply_pm(org, pm, at=10), "inserted", "the card, observed at 10")
    expect_eq(apply_pm(org, newer, at=30), "updated", "its new expiry, observed at 30")
    n = audit_count(org)
    expect_eq(apply_pm(org, pm, at=20), "stale", "the copy of 20, applied after the one of 30")
    expect_eq(method(org, pm["id"], "exp_month, exp_year"), ["9", "2030"], "the newest expiry stays")
    expect_eq(audit_count(org), n, "no audit row")
    # the same state seen again later advances the observation: a copy between the two is older than it
    expect_eq(apply_pm(org, newer, at=50), "unchanged", "the newest state again, at 50")
    expect_eq(method(org, pm["id"], "observed_at = timestamptz '2026-01-01 00:00:50+00'"), ["t"], "observed at 50")
    expect_eq(apply_pm(org, pm, at=40), "stale", "a copy of 40 after the same state seen at 50")
    expect_eq(method(org, pm["id"], "exp_month"), ["9"], "unchanged")
    # a tie is not older (the same claim may apply its object twice)
    expect_eq(apply_pm(org, card(pm["id"], customer=cus, exp_month=10, exp_year=2031), at=50), "updated",
              "a copy of the same instant")
    expect_eq(audit_count(org), n + 1, "one audit row for the one update")
    expect_eq(apply_pm(org, pm), "updated", "a copy observed now, after all of them")
    expect_eq(method(org, pm["id"], "exp_month, exp_year"), ["8", "2026"], "is applied")


def test_stripe_customer_order():
    org = new_org()
    ada = add_customer(org, "Ada", "ada@example.com")
    cus = uid("cus_")
    a, b = card(customer=cus, created=1700000000), card(customer=cus, created=1700000100)
    expect_eq([apply_pm(org, a, at=1), apply_pm(org, b, at=1)], ["inserted", "inserted"], "two cards")
    expect_eq(apply_customer(org, stripe_customer(cus, email="ada@example.com", default=a["id"]), at=30), ada,
              "the customer at 30 names a as its default")
    expect_eq(default_of(org, ada), [a["id"]], "a is the default")
    n = audit_count(org)
    expect_eq(apply_customer(org, stripe_customer(cus, email="ada@example.com", default=b["id"]), at=20), ada,
              "an older copy naming b")
    expect_eq(default_of(org, ada), [a["id"]], "the newer default stays")
    expect_eq(audit_count(org), n, "no audit row")
    # deleted at 40; an older copy, and even a newer one, cannot bring it back (Stripe's deletion is permanent)
    expect_eq(apply_customer(org, {"id": cus, "object": "customer", "deleted": True}, at=40), ada, "deleted")
    expect_eq(default_of(org, ada), [], "a deleted customer's methods are no default")
    for at in (35, 60):
        expect_eq(apply_customer(org, stripe_customer(cus, email="ada@example.com", default=a["id"]), at=at), ada,
                  f"a copy of the customer at {at}, not deleted")
        expect_eq(value("SELECT deleted FROM payment_customers WHERE organisation_id = :'o' AND external_id = :'x'",
                        o=org, x=cus), "t", f"still deleted after the copy of {at}")
        expect_eq(default_of(org, ada), [], "still no default")
    # an expanded customer inside an older PaymentMethod copy is no different
    expect_eq(apply_pm(org, dict(a, customer=stripe_customer(cus, email="ada@example.com", default=a["id"])), at=2),
              "unchanged", "the card with an old expanded customer")
    expect_eq(default_of(org, ada), [], "the customer stays deleted")


def test_gocardless_mandate_status_order():
    org = new_org()
    ada = add_customer(org, "Frank Osborne", "user@example.com")
    link(org, "gocardless", "CU_ORD", ada)
    md = mandate("MD_ORD", customer="CU_ORD", bank=None, status="pending_submission")
    expect_eq(apply_mandate(org, md, at=10), "inserted", "pending_submission at 10")
    expect_eq(apply_mandate(org, dict(md, status="active"), at=30), "updated", "active at 30")
    n = audit_count(org)
    for at, status in ((20, "submitted"), (25, "pending_submission")):
        expect_eq(apply_mandate(org, dict(md, status=status), at=at), "stale", f"{status} at {at}, applied late")
        expect_eq(method(org, "MD_ORD", "status"), ["active"], "the status does not go back")
    expect_eq(audit_count(org), n, "no audit row")
    expect_eq(apply_mandate(org, dict(md, status="cancelled"), at=40), "updated", "cancelled at 40")
    expect_eq(default_of(org, ada), [], "a cancelled mandate is no default")
    expect_eq(apply_mandate(org, dict(md, status="active"), at=35), "stale", "the active copy of 35")
    expect_eq(default_of(org, ada), [], "still no default")
    # GoCardless does reinstate cancelled mandates (mandates.reinstated): a newer active copy is applied
    expect_eq(apply_mandate(org, dict(md, status="active"), at=50), "updated", "reinstated at 50")
    expect_eq(default_of(org, ada), ["MD_ORD"], "usable again: the default")
    # the customer, applied with the mandate, follows the same rule
    expect_eq(apply_gc_customer(org, dict(GC_CUSTOMER, id="CU_ORD"), at=60), ada, "the customer at 60")
    n = audit_count(org)
    expect_eq(apply_gc_customer(org, dict(GC_CUSTOMER, id="CU_ORD", email="someone@example.com"), at=55), ada,
              "an older copy of the customer")
    expect_eq(audit_count(org), n, "changes nothing")


def test_default_rules():
    org = new_org()
    ada = add_customer(org, "Ada", "ada@example.com")
    cus = uid("cus_")
    a, b, c = (card(customer=cus, created=t) for t in (1700000000, 1700000200, 1700000100))
    # the customer names b's older sibling a as its default before either method arrived: remembered
    expect_eq(apply_customer(org, stripe_customer(cus, email="ada@example.com", default=a["id"])), ada,
              "the customer matches by email")
    expect_eq(apply_pm(org, b), "inserted", "b")
    expect_eq(default_of(org, ada), [b["id"]], "only b is usable: b")
    expect_eq(apply_pm(org, a), "inserted", "a")
    expect_eq(default_of(org, ada), [a["id"]], "the provider's explicit default wins over the newest")
    expect_eq(apply_pm(org, c), "inserted", "c")
    expect_eq(default_of(org, ada), [a["id"]], "still the explicit default")
    # the provider changes its default
    expect_eq(apply_customer(org, stripe_customer(cus, email="ada@example.com", default=c["id"])), ada, "new default")
    expect_eq(default_of(org, ada), [c["id"]], "the new explicit default")
    expect_idempotent(org, lambda: apply_customer(org, stripe_customer(cus, email="ada@example.com",
                                                                       default=c["id"])), ada, "same customer")
    # an expanded default_payment_method counts as its id
    expanded = stripe_customer(cus, email="ada@example.com", default=None)
    expanded["invoice_settings"]["default_payment_method"] = dict(a)
    apply_customer(org, expanded)
    expect_eq(default_of(org, ada), [a["id"]], "an expanded default names its id")
    # the explicit default detached: the newest usable one
    expect_eq(apply_pm(org, dict(a, customer=None)), "detached", "a detached")
    expect_eq(default_of(org, ada), [b["id"]], "the newest usable method (b, created last)")
    # a GoCardless mandate of the same portal customer: usable statuses only
    link(org, "gocardless", "CU_ADA", ada)
    md = mandate("MD_ADA", customer="CU_ADA", bank=None, status="pending_customer_approval",
                 created_at="2030-01-01T00:00:00.000Z")
    expect_eq(apply_mandate(org, md), "inserted", "a mandate awaiting approval")
    expect_eq(default_of(org, ada), [b["id"]], "pending_customer_approval is not usable")
    expect_eq(apply_mandate(org, dict(md, status="submitted")), "updated", "submitted")
    expect_eq(default_of(org, ada), ["MD_ADA"], "a submitted mandate is usable, and the newest")
    # everything detached or cancelled
    apply_pm(org, dict(b, customer=None))
    apply_pm(org, dict(c, customer=None))
    apply_mandate(org, dict(md, status="cancelled"))
    expect_eq(default_of(org, ada), [], "nothing usable: no default")
    expect_eq(value("SELECT count(*) FROM payment_methods WHERE organisation_id = :'o' AND is_default", o=org), "0",
              "no default left anywhere")


def test_deleted_stripe_customer_methods_not_default():
    org = new_org()
    ada = add_customer(org, "Ada", "ada@example.com")
    cus = uid("cus_")
    pm = card(customer=cus)
    expect_eq(apply_customer(org, stripe_customer(cus, email="ADA@example.com")), ada, "matched")
    expect_eq(apply_pm(org, pm), "inserted", "card")
    expect_eq(default_of(org, ada), [pm["id"]], "default")
    expect_eq(apply_customer(org, {"id": cus, "object": "customer", "deleted": True}), ada,
              "a deleted customer keeps its link")
    expect_eq(default_of(org, ada), [], "a deleted customer's method is no default")


def test_expanded_and_string_customer():
    org = new_org()
    ada = add_customer(org, "Ada Lovelace", "ada@example.com")
    # expanded: matched by email, case and whitespace aside
    pm = card(customer=stripe_customer(email="  ADA@Example.COM ", name="Someone Else"))
    cus = pm["customer"]["id"]
    expect_eq(apply_pm(org, pm), "inserted", "expanded customer")
    expect_eq(method(org, pm["id"], "customer_id, provider_customer"), [ada, cus], "the expanded customer's")
    expect_eq(rows("SELECT customer_id, rule FROM customer_links WHERE organisation_id = :'o' AND external_id = :'x'",
                   o=org, x=cus), [[ada, "email"]], "linked by email")
    expect_eq(rows("SELECT customer_id, default_method, deleted FROM payment_customers WHERE organisation_id = :'o' "
                   "AND external_id = :'x'", o=org, x=cus), [[ada, None, "f"]], "the customer remembered")
    expect_idempotent(org, lambda: apply_pm(org, pm), "unchanged", "expanded again")
    # a string customer nobody matched yet: no portal customer until the Customer is applied
    cus2 = uid("cus_")
    bob = add_customer(org, "Bob Jones", "bob@example.com")
    pm2 = card(customer=cus2)
    expect_eq(apply_pm(org, pm2), "inserted", "string customer, not linked")
    expect_eq(method(org, pm2["id"], "customer_id, provider_customer, is_default"), [None, cus2, "f"],
              "no portal customer, so no default")
    expect_eq(value("SELECT count(*) FROM matching_queue WHERE organisation_id = :'o' AND external_id = :'x'",
                    o=org, x=cus2), "0", "an id string alone is not queued (nothing to match with)")
    expect_eq(apply_customer(org, stripe_customer(cus2, email="bob@example.com", name="Bob Jones")), bob,
              "the customer, applied later")
    expect_eq(method(org, pm2["id"], "customer_id, is_default"), [bob, "t"],
              "its methods that lacked a customer get it, and a default")
    expect_eq(method(org, pm["id"], "customer_id"), [ada], "another customer's method is untouched")


def test_setup_intent():
    org = new_org()
    ada, cus = linked_customer(org, "Ada", "ada@example.com")
    pm = card(customer=cus)
    si = dict(STRIPE_SETUP_INTENT, customer=cus, status="succeeded", payment_method=pm)
    expect_eq(apply_setup(org, si), "inserted", "succeeded with an expanded method")
    expect_eq(method(org, pm["id"]), [ada, "card", "active", "t"], "the method")
    expect_idempotent(org, lambda: apply_setup(org, si), "unchanged", "the same SetupIntent")
    n = audit_count(org)
    expect_eq(apply_setup(org, dict(si, payment_method=uid("pm_"))), "needs_fetch", "an id string")
    for status in ("requires_payment_method", "requires_action", "processing", "canceled"):
        expect_eq(apply_setup(org, dict(si, status=status)), "ignored", status)
    expect_eq(apply_setup(org, dict(si, payment_method=None)), "ignored", "succeeded without a method")
    expect_eq(audit_count(org), n, "none of these writes anything")


def test_matching_rules():
    org = new_org()
    ada = add_customer(org, "Ada Lovelace", "ada@example.com")
    add_customer(org, "Twin Co", "twin@example.com")
    add_customer(org, "Twin Co", "twin2@example.com")
    other = new_org()
    add_customer(other, "Only Elsewhere", "elsewhere@example.com")
    customers = value("SELECT count(*) FROM customers WHERE organisation_id = :'o'", o=org)

    def m(provider, ext, email, name):
        return value("SELECT pm_match_customer(:'o', :'p', :'x', nullif(:'e', ''), nullif(:'n', ''), :'c')", o=org,
                     p=provider, x=ext, e=email or "", n=name or "", c=CORR)

    # existing link wins over everything
    link(org, "stripe", "cus_LINKED", ada)
    expect_eq(m("stripe", "cus_LINKED", "twin@example.com", "Twin Co"), ada, "existing link")
    # email, case and whitespace insensitive
    expect_eq(m("stripe", "cus_EMAIL", " Ada@EXAMPLE.com\t", None), ada, "email")
    expect_eq(value("SELECT rule FROM customer_links WHERE organisation_id = :'o' AND external_id = 'cus_EMAIL'",
                    o=org), "email", "linked by email")
    # name, after an email that matches nobody
    expect_eq(m("gocardless", "CU_NAME", "nobody@example.com", "  ada   LOVELACE "), ada, "name")
    expect_eq(value("SELECT rule FROM customer_links WHERE organisation_id = :'o' AND external_id = 'CU_NAME'",
                    o=org), "name", "linked by name")
    # ambiguous: queued with both candidates, NULL
    expect_eq(m("stripe", "cus_AMB", None, "twin co"), None, "ambiguous")
    q = queue(org, "cus_AMB")
    expect_eq([r[:3] for r in q], [["open", "ambiguous", "name"]], "queued as ambiguous")
    expect_eq(len(json.loads(q[0][3].replace("{", "[").replace("}", "]"))), 2, "both candidates")
    expect_idempotent(org, lambda: m("stripe", "cus_AMB", None, "twin co"), None, "ambiguous again")
    expect_eq(len(queue(org, "cus_AMB")), 1, "one queue entry")
    # none: queued, NULL; another organisation's customer is never a candidate
    expect_eq(m("stripe", "cus_NONE", "elsewhere@example.com", "Only Elsewhere"), None, "none")
    expect_eq(queue(org, "cus_NONE"), [["open", "none", None, "{}", "Only Elsewhere"]], "queued as none")
    expect_idempotent(org, lambda: m("stripe", "cus_NONE", "elsewhere@example.com", "Only Elsewhere"), None,
                      "none again")
    expect_eq(value("SELECT count(*) FROM customers WHERE organisation_id = :'o'", o=org), customers,
              "never creates customers")
    expect_eq(m("stripe", "  ", "ada@example.com", None), None, "a blank external id matches nothing")
    sm.fails("SELECT pm_match_customer(:'o', 'xero', 'x', NULL, NULL, 'c')", r"not a payment provider", o=org)
    # a queued customer that later matches resolves its entry
    add_customer(org, "Late Comer", "late@example.com")
    expect(m("stripe", "cus_NONE", "late@example.com", None) is not None, "matches once a customer exists")
    expect_eq([r[0] for r in queue(org, "cus_NONE")], ["resolved"], "its queue entry resolved")


def test_gocardless_mandate():
    org = new_org()
    frank = add_customer(org, "Frank  Osborne", "frank@other.example")
    md = mandate()
    n = audit_count(org)
    expect_eq(apply_mandate(org, md), "inserted", "a mandate, bank account and customer not fetched")
    expect_eq(method(org, "MD123", "kind, scheme, status, bank_name, account_number_ending, customer_id, "
                     "provider_customer, is_default"),
              ["direct_debit", "bacs", "pending_submission", None, None, None, "CU123", "f"],
              "no bank details, no portal customer yet")
    expect_eq(queue(org, "CU123"), [], "a customer not fetched is not queued")
    expect_eq(audit_count(org), n + 1, "one audit row")
    expect_eq(apply_mandate(org, md, GC_BANK_ACCOUNT, GC_CUSTOMER), "updated", "with bank account and customer")
    expect_eq(method(org, "MD123", "bank_name, account_number_ending, customer_id, is_default"),
              ["BARCLAYS BANK PLC", "1235", frank, "t"],
              "bank details; customer matched by given and family name; a pending_submission mandate is usable")
    expect_eq(value("SELECT rule FROM customer_links WHERE organisation_id = :'o' AND external_id = 'CU123'", o=org),
              "name", "linked by name")
    expect_idempotent(org, lambda: apply_mandate(org, md, GC_BANK_ACCOUNT, GC_CUSTOMER), "unchanged", "again")
    # later refetches without the other two keep what is known
    expect_idempotent(org, lambda: apply_mandate(org, md), "unchanged", "without bank account and customer")
    raw = json.loads(value("SELECT raw FROM payment_methods WHERE organisation_id = :'o' AND object_id = 'MD123'",
                           o=org))
    expect("metadata" not in raw and "NAOMI" not in json.dumps(raw), "raw is reduced", raw)
    for status, usable in [("submitted", True), ("active", True), ("suspended_by_payer", False),
                           ("active", True), ("failed", False), ("cancelled", False), ("expired", False),
                           ("consumed", False), ("blocked", False)]:
        expect_eq(apply_mandate(org, dict(md, status=status)), "updated", status)
        expect_eq(default_of(org, frank), ["MD123"] if usable else [], f"{status}: default or not")
    bank_only = value("SELECT count(*) FROM audit_log WHERE organisation_id = :'o' AND action = 'payment_method.upsert'"
                      " AND after->>'bank_name' IS NULL AND before->>'bank_name' IS NOT NULL", o=org)
    expect_eq(bank_only, "0", "the bank name was never wiped")
    # a company name wins over the person's name
    acme = add_customer(org, "Acme Ltd")
    co = dict(GC_CUSTOMER, id="CU_ACME", company_name="ACME LTD")
    expect_eq(apply_mandate(org, mandate("MD_ACME", customer="CU_ACME", bank=None), None, co), "inserted", "company")
    expect_eq(method(org, "MD_ACME", "customer_id"), [acme], "matched by company name")
    # a customer document that is not the mandate's is not applied
    stray = dict(GC_CUSTOMER, id="CU_STRAY")
    expect_eq(apply_mandate(org, mandate("MD_X", customer="CU_NOBODY", bank=None), None, stray), "inserted", "stray")
    expect_eq(value("SELECT count(*) FROM customer_links WHERE organisation_id = :'o' AND external_id = 'CU_STRAY'",
                    o=org), "0", "the stray customer is not matched")


def test_gocardless_customer_links_mandates():
    org = new_org()
    md = mandate("MD_LATE", customer="CU_LATE", bank=None, status="active")
    expect_eq(apply_mandate(org, md), "inserted", "mandate first")
    naomi = add_customer(org, "Naomi Watson", "naomi@example.com")
    cu = dict(GC_CUSTOMER, id="CU_LATE", email="NAOMI@example.com ", given_name="X", family_name="Y")
    expect_eq(apply_gc_customer(org, cu), naomi, "the customer, matched by email")
    expect_eq(method(org, "MD_LATE", "customer_id, is_default"), [naomi, "t"], "its mandate linked, the default")
    expect_idempotent(org, lambda: apply_gc_customer(org, cu), naomi, "customer again")
    expect_eq(apply_gc_customer(org, {"given_name": "No", "family_name": "Id"}), None, "no id: NULL")


def test_other_organisation_isolation():
    a, b = new_org(), new_org()
    ada_a = add_customer(a, "Ada", "ada@example.com")
    ada_b = add_customer(b, "Ada", "ada@example.com")
    pm = card(customer=stripe_customer(email="ada@example.com"))
    expect_eq(apply_pm(a, pm), "inserted", "in a")
    before_a = rows("SELECT to_jsonb(m) - 'updated_at' FROM payment_methods m WHERE organisation_id = :'o'", o=a)
    audit_a = audit_count(a)
    pm_b = copy.deepcopy(pm)
    pm_b["card"]["exp_year"] = 2031
    pm_b["customer"]["invoice_settings"]["default_payment_method"] = pm["id"]
    expect_eq(apply_pm(b, pm_b), "inserted", "the same ids in b are b's own rows")
    expect_eq(method(b, pm["id"], "customer_id, exp_year"), [ada_b, "2031"], "b's row, b's customer")
    expect_eq(method(a, pm["id"], "customer_id, exp_year"), [ada_a, "2026"], "a's row untouched")
    expect_eq(rows("SELECT to_jsonb(m) - 'updated_at' FROM payment_methods m WHERE organisation_id = :'o'", o=a),
              before_a, "nothing of a changed")
    expect_eq(audit_count(a), audit_a, "no audit row in a")
    expect_eq(value("SELECT default_method FROM payment_customers WHERE organisation_id = :'o' AND external_id = :'x'",
                    o=a, x=pm["customer"]["id"]), None, "a's customer has no default from b")
    apply_mandate(b, mandate(), GC_BANK_ACCOUNT, dict(GC_CUSTOMER, email="ada@example.com"))
    expect_eq(method(a, "MD123"), None, "b's mandate is not in a")


def test_bad_input_is_ignored():
    org = new_org()
    n = audit_count(org)
    no_id = card()
    del no_id["id"]
    cases = [
        ("pm no id", apply_pm(org, no_id), "ignored"),
        ("pm blank id", apply_pm(org, dict(card(), id="")), "ignored"),
        ("pm numeric id", apply_pm(org, dict(card(), id=12)), "ignored"),
        ("pm not an object", apply_pm(org, ["pm_1"]), "ignored"),
        ("pm JSON null", apply_pm(org, None), "ignored"),
        ("pm another object", apply_pm(org, dict(card(), object="customer")), "ignored"),
        ("pm paypal", apply_pm(org, {"id": uid("pm_"), "object": "payment_method", "type": "paypal",
                                     "paypal": {"payer_email": "x@example.com"}, "customer": "cus_1"}), "ignored"),
        ("pm no type", apply_pm(org, {"id": uid("pm_"), "object": "payment_method", "customer": "cus_1"}), "ignored"),
        ("setup no status", apply_setup(org, {"id": "seti_1", "object": "setup_intent"}), "ignored"),
        ("setup not an object", apply_setup(org, "seti_1"), "ignored"),
        ("customer no id", apply_customer(org, dict(stripe_customer(), id=None)), None),
        ("customer not an object", apply_customer(org, 7), None),
        ("mandate no id", apply_mandate(org, dict(mandate(), id=None)), "ignored"),
        ("mandate no status", apply_mandate(org, {k: v for k, v in mandate().items() if k != "status"}), "ignored"),
        ("mandate bad status", apply_mandate(org, dict(mandate(), status="DROP TABLE")), "ignored"),
        ("mandate not an object", apply_mandate(org, [1, 2]), "ignored"),
        ("gc customer not an object", apply_gc_customer(org, "CU1"), None),
    ]
    for what, got, want in cases:
        expect_eq(got, want, what)
    expect_eq(audit_count(org), n, "bad input writes no audit row")
    expect_eq(value("SELECT count(*) FROM payment_methods WHERE organisation_id = :'o'", o=org), "0", "and no method")
    # odd values inside a good object are dropped, not stored and not an exception
    odd = card(customer="cus_odd", exp_month=13, exp_year="2026", brand="Visa Electron!", fingerprint="a b")
    odd["created"] = "yesterday"
    expect_eq(apply_pm(org, odd), "inserted", "odd values")
    expect_eq(method(org, odd["id"], "exp_month, exp_year, brand, fingerprint, provider_created_at, last4"),
              [None, None, None, None, None, "4242"], "each odd value dropped")
    gc_odd = dict(mandate("MD_ODD", bank="BA_ODD"), created_at="soon")
    expect_eq(apply_mandate(org, gc_odd, dict(GC_BANK_ACCOUNT, id="BA_ODD", account_number_ending="12345678")),
              "inserted", "a full account number where the ending belongs")
    expect_eq(method(org, "MD_ODD", "account_number_ending, bank_name, provider_created_at"),
              [None, "BARCLAYS BANK PLC", None], "dropped")


def test_functions_reapply_cleanly():
    # the functions file's text is what the binary embeds, and every function it names exists once
    names = ["pm_match_customer", "pm_apply_stripe_customer", "pm_apply_stripe_payment_method",
             "pm_apply_stripe_setup_intent", "pm_apply_gocardless_mandate", "pm_apply_gocardless_customer",
             "pm_refresh_default", "match_rules"]
    got = rows("SELECT proname, count(*) FROM pg_proc WHERE proname = ANY (string_to_array(:'n', ',')) "
               "GROUP BY proname ORDER BY proname", n=",".join(names))
    expect_eq(got, [[n, "1"] for n in sorted(names)], "each function defined once")
    expect_eq(value("SELECT count(*) FROM schema_functions WHERE name = 'payment_methods.sql'"), "1", "recorded")
    # pm_refresh_default is callable with the two documented arguments
    org = new_org()
    ada = add_customer(org, "Ada")
    expect_eq(value("SELECT 1 FROM pm_refresh_default(:'o', :'c')", o=org, c=ada), "1", "two-argument call")


if __name__ == "__main__":
    sm.run(globals(), "sql_pm", "pm_apply_stripe_payment_method", "schema/functions/payment_methods.sql")
