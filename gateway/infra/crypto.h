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

/*
 * AES-256-GCM sealing of secrets kept at rest (the providers' OAuth tokens in PostgreSQL).
 * A sealed message is: one version byte (GW_CRYPTO_SEAL_VERSION), a random 12-byte nonce, the
 * ciphertext (as long as the plaintext) and the 16-byte tag. The optional associated data (aad) is
 * authenticated but not stored: it binds a sealed value to where it belongs (e.g. its table, column
 * and organisation), so a value copied elsewhere does not open.
 */
#define GW_CRYPTO_KEY_LEN 32
#define GW_CRYPTO_SEAL_VERSION 1
#define GW_CRYPTO_SEAL_OVERHEAD 29 /* version + nonce + tag */

/* Parses SETTLED_SECRET_KEY: 32 bytes written as 44 base64 characters (standard or URL-safe alphabet,
 * one '=' of padding) or as 64 hex digits. Returns 0 with the key in out, or -1 with a message in err
 * that names SETTLED_SECRET_KEY and never contains the value. */
__attribute__((warn_unused_result)) int
gw_crypto_key_from_setting(const char *secret_key, unsigned char out[GW_CRYPTO_KEY_LEN], char *err, size_t errlen);
/* Seals len bytes of plain (and authenticates aadlen bytes of aad, which may be NULL when aadlen is 0)
 * into out, which must have room for len + GW_CRYPTO_SEAL_OVERHEAD bytes; a fresh random nonce is used
 * for every message. Returns 0, or -1 if OpenSSL fails. */
__attribute__((warn_unused_result)) int gw_crypto_seal(const unsigned char key[GW_CRYPTO_KEY_LEN], const void *plain,
                                                       size_t len, const void *aad, size_t aadlen, unsigned char *out);
/* Opens len bytes sealed by gw_crypto_seal with the same key and aad into out, which must have room for
 * len - GW_CRYPTO_SEAL_OVERHEAD bytes, and sets *outlen. Returns 0, or -1 if the message is too short,
 * has an unknown version, or was altered in any byte (or the key or aad differ); out is then zeroed. */
__attribute__((warn_unused_result)) int gw_crypto_open(const unsigned char key[GW_CRYPTO_KEY_LEN], const void *sealed,
                                                       size_t len, const void *aad, size_t aadlen, unsigned char *out,
                                                       size_t *outlen);

#endif
