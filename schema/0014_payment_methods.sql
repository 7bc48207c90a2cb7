-- SPDX-License-Identifier: MIT
-- 0014: what payment methods need beyond 0011 (issue 9; docs/data-model.md "Payment methods"): the provider's
-- customer a method belongs to and when the provider created it, and the providers' customers settled has seen, so
-- that a Stripe customer's explicit default method is remembered even when it arrives before the method itself.
-- The functions are in functions/payment_methods.sql.

-- cus_... or CU...: the provider's customer, so that a customer matched later links its methods
ALTER TABLE payment_methods ADD COLUMN provider_customer text COLLATE "C";
-- Stripe created, GoCardless created_at: "the newest usable method" is the provider's newest, not the one
-- settled happened to see last
ALTER TABLE payment_methods ADD COLUMN provider_created_at timestamptz;
CREATE INDEX payment_methods_provider_customer_idx ON payment_methods (organisation_id, provider, provider_customer)
    WHERE provider_customer IS NOT NULL;
CREATE INDEX payment_methods_customer_idx ON payment_methods (organisation_id, customer_id)
    WHERE customer_id IS NOT NULL;

-- One row per Stripe or GoCardless customer applied: the portal customer it matched (NULL while unmatched),
-- the default method the provider names (Stripe invoice_settings.default_payment_method) and whether the
-- provider deleted it. No name, email or address is kept here: those stay with the provider.
CREATE TABLE payment_customers (
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    provider         ledger_provider NOT NULL CHECK (provider IN ('stripe', 'gocardless')),
    external_id      text COLLATE "C" NOT NULL,
    customer_id      bigint,
    default_method   text COLLATE "C",
    deleted          boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_customers_pkey PRIMARY KEY (organisation_id, provider, external_id),
    CONSTRAINT payment_customers_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id)
);
CREATE INDEX payment_customers_customer_idx ON payment_customers (organisation_id, customer_id)
    WHERE customer_id IS NOT NULL;
