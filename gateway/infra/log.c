/* SPDX-License-Identifier: MIT */
/* log.c: structured JSON log lines for operators, cheap enough for one line per request. */
#include "log.h"
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum gw_log_level gw_log_min_level = GW_LOG_INFO;

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t (*gw_log_clock)(void) = monotonic_ms;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static char instance[GW_LOG_INSTANCE_MAX + 1];

void gw_log_set_instance(const char *id)
{
    char buf[96];
    if (id == NULL || id[0] == '\0') {
        char host[64] = "unknown";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        snprintf(buf, sizeof(buf), "%s:%d", host, (int)getpid());
        id = buf;
    }
    size_t n = 0;
    for (; id[n] != '\0' && n != GW_LOG_INSTANCE_MAX; ++n) {
        char c = id[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                  c == ':' || c == '-';
        instance[n] = ok ? c : '_';
    }
    instance[n] = '\0';
}

const char *gw_log_instance(void)
{
    return instance;
}

static void append_raw(gw_logline_t *line, const char *s, size_t n)
{
    /* keep 3 bytes for the closing "}\n" */
    if (line->len + n > sizeof(line->buf) - 3)
        n = line->len < sizeof(line->buf) - 3 ? sizeof(line->buf) - 3 - line->len : 0;
    memcpy(line->buf + line->len, s, n);
    line->len += n;
}

static void append_escaped(gw_logline_t *line, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i != n; ++i) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            append_raw(line, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            esc[0] = '\\', esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            append_raw(line, esc, 6);
        } else {
            append_raw(line, (const char *)&c, 1);
        }
    }
}

void gw_log_begin(gw_logline_t *line, enum gw_log_level level, const char *msg)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    line->level = level;
    line->len = (size_t)snprintf(line->buf, sizeof(line->buf),
                                 "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"level\":\"%s\",\"msg\":\"",
                                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                                 (int)(tv.tv_usec / 1000), level_names[level]);
    append_escaped(line, msg, strlen(msg));
    append_raw(line, "\"", 1);
    if (instance[0] != '\0') {
        append_raw(line, ",\"instance\":\"", 13);
        append_raw(line, instance, strlen(instance));
        append_raw(line, "\"", 1);
    }
}

void gw_log_str(gw_logline_t *line, const char *key, const char *value, size_t len)
{
    if (value == NULL)
        return;
    append_raw(line, ",\"", 2);
    append_raw(line, key, strlen(key));
    append_raw(line, "\":\"", 3);
    append_escaped(line, value, len);
    append_raw(line, "\"", 1);
}

void gw_log_int(gw_logline_t *line, const char *key, long long value)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%lld", value);
    append_raw(line, ",\"", 2);
    append_raw(line, key, strlen(key));
    append_raw(line, "\":", 2);
    append_raw(line, num, (size_t)n);
}

void gw_log_bool(gw_logline_t *line, const char *key, bool value)
{
    append_raw(line, ",\"", 2);
    append_raw(line, key, strlen(key));
    append_raw(line, value ? "\":true" : "\":false", value ? 6 : 7);
}

void gw_log_ms(gw_logline_t *line, const char *key, double ms)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%.3f", ms);
    append_raw(line, ",\"", 2);
    append_raw(line, key, strlen(key));
    append_raw(line, "\":", 2);
    append_raw(line, num, (size_t)n);
}

void gw_log_end(gw_logline_t *line)
{
    line->buf[line->len++] = '}';
    line->buf[line->len++] = '\n';
    const char *p = line->buf;
    size_t left = line->len;
    while (left != 0) {
        ssize_t w = write(STDERR_FILENO, p, left);
        if (w <= 0)
            break; /* nowhere to report a failing log */
        p += w, left -= (size_t)w;
    }
}

void gw_log_message(enum gw_log_level level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gw_logline_t line;
    gw_log_begin(&line, level, msg);
    gw_log_end(&line);
}

char *gw_log_one_line(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    for (const char *p = src != NULL ? src : ""; *p != '\0' && n + 1 < cap; ++p) {
        if (*p != '\n' && *p != '\t' && *p != '\r')
            dst[n++] = *p;
        else if (n != 0 && dst[n - 1] != ' ')
            dst[n++] = ' ';
    }
    while (n != 0 && dst[n - 1] == ' ')
        --n;
    if (cap != 0)
        dst[n] = '\0';
    return dst;
}

/* Rate-limited messages */

/* Writes the summary of lim's repeats over elapsed ms; the caller holds lim->lock. */
static void write_summary(gw_log_limit_t *lim, uint64_t elapsed_ms)
{
    char msg[700];
    unsigned long long secs = (elapsed_ms + 500) / 1000;
    snprintf(msg, sizeof(msg), "%s (repeated %llu time%s in the last %llu s)", lim->last, lim->repeats,
             lim->repeats == 1 ? "" : "s", secs);
    gw_logline_t line;
    gw_log_begin(&line, lim->level, msg);
    gw_log_int(&line, "repeated", (long long)lim->repeats);
    gw_log_int(&line, "window_ms", (long long)elapsed_ms);
    gw_log_end(&line);
}

void gw_log_limited_message(gw_log_limit_t *lim, const char *fmt, ...)
{
    char msg[sizeof(lim->last)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uint64_t now = gw_log_clock();
    bool write = false;
    pthread_mutex_lock(&lim->lock);
    if (!lim->active || (now - lim->since_ms >= lim->period_ms && lim->repeats == 0)) {
        /* the first, or the first after a quiet period: written as it is */
        lim->active = true;
        lim->since_ms = now;
        lim->repeats = 0;
        write = true;
    } else {
        memcpy(lim->last, msg, sizeof(msg));
        ++lim->repeats;
        if (now - lim->since_ms >= lim->period_ms) {
            write_summary(lim, now - lim->since_ms);
            lim->since_ms = now;
            lim->repeats = 0;
        }
    }
    pthread_mutex_unlock(&lim->lock);
    if (write)
        gw_log_message(lim->level, "%s", msg);
}

void gw_log_limit_settle(gw_log_limit_t *lim)
{
    pthread_mutex_lock(&lim->lock);
    if (lim->active && lim->repeats != 0)
        write_summary(lim, gw_log_clock() - lim->since_ms);
    lim->active = false;
    lim->repeats = 0;
    pthread_mutex_unlock(&lim->lock);
}
