/* bench/detect/bench_iforest: vigil's isolation forest on one ODDS-format CSV (f0..f{d-1},label)
 * with the paper's protocol: fit on all rows, score all rows, ROC AUC against the label. Prints
 * one line per seed, "SEED|seed|auc|fit_ms|score_ms", for bench/detect/iforest.py, which runs
 * scikit-learn beside it. Also "FIT256|ms": the median fit of 100 trees x 256 samples. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "engine/iforest.h"

static void die(const char *what, const char *detail)
{
  fprintf(stderr, "bench_iforest: %s: %s\n", what, detail ? detail : "");
  exit(1);
}

static double now_ms(void)
{
  return (double)uv_hrtime() / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
  qsort(v, n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Reads the CSV: x (n x d, row-major) and labels. */
static void load(const char *path, double **xo, int **yo, size_t *no, size_t *dout)
{
  FILE *fp = fopen(path, "r");
  if (fp == NULL) {
    die(path, strerror(errno));
  }
  char *line = NULL;
  size_t cap = 0;
  if (getline(&line, &cap, fp) < 0) {
    die(path, "empty");
  }
  size_t cols = 1;
  for (char *p = line; *p; p++) {
    cols += *p == ',';
  }
  size_t d = cols - 1, n = 0, ncap = 1024;
  double *x = malloc(ncap * d * sizeof(*x));
  int *y = malloc(ncap * sizeof(*y));
  while (getline(&line, &cap, fp) > 0) {
    if (n == ncap) {
      ncap *= 2;
      x = realloc(x, ncap * d * sizeof(*x));
      y = realloc(y, ncap * sizeof(*y));
    }
    if (x == NULL || y == NULL) {
      die("load", "out of memory");
    }
    char *p = line, *end;
    for (size_t j = 0; j < d; j++) {
      x[n * d + j] = strtod(p, &end);
      if (end == p || *end != ',') {
        die(path, "bad number");
      }
      p = end + 1;
    }
    y[n++] = (int)strtol(p, NULL, 10);
  }
  free(line);
  fclose(fp);
  *xo = x;
  *yo = y;
  *no = n;
  *dout = d;
}

typedef struct {
  double s;
  int y;
} scored_t;

static int cmp_scored(const void *a, const void *b)
{
  double x = ((const scored_t *)a)->s, y = ((const scored_t *)b)->s;
  return x < y ? -1 : x > y;
}

/* ROC AUC by average ranks (ties share their mean rank), as sklearn's roc_auc_score. */
static double auc(const double *s, const int *y, size_t n)
{
  scored_t *v = malloc(n * sizeof(*v));
  for (size_t i = 0; i < n; i++) {
    v[i] = (scored_t){ s[i], y[i] };
  }
  qsort(v, n, sizeof(*v), cmp_scored);
  double rank_sum = 0, npos = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && v[j].s == v[i].s) {
      j++;
    }
    double r = (double)(i + j + 1) / 2.0; /* mean of ranks i+1..j */
    for (size_t k = i; k < j; k++) {
      if (v[k].y) {
        rank_sum += r;
        npos++;
      }
    }
    i = j;
  }
  free(v);
  double nneg = (double)n - npos;
  return (rank_sum - npos * (npos + 1) / 2) / (npos * nneg);
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    fprintf(stderr, "usage: bench_iforest FILE.csv [seeds=5]\n");
    return 2;
  }
  int seeds = argc > 2 ? atoi(argv[2]) : 5;
  double *x;
  int *y;
  size_t n, d;
  load(argv[1], &x, &y, &n, &d);
  double *s = malloc(n * sizeof(*s));
  char err[128];
  for (int seed = 0; seed < seeds; seed++) {
    vg_iforest_opts_t o;
    iforest_opts_default(&o);
    o.random_state = (uint64_t)seed;
    double t0 = now_ms();
    vg_iforest_t *f = iforest_fit(x, n, d, &o, err, sizeof(err));
    double t1 = now_ms();
    if (f == NULL) {
      die("fit", err);
    }
    iforest_score(f, x, n, s);
    double t2 = now_ms();
    printf("SEED|%d|%.6f|%.3f|%.3f\n", seed, auc(s, y, n), t1 - t0, t2 - t1);
    iforest_free(f);
  }
  /* fit of 100 trees x 256 samples (the sample is drawn from all rows) */
  double fits[21];
  for (int r = 0; r < 21; r++) {
    vg_iforest_opts_t o;
    iforest_opts_default(&o);
    o.random_state = (uint64_t)r;
    double t0 = now_ms();
    vg_iforest_t *f = iforest_fit(x, n, d, &o, err, sizeof(err));
    fits[r] = now_ms() - t0;
    iforest_free(f);
  }
  printf("FIT|%.3f\n", median(fits, 21));
  free(s);
  free(x);
  free(y);
  return 0;
}
