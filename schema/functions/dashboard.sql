-- SPDX-License-Identifier: MIT
-- dashboard.sql: the admins' dashboard figures (GET /v1/admin/dashboard; docs/collections.md, "Dashboard").
-- plpgsql, so that it may name objects of functions files applied after this one (terms.sql's invoice_due_dates,
-- organisation_today, collections.sql's tables).
--
-- One row per figure and currency (provider and method NULL), and for the two collection figures also one per
-- provider and method within it, after a first row 'as_of' that carries only the organisation's today, its time
-- zone and the first day of its month. Amounts are sums of ISO
-- minor units (numeric, so no sum overflows; the C side refuses one that does not fit int64). Figures:
--   outstanding             AUTHORISED invoices that reconciliation has seen with outstanding_minor > 0
--   overdue                 of those, the ones whose effective due date is before the organisation's today
--   due_this_week           of those, due today or in the 6 days after
--   unreconciled            AUTHORISED invoices that reconciliation has not seen yet (count only; currency: Xero's)
--   collected_this_month    payments received since the first of the organisation's month: Stripe succeeded
--                           (amount received), GoCardless collected (confirmed or paid out once); by the day the
--                           provider gives (paid_on: Stripe's charge day in UTC, GoCardless's charge date); gross
--                           of later refunds
--   failed_collections_this_month  settled's collection attempts that failed, needed the customer's
--                           authentication, or went dead this month (by when their outcome was recorded)
CREATE OR REPLACE FUNCTION admin_dashboard(p_org bigint, p_now timestamptz)
RETURNS TABLE (today date, timezone text, month_start date, figure text, currency text, provider text,
               method text, amount_minor numeric, items bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_zone text;
    v_today date;
    v_month date;
    v_month_at timestamptz;
BEGIN
    SELECT o.timezone INTO v_zone FROM organisations o WHERE o.id = p_org;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_today := organisation_today(p_org, p_now);
    v_month := date_trunc('month', v_today)::date;
    v_month_at := v_month::timestamp AT TIME ZONE v_zone;
    RETURN QUERY SELECT v_today, v_zone, v_month, 'as_of'::text, NULL::text, NULL::text, NULL::text, NULL::numeric,
                        NULL::bigint;
    RETURN QUERY
    WITH open AS (
        SELECT s.currency::text AS cur, s.outstanding_minor AS minor, d.due_date
        FROM xero_invoices i
        JOIN invoice_payment_states s USING (organisation_id, tenant_id, invoice_id)
        LEFT JOIN invoice_due_dates d USING (organisation_id, tenant_id, invoice_id)
        WHERE i.organisation_id = p_org AND i.type = 'ACCREC' AND i.status = 'AUTHORISED'
          AND s.outstanding_minor > 0 AND s.currency IS NOT NULL)
    SELECT v_today, v_zone, v_month, f.figure, o.cur, NULL::text, NULL::text, sum(o.minor), count(*)
    FROM open o
    CROSS JOIN LATERAL (VALUES ('outstanding', true),
                               ('overdue', o.due_date < v_today),
                               ('due_this_week', o.due_date >= v_today AND o.due_date < v_today + 7)) AS f (figure, keep)
    WHERE f.keep
    GROUP BY f.figure, o.cur;
    RETURN QUERY
    SELECT v_today, v_zone, v_month, 'unreconciled'::text, upper(i.currency_code)::text, NULL::text, NULL::text,
           NULL::numeric, count(*)
    FROM xero_invoices i
    WHERE i.organisation_id = p_org AND i.type = 'ACCREC' AND i.status = 'AUTHORISED'
      AND NOT EXISTS (SELECT 1 FROM invoice_payment_states s WHERE s.organisation_id = i.organisation_id
                      AND s.tenant_id = i.tenant_id AND s.invoice_id = i.invoice_id)
    GROUP BY upper(i.currency_code);
    RETURN QUERY
    SELECT v_today, v_zone, v_month, 'collected_this_month'::text, p.currency::text, p.provider::text,
           coalesce(p.method, 'unknown'), sum(CASE WHEN p.provider = 'stripe' THEN p.received_minor
                                                   ELSE p.amount_minor END)::numeric, count(*)::bigint
    FROM payments p
    WHERE p.organisation_id = p_org AND NOT p.from_writeback AND p.paid_on >= v_month AND p.paid_on <= v_today
      AND ((p.provider = 'stripe' AND p.status = 'succeeded' AND p.received_minor > 0)
           OR (p.provider = 'gocardless' AND p.was_collected))
    GROUP BY GROUPING SETS ((p.currency), (p.currency, p.provider, coalesce(p.method, 'unknown')));
    RETURN QUERY
    SELECT v_today, v_zone, v_month, 'failed_collections_this_month'::text, a.currency::text, a.provider::text,
           a.method, sum(a.amount_minor)::numeric, count(*)::bigint
    FROM collection_attempts a
    WHERE a.organisation_id = p_org AND a.status IN ('failed', 'action_required', 'dead')
      AND coalesce(a.completed_at, a.updated_at) >= v_month_at AND coalesce(a.completed_at, a.updated_at) <= p_now
    GROUP BY GROUPING SETS ((a.currency), (a.currency, a.provider, a.method));
END
$$;
