/* SPDX-License-Identifier: MIT */
/* retry_schedule.c: parsing and printing SETTLED_RETRY_SCHEDULE, so that a typo in it fails at start, naming the
 * wait that is wrong, rather than turning into a schedule nobody meant. */
#include "retry_schedule.h"
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int64_t ms;
} units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
#define NUNITS (sizeof(units) / sizeof(units[0]))

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Parses the len bytes of one wait at p into *ms. Returns 0, or -1 with why in err. */
static int parse_wait(const char *p, size_t len, size_t index, int64_t *ms, char *err, size_t errlen)
{
    size_t i = 0;
    int64_t v = 0;
    if (len == 0) {
        snprintf(err, errlen, "wait %zu is empty (separate waits with single commas, e.g. 0s,10s,1m)", index);
        return -1;
    }
    while (i != len && p[i] >= '0' && p[i] <= '9') {
        if (v > GW_RETRY_WAIT_MAX_MS) /* already too long: stop before it can overflow */
            break;
        v = v * 10 + (p[i] - '0');
        ++i;
    }
    if (i == 0) {
        snprintf(err, errlen, "wait %zu (\"%.*s\") must start with a whole number, e.g. 30s", index,
                 (int)(len > 32 ? 32 : len), p);
        return -1;
    }
    while (i != len && p[i] >= '0' && p[i] <= '9')
        ++i;
    for (size_t u = 0; u != NUNITS; ++u) {
        if (len - i == strlen(units[u].name) && memcmp(p + i, units[u].name, len - i) == 0) {
            if (v > GW_RETRY_WAIT_MAX_MS / units[u].ms) {
                snprintf(err, errlen, "wait %zu (\"%.*s\") is longer than 7 days", index, (int)(len > 32 ? 32 : len),
                         p);
                return -1;
            }
            *ms = v * units[u].ms;
            return 0;
        }
    }
    snprintf(err, errlen, "wait %zu (\"%.*s\") needs a unit: ms, s, m, h or d (e.g. 10s, 5m, 2h)", index,
             (int)(len > 32 ? 32 : len), p);
    return -1;
}

int gw_retry_schedule_parse(const char *text, gw_retry_schedule_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const char *p = text;
    while (is_space(*p))
        ++p;
    size_t len = strlen(p);
    while (len != 0 && is_space(p[len - 1]))
        --len;
    if (len == 0) {
        snprintf(err, errlen, "must list at least one wait (e.g. 0s,10s,1m,5m), or be \"none\" for no retries");
        return -1;
    }
    if (len == 4 && memcmp(p, "none", 4) == 0)
        return 0;
    const char *end = p + len;
    for (size_t index = 1;; ++index) {
        const char *comma = memchr(p, ',', (size_t)(end - p)), *stop = comma != NULL ? comma : end;
        const char *a = p, *b = stop;
        while (a != b && is_space(*a))
            ++a;
        while (b != a && is_space(b[-1]))
            --b;
        if (out->n == GW_RETRY_SCHEDULE_MAX) {
            snprintf(err, errlen, "lists more than %d waits", GW_RETRY_SCHEDULE_MAX);
            return -1;
        }
        if (parse_wait(a, (size_t)(b - a), index, &out->ms[out->n], err, errlen) != 0)
            return -1;
        ++out->n;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

char *gw_retry_schedule_format(const gw_retry_schedule_t *s, char *buf, size_t cap)
{
    size_t len = 0;
    if (cap == 0)
        return buf;
    buf[0] = '\0';
    if (s->n == 0) {
        snprintf(buf, cap, "none");
        return buf;
    }
    for (size_t i = 0; i != s->n && len < cap; ++i) {
        size_t u = NUNITS;
        while (u-- > 1 && s->ms[i] % units[u].ms != 0)
            ;
        if (s->ms[i] == 0)
            u = 1; /* "0s" reads better than "0d" */
        int n = snprintf(buf + len, cap - len, "%s%lld%s", i != 0 ? "," : "", (long long)(s->ms[i] / units[u].ms),
                         units[u].name);
        if (n < 0)
            break;
        len += (size_t)n;
    }
    return buf;
}

int64_t gw_retry_schedule_span_ms(const gw_retry_schedule_t *s)
{
    int64_t sum = 0;
    for (size_t i = 0; i != s->n; ++i)
        sum += s->ms[i];
    return sum;
}

char *gw_retry_schedule_pg_array(const gw_retry_schedule_t *s, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "{");
    for (size_t i = 0; i != s->n && len < cap; ++i)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i != 0 ? "," : "", (long long)s->ms[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "}");
    return buf;
}
