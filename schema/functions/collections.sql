-- SPDX-License-Identifier: MIT
-- collections.sql: automatic collection on the due date (tables collection_attempts and collection_pauses of
-- 0024_collections.sql; the rules in docs/collections.md, "Automatic collection"). collect_plan is the planning
-- round (the collector's thread and `settled collect --at`): it checks each invoice's rules in the transaction that
-- inserts its attempt, holding the invoice's payment state row, so that two instances never both plan one and an
-- invoice with a pending or succeeded payment is never charged. The sender (gateway/domain/collector.c) claims
-- attempts with a lease (collect_claim), and records each call's outcome fenced by the lease owner
-- (collect_begin, collect_record, collect_fail). The payment's webhook brings the attempt to its outcome
-- (collect_apply_payment, from the trigger on payments). Every function is plpgsql: this file is applied before
-- terms.sql, whose view invoice_due_dates it reads.

-- What the audit log keeps of an attempt.
CREATE OR REPLACE FUNCTION collect_json(a collection_attempts) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN jsonb_build_object('invoice_id', a.settled_invoice_id, 'attempt', a.attempt, 'method', a.method,
                              'provider', a.provider, 'payment_method', a.payment_method,
                              'amount_minor', a.amount_minor, 'currency', a.currency,
                              'charge_date', a.charge_date::text, 'status', a.status,
                              'provider_object_id', a.provider_object_id, 'failure_code', a.failure_code);
END
$$;

-- What the API shows of an attempt (GET /v1/admin/invoices/{id}/collections); the handler turns amount_minor into
-- the decimal amount (money.c).
CREATE OR REPLACE FUNCTION collect_api_json(a collection_attempts) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object(
        'id', a.id::text, 'attempt', a.attempt, 'method', a.method, 'provider', a.provider,
        'payment_method', a.payment_method, 'amount_minor', a.amount_minor::text,
        'currency', a.currency, 'charge_date', a.charge_date::text, 'status', a.status,
        'provider_object_id', a.provider_object_id, 'failure_code', a.failure_code,
        'failure_message', a.failure_message, 'notified', a.notified_at IS NOT NULL,
        'planned_at', to_char(a.planned_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'submitted_at', to_char(a.submitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'completed_at', to_char(a.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
END
$$;

-- Whether a Stripe or GoCardless payment status is money on its way (pending) or received (succeeded).
CREATE OR REPLACE FUNCTION collect_status_pending(p_provider text, p_status text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE p_provider
        WHEN 'stripe' THEN p_status IN ('processing', 'requires_capture')
        WHEN 'gocardless' THEN p_status IN ('pending_customer_approval', 'pending_submission', 'submitted')
        ELSE false END;
END
$$;

CREATE OR REPLACE FUNCTION collect_status_succeeded(p_provider text, p_status text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE p_provider
        WHEN 'stripe' THEN p_status = 'succeeded'
        WHEN 'gocardless' THEN p_status IN ('confirmed', 'paid_out')
        WHEN 'xero' THEN true
        ELSE false END;
END
$$;

-- Why invoice (p_tenant, p_invoice) of p_org must not be collected now, whatever its attempts: NULL when nothing
-- stands in the way. The reasons (docs/collections.md): not_found, no_customer, voided (VOIDED or DELETED in
-- Xero), not_authorised (any other status than AUTHORISED), not_reconciled, nothing_outstanding, disputed, pending
-- (a payment on its way), paid (a payment received: a part-paid invoice is left to a person), auto_collect_off,
-- no_due_date, customer_paused, invoice_paused. The caller holds the invoice's payment state row when it acts on
-- the answer.
CREATE OR REPLACE FUNCTION collect_blocker(p_org bigint, p_tenant uuid, p_invoice uuid) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_inv xero_invoices;
    v_due record;
    v_state invoice_payment_states;
    v_auto boolean;
BEGIN
    SELECT * INTO v_inv FROM xero_invoices i
    WHERE i.organisation_id = p_org AND i.tenant_id = p_tenant AND i.invoice_id = p_invoice AND i.type = 'ACCREC';
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    SELECT d.customer_id, d.due_date INTO v_due FROM invoice_due_dates d
    WHERE d.organisation_id = p_org AND d.tenant_id = p_tenant AND d.invoice_id = p_invoice;
    IF v_due.customer_id IS NULL THEN
        RETURN 'no_customer';
    END IF;
    IF upper(v_inv.status) IN ('VOIDED', 'DELETED') THEN
        RETURN 'voided';
    END IF;
    IF upper(coalesce(v_inv.status, '')) <> 'AUTHORISED' THEN
        RETURN 'not_authorised';
    END IF;
    SELECT * INTO v_state FROM invoice_payment_states s
    WHERE s.organisation_id = p_org AND s.tenant_id = p_tenant AND s.invoice_id = p_invoice;
    IF NOT FOUND OR v_state.outstanding_minor IS NULL OR v_state.currency IS NULL THEN
        RETURN 'not_reconciled';
    END IF;
    IF v_state.outstanding_minor <= 0 THEN
        RETURN 'nothing_outstanding';
    END IF;
    IF v_state.state = 'disputed' OR coalesce(v_state.disputed_minor, 0) > 0
       OR EXISTS (SELECT 1 FROM disputes d JOIN payments p ON p.id = d.payment_id
                  WHERE p.organisation_id = p_org AND p.xero_tenant_id = p_tenant::text
                    AND p.xero_invoice_id = p_invoice
                    AND d.status IN ('warning_needs_response', 'warning_under_review', 'needs_response',
                                     'under_review', 'lost')) THEN
        RETURN 'disputed';
    END IF;
    IF coalesce(v_state.pending_minor, 0) > 0
       OR EXISTS (SELECT 1 FROM payments p
                  WHERE p.organisation_id = p_org AND p.xero_tenant_id = p_tenant::text
                    AND p.xero_invoice_id = p_invoice AND collect_status_pending(p.provider, p.status)) THEN
        RETURN 'pending';
    END IF;
    IF coalesce(v_state.paid_minor, 0) > 0
       OR EXISTS (SELECT 1 FROM payments p
                  WHERE p.organisation_id = p_org AND p.xero_tenant_id = p_tenant::text
                    AND p.xero_invoice_id = p_invoice AND collect_status_succeeded(p.provider, p.status)) THEN
        RETURN 'paid';
    END IF;
    SELECT coalesce(c.auto_collect, d.auto_collect) INTO v_auto
    FROM (SELECT 1) one
    LEFT JOIN payment_terms c ON c.organisation_id = p_org AND c.customer_id = v_due.customer_id
    LEFT JOIN payment_terms d ON d.organisation_id = p_org AND d.customer_id IS NULL;
    IF NOT coalesce(v_auto, false) THEN
        RETURN 'auto_collect_off';
    END IF;
    IF v_due.due_date IS NULL THEN
        RETURN 'no_due_date';
    END IF;
    IF EXISTS (SELECT 1 FROM collection_pauses x WHERE x.organisation_id = p_org AND x.customer_id = v_due.customer_id) THEN
        RETURN 'customer_paused';
    END IF;
    IF EXISTS (SELECT 1 FROM collection_pauses x
               WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.invoice_id = p_invoice) THEN
        RETURN 'invoice_paused';
    END IF;
    RETURN NULL;
END
$$;

-- The attempt that would be planned for invoice (p_tenant, p_invoice) of p_org at the instant p_now, or why none:
-- reason NULL with the attempt's fields, or reason (collect_blocker's, or: attempted (an attempt is under way, done,
-- waiting for the customer, dead), retries_exhausted, retry_not_due, no_usable_method, not_due (before the due
-- date; a direct debit: before due date - p_dd_lead_days), too_late (more than p_catch_up_days after it)) with
-- whatever is known. p_card_retry_days: the days between a failed card attempt and the next (one element per
-- retry); p_dd_retry: GoCardless's retry_if_possible. Read-only: collect_plan acts on it.
CREATE OR REPLACE FUNCTION collect_candidate(p_org bigint, p_tenant uuid, p_invoice uuid, p_now timestamptz,
                                             p_card_retry_days integer[], p_dd_lead_days integer,
                                             p_catch_up_days integer, p_dd_retry boolean,
                                             OUT reason text, OUT attempt integer, OUT customer_id bigint,
                                             OUT method text, OUT provider text, OUT provider_customer text,
                                             OUT payment_method text, OUT amount_minor bigint, OUT currency text,
                                             OUT charge_date date, OUT due_date date, OUT today date,
                                             OUT retry_if_possible boolean)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_last collection_attempts;
    v_failed integer;
    v_preferred text;
    v_pm payment_methods;
    v_next date;
    v_earliest date;
BEGIN
    reason := collect_blocker(p_org, p_tenant, p_invoice);
    IF reason IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT d.customer_id, d.due_date INTO customer_id, due_date FROM invoice_due_dates d
    WHERE d.organisation_id = p_org AND d.tenant_id = p_tenant AND d.invoice_id = p_invoice;
    today := organisation_today(p_org, p_now);
    SELECT s.outstanding_minor, s.currency INTO amount_minor, currency FROM invoice_payment_states s
    WHERE s.organisation_id = p_org AND s.tenant_id = p_tenant AND s.invoice_id = p_invoice;

    -- the attempts so far: a new one only after a failed card attempt (on the policy's days) or a cancelled one
    SELECT * INTO v_last FROM collection_attempts a
    WHERE a.organisation_id = p_org AND a.tenant_id = p_tenant AND a.invoice_id = p_invoice
    ORDER BY a.attempt DESC LIMIT 1;
    attempt := coalesce(v_last.attempt, 0) + 1;
    IF v_last.id IS NOT NULL AND v_last.status NOT IN ('failed', 'cancelled') THEN
        reason := 'attempted';
        RETURN;
    END IF;
    IF v_last.status = 'failed' THEN
        IF v_last.method = 'direct_debit' THEN
            reason := 'retries_exhausted';  -- GoCardless retries a direct debit itself; settled resubmits none
            RETURN;
        END IF;
        SELECT count(*) INTO v_failed FROM collection_attempts a
        WHERE a.organisation_id = p_org AND a.tenant_id = p_tenant AND a.invoice_id = p_invoice
          AND a.status = 'failed' AND a.method = 'card';
        IF v_failed > coalesce(cardinality(p_card_retry_days), 0) THEN
            reason := 'retries_exhausted';
            RETURN;
        END IF;
        IF today < v_last.charge_date + p_card_retry_days[v_failed] THEN
            reason := 'retry_not_due';
            charge_date := v_last.charge_date + p_card_retry_days[v_failed];
            RETURN;
        END IF;
    END IF;

    -- the customer's default method, of the preferred kind when the terms name one
    SELECT coalesce(c.preferred_method, CASE WHEN c.organisation_id IS NULL THEN d.preferred_method END)
    INTO v_preferred
    FROM (SELECT 1) one
    LEFT JOIN payment_terms c ON c.organisation_id = p_org AND c.customer_id = collect_candidate.customer_id
    LEFT JOIN payment_terms d ON d.organisation_id = p_org AND d.customer_id IS NULL;
    SELECT * INTO v_pm FROM payment_methods m
    WHERE m.organisation_id = p_org AND m.customer_id = collect_candidate.customer_id AND m.is_default
      AND m.provider IN ('stripe', 'gocardless') AND pm_usable(m.kind, m.status)
      AND (v_preferred IS NULL OR m.kind = v_preferred);
    IF NOT FOUND OR (v_pm.provider = 'stripe' AND v_pm.provider_customer IS NULL) THEN
        reason := 'no_usable_method';
        RETURN;
    END IF;
    method := v_pm.kind;
    provider := v_pm.provider;
    provider_customer := v_pm.provider_customer;
    payment_method := v_pm.object_id;
    retry_if_possible := v_pm.kind = 'direct_debit' AND coalesce(p_dd_retry, false);

    IF v_pm.kind = 'card' THEN
        -- a card is charged on the day: the due date (or, for a retry, the policy's day)
        IF v_last.id IS NULL OR v_last.status = 'cancelled' THEN
            IF today < due_date THEN
                reason := 'not_due';
                charge_date := due_date;
                RETURN;
            END IF;
            IF today > due_date + greatest(p_catch_up_days, 0) THEN
                reason := 'too_late';
                RETURN;
            END IF;
        END IF;
        charge_date := today;
        IF v_pm.exp_year IS NOT NULL AND v_pm.exp_month IS NOT NULL
           AND make_date(v_pm.exp_year, v_pm.exp_month, 1) + interval '1 month' <= charge_date THEN
            reason := 'no_usable_method';  -- expired by the charge date
            RETURN;
        END IF;
    ELSE
        -- a direct debit is created ahead, so that it is charged on the due date (or the mandate's next possible
        -- charge date, when that is later)
        IF today < due_date - greatest(p_dd_lead_days, 0) THEN
            reason := 'not_due';
            charge_date := due_date;
            RETURN;
        END IF;
        IF today > due_date + greatest(p_catch_up_days, 0) THEN
            reason := 'too_late';
            RETURN;
        END IF;
        BEGIN
            v_next := (v_pm.raw ->> 'next_possible_charge_date')::date;
        EXCEPTION WHEN others THEN
            v_next := NULL;
        END;
        v_earliest := greatest(due_date, today + 1);
        charge_date := greatest(v_earliest, coalesce(v_next, v_earliest));
    END IF;
END
$$;

-- One planning round at the instant p_now, for organisation p_org (NULL: every organisation): for each sales
-- invoice with something outstanding whose terms collect automatically, collect_candidate in the transaction that
-- inserts the attempt, holding the organisation's audit lock and the invoice's payment state row (FOR UPDATE), so
-- that the ledger checked is the ledger the attempt is planned on and two instances never plan one attempt twice
-- (and the unique (invoice, attempt) refuses the second anyway). Each attempt is audited
-- 'collection.attempt.plan' (actor system:collector). Returns the attempts planned.
CREATE OR REPLACE FUNCTION collect_plan(p_now timestamptz, p_org bigint, p_card_retry_days integer[],
                                        p_dd_lead_days integer, p_catch_up_days integer, p_dd_retry boolean)
RETURNS TABLE (id bigint, organisation_id bigint, settled_invoice_id text, attempt integer, method text,
               charge_date date)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_inv record;
    c record;
    v_new collection_attempts;
    v_planned boolean := false;
BEGIN
    FOR v_inv IN
        SELECT s.organisation_id, s.tenant_id, s.invoice_id, i.settled_invoice_id
        FROM invoice_payment_states s
        JOIN xero_invoices i USING (organisation_id, tenant_id, invoice_id)
        WHERE s.outstanding_minor > 0 AND i.type = 'ACCREC' AND upper(coalesce(i.status, '')) = 'AUTHORISED'
          AND (p_org IS NULL OR s.organisation_id = p_org)
          AND EXISTS (SELECT 1 FROM payment_terms t WHERE t.organisation_id = s.organisation_id AND t.auto_collect)
        ORDER BY s.organisation_id, s.tenant_id, s.invoice_id
    LOOP
        PERFORM audit_lock(v_inv.organisation_id);  -- before any row lock (see audit_lock)
        PERFORM 1 FROM invoice_payment_states s
        WHERE s.organisation_id = v_inv.organisation_id AND s.tenant_id = v_inv.tenant_id
          AND s.invoice_id = v_inv.invoice_id
        FOR UPDATE;
        SELECT * INTO c FROM collect_candidate(v_inv.organisation_id, v_inv.tenant_id, v_inv.invoice_id, p_now,
                                                p_card_retry_days, p_dd_lead_days, p_catch_up_days, p_dd_retry);
        CONTINUE WHEN c.reason IS NOT NULL;
        INSERT INTO collection_attempts AS a (organisation_id, customer_id, tenant_id, invoice_id,
                                              settled_invoice_id, attempt, method, provider, provider_customer,
                                              payment_method, amount_minor, currency, charge_date,
                                              retry_if_possible, planned_at)
        VALUES (v_inv.organisation_id, c.customer_id, v_inv.tenant_id, v_inv.invoice_id, v_inv.settled_invoice_id,
                c.attempt, c.method, c.provider, c.provider_customer, c.payment_method, c.amount_minor, c.currency,
                c.charge_date, c.retry_if_possible, p_now)
        ON CONFLICT ON CONSTRAINT collection_attempts_invoice_attempt_key DO NOTHING
        RETURNING * INTO v_new;
        CONTINUE WHEN v_new.id IS NULL;
        PERFORM audit_write(v_new.organisation_id, 'system:collector', 'collection.attempt.plan',
                            'collection_attempt', v_new.id::text, NULL, collect_json(v_new),
                            'collect:' || v_new.id);
        v_planned := true;
        id := v_new.id;
        organisation_id := v_new.organisation_id;
        settled_invoice_id := v_new.settled_invoice_id;
        attempt := v_new.attempt;
        method := v_new.method;
        charge_date := v_new.charge_date;
        RETURN NEXT;
        v_new := NULL;
    END LOOP;
    IF v_planned THEN
        PERFORM pg_notify('settled_collections', '');
    END IF;
END
$$;

-- Claims up to p_limit due attempts (planned, or sending again after a failure or a lost lease) for p_owner with
-- a lease of p_lease_ms, skipping rows another sender holds, and counts the try. Not audited (collect_begin is).
CREATE OR REPLACE FUNCTION collect_claim(p_owner text, p_lease_ms bigint, p_limit integer)
RETURNS SETOF collection_attempts
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH due AS (
        SELECT a.id FROM collection_attempts a
        WHERE a.status IN ('planned', 'sending') AND a.next_attempt_at <= now()
          AND (a.lease_until IS NULL OR a.lease_until <= now())
        ORDER BY a.next_attempt_at LIMIT p_limit FOR UPDATE SKIP LOCKED)
    UPDATE collection_attempts a
    SET tries = a.tries + 1, lease_owner = p_owner, lease_until = now() + p_lease_ms * interval '1 millisecond',
        next_attempt_at = now() + p_lease_ms * interval '1 millisecond', updated_at = now()
    FROM due WHERE a.id = due.id
    RETURNING a.*;
END
$$;

-- The attempt p_id if p_owner holds its lease (and it is still to be sent), locked after its organisation's
-- audit lock; NULL otherwise.
CREATE OR REPLACE FUNCTION collect_fenced(p_id bigint, p_owner text) RETURNS collection_attempts
LANGUAGE plpgsql AS $$
DECLARE
    v_org bigint;
    v_row collection_attempts;
BEGIN
    SELECT a.organisation_id INTO v_org FROM collection_attempts a WHERE a.id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM audit_lock(v_org);
    SELECT * INTO v_row FROM collection_attempts a
    WHERE a.id = p_id AND a.lease_owner = p_owner AND a.status IN ('planned', 'sending')
    FOR UPDATE;
    RETURN v_row;
END
$$;

-- Before the call of a claim: 'send' (the attempt is now 'sending'; the first time audited
-- 'collection.attempt.send'), 'cancelled' when an attempt never sent is no longer wanted (collect_blocker says
-- why: paid, paused, voided... audited 'collection.attempt.cancel'), NULL when the lease is not p_owner's. An
-- attempt that may have been sent already ('sending') is always sent again, under the same Idempotency-Key: the
-- provider answers with the object the first call made.
CREATE OR REPLACE FUNCTION collect_begin(p_id bigint, p_owner text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_old collection_attempts;
    v_new collection_attempts;
    v_why text;
BEGIN
    v_old := collect_fenced(p_id, p_owner);
    IF v_old.id IS NULL THEN
        RETURN NULL;
    END IF;
    IF v_old.status = 'sending' THEN
        -- sent before, its answer lost: the same key again, while the provider still remembers it (Stripe keeps a
        -- key at least 24 hours; an older one may be forgotten, and a second payment made)
        IF v_old.sending_since IS NOT NULL AND v_old.sending_since < now() - interval '23 hours' THEN
            UPDATE collection_attempts a
            SET status = 'dead', failure_code = 'idempotency_window_passed',
                failure_message = 'unanswered since ' || to_char(v_old.sending_since AT TIME ZONE 'UTC',
                                                                'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                                  || ': not sent again under a key the provider may have forgotten; check the '
                                  || 'provider for a payment with metadata settled_collection_attempt',
                lease_owner = NULL, lease_until = NULL, completed_at = now(), updated_at = now()
            WHERE a.id = p_id RETURNING * INTO v_new;
            PERFORM audit_write(v_old.organisation_id, 'system:collector', 'collection.attempt.dead',
                                'collection_attempt', p_id::text, collect_json(v_old), collect_json(v_new),
                                'collect:' || p_id);
            RETURN 'dead';
        END IF;
        RETURN 'send';
    END IF;
    PERFORM 1 FROM invoice_payment_states s
    WHERE s.organisation_id = v_old.organisation_id AND s.tenant_id = v_old.tenant_id
      AND s.invoice_id = v_old.invoice_id
    FOR UPDATE;
    v_why := collect_blocker(v_old.organisation_id, v_old.tenant_id, v_old.invoice_id);
    IF v_why IS NOT NULL THEN
        UPDATE collection_attempts a
        SET status = 'cancelled', failure_code = v_why, lease_owner = NULL, lease_until = NULL,
            completed_at = now(), updated_at = now()
        WHERE a.id = p_id RETURNING * INTO v_new;
        PERFORM audit_write(v_old.organisation_id, 'system:collector', 'collection.attempt.cancel',
                            'collection_attempt', p_id::text, collect_json(v_old), collect_json(v_new),
                            'collect:' || p_id);
        RETURN 'cancelled';
    END IF;
    UPDATE collection_attempts a SET status = 'sending', sending_since = now(), updated_at = now()
    WHERE a.id = p_id RETURNING * INTO v_new;
    PERFORM audit_write(v_old.organisation_id, 'system:collector', 'collection.attempt.send', 'collection_attempt',
                        p_id::text, collect_json(v_old), collect_json(v_new), 'collect:' || p_id);
    RETURN 'send';
END
$$;

-- Maps a Stripe or GoCardless payment to the status of the attempt it is for: (status, failure code), or NULL
-- status when it says nothing new (created, still on its way).
CREATE OR REPLACE FUNCTION collect_outcome(p payments, OUT status text, OUT code text)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_err jsonb := CASE WHEN p.provider = 'stripe' THEN p.raw -> 'last_payment_error' END;
BEGIN
    IF collect_status_succeeded(p.provider, p.status) THEN
        status := 'succeeded';
    ELSIF p.provider = 'stripe' AND p.status = 'requires_action' THEN
        status := 'action_required';
        code := 'authentication_required';
    ELSIF p.provider = 'stripe' AND p.status IN ('requires_payment_method', 'canceled')
          AND jsonb_typeof(v_err) = 'object' THEN
        code := coalesce(v_err ->> 'decline_code', v_err ->> 'code', 'declined');
        status := CASE WHEN 'authentication_required' IN (v_err ->> 'code', v_err ->> 'decline_code')
                       THEN 'action_required' ELSE 'failed' END;
    ELSIF p.provider = 'stripe' AND p.status = 'canceled' THEN
        status := 'failed';
        code := 'canceled';
    ELSIF p.provider = 'gocardless' AND p.status IN ('failed', 'customer_approval_denied', 'cancelled') THEN
        status := 'failed';
        code := p.status;
    ELSIF collect_status_pending(p.provider, p.status) THEN
        status := 'submitted';
    END IF;
END
$$;

-- Brings the attempt that created payment p (by its provider id, or by its metadata settled_collection_attempt
-- when the webhook is processed before the sender recorded the id) to the payment's outcome; audited
-- 'collection.attempt.<status>'. A Stripe attempt that succeeded or failed stays so; a GoCardless one follows its
-- payment (GoCardless may retry a failed payment itself). Returns the new status, NULL when nothing changed.
CREATE OR REPLACE FUNCTION collect_apply_payment(p payments) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_old collection_attempts;
    v_new collection_attempts;
    v_ref text := p.raw #>> '{metadata,settled_collection_attempt}';
    o record;
BEGIN
    SELECT * INTO v_old FROM collection_attempts a
    WHERE a.organisation_id = p.organisation_id AND a.provider = p.provider AND a.provider_object_id = p.object_id;
    IF NOT FOUND AND v_ref ~ '^[0-9]{1,18}$' THEN
        SELECT * INTO v_old FROM collection_attempts a
        WHERE a.id = v_ref::bigint AND a.organisation_id = p.organisation_id AND a.provider = p.provider
          AND (a.provider_object_id IS NULL OR a.provider_object_id = p.object_id);
    END IF;
    IF v_old.id IS NULL THEN
        RETURN NULL;
    END IF;
    o := collect_outcome(p);
    IF o.status IS NULL OR v_old.status IN ('succeeded', 'cancelled', 'dead')
       OR (v_old.status = o.status AND v_old.provider_object_id IS NOT DISTINCT FROM p.object_id)
       OR (p.provider = 'stripe' AND v_old.status IN ('failed', 'action_required')) THEN
        RETURN NULL;
    END IF;
    IF o.status = 'submitted' AND v_old.status NOT IN ('planned', 'sending', 'failed') THEN
        RETURN NULL;
    END IF;
    PERFORM audit_lock(p.organisation_id);
    UPDATE collection_attempts a
    SET status = o.status, provider_object_id = p.object_id,
        failure_code = CASE WHEN o.status IN ('failed', 'action_required') THEN o.code ELSE a.failure_code END,
        failure_message = CASE WHEN o.status IN ('failed', 'action_required')
                               THEN p.raw #>> '{last_payment_error,message}' ELSE a.failure_message END,
        submitted_at = coalesce(a.submitted_at, now()),
        completed_at = CASE WHEN o.status IN ('succeeded', 'failed', 'action_required') THEN now() END,
        -- a GoCardless payment failed again after its own retry: notify again
        notified_at = CASE WHEN o.status IN ('failed', 'action_required') AND a.status NOT IN ('failed', 'action_required')
                           THEN NULL ELSE a.notified_at END,
        updated_at = now()
    WHERE a.id = v_old.id
    RETURNING * INTO v_new;
    PERFORM audit_write(p.organisation_id, 'system:collector', 'collection.attempt.' || o.status,
                        'collection_attempt', v_old.id::text, collect_json(v_old), collect_json(v_new),
                        'collect:' || v_old.id);
    RETURN o.status;
END
$$;

CREATE OR REPLACE FUNCTION collect_payment_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM collect_apply_payment(NEW);
    RETURN NULL;
END
$$;

-- Records the answer to a claim's call, by p_owner: p_result 'submitted' (the provider made p_object_id; GoCardless
-- answered charge date p_charge_date), 'failed' or 'action_required' (Stripe declined at once: p_object_id with its
-- decline code p_code and message), 'dead' (the provider refused the call: p_message). Audited
-- 'collection.attempt.<result>'. A payment the webhook already brought in gives its outcome at once. Returns the
-- attempt's new status, or NULL when the lease was not p_owner's.
CREATE OR REPLACE FUNCTION collect_record(p_id bigint, p_owner text, p_result text, p_object_id text, p_code text,
                                          p_message text, p_charge_date date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_old collection_attempts;
    v_new collection_attempts;
    v_pay payments;
BEGIN
    IF p_result NOT IN ('submitted', 'failed', 'action_required', 'dead') THEN
        RAISE EXCEPTION 'collect_record: unknown result %', p_result USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_old := collect_fenced(p_id, p_owner);
    IF v_old.id IS NULL THEN
        -- not ours any more: the webhook may have brought the outcome first (the row is 'submitted' or later)
        RETURN NULL;
    END IF;
    UPDATE collection_attempts a
    SET status = p_result, provider_object_id = coalesce(p_object_id, a.provider_object_id),
        failure_code = CASE WHEN p_result <> 'submitted' THEN p_code END,
        failure_message = CASE WHEN p_result <> 'submitted' THEN left(p_message, 500) END,
        charge_date = coalesce(p_charge_date, a.charge_date),
        submitted_at = CASE WHEN p_result <> 'dead' THEN now() END,
        completed_at = CASE WHEN p_result <> 'submitted' THEN now() END,
        lease_owner = NULL, lease_until = NULL, updated_at = now()
    WHERE a.id = p_id
    RETURNING * INTO v_new;
    PERFORM audit_write(v_old.organisation_id, 'system:collector', 'collection.attempt.' || p_result,
                        'collection_attempt', p_id::text, collect_json(v_old), collect_json(v_new),
                        'collect:' || p_id);
    IF p_object_id IS NOT NULL THEN
        SELECT * INTO v_pay FROM payments p
        WHERE p.organisation_id = v_old.organisation_id AND p.provider = v_old.provider AND p.object_id = p_object_id;
        IF FOUND THEN
            PERFORM collect_apply_payment(v_pay);
        END IF;
    END IF;
    SELECT a.status INTO v_new.status FROM collection_attempts a WHERE a.id = p_id;
    RETURN v_new.status;
END
$$;

-- Records a call that did not get an answer worth keeping, by p_owner: 'transient' (no answer, a 5xx, a 409):
-- sent again after wait number `tries` of p_waits (ms, the retry schedule), under the same Idempotency-Key, and
-- 'dead' with p_error once the schedule is used up (audited); 'wait' (a quota, a 429): again in p_wait_ms, not a
-- try. Returns the new status, NULL when the lease was not p_owner's.
CREATE OR REPLACE FUNCTION collect_fail(p_id bigint, p_owner text, p_kind text, p_error text, p_waits bigint[],
                                        p_wait_ms bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_old collection_attempts;
    v_new collection_attempts;
BEGIN
    IF p_kind NOT IN ('transient', 'wait') THEN
        RAISE EXCEPTION 'collect_fail: unknown kind %', p_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_old := collect_fenced(p_id, p_owner);
    IF v_old.id IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE collection_attempts a
    SET status = CASE WHEN p_kind = 'transient' AND a.tries > coalesce(cardinality(p_waits), 0) THEN 'dead'
                      ELSE a.status END,
        tries = CASE WHEN p_kind = 'wait' THEN greatest(a.tries - 1, 0) ELSE a.tries END,
        next_attempt_at = now() + CASE WHEN p_kind = 'wait' THEN greatest(p_wait_ms, 0)
                                       ELSE coalesce(p_waits[a.tries], 0) * (1 + random() * 0.2) END
                                  * interval '1 millisecond',
        failure_message = left(p_error, 500), lease_owner = NULL, lease_until = NULL, updated_at = now()
    WHERE a.id = p_id
    RETURNING * INTO v_new;
    IF v_new.status = 'dead' THEN
        UPDATE collection_attempts a SET completed_at = now() WHERE a.id = p_id;
        PERFORM audit_write(v_old.organisation_id, 'system:collector', 'collection.attempt.dead', 'collection_attempt',
                            p_id::text, collect_json(v_old), collect_json(v_new), 'collect:' || p_id);
    END IF;
    RETURN v_new.status;
END
$$;

-- The attempts whose failure the customer has not been told of yet (failed, action_required), for the
-- collection_failed notice; collect_noticed marks one told.
CREATE OR REPLACE FUNCTION collect_notices_due(p_limit integer)
RETURNS TABLE (id bigint, organisation_id bigint, customer_id bigint, settled_invoice_id text, status text,
               amount_minor bigint, currency text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT a.id, a.organisation_id, a.customer_id, a.settled_invoice_id, a.status, a.amount_minor, a.currency::text
    FROM collection_attempts a
    WHERE a.status IN ('failed', 'action_required') AND a.notified_at IS NULL
    ORDER BY a.id LIMIT p_limit;
END
$$;

CREATE OR REPLACE FUNCTION collect_noticed(p_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE collection_attempts a SET notified_at = now(), updated_at = now() WHERE a.id = p_id;
END
$$;

-- Milliseconds until the earliest attempt to send is due (0: now), NULL when none: how long an idle sender sleeps.
CREATE OR REPLACE FUNCTION collect_next_due_ms() RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT greatest(0, ceil(extract(epoch FROM min(a.next_attempt_at) - now()) * 1000))::bigint
            FROM collection_attempts a WHERE a.status IN ('planned', 'sending'));
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- The admins' routes (gateway/api/collections.c)

-- A pause as the API shows it.
CREATE OR REPLACE FUNCTION collect_pause_json(x collection_pauses) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF x.id IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object('reason', x.reason, 'paused_by', x.paused_by,
                              'paused_at', to_char(x.paused_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
END
$$;

-- Pauses (p_pause true, with p_reason) or unpauses collection for customer p_customer, or for the invoice
-- p_invoice (a settled invoice id), of p_org; exactly one of them. 404 for another organisation's; a pause of a
-- paused one replaces its reason; an unpause of one not paused changes nothing. Audited 'collection.pause' and
-- 'collection.unpause'. Answers {"customer_id"|"invoice_id", "paused", "pause"}.
CREATE OR REPLACE FUNCTION collect_pause_set(p_org bigint, p_customer bigint, p_invoice text, p_pause boolean,
                                             p_reason text, p_actor text, p_correlation text)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_tenant uuid;
    v_inv uuid;
    v_old collection_pauses;
    v_new collection_pauses;
    v_entity text;
    v_id text;
BEGIN
    IF p_pause AND (p_reason IS NULL OR btrim(p_reason) = '') THEN
        RETURN QUERY SELECT * FROM admin_result('invalid', 'reason', 'is required to pause collection', NULL);
        RETURN;
    END IF;
    PERFORM audit_lock(p_org);
    IF p_customer IS NOT NULL THEN
        PERFORM 1 FROM customers k WHERE k.organisation_id = p_org AND k.id = p_customer;
        IF NOT FOUND THEN
            RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
            RETURN;
        END IF;
        SELECT * INTO v_old FROM collection_pauses x WHERE x.organisation_id = p_org AND x.customer_id = p_customer
        FOR UPDATE;
        v_entity := 'customer';
        v_id := p_customer::text;
    ELSE
        SELECT i.tenant_id, i.invoice_id INTO v_tenant, v_inv FROM xero_invoices i
        WHERE i.organisation_id = p_org AND i.settled_invoice_id = p_invoice AND i.type = 'ACCREC';
        IF NOT FOUND THEN
            RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
            RETURN;
        END IF;
        SELECT * INTO v_old FROM collection_pauses x
        WHERE x.organisation_id = p_org AND x.tenant_id = v_tenant AND x.invoice_id = v_inv
        FOR UPDATE;
        v_entity := 'invoice';
        v_id := p_invoice;
    END IF;
    IF p_pause AND v_old.id IS NULL THEN
        INSERT INTO collection_pauses (organisation_id, customer_id, tenant_id, invoice_id, settled_invoice_id, reason,
                                       paused_by)
        VALUES (p_org, p_customer, v_tenant, v_inv, CASE WHEN p_customer IS NULL THEN p_invoice END, p_reason, p_actor)
        RETURNING * INTO v_new;
    ELSIF p_pause AND v_old.reason IS DISTINCT FROM p_reason THEN
        UPDATE collection_pauses x SET reason = p_reason, paused_by = p_actor, paused_at = now()
        WHERE x.id = v_old.id RETURNING * INTO v_new;
    ELSIF p_pause THEN
        v_new := v_old;
    ELSIF v_old.id IS NOT NULL THEN
        DELETE FROM collection_pauses x WHERE x.id = v_old.id;
    END IF;
    IF (p_pause AND v_new IS DISTINCT FROM v_old) OR (NOT p_pause AND v_old.id IS NOT NULL) THEN
        PERFORM audit_write(p_org, p_actor, CASE WHEN p_pause THEN 'collection.pause' ELSE 'collection.unpause' END,
                            v_entity, v_id, collect_pause_json(v_old), collect_pause_json(v_new), p_correlation);
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL,
        jsonb_build_object(v_entity || '_id', v_id, 'paused', p_pause,
                           'pause', CASE WHEN p_pause THEN collect_pause_json(v_new) END));
END
$$;

-- An invoice's collection timeline for its organisation's admins: its pauses (the invoice's and its customer's)
-- and every attempt, oldest first. NULL for another organisation's invoice (404).
CREATE OR REPLACE FUNCTION collect_invoice_get(p_org bigint, p_invoice text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_inv xero_invoices;
    v_customer bigint;
    v_ip collection_pauses;
    v_cp collection_pauses;
BEGIN
    SELECT * INTO v_inv FROM xero_invoices i
    WHERE i.organisation_id = p_org AND i.settled_invoice_id = p_invoice AND i.type = 'ACCREC';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT d.customer_id INTO v_customer FROM invoice_due_dates d
    WHERE d.organisation_id = p_org AND d.tenant_id = v_inv.tenant_id AND d.invoice_id = v_inv.invoice_id;
    SELECT * INTO v_ip FROM collection_pauses x
    WHERE x.organisation_id = p_org AND x.tenant_id = v_inv.tenant_id AND x.invoice_id = v_inv.invoice_id;
    SELECT * INTO v_cp FROM collection_pauses x WHERE x.organisation_id = p_org AND x.customer_id = v_customer;
    RETURN jsonb_build_object(
        'invoice_id', p_invoice,
        'customer_id', v_customer::text,
        'invoice_pause', collect_pause_json(v_ip),
        'customer_pause', collect_pause_json(v_cp),
        'attempts', coalesce((SELECT jsonb_agg(collect_api_json(a) ORDER BY a.attempt)
                              FROM collection_attempts a
                              WHERE a.organisation_id = p_org AND a.tenant_id = v_inv.tenant_id
                                AND a.invoice_id = v_inv.invoice_id), '[]'::jsonb));
END
$$;
