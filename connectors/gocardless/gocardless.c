/* SPDX-License-Identifier: MIT */
/* gocardless.c: checks GoCardless's hex `Webhook-Signature` and splits a GoCardless batch into one event each. */
#include "connector.h"
#include <stdio.h>
#include <string.h>

/*
 * hex(HMAC-SHA256(secret, body)), either case. A value that is not 64 hex digits (base64, truncated) is a mismatch
 * rather than malformed, so that it is answered like every other bad signature (498). Every secret is tried, without
 * stopping at the first match.
 */
static const char *cn_gocardless_verify(const cn_host_t *host, const cn_verify_input_t *in)
{
    size_t nsecrets = 0;
    if (in->secrets != NULL)
        for (size_t i = 0; i != in->secrets->count; ++i)
            if (in->secrets->keys[i].base != NULL && in->secrets->keys[i].len != 0)
                ++nsecrets;
    if (nsecrets == 0)
        return cn_err_no_secret;
    if (in->signature.base == NULL)
        return cn_err_signature_missing;

    unsigned char given[32];
    if (cn_hex32_decode(in->signature, given) != 0)
        return cn_err_signature_mismatch;
    bool matched = false;
    for (size_t i = 0; i != in->secrets->count; ++i) {
        const cn_str_t *secret = in->secrets->keys + i;
        if (secret->base == NULL || secret->len == 0)
            continue;
        unsigned char mac[32];
        if (host->hmac_sha256(secret->base, secret->len, &in->body, 1, mac) != 0)
            return cn_err_signature_mismatch;
        matched |= host->equal(mac, given, 32);
    }
    return matched ? NULL : cn_err_signature_mismatch;
}

/* The fields an event is read for: its id, type and the links that name its account and its object. */
enum {
    F_ID,
    F_RESOURCE_TYPE,
    F_ACTION,
    F_ORGANISATION,
    F_CREDITOR, /* also the resource link of creditors */
    F_LINKS,    /* the first resource link; resource_links[i] is F_LINKS + i */
};

/* The link naming the object an event is about, by resource_type. Types not listed here get no resource_id. */
static const struct {
    const char *resource_type;
    unsigned field;
} resource_links[] = {
    {"payments", F_LINKS + 0},      {"mandates", F_LINKS + 1},
    {"refunds", F_LINKS + 2},       {"payouts", F_LINKS + 3},
    {"subscriptions", F_LINKS + 4}, {"billing_requests", F_LINKS + 5},
    {"customers", F_LINKS + 6},     {"instalment_schedules", F_LINKS + 7},
    {"creditors", F_CREDITOR},
};

static const char *const paths[] = {
    "id",
    "resource_type",
    "action",
    "links.organisation",
    "links.creditor",
    "links.payment",
    "links.mandate",
    "links.refund",
    "links.payout",
    "links.subscription",
    "links.billing_request",
    "links.customer",
    "links.instalment_schedule",
};
static const cn_fields_t fields = {paths, sizeof(paths) / sizeof(paths[0])};

static const cn_jv_t *resource_link(const cn_jv_t *f)
{
    for (size_t i = 0; i != sizeof(resource_links) / sizeof(resource_links[0]); ++i)
        if (strcmp(f[F_RESOURCE_TYPE].s.base, resource_links[i].resource_type) == 0)
            return &f[resource_links[i].field];
    return NULL;
}

/*
 * The event type is "<resource_type>.<action>". The account is the organisation link, else the creditor link; the
 * resource id is the link that resource_links names. Links that are absent, empty or not strings are left out.
 */
static const char *on_event(const cn_jv_t *f, const cn_alloc_t *alloc, cn_event_t *out)
{
    if (!cn_jv_is_nonempty_string(&f[F_ID]) || !cn_jv_is_nonempty_string(&f[F_RESOURCE_TYPE]) ||
        !cn_jv_is_nonempty_string(&f[F_ACTION]))
        return "An event lacks one of the strings id, resource_type, action.";
    /* GoCardless ids (EV..., PM..., OR...) are upper-case ASCII */
    if (f[F_ID].s.len > CN_MAX_EVENT_ID || !cn_jv_is_token(&f[F_ID]))
        return "An event's \"id\" is longer than 255 bytes or not printable ASCII.";
    if (f[F_RESOURCE_TYPE].s.len + 1 + f[F_ACTION].s.len > CN_MAX_FIELD)
        return "An event's resource_type.action is longer than 255 bytes.";

    const cn_jv_t *link = resource_link(f), absent = {CN_JV_ABSENT, {NULL, 0}};
    if (cn_jv_optional(&f[F_ORGANISATION], &out->account) != 0 ||
        (out->account.base == NULL && cn_jv_optional(&f[F_CREDITOR], &out->account) != 0) ||
        cn_jv_optional(link != NULL ? link : &absent, &out->resource_id) != 0)
        return "An event's organisation, creditor or resource link is longer than 255 bytes.";

    const cn_jv_t *type[2] = {&f[F_RESOURCE_TYPE], &f[F_ACTION]};
    out->event_id = f[F_ID].s;
    out->event_type = cn_jv_join(alloc, type, 2, '.', 0);
    return NULL;
}

/* One delivery may hold several unrelated events (or none); each becomes one event, in the order sent. */
static const char *cn_gocardless_parse(cn_str_t body, const cn_alloc_t *alloc, cn_event_t **events, size_t *count,
                                       const char **detail)
{
    return cn_parse_events(body, alloc, CN_BODY_EVENTS, &fields, on_event, events, count, detail);
}

/* The event types settled processes ("<resource_type>.<action>", PROVIDERS.md 3.8), and the object each names. */
static const struct {
    const char *resource_type;
    const char *actions; /* space-separated; "*" for every action */
    const char *record_kind;
} cn_gocardless_handled[] = {
    {"payments",
     "created customer_approval_granted customer_approval_denied submitted confirmed paid_out failed cancelled "
     "charged_back chargeback_cancelled chargeback_settled late_failure_settled resubmission_requested",
     "gocardless.payment"},
    {"refunds", "created paid failed refund_settled", "gocardless.refund"},
    {"mandates", "created submitted active reinstated transferred cancelled failed expired consumed replaced",
     "gocardless.mandate"},
    {"customers", "*", "gocardless.customer"},
    {"billing_requests", "fulfilled", "gocardless.billing_request"},
};
#define CN_GOCARDLESS_NHANDLED (sizeof(cn_gocardless_handled) / sizeof(cn_gocardless_handled[0]))

static bool word_in(const char *words, const char *w, size_t len)
{
    if (strcmp(words, "*") == 0)
        return len != 0;
    for (const char *p = words; *p != '\0';) {
        const char *end = strchr(p, ' ');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (n == len && memcmp(p, w, len) == 0)
            return true;
        p += n + (end != NULL);
    }
    return false;
}

static int cn_gocardless_handled_index(cn_str_t type)
{
    const char *dot = type.base != NULL ? memchr(type.base, '.', type.len) : NULL;
    if (dot == NULL)
        return -1;
    size_t rlen = (size_t)(dot - type.base);
    for (size_t i = 0; i != CN_GOCARDLESS_NHANDLED; ++i)
        if (strlen(cn_gocardless_handled[i].resource_type) == rlen &&
            memcmp(cn_gocardless_handled[i].resource_type, type.base, rlen) == 0 &&
            word_in(cn_gocardless_handled[i].actions, dot + 1, type.len - rlen - 1))
            return (int)i;
    return -1;
}

static const char *cn_gocardless_ignore_reason(cn_str_t event_type)
{
    return cn_gocardless_handled_index(event_type) >= 0
               ? NULL
               : "settled does not use this GoCardless event type (docs/providers.md)";
}

/* A GoCardless id: upper-case letters and digits (PM0001..., MD..., CU...), at most 64 bytes. */
static bool cn_gocardless_is_id(cn_str_t s)
{
    if (s.base == NULL || s.len == 0 || s.len > 64)
        return false;
    for (size_t i = 0; i != s.len; ++i)
        if (!((s.base[i] >= '0' && s.base[i] <= '9') || (s.base[i] >= 'A' && s.base[i] <= 'Z')))
            return false;
    return true;
}

/* One GET per distinct id: GoCardless reads objects by id one at a time. */
static int cn_gocardless_plan_fetches(cn_str_t event_type, const cn_str_t *ids, size_t nids, cn_fetch_t *out,
                                      size_t nout)
{
    int k = cn_gocardless_handled_index(event_type);
    if (k < 0)
        return 0;
    size_t nfetch = 0;
    for (size_t i = 0; i != nids && nfetch != nout; ++i) {
        if (!cn_gocardless_is_id(ids[i]))
            continue;
        bool seen = false;
        for (size_t j = 0; j != i && !seen; ++j)
            seen = ids[j].len == ids[i].len && memcmp(ids[j].base, ids[i].base, ids[i].len) == 0;
        if (seen)
            continue;
        cn_fetch_t *f = &out[nfetch++];
        f->record_kind = cn_gocardless_handled[k].record_kind;
        snprintf(f->path, sizeof(f->path), "/%s/%.*s", cn_gocardless_handled[k].resource_type, (int)ids[i].len,
                 ids[i].base);
    }
    return (int)nfetch;
}

const cn_connector_t cn_gocardless_connector = {
    .name = "gocardless",
    .signature_header = "webhook-signature",
    .status_accepted = 204,
    .status_bad_signature = 498,
    .bare_replies = false,
    .verify = cn_gocardless_verify,
    .parse = cn_gocardless_parse,
    .plan_fetches = cn_gocardless_plan_fetches,
    .ignore_reason = cn_gocardless_ignore_reason,
};
