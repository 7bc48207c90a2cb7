/* SPDX-License-Identifier: MIT */
/*
 * sessions.h: the portal's sessions and account flows under /v1/auth (sign-in, refresh, sign-out, password change,
 * invitations, password resets, self-registration), over domain/session.h. Every call blocks (a database session,
 * Redis, a deliberately slow password hash), so each runs in the offload pool, whose bounded queue answers 503 when
 * full. docs/api.md ("Signing in"), docs/security.md. (Named sessions.h: the include directories of the floors
 * are one search path, where a second session.h would hide the domain's.)
 */
#ifndef GW_SESSIONS_H
#define GW_SESSIONS_H

#include "api.h"

int gw_sessions_login(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_sessions_refresh(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_sessions_logout(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_sessions_password(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_sessions_invitation_accept(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_sessions_reset_request(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_sessions_reset_confirm(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_sessions_register(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_sessions_verify_email(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

/* The declared inputs of each route, in the order its handler reads them. */
extern const gw_input_t gw_sessions_login_inputs[];
#define GW_SESSIONS_LOGIN_NINPUTS 3
extern const gw_input_t gw_sessions_refresh_inputs[];
#define GW_SESSIONS_REFRESH_NINPUTS 1
extern const gw_input_t gw_sessions_logout_inputs[];
#define GW_SESSIONS_LOGOUT_NINPUTS 1
extern const gw_input_t gw_sessions_password_inputs[];
#define GW_SESSIONS_PASSWORD_NINPUTS 2
extern const gw_input_t gw_sessions_token_password_inputs[]; /* invitation accept and reset confirm */
#define GW_SESSIONS_TOKEN_PASSWORD_NINPUTS 2
extern const gw_input_t gw_sessions_reset_request_inputs[];
#define GW_SESSIONS_RESET_REQUEST_NINPUTS 2
extern const gw_input_t gw_sessions_register_inputs[];
#define GW_SESSIONS_REGISTER_NINPUTS 3
extern const gw_input_t gw_sessions_verify_email_inputs[];
#define GW_SESSIONS_VERIFY_EMAIL_NINPUTS 1

/* The token rules the routes issue with (made once from the configuration for every loop). */
extern const gw_module_t gw_sessions_module;

#endif
