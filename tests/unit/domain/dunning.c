/* SPDX-License-Identifier: MIT */
/*
 * Tests of the unsubscribe token of gateway/domain/dunning.c: a token verifies and names its organisation and
 * customer; any changed character, another key, no key, and malformed shapes are refused; the URL takes
 * SETTLED_PUBLIC_URL over SETTLED_PORTAL_URL and needs a key. (tests/integration/test_dunning.py uses the link of a
 * real e-mail against the routes.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include "dunning.h"

static char key_a[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
static char key_b[] = "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=";

static void test_round_trip(void **state)
{
    (void)state;
    gw_config_t cfg = {.secret_key = key_a};
    char tok[GW_UNSUBSCRIBE_TOKEN_MAX];
    int n = gw_unsubscribe_token(&cfg, 12, 345, tok);
    assert_true(n > 0);
    assert_int_equal(strncmp(tok, "u1.12.345.", 10), 0);
    assert_int_equal(strlen(tok), 10 + 43);
    int64_t org = 0, customer = 0;
    assert_int_equal(gw_unsubscribe_verify(&cfg, tok, (size_t)n, &org, &customer), 0);
    assert_int_equal(org, 12);
    assert_int_equal(customer, 345);
    /* another customer's token differs, and is not this one's MAC */
    char other[GW_UNSUBSCRIBE_TOKEN_MAX];
    gw_unsubscribe_token(&cfg, 12, 346, other);
    assert_string_not_equal(tok + 10, other + 11);
}

static void test_tampering_refused(void **state)
{
    (void)state;
    gw_config_t cfg = {.secret_key = key_a}, other_key = {.secret_key = key_b}, no_key = {0};
    char tok[GW_UNSUBSCRIBE_TOKEN_MAX];
    int n = gw_unsubscribe_token(&cfg, 7, 8, tok);
    int64_t org, customer;
    for (int i = 0; i != n; ++i) {
        char bad[GW_UNSUBSCRIBE_TOKEN_MAX];
        memcpy(bad, tok, (size_t)n + 1);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        assert_int_equal(gw_unsubscribe_verify(&cfg, bad, (size_t)n, &org, &customer), -1);
        assert_int_equal(org, 0);
    }
    assert_int_equal(gw_unsubscribe_verify(&other_key, tok, (size_t)n, &org, &customer), -1);
    assert_int_equal(gw_unsubscribe_verify(&no_key, tok, (size_t)n, &org, &customer), -1);
    assert_int_equal(gw_unsubscribe_token(&no_key, 7, 8, tok), -1);
    /* the customer's id swapped under the MAC; shapes that are not a token */
    char swapped[GW_UNSUBSCRIBE_TOKEN_MAX];
    gw_unsubscribe_token(&cfg, 7, 8, tok);
    snprintf(swapped, sizeof(swapped), "u1.7.9.%s", tok + 7);
    assert_int_equal(gw_unsubscribe_verify(&cfg, swapped, strlen(swapped), &org, &customer), -1);
    static const char *const shapes[] = {"",
                                         "u1.",
                                         "u1.7.8",
                                         "u2.7.8.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                         "u1.07.8.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                         "u1.7.-8.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                         "u1.78.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
    for (size_t i = 0; i != sizeof(shapes) / sizeof(shapes[0]); ++i)
        assert_int_equal(gw_unsubscribe_verify(&cfg, shapes[i], strlen(shapes[i]), &org, &customer), -1);
    /* the token is checked over its length, not up to a NUL */
    assert_int_equal(gw_unsubscribe_verify(&cfg, tok, strlen(tok) - 1, &org, &customer), -1);
}

static void test_url(void **state)
{
    (void)state;
    char portal[] = "https://portal.example.com/", pub[] = "https://billing.example.com/base";
    gw_config_t cfg = {.secret_key = key_a, .portal_url = portal};
    char url[512], tok[GW_UNSUBSCRIBE_TOKEN_MAX];
    gw_unsubscribe_token(&cfg, 1, 2, tok);
    char want[600];
    assert_true(gw_unsubscribe_url(&cfg, 1, 2, url, sizeof(url)) > 0);
    snprintf(want, sizeof(want), "https://portal.example.com/v1/unsubscribe?token=%s", tok);
    assert_string_equal(url, want);
    cfg.public_url = pub;
    assert_true(gw_unsubscribe_url(&cfg, 1, 2, url, sizeof(url)) > 0);
    snprintf(want, sizeof(want), "https://billing.example.com/base/v1/unsubscribe?token=%s", tok);
    assert_string_equal(url, want);
    cfg.secret_key = NULL;
    assert_int_equal(gw_unsubscribe_url(&cfg, 1, 2, url, sizeof(url)), -1);
    gw_config_t none = {.secret_key = key_a};
    assert_int_equal(gw_unsubscribe_url(&none, 1, 2, url, sizeof(url)), -1);
    assert_int_equal(gw_unsubscribe_url(&(gw_config_t){.secret_key = key_a, .portal_url = portal}, 1, 2, url, 20), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_tampering_refused),
        cmocka_unit_test(test_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
