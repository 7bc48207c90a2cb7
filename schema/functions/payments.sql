-- SPDX-License-Identifier: MIT
-- payments.sql: applying refetched Stripe and GoCardless payment objects to the ledger (tables in 0011_ledger.sql
-- and 0012_payments.sql). Its C room is gateway/domain/payments.c, which fetches the objects, calls pay_apply_*
-- and then, in the same transaction, reconciles the invoices they return (reconcile.c) and stores the result with
-- pay_store_states.
--
-- A functions file is re-applied by `settled migrate`, after the numbered migrations and together with the other
-- functions files in one transaction, whenever its text changes: edit the functions here, never in the numbered
-- migration that first created them (docs/data-model.md, "Migrations and functions files").

-- An amount in Stripe's smallest currency unit as ISO 4217 minor units: Stripe counts ISK in hundredths (whole
-- krónur in ISO) and MGA in whole ariary (two decimals in ISO); every other currency alike (PROVIDERS.md 1.12, the
-- same rule as gw_money_to_iso in gateway/domain/money.c). An ISK amount that is not whole krónur is refused.
CREATE OR REPLACE FUNCTION stripe_amount_iso(p_amount bigint, p_currency text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_amount IS NULL THEN
        RETURN 0;
    ELSIF upper(p_currency) = 'ISK' THEN
        IF p_amount % 100 <> 0 THEN
            RAISE EXCEPTION 'a Stripe ISK amount of % is not whole krónur', p_amount
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN p_amount / 100;
    ELSIF upper(p_currency) = 'MGA' THEN
        RETURN p_amount * 100;
    END IF;
    RETURN p_amount;
END
$$;

-- The id of an object or of an expanded object ("cus_1" or {"id": "cus_1", ...}); NULL for anything else.
CREATE OR REPLACE FUNCTION pay_ref_id(p jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(p) WHEN 'string' THEN p #>> '{}' WHEN 'object' THEN p ->> 'id' END
$$;

-- The invoice that a provider object's metadata names. p_metadata holds the metadata objects in the order they
-- are asked (Stripe: the PaymentIntent's, then its Charge's); in each, xero_invoice_id (a Xero InvoiceID) comes
-- before settled_invoice_id (settled's public id). Returns one row: the invoice when it is mirrored, else the
-- value it waits for (wanted) or why it names none settled can use (error); all NULL when no key is present.
CREATE OR REPLACE FUNCTION pay_link(p_org bigint, p_metadata jsonb[])
RETURNS TABLE (tenant_id uuid, invoice_id uuid, link_key text, wanted text, error text)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    v_md jsonb;
    v_key text;
    v_val text;
BEGIN
    FOREACH v_md IN ARRAY coalesce(p_metadata, '{}') LOOP
        CONTINUE WHEN v_md IS NULL OR jsonb_typeof(v_md) <> 'object';
        FOREACH v_key IN ARRAY ARRAY['xero_invoice_id', 'settled_invoice_id'] LOOP
            v_val := btrim(v_md ->> v_key);
            CONTINUE WHEN v_val IS NULL OR v_val = '';
            link_key := v_key;
            IF v_key = 'xero_invoice_id' THEN
                IF v_val !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
                    error := format('metadata xero_invoice_id %s is not a Xero InvoiceID', left(v_val, 64));
                    RETURN NEXT;
                    RETURN;
                END IF;
                SELECT i.tenant_id, i.invoice_id INTO tenant_id, invoice_id FROM xero_invoices i
                WHERE i.organisation_id = p_org AND i.invoice_id = v_val::uuid
                ORDER BY i.tenant_id LIMIT 1;
            ELSE
                IF v_val !~ '^inv_[0-9a-f]{32}$' THEN
                    error := format('metadata settled_invoice_id %s is not a settled invoice id', left(v_val, 64));
                    RETURN NEXT;
                    RETURN;
                END IF;
                SELECT i.tenant_id, i.invoice_id INTO tenant_id, invoice_id FROM xero_invoices i
                WHERE i.organisation_id = p_org AND i.settled_invoice_id = v_val;
            END IF;
            IF invoice_id IS NULL THEN
                wanted := lower(v_val);
            END IF;
            RETURN NEXT;
            RETURN;
        END LOOP;
    END LOOP;
    RETURN NEXT;
END
$$;

-- Upserts one provider payment (the current view of its object) and records its fact in the ledger. A fetch
-- overwrites the row only when its claim is not older than the one that wrote it (p_observed_at, the database's
-- time at the claim), so two workers racing on one object converge on the newest state. The invoice link is the
-- one the metadata names now (pay_link): a metadata that names another invoice moves it, one that names none, a
-- malformed one or one not mirrored yet removes it. Returns the payment's id and the invoices whose state may have
-- changed: the one it is linked to now, and the one it was linked to before if that differs; wanted is set when
-- the metadata names an invoice that is not mirrored yet.
CREATE OR REPLACE FUNCTION pay_upsert_payment(p_org bigint, p_provider text, p_account text, p_observed_at timestamptz,
                                              p_object_id text, p_amount bigint, p_received bigint, p_refunded bigint,
                                              p_currency text, p_status text, p_was_collected boolean,
                                              p_chargeback_cancelled boolean, p_method text, p_customer_ref text,
                                              p_customer_id bigint, p_paid_on date, p_metadata jsonb[], p_raw jsonb,
                                              p_event bigint, p_correlation text)
RETURNS TABLE (payment_id bigint, tenant_id uuid, invoice_id uuid, wanted text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_old payments;
    v_link record;
    v_customer bigint := p_customer_id;
BEGIN
    IF p_object_id IS NULL OR p_currency IS NULL OR p_status IS NULL THEN
        RAISE EXCEPTION 'pay_upsert_payment: a % payment lacks its id, currency or status', p_provider
            USING ERRCODE = 'not_null_violation';
    END IF;
    PERFORM ledger_record(p_org, p_provider, 'payment', p_object_id, p_status,
                          CASE WHEN p_received > 0 THEN p_received ELSE p_amount END, p_currency, p_event,
                          p_correlation);
    IF v_customer IS NULL AND p_customer_ref IS NOT NULL THEN
        SELECT l.customer_id INTO v_customer FROM customer_links l
        WHERE l.organisation_id = p_org AND l.provider = p_provider AND l.external_id = p_customer_ref;
    END IF;
    SELECT * INTO v_link FROM pay_link(p_org, p_metadata);
    SELECT * INTO v_old FROM payments p
    WHERE p.organisation_id = p_org AND p.provider = p_provider AND p.object_id = p_object_id FOR UPDATE;
    IF FOUND AND v_old.observed_at > p_observed_at THEN
        -- an older claim's fetch: the row already holds a newer state
        payment_id := v_old.id;
        tenant_id := v_old.xero_tenant_id::uuid;
        invoice_id := v_old.xero_invoice_id;
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO payments AS p (organisation_id, provider, account, object_id, customer_id, xero_tenant_id,
                               xero_invoice_id, link_key, amount_minor, received_minor, refunded_minor, currency,
                               status, was_collected, chargeback_cancelled, method, raw, observed_at, link_wanted,
                               link_error, paid_on)
    VALUES (p_org, p_provider, p_account, p_object_id, v_customer, v_link.tenant_id::text, v_link.invoice_id,
            v_link.link_key, p_amount, p_received, p_refunded, upper(p_currency), p_status, p_was_collected,
            p_chargeback_cancelled, p_method, p_raw, p_observed_at, v_link.wanted, v_link.error, p_paid_on)
    ON CONFLICT ON CONSTRAINT payments_object_key DO UPDATE SET
        account = EXCLUDED.account,
        customer_id = coalesce(EXCLUDED.customer_id, p.customer_id),
        -- the link follows the metadata of the newest observation: moved when it names another invoice, removed
        -- when it names one not mirrored, a malformed one or none any more (the old invoice is returned below, and
        -- reconciling it plans its write-back back to 0: gw_payments_reconcile)
        xero_tenant_id = EXCLUDED.xero_tenant_id,
        xero_invoice_id = EXCLUDED.xero_invoice_id,
        link_key = EXCLUDED.link_key,
        amount_minor = EXCLUDED.amount_minor,
        received_minor = EXCLUDED.received_minor,
        refunded_minor = EXCLUDED.refunded_minor,
        currency = EXCLUDED.currency,
        status = EXCLUDED.status,
        was_collected = p.was_collected OR EXCLUDED.was_collected,
        chargeback_cancelled = p.chargeback_cancelled OR EXCLUDED.chargeback_cancelled,
        method = coalesce(EXCLUDED.method, p.method),
        raw = EXCLUDED.raw,
        observed_at = EXCLUDED.observed_at,
        link_wanted = EXCLUDED.link_wanted,
        link_error = EXCLUDED.link_error,
        paid_on = coalesce(EXCLUDED.paid_on, p.paid_on),
        updated_at = now()
    RETURNING p.id, p.xero_tenant_id::uuid, p.xero_invoice_id, p.link_wanted
        INTO payment_id, tenant_id, invoice_id, wanted;
    RETURN NEXT;
    IF v_old.id IS NOT NULL AND v_old.xero_invoice_id IS NOT NULL
       AND (v_old.xero_invoice_id IS DISTINCT FROM invoice_id OR v_old.xero_tenant_id::uuid IS DISTINCT FROM tenant_id) THEN
        tenant_id := v_old.xero_tenant_id::uuid;
        invoice_id := v_old.xero_invoice_id;
        wanted := NULL;
        RETURN NEXT;
    END IF;
END
$$;

-- Upserts a refund or a dispute of payment p_payment and records its fact (the same observed_at rule).
CREATE OR REPLACE FUNCTION pay_upsert_child(p_org bigint, p_kind text, p_provider text, p_observed_at timestamptz,
                                            p_payment bigint, p_object_id text, p_amount bigint, p_currency text,
                                            p_status text, p_raw jsonb, p_event bigint, p_correlation text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_object_id IS NULL OR p_currency IS NULL OR p_status IS NULL THEN
        RAISE EXCEPTION 'pay_upsert_child: a % % lacks its id, currency or status', p_provider, p_kind
            USING ERRCODE = 'not_null_violation';
    END IF;
    PERFORM ledger_record(p_org, p_provider, p_kind, p_object_id, p_status, p_amount, p_currency, p_event,
                          p_correlation);
    IF p_kind = 'refund' THEN
        INSERT INTO refunds AS r (organisation_id, provider, object_id, payment_id, amount_minor, currency, status,
                                  raw, observed_at)
        VALUES (p_org, p_provider, p_object_id, p_payment, p_amount, upper(p_currency), p_status, p_raw,
                p_observed_at)
        ON CONFLICT ON CONSTRAINT refunds_object_key DO UPDATE SET
            payment_id = EXCLUDED.payment_id, amount_minor = EXCLUDED.amount_minor, currency = EXCLUDED.currency,
            status = EXCLUDED.status, raw = EXCLUDED.raw, observed_at = EXCLUDED.observed_at, updated_at = now()
        WHERE r.observed_at <= EXCLUDED.observed_at;
    ELSIF p_kind = 'dispute' THEN
        INSERT INTO disputes AS d (organisation_id, provider, object_id, payment_id, amount_minor, currency, status,
                                   raw, observed_at)
        VALUES (p_org, p_provider, p_object_id, p_payment, p_amount, upper(p_currency), p_status, p_raw,
                p_observed_at)
        ON CONFLICT ON CONSTRAINT disputes_object_key DO UPDATE SET
            payment_id = EXCLUDED.payment_id, amount_minor = EXCLUDED.amount_minor, currency = EXCLUDED.currency,
            status = EXCLUDED.status, raw = EXCLUDED.raw, observed_at = EXCLUDED.observed_at, updated_at = now()
        WHERE d.observed_at <= EXCLUDED.observed_at;
    ELSE
        RAISE EXCEPTION 'pay_upsert_child: unknown kind %', p_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Applies a refetched Stripe payment: a PaymentIntent (with latest_charge expanded, or its id), or a Charge that
-- belongs to no PaymentIntent, which is then its own payment; with every refund and dispute of it (arrays of
-- Refund and Dispute objects). Amounts are converted to ISO minor units. Returns the invoices to reconcile.
CREATE OR REPLACE FUNCTION pay_apply_stripe(p_org bigint, p_account text, p_observed_at timestamptz, p_obj jsonb,
                                            p_refunds jsonb, p_disputes jsonb, p_event bigint, p_correlation text)
RETURNS TABLE (tenant_id uuid, invoice_id uuid, wanted text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_cur text := upper(p_obj ->> 'currency');
    v_charge jsonb;
    v_status text;
    v_amount bigint;
    v_received bigint;
    v_md jsonb[];
    v_payment bigint;
    v_pid bigint;
    v_el jsonb;
BEGIN
    PERFORM audit_lock(p_org);  -- before any row lock (see audit_lock)
    IF p_obj ->> 'object' = 'payment_intent' THEN
        v_charge := CASE WHEN jsonb_typeof(p_obj -> 'latest_charge') = 'object' THEN p_obj -> 'latest_charge' END;
        v_status := p_obj ->> 'status';
        v_amount := stripe_amount_iso((p_obj ->> 'amount')::bigint, v_cur);
        v_received := stripe_amount_iso((p_obj ->> 'amount_received')::bigint, v_cur);
        v_md := ARRAY[p_obj -> 'metadata', v_charge -> 'metadata'];
    ELSIF p_obj ->> 'object' = 'charge' THEN
        -- a Charge of its own, in the words of a PaymentIntent: captured money is received
        v_charge := p_obj;
        v_status := CASE p_obj ->> 'status'
                        WHEN 'succeeded' THEN CASE WHEN (p_obj ->> 'captured')::boolean THEN 'succeeded'
                                                   ELSE 'requires_capture' END
                        WHEN 'pending' THEN 'processing'
                        ELSE 'canceled' END;
        v_amount := stripe_amount_iso((p_obj ->> 'amount')::bigint, v_cur);
        v_received := CASE WHEN v_status = 'succeeded'
                           THEN stripe_amount_iso((p_obj ->> 'amount_captured')::bigint, v_cur) ELSE 0 END;
        v_md := ARRAY[p_obj -> 'metadata'];
    ELSE
        RAISE EXCEPTION 'pay_apply_stripe: a % is not a payment', coalesce(p_obj ->> 'object', 'object')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_pid, tenant_id, invoice_id, wanted IN
        SELECT u.payment_id, u.tenant_id, u.invoice_id, u.wanted
        FROM pay_upsert_payment(p_org, 'stripe', p_account, p_observed_at, p_obj ->> 'id', v_amount, v_received, 0,
                                v_cur, v_status, false, false,
                                coalesce(v_charge #>> '{payment_method_details,type}',
                                         p_obj #>> '{payment_method_types,0}'),
                                pay_ref_id(p_obj -> 'customer'), NULL,
                                (to_timestamp((coalesce(v_charge ->> 'created', p_obj ->> 'created'))::bigint)
                                    AT TIME ZONE 'UTC')::date,
                                v_md, p_obj, p_event, p_correlation) AS u
    LOOP
        v_payment := coalesce(v_payment, v_pid);
        RETURN NEXT;
    END LOOP;
    FOR v_el IN SELECT e FROM jsonb_array_elements(coalesce(p_refunds, '[]')) AS e LOOP
        PERFORM pay_upsert_child(p_org, 'refund', 'stripe', p_observed_at, v_payment, v_el ->> 'id',
                                 stripe_amount_iso((v_el ->> 'amount')::bigint, v_el ->> 'currency'),
                                 v_el ->> 'currency', v_el ->> 'status', v_el, p_event, p_correlation);
    END LOOP;
    FOR v_el IN SELECT e FROM jsonb_array_elements(coalesce(p_disputes, '[]')) AS e LOOP
        PERFORM pay_upsert_child(p_org, 'dispute', 'stripe', p_observed_at, v_payment, v_el ->> 'id',
                                 stripe_amount_iso((v_el ->> 'amount')::bigint, v_el ->> 'currency'),
                                 v_el ->> 'currency', v_el ->> 'status', v_el, p_event, p_correlation);
    END LOOP;
END
$$;

-- Applies a refetched GoCardless payment with its events (for what it went through: a payment that failed after
-- being confirmed or paid out is a late failure; a cancelled chargeback) and its refunds. GoCardless amounts are
-- ISO minor units already. Returns the invoices to reconcile.
CREATE OR REPLACE FUNCTION pay_apply_gocardless(p_org bigint, p_account text, p_observed_at timestamptz,
                                                p_payment jsonb, p_events jsonb, p_refunds jsonb, p_event bigint,
                                                p_correlation text)
RETURNS TABLE (tenant_id uuid, invoice_id uuid, wanted text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_actions text[];
    v_status text := p_payment ->> 'status';
    v_payment bigint;
    v_pid bigint;
    v_customer bigint;
    v_el jsonb;
BEGIN
    PERFORM audit_lock(p_org);  -- before any row lock (see audit_lock)
    SELECT coalesce(array_agg(e ->> 'action'), '{}') INTO v_actions
    FROM jsonb_array_elements(coalesce(p_events, '[]')) AS e
    WHERE e ->> 'resource_type' = 'payments';
    SELECT m.customer_id INTO v_customer FROM payment_methods m
    WHERE m.organisation_id = p_org AND m.provider = 'gocardless' AND m.object_id = p_payment #>> '{links,mandate}';
    FOR v_pid, tenant_id, invoice_id, wanted IN
        SELECT u.payment_id, u.tenant_id, u.invoice_id, u.wanted
        FROM pay_upsert_payment(p_org, 'gocardless', p_account, p_observed_at, p_payment ->> 'id',
                                (p_payment ->> 'amount')::bigint, 0,
                                coalesce((p_payment ->> 'amount_refunded')::bigint, 0),
                                p_payment ->> 'currency', v_status,
                                v_status IN ('confirmed', 'paid_out', 'charged_back')
                                    OR v_actions && ARRAY['confirmed', 'paid_out', 'late_failure_settled'],
                                'chargeback_cancelled' = ANY (v_actions),
                                p_payment ->> 'scheme', NULL, v_customer,
                                (p_payment ->> 'charge_date')::date,
                                ARRAY[p_payment -> 'metadata'], p_payment, p_event, p_correlation) AS u
    LOOP
        v_payment := coalesce(v_payment, v_pid);
        RETURN NEXT;
    END LOOP;
    FOR v_el IN SELECT e FROM jsonb_array_elements(coalesce(p_refunds, '[]')) AS e LOOP
        PERFORM pay_upsert_child(p_org, 'refund', 'gocardless', p_observed_at, v_payment, v_el ->> 'id',
                                 (v_el ->> 'amount')::bigint, v_el ->> 'currency', v_el ->> 'status', v_el, p_event,
                                 p_correlation);
    END LOOP;
END
$$;

-- Links the payments waiting for invoices that are mirrored now (by InvoiceID or settled_invoice_id) and returns
-- the invoices they were linked to.
CREATE OR REPLACE FUNCTION pay_link_waiting(p_org bigint, p_tenant uuid, p_invoices uuid[])
RETURNS TABLE (tenant_id uuid, invoice_id uuid)
LANGUAGE sql AS $$
    WITH found AS (
        SELECT i.tenant_id, i.invoice_id, i.settled_invoice_id FROM xero_invoices i
        WHERE i.organisation_id = p_org AND i.tenant_id = p_tenant AND i.invoice_id = ANY (p_invoices)),
    linked AS (
        UPDATE payments p SET xero_tenant_id = f.tenant_id::text, xero_invoice_id = f.invoice_id, link_wanted = NULL,
                              updated_at = now()
        FROM found f
        WHERE p.organisation_id = p_org AND p.link_wanted IS NOT NULL
          AND (p.link_wanted = f.invoice_id::text OR p.link_wanted = f.settled_invoice_id)
        RETURNING f.tenant_id, f.invoice_id)
    SELECT DISTINCT tenant_id, invoice_id FROM linked
$$;

-- What the audit log keeps of a payment state (the same keys before and after, so a diff names what changed).
CREATE OR REPLACE FUNCTION pay_state_audit(s invoice_payment_states) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('state', s.state, 'currency', s.currency, 'paid_minor', s.paid_minor,
                              'outstanding_minor', s.outstanding_minor, 'flags', to_jsonb(s.flags),
                              'event_id', s.event_id)
$$;

-- Stores reconciled states (a JSON array, one object per invoice, written by payments.c from reconcile.c's
-- result: tenant_id, invoice_id, currency, the *_minor amounts, state, flags, problem) and audits each change of
-- state or amounts with the event that caused it. Returns how many changed.
CREATE OR REPLACE FUNCTION pay_store_states(p_org bigint, p_states jsonb, p_event bigint, p_correlation text)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_el jsonb;
    v_new invoice_payment_states;
    v_old invoice_payment_states;
    v_changed integer := 0;
BEGIN
    PERFORM audit_lock(p_org);
    FOR v_el IN SELECT e FROM jsonb_array_elements(p_states) AS e LOOP
        v_new := jsonb_populate_record(NULL::invoice_payment_states, v_el);
        v_new.organisation_id := p_org;
        v_new.flags := coalesce(v_new.flags, '{}');
        v_new.event_id := p_event;
        SELECT * INTO v_old FROM invoice_payment_states s
        WHERE s.organisation_id = p_org AND s.tenant_id = v_new.tenant_id AND s.invoice_id = v_new.invoice_id
        FOR UPDATE;
        IF FOUND AND (v_old.currency, v_old.due_minor, v_old.paid_minor, v_old.pending_minor, v_old.refunded_minor,
                      v_old.charged_back_minor, v_old.late_failed_minor, v_old.disputed_minor, v_old.net_paid_minor,
                      v_old.outstanding_minor, v_old.state, v_old.flags, v_old.problem)
                     IS NOT DISTINCT FROM
                     (v_new.currency, v_new.due_minor, v_new.paid_minor, v_new.pending_minor, v_new.refunded_minor,
                      v_new.charged_back_minor, v_new.late_failed_minor, v_new.disputed_minor, v_new.net_paid_minor,
                      v_new.outstanding_minor, v_new.state, v_new.flags, v_new.problem) THEN
            CONTINUE;
        END IF;
        INSERT INTO invoice_payment_states AS s (organisation_id, tenant_id, invoice_id, currency, due_minor,
                                                 paid_minor, pending_minor, refunded_minor, charged_back_minor,
                                                 late_failed_minor, disputed_minor, net_paid_minor,
                                                 outstanding_minor, state, flags, problem, event_id,
                                                 correlation_id, reconciled_at)
        VALUES (p_org, v_new.tenant_id, v_new.invoice_id, v_new.currency, v_new.due_minor, v_new.paid_minor,
                v_new.pending_minor, v_new.refunded_minor, v_new.charged_back_minor, v_new.late_failed_minor,
                v_new.disputed_minor, v_new.net_paid_minor, v_new.outstanding_minor, v_new.state, v_new.flags,
                v_new.problem, p_event, p_correlation, now())
        ON CONFLICT (organisation_id, tenant_id, invoice_id) DO UPDATE SET
            currency = EXCLUDED.currency, due_minor = EXCLUDED.due_minor, paid_minor = EXCLUDED.paid_minor,
            pending_minor = EXCLUDED.pending_minor, refunded_minor = EXCLUDED.refunded_minor,
            charged_back_minor = EXCLUDED.charged_back_minor, late_failed_minor = EXCLUDED.late_failed_minor,
            disputed_minor = EXCLUDED.disputed_minor, net_paid_minor = EXCLUDED.net_paid_minor,
            outstanding_minor = EXCLUDED.outstanding_minor, state = EXCLUDED.state, flags = EXCLUDED.flags,
            problem = EXCLUDED.problem, event_id = EXCLUDED.event_id, correlation_id = EXCLUDED.correlation_id,
            reconciled_at = EXCLUDED.reconciled_at;
        IF v_old.state IS DISTINCT FROM v_new.state OR v_old.outstanding_minor IS DISTINCT FROM v_new.outstanding_minor
           OR v_old.flags IS DISTINCT FROM v_new.flags THEN
            PERFORM audit_write(p_org, 'system:payments', 'invoice.payment_state', 'invoice_payment_state',
                                v_new.invoice_id::text,
                                CASE WHEN v_old.state IS NOT NULL THEN pay_state_audit(v_old) END,
                                pay_state_audit(v_new), p_correlation);
        END IF;
        v_changed := v_changed + 1;
    END LOOP;
    RETURN v_changed;
END
$$;
