-- SPDX-License-Identifier: MIT
-- 0020: who asked to connect Xero (gateway/domain/xero_oauth.c; docs/api.md, "Admin: Xero"). An admin who asks for
-- the authorisation URL through the portal API (GET /v1/admin/xero/connect) binds the state's nonce to its user id;
-- the callback then audits the connection as "user:<id>" instead of "system:oauth-callback". NULL: the command line
-- asked (`settled connect xero --authorize`). No foreign key: a state lives ten minutes, and the audit row keeps
-- the actor's text whatever becomes of the user.

ALTER TABLE xero_oauth_states ADD COLUMN user_id bigint;
