/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/domain/xero_oauth.c that need no network or database: the signed state of an authorization
 * request (round trip; refused when altered, expired, too far in the future, or signed with another
 * key), its nonce (the one the authorize URL records), the loop's check of it (a 400, no database), the authorize
 * URL (percent-encoded by the codec of infra/crypto.c) with the settings it needs, the settings check the command
 * line runs first, the summary line of a connection, and the error every failure carries (xero_connect_failed,
 * 502, for a missing setting; oauth_callback_invalid, 400, for a bad state or no code). The network and database
 * paths (the refresh lease, the single-use state) are covered end to end by tests/integration/test_xero_oauth.py.
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
    gw_xero_state_t got = {0};
    const int64_t now = 1700000000;
    assert_int_equal(gw_xero_state_make(key1, 42, now, st, sizeof(st), NULL), 0);
    assert_true(strlen(st) > 40);
    assert_int_equal(strspn(st, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), strlen(st));
    assert_int_equal(gw_xero_state_check(key1, st, now, &got), 0);
    assert_int_equal(got.organisation_id, 42);
    got = (gw_xero_state_t){0};
    assert_int_equal(gw_xero_state_check(key1, st, now + GW_XERO_STATE_TTL - 1, &got), 0);
    assert_int_equal(got.organisation_id, 42);
    /* two states for the same organisation differ (a random nonce) */
    char st2[GW_XERO_STATE_MAX];
    assert_int_equal(gw_xero_state_make(key1, 42, now, st2, sizeof(st2), NULL), 0);
    assert_string_not_equal(st, st2);
    /* a large organisation id survives */
    assert_int_equal(gw_xero_state_make(key1, INT64_MAX, now, st, sizeof(st), NULL), 0);
    assert_int_equal(gw_xero_state_check(key1, st, now, &got), 0);
    assert_int_equal(got.organisation_id, INT64_MAX);
    /* too small a buffer */
    assert_int_equal(gw_xero_state_make(key1, 1, now, st, 20, NULL), -1);
}

/* What a state says is what it was made with: the nonce the callback consumes is the one --authorize recorded. */
static void test_state_nonce(void **state)
{
    char st[GW_XERO_STATE_MAX], st2[GW_XERO_STATE_MAX];
    gw_xero_state_t made = {0}, made2 = {0}, got = {0};
    const int64_t now = 1700000000;
    assert_int_equal(gw_xero_state_make(key1, 42, now, st, sizeof(st), &made), 0);
    assert_int_equal(made.organisation_id, 42);
    assert_int_equal(made.expires_at, now + GW_XERO_STATE_TTL);
    assert_int_equal(strlen(made.nonce), 32);
    assert_int_equal(strspn(made.nonce, "0123456789abcdef"), 32);
    assert_int_equal(gw_xero_state_check(key1, st, now + 5, &got), 0);
    assert_int_equal(got.organisation_id, 42);
    assert_int_equal(got.expires_at, now + GW_XERO_STATE_TTL);
    assert_string_equal(got.nonce, made.nonce);
    assert_int_equal(gw_xero_state_make(key1, 42, now, st2, sizeof(st2), &made2), 0);
    assert_string_not_equal(made.nonce, made2.nonce);
}

/* gw_xero_state_verify: what the callback's event loop runs, with the key of the configuration and no database:
 * a forged or expired state is a 400 oauth_callback_invalid (not the 502 of a failed connection), a missing key
 * names the setting. */
static void test_state_verify(void **state)
{
    gw_config_t cfg = {.secret_key = (char *)key1_hex};
    char st[GW_XERO_STATE_MAX];
    gw_xero_state_t made, got = {0};
    gw_err_t err = GW_ERR_INIT;
    const int64_t now = (int64_t)time(NULL);
    assert_int_equal(gw_xero_state_make(key1, 3, now, st, sizeof(st), &made), 0);
    assert_int_equal(gw_xero_state_verify(&cfg, st, now, &got, &err), 0);
    assert_null(err.code);
    assert_int_equal(got.organisation_id, 3);
    assert_string_equal(got.nonce, made.nonce);

    assert_int_equal(gw_xero_state_verify(&cfg, st, now + GW_XERO_STATE_TTL, &got, &err), -1);
    assert_ptr_equal(err.code, gw_err_oauth_callback_invalid);
    assert_int_equal(err.status, 400);
    assert_non_null(strstr(err.detail, "invalid or has expired"));
    gw_err_clear(&err);
    st[10] = st[10] == 'A' ? 'B' : 'A';
    assert_int_equal(gw_xero_state_verify(&cfg, st, now, &got, &err), -1);
    assert_ptr_equal(err.code, gw_err_oauth_callback_invalid);
    assert_int_equal(err.status, 400);
    gw_err_clear(&err);
    cfg.secret_key = NULL;
    assert_int_equal(gw_xero_state_verify(&cfg, st, now, &got, &err), -1);
    assert_ptr_equal(err.code, gw_err_xero_connect_failed);
    assert_non_null(strstr(err.detail, "SETTLED_SECRET_KEY"));
}

static void test_state_expires(void **state)
{
    char st[GW_XERO_STATE_MAX];
    gw_xero_state_t got = {0};
    const int64_t now = 1700000000;
    assert_int_equal(gw_xero_state_make(key1, 7, now, st, sizeof(st), NULL), 0);
    assert_int_equal(gw_xero_state_check(key1, st, now + GW_XERO_STATE_TTL, &got), -1);
    assert_int_equal(gw_xero_state_check(key1, st, now + 86400, &got), -1);
    /* a state from the future (a clock far behind) is refused too */
    assert_int_equal(gw_xero_state_check(key1, st, now - 3600, &got), -1);
    assert_int_equal(got.organisation_id, 0);
}

static void test_state_refuses_tampering(void **state)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char st[GW_XERO_STATE_MAX], copy[GW_XERO_STATE_MAX + 2];
    gw_xero_state_t got = {0};
    const int64_t now = 1700000000;
    assert_int_equal(gw_xero_state_make(key1, 42, now, st, sizeof(st), NULL), 0);
    size_t len = strlen(st);
    /* every character changed to every other character of the alphabet */
    for (size_t i = 0; i != len; ++i) {
        for (const char *c = abc; *c; ++c) {
            if (*c == st[i])
                continue;
            memcpy(copy, st, len + 1);
            copy[i] = *c;
            if (gw_xero_state_check(key1, copy, now, &got) != -1)
                fail_msg("state with character %zu changed to '%c' was accepted", i, *c);
        }
    }
    /* truncated, extended, empty, padded, garbage */
    for (size_t n = 0; n != len; ++n) {
        memcpy(copy, st, n);
        copy[n] = '\0';
        assert_int_equal(gw_xero_state_check(key1, copy, now, &got), -1);
    }
    snprintf(copy, sizeof(copy), "%sA", st);
    assert_int_equal(gw_xero_state_check(key1, copy, now, &got), -1);
    snprintf(copy, sizeof(copy), "%s=", st);
    assert_int_equal(gw_xero_state_check(key1, copy, now, &got), -1);
    assert_int_equal(gw_xero_state_check(key1, "", now, &got), -1);
    assert_int_equal(gw_xero_state_check(key1, NULL, now, &got), -1);
    assert_int_equal(gw_xero_state_check(key1, "not a state at all", now, &got), -1);
    assert_int_equal(got.organisation_id, 0);
    /* the original still passes */
    assert_int_equal(gw_xero_state_check(key1, st, now, &got), 0);
}

static void test_state_refuses_another_key(void **state)
{
    unsigned char key2[32];
    char st[GW_XERO_STATE_MAX];
    gw_xero_state_t got = {0};
    memcpy(key2, key1, 32);
    key2[0] ^= 0x80;
    assert_int_equal(gw_xero_state_make(key2, 42, 1700000000, st, sizeof(st), NULL), 0);
    assert_int_equal(gw_xero_state_check(key1, st, 1700000000, &got), -1);
    assert_int_equal(gw_xero_state_check(key2, st, 1700000000, &got), 0);
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
    gw_err_t err = GW_ERR_INIT;
    char made[GW_XERO_STATE_MAX];
    gw_xero_state_t ms;
    assert_int_equal(gw_xero_state_make(key1, 9, (int64_t)time(NULL), made, sizeof(made), &ms), 0);
    char *url = gw_xero_authorize_url_with(&cfg, made, &err);
    if (url == NULL)
        fail_msg("%s", err.detail);
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
    assert_string_equal(st, made);
    gw_xero_state_t got = {0};
    assert_int_equal(gw_xero_state_check(key1, st, (int64_t)time(NULL), &got), 0);
    assert_int_equal(got.organisation_id, 9);
    assert_string_equal(got.nonce, ms.nonce);
    free(st);
    free(url);

    /* a configured login base, with a trailing slash */
    cfg.xero_login_base = "http://127.0.0.1:9999/";
    url = gw_xero_authorize_url_with(&cfg, made, &err);
    assert_non_null(url);
    const char mock[] = "http://127.0.0.1:9999/identity/connect/authorize?response_type=code&client_id=CLIENT-ID-1&";
    assert_memory_equal(url, mock, sizeof(mock) - 1);
    free(url);
}

/* err is the error of a failure of this module: the code the callback answers with, and a detail naming want. */
static void expect_failure(const gw_err_t *err, const char *want)
{
    if (err->code != gw_err_xero_connect_failed)
        fail_msg("code %s, expected xero_connect_failed (detail: %s)", err->code != NULL ? err->code : "(none)",
                 err->detail);
    assert_int_equal(err->status, 502);
    if (strstr(err->detail, want) == NULL)
        fail_msg("the error does not say \"%s\": %s", want, err->detail);
}

static void expect_url_error(gw_config_t cfg, const char *key_name)
{
    gw_err_t err = GW_ERR_INIT;
    /* the settings are checked before the session (NULL here) is used */
    char *url = gw_xero_authorize_url(NULL, &cfg, 1, 0, &err);
    if (url != NULL)
        fail_msg("a URL was built without %s: %s", key_name, url);
    expect_failure(&err, key_name);
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
    gw_err_t err = GW_ERR_INIT;
    assert_null(gw_xero_authorize_url(NULL, &cfg, 1, 0, &err));
    assert_null(strstr(err.detail, "too-short-secret-key-value"));
    cfg = url_config();
    cfg.xero_scopes = "";
    expect_url_error(cfg, "SETTLED_XERO_SCOPES");
    gw_err_clear(&err);
    assert_null(gw_xero_authorize_url_with(&cfg, "state", &err));
    expect_failure(&err, "SETTLED_XERO_SCOPES");
}

/* The token calls refuse to run without their settings, before any network or database use. */
static void test_token_calls_name_missing_settings(void **state)
{
    gw_config_t cfg = url_config();
    cfg.xero_client_secret = NULL;
    gw_err_t err = GW_ERR_INIT;
    gw_xero_connection_t c = {.token_id = 99};
    assert_int_equal(gw_xero_connect_refresh_token(NULL, &cfg, 1, "token", &c, &err), -1);
    expect_failure(&err, "SETTLED_XERO_CLIENT_SECRET");
    assert_int_equal(c.token_id, 0); /* emptied, so freeing it is safe */
    assert_int_equal(c.tenants.n, 0);
    gw_xero_connection_free(&c);
    gw_err_clear(&err);
    assert_int_equal(gw_xero_complete_authorization(NULL, &cfg, "code", "state", NULL, &c, &err), -1);
    expect_failure(&err, "SETTLED_XERO_CLIENT_SECRET");
    cfg = url_config();
    cfg.xero_client_secret = "s3cret";
    cfg.secret_key = NULL;
    gw_err_clear(&err);
    assert_int_equal(gw_xero_connect_refresh_token(NULL, &cfg, 1, "token", &c, &err), -1);
    expect_failure(&err, "SETTLED_SECRET_KEY");
    gw_err_clear(&err);
    assert_int_equal(gw_xero_connect_refresh_token(NULL, &cfg, 1, "", &c, &err), -1);
    expect_failure(&err, "the refresh token is empty");
    char *token = (char *)"unchanged", msg[300] = "";
    assert_int_equal(gw_xero_access_token(NULL, &cfg, 1, false, &token, msg, sizeof(msg)), -1);
    assert_null(token);
    assert_non_null(strstr(msg, "SETTLED_SECRET_KEY"));
    /* a bad state is refused (400) before the database (NULL here) or the code is used */
    cfg.secret_key = (char *)key1_hex;
    gw_err_clear(&err);
    assert_int_equal(gw_xero_complete_authorization(NULL, &cfg, "code", "forged", "req-1", &c, &err), -1);
    assert_ptr_equal(err.code, gw_err_oauth_callback_invalid);
    assert_int_equal(err.status, 400);
    assert_non_null(strstr(err.detail, "invalid or has expired"));
    /* so is a good state without a code */
    char st[GW_XERO_STATE_MAX];
    assert_int_equal(gw_xero_state_make(key1, 5, (int64_t)time(NULL), st, sizeof(st), NULL), 0);
    gw_err_clear(&err);
    assert_int_equal(gw_xero_complete_authorization(NULL, &cfg, "", st, NULL, &c, &err), -1);
    assert_ptr_equal(err.code, gw_err_oauth_callback_invalid);
    assert_int_equal(err.status, 400);
    assert_non_null(strstr(err.detail, "no authorization code"));
}

/* The command line names the first missing setting of what it is about to do, in a fixed order. */
static void test_settings_check(void **state)
{
    gw_config_t cfg = url_config();
    cfg.xero_client_secret = "s3cret";
    gw_err_t err = GW_ERR_INIT;
    assert_int_equal(gw_xero_settings_check(&cfg, GW_XERO_NEED_CLIENT | GW_XERO_NEED_REDIRECT, &err), 0);
    assert_int_equal(gw_xero_settings_check(&cfg, 0, &err), 0);
    assert_null(err.code);

    static const struct {
        int needs;
        const char *unset; /* the setting removed */
        const char *named; /* NULL: still fine */
    } cases[] = {
        {0, "client_id", NULL},
        {0, "client_secret", NULL},
        {0, "redirect_uri", NULL},
        {0, "secret_key", "SETTLED_SECRET_KEY"},
        {GW_XERO_NEED_CLIENT, "client_id", "SETTLED_XERO_CLIENT_ID: required to connect Xero (the client id"},
        {GW_XERO_NEED_CLIENT, "client_secret", "SETTLED_XERO_CLIENT_SECRET: required to connect Xero (the client"},
        {GW_XERO_NEED_CLIENT, "redirect_uri", NULL},
        {GW_XERO_NEED_CLIENT, "secret_key", "SETTLED_SECRET_KEY"},
        {GW_XERO_NEED_REDIRECT, "client_id", "SETTLED_XERO_CLIENT_ID: required to connect Xero"},
        {GW_XERO_NEED_REDIRECT, "client_secret", NULL},
        {GW_XERO_NEED_REDIRECT, "redirect_uri", "SETTLED_XERO_REDIRECT_URI: required to connect Xero (where Xero"},
        /* the key comes before the redirect settings, the client credentials before the key */
        {GW_XERO_NEED_REDIRECT, "secret_key+redirect_uri", "SETTLED_SECRET_KEY"},
        {GW_XERO_NEED_CLIENT, "client_secret+secret_key", "SETTLED_XERO_CLIENT_SECRET"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        gw_config_t c = cfg;
        if (strstr(cases[i].unset, "client_id") != NULL)
            c.xero_client_id = NULL;
        if (strstr(cases[i].unset, "client_secret") != NULL)
            c.xero_client_secret = "";
        if (strstr(cases[i].unset, "redirect_uri") != NULL)
            c.xero_redirect_uri = NULL;
        if (strstr(cases[i].unset, "secret_key") != NULL)
            c.secret_key = NULL;
        gw_err_clear(&err);
        int rc = gw_xero_settings_check(&c, cases[i].needs, &err);
        if (cases[i].named == NULL) {
            if (rc != 0)
                fail_msg("case %zu (needs %d, without %s) failed: %s", i, cases[i].needs, cases[i].unset, err.detail);
            continue;
        }
        if (rc != -1)
            fail_msg("case %zu (needs %d, without %s) passed", i, cases[i].needs, cases[i].unset);
        expect_failure(&err, cases[i].named);
    }
}

static void test_connection_summary(void **state)
{
    gw_xero_tenant_t list[] = {{(char *)"0b5b8c4e-0000-4000-8000-000000000001", (char *)"Org One", NULL},
                               {(char *)"0b5b8c4e-0000-4000-8000-000000000002", (char *)"Org Two", NULL}};
    gw_xero_connection_t c = {.organisation_id = 3, .token_id = 17, .tenants = {list, 2, NULL}};
    char out[128];
    gw_xero_connection_summary(&c, out, sizeof(out));
    assert_string_equal(out, "Connected Xero (token set 17): Org One, Org Two");
    c.tenants.n = 1;
    gw_xero_connection_summary(&c, out, sizeof(out));
    assert_string_equal(out, "Connected Xero (token set 17): Org One");
    /* a short buffer truncates, NUL-terminated, without writing past it */
    char small[40];
    memset(small, 'x', sizeof(small));
    c.tenants.n = 2;
    gw_xero_connection_summary(&c, small, 36);
    assert_string_equal(small, "Connected Xero (token set 17): Org ");
    assert_int_equal(small[36], 'x');
    gw_xero_connection_summary(&c, small, 10);
    assert_string_equal(small, "Connected");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_state_nonce),
        cmocka_unit_test(test_state_verify),
        cmocka_unit_test(test_state_expires),
        cmocka_unit_test(test_state_refuses_tampering),
        cmocka_unit_test(test_state_refuses_another_key),
        cmocka_unit_test(test_authorize_url),
        cmocka_unit_test(test_authorize_url_names_missing_settings),
        cmocka_unit_test(test_token_calls_name_missing_settings),
        cmocka_unit_test(test_settings_check),
        cmocka_unit_test(test_connection_summary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
