/* SPDX-License-Identifier: MIT */
/*
 * mailer.c: the sender of the notification e-mails (mailer.h), modelled on the Xero write-back sender
 * (xero_writeback.c): claim with a lease, one SMTP transaction per row, its outcome recorded in one statement.
 */
#include "mailer.h"
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "dunning.h"
#include "log.h"
#include "mem.h"
#include "notifications.h"
#include "smtp.h"

#define WAIT_SLICE_MS 250
#define DB_RETRY_MS 1000
#define REASON_MAX 400

static const char sql_park_lost[] = "SELECT id, organisation_id, attempts, last_error"
                                    " FROM notification_park_lost($1::integer)";
static const char sql_claim[] = "SELECT id, organisation_id, kind, recipient, subject, body_text, body_html, attempts,"
                                " message_id, invoice_id, customer_id"
                                " FROM notification_claim($1, $2::bigint, $3::integer, $4)";
static const char sql_sent[] = "SELECT notification_sent($1::bigint, $2, $3)";
static const char sql_fail[] = "SELECT notification_fail($1::bigint, $2, $3, $4, $5::bigint[], $6::bigint, $7)";
static const char sql_release_mine[] =
    "UPDATE notifications SET status = 'pending', lease_owner = NULL, lease_until = NULL, next_attempt_at = now(),"
    " attempts = greatest(attempts - 1, 0) WHERE lease_owner = $1 AND status = 'sending'";
static const char sql_next_due[] = "SELECT notification_next_due_ms()";

static gw_log_limit_t db_failed_log = GW_LOG_LIMIT_INIT(GW_LOG_WARN, 60000);

/* The lease: long enough for one SMTP transaction (connect, TLS, the message) with room to record it. */
static int lease_ms(const gw_config_t *cfg)
{
    long long floor = (long long)cfg->http_timeout_ms + 5000; /* CURLOPT_TIMEOUT bounds the whole transaction */
    long long lease = cfg->worker_lease_ms > floor ? cfg->worker_lease_ms : floor;
    return lease > 86400000 ? 86400000 : (int)lease;
}

static void log_row(enum gw_log_level level, const char *msg, const char *id, const char *org, const char *kind,
                    int attempt, const char *error)
{
    if (!gw_log_enabled(level))
        return;
    gw_logline_t line;
    gw_log_begin(&line, level, msg);
    gw_log_str(&line, "notification", id, strlen(id));
    gw_log_str(&line, "organisation", org, strlen(org));
    gw_log_str(&line, "kind", kind, strlen(kind));
    gw_log_int(&line, "attempt", attempt);
    if (error != NULL)
        gw_log_str(&line, "error", error, strlen(error));
    gw_log_end(&line);
}

/* The domain of the sender's address, for Message-IDs. */
static const char *from_domain(const gw_config_t *cfg)
{
    const char *at = cfg->smtp_from != NULL ? strrchr(cfg->smtp_from, '@') : NULL;
    return at != NULL ? at + 1 : "settled.invalid";
}

/* Records a send of row id that did not work (kind permanent, transient, wait), and logs what became of it. */
static void record_failure(const gw_config_t *cfg, gw_dbs_t *db, const char *owner, const char *id, const char *org,
                           const char *kind_of_row, int attempt, const char *kind, const char *error, long wait_ms,
                           const char *correlation)
{
    char waits[1024], wait[24];
    gw_retry_schedule_pg_array(&cfg->retry_schedule, waits, sizeof(waits));
    snprintf(wait, sizeof(wait), "%ld", wait_ms);
    const char *params[] = {id, owner, kind, error, waits, wait, correlation};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_fail, 7, params);
    if (r == NULL) {
        gw_log_limited(&db_failed_log, "notification %s: cannot record a failure: %s", id, gw_dbs_error(db));
        return;
    }
    const char *status = gw_dbs_value(r, 0, 0);
    if (status != NULL && strcmp(status, "dead") == 0)
        log_row(GW_LOG_WARN, "notification dead", id, org, kind_of_row, attempt, error);
    else if (status != NULL && strcmp(kind, "wait") != 0)
        log_row(GW_LOG_WARN, "notification not sent, retried later", id, org, kind_of_row, attempt, error);
    gw_dbs_result_free(r);
}

static void send_row(const gw_config_t *cfg, gw_dbs_t *db, const char *owner, gw_dbs_result_t *r, size_t i)
{
    const char *id = gw_dbs_value(r, i, 0), *org = gw_dbs_value(r, i, 1), *kind = gw_dbs_value(r, i, 2);
    const char *customer = gw_dbs_value(r, i, 10);
    int attempt = atoi(gw_dbs_value(r, i, 7));
    char correlation[64];
    snprintf(correlation, sizeof(correlation), "notification:%s:a%d", id, attempt);

    /* reminders: how to stop them (RFC 2369), with the customer's signed token (dunning.h): settled's own
     * /v1/unsubscribe page, which also takes RFC 8058's one-click POST, and a mailto naming the token */
    char unsubscribe[1024] = "";
    bool reminder = gw_notify_is_reminder(kind), one_click = false;
    if (reminder) {
        int64_t org_id = strtoll(org, NULL, 10), customer_id = strtoll(customer, NULL, 10);
        char url[700], token[GW_UNSUBSCRIBE_TOKEN_MAX];
        size_t len = 0;
        if (gw_unsubscribe_url(cfg, org_id, customer_id, url, sizeof(url)) > 0) {
            len += (size_t)snprintf(unsubscribe, sizeof(unsubscribe), "<%s>, ", url);
            one_click = true;
        }
        if (gw_unsubscribe_token(cfg, org_id, customer_id, token) > 0)
            snprintf(unsubscribe + len, sizeof(unsubscribe) - len, "<mailto:%s?subject=unsubscribe%%20%s>",
                     cfg->smtp_from, token);
        else
            snprintf(unsubscribe + len, sizeof(unsubscribe) - len, "<mailto:%s?subject=unsubscribe%%20customer%%20%s>",
                     cfg->smtp_from, customer);
    }
    gw_smtp_message_t msg = {.from = cfg->smtp_from,
                             .to = gw_dbs_value(r, i, 3),
                             .subject = gw_dbs_value(r, i, 4),
                             .text = gw_dbs_value(r, i, 5),
                             .html = gw_dbs_value(r, i, 6),
                             .message_id = gw_dbs_value(r, i, 8),
                             .list_unsubscribe = reminder ? unsubscribe : NULL,
                             .one_click = one_click,
                             .date = (long)time(NULL)};
    gw_smtp_server_t server = {.url = cfg->smtp_url,
                               .user = cfg->smtp_user,
                               .password = cfg->smtp_password,
                               .starttls_required =
                                   cfg->smtp_starttls == NULL || strcmp(cfg->smtp_starttls, "off") != 0,
                               .timeout_ms = cfg->http_timeout_ms,
                               .connect_timeout_ms = cfg->http_connect_timeout_ms};
    int reply = 0;
    char reason[REASON_MAX];
    gw_smtp_status_t st = gw_smtp_send(&server, &msg, &reply, reason, sizeof(reason));
    if (st == GW_SMTP_SENT) {
        /* the server has it: record it now, in one statement (the only window for a resend) */
        const char *params[] = {id, owner, correlation};
        gw_dbs_result_t *res = gw_dbs_query(db, sql_sent, 3, params);
        if (res == NULL)
            gw_log_limited(&db_failed_log, "notification %s: sent, but cannot record it: %s", id, gw_dbs_error(db));
        else if (strcmp(gw_dbs_value(res, 0, 0), "t") != 0)
            log_row(GW_LOG_WARN, "notification sent, but its lease was taken over", id, org, kind, attempt, NULL);
        else
            log_row(GW_LOG_INFO, "notification sent", id, org, kind, attempt, NULL);
        gw_dbs_result_free(res);
        return;
    }
    record_failure(cfg, db, owner, id, org, kind, attempt, st == GW_SMTP_PERMANENT ? "permanent" : "transient", reason,
                   0, correlation);
}

static int park_lost(const gw_config_t *cfg, gw_dbs_t *db)
{
    char max[16];
    snprintf(max, sizeof(max), "%d", cfg->worker_max_attempts);
    const char *params[] = {max};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_park_lost, 1, params);
    if (r == NULL)
        return -1;
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i)
        gw_log(GW_LOG_WARN, "notification %s dead (organisation %s): %s", gw_dbs_value(r, i, 0), gw_dbs_value(r, i, 1),
               gw_dbs_value(r, i, 3));
    gw_dbs_result_free(r);
    return 0;
}

int gw_mailer_round(const gw_config_t *cfg, gw_dbs_t *db, const char *owner, int limit, const atomic_bool *stop)
{
    if (park_lost(cfg, db) != 0) {
        gw_log_limited(&db_failed_log, "mailer: %s", gw_dbs_error(db));
        return -1;
    }
    char lease[16], n[16];
    snprintf(lease, sizeof(lease), "%d", lease_ms(cfg));
    snprintf(n, sizeof(n), "%d", limit);
    const char *params[] = {owner, lease, n, from_domain(cfg)};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_claim, 4, params);
    if (r == NULL) {
        gw_log_limited(&db_failed_log, "mailer: claiming failed: %s", gw_dbs_error(db));
        return -1;
    }
    gw_log_limit_settle(&db_failed_log);
    size_t claimed = gw_dbs_nrows(r);
    for (size_t i = 0; i != claimed; ++i) {
        if (stop != NULL && atomic_load(stop)) {
            char correlation[64];
            snprintf(correlation, sizeof(correlation), "notification:%s", gw_dbs_value(r, i, 0));
            record_failure(cfg, db, owner, gw_dbs_value(r, i, 0), gw_dbs_value(r, i, 1), gw_dbs_value(r, i, 2),
                           atoi(gw_dbs_value(r, i, 7)), "wait", "the mailer is stopping", 0, correlation);
        } else {
            send_row(cfg, db, owner, r, i);
        }
    }
    gw_dbs_result_free(r);
    return (int)claimed;
}

/* ---- the thread ---- */

struct st_gw_mailer_t {
    const gw_config_t *cfg;
    gw_dbs_t *db;
    const atomic_bool *stop;
    pthread_t tid;
    char owner[96];
};

static void wait_for_work(gw_mailer_t *m)
{
    int timeout = m->cfg->worker_poll_ms;
    gw_dbs_result_t *r = gw_dbs_query(m->db, sql_next_due, 0, NULL);
    if (r != NULL && gw_dbs_value(r, 0, 0) != NULL) {
        long long due = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
        if (due < timeout)
            timeout = (int)due;
    }
    gw_dbs_result_free(r);
    if (timeout <= 0)
        return;
    if (gw_dbs_exec(m->db, "LISTEN " GW_MAILER_CHANNEL, 0, NULL) < 0) {
        usleep(WAIT_SLICE_MS * 1000);
        return;
    }
    for (int waited = 0; waited < timeout && !atomic_load(m->stop); waited += WAIT_SLICE_MS) {
        int slice = timeout - waited < WAIT_SLICE_MS ? timeout - waited : WAIT_SLICE_MS;
        if (gw_dbs_wait_notify(m->db, slice) != 0)
            return;
    }
}

static void *mailer_main(void *arg)
{
    gw_mailer_t *m = arg;
    bool db_failed = false;
    while (!atomic_load(m->stop)) {
        int n = gw_mailer_round(m->cfg, m->db, m->owner, GW_MAILER_BATCH, m->stop);
        if (n > 0)
            continue;
        if (n < 0) {
            db_failed = true;
            for (int t = 0; t < DB_RETRY_MS && !atomic_load(m->stop); t += WAIT_SLICE_MS)
                usleep(WAIT_SLICE_MS * 1000);
            continue;
        }
        if (db_failed) {
            /* what this mailer held when the database broke was claimed but not sent: due now */
            const char *params[] = {m->owner};
            if (gw_dbs_exec(m->db, sql_release_mine, 1, params) < 0)
                continue;
            db_failed = false;
            continue;
        }
        wait_for_work(m);
    }
    return NULL;
}

int gw_mailer_start(const gw_config_t *cfg, const atomic_bool *stop, const char *host, gw_mailer_t **mailer, char *err,
                    size_t errlen)
{
    *mailer = NULL;
    if (cfg->smtp_url == NULL || cfg->smtp_url[0] == '\0') {
        gw_log(GW_LOG_INFO, "SETTLED_SMTP_URL is not set: notification e-mails wait in the outbox");
        return 0;
    }
    gw_mailer_t *m = gw_xcalloc(1, sizeof(*m));
    m->cfg = cfg;
    m->stop = stop;
    snprintf(m->owner, sizeof(m->owner), "%s:%d:mailer", host, (int)getpid());
    if ((m->db = gw_dbs_connect(cfg->database_url, err, errlen)) == NULL) {
        free(m);
        return -1;
    }
    if (pthread_create(&m->tid, NULL, mailer_main, m) != 0) {
        gw_log(GW_LOG_ERROR, "cannot start the mailer thread: %s", strerror(errno));
        abort();
    }
    *mailer = m;
    return 0;
}

void gw_mailer_stop(gw_mailer_t *m)
{
    if (m == NULL)
        return;
    pthread_join(m->tid, NULL);
    gw_dbs_close(m->db);
    free(m);
}
