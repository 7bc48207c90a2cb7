-- SPDX-License-Identifier: MIT
-- 0005: the inbox's references checked once per statement instead of once per row (issue 7, item 4).
--
-- inbox_events.organisation_id and .delivery_id were foreign keys. PostgreSQL checks a foreign key with one
-- query per inserted row (an AFTER ROW trigger that runs SELECT ... FOR KEY SHARE on the referenced row, which
-- also writes a row lock on it), about 9 µs of the store's CPU per event under intake's load: a tenth of all it
-- spends per event. Intake inserts a batch of events in one statement, so the same rule is now checked by one
-- statement-level trigger over the rows the statement inserted (a transition table), one anti-join per batch.
--
-- What the foreign keys also did is kept by triggers on the other side, without the row locks:
--   * an organisation is never deleted (the inbox, the mirrors and the audit chain refer to it for good), so no
--     row can lose its organisation after the check;
--   * a delivery is not deleted while an event refers to it;
--   * an event's organisation_id and delivery_id never change after it is stored.
-- The functions' current text is in functions/inbox.sql (edit them there); this file creates them first.

ALTER TABLE inbox_events DROP CONSTRAINT webhook_events_organisation_id_fkey;
ALTER TABLE inbox_events DROP CONSTRAINT inbox_events_delivery_id_fkey;

CREATE FUNCTION inbox_events_check_refs() RETURNS trigger
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

CREATE FUNCTION inbox_events_refs_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'an inbox event''s organisation_id and delivery_id never change'
        USING ERRCODE = 'integrity_constraint_violation', TABLE = 'inbox_events';
END
$$;

CREATE FUNCTION organisations_permanent() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'organisations are never deleted: the inbox, the mirrors and the audit chain refer to them'
        USING ERRCODE = 'restrict_violation', TABLE = 'organisations';
END
$$;

CREATE FUNCTION webhook_deliveries_keep_referenced() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inbox_events e WHERE e.delivery_id = OLD.id) THEN
        RAISE EXCEPTION 'delivery % is referred to by inbox events', OLD.id
            USING ERRCODE = 'foreign_key_violation', TABLE = 'webhook_deliveries';
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER inbox_events_check_refs AFTER INSERT ON inbox_events
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION inbox_events_check_refs();
CREATE TRIGGER inbox_events_refs_fixed BEFORE UPDATE OF organisation_id, delivery_id ON inbox_events
    FOR EACH ROW WHEN (OLD.organisation_id IS DISTINCT FROM NEW.organisation_id
                       OR OLD.delivery_id IS DISTINCT FROM NEW.delivery_id)
    EXECUTE FUNCTION inbox_events_refs_fixed();
CREATE TRIGGER organisations_permanent BEFORE DELETE ON organisations
    FOR EACH ROW EXECUTE FUNCTION organisations_permanent();
CREATE TRIGGER organisations_no_truncate BEFORE TRUNCATE ON organisations
    FOR EACH STATEMENT EXECUTE FUNCTION organisations_permanent();
CREATE TRIGGER webhook_deliveries_keep_referenced BEFORE DELETE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION webhook_deliveries_keep_referenced();
