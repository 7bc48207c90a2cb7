/* SPDX-License-Identifier: MIT */
/*
 * users.c: the admin's users, invitations and settings. Where each route runs:
 * - list, settings, approve, invitations: one statement on the loop's async pool (admin_users_list,
 *   admin_settings_get/_put, admin_user_approve, admin_invite of schema/functions/admin.sql; the latter two call
 *   auth_user_approve and auth_invitation_create of auth.sql), scoped by the organisation and audited in it. An
 *   invitation's token is drawn here (gw_auth_refresh_token: random bytes, no blocking); only its digest is stored,
 *   and the link is answered to the admin once (until the notification outbox exists it is not mailed).
 * - disable: the offload pool, because besides the statement (admin_user_disable: auth_user_disable, which revokes
 *   every refresh-token family of the user) it puts the user's deny key in Redis (gw_session_deny_user,
 *   settled:revoked:user:<id>) through a blocking Redis connection, so the user's access tokens end at once where
 *   the guard checks that key. Redis down: the user is disabled all the same, and the answer says
 *   "access_tokens_denied": false (they end within SETTLED_ACCESS_TOKEN_TTL).
 */
#include "users.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "admin.h"
#include "auth.h"
#include "db.h"
#include "mem.h"
#include "offload.h"
#include "query.h"
#include "redis_sync.h"
#include "reply.h"
#include "session.h"

static const char *const statuses[] = {"active", "pending_approval", "disabled", NULL};
static const char *const roles[] = {"admin", "client", NULL};
static const char *const registrations[] = {"off", "approval", NULL};

enum { IN_LIMIT, IN_CURSOR, IN_STATUS };
const gw_input_t gw_users_list_inputs[GW_USERS_LIST_NINPUTS] = {
    GW_ADMIN_PAGE_INPUTS,
    [IN_STATUS] = {"status", GW_IN_QUERY, GW_IN_ENUM, .values = statuses},
};
enum { IN_EMAIL, IN_ROLE, IN_INVITE_CUSTOMER };
const gw_input_t gw_users_invite_inputs[GW_USERS_INVITE_NINPUTS] = {
    [IN_EMAIL] = {"email", GW_IN_BODY, GW_IN_STRING, .required = true, .min = 3, .max = 254},
    [IN_ROLE] = {"role", GW_IN_BODY, GW_IN_ENUM, .required = true, .values = roles},
    [IN_INVITE_CUSTOMER] = {"customer_id", GW_IN_BODY, GW_IN_STRING, .min = 1, .max = 20},
};
enum { IN_ID, IN_CUSTOMER };
const gw_input_t gw_users_disable_inputs[GW_USERS_DISABLE_NINPUTS] = {GW_ADMIN_ID_INPUT};
const gw_input_t gw_users_approve_inputs[GW_USERS_APPROVE_NINPUTS] = {
    GW_ADMIN_ID_INPUT,
    [IN_CUSTOMER] = {"customer_id", GW_IN_BODY, GW_IN_STRING, .required = true, .min = 1, .max = 20},
};
const gw_input_t gw_settings_put_inputs[GW_SETTINGS_PUT_NINPUTS] = {
    {"self_registration", GW_IN_BODY, GW_IN_ENUM, .required = true, .values = registrations},
};

enum { STMT_LIST, STMT_INVITE, STMT_APPROVE, STMT_SETTINGS_GET, STMT_SETTINGS_PUT, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    {"admin_users_list", "SELECT admin_users_list($1::bigint, $2, $3::bigint, $4::integer)::text", 4},
    {"admin_invite",
     "SELECT result, field, detail, doc::text FROM admin_invite($1::bigint, $2, $3, $4::bigint, $5, $6::bigint, $7, "
     "$8)",
     8},
    {"admin_user_approve",
     "SELECT result, field, detail, doc::text FROM admin_user_approve($1::bigint, $2::bigint, $3::bigint, $4, $5)", 5},
    {"admin_settings_get", "SELECT admin_settings_get($1::bigint)::text", 1},
    {"admin_settings_put", "SELECT result, field, detail, doc::text FROM admin_settings_put($1::bigint, $2, $3, $4)",
     4},
};
static const char sql_disable[] =
    "SELECT result, field, detail, doc::text FROM admin_user_disable($1::bigint, $2::bigint, $3::bigint, $4, $5)";

const gw_module_t gw_users_module = {
    .name = "users",
    .statements = statements,
    .nstatements = STMT_MAX,
};

int gw_users_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[4];
    if (gw_admin_cursor(req, &call->in[IN_CURSOR], &params[2]) != 0)
        return 0;
    params[0] = gw_admin_org(req, &call->scope);
    params[1] = gw_admin_value(&call->in[IN_STATUS]);
    params[3] = gw_admin_value(&call->in[IN_LIMIT]);
    return gw_admin_read(loop, req, &statements[STMT_LIST], params, 4);
}

int gw_settings_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[1] = {gw_admin_org(req, &call->scope)};
    return gw_admin_read(loop, req, &statements[STMT_SETTINGS_GET], params, 1);
}

int gw_settings_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[4] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[0]),
                               gw_admin_actor(req, &call->scope), gw_admin_request_id(&call->scope)};
    return gw_admin_write(loop, req, &statements[STMT_SETTINGS_PUT], params, 4);
}

int gw_users_approve(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[5] = {gw_admin_org(req, &call->scope), gw_admin_value(&call->in[IN_ID]), gw_query_null(),
                               gw_admin_actor(req, &call->scope), gw_admin_request_id(&call->scope)};
    if (gw_admin_id_field(req, &call->in[IN_CUSTOMER], "customer_id", &params[2]) != 0)
        return 0;
    return gw_admin_write(loop, req, &statements[STMT_APPROVE], params, 5);
}

/* ---- invitations ---- */

/* The token of an invitation being stored, until its answer: in the request's pool, wiped when the pool goes. */
typedef struct st_invite_t {
    const gw_config_t *cfg;
    char token[64];
} invite_t;

static void on_invite_dispose(void *p)
{
    invite_t *inv = p;
    explicit_bzero(inv->token, sizeof(inv->token));
}

static void on_invite(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    invite_t *inv = data;
    const char *result = gw_db_rows_count(rows) == 1 ? gw_db_rows_value(rows, 0, 0, NULL) : NULL;
    const char *doc = result != NULL ? gw_db_rows_value(rows, 0, 3, NULL) : NULL;
    if (result == NULL || strcmp(result, "created") != 0 || doc == NULL) {
        gw_admin_answer(req, result, result != NULL ? gw_db_rows_value(rows, 0, 1, NULL) : NULL,
                        result != NULL ? gw_db_rows_value(rows, 0, 2, NULL) : NULL, NULL);
        return;
    }
    /* the link, as `settled user add --invite` prints it (SETTLED_PORTAL_URL, else http://SETTLED_LISTEN) */
    char base[400], link[512];
    gw_config_portal_base(inv->cfg, base, sizeof(base));
    snprintf(link, sizeof(link), "%s/invite#token=%s", base, inv->token);
    json_t *o = json_loads(doc, 0, NULL);
    if (o == NULL) {
        gw_reply_problem(req, 500, gw_err_internal, NULL);
        return;
    }
    json_object_set_new(o, "token", json_string(inv->token));
    json_object_set_new(o, "link", json_string(link));
    json_object_set_new(o, "sent", json_false());
    explicit_bzero(link, sizeof(link));
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (body == NULL) {
        gw_reply_problem(req, 500, gw_err_internal, NULL);
        return;
    }
    gw_reply_json(req, 201, body, strlen(body));
    explicit_bzero(body, strlen(body));
    free(body);
}

int gw_users_invite(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[8] = {gw_admin_org(req, &call->scope),
                               gw_admin_value(&call->in[IN_EMAIL]),
                               gw_admin_value(&call->in[IN_ROLE]),
                               gw_query_null(),
                               gw_query_null(),
                               gw_query_int(req, call->scope.user_id),
                               gw_admin_actor(req, &call->scope),
                               gw_admin_request_id(&call->scope)};
    if (gw_admin_id_field(req, &call->in[IN_INVITE_CUSTOMER], "customer_id", &params[3]) != 0)
        return 0;
    invite_t *inv = h2o_mem_alloc_shared(&req->pool, sizeof(*inv), on_invite_dispose);
    inv->cfg = loop->cfg;
    char *digest = h2o_mem_alloc_pool(&req->pool, 65);
    if (gw_auth_refresh_token(inv->token, digest) != 0) {
        gw_reply_problem(req, 500, gw_err_internal, NULL);
        return 0;
    }
    params[4] = (gw_db_param_t){digest, strlen(digest), false};
    return gw_query(loop, req, &statements[STMT_INVITE], params, 8, on_invite, inv);
}

/* ---- disable, on the offload pool ---- */

typedef struct st_disable_t {
    /* in */
    const gw_config_t *cfg;
    char org[24], user[24], self[24], actor[32], request_id[136];
    /* out */
    char *result, *field, *detail, *doc;
    bool denied;
    /* the request, until it goes away; slot is the request's pointer to this (cleared when done) */
    h2o_req_t *req;
    struct st_disable_t **slot;
    gw_offload_call_t *call;
} disable_t;

static void free_disable(disable_t *d)
{
    free(d->result);
    free(d->field);
    free(d->detail);
    free(d->doc);
    free(d);
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? gw_xstrdup(s) : NULL;
}

static void on_disable_work(void *arg)
{
    disable_t *d = arg;
    char msg[256];
    gw_dbs_t *s = gw_dbs_connect(d->cfg->database_url, msg, sizeof(msg));
    if (s == NULL)
        return; /* d->result stays NULL: 503 */
    const char *params[5] = {d->org, d->user, d->self, d->actor, d->request_id[0] != '\0' ? d->request_id : NULL};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_disable, 5, params);
    if (r != NULL && gw_dbs_nrows(r) == 1) {
        d->result = dup_or_null(gw_dbs_value(r, 0, 0));
        d->field = dup_or_null(gw_dbs_value(r, 0, 1));
        d->detail = dup_or_null(gw_dbs_value(r, 0, 2));
        d->doc = dup_or_null(gw_dbs_value(r, 0, 3));
    }
    if (r != NULL)
        gw_dbs_result_free(r);
    gw_dbs_close(s);
    if (d->result != NULL && strcmp(d->result, "ok") == 0 && d->cfg->redis_url != NULL) {
        gw_redis_sync_t *redis = gw_redis_sync_create(d->cfg->redis_url, 1000, 1000);
        d->denied = redis != NULL && gw_session_deny_user(redis, d->cfg, strtoll(d->user, NULL, 10)) == 0;
        gw_redis_sync_destroy(redis);
    }
}

static void on_disable_done(void *arg)
{
    disable_t *d = arg;
    h2o_req_t *req = d->req;
    *d->slot = NULL;
    if (d->result == NULL) {
        gw_reply_retry_after(req, d->cfg->retry_after > 0 ? d->cfg->retry_after : 5);
        gw_reply_problem(req, 503, gw_err_store_unavailable, "The database cannot answer now; retry later.");
    } else if (strcmp(d->result, "ok") == 0 && d->doc != NULL) {
        json_t *o = json_loads(d->doc, 0, NULL);
        json_object_set_new(o, "access_tokens_denied", json_boolean(d->denied));
        char *body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        gw_admin_answer(req, body != NULL ? "ok" : NULL, NULL, NULL, body);
        free(body);
    } else {
        gw_admin_answer(req, d->result, d->field, d->detail, d->doc);
    }
    free_disable(d);
}

static void on_disable_release(void *arg)
{
    free_disable(arg);
}

/* The request went away first: the user is still disabled, nobody is told. */
static void on_disable_request_dispose(void *p)
{
    disable_t **slot = p;
    if (*slot != NULL)
        gw_offload_detach((*slot)->call);
}

int gw_users_disable(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_err_t err = GW_ERR_INIT;
    if (loop->offload == NULL) {
        gw_reply_problem(req, 503, gw_err_store_unavailable, "The server is shutting down.");
        return 0;
    }
    disable_t *d = gw_xcalloc(1, sizeof(*d));
    d->cfg = loop->cfg;
    snprintf(d->org, sizeof(d->org), "%lld", (long long)call->scope.organisation_id);
    snprintf(d->user, sizeof(d->user), "%.*s", (int)call->in[IN_ID].str.len, call->in[IN_ID].str.base);
    snprintf(d->self, sizeof(d->self), "%lld", (long long)call->scope.user_id);
    snprintf(d->actor, sizeof(d->actor), "user:%lld", (long long)call->scope.user_id);
    h2o_iovec_t rid = call->scope.request_id;
    snprintf(d->request_id, sizeof(d->request_id), "%.*s",
             (int)(rid.len < sizeof(d->request_id) ? rid.len : sizeof(d->request_id) - 1), rid.base);
    d->req = req;
    disable_t **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), on_disable_request_dispose);
    *slot = d;
    d->slot = slot;
    d->call = gw_offload_run(loop->offload, on_disable_work, on_disable_done, on_disable_release, d, &err);
    if (d->call == NULL) {
        *slot = NULL;
        free_disable(d);
        gw_reply_retry_after(req, loop->cfg->retry_after > 0 ? loop->cfg->retry_after : 5);
        gw_reply_err(req, &err);
    }
    return 0;
}
