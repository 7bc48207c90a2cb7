-- SPDX-License-Identifier: MIT
-- 0010: Xero connection hygiene (gateway/domain/xero_oauth.c; docs/operations.md, "The life of a
-- connection"). Connecting an organisation again stores a new token set and moves its tenants over to it;
-- a token set that then serves no tenant while a newer one of the same organisation does is *retired*:
-- it is no longer used, never refreshed, never marked needs_reauth (so the re-authorisation alert clears),
-- and it is deleted once it has been retired for SETTLED_XERO_RETIRED_GRACE_HOURS. Tenants only ever move
-- to a newer token set (a higher id), never back: a late callback of an older authorisation cannot take
-- them over.

ALTER TABLE xero_tokens DROP CONSTRAINT xero_tokens_status_check;
ALTER TABLE xero_tokens
    ADD CONSTRAINT xero_tokens_status_check CHECK (status IN ('active', 'needs_reauth', 'retired')),
    ADD COLUMN retired_at  timestamptz,  -- when it was retired (NULL: not retired)
    ADD COLUMN replaced_by bigint REFERENCES xero_tokens (id) ON DELETE SET NULL, -- the token set that replaced it
    ADD CONSTRAINT xero_tokens_retired_check CHECK ((status = 'retired') = (retired_at IS NOT NULL));
CREATE INDEX xero_tokens_retired_idx ON xero_tokens (retired_at) WHERE status = 'retired';
CREATE INDEX xero_tokens_replaced_by_idx ON xero_tokens (replaced_by) WHERE replaced_by IS NOT NULL;

-- The token sets that earlier releases left behind after a reconnect (no tenant, a newer token set of the same
-- organisation serving some) are retired now: that is what kept their needs_reauth alert up.
WITH newest AS (
    SELECT organisation_id, max(token_id) AS token_id FROM xero_tenants GROUP BY organisation_id
), stale AS (
    SELECT t.id, n.token_id AS replaced_by, t.status AS old_status
      FROM xero_tokens t JOIN newest n ON n.organisation_id = t.organisation_id
     WHERE t.id < n.token_id
       AND NOT EXISTS (SELECT 1 FROM xero_tenants x WHERE x.organisation_id = t.organisation_id AND x.token_id = t.id)
)
UPDATE xero_tokens t
   SET status = 'retired', retired_at = now(), replaced_by = s.replaced_by, access_token = NULL,
       access_expires_at = NULL, updated_at = now()
  FROM stale s
 WHERE t.id = s.id;
