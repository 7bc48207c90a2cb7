/* SPDX-License-Identifier: MIT */
/*
 * mem.h: allocation that cannot fail. Out of memory is not an error path in settled (STYLE.md, as h2o_fatal and
 * redis's zmalloc): these abort with a message instead of returning NULL.
 */
#ifndef GW_MEM_H
#define GW_MEM_H

#include <stddef.h>

void *gw_xmalloc(size_t n);
void *gw_xcalloc(size_t count, size_t size);
void *gw_xrealloc(void *p, size_t n);
/* A copy of s (NULL stays NULL). */
char *gw_xstrdup(const char *s);
/* A NUL-terminated copy of the first len bytes of s. */
char *gw_xstrndup(const char *s, size_t len);
/* Frees a string that held a secret, overwriting it first (NULL is ignored). */
void gw_free_secret(char *s);

/* A growing NUL-terminated string ({0} is empty; p is NULL until the first append; free(p) when done). */
typedef struct st_gw_strbuf_t {
    char *p;
    size_t len, cap;
} gw_strbuf_t;
/* Appends n bytes of s. */
void gw_strbuf_put(gw_strbuf_t *b, const char *s, size_t n);
/* Appends the NUL-terminated s. */
void gw_strbuf_puts(gw_strbuf_t *b, const char *s);

#endif
