/* SPDX-License-Identifier: MIT */
/*
 * terms.c: Xero's four payment-term types as due-date arithmetic (terms.h).
 *
 * Sources: Xero's API (accounting.yaml, schema PaymentTerm/Bill: Day "Day of Month (0-31)", Type one of
 * PaymentTermType) and help.xero.com "Set up due dates (payment terms)" (the labels "day(s) after the bill date",
 * "day(s) after the end of the invoice month", "of the current month", "of the following month"); see
 * /work/shared/providers/PROVIDERS.md 2.7. Xero publishes no worked example of month-end clamping nor of
 * "of the current month" with a day already past: this file clamps a day past the month's end to the month's last
 * day (Xero's date picker never yields an invalid date, and "the 31st" of a 30-day month is read as its last day)
 * and keeps an OFCURRENTMONTH day before the invoice date as it is (the plain reading of the label: the invoice is
 * due on that day of its own month and is overdue at once). Both readings are unverified against Xero; an invoice
 * mirrored from Xero always uses Xero's own DueDate (invoice_due_dates in schema/functions/terms.sql), so these
 * rules only decide the dates of invoices without one.
 */
#include "terms.h"
#include <string.h>

static const char *const type_names[] = {"DAYSAFTERBILLDATE", "DAYSAFTERBILLMONTH", "OFCURRENTMONTH",
                                         "OFFOLLOWINGMONTH"};

int gw_terms_type_parse(const char *name, gw_terms_type_t *out)
{
    for (size_t i = 0; name != NULL && i < sizeof(type_names) / sizeof(type_names[0]); i++) {
        if (strcmp(name, type_names[i]) == 0) {
            *out = (gw_terms_type_t)i;
            return 0;
        }
    }
    return -1;
}

static int is_leap(int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

int gw_date_month_days(int year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month < 1 || month > 12)
        return 0;
    return month == 2 && is_leap(year) ? 29 : days[month - 1];
}

static int valid(gw_date_t d)
{
    return d.year >= 1 && d.year <= 9999 && d.day >= 1 && d.day <= gw_date_month_days(d.year, d.month);
}

int gw_date_parse(const char *text, gw_date_t *out)
{
    if (text == NULL || strlen(text) != 10 || text[4] != '-' || text[7] != '-')
        return -1;
    int v[3] = {0, 0, 0};
    static const int start[3] = {0, 5, 8}, len[3] = {4, 2, 2};
    for (int f = 0; f < 3; f++) {
        for (int i = 0; i < len[f]; i++) {
            char c = text[start[f] + i];
            if (c < '0' || c > '9')
                return -1;
            v[f] = v[f] * 10 + (c - '0');
        }
    }
    gw_date_t d = {v[0], v[1], v[2]};
    if (!valid(d))
        return -1;
    *out = d;
    return 0;
}

void gw_date_format(gw_date_t date, char out[11])
{
    unsigned y = (unsigned)date.year % 10000u, m = (unsigned)date.month % 100u, d = (unsigned)date.day % 100u;
    out[0] = (char)('0' + y / 1000);
    out[1] = (char)('0' + y / 100 % 10);
    out[2] = (char)('0' + y / 10 % 10);
    out[3] = (char)('0' + y % 10);
    out[4] = '-';
    out[5] = (char)('0' + m / 10);
    out[6] = (char)('0' + m % 10);
    out[7] = '-';
    out[8] = (char)('0' + d / 10);
    out[9] = (char)('0' + d % 10);
    out[10] = '\0';
}

/* Howard Hinnant's days_from_civil and civil_from_days (public domain), for the proleptic Gregorian calendar. */
int64_t gw_date_to_days(gw_date_t date)
{
    int64_t y = date.year - (date.month <= 2);
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t mp = (date.month + 9) % 12;
    int64_t doy = (153 * mp + 2) / 5 + date.day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

gw_date_t gw_date_from_days(int64_t days)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    return (gw_date_t){(int)(yoe + era * 400 + (m <= 2)), (int)m, (int)d};
}

static gw_date_t clamped(int year, int month, int day)
{
    int last = gw_date_month_days(year, month);
    return (gw_date_t){year, month, day > last ? last : day};
}

int gw_terms_due_date(gw_terms_type_t type, int day, gw_date_t invoice_date, gw_date_t *out)
{
    if (!valid(invoice_date))
        return -1;
    gw_date_t due;
    switch (type) {
    case GW_TERMS_DAYSAFTERBILLDATE:
    case GW_TERMS_DAYSAFTERBILLMONTH:
        if (day < 0 || day > 365)
            return -1;
        {
            gw_date_t from = invoice_date;
            if (type == GW_TERMS_DAYSAFTERBILLMONTH)
                from.day = gw_date_month_days(from.year, from.month);
            due = gw_date_from_days(gw_date_to_days(from) + day);
        }
        break;
    case GW_TERMS_OFCURRENTMONTH:
        if (day < 1 || day > 31)
            return -1;
        due = clamped(invoice_date.year, invoice_date.month, day);
        break;
    case GW_TERMS_OFFOLLOWINGMONTH:
        if (day < 1 || day > 31)
            return -1;
        due = invoice_date.month == 12 ? clamped(invoice_date.year + 1, 1, day)
                                       : clamped(invoice_date.year, invoice_date.month + 1, day);
        break;
    default:
        return -1;
    }
    if (!valid(due))
        return -1;
    *out = due;
    return 0;
}

gw_date_t gw_date_at_offset(int64_t unix_seconds, int32_t offset_seconds)
{
    int64_t local = unix_seconds + offset_seconds;
    int64_t days = local / 86400;
    if (local % 86400 < 0)
        days--;
    return gw_date_from_days(days);
}
