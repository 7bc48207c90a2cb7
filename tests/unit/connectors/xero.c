/* SPDX-License-Identifier: MIT */
/* xero.c: tests the Xero connector: its base64 signature check against vectors computed outside this code (openssl,
 * python3 hmac, xero-php's test), and its parser (derived ids, intent-to-receive) against the Xero webhook fixtures. */
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

static const cn_connector_t *const conn = &cn_xero_connector;

/*
 * Vectors. Each was computed with openssl and cross-checked with python3:
 *   python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(KEY, MSG, hashlib.sha256).digest()))'
 */
#define CONTACT_FILE "xero/webhook_contact_update.json"
#define ITR_FILE "xero/webhook_intent_to_receive.json"
/* openssl dgst -sha256 -hmac xero_test_webhook_key -binary < fixtures/xero/webhook_contact_update.json | base64 */
#define X_CONTACT "owIZ2bApL7848hGulpMVFUZEIDMJ/OC/VMaNYfluLFc="
/* the same MAC in hex: openssl dgst -sha256 -hmac xero_test_webhook_key < fixtures/xero/webhook_contact_update.json */
#define X_CONTACT_HEX "a30219d9b0292fbf38f211ae969315154644203309fce0bf54c68d61f96e2c57"
/* { cat fixtures/xero/webhook_contact_update.json; printf '\n'; } |
 *     openssl dgst -sha256 -hmac xero_test_webhook_key -binary | base64 */
#define X_CONTACT_NEWLINE "z0PbLkvitWi+KSq9lVE3vlzeZOfY+bhIRMa8Y4jwBZ0="
/* openssl dgst -sha256 -hmac xero_rotated_key -binary < fixtures/xero/webhook_contact_update.json | base64 */
#define X_CONTACT_ROTATED "4cCz2di1KIavLUJjhZCRAVlNjS1zNFHc+W8gA91Gn8w="
/* openssl dgst -sha256 -hmac xero_test_webhook_key -binary < fixtures/xero/webhook_intent_to_receive.json | base64 */
#define X_ITR "BpeS+u8KFl8xOHNfqBosJvU9gT7ILHSqofUdXPthY9Q="
/* printf '' | openssl dgst -sha256 -hmac xero_test_webhook_key -binary | base64 */
#define X_EMPTY "tq+YIeV2BzSgYAWgTfEYatEJ+LeY3xtz9ZqqOkh6IHA="
/* Third-party vector: calcinai/xero-php tests/WebhookTest.php testValidPayload (key "test_key"), re-checked with
 * printf '%s' "$XEROPHP_BODY" | openssl dgst -sha256 -hmac test_key -binary | base64 */
#define XEROPHP_BODY                                                                                                   \
    "{\"events\":[],\"firstEventSequence\": 0,\"lastEventSequence\": 0, \"entropy\": \"NLDZEGWUXNHESAQVGLYF\"}"
#define X_XEROPHP "ixznmr+Pdl6QymsWZM+9UkY4lu97q04sJyejmSOp25U="

/* A well-formed value that no key here produces. */
#define X_WRONG "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

static const char *const test_key[] = {"xero_test_webhook_key", NULL};

static const char *verify_with(const cn_host_t *host, cn_str_t body, const char *header, const char *const *keys)
{
    cn_str_t k[8];
    size_t n = 0;
    while (keys[n] != NULL) {
        assert_true(n < 8);
        k[n] = str(keys[n]);
        ++n;
    }
    cn_secrets_t secrets = {k, n};
    /* Xero signs no timestamp: the clock and tolerance must not matter */
    cn_verify_input_t in = {body, header != NULL ? str(header) : (cn_str_t){NULL, 0}, &secrets, INT64_MAX, 1};
    return conn->verify(host, &in);
}

static const char *verify_contact(const char *header)
{
    return verify_with(&gw_crypto_host, read_fixture(CONTACT_FILE), header, test_key);
}

/* --- the connector's description --------------------------------------------------------------------------- */

static void test_description(void **state)
{
    assert_string_equal(conn->name, "xero");
    assert_string_equal(conn->signature_header, "x-xero-signature");
    assert_int_equal(conn->status_accepted, 200);
    assert_int_equal(conn->status_bad_signature, 401);
    assert_true(conn->bare_replies);
}

/* --- verify ------------------------------------------------------------------------------------------------- */

static void test_vector_over_fixture(void **state)
{
    assert_err(verify_contact(X_CONTACT), NULL);
    assert_err(verify_contact(X_ITR), cn_err_signature_mismatch);
    assert_err(verify_contact(X_WRONG), cn_err_signature_mismatch);
}

static void test_third_party_vector(void **state)
{
    static const char *const xerophp_key[] = {"test_key", NULL};
    assert_err(verify_with(&gw_crypto_host, str(XEROPHP_BODY), X_XEROPHP, xerophp_key), NULL);
    /* the key is used as its UTF-8 bytes, not base64-decoded, and not trimmed */
    static const char *const spaced_key[] = {"test_key ", NULL};
    assert_err(verify_with(&gw_crypto_host, str(XEROPHP_BODY), X_XEROPHP, spaced_key), cn_err_signature_mismatch);
}

static void test_intent_to_receive(void **state)
{
    /* Xero's handshake sends correctly and wrongly signed copies: only the right one passes */
    cn_str_t itr = read_fixture(ITR_FILE);
    assert_err(verify_with(&gw_crypto_host, itr, X_ITR, test_key), NULL);
    assert_err(verify_with(&gw_crypto_host, itr, X_CONTACT, test_key), cn_err_signature_mismatch);
    assert_err(verify_with(&gw_crypto_host, itr, X_WRONG, test_key), cn_err_signature_mismatch);
    assert_err(verify_with(&gw_crypto_host, itr, "", test_key), cn_err_signature_mismatch);
}

static void test_trailing_newline_matters(void **state)
{
    cn_str_t body = read_fixture(CONTACT_FILE), with_nl;
    char *buf = pool_alloc(NULL, body.len + 1);
    memcpy(buf, body.base, body.len);
    buf[body.len] = '\n';
    with_nl = (cn_str_t){buf, body.len + 1};
    assert_err(verify_with(&gw_crypto_host, with_nl, X_CONTACT, test_key), cn_err_signature_mismatch);
    assert_err(verify_with(&gw_crypto_host, with_nl, X_CONTACT_NEWLINE, test_key), NULL);
    assert_err(verify_with(&gw_crypto_host, body, X_CONTACT_NEWLINE, test_key), cn_err_signature_mismatch);
}

static void test_body_tampered_by_one_byte(void **state)
{
    cn_str_t body = read_fixture(CONTACT_FILE);
    char *buf = (char *)body.base;
    for (size_t i = 0; i != body.len; ++i) {
        buf[i] ^= 0x20;
        const char *err = verify_with(&gw_crypto_host, body, X_CONTACT, test_key);
        if (err != cn_err_signature_mismatch)
            fail_msg("byte %zu flipped: got %s, want signature_mismatch", i, err != NULL ? err : "NULL (success)");
        buf[i] ^= 0x20;
    }
    assert_err(verify_with(&gw_crypto_host, body, X_CONTACT, test_key), NULL);
    body.len -= 1;
    assert_err(verify_with(&gw_crypto_host, body, X_CONTACT, test_key), cn_err_signature_mismatch);
}

static void test_empty_body(void **state)
{
    assert_err(verify_with(&gw_crypto_host, (cn_str_t){NULL, 0}, X_EMPTY, test_key), NULL);
    assert_err(verify_with(&gw_crypto_host, str(""), X_EMPTY, test_key), NULL);
    assert_err(verify_with(&gw_crypto_host, str("{}"), X_EMPTY, test_key), cn_err_signature_mismatch);
}

static void test_hex_and_other_encodings_rejected(void **state)
{
    static const char *const bad[] = {
        X_CONTACT_HEX,                                                      /* the right MAC in hex */
        "A30219D9B0292FBF38F211AE969315154644203309FCE0BF54C68D61F96E2C57", /* ... in upper-case hex */
        "owIZ2bApL7848hGulpMVFUZEIDMJ/OC/VMaNYfluLFc",                      /* unpadded */
        "owIZ2bApL7848hGulpMVFUZEIDMJ_OC_VMaNYfluLFc=",                     /* URL-safe alphabet */
        " owIZ2bApL7848hGulpMVFUZEIDMJ/OC/VMaNYfluLFc=",                    /* a leading space */
        "owIZ2bApL7848hGulpMVFUZEIDMJ/OC/VMaNYfluLFc==",                    /* extra padding */
        "OWIZ2BAPL7848HGULPMVFUZEIDMJ/OC/VMANYFLULFC=",                     /* case folded */
        "owIZ2bApL7848hGulpMVFUZEIDMJ/OC/VMaNYfluLFd=",                     /* a non-canonical last character */
        "sha256=owIZ2bApL7848hGulpMVFUZEIDMJ/OC/VMaNYfluLFc=",
        "",
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        const char *err = verify_contact(bad[i]);
        if (err != cn_err_signature_mismatch)
            fail_msg("header \"%s\": got %s, want signature_mismatch", bad[i], err != NULL ? err : "NULL (success)");
    }
    assert_err(verify_contact(X_CONTACT), NULL);
}

static void test_header_missing(void **state)
{
    assert_err(verify_contact(NULL), cn_err_signature_missing);
}

static void test_no_secret(void **state)
{
    static const char *const none[] = {NULL}, *const empty[] = {"", NULL};
    cn_verify_input_t in = {str("{}"), str(X_EMPTY), NULL, 0, 0};
    assert_err(conn->verify(&gw_crypto_host, &in), cn_err_no_secret);
    assert_err(verify_with(&gw_crypto_host, read_fixture(CONTACT_FILE), X_CONTACT, none), cn_err_no_secret);
    assert_err(verify_with(&gw_crypto_host, read_fixture(CONTACT_FILE), X_CONTACT, empty), cn_err_no_secret);
    assert_err(verify_with(&gw_crypto_host, read_fixture(CONTACT_FILE), NULL, none), cn_err_no_secret);
}

static void test_key_rotation(void **state)
{
    static const char *const old_then_new[] = {"xero_rotated_key", "xero_test_webhook_key", NULL},
                             *const rotated[] = {"xero_rotated_key", NULL},
                             *const others[] = {"a", "", "xero_rotated_key", NULL};
    cn_str_t body = read_fixture(CONTACT_FILE);
    assert_err(verify_with(&gw_crypto_host, body, X_CONTACT, old_then_new), NULL);
    assert_err(verify_with(&gw_crypto_host, body, X_CONTACT_ROTATED, old_then_new), NULL);
    assert_err(verify_with(&gw_crypto_host, body, X_CONTACT_ROTATED, others), NULL);
    assert_err(verify_with(&gw_crypto_host, body, X_CONTACT, rotated), cn_err_signature_mismatch);
    assert_err(verify_with(&gw_crypto_host, body, X_CONTACT_ROTATED, test_key), cn_err_signature_mismatch);
}

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

static void test_every_key_compared(void **state)
{
    static const char *const three[] = {"xero_test_webhook_key", "b", "c", NULL};
    memset(&counting, 0, sizeof(counting));
    assert_err(verify_with(&counting_host, read_fixture(CONTACT_FILE), X_CONTACT, three), NULL);
    assert_int_equal(counting.hmac_calls, 3);
    assert_int_equal(counting.equal_calls, 3);
}

static void test_hmac_failure_rejects(void **state)
{
    memset(&counting, 0, sizeof(counting));
    counting.fail_hmac = true;
    /* base64 of the 32 zero bytes the failing host leaves behind */
    assert_err(verify_with(&counting_host, str("{}"), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", test_key),
               cn_err_signature_mismatch);
    assert_err(verify_with(&counting_host, read_fixture(CONTACT_FILE), X_CONTACT, test_key), cn_err_signature_mismatch);
}

/* --- parse -------------------------------------------------------------------------------------------------- */

typedef struct {
    const char *id, *type, *account, *resource;
} expected_event_t;

typedef struct {
    const char *file;
    size_t count;
    expected_event_t events[2];
} expected_delivery_t;

#define TENANT "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
#define CONTACT "717f2bfc-c6d4-41fd-b238-3f2f0c0cf777"

/* Every fixtures/xero/webhook_*.json must have a row here (the walk below fails otherwise). */
static const expected_delivery_t fixture_deliveries[] = {
    {"xero/webhook_contact_update.json",
     1,
     {{TENANT ":" CONTACT ":CONTACT:UPDATE:2024-06-21T01:15:39.902", "CONTACT.UPDATE", TENANT, CONTACT}}},
    {"xero/webhook_intent_to_receive.json", 0, {{NULL}}},
};

static void assert_parses_to(cn_str_t body, size_t count, const expected_event_t *want)
{
    cn_event_t sentinel, *events = &sentinel;
    size_t got = 12345;
    const char *detail = "unset";
    assert_err(conn->parse(body, &test_alloc, &events, &got, &detail), NULL);
    assert_null(detail);
    assert_int_equal(got, count);
    if (count == 0) {
        assert_null(events);
        return;
    }
    assert_non_null(events);
    for (size_t i = 0; i != count; ++i) {
        assert_cn_str(events[i].event_id, want[i].id);
        assert_cn_str(events[i].event_type, want[i].type);
        assert_cn_str(events[i].account, want[i].account);
        assert_cn_str(events[i].resource_id, want[i].resource);
    }
}

static void test_parse_every_fixture(void **state)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/fixtures/xero", SETTLED_SOURCE_DIR);
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t walked = 0, nrows = sizeof(fixture_deliveries) / sizeof(fixture_deliveries[0]);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (fnmatch("webhook_*.json", de->d_name, 0) != 0)
            continue;
        char rel[512];
        snprintf(rel, sizeof(rel), "xero/%s", de->d_name);
        size_t i = 0;
        while (i != nrows && strcmp(fixture_deliveries[i].file, rel) != 0)
            ++i;
        if (i == nrows)
            fail_msg("fixture %s has no expected row in this test", rel);
        ++walked;
    }
    closedir(d);
    assert_int_equal(walked, nrows);

    for (size_t i = 0; i != nrows; ++i) {
        print_message("fixture: %s\n", fixture_deliveries[i].file);
        assert_parses_to(read_fixture(fixture_deliveries[i].file), fixture_deliveries[i].count,
                         fixture_deliveries[i].events);
    }
}

#define INV_TENANT "e629a03c-7ffe-4913-bd94-ff2fdb36a702"
#define INVOICE "44aa0707-f718-4f1c-8d53-f2da9ca59533"
#define XERO_EVENT(category, type, date)                                                                               \
    "{\"resourceUrl\":\"https://api.xero.com/api.xro/2.0/Invoices/" INVOICE "\",\"resourceId\":\"" INVOICE             \
    "\",\"eventDateUtc\":\"" date "\",\"eventType\":\"" type "\",\"eventCategory\":\"" category                        \
    "\",\"tenantId\":\"" INV_TENANT "\",\"tenantType\":\"ORGANISATION\"}"

static void test_parse_several_events(void **state)
{
    /* calcinai/xero-php testGetEvents: two updates of one invoice, told apart by their dates */
    static const expected_event_t want[] = {
        {INV_TENANT ":" INVOICE ":INVOICE:UPDATE:2018-02-09T09:18:28.917Z", "INVOICE.UPDATE", INV_TENANT, INVOICE},
        {INV_TENANT ":" INVOICE ":INVOICE:UPDATE:2018-02-09T09:19:05.06Z", "INVOICE.UPDATE", INV_TENANT, INVOICE},
    };
    static const char body[] = "{\"events\":["                          //
        XERO_EVENT("INVOICE", "UPDATE", "2018-02-09T09:18:28.917Z") "," //
        XERO_EVENT("INVOICE", "UPDATE", "2018-02-09T09:19:05.06Z")      //
        "],\"firstEventSequence\": 2,\"lastEventSequence\": 3, \"entropy\": \"GATSEZXWIBPBRNQOTMOH\"}";
    assert_parses_to(str(body), 2, want);
}

static void test_parse_mixed_case(void **state)
{
    /* Xero's pages show "Update"; the key and type must be those of "UPDATE" so both dedupe together */
    static const expected_event_t want[] = {
        {INV_TENANT ":" INVOICE ":INVOICE:UPDATE:2018-02-09T09:18:28.917Z", "INVOICE.UPDATE", INV_TENANT, INVOICE},
        {INV_TENANT ":" INVOICE ":CREDITNOTE:CREATE:2018-02-09T09:18:28.917Z", "CREDITNOTE.CREATE", INV_TENANT,
         INVOICE},
    };
    static const char body[] = "{\"events\":["                          //
        XERO_EVENT("Invoice", "Update", "2018-02-09T09:18:28.917Z") "," //
        XERO_EVENT("creditNote", "create", "2018-02-09T09:18:28.917Z")  //
        "]}";
    assert_parses_to(str(body), 2, want);
    /* the date keeps its case */
    static const expected_event_t date[] = {
        {INV_TENANT ":" INVOICE ":INVOICE:UPDATE:2018-02-09t09:18:28.917z", "INVOICE.UPDATE", INV_TENANT, INVOICE},
    };
    assert_parses_to(str("{\"events\":[" XERO_EVENT("INVOICE", "UPDATE", "2018-02-09t09:18:28.917z") "]}"), 1, date);
}

static void test_parse_itr_variants(void **state)
{
    /* sequences below the schema's minimum, or absent, are not checked */
    assert_parses_to(str("{\"events\":[],\"lastEventSequence\":0,\"firstEventSequence\":0,\"entropy\":\"x\"}"), 0,
                     NULL);
    assert_parses_to(str("{\"events\":[]}"), 0, NULL);
    assert_parses_to(str(XEROPHP_BODY), 0, NULL);
}

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
    PARSE_FAILS("{\"events\":[]", cn_err_body_malformed);
    PARSE_FAILS("[]", cn_err_body_malformed);
    PARSE_FAILS("{}", cn_err_body_malformed);
    PARSE_FAILS("{\"events\":null}", cn_err_body_malformed);
    PARSE_FAILS("{\"events\":{}}", cn_err_body_malformed);
    PARSE_FAILS("{\"Events\":[]}", cn_err_body_malformed);
    PARSE_FAILS("{\"events\":[],\"events\":[]}", cn_err_body_malformed);
    PARSE_FAILS("{\"events\":[]}x", cn_err_body_malformed);
    PARSE_FAILS("{\"events\":[],\"entropy\":\"\xff\"}", cn_err_body_malformed);
}

/* The five required fields of one event, each replaceable. */
static cn_str_t event_body(const char *tenant, const char *resource, const char *category, const char *type,
                           const char *date)
{
    const char *names[] = {"tenantId", "resourceId", "eventCategory", "eventType", "eventDateUtc"},
               *values[] = {tenant, resource, category, type, date};
    size_t cap = 1024;
    for (size_t i = 0; i != 5; ++i)
        cap += values[i] != NULL ? strlen(values[i]) : 0;
    char *buf = pool_alloc(NULL, cap);
    size_t n =
        (size_t)snprintf(buf, cap, "{\"events\":[" XERO_EVENT("INVOICE", "UPDATE", "2018-02-09T09:18:28.917Z") ",{");
    bool first = true;
    for (size_t i = 0; i != 5; ++i) {
        if (values[i] == NULL)
            continue;
        n += (size_t)snprintf(buf + n, cap - n, "%s\"%s\":%s", first ? "" : ",", names[i], values[i]);
        first = false;
    }
    n += (size_t)snprintf(buf + n, cap - n, "}]}");
    assert_true(n < cap);
    return (cn_str_t){buf, n};
}

static void test_parse_missing_fields(void **state)
{
    const char *good[] = {"\"" INV_TENANT "\"", "\"" INVOICE "\"", "\"INVOICE\"", "\"UPDATE\"",
                          "\"2018-02-09T09:18:29Z\""};
    cn_str_t body = event_body(good[0], good[1], good[2], good[3], good[4]);
    static const expected_event_t want[] = {
        {INV_TENANT ":" INVOICE ":INVOICE:UPDATE:2018-02-09T09:18:28.917Z", "INVOICE.UPDATE", INV_TENANT, INVOICE},
        {INV_TENANT ":" INVOICE ":INVOICE:UPDATE:2018-02-09T09:18:29Z", "INVOICE.UPDATE", INV_TENANT, INVOICE},
    };
    assert_parses_to(body, 2, want);

    /* each field missing, null, a number, or empty: the whole delivery fails, the valid first event included */
    static const char *const replacements[] = {NULL, "null", "5", "\"\"", "[\"x\"]"};
    for (size_t field = 0; field != 5; ++field) {
        for (size_t r = 0; r != sizeof(replacements) / sizeof(replacements[0]); ++r) {
            const char *v[5];
            memcpy(v, good, sizeof(v));
            v[field] = replacements[r];
            body = event_body(v[0], v[1], v[2], v[3], v[4]);
            assert_parse_fails(body.base, body.len, cn_err_event_invalid);
        }
    }
    PARSE_FAILS("{\"events\":[5]}", cn_err_event_invalid);
    PARSE_FAILS("{\"events\":[[]]}", cn_err_event_invalid);
    PARSE_FAILS("{\"events\":[null]}", cn_err_event_invalid);
}

static char *repeat(char c, size_t n)
{
    char *s = pool_alloc(NULL, n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static char *quoted(const char *s)
{
    size_t n = strlen(s);
    char *q = pool_alloc(NULL, n + 3);
    q[0] = '"';
    memcpy(q + 1, s, n);
    q[n + 1] = '"';
    q[n + 2] = '\0';
    return q;
}

static void test_parse_overlong_and_ambiguous(void **state)
{
    /* 36 + 179 + 7 + 6 + 23 + 4 separators = 255 bytes of derived key */
    const char *tenant = "\"" INV_TENANT "\"", *category = "\"INVOICE\"", *type = "\"UPDATE\"",
               *date = "\"2018-02-09T09:18:28.917\"";
    char *r179 = repeat('r', 179), *key = pool_alloc(NULL, 256);
    snprintf(key, 256, INV_TENANT ":%s:INVOICE:UPDATE:2018-02-09T09:18:28.917", r179);
    assert_int_equal(strlen(key), 255);
    cn_str_t body = event_body(tenant, quoted(r179), category, type, date);
    expected_event_t want[] = {
        {INV_TENANT ":" INVOICE ":INVOICE:UPDATE:2018-02-09T09:18:28.917Z", "INVOICE.UPDATE", INV_TENANT, INVOICE},
        {key, "INVOICE.UPDATE", INV_TENANT, r179},
    };
    assert_parses_to(body, 2, want);

    body = event_body(tenant, quoted(repeat('r', 180)), category, type, date);
    assert_parse_fails(body.base, body.len, cn_err_event_invalid);
    body = event_body(tenant, quoted(repeat('r', 10000)), category, type, date);
    assert_parse_fails(body.base, body.len, cn_err_event_invalid);

    /* a ':' in any part but the date would let two different events share a key */
    body = event_body("\"" INV_TENANT ":x\"", "\"" INVOICE "\"", category, type, date);
    assert_parse_fails(body.base, body.len, cn_err_event_invalid);
    body = event_body(tenant, "\"a:b\"", category, type, date);
    assert_parse_fails(body.base, body.len, cn_err_event_invalid);
    body = event_body(tenant, "\"" INVOICE "\"", "\"INVOICE:UPDATE\"", type, date);
    assert_parse_fails(body.base, body.len, cn_err_event_invalid);
    body = event_body(tenant, "\"" INVOICE "\"", category, "\"UP:DATE\"", date);
    assert_parse_fails(body.base, body.len, cn_err_event_invalid);

    /* spaces, controls and non-ASCII have no place in a key */
    body = event_body(tenant, "\"a b\"", category, type, date);
    assert_parse_fails(body.base, body.len, cn_err_event_invalid);
    body = event_body(tenant, "\"" INVOICE "\"", category, type, "\"2018-02-09\\n\"");
    assert_parse_fails(body.base, body.len, cn_err_event_invalid);
    body = event_body(tenant, "\"" INVOICE "\"", "\"INVOIC\\u00c9\"", type, date);
    assert_parse_fails(body.base, body.len, cn_err_event_invalid);
}

#define TEST(f) cmocka_unit_test_teardown(f, pool_release)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_description),
        TEST(test_vector_over_fixture),
        TEST(test_third_party_vector),
        TEST(test_intent_to_receive),
        TEST(test_trailing_newline_matters),
        TEST(test_body_tampered_by_one_byte),
        TEST(test_empty_body),
        TEST(test_hex_and_other_encodings_rejected),
        TEST(test_header_missing),
        TEST(test_no_secret),
        TEST(test_key_rotation),
        TEST(test_every_key_compared),
        TEST(test_hmac_failure_rejects),
        TEST(test_parse_every_fixture),
        TEST(test_parse_several_events),
        TEST(test_parse_mixed_case),
        TEST(test_parse_itr_variants),
        TEST(test_parse_malformed),
        TEST(test_parse_missing_fields),
        TEST(test_parse_overlong_and_ambiguous),
    };
    return cmocka_run_group_tests_name("connectors/xero", tests, NULL, NULL);
}
