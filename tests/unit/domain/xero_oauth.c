/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/domain/xero_oauth.c that need no network or database: the signed state of an authorization
 * request (round trip; refused when altered, expired, too far in the future, or signed with another
 * key), RFC 3986 percent-encoding, and the authorize URL with the settings it needs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "xero_oauth.h"

static const unsigned char key1[32] = {0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a,
                                       0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25,
                                       0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f};
/* key1 as SETTLED_SECRET_KEY would give it */
static const char key1_hex[] = "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";

static void test_state_round_trip(void **state)
{
    char st[GW_XERO_STATE_MAX];
    int64_t org = 0;
    const int64_t now = 1700000000;
    assert_int_equal(gw_xero_state_make(key1, 42, now, st, sizeof(st)), 0);
    assert_true(strlen(st) > 40);
    assert_int_equal(strspn(st, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), strlen(st));
    assert_int_equal(gw_xero_state_check(key1, st, now, &org), 0);
    assert_int_equal(org, 42);
    org = 0;
    assert_int_equal(gw_xero_state_check(key1, st, now + GW_XERO_STATE_TTL - 1, &org), 0);
    assert_int_equal(org, 42);
    /* two states for the same organisation differ (a random nonce) */
    char st2[GW_XERO_STATE_MAX];
    assert_int_equal(gw_xero_state_make(key1, 42, now, st2, sizeof(st2)), 0);
    assert_string_not_equal(st, st2);
    /* a large organisation id survives */
    assert_int_equal(gw_xero_state_make(key1, INT64_MAX, now, st, sizeof(st)), 0);
    assert_int_equal(gw_xero_state_check(key1, st, now, &org), 0);
    assert_int_equal(org, INT64_MAX);
    /* too small a buffer */
    assert_int_equal(gw_xero_state_make(key1, 1, now, st, 20), -1);
}

static void test_state_expires(void **state)
{
    char st[GW_XERO_STATE_MAX];
    int64_t org = 0;
    const int64_t now = 1700000000;
    assert_int_equal(gw_xero_state_make(key1, 7, now, st, sizeof(st)), 0);
    assert_int_equal(gw_xero_state_check(key1, st, now + GW_XERO_STATE_TTL, &org), -1);
    assert_int_equal(gw_xero_state_check(key1, st, now + 86400, &org), -1);
    /* a state from the future (a clock far behind) is refused too */
    assert_int_equal(gw_xero_state_check(key1, st, now - 3600, &org), -1);
    assert_int_equal(org, 0);
}

static void test_state_refuses_tampering(void **state)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char st[GW_XERO_STATE_MAX], copy[GW_XERO_STATE_MAX + 2];
    int64_t org = 0;
    const int64_t now = 1700000000;
    assert_int_equal(gw_xero_state_make(key1, 42, now, st, sizeof(st)), 0);
    size_t len = strlen(st);
    /* every character changed to every other character of the alphabet */
    for (size_t i = 0; i != len; ++i) {
        for (const char *c = abc; *c; ++c) {
            if (*c == st[i])
                continue;
            memcpy(copy, st, len + 1);
            copy[i] = *c;
            if (gw_xero_state_check(key1, copy, now, &org) != -1)
                fail_msg("state with character %zu changed to '%c' was accepted", i, *c);
        }
    }
    /* truncated, extended, empty, padded, garbage */
    for (size_t n = 0; n != len; ++n) {
        memcpy(copy, st, n);
        copy[n] = '\0';
        assert_int_equal(gw_xero_state_check(key1, copy, now, &org), -1);
    }
    snprintf(copy, sizeof(copy), "%sA", st);
    assert_int_equal(gw_xero_state_check(key1, copy, now, &org), -1);
    snprintf(copy, sizeof(copy), "%s=", st);
    assert_int_equal(gw_xero_state_check(key1, copy, now, &org), -1);
    assert_int_equal(gw_xero_state_check(key1, "", now, &org), -1);
    assert_int_equal(gw_xero_state_check(key1, NULL, now, &org), -1);
    assert_int_equal(gw_xero_state_check(key1, "not a state at all", now, &org), -1);
    assert_int_equal(org, 0);
    /* the original still passes */
    assert_int_equal(gw_xero_state_check(key1, st, now, &org), 0);
}

static void test_state_refuses_another_key(void **state)
{
    unsigned char key2[32];
    char st[GW_XERO_STATE_MAX];
    int64_t org = 0;
    memcpy(key2, key1, 32);
    key2[0] ^= 0x80;
    assert_int_equal(gw_xero_state_make(key2, 42, 1700000000, st, sizeof(st)), 0);
    assert_int_equal(gw_xero_state_check(key1, st, 1700000000, &org), -1);
    assert_int_equal(gw_xero_state_check(key2, st, 1700000000, &org), 0);
}

static void expect_encoded(const char *in, size_t len, const char *want)
{
    char *got = gw_xero_percent_encode(in, len);
    assert_string_equal(got, want);
    free(got);
}

static void test_percent_encode(void **state)
{
    expect_encoded("", 0, "");
    expect_encoded("AZaz09-._~", 10, "AZaz09-._~"); /* unreserved stay */
    expect_encoded("a b", 3, "a%20b");              /* never '+' */
    expect_encoded("a+b", 3, "a%2Bb");
    expect_encoded(":/?#[]@!$&'()*,;=%", 18, "%3A%2F%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2C%3B%3D%25");
    expect_encoded("\xc3\xa9", 2, "%C3%A9"); /* UTF-8 bytes, upper-case hex */
    expect_encoded("a\0b", 3, "a%00b");      /* len, not the NUL, ends the input */
    expect_encoded("\x7f\x80\xff", 3, "%7F%80%FF");
    expect_encoded("https://example.com/v1/xero/callback?x=1", 40,
                   "https%3A%2F%2Fexample.com%2Fv1%2Fxero%2Fcallback%3Fx%3D1");
}

/* The value of query parameter name in url, percent-decoded (malloc'd), or NULL. */
static char *query_param(const char *url, const char *name)
{
    const char *q = strchr(url, '?');
    size_t nlen = strlen(name);
    for (const char *p = q; p != NULL && *p; p = strchr(p, '&')) {
        ++p;
        if (strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            const char *v = p + nlen + 1;
            size_t vlen = strcspn(v, "&");
            char *out = malloc(vlen + 1), *o = out;
            for (size_t i = 0; i < vlen; ++i) {
                if (v[i] == '%' && i + 2 < vlen + 1) {
                    unsigned c;
                    sscanf(v + i + 1, "%2x", &c);
                    *o++ = (char)c;
                    i += 2;
                } else {
                    assert_true(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~", v[i]));
                    *o++ = v[i];
                }
            }
            *o = '\0';
            return out;
        }
    }
    return NULL;
}

static gw_config_t url_config(void)
{
    return (gw_config_t){.xero_client_id = "CLIENT-ID-1",
                         .xero_redirect_uri = "https://portal.example.com/v1/xero/callback",
                         .xero_scopes = "offline_access accounting.transactions accounting.contacts",
                         .secret_key = (char *)key1_hex};
}

static void expect_param(const char *url, const char *name, const char *want)
{
    char *got = query_param(url, name);
    if (got == NULL)
        fail_msg("%s has no %s", url, name);
    assert_string_equal(got, want);
    free(got);
}

static void test_authorize_url(void **state)
{
    gw_config_t cfg = url_config();
    char err[300] = "";
    char *url = gw_xero_authorize_url(&cfg, 9, err, sizeof(err));
    if (url == NULL)
        fail_msg("%s", err);
    const char prefix[] = "https://login.xero.com/identity/connect/authorize?";
    assert_memory_equal(url, prefix, sizeof(prefix) - 1);
    assert_null(strchr(url, ' '));
    expect_param(url, "response_type", "code");
    expect_param(url, "client_id", "CLIENT-ID-1");
    expect_param(url, "redirect_uri", "https://portal.example.com/v1/xero/callback");
    expect_param(url, "scope", "offline_access accounting.transactions accounting.contacts");
    assert_non_null(strstr(url, "&scope=offline_access%20accounting.transactions%20accounting.contacts&"));
    char *st = query_param(url, "state");
    assert_non_null(st);
    int64_t org = 0;
    assert_int_equal(gw_xero_state_check(key1, st, (int64_t)time(NULL), &org), 0);
    assert_int_equal(org, 9);
    free(st);
    free(url);

    /* a configured login base, with a trailing slash */
    cfg.xero_login_base = "http://127.0.0.1:9999/";
    url = gw_xero_authorize_url(&cfg, 9, err, sizeof(err));
    assert_non_null(url);
    const char mock[] = "http://127.0.0.1:9999/identity/connect/authorize?response_type=code&client_id=CLIENT-ID-1&";
    assert_memory_equal(url, mock, sizeof(mock) - 1);
    free(url);
}

static void expect_url_error(gw_config_t cfg, const char *key_name)
{
    char err[300] = "";
    char *url = gw_xero_authorize_url(&cfg, 1, err, sizeof(err));
    if (url != NULL)
        fail_msg("a URL was built without %s: %s", key_name, url);
    if (strstr(err, key_name) == NULL)
        fail_msg("the error does not name %s: %s", key_name, err);
}

static void test_authorize_url_names_missing_settings(void **state)
{
    gw_config_t cfg = url_config();
    cfg.xero_client_id = NULL;
    expect_url_error(cfg, "SETTLED_XERO_CLIENT_ID");
    cfg = url_config();
    cfg.xero_client_id = "";
    expect_url_error(cfg, "SETTLED_XERO_CLIENT_ID");
    cfg = url_config();
    cfg.xero_redirect_uri = NULL;
    expect_url_error(cfg, "SETTLED_XERO_REDIRECT_URI");
    cfg = url_config();
    cfg.secret_key = NULL;
    expect_url_error(cfg, "SETTLED_SECRET_KEY");
    cfg = url_config();
    cfg.secret_key = "too-short-secret-key-value";
    expect_url_error(cfg, "SETTLED_SECRET_KEY");
    char err[300];
    assert_null(gw_xero_authorize_url(&cfg, 1, err, sizeof(err)));
    assert_null(strstr(err, "too-short-secret-key-value"));
}

/* The token calls refuse to run without their settings, before any network or database use. */
static void test_token_calls_name_missing_settings(void **state)
{
    gw_config_t cfg = url_config();
    cfg.xero_client_secret = NULL;
    char err[300] = "", summary[100];
    assert_int_equal(gw_xero_connect_refresh_token(NULL, &cfg, 1, "token", NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "SETTLED_XERO_CLIENT_SECRET"));
    err[0] = '\0';
    assert_int_equal(
        gw_xero_complete_authorization(NULL, &cfg, "code", "state", summary, sizeof(summary), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "SETTLED_XERO_CLIENT_SECRET"));
    cfg = url_config();
    cfg.xero_client_secret = "s3cret";
    cfg.secret_key = NULL;
    err[0] = '\0';
    assert_int_equal(gw_xero_connect_refresh_token(NULL, &cfg, 1, "token", NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "SETTLED_SECRET_KEY"));
    char *token = (char *)"unchanged";
    err[0] = '\0';
    assert_int_equal(gw_xero_access_token(NULL, &cfg, 1, false, &token, err, sizeof(err)), -1);
    assert_null(token);
    assert_non_null(strstr(err, "SETTLED_SECRET_KEY"));
    /* a bad state is refused before the code is exchanged */
    cfg.secret_key = (char *)key1_hex;
    err[0] = '\0';
    assert_int_equal(
        gw_xero_complete_authorization(NULL, &cfg, "code", "forged", summary, sizeof(summary), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "expired"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_state_expires),
        cmocka_unit_test(test_state_refuses_tampering),
        cmocka_unit_test(test_state_refuses_another_key),
        cmocka_unit_test(test_percent_encode),
        cmocka_unit_test(test_authorize_url),
        cmocka_unit_test(test_authorize_url_names_missing_settings),
        cmocka_unit_test(test_token_calls_name_missing_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
