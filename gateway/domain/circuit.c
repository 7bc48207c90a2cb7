/* SPDX-License-Identifier: MIT */
/* circuit.c: the C room of schema/functions/circuit.sql: a provider that is down is known to be down by every worker,
 * and the events that wait for it keep their attempts. */
#include "circuit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "alert.h"
#include "log.h"
#include "metrics.h"

static const char sql_failure[] = "SELECT state, wait_ms, opened FROM circuit_failure($1, $2, $3, $4, $5, $6)";
static const char sql_success[] = "SELECT circuit_success($1, $2)";
static const char sql_take[] = "SELECT provider, account FROM circuit_take_probe($1::text[], $2, $3)";
static const char sql_release[] = "SELECT circuit_release_probe($1, $2, $3, $4)";
static const char sql_gauges[] = "SELECT provider, account, state, failures,"
                                 " (extract(epoch FROM retry_at - now()) * 1000)::bigint, last_error"
                                 " FROM provider_circuits ORDER BY provider, account LIMIT $1";

static enum gw_circuit_state state_of(const char *s)
{
    return s == NULL || strcmp(s, "closed") == 0 ? GW_CIRCUIT_CLOSED
           : strcmp(s, "open") == 0              ? GW_CIRCUIT_OPEN
                                                 : GW_CIRCUIT_HALF_OPEN;
}

int gw_circuit_failure(gw_queue_t *q, const char *provider, const char *account, const char *error,
                       gw_circuit_result_t *out)
{
    const gw_config_t *cfg = q->cfg;
    char threshold[16], cooldown[24], cap[24];
    snprintf(threshold, sizeof(threshold), "%d", cfg->circuit_failures);
    snprintf(cooldown, sizeof(cooldown), "%d", cfg->circuit_cooldown_ms);
    snprintf(cap, sizeof(cap), "%d", cfg->circuit_cooldown_max_ms);
    const char *params[] = {provider, account != NULL ? account : "", error, threshold, cooldown, cap};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_failure, 6, params);
    if (r == NULL || gw_dbs_nrows(r) != 1) {
        gw_log(GW_LOG_WARN, "worker %d: cannot count a failure against the %s circuit: %s", q->index, provider,
               gw_dbs_error(q->db));
        gw_dbs_result_free(r);
        return -1;
    }
    out->state = state_of(gw_dbs_value(r, 0, 0));
    out->wait_ms = strtoull(gw_dbs_value(r, 0, 1), NULL, 10);
    out->opened = strcmp(gw_dbs_value(r, 0, 2), "t") == 0;
    gw_dbs_result_free(r);
    if (out->opened) {
        gw_logline_t line;
        gw_log_begin(&line, GW_LOG_WARN, "circuit open");
        gw_log_str(&line, "provider", provider, strlen(provider));
        gw_log_str(&line, "account", params[1], strlen(params[1]));
        gw_log_int(&line, "failures", cfg->circuit_failures);
        gw_log_ms(&line, "probe_in_ms", (double)out->wait_ms);
        gw_log_str(&line, "error", error, strlen(error));
        gw_log_end(&line);
        gw_alert_circuit(provider, params[1], "open", error);
    }
    return 0;
}

void gw_circuit_success(gw_queue_t *q, const char *provider, const char *account)
{
    const char *params[] = {provider, account != NULL ? account : ""};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_success, 2, params);
    if (r == NULL) {
        gw_log(GW_LOG_WARN, "worker %d: cannot close the %s circuit: %s", q->index, provider, gw_dbs_error(q->db));
        return;
    }
    const char *was = gw_dbs_nrows(r) == 1 ? gw_dbs_value(r, 0, 0) : NULL;
    if (was != NULL && strcmp(was, "closed") != 0) {
        gw_logline_t line;
        gw_log_begin(&line, GW_LOG_INFO, "circuit closed");
        gw_log_str(&line, "provider", provider, strlen(provider));
        gw_log_str(&line, "account", params[1], strlen(params[1]));
        gw_log_str(&line, "was", was, strlen(was));
        gw_log_end(&line);
        gw_alert_circuit(provider, params[1], "closed", NULL);
    }
    gw_dbs_result_free(r);
}

int gw_circuit_take_probe(gw_queue_t *q, const char *const *providers, size_t nproviders, char *provider,
                          size_t provider_cap, char *account, size_t account_cap)
{
    /* the providers as an array literal: they are the processors' own names (letters only) */
    char list[256] = "{";
    for (size_t i = 0; i != nproviders; ++i)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s\"%s\"", i != 0 ? "," : "", providers[i]);
    snprintf(list + strlen(list), sizeof(list) - strlen(list), "}");
    char lease[16];
    snprintf(lease, sizeof(lease), "%d", q->cfg->worker_lease_ms);
    const char *params[] = {list, q->owner, lease};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_take, 3, params);
    if (r == NULL)
        return -1;
    int got = gw_dbs_nrows(r) == 1;
    if (got) {
        snprintf(provider, provider_cap, "%s", gw_dbs_value(r, 0, 0));
        snprintf(account, account_cap, "%s", gw_dbs_value(r, 0, 1));
        gw_log(GW_LOG_INFO, "worker %d: probing the open %s circuit of account %s", q->index, provider, account);
    }
    gw_dbs_result_free(r);
    return got;
}

void gw_circuit_release_probe(gw_queue_t *q, const char *provider, const char *account)
{
    char wait[24];
    snprintf(wait, sizeof(wait), "%d", q->cfg->circuit_cooldown_ms);
    const char *params[] = {provider, account, q->owner, wait};
    gw_dbs_result_free(gw_dbs_query(q->db, sql_release, 4, params));
}

void gw_circuit_gauges(gw_queue_t *q)
{
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", GW_METRICS_MAX_CIRCUITS);
    const char *params[] = {limit};
    gw_dbs_result_t *r = gw_dbs_query(q->db, sql_gauges, 1, params);
    if (r == NULL)
        return;
    size_t n = gw_dbs_nrows(r);
    gw_metrics_circuit_t *c = calloc(n != 0 ? n : 1, sizeof(*c));
    if (c == NULL)
        abort();
    for (size_t i = 0; i != n; ++i) {
        snprintf(c[i].provider, sizeof(c[i].provider), "%s", gw_dbs_value(r, i, 0));
        snprintf(c[i].account, sizeof(c[i].account), "%s", gw_dbs_value(r, i, 1));
        for (char *p = c[i].account; *p != '\0'; ++p) /* a label value: nothing that needs escaping */
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                  strchr("-_.:", *p) != NULL))
                *p = '_';
        snprintf(c[i].state, sizeof(c[i].state), "%s", gw_dbs_value(r, i, 2));
        c[i].failures = atoi(gw_dbs_value(r, i, 3));
        const char *wait = gw_dbs_value(r, i, 4);
        c[i].retry_in_ms = wait != NULL ? strtoll(wait, NULL, 10) : 0;
    }
    gw_metrics_circuits(c, n);
    free(c);
    gw_dbs_result_free(r);
}
