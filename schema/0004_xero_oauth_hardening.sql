-- SPDX-License-Identifier: MIT
-- 0004: the Xero connection without a transaction held across a call to Xero, and single-use
-- authorization states (gateway/domain/xero_oauth.c; docs/operations.md, "Connecting Xero").

-- ---------------------------------------------------------------------------------------------------
-- 1. The refresh lease of a token set
--
-- A refresh of a token set runs under a lease instead of a row lock: one committed UPDATE takes it
-- (WHERE refreshing_until IS NULL OR refreshing_until < now()), the call to Xero's token endpoint runs
-- with no transaction open, and the transaction that stores the rotated refresh token clears it. A
-- holder that dies leaves a lease that expires by itself (SETTLED_HTTP_TIMEOUT_MS + 10 s after it was
-- taken) and may then be taken over. refreshing_by names the holder (host:pid:random) for operators and
-- fences the clearing: only the holder clears its own lease.

ALTER TABLE xero_tokens
    ADD COLUMN refreshing_until timestamptz,
    ADD COLUMN refreshing_by    text,
    ADD CONSTRAINT xero_tokens_lease_check CHECK ((refreshing_until IS NULL) = (refreshing_by IS NULL));

-- ---------------------------------------------------------------------------------------------------
-- 2. Single-use authorization states
--
-- `settled connect xero --authorize` records the random nonce its signed state carries; the callback
-- consumes it once (UPDATE ... SET used_at = now() WHERE used_at IS NULL), so a replayed state is refused
-- before its code reaches Xero. The nonce is no secret (a state also needs its MAC), so it is kept as is.
-- Rows of states that expired more than a day ago are removed when a new state is recorded.

CREATE TABLE xero_oauth_states (
    nonce            text PRIMARY KEY CHECK (nonce ~ '^[0-9a-f]{32}$'), -- hex of the state's 16 random bytes
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,  -- the expiry signed into the state
    used_at          timestamptz,           -- when a callback consumed it (NULL: not yet)
    used_by          text                   -- the correlation id (request id) of that callback
);
CREATE INDEX xero_oauth_states_expires_idx ON xero_oauth_states (expires_at);
