/* SPDX-License-Identifier: MIT */
/*
 * xero_admin.c: connecting Xero from the portal, and what the connection looks like. The authorisation URL is made
 * by the same domain function as `settled connect xero --authorize`, with the admin's user id recorded beside the
 * state's nonce, so that the callback (xero_callback.c) audits the connection as that admin. The status reads the
 * organisation's token sets and tenants (their state and dates: the sealed tokens are never read) and, per tenant,
 * what is left of its quotas in Redis; without Redis nobody knows what the other instances used: "unknown".
 */
#include "xero_admin.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "quota.h"
#include "task.h"
#include "xero_oauth.h"

#define UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

static const char sql_tokens[] =
    "SELECT id, status, " UTC("access_expires_at") ", " UTC("created_at") ", " UTC("refreshed_at") ", " UTC(
        "retired_at") ", last_error FROM xero_tokens WHERE organisation_id = $1::bigint ORDER BY id";
static const char sql_tenants[] = "SELECT n.tenant_id::text, coalesce(n.tenant_name, ''), n.token_id, t.status, " UTC(
    "n.created_at") " FROM xero_tenants n JOIN xero_tokens t ON t.organisation_id = n.organisation_id AND t.id = "
                    "n.token_id"
                    " WHERE n.organisation_id = $1::bigint ORDER BY n.tenant_name, n.tenant_id";

static json_t *col(gw_dbs_result_t *r, size_t i, size_t c)
{
    const char *v = gw_dbs_value(r, i, c);
    return v != NULL ? json_string(v) : json_null();
}

static void on_connect(gw_task_t *t)
{
    char *url = gw_xero_authorize_url(t->db, t->cfg, t->organisation_id, t->user_id, &t->err);
    if (url == NULL)
        return;
    t->doc = json_object();
    json_object_set_new(t->doc, "authorization_url", json_string(url));
    json_object_set_new(t->doc, "expires_in", json_integer(GW_XERO_STATE_TTL));
    free(url);
}

int gw_xero_admin_connect(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return gw_task_run(loop, req, call, on_connect, false);
}

static json_t *quota_json(gw_quota_t *q, const char *tenant)
{
    gw_quota_remaining_t left;
    if (q == NULL || gw_quota_peek(q, tenant, &left) != 0)
        return json_string("unknown");
    json_t *o = json_object();
    json_object_set_new(o, "concurrent", json_integer(left.concurrent));
    json_object_set_new(o, "minute", json_integer(left.window));
    json_object_set_new(o, "day", left.day >= 0 ? json_integer(left.day) : json_null());
    json_object_set_new(o, "app_minute", left.app_window >= 0 ? json_integer(left.app_window) : json_null());
    json_object_set_new(o, "blocked_for_ms", json_integer((json_int_t)left.blocked_ms));
    return o;
}

static void on_status(gw_task_t *t)
{
    char org[24];
    snprintf(org, sizeof(org), "%" PRId64, t->organisation_id);
    const char *p[] = {org};
    gw_dbs_result_t *tokens = gw_dbs_query(t->db, sql_tokens, 1, p), *tenants = NULL;
    if (tokens == NULL || (tenants = gw_dbs_query(t->db, sql_tenants, 1, p)) == NULL) {
        (void)gw_dbs_err(t->db, &t->err);
        gw_dbs_result_free(tokens);
        return;
    }
    json_t *sets = json_array(), *list = json_array();
    bool connected = false;
    for (size_t i = 0; i != gw_dbs_nrows(tokens); ++i) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_integer(strtoll(gw_dbs_value(tokens, i, 0), NULL, 10)));
        static const char *const names[] = {
            "status", "access_token_expires_at", "created_at", "refreshed_at", "retired_at", "last_error"};
        for (size_t c = 0; c != sizeof(names) / sizeof(names[0]); ++c)
            json_object_set_new(o, names[c], col(tokens, i, c + 1));
        json_array_append_new(sets, o);
    }
    gw_quota_t *q = t->cfg->redis_url != NULL ? gw_quota_create(t->cfg, "xero") : NULL;
    bool known = q != NULL;
    for (size_t i = 0; i != gw_dbs_nrows(tenants); ++i) {
        json_t *o = json_object();
        json_object_set_new(o, "tenant_id", col(tenants, i, 0));
        json_object_set_new(o, "name", col(tenants, i, 1));
        json_object_set_new(o, "token_set_id", json_integer(strtoll(gw_dbs_value(tenants, i, 2), NULL, 10)));
        json_object_set_new(o, "status", col(tenants, i, 3));
        json_object_set_new(o, "connected_at", col(tenants, i, 4));
        json_t *quota = quota_json(q, gw_dbs_value(tenants, i, 0));
        known &= json_is_object(quota);
        json_object_set_new(o, "quota", quota);
        json_array_append_new(list, o);
        connected |= strcmp(gw_dbs_value(tenants, i, 3), "active") == 0;
    }
    if (q != NULL && gw_dbs_nrows(tenants) == 0) { /* nothing to read: is Redis there at all? */
        gw_quota_remaining_t ignored;
        known = gw_quota_peek(q, "probe", &ignored) == 0;
    }
    gw_quota_destroy(q);
    gw_dbs_result_free(tokens);
    gw_dbs_result_free(tenants);
    t->doc = json_object();
    json_object_set_new(t->doc, "connected", json_boolean(connected));
    json_object_set_new(t->doc, "quotas", json_string(known ? "redis" : "unknown"));
    json_object_set_new(t->doc, "tenants", list);
    json_object_set_new(t->doc, "token_sets", sets);
}

int gw_xero_admin_status(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return gw_task_run(loop, req, call, on_status, true);
}
