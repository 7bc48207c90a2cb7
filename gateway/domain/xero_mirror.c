/* SPDX-License-Identifier: MIT */
/* mirror.c: one Xero API call under token and quota rules, and the transactional apply of its records. */
#include "xero_mirror.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "log.h"
#include "metrics.h"
#include "xero_oauth.h"

#define DEFAULT_API_BASE "https://api.xero.com"
#define RETRY_AFTER_DEFAULT_MS 60000
#define REAUTH_RETRY_MS 60000
#define SHORT_WAIT_MS 2000 /* quota waits up to this long are slept through */
#define MAX_SLEEP_MS 5000  /* ... but not for longer than this in all */

const char *gw_mirror_api_base(const gw_config_t *cfg)
{
    return cfg->xero_api_base != NULL && cfg->xero_api_base[0] != '\0' ? cfg->xero_api_base : DEFAULT_API_BASE;
}

static uint64_t retry_after_ms(const gw_http_response_t *res)
{
    const char *v = gw_http_response_header(res, "retry-after");
    if (v == NULL)
        return RETRY_AFTER_DEFAULT_MS;
    char *end;
    long s = strtol(v, &end, 10);
    if (end == v || s < 0 || s > 86400)
        return RETRY_AFTER_DEFAULT_MS;
    return (uint64_t)(s == 0 ? 1 : s) * 1000;
}

gw_fetch_status_t gw_mirror_fetch(gw_mirror_ctx_t *ctx, const char *tenant, int64_t token_id, const cn_fetch_t *f,
                                  const char *if_modified_since, gw_fetch_result_t *out)
{
    memset(out, 0, sizeof(*out));
    char url[3000];
    snprintf(url, sizeof(url), "%s%s", gw_mirror_api_base(ctx->cfg), f->path);

    for (int attempt = 0;; ++attempt) {
        char *token = NULL, err[256] = "";
        int rc = gw_xero_access_token(ctx->db, ctx->cfg, token_id, attempt != 0, &token, err, sizeof(err));
        if (rc == -2) {
            out->status = GW_FETCH_REAUTH;
            out->wait_ms = REAUTH_RETRY_MS;
            snprintf(out->error, sizeof(out->error), "the Xero connection needs re-authorisation: %s", err);
            return out->status;
        }
        if (rc != 0) {
            out->status = GW_FETCH_FAILED;
            snprintf(out->error, sizeof(out->error), "cannot get a Xero access token: %s", err);
            return out->status;
        }

        /* a short wait (a concurrency slot, the window about to roll) is slept through; a long one gives the
         * events back to the queue, due when the quota allows, without counting an attempt */
        gw_quota_slot_t slot;
        uint64_t wait = 0, slept = 0;
        int q;
        while ((q = gw_quota_acquire(ctx->quota, tenant, &slot, &wait)) == 1 && wait <= SHORT_WAIT_MS &&
               slept < MAX_SLEEP_MS) {
            uint64_t ms = wait + (uint64_t)(rand() % 50); /* jitter: holders released together don't retry together */
            usleep((useconds_t)(ms * 1000));
            slept += ms;
        }
        if (q != 0) {
            free(token);
            if (q < 0) {
                out->status = GW_FETCH_FAILED;
                snprintf(out->error, sizeof(out->error), "not a Xero tenant id: %.64s", tenant);
            } else {
                out->status = GW_FETCH_RESCHEDULE;
                out->wait_ms = wait != 0 ? wait : 1000;
                snprintf(out->error, sizeof(out->error), "waiting for the Xero quota (%s) of tenant %s",
                         gw_quota_limit_name(slot.limit), tenant);
            }
            return out->status;
        }
        char auth[4200], tenant_hdr[128], ims[128];
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        snprintf(tenant_hdr, sizeof(tenant_hdr), "xero-tenant-id: %s", tenant);
        const char *headers[5] = {auth, tenant_hdr, "Accept: application/json", NULL, NULL};
        if (if_modified_since != NULL) {
            snprintf(ims, sizeof(ims), "If-Modified-Since: %s", if_modified_since);
            headers[3] = ims;
        }
        gw_http_request_t req = {.method = "GET", .url = url, .headers = headers};
        gw_http_response_t res;
        gw_http_do(&req, &res);
        gw_metrics_xero_call(res.status);
        gw_quota_release(ctx->quota, &slot);
        gw_quota_observe(ctx->quota, tenant, (int)res.status, gw_http_response_header(&res, "retry-after"),
                         gw_http_response_header(&res, "x-rate-limit-problem"),
                         gw_http_response_header(&res, "x-minlimit-remaining"),
                         gw_http_response_header(&res, "x-daylimit-remaining"),
                         gw_http_response_header(&res, "x-appminlimit-remaining"));
        memset(auth, 0, sizeof(auth));
        free(token);

        if (res.status == 401 && attempt == 0) { /* the access token was revoked early: refresh once */
            gw_http_response_free(&res);
            continue;
        }
        if (res.status == 200) {
            long n = cn_xero_connector.count_records(f->record_kind, (cn_str_t){res.body, res.body_len});
            if (n < 0) {
                gw_http_response_free(&res);
                out->status = GW_FETCH_FAILED;
                snprintf(out->error, sizeof(out->error), "Xero answered 200 without a %s list", f->record_kind);
                return out->status;
            }
            out->status = GW_FETCH_OK;
            out->res = res;
            return out->status;
        }
        if (res.status == 429) {
            out->status = GW_FETCH_RESCHEDULE;
            out->wait_ms = retry_after_ms(&res);
            const char *problem = gw_http_response_header(&res, "x-rate-limit-problem");
            snprintf(out->error, sizeof(out->error), "Xero rate limit (%s) for tenant %s",
                     problem != NULL ? problem : "unknown", tenant);
        } else {
            out->status = GW_FETCH_FAILED;
            if (res.status == 0)
                snprintf(out->error, sizeof(out->error), "Xero API call failed: %s",
                         res.error != NULL ? res.error : "unknown error");
            else
                snprintf(out->error, sizeof(out->error), "Xero API answered %ld", res.status);
        }
        gw_http_response_free(&res);
        return out->status;
    }
}

int64_t gw_mirror_token_of(gw_mirror_ctx_t *ctx, int64_t organisation_id, const char *tenant)
{
    static const char sql[] = "SELECT token_id FROM xero_tenants WHERE organisation_id = $1 AND tenant_id = $2::uuid";
    char org[24];
    snprintf(org, sizeof(org), "%lld", (long long)organisation_id);
    const char *params[] = {org, tenant};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql, 2, params);
    int64_t id = 0;
    if (r != NULL && gw_dbs_nrows(r) == 1)
        id = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
    gw_dbs_result_free(r);
    return id;
}

static void count_outcome(gw_apply_counts_t *c, const char *outcome)
{
    if (outcome == NULL)
        return;
    if (strcmp(outcome, "inserted") == 0)
        ++c->inserted;
    else if (strcmp(outcome, "updated") == 0)
        ++c->updated;
    else if (strcmp(outcome, "stale") == 0)
        ++c->stale;
    else
        ++c->unchanged;
}

/* Appends the ids of a PostgreSQL uuid[] text value ("{a,b}") to *list. */
static void append_uuid_array(const char *text, char ***list, size_t *n)
{
    if (text == NULL)
        return;
    const char *p = text;
    while (*p != '\0') {
        while (*p == '{' || *p == ',' || *p == '}' || *p == '"')
            ++p;
        const char *start = p;
        while (*p != '\0' && *p != ',' && *p != '}' && *p != '"')
            ++p;
        if (p - start == 36) {
            *list = realloc(*list, sizeof(**list) * (*n + 1));
            if (*list == NULL || ((*list)[*n] = strndup(start, 36)) == NULL)
                abort();
            ++*n;
        }
    }
}

int gw_mirror_apply(gw_mirror_ctx_t *ctx, int64_t organisation_id, const char *tenant, const char *record_kind,
                    const char *body, const char *correlation, gw_apply_counts_t *counts, char ***refetch,
                    size_t *nrefetch, char *err, size_t errlen)
{
    static const char sql_invoices[] = "SELECT invoice_id, outcome FROM xero_upsert_invoices($1::bigint, $2::uuid, "
                                       "$3::jsonb, $4)";
    static const char sql_contacts[] = "SELECT contact_id, outcome, match FROM xero_upsert_contacts($1::bigint, "
                                       "$2::uuid, $3::jsonb, $4, $5::boolean)";
    static const char sql_credit_notes[] = "SELECT credit_note_id, outcome, invoice_ids FROM "
                                           "xero_upsert_credit_notes($1::bigint, $2::uuid, $3::jsonb, $4)";
    char org[24];
    snprintf(org, sizeof(org), "%lld", (long long)organisation_id);
    const char *params[] = {org, tenant, body, correlation, ctx->cfg->match_create_customers ? "true" : "false"};
    const char *sql;
    int nparams = 4;
    bool credit_notes = false;
    if (strcmp(record_kind, "xero.invoices") == 0) {
        sql = sql_invoices;
    } else if (strcmp(record_kind, "xero.contacts") == 0) {
        sql = sql_contacts;
        nparams = 5;
    } else if (strcmp(record_kind, "xero.creditnotes") == 0) {
        sql = sql_credit_notes;
        credit_notes = true;
    } else {
        snprintf(err, errlen, "unknown record kind %s", record_kind);
        return -1;
    }
    /* one statement is one transaction: the records of a response are applied together or not at all */
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql, nparams, params);
    if (r == NULL) {
        snprintf(err, errlen, "applying %s failed: %s", record_kind, gw_dbs_error(ctx->db));
        return -1;
    }
    for (size_t i = 0; i != gw_dbs_nrows(r); ++i) {
        count_outcome(counts, gw_dbs_value(r, i, 1));
        if (credit_notes && refetch != NULL)
            append_uuid_array(gw_dbs_value(r, i, 2), refetch, nrefetch);
    }
    gw_dbs_result_free(r);
    return 0;
}
