-- SPDX-License-Identifier: MIT
-- dunning.sql: what the dunning evaluation sends (gateway/domain/dunning.c renders and enqueues it through
-- notify_enqueue): the reminders of each open invoice's dunning plan, receipts of succeeded payments, warnings about
-- an expiring default card or an ended mandate; and the reminders opt-out (the unsubscribe link, the client's and
-- the admins' routes). docs/collections.md, "Reminders and dunning", "Receipts and warnings", "Unsubscribe".
--
-- Every function here is plpgsql: this file sorts before notifications.sql, payment_methods.sql and terms.sql,
-- whose functions and view (invoice_due_dates) it uses, and plpgsql bodies are resolved when called, not when
-- created (on a new database every functions file is applied in name order).
--
-- The functions only decide; they enqueue nothing. Each row they return carries its dedupe key, and none is
-- returned whose key the outbox already holds, so a second evaluation returns nothing the first enqueued, and two
-- concurrent ones enqueue each key once (notify_enqueue's unique key).

-- The open invoices of p_org at p_today: sales invoices AUTHORISED in Xero with an amount due, of a customer
-- (linked contact), with an effective due date (invoice_due_dates), and not settled, pending, or disputed in the
-- ledger (invoice_payment_states: not paid, overpaid, pending or disputed, nothing pending or disputed, something
-- outstanding). A VOIDED, DELETED or PAID invoice in Xero is not open. outstanding_minor is the ledger's (NULL
-- until reconciled: the amount is then Xero's amount_due).
CREATE OR REPLACE FUNCTION dunning_open_invoices(p_org bigint)
RETURNS TABLE (settled_invoice_id text, customer_id bigint, due_date date, invoice_number text, currency text,
               amount_due text, outstanding_minor bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY SELECT * FROM dunning_open_invoices(p_org, NULL);
END
$$;

-- The same for one invoice (p_invoice, a settled invoice id; NULL: every one): the check of one invoice must not
-- walk the organisation's open invoices (each custom plan of the statement is planned with p_invoice known).
CREATE OR REPLACE FUNCTION dunning_open_invoices(p_org bigint, p_invoice text)
RETURNS TABLE (settled_invoice_id text, customer_id bigint, due_date date, invoice_number text, currency text,
               amount_due text, outstanding_minor bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT d.settled_invoice_id::text, d.customer_id, d.due_date, i.invoice_number, upper(i.currency_code),
           i.amount_due::text,
           CASE WHEN s.currency = upper(i.currency_code) THEN s.outstanding_minor END
    FROM invoice_due_dates d
    JOIN xero_invoices i
      ON i.organisation_id = d.organisation_id AND i.tenant_id = d.tenant_id AND i.invoice_id = d.invoice_id
    LEFT JOIN invoice_payment_states s
      ON s.organisation_id = d.organisation_id AND s.tenant_id = d.tenant_id AND s.invoice_id = d.invoice_id
    WHERE d.organisation_id = p_org AND (p_invoice IS NULL OR d.settled_invoice_id = p_invoice)
      AND d.customer_id IS NOT NULL AND d.due_date IS NOT NULL
      AND i.status = 'AUTHORISED' AND i.amount_due > 0
      AND coalesce(s.state, 'unpaid') NOT IN ('paid', 'overpaid', 'pending', 'disputed')
      AND coalesce(s.pending_minor, 0) = 0 AND coalesce(s.disputed_minor, 0) = 0
      AND (s.outstanding_minor IS NULL OR s.outstanding_minor > 0);
END
$$;

-- The notification kind a dunning plan's template is sent as (the plan says due_soon, the outbox invoice_due).
CREATE OR REPLACE FUNCTION dunning_kind(p_template text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE p_template WHEN 'due_soon' THEN 'invoice_due' ELSE p_template END;
END
$$;

-- Whether customer p_customer's invoices are collected automatically: its terms (its override, else the
-- organisation's default) say auto_collect, and it has a usable default method (pm_usable). The collector
-- (another module) decides on its own; this is only what the due-date reminder is skipped on.
CREATE OR REPLACE FUNCTION dunning_auto_collected(p_org bigint, p_customer bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce((SELECT t.auto_collect FROM payment_terms t
                     WHERE t.organisation_id = p_org AND (t.customer_id = p_customer OR t.customer_id IS NULL)
                     ORDER BY t.customer_id NULLS LAST LIMIT 1), false)
       AND EXISTS (SELECT 1 FROM payment_methods m
                   WHERE m.organisation_id = p_org AND m.customer_id = p_customer AND m.is_default
                     AND pm_usable(m.kind, m.status));
END
$$;

-- The reminders due at the instant p_now for p_org's open invoices, not enqueued yet. Each invoice follows its
-- plan: its customer's override, else the organisation's plan, else terms_dunning_default_steps(). A step's day is
-- the effective due date + offset_days; "today" is the organisation's date at p_now (organisation_today, its time
-- zone). A step is due when its day has come, and
-- - it is the invoice's latest step whose day has come: a step whose next step's day has come too is skipped,
--   never sent late in a bundle (an invoice mirrored late, an evaluation that did not run for days);
-- - its day is at most p_grace days ago: the last step of a plan is not sent weeks late either (and a first
--   evaluation over old invoices sends nothing for those long overdue);
-- - it is not the due-date step (offset 0) of an invoice collected automatically (dunning_auto_collected).
-- The plan ends when the invoice is no longer open (dunning_open_invoices). Dedupe key:
-- 'dunning:<settled invoice id>:<offset_days>:<template>'.
CREATE OR REPLACE FUNCTION dunning_due(p_org bigint, p_now timestamptz, p_grace integer)
RETURNS TABLE (customer_id bigint, settled_invoice_id text, kind text, channel text, dedupe_key text,
               offset_days integer, step_date date, due_date date, invoice_number text, currency text,
               amount_due text, outstanding_minor bigint, customer_name text, email text, organisation_name text)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    v_today date := organisation_today(p_org, p_now);
BEGIN
    IF v_today IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH open AS (
        SELECT o.*, coalesce(cp.steps, op.steps, terms_dunning_default_steps()) AS steps
        FROM dunning_open_invoices(p_org) o
        LEFT JOIN dunning_plans cp ON cp.organisation_id = p_org AND cp.customer_id = o.customer_id
        LEFT JOIN dunning_plans op ON op.organisation_id = p_org AND op.customer_id IS NULL
        -- offsets are -60..90: nothing else can be due
        WHERE o.due_date BETWEEN v_today - 90 - greatest(p_grace, 0) AND v_today + 60),
    steps AS (
        SELECT o.*, (e ->> 'offset_days')::integer AS off, e ->> 'channel' AS ch, e ->> 'template' AS tpl,
               o.due_date + (e ->> 'offset_days')::integer AS day,
               lead(o.due_date + (e ->> 'offset_days')::integer)
                   OVER (PARTITION BY o.settled_invoice_id ORDER BY (e ->> 'offset_days')::integer) AS next_day
        FROM open o, jsonb_array_elements(o.steps) e)
    SELECT s.customer_id, s.settled_invoice_id, dunning_kind(s.tpl), s.ch,
           'dunning:' || s.settled_invoice_id || ':' || s.off || ':' || s.tpl, s.off, s.day, s.due_date,
           s.invoice_number, s.currency, s.amount_due, s.outstanding_minor, c.name, c.email, g.name
    FROM steps s
    JOIN customers c ON c.organisation_id = p_org AND c.id = s.customer_id
    JOIN organisations g ON g.id = p_org
    WHERE s.day <= v_today AND (s.next_day IS NULL OR s.next_day > v_today)
      AND v_today - s.day <= greatest(p_grace, 0)
      AND NOT (s.off = 0 AND dunning_auto_collected(p_org, s.customer_id))
      AND NOT EXISTS (SELECT 1 FROM notifications n
                      WHERE n.dedupe_key = 'dunning:' || s.settled_invoice_id || ':' || s.off || ':' || s.tpl)
    ORDER BY s.settled_invoice_id, s.off;
END
$$;

-- Whether the reminder of step p_offset of invoice p_invoice is still to be sent at p_now: the check the
-- evaluation repeats in the transaction of the enqueue, just before it, so that an invoice paid (or voided) while
-- one evaluation ran is not reminded by it.
CREATE OR REPLACE FUNCTION dunning_still_due(p_org bigint, p_invoice text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM dunning_open_invoices(p_org, p_invoice));
END
$$;

-- The receipts to send: every succeeded payment of p_org applied to one of its invoices (Stripe 'succeeded',
-- GoCardless 'confirmed' or 'paid_out', as the ledger records it since dunning_epoch), without a receipt yet
-- (dedupe key 'receipt:<payment id>'), for the payment's customer, else the invoice's. The amount is the payment's
-- (Stripe's amount_received when there is one). Payments recorded in Xero itself get none: Xero's own, or a
-- write-back of a payment that has its receipt already.
CREATE OR REPLACE FUNCTION dunning_receipts_due(p_org bigint)
RETURNS TABLE (payment_id bigint, customer_id bigint, settled_invoice_id text, dedupe_key text, invoice_number text,
               currency text, amount_minor bigint, due_date date, customer_name text, email text,
               organisation_name text)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT p.id, c.id, i.settled_invoice_id::text, 'receipt:' || p.id, i.invoice_number, p.currency::text,
           CASE WHEN p.received_minor > 0 THEN p.received_minor ELSE p.amount_minor END, i.due_date, c.name, c.email,
           g.name
    FROM payments p
    JOIN xero_invoices i
      ON i.organisation_id = p.organisation_id AND i.tenant_id = p.xero_tenant_id::uuid
     AND i.invoice_id = p.xero_invoice_id
    LEFT JOIN customer_links l
      ON l.organisation_id = i.organisation_id AND l.provider = 'xero' AND l.external_id = i.contact_id::text
    JOIN customers c ON c.organisation_id = p.organisation_id AND c.id = coalesce(p.customer_id, l.customer_id)
    JOIN organisations g ON g.id = p.organisation_id
    WHERE p.organisation_id = p_org AND p.xero_invoice_id IS NOT NULL AND p.provider IN ('stripe', 'gocardless')
      AND ((p.provider = 'stripe' AND p.status = 'succeeded')
           OR (p.provider = 'gocardless' AND p.status IN ('confirmed', 'paid_out')))
      AND EXISTS (SELECT 1 FROM ledger_entries e
                  WHERE e.organisation_id = p.organisation_id AND e.provider = p.provider
                    AND e.object_type = 'payment' AND e.object_id = p.object_id
                    AND e.state IN ('succeeded', 'confirmed', 'paid_out')
                    AND e.recorded_at >= (SELECT d.since FROM dunning_epoch d))
      AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.dedupe_key = 'receipt:' || p.id)
    ORDER BY p.id;
END
$$;

-- The warnings to send at p_now: a customer's default card that expires (the end of its expiry month) before the
-- due date of the customer's next open invoice due today or later ('method_expiring', once per card and expiry:
-- 'method_expiring:<method id>:<YYYY-MM>'), and a direct-debit mandate cancelled, failed or expired
-- ('mandate_ended', once per mandate and status: 'mandate_ended:<method id>:<status>'; only mandates changed since
-- dunning_epoch). Neither is a reminder: an opt-out does not stop them.
CREATE OR REPLACE FUNCTION dunning_warnings_due(p_org bigint, p_now timestamptz)
RETURNS TABLE (method_id bigint, customer_id bigint, kind text, dedupe_key text, settled_invoice_id text,
               due_date date, invoice_number text, currency text, amount_due text, outstanding_minor bigint,
               customer_name text, email text, organisation_name text)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    v_today date := organisation_today(p_org, p_now);
BEGIN
    IF v_today IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH cards AS (
        SELECT m.id, m.customer_id,
               'method_expiring:' || m.id || ':' || lpad(m.exp_year::text, 4, '0') || '-'
                   || lpad(m.exp_month::text, 2, '0') AS key,
               (make_date(m.exp_year, m.exp_month, 1) + interval '1 month' - interval '1 day')::date AS valid_until
        FROM payment_methods m
        WHERE m.organisation_id = p_org AND m.customer_id IS NOT NULL AND m.is_default AND m.kind = 'card'
          AND m.status = 'active' AND m.exp_year BETWEEN 1 AND 9999 AND m.exp_month BETWEEN 1 AND 12)
    SELECT k.id, k.customer_id, 'method_expiring'::text, k.key, o.settled_invoice_id, o.due_date, o.invoice_number,
           o.currency, o.amount_due, o.outstanding_minor, c.name, c.email, g.name
    FROM cards k
    JOIN LATERAL (SELECT * FROM dunning_open_invoices(p_org) x
                  WHERE x.customer_id = k.customer_id AND x.due_date >= v_today
                  ORDER BY x.due_date, x.settled_invoice_id LIMIT 1) o ON true
    JOIN customers c ON c.organisation_id = p_org AND c.id = k.customer_id
    JOIN organisations g ON g.id = p_org
    WHERE k.valid_until < o.due_date
      AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.dedupe_key = k.key)
    UNION ALL
    SELECT m.id, m.customer_id, 'mandate_ended'::text, 'mandate_ended:' || m.id || ':' || m.status, NULL::text,
           NULL::date, NULL::text, NULL::text, NULL::text, NULL::bigint, c.name, c.email, g.name
    FROM payment_methods m
    JOIN customers c ON c.organisation_id = p_org AND c.id = m.customer_id
    JOIN organisations g ON g.id = p_org
    WHERE m.organisation_id = p_org AND m.kind = 'direct_debit' AND m.status IN ('cancelled', 'failed', 'expired')
      AND m.updated_at >= (SELECT d.since FROM dunning_epoch d)
      AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.dedupe_key = 'mandate_ended:' || m.id || ':' || m.status);
END
$$;

-- The organisations the periodic evaluation visits (every one: an organisation without invoices costs a query).
CREATE OR REPLACE FUNCTION dunning_organisations(p_slug text)
RETURNS TABLE (id bigint, slug text)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY SELECT o.id, o.slug::text FROM organisations o WHERE p_slug IS NULL OR o.slug = p_slug ORDER BY o.id;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- The reminders opt-out

CREATE OR REPLACE FUNCTION dunning_opt_out_json(c customers) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object('customer_id', c.id::text, 'reminders_opt_out', c.reminders_opt_out,
                              'changed_at', admin_ts(c.reminders_opt_out_at), 'changed_by', c.reminders_opt_out_by);
END
$$;

-- Customer p_customer's opt-out ({"customer_id", "reminders_opt_out", "changed_at", "changed_by"}), NULL when it
-- is not p_org's.
CREATE OR REPLACE FUNCTION dunning_opt_out_get(p_org bigint, p_customer bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c customers;
BEGIN
    SELECT * INTO c FROM customers k WHERE k.organisation_id = p_org AND k.id = p_customer;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN dunning_opt_out_json(c);
END
$$;

-- Sets customer p_customer's reminders opt-out to p_opt_out, by p_by ('unsubscribe': the signed link, 'client',
-- 'admin'). Audited 'customer.reminders_opt_out' (before and after) when it changes; a repeat changes nothing.
-- Receipts and notices are never stopped by it.
CREATE OR REPLACE FUNCTION dunning_opt_out_set(p_org bigint, p_customer bigint, p_opt_out boolean, p_by text,
                                               p_actor text, p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    o customers;
    n customers;
BEGIN
    IF p_opt_out IS NULL THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'reminders_opt_out', 'must be true or false', NULL);
        RETURN;
    END IF;
    PERFORM audit_lock(p_org);
    SELECT * INTO o FROM customers k WHERE k.organisation_id = p_org AND k.id = p_customer FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    n := o;
    IF o.reminders_opt_out IS DISTINCT FROM p_opt_out THEN
        UPDATE customers k SET reminders_opt_out = p_opt_out, reminders_opt_out_at = now(),
                               reminders_opt_out_by = p_by, updated_at = now()
        WHERE k.organisation_id = p_org AND k.id = p_customer RETURNING * INTO n;
        PERFORM audit_write(p_org, p_actor, 'customer.reminders_opt_out', 'customer', p_customer::text,
                            dunning_opt_out_json(o), dunning_opt_out_json(n), p_correlation);
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, dunning_opt_out_json(n));
END
$$;
