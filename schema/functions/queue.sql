-- SPDX-License-Identifier: MIT
-- queue.sql: the inbox's work-queue function: the statement-level trigger webhook_events_notify on webhook_events
-- (created in 0002_pipeline.sql) runs it after every INSERT to wake idle workers. Its C room is
-- gateway/domain/queue.c, whose workers LISTEN on settled_events.
--
-- A functions file is re-applied by `settled migrate`, after the numbered migrations and together with the other
-- functions files in one transaction, whenever its text changes: edit the function here, never in the numbered
-- migration that first created it (docs/data-model.md, "Migrations and functions files").

-- Wakes idle workers (LISTEN settled_events). Statement level: one notification per INSERT statement,
-- and PostgreSQL folds identical notifications of one transaction into one. It also fires for an
-- INSERT ... ON CONFLICT DO NOTHING that stored nothing: a spurious wake-up costs one empty claim.
-- Cost: a transaction that notified holds a cluster-wide lock from just before its commit until after
-- it (so the queue stays in commit order), which serialises the commits of concurrent inserters.
-- A session that does not want to pay it (set `settled.notify = off`, e.g. in the connection's
-- options) inserts silently; workers then find its rows by their poll backstop.
CREATE OR REPLACE FUNCTION webhook_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('settled.notify', true), '') <> 'off' THEN
        PERFORM pg_notify('settled_events', '');
    END IF;
    RETURN NULL;
END
$$;
