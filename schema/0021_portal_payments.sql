-- SPDX-License-Identifier: MIT
-- 0021: what the portal's payment routes need (issue 10, docs/api.md "Payments, payment methods and invoice PDFs"):
-- the default method a portal user chose, and the invoice PDFs fetched from Xero, cached by the invoice's
-- UpdatedDateUTC so that a portal view does not cost a Xero call (gateway/api/invoice_pdf.c).

-- When a portal user made this method the default (PUT /v1/payment-methods/{id}/default): pm_refresh_default
-- prefers the latest choice among usable methods over the provider's default and the newest method.
ALTER TABLE payment_methods ADD COLUMN chosen_at timestamptz;

-- One PDF per invoice: the bytes Xero sent for the invoice as it was at updated_date_utc (the mirror's); a PDF of an
-- older version is replaced when the invoice changed.
CREATE TABLE invoice_pdfs (
    organisation_id   bigint NOT NULL REFERENCES organisations (id),
    tenant_id         uuid NOT NULL,
    invoice_id        uuid NOT NULL,
    updated_date_utc  timestamptz NOT NULL,
    content           bytea NOT NULL,
    fetched_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invoice_pdfs_pkey PRIMARY KEY (organisation_id, tenant_id, invoice_id)
);
