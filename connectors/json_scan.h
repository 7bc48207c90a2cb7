/* SPDX-License-Identifier: MIT */
/*
 * json_scan.h: one pass over a delivery's JSON that checks all of it and keeps only the fields intake needs.
 *
 * Intake reads three to five short strings of an event that is kilobytes long; building jansson's tree of every
 * value for that was half of settled's CPU per event. cn_json_scan accepts exactly the texts that
 * json_loadb(JSON_REJECT_DUPLICATES) accepts (RFC 8259, UTF-8 checked, no NUL in strings, no repeated key in any
 * object, integers within int64_t, reals that do not overflow, nesting up to 2048) and decodes only the string
 * values at the paths asked for. tests/unit/connectors/json_scan.c holds it to jansson, text by text.
 */
#ifndef CN_JSON_SCAN_H
#define CN_JSON_SCAN_H

#include "connector.h"

#define CN_SCAN_FIELDS_MAX 16
#define CN_SCAN_DEPTH_MAX 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

/* What was found: for each event (nevents of them; one for CN_BODY_EVENT), whether it is an object and its fields. */
typedef struct st_cn_scan_t {
    size_t nevents;
    const bool *is_object; /* [nevents] */
    const cn_jv_t *fields; /* [nevents * nfields]: event i's field f is fields[i * nfields + f] */
} cn_scan_t;

/*
 * Scans body as the given shape. paths are nfields (<= CN_SCAN_FIELDS_MAX) dotted member paths relative to an event
 * object ("id", "data.object.id"; a key holding '.' cannot be asked for). Returns NULL with *out set, or the static
 * sentence saying why the body is refused: it is not JSON (or repeats a key), or it is not the envelope (not an
 * object; for CN_BODY_EVENTS, no "events" array). Memory comes from alloc, the scratch of deep objects from malloc.
 */
const char *cn_json_scan(cn_str_t body, cn_body_shape_t shape, const char *const *paths, size_t nfields,
                         const cn_alloc_t *alloc, cn_scan_t *out);

#endif
