-- SPDX-License-Identifier: MIT
-- 0013: the write-back of provider payments to Xero (issue 9 item 6; docs/reconciliation.md "Write-back").
--
-- xero_writebacks is an outbox: one row per provider payment (payments.id) applied to a Xero invoice, saying how
-- much Xero should hold for it (target_minor) and what it holds from us (written_minor, xero_payment_id). The
-- payment processors plan rows in the transaction of their ledger facts (xero_writeback_plan); the sender
-- (gateway/domain/xero_writeback.c) claims due rows with a lease and brings Xero in line one call at a time. The
-- functions are in functions/xero_writeback.sql.

-- The Xero account (its Code) that an organisation's write-backs are paid into; NULL: SETTLED_XERO_PAYMENT_ACCOUNT.
ALTER TABLE organisations ADD COLUMN xero_payment_account text
    CONSTRAINT organisations_xero_payment_account_check CHECK (xero_payment_account ~ '^[A-Za-z0-9._-]{1,10}$');

CREATE TABLE xero_writebacks (
    id                  bigserial PRIMARY KEY,
    organisation_id     bigint NOT NULL REFERENCES organisations (id),
    payment_id          bigint NOT NULL REFERENCES payments (id) CONSTRAINT xero_writebacks_payment_key UNIQUE,
    tenant_id           uuid NOT NULL,           -- where the invoice is
    invoice_id          uuid NOT NULL,           -- the Xero InvoiceID the payment pays
    currency            currency_code NOT NULL,
    target_minor        bigint NOT NULL CHECK (target_minor >= 0),   -- what Xero should hold for the payment
    generation          integer NOT NULL DEFAULT 1 CHECK (generation >= 1), -- bumped at each new target
    written_minor       bigint NOT NULL DEFAULT 0 CHECK (written_minor >= 0), -- what Xero holds from us
    xero_payment_id     uuid,                    -- the Xero payment we created; NULL when none
    written_tenant_id   uuid,                    -- where it is (the target may move to another invoice)
    written_invoice_id  uuid,
    written_generation  integer,                 -- the generation whose PUT created it (its Reference)
    account_code        text,                    -- the account it was paid into
    paid_on             date NOT NULL,           -- the Date of the Xero payment
    status              text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('in_sync', 'pending', 'refused', 'dead', 'unconfigured')),
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0), -- claims since the last step that worked
    -- a call may have reached Xero without its outcome being recorded (a crash, a lost answer): before creating a
    -- payment, look in Xero for one of ours first
    unsure              boolean NOT NULL DEFAULT false,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_owner         text,                    -- the sender holding it; NULL when nobody does
    lease_until         timestamptz,
    last_error          text,                    -- refused, dead, unconfigured: why; pending: the last failure
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT xero_writebacks_written_check CHECK ((xero_payment_id IS NULL) = (written_minor = 0)),
    CONSTRAINT xero_writebacks_written_where_check
        CHECK (xero_payment_id IS NULL OR (written_tenant_id IS NOT NULL AND written_invoice_id IS NOT NULL))
);
-- the sender's claim: due rows only
CREATE INDEX xero_writebacks_due_idx ON xero_writebacks (next_attempt_at) WHERE status = 'pending';
-- the admins' queue, and the rows waiting for an account
CREATE INDEX xero_writebacks_attention_idx ON xero_writebacks (organisation_id, status)
    WHERE status IN ('refused', 'dead', 'unconfigured');
CREATE INDEX xero_writebacks_invoice_idx ON xero_writebacks (organisation_id, tenant_id, invoice_id);

COMMENT ON TABLE xero_writebacks IS
    'Outbox of provider payments written back to Xero invoices, one row per payment (docs/reconciliation.md).';
