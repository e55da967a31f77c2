/* Capacity forecasting on one series: a least-squares linear trend (the seed's), Holt's linear
 * exponential smoothing and additive Holt-Winters (a trend and a season), with normal
 * prediction intervals, "time until threshold" (when will the disk be full) and the growth over
 * a horizon with the seed's recommendation tiers. */
#pragma once

#include <stddef.h>

typedef enum {
  VG_FORECAST_LINEAR,
  VG_FORECAST_HOLT,
  VG_FORECAST_HOLT_WINTERS
} vg_forecast_method_t;

/* Longest season of Holt-Winters, in points (a week of 5-minute points is 2016). */
#define VG_FORECAST_SEASON_MAX 100000

typedef struct {
  vg_forecast_method_t method;
  double alpha, beta; /* Holt, Holt-Winters: smoothing of level and trend in (0, 1); 0 for all
                       * (gamma included) means chosen by the least one-step squared error on a
                       * fixed grid */
  double gamma;       /* Holt-Winters: smoothing of the season in (0, 1) */
  size_t season;      /* Holt-Winters: points per season, >= 2 (e.g. 288 for a day of 5-minute
                       * points); the points must be evenly spaced */
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
  double alpha, beta; /* Holt, Holt-Winters: the smoothing used */
  double gamma;       /* Holt-Winters: the smoothing of the season used */
  double dt;          /* Holt, Holt-Winters: the mean spacing of the points */
  size_t period;      /* Holt-Winters: points per season */
  double *season;     /* Holt-Winters: the season's components, season[i % period] for point
                       * index i (the last is n - 1); level and slope are without them. Owned:
                       * forecast_free() */
  double t_mean, sxx; /* linear: mean time and sum of squared deviations, for intervals */
} vg_forecast_t;

/* Fits `method` to n points (t strictly increasing, y finite). Needs n >= 2 (linear), n >= 3
 * (Holt) or two seasons (Holt-Winters, with each gap within half a mean gap of it). Returns 0,
 * or -1 with a message in `err` (too few points, NaN, times not increasing or uneven,
 * alpha/beta/gamma or season out of range, out of memory). A fitted model is freed with
 * forecast_free(). */
int forecast_fit(const double *t,
                 const double *y,
                 size_t n,
                 const vg_forecast_opts_t *opts,
                 vg_forecast_t *out,
                 char *err,
                 size_t errlen);

/* Frees what a fitted model owns (Holt-Winters' season); safe on any model, twice too. */
void forecast_free(vg_forecast_t *m);

/* The forecast at time `t` (usually > t_last) and its interval mean -/+ z * sd: z = 1.96 gives
 * 95 %. lo or hi may be NULL. Holt-Winters forecasts whole steps (t is rounded to one) and adds
 * the season's component of that step. */
double forecast_at(const vg_forecast_t *m, double t, double z, double *lo, double *hi);

/* Time from t_last until the forecast reaches `threshold`, a limit in the trend's direction:
 * rising, 0 when the fitted level is already at or above it; falling, 0 when at or below it;
 * a flat trend never gets there (INFINITY) unless already on it. Holt-Winters: the first whole
 * step whose forecast (season included) reaches it from the side of the last fitted value
 * (0 when that value is on it, INFINITY when never). */
double forecast_time_to(const vg_forecast_t *m, double threshold);

/* Growth over `horizon` time units relative to the fitted level: (f(t_last+h) - level)/|level|
 * (0 when level is 0 and so is the change, +/-INFINITY when only the level is 0). Holt-Winters:
 * of the trend, without the season. */
double forecast_growth(const vg_forecast_t *m, double horizon);

/* The seed's tiers of a growth fraction: > 0.5 "urgent", > 0.2 "plan", > 0 "monitor", else
 * "adequate". */
const char *forecast_tier(double growth);
