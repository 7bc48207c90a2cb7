/* SPDX-License-Identifier: MIT */
/* stripe.c: checks Stripe's `Stripe-Signature` (t=, v1=) header and turns a Stripe event into one normalised event. */
#include "connector.h"
#include <stdio.h>
#include <string.h>

/* Stripe's own headers are about 150 bytes (t plus one or two v1); anything beyond this is not Stripe. */
#define CN_STRIPE_MAX_HEADER 8192
/* Unix seconds with at most 18 digits cannot overflow an int64_t. */
#define CN_STRIPE_MAX_T_DIGITS 18

/* A cursor over the comma-separated pairs of the header. */
typedef struct st_cn_stripe_pairs_t {
    const char *p, *end;
} cn_stripe_pairs_t;

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * Yields the next non-empty element as key and value (split at the first '='), with spaces and tabs around the element
 * trimmed. Empty elements ("a,,b", a trailing comma) are skipped, as HTTP lists allow. Returns 1 for a pair, 0 at the
 * end, -1 for an element without '='.
 */
static int next_pair(cn_stripe_pairs_t *it, cn_str_t *key, cn_str_t *value)
{
    while (it->p != it->end) {
        const char *start = it->p, *stop = memchr(start, ',', (size_t)(it->end - start));
        if (stop == NULL)
            stop = it->end;
        it->p = stop == it->end ? stop : stop + 1;
        while (start != stop && is_ows(*start))
            ++start;
        while (stop != start && is_ows(stop[-1]))
            --stop;
        if (start == stop)
            continue;
        const char *eq = memchr(start, '=', (size_t)(stop - start));
        if (eq == NULL)
            return -1;
        *key = (cn_str_t){start, (size_t)(eq - start)};
        *value = (cn_str_t){eq + 1, (size_t)(stop - eq - 1)};
        return 1;
    }
    return 0;
}

static bool str_is(cn_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.base, lit, n) == 0;
}

/* Accepts only the canonical decimal form (no sign, no leading zero) so that the signed bytes "<t>." are exactly what
 * the SDKs, which re-format the parsed number, would sign. */
static int parse_timestamp(cn_str_t s, int64_t *t)
{
    if (s.len == 0 || s.len > CN_STRIPE_MAX_T_DIGITS || (s.base[0] == '0' && s.len != 1))
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i != s.len; ++i) {
        if (s.base[i] < '0' || s.base[i] > '9')
            return -1;
        v = v * 10 + (s.base[i] - '0');
    }
    *t = v;
    return 0;
}

/*
 * Order of the answers: no usable secret (a configuration fault, reported whatever the request carries; empty keys are
 * never used), then a missing or malformed header, then the MACs, then the age. A tolerance of 0 (or below) disables
 * the age check. A header without any well-formed v1 value is a mismatch (no secret produces it), as in stripe-go,
 * not malformed: the header itself parsed. A v1 value that is not 64 hex digits is skipped, so one garbled signature
 * cannot hide a good one. Every v1 is compared with every secret's MAC without stopping at the first match, so the time
 * taken does not say which secret or which v1 matched.
 */
static const char *cn_stripe_verify(const cn_host_t *host, const cn_verify_input_t *in)
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
    if (in->signature.len > CN_STRIPE_MAX_HEADER)
        return cn_err_signature_malformed;

    /* first pass: the header's shape, its one t, and whether any v1 is usable */
    cn_stripe_pairs_t it = {in->signature.base, in->signature.base + in->signature.len};
    cn_str_t key, value, t_text = {NULL, 0};
    size_t nv1 = 0;
    int r;
    while ((r = next_pair(&it, &key, &value)) == 1) {
        if (str_is(key, "t")) {
            if (t_text.base != NULL)
                return cn_err_signature_malformed;
            t_text = value;
        } else if (str_is(key, "v1") && value.len == 64) {
            ++nv1;
        }
    }
    int64_t t;
    if (r != 0 || t_text.base == NULL || parse_timestamp(t_text, &t) != 0)
        return cn_err_signature_malformed;
    if (nv1 == 0)
        return cn_err_signature_mismatch;

    /* second pass per secret: MAC("<t>." body), compared with every v1 */
    const cn_str_t parts[3] = {t_text, CN_STR_LIT("."), in->body};
    bool matched = false;
    for (size_t i = 0; i != in->secrets->count; ++i) {
        const cn_str_t *secret = in->secrets->keys + i;
        if (secret->base == NULL || secret->len == 0)
            continue;
        unsigned char mac[32], given[32];
        if (host->hmac_sha256(secret->base, secret->len, parts, 3, mac) != 0)
            return cn_err_signature_mismatch;
        it = (cn_stripe_pairs_t){in->signature.base, in->signature.base + in->signature.len};
        while (next_pair(&it, &key, &value) == 1)
            if (str_is(key, "v1") && cn_hex32_decode(value, given) == 0)
                matched |= host->equal(mac, given, 32);
    }
    if (!matched)
        return cn_err_signature_mismatch;

    /* only stale timestamps are refused; one from the future passes, as in every Stripe SDK */
    if (in->tolerance > 0 && t < in->now && in->now - t > in->tolerance)
        return cn_err_timestamp_stale;
    return NULL;
}

/* "id" and "type" are required, "object" must say "event" (a snapshot event) or "v2.core.event" (a thin event) if
 * present, "account" (Stripe Connect) and "data.object.id" (or a thin event's "related_object.id") are optional. */
enum { F_ID, F_TYPE, F_OBJECT, F_ACCOUNT, F_RESOURCE, F_RELATED, F_COUNT };
static const char *const paths[F_COUNT] = {"id", "type", "object", "account", "data.object.id", "related_object.id"};

/* Why a thin event is stored but not processed (docs/providers.md). */
static const char thin_reason[] =
    "thin event (v2.core.event): stored, not processed; this release acts on snapshot events (object \"event\") only";
static const cn_fields_t fields = {paths, F_COUNT};

static const char *on_event(const cn_jv_t *f, const cn_alloc_t *alloc, cn_event_t *out)
{
    (void)alloc;
    if (!cn_jv_is_nonempty_string(&f[F_ID]))
        return "The event has no string \"id\".";
    /* Stripe's ids are ASCII letters, digits and '_' */
    if (f[F_ID].s.len > CN_MAX_EVENT_ID || !cn_jv_is_token(&f[F_ID]))
        return "The event's \"id\" is longer than 255 bytes or not printable ASCII.";
    if (!cn_jv_is_nonempty_string(&f[F_TYPE]))
        return "The event has no string \"type\".";
    if (f[F_TYPE].s.len > CN_MAX_FIELD)
        return "The event's \"type\" is longer than 255 bytes.";
    /* thin (v2) event notifications (sent by event destinations) say "v2.core.event" and carry no snapshot: they are
     * verified and stored like any event, as ignored, so Stripe sees them delivered */
    bool thin = f[F_OBJECT].kind == CN_JV_STRING && strcmp(f[F_OBJECT].s.base, "v2.core.event") == 0;
    if (f[F_OBJECT].kind != CN_JV_ABSENT && !thin &&
        !(f[F_OBJECT].kind == CN_JV_STRING && strcmp(f[F_OBJECT].s.base, "event") == 0))
        return "The payload's \"object\" is neither \"event\" nor \"v2.core.event\".";
    if (cn_jv_optional(&f[F_ACCOUNT], &out->account) != 0)
        return "The event's \"account\" is longer than 255 bytes.";
    if (cn_jv_optional(&f[thin ? F_RELATED : F_RESOURCE], &out->resource_id) != 0)
        return thin ? "The event's \"related_object.id\" is longer than 255 bytes."
                    : "The event's \"data.object.id\" is longer than 255 bytes.";
    if (thin)
        out->ignore_reason = thin_reason;
    out->event_id = f[F_ID].s;
    out->event_type = f[F_TYPE].s;
    return NULL;
}

/* A Stripe delivery is one event object, never a batch. */
static const char *cn_stripe_parse(cn_str_t body, const cn_alloc_t *alloc, cn_event_t **events, size_t *count,
                                   const char **detail)
{
    return cn_parse_events(body, alloc, CN_BODY_EVENT, &fields, on_event, events, count, detail);
}

/* The event types settled processes, and the object each one names (its data.object, the event's resource id):
 * the object is refetched, never taken from the event's snapshot, so that a late or reordered delivery cannot
 * roll its state back (DESIGN.md 1, convergence). */
static const struct {
    const char *type;
    const char *collection; /* the API path: /v1/<collection>/<id> */
    const char *record_kind;
} cn_stripe_handled[] = {
    {"payment_intent.succeeded", "payment_intents", "stripe.payment_intent"},
    {"payment_intent.processing", "payment_intents", "stripe.payment_intent"},
    {"payment_intent.payment_failed", "payment_intents", "stripe.payment_intent"},
    {"payment_intent.canceled", "payment_intents", "stripe.payment_intent"},
    {"payment_intent.requires_action", "payment_intents", "stripe.payment_intent"},
    {"charge.succeeded", "charges", "stripe.charge"},
    {"charge.failed", "charges", "stripe.charge"},
    {"charge.captured", "charges", "stripe.charge"},
    {"charge.refunded", "charges", "stripe.charge"},
    {"charge.refund.updated", "refunds", "stripe.refund"},
    {"refund.created", "refunds", "stripe.refund"},
    {"refund.updated", "refunds", "stripe.refund"},
    {"refund.failed", "refunds", "stripe.refund"},
    {"charge.dispute.created", "disputes", "stripe.dispute"},
    {"charge.dispute.updated", "disputes", "stripe.dispute"},
    {"charge.dispute.closed", "disputes", "stripe.dispute"},
    {"charge.dispute.funds_withdrawn", "disputes", "stripe.dispute"},
    {"charge.dispute.funds_reinstated", "disputes", "stripe.dispute"},
    {"checkout.session.completed", "checkout/sessions", "stripe.checkout_session"},
    {"checkout.session.async_payment_succeeded", "checkout/sessions", "stripe.checkout_session"},
    {"checkout.session.async_payment_failed", "checkout/sessions", "stripe.checkout_session"},
    {"setup_intent.succeeded", "setup_intents", "stripe.setup_intent"},
    {"payment_method.attached", "payment_methods", "stripe.payment_method"},
    {"payment_method.detached", "payment_methods", "stripe.payment_method"},
    {"payment_method.updated", "payment_methods", "stripe.payment_method"},
    {"payment_method.automatically_updated", "payment_methods", "stripe.payment_method"},
    {"customer.created", "customers", "stripe.customer"},
    {"customer.updated", "customers", "stripe.customer"},
};
#define CN_STRIPE_NHANDLED (sizeof(cn_stripe_handled) / sizeof(cn_stripe_handled[0]))

static int cn_stripe_handled_index(cn_str_t type)
{
    for (size_t i = 0; i != CN_STRIPE_NHANDLED; ++i)
        if (str_is(type, cn_stripe_handled[i].type))
            return (int)i;
    return -1;
}

static const char *cn_stripe_ignore_reason(cn_str_t event_type)
{
    return cn_stripe_handled_index(event_type) >= 0 ? NULL
                                                    : "settled does not use this Stripe event type (docs/providers.md)";
}

/* A Stripe object id: letters, digits and '_' (pi_3Mt..., ch_..., seti_...), at most 255 bytes; nothing else goes
 * into a URL. */
static bool cn_stripe_is_id(cn_str_t s)
{
    if (s.base == NULL || s.len == 0 || s.len > 255)
        return false;
    for (size_t i = 0; i != s.len; ++i) {
        char c = s.base[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'))
            return false;
    }
    return true;
}

/* Stripe has no call that reads several objects by id: one GET per distinct id. */
static int cn_stripe_plan_fetches(cn_str_t event_type, const cn_str_t *ids, size_t nids, cn_fetch_t *out, size_t nout)
{
    int k = cn_stripe_handled_index(event_type);
    if (k < 0)
        return 0;
    size_t nfetch = 0;
    for (size_t i = 0; i != nids && nfetch != nout; ++i) {
        if (!cn_stripe_is_id(ids[i]))
            continue;
        bool seen = false;
        for (size_t j = 0; j != i && !seen; ++j)
            seen = ids[j].len == ids[i].len && memcmp(ids[j].base, ids[i].base, ids[i].len) == 0;
        if (seen)
            continue;
        cn_fetch_t *f = &out[nfetch++];
        f->record_kind = cn_stripe_handled[k].record_kind;
        snprintf(f->path, sizeof(f->path), "/v1/%s/%.*s", cn_stripe_handled[k].collection, (int)ids[i].len,
                 ids[i].base);
    }
    return (int)nfetch;
}

const cn_connector_t cn_stripe_connector = {
    .name = "stripe",
    .signature_header = "stripe-signature",
    .status_accepted = 200,
    .status_bad_signature = 400,
    .bare_replies = false,
    .verify = cn_stripe_verify,
    .parse = cn_stripe_parse,
    .plan_fetches = cn_stripe_plan_fetches,
    .ignore_reason = cn_stripe_ignore_reason,
};
