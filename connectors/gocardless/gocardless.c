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

static const char *resource_link(json_t *resource_type)
{
    for (size_t i = 0; i != sizeof(resource_links) / sizeof(resource_links[0]); ++i)
        if (strcmp(json_string_value(resource_type), resource_links[i].resource_type) == 0)
            return resource_links[i].link;
    return NULL;
}

static bool is_nonempty_string(json_t *v)
{
    return json_is_string(v) && json_string_length(v) != 0;
}

/* GoCardless ids (EV..., PM..., OR...) are upper-case ASCII; refusing controls, spaces and non-ASCII keeps the inbox
 * key clean. */
static bool is_printable_token(const char *s, size_t len)
{
    for (size_t i = 0; i != len; ++i)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* The fields of one event; optional ones are NULL when absent, empty or not strings. */
typedef struct st_cn_gocardless_fields_t {
    json_t *id, *resource_type, *action, *account, *resource;
} cn_gocardless_fields_t;

/* Checks one event and points *f at its fields. Returns NULL or the sentence saying what is wrong. */
static const char *check_event(json_t *event, cn_gocardless_fields_t *f)
{
    if (!json_is_object(event))
        return "An event is not a JSON object.";
    f->id = json_object_get(event, "id");
    f->resource_type = json_object_get(event, "resource_type");
    f->action = json_object_get(event, "action");
    if (!is_nonempty_string(f->id) || !is_nonempty_string(f->resource_type) || !is_nonempty_string(f->action))
        return "An event lacks one of the strings id, resource_type, action.";
    if (json_string_length(f->id) > CN_MAX_EVENT_ID ||
        !is_printable_token(json_string_value(f->id), json_string_length(f->id)))
        return "An event's \"id\" is longer than 255 bytes or not printable ASCII.";
    if (json_string_length(f->resource_type) + 1 + json_string_length(f->action) > CN_MAX_FIELD)
        return "An event's resource_type.action is longer than 255 bytes.";

    json_t *links = json_object_get(event, "links");
    const char *link = resource_link(f->resource_type);
    f->account = json_object_get(links, "organisation");
    if (!is_nonempty_string(f->account))
        f->account = json_object_get(links, "creditor");
    if (!is_nonempty_string(f->account))
        f->account = NULL;
    f->resource = link != NULL ? json_object_get(links, link) : NULL;
    if (!is_nonempty_string(f->resource))
        f->resource = NULL;
    if ((f->account != NULL && json_string_length(f->account) > CN_MAX_FIELD) ||
        (f->resource != NULL && json_string_length(f->resource) > CN_MAX_FIELD))
        return "An event's organisation, creditor or resource link is longer than 255 bytes.";
    return NULL;
}

static cn_str_t copy_or_absent(const cn_alloc_t *alloc, json_t *v)
{
    return v != NULL ? cn_strdup(alloc, json_string_value(v), json_string_length(v)) : (cn_str_t){NULL, 0};
}

/* One delivery may hold several unrelated events (or none); each becomes one event, in the order sent. */
static const char *cn_gocardless_parse(cn_str_t body, const cn_alloc_t *alloc, cn_event_t **events, size_t *count,
                                       const char **detail)
{
    const char *err = NULL, *why = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(body.base != NULL ? body.base : "", body.len, JSON_REJECT_DUPLICATES, &jerr), *list;
    cn_event_t *evs = NULL;
    size_t n = 0;

    if (root == NULL) {
        err = cn_err_body_malformed;
        why = "The body is not valid JSON (or repeats a key).";
        goto Exit;
    }
    if (!json_is_object(root) || !json_is_array(list = json_object_get(root, "events"))) {
        err = cn_err_body_malformed;
        why = "The body is not a JSON object with an \"events\" array.";
        goto Exit;
    }

    n = json_array_size(list);
    for (size_t i = 0; i != n; ++i) {
        cn_gocardless_fields_t f;
        if ((why = check_event(json_array_get(list, i), &f)) != NULL) {
            err = cn_err_event_invalid;
            goto Exit;
        }
    }
    if (n != 0) {
        evs = alloc->alloc(alloc->ctx, n * sizeof(*evs));
        for (size_t i = 0; i != n; ++i) {
            cn_gocardless_fields_t f;
            (void)check_event(json_array_get(list, i), &f); /* passed above */
            size_t tlen = json_string_length(f.resource_type), alen = json_string_length(f.action);
            char *type = alloc->alloc(alloc->ctx, tlen + 1 + alen + 1);
            memcpy(type, json_string_value(f.resource_type), tlen);
            type[tlen] = '.';
            memcpy(type + tlen + 1, json_string_value(f.action), alen);
            type[tlen + 1 + alen] = '\0';
            evs[i].event_id = copy_or_absent(alloc, f.id);
            evs[i].event_type = (cn_str_t){type, tlen + 1 + alen};
            evs[i].account = copy_or_absent(alloc, f.account);
            evs[i].resource_id = copy_or_absent(alloc, f.resource);
        }
    }
    *events = evs;
    *count = n;

Exit:
    if (detail != NULL)
        *detail = why;
    json_decref(root);
    return err;
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
