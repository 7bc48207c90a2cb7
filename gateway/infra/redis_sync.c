/* SPDX-License-Identifier: MIT */
/*
 * redis_sync.c: the blocking half of the Redis module. hiredis' blocking context is given a connect timeout
 * (redisConnectWithTimeout) and a command timeout (redisSetTimeout: SO_RCVTIMEO/SO_SNDTIMEO on the socket),
 * so no call waits longer than those; any I/O failure closes the context, and the next call reconnects at
 * most once a second. Scripts go by EVALSHA with the SHA1 learnt from SCRIPT LOAD (the crypto module has
 * no SHA1 and OpenSSL belongs there), and by EVAL when Redis has forgotten them.
 */
#include "redis_sync.h"
#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include "redis.h"
#include "mem.h"

#define RECONNECT_INTERVAL_MS 1000
#define SCRIPT_CACHE_SIZE 8

const char gw_redis_sync_err_down[] = "redis is down (reconnecting at most once a second)";
const char gw_redis_sync_err_connect[] = "cannot connect to redis";
const char gw_redis_sync_err_timeout[] = "redis did not answer in time";
const char gw_redis_sync_err_io[] = "redis connection broke";
const char gw_redis_sync_err_reply[] = "redis answered with an error";
const char gw_redis_sync_err_type[] = "unexpected redis reply";

struct st_gw_redis_sync_t {
    char *host, *password;
    int port, db;
    int connect_timeout_ms, command_timeout_ms;
    redisContext *c;
    bool failed;        /* the last connection attempt or command failed for want of Redis */
    uint64_t failed_at; /* when, in monotonic milliseconds */
    struct {
        char *source;
        char sha[41];
    } scripts[SCRIPT_CACHE_SIZE];
    size_t next_script;
    char errmsg[200];
    gw_redis_sync_stats_t stats;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct timeval to_timeval(int ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

static void set_error(gw_redis_sync_t *r, const char *what, const char *detail)
{
    snprintf(r->errmsg, sizeof(r->errmsg), "redis %s:%d: %s%s%s", r->host, r->port, what, detail != NULL ? ": " : "",
             detail != NULL ? detail : "");
}

static void close_failed(gw_redis_sync_t *r)
{
    if (r->c != NULL) {
        redisFree(r->c);
        r->c = NULL;
    }
    r->failed = true;
    r->failed_at = now_ms();
}

/* Runs a command on a fresh context during connect; 0 if the reply is not an error. */
static int setup_command(gw_redis_sync_t *r, redisContext *c, const char *what, int argc, const char **argv)
{
    redisReply *rep = redisCommandArgv(c, argc, argv, NULL);
    if (rep == NULL) {
        set_error(r, what, c->errstr);
        return -1;
    }
    int ok = rep->type != REDIS_REPLY_ERROR;
    if (!ok)
        set_error(r, what, rep->str); /* AUTH errors name no password */
    freeReplyObject(rep);
    return ok ? 0 : -1;
}

static int do_connect(gw_redis_sync_t *r, const char **err)
{
    int ret = -1;
    redisContext *c = redisConnectWithTimeout(r->host, r->port, to_timeval(r->connect_timeout_ms));
    if (c == NULL)
        abort(); /* hiredis returns NULL only when out of memory */
    if (c->err) {
        set_error(r, "connect", c->errstr);
        goto Exit;
    }
    if (redisSetTimeout(c, to_timeval(r->command_timeout_ms)) != REDIS_OK) {
        set_error(r, "setting the command timeout", c->errstr);
        goto Exit;
    }
    (void)redisEnableKeepAlive(c); /* best effort: finds a peer that vanished while idle */
    if (r->password != NULL && setup_command(r, c, "AUTH", 2, (const char *[]){"AUTH", r->password}) != 0)
        goto Exit;
    if (r->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", r->db);
        if (setup_command(r, c, "SELECT", 2, (const char *[]){"SELECT", db}) != 0)
            goto Exit;
    }
    r->c = c;
    r->failed = false;
    ++r->stats.connects;
    ret = 0;
Exit:
    if (ret != 0) {
        redisFree(c);
        ++r->stats.connect_failures;
        close_failed(r);
        if (err != NULL)
            *err = gw_redis_sync_err_connect;
    }
    return ret;
}

/*
 * Sends argv and returns the reply (the caller frees it; an error reply is returned too), or NULL with
 * *err set when Redis could not be reached.
 */
static redisReply *run(gw_redis_sync_t *r, int argc, const char **argv, const size_t *argvlen, const char **err)
{
    bool reused = r->c != NULL;
    if (r->c == NULL) {
        if (r->failed && now_ms() - r->failed_at < RECONNECT_INTERVAL_MS) {
            set_error(r, "down", "reconnecting at most once a second");
            *err = gw_redis_sync_err_down;
            return NULL;
        }
        if (do_connect(r, err) != 0)
            return NULL;
    }
    for (;;) {
        redisReply *rep = redisCommandArgv(r->c, argc, argv, argvlen);
        if (rep != NULL)
            return rep;
        int saved_errno = errno, kind = r->c->err;
        set_error(r, "command", r->c->errstr);
        close_failed(r);
        if (kind == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT)) {
            ++r->stats.timeouts;
            *err = gw_redis_sync_err_timeout;
            return NULL;
        }
        bool stale =
            kind == REDIS_ERR_EOF || (kind == REDIS_ERR_IO && (saved_errno == ECONNRESET || saved_errno == EPIPE));
        *err = gw_redis_sync_err_io;
        if (!reused || !stale)
            return NULL;
        /* the server closed the idle connection (restart, idle timeout): one more try on a new one */
        reused = false;
        if (do_connect(r, err) != 0)
            return NULL;
    }
}

gw_redis_sync_t *gw_redis_sync_create(const char *url, int connect_timeout_ms, int command_timeout_ms)
{
    if (url == NULL || connect_timeout_ms <= 0 || command_timeout_ms <= 0)
        return NULL;
    gw_redis_sync_t *r = gw_xmalloc(sizeof(*r));
    *r = (gw_redis_sync_t){.connect_timeout_ms = connect_timeout_ms, .command_timeout_ms = command_timeout_ms};
    if (gw_redis_parse_url(url, &r->host, &r->port, &r->password, &r->db) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

void gw_redis_sync_destroy(gw_redis_sync_t *r)
{
    if (r == NULL)
        return;
    if (r->c != NULL)
        redisFree(r->c);
    for (size_t i = 0; i != SCRIPT_CACHE_SIZE; ++i)
        free(r->scripts[i].source);
    free(r->host);
    free(r->password);
    free(r);
}

int gw_redis_sync_command(gw_redis_sync_t *r, size_t argc, const char *const *argv, long long *out, const char **err)
{
    const char *dummy;
    if (err == NULL)
        err = &dummy;
    r->errmsg[0] = '\0';
    redisReply *rep = run(r, (int)argc, (const char **)argv, NULL, err);
    if (rep == NULL)
        return -1;
    int ret = 0;
    switch (rep->type) {
    case REDIS_REPLY_INTEGER:
        *out = rep->integer;
        break;
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_NIL:
        *out = 0;
        break;
    case REDIS_REPLY_ERROR:
        set_error(r, "error reply", rep->str);
        *err = gw_redis_sync_err_reply;
        ret = -1;
        break;
    default:
        set_error(r, "reply", "not an integer, a status or nil");
        *err = gw_redis_sync_err_type;
        ret = -1;
        break;
    }
    freeReplyObject(rep);
    return ret;
}

/* The SHA1 of source as this connection learnt it, or NULL (then *slot is where to learn it). */
static char *find_sha(gw_redis_sync_t *r, const char *source, size_t *slot)
{
    for (size_t i = 0; i != SCRIPT_CACHE_SIZE; ++i)
        if (r->scripts[i].source != NULL && strcmp(r->scripts[i].source, source) == 0)
            return r->scripts[i].sha;
    *slot = r->next_script;
    r->next_script = (r->next_script + 1) % SCRIPT_CACHE_SIZE;
    return NULL;
}

static const char *learn_sha(gw_redis_sync_t *r, const char *source, const char **err)
{
    size_t slot;
    char *sha = find_sha(r, source, &slot);
    if (sha != NULL)
        return sha;
    redisReply *rep = run(r, 3, (const char *[]){"SCRIPT", "LOAD", source}, NULL, err);
    if (rep == NULL)
        return NULL;
    if (rep->type == REDIS_REPLY_ERROR) {
        set_error(r, "SCRIPT LOAD", rep->str);
        *err = gw_redis_sync_err_reply;
    } else if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
        set_error(r, "SCRIPT LOAD", "the reply is not a SHA1");
        *err = gw_redis_sync_err_type;
    } else {
        free(r->scripts[slot].source);
        r->scripts[slot].source = gw_xstrdup(source);
        memcpy(r->scripts[slot].sha, rep->str, 40);
        r->scripts[slot].sha[40] = '\0';
        sha = r->scripts[slot].sha;
    }
    freeReplyObject(rep);
    return sha;
}

/* Copies an integer reply, an array of at most cap integers or nil into out[0..*n). Returns 0, or -1 (with *n = 0)
 * for any other reply. */
static int reply_integers(const redisReply *rep, long long *out, size_t cap, size_t *n)
{
    *n = 0;
    switch (rep->type) {
    case REDIS_REPLY_NIL:
        return 0;
    case REDIS_REPLY_INTEGER:
        if (cap < 1)
            return -1;
        out[0] = rep->integer;
        *n = 1;
        return 0;
    case REDIS_REPLY_ARRAY:
        if (rep->elements > cap)
            return -1;
        for (size_t i = 0; i != rep->elements; ++i) {
            if (rep->element[i]->type != REDIS_REPLY_INTEGER)
                return -1;
            out[i] = rep->element[i]->integer;
        }
        *n = rep->elements;
        return 0;
    default:
        return -1;
    }
}

int gw_redis_sync_eval(gw_redis_sync_t *r, const char *source, size_t nkeys, const char *const *keys, size_t nargs,
                       const char *const *args, long long *out, size_t cap, size_t *n, const char **err)
{
    const char *dummy;
    if (err == NULL)
        err = &dummy;
    r->errmsg[0] = '\0';
    *n = 0;
    const char *sha = learn_sha(r, source, err);
    if (sha == NULL)
        return -1;
    size_t argc = 3 + nkeys + nargs;
    const char **argv = gw_xmalloc(argc * sizeof(*argv));
    char numkeys[24];
    snprintf(numkeys, sizeof(numkeys), "%zu", nkeys);
    argv[0] = "EVALSHA";
    argv[1] = sha;
    argv[2] = numkeys;
    for (size_t i = 0; i != nkeys; ++i)
        argv[3 + i] = keys[i];
    for (size_t i = 0; i != nargs; ++i)
        argv[3 + nkeys + i] = args[i];

    int ret = -1;
    ++r->stats.evalsha;
    redisReply *rep = run(r, (int)argc, argv, NULL, err);
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(rep);
        ++r->stats.noscript;
        ++r->stats.eval;
        argv[0] = "EVAL";
        argv[1] = source;
        rep = run(r, (int)argc, argv, NULL, err);
    }
    if (rep == NULL)
        goto Exit;
    if (rep->type == REDIS_REPLY_ERROR) {
        set_error(r, "script", rep->str);
        *err = gw_redis_sync_err_reply;
        goto Exit;
    }
    if (reply_integers(rep, out, cap, n) != 0) {
        set_error(r, "script reply", "not an integer, an array of at most cap integers or nil");
        *err = gw_redis_sync_err_type;
        goto Exit;
    }
    ret = 0;
Exit:
    if (rep != NULL)
        freeReplyObject(rep);
    free(argv);
    return ret;
}

bool gw_redis_sync_err_is_unavailable(const char *err)
{
    return err == gw_redis_sync_err_down || err == gw_redis_sync_err_connect || err == gw_redis_sync_err_timeout ||
           err == gw_redis_sync_err_io;
}

bool gw_redis_sync_is_connected(const gw_redis_sync_t *r)
{
    return r->c != NULL;
}

const char *gw_redis_sync_last_error(const gw_redis_sync_t *r)
{
    return r->errmsg;
}

void gw_redis_sync_get_stats(const gw_redis_sync_t *r, gw_redis_sync_stats_t *out)
{
    *out = r->stats;
}
