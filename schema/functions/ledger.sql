-- SPDX-License-Identifier: MIT
-- ledger.sql: the ledger's functions (tables in 0011_ledger.sql). Its C room will be gateway/domain/payments.c.
--
-- A functions file is re-applied by `settled migrate`, after the numbered migrations and together with the other
-- functions files in one transaction, whenever its text changes: edit the functions here, never in the numbered
-- migration that first created them (docs/data-model.md, "Migrations and functions files").

CREATE OR REPLACE FUNCTION ledger_entries_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: a fact is never changed or removed'
        USING ERRCODE = 'insufficient_privilege', TABLE = 'ledger_entries';
END
$$;

-- Records one fact; returns true when it is new, false when the ledger already had it (a duplicate delivery, a
-- replay, a refetch that saw the same state): recording a fact twice adds nothing.
CREATE OR REPLACE FUNCTION ledger_record(p_org bigint, p_provider text, p_object_type text, p_object_id text,
                                         p_state text, p_amount_minor bigint, p_currency text, p_event_id bigint,
                                         p_correlation_id text) RETURNS boolean
LANGUAGE sql AS $$
    WITH ins AS (
        INSERT INTO ledger_entries (organisation_id, provider, object_type, object_id, state, amount_minor, currency,
                                    event_id, correlation_id)
        VALUES (p_org, p_provider, p_object_type, p_object_id, p_state, p_amount_minor, upper(p_currency), p_event_id,
                p_correlation_id)
        ON CONFLICT ON CONSTRAINT ledger_entries_fact_key DO NOTHING
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM ins)
$$;
