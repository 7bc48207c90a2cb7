-- SPDX-License-Identifier: MIT
-- payment_methods.sql: cards and direct-debit mandates of portal customers, from refetched Stripe PaymentMethods,
-- SetupIntents and Customers and GoCardless mandates, customer bank accounts and customers (issue 9; docs/data-model.md
-- "Payment methods"). The tables are payment_methods (0011, 0014) and payment_customers (0014); the caller is the
-- payments processor (gateway/domain/payments.c). Matching a provider customer to a portal customer uses the rules of
-- match.sql (match_rules), so a Stripe or GoCardless customer is matched as a Xero contact is.
--
-- Every function is keyed by the organisation, takes the organisation's audit lock before any row lock, and is
-- idempotent: applying the same object again changes nothing and writes no audit row. Only the fields listed in
-- docs/data-model.md are kept: never a card number, never anything of a card but brand, last4, expiry and
-- fingerprint (raw is a reduced copy built here, not the provider's object).
--
-- A functions file is re-applied by `settled migrate`, after the numbered migrations and together with the other
-- functions files in one transaction, whenever its text changes: edit the function here (docs/data-model.md,
-- "Migrations and functions files").
--
-- Order (0016): every pm_apply_* takes p_observed_at, the claim time of the fetch that produced the object (the
-- payments' rule, payments.sql). A row keeps the newest observation: a copy observed earlier than the stored one
-- changes nothing and returns 'stale', so a card detached later is not re-attached by an older copy and a mandate's
-- status never goes back to an older one, whatever order the events and fetches finish in. Stripe's own rules
-- say more: a detached PaymentMethod is never attached again and a deleted Customer never comes back, so a copy
-- that says otherwise is stale whatever its time.

-- The signatures before p_observed_at (0016): dropped so that each function exists once.
DROP FUNCTION IF EXISTS pm_apply_stripe_customer(bigint, text, jsonb, text);
DROP FUNCTION IF EXISTS pm_apply_stripe_payment_method(bigint, text, jsonb, text);
DROP FUNCTION IF EXISTS pm_apply_stripe_setup_intent(bigint, text, jsonb, text);
DROP FUNCTION IF EXISTS pm_apply_gocardless_customer(bigint, jsonb, text);
DROP FUNCTION IF EXISTS pm_apply_gocardless_mandate(bigint, jsonb, jsonb, jsonb, text);
DROP FUNCTION IF EXISTS pm_customer_seen(bigint, text, text, bigint, text, boolean, text);

-- ---------------------------------------------------------------------------------------------------
-- Small readers of provider JSON: each returns NULL for what does not fit, so bad input is dropped, not stored

-- p when it matches p_re, else NULL.
CREATE OR REPLACE FUNCTION pm_checked(p text, p_re text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p ~ p_re THEN p END
$$;

-- A JSON integer between p_lo and p_hi as smallint, else NULL.
CREATE OR REPLACE FUNCTION pm_smallint(p jsonb, p_lo int, p_hi int) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(p) = 'number' AND p::text ~ '^[0-9]{1,5}$' AND p::text::int BETWEEN p_lo AND p_hi
                THEN p::text::smallint END
$$;

-- The id of a reference that is either an id string or an expanded object; NULL for null, absent or blank.
CREATE OR REPLACE FUNCTION pm_ref_id(p jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(btrim(CASE jsonb_typeof(p) WHEN 'string' THEN p #>> '{}' WHEN 'object' THEN p ->> 'id' END), '')
$$;

-- Stripe's created (integer Unix seconds) as a timestamp, exactly; NULL when it is not one.
CREATE OR REPLACE FUNCTION pm_unix_time(p jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(p) = 'number' AND p::text ~ '^[0-9]{1,12}$'
                THEN timestamptz 'epoch' + p::text::bigint * interval '1 second' END
$$;

-- GoCardless's created_at (ISO 8601) as a timestamp; NULL when it is not one.
CREATE OR REPLACE FUNCTION pm_iso_time(p text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF p !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9]{2}:?[0-9]{2})$' THEN
        RETURN NULL;
    END IF;
    RETURN p::timestamptz;
EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
    RETURN NULL;
END
$$;

-- The Stripe PaymentMethod types that are bank debits (kind 'direct_debit'); cards are 'card'; wallets and
-- redirects (paypal, link, klarna, ...) are not methods settled can collect with and are ignored.
CREATE OR REPLACE FUNCTION pm_stripe_debit_types() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY['sepa_debit', 'bacs_debit', 'us_bank_account', 'au_becs_debit', 'acss_debit', 'nz_bank_account']
$$;

-- Whether a method can be collected with: an active card, or a mandate GoCardless (or Stripe) will collect on.
CREATE OR REPLACE FUNCTION pm_usable(p_kind text, p_status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_kind WHEN 'card' THEN p_status = 'active'
                       ELSE p_status IN ('active', 'pending_submission', 'submitted') END
$$;

-- A method as its audit rows show it: every column but the reduced raw copy and the timestamps.
CREATE OR REPLACE FUNCTION pm_audit_view(m payment_methods) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_jsonb(m) - 'raw' - 'updated_at' - 'observed_at'
$$;

-- ---------------------------------------------------------------------------------------------------
-- Defaults, writing a method, provider customers

-- Makes exactly one method of customer p_customer is_default, among its usable methods (pm_usable, and not of a
-- provider customer that was deleted): the one a portal user chose last (chosen_at, pm_choose_default) if usable,
-- else the one its provider names as default (payment_customers.default_method) if usable, else the newest usable one (provider_created_at, then id); none if none is usable. Audits a change
-- ('payment_method.default', with p_correlation); writes nothing when the default is already right. NULL p_customer
-- does nothing.
CREATE OR REPLACE FUNCTION pm_refresh_default(p_org bigint, p_customer bigint, p_correlation text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_cur_id bigint;
    v_cur_object text;
    v_id bigint;
    v_object text;
    v_explicit boolean;
    v_chosen boolean;
BEGIN
    IF p_customer IS NULL THEN
        RETURN;
    END IF;
    PERFORM audit_lock(p_org);
    SELECT m.id, m.object_id, coalesce(pc.default_method = m.object_id, false), m.chosen_at IS NOT NULL
    INTO v_id, v_object, v_explicit, v_chosen
    FROM payment_methods m
    LEFT JOIN payment_customers pc ON pc.organisation_id = m.organisation_id AND pc.provider = m.provider
                                  AND pc.external_id = m.provider_customer
    WHERE m.organisation_id = p_org AND m.customer_id = p_customer AND pm_usable(m.kind, m.status)
      AND pc.deleted IS NOT TRUE
    ORDER BY m.chosen_at DESC NULLS LAST, coalesce(pc.default_method = m.object_id, false) DESC,
             m.provider_created_at DESC NULLS LAST, m.id DESC
    LIMIT 1;
    SELECT m.id, m.object_id INTO v_cur_id, v_cur_object FROM payment_methods m
    WHERE m.organisation_id = p_org AND m.customer_id = p_customer AND m.is_default
    FOR UPDATE;
    IF v_cur_id IS NOT DISTINCT FROM v_id THEN
        RETURN;
    END IF;
    -- clear before set: payment_methods_default_key allows one default per customer at every moment
    UPDATE payment_methods m SET is_default = false, updated_at = now() WHERE m.id = v_cur_id;
    UPDATE payment_methods m SET is_default = true, updated_at = now() WHERE m.id = v_id;
    PERFORM audit_write(p_org, 'system:payments', 'payment_method.default', 'customer', p_customer::text,
        CASE WHEN v_cur_id IS NOT NULL THEN jsonb_build_object('object_id', v_cur_object) END,
        jsonb_build_object('object_id', v_object,
                           'rule', CASE WHEN v_id IS NULL THEN 'none' WHEN v_chosen THEN 'chosen'
                                       WHEN v_explicit THEN 'provider' ELSE 'newest' END),
        p_correlation);
END
$$;

-- Writes method p_new (its organisation_id, provider and object_id say which; id, is_default and updated_at are
-- ignored; observed_at is when it was observed) and returns 'inserted', 'updated', 'unchanged', 'detached' when it
-- now is detached and was not, or 'stale' when the stored row was observed later than p_new, or is a Stripe method
-- detached from its customer (permanent at Stripe) that p_new shows attached: then only the newer observation time
-- is kept. A NULL provider_customer keeps the stored one (a detached method keeps the customer it was detached
-- from); a NULL customer_id keeps the stored one while the provider customer is the same. Audits
-- 'payment_method.upsert' with before and after, and refreshes the defaults of the customers it left and joined.
CREATE OR REPLACE FUNCTION pm_upsert(p_new payment_methods, p_correlation text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    o payment_methods;
    v_out text;
BEGIN
    PERFORM audit_lock(p_new.organisation_id);
    SELECT * INTO o FROM payment_methods m
    WHERE m.organisation_id = p_new.organisation_id AND m.provider = p_new.provider AND m.object_id = p_new.object_id
    FOR UPDATE;
    IF p_new.observed_at IS NULL THEN
        RAISE EXCEPTION 'pm_upsert: % method % has no observation time', p_new.provider, p_new.object_id
            USING ERRCODE = 'not_null_violation';
    END IF;
    IF FOUND AND (o.observed_at > p_new.observed_at
                  OR (o.provider = 'stripe' AND o.status = 'detached' AND o.provider_customer IS NOT NULL
                      AND p_new.status IS DISTINCT FROM 'detached')) THEN
        UPDATE payment_methods m SET observed_at = p_new.observed_at
        WHERE m.id = o.id AND m.observed_at < p_new.observed_at;
        RETURN 'stale';
    END IF;
    IF FOUND THEN
        p_new.provider_customer := coalesce(p_new.provider_customer, o.provider_customer);
        IF p_new.customer_id IS NULL AND p_new.provider_customer IS NOT DISTINCT FROM o.provider_customer THEN
            p_new.customer_id := o.customer_id;
        END IF;
        IF (p_new.customer_id, p_new.provider_customer, p_new.provider_created_at, p_new.kind, p_new.brand,
            p_new.last4, p_new.exp_month, p_new.exp_year, p_new.fingerprint, p_new.scheme, p_new.bank_name,
            p_new.account_number_ending, p_new.status, p_new.raw)
           IS NOT DISTINCT FROM
           (o.customer_id, o.provider_customer, o.provider_created_at, o.kind, o.brand, o.last4, o.exp_month,
            o.exp_year, o.fingerprint, o.scheme, o.bank_name, o.account_number_ending, o.status, o.raw) THEN
            -- the same state seen again, later: an older copy arriving next must not win over it
            UPDATE payment_methods m SET observed_at = p_new.observed_at
            WHERE m.id = o.id AND m.observed_at < p_new.observed_at;
            RETURN 'unchanged';
        END IF;
        UPDATE payment_methods m SET
            customer_id = p_new.customer_id, provider_customer = p_new.provider_customer,
            provider_created_at = p_new.provider_created_at, kind = p_new.kind, brand = p_new.brand,
            last4 = p_new.last4, exp_month = p_new.exp_month, exp_year = p_new.exp_year,
            fingerprint = p_new.fingerprint, scheme = p_new.scheme, bank_name = p_new.bank_name,
            account_number_ending = p_new.account_number_ending, status = p_new.status, raw = p_new.raw,
            observed_at = p_new.observed_at,
            -- a method that changes customer is not the new customer's default until pm_refresh_default says so
            is_default = m.is_default AND m.customer_id IS NOT DISTINCT FROM p_new.customer_id,
            updated_at = now()
        WHERE m.id = o.id
        RETURNING * INTO p_new;
        v_out := CASE WHEN p_new.status = 'detached' AND o.status <> 'detached' THEN 'detached' ELSE 'updated' END;
    ELSE
        INSERT INTO payment_methods (organisation_id, provider, object_id, customer_id, provider_customer,
                                     provider_created_at, kind, brand, last4, exp_month, exp_year, fingerprint, scheme,
                                     bank_name, account_number_ending, status, raw, observed_at)
        VALUES (p_new.organisation_id, p_new.provider, p_new.object_id, p_new.customer_id, p_new.provider_customer,
                p_new.provider_created_at, p_new.kind, p_new.brand, p_new.last4, p_new.exp_month, p_new.exp_year,
                p_new.fingerprint, p_new.scheme, p_new.bank_name, p_new.account_number_ending, p_new.status,
                p_new.raw, p_new.observed_at)
        RETURNING * INTO p_new;
        v_out := CASE WHEN p_new.status = 'detached' THEN 'detached' ELSE 'inserted' END;
    END IF;
    PERFORM audit_write(p_new.organisation_id, 'system:payments', 'payment_method.upsert', 'payment_method',
        p_new.provider || ':' || p_new.object_id, CASE WHEN o.id IS NOT NULL THEN pm_audit_view(o) END,
        pm_audit_view(p_new), p_correlation);
    IF o.customer_id IS DISTINCT FROM p_new.customer_id THEN
        PERFORM pm_refresh_default(p_new.organisation_id, o.customer_id, p_correlation);
    END IF;
    PERFORM pm_refresh_default(p_new.organisation_id, p_new.customer_id, p_correlation);
    RETURN v_out;
END
$$;

-- Whether a copy of provider customer p_external_id observed at p_observed_at (deleted: p_deleted) is older than
-- what payment_customers holds: observed earlier, or (Stripe: a deletion is permanent) not deleted while the
-- stored one is. A stale copy only advances the stored observation time; customer_id is the stored portal
-- customer. Locks the row; the caller holds the organisation's audit lock.
CREATE OR REPLACE FUNCTION pm_customer_stale(p_org bigint, p_provider text, p_external_id text,
                                             p_observed_at timestamptz, p_deleted boolean,
                                             OUT stale boolean, OUT customer_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    o payment_customers;
BEGIN
    IF p_observed_at IS NULL THEN
        RAISE EXCEPTION 'pm_customer_stale: % customer % has no observation time', p_provider, p_external_id
            USING ERRCODE = 'not_null_violation';
    END IF;
    SELECT * INTO o FROM payment_customers c
    WHERE c.organisation_id = p_org AND c.provider = p_provider AND c.external_id = p_external_id
    FOR UPDATE;
    stale := FOUND AND (o.observed_at > p_observed_at
                        OR (p_provider = 'stripe' AND o.deleted AND NOT coalesce(p_deleted, false)));
    customer_id := o.customer_id;
    IF stale THEN
        UPDATE payment_customers c SET observed_at = p_observed_at
        WHERE c.organisation_id = p_org AND c.provider = p_provider AND c.external_id = p_external_id
          AND c.observed_at < p_observed_at;
    END IF;
END
$$;

-- Records a provider customer observed at p_observed_at (payment_customers: the portal customer it matched, the
-- provider's default method, whether it was deleted; audited as 'payment_customer.upsert' when that changes), gives
-- its methods that have no portal customer yet p_customer, and refreshes p_customer's default. Returns p_customer.
-- The caller has checked that the copy is not stale (pm_customer_stale).
CREATE OR REPLACE FUNCTION pm_customer_seen(p_org bigint, p_provider text, p_external_id text,
                                            p_observed_at timestamptz, p_customer bigint, p_default text,
                                            p_deleted boolean, p_correlation text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    o payment_customers;
    n payment_customers;
    m payment_methods;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT * INTO o FROM payment_customers c
    WHERE c.organisation_id = p_org AND c.provider = p_provider AND c.external_id = p_external_id
    FOR UPDATE;
    IF NOT FOUND OR (o.customer_id, o.default_method, o.deleted)
                    IS DISTINCT FROM (p_customer, p_default, coalesce(p_deleted, false)) THEN
        INSERT INTO payment_customers AS c (organisation_id, provider, external_id, customer_id, default_method, deleted,
                                            observed_at)
        VALUES (p_org, p_provider, p_external_id, p_customer, p_default, coalesce(p_deleted, false), p_observed_at)
        ON CONFLICT (organisation_id, provider, external_id) DO UPDATE
            SET customer_id = EXCLUDED.customer_id, default_method = EXCLUDED.default_method,
                deleted = EXCLUDED.deleted, observed_at = greatest(c.observed_at, EXCLUDED.observed_at),
                updated_at = now()
        RETURNING * INTO n;
        PERFORM audit_write(p_org, 'system:payments', 'payment_customer.upsert', 'payment_customer',
            p_provider || ':' || p_external_id,
            CASE WHEN o.external_id IS NOT NULL THEN to_jsonb(o) - 'updated_at' - 'observed_at' END,
            to_jsonb(n) - 'updated_at' - 'observed_at', p_correlation);
    ELSIF o.observed_at < p_observed_at THEN
        UPDATE payment_customers c SET observed_at = p_observed_at
        WHERE c.organisation_id = p_org AND c.provider = p_provider AND c.external_id = p_external_id;
    END IF;
    IF p_customer IS NULL THEN
        RETURN NULL;
    END IF;
    FOR m IN SELECT * FROM payment_methods x
             WHERE x.organisation_id = p_org AND x.provider = p_provider AND x.provider_customer = p_external_id
               AND x.customer_id IS NULL
             ORDER BY x.id LOOP
        m.customer_id := p_customer;
        PERFORM pm_upsert(m, p_correlation);
    END LOOP;
    PERFORM pm_refresh_default(p_org, p_customer, p_correlation);
    RETURN p_customer;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Matching

-- The portal customer of Stripe or GoCardless customer p_external_id, by the rules of match_rules with its
-- email and name: an existing link, else exactly one customer with that normalised email ('email'), else exactly
-- one with that normalised name ('name'), each linked through match_link. Several candidates queue it as
-- 'ambiguous' and none as 'none' (match_enqueue), and return NULL. Never creates customers. A blank external id
-- returns NULL and writes nothing; a provider other than stripe or gocardless is an error.
CREATE OR REPLACE FUNCTION pm_match_customer(p_org bigint, p_provider text, p_external_id text, p_email text,
                                             p_name text, p_correlation text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    m record;
    v_label text := coalesce(nullif(btrim(p_name), ''), nullif(btrim(p_email), ''));
BEGIN
    IF p_provider IS NULL OR p_provider NOT IN ('stripe', 'gocardless') THEN
        RAISE EXCEPTION 'pm_match_customer: % is not a payment provider', p_provider
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF nullif(btrim(p_external_id), '') IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM audit_lock(p_org);
    SELECT * INTO m FROM match_rules(p_org, p_provider, p_external_id, v_label, p_email, NULL, NULL, p_name, '{}',
                                     p_correlation);
    IF m.rule IS NULL THEN
        PERFORM match_enqueue(p_org, p_provider, p_external_id, v_label, '{"kind": "none"}', '{}', p_correlation);
    END IF;
    RETURN m.customer_id;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Stripe

-- A refetched Stripe Customer: matched (pm_match_customer; a deleted customer is not matched again, only its
-- existing link is used), its invoice_settings.default_payment_method remembered, its methods without a portal
-- customer linked, its customer's default refreshed. Returns the portal customer or NULL (unmatched, or not a
-- Customer object: nothing written). A stale copy (pm_customer_stale: observed before the stored one, or not
-- deleted when the stored one is) changes nothing and returns the stored portal customer.
CREATE OR REPLACE FUNCTION pm_apply_stripe_customer(p_org bigint, p_account text, p_observed_at timestamptz,
                                                    p_obj jsonb, p_correlation text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := CASE WHEN jsonb_typeof(p_obj) = 'object' THEN pm_ref_id(p_obj -> 'id') END;
    v_deleted boolean := coalesce(jsonb_typeof(p_obj) = 'object' AND p_obj -> 'deleted' = 'true', false);
    v_customer bigint;
    v_stale record;
BEGIN
    IF v_id IS NULL OR coalesce(p_obj ->> 'object', 'customer') <> 'customer' THEN
        RETURN NULL;
    END IF;
    PERFORM audit_lock(p_org);
    SELECT * INTO v_stale FROM pm_customer_stale(p_org, 'stripe', v_id, p_observed_at, v_deleted);
    IF v_stale.stale THEN
        RETURN v_stale.customer_id;  -- an older copy: neither matched again nor recorded
    END IF;
    IF v_deleted THEN
        SELECT l.customer_id INTO v_customer FROM customer_links l
        WHERE l.organisation_id = p_org AND l.provider = 'stripe' AND l.external_id = v_id;
    ELSE
        v_customer := pm_match_customer(p_org, 'stripe', v_id, p_obj ->> 'email', p_obj ->> 'name', p_correlation);
    END IF;
    RETURN pm_customer_seen(p_org, 'stripe', v_id, p_observed_at, v_customer,
        CASE WHEN NOT v_deleted THEN pm_ref_id(p_obj #> '{invoice_settings,default_payment_method}') END,
        v_deleted, p_correlation);
END
$$;

-- A refetched Stripe PaymentMethod. A card keeps brand, last4, exp_month, exp_year and fingerprint; a bank debit
-- (pm_stripe_debit_types) is kind 'direct_debit' with scheme = its type, last4 as account_number_ending and
-- bank_name when present. customer null means detached (status 'detached', not a default); an expanded customer is
-- applied first (pm_apply_stripe_customer), an id string finds its portal customer through its link. Returns as
-- pm_upsert does, or 'ignored' (not a PaymentMethod, no id, or a type settled does not collect with: nothing
-- written).
CREATE OR REPLACE FUNCTION pm_apply_stripe_payment_method(p_org bigint, p_account text, p_observed_at timestamptz,
                                                          p_obj jsonb, p_correlation text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := CASE WHEN jsonb_typeof(p_obj) = 'object' THEN pm_ref_id(p_obj -> 'id') END;
    v_type text := CASE WHEN jsonb_typeof(p_obj) = 'object' THEN pm_checked(p_obj ->> 'type', '^[a-z_]{1,40}$') END;
    v_sub jsonb;
    v_kept jsonb;
    n payment_methods;
BEGIN
    IF v_id IS NULL OR coalesce(p_obj ->> 'object', 'payment_method') <> 'payment_method'
       OR v_type IS NULL OR NOT (v_type = 'card' OR v_type = ANY (pm_stripe_debit_types())) THEN
        RETURN 'ignored';
    END IF;
    PERFORM audit_lock(p_org);
    n.organisation_id := p_org;
    n.provider := 'stripe';
    n.object_id := v_id;
    n.observed_at := p_observed_at;
    n.provider_customer := pm_ref_id(p_obj -> 'customer');
    IF jsonb_typeof(p_obj -> 'customer') = 'object' THEN
        n.customer_id := pm_apply_stripe_customer(p_org, p_account, p_observed_at, p_obj -> 'customer',
                                                  p_correlation);
    ELSIF n.provider_customer IS NOT NULL THEN
        SELECT l.customer_id INTO n.customer_id FROM customer_links l
        WHERE l.organisation_id = p_org AND l.provider = 'stripe' AND l.external_id = n.provider_customer;
    END IF;
    n.provider_created_at := pm_unix_time(p_obj -> 'created');
    v_sub := CASE WHEN jsonb_typeof(p_obj -> v_type) = 'object' THEN p_obj -> v_type ELSE '{}' END;
    IF v_type = 'card' THEN
        n.kind := 'card';
        n.brand := pm_checked(v_sub ->> 'brand', '^[a-z_]{1,32}$');
        n.last4 := pm_checked(v_sub ->> 'last4', '^[0-9]{4}$');
        n.exp_month := pm_smallint(v_sub -> 'exp_month', 1, 12);
        n.exp_year := pm_smallint(v_sub -> 'exp_year', 1, 9999);
        n.fingerprint := pm_checked(v_sub ->> 'fingerprint', '^[A-Za-z0-9]{1,64}$');
        v_kept := jsonb_build_object('brand', n.brand, 'last4', n.last4, 'exp_month', n.exp_month,
                                     'exp_year', n.exp_year, 'fingerprint', n.fingerprint);
    ELSE
        n.kind := 'direct_debit';
        n.scheme := v_type;
        n.account_number_ending := pm_checked(v_sub ->> 'last4', '^[0-9A-Za-z]{1,4}$');
        n.bank_name := left(nullif(btrim(v_sub ->> 'bank_name'), ''), 100);
        v_kept := jsonb_build_object('last4', n.account_number_ending, 'bank_name', n.bank_name);
    END IF;
    n.status := CASE WHEN n.provider_customer IS NULL THEN 'detached' ELSE 'active' END;
    -- the reduced copy: what settled uses, never the provider's whole object
    n.raw := jsonb_strip_nulls(jsonb_build_object(
        'id', v_id, 'object', 'payment_method', 'type', v_type, 'customer', n.provider_customer,
        'created', CASE WHEN n.provider_created_at IS NOT NULL THEN p_obj -> 'created' END,
        'livemode', CASE WHEN jsonb_typeof(p_obj -> 'livemode') = 'boolean' THEN p_obj -> 'livemode' END,
        'account', p_account, v_type, jsonb_strip_nulls(v_kept)));
    RETURN pm_upsert(n, p_correlation);
END
$$;

-- A refetched Stripe SetupIntent. status 'succeeded' with an expanded payment_method applies it
-- (pm_apply_stripe_payment_method) and returns its outcome; with only an id returns 'needs_fetch' (the caller
-- fetches the PaymentMethod); anything else is 'ignored'. Writes nothing itself.
CREATE OR REPLACE FUNCTION pm_apply_stripe_setup_intent(p_org bigint, p_account text, p_observed_at timestamptz,
                                                        p_obj jsonb, p_correlation text)
RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_typeof(p_obj) IS DISTINCT FROM 'object' OR coalesce(p_obj ->> 'object', 'setup_intent') <> 'setup_intent'
       OR p_obj ->> 'status' IS DISTINCT FROM 'succeeded' THEN
        RETURN 'ignored';
    END IF;
    RETURN CASE jsonb_typeof(p_obj -> 'payment_method')
        WHEN 'object' THEN pm_apply_stripe_payment_method(p_org, p_account, p_observed_at, p_obj -> 'payment_method',
                                                          p_correlation)
        WHEN 'string' THEN CASE WHEN pm_ref_id(p_obj -> 'payment_method') IS NOT NULL THEN 'needs_fetch' ELSE 'ignored' END
        ELSE 'ignored' END;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- GoCardless

-- A refetched GoCardless customer: matched (pm_match_customer with its email and company_name, else given_name
-- and family_name), recorded, its mandates without a portal customer linked. Returns the portal customer or NULL.
CREATE OR REPLACE FUNCTION pm_apply_gocardless_customer(p_org bigint, p_observed_at timestamptz, p_obj jsonb,
                                                        p_correlation text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := CASE WHEN jsonb_typeof(p_obj) = 'object' THEN pm_ref_id(p_obj -> 'id') END;
    v_name text;
    v_stale record;
BEGIN
    IF v_id IS NULL THEN
        RETURN NULL;
    END IF;
    v_name := coalesce(nullif(btrim(p_obj ->> 'company_name'), ''),
                       nullif(concat_ws(' ', nullif(btrim(p_obj ->> 'given_name'), ''),
                                        nullif(btrim(p_obj ->> 'family_name'), '')), ''));
    PERFORM audit_lock(p_org);
    SELECT * INTO v_stale FROM pm_customer_stale(p_org, 'gocardless', v_id, p_observed_at, false);
    IF v_stale.stale THEN
        RETURN v_stale.customer_id;  -- an older copy: neither matched again nor recorded
    END IF;
    RETURN pm_customer_seen(p_org, 'gocardless', v_id, p_observed_at,
        pm_match_customer(p_org, 'gocardless', v_id, p_obj ->> 'email', v_name, p_correlation),
        NULL, false, p_correlation);
END
$$;

-- A refetched GoCardless mandate with its customer bank account and its customer, either of which may be NULL
-- (not fetched: the stored bank name, account ending and portal customer are kept). kind 'direct_debit', scheme,
-- status = the mandate's status; a customer object is applied (pm_apply_gocardless_customer) when it is the
-- mandate's, else the mandate's customer is found through its link. Returns as pm_upsert does, or 'ignored' (no id
-- or status: nothing written).
CREATE OR REPLACE FUNCTION pm_apply_gocardless_mandate(p_org bigint, p_observed_at timestamptz, p_obj jsonb,
                                                       p_bank_account jsonb, p_customer jsonb, p_correlation text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := CASE WHEN jsonb_typeof(p_obj) = 'object' THEN pm_ref_id(p_obj -> 'id') END;
    v_status text := CASE WHEN jsonb_typeof(p_obj) = 'object' THEN pm_checked(p_obj ->> 'status', '^[a-z_]{1,64}$') END;
    v_links jsonb := CASE WHEN jsonb_typeof(p_obj -> 'links') = 'object' THEN p_obj -> 'links' ELSE '{}' END;
    v_bank_id text := pm_ref_id(v_links -> 'customer_bank_account');
    o payment_methods;
    n payment_methods;
BEGIN
    IF v_id IS NULL OR v_status IS NULL THEN
        RETURN 'ignored';
    END IF;
    PERFORM audit_lock(p_org);
    SELECT * INTO o FROM payment_methods m
    WHERE m.organisation_id = p_org AND m.provider = 'gocardless' AND m.object_id = v_id;
    n.organisation_id := p_org;
    n.provider := 'gocardless';
    n.object_id := v_id;
    n.observed_at := p_observed_at;
    n.provider_customer := pm_ref_id(v_links -> 'customer');
    IF jsonb_typeof(p_customer) = 'object' AND pm_ref_id(p_customer -> 'id') IS NOT NULL
       AND pm_ref_id(p_customer -> 'id') = coalesce(n.provider_customer, pm_ref_id(p_customer -> 'id')) THEN
        n.provider_customer := pm_ref_id(p_customer -> 'id');
        n.customer_id := pm_apply_gocardless_customer(p_org, p_observed_at, p_customer, p_correlation);
    ELSIF n.provider_customer IS NOT NULL THEN
        SELECT l.customer_id INTO n.customer_id FROM customer_links l
        WHERE l.organisation_id = p_org AND l.provider = 'gocardless' AND l.external_id = n.provider_customer;
    END IF;
    n.provider_created_at := pm_iso_time(p_obj ->> 'created_at');
    n.kind := 'direct_debit';
    n.scheme := pm_checked(p_obj ->> 'scheme', '^[a-z_]{1,40}$');
    IF jsonb_typeof(p_bank_account) = 'object' AND pm_ref_id(p_bank_account -> 'id') IS NOT DISTINCT FROM
                                                   coalesce(v_bank_id, pm_ref_id(p_bank_account -> 'id')) THEN
        n.bank_name := left(nullif(btrim(p_bank_account ->> 'bank_name'), ''), 100);
        n.account_number_ending := pm_checked(p_bank_account ->> 'account_number_ending', '^[0-9A-Za-z]{1,4}$');
    ELSE
        n.bank_name := o.bank_name;
        n.account_number_ending := o.account_number_ending;
    END IF;
    n.status := v_status;
    n.raw := jsonb_strip_nulls(jsonb_build_object(
        'id', v_id, 'created_at', p_obj -> 'created_at', 'reference', p_obj -> 'reference', 'scheme', n.scheme,
        'status', v_status, 'next_possible_charge_date', p_obj -> 'next_possible_charge_date',
        'links', jsonb_strip_nulls(jsonb_build_object('customer', n.provider_customer,
                                                      'customer_bank_account', v_bank_id,
                                                      'creditor', pm_ref_id(v_links -> 'creditor')))));
    RETURN pm_upsert(n, p_correlation);
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- The portal (gateway/api/payment_methods.c)

-- A portal user (p_actor, e.g. 'user:12') makes method p_method (payment_methods.id) of customer p_customer the
-- default: its chosen_at is set and pm_refresh_default runs. Audited as 'payment_method.choose_default' with the
-- default before and after. Returns 'chosen', 'unchanged' (it already is the chosen default), 'unusable' (it is not
-- a usable method: nothing written) or 'not_found' (no such method of that customer: nothing written).
CREATE OR REPLACE FUNCTION pm_choose_default(p_org bigint, p_customer bigint, p_method bigint, p_actor text,
                                             p_correlation text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    m payment_methods;
    v_before text;
    v_after text;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT * INTO m FROM payment_methods x
    WHERE x.organisation_id = p_org AND x.customer_id = p_customer AND x.id = p_method
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    IF NOT pm_usable(m.kind, m.status) THEN
        RETURN 'unusable';
    END IF;
    SELECT x.object_id INTO v_before FROM payment_methods x
    WHERE x.organisation_id = p_org AND x.customer_id = p_customer AND x.is_default;
    IF m.is_default AND m.chosen_at IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM payment_methods x WHERE x.organisation_id = p_org AND x.customer_id = p_customer
          AND x.chosen_at > m.chosen_at) THEN
        RETURN 'unchanged';
    END IF;
    UPDATE payment_methods x SET chosen_at = clock_timestamp(), updated_at = now() WHERE x.id = m.id;
    PERFORM pm_refresh_default(p_org, p_customer, p_correlation);
    SELECT x.object_id INTO v_after FROM payment_methods x
    WHERE x.organisation_id = p_org AND x.customer_id = p_customer AND x.is_default;
    PERFORM audit_write(p_org, p_actor, 'payment_method.choose_default', 'payment_method',
        m.provider || ':' || m.object_id, jsonb_build_object('default', v_before),
        jsonb_build_object('default', v_after), p_correlation);
    RETURN 'chosen';
END
$$;
