-- SPDX-License-Identifier: MIT
-- 0006_provider_circuits.sql: one circuit per provider account (Xero: per tenant), so that a provider that is down
-- is known to be down by every worker of every instance, and the events waiting for it are not burned through
-- their attempts. The functions that move a circuit are in functions/circuit.sql (their C room: domain/circuit.c).
--
-- closed:    calls go; failures counts the consecutive transient failures (no answer, 5xx, 408, 409).
-- open:      after SETTLED_CIRCUIT_FAILURES of them: no event of the account is claimed until retry_at.
-- half_open: one worker (probe_owner) is trying one event; retry_at is the end of its lease. A success closes the
--            circuit (and makes the account's waiting events due at once); a failure opens it again, for twice as
--            long as before (probes counts them), up to SETTLED_CIRCUIT_COOLDOWN_MAX_MS.
CREATE TABLE provider_circuits (
    provider    text NOT NULL,
    account     text NOT NULL, -- '' for calls that name no account
    state       text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failures    integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    probes      integer NOT NULL DEFAULT 0 CHECK (probes >= 0),
    opened_at   timestamptz,
    retry_at    timestamptz,
    probe_owner text,
    last_error  text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, account),
    CHECK ((state = 'closed') = (retry_at IS NULL))
);
COMMENT ON TABLE provider_circuits IS
    'Circuit breakers per provider account: open while the provider does not answer (docs/operations.md, "Circuits").';
