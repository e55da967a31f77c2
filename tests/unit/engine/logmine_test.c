/* Tests for src/engine/logmine.c: each masker and its tricky neighbours, exact templates and
 * stable ids on constructed logs, parameters, word variants, the LRU cap, match-only mode,
 * truncation and arbitrary bytes, and the snapshot round trip. */
#include "engine/logmine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

static vg_logmine_t *miner(void)
{
  char err[128];
  vg_logmine_t *m = logmine_new(NULL, err, sizeof err);
  assert_non_null(m);
  return m;
}

/* Adds a line and returns its id, checking the status. */
static uint64_t add(vg_logmine_t *m, const char *line, vg_logmine_status_t want)
{
  vg_logmine_result_t r;
  vg_logmine_status_t s = logmine_add(m, line, strlen(line), &r);
  if (s != want) {
    fail_msg("add(%s): status %d, want %d", line, (int)s, (int)want);
  }
  return (s == VG_LOGMINE_MATCHED || s == VG_LOGMINE_CREATED) ? r.id : 0;
}

static void expect_template(vg_logmine_t *m, uint64_t id, const char *want)
{
  vg_logmine_template_t t;
  assert_true(logmine_get(m, id, &t));
  if (strcmp(t.text, want) != 0) {
    fail_msg("template %llu:\n  got  %s\n  want %s", (unsigned long long)id, t.text, want);
  }
  assert_int_equal(t.len, strlen(want));
}

/* The template a single line becomes in a fresh miner. */
static void expect_masked(const char *line, const char *want)
{
  vg_logmine_t *m = miner();
  uint64_t id = add(m, line, VG_LOGMINE_CREATED);
  expect_template(m, id, want);
  logmine_free(m);
}

static void test_masks(void **state)
{
  (void)state;
  expect_masked("took 12 ms", "took <*> ms");
  expect_masked("delta -5 and +7", "delta <*> and <*>");
  expect_masked("ratio 3.25 1e-9", "ratio <*> <*>");
  expect_masked("timeout 10ms after 5s", "timeout <*> after <*>");
  expect_masked("version 1.2.3 of v2", "version <*> of v2");
  expect_masked("addr 0x7fff5fbff8c8 ok", "addr <*> ok");
  expect_masked("object 9f4ef63 token", "object <*> token");
  expect_masked("added deadbeef", "added deadbeef"); /* hex letters only: a word */
  expect_masked("from 10.0.0.1 to 192.168.1.20:8080", "from <*> to <*>");
  expect_masked("v6 fe80::1ff:fe23:4567:890a and [::1]:443", "v6 <*> and <*>");
  expect_masked("mac 00:1a:2b:3c:4d:5e up", "mac <*> up");
  expect_masked("req 123e4567-e89b-12d3-a456-426614174000 done", "req <*> done");
  expect_masked("open /var/log/app.log failed", "open <*> failed");
  expect_masked("ratio 1/2 and /tmp", "ratio <*>/<*> and /tmp");
  expect_masked("GET https://example.com/a?b=1 200", "GET <*> <*>");
  expect_masked("at 2024-01-02T03:04:05.123Z boot", "at <*> boot");
  expect_masked("at 2024-01-02 03:04:05,123 boot", "at <*> boot");
  expect_masked("at 03:04:05 boot", "at <*> boot");
  expect_masked("at Sat Jun 18 02:08:10 2005 boot", "at <*> boot");
  expect_masked("on Jun  9 02:08:10 boot", "on <*> boot");
  expect_masked("pod checkout-7d9f8b6c4-x2x7z ready", "pod checkout-<*> ready");
  expect_masked("pod node-exporter-x2b7z ready", "pod node-exporter-<*> ready");
  expect_masked("tag=\"View Lock\" name='a b'", "tag=\"<*>\" name='<*>'");
  expect_masked("can't won't", "can't won't"); /* apostrophes are not quotes */
  /* digits inside a word stay (t761, u0); after punctuation they are masked (blk_, node-) */
  expect_masked("t761 u0 blk_-123 node-246", "t761 u0 blk_<*> node-<*>");
  /* a compound id is one parameter */
  expect_masked("app appattempt_1445144423722_0020_000001", "app appattempt_<*>");
  /* dates next to words */
  expect_masked("build 2024-01-02-rc1", "build <*>-rc1");
}

static void test_params(void **state)
{
  (void)state;
  vg_logmine_t *m = miner();
  const char *l1 = "Failed password for root from 10.0.0.1 port 22 ssh2";
  vg_logmine_result_t r;
  assert_int_equal(logmine_add(m, l1, strlen(l1), &r), VG_LOGMINE_CREATED);
  assert_int_equal(r.nparams, 2);
  assert_int_equal(r.params[0].len, 8);
  assert_memory_equal(l1 + r.params[0].off, "10.0.0.1", 8);
  assert_memory_equal(l1 + r.params[1].off, "22", 2);
  const char *l2 = "Failed password for root from 10.0.0.2 port 2222 ssh2";
  assert_int_equal(logmine_add(m, l2, strlen(l2), &r), VG_LOGMINE_MATCHED);
  assert_int_equal(r.id, 1);
  assert_false(r.changed);
  assert_int_equal(r.nparams, 2);
  assert_memory_equal(l2 + r.params[1].off, "2222", 4);
  logmine_free(m);
}

static void test_templates_and_ids(void **state)
{
  (void)state;
  vg_logmine_t *m = miner();
  assert_int_equal(
      add(m, "Received block blk_1 of size 67108864 from 10.1.1.1", VG_LOGMINE_CREATED), 1);
  assert_int_equal(add(m, "PacketResponder 1 for block blk_2 terminating", VG_LOGMINE_CREATED), 2);
  assert_int_equal(add(m, "Received block blk_3 of size 3 from 10.1.1.2", VG_LOGMINE_MATCHED), 1);
  assert_int_equal(add(m, "Verification succeeded for blk_9", VG_LOGMINE_CREATED), 3);
  /* a soft difference (identifier vs identifier) generalises at once */
  assert_int_equal(add(m, "Served block to com.example.a", VG_LOGMINE_CREATED), 4);
  vg_logmine_result_t r;
  const char *l = "Served block to com.example.b";
  assert_int_equal(logmine_add(m, l, strlen(l), &r), VG_LOGMINE_MATCHED);
  assert_int_equal(r.id, 4);
  assert_true(r.changed);
  assert_int_equal(r.nparams, 1);
  assert_memory_equal(l + r.params[0].off, "com.example.b", 13);
  expect_template(m, 1, "Received block blk_<*> of size <*> from <*>");
  expect_template(m, 2, "PacketResponder <*> for block blk_<*> terminating");
  expect_template(m, 4, "Served block to <*>");
  /* blanks between tokens are kept as first seen */
  assert_int_equal(add(m, "allDrawn= false,  moved", VG_LOGMINE_CREATED), 5);
  expect_template(m, 5, "allDrawn= false,  moved");
  vg_logmine_stats_t st;
  logmine_stats(m, &st);
  assert_int_equal(st.clusters, 5);
  assert_int_equal(st.created, 5);
  assert_int_equal(st.lines, 7);
  logmine_free(m);
}

static void test_word_variants(void **state)
{
  (void)state;
  vg_logmine_t *m = miner();
  /* two words: two messages */
  uint64_t a = add(m, "Block 1 stored as bytes in memory", VG_LOGMINE_CREATED);
  uint64_t b = add(m, "Block 2 stored as values in memory", VG_LOGMINE_CREATED);
  assert_int_not_equal(a, b);
  assert_int_equal(add(m, "Block 3 stored as bytes in memory", VG_LOGMINE_MATCHED), a);
  /* user names: after WORD_VARIANTS (4) distinct words the position becomes <*> */
  uint64_t u1 = add(m, "Invalid user admin from 1.2.3.4", VG_LOGMINE_CREATED);
  add(m, "Invalid user oracle from 1.2.3.5", VG_LOGMINE_CREATED);
  add(m, "Invalid user test from 1.2.3.6", VG_LOGMINE_CREATED);
  vg_logmine_result_t r;
  const char *l = "Invalid user guest from 1.2.3.7";
  assert_int_equal(logmine_add(m, l, strlen(l), &r), VG_LOGMINE_MATCHED);
  assert_int_equal(r.id, u1);
  assert_int_equal(r.merged, 2);
  assert_true(r.changed);
  expect_template(m, u1, "Invalid user <*> from <*>");
  /* the folded ids resolve to the survivor */
  vg_logmine_template_t t;
  assert_true(logmine_get(m, u1 + 1, &t));
  assert_int_equal(t.id, u1);
  assert_int_equal(t.count, 4);
  assert_int_equal(add(m, "Invalid user oracle from 9.9.9.9", VG_LOGMINE_MATCHED), u1);
  vg_logmine_stats_t st;
  logmine_stats(m, &st);
  assert_int_equal(st.merged, 2);
  assert_int_equal(st.clusters, 3);
  logmine_free(m);
}

static bool count_cb(const vg_logmine_template_t *t, void *ud)
{
  (void)t;
  (*(size_t *)ud)++;
  return true;
}

static void test_lru_cap(void **state)
{
  (void)state;
  vg_logmine_opts_t o;
  logmine_opts_default(&o);
  o.max_clusters = 3;
  char err[128];
  vg_logmine_t *m = logmine_new(&o, err, sizeof err);
  assert_non_null(m);
  add(m, "alpha one", VG_LOGMINE_CREATED);                          /* 1 */
  add(m, "beta two three", VG_LOGMINE_CREATED);                     /* 2 */
  add(m, "gamma four five six", VG_LOGMINE_CREATED);                /* 3 */
  add(m, "alpha one", VG_LOGMINE_MATCHED);                          /* 1 is now the most recent */
  assert_int_equal(add(m, "delta x y z w", VG_LOGMINE_CREATED), 4); /* evicts 2 */
  vg_logmine_template_t t;
  assert_false(logmine_get(m, 2, &t));
  assert_true(logmine_get(m, 1, &t));
  assert_true(logmine_get(m, 3, &t));
  vg_logmine_stats_t st;
  logmine_stats(m, &st);
  assert_int_equal(st.evicted, 1);
  assert_int_equal(st.clusters, 3);
  size_t n = 0;
  assert_true(logmine_foreach(m, count_cb, &n));
  assert_int_equal(n, 3);
  /* an evicted template comes back with a new id; memory stays bounded */
  for (int i = 0; i < 1000; i++) {
    char line[64];
    snprintf(line, sizeof line, "w%c%c line %d", 'a' + i % 26, 'a' + (i / 26) % 26, i);
    vg_logmine_result_t r;
    assert_true(logmine_add(m, line, strlen(line), &r) >= 0);
  }
  logmine_stats(m, &st);
  assert_int_equal(st.clusters, 3);
  assert_true(st.bytes < 4096);
  logmine_free(m);
}

static void test_match_only(void **state)
{
  (void)state;
  vg_logmine_t *m = miner();
  add(m, "user 1 logged in", VG_LOGMINE_CREATED);
  vg_logmine_result_t r;
  assert_int_equal(logmine_match(m, "user 2 logged in", 16, &r), VG_LOGMINE_MATCHED);
  assert_int_equal(r.id, 1);
  assert_int_equal(logmine_match(m, "disk full", 9, &r), VG_LOGMINE_NOMATCH);
  assert_int_equal(logmine_match(m, "user 2 logged out", 17, &r), VG_LOGMINE_NOMATCH);
  logmine_set_match_only(m, true);
  assert_int_equal(logmine_add(m, "disk full", 9, &r), VG_LOGMINE_NOMATCH);
  assert_int_equal(logmine_add(m, "user 3 logged in", 16, &r), VG_LOGMINE_MATCHED);
  vg_logmine_template_t t;
  assert_true(logmine_get(m, 1, &t));
  assert_int_equal(t.count, 2);
  vg_logmine_stats_t st;
  logmine_stats(m, &st);
  assert_int_equal(st.clusters, 1);
  assert_int_equal(st.nomatch, 3);
  logmine_free(m);
}

static void test_input_handling(void **state)
{
  (void)state;
  vg_logmine_opts_t o;
  logmine_opts_default(&o);
  o.max_line = 16;
  o.max_tokens = 3;
  char err[128];
  vg_logmine_t *m = logmine_new(&o, err, sizeof err);
  assert_non_null(m);
  vg_logmine_result_t r;
  assert_int_equal(logmine_add(m, "", 0, &r), VG_LOGMINE_EMPTY);
  assert_int_equal(logmine_add(m, " \t\r\n", 4, &r), VG_LOGMINE_EMPTY);
  const char *longl = "abc def ghi jkl mno pqr";
  assert_int_equal(logmine_add(m, longl, strlen(longl), &r), VG_LOGMINE_CREATED);
  assert_true(r.truncated);
  expect_template(m, r.id,
                  "abc def ghi jkl"); /* cut at 16 bytes; 3 tokens: the last takes the rest */
  /* invalid UTF-8, NUL and control bytes are data or blanks, never a crash */
  const char bad[] = "\xff\xfe x\x00y \x1b[31m";
  assert_int_equal(logmine_add(m, bad, sizeof bad - 1, &r), VG_LOGMINE_CREATED);
  vg_logmine_stats_t st;
  logmine_stats(m, &st);
  assert_int_equal(st.empty, 2);
  assert_int_equal(st.truncated, 1);
  logmine_free(m);
  assert_null(logmine_new(&(vg_logmine_opts_t){ .similarity = 2 }, err, sizeof err));
  assert_string_equal(err, "similarity must be in (0, 1]");
}

static void test_user_masks(void **state)
{
  (void)state;
  vg_logmine_t *m = miner();
  char err[128];
  assert_int_equal(logmine_add_mask(m, "ORD%-%u+", 8, err, sizeof err), 0);
  assert_int_equal(logmine_add_mask(m, "[a", 2, err, sizeof err), -1);
  uint64_t id = add(m, "order ORD-ABC shipped", VG_LOGMINE_CREATED);
  expect_template(m, id, "order <*> shipped");
  logmine_free(m);
}

static void test_snapshot_round_trip(void **state)
{
  (void)state;
  vg_logmine_t *m = miner();
  add(m, "Invalid user admin from 1.2.3.4", VG_LOGMINE_CREATED);
  add(m, "Invalid user oracle from 1.2.3.5", VG_LOGMINE_CREATED);
  add(m, "Invalid user test from 1.2.3.6", VG_LOGMINE_CREATED);
  add(m, "Invalid user guest from 1.2.3.7", VG_LOGMINE_MATCHED);
  add(m, "disk /dev/sda1 is 93% full", VG_LOGMINE_CREATED);
  size_t len;
  char *snap = logmine_snapshot(m, &len);
  assert_non_null(snap);
  vg_logmine_t *m2 = miner();
  add(m2, "something else entirely", VG_LOGMINE_CREATED);
  char err[128];
  assert_int_equal(logmine_restore(m2, snap, len, err, sizeof err), 0);
  expect_template(m2, 1, "Invalid user <*> from <*>");
  expect_template(m2, 2, "Invalid user <*> from <*>"); /* an alias */
  expect_template(m2, 4, "disk <*> is <*>% full");
  vg_logmine_template_t t;
  assert_true(logmine_get(m2, 1, &t));
  assert_int_equal(t.count, 4);
  assert_int_equal(add(m2, "Invalid user bob from 5.6.7.8", VG_LOGMINE_MATCHED), 1);
  assert_int_equal(add(m2, "disk /dev/sdb2 is 99% full", VG_LOGMINE_MATCHED), 4);
  assert_int_equal(add(m2, "new message here", VG_LOGMINE_CREATED), 5);
  /* every truncation and a flipped byte is refused (or accepted whole), never a crash */
  for (size_t cut = 0; cut < len; cut++) {
    int rc = logmine_restore(m2, snap, cut, err, sizeof err);
    assert_int_equal(rc, -1);
  }
  for (size_t i = 0; i < len; i++) {
    snap[i] ^= 0x5a;
    (void)logmine_restore(m2, snap, len, err, sizeof err);
    snap[i] ^= 0x5a;
  }
  assert_int_equal(logmine_restore(m2, "junk", 4, err, sizeof err), -1);
  assert_string_equal(err, "not a log miner snapshot");
  free(snap);
  logmine_free(m);
  logmine_free(m2);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_masks),
    cmocka_unit_test(test_params),
    cmocka_unit_test(test_templates_and_ids),
    cmocka_unit_test(test_word_variants),
    cmocka_unit_test(test_lru_cap),
    cmocka_unit_test(test_match_only),
    cmocka_unit_test(test_input_handling),
    cmocka_unit_test(test_user_masks),
    cmocka_unit_test(test_snapshot_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
