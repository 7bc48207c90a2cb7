-- SPDX-License-Identifier: MIT
-- notifications.sql: the notification outbox (table notifications in 0023_notifications.sql; the rules in
-- docs/collections.md, "E-mail and notifications"). Callers enqueue a rendered message with notify_enqueue, in the
-- transaction of the fact it tells about; the mailer (gateway/domain/mailer.c) claims due e-mails with a lease and
-- records each outcome, fenced by the lease owner, as the Xero write-back does (xero_writeback.sql).
--
-- At most once, as far as SMTP allows: a claim marks the row 'sending' and commits before the SMTP transaction
-- starts, and the server's 250 for DATA is recorded at once in one statement (notification_sent). Only a crash
-- (or a lost connection to PostgreSQL) between that 250 and its commit sends the message again, once, when the
-- lease expires.

-- What the audit log keeps of a row (never the bodies).
CREATE OR REPLACE FUNCTION notification_json(n notifications) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('customer_id', n.customer_id, 'invoice_id', n.invoice_id, 'kind', n.kind,
                              'channel', n.channel, 'dedupe_key', n.dedupe_key, 'recipient', n.recipient,
                              'subject', n.subject, 'status', n.status, 'attempts', n.attempts,
                              'last_error', n.last_error)
$$;

-- The kinds a customer can opt out of (reminders_opt_out): the reminders, never receipts or notices.
CREATE OR REPLACE FUNCTION notification_is_reminder(p_kind text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_kind IN ('invoice_due', 'due_today', 'overdue', 'final_notice')
$$;

-- The account e-mails (auth.sql, "The account e-mails"): their bodies carry a one-time link, of which only the
-- message needs the token in clear. Once the message is sent or dead, the token is cut out of the stored bodies.
CREATE OR REPLACE FUNCTION notification_redact(p_kind text, p_body text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_kind IN ('invitation', 'password_reset', 'email_verification')
                THEN regexp_replace(p_body, 'token=[A-Za-z0-9_-]+', 'token=(removed)', 'g')
                ELSE p_body END
$$;

-- Enqueues a rendered message for customer p_customer of organisation p_org, once per p_dedupe_key: a second
-- call with the same key changes nothing and returns the first row (created false). An e-mail is 'pending' (the
-- mailer is woken); a portal notification is 'sent' at once (the portal shows it); a reminder for a customer who
-- opted out is stored 'suppressed' and never sent. Audited (actor p_actor). The customer must be the organisation's
-- (foreign key); an e-mail needs p_recipient.
CREATE OR REPLACE FUNCTION notify_enqueue(p_org bigint, p_customer bigint, p_invoice text, p_kind text,
                                          p_channel text, p_dedupe_key text, p_recipient text, p_subject text,
                                          p_text text, p_html text, p_actor text, p_correlation text)
RETURNS TABLE (id bigint, status text, created boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_new notifications;
    v_opt_out boolean;
    v_status text;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT * INTO v_new FROM notifications n WHERE n.dedupe_key = p_dedupe_key;
    IF FOUND THEN
        IF v_new.organisation_id <> p_org THEN
            RAISE EXCEPTION 'notify_enqueue: dedupe key % belongs to another organisation', p_dedupe_key
                USING ERRCODE = 'unique_violation';
        END IF;
        id := v_new.id; status := v_new.status; created := false;
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT c.reminders_opt_out INTO v_opt_out FROM customers c WHERE c.id = p_customer AND c.organisation_id = p_org;
    v_status := CASE WHEN notification_is_reminder(p_kind) AND coalesce(v_opt_out, false) THEN 'suppressed'
                     WHEN p_channel = 'portal' THEN 'sent'
                     ELSE 'pending' END;
    INSERT INTO notifications (organisation_id, customer_id, invoice_id, kind, channel, dedupe_key, recipient,
                               subject, body_text, body_html, status, sent_at, last_error)
    VALUES (p_org, p_customer, p_invoice, p_kind, p_channel, p_dedupe_key, nullif(p_recipient, ''), p_subject,
            p_text, p_html, v_status, CASE WHEN v_status = 'sent' THEN now() END,
            CASE WHEN v_status = 'suppressed' THEN 'the customer opted out of reminders' END)
    ON CONFLICT ON CONSTRAINT notifications_dedupe_key DO NOTHING
    RETURNING * INTO v_new;
    IF NOT FOUND THEN  -- enqueued by a concurrent transaction meanwhile
        SELECT * INTO v_new FROM notifications n WHERE n.dedupe_key = p_dedupe_key;
        id := v_new.id; status := v_new.status; created := false;
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM audit_write(p_org, p_actor, 'notification.' || CASE WHEN v_status = 'suppressed' THEN 'suppress'
                                                                ELSE 'enqueue' END,
                        'notification', v_new.id::text, NULL, notification_json(v_new), p_correlation);
    IF v_status = 'pending' THEN
        PERFORM pg_notify('settled_notifications', '');
    END IF;
    id := v_new.id; status := v_new.status; created := true;
    RETURN NEXT;
END
$$;

-- Claims up to p_limit due e-mails for p_owner with a lease of p_lease_ms: pending ones whose time has come, and
-- 'sending' ones whose sender's lease expired (it stopped mid-send). The row becomes 'sending' and counts an
-- attempt; its Message-ID is fixed at the first claim (p_domain: the sender's domain), so a resend after a crash
-- carries the same one.
CREATE OR REPLACE FUNCTION notification_claim(p_owner text, p_lease_ms bigint, p_limit integer, p_domain text)
RETURNS TABLE (id bigint, organisation_id bigint, kind text, recipient text, subject text, body_text text,
               body_html text, attempts integer, message_id text, invoice_id text, customer_id bigint)
LANGUAGE sql AS $$
    WITH due AS (
        SELECT n.id FROM notifications n
        WHERE n.channel = 'email'
          AND ((n.status = 'pending' AND n.next_attempt_at <= now())
               OR (n.status = 'sending' AND n.lease_until <= now()))
        ORDER BY n.next_attempt_at LIMIT p_limit FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE notifications n
        SET status = 'sending', attempts = n.attempts + 1, lease_owner = p_owner,
            lease_until = now() + p_lease_ms * interval '1 millisecond',
            next_attempt_at = now() + p_lease_ms * interval '1 millisecond',
            message_id = coalesce(n.message_id, 'settled.' || n.id || '.' || md5(n.dedupe_key) || '@' || p_domain),
            updated_at = now()
        FROM due WHERE n.id = due.id
        RETURNING n.*)
    SELECT c.id, c.organisation_id, c.kind, c.recipient, c.subject, c.body_text, c.body_html, c.attempts,
           c.message_id, c.invoice_id, c.customer_id
    FROM claimed c ORDER BY c.id
$$;

-- The row p_id if p_owner holds its lease, locked after its organisation's audit lock; NULL otherwise.
CREATE OR REPLACE FUNCTION notification_fenced(p_id bigint, p_owner text) RETURNS notifications
LANGUAGE plpgsql AS $$
DECLARE
    v_org bigint;
    v_row notifications;
BEGIN
    SELECT organisation_id INTO v_org FROM notifications WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM audit_lock(v_org);
    SELECT * INTO v_row FROM notifications WHERE id = p_id AND lease_owner = p_owner AND status = 'sending'
    FOR UPDATE;
    RETURN v_row;
END
$$;

-- The SMTP server accepted the message (250 after DATA): 'sent', audited. Returns false when the lease was not
-- p_owner's any more.
CREATE OR REPLACE FUNCTION notification_sent(p_id bigint, p_owner text, p_correlation text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_old notifications;
    v_new notifications;
BEGIN
    v_old := notification_fenced(p_id, p_owner);
    IF v_old.id IS NULL THEN
        RETURN false;
    END IF;
    UPDATE notifications
    SET status = 'sent', sent_at = now(), lease_owner = NULL, lease_until = NULL, last_error = NULL,
        body_text = notification_redact(kind, body_text), body_html = notification_redact(kind, body_html),
        updated_at = now()
    WHERE id = p_id
    RETURNING * INTO v_new;
    PERFORM audit_write(v_old.organisation_id, 'system:mailer', 'notification.sent', 'notification', p_id::text,
                        notification_json(v_old), notification_json(v_new), p_correlation);
    RETURN true;
END
$$;

-- A send that did not work: 'permanent' (a 5xx for the recipient, a message the server refuses): 'dead' at once
-- with p_error; 'transient' (a 4xx, no connection, a timeout): due again after wait number `attempts` of p_waits
-- (ms, SETTLED_RETRY_SCHEDULE, lengthened by up to a fifth at random), 'dead' once they are used up; 'wait' (not an
-- attempt: no SMTP server configured, the mailer stopping): due again in p_wait_ms. Dead rows are audited.
-- Returns the new status, or NULL when the lease was not p_owner's.
CREATE OR REPLACE FUNCTION notification_fail(p_id bigint, p_owner text, p_kind text, p_error text, p_waits bigint[],
                                             p_wait_ms bigint, p_correlation text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_old notifications;
    v_new notifications;
BEGIN
    IF p_kind NOT IN ('permanent', 'transient', 'wait') THEN
        RAISE EXCEPTION 'notification_fail: unknown kind %', p_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_old := notification_fenced(p_id, p_owner);
    IF v_old.id IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE notifications n
    SET status = CASE WHEN p_kind = 'permanent' THEN 'dead'
                      WHEN p_kind = 'transient' AND n.attempts > coalesce(cardinality(p_waits), 0) THEN 'dead'
                      ELSE 'pending' END,
        attempts = CASE WHEN p_kind = 'wait' THEN greatest(n.attempts - 1, 0) ELSE n.attempts END,
        next_attempt_at = now() + CASE WHEN p_kind = 'wait' THEN greatest(p_wait_ms, 0)
                                       ELSE coalesce(p_waits[n.attempts], 0) * (1 + random() * 0.2) END
                                  * interval '1 millisecond',
        last_error = p_error, lease_owner = NULL, lease_until = NULL, updated_at = now()
    WHERE n.id = p_id
    RETURNING * INTO v_new;
    IF v_new.status = 'dead' THEN
        UPDATE notifications n SET body_text = notification_redact(n.kind, n.body_text),
                                   body_html = notification_redact(n.kind, n.body_html)
        WHERE n.id = p_id;
        PERFORM audit_write(v_old.organisation_id, 'system:mailer', 'notification.dead', 'notification', p_id::text,
                            notification_json(v_old), notification_json(v_new), p_correlation);
    END IF;
    RETURN v_new.status;
END
$$;

-- Parks as 'dead' the e-mails whose lease expired mid-send as many times as the schedule allows attempts (the
-- senders kept dying), audited; returns them for the log.
CREATE OR REPLACE FUNCTION notification_park_lost(p_max_attempts integer)
RETURNS TABLE (id bigint, organisation_id bigint, attempts integer, last_error text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_old notifications;
    v_new notifications;
BEGIN
    FOR v_old IN SELECT n.* FROM notifications n
                 WHERE n.status = 'sending' AND n.lease_until <= now() AND n.attempts >= p_max_attempts
                 ORDER BY n.organisation_id, n.id LOOP
        PERFORM audit_lock(v_old.organisation_id);
        UPDATE notifications n
        SET status = 'dead', lease_owner = NULL, lease_until = NULL, updated_at = now(),
            body_text = notification_redact(n.kind, n.body_text), body_html = notification_redact(n.kind, n.body_html),
            last_error = 'the mailer sending it stopped before finishing, ' || n.attempts || ' times'
        WHERE n.id = v_old.id AND n.status = 'sending' AND n.lease_until <= now()
        RETURNING * INTO v_new;
        CONTINUE WHEN v_new.id IS NULL;
        PERFORM audit_write(v_new.organisation_id, 'system:mailer', 'notification.dead', 'notification',
                            v_new.id::text, notification_json(v_old), notification_json(v_new), NULL);
        id := v_new.id;
        organisation_id := v_new.organisation_id;
        attempts := v_new.attempts;
        last_error := v_new.last_error;
        RETURN NEXT;
        v_new := NULL;
    END LOOP;
END
$$;

-- Milliseconds until the earliest e-mail is due (0: now), NULL when none waits: how long an idle mailer sleeps.
CREATE OR REPLACE FUNCTION notification_next_due_ms() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT greatest(0, ceil(extract(epoch FROM min(CASE WHEN status = 'sending' THEN lease_until
                                                        ELSE next_attempt_at END) - now()) * 1000))::bigint
    FROM notifications WHERE channel = 'email' AND status IN ('pending', 'sending')
$$;

-- ---------------------------------------------------------------------------------------------------
-- The API (gateway/api/notifications_api.c; docs/api.md, "Notifications"). Documents use admin.sql's helpers.

-- A notification as the API shows it: the client sees its portal ones (with the read flag); the admins see every
-- channel with the delivery state (never the bodies: the audit log and the mail hold them).
CREATE OR REPLACE FUNCTION notification_api_json(n notifications, p_admin boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', n.id::text, 'kind', n.kind, 'invoice_id', n.invoice_id, 'subject', n.subject,
                              'created_at', admin_ts(n.created_at))
        || CASE WHEN p_admin THEN
               jsonb_build_object('customer_id', n.customer_id::text, 'channel', n.channel,
                                  'recipient', n.recipient, 'status', n.status, 'attempts', n.attempts,
                                  'last_error', n.last_error, 'sent_at', admin_ts(n.sent_at),
                                  'updated_at', admin_ts(n.updated_at))
           ELSE
               jsonb_build_object('body', n.body_text, 'read', n.read_at IS NOT NULL, 'read_at', admin_ts(n.read_at))
           END
$$;

-- The portal notifications of customer p_customer of p_org, newest first, after the id p_before (a cursor).
CREATE OR REPLACE FUNCTION notifications_client_list(p_org bigint, p_customer bigint, p_before bigint,
                                                     p_limit integer) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_page notifications[];
BEGIN
    SELECT coalesce(array_agg(x ORDER BY x.id DESC), '{}') INTO v_page FROM (
        SELECT * FROM notifications n
        WHERE n.organisation_id = p_org AND n.customer_id = p_customer AND n.channel = 'portal'
          AND n.status = 'sent' AND (p_before IS NULL OR n.id < p_before)
        ORDER BY n.id DESC LIMIT p_limit + 1) x;
    RETURN jsonb_build_object(
        'data', (SELECT coalesce(jsonb_agg(notification_api_json(x, false) ORDER BY x.id DESC), '[]')
                 FROM unnest(v_page[1:p_limit]) x),
        'next_cursor', CASE WHEN cardinality(v_page) > p_limit THEN admin_cursor(v_page[p_limit].id) END);
END
$$;

-- The client's "mark read" of one of its portal notifications: read_at set once (a repeat keeps the first).
CREATE OR REPLACE FUNCTION notification_client_read(p_org bigint, p_customer bigint, p_id bigint)
RETURNS TABLE (result text, field text, detail text, doc jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v notifications;
BEGIN
    UPDATE notifications n SET read_at = coalesce(n.read_at, now()), updated_at = now()
    WHERE n.id = p_id AND n.organisation_id = p_org AND n.customer_id = p_customer AND n.channel = 'portal'
      AND n.status = 'sent'
    RETURNING * INTO v;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM admin_result('not_found', NULL, NULL, NULL);
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM admin_result('ok', NULL, NULL, notification_api_json(v, false));
END
$$;

-- The organisation's notifications for its admins, newest first, of one status (dead: the dead letters) or all.
CREATE OR REPLACE FUNCTION notifications_admin_list(p_org bigint, p_status text, p_before bigint, p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_page notifications[];
BEGIN
    SELECT coalesce(array_agg(x ORDER BY x.id DESC), '{}') INTO v_page FROM (
        SELECT * FROM notifications n
        WHERE n.organisation_id = p_org AND (p_status IS NULL OR n.status = p_status)
          AND (p_before IS NULL OR n.id < p_before)
        ORDER BY n.id DESC LIMIT p_limit + 1) x;
    RETURN jsonb_build_object(
        'data', (SELECT coalesce(jsonb_agg(notification_api_json(x, true) ORDER BY x.id DESC), '[]')
                 FROM unnest(v_page[1:p_limit]) x),
        'next_cursor', CASE WHEN cardinality(v_page) > p_limit THEN admin_cursor(v_page[p_limit].id) END);
END
$$;
