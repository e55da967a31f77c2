/* Linear trend by least squares, Holt's linear smoothing and additive Holt-Winters (with a
 * small grid search for their constants), their prediction intervals, time until a threshold
 * and growth tiers. */
#include "engine/forecast.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errbuf.h"

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

/* Holt-Winters' start from the first two seasons: the trend from their means, the level one step
 * before the first point, the season from both seasons' deviations from that line (summing
 * to 0). Exact on a line plus a season. */
static void hw_init(const double *y, size_t m, double *l, double *b, double *s)
{
  double m1 = 0, m2 = 0;
  for (size_t i = 0; i < m; i++) {
    m1 += y[i];
    m2 += y[m + i];
  }
  m1 /= (double)m;
  m2 /= (double)m;
  *b = (m2 - m1) / (double)m;
  double c = ((double)m - 1) / 2; /* the index m1 belongs to */
  *l = m1 - *b * (c + 1);
  double sum = 0;
  for (size_t i = 0; i < m; i++) {
    double d1 = y[i] - (m1 + *b * ((double)i - c));
    double d2 = y[m + i] - (m1 + *b * ((double)(m + i) - c));
    s[i] = (d1 + d2) / 2;
    sum += s[i];
  }
  for (size_t i = 0; i < m; i++) {
    s[i] -= sum / (double)m;
  }
}

/* Runs the additive Holt-Winters recursions (error-correction form) over y from the state in
 * *l, *b, s[0..m-1] (s[i % m] is point i's), leaving the final state there. Returns the sum of
 * squared one-step errors from point m on (the first season fitted the start). */
static double hw_run(const double *y,
                     size_t n,
                     size_t m,
                     double a,
                     double bt,
                     double g,
                     double *l,
                     double *b,
                     double *s)
{
  double lv = *l, tr = *b, sse = 0;
  for (size_t i = 0; i < n; i++) {
    double sp = s[i % m];
    double e = y[i] - (lv + tr + sp);
    if (i >= m) {
      sse += e * e;
    }
    lv += tr + a * e;
    tr += a * bt * e;
    s[i % m] = sp + g * e;
  }
  *l = lv;
  *b = tr;
  return sse;
}

static int fit_holt_winters(const double *t,
                            const double *y,
                            size_t n,
                            const vg_forecast_opts_t *o,
                            vg_forecast_t *m,
                            char *err,
                            size_t errlen)
{
  size_t p = o->season;
  double *s0 = malloc(p * sizeof(*s0)), *s = malloc(p * sizeof(*s));
  if (s0 == NULL || s == NULL) {
    free(s0);
    free(s);
    vg_errf(err, errlen, "out of memory");
    return -1;
  }
  double l0, b0, a = o->alpha, bt = o->beta, g = o->gamma;
  hw_init(y, p, &l0, &b0, s0);
  if (a == 0 && bt == 0 && g == 0) {
    static const double as[] = { 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9 };
    static const double bs[] = { 0.01, 0.05, 0.1, 0.2, 0.3 };
    static const double gs[] = { 0.01, 0.05, 0.1, 0.2, 0.3, 0.5 };
    double best = INFINITY;
    for (size_t i = 0; i < sizeof(as) / sizeof(as[0]); i++) {
      for (size_t j = 0; j < sizeof(bs) / sizeof(bs[0]); j++) {
        for (size_t k = 0; k < sizeof(gs) / sizeof(gs[0]); k++) {
          double l = l0, b = b0;
          memcpy(s, s0, p * sizeof(*s));
          double sse = hw_run(y, n, p, as[i], bs[j], gs[k], &l, &b, s);
          if (sse < best) {
            best = sse;
            a = as[i];
            bt = bs[j];
            g = gs[k];
          }
        }
      }
    }
  }
  double l = l0, b = b0;
  memcpy(s, s0, p * sizeof(*s));
  double sse = hw_run(y, n, p, a, bt, g, &l, &b, s);
  free(s0);
  double ym = 0, syy = 0;
  for (size_t i = p; i < n; i++) {
    ym += y[i];
  }
  ym /= (double)(n - p);
  for (size_t i = p; i < n; i++) {
    syy += (y[i] - ym) * (y[i] - ym);
  }
  m->dt = (t[n - 1] - t[0]) / (double)(n - 1);
  m->alpha = a;
  m->beta = bt;
  m->gamma = g;
  m->period = p;
  m->season = s;
  m->level = l;
  m->slope = b / m->dt;
  m->sigma = sqrt(sse / (double)(n - p));
  m->r2 = syy > 0 ? 1 - sse / syy : 1;
  return 0;
}

void forecast_free(vg_forecast_t *m)
{
  free(m->season);
  m->season = NULL;
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
  if (o.method != VG_FORECAST_LINEAR && o.method != VG_FORECAST_HOLT &&
      o.method != VG_FORECAST_HOLT_WINTERS) {
    vg_errf(err, errlen, "unknown forecast method %d", (int)o.method);
    return -1;
  }
  if (o.method == VG_FORECAST_HOLT_WINTERS) {
    if (o.season < 2 || o.season > VG_FORECAST_SEASON_MAX) {
      vg_errf(err, errlen, "season must be in [2, %d] points, got %zu", VG_FORECAST_SEASON_MAX,
              o.season);
      return -1;
    }
    if (n < 2 * o.season) {
      vg_errf(err, errlen, "need at least two seasons (2 x %zu points), got %zu", o.season, n);
      return -1;
    }
  } else if (n < need) {
    vg_errf(err, errlen, "need at least %zu points, got %zu", need, n);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(t[i]) || !isfinite(y[i])) {
      vg_errf(err, errlen, "point %zu is not a finite number", i + 1);
      return -1;
    }
    if (i > 0 && !(t[i] > t[i - 1])) {
      vg_errf(err, errlen, "times must increase (point %zu)", i + 1);
      return -1;
    }
  }
  if (o.method == VG_FORECAST_HOLT && !(o.alpha == 0 && o.beta == 0) &&
      !(o.alpha > 0 && o.alpha < 1 && o.beta > 0 && o.beta < 1)) {
    vg_errf(err, errlen, "alpha and beta must be in (0, 1), got %g and %g", o.alpha, o.beta);
    return -1;
  }
  if (o.method == VG_FORECAST_HOLT_WINTERS) {
    if (!(o.alpha == 0 && o.beta == 0 && o.gamma == 0) &&
        !(o.alpha > 0 && o.alpha < 1 && o.beta > 0 && o.beta < 1 && o.gamma > 0 && o.gamma < 1)) {
      vg_errf(err, errlen, "alpha, beta and gamma must be in (0, 1), got %g, %g and %g", o.alpha,
              o.beta, o.gamma);
      return -1;
    }
    double dt = (t[n - 1] - t[0]) / (double)(n - 1);
    for (size_t i = 1; i < n; i++) {
      double gap = t[i] - t[i - 1];
      if (gap < 0.5 * dt || gap > 1.5 * dt) {
        vg_errf(err, errlen,
                "holt_winters needs evenly spaced points: gap %g before point %zu, mean %g", gap,
                i + 1, dt);
        return -1;
      }
    }
  }
  *out = (vg_forecast_t){ .method = o.method, .n = n, .t_last = t[n - 1] };
  if (o.method == VG_FORECAST_LINEAR) {
    fit_linear(t, y, n, out);
  } else if (o.method == VG_FORECAST_HOLT) {
    fit_holt(t, y, n, o.alpha, o.beta, out);
  } else {
    return fit_holt_winters(t, y, n, &o, out, err, errlen);
  }
  return 0;
}

/* Holt-Winters' season component `h` whole steps after the last point (h may be negative). */
static double hw_season(const vg_forecast_t *m, double h)
{
  double p = (double)m->period;
  double i = fmod((double)(m->n - 1) + h, p);
  return m->season[(size_t)(i < 0 ? i + p : i)];
}

double forecast_at(const vg_forecast_t *m, double t, double z, double *lo, double *hi)
{
  double dt = t - m->t_last;
  double mean = m->level + m->slope * dt, sd;
  if (m->method == VG_FORECAST_HOLT_WINTERS) {
    /* ETS(A,A,A) h-step variance (Hyndman & Athanasopoulos, 2021, table 8.8), whole steps */
    double h = round(dt / m->dt), a = m->alpha, b = m->alpha * m->beta, g = m->gamma;
    double p = (double)m->period, k = h > 1 ? floor((h - 1) / p) : 0;
    mean = m->level + m->slope * m->dt * h + hw_season(m, h);
    double f = h > 1 ? 1 + (h - 1) * (a * a + a * b * h + b * b * h * (2 * h - 1) / 6) +
                           g * k * (g + 2 * a + b * p * (k + 1))
                     : 1;
    sd = m->sigma * sqrt(f);
  } else if (m->method == VG_FORECAST_LINEAR) {
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

/* Holt-Winters: the first whole step h >= 1 whose forecast reaches `thr` going up (or down). */
static double hw_time_to(const vg_forecast_t *m, double thr)
{
  double v0 = m->level + hw_season(m, 0), b = m->slope * m->dt, p = (double)m->period;
  if (fabs(b) <= 1e-12 * fabs(m->level)) {
    b = 0; /* rounding noise of a flat trend: not a crossing thousands of years away */
  }
  if (v0 == thr) {
    return 0;
  }
  bool up = thr > v0;
  if ((up && b > 0) || (!up && b < 0)) {
    /* with phase j the forecast gets there from step (thr - s_j - level) / b on: take the first
     * step of that phase from there, the earliest over all phases */
    double best = INFINITY;
    for (size_t j = 0; j < m->period; j++) {
      double need = fmax(1, ceil((thr - m->season[j] - m->level) / b));
      double h = need;
      if (need < 1e15) {
        double at = fmod((double)(m->n - 1) + need, p);
        h = need + fmod((double)j - at + p, p);
      }
      best = h < best ? h : best;
    }
    return best * m->dt;
  }
  /* the trend leads away: only the coming season can get there */
  for (size_t i = 1; i <= m->period; i++) {
    double h = (double)i, f = m->level + b * h + hw_season(m, h);
    if (up ? f >= thr : f <= thr) {
      return h * m->dt;
    }
  }
  return INFINITY;
}

double forecast_time_to(const vg_forecast_t *m, double threshold)
{
  if (m->method == VG_FORECAST_HOLT_WINTERS) {
    return hw_time_to(m, threshold);
  }
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
