-- SPDX-License-Identifier: MIT
-- timeline.sql: an invoice's collection and reminder timeline for its organisation's admins
-- (GET /v1/admin/invoices/{id}/timeline; docs/collections.md, "Timeline"). plpgsql: it uses collections.sql,
-- dunning.sql and terms.sql, resolved when called.
--
-- collect_invoice_get's document (the pauses and every collection attempt), and:
--   due_date, due_date_source   the effective due date (invoice_due_dates) and where it came from
--   open                        whether the dunning plan still runs (dunning_open_invoices: not paid, pending,
--                               disputed or voided)
--   auto_collected              whether the due-date reminder gives way to automatic collection
--   plan_source                 'customer', 'organisation' or 'default'
--   steps                       every step of the plan with its day and what became of it: the outbox row's status
--                               when it was enqueued ('pending', 'sending', 'sent', 'failed', 'dead', 'suppressed'
--                               for an opted-out customer), else 'upcoming' (its day has not come and the plan
--                               runs), 'due' (the latest step whose day has come: the next evaluation sends it,
--                               unless it is older than SETTLED_DUNNING_GRACE_DAYS or gives way to automatic
--                               collection), 'skipped' (its day came but it was not sent: a later step's day came
--                               too), or 'ended' (the plan stopped first)
--   next_step                   the first upcoming step, or null
--   messages                    every notification about the invoice (reminders, receipts, collection notices)
-- NULL for another organisation's invoice (404).
CREATE OR REPLACE FUNCTION invoice_timeline(p_org bigint, p_invoice text, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_doc jsonb := collect_invoice_get(p_org, p_invoice);
    v_customer bigint;
    v_due date;
    v_source text;
    v_today date := organisation_today(p_org, p_now);
    v_open boolean;
    v_auto boolean;
    v_steps jsonb;
    v_plan text;
    v_out jsonb;
BEGIN
    IF v_doc IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT d.customer_id, d.due_date, d.source INTO v_customer, v_due, v_source FROM invoice_due_dates d
    WHERE d.organisation_id = p_org AND d.settled_invoice_id = p_invoice;
    v_open := dunning_still_due(p_org, p_invoice);
    v_auto := v_customer IS NOT NULL AND dunning_auto_collected(p_org, v_customer);
    SELECT CASE WHEN cp.steps IS NOT NULL THEN 'customer' WHEN op.steps IS NOT NULL THEN 'organisation'
                ELSE 'default' END,
           coalesce(cp.steps, op.steps, terms_dunning_default_steps())
      INTO v_plan, v_steps
    FROM (SELECT 1) x
    LEFT JOIN dunning_plans cp ON cp.organisation_id = p_org AND cp.customer_id = v_customer
    LEFT JOIN dunning_plans op ON op.organisation_id = p_org AND op.customer_id IS NULL;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'offset_days', s.off, 'day', (v_due + s.off)::text, 'channel', s.ch, 'template', s.tpl,
               'status', CASE WHEN n.status IS NOT NULL THEN n.status
                              WHEN v_due IS NULL OR v_customer IS NULL THEN 'ended'
                              WHEN v_due + s.off > v_today AND v_open THEN 'upcoming'
                              WHEN v_due + s.off > v_today THEN 'ended'
                              WHEN v_open AND s.off = s.latest THEN 'due'
                              ELSE 'skipped' END,
               'notification_id', n.id::text) ORDER BY s.off), '[]'::jsonb)
      INTO v_out
    FROM (SELECT (e ->> 'offset_days')::integer AS off, e ->> 'channel' AS ch, e ->> 'template' AS tpl,
                 max((e ->> 'offset_days')::integer) FILTER (WHERE v_due + (e ->> 'offset_days')::integer <= v_today)
                     OVER () AS latest
          FROM jsonb_array_elements(v_steps) e) s
    LEFT JOIN notifications n ON n.dedupe_key = 'dunning:' || p_invoice || ':' || s.off || ':' || s.tpl
                             AND n.organisation_id = p_org;
    RETURN v_doc || jsonb_build_object(
        'due_date', v_due::text, 'due_date_source', v_source, 'today', v_today::text, 'open', v_open,
        'auto_collected', v_auto, 'plan_source', v_plan, 'steps', v_out,
        'next_step', (SELECT s FROM jsonb_array_elements(v_out) s WHERE s ->> 'status' = 'upcoming'
                      ORDER BY (s ->> 'offset_days')::integer LIMIT 1),
        'messages', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                  'id', n.id::text, 'kind', n.kind, 'channel', n.channel, 'status', n.status,
                                  'subject', n.subject,
                                  'created_at', to_char(n.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                                  'sent_at', to_char(n.sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
                                  ORDER BY n.id)
                              FROM notifications n WHERE n.organisation_id = p_org AND n.invoice_id = p_invoice),
                             '[]'::jsonb));
END
$$;
