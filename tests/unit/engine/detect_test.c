/* Tests for src/engine/detect.c: the shared score scale, warm-up, each kind on constructed
 * series (exact values where the arithmetic is simple), the default's onset-only reporting,
 * NaN handling, option errors, and that a copied state resumes identically. */
#include "engine/detect.h"

#include <math.h>
#include <stdio.h>
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

static uint64_t lcg_state;

static double gauss(void)
{
  lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
  double u = ((double)(lcg_state >> 11) + 0.5) * 0x1.0p-53;
  lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
  double v = ((double)(lcg_state >> 11) + 0.5) * 0x1.0p-53;
  return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static void init_kind(vg_detector_t *d, vg_detect_kind_t kind)
{
  vg_detect_opts_t o;
  detect_opts_default(&o, kind);
  char err[128] = "";
  if (detect_init(d, &o, err, sizeof(err)) != 0) {
    fail_msg("init: %s", err);
  }
}

static void test_score_scale(void **state)
{
  (void)state;
  assert_close(detect_score_of_z(0), 0, 0);
  assert_close(detect_score_of_z(-2), 0, 0);
  assert_close(detect_score_of_z(NAN), 0, 0);
  assert_close(detect_score_of_z(3), 0.5, 1e-15);
  assert_close(detect_score_of_z(6), 0.8, 1e-15);
  assert_close(detect_score_of_z(9), 0.9, 1e-15);
  assert_close(detect_score_of_z(INFINITY), 1, 0);
  assert_true(detect_score_of_z(2.9) < 0.5 && detect_score_of_z(3.1) > 0.5);
}

static void test_zscore5_is_the_seed_rule(void **state)
{
  (void)state;
  vg_detector_t d;
  init_kind(&d, VG_DETECT_ZSCORE5);
  assert_int_equal(d.o.window, 5);
  bool flag = true;
  for (int i = 1; i <= 5; i++) { /* warm-up: scored 0, never flagged */
    assert_false(detect_warm(&d));
    assert_close(detect_update(&d, i, &flag), 0, 0);
    assert_false(flag);
  }
  assert_true(detect_warm(&d));
  /* previous five 1..5: mean 3, population sd sqrt(2); 10 is z = 7/sqrt(2) */
  double z = 7.0 / sqrt(2.0);
  assert_close(detect_update(&d, 10, &flag), z * z / (z * z + 9), 1e-12);
  assert_true(flag);
  /* previous five 2,3,4,5,10: mean 4.8; 4.8 itself scores 0 */
  assert_close(detect_update(&d, 4.8, &flag), 0, 1e-12);
  assert_false(flag);
  /* a flat history: any change is infinitely many sigmas (the seed divided by 0) */
  init_kind(&d, VG_DETECT_ZSCORE5);
  for (int i = 0; i < 5; i++) {
    detect_update(&d, 7, NULL);
  }
  assert_close(detect_update(&d, 7, &flag), 0, 0);
  assert_close(detect_update(&d, 7.5, &flag), 1, 0);
  assert_true(flag);
}

static void test_ewma_flags_a_spike_not_noise(void **state)
{
  (void)state;
  vg_detector_t d;
  init_kind(&d, VG_DETECT_EWMA);
  lcg_state = 1;
  int flags = 0;
  for (int i = 0; i < 500; i++) {
    bool flag;
    double s = detect_update(&d, 100 + gauss(), &flag);
    assert_true(s >= 0 && s <= 1);
    flags += flag;
    if (i < 30) {
      assert_close(s, 0, 0);
    }
  }
  assert_true(flags <= 3); /* 3 sigma on 470 normal points: about 1.3 expected */
  vg_detector_t copy = d;
  bool flag;
  double s = detect_update(&d, 120, &flag);
  assert_true(flag);
  assert_true(s > 0.9); /* ~20 sigma */
  s = detect_update(&copy, 80, &flag);
  assert_true(flag);
  assert_true(s > 0.9); /* two-sided */
}

static void test_robust_ignores_outliers_in_its_window(void **state)
{
  (void)state;
  vg_detector_t d;
  init_kind(&d, VG_DETECT_ROBUST);
  for (int i = 0; i < 63; i++) {
    detect_update(&d, i % 2 ? 11 : 10, NULL);
  }
  detect_update(&d, 1000, NULL); /* one wild value in the window */
  /* median 10.5 (or 10/11), MAD 0.5: 10.5 is normal, 20 is ~13 sigma */
  bool flag;
  assert_true(detect_update(&d, 10.5, &flag) < 0.1);
  assert_false(flag);
  assert_true(detect_update(&d, 20, &flag) > 0.9);
  assert_true(flag);
}

static void test_cusum_finds_a_small_level_shift(void **state)
{
  (void)state;
  vg_detector_t c, e;
  init_kind(&c, VG_DETECT_CUSUM);
  init_kind(&e, VG_DETECT_EWMA);
  lcg_state = 5;
  int before = 0, first = -1, ewma_flags = 0;
  for (int i = 0; i < 600; i++) {
    double v = gauss() + (i >= 400 ? 1.5 : 0); /* 1.5 sigma up at 400 */
    bool fc, fe;
    detect_update(&c, v, &fc);
    detect_update(&e, v, &fe);
    if (i < 400) {
      before += fc;
    } else {
      ewma_flags += fe;
      if (fc && first < 0) {
        first = i;
      }
    }
  }
  assert_int_equal(before, 0);
  assert_true(first >= 400 && first < 440);
  assert_true(ewma_flags <= 3); /* the point-wise z barely sees it */
}

static void test_default_reports_the_onset(void **state)
{
  (void)state;
  vg_detector_t d;
  init_kind(&d, VG_DETECT_DEFAULT);
  assert_true(sizeof(d) <= 1024);
  lcg_state = 9;
  int flags = 0;
  for (int i = 0; i < 1000; i++) {
    bool flag;
    double s = detect_update(&d, 50 + gauss(), &flag);
    assert_true(s >= 0 && s <= 1);
    flags += flag;
  }
  assert_int_equal(flags, 0);
  bool flag;
  double s = detect_update(&d, 50 + 20, &flag); /* a 20 sigma spike: its onset */
  assert_true(flag);
  assert_true(s > 0.5);
  for (int i = 0; i < 5; i++) {
    detect_update(&d, 50 + gauss(), NULL);
  }
  /* the same spike again soon is the same episode: scored 0, not re-flagged */
  assert_close(detect_update(&d, 50 + 20, &flag), 0, 0);
  assert_false(flag);
  /* a level shift of 5 sigma is reported once */
  init_kind(&d, VG_DETECT_DEFAULT);
  for (int i = 0; i < 500; i++) {
    detect_update(&d, 50 + gauss(), NULL);
  }
  flags = 0;
  for (int i = 0; i < 300; i++) {
    detect_update(&d, 55 + gauss(), &flag);
    flags += flag;
  }
  assert_true(flags >= 1 && flags <= 2);
}

static void test_nan_is_ignored(void **state)
{
  (void)state;
  vg_detector_t d, before;
  init_kind(&d, VG_DETECT_DEFAULT);
  for (int i = 0; i < 100; i++) {
    detect_update(&d, i % 3, NULL);
  }
  memcpy(&before, &d, sizeof(d));
  bool flag = true;
  assert_close(detect_update(&d, NAN, &flag), 0, 0);
  assert_false(flag);
  assert_close(detect_update(&d, INFINITY, &flag), 0, 0);
  assert_memory_equal(&d, &before, sizeof(d));
}

static void test_copied_state_resumes_identically(void **state)
{
  (void)state;
  for (int k = 0; k <= VG_DETECT_ZSCORE5; k++) {
    vg_detector_t a, b;
    init_kind(&a, (vg_detect_kind_t)k);
    lcg_state = 77;
    for (int i = 0; i < 300; i++) {
      detect_update(&a, 10 * gauss(), NULL);
    }
    memcpy(&b, &a, sizeof(a)); /* a snapshot, as the store keeps it */
    for (int i = 0; i < 300; i++) {
      double v = 10 * gauss() + (i == 150 ? 200 : 0);
      assert_close(detect_update(&a, v, NULL), detect_update(&b, v, NULL), 0);
    }
  }
}

static void expect_init_error(vg_detect_opts_t o, const char *want)
{
  vg_detector_t d;
  char err[128] = "";
  assert_int_equal(detect_init(&d, &o, err, sizeof(err)), -1);
  assert_string_equal(err, want);
}

static void test_bad_options(void **state)
{
  (void)state;
  vg_detect_opts_t o;
  detect_opts_default(&o, VG_DETECT_EWMA);
  o.alpha = 1.5;
  expect_init_error(o, "alpha must be in (0, 1), got 1.5");
  detect_opts_default(&o, VG_DETECT_ROBUST);
  o.window = 65;
  expect_init_error(o, "window must be in [3, 64], got 65");
  o.window = 2;
  expect_init_error(o, "window must be in [3, 64], got 2");
  detect_opts_default(&o, VG_DETECT_DEFAULT);
  o.threshold = 1.5;
  expect_init_error(o, "threshold must be in (0, 1], got 1.5");
  detect_opts_default(&o, VG_DETECT_DEFAULT);
  o.kind = (vg_detect_kind_t)42;
  expect_init_error(o, "unknown detector kind 42");
  assert_int_equal(detect_kind_parse("cusum"), VG_DETECT_CUSUM);
  assert_int_equal(detect_kind_parse("nope"), -1);
  assert_string_equal(detect_kind_name(VG_DETECT_DEFAULT), "default");
  assert_null(detect_kind_name((vg_detect_kind_t)9));
}

/* A day of 5-minute points starting at midnight UTC: 50 at night, a bump to 90 at 14:00 (the
 * daily peak), noise of sd 1. */
#define DAY0 1700006400.0 /* 2023-11-15 00:00:00 UTC, a Wednesday */

static double daily(double ts)
{
  double h = fmod(ts, 86400) / 3600;
  return 50 + 40 * exp(-((h - 14) / 1.5) * ((h - 14) / 1.5)) + gauss();
}

static void test_seasonal_learns_the_daily_cycle(void **state)
{
  (void)state;
  vg_detector_t s, e;
  init_kind(&s, VG_DETECT_SEASONAL);
  init_kind(&e, VG_DETECT_EWMA);
  assert_int_equal(s.o.buckets, 24);
  assert_int_equal(s.o.warmup, 12);
  assert_true(sizeof(vg_detector_t) <= 1024);
  lcg_state = 7;
  int first_scored = -1, seasonal_flags = 0, ewma_peak_flags = 0;
  for (int i = 0; i < 288 * 9; i++) {
    double ts = DAY0 + 300.0 * i, v = daily(ts);
    int day = i / 288, slot = i % 288; /* slot 36 is 03:00, 168 is 14:00 */
    if (day == 8 && slot == 36) {
      v += 8; /* 8 sd at night: well inside the day's range, so ewma cannot see it */
    }
    bool fs, fe;
    double ss = detect_update_at(&s, ts, v, &fs), se = detect_update_at(&e, ts, v, &fe);
    if (first_scored < 0 && ss > 0) {
      first_scored = i;
    }
    if (day == 8 && slot == 36) {
      assert_true(fs && ss > 0.6);
      assert_false(fe);
      assert_true(se < 0.2);
      continue;
    }
    seasonal_flags += day >= 1 && fs;
    ewma_peak_flags += day == 8 && slot >= 132 && slot < 204 && fe; /* 11:00 to 17:00 */
  }
  /* every bucket had its 12 points on day 0: scoring starts at midnight of day 1 */
  assert_int_equal(first_scored, 288);
  assert_true(detect_warm(&s));
  assert_int_equal(seasonal_flags, 0); /* the peak, eight days of it, is normal */
  assert_true(ewma_peak_flags >= 5);   /* while ewma calls the rise of each day's peak */
  assert_int_equal(s.n, 288 * 9);
}

static void test_seasonal_needs_time_and_splits_weekends(void **state)
{
  (void)state;
  vg_detector_t d;
  vg_detect_opts_t o;
  detect_opts_default(&o, VG_DETECT_SEASONAL);
  o.buckets = 4;
  o.warmup = 3;
  o.weekend = true;
  o.utc_offset = -6 * 3600;
  char err[128] = "";
  assert_int_equal(detect_init(&d, &o, err, sizeof(err)), 0);
  assert_true(detect_needs_time(&d));
  bool flag = true;
  assert_close(detect_update(&d, 5, &flag), 0, 0); /* no time: ignored */
  assert_false(flag);
  assert_int_equal(d.n, 0);
  assert_close(detect_update_at(&d, NAN, 5, NULL), 0, 0);
  assert_int_equal(d.n, 0);
  /* local 06:00-12:00 is bucket 1; 2023-11-18 is a Saturday: weekend slots come after */
  double wed = DAY0 + 7 * 3600 + 6 * 3600, sat = DAY0 + 3 * 86400 + 7 * 3600 + 6 * 3600;
  for (int i = 0; i < 3; i++) {
    detect_update_at(&d, wed + 60 * i, 100 + i % 2, NULL);
    detect_update_at(&d, sat + 60 * i, 10 + i % 2, NULL);
  }
  assert_int_equal(d.season.count[1], 3);
  assert_int_equal(d.season.count[4 + 1], 3);
  assert_close(d.season.mean[1], 100 + 0.05 * 0.95, 1e-12); /* 100, 101, 100 */
  assert_false(detect_warm(&d));                            /* the other slots have seen nothing */
  /* a weekday value on the Saturday is abnormal, and on the Wednesday it is not */
  assert_true(detect_update_at(&d, sat + 300, 100, &flag) > 0.99 && flag);
  assert_true(detect_update_at(&d, wed + 300, 100.5, &flag) < 0.5 && !flag);
  /* bad options */
  o.buckets = 30;
  assert_int_equal(detect_init(&d, &o, err, sizeof(err)), -1);
  assert_string_equal(err, "buckets must be in [2, 24] with the weekend split, got 30");
  o.weekend = false;
  o.buckets = 1;
  assert_int_equal(detect_init(&d, &o, err, sizeof(err)), -1);
  assert_string_equal(err, "buckets must be in [2, 48], got 1");
  o.buckets = 48;
  o.utc_offset = 15 * 3600;
  assert_int_equal(detect_init(&d, &o, err, sizeof(err)), -1);
  assert_string_equal(err, "utc_offset must be within +/-50400 s, got 54000");
  o.utc_offset = 0;
  o.warmup = 70000;
  assert_int_equal(detect_init(&d, &o, err, sizeof(err)), -1);
  assert_string_equal(err, "warmup must be at most 65535 points a bucket, got 70000");
  /* the other kinds ignore the seasonal options (so their snapshots stay canonical) */
  detect_opts_default(&o, VG_DETECT_EWMA);
  o.buckets = 7;
  o.weekend = true;
  assert_int_equal(detect_init(&d, &o, err, sizeof(err)), 0);
  assert_int_equal(d.o.buckets, 0);
  assert_false(d.o.weekend);
  assert_false(detect_needs_time(&d));
  assert_string_equal(detect_kind_name(VG_DETECT_SEASONAL), "seasonal");
  assert_int_equal(detect_kind_parse("seasonal"), VG_DETECT_SEASONAL);
}

static void put_bytes(uint8_t **p, uint64_t v, int n)
{
  for (int i = 0; i < n; i++) {
    *(*p)++ = (uint8_t)(v >> (8 * i));
  }
}

static void put_f64(uint8_t **p, double v)
{
  uint64_t u;
  memcpy(&u, &v, sizeof(u));
  put_bytes(p, u, 8);
}

/* The version-1 layout, as builds before the seasonal kind wrote it (the fixture). */
static void snapshot_v1(const vg_detector_t *d, uint8_t *buf)
{
  static const uint8_t magic[4] = { 'V', 'G', 'D', 'S' };
  uint8_t *p = buf;
  memcpy(p, magic, sizeof(magic));
  p += sizeof(magic);
  put_bytes(&p, 1, 4);
  put_bytes(&p, (uint64_t)d->o.kind, 4);
  put_bytes(&p, d->o.window, 4);
  put_bytes(&p, d->o.warmup, 4);
  put_bytes(&p, d->head, 4);
  const double f[] = { d->o.alpha,     d->o.threshold, d->o.cusum_k, d->o.cusum_h,
                       d->o.half_life, d->mean,        d->var,       d->cpos,
                       d->cneg,        d->peak,        d->decay };
  for (size_t i = 0; i < 11; i++) {
    put_f64(&p, f[i]);
  }
  put_bytes(&p, d->n, 8);
  for (int i = 0; i < VG_DETECT_WINDOW_MAX; i++) {
    put_f64(&p, d->ring[i]);
  }
  assert_int_equal(p - buf, VG_DETECT_SNAPSHOT_V1_SIZE);
}

static void test_snapshot_round_trip(void **state)
{
  (void)state;
  for (int k = 0; k <= VG_DETECT_SEASONAL; k++) {
    vg_detector_t a, b;
    init_kind(&a, (vg_detect_kind_t)k);
    lcg_state = 31;
    for (int i = 0; i < 2000; i++) { /* 5-minute points: a week of seasonal profile */
      detect_update_at(&a, 1700000000 + 300.0 * i, 5 * gauss() + (i > 1900 ? 30 : 0), NULL);
    }
    uint8_t blob[VG_DETECT_SNAPSHOT_SIZE];
    detect_snapshot(&a, blob);
    char err[128] = "";
    init_kind(&b, VG_DETECT_EWMA);
    if (detect_restore(&b, blob, sizeof(blob), err, sizeof(err)) != 0) {
      fail_msg("restore: %s", err);
    }
    assert_memory_equal(&a, &b, sizeof(a)); /* every field, the ring or profile included */
    if (k != VG_DETECT_SEASONAL) {          /* version 1 blobs still load */
      uint8_t old[VG_DETECT_SNAPSHOT_V1_SIZE];
      snapshot_v1(&a, old);
      init_kind(&b, VG_DETECT_EWMA);
      if (detect_restore(&b, old, sizeof(old), err, sizeof(err)) != 0) {
        fail_msg("restore v1: %s", err);
      }
      assert_memory_equal(&a, &b, sizeof(a));
    }
    for (int i = 0; i < 100; i++) {
      double v = 5 * gauss() + 30, ts = 1700000000 + 300.0 * (2000 + i);
      assert_true(detect_update_at(&a, ts, v, NULL) == detect_update_at(&b, ts, v, NULL));
    }
  }
  vg_detector_t d, before;
  init_kind(&d, VG_DETECT_DEFAULT);
  uint8_t blob[VG_DETECT_SNAPSHOT_SIZE];
  detect_snapshot(&d, blob);
  memcpy(&before, &d, sizeof(d));
  char err[128] = "";
  assert_int_equal(detect_restore(&d, blob, sizeof(blob) - 1, err, sizeof(err)), -1);
  assert_string_equal(err, "not a detector snapshot");
  assert_int_equal(detect_restore(&d, blob, VG_DETECT_SNAPSHOT_V1_SIZE, err, sizeof(err)), -1);
  assert_string_equal(err, "not a detector snapshot"); /* says 2, has the size of a 1 */
  blob[4] = 3;
  assert_int_equal(detect_restore(&d, blob, sizeof(blob), err, sizeof(err)), -1);
  assert_string_equal(err, "detector snapshot version 3, this build reads 1 and 2");
  blob[4] = 2;
  blob[12] = 200; /* window 200 */
  assert_int_equal(detect_restore(&d, blob, sizeof(blob), err, sizeof(err)), -1);
  assert_string_equal(err, "window must be in [3, 64], got 200");
  blob[12] = 64;
  memset(blob + (size_t)(36 + 6 * 8), 0xff, 8); /* the variance: NaN */
  assert_int_equal(detect_restore(&d, blob, sizeof(blob), err, sizeof(err)), -1);
  assert_string_equal(err, "corrupt detector snapshot (state out of range)");
  assert_memory_equal(&d, &before, sizeof(d)); /* failures leave the detector alone */
  /* a seasonal profile with a negative variance is refused too */
  vg_detector_t s;
  init_kind(&s, VG_DETECT_SEASONAL);
  detect_snapshot(&s, blob);
  double neg = -1;
  memcpy(blob + (size_t)(36 + 11 * 8 + 8 + VG_DETECT_SEASON_MAX * 8), &neg, 8); /* var[0] */
  assert_int_equal(detect_restore(&d, blob, sizeof(blob), err, sizeof(err)), -1);
  assert_string_equal(err, "corrupt detector snapshot (state out of range)");
}

static void test_registry_keeps_named_series(void **state)
{
  (void)state;
  vg_series_registry_t *r = detect_registry_new(3000);
  assert_non_null(r);
  vg_detect_opts_t o;
  detect_opts_default(&o, VG_DETECT_DEFAULT);
  char err[128] = "", name[32];
  for (int i = 0; i < 3000; i++) { /* enough to rehash several times */
    snprintf(name, sizeof(name), "series-%d", i);
    assert_non_null(detect_registry_add(r, name, &o, err, sizeof(err)));
  }
  assert_int_equal(detect_registry_count(r), 3000);
  assert_null(detect_registry_add(r, "one more", &o, err, sizeof(err)));
  assert_string_equal(err, "too many series (3000)");
  assert_null(detect_registry_add(r, "series-7", &o, err, sizeof(err)));
  assert_string_equal(err, "series \"series-7\" exists already");
  vg_series_t *s = detect_registry_get(r, "series-2999");
  assert_non_null(s);
  assert_string_equal(detect_series_name(s), "series-2999");
  assert_true(isnan(detect_series_last_ts(s)));
  detect_series_update(s, 1.0, 1700000000, NULL);
  detect_series_update(s, 1.0, NAN, NULL);
  assert_int_equal(detect_series_updates(s), 2);
  assert_close(detect_series_last_ts(s), 1700000000, 0);
  assert_int_equal(detect_series_detector(s)->n, 2);
  assert_ptr_equal(detect_registry_get(r, "series-2999"), s); /* the same live object */
  assert_null(detect_registry_get(r, "series-3000"));
  detect_registry_free(r);
}

typedef struct {
  int calls;
  char names[4][32];
  uint8_t blobs[4][VG_DETECT_SERIES_HEADER + VG_DETECT_SNAPSHOT_SIZE];
  size_t lens[4];
} emitted_t;

static void collect_into(void *ctx, const char *name, const void *blob, size_t len)
{
  emitted_t *e = ctx;
  assert_true(e->calls < 4 && len <= sizeof(e->blobs[0]));
  snprintf(e->names[e->calls], sizeof(e->names[0]), "%s", name);
  memcpy(e->blobs[e->calls], blob, len);
  e->lens[e->calls++] = len;
}

static void test_registry_collects_what_changed(void **state)
{
  (void)state;
  vg_series_registry_t *r = detect_registry_new(10);
  vg_detect_opts_t o;
  detect_opts_default(&o, VG_DETECT_EWMA);
  char err[160] = "";
  vg_series_t *a = detect_registry_add(r, "a", &o, err, sizeof(err));
  vg_series_t *b = detect_registry_add(r, "b", &o, err, sizeof(err));
  emitted_t e = { 0 };
  assert_int_equal(detect_registry_collect(r, collect_into, &e), 2); /* created */
  e.calls = 0;
  assert_int_equal(detect_registry_collect(r, collect_into, &e), 0); /* nothing since */
  lcg_state = 5;
  for (int i = 0; i < 50; i++) {
    detect_series_update(a, 10 + gauss(), 1700000000 + 60.0 * i, NULL);
  }
  assert_int_equal(detect_registry_collect(r, collect_into, &e), 1);
  assert_string_equal(e.names[0], "a");
  detect_series_reset(b);
  assert_int_equal(detect_registry_collect(r, collect_into, &e), 1);
  assert_string_equal(e.names[1], "b");

  /* a second registry (a restart) resumes "a" exactly, count and last ts included */
  vg_series_registry_t *r2 = detect_registry_new(10);
  assert_int_equal(detect_registry_restore(r2, "a", e.blobs[0], e.lens[0], err, sizeof(err)), 0);
  vg_series_t *a2 = detect_registry_get(r2, "a");
  assert_non_null(a2);
  assert_int_equal(detect_series_updates(a2), 50);
  assert_close(detect_series_last_ts(a2), 1700000000 + 60.0 * 49, 0);
  assert_int_equal(detect_series_detector(a2)->o.kind, VG_DETECT_EWMA);
  assert_int_equal(detect_registry_collect(r2, collect_into, &e), 0); /* restored is clean */
  for (int i = 0; i < 20; i++) {
    double v = 10 + 3 * gauss();
    assert_true(detect_series_update(a, v, NAN, NULL) == detect_series_update(a2, v, NAN, NULL));
  }
  /* restoring over an existing series replaces its state */
  assert_int_equal(detect_registry_restore(r2, "a", e.blobs[1], e.lens[1], err, sizeof(err)), 0);
  assert_ptr_equal(detect_registry_get(r2, "a"), a2);
  assert_int_equal(detect_series_updates(a2), 0);
  assert_int_equal(detect_series_detector(a2)->n, 0);
  /* a bare detector snapshot is accepted too: its point count becomes the update count */
  uint8_t bare[VG_DETECT_SNAPSHOT_SIZE];
  detect_snapshot(detect_series_detector(a), bare);
  assert_int_equal(detect_registry_restore(r2, "bare", bare, sizeof(bare), err, sizeof(err)), 0);
  assert_int_equal(detect_series_updates(detect_registry_get(r2, "bare")), 70);
  assert_true(isnan(detect_series_last_ts(detect_registry_get(r2, "bare"))));

  /* bad blobs and names: errors, nothing created */
  assert_int_equal(detect_registry_restore(r2, "c", "VGSS", 4, err, sizeof(err)), -1);
  assert_string_equal(err, "series snapshot \"c\": truncated");
  assert_int_equal(detect_registry_restore(r2, "c", e.blobs[0], e.lens[0] - 1, err, sizeof(err)),
                   -1);
  assert_string_equal(err, "series snapshot \"c\": not a detector snapshot");
  e.blobs[0][4] = 9;
  assert_int_equal(detect_registry_restore(r2, "c", e.blobs[0], e.lens[0], err, sizeof(err)), -1);
  assert_string_equal(err, "series snapshot \"c\": version 9, this build reads 1");
  assert_int_equal(detect_registry_restore(r2, "", bare, sizeof(bare), err, sizeof(err)), -1);
  assert_string_equal(err, "a series name has 1 to 1024 bytes");
  assert_null(detect_registry_get(r2, "c"));
  assert_int_equal(detect_registry_count(r2), 2);
  detect_registry_free(r2);
  detect_registry_free(r);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_score_scale),
    cmocka_unit_test(test_zscore5_is_the_seed_rule),
    cmocka_unit_test(test_ewma_flags_a_spike_not_noise),
    cmocka_unit_test(test_robust_ignores_outliers_in_its_window),
    cmocka_unit_test(test_cusum_finds_a_small_level_shift),
    cmocka_unit_test(test_default_reports_the_onset),
    cmocka_unit_test(test_nan_is_ignored),
    cmocka_unit_test(test_copied_state_resumes_identically),
    cmocka_unit_test(test_bad_options),
    cmocka_unit_test(test_seasonal_learns_the_daily_cycle),
    cmocka_unit_test(test_seasonal_needs_time_and_splits_weekends),
    cmocka_unit_test(test_snapshot_round_trip),
    cmocka_unit_test(test_registry_keeps_named_series),
    cmocka_unit_test(test_registry_collects_what_changed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
