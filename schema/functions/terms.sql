-- SPDX-License-Identifier: MIT
-- terms.sql: due dates under payment terms (the rule of gateway/domain/terms.c, checked against the same table of
-- cases, fixtures/terms_cases.csv, by tests/integration/test_sql_terms.py), the organisation's time zone and date,
-- each invoice's effective due date (the view invoice_due_dates), the Xero organisation's default terms, and dunning
-- plans (stored and validated; nothing sends them yet). docs/collections.md.

-- ---------------------------------------------------------------------------------------------------
-- Due dates

-- The due date of an invoice dated p_date under Xero's terms (p_type, p_day), or NULL when the day does not go with
-- the type (1..31 for the "of month" types, 0..365 for the "days after" types) or an argument is NULL. A day past
-- the month's end is the month's last day; OFCURRENTMONTH keeps a day before the invoice date (terms.c says why).
CREATE OR REPLACE FUNCTION terms_due_date(p_type text, p_day integer, p_date date) RETURNS date
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_type = 'DAYSAFTERBILLDATE' AND p_day BETWEEN 0 AND 365 THEN p_date + p_day
        WHEN p_type = 'DAYSAFTERBILLMONTH' AND p_day BETWEEN 0 AND 365
            THEN (date_trunc('month', p_date) + interval '1 month' - interval '1 day')::date + p_day
        WHEN p_type IN ('OFCURRENTMONTH', 'OFFOLLOWINGMONTH') AND p_day BETWEEN 1 AND 31 THEN
            (SELECT least(m + (p_day - 1), (m + interval '1 month' - interval '1 day')::date)
             FROM (SELECT (date_trunc('month', p_date)
                           + CASE WHEN p_type = 'OFFOLLOWINGMONTH' THEN interval '1 month' ELSE interval '0' END
                          )::date AS m) x)
    END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Time zone

-- True if p_zone is a zone name of PostgreSQL's tz database.
CREATE OR REPLACE FUNCTION terms_timezone_valid(p_zone text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_zone IS NOT NULL AND EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = p_zone)
$$;

-- The UTC offset (seconds, east positive) of zone p_zone at the instant p_at: what gw_date_at_offset takes.
CREATE OR REPLACE FUNCTION organisation_utc_offset(p_zone text, p_at timestamptz) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT extract(epoch FROM (p_at AT TIME ZONE p_zone) - (p_at AT TIME ZONE 'UTC'))::integer
$$;

-- The civil date in zone p_zone at the instant p_at.
CREATE OR REPLACE FUNCTION organisation_date(p_zone text, p_at timestamptz) RETURNS date
LANGUAGE sql STABLE AS $$
    SELECT (p_at AT TIME ZONE p_zone)::date
$$;

-- The organisation's "today" at p_at (its time zone's date), or NULL for an unknown organisation.
CREATE OR REPLACE FUNCTION organisation_today(p_org bigint, p_at timestamptz) RETURNS date
LANGUAGE sql STABLE AS $$
    SELECT organisation_date(o.timezone, p_at) FROM organisations o WHERE o.id = p_org
$$;

CREATE OR REPLACE FUNCTION terms_timezone_get(p_org bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('timezone', o.timezone, 'today', organisation_date(o.timezone, now())::text)
    FROM organisations o WHERE o.id = p_org
$$;

-- Sets the organisation's time zone (audited 'organisation.timezone'); 400 naming timezone for a name the tz
-- database does not know.
CREATE OR REPLACE FUNCTION terms_timezone_put(p_org bigint, p_zone text, p_actor text, p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_old text;
BEGIN
    IF NOT terms_timezone_valid(p_zone) THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'timezone',
                                                'is not a time zone of the tz database (e.g. Pacific/Auckland)', NULL);
        RETURN;
    END IF;
    PERFORM audit_lock(p_org);
    SELECT o.timezone INTO v_old FROM organisations o WHERE o.id = p_org FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    IF v_old <> p_zone THEN
        UPDATE organisations o SET timezone = p_zone WHERE o.id = p_org;
        PERFORM audit_write(p_org, p_actor, 'organisation.timezone', 'organisation', p_org::text,
                            jsonb_build_object('timezone', v_old), jsonb_build_object('timezone', p_zone),
                            p_correlation);
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, terms_timezone_get(p_org));
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Effective due dates

-- Every sales invoice (ACCREC) of the mirror with the due date settled uses: Xero's DueDate when the invoice has
-- one ('xero'), else the date computed from its customer's override ('customer_terms'; the customer is the one its
-- Xero contact is linked to), else from the organisation's default ('organisation_terms'), else NULL (no date, or
-- no terms).
CREATE OR REPLACE VIEW invoice_due_dates AS
SELECT i.organisation_id, i.tenant_id, i.invoice_id, i.settled_invoice_id, l.customer_id,
       coalesce(i.due_date, terms_due_date(c.type, c.day, i.date), terms_due_date(d.type, d.day, i.date))
           AS due_date,
       CASE WHEN i.due_date IS NOT NULL THEN 'xero'
            WHEN terms_due_date(c.type, c.day, i.date) IS NOT NULL THEN 'customer_terms'
            WHEN terms_due_date(d.type, d.day, i.date) IS NOT NULL THEN 'organisation_terms'
       END AS source
FROM xero_invoices i
LEFT JOIN customer_links l
       ON l.organisation_id = i.organisation_id AND l.provider = 'xero' AND l.external_id = i.contact_id::text
LEFT JOIN payment_terms c ON c.organisation_id = i.organisation_id AND c.customer_id = l.customer_id
LEFT JOIN payment_terms d ON d.organisation_id = i.organisation_id AND d.customer_id IS NULL
WHERE i.type = 'ACCREC';

-- One invoice's effective due date and its source (invoice_due_dates), scoped by p_org; no row for an invoice
-- that is not p_org's sales invoice.
CREATE OR REPLACE FUNCTION invoice_effective_due_date(p_org bigint, p_settled_invoice_id text,
                                                      OUT due_date date, OUT source text)
RETURNS SETOF record
LANGUAGE sql STABLE AS $$
    SELECT v.due_date, v.source FROM invoice_due_dates v
    WHERE v.organisation_id = p_org AND v.settled_invoice_id = p_settled_invoice_id
$$;

-- ---------------------------------------------------------------------------------------------------
-- The Xero organisation's default terms

-- Stores the Xero organisation's PaymentTerms.Sales (p_type, p_day) as p_org's default terms unless an admin has
-- set the default: inserts it ('stored') when there is none, updates a default that came from Xero ('updated'),
-- keeps an admin's ('admin_set'); 'unchanged' when Xero's are the stored ones, 'invalid' for terms outside
-- payment_terms' rules (nothing written). Audited 'terms.xero_default' as system:xero.
CREATE OR REPLACE FUNCTION terms_apply_xero_default(p_org bigint, p_type text, p_day integer, p_correlation text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    o payment_terms;
    n payment_terms;
BEGIN
    IF terms_due_date(p_type, p_day, DATE '2000-01-01') IS NULL THEN
        RETURN 'invalid';
    END IF;
    PERFORM audit_lock(p_org);
    SELECT * INTO o FROM payment_terms x WHERE x.organisation_id = p_org AND x.customer_id IS NULL FOR UPDATE;
    IF FOUND AND o.source = 'admin' THEN
        RETURN 'admin_set';
    END IF;
    IF FOUND AND (o.type, o.day) = (p_type, p_day) THEN
        RETURN 'unchanged';
    END IF;
    IF FOUND THEN
        UPDATE payment_terms x SET type = p_type, day = p_day, updated_at = now()
        WHERE x.organisation_id = p_org AND x.customer_id IS NULL RETURNING * INTO n;
    ELSE
        INSERT INTO payment_terms (organisation_id, customer_id, type, day, source)
        VALUES (p_org, NULL, p_type, p_day, 'xero') RETURNING * INTO n;
    END IF;
    PERFORM audit_write(p_org, 'system:xero', 'terms.xero_default', 'payment_terms', 'default',
                        CASE WHEN o.organisation_id IS NOT NULL THEN admin_terms_json(o) END, admin_terms_json(n),
                        p_correlation);
    RETURN CASE WHEN o.organisation_id IS NOT NULL THEN 'updated' ELSE 'stored' END;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Dunning plans

-- The templates a step may name (the messages are written by the notification work, docs/collections.md).
CREATE OR REPLACE FUNCTION terms_dunning_templates() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['due_soon', 'due_today', 'overdue', 'final_notice']
$$;

-- The plan of an organisation that has not set one: 10, 5 and 1 days before the due date "due soon" (with the
-- payment link), on the due date "due today" (skipped by the evaluation when the invoice is collected
-- automatically), 3 days after "overdue", 7 days after "final notice"; all by email.
CREATE OR REPLACE FUNCTION terms_dunning_default_steps() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT '[{"offset_days": -10, "channel": "email", "template": "due_soon"},
             {"offset_days": -5, "channel": "email", "template": "due_soon"},
             {"offset_days": -1, "channel": "email", "template": "due_soon"},
             {"offset_days": 0, "channel": "email", "template": "due_today"},
             {"offset_days": 3, "channel": "email", "template": "overdue"},
             {"offset_days": 7, "channel": "email", "template": "final_notice"}]'::jsonb
$$;

-- Why p_steps is not a plan: (field, detail) naming the first bad field ("steps", "steps[2].offset_days"), or no
-- row. A plan is an array of at most 10 objects of exactly offset_days (an integer -60..90), channel (email,
-- portal) and template (terms_dunning_templates()), sorted by offset_days with no offset twice.
CREATE OR REPLACE FUNCTION terms_dunning_steps_refusal(p_steps jsonb, OUT field text, OUT detail text)
RETURNS SETOF record
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_step jsonb;
    v_key text;
    v_i integer := 0;
    v_prev integer;
    v_offset integer;
    v_at text;
BEGIN
    IF p_steps IS NULL OR jsonb_typeof(p_steps) <> 'array' THEN
        field := 'steps'; detail := 'must be an array of steps'; RETURN NEXT; RETURN;
    END IF;
    IF jsonb_array_length(p_steps) > 10 THEN
        field := 'steps'; detail := 'must have at most 10 steps'; RETURN NEXT; RETURN;
    END IF;
    FOR v_step IN SELECT e FROM jsonb_array_elements(p_steps) e LOOP
        v_at := 'steps[' || v_i || ']';
        IF jsonb_typeof(v_step) <> 'object' THEN
            field := v_at; detail := 'must be an object'; RETURN NEXT; RETURN;
        END IF;
        FOR v_key IN SELECT k FROM jsonb_object_keys(v_step) k ORDER BY k LOOP
            IF v_key NOT IN ('offset_days', 'channel', 'template') THEN
                field := v_at || '.' || v_key; detail := 'is not a field of a step'; RETURN NEXT; RETURN;
            END IF;
        END LOOP;
        IF jsonb_typeof(v_step -> 'offset_days') IS DISTINCT FROM 'number'
           OR (v_step ->> 'offset_days') !~ '^-?[0-9]{1,3}$'
           OR (v_step ->> 'offset_days')::integer NOT BETWEEN -60 AND 90 THEN
            field := v_at || '.offset_days'; detail := 'must be an integer from -60 to 90'; RETURN NEXT; RETURN;
        END IF;
        v_offset := (v_step ->> 'offset_days')::integer;
        IF v_prev IS NOT NULL AND v_offset = v_prev THEN
            field := v_at || '.offset_days'; detail := 'repeats the previous step''s offset'; RETURN NEXT; RETURN;
        END IF;
        IF v_prev IS NOT NULL AND v_offset < v_prev THEN
            field := v_at || '.offset_days'; detail := 'must not be before the previous step''s (steps are sorted)';
            RETURN NEXT; RETURN;
        END IF;
        IF jsonb_typeof(v_step -> 'channel') IS DISTINCT FROM 'string'
           OR v_step ->> 'channel' NOT IN ('email', 'portal') THEN
            field := v_at || '.channel'; detail := 'must be email or portal'; RETURN NEXT; RETURN;
        END IF;
        IF jsonb_typeof(v_step -> 'template') IS DISTINCT FROM 'string'
           OR NOT (v_step ->> 'template') = ANY (terms_dunning_templates()) THEN
            field := v_at || '.template';
            detail := 'must be one of ' || array_to_string(terms_dunning_templates(), ', ');
            RETURN NEXT; RETURN;
        END IF;
        v_prev := v_offset;
        v_i := v_i + 1;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION terms_dunning_json(p dunning_plans) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p.organisation_id IS NOT NULL THEN
        jsonb_build_object('steps', p.steps, 'updated_at', admin_ts(p.updated_at))
    ELSE 'null'::jsonb END
$$;

-- The plan of p_org ({"plan", "source": "organisation"|"default"}), or with p_customer that customer's override,
-- the organisation's plan and the one that applies ({"customer_id", "override", "plan", "effective"}); NULL when
-- p_customer is not p_org's.
CREATE OR REPLACE FUNCTION admin_dunning_get(p_org bigint, p_customer bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    d dunning_plans;
    t dunning_plans;
    v_plan jsonb;
BEGIN
    SELECT * INTO d FROM dunning_plans x WHERE x.organisation_id = p_org AND x.customer_id IS NULL;
    v_plan := CASE WHEN d.organisation_id IS NOT NULL
                   THEN jsonb_build_object('steps', d.steps, 'source', 'organisation',
                                           'updated_at', admin_ts(d.updated_at))
                   ELSE jsonb_build_object('steps', terms_dunning_default_steps(), 'source', 'default',
                                           'updated_at', NULL) END;
    IF p_customer IS NULL THEN
        RETURN v_plan;
    END IF;
    PERFORM 1 FROM customers k WHERE k.organisation_id = p_org AND k.id = p_customer;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO t FROM dunning_plans x WHERE x.organisation_id = p_org AND x.customer_id = p_customer;
    RETURN jsonb_build_object('customer_id', p_customer::text, 'override', terms_dunning_json(t), 'plan', v_plan,
                              'effective', CASE WHEN t.organisation_id IS NOT NULL THEN t.steps
                                                ELSE v_plan -> 'steps' END);
END
$$;

-- Sets p_org's plan (p_customer NULL) or a customer's override to p_steps (audited 'dunning.set'); 400 naming the
-- first bad field (terms_dunning_steps_refusal), nothing written.
CREATE OR REPLACE FUNCTION admin_dunning_put(p_org bigint, p_customer bigint, p_steps jsonb, p_actor text,
                                             p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    o dunning_plans;
    n dunning_plans;
BEGIN
    SELECT * INTO r FROM terms_dunning_steps_refusal(p_steps) LIMIT 1;
    IF FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', r.field, r.detail, NULL);
        RETURN;
    END IF;
    PERFORM audit_lock(p_org);
    IF p_customer IS NOT NULL THEN
        PERFORM 1 FROM customers k WHERE k.organisation_id = p_org AND k.id = p_customer;
        IF NOT FOUND THEN
            RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
            RETURN;
        END IF;
    END IF;
    SELECT * INTO o FROM dunning_plans x
    WHERE x.organisation_id = p_org AND x.customer_id IS NOT DISTINCT FROM p_customer FOR UPDATE;
    IF FOUND THEN
        IF o.steps IS DISTINCT FROM p_steps THEN
            UPDATE dunning_plans x SET steps = p_steps, updated_at = now()
            WHERE x.organisation_id = p_org AND x.customer_id IS NOT DISTINCT FROM p_customer RETURNING * INTO n;
            PERFORM audit_write(p_org, p_actor, 'dunning.set', 'dunning_plan', coalesce(p_customer::text, 'default'),
                                terms_dunning_json(o), terms_dunning_json(n), p_correlation);
        END IF;
    ELSE
        INSERT INTO dunning_plans (organisation_id, customer_id, steps) VALUES (p_org, p_customer, p_steps)
        RETURNING * INTO n;
        PERFORM audit_write(p_org, p_actor, 'dunning.set', 'dunning_plan', coalesce(p_customer::text, 'default'),
                            NULL, terms_dunning_json(n), p_correlation);
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, admin_dunning_get(p_org, p_customer));
END
$$;

-- Removes a customer's override (idempotent; audited 'dunning.delete' when there was one): the organisation's plan
-- applies again.
CREATE OR REPLACE FUNCTION admin_dunning_delete(p_org bigint, p_customer bigint, p_actor text, p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    o dunning_plans;
BEGIN
    PERFORM audit_lock(p_org);
    PERFORM 1 FROM customers k WHERE k.organisation_id = p_org AND k.id = p_customer;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    DELETE FROM dunning_plans x WHERE x.organisation_id = p_org AND x.customer_id = p_customer RETURNING * INTO o;
    IF FOUND THEN
        PERFORM audit_write(p_org, p_actor, 'dunning.delete', 'dunning_plan', p_customer::text,
                            terms_dunning_json(o), NULL, p_correlation);
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, admin_dunning_get(p_org, p_customer));
END
$$;
