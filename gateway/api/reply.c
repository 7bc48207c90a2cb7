/* SPDX-License-Identifier: MIT */
/* reply.c: problem+json and the other reply shapes, so no handler formats a response by hand. */
#include "reply.h"
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <jansson.h>
#include <stdlib.h>
#include "crypto.h"
#include "notes.h"

const char *gw_reply_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 498:
        return "Token Invalid";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

/* Appends s JSON-escaped; returns the new length. dst must have 6 * strlen(s) bytes free. */
static size_t escape(char *dst, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i != n; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            dst[o++] = '\\', dst[o++] = (char)c;
        } else if (c < 0x20) {
            dst[o++] = '\\', dst[o++] = 'u', dst[o++] = '0', dst[o++] = '0', dst[o++] = hex[c >> 4],
            dst[o++] = hex[c & 15];
        } else {
            dst[o++] = (char)c;
        }
    }
    return o;
}

h2o_iovec_t gw_reply_problem_body(h2o_mem_pool_t *pool, int status, const char *code, const char *detail,
                                  h2o_iovec_t request_id)
{
    const char *title = gw_err_title(code);
    size_t dlen = detail != NULL ? strlen(detail) : 0;
    size_t cap = 160 + 2 * strlen(code) + strlen(title) + 6 * (dlen + request_id.len);
    char *buf = h2o_mem_alloc_pool(pool, cap), *p = buf;
    p += sprintf(p, "{\"type\":\"urn:settled:error:%s\",\"title\":\"%s\",\"status\":%d,\"code\":\"%s\"", code, title,
                 status, code);
    if (detail != NULL) {
        p += sprintf(p, ",\"detail\":\"");
        p += escape(p, detail, dlen);
        *p++ = '"';
    }
    if (request_id.len != 0) {
        p += sprintf(p, ",\"request_id\":\"");
        p += escape(p, request_id.base, request_id.len);
        *p++ = '"';
    }
    *p++ = '}';
    return h2o_iovec_init(buf, (size_t)(p - buf));
}

void gw_reply_text(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = gw_reply_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

void gw_reply_json(h2o_req_t *req, int status, const char *body, size_t len)
{
    gw_reply_text(req, status, "application/json", body, len);
}

void gw_reply_empty(h2o_req_t *req, int status)
{
    req->res.status = status;
    req->res.reason = gw_reply_reason(status);
    /* a 204 (or 304) has no body by definition and must not carry Content-Length (RFC 9110 8.6); with the length
     * unknown h2o writes neither it nor chunked framing for these statuses */
    req->res.content_length = status == 204 || status == 304 ? SIZE_MAX : 0;
    h2o_send_inline(req, "", 0);
}

void gw_reply_retry_after(h2o_req_t *req, int seconds)
{
    char *v = h2o_mem_alloc_pool(&req->pool, 16);
    int n = snprintf(v, 16, "%d", seconds);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, v, (size_t)n);
}

/* The request id the front door stamped on the response, or an empty iovec. */
static h2o_iovec_t request_id_of(h2o_req_t *req)
{
    ssize_t i = h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1);
    return i != -1 ? req->res.headers.entries[i].value : h2o_iovec_init(NULL, 0);
}

h2o_iovec_t gw_reply_err_body(h2o_mem_pool_t *pool, const gw_err_t *err, h2o_iovec_t request_id, int *status)
{
    if (!gw_err_is_set(err)) {
        *status = 500;
        return gw_reply_problem_body(pool, 500, gw_err_internal, NULL, request_id);
    }
    *status = err->status >= 100 && err->status <= 599 ? err->status : 500;
    return gw_reply_problem_body(pool, *status, err->code, err->detail[0] != '\0' ? err->detail : NULL, request_id);
}

void gw_reply_note_err(h2o_req_t *req, const gw_err_t *err)
{
    const char *code = gw_err_is_set(err) ? err->code : gw_err_internal;
    gw_note(req, GW_NOTE_PROBLEM, code, strlen(code));
    if (gw_err_is_set(err) && err->detail[0] != '\0')
        gw_note(req, GW_NOTE_DETAIL, err->detail, strlen(err->detail));
}

void gw_reply_err(h2o_req_t *req, const gw_err_t *err)
{
    int status;
    h2o_iovec_t body = gw_reply_err_body(&req->pool, err, request_id_of(req), &status);
    gw_reply_note_err(req, err);
    gw_reply_text(req, status, "application/problem+json", body.base, body.len);
}

void gw_reply_problem(h2o_req_t *req, int status, const char *code, const char *detail)
{
    h2o_iovec_t body = gw_reply_problem_body(&req->pool, status, code, detail, request_id_of(req));
    gw_note(req, GW_NOTE_PROBLEM, code, strlen(code));
    if (detail != NULL)
        gw_note(req, GW_NOTE_DETAIL, detail, strlen(detail));
    gw_reply_text(req, status, "application/problem+json", body.base, body.len);
}

void gw_reply_err_field(h2o_req_t *req, const gw_err_t *err, const char *field)
{
    int status;
    h2o_iovec_t body = gw_reply_err_body(&req->pool, err, request_id_of(req), &status);
    json_t *f = field != NULL ? json_string(field) : NULL;
    char *enc = f != NULL ? json_dumps(f, JSON_ENCODE_ANY) : NULL;
    json_decref(f);
    if (enc != NULL && body.len != 0) {
        size_t n = body.len + strlen(enc) + 10;
        char *b = h2o_mem_alloc_pool(&req->pool, n);
        int len = snprintf(b, n, "%.*s,\"field\":%s}", (int)body.len - 1, body.base, enc);
        body = h2o_iovec_init(b, (size_t)len);
    }
    free(enc);
    gw_reply_note_err(req, err);
    gw_reply_text(req, status, "application/problem+json", body.base, body.len);
}

bool gw_reply_etag_listed(h2o_iovec_t list, const char *etag, size_t elen)
{
    const char *p = list.base, *end = list.base + list.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ','))
            ++p;
        const char *start = p;
        while (p < end && *p != ',')
            ++p;
        const char *stop = p;
        while (stop > start && stop[-1] == ' ')
            --stop;
        if (stop - start >= 2 && start[0] == 'W' && start[1] == '/')
            start += 2;
        size_t n = (size_t)(stop - start);
        if ((n == 1 && *start == '*') || (n == elen && memcmp(start, etag, elen) == 0))
            return true;
    }
    return false;
}

void gw_reply_json_cached(h2o_req_t *req, const char *body, size_t len)
{
    char hex[65], *etag = h2o_mem_alloc_pool(&req->pool, 35);
    gw_crypto_sha256_hex(body, len, hex);
    int elen = snprintf(etag, 35, "\"%.32s\"", hex);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, etag, (size_t)elen);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("private, no-cache"));
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    if (i != -1 && gw_reply_etag_listed(req->headers.entries[i].value, etag, (size_t)elen)) {
        gw_reply_empty(req, 304);
        return;
    }
    gw_reply_json(req, 200, body, len);
}
