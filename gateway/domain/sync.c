/* SPDX-License-Identifier: MIT */
/* sync.c: If-Modified-Since paging through a Xero tenant, for the CLI and the scheduled drift sweep. */
#include "sync.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "log.h"
#include "metrics.h"
#include "xero_mirror.h"
#include "xero_terms.h"

#define MAX_PAGES 100000
#define MAX_WAIT_MS 120000             /* longest a sync sleeps for a quota before it gives up */
#define HIGH_WATER_OVERLAP "5 minutes" /* re-read a little before the mark: Xero's API may lag its timestamps */

const char *const gw_sync_kinds[GW_SYNC_NKINDS] = {"xero.contacts", "xero.invoices", "xero.creditnotes"};

/* The next sweep asks for what changed since the high-water mark less an overlap: the mark is the newest
 * UpdatedDateUTC mirrored (Xero's clock, not ours), and a change can show in Xero's API a little after its
 * timestamp. */
static const char sql_state[] =
    "SELECT to_char((high_water - interval '" HIGH_WATER_OVERLAP "') AT TIME ZONE 'UTC',"
    "               'YYYY-MM-DD\"T\"HH24:MI:SS') FROM xero_sync_state"
    " WHERE organisation_id = $1 AND tenant_id = $2::uuid AND resource = $3 AND high_water IS NOT NULL";
/* The mark only moves forward. $4 names the mirror table by record kind (a fixed list, never user input). */
static const char sql_save[] =
    "INSERT INTO xero_sync_state (organisation_id, tenant_id, resource, high_water, last_run_at, last_fetched,"
    "                             last_changed, last_unchanged)"
    " SELECT $1, $2::uuid, $3, CASE $4"
    "   WHEN 'xero.contacts' THEN (SELECT max(updated_date_utc) FROM xero_contacts"
    "                               WHERE organisation_id = $1 AND tenant_id = $2::uuid)"
    "   WHEN 'xero.invoices' THEN (SELECT max(updated_date_utc) FROM xero_invoices"
    "                               WHERE organisation_id = $1 AND tenant_id = $2::uuid)"
    "   WHEN 'xero.creditnotes' THEN (SELECT max(updated_date_utc) FROM xero_credit_notes"
    "                                  WHERE organisation_id = $1 AND tenant_id = $2::uuid) END,"
    "   now(), $5, $6, $7"
    " ON CONFLICT (organisation_id, tenant_id, resource) DO UPDATE SET"
    "   high_water = greatest(xero_sync_state.high_water, EXCLUDED.high_water),"
    "   last_run_at = EXCLUDED.last_run_at, last_fetched = EXCLUDED.last_fetched,"
    "   last_changed = EXCLUDED.last_changed, last_unchanged = EXCLUDED.last_unchanged";
/* The connections whose last sweep is older than $1 seconds (or that were never swept). */
#define SQL_DUE                                                                                                        \
    "SELECT t.organisation_id, t.tenant_id::text, t.token_id FROM xero_tenants t"                                      \
    "  JOIN xero_tokens k ON k.id = t.token_id AND k.status = 'active'"                                                \
    " WHERE NOT EXISTS (SELECT 1 FROM xero_sync_state s WHERE s.organisation_id = t.organisation_id"                   \
    "                     AND s.tenant_id = t.tenant_id AND s.last_run_at > now() - $1::bigint * interval '1 second')"
static const char sql_due[] = SQL_DUE " ORDER BY t.organisation_id, t.tenant_id";
/* The same for one connection ($2 organisation, $3 tenant), asked again once its lock is held: another instance
 * may have swept it between the list and the lock. */
static const char sql_still_due[] = SQL_DUE " AND t.organisation_id = $2 AND t.tenant_id = $3::uuid";
static const char sql_lock[] = "SELECT pg_try_advisory_lock(hashtext('xero-sync:' || $1))";
static const char sql_unlock[] = "SELECT pg_advisory_unlock(hashtext('xero-sync:' || $1))";

#define NAP_SLICE_MS 100 /* a sweep that sleeps for a quota looks at its stop flag this often */

static bool stopped(const atomic_bool *stop)
{
    return stop != NULL && atomic_load(stop);
}

/* Sleeps ms, or less if stop is set meanwhile. Returns whether it was. */
static bool nap(uint64_t ms, const atomic_bool *stop)
{
    while (ms != 0 && !stopped(stop)) {
        uint64_t slice = ms < NAP_SLICE_MS ? ms : NAP_SLICE_MS;
        usleep((useconds_t)(slice * 1000));
        ms -= slice;
    }
    return stopped(stop);
}

static const char *short_kind(const char *kind)
{
    return strchr(kind, '.') + 1;
}

/* The progress line of a terminal, redrawn in place after each page. The final one erases it rather than ending it:
 * the caller prints each kind's counts once, as the final line, so that they are not shown twice. */
static void draw(bool progress, const char *tenant, const char *kind, const gw_sync_counts_t *c, bool final)
{
    if (!progress)
        return;
    if (final)
        fputs("\r\033[K", stderr);
    else
        fprintf(stderr, "\r\033[K%.8s %-12s page %-4ld %6ld fetched %6ld changed %6ld unchanged", tenant,
                short_kind(kind), c->pages, c->fetched, c->changed, c->unchanged);
    fflush(stderr);
}

/* Syncs one kind. Returns 0, -1 with err, or 1 when stop was set (between two calls: nothing is left half-applied,
 * and the high-water mark has not moved). */
static int sync_kind(gw_fetch_ctx_t *ctx, const char *org, int64_t organisation_id, const char *tenant,
                     int64_t token_id, const char *kind, const char *since, bool progress, const atomic_bool *stop,
                     gw_sync_counts_t *c, char *err, size_t errlen)
{
    char from[64] = "";
    const char *params[] = {org, tenant, short_kind(kind)};
    if (since != NULL) {
        snprintf(from, sizeof(from), "%s", since);
    } else {
        gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql_state, 3, params);
        if (r != NULL && gw_dbs_nrows(r) == 1 && gw_dbs_value(r, 0, 0) != NULL)
            snprintf(from, sizeof(from), "%s", gw_dbs_value(r, 0, 0));
        else
            c->initial = true;
        gw_dbs_result_free(r);
    }
    for (int page = 1; page <= MAX_PAGES; ++page) {
        if (stopped(stop))
            return 1;
        cn_fetch_t f;
        if (cn_xero_connector.plan_sync_page(kind, page, &f) != 0) {
            snprintf(err, errlen, "no sync plan for %s", kind);
            return -1;
        }
        gw_fetch_result_t res;
        gw_fetch_status_t st;
        uint64_t waited = 0;
        while ((st = gw_xero_mirror_fetch(ctx, tenant, token_id, &f, from[0] != '\0' ? from : NULL, &res)) ==
                   GW_FETCH_RESCHEDULE &&
               waited < MAX_WAIT_MS) {
            if (nap(res.wait_ms, stop))
                return 1;
            waited += res.wait_ms;
        }
        if (st != GW_FETCH_OK) {
            snprintf(err, errlen, "%s page %d: %.200s", short_kind(kind), page, res.error);
            return -1;
        }
        long n = cn_xero_connector.count_records(kind, (cn_str_t){res.res.body, res.res.body_len});
        gw_apply_counts_t counts = {0};
        char correlation[64];
        snprintf(correlation, sizeof(correlation), "sync:%s:%s", tenant, short_kind(kind));
        int rc = gw_xero_mirror_apply(ctx, organisation_id, tenant, kind, res.res.body, correlation, &counts, NULL,
                                      NULL, err, errlen);
        gw_http_response_free(&res.res);
        if (rc != 0)
            return -1;
        c->pages = page;
        c->fetched += n;
        c->changed += counts.inserted + counts.updated;
        c->unchanged += counts.unchanged + counts.stale;
        draw(progress, tenant, kind, c, false);
        if (n < CN_PAGE_SIZE)
            break;
    }
    draw(progress, tenant, kind, c, true);

    char fetched[24], changed[24], unchanged[24];
    snprintf(fetched, sizeof(fetched), "%ld", c->fetched);
    snprintf(changed, sizeof(changed), "%ld", c->changed);
    snprintf(unchanged, sizeof(unchanged), "%ld", c->unchanged);
    const char *save[] = {org, tenant, short_kind(kind), kind, fetched, changed, unchanged};
    if (gw_dbs_exec(ctx->db, sql_save, 7, save) < 0) {
        snprintf(err, errlen, "cannot save the sync state: %s", gw_dbs_error(ctx->db));
        return -1;
    }
    return 0;
}

/* gw_sync_tenant, stopping between two calls once stop is set: returns 1 then. */
static int sync_tenant(gw_fetch_ctx_t *ctx, int64_t organisation_id, const char *tenant, int64_t token_id,
                       const char *since, bool progress, const atomic_bool *stop,
                       gw_sync_counts_t counts[GW_SYNC_NKINDS], char *err, size_t errlen)
{
    char org[24];
    snprintf(org, sizeof(org), "%lld", (long long)organisation_id);
    for (int k = 0; k != GW_SYNC_NKINDS; ++k)
        counts[k] = (gw_sync_counts_t){0};
    /* the Xero organisation's default sales terms, kept only while no admin has set the default (xero_terms.h) */
    (void)gw_xero_terms_read(ctx, organisation_id, tenant, token_id);
    for (int k = 0; k != GW_SYNC_NKINDS; ++k) {
        int rc = sync_kind(ctx, org, organisation_id, tenant, token_id, gw_sync_kinds[k], since, progress, stop,
                           &counts[k], err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int gw_sync_tenant(gw_fetch_ctx_t *ctx, int64_t organisation_id, const char *tenant, int64_t token_id,
                   const char *since, bool progress, gw_sync_counts_t counts[GW_SYNC_NKINDS], char *err, size_t errlen)
{
    return sync_tenant(ctx, organisation_id, tenant, token_id, since, progress, NULL, counts, err, errlen) == 0 ? 0
                                                                                                                : -1;
}

/* Reports a finished sweep of one tenant: drift to the metrics and the log. */
static void report(const char *tenant, const gw_sync_counts_t counts[GW_SYNC_NKINDS])
{
    for (int k = 0; k != GW_SYNC_NKINDS; ++k) {
        if (counts[k].initial) {
            gw_log(GW_LOG_INFO, "Xero tenant %s: first sweep backfilled %ld %s", tenant, counts[k].changed,
                   short_kind(gw_sync_kinds[k]));
            continue;
        }
        gw_metrics_xero_drift(gw_sync_kinds[k], (uint64_t)counts[k].changed, (uint64_t)counts[k].unchanged);
        if (counts[k].changed != 0)
            gw_log(GW_LOG_WARN, "drift repaired for Xero tenant %s: %ld %s changed that no webhook delivered", tenant,
                   counts[k].changed, short_kind(gw_sync_kinds[k]));
    }
}

/* Sweeps one connection if it is still due once its lock is held. Returns 1 when stop was set meanwhile. */
static int sweep_one(gw_fetch_ctx_t *ctx, const char *interval, const char *org, const char *tenant,
                     const atomic_bool *stop)
{
    /* one sweeper per tenant across instances: a session lock, released below (or with the session) */
    const char *lp[] = {tenant};
    gw_dbs_result_t *lock = gw_dbs_query(ctx->db, sql_lock, 1, lp);
    bool got = lock != NULL && strcmp(gw_dbs_value(lock, 0, 0), "t") == 0;
    gw_dbs_result_free(lock);
    if (!got)
        return 0;
    int rc = 0;
    /* the list was read before the lock: another instance may have swept this tenant since and released it */
    const char *dp[] = {interval, org, tenant};
    gw_dbs_result_t *due = gw_dbs_query(ctx->db, sql_still_due, 3, dp);
    if (due == NULL || gw_dbs_nrows(due) != 1) {
        if (due != NULL)
            gw_log(GW_LOG_INFO, "Xero tenant %s of organisation %s: swept meanwhile by another instance, skipped",
                   tenant, org);
        goto Exit;
    }
    gw_sync_counts_t counts[GW_SYNC_NKINDS];
    char err[300];
    rc = sync_tenant(ctx, strtoll(org, NULL, 10), tenant, strtoll(gw_dbs_value(due, 0, 2), NULL, 10), NULL, false, stop,
                     counts, err, sizeof(err));
    if (rc == 0)
        report(tenant, counts);
    else if (rc < 0)
        gw_log(GW_LOG_WARN, "drift sweep of Xero tenant %s failed: %s", tenant, err);
    else
        gw_log(GW_LOG_INFO, "drift sweep of Xero tenant %s stopped: shutting down (it resumes from its mark)", tenant);
Exit:
    gw_dbs_result_free(due);
    gw_dbs_result_free(gw_dbs_query(ctx->db, sql_unlock, 1, lp));
    return rc > 0 ? 1 : 0;
}

void gw_sync_sweep_due(gw_fetch_ctx_t *ctx, const atomic_bool *stop)
{
    char interval[24];
    snprintf(interval, sizeof(interval), "%d", ctx->cfg->xero_sync_interval);
    const char *params[] = {interval};
    gw_dbs_result_t *due = gw_dbs_query(ctx->db, sql_due, 1, params);
    if (due == NULL)
        return;
    for (size_t i = 0; i != gw_dbs_nrows(due) && !stopped(stop); ++i)
        if (sweep_one(ctx, interval, gw_dbs_value(due, i, 0), gw_dbs_value(due, i, 1), stop) != 0)
            break;
    gw_dbs_result_free(due);
}
