-- SPDX-License-Identifier: MIT
-- xero_writeback.sql: the outbox of payment write-backs to Xero (table xero_writebacks in 0013_xero_writebacks.sql;
-- the rules in docs/reconciliation.md, "Write-back"). The payment processors call xero_writeback_plan in the
-- transaction of their ledger facts; every other function is called by the sender, gateway/domain/xero_writeback.c,
-- its C room. A row is brought in line with its target one Xero call per claim: delete our Xero payment when it
-- no longer matches, create one when none exists. Each claim takes a lease (lease_owner, lease_until) and counts
-- an attempt; every function that records an outcome is fenced by the lease owner, so a sender whose lease was
-- taken over changes nothing, and by the generation, so the outcome of a call made for an older target never
-- marks a newer one in sync or refused.
--
-- A functions file is re-applied by `settled migrate`, after the numbered migrations and together with the other
-- functions files in one transaction, whenever its text changes: edit the functions here, never in the numbered
-- migration that first created the table (docs/data-model.md, "Migrations and functions files").

-- What the audit log keeps of a row.
CREATE OR REPLACE FUNCTION xero_writeback_json(w xero_writebacks) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('payment_id', w.payment_id, 'tenant_id', w.tenant_id, 'invoice_id', w.invoice_id,
                              'currency', w.currency, 'target_minor', w.target_minor, 'generation', w.generation,
                              'written_minor', w.written_minor, 'xero_payment_id', w.xero_payment_id,
                              'status', w.status, 'last_error', w.last_error)
$$;

-- Whether what Xero holds from us is what the row targets.
CREATE OR REPLACE FUNCTION xero_writeback_matches(w xero_writebacks) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT w.written_minor = w.target_minor
           AND (w.xero_payment_id IS NULL
                OR (w.written_tenant_id = w.tenant_id AND w.written_invoice_id = w.invoice_id))
$$;

-- "The Xero invoice p_invoice of tenant p_tenant should now carry, for the provider payment p_payment_id, a Xero
-- payment of exactly p_target_minor minor units of p_currency (0: none)." Called by the payment processors in the
-- transaction of the ledger facts that changed the payment's net contribution. Returns 'unchanged' when the row
-- already targets that (a replay, a refetch, a fact that does not move the amount; the day paid on may still
-- follow), or when a payment never planned is targeted 0 (no row is made); 'planned' when the target is new: the
-- generation is bumped, the row is due now (even if it was refused or dead), the sender is woken, and the change
-- is audited (actor system:payments). A row being sent right now keeps its lease: the sender finishing it sees the
-- newer generation and leaves the row due.
CREATE OR REPLACE FUNCTION xero_writeback_plan(p_org bigint, p_payment_id bigint, p_tenant uuid, p_invoice uuid,
                                               p_currency text, p_target_minor bigint, p_paid_on date,
                                               p_correlation text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_old xero_writebacks;
    v_new xero_writebacks;
    v_currency text := upper(p_currency);
    v_paid_on date := coalesce(p_paid_on, (now() AT TIME ZONE 'UTC')::date);
    v_owner bigint;
BEGIN
    IF p_target_minor IS NULL OR p_target_minor < 0 OR p_tenant IS NULL OR p_invoice IS NULL THEN
        RAISE EXCEPTION 'xero_writeback_plan: a target of at least 0 minor units, a tenant and an invoice are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM audit_lock(p_org);  -- before any row lock (see audit_lock)
    SELECT organisation_id INTO v_owner FROM payments WHERE id = p_payment_id;
    IF v_owner IS DISTINCT FROM p_org THEN
        RAISE EXCEPTION 'xero_writeback_plan: payment % is not one of organisation %', p_payment_id, p_org
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    LOOP
        SELECT * INTO v_old FROM xero_writebacks WHERE payment_id = p_payment_id FOR UPDATE;
        EXIT WHEN FOUND;
        IF p_target_minor = 0 THEN
            RETURN 'unchanged';  -- nothing was ever written for it, and nothing is wanted
        END IF;
        INSERT INTO xero_writebacks (organisation_id, payment_id, tenant_id, invoice_id, currency, target_minor,
                                     paid_on)
        VALUES (p_org, p_payment_id, p_tenant, p_invoice, v_currency, p_target_minor, v_paid_on)
        ON CONFLICT ON CONSTRAINT xero_writebacks_payment_key DO NOTHING
        RETURNING * INTO v_new;
        IF FOUND THEN
            PERFORM audit_write(p_org, 'system:payments', 'xero.writeback.plan', 'xero_writeback', v_new.id::text,
                                NULL, xero_writeback_json(v_new), p_correlation);
            PERFORM pg_notify('settled_writebacks', '');
            RETURN 'planned';
        END IF;
        -- planned by a concurrent transaction that has committed meanwhile: read it again
    END LOOP;

    IF v_old.target_minor = p_target_minor AND v_old.tenant_id = p_tenant AND v_old.invoice_id = p_invoice
       AND v_old.currency = v_currency THEN
        IF v_old.paid_on <> v_paid_on THEN  -- the date of a payment still to be written follows; no new target
            UPDATE xero_writebacks SET paid_on = v_paid_on, updated_at = now() WHERE id = v_old.id;
        END IF;
        RETURN 'unchanged';
    END IF;
    UPDATE xero_writebacks
    SET tenant_id = p_tenant, invoice_id = p_invoice, currency = v_currency, target_minor = p_target_minor,
        paid_on = v_paid_on, generation = generation + 1, status = 'pending', attempts = 0, next_attempt_at = now(),
        last_error = NULL, updated_at = now()
    WHERE id = v_old.id
    RETURNING * INTO v_new;
    PERFORM audit_write(p_org, 'system:payments', 'xero.writeback.plan', 'xero_writeback', v_new.id::text,
                        xero_writeback_json(v_old), xero_writeback_json(v_new), p_correlation);
    PERFORM pg_notify('settled_writebacks', '');
    RETURN 'planned';
END
$$;

-- Rows whose Xero payment must be created while no account is known (neither organisations.xero_payment_account
-- nor p_default_account, SETTLED_XERO_PAYMENT_ACCOUNT) become 'unconfigured', visibly and without an attempt; rows
-- 'unconfigured' whose account is now known are due again. Returns how many of each.
CREATE OR REPLACE FUNCTION xero_writeback_accounts(p_default_account text, OUT unconfigured integer,
                                                   OUT revived integer)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE xero_writebacks w
    SET status = 'unconfigured', updated_at = now(), lease_owner = NULL, lease_until = NULL,
        last_error = 'no Xero account to pay into: set SETTLED_XERO_PAYMENT_ACCOUNT or the organisation''s '
                     'xero_payment_account'
    FROM organisations o
    WHERE o.id = w.organisation_id AND w.status = 'pending' AND w.next_attempt_at <= now()
      AND (w.lease_until IS NULL OR w.lease_until <= now())
      AND w.target_minor > 0 AND w.xero_payment_id IS NULL
      AND coalesce(o.xero_payment_account, nullif(p_default_account, '')) IS NULL;
    GET DIAGNOSTICS unconfigured = ROW_COUNT;
    UPDATE xero_writebacks w
    SET status = 'pending', next_attempt_at = now(), attempts = 0, last_error = NULL, updated_at = now()
    FROM organisations o
    WHERE o.id = w.organisation_id AND w.status = 'unconfigured'
      AND coalesce(o.xero_payment_account, nullif(p_default_account, '')) IS NOT NULL;
    GET DIAGNOSTICS revived = ROW_COUNT;
END
$$;

-- Claims up to p_limit due rows for p_owner with a lease of p_lease_ms, oldest due first, skipping rows another
-- sender holds (SKIP LOCKED, and an unexpired lease), and counts the attempt. With each row: the provider payment
-- it is for (provider, object_id: the Reference), the account to pay into, and the token sets serving the target's
-- tenant and the tenant of what was written (NULL when the organisation has not connected it).
CREATE OR REPLACE FUNCTION xero_writeback_claim(p_owner text, p_lease_ms bigint, p_limit integer,
                                                p_default_account text)
RETURNS TABLE (id bigint, organisation_id bigint, payment_id bigint, provider text, object_id text, tenant_id uuid,
               invoice_id uuid, currency text, target_minor bigint, generation integer, written_minor bigint,
               xero_payment_id uuid, written_tenant_id uuid, written_invoice_id uuid, written_generation integer,
               account_code text, paid_on text, attempts integer, unsure boolean, token_id bigint,
               written_token_id bigint)
LANGUAGE sql AS $$
    WITH due AS (
        SELECT w.id FROM xero_writebacks w JOIN organisations o ON o.id = w.organisation_id
        WHERE w.status = 'pending' AND w.next_attempt_at <= now() AND (w.lease_until IS NULL OR w.lease_until <= now())
          -- a payment to create needs an account: without one, xero_writeback_accounts makes the row unconfigured
          AND (w.target_minor = 0 OR w.xero_payment_id IS NOT NULL
               OR coalesce(o.xero_payment_account, nullif(p_default_account, '')) IS NOT NULL)
        ORDER BY w.next_attempt_at LIMIT p_limit FOR UPDATE OF w SKIP LOCKED),
    claimed AS (
        UPDATE xero_writebacks w
        SET attempts = w.attempts + 1, lease_owner = p_owner,
            lease_until = now() + p_lease_ms * interval '1 millisecond',
            next_attempt_at = now() + p_lease_ms * interval '1 millisecond'
        FROM due WHERE w.id = due.id
        RETURNING w.*)
    SELECT c.id, c.organisation_id, c.payment_id, p.provider, p.object_id, c.tenant_id, c.invoice_id, c.currency,
           c.target_minor, c.generation, c.written_minor, c.xero_payment_id, c.written_tenant_id, c.written_invoice_id,
           c.written_generation, coalesce(o.xero_payment_account, nullif(p_default_account, '')), to_char(c.paid_on, 'YYYY-MM-DD'),
           c.attempts, c.unsure, t.token_id, wt.token_id
    FROM claimed c
    JOIN payments p ON p.id = c.payment_id
    JOIN organisations o ON o.id = c.organisation_id
    LEFT JOIN xero_tenants t ON t.organisation_id = c.organisation_id AND t.tenant_id = c.tenant_id
    LEFT JOIN xero_tenants wt ON wt.organisation_id = c.organisation_id AND wt.tenant_id = c.written_tenant_id
    ORDER BY c.next_attempt_at, c.id
$$;

-- Extends p_owner's lease on row p_id to p_lease_ms from now, before each Xero call, so that the lease covers the
-- call, and notes that a call is about to be made whose outcome is not yet recorded (unsure, cleared by
-- xero_writeback_step). Returns false when the lease is no longer p_owner's (the call must not be made).
CREATE OR REPLACE FUNCTION xero_writeback_renew(p_id bigint, p_owner text, p_lease_ms bigint) RETURNS boolean
LANGUAGE sql AS $$
    WITH r AS (
        UPDATE xero_writebacks
        SET lease_until = now() + p_lease_ms * interval '1 millisecond',
            next_attempt_at = now() + p_lease_ms * interval '1 millisecond', unsure = true
        WHERE id = p_id AND lease_owner = p_owner AND status = 'pending'
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM r)
$$;

-- The row p_id if p_owner holds its lease, locked FOR UPDATE after its organisation's audit lock (the order every
-- writer of the audit log keeps); NULL otherwise.
CREATE OR REPLACE FUNCTION xero_writeback_fenced(p_id bigint, p_owner text) RETURNS xero_writebacks
LANGUAGE plpgsql AS $$
DECLARE
    v_org bigint;
    v_row xero_writebacks;
BEGIN
    SELECT organisation_id INTO v_org FROM xero_writebacks WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM audit_lock(v_org);  -- before the row lock (see audit_lock)
    SELECT * INTO v_row FROM xero_writebacks WHERE id = p_id AND lease_owner = p_owner AND status = 'pending'
    FOR UPDATE;
    RETURN v_row;  -- all NULL when not found
END
$$;

-- Records a step that worked, claimed by p_owner at generation p_generation: 'deleted' (our Xero payment is
-- gone), 'written' (Xero payment p_xero_payment of p_amount minor units was created on p_invoice of p_tenant, paid
-- into p_account) or 'checked' (Xero needed nothing). The lease is released and the attempts start again; the row
-- is 'in_sync' when Xero now holds its target, else due again at once for the next step. Returns the new status,
-- or NULL when the lease was not p_owner's any more (nothing is recorded: the sender that took over repeats the
-- call under the same Idempotency-Key, or finds the payment by its Reference). Deletes and writes are audited
-- (actor system:writeback). A delete frees room on its invoice: the rows refused on that invoice are retried
-- (xero_writeback_retry), so a payment refused as above AmountDue is written once another one is taken off.
CREATE OR REPLACE FUNCTION xero_writeback_step(p_id bigint, p_owner text, p_generation integer, p_action text,
                                               p_xero_payment uuid, p_amount bigint, p_tenant uuid, p_invoice uuid,
                                               p_account text, p_correlation text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_old xero_writebacks;
    v_new xero_writebacks;
BEGIN
    IF p_action NOT IN ('deleted', 'written', 'checked') THEN
        RAISE EXCEPTION 'xero_writeback_step: unknown action %', p_action USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_old := xero_writeback_fenced(p_id, p_owner);
    IF v_old.id IS NULL THEN
        RETURN NULL;
    END IF;
    v_new := v_old;
    IF p_action = 'deleted' THEN
        v_new.written_minor := 0;
        v_new.xero_payment_id := NULL;
        v_new.written_tenant_id := NULL;
        v_new.written_invoice_id := NULL;
        v_new.written_generation := NULL;
    ELSIF p_action = 'written' THEN
        v_new.written_minor := p_amount;
        v_new.xero_payment_id := p_xero_payment;
        v_new.written_tenant_id := p_tenant;
        v_new.written_invoice_id := p_invoice;
        v_new.written_generation := p_generation;
        v_new.account_code := p_account;
    END IF;
    UPDATE xero_writebacks w
    SET written_minor = v_new.written_minor, xero_payment_id = v_new.xero_payment_id,
        written_tenant_id = v_new.written_tenant_id, written_invoice_id = v_new.written_invoice_id,
        written_generation = v_new.written_generation, account_code = v_new.account_code,
        status = CASE WHEN xero_writeback_matches(v_new) THEN 'in_sync' ELSE 'pending' END,
        attempts = 0, unsure = false, next_attempt_at = now(), lease_owner = NULL, lease_until = NULL,
        last_error = NULL, updated_at = now()
    WHERE w.id = p_id
    RETURNING * INTO v_new;
    IF p_action <> 'checked' THEN
        PERFORM audit_write(v_old.organisation_id, 'system:writeback', 'xero.writeback.' || p_action, 'xero_writeback', p_id::text,
                            xero_writeback_json(v_old), xero_writeback_json(v_new), p_correlation);
    END IF;
    IF p_action = 'deleted' THEN
        -- our payment is off that invoice, so its AmountDue went up: write-backs Xero refused there (an amount
        -- above AmountDue, an invoice PAID by our payments) get one more try, with new keys, audited as a retry
        PERFORM xero_writeback_retry(r.organisation_id, r.id, 'system:writeback', p_correlation)
        FROM xero_writebacks r
        WHERE r.organisation_id = v_old.organisation_id AND r.tenant_id = v_old.written_tenant_id
          AND r.invoice_id = v_old.written_invoice_id AND r.status = 'refused' AND r.id <> p_id
          AND r.target_minor > 0;
    END IF;
    RETURN v_new.status;
END
$$;

-- Records a step that did not work, claimed by p_owner at generation p_generation:
-- - 'refused': Xero refused it and retrying cannot help (a lock date, an account, the invoice's status or amount
--   due): 'refused' with p_error, for an admin (audited);
-- - 'transient': no answer, a 5xx, our database: due again after wait number `attempts` of p_waits (ms, the retry
--   schedule; lengthened by up to a fifth at random), 'dead' with p_error once the schedule is used up (audited);
-- - 'wait': not an attempt (a quota, a 429's Retry-After, a re-authorisation): due again in p_wait_ms.
-- When the target moved on meanwhile (a newer generation), the outcome is for an older target: the lease is
-- released and the row stays due now. Returns the new status, or NULL when the lease was not p_owner's.
CREATE OR REPLACE FUNCTION xero_writeback_fail(p_id bigint, p_owner text, p_generation integer, p_kind text,
                                               p_error text, p_waits bigint[], p_wait_ms bigint,
                                               p_correlation text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_old xero_writebacks;
    v_new xero_writebacks;
BEGIN
    IF p_kind NOT IN ('refused', 'transient', 'wait') THEN
        RAISE EXCEPTION 'xero_writeback_fail: unknown kind %', p_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_old := xero_writeback_fenced(p_id, p_owner);
    IF v_old.id IS NULL THEN
        RETURN NULL;
    END IF;
    IF v_old.generation <> p_generation THEN
        UPDATE xero_writebacks SET next_attempt_at = now(), lease_owner = NULL, lease_until = NULL, updated_at = now()
        WHERE id = p_id
        RETURNING * INTO v_new;
        RETURN v_new.status;
    END IF;
    UPDATE xero_writebacks w
    SET status = CASE WHEN p_kind = 'refused' THEN 'refused'
                      WHEN p_kind = 'transient' AND w.attempts > coalesce(cardinality(p_waits), 0) THEN 'dead'
                      ELSE 'pending' END,
        attempts = CASE WHEN p_kind = 'wait' THEN greatest(w.attempts - 1, 0) ELSE w.attempts END,
        next_attempt_at = now() + CASE WHEN p_kind = 'wait' THEN greatest(p_wait_ms, 0)
                                       ELSE coalesce(p_waits[w.attempts], 0) * (1 + random() * 0.2) END
                                  * interval '1 millisecond',
        last_error = p_error, lease_owner = NULL, lease_until = NULL, updated_at = now()
    WHERE w.id = p_id
    RETURNING * INTO v_new;
    IF v_new.status IN ('refused', 'dead') THEN
        PERFORM audit_write(v_old.organisation_id, 'system:writeback', 'xero.writeback.' || v_new.status, 'xero_writeback',
                            p_id::text, xero_writeback_json(v_old), xero_writeback_json(v_new), p_correlation);
    END IF;
    RETURN v_new.status;
END
$$;

-- Parks as 'dead' the rows whose lease expired as many times as the schedule allows attempts (p_max_attempts: the
-- senders holding them kept dying), audited; returns them for the dead-letter log line, metric and alert.
CREATE OR REPLACE FUNCTION xero_writeback_park_lost(p_max_attempts integer)
RETURNS TABLE (id bigint, organisation_id bigint, payment_id bigint, attempts integer, last_error text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_old xero_writebacks;
    v_new xero_writebacks;
BEGIN
    FOR v_old IN SELECT w.* FROM xero_writebacks w
                 WHERE w.status = 'pending' AND w.lease_owner IS NOT NULL AND w.lease_until <= now()
                   AND w.attempts >= p_max_attempts
                 ORDER BY w.organisation_id, w.id LOOP
        PERFORM audit_lock(v_old.organisation_id);
        UPDATE xero_writebacks w
        SET status = 'dead', lease_owner = NULL, lease_until = NULL, updated_at = now(),
            last_error = 'the sender writing it back stopped before finishing, ' || w.attempts || ' times'
        WHERE w.id = v_old.id AND w.status = 'pending' AND w.lease_until <= now()
        RETURNING * INTO v_new;
        CONTINUE WHEN v_new.id IS NULL;
        PERFORM audit_write(v_new.organisation_id, 'system:writeback', 'xero.writeback.dead', 'xero_writeback',
                            v_new.id::text, xero_writeback_json(v_old), xero_writeback_json(v_new), NULL);
        id := v_new.id;
        organisation_id := v_new.organisation_id;
        payment_id := v_new.payment_id;
        attempts := v_new.attempts;
        last_error := v_new.last_error;
        RETURN NEXT;
        v_new := NULL;
    END LOOP;
END
$$;

-- An admin's "try again" for a row of organisation p_org that is refused, dead or unconfigured (once the cause is
-- fixed: the lock date moved, the account restored): due now with its attempts reset, audited with p_actor. It
-- gets a new generation, so that its calls carry new Idempotency-Keys (Xero would replay the refusal stored under
-- the old ones). Returns false when the row is not the organisation's or is in no such state.
CREATE OR REPLACE FUNCTION xero_writeback_retry(p_org bigint, p_id bigint, p_actor text, p_correlation text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_old xero_writebacks;
    v_new xero_writebacks;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT * INTO v_old FROM xero_writebacks
    WHERE id = p_id AND organisation_id = p_org AND status IN ('refused', 'dead', 'unconfigured')
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE xero_writebacks
    SET status = 'pending', generation = generation + 1, attempts = 0, next_attempt_at = now(), last_error = NULL,
        updated_at = now()
    WHERE id = p_id
    RETURNING * INTO v_new;
    PERFORM audit_write(p_org, p_actor, 'xero.writeback.retry', 'xero_writeback', p_id::text,
                        xero_writeback_json(v_old), xero_writeback_json(v_new), p_correlation);
    PERFORM pg_notify('settled_writebacks', '');
    RETURN true;
END
$$;

-- Milliseconds until the earliest pending row is due (0 when one is due now), NULL when none is pending: how long
-- an idle sender may sleep.
CREATE OR REPLACE FUNCTION xero_writeback_next_due_ms() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT greatest(0, ceil(extract(epoch FROM min(next_attempt_at) - now()) * 1000))::bigint
    FROM xero_writebacks WHERE status = 'pending'
$$;
