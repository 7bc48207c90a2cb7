/* SPDX-License-Identifier: MIT */
/*
 * intake.c: verified, durable webhook intake. The order is fixed by the promises of DESIGN.md:
 * signature on the raw bytes (constant time) -> minimal parse -> one INSERT of every event of the
 * delivery (ON CONFLICT DO NOTHING, so duplicates add nothing) -> commit -> reply. A 2xx is sent only
 * from the commit callback; every failure on the way is a 503 with Retry-After, so the provider retries.
 */
#include "intake.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include "crypto.h"
#include "log.h"
#include "mem.h"
#include "notes.h"
#include "reply.h"

enum { STMT_INSERT_EVENT, STMT_INSERT_EVENTS, STMT_NOTIFY, STMT_INSERT_IGNORED, STMT_MAX };

/* $1 organisation, $2 provider, $3 source, $4 raw body (binary), $5 headers, $6 verified_at and $7
 * received_at (unix microseconds), $8 correlation id; then the event(s). A delivery of one event (every
 * Stripe delivery) is one inbox row holding its body, its fields bound directly. A delivery of several events
 * passes them as one JSON array, stores its body once in webhook_deliveries, and one inbox row per new event that
 * refers to it; when every event of it is already stored (a provider's retry), nothing is written at all. */
static const gw_db_statement_t statements[STMT_MAX] = {
    {"intake_insert_event",
     "INSERT INTO inbox_events (organisation_id, provider, source, account, event_id, event_type, resource_id, "
     "body, headers, verified_at, received_at, correlation_id) "
     "VALUES ($1::bigint, $2, $3, $9, $10, $11, $12, $4::bytea, $5::jsonb, "
     "'epoch'::timestamptz + $6::bigint * interval '1 microsecond', "
     "'epoch'::timestamptz + $7::bigint * interval '1 microsecond', $8) "
     "ON CONFLICT (provider, source, event_id) DO NOTHING",
     12,
     /* the single-event deliveries of a batch are one INSERT over arrays; each learns its row by its correlation id */
     "INSERT INTO inbox_events (organisation_id, provider, source, account, event_id, event_type, resource_id, "
     "body, headers, verified_at, received_at, correlation_id) "
     "SELECT u.org::bigint, u.provider, u.source, u.account, u.event_id, u.event_type, u.resource_id, u.body, "
     "u.headers::jsonb, 'epoch'::timestamptz + u.verified::bigint * interval '1 microsecond', "
     "'epoch'::timestamptz + u.received::bigint * interval '1 microsecond', u.correlation_id "
     "FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::text[], $8::text[], "
     "$9::text[], $10::text[], $11::text[], $12::text[]) "
     "AS u(org, provider, source, body, headers, verified, received, correlation_id, account, event_id, event_type, "
     "resource_id) "
     "ON CONFLICT (provider, source, event_id) DO NOTHING RETURNING correlation_id",
     7},
    {"intake_insert_events",
     "WITH e AS (SELECT * FROM jsonb_to_recordset($9::jsonb) "
     "             AS e(account text, event_id text, event_type text, resource_id text)), "
     "fresh AS (SELECT * FROM e WHERE NOT EXISTS (SELECT 1 FROM inbox_events i "
     "            WHERE i.provider = $2 AND i.source = $3 AND i.event_id = e.event_id)), "
     "d AS (INSERT INTO webhook_deliveries (organisation_id, provider, source, body, headers, verified_at, "
     "                                      received_at, correlation_id) "
     "      SELECT $1::bigint, $2, $3, $4::bytea, $5::jsonb, "
     "             'epoch'::timestamptz + $6::bigint * interval '1 microsecond', "
     "             'epoch'::timestamptz + $7::bigint * interval '1 microsecond', $8 "
     "       WHERE EXISTS (SELECT 1 FROM fresh) RETURNING id) "
     "INSERT INTO inbox_events (organisation_id, provider, source, account, event_id, event_type, resource_id, "
     "delivery_id, verified_at, received_at, correlation_id) "
     "SELECT $1::bigint, $2, $3, f.account, f.event_id, f.event_type, f.resource_id, d.id, "
     "'epoch'::timestamptz + $6::bigint * interval '1 microsecond', "
     "'epoch'::timestamptz + $7::bigint * interval '1 microsecond', $8 "
     "FROM fresh f, d "
     "ON CONFLICT (provider, source, event_id) DO NOTHING",
     9},
    {"intake_notify", "SELECT pg_notify('settled_events', '')", 0},
    /* a delivery of one event that is stored but not processed (connector.h: ignore_reason, store_unparsable): the
     * parameters of intake_insert_event, and $13 the reason */
    {"intake_insert_ignored",
     "INSERT INTO inbox_events (organisation_id, provider, source, account, event_id, event_type, resource_id, "
     "body, headers, verified_at, received_at, correlation_id, status, last_error, processed_at) "
     "VALUES ($1::bigint, $2, $3, $9, $10, $11, $12, $4::bytea, $5::jsonb, "
     "'epoch'::timestamptz + $6::bigint * interval '1 microsecond', "
     "'epoch'::timestamptz + $7::bigint * interval '1 microsecond', $8, 'ignored', $13, now()) "
     "ON CONFLICT (provider, source, event_id) DO NOTHING",
     13},
};

/* Request headers worth keeping beside the body. Signatures are left out: they are not secrets, but
 * they are not needed either (the raw body can be re-verified only with the secret anyway). */
static const char *const kept_headers[] = {"content-type", "user-agent", "origin", "x-forwarded-for"};
#define KEPT_HEADER_MAX 512

/* A delivery waiting for its commit. Lives in the request's pool; its dispose hook detaches the job
 * if the client goes away first, so a late commit never touches a dead request. */
typedef struct st_pending_t {
    h2o_req_t *req;
    gw_db_job_t *job;
    const gw_route_t *route;
    size_t nevents;
} pending_t;

static void *pool_alloc(void *ctx, size_t size)
{
    return h2o_mem_alloc_pool((h2o_mem_pool_t *)ctx, size);
}

static int64_t now_micros(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static void reply_accepted(h2o_req_t *req, const cn_connector_t *cn)
{
    if (cn->bare_replies || cn->status_accepted == 204)
        gw_reply_empty(req, cn->status_accepted);
    else
        gw_reply_json(req, cn->status_accepted, H2O_STRLIT("{\"received\":true}"));
}

/* Answers err: with its status alone on providers that mandate empty replies, as problem+json otherwise. */
static void reply_err(h2o_req_t *req, const cn_connector_t *cn, const gw_err_t *err)
{
    if (cn->bare_replies) {
        gw_reply_note_err(req, err);
        gw_reply_empty(req, err->status);
    } else {
        gw_reply_err(req, err);
    }
}

/* The detail sentence of a signature check's refusal: what exactly was wrong, never a secret or the signature. */
static const char *signature_detail(const char *code)
{
    if (code == cn_err_signature_missing)
        return "The request has no signature header for this provider.";
    if (code == cn_err_signature_malformed)
        return "The signature header cannot be parsed.";
    if (code == cn_err_timestamp_stale)
        return "The signature matches, but its timestamp is older than SETTLED_STRIPE_TOLERANCE allows.";
    if (code == cn_err_no_secret)
        return "The webhook source has no usable secret.";
    return "No active secret of this source produces the signature of this body.";
}

/* Answers a failure of the store: 503 with Retry-After, so the provider delivers again. */
static void reply_unavailable(h2o_req_t *req, const gw_loop_t *loop, const cn_connector_t *cn)
{
    gw_err_t err = GW_ERR_INIT;
    gw_err_set(&err, gw_err_store_unavailable, 503, "The event was not stored; retry later.");
    gw_reply_retry_after(req, loop->cfg->retry_after);
    reply_err(req, cn, &err);
}

/* Per loop: the pacing of worker wake-ups. */
typedef struct st_notify_state_t {
    gw_loop_t *loop;
    uint64_t last_notify_at;
    h2o_timeout_t timeout;
    h2o_timeout_entry_t entry;
} notify_state_t;

/* Wakes idle queue workers (LISTEN settled_events) after new events commit. A NOTIFY holds a cluster-wide lock
 * through its transaction's commit, so one per commit would serialise the intake: a loop sends at most one per
 * GW_NOTIFY_INTERVAL_MS, and a late one covers everything committed before it. Losing one is harmless: workers
 * also poll. */
static void send_notify(notify_state_t *ns)
{
    ns->last_notify_at = h2o_now(ns->loop->evloop);
    if (gw_db_submit(ns->loop->db, &statements[STMT_NOTIFY], NULL, 0, NULL, NULL) == NULL) {
        /* the store cannot take it now; nothing to do: workers also poll */
    }
}

static void on_notify_timer(h2o_timeout_entry_t *entry)
{
    notify_state_t *ns = H2O_STRUCT_FROM_MEMBER(notify_state_t, entry, entry);
    send_notify(ns);
}

static void wake_workers(gw_loop_t *loop)
{
    notify_state_t *ns = gw_module_state(loop, &gw_intake_module);
    if (h2o_timeout_is_linked(&ns->entry))
        return; /* one is already due */
    if (h2o_now(loop->evloop) - ns->last_notify_at >= GW_NOTIFY_INTERVAL_MS)
        send_notify(ns);
    else
        h2o_timeout_link(loop->evloop, &ns->timeout, &ns->entry);
}

static void *on_loop_init(gw_loop_t *loop)
{
    notify_state_t *ns = gw_xcalloc(1, sizeof(*ns));
    ns->loop = loop;
    h2o_timeout_init(loop->evloop, &ns->timeout, GW_NOTIFY_INTERVAL_MS);
    ns->entry = (h2o_timeout_entry_t){.cb = on_notify_timer};
    return ns;
}

static void on_loop_dispose(gw_loop_t *loop, void *state)
{
    notify_state_t *ns = state;
    if (h2o_timeout_is_linked(&ns->entry))
        h2o_timeout_unlink(&ns->entry);
    h2o_timeout_dispose(loop->evloop, &ns->timeout);
    free(ns);
}

const gw_module_t gw_intake_module = {
    .name = "intake",
    .statements = statements,
    .nstatements = STMT_MAX,
    .on_loop_init = on_loop_init,
    .on_loop_dispose = on_loop_dispose,
};

static void on_pending_dispose(void *p)
{
    pending_t *pending = p;
    if (pending->job != NULL)
        gw_db_job_detach(pending->job);
    pending->req = NULL;
}

static void on_committed(void *data, const char *error, uint64_t rows)
{
    pending_t *pending = data;
    h2o_req_t *req = pending->req;
    pending->job = NULL;
    if (req == NULL)
        return;
    gw_loop_t *loop = gw_loop_of(req);
    const cn_connector_t *cn = pending->route->data;
    if (error != NULL) {
        reply_unavailable(req, loop, cn);
        return;
    }
    gw_metrics_events(pending->route->id, pending->nevents, rows);
    gw_note_int(req, GW_NOTE_NEW_EVENTS, (long long)rows);
    gw_note(req, GW_NOTE_DUPLICATE, rows == 0 ? "true" : "false", rows == 0 ? 4 : 5);
    if (rows != 0)
        wake_workers(loop);
    reply_accepted(req, cn);
}

/* A JSON text built in the request's pool: nothing to free, and out of memory aborts (h2o's pool) rather than
 * leaving a NULL to pass on. */
typedef struct st_jbuf_t {
    h2o_mem_pool_t *pool;
    char *buf;
    size_t len, cap;
} jbuf_t;

static void jb_reserve(jbuf_t *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap * 2 > b->len + extra + 64 ? b->cap * 2 : b->len + extra + 64;
    char *p = h2o_mem_alloc_pool(b->pool, cap);
    if (b->len != 0)
        memcpy(p, b->buf, b->len);
    b->buf = p;
    b->cap = cap;
}

static void jb_raw(jbuf_t *b, const char *s, size_t n)
{
    jb_reserve(b, n);
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

/* Appends n bytes of s as a JSON string: '"' and '\\' escaped, control characters as \u00XX; other bytes as they
 * are (the connectors hand over valid UTF-8, and header values are printable ASCII by then). */
static void jb_string(jbuf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    jb_reserve(b, 6 * n + 2);
    char *p = b->buf + b->len;
    *p++ = '"';
    for (size_t i = 0; i != n; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\', *p++ = (char)c;
        } else if (c < 0x20) {
            *p++ = '\\', *p++ = 'u', *p++ = '0', *p++ = '0', *p++ = hex[c >> 4], *p++ = hex[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    b->len = (size_t)(p - b->buf);
}

/* A field that may be absent: JSON null when it is. */
static void jb_nullable(jbuf_t *b, cn_str_t s)
{
    if (s.base != NULL)
        jb_string(b, s.base, s.len);
    else
        jb_raw(b, H2O_STRLIT("null"));
}

/* The kept request headers as a JSON object, values reduced to printable ASCII (at most KEPT_HEADER_MAX bytes). */
static h2o_iovec_t headers_json(h2o_req_t *req)
{
    jbuf_t b = {.pool = &req->pool};
    jb_raw(&b, H2O_STRLIT("{"));
    bool first = true;
    for (size_t i = 0; i != sizeof(kept_headers) / sizeof(kept_headers[0]); ++i) {
        ssize_t at = h2o_find_header_by_str(&req->headers, kept_headers[i], strlen(kept_headers[i]), -1);
        if (at == -1)
            continue;
        h2o_iovec_t v = req->headers.entries[at].value;
        size_t n = v.len < KEPT_HEADER_MAX ? v.len : KEPT_HEADER_MAX;
        char clean[KEPT_HEADER_MAX];
        for (size_t k = 0; k != n; ++k)
            clean[k] = v.base[k] >= 0x20 && v.base[k] < 0x7f ? v.base[k] : '?';
        if (!first)
            jb_raw(&b, H2O_STRLIT(","));
        first = false;
        jb_string(&b, kept_headers[i], strlen(kept_headers[i]));
        jb_raw(&b, H2O_STRLIT(":"));
        jb_string(&b, clean, n);
    }
    jb_raw(&b, H2O_STRLIT("}"));
    return h2o_iovec_init(b.buf, b.len);
}

/* The events of a batch as a JSON array of {event_id, event_type, account, resource_id}. */
static h2o_iovec_t events_json(h2o_req_t *req, const cn_event_t *events, size_t n)
{
    jbuf_t b = {.pool = &req->pool};
    jb_reserve(&b, n * 160);
    jb_raw(&b, H2O_STRLIT("["));
    for (size_t i = 0; i != n; ++i) {
        jb_raw(&b, i == 0 ? "{\"event_id\":" : ",{\"event_id\":", i == 0 ? 12 : 13);
        jb_nullable(&b, events[i].event_id);
        jb_raw(&b, H2O_STRLIT(",\"event_type\":"));
        jb_nullable(&b, events[i].event_type);
        jb_raw(&b, H2O_STRLIT(",\"account\":"));
        jb_nullable(&b, events[i].account);
        jb_raw(&b, H2O_STRLIT(",\"resource_id\":"));
        jb_nullable(&b, events[i].resource_id);
        jb_raw(&b, H2O_STRLIT("}"));
    }
    jb_raw(&b, H2O_STRLIT("]"));
    return h2o_iovec_init(b.buf, b.len);
}

int gw_intake_handle(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source)
{
    const cn_connector_t *cn = route->data;
    int64_t received_at = now_micros();
    gw_err_t err = GW_ERR_INIT;

    gw_source_t *src = source.len == 0 ? gw_config_find_source(loop->cfg, cn->name, H2O_STRLIT("default"))
                                       : gw_config_find_source(loop->cfg, cn->name, source.base, source.len);
    if (src == NULL) {
        gw_err_set(&err, gw_err_source_unknown, 404, "No webhook source of that name is configured.");
        reply_err(req, cn, &err);
        return 0;
    }
    gw_note(req, GW_NOTE_SOURCE, src->name, strlen(src->name));

    /* 1. the signature, on the raw bytes, before anything is parsed */
    cn_verify_input_t in = {.body = {req->entity.base, req->entity.len},
                            .secrets = &src->secrets,
                            .now = received_at / 1000000,
                            .tolerance = loop->cfg->stripe_tolerance};
    ssize_t at = h2o_find_header_by_str(&req->headers, cn->signature_header, strlen(cn->signature_header), -1);
    if (at != -1)
        in.signature = (cn_str_t){req->headers.entries[at].value.base, req->headers.entries[at].value.len};
    const char *code = cn->verify(&gw_crypto_host, &in);
    if (code != NULL) {
        gw_err_set(&err, code, cn->status_bad_signature, "%s", signature_detail(code));
        reply_err(req, cn, &err);
        return 0;
    }
    int64_t verified_at = now_micros();

    /* 2. just enough parsing to know the events */
    cn_alloc_t alloc = {pool_alloc, &req->pool};
    cn_event_t *events = NULL;
    size_t nevents = 0;
    const char *detail = NULL;
    cn_event_t unparsable;
    if ((code = cn->parse(in.body, &alloc, &events, &nevents, &detail)) != NULL) {
        if (!cn->store_unparsable) {
            gw_err_set(&err, code, 400, "%s", detail != NULL ? detail : ""); /* "": no detail */
            reply_err(req, cn, &err);
            return 0;
        }
        /* correctly signed but not the provider's payload: kept (a 2xx only after commit) as one ignored event whose
         * id is the body's digest, so a retry of the same bytes is a duplicate */
        char *id = h2o_mem_alloc_pool(&req->pool, sizeof("unparsable:") + 64);
        memcpy(id, "unparsable:", sizeof("unparsable:") - 1);
        gw_crypto_sha256_hex(in.body.base != NULL ? in.body.base : "", in.body.len, id + sizeof("unparsable:") - 1);
        char *why = h2o_mem_alloc_pool(&req->pool, 300);
        snprintf(why, 300, "unparsable body (%s): stored, not processed%s%s", code, detail != NULL ? ": " : "",
                 detail != NULL ? detail : "");
        unparsable =
            (cn_event_t){.event_id = {id, strlen(id)}, .event_type = CN_STR_LIT("unparsable"), .ignore_reason = why};
        events = &unparsable;
        nevents = 1;
    }
    gw_note(req, GW_NOTE_EVENT_ID, events != NULL && nevents != 0 ? events[0].event_id.base : NULL,
            events != NULL && nevents != 0 ? events[0].event_id.len : 0);
    gw_note_int(req, GW_NOTE_EVENTS, (long long)nevents);
    if (nevents == 0) { /* e.g. Xero's intent-to-receive: verified, nothing to store */
        reply_accepted(req, cn);
        return 0;
    }

    /* 3. one statement for the whole delivery, committed with whatever else is in the batch */
    char org[24], vat[24], rat[24];
    snprintf(org, sizeof(org), "%lld", (long long)src->organisation_id);
    snprintf(vat, sizeof(vat), "%lld", (long long)verified_at);
    snprintf(rat, sizeof(rat), "%lld", (long long)received_at);
    ssize_t rid = h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1);
    h2o_iovec_t correlation = req->res.headers.entries[rid].value;
    h2o_iovec_t headers = headers_json(req);
    const char *body = req->entity.base != NULL ? req->entity.base : "";
    gw_db_param_t params[13] = {
        {org, strlen(org), false},
        {cn->name, strlen(cn->name), false},
        {src->name, strlen(src->name), false},
        {body, req->entity.len, true},
        {headers.base, headers.len, false},
        {vat, strlen(vat), false},
        {rat, strlen(rat), false},
        {correlation.base, correlation.len, false},
    };
    size_t nparams;
    const gw_db_statement_t *stmt = &statements[nevents == 1 ? STMT_INSERT_EVENT : STMT_INSERT_EVENTS];
    if (nevents == 1) {
        cn_str_t fields[] = {events[0].account, events[0].event_id, events[0].event_type, events[0].resource_id};
        for (size_t i = 0; i != 4; ++i)
            params[8 + i] = (gw_db_param_t){fields[i].base, fields[i].len, false}; /* base NULL: SQL NULL */
        nparams = 12;
        if (events[0].ignore_reason != NULL) {
            params[12] = (gw_db_param_t){events[0].ignore_reason, strlen(events[0].ignore_reason), false};
            nparams = 13;
            stmt = &statements[STMT_INSERT_IGNORED];
        }
    } else {
        h2o_iovec_t evjson = events_json(req, events, nevents);
        params[8] = (gw_db_param_t){evjson.base, evjson.len, false};
        nparams = 9;
    }
    pending_t *pending = h2o_mem_alloc_shared(&req->pool, sizeof(*pending), on_pending_dispose);
    *pending = (pending_t){.req = req, .route = route, .nevents = nevents};
    pending->job = gw_db_submit(loop->db, stmt, params, nparams, on_committed, pending);
    if (pending->job == NULL)
        reply_unavailable(req, loop, cn);
    return 0;
}
