/* bench/exec: runs of /bin/true through the sandboxed executor (src/engine/exec.c: every tier
 * this kernel offers, output captured), through its exec server ("sandboxed") and with the
 * helper spawned per run ("spawned", executor.server = false), against two bare starts of
 * /bin/true on
 * the same libuv loop, stdio ignored: uv_spawn (libuv 1.44: fork) and posix_spawn watched by a
 * pidfd (a vfork-style clone, what the executor itself uses to start its helper: the floor).
 * Each phase keeps `conc` runs in flight until `runs` have completed and records every run's
 * latency (start to completion callback). Prints, for bench/exec/run.py,
 *   TIERS|<the executor's tiers>
 *   RES|<runner>|<conc>|<runs>|<wall s>|<runs/s>|<p50 ms>|<p99 ms>
 * once per runner and concurrency. Timings only: nothing here asserts one.
 * usage: bench_exec [-r] HELPER RUNS CONC...   (-r: the phases in the reverse order) */
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "engine/exec.h"

typedef enum { BARE_UV, BARE_POSIX, SANDBOXED } runner_t;

typedef struct {
  const char *name;
  runner_t runner;
  uv_loop_t *loop;
  vg_exec_t *ex;
  int runs, conc, started, finished, failed;
  double *lat; /* seconds, per completed run */
  uint64_t t0;
} phase_t;

typedef struct {
  phase_t *ph;
  uint64_t start;
  uv_process_t proc;
} bare_t;

typedef struct {
  phase_t *ph;
  uint64_t start;
  uv_poll_t poll;
  int pidfd;
} posix_t;

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double quantile(const double *v, int n, double q)
{
  int i = (int)(q * (n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

static void start_one(phase_t *ph);

static void completed(phase_t *ph, uint64_t start, bool ok)
{
  ph->lat[ph->finished++] = (double)(uv_hrtime() - start) / 1e9;
  ph->failed += !ok;
  if (ph->started < ph->runs) {
    start_one(ph);
  }
}

static void bare_closed(uv_handle_t *h)
{
  free(h->data);
}

static void bare_exit(uv_process_t *p, int64_t status, int sig)
{
  bare_t *b = p->data;
  completed(b->ph, b->start, status == 0 && sig == 0);
  uv_close((uv_handle_t *)p, bare_closed);
}

static void posix_closed(uv_handle_t *h)
{
  posix_t *p = h->data;
  close(p->pidfd);
  free(p);
}

static void posix_exit(uv_poll_t *h, int status, int events)
{
  posix_t *p = h->data;
  siginfo_t si;
  memset(&si, 0, sizeof(si));
  if (waitid(P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid == 0) {
    return;
  }
  uv_poll_stop(h);
  completed(p->ph, p->start, si.si_code == CLD_EXITED && si.si_status == 0);
  uv_close((uv_handle_t *)h, posix_closed);
}

typedef struct {
  phase_t *ph;
  uint64_t start;
} sbx_t;

static void sbx_done(void *ud, const vg_exec_result_t *r)
{
  sbx_t *s = ud;
  if (r->error != NULL) {
    fprintf(stderr, "bench_exec: %s: %s\n", r->error, r->detail);
  }
  completed(s->ph, s->start, r->error == NULL && r->code == 0);
  free(s);
}

static void start_one(phase_t *ph)
{
  static const char *argv[] = { "/bin/true", NULL };
  ph->started++;
  if (ph->runner == BARE_UV) {
    bare_t *b = calloc(1, sizeof(*b));
    b->ph = ph;
    b->start = uv_hrtime();
    b->proc.data = b;
    uv_process_options_t o = { .exit_cb = bare_exit, .file = argv[0], .args = (char **)argv };
    int rc = uv_spawn(ph->loop, &b->proc, &o);
    if (rc != 0) {
      fprintf(stderr, "bench_exec: uv_spawn: %s\n", uv_strerror(rc));
      exit(1);
    }
    return;
  }
  if (ph->runner == BARE_POSIX) {
    posix_t *p = calloc(1, sizeof(*p));
    p->ph = ph;
    p->start = uv_hrtime();
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    for (int fd = 0; fd < 3; fd++) {
      posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", O_RDWR, 0);
    }
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    p->pidfd = rc == 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
    if (p->pidfd < 0) {
      fprintf(stderr, "bench_exec: posix_spawn/pidfd_open failed\n");
      exit(1);
    }
    uv_poll_init(ph->loop, &p->poll, p->pidfd);
    p->poll.data = p;
    uv_poll_start(&p->poll, UV_READABLE, posix_exit);
    return;
  }
  sbx_t *s = calloc(1, sizeof(*s));
  s->ph = ph;
  s->start = uv_hrtime();
  vg_exec_req_t req = { .argv = argv, .argc = 1 };
  char err[512];
  if (vg_exec_run(ph->ex, &req, sbx_done, s, err, sizeof(err)) == NULL) {
    fprintf(stderr, "bench_exec: %s\n", err);
    exit(1);
  }
}

static void phase(
    const char *name, runner_t runner, uv_loop_t *loop, vg_exec_t *ex, int runs, int conc)
{
  phase_t ph = {
    .name = name, .runner = runner, .loop = loop, .ex = ex, .runs = runs, .conc = conc
  };
  ph.lat = calloc((size_t)runs, sizeof(double));
  ph.t0 = uv_hrtime();
  for (int i = 0; i < conc && ph.started < runs; i++) {
    start_one(&ph);
  }
  while (ph.finished < runs) {
    uv_run(loop, UV_RUN_ONCE);
  }
  double wall = (double)(uv_hrtime() - ph.t0) / 1e9;
  qsort(ph.lat, (size_t)runs, sizeof(double), cmp_double);
  if (ph.failed > 0) {
    fprintf(stderr, "bench_exec: %s: %d runs failed\n", name, ph.failed);
    exit(1);
  }
  printf("RES|%s|%d|%d|%.4f|%.1f|%.3f|%.3f\n", name, conc, runs, wall, runs / wall,
         quantile(ph.lat, runs, 0.5) * 1e3, quantile(ph.lat, runs, 0.99) * 1e3);
  fflush(stdout);
  free(ph.lat);
}

int main(int argc, char **argv)
{
  bool reverse = argc > 1 && strcmp(argv[1], "-r") == 0;
  if (reverse) {
    argv++;
    argc--;
  }
  if (argc < 4) {
    fprintf(stderr, "usage: bench_exec [-r] HELPER RUNS CONC...\n");
    return 2;
  }
  int runs = atoi(argv[2]);
  uv_loop_t loop;
  uv_loop_init(&loop);
  const char *allow[] = { "/bin/true" };
  vg_exec_opts_t o = { .helper = argv[1], .allow = allow, .nallow = 1, .server = true };
  char err[512];
  vg_exec_t *ex = vg_exec_new(&loop, &o, err, sizeof(err));
  o.server = false;
  vg_exec_t *spx = ex != NULL ? vg_exec_new(&loop, &o, err, sizeof(err)) : NULL;
  if (spx == NULL) {
    fprintf(stderr, "bench_exec: %s\n", err);
    return 1;
  }
  if (!vg_exec_server_info(ex)->enabled) {
    fprintf(stderr, "bench_exec: no exec server: %s\n", vg_exec_server_info(ex)->fallback);
    return 1;
  }
  printf("TIERS|%s\n", vg_exec_tiers(ex)->summary);
  for (int i = 3; i < argc; i++) {
    int conc = atoi(argv[i]);
    phase("warm-up", SANDBOXED, &loop, ex, conc * 2, conc); /* bench/exec/run.py skips it */
    phase("warm-up", SANDBOXED, &loop, spx, conc * 2, conc);
    if (reverse) {
      phase("sandboxed", SANDBOXED, &loop, ex, runs, conc);
      phase("spawned", SANDBOXED, &loop, spx, runs, conc);
      phase("posix_spawn", BARE_POSIX, &loop, NULL, runs, conc);
      phase("uv_spawn", BARE_UV, &loop, NULL, runs, conc);
    } else {
      phase("uv_spawn", BARE_UV, &loop, NULL, runs, conc);
      phase("posix_spawn", BARE_POSIX, &loop, NULL, runs, conc);
      phase("spawned", SANDBOXED, &loop, spx, runs, conc);
      phase("sandboxed", SANDBOXED, &loop, ex, runs, conc);
    }
  }
  vg_exec_free(ex);
  vg_exec_free(spx);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) == 0 ? 0 : 1;
}
