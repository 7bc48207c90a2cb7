/* SPDX-License-Identifier: MIT */
/*
 * crypto.h: the only place OpenSSL's MACs, digests and comparisons are called from, and the one codec of the
 * gateway: hex, base64 (RFC 4648) and percent-encoding (RFC 3986). Every codec function is exact: a decoder refuses
 * any input that its encoder would not have written (a bad character, a wrong length, stray padding, non-zero
 * spare bits), so a value has one spelling and a MAC or a key is never read from a lenient parse.
 */
#ifndef GW_CRYPTO_H
#define GW_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "connector.h"
#include "err.h"

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
 * one '=' of padding) or as 64 hex digits. Returns 0 with the key in out, or -1 with err set to
 * gw_err_config_invalid (500) and a detail that names SETTLED_SECRET_KEY and never contains the value. */
GW_MUSTCHECK int gw_crypto_key_from_setting(const char *secret_key, unsigned char out[GW_CRYPTO_KEY_LEN],
                                            gw_err_t *err);
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

/* scrypt (RFC 7914) through OpenSSL 3's EVP_KDF "SCRYPT": derives outlen bytes from password and salt with cost
 * n (a power of two, at least 2), block size r and parallelism p, using up to maxmem bytes of memory (scrypt
 * needs 128 * n * r bytes, plus a little). Returns 0, or -1 when the parameters are out of range or OpenSSL
 * fails (out is then zeroed). Slow by design (tens of milliseconds for n = 2^15, r = 8): never on an event loop. */
GW_MUSTCHECK int gw_crypto_scrypt(const void *password, size_t len, const void *salt, size_t saltlen, uint64_t n,
                                  uint32_t r, uint32_t p, uint64_t maxmem, unsigned char *out, size_t outlen);

/* The key types gw_crypto_public_pem recognises. */
typedef enum { GW_CRYPTO_KEY_OTHER = 0, GW_CRYPTO_KEY_RSA, GW_CRYPTO_KEY_EC_P256 } gw_crypto_key_type_t;
/* Reads the PEM text pem (len bytes; a private key, or a public key when is_public) and returns the malloc'd PEM
 * text of its public key (SubjectPublicKeyInfo, NUL-terminated, *outlen its length), with its type in *type and,
 * for RSA, its size in bits in *bits. Returns NULL when the text is not such a key. */
char *gw_crypto_public_pem(const char *pem, size_t len, bool is_public, gw_crypto_key_type_t *type, int *bits,
                           size_t *outlen);

/* ---- hex ---- */

/* Writes len bytes of in as 2 * len lower-case hex digits and a NUL into out (room for 2 * len + 1 bytes). */
void gw_hex_encode(const void *in, size_t len, char *out);
/* Decodes len hex digits of in (either case; in need not be NUL-terminated) into len / 2 bytes at out. Returns
 * 0, or -1 if len is odd or a character is not a hex digit; out is then all zeros. */
GW_MUSTCHECK int gw_hex_decode(const char *in, size_t len, void *out);

/* ---- base64 (RFC 4648 sections 4 and 5) ---- */

#define GW_BASE64_URL 0x1   /* the URL-safe alphabet ('-' and '_' for 62 and 63) instead of '+' and '/' */
#define GW_BASE64_NOPAD 0x2 /* no '=': the encoder writes none, the decoder refuses any */
#define GW_BASE64_ANY 0x4   /* decoder only: either alphabet, even mixed (for values people paste) */
/* The room gw_base64_encode needs for len bytes, the NUL included (enough with or without padding). */
#define GW_BASE64_ENCODED_SIZE(len) (((len) + 2) / 3 * 4 + 1)

/* Writes len bytes of in as base64 text and a NUL into out (GW_BASE64_ENCODED_SIZE(len) bytes), in the
 * alphabet and with the padding flags ask for. Returns the length of the text. */
size_t gw_base64_encode(const void *in, size_t len, int flags, char *out);
/* Decodes len characters of base64 text (in need not be NUL-terminated) into out, which has room for outcap
 * bytes, and sets *outlen. Without GW_BASE64_NOPAD the text must be padded to a multiple of 4 characters; with
 * it, it must have no '='. Returns 0, or -1 if a character is outside the alphabet (whitespace and NUL
 * included), the length or the padding is wrong, the spare bits of the last character are not zero, or the
 * bytes would not fit in outcap; out then holds zeros where anything was written and *outlen is 0. */
GW_MUSTCHECK int gw_base64_decode(const char *in, size_t len, int flags, void *out, size_t outcap, size_t *outlen);

/* ---- percent-encoding (RFC 3986) ---- */

/* The room gw_percent_encode needs for len bytes, the NUL included. */
#define GW_PERCENT_ENCODED_SIZE(len) ((len)*3 + 1)
/* Writes len bytes of in percent-encoded and a NUL into out (GW_PERCENT_ENCODED_SIZE(len) bytes): the unreserved
 * characters (ALPHA / DIGIT / "-" / "." / "_" / "~") stay, every other byte becomes %XX in upper-case hex (a space
 * too, never '+'), so the text is safe in a query string and a form body alike. Returns its length. */
size_t gw_percent_encode(const void *in, size_t len, char *out);

#define GW_PERCENT_PLUS_SPACE 0x1 /* decode '+' as a space (application/x-www-form-urlencoded, query strings) */
/* Decodes len characters of percent-encoded text (in need not be NUL-terminated) into out, which has room for
 * len + 1 bytes, NUL-terminates it and sets *outlen (never more than len). Returns 0, or -1 if a '%' is not
 * followed by two hex digits or the result would contain a NUL byte (%00 or a literal one: a decoded value is
 * safe to use as a C string); out then holds zeros where anything was written and *outlen is 0. */
GW_MUSTCHECK int gw_percent_decode(const char *in, size_t len, int flags, char *out, size_t *outlen);

#endif
