/* SPDX-License-Identifier: MIT */
/* scaffold.h: what every connector test shares: a pool that frees after each test, fixture reading, and asserts
 * that print both values. Included by the tests after <cmocka.h>; not compiled on its own. */
#ifndef CN_TEST_SCAFFOLD_H
#define CN_TEST_SCAFFOLD_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "connector.h"

/* A pool that frees everything after each test; blocks are filled with 0xa5 so a field left unset shows. */
static struct {
    void **blocks;
    size_t n, cap;
} pool;

__attribute__((unused)) static void *pool_alloc(void *ctx, size_t size)
{
    if (pool.n == pool.cap) {
        pool.cap = pool.cap != 0 ? pool.cap * 2 : 64;
        if ((pool.blocks = realloc(pool.blocks, pool.cap * sizeof(*pool.blocks))) == NULL)
            abort();
    }
    void *p = malloc(size != 0 ? size : 1);
    if (p == NULL)
        abort();
    memset(p, 0xa5, size);
    pool.blocks[pool.n++] = p;
    return p;
}

__attribute__((unused)) static int pool_release(void **state)
{
    for (size_t i = 0; i != pool.n; ++i)
        free(pool.blocks[i]);
    free(pool.blocks);
    memset(&pool, 0, sizeof(pool));
    return 0;
}

__attribute__((unused)) static const cn_alloc_t test_alloc = {pool_alloc, NULL};

/* Reads SETTLED_SOURCE_DIR/fixtures/<rel> byte for byte into the pool. */
__attribute__((unused)) static cn_str_t read_fixture(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/fixtures/%s", SETTLED_SOURCE_DIR, rel);
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        fail_msg("cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = pool_alloc(NULL, (size_t)size + 1);
    size_t got = fread(buf, 1, (size_t)size, fp);
    fclose(fp);
    assert_int_equal(got, (size_t)size);
    buf[size] = '\0';
    return (cn_str_t){buf, (size_t)size};
}

__attribute__((unused)) static cn_str_t str(const char *s)
{
    return (cn_str_t){s, strlen(s)};
}

/* Error codes are compared by pointer; on failure print both codes. */
#define assert_err(got, want)                                                                                          \
    do {                                                                                                               \
        const char *got_ = (got), *want_ = (want);                                                                     \
        if (got_ != want_)                                                                                             \
            fail_msg("got %s, want %s", got_ != NULL ? got_ : "NULL (success)",                                        \
                     want_ != NULL ? want_ : "NULL (success)");                                                        \
    } while (0)

/* A normalised string equals expected (NULL: absent), is NUL-terminated and has the right length. */
#define assert_cn_str(s, expected)                                                                                     \
    do {                                                                                                               \
        cn_str_t s_ = (s);                                                                                             \
        const char *e_ = (expected);                                                                                   \
        if (e_ == NULL) {                                                                                              \
            if (s_.base != NULL)                                                                                       \
                fail_msg("got \"%.*s\", want absent", (int)s_.len, s_.base);                                           \
        } else {                                                                                                       \
            if (s_.base == NULL)                                                                                       \
                fail_msg("got absent, want \"%s\"", e_);                                                               \
            assert_string_equal(s_.base, e_);                                                                          \
            assert_int_equal(s_.len, strlen(e_));                                                                      \
        }                                                                                                              \
    } while (0)

#endif
