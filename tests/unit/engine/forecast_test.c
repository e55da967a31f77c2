/* Tests for src/engine/forecast.c: least squares worked by hand, Holt on exact lines and on a
 * trend that changes, intervals, time until threshold, growth tiers and bad input. */
#include "engine/forecast.h"

#include <math.h>

#include "test_support.h"

/* cmocka's assert_float_equal compares floats; these values need doubles. */
#define assert_close(a, b, eps) assert_close_at((a), (b), (eps), #a, __LINE__)

static void assert_close_at(double a, double b, double eps, const char *expr, int line)
{
  if (!(a == b || fabs(a - b) <= eps)) {
    fail_msg("line %d: %s = %.17g, want %.17g (+/- %g)", line, expr, a, b, eps);
  }
}

static vg_forecast_t fit_ok(const double *t, const double *y, size_t n, vg_forecast_method_t m)
{
  vg_forecast_opts_t o = { .method = m };
  vg_forecast_t f;
  char err[128] = "";
  if (forecast_fit(t, y, n, &o, &f, err, sizeof(err)) != 0) {
    fail_msg("fit: %s", err);
  }
  return f;
}

static void test_linear_by_hand(void **state)
{
  (void)state;
  /* t 0..3, y 1 3 2 4: slope sxy/sxx = 4/5, fitted 1.3 2.1 2.9 3.7, SSE 1.8, SST 5 */
  double t[] = { 0, 1, 2, 3 }, y[] = { 1, 3, 2, 4 };
  vg_forecast_t f = fit_ok(t, y, 4, VG_FORECAST_LINEAR);
  assert_close(f.slope, 0.8, 1e-12);
  assert_close(f.level, 3.7, 1e-12);
  assert_close(f.r2, 0.64, 1e-12);
  assert_close(f.sigma, sqrt(0.9), 1e-12);
  /* at t = 4: mean 4.5, sd = sigma * sqrt(1 + 1/4 + 2.5^2/5) = sigma * sqrt(2.5) = 1.5 */
  double lo, hi;
  assert_close(forecast_at(&f, 4, 1.96, &lo, &hi), 4.5, 1e-12);
  assert_close(lo, 4.5 - 1.96 * 1.5, 1e-12);
  assert_close(hi, 4.5 + 1.96 * 1.5, 1e-12);
  /* the seed's use: time until 10, growth over 5 units, tier */
  assert_close(forecast_time_to(&f, 10), (10 - 3.7) / 0.8, 1e-12);
  assert_close(forecast_growth(&f, 5), 4.0 / 3.7, 1e-12);
  assert_string_equal(forecast_tier(forecast_growth(&f, 5)), "urgent");
}

static void test_linear_exact_line(void **state)
{
  (void)state;
  double t[10], y[10];
  for (int i = 0; i < 10; i++) {
    t[i] = i * 60.0; /* a point a minute */
    y[i] = 2 * t[i] + 1;
  }
  vg_forecast_t f = fit_ok(t, y, 10, VG_FORECAST_LINEAR);
  assert_close(f.slope, 2, 1e-12);
  assert_close(f.r2, 1, 1e-12);
  assert_close(f.sigma, 0, 1e-9);
  assert_close(forecast_time_to(&f, 2 * 600 + 1), 60, 1e-9);
  assert_close(forecast_time_to(&f, 0), 0, 0); /* already above */
}

static void test_holt_exact_line_and_spacing(void **state)
{
  (void)state;
  double t[20], y[20];
  for (int i = 0; i < 20; i++) {
    t[i] = 1000 + 30.0 * i;
    y[i] = 3 * i + 5;
  }
  vg_forecast_t f = fit_ok(t, y, 20, VG_FORECAST_HOLT);
  assert_close(f.level, 62, 1e-9);
  assert_close(f.slope, 3.0 / 30.0, 1e-12); /* per second */
  assert_close(f.sigma, 0, 1e-9);
  assert_close(f.dt, 30, 1e-12);
  assert_close(forecast_at(&f, f.t_last + 300, 1.96, NULL, NULL), 92, 1e-9);
  assert_close(forecast_time_to(&f, 122), 600, 1e-6);
}

static void test_holt_follows_a_new_trend(void **state)
{
  (void)state;
  double t[40], y[40];
  for (int i = 0; i < 40; i++) {
    t[i] = i;
    y[i] = i < 25 ? 10 + (i % 2) * 0.2 : 10 + (i - 24); /* flat, then +1 per step */
  }
  vg_forecast_t h = fit_ok(t, y, 40, VG_FORECAST_HOLT);
  vg_forecast_t l = fit_ok(t, y, 40, VG_FORECAST_LINEAR);
  assert_true(h.slope > 0.7 && h.slope < 1.3);
  assert_true(l.slope < h.slope);
  assert_true(h.alpha > 0 && h.alpha < 1 && h.beta > 0 && h.beta < 1);
  /* intervals widen with the horizon */
  double lo1, hi1, lo10, hi10;
  forecast_at(&h, 40, 1.96, &lo1, &hi1);
  forecast_at(&h, 49, 1.96, &lo10, &hi10);
  assert_true(hi10 - lo10 > hi1 - lo1);
  assert_true(hi1 > lo1);
}

static void test_time_to_and_tiers(void **state)
{
  (void)state;
  double t[] = { 0, 1, 2 }, down[] = { 10, 8, 6 }, flat[] = { 5, 5, 5 };
  vg_forecast_t f = fit_ok(t, down, 3, VG_FORECAST_LINEAR);
  assert_close(forecast_time_to(&f, 0), 3, 1e-12); /* falling to 0 */
  assert_close(forecast_time_to(&f, 7), 0, 0);     /* already below */
  assert_close(forecast_time_to(&f, 100), 0, 0);   /* a lower limit we are under */
  assert_close(forecast_growth(&f, 1), -2.0 / 6.0, 1e-12);
  f = fit_ok(t, flat, 3, VG_FORECAST_LINEAR);
  assert_true(isinf(forecast_time_to(&f, 6)));
  assert_close(forecast_time_to(&f, 5), 0, 0);
  assert_string_equal(forecast_tier(0.51), "urgent");
  assert_string_equal(forecast_tier(0.5), "plan");
  assert_string_equal(forecast_tier(0.21), "plan");
  assert_string_equal(forecast_tier(0.2), "monitor");
  assert_string_equal(forecast_tier(0.001), "monitor");
  assert_string_equal(forecast_tier(0), "adequate");
  assert_string_equal(forecast_tier(-1), "adequate");
}

static void expect_error(
    const double *t, const double *y, size_t n, vg_forecast_opts_t o, const char *want)
{
  vg_forecast_t f;
  char err[128] = "";
  assert_int_equal(forecast_fit(t, y, n, &o, &f, err, sizeof(err)), -1);
  assert_string_equal(err, want);
}

static void test_bad_input(void **state)
{
  (void)state;
  double t[] = { 0, 1, 1 }, y[] = { 1, NAN, 3 }, good[] = { 1, 2, 3 };
  vg_forecast_opts_t lin = { .method = VG_FORECAST_LINEAR };
  vg_forecast_opts_t holt = { .method = VG_FORECAST_HOLT };
  expect_error(t, good, 1, lin, "need at least 2 points, got 1");
  expect_error(t, good, 2, holt, "need at least 3 points, got 2");
  expect_error(t, y, 2, lin, "point 2 is not a finite number");
  expect_error(t, good, 3, lin, "times must increase (point 3)");
  double ok_t[] = { 0, 1, 2 };
  holt.alpha = 1;
  holt.beta = 0.1;
  expect_error(ok_t, good, 3, holt, "alpha and beta must be in (0, 1), got 1 and 0.1");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_linear_by_hand),
    cmocka_unit_test(test_linear_exact_line),
    cmocka_unit_test(test_holt_exact_line_and_spacing),
    cmocka_unit_test(test_holt_follows_a_new_trend),
    cmocka_unit_test(test_time_to_and_tiers),
    cmocka_unit_test(test_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
