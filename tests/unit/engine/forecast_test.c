/* Tests for src/engine/forecast.c: least squares worked by hand, Holt on exact lines and on a
 * trend that changes, Holt-Winters on a line plus a season (exact, then noisy), intervals, time
 * until threshold, growth tiers and bad input. */
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

static uint64_t lcg_state = 11;

static double gauss(void)
{
  lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
  double u = ((double)(lcg_state >> 11) + 0.5) * 0x1.0p-53;
  lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
  double v = ((double)(lcg_state >> 11) + 0.5) * 0x1.0p-53;
  return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

/* Hourly points: 100 + 0.5 an hour + a daily wave of amplitude 10. */
static double seasonal_truth(double i)
{
  return 100 + 0.5 * i + 10 * sin(2 * M_PI * i / 24);
}

static vg_forecast_t fit_hw(const double *t, const double *y, size_t n, size_t season)
{
  vg_forecast_opts_t o = { .method = VG_FORECAST_HOLT_WINTERS, .season = season };
  vg_forecast_t f;
  char err[128] = "";
  if (forecast_fit(t, y, n, &o, &f, err, sizeof(err)) != 0) {
    fail_msg("fit: %s", err);
  }
  return f;
}

static void test_holt_winters_recovers_trend_and_season(void **state)
{
  (void)state;
  enum { N = 24 * 5 };
  double t[N], y[N];
  for (int i = 0; i < N; i++) {
    t[i] = 1700000000 + 3600.0 * i;
    y[i] = seasonal_truth(i);
  }
  vg_forecast_t f = fit_hw(t, y, N, 24);
  assert_int_equal(f.period, 24);
  assert_close(f.slope, 0.5 / 3600, 1e-12);
  assert_close(f.level, 100 + 0.5 * (N - 1), 1e-9); /* without the season */
  for (int j = 0; j < 24; j++) {
    assert_close(f.season[j], 10 * sin(2 * M_PI * j / 24), 1e-9);
  }
  assert_close(f.sigma, 0, 1e-9);
  assert_close(f.r2, 1, 1e-12);
  for (int h = 1; h <= 60; h++) { /* two and a half days ahead, exactly */
    assert_close(forecast_at(&f, f.t_last + 3600.0 * h, 1.96, NULL, NULL),
                 seasonal_truth(N - 1 + h), 1e-8);
  }
  /* the first hour at or above 170: the trend alone gets there at i = 140, the wave earlier */
  int first = N;
  while (seasonal_truth(first) < 170) {
    first++;
  }
  assert_true(first < 140);
  assert_close(forecast_time_to(&f, 170), 3600.0 * (first - (N - 1)), 1e-6);
  assert_close(forecast_growth(&f, 86400), 12 / f.level, 1e-12); /* the trend's, no wave */
  forecast_free(&f);
  assert_null(f.season);
  forecast_free(&f); /* twice is fine */

  /* no trend: a limit above the wave's crest is never reached, one below it within a day */
  for (int i = 0; i < N; i++) {
    y[i] = 100 + 10 * sin(2 * M_PI * i / 24);
  }
  f = fit_hw(t, y, N, 24);
  assert_true(isinf(forecast_time_to(&f, 111)));
  double left = forecast_time_to(&f, 105); /* sin >= 0.5: from hour 2 of the day */
  assert_close(left, 3600.0 * 3, 1e-6);    /* the last point is hour 23; then 0, 1, 2 */
  assert_close(forecast_time_to(&f, 90.5), 3600.0 * 18, 1e-6); /* going down: hour 17 */
  forecast_free(&f);
}

static void test_holt_winters_intervals_contain_the_truth(void **state)
{
  (void)state;
  enum { N = 24 * 10, H = 48 };
  double t[N], y[N];
  for (int i = 0; i < N; i++) {
    t[i] = 3600.0 * i;
    y[i] = seasonal_truth(i) + gauss();
  }
  vg_forecast_t f = fit_hw(t, y, N, 24);
  assert_close(f.slope * 3600, 0.5, 0.02);
  assert_close(f.sigma, 1, 0.2);
  assert_true(f.alpha > 0 && f.beta > 0 && f.gamma > 0);
  int inside = 0;
  double prev_width = 0;
  for (int h = 1; h <= H; h++) {
    double lo, hi, tt = f.t_last + 3600.0 * h;
    double mean = forecast_at(&f, tt, 1.96, &lo, &hi);
    double truth = seasonal_truth(N - 1 + h);
    assert_true(lo <= truth && truth <= hi); /* the noise-free value: always */
    assert_close(mean, truth, 2.0);
    inside += lo <= truth + gauss() && truth + gauss() <= hi;
    assert_true(hi - lo >= prev_width); /* widening with the horizon */
    prev_width = hi - lo;
  }
  assert_true(inside >= H * 9 / 10); /* the noisy values: most of the time */
  double lo1, hi1;
  forecast_at(&f, f.t_last + 3600, 1.96, &lo1, &hi1);
  assert_close(hi1 - lo1, 2 * 1.96 * f.sigma, 1e-9); /* one step: sigma itself */
  forecast_free(&f);
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
  double ht[8] = { 0, 1, 2, 3, 4, 5, 6, 7 }, hy[8] = { 1, 2, 3, 4, 1, 2, 3, 4 };
  vg_forecast_opts_t hw = { .method = VG_FORECAST_HOLT_WINTERS, .season = 4 };
  expect_error(ht, hy, 7, hw, "need at least two seasons (2 x 4 points), got 7");
  hw.season = 1;
  expect_error(ht, hy, 8, hw, "season must be in [2, 100000] points, got 1");
  hw.season = 4;
  hy[5] = NAN;
  expect_error(ht, hy, 8, hw, "point 6 is not a finite number");
  hy[5] = 2;
  ht[7] = 9;
  expect_error(ht, hy, 8, hw,
               "holt_winters needs evenly spaced points: gap 3 before point 8, mean 1.28571");
  ht[7] = 7;
  hw.alpha = 0.5;
  expect_error(ht, hy, 8, hw, "alpha, beta and gamma must be in (0, 1), got 0.5, 0 and 0");
  hw.beta = 0.1;
  hw.gamma = 0.2;
  vg_forecast_t f;
  char err[128] = "";
  assert_int_equal(forecast_fit(ht, hy, 8, &hw, &f, err, sizeof(err)), 0);
  assert_close(f.gamma, 0.2, 0);
  forecast_free(&f);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_linear_by_hand),
    cmocka_unit_test(test_linear_exact_line),
    cmocka_unit_test(test_holt_exact_line_and_spacing),
    cmocka_unit_test(test_holt_follows_a_new_trend),
    cmocka_unit_test(test_time_to_and_tiers),
    cmocka_unit_test(test_holt_winters_recovers_trend_and_season),
    cmocka_unit_test(test_holt_winters_intervals_contain_the_truth),
    cmocka_unit_test(test_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
