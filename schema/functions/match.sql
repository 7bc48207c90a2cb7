-- SPDX-License-Identifier: MIT
-- match.sql: matching provider customers to portal customers (DESIGN.md section 3.4): the normalisation of emails,
-- names and tax or account numbers, linking, the admins' matching queue, and the rules (match_rules) that match a
-- mirrored Xero contact (match_contact) or a Stripe or GoCardless customer (pm_match_customer, payment_methods.sql).
-- The tables (customers, customer_links, matching_queue) are in 0002_pipeline.sql. Today its callers are SQL:
-- xero_upsert_contacts in xero_mirror.sql runs match_contact, the payment-method functions run match_rules; its C
-- room, gateway/domain/match.c, arrives with the matching API.
--
-- norm_email, norm_name and norm_ident are IMMUTABLE and computed into STORED generated columns of customers and
-- xero_contacts: replacing one here does not recompute the stored values. A change of what they return needs a
-- numbered migration that replaces the function itself and then recomputes the columns (docs/data-model.md).
--
-- A functions file is re-applied by `settled migrate`, after the numbered migrations and together with the other
-- functions files in one transaction, whenever its text changes: edit the function here, never in the numbered
-- migration that first created it (docs/data-model.md, "Migrations and functions files").

-- ---------------------------------------------------------------------------------------------------
-- Normalisation (one definition, used by generated columns and by match_contact)

-- An email address for comparison: trimmed, lower case; empty is NULL.
CREATE OR REPLACE FUNCTION norm_email(p text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(lower(btrim(p, E' \t\r\n')), '')
$$;

-- A name for comparison: trimmed, inner whitespace runs collapsed to one space, lower case; empty is NULL.
CREATE OR REPLACE FUNCTION norm_name(p text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(lower(btrim(regexp_replace(p, '\s+', ' ', 'g'))), '')
$$;

-- A tax or account number for comparison: letters and digits only, upper case ("123-22 3456" and
-- "123223456" are the same number); empty is NULL, so blank numbers never match anything.
CREATE OR REPLACE FUNCTION norm_ident(p text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(upper(regexp_replace(p, '[^[:alnum:]]+', '', 'g')), '')
$$;

-- ---------------------------------------------------------------------------------------------------
-- Linking, queueing and matching

-- Links (p_org, p_provider, p_external_id) to a customer with rule p_rule and audits it ('match.link').
-- Returns true when it made the link, false when exactly this link already existed (nothing written).
-- A link to another customer is an error: change links deliberately, never by accident. For Xero, sets
-- xero_contacts.customer_id; resolves the open matching-queue entry of that external id.
CREATE OR REPLACE FUNCTION match_link(p_org bigint, p_provider text, p_external_id text, p_customer_id bigint, p_rule text,
                           p_actor text, p_correlation text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_existing bigint;
    v_resolved bigint[];
BEGIN
    PERFORM audit_lock(p_org);
    PERFORM 1 FROM customers c WHERE c.organisation_id = p_org AND c.id = p_customer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'match_link: organisation % has no customer %', p_org, p_customer_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    INSERT INTO customer_links (organisation_id, provider, external_id, customer_id, rule)
    VALUES (p_org, p_provider, p_external_id, p_customer_id, p_rule)
    ON CONFLICT (organisation_id, provider, external_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT l.customer_id INTO v_existing FROM customer_links l
        WHERE l.organisation_id = p_org AND l.provider = p_provider AND l.external_id = p_external_id;
        IF v_existing <> p_customer_id THEN
            RAISE EXCEPTION 'match_link: % % is already linked to customer %, not %', p_provider, p_external_id,
                v_existing, p_customer_id USING ERRCODE = 'unique_violation';
        END IF;
        RETURN false;
    END IF;
    IF p_provider = 'xero' THEN
        UPDATE xero_contacts x SET customer_id = p_customer_id
        WHERE x.organisation_id = p_org AND x.contact_id = p_external_id::uuid
          AND x.customer_id IS DISTINCT FROM p_customer_id;
    END IF;
    WITH r AS (
        UPDATE matching_queue q SET status = 'resolved', resolved_at = now()
        WHERE q.organisation_id = p_org AND q.provider = p_provider AND q.external_id = p_external_id
          AND q.status = 'open'
        RETURNING q.id)
    SELECT coalesce(array_agg(r.id), '{}') INTO v_resolved FROM r;
    PERFORM audit_write(p_org, p_actor, 'match.link', 'customer_link', p_provider || ':' || p_external_id, NULL,
        jsonb_build_object('provider', p_provider, 'external_id', p_external_id, 'customer_id', p_customer_id,
                           'rule', p_rule, 'resolved_queue_ids', to_jsonb(v_resolved)),
        p_correlation);
    RETURN true;
END
$$;

-- Puts (p_org, p_provider, p_external_id) in the matching queue, or updates its open entry, and audits it
-- ('match.queue'). Idempotent: nothing is written when the open entry (or the latest dismissed one)
-- already says the same.
CREATE OR REPLACE FUNCTION match_enqueue(p_org bigint, p_provider text, p_external_id text, p_external_name text,
                              p_reasons jsonb, p_candidates bigint[], p_correlation text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    q matching_queue;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT * INTO q FROM matching_queue m
    WHERE m.organisation_id = p_org AND m.provider = p_provider AND m.external_id = p_external_id
      AND m.status = 'open'
    FOR UPDATE;
    IF FOUND THEN
        IF q.reasons = p_reasons AND q.candidate_ids = p_candidates
           AND q.external_name IS NOT DISTINCT FROM p_external_name THEN
            RETURN q.id;
        END IF;
        UPDATE matching_queue m SET reasons = p_reasons, candidate_ids = p_candidates, external_name = p_external_name
        WHERE m.id = q.id;
        PERFORM audit_write(p_org, 'system:matching', 'match.queue', 'matching_queue', q.id::text,
            jsonb_build_object('external_name', q.external_name, 'reasons', q.reasons,
                               'candidate_ids', to_jsonb(q.candidate_ids)),
            jsonb_build_object('provider', p_provider, 'external_id', p_external_id, 'external_name', p_external_name,
                               'reasons', p_reasons, 'candidate_ids', to_jsonb(p_candidates)),
            p_correlation);
        RETURN q.id;
    END IF;
    -- an admin dismissed exactly this situation: do not ask again until something changes
    SELECT * INTO q FROM matching_queue m
    WHERE m.organisation_id = p_org AND m.provider = p_provider AND m.external_id = p_external_id
    ORDER BY m.id DESC LIMIT 1;
    IF FOUND AND q.status = 'dismissed' AND q.reasons = p_reasons AND q.candidate_ids = p_candidates THEN
        RETURN q.id;
    END IF;
    INSERT INTO matching_queue (organisation_id, provider, external_id, external_name, reasons, candidate_ids)
    VALUES (p_org, p_provider, p_external_id, p_external_name, p_reasons, p_candidates)
    RETURNING * INTO q;
    PERFORM audit_write(p_org, 'system:matching', 'match.queue', 'matching_queue', q.id::text, NULL,
        jsonb_build_object('provider', p_provider, 'external_id', p_external_id, 'external_name', p_external_name,
                           'reasons', p_reasons, 'candidate_ids', to_jsonb(p_candidates)),
        p_correlation);
    RETURN q.id;
END
$$;

-- The matching rules every provider customer goes through, in order: an existing link of (p_provider,
-- p_external_id) ('existing'); then exact normalised email, tax number, account number and name, each
-- skipped when its value is NULL: one customer links (through match_link, rule = the rule's name),
-- several queue the external id as ambiguous (match_enqueue, the reasons p_reasons plus kind, rule and
-- value) and stop. Returns the rule and the customer: ('existing' | 'email' | 'tax_number' |
-- 'account_number' | 'name', id), ('ambiguous', NULL), or (NULL, NULL) when no rule matched: the caller
-- then creates or queues. Archived customers (customers.archived_at, 0018) are never candidates; an existing link
-- to one still answers 'existing'. Running it again changes nothing and writes nothing.
CREATE OR REPLACE FUNCTION match_rules(p_org bigint, p_provider text, p_external_id text, p_external_name text,
                                       p_email text, p_tax_number text, p_account_number text, p_name text,
                                       p_reasons jsonb, p_correlation text, OUT rule text, OUT customer_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_rule text;
    v_value text;
    v_ids bigint[];
BEGIN
    PERFORM audit_lock(p_org);
    SELECT l.customer_id INTO customer_id FROM customer_links l
    WHERE l.organisation_id = p_org AND l.provider = p_provider AND l.external_id = p_external_id;
    IF FOUND THEN
        rule := 'existing';
        RETURN;
    END IF;
    FOREACH v_rule IN ARRAY ARRAY['email', 'tax_number', 'account_number', 'name'] LOOP
        v_value := CASE v_rule
            WHEN 'email' THEN norm_email(p_email)
            WHEN 'tax_number' THEN norm_ident(p_tax_number)
            WHEN 'account_number' THEN norm_ident(p_account_number)
            ELSE norm_name(p_name) END;
        CONTINUE WHEN v_value IS NULL;
        -- one query per rule, so that each uses its index
        IF v_rule = 'email' THEN
            SELECT coalesce(array_agg(k.id ORDER BY k.id), '{}') INTO v_ids FROM customers k
            WHERE k.organisation_id = p_org AND k.email_normalised = v_value AND k.archived_at IS NULL;
        ELSIF v_rule = 'tax_number' THEN
            SELECT coalesce(array_agg(k.id ORDER BY k.id), '{}') INTO v_ids FROM customers k
            WHERE k.organisation_id = p_org AND k.tax_number_normalised = v_value AND k.archived_at IS NULL;
        ELSIF v_rule = 'account_number' THEN
            SELECT coalesce(array_agg(k.id ORDER BY k.id), '{}') INTO v_ids FROM customers k
            WHERE k.organisation_id = p_org AND k.account_number_normalised = v_value AND k.archived_at IS NULL;
        ELSE
            SELECT coalesce(array_agg(k.id ORDER BY k.id), '{}') INTO v_ids FROM customers k
            WHERE k.organisation_id = p_org AND k.name_normalised = v_value AND k.archived_at IS NULL;
        END IF;
        IF cardinality(v_ids) = 1 THEN
            PERFORM match_link(p_org, p_provider, p_external_id, v_ids[1], v_rule, 'system:matching', p_correlation);
            rule := v_rule;
            customer_id := v_ids[1];
            RETURN;
        ELSIF cardinality(v_ids) > 1 THEN
            PERFORM match_enqueue(p_org, p_provider, p_external_id, p_external_name,
                coalesce(p_reasons, '{}') || jsonb_build_object('kind', 'ambiguous', 'rule', v_rule, 'value', v_value),
                v_ids, p_correlation);
            rule := 'ambiguous';
            RETURN;
        END IF;
    END LOOP;
END
$$;

-- Matches a mirrored Xero contact to a portal customer of its organisation. In order: an existing link
-- ('existing'); exact normalised email, then tax number, then account number, then name: one customer
-- links ('email', 'tax_number', 'account_number', 'name'), several queue the contact ('ambiguous') and
-- stop (match_rules); no rule matches: with p_create a customer is created from the contact and linked
-- ('created'), otherwise the contact is queued ('none'). Contacts Xero flags as suppliers only, and archived
-- contacts, are never created as customers (queued 'none'). Every decision is audited; running it
-- again changes nothing and writes nothing.
CREATE OR REPLACE FUNCTION match_contact(p_org bigint, p_tenant uuid, p_contact_id uuid, p_correlation text, p_create boolean)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    c xero_contacts;
    v_ext text := p_contact_id::text;
    m record;
    v_customer customers;
    v_why text;
BEGIN
    -- one matcher per organisation at a time (two contacts with one new email must not both create),
    -- and the organisation's lock before any row lock (see audit_lock)
    PERFORM audit_lock(p_org);
    SELECT * INTO c FROM xero_contacts x
    WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.contact_id = p_contact_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'match_contact: organisation % has no Xero contact % in tenant %', p_org, p_contact_id, p_tenant
            USING ERRCODE = 'no_data_found';
    END IF;

    SELECT * INTO m FROM match_rules(p_org, 'xero', v_ext, c.name, c.email, c.tax_number, c.account_number, c.name,
                                     jsonb_build_object('tenant_id', p_tenant), p_correlation);
    IF m.rule = 'existing' THEN
        IF c.customer_id IS DISTINCT FROM m.customer_id THEN
            UPDATE xero_contacts x SET customer_id = m.customer_id
            WHERE x.organisation_id = p_org AND x.contact_id = p_contact_id;
        END IF;
    END IF;
    IF m.rule IS NOT NULL THEN
        RETURN m.rule;
    END IF;
    v_why := CASE
        WHEN NOT coalesce(p_create, false) THEN NULL
        WHEN c.contact_status = 'ARCHIVED' THEN 'archived'
        WHEN c.is_supplier IS TRUE AND c.is_customer IS FALSE THEN 'supplier_only'
        WHEN norm_name(c.name) IS NULL THEN 'no_name'
        END;
    IF coalesce(p_create, false) AND v_why IS NULL THEN
        INSERT INTO customers (organisation_id, name, email, tax_number, account_number)
        VALUES (p_org, btrim(c.name), nullif(btrim(c.email), ''), c.tax_number, c.account_number)
        RETURNING * INTO v_customer;
        PERFORM audit_write(p_org, 'system:matching', 'match.create', 'customer', v_customer.id::text, NULL,
            jsonb_build_object('id', v_customer.id, 'name', v_customer.name, 'email', v_customer.email,
                               'tax_number', v_customer.tax_number, 'account_number', v_customer.account_number,
                               'from', jsonb_build_object('provider', 'xero', 'external_id', v_ext,
                                                          'tenant_id', p_tenant)),
            p_correlation);
        PERFORM match_link(p_org, 'xero', v_ext, v_customer.id, 'created', 'system:matching', p_correlation);
        RETURN 'created';
    END IF;
    PERFORM match_enqueue(p_org, 'xero', v_ext, c.name,
        jsonb_strip_nulls(jsonb_build_object('kind', 'none', 'tenant_id', p_tenant, 'not_created', v_why)),
        '{}', p_correlation);
    RETURN 'none';
END
$$;
