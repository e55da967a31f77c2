/* Linear trend by least squares and Holt's linear smoothing (with a small grid search for its
 * two constants), their prediction intervals, time until a threshold and growth tiers. */
#include "engine/forecast.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
  if (err == NULL || errlen == 0) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static void fit_linear(const double *t, const double *y, size_t n, vg_forecast_t *m)
{
  double tm = 0, ym = 0;
  for (size_t i = 0; i < n; i++) {
    tm += t[i];
    ym += y[i];
  }
  tm /= (double)n;
  ym /= (double)n;
  double sxx = 0, sxy = 0, syy = 0;
  for (size_t i = 0; i < n; i++) {
    sxx += (t[i] - tm) * (t[i] - tm);
    sxy += (t[i] - tm) * (y[i] - ym);
    syy += (y[i] - ym) * (y[i] - ym);
  }
  double slope = sxy / sxx, sse = 0;
  for (size_t i = 0; i < n; i++) {
    double r = y[i] - (ym + slope * (t[i] - tm));
    sse += r * r;
  }
  m->slope = slope;
  m->level = ym + slope * (t[n - 1] - tm);
  m->sigma = n > 2 ? sqrt(sse / (double)(n - 2)) : 0;
  m->r2 = syy > 0 ? 1 - sse / syy : 1;
  m->t_mean = tm;
  m->sxx = sxx;
}

/* Runs Holt's recursions; returns the sum of squared one-step errors, leaves level and trend
 * (per step) in *l and *b. */
static double holt_run(const double *y, size_t n, double a, double b_, double *l, double *b)
{
  double lv = y[0], tr = y[1] - y[0], sse = 0;
  for (size_t i = 1; i < n; i++) {
    double pred = lv + tr;
    double e = y[i] - pred;
    sse += i > 1 ? e * e : 0; /* the first error is 0 by construction of tr */
    double prev = lv;
    lv = a * y[i] + (1 - a) * pred;
    tr = b_ * (lv - prev) + (1 - b_) * tr;
  }
  *l = lv;
  *b = tr;
  return sse;
}

static void fit_holt(
    const double *t, const double *y, size_t n, double a, double b_, vg_forecast_t *m)
{
  if (a == 0 && b_ == 0) {
    static const double as[] = { 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9 };
    static const double bs[] = { 0.01, 0.05, 0.1, 0.2, 0.3 };
    double best = INFINITY;
    for (size_t i = 0; i < sizeof(as) / sizeof(as[0]); i++) {
      for (size_t j = 0; j < sizeof(bs) / sizeof(bs[0]); j++) {
        double l, b, sse = holt_run(y, n, as[i], bs[j], &l, &b);
        if (sse < best) {
          best = sse;
          a = as[i];
          b_ = bs[j];
        }
      }
    }
  }
  double l, b, sse = holt_run(y, n, a, b_, &l, &b);
  double ym = 0, syy = 0;
  for (size_t i = 1; i < n; i++) {
    ym += y[i];
  }
  ym /= (double)(n - 1);
  for (size_t i = 2; i < n; i++) {
    syy += (y[i] - ym) * (y[i] - ym);
  }
  m->dt = (t[n - 1] - t[0]) / (double)(n - 1);
  m->alpha = a;
  m->beta = b_;
  m->level = l;
  m->slope = b / m->dt;
  m->sigma = n > 2 ? sqrt(sse / (double)(n - 2)) : 0;
  m->r2 = syy > 0 ? 1 - sse / syy : 1;
}

int forecast_fit(const double *t,
                 const double *y,
                 size_t n,
                 const vg_forecast_opts_t *opts,
                 vg_forecast_t *out,
                 char *err,
                 size_t errlen)
{
  vg_forecast_opts_t o = { 0 };
  if (opts != NULL) {
    o = *opts;
  }
  size_t need = o.method == VG_FORECAST_HOLT ? 3 : 2;
  if (o.method != VG_FORECAST_LINEAR && o.method != VG_FORECAST_HOLT) {
    set_err(err, errlen, "unknown forecast method %d", (int)o.method);
    return -1;
  }
  if (n < need) {
    set_err(err, errlen, "need at least %zu points, got %zu", need, n);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(t[i]) || !isfinite(y[i])) {
      set_err(err, errlen, "point %zu is not a finite number", i + 1);
      return -1;
    }
    if (i > 0 && !(t[i] > t[i - 1])) {
      set_err(err, errlen, "times must increase (point %zu)", i + 1);
      return -1;
    }
  }
  if (o.method == VG_FORECAST_HOLT && !(o.alpha == 0 && o.beta == 0) &&
      !(o.alpha > 0 && o.alpha < 1 && o.beta > 0 && o.beta < 1)) {
    set_err(err, errlen, "alpha and beta must be in (0, 1), got %g and %g", o.alpha, o.beta);
    return -1;
  }
  *out = (vg_forecast_t){ .method = o.method, .n = n, .t_last = t[n - 1] };
  if (o.method == VG_FORECAST_LINEAR) {
    fit_linear(t, y, n, out);
  } else {
    fit_holt(t, y, n, o.alpha, o.beta, out);
  }
  return 0;
}

double forecast_at(const vg_forecast_t *m, double t, double z, double *lo, double *hi)
{
  double dt = t - m->t_last;
  double mean = m->level + m->slope * dt, sd;
  if (m->method == VG_FORECAST_LINEAR) {
    double u = t - m->t_mean;
    sd = m->sigma * sqrt(1 + 1 / (double)m->n + (m->sxx > 0 ? u * u / m->sxx : 0));
  } else {
    /* ETS(A,A,N) h-step variance (Hyndman & Athanasopoulos, 2021, table 8.8) */
    double h = dt > 0 ? dt / m->dt : 0, a = m->alpha, b = m->alpha * m->beta;
    double f = h > 1 ? 1 + (h - 1) * (a * a + a * b * h + b * b * h * (2 * h - 1) / 6) : 1;
    sd = m->sigma * sqrt(f);
  }
  if (lo != NULL) {
    *lo = mean - z * sd;
  }
  if (hi != NULL) {
    *hi = mean + z * sd;
  }
  return mean;
}

double forecast_time_to(const vg_forecast_t *m, double threshold)
{
  double gap = threshold - m->level;
  if (m->slope > 0) {
    return gap <= 0 ? 0 : gap / m->slope;
  }
  if (m->slope < 0) {
    return gap >= 0 ? 0 : gap / m->slope;
  }
  return gap == 0 ? 0 : INFINITY;
}

double forecast_growth(const vg_forecast_t *m, double horizon)
{
  double change = m->slope * horizon;
  if (m->level == 0) {
    return change == 0 ? 0 : (change > 0 ? INFINITY : -INFINITY);
  }
  return change / fabs(m->level);
}

const char *forecast_tier(double growth)
{
  if (growth > 0.5) {
    return "urgent";
  }
  if (growth > 0.2) {
    return "plan";
  }
  if (growth > 0) {
    return "monitor";
  }
  return "adequate";
}
