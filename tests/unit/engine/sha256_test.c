/* Tests for src/engine/sha256.c: the FIPS 180-4 example messages, padding boundaries (55, 56,
 * 63, 64, 65 bytes...), incremental hashing split at every offset, and HMAC-SHA256 against all
 * seven test cases of RFC 4231. */
#include "engine/sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

static void hex_of(const void *data, size_t len, char out[VG_SHA256_HEX_LEN + 1])
{
  uint8_t d[VG_SHA256_DIGEST_LEN];
  vg_sha256(data, len, d);
  vg_hex_lower(d, sizeof d, out);
}

static void hmac_hex(const void *key,
                     size_t key_len,
                     const void *msg,
                     size_t msg_len,
                     char out[VG_SHA256_HEX_LEN + 1])
{
  uint8_t d[VG_SHA256_DIGEST_LEN];
  vg_hmac_sha256(key, key_len, msg, msg_len, d);
  vg_hex_lower(d, sizeof d, out);
}

/* FIPS 180-4 (NIST CSRC example values): "abc", the two-block 448-bit message, the 896-bit one,
 * and the empty message. */
static void test_fips_examples(void **state)
{
  (void)state;
  char hex[VG_SHA256_HEX_LEN + 1];
  hex_of("abc", 3, hex);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  hex_of(m448, strlen(m448), hex);
  assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const char *m896 =
      "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
      "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
  hex_of(m896, strlen(m896), hex);
  assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  hex_of(NULL, 0, hex);
  assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* One million 'a' (FIPS 180-4 example), fed in uneven chunks. */
static void test_million_a(void **state)
{
  (void)state;
  char chunk[997];
  memset(chunk, 'a', sizeof chunk);
  vg_sha256_t s;
  vg_sha256_init(&s);
  size_t left = 1000000;
  while (left > 0) {
    size_t n = left < sizeof chunk ? left : sizeof chunk;
    vg_sha256_update(&s, chunk, n);
    left -= n;
  }
  uint8_t d[VG_SHA256_DIGEST_LEN];
  char hex[VG_SHA256_HEX_LEN + 1];
  vg_sha256_final(&s, d);
  vg_hex_lower(d, sizeof d, hex);
  assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Lengths around the padding boundary: 55 bytes fit the length in the same block, 56 need a
 * second block; 64 is exactly one block. Values from an independent implementation. */
static void test_padding_boundaries(void **state)
{
  (void)state;
  static const struct {
    size_t n;
    const char *hex;
  } cases[] = {
    { 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318" },
    { 56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a" },
    { 57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6" },
    { 63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34" },
    { 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb" },
    { 65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0" },
    { 119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb" },
    { 120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c" },
    { 128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e" },
  };
  char buf[128];
  memset(buf, 'a', sizeof buf);
  char hex[VG_SHA256_HEX_LEN + 1];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    hex_of(buf, cases[i].n, hex);
    assert_string_equal(hex, cases[i].hex);
  }
}

/* Splitting the input anywhere (including empty updates) gives the one-shot digest. */
static void test_incremental_equals_oneshot(void **state)
{
  (void)state;
  uint8_t msg[300];
  for (size_t i = 0; i < sizeof msg; i++) {
    msg[i] = (uint8_t)(i * 131 + 7);
  }
  uint8_t want[VG_SHA256_DIGEST_LEN], got[VG_SHA256_DIGEST_LEN];
  vg_sha256(msg, sizeof msg, want);
  int checked = 0;
  for (size_t a = 0; a <= sizeof msg; a += 7) {
    for (size_t b = a; b <= sizeof msg; b += 13) {
      vg_sha256_t s;
      vg_sha256_init(&s);
      vg_sha256_update(&s, msg, a);
      vg_sha256_update(&s, NULL, 0);
      vg_sha256_update(&s, msg + a, b - a);
      vg_sha256_update(&s, msg + b, sizeof msg - b);
      vg_sha256_final(&s, got);
      assert_memory_equal(got, want, sizeof want);
      checked++;
    }
  }
  assert_true(checked > 500);
}

/* RFC 4231 §4.2-4.8: HMAC-SHA-256 test cases 1-7 (case 5 compares the first 128 bits, as the
 * RFC truncates it). */
static void test_rfc4231(void **state)
{
  (void)state;
  char hex[VG_SHA256_HEX_LEN + 1];
  uint8_t key[131], data[50];

  memset(key, 0x0b, 20);
  hmac_hex(key, 20, "Hi There", 8, hex);
  assert_string_equal(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

  const char *jefe = "what do ya want for nothing?";
  hmac_hex("Jefe", 4, jefe, strlen(jefe), hex);
  assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

  memset(key, 0xaa, 20);
  memset(data, 0xdd, 50);
  hmac_hex(key, 20, data, 50, hex);
  assert_string_equal(hex, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");

  for (int i = 0; i < 25; i++) {
    key[i] = (uint8_t)(i + 1);
  }
  memset(data, 0xcd, 50);
  hmac_hex(key, 25, data, 50, hex);
  assert_string_equal(hex, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");

  memset(key, 0x0c, 20);
  hmac_hex(key, 20, "Test With Truncation", 20, hex);
  assert_memory_equal(hex, "a3b6167473100ee06e0c796c2955552b", 32);

  memset(key, 0xaa, 131);
  const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  hmac_hex(key, 131, m6, strlen(m6), hex);
  assert_string_equal(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");

  const char *m7 =
      "This is a test using a larger than block-size key and a larger than block-size data. "
      "The key needs to be hashed before being used by the HMAC algorithm.";
  hmac_hex(key, 131, m7, strlen(m7), hex);
  assert_string_equal(hex, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

/* Keys of exactly one block are used as they are, not hashed; empty key and message work. */
static void test_hmac_edges(void **state)
{
  (void)state;
  char hex[VG_SHA256_HEX_LEN + 1];
  uint8_t key[64];
  memset(key, 'k', sizeof key);
  const char *msg = "exactly one block key";
  hmac_hex(key, sizeof key, msg, strlen(msg), hex);
  assert_string_equal(hex, "e73e6474ed2f863bbf5500617c3b577e141d3c1543e1563f3630b762d038f14c");
  hmac_hex(NULL, 0, NULL, 0, hex);
  assert_string_equal(hex, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

static void test_hex_lower(void **state)
{
  (void)state;
  const uint8_t bytes[] = { 0x00, 0x0f, 0xa0, 0xff };
  char out[9];
  vg_hex_lower(bytes, sizeof bytes, out);
  assert_string_equal(out, "000fa0ff");
  vg_hex_lower(bytes, 0, out);
  assert_string_equal(out, "");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_fips_examples),
    cmocka_unit_test(test_million_a),
    cmocka_unit_test(test_padding_boundaries),
    cmocka_unit_test(test_incremental_equals_oneshot),
    cmocka_unit_test(test_rfc4231),
    cmocka_unit_test(test_hmac_edges),
    cmocka_unit_test(test_hex_lower),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
