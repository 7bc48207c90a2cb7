-- SPDX-License-Identifier: MIT
-- auth.sql: the portal's accounts (tables in 0015_accounts.sql): users, refresh-token families, invitations and
-- password resets. Tokens arrive here as their lower-case hex SHA-256 digests only (gw_auth_token_digest,
-- gateway/domain/auth.h) and passwords as gw_auth_password_hash strings only: nothing here ever sees a secret.
-- Every change is audited (audit_write, entity_type 'user'), with audit_lock taken before any row lock. Expected
-- outcomes (a wrong token, a taken address) are results, not exceptions, so that a result that revokes something
-- (a reused refresh token) still commits.
--
-- Callers: the CLI through gateway/domain/accounts.c (user add, list, disable, invite); the portal's routes
-- (login, refresh, logout, invitations, resets) call the functions below directly:
--
--   auth_user_create(p_org bigint, p_email text, p_role text, p_customer bigint, p_password_hash text,
--                    p_actor text, p_correlation text)
--       RETURNS TABLE (result text, user_id bigint)
--       result: 'created' | 'email_taken' | 'customer_required' (a client without one) | 'customer_not_allowed'
--       (an admin with one) | 'customer_unknown' (not a customer of p_org) | 'role_invalid' | 'email_invalid'
--   auth_login_lookup(p_org_slug text, p_email text)
--       RETURNS TABLE (user_id bigint, organisation_id bigint, role text, customer_id bigint, password_hash text,
--                      status text)
--       no row: no such organisation or user (then still run gw_auth_password_verify(NULL, ...), so the time does
--       not tell). The caller signs in only when status = 'active' and the password verifies. p_org_slug NULL:
--       the users of that address in every organisation (the portal's sign-in without an organisation).
--   auth_login_record(p_user bigint, p_refresh_digest text, p_refresh_ttl integer, p_new_password_hash text,
--                     p_user_agent text, p_ip inet, p_correlation text)
--       RETURNS TABLE (result text, family_id uuid, organisation_id bigint, role text, customer_id bigint)
--       after the password verified: 'ok' stores the first refresh token of a new family (expiring in p_refresh_ttl
--       seconds), sets last_login_at, replaces the hash with p_new_password_hash when not NULL (the rehash flag)
--       and audits 'user.login'; 'inactive' when the user was disabled or is still pending meanwhile (nothing
--       stored). The claims of the access token come from the row returned.
--   auth_refresh_rotate(p_digest text, p_new_digest text, p_refresh_ttl integer, p_user_agent text, p_ip inet,
--                       p_correlation text)
--       RETURNS TABLE (result text, user_id bigint, organisation_id bigint, role text, customer_id bigint,
--                      family_id uuid)
--       'rotated': p_digest is spent and p_new_digest is its child (same family, p_refresh_ttl seconds); issue an
--       access token for the returned claims (read now, so a changed role or customer applies at once).
--       'reused': p_digest was already rotated: it was copied, so its whole family is now revoked (committed) and
--       audited 'user.refresh_reused'; 'revoked': its family was revoked before (sign-out); 'expired';
--       'inactive': the user is not active (its family is revoked); 'unknown'. Only 'rotated' signs anybody in.
--   auth_refresh_revoke(p_digest text, p_actor text, p_correlation text) RETURNS integer
--       sign-out: revokes the family of p_digest, returns the number of live (unrotated) tokens revoked (0: unknown
--       or revoked before). The two below count the same way.
--   auth_password_change(p_user bigint, p_password_hash text, p_correlation text) RETURNS text
--       after the current password verified: 'changed' (the hash replaced, audited 'user.password_change', every
--       refresh family of the user revoked) | 'inactive' (the user is not active any more: nothing changed)
--   auth_family_revoke(p_family uuid, p_actor text, p_reason text, p_correlation text) RETURNS integer
--   auth_user_revoke_all(p_user bigint, p_actor text, p_reason text, p_correlation text) RETURNS integer
--   auth_user_disable(p_org bigint, p_email text, p_actor text, p_correlation text)
--       RETURNS TABLE (result text, user_id bigint, revoked integer)    result: 'disabled' | 'already' | 'unknown'
--       | 'pending' (a sign-up still waiting for its verification or approval: nothing changed, it cannot sign in)
--   auth_invitation_create(p_org bigint, p_email text, p_role text, p_customer bigint, p_digest text,
--                          p_invited_by bigint, p_actor text, p_correlation text)
--       RETURNS TABLE (result text, expires_at timestamptz)     result: 'created' or auth_user_create's refusals
--   auth_invitation_consume(p_digest text, p_password_hash text, p_correlation text)
--       RETURNS TABLE (result text, user_id bigint, organisation_id bigint, role text, customer_id bigint)
--       'created' (single use: the invitation is spent) | 'unknown' | 'used' | 'expired' | 'email_taken' |
--       'customer_unknown'
--   auth_reset_create(p_org bigint, p_email text, p_digest text, p_correlation text) RETURNS bigint
--       the user id, or NULL when no active user has that address (answer the caller the same either way)
--   auth_reset_consume(p_digest text, p_password_hash text, p_correlation text)
--       RETURNS TABLE (result text, user_id bigint)
--       'reset' (the password replaced, every refresh token and every other open reset of the user revoked) |
--       'unknown' | 'used' | 'expired' | 'inactive'
--   auth_register(p_org_slug text, p_email text, p_password_hash text, p_digest text, p_subject text, p_text text,
--                 p_html text, p_correlation text)
--       RETURNS TABLE (result text, user_id bigint, notification_id bigint)
--       self-registration: 'pending' (a pending_verification client without a customer, its verification token's
--       digest p_digest stored for 24 hours, the rendered verification e-mail enqueued) | 'closed' (the
--       organisation is unknown or its self_registration is 'off') | 'email_taken' | 'email_invalid'
--   auth_verify_email(p_digest text, p_correlation text)
--       RETURNS TABLE (result text, user_id bigint, status text, customer_id bigint)
--       'verified' (single use): the address is verified; the user is an active client of the one active customer of
--       its organisation with that address (status 'active'), else waits for approval ('pending_approval') |
--       'unknown' | 'used' | 'expired' | 'inactive' (the user is not waiting for a verification any more)
--   auth_invitation_mail(p_org, p_email, p_role, p_customer, p_digest, p_invited_by, p_actor, p_correlation,
--                        p_subject text, p_text text, p_html text)
--       RETURNS TABLE (result text, expires_at timestamptz, notification_id bigint)
--       auth_invitation_create, and when it made the invitation and p_subject is not NULL the rendered invitation
--       e-mail enqueued in the same transaction (notification_id; NULL: not mailed)
--   auth_reset_mail(p_org bigint, p_email text, p_digest text, p_subject text, p_text text, p_html text,
--                   p_correlation text)
--       RETURNS TABLE (user_id bigint, notification_id bigint)
--       auth_reset_create and the rendered reset e-mail enqueued; no row when no active user has that address
--   auth_mail_enqueue(p_org bigint, p_user bigint, p_kind text, p_dedupe_key text, p_recipient text, p_subject text,
--                     p_text text, p_html text, p_actor text, p_correlation text) RETURNS bigint
--       an account e-mail into the outbox (no customer; never suppressed: reminders_opt_out is about reminders)
--   auth_user_approve(p_org bigint, p_user bigint, p_customer bigint, p_actor text, p_correlation text)
--       RETURNS text: 'approved' | 'unknown' (no pending user) | 'customer_unknown'
--
-- A functions file is re-applied by `settled migrate`, after the numbered migrations and together with the other
-- functions files in one transaction, whenever its text changes: edit the functions here, never in the numbered
-- migration that first created the tables (docs/data-model.md, "Migrations and functions files").

-- What the audit log keeps of a user: never its password hash.
CREATE OR REPLACE FUNCTION auth_user_json(u users) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', u.id, 'email', u.email, 'role', u.role, 'customer_id', u.customer_id,
                              'status', u.status)
$$;

-- Why a user (or an invitation) of p_role with p_customer cannot be made in p_org, or NULL when it can.
CREATE OR REPLACE FUNCTION auth_role_refusal(p_org bigint, p_email text, p_role text, p_customer bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN norm_email(p_email) IS NULL OR length(p_email) > 254 OR position('@' IN p_email) = 0 THEN 'email_invalid'
        WHEN p_role IS NULL OR p_role NOT IN ('admin', 'client') THEN 'role_invalid'
        WHEN p_role = 'client' AND p_customer IS NULL THEN 'customer_required'
        WHEN p_role = 'admin' AND p_customer IS NOT NULL THEN 'customer_not_allowed'
        WHEN p_customer IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM customers c WHERE c.organisation_id = p_org AND c.id = p_customer)
            THEN 'customer_unknown'
        WHEN EXISTS (SELECT 1 FROM users u WHERE u.organisation_id = p_org AND u.email_normalised = norm_email(p_email))
            THEN 'email_taken'
    END
$$;

-- Inserts a user and returns its row, or a row of NULLs when the address is taken (also by a concurrent insert).
CREATE OR REPLACE FUNCTION auth_user_insert(p_org bigint, p_email text, p_role text, p_customer bigint,
                                            p_password_hash text, p_status text) RETURNS users
LANGUAGE plpgsql AS $$
DECLARE
    v_user users;
BEGIN
    INSERT INTO users (organisation_id, email, role, customer_id, password_hash, status)
    VALUES (p_org, btrim(p_email), p_role, p_customer, p_password_hash, p_status)
    RETURNING * INTO v_user;
    RETURN v_user;
EXCEPTION WHEN unique_violation THEN
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION auth_user_create(p_org bigint, p_email text, p_role text, p_customer bigint,
                                            p_password_hash text, p_actor text, p_correlation text)
RETURNS TABLE (result text, user_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_user users;
    v_refusal text;
BEGIN
    PERFORM audit_lock(p_org);
    v_refusal := auth_role_refusal(p_org, p_email, p_role, p_customer);
    IF v_refusal IS NOT NULL THEN
        RETURN QUERY SELECT v_refusal, NULL::bigint;
        RETURN;
    END IF;
    v_user := auth_user_insert(p_org, p_email, p_role, p_customer, p_password_hash, 'active');
    IF v_user.id IS NULL THEN
        RETURN QUERY SELECT 'email_taken'::text, NULL::bigint;
        RETURN;
    END IF;
    PERFORM audit_write(p_org, p_actor, 'user.create', 'user', v_user.id::text, NULL, auth_user_json(v_user),
                        p_correlation);
    RETURN QUERY SELECT 'created'::text, v_user.id;
END
$$;

CREATE OR REPLACE FUNCTION auth_login_lookup(p_org_slug text, p_email text)
RETURNS TABLE (user_id bigint, organisation_id bigint, role text, customer_id bigint, password_hash text,
               status text)
LANGUAGE sql STABLE AS $$
    SELECT u.id, u.organisation_id, u.role, u.customer_id, u.password_hash, u.status
    FROM users u JOIN organisations o ON o.id = u.organisation_id
    WHERE (p_org_slug IS NULL OR o.slug = p_org_slug) AND u.email_normalised = norm_email(p_email)
$$;

-- Revokes family p_family; returns how many live (unrotated) tokens it revoked. Audited when it revoked any.
CREATE OR REPLACE FUNCTION auth_family_revoke(p_family uuid, p_actor text, p_reason text, p_correlation text)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_user users;
    v_n integer;
BEGIN
    SELECT u.* INTO v_user FROM users u
    WHERE u.id = (SELECT t.user_id FROM refresh_tokens t WHERE t.family_id = p_family LIMIT 1);
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM audit_lock(v_user.organisation_id);
    -- every token of the family is marked, the spent ones too; the count is of the live ones (not yet rotated)
    WITH r AS (UPDATE refresh_tokens t SET revoked_at = now()
               WHERE t.family_id = p_family AND t.revoked_at IS NULL RETURNING t.rotated_at)
    SELECT count(*) FILTER (WHERE r.rotated_at IS NULL) INTO v_n FROM r;
    IF v_n <> 0 THEN
        PERFORM audit_write(v_user.organisation_id, p_actor, 'user.sessions_revoked', 'user', v_user.id::text, NULL,
                            jsonb_build_object('family_id', p_family, 'reason', p_reason, 'tokens', v_n),
                            p_correlation);
    END IF;
    RETURN v_n;
END
$$;

-- Revokes every refresh token of p_user (all its families); returns how many were live (unrotated). Audited when
-- it revoked any.
CREATE OR REPLACE FUNCTION auth_user_revoke_all(p_user bigint, p_actor text, p_reason text, p_correlation text)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_org bigint;
    v_n integer;
BEGIN
    SELECT u.organisation_id INTO v_org FROM users u WHERE u.id = p_user;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM audit_lock(v_org);
    WITH r AS (UPDATE refresh_tokens t SET revoked_at = now()
               WHERE t.user_id = p_user AND t.revoked_at IS NULL RETURNING t.rotated_at)
    SELECT count(*) FILTER (WHERE r.rotated_at IS NULL) INTO v_n FROM r;
    IF v_n <> 0 THEN
        PERFORM audit_write(v_org, p_actor, 'user.sessions_revoked', 'user', p_user::text, NULL,
                            jsonb_build_object('family_id', NULL, 'reason', p_reason, 'tokens', v_n), p_correlation);
    END IF;
    RETURN v_n;
END
$$;

CREATE OR REPLACE FUNCTION auth_login_record(p_user bigint, p_refresh_digest text, p_refresh_ttl integer,
                                             p_new_password_hash text, p_user_agent text, p_ip inet,
                                             p_correlation text)
RETURNS TABLE (result text, family_id uuid, organisation_id bigint, role text, customer_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_user users;
    v_family uuid := gen_random_uuid();
BEGIN
    SELECT u.* INTO v_user FROM users u WHERE u.id = p_user;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'inactive'::text, NULL::uuid, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    PERFORM audit_lock(v_user.organisation_id);
    SELECT u.* INTO v_user FROM users u WHERE u.id = p_user FOR UPDATE;
    IF v_user.status <> 'active' THEN
        RETURN QUERY SELECT 'inactive'::text, NULL::uuid, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    UPDATE users u SET last_login_at = now(),
                       password_hash = coalesce(p_new_password_hash, u.password_hash),
                       updated_at = CASE WHEN p_new_password_hash IS NULL THEN u.updated_at ELSE now() END
    WHERE u.id = p_user;
    INSERT INTO refresh_tokens (digest, user_id, family_id, expires_at, user_agent, ip)
    VALUES (p_refresh_digest, p_user, v_family, now() + make_interval(secs => p_refresh_ttl),
            left(p_user_agent, 512), p_ip);
    PERFORM audit_write(v_user.organisation_id, 'user:' || p_user, 'user.login', 'user', p_user::text, NULL,
                        jsonb_build_object('family_id', v_family, 'ip', host(p_ip),
                                           'rehashed', p_new_password_hash IS NOT NULL),
                        p_correlation);
    RETURN QUERY SELECT 'ok'::text, v_family, v_user.organisation_id, v_user.role, v_user.customer_id;
END
$$;

CREATE OR REPLACE FUNCTION auth_refresh_rotate(p_digest text, p_new_digest text, p_refresh_ttl integer,
                                               p_user_agent text, p_ip inet, p_correlation text)
RETURNS TABLE (result text, user_id bigint, organisation_id bigint, role text, customer_id bigint, family_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    v_token refresh_tokens;
    v_user users;
BEGIN
    SELECT t.* INTO v_token FROM refresh_tokens t WHERE t.digest = p_digest;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::bigint, NULL::bigint, NULL::text, NULL::bigint, NULL::uuid;
        RETURN;
    END IF;
    SELECT u.* INTO v_user FROM users u WHERE u.id = v_token.user_id;
    PERFORM audit_lock(v_user.organisation_id);
    -- the row again under its lock: of two refreshes with one token, the second sees the first's rotation
    SELECT t.* INTO v_token FROM refresh_tokens t WHERE t.digest = p_digest FOR UPDATE;
    IF v_token.rotated_at IS NOT NULL THEN
        -- a spent token came back: someone holds a copy. End the family, whoever holds its live token now.
        UPDATE refresh_tokens t SET revoked_at = now() WHERE t.family_id = v_token.family_id AND t.revoked_at IS NULL;
        PERFORM audit_write(v_user.organisation_id, 'system:auth', 'user.refresh_reused', 'user', v_user.id::text,
                            NULL, jsonb_build_object('family_id', v_token.family_id, 'ip', host(p_ip)),
                            p_correlation);
        RETURN QUERY SELECT 'reused'::text, v_user.id, v_user.organisation_id, NULL::text, NULL::bigint,
                            v_token.family_id;
        RETURN;
    END IF;
    IF v_token.revoked_at IS NOT NULL THEN
        RETURN QUERY SELECT 'revoked'::text, v_user.id, v_user.organisation_id, NULL::text, NULL::bigint,
                            v_token.family_id;
        RETURN;
    END IF;
    IF v_token.expires_at <= now() THEN
        RETURN QUERY SELECT 'expired'::text, v_user.id, v_user.organisation_id, NULL::text, NULL::bigint,
                            v_token.family_id;
        RETURN;
    END IF;
    SELECT u.* INTO v_user FROM users u WHERE u.id = v_token.user_id FOR SHARE;
    IF v_user.status <> 'active' THEN
        PERFORM auth_family_revoke(v_token.family_id, 'system:auth', 'user ' || v_user.status, p_correlation);
        RETURN QUERY SELECT 'inactive'::text, v_user.id, v_user.organisation_id, NULL::text, NULL::bigint,
                            v_token.family_id;
        RETURN;
    END IF;
    UPDATE refresh_tokens t SET rotated_at = now() WHERE t.digest = p_digest;
    INSERT INTO refresh_tokens (digest, user_id, family_id, parent_digest, expires_at, user_agent, ip)
    VALUES (p_new_digest, v_user.id, v_token.family_id, p_digest, now() + make_interval(secs => p_refresh_ttl),
            left(p_user_agent, 512), p_ip);
    RETURN QUERY SELECT 'rotated'::text, v_user.id, v_user.organisation_id, v_user.role, v_user.customer_id,
                        v_token.family_id;
END
$$;

-- Sign-out: revokes the family of the presented token.
CREATE OR REPLACE FUNCTION auth_refresh_revoke(p_digest text, p_actor text, p_correlation text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_family uuid;
BEGIN
    SELECT t.family_id INTO v_family FROM refresh_tokens t WHERE t.digest = p_digest;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    RETURN auth_family_revoke(v_family, p_actor, 'sign-out', p_correlation);
END
$$;

CREATE OR REPLACE FUNCTION auth_user_disable(p_org bigint, p_email text, p_actor text, p_correlation text)
RETURNS TABLE (result text, user_id bigint, revoked integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_old users;
    v_new users;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT u.* INTO v_old FROM users u
    WHERE u.organisation_id = p_org AND u.email_normalised = norm_email(p_email) FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::bigint, 0;
        RETURN;
    END IF;
    IF v_old.status = 'disabled' THEN
        -- nothing to change, but no live token may survive a disable (one issued by a race is revoked here)
        RETURN QUERY SELECT 'already'::text, v_old.id, auth_user_revoke_all(v_old.id, p_actor, 'disabled',
                                                                             p_correlation);
        RETURN;
    END IF;
    IF v_old.status IN ('pending_verification', 'pending_approval') AND v_old.customer_id IS NULL THEN
        -- a sign-up has no customer, which a disabled client needs; it cannot sign in anyway (nor hold tokens)
        RETURN QUERY SELECT 'pending'::text, v_old.id, 0;
        RETURN;
    END IF;
    UPDATE users u SET status = 'disabled', updated_at = now() WHERE u.id = v_old.id RETURNING * INTO v_new;
    PERFORM audit_write(p_org, p_actor, 'user.disable', 'user', v_old.id::text, auth_user_json(v_old),
                        auth_user_json(v_new), p_correlation);
    RETURN QUERY SELECT 'disabled'::text, v_old.id, auth_user_revoke_all(v_old.id, p_actor, 'disabled', p_correlation);
END
$$;

CREATE OR REPLACE FUNCTION auth_invitation_create(p_org bigint, p_email text, p_role text, p_customer bigint,
                                                  p_digest text, p_invited_by bigint, p_actor text,
                                                  p_correlation text)
RETURNS TABLE (result text, expires_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_inv invitations;
    v_refusal text;
BEGIN
    PERFORM audit_lock(p_org);
    v_refusal := auth_role_refusal(p_org, p_email, p_role, p_customer);
    IF v_refusal IS NOT NULL THEN
        RETURN QUERY SELECT v_refusal, NULL::timestamptz;
        RETURN;
    END IF;
    INSERT INTO invitations (digest, organisation_id, email, role, customer_id, invited_by)
    VALUES (p_digest, p_org, btrim(p_email), p_role, p_customer, p_invited_by)
    RETURNING * INTO v_inv;
    PERFORM audit_write(p_org, p_actor, 'user.invite', 'invitation', left(p_digest, 16), NULL,
                        jsonb_build_object('email', v_inv.email, 'role', v_inv.role, 'customer_id', v_inv.customer_id,
                                           'expires_at', v_inv.expires_at),
                        p_correlation);
    RETURN QUERY SELECT 'created'::text, v_inv.expires_at;
END
$$;

CREATE OR REPLACE FUNCTION auth_invitation_consume(p_digest text, p_password_hash text, p_correlation text)
RETURNS TABLE (result text, user_id bigint, organisation_id bigint, role text, customer_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_inv invitations;
    v_made record;
BEGIN
    SELECT i.* INTO v_inv FROM invitations i WHERE i.digest = p_digest;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::bigint, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    PERFORM audit_lock(v_inv.organisation_id);
    SELECT i.* INTO v_inv FROM invitations i WHERE i.digest = p_digest FOR UPDATE;  -- one use, even when raced
    IF v_inv.used_at IS NOT NULL THEN
        RETURN QUERY SELECT 'used'::text, NULL::bigint, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    IF v_inv.expires_at <= now() THEN
        RETURN QUERY SELECT 'expired'::text, NULL::bigint, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    SELECT * INTO v_made FROM auth_user_create(v_inv.organisation_id, v_inv.email, v_inv.role, v_inv.customer_id,
                                               p_password_hash, 'invitation:' || left(p_digest, 16), p_correlation);
    IF v_made.result <> 'created' THEN
        RETURN QUERY SELECT v_made.result, NULL::bigint, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    UPDATE invitations i SET used_at = now(), used_by = v_made.user_id WHERE i.digest = p_digest;
    -- the link came to that address: it is verified
    UPDATE users u SET email_verified_at = now() WHERE u.id = v_made.user_id;
    RETURN QUERY SELECT 'created'::text, v_made.user_id, v_inv.organisation_id, v_inv.role, v_inv.customer_id;
END
$$;

CREATE OR REPLACE FUNCTION auth_reset_create(p_org bigint, p_email text, p_digest text, p_correlation text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_user users;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT u.* INTO v_user FROM users u
    WHERE u.organisation_id = p_org AND u.email_normalised = norm_email(p_email) AND u.status = 'active';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO password_resets (digest, user_id) VALUES (p_digest, v_user.id);
    PERFORM audit_write(p_org, 'user:' || v_user.id, 'user.password_reset_requested', 'user', v_user.id::text, NULL,
                        NULL, p_correlation);
    RETURN v_user.id;
END
$$;

CREATE OR REPLACE FUNCTION auth_reset_consume(p_digest text, p_password_hash text, p_correlation text)
RETURNS TABLE (result text, user_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_reset password_resets;
    v_user users;
BEGIN
    SELECT r.* INTO v_reset FROM password_resets r WHERE r.digest = p_digest;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::bigint;
        RETURN;
    END IF;
    SELECT u.* INTO v_user FROM users u WHERE u.id = v_reset.user_id;
    PERFORM audit_lock(v_user.organisation_id);
    SELECT r.* INTO v_reset FROM password_resets r WHERE r.digest = p_digest FOR UPDATE;
    IF v_reset.used_at IS NOT NULL THEN
        RETURN QUERY SELECT 'used'::text, NULL::bigint;
        RETURN;
    END IF;
    IF v_reset.expires_at <= now() THEN
        RETURN QUERY SELECT 'expired'::text, NULL::bigint;
        RETURN;
    END IF;
    SELECT u.* INTO v_user FROM users u WHERE u.id = v_reset.user_id FOR UPDATE;
    IF v_user.status <> 'active' THEN
        RETURN QUERY SELECT 'inactive'::text, NULL::bigint;
        RETURN;
    END IF;
    -- this reset and every other open one of the user are spent
    UPDATE password_resets r SET used_at = now() WHERE r.user_id = v_user.id AND r.used_at IS NULL;
    UPDATE users u SET password_hash = p_password_hash, updated_at = now() WHERE u.id = v_user.id;
    PERFORM audit_write(v_user.organisation_id, 'user:' || v_user.id, 'user.password_reset', 'user', v_user.id::text,
                        NULL, NULL, p_correlation);
    PERFORM auth_user_revoke_all(v_user.id, 'user:' || v_user.id, 'password reset', p_correlation);
    RETURN QUERY SELECT 'reset'::text, v_user.id;
END
$$;

CREATE OR REPLACE FUNCTION auth_user_approve(p_org bigint, p_user bigint, p_customer bigint, p_actor text,
                                             p_correlation text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_old users;
    v_new users;
BEGIN
    PERFORM audit_lock(p_org);
    SELECT u.* INTO v_old FROM users u
    WHERE u.organisation_id = p_org AND u.id = p_user AND u.status = 'pending_approval' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'unknown';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM customers c WHERE c.organisation_id = p_org AND c.id = p_customer) THEN
        RETURN 'customer_unknown';
    END IF;
    UPDATE users u SET status = 'active', customer_id = p_customer, updated_at = now() WHERE u.id = p_user
    RETURNING * INTO v_new;
    PERFORM audit_write(p_org, p_actor, 'user.approve', 'user', p_user::text, auth_user_json(v_old),
                        auth_user_json(v_new), p_correlation);
    RETURN 'approved';
END
$$;

CREATE OR REPLACE FUNCTION auth_password_change(p_user bigint, p_password_hash text, p_correlation text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_user users;
BEGIN
    SELECT u.* INTO v_user FROM users u WHERE u.id = p_user;
    IF NOT FOUND THEN
        RETURN 'inactive';
    END IF;
    PERFORM audit_lock(v_user.organisation_id);
    SELECT u.* INTO v_user FROM users u WHERE u.id = p_user FOR UPDATE;
    IF v_user.status <> 'active' THEN
        RETURN 'inactive';
    END IF;
    UPDATE users u SET password_hash = p_password_hash, updated_at = now() WHERE u.id = p_user;
    PERFORM audit_write(v_user.organisation_id, 'user:' || p_user, 'user.password_change', 'user', p_user::text,
                        NULL, NULL, p_correlation);
    PERFORM auth_user_revoke_all(p_user, 'user:' || p_user, 'password change', p_correlation);
    RETURN 'changed';
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- The account e-mails (0026_account_emails.sql; docs/security.md, "Account e-mails"). The C side draws the token,
-- renders the message with its link (gateway/domain/account_mail.c) and hands both here, so that storing the
-- token's digest and enqueueing the message are one transaction: a token is never stored without its mail, nor a
-- mail without its token. The rendered bodies are the only place the token is in clear; notification_sent and
-- notification_fail (notifications.sql) remove it from them once the message is sent or dead.

CREATE OR REPLACE FUNCTION auth_mail_enqueue(p_org bigint, p_user bigint, p_kind text, p_dedupe_key text,
                                             p_recipient text, p_subject text, p_text text, p_html text,
                                             p_actor text, p_correlation text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_new notifications;
BEGIN
    IF p_kind NOT IN ('invitation', 'password_reset', 'email_verification') THEN
        RAISE EXCEPTION 'auth_mail_enqueue: % is not an account e-mail', p_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM audit_lock(p_org);
    INSERT INTO notifications (organisation_id, customer_id, user_id, kind, channel, dedupe_key, recipient, subject,
                               body_text, body_html, status)
    VALUES (p_org, NULL, p_user, p_kind, 'email', p_dedupe_key, btrim(p_recipient), p_subject, p_text, p_html,
            'pending')
    ON CONFLICT ON CONSTRAINT notifications_dedupe_key DO NOTHING
    RETURNING * INTO v_new;
    IF NOT FOUND THEN
        RETURN (SELECT n.id FROM notifications n WHERE n.dedupe_key = p_dedupe_key AND n.organisation_id = p_org);
    END IF;
    PERFORM audit_write(p_org, p_actor, 'notification.enqueue', 'notification', v_new.id::text, NULL,
                        notification_json(v_new) || jsonb_build_object('user_id', p_user), p_correlation);
    PERFORM pg_notify('settled_notifications', '');
    RETURN v_new.id;
END
$$;

CREATE OR REPLACE FUNCTION auth_invitation_mail(p_org bigint, p_email text, p_role text, p_customer bigint,
                                                p_digest text, p_invited_by bigint, p_actor text,
                                                p_correlation text, p_subject text, p_text text, p_html text)
RETURNS TABLE (result text, expires_at timestamptz, notification_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM auth_invitation_create(p_org, p_email, p_role, p_customer, p_digest, p_invited_by, p_actor,
                                                p_correlation);
    IF r.result <> 'created' OR p_subject IS NULL THEN
        RETURN QUERY SELECT r.result, r.expires_at, NULL::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT r.result, r.expires_at,
        auth_mail_enqueue(p_org, NULL, 'invitation', 'invitation:' || left(p_digest, 32), p_email, p_subject, p_text,
                          p_html, p_actor, p_correlation);
END
$$;

CREATE OR REPLACE FUNCTION auth_reset_mail(p_org bigint, p_email text, p_digest text, p_subject text, p_text text,
                                           p_html text, p_correlation text)
RETURNS TABLE (user_id bigint, notification_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_user bigint;
BEGIN
    v_user := auth_reset_create(p_org, p_email, p_digest, p_correlation);
    IF v_user IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT v_user,
        auth_mail_enqueue(p_org, v_user, 'password_reset', 'password_reset:' || left(p_digest, 32),
                          (SELECT u.email FROM users u WHERE u.id = v_user), p_subject, p_text, p_html,
                          'user:' || v_user, p_correlation);
END
$$;

DROP FUNCTION IF EXISTS auth_register(text, text, text, text);
CREATE OR REPLACE FUNCTION auth_register(p_org_slug text, p_email text, p_password_hash text, p_digest text,
                                         p_subject text, p_text text, p_html text, p_correlation text)
RETURNS TABLE (result text, user_id bigint, notification_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_org organisations;
    v_user users;
BEGIN
    SELECT o.* INTO v_org FROM organisations o WHERE o.slug = p_org_slug;
    IF NOT FOUND OR v_org.self_registration = 'off' THEN
        RETURN QUERY SELECT 'closed'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    PERFORM audit_lock(v_org.id);
    IF norm_email(p_email) IS NULL OR length(p_email) > 254 OR position('@' IN p_email) = 0 THEN
        RETURN QUERY SELECT 'email_invalid'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    v_user := auth_user_insert(v_org.id, p_email, 'client', NULL, p_password_hash, 'pending_verification');
    IF v_user.id IS NULL THEN
        RETURN QUERY SELECT 'email_taken'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    INSERT INTO email_verifications (digest, user_id) VALUES (p_digest, v_user.id);
    PERFORM audit_write(v_org.id, 'self-registration', 'user.register', 'user', v_user.id::text, NULL,
                        auth_user_json(v_user), p_correlation);
    RETURN QUERY SELECT 'pending'::text, v_user.id,
        auth_mail_enqueue(v_org.id, v_user.id, 'email_verification', 'email_verification:' || left(p_digest, 32),
                          v_user.email, p_subject, p_text, p_html, 'self-registration', p_correlation);
END
$$;

CREATE OR REPLACE FUNCTION auth_verify_email(p_digest text, p_correlation text)
RETURNS TABLE (result text, user_id bigint, status text, customer_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_ver email_verifications;
    v_old users;
    v_new users;
    v_matches bigint[];
BEGIN
    SELECT e.* INTO v_ver FROM email_verifications e WHERE e.digest = p_digest;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    SELECT u.* INTO v_old FROM users u WHERE u.id = v_ver.user_id;
    PERFORM audit_lock(v_old.organisation_id);
    SELECT e.* INTO v_ver FROM email_verifications e WHERE e.digest = p_digest FOR UPDATE;  -- one use, even raced
    IF v_ver.used_at IS NOT NULL THEN
        RETURN QUERY SELECT 'used'::text, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    IF v_ver.expires_at <= now() THEN
        RETURN QUERY SELECT 'expired'::text, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    SELECT u.* INTO v_old FROM users u WHERE u.id = v_ver.user_id FOR UPDATE;
    IF v_old.status <> 'pending_verification' THEN
        RETURN QUERY SELECT 'inactive'::text, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    UPDATE email_verifications e SET used_at = now() WHERE e.user_id = v_old.id AND e.used_at IS NULL;
    -- exactly one active customer of the organisation with this address (compared as norm_email does: trimmed,
    -- any case) makes the account its client at once; none or several leave the choice to an admin
    SELECT array_agg(c.id ORDER BY c.id) INTO v_matches FROM customers c
    WHERE c.organisation_id = v_old.organisation_id AND c.email_normalised = v_old.email_normalised
      AND c.archived_at IS NULL;
    IF cardinality(v_matches) = 1 THEN
        UPDATE users u SET status = 'active', customer_id = v_matches[1], email_verified_at = now(),
                           updated_at = now()
        WHERE u.id = v_old.id RETURNING * INTO v_new;
    ELSE
        UPDATE users u SET status = 'pending_approval', email_verified_at = now(), updated_at = now()
        WHERE u.id = v_old.id RETURNING * INTO v_new;
    END IF;
    PERFORM audit_write(v_old.organisation_id, 'user:' || v_old.id, 'user.email_verified', 'user', v_old.id::text,
                        auth_user_json(v_old),
                        auth_user_json(v_new) || jsonb_build_object('matching_customers',
                                                                    coalesce(cardinality(v_matches), 0)),
                        p_correlation);
    RETURN QUERY SELECT 'verified'::text, v_new.id, v_new.status, v_new.customer_id;
END
$$;
