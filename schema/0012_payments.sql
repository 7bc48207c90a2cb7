-- SPDX-License-Identifier: MIT
-- 0012: payment processing (issue 9; docs/reconciliation.md, docs/data-model.md "Payments").
--
-- What the Stripe and GoCardless processors (gateway/domain/payments.c) need beyond the ledger of 0011:
-- - settled's own public id of each mirrored invoice (settled_invoice_id), which integrators may put into a
--   payment's metadata instead of the Xero InvoiceID;
-- - on payments, refunds and disputes the claim time of the fetch that wrote them (observed_at): a fetch only
--   overwrites what an older claim fetched, so two workers racing on one object converge on the newest state;
-- - on payments the invoice a payment names but that is not mirrored yet (link_wanted), the reason a link failed,
--   and the day it was paid (for the write-back);
-- - each invoice's payment state (invoice_payment_states), derived by reconcile.c and exposed, with the names the
--   API and the docs use, by the view invoice_payment_state.

ALTER TABLE xero_invoices
    ADD COLUMN settled_invoice_id text COLLATE "C" NOT NULL
        DEFAULT 'inv_' || replace(gen_random_uuid()::text, '-', '')
        CONSTRAINT xero_invoices_settled_invoice_id_key UNIQUE;

ALTER TABLE payments
    ADD COLUMN observed_at timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN link_wanted text,     -- the metadata value naming an invoice not mirrored (yet)
    ADD COLUMN link_error text,      -- why the metadata names no invoice settled can use (a malformed id)
    ADD COLUMN paid_on date;         -- Stripe: the latest charge's day (UTC); GoCardless: charge_date
CREATE INDEX payments_waiting_idx ON payments (organisation_id, link_wanted) WHERE link_wanted IS NOT NULL;

ALTER TABLE refunds ADD COLUMN observed_at timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE disputes ADD COLUMN observed_at timestamptz NOT NULL DEFAULT '-infinity';

CREATE TABLE invoice_payment_states (
    organisation_id     bigint NOT NULL,
    tenant_id           uuid NOT NULL,
    invoice_id          uuid NOT NULL,
    currency            currency_code,   -- NULL when the invoice has none settled knows
    due_minor           bigint,          -- NULL: not reconcilable (unknown currency, money that does not fit)
    paid_minor          bigint,
    pending_minor       bigint,
    refunded_minor      bigint,
    charged_back_minor  bigint,
    late_failed_minor   bigint,
    disputed_minor      bigint,
    net_paid_minor      bigint,
    outstanding_minor   bigint,
    state               text NOT NULL CHECK (state IN ('disputed', 'overpaid', 'paid', 'charged_back', 'refunded',
                                                       'partially_refunded', 'pending', 'partially_paid', 'unpaid',
                                                       'not_reconcilable')),
    flags               text[] NOT NULL DEFAULT '{}',
    problem             text,            -- not_reconcilable: why
    event_id            bigint,          -- the inbox event whose processing last changed it
    correlation_id      text,
    reconciled_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, tenant_id, invoice_id),
    FOREIGN KEY (organisation_id, tenant_id, invoice_id) REFERENCES xero_invoices (organisation_id, tenant_id, invoice_id)
);
CREATE INDEX invoice_payment_states_state_idx ON invoice_payment_states (organisation_id, state);

-- Per mirrored invoice, its payment state. An invoice mirrored before this migration has NULL amounts and state
-- until the payments sweep reconciles it (within a minute of the workers starting).
CREATE VIEW invoice_payment_state AS
SELECT i.organisation_id, i.tenant_id, i.invoice_id, i.settled_invoice_id,
       coalesce(s.currency, upper(i.currency_code)) AS currency,
       s.due_minor, s.paid_minor, s.pending_minor, s.refunded_minor, s.charged_back_minor, s.late_failed_minor,
       s.disputed_minor, s.net_paid_minor, s.outstanding_minor, s.state, s.flags
FROM xero_invoices i
LEFT JOIN invoice_payment_states s USING (organisation_id, tenant_id, invoice_id);

-- Payments that name no invoice (or name one settled cannot use): the admins' allocation queue.
CREATE VIEW unapplied_payments AS
SELECT p.organisation_id, p.id AS payment_id, p.provider, p.account, p.object_id, p.customer_id, p.amount_minor,
       p.received_minor, p.currency, p.status, p.link_wanted, p.link_error, p.created_at
FROM payments p
WHERE p.xero_invoice_id IS NULL AND p.provider <> 'xero';

-- The scheduled drift repair of Stripe and GoCardless (payments.c): up to when each organisation's objects were
-- listed and applied.
CREATE TABLE payments_sync_state (
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    provider         ledger_provider NOT NULL,
    synced_until     timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, provider)
);

COMMENT ON VIEW invoice_payment_state IS
    'Each mirrored invoice''s payment state, derived by gateway/domain/reconcile.c (docs/reconciliation.md).';
