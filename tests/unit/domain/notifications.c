/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/domain/notifications.c's rendering: the templates compiled in (every kind settled renders has
 * a text and an HTML template, and each renders), HTML escaping of every value in the HTML body and only there,
 * control characters in values (no header injection through the subject), amounts with the currency's own
 * decimals from minor units, and the fallbacks of missing values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "notifications.h"

static const char *const rendered_kinds[] = {"invoice_due", "due_today",         "overdue",         "final_notice",
                                             "receipt",     "collection_failed", "method_expiring", "mandate_ended"};

static void test_amounts(void **state)
{
    (void)state;
    char buf[64];
    static const struct {
        int64_t minor;
        const char *currency, *want;
    } cases[] = {
        {123450, "GBP", "GBP 1,234.50"}, {123450, "gbp", "GBP 1,234.50"},
        {5, "GBP", "GBP 0.05"},          {0, "EUR", "EUR 0.00"},
        {1235, "JPY", "JPY 1,235"},      {125, "KWD", "KWD 0.125"},
        {100, "JPY", "JPY 100"},         {123456789012, "USD", "USD 1,234,567,890.12"},
        {-1230, "GBP", "GBP -12.30"},    {100000, "JPY", "JPY 100,000"},
        {999, "USD", "USD 9.99"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        int n = gw_notify_format_amount(cases[i].minor, cases[i].currency, buf, sizeof(buf));
        assert_int_equal(n, (int)strlen(cases[i].want));
        assert_string_equal(buf, cases[i].want);
    }
    assert_int_equal(gw_notify_format_amount(100, "XXY", buf, sizeof(buf)), -1); /* unknown currency */
    assert_int_equal(gw_notify_format_amount(100, "GB", buf, sizeof(buf)), -1);
    assert_int_equal(gw_notify_format_amount(123450, "GBP", buf, 8), -1); /* does not fit */
}

static void test_every_kind_renders(void **state)
{
    (void)state;
    gw_notify_values_t v = {.customer_name = "Ann",
                            .invoice_number = "INV-7",
                            .currency = "GBP",
                            .amount_minor = 1000,
                            .has_amount = true,
                            .due_date = "2026-12-15",
                            .payment_link = "https://p.example/invoices/inv_1",
                            .organisation_name = "Acme"};
    for (size_t i = 0; i != sizeof(rendered_kinds) / sizeof(rendered_kinds[0]); ++i) {
        gw_rendered_t r;
        char err[256] = "";
        assert_int_equal(gw_notify_render(rendered_kinds[i], &v, &r, err, sizeof(err)), 0);
        assert_non_null(r.subject);
        assert_true(r.subject[0] != '\0');
        assert_null(strchr(r.subject, '\n'));
        assert_null(strstr(r.text, "{{"));
        assert_null(strstr(r.html, "{{"));
        assert_non_null(strstr(r.text, "Dear Ann,"));
        assert_non_null(strstr(r.html, "<p>Dear Ann,</p>"));
        gw_rendered_free(&r);
    }
    gw_rendered_t r;
    char err[256] = "";
    assert_int_equal(gw_notify_render("nonsense", &v, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no template"));
}

/* The account e-mails carry their link in both bodies, and HTML-escaped in the HTML one. */
static void test_account_kinds_render_the_link(void **state)
{
    (void)state;
    static const char *const kinds[] = {"invitation", "password_reset", "email_verification"};
    gw_notify_values_t v = {.organisation_name = "Acme & Sons", .link = "https://p.example/invite#token=abc&x=1"};
    for (size_t i = 0; i != sizeof(kinds) / sizeof(kinds[0]); ++i) {
        gw_rendered_t r;
        char err[256] = "";
        assert_int_equal(gw_notify_render(kinds[i], &v, &r, err, sizeof(err)), 0);
        assert_true(gw_notify_kind_valid(kinds[i]));
        assert_true(gw_notify_is_account(kinds[i]));
        assert_false(gw_notify_is_reminder(kinds[i]));
        assert_null(strchr(r.subject, '\n'));
        assert_non_null(strstr(r.subject, "Acme & Sons"));
        assert_non_null(strstr(r.text, "https://p.example/invite#token=abc&x=1"));
        assert_non_null(strstr(r.html, "href=\"https://p.example/invite#token=abc&amp;x=1\""));
        assert_null(strstr(r.text, "{{"));
        assert_null(strstr(r.html, "{{"));
        gw_rendered_free(&r);
    }
}

static void test_escaping(void **state)
{
    (void)state;
    gw_notify_values_t v = {.customer_name = "Bob <script>alert('x')</script> & \"Co\"",
                            .invoice_number = "INV-<1>",
                            .currency = "GBP",
                            .amount_minor = 123450,
                            .has_amount = true,
                            .due_date = "2026-12-15",
                            .payment_link = "https://p.example/invoices/a?b=1&c=\"2\"",
                            .organisation_name = "Acme & Sons"};
    gw_rendered_t r;
    char err[256];
    assert_int_equal(gw_notify_render("overdue", &v, &r, err, sizeof(err)), 0);
    assert_null(strstr(r.html, "<script>"));
    assert_non_null(strstr(r.html, "Bob &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Co&quot;"));
    assert_non_null(strstr(r.html, "INV-&lt;1&gt;"));
    assert_non_null(strstr(r.html, "href=\"https://p.example/invoices/a?b=1&amp;c=&quot;2&quot;\""));
    assert_non_null(strstr(r.html, "Acme &amp; Sons"));
    assert_non_null(strstr(r.html, "GBP 1,234.50"));
    /* the text body and the subject are not HTML: the values as they are */
    assert_non_null(strstr(r.text, "Dear Bob <script>alert('x')</script> & \"Co\","));
    assert_string_equal(r.subject, "Invoice INV-<1> is overdue");
    assert_non_null(strstr(r.text, "GBP 1,234.50"));
    gw_rendered_free(&r);
}

static void test_control_characters(void **state)
{
    (void)state;
    gw_notify_values_t v = {.customer_name = "Eve", .invoice_number = "1\r\nBcc: victim@example.com"};
    gw_rendered_t r;
    char err[256];
    assert_int_equal(gw_notify_render("receipt", &v, &r, err, sizeof(err)), 0);
    assert_null(strchr(r.subject, '\r'));
    assert_null(strchr(r.subject, '\n'));
    assert_string_equal(r.subject, "Receipt for invoice 1  Bcc: victim@example.com");
    gw_rendered_free(&r);
}

static void test_missing_values(void **state)
{
    (void)state;
    gw_notify_values_t v = {0}; /* nothing known */
    gw_rendered_t r;
    char err[256];
    assert_int_equal(gw_notify_render("invoice_due", &v, &r, err, sizeof(err)), 0);
    assert_string_equal(r.subject, "Invoice - is due on -");
    assert_non_null(strstr(r.text, "Dear customer,"));
    assert_non_null(strstr(r.text, "Invoice - for - is due on -."));
    assert_non_null(strstr(r.html, "<a href=\"-\">-</a>"));
    gw_rendered_free(&r);
    /* an amount in an unknown currency is missing, not guessed */
    gw_notify_values_t w = {.currency = "ZZZ", .amount_minor = 100, .has_amount = true, .customer_name = ""};
    assert_int_equal(gw_notify_render("receipt", &w, &r, err, sizeof(err)), 0);
    assert_non_null(strstr(r.text, "we received - for"));
    assert_non_null(strstr(r.text, "Dear customer,"));
    gw_rendered_free(&r);
}

static void test_kinds(void **state)
{
    (void)state;
    assert_true(gw_notify_kind_valid("receipt"));
    assert_true(gw_notify_kind_valid("password_reset"));
    assert_false(gw_notify_kind_valid("Receipt"));
    assert_false(gw_notify_kind_valid(NULL));
    assert_true(gw_notify_is_reminder("final_notice"));
    assert_false(gw_notify_is_reminder("receipt"));
    assert_false(gw_notify_is_reminder("collection_failed"));
    assert_false(gw_notify_is_account("receipt"));
    assert_false(gw_notify_is_account(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amounts),
        cmocka_unit_test(test_every_kind_renders),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_control_characters),
        cmocka_unit_test(test_missing_values),
        cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_account_kinds_render_the_link),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
