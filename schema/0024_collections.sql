-- SPDX-License-Identifier: MIT
-- 0024: automatic collection on the due date (issue 11 item 2; docs/collections.md, "Automatic collection").
--
-- collection_attempts is the outbox of the collector (gateway/domain/collector.c): one row per (invoice, attempt
-- number), ever, planned by collect_plan in the transaction that checked the ledger (schema/functions/
-- collections.sql), sent once through gw_fetch under the Idempotency-Key settled-collect-<invoice>-<attempt>, and
-- brought to its outcome by the payment's webhook (the trigger on payments below). collection_pauses holds the
-- admins' pauses, per customer and per invoice. The functions' current text is in functions/collections.sql.

CREATE TABLE collection_attempts (
    id                  bigserial PRIMARY KEY,
    organisation_id     bigint NOT NULL REFERENCES organisations (id),
    customer_id         bigint NOT NULL,
    tenant_id           uuid NOT NULL,
    invoice_id          uuid NOT NULL,                 -- the Xero InvoiceID
    settled_invoice_id  text COLLATE "C" NOT NULL,
    attempt             integer NOT NULL CHECK (attempt >= 1),
    method              text NOT NULL CHECK (method IN ('card', 'direct_debit')),
    provider            ledger_provider NOT NULL CHECK (provider IN ('stripe', 'gocardless')),
    source              text COLLATE "C",              -- the webhook source whose API key is used; NULL: default
    account             text COLLATE "C",              -- Stripe connected account, GoCardless creditor; NULL: own
    provider_customer   text COLLATE "C",              -- cus_... (Stripe needs it with a saved method)
    payment_method      text COLLATE "C" NOT NULL,     -- pm_... or MD...
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),  -- ISO minor units, fixed at planning
    currency            currency_code NOT NULL,
    charge_date         date NOT NULL,                 -- planned; GoCardless's answer replaces it
    retry_if_possible   boolean NOT NULL DEFAULT false, -- GoCardless: its own retries
    status              text NOT NULL DEFAULT 'planned'
                        CHECK (status IN ('planned', 'sending', 'submitted', 'succeeded', 'failed', 'action_required',
                                          'cancelled', 'dead')),
    provider_object_id  text COLLATE "C",              -- pi_... or PM...
    failure_code        text,                          -- Stripe's decline code, GoCardless's status, or why
    failure_message     text,
    tries               integer NOT NULL DEFAULT 0,    -- claims by a sender
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_owner         text,
    lease_until         timestamptz,
    notified_at         timestamptz,                   -- the collection_failed notice was enqueued
    planned_at          timestamptz NOT NULL,          -- the planning round's instant (p_now)
    submitted_at        timestamptz,
    completed_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT collection_attempts_invoice_attempt_key UNIQUE (organisation_id, tenant_id, invoice_id, attempt),
    CONSTRAINT collection_attempts_invoice_fkey FOREIGN KEY (organisation_id, tenant_id, invoice_id)
        REFERENCES xero_invoices (organisation_id, tenant_id, invoice_id),
    CONSTRAINT collection_attempts_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id)
);
CREATE UNIQUE INDEX collection_attempts_object_key ON collection_attempts (organisation_id, provider, provider_object_id)
    WHERE provider_object_id IS NOT NULL;
CREATE INDEX collection_attempts_due_idx ON collection_attempts (next_attempt_at) WHERE status IN ('planned', 'sending');
CREATE INDEX collection_attempts_notice_idx ON collection_attempts (id)
    WHERE status IN ('failed', 'action_required') AND notified_at IS NULL;
CREATE INDEX collection_attempts_settled_invoice_idx ON collection_attempts (organisation_id, settled_invoice_id);

-- A pause: of every invoice of a customer (customer_id), or of one invoice (tenant_id, invoice_id).
CREATE TABLE collection_pauses (
    id                  bigserial PRIMARY KEY,
    organisation_id     bigint NOT NULL REFERENCES organisations (id),
    customer_id         bigint,
    tenant_id           uuid,
    invoice_id          uuid,
    settled_invoice_id  text COLLATE "C",
    reason              text NOT NULL,
    paused_by           text NOT NULL,                 -- the audit actor, e.g. user:12
    paused_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT collection_pauses_one_target CHECK ((customer_id IS NULL) <> (invoice_id IS NULL)),
    CONSTRAINT collection_pauses_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id),
    CONSTRAINT collection_pauses_invoice_fkey FOREIGN KEY (organisation_id, tenant_id, invoice_id)
        REFERENCES xero_invoices (organisation_id, tenant_id, invoice_id)
);
CREATE UNIQUE INDEX collection_pauses_customer_key ON collection_pauses (organisation_id, customer_id)
    WHERE customer_id IS NOT NULL;
CREATE UNIQUE INDEX collection_pauses_invoice_key ON collection_pauses (organisation_id, tenant_id, invoice_id)
    WHERE invoice_id IS NOT NULL;

-- The outcome of an attempt arrives with its payment: every Stripe or GoCardless payment written maps its status
-- back to the attempt that created it (collect_apply_payment). This first text is replaced by functions/
-- collections.sql.
CREATE FUNCTION collect_payment_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;
CREATE TRIGGER payments_collection_outcome AFTER INSERT OR UPDATE ON payments
    FOR EACH ROW WHEN (NEW.provider IN ('stripe', 'gocardless')) EXECUTE FUNCTION collect_payment_trigger();

COMMENT ON TABLE collection_attempts IS
    'The collector''s outbox: one row per invoice and attempt, ever (docs/collections.md, "Automatic collection").';
