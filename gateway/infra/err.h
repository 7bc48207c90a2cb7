/* SPDX-License-Identifier: MIT */
/*
 * err.h: the one error type of settled. A fallible function takes a gw_err_t * as its last parameter and, when it
 * fails, fills it with a stable code (one of the constants below or of connector.h, compared by pointer, never by
 * string), the HTTP status the failure answers with, and a short detail that is safe to show: no secret, no
 * parameter value, no body. One reply path (api/reply.h, gw_reply_err) turns it into problem+json. Every code is
 * listed in docs/errors.md; tests/unit/infra/err.c fails when one is missing there.
 *
 * House rules that go with it: every fallible function is declared GW_MUSTCHECK, and its cleanup label is `Exit`.
 */
#ifndef GW_ERR_H
#define GW_ERR_H

#include <stdbool.h>
#include <stddef.h>

#define GW_MUSTCHECK __attribute__((warn_unused_result))

typedef struct st_gw_err_t {
    const char *code; /* NULL while there is no error */
    int status;       /* the HTTP status of the failure (500 unless the code says otherwise) */
    char detail[256]; /* one sentence for people; may be empty */
} gw_err_t;

#define GW_ERR_INIT                                                                                                    \
    {                                                                                                                  \
        NULL, 0, ""                                                                                                    \
    }

/* Codes of the gateway itself (the connectors' are in connector.h). */
extern const char gw_err_not_found[];              /* 404: no route has this path */
extern const char gw_err_method_not_allowed[];     /* 405: the path exists, not with this method */
extern const char gw_err_body_too_large[];         /* 413: the body exceeds SETTLED_BODY_LIMIT */
extern const char gw_err_source_unknown[];         /* 404: no webhook source of that name */
extern const char gw_err_store_unavailable[];      /* 503: the store cannot take or commit the change now */
extern const char gw_err_oauth_callback_invalid[]; /* 400: not a valid OAuth callback */
extern const char gw_err_oauth_state_used[];       /* 400: the OAuth state was already used (a replay) */
extern const char gw_err_xero_connect_failed[];    /* 502: connecting Xero failed */
extern const char gw_err_config_invalid[];         /* 500: a setting the operation needs is missing or wrong */
extern const char gw_err_conflict[];               /* 409: a concurrent change won, or a unique key is taken */
extern const char gw_err_provider_unavailable[];   /* 502: a provider API failed or could not be reached */
extern const char gw_err_provider_rejected[];      /* 502: a provider API refused the call (a 4xx) */
extern const char gw_err_event_unknown[];          /* 404: no stored webhook event has that id */
extern const char gw_err_invalid_argument[];       /* 400: a filter or option value is not valid */
extern const char gw_err_invalid_credentials[];    /* 401: the email address or the password is not right */
extern const char gw_err_invalid_refresh[];        /* 401: the refresh token is unknown, spent, revoked or expired */
extern const char gw_err_account_pending[];        /* 403: the account waits for an administrator's approval */
extern const char gw_err_too_many_attempts[];      /* 429: too many failed sign-ins (Retry-After says when) */
extern const char gw_err_internal[];               /* 500: a bug or an unexpected failure; the log says more */
/* The portal API's guard (gateway/guard.c, docs/api.md). */
extern const char gw_err_unauthenticated[];   /* 401: no valid, unrevoked access token */
extern const char gw_err_auth_unavailable[];  /* 503: access tokens cannot be checked (SETTLED_JWT_* not set up) */
extern const char gw_err_parameter_unknown[]; /* 400: a query parameter or body field the route does not declare */
extern const char gw_err_parameter_invalid[]; /* 400: a parameter is missing, of the wrong type or out of range */
extern const char gw_err_json_invalid[];      /* 400: the body is not a JSON object */
extern const char gw_err_replay_too_large[];  /* 400: a replay request matches more events than one may replay */
/* The portal's sessions and account flows (gateway/api/session.c). */
extern const char gw_err_csrf_failed[];         /* 403: a cookie-borne refresh token without the CSRF header */
extern const char gw_err_password_incorrect[];  /* 403: the current password (a password change) is not right */
extern const char gw_err_token_invalid[];       /* 400: an invitation or reset token unknown, used or expired */
extern const char gw_err_email_taken[];         /* 409: the organisation has a user with that address */
extern const char gw_err_registration_closed[]; /* 403: the organisation does not take self-registrations */
extern const char gw_err_email_unverified[];    /* 403: a self-registration whose address is not verified yet */
/* The reminders' unsubscribe link (gateway/api/unsubscribe.c). */
extern const char gw_err_unsubscribe_token_invalid[]; /* 400: a bad unsubscribe token */

/* Every code above and every connector code, with its title (a short phrase for people), in one table. */
typedef struct st_gw_err_code_t {
    const char *code;
    const char *title;
} gw_err_code_t;
extern const gw_err_code_t gw_err_codes[];
extern const size_t gw_err_ncodes;

/* The title of code, or "Error" for a code the table lacks. */
const char *gw_err_title(const char *code);

/* Fills err (which may be NULL: then nothing happens) with code, status and the printf-formatted detail (fmt may
 * be NULL for none). Returns -1, so a function can `return gw_err_set(err, ...)`. */
int gw_err_set(gw_err_t *err, const char *code, int status, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* True if err holds an error. */
static inline bool gw_err_is_set(const gw_err_t *err)
{
    return err != NULL && err->code != NULL;
}
static inline void gw_err_clear(gw_err_t *err)
{
    if (err != NULL)
        err->code = NULL, err->status = 0, err->detail[0] = '\0';
}

#endif
