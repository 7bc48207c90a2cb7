-- SPDX-License-Identifier: MIT
-- xero_mirror.sql: the functions that write the Xero mirror (DESIGN.md section 3.3): Xero dates and exact
-- decimals, the typed audit state of a mirror row, and the upserts of contacts, invoices (with their lines) and
-- credit notes from a whole Xero API response. The tables are in 0002_pipeline.sql. Its C room is
-- gateway/domain/xero_mirror.c, which hands the raw response text to xero_upsert_* as jsonb.
--
-- The C worker never parses money: jsonb keeps every JSON number as an exact numeric, and everything typed is
-- derived here. The upserts call audit_lock and audit_write (audit.sql) and match_contact (match.sql).
--
-- A functions file is re-applied by `settled migrate`, after the numbered migrations and together with the other
-- functions files in one transaction, whenever its text changes: edit the function here, never in the numbered
-- migration that first created it (docs/data-model.md, "Migrations and functions files").

-- ---------------------------------------------------------------------------------------------------
-- Xero values: dates and exact amounts

-- A Xero timestamp: "/Date(1552329729002)/", "/Date(1552329729002+0000)/" (the offset is informational,
-- the milliseconds are UTC epoch), the same with escaped slashes ("\/Date(...)\/"), ISO
-- "2019-03-07T00:00:00" (UTC), with "Z" or an offset, or a date "2019-03-07" (UTC midnight).
-- NULL or blank is NULL; anything else raises invalid_datetime_format.
CREATE OR REPLACE FUNCTION xero_parse_date(p text) RETURNS timestamptz
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
CREATE OR REPLACE FUNCTION xero_parse_day(p text) RETURNS date
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
CREATE OR REPLACE FUNCTION xero_decimal(p jsonb, p_what text) RETURNS numeric
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
CREATE OR REPLACE FUNCTION xero_uuid(p_obj jsonb, p_field text, p_required boolean) RETURNS uuid
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
CREATE OR REPLACE FUNCTION xero_doc_records(p_fn text, p_org bigint, p_tenant uuid, p_doc jsonb, p_key text) RETURNS jsonb
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
CREATE OR REPLACE FUNCTION xero_ts_json(p timestamptz) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_jsonb(to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
$$;

-- ---------------------------------------------------------------------------------------------------
-- The typed state of mirror rows

-- The typed state of a mirror row, as audit before/after.
CREATE OR REPLACE FUNCTION xero_contact_json(c xero_contacts) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN c.contact_id IS NULL THEN NULL ELSE jsonb_build_object(
        'tenant_id', c.tenant_id, 'contact_id', c.contact_id, 'name', c.name, 'email', c.email,
        'tax_number', c.tax_number, 'account_number', c.account_number, 'contact_status', c.contact_status,
        'is_customer', c.is_customer, 'is_supplier', c.is_supplier,
        'updated_date_utc', xero_ts_json(c.updated_date_utc)) END
$$;

CREATE OR REPLACE FUNCTION xero_invoice_json(i xero_invoices) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION xero_credit_note_json(n xero_credit_notes) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN n.credit_note_id IS NULL THEN NULL ELSE jsonb_build_object(
        'tenant_id', n.tenant_id, 'credit_note_id', n.credit_note_id, 'credit_note_number', n.credit_note_number,
        'type', n.type, 'status', n.status, 'contact_id', n.contact_id, 'currency_code', n.currency_code,
        'date', n.date, 'sub_total', n.sub_total, 'total_tax', n.total_tax, 'total', n.total,
        'remaining_credit', n.remaining_credit, 'allocations', n.allocations,
        'updated_date_utc', xero_ts_json(n.updated_date_utc)) END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Upserts from Xero API responses. The guard (DESIGN.md promise 3): a stored row with a newer
-- UpdatedDateUTC wins ('stale', nothing changes); an incoming one as new or newer overwrites (on a tie
-- the refetched state wins): 'unchanged' when the raw record is identical (only fetched_at moves),
-- otherwise 'updated'; a new record is 'inserted'. Inserted and updated records are audited.
-- A bad document raises and, the caller's transaction being aborted, changes nothing.
-- Each upsert takes its organisation's audit lock (audit_lock) before it touches a row and holds it until
-- the transaction ends: one event per transaction, short transactions; organisations never wait on
-- each other.

CREATE OR REPLACE FUNCTION xero_upsert_contacts(p_org bigint, p_tenant uuid, p_doc jsonb, p_correlation text,
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
CREATE OR REPLACE FUNCTION xero_replace_invoice_lines(p_org bigint, p_tenant uuid, p_invoice_id uuid, p_lines jsonb) RETURNS void
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
CREATE OR REPLACE FUNCTION xero_upsert_invoices(p_org bigint, p_tenant uuid, p_doc jsonb, p_correlation text)
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
CREATE OR REPLACE FUNCTION xero_credit_note_allocations(p_cn jsonb) RETURNS jsonb
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
-- invoice's AmountCredited from Xero is authoritative. For an unchanged one, the invoices its allocations
-- name now: a worker that applied the credit note but failed before it had refetched all of them sees it
-- unchanged when it retries, and must still refetch them. Empty for stale.
CREATE OR REPLACE FUNCTION xero_upsert_credit_notes(p_org bigint, p_tenant uuid, p_doc jsonb, p_correlation text)
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
        ELSIF outcome = 'unchanged' THEN
            SELECT coalesce(array_agg(DISTINCT (a ->> 'invoice_id')::uuid), '{}') INTO invoice_ids
            FROM jsonb_array_elements(v_new.allocations) AS a;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
