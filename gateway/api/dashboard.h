/* SPDX-License-Identifier: MIT */
/*
 * dashboard.h: the organisation's collection figures for its admins (GET /v1/admin/dashboard; docs/collections.md,
 * "Dashboard"): per currency what is outstanding, overdue and due this week, what was collected this month by
 * provider and method, and this month's failed collection attempts. One statement on the loop's async pool
 * (admin_dashboard of schema/functions/dashboard.sql), scoped by the admin's organisation.
 */
#ifndef GW_DASHBOARD_H
#define GW_DASHBOARD_H

#include "api.h"

extern const gw_module_t gw_dashboard_module;

int gw_dashboard_get(gw_loop_t *loop, h2o_req_t *req, const gw_route_t *route, const gw_call_t *call);

#endif
