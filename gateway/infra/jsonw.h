/* SPDX-License-Identifier: MIT */
/*
 * jsonw.h: a JSON writer straight into a growing string, for the hot read routes whose documents are rows of text
 * (an invoice list, an invoice's detail): no tree of jansson values to build, walk and free per request. Values
 * are written in order; the writer puts the commas. Strings are escaped as RFC 8259 requires (quote, backslash and
 * the control characters); their bytes must be UTF-8, which everything read from PostgreSQL (a UTF8 database) is.
 * Nesting is bounded (GW_JSONW_DEPTH); deeper opens are a programming error (abort).
 *
 * Blocking: none.
 */
#ifndef GW_JSONW_H
#define GW_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "mem.h"

#define GW_JSONW_DEPTH 8

typedef struct st_gw_jsonw_t {
    gw_strbuf_t out; /* the document; free(out.p) when done */
    unsigned depth;
    bool after_key;               /* a key was written: the next value follows it without a comma */
    bool any[GW_JSONW_DEPTH + 1]; /* the container at each depth has a member already */
} gw_jsonw_t;

/* Opens an object ('{') or an array ('[') as the next value; gw_jsonw_close with '}' or ']' ends it. */
void gw_jsonw_open(gw_jsonw_t *w, char bracket);
void gw_jsonw_close(gw_jsonw_t *w, char bracket);
/* The key of an object's next member (a NUL-terminated name). */
void gw_jsonw_key(gw_jsonw_t *w, const char *key);
/* A string value of len bytes of s; NULL s writes null. */
void gw_jsonw_str(gw_jsonw_t *w, const char *s, size_t len);
/* A value written as it is (a number, true, false, null, or JSON made elsewhere). */
void gw_jsonw_raw(gw_jsonw_t *w, const char *s, size_t len);
/* key then gw_jsonw_str. */
void gw_jsonw_member(gw_jsonw_t *w, const char *key, const char *s, size_t len);

#endif
