-- SPDX-License-Identifier: MIT
-- admin.sql: the admin routes of the portal API (gateway/api/customers.c, matching.c, terms.c, users.c; docs/api.md
-- "Admin"): customers, the matching queue, payment terms, users, invitations and the organisation's settings. Each
-- route is one statement on the loop's async pool calling one function here, which does the whole change in the
-- statement's transaction, scoped by the admin's organisation (p_org) and audited (audit_write, actor 'user:<id>',
-- the request id as correlation) with audit_lock taken before any row lock.
--
-- Reads return one jsonb document, or NULL when the object is not in p_org (the route answers 404). Writes return
-- one row (result, field, detail, doc): result 'ok' (200), 'created' (201), 'not_found' (404), 'conflict' (409) or
-- 'invalid' (400 parameter_invalid, field names the input, detail says why); doc is the answer's body. Expected
-- outcomes are results, never exceptions, so a refusal writes nothing and still answers the caller. Ids leave as
-- decimal strings, times as UTC RFC 3339 ("2026-01-02T03:04:05Z").
--
-- Provider customers are linked exactly as the automatic matching links them (match_link, match.sql; for Stripe
-- and GoCardless then pm_customer_seen, payment_methods.sql, so their payment methods follow).
--
-- A functions file is re-applied by `settled migrate` whenever its text changes (docs/data-model.md).

CREATE OR REPLACE FUNCTION admin_ts(p timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- The opaque cursor of a page that ended at id p (base64url of "c<id>"; gateway/api/admin.c reads it).
CREATE OR REPLACE FUNCTION admin_cursor(p bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT translate(rtrim(encode(convert_to('c' || p::text, 'UTF8'), 'base64'), '='), '+/', '-_')
$$;

CREATE OR REPLACE FUNCTION admin_result(p_result text, p_field text, p_detail text, p_doc jsonb,
                                        OUT result text, OUT field text, OUT detail text, OUT doc jsonb)
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_result, p_field, p_detail, p_doc
$$;

-- ---------------------------------------------------------------------------------------------------
-- Customers

CREATE OR REPLACE FUNCTION admin_customer_json(c customers) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', c.id::text, 'name', c.name, 'email', c.email, 'tax_number', c.tax_number,
                              'account_number', c.account_number, 'reminders_opt_out', c.reminders_opt_out,
                              'archived', c.archived_at IS NOT NULL,
                              'archived_at', admin_ts(c.archived_at), 'created_at', admin_ts(c.created_at),
                              'updated_at', admin_ts(c.updated_at))
$$;

-- A page of p_org's customers by id, after id p_after (NULL: the first page), p_limit of them; p_q (may be NULL)
-- keeps those whose name or email contains it (case-insensitive, literally: no wildcards); archived customers
-- only with p_archived.
CREATE OR REPLACE FUNCTION admin_customers_list(p_org bigint, p_q text, p_archived boolean, p_after bigint,
                                                p_limit integer) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_page customers[];
BEGIN
    SELECT coalesce(array_agg(c ORDER BY c.id), '{}') INTO v_page FROM (
        SELECT * FROM customers k
        WHERE k.organisation_id = p_org AND (p_after IS NULL OR k.id > p_after)
          AND (coalesce(p_archived, false) OR k.archived_at IS NULL)
          AND (p_q IS NULL OR strpos(lower(k.name), lower(p_q)) > 0
               OR strpos(lower(coalesce(k.email, '')), lower(p_q)) > 0)
        ORDER BY k.id LIMIT p_limit + 1) c;
    RETURN jsonb_build_object(
        'data', (SELECT coalesce(jsonb_agg(admin_customer_json(c) ORDER BY c.id), '[]')
                 FROM unnest(v_page[1:p_limit]) c),
        'next_cursor', CASE WHEN cardinality(v_page) > p_limit THEN admin_cursor(v_page[p_limit].id) END);
END
$$;

CREATE OR REPLACE FUNCTION admin_terms_json(t payment_terms) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN t.organisation_id IS NOT NULL THEN
        jsonb_build_object('type', t.type, 'day', t.day, 'auto_collect', t.auto_collect,
                           'preferred_method', t.preferred_method, 'source', t.source,
                           'updated_at', admin_ts(t.updated_at))
    ELSE 'null'::jsonb END
$$;

-- One customer of p_org with its links (Xero contacts, Stripe and GoCardless customers) and its payment terms
-- override, or NULL.
CREATE OR REPLACE FUNCTION admin_customer_get(p_org bigint, p_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c customers;
    t payment_terms;
BEGIN
    SELECT * INTO c FROM customers k WHERE k.organisation_id = p_org AND k.id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO t FROM payment_terms x WHERE x.organisation_id = p_org AND x.customer_id = p_id;
    RETURN admin_customer_json(c) || jsonb_build_object(
        'xero_contacts', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'contact_id', x.contact_id::text, 'tenant_id', x.tenant_id::text, 'name', x.name, 'email', x.email,
                'rule', l.rule, 'linked_at', admin_ts(l.created_at)) ORDER BY x.name, x.contact_id), '[]')
            FROM xero_contacts x
            LEFT JOIN customer_links l ON l.organisation_id = x.organisation_id AND l.provider = 'xero'
                 AND l.external_id = x.contact_id::text
            WHERE x.organisation_id = p_org AND x.customer_id = p_id),
        'stripe_customers', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'id', l.external_id, 'rule', l.rule, 'linked_at', admin_ts(l.created_at),
                'default_method', pc.default_method, 'deleted', coalesce(pc.deleted, false))
                ORDER BY l.external_id), '[]')
            FROM customer_links l
            LEFT JOIN payment_customers pc ON pc.organisation_id = l.organisation_id AND pc.provider = 'stripe'
                 AND pc.external_id = l.external_id
            WHERE l.organisation_id = p_org AND l.customer_id = p_id AND l.provider = 'stripe'),
        'gocardless_customers', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'id', l.external_id, 'rule', l.rule, 'linked_at', admin_ts(l.created_at),
                'default_method', pc.default_method, 'deleted', coalesce(pc.deleted, false))
                ORDER BY l.external_id), '[]')
            FROM customer_links l
            LEFT JOIN payment_customers pc ON pc.organisation_id = l.organisation_id
                 AND pc.provider = 'gocardless' AND pc.external_id = l.external_id
            WHERE l.organisation_id = p_org AND l.customer_id = p_id AND l.provider = 'gocardless'),
        'terms', admin_terms_json(t));
END
$$;

-- Why an email address cannot be a customer's ('' and NULL are "none"), or NULL when it can.
CREATE OR REPLACE FUNCTION admin_email_refusal(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN nullif(btrim(p), '') IS NULL THEN NULL
                WHEN length(p) > 254 OR position('@' IN p) < 2 OR position('@' IN p) = length(btrim(p))
                    THEN 'is not an email address' END
$$;

CREATE OR REPLACE FUNCTION admin_customer_create(p_org bigint, p_name text, p_email text, p_tax_number text,
                                                 p_account_number text, p_actor text, p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    c customers;
BEGIN
    IF norm_name(p_name) IS NULL THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'name', 'must not be blank', NULL);
        RETURN;
    END IF;
    IF admin_email_refusal(p_email) IS NOT NULL THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'email', admin_email_refusal(p_email), NULL);
        RETURN;
    END IF;
    PERFORM audit_lock(p_org);
    INSERT INTO customers (organisation_id, name, email, tax_number, account_number)
    VALUES (p_org, btrim(p_name), nullif(btrim(p_email), ''), nullif(btrim(p_tax_number), ''),
            nullif(btrim(p_account_number), ''))
    RETURNING * INTO c;
    PERFORM audit_write(p_org, p_actor, 'customer.create', 'customer', c.id::text, NULL, admin_customer_json(c),
                        p_correlation);
    RETURN QUERY SELECT * FROM admin_result('created', NULL, NULL, admin_customer_get(p_org, c.id));
END
$$;

-- Changes the members of p_patch (name, email, tax_number, account_number; a null member clears it, except name).
CREATE OR REPLACE FUNCTION admin_customer_update(p_org bigint, p_id bigint, p_patch jsonb, p_actor text,
                                                 p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    o customers;
    n customers;
BEGIN
    IF p_patch ? 'name' AND norm_name(p_patch ->> 'name') IS NULL THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'name', 'must not be blank', NULL);
        RETURN;
    END IF;
    IF admin_email_refusal(p_patch ->> 'email') IS NOT NULL THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'email', admin_email_refusal(p_patch ->> 'email'), NULL);
        RETURN;
    END IF;
    PERFORM audit_lock(p_org);
    SELECT * INTO o FROM customers k WHERE k.organisation_id = p_org AND k.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    n := o;
    IF p_patch ? 'name' THEN
        n.name := btrim(p_patch ->> 'name');
    END IF;
    IF p_patch ? 'email' THEN
        n.email := nullif(btrim(p_patch ->> 'email'), '');
    END IF;
    IF p_patch ? 'tax_number' THEN
        n.tax_number := nullif(btrim(p_patch ->> 'tax_number'), '');
    END IF;
    IF p_patch ? 'account_number' THEN
        n.account_number := nullif(btrim(p_patch ->> 'account_number'), '');
    END IF;
    -- the reminders opt-out (docs/collections.md, "Unsubscribe"); null leaves it as it is
    IF jsonb_typeof(p_patch -> 'reminders_opt_out') = 'boolean'
       AND (p_patch ->> 'reminders_opt_out')::boolean IS DISTINCT FROM o.reminders_opt_out THEN
        n.reminders_opt_out := (p_patch ->> 'reminders_opt_out')::boolean;
        n.reminders_opt_out_at := now();
        n.reminders_opt_out_by := 'admin';
    END IF;
    IF (n.name, n.email, n.tax_number, n.account_number, n.reminders_opt_out) IS DISTINCT FROM
       (o.name, o.email, o.tax_number, o.account_number, o.reminders_opt_out) THEN
        UPDATE customers k SET name = n.name, email = n.email, tax_number = n.tax_number,
                               account_number = n.account_number, reminders_opt_out = n.reminders_opt_out,
                               reminders_opt_out_at = n.reminders_opt_out_at,
                               reminders_opt_out_by = n.reminders_opt_out_by, updated_at = now()
        WHERE k.id = p_id RETURNING * INTO n;
        PERFORM audit_write(p_org, p_actor, 'customer.update', 'customer', p_id::text, admin_customer_json(o),
                            admin_customer_json(n), p_correlation);
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, admin_customer_get(p_org, p_id));
END
$$;

-- Archives a customer (idempotent: archiving an archived one changes and audits nothing).
CREATE OR REPLACE FUNCTION admin_customer_archive(p_org bigint, p_id bigint, p_actor text, p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    o customers;
    n customers;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT * INTO o FROM customers k WHERE k.organisation_id = p_org AND k.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    IF o.archived_at IS NULL THEN
        UPDATE customers k SET archived_at = now(), updated_at = now() WHERE k.id = p_id RETURNING * INTO n;
        PERFORM audit_write(p_org, p_actor, 'customer.archive', 'customer', p_id::text, admin_customer_json(o),
                            admin_customer_json(n), p_correlation);
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, admin_customer_get(p_org, p_id));
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- The matching queue

CREATE OR REPLACE FUNCTION admin_match_json(q matching_queue) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', q.id::text, 'provider', q.provider, 'external_id', q.external_id,
        'external_name', q.external_name, 'reasons', q.reasons, 'status', q.status,
        'created_at', admin_ts(q.created_at), 'resolved_at', admin_ts(q.resolved_at),
        'candidates', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', c.id::text, 'name', c.name,
                                                                    'email', c.email) ORDER BY c.id), '[]')
                       FROM customers c
                       WHERE c.organisation_id = q.organisation_id AND c.id = ANY (q.candidate_ids)
                         AND c.archived_at IS NULL))
$$;

-- A page of p_org's open queue entries, oldest first, after id p_after.
CREATE OR REPLACE FUNCTION admin_matching_list(p_org bigint, p_after bigint, p_limit integer) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_page matching_queue[];
BEGIN
    SELECT coalesce(array_agg(q ORDER BY q.id), '{}') INTO v_page FROM (
        SELECT * FROM matching_queue m
        WHERE m.organisation_id = p_org AND m.status = 'open' AND (p_after IS NULL OR m.id > p_after)
        ORDER BY m.id LIMIT p_limit + 1) q;
    RETURN jsonb_build_object(
        'data', (SELECT coalesce(jsonb_agg(admin_match_json(q) ORDER BY q.id), '[]') FROM unnest(v_page[1:p_limit]) q),
        'next_cursor', CASE WHEN cardinality(v_page) > p_limit THEN admin_cursor(v_page[p_limit].id) END);
END
$$;

-- An admin's decision on open queue entry p_item: 'accept' (p_customer one of its candidates), 'link' (p_customer
-- any active customer of p_org), 'reject' (dismissed: match_enqueue does not ask again until the situation
-- changes) or 'create' (a new customer from what the provider told, linked with rule 'created'). Audited as
-- 'match.accept', 'match.link_manual', 'match.reject' or 'match.create_customer' on the entry, besides match_link's
-- own 'match.link' of the link.
CREATE OR REPLACE FUNCTION admin_match_decide(p_org bigint, p_item bigint, p_action text, p_customer bigint,
                                              p_actor text, p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    o matching_queue;
    n matching_queue;
    x xero_contacts;
    c customers;
    pc payment_customers;
    v_customer bigint := p_customer;
    v_existing bigint;
    v_name text;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT * INTO o FROM matching_queue m WHERE m.organisation_id = p_org AND m.id = p_item FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    IF o.status <> 'open' THEN
        RETURN QUERY SELECT * FROM admin_result('conflict', NULL, 'the entry was already ' || o.status, NULL);
        RETURN;
    END IF;
    IF p_action IN ('accept', 'link') THEN
        IF NOT EXISTS (SELECT 1 FROM customers k
                       WHERE k.organisation_id = p_org AND k.id = p_customer AND k.archived_at IS NULL) THEN
            RETURN QUERY SELECT * FROM admin_result('invalid', 'customer_id',
                                                    'is not an active customer of the organisation', NULL);
            RETURN;
        END IF;
        IF p_action = 'accept' AND NOT p_customer = ANY (o.candidate_ids) THEN
            RETURN QUERY SELECT * FROM admin_result('invalid', 'customer_id', 'is not a candidate of the entry', NULL);
            RETURN;
        END IF;
    END IF;
    IF p_action <> 'reject' THEN
        SELECT l.customer_id INTO v_existing FROM customer_links l
        WHERE l.organisation_id = p_org AND l.provider = o.provider AND l.external_id = o.external_id;
        IF FOUND AND (p_action = 'create' OR v_existing <> p_customer) THEN
            RETURN QUERY SELECT * FROM admin_result('conflict', NULL,
                'the provider customer is already linked to customer ' || v_existing, NULL);
            RETURN;
        END IF;
    END IF;
    IF p_action = 'create' THEN
        IF o.provider = 'xero' THEN
            SELECT * INTO x FROM xero_contacts k
            WHERE k.organisation_id = p_org AND k.contact_id::text = o.external_id ORDER BY k.fetched_at DESC LIMIT 1;
        END IF;
        v_name := coalesce(nullif(btrim(x.name), ''), nullif(btrim(o.external_name), ''));
        IF norm_name(v_name) IS NULL THEN
            RETURN QUERY SELECT * FROM admin_result('conflict', NULL,
                'the provider told no name to make a customer of; create one and link it', NULL);
            RETURN;
        END IF;
        INSERT INTO customers (organisation_id, name, email, tax_number, account_number)
        VALUES (p_org, v_name,
                coalesce(nullif(btrim(x.email), ''),
                         CASE WHEN admin_email_refusal(o.external_name) IS NULL
                              AND position('@' IN coalesce(o.external_name, '')) > 0 THEN btrim(o.external_name) END),
                x.tax_number, x.account_number)
        RETURNING * INTO c;
        v_customer := c.id;
        PERFORM audit_write(p_org, p_actor, 'match.create', 'customer', c.id::text, NULL,
            admin_customer_json(c) || jsonb_build_object('from', jsonb_build_object('provider', o.provider,
                                                                                    'external_id', o.external_id)),
            p_correlation);
    END IF;
    IF p_action = 'reject' THEN
        UPDATE matching_queue m SET status = 'dismissed', resolved_at = now() WHERE m.id = p_item;
    ELSE
        PERFORM match_link(p_org, o.provider, o.external_id, v_customer,
                           CASE WHEN p_action = 'create' THEN 'created' ELSE 'admin' END, p_actor, p_correlation);
        -- exactly this link existed already (match_link wrote nothing): the decision still closes the entry
        UPDATE matching_queue m SET status = 'resolved', resolved_at = now() WHERE m.id = p_item AND m.status = 'open';
        IF o.provider IN ('stripe', 'gocardless') THEN
            -- as the automatic matching does (pm_apply_*_customer): the provider customer's methods follow
            SELECT * INTO pc FROM payment_customers k
            WHERE k.organisation_id = p_org AND k.provider = o.provider AND k.external_id = o.external_id;
            -- no new copy of the provider's customer was observed: its last observation time stands
            PERFORM pm_customer_seen(p_org, o.provider, o.external_id, coalesce(pc.observed_at, '-infinity'),
                                     v_customer, pc.default_method, coalesce(pc.deleted, false), p_correlation);
        END IF;
    END IF;
    SELECT * INTO n FROM matching_queue m WHERE m.id = p_item;
    PERFORM audit_write(p_org, p_actor,
        CASE p_action WHEN 'accept' THEN 'match.accept' WHEN 'link' THEN 'match.link_manual'
                      WHEN 'reject' THEN 'match.reject' ELSE 'match.create_customer' END,
        'matching_queue', p_item::text, to_jsonb(o) - 'organisation_id',
        to_jsonb(n) - 'organisation_id' || jsonb_build_object('customer_id', v_customer), p_correlation);
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL,
        admin_match_json(n) || jsonb_build_object('customer_id', v_customer::text));
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Payment terms

-- The terms of p_org: its default ({"default"}), or with p_customer that customer's override, the default and the
-- terms that apply ({"customer_id", "override", "default", "effective"}); NULL when p_customer is not p_org's.
CREATE OR REPLACE FUNCTION admin_terms_get(p_org bigint, p_customer bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    d payment_terms;
    t payment_terms;
BEGIN
    SELECT * INTO d FROM payment_terms x WHERE x.organisation_id = p_org AND x.customer_id IS NULL;
    IF p_customer IS NULL THEN
        RETURN jsonb_build_object('default', admin_terms_json(d));
    END IF;
    PERFORM 1 FROM customers k WHERE k.organisation_id = p_org AND k.id = p_customer;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO t FROM payment_terms x WHERE x.organisation_id = p_org AND x.customer_id = p_customer;
    RETURN jsonb_build_object('customer_id', p_customer::text, 'override', admin_terms_json(t),
                              'default', admin_terms_json(d),
                              'effective', CASE WHEN t.organisation_id IS NOT NULL THEN admin_terms_json(t)
                                                ELSE admin_terms_json(d) END);
END
$$;

-- Why day p_day does not go with term type p_type, or NULL.
CREATE OR REPLACE FUNCTION admin_terms_day_refusal(p_type text, p_day integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_type IN ('OFCURRENTMONTH', 'OFFOLLOWINGMONTH') AND p_day NOT BETWEEN 1 AND 31
            THEN 'must be a day of the month (1 to 31) for ' || p_type
        WHEN p_type IN ('DAYSAFTERBILLDATE', 'DAYSAFTERBILLMONTH') AND p_day NOT BETWEEN 0 AND 365
            THEN 'must be a number of days (0 to 365) for ' || p_type
    END
$$;

-- Sets the default (p_customer NULL) or a customer's override.
CREATE OR REPLACE FUNCTION admin_terms_put(p_org bigint, p_customer bigint, p_type text, p_day integer,
                                           p_auto_collect boolean, p_method text, p_actor text, p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    o payment_terms;
    n payment_terms;
BEGIN
    IF p_type IS NULL OR p_type NOT IN ('DAYSAFTERBILLDATE', 'DAYSAFTERBILLMONTH', 'OFCURRENTMONTH',
                                        'OFFOLLOWINGMONTH') THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'type', 'is not a term type', NULL);
        RETURN;
    END IF;
    IF admin_terms_day_refusal(p_type, p_day) IS NOT NULL THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'day', admin_terms_day_refusal(p_type, p_day), NULL);
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
    SELECT * INTO o FROM payment_terms x
    WHERE x.organisation_id = p_org AND x.customer_id IS NOT DISTINCT FROM p_customer FOR UPDATE;
    IF FOUND THEN
        IF (o.type, o.day, o.auto_collect, o.preferred_method, o.source) IS DISTINCT FROM
           (p_type, p_day, coalesce(p_auto_collect, false), p_method, 'admin') THEN
            -- an admin's terms replace the Xero organisation's (source 'admin': the mirror no longer updates them)
            UPDATE payment_terms x SET type = p_type, day = p_day, auto_collect = coalesce(p_auto_collect, false),
                                       preferred_method = p_method, source = 'admin', updated_at = now()
            WHERE x.organisation_id = p_org AND x.customer_id IS NOT DISTINCT FROM p_customer RETURNING * INTO n;
            PERFORM audit_write(p_org, p_actor, 'terms.set', 'payment_terms', coalesce(p_customer::text, 'default'),
                                admin_terms_json(o), admin_terms_json(n), p_correlation);
        END IF;
    ELSE
        INSERT INTO payment_terms (organisation_id, customer_id, type, day, auto_collect, preferred_method)
        VALUES (p_org, p_customer, p_type, p_day, coalesce(p_auto_collect, false), p_method) RETURNING * INTO n;
        PERFORM audit_write(p_org, p_actor, 'terms.set', 'payment_terms', coalesce(p_customer::text, 'default'),
                            NULL, admin_terms_json(n), p_correlation);
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, admin_terms_get(p_org, p_customer));
END
$$;

-- Removes a customer's override (idempotent): the default applies again.
CREATE OR REPLACE FUNCTION admin_terms_delete(p_org bigint, p_customer bigint, p_actor text, p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    o payment_terms;
BEGIN
    PERFORM audit_lock(p_org);
    PERFORM 1 FROM customers k WHERE k.organisation_id = p_org AND k.id = p_customer;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    DELETE FROM payment_terms x WHERE x.organisation_id = p_org AND x.customer_id = p_customer RETURNING * INTO o;
    IF FOUND THEN
        PERFORM audit_write(p_org, p_actor, 'terms.delete', 'payment_terms', p_customer::text, admin_terms_json(o),
                            NULL, p_correlation);
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, admin_terms_get(p_org, p_customer));
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Settings, users and invitations

CREATE OR REPLACE FUNCTION admin_settings_get(p_org bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('self_registration', o.self_registration) FROM organisations o WHERE o.id = p_org
$$;

CREATE OR REPLACE FUNCTION admin_settings_put(p_org bigint, p_self_registration text, p_actor text,
                                              p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_old text;
BEGIN
    IF p_self_registration IS NULL OR p_self_registration NOT IN ('off', 'approval') THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'self_registration', 'must be off or approval', NULL);
        RETURN;
    END IF;
    PERFORM audit_lock(p_org);
    SELECT o.self_registration INTO v_old FROM organisations o WHERE o.id = p_org FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    IF v_old <> p_self_registration THEN
        UPDATE organisations o SET self_registration = p_self_registration WHERE o.id = p_org;
        PERFORM audit_write(p_org, p_actor, 'organisation.settings', 'organisation', p_org::text,
                            jsonb_build_object('self_registration', v_old),
                            jsonb_build_object('self_registration', p_self_registration), p_correlation);
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, admin_settings_get(p_org));
END
$$;

CREATE OR REPLACE FUNCTION admin_user_json(u users) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', u.id::text, 'email', u.email, 'role', u.role, 'customer_id', u.customer_id::text,
                              'status', u.status, 'created_at', admin_ts(u.created_at),
                              'last_login_at', admin_ts(u.last_login_at))
$$;

-- A page of p_org's users by id, after p_after; p_status (may be NULL) keeps those of that status.
CREATE OR REPLACE FUNCTION admin_users_list(p_org bigint, p_status text, p_after bigint, p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_page users[];
BEGIN
    SELECT coalesce(array_agg(u ORDER BY u.id), '{}') INTO v_page FROM (
        SELECT * FROM users x
        WHERE x.organisation_id = p_org AND (p_status IS NULL OR x.status = p_status)
          AND (p_after IS NULL OR x.id > p_after)
        ORDER BY x.id LIMIT p_limit + 1) u;
    RETURN jsonb_build_object(
        'data', (SELECT coalesce(jsonb_agg(admin_user_json(u) ORDER BY u.id), '[]') FROM unnest(v_page[1:p_limit]) u),
        'next_cursor', CASE WHEN cardinality(v_page) > p_limit THEN admin_cursor(v_page[p_limit].id) END);
END
$$;

-- Disables user p_user of p_org (auth_user_disable: its refresh tokens are revoked too); an admin cannot disable
-- itself (p_self). doc: the user, and the number of live refresh tokens revoked.
CREATE OR REPLACE FUNCTION admin_user_disable(p_org bigint, p_user bigint, p_self bigint, p_actor text,
                                              p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    u users;
    r record;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT * INTO u FROM users x WHERE x.organisation_id = p_org AND x.id = p_user;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    IF p_user = p_self THEN
        RETURN QUERY SELECT * FROM admin_result('conflict', NULL, 'an admin cannot disable itself', NULL);
        RETURN;
    END IF;
    IF u.status IN ('pending_verification', 'pending_approval') AND u.customer_id IS NULL THEN
        -- a sign-up waiting for its address's verification or for approval has no customer, which a disabled
        -- client needs: it stays pending (it cannot sign in anyway)
        RETURN QUERY SELECT * FROM admin_result('conflict', NULL,
            CASE u.status WHEN 'pending_approval' THEN 'the user waits for approval: it cannot sign in until approved'
                          ELSE 'the user has not verified its e-mail address: it cannot sign in until then' END,
            NULL);
        RETURN;
    END IF;
    SELECT * INTO r FROM auth_user_disable(p_org, u.email, p_actor, p_correlation);
    SELECT * INTO u FROM users x WHERE x.id = p_user;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL,
        admin_user_json(u) || jsonb_build_object('sessions_revoked', coalesce(r.revoked, 0)));
END
$$;

-- Approves a self-registered (pending_approval) user as a client of p_customer (auth_user_approve).
CREATE OR REPLACE FUNCTION admin_user_approve(p_org bigint, p_user bigint, p_customer bigint, p_actor text,
                                              p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    u users;
    v_result text;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT * INTO u FROM users x WHERE x.organisation_id = p_org AND x.id = p_user;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM customers k WHERE k.organisation_id = p_org AND k.id = p_customer
                                           AND k.archived_at IS NOT NULL) THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'customer_id', 'is an archived customer', NULL);
        RETURN;
    END IF;
    v_result := auth_user_approve(p_org, p_user, p_customer, p_actor, p_correlation);
    IF v_result = 'customer_unknown' THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'customer_id', 'is not a customer of the organisation',
                                                NULL);
        RETURN;
    ELSIF v_result <> 'approved' THEN
        RETURN QUERY SELECT * FROM admin_result('conflict', NULL, 'the user is ' || u.status ||
                                                ', not waiting for approval', NULL);
        RETURN;
    END IF;
    SELECT * INTO u FROM users x WHERE x.id = p_user;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, admin_user_json(u));
END
$$;

DROP FUNCTION IF EXISTS admin_invite(bigint, text, text, bigint, text, bigint, text, text);
-- Stores an invitation of which only the digest p_digest is kept, and enqueues its e-mail (p_subject, p_text,
-- p_html: rendered with the link; auth_invitation_mail) in the same transaction; the inviting admin is recorded
-- when it has a users row (p_admin).
CREATE OR REPLACE FUNCTION admin_invite(p_org bigint, p_email text, p_role text, p_customer bigint, p_digest text,
                                        p_admin bigint, p_actor text, p_correlation text, p_subject text,
                                        p_text text, p_html text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF EXISTS (SELECT 1 FROM customers k WHERE k.organisation_id = p_org AND k.id = p_customer
                                           AND k.archived_at IS NOT NULL) THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'customer_id', 'is an archived customer', NULL);
        RETURN;
    END IF;
    SELECT * INTO r FROM auth_invitation_mail(p_org, p_email, p_role, p_customer, p_digest,
        (SELECT u.id FROM users u WHERE u.organisation_id = p_org AND u.id = p_admin), p_actor, p_correlation,
        p_subject, p_text, p_html);
    RETURN QUERY SELECT * FROM admin_result(
        CASE r.result WHEN 'created' THEN 'created' WHEN 'email_taken' THEN 'conflict' ELSE 'invalid' END,
        CASE WHEN r.result IN ('email_invalid') THEN 'email' WHEN r.result = 'role_invalid' THEN 'role'
             WHEN r.result IN ('customer_required', 'customer_not_allowed', 'customer_unknown') THEN 'customer_id'
             END,
        CASE r.result WHEN 'email_invalid' THEN 'is not an email address'
                      WHEN 'role_invalid' THEN 'must be admin or client'
                      WHEN 'customer_required' THEN 'is required for a client'
                      WHEN 'customer_not_allowed' THEN 'must not be given for an admin'
                      WHEN 'customer_unknown' THEN 'is not a customer of the organisation'
                      WHEN 'email_taken' THEN 'the organisation already has a user with this email address' END,
        CASE WHEN r.result = 'created' THEN jsonb_build_object('email', btrim(p_email), 'role', p_role,
            'customer_id', p_customer::text, 'expires_at', admin_ts(r.expires_at),
            'notification_id', r.notification_id::text) END);
END
$$;
