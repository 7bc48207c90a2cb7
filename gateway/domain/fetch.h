/* SPDX-License-Identifier: MIT */
/*
 * fetch.h: one provider API call under the provider's discipline, the same for every provider: the credential
 * (Xero: the tenant's OAuth access token, refreshed single-flight; Stripe: the secret key; GoCardless: the access
 * token and its GoCardless-Version), the provider's quota for the account called (quota.h: acquired before,
 * released after, shown every response), one refresh and retry on a 401 where the credential can be refreshed,
 * and 429 with Retry-After turned into "wait this long" rather than a failure. Used by the queue processors
 * (refetching the objects events name), by `settled sync`, and by the write-backs of later issues.
 *
 * Blocking: worker threads, the command line and offloaded tasks only.
 */
#ifndef GW_FETCH_H
#define GW_FETCH_H

#include <stdbool.h>
#include <stdint.h>
#include "config.h"
#include "db.h"
#include "err.h"
#include "http_client.h"
#include "quota.h"

/* The providers fetch knows, in the order of gw_fetch_ctx_t.quota. */
enum gw_fetch_provider { GW_FETCH_XERO, GW_FETCH_STRIPE, GW_FETCH_GOCARDLESS, GW_FETCH_NPROVIDERS };

/* What a thread needs to call providers. The quotas are shared by every thread of a process (thread-safe); each
 * thread has its own session. */
typedef struct st_gw_fetch_ctx_t {
    const gw_config_t *cfg;
    gw_dbs_t *db; /* where Xero's token sets are */
    gw_quota_t *quota[GW_FETCH_NPROVIDERS];
    /* A dry run (replay.h): db is inside a transaction that will be rolled back, so the token sets are read and
     * refreshed through token_db (a session of their own, whose refreshes commit: a rotated refresh token must
     * never be lost), and every call other than a GET is refused. NULL and false otherwise. */
    gw_dbs_t *token_db;
    bool read_only;
} gw_fetch_ctx_t;

/* Creates the quotas of every provider into ctx->quota (ctx->cfg must be set). Returns 0, or -1 with err when
 * SETTLED_REDIS_URL cannot be used. */
GW_MUSTCHECK int gw_fetch_quotas_create(gw_fetch_ctx_t *ctx, gw_err_t *err);
void gw_fetch_quotas_destroy(gw_fetch_ctx_t *ctx);

/* One call. Every pointer is only read during gw_fetch. */
typedef struct st_gw_fetch_call_t {
    const char *provider; /* "xero", "stripe" or "gocardless" */
    const char *method;   /* NULL: GET */
    const char *path;     /* appended to the provider's API base, e.g. "/v1/charges/ch_1" */
    /* the account called, which is also what its quota counts by: Xero the tenant id (sent as xero-tenant-id,
     * required); Stripe a connected account (sent as Stripe-Account; NULL: the platform's own); GoCardless the
     * creditor (NULL: the access token's own) */
    const char *account;
    /* Stripe, GoCardless: the webhook source whose events the call serves (its API key:
     * SETTLED_STRIPE_SECRET_KEY__<SOURCE>, else the provider's own); NULL: the default source */
    const char *source;
    int64_t token_id;              /* Xero: the token set serving the tenant */
    const char *if_modified_since; /* Xero: sent as If-Modified-Since; NULL: none */
    const char *body;              /* a JSON body for POST/PUT; NULL: none */
    size_t body_len;
    const char *idempotency_key; /* sent as Idempotency-Key; NULL: none */
    const char *accept;          /* the media type asked for (e.g. "application/pdf"); NULL: application/json */
    const char *content_type;    /* the body's media type (Stripe: application/x-www-form-urlencoded); NULL: JSON */
    /* true: a GW_FETCH_REJECTED result keeps the provider's answer in out->res (the caller frees it), so that
     * the reason of a refusal (Xero's ValidationErrors) can be read */
    bool keep_rejected_body;
    /* true: a 409 (GW_FETCH_FAILED) keeps the provider's answer in out->res (the caller frees it), so that
     * GoCardless's idempotent_creation_conflict can name the payment an earlier call with the key created */
    bool keep_conflict_body;
} gw_fetch_call_t;

typedef enum {
    GW_FETCH_OK,         /* out->res holds the 2xx response */
    GW_FETCH_RESCHEDULE, /* a quota or a 429 says wait wait_ms: not a failure of the events */
    GW_FETCH_FAILED,     /* a transient failure (no answer, 5xx, 408, 409, no token): retry later (error says why) */
    GW_FETCH_REJECTED,   /* the provider refused the call (another 4xx): retrying the same call will not help */
    GW_FETCH_REAUTH,     /* the connection needs re-authorisation by an admin (Xero) */
} gw_fetch_status_t;

typedef struct st_gw_fetch_result_t {
    gw_fetch_status_t status;
    uint64_t wait_ms; /* RESCHEDULE, REAUTH: when to try again */
    long http_status; /* the provider's status, 0 when no response arrived */
    bool outage;      /* FAILED by the provider itself (no answer, 5xx, 408, 409): counted by its circuit */
    char error[300];  /* one line, no secret */
    gw_http_response_t res;
} gw_fetch_result_t;

/* Makes call. On GW_FETCH_OK (and on GW_FETCH_REJECTED with call->keep_rejected_body, on a 409 with
 * call->keep_conflict_body) the caller frees out->res
 * with gw_http_response_free; otherwise out->res is empty. Returns out->status. */
gw_fetch_status_t gw_fetch(gw_fetch_ctx_t *ctx, const gw_fetch_call_t *call, gw_fetch_result_t *out);

/* The API base in use for provider: SETTLED_<PROVIDER>_API_BASE or the provider's own host; NULL if unknown. */
const char *gw_fetch_api_base(const gw_config_t *cfg, const char *provider);

#endif
