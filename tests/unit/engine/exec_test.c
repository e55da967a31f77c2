/* Tests for src/engine/exec.c and its helper vigil-exec (src/exec/), with real processes on a
 * real loop: the allowlist, the environment, each rlimit as the child sees it, fd hygiene, no
 * new privileges against a setuid-root binary, Landlock (files and TCP ports), seccomp,
 * stopping a whole tree (setsid escapees included) on timeout, after the target exits and on
 * cancel, SIGKILL after the grace, the output cap, stdin, exec failures, tier modes and many
 * runs at once; the exec server (runs through it, killed and restarted, killed with a run in
 * flight, no zombies after many runs) and the helper-per-run path, which the tree tests also
 * run on (executor.server = false, a server that cannot start or keeps dying). The helper is found
 * next to $VIGIL (ctest sets it); /bin/sh builds children here, the executor itself never runs a
 * shell. Needs root for the uid and setuid tests. */
#include "engine/exec.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "test_support.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
/* cmocka 1.1 has no skip with a message: say why, then skip. */
#define SKIP(...)               \
  do {                          \
    print_message("skipped: "); \
    print_message(__VA_ARGS__); \
    print_message("\n");        \
    skip();                     \
  } while (0)

static uv_loop_t loop;
static bool spawn_mode; /* make() leaves the exec server off: the helper per run */
static char logbuf[16384];
static char helper[PATH_MAX];
static char fixtures[PATH_MAX / 2];
static char tmp[64]; /* this test's directory: scratch dirs and files outside them */

typedef struct {
  int calls;
  int code, signal;
  char *out, *err;
  size_t out_len, err_len;
  bool out_trunc, err_trunc, timed_out;
  char killed[32], error[32], detail[512], tiers[256], notes[512];
  double duration;
} outcome_t;

static void outcome_free(outcome_t *o)
{
  free(o->out);
  free(o->err);
  memset(o, 0, sizeof(*o));
}

static char *dup_bytes(const char *p, size_t n)
{
  char *d = malloc(n + 1);
  assert_non_null(d);
  memcpy(d, p, n);
  d[n] = '\0';
  return d;
}

static void on_done(void *ud, const vg_exec_result_t *r)
{
  outcome_t *o = ud;
  o->calls++;
  o->code = r->code;
  o->signal = r->signal;
  o->out = dup_bytes(r->stdout_data, r->stdout_len);
  o->err = dup_bytes(r->stderr_data, r->stderr_len);
  o->out_len = r->stdout_len;
  o->err_len = r->stderr_len;
  o->out_trunc = r->stdout_truncated;
  o->err_trunc = r->stderr_truncated;
  o->timed_out = r->timed_out;
  snprintf(o->killed, sizeof(o->killed), "%s", r->killed ? r->killed : "");
  snprintf(o->error, sizeof(o->error), "%s", r->error ? r->error : "");
  snprintf(o->detail, sizeof(o->detail), "%s", r->detail ? r->detail : "");
  snprintf(o->tiers, sizeof(o->tiers), "%s", r->tiers);
  snprintf(o->notes, sizeof(o->notes), "%s", r->notes);
  o->duration = r->duration;
}

static void test_log(void *ud, const char *msg)
{
  (void)ud;
  size_t len = strlen(logbuf);
  snprintf(logbuf + len, sizeof(logbuf) - len, "%s\n", msg);
}

/* An executor over opts with the helper, a fresh scratch directory and the log filled in. */
static vg_exec_t *make_on(uv_loop_t *on, vg_exec_opts_t *o)
{
  o->server = !spawn_mode;
  if (o->log == NULL) {
    o->log = test_log;
  }
  static int n;
  char scratch[PATH_MAX];
  snprintf(scratch, sizeof(scratch), "%s/scratch%d", tmp, n++);
  if (o->helper == NULL) {
    o->helper = helper;
  }
  if (o->scratch == NULL) {
    o->scratch = scratch;
  }
  char err[512];
  vg_exec_t *ex = vg_exec_new(on, o, err, sizeof(err));
  if (ex == NULL) {
    fail_msg("vg_exec_new: %s", err);
  }
  o->scratch = NULL;
  return ex;
}

static vg_exec_t *make(vg_exec_opts_t *o)
{
  return make_on(&loop, o);
}

static void run_req(vg_exec_t *ex, const vg_exec_req_t *req, outcome_t *o)
{
  memset(o, 0, sizeof(*o));
  char err[512];
  vg_exec_run_t *r = vg_exec_run(ex, req, on_done, o, err, sizeof(err));
  if (r == NULL) {
    fail_msg("vg_exec_run %s: %s", req->argv[0], err);
  }
  while (o->calls == 0) {
    uv_run(&loop, UV_RUN_ONCE);
  }
  assert_int_equal(o->calls, 1);
}

static void run_argv(vg_exec_t *ex, const char *const *argv, size_t argc, outcome_t *o)
{
  vg_exec_req_t req = { .argv = argv, .argc = argc };
  run_req(ex, &req, o);
}

/* Frees the executor and runs the loop until every handle is closed. */
static void done_with(vg_exec_t *ex)
{
  vg_exec_free(ex);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_alive(&loop), 0);
}

/* Processes whose command line holds marker. */
static int count_marker(const char *marker)
{
  DIR *d = opendir("/proc");
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') {
      continue;
    }
    char path[300], buf[4096];
    snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
      continue;
    }
    ssize_t len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    for (ssize_t i = 0; i < len; i++) {
      buf[i] = buf[i] == '\0' ? ' ' : buf[i];
    }
    buf[len > 0 ? len : 0] = '\0';
    n += strstr(buf, marker) != NULL;
  }
  closedir(d);
  return n;
}

static char *marker(void)
{
  static char m[64];
  static int n;
  snprintf(m, sizeof(m), "vigil-exec-test-%d-%d", (int)getpid(), n++);
  return m;
}

/* ---- creation ---- */

static void test_new_errors(void **state)
{
  (void)state;
  char err[512];
  const char *rel[] = { "bin/true" };
  vg_exec_opts_t o = { .helper = helper, .allow = rel, .nallow = 1, .scratch = tmp };
  assert_null(vg_exec_new(&loop, &o, err, sizeof(err)));
  assert_non_null(strstr(err, "bin/true"));
  assert_non_null(strstr(err, "absolute"));

  const char *missing[] = { "/bin/true", "/nonexistent/vigil-tool" };
  o.allow = missing;
  o.nallow = 2;
  assert_null(vg_exec_new(&loop, &o, err, sizeof(err)));
  assert_non_null(strstr(err, "/nonexistent/vigil-tool"));

  const char *notexec[] = { "/etc/passwd" };
  o.allow = notexec;
  o.nallow = 1;
  assert_null(vg_exec_new(&loop, &o, err, sizeof(err)));
  assert_non_null(strstr(err, "/etc/passwd"));

  o.allow = NULL;
  o.nallow = 0;
  o.helper = "/nonexistent/vigil-exec";
  assert_null(vg_exec_new(&loop, &o, err, sizeof(err)));
  assert_non_null(strstr(err, "/nonexistent/vigil-exec"));

  o.helper = helper;
  o.user = "no-such-user-vigil";
  assert_null(vg_exec_new(&loop, &o, err, sizeof(err)));
  assert_non_null(strstr(err, "no-such-user-vigil"));
  assert_int_equal(uv_loop_alive(&loop), 0);
}

static void test_modes(void **state)
{
  (void)state;
  char err[512];
  vg_exec_opts_t o = { .helper = helper, .scratch = tmp };
  o.landlock = VG_EXEC_REQUIRE;
  o.pretend = VG_EXEC_PRETEND_NO_LANDLOCK;
  assert_null(vg_exec_new(&loop, &o, err, sizeof(err)));
  assert_non_null(strstr(err, "ESANDBOX: landlock is required"));

  o.landlock = VG_EXEC_AUTO;
  o.seccomp = VG_EXEC_REQUIRE;
  o.pretend = VG_EXEC_PRETEND_NO_SECCOMP;
  assert_null(vg_exec_new(&loop, &o, err, sizeof(err)));
  assert_non_null(strstr(err, "ESANDBOX: seccomp is required"));

  /* auto falls back and says so, in the tiers and in every run's result */
  const char *allow[] = { "/bin/true" };
  o = (vg_exec_opts_t){ .allow = allow, .nallow = 1 };
  o.pretend = VG_EXEC_PRETEND_NO_LANDLOCK | VG_EXEC_PRETEND_NO_SECCOMP;
  vg_exec_t *ex = make(&o);
  const vg_exec_tiers_t *t = vg_exec_tiers(ex);
  assert_false(t->landlock);
  assert_false(t->seccomp);
  assert_null(strstr(t->summary, "landlock"));
  assert_non_null(strstr(t->notes, "landlock: not available"));
  assert_non_null(strstr(t->notes, "seccomp: not available"));
  outcome_t r;
  run_argv(ex, allow, 1, &r);
  assert_int_equal(r.code, 0);
  assert_non_null(strstr(r.notes, "landlock: not available"));
  assert_non_null(strstr(r.tiers, "nnp"));
  assert_null(strstr(r.tiers, "seccomp"));
  outcome_free(&r);
  done_with(ex);

  o = (vg_exec_opts_t){
    .allow = allow, .nallow = 1, .landlock = VG_EXEC_OFF, .seccomp = VG_EXEC_OFF
  };
  ex = make(&o);
  assert_non_null(strstr(vg_exec_tiers(ex)->notes, "landlock: off by configuration"));
  assert_non_null(strstr(vg_exec_tiers(ex)->notes, "seccomp: off by configuration"));
  done_with(ex);

  /* everything this kernel has (the test machine: Landlock ABI 7 and seccomp) */
  o = (vg_exec_opts_t){
    .allow = allow, .nallow = 1, .landlock = VG_EXEC_REQUIRE, .seccomp = VG_EXEC_REQUIRE
  };
  ex = make(&o);
  t = vg_exec_tiers(ex);
  assert_true(t->landlock);
  assert_true(t->landlock_abi >= 1);
  assert_true(t->seccomp);
  assert_int_equal(t->uid, -1);
  print_message("tiers: %s (%s)\n", t->summary, t->notes);
  run_argv(ex, allow, 1, &r);
  assert_int_equal(r.code, 0);
  assert_non_null(strstr(r.tiers, "seccomp"));
  assert_non_null(strstr(r.tiers, "landlock="));
  outcome_free(&r);
  done_with(ex);
}

/* ---- what is allowed to run ---- */

static void test_allowlist(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/echo", "/bin/sh" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 2 };
  vg_exec_t *ex = make(&o);
  char err[512];
  outcome_t r = { 0 };
  const char *cat[] = { "/bin/cat", "/etc/hostname" };
  vg_exec_req_t req = { .argv = cat, .argc = 2 };
  assert_null(vg_exec_run(ex, &req, on_done, &r, err, sizeof(err)));
  assert_true(strncmp(err, "EDENIED: ", 9) == 0);
  assert_non_null(strstr(err, "/bin/cat"));

  const char *rel[] = { "echo", "hi" };
  req.argv = rel;
  assert_null(vg_exec_run(ex, &req, on_done, &r, err, sizeof(err)));
  assert_true(strncmp(err, "EDENIED: ", 9) == 0);

  /* a path that resolves to an allowlisted file is that file */
  const char *dotted[] = { "/usr/../bin/echo", "same file" };
  run_argv(ex, dotted, 2, &r);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.out, "same file\n");
  outcome_free(&r);

  /* argv[0] stays what the caller gave, the file executed is the resolved one */
  const char *arg0[] = { "/bin/sh", "-c", "echo $0" };
  run_argv(ex, arg0, 3, &r);
  assert_string_equal(r.out, "/bin/sh\n");
  outcome_free(&r);

  const char *badenv[] = { "LD_PRELOAD=/tmp/x.so" };
  req = (vg_exec_req_t){ .argv = dotted, .argc = 2, .env = badenv, .nenv = 1 };
  assert_null(vg_exec_run(ex, &req, on_done, &r, err, sizeof(err)));
  assert_true(strncmp(err, "EINVAL: ", 8) == 0);
  const char *badname[] = { "1X=y" };
  req.env = badname;
  assert_null(vg_exec_run(ex, &req, on_done, &r, err, sizeof(err)));
  assert_true(strncmp(err, "EINVAL: ", 8) == 0);

  req = (vg_exec_req_t){ .argv = dotted, .argc = 2, .cwd = "/nonexistent-dir" };
  assert_null(vg_exec_run(ex, &req, on_done, &r, err, sizeof(err)));
  assert_true(strncmp(err, "EINVAL: ", 8) == 0);
  assert_int_equal(r.calls, 0);
  assert_int_equal(vg_exec_active(ex), 0);
  done_with(ex);
}

static void test_exit_code_signal_cwd(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/sh", "/bin/pwd" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 2 };
  vg_exec_t *ex = make(&o);
  outcome_t r;
  const char *sh[] = { "/bin/sh", "-c", "echo out; echo err >&2; exit 3" };
  run_argv(ex, sh, 3, &r);
  assert_int_equal(r.code, 3);
  assert_int_equal(r.signal, 0);
  assert_string_equal(r.out, "out\n");
  assert_string_equal(r.err, "err\n");
  assert_string_equal(r.error, "");
  assert_string_equal(r.killed, "");
  assert_false(r.timed_out);
  assert_true(r.duration > 0 && r.duration < 30);
  outcome_free(&r);

  const char *sig[] = { "/bin/sh", "-c", "kill -USR1 $$" };
  run_argv(ex, sig, 3, &r);
  assert_int_equal(r.code, -1);
  assert_int_equal(r.signal, SIGUSR1);
  outcome_free(&r);

  const char *pwd[] = { "/bin/pwd" };
  vg_exec_req_t req = { .argv = pwd, .argc = 1, .cwd = "/usr" };
  run_req(ex, &req, &r);
  assert_string_equal(r.out, "/usr\n");
  outcome_free(&r);
  req.cwd = NULL; /* the scratch directory */
  run_req(ex, &req, &r);
  char want[PATH_MAX + 2];
  snprintf(want, sizeof(want), "%s\n", vg_exec_scratch(ex));
  assert_string_equal(r.out, want);
  outcome_free(&r);
  done_with(ex);
}

static void test_env(void **state)
{
  (void)state;
  setenv("VIGIL_TEST_SECRET", "hunter2-secret", 1);
  setenv("LANG", "C.UTF-8", 1);
  const char *allow[] = { "/usr/bin/env" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1 };
  vg_exec_t *ex = make(&o);
  const char *env[] = { "EXTRA=1", "LANG=fr_FR.UTF-8" };
  vg_exec_req_t req = { .argv = allow, .argc = 1, .env = env, .nenv = 2 };
  outcome_t r;
  run_req(ex, &req, &r);
  assert_int_equal(r.code, 0);
  assert_null(strstr(r.out, "hunter2-secret"));
  assert_null(strstr(r.out, "VIGIL_TEST_SECRET"));
  assert_non_null(strstr(r.out, "EXTRA=1\n"));
  assert_non_null(strstr(r.out, "LANG=fr_FR.UTF-8\n")); /* the request's wins */
  assert_null(strstr(r.out, "LANG=C.UTF-8"));
  char tmpdir[PATH_MAX + 16];
  snprintf(tmpdir, sizeof(tmpdir), "TMPDIR=%s\n", vg_exec_scratch(ex));
  assert_non_null(strstr(r.out, tmpdir));
  if (getenv("PATH") != NULL) {
    assert_non_null(strstr(r.out, "PATH="));
  }
  outcome_free(&r);
  done_with(ex);

  /* an explicit allowlist replaces the default one */
  const char *names[] = { "VIGIL_TEST_SECRET" };
  o = (vg_exec_opts_t){ .allow = allow, .nallow = 1, .env_allow = names, .nenv_allow = 1 };
  ex = make(&o);
  run_argv(ex, allow, 1, &r);
  assert_non_null(strstr(r.out, "VIGIL_TEST_SECRET=hunter2-secret\n"));
  assert_null(strstr(r.out, "LANG="));
  outcome_free(&r);
  done_with(ex);
  unsetenv("VIGIL_TEST_SECRET");
}

/* ---- tiers, as the child sees them ---- */

/* The soft and hard values of a /proc/self/limits row. */
static void limit_row(const char *limits, const char *row, char *soft, char *hard)
{
  const char *p = strstr(limits, row);
  if (p == NULL) {
    fail_msg("no %s row in:\n%s", row, limits);
  }
  assert_int_equal(sscanf(p + strlen(row), " %31s %31s", soft, hard), 2);
}

static void expect_limit(const char *limits, const char *row, const char *value)
{
  char soft[32], hard[32];
  limit_row(limits, row, soft, hard);
  assert_string_equal(soft, value);
  assert_string_equal(hard, value);
}

static void test_rlimits(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/cat" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1 };
  vg_exec_t *ex = make(&o);
  const char *cat[] = { "/bin/cat", "/proc/self/limits" };
  outcome_t r;
  run_argv(ex, cat, 2, &r);
  assert_int_equal(r.code, 0);
  expect_limit(r.out, "Max cpu time", "60");
  expect_limit(r.out, "Max address space", "1073741824");
  expect_limit(r.out, "Max open files", "256");
  expect_limit(r.out, "Max file size", "67108864");
  expect_limit(r.out, "Max processes", "256");
  expect_limit(r.out, "Max core file size", "0");
  outcome_free(&r);
  done_with(ex);

  o = (vg_exec_opts_t){ .allow = allow, .nallow = 1 };
  o.limits = (vg_exec_limits_t){
    .cpu_s = 7, .as_bytes = 512u << 20, .nofile = 64, .fsize_bytes = 1u << 20, .nproc = 77
  };
  ex = make(&o);
  run_argv(ex, cat, 2, &r);
  expect_limit(r.out, "Max cpu time", "7");
  expect_limit(r.out, "Max address space", "536870912");
  expect_limit(r.out, "Max open files", "64");
  expect_limit(r.out, "Max file size", "1048576");
  expect_limit(r.out, "Max processes", "77");
  outcome_free(&r);
  done_with(ex);
}

static void test_fds_and_nnp_status(void **state)
{
  (void)state;
  /* an fd the test leaks on purpose (no O_CLOEXEC): the helper gets it, the target must not */
  int leak = open("/dev/null", O_RDONLY);
  assert_true(leak > 2);
  const char *allow[] = { "/bin/ls", "/bin/grep" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 2 };
  vg_exec_t *ex = make(&o);
  const char *ls[] = { "/bin/ls", "/proc/self/fd" };
  outcome_t r;
  run_argv(ex, ls, 2, &r);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.out, "0\n1\n2\n3\n"); /* 3: ls's own directory */
  outcome_free(&r);
  const char *grep[] = { "/bin/grep", "-E", "^(NoNewPrivs|Seccomp):", "/proc/self/status" };
  run_argv(ex, grep, 4, &r);
  assert_string_equal(r.out, "NoNewPrivs:\t1\nSeccomp:\t2\n");
  outcome_free(&r);
  done_with(ex);
  close(leak);
}

static bool copy_file(const char *from, const char *to)
{
  size_t len;
  char *data = test_read_file(from, &len);
  if (data == NULL) {
    return false;
  }
  FILE *f = fopen(to, "wb");
  bool ok = f != NULL && fwrite(data, 1, len, f) == len;
  ok = f != NULL && fclose(f) == 0 && ok;
  free(data);
  return ok;
}

/* Runs path as uid 65534 without the sandbox (no NNP) and returns its stdout's first line. */
static void run_as_nobody_bare(const char *path, char *out, size_t outlen)
{
  int p[2];
  assert_int_equal(pipe(p), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(p[1], 1);
    if (setgid(65534) != 0 || setuid(65534) != 0) {
      _exit(2);
    }
    execl(path, "id", "-u", (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  ssize_t n = read(p[0], out, outlen - 1);
  out[n > 0 ? n : 0] = '\0';
  close(p[0]);
  waitpid(pid, NULL, 0);
}

static void test_no_new_privs_setuid(void **state)
{
  (void)state;
  if (geteuid() != 0) {
    SKIP("needs root: cannot make a setuid-root binary");
  }
  char dir[128], id[256];
  snprintf(dir, sizeof(dir), "%s/suid", tmp);
  snprintf(id, sizeof(id), "%s/id", dir);
  assert_int_equal(mkdir(dir, 0755), 0);
  assert_true(copy_file("/usr/bin/id", id));
  assert_int_equal(chown(id, 0, 0), 0);
  assert_int_equal(chmod(id, 04755), 0);
  char bare[64];
  run_as_nobody_bare(id, bare, sizeof(bare));
  if (strcmp(bare, "0\n") != 0) {
    SKIP("setuid bits do not work under %s (nosuid?): got %s", tmp, bare);
  }
  const char *allow[] = { id };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1, .user = "nobody" };
  vg_exec_t *ex = make(&o);
  assert_int_equal(vg_exec_tiers(ex)->uid, 65534);
  const char *argv[] = { id, "-u" };
  outcome_t r;
  run_argv(ex, argv, 2, &r);
  assert_string_equal(r.error, "");
  assert_int_equal(r.code, 0);
  assert_string_equal(r.out, "65534\n"); /* without no_new_privs: 0 (the control above) */
  assert_non_null(strstr(r.tiers, "uid=65534"));
  outcome_free(&r);
  done_with(ex);
  unlink(id);
  rmdir(dir);
}

static void test_landlock_files(void **state)
{
  (void)state;
  char outside[PATH_MAX], script[3 * PATH_MAX];
  snprintf(outside, sizeof(outside), "%s/outside", tmp);
  mkdir(outside, 0755);
  const char *allow[] = { "/bin/sh" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1 };
  vg_exec_t *ex = make(&o);
  if (!vg_exec_tiers(ex)->landlock) {
    print_message("%s\n", vg_exec_tiers(ex)->notes);
    done_with(ex);
    SKIP("no Landlock on this kernel");
  }
  const char *scratch = vg_exec_scratch(ex);
  snprintf(script, sizeof(script),
           "echo a > %s/in.txt && echo in-ok; echo b > %s/out.txt || echo out-denied; "
           "echo c > /dev/null && echo null-ok; cat /etc/hostname > /dev/null && echo read-ok",
           scratch, outside);
  const char *argv[] = { "/bin/sh", "-c", script };
  outcome_t r;
  run_argv(ex, argv, 3, &r);
  assert_string_equal(r.out, "in-ok\nout-denied\nnull-ok\nread-ok\n");
  assert_non_null(strstr(r.err, "Permission denied"));
  char path[PATH_MAX + 16];
  struct stat sb;
  snprintf(path, sizeof(path), "%s/in.txt", scratch);
  assert_int_equal(stat(path, &sb), 0);
  unlink(path);
  snprintf(path, sizeof(path), "%s/out.txt", outside);
  assert_int_not_equal(stat(path, &sb), 0);
  outcome_free(&r);
  done_with(ex);

  /* the control: the same as root without Landlock writes there */
  o = (vg_exec_opts_t){ .allow = allow, .nallow = 1, .landlock = VG_EXEC_OFF };
  ex = make(&o);
  run_argv(ex, argv, 3, &r);
  assert_non_null(strstr(r.out, "in-ok\n"));
  assert_null(strstr(r.out, "out-denied"));
  assert_int_equal(stat(path, &sb), 0);
  unlink(path);
  snprintf(path, sizeof(path), "%s/in.txt", vg_exec_scratch(ex));
  unlink(path);
  outcome_free(&r);
  done_with(ex);
  rmdir(outside);
}

static int listener(uint16_t *port)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(fd, 16), 0);
  socklen_t len = sizeof(sa);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  *port = ntohs(sa.sin_port);
  return fd;
}

static void connect_from_bash(vg_exec_t *ex, uint16_t port, outcome_t *r)
{
  char script[128];
  snprintf(script, sizeof(script), "exec 3<>/dev/tcp/127.0.0.1/%u && echo connected",
           (unsigned)port);
  const char *argv[] = { "/bin/bash", "-c", script };
  run_argv(ex, argv, 3, r);
}

static void test_landlock_tcp(void **state)
{
  (void)state;
  uint16_t ok_port, other_port;
  int l1 = listener(&ok_port), l2 = listener(&other_port);
  const char *allow[] = { "/bin/bash" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1, .tcp_ports = &ok_port, .ntcp_ports = 1 };
  vg_exec_t *ex = make(&o);
  if (!vg_exec_tiers(ex)->landlock_net) {
    int abi = vg_exec_tiers(ex)->landlock_abi;
    close(l1);
    close(l2);
    done_with(ex);
    SKIP("no Landlock TCP rules on this kernel (ABI %d)", abi);
  }
  outcome_t r;
  connect_from_bash(ex, ok_port, &r);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.out, "connected\n");
  outcome_free(&r);
  connect_from_bash(ex, other_port, &r);
  assert_int_not_equal(r.code, 0);
  assert_string_equal(r.out, "");
  assert_non_null(strstr(r.err, "Permission denied"));
  outcome_free(&r);
  done_with(ex);

  /* without TCP rules (ABI 3) the fallback is said, and the port is reachable */
  o = (vg_exec_opts_t){ .allow = allow,
                        .nallow = 1,
                        .tcp_ports = &ok_port,
                        .ntcp_ports = 1,
                        .pretend = VG_EXEC_PRETEND_LANDLOCK_ABI3 };
  ex = make(&o);
  assert_false(vg_exec_tiers(ex)->landlock_net);
  assert_non_null(strstr(vg_exec_tiers(ex)->notes, "no TCP rules"));
  connect_from_bash(ex, other_port, &r);
  assert_string_equal(r.out, "connected\n");
  assert_non_null(strstr(r.notes, "no TCP rules"));
  outcome_free(&r);
  done_with(ex);

  /* tcp_any: no rule at all */
  o = (vg_exec_opts_t){ .allow = allow, .nallow = 1, .tcp_any = true };
  ex = make(&o);
  connect_from_bash(ex, other_port, &r);
  assert_string_equal(r.out, "connected\n");
  outcome_free(&r);
  done_with(ex);
  close(l1);
  close(l2);
}

/* The probe's lines as one string, "name=value " each. */
static void probe(vg_exec_t *ex, const char *const *names, size_t n, outcome_t *r)
{
  char script[PATH_MAX];
  snprintf(script, sizeof(script), "%s/seccomp_probe.py", fixtures);
  const char *argv[16] = { "/usr/bin/python3", script };
  for (size_t i = 0; i < n; i++) {
    argv[2 + i] = names[i];
  }
  run_argv(ex, argv, 2 + n, r);
  assert_int_equal(r->code, 0);
}

static void test_seccomp(void **state)
{
  (void)state;
  const char *allow[] = { "/usr/bin/python3", "/usr/bin/unshare" };
  /* Landlock off: it also refuses ptrace out of its domain, and the point is the filter. */
  vg_exec_opts_t o = { .allow = allow, .nallow = 2, .landlock = VG_EXEC_OFF };
  vg_exec_t *ex = make(&o);
  if (!vg_exec_tiers(ex)->seccomp) {
    print_message("%s\n", vg_exec_tiers(ex)->notes);
    done_with(ex);
    SKIP("no seccomp on this kernel");
  }
  outcome_t r;
  probe(ex, NULL, 0, &r);
  print_message("with the filter: %s", r.out);
  static const char *const denied[] = { "raw=EPERM",      "unix_raw=EPERM", "packet=EPERM",
                                        "ptrace=EPERM",   "mount=EPERM",    "bpf=EPERM",
                                        "io_uring=EPERM", "clone_ns=EPERM", "unshare=EPERM" };
  for (size_t i = 0; i < COUNT(denied); i++) {
    if (strstr(r.out, denied[i]) == NULL) {
      fail_msg("expected %s in:\n%s", denied[i], r.out);
    }
  }
  assert_non_null(strstr(r.out, "inet=ok\n"));
  assert_non_null(strstr(r.out, "inet6=ok\n"));
  assert_non_null(strstr(r.out, "unix=ok\n"));
  outcome_free(&r);
  const char *unshare[] = { "/usr/bin/unshare", "-U", "true" };
  run_argv(ex, unshare, 3, &r);
  assert_int_not_equal(r.code, 0);
  assert_non_null(strstr(r.err, "Operation not permitted"));
  outcome_free(&r);
  done_with(ex);

  /* the control: the same probes without the filter fail otherwise, or work */
  o = (vg_exec_opts_t){
    .allow = allow, .nallow = 2, .landlock = VG_EXEC_OFF, .seccomp = VG_EXEC_OFF
  };
  ex = make(&o);
  probe(ex, NULL, 0, &r);
  print_message("without: %s", r.out);
  static const char *const open_[] = { "unix_raw=ok", "ptrace=ESRCH", "mount=ENOENT", "clone_ns=ok",
                                       "unshare=ok" };
  for (size_t i = 0; i < COUNT(open_); i++) {
    if (strstr(r.out, open_[i]) == NULL) {
      fail_msg("expected %s in:\n%s", open_[i], r.out);
    }
  }
  outcome_free(&r);
  done_with(ex);
}

/* ---- stopping ---- */

static void test_timeout_kills_tree(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/sh" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1, .grace_ms = 3000 };
  vg_exec_t *ex = make(&o);
  char *m = marker();
  char script[2 * PATH_MAX + 512], flag[PATH_MAX + 32];
  snprintf(flag, sizeof(flag), "%s/escapee-got-term", vg_exec_scratch(ex));
  /* a child in the group, a grandchild that left the session (it notes the SIGTERM it gets:
   * the tree is stopped gracefully, not only SIGKILLed after the grace), the shell waiting */
  snprintf(script, sizeof(script),
           "sh -c 'while :; do sleep 1; done' %s-child & "
           "setsid sh -c 'trap \"echo > %s; exit 0\" TERM; while :; do sleep 0.05; done' "
           "%s-escapee & echo started; wait",
           m, flag, m);
  const char *argv[] = { "/bin/sh", "-c", script };
  vg_exec_req_t req = { .argv = argv, .argc = 3, .timeout_ms = 400 };
  outcome_t r;
  run_req(ex, &req, &r);
  assert_true(r.timed_out);
  assert_string_equal(r.killed, "timeout");
  assert_int_equal(r.signal, SIGTERM);
  assert_string_equal(r.out, "started\n");
  assert_int_equal(count_marker(m), 0); /* reported only once the whole tree is gone */
  struct stat sb;
  assert_int_equal(stat(flag, &sb), 0);
  unlink(flag);
  outcome_free(&r);
  done_with(ex);
}

static void test_leftovers_after_exit(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/sh" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1, .grace_ms = 500 };
  vg_exec_t *ex = make(&o);
  char *m = marker();
  char script[256];
  snprintf(script, sizeof(script),
           "setsid sh -c 'while :; do sleep 1; done' %s </dev/null >/dev/null 2>&1 & exit 0", m);
  const char *argv[] = { "/bin/sh", "-c", script };
  outcome_t r;
  run_argv(ex, argv, 3, &r);
  assert_int_equal(r.code, 0);
  assert_false(r.timed_out);
  assert_non_null(strstr(r.notes, "leftover"));
  assert_int_equal(count_marker(m), 0);
  outcome_free(&r);
  done_with(ex);
}

static void test_sigkill_after_grace(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/sh" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1, .grace_ms = 300 };
  vg_exec_t *ex = make(&o);
  char *m = marker();
  char script[256];
  snprintf(script, sizeof(script), "trap '' TERM; echo ready; while :; do sleep 1; done # %s", m);
  const char *argv[] = { "/bin/sh", "-c", script };
  vg_exec_req_t req = { .argv = argv, .argc = 3, .timeout_ms = 300 };
  outcome_t r;
  run_req(ex, &req, &r);
  assert_true(r.timed_out);
  assert_int_equal(r.signal, SIGKILL);
  assert_true(r.duration >= 0.55); /* the timeout, then the whole grace */
  assert_int_equal(count_marker(m), 0);
  outcome_free(&r);
  done_with(ex);
}

typedef struct {
  vg_exec_run_t *run;
} cancel_ctx_t;

static void cancel_cb(uv_timer_t *t)
{
  cancel_ctx_t *c = t->data;
  vg_exec_cancel(c->run);
  uv_close((uv_handle_t *)t, NULL);
}

static void test_cancel_and_free(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/sh" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1, .grace_ms = 300 };
  vg_exec_t *ex = make(&o);
  char *m = marker();
  char script[256];
  snprintf(script, sizeof(script), "setsid sh -c 'while :; do sleep 1; done' %s & wait", m);
  const char *argv[] = { "/bin/sh", "-c", script };
  vg_exec_req_t req = { .argv = argv, .argc = 3 };
  outcome_t r = { 0 };
  char err[256];
  cancel_ctx_t c = { vg_exec_run(ex, &req, on_done, &r, err, sizeof(err)) };
  assert_non_null(c.run);
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  t.data = &c;
  uv_timer_start(&t, cancel_cb, 300, 0);
  while (vg_exec_active(ex) > 0) {
    uv_run(&loop, UV_RUN_ONCE);
  }
  assert_int_equal(r.calls, 0);
  assert_int_equal(count_marker(m), 0);

  /* freeing the executor with runs in flight stops them all, then the loop ends */
  m = marker();
  snprintf(script, sizeof(script), "setsid sh -c 'while :; do sleep 1; done' %s & wait", m);
  outcome_t rs[3] = { 0 };
  for (int i = 0; i < 3; i++) {
    assert_non_null(vg_exec_run(ex, &req, on_done, &rs[i], err, sizeof(err)));
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  done_with(ex);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rs[i].calls, 0);
  }
  assert_int_equal(count_marker(m), 0);
}

/* ---- input and output ---- */

static void test_output_cap(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/sh", "/usr/bin/yes", "/usr/bin/head" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 3, .max_output = 1000 };
  vg_exec_t *ex = make(&o);
  const char *yes[] = { "/usr/bin/yes", "vigil" };
  outcome_t r;
  run_argv(ex, yes, 2, &r);
  assert_int_equal(r.out_len, 1000);
  assert_true(r.out_trunc);
  assert_false(r.err_trunc);
  assert_string_equal(r.killed, "output cap");
  assert_false(r.timed_out);
  assert_true(r.signal == SIGTERM || r.signal == SIGPIPE);
  assert_true(strncmp(r.out, "vigil\nvigil\n", 12) == 0);
  outcome_free(&r);

  /* exactly the cap is not truncated */
  const char *head[] = { "/usr/bin/head", "-c", "1000", "/dev/zero" };
  run_argv(ex, head, 4, &r);
  assert_int_equal(r.code, 0);
  assert_int_equal(r.out_len, 1000);
  assert_false(r.out_trunc);
  assert_string_equal(r.killed, "");
  outcome_free(&r);

  /* stderr has its own cap; a request may lower it */
  const char *err2[] = { "/bin/sh", "-c", "head -c 5000 /dev/zero >&2; echo fine" };
  vg_exec_req_t req = { .argv = err2, .argc = 3, .max_output = 100 };
  run_req(ex, &req, &r);
  assert_int_equal(r.err_len, 100);
  assert_true(r.err_trunc);
  assert_string_equal(r.killed, "output cap");
  outcome_free(&r);
  done_with(ex);
}

static void test_stdin(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/cat", "/bin/true" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 2, .max_output = 4u << 20 };
  vg_exec_t *ex = make(&o);
  const char *cat[] = { "/bin/cat" };
  static const char small[] = "hello\0world";
  vg_exec_req_t req = { .argv = cat, .argc = 1, .stdin_data = small, .stdin_len = 11 };
  outcome_t r;
  run_req(ex, &req, &r);
  assert_int_equal(r.code, 0);
  assert_int_equal(r.out_len, 11);
  assert_memory_equal(r.out, small, 11);
  outcome_free(&r);

  size_t big_len = 3u << 20; /* more than a pipe holds: written as the target reads */
  char *big = malloc(big_len);
  assert_non_null(big);
  for (size_t i = 0; i < big_len; i++) {
    big[i] = (char)('a' + i % 26);
  }
  req.stdin_data = big;
  req.stdin_len = big_len;
  run_req(ex, &req, &r);
  assert_int_equal(r.code, 0);
  assert_int_equal(r.out_len, big_len);
  assert_memory_equal(r.out, big, big_len);
  outcome_free(&r);

  /* a target that never reads its stdin */
  const char *t[] = { "/bin/true" };
  req.argv = t;
  run_req(ex, &req, &r);
  assert_int_equal(r.code, 0);
  outcome_free(&r);
  free(big);

  /* no stdin: /dev/null; empty stdin: EOF at once */
  req = (vg_exec_req_t){ .argv = cat, .argc = 1 };
  run_req(ex, &req, &r);
  assert_int_equal(r.code, 0);
  assert_int_equal(r.out_len, 0);
  outcome_free(&r);
  req.stdin_data = "";
  run_req(ex, &req, &r);
  assert_int_equal(r.code, 0);
  assert_int_equal(r.out_len, 0);
  outcome_free(&r);
  done_with(ex);
}

/* ---- failures ---- */

static void test_exec_failures(void **state)
{
  (void)state;
  char tool[PATH_MAX], bad[PATH_MAX];
  snprintf(tool, sizeof(tool), "%s/vanishing-tool", tmp);
  snprintf(bad, sizeof(bad), "%s/bad_interpreter.sh", fixtures);
  assert_true(copy_file("/bin/true", tool));
  assert_int_equal(chmod(tool, 0755), 0);
  const char *allow[] = { tool, bad, "/bin/true" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 3 };
  vg_exec_t *ex = make(&o);
  assert_int_equal(unlink(tool), 0);
  const char *argv[] = { tool };
  vg_exec_req_t req = { .argv = argv, .argc = 1 };
  outcome_t r = { 0 };
  char err[512];
  assert_null(vg_exec_run(ex, &req, on_done, &r, err, sizeof(err)));
  assert_true(strncmp(err, "ENOENT: ", 8) == 0);
  assert_non_null(strstr(err, tool));

  /* the file is there, its interpreter is not: execve's ENOENT, from the helper */
  const char *script[] = { bad };
  run_argv(ex, script, 1, &r);
  assert_string_equal(r.error, "ENOENT");
  assert_non_null(strstr(r.detail, bad));
  assert_int_equal(r.code, -1);
  assert_string_equal(r.out, "");
  outcome_free(&r);

  /* a working directory the target may not enter */
  done_with(ex);
  if (geteuid() == 0) {
    char closed[PATH_MAX];
    snprintf(closed, sizeof(closed), "%s/closed", tmp);
    assert_int_equal(mkdir(closed, 0700), 0);
    const char *t[] = { "/bin/true" };
    o = (vg_exec_opts_t){ .allow = t, .nallow = 1, .user = "nobody" };
    ex = make(&o);
    req = (vg_exec_req_t){ .argv = t, .argc = 1, .cwd = closed };
    run_req(ex, &req, &r);
    assert_string_equal(r.error, "EACCES");
    assert_non_null(strstr(r.detail, closed));
    outcome_free(&r);
    done_with(ex);
    rmdir(closed);
  }
}

/* ---- many at once ---- */

#define MANY 48

static void test_concurrent(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/echo" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1 };
  vg_exec_t *ex = make(&o);
  static outcome_t rs[MANY];
  char nums[MANY][16];
  char err[256];
  for (int i = 0; i < MANY; i++) {
    memset(&rs[i], 0, sizeof(rs[i]));
    snprintf(nums[i], sizeof(nums[i]), "run-%d", i);
    const char *argv[] = { "/bin/echo", nums[i] };
    vg_exec_req_t req = { .argv = argv, .argc = 2 };
    assert_non_null(vg_exec_run(ex, &req, on_done, &rs[i], err, sizeof(err)));
  }
  assert_int_equal(vg_exec_active(ex), MANY);
  for (;;) {
    int done = 0;
    for (int i = 0; i < MANY; i++) {
      done += rs[i].calls;
    }
    if (done == MANY) {
      break;
    }
    uv_run(&loop, UV_RUN_ONCE);
  }
  for (int i = 0; i < MANY; i++) {
    char want[32];
    snprintf(want, sizeof(want), "%s\n", nums[i]);
    assert_int_equal(rs[i].calls, 1);
    assert_int_equal(rs[i].code, 0);
    assert_string_equal(rs[i].out, want);
    outcome_free(&rs[i]);
  }
  done_with(ex);
}

/* ---- the exec server ---- */

/* Children of pid, and how many of them are zombies. */
static int children_of(long pid, int *zombies)
{
  DIR *d = opendir("/proc");
  assert_non_null(d);
  int n = 0;
  *zombies = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') {
      continue;
    }
    char path[300], buf[512];
    snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
      continue;
    }
    ssize_t len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[len > 0 ? len : 0] = '\0';
    char *p = strrchr(buf, ')');
    char state;
    long ppid;
    if (p != NULL && sscanf(p + 1, " %c %ld", &state, &ppid) == 2 && ppid == pid) {
      n++;
      *zombies += state == 'Z';
    }
  }
  closedir(d);
  return n;
}

static int fds_of(long pid)
{
  char path[64];
  snprintf(path, sizeof(path), "/proc/%ld/fd", pid);
  DIR *d = opendir(path);
  assert_non_null(d);
  int n = 0;
  while (readdir(d) != NULL) {
    n++;
  }
  closedir(d);
  return n;
}

static bool alive(long pid)
{
  char path[64];
  struct stat sb;
  snprintf(path, sizeof(path), "/proc/%ld", pid);
  return stat(path, &sb) == 0;
}

static void noop_timer(uv_timer_t *t)
{
  (void)t;
}

/* One turn of the loop, polling for up to a millisecond: the exec server's handle does not
 * keep the loop alive, so an idle loop would not look at it. (Repeating: a timer that is
 * already due fires before the poll, which would then wait for the next one.) */
static void spin_once(void)
{
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  uv_timer_start(&t, noop_timer, 1, 1);
  uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
}

/* Runs /bin/true n times, conc at a time; every run must succeed. */
static void run_true_many(vg_exec_t *ex, int n, int conc)
{
  static outcome_t rs[64];
  const char *argv[] = { "/bin/true" };
  vg_exec_req_t req = { .argv = argv, .argc = 1 };
  char err[256];
  int started = 0, finished = 0;
  assert_true(conc <= 64);
  for (int i = 0; i < conc; i++) {
    memset(&rs[i], 0, sizeof(rs[i]));
    assert_non_null(vg_exec_run(ex, &req, on_done, &rs[i], err, sizeof(err)));
    started++;
  }
  while (finished < n) {
    uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < conc; i++) {
      if (rs[i].calls == 0) {
        continue;
      }
      if (rs[i].code != 0) {
        fail_msg("run %d: code %d error %s %s", finished, rs[i].code, rs[i].error, rs[i].detail);
      }
      outcome_free(&rs[i]);
      finished++;
      if (started < n) {
        assert_non_null(vg_exec_run(ex, &req, on_done, &rs[i], err, sizeof(err)));
        started++;
      }
    }
  }
}

static void test_server_runs(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/echo", "/bin/true" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 2 };
  logbuf[0] = '\0';
  vg_exec_t *ex = make(&o);
  const vg_exec_server_info_t *si = vg_exec_server_info(ex);
  assert_true(si->enabled);
  assert_true(si->pid > 0);
  assert_null(si->fallback);
  assert_non_null(strstr(logbuf, "is ready"));
  long server = si->pid;
  assert_true(alive(server));
  const char *echo[] = { "/bin/echo", "via", "the server" };
  outcome_t r;
  run_argv(ex, echo, 3, &r);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.out, "via the server\n");
  assert_non_null(strstr(r.tiers, "seccomp"));
  outcome_free(&r);
  assert_int_equal(si->server_runs, 1);
  assert_int_equal(si->spawned_runs, 0);

  /* a request too big for one message spawns the helper for that run */
  size_t big = 70u << 10; /* more than a server request holds (64 KiB) */
  char *arg = malloc(big + 1);
  assert_non_null(arg);
  memset(arg, 'x', big);
  arg[big] = '\0';
  const char *true_big[] = { "/bin/true", arg };
  run_argv(ex, true_big, 2, &r);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.error, "");
  assert_int_equal(si->server_runs, 1);
  assert_int_equal(si->spawned_runs, 1);
  outcome_free(&r);
  free(arg);
  done_with(ex);
  assert_false(alive(server)); /* stopped and reaped by vg_exec_free */
}

static void wait_restarts(vg_exec_t *ex, unsigned restarts)
{
  const vg_exec_server_info_t *si = vg_exec_server_info(ex);
  for (int i = 0; i < 5000 && si->restarts < restarts && si->enabled; i++) {
    spin_once();
  }
}

static void test_server_restart(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/true", "/bin/echo" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 2 };
  logbuf[0] = '\0';
  vg_exec_t *ex = make(&o);
  const vg_exec_server_info_t *si = vg_exec_server_info(ex);
  const char *echo[] = { "/bin/echo", "again" };
  outcome_t r;
  long pids[3];
  for (unsigned k = 1; k <= 2; k++) {
    pids[k - 1] = si->pid;
    assert_int_equal(kill((pid_t)si->pid, SIGKILL), 0);
    wait_restarts(ex, k);
    assert_int_equal(si->restarts, k);
    assert_true(si->enabled);
    assert_false(alive(pids[k - 1])); /* reaped */
    run_argv(ex, echo, 2, &r);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "again\n");
    outcome_free(&r);
    assert_true(si->pid > 0);
    assert_int_not_equal(si->pid, pids[k - 1]);
  }
  assert_int_equal(si->server_runs, 2);
  assert_non_null(strstr(logbuf, "died"));
  assert_non_null(strstr(logbuf, "starting another"));

  /* the third death within a minute: runs spawn the helper from now on, as confined */
  pids[2] = si->pid;
  assert_int_equal(kill((pid_t)si->pid, SIGKILL), 0);
  for (int i = 0; i < 5000 && si->enabled; i++) {
    spin_once();
  }
  assert_false(si->enabled);
  assert_int_equal(si->pid, 0);
  assert_false(alive(pids[2]));
  assert_non_null(si->fallback);
  assert_non_null(strstr(si->fallback, "within a minute"));
  assert_non_null(strstr(logbuf, "spawn the helper"));
  run_argv(ex, echo, 2, &r);
  assert_int_equal(r.code, 0);
  assert_non_null(strstr(r.tiers, "seccomp"));
  assert_non_null(strstr(r.tiers, "landlock="));
  outcome_free(&r);
  assert_int_equal(si->spawned_runs, 1);
  done_with(ex);
}

static void test_server_dies_in_flight(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/sh", "/bin/echo" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 2, .grace_ms = 2000 };
  vg_exec_t *ex = make(&o);
  const vg_exec_server_info_t *si = vg_exec_server_info(ex);
  char *m = marker();
  char script[512];
  snprintf(script, sizeof(script),
           "sh -c 'while :; do sleep 1; done' %s-child & "
           "setsid sh -c 'while :; do sleep 0.05; done' %s-escapee & wait",
           m, m);
  const char *argv[] = { "/bin/sh", "-c", script };
  vg_exec_req_t req = { .argv = argv, .argc = 3 };
  outcome_t r = { 0 };
  char err[256];
  assert_non_null(vg_exec_run(ex, &req, on_done, &r, err, sizeof(err)));
  for (int i = 0; i < 5000 && count_marker(m) < 3; i++) {
    spin_once();
  }
  for (int i = 0; i < 200; i++) {
    spin_once(); /* let the shells settle: forks show the marker too, for a moment */
  }
  assert_true(count_marker(m) >= 3); /* the shell, its child and the escapee */
  long server = si->pid;
  assert_int_equal(kill((pid_t)server, SIGKILL), 0);
  while (r.calls == 0) {
    uv_run(&loop, UV_RUN_ONCE);
  }
  assert_string_equal(r.error, "EHELPER");
  assert_non_null(strstr(r.detail, "exec server died"));
  assert_int_equal(r.code, -1);
  assert_false(r.timed_out);
  assert_true(r.duration < 2.0); /* stopped with SIGTERM, not after a grace */
  assert_int_equal(count_marker(m), 0);
  assert_false(alive(server));
  outcome_free(&r);
  /* the next run goes to the new server */
  assert_int_equal(si->restarts, 1);
  const char *echo[] = { "/bin/echo", "after" };
  run_argv(ex, echo, 2, &r);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.out, "after\n");
  outcome_free(&r);
  assert_int_equal(si->server_runs, 2);
  done_with(ex);
}

#define MANY_SERVER 200

static void test_server_concurrent(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/echo" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1 };
  vg_exec_t *ex = make(&o);
  static outcome_t rs[MANY_SERVER];
  static char nums[MANY_SERVER][16];
  char err[256];
  for (int i = 0; i < MANY_SERVER; i++) {
    memset(&rs[i], 0, sizeof(rs[i]));
    snprintf(nums[i], sizeof(nums[i]), "run-%d", i);
    const char *argv[] = { "/bin/echo", nums[i] };
    vg_exec_req_t req = { .argv = argv, .argc = 2 };
    assert_non_null(vg_exec_run(ex, &req, on_done, &rs[i], err, sizeof(err)));
  }
  int done = 0;
  while (done < MANY_SERVER) {
    uv_run(&loop, UV_RUN_ONCE);
    done = 0;
    for (int i = 0; i < MANY_SERVER; i++) {
      done += rs[i].calls;
    }
  }
  for (int i = 0; i < MANY_SERVER; i++) {
    char want[32];
    snprintf(want, sizeof(want), "%s\n", nums[i]);
    assert_int_equal(rs[i].calls, 1);
    assert_int_equal(rs[i].code, 0);
    assert_string_equal(rs[i].out, want);
    outcome_free(&rs[i]);
  }
  assert_int_equal(vg_exec_server_info(ex)->server_runs, MANY_SERVER);
  assert_int_equal(vg_exec_server_info(ex)->restarts, 0);
  done_with(ex);
}

static void test_server_no_zombies(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/true" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1 };
  vg_exec_t *ex = make(&o);
  long server = vg_exec_server_info(ex)->pid;
  run_true_many(ex, 16, 8);
  int fds = fds_of(server);
  run_true_many(ex, 1000, 16);
  assert_int_equal(vg_exec_server_info(ex)->server_runs, 1016);
  int zombies = 0, kids = 0;
  for (int i = 0; i < 2000; i++) {
    kids = children_of(server, &zombies);
    if (kids == 0) {
      break;
    }
    usleep(1000);
  }
  assert_int_equal(kids, 0);
  assert_int_equal(zombies, 0);
  assert_int_equal(fds_of(server), fds);
  assert_int_equal(vg_exec_server_info(ex)->pid, server);
  done_with(ex);
}

/* executor.server = false: one helper per run, nothing else started. */
static void test_server_off(void **state)
{
  (void)state;
  const char *allow[] = { "/bin/true" };
  vg_exec_opts_t o = { .allow = allow, .nallow = 1 };
  logbuf[0] = '\0';
  spawn_mode = true;
  vg_exec_t *ex = make(&o);
  spawn_mode = false;
  const vg_exec_server_info_t *si = vg_exec_server_info(ex);
  assert_false(si->enabled);
  assert_int_equal(si->pid, 0);
  assert_null(si->fallback);
  assert_string_equal(logbuf, "");
  run_true_many(ex, 20, 4);
  assert_int_equal(si->spawned_runs, 20);
  assert_int_equal(si->server_runs, 0);
  done_with(ex);
}

/* A helper whose --server mode fails once flag exists: at creation, or at a restart. */
static void write_wrapper(const char *path, const char *flag)
{
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f,
          "#!/bin/sh\n"
          "case \" $* \" in *\" --server \"*) [ -e '%s' ] && exit 3;; esac\n"
          "exec '%s' \"$@\"\n",
          flag, helper);
  assert_int_equal(fclose(f), 0);
  assert_int_equal(chmod(path, 0755), 0);
}

static void test_server_fallback(void **state)
{
  (void)state;
  char wrapper[PATH_MAX], flag[PATH_MAX];
  snprintf(wrapper, sizeof(wrapper), "%s/vigil-exec-wrapper", tmp);
  snprintf(flag, sizeof(flag), "%s/server-fails", tmp);
  write_wrapper(wrapper, flag);
  const char *allow[] = { "/bin/echo" };
  const char *echo[] = { "/bin/echo", "fine" };
  outcome_t r;

  /* the restart fails: runs go back to the helper, with the same tiers */
  vg_exec_opts_t o = { .helper = wrapper, .allow = allow, .nallow = 1 };
  logbuf[0] = '\0';
  vg_exec_t *ex = make(&o);
  const vg_exec_server_info_t *si = vg_exec_server_info(ex);
  assert_true(si->enabled);
  run_argv(ex, echo, 2, &r);
  assert_int_equal(r.code, 0);
  char tiers[256];
  snprintf(tiers, sizeof(tiers), "%s", r.tiers);
  outcome_free(&r);
  FILE *f = fopen(flag, "w");
  assert_non_null(f);
  fclose(f);
  long server = si->pid;
  assert_int_equal(kill((pid_t)server, SIGKILL), 0);
  /* a run made while the new server is starting waits for it, then spawns the helper */
  wait_restarts(ex, 1);
  outcome_t queued = { 0 };
  char err[256];
  vg_exec_req_t req = { .argv = echo, .argc = 2 };
  assert_non_null(vg_exec_run(ex, &req, on_done, &queued, err, sizeof(err)));
  for (int i = 0; i < 5000 && si->enabled; i++) {
    spin_once();
  }
  assert_false(si->enabled);
  assert_false(alive(server));
  assert_non_null(si->fallback);
  assert_non_null(strstr(si->fallback, "failed before it was ready"));
  assert_non_null(strstr(logbuf, "spawn the helper"));
  while (queued.calls == 0) {
    uv_run(&loop, UV_RUN_ONCE);
  }
  assert_int_equal(queued.code, 0);
  assert_string_equal(queued.out, "fine\n");
  assert_string_equal(queued.tiers, tiers);
  outcome_free(&queued);
  run_argv(ex, echo, 2, &r);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.tiers, tiers);
  outcome_free(&r);
  assert_int_equal(si->server_runs, 1);
  assert_int_equal(si->spawned_runs, 2);
  done_with(ex);

  /* the server does not start at all */
  logbuf[0] = '\0';
  ex = make(&o);
  si = vg_exec_server_info(ex);
  assert_false(si->enabled);
  assert_non_null(si->fallback);
  assert_non_null(strstr(si->fallback, "did not start"));
  assert_non_null(strstr(logbuf, "spawn the helper"));
  run_argv(ex, echo, 2, &r);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.tiers, tiers);
  outcome_free(&r);
  done_with(ex);
  unlink(flag);
  unlink(wrapper);
}

static int spawn_on(void **state)
{
  (void)state;
  spawn_mode = true;
  return 0;
}

static int spawn_off(void **state)
{
  (void)state;
  spawn_mode = false;
  return 0;
}

static int setup(void **state)
{
  (void)state;
  signal(SIGPIPE, SIG_IGN);
  const char *vigil = getenv("VIGIL");
  const char *src = getenv("VIGIL_SOURCE_DIR");
  if (vigil == NULL || src == NULL) {
    fprintf(stderr, "exec_test: VIGIL and VIGIL_SOURCE_DIR must be set (ctest sets them)\n");
    return -1;
  }
  snprintf(helper, sizeof(helper), "%s", vigil);
  char *slash = strrchr(helper, '/');
  if (slash == NULL) {
    return -1;
  }
  snprintf(slash + 1, sizeof(helper) - (size_t)(slash + 1 - helper), "vigil-exec");
  snprintf(fixtures, sizeof(fixtures), "%s/tests/fixtures/exec", src);
  snprintf(tmp, sizeof(tmp), "/tmp/vigil-exec-test-XXXXXX");
  if (mkdtemp(tmp) == NULL || chmod(tmp, 0755) != 0) {
    return -1;
  }
  return uv_loop_init(&loop);
}

static int teardown(void **state)
{
  (void)state;
  int rc = uv_loop_close(&loop);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
  if (system(cmd) != 0) {
    rc = -1;
  }
  return rc;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_new_errors),
    cmocka_unit_test(test_modes),
    cmocka_unit_test(test_allowlist),
    cmocka_unit_test(test_exit_code_signal_cwd),
    cmocka_unit_test(test_env),
    cmocka_unit_test(test_rlimits),
    cmocka_unit_test(test_fds_and_nnp_status),
    cmocka_unit_test(test_no_new_privs_setuid),
    cmocka_unit_test(test_landlock_files),
    cmocka_unit_test(test_landlock_tcp),
    cmocka_unit_test(test_seccomp),
    cmocka_unit_test(test_timeout_kills_tree),
    cmocka_unit_test(test_leftovers_after_exit),
    cmocka_unit_test(test_sigkill_after_grace),
    cmocka_unit_test(test_cancel_and_free),
    cmocka_unit_test(test_output_cap),
    cmocka_unit_test(test_stdin),
    cmocka_unit_test(test_exec_failures),
    cmocka_unit_test(test_concurrent),
    cmocka_unit_test(test_server_runs),
    cmocka_unit_test(test_server_restart),
    cmocka_unit_test(test_server_dies_in_flight),
    cmocka_unit_test(test_server_concurrent),
    cmocka_unit_test(test_server_no_zombies),
    cmocka_unit_test(test_server_off),
    cmocka_unit_test(test_server_fallback),
    /* the helper per run (executor.server = false, or the server given up) */
    cmocka_unit_test_setup_teardown(test_modes, spawn_on, spawn_off),
    cmocka_unit_test_setup_teardown(test_exit_code_signal_cwd, spawn_on, spawn_off),
    cmocka_unit_test_setup_teardown(test_timeout_kills_tree, spawn_on, spawn_off),
    cmocka_unit_test_setup_teardown(test_leftovers_after_exit, spawn_on, spawn_off),
    cmocka_unit_test_setup_teardown(test_sigkill_after_grace, spawn_on, spawn_off),
    cmocka_unit_test_setup_teardown(test_cancel_and_free, spawn_on, spawn_off),
    cmocka_unit_test_setup_teardown(test_output_cap, spawn_on, spawn_off),
    cmocka_unit_test_setup_teardown(test_stdin, spawn_on, spawn_off),
    cmocka_unit_test_setup_teardown(test_exec_failures, spawn_on, spawn_off),
    cmocka_unit_test_setup_teardown(test_concurrent, spawn_on, spawn_off),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
