/* SPDX-License-Identifier: MIT */
/*
 * config.c: the one declarative table of settled's settings and the code that reads, checks and prints
 * them, so that every setting has exactly one name, type, default, bound and description, and every
 * mistake is reported once, at start, naming the key and never the value of a secret.
 */
#include "config.h"
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "crypto.h"
#include "mem.h"
#include "redis.h"
#include "retry_schedule.h"

enum setting_type {
    T_PATH,            /* SETTLED_CONFIG: the file itself; read from the environment only */
    T_STRING,          /* free text without control characters */
    T_CONNINFO,        /* a libpq connection string; any password in it is redacted when printed */
    T_URL,             /* an http:// or https:// base URL; a password in it is redacted when printed */
    T_REDIS_URL,       /* a redis:// URL (serve parses it); its password is redacted when printed */
    T_INT,             /* a decimal integer within [min, max] */
    T_SIZE,            /* a byte count within [min, max], optionally with a k/K or m/M suffix (KiB, MiB) */
    T_BOOL,            /* true/false, 1/0, yes/no, on/off */
    T_LOG_LEVEL,       /* debug, info, warn or error */
    T_LISTEN,          /* host:port, IPv6 hosts in brackets */
    T_OPS_LISTEN,      /* as T_LISTEN, or "off"; into ops_listen_host (NULL when off) and ops_listen_port */
    T_SLUG,            /* ^[a-z0-9][a-z0-9_-]{0,62}$ */
    T_SECRET,          /* one secret of at most GW_SECRET_MAX bytes */
    T_WEBHOOK_KEY,     /* one webhook signing key: the default source of a provider */
    T_WEBHOOK_SECRETS, /* comma-separated webhook secrets: the default source of a provider */
    T_SCHEDULE,        /* a retry schedule: comma-separated waits (retry_schedule.h) */
};

#define F_SECRET 1u     /* the value is never printed or put into an error message */
#define F_PER_SOURCE 2u /* also accepted as NAME__<SOURCE> for the webhook source <source> */
#define F_UNUSED 4u     /* declared, but nothing in this version uses it yet: setting it is an error */

#define GW_SECRET_MAX 1024 /* bytes per secret */
#define GW_KEY_SHOWN 100   /* bytes of an offending key that an error message shows */

typedef struct st_setting_t {
    const char *name;
    enum setting_type type;
    const char *def;    /* the default, as text that is parsed like a value; "" means unset */
    long long min, max; /* bounds of T_INT and T_SIZE */
    unsigned flags;     /* F_* */
    size_t offset;      /* where the value goes in gw_config_t; NO_FIELD for webhook secrets (they make sources) */
    const cn_connector_t *connector; /* T_WEBHOOK_*: the provider whose sources the setting defines */
    const char *doc; /* what it does in one line; docs/configuration.md says more (a test checks it is there) */
    /* optional: a further check of a value that parsed, returning NULL when it is good, else why not (a sentence
     * fragment that never quotes the value); see the checks under "Value checks" */
    const char *(*check)(const char *value, char *why, size_t whylen);
} setting_t;

static const char *check_secret_key(const char *value, char *why, size_t whylen);
static const char *check_xero_scopes(const char *value, char *why, size_t whylen);
static const char *check_name(const char *value, char *why, size_t whylen);
static const char *check_account_code(const char *value, char *why, size_t whylen);
static const char *check_cors_origins(const char *value, char *why, size_t whylen);
static const char *check_jwt_secret(const char *value, char *why, size_t whylen);
static const char *check_jwt_alg(const char *value, char *why, size_t whylen);
static const char *check_portal_url(const char *value, char *why, size_t whylen);
static const char *check_publishable_key(const char *value, char *why, size_t whylen);
static const char *check_smtp_url(const char *value, char *why, size_t whylen);
static const char *check_smtp_from(const char *value, char *why, size_t whylen);
static const char *check_smtp_starttls(const char *value, char *why, size_t whylen);
static const char *check_collect_retry_days(const char *value, char *why, size_t whylen);

#define FIELD(f) offsetof(gw_config_t, f)
#define NO_FIELD SIZE_MAX

/* The settings, in the order gw_config_dump and gw_config_list_keys print them. */
static const setting_t settings[] = {
    {"SETTLED_CONFIG", T_PATH, "", 0, 0, 0, FIELD(config_path), NULL,
     "Path of an optional file of KEY=value lines; the environment overrides it."},
    {"SETTLED_LISTEN", T_LISTEN, "127.0.0.1:8080", 0, 0, 0, FIELD(listen_host), NULL,
     "Address to serve HTTP on, host:port (IPv6 in brackets)."},
    {"SETTLED_THREADS", T_INT, "0", 0, 64, 0, FIELD(threads), NULL,
     "Event loops, one thread each; 0 means one per online core."},
    {"SETTLED_DATABASE_URL", T_CONNINFO, "", 0, 0, 0, FIELD(database_url), NULL,
     "PostgreSQL connection string (URI or key=value); required by serve, work and migrate."},
    {"SETTLED_DB_CONNECTIONS", T_INT, "2", 1, 16, 0, FIELD(db_connections), NULL,
     "PostgreSQL connections per event loop."},
    {"SETTLED_DB_MAX_BATCH", T_INT, "64", 1, 1024, 0, FIELD(db_max_batch), NULL,
     "Most webhook deliveries committed together in one transaction."},
    {"SETTLED_DB_COMMIT_TIMEOUT_MS", T_INT, "4000", 100, 60000, 0, FIELD(db_commit_timeout_ms), NULL,
     "How long a delivery waits for its commit before it is answered 503."},
    {"SETTLED_DB_QUEUE_LIMIT", T_INT, "4096", 1, 1000000, 0, FIELD(db_queue_limit), NULL,
     "Deliveries waiting for a connection per event loop before new ones are answered 503."},
    {"SETTLED_REDIS_URL", T_REDIS_URL, "", 0, 0, 0, FIELD(redis_url), NULL,
     "Redis for shared quotas, throttles and revocations; empty means local fallbacks."},
    {"SETTLED_BODY_LIMIT", T_SIZE, "1048576", 1024, 67108864, 0, FIELD(body_limit), NULL,
     "Largest accepted request body; larger ones get 413."},
    {"SETTLED_STRIPE_TOLERANCE", T_INT, "300", 0, 86400, 0, FIELD(stripe_tolerance), NULL,
     "Largest age in seconds of a Stripe-Signature timestamp; 0 disables the check."},
    {"SETTLED_RETRY_AFTER", T_INT, "5", 1, 3600, 0, FIELD(retry_after), NULL,
     "Seconds sent in Retry-After with a 503 while the database is unavailable."},
    {"SETTLED_SHUTDOWN_TIMEOUT_MS", T_INT, "10000", 0, 600000, 0, FIELD(shutdown_timeout_ms), NULL,
     "How long a stopping server waits for requests in flight."},
    {"SETTLED_LOG_LEVEL", T_LOG_LEVEL, "info", 0, 0, 0, FIELD(log_level), NULL, "Least severe level that is logged."},
    {"SETTLED_ACCESS_LOG", T_BOOL, "true", 0, 0, 0, FIELD(access_log), NULL, "Whether to log one line per request."},
    {"SETTLED_OPS_LISTEN", T_OPS_LISTEN, "127.0.0.1:9464", 0, 0, 0, FIELD(ops_listen_host), NULL,
     "Address settled work serves /healthz, /readyz and /metrics on, host:port; off for none."},
    {"SETTLED_INSTANCE_ID", T_STRING, "", 0, 0, 0, FIELD(instance_id), NULL,
     "This process's name in every log line and metric; default host:pid.", check_name},
    {"SETTLED_REUSEPORT_GROUP", T_STRING, "", 0, 0, 0, FIELD(reuseport_group), NULL,
     "Lets serve processes of the same group share SETTLED_LISTEN (a handover); unset, a second one refuses.",
     check_name},
    {"SETTLED_ORGANISATION", T_SLUG, "default", 0, 0, F_PER_SOURCE, FIELD(organisation), NULL,
     "Slug of the organisation a webhook source's events belong to."},
    {"SETTLED_STRIPE_WEBHOOK_SECRETS", T_WEBHOOK_SECRETS, "", 0, 0, F_SECRET | F_PER_SOURCE, NO_FIELD,
     &cn_stripe_connector, "Stripe endpoint signing secrets (whsec_...), comma-separated."},
    {"SETTLED_XERO_WEBHOOK_KEY", T_WEBHOOK_KEY, "", 0, 0, F_SECRET | F_PER_SOURCE, NO_FIELD, &cn_xero_connector,
     "Xero webhook signing key."},
    {"SETTLED_GOCARDLESS_WEBHOOK_SECRETS", T_WEBHOOK_SECRETS, "", 0, 0, F_SECRET | F_PER_SOURCE, NO_FIELD,
     &cn_gocardless_connector, "GoCardless webhook endpoint secrets, comma-separated."},
    {"SETTLED_STRIPE_API_BASE", T_URL, "", 0, 0, 0, FIELD(stripe_api_base), NULL,
     "Base URL of the Stripe API that workers call; empty means https://api.stripe.com."},
    {"SETTLED_XERO_API_BASE", T_URL, "", 0, 0, 0, FIELD(xero_api_base), NULL,
     "Base URL of the Xero API that workers call; empty means https://api.xero.com."},
    {"SETTLED_XERO_IDENTITY_BASE", T_URL, "", 0, 0, 0, FIELD(xero_identity_base), NULL,
     "Base URL of Xero's OAuth 2.0 identity service; empty means https://identity.xero.com."},
    {"SETTLED_GOCARDLESS_API_BASE", T_URL, "", 0, 0, 0, FIELD(gocardless_api_base), NULL,
     "Base URL of the GoCardless API that workers call; empty means https://api.gocardless.com."},
    {"SETTLED_STRIPE_SECRET_KEY", T_SECRET, "", 0, 0, F_SECRET | F_PER_SOURCE, FIELD(stripe_secret_key), NULL,
     "Stripe secret or restricted API key (sk_... / rk_...) that workers call the Stripe API with; __<SOURCE>: the "
     "key of that Stripe source's account."},
    {"SETTLED_GOCARDLESS_ACCESS_TOKEN", T_SECRET, "", 0, 0, F_SECRET | F_PER_SOURCE, FIELD(gocardless_access_token),
     NULL,
     "GoCardless access token that workers call the GoCardless API with; __<SOURCE>: the token of that GoCardless "
     "source's account."},
    {"SETTLED_JWT_SECRET", T_SECRET, "", 0, 0, F_SECRET, FIELD(jwt_secret), NULL,
     "Key (at least 32 bytes) that signs and checks the portal's access tokens with HS256.", check_jwt_secret},
    {"SETTLED_JWT_ALG", T_STRING, "HS256", 0, 0, 0, FIELD(jwt_alg), NULL,
     "Algorithm of the portal's access tokens: HS256 (SETTLED_JWT_SECRET), RS256 or ES256 (a key file).",
     check_jwt_alg},
    {"SETTLED_JWT_PRIVATE_KEY_FILE", T_STRING, "", 0, 0, 0, FIELD(jwt_private_key_file), NULL,
     "PEM file of the RS256 or ES256 private key that signs access tokens (its public half checks them)."},
    {"SETTLED_JWT_PUBLIC_KEY_FILE", T_STRING, "", 0, 0, 0, FIELD(jwt_public_key_file), NULL,
     "PEM file of the public key that checks access tokens; unset, it is derived from the private key."},
    {"SETTLED_JWT_ISSUER", T_STRING, "settled", 0, 0, 0, FIELD(jwt_issuer), NULL,
     "The iss claim access tokens are issued with and must carry."},
    {"SETTLED_JWT_AUDIENCE", T_STRING, "settled-portal", 0, 0, 0, FIELD(jwt_audience), NULL,
     "The aud claim access tokens are issued with and must carry."},
    {"SETTLED_ACCESS_TOKEN_TTL", T_INT, "900", 60, 86400, 0, FIELD(access_token_ttl), NULL,
     "Seconds an access token is valid."},
    {"SETTLED_REFRESH_TOKEN_TTL", T_INT, "2592000", 3600, 31536000, 0, FIELD(refresh_token_ttl), NULL,
     "Seconds a refresh token is valid (each use rotates it and starts a new period)."},
    {"SETTLED_SECRET_KEY", T_SECRET, "", 0, 0, F_SECRET, FIELD(secret_key), NULL,
     "Key that encrypts the provider OAuth tokens stored in PostgreSQL.", check_secret_key},
    {"SETTLED_WORKERS", T_INT, "2", 0, 64, 0, FIELD(workers), NULL,
     "Queue worker threads inside serve; 0 leaves processing to `settled work`."},
    {"SETTLED_WORKER_BATCH", T_INT, "50", 1, 1000, 0, FIELD(worker_batch), NULL,
     "Most inbox rows one worker claims at once."},
    {"SETTLED_WORKER_LEASE_MS", T_INT, "60000", 1000, 3600000, 0, FIELD(worker_lease_ms), NULL,
     "How long a claimed row stays with its worker before another may take it."},
    {"SETTLED_WORKER_POLL_MS", T_INT, "5000", 100, 600000, 0, FIELD(worker_poll_ms), NULL,
     "Poll interval of an idle worker, the backstop to LISTEN/NOTIFY."},
    {"SETTLED_RETRY_SCHEDULE", T_SCHEDULE, "0s,10s,1m,5m,30m,2h,5h,10h,10h", 0, 0, 0, FIELD(retry_schedule), NULL,
     "Waits between the attempts of an event that failed transiently; dead after the last."},
    {"SETTLED_WORKER_MAX_ATTEMPTS", T_INT, "10", 1, 100, 0, FIELD(worker_max_attempts), NULL,
     "Deprecated (use SETTLED_RETRY_SCHEDULE): attempts before a failing event is dead."},
    {"SETTLED_WORKER_BACKOFF_MS", T_INT, "1000", 10, 3600000, 0, FIELD(worker_backoff_ms), NULL,
     "Deprecated (use SETTLED_RETRY_SCHEDULE): first retry delay, doubled per attempt."},
    {"SETTLED_WORKER_BACKOFF_MAX_MS", T_INT, "3600000", 10, 86400000, 0, FIELD(worker_backoff_max_ms), NULL,
     "Deprecated (use SETTLED_RETRY_SCHEDULE): longest retry delay."},
    {"SETTLED_CIRCUIT_FAILURES", T_INT, "5", 1, 1000, 0, FIELD(circuit_failures), NULL,
     "Consecutive transient failures of a provider account that open its circuit."},
    {"SETTLED_CIRCUIT_COOLDOWN_MS", T_INT, "30000", 100, 3600000, 0, FIELD(circuit_cooldown_ms), NULL,
     "How long an open circuit waits before its first probe."},
    {"SETTLED_CIRCUIT_COOLDOWN_MAX_MS", T_INT, "600000", 100, 86400000, 0, FIELD(circuit_cooldown_max_ms), NULL,
     "Longest wait between two probes of an open circuit (the wait doubles per failed probe)."},
    {"SETTLED_ALERT_WEBHOOK_URL", T_URL, "", 0, 0, 0, FIELD(alert_webhook_url), NULL,
     "Where operational alerts (dead events, re-authorisation) are posted; empty: none."},
    {"SETTLED_ALERT_WEBHOOK_SECRET", T_SECRET, "", 0, 0, F_SECRET, FIELD(alert_webhook_secret), NULL,
     "Key that signs the alerts (Stripe-Signature scheme); required with SETTLED_ALERT_WEBHOOK_URL."},
    {"SETTLED_XERO_COALESCE_MS", T_INT, "500", 0, 60000, 0, FIELD(xero_coalesce_ms), NULL,
     "How long a Xero event waits so a burst for one resource becomes one fetch."},
    {"SETTLED_PAYMENTS_COALESCE_MS", T_INT, "500", 0, 60000, 0, FIELD(payments_coalesce_ms), NULL,
     "How long a Stripe or GoCardless event waits so a burst for one payment becomes one fetch."},
    {"SETTLED_PAYMENTS_SYNC_INTERVAL", T_INT, "3600", 0, 604800, 0, FIELD(payments_sync_interval), NULL,
     "Seconds between scheduled drift repairs of Stripe and GoCardless payments; 0: none."},
    {"SETTLED_XERO_CLIENT_ID", T_STRING, "", 0, 0, 0, FIELD(xero_client_id), NULL,
     "Client id of the Xero app (OAuth 2.0)."},
    {"SETTLED_XERO_CLIENT_SECRET", T_SECRET, "", 0, 0, F_SECRET, FIELD(xero_client_secret), NULL,
     "Client secret of the Xero app."},
    {"SETTLED_XERO_REDIRECT_URI", T_URL, "", 0, 0, 0, FIELD(xero_redirect_uri), NULL,
     "Where Xero sends the admin back after authorising: https://<host>/v1/xero/callback."},
    {"SETTLED_XERO_LOGIN_BASE", T_URL, "", 0, 0, 0, FIELD(xero_login_base), NULL,
     "Base URL of Xero's login (authorize) service; empty means https://login.xero.com."},
    {"SETTLED_XERO_SCOPES", T_STRING, "offline_access accounting.transactions accounting.contacts", 0, 0, 0,
     FIELD(xero_scopes), NULL, "OAuth scopes requested when connecting Xero.", check_xero_scopes},
    {"SETTLED_XERO_LIMIT_CONCURRENT", T_INT, "5", 1, 100, 0, FIELD(xero_limit_concurrent), NULL,
     "Xero calls in progress at once per tenant, across all instances."},
    {"SETTLED_XERO_LIMIT_MINUTE", T_INT, "60", 1, 100000, 0, FIELD(xero_limit_minute), NULL,
     "Xero calls per tenant per minute, across all instances."},
    {"SETTLED_XERO_LIMIT_DAY", T_INT, "5000", 1, 10000000, 0, FIELD(xero_limit_day), NULL,
     "Xero calls per tenant per day, across all instances."},
    {"SETTLED_XERO_LIMIT_APP_MINUTE", T_INT, "10000", 1, 10000000, 0, FIELD(xero_limit_app_minute), NULL,
     "Xero calls per minute for the whole app."},
    {"SETTLED_STRIPE_LIMIT_CONCURRENT", T_INT, "10", 1, 1000, 0, FIELD(stripe_limit_concurrent), NULL,
     "Stripe calls in progress at once per account, across all instances."},
    {"SETTLED_STRIPE_LIMIT_SECOND", T_INT, "25", 1, 10000, 0, FIELD(stripe_limit_second), NULL,
     "Stripe calls per account per second, across all instances."},
    {"SETTLED_GOCARDLESS_LIMIT_CONCURRENT", T_INT, "10", 1, 1000, 0, FIELD(gocardless_limit_concurrent), NULL,
     "GoCardless calls in progress at once per creditor, across all instances."},
    {"SETTLED_GOCARDLESS_LIMIT_MINUTE", T_INT, "1000", 1, 1000000, 0, FIELD(gocardless_limit_minute), NULL,
     "GoCardless calls per creditor per minute, across all instances."},
    {"SETTLED_QUOTA_FALLBACK_CONCURRENT", T_INT, "1", 1, 100, 0, FIELD(quota_fallback_concurrent), NULL,
     "Per-process concurrent calls per tenant while Redis is down."},
    {"SETTLED_QUOTA_FALLBACK_MINUTE", T_INT, "20", 1, 100000, 0, FIELD(quota_fallback_minute), NULL,
     "Per-process calls per tenant per minute while Redis is down."},
    {"SETTLED_INSTANCES", T_INT, "1", 1, 1000, 0, FIELD(instances), NULL,
     "Instances sharing the providers' limits; while Redis is down each keeps to its share of every limit."},
    {"SETTLED_HTTP_TIMEOUT_MS", T_INT, "30000", 100, 600000, 0, FIELD(http_timeout_ms), NULL,
     "Total timeout of an outbound API call."},
    {"SETTLED_HTTP_CONNECT_TIMEOUT_MS", T_INT, "5000", 100, 60000, 0, FIELD(http_connect_timeout_ms), NULL,
     "Connect timeout of an outbound API call."},
    {"SETTLED_HTTP_MAX_HOST_CONNECTIONS", T_INT, "16", 1, 1000, 0, FIELD(http_max_host_connections), NULL,
     "Open connections per API host."},
    {"SETTLED_MATCH_CREATE_CUSTOMERS", T_BOOL, "false", 0, 0, 0, FIELD(match_create_customers), NULL,
     "Create a portal customer for a contact that matches none, instead of queueing it."},
    {"SETTLED_XERO_SYNC_INTERVAL", T_INT, "3600", 0, 604800, 0, FIELD(xero_sync_interval), NULL,
     "Seconds between drift-repair sweeps; 0 disables them."},
    {"SETTLED_XERO_RETIRED_GRACE_HOURS", T_INT, "168", 0, 87600, 0, FIELD(xero_retired_grace_hours), NULL,
     "Hours a replaced (retired) Xero token set is kept before it is deleted."},
    {"SETTLED_XERO_PAYMENT_ACCOUNT", T_STRING, "", 0, 0, 0, FIELD(xero_payment_account), NULL,
     "Code of the Xero account payments are written back into, unless the organisation names its own.",
     check_account_code},
    {"SETTLED_RETENTION_DAYS", T_INT, "0", 0, 36500, 0, FIELD(retention_days), NULL,
     "Days after which done and ignored events are deleted by the workers' pruning job; 0 keeps every event."},
    /* the portal API's guard (gateway/guard.c, docs/api.md) */
    {"SETTLED_API_BODY_LIMIT", T_SIZE, "65536", 1024, 16777216, 0, FIELD(api_body_limit), NULL,
     "Largest JSON body a /v1 API route accepts; larger ones get 413."},
    {"SETTLED_CORS_ORIGINS", T_STRING, "", 0, 0, 0, FIELD(cors_origins), NULL,
     "Origins (scheme://host[:port], comma-separated, exact) that may call /v1 from a browser; empty: CORS off.",
     check_cors_origins},
    /* the portal's sessions (gateway/api/session.c, docs/security.md) */
    {"SETTLED_REFRESH_COOKIE", T_BOOL, "false", 0, 0, 0, FIELD(refresh_cookie), NULL,
     "Whether /v1/auth hands the refresh token in an HttpOnly, Secure, SameSite=Strict cookie (Path=/v1/auth) "
     "instead of the JSON body; refresh and logout then require the header X-Settled-CSRF: 1."},
    /* the portal's payment methods (gateway/api/payment_methods.c, docs/api.md) */
    {"SETTLED_PORTAL_URL", T_STRING, "", 0, 0, 0, FIELD(portal_url), NULL,
     "Base URL of the client portal (https://host[/path]); GoCardless sends customers back under it after a "
     "direct-debit mandate.",
     check_portal_url},
    {"SETTLED_STRIPE_PUBLISHABLE_KEY", T_STRING, "", 0, 0, 0, FIELD(stripe_publishable_key), NULL,
     "Stripe publishable key (pk_...) handed to the portal with a card SetupIntent; empty: the portal has its own.",
     check_publishable_key},
    /* e-mail through the notification outbox (gateway/domain/mailer.c, docs/collections.md "E-mail") */
    {"SETTLED_SMTP_URL", T_STRING, "", 0, 0, 0, FIELD(smtp_url), NULL,
     "SMTP server the notification e-mails go through: smtp://host[:port] (STARTTLS) or smtps://host[:port] "
     "(implicit TLS); empty: no e-mail is sent (the outbox keeps it pending).",
     check_smtp_url},
    {"SETTLED_SMTP_FROM", T_STRING, "", 0, 0, 0, FIELD(smtp_from), NULL,
     "Sender address of the notification e-mails (From and MAIL FROM), e.g. billing@example.com.", check_smtp_from},
    {"SETTLED_SMTP_USER", T_STRING, "", 0, 0, 0, FIELD(smtp_user), NULL,
     "User name for SMTP AUTH; empty: no authentication."},
    {"SETTLED_SMTP_PASSWORD", T_SECRET, "", 0, 0, F_SECRET, FIELD(smtp_password), NULL,
     "Password for SMTP AUTH (with SETTLED_SMTP_USER)."},
    {"SETTLED_SMTP_STARTTLS", T_STRING, "required", 0, 0, 0, FIELD(smtp_starttls), NULL,
     "required: an smtp:// server must offer STARTTLS, else nothing is sent; off: plain SMTP (local tests only).",
     check_smtp_starttls},
    /* reminders, dunning, receipts and the unsubscribe link (gateway/domain/dunning.c, docs/collections.md) */
    {"SETTLED_DUNNING_INTERVAL", T_INT, "300", 0, 86400, 0, FIELD(dunning_interval), NULL,
     "Seconds between two dunning evaluations of every organisation by the workers (reminders, receipts, "
     "warnings); 0: none (settled dunning runs one)."},
    {"SETTLED_DUNNING_GRACE_DAYS", T_INT, "3", 0, 90, 0, FIELD(dunning_grace_days), NULL,
     "How many days after its day a dunning step is still sent (an evaluation that did not run); older ones are "
     "skipped."},
    {"SETTLED_PUBLIC_URL", T_STRING, "", 0, 0, 0, FIELD(public_url), NULL,
     "Base URL where settled's /v1 is reachable from the internet (https://host[/path]), for the unsubscribe link "
     "of the reminders; empty: SETTLED_PORTAL_URL.",
     check_portal_url},
    /* automatic collection (gateway/domain/collector.c, docs/collections.md "Automatic collection") */
    {"SETTLED_COLLECT_INTERVAL", T_INT, "300", 0, 86400, 0, FIELD(collect_interval), NULL,
     "Seconds between the collector's planning rounds (each worker pool plans due collections); 0: none planned "
     "automatically (settled collect still runs a round)."},
    {"SETTLED_COLLECT_CARD_RETRY_DAYS", T_STRING, "3,5,7", 0, 0, 0, FIELD(collect_card_retry_days), NULL,
     "Days between a failed card collection and its next try, one number (1..60) per retry, at most 10; "
     "empty: a declined card is not retried.",
     check_collect_retry_days},
    {"SETTLED_COLLECT_DIRECT_DEBIT_LEAD_DAYS", T_INT, "7", 0, 60, 0, FIELD(collect_dd_lead_days), NULL,
     "Days before the due date a GoCardless payment is created, so that it is charged on the due date."},
    {"SETTLED_COLLECT_DIRECT_DEBIT_RETRY", T_BOOL, "false", 0, 0, 0, FIELD(collect_dd_retry), NULL,
     "Whether GoCardless payments are created with retry_if_possible (GoCardless's own retries; needs Success+)."},
    {"SETTLED_COLLECT_CATCH_UP_DAYS", T_INT, "3", 0, 60, 0, FIELD(collect_catch_up_days), NULL,
     "Days after the due date a collection not made on it (settled was down) is still made; later, none is."},
};
#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

/* One KEY=value pair read from the environment or the file. */
typedef struct st_entry_t {
    const setting_t *setting; /* NULL for keys of the test harness, which are ignored */
    char *key;
    char *value;   /* surrounding whitespace and quotes removed */
    char *source;  /* NAME__<SOURCE> keys: the lower-cased source name; NULL otherwise */
    unsigned line; /* line in the config file; 0 for the environment */
} entry_t;

typedef struct st_loader_t {
    entry_t *entries;
    size_t n, cap;
    const char *file; /* the config file, for messages */
    char *err;
    size_t errlen;
} loader_t;

/* Errors */

/* Copies key into buf for an error message: at most GW_KEY_SHOWN bytes, non-printable bytes as '?'. */
static const char *shown_key(const char *key, char buf[GW_KEY_SHOWN + 4])
{
    size_t i = 0;
    for (; key[i] != '\0' && i != GW_KEY_SHOWN; ++i)
        buf[i] = (key[i] > ' ' && key[i] < 0x7f) ? key[i] : '?';
    if (key[i] != '\0')
        buf[i++] = '.', buf[i++] = '.', buf[i++] = '.';
    buf[i] = '\0';
    return buf;
}

/* Writes "[file:line: ][KEY: ]message" into the loader's error buffer and returns -1. */
__attribute__((format(printf, 4, 5))) static int fail(loader_t *l, unsigned line, const char *key, const char *fmt, ...)
{
    if (l->err == NULL || l->errlen == 0)
        return -1;
    char keybuf[GW_KEY_SHOWN + 4];
    size_t off = 0;
    int n = 0;
    if (line != 0)
        n = snprintf(l->err, l->errlen, "%s:%u: ", l->file, line);
    if (n > 0)
        off = (size_t)n < l->errlen ? (size_t)n : l->errlen - 1;
    if (key != NULL) {
        n = snprintf(l->err + off, l->errlen - off, "%s: ", shown_key(key, keybuf));
        if (n > 0)
            off += (size_t)n < l->errlen - off ? (size_t)n : l->errlen - off - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->err + off, l->errlen - off, fmt, ap);
    va_end(ap);
    return -1;
}

/* Text helpers */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Narrows [*s, *s + *len) to exclude surrounding whitespace. */
static void trim(const char **s, size_t *len)
{
    while (*len != 0 && is_space(**s))
        ++*s, --*len;
    while (*len != 0 && is_space((*s)[*len - 1]))
        --*len;
}

static bool valid_slug(const char *s, size_t len)
{
    if (len == 0 || len > 63)
        return false;
    for (size_t i = 0; i != len; ++i) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || is_digit(c) || (i != 0 && (c == '_' || c == '-'))))
            return false;
    }
    return true;
}

static bool has_control(const char *s)
{
    for (; *s != '\0'; ++s)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* Levenshtein distance of two short strings, for "did you mean" hints; SIZE_MAX if either is long. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[65];
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; ++j)
        row[j] = j;
    for (size_t i = 1; i <= la; ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; ++j) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Keys */

static bool is_harness_key(const char *key)
{
    return strncmp(key, "SETTLED_TEST_", 13) == 0 || strcmp(key, "SETTLED_BIN") == 0 ||
           strcmp(key, "SETTLED_SOURCE_DIR") == 0;
}

/* Finds the setting that key names. Sets *setting (NULL for a harness key) and, for NAME__<SOURCE>, *source
 * to the lower-cased source name (malloc'd). Returns -1 with a message for an unknown or malformed key. */
static int classify(loader_t *l, unsigned line, const char *key, const setting_t **setting, char **source)
{
    *setting = NULL;
    *source = NULL;
    for (size_t i = 0; i != NSETTINGS; ++i) {
        if (strcmp(key, settings[i].name) == 0) {
            *setting = &settings[i];
            return 0;
        }
    }
    for (size_t i = 0; i != NSETTINGS; ++i) {
        const setting_t *s = &settings[i];
        size_t n = strlen(s->name);
        if ((s->flags & F_PER_SOURCE) == 0 || strncmp(key, s->name, n) != 0 || strncmp(key + n, "__", 2) != 0)
            continue;
        const char *suffix = key + n + 2;
        size_t len = strlen(suffix);
        char *name = gw_xstrndup(suffix, len);
        for (size_t j = 0; j != len; ++j)
            if (name[j] >= 'A' && name[j] <= 'Z')
                name[j] = (char)(name[j] - 'A' + 'a');
        if (!valid_slug(name, len)) {
            free(name);
            return fail(l, line, key,
                        "the source name after __ must be 1 to 63 letters, digits, '_' or '-', starting with a letter "
                        "or digit");
        }
        if (strcmp(name, "default") == 0) {
            free(name);
            return fail(l, line, key, "the source name \"default\" is reserved: use %s", s->name);
        }
        *setting = s;
        *source = name;
        return 0;
    }
    if (is_harness_key(key))
        return 0;
    if (strncmp(key, "SETTLED_", 8) != 0)
        return fail(l, line, key, "not a setting of settled (settings start with SETTLED_)");
    const char *hint = NULL;
    size_t best = 3; /* suggest only names at most two edits away */
    for (size_t i = 0; i != NSETTINGS; ++i) {
        size_t d = edit_distance(key, settings[i].name), n = strlen(settings[i].name);
        if ((settings[i].flags & F_PER_SOURCE) && strncmp(key, settings[i].name, n) == 0 && key[n] == '_' &&
            key[n + 1] != '\0') {
            char keybuf[GW_KEY_SHOWN + 4];
            return fail(l, line, key, "unknown setting (did you mean %s__%s?)", settings[i].name,
                        shown_key(key + n + 1, keybuf));
        }
        if (d < best)
            best = d, hint = settings[i].name;
    }
    if (hint != NULL)
        return fail(l, line, key, "unknown setting (did you mean %s?)", hint);
    return fail(l, line, key, "unknown setting (docs/configuration.md lists them all)");
}

static entry_t *find_entry(loader_t *l, const char *key)
{
    for (size_t i = 0; i != l->n; ++i)
        if (strcmp(l->entries[i].key, key) == 0)
            return &l->entries[i];
    return NULL;
}

/* Records KEY=value (key and value are copied). The environment is read first, so a key already read from
 * it wins over the file; a key repeated within the file is an error; a key repeated within the environment
 * keeps its first value, as getenv does. */
static int add_entry(loader_t *l, const char *key, const char *value, size_t vlen, unsigned line)
{
    const setting_t *setting;
    char *source;
    if (classify(l, line, key, &setting, &source) != 0)
        return -1;
    if (setting != NULL && setting->type == T_PATH && line != 0) {
        free(source);
        return fail(l, line, key, "names the config file, so it can only be set in the environment");
    }
    entry_t *prev = find_entry(l, key);
    if (prev != NULL) {
        free(source);
        if (line != 0 && prev->line != 0)
            return fail(l, line, key, "set twice in the file (first on line %u)", prev->line);
        return 0;
    }
    if (l->n == l->cap) {
        l->cap = l->cap == 0 ? 16 : l->cap * 2;
        l->entries = gw_xrealloc(l->entries, l->cap * sizeof(*l->entries));
    }
    l->entries[l->n++] = (entry_t){.setting = setting,
                                   .key = gw_xstrndup(key, strlen(key)),
                                   .value = gw_xstrndup(value, vlen),
                                   .source = source,
                                   .line = line};
    return 0;
}

static void loader_free(loader_t *l)
{
    for (size_t i = 0; i != l->n; ++i) {
        free(l->entries[i].key);
        gw_free_secret(l->entries[i].value);
        free(l->entries[i].source);
    }
    free(l->entries);
}

static int read_env(loader_t *l, char *const *envp)
{
    for (; envp != NULL && *envp != NULL; ++envp) {
        const char *kv = *envp, *eq = strchr(kv, '=');
        if (strncmp(kv, "SETTLED_", 8) != 0 || eq == NULL)
            continue;
        char *key = gw_xstrndup(kv, (size_t)(eq - kv));
        const char *value = eq + 1;
        size_t vlen = strlen(value);
        trim(&value, &vlen);
        int ret = add_entry(l, key, value, vlen, 0);
        free(key);
        if (ret != 0)
            return -1;
    }
    return 0;
}

static int read_file(loader_t *l, const char *path, bool from_env)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        if (from_env)
            return fail(l, 0, "SETTLED_CONFIG", "cannot read %s: %s", path, strerror(errno));
        return fail(l, 0, NULL, "%s: cannot read the config file: %s", path, strerror(errno));
    }
    l->file = path;
    char *buf = NULL, *key = NULL;
    size_t cap = 0;
    ssize_t got;
    unsigned lineno = 0;
    int ret = -1;
    while ((got = getline(&buf, &cap, fp)) != -1) {
        ++lineno;
        const char *s = buf;
        size_t len = (size_t)got;
        if (memchr(s, '\0', len) != NULL) {
            fail(l, lineno, NULL, "contains a NUL byte");
            goto Exit;
        }
        trim(&s, &len);
        if (len == 0 || s[0] == '#')
            continue;
        const char *eq = memchr(s, '=', len);
        if (eq == NULL) {
            fail(l, lineno, NULL, "expected KEY=value");
            goto Exit;
        }
        const char *k = s, *v = eq + 1;
        size_t klen = (size_t)(eq - s), vlen = len - klen - 1;
        trim(&k, &klen);
        trim(&v, &vlen);
        if (klen == 0) {
            fail(l, lineno, NULL, "expected KEY=value, found no key before '='");
            goto Exit;
        }
        free(key);
        key = gw_xstrndup(k, klen);
        if (vlen != 0 && v[0] == '"') {
            if (vlen < 2 || v[vlen - 1] != '"') {
                fail(l, lineno, key, "the value's opening double quote is not closed at the end of the line");
                goto Exit;
            }
            ++v;
            vlen -= 2;
        }
        if (add_entry(l, key, v, vlen, lineno) != 0)
            goto Exit;
    }
    if (ferror(fp)) {
        fail(l, 0, NULL, "%s: cannot read the config file: %s", path, strerror(errno));
        goto Exit;
    }
    ret = 0;
Exit:
    free(key);
    if (buf != NULL)
        explicit_bzero(buf, cap);
    free(buf);
    fclose(fp);
    return ret;
}

/* Values */

static int parse_int(const char *text, long long min, long long max, long long *out)
{
    const char *p = text + (text[0] == '-' || text[0] == '+');
    if (!is_digit(*p))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_size(const char *text, long long min, long long max, size_t *out)
{
    if (!is_digit(text[0]))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10), unit = 1;
    if (errno != 0)
        return -1;
    if (*end == 'k' || *end == 'K')
        unit = 1024, ++end;
    else if (*end == 'm' || *end == 'M')
        unit = 1024 * 1024, ++end;
    if (*end != '\0' || v > (unsigned long long)max / unit || v * unit < (unsigned long long)min)
        return -1;
    *out = (size_t)(v * unit);
    return 0;
}

static int parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i != 4; ++i) {
        if (strcasecmp(text, yes[i]) == 0)
            return *out = true, 0;
        if (strcasecmp(text, no[i]) == 0)
            return *out = false, 0;
    }
    return -1;
}

static bool valid_hostname(const char *h, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    bool numeric = true;
    size_t label = 0;
    for (size_t i = 0; i != len; ++i) {
        char c = h[i];
        if (c == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-'))
            return false;
        if ((c == '-' && label == 0) || ++label > 63)
            return false;
        if (!is_digit(c))
            numeric = false;
    }
    /* all digits and dots but not a valid IPv4 address (checked before): a typo, not a host name */
    return label != 0 && h[len - 1] != '-' && !numeric;
}

/* Splits host:port; host is returned without IPv6 brackets (malloc'd). */
static int parse_listen(const char *text, char **host, uint16_t *port)
{
    const char *h, *colon;
    size_t hlen;
    char buf[INET6_ADDRSTRLEN + 1];
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        h = text + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        struct in6_addr a6;
        if (hlen == 0 || hlen >= sizeof(buf))
            return -1;
        memcpy(buf, h, hlen);
        buf[hlen] = '\0';
        if (inet_pton(AF_INET6, buf, &a6) != 1)
            return -1;
    } else {
        if ((colon = strchr(text, ':')) == NULL || strchr(colon + 1, ':') != NULL)
            return -1; /* no port, or an IPv6 address without brackets */
        h = text;
        hlen = (size_t)(colon - text);
        struct in_addr a4;
        bool ipv4 = false;
        if (hlen != 0 && hlen < sizeof(buf)) {
            memcpy(buf, h, hlen);
            buf[hlen] = '\0';
            ipv4 = inet_pton(AF_INET, buf, &a4) == 1;
        }
        if (!ipv4 && !valid_hostname(h, hlen))
            return -1;
    }
    long long p;
    if (!is_digit(colon[1]) || parse_int(colon + 1, 1, 65535, &p) != 0)
        return -1;
    *host = gw_xstrndup(h, hlen);
    *port = (uint16_t)p;
    return 0;
}

static bool valid_conninfo(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0 || strchr(s, '=') != NULL;
}

/* Why s is not a usable http(s) URL, or NULL if it is: a scheme, a host (a name, an IPv4 address or an IPv6 one in
 * brackets) with an optional port, and no fragment; a base URL (base) has no query either. Never quotes s. */
static const char *url_problem(const char *s, bool base)
{
    for (const char *p = s; *p != '\0'; ++p)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return "must be an http:// or https:// URL without spaces";
    size_t n = strncmp(s, "https://", 8) == 0 ? 8 : strncmp(s, "http://", 7) == 0 ? 7 : 0;
    if (n == 0)
        return "must be an http:// or https:// URL (e.g. https://api.example.com)";
    const char *auth = s + n, *end = auth + strcspn(auth, "/?#"), *at = NULL;
    for (const char *p = auth; p != end; ++p)
        if (*p == '@')
            at = p;
    const char *host = at != NULL ? at + 1 : auth, *port = NULL;
    size_t hlen;
    char buf[INET6_ADDRSTRLEN + 1];
    if (host[0] == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (close == NULL || (close + 1 != end && close[1] != ':'))
            return "must have a host: the URL's IPv6 address is not closed with ']'";
        hlen = (size_t)(close - host - 1);
        struct in6_addr a6;
        if (hlen == 0 || hlen >= sizeof(buf))
            return "must have a host: the URL's bracketed host is not an IPv6 address";
        memcpy(buf, host + 1, hlen);
        buf[hlen] = '\0';
        if (inet_pton(AF_INET6, buf, &a6) != 1)
            return "must have a host: the URL's bracketed host is not an IPv6 address";
        port = close + 1 != end ? close + 2 : NULL;
    } else {
        const char *colon = memchr(host, ':', (size_t)(end - host));
        hlen = (size_t)((colon != NULL ? colon : end) - host);
        if (hlen == 0)
            return "must have a host after the scheme (e.g. https://api.example.com)";
        struct in_addr a4;
        bool ipv4 = false;
        if (hlen < sizeof(buf)) {
            memcpy(buf, host, hlen);
            buf[hlen] = '\0';
            ipv4 = inet_pton(AF_INET, buf, &a4) == 1;
        }
        if (!ipv4 && !valid_hostname(host, hlen))
            return "must have a host: the URL's host is not a host name or an IP address";
        port = colon != NULL ? colon + 1 : NULL;
    }
    if (port != NULL) {
        long long v = 0;
        size_t plen = (size_t)(end - port);
        bool digits = plen != 0 && plen <= 5;
        for (size_t i = 0; digits && i != plen; ++i)
            digits = is_digit(port[i]), v = v * 10 + (port[i] - '0');
        if (!digits || v < 1 || v > 65535)
            return "must have a port from 1 to 65535 after the host's ':'";
    }
    if (strchr(end, '#') != NULL)
        return "must not have a fragment ('#...')";
    if (base && strchr(end, '?') != NULL)
        return "must be a base URL without a query ('?...'): paths are appended to it";
    return NULL;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Value checks: the further checks of the table's check column. Each returns NULL for a good value, else why it is
 * not (never quoting it). */

static const char *check_secret_key(const char *value, char *why, size_t whylen)
{
    unsigned char key[GW_CRYPTO_KEY_LEN];
    gw_err_t err = GW_ERR_INIT;
    if (gw_crypto_key_from_setting(value, key, &err) == 0) {
        explicit_bzero(key, sizeof(key));
        return NULL;
    }
    static const char prefix[] = "SETTLED_SECRET_KEY: "; /* the loader names the key itself */
    const char *d = strncmp(err.detail, prefix, sizeof(prefix) - 1) == 0 ? err.detail + sizeof(prefix) - 1 : err.detail;
    snprintf(why, whylen, "%s", d);
    return why;
}

/* A name that goes into log lines, metric labels and JSON as it is: 1 to 64 letters, digits and . _ - : @ */
/* A Xero account Code: what organisations.xero_payment_account accepts too (0013_xero_writebacks.sql). */
static const char *check_account_code(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    size_t n = strlen(value);
    if (n > 10 || strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n)
        return "must be a Xero account code: at most 10 letters, digits and . _ -";
    return NULL;
}

/* Comma-separated exact origins as browsers send them: http(s)://host[:port], no path, no wildcard. */
static const char *check_cors_origins(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    const char *p = value;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        size_t skip = len >= 8 && strncmp(p, "https://", 8) == 0  ? 8
                      : len >= 7 && strncmp(p, "http://", 7) == 0 ? 7
                                                                  : 0;
        if (skip == 0 || len == skip)
            return "must list origins like https://portal.example.com, comma-separated";
        for (size_t i = skip; i != len; ++i) {
            char c = p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == ':' || c == '[' ||
                  c == ']'))
                return "must list origins (lower-case scheme://host[:port], no path, no wildcard), comma-separated";
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    return NULL;
}

/* The portal's base URL: http(s)://host..., no query, no fragment, no white space. */
static const char *check_portal_url(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    if (value[0] == '\0')
        return NULL;
    size_t skip = strncmp(value, "https://", 8) == 0 ? 8 : strncmp(value, "http://", 7) == 0 ? 7 : 0;
    if (skip == 0 || value[skip] == '\0' || value[skip] == '/')
        return "must be an http(s) URL like https://portal.example.com";
    for (const char *p = value; *p != '\0'; ++p)
        if ((unsigned char)*p <= ' ' || *p == '?' || *p == '#' || *p == '"' || *p == '\\' || (unsigned char)*p >= 0x7f)
            return "must be an http(s) URL without query, fragment or white space";
    return NULL;
}

/* A Stripe publishable key: pk_test_... or pk_live_... */
static const char *check_publishable_key(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    if (value[0] == '\0')
        return NULL;
    if (strncmp(value, "pk_", 3) != 0 || strlen(value) > 255)
        return "must be a Stripe publishable key (pk_...)";
    for (const char *p = value; *p != '\0'; ++p)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return "must be a Stripe publishable key (pk_...)";
    return NULL;
}

/* smtp://host[:port] or smtps://host[:port], nothing after the authority but an optional "/". */
static const char *check_smtp_url(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    if (value[0] == '\0')
        return NULL;
    const char *host = strncmp(value, "smtp://", 7) == 0    ? value + 7
                       : strncmp(value, "smtps://", 8) == 0 ? value + 8
                                                            : NULL;
    static const char msg[] = "must be smtp://host[:port] (STARTTLS) or smtps://host[:port] (implicit TLS)";
    if (host == NULL || host[0] == '\0' || host[0] == '/' || strlen(value) > 255)
        return msg;
    for (const char *p = host; *p != '\0'; ++p)
        if (*p <= ' ' || *p >= 0x7f || *p == '@' || (*p == '/' && p[1] != '\0'))
            return msg;
    return NULL;
}

/* A bare address local@domain: no display name, no spaces, no angle brackets or CR/LF (it goes into headers). */
static const char *check_smtp_from(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    if (value[0] == '\0')
        return NULL;
    const char *at = strchr(value, '@');
    if (at == NULL || at == value || at[1] == '\0' || strchr(at + 1, '@') != NULL || strlen(value) > 254)
        return "must be an address local@domain (e.g. billing@example.com)";
    for (const char *p = value; *p != '\0'; ++p)
        if (*p <= ' ' || *p >= 0x7f || *p == '<' || *p == '>' || *p == ',' || *p == '"' || *p == '\\')
            return "must be an address local@domain (e.g. billing@example.com)";
    return NULL;
}

/* "3,5,7": at most 10 comma-separated days of 1..60; empty is allowed (no retry). */
static const char *check_collect_retry_days(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    const char *p = value;
    int n = 0;
    while (*p != '\0') {
        char *end = NULL;
        long d = strtol(p, &end, 10);
        if (end == p || d < 1 || d > 60 || ++n > 10 || (*end != ',' && *end != '\0') || (*end == ',' && end[1] == '\0'))
            return "must be comma-separated days of 1..60 (at most 10), e.g. 3,5,7";
        p = *end == ',' ? end + 1 : end;
    }
    return NULL;
}

static const char *check_smtp_starttls(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    return strcmp(value, "required") == 0 || strcmp(value, "off") == 0 ? NULL : "must be required or off";
}

/* An HS256 key: RFC 7518 section 3.2 wants at least as many bytes as the hash has (32). */
static const char *check_jwt_secret(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    return strlen(value) < 32 ? "must be at least 32 bytes (RFC 7518 section 3.2), e.g. openssl rand -base64 32" : NULL;
}

/* The algorithms gw_auth accepts; anything else (none, HS384, ...) is refused at start. */
static const char *check_jwt_alg(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    return strcmp(value, "HS256") == 0 || strcmp(value, "RS256") == 0 || strcmp(value, "ES256") == 0
               ? NULL
               : "must be HS256, RS256 or ES256";
}

static const char *check_name(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    size_t n = strlen(value);
    if (n > 64 || strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:@") != n)
        return "must be at most 64 letters, digits and . _ - : @";
    return NULL;
}

static const char *check_xero_scopes(const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    for (const char *p = value; *p != '\0';) {
        size_t n = strcspn(p, " ");
        if (n == 14 && strncmp(p, "offline_access", 14) == 0)
            return NULL;
        p += n;
        p += strspn(p, " ");
    }
    return "must include offline_access: without it Xero issues no refresh token, and every connection stops working "
           "when its first access token expires (after 30 minutes)";
}

/* Parses a webhook secret value into secrets: one key, or comma-separated keys (each trimmed, none empty). */
static int parse_secrets(loader_t *l, const entry_t *e, bool list, cn_secrets_t *out)
{
    size_t count = 1;
    if (list)
        for (const char *p = e->value; *p != '\0'; ++p)
            count += *p == ',';
    cn_str_t *keys = gw_xrealloc(NULL, count * sizeof(*keys));
    const char *p = e->value;
    size_t i = 0;
    for (; i != count; ++i) {
        const char *item = p, *end = list ? strchr(p, ',') : NULL;
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        p = item + len + 1;
        trim(&item, &len);
        if (len == 0) {
            fail(l, e->line, e->key, "secret %zu of %zu is empty (separate secrets with single commas)", i + 1, count);
            goto Error;
        }
        if (len > GW_SECRET_MAX) {
            if (list)
                fail(l, e->line, e->key, "secret %zu of %zu is longer than %d bytes", i + 1, count, GW_SECRET_MAX);
            else
                fail(l, e->line, e->key, "must be at most %d bytes", GW_SECRET_MAX);
            goto Error;
        }
        keys[i] = (cn_str_t){gw_xstrndup(item, len), len};
    }
    out->keys = keys;
    out->count = count;
    return 0;
Error:
    while (i != 0)
        gw_free_secret((char *)keys[--i].base);
    free(keys);
    return -1;
}

/* Parses the effective text of setting s (from e, or its default when e is NULL) into cfg. */
static int parse_setting(loader_t *l, gw_config_t *cfg, const setting_t *s, const entry_t *e)
{
    const char *text = e != NULL && e->value[0] != '\0' ? e->value : s->def;
    unsigned line = e != NULL ? e->line : 0;
    void *field = (char *)cfg + s->offset;
    long long v;
    switch (s->type) {
    case T_PATH:
        return 0; /* set by gw_config_load from the file it read */
    case T_STRING:
    case T_CONNINFO:
    case T_URL:
    case T_REDIS_URL:
        if (text[0] == '\0')
            return 0;
        if (has_control(text))
            return fail(l, line, s->name, "must not contain control characters");
        if (s->type == T_CONNINFO && !valid_conninfo(text))
            return fail(l, line, s->name, "must be a postgresql:// URI or a key=value connection string");
        if (s->type == T_URL) {
            const char *why = url_problem(text, ends_with(s->name, "_BASE"));
            if (why != NULL)
                return fail(l, line, s->name, "%s", why);
        }
        if (s->type == T_REDIS_URL) {
            char *host, *password;
            int port, db;
            if (gw_redis_parse_url(text, &host, &port, &password, &db) != 0)
                return fail(l, line, s->name,
                            "must be redis://[[user]:password@]host[:port][/db] with a port from 1 to 65535 and a "
                            "database from 0 to 1000 (TLS, rediss://, is not supported)");
            free(host);
            gw_free_secret(password);
        }
        *(char **)field = gw_xstrndup(text, strlen(text));
        return 0;
    case T_INT:
        if (parse_int(text, s->min, s->max, &v) != 0)
            return fail(l, line, s->name, "must be an integer from %lld to %lld", s->min, s->max);
        *(int *)field = (int)v;
        return 0;
    case T_SIZE:
        if (parse_size(text, s->min, s->max, (size_t *)field) != 0)
            return fail(l, line, s->name, "must be a size from %lld to %lld bytes (suffix k or m for KiB or MiB)",
                        s->min, s->max);
        return 0;
    case T_BOOL:
        if (parse_bool(text, (bool *)field) != 0)
            return fail(l, line, s->name, "must be true or false (or 1/0, yes/no, on/off)");
        return 0;
    case T_LOG_LEVEL:
        for (size_t i = 0; i != sizeof(log_level_names) / sizeof(log_level_names[0]); ++i) {
            if (strcasecmp(text, log_level_names[i]) == 0) {
                *(enum gw_log_level *)field = (enum gw_log_level)i;
                return 0;
            }
        }
        return fail(l, line, s->name, "must be one of debug, info, warn, error");
    case T_LISTEN:
        if (parse_listen(text, &cfg->listen_host, &cfg->listen_port) != 0)
            return fail(l, line, s->name,
                        "must be host:port with a port from 1 to 65535 and an IPv4 address, a host name or an IPv6 "
                        "address in brackets (e.g. 127.0.0.1:8080, [::1]:8080)");
        return 0;
    case T_OPS_LISTEN:
        if (strcmp(text, "off") == 0)
            return 0;
        if (parse_listen(text, &cfg->ops_listen_host, &cfg->ops_listen_port) != 0)
            return fail(l, line, s->name,
                        "must be off or host:port with a port from 1 to 65535 and an IPv4 address, a host name or an "
                        "IPv6 address in brackets (e.g. 127.0.0.1:9464)");
        return 0;
    case T_SLUG:
        if (!valid_slug(text, strlen(text)))
            return fail(l, line, s->name,
                        "must be 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit");
        *(char **)field = gw_xstrndup(text, strlen(text));
        return 0;
    case T_SECRET:
        if (text[0] == '\0')
            return 0;
        if (strlen(text) > GW_SECRET_MAX)
            return fail(l, line, s->name, "must be at most %d bytes", GW_SECRET_MAX);
        *(char **)field = gw_xstrndup(text, strlen(text));
        return 0;
    case T_WEBHOOK_KEY:
    case T_WEBHOOK_SECRETS:
        return 0; /* they define sources: see add_sources */
    case T_SCHEDULE: {
        char why[200];
        if (gw_retry_schedule_parse(text, (gw_retry_schedule_t *)field, why, sizeof(why)) != 0)
            return fail(l, line, s->name, "%s", why);
        return 0;
    }
    }
    return 0;
}

/* The retry settings: SETTLED_RETRY_SCHEDULE, or the deprecated exponential backoff it replaces (translated into a
 * schedule when only the old settings are given, refused when both are), and the alert webhook's pair. */
static int resolve_retry(loader_t *l, gw_config_t *cfg)
{
    static const char *const legacy[] = {"SETTLED_WORKER_MAX_ATTEMPTS", "SETTLED_WORKER_BACKOFF_MS",
                                         "SETTLED_WORKER_BACKOFF_MAX_MS"};
    const entry_t *schedule = find_entry(l, "SETTLED_RETRY_SCHEDULE");
    bool old = false;
    for (size_t i = 0; i != sizeof(legacy) / sizeof(legacy[0]); ++i) {
        const entry_t *e = find_entry(l, legacy[i]);
        if (e == NULL || e->value[0] == '\0')
            continue;
        if (schedule != NULL && schedule->value[0] != '\0')
            return fail(l, e->line, e->key,
                        "deprecated, and contradicts SETTLED_RETRY_SCHEDULE, which sets every attempt and wait: "
                        "remove it");
        old = true;
    }
    if (old) {
        gw_retry_schedule_t *rs = &cfg->retry_schedule;
        rs->n = (size_t)cfg->worker_max_attempts - 1;
        if (rs->n > GW_RETRY_SCHEDULE_MAX)
            rs->n = GW_RETRY_SCHEDULE_MAX;
        int64_t wait = cfg->worker_backoff_ms;
        for (size_t i = 0; i != rs->n; ++i) {
            rs->ms[i] = wait < cfg->worker_backoff_max_ms ? wait : cfg->worker_backoff_max_ms;
            wait = wait > INT32_MAX ? wait : wait * 2;
        }
    }
    cfg->worker_max_attempts = (int)cfg->retry_schedule.n + 1; /* attempts in all, also of lost leases */
    if (cfg->circuit_cooldown_max_ms < cfg->circuit_cooldown_ms) {
        const entry_t *e = find_entry(l, "SETTLED_CIRCUIT_COOLDOWN_MAX_MS");
        return fail(l, e != NULL ? e->line : 0, "SETTLED_CIRCUIT_COOLDOWN_MAX_MS",
                    "must be at least SETTLED_CIRCUIT_COOLDOWN_MS (%d)", cfg->circuit_cooldown_ms);
    }
    bool jwt_hs = strcmp(cfg->jwt_alg, "HS256") == 0;
    if (!jwt_hs && cfg->jwt_private_key_file == NULL) {
        const entry_t *e = find_entry(l, "SETTLED_JWT_ALG");
        return fail(l, e != NULL ? e->line : 0, "SETTLED_JWT_PRIVATE_KEY_FILE", "required with SETTLED_JWT_ALG=%s",
                    cfg->jwt_alg);
    }
    if (jwt_hs && (cfg->jwt_private_key_file != NULL || cfg->jwt_public_key_file != NULL)) {
        const char *key =
            cfg->jwt_private_key_file != NULL ? "SETTLED_JWT_PRIVATE_KEY_FILE" : "SETTLED_JWT_PUBLIC_KEY_FILE";
        const entry_t *e = find_entry(l, key);
        return fail(l, e != NULL ? e->line : 0, key, "is only used with SETTLED_JWT_ALG=RS256 or ES256 (now HS256)");
    }
    if (!jwt_hs && cfg->jwt_secret != NULL) {
        const entry_t *e = find_entry(l, "SETTLED_JWT_SECRET");
        return fail(l, e != NULL ? e->line : 0, "SETTLED_JWT_SECRET",
                    "is only used with SETTLED_JWT_ALG=HS256 (now %s)", cfg->jwt_alg);
    }
    if ((cfg->alert_webhook_url != NULL) != (cfg->alert_webhook_secret != NULL)) {
        const char *key = cfg->alert_webhook_url != NULL ? "SETTLED_ALERT_WEBHOOK_SECRET" : "SETTLED_ALERT_WEBHOOK_URL";
        const entry_t *e = find_entry(l, cfg->alert_webhook_url != NULL ? "SETTLED_ALERT_WEBHOOK_URL"
                                                                        : "SETTLED_ALERT_WEBHOOK_SECRET");
        return fail(l, e != NULL ? e->line : 0, key, "required with %s",
                    cfg->alert_webhook_url != NULL ? "SETTLED_ALERT_WEBHOOK_URL" : "SETTLED_ALERT_WEBHOOK_SECRET");
    }
    if (cfg->smtp_url != NULL && cfg->smtp_from == NULL) {
        const entry_t *e = find_entry(l, "SETTLED_SMTP_URL");
        return fail(l, e != NULL ? e->line : 0, "SETTLED_SMTP_FROM", "required with SETTLED_SMTP_URL");
    }
    if (cfg->smtp_password != NULL && cfg->smtp_user == NULL) {
        const entry_t *e = find_entry(l, "SETTLED_SMTP_PASSWORD");
        return fail(l, e != NULL ? e->line : 0, "SETTLED_SMTP_USER", "required with SETTLED_SMTP_PASSWORD");
    }
    return 0;
}

/* Refuses a setting that is set but used by nothing, and runs the table's further check of a value that was set. */
static int check_setting(loader_t *l, const setting_t *s, const entry_t *e)
{
    if (e == NULL || e->value[0] == '\0')
        return 0;
    if (s->flags & F_UNUSED)
        return fail(l, e->line, e->key,
                    "is set, but nothing in this version of settled uses it yet (docs/configuration.md): remove it");
    char why[512];
    const char *problem = s->check != NULL ? s->check(e->value, why, sizeof(why)) : NULL;
    if (problem != NULL)
        return fail(l, e->line, e->key, "%s", problem);
    return 0;
}

/* Sources */

static const setting_t *webhook_setting(const cn_connector_t *connector)
{
    for (size_t i = 0; i != NSETTINGS; ++i)
        if (settings[i].connector == connector)
            return &settings[i];
    return NULL;
}

/* Adds the source named name of the provider of webhook setting s, with the secrets of e. */
static int add_source(loader_t *l, gw_config_t *cfg, const setting_t *s, const entry_t *e, const char *name)
{
    for (size_t i = 0; i != cfg->nsources; ++i) {
        if (cfg->sources[i].connector == s->connector && strcmp(cfg->sources[i].name, name) == 0)
            return fail(l, e->line, e->key, "source \"%s\" of %s is already defined by another key", name,
                        s->connector->name);
    }
    cn_secrets_t secrets;
    if (parse_secrets(l, e, s->type == T_WEBHOOK_SECRETS, &secrets) != 0)
        return -1;
    cfg->sources = gw_xrealloc(cfg->sources, (cfg->nsources + 1) * sizeof(*cfg->sources));
    cfg->sources[cfg->nsources++] =
        (gw_source_t){.connector = s->connector, .name = gw_xstrndup(name, strlen(name)), .secrets = secrets};
    return 0;
}

static size_t provider_rank(const cn_connector_t *connector)
{
    return (size_t)(webhook_setting(connector) - settings);
}

/* Orders sources by provider (table order), then "default" first, then by name. */
static int on_compare_sources(const void *a, const void *b)
{
    const gw_source_t *x = a, *y = b;
    size_t rx = provider_rank(x->connector), ry = provider_rank(y->connector);
    if (rx != ry)
        return rx < ry ? -1 : 1;
    bool dx = strcmp(x->name, "default") == 0, dy = strcmp(y->name, "default") == 0;
    if (dx != dy)
        return dx ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int add_sources(loader_t *l, gw_config_t *cfg)
{
    /* a source exists only when it has secrets: first the default sources, then NAME__<SOURCE> ones */
    for (size_t i = 0; i != NSETTINGS; ++i) {
        const setting_t *s = &settings[i];
        if (s->connector == NULL)
            continue;
        entry_t *e = find_entry(l, s->name);
        if (e != NULL && e->value[0] != '\0' && add_source(l, cfg, s, e, "default") != 0)
            return -1;
    }
    for (size_t i = 0; i != l->n; ++i) {
        entry_t *e = &l->entries[i];
        if (e->setting != NULL && e->setting->connector != NULL && e->source != NULL && e->value[0] != '\0' &&
            add_source(l, cfg, e->setting, e, e->source) != 0)
            return -1;
    }

    /* then their organisations: SETTLED_ORGANISATION__<SOURCE>, else SETTLED_ORGANISATION */
    for (size_t i = 0; i != l->n; ++i) {
        entry_t *e = &l->entries[i];
        if (e->setting == NULL || e->setting->type != T_SLUG || e->source == NULL || e->value[0] == '\0')
            continue;
        if (!valid_slug(e->value, strlen(e->value)))
            return fail(l, e->line, e->key,
                        "must be 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit");
        for (size_t j = 0; j != i; ++j) {
            entry_t *other = &l->entries[j];
            if (other->setting == e->setting && other->source != NULL && other->value[0] != '\0' &&
                strcmp(other->source, e->source) == 0)
                return fail(l, e->line, e->key, "source \"%s\" already gets its organisation from another key",
                            e->source);
        }
        bool found = false;
        for (size_t j = 0; j != cfg->nsources; ++j) {
            gw_source_t *src = &cfg->sources[j];
            if (strcmp(src->name, e->source) == 0) {
                src->organisation = gw_xstrndup(e->value, strlen(e->value));
                found = true;
            }
        }
        if (!found) {
            const char *suffix = e->key + strlen(e->setting->name) + 2;
            return fail(l, e->line, e->key,
                        "there is no webhook source \"%s\" (define it with SETTLED_STRIPE_WEBHOOK_SECRETS__%s, "
                        "SETTLED_XERO_WEBHOOK_KEY__%s or SETTLED_GOCARDLESS_WEBHOOK_SECRETS__%s)",
                        e->source, suffix, suffix, suffix);
        }
    }
    for (size_t i = 0; i != cfg->nsources; ++i)
        if (cfg->sources[i].organisation == NULL)
            cfg->sources[i].organisation = gw_xstrndup(cfg->organisation, strlen(cfg->organisation));

    /* and their API keys: SETTLED_STRIPE_SECRET_KEY__<SOURCE> for the Stripe source <source> (likewise GoCardless's
     * access token), else the provider's key without a suffix */
    for (size_t i = 0; i != l->n; ++i) {
        entry_t *e = &l->entries[i];
        if (e->setting == NULL || e->setting->type != T_SECRET || e->source == NULL || e->value[0] == '\0')
            continue;
        const char *provider = e->setting->offset == offsetof(gw_config_t, stripe_secret_key) ? "stripe" : "gocardless";
        if (strlen(e->value) > GW_SECRET_MAX)
            return fail(l, e->line, e->key, "must be at most %d bytes", GW_SECRET_MAX);
        gw_source_t *src = gw_config_find_source(cfg, provider, e->source, strlen(e->source));
        if (src == NULL) {
            const char *suffix = e->key + strlen(e->setting->name) + 2;
            return fail(
                l, e->line, e->key, "there is no %s webhook source \"%s\" (define it with %s__%s)", provider, e->source,
                webhook_setting(provider[0] == 's' ? &cn_stripe_connector : &cn_gocardless_connector)->name, suffix);
        }
        src->api_key = gw_xstrndup(e->value, strlen(e->value));
    }

    if (cfg->nsources > 1)
        qsort(cfg->sources, cfg->nsources, sizeof(*cfg->sources), on_compare_sources);
    return 0;
}

/* API */

int gw_config_load(gw_config_t *cfg, const char *path, char *const *envp, char *err, size_t errlen)
{
    loader_t l = {.err = err, .errlen = errlen};
    memset(cfg, 0, sizeof(*cfg));
    if (err != NULL && errlen != 0)
        err[0] = '\0';

    if (read_env(&l, envp) != 0)
        goto Error;
    bool from_env = false;
    if (path == NULL || path[0] == '\0') {
        entry_t *e = find_entry(&l, "SETTLED_CONFIG");
        path = e != NULL && e->value[0] != '\0' ? e->value : NULL;
        from_env = true;
    }
    if (path != NULL) {
        cfg->config_path = gw_xstrndup(path, strlen(path));
        if (read_file(&l, cfg->config_path, from_env) != 0)
            goto Error;
    }

    for (size_t i = 0; i != NSETTINGS; ++i)
        if (parse_setting(&l, cfg, &settings[i], find_entry(&l, settings[i].name)) != 0 ||
            check_setting(&l, &settings[i], find_entry(&l, settings[i].name)) != 0)
            goto Error;
    if (cfg->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->threads = n < 1 ? 1 : n > 64 ? 64 : (int)n;
    }
    if (add_sources(&l, cfg) != 0 || resolve_retry(&l, cfg) != 0)
        goto Error;

    loader_free(&l);
    return 0;
Error:
    loader_free(&l);
    gw_config_free(cfg);
    return -1;
}

void gw_config_free(gw_config_t *cfg)
{
    for (size_t i = 0; i != NSETTINGS; ++i) {
        const setting_t *s = &settings[i];
        switch (s->type) {
        case T_PATH:
        case T_STRING:
        case T_CONNINFO:
        case T_URL:
        case T_REDIS_URL:
        case T_SLUG:
        case T_SECRET:
        case T_LISTEN:
        case T_OPS_LISTEN:
            gw_free_secret(*(char **)((char *)cfg + s->offset));
            break;
        default:
            break;
        }
    }
    for (size_t i = 0; i != cfg->nsources; ++i) {
        gw_source_t *src = &cfg->sources[i];
        free(src->name);
        free(src->organisation);
        gw_free_secret(src->api_key);
        for (size_t j = 0; j != src->secrets.count; ++j)
            gw_free_secret((char *)src->secrets.keys[j].base);
        free((void *)src->secrets.keys);
    }
    free(cfg->sources);
    memset(cfg, 0, sizeof(*cfg));
}

gw_source_t *gw_config_find_source(const gw_config_t *cfg, const char *provider, const char *name, size_t len)
{
    if (name == NULL)
        name = "default", len = 7;
    for (size_t i = 0; i != cfg->nsources; ++i) {
        gw_source_t *src = &cfg->sources[i];
        if (strcmp(src->connector->name, provider) == 0 && strlen(src->name) == len &&
            memcmp(src->name, name, len) == 0)
            return src;
    }
    return NULL;
}

const char *gw_config_api_key(const gw_config_t *cfg, const char *provider, const char *source)
{
    const gw_source_t *src = gw_config_find_source(cfg, provider, source, source != NULL ? strlen(source) : 0);
    if (src != NULL && src->api_key != NULL)
        return src->api_key;
    const char *key = strcmp(provider, "stripe") == 0       ? cfg->stripe_secret_key
                      : strcmp(provider, "gocardless") == 0 ? cfg->gocardless_access_token
                                                            : NULL;
    return key != NULL && key[0] != '\0' ? key : NULL;
}

void gw_config_portal_base(const gw_config_t *cfg, char *out, size_t len)
{
    const char *url = cfg->portal_url;
    if (url != NULL && url[0] != '\0') {
        size_t n = strlen(url);
        snprintf(out, len, "%.*s", (int)(url[n - 1] == '/' ? n - 1 : n), url);
        return;
    }
    const char *host = cfg->listen_host != NULL ? cfg->listen_host : "127.0.0.1";
    bool v6 = strchr(host, ':') != NULL;
    snprintf(out, len, "http://%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)cfg->listen_port);
}

/* Dump */

static bool is_password_keyword(const char *k, size_t len)
{
    return (len == 8 && strncasecmp(k, "password", 8) == 0) || (len == 11 && strncasecmp(k, "sslpassword", 11) == 0);
}

/* Whether the len bytes at p, the name of a URI query parameter, name a password once percent-decoded (libpq
 * decodes names too). A name that does not decode (a bad escape or %00, which libpq refuses as well) counts as
 * one: its value is hidden rather than shown. */
static bool uri_param_is_password(const char *p, size_t len)
{
    char *name = gw_xmalloc(len + 1);
    size_t n = 0;
    bool ret = gw_percent_decode(p, len, 0, name, &n) != 0 || is_password_keyword(name, n);
    free(name);
    return ret;
}

/* Prints a postgresql:// URI with the password of its user info and any password query parameter as ***. */
static void dump_conninfo_uri(FILE *out, const char *s, size_t prefix)
{
    const char *rest = s + prefix, *at = strrchr(rest, '@'), *p = rest;
    fwrite(s, 1, prefix, out);
    if (at != NULL) {
        /* user info ends at the last '@': that over-redacts a stray '@' rather than showing a raw one */
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (colon != NULL) {
            fwrite(rest, 1, (size_t)(colon - rest), out);
            fputs(":***", out);
            p = at;
        }
    }
    const char *q = strchr(p, '?');
    if (q == NULL) {
        fputs(p, out);
        return;
    }
    fwrite(p, 1, (size_t)(q + 1 - p), out);
    for (p = q + 1;;) {
        const char *amp = strchr(p, '&'), *end = amp != NULL ? amp : p + strlen(p),
                   *eq = memchr(p, '=', (size_t)(end - p));
        if (eq != NULL && uri_param_is_password(p, (size_t)(eq - p))) {
            fwrite(p, 1, (size_t)(eq + 1 - p), out);
            fputs("***", out);
        } else {
            fwrite(p, 1, (size_t)(end - p), out);
        }
        if (amp == NULL)
            break;
        fputc('&', out);
        p = amp + 1;
    }
}

/* Prints a key=value connection string with password values as ***; anything it cannot parse as ***. */
static void dump_conninfo_kv(FILE *out, const char *p)
{
    while (*p != '\0') {
        const char *k = p;
        while (*p != '\0' && is_space(*p))
            ++p;
        fwrite(k, 1, (size_t)(p - k), out);
        if (*p == '\0')
            break;
        k = p;
        while (*p != '\0' && !is_space(*p) && *p != '=')
            ++p;
        size_t klen = (size_t)(p - k);
        while (*p != '\0' && is_space(*p))
            ++p;
        if (*p != '=') {
            fputs("***", out); /* not key=value: show nothing of the rest */
            return;
        }
        ++p;
        while (*p != '\0' && is_space(*p))
            ++p;
        const char *v = p;
        if (*p == '\'') {
            for (++p; *p != '\0' && *p != '\''; ++p)
                if (*p == '\\' && p[1] != '\0')
                    ++p;
            if (*p == '\'')
                ++p;
        } else {
            for (; *p != '\0' && !is_space(*p); ++p)
                if (*p == '\\' && p[1] != '\0')
                    ++p;
        }
        fwrite(k, 1, klen, out);
        fputc('=', out);
        if (is_password_keyword(k, klen))
            fputs("***", out);
        else
            fwrite(v, 1, (size_t)(p - v), out);
    }
}

/* Prints a URL (scheme://[userinfo@]host...) with the password of its user info as ***: "user:***@" when the user
 * info has a user name, else "***@" (a redis:// URL without a colon is all password, and a bare user of an http://
 * URL is most likely a token). As for the database, the user info ends at the last '@', so a stray '@' or '/' in
 * a password over-redacts rather than shows part of it. Anything that is not scheme:// is printed as it is. */
static void dump_url(FILE *out, const char *s)
{
    const char *sep = strstr(s, "://"), *at = sep != NULL ? strrchr(sep + 3, '@') : NULL;
    if (at == NULL) {
        fputs(s, out);
        return;
    }
    const char *info = sep + 3, *colon = memchr(info, ':', (size_t)(at - info));
    fwrite(s, 1, (size_t)(info - s), out);
    if (colon != NULL)
        fwrite(info, 1, (size_t)(colon + 1 - info), out); /* the user name, if any, and the colon */
    fputs("***", out);
    fputs(at, out);
}

static void dump_conninfo(FILE *out, const char *s)
{
    if (strncmp(s, "postgresql://", 13) == 0)
        dump_conninfo_uri(out, s, 13);
    else if (strncmp(s, "postgres://", 11) == 0)
        dump_conninfo_uri(out, s, 11);
    else
        dump_conninfo_kv(out, s);
}

static void dump_redacted(FILE *out, size_t count)
{
    if (count == 0)
        fputs("<unset>", out);
    else
        fprintf(out, "<redacted: %zu value%s>", count, count == 1 ? "" : "s");
}

static void dump_upper(FILE *out, const char *s)
{
    for (; *s != '\0'; ++s)
        fputc(*s >= 'a' && *s <= 'z' ? *s - 'a' + 'A' : *s, out);
}

void gw_config_dump(const gw_config_t *cfg, FILE *out)
{
    for (size_t i = 0; i != NSETTINGS; ++i) {
        const setting_t *s = &settings[i];
        const void *field = (const char *)cfg + (s->offset != NO_FIELD ? s->offset : 0);
        fprintf(out, "%s=", s->name);
        if (s->flags & F_SECRET) {
            /* of a secret, only whether and how many */
            const gw_source_t *src =
                s->connector != NULL ? gw_config_find_source(cfg, s->connector->name, "default", 7) : NULL;
            dump_redacted(out, s->connector != NULL ? (src != NULL ? src->secrets.count : 0)
                                                    : *(char *const *)field != NULL);
            fputc('\n', out);
            continue;
        }
        switch (s->type) {
        case T_PATH:
        case T_STRING:
        case T_SLUG:
            if (*(char *const *)field != NULL)
                fputs(*(char *const *)field, out);
            break;
        case T_URL:
        case T_REDIS_URL:
            if (*(char *const *)field != NULL)
                dump_url(out, *(char *const *)field);
            break;
        case T_CONNINFO:
            if (*(char *const *)field != NULL)
                dump_conninfo(out, *(char *const *)field);
            break;
        case T_INT:
            fprintf(out, "%d", *(const int *)field);
            break;
        case T_SIZE:
            fprintf(out, "%zu", *(const size_t *)field);
            break;
        case T_BOOL:
            fputs(*(const bool *)field ? "true" : "false", out);
            break;
        case T_LOG_LEVEL:
            fputs(log_level_names[*(const enum gw_log_level *)field], out);
            break;
        case T_LISTEN:
            if (cfg->listen_host != NULL)
                fprintf(out, strchr(cfg->listen_host, ':') != NULL ? "[%s]:%u" : "%s:%u", cfg->listen_host,
                        (unsigned)cfg->listen_port);
            break;
        case T_OPS_LISTEN:
            if (cfg->ops_listen_host == NULL)
                fputs("off", out);
            else
                fprintf(out, strchr(cfg->ops_listen_host, ':') != NULL ? "[%s]:%u" : "%s:%u", cfg->ops_listen_host,
                        (unsigned)cfg->ops_listen_port);
            break;
        case T_SECRET:
        case T_WEBHOOK_KEY:
        case T_WEBHOOK_SECRETS:
            break; /* secrets by type: flagged F_SECRET in the table, printed above */
        case T_SCHEDULE: {
            char buf[GW_RETRY_SCHEDULE_MAX * 12];
            fputs(gw_retry_schedule_format((const gw_retry_schedule_t *)field, buf, sizeof(buf)), out);
            break;
        }
        }
        fputc('\n', out);
    }

    /* the per-source settings, then a summary of every source as comments */
    for (size_t i = 0; i != cfg->nsources; ++i) {
        const gw_source_t *src = &cfg->sources[i];
        if (strcmp(src->name, "default") == 0)
            continue;
        fprintf(out, "%s__", webhook_setting(src->connector)->name);
        dump_upper(out, src->name);
        fputc('=', out);
        dump_redacted(out, src->secrets.count);
        fputc('\n', out);
        if (src->api_key != NULL) {
            fputs(strcmp(src->connector->name, "stripe") == 0 ? "SETTLED_STRIPE_SECRET_KEY__"
                                                              : "SETTLED_GOCARDLESS_ACCESS_TOKEN__",
                  out);
            dump_upper(out, src->name);
            fputc('=', out);
            dump_redacted(out, 1);
            fputc('\n', out);
        }
    }
    for (size_t i = 0; i != cfg->nsources; ++i) {
        const gw_source_t *src = &cfg->sources[i];
        bool seen = strcmp(src->name, "default") == 0;
        for (size_t j = 0; j != i && !seen; ++j)
            seen = strcmp(cfg->sources[j].name, src->name) == 0;
        if (seen)
            continue;
        fputs("SETTLED_ORGANISATION__", out);
        dump_upper(out, src->name);
        fprintf(out, "=%s\n", src->organisation);
    }
    if (cfg->nsources == 0)
        fputs("# no webhook sources: set SETTLED_STRIPE_WEBHOOK_SECRETS, SETTLED_XERO_WEBHOOK_KEY or "
              "SETTLED_GOCARDLESS_WEBHOOK_SECRETS\n",
              out);
    for (size_t i = 0; i != cfg->nsources; ++i) {
        const gw_source_t *src = &cfg->sources[i];
        bool dflt = strcmp(src->name, "default") == 0;
        fprintf(out, "# source %s/%s: POST /webhooks/%s%s%s, organisation %s, %zu secret%s\n", src->connector->name,
                src->name, src->connector->name, dflt ? "" : "/", dflt ? "" : src->name, src->organisation,
                src->secrets.count, src->secrets.count == 1 ? "" : "s");
    }
}

void gw_config_list_keys(FILE *out)
{
    for (size_t i = 0; i != NSETTINGS; ++i) {
        fprintf(out, "%s\n", settings[i].name);
        if (settings[i].flags & F_PER_SOURCE)
            fprintf(out, "%s__<SOURCE>\n", settings[i].name);
    }
}
