-- SPDX-License-Identifier: MIT
-- portal_seed.sql: the database of tests/load/bench_portal.sh, written through the schema's own tables and
-- constraints into a database that `settled migrate` made: 2 organisations, :customers portal customers (half
-- each), one Xero contact per customer linked to it (xero_contacts.customer_id and customer_links), :invoices
-- Xero sales invoices (ACCREC) spread evenly over the customers, 2 or 3 lines each, with the statuses, currencies
-- and amounts of a real ledger (GBP, EUR, JPY; 4-decimal unit prices; credits, part payments), the Stripe and
-- GoCardless payments that paid some of them (payments, refunds, ledger_entries) and each invoice's reconciled
-- payment state (invoice_payment_states, as docs/reconciliation.md defines it), 3 % of them left unreconciled.
--
--   psql -v ON_ERROR_STOP=1 -v customers=1000 -v invoices=100000 -f tests/load/portal_seed.sql DB
--
-- Deterministic: every choice is a hash of the row's number, so two runs seed the same data (and the same
-- settled_invoice_id values are not: they are the schema's random default). Nothing is written outside these
-- tables; the helpers are temporary (pg_temp). One transaction, then VACUUM ANALYZE.
\set ON_ERROR_STOP on
\if :{?customers}
\else
\set customers 1000
\endif
\if :{?invoices}
\else
\set invoices 100000
\endif

BEGIN;

-- u(key): a uniform number in [0, 1) from the key's md5 (deterministic, no random())
CREATE FUNCTION pg_temp.u(k text) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT ('x' || substr(md5(k), 1, 8))::bit(32)::bigint / 4294967296.0 $$;
-- uid(key): a uuid from the key's md5
CREATE FUNCTION pg_temp.uid(k text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT md5(k)::uuid $$;
-- a Xero /Date(ms+0000)/ timestamp
CREATE FUNCTION pg_temp.xdate(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '/Date(' || (extract(epoch FROM t) * 1000)::bigint || '+0000)/' $$;

CREATE TEMP TABLE b_org (k int PRIMARY KEY, id bigint NOT NULL, tenant uuid NOT NULL);
WITH ins AS (
    INSERT INTO organisations (slug, name)
    VALUES ('bench-north', 'Northwind Trading Ltd'), ('bench-south', 'Southwind Handels GmbH')
    RETURNING id, slug)
INSERT INTO b_org SELECT CASE slug WHEN 'bench-north' THEN 0 ELSE 1 END, id,
                         pg_temp.uid('tenant:' || slug) FROM ins;

-- customers: n = 1 .. :customers, organisation n mod 2, a billing currency each (60 % GBP, 30 % EUR, 10 % JPY)
CREATE TEMP TABLE b_cust AS
SELECT n, (n - 1) % 2 AS k, name,
       'accounts@' || lower(replace(name, ' ', '-')) || '-' || n || '.example' AS email,
       CASE WHEN ru < 0.6 THEN 'GBP' WHEN ru < 0.9 THEN 'EUR' ELSE 'JPY' END AS currency,
       pg_temp.uid('contact:' || n) AS contact, NULL::bigint AS id
FROM (SELECT n, pg_temp.u('currency:' || n) AS ru,
             (ARRAY['Acme', 'Bluebird', 'Cobalt', 'Dunmore', 'Elm Street', 'Fjord', 'Granite', 'Harbour', 'Ivy',
                    'Juniper', 'Kestrel', 'Lumen', 'Meridian', 'Northgate', 'Oakridge', 'Pinnacle', 'Quayside',
                    'Redwood', 'Saltmarsh', 'Tidewater'])[1 + n % 20] || ' ' ||
             (ARRAY['Trading', 'Logistics', 'Studios', 'Engineering', 'Foods', 'Consulting', 'Hardware', 'Design',
                    'Dental', 'Joinery'])[1 + (n / 20) % 10] || ' ' ||
             (ARRAY['Ltd', 'LLP', 'GmbH', 'KK', 'SARL', 'BV'])[1 + (n / 200) % 6] AS name
      FROM generate_series(1, :customers) n) c;

INSERT INTO customers (organisation_id, name, email, tax_number, account_number, created_at, updated_at)
SELECT o.id, c.name, c.email, 'GB' || lpad((100000000 + c.n * 7919 % 899999999)::text, 9, '0'),
       'CUST-' || lpad(c.n::text, 6, '0'), timestamptz '2023-12-01 09:00:00+00' + c.n * interval '7 minutes',
       timestamptz '2023-12-01 09:00:00+00' + c.n * interval '7 minutes'
FROM b_cust c JOIN b_org o USING (k)
ORDER BY c.n;
UPDATE b_cust c SET id = cu.id
FROM customers cu JOIN b_org o ON o.id = cu.organisation_id
WHERE o.k = c.k AND cu.account_number = 'CUST-' || lpad(c.n::text, 6, '0');

-- one Xero contact per customer, linked to it as matching would (by email)
INSERT INTO xero_contacts (organisation_id, tenant_id, contact_id, name, email, tax_number, account_number,
                           contact_status, is_customer, is_supplier, updated_date_utc, raw, fetched_at, customer_id)
SELECT o.id, o.tenant, c.contact, c.name, c.email, NULL, 'CUST-' || lpad(c.n::text, 6, '0'), 'ACTIVE', true, false,
       timestamptz '2023-12-02 10:00:00+00' + c.n * interval '7 minutes',
       jsonb_build_object('ContactID', c.contact, 'ContactStatus', 'ACTIVE', 'Name', c.name, 'EmailAddress', c.email,
                          'AccountNumber', 'CUST-' || lpad(c.n::text, 6, '0'), 'IsCustomer', true, 'IsSupplier', false,
                          'DefaultCurrency', c.currency,
                          'UpdatedDateUTC', pg_temp.xdate(timestamptz '2023-12-02 10:00:00+00' + c.n * interval '7 minutes')),
       now(), c.id
FROM b_cust c JOIN b_org o USING (k)
ORDER BY c.n;
INSERT INTO customer_links (organisation_id, provider, external_id, customer_id, rule)
SELECT o.id, 'xero', c.contact::text, c.id, 'email' FROM b_cust c JOIN b_org o USING (k);

-- invoices: i = 1 .. :invoices, customer (i - 1) mod :customers + 1. Statuses: 4 % DRAFT, 2 % SUBMITTED, 2 % DELETED,
-- 4 % VOIDED, 50 % PAID, 38 % AUTHORISED; dated over two years from 2024-01-01, due 14, 30 or 60 days later.
CREATE TEMP TABLE b_inv AS
SELECT i, c.n, c.k, c.id AS customer_id, c.contact, c.currency, CASE c.currency WHEN 'JPY' THEN 0 ELSE 2 END AS e,
       CASE WHEN rs < 0.04 THEN 'DRAFT' WHEN rs < 0.06 THEN 'SUBMITTED' WHEN rs < 0.08 THEN 'DELETED'
            WHEN rs < 0.12 THEN 'VOIDED' WHEN rs < 0.62 THEN 'PAID' ELSE 'AUTHORISED' END AS status,
       d, d + (ARRAY[14, 30, 30, 60])[1 + floor(pg_temp.u('terms:' || i) * 4)::int] AS due_date,
       pg_temp.u('pay:' || i) AS rp, pg_temp.uid('invoice:' || i) AS invoice_id
FROM (SELECT i, pg_temp.u('status:' || i) AS rs, date '2024-01-01' + floor(pg_temp.u('date:' || i) * 700)::int AS d
      FROM generate_series(1, :invoices) i) g
JOIN b_cust c ON c.n = (g.i - 1) % :customers + 1;

-- 2 or 3 lines per invoice: hours or units at a unit price (5 % of GBP lines priced to 4 decimals, as Xero's
-- unitdp=4 allows), line and tax amounts rounded to the currency's decimals (VAT 20 %, 19 %, consumption tax 10 %)
CREATE TEMP TABLE b_line AS
SELECT v.i, p AS position, v.e, q AS quantity, ua AS unit_amount, round(q * ua, v.e) AS line_amount,
       round(round(q * ua, v.e) * CASE v.currency WHEN 'GBP' THEN 0.20 WHEN 'EUR' THEN 0.19 ELSE 0.10 END, v.e)
           AS tax_amount,
       (ARRAY['Consulting hours', 'Support plan (monthly)', 'Design work', 'Hardware: replacement unit',
              'Site visit', 'Licence renewal', 'Training session', 'Delivery and handling'])[1 + floor(rd * 8)::int]
           AS description,
       (ARRAY['200', '200', '260', '400'])[1 + floor(rd * 4)::int] AS account_code,
       CASE WHEN rd < 0.5 THEN 'SVC-' || (1 + floor(rd * 40)::int) END AS item_code,
       CASE v.currency WHEN 'GBP' THEN 'OUTPUT2' WHEN 'EUR' THEN 'OUTPUT' ELSE 'TAX010' END AS tax_type
FROM b_inv v
CROSS JOIN LATERAL generate_series(1, 2 + (pg_temp.u('lines:' || v.i) < 0.5)::int) p
CROSS JOIN LATERAL (SELECT pg_temp.u('q:' || v.i || ':' || p) AS rq, pg_temp.u('a:' || v.i || ':' || p) AS ra,
                           pg_temp.u('d:' || v.i || ':' || p) AS rd) r
CROSS JOIN LATERAL (SELECT CASE WHEN r.rq < 0.1 THEN 0.5 + floor(r.rq * 80) / 2 ELSE 1 + floor(r.rq * 8) END AS q,
                           CASE WHEN v.currency = 'JPY' THEN round(2000 + r.ra * 48000, -1)
                                WHEN v.currency = 'GBP' AND r.rd > 0.95 THEN round(5 + r.ra * 95, 4)
                                ELSE round(20 + r.ra * 480, 2) END AS ua) x;

-- the invoices' amounts: totals from the lines; 3 % of AUTHORISED and PAID invoices credited 10 %; PAID in full;
-- a quarter of AUTHORISED part-paid (40 %); VOIDED hold nothing
CREATE TEMP TABLE b_amt AS
SELECT v.i, t.sub_total, t.total_tax, t.sub_total + t.total_tax AS total, cr.credited,
       CASE v.status WHEN 'PAID' THEN t.sub_total + t.total_tax - cr.credited
                     WHEN 'AUTHORISED' THEN CASE WHEN v.rp < 0.25 THEN round((t.sub_total + t.total_tax - cr.credited) * 0.4, v.e)
                                                 ELSE 0 END
                     ELSE 0 END AS paid
FROM b_inv v
JOIN (SELECT i, sum(line_amount) AS sub_total, sum(tax_amount) AS total_tax FROM b_line GROUP BY i) t USING (i)
CROSS JOIN LATERAL (SELECT CASE WHEN v.status IN ('AUTHORISED', 'PAID') AND pg_temp.u('credit:' || v.i) < 0.03
                                THEN round((t.sub_total + t.total_tax) * 0.1, v.e) ELSE 0 END AS credited) cr;

INSERT INTO xero_invoices (organisation_id, tenant_id, invoice_id, invoice_number, type, status, contact_id, reference,
                           currency_code, date, due_date, line_amount_types, sub_total, total_tax, total, amount_due,
                           amount_paid, amount_credited, updated_date_utc, raw, fetched_at)
SELECT o.id, o.tenant, v.invoice_id, 'INV-' || lpad(v.i::text, 6, '0'), 'ACCREC', v.status, v.contact,
       CASE WHEN v.i % 3 = 0 THEN 'PO-' || (4000 + v.i % 997) END, v.currency, v.d, v.due_date, 'Exclusive',
       a.sub_total, a.total_tax, a.total,
       CASE WHEN v.status = 'VOIDED' THEN 0 ELSE a.total - a.credited - a.paid END, a.paid, a.credited, u.at,
       jsonb_build_object('Type', 'ACCREC', 'InvoiceID', v.invoice_id, 'InvoiceNumber', 'INV-' || lpad(v.i::text, 6, '0'),
                          'Contact', jsonb_build_object('ContactID', v.contact), 'Status', v.status,
                          'LineAmountTypes', 'Exclusive', 'CurrencyCode', v.currency,
                          'Date', pg_temp.xdate(v.d::timestamp AT TIME ZONE 'UTC'), 'DateString', v.d::text || 'T00:00:00',
                          'DueDate', pg_temp.xdate(v.due_date::timestamp AT TIME ZONE 'UTC'),
                          'DueDateString', v.due_date::text || 'T00:00:00',
                          'SubTotal', a.sub_total, 'TotalTax', a.total_tax, 'Total', a.total,
                          'AmountDue', CASE WHEN v.status = 'VOIDED' THEN 0 ELSE a.total - a.credited - a.paid END,
                          'AmountPaid', a.paid, 'AmountCredited', a.credited, 'UpdatedDateUTC', pg_temp.xdate(u.at)),
       u.at
FROM b_inv v JOIN b_amt a USING (i) JOIN b_org o USING (k)
CROSS JOIN LATERAL (SELECT v.d + interval '1 day' + v.i % 86400 * interval '1 second' AS at) u
ORDER BY v.i;

INSERT INTO xero_invoice_lines (organisation_id, tenant_id, invoice_id, line_item_id, synthetic_id, position, description,
                                quantity, unit_amount, line_amount, tax_amount, discount_rate, account_code, item_code,
                                tax_type, tracking)
SELECT o.id, o.tenant, v.invoice_id, pg_temp.uid('line:' || l.i || ':' || l.position), false, l.position, l.description,
       l.quantity, l.unit_amount, l.line_amount, l.tax_amount, NULL, l.account_code, l.item_code, l.tax_type, '[]'
FROM b_line l JOIN b_inv v USING (i) JOIN b_org o USING (k)
ORDER BY l.i, l.position;

-- provider payments: 60 % of the PAID invoices and the part payments of 15 % of AUTHORISED ones were paid through
-- Stripe (cards; every JPY one) or GoCardless (Bacs, SEPA), the rest in Xero; 5 % of AUTHORISED unpaid ones have a
-- GoCardless payment submitted (pending); 2 % of the Stripe-paid PAID invoices were refunded a quarter
CREATE TEMP TABLE b_pay AS
SELECT v.i, v.k, v.customer_id, v.invoice_id, v.currency, v.e, p.provider, p.status, p.amount,
       CASE p.provider WHEN 'stripe' THEN 'pi_' || substr(md5('pi:' || v.i), 1, 24)
                       ELSE 'PM' || upper(substr(md5('pm:' || v.i), 1, 12)) END AS object_id,
       CASE WHEN p.provider = 'stripe' THEN 'card' WHEN v.currency = 'GBP' THEN 'bacs' ELSE 'sepa_core' END AS method,
       v.d + floor(pg_temp.u('paid:' || v.i) * 20)::int AS paid_on,
       p.provider = 'stripe' AND v.status = 'PAID' AND pg_temp.u('refund:' || v.i) < 0.02 AS refunded
FROM b_inv v JOIN b_amt a USING (i)
CROSS JOIN LATERAL (
    SELECT CASE WHEN v.currency = 'JPY' OR pg_temp.u('provider:' || v.i) < 0.7 THEN 'stripe' ELSE 'gocardless' END AS provider,
           CASE WHEN v.status = 'AUTHORISED' AND a.paid = 0 THEN 'submitted'
                WHEN v.currency = 'JPY' OR pg_temp.u('provider:' || v.i) < 0.7 THEN 'succeeded' ELSE 'paid_out' END AS status,
           (CASE WHEN a.paid = 0 THEN a.total - a.credited ELSE a.paid END * 10 ^ v.e)::bigint AS amount) p
WHERE (v.status = 'PAID' AND v.rp < 0.6) OR (v.status = 'AUTHORISED' AND a.paid > 0 AND v.rp < 0.15)
   OR (v.status = 'AUTHORISED' AND a.paid = 0 AND v.rp >= 0.25 AND v.rp < 0.30 AND v.currency <> 'JPY');
-- a submitted payment is GoCardless's
UPDATE b_pay SET provider = 'gocardless', object_id = 'PM' || upper(substr(md5('pm:' || i), 1, 12)),
                 method = CASE currency WHEN 'GBP' THEN 'bacs' ELSE 'sepa_core' END
WHERE status = 'submitted';

INSERT INTO payments (organisation_id, provider, account, object_id, customer_id, xero_tenant_id, xero_invoice_id, link_key,
                      amount_minor, received_minor, refunded_minor, currency, status, was_collected, method, raw,
                      created_at, updated_at, observed_at, paid_on)
SELECT o.id, p.provider, NULL, p.object_id, p.customer_id, o.tenant::text, p.invoice_id, 'xero_invoice_id', p.amount,
       CASE WHEN p.provider = 'stripe' THEN p.amount ELSE 0 END, 0, p.currency, p.status, p.status = 'paid_out',
       p.method,
       CASE p.provider
           WHEN 'stripe' THEN jsonb_build_object('id', p.object_id, 'object', 'payment_intent', 'amount', p.amount,
                                                 'amount_received', p.amount, 'currency', lower(p.currency),
                                                 'status', p.status, 'payment_method_types', jsonb_build_array('card'),
                                                 'metadata', jsonb_build_object('xero_invoice_id', p.invoice_id))
           ELSE jsonb_build_object('id', p.object_id, 'amount', p.amount, 'amount_refunded', 0, 'currency', p.currency,
                                   'status', p.status, 'charge_date', p.paid_on,
                                   'metadata', jsonb_build_object('xero_invoice_id', p.invoice_id)) END,
       t.at, t.at, t.at, p.paid_on
FROM b_pay p JOIN b_org o USING (k)
CROSS JOIN LATERAL (SELECT p.paid_on + interval '9 hours' + p.i % 28800 * interval '1 second' AS at) t
ORDER BY p.paid_on, p.i;

INSERT INTO refunds (organisation_id, provider, object_id, payment_id, amount_minor, currency, status, raw, updated_at,
                     observed_at)
SELECT o.id, 'stripe', 're_' || substr(md5('re:' || p.i), 1, 24), pay.id, p.amount / 4, p.currency, 'succeeded',
       jsonb_build_object('id', 're_' || substr(md5('re:' || p.i), 1, 24), 'object', 'refund', 'amount', p.amount / 4,
                          'currency', lower(p.currency), 'payment_intent', p.object_id, 'status', 'succeeded'),
       pay.created_at + interval '3 days', pay.created_at + interval '3 days'
FROM b_pay p JOIN b_org o USING (k)
JOIN payments pay ON pay.organisation_id = o.id AND pay.provider = p.provider AND pay.object_id = p.object_id
WHERE p.refunded;

INSERT INTO ledger_entries (organisation_id, provider, object_type, object_id, state, amount_minor, currency,
                            correlation_id, recorded_at)
SELECT organisation_id, provider, 'payment', object_id, status, amount_minor, currency, 'bench-seed', created_at
FROM payments
UNION ALL
SELECT organisation_id, provider, 'refund', object_id, status, amount_minor, currency, 'bench-seed', updated_at
FROM refunds;

-- each AUTHORISED or PAID invoice's payment state, as reconciliation derives it (3 % not reconciled yet)
INSERT INTO invoice_payment_states (organisation_id, tenant_id, invoice_id, currency, due_minor, paid_minor,
                                    pending_minor, refunded_minor, charged_back_minor, late_failed_minor,
                                    disputed_minor, net_paid_minor, outstanding_minor, state, flags, correlation_id,
                                    reconciled_at)
SELECT o.id, o.tenant, v.invoice_id, v.currency, m.due, m.paid, m.pending, m.refunded, 0, 0, 0,
       m.paid - m.refunded, m.due - (m.paid - m.refunded),
       CASE WHEN m.paid - m.refunded > m.due AND m.paid > 0 THEN 'overpaid'
            WHEN m.paid - m.refunded = m.due THEN 'paid'
            WHEN m.refunded > 0 AND m.paid - m.refunded <= 0 THEN 'refunded'
            WHEN m.refunded > 0 THEN 'partially_refunded'
            WHEN m.pending > 0 THEN 'pending'
            WHEN m.paid - m.refunded > 0 THEN 'partially_paid'
            ELSE 'unpaid' END,
       '{}', 'bench-seed', now()
FROM b_inv v JOIN b_amt a USING (i) JOIN b_org o USING (k)
LEFT JOIN b_pay p USING (i)
CROSS JOIN LATERAL (
    SELECT ((a.total - a.credited) * 10 ^ v.e)::bigint AS due, (a.paid * 10 ^ v.e)::bigint AS paid,
           CASE WHEN p.status = 'submitted' THEN p.amount ELSE 0 END AS pending,
           CASE WHEN p.refunded THEN p.amount / 4 ELSE 0 END AS refunded) m
WHERE v.status IN ('AUTHORISED', 'PAID') AND pg_temp.u('reconciled:' || v.i) >= 0.03;

COMMIT;

VACUUM ANALYZE customers, customer_links, xero_contacts, xero_invoices, xero_invoice_lines, payments, refunds,
    ledger_entries, invoice_payment_states;
