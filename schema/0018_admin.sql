-- SPDX-License-Identifier: MIT
-- 0018: what the admin routes (gateway/api/customers.c, terms.c; docs/api.md "Admin") need beyond 0002 and 0015:
-- archiving a customer, and payment terms (an organisation's default and a customer's override). The model of the
-- terms (due dates, collection) belongs to the collections issue; here they are stored and validated only. The
-- functions that write these are in schema/functions/admin.sql.

-- When an admin archived the customer (NULL: active). An archived customer is never a matching candidate (no rule
-- of match_rules links a provider customer to it, and the admin queue offers it to nobody); its existing links,
-- invoices and users stay as they are, and its clients can still sign in (disable them to lock them out).
ALTER TABLE customers ADD COLUMN archived_at timestamptz;

-- Xero's term types (PaymentTerms.Sales of an organisation or a contact): a day number whose meaning depends on the
-- type. The "of month" types name a day of the month (1..31, clamped to the month's last day when computed); the
-- "days after" types a number of days (0..365, settled's own bound).
CREATE TABLE payment_terms (
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    customer_id      bigint,          -- NULL: the organisation's default
    type             text NOT NULL
                     CHECK (type IN ('DAYSAFTERBILLDATE', 'DAYSAFTERBILLMONTH', 'OFCURRENTMONTH', 'OFFOLLOWINGMONTH')),
    day              integer NOT NULL,
    auto_collect     boolean NOT NULL DEFAULT false,
    preferred_method text CHECK (preferred_method IN ('card', 'direct_debit')),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_terms_day_check CHECK (CASE WHEN type IN ('OFCURRENTMONTH', 'OFFOLLOWINGMONTH')
                                                   THEN day BETWEEN 1 AND 31 ELSE day BETWEEN 0 AND 365 END),
    CONSTRAINT payment_terms_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id)
);
CREATE UNIQUE INDEX payment_terms_default_key ON payment_terms (organisation_id) WHERE customer_id IS NULL;
CREATE UNIQUE INDEX payment_terms_customer_key ON payment_terms (organisation_id, customer_id)
    WHERE customer_id IS NOT NULL;
