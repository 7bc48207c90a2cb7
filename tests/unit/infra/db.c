/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/infra/db.c against a real PostgreSQL (SETTLED_TEST_PG_URL, started by deploy/test.sh):
 * group commit, result routing, the rule that one failing job never fails its batch neighbours, and host names
 * in the URL: resolved off the loop (a slow DNS never stalls it), followed when they move, and a name that does
 * not resolve leaves the pool down with one log line. For those this file defines getaddrinfo itself (libpq's and
 * resolve.c's calls land here): it records on which thread each name was looked up, delays names, and answers
 * names under .test itself; everything else goes to the C library.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "db.h"

/* --- getaddrinfo, watched ------------------------------------------------------------------------------------ */

static pthread_t main_thread; /* the loop's */
static atomic_int name_lookups, name_lookups_on_loop, name_delay_ms;
static pthread_mutex_t fake_mutex = PTHREAD_MUTEX_INITIALIZER;
static char fake_name[64], fake_addr[64]; /* one name under .test and its IPv4 address ("" : no such name) */
static char fake_marker[] = "fake";       /* the ai_canonname of the answers made here */

static bool is_numeric(const char *node)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, node, buf) == 1 || inet_pton(AF_INET6, node, buf) == 1;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    if (node != NULL && !is_numeric(node)) {
        atomic_fetch_add(&name_lookups, 1);
        if (pthread_equal(pthread_self(), main_thread))
            atomic_fetch_add(&name_lookups_on_loop, 1);
        int ms = atomic_load(&name_delay_ms);
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
        size_t n = strlen(node);
        if (n > 5 && strcmp(node + n - 5, ".test") == 0) {
            char addr[64] = "";
            pthread_mutex_lock(&fake_mutex);
            if (strcmp(node, fake_name) == 0)
                snprintf(addr, sizeof(addr), "%s", fake_addr);
            pthread_mutex_unlock(&fake_mutex);
            struct addrinfo *ai = calloc(1, sizeof(*ai) + sizeof(struct sockaddr_in));
            struct sockaddr_in *sin = (struct sockaddr_in *)(ai + 1);
            if (addr[0] == '\0' || inet_pton(AF_INET, addr, &sin->sin_addr) != 1) {
                free(ai);
                return EAI_NONAME;
            }
            sin->sin_family = AF_INET;
            sin->sin_port = htons((uint16_t)(service != NULL ? atoi(service) : 0)); /* libpq passes the port */
            *ai = (struct addrinfo){.ai_family = AF_INET,
                                    .ai_socktype = SOCK_STREAM,
                                    .ai_addrlen = sizeof(*sin),
                                    .ai_addr = (struct sockaddr *)sin,
                                    .ai_canonname = fake_marker};
            *res = ai;
            return 0;
        }
    }
    int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
        (int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))dlsym(RTLD_NEXT,
                                                                                                "getaddrinfo");
    return real(node, service, hints, res);
}

void freeaddrinfo(struct addrinfo *res)
{
    if (res != NULL && res->ai_canonname == fake_marker) {
        free(res);
        return;
    }
    void (*real)(struct addrinfo *) = (void (*)(struct addrinfo *))dlsym(RTLD_NEXT, "freeaddrinfo");
    real(res);
}

static void fake_dns(const char *name, const char *addr)
{
    pthread_mutex_lock(&fake_mutex);
    snprintf(fake_name, sizeof(fake_name), "%s", name);
    snprintf(fake_addr, sizeof(fake_addr), "%s", addr);
    pthread_mutex_unlock(&fake_mutex);
}

static const gw_db_statement_t statements[] = {
    /* fails with division_by_zero when $2 is 0, so one job of a batch can be made to fail */
    /* merged when several are queued together: one INSERT over arrays, each job learning its row by its key */
    {"t_insert", "INSERT INTO t_db (k, v) VALUES ($1, 100 / $2::int) ON CONFLICT (k) DO NOTHING", 2,
     "INSERT INTO t_db (k, v) SELECT u.k, 100 / u.v::int FROM unnest($1::text[], $2::text[]) AS u(k, v) "
     "ON CONFLICT (k) DO NOTHING RETURNING k",
     0},
    {"t_bytes", "INSERT INTO t_db_bytes (b) VALUES ($1::bytea)", 1},
    /* merged with a binary parameter and NULLs: the arrays must carry every byte and every NULL as sent */
    {"t_merge_bytes", "INSERT INTO t_db_mb (k, b, note) VALUES ($1, $2::bytea, $3) ON CONFLICT (k) DO NOTHING", 3,
     "INSERT INTO t_db_mb (k, b, note) SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[]) "
     "ON CONFLICT (k) DO NOTHING RETURNING k",
     0},
    /* a read: its rows go to the job's callback */
    {"t_select", "SELECT k, v, NULL::text FROM t_db WHERE k LIKE $1 ORDER BY k", 1},
};
/* as the server hands them over: one list of pointers into the modules' statement arrays */
static const gw_db_statement_t *const stmts[] = {&statements[0], &statements[1], &statements[2]};

typedef struct st_result_t {
    int fired;
    char error[200];
    uint64_t rows;
} result_t;

static h2o_evloop_t *loop;
static gw_config_t cfg;
static char url[512];

static void exec_admin(const char *sql)
{
    PGconn *pg = PQconnectdb(url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PGresult *res = PQexec(pg, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
}

static long long query_int(const char *sql)
{
    PGconn *pg = PQconnectdb(url);
    PGresult *res = PQexec(pg, sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    long long v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(pg);
    return v;
}

static int setup(void **state)
{
    const char *base = getenv("SETTLED_TEST_PG_URL");
    if (base == NULL || *base == '\0')
        fail_msg("SETTLED_TEST_PG_URL is not set: run the tests through deploy/test.sh");
    snprintf(url, sizeof(url), "%s", base);
    main_thread = pthread_self();
    exec_admin("DROP TABLE IF EXISTS t_db; CREATE TABLE t_db (k text PRIMARY KEY, v int)");
    exec_admin("DROP TABLE IF EXISTS t_db_bytes; CREATE TABLE t_db_bytes (b bytea)");
    loop = h2o_evloop_create();
    cfg = (gw_config_t){.database_url = url,
                        .db_connections = 2,
                        .db_max_batch = 64,
                        .db_commit_timeout_ms = 4000,
                        .db_queue_limit = 4096};
    return 0;
}

static void on_done(void *data, const char *error, uint64_t rows)
{
    result_t *r = data;
    ++r->fired;
    if (error != NULL)
        snprintf(r->error, sizeof(r->error), "%s", error);
    r->rows = rows;
}

static void run_until(gw_db_t *db, bool (*cond)(gw_db_t *))
{
    for (int i = 0; i != 500 && !cond(db); ++i)
        h2o_evloop_run(loop, 10);
    assert_true(cond(db));
}

static bool is_up(gw_db_t *db)
{
    return gw_db_is_up(db);
}

static bool is_idle(gw_db_t *db)
{
    return gw_db_is_idle(db);
}

static gw_db_job_t *submit_insert(gw_db_t *db, const char *k, const char *div, result_t *r)
{
    gw_db_param_t p[] = {{k, strlen(k), false}, {div, strlen(div), false}};
    return gw_db_submit(db, stmts[0], p, 2, on_done, r);
}

static void test_batch_commits_and_counts_rows(void **state)
{
    gw_db_t *db = gw_db_create(loop, &cfg, stmts, 2);
    run_until(db, is_up);
    result_t r[50] = {{0}};
    char keys[50][16];
    for (int i = 0; i != 50; ++i) {
        snprintf(keys[i], sizeof(keys[i]), "a%d", i);
        assert_non_null(submit_insert(db, keys[i], "1", &r[i]));
    }
    /* a duplicate in the same batch: committed, but no row */
    result_t dup = {0};
    assert_non_null(submit_insert(db, "a7", "1", &dup));
    run_until(db, is_idle);
    for (int i = 0; i != 50; ++i) {
        assert_int_equal(r[i].fired, 1);
        assert_string_equal(r[i].error, "");
        assert_int_equal(r[i].rows, 1);
    }
    assert_int_equal(dup.fired, 1);
    assert_int_equal(dup.rows, 0);
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k LIKE 'a%'"), 50);
    gw_db_destroy(db);
}

/* Jobs of a mergeable statement queued together run as multi-row statements (a statement-level trigger counts
 * them), and each job still learns whether its own row was inserted, also when two jobs of one statement insert
 * the same key. */
static void test_merged_inserts_count_rows_per_job(void **state)
{
    exec_admin("CREATE TABLE IF NOT EXISTS t_db_statements (n int); TRUNCATE t_db_statements;"
               "CREATE OR REPLACE FUNCTION t_db_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " INSERT INTO t_db_statements VALUES (1); RETURN NULL; END $$;"
               "DROP TRIGGER IF EXISTS t_db_count ON t_db;"
               "CREATE TRIGGER t_db_count AFTER INSERT ON t_db FOR EACH STATEMENT EXECUTE FUNCTION t_db_count()");
    gw_config_t one = cfg;
    one.db_connections = 1;
    gw_db_t *db = gw_db_create(loop, &one, stmts, 2);
    run_until(db, is_up);
    result_t r[40] = {{0}};
    char keys[40][16];
    for (int i = 0; i != 40; ++i) {
        /* m0..m37, then m5 again twice: duplicates of a row inserted in the same statement or an earlier one */
        snprintf(keys[i], sizeof(keys[i]), "m%d", i < 38 ? i : 5);
        assert_non_null(submit_insert(db, keys[i], "1", &r[i]));
    }
    run_until(db, is_idle);
    for (int i = 0; i != 40; ++i) {
        assert_int_equal(r[i].fired, 1);
        assert_string_equal(r[i].error, "");
        if (r[i].rows != (i < 38 ? 1u : 0u))
            fail_msg("job %d (%s): %llu rows", i, keys[i], (unsigned long long)r[i].rows);
    }
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k LIKE 'm%'"), 38);
    long long statements = query_int("SELECT count(*) FROM t_db_statements");
    if (statements >= 20)
        fail_msg("40 jobs ran as %lld statements: they were not merged", statements);
    exec_admin("DROP TRIGGER t_db_count ON t_db");
    gw_db_destroy(db);
}

typedef struct st_read_t {
    int fired;
    char error[200];
    size_t nrows;
    char first[32], last[32];
    bool null_seen;
} read_t;

static void on_read(void *data, const char *error, const gw_db_rows_t *rows)
{
    read_t *r = data;
    ++r->fired;
    if (error != NULL) {
        snprintf(r->error, sizeof(r->error), "%s", error);
        assert_null(rows);
        return;
    }
    r->nrows = gw_db_rows_count(rows);
    size_t len;
    if (r->nrows != 0) {
        snprintf(r->first, sizeof(r->first), "%s", gw_db_rows_value(rows, 0, 0, &len));
        assert_int_equal(len, strlen(r->first));
        snprintf(r->last, sizeof(r->last), "%s", gw_db_rows_value(rows, r->nrows - 1, 0, NULL));
        r->null_seen = gw_db_rows_value(rows, 0, 2, &len) == NULL && len == 0;
    }
    assert_null(gw_db_rows_value(rows, r->nrows, 0, NULL)); /* out of range */
    assert_null(gw_db_rows_value(rows, 0, 3, NULL));
}

/* A read gets its rows; in a batch that a neighbour makes fail it runs again alone and still gets them (the
 * result of the rolled-back attempt is dropped), and a detached read never calls back. */
static void test_reads_get_their_rows(void **state)
{
    const gw_db_statement_t *const read_stmts[] = {&statements[0], &statements[3]};
    gw_config_t one = cfg;
    one.db_connections = 1; /* one connection: the jobs form one batch */
    gw_db_t *db = gw_db_create(loop, &one, read_stmts, 2);
    run_until(db, is_up);
    result_t ins[3] = {{0}}, bad = {0};
    assert_non_null(submit_insert(db, "r1", "1", &ins[0]));
    assert_non_null(submit_insert(db, "r2", "1", &ins[1]));
    assert_non_null(submit_insert(db, "r3", "1", &ins[2]));
    run_until(db, is_idle);
    read_t all = {0}, none = {0}, again = {0}, detached = {0};
    gw_db_param_t pat = {"r%", 2, false}, nopat = {"zz%", 3, false};
    assert_non_null(gw_db_submit_read(db, &statements[3], &pat, 1, on_read, &all));
    assert_non_null(gw_db_submit_read(db, &statements[3], &nopat, 1, on_read, &none));
    assert_non_null(submit_insert(db, "r4", "0", &bad)); /* fails the batch: the reads run again alone */
    assert_non_null(gw_db_submit_read(db, &statements[3], &pat, 1, on_read, &again));
    gw_db_job_detach(gw_db_submit_read(db, &statements[3], &pat, 1, on_read, &detached));
    run_until(db, is_idle);
    assert_int_equal(all.fired, 1);
    assert_string_equal(all.error, "");
    assert_int_equal(all.nrows, 3);
    assert_string_equal(all.first, "r1");
    assert_string_equal(all.last, "r3");
    assert_true(all.null_seen);
    assert_int_equal(none.fired, 1);
    assert_int_equal(none.nrows, 0);
    assert_int_equal(bad.fired, 1);
    assert_int_equal(again.fired, 1);
    assert_int_equal(again.nrows, 3);
    assert_int_equal(detached.fired, 0);
    gw_db_destroy(db);
}

static void test_failing_job_does_not_fail_neighbours(void **state)
{
    gw_db_t *db = gw_db_create(loop, &cfg, stmts, 2);
    run_until(db, is_up);
    result_t before = {0}, bad = {0}, after = {0};
    assert_non_null(submit_insert(db, "b1", "1", &before));
    assert_non_null(submit_insert(db, "b2", "0", &bad)); /* division by zero */
    assert_non_null(submit_insert(db, "b3", "1", &after));
    run_until(db, is_idle);
    assert_int_equal(bad.fired, 1);
    assert_non_null(strstr(bad.error, "division by zero"));
    assert_int_equal(before.fired, 1);
    assert_string_equal(before.error, "");
    assert_int_equal(after.fired, 1);
    assert_string_equal(after.error, "");
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k IN ('b1','b3')"), 2);
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k = 'b2'"), 0);
    gw_db_destroy(db);
}

/* A constraint trigger deferred to COMMIT refuses keys starting with "bad": the statements all succeed, and the
 * transaction fails only at the Sync. */
static void install_commit_refusal(void)
{
    exec_admin("CREATE OR REPLACE FUNCTION t_db_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " IF NEW.k LIKE 'bad%' THEN RAISE EXCEPTION 'refused at commit: %', NEW.k; END IF; RETURN NULL; END $$;"
               "DROP TRIGGER IF EXISTS t_db_refuse ON t_db;"
               "CREATE CONSTRAINT TRIGGER t_db_refuse AFTER INSERT ON t_db DEFERRABLE INITIALLY DEFERRED"
               " FOR EACH ROW EXECUTE FUNCTION t_db_refuse()");
}

/* A COMMIT that fails is a failure for every job of its batch: none is told it committed. The innocent ones run
 * again alone and commit; the guilty one fails alone. */
static void test_commit_failure_fails_the_batch(void **state)
{
    install_commit_refusal();
    gw_config_t one = cfg;
    one.db_connections = 1; /* one connection: the three jobs form one batch */
    gw_db_t *db = gw_db_create(loop, &one, stmts, 2);
    run_until(db, is_up);
    result_t good1 = {0}, bad = {0}, good2 = {0};
    assert_non_null(submit_insert(db, "cf1", "1", &good1));
    assert_non_null(submit_insert(db, "bad-cf2", "1", &bad));
    assert_non_null(submit_insert(db, "cf3", "1", &good2));
    run_until(db, is_idle);
    assert_int_equal(bad.fired, 1);
    assert_non_null(strstr(bad.error, "refused at commit: bad-cf2"));
    assert_int_equal(good1.fired, 1);
    assert_string_equal(good1.error, "");
    assert_int_equal(good2.fired, 1);
    assert_string_equal(good2.error, "");
    /* every job told it committed is in the table; the refused one is not */
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k IN ('cf1','cf3')"), 2);
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k = 'bad-cf2'"), 0);

    /* alone, a refused job fails; once the cause is gone, the same job commits */
    result_t alone = {0};
    assert_non_null(submit_insert(db, "bad-cf4", "1", &alone));
    run_until(db, is_idle);
    assert_non_null(strstr(alone.error, "refused at commit"));
    exec_admin("DROP TRIGGER t_db_refuse ON t_db");
    result_t retried = {0};
    assert_non_null(submit_insert(db, "bad-cf4", "1", &retried));
    run_until(db, is_idle);
    assert_string_equal(retried.error, "");
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k = 'bad-cf4'"), 1);
    gw_db_destroy(db);
}

static bool is_busy(gw_db_t *db)
{
    return !gw_db_is_idle(db);
}

/* One deadline: a job waiting behind a slow commit gets its answer within SETTLED_DB_COMMIT_TIMEOUT_MS of its
 * submission, queueing and its own commit together, not a full timeout after its batch started. */
static void test_one_deadline_for_queue_and_commit(void **state)
{
    exec_admin("CREATE OR REPLACE FUNCTION t_db_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " IF NEW.k LIKE 'slow%' THEN PERFORM pg_sleep(0.6); END IF; RETURN NEW; END $$;"
               "DROP TRIGGER IF EXISTS t_db_slow ON t_db;"
               "CREATE TRIGGER t_db_slow BEFORE INSERT ON t_db FOR EACH ROW EXECUTE FUNCTION t_db_slow()");
    gw_config_t one = cfg;
    one.db_connections = 1;
    one.db_commit_timeout_ms = 1000;
    gw_db_t *db = gw_db_create(loop, &one, stmts, 2);
    run_until(db, is_up);
    result_t slow1 = {0}, waiting = {0}, slow2 = {0};
    uint64_t t0 = h2o_now(loop);
    assert_non_null(submit_insert(db, "slow-d1", "1", &slow1));
    run_until(db, is_busy);
    h2o_evloop_run(loop, 1); /* slow-d1's batch is in flight; the next two queue behind it */
    assert_non_null(submit_insert(db, "d2", "1", &waiting));
    assert_non_null(submit_insert(db, "slow-d3", "1", &slow2));
    uint64_t answered = 0;
    for (int i = 0; i != 400 && waiting.fired == 0; ++i)
        h2o_evloop_run(loop, 5);
    answered = h2o_now(loop);
    run_until(db, is_idle);
    assert_int_equal(waiting.fired, 1);
    /* slow-d1 commits at about 0.6 s; the batch of d2 and slow-d3 would end at about 1.2 s */
    if (answered - t0 > 1000 + 20)
        fail_msg("d2 was answered %llu ms after its submission (deadline 1000 ms)",
                 (unsigned long long)(answered - t0));
    assert_string_equal(slow1.error, "");
    /* answered in time: committed (and then stored), or refused because its commit could not finish in time */
    if (waiting.error[0] == '\0')
        assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k = 'd2'"), 1);
    else if (strstr(waiting.error, "timed out") == NULL &&
             strstr(waiting.error, "SETTLED_DB_COMMIT_TIMEOUT_MS") == NULL)
        fail_msg("d2 failed for another reason: %s", waiting.error);
    exec_admin("DROP TRIGGER t_db_slow ON t_db");
    gw_db_destroy(db);
}

static void test_binary_params_are_byte_exact(void **state)
{
    gw_db_t *db = gw_db_create(loop, &cfg, stmts, 2);
    run_until(db, is_up);
    unsigned char bytes[256];
    for (int i = 0; i != 256; ++i)
        bytes[i] = (unsigned char)i; /* includes NUL and invalid UTF-8 */
    gw_db_param_t p[] = {{bytes, sizeof(bytes), true}};
    result_t r = {0};
    assert_non_null(gw_db_submit(db, stmts[1], p, 1, on_done, &r));
    run_until(db, is_idle);
    assert_string_equal(r.error, "");
    char sql[700] = "SELECT count(*) FROM t_db_bytes WHERE b = '\\x";
    for (int i = 0; i != 256; ++i)
        snprintf(sql + strlen(sql), 3, "%02x", i);
    strcat(sql, "'::bytea");
    assert_int_equal(query_int(sql), 1);
    gw_db_destroy(db);
}

/* Jobs merged into one statement over arrays store exactly what each passed: every byte value of a binary parameter,
 * text that an array literal would have to quote ('"', '\\', ',', '{', NULL spelled out, UTF-8), and SQL NULLs. */
static void test_merged_arrays_are_byte_exact(void **state)
{
    exec_admin("DROP TABLE IF EXISTS t_db_mb; CREATE TABLE t_db_mb (k text PRIMARY KEY, b bytea, note text);"
               "DROP TABLE IF EXISTS t_db_statements; CREATE TABLE t_db_statements (n int);"
               "CREATE OR REPLACE FUNCTION t_db_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " INSERT INTO t_db_statements VALUES (1); RETURN NULL; END $$;"
               "CREATE TRIGGER t_db_mb_count AFTER INSERT ON t_db_mb FOR EACH STATEMENT EXECUTE FUNCTION t_db_count()");
    gw_config_t one = cfg;
    one.db_connections = 1;
    gw_db_t *db = gw_db_create(loop, &one, stmts, 3);
    run_until(db, is_up);
    static const char *const notes[] = {"plain", "a \"quoted\" word", "back\\slash", "{1,2}", "NULL", "caf\xc3\xa9",
                                        ""};
    enum { N = 12 };
    unsigned char bytes[N][300];
    result_t r[N] = {{0}};
    char keys[N][16];
    for (int i = 0; i != N; ++i) {
        snprintf(keys[i], sizeof(keys[i]), "mb%d", i);
        for (int j = 0; j != 300; ++j)
            bytes[i][j] = (unsigned char)(i * 7 + j); /* every value, NUL and invalid UTF-8 among them */
        const char *note = i % 4 == 3 ? NULL : notes[i % 7];
        gw_db_param_t p[] = {{keys[i], strlen(keys[i]), false},
                             {i == 5 ? NULL : bytes[i], i == 5 ? 0 : (size_t)(i * 25), true},
                             {note, note != NULL ? strlen(note) : 0, false}};
        assert_non_null(gw_db_submit(db, stmts[2], p, 3, on_done, &r[i]));
    }
    run_until(db, is_idle);
    for (int i = 0; i != N; ++i) {
        assert_string_equal(r[i].error, "");
        assert_int_equal(r[i].rows, 1);
    }
    PGconn *pg = PQconnectdb(url);
    for (int i = 0; i != N; ++i) {
        const char *params[1] = {keys[i]};
        PGresult *res = PQexecParams(pg, "SELECT b, note FROM t_db_mb WHERE k = $1", 1, NULL, params, NULL, NULL, 1);
        assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
        assert_int_equal(PQntuples(res), 1);
        if (i == 5) {
            assert_true(PQgetisnull(res, 0, 0));
        } else {
            assert_false(PQgetisnull(res, 0, 0));
            assert_int_equal(PQgetlength(res, 0, 0), i * 25);
            assert_memory_equal(PQgetvalue(res, 0, 0), bytes[i], (size_t)(i * 25));
        }
        const char *note = i % 4 == 3 ? NULL : notes[i % 7];
        if (note == NULL) {
            assert_true(PQgetisnull(res, 0, 1));
        } else {
            assert_false(PQgetisnull(res, 0, 1));
            assert_int_equal(PQgetlength(res, 0, 1), (int)strlen(note));
            assert_memory_equal(PQgetvalue(res, 0, 1), note, strlen(note));
        }
        PQclear(res);
    }
    PQfinish(pg);
    long long statements = query_int("SELECT count(*) FROM t_db_statements");
    if (statements >= N)
        fail_msg("%d jobs ran as %lld statements: they were not merged", N, statements);
    gw_db_destroy(db);
}

static void test_detached_job_still_commits_without_callback(void **state)
{
    gw_db_t *db = gw_db_create(loop, &cfg, stmts, 2);
    run_until(db, is_up);
    result_t r = {0};
    gw_db_job_t *job = submit_insert(db, "c1", "1", &r);
    assert_non_null(job);
    gw_db_job_detach(job);
    run_until(db, is_idle);
    assert_int_equal(r.fired, 0);
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k = 'c1'"), 1);
    gw_db_destroy(db);
}

static void test_unreachable_store_refuses_jobs(void **state)
{
    gw_config_t bad = cfg;
    bad.database_url = "postgresql://settled@127.0.0.1:1/postgres"; /* nothing listens on port 1 */
    gw_db_t *db = gw_db_create(loop, &bad, stmts, 2);
    for (int i = 0; i != 20; ++i)
        h2o_evloop_run(loop, 10);
    assert_false(gw_db_is_up(db));
    /* a job is either refused at once (every connection down: its callback never fires) or, if it arrives
     * while a reconnect attempt is in progress, fails once that attempt fails; it never commits */
    for (int i = 0; i != 20; ++i) {
        result_t r = {0};
        gw_db_job_t *job = submit_insert(db, "d1", "1", &r);
        if (job == NULL) {
            assert_int_equal(r.fired, 0);
        } else {
            for (int j = 0; j != 100 && r.fired == 0; ++j)
                h2o_evloop_run(loop, 10);
            assert_int_equal(r.fired, 1);
            assert_string_not_equal(r.error, "");
        }
        h2o_evloop_run(loop, 10);
    }
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k = 'd1'"), 0);
    gw_db_destroy(db);
}

static void test_jobs_wait_for_a_connection_being_made(void **state)
{
    /* submitted right after create, before any connection is up: the job waits and commits */
    gw_db_t *db = gw_db_create(loop, &cfg, stmts, 2);
    assert_false(gw_db_is_up(db));
    result_t r = {0};
    assert_non_null(submit_insert(db, "f1", "1", &r));
    run_until(db, is_idle);
    assert_int_equal(r.fired, 1);
    assert_string_equal(r.error, "");
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k = 'f1'"), 1);
    gw_db_destroy(db);
}

static void test_queue_limit(void **state)
{
    gw_config_t small = cfg;
    small.db_queue_limit = 3;
    gw_db_t *db = gw_db_create(loop, &small, stmts, 2);
    run_until(db, is_up);
    result_t r[4] = {{0}};
    assert_non_null(submit_insert(db, "e1", "1", &r[0]));
    assert_non_null(submit_insert(db, "e2", "1", &r[1]));
    assert_non_null(submit_insert(db, "e3", "1", &r[2]));
    assert_null(submit_insert(db, "e4", "1", &r[3]));
    run_until(db, is_idle);
    assert_int_equal(r[0].fired + r[1].fired + r[2].fired, 3);
    assert_int_equal(r[3].fired, 0);
    gw_db_destroy(db);
}

/* SETTLED_TEST_PG_URL with its host replaced by host (its user, port and database kept). */
static void url_with_host(char *buf, size_t len, const char *host)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &msg);
    assert_non_null(opts);
    const char *user = "", *port = "5432", *dbname = "postgres";
    for (PQconninfoOption *o = opts; o->keyword != NULL; ++o) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "user") == 0)
            user = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
    }
    snprintf(buf, len, "host=%s port=%s user=%s dbname=%s", host, port, user, dbname);
    PQconninfoFree(opts);
}

/* Runs the loop for ms of the clock (h2o_evloop_run returns early whenever something happened). */
static void run_for_ms(int ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        h2o_evloop_run(loop, 10);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

/* A repeating 10 ms timer, to see the loop go round. */
static h2o_timeout_t tick_timeout;
static h2o_timeout_entry_t tick_entry;
static int ticks;

static void on_tick(h2o_timeout_entry_t *entry)
{
    ++ticks;
    h2o_timeout_link(loop, &tick_timeout, &tick_entry);
}

/* The database given by a host name (localhost), with a DNS that takes 300 ms: the pool connects and commits,
 * the name is never looked up on the loop's thread, and the loop goes round all the while. */
static void test_host_name_resolved_off_the_loop(void **state)
{
    char named[512];
    url_with_host(named, sizeof(named), "localhost");
    gw_config_t c = cfg;
    c.database_url = named;
    atomic_store(&name_lookups, 0);
    atomic_store(&name_lookups_on_loop, 0);
    atomic_store(&name_delay_ms, 300);
    h2o_timeout_init(loop, &tick_timeout, 10);
    tick_entry = (h2o_timeout_entry_t){.cb = on_tick};
    ticks = 0;
    h2o_timeout_link(loop, &tick_timeout, &tick_entry);
    gw_db_t *db = gw_db_create(loop, &c, stmts, 2);
    result_t r = {0};
    assert_non_null(submit_insert(db, "h1", "1", &r)); /* waits for the connection being made */
    run_until(db, is_idle);
    h2o_timeout_unlink(&tick_entry);
    h2o_timeout_dispose(loop, &tick_timeout);
    atomic_store(&name_delay_ms, 0);
    assert_int_equal(r.fired, 1);
    assert_string_equal(r.error, "");
    assert_int_equal(query_int("SELECT count(*) FROM t_db WHERE k = 'h1'"), 1);
    if (atomic_load(&name_lookups_on_loop) != 0)
        fail_msg("%d of %d lookups of localhost ran on the loop's thread", atomic_load(&name_lookups_on_loop),
                 atomic_load(&name_lookups));
    assert_true(atomic_load(&name_lookups) >= 1);
    if (ticks < 20)
        fail_msg("the loop went round %d times in 10 ms steps while a 300 ms lookup ran", ticks);
    gw_db_destroy(db);
}

/* A name that moves to the server's address (a failover, a DNS change) is followed on the next reconnect; a host
 * list mixing a socket directory and a name connects through the name. */
static void test_moved_name_is_followed(void **state)
{
    char named[512];
    url_with_host(named, sizeof(named), "pg-moving.test");
    fake_dns("pg-moving.test", "127.0.0.2"); /* nothing listens there */
    gw_config_t c = cfg;
    c.database_url = named;
    gw_db_t *db = gw_db_create(loop, &c, stmts, 2);
    run_for_ms(400);
    assert_false(gw_db_is_up(db));
    int before = atomic_load(&name_lookups);
    fake_dns("pg-moving.test", "127.0.0.1");
    run_until(db, is_up);
    assert_true(atomic_load(&name_lookups) > before);
    gw_db_destroy(db);

    url_with_host(named, sizeof(named), "/nonexistent-socket-dir,localhost");
    db = gw_db_create(loop, &c, stmts, 2);
    run_until(db, is_up);
    gw_db_destroy(db);
}

/* Captures stderr (the log) from capture_start to capture_stop, which returns how many lines contain needle. */
static int capture_fd = -1, saved_stderr = -1;

static void capture_start(void)
{
    char path[] = "/tmp/settled-db-log.XXXXXX";
    capture_fd = mkstemp(path);
    saved_stderr = dup(2);
    assert_true(capture_fd >= 0 && saved_stderr >= 0);
    unlink(path);
    dup2(capture_fd, 2);
}

static int capture_stop(const char *needle)
{
    dup2(saved_stderr, 2);
    close(saved_stderr);
    off_t len = lseek(capture_fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)len + 1);
    assert_int_equal(pread(capture_fd, text, (size_t)len, 0), len);
    close(capture_fd);
    int n = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
        n += strstr(line, needle) != NULL;
    free(text);
    return n;
}

/* A host name that does not resolve: the pool stays down and refuses jobs (503s, as with a server that is
 * down), and of all the retries of both connections one line is logged. */
static void test_unresolvable_name_stays_down_and_logs_once(void **state)
{
    char named[512];
    url_with_host(named, sizeof(named), "pg-nowhere.test");
    fake_dns("pg-nowhere.test", "");
    gw_config_t c = cfg;
    c.database_url = named;
    int before = atomic_load(&name_lookups);
    capture_start();
    gw_db_t *db = gw_db_create(loop, &c, stmts, 2);
    /* The backoff doubles from 100 ms, so three lookups come well within a second; a slow (sanitized, shared)
     * machine is given up to 10 s before that counts as not retrying. */
    for (int waited = 0; waited < 10000 && atomic_load(&name_lookups) - before < 3; waited += 100)
        run_for_ms(100);
    int lines = capture_stop("pg-nowhere.test"), lookups = atomic_load(&name_lookups) - before;
    assert_false(gw_db_is_up(db));
    if (lookups < 3)
        fail_msg("only %d lookups in 10 s: the connections should retry", lookups);
    if (lines != 1)
        fail_msg("%d log lines name pg-nowhere.test over %d lookups, expected 1", lines, lookups);
    result_t r = {0};
    assert_null(submit_insert(db, "n1", "1", &r)); /* every connection down: refused at once */
    gw_db_destroy(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_commits_and_counts_rows),
        cmocka_unit_test(test_failing_job_does_not_fail_neighbours),
        cmocka_unit_test(test_reads_get_their_rows),
        cmocka_unit_test(test_merged_inserts_count_rows_per_job),
        cmocka_unit_test(test_merged_arrays_are_byte_exact),
        cmocka_unit_test(test_commit_failure_fails_the_batch),
        cmocka_unit_test(test_one_deadline_for_queue_and_commit),
        cmocka_unit_test(test_binary_params_are_byte_exact),
        cmocka_unit_test(test_detached_job_still_commits_without_callback),
        cmocka_unit_test(test_unreachable_store_refuses_jobs),
        cmocka_unit_test(test_jobs_wait_for_a_connection_being_made),
        cmocka_unit_test(test_queue_limit),
        cmocka_unit_test(test_host_name_resolved_off_the_loop),
        cmocka_unit_test(test_moved_name_is_followed),
        cmocka_unit_test(test_unresolvable_name_stays_down_and_logs_once),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
