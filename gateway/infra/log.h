/* SPDX-License-Identifier: MIT */
/*
 * log.h: one JSON object a line on stderr, written with a single write(2) so lines from several
 * threads never interleave. The level is checked before any argument is evaluated. Bodies,
 * signatures, tokens and secrets are never passed here.
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_log_level { GW_LOG_DEBUG = 0, GW_LOG_INFO, GW_LOG_WARN, GW_LOG_ERROR };

extern enum gw_log_level gw_log_min_level;

/* A line being built; fields are appended in order and the whole is written by gw_log_end. */
typedef struct st_gw_logline_t {
    char buf[4096];
    size_t len;
    int level;
} gw_logline_t;

#define gw_log_enabled(level) ((level) >= gw_log_min_level)

/* Logs a printf-formatted message with no extra fields. */
#define gw_log(level, ...)                                                                                             \
    do {                                                                                                               \
        if (gw_log_enabled(level))                                                                                     \
            gw_log_message(level, __VA_ARGS__);                                                                        \
    } while (0)

void gw_log_message(enum gw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies src into dst (cap bytes) as one line: newlines and tabs become single spaces, trailing spaces go. For
 * libpq's and Redis's multi-line messages. Returns dst. */
char *gw_log_one_line(char *dst, size_t cap, const char *src);

/* Names this process in every line ("instance"): id when it is not NULL or empty, else host:pid. Characters other
 * than A-Z a-z 0-9 . _ : - become '_', and at most GW_LOG_INSTANCE_MAX of them are kept. Call once, before any
 * thread starts. */
#define GW_LOG_INSTANCE_MAX 64
void gw_log_set_instance(const char *id);
/* The instance id (NUL-terminated, only the characters above); "" before gw_log_set_instance. */
const char *gw_log_instance(void);

/* Starts a line with time, level, the instance id and msg. */
void gw_log_begin(gw_logline_t *line, enum gw_log_level level, const char *msg);
/* Appends "key":"value" (value JSON-escaped; len bytes, not NUL-terminated). A NULL value is skipped. */
void gw_log_str(gw_logline_t *line, const char *key, const char *value, size_t len);
/* Appends "key":<integer>. */
void gw_log_int(gw_logline_t *line, const char *key, long long value);
/* Appends "key":true or "key":false. */
void gw_log_bool(gw_logline_t *line, const char *key, bool value);
/* Appends "key":<number with 3 decimals> (a duration in milliseconds, never money). */
void gw_log_ms(gw_logline_t *line, const char *key, double ms);
/* Closes the object and writes the line. */
void gw_log_end(gw_logline_t *line);

/*
 * A warning that repeats (a worker that cannot claim while the database is down, every second) is written once,
 * then summarised once per period: "<the last message> (repeated N times in the last 60 s)". A limiter is shared
 * by every thread that can repeat the warning (it has its own lock); define one per repeating site:
 *
 *     static gw_log_limit_t claim_failed = GW_LOG_LIMIT_INIT(GW_LOG_WARN, 60000);
 *     gw_log_limited(&claim_failed, "worker %d: cannot claim: %s", i, why);   (on every failure)
 *     gw_log_limit_settle(&claim_failed);                                     (once it works again)
 */
typedef struct st_gw_log_limit_t {
    enum gw_log_level level;
    uint64_t period_ms;
    pthread_mutex_t lock;
    bool active;                /* a message was written and its period is running */
    uint64_t since_ms;          /* when the period started (gw_log_clock) */
    unsigned long long repeats; /* messages not written since then */
    char last[512];             /* the last of them, for the summary */
} gw_log_limit_t;

#define GW_LOG_LIMIT_INIT(lvl, period)                                                                                 \
    {                                                                                                                  \
        .level = (lvl), .period_ms = (period), .lock = PTHREAD_MUTEX_INITIALIZER                                       \
    }

/* The monotonic clock of the limiters, in milliseconds; tests replace it. */
extern uint64_t (*gw_log_clock)(void);

/* Writes the message if it is the first since the limiter was settled (or the period passed without a repeat);
 * otherwise counts it, and writes the summary of the repeats once a period has passed. Arguments are evaluated
 * only when the level is enabled. */
#define gw_log_limited(lim, ...)                                                                                       \
    do {                                                                                                               \
        if (gw_log_enabled((lim)->level))                                                                              \
            gw_log_limited_message(lim, __VA_ARGS__);                                                                  \
    } while (0)
void gw_log_limited_message(gw_log_limit_t *lim, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The condition is over: writes the summary of any repeats not yet reported, so the next occurrence is written at
 * once. Cheap when there is nothing to report. */
void gw_log_limit_settle(gw_log_limit_t *lim);

#endif
