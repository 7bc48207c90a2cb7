-- SPDX-License-Identifier: MIT
-- 0023: the notification outbox (issue 11 item 4; docs/collections.md "E-mail and notifications").
--
-- notifications holds every message settled sends a customer: an e-mail (channel 'email', sent by the mailer,
-- gateway/domain/mailer.c, through SMTP) or a portal notification (channel 'portal', read in GET /v1/notifications).
-- A message is rendered when it is enqueued (notify_enqueue, functions/notifications.sql) and stored as sent, so
-- what went out is what the row says. dedupe_key is unique: one step (an invoice and a dunning step, a payment's
-- receipt) is enqueued once ever, however many instances evaluate it.

-- A customer who does not want reminders (receipts and notices about their payments are still sent).
ALTER TABLE customers ADD COLUMN reminders_opt_out boolean NOT NULL DEFAULT false;

CREATE TABLE notifications (
    id               bigserial PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    customer_id      bigint NOT NULL,
    invoice_id       text COLLATE "C",          -- settled_invoice_id of the invoice it is about; NULL: none
    kind             text NOT NULL CHECK (kind IN ('invoice_due', 'due_today', 'overdue', 'final_notice', 'receipt',
                                                   'collection_failed', 'method_expiring', 'mandate_ended',
                                                   'invitation', 'password_reset')),
    channel          text NOT NULL CHECK (channel IN ('email', 'portal')),
    dedupe_key       text COLLATE "C" NOT NULL CONSTRAINT notifications_dedupe_key UNIQUE
                         CHECK (length(dedupe_key) BETWEEN 1 AND 200),
    recipient        text,                      -- the e-mail address; NULL for portal ones
    subject          text NOT NULL,
    body_text        text NOT NULL,
    body_html        text,
    status           text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead', 'suppressed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_until      timestamptz,
    message_id       text,                      -- the Message-ID header of the e-mail, fixed at the first attempt
    last_error       text,
    sent_at          timestamptz,
    read_at          timestamptz,               -- portal ones: when the client marked it read
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_customer_fk FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id),
    CONSTRAINT notifications_recipient_check CHECK (channel <> 'email' OR recipient IS NOT NULL)
);
-- the mailer's claim: due rows, and rows whose sender stopped mid-send
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status IN ('pending', 'sending');
-- the client's list (newest first, keyset on id)
CREATE INDEX notifications_customer_idx ON notifications (organisation_id, customer_id, id DESC)
    WHERE channel = 'portal';
-- the admins' dead letters
CREATE INDEX notifications_status_idx ON notifications (organisation_id, status, id DESC);

COMMENT ON TABLE notifications IS
    'Outbox of the e-mails and portal notifications sent to customers (docs/collections.md).';
