/* SPDX-License-Identifier: MIT */
/*
 * resolve.c: getaddrinfo on threads of its own, for the event loops, which must never block on DNS.
 *
 * A lookup is one detached thread that resolves every name of its resolver and hands the answer back through
 * the resolver's h2o cross-thread queue. Lookups are rare (a connect, a reconnect after a failure), so a thread
 * each costs nothing that matters, and a lookup that hangs for as long as the resolver library's timeouts
 * holds up no other work: nothing waits for it but the connections that need its answer. getaddrinfo cannot be
 * cancelled, so a resolver destroyed while its lookup runs abandons it: under one process-wide mutex the lookup
 * either has already sent its answer (then the message is taken back and the lookup freed here) or learns that
 * nobody wants it and frees itself.
 */
#include "resolve.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "log.h"
#include "mem.h"

#define MAX_ADDRS_PER_NAME 16

typedef struct st_lookup_t {
    /* under lookup_mutex */
    gw_resolver_t *owner; /* NULL once the resolver is gone: the thread then frees the lookup */
    bool finished;        /* the answer is complete and the message sent */

    h2o_multithread_message_t message;
    char **names; /* copies: the resolver may go while the thread runs */
    size_t nnames;
    bool prefer_ipv4;
    uint64_t started_at;
    gw_resolved_addr_t *addrs;
    size_t naddrs;
    char (*errors)[160]; /* per name: why it did not resolve, or "" */
} lookup_t;

struct st_gw_resolver_t {
    h2o_evloop_t *loop;
    char *label;
    char **names;
    size_t nnames;
    bool prefer_ipv4;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t receiver;
    lookup_t *running;      /* the lookup in flight, or NULL */
    h2o_linklist_t waiting; /* gw_resolve_req_t waiting for an answer recent enough */
    bool have_answer;
    gw_resolved_t answer; /* the last one (its addrs owned) */
    char error[160];      /* answer.error points here */
};

static pthread_mutex_t lookup_mutex = PTHREAD_MUTEX_INITIALIZER;

/* The names that do not resolve, as "label\tname", so that each is logged once for the whole process (every loop
 * has resolvers of its own) until it resolves again. */
static pthread_mutex_t failing_mutex = PTHREAD_MUTEX_INITIALIZER;
static char **failing;
static size_t nfailing;

/* Records whether label's name resolves; returns true if that changed (then the caller logs it). */
static bool note_failing(const char *label, const char *name, bool fails)
{
    char key[512];
    snprintf(key, sizeof(key), "%s\t%s", label, name);
    bool changed = false;
    pthread_mutex_lock(&failing_mutex);
    size_t i = 0;
    while (i != nfailing && strcmp(failing[i], key) != 0)
        ++i;
    if (fails && i == nfailing) {
        failing = gw_xrealloc(failing, (nfailing + 1) * sizeof(*failing));
        failing[nfailing++] = gw_xstrdup(key);
        changed = true;
    } else if (!fails && i != nfailing) {
        free(failing[i]);
        failing[i] = failing[--nfailing];
        if (nfailing == 0) {
            free(failing);
            failing = NULL;
        }
        changed = true;
    }
    pthread_mutex_unlock(&failing_mutex);
    return changed;
}

bool gw_resolve_is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void add_addr(lookup_t *l, size_t name, const struct addrinfo *ai, size_t *count)
{
    char host[INET6_ADDRSTRLEN];
    const void *src = ai->ai_family == AF_INET ? (const void *)&((const struct sockaddr_in *)ai->ai_addr)->sin_addr
                                               : (const void *)&((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
    if (*count == MAX_ADDRS_PER_NAME || inet_ntop(ai->ai_family, src, host, sizeof(host)) == NULL)
        return;
    for (size_t i = l->naddrs - *count; i != l->naddrs; ++i)
        if (strcmp(l->addrs[i].host, host) == 0)
            return; /* the same address twice (another protocol or socket type) */
    gw_resolved_addr_t *a = &l->addrs[l->naddrs++];
    a->name = name;
    memcpy(a->host, host, strlen(host) + 1);
    ++*count;
}

/* On the lookup's thread: resolves every name into l->addrs and l->errors. */
static void run_lookup(lookup_t *l)
{
    l->addrs = gw_xcalloc(l->nnames * MAX_ADDRS_PER_NAME, sizeof(*l->addrs));
    for (size_t i = 0; i != l->nnames; ++i) {
        /* as libpq asks: any family, stream sockets */
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int rc = getaddrinfo(l->names[i], NULL, &hints, &res);
        if (rc != 0) {
            snprintf(l->errors[i], sizeof(l->errors[i]), "%s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
            continue;
        }
        size_t count = 0;
        for (int pass = 0; pass != 2; ++pass) {
            for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
                if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
                    continue;
                /* with prefer_ipv4: IPv4 in the first pass, IPv6 in the second; else all in the first */
                bool take = l->prefer_ipv4 ? (ai->ai_family == AF_INET) == (pass == 0) : pass == 0;
                if (take)
                    add_addr(l, i, ai, &count);
            }
        }
        freeaddrinfo(res);
        if (count == 0)
            snprintf(l->errors[i], sizeof(l->errors[i]), "no IPv4 or IPv6 address");
    }
}

static void lookup_free(lookup_t *l)
{
    for (size_t i = 0; i != l->nnames; ++i)
        free(l->names[i]);
    free(l->names);
    free(l->addrs);
    free(l->errors);
    free(l);
}

static void *lookup_main(void *arg)
{
    lookup_t *l = arg;
    run_lookup(l);
    pthread_mutex_lock(&lookup_mutex);
    gw_resolver_t *owner = l->owner;
    l->finished = true;
    if (owner != NULL)
        h2o_multithread_send_message(&owner->receiver, &l->message);
    pthread_mutex_unlock(&lookup_mutex);
    if (owner == NULL)
        lookup_free(l);
    return NULL;
}

static void start_lookup(gw_resolver_t *r)
{
    lookup_t *l = gw_xcalloc(1, sizeof(*l));
    l->owner = r;
    l->nnames = r->nnames;
    l->names = gw_xcalloc(r->nnames, sizeof(*l->names));
    for (size_t i = 0; i != r->nnames; ++i)
        l->names[i] = gw_xstrdup(r->names[i]);
    l->errors = gw_xcalloc(r->nnames, sizeof(*l->errors));
    l->prefer_ipv4 = r->prefer_ipv4;
    l->started_at = h2o_now(r->loop);
    r->running = l;

    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&tid, &attr, lookup_main, l);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        /* an answer all the same, delivered from the loop like any other (never from inside gw_resolve) */
        for (size_t i = 0; i != l->nnames; ++i)
            snprintf(l->errors[i], sizeof(l->errors[i]), "cannot start a resolver thread: %s", strerror(rc));
        pthread_mutex_lock(&lookup_mutex);
        l->finished = true;
        h2o_multithread_send_message(&r->receiver, &l->message);
        pthread_mutex_unlock(&lookup_mutex);
    }
}

/* On the loop: the lookup l of r has finished. Its answer replaces the last one and goes to every request it is
 * recent enough for; requests that need a newer one get a new lookup. */
static void on_lookup_done(gw_resolver_t *r, lookup_t *l)
{
    r->running = NULL;
    free(r->answer.addrs);
    r->answer = (gw_resolved_t){.started_at = l->started_at, .naddrs = l->naddrs, .addrs = l->addrs};
    l->addrs = NULL;
    r->have_answer = true;
    r->error[0] = '\0';
    for (size_t i = 0; i != l->nnames; ++i) {
        bool fails = l->errors[i][0] != '\0';
        if (fails && r->error[0] == '\0') {
            snprintf(r->error, sizeof(r->error), "cannot resolve %s: %s", l->names[i], l->errors[i]);
            r->answer.error = r->error;
        }
        if (!note_failing(r->label, l->names[i], fails))
            continue;
        if (fails)
            gw_log(GW_LOG_WARN, "%s: cannot resolve host %s: %s; its connections stay down and retry (logged once)",
                   r->label, l->names[i], l->errors[i]);
        else
            gw_log(GW_LOG_INFO, "%s: host %s resolves again", r->label, l->names[i]);
    }
    lookup_free(l);

    /* a callback may cancel or re-register any request, so take the ones to answer off the list first */
    h2o_linklist_t answered;
    h2o_linklist_init_anchor(&answered);
    for (h2o_linklist_t *p = r->waiting.next, *next; p != &r->waiting; p = next) {
        next = p->next;
        gw_resolve_req_t *req = H2O_STRUCT_FROM_MEMBER(gw_resolve_req_t, _link, p);
        if (r->answer.started_at >= req->_after) {
            h2o_linklist_unlink(&req->_link);
            h2o_linklist_insert(&answered, &req->_link);
        }
    }
    while (!h2o_linklist_is_empty(&answered)) {
        gw_resolve_req_t *req = H2O_STRUCT_FROM_MEMBER(gw_resolve_req_t, _link, answered.next);
        h2o_linklist_unlink(&req->_link);
        req->_cb(req, &r->answer);
    }
    if (!h2o_linklist_is_empty(&r->waiting) && r->running == NULL)
        start_lookup(r);
}

static void on_message(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    gw_resolver_t *r = H2O_STRUCT_FROM_MEMBER(gw_resolver_t, receiver, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        /* the thread is done with the lookup: it sent the message last, under the mutex */
        on_lookup_done(r, H2O_STRUCT_FROM_MEMBER(lookup_t, message, m));
    }
}

gw_resolver_t *gw_resolver_create(h2o_evloop_t *loop, const char *label, const char *const *names, size_t nnames,
                                  bool prefer_ipv4)
{
    gw_resolver_t *r = gw_xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->label = gw_xstrdup(label);
    r->nnames = nnames;
    r->names = gw_xcalloc(nnames != 0 ? nnames : 1, sizeof(*r->names));
    for (size_t i = 0; i != nnames; ++i)
        r->names[i] = gw_xstrdup(names[i]);
    r->prefer_ipv4 = prefer_ipv4;
    h2o_linklist_init_anchor(&r->waiting);
    r->queue = h2o_multithread_create_queue(loop);
    h2o_multithread_register_receiver(r->queue, &r->receiver, on_message);
    return r;
}

void gw_resolver_destroy(gw_resolver_t *r)
{
    if (r == NULL)
        return;
    lookup_t *done = NULL;
    pthread_mutex_lock(&lookup_mutex);
    if (r->running != NULL) {
        if (r->running->finished) {
            /* answered but not yet received: take the message back (no thread touches it any more, and the
             * receiving side is this thread) */
            if (h2o_linklist_is_linked(&r->running->message.link))
                h2o_linklist_unlink(&r->running->message.link);
            done = r->running;
        } else {
            r->running->owner = NULL; /* the thread frees it */
        }
        r->running = NULL;
    }
    pthread_mutex_unlock(&lookup_mutex);
    if (done != NULL)
        lookup_free(done);
    while (!h2o_linklist_is_empty(&r->waiting))
        h2o_linklist_unlink(r->waiting.next);
    h2o_multithread_unregister_receiver(r->queue, &r->receiver);
    h2o_multithread_destroy_queue(r->queue);
#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR <= 2
    free(r->queue); /* 2.2's destroy_queue closes the eventfd but forgets to free the queue itself */
#endif
    for (size_t i = 0; i != r->nnames; ++i)
        free(r->names[i]);
    free(r->names);
    free(r->answer.addrs);
    free(r->label);
    free(r);
}

const gw_resolved_t *gw_resolve(gw_resolver_t *r, uint64_t after, gw_resolve_req_t *req, gw_resolve_cb cb)
{
    gw_resolve_cancel(req);
    if (r->have_answer && r->answer.started_at >= after)
        return &r->answer;
    req->_after = after;
    req->_cb = cb;
    h2o_linklist_insert(&r->waiting, &req->_link);
    /* a lookup that is running but started too early answers the others; on_lookup_done then starts another */
    if (r->running == NULL)
        start_lookup(r);
    return NULL;
}

void gw_resolve_cancel(gw_resolve_req_t *req)
{
    if (h2o_linklist_is_linked(&req->_link))
        h2o_linklist_unlink(&req->_link);
}
