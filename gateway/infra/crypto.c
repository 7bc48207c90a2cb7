/* SPDX-License-Identifier: MIT */
/* crypto.c: HMAC, SHA-256, constant-time compare and randomness over OpenSSL 3, with one pre-fetched
 * MAC context per thread (OpenSSL contexts must not be shared between threads), and the AES-256-GCM sealing
 * of the secrets kept at rest. */
#include "crypto.h"
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One MAC context per thread, freed when the thread exits (a pthread key, not _Thread_local, so it is). */
static pthread_key_t hmac_key;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void free_hmac_ctx(void *ctx)
{
    EVP_MAC_CTX_free(ctx);
}

static void make_hmac_key(void)
{
    if (pthread_key_create(&hmac_key, free_hmac_ctx) != 0)
        abort();
}

static EVP_MAC_CTX *hmac_ctx(void)
{
    pthread_once(&hmac_once, make_hmac_key);
    EVP_MAC_CTX *ctx = pthread_getspecific(hmac_key);
    if (ctx == NULL) {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (mac == NULL)
            return NULL;
        ctx = EVP_MAC_CTX_new(mac);
        EVP_MAC_free(mac); /* the context keeps its own reference */
        if (ctx != NULL && pthread_setspecific(hmac_key, ctx) != 0)
            abort();
    }
    return ctx;
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

/* ---- AES-256-GCM sealing ---- */

#define SEAL_NONCE_LEN 12
#define SEAL_TAG_LEN 16

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int b64_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int gw_crypto_key_from_setting(const char *secret_key, unsigned char out[GW_CRYPTO_KEY_LEN], char *err, size_t errlen)
{
    static const char help[] = "32 random bytes written as 44 base64 characters or 64 hex digits, e.g. the output "
                               "of `openssl rand -base64 32`";
    size_t len = secret_key != NULL ? strlen(secret_key) : 0;
    unsigned char key[GW_CRYPTO_KEY_LEN];
    if (len == 0) {
        snprintf(err, errlen, "SETTLED_SECRET_KEY: required to store provider tokens encrypted (%s)", help);
        return -1;
    }
    if (len == 64) {
        for (size_t i = 0; i != GW_CRYPTO_KEY_LEN; ++i) {
            int hi = hex_value((unsigned char)secret_key[2 * i]), lo = hex_value((unsigned char)secret_key[2 * i + 1]);
            if (hi < 0 || lo < 0)
                goto bad;
            key[i] = (unsigned char)(hi << 4 | lo);
        }
    } else if (len == 44 && secret_key[43] == '=') {
        /* 43 characters carry 258 bits: 32 bytes and 2 bits that must be zero */
        unsigned long acc = 0;
        int bits = 0;
        size_t n = 0;
        for (size_t i = 0; i != 43; ++i) {
            int v = b64_value((unsigned char)secret_key[i]);
            if (v < 0)
                goto bad;
            acc = (acc << 6 | (unsigned long)v) & 0xffffff;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                key[n++] = (unsigned char)(acc >> bits);
            }
        }
        if ((acc & ((1ul << bits) - 1)) != 0)
            goto bad;
    } else {
        snprintf(err, errlen, "SETTLED_SECRET_KEY: must be %s (the value has %zu characters)", help, len);
        return -1;
    }
    memcpy(out, key, sizeof(key));
    OPENSSL_cleanse(key, sizeof(key));
    return 0;
bad:
    OPENSSL_cleanse(key, sizeof(key));
    snprintf(err, errlen, "SETTLED_SECRET_KEY: must be %s (the value has %zu characters, not all of them valid)", help,
             len);
    return -1;
}

int gw_crypto_seal(const unsigned char key[GW_CRYPTO_KEY_LEN], const void *plain, size_t len, const void *aad,
                   size_t aadlen, unsigned char *out)
{
    if (len > INT_MAX - GW_CRYPTO_SEAL_OVERHEAD || aadlen > INT_MAX)
        return -1;
    unsigned char *nonce = out + 1, *ct = out + 1 + SEAL_NONCE_LEN, *tag = ct + len;
    out[0] = GW_CRYPTO_SEAL_VERSION;
    gw_crypto_random(nonce, SEAL_NONCE_LEN);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, ret = -1;
    if (ctx == NULL)
        return -1;
    if (!EVP_EncryptInit_ex2(ctx, EVP_aes_256_gcm(), key, nonce, NULL))
        goto out;
    if (aadlen != 0 && !EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aadlen))
        goto out;
    if (len != 0 && (!EVP_EncryptUpdate(ctx, ct, &n, plain, (int)len) || (size_t)n != len))
        goto out;
    if (!EVP_EncryptFinal_ex(ctx, ct + len, &n) || n != 0)
        goto out;
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN, tag))
        goto out;
    ret = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return ret;
}

int gw_crypto_open(const unsigned char key[GW_CRYPTO_KEY_LEN], const void *sealed, size_t len, const void *aad,
                   size_t aadlen, unsigned char *out, size_t *outlen)
{
    const unsigned char *in = sealed;
    *outlen = 0;
    if (len < GW_CRYPTO_SEAL_OVERHEAD)
        return -1;
    size_t ctlen = len - GW_CRYPTO_SEAL_OVERHEAD;
    if (len > INT_MAX || aadlen > INT_MAX || in[0] != GW_CRYPTO_SEAL_VERSION) {
        if (ctlen != 0)
            OPENSSL_cleanse(out, ctlen);
        return -1;
    }
    const unsigned char *nonce = in + 1, *ct = in + 1 + SEAL_NONCE_LEN, *tag = ct + ctlen;
    unsigned char tagcopy[SEAL_TAG_LEN];
    memcpy(tagcopy, tag, sizeof(tagcopy)); /* EVP wants a non-const tag */
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, ret = -1;
    if (ctx == NULL)
        return -1;
    if (!EVP_DecryptInit_ex2(ctx, EVP_aes_256_gcm(), key, nonce, NULL))
        goto out;
    if (aadlen != 0 && !EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aadlen))
        goto out;
    if (ctlen != 0 && (!EVP_DecryptUpdate(ctx, out, &n, ct, (int)ctlen) || (size_t)n != ctlen))
        goto out;
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_LEN, tagcopy))
        goto out;
    if (EVP_DecryptFinal_ex(ctx, out + ctlen, &n) <= 0) /* the tag check */
        goto out;
    *outlen = ctlen;
    ret = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    if (ret != 0 && ctlen != 0)
        OPENSSL_cleanse(out, ctlen);
    return ret;
}
