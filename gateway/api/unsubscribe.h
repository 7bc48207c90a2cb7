/* SPDX-License-Identifier: MIT */
/*
 * unsubscribe.h: the reminders opt-out (docs/collections.md, "Unsubscribe"; docs/api.md, "Reminders and
 * unsubscribe").
 *
 * GET and POST /v1/unsubscribe?token=...: the public target of the reminders' List-Unsubscribe link, with no
 * access token (its own handlers, not the guard's: the page is HTML, and RFC 8058's one-click POST sends a form
 * body). The signed token (dunning.h) is checked on the loop, before any database work; a bad one is 400
 * unsubscribe_token_invalid. GET answers a small confirmation page and changes nothing (mail scanners follow
 * links); POST sets the customer's reminders_opt_out (dunning_opt_out_set on the loop's async pool, one statement,
 * audited 'customer.reminders_opt_out' as unsubscribe:<customer id>).
 *
 * GET and PUT /v1/me/reminders: a client's own opt-out (scoped by its customer, audited as user:<id>). The admins
 * change a customer's with PATCH /v1/admin/customers/{id} (reminders_opt_out; customers.c).
 */
#ifndef GW_UNSUBSCRIBE_H
#define GW_UNSUBSCRIBE_H

#include "api.h"

int gw_unsubscribe_page(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);
int gw_unsubscribe_post(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, h2o_iovec_t source);

#define GW_ME_REMINDERS_PUT_NINPUTS 1
extern const gw_input_t gw_me_reminders_put_inputs[GW_ME_REMINDERS_PUT_NINPUTS];
int gw_me_reminders_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);
int gw_me_reminders_put(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

extern const gw_module_t gw_unsubscribe_module;

#endif
