/* One run of vigil-exec: start the confined target, supervise the whole process tree as a
 * child subreaper, stop it (SIGTERM, a grace period, SIGKILL) when the target ends or a stop
 * signal asks, reap everything and only then report. See supervise.h. */
#include "exec/supervise.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int exec_status_fd = VG_EXEC_STATUS_FD;

void exec_write_all(int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w <= 0) {
      return; /* the daemon stopped listening (a cancelled run): nothing to do */
    }
    p += w;
    n -= (size_t)w;
  }
}

void exec_say(const char *word, const char *fmt, ...)
{
  char line[1024];
  size_t n = (size_t)snprintf(line, sizeof(line) - 1, "%s ", word);
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(line + n, sizeof(line) - 1 - n, fmt, ap);
  va_end(ap);
  if (k > 0) {
    n += (size_t)k < sizeof(line) - 1 - n ? (size_t)k : sizeof(line) - 2 - n;
  }
  for (size_t i = 0; i < n; i++) {
    line[i] = line[i] == '\n' ? ' ' : line[i];
  }
  line[n++] = '\n';
  exec_write_all(exec_status_fd, line, n);
}

/* ---- the process tree ---- */

typedef struct {
  pid_t pid, ppid;
  bool mine, skip;
} proc_t;

static int by_pid(const void *a, const void *b)
{
  pid_t x = ((const proc_t *)a)->pid, y = ((const proc_t *)b)->pid;
  return (x > y) - (x < y);
}

static pid_t read_ppid(const char *pid)
{
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%s/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return -1;
  }
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) {
    return -1;
  }
  buf[n] = '\0';
  /* "pid (comm) S ppid ...": comm may hold anything, so look after the last ')'. */
  char *p = strrchr(buf, ')');
  long ppid;
  return p != NULL && sscanf(p + 1, " %*c %ld", &ppid) == 1 ? (pid_t)ppid : -1;
}

size_t exec_signal_descendants(int sig, const pid_t *skip, size_t nskip)
{
  DIR *d = opendir("/proc");
  if (d == NULL) {
    return 0;
  }
  proc_t *v = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!isdigit((unsigned char)e->d_name[0])) {
      continue;
    }
    pid_t ppid = read_ppid(e->d_name);
    if (ppid < 0) {
      continue;
    }
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 256;
      proc_t *nv = realloc(v, nc * sizeof(*v));
      if (nv == NULL) {
        break;
      }
      v = nv;
      cap = nc;
    }
    pid_t pid = (pid_t)atol(e->d_name);
    bool skipped = false;
    for (size_t i = 0; i < nskip && !skipped; i++) {
      skipped = skip[i] == pid;
    }
    v[n++] = (proc_t){ .pid = pid, .ppid = ppid, .skip = skipped };
  }
  closedir(d);
  if (n > 0) {
    qsort(v, n, sizeof(*v), by_pid);
  }
  pid_t self = getpid();
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = 0; i < n; i++) {
      if (v[i].mine || v[i].skip) {
        continue;
      }
      proc_t key = { .pid = v[i].ppid };
      proc_t *parent = bsearch(&key, v, n, sizeof(*v), by_pid);
      if (v[i].ppid == self || (parent != NULL && parent->mine)) {
        v[i].mine = changed = true;
      }
    }
  }
  size_t count = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i].mine && kill(v[i].pid, sig) == 0) {
      count++;
    }
  }
  free(v);
  return count;
}

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for the target, then stops and reaps every descendant. Returns the target's wait
 * status; *lost says the parent died while it ran. */
static int supervise(
    pid_t target, const confine_policy_t *p, const sigset_t *set, pid_t parent, bool *lost)
{
  enum { RUNNING, TERMINATING, KILLING } phase = RUNNING;
  bool target_done = false;
  int target_status = 0;
  int64_t deadline = 0;
  for (;;) {
    bool children_left = true;
    for (;;) {
      int st;
      pid_t r = waitpid(-1, &st, WNOHANG);
      if (r > 0) {
        if (r == target) {
          target_done = true;
          target_status = st;
        }
        continue;
      }
      if (r < 0 && errno == EINTR) {
        continue;
      }
      children_left = r == 0;
      break;
    }
    if (!children_left && target_done) {
      return target_status;
    }
    if (target_done && phase == RUNNING) {
      /* The target ended but left processes behind: they do not outlive the run. */
      phase = TERMINATING;
      deadline = now_ms() + p->grace_ms;
      size_t left = exec_signal_descendants(SIGTERM, NULL, 0);
      if (left > 0) {
        exec_say("note", "stopping %zu leftover process%s", left, left == 1 ? "" : "es");
      }
    }
    struct timespec ts, *timeout = NULL;
    if (phase == TERMINATING) {
      int64_t left = deadline - now_ms();
      if (left <= 0) {
        phase = KILLING;
      } else {
        ts = (struct timespec){ left / 1000, (left % 1000) * 1000000 };
        timeout = &ts;
      }
    }
    if (phase == KILLING) {
      /* Again and again until nothing is left: a dying parent's children re-parent to us,
       * and a process may fork between the scan and the kill. */
      exec_signal_descendants(SIGKILL, NULL, 0);
      ts = (struct timespec){ 0, 20 * 1000000 };
      timeout = &ts;
    }
    siginfo_t info;
    int sig = sigtimedwait(set, &info, timeout);
    if ((sig == SIGTERM || sig == SIGINT || sig == SIGHUP) && phase == RUNNING) {
      phase = TERMINATING;
      deadline = now_ms() + p->grace_ms;
      exec_signal_descendants(SIGTERM, NULL, 0);
      if (parent > 0 && getppid() != parent) {
        *lost = true;
      }
    }
  }
}

int exec_run_target(const confine_policy_t *p, confine_t *c, const sigset_t *set, pid_t parent)
{
  exec_say("tiers", "%s", c->tiers);
  for (int i = 0; i < c->nnotes; i++) {
    exec_say("note", "%s", c->notes[i]);
  }
  /* A vfork-style child: no copy of the address space (a fork costs as much as the rest of
   * the run on small VMs), and this process sleeps until the child has executed the target
   * or failed, which it reports in cc.failure. */
  static char stack[256 * 1024] __attribute__((aligned(64)));
  confine_child_t cc = { .p = p, .c = c, .helper = getpid(), .failure = { .stage = -1 } };
  pid_t child = clone(confine_child, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &cc);
  if (child < 0) {
    exec_say("error", "ESANDBOX clone: %s", strerror(errno));
    confine_release(c);
    return 1;
  }
  confine_release(c);
  if (cc.failure.stage >= 0) {
    /* Nothing ran; the child is gone. */
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
    }
    char why[600];
    confine_describe(p, &cc.failure, why, sizeof(why));
    exec_say("error", "%s", why);
    return 1;
  }
  exec_say("pid", "%ld", (long)child);
  bool lost = false;
  int st = supervise(child, p, set, parent, &lost);
  if (lost) {
    exec_say("error",
             "EHELPER the exec server died during the run; its process tree was "
             "stopped");
    return 1;
  }
  if (WIFSIGNALED(st)) {
    exec_say("signal", "%d", WTERMSIG(st));
  } else {
    exec_say("exit", "%d", WEXITSTATUS(st));
  }
  return 0;
}
