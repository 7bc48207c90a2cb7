/* SPDX-License-Identifier: MIT */
/* money.c: ISO 4217 exponents, exact decimal parsing and formatting, and providers' units (see money.h). */
#include "money.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The active ISO 4217 codes (SIX's list 1), by exponent. Codes with no minor unit (gold, SDR, testing) are left out,
 * so an amount in them is refused rather than guessed. */
static const char exp0[] = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF";
static const char exp2[] = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
                           "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR "
                           "FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW "
                           "KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN "
                           "NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD "
                           "SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU "
                           "UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL";
static const char exp3[] = "BHD IQD JOD KWD LYD OMR TND";
static const char exp4[] = "CLF UYW";

int gw_currency_normalise(const char *code, char out[4])
{
    if (code == NULL)
        return -1;
    for (int i = 0; i != 3; ++i) {
        char c = code[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (c < 'A' || c > 'Z')
            return -1;
        out[i] = c;
    }
    if (code[3] != '\0')
        return -1;
    out[3] = '\0';
    return 0;
}

static bool listed(const char *list, const char *code)
{
    for (const char *p = list;; p += 4) { /* "AAA BBB CCC": a code every 4 bytes, the last one before the NUL */
        if (memcmp(p, code, 3) == 0)
            return true;
        if (p[3] == '\0')
            return false;
    }
}

int gw_currency_exponent(const char *code)
{
    char c[4];
    if (gw_currency_normalise(code, c) != 0)
        return -1;
    if (listed(exp2, c))
        return 2;
    if (listed(exp0, c))
        return 0;
    if (listed(exp3, c))
        return 3;
    if (listed(exp4, c))
        return 4;
    return -1;
}

int gw_money_parse(const char *text, size_t len, int exponent, int64_t *out)
{
    if (text == NULL || len == 0 || exponent < 0 || exponent > 18)
        return -1;
    size_t i = 0;
    bool negative = false;
    if (text[0] == '-' || text[0] == '+') {
        negative = text[0] == '-';
        ++i;
    }
    /* the magnitude is accumulated as a negative number, so that INT64_MIN fits */
    int64_t v = 0;
    int frac = -1; /* digits seen after '.', -1 before it */
    bool digits = false, excess = false;
    for (; i != len; ++i) {
        char c = text[i];
        if (c == '.') {
            if (frac >= 0)
                return -1;
            frac = 0;
            continue;
        }
        if (c < '0' || c > '9')
            return -1;
        digits = true;
        if (frac >= 0 && frac == exponent) {
            excess |= c != '0'; /* beyond the minor unit: only zeros may follow */
            continue;
        }
        if (v < (INT64_MIN + (c - '0')) / 10)
            return -1;
        v = v * 10 - (c - '0');
        if (frac >= 0)
            ++frac;
    }
    if (!digits || (frac == 0 && text[len - 1] == '.'))
        return -1;
    if (excess)
        return -2;
    for (int k = frac < 0 ? 0 : frac; k != exponent; ++k) {
        if (v < INT64_MIN / 10)
            return -1;
        v *= 10;
    }
    if (!negative) {
        if (v == INT64_MIN)
            return -1;
        v = -v;
    }
    *out = v;
    return 0;
}

int gw_money_format(int64_t minor, int exponent, char *buf, size_t size)
{
    if (exponent < 0 || exponent > 18 || size == 0)
        return -1;
    /* magnitude as unsigned, so INT64_MIN prints too */
    uint64_t mag = minor < 0 ? (uint64_t)0 - (uint64_t)minor : (uint64_t)minor;
    char digits[24];
    int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)mag);
    char tmp[48], *p = tmp;
    if (minor < 0)
        *p++ = '-';
    if (n <= exponent) {
        *p++ = '0';
        *p++ = '.';
        for (int k = n; k != exponent; ++k)
            *p++ = '0';
        memcpy(p, digits, (size_t)n);
        p += n;
    } else {
        memcpy(p, digits, (size_t)(n - exponent));
        p += n - exponent;
        if (exponent != 0) {
            *p++ = '.';
            memcpy(p, digits + n - exponent, (size_t)exponent);
            p += exponent;
        }
    }
    size_t len = (size_t)(p - tmp);
    if (len + 1 > size)
        return -1;
    memcpy(buf, tmp, len);
    buf[len] = '\0';
    return (int)len;
}

int gw_money_to_iso(gw_money_source_t source, const char *currency, int64_t amount, int64_t *iso_minor)
{
    char c[4];
    if (gw_currency_normalise(currency, c) != 0 || gw_currency_exponent(c) < 0)
        return -1;
    if (source == GW_MONEY_STRIPE) {
        /* Stripe counts ISK in hundredths (ISO: whole krónur; only multiples of 100 are accepted since 2023) and
         * MGA in whole ariary (ISO: 2 decimals); every other currency in its ISO minor unit (PROVIDERS.md 1.12) */
        if (strcmp(c, "ISK") == 0) {
            if (amount % 100 != 0)
                return -2;
            *iso_minor = amount / 100;
            return 0;
        }
        if (strcmp(c, "MGA") == 0) {
            if (amount > INT64_MAX / 100 || amount < INT64_MIN / 100)
                return -2;
            *iso_minor = amount * 100;
            return 0;
        }
    }
    *iso_minor = amount;
    return 0;
}
