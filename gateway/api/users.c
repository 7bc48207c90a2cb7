/* SPDX-License-Identifier: MIT */
/*
 * users.c: the admin's users, invitations and settings. Where each route runs:
 * - list, settings, approve: one statement on the loop's async pool (admin_users_list, admin_settings_get/_put,
 *   admin_user_approve of schema/functions/admin.sql; the latter calls auth_user_approve of auth.sql), scoped by the
 *   organisation and audited in it.
 * - invitations: the offload pool, because besides the statement (admin_invite: auth_invitation_mail, which stores
 *   the token's digest and enqueues the invitation e-mail in one transaction) it reads the organisation's name and
 *   renders the e-mail (account_mail.h). The token is drawn there and leaves settled only in the e-mail: the answer
 *   names the outbox row (notification_id), never the token or the link.
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
#include "account_mail.h"
#include "admin.h"
#include "auth.h"
#include "db.h"
#include "mem.h"
#include "offload.h"
#include "query.h"
#include "redis_sync.h"
#include "reply.h"
#include "session.h"

static const char *const statuses[] = {"active", "pending_verification", "pending_approval", "disabled", NULL};
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

enum { STMT_LIST, STMT_APPROVE, STMT_SETTINGS_GET, STMT_SETTINGS_PUT, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    {"admin_users_list", "SELECT admin_users_list($1::bigint, $2, $3::bigint, $4::integer)::text", 4},
    {"admin_user_approve",
     "SELECT result, field, detail, doc::text FROM admin_user_approve($1::bigint, $2::bigint, $3::bigint, $4, $5)", 5},
    {"admin_settings_get", "SELECT admin_settings_get($1::bigint)::text", 1},
    {"admin_settings_put", "SELECT result, field, detail, doc::text FROM admin_settings_put($1::bigint, $2, $3, $4)",
     4},
};
static const char sql_invite[] = "SELECT result, field, detail, doc::text FROM admin_invite($1::bigint, $2, $3, "
                                 "$4::bigint, $5, $6::bigint, $7, $8, $9, $10, $11)";
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

/* ---- invitations and disable, on the offload pool ---- */

typedef enum en_users_job_kind_t { JOB_INVITE, JOB_DISABLE } users_job_kind_t;

typedef struct st_users_job_t {
    /* in */
    users_job_kind_t kind;
    const gw_config_t *cfg;
    char org[24], user[24], self[24], actor[32], request_id[136];
    char *email, *role, *customer; /* an invitation's (customer may be NULL) */
    /* out */
    char *result, *field, *detail, *doc;
    bool denied;
    /* the request, until it goes away; slot is the request's pointer to this (cleared when done) */
    h2o_req_t *req;
    struct st_users_job_t **slot;
    gw_offload_call_t *call;
} users_job_t;

static void free_job(users_job_t *d)
{
    free(d->email);
    free(d->role);
    free(d->customer);
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

/* Keeps the (result, field, detail, doc) row of r in d. */
static void keep_row(users_job_t *d, gw_dbs_result_t *r)
{
    if (r != NULL && gw_dbs_nrows(r) == 1) {
        d->result = dup_or_null(gw_dbs_value(r, 0, 0));
        d->field = dup_or_null(gw_dbs_value(r, 0, 1));
        d->detail = dup_or_null(gw_dbs_value(r, 0, 2));
        d->doc = dup_or_null(gw_dbs_value(r, 0, 3));
    }
    if (r != NULL)
        gw_dbs_result_free(r);
}

/* An invitation: a fresh token (only its digest is stored), its link rendered into the invitation e-mail, and both
 * stored in one statement (admin_invite: the invitation and its outbox row in one transaction). The token is not
 * answered: the e-mail is the one way it leaves settled. */
static void invite_work(users_job_t *d, gw_dbs_t *s)
{
    char token[64], digest[65], link[600];
    if (gw_auth_refresh_token(token, digest) != 0)
        return;
    gw_account_mail_link(d->cfg, NULL, GW_ACCOUNT_PAGE_INVITE, token, link, sizeof(link));
    gw_rendered_t msg;
    gw_err_t err = GW_ERR_INIT;
    int rc = gw_account_mail_render(s, strtoll(d->org, NULL, 10), "invitation", link, &msg, &err);
    explicit_bzero(link, sizeof(link));
    explicit_bzero(token, sizeof(token));
    if (rc != 0)
        return;
    const char *params[11] = {d->org,      d->email, d->role,  d->customer,
                              digest,      d->self,  d->actor, d->request_id[0] != '\0' ? d->request_id : NULL,
                              msg.subject, msg.text, msg.html};
    keep_row(d, gw_dbs_query(s, sql_invite, 11, params));
    explicit_bzero(msg.text, strlen(msg.text));
    explicit_bzero(msg.html, strlen(msg.html));
    gw_rendered_free(&msg);
}

static void disable_work(users_job_t *d, gw_dbs_t *s)
{
    const char *params[5] = {d->org, d->user, d->self, d->actor, d->request_id[0] != '\0' ? d->request_id : NULL};
    keep_row(d, gw_dbs_query(s, sql_disable, 5, params));
}

static void on_job_work(void *arg)
{
    users_job_t *d = arg;
    char msg[256];
    gw_dbs_t *s = gw_dbs_connect(d->cfg->database_url, msg, sizeof(msg));
    if (s == NULL)
        return; /* d->result stays NULL: 503 */
    if (d->kind == JOB_INVITE)
        invite_work(d, s);
    else
        disable_work(d, s);
    gw_dbs_close(s);
    if (d->kind == JOB_DISABLE && d->result != NULL && strcmp(d->result, "ok") == 0 && d->cfg->redis_url != NULL) {
        gw_redis_sync_t *redis = gw_redis_sync_create(d->cfg->redis_url, 1000, 1000);
        d->denied = redis != NULL && gw_session_deny_user(redis, d->cfg, strtoll(d->user, NULL, 10)) == 0;
        gw_redis_sync_destroy(redis);
    }
}

static void on_job_done(void *arg)
{
    users_job_t *d = arg;
    h2o_req_t *req = d->req;
    *d->slot = NULL;
    if (d->result == NULL) {
        gw_reply_retry_after(req, d->cfg->retry_after > 0 ? d->cfg->retry_after : 5);
        gw_reply_problem(req, 503, gw_err_store_unavailable, "The database cannot answer now; retry later.");
    } else if (d->kind == JOB_DISABLE && strcmp(d->result, "ok") == 0 && d->doc != NULL) {
        json_t *o = json_loads(d->doc, 0, NULL);
        json_object_set_new(o, "access_tokens_denied", json_boolean(d->denied));
        char *body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        gw_admin_answer(req, body != NULL ? "ok" : NULL, NULL, NULL, body);
        free(body);
    } else {
        gw_admin_answer(req, d->result, d->field, d->detail, d->doc);
    }
    free_job(d);
}

static void on_job_release(void *arg)
{
    free_job(arg);
}

/* The request went away first: the work is done all the same, nobody is told. */
static void on_job_request_dispose(void *p)
{
    users_job_t **slot = p;
    if (*slot != NULL)
        gw_offload_detach((*slot)->call);
}

/* A job of kind for the calling admin (user: the path's id, may be NULL). */
static users_job_t *new_job(gw_loop_t *loop, const gw_call_t *call, users_job_kind_t kind, const gw_value_t *user)
{
    users_job_t *d = gw_xcalloc(1, sizeof(*d));
    d->kind = kind;
    d->cfg = loop->cfg;
    snprintf(d->org, sizeof(d->org), "%lld", (long long)call->scope.organisation_id);
    if (user != NULL)
        snprintf(d->user, sizeof(d->user), "%.*s", (int)user->str.len, user->str.base);
    snprintf(d->self, sizeof(d->self), "%lld", (long long)call->scope.user_id);
    snprintf(d->actor, sizeof(d->actor), "user:%lld", (long long)call->scope.user_id);
    h2o_iovec_t rid = call->scope.request_id;
    snprintf(d->request_id, sizeof(d->request_id), "%.*s",
             (int)(rid.len < sizeof(d->request_id) ? rid.len : sizeof(d->request_id) - 1), rid.base);
    return d;
}

/* Runs d in the offload pool (it owns d from here). */
static int run_job(gw_loop_t *loop, h2o_req_t *req, users_job_t *d)
{
    gw_err_t err = GW_ERR_INIT;
    if (loop->offload == NULL) {
        free_job(d);
        gw_reply_problem(req, 503, gw_err_store_unavailable, "The server is shutting down.");
        return 0;
    }
    d->req = req;
    users_job_t **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), on_job_request_dispose);
    *slot = d;
    d->slot = slot;
    d->call = gw_offload_run(loop->offload, on_job_work, on_job_done, on_job_release, d, &err);
    if (d->call == NULL) {
        *slot = NULL;
        free_job(d);
        gw_reply_retry_after(req, loop->cfg->retry_after > 0 ? loop->cfg->retry_after : 5);
        gw_reply_err(req, &err);
    }
    return 0;
}

static char *dup_value(const gw_value_t *v)
{
    return v->present ? gw_xstrndup(v->str.base, v->str.len) : NULL;
}

int gw_users_invite(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t customer;
    if (gw_admin_id_field(req, &call->in[IN_INVITE_CUSTOMER], "customer_id", &customer) != 0)
        return 0;
    users_job_t *d = new_job(loop, call, JOB_INVITE, NULL);
    d->email = dup_value(&call->in[IN_EMAIL]);
    d->role = dup_value(&call->in[IN_ROLE]);
    d->customer = dup_value(&call->in[IN_INVITE_CUSTOMER]);
    return run_job(loop, req, d);
}

int gw_users_disable(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return run_job(loop, req, new_job(loop, call, JOB_DISABLE, &call->in[IN_ID]));
}
