/* SPDX-License-Identifier: MIT */
/*
 * payment_methods.c: the client's payment methods. The list is one statement on the loop's async pool, scoped by the
 * caller's organisation and customer. Everything that calls a provider or writes runs on the offload pool
 * (portal_task.h) with a blocking session:
 *
 * - card: the customer's Stripe customer is the one its link names (customer_links, as matching records it); when it
 *   has none, one is created (Idempotency-Key per organisation and customer, so two requests make one) and linked
 *   with rule 'created' (match_link) and recorded (pm_customer_seen), so the webhooks that follow find the portal
 *   customer. Then a SetupIntent (usage off_session, metadata naming settled's customer) with an Idempotency-Key of
 *   the client's own Idempotency-Key header, or of the request id.
 * - direct debit: a GoCardless billing request with a mandate request of the scheme (for the customer's GoCardless
 *   customer when it has one; the customer GoCardless makes otherwise is linked the same way), then a billing
 *   request flow whose redirect and exit URIs are under SETTLED_PORTAL_URL.
 * - delete: the card is detached (POST /v1/payment_methods/{pm}/detach) or the mandate cancelled (POST
 *   /mandates/{id}/actions/cancel); a method the provider already detached or cancelled counts as done. The row is
 *   then updated at once from the provider's answer through pm_apply_stripe_payment_method or
 *   pm_apply_gocardless_mandate, the functions the webhooks use (so the webhook that follows changes nothing), and
 *   the user's action is audited. A method already detached or cancelled here answers 204 without a call.
 * - default: pm_choose_default (audited).
 */
#include "payment_methods.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "db.h"
#include "log.h"
#include "mem.h"
#include "portal_task.h"
#include "query.h"
#include "reply.h"

static const char *const dd_schemes[] = {"bacs", "sepa_core", "autogiro", "becs", "becs_nz", "betalingsservice",
                                         "pad",  "ach",       NULL};
enum { IN_SCHEME };
const gw_input_t gw_pm_direct_debit_inputs[GW_PM_DIRECT_DEBIT_NINPUTS] = {
    [IN_SCHEME] = {"scheme", GW_IN_BODY, GW_IN_ENUM, .values = dd_schemes, .def = "bacs"},
};
enum { IN_ID };
const gw_input_t gw_pm_id_inputs[GW_PM_ID_NINPUTS] = {
    [IN_ID] = {"id", GW_IN_PATH, GW_IN_STRING, .required = true, .min = 1, .max = 19},
};

#define FORM "application/x-www-form-urlencoded" /* Stripe's v1 API takes forms */

/* The statuses of a method that is gone: not listed, and deleting it again is done already. */
#define PM_GONE "('detached', 'cancelled', 'failed', 'expired', 'consumed', 'blocked')"

enum { STMT_LIST, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    /* $1 organisation, $2 customer */
    {"pm_list",
     "SELECT m.id::text, m.provider::text, m.kind, m.brand, m.last4, m.exp_month::text, m.exp_year::text, m.scheme, "
     "m.bank_name, m.account_number_ending, m.status, m.is_default "
     "FROM payment_methods m WHERE m.organisation_id = $1::bigint AND m.customer_id = $2::bigint "
     "AND m.status NOT IN " PM_GONE " ORDER BY m.is_default DESC, m.provider_created_at DESC NULLS LAST, m.id DESC "
     "LIMIT 100",
     2},
};

const gw_module_t gw_pm_module = {
    .name = "payment_methods",
    .statements = statements,
    .nstatements = STMT_MAX,
};

bool gw_pm_idempotency_key_ok(const char *v, size_t len)
{
    if (len == 0 || len > 100)
        return false;
    for (size_t i = 0; i != len; ++i) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.' || c == ':'))
            return false;
    }
    return true;
}

/* ---- the list ---- */

static json_t *col(const gw_db_rows_t *rows, size_t r, size_t c)
{
    size_t len;
    const char *v = gw_db_rows_value(rows, r, c, &len);
    return v != NULL ? json_stringn(v, len) : json_null();
}

static json_t *col_int(const gw_db_rows_t *rows, size_t r, size_t c)
{
    const char *v = gw_db_rows_value(rows, r, c, NULL);
    return v != NULL ? json_integer(strtoll(v, NULL, 10)) : json_null();
}

static void on_list_rows(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    json_t *doc = json_object(), *list = json_array();
    for (size_t r = 0, n = gw_db_rows_count(rows); r != n; ++r) {
        json_t *o = json_object();
        const char *kind = gw_db_rows_value(rows, r, 2, NULL);
        json_object_set_new(o, "id", col(rows, r, 0));
        json_object_set_new(o, "provider", col(rows, r, 1));
        json_object_set_new(o, "kind", col(rows, r, 2));
        if (kind != NULL && strcmp(kind, "card") == 0) {
            json_object_set_new(o, "brand", col(rows, r, 3));
            json_object_set_new(o, "last4", col(rows, r, 4));
            json_object_set_new(o, "exp_month", col_int(rows, r, 5));
            json_object_set_new(o, "exp_year", col_int(rows, r, 6));
        } else {
            json_object_set_new(o, "scheme", col(rows, r, 7));
            json_object_set_new(o, "bank_name", col(rows, r, 8));
            json_object_set_new(o, "account_number_ending", col(rows, r, 9));
        }
        json_object_set_new(o, "status", col(rows, r, 10));
        const char *def = gw_db_rows_value(rows, r, 11, NULL);
        json_object_set_new(o, "is_default", json_boolean(def != NULL && def[0] == 't'));
        json_array_append_new(list, o);
    }
    json_object_set_new(doc, "data", list);
    json_object_set_new(doc, "next_cursor", json_null());
    gw_query_reply(req, doc);
}

int gw_pm_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[2];
    params[0] = gw_query_int(req, call->scope.organisation_id);
    params[1] = gw_query_int(req, call->scope.customer_id);
    return gw_query(loop, req, &statements[STMT_LIST], params, 2, on_list_rows, NULL);
}

/* ---- the offloaded routes: what they share ---- */

typedef struct st_pm_in_t {
    char idempotency[104]; /* the client's Idempotency-Key, or "" */
    char scheme[24];
    int64_t method_id;
} pm_in_t;

static void i64(char out[24], int64_t v)
{
    snprintf(out, 24, "%lld", (long long)v);
}

static void actor_of(const gw_portal_task_t *t, char out[40])
{
    snprintf(out, 40, "user:%lld", (long long)t->user_id);
}

/* The customer's name, email and the external id of its link to provider (not a deleted provider customer), each
 * malloc'd or NULL. Returns 1 found, 0 no such customer, -1 with t->err. */
static int read_customer(gw_portal_task_t *t, gw_dbs_t *db, const char *provider, char **name, char **email,
                         char **external)
{
    char org[24], cus[24];
    i64(org, t->organisation_id);
    i64(cus, t->customer_id);
    const char *p[] = {org, cus, provider};
    gw_dbs_result_t *r = gw_dbs_query(
        db,
        "SELECT c.name, c.email, (SELECT l.external_id FROM customer_links l LEFT JOIN payment_customers pc "
        "  ON pc.organisation_id = l.organisation_id AND pc.provider::text = l.provider AND pc.external_id = "
        "  l.external_id WHERE l.organisation_id = c.organisation_id AND l.provider = $3 AND l.customer_id = c.id "
        "  AND pc.deleted IS NOT TRUE ORDER BY l.created_at, l.external_id LIMIT 1) "
        "FROM customers c WHERE c.organisation_id = $1::bigint AND c.id = $2::bigint",
        3, p);
    if (r == NULL)
        return gw_dbs_err(db, &t->err);
    int found = gw_dbs_nrows(r) == 1;
    if (found) {
        const char *v;
        *name = (v = gw_dbs_value(r, 0, 0)) != NULL ? gw_xstrdup(v) : NULL;
        *email = (v = gw_dbs_value(r, 0, 1)) != NULL ? gw_xstrdup(v) : NULL;
        *external = (v = gw_dbs_value(r, 0, 2)) != NULL ? gw_xstrdup(v) : NULL;
    }
    gw_dbs_result_free(r);
    return found;
}

typedef struct st_link_t {
    const gw_portal_task_t *t;
    const char *provider, *external;
} link_t;

static int link_body(gw_dbs_t *db, void *arg, gw_err_t *err)
{
    const link_t *l = arg;
    char org[24], cus[24], actor[40];
    i64(org, l->t->organisation_id);
    i64(cus, l->t->customer_id);
    actor_of(l->t, actor);
    const char *p[] = {org, l->provider, l->external, cus, actor, l->t->request_id};
    const char *q[] = {org, l->provider, l->external, cus, l->t->request_id};
    if (gw_dbs_exec(db, "SELECT match_link($1::bigint, $2, $3, $4::bigint, 'created', $5, $6)", 6, p) < 0 ||
        gw_dbs_exec(db, "SELECT pm_customer_seen($1::bigint, $2, $3, now(), $4::bigint, NULL, false, $5)", 5, q) < 0)
        return gw_dbs_err(db, err);
    return 0;
}

/* Links the provider customer settled created (or GoCardless made) for the task's customer, as matching does. */
static int record_link(gw_portal_task_t *t, gw_dbs_t *db, const char *provider, const char *external)
{
    link_t l = {t, provider, external};
    if (gw_dbs_tx(db, link_body, &l, &t->err) != 0) {
        gw_log(GW_LOG_WARN, "portal request %s: linking %s customer %s failed: %s", t->request_id, provider, external,
               gw_dbs_error(db));
        return -1;
    }
    return 0;
}

/* Appends "&name=value" (value percent-encoded) to a form body of cap bytes; -1 when it does not fit. */
static int form_add(char *buf, size_t cap, const char *name, const char *value)
{
    size_t len = strlen(buf), vlen = strlen(value);
    char *enc = gw_xmalloc(GW_PERCENT_ENCODED_SIZE(vlen));
    gw_percent_encode(value, vlen, enc);
    int n = snprintf(buf + len, cap - len, "%s%s=%s", len != 0 ? "&" : "", name, enc);
    free(enc);
    return n < 0 || (size_t)n >= cap - len ? -1 : 0;
}

/* The object of a provider's JSON answer (Stripe: the document; GoCardless: its member envelope), or NULL. */
static json_t *answer_json(const gw_fetch_result_t *res, const char *envelope)
{
    json_t *doc = json_loadb(res->res.body, res->res.body_len, 0, NULL);
    if (doc == NULL || envelope == NULL)
        return doc;
    json_t *o = json_incref(json_object_get(doc, envelope));
    json_decref(doc);
    return json_is_object(o) ? o : (json_decref(o), NULL);
}

/* The idempotency key of a create made for the task: "settled-<what>-<org>-<customer>-<client key or request id>". */
static void task_key(const gw_portal_task_t *t, const pm_in_t *in, const char *what, char out[256])
{
    snprintf(out, 256, "settled-%s-%lld-%lld-%s%s", what, (long long)t->organisation_id, (long long)t->customer_id,
             in->idempotency[0] != '\0' ? "k-" : "r-", in->idempotency[0] != '\0' ? in->idempotency : t->request_id);
}

/* ---- POST /v1/payment-methods/card ---- */

static void card_work(gw_portal_task_t *t, gw_fetch_ctx_t *ctx)
{
    pm_in_t *in = t->data;
    char *name = NULL, *email = NULL, *cus = NULL, form[2048], org[24], customer[24], key[256];
    json_t *obj = NULL;
    gw_fetch_result_t res;
    i64(org, t->organisation_id);
    i64(customer, t->customer_id);
    int found = read_customer(t, ctx->db, "stripe", &name, &email, &cus);
    if (found <= 0) {
        if (found == 0)
            gw_err_set(&t->err, gw_err_not_found, 404, NULL);
        goto done;
    }
    if (cus == NULL) {
        form[0] = '\0';
        if ((email != NULL && form_add(form, sizeof(form), "email", email) != 0) ||
            (name != NULL && form_add(form, sizeof(form), "name", name) != 0) ||
            form_add(form, sizeof(form), "metadata%5Bsettled_customer_id%5D", customer) != 0 ||
            form_add(form, sizeof(form), "metadata%5Bsettled_organisation_id%5D", org) != 0) {
            gw_err_set(&t->err, gw_err_internal, 500, "The customer's details are too long for Stripe.");
            goto done;
        }
        snprintf(key, sizeof(key), "settled-customer-%s-%s", org, customer); /* one Stripe customer per customer */
        gw_fetch_call_t c = {.provider = "stripe",
                             .method = "POST",
                             .path = "/v1/customers",
                             .content_type = FORM,
                             .body = form,
                             .body_len = strlen(form),
                             .idempotency_key = key};
        if (gw_fetch(ctx, &c, &res) != GW_FETCH_OK) {
            gw_portal_task_fetch_err(t, "creating the Stripe customer", &res);
            goto done;
        }
        obj = answer_json(&res, NULL);
        gw_http_response_free(&res.res);
        const char *id = json_string_value(json_object_get(obj, "id"));
        if (id == NULL || strncmp(id, "cus_", 4) != 0) {
            gw_err_set(&t->err, gw_err_provider_unavailable, 502, "Stripe answered the customer without an id.");
            goto done;
        }
        cus = gw_xstrdup(id);
        json_decref(obj);
        obj = NULL;
        if (record_link(t, ctx->db, "stripe", cus) != 0)
            goto done;
    }
    form[0] = '\0';
    if (form_add(form, sizeof(form), "customer", cus) != 0 ||
        form_add(form, sizeof(form), "usage", "off_session") != 0 ||
        form_add(form, sizeof(form), "payment_method_types%5B%5D", "card") != 0 ||
        form_add(form, sizeof(form), "metadata%5Bsettled_customer_id%5D", customer) != 0 ||
        form_add(form, sizeof(form), "metadata%5Bsettled_organisation_id%5D", org) != 0) {
        gw_err_set(&t->err, gw_err_internal, 500, "The SetupIntent does not fit.");
        goto done;
    }
    task_key(t, in, "seti", key);
    gw_fetch_call_t c = {.provider = "stripe",
                         .method = "POST",
                         .path = "/v1/setup_intents",
                         .content_type = FORM,
                         .body = form,
                         .body_len = strlen(form),
                         .idempotency_key = key};
    if (gw_fetch(ctx, &c, &res) != GW_FETCH_OK) {
        gw_portal_task_fetch_err(t, "creating the Stripe SetupIntent", &res);
        goto done;
    }
    obj = answer_json(&res, NULL);
    gw_http_response_free(&res.res);
    const char *secret = json_string_value(json_object_get(obj, "client_secret")),
               *id = json_string_value(json_object_get(obj, "id"));
    if (secret == NULL || id == NULL) {
        gw_err_set(&t->err, gw_err_provider_unavailable, 502, "Stripe answered the SetupIntent without its secret.");
        goto done;
    }
    t->doc = json_object();
    json_object_set_new(t->doc, "client_secret", json_string(secret));
    json_object_set_new(t->doc, "setup_intent_id", json_string(id));
    const char *pk = t->cfg->stripe_publishable_key;
    json_object_set_new(t->doc, "publishable_key", pk != NULL && pk[0] != '\0' ? json_string(pk) : json_null());
    t->status = 201;
done:
    json_decref(obj);
    free(name);
    free(email);
    free(cus);
}

/* The client's Idempotency-Key header into in; 0, or -1 having answered 400. */
static int read_idempotency(h2o_req_t *req, pm_in_t *in)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("idempotency-key"), -1);
    if (i == -1)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (!gw_pm_idempotency_key_ok(v.base, v.len)) {
        gw_err_t err = GW_ERR_INIT;
        gw_err_set(&err, gw_err_parameter_invalid, 400,
                   "'Idempotency-Key' must be 1 to 100 letters, digits or '-', '_', '.', ':'.");
        gw_reply_err_field(req, &err, "Idempotency-Key");
        return -1;
    }
    memcpy(in->idempotency, v.base, v.len);
    in->idempotency[v.len] = '\0';
    return 0;
}

/* Starts work for an offloaded route with its inputs: the client's Idempotency-Key, the scheme, the method id of the
 * path (-1: not one, answered 404). */
static int start(gw_loop_t *loop, h2o_req_t *req, const gw_call_t *call, gw_portal_task_cb work, const char *scheme,
                 int64_t id)
{
    if (id < 0) {
        gw_reply_problem(req, 404, gw_err_not_found, NULL);
        return 0;
    }
    pm_in_t *in = gw_xcalloc(1, sizeof(*in));
    if (read_idempotency(req, in) != 0) {
        free(in);
        return 0;
    }
    snprintf(in->scheme, sizeof(in->scheme), "%s", scheme != NULL ? scheme : "");
    in->method_id = id;
    return gw_portal_task_run(loop, req, gw_portal_task_new(loop, call, work, in));
}

int gw_pm_card(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, card_work, NULL, 0);
}

/* ---- POST /v1/payment-methods/direct-debit ---- */

/* Posts doc (taken) as a GoCardless create; the object under envelope, or NULL with t->err. */
static json_t *gc_create(gw_portal_task_t *t, gw_fetch_ctx_t *ctx, const char *path, const char *envelope, json_t *doc,
                         const char *key, const char *what)
{
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    gw_fetch_call_t c = {.provider = "gocardless",
                         .method = "POST",
                         .path = path,
                         .body = body,
                         .body_len = body != NULL ? strlen(body) : 0,
                         .idempotency_key = key};
    gw_fetch_result_t res;
    json_t *o = NULL;
    if (body == NULL)
        gw_err_set(&t->err, gw_err_internal, 500, NULL);
    else if (gw_fetch(ctx, &c, &res) != GW_FETCH_OK)
        gw_portal_task_fetch_err(t, what, &res);
    else {
        o = answer_json(&res, envelope);
        gw_http_response_free(&res.res);
        if (o == NULL || json_string_value(json_object_get(o, "id")) == NULL) {
            json_decref(o);
            o = NULL;
            gw_err_set(&t->err, gw_err_provider_unavailable, 502, "%s: GoCardless answered without an id.", what);
        }
    }
    free(body);
    return o;
}

static void direct_debit_work(gw_portal_task_t *t, gw_fetch_ctx_t *ctx)
{
    pm_in_t *in = t->data;
    char *name = NULL, *email = NULL, *cu = NULL, customer[24], key[256], uri[1024];
    json_t *br = NULL, *flow = NULL;
    const char *portal = t->cfg->portal_url;
    i64(customer, t->customer_id);
    if (portal == NULL || portal[0] == '\0') {
        gw_err_set(&t->err, gw_err_config_invalid, 500,
                   "SETTLED_PORTAL_URL is not set: GoCardless has nowhere to send the customer back to.");
        return;
    }
    int found = read_customer(t, ctx->db, "gocardless", &name, &email, &cu);
    if (found <= 0) {
        if (found == 0)
            gw_err_set(&t->err, gw_err_not_found, 404, NULL);
        goto done;
    }
    json_t *mr = json_pack("{s:s, s:{s:s}}", "scheme", in->scheme, "metadata", "settled_customer_id", customer);
    json_t *spec = json_pack("{s:o, s:{s:s}}", "mandate_request", mr, "metadata", "settled_customer_id", customer);
    if (cu != NULL)
        json_object_set_new(spec, "links", json_pack("{s:s}", "customer", cu));
    task_key(t, in, "brq", key);
    if ((br = gc_create(t, ctx, "/billing_requests", "billing_requests", json_pack("{s:o}", "billing_requests", spec),
                        key, "creating the GoCardless billing request")) == NULL)
        goto done;
    const char *brq = json_string_value(json_object_get(br, "id")),
               *made = json_string_value(json_object_get(json_object_get(br, "links"), "customer"));
    if (cu == NULL && made != NULL && record_link(t, ctx->db, "gocardless", made) != 0)
        goto done;
    size_t plen = strlen(portal);
    while (plen != 0 && portal[plen - 1] == '/')
        --plen;
    snprintf(uri, sizeof(uri), "%.*s/payment-methods/direct-debit/complete", (int)plen, portal);
    char exit_uri[1024];
    snprintf(exit_uri, sizeof(exit_uri), "%.*s/payment-methods", (int)plen, portal);
    json_t *fspec =
        json_pack("{s:s, s:s, s:{s:s}}", "redirect_uri", uri, "exit_uri", exit_uri, "links", "billing_request", brq);
    if (email != NULL)
        json_object_set_new(fspec, "prefilled_customer", json_pack("{s:s}", "email", email));
    task_key(t, in, "brf", key);
    if ((flow = gc_create(t, ctx, "/billing_request_flows", "billing_request_flows",
                          json_pack("{s:o}", "billing_request_flows", fspec), key,
                          "creating the GoCardless billing request flow")) == NULL)
        goto done;
    const char *url = json_string_value(json_object_get(flow, "authorisation_url"));
    if (url == NULL) {
        gw_err_set(&t->err, gw_err_provider_unavailable, 502, "GoCardless answered the flow without its URL.");
        goto done;
    }
    t->doc = json_pack("{s:s, s:s, s:O}", "authorisation_url", url, "billing_request_id", brq,
                       "billing_request_flow_id", json_object_get(flow, "id"));
    t->status = 201;
done:
    json_decref(br);
    json_decref(flow);
    free(name);
    free(email);
    free(cu);
}

int gw_pm_direct_debit(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, direct_debit_work, call->in[IN_SCHEME].str.base, 0);
}

/* ---- DELETE /v1/payment-methods/{id} ---- */

typedef struct st_apply_t {
    const gw_portal_task_t *t;
    const char *provider, *object, *account, *before;
    json_t *obj;
} apply_t;

static int apply_body(gw_dbs_t *db, void *arg, gw_err_t *err)
{
    const apply_t *a = arg;
    char org[24], actor[40];
    i64(org, a->t->organisation_id);
    actor_of(a->t, actor);
    char *text = json_dumps(a->obj, JSON_COMPACT);
    if (text == NULL)
        return gw_err_set(err, gw_err_internal, 500, NULL);
    const char *p[] = {org, a->account, text, a->t->request_id}, *g[] = {org, text, a->t->request_id};
    long long rc =
        strcmp(a->provider, "stripe") == 0
            ? gw_dbs_exec(db, "SELECT pm_apply_stripe_payment_method($1::bigint, $2, now(), $3::jsonb, $4)", 4, p)
            : gw_dbs_exec(db, "SELECT pm_apply_gocardless_mandate($1::bigint, now(), $2::jsonb, NULL, NULL, $3)", 3, g);
    free(text);
    if (rc < 0)
        return gw_dbs_err(db, err);
    const char *q[] = {org, actor, a->provider, a->object, a->before, a->t->request_id};
    if (gw_dbs_exec(db,
                    "SELECT audit_lock($1::bigint), audit_write($1::bigint, $2, 'payment_method.remove', "
                    "'payment_method', $3 || ':' || $4, jsonb_build_object('status', $5::text), "
                    "(SELECT jsonb_build_object('status', m.status) FROM payment_methods m WHERE m.organisation_id = "
                    "$1::bigint AND m.provider::text = $3 AND m.object_id = $4), $6)",
                    6, q) < 0)
        return gw_dbs_err(db, err);
    return 0;
}

/* GETs a provider object (GoCardless: under envelope); NULL with t->err. */
static json_t *get_object(gw_portal_task_t *t, gw_fetch_ctx_t *ctx, const char *provider, const char *path,
                          const char *account, const char *envelope)
{
    gw_fetch_call_t c = {.provider = provider, .path = path, .account = account};
    gw_fetch_result_t res;
    if (gw_fetch(ctx, &c, &res) != GW_FETCH_OK) {
        gw_portal_task_fetch_err(t, "reading the payment method back", &res);
        return NULL;
    }
    json_t *o = answer_json(&res, envelope);
    gw_http_response_free(&res.res);
    if (o == NULL)
        gw_err_set(&t->err, gw_err_provider_unavailable, 502, "The provider answered with no object.");
    return o;
}

static bool gone_status(const char *s)
{
    static const char *const gone[] = {"detached", "cancelled", "failed", "expired", "consumed", "blocked"};
    for (size_t i = 0; s != NULL && i != sizeof(gone) / sizeof(gone[0]); ++i)
        if (strcmp(s, gone[i]) == 0)
            return true;
    return false;
}

static void delete_work(gw_portal_task_t *t, gw_fetch_ctx_t *ctx)
{
    pm_in_t *in = t->data;
    char org[24], cus[24], id[24], path[256], key[256];
    i64(org, t->organisation_id);
    i64(cus, t->customer_id);
    i64(id, in->method_id);
    const char *p[] = {org, cus, id};
    gw_dbs_result_t *r = gw_dbs_query(ctx->db,
                                      "SELECT m.provider::text, m.object_id, m.status, m.raw ->> 'account' "
                                      "FROM payment_methods m WHERE m.organisation_id = $1::bigint "
                                      "AND m.customer_id = $2::bigint AND m.id = $3::bigint",
                                      3, p);
    if (r == NULL) {
        gw_dbs_err(ctx->db, &t->err);
        return;
    }
    if (gw_dbs_nrows(r) != 1) {
        gw_dbs_result_free(r);
        gw_err_set(&t->err, gw_err_not_found, 404, NULL);
        return;
    }
    char *provider = gw_xstrdup(gw_dbs_value(r, 0, 0)), *object = gw_xstrdup(gw_dbs_value(r, 0, 1)),
         *status = gw_xstrdup(gw_dbs_value(r, 0, 2)),
         *account = gw_dbs_value(r, 0, 3) != NULL ? gw_xstrdup(gw_dbs_value(r, 0, 3)) : NULL;
    gw_dbs_result_free(r);
    json_t *obj = NULL;
    t->status = 204;
    if (gone_status(status))
        goto done; /* deleted before: nothing to do */
    char *enc = gw_xmalloc(GW_PERCENT_ENCODED_SIZE(strlen(object)));
    gw_percent_encode(object, strlen(object), enc);
    bool stripe = strcmp(provider, "stripe") == 0;
    gw_fetch_result_t res;
    if (stripe) {
        snprintf(path, sizeof(path), "/v1/payment_methods/%s/detach", enc);
        snprintf(key, sizeof(key), "settled-detach-%s", object);
        gw_fetch_call_t c = {.provider = "stripe",
                             .method = "POST",
                             .path = path,
                             .account = account,
                             .content_type = FORM,
                             .body = "",
                             .body_len = 0,
                             .idempotency_key = key,
                             .keep_rejected_body = true};
        gw_fetch_status_t st = gw_fetch(ctx, &c, &res);
        if (st == GW_FETCH_OK) {
            obj = answer_json(&res, NULL);
            gw_http_response_free(&res.res);
        } else if (st == GW_FETCH_REJECTED && res.http_status == 400) {
            gw_http_response_free(&res.res); /* not attached to a customer: detached already */
            snprintf(path, sizeof(path), "/v1/payment_methods/%s", enc);
            obj = get_object(t, ctx, "stripe", path, account, NULL);
            if (obj != NULL && !json_is_null(json_object_get(obj, "customer"))) {
                gw_err_set(&t->err, gw_err_provider_rejected, 502, "Stripe refused to detach the card.");
                json_decref(obj);
                obj = NULL;
            }
        } else {
            if (st == GW_FETCH_REJECTED)
                gw_http_response_free(&res.res);
            gw_portal_task_fetch_err(t, "detaching the card", &res);
        }
    } else {
        snprintf(path, sizeof(path), "/mandates/%s/actions/cancel", enc);
        gw_fetch_call_t c = {.provider = "gocardless",
                             .method = "POST",
                             .path = path,
                             .body = "{\"data\":{}}",
                             .body_len = 11,
                             .keep_rejected_body = true};
        gw_fetch_status_t st = gw_fetch(ctx, &c, &res);
        if (st == GW_FETCH_OK) {
            obj = answer_json(&res, "mandates");
            gw_http_response_free(&res.res);
        } else if (res.http_status == 409 || res.http_status == 422) {
            if (st == GW_FETCH_REJECTED)
                gw_http_response_free(&res.res);
            /* cancelled (or failed, expired) already? then it is done */
            snprintf(path, sizeof(path), "/mandates/%s", enc);
            obj = get_object(t, ctx, "gocardless", path, NULL, "mandates");
            if (obj != NULL && !gone_status(json_string_value(json_object_get(obj, "status")))) {
                gw_err_set(&t->err, gw_err_conflict, 409, "GoCardless cannot cancel this mandate now.");
                json_decref(obj);
                obj = NULL;
            }
        } else {
            if (st == GW_FETCH_REJECTED)
                gw_http_response_free(&res.res);
            gw_portal_task_fetch_err(t, "cancelling the mandate", &res);
        }
    }
    free(enc);
    if (obj == NULL) {
        if (!gw_err_is_set(&t->err))
            gw_err_set(&t->err, gw_err_provider_unavailable, 502, "The provider answered with no object.");
        goto done;
    }
    apply_t a = {t, provider, object, account, status, obj};
    if (gw_dbs_tx(ctx->db, apply_body, &a, &t->err) != 0)
        gw_log(GW_LOG_WARN, "portal request %s: recording the removal of %s failed: %s", t->request_id, object,
               gw_dbs_error(ctx->db));
done:
    json_decref(obj);
    free(provider);
    free(object);
    free(status);
    free(account);
}

/* The method id of the path, or -1 (not one: 404). */
static int64_t method_id(const gw_call_t *call)
{
    h2o_iovec_t v = call->in[IN_ID].str;
    int64_t n = 0;
    if (v.len == 0 || v.len > 18)
        return -1;
    for (size_t i = 0; i != v.len; ++i) {
        if (v.base[i] < '0' || v.base[i] > '9')
            return -1;
        n = n * 10 + (v.base[i] - '0');
    }
    return n;
}

int gw_pm_delete(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, delete_work, NULL, method_id(call));
}

/* ---- PUT /v1/payment-methods/{id}/default ---- */

typedef struct st_choose_t {
    const gw_portal_task_t *t;
    int64_t id;
    char outcome[16];
} choose_t;

static int choose_body(gw_dbs_t *db, void *arg, gw_err_t *err)
{
    choose_t *c = arg;
    char org[24], cus[24], id[24], actor[40];
    i64(org, c->t->organisation_id);
    i64(cus, c->t->customer_id);
    i64(id, c->id);
    actor_of(c->t, actor);
    const char *p[] = {org, cus, id, actor, c->t->request_id};
    gw_dbs_result_t *r = gw_dbs_query(db, "SELECT pm_choose_default($1::bigint, $2::bigint, $3::bigint, $4, $5)", 5, p);
    if (r == NULL)
        return gw_dbs_err(db, err);
    snprintf(c->outcome, sizeof(c->outcome), "%s", gw_dbs_value(r, 0, 0) != NULL ? gw_dbs_value(r, 0, 0) : "");
    gw_dbs_result_free(r);
    return 0;
}

static void default_work(gw_portal_task_t *t, gw_fetch_ctx_t *ctx)
{
    pm_in_t *in = t->data;
    choose_t c = {.t = t, .id = in->method_id};
    if (gw_dbs_tx(ctx->db, choose_body, &c, &t->err) != 0) {
        gw_log(GW_LOG_WARN, "portal request %s: choosing the default failed: %s", t->request_id, gw_dbs_error(ctx->db));
        return;
    }
    if (strcmp(c.outcome, "not_found") == 0)
        gw_err_set(&t->err, gw_err_not_found, 404, NULL);
    else if (strcmp(c.outcome, "unusable") == 0)
        gw_err_set(&t->err, gw_err_conflict, 409, "This payment method cannot be used to pay, so not as the default.");
    else
        t->status = 204;
}

int gw_pm_default(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    return start(loop, req, call, default_work, NULL, method_id(call));
}
