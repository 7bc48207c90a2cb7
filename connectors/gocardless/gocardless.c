/* SPDX-License-Identifier: MIT */
/* gocardless.c: checks GoCardless's hex `Webhook-Signature` and splits a GoCardless batch into one event each. */
#include "connector.h"
#include <jansson.h>
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

/* The link naming the object an event is about, by resource_type. Types not listed here get no resource_id. */
static const struct {
    const char *resource_type, *link;
} resource_links[] = {
    {"payments", "payment"},
    {"mandates", "mandate"},
    {"refunds", "refund"},
    {"payouts", "payout"},
    {"subscriptions", "subscription"},
    {"billing_requests", "billing_request"},
    {"customers", "customer"},
    {"instalment_schedules", "instalment_schedule"},
    {"creditors", "creditor"},
};

static const char *resource_link(const json_t *resource_type)
{
    for (size_t i = 0; i != sizeof(resource_links) / sizeof(resource_links[0]); ++i)
        if (strcmp(json_string_value(resource_type), resource_links[i].resource_type) == 0)
            return resource_links[i].link;
    return NULL;
}

/*
 * The event type is "<resource_type>.<action>". The account is the organisation link, else the creditor link; the
 * resource id is the link that resource_links names. Links that are absent, empty or not strings are left out.
 */
static const char *on_event(const json_t *event, const cn_alloc_t *alloc, cn_event_t *out)
{
    const json_t *id = json_object_get(event, "id"), *resource_type = json_object_get(event, "resource_type"),
                 *action = json_object_get(event, "action");
    if (!cn_json_is_nonempty_string(id) || !cn_json_is_nonempty_string(resource_type) ||
        !cn_json_is_nonempty_string(action))
        return "An event lacks one of the strings id, resource_type, action.";
    /* GoCardless ids (EV..., PM..., OR...) are upper-case ASCII */
    if (json_string_length(id) > CN_MAX_EVENT_ID || !cn_json_is_token(id))
        return "An event's \"id\" is longer than 255 bytes or not printable ASCII.";
    if (json_string_length(resource_type) + 1 + json_string_length(action) > CN_MAX_FIELD)
        return "An event's resource_type.action is longer than 255 bytes.";

    const json_t *links = json_object_get(event, "links");
    const char *link = resource_link(resource_type);
    if (cn_json_copy_optional(alloc, json_object_get(links, "organisation"), &out->account) != 0 ||
        (out->account.base == NULL &&
         cn_json_copy_optional(alloc, json_object_get(links, "creditor"), &out->account) != 0) ||
        cn_json_copy_optional(alloc, link != NULL ? json_object_get(links, link) : NULL, &out->resource_id) != 0)
        return "An event's organisation, creditor or resource link is longer than 255 bytes.";

    const json_t *type[2] = {resource_type, action};
    out->event_id = cn_json_copy(alloc, id);
    out->event_type = cn_json_join(alloc, type, 2, '.', 0);
    return NULL;
}

/* One delivery may hold several unrelated events (or none); each becomes one event, in the order sent. */
static const char *cn_gocardless_parse(cn_str_t body, const cn_alloc_t *alloc, cn_event_t **events, size_t *count,
                                       const char **detail)
{
    return cn_parse_events(body, alloc, CN_BODY_EVENTS, on_event, events, count, detail);
}

const cn_connector_t cn_gocardless_connector = {
    .name = "gocardless",
    .signature_header = "webhook-signature",
    .status_accepted = 204,
    .status_bad_signature = 498,
    .bare_replies = false,
    .verify = cn_gocardless_verify,
    .parse = cn_gocardless_parse,
};
