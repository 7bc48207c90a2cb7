/* SPDX-License-Identifier: MIT */
/* account_mail.c: the links and the rendering of the account e-mails (account_mail.h). */
#include "account_mail.h"
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char sql_organisation_name[] = "SELECT name FROM organisations WHERE id = $1::bigint";

void gw_account_mail_link(const gw_config_t *cfg, const char *base_override, const char *page, const char *token,
                          char *out, size_t cap)
{
    char base[512];
    if (base_override != NULL) {
        size_t n = strlen(base_override);
        snprintf(base, sizeof(base), "%.*s", (int)(n != 0 && base_override[n - 1] == '/' ? n - 1 : n), base_override);
    } else {
        gw_config_portal_base(cfg, base, sizeof(base));
    }
    snprintf(out, cap, "%s/%s#token=%s", base, page, token);
}

int gw_account_mail_render(gw_dbs_t *db, int64_t org, const char *kind, const char *link, gw_rendered_t *out,
                           gw_err_t *err)
{
    char id[24];
    snprintf(id, sizeof(id), "%" PRId64, org);
    const char *p[] = {id};
    gw_dbs_result_t *r = gw_dbs_query(db, sql_organisation_name, 1, p);
    if (r == NULL)
        return gw_dbs_err(db, err);
    gw_notify_values_t v = {.organisation_name = gw_dbs_nrows(r) == 1 ? gw_dbs_value(r, 0, 0) : NULL, .link = link};
    char msg[256];
    int rc = gw_notify_render(kind, &v, out, msg, sizeof(msg));
    gw_dbs_result_free(r);
    if (rc != 0)
        return gw_err_set(err, gw_err_internal, 500, "%s", msg);
    return 0;
}

bool gw_account_mail_configured(const gw_config_t *cfg)
{
    return cfg->smtp_url != NULL && cfg->smtp_url[0] != '\0';
}
