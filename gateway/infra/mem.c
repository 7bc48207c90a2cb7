/* SPDX-License-Identifier: MIT */
/* mem.c: the allocators of mem.h, which abort on out of memory. */
#include "mem.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((noreturn)) static void out_of_memory(void)
{
    static const char msg[] = "settled: fatal: out of memory\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)r;
    abort();
}

void *gw_xmalloc(size_t n)
{
    void *p = malloc(n != 0 ? n : 1);
    if (p == NULL)
        out_of_memory();
    return p;
}

void *gw_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count != 0 ? count : 1, size != 0 ? size : 1);
    if (p == NULL)
        out_of_memory();
    return p;
}

void *gw_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n != 0 ? n : 1);
    if (q == NULL)
        out_of_memory();
    return q;
}

char *gw_xstrdup(const char *s)
{
    return s != NULL ? gw_xstrndup(s, strlen(s)) : NULL;
}

char *gw_xstrndup(const char *s, size_t len)
{
    char *p = gw_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void gw_free_secret(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

void gw_strbuf_put(gw_strbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = gw_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void gw_strbuf_puts(gw_strbuf_t *b, const char *s)
{
    gw_strbuf_put(b, s, strlen(s));
}
