-- SPDX-License-Identifier: MIT
-- 0025: the dunning evaluation, receipts and warnings (issue 11 items 3 and 4; docs/collections.md "Reminders and
-- dunning", "Receipts and warnings", "Unsubscribe"). The functions are in schema/functions/dunning.sql.
--
-- Nothing here holds "what was sent": the notification outbox does (0023), one row per dedupe key ever, so an
-- evaluation that runs twice, or on two instances at once, enqueues each step once. What this adds:
--
-- - dunning_epoch: when this migration ran. Receipts and mandate notices are found by state (a succeeded payment
--   without a receipt, an ended mandate without its notice), so that a crash between the ledger's commit and the
--   enqueue loses nothing; the epoch keeps a database that already holds years of payments from sending a receipt
--   for each of them on the first sweep: only facts recorded since then count.
-- - when and how a customer's reminders opt-out was last changed (customers.reminders_opt_out is 0023's).
CREATE TABLE dunning_epoch (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    since  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO dunning_epoch DEFAULT VALUES;

ALTER TABLE customers ADD COLUMN reminders_opt_out_at timestamptz;
ALTER TABLE customers ADD COLUMN reminders_opt_out_by text
    CHECK (reminders_opt_out_by IN ('unsubscribe', 'client', 'admin'));

-- the receipt sweep: succeeded payments applied to an invoice
CREATE INDEX payments_receipt_idx ON payments (organisation_id, id)
    WHERE xero_invoice_id IS NOT NULL AND provider IN ('stripe', 'gocardless');
-- an invoice's messages (the evaluation's and the admins' view of a timeline)
CREATE INDEX notifications_invoice_idx ON notifications (organisation_id, invoice_id) WHERE invoice_id IS NOT NULL;
