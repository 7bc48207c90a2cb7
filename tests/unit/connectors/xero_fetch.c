/* SPDX-License-Identifier: MIT */
/* Tests of the Xero connector's processing plan: which API calls a group of events turns into. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include "connector.h"

static cn_str_t str(const char *s)
{
    return (cn_str_t){s, strlen(s)};
}

#define ID_A "a03ffcd2-5d91-4c7e-b483-318584e9e439"
#define ID_B "430fa14a-f945-44d3-9f97-5df5e28441b8"

static void test_invoice_ids_coalesce_into_one_call(void **state)
{
    cn_str_t ids[] = {str(ID_A), str(ID_B), str(ID_A), str("A03FFCD2-5D91-4C7E-B483-318584E9E439")};
    cn_fetch_t out[4];
    int n = cn_xero_connector.plan_fetches(str("INVOICE.UPDATE"), ids, 4, out, 4);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].record_kind, "xero.invoices");
    assert_string_equal(out[0].path, "/api.xro/2.0/Invoices?page=1&unitdp=4&IDs=" ID_A "," ID_B);
}

static void test_categories(void **state)
{
    cn_str_t ids[] = {str(ID_A)};
    cn_fetch_t out[1];
    assert_int_equal(cn_xero_connector.plan_fetches(str("CONTACT.CREATE"), ids, 1, out, 1), 1);
    assert_string_equal(out[0].record_kind, "xero.contacts");
    assert_string_equal(out[0].path, "/api.xro/2.0/Contacts?page=1&IDs=" ID_A);
    assert_int_equal(cn_xero_connector.plan_fetches(str("CREDITNOTE.UPDATE"), ids, 1, out, 1), 1);
    assert_string_equal(out[0].record_kind, "xero.creditnotes");
    assert_string_equal(out[0].path, "/api.xro/2.0/CreditNotes?page=1&unitdp=4&IDs=" ID_A);
    assert_int_equal(cn_xero_connector.plan_fetches(str("SUBSCRIPTION.UPDATE"), ids, 1, out, 1), 0);
}

static void test_malformed_ids_never_reach_a_url(void **state)
{
    cn_str_t ids[] = {str("../../Organisation"), str(ID_A "&x=1"), str("a03ffcd2-5d91-4c7e-b483-318584e9e43g"),
                      str("a03ffcd2x5d91-4c7e-b483-318584e9e439")};
    cn_fetch_t out[2];
    assert_int_equal(cn_xero_connector.plan_fetches(str("INVOICE.UPDATE"), ids, 4, out, 2), 0);
}

static void test_many_ids_split_into_calls_of_fifty(void **state)
{
    char buf[120][37];
    cn_str_t ids[120];
    for (int i = 0; i != 120; ++i) {
        snprintf(buf[i], sizeof(buf[i]), "00000000-0000-0000-0000-%012d", i);
        ids[i] = (cn_str_t){buf[i], 36};
    }
    cn_fetch_t out[3];
    assert_int_equal(cn_xero_connector.plan_fetches(str("INVOICE.UPDATE"), ids, 120, out, 3), 3);
    for (int f = 0; f != 3; ++f) {
        size_t commas = 0;
        for (const char *p = out[f].path; *p; ++p)
            commas += *p == ',';
        assert_int_equal(commas, f == 2 ? 19 : 49);
    }
    /* with room for two calls only, the rest waits for the next round */
    assert_int_equal(cn_xero_connector.plan_fetches(str("INVOICE.UPDATE"), ids, 120, out, 2), 2);
}

static void test_sync_pages_and_count(void **state)
{
    cn_fetch_t f;
    assert_int_equal(cn_xero_connector.plan_sync_page("xero.contacts", 3, &f), 0);
    assert_string_equal(f.path, "/api.xro/2.0/Contacts?page=3&order=UpdatedDateUTC%20ASC");
    /* invoices and credit notes ask for four-place unit amounts (Xero rounds them to 2 otherwise) */
    assert_int_equal(cn_xero_connector.plan_sync_page("xero.invoices", 1, &f), 0);
    assert_string_equal(f.path, "/api.xro/2.0/Invoices?page=1&unitdp=4&order=UpdatedDateUTC%20ASC");
    assert_int_equal(cn_xero_connector.plan_sync_page("xero.creditnotes", 2, &f), 0);
    assert_string_equal(f.path, "/api.xro/2.0/CreditNotes?page=2&unitdp=4&order=UpdatedDateUTC%20ASC");
    assert_int_equal(cn_xero_connector.plan_sync_page("xero.nothing", 1, &f), -1);
    assert_int_equal(cn_xero_connector.count_records("xero.invoices", str("{\"Invoices\":[{},{},{}]}")), 3);
    assert_int_equal(cn_xero_connector.count_records("xero.invoices", str("{\"Contacts\":[]}")), -1);
    assert_int_equal(cn_xero_connector.count_records("xero.invoices", str("not json")), -1);
    assert_int_equal(cn_xero_connector.count_records("xero.contacts", str("{\"Contacts\":[]}")), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invoice_ids_coalesce_into_one_call),
        cmocka_unit_test(test_categories),
        cmocka_unit_test(test_malformed_ids_never_reach_a_url),
        cmocka_unit_test(test_many_ids_split_into_calls_of_fifty),
        cmocka_unit_test(test_sync_pages_and_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
