-- SPDX-License-Identifier: MIT
-- audit.sql: the functions of the append-only, hash-chained audit log (DESIGN.md promise 7): the canonical bytes a
-- row's hash covers, the organisation's audit lock, the chain and append-only triggers' functions, writing a row
-- and verifying a chain. The table and its triggers are in 0002_pipeline.sql. Its C room is gateway/domain/audit.c
-- (gw_audit_write, gw_audit_verify); the matching functions (match.sql) and the Xero upserts (xero_mirror.sql) call
-- audit_lock and audit_write from SQL.
--
-- A functions file is re-applied by `settled migrate`, after the numbered migrations and together with the other
-- functions files in one transaction, whenever its text changes: edit the function here, never in the numbered
-- migration that first created it (docs/data-model.md, "Migrations and functions files").

-- The bytes a row's hash covers: every field but the hashes, as one JSON array (strings escaped, so no
-- two rows share a text), the time as integer microseconds since the epoch so the session's TimeZone
-- and DateStyle cannot change it.
CREATE OR REPLACE FUNCTION audit_canonical(a audit_log) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT convert_to(jsonb_build_array(
               a.id, a.organisation_id, (extract(epoch FROM a.at) * 1000000)::bigint, a.actor, a.action,
               a.entity_type, a.entity_id, a.before, a.after, a.correlation_id)::text, 'UTF8')
$$;

-- The organisation's audit lock: the chain trigger takes it for every row, and holds it until the
-- transaction ends. A transaction that locks rows and then audits takes it FIRST (the upserts and the
-- matching functions do), so that lock order is always: organisation, then rows. Otherwise two
-- transactions touching the same rows in another order deadlock on it.
CREATE OR REPLACE FUNCTION audit_lock(p_org bigint) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtext('audit:' || p_org))
$$;

-- Links a new row to its organisation's chain. The advisory lock serialises the writers of one
-- organisation until they commit; the id is drawn after the lock, so ids follow the chain.
CREATE OR REPLACE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_prev bytea;
BEGIN
    IF NEW.organisation_id IS NULL THEN
        RAISE EXCEPTION 'audit_log: organisation_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    -- Under REPEATABLE READ or SERIALIZABLE the read below would use a snapshot older than the lock
    -- and could fork the chain: refuse instead.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'audit_log: audit rows must be written in READ COMMITTED transactions (this one is %)',
            current_setting('transaction_isolation') USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('audit:' || NEW.organisation_id));  -- = audit_lock()
    NEW.id := nextval(pg_get_serial_sequence('audit_log', 'id'));
    NEW.at := now();
    SELECT l.hash INTO v_prev FROM audit_log l
    WHERE l.organisation_id = NEW.organisation_id ORDER BY l.id DESC LIMIT 1;
    NEW.prev_hash := v_prev;
    NEW.hash := sha256(coalesce(v_prev, '\x'::bytea) || audit_canonical(NEW));
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Writes one audit row and returns its id.
CREATE OR REPLACE FUNCTION audit_write(p_org bigint, p_actor text, p_action text, p_entity_type text, p_entity_id text,
                            p_before jsonb, p_after jsonb, p_correlation text) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO audit_log (organisation_id, actor, action, entity_type, entity_id, before, after, correlation_id,
                           hash)
    VALUES (p_org, p_actor, p_action, p_entity_type, p_entity_id, p_before, p_after, p_correlation, '\x')
    RETURNING id
$$;

-- The id of the first row of the organisation's chain that does not verify (its hash does not cover
-- its fields, or its prev_hash is not the hash of the row before it), or NULL when the chain is whole.
-- Removing the newest rows leaves a shorter whole chain: keep the latest hash elsewhere to detect that.
CREATE OR REPLACE FUNCTION audit_verify(org bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT s.id
    FROM (SELECT a.id, a.hash, a.prev_hash,
                 lag(a.hash) OVER (ORDER BY a.id) AS expected_prev,
                 sha256(coalesce(a.prev_hash, '\x'::bytea) || audit_canonical(a)) AS recomputed
          FROM audit_log a
          WHERE a.organisation_id = org) s
    WHERE s.prev_hash IS DISTINCT FROM s.expected_prev OR s.hash IS DISTINCT FROM s.recomputed
    ORDER BY s.id
    LIMIT 1
$$;
