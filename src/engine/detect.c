/* Streaming detectors: EWMA, robust (median/MAD over a ring), CUSUM, the seed's z-score over the
 * last 5 values, and the default ensemble. Each update scores the point against the state before
 * it, then absorbs it; all state is in vg_detector_t. */
#include "engine/detect.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errbuf.h"

#define MAD_TO_SIGMA 1.4826 /* MAD of a normal distribution times this is its sigma */

static const char *const kind_names[] = { "default", "ewma",    "robust",
                                          "cusum",   "zscore5", "seasonal" };
#define SEASON_CLIP 5.0  /* a warm bucket learns at most this many sd from one point */
#define SEASON_FLOOR 1.0 /* a slot's sd is at least this share of the residual sd of all slots */
#define SEASON_GLOBAL_ALPHA 0.01 /* EWMA weight of that residual variance (in d->var) */
#define MAX_UTC_OFFSET (14 * 3600)

const char *detect_kind_name(vg_detect_kind_t kind)
{
  return (unsigned)kind < sizeof(kind_names) / sizeof(kind_names[0]) ? kind_names[kind] : NULL;
}

int detect_kind_parse(const char *name)
{
  for (size_t i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
    if (strcmp(name, kind_names[i]) == 0) {
      return (int)i;
    }
  }
  return -1;
}

static void fill_defaults(vg_detect_opts_t *o)
{
  if (o->alpha == 0) {
    o->alpha = o->kind == VG_DETECT_SEASONAL ? 0.05 : 0.02;
  }
  if (o->kind != VG_DETECT_SEASONAL) {
    o->buckets = 0; /* meaningless for the other kinds: keep their snapshots canonical */
    o->weekend = false;
    o->utc_offset = 0;
  } else if (o->buckets == 0) {
    o->buckets = 24;
  }
  if (o->kind == VG_DETECT_ZSCORE5) {
    o->window = 5;
  } else if (o->window == 0) {
    o->window = VG_DETECT_WINDOW_MAX;
  }
  if (o->warmup == 0) {
    switch (o->kind) {
      case VG_DETECT_DEFAULT:
      case VG_DETECT_ROBUST:
        o->warmup = o->window / 2;
        break;
      case VG_DETECT_ZSCORE5:
        o->warmup = 5;
        break;
      case VG_DETECT_SEASONAL:
        o->warmup = 12;
        break;
      default:
        o->warmup = 30;
    }
  }
  if (o->threshold == 0) {
    o->threshold = 0.5;
  }
  if (o->cusum_k == 0) {
    o->cusum_k = 0.5;
  }
  if (o->cusum_h == 0) {
    o->cusum_h = 8;
  }
  if (o->half_life == 0) {
    o->half_life = 350;
  }
}

void detect_opts_default(vg_detect_opts_t *o, vg_detect_kind_t kind)
{
  memset(o, 0, sizeof(*o));
  o->kind = kind;
  fill_defaults(o);
}

int detect_init(vg_detector_t *d, const vg_detect_opts_t *opts, char *err, size_t errlen)
{
  vg_detect_opts_t o = *opts;
  if (detect_kind_name(o.kind) == NULL) {
    vg_errf(err, errlen, "unknown detector kind %d", (int)o.kind);
    return -1;
  }
  fill_defaults(&o);
  if (!(o.alpha > 0 && o.alpha < 1)) {
    vg_errf(err, errlen, "alpha must be in (0, 1), got %g", o.alpha);
    return -1;
  }
  if (o.window < 3 || o.window > VG_DETECT_WINDOW_MAX) {
    vg_errf(err, errlen, "window must be in [3, %d], got %u", VG_DETECT_WINDOW_MAX, o.window);
    return -1;
  }
  if (!(o.threshold > 0 && o.threshold <= 1)) {
    vg_errf(err, errlen, "threshold must be in (0, 1], got %g", o.threshold);
    return -1;
  }
  if (!(o.cusum_k >= 0 && o.cusum_h > 0 && isfinite(o.cusum_k) && isfinite(o.cusum_h))) {
    vg_errf(err, errlen, "cusum_k must be >= 0 and cusum_h > 0");
    return -1;
  }
  if (!(o.half_life >= 1 && o.half_life <= 1e9)) {
    vg_errf(err, errlen, "half_life must be in [1, 1e9] points, got %g", o.half_life);
    return -1;
  }
  if (o.warmup > 1000000) {
    vg_errf(err, errlen, "warmup must be at most 1000000, got %u", o.warmup);
    return -1;
  }
  if (o.kind == VG_DETECT_SEASONAL) {
    uint32_t most = o.weekend ? VG_DETECT_SEASON_MAX / 2 : VG_DETECT_SEASON_MAX;
    if (o.buckets < 2 || o.buckets > most) {
      vg_errf(err, errlen, "buckets must be in [2, %u]%s, got %u", most,
              o.weekend ? " with the weekend split" : "", o.buckets);
      return -1;
    }
    if (o.warmup > UINT16_MAX) {
      vg_errf(err, errlen, "warmup must be at most %d points a bucket, got %u", UINT16_MAX,
              o.warmup);
      return -1;
    }
    if (o.utc_offset < -MAX_UTC_OFFSET || o.utc_offset > MAX_UTC_OFFSET) {
      vg_errf(err, errlen, "utc_offset must be within +/-%d s, got %d", MAX_UTC_OFFSET,
              (int)o.utc_offset);
      return -1;
    }
  }
  memset(d, 0, sizeof(*d));
  d->o = o;
  d->decay = exp2(-1.0 / o.half_life);
  return 0;
}

static uint32_t season_slots(const vg_detector_t *d)
{
  return d->o.weekend ? 2 * d->o.buckets : d->o.buckets;
}

bool detect_warm(const vg_detector_t *d)
{
  if (d->o.kind == VG_DETECT_SEASONAL) {
    for (uint32_t i = 0; i < season_slots(d); i++) {
      if (d->season.count[i] < d->o.warmup) {
        return false;
      }
    }
    return true;
  }
  return d->n >= d->o.warmup;
}

bool detect_needs_time(const vg_detector_t *d)
{
  return d->o.kind == VG_DETECT_SEASONAL;
}

double detect_score_of_z(double z)
{
  if (!(z > 0)) {
    return 0.0;
  }
  if (isinf(z)) {
    return 1.0;
  }
  return z * z / (z * z + 9.0);
}

/* A scale never below a tiny fraction of the level, so float noise on a flat series is not a
 * 1e12-sigma event (a real step on a flat series still is). */
static double floor_scale(double scale, double level)
{
  double lo = 1e-9 * fabs(level) + 1e-12;
  return scale > lo ? scale : lo;
}

/* k-th smallest of v[0..n-1], leaving v[0..k-1] <= v[k] (Wirth's selection; reorders v). */
static double select_kth(double *v, int n, int k)
{
  int l = 0, m = n - 1;
  while (l < m) {
    double x = v[k];
    int i = l, j = m;
    do {
      while (v[i] < x) {
        i++;
      }
      while (x < v[j]) {
        j--;
      }
      if (i <= j) {
        double t = v[i];
        v[i] = v[j];
        v[j] = t;
        i++;
        j--;
      }
    } while (i <= j);
    if (j < k) {
      l = i;
    }
    if (k < i) {
      m = j;
    }
  }
  return v[k];
}

static double median_of(double *v, uint32_t n)
{
  int k = (int)n / 2;
  double m = select_kth(v, (int)n, k);
  if (n % 2 == 0) { /* the lower middle is the largest of v[0..k-1] */
    double lo = v[0];
    for (int i = 1; i < k; i++) {
      lo = v[i] > lo ? v[i] : lo;
    }
    m = (m + lo) / 2;
  }
  return m;
}

static uint32_t ring_count(const vg_detector_t *d)
{
  return d->n < d->o.window ? (uint32_t)d->n : d->o.window;
}

/* z of x against the median and MAD of the ring. */
static double robust_z(const vg_detector_t *d, double x)
{
  uint32_t n = ring_count(d);
  if (n == 0) {
    return 0;
  }
  double v[VG_DETECT_WINDOW_MAX];
  memcpy(v, d->ring, n * sizeof(*v));
  double med = median_of(v, n);
  double mean_ad = 0;
  for (uint32_t i = 0; i < n; i++) {
    v[i] = fabs(v[i] - med);
    mean_ad += v[i];
  }
  double mad = median_of(v, n) * MAD_TO_SIGMA;
  /* more than half the window equal (MAD 0): fall back on the mean absolute deviation */
  double scale = mad > 0 ? mad : mean_ad / n * 1.2533;
  return fabs(x - med) / floor_scale(scale, med);
}

static double ewma_sd(const vg_detector_t *d)
{
  /* the variance starts at 0: divide by the weight accumulated so far (bias correction) */
  double w = 1.0 - pow(1.0 - d->o.alpha, (double)d->n);
  return floor_scale(sqrt(w > 0 ? d->var / w : 0), d->mean);
}

static void ewma_absorb(vg_detector_t *d, double x)
{
  if (d->n == 0) {
    d->mean = x;
    return;
  }
  double diff = x - d->mean, incr = d->o.alpha * diff;
  d->mean += incr;
  d->var = (1.0 - d->o.alpha) * (d->var + diff * incr);
}

/* CUSUM on the residual of x against the EWMA; returns the statistic in z units (h -> 3). */
static double cusum_step(vg_detector_t *d, double x, double sd)
{
  double r = d->n > 0 ? (x - d->mean) / sd : 0;
  r = r > 10 ? 10 : (r < -10 ? -10 : r); /* one wild point is a spike, not a shift */
  d->cpos = fmax(0, d->cpos + r - d->o.cusum_k);
  d->cneg = fmax(0, d->cneg - r - d->o.cusum_k);
  return 3.0 * fmax(d->cpos, d->cneg) / d->o.cusum_h;
}

/* The profile slot of time `ts`: its time-of-day bucket, after the weekday ones on a weekend. */
static uint32_t season_slot(const vg_detector_t *d, double ts)
{
  double local = ts + d->o.utc_offset;
  double day = floor(local / 86400.0);
  double tod = local - day * 86400.0; /* [0, 86400) */
  uint32_t b = (uint32_t)(tod * d->o.buckets / 86400.0);
  b = b < d->o.buckets ? b : d->o.buckets - 1;
  if (d->o.weekend) {
    double dow = fmod(day + 4.0, 7.0); /* 1970-01-01 was a Thursday; 0 is Sunday */
    dow = dow < 0 ? dow + 7.0 : dow;
    if (dow == 0.0 || dow == 6.0) {
      b += d->o.buckets;
    }
  }
  return b;
}

/* Scores x against its slot (warm slots only), then absorbs it there: an EWMA of the value and
 * of the squared deviations, with one point moving a warm slot by at most SEASON_CLIP sd. Also
 * keeps the points' z on d->mean (last) for state(). Returns z, or -1 when the slot is cold. */
static double season_step(vg_detector_t *d, uint32_t b, double x)
{
  double a = d->o.alpha, *mean = &d->season.mean[b], *var = &d->season.var[b];
  uint16_t c = d->season.count[b];
  double z = -1;
  if (c == 0) {
    *mean = x;
  } else {
    double w = 1.0 - pow(1.0 - a, (double)c); /* bias correction, as ewma_sd */
    double sd = floor_scale(sqrt(*var / w), *mean);
    double diff = x - *mean;
    /* A slot's scale is never below a fraction of the typical residual of all slots: a slot
     * that happened to be quiet for its few points does not make every later wiggle an
     * anomaly. */
    double gsd = sqrt(d->var);
    sd = sd > SEASON_FLOOR * gsd ? sd : SEASON_FLOOR * gsd;
    d->var += SEASON_GLOBAL_ALPHA * (diff * diff - d->var);
    if (c >= d->o.warmup) {
      z = fabs(diff) / sd;
      double lim = SEASON_CLIP * sd;
      diff = diff > lim ? lim : (diff < -lim ? -lim : diff);
    }
    double incr = a * diff;
    *mean += incr;
    *var = (1.0 - a) * (*var + diff * incr);
  }
  if (c < UINT16_MAX) {
    d->season.count[b] = (uint16_t)(c + 1);
  }
  return z;
}

static double zscore5(const vg_detector_t *d, double x)
{
  uint32_t n = ring_count(d);
  if (n == 0) {
    return 0;
  }
  double mean = 0, ss = 0;
  for (uint32_t i = 0; i < n; i++) {
    mean += d->ring[i];
  }
  mean /= n;
  for (uint32_t i = 0; i < n; i++) {
    ss += (d->ring[i] - mean) * (d->ring[i] - mean);
  }
  double sd = sqrt(ss / n); /* numpy's std (ddof 0), as the seed computed it */
  if (sd == 0) {
    return x == mean ? 0 : INFINITY;
  }
  return fabs(x - mean) / sd;
}

double detect_update(vg_detector_t *d, double x, bool *flag)
{
  return detect_update_at(d, NAN, x, flag);
}

double detect_update_at(vg_detector_t *d, double ts, double x, bool *flag)
{
  if (flag != NULL) {
    *flag = false;
  }
  if (!isfinite(x)) {
    return 0;
  }
  if (d->o.kind == VG_DETECT_SEASONAL) {
    if (!isfinite(ts)) {
      return 0;
    }
    double z = season_step(d, season_slot(d, ts), x);
    d->n++;
    double score = z < 0 ? 0 : detect_score_of_z(z);
    if (flag != NULL) {
      *flag = z >= 0 && score >= d->o.threshold;
    }
    return score;
  }
  double z = 0;
  bool warm = detect_warm(d);
  switch (d->o.kind) {
    case VG_DETECT_EWMA:
      z = d->n > 0 ? fabs(x - d->mean) / ewma_sd(d) : 0;
      ewma_absorb(d, x);
      break;
    case VG_DETECT_ROBUST:
      z = robust_z(d, x);
      break;
    case VG_DETECT_ZSCORE5:
      z = zscore5(d, x);
      break;
    case VG_DETECT_CUSUM: {
      z = cusum_step(d, x, ewma_sd(d));
      ewma_absorb(d, x);
      break;
    }
    case VG_DETECT_DEFAULT:
      z = cusum_step(d, x, ewma_sd(d));
      ewma_absorb(d, x);
      break;
    case VG_DETECT_SEASONAL: /* handled above */
      break;
  }
  if (d->o.kind != VG_DETECT_EWMA && d->o.kind != VG_DETECT_CUSUM) {
    d->ring[d->head] = x;
    d->head = (d->head + 1) % d->o.window;
  }
  d->n++;
  if (!warm) {
    d->cpos = d->cneg = 0; /* sums built on a half-learnt scale mean nothing */
    return 0;
  }
  double score = detect_score_of_z(z);
  if ((d->o.kind == VG_DETECT_CUSUM || d->o.kind == VG_DETECT_DEFAULT) && z >= 3.0) {
    d->cpos = d->cneg = 0; /* a shift was seen: start over at the new level */
    d->mean = x;
  }
  if (d->o.kind == VG_DETECT_DEFAULT) {
    /* Report the onset of an episode, not each of its points: a score counts only when it
     * rises above the decaying peak of the scores before it. */
    double raw = score;
    score = raw > d->peak ? raw : 0.0;
    d->peak = fmax(d->peak * d->decay, raw);
  }
  bool hit = score >= d->o.threshold;
  if (flag != NULL) {
    *flag = hit;
  }
  return score;
}

/* ---- snapshots ---- */

static void put_le(uint8_t **p, uint64_t v, int bytes)
{
  for (int i = 0; i < bytes; i++) {
    *(*p)++ = (uint8_t)(v >> (8 * i));
  }
}

static void put_double(uint8_t **p, double v)
{
  uint64_t u;
  memcpy(&u, &v, sizeof(u));
  put_le(p, u, 8);
}

static uint64_t get_le(const uint8_t **p, int bytes)
{
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) {
    v |= (uint64_t) * (*p)++ << (8 * i);
  }
  return v;
}

static double get_double(const uint8_t **p)
{
  uint64_t u = get_le(p, 8);
  double v;
  memcpy(&v, &u, sizeof(v));
  return v;
}

void detect_snapshot(const vg_detector_t *d, uint8_t *buf)
{
  uint8_t *p = buf;
  static const uint8_t magic[4] = { 'V', 'G', 'D', 'S' };
  memcpy(p, magic, sizeof(magic));
  p += sizeof(magic);
  put_le(&p, VG_DETECT_SNAPSHOT_VERSION, 4);
  const uint32_t u[] = { (uint32_t)d->o.kind,
                         d->o.window,
                         d->o.warmup,
                         d->head,
                         d->o.buckets,
                         d->o.weekend ? 1u : 0u,
                         (uint32_t)d->o.utc_offset };
  for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
    put_le(&p, u[i], 4);
  }
  const double f[] = { d->o.alpha,     d->o.threshold, d->o.cusum_k, d->o.cusum_h,
                       d->o.half_life, d->mean,        d->var,       d->cpos,
                       d->cneg,        d->peak,        d->decay };
  for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
    put_double(&p, f[i]);
  }
  put_le(&p, d->n, 8);
  /* the state: the profile for seasonal, else the ring padded with zeros */
  bool season = d->o.kind == VG_DETECT_SEASONAL;
  if (season) {
    for (int i = 0; i < VG_DETECT_SEASON_MAX; i++) {
      put_double(&p, d->season.mean[i]);
    }
    for (int i = 0; i < VG_DETECT_SEASON_MAX; i++) {
      put_double(&p, d->season.var[i]);
    }
  } else {
    for (int i = 0; i < 2 * VG_DETECT_SEASON_MAX; i++) {
      put_double(&p, i < VG_DETECT_WINDOW_MAX ? d->ring[i] : 0.0);
    }
  }
  for (int i = 0; i < VG_DETECT_SEASON_MAX; i++) {
    put_le(&p, season ? d->season.count[i] : 0, 2);
  }
}

/* Reads the options and scalar state of a blob (after magic and version) into *o and the
 * scalars; the layouts of versions 1 and 2 differ only in the integers. */
static void read_header(
    const uint8_t **p, uint32_t version, vg_detect_opts_t *o, uint32_t *head, double f[11])
{
  memset(o, 0, sizeof(*o));
  o->kind = (vg_detect_kind_t)get_le(p, 4);
  o->window = (uint32_t)get_le(p, 4);
  o->warmup = (uint32_t)get_le(p, 4);
  *head = (uint32_t)get_le(p, 4);
  if (version >= 2) {
    o->buckets = (uint32_t)get_le(p, 4);
    o->weekend = get_le(p, 4) != 0;
    o->utc_offset = (int32_t)(uint32_t)get_le(p, 4);
  }
  for (int i = 0; i < 11; i++) {
    f[i] = get_double(p);
  }
  o->alpha = f[0];
  o->threshold = f[1];
  o->cusum_k = f[2];
  o->cusum_h = f[3];
  o->half_life = f[4];
}

int detect_restore(vg_detector_t *d, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
  const uint8_t *p = buf;
  if (len < 8 || memcmp(p, "VGDS", 4) != 0) {
    vg_errf(err, errlen, "not a detector snapshot");
    return -1;
  }
  p += 4;
  uint32_t version = (uint32_t)get_le(&p, 4);
  if (version != 1 && version != VG_DETECT_SNAPSHOT_VERSION) {
    vg_errf(err, errlen, "detector snapshot version %u, this build reads 1 and %d", version,
            VG_DETECT_SNAPSHOT_VERSION);
    return -1;
  }
  if (len != (version == 1 ? VG_DETECT_SNAPSHOT_V1_SIZE : VG_DETECT_SNAPSHOT_SIZE)) {
    vg_errf(err, errlen, "not a detector snapshot");
    return -1;
  }
  vg_detect_opts_t o;
  uint32_t head;
  double f[11];
  read_header(&p, version, &o, &head, f);
  if (version == 1 && o.kind == VG_DETECT_SEASONAL) {
    vg_errf(err, errlen, "corrupt detector snapshot (a version-1 blob has no seasonal kind)");
    return -1;
  }
  vg_detector_t t;
  if (detect_init(&t, &o, err, errlen) != 0) {
    return -1;
  }
  t.n = get_le(&p, 8);
  t.mean = f[5];
  t.var = f[6];
  t.cpos = f[7];
  t.cneg = f[8];
  t.peak = f[9]; /* f[10], the decay, follows from half_life */
  t.head = head;
  bool ok = t.o.window == o.window && t.o.buckets == o.buckets && head < t.o.window &&
            isfinite(t.mean) && t.var >= 0 && isfinite(t.var) && t.cpos >= 0 && t.cneg >= 0 &&
            t.peak >= 0 && t.peak <= 1;
  if (version == 1) {
    for (int i = 0; i < VG_DETECT_WINDOW_MAX; i++) {
      t.ring[i] = get_double(&p);
      ok = ok && isfinite(t.ring[i]);
    }
  } else if (t.o.kind == VG_DETECT_SEASONAL) {
    for (int i = 0; i < VG_DETECT_SEASON_MAX; i++) {
      t.season.mean[i] = get_double(&p);
      ok = ok && isfinite(t.season.mean[i]);
    }
    for (int i = 0; i < VG_DETECT_SEASON_MAX; i++) {
      t.season.var[i] = get_double(&p);
      ok = ok && t.season.var[i] >= 0 && isfinite(t.season.var[i]);
    }
    for (int i = 0; i < VG_DETECT_SEASON_MAX; i++) {
      t.season.count[i] = (uint16_t)get_le(&p, 2);
    }
  } else {
    for (int i = 0; i < VG_DETECT_WINDOW_MAX; i++) {
      t.ring[i] = get_double(&p);
      ok = ok && isfinite(t.ring[i]);
    }
  }
  if (!ok) {
    vg_errf(err, errlen, "corrupt detector snapshot (state out of range)");
    return -1;
  }
  *d = t;
  return 0;
}

/* ---- named series ---- */

struct vg_series {
  vg_series_t *next; /* hash chain */
  bool dirty;        /* changed since the last detect_registry_collect */
  uint64_t updates;
  double last_ts;
  vg_detector_t det;
  char name[]; /* NUL-terminated */
};

struct vg_series_registry {
  vg_series_t **buckets;
  size_t nbuckets, count, max;
};

static uint64_t hash_name(const char *s)
{
  uint64_t h = 1469598103934665603u; /* FNV-1a */
  for (; *s; s++) {
    h = (h ^ (unsigned char)*s) * 1099511628211u;
  }
  return h;
}

vg_series_registry_t *detect_registry_new(size_t max)
{
  vg_series_registry_t *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return NULL;
  }
  r->nbuckets = 64;
  r->max = max ? max : 100000;
  r->buckets = calloc(r->nbuckets, sizeof(vg_series_t *));
  if (r->buckets == NULL) {
    free(r);
    return NULL;
  }
  return r;
}

vg_series_t *detect_registry_get(vg_series_registry_t *r, const char *name)
{
  for (vg_series_t *s = r->buckets[hash_name(name) & (r->nbuckets - 1)]; s; s = s->next) {
    if (strcmp(s->name, name) == 0) {
      return s;
    }
  }
  return NULL;
}

/* Doubles the buckets when the chains get long; on failure keeps the old ones (still correct). */
static void registry_grow(vg_series_registry_t *r)
{
  size_t nb = r->nbuckets * 2;
  vg_series_t **b = calloc(nb, sizeof(vg_series_t *));
  if (b == NULL) {
    return;
  }
  for (size_t i = 0; i < r->nbuckets; i++) {
    for (vg_series_t *s = r->buckets[i], *next; s; s = next) {
      next = s->next;
      size_t k = hash_name(s->name) & (nb - 1);
      s->next = b[k];
      b[k] = s;
    }
  }
  free(r->buckets);
  r->buckets = b;
  r->nbuckets = nb;
}

vg_series_t *detect_registry_add(
    vg_series_registry_t *r, const char *name, const vg_detect_opts_t *o, char *err, size_t errlen)
{
  if (detect_registry_get(r, name) != NULL) {
    vg_errf(err, errlen, "series \"%s\" exists already", name);
    return NULL;
  }
  if (r->count >= r->max) {
    vg_errf(err, errlen, "too many series (%zu)", r->max);
    return NULL;
  }
  size_t len = strlen(name);
  vg_series_t *s = calloc(1, sizeof(*s) + len + 1);
  if (s == NULL) {
    vg_errf(err, errlen, "out of memory");
    return NULL;
  }
  if (detect_init(&s->det, o, err, errlen) != 0) {
    free(s);
    return NULL;
  }
  memcpy(s->name, name, len + 1);
  s->last_ts = NAN;
  s->dirty = true;
  if (r->count >= r->nbuckets) {
    registry_grow(r);
  }
  size_t k = hash_name(name) & (r->nbuckets - 1);
  s->next = r->buckets[k];
  r->buckets[k] = s;
  r->count++;
  return s;
}

size_t detect_registry_count(const vg_series_registry_t *r)
{
  return r->count;
}

void detect_registry_free(vg_series_registry_t *r)
{
  if (r == NULL) {
    return;
  }
  for (size_t i = 0; i < r->nbuckets; i++) {
    for (vg_series_t *s = r->buckets[i], *next; s; s = next) {
      next = s->next;
      free(s);
    }
  }
  free(r->buckets);
  free(r);
}

const char *detect_series_name(const vg_series_t *s)
{
  return s->name;
}

vg_detector_t *detect_series_detector(vg_series_t *s)
{
  return &s->det;
}

uint64_t detect_series_updates(const vg_series_t *s)
{
  return s->updates;
}

double detect_series_last_ts(const vg_series_t *s)
{
  return s->last_ts;
}

double detect_series_update(vg_series_t *s, double value, double ts, bool *flag)
{
  s->updates++;
  s->dirty = true;
  if (!isnan(ts)) {
    s->last_ts = ts;
  }
  return detect_update_at(&s->det, ts, value, flag);
}

void detect_series_reset(vg_series_t *s)
{
  vg_detect_opts_t o = s->det.o;
  detect_init(&s->det, &o, NULL, 0); /* the options were valid once */
  s->dirty = true;
}

int detect_series_restore(vg_series_t *s, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
  if (detect_restore(&s->det, buf, len, err, errlen) != 0) {
    return -1;
  }
  s->dirty = true;
  return 0;
}

/* ---- persistence ---- */

size_t detect_registry_collect(vg_series_registry_t *r, vg_snapshot_emit_fn emit, void *ctx)
{
  uint8_t blob[VG_DETECT_SERIES_HEADER + VG_DETECT_SNAPSHOT_SIZE];
  size_t count = 0;
  for (size_t i = 0; i < r->nbuckets; i++) {
    for (vg_series_t *s = r->buckets[i]; s; s = s->next) {
      if (!s->dirty) {
        continue;
      }
      uint8_t *p = blob;
      memcpy(p, "VGSS", 4);
      p += 4;
      put_le(&p, VG_DETECT_SERIES_VERSION, 4);
      put_le(&p, s->updates, 8);
      put_double(&p, s->last_ts);
      detect_snapshot(&s->det, p);
      emit(ctx, s->name, blob, sizeof(blob));
      s->dirty = false;
      count++;
    }
  }
  return count;
}

int detect_registry_restore(vg_series_registry_t *r,
                            const char *name,
                            const void *blob,
                            size_t len,
                            char *err,
                            size_t errlen)
{
  size_t namelen = name != NULL ? strlen(name) : 0;
  if (namelen == 0 || namelen > 1024) {
    vg_errf(err, errlen, "a series name has 1 to 1024 bytes");
    return -1;
  }
  const uint8_t *p = blob;
  uint64_t updates = 0;
  double last_ts = NAN;
  bool wrapped = len >= 4 && memcmp(p, "VGSS", 4) == 0;
  if (wrapped) {
    if (len < VG_DETECT_SERIES_HEADER) {
      vg_errf(err, errlen, "series snapshot \"%s\": truncated", name);
      return -1;
    }
    p += 4;
    uint32_t version = (uint32_t)get_le(&p, 4);
    if (version != VG_DETECT_SERIES_VERSION) {
      vg_errf(err, errlen, "series snapshot \"%s\": version %u, this build reads %d", name, version,
              VG_DETECT_SERIES_VERSION);
      return -1;
    }
    updates = get_le(&p, 8);
    last_ts = get_double(&p);
    len -= VG_DETECT_SERIES_HEADER;
    if (isinf(last_ts)) {
      vg_errf(err, errlen, "series snapshot \"%s\": corrupt (last ts)", name);
      return -1;
    }
  }
  vg_detector_t d;
  char why[128];
  if (detect_restore(&d, p, len, why, sizeof(why)) != 0) {
    vg_errf(err, errlen, "series snapshot \"%s\": %s", name, why);
    return -1;
  }
  if (!wrapped) {
    updates = d.n;
  }
  vg_series_t *s = detect_registry_get(r, name);
  if (s == NULL && (s = detect_registry_add(r, name, &d.o, err, errlen)) == NULL) {
    return -1;
  }
  s->det = d;
  s->updates = updates;
  s->last_ts = last_ts;
  s->dirty = false;
  return 0;
}
