-- SPDX-License-Identifier: MIT
-- 0017: the scheduled drift repair (settled sync stripe|gocardless) runs per webhook source, since each source may
-- call its provider with its own API key (SETTLED_STRIPE_SECRET_KEY__<SOURCE>, SETTLED_GOCARDLESS_ACCESS_TOKEN__<SOURCE>).
-- Rows written before it belong to the default source.

ALTER TABLE payments_sync_state ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE payments_sync_state DROP CONSTRAINT payments_sync_state_pkey;
ALTER TABLE payments_sync_state ADD PRIMARY KEY (organisation_id, provider, source);
