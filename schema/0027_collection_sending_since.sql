-- SPDX-License-Identifier: MIT
-- 0027: when an attempt was first handed to a sender (docs/collections.md, "Automatic collection", "Idempotency").
-- A provider keeps an Idempotency-Key for a limited time (Stripe: at least 24 hours); an attempt still unanswered
-- that long after its first send is not sent again under the same key (a second PaymentIntent could follow), but
-- parked dead for an admin (collect_begin, functions/collections.sql).
ALTER TABLE collection_attempts ADD COLUMN sending_since timestamptz;
