/* SPDX-License-Identifier: MIT */
/* crypto.c: HMAC, SHA-256, constant-time compare and randomness over OpenSSL 3, with one pre-fetched
 * MAC context per thread (OpenSSL contexts must not be shared between threads), and the AES-256-GCM sealing
 * of the secrets kept at rest; and the one hex, base64 and percent codec of the gateway, small exact tables rather
 * than OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock, which pad where base64url must not and skip whitespace and padding
 * where a MAC or a key must refuse them. */
#include "crypto.h"
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <limits.h>
#include <stdint.h>
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
    gw_hex_encode(md, sizeof(md), out);
}

void gw_crypto_random(void *buf, size_t len)
{
    if (RAND_bytes(buf, (int)len) != 1) {
        fprintf(stderr, "settled: fatal: RAND_bytes failed\n");
        abort();
    }
}

const cn_host_t gw_crypto_host = {gw_crypto_hmac_sha256, gw_crypto_equal};

int gw_crypto_scrypt(const void *password, size_t len, const void *salt, size_t saltlen, uint64_t n, uint32_t r,
                     uint32_t p, uint64_t maxmem, unsigned char *out, size_t outlen)
{
    int ret = -1;
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *ctx = NULL;
    if (n < 2 || (n & (n - 1)) != 0 || r == 0 || p == 0 || outlen == 0)
        goto Exit;
    if ((kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL)) == NULL || (ctx = EVP_KDF_CTX_new(kdf)) == NULL)
        goto Exit;
    /* OpenSSL wants a non-NULL pointer even for an empty password or salt */
    static const unsigned char empty[1];
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, len != 0 ? (void *)password : (void *)empty, len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, saltlen != 0 ? (void *)salt : (void *)empty, saltlen),
        OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
        OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r),
        OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p),
        OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_KDF_derive(ctx, out, outlen, params) != 1)
        goto Exit;
    ret = 0;
Exit:
    if (ret != 0 && out != NULL && outlen != 0)
        memset(out, 0, outlen);
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return ret;
}

/* A passphrase callback that refuses: an encrypted key file fails to load instead of prompting on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

char *gw_crypto_public_pem(const char *pem, size_t len, bool is_public, gw_crypto_key_type_t *type, int *bits,
                           size_t *outlen)
{
    char *ret = NULL;
    EVP_PKEY *key = NULL;
    BIO *in = NULL, *out = NULL;
    *type = GW_CRYPTO_KEY_OTHER, *bits = 0, *outlen = 0;
    if (len > INT_MAX || (in = BIO_new_mem_buf(pem, (int)len)) == NULL)
        goto Exit;
    key = is_public ? PEM_read_bio_PUBKEY(in, NULL, no_passphrase, NULL)
                    : PEM_read_bio_PrivateKey(in, NULL, no_passphrase, NULL);
    if (key == NULL)
        goto Exit;
    if (EVP_PKEY_is_a(key, "RSA")) {
        *type = GW_CRYPTO_KEY_RSA;
        *bits = EVP_PKEY_get_bits(key);
    } else if (EVP_PKEY_is_a(key, "EC")) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &glen) == 1 &&
            strcmp(group, "prime256v1") == 0)
            *type = GW_CRYPTO_KEY_EC_P256;
    }
    if ((out = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_PUBKEY(out, key) != 1)
        goto Exit;
    char *data;
    long n = BIO_get_mem_data(out, &data);
    if (n <= 0)
        goto Exit;
    ret = malloc((size_t)n + 1);
    if (ret == NULL)
        abort();
    memcpy(ret, data, (size_t)n);
    ret[n] = '\0';
    *outlen = (size_t)n;
Exit:
    ERR_clear_error();
    BIO_free(out);
    BIO_free(in);
    EVP_PKEY_free(key);
    return ret;
}

/* ---- AES-256-GCM sealing ---- */

#define SEAL_NONCE_LEN 12
#define SEAL_TAG_LEN 16

int gw_crypto_key_from_setting(const char *secret_key, unsigned char out[GW_CRYPTO_KEY_LEN], gw_err_t *err)
{
    static const char help[] = "32 random bytes written as 44 base64 characters or 64 hex digits, e.g. the output "
                               "of `openssl rand -base64 32`";
    size_t len = secret_key != NULL ? strlen(secret_key) : 0, n = 0;
    unsigned char key[GW_CRYPTO_KEY_LEN];
    if (len == 0)
        return gw_err_set(err, gw_err_config_invalid, 500,
                          "SETTLED_SECRET_KEY: required to store provider tokens encrypted (%s)", help);
    if (len == 64) {
        if (gw_hex_decode(secret_key, len, key) != 0)
            goto Bad;
    } else if (len == 44 && secret_key[43] == '=') {
        /* 43 characters carry 258 bits: 32 bytes and 2 bits that must be zero (the decoder checks them) */
        if (gw_base64_decode(secret_key, len, GW_BASE64_ANY, key, sizeof(key), &n) != 0 || n != sizeof(key))
            goto Bad;
    } else {
        return gw_err_set(err, gw_err_config_invalid, 500,
                          "SETTLED_SECRET_KEY: must be %s (the value has %zu characters)", help, len);
    }
    /* 32 random bytes have about 30 different values, fewer than 16 with a probability of about 1e-11, and repeat
     * with a period of at most 16 bytes with one of 2^-128: either is a made-up key (all zero, "aaaa...", a short
     * pattern repeated), whatever its encoding */
    bool seen[256] = {false};
    size_t distinct = 0, period = 1;
    for (size_t i = 0; i != sizeof(key); ++i)
        if (!seen[key[i]])
            seen[key[i]] = true, ++distinct;
    for (; period <= 16; ++period) {
        size_t i = period;
        while (i != sizeof(key) && key[i] == key[i - period])
            ++i;
        if (i == sizeof(key))
            break;
    }
    if (distinct < 16 || period <= 16) {
        OPENSSL_cleanse(key, sizeof(key));
        return gw_err_set(
            err, gw_err_config_invalid, 500,
            "SETTLED_SECRET_KEY: must be 32 random bytes, but its bytes repeat too much to be random (all "
            "zero or a short pattern repeated); make one with `openssl rand -base64 32`");
    }
    memcpy(out, key, sizeof(key));
    OPENSSL_cleanse(key, sizeof(key));
    return 0;
Bad:
    OPENSSL_cleanse(key, sizeof(key));
    return gw_err_set(err, gw_err_config_invalid, 500,
                      "SETTLED_SECRET_KEY: must be %s (the value has %zu characters, not all of them valid)", help,
                      len);
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
        goto Exit;
    if (aadlen != 0 && !EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aadlen))
        goto Exit;
    if (len != 0 && (!EVP_EncryptUpdate(ctx, ct, &n, plain, (int)len) || (size_t)n != len))
        goto Exit;
    if (!EVP_EncryptFinal_ex(ctx, ct + len, &n) || n != 0)
        goto Exit;
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN, tag))
        goto Exit;
    ret = 0;
Exit:
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
        goto Exit;
    if (aadlen != 0 && !EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aadlen))
        goto Exit;
    if (ctlen != 0 && (!EVP_DecryptUpdate(ctx, out, &n, ct, (int)ctlen) || (size_t)n != ctlen))
        goto Exit;
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_LEN, tagcopy))
        goto Exit;
    if (EVP_DecryptFinal_ex(ctx, out + ctlen, &n) <= 0) /* the tag check */
        goto Exit;
    *outlen = ctlen;
    ret = 0;
Exit:
    EVP_CIPHER_CTX_free(ctx);
    if (ret != 0 && ctlen != 0)
        OPENSSL_cleanse(out, ctlen);
    return ret;
}

/* ---- the codec ---- */

static const char hex_lower[] = "0123456789abcdef";
static const char hex_upper[] = "0123456789ABCDEF";

/* The value of a hex digit (either case), or -1. */
static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20; /* 'A'..'F' to 'a'..'f'; no other character becomes one */
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

void gw_hex_encode(const void *in, size_t len, char *out)
{
    const unsigned char *p = in;
    for (size_t i = 0; i != len; ++i) {
        out[2 * i] = hex_lower[p[i] >> 4];
        out[2 * i + 1] = hex_lower[p[i] & 15];
    }
    out[2 * len] = '\0';
}

int gw_hex_decode(const char *in, size_t len, void *out)
{
    unsigned char *o = out;
    if (len % 2 != 0) {
        memset(o, 0, len / 2);
        return -1;
    }
    for (size_t i = 0; i != len / 2; ++i) {
        int hi = hex_digit((unsigned char)in[2 * i]), lo = hex_digit((unsigned char)in[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(o, len / 2);
            return -1;
        }
        o[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t gw_base64_encode(const void *in, size_t len, int flags, char *out)
{
    const unsigned char *p = in;
    const char *abc = (flags & GW_BASE64_URL) != 0 ? b64_url : b64_std;
    bool pad = (flags & GW_BASE64_NOPAD) == 0;
    size_t o = 0, i = 0;
    for (; len - i >= 3; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        out[o++] = abc[v & 63];
    }
    if (len - i != 0) {
        uint32_t v = (uint32_t)p[i] << 16 | (len - i == 2 ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        if (len - i == 2)
            out[o++] = abc[v >> 6 & 63];
        else if (pad)
            out[o++] = '=';
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* The value of base64 character c in the alphabets flags allow, or -1. */
static int b64_digit(unsigned char c, int flags)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    bool std = (flags & GW_BASE64_ANY) != 0 || (flags & GW_BASE64_URL) == 0;
    bool url = (flags & (GW_BASE64_ANY | GW_BASE64_URL)) != 0;
    if ((c == '+' && std) || (c == '-' && url))
        return 62;
    if ((c == '/' && std) || (c == '_' && url))
        return 63;
    return -1;
}

int gw_base64_decode(const char *in, size_t len, int flags, void *out, size_t outcap, size_t *outlen)
{
    unsigned char *o = out;
    size_t data = len, n = 0;
    *outlen = 0;
    if ((flags & GW_BASE64_NOPAD) == 0) {
        if (len % 4 != 0)
            return -1;
        /* one '=' after 3 characters of the last group, two after 2 */
        if (data != 0 && in[data - 1] == '=')
            --data;
        if (data != 0 && in[data - 1] == '=' && data % 4 == 3)
            --data;
        if (data % 4 != (len - data == 0 ? 0 : 4 - (len - data)))
            return -1;
    }
    if (data % 4 == 1 || data / 4 * 3 + (data % 4 != 0 ? data % 4 - 1 : 0) > outcap)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i != data; ++i) {
        int v = b64_digit((unsigned char)in[i], flags);
        if (v < 0)
            goto Bad;
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[n++] = (unsigned char)(acc >> bits);
        }
    }
    if ((acc & ((1u << bits) - 1)) != 0) /* the spare bits of the last character */
        goto Bad;
    *outlen = n;
    return 0;
Bad:
    if (n != 0)
        OPENSSL_cleanse(o, n);
    return -1;
}

size_t gw_percent_encode(const void *in, size_t len, char *out)
{
    const unsigned char *p = in;
    size_t o = 0;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = p[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex_upper[c >> 4];
            out[o++] = hex_upper[c & 15];
        }
    }
    out[o] = '\0';
    return o;
}

int gw_percent_decode(const char *in, size_t len, int flags, char *out, size_t *outlen)
{
    size_t o = 0;
    *outlen = 0;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            int hi, lo;
            if (len - i < 3 || (hi = hex_digit((unsigned char)in[i + 1])) < 0 ||
                (lo = hex_digit((unsigned char)in[i + 2])) < 0)
                goto Bad;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && (flags & GW_PERCENT_PLUS_SPACE) != 0) {
            c = ' ';
        }
        if (c == '\0')
            goto Bad;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    *outlen = o;
    return 0;
Bad:
    OPENSSL_cleanse(out, o + 1);
    return -1;
}
