/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/domain/terms.c: every row of fixtures/terms_cases.csv through gw_terms_due_date (the same rows
 * go through the SQL terms_due_date in tests/integration/test_sql_terms.py, so the two cannot drift), every row of
 * fixtures/terms_zone_cases.csv through gw_date_at_offset, the date round trip over four centuries, and parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "terms.h"

/* Splits line (modified) at commas into at most n fields; returns how many. */
static int split(char *line, char **fields, int n)
{
    int k = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line; k < n;) {
        fields[k++] = p;
        char *c = strchr(p, ',');
        if (c == NULL)
            break;
        *c = '\0';
        p = c + 1;
    }
    return k;
}

/* Calls row(fields, line number) for each data row of fixtures/<name> (no '#' comment, not the header); returns
 * the number of rows. */
static int each_row(const char *name, int nfields, void (*row)(char **fields, int lineno))
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/fixtures/%s", SETTLED_SOURCE_DIR, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    char line[512];
    int lineno = 0, rows = 0;
    int header = 1;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        if (line[0] == '#')
            continue;
        if (header) {
            header = 0;
            continue;
        }
        char *fields[8];
        if (split(line, fields, 8) != nfields)
            fail_msg("%s:%d: not %d fields", name, lineno, nfields);
        row(fields, lineno);
        rows++;
    }
    fclose(f);
    return rows;
}

static int refused_rows;

static void due_row(char **f, int lineno)
{
    gw_terms_type_t type;
    gw_date_t invoice, due = {0, 0, 0};
    assert_int_equal(gw_terms_type_parse(f[0], &type), 0);
    assert_int_equal(gw_date_parse(f[2], &invoice), 0);
    int rc = gw_terms_due_date(type, atoi(f[1]), invoice, &due);
    if (f[3][0] == '\0') {
        if (rc != -1)
            fail_msg("terms_cases.csv:%d (%s): %s %s from %s should be refused", lineno, f[4], f[0], f[1], f[2]);
        refused_rows++;
        return;
    }
    char got[11];
    gw_date_format(due, got);
    if (rc != 0 || strcmp(got, f[3]) != 0)
        fail_msg("terms_cases.csv:%d (%s): %s %s from %s: got %s (rc %d), want %s", lineno, f[4], f[0], f[1], f[2],
                 rc == 0 ? got : "-", rc, f[3]);
}

static void test_due_dates_table(void **state)
{
    (void)state;
    refused_rows = 0;
    int rows = each_row("terms_cases.csv", 5, due_row);
    assert_true(rows >= 30);
    assert_true(refused_rows >= 5);
}

/* "2026-12-04T05:00:00Z" into seconds since the epoch, through the date functions under test's neighbours. */
static int64_t instant(const char *text)
{
    char date[11];
    memcpy(date, text, 10);
    date[10] = '\0';
    gw_date_t d;
    assert_int_equal(gw_date_parse(date, &d), 0);
    assert_int_equal((int)strlen(text), 20);
    int h = atoi(text + 11), m = atoi(text + 14), s = atoi(text + 17);
    return gw_date_to_days(d) * 86400 + h * 3600 + m * 60 + s;
}

static void zone_row(char **f, int lineno)
{
    char got[11];
    gw_date_format(gw_date_at_offset(instant(f[0]), atoi(f[2])), got);
    if (strcmp(got, f[3]) != 0)
        fail_msg("terms_zone_cases.csv:%d (%s): %s at %s: got %s, want %s", lineno, f[4], f[0], f[2], got, f[3]);
}

static void test_zone_table(void **state)
{
    (void)state;
    assert_true(each_row("terms_zone_cases.csv", 5, zone_row) >= 10);
}

static void test_days_round_trip(void **state)
{
    (void)state;
    gw_date_t epoch = {1970, 1, 1};
    assert_int_equal(gw_date_to_days(epoch), 0);
    gw_date_t d = {1900, 1, 1};
    int64_t first = gw_date_to_days(d);
    for (int64_t n = first; n < first + 146097 * 2; n++) {
        gw_date_t x = gw_date_from_days(n);
        assert_true(x.day >= 1 && x.day <= gw_date_month_days(x.year, x.month));
        if (gw_date_to_days(x) != n)
            fail_msg("day %lld does not round-trip", (long long)n);
        gw_date_t next = gw_date_from_days(n + 1);
        if (!(next.day == x.day + 1 || (next.day == 1 && x.day == gw_date_month_days(x.year, x.month))))
            fail_msg("day %lld is not followed by the next day", (long long)n);
    }
}

static void test_parse(void **state)
{
    (void)state;
    gw_date_t d;
    assert_int_equal(gw_date_parse("2024-02-29", &d), 0);
    assert_int_equal(d.year, 2024);
    assert_int_equal(d.month, 2);
    assert_int_equal(d.day, 29);
    assert_int_equal(gw_date_parse("2025-02-29", &d), -1);
    assert_int_equal(gw_date_parse("1900-02-29", &d), -1);
    assert_int_equal(gw_date_parse("2000-02-29", &d), 0);
    assert_int_equal(gw_date_parse("2026-04-31", &d), -1);
    assert_int_equal(gw_date_parse("2026-13-01", &d), -1);
    assert_int_equal(gw_date_parse("2026-1-01", &d), -1);
    assert_int_equal(gw_date_parse("2026-01-01T", &d), -1);
    assert_int_equal(gw_date_parse(NULL, &d), -1);
    gw_terms_type_t t;
    assert_int_equal(gw_terms_type_parse("OFFOLLOWINGMONTH", &t), 0);
    assert_int_equal(t, GW_TERMS_OFFOLLOWINGMONTH);
    assert_int_equal(gw_terms_type_parse("offollowingmonth", &t), -1);
    assert_int_equal(gw_terms_type_parse(NULL, &t), -1);
    gw_date_t bad = {2026, 2, 30}, out;
    assert_int_equal(gw_terms_due_date(GW_TERMS_DAYSAFTERBILLDATE, 1, bad, &out), -1);
    gw_date_t late = {9999, 12, 31};
    assert_int_equal(gw_terms_due_date(GW_TERMS_OFFOLLOWINGMONTH, 1, late, &out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_due_dates_table),
        cmocka_unit_test(test_zone_table),
        cmocka_unit_test(test_days_round_trip),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
