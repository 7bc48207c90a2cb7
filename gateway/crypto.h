/* SPDX-License-Identifier: MIT */
/* crypto.h: the only place OpenSSL's MACs, digests and comparisons are called from. */
#ifndef GW_CRYPTO_H
#define GW_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include "connector.h"

/* HMAC-SHA256 over the concatenation of parts, using a per-thread pre-fetched EVP_MAC context.
 * Returns 0, or -1 if OpenSSL fails (the caller rejects the request). */
int gw_crypto_hmac_sha256(const void *key, size_t keylen, const cn_str_t *parts, size_t nparts, unsigned char out[32]);
/* Constant-time equality of len bytes. */
bool gw_crypto_equal(const void *a, const void *b, size_t len);
/* SHA-256 of data as 64 lower-case hex digits and a NUL. */
void gw_crypto_sha256_hex(const void *data, size_t len, char out[65]);
/* Fills buf with len cryptographically random bytes; aborts if the RNG fails. */
void gw_crypto_random(void *buf, size_t len);
/* The host structure connectors are given. */
extern const cn_host_t gw_crypto_host;

#endif
