/* Tests for src/engine/iforest.c: c(n) against sklearn's values, exact scores of degenerate
 * forests, an obvious outlier scored highest, determinism for a seed, the contamination
 * threshold, the depth limit, bad input, and the binary format. */
#include "engine/iforest.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

/* cmocka's assert_float_equal compares floats; these values need doubles. */
#define assert_close(a, b, eps) assert_close_at((a), (b), (eps), #a, __LINE__)

static void assert_close_at(double a, double b, double eps, const char *expr, int line)
{
  if (!(a == b || fabs(a - b) <= eps)) {
    fail_msg("line %d: %s = %.17g, want %.17g (+/- %g)", line, expr, a, b, eps);
  }
}

/* The test's own generator (independent of the engine's): a 64-bit LCG and Box-Muller. */
static uint64_t lcg_state;

static double lcg_unit(void)
{
  lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
  return ((double)(lcg_state >> 11) + 0.5) * 0x1.0p-53;
}

static double gauss(void)
{
  double u = lcg_unit(), v = lcg_unit();
  return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

/* n rows of d standard normal values; caller frees. */
static double *normal_rows(size_t n, size_t d, uint64_t seed)
{
  lcg_state = seed;
  double *x = malloc(n * d * sizeof(*x));
  assert_non_null(x);
  for (size_t i = 0; i < n * d; i++) {
    x[i] = gauss();
  }
  return x;
}

static vg_iforest_t *fit_ok(const double *x, size_t n, size_t d, const vg_iforest_opts_t *o)
{
  char err[128] = "";
  vg_iforest_t *f = iforest_fit(x, n, d, o, err, sizeof(err));
  if (f == NULL) {
    fail_msg("fit failed: %s", err);
  }
  return f;
}

static void test_c_matches_sklearn(void **state)
{
  (void)state;
  /* sklearn.ensemble._iforest._average_path_length([1, 2, 3, 10, 256]) */
  assert_close(iforest_c(0), 0.0, 0);
  assert_close(iforest_c(1), 0.0, 0);
  assert_close(iforest_c(2), 1.0, 0);
  assert_close(iforest_c(3), 1.207392357589623, 1e-14);
  assert_close(iforest_c(10), 3.748880484475504, 1e-14);
  assert_close(iforest_c(256), 10.244770920119917, 1e-13);
  /* the formula written out: 2 H(n-1) - 2(n-1)/n with H(i) ~ ln(i) + gamma */
  double n = 1000;
  assert_close(iforest_c(n), 2 * (log(n - 1) + 0.5772156649015329) - 2 * (n - 1) / n, 1e-12);
}

static void test_degenerate_forests_score_exactly(void **state)
{
  (void)state;
  /* Identical rows: the root is a leaf holding psi rows, h = c(psi), so s = 2^-1 everywhere. */
  double same[20 * 2];
  for (size_t i = 0; i < 40; i++) {
    same[i] = 3.0;
  }
  vg_iforest_t *f = fit_ok(same, 20, 2, NULL);
  assert_int_equal(iforest_node_count(f), 100); /* one leaf per tree */
  assert_int_equal(iforest_max_samples(f), 20);
  double probe[] = { 3.0, 3.0, -100.0, 7.0 }, s[2];
  iforest_score(f, probe, 2, s);
  assert_close(s[0], 0.5, 1e-15);
  assert_close(s[1], 0.5, 1e-15);
  iforest_free(f);

  /* max_samples = 2: depth limit ceil(log2 2) = 1, two leaves of one row each, h = 1, c(2) = 1. */
  double two[] = { 0.0, 1.0, 2.0, 3.0, 4.0, 5.0 };
  vg_iforest_opts_t o;
  iforest_opts_default(&o);
  o.max_samples = 2;
  o.n_estimators = 7;
  f = fit_ok(two, 6, 1, &o);
  assert_int_equal(iforest_node_count(f), 7 * 3);
  double q[] = { -50.0, 2.5, 1e9 }, sq[3];
  iforest_score(f, q, 3, sq);
  for (int i = 0; i < 3; i++) {
    assert_close(sq[i], 0.5, 1e-15);
  }
  iforest_free(f);

  /* One row: psi = 1, c(1) = 0, every point scores 1 (sklearn does the same). */
  double one[] = { 1.0, 2.0 };
  f = fit_ok(one, 1, 2, NULL);
  iforest_score(f, one, 1, sq);
  assert_close(sq[0], 1.0, 0);
  iforest_free(f);
}

static void test_depth_limit_bounds_tree_size(void **state)
{
  (void)state;
  double *x = normal_rows(500, 3, 7);
  vg_iforest_opts_t o;
  iforest_opts_default(&o);
  o.max_samples = 16; /* depth <= 4: at most 16 leaves, 31 nodes */
  o.n_estimators = 50;
  vg_iforest_t *f = fit_ok(x, 500, 3, &o);
  assert_true(iforest_node_count(f) <= 50 * 31);
  assert_true(iforest_node_count(f) >= 50 * 9); /* 16 distinct rows split at least to depth 3 */
  /* E[h] <= 4 + c(max leaf size): with 16 rows and 16 leaves, s >= 2^(-(4 + c(16))/c(16)) */
  double s[500];
  iforest_score(f, x, 500, s);
  double lo = exp2(-(4 + iforest_c(16)) / iforest_c(16));
  for (size_t i = 0; i < 500; i++) {
    assert_true(s[i] >= lo - 1e-12);
    assert_true(s[i] > 0 && s[i] <= 1);
  }
  iforest_free(f);
  free(x);
}

static void test_obvious_outlier_scores_highest(void **state)
{
  (void)state;
  size_t n = 301, d = 2;
  double *x = normal_rows(n, d, 42);
  x[(n - 1) * d] = 8.0; /* the last row sits far from the cluster */
  x[(n - 1) * d + 1] = 8.0;
  vg_iforest_t *f = fit_ok(x, n, d, NULL);
  assert_int_equal(iforest_max_samples(f), 256);
  assert_int_equal(iforest_n_estimators(f), 100);
  double *s = malloc(n * sizeof(*s));
  iforest_score(f, x, n, s);
  for (size_t i = 0; i + 1 < n; i++) {
    assert_true(s[i] < s[n - 1]);
    assert_true(s[i] > 0 && s[i] <= 1);
  }
  assert_true(s[n - 1] > 0.7);
  /* 'auto': threshold 0.5, decision = 0.5 - s, predict -1 where decision < 0 */
  assert_close(iforest_threshold(f), 0.5, 0);
  double dec[1];
  iforest_decision(f, x + (n - 1) * d, 1, dec);
  assert_close(dec[0], 0.5 - s[n - 1], 1e-15);
  int8_t pred[301];
  iforest_predict(f, x, n, pred, s);
  assert_int_equal(pred[n - 1], -1);
  int8_t one;
  iforest_predict(f, x + (n - 1) * d, 1, &one, NULL); /* the allocation-free path agrees */
  assert_int_equal(one, -1);
  /* monotone along a ray away from the cluster */
  double ray[] = { 0.0, 0.0, 2.0, 2.0, 4.0, 4.0, 50.0, 50.0 }, sr[4];
  iforest_score(f, ray, 4, sr);
  assert_true(sr[0] < sr[1] && sr[1] < sr[2] && sr[2] <= sr[3]);
  free(s);
  iforest_free(f);
  free(x);
}

static void test_deterministic_for_a_seed(void **state)
{
  (void)state;
  double *x = normal_rows(1000, 4, 3);
  vg_iforest_opts_t o;
  iforest_opts_default(&o);
  o.random_state = 12345;
  vg_iforest_t *a = fit_ok(x, 1000, 4, &o), *b = fit_ok(x, 1000, 4, &o);
  o.random_state = 12346;
  vg_iforest_t *c = fit_ok(x, 1000, 4, &o);
  double sa[1000], sb[1000], sc[1000];
  iforest_score(a, x, 1000, sa);
  iforest_score(b, x, 1000, sb);
  iforest_score(c, x, 1000, sc);
  assert_memory_equal(sa, sb, sizeof(sa));
  assert_true(memcmp(sa, sc, sizeof(sa)) != 0);
  /* scoring in one batch or row by row gives the same numbers (blocks do not leak) */
  for (size_t i = 0; i < 1000; i += 97) {
    double one;
    iforest_score(a, x + i * 4, 1, &one);
    assert_close(one, sa[i], 0);
  }
  iforest_free(a);
  iforest_free(b);
  iforest_free(c);
  free(x);
}

static int cmp_desc(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x > y ? -1 : x < y;
}

static void test_contamination_sets_the_training_quantile(void **state)
{
  (void)state;
  size_t n = 200;
  double *x = normal_rows(n, 3, 9);
  vg_iforest_opts_t o;
  iforest_opts_default(&o);
  o.contamination = 0.1;
  vg_iforest_t *f = fit_ok(x, n, 3, &o);
  double s[200], sorted[200];
  iforest_score(f, x, n, s);
  memcpy(sorted, s, sizeof(s));
  qsort(sorted, n, sizeof(*sorted), cmp_desc);
  /* numpy.percentile(-s, 10): position 0.1 * 199 = 19.9 among -s ascending (s descending) */
  double want = sorted[19] + (sorted[20] - sorted[19]) * 0.9;
  assert_close(iforest_threshold(f), want, 1e-12);
  int8_t pred[200];
  iforest_predict(f, x, n, pred, NULL);
  int outliers = 0;
  for (size_t i = 0; i < n; i++) {
    outliers += pred[i] == -1;
    assert_int_equal(pred[i] == -1, s[i] > want);
  }
  assert_int_equal(outliers, 20); /* the 20 highest of 200 lie above the interpolated cut */
  iforest_free(f);

  o.contamination = 0.5;
  f = fit_ok(x, n, 3, &o);
  iforest_predict(f, x, n, pred, NULL);
  outliers = 0;
  for (size_t i = 0; i < n; i++) {
    outliers += pred[i] == -1;
  }
  assert_int_equal(outliers, 100);
  iforest_free(f);
  free(x);
}

static void test_max_features_and_max_samples(void **state)
{
  (void)state;
  double *x = normal_rows(100, 8, 5);
  vg_iforest_opts_t o;
  iforest_opts_default(&o);
  o.max_features = 0.25; /* two columns per tree */
  o.max_samples = 1000;  /* above n: n, as sklearn */
  vg_iforest_t *f = fit_ok(x, 100, 8, &o);
  assert_int_equal(iforest_max_samples(f), 100);
  assert_int_equal(iforest_n_features(f), 8);
  double s[100];
  iforest_score(f, x, 100, s);
  for (int i = 0; i < 100; i++) {
    assert_true(s[i] > 0 && s[i] <= 1);
  }
  iforest_free(f);
  free(x);
}

static void expect_fit_error(
    const double *x, size_t n, size_t d, const vg_iforest_opts_t *o, const char *want)
{
  char err[128] = "";
  vg_iforest_t *f = iforest_fit(x, n, d, o, err, sizeof(err));
  assert_null(f);
  assert_string_equal(err, want);
}

static void test_bad_input(void **state)
{
  (void)state;
  double x[] = { 1, 2, 3, NAN, 5, 6 };
  expect_fit_error(x, 3, 2, NULL, "row 2 column 2 is not a finite number");
  x[3] = INFINITY;
  expect_fit_error(x, 3, 2, NULL, "row 2 column 2 is not a finite number");
  x[3] = 4;
  expect_fit_error(x, 0, 2, NULL, "no data (0 rows of 2 columns)");
  vg_iforest_opts_t o;
  iforest_opts_default(&o);
  o.contamination = 0.6;
  expect_fit_error(x, 3, 2, &o, "contamination must be 'auto' (0) or in (0, 0.5], got 0.6");
  o.contamination = NAN;
  expect_fit_error(x, 3, 2, &o, "contamination must be 'auto' (0) or in (0, 0.5], got nan");
  o.contamination = 0;
  o.max_features = 1.5;
  expect_fit_error(x, 3, 2, &o, "max_features must be in (0, 1], got 1.5");
}

static void test_save_load_round_trip(void **state)
{
  (void)state;
  double *x = normal_rows(300, 3, 11);
  vg_iforest_opts_t o;
  iforest_opts_default(&o);
  o.contamination = 0.05;
  vg_iforest_t *f = fit_ok(x, 300, 3, &o);
  size_t len = 0;
  uint8_t *blob = iforest_save(f, &len);
  assert_non_null(blob);
  char err[128] = "";
  vg_iforest_t *g = iforest_load(blob, len, err, sizeof(err));
  assert_non_null(g);
  assert_close(iforest_threshold(g), iforest_threshold(f), 0);
  assert_int_equal(iforest_node_count(g), iforest_node_count(f));
  double a[300], b[300];
  iforest_score(f, x, 300, a);
  iforest_score(g, x, 300, b);
  assert_memory_equal(a, b, sizeof(a));
  iforest_free(g);

  assert_null(iforest_load(blob, len - 1, err, sizeof(err)));
  assert_string_equal(err, "corrupt isolation forest blob (sizes)");
  blob[4] = 9; /* a newer format */
  assert_null(iforest_load(blob, len, err, sizeof(err)));
  assert_string_equal(err, "isolation forest format 9, this build reads 1");
  blob[4] = 1;
  memset(blob + len - 8, 0x7f, 4); /* the last node's column: neither a leaf nor a column */
  assert_null(iforest_load(blob, len, err, sizeof(err)));
  assert_string_equal(err, "corrupt isolation forest blob (nodes)");
  assert_null(iforest_load((const uint8_t *)"nope", 4, err, sizeof(err)));
  assert_string_equal(err, "not an isolation forest blob");
  free(blob);
  iforest_free(f);
  free(x);
}

static void test_window_features(void **state)
{
  (void)state;
  double v[] = { 1, 3, 2, 6 }, out[3 * VG_IFOREST_WINDOW_FEATURES];
  assert_int_equal(iforest_window_features(v, 4, 5, out), 0);
  assert_int_equal(iforest_window_features(v, 4, 1, out), 0);
  assert_int_equal(iforest_window_features(v, 4, 2, out), 3);
  /* window {2, 6}: mean 4, population sd 2, z (6 - 4) / 2 = 1, range 4 */
  const double *last = out + 2 * VG_IFOREST_WINDOW_FEATURES;
  assert_close(last[0], 6, 0);
  assert_close(last[1], 4, 0);
  assert_close(last[2], 2, 0);
  assert_close(last[3], 1, 0);
  assert_close(last[4], 4, 0);
  double flat[] = { 5, 5, 5 };
  assert_int_equal(iforest_window_features(flat, 3, 3, out), 1);
  assert_close(out[2], 0, 0);
  assert_close(out[3], 0, 0); /* no deviation: z is 0, not NaN */
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_c_matches_sklearn),
    cmocka_unit_test(test_degenerate_forests_score_exactly),
    cmocka_unit_test(test_depth_limit_bounds_tree_size),
    cmocka_unit_test(test_obvious_outlier_scores_highest),
    cmocka_unit_test(test_deterministic_for_a_seed),
    cmocka_unit_test(test_contamination_sets_the_training_quantile),
    cmocka_unit_test(test_max_features_and_max_samples),
    cmocka_unit_test(test_bad_input),
    cmocka_unit_test(test_save_load_round_trip),
    cmocka_unit_test(test_window_features),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
