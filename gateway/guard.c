/* SPDX-License-Identifier: MIT */
/*
 * guard.c: the one place where the portal API decides who calls and whether the request is well-formed, so that
 * no handler checks a role or parses a parameter itself (DESIGN.md 1.5 and 4). Order: CORS headers, body size (413),
 * token (401), deny list (401), role (404), inputs (400), handler. The token is verified on the loop (microseconds,
 * auth.h); the deny list is one async Redis EXISTS; nothing here blocks.
 */
#include "guard.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "log.h"
#include "metrics.h"
#include "notes.h"
#include "redis.h"
#include "reply.h"
#include "session.h"

static gw_auth_t *guard_auth; /* read-only once the loops run */

void gw_guard_start(const gw_config_t *cfg)
{
    gw_err_t err = GW_ERR_INIT;
    if ((guard_auth = gw_auth_create(cfg, &err)) == NULL)
        gw_log(GW_LOG_WARN, "the portal API is off (every /v1 route answers 503 auth_unavailable): %s", err.detail);
}

void gw_guard_stop(void)
{
    if (guard_auth != NULL)
        gw_auth_destroy(guard_auth);
    guard_auth = NULL;
}

size_t gw_guard_revoked_key(const char *jti, char out[96])
{
    return gw_session_jti_key(jti, out);
}

bool gw_guard_allows(gw_access_t access, gw_role_t role)
{
    if (access == GW_ACCESS_PUBLIC)
        return true;
    return (role == GW_ROLE_CLIENT && (access & GW_ACCESS_CLIENT) != 0) ||
           (role == GW_ROLE_ADMIN && (access & GW_ACCESS_ADMIN) != 0);
}

/* ---- CORS ---- */

/* The request's Origin when SETTLED_CORS_ORIGINS lists it exactly, else an empty iovec. */
static h2o_iovec_t allowed_origin(const gw_config_t *cfg, h2o_req_t *req)
{
    h2o_iovec_t none = h2o_iovec_init(NULL, 0);
    if (cfg->cors_origins == NULL || cfg->cors_origins[0] == '\0')
        return none;
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    if (i == -1)
        return none;
    h2o_iovec_t origin = req->headers.entries[i].value;
    for (const char *p = cfg->cors_origins; *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (len == origin.len && memcmp(p, origin.base, len) == 0)
            return origin;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return none;
}

void gw_guard_cors(const gw_config_t *cfg, h2o_req_t *req)
{
    h2o_iovec_t origin = allowed_origin(cfg, req);
    if (origin.base == NULL)
        return;
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-origin"), 0, NULL,
                          origin.base, origin.len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-expose-headers"), 0, NULL,
                          H2O_STRLIT("ETag, X-Request-Id, WWW-Authenticate"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
    if (cfg->refresh_cookie) /* the refresh cookie travels only on a credentialed request */
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-credentials"), 0, NULL,
                              H2O_STRLIT("true"));
}

bool gw_guard_preflight(const gw_config_t *cfg, h2o_req_t *req, const char *methods)
{
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")) ||
        h2o_find_header_by_str(&req->headers, H2O_STRLIT("access-control-request-method"), -1) == -1 ||
        allowed_origin(cfg, req).base == NULL)
        return false;
    gw_guard_cors(cfg, req);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-methods"), 0, NULL, methods,
                          strlen(methods));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-headers"), 0, NULL,
                          H2O_STRLIT("Authorization, Content-Type, If-None-Match, X-Request-Id, X-Settled-CSRF"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-max-age"), 0, NULL,
                          H2O_STRLIT("600"));
    gw_reply_empty(req, 204);
    return true;
}

/* ---- validation ---- */

static int invalid(gw_err_t *err, const char **field, const gw_input_t *in, const char *why)
{
    *field = in->name;
    if (in->where == GW_IN_PATH)
        return gw_err_set(err, gw_err_not_found, 404, NULL);
    return gw_err_set(err, gw_err_parameter_invalid, 400, "'%s' %s.", in->name, why);
}

/* True if s (len bytes) is well-formed UTF-8 without control characters. */
static bool clean_text(const char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (n == 0 || i + n > len || (n == 2 && c < 0xc2) || (n == 4 && c > 0xf4))
            return false;
        for (size_t k = 1; k != n; ++k)
            if (((unsigned char)s[i + k] & 0xc0) != 0x80)
                return false;
        i += n;
    }
    return true;
}

static bool parse_int(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    bool neg = len != 0 && s[0] == '-';
    if (neg)
        ++i;
    if (i == len || len - i > 18 || (s[i] == '0' && len - i > 1))
        return false;
    int64_t v = 0;
    for (; i != len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return true;
}

static bool parse_date(const char *s, size_t len, int64_t *out)
{
    if (len != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (size_t i = 0; i != 10; ++i)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return false;
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1] + (m == 2 && leap))
        return false;
    *out = (int64_t)y * 10000 + m * 100 + d;
    return true;
}

/* A plain decimal: optional '-', 1 to 15 digits (no leading zero unless alone), optionally '.' and 1 to 4 digits. */
static bool parse_money(const char *s, size_t len)
{
    size_t i = len != 0 && s[0] == '-' ? 1 : 0, start = i;
    while (i != len && s[i] >= '0' && s[i] <= '9')
        ++i;
    size_t digits = i - start;
    if (digits == 0 || digits > 15 || (s[start] == '0' && digits > 1))
        return false;
    if (i == len)
        return true;
    if (s[i++] != '.')
        return false;
    size_t frac = len - i;
    if (frac == 0 || frac > 4)
        return false;
    for (; i != len; ++i)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Checks text (len bytes, from a path or query, or a JSON string) as input in; fills v. */
static int check_text(h2o_mem_pool_t *pool, const gw_input_t *in, const char *text, size_t len, gw_value_t *v,
                      gw_err_t *err, const char **field)
{
    char msg[96];
    switch (in->type) {
    case GW_IN_STRING: {
        int64_t max = in->max > 0 ? in->max : 1024;
        if (!clean_text(text, len))
            return invalid(err, field, in, "must be text without control characters");
        if ((int64_t)len < in->min || (int64_t)len > max) {
            snprintf(msg, sizeof(msg), "must be %lld to %lld bytes long", (long long)in->min, (long long)max);
            return invalid(err, field, in, msg);
        }
        break;
    }
    case GW_IN_INT:
        if (!parse_int(text, len, &v->i))
            return invalid(err, field, in, "must be an integer");
        if (v->i < in->min || v->i > in->max) {
            snprintf(msg, sizeof(msg), "must be between %lld and %lld", (long long)in->min, (long long)in->max);
            return invalid(err, field, in, msg);
        }
        break;
    case GW_IN_BOOL:
        if (h2o_memis(text, len, H2O_STRLIT("true")))
            v->i = 1;
        else if (h2o_memis(text, len, H2O_STRLIT("false")))
            v->i = 0;
        else
            return invalid(err, field, in, "must be true or false");
        break;
    case GW_IN_ENUM: {
        size_t k = 0;
        while (in->values[k] != NULL && !h2o_memis(text, len, in->values[k], strlen(in->values[k])))
            ++k;
        if (in->values[k] == NULL)
            return invalid(err, field, in, "is not one of the allowed values (docs/api.md)");
        v->i = (int64_t)k;
        break;
    }
    case GW_IN_DATE:
        if (!parse_date(text, len, &v->i))
            return invalid(err, field, in, "must be a date YYYY-MM-DD");
        break;
    case GW_IN_MONEY:
        if (!parse_money(text, len))
            return invalid(err, field, in, "must be a decimal amount like \"12.30\" (at most 4 decimals)");
        break;
    case GW_IN_CURSOR: {
        int64_t max = in->max > 0 ? in->max : 512;
        bool ok = len != 0 && (int64_t)len <= max;
        for (size_t i = 0; ok && i != len; ++i) {
            char c = text[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
        }
        if (!ok)
            return invalid(err, field, in, "is not a cursor settled issued");
        break;
    }
    case GW_IN_ARRAY:
        return invalid(err, field, in, "must be a JSON array"); /* never a path or query value, nor a default */
    }
    char *copy = h2o_mem_alloc_pool(pool, len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    v->str = h2o_iovec_init(copy, len);
    v->present = true;
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decodes s (and '+' as a space) into pool; returns false on a malformed escape or an encoded NUL. */
static bool url_decode(h2o_mem_pool_t *pool, const char *s, size_t len, h2o_iovec_t *out)
{
    char *d = h2o_mem_alloc_pool(pool, len + 1);
    size_t o = 0;
    for (size_t i = 0; i != len; ++i) {
        if (s[i] == '%') {
            if (i + 2 >= len)
                return false;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0))
                return false;
            d[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            d[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    d[o] = '\0';
    *out = h2o_iovec_init(d, o);
    return true;
}

static const gw_input_t *find_input(const gw_route_t *route, gw_in_where_t where, const char *name, size_t len,
                                    size_t *index)
{
    for (size_t k = 0; k != route->ninputs; ++k)
        if (route->inputs[k].where == where &&
            h2o_memis(name, len, route->inputs[k].name, strlen(route->inputs[k].name))) {
            *index = k;
            return &route->inputs[k];
        }
    return NULL;
}

static int unknown(gw_err_t *err, const char **field, h2o_mem_pool_t *pool, const char *what, const char *name,
                   size_t len)
{
    char *n = h2o_mem_alloc_pool(pool, len + 1);
    memcpy(n, name, len);
    n[len] = '\0';
    *field = n;
    if (len > 64 || !clean_text(name, len))
        return gw_err_set(err, gw_err_parameter_unknown, 400, "The request has an unknown %s.", what);
    return gw_err_set(err, gw_err_parameter_unknown, 400, "Unknown %s '%.*s'.", what, (int)len, name);
}

static int check_query(h2o_mem_pool_t *pool, const gw_route_t *route, h2o_iovec_t query, gw_call_t *call, gw_err_t *err,
                       const char **field)
{
    const char *p = query.base, *end = query.base + query.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp != NULL ? amp : end;
        if (stop != p) {
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            h2o_iovec_t name, value;
            if (!url_decode(pool, p, (size_t)((eq != NULL ? eq : stop) - p), &name)) {
                *field = NULL;
                return gw_err_set(err, gw_err_parameter_invalid, 400, "The query string is malformed.");
            }
            size_t k;
            const gw_input_t *in = find_input(route, GW_IN_QUERY, name.base, name.len, &k);
            if (in == NULL)
                return unknown(err, field, pool, "query parameter", name.base, name.len);
            if (call->in[k].present)
                return invalid(err, field, in, "is given more than once");
            if (!url_decode(pool, eq != NULL ? eq + 1 : stop, eq != NULL ? (size_t)(stop - eq - 1) : 0, &value))
                return invalid(err, field, in, "is not a valid percent-encoded value");
            if (check_text(pool, in, value.base, value.len, &call->in[k], err, field) != 0)
                return -1;
        }
        p = stop + 1;
    }
    return 0;
}

static int check_json(h2o_mem_pool_t *pool, const gw_input_t *in, json_t *v, gw_value_t *out, gw_err_t *err,
                      const char **field)
{
    char buf[32];
    switch (in->type) {
    case GW_IN_INT:
        if (!json_is_integer(v))
            return invalid(err, field, in, "must be a JSON integer");
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
        return check_text(pool, in, buf, strlen(buf), out, err, field);
    case GW_IN_BOOL:
        if (!json_is_boolean(v))
            return invalid(err, field, in, "must be true or false");
        return check_text(pool, in, json_is_true(v) ? "true" : "false", json_is_true(v) ? 4 : 5, out, err, field);
    case GW_IN_ARRAY: {
        size_t max = in->max > 0 ? (size_t)in->max : 100;
        if (!json_is_array(v))
            return invalid(err, field, in, "must be a JSON array");
        if (json_array_size(v) > max) {
            char msg[64];
            snprintf(msg, sizeof(msg), "must have at most %zu elements", max);
            return invalid(err, field, in, msg);
        }
        char *text = json_dumps(v, JSON_COMPACT);
        if (text == NULL)
            return gw_err_set(err, gw_err_internal, 500, "The body could not be re-encoded.");
        size_t len = strlen(text);
        char *copy = h2o_mem_alloc_pool(pool, len + 1);
        memcpy(copy, text, len + 1);
        free(text);
        out->str = h2o_iovec_init(copy, len);
        out->present = true;
        return 0;
    }
    default:
        if (!json_is_string(v))
            return invalid(err, field, in, "must be a JSON string");
        return check_text(pool, in, json_string_value(v), json_string_length(v), out, err, field);
    }
}

static int check_body(h2o_mem_pool_t *pool, const gw_route_t *route, h2o_iovec_t body, h2o_iovec_t content_type,
                      gw_call_t *call, gw_err_t *err, const char **field)
{
    bool takes_body = false;
    for (size_t k = 0; k != route->ninputs; ++k)
        takes_body |= route->inputs[k].where == GW_IN_BODY;
    *field = NULL;
    if (!takes_body) {
        if (body.len != 0)
            return gw_err_set(err, gw_err_json_invalid, 400, "This route takes no request body.");
        return 0;
    }
    if (body.len == 0)
        return 0; /* the required fields are reported missing below */
    if (content_type.len < 16 || strncasecmp(content_type.base, "application/json", 16) != 0 ||
        (content_type.len > 16 && content_type.base[16] != ';' && content_type.base[16] != ' '))
        return gw_err_set(err, gw_err_json_invalid, 400, "The body must be application/json.");
    json_error_t jerr;
    json_t *root = json_loadb(body.base, body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return gw_err_set(err, gw_err_json_invalid, 400, "The body is not a JSON object.");
    }
    call->body = root;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        size_t k;
        const gw_input_t *in = find_input(route, GW_IN_BODY, key, strlen(key), &k);
        if (in == NULL)
            return unknown(err, field, pool, "body field", key, strlen(key));
        if (json_is_null(value))
            continue; /* null is "not given" */
        if (check_json(pool, in, value, &call->in[k], err, field) != 0)
            return -1;
    }
    return 0;
}

int gw_guard_validate(h2o_mem_pool_t *pool, const gw_route_t *route, const h2o_iovec_t *params, size_t nparams,
                      h2o_iovec_t query, h2o_iovec_t body, h2o_iovec_t content_type, gw_call_t *call, gw_err_t *err,
                      const char **field)
{
    *field = NULL;
    if (route->ninputs > GW_INPUTS_MAX)
        return gw_err_set(err, gw_err_internal, 500, "The route declares too many inputs.");
    /* path parameters: the pattern's k-th {name} is the k-th path input */
    size_t np = 0;
    for (size_t k = 0; k != route->ninputs; ++k) {
        const gw_input_t *in = &route->inputs[k];
        if (in->where != GW_IN_PATH)
            continue;
        if (np == nparams)
            return invalid(err, field, in, "is missing");
        if (check_text(pool, in, params[np].base, params[np].len, &call->in[k], err, field) != 0)
            return -1;
        ++np;
    }
    if (check_query(pool, route, query, call, err, field) != 0 ||
        check_body(pool, route, body, content_type, call, err, field) != 0)
        return -1;
    for (size_t k = 0; k != route->ninputs; ++k) {
        const gw_input_t *in = &route->inputs[k];
        if (call->in[k].present)
            continue;
        if (in->def != NULL) {
            if (check_text(pool, in, in->def, strlen(in->def), &call->in[k], err, field) != 0)
                return -1;
        } else if (in->required) {
            return invalid(err, field, in, "is required");
        }
    }
    return 0;
}

/* ---- the guard ---- */

/* A call waiting for the deny list. Malloc'd, since Redis may answer after the request is gone; the request's pool
 * holds a link to it whose dispose hook tells it so. */
typedef struct st_guard_link_t guard_link_t;
typedef struct st_guard_wait_t {
    h2o_req_t *req;
    gw_loop_t *loop;
    const gw_route_t *route;
    gw_call_t *call;
    h2o_iovec_t params[GW_PATH_PARAMS_MAX]; /* they point into the request's path */
    size_t nparams;
    guard_link_t *link;
} guard_wait_t;
struct st_guard_link_t {
    guard_wait_t *wait;
};

static void on_link_dispose(void *p)
{
    guard_link_t *link = p;
    if (link->wait != NULL)
        link->wait->req = NULL;
}

static void on_body_dispose(void *p)
{
    json_t **body = p;
    json_decref(*body);
}

static void reply_unauthenticated(h2o_req_t *req, const char *reason, const char *why)
{
    gw_metrics_guard_refused(reason);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                   H2O_STRLIT("Bearer realm=\"settled\""));
    gw_note(req, GW_NOTE_DETAIL, why, strlen(why));
    gw_reply_problem(req, 401, gw_err_unauthenticated, "A valid access token is required.");
}

static void reply_invalid(h2o_req_t *req, const gw_err_t *err, const char *field)
{
    gw_metrics_guard_refused("invalid");
    gw_reply_err_field(req, err, err->status == 404 ? NULL : field);
}

/* The caller is known (or the route is public): the role, then the inputs, then the handler. */
static int admit(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, gw_call_t *call, const h2o_iovec_t *params,
                 size_t nparams)
{
    /* a role the route does not serve: as if the route did not exist (docs/api.md, "Roles and scope") */
    if (!gw_guard_allows(route->access, call->scope.role)) {
        gw_metrics_guard_refused("role");
        gw_reply_problem(req, 404, gw_err_not_found, NULL);
        return 0;
    }
    h2o_iovec_t query = h2o_iovec_init(NULL, 0);
    if (req->query_at != SIZE_MAX && req->query_at < req->path.len)
        query = h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    ssize_t ct = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    h2o_iovec_t content_type = ct != -1 ? req->headers.entries[ct].value : h2o_iovec_init(NULL, 0);
    gw_err_t err = GW_ERR_INIT;
    const char *field = NULL;
    int rc =
        gw_guard_validate(&req->pool, route, params, nparams, query, req->entity, content_type, call, &err, &field);
    if (call->body != NULL) {
        json_t **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), on_body_dispose);
        *slot = call->body;
    }
    if (rc != 0) {
        reply_invalid(req, &err, field);
        return 0;
    }
    return route->api(loop, req, route, call);
}

static void on_revocation(void *data, int result)
{
    guard_wait_t *wait = data;
    h2o_req_t *req = wait->req;
    if (req != NULL) {
        wait->link->wait = NULL;
        if (result == 1) {
            reply_unauthenticated(req, "revoked", "access token revoked");
        } else {
            if (result < 0)
                gw_metrics_revocation_unchecked();
            admit(wait->loop, req, wait->route, wait->call, wait->params, wait->nparams);
        }
    }
    free(wait);
}

int gw_guard_run(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const h2o_iovec_t *params, size_t nparams)
{
    gw_guard_cors(loop->cfg, req);
    if (req->entity.len > loop->cfg->api_body_limit) {
        gw_metrics_guard_refused("invalid");
        gw_reply_problem(req, 413, gw_err_body_too_large, "The request body exceeds SETTLED_API_BODY_LIMIT.");
        return 0;
    }
    gw_call_t *call = h2o_mem_alloc_pool(&req->pool, sizeof(*call));
    memset(call, 0, sizeof(*call));
    ssize_t rid = h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1);
    if (rid != -1)
        call->scope.request_id = req->res.headers.entries[rid].value;

    if (route->access == GW_ACCESS_PUBLIC)
        return admit(loop, req, route, call, params, nparams);
    if (guard_auth == NULL) {
        gw_reply_retry_after(req, loop->cfg->retry_after);
        gw_reply_problem(req, 503, gw_err_auth_unavailable, "Access tokens cannot be checked now.");
        return 0;
    }
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i == -1) {
        reply_unauthenticated(req, "unauthenticated", "no Authorization header");
        return 0;
    }
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len <= 7 || strncasecmp(v.base, "bearer ", 7) != 0) {
        reply_unauthenticated(req, "unauthenticated", "Authorization is not a Bearer token");
        return 0;
    }
    h2o_iovec_t token = h2o_iovec_init(v.base + 7, v.len - 7);
    while (token.len != 0 && token.base[0] == ' ')
        ++token.base, --token.len;
    gw_claims_t claims;
    memset(&claims, 0, sizeof(claims));
    gw_err_t err = GW_ERR_INIT;
    if (token.len == 0 ||
        gw_auth_verify_access(guard_auth, token.base, token.len, (int64_t)time(NULL), &claims, &err) != 0) {
        reply_unauthenticated(req, "unauthenticated", err.detail[0] != '\0' ? err.detail : "token refused");
        return 0;
    }
    if ((claims.role != GW_ROLE_CLIENT && claims.role != GW_ROLE_ADMIN) || claims.organisation_id <= 0 ||
        (claims.role == GW_ROLE_CLIENT && claims.customer_id <= 0) || claims.jti[0] == '\0') {
        reply_unauthenticated(req, "unauthenticated", "token claims do not name a scope");
        return 0;
    }
    call->scope.role = claims.role;
    call->scope.organisation_id = claims.organisation_id;
    call->scope.customer_id = claims.role == GW_ROLE_CLIENT ? claims.customer_id : 0;
    call->scope.user_id = claims.user_id;
    memcpy(call->scope.jti, claims.jti, sizeof(call->scope.jti));
    call->scope.exp = claims.exp;

    /* the deny list, before anything else is told: a logged-out token's jti, and every token of a disabled user, in
     * one EXISTS (loss-tolerant: with Redis down or not configured the token is accepted and counted, docs/api.md
     * "Revocation") */
    char key[96], ukey[64];
    const char *keys[2] = {key, ukey};
    size_t lens[2] = {gw_guard_revoked_key(claims.jti, key), gw_session_user_key(claims.user_id, ukey)};
    guard_wait_t *wait = h2o_mem_alloc(sizeof(*wait));
    guard_link_t *link = h2o_mem_alloc_shared(&req->pool, sizeof(*link), on_link_dispose);
    *wait = (guard_wait_t){.req = req, .loop = loop, .route = route, .call = call, .link = link};
    for (size_t k = 0; k != nparams && k != GW_PATH_PARAMS_MAX; ++k)
        wait->params[wait->nparams++] = params[k];
    link->wait = wait;
    if (lens[0] == 0 || lens[1] == 0 || gw_redis_exists_any(loop->redis, keys, lens, 2, on_revocation, wait) != 0) {
        link->wait = NULL;
        free(wait);
        gw_metrics_revocation_unchecked();
        return admit(loop, req, route, call, params, nparams);
    }
    return 0;
}
