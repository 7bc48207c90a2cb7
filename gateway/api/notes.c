/* SPDX-License-Identifier: MIT */
/* notes.c: a handler's notes for the request's log line, kept in the request's env vector (see notes.h). */
#include "notes.h"
#include <stdio.h>
#include <string.h>

void gw_note(h2o_req_t *req, const char *key, const char *value, size_t len)
{
    if (value == NULL)
        return;
    h2o_iovec_t *slot = h2o_req_getenv(req, key, strlen(key), 1);
    *slot = h2o_strdup(&req->pool, value, len);
}

void gw_note_int(h2o_req_t *req, const char *key, long long value)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%lld", value);
    gw_note(req, key, num, (size_t)n);
}

h2o_iovec_t gw_note_get(h2o_req_t *req, const char *key)
{
    h2o_iovec_t *slot = h2o_req_getenv(req, key, strlen(key), 0);
    return slot != NULL ? *slot : h2o_iovec_init(NULL, 0);
}
