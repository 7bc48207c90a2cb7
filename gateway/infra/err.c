/* SPDX-License-Identifier: MIT */
/* err.c: the error codes of settled and their titles, and the one way to fill a gw_err_t. */
#include "err.h"
#include <stdarg.h>
#include <stdio.h>
#include "connector.h"

const char gw_err_not_found[] = "not_found";
const char gw_err_method_not_allowed[] = "method_not_allowed";
const char gw_err_body_too_large[] = "body_too_large";
const char gw_err_source_unknown[] = "source_unknown";
const char gw_err_store_unavailable[] = "store_unavailable";
const char gw_err_oauth_callback_invalid[] = "oauth_callback_invalid";
const char gw_err_oauth_state_used[] = "oauth_state_used";
const char gw_err_xero_connect_failed[] = "xero_connect_failed";
const char gw_err_config_invalid[] = "config_invalid";
const char gw_err_conflict[] = "conflict";
const char gw_err_provider_unavailable[] = "provider_unavailable";
const char gw_err_provider_rejected[] = "provider_rejected";
const char gw_err_event_unknown[] = "event_unknown";
const char gw_err_invalid_argument[] = "invalid_argument";
const char gw_err_invalid_credentials[] = "invalid_credentials";
const char gw_err_invalid_refresh[] = "invalid_refresh";
const char gw_err_account_pending[] = "account_pending";
const char gw_err_too_many_attempts[] = "too_many_attempts";
const char gw_err_internal[] = "internal";
const char gw_err_unauthenticated[] = "unauthenticated";
const char gw_err_auth_unavailable[] = "auth_unavailable";
const char gw_err_parameter_unknown[] = "parameter_unknown";
const char gw_err_parameter_invalid[] = "parameter_invalid";
const char gw_err_json_invalid[] = "json_invalid";
const char gw_err_replay_too_large[] = "replay_too_large";
const char gw_err_csrf_failed[] = "csrf_failed";
const char gw_err_password_incorrect[] = "password_incorrect";
const char gw_err_token_invalid[] = "token_invalid";
const char gw_err_email_taken[] = "email_taken";
const char gw_err_registration_closed[] = "registration_closed";
const char gw_err_email_unverified[] = "email_unverified";
const char gw_err_unsubscribe_token_invalid[] = "unsubscribe_token_invalid";

const gw_err_code_t gw_err_codes[] = {
    {gw_err_not_found, "No such resource"},
    {gw_err_method_not_allowed, "Method not allowed on this resource"},
    {gw_err_body_too_large, "Request body too large"},
    {gw_err_source_unknown, "No webhook source of that name is configured"},
    {gw_err_store_unavailable, "The event store is unavailable; retry later"},
    {gw_err_oauth_callback_invalid, "Not a valid authorisation callback"},
    {gw_err_oauth_state_used, "This authorisation request was already used"},
    {gw_err_xero_connect_failed, "Connecting Xero failed"},
    {gw_err_config_invalid, "A required setting is missing or invalid"},
    {gw_err_conflict, "The change conflicts with the current state"},
    {gw_err_provider_unavailable, "A provider API is unavailable"},
    {gw_err_provider_rejected, "A provider API refused the call"},
    {gw_err_event_unknown, "No stored webhook event has that id"},
    {gw_err_invalid_argument, "An argument is not valid"},
    {gw_err_invalid_credentials, "The email address or the password is not right"},
    {gw_err_invalid_refresh, "The refresh token is not valid"},
    {gw_err_account_pending, "The account waits for approval"},
    {gw_err_too_many_attempts, "Too many failed sign-ins"},
    {gw_err_internal, "Internal error"},
    {gw_err_unauthenticated, "Authentication required"},
    {gw_err_auth_unavailable, "Access tokens cannot be checked now"},
    {gw_err_parameter_unknown, "Unknown parameter"},
    {gw_err_parameter_invalid, "A parameter is missing or not valid"},
    {gw_err_json_invalid, "The body is not a JSON object"},
    {gw_err_replay_too_large, "Too many events for one replay request"},
    {cn_err_signature_missing, "Signature header missing"},
    {cn_err_signature_malformed, "Signature header malformed"},
    {cn_err_signature_mismatch, "Signature does not match"},
    {cn_err_timestamp_stale, "Signature timestamp outside the tolerance"},
    {cn_err_no_secret, "No secret configured for this source"},
    {cn_err_body_malformed, "Body is not a valid provider payload"},
    {cn_err_event_invalid, "An event lacks a required field"},
    {gw_err_csrf_failed, "The request lacks its CSRF protection"},
    {gw_err_password_incorrect, "The current password is not right"},
    {gw_err_token_invalid, "The token is unknown, used or expired"},
    {gw_err_email_taken, "The address already has an account"},
    {gw_err_registration_closed, "This organisation does not take registrations"},
    {gw_err_email_unverified, "The e-mail address is not verified yet"},
    {gw_err_unsubscribe_token_invalid, "The unsubscribe link is not valid"},
};
const size_t gw_err_ncodes = sizeof(gw_err_codes) / sizeof(gw_err_codes[0]);

const char *gw_err_title(const char *code)
{
    for (size_t i = 0; i != gw_err_ncodes; ++i)
        if (gw_err_codes[i].code == code)
            return gw_err_codes[i].title;
    return "Error";
}

int gw_err_set(gw_err_t *err, const char *code, int status, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    err->code = code;
    err->status = status != 0 ? status : 500;
    err->detail[0] = '\0';
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
        va_end(ap);
    }
    return -1;
}
