/* SPDX-License-Identifier: MIT */
/*
 * invoice_pdf.c: GET /v1/invoices/{id}/pdf. On the loop, one read (scoped like the invoice routes, GW_INVOICE_SCOPE)
 * finds the invoice, its tenant's token set and the cached PDF of this version of the invoice (invoice_pdfs keyed by
 * the invoice and the mirror's updated_date_utc). The entity tag is a digest of the InvoiceID and that timestamp, so
 * If-None-Match is answered 304 without any PDF, and a cached PDF is sent from the loop. Only a PDF not cached yet
 * is fetched from Xero, on the offload pool (portal_task.h), stored and sent; a changed invoice (the mirror saw a
 * newer UpdatedDateUTC) replaces its cached PDF on the next request.
 */
#include "invoice_pdf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "invoices.h"
#include "log.h"
#include "mem.h"
#include "portal_task.h"
#include "query.h"
#include "reply.h"

#define PDF_MAX (16 * 1024 * 1024)

enum { IN_ID }; /* the inputs are the invoice detail's (gw_invoices_get_inputs) */

enum { C_TENANT, C_INVOICE, C_UPDATED, C_TOKEN, C_PDF };
enum { STMT_GET, STMT_MAX };
static const gw_db_statement_t statements[STMT_MAX] = {
    /* $1 organisation, $2 customer (NULL: an admin), $3 the settled invoice id */
    {"invoice_pdf_get",
     "SELECT i.tenant_id::text, i.invoice_id::text, i.updated_date_utc::text, t.token_id::text, "
     "(SELECT translate(encode(p.content, 'base64'), E'\\n', '') FROM invoice_pdfs p "
     "  WHERE p.organisation_id = i.organisation_id AND p.tenant_id = i.tenant_id AND p.invoice_id = i.invoice_id "
     "  AND p.updated_date_utc = i.updated_date_utc) "
     "FROM xero_invoices i LEFT JOIN xero_tenants t ON t.organisation_id = i.organisation_id "
     "  AND t.tenant_id = i.tenant_id "
     "WHERE " GW_INVOICE_SCOPE "AND i.settled_invoice_id = $3",
     3},
};

const gw_module_t gw_invoice_pdf_module = {
    .name = "invoice_pdf",
    .statements = statements,
    .nstatements = STMT_MAX,
};

void gw_invoice_pdf_etag(const char *invoice, const char *updated, char out[35])
{
    char buf[160], hex[65];
    int n = snprintf(buf, sizeof(buf), "invoice-pdf:%s:%s", invoice, updated);
    gw_crypto_sha256_hex(buf, n > 0 && (size_t)n < sizeof(buf) ? (size_t)n : 0, hex);
    snprintf(out, 35, "\"%.32s\"", hex);
}

typedef struct st_pdf_in_t {
    char tenant[40], invoice[40], updated[48];
    int64_t token_id;
} pdf_in_t;

static void fetch_work(gw_portal_task_t *t, gw_fetch_ctx_t *ctx)
{
    pdf_in_t *in = t->data;
    char path[128], org[24];
    snprintf(path, sizeof(path), "/api.xro/2.0/Invoices/%s", in->invoice);
    gw_fetch_call_t c = {
        .provider = "xero", .path = path, .account = in->tenant, .token_id = in->token_id, .accept = "application/pdf"};
    gw_fetch_result_t res;
    if (gw_fetch(ctx, &c, &res) != GW_FETCH_OK) {
        gw_portal_task_fetch_err(t, "fetching the invoice PDF from Xero", &res);
        return;
    }
    const char *ctype = gw_http_response_header(&res.res, "content-type");
    if (ctype == NULL || strncmp(ctype, "application/pdf", 15) != 0 || res.res.body_len == 0 ||
        res.res.body_len > PDF_MAX) {
        gw_log(GW_LOG_WARN, "portal request %s: Xero answered the PDF of %s as %s (%zu bytes)", t->request_id,
               in->invoice, ctype != NULL ? ctype : "nothing", res.res.body_len);
        gw_http_response_free(&res.res);
        gw_err_set(&t->err, gw_err_provider_unavailable, 502, "Xero did not answer with a PDF.");
        return;
    }
    char *b64 = gw_xmalloc(GW_BASE64_ENCODED_SIZE(res.res.body_len));
    gw_base64_encode(res.res.body, res.res.body_len, 0, b64);
    snprintf(org, sizeof(org), "%lld", (long long)t->organisation_id);
    const char *p[] = {org, in->tenant, in->invoice, in->updated, b64};
    /* a newer version cached meanwhile (a later request saw a newer mirror) is kept */
    if (gw_dbs_exec(ctx->db,
                    "INSERT INTO invoice_pdfs AS p (organisation_id, tenant_id, invoice_id, updated_date_utc, content) "
                    "VALUES ($1::bigint, $2::uuid, $3::uuid, $4::timestamptz, decode($5, 'base64')) "
                    "ON CONFLICT (organisation_id, tenant_id, invoice_id) DO UPDATE SET "
                    "updated_date_utc = EXCLUDED.updated_date_utc, content = EXCLUDED.content, fetched_at = now() "
                    "WHERE p.updated_date_utc <= EXCLUDED.updated_date_utc",
                    5, p) < 0)
        gw_log(GW_LOG_WARN, "portal request %s: caching the PDF of %s failed: %s", t->request_id, in->invoice,
               gw_dbs_error(ctx->db)); /* the PDF is still sent */
    free(b64);
    t->body = gw_xmalloc(res.res.body_len);
    memcpy(t->body, res.res.body, res.res.body_len);
    t->body_len = res.res.body_len;
    t->content_type = "application/pdf";
    gw_invoice_pdf_etag(in->invoice, in->updated, t->etag);
    gw_http_response_free(&res.res);
}

typedef struct st_pending_t {
    gw_loop_t *loop;
    const gw_call_t *call;
} pending_t;

static void on_rows(h2o_req_t *req, const gw_db_rows_t *rows, void *data)
{
    pending_t *p = data;
    if (gw_db_rows_count(rows) == 0) {
        gw_reply_problem(req, 404, gw_err_not_found, NULL);
        return;
    }
    const char *tenant = gw_db_rows_value(rows, 0, C_TENANT, NULL),
               *invoice = gw_db_rows_value(rows, 0, C_INVOICE, NULL),
               *updated = gw_db_rows_value(rows, 0, C_UPDATED, NULL), *token = gw_db_rows_value(rows, 0, C_TOKEN, NULL);
    size_t b64len;
    const char *b64 = gw_db_rows_value(rows, 0, C_PDF, &b64len);
    char etag[35];
    gw_invoice_pdf_etag(invoice, updated, etag);
    if (b64 != NULL) {
        size_t cap = b64len / 4 * 3 + 3, len;
        char *pdf = h2o_mem_alloc_pool(&req->pool, cap);
        if (gw_base64_decode(b64, b64len, 0, pdf, cap, &len) == 0) {
            gw_portal_reply_entity(req, "application/pdf", etag, pdf, len);
            return;
        }
        gw_log(GW_LOG_WARN, "the cached PDF of invoice %s does not decode; fetching it again", invoice);
    }
    /* If-None-Match naming this version: the client has these bytes already */
    if (gw_portal_etag_listed(req, etag)) {
        gw_portal_reply_entity(req, "application/pdf", etag, "", 0);
        return;
    }
    if (token == NULL) {
        gw_reply_retry_after(req, p->loop->cfg->retry_after > 0 ? p->loop->cfg->retry_after : 1);
        gw_reply_problem(req, 503, gw_err_provider_unavailable,
                         "Xero is not connected for this invoice's organisation; an administrator must connect it.");
        return;
    }
    pdf_in_t *in = gw_xcalloc(1, sizeof(*in));
    snprintf(in->tenant, sizeof(in->tenant), "%s", tenant);
    snprintf(in->invoice, sizeof(in->invoice), "%s", invoice);
    snprintf(in->updated, sizeof(in->updated), "%s", updated);
    in->token_id = strtoll(token, NULL, 10);
    gw_portal_task_run(p->loop, req, gw_portal_task_new(p->loop, p->call, fetch_work, in));
}

int gw_invoice_pdf_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call)
{
    gw_db_param_t params[3];
    gw_query_scope(req, &call->scope, params);
    params[2] = (gw_db_param_t){call->in[IN_ID].str.base, call->in[IN_ID].str.len, false};
    pending_t *p = h2o_mem_alloc_pool(&req->pool, sizeof(*p));
    *p = (pending_t){loop, call};
    return gw_query(loop, req, &statements[STMT_GET], params, 3, on_rows, p);
}
