-- SPDX-License-Identifier: MIT
-- 0002: the processing pipeline (DESIGN.md sections 1 and 3): the inbox as a leased work queue, portal
-- customers and their links to provider customers, the matching queue, the append-only hash-chained
-- audit log, the Xero connection and the Xero mirror (contacts, invoices and their lines, credit notes)
-- with the SQL functions that write it. docs/data-model.md explains every table and function.
--
-- The C worker never parses money: it hands the raw text of a Xero API response to the xero_upsert_*
-- functions as jsonb, whose numbers are exact numerics, and everything typed is derived here.

-- ---------------------------------------------------------------------------------------------------
-- 1. The inbox as a work queue

ALTER TABLE webhook_events
    ADD COLUMN lease_owner  text,         -- the worker holding a 'processing' row (fencing on completion)
    ADD COLUMN processed_at timestamptz;  -- when the row reached 'done' or 'ignored'

-- A 'processing' row is due again once its lease expired: the worker sets next_attempt_at to the lease
-- expiry when it claims a row, so one ordered index serves new, retried and abandoned rows alike. The
-- provider leads: workers claim only the providers they process, and the events of the others wait as
-- 'pending' (Stripe and GoCardless until their processing ships), which a claim must not have to walk.
DROP INDEX webhook_events_due_idx;
CREATE INDEX webhook_events_due_idx ON webhook_events (provider, next_attempt_at)
    WHERE status IN ('pending', 'failed', 'processing');

-- Parked rows, for operators (few by construction: the index costs the intake path nothing).
CREATE INDEX webhook_events_dead_idx ON webhook_events (received_at) WHERE status = 'dead';

-- Wakes idle workers (LISTEN settled_events). Statement level: one notification per INSERT statement,
-- and PostgreSQL folds identical notifications of one transaction into one. It also fires for an
-- INSERT ... ON CONFLICT DO NOTHING that stored nothing: a spurious wake-up costs one empty claim.
-- Cost: a transaction that notified holds a cluster-wide lock from just before its commit until after
-- it (so the queue stays in commit order), which serialises the commits of concurrent inserters.
-- A session that does not want to pay it (set `settled.notify = off`, e.g. in the connection's
-- options) inserts silently; workers then find its rows by their poll backstop.
CREATE FUNCTION webhook_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('settled.notify', true), '') <> 'off' THEN
        PERFORM pg_notify('settled_events', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_events_notify AFTER INSERT ON webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_events_notify();

-- Queue depth per status and provider (rows still to do, in flight, or parked; 'done' and 'ignored'
-- are history, not depth).
CREATE VIEW v_queue_depth AS
SELECT status, provider, count(*) AS count, min(next_attempt_at) AS oldest_next_attempt_at
FROM webhook_events
WHERE status IN ('pending', 'processing', 'failed', 'dead')
GROUP BY status, provider;

-- ---------------------------------------------------------------------------------------------------
-- 2. Normalisation used by matching (one definition, used by generated columns and by match_contact)

-- An email address for comparison: trimmed, lower case; empty is NULL.
CREATE FUNCTION norm_email(p text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(lower(btrim(p, E' \t\r\n')), '')
$$;

-- A name for comparison: trimmed, inner whitespace runs collapsed to one space, lower case; empty is NULL.
CREATE FUNCTION norm_name(p text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(lower(btrim(regexp_replace(p, '\s+', ' ', 'g'))), '')
$$;

-- A tax or account number for comparison: letters and digits only, upper case ("123-22 3456" and
-- "123223456" are the same number); empty is NULL, so blank numbers never match anything.
CREATE FUNCTION norm_ident(p text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(upper(regexp_replace(p, '[^[:alnum:]]+', '', 'g')), '')
$$;

-- ---------------------------------------------------------------------------------------------------
-- 3. Portal customers, their links to provider customers, and the admins' matching queue

CREATE TABLE customers (
    id                        bigserial PRIMARY KEY,
    organisation_id           bigint NOT NULL REFERENCES organisations (id),
    name                      text NOT NULL,
    email                     text,
    email_normalised          text GENERATED ALWAYS AS (norm_email(email)) STORED,
    name_normalised           text GENERATED ALWAYS AS (norm_name(name)) STORED,
    tax_number                text,
    tax_number_normalised     text GENERATED ALWAYS AS (norm_ident(tax_number)) STORED,
    account_number            text,
    account_number_normalised text GENERATED ALWAYS AS (norm_ident(account_number)) STORED,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    -- the target of organisation-scoped foreign keys: a row elsewhere can only point at a customer of
    -- its own organisation
    CONSTRAINT customers_organisation_id_id_key UNIQUE (organisation_id, id)
);
CREATE INDEX customers_email_idx ON customers (organisation_id, email_normalised);
CREATE INDEX customers_tax_number_idx ON customers (organisation_id, tax_number_normalised);
CREATE INDEX customers_account_number_idx ON customers (organisation_id, account_number_normalised);
CREATE INDEX customers_name_idx ON customers (organisation_id, name_normalised);

CREATE TABLE customer_links (
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    provider         text NOT NULL CHECK (provider IN ('xero', 'stripe', 'gocardless')),
    external_id      text NOT NULL,   -- Xero ContactID, Stripe cus_..., GoCardless CU...
    customer_id      bigint NOT NULL,
    rule             text NOT NULL
                     CHECK (rule IN ('existing', 'email', 'tax_number', 'account_number', 'name', 'created', 'admin')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customer_links_pkey PRIMARY KEY (organisation_id, provider, external_id),
    CONSTRAINT customer_links_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id)
);
CREATE INDEX customer_links_customer_idx ON customer_links (organisation_id, customer_id);

CREATE TABLE matching_queue (
    id               bigserial PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    provider         text NOT NULL CHECK (provider IN ('xero', 'stripe', 'gocardless')),
    external_id      text NOT NULL,
    external_name    text,
    reasons          jsonb NOT NULL,   -- {"kind": "ambiguous"|"none", "rule": ..., "value": ..., ...}
    candidate_ids    bigint[] NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'dismissed')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz,
    CHECK ((status = 'open') = (resolved_at IS NULL))
);
CREATE UNIQUE INDEX matching_queue_open_key ON matching_queue (organisation_id, provider, external_id)
    WHERE status = 'open';
CREATE INDEX matching_queue_org_idx ON matching_queue (organisation_id, status, created_at);

-- ---------------------------------------------------------------------------------------------------
-- 4. The audit log: append-only, hash-chained per organisation

CREATE TABLE audit_log (
    id               bigserial PRIMARY KEY,  -- assigned by the chain trigger: increases along each chain
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    at               timestamptz NOT NULL DEFAULT now(),
    actor            text NOT NULL,          -- 'system:xero', 'system:matching', 'user:<id>', ...
    action           text NOT NULL,          -- 'xero.invoice.upsert', 'match.link', ...
    entity_type      text NOT NULL,
    entity_id        text NOT NULL,
    before           jsonb,
    after            jsonb,
    correlation_id   text,
    prev_hash        bytea,                  -- NULL on the first row of an organisation
    hash             bytea NOT NULL
);
-- The chain trigger draws the id itself, after taking the organisation's lock; a column default would
-- only burn a sequence value per row.
ALTER TABLE audit_log ALTER COLUMN id DROP DEFAULT;
CREATE INDEX audit_log_chain_idx ON audit_log (organisation_id, id);
CREATE INDEX audit_log_entity_idx ON audit_log (organisation_id, entity_type, entity_id);
CREATE INDEX audit_log_correlation_idx ON audit_log (correlation_id);

-- The bytes a row's hash covers: every field but the hashes, as one JSON array (strings escaped, so no
-- two rows share a text), the time as integer microseconds since the epoch so the session's TimeZone
-- and DateStyle cannot change it.
CREATE FUNCTION audit_canonical(a audit_log) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT convert_to(jsonb_build_array(
               a.id, a.organisation_id, (extract(epoch FROM a.at) * 1000000)::bigint, a.actor, a.action,
               a.entity_type, a.entity_id, a.before, a.after, a.correlation_id)::text, 'UTF8')
$$;

-- The organisation's audit lock: the chain trigger takes it for every row, and holds it until the
-- transaction ends. A transaction that locks rows and then audits takes it FIRST (the upserts and the
-- matching functions do), so that lock order is always: organisation, then rows. Otherwise two
-- transactions touching the same rows in another order deadlock on it.
CREATE FUNCTION audit_lock(p_org bigint) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtext('audit:' || p_org))
$$;

-- Links a new row to its organisation's chain. The advisory lock serialises the writers of one
-- organisation until they commit; the id is drawn after the lock, so ids follow the chain.
CREATE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_prev bytea;
BEGIN
    IF NEW.organisation_id IS NULL THEN
        RAISE EXCEPTION 'audit_log: organisation_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    -- Under REPEATABLE READ or SERIALIZABLE the read below would use a snapshot older than the lock
    -- and could fork the chain: refuse instead.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'audit_log: audit rows must be written in READ COMMITTED transactions (this one is %)',
            current_setting('transaction_isolation') USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('audit:' || NEW.organisation_id));  -- = audit_lock()
    NEW.id := nextval(pg_get_serial_sequence('audit_log', 'id'));
    NEW.at := now();
    SELECT l.hash INTO v_prev FROM audit_log l
    WHERE l.organisation_id = NEW.organisation_id ORDER BY l.id DESC LIMIT 1;
    NEW.prev_hash := v_prev;
    NEW.hash := sha256(coalesce(v_prev, '\x'::bytea) || audit_canonical(NEW));
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_chain();

CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Writes one audit row and returns its id.
CREATE FUNCTION audit_write(p_org bigint, p_actor text, p_action text, p_entity_type text, p_entity_id text,
                            p_before jsonb, p_after jsonb, p_correlation text) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO audit_log (organisation_id, actor, action, entity_type, entity_id, before, after, correlation_id,
                           hash)
    VALUES (p_org, p_actor, p_action, p_entity_type, p_entity_id, p_before, p_after, p_correlation, '\x')
    RETURNING id
$$;

-- The id of the first row of the organisation's chain that does not verify (its hash does not cover
-- its fields, or its prev_hash is not the hash of the row before it), or NULL when the chain is whole.
-- Removing the newest rows leaves a shorter whole chain: keep the latest hash elsewhere to detect that.
CREATE FUNCTION audit_verify(org bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT s.id
    FROM (SELECT a.id, a.hash, a.prev_hash,
                 lag(a.hash) OVER (ORDER BY a.id) AS expected_prev,
                 sha256(coalesce(a.prev_hash, '\x'::bytea) || audit_canonical(a)) AS recomputed
          FROM audit_log a
          WHERE a.organisation_id = org) s
    WHERE s.prev_hash IS DISTINCT FROM s.expected_prev OR s.hash IS DISTINCT FROM s.recomputed
    ORDER BY s.id
    LIMIT 1
$$;

-- ---------------------------------------------------------------------------------------------------
-- 5. The Xero connection (tokens are encrypted by the C side; stored here as opaque bytes)

CREATE TABLE xero_tokens (
    id                 bigserial PRIMARY KEY,
    organisation_id    bigint NOT NULL REFERENCES organisations (id),
    refresh_token      bytea NOT NULL,
    access_token       bytea,
    access_expires_at  timestamptz,
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'needs_reauth')),
    last_error         text,
    auth_event_id      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    refreshed_at       timestamptz,
    CONSTRAINT xero_tokens_organisation_id_id_key UNIQUE (organisation_id, id)
);
CREATE INDEX xero_tokens_org_idx ON xero_tokens (organisation_id);

CREATE TABLE xero_tenants (
    tenant_id        uuid NOT NULL,
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    token_id         bigint NOT NULL,
    tenant_name      text,
    tenant_type      text,
    connection_id    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, tenant_id),
    CONSTRAINT xero_tenants_token_fkey FOREIGN KEY (organisation_id, token_id)
        REFERENCES xero_tokens (organisation_id, id)
);
CREATE INDEX xero_tenants_tenant_idx ON xero_tenants (tenant_id);
CREATE INDEX xero_tenants_token_idx ON xero_tenants (token_id);

-- ---------------------------------------------------------------------------------------------------
-- 6. Xero values: dates and exact amounts

-- A Xero timestamp: "/Date(1552329729002)/", "/Date(1552329729002+0000)/" (the offset is informational,
-- the milliseconds are UTC epoch), the same with escaped slashes ("\/Date(...)\/"), ISO
-- "2019-03-07T00:00:00" (UTC), with "Z" or an offset, or a date "2019-03-07" (UTC midnight).
-- NULL or blank is NULL; anything else raises invalid_datetime_format.
CREATE FUNCTION xero_parse_date(p text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    s text := btrim(p);
    m text[];
    v timestamptz;
    off interval;
BEGIN
    IF s IS NULL OR s = '' THEN
        RETURN NULL;
    END IF;
    m := regexp_match(s, '^\\?/Date\((-?[0-9]{1,15})(?:[+-][0-9]{4})?\)\\?/$');
    IF m IS NOT NULL THEN
        -- integer milliseconds below 2^53: the product is exact
        RETURN timestamptz '1970-01-01 00:00:00+00' + m[1]::bigint * interval '1 millisecond';
    END IF;
    m := regexp_match(s, '^([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[T ]([0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?)'
                         '(Z|z|([+-])([0-9]{2}):?([0-9]{2})?)?)?$');
    IF m IS NULL THEN
        RAISE EXCEPTION 'xero_parse_date: not a Xero date: "%"', left(s, 100)
            USING ERRCODE = 'invalid_datetime_format';
    END IF;
    BEGIN
        v := (m[1] || ' ' || coalesce(m[2], '00:00:00'))::timestamp AT TIME ZONE 'UTC';
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'xero_parse_date: not a valid date or time: "%"', left(s, 100)
            USING ERRCODE = 'invalid_datetime_format';
    END;
    IF m[4] IS NOT NULL THEN
        off := make_interval(hours => m[5]::int, mins => coalesce(m[6], '0')::int);
        IF m[4] = '+' THEN v := v - off; ELSE v := v + off; END IF;
    END IF;
    RETURN v;
END
$$;

-- A Xero day (Date, DueDate): the date as written for ISO forms ("2019-03-07T00:00:00" is 7 March
-- whatever the offset), the UTC day for "/Date(ms+hhmm)/". Callers pass DateString before Date.
CREATE FUNCTION xero_parse_day(p text) RETURNS date
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    s text := btrim(p);
    v timestamptz := xero_parse_date(s);  -- validates every form, raises on garbage
BEGIN
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    IF s ~ '^[0-9]{4}-' THEN
        RETURN left(s, 10)::date;
    END IF;
    RETURN (v AT TIME ZONE 'UTC')::date;
END
$$;

-- An amount, quantity or rate from a Xero JSON value, exactly: a JSON number (jsonb keeps it as an exact
-- numeric) or a decimal string. NULL or JSON null is NULL. A value with more than 4 significant
-- decimals or 15 integer digits would be rounded by numeric(19,4): refuse it rather than round money.
CREATE FUNCTION xero_decimal(p jsonb, p_what text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    t text;
    v numeric;
BEGIN
    IF p IS NULL OR jsonb_typeof(p) = 'null' THEN
        RETURN NULL;
    END IF;
    t := btrim(p #>> '{}');
    IF jsonb_typeof(p) = 'number' OR (jsonb_typeof(p) = 'string' AND t ~ '^[+-]?[0-9]+(\.[0-9]+)?$') THEN
        v := t::numeric;
    ELSE
        RAISE EXCEPTION 'xero: % is not a decimal number: %', p_what, left(p::text, 100)
            USING ERRCODE = 'invalid_text_representation';
    END IF;
    IF scale(trim_scale(v)) > 4 THEN
        RAISE EXCEPTION 'xero: % has more than 4 decimal places (% would be rounded): refused', p_what, t
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    IF abs(v) >= 1e15 THEN
        RAISE EXCEPTION 'xero: % is too large for numeric(19,4): %', p_what, t
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    RETURN v;
END
$$;

-- A required or optional uuid field of a Xero object, with an error that names the field.
CREATE FUNCTION xero_uuid(p_obj jsonb, p_field text, p_required boolean) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    t text := btrim(p_obj ->> p_field);
BEGIN
    IF t IS NULL OR t = '' THEN
        IF p_required THEN
            RAISE EXCEPTION 'xero: % is missing', p_field USING ERRCODE = 'not_null_violation';
        END IF;
        RETURN NULL;
    END IF;
    IF t !~ '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$' THEN
        RAISE EXCEPTION 'xero: % is not a uuid: "%"', p_field, left(t, 100)
            USING ERRCODE = 'invalid_text_representation';
    END IF;
    RETURN t::uuid;
END
$$;

-- Checks the arguments every upsert takes and returns the document's array of records.
CREATE FUNCTION xero_doc_records(p_fn text, p_org bigint, p_tenant uuid, p_doc jsonb, p_key text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_org IS NULL OR p_tenant IS NULL THEN
        RAISE EXCEPTION '%: organisation and tenant are required', p_fn USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_doc IS NULL OR jsonb_typeof(p_doc) <> 'object' OR jsonb_typeof(p_doc -> p_key) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION '%: the document is not a Xero response with a "%" array', p_fn, p_key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN p_doc -> p_key;
END
$$;

-- A timestamp as audit JSON: UTC, milliseconds (Xero's precision), independent of the session.
CREATE FUNCTION xero_ts_json(p timestamptz) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_jsonb(to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
$$;

-- ---------------------------------------------------------------------------------------------------
-- 7. The Xero mirror. Every row carries its organisation; keys start with (organisation_id, tenant_id),
-- so two organisations connected to the same Xero tenant keep separate mirrors.

CREATE TABLE xero_contacts (
    organisation_id   bigint NOT NULL REFERENCES organisations (id),
    tenant_id         uuid NOT NULL,
    contact_id        uuid NOT NULL,
    name              text,
    email             text,
    email_normalised  text GENERATED ALWAYS AS (norm_email(email)) STORED,
    tax_number        text,
    account_number    text,
    contact_status    text,
    is_customer       boolean,
    is_supplier       boolean,
    updated_date_utc  timestamptz NOT NULL,
    raw               jsonb NOT NULL,
    fetched_at        timestamptz NOT NULL DEFAULT now(),
    customer_id       bigint,
    PRIMARY KEY (organisation_id, tenant_id, contact_id),
    CONSTRAINT xero_contacts_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id)
);
CREATE INDEX xero_contacts_customer_idx ON xero_contacts (organisation_id, customer_id);
CREATE INDEX xero_contacts_updated_idx ON xero_contacts (organisation_id, tenant_id, updated_date_utc);

CREATE TABLE xero_invoices (
    organisation_id    bigint NOT NULL REFERENCES organisations (id),
    tenant_id          uuid NOT NULL,
    invoice_id         uuid NOT NULL,
    invoice_number     text,
    type               text NOT NULL,   -- ACCREC (sales) or ACCPAY (bills)
    status             text,
    contact_id         uuid,
    reference          text,
    currency_code      text,
    date               date,
    due_date           date,
    line_amount_types  text,
    sub_total          numeric(19, 4),
    total_tax          numeric(19, 4),
    total              numeric(19, 4),
    amount_due         numeric(19, 4),
    amount_paid        numeric(19, 4),
    amount_credited    numeric(19, 4),  -- NULL when the response omits it (the single-GET example does)
    updated_date_utc   timestamptz NOT NULL,
    raw                jsonb NOT NULL,
    fetched_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, tenant_id, invoice_id)
);
CREATE INDEX xero_invoices_contact_idx ON xero_invoices (organisation_id, tenant_id, contact_id);
CREATE INDEX xero_invoices_updated_idx ON xero_invoices (organisation_id, tenant_id, updated_date_utc);

CREATE TABLE xero_invoice_lines (
    organisation_id  bigint NOT NULL,
    tenant_id        uuid NOT NULL,
    invoice_id       uuid NOT NULL,
    line_item_id     uuid NOT NULL,     -- Xero's LineItemID, or md5('<InvoiceID>:<position>') when absent
    synthetic_id     boolean NOT NULL,  -- true when line_item_id was derived, not given by Xero
    position         integer NOT NULL,  -- 1-based order in LineItems
    description      text,
    quantity         numeric(19, 4),
    unit_amount      numeric(19, 4),    -- 4 decimals with unitdp=4
    line_amount      numeric(19, 4),
    tax_amount       numeric(19, 4),
    discount_rate    numeric(19, 4),
    account_code     text,
    item_code        text,
    tax_type         text,
    tracking         jsonb,
    PRIMARY KEY (organisation_id, tenant_id, invoice_id, line_item_id),
    CONSTRAINT xero_invoice_lines_position_key UNIQUE (organisation_id, tenant_id, invoice_id, position),
    CONSTRAINT xero_invoice_lines_invoice_fkey FOREIGN KEY (organisation_id, tenant_id, invoice_id)
        REFERENCES xero_invoices (organisation_id, tenant_id, invoice_id) ON DELETE CASCADE
);

CREATE TABLE xero_credit_notes (
    organisation_id     bigint NOT NULL REFERENCES organisations (id),
    tenant_id           uuid NOT NULL,
    credit_note_id      uuid NOT NULL,
    credit_note_number  text,
    type                text NOT NULL,  -- ACCRECCREDIT or ACCPAYCREDIT
    status              text,
    contact_id          uuid,
    currency_code       text,
    date                date,
    sub_total           numeric(19, 4),
    total_tax           numeric(19, 4),
    total               numeric(19, 4),
    remaining_credit    numeric(19, 4),
    -- [{"invoice_id": uuid, "amount": exact JSON number, "date": "YYYY-MM-DD"}, ...] in Xero's order
    allocations         jsonb NOT NULL DEFAULT '[]',
    updated_date_utc    timestamptz NOT NULL,
    raw                 jsonb NOT NULL,
    fetched_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, tenant_id, credit_note_id)
);
CREATE INDEX xero_credit_notes_contact_idx ON xero_credit_notes (organisation_id, tenant_id, contact_id);
CREATE INDEX xero_credit_notes_allocations_idx ON xero_credit_notes USING gin (allocations jsonb_path_ops);

CREATE TABLE xero_sync_state (
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    tenant_id        uuid NOT NULL,
    resource         text NOT NULL CHECK (resource IN ('invoices', 'contacts', 'creditnotes')),
    high_water       timestamptz,   -- the next sweep's If-Modified-Since
    last_run_at      timestamptz,
    last_fetched     integer,
    last_changed     integer,
    last_unchanged   integer,
    PRIMARY KEY (organisation_id, tenant_id, resource)
);

-- The typed state of a mirror row, as audit before/after.
CREATE FUNCTION xero_contact_json(c xero_contacts) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN c.contact_id IS NULL THEN NULL ELSE jsonb_build_object(
        'tenant_id', c.tenant_id, 'contact_id', c.contact_id, 'name', c.name, 'email', c.email,
        'tax_number', c.tax_number, 'account_number', c.account_number, 'contact_status', c.contact_status,
        'is_customer', c.is_customer, 'is_supplier', c.is_supplier,
        'updated_date_utc', xero_ts_json(c.updated_date_utc)) END
$$;

CREATE FUNCTION xero_invoice_json(i xero_invoices) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN i.invoice_id IS NULL THEN NULL ELSE jsonb_build_object(
        'tenant_id', i.tenant_id, 'invoice_id', i.invoice_id, 'invoice_number', i.invoice_number, 'type', i.type,
        'status', i.status, 'contact_id', i.contact_id, 'reference', i.reference, 'currency_code', i.currency_code,
        'date', i.date, 'due_date', i.due_date, 'line_amount_types', i.line_amount_types,
        'sub_total', i.sub_total, 'total_tax', i.total_tax, 'total', i.total, 'amount_due', i.amount_due,
        'amount_paid', i.amount_paid, 'amount_credited', i.amount_credited,
        'updated_date_utc', xero_ts_json(i.updated_date_utc),
        'lines', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                      'line_item_id', l.line_item_id, 'position', l.position, 'description', l.description,
                      'quantity', l.quantity, 'unit_amount', l.unit_amount, 'line_amount', l.line_amount,
                      'tax_amount', l.tax_amount, 'discount_rate', l.discount_rate, 'account_code', l.account_code,
                      'item_code', l.item_code, 'tax_type', l.tax_type) ORDER BY l.position), '[]')
                  FROM xero_invoice_lines l
                  WHERE l.organisation_id = i.organisation_id AND l.tenant_id = i.tenant_id
                    AND l.invoice_id = i.invoice_id)) END
$$;

CREATE FUNCTION xero_credit_note_json(n xero_credit_notes) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN n.credit_note_id IS NULL THEN NULL ELSE jsonb_build_object(
        'tenant_id', n.tenant_id, 'credit_note_id', n.credit_note_id, 'credit_note_number', n.credit_note_number,
        'type', n.type, 'status', n.status, 'contact_id', n.contact_id, 'currency_code', n.currency_code,
        'date', n.date, 'sub_total', n.sub_total, 'total_tax', n.total_tax, 'total', n.total,
        'remaining_credit', n.remaining_credit, 'allocations', n.allocations,
        'updated_date_utc', xero_ts_json(n.updated_date_utc)) END
$$;

-- ---------------------------------------------------------------------------------------------------
-- 8. Matching provider customers to portal customers

-- Links (p_org, p_provider, p_external_id) to a customer with rule p_rule and audits it ('match.link').
-- Returns true when it made the link, false when exactly this link already existed (nothing written).
-- A link to another customer is an error: change links deliberately, never by accident. For Xero, sets
-- xero_contacts.customer_id; resolves the open matching-queue entry of that external id.
CREATE FUNCTION match_link(p_org bigint, p_provider text, p_external_id text, p_customer_id bigint, p_rule text,
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
CREATE FUNCTION match_enqueue(p_org bigint, p_provider text, p_external_id text, p_external_name text,
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

-- Matches a mirrored Xero contact to a portal customer of its organisation. In order: an existing link
-- ('existing'); exact normalised email, then tax number, then account number, then name: one customer
-- links ('email', 'tax_number', 'account_number', 'name'), several queue the contact ('ambiguous') and
-- stop; no rule matches: with p_create a customer is created from the contact and linked ('created'),
-- otherwise the contact is queued ('none'). Contacts Xero flags as suppliers only, and archived
-- contacts, are never created as customers (queued 'none'). Every decision is audited; running it
-- again changes nothing and writes nothing.
CREATE FUNCTION match_contact(p_org bigint, p_tenant uuid, p_contact_id uuid, p_correlation text, p_create boolean)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    c xero_contacts;
    v_ext text := p_contact_id::text;
    v_link bigint;
    v_rule text;
    v_value text;
    v_ids bigint[];
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

    SELECT l.customer_id INTO v_link FROM customer_links l
    WHERE l.organisation_id = p_org AND l.provider = 'xero' AND l.external_id = v_ext;
    IF FOUND THEN
        IF c.customer_id IS DISTINCT FROM v_link THEN
            UPDATE xero_contacts x SET customer_id = v_link
            WHERE x.organisation_id = p_org AND x.contact_id = p_contact_id;
        END IF;
        RETURN 'existing';
    END IF;

    FOREACH v_rule IN ARRAY ARRAY['email', 'tax_number', 'account_number', 'name'] LOOP
        v_value := CASE v_rule
            WHEN 'email' THEN norm_email(c.email)
            WHEN 'tax_number' THEN norm_ident(c.tax_number)
            WHEN 'account_number' THEN norm_ident(c.account_number)
            ELSE norm_name(c.name) END;
        CONTINUE WHEN v_value IS NULL;
        -- one query per rule, so that each uses its index
        IF v_rule = 'email' THEN
            SELECT coalesce(array_agg(k.id ORDER BY k.id), '{}') INTO v_ids FROM customers k
            WHERE k.organisation_id = p_org AND k.email_normalised = v_value;
        ELSIF v_rule = 'tax_number' THEN
            SELECT coalesce(array_agg(k.id ORDER BY k.id), '{}') INTO v_ids FROM customers k
            WHERE k.organisation_id = p_org AND k.tax_number_normalised = v_value;
        ELSIF v_rule = 'account_number' THEN
            SELECT coalesce(array_agg(k.id ORDER BY k.id), '{}') INTO v_ids FROM customers k
            WHERE k.organisation_id = p_org AND k.account_number_normalised = v_value;
        ELSE
            SELECT coalesce(array_agg(k.id ORDER BY k.id), '{}') INTO v_ids FROM customers k
            WHERE k.organisation_id = p_org AND k.name_normalised = v_value;
        END IF;
        IF cardinality(v_ids) = 1 THEN
            PERFORM match_link(p_org, 'xero', v_ext, v_ids[1], v_rule, 'system:matching', p_correlation);
            RETURN v_rule;
        ELSIF cardinality(v_ids) > 1 THEN
            PERFORM match_enqueue(p_org, 'xero', v_ext, c.name,
                jsonb_build_object('kind', 'ambiguous', 'rule', v_rule, 'value', v_value, 'tenant_id', p_tenant),
                v_ids, p_correlation);
            RETURN 'ambiguous';
        END IF;
    END LOOP;

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

-- ---------------------------------------------------------------------------------------------------
-- 9. Upserts from Xero API responses. The guard (DESIGN.md promise 3): a stored row with a newer
-- UpdatedDateUTC wins ('stale', nothing changes); an incoming one as new or newer overwrites (on a tie
-- the refetched state wins): 'unchanged' when the raw record is identical (only fetched_at moves),
-- otherwise 'updated'; a new record is 'inserted'. Inserted and updated records are audited.
-- A bad document raises and, the caller's transaction being aborted, changes nothing.
-- Each upsert takes its organisation's audit lock (audit_lock) before it touches a row and holds it until
-- the transaction ends: one event per transaction, short transactions; organisations never wait on
-- each other.

CREATE FUNCTION xero_upsert_contacts(p_org bigint, p_tenant uuid, p_doc jsonb, p_correlation text,
                                     p_create_customers boolean)
RETURNS TABLE (contact_id uuid, outcome text, match text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_records jsonb;
    v_el jsonb;
    v_new xero_contacts;
    v_old xero_contacts;
    v_link bigint;
BEGIN
    v_records := xero_doc_records('xero_upsert_contacts', p_org, p_tenant, p_doc, 'Contacts');
    PERFORM audit_lock(p_org);  -- before any row lock (see audit_lock)
    FOR v_el IN SELECT e FROM jsonb_array_elements(v_records) AS e LOOP
        IF jsonb_typeof(v_el) <> 'object' THEN
            RAISE EXCEPTION 'xero_upsert_contacts: a Contacts element is not an object'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_new := NULL;
        v_new.organisation_id := p_org;
        v_new.tenant_id := p_tenant;
        v_new.contact_id := xero_uuid(v_el, 'ContactID', true);
        v_new.name := v_el ->> 'Name';
        v_new.email := nullif(btrim(v_el ->> 'EmailAddress'), '');
        v_new.tax_number := nullif(btrim(v_el ->> 'TaxNumber'), '');
        v_new.account_number := nullif(btrim(v_el ->> 'AccountNumber'), '');
        v_new.contact_status := v_el ->> 'ContactStatus';
        v_new.is_customer := (v_el ->> 'IsCustomer')::boolean;
        v_new.is_supplier := (v_el ->> 'IsSupplier')::boolean;
        v_new.updated_date_utc := xero_parse_date(coalesce(v_el ->> 'UpdatedDateUTC', v_el ->> 'UpdatedDateUTCString'));
        IF v_new.updated_date_utc IS NULL THEN
            RAISE EXCEPTION 'xero_upsert_contacts: contact % has no UpdatedDateUTC', v_new.contact_id
                USING ERRCODE = 'not_null_violation';
        END IF;
        v_new.raw := v_el;

        contact_id := v_new.contact_id;
        match := NULL;
        LOOP
            SELECT * INTO v_old FROM xero_contacts x
            WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.contact_id = v_new.contact_id
            FOR UPDATE;
            IF FOUND THEN
                IF v_old.updated_date_utc > v_new.updated_date_utc THEN
                    outcome := 'stale';
                ELSIF v_old.raw = v_new.raw THEN
                    outcome := 'unchanged';
                    UPDATE xero_contacts x SET fetched_at = now()
                    WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.contact_id = v_new.contact_id;
                ELSE
                    outcome := 'updated';
                    UPDATE xero_contacts x
                    SET name = v_new.name, email = v_new.email, tax_number = v_new.tax_number,
                        account_number = v_new.account_number, contact_status = v_new.contact_status,
                        is_customer = v_new.is_customer, is_supplier = v_new.is_supplier,
                        updated_date_utc = v_new.updated_date_utc, raw = v_new.raw, fetched_at = now()
                    WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.contact_id = v_new.contact_id;
                END IF;
                EXIT;
            END IF;
            INSERT INTO xero_contacts (organisation_id, tenant_id, contact_id, name, email, tax_number, account_number,
                                       contact_status, is_customer, is_supplier, updated_date_utc, raw)
            VALUES (p_org, p_tenant, v_new.contact_id, v_new.name, v_new.email, v_new.tax_number, v_new.account_number,
                    v_new.contact_status, v_new.is_customer, v_new.is_supplier, v_new.updated_date_utc, v_new.raw)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                outcome := 'inserted';
                v_old := NULL;
                EXIT;
            END IF;
            -- a concurrent transaction inserted it first: lock and compare with its row
        END LOOP;

        IF outcome IN ('inserted', 'updated') THEN
            PERFORM audit_write(p_org, 'system:xero', 'xero.contact.upsert', 'xero_contact', v_new.contact_id::text,
                xero_contact_json(v_old), xero_contact_json(v_new), p_correlation);
            SELECT l.customer_id INTO v_link FROM customer_links l
            WHERE l.organisation_id = p_org AND l.provider = 'xero' AND l.external_id = v_new.contact_id::text;
            IF FOUND THEN
                -- already linked: keep the mirror's customer_id in step, no matching
                UPDATE xero_contacts x SET customer_id = v_link
                WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.contact_id = v_new.contact_id
                  AND x.customer_id IS DISTINCT FROM v_link;
            ELSE
                match := match_contact(p_org, p_tenant, v_new.contact_id, p_correlation, p_create_customers);
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Replaces the lines of one invoice with those of its LineItems array.
CREATE FUNCTION xero_replace_invoice_lines(p_org bigint, p_tenant uuid, p_invoice_id uuid, p_lines jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_typeof(p_lines) <> 'array' THEN
        RAISE EXCEPTION 'xero: invoice % has LineItems that are not an array', p_invoice_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_lines) l WHERE jsonb_typeof(l) <> 'object') THEN
        RAISE EXCEPTION 'xero: invoice % has a line item that is not an object', p_invoice_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_lines) l
               WHERE nullif(btrim(l ->> 'LineItemID'), '') IS NOT NULL
               GROUP BY lower(btrim(l ->> 'LineItemID')) HAVING count(*) > 1) THEN
        RAISE EXCEPTION 'xero: invoice % repeats a LineItemID', p_invoice_id USING ERRCODE = 'unique_violation';
    END IF;
    DELETE FROM xero_invoice_lines l
    WHERE l.organisation_id = p_org AND l.tenant_id = p_tenant AND l.invoice_id = p_invoice_id;
    INSERT INTO xero_invoice_lines (organisation_id, tenant_id, invoice_id, line_item_id, synthetic_id, position,
                                    description, quantity, unit_amount, line_amount, tax_amount, discount_rate,
                                    account_code, item_code, tax_type, tracking)
    SELECT p_org, p_tenant, p_invoice_id,
           coalesce(xero_uuid(t.l, 'LineItemID', false), md5(p_invoice_id::text || ':' || t.n)::uuid),
           xero_uuid(t.l, 'LineItemID', false) IS NULL,
           t.n, t.l ->> 'Description',
           xero_decimal(t.l -> 'Quantity', 'Quantity'),
           xero_decimal(t.l -> 'UnitAmount', 'UnitAmount'),
           xero_decimal(t.l -> 'LineAmount', 'LineAmount'),
           xero_decimal(t.l -> 'TaxAmount', 'TaxAmount'),
           xero_decimal(t.l -> 'DiscountRate', 'DiscountRate'),
           t.l ->> 'AccountCode', t.l ->> 'ItemCode', t.l ->> 'TaxType', t.l -> 'Tracking'
    FROM jsonb_array_elements(p_lines) WITH ORDINALITY AS t(l, n)
    ORDER BY t.n;
END
$$;

-- Invoices. On inserted and updated the lines are replaced from LineItems in the same transaction.
-- A record without a LineItems key (GET /Invoices without page= omits them) keeps its stored lines.
CREATE FUNCTION xero_upsert_invoices(p_org bigint, p_tenant uuid, p_doc jsonb, p_correlation text)
RETURNS TABLE (invoice_id uuid, outcome text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_records jsonb;
    v_el jsonb;
    v_new xero_invoices;
    v_old xero_invoices;
    v_before jsonb;
BEGIN
    v_records := xero_doc_records('xero_upsert_invoices', p_org, p_tenant, p_doc, 'Invoices');
    PERFORM audit_lock(p_org);  -- before any row lock (see audit_lock)
    FOR v_el IN SELECT e FROM jsonb_array_elements(v_records) AS e LOOP
        IF jsonb_typeof(v_el) <> 'object' THEN
            RAISE EXCEPTION 'xero_upsert_invoices: an Invoices element is not an object'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_new := NULL;
        v_new.organisation_id := p_org;
        v_new.tenant_id := p_tenant;
        v_new.invoice_id := xero_uuid(v_el, 'InvoiceID', true);
        v_new.invoice_number := v_el ->> 'InvoiceNumber';
        v_new.type := v_el ->> 'Type';
        IF v_new.type IS NULL THEN
            RAISE EXCEPTION 'xero_upsert_invoices: invoice % has no Type', v_new.invoice_id
                USING ERRCODE = 'not_null_violation';
        END IF;
        v_new.status := v_el ->> 'Status';
        v_new.contact_id := xero_uuid(v_el -> 'Contact', 'ContactID', false);
        v_new.reference := v_el ->> 'Reference';
        v_new.currency_code := v_el ->> 'CurrencyCode';
        v_new.date := xero_parse_day(coalesce(nullif(v_el ->> 'DateString', ''), v_el ->> 'Date'));
        v_new.due_date := xero_parse_day(coalesce(nullif(v_el ->> 'DueDateString', ''), v_el ->> 'DueDate'));
        v_new.line_amount_types := v_el ->> 'LineAmountTypes';
        v_new.sub_total := xero_decimal(v_el -> 'SubTotal', 'SubTotal');
        v_new.total_tax := xero_decimal(v_el -> 'TotalTax', 'TotalTax');
        v_new.total := xero_decimal(v_el -> 'Total', 'Total');
        v_new.amount_due := xero_decimal(v_el -> 'AmountDue', 'AmountDue');
        v_new.amount_paid := xero_decimal(v_el -> 'AmountPaid', 'AmountPaid');
        v_new.amount_credited := xero_decimal(v_el -> 'AmountCredited', 'AmountCredited');
        v_new.updated_date_utc := xero_parse_date(coalesce(v_el ->> 'UpdatedDateUTC', v_el ->> 'UpdatedDateUTCString'));
        IF v_new.updated_date_utc IS NULL THEN
            RAISE EXCEPTION 'xero_upsert_invoices: invoice % has no UpdatedDateUTC', v_new.invoice_id
                USING ERRCODE = 'not_null_violation';
        END IF;
        v_new.raw := v_el;

        invoice_id := v_new.invoice_id;
        LOOP
            SELECT * INTO v_old FROM xero_invoices x
            WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.invoice_id = v_new.invoice_id
            FOR UPDATE;
            IF FOUND THEN
                IF v_old.updated_date_utc > v_new.updated_date_utc THEN
                    outcome := 'stale';
                ELSIF v_old.raw = v_new.raw THEN
                    outcome := 'unchanged';
                    UPDATE xero_invoices x SET fetched_at = now()
                    WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.invoice_id = v_new.invoice_id;
                ELSE
                    outcome := 'updated';
                    v_before := xero_invoice_json(v_old);
                    UPDATE xero_invoices x
                    SET invoice_number = v_new.invoice_number, type = v_new.type, status = v_new.status,
                        contact_id = v_new.contact_id, reference = v_new.reference,
                        currency_code = v_new.currency_code, date = v_new.date, due_date = v_new.due_date,
                        line_amount_types = v_new.line_amount_types, sub_total = v_new.sub_total,
                        total_tax = v_new.total_tax, total = v_new.total, amount_due = v_new.amount_due,
                        amount_paid = v_new.amount_paid, amount_credited = v_new.amount_credited,
                        updated_date_utc = v_new.updated_date_utc, raw = v_new.raw, fetched_at = now()
                    WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.invoice_id = v_new.invoice_id;
                END IF;
                EXIT;
            END IF;
            INSERT INTO xero_invoices (organisation_id, tenant_id, invoice_id, invoice_number, type, status, contact_id,
                                       reference, currency_code, date, due_date, line_amount_types, sub_total,
                                       total_tax, total, amount_due, amount_paid, amount_credited, updated_date_utc,
                                       raw)
            VALUES (p_org, p_tenant, v_new.invoice_id, v_new.invoice_number, v_new.type, v_new.status,
                    v_new.contact_id, v_new.reference, v_new.currency_code, v_new.date, v_new.due_date,
                    v_new.line_amount_types, v_new.sub_total, v_new.total_tax, v_new.total, v_new.amount_due,
                    v_new.amount_paid, v_new.amount_credited, v_new.updated_date_utc, v_new.raw)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                outcome := 'inserted';
                v_before := NULL;
                EXIT;
            END IF;
        END LOOP;

        IF outcome IN ('inserted', 'updated') THEN
            IF v_el ? 'LineItems' THEN
                PERFORM xero_replace_invoice_lines(p_org, p_tenant, v_new.invoice_id, v_el -> 'LineItems');
            END IF;
            SELECT * INTO v_new FROM xero_invoices x
            WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.invoice_id = v_new.invoice_id;
            PERFORM audit_write(p_org, 'system:xero', 'xero.invoice.upsert', 'xero_invoice', v_new.invoice_id::text,
                v_before, xero_invoice_json(v_new), p_correlation);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The allocations of a credit note, normalised: [{"invoice_id", "amount", "date"}] in Xero's order.
CREATE FUNCTION xero_credit_note_allocations(p_cn jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := p_cn -> 'Allocations';
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN '[]';
    END IF;
    IF jsonb_typeof(v) <> 'array' THEN
        RAISE EXCEPTION 'xero: credit note Allocations is not an array' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN coalesce((
        SELECT jsonb_agg(jsonb_build_object(
                   'invoice_id', xero_uuid(a -> 'Invoice', 'InvoiceID', true),
                   'amount', to_jsonb(xero_decimal(a -> 'Amount', 'Allocations.Amount')),
                   'date', xero_parse_day(a ->> 'Date')) ORDER BY n)
        FROM jsonb_array_elements(v) WITH ORDINALITY AS t(a, n)), '[]');
END
$$;

-- Credit notes. invoice_ids: for an inserted or updated credit note, the invoices its allocations name,
-- before and after (an invoice that lost an allocation changed too), so the worker refetches them: the
-- invoice's AmountCredited from Xero is authoritative. Empty for stale and unchanged.
CREATE FUNCTION xero_upsert_credit_notes(p_org bigint, p_tenant uuid, p_doc jsonb, p_correlation text)
RETURNS TABLE (credit_note_id uuid, outcome text, invoice_ids uuid[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_records jsonb;
    v_el jsonb;
    v_new xero_credit_notes;
    v_old xero_credit_notes;
BEGIN
    v_records := xero_doc_records('xero_upsert_credit_notes', p_org, p_tenant, p_doc, 'CreditNotes');
    PERFORM audit_lock(p_org);  -- before any row lock (see audit_lock)
    FOR v_el IN SELECT e FROM jsonb_array_elements(v_records) AS e LOOP
        IF jsonb_typeof(v_el) <> 'object' THEN
            RAISE EXCEPTION 'xero_upsert_credit_notes: a CreditNotes element is not an object'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_new := NULL;
        v_new.organisation_id := p_org;
        v_new.tenant_id := p_tenant;
        v_new.credit_note_id := xero_uuid(v_el, 'CreditNoteID', true);
        v_new.credit_note_number := v_el ->> 'CreditNoteNumber';
        v_new.type := v_el ->> 'Type';
        IF v_new.type IS NULL THEN
            RAISE EXCEPTION 'xero_upsert_credit_notes: credit note % has no Type', v_new.credit_note_id
                USING ERRCODE = 'not_null_violation';
        END IF;
        v_new.status := v_el ->> 'Status';
        v_new.contact_id := xero_uuid(v_el -> 'Contact', 'ContactID', false);
        v_new.currency_code := v_el ->> 'CurrencyCode';
        v_new.date := xero_parse_day(coalesce(nullif(v_el ->> 'DateString', ''), v_el ->> 'Date'));
        v_new.sub_total := xero_decimal(v_el -> 'SubTotal', 'SubTotal');
        v_new.total_tax := xero_decimal(v_el -> 'TotalTax', 'TotalTax');
        v_new.total := xero_decimal(v_el -> 'Total', 'Total');
        v_new.remaining_credit := xero_decimal(v_el -> 'RemainingCredit', 'RemainingCredit');
        v_new.allocations := xero_credit_note_allocations(v_el);
        v_new.updated_date_utc := xero_parse_date(coalesce(v_el ->> 'UpdatedDateUTC', v_el ->> 'UpdatedDateUTCString'));
        IF v_new.updated_date_utc IS NULL THEN
            RAISE EXCEPTION 'xero_upsert_credit_notes: credit note % has no UpdatedDateUTC', v_new.credit_note_id
                USING ERRCODE = 'not_null_violation';
        END IF;
        v_new.raw := v_el;

        credit_note_id := v_new.credit_note_id;
        invoice_ids := '{}';
        LOOP
            SELECT * INTO v_old FROM xero_credit_notes x
            WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant AND x.credit_note_id = v_new.credit_note_id
            FOR UPDATE;
            IF FOUND THEN
                IF v_old.updated_date_utc > v_new.updated_date_utc THEN
                    outcome := 'stale';
                ELSIF v_old.raw = v_new.raw THEN
                    outcome := 'unchanged';
                    UPDATE xero_credit_notes x SET fetched_at = now()
                    WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant
                      AND x.credit_note_id = v_new.credit_note_id;
                ELSE
                    outcome := 'updated';
                    UPDATE xero_credit_notes x
                    SET credit_note_number = v_new.credit_note_number, type = v_new.type, status = v_new.status,
                        contact_id = v_new.contact_id, currency_code = v_new.currency_code, date = v_new.date,
                        sub_total = v_new.sub_total, total_tax = v_new.total_tax, total = v_new.total,
                        remaining_credit = v_new.remaining_credit, allocations = v_new.allocations,
                        updated_date_utc = v_new.updated_date_utc, raw = v_new.raw, fetched_at = now()
                    WHERE x.organisation_id = p_org AND x.tenant_id = p_tenant
                      AND x.credit_note_id = v_new.credit_note_id;
                END IF;
                EXIT;
            END IF;
            INSERT INTO xero_credit_notes (organisation_id, tenant_id, credit_note_id, credit_note_number, type, status,
                                           contact_id, currency_code, date, sub_total, total_tax, total,
                                           remaining_credit, allocations, updated_date_utc, raw)
            VALUES (p_org, p_tenant, v_new.credit_note_id, v_new.credit_note_number, v_new.type, v_new.status,
                    v_new.contact_id, v_new.currency_code, v_new.date, v_new.sub_total, v_new.total_tax, v_new.total,
                    v_new.remaining_credit, v_new.allocations, v_new.updated_date_utc, v_new.raw)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                outcome := 'inserted';
                v_old := NULL;
                EXIT;
            END IF;
        END LOOP;

        IF outcome IN ('inserted', 'updated') THEN
            SELECT coalesce(array_agg(DISTINCT (a ->> 'invoice_id')::uuid), '{}') INTO invoice_ids
            FROM jsonb_array_elements(v_new.allocations || coalesce(v_old.allocations, '[]')) AS a;
            PERFORM audit_write(p_org, 'system:xero', 'xero.credit_note.upsert', 'xero_credit_note',
                v_new.credit_note_id::text, xero_credit_note_json(v_old), xero_credit_note_json(v_new), p_correlation);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
