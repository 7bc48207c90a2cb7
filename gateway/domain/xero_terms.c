/* SPDX-License-Identifier: MIT */
/* xero_terms.c: the Xero organisation's default sales terms into payment_terms (xero_terms.h). */
#include "xero_terms.h"
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "log.h"

static const char sql_apply[] = "SELECT terms_apply_xero_default($1::bigint, $2, $3::integer, $4)";

const char *gw_xero_terms_apply(gw_dbs_t *db, int64_t organisation_id, const char *body, size_t len,
                                const char *correlation, char *err, size_t errlen)
{
    /* {"Organisations": [{..., "PaymentTerms": {"Bills": {"Day": 15, "Type": "OFCURRENTMONTH"},
     *                                           "Sales": {"Day": 10, "Type": "DAYSAFTERBILLMONTH"}}}]} */
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *org = json_array_get(json_object_get(root, "Organisations"), 0);
    json_t *sales = json_object_get(json_object_get(org, "PaymentTerms"), "Sales");
    json_t *day = json_object_get(sales, "Day"), *type = json_object_get(sales, "Type");
    if (!json_is_integer(day) || !json_is_string(type) || json_integer_value(day) < 0 ||
        json_integer_value(day) > 365 || json_string_length(type) > 32) {
        json_decref(root);
        return "none";
    }
    char org_id[24], day_text[24], type_text[40];
    snprintf(org_id, sizeof(org_id), "%lld", (long long)organisation_id);
    snprintf(day_text, sizeof(day_text), "%lld", (long long)json_integer_value(day));
    snprintf(type_text, sizeof(type_text), "%s", json_string_value(type));
    json_decref(root);
    const char *params[] = {org_id, type_text, day_text, correlation};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_apply, 4, params);
    if (r == NULL || gw_dbs_nrows(r) != 1 || gw_dbs_value(r, 0, 0) == NULL) {
        snprintf(err, errlen, "terms_apply_xero_default failed: %s", gw_dbs_error(db));
        gw_dbs_result_free(r);
        return NULL;
    }
    static const char *const outcomes[] = {"stored", "updated", "unchanged", "admin_set", "invalid"};
    const char *out = "none";
    for (size_t i = 0; i != sizeof(outcomes) / sizeof(outcomes[0]); ++i)
        if (strcmp(gw_dbs_value(r, 0, 0), outcomes[i]) == 0)
            out = outcomes[i];
    gw_dbs_result_free(r);
    return strcmp(out, "invalid") == 0 ? "none" : out;
}

/* True if the space-separated scopes name accounting.settings or accounting.settings.read. */
static bool settings_scope(const char *scopes)
{
    for (const char *p = scopes != NULL ? scopes : ""; *p != '\0';) {
        size_t n = strcspn(p, " ");
        if ((n == 19 && strncmp(p, "accounting.settings", 19) == 0) ||
            (n == 24 && strncmp(p, "accounting.settings.read", 24) == 0))
            return true;
        p += n;
        p += strspn(p, " ");
    }
    return false;
}

const char *gw_xero_terms_read(gw_fetch_ctx_t *ctx, int64_t organisation_id, const char *tenant, int64_t token_id)
{
    if (!settings_scope(ctx->cfg->xero_scopes))
        return "no_scope"; /* Xero would refuse the call (and a 401 costs a token refresh): not asked */
    gw_fetch_call_t call = {
        .provider = "xero", .path = "/api.xro/2.0/Organisation", .account = tenant, .token_id = token_id};
    gw_fetch_result_t res;
    if (gw_fetch(ctx, &call, &res) != GW_FETCH_OK) {
        gw_log(GW_LOG_INFO, "Xero tenant %s: the organisation's payment terms were not read (%.200s)", tenant,
               res.error);
        return "skipped";
    }
    char correlation[80], err[300];
    snprintf(correlation, sizeof(correlation), "sync:%s:organisation", tenant);
    const char *out =
        gw_xero_terms_apply(ctx->db, organisation_id, res.res.body, res.res.body_len, correlation, err, sizeof(err));
    gw_http_response_free(&res.res);
    if (out == NULL) {
        gw_log(GW_LOG_WARN, "Xero tenant %s: %s", tenant, err);
        return "skipped";
    }
    if (strcmp(out, "stored") == 0 || strcmp(out, "updated") == 0)
        gw_log(GW_LOG_INFO, "Xero tenant %s: the organisation's default payment terms %s from Xero", tenant, out);
    return out;
}
