/* SPDX-License-Identifier: MIT */
/*
 * tests of domain/session.c that need no database: the sign-in throttle's keys (one account whatever the case,
 * the blanks or the organisation named), its local fallback without Redis (the stricter limits, the window, one
 * address not locking out another, a success forgetting only its own account and address), and the deny-list keys.
 * The session flows themselves run against PostgreSQL and Redis in tests/integration/test_api_auth.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "../../../gateway/domain/session.c"

static gw_config_t config(int instances)
{
    gw_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.instances = instances;
    cfg.access_token_ttl = 900;
    return cfg;
}

static void test_keys_name_one_account(void **state)
{
    throttle_keys_t a, b, c;
    throttle_keys("login", "Ann@Example.com", "127.0.0.1", &a);
    throttle_keys("login", "  ann@example.COM\t", "127.0.0.1", &b);
    throttle_keys("login", "bob@example.com", "127.0.0.1", &c);
    assert_string_equal(a.account, b.account);
    assert_string_equal(a.account_ip, b.account_ip);
    assert_string_not_equal(a.account, c.account);
    assert_string_equal(a.ip, "settled:login:ip:127.0.0.1");
    assert_null(strstr(a.account, "ann")); /* never the address in clear */
    assert_null(strstr(a.account_ip, "ann"));
    throttle_keys("login", "ann@example.com", NULL, &c);
    assert_string_equal(c.ip, "settled:login:ip:-");
}

/* The requests that send mail count under keys of their own: asking for resets never locks a sign-in out. */
static void test_mail_keys_are_apart_from_login_keys(void **state)
{
    throttle_keys_t login, mail;
    throttle_keys("login", "ann@example.com", "127.0.0.1", &login);
    throttle_keys("mail", "ann@example.com", "127.0.0.1", &mail);
    assert_string_equal(mail.ip, "settled:mail:ip:127.0.0.1");
    assert_string_not_equal(mail.account, login.account);
    assert_string_not_equal(mail.account_ip, login.account_ip);
    assert_string_equal(mail.account + strlen("settled:mail:"), login.account + strlen("settled:login:"));
}

static void test_local_throttle(void **state)
{
    gw_session_throttle_reset();
    gw_config_t cfg = config(1);
    gw_session_ctx_t ctx = {.cfg = &cfg}; /* no Redis: the local table counts */
    throttle_keys_t here, there, other;
    throttle_keys("login", "ann@example.com", "10.0.0.1", &here);
    throttle_keys("login", "ann@example.com", "10.0.0.2", &there);
    throttle_keys("login", "bob@example.com", "10.0.0.1", &other);
    /* account and address: 5 / 2 = 2 failures */
    assert_int_equal(throttle_check(&ctx, &here), 0);
    throttle_fail(&ctx, &here);
    assert_int_equal(throttle_check(&ctx, &here), 0);
    throttle_fail(&ctx, &here);
    uint32_t wait = throttle_check(&ctx, &here);
    assert_true(wait > GW_SESSION_WINDOW_S - 5 && wait <= GW_SESSION_WINDOW_S);
    assert_int_equal(throttle_check(&ctx, &there), 0); /* the same account from another address */
    assert_int_equal(throttle_check(&ctx, &other), 0); /* another account from the same address */
    /* a success elsewhere does not forget here's failures; one here does */
    throttle_success(&ctx, &there);
    assert_true(throttle_check(&ctx, &here) > 0);
    throttle_success(&ctx, &here);
    assert_int_equal(throttle_check(&ctx, &here), 0);
    /* the address: 30 / 2 = 15 failures over any accounts */
    gw_session_throttle_reset();
    for (int i = 0; i != 15; ++i) {
        char email[64];
        throttle_keys_t k;
        snprintf(email, sizeof(email), "user%d@example.com", i);
        throttle_keys("login", email, "10.0.0.9", &k);
        assert_int_equal(throttle_check(&ctx, &k), 0);
        throttle_fail(&ctx, &k);
    }
    throttle_keys_t fresh;
    throttle_keys("login", "new@example.com", "10.0.0.9", &fresh);
    assert_true(throttle_check(&ctx, &fresh) > 0);
    throttle_keys("login", "new@example.com", "10.0.0.10", &fresh);
    assert_int_equal(throttle_check(&ctx, &fresh), 0);
}

static void test_local_throttle_shares_by_instances(void **state)
{
    gw_session_throttle_reset();
    gw_config_t cfg = config(4); /* 5 / 2 / 4 rounds to 0: at least 1 */
    gw_session_ctx_t ctx = {.cfg = &cfg};
    throttle_keys_t k;
    throttle_keys("login", "ann@example.com", "10.0.0.1", &k);
    assert_int_equal(throttle_check(&ctx, &k), 0);
    throttle_fail(&ctx, &k);
    assert_true(throttle_check(&ctx, &k) > 0);
    assert_int_equal(local_limit(&cfg, GW_SESSION_FAILS_ACCOUNT), 12);
}

static void test_window_ends(void **state)
{
    gw_session_throttle_reset();
    gw_config_t cfg = config(1);
    gw_session_ctx_t ctx = {.cfg = &cfg};
    throttle_keys_t k;
    throttle_keys("login", "ann@example.com", "10.0.0.1", &k);
    throttle_fail(&ctx, &k);
    throttle_fail(&ctx, &k);
    assert_true(throttle_check(&ctx, &k) > 0);
    /* age every slot past its window: the key may try again, and counts from zero */
    for (size_t i = 0; i != LOCAL_SLOTS; ++i)
        if (local_slots[i].hash != 0)
            local_slots[i].until = now_s() - 1;
    assert_int_equal(throttle_check(&ctx, &k), 0);
    throttle_fail(&ctx, &k);
    assert_int_equal(throttle_check(&ctx, &k), 0);
}

static void test_deny_keys(void **state)
{
    char key[96], ukey[64];
    assert_int_equal(gw_session_jti_key("abc_-1", key), strlen("settled:revoked:jti:abc_-1"));
    assert_string_equal(key, "settled:revoked:jti:abc_-1");
    assert_int_equal(gw_session_user_key(42, ukey), strlen("settled:revoked:user:42"));
    assert_string_equal(ukey, "settled:revoked:user:42");
    gw_config_t cfg = config(1);
    assert_int_equal(gw_session_deny_user(NULL, &cfg, 42), -1); /* no Redis: said, not pretended */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_name_one_account), cmocka_unit_test(test_mail_keys_are_apart_from_login_keys),
        cmocka_unit_test(test_local_throttle),        cmocka_unit_test(test_local_throttle_shares_by_instances),
        cmocka_unit_test(test_window_ends),           cmocka_unit_test(test_deny_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
