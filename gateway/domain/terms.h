/* SPDX-License-Identifier: MIT */
/*
 * terms.h: payment terms and due dates, pure arithmetic on civil dates (proleptic Gregorian, no time zone). The
 * same rule is in SQL (schema/functions/terms.sql, terms_due_date); both are checked against one table of cases,
 * fixtures/terms_cases.csv (tests/unit/domain/terms.c and tests/integration/test_sql_terms.py).
 */
#ifndef GW_DOMAIN_TERMS_H
#define GW_DOMAIN_TERMS_H

#include <stdint.h>

typedef struct st_gw_date_t {
    int year;  /* 1..9999 */
    int month; /* 1..12 */
    int day;   /* 1..the month's length */
} gw_date_t;

/* Xero's PaymentTermType. */
typedef enum en_gw_terms_type_t {
    GW_TERMS_DAYSAFTERBILLDATE,
    GW_TERMS_DAYSAFTERBILLMONTH,
    GW_TERMS_OFCURRENTMONTH,
    GW_TERMS_OFFOLLOWINGMONTH,
} gw_terms_type_t;

/* Xero's name of a term type ("DAYSAFTERBILLDATE"...) into *out. Returns 0, or -1 for any other text. */
int gw_terms_type_parse(const char *name, gw_terms_type_t *out);

/* The number of days of a month (28..31), or 0 for a month outside 1..12. */
int gw_date_month_days(int year, int month);

/* Parses "YYYY-MM-DD" (exactly) into *out. Returns 0, or -1 if it is not a valid date. */
int gw_date_parse(const char *text, gw_date_t *out);

/* Writes "YYYY-MM-DD" into out[11]. */
void gw_date_format(gw_date_t date, char out[11]);

/* Days since 1970-01-01 of a valid date, and back. */
int64_t gw_date_to_days(gw_date_t date);
gw_date_t gw_date_from_days(int64_t days);

/*
 * The due date of an invoice dated invoice_date under terms (type, day), into *out. Returns 0, or -1 when day is
 * out of range for the type (1..31 for the two "of month" types, 0..365 for the two "days after" types, as
 * payment_terms' CHECK says) or invoice_date is not a valid date. The rule (docs/collections.md "Due dates"):
 *   DAYSAFTERBILLDATE   invoice date + day days
 *   DAYSAFTERBILLMONTH  the last day of the invoice's month + day days
 *   OFCURRENTMONTH      day `day` of the invoice's month, even when that is before the invoice date
 *   OFFOLLOWINGMONTH    day `day` of the month after the invoice's month
 * with a day past the month's end clamped to the month's last day.
 */
int gw_terms_due_date(gw_terms_type_t type, int day, gw_date_t invoice_date, gw_date_t *out);

/*
 * The civil date of the instant unix_seconds at a UTC offset of offset_seconds (east positive), e.g. the
 * organisation's "today". The offset is the zone's at that instant, which settled asks PostgreSQL for
 * (organisation_utc_offset in schema/functions/terms.sql): the C library's zone conversion (setenv TZ, tzset,
 * localtime_r) changes process-wide state and is not safe while other threads run.
 */
gw_date_t gw_date_at_offset(int64_t unix_seconds, int32_t offset_seconds);

#endif
