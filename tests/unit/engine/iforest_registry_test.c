/* Tests for src/engine/iforest_registry.c: named forests share one model, a fit replaces it and
 * is counted in bytes, collect emits what changed (and, daily, a model only used) and marks it
 * clean, a restored forest scores exactly as the one collected, bad blobs (truncated, wrong
 * version, corrupt, random) are refused with nothing changed, and the count and byte caps
 * hold. */
#include "engine/iforest_registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

/* The test's own generator: a 64-bit LCG. */
static uint64_t lcg_state;

static double lcg_unit(void)
{
  lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
  return ((double)(lcg_state >> 11) + 0.5) * 0x1.0p-53;
}

/* n rows of d values in [0, 1) plus `shift`; caller frees. */
static double *rows(size_t n, size_t d, uint64_t seed, double shift)
{
  lcg_state = seed;
  double *x = malloc(n * d * sizeof(*x));
  assert_non_null(x);
  for (size_t i = 0; i < n * d; i++) {
    x[i] = lcg_unit() + shift;
  }
  return x;
}

static vg_iforest_opts_t opts_of(uint32_t trees, double contamination, uint64_t seed)
{
  vg_iforest_opts_t o;
  iforest_opts_default(&o);
  o.n_estimators = trees;
  o.contamination = contamination;
  o.random_state = seed;
  return o;
}

static vg_iforest_t *fit(const vg_iforest_opts_t *o, double shift)
{
  double *x = rows(300, 2, 42, shift);
  char err[160] = "";
  vg_iforest_t *f = iforest_fit(x, 300, 2, o, err, sizeof(err));
  free(x);
  assert_non_null(f);
  return f;
}

/* The probe: a point in the cloud and a far outlier. */
static const double probe[] = { 0.5, 0.5, 6.0, 6.0 };

/* What a collect emitted: copies of up to 8 blobs. */
typedef struct {
  int calls;
  char names[8][32];
  uint8_t *blobs[8];
  size_t lens[8];
} emitted_t;

static void collect_into(void *ctx, const char *name, const void *blob, size_t len)
{
  emitted_t *e = ctx;
  assert_true(e->calls < 8);
  snprintf(e->names[e->calls], sizeof(e->names[0]), "%s", name);
  e->blobs[e->calls] = malloc(len > 0 ? len : 1);
  assert_non_null(e->blobs[e->calls]);
  memcpy(e->blobs[e->calls], blob, len);
  e->lens[e->calls++] = len;
}

static void emitted_free(emitted_t *e)
{
  for (int i = 0; i < e->calls; i++) {
    free(e->blobs[i]);
  }
  memset(e, 0, sizeof(*e));
}

static void test_named_forests_share_one_model(void **state)
{
  (void)state;
  vg_iforest_registry_t *r = iforest_registry_new(0, 0);
  assert_non_null(r);
  char err[200] = "";
  vg_iforest_opts_t o = opts_of(50, 0, 1);
  vg_iforest_named_t *e = iforest_registry_add(r, "checkout", &o, err, sizeof(err));
  assert_non_null(e);
  assert_ptr_equal(iforest_registry_get(r, "checkout"), e);
  assert_null(iforest_registry_get(r, "other"));
  assert_string_equal(iforest_named_name(e), "checkout");
  assert_int_equal(iforest_named_opts(e)->n_estimators, 50);
  assert_null(iforest_named_model(e));
  assert_int_equal(iforest_registry_count(r), 1);
  assert_int_equal(iforest_registry_bytes(r), 0);

  assert_null(iforest_registry_add(r, "checkout", &o, err, sizeof(err)));
  assert_string_equal(err, "forest \"checkout\" exists already");
  assert_null(iforest_registry_add(r, "", &o, err, sizeof(err)));
  assert_string_equal(err, "a forest name has 1 to 1024 bytes");
  char longname[1026];
  memset(longname, 'x', 1025);
  longname[1025] = '\0';
  assert_null(iforest_registry_add(r, longname, &o, err, sizeof(err)));
  vg_iforest_opts_t bad = o;
  bad.n_estimators = 0;
  assert_null(iforest_registry_add(r, "bad", &bad, err, sizeof(err)));
  assert_string_equal(err, "n_estimators must be in [1, 100000], got 0");
  bad = o;
  bad.contamination = 0.6;
  assert_null(iforest_registry_add(r, "bad", &bad, err, sizeof(err)));
  assert_string_equal(err, "contamination must be 'auto' (0) or in (0, 0.5], got 0.6");
  bad = o;
  bad.max_features = 0;
  assert_null(iforest_registry_add(r, "bad", &bad, err, sizeof(err)));
  assert_int_equal(iforest_registry_count(r), 1);

  /* a fit replaces the model whole; the bytes follow */
  vg_iforest_t *f1 = fit(&o, 0);
  size_t b1 = iforest_memory(f1);
  assert_true(b1 > 50 * sizeof(double));
  assert_int_equal(iforest_named_set(r, e, f1, err, sizeof(err)), 0);
  assert_ptr_equal(iforest_named_model(e), f1);
  assert_int_equal(iforest_registry_bytes(r), b1);
  vg_iforest_opts_t o2 = opts_of(50, 0, 2);
  vg_iforest_t *f2 = fit(&o2, 3);
  size_t b2 = iforest_memory(f2);
  assert_int_equal(iforest_named_set(r, e, f2, err, sizeof(err)), 0); /* f1 freed (ASan) */
  assert_ptr_equal(iforest_named_model(e), f2);
  assert_int_equal(iforest_registry_bytes(r), b2);
  assert_int_equal(iforest_named_fits(e), 2);
  iforest_registry_free(r);
  iforest_registry_free(NULL);
}

static void test_collect_marks_clean(void **state)
{
  (void)state;
  vg_iforest_registry_t *r = iforest_registry_new(0, 0);
  char err[200] = "";
  vg_iforest_opts_t o = opts_of(20, 0.1, 3);
  vg_iforest_named_t *a = iforest_registry_add(r, "a", &o, err, sizeof(err));
  vg_iforest_named_t *b = iforest_registry_add(r, "b", &o, err, sizeof(err));
  assert_non_null(a);
  assert_non_null(b);
  emitted_t em = { 0 };
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 2); /* created */
  assert_string_equal(em.names[0], "a");
  assert_string_equal(em.names[1], "b");
  assert_int_equal(em.lens[0], VG_IFOREST_NAMED_HEADER); /* options only: no model yet */
  assert_memory_equal(em.blobs[0], "VGNF", 4);
  emitted_free(&em);
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 0); /* nothing since */
  assert_int_equal(em.calls, 0);

  vg_iforest_t *f = fit(&o, 0);
  size_t saved;
  uint8_t *model = iforest_save(f, &saved);
  assert_non_null(model);
  assert_int_equal(iforest_named_set(r, b, f, err, sizeof(err)), 0);
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 1); /* fitted */
  assert_string_equal(em.names[0], "b");
  assert_int_equal(em.lens[0], VG_IFOREST_NAMED_HEADER + saved);
  assert_memory_equal(em.blobs[0] + VG_IFOREST_NAMED_HEADER, model, saved);
  free(model);
  emitted_free(&em);
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 0);

  /* a model only scored is written again a day after its last write, so the store keeps it */
  int64_t t0 = 1767225600000;
  iforest_named_used(b, t0); /* the first use starts the clock */
  iforest_named_used(b, t0 + VG_IFOREST_REFRESH_MS - 1);
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 0);
  iforest_named_used(b, t0 + VG_IFOREST_REFRESH_MS);
  iforest_named_used(a, t0 + VG_IFOREST_REFRESH_MS); /* a's first use: no write */
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 1);
  assert_string_equal(em.names[0], "b");
  assert_int_equal(em.lens[0], VG_IFOREST_NAMED_HEADER + saved);
  emitted_free(&em);
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 0);
  iforest_named_used(b, t0 + 2 * VG_IFOREST_REFRESH_MS - 1);
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 0);
  iforest_named_used(b, t0 + 2 * VG_IFOREST_REFRESH_MS);
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 1);
  emitted_free(&em);
  iforest_registry_free(r);
}

static void test_restore_round_trip_scores_identically(void **state)
{
  (void)state;
  vg_iforest_registry_t *r = iforest_registry_new(0, 0);
  char err[200] = "";
  vg_iforest_opts_t o = opts_of(60, 0.05, 7);
  o.max_samples = 128;
  o.max_features = 0.5;
  vg_iforest_named_t *e = iforest_registry_add(r, "checkout", &o, err, sizeof(err));
  assert_non_null(iforest_registry_add(r, "empty", &o, err, sizeof(err)));
  assert_int_equal(iforest_named_set(r, e, fit(&o, 0), err, sizeof(err)), 0);
  emitted_t em = { 0 };
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 2);

  vg_iforest_registry_t *r2 = iforest_registry_new(0, 0);
  for (int i = 0; i < em.calls; i++) {
    assert_int_equal(
        iforest_registry_restore(r2, em.names[i], em.blobs[i], em.lens[i], err, sizeof(err)), 0);
  }
  assert_int_equal(iforest_registry_count(r2), 2);
  vg_iforest_named_t *e2 = iforest_registry_get(r2, "checkout");
  assert_non_null(e2);
  const vg_iforest_opts_t *o2 = iforest_named_opts(e2);
  assert_int_equal(o2->n_estimators, 60);
  assert_int_equal(o2->max_samples, 128);
  assert_true(o2->max_features == 0.5 && o2->contamination == 0.05);
  assert_int_equal(o2->random_state, 7);
  assert_int_equal(iforest_named_fits(e2), 0);
  assert_null(iforest_named_model(iforest_registry_get(r2, "empty")));
  double s1[2], s2[2];
  iforest_score(iforest_named_model(e), probe, 2, s1);
  iforest_score(iforest_named_model(e2), probe, 2, s2);
  assert_memory_equal(s1, s2, sizeof(s1));
  assert_true(s1[1] > s1[0]);
  assert_true(iforest_threshold(iforest_named_model(e)) ==
              iforest_threshold(iforest_named_model(e2)));
  assert_int_equal(iforest_registry_bytes(r2), iforest_registry_bytes(r));

  emitted_t again = { 0 };
  assert_int_equal(iforest_registry_collect(r2, collect_into, &again), 0); /* restored: clean */

  /* a restore over an existing forest replaces its model and its bytes */
  vg_iforest_opts_t small = opts_of(5, 0, 1);
  vg_iforest_named_t *x = iforest_registry_add(r2, "x", &small, err, sizeof(err));
  assert_int_equal(iforest_named_set(r2, x, fit(&small, 0), err, sizeof(err)), 0);
  size_t before = iforest_registry_bytes(r2);
  size_t xbytes = iforest_memory(iforest_named_model(x));
  assert_int_equal(iforest_registry_restore(r2, "x", em.blobs[0], em.lens[0], err, sizeof(err)), 0);
  assert_int_equal(iforest_named_opts(x)->n_estimators, 60);
  iforest_score(iforest_named_model(x), probe, 2, s2);
  assert_memory_equal(s1, s2, sizeof(s1));
  assert_int_equal(iforest_registry_bytes(r2),
                   before - xbytes + iforest_memory(iforest_named_model(x)));
  emitted_free(&em);
  iforest_registry_free(r2);
  iforest_registry_free(r);
}

/* Refused, and nothing changed in r. */
static void assert_refused(vg_iforest_registry_t *r,
                           const uint8_t *blob,
                           size_t len,
                           const char *want)
{
  char err[200] = "";
  size_t count = iforest_registry_count(r), bytes = iforest_registry_bytes(r);
  assert_int_equal(iforest_registry_restore(r, "checkout", blob, len, err, sizeof(err)), -1);
  if (want != NULL && strstr(err, want) == NULL) {
    fail_msg("error \"%s\" does not contain \"%s\"", err, want);
  }
  assert_int_equal(iforest_registry_count(r), count);
  assert_int_equal(iforest_registry_bytes(r), bytes);
}

static void test_bad_blobs_are_refused(void **state)
{
  (void)state;
  vg_iforest_registry_t *r = iforest_registry_new(0, 0);
  char err[200] = "";
  vg_iforest_opts_t o = opts_of(10, 0, 4);
  vg_iforest_named_t *e = iforest_registry_add(r, "src", &o, err, sizeof(err));
  assert_int_equal(iforest_named_set(r, e, fit(&o, 0), err, sizeof(err)), 0);
  emitted_t em = { 0 };
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 1);
  const uint8_t *good = em.blobs[0];
  size_t len = em.lens[0];
  vg_iforest_registry_t *t = iforest_registry_new(0, 0);

  /* every truncation */
  for (size_t cut = 0; cut < len; cut++) {
    assert_refused(t, good, cut, NULL);
  }
  assert_refused(t, good, 3, "not a named forest blob");
  assert_refused(t, good, VG_IFOREST_NAMED_HEADER - 1, "truncated");
  assert_refused(t, good, VG_IFOREST_NAMED_HEADER, "not an isolation forest blob");

  uint8_t *b = malloc(len + 1);
  assert_non_null(b);
  /* a newer version */
  memcpy(b, good, len);
  b[4] = 2;
  assert_refused(t, b, len, "version 2, this build reads 1");
  /* unknown flags */
  memcpy(b, good, len);
  b[9] = 1;
  assert_refused(t, b, len, "corrupt (flags 0x101)");
  /* bad options: 0 trees, then trees that disagree with the model */
  memcpy(b, good, len);
  memset(b + 12, 0, 4);
  assert_refused(t, b, len, "corrupt (n_estimators must be in [1, 100000], got 0)");
  b[12] = 11;
  assert_refused(t, b, len, "corrupt (10 trees, options say 11)");
  /* no model said, bytes after the options */
  memcpy(b, good, len);
  b[8] = 0;
  assert_refused(t, b, len, "bytes after the options");
  /* a model blob with a byte too many or a wrong magic */
  memcpy(b, good, len);
  b[len] = 0;
  assert_refused(t, b, len + 1, NULL);
  b[VG_IFOREST_NAMED_HEADER] ^= 0xff;
  assert_refused(t, b, len, "not an isolation forest blob");
  free(b);

  /* random bytes: alone, and after a valid header that says a model follows */
  lcg_state = 99;
  uint8_t junk[512];
  for (int round = 0; round < 2000; round++) {
    size_t n = (size_t)(lcg_unit() * sizeof(junk));
    for (size_t i = 0; i < n; i++) {
      junk[i] = (uint8_t)(lcg_unit() * 256);
    }
    if (round % 2 == 1 && n >= VG_IFOREST_NAMED_HEADER) {
      memcpy(junk, good, VG_IFOREST_NAMED_HEADER);
    }
    assert_refused(t, junk, n, NULL);
  }
  assert_int_equal(iforest_registry_count(t), 0);
  /* a bad name */
  assert_int_equal(iforest_registry_restore(t, "", good, len, err, sizeof(err)), -1);
  assert_string_equal(err, "a forest name has 1 to 1024 bytes");
  /* and the good one still restores */
  assert_int_equal(iforest_registry_restore(t, "checkout", good, len, err, sizeof(err)), 0);
  emitted_free(&em);
  iforest_registry_free(t);
  iforest_registry_free(r);
}

static void test_caps(void **state)
{
  (void)state;
  char err[200] = "";
  vg_iforest_opts_t o = opts_of(30, 0, 5);
  vg_iforest_t *f1 = fit(&o, 0);
  size_t b1 = iforest_memory(f1);

  /* the count */
  vg_iforest_registry_t *r = iforest_registry_new(2, 0);
  assert_int_equal(iforest_registry_max_bytes(r), VG_IFOREST_REGISTRY_BYTES);
  assert_non_null(iforest_registry_add(r, "a", &o, err, sizeof(err)));
  vg_iforest_named_t *b = iforest_registry_add(r, "b", &o, err, sizeof(err));
  assert_null(iforest_registry_add(r, "c", &o, err, sizeof(err)));
  assert_string_equal(err, "too many named forests (2)");
  assert_int_equal(iforest_named_set(r, b, f1, err, sizeof(err)), 0);
  emitted_t em = { 0 };
  assert_int_equal(iforest_registry_collect(r, collect_into, &em), 2);
  assert_int_equal(iforest_registry_restore(r, "c", em.blobs[1], em.lens[1], err, sizeof(err)), -1);
  assert_string_equal(err, "too many named forests (2)");
  assert_int_equal(iforest_registry_count(r), 2);
  /* an existing name is not a new one */
  assert_int_equal(iforest_registry_restore(r, "a", em.blobs[1], em.lens[1], err, sizeof(err)), 0);
  assert_int_equal(iforest_registry_bytes(r), 2 * b1);
  iforest_registry_free(r);

  /* the bytes: room for one model of this size */
  r = iforest_registry_new(0, b1 + b1 / 2);
  vg_iforest_named_t *x = iforest_registry_add(r, "x", &o, err, sizeof(err));
  vg_iforest_named_t *y = iforest_registry_add(r, "y", &o, err, sizeof(err));
  assert_int_equal(iforest_named_set(r, x, fit(&o, 0), err, sizeof(err)), 0);
  vg_iforest_t *f2 = fit(&o, 0);
  assert_int_equal(iforest_named_set(r, y, f2, err, sizeof(err)), -1);
  char want[200];
  snprintf(want, sizeof(want),
           "the model of %zu bytes would take named forests past their cap of %zu bytes (%zu in "
           "use by the others)",
           b1, b1 + b1 / 2, b1);
  assert_string_equal(err, want);
  assert_null(iforest_named_model(y)); /* nothing changed; the caller still owns f2 */
  assert_int_equal(iforest_registry_bytes(r), b1);
  /* replacing x's model with one of the same size fits: the old one's bytes go */
  assert_int_equal(iforest_named_set(r, x, f2, err, sizeof(err)), 0);
  assert_ptr_equal(iforest_named_model(x), f2);
  assert_int_equal(iforest_registry_bytes(r), b1);
  /* a restore past the cap is refused too */
  assert_int_equal(iforest_registry_restore(r, "y", em.blobs[1], em.lens[1], err, sizeof(err)), -1);
  assert_non_null(strstr(err, "past their cap"));
  assert_null(iforest_named_model(y));
  assert_int_equal(iforest_registry_bytes(r), b1);
  emitted_free(&em);
  iforest_registry_free(r);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_named_forests_share_one_model),
    cmocka_unit_test(test_collect_marks_clean),
    cmocka_unit_test(test_restore_round_trip_scores_identically),
    cmocka_unit_test(test_bad_blobs_are_refused),
    cmocka_unit_test(test_caps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
