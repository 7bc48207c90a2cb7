-- SPDX-License-Identifier: MIT
-- inbox.sql: the checks that stand in for the inbox's foreign keys (created in 0005_inbox_statement_checks.sql,
-- which says why): the organisation and delivery of the events an INSERT stored, checked once per statement over
-- its transition table; organisations never deleted; a referenced delivery kept; an event's references fixed.
--
-- A functions file is re-applied by `settled migrate`, after the numbered migrations and together with the other
-- functions files in one transaction, whenever its text changes: edit the functions here, never in the numbered
-- migration that first created them (docs/data-model.md, "Migrations and functions files").

CREATE OR REPLACE FUNCTION inbox_events_check_refs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted n
                WHERE NOT EXISTS (SELECT 1 FROM organisations o WHERE o.id = n.organisation_id)) THEN
        RAISE EXCEPTION 'an inbox event names an organisation that does not exist'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'inbox_events', COLUMN = 'organisation_id';
    END IF;
    IF EXISTS (SELECT 1 FROM inserted n
                WHERE n.delivery_id IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = n.delivery_id)) THEN
        RAISE EXCEPTION 'an inbox event names a delivery that does not exist'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'inbox_events', COLUMN = 'delivery_id';
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION inbox_events_refs_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'an inbox event''s organisation_id and delivery_id never change'
        USING ERRCODE = 'integrity_constraint_violation', TABLE = 'inbox_events';
END
$$;

CREATE OR REPLACE FUNCTION organisations_permanent() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'organisations are never deleted: the inbox, the mirrors and the audit chain refer to them'
        USING ERRCODE = 'restrict_violation', TABLE = 'organisations';
END
$$;

CREATE OR REPLACE FUNCTION webhook_deliveries_keep_referenced() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inbox_events e WHERE e.delivery_id = OLD.id) THEN
        RAISE EXCEPTION 'delivery % is referred to by inbox events', OLD.id
            USING ERRCODE = 'foreign_key_violation', TABLE = 'webhook_deliveries';
    END IF;
    RETURN OLD;
END
$$;
