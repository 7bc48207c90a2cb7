-- SPDX-License-Identifier: MIT
-- 0015: the portal's accounts (DESIGN.md section 4): users (an organisation's admins and its customers' clients),
-- their rotating refresh tokens (stored as SHA-256 digests only), one-time invitations and password resets (digests
-- only too), and each organisation's self-registration setting. The functions that write them are in
-- schema/functions/auth.sql; docs/security.md says what is stored and why.

-- Whether people may sign themselves up to an organisation's portal: 'off' (only invitations and `settled user
-- add`), or 'approval' (a sign-up makes a pending_approval client that an admin approves and binds to a customer).
ALTER TABLE organisations
    ADD COLUMN self_registration text NOT NULL DEFAULT 'off' CHECK (self_registration IN ('off', 'approval'));

CREATE TABLE users (
    id               bigserial PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    email            text NOT NULL CHECK (norm_email(email) IS NOT NULL AND length(email) <= 254),
    -- one account per address and organisation, whatever its case or surrounding blanks
    email_normalised text GENERATED ALWAYS AS (norm_email(email)) STORED,
    role             text NOT NULL CHECK (role IN ('admin', 'client')),
    customer_id      bigint,
    -- a self-describing KDF string ("$scrypt$ln=15,r=8,p=1$salt$hash", gateway/domain/auth.c), never a password
    password_hash    text NOT NULL CHECK (password_hash LIKE '$%$%'),
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'pending_approval', 'disabled')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    last_login_at    timestamptz,
    CONSTRAINT users_organisation_id_id_key UNIQUE (organisation_id, id),
    CONSTRAINT users_email_key UNIQUE (organisation_id, email_normalised),
    -- a client's customer is one of its own organisation's (organisation-scoped, as customer_links)
    CONSTRAINT users_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id),
    -- an admin has no customer; a client has one, except while a self-registration waits for approval
    CONSTRAINT users_role_customer_check CHECK (
        (role = 'admin' AND customer_id IS NULL)
        OR (role = 'client' AND (customer_id IS NOT NULL OR status = 'pending_approval')))
);
CREATE INDEX users_customer_idx ON users (organisation_id, customer_id) WHERE customer_id IS NOT NULL;

-- One row per refresh token ever issued. A family is the chain of rotations that starts at one sign-in: each
-- refresh marks the presented token rotated and issues its child. A rotated (or revoked) token presented again
-- means it was copied, so the whole family is revoked (auth_refresh_rotate).
CREATE TABLE refresh_tokens (
    digest        text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'), -- lower-case hex SHA-256 of the token's text
    user_id       bigint NOT NULL REFERENCES users (id),
    family_id     uuid NOT NULL,
    parent_digest text REFERENCES refresh_tokens (digest),          -- NULL for a family's first token
    issued_at     timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    rotated_at    timestamptz,     -- when its child was issued: it is spent
    revoked_at    timestamptz,     -- when its family was revoked (sign-out, reuse, disabled user, password reset)
    user_agent    text CHECK (length(user_agent) <= 512),
    ip            inet,
    CHECK (expires_at > issued_at)
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_live_idx ON refresh_tokens (user_id) WHERE revoked_at IS NULL;

-- One-time invitations: the link carries a random token, of which only the digest is here. Accepting one creates
-- the user with the role (and customer) the invitation names.
CREATE TABLE invitations (
    digest           text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
    organisation_id  bigint NOT NULL REFERENCES organisations (id),
    email            text NOT NULL CHECK (norm_email(email) IS NOT NULL AND length(email) <= 254),
    email_normalised text GENERATED ALWAYS AS (norm_email(email)) STORED,
    role             text NOT NULL CHECK (role IN ('admin', 'client')),
    customer_id      bigint,
    invited_by       bigint,       -- the inviting admin (NULL: from the command line)
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL DEFAULT now() + interval '72 hours',
    used_at          timestamptz,
    used_by          bigint,       -- the user the invitation created
    CONSTRAINT invitations_customer_fkey FOREIGN KEY (organisation_id, customer_id)
        REFERENCES customers (organisation_id, id),
    CONSTRAINT invitations_invited_by_fkey FOREIGN KEY (organisation_id, invited_by)
        REFERENCES users (organisation_id, id),
    CONSTRAINT invitations_used_by_fkey FOREIGN KEY (organisation_id, used_by) REFERENCES users (organisation_id, id),
    CONSTRAINT invitations_role_customer_check CHECK ((role = 'client') = (customer_id IS NOT NULL))
);
CREATE INDEX invitations_email_idx ON invitations (organisation_id, email_normalised);

-- Password resets: a random token mailed to the user, its digest here, valid 30 minutes and once.
CREATE TABLE password_resets (
    digest      text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
    user_id     bigint NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL DEFAULT now() + interval '30 minutes',
    used_at     timestamptz
);
CREATE INDEX password_resets_user_idx ON password_resets (user_id) WHERE used_at IS NULL;
