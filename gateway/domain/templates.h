/* SPDX-License-Identifier: MIT */
/*
 * templates.h: the notification templates of gateway/templates/, compiled into the binary by
 * cmake/embed_templates.cmake (sorted by name: <kind>.txt, the subject line and plain-text body; <kind>.html, the
 * HTML body).
 */
#ifndef GW_TEMPLATES_H
#define GW_TEMPLATES_H

#include <stddef.h>

typedef struct st_gw_template_file_t {
    const char *name;
    const char *data;
    size_t len;
} gw_template_file_t;

extern const gw_template_file_t gw_template_files[];
extern const size_t gw_template_nfiles;

#endif
