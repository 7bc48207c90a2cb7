-- SPDX-License-Identifier: MIT
-- 0016: the order of payment-method observations (docs/reconciliation.md, "Payment methods under reordering").
--
-- Stripe and GoCardless events arrive out of order and two workers may fetch one object at once, so the copy a
-- worker applies may be older than the one already stored (a card detached later re-attached by a stale copy, a
-- mandate's status going back). As for payments (0012), each row keeps the claim time of the fetch that wrote it
-- (observed_at, the database's time at the claim) and a copy observed earlier than that changes nothing. The
-- functions are in functions/payment_methods.sql.
--
-- Numbered 0016 (0015 is taken by another change being made at the same time): `settled migrate` applies every
-- numbered file it has not applied yet, in name order, and needs no contiguous numbers. This file depends only on
-- 0011 and 0014.

ALTER TABLE payment_methods ADD COLUMN observed_at timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE payment_customers ADD COLUMN observed_at timestamptz NOT NULL DEFAULT '-infinity';
