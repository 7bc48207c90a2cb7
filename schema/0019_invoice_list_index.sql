-- SPDX-License-Identifier: MIT
-- 0019: an admin's GET /v1/invoices pages through its organisation's sales invoices newest first (gateway/api/
-- invoices.c, invoices_list_admin): this index holds them in that order, so a page reads its rows and stops.
CREATE INDEX xero_invoices_list_idx ON xero_invoices
    (organisation_id, (coalesce(date, '0001-01-01'::date)) DESC, settled_invoice_id DESC)
    WHERE type = 'ACCREC';
