/* SPDX-License-Identifier: MIT */
/*
 * connector.h: the one interface every provider (Stripe, Xero, GoCardless) fills, so that the
 * gateway handles all of them with the same code and includes nothing provider-specific.
 *
 * A connector knows no gateway code. What it needs from its host (a MAC, a constant-time compare,
 * memory) it receives through the structures below. verify() and parse() are pure: no I/O, no
 * globals written, every allocation from the allocator they are given.
 */
#ifndef CN_CONNECTOR_H
#define CN_CONNECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A byte string that is never assumed to be NUL-terminated. base is NULL when absent. */
typedef struct st_cn_str_t {
    const char *base;
    size_t len;
} cn_str_t;

#define CN_STR_LIT(s) ((cn_str_t){(s), sizeof(s) - 1})

/* What the host lends a connector. */
typedef struct st_cn_host_t {
    /* Computes HMAC-SHA256 with key over the concatenation of nparts parts and writes 32 bytes to
     * out. Returns 0, or -1 if the MAC could not be computed (the connector then rejects). */
    int (*hmac_sha256)(const void *key, size_t keylen, const cn_str_t *parts, size_t nparts, unsigned char out[32]);
    /* Compares len bytes of a and b in time that does not depend on their contents. */
    bool (*equal)(const void *a, const void *b, size_t len);
} cn_host_t;

/* An allocator, typically a request's memory pool. alloc never returns NULL (it aborts instead). */
typedef struct st_cn_alloc_t {
    void *(*alloc)(void *ctx, size_t size);
    void *ctx;
} cn_alloc_t;

/* The secrets active for one source; a request passes if any of them matches. */
typedef struct st_cn_secrets_t {
    const cn_str_t *keys;
    size_t count;
} cn_secrets_t;

/* Everything verify() looks at. */
typedef struct st_cn_verify_input_t {
    cn_str_t body;      /* the raw request body, exactly as received */
    cn_str_t signature; /* the value of the connector's signature header; base == NULL if absent */
    const cn_secrets_t *secrets;
    int64_t now;       /* the current time, unix seconds */
    int64_t tolerance; /* maximum age of a signed timestamp in seconds; 0 disables the check */
} cn_verify_input_t;

/* One event of a delivery, normalised. Every string is copied into the allocator given to parse()
 * and is valid UTF-8 without NUL bytes; base is NULL when the field does not apply. */
typedef struct st_cn_event_t {
    cn_str_t event_id;    /* the provider's event id; for Xero a key derived from the event's fields */
    cn_str_t event_type;  /* e.g. "payment_intent.succeeded", "INVOICE.UPDATE", "payments.confirmed" */
    cn_str_t account;     /* Stripe Connect account, Xero tenantId, GoCardless organisation or creditor */
    cn_str_t resource_id; /* the id of the object the event is about, when the payload names it */
    /* NULL for an event to process; else a static sentence saying why it is stored but not processed: the intake
     * stores it as 'ignored' with this reason (e.g. a Stripe thin event). Honoured for deliveries of one event (every
     * Stripe delivery); a connector that parses batches leaves it NULL */
    const char *ignore_reason;
} cn_event_t;

/* Limits on the normalised fields; parse() rejects an event whose field exceeds them. */
#define CN_MAX_EVENT_ID 255
#define CN_MAX_FIELD 255

/*
 * Error codes. Functions return one of these constants (or NULL for success); callers compare them
 * by pointer, never by string. The text of each is the stable machine code that docs/ lists.
 */
extern const char cn_err_signature_missing[];   /* "signature_missing": no signature header */
extern const char cn_err_signature_malformed[]; /* "signature_malformed": header present but unparseable */
extern const char cn_err_signature_mismatch[];  /* "signature_mismatch": no active secret produces it */
extern const char cn_err_timestamp_stale[];     /* "timestamp_stale": Stripe t= older than the tolerance */
extern const char cn_err_no_secret[];           /* "no_secret": the source has no secret configured */
extern const char cn_err_body_malformed[];      /* "body_malformed": not JSON, or not the provider's envelope */
extern const char cn_err_event_invalid[];       /* "event_invalid": an event lacks a required field or is too long */

/* Processing. A connector plans the API calls that bring the objects named by stored events up to date;
 * the host makes the calls (with its quotas and tokens) and applies the records it gets back. */

/* One API call, relative to the provider's API base (e.g. SETTLED_XERO_API_BASE). */
typedef struct st_cn_fetch_t {
    char path[2400];         /* path and query, e.g. "/api.xro/2.0/Invoices?IDs=...&page=1" */
    const char *record_kind; /* what the response holds: "xero.invoices", "xero.contacts", "xero.creditnotes" */
} cn_fetch_t;

#define CN_FETCH_MAX_IDS 50 /* ids per list call (keeps URLs short) */
#define CN_PAGE_SIZE 100    /* records per page of a list call */

typedef struct st_cn_connector_t {
    const char *name;             /* "stripe", "xero", "gocardless": also the provider column's value */
    const char *signature_header; /* lower-case name of the header holding the signature */
    int status_accepted;          /* what a stored (or duplicate) delivery is answered with: 200 or 204 */
    int status_bad_signature;     /* what a failed signature check is answered with: 400, 401 or 498 */
    bool bare_replies;            /* replies carry no body at all (Xero's intent-to-receive rules) */
    /* a correctly signed body that parse() refuses is still stored (as one 'ignored' event whose id is derived from
     * the body's SHA-256, with parse's reason) and answered status_accepted, never 400: for providers that disable
     * an endpoint that refuses a correctly signed payload (Xero's intent-to-receive) */
    bool store_unparsable;
    /* Checks in->signature against in->body with each of in->secrets, in constant time, before anything
     * is parsed. Returns NULL when one secret matches, else one of the cn_err_* constants. */
    const char *(*verify)(const cn_host_t *host, const cn_verify_input_t *in);
    /* Parses a verified body into *events (allocated from alloc; *count may be 0, e.g. Xero's
     * intent-to-receive). Returns NULL on success, else cn_err_body_malformed or cn_err_event_invalid,
     * with *detail pointing at a static sentence saying what was wrong. Never writes partial results
     * on failure. */
    const char *(*parse)(cn_str_t body, const cn_alloc_t *alloc, cn_event_t **events, size_t *count,
                         const char **detail);
    /* Plans the fetches for events of one account, all of event type event_type, about the objects ids[0..nids).
     * Coalesces the ids (CN_FETCH_MAX_IDS per call, duplicates once); ids that are not well-formed object ids are
     * left out. Returns the number of fetches written to out (at most nout), 0 when the event type needs no
     * fetch (it is done as is), or -1 when there is nothing to plan for this provider. May be NULL. */
    int (*plan_fetches)(cn_str_t event_type, const cn_str_t *ids, size_t nids, cn_fetch_t *out, size_t nout);
    /* Why events of event_type are not processed (a static sentence, stored as the event's reason when it is marked
     * ignored), or NULL when the connector processes them. May be NULL: every type is processed. */
    const char *(*ignore_reason)(cn_str_t event_type);
    /* Plans page (from 1) of a list of every record of record_kind; the host adds If-Modified-Since. Returns 0,
     * or -1 for an unknown kind. May be NULL. */
    int (*plan_sync_page)(const char *record_kind, int page, cn_fetch_t *out);
    /* Counts the records of record_kind in a fetched body; -1 if the body is not the provider's envelope. */
    long (*count_records)(const char *record_kind, cn_str_t body);
} cn_connector_t;

extern const cn_connector_t cn_stripe_connector;
extern const cn_connector_t cn_xero_connector;
extern const cn_connector_t cn_gocardless_connector;

/* Helpers shared by the connectors (connector.c). */

/* Decodes exactly 64 hex digits (either case) into 32 bytes. Returns 0, or -1 if s is not that. */
int cn_hex32_decode(cn_str_t s, unsigned char out[32]);
/* Encodes 32 bytes as standard base64 with padding (44 chars + NUL). */
void cn_base64_32_encode(const unsigned char in[32], char out[45]);
/* Copies s into alloc as a NUL-terminated string and returns the copy with its length. */
cn_str_t cn_strdup(const cn_alloc_t *alloc, const char *s, size_t len);

/*
 * Parsing shared by the connectors (connector.c). Every parse() is the same skeleton: the body is JSON (a repeated
 * key refuses it), it has the provider's envelope, and each event object in it becomes one cn_event_t. A connector
 * supplies only what is its own: which fields make an event (member paths), and how they are checked and combined.
 * The body is checked whole but never built into a tree: only the asked-for strings are decoded (json_scan.h).
 */

/* What a delivery's body holds. */
typedef enum en_cn_body_shape_t {
    CN_BODY_EVENT,  /* one event object (Stripe) */
    CN_BODY_EVENTS, /* an object whose "events" member is an array of event objects, maybe empty (Xero, GoCardless) */
} cn_body_shape_t;

/* One asked-for member of an event object. */
typedef enum en_cn_jv_kind_t {
    CN_JV_ABSENT, /* not there, or a step of its path is not an object (as a chain of json_object_get) */
    CN_JV_NULL,
    CN_JV_STRING,
    CN_JV_OTHER, /* a number, a boolean, an object or an array */
} cn_jv_kind_t;

typedef struct st_cn_jv_t {
    cn_jv_kind_t kind;
    cn_str_t s; /* CN_JV_STRING: the decoded value, NUL-terminated, in the parse's allocator, with no NUL inside */
} cn_jv_t;

/* The fields of an event a connector asks for: member paths relative to the event object, dotted ("data.object.id");
 * at most CN_SCAN_FIELDS_MAX of them. */
typedef struct st_cn_fields_t {
    const char *const *paths;
    size_t count;
} cn_fields_t;

/* Turns one event's fields (fields[i] is paths[i] of the event) into *out, which arrives with every member absent
 * (base NULL). The strings of fields already live in alloc, so *out may point into them. Returns NULL, or a static
 * sentence saying what is wrong with the event (it then refuses the delivery). */
typedef const char *(*cn_event_parser_t)(const cn_jv_t *fields, const cn_alloc_t *alloc, cn_event_t *out);

/*
 * Parses a verified body of the given shape, calling parse_event on each event object in order until one is refused.
 * On success returns NULL and sets *events (allocated from alloc; NULL when *count is 0) and *count. Else returns
 * cn_err_body_malformed (not JSON, a repeated key, not the envelope) or cn_err_event_invalid (an element of the array
 * is not an object, or parse_event refused one), and leaves *events and *count as they were. Either way *detail, when
 * detail is not NULL, is set to NULL or to the static sentence saying what was wrong. This is the parse() contract of
 * cn_connector_t, so a connector's parse() is one call to it.
 */
__attribute__((warn_unused_result)) const char *cn_parse_events(cn_str_t body, const cn_alloc_t *alloc,
                                                                cn_body_shape_t shape, const cn_fields_t *fields,
                                                                cn_event_parser_t parse_event, cn_event_t **events,
                                                                size_t *count, const char **detail);

/* Whether v is a string of at least one byte. */
bool cn_jv_is_nonempty_string(const cn_jv_t *v);
/* Whether v is a string of printable ASCII only (no space, control or non-ASCII byte), so that it makes a clean
 * inbox key. The empty string is one; callers that need a value check cn_jv_is_nonempty_string too. */
bool cn_jv_is_token(const cn_jv_t *v);
/* Sets *out to v if it is a string of 1..CN_MAX_FIELD bytes; leaves *out absent (base NULL) when v is absent, null,
 * of another type or empty. Returns 0, or -1 (with *out absent) only when v is a longer string. */
__attribute__((warn_unused_result)) int cn_jv_optional(const cn_jv_t *v, cn_str_t *out);
/* Joins the strings parts[0..n) (n >= 1) with sep into alloc, ASCII-upper-casing part i when bit i of upper is
 * set, and returns the NUL-terminated result with its length. */
cn_str_t cn_jv_join(const cn_alloc_t *alloc, const cn_jv_t *const *parts, size_t n, char sep, unsigned upper);

#endif
