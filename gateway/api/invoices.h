/* SPDX-License-Identifier: MIT */
/*
 * invoices.h: the portal's invoices (GET /v1/invoices, GET /v1/invoices/{id}): the mirrored Xero sales invoices a
 * caller may see (a client: its own customer's, never DRAFT, SUBMITTED or DELETED; an admin: its organisation's),
 * with their payment state, money as decimal strings in the currency's own decimals. docs/api.md, "Invoices".
 */
#ifndef GW_INVOICES_H
#define GW_INVOICES_H

#include "api.h"

/* The SQL condition of who may see invoice i (xero_invoices): the organisation ($1); a client ($2 not NULL) only its
 * customer's, and never drafts. Shared by the invoice routes (invoices.c, invoice_pdf.c). */
#define GW_INVOICE_SCOPE                                                                                               \
    "i.organisation_id = $1::bigint AND i.type = 'ACCREC' "                                                            \
    "AND ($2::bigint IS NULL OR (i.status NOT IN ('DRAFT', 'SUBMITTED', 'DELETED') AND EXISTS ("                       \
    "  SELECT 1 FROM xero_contacts c WHERE c.organisation_id = i.organisation_id AND c.tenant_id = i.tenant_id "       \
    "  AND c.contact_id = i.contact_id AND c.customer_id = $2::bigint))) "

/* The inputs of the two routes (their rows are in routes.c). */
enum { GW_INVOICES_LIST_NINPUTS = 7, GW_INVOICES_GET_NINPUTS = 1 };
extern const gw_input_t gw_invoices_list_inputs[GW_INVOICES_LIST_NINPUTS];
extern const gw_input_t gw_invoices_get_inputs[GW_INVOICES_GET_NINPUTS];

int gw_invoices_list(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_invoices_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

/* The statements the two routes submit. */
extern const gw_module_t gw_invoices_module;

/* Exposed for the tests: formats Xero's numeric text (len bytes, e.g. "123.4500") in currency (ISO 4217) into out
 * (at least 32 bytes) as a decimal string with the currency's decimals; returns its length, or -1 when the currency
 * is unknown or the amount is not exact in it. */
int gw_invoices_money(const char *numeric, size_t len, const char *currency, char *out, size_t size);

/* A JSON string of minor units of the ledger (the text of a bigint) in currency, or null when either is not one
 * settled knows. Shared by the routes that show ledger amounts (payments.c). */
json_t *gw_invoices_minor_json(const char *minor, const char *currency);

#endif
