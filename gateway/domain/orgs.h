/* SPDX-License-Identifier: MIT */
/*
 * orgs.h: organisations, the tenants of settled. Every webhook source, Xero connection, customer and user belongs
 * to one, named by a slug. Start-up resolves the slugs the configuration names into ids, creating what is
 * missing, after checking that the database runs this binary's schema.
 *
 * Blocking (a database session): start-up and the command line only, never an event loop.
 */
#ifndef GW_ORGS_H
#define GW_ORGS_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"

/*
 * Connects to cfg->database_url, checks that the schema is current (every migration and function file compiled
 * into the binary applied as it is), and writes into ids[i] the id of organisation slugs[i], creating the
 * organisations that do not exist yet (n may be 0: then only the checks run). Returns 0, or -1 with a message
 * in err; nothing is created unless every check passed.
 */
__attribute__((warn_unused_result)) int gw_orgs_bootstrap(const gw_config_t *cfg, const char *const *slugs, size_t n,
                                                          int64_t *ids, char *err, size_t errlen);

/* gw_orgs_bootstrap for the organisations of every configured webhook source; fills their organisation_id. */
__attribute__((warn_unused_result)) int gw_orgs_resolve_sources(gw_config_t *cfg, char *err, size_t errlen);

#endif
