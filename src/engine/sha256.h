/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), in plain C with no dependencies: webhook
 * signatures and content hashes must not need a TLS library loaded. Not constant-time with
 * respect to the message length; the key and data are never branched on byte by byte. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define VG_SHA256_DIGEST_LEN 32 /* bytes */
#define VG_SHA256_BLOCK_LEN 64
#define VG_SHA256_HEX_LEN 64 /* hex digits of a digest, without the NUL */

/* Incremental hashing state. Initialise with vg_sha256_init; any number of updates; one final. */
typedef struct {
  uint32_t h[8];
  uint64_t len; /* bytes hashed so far */
  uint8_t buf[VG_SHA256_BLOCK_LEN];
  size_t used; /* bytes waiting in buf */
} vg_sha256_t;

void vg_sha256_init(vg_sha256_t *s);
/* Hashes `len` bytes of `data` (data may be NULL when len is 0). */
void vg_sha256_update(vg_sha256_t *s, const void *data, size_t len);
/* Writes the 32-byte digest and wipes the state; `s` must be re-initialised to be used again. */
void vg_sha256_final(vg_sha256_t *s, uint8_t out[VG_SHA256_DIGEST_LEN]);

/* One-shot digest of `len` bytes. */
void vg_sha256(const void *data, size_t len, uint8_t out[VG_SHA256_DIGEST_LEN]);

/* HMAC-SHA256 of `msg` under `key` (any length; a key longer than a block is hashed first, as
 * RFC 2104 says). Intermediate key material is wiped before returning. */
void vg_hmac_sha256(const void *key,
                    size_t key_len,
                    const void *msg,
                    size_t msg_len,
                    uint8_t out[VG_SHA256_DIGEST_LEN]);

/* Writes `len` bytes as lowercase hex plus a NUL into `out` (room for 2 * len + 1 bytes). */
void vg_hex_lower(const uint8_t *bytes, size_t len, char *out);
