/* SPDX-License-Identifier: MIT */
/* Tests of gateway/api/payment_methods.c and invoice_pdf.c: which client Idempotency-Keys are taken (they become part
 * of the key settled sends Stripe and GoCardless), the entity tag of an invoice PDF (one per invoice version), and the
 * ledger's minor units as money strings (invoices.c, shared with payments.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "invoice_pdf.h"
#include "invoices.h"
#include "payment_methods.h"

static bool key_ok(const char *k)
{
    return gw_pm_idempotency_key_ok(k, strlen(k));
}

static void test_idempotency_keys(void **state)
{
    assert_true(key_ok("a"));
    assert_true(key_ok("add-card_1.retry:2"));
    assert_true(
        key_ok("0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"));
    assert_false(key_ok(""));
    assert_false(key_ok(
        "01234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890"));
    assert_false(key_ok("two words"));
    assert_false(key_ok("slash/no"));
    assert_false(key_ok("quote\""));
    assert_false(key_ok("caf\xc3\xa9"));
    assert_false(gw_pm_idempotency_key_ok("ab\0c", 4)); /* a NUL inside */
}

static void test_pdf_etag(void **state)
{
    char a[35], b[35], c[35], d[35];
    gw_invoice_pdf_etag("dddddddd-0000-4000-8000-000000000001", "2026-01-01 00:00:00+00", a);
    gw_invoice_pdf_etag("dddddddd-0000-4000-8000-000000000001", "2026-01-01 00:00:00+00", b);
    gw_invoice_pdf_etag("dddddddd-0000-4000-8000-000000000001", "2026-01-01 01:00:00+00", c);
    gw_invoice_pdf_etag("dddddddd-0000-4000-8000-000000000002", "2026-01-01 00:00:00+00", d);
    assert_int_equal(strlen(a), 34);
    assert_true(a[0] == '"' && a[33] == '"');
    for (size_t i = 1; i != 33; ++i)
        assert_non_null(strchr("0123456789abcdef", a[i]));
    assert_string_equal(a, b);     /* the same version: the same tag */
    assert_string_not_equal(a, c); /* a changed invoice */
    assert_string_not_equal(a, d); /* another invoice */
}

static void test_minor_json(void **state)
{
    struct {
        const char *minor, *currency, *want;
    } cases[] = {{"1230", "GBP", "12.30"}, {"7891", "JPY", "7891"}, {"12345", "KWD", "12.345"}, {"0", "GBP", "0.00"},
                 {"-5", "EUR", "-0.05"},   {"12x", "GBP", NULL},    {"1", "XXQ", NULL},         {NULL, "GBP", NULL}};
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        json_t *j = gw_invoices_minor_json(cases[i].minor, cases[i].currency);
        if (cases[i].want == NULL)
            assert_true(json_is_null(j));
        else
            assert_string_equal(json_string_value(j), cases[i].want);
        json_decref(j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idempotency_keys),
        cmocka_unit_test(test_pdf_etag),
        cmocka_unit_test(test_minor_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
