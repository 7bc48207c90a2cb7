/* SPDX-License-Identifier: MIT */
/* accounts.c: the portal's accounts for the command line, one statement per function, over schema/functions/auth.sql.
 */
#include "accounts.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char gw_accounts_created[] = "created";
const char gw_accounts_email_taken[] = "email_taken";
const char gw_accounts_email_invalid[] = "email_invalid";
const char gw_accounts_role_invalid[] = "role_invalid";
const char gw_accounts_customer_required[] = "customer_required";
const char gw_accounts_customer_not_allowed[] = "customer_not_allowed";
const char gw_accounts_customer_unknown[] = "customer_unknown";
const char gw_accounts_disabled[] = "disabled";
const char gw_accounts_already[] = "already";
const char gw_accounts_unknown[] = "unknown";
const char gw_accounts_pending[] = "pending";

static const char *const results[] = {
    gw_accounts_created,          gw_accounts_email_taken,       gw_accounts_email_invalid,
    gw_accounts_role_invalid,     gw_accounts_customer_required, gw_accounts_customer_not_allowed,
    gw_accounts_customer_unknown, gw_accounts_disabled,          gw_accounts_already,
    gw_accounts_unknown,          gw_accounts_pending,
};

static const char sql_organisation[] = "SELECT id FROM organisations WHERE slug = $1";
static const char sql_user_create[] = "SELECT result, user_id FROM auth_user_create($1::bigint, $2, $3, $4::bigint, "
                                      "$5, $6, $7)";
static const char sql_invite[] = "SELECT result, to_char(expires_at AT TIME ZONE 'UTC', "
                                 "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), notification_id FROM auth_invitation_mail("
                                 "$1::bigint, $2, $3, $4::bigint, $5, NULL, $6, $7, $8, $9, $10)";
static const char sql_user_disable[] = "SELECT result, revoked, user_id FROM auth_user_disable($1::bigint, $2, $3, $4)";
static const char sql_reset_create[] =
    "SELECT auth_reset_create($1::bigint, $2, $3, $4), to_char((now() + interval '30 minutes') AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD HH24:MI') || ' UTC'";
#define UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
static const char sql_user_list[] = "SELECT u.id, o.slug, u.email, u.role, u.customer_id, u.status, " UTC(
    "u.created_at") ", " UTC("u.last_login_at") " FROM users u JOIN organisations o ON o.id = u.organisation_id "
                                                "WHERE $1::bigint = 0 OR u.organisation_id = $1::bigint "
                                                "ORDER BY o.slug, u.id";

/* The constant of a result text the SQL returned; NULL for one this version does not know (a bug). */
static const char *result_of(const char *text)
{
    for (size_t i = 0; text != NULL && i != sizeof(results) / sizeof(results[0]); ++i)
        if (strcmp(text, results[i]) == 0)
            return results[i];
    return NULL;
}

/* Runs sql, which returns one row whose first column is a result, and sets *result; returns the result set (free
 * it) or NULL with err set. */
static gw_dbs_result_t *run_result(gw_dbs_t *s, const char *what, const char *sql, int n, const char *const *params,
                                   const char **result, gw_err_t *err)
{
    gw_dbs_result_t *r = gw_dbs_query(s, sql, n, params);
    if (r == NULL) {
        gw_dbs_err(s, err);
        return NULL;
    }
    if (gw_dbs_nrows(r) != 1 || (*result = result_of(gw_dbs_value(r, 0, 0))) == NULL) {
        gw_dbs_result_free(r);
        gw_err_set(err, gw_err_internal, 500, "%s: the database answered an unknown result", what);
        return NULL;
    }
    return r;
}

int gw_accounts_organisation(gw_dbs_t *s, const char *slug, int64_t *id, gw_err_t *err)
{
    const char *p[] = {slug};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_organisation, 1, p);
    if (r == NULL)
        return gw_dbs_err(s, err);
    int found = gw_dbs_nrows(r) == 1;
    if (found)
        *id = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
    gw_dbs_result_free(r);
    return found;
}

int gw_accounts_user_create(gw_dbs_t *s, int64_t org, const char *email, const char *role, int64_t customer,
                            const char *password_hash, const char *actor, const char *correlation, const char **result,
                            int64_t *user_id, gw_err_t *err)
{
    char orgs[24], cust[24];
    snprintf(orgs, sizeof(orgs), "%" PRId64, org);
    snprintf(cust, sizeof(cust), "%" PRId64, customer);
    const char *p[] = {orgs, email, role, customer != 0 ? cust : NULL, password_hash, actor, correlation};
    gw_dbs_result_t *r = run_result(s, "user add", sql_user_create, 7, p, result, err);
    if (r == NULL)
        return -1;
    *user_id = *result == gw_accounts_created ? strtoll(gw_dbs_value(r, 0, 1), NULL, 10) : 0;
    gw_dbs_result_free(r);
    return 0;
}

int gw_accounts_invite(gw_dbs_t *s, int64_t org, const char *email, const char *role, int64_t customer,
                       const char digest[65], const gw_rendered_t *mail, const char *actor, const char *correlation,
                       const char **result, char expires[64], int64_t *notification, gw_err_t *err)
{
    char orgs[24], cust[24];
    snprintf(orgs, sizeof(orgs), "%" PRId64, org);
    snprintf(cust, sizeof(cust), "%" PRId64, customer);
    const char *p[] = {orgs,
                       email,
                       role,
                       customer != 0 ? cust : NULL,
                       digest,
                       actor,
                       correlation,
                       mail != NULL ? mail->subject : NULL,
                       mail != NULL ? mail->text : NULL,
                       mail != NULL ? mail->html : NULL};
    gw_dbs_result_t *r = run_result(s, "user add --invite", sql_invite, 10, p, result, err);
    if (r == NULL)
        return -1;
    const char *e = gw_dbs_value(r, 0, 1), *n = gw_dbs_value(r, 0, 2);
    snprintf(expires, 64, "%s", e != NULL ? e : "");
    *notification = n != NULL ? strtoll(n, NULL, 10) : 0;
    gw_dbs_result_free(r);
    return 0;
}

int gw_accounts_user_disable(gw_dbs_t *s, int64_t org, const char *email, const char *actor, const char *correlation,
                             const char **result, long long *revoked, int64_t *user_id, gw_err_t *err)
{
    char orgs[24];
    snprintf(orgs, sizeof(orgs), "%" PRId64, org);
    const char *p[] = {orgs, email, actor, correlation};
    gw_dbs_result_t *r = run_result(s, "user disable", sql_user_disable, 4, p, result, err);
    if (r == NULL)
        return -1;
    const char *n = gw_dbs_value(r, 0, 1), *u = gw_dbs_value(r, 0, 2);
    *revoked = n != NULL ? strtoll(n, NULL, 10) : 0;
    *user_id = u != NULL ? strtoll(u, NULL, 10) : 0;
    gw_dbs_result_free(r);
    return 0;
}

int gw_accounts_reset_create(gw_dbs_t *s, int64_t org, const char *email, const char digest[65],
                             const char *correlation, int64_t *user_id, char expires[64], gw_err_t *err)
{
    char orgs[24];
    snprintf(orgs, sizeof(orgs), "%" PRId64, org);
    const char *p[] = {orgs, email, digest, correlation};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_reset_create, 4, p);
    if (r == NULL)
        return gw_dbs_err(s, err);
    const char *u = gw_dbs_nrows(r) == 1 ? gw_dbs_value(r, 0, 0) : NULL;
    *user_id = u != NULL ? strtoll(u, NULL, 10) : 0;
    snprintf(expires, 64, "%s", gw_dbs_nrows(r) == 1 && gw_dbs_value(r, 0, 1) != NULL ? gw_dbs_value(r, 0, 1) : "");
    gw_dbs_result_free(r);
    return 0;
}

long long gw_accounts_user_list(gw_dbs_t *s, int64_t org, void (*on_user)(void *arg, const gw_account_t *u), void *arg,
                                gw_err_t *err)
{
    char orgs[24];
    snprintf(orgs, sizeof(orgs), "%" PRId64, org);
    const char *p[] = {orgs};
    gw_dbs_result_t *r = gw_dbs_query(s, sql_user_list, 1, p);
    if (r == NULL)
        return gw_dbs_err(s, err);
    size_t n = gw_dbs_nrows(r);
    for (size_t i = 0; i != n; ++i) {
        gw_account_t u = {gw_dbs_value(r, i, 0), gw_dbs_value(r, i, 1), gw_dbs_value(r, i, 2), gw_dbs_value(r, i, 3),
                          gw_dbs_value(r, i, 4), gw_dbs_value(r, i, 5), gw_dbs_value(r, i, 6), gw_dbs_value(r, i, 7)};
        on_user(arg, &u);
    }
    gw_dbs_result_free(r);
    return (long long)n;
}
