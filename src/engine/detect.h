/* Streaming anomaly detectors for metric series: fixed-size state per series (no allocation,
 * under 1 KB), updated point by point, each update giving a score in [0, 1] and a flag.
 * Scores share one scale: a deviation of z standard deviations scores z^2 / (z^2 + 9), so 0.5 is
 * "3 sigma" and the default flag threshold; 0.8 is 6 sigma, 0.9 is 9 sigma. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/snapshot.h"

/* Largest window of the robust detector (and of the default one): the ring of past values. */
#define VG_DETECT_WINDOW_MAX 64
/* Most profile slots of the seasonal detector: time-of-day buckets (times 2 with the weekend
 * split). */
#define VG_DETECT_SEASON_MAX 48

typedef enum {
  VG_DETECT_DEFAULT,  /* no tuning: CUSUM on EWMA residuals (a level shift, or a spike of about
                       * 9 sigma in one point), reporting only the onset of an episode: a score
                       * counts when it exceeds the peak of earlier scores, which halves every
                       * half_life points (see docs/detectors.md, measured on NAB) */
  VG_DETECT_EWMA,     /* z against an exponentially weighted mean and variance */
  VG_DETECT_ROBUST,   /* z against the median and MAD of the last `window` values */
  VG_DETECT_CUSUM,    /* two-sided CUSUM of EWMA-standardised residuals: level shifts */
  VG_DETECT_ZSCORE5,  /* the seed's rule: z against mean and std of the previous 5 values */
  VG_DETECT_SEASONAL, /* z against the EWMA mean and variance of the point's time-of-day bucket
                       * (and weekday/weekend): a daily cycle is learnt, not flagged. Needs
                       * timestamps (detect_update_at) */
} vg_detect_kind_t;

typedef struct {
  vg_detect_kind_t kind;
  uint32_t buckets;   /* seasonal: time-of-day buckets per day, 2..48 (2..24 with weekend);
                       * 0 means 24 */
  double alpha;       /* EWMA weight of a new point, (0, 1); 0 means 0.02 (seasonal: 0.05, the
                       * weight of a point in its bucket) */
  uint32_t window;    /* robust window, 3..VG_DETECT_WINDOW_MAX; 0 means 64 */
  uint32_t warmup;    /* points absorbed before scoring (score 0, no flag); 0 means the kind's
                       * default: window/2 for robust and default, 30 for EWMA and CUSUM, 5 for
                       * zscore5; seasonal: points each bucket absorbs before it scores (at most
                       * 65535), 12 */
  double threshold;   /* flag when score >= threshold, (0, 1]; 0 means 0.5 (3 sigma) */
  double cusum_k;     /* CUSUM slack in sigmas; 0 means 0.5 */
  double cusum_h;     /* CUSUM decision interval in sigmas; 0 means 8 */
  double half_life;   /* default detector: half-life in points of the reported peak; 0 means 350 */
  int32_t utc_offset; /* seasonal: seconds added to UTC timestamps to get the local time of
                       * day, within +/-14 h */
  bool weekend;       /* seasonal: Saturdays and Sundays get their own profile */
} vg_detect_opts_t;

/* One series' detector. Plain data: copy it, store it, memcpy it to disk (snapshot/resume). */
typedef struct {
  vg_detect_opts_t o; /* with defaults filled in */
  uint64_t n;         /* points absorbed */
  double mean, var;   /* EWMA of the values and of the squared deviations */
  double cpos, cneg;  /* CUSUM sums */
  double peak, decay; /* default detector: decaying peak of raw scores, its factor per point */
  uint32_t head;      /* ring: next slot to write */
  union {
    double ring[VG_DETECT_WINDOW_MAX]; /* robust, zscore5, default */
    struct {
      double mean[VG_DETECT_SEASON_MAX], var[VG_DETECT_SEASON_MAX];
      uint16_t count[VG_DETECT_SEASON_MAX]; /* points absorbed, saturating */
    } season;                               /* seasonal: the profile, one slot per bucket */
  };
} vg_detector_t;

/* Fills `o` with the defaults of `kind`. */
void detect_opts_default(vg_detect_opts_t *o, vg_detect_kind_t kind);

/* Checks `o` (after filling zeros with defaults) and initialises `d`. Returns 0, or -1 with a
 * message in `err` for an option out of range. */
int detect_init(vg_detector_t *d, const vg_detect_opts_t *o, char *err, size_t errlen);

/* Absorbs one point and returns its score in [0, 1] (0 while warming up); *flag (if not NULL)
 * tells whether score >= threshold. A NaN or infinite value is ignored: state unchanged, score 0,
 * no flag. The point is scored against the state before it, then absorbed. The same as
 * detect_update_at(d, NAN, x, flag). */
double detect_update(vg_detector_t *d, double x, bool *flag);

/* detect_update() for a point at time `ts` (unix seconds). Only the seasonal kind uses the
 * time; it ignores a point without one (NaN or infinite ts: score 0, state unchanged). */
double detect_update_at(vg_detector_t *d, double ts, double x, bool *flag);

/* True when the kind needs timestamps (detect_update_at) to learn anything. */
bool detect_needs_time(const vg_detector_t *d);

/* True once the warm-up is over (seasonal: once every bucket is warm). */
bool detect_warm(const vg_detector_t *d);

/* The shared scale: z^2 / (z^2 + 9) for z >= 0 (NaN -> 0, +inf -> 1). */
double detect_score_of_z(double z);

/* "default", "ewma", "robust", "cusum", "zscore5", "seasonal"; NULL for an unknown kind. */
const char *detect_kind_name(vg_detect_kind_t kind);

/* The kind named `name`, or -1. */
int detect_kind_parse(const char *name);

/* ---- snapshots: a detector as a portable, versioned blob (for the store) ---- */

#define VG_DETECT_SNAPSHOT_VERSION 2
/* magic, version, 7 integers, 11 doubles, the point count, 96 doubles and 48 counts of state */
#define VG_DETECT_SNAPSHOT_SIZE (4 + 4 + 4 * 7 + 8 * 11 + 8 + 8 * 96 + 2 * VG_DETECT_SEASON_MAX)
/* A version-1 blob (before the seasonal kind): still read. */
#define VG_DETECT_SNAPSHOT_V1_SIZE (4 + 4 * 5 + 8 * 12 + 8 * VG_DETECT_WINDOW_MAX)

/* Writes d into buf (VG_DETECT_SNAPSHOT_SIZE bytes, little-endian, "VGDS" + version). */
void detect_snapshot(const vg_detector_t *d, uint8_t *buf);

/* Replaces *d with the detector in `buf` (version 2, or 1). Returns 0, or -1 with a message in
 * `err` for a blob of the wrong size, magic or version, or with options or state out of range
 * (d is then unchanged). */
int detect_restore(vg_detector_t *d, const uint8_t *buf, size_t len, char *err, size_t errlen);

/* ---- named series: detectors that outlive the Lua states using them ---- */

typedef struct vg_series vg_series_t;
typedef struct vg_series_registry vg_series_registry_t;

/* A registry of at most `max` named series (0: 100000). NULL when out of memory. */
vg_series_registry_t *detect_registry_new(size_t max);

/* The series called `name`, or NULL. */
vg_series_t *detect_registry_get(vg_series_registry_t *r, const char *name);

/* Creates the series `name` with a detector initialised from `o`. Returns NULL with a message in
 * `err` when it exists already, the options are bad, the registry is full or memory is out. */
vg_series_t *detect_registry_add(
    vg_series_registry_t *r, const char *name, const vg_detect_opts_t *o, char *err, size_t errlen);

size_t detect_registry_count(const vg_series_registry_t *r);

/* Frees the registry and every series in it; NULL is fine. */
void detect_registry_free(vg_series_registry_t *r);

const char *detect_series_name(const vg_series_t *s);
vg_detector_t *detect_series_detector(vg_series_t *s);
/* Updates so far and the last timestamp given to detect_series_update (NaN when none). */
uint64_t detect_series_updates(const vg_series_t *s);
double detect_series_last_ts(const vg_series_t *s);

/* detect_update_at() on the series' detector, remembering `ts` (NaN: none). */
double detect_series_update(vg_series_t *s, double value, double ts, bool *flag);

/* Forgets what the series learnt (same options); its update count stays. */
void detect_series_reset(vg_series_t *s);

/* detect_restore() on the series' detector (the update count and last ts stay). */
int detect_series_restore(vg_series_t *s, const uint8_t *buf, size_t len, char *err, size_t errlen);

/* ---- persistence: what changed goes to the store, and comes back at start ---- */

/* A series blob: "VGSS", version, update count, last ts, then the detector's snapshot. */
#define VG_DETECT_SERIES_VERSION 1
#define VG_DETECT_SERIES_HEADER (4 + 4 + 8 + 8)

/* Emits a blob of every series changed (created, updated, reset, restored from Lua) since the
 * last collect, and marks them clean. Returns how many. */
size_t detect_registry_collect(vg_series_registry_t *r, vg_snapshot_emit_fn emit, void *ctx);

/* Creates (or replaces the state, update count and last ts of) the series `name` from a blob
 * made by detect_registry_collect (or a bare detector snapshot, whose update count is then its
 * point count). The series is left clean. Returns 0, or -1 with a message in `err` (bad name,
 * bad blob, registry full, out of memory). */
int detect_registry_restore(vg_series_registry_t *r,
                            const char *name,
                            const void *blob,
                            size_t len,
                            char *err,
                            size_t errlen);
