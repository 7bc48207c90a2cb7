-- SPDX-License-Identifier: MIT
-- 0022: payment terms beyond 0018 (docs/collections.md): the organisation's time zone (its "today" for due dates),
-- where the organisation's default terms came from (an admin, or the Xero organisation's PaymentTerms.Sales read
-- when connected), and dunning plans (an organisation's plan and a customer's override), stored and validated only:
-- nothing evaluates them yet. The functions are in schema/functions/terms.sql.

-- An IANA zone name of PostgreSQL's tz database (pg_timezone_names); terms_timezone_put refuses any other. A CHECK
-- cannot read pg_timezone_names, so the one function that writes it validates.
ALTER TABLE organisations ADD COLUMN timezone text NOT NULL DEFAULT 'UTC';

-- 'admin': set through PUT /v1/admin/terms (or a customer's override); 'xero': the Xero organisation's
-- PaymentTerms.Sales, stored by the mirror only while no admin has set the default, and replaced by an admin's.
ALTER TABLE payment_terms ADD COLUMN source text NOT NULL DEFAULT 'admin' CHECK (source IN ('admin', 'xero'));
ALTER TABLE payment_terms ADD CONSTRAINT payment_terms_source_check_customer
    CHECK (source = 'admin' OR customer_id IS NULL);

-- A dunning plan: its steps relative to the invoice's due date, as a JSON array of
-- {"offset_days": -60..90, "channel": "email"|"portal", "template": one of terms_dunning_templates()}, sorted by
-- offset_days, the offsets unique, at most 10 steps (terms_dunning_steps_refusal). customer_id NULL: the
-- organisation's plan; without that row the default plan (terms_dunning_default_steps) applies. A customer's row
-- overrides the organisation's plan for its invoices; an empty array sends that customer nothing.
CREATE TABLE dunning_plans (
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    customer_id      bigint,
    steps            jsonb NOT NULL CHECK (jsonb_typeof(steps) = 'array' AND jsonb_array_length(steps) <= 10),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dunning_plans_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id)
);
CREATE UNIQUE INDEX dunning_plans_default_key ON dunning_plans (organisation_id) WHERE customer_id IS NULL;
CREATE UNIQUE INDEX dunning_plans_customer_key ON dunning_plans (organisation_id, customer_id)
    WHERE customer_id IS NOT NULL;
