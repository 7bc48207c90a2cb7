-- SPDX-License-Identifier: MIT
-- 0003: each delivery's raw bytes stored once. A GoCardless (or Xero) delivery carries many events in one body;
-- every event used to be a row holding the whole body, so a batch of N events wrote its body N times. Now:
--   * a delivery of one event (every Stripe one) is still one row, its body inline, as before;
--   * a delivery of several events is one webhook_deliveries row holding the body, headers and times once, and
--     one inbox row per event that refers to it (body and headers NULL there).
-- The inbox table is renamed inbox_events (the queue works on it), and webhook_events becomes a view over it with
-- every documented column, body and headers taken from the delivery where the row has none, so operators' queries
-- and the columns of docs/data-model.md stay as they were. The view is automatically updatable for every column but
-- body and headers (UPDATE and DELETE through it work; inserts go to inbox_events).

CREATE TABLE webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id bigint NOT NULL REFERENCES organisations (id),
    provider        webhook_provider NOT NULL,
    source          text NOT NULL,
    body            bytea NOT NULL,
    headers         jsonb NOT NULL,
    verified_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    correlation_id  text NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_received_idx ON webhook_deliveries (received_at);

ALTER TABLE webhook_events RENAME TO inbox_events;
ALTER TABLE inbox_events
    ADD COLUMN delivery_id bigint REFERENCES webhook_deliveries (id),
    ALTER COLUMN body DROP NOT NULL,
    ALTER COLUMN headers DROP NOT NULL,
    ALTER COLUMN headers DROP DEFAULT; -- NULL: the delivery's headers

CREATE INDEX inbox_events_delivery_idx ON inbox_events (delivery_id) WHERE delivery_id IS NOT NULL;

CREATE VIEW webhook_events AS
SELECT e.id, e.organisation_id, e.provider, e.source, e.account, e.event_id, e.event_type, e.resource_id,
       coalesce(e.body, (SELECT d.body FROM webhook_deliveries d WHERE d.id = e.delivery_id)) AS body,
       coalesce(e.headers, (SELECT d.headers FROM webhook_deliveries d WHERE d.id = e.delivery_id)) AS headers,
       e.verified_at, e.received_at, e.stored_at, e.correlation_id, e.status, e.attempts, e.next_attempt_at,
       e.last_error, e.lease_owner, e.processed_at, e.delivery_id
FROM inbox_events e;

COMMENT ON VIEW webhook_events IS
    'The inbox as operators query it: one row per event, with the raw body of its delivery (docs/data-model.md).';
COMMENT ON TABLE webhook_deliveries IS
    'Raw deliveries of several events, stored once; their events in inbox_events refer to them.';
