/* bench/logs: runs the template miner over one file of log messages (one per line, headers
 * already stripped) and either writes each line's cluster id and final template (for run.py to
 * score) or measures throughput with the lines repeated to at least --lines N. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/logmine.h"

typedef struct {
  char **line;
  size_t *len;
  size_t n, cap;
} lines_t;

static int read_lines(const char *path, lines_t *L)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    perror(path);
    return -1;
  }
  char *buf = NULL;
  size_t bcap = 0;
  ssize_t r;
  while ((r = getline(&buf, &bcap, f)) >= 0) {
    size_t n = (size_t)r;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
      n--;
    }
    if (L->n == L->cap) {
      L->cap = L->cap ? 2 * L->cap : 1024;
      L->line = realloc(L->line, L->cap * sizeof *L->line);
      L->len = realloc(L->len, L->cap * sizeof *L->len);
      if (L->line == NULL || L->len == NULL) {
        fclose(f);
        free(buf);
        return -1;
      }
    }
    L->line[L->n] = malloc(n + 1);
    if (L->line[L->n] == NULL) {
      fclose(f);
      free(buf);
      return -1;
    }
    memcpy(L->line[L->n], buf, n);
    L->line[L->n][n] = '\0';
    L->len[L->n++] = n;
  }
  free(buf);
  fclose(f);
  return 0;
}

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
  size_t want = 0;
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--lines") == 0 && i + 1 < argc) {
      want = strtoull(argv[++i], NULL, 10);
    } else {
      path = argv[i];
    }
  }
  if (path == NULL) {
    fprintf(stderr, "usage: bench_logs [--lines N] FILE\n");
    return 2;
  }
  lines_t L = { 0 };
  if (read_lines(path, &L) != 0 || L.n == 0) {
    fprintf(stderr, "bench_logs: cannot read %s\n", path);
    return 1;
  }
  char err[128];
  vg_logmine_t *m = logmine_new(NULL, err, sizeof err);
  if (m == NULL) {
    fprintf(stderr, "bench_logs: %s\n", err);
    return 1;
  }
  int rc = 0;
  vg_logmine_result_t res;
  if (want == 0) {
    uint64_t *ids = calloc(L.n, sizeof *ids);
    for (size_t i = 0; ids != NULL && i < L.n; i++) {
      vg_logmine_status_t s = logmine_add(m, L.line[i], L.len[i], &res);
      ids[i] = (s == VG_LOGMINE_MATCHED || s == VG_LOGMINE_CREATED) ? res.id : 0;
    }
    for (size_t i = 0; ids != NULL && i < L.n; i++) {
      vg_logmine_template_t t;
      if (ids[i] != 0 && logmine_get(m, ids[i], &t)) {
        printf("%llu\t%s\n", (unsigned long long)t.id, t.text); /* aliases resolve */
      } else {
        printf("0\t\n");
      }
    }
    rc = ids == NULL;
    free(ids);
  } else {
    size_t done = 0;
    double t0 = now();
    while (done < want) {
      for (size_t i = 0; i < L.n; i++) {
        (void)logmine_add(m, L.line[i], L.len[i], &res);
      }
      done += L.n;
    }
    double dt = now() - t0;
    vg_logmine_stats_t st;
    logmine_stats(m, &st);
    printf("%zu %.6f %zu %zu\n", done, dt, st.clusters, st.bytes);
  }
  logmine_free(m);
  for (size_t i = 0; i < L.n; i++) {
    free(L.line[i]);
  }
  free(L.line);
  free(L.len);
  return rc;
}
