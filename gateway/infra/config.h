/* SPDX-License-Identifier: MIT */
/*
 * config.h: the one declarative settings table of settled. Every setting comes from the environment
 * (SETTLED_*) or an optional config file of KEY=value lines (the environment wins), is validated
 * once at start, and an error names the key. Secrets are never echoed.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "connector.h"
#include "log.h"
#include "retry_schedule.h"

/* One webhook source: a provider account with its own secrets, served at /webhooks/<provider>[/<name>]. */
typedef struct st_gw_source_t {
    const cn_connector_t *connector;
    char *name;              /* "default" for the route without a suffix */
    char *organisation;      /* slug of the organisation the source's events belong to */
    int64_t organisation_id; /* filled in by serve at start (0 until then) */
    cn_secrets_t secrets;    /* owned by the config */
    /* SETTLED_STRIPE_SECRET_KEY__<SOURCE> / SETTLED_GOCARDLESS_ACCESS_TOKEN__<SOURCE>: the API key of this source's
     * account (a secret: never print it); NULL: the provider's key without a suffix. gw_config_api_key chooses. */
    char *api_key;
} gw_source_t;

typedef struct st_gw_config_t {
    char *listen_host;             /* SETTLED_LISTEN host part */
    uint16_t listen_port;          /* SETTLED_LISTEN port part */
    int threads;                   /* SETTLED_THREADS, resolved: 0 becomes the number of cores */
    char *database_url;            /* SETTLED_DATABASE_URL (may contain a password: never print it) */
    int db_connections;            /* SETTLED_DB_CONNECTIONS per event loop */
    int db_max_batch;              /* SETTLED_DB_MAX_BATCH requests per commit */
    int db_commit_timeout_ms;      /* SETTLED_DB_COMMIT_TIMEOUT_MS */
    int db_queue_limit;            /* SETTLED_DB_QUEUE_LIMIT requests waiting per loop */
    char *redis_url;               /* SETTLED_REDIS_URL, NULL when unset */
    size_t body_limit;             /* SETTLED_BODY_LIMIT bytes */
    int stripe_tolerance;          /* SETTLED_STRIPE_TOLERANCE seconds, 0 disables */
    int retry_after;               /* SETTLED_RETRY_AFTER seconds in 503 replies */
    int shutdown_timeout_ms;       /* SETTLED_SHUTDOWN_TIMEOUT_MS */
    enum gw_log_level log_level;   /* SETTLED_LOG_LEVEL */
    bool access_log;               /* SETTLED_ACCESS_LOG */
    char *ops_listen_host;         /* SETTLED_OPS_LISTEN host part, NULL when off (settled work's ops listener) */
    uint16_t ops_listen_port;      /* SETTLED_OPS_LISTEN port part */
    char *instance_id;             /* SETTLED_INSTANCE_ID, NULL when unset (then host:pid) */
    char *reuseport_group;         /* SETTLED_REUSEPORT_GROUP, NULL when unset */
    char *config_path;             /* the config file that was read (path argument or SETTLED_CONFIG), NULL if none */
    char *organisation;            /* SETTLED_ORGANISATION: slug of the organisation the default sources belong to */
    char *stripe_api_base;         /* SETTLED_STRIPE_API_BASE, NULL when unset */
    char *xero_api_base;           /* SETTLED_XERO_API_BASE, NULL when unset */
    char *xero_identity_base;      /* SETTLED_XERO_IDENTITY_BASE, NULL when unset */
    char *gocardless_api_base;     /* SETTLED_GOCARDLESS_API_BASE, NULL when unset */
    char *stripe_secret_key;       /* SETTLED_STRIPE_SECRET_KEY, NULL when unset (a secret: never print it) */
    char *gocardless_access_token; /* SETTLED_GOCARDLESS_ACCESS_TOKEN, NULL when unset (a secret: never print it) */
    char *jwt_secret;              /* SETTLED_JWT_SECRET, NULL when unset (a secret: never print it) */
    char *jwt_alg;                 /* SETTLED_JWT_ALG: "HS256", "RS256" or "ES256" */
    char *jwt_private_key_file;    /* SETTLED_JWT_PRIVATE_KEY_FILE, NULL when unset */
    char *jwt_public_key_file;     /* SETTLED_JWT_PUBLIC_KEY_FILE, NULL when unset */
    char *jwt_issuer;              /* SETTLED_JWT_ISSUER */
    char *jwt_audience;            /* SETTLED_JWT_AUDIENCE */
    int access_token_ttl;          /* SETTLED_ACCESS_TOKEN_TTL, seconds */
    int refresh_token_ttl;         /* SETTLED_REFRESH_TOKEN_TTL, seconds */
    char *secret_key;              /* SETTLED_SECRET_KEY, NULL when unset (a secret: never print it) */
    int workers;                   /* SETTLED_WORKERS */
    int worker_batch;              /* SETTLED_WORKER_BATCH */
    int worker_lease_ms;           /* SETTLED_WORKER_LEASE_MS */
    int worker_poll_ms;            /* SETTLED_WORKER_POLL_MS */
    int worker_max_attempts;       /* attempts in all: retry_schedule.n + 1 (SETTLED_WORKER_MAX_ATTEMPTS) */
    int worker_backoff_ms;         /* SETTLED_WORKER_BACKOFF_MS */
    int worker_backoff_max_ms;     /* SETTLED_WORKER_BACKOFF_MAX_MS */
    gw_retry_schedule_t retry_schedule; /* SETTLED_RETRY_SCHEDULE (or translated from the deprecated backoff) */
    int circuit_failures;               /* SETTLED_CIRCUIT_FAILURES */
    int circuit_cooldown_ms;            /* SETTLED_CIRCUIT_COOLDOWN_MS */
    int circuit_cooldown_max_ms;        /* SETTLED_CIRCUIT_COOLDOWN_MAX_MS */
    char *alert_webhook_url;            /* SETTLED_ALERT_WEBHOOK_URL, NULL when unset */
    char *alert_webhook_secret;         /* SETTLED_ALERT_WEBHOOK_SECRET, NULL when unset (a secret: never print it) */
    int xero_coalesce_ms;               /* SETTLED_XERO_COALESCE_MS */
    int payments_coalesce_ms;           /* SETTLED_PAYMENTS_COALESCE_MS */
    int payments_sync_interval;         /* SETTLED_PAYMENTS_SYNC_INTERVAL, seconds; 0: off */
    char *xero_client_id;               /* SETTLED_XERO_CLIENT_ID */
    char *xero_client_secret;           /* SETTLED_XERO_CLIENT_SECRET */
    char *xero_redirect_uri;            /* SETTLED_XERO_REDIRECT_URI */
    char *xero_login_base;              /* SETTLED_XERO_LOGIN_BASE */
    char *xero_scopes;                  /* SETTLED_XERO_SCOPES */
    int xero_limit_concurrent;          /* SETTLED_XERO_LIMIT_CONCURRENT */
    int xero_limit_minute;              /* SETTLED_XERO_LIMIT_MINUTE */
    int xero_limit_day;                 /* SETTLED_XERO_LIMIT_DAY */
    int xero_limit_app_minute;          /* SETTLED_XERO_LIMIT_APP_MINUTE */
    int stripe_limit_concurrent;        /* SETTLED_STRIPE_LIMIT_CONCURRENT */
    int stripe_limit_second;            /* SETTLED_STRIPE_LIMIT_SECOND */
    int gocardless_limit_concurrent;    /* SETTLED_GOCARDLESS_LIMIT_CONCURRENT */
    int gocardless_limit_minute;        /* SETTLED_GOCARDLESS_LIMIT_MINUTE */
    int quota_fallback_concurrent;      /* SETTLED_QUOTA_FALLBACK_CONCURRENT */
    int quota_fallback_minute;          /* SETTLED_QUOTA_FALLBACK_MINUTE */
    int instances;                      /* SETTLED_INSTANCES: how many instances share the providers' limits */
    int http_timeout_ms;                /* SETTLED_HTTP_TIMEOUT_MS */
    int http_connect_timeout_ms;        /* SETTLED_HTTP_CONNECT_TIMEOUT_MS */
    int http_max_host_connections;      /* SETTLED_HTTP_MAX_HOST_CONNECTIONS */
    bool match_create_customers;        /* SETTLED_MATCH_CREATE_CUSTOMERS */
    int xero_sync_interval;             /* SETTLED_XERO_SYNC_INTERVAL */
    int xero_retired_grace_hours;       /* SETTLED_XERO_RETIRED_GRACE_HOURS */
    char *xero_payment_account;         /* SETTLED_XERO_PAYMENT_ACCOUNT, NULL when unset */
    int retention_days;                 /* SETTLED_RETENTION_DAYS: 0 keeps every event */
    /* the portal API's guard */
    size_t api_body_limit; /* SETTLED_API_BODY_LIMIT bytes */
    char *cors_origins;    /* SETTLED_CORS_ORIGINS, NULL when unset (CORS off) */
    /* the portal's sessions (gateway/api/session.c) */
    bool refresh_cookie; /* SETTLED_REFRESH_COOKIE: the refresh token in an HttpOnly cookie, not the body */
    /* the portal's payment methods */
    char *portal_url;             /* SETTLED_PORTAL_URL, NULL when unset */
    char *stripe_publishable_key; /* SETTLED_STRIPE_PUBLISHABLE_KEY, NULL when unset */
    /* e-mail (gateway/domain/mailer.c) */
    char *smtp_url;      /* SETTLED_SMTP_URL, NULL when unset (no e-mail is sent) */
    char *smtp_from;     /* SETTLED_SMTP_FROM, NULL when unset */
    char *smtp_user;     /* SETTLED_SMTP_USER, NULL when unset */
    char *smtp_password; /* SETTLED_SMTP_PASSWORD (secret), NULL when unset */
    char *smtp_starttls; /* SETTLED_SMTP_STARTTLS: "required" or "off" */
    /* reminders, dunning, receipts and the unsubscribe link (gateway/domain/dunning.c) */
    int dunning_interval;   /* SETTLED_DUNNING_INTERVAL seconds between evaluations; 0: none */
    int dunning_grace_days; /* SETTLED_DUNNING_GRACE_DAYS: how late a step may still be sent */
    char *public_url;       /* SETTLED_PUBLIC_URL, NULL when unset (the unsubscribe link's base) */
    /* automatic collection (gateway/domain/collector.c) */
    int collect_interval;          /* SETTLED_COLLECT_INTERVAL seconds; 0: no automatic planning */
    char *collect_card_retry_days; /* SETTLED_COLLECT_CARD_RETRY_DAYS ("3,5,7"), NULL when empty (no retry) */
    int collect_dd_lead_days;      /* SETTLED_COLLECT_DIRECT_DEBIT_LEAD_DAYS */
    bool collect_dd_retry;         /* SETTLED_COLLECT_DIRECT_DEBIT_RETRY: retry_if_possible */
    int collect_catch_up_days;     /* SETTLED_COLLECT_CATCH_UP_DAYS */
    gw_source_t *sources;
    size_t nsources;
} gw_config_t;

/*
 * Loads the configuration from the file named by path (may be NULL; otherwise SETTLED_CONFIG names
 * it) and from envp (an environ-style NULL-terminated array; the environment overrides the file).
 * Unknown SETTLED_* keys are errors. On failure returns -1 and writes one line naming the key into
 * err (never the value of a secret). On success returns 0 and cfg owns its memory.
 */
__attribute__((warn_unused_result)) int gw_config_load(gw_config_t *cfg, const char *path, char *const *envp, char *err,
                                                       size_t errlen);
/* Frees everything gw_config_load allocated. */
void gw_config_free(gw_config_t *cfg);
/* Finds the source of provider (connector name) called name (len bytes; NULL means "default"); NULL if none. */
gw_source_t *gw_config_find_source(const gw_config_t *cfg, const char *provider, const char *name, size_t len);
/* Writes every setting and its effective value, secrets redacted, one KEY=value line each. */
void gw_config_dump(const gw_config_t *cfg, FILE *out);
/* The API key that calls provider ("stripe" or "gocardless") for the events of its source called source (NULL or
 * "default": the default source): the source's own key, else the provider's key without a suffix; NULL when
 * neither is set. */
const char *gw_config_api_key(const gw_config_t *cfg, const char *provider, const char *source);

/* The base URL of the client portal, without a trailing '/': SETTLED_PORTAL_URL, else http://SETTLED_LISTEN (where
 * settled serves the portal itself). Links settled hands out (invitations, resets, payment links) start with it. */
void gw_config_portal_base(const gw_config_t *cfg, char *out, size_t len);

/* Writes the names of every setting of the table (per-source patterns with their __<SOURCE> suffix). */
void gw_config_list_keys(FILE *out);

#endif
