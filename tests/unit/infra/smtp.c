/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/infra/smtp.c's composition of a message: the headers (Date, Message-ID, From, To, Subject,
 * List-Unsubscribe only when given), RFC 2047 encoding of a non-ASCII subject (split at UTF-8 boundaries, each
 * word at most 75 characters), the multipart/alternative body in base64 with CRLF line ends. Sending is tested
 * against the project's SMTP sink in tests/integration/test_notifications.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "smtp.h"

static void test_ascii_header_unchanged(void **state)
{
    (void)state;
    char *s = gw_smtp_encode_header("Invoice INV-1 is due");
    assert_string_equal(s, "Invoice INV-1 is due");
    free(s);
}

static void test_rfc2047(void **state)
{
    (void)state;
    char *s = gw_smtp_encode_header("Facture n\xc2\xb0 7 \xe2\x80\x94 \xc3\xa9"
                                    "ch\xc3\xa9"
                                    "ance");
    assert_string_equal(s, "=?UTF-8?B?RmFjdHVyZSBuwrAgNyDigJQgw6ljaMOpYW5jZQ==?=");
    free(s);
    /* long: several words, none over 75 characters, none splitting the two-byte "é" */
    char long_subject[400] = "";
    for (int i = 0; i != 40; ++i)
        strcat(long_subject, "\xc3\xa9t\xc3\xa9 ");
    s = gw_smtp_encode_header(long_subject);
    int words = 0;
    for (char *w = s; (w = strstr(w, "=?UTF-8?B?")) != NULL; ++words) {
        char *end = strstr(w, "?=");
        assert_non_null(end);
        assert_true(end + 2 - w <= 75);
        w = end + 2;
        if (*w != '\0') {
            assert_memory_equal(w, "\r\n ", 3); /* folded */
        }
    }
    assert_true(words > 1);
    free(s);
}

static void test_compose(void **state)
{
    (void)state;
    gw_smtp_message_t m = {.from = "billing@acme.example",
                           .to = "ann@client.example",
                           .subject = "Hello",
                           .message_id = "settled.1.abc@acme.example",
                           .text = "line one\nline two\n",
                           .html = "<p>hi</p>\n",
                           .list_unsubscribe = "<mailto:billing@acme.example?subject=unsubscribe>",
                           .one_click = true,
                           .date = 1796342400}; /* 2026-12-04 00:00:00 UTC, a Friday */
    char *s = gw_smtp_compose(&m);
    assert_non_null(strstr(s, "Date: Fri, 04 Dec 2026 00:00:00 +0000\r\n"));
    assert_non_null(strstr(s, "Message-ID: <settled.1.abc@acme.example>\r\n"));
    assert_non_null(strstr(s, "From: billing@acme.example\r\nTo: ann@client.example\r\nSubject: Hello\r\n"));
    assert_non_null(strstr(s, "List-Unsubscribe: <mailto:billing@acme.example?subject=unsubscribe>\r\n"));
    assert_non_null(strstr(s, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
    assert_non_null(
        strstr(s, "Content-Type: multipart/alternative; boundary=\"=_settled_settled.1.abc_acme.example\""));
    /* "line one\r\nline two\r\n" in base64 */
    assert_non_null(strstr(s, "bGluZSBvbmUNCmxpbmUgdHdvDQo=\r\n"));
    assert_non_null(strstr(s, "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"));
    assert_non_null(strstr(s, "--=_settled_settled.1.abc_acme.example--\r\n"));
    for (const char *p = s; *p != '\0'; ++p)
        if (*p == '\n')
            assert_true(p > s && p[-1] == '\r'); /* CRLF only */
    free(s);
    m.list_unsubscribe = NULL; /* a receipt */
    m.one_click = false;
    s = gw_smtp_compose(&m);
    assert_null(strstr(s, "List-Unsubscribe"));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii_header_unchanged),
        cmocka_unit_test(test_rfc2047),
        cmocka_unit_test(test_compose),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
