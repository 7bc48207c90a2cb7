/* SPDX-License-Identifier: MIT */
/* orgs.c: resolving organisation slugs into ids at start-up, creating the organisations that are missing. */
#include "orgs.h"
#include <stdio.h>
#include <stdlib.h>
#include "db.h"
#include "mem.h"
#include "migrate.h"

static const char sql_org[] = "WITH ins AS (INSERT INTO organisations (slug, name) VALUES ($1, $1) "
                              "ON CONFLICT (slug) DO NOTHING RETURNING id) "
                              "SELECT id FROM ins UNION ALL SELECT id FROM organisations WHERE slug = $1";

int gw_orgs_bootstrap(const gw_config_t *cfg, const char *const *slugs, size_t n, int64_t *ids, char *err,
                      size_t errlen)
{
    int ret = -1;
    gw_dbs_t *s = gw_dbs_connect(cfg->database_url, err, errlen);
    if (s == NULL)
        return -1;
    if (gw_migrate_check(s, err, errlen) != 0)
        goto Exit;
    for (size_t i = 0; i != n; ++i) {
        const char *params[] = {slugs[i]};
        gw_dbs_result_t *r = gw_dbs_query(s, sql_org, 1, params);
        if (r == NULL || gw_dbs_nrows(r) < 1) {
            snprintf(err, errlen, "cannot create organisation %s: %s", slugs[i],
                     r == NULL ? gw_dbs_error(s) : "no row returned");
            gw_dbs_result_free(r);
            goto Exit;
        }
        ids[i] = strtoll(gw_dbs_value(r, 0, 0), NULL, 10);
        gw_dbs_result_free(r);
    }
    ret = 0;
Exit:
    gw_dbs_close(s);
    return ret;
}

int gw_orgs_resolve_sources(gw_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->nsources == 0)
        return 0;
    const char **slugs = gw_xcalloc(cfg->nsources, sizeof(*slugs));
    int64_t *ids = gw_xcalloc(cfg->nsources, sizeof(*ids));
    for (size_t i = 0; i != cfg->nsources; ++i)
        slugs[i] = cfg->sources[i].organisation;
    int ret = gw_orgs_bootstrap(cfg, slugs, cfg->nsources, ids, err, errlen);
    if (ret == 0)
        for (size_t i = 0; i != cfg->nsources; ++i)
            cfg->sources[i].organisation_id = ids[i];
    free(slugs);
    free(ids);
    return ret;
}
