-- SPDX-License-Identifier: MIT
-- 0009: retention of finished events (issue 8, item 9). The pruning job (gateway/domain/retention.c, function
-- retention_prune in functions/retention.sql) walks the finished events oldest first, in small batches; this
-- partial index is what it walks, so a batch reads only the rows it deletes, however many rows are still to do,
-- in flight or dead (those are never pruned and are not in the index).
CREATE INDEX inbox_events_finished_idx ON inbox_events (received_at) WHERE status IN ('done', 'ignored');
