/* SPDX-License-Identifier: MIT */
/*
 * retry_schedule.h: the retry schedule of failed events (SETTLED_RETRY_SCHEDULE), a comma-separated list of waits
 * such as "0s,10s,1m,5m,30m,2h,5h,10h,10h". An event is attempted once when it is due, and once more after each
 * wait of the list, counted from the failure before it; when the attempt after the last wait fails too, the event
 * is dead. Parsed once, at start, by the settings table; pure (no I/O, no allocation).
 */
#ifndef GW_RETRY_SCHEDULE_H
#define GW_RETRY_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

/* The most waits a schedule may list (so at most GW_RETRY_SCHEDULE_MAX + 1 attempts). */
#define GW_RETRY_SCHEDULE_MAX 32
/* The longest single wait: 7 days. */
#define GW_RETRY_WAIT_MAX_MS (7LL * 24 * 3600 * 1000)

typedef struct st_gw_retry_schedule_t {
    size_t n;                          /* waits; 0: a failed event is dead at its first failure */
    int64_t ms[GW_RETRY_SCHEDULE_MAX]; /* ms[i]: the wait after the failure of attempt i + 1 */
} gw_retry_schedule_t;

/* Parses text: waits separated by commas (spaces around them allowed), each a whole number followed by a unit of
 * ms, s, m, h or d (e.g. "500ms", "10s", "2h"), or the single word "none" for no retries at all. Returns 0 with
 * *out filled, or -1 with one line saying what is wrong (which wait, and why) in err. */
int gw_retry_schedule_parse(const char *text, gw_retry_schedule_t *out, char *err, size_t errlen);

/* Writes the schedule in its canonical form (each wait in its largest whole unit, e.g. "0s,10s,1m,2h") into buf;
 * "none" for an empty one. Returns buf. */
char *gw_retry_schedule_format(const gw_retry_schedule_t *s, char *buf, size_t cap);

/* Writes the waits in milliseconds as a PostgreSQL bigint[] literal ("{0,10000,60000}"; "{}" for none) into buf,
 * as the outbox functions take them (p_waits). Returns buf. */
char *gw_retry_schedule_pg_array(const gw_retry_schedule_t *s, char *buf, size_t cap);

/* The sum of every wait: the least time from the first failure to the event going dead, before jitter. */
int64_t gw_retry_schedule_span_ms(const gw_retry_schedule_t *s);

#endif
