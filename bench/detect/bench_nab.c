/* bench/detect/bench_nab: runs one streaming detector over a NAB-format series
 * (timestamp,value) and writes "timestamp,value,anomaly_score" (scores with %.17g) for
 * bench/detect/nab, which adds NAB's labels and scores the results. With --throughput, measures
 * updates per second over many interleaved series for every kind, and the state size.
 *   bench_nab KIND FILE.csv     (KIND: default, ewma, robust, cusum, zscore5, seasonal)
 *   bench_nab --throughput
 * Timestamps ("YYYY-MM-DD HH:MM:SS", UTC) go to the detector: the seasonal kind needs them. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/detect.h"

static double cpu_s(void)
{
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int throughput(void)
{
  enum { SERIES = 10000, POINTS = 1000 };
  static vg_detector_t det[SERIES];
  double *vals = malloc(POINTS * sizeof(*vals));
  uint64_t s = 1;
  for (int i = 0; i < POINTS; i++) {
    s = s * 6364136223846793005u + 1442695040888963407u;
    vals[i] = 100.0 + (double)(s >> 44) / 1e3;
  }
  printf(
      "# %d series x %d points each, interleaved (point i of every series, then i+1); CPU "
      "time; state %zu bytes per series\n",
      SERIES, POINTS, sizeof(vg_detector_t));
  for (int k = 0; k <= VG_DETECT_SEASONAL; k++) {
    vg_detect_opts_t o;
    detect_opts_default(&o, (vg_detect_kind_t)k);
    for (int i = 0; i < SERIES; i++) {
      detect_init(&det[i], &o, NULL, 0);
    }
    double flags = 0, t0 = cpu_s();
    for (int p = 0; p < POINTS; p++) {
      for (int i = 0; i < SERIES; i++) {
        bool flag;
        detect_update_at(&det[i], 1700000000.0 + 300.0 * p, vals[(p + i) % POINTS], &flag);
        flags += flag;
      }
    }
    double dt = cpu_s() - t0;
    printf("THROUGHPUT|%s|%.0f|%.0f\n", detect_kind_name((vg_detect_kind_t)k),
           (double)SERIES * POINTS / dt, flags);
  }
  free(vals);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc == 2 && strcmp(argv[1], "--throughput") == 0) {
    return throughput();
  }
  if (argc != 3) {
    fprintf(stderr, "usage: bench_nab KIND FILE.csv | bench_nab --throughput\n");
    return 2;
  }
  int kind = detect_kind_parse(argv[1]);
  if (kind < 0) {
    fprintf(stderr, "bench_nab: unknown kind %s\n", argv[1]);
    return 2;
  }
  FILE *fp = fopen(argv[2], "r");
  if (fp == NULL) {
    fprintf(stderr, "bench_nab: %s: %s\n", argv[2], strerror(errno));
    return 1;
  }
  vg_detect_opts_t o;
  detect_opts_default(&o, (vg_detect_kind_t)kind);
  vg_detector_t d;
  char err[128];
  if (detect_init(&d, &o, err, sizeof(err)) != 0) {
    fprintf(stderr, "bench_nab: %s\n", err);
    return 1;
  }
  char *line = NULL;
  size_t cap = 0;
  bool header = true;
  while (getline(&line, &cap, fp) > 0) {
    if (header) {
      header = false;
      continue;
    }
    char *comma = strchr(line, ',');
    if (comma == NULL) {
      continue;
    }
    *comma = '\0';
    double v = strtod(comma + 1, NULL);
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(line, "%Y-%m-%d %H:%M:%S", &tm);
    double ts = end != NULL ? (double)timegm(&tm) : NAN;
    double score = detect_update_at(&d, ts, v, NULL);
    printf("%s,%.17g,%.17g\n", line, v, score);
  }
  free(line);
  fclose(fp);
  return 0;
}
