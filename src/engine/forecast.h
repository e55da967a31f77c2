/* Capacity forecasting on one series: a least-squares linear trend (the seed's) and Holt's
 * linear exponential smoothing, with normal prediction intervals, "time until threshold" (when
 * will the disk be full) and the growth over a horizon with the seed's recommendation tiers. */
#pragma once

#include <stddef.h>

typedef enum { VG_FORECAST_LINEAR, VG_FORECAST_HOLT } vg_forecast_method_t;

typedef struct {
  vg_forecast_method_t method;
  double alpha, beta; /* Holt: smoothing of level and trend in (0, 1); 0 for both means chosen
                       * by the least one-step squared error on a fixed grid */
} vg_forecast_opts_t;

/* A fitted model. Times are in the caller's unit (seconds, usually). */
typedef struct {
  vg_forecast_method_t method;
  size_t n;
  double t_last;      /* time of the last point */
  double level;       /* fitted value at t_last */
  double slope;       /* change per unit of time */
  double sigma;       /* residual sd (linear) or one-step forecast error sd (Holt) */
  double r2;          /* share of variance explained (Holt: by its one-step forecasts), <= 1 */
  double alpha, beta; /* Holt: the smoothing used */
  double dt;          /* Holt: the mean spacing of the points */
  double t_mean, sxx; /* linear: mean time and sum of squared deviations, for intervals */
} vg_forecast_t;

/* Fits `method` to n points (t strictly increasing, y finite). Needs n >= 2 (linear) or n >= 3
 * (Holt). Returns 0, or -1 with a message in `err` (too few points, NaN, times not increasing,
 * alpha/beta out of range). */
int forecast_fit(const double *t,
                 const double *y,
                 size_t n,
                 const vg_forecast_opts_t *opts,
                 vg_forecast_t *out,
                 char *err,
                 size_t errlen);

/* The forecast at time `t` (usually > t_last) and its interval mean -/+ z * sd: z = 1.96 gives
 * 95 %. lo or hi may be NULL. */
double forecast_at(const vg_forecast_t *m, double t, double z, double *lo, double *hi);

/* Time from t_last until the forecast reaches `threshold`, a limit in the trend's direction:
 * rising, 0 when the fitted level is already at or above it; falling, 0 when at or below it;
 * a flat trend never gets there (INFINITY) unless already on it. */
double forecast_time_to(const vg_forecast_t *m, double threshold);

/* Growth over `horizon` time units relative to the fitted level: (f(t_last+h) - level)/|level|
 * (0 when level is 0 and so is the change, +/-INFINITY when only the level is 0). */
double forecast_growth(const vg_forecast_t *m, double horizon);

/* The seed's tiers of a growth fraction: > 0.5 "urgent", > 0.2 "plan", > 0 "monitor", else
 * "adequate". */
const char *forecast_tier(double growth);
