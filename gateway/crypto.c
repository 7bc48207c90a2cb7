/* SPDX-License-Identifier: MIT */
/* crypto.c: HMAC, SHA-256, constant-time compare and randomness over OpenSSL 3, with one pre-fetched
 * MAC context per thread (OpenSSL contexts must not be shared between threads). */
#include "crypto.h"
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local EVP_MAC_CTX *tls_hmac;

static EVP_MAC_CTX *hmac_ctx(void)
{
    if (tls_hmac == NULL) {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (mac == NULL)
            return NULL;
        tls_hmac = EVP_MAC_CTX_new(mac);
        EVP_MAC_free(mac); /* the context keeps its own reference */
    }
    return tls_hmac;
}

int gw_crypto_hmac_sha256(const void *key, size_t keylen, const cn_str_t *parts, size_t nparts, unsigned char out[32])
{
    static const unsigned char empty_key[1];
    EVP_MAC_CTX *ctx = hmac_ctx();
    if (ctx == NULL)
        return -1;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    /* EVP_MAC_init treats a NULL key as "reuse the previous one": never let that happen */
    if (!EVP_MAC_init(ctx, keylen != 0 ? key : empty_key, keylen, params))
        return -1;
    for (size_t i = 0; i != nparts; ++i)
        if (parts[i].len != 0 && !EVP_MAC_update(ctx, (const unsigned char *)parts[i].base, parts[i].len))
            return -1;
    size_t outlen = 0;
    if (!EVP_MAC_final(ctx, out, &outlen, 32) || outlen != 32)
        return -1;
    return 0;
}

bool gw_crypto_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

void gw_crypto_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
        fprintf(stderr, "settled: fatal: SHA-256 failed\n");
        abort();
    }
    for (int i = 0; i != 32; ++i)
        snprintf(out + i * 2, 3, "%02x", md[i]);
}

void gw_crypto_random(void *buf, size_t len)
{
    if (RAND_bytes(buf, (int)len) != 1) {
        fprintf(stderr, "settled: fatal: RAND_bytes failed\n");
        abort();
    }
}

const cn_host_t gw_crypto_host = {gw_crypto_hmac_sha256, gw_crypto_equal};
