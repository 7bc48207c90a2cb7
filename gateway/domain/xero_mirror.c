/* SPDX-License-Identifier: MIT */
/* xero_mirror.c: the Xero processor (grouping, planning, coalescing), Xero calls through fetch.c, and the
 * transactional apply of their records through the SQL functions of schema/functions/xero_mirror.sql. */
#include "xero_mirror.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "circuit.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "payments.h"
#include "sync.h"
#include "xero_oauth.h"

gw_fetch_status_t gw_xero_mirror_fetch(gw_fetch_ctx_t *ctx, const char *tenant, int64_t token_id, const cn_fetch_t *f,
                                       const char *if_modified_since, gw_fetch_result_t *out)
{
    gw_fetch_call_t call = {.provider = "xero",
                            .path = f->path,
                            .account = tenant,
                            .token_id = token_id,
                            .if_modified_since = if_modified_since};
    if (gw_fetch(ctx, &call, out) != GW_FETCH_OK)
        return out->status;
    if (out->http_status != 200 ||
        cn_xero_connector.count_records(f->record_kind, (cn_str_t){out->res.body, out->res.body_len}) < 0) {
        gw_http_response_free(&out->res);
        memset(&out->res, 0, sizeof(out->res));
        out->status = GW_FETCH_REJECTED; /* a malformed object: asking again brings the same */
        snprintf(out->error, sizeof(out->error), "Xero answered %ld without a %s list", out->http_status,
                 f->record_kind);
    }
    return out->status;
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
            *list = gw_xrealloc(*list, sizeof(**list) * (*n + 1));
            (*list)[*n] = gw_xstrndup(start, 36);
            ++*n;
        }
    }
}

/* One response applied: the upsert, and for invoices the payments that waited for them linked and the payment
 * state of every invoice that changed reconciled (payments.h), in one transaction. */
typedef struct st_mirror_apply_t {
    int64_t organisation_id;
    const char *tenant, *sql, *correlation;
    const char *const *params;
    int nparams;
    bool invoices, credit_notes;
    gw_apply_counts_t counts;
    char **refetch;
    size_t nrefetch;
} mirror_apply_t;

static int mirror_apply_body(gw_dbs_t *s, void *arg, gw_err_t *err)
{
    mirror_apply_t *a = arg;
    a->counts = (gw_apply_counts_t){0};
    for (size_t k = 0; k != a->nrefetch; ++k)
        free(a->refetch[k]);
    free(a->refetch);
    a->refetch = NULL;
    a->nrefetch = 0;
    gw_dbs_result_t *r = gw_dbs_query(s, a->sql, a->nparams, a->params);
    if (r == NULL)
        return gw_dbs_err(s, err);
    size_t n = gw_dbs_nrows(r), nrefs = 0;
    gw_invoice_ref_t *refs = a->invoices && n != 0 ? gw_xcalloc(n, sizeof(*refs)) : NULL;
    for (size_t i = 0; i != n; ++i) {
        const char *outcome = gw_dbs_value(r, i, 1);
        count_outcome(&a->counts, outcome);
        if (a->credit_notes)
            append_uuid_array(gw_dbs_value(r, i, 2), &a->refetch, &a->nrefetch);
        if (refs != NULL && outcome != NULL && (strcmp(outcome, "inserted") == 0 || strcmp(outcome, "updated") == 0)) {
            snprintf(refs[nrefs].tenant, sizeof(refs[nrefs].tenant), "%s", a->tenant);
            snprintf(refs[nrefs].invoice, sizeof(refs[nrefs].invoice), "%s", gw_dbs_value(r, i, 0));
            ++nrefs;
        }
    }
    gw_dbs_result_free(r);
    int rc = 0;
    if (nrefs != 0) {
        /* payments that named these invoices before they were mirrored are theirs now */
        char org[24], *ids = gw_xmalloc(3 + nrefs * 37);
        size_t len = 0;
        ids[len++] = '{';
        for (size_t i = 0; i != nrefs; ++i)
            len += (size_t)sprintf(ids + len, "%s%s", i != 0 ? "," : "", refs[i].invoice);
        snprintf(ids + len, 2, "}");
        snprintf(org, sizeof(org), "%lld", (long long)a->organisation_id);
        const char *lp[] = {org, a->tenant, ids};
        rc = gw_dbs_exec(s, "SELECT pay_link_waiting($1::bigint, $2::uuid, $3::uuid[])", 3, lp) < 0
                 ? gw_dbs_err(s, err)
                 : gw_payments_reconcile(s, a->organisation_id, refs, nrefs, NULL, a->correlation, err);
        free(ids);
    }
    free(refs);
    return rc;
}

int gw_xero_mirror_apply(gw_fetch_ctx_t *ctx, int64_t organisation_id, const char *tenant, const char *record_kind,
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
    mirror_apply_t a = {.organisation_id = organisation_id,
                        .tenant = tenant,
                        .correlation = correlation,
                        .params = params,
                        .nparams = 4};
    if (strcmp(record_kind, "xero.invoices") == 0) {
        a.sql = sql_invoices;
        a.invoices = true;
    } else if (strcmp(record_kind, "xero.contacts") == 0) {
        a.sql = sql_contacts;
        a.nparams = 5;
    } else if (strcmp(record_kind, "xero.creditnotes") == 0) {
        a.sql = sql_credit_notes;
        a.credit_notes = true;
    } else {
        snprintf(err, errlen, "unknown record kind %s", record_kind);
        return -1;
    }
    gw_err_t e = GW_ERR_INIT;
    if (gw_payments_tx(ctx, mirror_apply_body, &a, &e) != 0) {
        snprintf(err, errlen, "applying %s failed: %s", record_kind,
                 *gw_dbs_error(ctx->db) != '\0' ? gw_dbs_error(ctx->db) : e.detail);
        for (size_t k = 0; k != a.nrefetch; ++k)
            free(a.refetch[k]);
        free(a.refetch);
        return -1;
    }
    counts->inserted += a.counts.inserted;
    counts->updated += a.counts.updated;
    counts->unchanged += a.counts.unchanged;
    counts->stale += a.counts.stale;
    if (refetch != NULL) {
        for (size_t k = 0; k != a.nrefetch; ++k) {
            *refetch = gw_xrealloc(*refetch, sizeof(**refetch) * (*nrefetch + 1));
            (*refetch)[(*nrefetch)++] = a.refetch[k];
        }
    } else {
        for (size_t k = 0; k != a.nrefetch; ++k)
            free(a.refetch[k]);
    }
    free(a.refetch);
    return 0;
}

/* ---- the processor of Xero events ---- */

/* The record category of an event type: "INVOICE" of "INVOICE.UPDATE". */
static size_t category_len(const char *type)
{
    const char *dot = strchr(type, '.');
    return dot != NULL ? (size_t)(dot - type) : strlen(type);
}

static bool same_group(const gw_queue_row_t *a, const gw_queue_row_t *b)
{
    size_t la = category_len(a->event_type), lb = category_len(b->event_type);
    return a->organisation_id == b->organisation_id && la == lb && memcmp(a->event_type, b->event_type, la) == 0 &&
           (a->account == NULL ? b->account == NULL : b->account != NULL && strcmp(a->account, b->account) == 0);
}

/* A Xero id (a UUID, 8-4-4-4-12 hex digits): only such ids are cast to uuid in SQL. */
static bool is_uuid(const char *r)
{
    if (r == NULL || strlen(r) != 36)
        return false;
    for (size_t i = 0; i != 36; ++i) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? r[i] != '-' : strchr("0123456789abcdefABCDEF", r[i]) == NULL)
            return false;
    }
    return true;
}

/* An organisation connected to the tenant of a group of events, and the token set that serves the tenant there. */
typedef struct st_route_t {
    int64_t organisation_id;
    int64_t token_id;
} route_t;

/* The organisations connected to tenant (one Xero app serves several: each connects the tenants it is allowed to
 * see with its own token set). Returns how many (*out malloc'd, NULL when none), or -1 when the database failed. */
static long routes_of(gw_fetch_ctx_t *ctx, const char *tenant, route_t **out)
{
    static const char sql[] = "SELECT organisation_id, token_id FROM xero_tenants WHERE tenant_id = $1::uuid"
                              " ORDER BY organisation_id";
    const char *params[] = {tenant};
    *out = NULL;
    gw_dbs_result_t *r = gw_dbs_query(ctx->db, sql, 1, params);
    if (r == NULL)
        return -1;
    size_t n = gw_dbs_nrows(r);
    if (n != 0)
        *out = gw_xcalloc(n, sizeof(**out));
    for (size_t i = 0; i != n; ++i)
        (*out)[i] = (route_t){strtoll(gw_dbs_value(r, i, 0), NULL, 10), strtoll(gw_dbs_value(r, i, 1), NULL, 10)};
    gw_dbs_result_free(r);
    return (long)n;
}

static void free_ids(char **ids, size_t n)
{
    for (size_t k = 0; k != n; ++k)
        free(ids[k]);
    free(ids);
}

/* Plans the calls for every one of ids (of event type type): as many calls of CN_FETCH_MAX_IDS as they need. Returns
 * how many were written to *out (malloc'd). */
static int plan_all(const char *type, const cn_str_t *ids, size_t nids, cn_fetch_t **out)
{
    size_t room = nids / CN_FETCH_MAX_IDS + 1; /* duplicates and malformed ids only make fewer */
    *out = gw_xcalloc(room, sizeof(**out));
    return cn_xero_connector.plan_fetches((cn_str_t){type, strlen(type)}, ids, nids, *out, room);
}

int gw_xero_mirror_fetch_invoices(gw_fetch_ctx_t *ctx, int64_t organisation_id, const char *const *ids, size_t n,
                                  const char *correlation, char *err, size_t errlen)
{
    char org[24];
    snprintf(org, sizeof(org), "%lld", (long long)organisation_id);
    const char *params[] = {org};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db,
                                      "SELECT tenant_id, token_id FROM xero_tenants WHERE organisation_id = $1::bigint"
                                      " ORDER BY tenant_id",
                                      1, params);
    if (r == NULL) {
        snprintf(err, errlen, "listing the organisation's Xero tenants failed: %s", gw_dbs_error(ctx->db));
        return -1;
    }
    cn_str_t *want = gw_xcalloc(n + 1, sizeof(*want));
    for (size_t i = 0; i != n; ++i)
        want[i] = (cn_str_t){ids[i], strlen(ids[i])};
    cn_fetch_t *fetches;
    int nfetch = plan_all("INVOICE.UPDATE", want, n, &fetches), rc = 0;
    free(want);
    for (size_t t = 0; t != gw_dbs_nrows(r) && rc == 0; ++t) {
        const char *tenant = gw_dbs_value(r, t, 0);
        int64_t token_id = strtoll(gw_dbs_value(r, t, 1), NULL, 10);
        for (int i = 0; i < nfetch && rc == 0; ++i) {
            gw_fetch_result_t res = {0};
            if (gw_xero_mirror_fetch(ctx, tenant, token_id, &fetches[i], NULL, &res) != GW_FETCH_OK) {
                snprintf(err, errlen, "tenant %s: %s", tenant, res.error);
                rc = -1;
                break;
            }
            gw_apply_counts_t counts = {0};
            rc = gw_xero_mirror_apply(ctx, organisation_id, tenant, fetches[i].record_kind, res.res.body, correlation,
                                      &counts, NULL, NULL, err, errlen);
            gw_http_response_free(&res.res);
        }
    }
    free(fetches);
    gw_dbs_result_free(r);
    return rc;
}

/* Fetches, for the organisation and with the token set of route, every planned call of group and applies it; for
 * credit notes, also every invoice they are allocated to, in as many calls as that takes. Stops at the first call
 * that is not GW_FETCH_OK and returns its status (res says why). */
static gw_fetch_status_t run_fetches(gw_work_t *w, gw_queue_row_t *const *group, const route_t *route,
                                     const cn_fetch_t *fetches, int nfetch, gw_fetch_result_t *res, int depth)
{
    for (int i = 0; i != nfetch; ++i) {
        gw_fetch_status_t st =
            gw_xero_mirror_fetch(&w->fetch, group[0]->account, route->token_id, &fetches[i], NULL, res);
        if (st != GW_FETCH_OK)
            return st;
        gw_apply_counts_t counts = {0};
        char **refetch = NULL, err[300];
        size_t nrefetch = 0;
        int rc =
            gw_xero_mirror_apply(&w->fetch, route->organisation_id, group[0]->account, fetches[i].record_kind,
                                 res->res.body, group[0]->correlation, &counts, &refetch, &nrefetch, err, sizeof(err));
        gw_http_response_free(&res->res);
        memset(&res->res, 0, sizeof(res->res));
        if (rc != 0) {
            res->status = GW_FETCH_FAILED;
            snprintf(res->error, sizeof(res->error), "%s", err);
            free_ids(refetch, nrefetch);
            return res->status;
        }
        gw_fetch_status_t st2 = GW_FETCH_OK;
        if (nrefetch != 0 && depth == 0) {
            cn_str_t *ids = gw_xcalloc(nrefetch, sizeof(*ids));
            for (size_t k = 0; k != nrefetch; ++k)
                ids[k] = (cn_str_t){refetch[k], strlen(refetch[k])};
            cn_fetch_t *more;
            int nmore = plan_all("INVOICE.UPDATE", ids, nrefetch, &more);
            free(ids);
            if (nmore > 0)
                st2 = run_fetches(w, group, route, more, nmore, res, depth + 1);
            free(more);
        }
        free_ids(refetch, nrefetch);
        if (st2 != GW_FETCH_OK)
            return st2;
    }
    return GW_FETCH_OK;
}

/* Finishes as covered the rows still waiting for the objects of group (Xero ids are UUIDs; anything else is left
 * to its own claim). */
static void cover(gw_work_t *w, gw_queue_row_t *const *group, size_t n, const char *claimed_at)
{
    const char **ids = gw_xcalloc(n, sizeof(*ids));
    size_t nids = 0;
    for (size_t i = 0; i != n; ++i)
        if (is_uuid(group[i]->resource_id))
            ids[nids++] = group[i]->resource_id;
    char category[64];
    snprintf(category, sizeof(category), "%.*s", (int)category_len(group[0]->event_type), group[0]->event_type);
    (void)gw_queue_cover(&w->queue, group[0], category, ids, nids, claimed_at);
    free(ids);
}

/* Processes the rows of one (organisation, tenant, category). The organisation is the one of the webhook source
 * that stored them; the mirror is written for every organisation connected to the tenant, each fetching with its
 * own token set (and matching and auditing in its own organisation). */
static void process_group(gw_work_t *w, gw_queue_row_t *const *group, size_t n, const char *claimed_at)
{
    const char *type = group[0]->event_type, *tenant = group[0]->account;
    cn_str_t *ids = gw_xcalloc(n, sizeof(*ids));
    for (size_t i = 0; i != n; ++i)
        if (group[i]->resource_id != NULL)
            ids[i] = (cn_str_t){group[i]->resource_id, strlen(group[i]->resource_id)};
    cn_fetch_t *fetches;
    int nfetch = plan_all(type, ids, n, &fetches);
    free(ids);
    route_t *routes = NULL;
    if (gw_log_enabled(GW_LOG_DEBUG)) {
        /* the refetch plan: how the group's events became calls (a burst for one object is one call) */
        gw_logline_t line;
        gw_log_begin(&line, GW_LOG_DEBUG, "refetch plan");
        gw_log_int(&line, "worker", w->queue.index);
        gw_log_str(&line, "tenant", tenant, tenant != NULL ? strlen(tenant) : 0);
        gw_log_str(&line, "type", type, strlen(type));
        gw_log_int(&line, "events", (long long)n);
        gw_log_int(&line, "fetches", nfetch > 0 ? nfetch : 0);
        for (int i = 0; i < nfetch && i < 3; ++i)
            gw_log_str(&line,
                       i == 0   ? "fetch_1"
                       : i == 1 ? "fetch_2"
                                : "fetch_3",
                       fetches[i].path, strlen(fetches[i].path));
        gw_log_str(&line, "correlation_id", group[0]->correlation, strlen(group[0]->correlation));
        gw_log_end(&line);
    }

    if (nfetch <= 0 || tenant == NULL || !is_uuid(tenant)) {
        /* nothing to fetch (e.g. SUBSCRIPTION events, or no well-formed id or tenant id): done as is */
        gw_queue_finish(&w->queue, group, n, GW_QUEUE_IGNORED);
        goto Exit;
    }
    long nroutes = routes_of(&w->fetch, tenant, &routes);
    if (nroutes < 0) {
        char err[300];
        snprintf(err, sizeof(err), "looking up the organisations of Xero tenant %s failed: %s", tenant,
                 gw_dbs_error(w->fetch.db));
        gw_queue_fail(&w->queue, group, n, GW_QUEUE_TRANSIENT, err);
        goto Exit;
    }
    if (nroutes == 0) {
        /* No organisation has connected this tenant (the app's webhooks cover every tenant connected to the app, in
         * any deployment): nothing here may fetch it, and retrying cannot change that. Once an organisation
         * connects it, its first drift sweep is a backfill that brings in everything these events named. */
        gw_log(GW_LOG_WARN,
               "Xero tenant %s is connected to no organisation: %zu %.*s event%s ignored (correlation %s); connect it "
               "and its first sweep backfills the mirror",
               tenant, n, (int)category_len(type), type, n == 1 ? "" : "s", group[0]->correlation);
        gw_queue_finish(&w->queue, group, n, GW_QUEUE_IGNORED);
        goto Exit;
    }

    /* Every organisation in turn. One that needs re-authorisation does not hold the others back: when some were
     * served, the events are done, and its mirror catches up at its first sweep once re-authorised (its high-water
     * mark has not moved). When none was served, the events wait for the re-authorisation, as for a tenant with a
     * single organisation. Any other failure stops the round and the events are retried for every organisation (the
     * mirror writes are idempotent). */
    gw_fetch_result_t res = {0}, reauth = {0};
    gw_fetch_status_t outcome = GW_FETCH_OK;
    size_t served = 0, nreauth = 0;
    bool *skipped = gw_xcalloc((size_t)nroutes, sizeof(*skipped));
    for (long r = 0; r != nroutes && outcome == GW_FETCH_OK; ++r) {
        gw_fetch_status_t st = run_fetches(w, group, &routes[r], fetches, nfetch, &res, 0);
        if (st == GW_FETCH_OK) {
            ++served;
        } else if (st == GW_FETCH_REAUTH) {
            if (nreauth++ == 0)
                reauth = res;
            skipped[r] = true;
        } else {
            outcome = st;
            if (nroutes > 1) {
                char why[sizeof(res.error)];
                snprintf(why, sizeof(why), "%s", res.error);
                snprintf(res.error, sizeof(res.error), "organisation %lld: %.260s",
                         (long long)routes[r].organisation_id, why);
            }
        }
    }
    if (outcome == GW_FETCH_OK && served == 0) {
        outcome = GW_FETCH_REAUTH;
        res = reauth;
    } else if (outcome == GW_FETCH_OK) {
        for (long r = 0; r != nroutes; ++r)
            if (skipped[r])
                gw_log(GW_LOG_WARN,
                       "organisation %lld: Xero tenant %s needs re-authorisation: %zu %.*s event%s done without it; "
                       "its first sweep once re-authorised catches up",
                       (long long)routes[r].organisation_id, tenant, n, (int)category_len(type), type,
                       n == 1 ? "" : "s");
    }
    free(skipped);
    /* Xero answered (whatever it said): it is up for this tenant, and an open circuit closes */
    if (served != 0 || (outcome != GW_FETCH_OK && res.http_status != 0 && !res.outage))
        gw_circuit_success(&w->queue, "xero", tenant);
    switch (outcome) {
    case GW_FETCH_OK:
        gw_queue_finish(&w->queue, group, n, GW_QUEUE_DONE);
        cover(w, group, n, claimed_at);
        break;
    case GW_FETCH_RESCHEDULE:
    case GW_FETCH_REAUTH:
        gw_queue_reschedule(&w->queue, group, n, res.wait_ms, res.error);
        break;
    case GW_FETCH_FAILED:
        gw_queue_fail(&w->queue, group, n, res.outage ? GW_QUEUE_OUTAGE : GW_QUEUE_TRANSIENT, res.error);
        break;
    case GW_FETCH_REJECTED:
        gw_queue_fail(&w->queue, group, n, GW_QUEUE_PERMANENT, res.error);
        break;
    }
Exit:
    free(routes);
    free(fetches);
}

static void process(gw_work_t *w, gw_queue_row_t *const *rows, size_t n, const char *claimed_at)
{
    gw_queue_row_t **group = gw_xcalloc(n, sizeof(*group));
    bool *grouped = gw_xcalloc(n, sizeof(*grouped));
    for (size_t i = 0; i != n; ++i) {
        if (grouped[i])
            continue;
        size_t k = 0;
        for (size_t j = i; j != n; ++j)
            if (!grouped[j] && same_group(rows[i], rows[j])) {
                grouped[j] = true;
                group[k++] = rows[j];
            }
        process_group(w, group, k, claimed_at);
    }
    free(grouped);
    free(group);
}

static int claim_delay_ms(const gw_config_t *cfg)
{
    return cfg->xero_coalesce_ms;
}

static void gauges(gw_work_t *w)
{
    gw_dbs_result_t *r =
        gw_dbs_query(w->fetch.db, "SELECT count(*) FROM xero_tokens WHERE status = 'needs_reauth'", 0, NULL);
    if (r != NULL) {
        gw_metrics_xero_reauth(strtoll(gw_dbs_value(r, 0, 0), NULL, 10));
        gw_dbs_result_free(r);
    }
}

static void periodic(gw_work_t *w)
{
    size_t removed;
    gw_err_t err = GW_ERR_INIT;
    if (gw_xero_prune_retired(w->fetch.db, w->fetch.cfg->xero_retired_grace_hours, &removed, &err) != 0)
        gw_log(GW_LOG_WARN, "removing retired xero token sets failed: %s", err.detail);
    if (w->fetch.cfg->xero_sync_interval != 0)
        gw_sync_sweep_due(&w->fetch, w->stop);
}

/* Every minute: retired token sets past their grace period are removed, and the sweep looks for due tenants (each
 * is swept every SETTLED_XERO_SYNC_INTERVAL seconds). */
static int periodic_ms(const gw_config_t *cfg)
{
    (void)cfg;
    return 60000;
}

const gw_processor_t gw_xero_processor = {
    .provider = "xero",
    .claim_delay_ms = claim_delay_ms,
    .process = process,
    .gauges = gauges,
    .periodic = periodic,
    .periodic_ms = periodic_ms,
};
