/* SPDX-License-Identifier: MIT */
/* stripe.c: tests the Stripe connector: its signature check against vectors computed outside this code (openssl,
 * python3 hmac), and its parser against every Stripe event fixture. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connector.h"
#include "crypto.h"

#include "scaffold.h"

/* --- helpers for this connector ----------------------------------------------------------------------------- */

static const cn_connector_t *const conn = &cn_stripe_connector;

#define T0 1700000000
#define TOLERANCE 300

/*
 * Vectors. Each was computed with openssl and cross-checked with python3:
 *   python3 -c 'import hmac,hashlib,sys; print(hmac.new(KEY, MSG, hashlib.sha256).hexdigest())'
 */

/* { printf '1700000000.'; cat fixtures/stripe/event_payment_intent_succeeded.json; } |
 *     openssl dgst -sha256 -hmac whsec_test_secret */
#define V_FIXTURE "9a8e160159399fe4e7ca969a7012ff6d7306423c106c51bfebaac434bb398fac"
/* { printf '1700000000.'; cat fixtures/stripe/event_payment_intent_succeeded.json; } |
 *     openssl dgst -sha256 -hmac whsec_rotated_new */
#define V_FIXTURE_ROTATED "6c2660451faaa6f54c4a4c91b614201539718962973e39e7a929b9624b1a1369"
#define FIXTURE_FILE "stripe/event_payment_intent_succeeded.json"

#define SHORT_BODY "{\"id\":\"evt_test_1\",\"object\":\"event\",\"type\":\"charge.succeeded\"}"
/* printf '%s' '1700000000.{"id":"evt_test_1","object":"event","type":"charge.succeeded"}' |
 *     openssl dgst -sha256 -hmac whsec_test_secret */
#define V_SHORT "b545d69c6084720e8ee59f9c3dd2b27543d2b6bb4ad3c1d54a140fe4508d4b7e"
#define V_SHORT_UPPER "B545D69C6084720E8EE59F9C3DD2B27543D2B6BB4AD3C1D54A140FE4508D4B7E"
/* printf '%s' '1699999000.{"id":"evt_test_1","object":"event","type":"charge.succeeded"}' |
 *     openssl dgst -sha256 -hmac whsec_test_secret */
#define V_SHORT_T1699999000 "6bcc37ded5863ae9c51eb73e6c4c08e7d41e192a2ddb43ad647ffc289e4ef625"
/* printf '%s' '1700000000.' | openssl dgst -sha256 -hmac whsec_test_secret */
#define V_EMPTY "316b9ab98c15bfa039d243f3196acee619cf29749a91a634e6a8154e2f7b6727"

/* A well-formed v1 that no secret here produces. */
#define V_WRONG "0000000000000000000000000000000000000000000000000000000000000000"

/* Verifies body against header (NULL: header absent) with the NULL-terminated list of secrets. */
static const char *verify_with(const cn_host_t *host, cn_str_t body, const char *header, const char *const *keys,
                               int64_t now, int64_t tolerance)
{
    cn_str_t k[8];
    size_t n = 0;
    while (keys[n] != NULL) {
        assert_true(n < 8);
        k[n] = str(keys[n]);
        ++n;
    }
    cn_secrets_t secrets = {k, n};
    cn_verify_input_t in = {body, header != NULL ? str(header) : (cn_str_t){NULL, 0}, &secrets, now, tolerance};
    return conn->verify(host, &in);
}

static const char *const test_secret[] = {"whsec_test_secret", NULL};

static const char *verify_short(const char *header, int64_t now, int64_t tolerance)
{
    return verify_with(&gw_crypto_host, str(SHORT_BODY), header, test_secret, now, tolerance);
}

static const char *verify_short_ok(const char *header)
{
    return verify_short(header, T0 + 5, TOLERANCE);
}

/* --- the connector's description --------------------------------------------------------------------------- */

static void test_description(void **state)
{
    assert_string_equal(conn->name, "stripe");
    assert_string_equal(conn->signature_header, "stripe-signature");
    assert_int_equal(conn->status_accepted, 200);
    assert_int_equal(conn->status_bad_signature, 400);
    assert_false(conn->bare_replies);
}

/* --- verify ------------------------------------------------------------------------------------------------- */

static void test_vector_over_fixture(void **state)
{
    cn_str_t body = read_fixture(FIXTURE_FILE);
    assert_err(verify_with(&gw_crypto_host, body, "t=1700000000,v1=" V_FIXTURE, test_secret, T0 + 1, TOLERANCE), NULL);
    /* the fixture's last byte is a newline: the MAC covers it */
    body.len -= 1;
    assert_err(verify_with(&gw_crypto_host, body, "t=1700000000,v1=" V_FIXTURE, test_secret, T0 + 1, TOLERANCE),
               cn_err_signature_mismatch);
}

static void test_vector_short_body(void **state)
{
    assert_err(verify_short_ok("t=1700000000,v1=" V_SHORT), NULL);
    /* the other secret's vector does not pass with this one */
    assert_err(verify_short_ok("t=1700000000,v1=" V_FIXTURE), cn_err_signature_mismatch);
}

static void test_empty_body(void **state)
{
    assert_err(
        verify_with(&gw_crypto_host, (cn_str_t){NULL, 0}, "t=1700000000,v1=" V_EMPTY, test_secret, T0, TOLERANCE),
        NULL);
    assert_err(verify_with(&gw_crypto_host, str(""), "t=1700000000,v1=" V_EMPTY, test_secret, T0, TOLERANCE), NULL);
    assert_err(verify_with(&gw_crypto_host, str(" "), "t=1700000000,v1=" V_EMPTY, test_secret, T0, TOLERANCE),
               cn_err_signature_mismatch);
}

static void test_body_tampered_by_one_byte(void **state)
{
    char body[] = SHORT_BODY;
    for (size_t i = 0; i != sizeof(body) - 1; ++i) {
        body[i] ^= 0x01;
        assert_err(verify_with(&gw_crypto_host, (cn_str_t){body, sizeof(body) - 1}, "t=1700000000,v1=" V_SHORT,
                               test_secret, T0, TOLERANCE),
                   cn_err_signature_mismatch);
        body[i] ^= 0x01;
    }
    /* one byte more or less */
    assert_err(
        verify_with(&gw_crypto_host, str(SHORT_BODY "\n"), "t=1700000000,v1=" V_SHORT, test_secret, T0, TOLERANCE),
        cn_err_signature_mismatch);
    assert_err(verify_with(&gw_crypto_host, (cn_str_t){SHORT_BODY, sizeof(SHORT_BODY) - 2}, "t=1700000000,v1=" V_SHORT,
                           test_secret, T0, TOLERANCE),
               cn_err_signature_mismatch);
    assert_err(verify_with(&gw_crypto_host, str(SHORT_BODY), "t=1700000000,v1=" V_SHORT, test_secret, T0, TOLERANCE),
               NULL);
}

static void test_timestamp_is_signed(void **state)
{
    /* the MAC of t=1700000000 under another t */
    assert_err(verify_short_ok("t=1700000001,v1=" V_SHORT), cn_err_signature_mismatch);
    assert_err(verify_short("t=1699999000,v1=" V_SHORT_T1699999000, T0, TOLERANCE * 10), NULL);
    assert_err(verify_short("t=1700000000,v1=" V_SHORT_T1699999000, T0, TOLERANCE * 10), cn_err_signature_mismatch);
}

static void test_wrong_secret(void **state)
{
    static const char *const other[] = {"whsec_other", NULL}, *const prefixless[] = {"test_secret", NULL};
    assert_err(verify_with(&gw_crypto_host, str(SHORT_BODY), "t=1700000000,v1=" V_SHORT, other, T0, TOLERANCE),
               cn_err_signature_mismatch);
    /* the secret is used verbatim, prefix included */
    assert_err(verify_with(&gw_crypto_host, str(SHORT_BODY), "t=1700000000,v1=" V_SHORT, prefixless, T0, TOLERANCE),
               cn_err_signature_mismatch);
}

static void test_secret_rotation(void **state)
{
    cn_str_t body = read_fixture(FIXTURE_FILE);
    static const char *const old_then_new[] = {"whsec_rotated_new", "whsec_test_secret", NULL},
                             *const new_then_old[] = {"whsec_test_secret", "whsec_rotated_new", NULL},
                             *const rotated[] = {"whsec_rotated_new", NULL},
                             *const unrelated[] = {"whsec_a", "whsec_b", "whsec_c", NULL};

    /* the second secret matches */
    assert_err(verify_with(&gw_crypto_host, body, "t=1700000000,v1=" V_FIXTURE, old_then_new, T0, TOLERANCE), NULL);
    assert_err(verify_with(&gw_crypto_host, body, "t=1700000000,v1=" V_FIXTURE_ROTATED, new_then_old, T0, TOLERANCE),
               NULL);
    /* Stripe sends one v1 per active secret while a secret is rolled */
    assert_err(verify_with(&gw_crypto_host, body, "t=1700000000,v1=" V_FIXTURE ",v1=" V_FIXTURE_ROTATED, rotated, T0,
                           TOLERANCE),
               NULL);
    assert_err(verify_with(&gw_crypto_host, body, "t=1700000000,v1=" V_FIXTURE ",v1=" V_FIXTURE_ROTATED, unrelated, T0,
                           TOLERANCE),
               cn_err_signature_mismatch);
    assert_err(verify_with(&gw_crypto_host, body, "t=1700000000,v1=" V_FIXTURE_ROTATED, test_secret, T0, TOLERANCE),
               cn_err_signature_mismatch);
}

static void test_several_v1_one_valid(void **state)
{
    assert_err(verify_short_ok("t=1700000000,v1=" V_WRONG ",v1=" V_SHORT), NULL);
    assert_err(verify_short_ok("t=1700000000,v1=" V_SHORT ",v1=" V_WRONG), NULL);
    assert_err(verify_short_ok("v1=" V_WRONG ",v1=" V_WRONG ",t=1700000000,v1=" V_SHORT ",v1=" V_WRONG), NULL);
    assert_err(verify_short_ok("t=1700000000,v1=" V_WRONG ",v1=" V_WRONG), cn_err_signature_mismatch);
}

static void test_v0_decoy(void **state)
{
    /* v0 carries the right MAC, but only v1 counts */
    assert_err(verify_short_ok("t=1700000000,v0=" V_SHORT ",v1=" V_WRONG), cn_err_signature_mismatch);
    assert_err(verify_short_ok("t=1700000000,v0=" V_SHORT), cn_err_signature_mismatch);
    assert_err(verify_short_ok("t=1700000000,v2=" V_SHORT), cn_err_signature_mismatch);
    assert_err(verify_short_ok("t=1700000000,V1=" V_SHORT), cn_err_signature_mismatch);
    assert_err(verify_short_ok("t=1700000000,v0=" V_WRONG ",v1=" V_SHORT), NULL);
}

static void test_no_v1_is_mismatch(void **state)
{
    /* a header that parses but carries no v1 at all: no secret produces it */
    assert_err(verify_short_ok("t=1700000000"), cn_err_signature_mismatch);
    assert_err(verify_short_ok("t=1700000000,v0=abc"), cn_err_signature_mismatch);
}

static void test_stale_timestamp(void **state)
{
    /* exactly at the tolerance still passes, one second later is stale */
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, T0 + TOLERANCE, TOLERANCE), NULL);
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, T0 + TOLERANCE + 1, TOLERANCE), cn_err_timestamp_stale);
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, T0 + 86400 * 365, TOLERANCE), cn_err_timestamp_stale);
    /* the MAC is checked first: a stale, wrongly signed request is a mismatch */
    assert_err(verify_short("t=1700000000,v1=" V_WRONG, T0 + TOLERANCE + 1, TOLERANCE), cn_err_signature_mismatch);
    assert_err(verify_short("t=1700000000", T0 + TOLERANCE + 1, TOLERANCE), cn_err_signature_mismatch);
    /* another tolerance */
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, T0 + 11, 10), cn_err_timestamp_stale);
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, T0 + 10, 10), NULL);
}

static void test_future_timestamp(void **state)
{
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, T0 - 1, TOLERANCE), NULL);
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, T0 - 86400 * 365, TOLERANCE), NULL);
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, 0, TOLERANCE), NULL);
}

static void test_tolerance_zero_disables(void **state)
{
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, T0 + 86400 * 3650, 0), NULL);
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, INT64_MAX, 0), NULL);
    assert_err(verify_short("t=1700000000,v1=" V_WRONG, T0 + 86400 * 3650, 0), cn_err_signature_mismatch);
    /* and an extreme clock with the check on does not overflow */
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, INT64_MAX, TOLERANCE), cn_err_timestamp_stale);
    assert_err(verify_short("t=1700000000,v1=" V_SHORT, INT64_MIN, TOLERANCE), NULL);
}

static void test_header_spaces_and_empty_elements(void **state)
{
    assert_err(verify_short_ok(" t=1700000000 , v1=" V_SHORT " "), NULL);
    assert_err(verify_short_ok("t=1700000000,\tv1=" V_SHORT "\t"), NULL);
    assert_err(verify_short_ok("t=1700000000,,v1=" V_SHORT ","), NULL);
    assert_err(verify_short_ok(",t=1700000000, ,v1=" V_SHORT), NULL);
    /* a space inside a pair is part of it: "v1 " is an unknown key, " 1700000000" not a number */
    assert_err(verify_short_ok("t=1700000000,v1 =" V_SHORT), cn_err_signature_mismatch);
    assert_err(verify_short_ok("t= 1700000000,v1=" V_SHORT), cn_err_signature_malformed);
    assert_err(verify_short_ok("t=1700000000,v1= " V_SHORT), cn_err_signature_mismatch);
}

static void test_header_empty_values(void **state)
{
    assert_err(verify_short_ok(""), cn_err_signature_malformed);
    assert_err(verify_short_ok("   "), cn_err_signature_malformed);
    assert_err(verify_short_ok(","), cn_err_signature_malformed);
    assert_err(verify_short_ok("t=,v1=" V_SHORT), cn_err_signature_malformed);
    assert_err(verify_short_ok("t=1700000000,v1=,v1=" V_SHORT), NULL);
    assert_err(verify_short_ok("t=1700000000,v1="), cn_err_signature_mismatch);
    assert_err(verify_short_ok("t=1700000000,v0=,foo=,=,=bar,v1=" V_SHORT), NULL);
}

static void test_header_repeated_t(void **state)
{
    assert_err(verify_short_ok("t=1700000000,t=1700000000,v1=" V_SHORT), cn_err_signature_malformed);
    assert_err(verify_short_ok("t=1700000000,v1=" V_SHORT ",t=1699999000"), cn_err_signature_malformed);
    assert_err(verify_short_ok("t=1700000000,v1=" V_SHORT ",t="), cn_err_signature_malformed);
}

static void test_header_non_integer_t(void **state)
{
    static const char *const bad[] = {
        "t=17e8,v1=" V_SHORT,         "t=-1700000000,v1=" V_SHORT,         "t=+1700000000,v1=" V_SHORT,
        "t=0x6553f100,v1=" V_SHORT,   "t=1700000000.0,v1=" V_SHORT,        "t=01700000000,v1=" V_SHORT,
        "t=1700000000 1,v1=" V_SHORT, "t=1234567890123456789,v1=" V_SHORT, /* 19 digits */
        "t=abc,v1=" V_SHORT,
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        const char *err = verify_short_ok(bad[i]);
        if (err != cn_err_signature_malformed)
            fail_msg("%s: got %s, want signature_malformed", bad[i], err != NULL ? err : "NULL (success)");
    }
    /* t=0 is a number (and very stale) */
    assert_err(verify_short_ok("t=0,v1=" V_SHORT), cn_err_signature_mismatch);
}

static void test_header_missing_t(void **state)
{
    assert_err(verify_short_ok("v1=" V_SHORT), cn_err_signature_malformed);
    assert_err(verify_short_ok("T=1700000000,v1=" V_SHORT), cn_err_signature_malformed);
    assert_err(verify_short_ok("timestamp=1700000000,v1=" V_SHORT), cn_err_signature_malformed);
}

static void test_header_pair_without_equals(void **state)
{
    assert_err(verify_short_ok("t=1700000000,v1" V_SHORT), cn_err_signature_malformed);
    assert_err(verify_short_ok("t=1700000000,v1=" V_SHORT ",garbage"), cn_err_signature_malformed);
    assert_err(verify_short_ok("t1700000000,v1=" V_SHORT), cn_err_signature_malformed);
}

static void test_header_non_hex_and_wrong_length_v1(void **state)
{
    /* V_SHORT with its first digit replaced by 'g' */
    static const char bad_hex[] = "g545d69c6084720e8ee59f9c3dd2b27543d2b6bb4ad3c1d54a140fe4508d4b7e";
    assert_err(verify_short_ok("t=1700000000,v1=" V_SHORT), NULL);
    assert_err(verify_short_ok("t=1700000000,v1=g545d69c6084720e8ee59f9c3dd2b27543d2b6bb4ad3c1d54a140fe4508d4b7e"),
               cn_err_signature_mismatch);
    assert_int_equal(strlen(bad_hex), 64);
    /* a garbled v1 is skipped, not fatal */
    assert_err(verify_short_ok("t=1700000000,v1=zz,v1=" V_SHORT), NULL);
    assert_err(
        verify_short_ok("t=1700000000,v1=g545d69c6084720e8ee59f9c3dd2b27543d2b6bb4ad3c1d54a140fe4508d4b7e,v1=" V_SHORT),
        NULL);
    /* one digit short or long, doubled, or the MAC's base64 */
    assert_err(verify_short_ok("t=1700000000,v1=b545d69c6084720e8ee59f9c3dd2b27543d2b6bb4ad3c1d54a140fe4508d4b7"),
               cn_err_signature_mismatch);
    assert_err(verify_short_ok("t=1700000000,v1=" V_SHORT "0"), cn_err_signature_mismatch);
    assert_err(verify_short_ok("t=1700000000,v1=" V_SHORT V_SHORT), cn_err_signature_mismatch);
    /* printf b545... | xxd -r -p | base64 */
    assert_err(verify_short_ok("t=1700000000,v1=tUXWnGCEcg6O5Z+cPdKydUPStrtK08HVShQP5FCNS34="),
               cn_err_signature_mismatch);
}

static void test_header_uppercase_hex(void **state)
{
    assert_err(verify_short_ok("t=1700000000,v1=" V_SHORT_UPPER), NULL);
}

static void test_header_overlong(void **state)
{
    /* exactly the 8 KiB cap passes, one byte more is malformed */
    char *h = pool_alloc(NULL, 8194);
    int n = snprintf(h, 8194, "t=1700000000,v1=%s,x=", V_SHORT);
    memset(h + n, 'a', 8192 - (size_t)n);
    h[8192] = '\0';
    assert_int_equal(strlen(h), 8192);
    assert_err(verify_short_ok(h), NULL);
    h[8192] = 'a';
    h[8193] = '\0';
    assert_err(verify_short_ok(h), cn_err_signature_malformed);

    /* an overlong v1 inside the cap is skipped */
    memset(h, 0, 8194);
    n = snprintf(h, 8194, "t=1700000000,v1=");
    memset(h + n, 'a', 4000);
    assert_err(verify_short_ok(h), cn_err_signature_mismatch);
    strcat(h, ",v1=" V_SHORT);
    assert_err(verify_short_ok(h), NULL);
}

static void test_header_missing(void **state)
{
    assert_err(verify_short_ok(NULL), cn_err_signature_missing);
}

static void test_no_secret(void **state)
{
    static const char *const none[] = {NULL}, *const empty[] = {"", NULL};
    cn_verify_input_t in = {str(SHORT_BODY), str("t=1700000000,v1=" V_SHORT), NULL, T0, TOLERANCE};

    assert_err(conn->verify(&gw_crypto_host, &in), cn_err_no_secret);
    assert_err(verify_with(&gw_crypto_host, str(SHORT_BODY), "t=1700000000,v1=" V_SHORT, none, T0, TOLERANCE),
               cn_err_no_secret);
    /* an empty key is never used: anyone could sign with it */
    assert_err(verify_with(&gw_crypto_host, str(SHORT_BODY), "t=1700000000,v1=" V_SHORT, empty, T0, TOLERANCE),
               cn_err_no_secret);
    /* no secret is reported whatever the request holds */
    assert_err(verify_with(&gw_crypto_host, str(SHORT_BODY), NULL, none, T0, TOLERANCE), cn_err_no_secret);
}

/* A host that counts its calls, to see that verify neither skips work on a match nor accepts when the MAC fails. */
static struct {
    size_t hmac_calls, equal_calls;
    bool fail_hmac;
} counting;

static int counting_hmac(const void *key, size_t keylen, const cn_str_t *parts, size_t nparts, unsigned char out[32])
{
    ++counting.hmac_calls;
    if (counting.fail_hmac) {
        memset(out, 0, 32);
        return -1;
    }
    return gw_crypto_hmac_sha256(key, keylen, parts, nparts, out);
}

static bool counting_equal(const void *a, const void *b, size_t len)
{
    ++counting.equal_calls;
    return gw_crypto_equal(a, b, len);
}

static const cn_host_t counting_host = {counting_hmac, counting_equal};

static void test_every_secret_and_v1_compared(void **state)
{
    static const char *const three[] = {"whsec_test_secret", "whsec_b", "whsec_c", NULL};
    memset(&counting, 0, sizeof(counting));
    /* the first secret and the first v1 match, yet all 3 x 2 pairs are compared */
    assert_err(verify_with(&counting_host, str(SHORT_BODY), "t=1700000000,v1=" V_SHORT ",v1=" V_WRONG ",v1=zz", three,
                           T0, TOLERANCE),
               NULL);
    assert_int_equal(counting.hmac_calls, 3);
    assert_int_equal(counting.equal_calls, 6);
}

static void test_hmac_failure_rejects(void **state)
{
    memset(&counting, 0, sizeof(counting));
    counting.fail_hmac = true;
    /* the zero MAC the failing host leaves behind must not be accepted */
    assert_err(verify_with(&counting_host, str(SHORT_BODY), "t=1700000000,v1=" V_WRONG, test_secret, T0, TOLERANCE),
               cn_err_signature_mismatch);
    assert_err(verify_with(&counting_host, str(SHORT_BODY), "t=1700000000,v1=" V_SHORT, test_secret, T0, TOLERANCE),
               cn_err_signature_mismatch);
}

/* --- parse -------------------------------------------------------------------------------------------------- */

typedef struct {
    const char *file, *id, *type, *account, *resource;
} expected_event_t;

/* Every fixtures/stripe/event_*.json must have a row here (the walk below fails otherwise). */
static const expected_event_t fixture_events[] = {
    {"stripe/event_charge_dispute_created.json", "evt_3KtQThJDPojXS6LN0E06aNxq", "charge.dispute.created", NULL,
     "dp_1MLuxQJDPojXS6LNrukJCBBG"},
    {"stripe/event_charge_refunded.json", "evt_3KtQThJDPojXS6LN0E06aNxq", "charge.refunded", NULL,
     "ch_3Kl36gJDPojXS6LN0DCM4A8l"},
    {"stripe/event_charge_succeeded.json", "evt_3KtQThJDPojXS6LN0E06aNxq", "charge.succeeded", NULL,
     "ch_3KtQThJDPojXS6LN0YmgbxGj"},
    {"stripe/event_checkout_session_completed.json", "evt_T8nSaZqtPudigUMqnnbY4D4v", "checkout.session.completed", NULL,
     "cs_live_9RBjcHiy2i5p99Tf1MYM90c3SHK1grU0E6Ae6pKWR2KPA4ZiuKiB2X1Y3X"},
    {"stripe/event_customer_updated.json", "evt_1IlZRsJDPojXS6LN2AbFmnR4", "customer.updated", NULL,
     "cus_IhGfebO16cMIGN"},
    {"stripe/event_payment_intent_payment_failed.json", "evt_1IlYUUJDPojXS6LN7NEWYSm2", "payment_intent.payment_failed",
     NULL, "pi_1IqxJOJDPojXS6LN9uOebAea"},
    {"stripe/event_payment_intent_succeeded.json", "evt_1IlYUUJDPojXS6LN7NEWYSm2", "payment_intent.succeeded", NULL,
     "pi_1IqxJOJDPojXS6LN9uOebAea"},
    {"stripe/event_payment_method_attached.json", "evt_1IlYUUJDPojXS6LN7NEWYSm2", "payment_method.attached", NULL,
     "pm_1MKlmhJDPojXS6LNV8Rcj3WO"},
    {"stripe/event_payment_method_detached.json", "evt_1IlYUUJDPojXS6LN7NEWYSm2", "payment_method.detached", NULL,
     "pm_1MJUwRJDPojXS6LNh4fFA1z7"},
    {"stripe/event_setup_intent_succeeded.json", "evt_1IlYUUJDPojXS6LN7NEWYSm2", "setup_intent.succeeded", NULL,
     "seti_1MLlgdJDPojXS6LNif6Sm0pX"},
    /* stripe-mock's event object (api_version null) */
    {"stripe/objects/event.json", "evt_1Pgc76B7WZ01zgkWwyRHS12y", "plan.created", NULL,
     "price_1PgafmB7WZ01zgkW6dKueIc5"},
};

static void assert_parses_to(cn_str_t body, const expected_event_t *want)
{
    cn_event_t *events = NULL;
    size_t count = 0;
    const char *detail = "unset";
    assert_err(conn->parse(body, &test_alloc, &events, &count, &detail), NULL);
    assert_null(detail);
    assert_int_equal(count, 1);
    assert_non_null(events);
    assert_cn_str(events[0].event_id, want->id);
    assert_cn_str(events[0].event_type, want->type);
    assert_cn_str(events[0].account, want->account);
    assert_cn_str(events[0].resource_id, want->resource);
    /* copies, not views into the body */
    const cn_str_t *fields[] = {&events[0].event_id, &events[0].event_type, &events[0].account, &events[0].resource_id};
    for (size_t i = 0; i != 4; ++i)
        if (fields[i]->base != NULL)
            assert_true(fields[i]->base + fields[i]->len <= body.base || fields[i]->base >= body.base + body.len);
}

static void test_parse_every_fixture(void **state)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/fixtures/stripe", SETTLED_SOURCE_DIR);
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t walked = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (fnmatch("event_*.json", de->d_name, 0) != 0)
            continue;
        char rel[512];
        snprintf(rel, sizeof(rel), "stripe/%s", de->d_name);
        size_t i = 0;
        while (i != sizeof(fixture_events) / sizeof(fixture_events[0]) && strcmp(fixture_events[i].file, rel) != 0)
            ++i;
        if (i == sizeof(fixture_events) / sizeof(fixture_events[0]))
            fail_msg("fixture %s has no expected row in this test", rel);
        ++walked;
    }
    closedir(d);
    assert_int_equal(walked, 10);

    for (size_t i = 0; i != sizeof(fixture_events) / sizeof(fixture_events[0]); ++i) {
        print_message("fixture: %s\n", fixture_events[i].file);
        assert_parses_to(read_fixture(fixture_events[i].file), fixture_events + i);
    }
}

static void test_parse_connect_account(void **state)
{
    static const expected_event_t want = {NULL, "evt_conn", "invoice.paid", "acct_1032D82eZvKYlo2C", "in_123"};
    assert_parses_to(str("{\"id\":\"evt_conn\",\"object\":\"event\",\"type\":\"invoice.paid\","
                         "\"account\":\"acct_1032D82eZvKYlo2C\",\"data\":{\"object\":{\"id\":\"in_123\"}}}"),
                     &want);
}

/* Thin events (v2.core.event, from event destinations) parse, with the related object as the resource, and are
 * marked to be stored as ignored; snapshot events never are. */
static void test_parse_thin_event(void **state)
{
    static const expected_event_t ping = {NULL, "evt_test_789", "v2.core.event_destination.ping", NULL, NULL};
    cn_str_t body = read_fixture("stripe/thin_event_v2_core_event_destination_ping.json");
    assert_parses_to(body, &ping);
    cn_event_t *events = NULL;
    size_t count = 0;
    assert_err(conn->parse(body, &test_alloc, &events, &count, NULL), NULL);
    assert_non_null(events[0].ignore_reason);
    assert_non_null(strstr(events[0].ignore_reason, "v2.core.event"));

    static const expected_event_t meter = {NULL, "evt_2", "v1.billing.meter.error_report_triggered", NULL, "bm_123"};
    cn_str_t related = str("{\"id\":\"evt_2\",\"object\":\"v2.core.event\",\"type\":"
                           "\"v1.billing.meter.error_report_triggered\",\"created\":\"2024-03-07T18:27:56.000Z\","
                           "\"related_object\":{\"id\":\"bm_123\",\"type\":\"billing.meter\","
                           "\"url\":\"/v1/billing/meters/bm_123\"}}");
    assert_parses_to(related, &meter);

    assert_err(conn->parse(str("{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"x.y\"}"), &test_alloc, &events,
                           &count, NULL),
               NULL);
    assert_null(events[0].ignore_reason);
}

static void test_parse_optional_fields(void **state)
{
    static const expected_event_t minimal = {NULL, "evt_1", "x.y", NULL, NULL};
    /* no "object", no account, no data */
    assert_parses_to(str("{\"id\":\"evt_1\",\"type\":\"x.y\"}"), &minimal);
    /* account null, data.object without a string id, non-string data */
    assert_parses_to(str("{\"id\":\"evt_1\",\"type\":\"x.y\",\"account\":null,\"data\":{\"object\":{\"id\":5}}}"),
                     &minimal);
    assert_parses_to(str("{\"id\":\"evt_1\",\"type\":\"x.y\",\"data\":[]}"), &minimal);
    assert_parses_to(str("{\"id\":\"evt_1\",\"type\":\"x.y\",\"data\":{\"object\":null}}"), &minimal);
    /* UTF-8 in the type is kept as is */
    static const expected_event_t utf8 = {NULL, "evt_1", "caf\xc3\xa9.updated", NULL, NULL};
    assert_parses_to(str("{\"id\":\"evt_1\",\"type\":\"caf\\u00e9.updated\"}"), &utf8);
}

/* Parses body expecting failure with want; checks that nothing was written to the outputs. */
static void assert_parse_fails(const char *body, size_t len, const char *want)
{
    cn_event_t sentinel, *events = &sentinel;
    size_t count = 12345;
    const char *detail = NULL, *err = conn->parse((cn_str_t){body, len}, &test_alloc, &events, &count, &detail);
    if (err != want)
        fail_msg("body %.*s: got %s, want %s", (int)(len > 300 ? 300 : len), body != NULL ? body : "",
                 err != NULL ? err : "NULL (success)", want);
    assert_ptr_equal(events, &sentinel);
    assert_int_equal(count, 12345);
    assert_non_null(detail);
    assert_true(strlen(detail) > 10);
}

#define PARSE_FAILS(lit, want) assert_parse_fails(lit, sizeof(lit) - 1, want)

static void test_parse_malformed(void **state)
{
    assert_parse_fails(NULL, 0, cn_err_body_malformed);
    PARSE_FAILS("", cn_err_body_malformed);
    PARSE_FAILS("{", cn_err_body_malformed);
    PARSE_FAILS("not json", cn_err_body_malformed);
    PARSE_FAILS("[]", cn_err_body_malformed);
    PARSE_FAILS("[{\"id\":\"evt_1\",\"type\":\"x.y\"}]", cn_err_body_malformed);
    PARSE_FAILS("\"evt_1\"", cn_err_body_malformed);
    PARSE_FAILS("null", cn_err_body_malformed);
    PARSE_FAILS("{\"id\":\"evt_1\",\"type\":\"x.y\"} trailing", cn_err_body_malformed);
    /* a repeated key could make two readers see two different events */
    PARSE_FAILS("{\"id\":\"evt_1\",\"type\":\"x.y\",\"id\":\"evt_2\"}", cn_err_body_malformed);
    /* NUL, raw or escaped, and invalid UTF-8 */
    PARSE_FAILS("{\"id\":\"evt_1\\u0000x\",\"type\":\"x.y\"}", cn_err_body_malformed);
    PARSE_FAILS("{\"id\":\"evt_1\",\"type\":\"x.y\"}\0", cn_err_body_malformed);
    PARSE_FAILS("{\"id\":\"evt_1\",\"type\":\"x\xff\"}", cn_err_body_malformed);
    PARSE_FAILS("{\"id\":\"evt_1\",\"type\":\"x\xc3\"}", cn_err_body_malformed);
}

static void test_parse_missing_fields(void **state)
{
    PARSE_FAILS("{}", cn_err_event_invalid);
    PARSE_FAILS("{\"type\":\"x.y\"}", cn_err_event_invalid);
    PARSE_FAILS("{\"id\":5,\"type\":\"x.y\"}", cn_err_event_invalid);
    PARSE_FAILS("{\"id\":null,\"type\":\"x.y\"}", cn_err_event_invalid);
    PARSE_FAILS("{\"id\":\"\",\"type\":\"x.y\"}", cn_err_event_invalid);
    PARSE_FAILS("{\"id\":\"evt_1\"}", cn_err_event_invalid);
    PARSE_FAILS("{\"id\":\"evt_1\",\"type\":null}", cn_err_event_invalid);
    PARSE_FAILS("{\"id\":\"evt_1\",\"type\":[\"x.y\"]}", cn_err_event_invalid);
    PARSE_FAILS("{\"id\":\"evt_1\",\"type\":\"\"}", cn_err_event_invalid);
    /* objects other than events (thin events parse: test_parse_thin_event) */
    PARSE_FAILS("{\"id\":\"evt_1\",\"type\":\"x.y\",\"object\":\"charge\"}", cn_err_event_invalid);
    PARSE_FAILS("{\"id\":\"evt_1\",\"type\":\"x.y\",\"object\":null}", cn_err_event_invalid);
}

/* Builds {"id":"<id>","type":"<type>","account":"<account>","data":{"object":{"id":"<resource>"}}} in the pool. */
static cn_str_t event_json(const char *id, const char *type, const char *account, const char *resource)
{
    size_t cap = strlen(id) + strlen(type) + strlen(account) + strlen(resource) + 128;
    char *buf = pool_alloc(NULL, cap);
    int n =
        snprintf(buf, cap, "{\"id\":\"%s\",\"type\":\"%s\",\"account\":\"%s\",\"data\":{\"object\":{\"id\":\"%s\"}}}",
                 id, type, account, resource);
    return (cn_str_t){buf, (size_t)n};
}

static char *repeat(char c, size_t n)
{
    char *s = pool_alloc(NULL, n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_parse_overlong_and_unprintable(void **state)
{
    char *id255 = repeat('e', 255), *id256 = repeat('e', 256), *f255 = repeat('f', 255), *f256 = repeat('f', 256);
    expected_event_t want = {NULL, id255, f255, f255, f255};
    assert_parses_to(event_json(id255, f255, f255, f255), &want);

    cn_str_t bodies[] = {
        event_json(id256, "x.y", "acct_1", "ch_1"),         event_json("evt_1", f256, "acct_1", "ch_1"),
        event_json("evt_1", "x.y", f256, "ch_1"),           event_json("evt_1", "x.y", "acct_1", f256),
        event_json("evt 1", "x.y", "acct_1", "ch_1"),       event_json("evt_1\\t", "x.y", "acct_1", "ch_1"),
        event_json("evt_\\u00e9", "x.y", "acct_1", "ch_1"),
    };
    for (size_t i = 0; i != sizeof(bodies) / sizeof(bodies[0]); ++i)
        assert_parse_fails(bodies[i].base, bodies[i].len, cn_err_event_invalid);
}

static void test_parse_detail_may_be_null(void **state)
{
    cn_event_t *events = NULL;
    size_t count = 0;
    assert_err(conn->parse(str("{}"), &test_alloc, &events, &count, NULL), cn_err_event_invalid);
    assert_err(conn->parse(str("{\"id\":\"evt_1\",\"type\":\"x.y\"}"), &test_alloc, &events, &count, NULL), NULL);
    assert_int_equal(count, 1);
}

#define TEST(f) cmocka_unit_test_teardown(f, pool_release)

static cn_str_t s_(const char *s)
{
    return (cn_str_t){s, strlen(s)};
}

/* Each processed event type refetches the object it names, one GET per distinct well-formed id; every other type is
 * ignored with a reason and fetches nothing. */
static void test_plan_fetches_per_event_type(void **state)
{
    static const struct {
        const char *type, *path_prefix, *kind;
    } cases[] = {
        {"payment_intent.succeeded", "/v1/payment_intents/", "stripe.payment_intent"},
        {"payment_intent.processing", "/v1/payment_intents/", "stripe.payment_intent"},
        {"charge.refunded", "/v1/charges/", "stripe.charge"},
        {"charge.refund.updated", "/v1/refunds/", "stripe.refund"},
        {"refund.failed", "/v1/refunds/", "stripe.refund"},
        {"charge.dispute.funds_withdrawn", "/v1/disputes/", "stripe.dispute"},
        {"checkout.session.async_payment_failed", "/v1/checkout/sessions/", "stripe.checkout_session"},
        {"setup_intent.succeeded", "/v1/setup_intents/", "stripe.setup_intent"},
        {"payment_method.automatically_updated", "/v1/payment_methods/", "stripe.payment_method"},
        {"customer.updated", "/v1/customers/", "stripe.customer"},
    };
    const cn_str_t ids[] = {s_("obj_1"), s_("obj_2"), s_("obj_1"), s_("../admin"), s_("a b"), {NULL, 0}, s_("obj_3")};
    cn_fetch_t out[8];
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        assert_null(cn_stripe_connector.ignore_reason(s_(cases[i].type)));
        int n = cn_stripe_connector.plan_fetches(s_(cases[i].type), ids, 7, out, 8);
        assert_int_equal(n, 3); /* obj_1 once, obj_2, obj_3; nothing that is not an id */
        const char *want[3] = {"obj_1", "obj_2", "obj_3"};
        for (int k = 0; k != 3; ++k) {
            char path[200];
            snprintf(path, sizeof(path), "%s%s", cases[i].path_prefix, want[k]);
            assert_string_equal(out[k].path, path);
            assert_string_equal(out[k].record_kind, cases[i].kind);
        }
    }
    assert_int_equal(cn_stripe_connector.plan_fetches(s_("payment_intent.succeeded"), ids, 7, out, 2), 2);
    static const char *const ignored[] = {"invoice.paid",     "payment_intent.created", "charge.pending",
                                          "customer.deleted", "v2.core.event",          "",
                                          "payment_intent"};
    for (size_t i = 0; i != sizeof(ignored) / sizeof(ignored[0]); ++i) {
        const char *why = cn_stripe_connector.ignore_reason(s_(ignored[i]));
        assert_non_null(why);
        assert_true(strstr(why, "Stripe") != NULL);
        assert_int_equal(cn_stripe_connector.plan_fetches(s_(ignored[i]), ids, 7, out, 8), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_plan_fetches_per_event_type),
        TEST(test_description),
        TEST(test_vector_over_fixture),
        TEST(test_vector_short_body),
        TEST(test_empty_body),
        TEST(test_body_tampered_by_one_byte),
        TEST(test_timestamp_is_signed),
        TEST(test_wrong_secret),
        TEST(test_secret_rotation),
        TEST(test_several_v1_one_valid),
        TEST(test_v0_decoy),
        TEST(test_no_v1_is_mismatch),
        TEST(test_stale_timestamp),
        TEST(test_future_timestamp),
        TEST(test_tolerance_zero_disables),
        TEST(test_header_spaces_and_empty_elements),
        TEST(test_header_empty_values),
        TEST(test_header_repeated_t),
        TEST(test_header_non_integer_t),
        TEST(test_header_missing_t),
        TEST(test_header_pair_without_equals),
        TEST(test_header_non_hex_and_wrong_length_v1),
        TEST(test_header_uppercase_hex),
        TEST(test_header_overlong),
        TEST(test_header_missing),
        TEST(test_no_secret),
        TEST(test_every_secret_and_v1_compared),
        TEST(test_hmac_failure_rejects),
        TEST(test_parse_every_fixture),
        TEST(test_parse_connect_account),
        TEST(test_parse_optional_fields),
        TEST(test_parse_thin_event),
        TEST(test_parse_malformed),
        TEST(test_parse_missing_fields),
        TEST(test_parse_overlong_and_unprintable),
        TEST(test_parse_detail_may_be_null),
    };
    return cmocka_run_group_tests_name("connectors/stripe", tests, NULL, NULL);
}
