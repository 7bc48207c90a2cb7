-- SPDX-License-Identifier: MIT
-- 0011: the payments ledger (issue 9; docs/reconciliation.md, docs/data-model.md "The ledger").
--
-- ledger_entries holds facts: "provider object X was in state S with amount A", keyed by the provider's own ids
-- and the state, so that a duplicate delivery, a replay or a refetch adds nothing. It is append-only (a trigger
-- refuses UPDATE, DELETE and TRUNCATE). payments, refunds, disputes and payment_methods are the current view of
-- the same objects, one row each, updated as facts arrive; reconciliation (gateway/domain/reconcile.c) reads
-- them. Money is bigint minor units of an ISO 4217 currency with the currency's own exponent.

CREATE DOMAIN currency_code AS text COLLATE "C" CHECK (VALUE ~ '^[A-Z]{3}$');
CREATE DOMAIN ledger_provider AS text COLLATE "C" CHECK (VALUE IN ('stripe', 'gocardless', 'xero'));

CREATE TABLE payments (
    id                 bigserial PRIMARY KEY,
    organisation_id    bigint NOT NULL REFERENCES organisations (id),
    provider           ledger_provider NOT NULL,
    account            text COLLATE "C",             -- Stripe Connect account, GoCardless creditor
    object_id          text COLLATE "C" NOT NULL,    -- pi_..., PM...
    customer_id        bigint,                       -- the portal customer, when matched
    xero_tenant_id     text COLLATE "C",             -- the invoice it pays, when linked
    xero_invoice_id    uuid,
    link_key           text,                         -- which metadata key linked it: xero_invoice_id, settled_invoice_id
    amount_minor       bigint NOT NULL CHECK (amount_minor >= 0),
    received_minor     bigint NOT NULL DEFAULT 0 CHECK (received_minor >= 0),  -- Stripe amount_received
    refunded_minor     bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),  -- GoCardless amount_refunded
    currency           currency_code NOT NULL,
    status             text NOT NULL,                -- the provider's own status word
    was_collected      boolean NOT NULL DEFAULT false, -- GoCardless: reached confirmed or paid_out once
    chargeback_cancelled boolean NOT NULL DEFAULT false,
    method             text,                         -- card, bacs, sepa_core, ...
    from_writeback     boolean NOT NULL DEFAULT false, -- xero: a payment settled wrote back itself
    raw                jsonb NOT NULL,               -- the last refetched object
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_object_key UNIQUE (organisation_id, provider, object_id),
    CONSTRAINT payments_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id)
);
CREATE INDEX payments_invoice_idx ON payments (organisation_id, xero_tenant_id, xero_invoice_id)
    WHERE xero_invoice_id IS NOT NULL;
CREATE INDEX payments_unapplied_idx ON payments (organisation_id, customer_id) WHERE xero_invoice_id IS NULL;

CREATE TABLE refunds (
    id               bigserial PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    provider         ledger_provider NOT NULL,
    object_id        text COLLATE "C" NOT NULL,      -- re_..., RF...
    payment_id       bigint NOT NULL REFERENCES payments (id),
    amount_minor     bigint NOT NULL CHECK (amount_minor >= 0),
    currency         currency_code NOT NULL,
    status           text NOT NULL,
    raw              jsonb NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refunds_object_key UNIQUE (organisation_id, provider, object_id)
);
CREATE INDEX refunds_payment_idx ON refunds (payment_id);

CREATE TABLE disputes (
    id               bigserial PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    provider         ledger_provider NOT NULL,
    object_id        text COLLATE "C" NOT NULL,      -- dp_...
    payment_id       bigint NOT NULL REFERENCES payments (id),
    amount_minor     bigint NOT NULL CHECK (amount_minor >= 0),
    currency         currency_code NOT NULL,
    status           text NOT NULL,
    raw              jsonb NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT disputes_object_key UNIQUE (organisation_id, provider, object_id)
);
CREATE INDEX disputes_payment_idx ON disputes (payment_id);

CREATE TABLE ledger_entries (
    id               bigserial PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    provider         ledger_provider NOT NULL,
    object_type      text NOT NULL CHECK (object_type IN ('payment', 'refund', 'dispute', 'payout')),
    object_id        text COLLATE "C" NOT NULL,
    state            text NOT NULL,                  -- the object's status when the fact was observed
    amount_minor     bigint NOT NULL CHECK (amount_minor >= 0),
    currency         currency_code NOT NULL,
    event_id         bigint,                         -- the inbox event whose processing observed it
    correlation_id   text,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    -- a fact is recorded once: the same object in the same state with the same amount adds nothing
    CONSTRAINT ledger_entries_fact_key UNIQUE (organisation_id, provider, object_type, object_id, state, amount_minor)
);
CREATE INDEX ledger_entries_object_idx ON ledger_entries (organisation_id, provider, object_id);

CREATE TABLE payment_methods (
    id                     bigserial PRIMARY KEY,
    organisation_id        bigint NOT NULL REFERENCES organisations (id),
    provider               ledger_provider NOT NULL,
    object_id              text COLLATE "C" NOT NULL, -- pm_..., MD...
    customer_id            bigint,
    kind                   text NOT NULL CHECK (kind IN ('card', 'direct_debit')),
    brand                  text,                      -- card: visa, mastercard, ...
    last4                  text CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month              smallint CHECK (exp_month BETWEEN 1 AND 12),
    exp_year               smallint,
    fingerprint            text,
    scheme                 text,                      -- direct debit: bacs, sepa_core, ...
    bank_name              text,
    account_number_ending  text CHECK (account_number_ending ~ '^[0-9A-Za-z]{1,4}$'),
    status                 text NOT NULL,
    is_default             boolean NOT NULL DEFAULT false,
    raw                    jsonb NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_methods_object_key UNIQUE (organisation_id, provider, object_id),
    CONSTRAINT payment_methods_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id)
);
-- one default method per customer
CREATE UNIQUE INDEX payment_methods_default_key ON payment_methods (organisation_id, customer_id)
    WHERE is_default;

-- The ledger is append-only; the functions' current text is in functions/ledger.sql.
CREATE FUNCTION ledger_entries_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: a fact is never changed or removed'
        USING ERRCODE = 'insufficient_privilege', TABLE = 'ledger_entries';
END
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only();

COMMENT ON TABLE ledger_entries IS
    'Append-only payment facts, one per provider object, state and amount (docs/reconciliation.md).';
