/* SPDX-License-Identifier: MIT */
/*
 * routes.c: the route table and its dispatcher, the access log (one JSON line and the request metrics
 * per finished request, including those h2o answers itself), and the filter that turns h2o's own
 * 413 into problem+json.
 */
#include "routes.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include "audit_api.h"
#include "customers.h"
#include "events.h"
#include "guard.h"
#include "intake.h"
#include "invoice_pdf.h"
#include "invoices.h"
#include "log.h"
#include "matching.h"
#include "me.h"
#include "metrics.h"
#include "notes.h"
#include "notifications_api.h"
#include "ops.h"
#include "payment_methods.h"
#include "payments_api.h"
#include "portal_task.h"
#include "reply.h"
#include "server.h"
#include "sessions.h"
#include "terms.h"
#include "unsubscribe.h"
#include "collections.h"
#include "dashboard.h"
#include "users.h"
#include "xero_admin.h"
#include "xero_callback.h"

#define REQUEST_ID_MAX 128

/* A webhook route of provider: POST /webhooks/<provider>[/<source>], answered by the intake. */
#define WEBHOOK_ROUTE(p)                                                                                               \
    {                                                                                                                  \
        .name = "webhooks_" #p, .method = "POST", .path = "/webhooks/" #p, .source_suffix = true,                      \
        .handler = gw_intake_handle, .data = &cn_##p##_connector, .provider = #p                                       \
    }

gw_route_t gw_routes[] = {
    WEBHOOK_ROUTE(stripe),
    WEBHOOK_ROUTE(xero),
    WEBHOOK_ROUTE(gocardless),
    {.name = "healthz", .method = "GET", .path = "/healthz", .handler = gw_ops_healthz, .ops = true, .head = true},
    {.name = "readyz", .method = "GET", .path = "/readyz", .handler = gw_ops_readyz, .ops = true, .head = true},
    {.name = "metrics", .method = "GET", .path = "/metrics", .handler = gw_ops_metrics, .ops = true},
    {.name = "xero_callback", .method = "GET", .path = "/v1/xero/callback", .handler = gw_xero_callback_handle},
    /* the portal API: each row declares who may call it and every input it takes; the guard checks both */
    {.name = "me",
     .method = "GET",
     .path = "/v1/me",
     .api = gw_me_get,
     .access = GW_ACCESS_ADMIN_CLIENT,
     .head = true,
     .summary = "The caller: user, role, organisation and customer"},
    {.name = "invoices_list",
     .method = "GET",
     .path = "/v1/invoices",
     .api = gw_invoices_list,
     .access = GW_ACCESS_ADMIN_CLIENT,
     .head = true,
     .inputs = gw_invoices_list_inputs,
     .ninputs = GW_INVOICES_LIST_NINPUTS,
     .summary = "The invoices the caller may see, newest first (keyset pagination, filters)"},
    {.name = "invoices_get",
     .method = "GET",
     .path = "/v1/invoices/{id}",
     .api = gw_invoices_get,
     .access = GW_ACCESS_ADMIN_CLIENT,
     .head = true,
     .inputs = gw_invoices_get_inputs,
     .ninputs = GW_INVOICES_GET_NINPUTS,
     .summary = "One invoice with its lines and payments"},
    /* admin: the webhook event log and replay, the Xero connection and quotas, the audit log (events.c,
     * xero_admin.c, audit_api.c; every one on the offload pool) */
    {.name = "admin_events_list",
     .method = "GET",
     .path = "/v1/admin/events",
     .api = gw_events_api_list,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_events_list_inputs,
     .ninputs = GW_EVENTS_LIST_NINPUTS,
     .summary = "The organisation's webhook events, newest first (filters, keyset pagination; no bodies)"},
    {.name = "admin_events_get",
     .method = "GET",
     .path = "/v1/admin/events/{id}",
     .api = gw_events_api_get,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_events_get_inputs,
     .ninputs = GW_EVENTS_GET_NINPUTS,
     .summary = "One webhook event with its raw body and headers, attempts and processing outcome"},
    {.name = "admin_events_replay_one",
     .method = "POST",
     .path = "/v1/admin/events/{id}/replay",
     .api = gw_events_api_replay_one,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_events_replay_one_inputs,
     .ninputs = GW_EVENTS_REPLAY_ONE_NINPUTS,
     .summary = "Replay one event, or (dry_run) say what replaying it would change"},
    {.name = "admin_events_replay",
     .method = "POST",
     .path = "/v1/admin/events/replay",
     .api = gw_events_api_replay,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_events_replay_inputs,
     .ninputs = GW_EVENTS_REPLAY_NINPUTS,
     .summary = "Replay the events of a filter since a time (at most 1000), or dry-run them"},
    {.name = "admin_xero_connect",
     .method = "GET",
     .path = "/v1/admin/xero/connect",
     .api = gw_xero_admin_connect,
     .access = GW_ACCESS_ADMIN,
     .summary = "The Xero authorisation URL, bound to the calling admin"},
    {.name = "admin_xero",
     .method = "GET",
     .path = "/v1/admin/xero",
     .api = gw_xero_admin_status,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .summary = "The Xero connection: token sets, tenants and their remaining quotas"},
    {.name = "admin_audit_list",
     .method = "GET",
     .path = "/v1/admin/audit",
     .api = gw_audit_api_list,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_audit_list_inputs,
     .ninputs = GW_AUDIT_LIST_NINPUTS,
     .summary = "The organisation's audit log, newest first (filters, keyset pagination)"},
    {.name = "admin_audit_verify",
     .method = "POST",
     .path = "/v1/admin/audit/verify",
     .api = gw_audit_api_verify,
     .access = GW_ACCESS_ADMIN,
     .summary = "Check the organisation's audit hash chain; name its first broken link"},
    /* admin: customers, matching, payment terms, users and invitations (customers.c, matching.c, terms.c, users.c) */
    {.name = "admin_customers_list",
     .method = "GET",
     .path = "/v1/admin/customers",
     .api = gw_customers_list,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_customers_list_inputs,
     .ninputs = GW_CUSTOMERS_LIST_NINPUTS,
     .summary = "The organisation's customers by id (search q over name and email, keyset pagination)"},
    {.name = "admin_customers_create",
     .method = "POST",
     .path = "/v1/admin/customers",
     .api = gw_customers_create,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_customers_create_inputs,
     .ninputs = GW_CUSTOMERS_CREATE_NINPUTS,
     .summary = "Creates a customer"},
    {.name = "admin_customers_get",
     .method = "GET",
     .path = "/v1/admin/customers/{id}",
     .api = gw_customers_get,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_customers_get_inputs,
     .ninputs = GW_CUSTOMERS_GET_NINPUTS,
     .summary = "One customer with its Xero contacts, Stripe and GoCardless customers and terms"},
    {.name = "admin_customers_update",
     .method = "PATCH",
     .path = "/v1/admin/customers/{id}",
     .api = gw_customers_update,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_customers_update_inputs,
     .ninputs = GW_CUSTOMERS_UPDATE_NINPUTS,
     .summary = "Changes a customer's name, email, tax number or account number"},
    {.name = "admin_customers_archive",
     .method = "POST",
     .path = "/v1/admin/customers/{id}/archive",
     .api = gw_customers_archive,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_customers_archive_inputs,
     .ninputs = GW_CUSTOMERS_ARCHIVE_NINPUTS,
     .summary = "Archives a customer (no longer a matching candidate)"},
    {.name = "admin_customer_terms_get",
     .method = "GET",
     .path = "/v1/admin/customers/{id}/terms",
     .api = gw_terms_customer_get,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_terms_customer_inputs,
     .ninputs = GW_TERMS_CUSTOMER_NINPUTS,
     .summary = "A customer's payment terms: its override, the default and the effective terms"},
    {.name = "admin_customer_terms_put",
     .method = "PUT",
     .path = "/v1/admin/customers/{id}/terms",
     .api = gw_terms_customer_put,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_terms_customer_put_inputs,
     .ninputs = GW_TERMS_CUSTOMER_PUT_NINPUTS,
     .summary = "Sets a customer's payment terms override"},
    {.name = "admin_customer_terms_delete",
     .method = "DELETE",
     .path = "/v1/admin/customers/{id}/terms",
     .api = gw_terms_customer_delete,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_terms_customer_inputs,
     .ninputs = GW_TERMS_CUSTOMER_NINPUTS,
     .summary = "Removes a customer's payment terms override"},
    {.name = "admin_terms_get",
     .method = "GET",
     .path = "/v1/admin/terms",
     .api = gw_terms_get,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .summary = "The organisation's default payment terms"},
    {.name = "admin_terms_put",
     .method = "PUT",
     .path = "/v1/admin/terms",
     .api = gw_terms_put,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_terms_put_inputs,
     .ninputs = GW_TERMS_PUT_NINPUTS,
     .summary = "Sets the organisation's default payment terms"},
    /* collections: the organisation's time zone and dunning plans (terms.c; docs/collections.md) */
    {.name = "admin_timezone_get",
     .method = "GET",
     .path = "/v1/admin/timezone",
     .api = gw_terms_timezone_get,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .summary = "The organisation's time zone (its today for due dates)"},
    {.name = "admin_timezone_put",
     .method = "PUT",
     .path = "/v1/admin/timezone",
     .api = gw_terms_timezone_put,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_terms_timezone_put_inputs,
     .ninputs = GW_TERMS_TIMEZONE_PUT_NINPUTS,
     .summary = "Sets the organisation's time zone (a tz database name)"},
    {.name = "admin_dunning_get",
     .method = "GET",
     .path = "/v1/admin/dunning-plan",
     .api = gw_terms_dunning_get,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .summary = "The organisation's dunning plan (the default plan until one is set)"},
    {.name = "admin_dunning_put",
     .method = "PUT",
     .path = "/v1/admin/dunning-plan",
     .api = gw_terms_dunning_put,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_terms_dunning_put_inputs,
     .ninputs = GW_TERMS_DUNNING_PUT_NINPUTS,
     .summary = "Sets the organisation's dunning plan"},
    {.name = "admin_customer_dunning_get",
     .method = "GET",
     .path = "/v1/admin/customers/{id}/dunning-plan",
     .api = gw_terms_dunning_customer_get,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_terms_customer_inputs,
     .ninputs = GW_TERMS_CUSTOMER_NINPUTS,
     .summary = "A customer's dunning plan: its override, the organisation's plan and the effective steps"},
    {.name = "admin_customer_dunning_put",
     .method = "PUT",
     .path = "/v1/admin/customers/{id}/dunning-plan",
     .api = gw_terms_dunning_customer_put,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_terms_dunning_customer_put_inputs,
     .ninputs = GW_TERMS_DUNNING_CUSTOMER_PUT_NINPUTS,
     .summary = "Sets a customer's dunning plan override"},
    {.name = "admin_customer_dunning_delete",
     .method = "DELETE",
     .path = "/v1/admin/customers/{id}/dunning-plan",
     .api = gw_terms_dunning_customer_delete,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_terms_customer_inputs,
     .ninputs = GW_TERMS_CUSTOMER_NINPUTS,
     .summary = "Removes a customer's dunning plan override"},
    {.name = "admin_matching_list",
     .method = "GET",
     .path = "/v1/admin/matching",
     .api = gw_matching_list,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_matching_list_inputs,
     .ninputs = GW_MATCHING_LIST_NINPUTS,
     .summary = "The open matching-queue entries with their candidates"},
    {.name = "admin_matching_accept",
     .method = "POST",
     .path = "/v1/admin/matching/{id}/accept",
     .api = gw_matching_accept,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_matching_pick_inputs,
     .ninputs = GW_MATCHING_PICK_NINPUTS,
     .summary = "Links the entry's provider customer to one of its candidates"},
    {.name = "admin_matching_link",
     .method = "POST",
     .path = "/v1/admin/matching/{id}/link",
     .api = gw_matching_link,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_matching_pick_inputs,
     .ninputs = GW_MATCHING_PICK_NINPUTS,
     .summary = "Links the entry's provider customer to any customer of the organisation"},
    {.name = "admin_matching_reject",
     .method = "POST",
     .path = "/v1/admin/matching/{id}/reject",
     .api = gw_matching_reject,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_matching_item_inputs,
     .ninputs = GW_MATCHING_ITEM_NINPUTS,
     .summary = "Dismisses the entry"},
    {.name = "admin_matching_create_customer",
     .method = "POST",
     .path = "/v1/admin/matching/{id}/create-customer",
     .api = gw_matching_create_customer,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_matching_item_inputs,
     .ninputs = GW_MATCHING_ITEM_NINPUTS,
     .summary = "Creates a customer from the entry's provider customer and links it"},
    {.name = "admin_users_list",
     .method = "GET",
     .path = "/v1/admin/users",
     .api = gw_users_list,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_users_list_inputs,
     .ninputs = GW_USERS_LIST_NINPUTS,
     .summary = "The organisation's users by id"},
    {.name = "admin_users_disable",
     .method = "POST",
     .path = "/v1/admin/users/{id}/disable",
     .api = gw_users_disable,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_users_disable_inputs,
     .ninputs = GW_USERS_DISABLE_NINPUTS,
     .summary = "Disables a user: its sessions are revoked and its access tokens denied"},
    {.name = "admin_users_approve",
     .method = "POST",
     .path = "/v1/admin/users/{id}/approve",
     .api = gw_users_approve,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_users_approve_inputs,
     .ninputs = GW_USERS_APPROVE_NINPUTS,
     .summary = "Approves a self-registered user as a client of a customer"},
    {.name = "admin_invitations_create",
     .method = "POST",
     .path = "/v1/admin/invitations",
     .api = gw_users_invite,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_users_invite_inputs,
     .ninputs = GW_USERS_INVITE_NINPUTS,
     .summary = "Invites a user (72 hours, single use): the link is e-mailed through the outbox"},
    {.name = "admin_settings_get",
     .method = "GET",
     .path = "/v1/admin/settings",
     .api = gw_settings_get,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .summary = "The organisation's settings (self_registration)"},
    {.name = "admin_settings_put",
     .method = "PUT",
     .path = "/v1/admin/settings",
     .api = gw_settings_put,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_settings_put_inputs,
     .ninputs = GW_SETTINGS_PUT_NINPUTS,
     .summary = "Changes the organisation's settings"},
/* the portal's sessions and account flows (gateway/api/sessions.c, docs/api.md "Signing in") */
#define SESSION_ROUTE(n, p, fn, acc, ins, nins, sum)                                                                   \
    {                                                                                                                  \
        .name = n, .method = "POST", .path = p, .api = fn, .access = acc, .inputs = ins, .ninputs = nins,              \
        .summary = sum                                                                                                 \
    }
    SESSION_ROUTE("auth_login", "/v1/auth/login", gw_sessions_login, GW_ACCESS_PUBLIC, gw_sessions_login_inputs,
                  GW_SESSIONS_LOGIN_NINPUTS, "Sign in with an email address and a password: tokens"),
    SESSION_ROUTE("auth_refresh", "/v1/auth/refresh", gw_sessions_refresh, GW_ACCESS_PUBLIC, gw_sessions_refresh_inputs,
                  GW_SESSIONS_REFRESH_NINPUTS,
                  "Trade a refresh token for new tokens (rotated; a reused one revokes its family)"),
    SESSION_ROUTE("auth_logout", "/v1/auth/logout", gw_sessions_logout, GW_ACCESS_ADMIN_CLIENT,
                  gw_sessions_logout_inputs, GW_SESSIONS_LOGOUT_NINPUTS,
                  "Sign out: the access token is denied, the refresh token's family revoked"),
    SESSION_ROUTE("auth_password", "/v1/auth/password", gw_sessions_password, GW_ACCESS_ADMIN_CLIENT,
                  gw_sessions_password_inputs, GW_SESSIONS_PASSWORD_NINPUTS,
                  "Change the caller's password (other sessions are signed out): new tokens"),
    SESSION_ROUTE("auth_invitation_accept", "/v1/auth/invitations/accept", gw_sessions_invitation_accept,
                  GW_ACCESS_PUBLIC, gw_sessions_token_password_inputs, GW_SESSIONS_TOKEN_PASSWORD_NINPUTS,
                  "Accept an invitation with a password: the account, signed in"),
    SESSION_ROUTE("auth_password_reset", "/v1/auth/password-reset", gw_sessions_reset_request, GW_ACCESS_PUBLIC,
                  gw_sessions_reset_request_inputs, GW_SESSIONS_RESET_REQUEST_NINPUTS,
                  "Ask for a password reset (always 202)"),
    SESSION_ROUTE("auth_password_reset_confirm", "/v1/auth/password-reset/confirm", gw_sessions_reset_confirm,
                  GW_ACCESS_PUBLIC, gw_sessions_token_password_inputs, GW_SESSIONS_TOKEN_PASSWORD_NINPUTS,
                  "Set a new password with a reset token"),
    SESSION_ROUTE("auth_register", "/v1/auth/register", gw_sessions_register, GW_ACCESS_PUBLIC,
                  gw_sessions_register_inputs, GW_SESSIONS_REGISTER_NINPUTS,
                  "Register as a client of an organisation that allows it (mails a verification link)"),
    /* account e-mails: the verification of a self-registration's address (sessions.c) */
    SESSION_ROUTE("auth_verify_email", "/v1/auth/verify-email", gw_sessions_verify_email, GW_ACCESS_PUBLIC,
                  gw_sessions_verify_email_inputs, GW_SESSIONS_VERIFY_EMAIL_NINPUTS,
                  "Verify a registration's e-mail address with its token: a client, or waiting for approval"),
#undef SESSION_ROUTE
    /* the client's payments, payment methods and invoice PDFs (payments.c, payment_methods.c, invoice_pdf.c) */
    {.name = "invoice_pdf",
     .method = "GET",
     .path = "/v1/invoices/{id}/pdf",
     .api = gw_invoice_pdf_get,
     .access = GW_ACCESS_ADMIN_CLIENT,
     .inputs = gw_invoices_get_inputs,
     .ninputs = GW_INVOICES_GET_NINPUTS,
     .summary = "The invoice as Xero renders it (PDF), cached by its UpdatedDateUTC"},
    {.name = "payments_list",
     .method = "GET",
     .path = "/v1/payments",
     .api = gw_payments_list,
     .access = GW_ACCESS_ADMIN_CLIENT,
     .head = true,
     .inputs = gw_payments_list_inputs,
     .ninputs = GW_PAYMENTS_LIST_NINPUTS,
     .summary = "The payments the caller may see, newest first, with refunds, disputes and the invoice paid"},
    {.name = "payment_methods_list",
     .method = "GET",
     .path = "/v1/payment-methods",
     .api = gw_pm_list,
     .access = GW_ACCESS_CLIENT,
     .head = true,
     .summary = "The customer's cards and direct-debit mandates, the default flagged"},
    {.name = "payment_methods_card",
     .method = "POST",
     .path = "/v1/payment-methods/card",
     .api = gw_pm_card,
     .access = GW_ACCESS_CLIENT,
     .summary = "Start adding a card: a Stripe SetupIntent for the customer (its client_secret)"},
    {.name = "payment_methods_direct_debit",
     .method = "POST",
     .path = "/v1/payment-methods/direct-debit",
     .api = gw_pm_direct_debit,
     .access = GW_ACCESS_CLIENT,
     .inputs = gw_pm_direct_debit_inputs,
     .ninputs = GW_PM_DIRECT_DEBIT_NINPUTS,
     .summary = "Start adding a direct-debit mandate: a GoCardless billing request flow (its authorisation_url)"},
    {.name = "payment_methods_delete",
     .method = "DELETE",
     .path = "/v1/payment-methods/{id}",
     .api = gw_pm_delete,
     .access = GW_ACCESS_CLIENT,
     .inputs = gw_pm_id_inputs,
     .ninputs = GW_PM_ID_NINPUTS,
     .summary = "Remove a payment method: the card detached or the mandate cancelled at the provider"},
    {.name = "payment_methods_default",
     .method = "PUT",
     .path = "/v1/payment-methods/{id}/default",
     .api = gw_pm_default,
     .access = GW_ACCESS_CLIENT,
     .inputs = gw_pm_id_inputs,
     .ninputs = GW_PM_ID_NINPUTS,
     .summary = "Make a payment method the customer's default"},
    /* notifications: the client's portal notifications, the admins' outbox (notifications_api.c) */
    {.name = "notifications_list",
     .method = "GET",
     .path = "/v1/notifications",
     .api = gw_notifications_list,
     .access = GW_ACCESS_CLIENT,
     .head = true,
     .inputs = gw_notifications_list_inputs,
     .ninputs = GW_NOTIFICATIONS_LIST_NINPUTS,
     .summary = "The customer's portal notifications, newest first, each with its read flag"},
    {.name = "notifications_read",
     .method = "POST",
     .path = "/v1/notifications/{id}/read",
     .api = gw_notifications_read,
     .access = GW_ACCESS_CLIENT,
     .inputs = gw_notifications_read_inputs,
     .ninputs = GW_NOTIFICATIONS_READ_NINPUTS,
     .summary = "Mark one of the customer's portal notifications read"},
    {.name = "admin_notifications_list",
     .method = "GET",
     .path = "/v1/admin/notifications",
     .api = gw_notifications_admin_list,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_notifications_admin_inputs,
     .ninputs = GW_NOTIFICATIONS_ADMIN_NINPUTS,
     .summary = "The organisation's notifications and e-mails, newest first (status=dead: the dead letters)"},
    /* reminders and unsubscribe: the public unsubscribe page and its one-click POST (own handlers: HTML, a form
     * body), the client's own opt-out (unsubscribe.c; docs/collections.md "Unsubscribe") */
    {.name = "unsubscribe_page", .method = "GET", .path = "/v1/unsubscribe", .handler = gw_unsubscribe_page},
    {.name = "unsubscribe", .method = "POST", .path = "/v1/unsubscribe", .handler = gw_unsubscribe_post},
    {.name = "me_reminders_get",
     .method = "GET",
     .path = "/v1/me/reminders",
     .api = gw_me_reminders_get,
     .access = GW_ACCESS_CLIENT,
     .head = true,
     .summary = "The customer's reminders opt-out"},
    {.name = "me_reminders_put",
     .method = "PUT",
     .path = "/v1/me/reminders",
     .api = gw_me_reminders_put,
     .access = GW_ACCESS_CLIENT,
     .inputs = gw_me_reminders_put_inputs,
     .ninputs = GW_ME_REMINDERS_PUT_NINPUTS,
     .summary = "Opts the customer out of (or back into) the payment reminders; receipts are always sent"},
    /* automatic collection: pauses and an invoice's attempts (collections.c; docs/collections.md) */
    {.name = "admin_customer_collection_pause",
     .method = "POST",
     .path = "/v1/admin/customers/{id}/collection-pause",
     .api = gw_collections_customer_pause,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_collections_customer_pause_inputs,
     .ninputs = GW_COLLECTIONS_CUSTOMER_PAUSE_NINPUTS,
     .summary = "Pauses automatic collection of every invoice of a customer (with a reason)"},
    {.name = "admin_customer_collection_unpause",
     .method = "DELETE",
     .path = "/v1/admin/customers/{id}/collection-pause",
     .api = gw_collections_customer_unpause,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_collections_customer_inputs,
     .ninputs = GW_COLLECTIONS_CUSTOMER_NINPUTS,
     .summary = "Resumes automatic collection of a customer's invoices"},
    {.name = "admin_invoice_collection_pause",
     .method = "POST",
     .path = "/v1/admin/invoices/{id}/collection-pause",
     .api = gw_collections_invoice_pause,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_collections_invoice_pause_inputs,
     .ninputs = GW_COLLECTIONS_INVOICE_PAUSE_NINPUTS,
     .summary = "Pauses automatic collection of one invoice (with a reason)"},
    {.name = "admin_invoice_collection_unpause",
     .method = "DELETE",
     .path = "/v1/admin/invoices/{id}/collection-pause",
     .api = gw_collections_invoice_unpause,
     .access = GW_ACCESS_ADMIN,
     .inputs = gw_collections_invoice_inputs,
     .ninputs = GW_COLLECTIONS_INVOICE_NINPUTS,
     .summary = "Resumes automatic collection of one invoice"},
    {.name = "admin_invoice_collections",
     .method = "GET",
     .path = "/v1/admin/invoices/{id}/collections",
     .api = gw_collections_invoice_get,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_collections_invoice_inputs,
     .ninputs = GW_COLLECTIONS_INVOICE_NINPUTS,
     .summary = "An invoice's automatic collection: its pauses and every attempt, oldest first"},
    /* what the admins see of collections: an invoice's timeline, the organisation's figures (docs/collections.md) */
    {.name = "admin_invoice_timeline",
     .method = "GET",
     .path = "/v1/admin/invoices/{id}/timeline",
     .api = gw_collections_invoice_timeline,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .inputs = gw_collections_invoice_inputs,
     .ninputs = GW_COLLECTIONS_INVOICE_NINPUTS,
     .summary = "An invoice's collection and reminder timeline: attempts, dunning steps, next step, messages"},
    {.name = "admin_dashboard",
     .method = "GET",
     .path = "/v1/admin/dashboard",
     .api = gw_dashboard_get,
     .access = GW_ACCESS_ADMIN,
     .head = true,
     .summary = "The organisation's figures: outstanding, overdue, due this week, collected and failed this month"},
};
const size_t gw_nroutes = sizeof(gw_routes) / sizeof(gw_routes[0]);
_Static_assert(sizeof(gw_routes) / sizeof(gw_routes[0]) < GW_METRICS_MAX_ROUTES, "raise GW_METRICS_MAX_ROUTES");

const gw_module_t *const gw_modules[] = {&gw_intake_module, &gw_me_module, &gw_invoices_module,
                                         /* admin: customers, matching, terms, users */
                                         &gw_customers_module, &gw_matching_module, &gw_terms_module, &gw_users_module,
                                         /* the portal's sessions */
                                         &gw_sessions_module,
                                         /* the client's payments, payment methods and invoice PDFs */
                                         &gw_payments_api_module, &gw_pm_module, &gw_invoice_pdf_module,
                                         &gw_portal_task_module,
                                         /* notifications */
                                         &gw_notifications_module,
                                         /* reminders and unsubscribe */
                                         &gw_unsubscribe_module,
                                         /* automatic collection */
                                         &gw_collections_module, &gw_dashboard_module};
const size_t gw_nmodules = sizeof(gw_modules) / sizeof(gw_modules[0]);
_Static_assert(sizeof(gw_modules) / sizeof(gw_modules[0]) <= GW_LOOP_MAX_MODULES, "raise GW_LOOP_MAX_MODULES");

/* Matches path against a pattern with {param} segments (each one non-empty segment without '/'); stores the
 * segments' values into params (at most GW_PATH_PARAMS_MAX) and their number into *nparams. */
static bool match_pattern(const char *pattern, h2o_iovec_t path, h2o_iovec_t *params, size_t *nparams)
{
    size_t pi = 0, n = 0;
    const char *p = pattern;
    while (*p != '\0') {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (close == NULL || n == GW_PATH_PARAMS_MAX)
                return false;
            size_t start = pi;
            while (pi != path.len && path.base[pi] != '/')
                ++pi;
            if (pi == start)
                return false;
            params[n++] = h2o_iovec_init(path.base + start, pi - start);
            p = close + 1;
        } else {
            if (pi == path.len || path.base[pi] != *p)
                return false;
            ++pi, ++p;
        }
    }
    *nparams = n;
    return pi == path.len;
}

/* Matches path against route; on a match stores the /{source} segment (empty if none), or the values of the
 * pattern's {param} segments into params, and returns true. */
static bool match_route(const gw_route_t *route, h2o_iovec_t path, h2o_iovec_t *source, h2o_iovec_t *params,
                        size_t *nparams)
{
    *nparams = 0;
    if (strchr(route->path, '{') != NULL) {
        *source = h2o_iovec_init(NULL, 0);
        return match_pattern(route->path, path, params, nparams);
    }
    size_t plen = strlen(route->path);
    if (path.len < plen || memcmp(path.base, route->path, plen) != 0)
        return false;
    if (path.len == plen) {
        *source = h2o_iovec_init(NULL, 0);
        return true;
    }
    if (!route->source_suffix || path.base[plen] != '/' || path.len == plen + 1)
        return false;
    *source = h2o_iovec_init(path.base + plen + 1, path.len - plen - 1);
    return memchr(source->base, '/', source->len) == NULL;
}

static bool match_path(const gw_route_t *route, h2o_iovec_t path, h2o_iovec_t *source)
{
    h2o_iovec_t params[GW_PATH_PARAMS_MAX];
    size_t nparams;
    return match_route(route, path, source, params, &nparams);
}

const gw_route_t *gw_routes_classify(h2o_iovec_t path)
{
    h2o_iovec_t source;
    if (path.base != NULL)
        for (size_t i = 0; i != gw_nroutes; ++i)
            if (match_path(&gw_routes[i], path, &source))
                return &gw_routes[i];
    return NULL;
}

/* The metrics index of a request's route: its id, or the "other" bucket after the last route. */
static size_t metrics_route(const gw_route_t *route)
{
    return route != NULL ? route->id : gw_nroutes;
}

static bool valid_request_id(h2o_iovec_t v)
{
    if (v.len == 0 || v.len > REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i != v.len; ++i) {
        char c = v.base[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

/* Takes the caller's X-Request-Id when it is sane, else makes one; either way it is echoed. */
static void stamp_request_id(gw_loop_t *loop, h2o_req_t *req)
{
    h2o_iovec_t id = h2o_iovec_init(NULL, 0);
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (i != -1 && valid_request_id(req->headers.entries[i].value)) {
        id = req->headers.entries[i].value;
    } else {
        char *buf = h2o_mem_alloc_pool(&req->pool, 33);
        snprintf(buf, 33, "%s%016llx", loop->request_prefix, (unsigned long long)++loop->request_seq);
        id = h2o_iovec_init(buf, 32);
    }
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, id.base, id.len);
}

/* A request read while the loop flushes its last replies: nothing of it may start, the client retries elsewhere. */
static int refuse_while_flushing(gw_loop_t *loop, h2o_req_t *req)
{
    const gw_route_t *route = gw_routes_classify(req->path_normalized);
    const cn_connector_t *cn = route != NULL && route->provider != NULL ? route->data : NULL;
    gw_reply_retry_after(req, loop->cfg->retry_after);
    if (cn != NULL && cn->bare_replies)
        gw_reply_empty(req, 503);
    else
        gw_reply_problem(req, 503, gw_err_store_unavailable, "The server is shutting down; retry later.");
    return 0;
}

/* The route handler: every route, or (ops_only) the operator endpoints alone, on settled work's ops listener. */
typedef struct st_route_handler_t {
    h2o_handler_t super;
    bool ops_only;
} route_handler_t;

static int on_req(h2o_handler_t *_self, h2o_req_t *req)
{
    route_handler_t *self = (void *)_self;
    gw_loop_t *loop = gw_loop_of(req);
    stamp_request_id(loop, req);
    if (loop->state == GW_LOOP_FLUSHING)
        return refuse_while_flushing(loop, req);

    char allow[64];
    size_t allow_len = 0;
    bool api = false;
    for (size_t i = 0; i != gw_nroutes; ++i) {
        const gw_route_t *route = &gw_routes[i];
        h2o_iovec_t source, params[GW_PATH_PARAMS_MAX];
        size_t nparams;
        if ((self->ops_only && !route->ops) || !match_route(route, req->path_normalized, &source, params, &nparams))
            continue;
        api |= route->api != NULL;
        if (h2o_memis(req->method.base, req->method.len, route->method, strlen(route->method)) ||
            (route->head && h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))))
            return route->api != NULL ? gw_guard_run(loop, req, route, params, nparams)
                                      : route->handler(loop, req, route, source);
        size_t mlen = strlen(route->method);
        if (allow_len + mlen + 2 < sizeof(allow)) {
            if (allow_len != 0)
                allow[allow_len++] = ',', allow[allow_len++] = ' ';
            memcpy(allow + allow_len, route->method, mlen);
            allow_len += mlen;
            if (route->head && allow_len + 6 < sizeof(allow)) {
                memcpy(allow + allow_len, ", HEAD", 6);
                allow_len += 6;
            }
        }
    }
    if (api) {
        allow[allow_len] = '\0';
        if (gw_guard_preflight(loop->cfg, req, allow))
            return 0;
        gw_guard_cors(loop->cfg, req);
    }
    if (allow_len != 0) {
        char *v = h2o_mem_alloc_pool(&req->pool, allow_len);
        memcpy(v, allow, allow_len);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, v, allow_len);
        gw_reply_problem(req, 405, gw_err_method_not_allowed, "This resource does not accept that method.");
    } else {
        gw_reply_problem(req, 404, gw_err_not_found, NULL);
    }
    return 0;
}

/* h2o rejects an oversized body itself, as text/plain, before any handler runs; this output filter
 * replaces that reply with problem+json (or nothing, on the Xero route). */
typedef struct st_rewrite_ostream_t {
    h2o_ostream_t super;
    h2o_iovec_t body;
    bool sent;
} rewrite_ostream_t;

static void on_rewrite_send(h2o_ostream_t *_self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                            h2o_send_state_t state)
{
    rewrite_ostream_t *self = (void *)_self;
    if (!self->sent && self->body.len != 0) {
        self->sent = true;
        h2o_ostream_send_next(&self->super, req, &self->body, 1, state);
    } else {
        h2o_ostream_send_next(&self->super, req, NULL, 0, state);
    }
}

static void on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    /* once the server stops, every reply (also of a request read before) carries Connection: close */
    if (gw_loop_of(req)->state != GW_LOOP_SERVING)
        req->http1_is_persistent = 0;
    if (req->res.status == 413 && h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1) != -1 &&
        h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1) == -1) {
        gw_loop_t *loop = gw_loop_of(req);
        memset(&req->res.headers, 0, sizeof(req->res.headers));
        stamp_request_id(loop, req);
        h2o_iovec_t body = h2o_iovec_init(NULL, 0);
        const gw_route_t *route = gw_routes_classify(req->path_normalized);
        const cn_connector_t *cn = route != NULL && route->provider != NULL ? route->data : NULL;
        if (cn == NULL || !cn->bare_replies) {
            ssize_t i = h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1);
            gw_note(req, GW_NOTE_DETAIL, H2O_STRLIT("The request body exceeds SETTLED_BODY_LIMIT."));
            body = gw_reply_problem_body(&req->pool, 413, gw_err_body_too_large,
                                         "The request body exceeds SETTLED_BODY_LIMIT.",
                                         req->res.headers.entries[i].value);
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                           H2O_STRLIT("application/problem+json"));
        }
        gw_note(req, GW_NOTE_PROBLEM, gw_err_body_too_large, strlen(gw_err_body_too_large));
        req->res.content_length = body.len;
        rewrite_ostream_t *os = (void *)h2o_add_ostream(req, sizeof(*os), slot);
        os->super.do_send = on_rewrite_send;
        os->body = body;
        os->sent = false;
        slot = &os->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

/* Appends the peer's address ("client"), without the port. */
static void log_client(gw_logline_t *line, h2o_req_t *req)
{
    struct sockaddr_storage ss;
    if (req->conn == NULL || req->conn->callbacks->get_peername == NULL ||
        req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) == 0)
        return;
    char addr[INET6_ADDRSTRLEN];
    const void *a = ss.ss_family == AF_INET    ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                    : ss.ss_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                               : NULL;
    if (a != NULL && inet_ntop(ss.ss_family, a, addr, sizeof(addr)) != NULL)
        gw_log_str(line, "client", addr, strlen(addr));
}

/* Appends what the handler noted (notes.h): strings, two counts and a flag. */
static void log_notes(gw_logline_t *line, h2o_req_t *req)
{
    static const char *const strings[] = {GW_NOTE_SOURCE, GW_NOTE_EVENT_ID, GW_NOTE_PROBLEM, GW_NOTE_DETAIL};
    for (size_t i = 0; i != sizeof(strings) / sizeof(strings[0]); ++i) {
        h2o_iovec_t v = gw_note_get(req, strings[i]);
        if (v.base != NULL)
            gw_log_str(line, strings[i], v.base, v.len);
    }
    static const char *const counts[] = {GW_NOTE_EVENTS, GW_NOTE_NEW_EVENTS};
    for (size_t i = 0; i != sizeof(counts) / sizeof(counts[0]); ++i) {
        h2o_iovec_t v = gw_note_get(req, counts[i]);
        if (v.base != NULL) {
            long long n = 0;
            for (size_t k = 0; k != v.len && v.base[k] >= '0' && v.base[k] <= '9'; ++k)
                n = n * 10 + (v.base[k] - '0');
            gw_log_int(line, counts[i], n);
        }
    }
    h2o_iovec_t dup = gw_note_get(req, GW_NOTE_DUPLICATE);
    if (dup.base != NULL)
        gw_log_bool(line, GW_NOTE_DUPLICATE, h2o_memis(dup.base, dup.len, H2O_STRLIT("true")));
}

static void on_log_access(h2o_logger_t *self, h2o_req_t *req)
{
    gw_loop_t *loop = gw_loop_of(req);
    struct timeval now;
    gettimeofday(&now, NULL);
    int64_t us = (int64_t)(now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1000000 +
                 (now.tv_usec - req->timestamps.request_begin_at.tv_usec);
    if (req->timestamps.request_begin_at.tv_sec == 0 || us < 0)
        us = 0;
    gw_server_request_done(req);
    const gw_route_t *route = gw_routes_classify(req->path_normalized);
    int status = req->res.status;
    gw_metrics_request(metrics_route(route), status, (uint64_t)us);

    if (!loop->cfg->access_log || !gw_log_enabled(GW_LOG_INFO))
        return;
    gw_logline_t line;
    gw_log_begin(&line, GW_LOG_INFO, "request");
    ssize_t i = h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1);
    if (i != -1)
        gw_log_str(&line, "request_id", req->res.headers.entries[i].value.base, req->res.headers.entries[i].value.len);
    gw_log_str(&line, "method", req->method.base, req->method.len);
    const char *name = route != NULL ? route->name : "other";
    gw_log_str(&line, "route", name, strlen(name));
    if (route != NULL && route->provider != NULL)
        gw_log_str(&line, "provider", route->provider, strlen(route->provider));
    gw_log_int(&line, "status", status);
    log_notes(&line, req);
    log_client(&line, req);
    gw_log_int(&line, "bytes_in", (long long)req->entity.len);
    gw_log_ms(&line, "duration_ms", (double)us / 1000.0);
    gw_log_end(&line);
}

static void register_routes(h2o_hostconf_t *host, bool ops_only)
{
    const char *names[GW_METRICS_MAX_ROUTES], *providers[GW_METRICS_MAX_ROUTES];
    for (size_t i = 0; i != gw_nroutes; ++i) {
        gw_routes[i].id = i;
        names[i] = gw_routes[i].name;
        providers[i] = gw_routes[i].provider;
    }
    gw_metrics_routes(names, providers, gw_nroutes);

    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    route_handler_t *handler = (void *)h2o_create_handler(pathconf, sizeof(route_handler_t));
    handler->super.on_req = on_req;
    handler->ops_only = ops_only;
    /* requests h2o answers before routing (413) run on the host's fallback path */
    h2o_pathconf_t *paths[] = {pathconf, &host->fallback_path};
    for (size_t i = 0; i != 2; ++i) {
        h2o_create_filter(paths[i], sizeof(h2o_filter_t))->on_setup_ostream = on_setup_ostream;
        h2o_create_logger(paths[i], sizeof(h2o_logger_t))->log_access = on_log_access;
    }
}

void gw_routes_register(h2o_hostconf_t *host)
{
    register_routes(host, false);
}

void gw_routes_register_ops(h2o_hostconf_t *host)
{
    register_routes(host, true);
}

static const char *access_name(const gw_route_t *route)
{
    if (route->api == NULL)
        return "public";
    static const char *const names[] = {"public", "client", "admin", "admin|client"};
    return names[route->access & 3];
}

void gw_routes_print(FILE *out, bool json)
{
    static const char *const wheres[] = {"path", "query", "body"};
    static const char *const types[] = {"string", "integer", "boolean", "enum", "date", "money", "cursor", "array"};
    for (size_t i = 0; i != gw_nroutes; ++i) {
        const gw_route_t *r = &gw_routes[i];
        if (!json) {
            fprintf(out, "%-6s %-32s %-13s %s\n", r->method, r->path, access_name(r), r->name);
            continue;
        }
        json_t *o = json_object(), *inputs = json_array();
        json_object_set_new(o, "name", json_string(r->name));
        json_object_set_new(o, "method", json_string(r->method));
        json_object_set_new(o, "path", json_string(r->path));
        json_object_set_new(o, "access", json_string(access_name(r)));
        json_object_set_new(o, "api", json_boolean(r->api != NULL));
        json_object_set_new(o, "summary", r->summary != NULL ? json_string(r->summary) : json_null());
        for (size_t k = 0; k != r->ninputs; ++k) {
            const gw_input_t *in = &r->inputs[k];
            json_t *j = json_object();
            json_object_set_new(j, "name", json_string(in->name));
            json_object_set_new(j, "in", json_string(wheres[in->where]));
            json_object_set_new(j, "type", json_string(types[in->type]));
            json_object_set_new(j, "required", json_boolean(in->required || in->where == GW_IN_PATH));
            if (in->type == GW_IN_INT || in->type == GW_IN_STRING || in->type == GW_IN_CURSOR ||
                in->type == GW_IN_ARRAY) {
                json_object_set_new(j, "min", json_integer(in->min));
                json_object_set_new(j, "max", json_integer(in->max));
            }
            if (in->values != NULL) {
                json_t *v = json_array();
                for (size_t e = 0; in->values[e] != NULL; ++e)
                    json_array_append_new(v, json_string(in->values[e]));
                json_object_set_new(j, "values", v);
            }
            json_object_set_new(j, "default", in->def != NULL ? json_string(in->def) : json_null());
            json_array_append_new(inputs, j);
        }
        json_object_set_new(o, "inputs", inputs);
        char *line = json_dumps(o, JSON_COMPACT);
        fprintf(out, "%s\n", line);
        free(line);
        json_decref(o);
    }
}
