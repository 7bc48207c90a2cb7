/* SPDX-License-Identifier: MIT */
/*
 * fetch.c: one provider API call. A table says, per provider, where its API is, how a call is authorised, which
 * headers name the account, and how its responses speak of rate limits; the discipline around it (quota, 401
 * once, 429 and Retry-After) is the same for all.
 */
#include "fetch.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "xero_oauth.h"

#define RETRY_AFTER_DEFAULT_MS 60000
#define REAUTH_RETRY_MS 60000
#define SHORT_WAIT_MS 2000 /* quota waits up to this long are slept through */
#define MAX_SLEEP_MS 5000  /* ... but not for longer than this in all */
#define GOCARDLESS_VERSION "2015-07-06"
#define MAX_HEADERS 8

typedef struct st_provider_t {
    const char *name, *label, *default_base;
    size_t base_offset;     /* of the SETTLED_<PROVIDER>_API_BASE field in gw_config_t */
    bool refresh_on_401;    /* the credential can be refreshed: a 401 is retried once with a fresh one */
    const char *no_account; /* the quota key of calls that name no account; NULL: an account is required */
    /* Returns a malloc'd credential for call (the Authorization header's token): 0, -1 transient (err says why),
     * or GW_XERO_NEEDS_REAUTH. force asks for a fresh one. */
    int (*credential)(gw_fetch_ctx_t *ctx, const gw_fetch_call_t *call, bool force, char **token, char *err,
                      size_t errlen);
    /* Adds the provider's own headers (account, version) as "Name: value" lines into hdr (each cap bytes). */
    size_t (*headers)(const gw_fetch_call_t *call, char hdr[][128], size_t cap);
} provider_t;

static int xero_credential(gw_fetch_ctx_t *ctx, const gw_fetch_call_t *call, bool force, char **token, char *err,
                           size_t errlen)
{
    return gw_xero_access_token(ctx->token_db != NULL ? ctx->token_db : ctx->db, ctx->cfg, call->token_id, force, token,
                                err, errlen);
}

/* Stripe's and GoCardless's keys are static: the one of the event's webhook source, else the provider's. */
static int static_credential(const gw_fetch_ctx_t *ctx, const gw_fetch_call_t *call, const char *setting, char **token,
                             char *err, size_t errlen)
{
    const char *value = gw_config_api_key(ctx->cfg, call->provider, call->source);
    if (value == NULL) {
        if (call->source != NULL && strcmp(call->source, "default") != 0)
            snprintf(err, errlen, "neither %s__<SOURCE> for source %s nor %s is set", setting, call->source, setting);
        else
            snprintf(err, errlen, "%s is not set", setting);
        return -1;
    }
    *token = gw_xstrdup(value);
    return 0;
}

static int stripe_credential(gw_fetch_ctx_t *ctx, const gw_fetch_call_t *call, bool force, char **token, char *err,
                             size_t errlen)
{
    (void)force;
    return static_credential(ctx, call, "SETTLED_STRIPE_SECRET_KEY", token, err, errlen);
}

static int gocardless_credential(gw_fetch_ctx_t *ctx, const gw_fetch_call_t *call, bool force, char **token, char *err,
                                 size_t errlen)
{
    (void)force;
    return static_credential(ctx, call, "SETTLED_GOCARDLESS_ACCESS_TOKEN", token, err, errlen);
}

static size_t xero_headers(const gw_fetch_call_t *call, char hdr[][128], size_t cap)
{
    size_t n = 0;
    snprintf(hdr[n++], 128, "xero-tenant-id: %s", call->account);
    if (call->if_modified_since != NULL && n != cap)
        snprintf(hdr[n++], 128, "If-Modified-Since: %s", call->if_modified_since);
    return n;
}

static size_t stripe_headers(const gw_fetch_call_t *call, char hdr[][128], size_t cap)
{
    size_t n = 0;
    if (call->account != NULL)
        snprintf(hdr[n++], 128, "Stripe-Account: %s", call->account);
    return n;
}

static size_t gocardless_headers(const gw_fetch_call_t *call, char hdr[][128], size_t cap)
{
    snprintf(hdr[0], 128, "GoCardless-Version: " GOCARDLESS_VERSION);
    return 1;
}

static const provider_t providers[GW_FETCH_NPROVIDERS] = {
    [GW_FETCH_XERO] = {"xero", "Xero", "https://api.xero.com", offsetof(gw_config_t, xero_api_base), true, NULL,
                       xero_credential, xero_headers},
    [GW_FETCH_STRIPE] = {"stripe", "Stripe", "https://api.stripe.com", offsetof(gw_config_t, stripe_api_base), false,
                         "platform", stripe_credential, stripe_headers},
    [GW_FETCH_GOCARDLESS] = {"gocardless", "GoCardless", "https://api.gocardless.com",
                             offsetof(gw_config_t, gocardless_api_base), false, "default", gocardless_credential,
                             gocardless_headers},
};

static int provider_index(const char *name)
{
    for (int i = 0; i != GW_FETCH_NPROVIDERS; ++i)
        if (name != NULL && strcmp(providers[i].name, name) == 0)
            return i;
    return -1;
}

static const char *base_of(const gw_config_t *cfg, const provider_t *p)
{
    const char *v = *(char *const *)((const char *)cfg + p->base_offset);
    return v != NULL && v[0] != '\0' ? v : p->default_base;
}

const char *gw_fetch_api_base(const gw_config_t *cfg, const char *provider)
{
    int i = provider_index(provider);
    return i < 0 ? NULL : base_of(cfg, &providers[i]);
}

int gw_fetch_quotas_create(gw_fetch_ctx_t *ctx, gw_err_t *err)
{
    for (int i = 0; i != GW_FETCH_NPROVIDERS; ++i) {
        if ((ctx->quota[i] = gw_quota_create(ctx->cfg, providers[i].name)) == NULL) {
            gw_fetch_quotas_destroy(ctx);
            return gw_err_set(err, gw_err_config_invalid, 500,
                              "SETTLED_REDIS_URL: must look like redis://[:password@]host[:port][/db]");
        }
    }
    return 0;
}

void gw_fetch_quotas_destroy(gw_fetch_ctx_t *ctx)
{
    for (int i = 0; i != GW_FETCH_NPROVIDERS; ++i) {
        gw_quota_destroy(ctx->quota[i]);
        ctx->quota[i] = NULL;
    }
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

/* Acquires the quota of account, sleeping through short waits. Returns 0 with *slot held, or the status that
 * ends the call (out filled). */
static int acquire(gw_quota_t *quota, const provider_t *p, const char *account, gw_quota_slot_t *slot,
                   gw_fetch_result_t *out)
{
    uint64_t wait = 0, slept = 0;
    int q;
    /* a short wait (a concurrency slot, the window about to roll) is slept through; a long one gives the events
     * back to the queue, due when the quota allows, without counting an attempt */
    while ((q = gw_quota_acquire(quota, account, slot, &wait)) == 1 && wait <= SHORT_WAIT_MS && slept < MAX_SLEEP_MS) {
        uint64_t ms = wait + (uint64_t)(rand() % 50); /* jitter: holders released together don't retry together */
        usleep((useconds_t)(ms * 1000));
        slept += ms;
    }
    if (q == 0)
        return 0;
    if (q < 0) {
        out->status = GW_FETCH_FAILED;
        snprintf(out->error, sizeof(out->error), "not a %s account id: %.64s", p->label, account);
    } else {
        out->status = GW_FETCH_RESCHEDULE;
        out->wait_ms = wait != 0 ? wait : 1000;
        snprintf(out->error, sizeof(out->error), "waiting for the %s quota (%s) of %s", p->label,
                 gw_quota_limit_name(slot->limit), account);
    }
    return -1;
}

/* Sorts a final response into a status; a refusal keeps its body when keep_rejected says so, a 409 when
 * keep_conflict does. */
static void classify(const provider_t *p, const char *account, gw_http_response_t *res, bool keep_rejected,
                     bool keep_conflict, gw_fetch_result_t *out)
{
    out->http_status = res->status;
    if (res->status >= 200 && res->status < 300) {
        out->status = GW_FETCH_OK;
        out->res = *res;
        memset(res, 0, sizeof(*res));
        return;
    }
    if (res->status == 429) {
        out->status = GW_FETCH_RESCHEDULE;
        out->wait_ms = retry_after_ms(res);
        const char *problem = gw_http_response_header(res, "x-rate-limit-problem");
        snprintf(out->error, sizeof(out->error), "%s rate limit (%s) for %s", p->label,
                 problem != NULL ? problem : "unknown", account);
    } else if (res->status == 0) {
        out->status = GW_FETCH_FAILED; /* refused, timed out, TLS or DNS: the provider is unreachable */
        out->outage = true;
        snprintf(out->error, sizeof(out->error), "%s API call failed: %s", p->label,
                 res->error != NULL ? res->error : "unknown error");
    } else {
        /* 5xx, 408 (the request timed out there) and 409 (a conflicting request in flight) may pass on a later
         * try; another 4xx says this call is wrong and will stay wrong */
        bool transient = res->status >= 500 || res->status == 408 || res->status == 409;
        out->status = transient ? GW_FETCH_FAILED : GW_FETCH_REJECTED;
        out->outage = transient;
        snprintf(out->error, sizeof(out->error), "%s API answered %ld", p->label, res->status);
        if ((!transient && keep_rejected) || (res->status == 409 && keep_conflict)) {
            out->res = *res;
            memset(res, 0, sizeof(*res));
            return;
        }
    }
    gw_http_response_free(res);
}

gw_fetch_status_t gw_fetch(gw_fetch_ctx_t *ctx, const gw_fetch_call_t *call, gw_fetch_result_t *out)
{
    memset(out, 0, sizeof(*out));
    int pi = provider_index(call->provider);
    if (pi < 0 || call->path == NULL || (call->account == NULL && providers[pi].no_account == NULL)) {
        out->status = GW_FETCH_REJECTED;
        snprintf(out->error, sizeof(out->error), "not a call settled can make (provider %.32s)",
                 call->provider != NULL ? call->provider : "none");
        return out->status;
    }
    if (ctx->read_only && call->method != NULL && strcmp(call->method, "GET") != 0) {
        out->status = GW_FETCH_REJECTED;
        snprintf(out->error, sizeof(out->error), "a dry run makes no %.8s call (%.200s)", call->method, call->path);
        return out->status;
    }
    const provider_t *p = &providers[pi];
    const char *account = call->account != NULL ? call->account : p->no_account;
    char url[3000];
    snprintf(url, sizeof(url), "%s%s", base_of(ctx->cfg, p), call->path);

    for (int attempt = 0;; ++attempt) {
        char *token = NULL, err[256] = "";
        int rc = p->credential(ctx, call, attempt != 0, &token, err, sizeof(err));
        if (rc == GW_XERO_NEEDS_REAUTH) {
            out->status = GW_FETCH_REAUTH;
            out->wait_ms = REAUTH_RETRY_MS;
            snprintf(out->error, sizeof(out->error), "the %s connection needs re-authorisation: %s", p->label, err);
            return out->status;
        }
        if (rc != 0) {
            out->status = GW_FETCH_FAILED;
            snprintf(out->error, sizeof(out->error), "cannot get a %s access token: %s", p->label, err);
            return out->status;
        }
        gw_quota_slot_t slot;
        if (acquire(ctx->quota[pi], p, account, &slot, out) != 0) {
            gw_free_secret(token);
            return out->status;
        }

        char auth[4200], own[MAX_HEADERS][128], idem[320], accept[128], ctype[128];
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        gw_free_secret(token);
        const char *headers[MAX_HEADERS + 5];
        size_t nh = 0, nown = p->headers(call, own, MAX_HEADERS);
        headers[nh++] = auth;
        snprintf(accept, sizeof(accept), "Accept: %.100s", call->accept != NULL ? call->accept : "application/json");
        headers[nh++] = accept;
        for (size_t i = 0; i != nown; ++i)
            headers[nh++] = own[i];
        if (call->body != NULL) {
            snprintf(ctype, sizeof(ctype), "Content-Type: %.100s",
                     call->content_type != NULL ? call->content_type : "application/json");
            headers[nh++] = ctype;
        }
        if (call->idempotency_key != NULL) {
            snprintf(idem, sizeof(idem), "Idempotency-Key: %.255s", call->idempotency_key);
            headers[nh++] = idem;
        }
        headers[nh] = NULL;
        gw_http_request_t req = {.method = call->method != NULL ? call->method : "GET",
                                 .url = url,
                                 .headers = headers,
                                 .body = call->body,
                                 .body_len = call->body_len};
        gw_http_response_t res;
        gw_http_do(&req, &res);
        explicit_bzero(auth, sizeof(auth));
        if (pi == GW_FETCH_XERO)
            gw_metrics_xero_call(res.status);
        /* Xero names its windows' remaining counts; GoCardless has one (RateLimit-Remaining) */
        const char *remaining = pi == GW_FETCH_XERO ? gw_http_response_header(&res, "x-minlimit-remaining")
                                                    : gw_http_response_header(&res, "ratelimit-remaining");
        gw_quota_observe(ctx->quota[pi], account, (int)res.status, gw_http_response_header(&res, "retry-after"),
                         gw_http_response_header(&res, "x-rate-limit-problem"), remaining,
                         gw_http_response_header(&res, "x-daylimit-remaining"),
                         gw_http_response_header(&res, "x-appminlimit-remaining"));
        gw_quota_release(ctx->quota[pi], &slot);

        if (res.status == 401 && attempt == 0 && p->refresh_on_401) { /* revoked early: refresh once */
            gw_http_response_free(&res);
            continue;
        }
        classify(p, account, &res, call->keep_rejected_body, call->keep_conflict_body, out);
        return out->status;
    }
}
