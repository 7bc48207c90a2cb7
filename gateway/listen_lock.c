/* SPDX-License-Identifier: MIT */
/*
 * listen_lock.c: the address lock of serve (listen_lock.h). The holder keeps a listening abstract unix socket and
 * a thread that answers each connection with one line, its group (empty when it has none). A member of the holder's
 * group that joined without the lock tries to take it every LOCK_RETRY_MS, so after a handover the new process
 * holds it again within a second.
 */
/* struct ucred and accept4 need _GNU_SOURCE, which the build defines */
#include "listen_lock.h"
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "log.h"
#include "mem.h"

#define LOCK_POLL_MS 200
#define LOCK_RETRY_MS 1000
#define LOCK_GROUP_MAX 128
#define LOCK_CONNECT_TRIES 20 /* a holder between bind and listen refuses connections for a moment */

struct st_gw_listen_lock_t {
    struct sockaddr_un name;
    socklen_t name_len;
    char shown[300]; /* the address, for logs */
    char group[LOCK_GROUP_MAX + 1];
    int fd; /* the listening lock socket; -1 while a member waits to take it over */
    atomic_bool stop;
    pthread_t tid;
};

/* Binds and listens on the lock's name; returns the socket, or -1 with errno (EADDRINUSE: someone holds it). */
static int try_take(const gw_listen_lock_t *lock)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (const struct sockaddr *)&lock->name, lock->name_len) != 0 || listen(fd, 16) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Asks the holder for its group and pid. Returns 0, or -1 if nobody answered (the lock was just released). */
static int ask_holder(const gw_listen_lock_t *lock, char *group, size_t cap, int *pid)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (const struct sockaddr *)&lock->name, lock->name_len) != 0) {
        close(fd);
        return -1;
    }
    struct ucred cred = {0};
    socklen_t clen = sizeof(cred);
    *pid = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 ? (int)cred.pid : 0;
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, group + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        if (memchr(group, '\n', n) != NULL || n == cap - 1)
            break;
    }
    close(fd);
    group[n] = '\0';
    char *nl = strchr(group, '\n');
    if (nl == NULL)
        return -1; /* no full answer: it went away meanwhile */
    *nl = '\0';
    return 0;
}

/* The lock's thread: answers the holder's group, or keeps trying to take the lock over. */
static void *lock_main(void *arg)
{
    gw_listen_lock_t *lock = arg;
    while (!atomic_load(&lock->stop)) {
        if (lock->fd < 0) {
            if ((lock->fd = try_take(lock)) >= 0)
                gw_log(GW_LOG_INFO, "SETTLED_LISTEN %s: this process now holds the address lock (group %s)",
                       lock->shown, lock->group);
            else
                usleep(LOCK_RETRY_MS * 1000);
            continue;
        }
        struct pollfd p = {.fd = lock->fd, .events = POLLIN};
        if (poll(&p, 1, LOCK_POLL_MS) <= 0)
            continue;
        int c = accept4(lock->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        char line[LOCK_GROUP_MAX + 2];
        int n = snprintf(line, sizeof(line), "%s\n", lock->group);
        ssize_t w = write(c, line, (size_t)n);
        (void)w; /* a peer that went away asked for nothing */
        close(c);
    }
    return NULL;
}

/* Whether something (that is not in this process) listens on addr: a bind without SO_REUSEPORT fails then. */
static bool address_in_use(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0)
        return false;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)); /* connections in TIME_WAIT do not count */
    bool used = bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno == EADDRINUSE;
    close(fd);
    return used;
}

gw_listen_lock_t *gw_listen_lock_acquire(const gw_config_t *cfg)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res = NULL;
    char port[8], host[NI_MAXHOST];
    snprintf(port, sizeof(port), "%u", cfg->listen_port);
    int rc = getaddrinfo(cfg->listen_host, port, &hints, &res);
    if (rc != 0) {
        gw_log(GW_LOG_ERROR, "SETTLED_LISTEN: cannot resolve %s: %s", cfg->listen_host, gai_strerror(rc));
        return NULL;
    }
    if (getnameinfo(res->ai_addr, res->ai_addrlen, host, sizeof(host), NULL, 0, NI_NUMERICHOST) != 0)
        snprintf(host, sizeof(host), "%s", cfg->listen_host);

    gw_listen_lock_t *lock = gw_xcalloc(1, sizeof(*lock));
    lock->fd = -1;
    snprintf(lock->shown, sizeof(lock->shown), strchr(host, ':') != NULL ? "[%s]:%s" : "%s:%s", host, port);
    const char *group = cfg->reuseport_group != NULL ? cfg->reuseport_group : "";
    snprintf(lock->group, sizeof(lock->group), "%s", group);
    lock->name.sun_family = AF_UNIX;
    /* sun_path[0] = '\0': the abstract namespace; the name is the bytes after it, not NUL-terminated */
    int n = snprintf(lock->name.sun_path + 1, sizeof(lock->name.sun_path) - 1, "settled-listen:%s", lock->shown);
    if (n < 0 || (size_t)n >= sizeof(lock->name.sun_path) - 1)
        n = (int)sizeof(lock->name.sun_path) - 2;
    lock->name_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);

    bool joined = false;
    for (int tries = 0; lock->fd < 0 && !joined; ++tries) {
        if ((lock->fd = try_take(lock)) >= 0)
            break;
        if (errno != EADDRINUSE) {
            gw_log(GW_LOG_ERROR, "SETTLED_LISTEN %s: cannot take the address lock: %s", lock->shown, strerror(errno));
            goto fail;
        }
        char holder[LOCK_GROUP_MAX + 2];
        int pid = 0;
        if (ask_holder(lock, holder, sizeof(holder), &pid) != 0) {
            if (tries == LOCK_CONNECT_TRIES) {
                gw_log(GW_LOG_ERROR, "SETTLED_LISTEN %s: the address lock is held but its holder does not answer",
                       lock->shown);
                goto fail;
            }
            usleep(50 * 1000);
            continue;
        }
        if (group[0] == '\0' || strcmp(holder, group) != 0) {
            if (holder[0] != '\0')
                gw_log(GW_LOG_ERROR,
                       "SETTLED_LISTEN %s: already served by settled process %d (SETTLED_REUSEPORT_GROUP=%s); refusing "
                       "to share it%s%s%s",
                       lock->shown, pid, holder, group[0] != '\0' ? " with group " : "", group,
                       group[0] != '\0' ? "" : " without that group");
            else
                gw_log(GW_LOG_ERROR,
                       "SETTLED_LISTEN %s: already served by settled process %d; refusing to share it (stop that "
                       "process first, or start both with the same SETTLED_REUSEPORT_GROUP for a handover)",
                       lock->shown, pid);
            goto fail;
        }
        joined = true;
        gw_log(GW_LOG_INFO, "SETTLED_LISTEN %s: sharing the address with settled process %d (group %s)", lock->shown,
               pid, group);
    }
    if (!joined && address_in_use(res)) {
        /* we hold the lock, yet something listens: a process that is no settled, or one of a group that lost its
         * holder a moment ago (it takes the lock back within LOCK_RETRY_MS); share only with a group */
        if (group[0] == '\0') {
            gw_log(GW_LOG_ERROR,
                   "SETTLED_LISTEN %s: the address is already in use by another process; refusing to share it",
                   lock->shown);
            goto fail;
        }
    }
    freeaddrinfo(res);
    res = NULL;
    if (pthread_create(&lock->tid, NULL, lock_main, lock) != 0) {
        gw_log(GW_LOG_ERROR, "cannot start the address lock's thread: %s", strerror(errno));
        abort();
    }
    return lock;

fail:
    if (lock->fd >= 0)
        close(lock->fd);
    free(lock);
    if (res != NULL)
        freeaddrinfo(res);
    return NULL;
}

void gw_listen_lock_release(gw_listen_lock_t *lock)
{
    if (lock == NULL)
        return;
    atomic_store(&lock->stop, true);
    pthread_join(lock->tid, NULL);
    if (lock->fd >= 0)
        close(lock->fd);
    free(lock);
}
