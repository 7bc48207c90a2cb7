/* SPDX-License-Identifier: MIT */
/*
 * invoice_pdf.h: GET /v1/invoices/{id}/pdf, the invoice as Xero renders it (GET /api.xro/2.0/Invoices/{InvoiceID}
 * with Accept: application/pdf, through fetch.c under the tenant's quota), cached in invoice_pdfs by the invoice's
 * UpdatedDateUTC as the mirror knows it: a second request for an unchanged invoice does not call Xero. docs/api.md,
 * "Payments, payment methods and invoice PDFs".
 */
#ifndef GW_INVOICE_PDF_H
#define GW_INVOICE_PDF_H

#include "api.h"

int gw_invoice_pdf_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

/* The statement the route submits. */
extern const gw_module_t gw_invoice_pdf_module;

/* Exposed for the tests: the entity tag of the PDF of invoice (its Xero InvoiceID) as of updated (the mirror's
 * UpdatedDateUTC text), a quoted 32-digit hex digest, into out (35 bytes). */
void gw_invoice_pdf_etag(const char *invoice, const char *updated, char out[35]);

#endif
