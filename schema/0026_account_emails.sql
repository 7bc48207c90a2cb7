-- SPDX-License-Identifier: MIT
-- 0026: the account e-mails (issue 10 item 1): invitations, password resets and the e-mail verification of a
-- self-registration are sent through the notification outbox of 0023. They go to a user (or to an address being
-- invited), not to a customer: such a row has no customer and names its user when there is one. docs/security.md
-- ("Account e-mails") says why the rendered message is the one place a link's token is in clear, and for how long.

-- 'email_verification' joins the kinds. The list is read back and extended rather than written out again here, so
-- that kinds another migration added to the same CHECK stay allowed.
DO $$
DECLARE
    v_def text;
BEGIN
    SELECT pg_get_constraintdef(c.oid) INTO v_def FROM pg_constraint c
    WHERE c.conrelid = 'notifications'::regclass AND c.conname = 'notifications_kind_check';
    IF v_def IS NULL OR position('ARRAY[' IN v_def) = 0 THEN
        RAISE EXCEPTION '0026: notifications_kind_check is not a list of kinds: %', v_def;
    END IF;
    IF position('''email_verification''' IN v_def) = 0 THEN
        EXECUTE 'ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check, ADD CONSTRAINT '
                || 'notifications_kind_check ' || replace(v_def, 'ARRAY[', 'ARRAY[''email_verification''::text, ');
    END IF;
END
$$;

ALTER TABLE notifications
    ALTER COLUMN customer_id DROP NOT NULL,
    ADD COLUMN user_id bigint,
    ADD CONSTRAINT notifications_user_fk FOREIGN KEY (organisation_id, user_id) REFERENCES users (organisation_id, id),
    -- only the account e-mails go to no customer
    ADD CONSTRAINT notifications_account_check
        CHECK (customer_id IS NOT NULL OR kind IN ('invitation', 'password_reset', 'email_verification'));

-- Self-registration: an account is 'pending_verification' (nothing granted, no sign-in) until its address is
-- verified; then it is an active client of the one customer of its organisation with that address, or it waits
-- for an admin's approval ('pending_approval').
ALTER TABLE users
    ADD COLUMN email_verified_at timestamptz,
    DROP CONSTRAINT users_status_check,
    ADD CONSTRAINT users_status_check
        CHECK (status IN ('active', 'pending_verification', 'pending_approval', 'disabled')),
    DROP CONSTRAINT users_role_customer_check,
    ADD CONSTRAINT users_role_customer_check CHECK (
        (role = 'admin' AND customer_id IS NULL)
        OR (role = 'client' AND (customer_id IS NOT NULL OR status IN ('pending_verification', 'pending_approval'))));

-- E-mail verification tokens: a random token mailed to the address, its digest here, valid 24 hours and once.
CREATE TABLE email_verifications (
    digest      text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
    user_id     bigint NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    used_at     timestamptz
);
CREATE INDEX email_verifications_user_idx ON email_verifications (user_id) WHERE used_at IS NULL;
