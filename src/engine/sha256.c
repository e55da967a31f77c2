/* SHA-256 per FIPS 180-4 §6.2 and HMAC-SHA256 per RFC 2104, written from the standards. Used to
 * sign outgoing webhooks (vigil.crypto) and to fingerprint content; checked against the FIPS
 * 180-4 example vectors and RFC 4231 in tests/unit/engine/sha256_test.c. */
#include "engine/sha256.h"

#include <string.h>

/* FIPS 180-4 §4.2.2: the first 32 bits of the fractional parts of the cube roots of the first
 * 64 primes. */
static const uint32_t K[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* Clears memory in a way the compiler may not drop as a dead store. */
static void wipe(void *p, size_t n)
{
  volatile uint8_t *v = p;
  while (n--) {
    *v++ = 0;
  }
}

static uint32_t rotr(uint32_t x, unsigned n)
{
  return (x >> n) | (x << (32 - n));
}

static uint32_t load_be32(const uint8_t *p)
{
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* FIPS 180-4 §6.2.2: one 512-bit block into the running hash. */
static void compress(uint32_t h[8], const uint8_t block[VG_SHA256_BLOCK_LEN])
{
  uint32_t w[64];
  for (size_t t = 0; t < 16; t++) {
    w[t] = load_be32(block + 4 * t);
  }
  for (int t = 16; t < 64; t++) {
    uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
    uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int t = 0; t < 64; t++) {
    uint32_t big_s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    uint32_t ch = (e & f) ^ (~e & g);
    uint32_t t1 = k + big_s1 + ch + K[t] + w[t];
    uint32_t big_s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    uint32_t t2 = big_s0 + maj;
    k = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += k;
  wipe(w, sizeof w);
}

void vg_sha256_init(vg_sha256_t *s)
{
  /* FIPS 180-4 §5.3.3: fractional parts of the square roots of the first 8 primes. */
  static const uint32_t H0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
  memcpy(s->h, H0, sizeof H0);
  s->len = 0;
  s->used = 0;
}

void vg_sha256_update(vg_sha256_t *s, const void *data, size_t len)
{
  const uint8_t *p = data;
  if (len == 0) {
    return; /* data may be NULL */
  }
  s->len += len;
  if (s->used > 0) {
    size_t take = VG_SHA256_BLOCK_LEN - s->used;
    if (take > len) {
      take = len;
    }
    memcpy(s->buf + s->used, p, take);
    s->used += take;
    p += take;
    len -= take;
    if (s->used < VG_SHA256_BLOCK_LEN) {
      return;
    }
    compress(s->h, s->buf);
    s->used = 0;
  }
  while (len >= VG_SHA256_BLOCK_LEN) {
    compress(s->h, p);
    p += VG_SHA256_BLOCK_LEN;
    len -= VG_SHA256_BLOCK_LEN;
  }
  if (len > 0) {
    memcpy(s->buf, p, len);
    s->used = len;
  }
}

void vg_sha256_final(vg_sha256_t *s, uint8_t out[VG_SHA256_DIGEST_LEN])
{
  /* FIPS 180-4 §5.1.1: a 1 bit, zeros, then the message length in bits as 64-bit big-endian,
   * so that the padded message is a whole number of blocks. */
  uint64_t bits = s->len * 8;
  s->buf[s->used++] = 0x80;
  if (s->used > VG_SHA256_BLOCK_LEN - 8) {
    memset(s->buf + s->used, 0, VG_SHA256_BLOCK_LEN - s->used);
    compress(s->h, s->buf);
    s->used = 0;
  }
  memset(s->buf + s->used, 0, VG_SHA256_BLOCK_LEN - 8 - s->used);
  store_be32(s->buf + 56, (uint32_t)(bits >> 32));
  store_be32(s->buf + 60, (uint32_t)bits);
  compress(s->h, s->buf);
  for (size_t i = 0; i < 8; i++) {
    store_be32(out + 4 * i, s->h[i]);
  }
  wipe(s, sizeof *s);
}

void vg_sha256(const void *data, size_t len, uint8_t out[VG_SHA256_DIGEST_LEN])
{
  vg_sha256_t s;
  vg_sha256_init(&s);
  vg_sha256_update(&s, data, len);
  vg_sha256_final(&s, out);
}

void vg_hmac_sha256(const void *key,
                    size_t key_len,
                    const void *msg,
                    size_t msg_len,
                    uint8_t out[VG_SHA256_DIGEST_LEN])
{
  /* RFC 2104 §2: H(K ^ opad, H(K ^ ipad, text)), K zero-padded to the block length. */
  uint8_t k0[VG_SHA256_BLOCK_LEN] = { 0 };
  uint8_t pad[VG_SHA256_BLOCK_LEN];
  uint8_t inner[VG_SHA256_DIGEST_LEN];
  if (key_len > VG_SHA256_BLOCK_LEN) {
    vg_sha256(key, key_len, k0);
  } else if (key_len > 0) {
    memcpy(k0, key, key_len);
  }
  vg_sha256_t s;
  for (int i = 0; i < VG_SHA256_BLOCK_LEN; i++) {
    pad[i] = k0[i] ^ 0x36;
  }
  vg_sha256_init(&s);
  vg_sha256_update(&s, pad, sizeof pad);
  vg_sha256_update(&s, msg, msg_len);
  vg_sha256_final(&s, inner);
  for (int i = 0; i < VG_SHA256_BLOCK_LEN; i++) {
    pad[i] = k0[i] ^ 0x5c;
  }
  vg_sha256_init(&s);
  vg_sha256_update(&s, pad, sizeof pad);
  vg_sha256_update(&s, inner, sizeof inner);
  vg_sha256_final(&s, out);
  wipe(k0, sizeof k0);
  wipe(pad, sizeof pad);
  wipe(inner, sizeof inner);
}

void vg_hex_lower(const uint8_t *bytes, size_t len, char *out)
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 0x0f];
  }
  out[2 * len] = '\0';
}
