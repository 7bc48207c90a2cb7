-- SPDX-License-Identifier: MIT
-- circuit.sql: the moves of the provider circuits (table provider_circuits, 0006_provider_circuits.sql). Their C
-- room is gateway/domain/circuit.c. Each function is one statement's worth of work, safe under any number of
-- concurrent workers: the circuit's row is locked while it moves.

-- A transient failure of a call to p_provider for p_account. Closed: counts it, and opens the circuit at the
-- p_threshold-th in a row (first probe after p_cooldown_ms). Half-open: the probe failed: open again, the wait
-- doubled (at most p_cooldown_max_ms). Open: a late failure of a call that started before it opened; no change.
-- Returns the state after it and, when not closed, the milliseconds until the next probe; opened is true when
-- this failure opened the circuit (so the caller logs it once).
CREATE OR REPLACE FUNCTION circuit_failure(p_provider text, p_account text, p_error text, p_threshold integer,
                                           p_cooldown_ms bigint, p_cooldown_max_ms bigint,
                                           OUT state text, OUT wait_ms bigint, OUT opened boolean)
LANGUAGE plpgsql AS $$
DECLARE
    c provider_circuits%ROWTYPE;
    wait bigint;
BEGIN
    INSERT INTO provider_circuits (provider, account) VALUES (p_provider, p_account) ON CONFLICT DO NOTHING;
    SELECT * INTO c FROM provider_circuits pc WHERE pc.provider = p_provider AND pc.account = p_account FOR UPDATE;
    opened := false;
    IF c.state = 'closed' THEN
        IF c.failures + 1 >= p_threshold THEN
            wait := p_cooldown_ms;
            UPDATE provider_circuits pc SET state = 'open', failures = c.failures + 1, probes = 0, opened_at = now(),
                   retry_at = now() + wait * interval '1 millisecond', probe_owner = NULL, last_error = p_error,
                   updated_at = now()
             WHERE pc.provider = p_provider AND pc.account = p_account;
            opened := true;
            state := 'open';
        ELSE
            UPDATE provider_circuits pc SET failures = c.failures + 1, last_error = p_error, updated_at = now()
             WHERE pc.provider = p_provider AND pc.account = p_account;
            state := 'closed';
        END IF;
    ELSIF c.state = 'half_open' THEN
        wait := least(p_cooldown_max_ms::float8, p_cooldown_ms * power(2, least(c.probes + 1, 30))
                                                 * (1 + random() * 0.2))::bigint;
        UPDATE provider_circuits pc SET state = 'open', probes = c.probes + 1,
               retry_at = now() + wait * interval '1 millisecond', probe_owner = NULL, last_error = p_error,
               updated_at = now()
         WHERE pc.provider = p_provider AND pc.account = p_account;
        state := 'open';
    ELSE
        state := 'open';
    END IF;
    SELECT CASE WHEN pc.retry_at IS NULL THEN 0
                ELSE greatest(0, (extract(epoch FROM pc.retry_at - now()) * 1000)::bigint) END
      INTO wait_ms FROM provider_circuits pc WHERE pc.provider = p_provider AND pc.account = p_account;
END
$$;

-- A call to p_provider for p_account was answered (a 2xx, or a 4xx: the provider is up). Closes the circuit and
-- resets its count. When it was open or half-open, the account's events still waiting (pending or failed) are made
-- due now and idle workers are woken (NOTIFY settled_events). Returns the state it left ('closed' when nothing
-- changed), so the caller logs the closing once. The usual case, a closed circuit with no failures or none at all,
-- is one index lookup that writes nothing.
CREATE OR REPLACE FUNCTION circuit_success(p_provider text, p_account text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    was text;
BEGIN
    SELECT pc.state INTO was FROM provider_circuits pc
     WHERE pc.provider = p_provider AND pc.account = p_account AND (pc.state <> 'closed' OR pc.failures <> 0)
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'closed';
    END IF;
    UPDATE provider_circuits pc SET state = 'closed', failures = 0, probes = 0, retry_at = NULL, probe_owner = NULL,
           updated_at = now()
     WHERE pc.provider = p_provider AND pc.account = p_account;
    IF was <> 'closed' THEN
        UPDATE inbox_events e SET next_attempt_at = now()
         WHERE e.provider = p_provider AND coalesce(e.account, '') = p_account AND e.status IN ('pending', 'failed')
           AND e.next_attempt_at > now();
        PERFORM pg_notify('settled_events', '');
    END IF;
    RETURN was;
END
$$;

-- Takes the probe of one open circuit of p_providers whose wait is over (or whose probing worker's lease ended):
-- half-open, owned by p_owner for p_lease_ms. Returns its provider and account, or no row.
CREATE OR REPLACE FUNCTION circuit_take_probe(p_providers text[], p_owner text, p_lease_ms bigint)
RETURNS TABLE (provider text, account text)
LANGUAGE sql AS $$
    UPDATE provider_circuits pc SET state = 'half_open', probe_owner = p_owner,
           retry_at = now() + p_lease_ms * interval '1 millisecond', updated_at = now()
      FROM (SELECT c.provider, c.account FROM provider_circuits c
             WHERE c.provider = ANY(p_providers) AND c.state IN ('open', 'half_open') AND c.retry_at <= now()
             ORDER BY c.retry_at LIMIT 1 FOR UPDATE SKIP LOCKED) due
     WHERE pc.provider = due.provider AND pc.account = due.account
    RETURNING pc.provider, pc.account
$$;

-- The probe p_owner took found no event due: the circuit waits open again for p_wait_ms (nothing was learnt).
CREATE OR REPLACE FUNCTION circuit_release_probe(p_provider text, p_account text, p_owner text, p_wait_ms bigint)
RETURNS void
LANGUAGE sql AS $$
    UPDATE provider_circuits pc SET state = 'open', probe_owner = NULL,
           retry_at = now() + p_wait_ms * interval '1 millisecond', updated_at = now()
     WHERE pc.provider = p_provider AND pc.account = p_account AND pc.state = 'half_open' AND pc.probe_owner = p_owner
$$;
