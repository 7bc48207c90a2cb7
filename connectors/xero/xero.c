/* SPDX-License-Identifier: MIT */
/* xero.c: checks Xero's base64 `x-xero-signature` and turns a Xero delivery (ids only, maybe none) into events keyed
 * by a derived id, since Xero events carry no id of their own. */
#include "connector.h"
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/*
 * The header must be exactly the 44 characters of standard padded base64 that Xero sends. Anything else (another
 * length, hex, unpadded, URL-safe) is a mismatch, never malformed: Xero's intent-to-receive check wants every wrongly
 * signed request refused the same way (401). The expected value of each key is encoded and compared in constant
 * time, without stopping at the first match.
 */
static const char *cn_xero_verify(const cn_host_t *host, const cn_verify_input_t *in)
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
    if (in->signature.len != 44)
        return cn_err_signature_mismatch;

    bool matched = false;
    for (size_t i = 0; i != in->secrets->count; ++i) {
        const cn_str_t *secret = in->secrets->keys + i;
        if (secret->base == NULL || secret->len == 0)
            continue;
        unsigned char mac[32];
        char expected[45];
        if (host->hmac_sha256(secret->base, secret->len, &in->body, 1, mac) != 0)
            return cn_err_signature_mismatch;
        cn_base64_32_encode(mac, expected);
        matched |= host->equal(expected, in->signature.base, 44);
    }
    return matched ? NULL : cn_err_signature_mismatch;
}

static bool has_byte(const cn_jv_t *v, char c)
{
    return memchr(v->s.base, c, v->s.len) != NULL;
}

enum { F_TENANT, F_RESOURCE, F_CATEGORY, F_TYPE, F_DATE, F_COUNT };
static const char *const paths[F_COUNT] = {"tenantId", "resourceId", "eventCategory", "eventType", "eventDateUtc"};
static const cn_fields_t fields = {paths, F_COUNT};

/*
 * The derived event id is "<tenantId>:<resourceId>:<EVENTCATEGORY>:<EVENTTYPE>:<eventDateUtc>", category and type
 * upper-cased because Xero's own pages show "Update" as well as "UPDATE". The sequence numbers and entropy are not
 * checked (intent-to-receive sends sequences of 0, below the schema's minimum of 1).
 */
static const char *on_event(const cn_jv_t *f, const cn_alloc_t *alloc, cn_event_t *out)
{
    const cn_jv_t *tenant = &f[F_TENANT], *resource = &f[F_RESOURCE], *category = &f[F_CATEGORY], *type = &f[F_TYPE],
                  *date = &f[F_DATE];
    if (!cn_jv_is_nonempty_string(tenant) || !cn_jv_is_nonempty_string(resource) ||
        !cn_jv_is_nonempty_string(category) || !cn_jv_is_nonempty_string(type) || !cn_jv_is_nonempty_string(date))
        return "An event lacks one of the strings resourceId, tenantId, eventCategory, eventType, eventDateUtc.";
    /* only the last part of the key (the date) may contain ':', so that two different events never share a key */
    if (has_byte(tenant, ':') || has_byte(resource, ':') || has_byte(category, ':') || has_byte(type, ':'))
        return "An event's tenantId, resourceId, eventCategory or eventType contains ':'.";
    size_t keylen = tenant->s.len + resource->s.len + category->s.len + type->s.len + date->s.len + 4;
    if (keylen > CN_MAX_EVENT_ID)
        return "An event's derived id (tenantId:resourceId:category:type:date) is longer than 255 bytes.";
    if (category->s.len + type->s.len + 1 > CN_MAX_FIELD)
        return "An event's category and type are longer than 255 bytes.";
    /* Xero ids, enums and timestamps are printable ASCII; so must the derived key be, to be a clean inbox key */
    if (!cn_jv_is_token(tenant) || !cn_jv_is_token(resource) || !cn_jv_is_token(category) || !cn_jv_is_token(type) ||
        !cn_jv_is_token(date))
        return "An event's id fields are not printable ASCII.";

    const cn_jv_t *key[5] = {tenant, resource, category, type, date}, *event_type[2] = {category, type};
    out->event_id = cn_jv_join(alloc, key, 5, ':', 1u << 2 | 1u << 3);
    out->event_type = cn_jv_join(alloc, event_type, 2, '.', 3u);
    out->account = tenant->s;
    out->resource_id = resource->s;
    return NULL;
}

static const char *cn_xero_parse(cn_str_t body, const cn_alloc_t *alloc, cn_event_t **events, size_t *count,
                                 const char **detail)
{
    return cn_parse_events(body, alloc, CN_BODY_EVENTS, &fields, on_event, events, count, detail);
}

/* The Xero accounting collections that events name, with the record kind the host applies. Invoices and credit
 * notes carry line items, whose UnitAmount Xero rounds to 2 decimals unless the call asks for unitdp=4; the mirror
 * keeps 4 (numeric(19,4)), so every call of those collections asks for it. */
static const struct {
    const char *category; /* eventCategory, upper-case */
    const char *collection;
    const char *record_kind;
    const char *query; /* query parameters every call of the collection carries, each followed by '&' */
} cn_xero_collections[] = {
    {"INVOICE", "Invoices", "xero.invoices", "unitdp=4&"},
    {"CONTACT", "Contacts", "xero.contacts", ""},
    {"CREDITNOTE", "CreditNotes", "xero.creditnotes", "unitdp=4&"},
};
#define CN_XERO_NCOLLECTIONS (sizeof(cn_xero_collections) / sizeof(cn_xero_collections[0]))

/* A Xero object id is a UUID: 36 characters of hex digits and dashes in the 8-4-4-4-12 pattern. Only such ids are
 * put into a URL. */
static bool cn_xero_is_uuid(cn_str_t s)
{
    if (s.base == NULL || s.len != 36)
        return false;
    for (size_t i = 0; i != 36; ++i) {
        char c = s.base[i];
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

static int cn_xero_plan_fetches(cn_str_t event_type, const cn_str_t *ids, size_t nids, cn_fetch_t *out, size_t nout)
{
    const char *dot = event_type.base != NULL ? memchr(event_type.base, '.', event_type.len) : NULL;
    size_t catlen = dot != NULL ? (size_t)(dot - event_type.base) : event_type.len;
    size_t k = 0;
    for (; k != CN_XERO_NCOLLECTIONS; ++k)
        if (strlen(cn_xero_collections[k].category) == catlen &&
            memcmp(cn_xero_collections[k].category, event_type.base, catlen) == 0)
            break;
    if (k == CN_XERO_NCOLLECTIONS)
        return 0; /* SUBSCRIPTION and anything new: nothing to fetch */

    size_t nfetch = 0, inbatch = 0;
    for (size_t i = 0; i != nids; ++i) {
        if (!cn_xero_is_uuid(ids[i]))
            continue;
        bool seen = false; /* the same id twice goes into the URL once */
        for (size_t j = 0; j != i && !seen; ++j)
            seen = ids[j].len == ids[i].len && ids[j].base != NULL && strncasecmp(ids[j].base, ids[i].base, 36) == 0;
        if (seen)
            continue;
        if (inbatch == 0) {
            if (nfetch == nout)
                break;
            cn_fetch_t *f = &out[nfetch++];
            f->record_kind = cn_xero_collections[k].record_kind;
            snprintf(f->path, sizeof(f->path), "/api.xro/2.0/%s?page=1&%sIDs=", cn_xero_collections[k].collection,
                     cn_xero_collections[k].query);
        }
        cn_fetch_t *f = &out[nfetch - 1];
        size_t len = strlen(f->path);
        snprintf(f->path + len, sizeof(f->path) - len, "%s%.36s", inbatch != 0 ? "," : "", ids[i].base);
        if (++inbatch == CN_FETCH_MAX_IDS)
            inbatch = 0;
    }
    return (int)nfetch;
}

static int cn_xero_plan_sync_page(const char *record_kind, int page, cn_fetch_t *out)
{
    for (size_t k = 0; k != CN_XERO_NCOLLECTIONS; ++k)
        if (strcmp(cn_xero_collections[k].record_kind, record_kind) == 0) {
            out->record_kind = cn_xero_collections[k].record_kind;
            snprintf(out->path, sizeof(out->path), "/api.xro/2.0/%s?page=%d&%sorder=UpdatedDateUTC%%20ASC",
                     cn_xero_collections[k].collection, page, cn_xero_collections[k].query);
            return 0;
        }
    return -1;
}

static long cn_xero_count_records(const char *record_kind, cn_str_t body)
{
    const char *collection = NULL;
    for (size_t k = 0; k != CN_XERO_NCOLLECTIONS; ++k)
        if (strcmp(cn_xero_collections[k].record_kind, record_kind) == 0)
            collection = cn_xero_collections[k].collection;
    if (collection == NULL || body.base == NULL)
        return -1;
    json_t *doc = json_loadb(body.base, body.len, 0, NULL);
    json_t *arr = doc != NULL ? json_object_get(doc, collection) : NULL;
    long n = json_is_array(arr) ? (long)json_array_size(arr) : -1;
    json_decref(doc);
    return n;
}

const cn_connector_t cn_xero_connector = {
    .name = "xero",
    .signature_header = "x-xero-signature",
    .status_accepted = 200,
    .status_bad_signature = 401,
    .bare_replies = true,
    .store_unparsable = true,
    .verify = cn_xero_verify,
    .parse = cn_xero_parse,
    .plan_fetches = cn_xero_plan_fetches,
    .plan_sync_page = cn_xero_plan_sync_page,
    .count_records = cn_xero_count_records,
};
