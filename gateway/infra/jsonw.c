/* SPDX-License-Identifier: MIT */
/* jsonw.c: see jsonw.h. */
#include "jsonw.h"
#include <stdlib.h>
#include <string.h>

/* Before a value: the comma between an array's elements (an object's come before the key). */
static void before_value(gw_jsonw_t *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->any[w->depth])
        gw_strbuf_put(&w->out, ",", 1);
    w->any[w->depth] = true;
}

void gw_jsonw_open(gw_jsonw_t *w, char bracket)
{
    if (w->depth == GW_JSONW_DEPTH)
        abort();
    if (w->out.cap == 0) { /* most documents fit: one allocation */
        w->out.cap = 2048;
        w->out.p = gw_xrealloc(NULL, w->out.cap);
        w->out.p[0] = '\0';
    }
    before_value(w);
    gw_strbuf_put(&w->out, &bracket, 1);
    w->any[++w->depth] = false;
}

void gw_jsonw_close(gw_jsonw_t *w, char bracket)
{
    if (w->depth == 0)
        abort();
    --w->depth;
    gw_strbuf_put(&w->out, &bracket, 1);
}

static void put_escaped(gw_strbuf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    gw_strbuf_put(b, "\"", 1);
    size_t run = 0; /* bytes of s before i that need no escape, written in one go */
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        gw_strbuf_put(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', (char)c};
        size_t n = 2;
        switch (c) {
        case '"':
        case '\\':
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            n = 6;
        }
        gw_strbuf_put(b, esc, n);
    }
    gw_strbuf_put(b, s + run, len - run);
    gw_strbuf_put(b, "\"", 1);
}

void gw_jsonw_key(gw_jsonw_t *w, const char *key)
{
    if (w->any[w->depth])
        gw_strbuf_put(&w->out, ",", 1);
    w->any[w->depth] = true;
    put_escaped(&w->out, key, strlen(key));
    gw_strbuf_put(&w->out, ":", 1);
    w->after_key = true;
}

void gw_jsonw_str(gw_jsonw_t *w, const char *s, size_t len)
{
    before_value(w);
    if (s == NULL)
        gw_strbuf_put(&w->out, "null", 4);
    else
        put_escaped(&w->out, s, len);
}

void gw_jsonw_raw(gw_jsonw_t *w, const char *s, size_t len)
{
    before_value(w);
    gw_strbuf_put(&w->out, s, len);
}

void gw_jsonw_member(gw_jsonw_t *w, const char *key, const char *s, size_t len)
{
    gw_jsonw_key(w, key);
    gw_jsonw_str(w, s, len);
}
