/* SPDX-License-Identifier: MIT */
/* Tests of gateway/api/invoices.c: Xero's numeric text to the API's money strings (money.c, the currency's own
 * decimals; an amount not exact in its currency, or an unknown currency, is refused rather than rounded). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "invoices.h"

static const char *money(const char *numeric, const char *currency)
{
    static char buf[48];
    return gw_invoices_money(numeric, strlen(numeric), currency, buf, sizeof(buf)) < 0 ? NULL : buf;
}

static void test_money(void **state)
{
    assert_string_equal(money("100.3000", "GBP"), "100.30");
    assert_string_equal(money("0.3000", "GBP"), "0.30");
    assert_string_equal(money("-12.5000", "EUR"), "-12.50");
    assert_string_equal(money("7891.0000", "JPY"), "7891");
    assert_string_equal(money("7891", "JPY"), "7891");
    assert_string_equal(money("12.3450", "KWD"), "12.345");
    assert_string_equal(money("0.0000", "gbp"), "0.00");
    assert_string_equal(money("92233720368547758.07", "GBP"), "92233720368547758.07");
    assert_null(money("100.5000", "JPY")); /* not exact in yen: refused, never rounded */
    assert_null(money("1.2345", "GBP"));
    assert_null(money("1.00", "XXQ"));
    assert_null(money("1e3", "GBP"));
    assert_null(money("92233720368547758.08", "GBP")); /* does not fit int64 minor units */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_money),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
