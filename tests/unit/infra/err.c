/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/infra/err.c: the code table and docs/errors.md list the same codes (none missing, none stale),
 * every code constant declared in err.h and connector.h is in the table under its own name, codes are unique and
 * lower_snake_case, and gw_err_set fills, truncates, returns -1 and tolerates NULL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "connector.h"
#include "err.h"

static char *read_whole(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        fail_msg("cannot open %s", path);
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    do {
        if (len + 4096 + 1 > cap)
            buf = realloc(buf, cap = (cap + 4096) * 2);
        assert_non_null(buf);
        n = fread(buf + len, 1, 4096, fp);
        len += n;
    } while (n != 0);
    fclose(fp);
    buf[len] = '\0';
    return buf;
}

/* The index of the table row whose code is the string code (compared as text), or -1. */
static ssize_t find_code(const char *code, size_t len)
{
    for (size_t i = 0; i != gw_err_ncodes; ++i)
        if (strlen(gw_err_codes[i].code) == len && memcmp(gw_err_codes[i].code, code, len) == 0)
            return (ssize_t)i;
    return -1;
}

/* Appends a formatted line to the report of a test that collects every problem before failing. */
static void note(char *report, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(char *report, size_t cap, const char *fmt, ...)
{
    size_t off = strlen(report);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(report + off, cap - off, fmt, ap);
    va_end(ap);
}

/* --- the table ---------------------------------------------------------------------------------------------- */

static bool is_lower_snake(const char *s)
{
    if (!islower((unsigned char)s[0]))
        return false;
    for (const char *p = s; *p != '\0'; ++p) {
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '_')
            return false;
        if (*p == '_' && (p[1] == '_' || p[1] == '\0'))
            return false;
    }
    return true;
}

static void test_codes_are_unique_and_lower_snake_case(void **state)
{
    char report[4096] = "";
    assert_true(gw_err_ncodes > 0);
    for (size_t i = 0; i != gw_err_ncodes; ++i) {
        const char *c = gw_err_codes[i].code;
        if (c == NULL || !is_lower_snake(c))
            note(report, sizeof(report), "\n  row %zu: \"%s\" is not lower_snake_case", i, c != NULL ? c : "(null)");
        if (gw_err_codes[i].title == NULL || gw_err_codes[i].title[0] == '\0')
            note(report, sizeof(report), "\n  %s has no title", c);
        for (size_t j = 0; j != i; ++j)
            if (c != NULL && strcmp(gw_err_codes[j].code, c) == 0)
                note(report, sizeof(report), "\n  %s appears twice (rows %zu and %zu)", c, j, i);
    }
    if (report[0] != '\0')
        fail_msg("gw_err_codes:%s", report);
    assert_false(is_lower_snake("Not_found"));
    assert_false(is_lower_snake("not-found"));
    assert_false(is_lower_snake("not__found"));
    assert_false(is_lower_snake("not_found_"));
    assert_false(is_lower_snake("_x"));
    assert_true(is_lower_snake("oauth2_callback"));
}

/* Every `extern const char <prefix>NAME[]` of header is in the table, as the code "NAME". */
static void check_header_codes(const char *header, const char *prefix, char *report, size_t cap, size_t *found)
{
    char *text = read_whole(header);
    char decl[64];
    snprintf(decl, sizeof(decl), "extern const char %s", prefix);
    for (const char *p = text; (p = strstr(p, decl)) != NULL; ++p) {
        const char *name = p + strlen(decl), *end = name;
        while (islower((unsigned char)*end) || isdigit((unsigned char)*end) || *end == '_')
            ++end;
        if (strncmp(end, "[]", 2) != 0)
            continue;
        ++*found;
        ssize_t i = find_code(name, (size_t)(end - name));
        if (i == -1)
            note(report, cap, "\n  %s declares %s%.*s, which gw_err_codes (gateway/infra/err.c) lacks", header, prefix,
                 (int)(end - name), name);
    }
    free(text);
}

static void test_every_declared_code_is_in_the_table(void **state)
{
    char report[4096] = "";
    size_t gw = 0, cn = 0;
    check_header_codes(SETTLED_SOURCE_DIR "/gateway/infra/err.h", "gw_err_", report, sizeof(report), &gw);
    check_header_codes(SETTLED_SOURCE_DIR "/connectors/connector.h", "cn_err_", report, sizeof(report), &cn);
    if (report[0] != '\0')
        fail_msg("codes missing from the table:%s", report);
    /* the parse found the declarations (a test that reads nothing proves nothing) */
    assert_int_equal(gw + cn, gw_err_ncodes);
    assert_true(cn >= 7);
    /* and the constants are the table's: compared by pointer, as callers compare them */
    assert_ptr_equal(gw_err_codes[find_code("conflict", 8)].code, gw_err_conflict);
    assert_ptr_equal(gw_err_codes[find_code("signature_mismatch", 18)].code, cn_err_signature_mismatch);
}

/* --- docs/errors.md ----------------------------------------------------------------------------------------- */

static void test_docs_list_every_code_and_no_other(void **state)
{
    const char *path = SETTLED_SOURCE_DIR "/docs/errors.md";
    char *text = read_whole(path), report[8192] = "";
    size_t *rows = calloc(gw_err_ncodes, sizeof(*rows)), nrows = 0;
    assert_non_null(rows);
    /* a row of the codes table: | `code` | status | when | */
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *eol = strchr(line, '\n');
        if (strncmp(line, "| `", 3) == 0) {
            const char *code = line + 3, *end = strchr(code, '`');
            if (end == NULL || (eol != NULL && end > eol)) {
                note(report, sizeof(report), "\n  a row without a closing backtick: %.40s", line);
            } else {
                ++nrows;
                const char *status = strchr(end, '|');
                while (status != NULL && (*status == '|' || *status == ' '))
                    ++status;
                ssize_t i = find_code(code, (size_t)(end - code));
                if (i == -1)
                    note(report, sizeof(report), "\n  %s lists `%.*s`, which is not in gw_err_codes (a stale row?)",
                         path, (int)(end - code), code);
                else
                    ++rows[i];
                if (status == NULL || *status == '|' || (eol != NULL && status >= eol))
                    note(report, sizeof(report), "\n  `%.*s` has no status", (int)(end - code), code);
            }
        }
        line = eol != NULL ? eol + 1 : NULL;
    }
    for (size_t i = 0; i != gw_err_ncodes; ++i) {
        if (rows[i] == 0)
            note(report, sizeof(report), "\n  %s has no row for `%s` (%s)", path, gw_err_codes[i].code,
                 gw_err_codes[i].title);
        else if (rows[i] > 1)
            note(report, sizeof(report), "\n  %s lists `%s` %zu times", path, gw_err_codes[i].code, rows[i]);
    }
    free(rows);
    free(text);
    if (report[0] != '\0')
        fail_msg("docs/errors.md and gw_err_codes disagree:%s", report);
    assert_int_equal(nrows, gw_err_ncodes);
}

/* --- gw_err_set and friends --------------------------------------------------------------------------------- */

static void test_set_fills_the_error(void **state)
{
    gw_err_t err = GW_ERR_INIT;
    assert_false(gw_err_is_set(&err));
    assert_false(gw_err_is_set(NULL));
    assert_int_equal(gw_err_set(&err, gw_err_conflict, 409, "row %d of %s", 3, "t"), -1);
    assert_true(gw_err_is_set(&err));
    assert_ptr_equal(err.code, gw_err_conflict);
    assert_int_equal(err.status, 409);
    assert_string_equal(err.detail, "row 3 of t");
    /* a second set replaces all of it; no format means no detail; status 0 means 500 */
    assert_int_equal(gw_err_set(&err, gw_err_internal, 0, NULL), -1);
    assert_ptr_equal(err.code, gw_err_internal);
    assert_int_equal(err.status, 500);
    assert_string_equal(err.detail, "");
    gw_err_clear(&err);
    assert_false(gw_err_is_set(&err));
    assert_int_equal(err.status, 0);
    assert_string_equal(err.detail, "");
    gw_err_clear(NULL);
}

static void test_set_truncates_long_details(void **state)
{
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    gw_err_t err;
    memset(&err, 'z', sizeof(err)); /* no terminator anywhere before */
    assert_int_equal(gw_err_set(&err, gw_err_internal, 500, "%s!", big), -1);
    assert_int_equal(strlen(err.detail), sizeof(err.detail) - 1);
    assert_int_equal(strspn(err.detail, "x"), sizeof(err.detail) - 1);
}

static void test_set_tolerates_null(void **state)
{
    assert_int_equal(gw_err_set(NULL, gw_err_internal, 500, "nobody %s", "listens"), -1);
    assert_int_equal(gw_err_set(NULL, NULL, 0, NULL), -1);
}

static void test_titles_are_found_by_pointer(void **state)
{
    assert_string_equal(gw_err_title(gw_err_not_found), "No such resource");
    assert_string_equal(gw_err_title(cn_err_signature_mismatch), "Signature does not match");
    for (size_t i = 0; i != gw_err_ncodes; ++i)
        assert_ptr_equal(gw_err_title(gw_err_codes[i].code), gw_err_codes[i].title);
    /* the same text at another address is not the code */
    char copy[32];
    snprintf(copy, sizeof(copy), "%s", gw_err_not_found);
    assert_string_equal(gw_err_title(copy), "Error");
    assert_string_equal(gw_err_title(NULL), "Error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_are_unique_and_lower_snake_case),
        cmocka_unit_test(test_every_declared_code_is_in_the_table),
        cmocka_unit_test(test_docs_list_every_code_and_no_other),
        cmocka_unit_test(test_set_fills_the_error),
        cmocka_unit_test(test_set_truncates_long_details),
        cmocka_unit_test(test_set_tolerates_null),
        cmocka_unit_test(test_titles_are_found_by_pointer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
