/* SPDX-License-Identifier: MIT */
/*
 * money.h: exact money. Amounts are int64_t counts of a currency's ISO 4217 minor unit (pence, yen, fils), never
 * floating point. The exponent comes from a table of the active ISO 4217 codes (JPY 0, GBP 2, KWD 3, CLF 4), never
 * an assumed 2; a provider whose API counts in a different unit for a currency (Stripe's ISK and MGA) is converted
 * at the edge, exactly or not at all.
 */
#ifndef GW_MONEY_H
#define GW_MONEY_H

#include <stddef.h>
#include <stdint.h>

/* The ISO 4217 exponent of an upper- or lower-case three-letter code, or -1 for a code not in the table. */
int gw_currency_exponent(const char *code);

/* Writes the upper-case form of a three-letter code into out[4]. Returns 0, or -1 if code is not three letters. */
int gw_currency_normalise(const char *code, char out[4]);

/*
 * Parses a decimal in major units ("1234.5", "-0.25", "100", as Xero and jsonb print them) into minor units of
 * exponent e. Returns 0; -1 if the text is not a plain decimal (sign, digits, at most one '.', digits) or the value
 * does not fit int64_t; -2 if it has non-zero digits beyond the exponent ("10.005" GBP): money that cannot be
 * represented is refused, never rounded.
 */
int gw_money_parse(const char *text, size_t len, int exponent, int64_t *out);

/* Formats minor units of exponent e as a decimal in major units ("-12.30", "500", "1.005") into buf. Returns the
 * length written, or -1 if it does not fit. */
int gw_money_format(int64_t minor, int exponent, char *buf, size_t size);

/* Which API counted an amount. */
typedef enum en_gw_money_source_t {
    GW_MONEY_ISO,    /* already ISO minor units (GoCardless, settled itself) */
    GW_MONEY_STRIPE, /* Stripe's "smallest currency unit", which differs from ISO for ISK and MGA */
} gw_money_source_t;

/*
 * Converts an amount counted by source in currency into ISO minor units. Returns 0; -1 for an unknown currency;
 * -2 when the conversion is not exact (a Stripe ISK amount that is not a multiple of 100) or overflows.
 */
int gw_money_to_iso(gw_money_source_t source, const char *currency, int64_t amount, int64_t *iso_minor);

#endif
