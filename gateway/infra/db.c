/* SPDX-License-Identifier: MIT */
/*
 * db.c: the per-loop PostgreSQL pool. Each connection is a small state machine:
 *
 *   DISCONNECTED --(backoff elapsed)--> CONNECTING --(PQconnectPoll OK)--> PREPARING --(Sync)--> IDLE
 *   IDLE --(jobs queued)--> BUSY --(PGRES_PIPELINE_SYNC)--> IDLE
 *   any --(socket error, libpq error, commit timeout)--> DISCONNECTED (in-flight jobs fail: no 2xx given)
 *
 * A batch is N PQsendQueryPrepared + one PQpipelineSync, so it commits or rolls back as a whole. When one
 * job's statement fails, the whole batch rolls back; the failing job reports the error and every other
 * job of the batch is queued again to run alone, so one bad job never fails its neighbours.
 */
#include "db.h"
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "mem.h"
#include "resolve.h"

#define TICK_MS 25 /* also how early a deadline is enforced */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef struct st_gw_db_conn_t gw_db_conn_t;

struct st_gw_db_job_t {
    h2o_linklist_t _link;
    const gw_db_statement_t *stmt;
    int nparams;
    const char **values;
    int *lengths;
    int *formats;
    gw_db_job_cb cb;
    gw_db_rows_cb rows_cb; /* instead of cb: a read, whose result rows are kept for it */
    PGresult *result;      /* a read's result, until the job finishes */
    void *data;
    uint64_t deadline; /* when the job's caller must have its answer: submitted + SETTLED_DB_COMMIT_TIMEOUT_MS */
    bool isolate;      /* run alone: it was in a batch that another job made fail, or whose COMMIT failed */
    bool failed;       /* this job's own statement failed */
    size_t group;      /* 1: sent alone; n > 1: the first of n jobs merged into one statement; 0: one of its others */
    uint64_t rows;
    char error[200];
};

struct st_gw_db_conn_t {
    gw_db_t *db;
    int index;
    PGconn *pg;
    int pqfd; /* libpq's descriptor, of which sock holds a duplicate */
    h2o_socket_t *sock;
    enum gw_db_conn_state state;
    bool reading, write_armed;
    h2o_linklist_t batch; /* jobs in flight, in send order */
    size_t batch_size;
    h2o_linklist_t *awaiting; /* the job whose results come next */
    bool want_null;           /* a job's result arrived; its terminating NULL has not */
    bool batch_failed;
    bool commit_failed;      /* an error arrived after the batch's last statement: the COMMIT at its Sync failed */
    char commit_error[200];  /* ... and why */
    uint64_t batch_deadline; /* the earliest deadline of the jobs in flight */
    uint64_t since;          /* when the current state (or batch) started */
    uint64_t retry_at;
    unsigned failures;
    gw_resolve_req_t resolve; /* CONNECTING, waiting for the addresses of the URL's host names */
    bool unresolved;          /* failing for want of an address: resolve.c logs that, once */
};

/* The merged variant of a mergeable statement, prepared as <name>_m. */
#define MERGE_PARAMS_MAX 16 /* parameters of one job of a mergeable statement */
typedef struct st_merged_t {
    const gw_db_statement_t *stmt;
    char *name;
} merged_t;

/* One host of the URL (libpq accepts a list: host=a,b port=5432,5433). */
typedef struct st_gw_db_host_t {
    char *host; /* as the URL gives it ("" for libpq's default socket) */
    char *port; /* this host's own port when the URL gives one per host, else NULL */
    int name;   /* its index among the resolver's names, or -1: numeric or a socket, given to libpq as it is */
} gw_db_host_t;

/* Where the pool connects, parsed from the URL once. Without a resolver (no host names: numeric hosts, sockets,
 * hostaddr= given, or a URL libpq will refuse) the URL goes to libpq as it is. */
typedef struct st_gw_db_target_t {
    bool parsed;
    gw_db_host_t *hosts;
    size_t nhosts;
    gw_resolver_t *resolver;
} gw_db_target_t;

struct st_gw_db_t {
    h2o_evloop_t *loop;
    const gw_config_t *cfg;
    gw_db_target_t target; /* the URL's hosts */
    const gw_db_statement_t *const *stmts;
    size_t nstmts;
    merged_t *merged; /* one per mergeable statement */
    size_t nmerged;
    gw_db_conn_t *conns;
    size_t nconns;
    h2o_linklist_t queue;
    size_t queued, inflight;
    h2o_timeout_t zero_timeout, tick_timeout;
    h2o_timeout_entry_t flush_entry, tick_entry;
};

static void on_conn_io(h2o_socket_t *sock, const char *err);
static void on_conn_writable(h2o_socket_t *sock, const char *err);
static void dispatch(gw_db_t *db);
static bool may_queue(const gw_db_t *db);

static void set_state(gw_db_conn_t *c, enum gw_db_conn_state state)
{
    gw_metrics_db_state(c->state, state);
    c->state = state;
    c->since = h2o_now(c->db->loop);
}

static void finish_job(gw_db_t *db, gw_db_job_t *job, const char *error)
{
    if (job->cb != NULL)
        job->cb(job->data, error, job->rows);
    if (job->rows_cb != NULL)
        job->rows_cb(job->data, error, error == NULL ? (const gw_db_rows_t *)job->result : NULL);
    if (job->result != NULL)
        PQclear(job->result);
    free(job);
}

/* The loop watches its own duplicate of libpq's socket, so either side may close its descriptor first: libpq
 * drops a failed connection's socket by itself, and exporting a descriptor it already closed would ask epoll
 * about a dead fd. Closing the duplicate never touches libpq's. */
static void release_socket(gw_db_conn_t *c)
{
    if (c->sock == NULL)
        return;
    if (c->write_armed)
        c->sock->_cb.write = NULL; /* h2o 2.2 cannot disarm notify_write */
    h2o_socket_close(c->sock);
    c->sock = NULL;
    c->pqfd = -1;
    c->reading = c->write_armed = false;
}

static int attach_socket(gw_db_conn_t *c)
{
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return -1;
    if (c->sock != NULL && c->pqfd == fd)
        return 0;
    release_socket(c); /* libpq may switch sockets while connecting */
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return -1;
    c->sock = h2o_evloop_socket_create(c->db->loop, own, H2O_SOCKET_FLAG_DONT_READ);
    c->sock->data = c;
    c->pqfd = fd;
    return 0;
}

/* Server notices and warnings (e.g. "terminating connection due to administrator command") go to the log. */
static void on_notice(void *arg, const char *message)
{
    gw_db_conn_t *c = arg;
    char msg[256];
    gw_log(GW_LOG_WARN, "database connection %d: %s", c->index, gw_log_one_line(msg, sizeof(msg), message));
}

static void want_read(gw_db_conn_t *c)
{
    if (!c->reading) {
        h2o_socket_read_start(c->sock, on_conn_io);
        c->reading = true;
    }
}

static void want_write(gw_db_conn_t *c)
{
    if (!c->write_armed) {
        c->write_armed = true;
        h2o_socket_notify_write(c->sock, on_conn_writable);
    }
}

/* Fails every job in flight on c (their transaction's fate is unknown or rolled back: no 2xx for them). */
static void fail_batch(gw_db_conn_t *c, const char *error)
{
    gw_db_t *db = c->db;
    while (!h2o_linklist_is_empty(&c->batch)) {
        gw_db_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, c->batch.next);
        h2o_linklist_unlink(&job->_link);
        --db->inflight;
        finish_job(db, job, error);
    }
    c->batch_size = 0;
    c->awaiting = NULL;
}

static void disconnect(gw_db_conn_t *c, const char *why)
{
    gw_db_t *db = c->db;
    if (!c->unresolved && (c->state != GW_DB_CONNECTING || c->failures == 0)) {
        char msg[256];
        gw_log(GW_LOG_WARN, "database connection %d lost: %s", c->index, gw_log_one_line(msg, sizeof(msg), why));
    }
    fail_batch(c, "database connection lost");
    release_socket(c);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    uint64_t backoff = (uint64_t)BACKOFF_MIN_MS << (c->failures < 6 ? c->failures : 6);
    if (backoff > BACKOFF_MAX_MS)
        backoff = BACKOFF_MAX_MS;
    ++c->failures;
    set_state(c, GW_DB_DISCONNECTED);
    c->retry_at = h2o_now(db->loop) + backoff;
}

static const char *pq_error(gw_db_conn_t *c)
{
    const char *msg = c->pg != NULL ? PQerrorMessage(c->pg) : "no connection";
    return msg != NULL && *msg != '\0' ? msg : "unknown error";
}

/* Sends bytes libpq has buffered; arms a write notification if the socket is full. */
static int flush_out(gw_db_conn_t *c)
{
    int r = PQflush(c->pg);
    if (r < 0)
        return -1;
    if (r == 1)
        want_write(c);
    return 0;
}

/*
 * Connecting. libpq resolves a host name inside PQconnectStartParams, synchronously, so the URL's host names never
 * reach it: CONNECTING first waits for their addresses from resolve.c (a lookup on a thread; a reconnect after a
 * failure asks for a lookup started since the failure, so a name that moved is followed), then gives libpq
 * hostaddr= with host= kept for TLS, .pgpass and PQhost. A name that does not resolve leaves the connection
 * DISCONNECTED, as a server that is down, and the one log line is resolve.c's.
 */

/* Splits the comma-separated list s (libpq's syntax for host and port lists) into a malloc'd array of copies. */
static char **split_list(const char *s, size_t *n)
{
    *n = 1;
    for (const char *p = s; *p != '\0'; ++p)
        *n += *p == ',';
    char **items = gw_xcalloc(*n, sizeof(*items));
    for (size_t i = 0; i != *n; ++i) {
        const char *end = strchr(s, ',');
        size_t len = end != NULL ? (size_t)(end - s) : strlen(s);
        items[i] = gw_xstrndup(s, len);
        s += len + 1;
    }
    return items;
}

static void free_list(char **items, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        free(items[i]);
    free(items);
}

/* Parses the URL's hosts (as libpq would: the URL, else PGHOST) and makes a resolver for the names among them. */
static void parse_target(gw_db_t *db)
{
    gw_db_target_t *t = &db->target;
    t->parsed = true;
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(db->cfg->database_url, &msg);
    if (opts == NULL) {
        PQfreemem(msg); /* libpq refuses the URL again when connecting, and says why then */
        return;
    }
    const char *host = NULL, *hostaddr = NULL, *port = NULL;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; ++o) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
    }
    if (host == NULL)
        host = getenv("PGHOST");
    if (hostaddr == NULL)
        hostaddr = getenv("PGHOSTADDR");
    if (port == NULL)
        port = getenv("PGPORT");
    /* nothing to resolve: libpq's default socket, or the addresses are given */
    if (host == NULL || host[0] == '\0' || (hostaddr != NULL && hostaddr[0] != '\0')) {
        PQconninfoFree(opts);
        return;
    }
    size_t nports = 0;
    char **hosts = split_list(host, &t->nhosts), **ports = port != NULL ? split_list(port, &nports) : NULL;
    const char **names = gw_xcalloc(t->nhosts, sizeof(*names));
    size_t nnames = 0;
    t->hosts = gw_xcalloc(t->nhosts, sizeof(*t->hosts));
    for (size_t i = 0; i != t->nhosts; ++i) {
        gw_db_host_t *h = &t->hosts[i];
        h->host = hosts[i];
        h->port = nports > 1 && nports == t->nhosts ? gw_xstrdup(ports[i]) : NULL; /* else one port for all */
        h->name = -1;
        if (h->host[0] == '\0' || h->host[0] == '/' || h->host[0] == '@' || gw_resolve_is_numeric(h->host))
            continue; /* libpq's default, a socket directory (or an abstract one), an address */
        size_t j = 0;
        while (j != nnames && strcmp(names[j], h->host) != 0)
            ++j;
        if (j == nnames)
            names[nnames++] = h->host;
        h->name = (int)j;
    }
    /* with a port list that does not match the hosts libpq refuses the URL: let it say so */
    if (nnames != 0 && !(nports > 1 && nports != t->nhosts))
        t->resolver = gw_resolver_create(db->loop, "SETTLED_DATABASE_URL", names, nnames, false);
    free(names);
    free(hosts); /* the strings now belong to t->hosts */
    if (ports != NULL)
        free_list(ports, nports);
    PQconninfoFree(opts);
}

static void free_target(gw_db_target_t *t)
{
    gw_resolver_destroy(t->resolver);
    for (size_t i = 0; i != t->nhosts; ++i) {
        free(t->hosts[i].host);
        free(t->hosts[i].port);
    }
    free(t->hosts);
}

/* libpq's reason for a failed connect. Given hostaddr=, libpq names only the address it tried, so when the URL has
 * one host, its name goes in front. */
static const char *connect_error(gw_db_conn_t *c, char *buf, size_t len)
{
    const char *why = pq_error(c);
    if (c->pg == NULL || c->db->target.resolver == NULL || c->db->target.nhosts != 1)
        return why;
    snprintf(buf, len, "%s: %s", c->db->target.hosts[0].host, why);
    return buf;
}

/* Appends item to the comma-separated list *list (NULL at first). */
static void list_add(char **list, const char *item)
{
    bool first = *list == NULL;
    size_t len = first ? 0 : strlen(*list), n = strlen(item);
    *list = gw_xrealloc(*list, len + n + 2);
    if (!first)
        (*list)[len++] = ',';
    memcpy(*list + len, item, n + 1);
}

/* Starts libpq's connect: to the URL as it is (answer NULL), or to the resolved addresses of its hosts, each
 * address one entry of libpq's host list (libpq tries them in order, as it tries a name's addresses itself). */
static void connect_pq(gw_db_conn_t *c, const gw_resolved_t *answer)
{
    gw_db_t *db = c->db;
    const char *keys[6], *vals[6];
    size_t n = 0;
    char *hosts = NULL, *addrs = NULL, *ports = NULL;
    keys[n] = "dbname", vals[n++] = db->cfg->database_url; /* expanded first: the keys after it override it */
    if (answer != NULL) {
        const gw_db_target_t *t = &db->target;
        for (size_t i = 0; i != t->nhosts; ++i) {
            const gw_db_host_t *h = &t->hosts[i];
            for (size_t a = 0; a != (h->name < 0 ? 1 : answer->naddrs); ++a) {
                if (h->name >= 0 && answer->addrs[a].name != (size_t)h->name)
                    continue;
                list_add(&hosts, h->host);
                list_add(&addrs, h->name >= 0 ? answer->addrs[a].host : gw_resolve_is_numeric(h->host) ? h->host : "");
                if (h->port != NULL)
                    list_add(&ports, h->port);
            }
        }
        if (hosts == NULL) { /* no host resolved: down, as a server that is; resolve.c has logged why */
            free(addrs);
            free(ports);
            c->unresolved = true;
            disconnect(c, answer->error != NULL ? answer->error : "no address");
            c->unresolved = false;
            return;
        }
        keys[n] = "host", vals[n++] = hosts;
        keys[n] = "hostaddr", vals[n++] = addrs;
        if (ports != NULL)
            keys[n] = "port", vals[n++] = ports;
    }
    keys[n] = "application_name", vals[n++] = "settled";
    keys[n] = NULL, vals[n] = NULL;
    c->pg = PQconnectStartParams(keys, vals, 1);
    free(hosts);
    free(addrs);
    free(ports);
    if (c->pg != NULL)
        PQsetNoticeProcessor(c->pg, on_notice, c);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD || attach_socket(c) != 0) {
        char buf[600];
        disconnect(c, connect_error(c, buf, sizeof(buf)));
        return;
    }
    /* libpq: after PQconnectStart, behave as if PQconnectPoll had returned PGRES_POLLING_WRITING */
    want_write(c);
}

static void on_resolved(gw_resolve_req_t *req, const gw_resolved_t *answer)
{
    gw_db_conn_t *c = H2O_STRUCT_FROM_MEMBER(gw_db_conn_t, resolve, req);
    if (c->state == GW_DB_CONNECTING && c->pg == NULL) /* else its connect timed out meanwhile */
        connect_pq(c, answer);
}

static void start_connect(gw_db_conn_t *c)
{
    gw_db_t *db = c->db;
    /* after a failure, the time it went down (the state since then): the name may point elsewhere now */
    uint64_t failed_at = c->failures != 0 ? c->since : 0;
    set_state(c, GW_DB_CONNECTING);
    if (!db->target.parsed)
        parse_target(db);
    if (db->target.resolver == NULL) {
        connect_pq(c, NULL);
        return;
    }
    const gw_resolved_t *answer = gw_resolve(db->target.resolver, failed_at, &c->resolve, on_resolved);
    if (answer != NULL)
        connect_pq(c, answer);
    /* else CONNECTING without a socket until on_resolved; the tick's connect deadline applies meanwhile */
}

/* A statement of this connection failed with res: if its SQLSTATE says that the prepared statements are not where
 * they were made (42P05: already there on a fresh connection; 26000: gone from an old one), the connection is not
 * a session of its own but a pooler's transaction: say so once per process, with what to do. */
static void pooler_hint(const PGresult *res)
{
    static atomic_bool said;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state == NULL || (strcmp(state, "42P05") != 0 && strcmp(state, "26000") != 0) || atomic_exchange(&said, true))
        return;
    gw_log(GW_LOG_ERROR,
           "SETTLED_DATABASE_URL: the server lost or mixed up this connection's prepared statements (SQLSTATE %s): "
           "it looks like a connection pooler in transaction mode (pgbouncer pool_mode = transaction). The event "
           "loops prepare their statements once per connection and need session mode; webhooks that meet such a "
           "connection are answered 503 (docs/operations.md, pgbouncer)",
           state);
}

static void start_prepare(gw_db_conn_t *c)
{
    gw_db_t *db = c->db;
    if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
        disconnect(c, pq_error(c));
        return;
    }
    /* the statements are simple and always planned alike: plan them once, not on every execution
     * (custom plans re-read column defaults and index predicates each time) */
    /* and the inbox's per-statement NOTIFY trigger is off for this pool: a NOTIFY serialises commits on a
     * cluster-wide lock, so the intake sends at most a few explicit notifications a second instead */
    if (PQsendQueryParams(c->pg, "SET plan_cache_mode = force_generic_plan", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
        PQsendQueryParams(c->pg, "SET settled.notify = off", 0, NULL, NULL, NULL, NULL, 0) != 1) {
        disconnect(c, pq_error(c));
        return;
    }
    for (size_t i = 0; i != db->nstmts; ++i) {
        if (PQsendPrepare(c->pg, db->stmts[i]->name, db->stmts[i]->sql, db->stmts[i]->nparams, NULL) != 1) {
            disconnect(c, pq_error(c));
            return;
        }
    }
    for (size_t i = 0; i != db->nmerged; ++i)
        if (PQsendPrepare(c->pg, db->merged[i].name, db->merged[i].stmt->merge_sql, db->merged[i].stmt->nparams,
                          NULL) != 1) {
            disconnect(c, pq_error(c));
            return;
        }
    if (PQpipelineSync(c->pg) != 1 || flush_out(c) != 0) {
        disconnect(c, pq_error(c));
        return;
    }
    c->want_null = false;
    c->batch_failed = false;
    set_state(c, GW_DB_PREPARING);
    want_read(c);
}

static void poll_connect(gw_db_conn_t *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->pg);
    if ((st != PGRES_POLLING_READING && st != PGRES_POLLING_WRITING && st != PGRES_POLLING_OK) ||
        attach_socket(c) != 0) {
        char buf[600];
        disconnect(c, connect_error(c, buf, sizeof(buf)));
        return;
    }
    if (st == PGRES_POLLING_READING) {
        want_read(c);
    } else if (st == PGRES_POLLING_WRITING) {
        want_write(c);
    } else {
        if (c->failures != 0)
            gw_log(GW_LOG_INFO, "database connection %d re-established", c->index);
        start_prepare(c);
    }
}

static const merged_t *merged_of(const gw_db_t *db, const gw_db_statement_t *stmt)
{
    for (size_t i = 0; i != db->nmerged; ++i)
        if (db->merged[i].stmt == stmt)
            return &db->merged[i];
    return NULL;
}

/* How many of the jobs at the head of the queue (at most max) run merged with the first: the run of queued jobs of its
 * (mergeable) statement, up to GW_DB_MERGE_MAX; 1 when it runs alone. */
static size_t merge_count(const gw_db_t *db, const gw_db_job_t *first, size_t max)
{
    if (first->isolate || first->stmt->merge_sql == NULL || first->stmt->nparams > MERGE_PARAMS_MAX || max < 2)
        return 1;
    size_t run = 0;
    for (const h2o_linklist_t *l = &first->_link; l != &db->queue && run != max && run != GW_DB_MERGE_MAX;
         l = l->next, ++run) {
        const gw_db_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, l);
        if (job->stmt != first->stmt || job->isolate)
            break;
    }
    return run;
}

/* Moves job from the queue into c's batch. */
static void take_job(gw_db_conn_t *c, gw_db_job_t *job, size_t group)
{
    gw_db_t *db = c->db;
    h2o_linklist_unlink(&job->_link);
    --db->queued;
    ++db->inflight;
    h2o_linklist_insert(&c->batch, &job->_link);
    job->group = group;
    if (c->batch_size == 0 || job->deadline < c->batch_deadline)
        c->batch_deadline = job->deadline;
    ++c->batch_size;
}

static char *put_be32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24), p[1] = (char)(v >> 16), p[2] = (char)(v >> 8), p[3] = (char)v;
    return p + 4;
}

#define OID_BYTEA 17
#define OID_TEXT 25

/*
 * Sends the n jobs at the head of the queue as one merged statement: parameter k becomes a one-dimensional array of
 * the n jobs' values of it, in PostgreSQL's binary array format (array_recv): ndim, has-nulls flag, element type,
 * then the dimension's size and lower bound, then each element as its length (-1: NULL) and bytes. A text value's
 * binary form is its bytes, as is a bytea's. Returns 0, or -1 (the jobs stay queued).
 */
static int send_merged(gw_db_conn_t *c, gw_db_job_t *first, size_t n)
{
    gw_db_t *db = c->db;
    const merged_t *m = merged_of(db, first->stmt);
    int per = first->stmt->nparams;
    if (m == NULL || per > MERGE_PARAMS_MAX || n > GW_DB_MERGE_MAX)
        return -1;
    const char *values[MERGE_PARAMS_MAX];
    int lengths[MERGE_PARAMS_MAX], formats[MERGE_PARAMS_MAX];
    size_t size[MERGE_PARAMS_MAX], total = 0;
    bool binary[MERGE_PARAMS_MAX], nulls[MERGE_PARAMS_MAX];
    for (int k = 0; k != per; ++k) {
        size[k] = 20 + 4 * n;
        binary[k] = nulls[k] = false;
    }
    h2o_linklist_t *l = &first->_link;
    for (size_t j = 0; j != n; ++j, l = l->next) {
        const gw_db_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, l);
        for (int k = 0; k != per; ++k) {
            if (job->values[k] == NULL)
                nulls[k] = true;
            else
                size[k] += (size_t)job->lengths[k];
            binary[k] |= job->formats[k] != 0;
        }
    }
    for (int k = 0; k != per; ++k)
        total += size[k];
    char *buf = gw_xmalloc(total), *p = buf;
    for (int k = 0; k != per; ++k) {
        values[k] = p;
        lengths[k] = (int)size[k];
        formats[k] = 1;
        p = put_be32(p, 1);
        p = put_be32(p, nulls[k] ? 1 : 0);
        p = put_be32(p, binary[k] ? OID_BYTEA : OID_TEXT);
        p = put_be32(p, (uint32_t)n);
        p = put_be32(p, 1);
        l = &first->_link;
        for (size_t j = 0; j != n; ++j, l = l->next) {
            const gw_db_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, l);
            if (job->values[k] == NULL) {
                p = put_be32(p, UINT32_MAX); /* -1 */
                continue;
            }
            p = put_be32(p, (uint32_t)job->lengths[k]);
            memcpy(p, job->values[k], (size_t)job->lengths[k]);
            p += job->lengths[k];
        }
    }
    int sent = PQsendQueryPrepared(c->pg, m->name, per, values, lengths, formats, 0);
    free(buf); /* libpq has copied the parameters into its output buffer */
    if (sent != 1)
        return -1;
    for (size_t j = 0; j != n; ++j)
        take_job(c, H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, db->queue.next), j == 0 ? n : 0);
    return 0;
}

/* Sends up to max_batch queued jobs (or one isolated job) on an idle connection. */
static void send_batch(gw_db_conn_t *c)
{
    gw_db_t *db = c->db;
    size_t max = (size_t)db->cfg->db_max_batch;
    while (!h2o_linklist_is_empty(&db->queue) && c->batch_size < max) {
        gw_db_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, db->queue.next);
        if (job->isolate && c->batch_size != 0)
            break;
        size_t n = merge_count(db, job, max - c->batch_size);
        if (n > 1) {
            if (send_merged(c, job, n) != 0) {
                disconnect(c, pq_error(c)); /* the jobs stay queued for another connection */
                return;
            }
            continue;
        }
        if (PQsendQueryPrepared(c->pg, job->stmt->name, job->nparams, job->values, job->lengths, job->formats, 0) !=
            1) {
            disconnect(c, pq_error(c)); /* the job stays queued for another connection */
            return;
        }
        take_job(c, job, 1);
        if (job->isolate)
            break;
    }
    if (PQpipelineSync(c->pg) != 1 || flush_out(c) != 0) {
        disconnect(c, pq_error(c));
        return;
    }
    c->awaiting = c->batch.next;
    c->want_null = false;
    c->batch_failed = false;
    c->commit_failed = false;
    c->commit_error[0] = '\0';
    set_state(c, GW_DB_BUSY);
    gw_metrics_batch(c->batch_size);
}

/* Puts job back at the head of the queue, to run alone (it is older than anything queued after it). */
static void requeue_alone(gw_db_t *db, gw_db_job_t *job)
{
    job->isolate = true;
    job->failed = false;
    job->rows = 0;
    if (job->result != NULL)
        PQclear(job->result);
    job->result = NULL;
    job->error[0] = '\0';
    h2o_linklist_insert(db->queue.next, &job->_link);
    ++db->queued;
}

/*
 * The batch's Sync arrived. Its transaction committed unless a statement failed or the COMMIT itself did (a
 * deferred constraint or trigger, a serialization failure, a full NOTIFY queue): then nothing of it is committed.
 * When a statement failed, its job reports the error and the others run again alone. When the COMMIT failed, no
 * job can be blamed: a job that ran alone reports the error; in a batch, every job runs again alone, so the
 * innocent ones commit and the guilty one fails by itself.
 */
static void complete_batch(gw_db_conn_t *c)
{
    gw_db_t *db = c->db;
    bool failed = c->batch_failed || c->commit_failed, alone = c->batch_size == 1;
    if (c->commit_failed)
        gw_log(GW_LOG_WARN, "database connection %d: the commit of a batch of %zu failed: %s", c->index, c->batch_size,
               c->commit_error);
    while (!h2o_linklist_is_empty(&c->batch)) {
        gw_db_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, c->batch.next);
        h2o_linklist_unlink(&job->_link);
        --db->inflight;
        if (!failed) {
            finish_job(db, job, NULL);
        } else if (c->commit_failed) {
            if (alone || job->isolate)
                finish_job(db, job, c->commit_error[0] != '\0' ? c->commit_error : "commit failed");
            else
                requeue_alone(db, job);
        } else if (job->failed || job->isolate) {
            gw_log(GW_LOG_ERROR, "database statement %s failed: %s", job->stmt->name, job->error);
            finish_job(db, job, job->error[0] != '\0' ? job->error : "statement failed");
        } else {
            /* rolled back with the batch through no fault of its own: run it again, alone */
            requeue_alone(db, job);
        }
    }
    c->batch_size = 0;
    c->awaiting = NULL;
    c->failures = 0;
    c->commit_failed = false;
    set_state(c, GW_DB_IDLE);
}

/* A merged statement's RETURNING yields, per inserted row, its job's key: each job gets the row bearing its key (one
 * row at most per job, so two jobs binding the same key get one each). */
static void count_merged_rows(gw_db_conn_t *c, gw_db_job_t *first, PGresult *res)
{
    int key = first->stmt->merge_key;
    for (int t = 0; t != PQntuples(res); ++t) {
        const char *v = PQgetvalue(res, t, 0);
        size_t vlen = (size_t)PQgetlength(res, t, 0);
        h2o_linklist_t *l = &first->_link;
        for (size_t j = 0; j != first->group && l != &c->batch; ++j, l = l->next) {
            gw_db_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, l);
            if (job->rows == 0 && job->values[key] != NULL && (size_t)job->lengths[key] == vlen &&
                memcmp(job->values[key], v, vlen) == 0) {
                job->rows = 1;
                break;
            }
        }
    }
}

/* Reads every result libpq has buffered, without ever blocking (PQgetResult blocks when PQisBusy). */
static void drain_results(gw_db_conn_t *c)
{
    while (c->pg != NULL && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            if (!c->want_null)
                return; /* nothing pending */
            c->want_null = false;
            if (c->state == GW_DB_BUSY && c->awaiting != NULL && c->awaiting != &c->batch) {
                /* past the job, and past the jobs merged into its statement */
                size_t skip = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, c->awaiting)->group;
                for (size_t i = 0; i < (skip > 0 ? skip : 1) && c->awaiting != &c->batch; ++i)
                    c->awaiting = c->awaiting->next;
            }
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            if (c->state == GW_DB_PREPARING) {
                if (c->batch_failed) {
                    disconnect(c, "could not prepare statements");
                    return;
                }
                c->failures = 0;
                set_state(c, GW_DB_IDLE);
            } else if (c->state == GW_DB_BUSY) {
                complete_batch(c);
            }
            continue;
        }
        c->want_null = true;
        bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
        if (c->state == GW_DB_PREPARING) {
            if (!ok) {
                gw_log(GW_LOG_ERROR, "preparing a statement failed: %s", PQresultErrorMessage(res));
                pooler_hint(res);
                c->batch_failed = true;
            }
        } else if (c->state == GW_DB_BUSY && c->awaiting != NULL && c->awaiting != &c->batch) {
            gw_db_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, c->awaiting);
            if (ok && job->group > 1) {
                count_merged_rows(c, job, res);
            } else if (ok) {
                const char *n = PQcmdTuples(res);
                job->rows = n != NULL && *n != '\0' ? strtoull(n, NULL, 10) : (uint64_t)PQntuples(res);
                if (job->rows_cb != NULL && st == PGRES_TUPLES_OK && job->result == NULL) {
                    job->result = res; /* kept for the job's callback, cleared when it finishes */
                    res = NULL;
                }
            } else if (job->group > 1) {
                /* which job of the merged statement failed is unknown: they all run again alone */
                pooler_hint(res);
                c->batch_failed = true;
            } else {
                c->batch_failed = true;
                if (st != PGRES_PIPELINE_ABORTED) {
                    pooler_hint(res);
                    job->failed = true;
                    gw_log_one_line(job->error, sizeof(job->error), PQresultErrorMessage(res));
                }
            }
        } else if (c->state == GW_DB_BUSY && !ok && st != PGRES_PIPELINE_ABORTED) {
            /* after the last statement's result: the implicit COMMIT at the Sync failed */
            c->commit_failed = true;
            gw_log_one_line(c->commit_error, sizeof(c->commit_error), PQresultErrorMessage(res));
        }
        if (res != NULL)
            PQclear(res);
    }
}

static void on_input(gw_db_conn_t *c)
{
    if (c->state == GW_DB_CONNECTING) {
        poll_connect(c);
        return;
    }
    if (PQconsumeInput(c->pg) != 1) {
        disconnect(c, pq_error(c));
        return;
    }
    /* libpq may have more to send once the server reads (PQflush returned 1 earlier) */
    if (flush_out(c) != 0) {
        disconnect(c, pq_error(c));
        return;
    }
    drain_results(c);
    if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_BAD) {
        disconnect(c, pq_error(c));
        return;
    }
    dispatch(c->db);
}

static void on_conn_io(h2o_socket_t *sock, const char *err)
{
    gw_db_conn_t *c = sock->data;
    if (err != NULL) {
        disconnect(c, err);
        dispatch(c->db);
        return;
    }
    on_input(c);
}

static void on_conn_writable(h2o_socket_t *sock, const char *err)
{
    gw_db_conn_t *c = sock->data;
    c->write_armed = false;
    if (err != NULL) {
        disconnect(c, err);
        dispatch(c->db);
        return;
    }
    if (c->state == GW_DB_CONNECTING) {
        poll_connect(c);
        return;
    }
    if (c->pg != NULL && flush_out(c) != 0) {
        disconnect(c, pq_error(c));
        dispatch(c->db);
    }
}

/* Hands queued jobs to idle connections. */
static void dispatch(gw_db_t *db)
{
    for (size_t i = 0; i != db->nconns && !h2o_linklist_is_empty(&db->queue); ++i) {
        gw_db_conn_t *c = &db->conns[(i + db->queued) % db->nconns];
        if (c->state == GW_DB_IDLE)
            send_batch(c);
    }
}

static void on_flush(h2o_timeout_entry_t *entry)
{
    gw_db_t *db = H2O_STRUCT_FROM_MEMBER(gw_db_t, flush_entry, entry);
    dispatch(db);
}

/* Every TICK_MS: reconnect after backoff, enforce the deadlines, expire queued jobs. A job's deadline counts from
 * its submission, queueing and commit together, and is enforced one tick early, so that its caller has its answer
 * (a failure, never a 2xx) within SETTLED_DB_COMMIT_TIMEOUT_MS of submitting it. */
static void on_tick(h2o_timeout_entry_t *entry)
{
    gw_db_t *db = H2O_STRUCT_FROM_MEMBER(gw_db_t, tick_entry, entry);
    uint64_t now = h2o_now(db->loop), horizon = now + TICK_MS,
             connect_deadline = (uint64_t)db->cfg->db_commit_timeout_ms;
    for (size_t i = 0; i != db->nconns; ++i) {
        gw_db_conn_t *c = &db->conns[i];
        if (c->state == GW_DB_DISCONNECTED && now >= c->retry_at)
            start_connect(c);
        else if (c->state == GW_DB_BUSY && horizon >= c->batch_deadline) {
            fail_batch(c, "commit timed out"); /* its outcome is unknown: no 2xx for any of it */
            disconnect(c, "commit timed out");
        } else if ((c->state == GW_DB_CONNECTING || c->state == GW_DB_PREPARING) && now - c->since > connect_deadline)
            disconnect(c, "connect timed out");
    }
    /* with every connection down, queued jobs fail at once (the provider retries); otherwise at their deadline */
    bool up = may_queue(db);
    for (h2o_linklist_t *l = db->queue.next; l != &db->queue;) {
        gw_db_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, l);
        l = l->next;
        if (up && horizon < job->deadline)
            continue;
        h2o_linklist_unlink(&job->_link);
        --db->queued;
        finish_job(db, job, up ? "no commit within SETTLED_DB_COMMIT_TIMEOUT_MS" : "no database connection");
    }
    dispatch(db);
    h2o_timeout_link(db->loop, &db->tick_timeout, &db->tick_entry);
}

/* The merged variant of every mergeable statement, named <name>_m. */
static void build_merged(gw_db_t *db)
{
    for (size_t i = 0; i != db->nstmts; ++i)
        if (db->stmts[i]->merge_sql != NULL)
            ++db->nmerged;
    if (db->nmerged == 0)
        return;
    db->merged = gw_xcalloc(db->nmerged, sizeof(*db->merged));
    size_t m = 0;
    for (size_t i = 0; i != db->nstmts; ++i) {
        const gw_db_statement_t *st = db->stmts[i];
        if (st->merge_sql == NULL)
            continue;
        merged_t *mg = &db->merged[m++];
        mg->stmt = st;
        mg->name = gw_xmalloc(strlen(st->name) + 3);
        sprintf(mg->name, "%s_m", st->name);
    }
}

gw_db_t *gw_db_create(h2o_evloop_t *loop, const gw_config_t *cfg, const gw_db_statement_t *const *stmts, size_t nstmts)
{
    gw_db_t *db = h2o_mem_alloc(sizeof(*db));
    *db = (gw_db_t){.loop = loop, .cfg = cfg, .stmts = stmts, .nstmts = nstmts};
    build_merged(db);
    h2o_linklist_init_anchor(&db->queue);
    db->nconns = (size_t)cfg->db_connections;
    db->conns = h2o_mem_alloc(sizeof(*db->conns) * db->nconns);
    h2o_timeout_init(loop, &db->zero_timeout, 0);
    h2o_timeout_init(loop, &db->tick_timeout, TICK_MS);
    db->flush_entry = (h2o_timeout_entry_t){.cb = on_flush};
    db->tick_entry = (h2o_timeout_entry_t){.cb = on_tick};
    for (size_t i = 0; i != db->nconns; ++i) {
        gw_db_conn_t *c = &db->conns[i];
        *c = (gw_db_conn_t){.db = db, .index = (int)i, .pqfd = -1, .state = GW_DB_STATE_MAX};
        h2o_linklist_init_anchor(&c->batch);
        set_state(c, GW_DB_DISCONNECTED);
        start_connect(c);
    }
    h2o_timeout_link(loop, &db->tick_timeout, &db->tick_entry);
    return db;
}

void gw_db_destroy(gw_db_t *db)
{
    while (!h2o_linklist_is_empty(&db->queue)) {
        gw_db_job_t *job = H2O_STRUCT_FROM_MEMBER(gw_db_job_t, _link, db->queue.next);
        h2o_linklist_unlink(&job->_link);
        --db->queued;
        finish_job(db, job, "shutting down");
    }
    for (size_t i = 0; i != db->nconns; ++i) {
        gw_db_conn_t *c = &db->conns[i];
        fail_batch(c, "shutting down");
        release_socket(c);
        if (c->pg != NULL)
            PQfinish(c->pg);
        gw_metrics_db_state(c->state, GW_DB_STATE_MAX);
    }
    free_target(&db->target); /* drops the connections' requests: before they are freed */
    if (h2o_timeout_is_linked(&db->tick_entry))
        h2o_timeout_unlink(&db->tick_entry);
    if (h2o_timeout_is_linked(&db->flush_entry))
        h2o_timeout_unlink(&db->flush_entry);
    h2o_timeout_dispose(db->loop, &db->zero_timeout);
    h2o_timeout_dispose(db->loop, &db->tick_timeout);
    for (size_t i = 0; i != db->nmerged; ++i)
        free(db->merged[i].name);
    free(db->merged);
    free(db->conns);
    free(db);
}

bool gw_db_is_up(const gw_db_t *db)
{
    for (size_t i = 0; i != db->nconns; ++i)
        if (db->conns[i].state == GW_DB_IDLE || db->conns[i].state == GW_DB_BUSY)
            return true;
    return false;
}

bool gw_db_is_idle(const gw_db_t *db)
{
    return db->queued == 0 && db->inflight == 0;
}

/* True if a connection is up or being made: jobs may wait for it (the tick fails them if it never comes). */
static bool may_queue(const gw_db_t *db)
{
    for (size_t i = 0; i != db->nconns; ++i)
        if (db->conns[i].state != GW_DB_DISCONNECTED)
            return true;
    return false;
}

gw_db_job_t *gw_db_submit(gw_db_t *db, const gw_db_statement_t *stmt, const gw_db_param_t *params, size_t nparams,
                          gw_db_job_cb cb, void *data)
{
    if (!may_queue(db) || db->queued >= (size_t)db->cfg->db_queue_limit)
        return NULL;

    /* one allocation: the job, its parameter arrays, then the parameter bytes (text ones NUL-terminated) */
    size_t size = sizeof(gw_db_job_t) + nparams * (sizeof(char *) + 2 * sizeof(int));
    for (size_t i = 0; i != nparams; ++i)
        size += params[i].len + 1;
    gw_db_job_t *job = h2o_mem_alloc(size);
    memset(job, 0, sizeof(*job));
    job->stmt = stmt;
    job->nparams = (int)nparams;
    job->cb = cb;
    job->data = data;
    job->deadline = h2o_now(db->loop) + (uint64_t)db->cfg->db_commit_timeout_ms;
    job->values = (const char **)(job + 1);
    job->lengths = (int *)(job->values + nparams);
    job->formats = job->lengths + nparams;
    char *p = (char *)(job->formats + nparams);
    for (size_t i = 0; i != nparams; ++i) {
        if (params[i].data == NULL) {
            job->values[i] = NULL; /* SQL NULL */
            job->lengths[i] = 0;
        } else {
            memcpy(p, params[i].data, params[i].len);
            p[params[i].len] = '\0';
            job->values[i] = p;
            job->lengths[i] = (int)params[i].len;
            p += params[i].len + 1;
        }
        job->formats[i] = params[i].binary ? 1 : 0;
    }
    h2o_linklist_insert(&db->queue, &job->_link);
    ++db->queued;
    /* send at the end of this loop iteration, so the requests read together commit together */
    if (!h2o_timeout_is_linked(&db->flush_entry))
        h2o_timeout_link(db->loop, &db->zero_timeout, &db->flush_entry);
    return job;
}

gw_db_job_t *gw_db_submit_read(gw_db_t *db, const gw_db_statement_t *stmt, const gw_db_param_t *params, size_t nparams,
                               gw_db_rows_cb cb, void *data)
{
    gw_db_job_t *job = gw_db_submit(db, stmt, params, nparams, NULL, data);
    if (job != NULL)
        job->rows_cb = cb;
    return job;
}

void gw_db_job_detach(gw_db_job_t *job)
{
    job->cb = NULL;
    job->rows_cb = NULL;
}

size_t gw_db_rows_count(const gw_db_rows_t *rows)
{
    return rows != NULL ? (size_t)PQntuples((const PGresult *)rows) : 0;
}

const char *gw_db_rows_value(const gw_db_rows_t *rows, size_t row, size_t col, size_t *len)
{
    const PGresult *res = (const PGresult *)rows;
    if (res == NULL || row >= (size_t)PQntuples(res) || col >= (size_t)PQnfields(res) ||
        PQgetisnull(res, (int)row, (int)col)) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = (size_t)PQgetlength(res, (int)row, (int)col);
    return PQgetvalue(res, (int)row, (int)col);
}
