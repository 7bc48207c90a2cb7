-- SPDX-License-Identifier: MIT
-- retention.sql: pruning finished events (SETTLED_RETENTION_DAYS, `settled prune`). Its C room is
-- gateway/domain/retention.c. Only rows whose status is 'done' or 'ignored' are ever deleted: never 'pending',
-- 'failed', 'processing' or 'dead' ones. A delivery (webhook_deliveries) goes once no event refers to it any more.
-- audit_log is never touched: its entries keep the ids of what they describe.
--
-- A functions file is re-applied by `settled migrate` whenever its text changes (docs/data-model.md).

-- Deletes at most p_limit finished events received before p_before, oldest first, and then the deliveries of
-- theirs that no event refers to any more. One batch is one transaction: the caller keeps batches small and
-- sleeps between them. Returns (-1, -1) without deleting anything when another session holds the retention lock
-- (one pruner at a time; a transaction-level lock, so it works through pgbouncer in transaction mode).
CREATE OR REPLACE FUNCTION retention_prune(p_before timestamptz, p_limit integer,
                                           OUT events bigint, OUT deliveries bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_deliveries bigint[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('settled.retention')) THEN
        events := -1;
        deliveries := -1;
        RETURN;
    END IF;
    -- FOR UPDATE re-checks the status of a row changed meanwhile (a replay sets it back to 'pending'), and SKIP
    -- LOCKED leaves alone a row a worker or a replay holds
    WITH victims AS (
        SELECT id FROM inbox_events
         WHERE status IN ('done', 'ignored') AND received_at < p_before
         ORDER BY received_at LIMIT p_limit FOR UPDATE SKIP LOCKED),
    gone AS (
        DELETE FROM inbox_events e USING victims v WHERE e.id = v.id AND e.status IN ('done', 'ignored')
        RETURNING e.delivery_id)
    SELECT count(*), array_agg(DISTINCT delivery_id) FILTER (WHERE delivery_id IS NOT NULL)
      INTO events, v_deliveries FROM gone;
    -- a second statement, so that it sees the events just deleted as gone
    DELETE FROM webhook_deliveries d
     WHERE d.id = ANY(coalesce(v_deliveries, '{}'))
       AND NOT EXISTS (SELECT 1 FROM inbox_events e WHERE e.delivery_id = d.id);
    GET DIAGNOSTICS deliveries = ROW_COUNT;
END
$$;

-- What retention_prune would delete for p_before, in all batches together, without deleting or locking anything.
CREATE OR REPLACE FUNCTION retention_preview(p_before timestamptz, OUT events bigint, OUT deliveries bigint,
                                             OUT oldest timestamptz)
LANGUAGE sql STABLE AS $$
    WITH victims AS (
        SELECT id, delivery_id, received_at FROM inbox_events
         WHERE status IN ('done', 'ignored') AND received_at < p_before)
    SELECT (SELECT count(*) FROM victims),
           (SELECT count(*) FROM webhook_deliveries d
             WHERE d.id IN (SELECT delivery_id FROM victims WHERE delivery_id IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM inbox_events e
                                WHERE e.delivery_id = d.id
                                  AND NOT (e.status IN ('done', 'ignored') AND e.received_at < p_before))),
           (SELECT min(received_at) FROM victims)
$$;
