/* vigil-exec: the sandboxing helper of vigil's executor (src/engine/exec.c). The daemon spawns
 * it detached (its own session and process group); it confines a forked child (confine.c)
 * and executes the target there, supervises the whole process tree as a child subreaper, and
 * when the target ends or a SIGTERM asks it to stop, stops every descendant (SIGTERM, a grace
 * period, SIGKILL), reaps them all and only then writes the outcome on its status fd.
 * Protocol: src/exec/protocol.h. Links libc and libseccomp only, so it starts fast. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exec/confine.h"

static int status_fd = VG_EXEC_STATUS_FD;

static void write_all(int fd, const char *p, size_t n)
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

/* Writes one status line "WORD TEXT\n"; newlines in TEXT become spaces. */
static void say(const char *word, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const char *word, const char *fmt, ...)
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
  write_all(status_fd, line, n);
}

/* ---- argv ---- */

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
  if (!isdigit((unsigned char)*s)) {
    return false;
  }
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v > max) {
    return false;
  }
  *out = v;
  return true;
}

static bool parse_mode(const char *s, confine_mode_t *m)
{
  if (strcmp(s, "auto") == 0) {
    *m = CONFINE_AUTO;
  } else if (strcmp(s, "require") == 0) {
    *m = CONFINE_REQUIRE;
  } else if (strcmp(s, "off") == 0) {
    *m = CONFINE_OFF;
  } else {
    return false;
  }
  return true;
}

/* The value of "--name=value" when arg is that option, else NULL. */
static const char *opt(const char *arg, const char *name)
{
  size_t n = strlen(name);
  return strncmp(arg, name, n) == 0 && arg[n] == '=' ? arg + n + 1 : NULL;
}

static bool parse_args(int argc, char **argv, confine_policy_t *p, char *why, size_t whylen)
{
  memset(p, 0, sizeof(*p));
  p->cwd = "/";
  p->uid = p->gid = -1;
  p->grace_ms = 5000;
  p->status_fd = VG_EXEC_STATUS_FD;
  p->pretend_abi = -1;
  static const char *const lims[LIM_COUNT] = { "--cpu", "--as", "--nofile", "--fsize", "--nproc" };
  int i = 1;
  for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
    const char *a = argv[i], *v;
    uint64_t n = 0;
    bool ok = true, known = false;
    for (int l = 0; l < LIM_COUNT; l++) {
      if ((v = opt(a, lims[l])) != NULL) {
        known = true;
        ok = parse_u64(v, UINT64_MAX - 1, &n);
        p->lim[l] = (rlim_t)n;
        p->lim_set[l] = true;
      }
    }
    if (known) {
      /* done */
    } else if ((v = opt(a, "--path")) != NULL) {
      p->path = v;
      ok = v[0] == '/';
    } else if ((v = opt(a, "--cwd")) != NULL) {
      p->cwd = v;
      ok = v[0] == '/';
    } else if ((v = opt(a, "--scratch")) != NULL) {
      p->scratch = v;
      ok = v[0] == '/';
    } else if ((v = opt(a, "--uid")) != NULL) {
      ok = parse_u64(v, UINT32_MAX - 1, &n);
      p->uid = (long)n;
    } else if ((v = opt(a, "--gid")) != NULL) {
      ok = parse_u64(v, UINT32_MAX - 1, &n);
      p->gid = (long)n;
    } else if ((v = opt(a, "--landlock")) != NULL) {
      ok = parse_mode(v, &p->landlock);
    } else if ((v = opt(a, "--seccomp")) != NULL) {
      ok = parse_mode(v, &p->seccomp);
    } else if ((v = opt(a, "--tcp")) != NULL) {
      if (strcmp(v, "any") == 0) {
        p->tcp_any = true;
      } else {
        ok = p->nports < VG_EXEC_MAX_PORTS && parse_u64(v, 65535, &n) && n > 0;
        if (ok) {
          p->ports[p->nports++] = (uint16_t)n;
        }
      }
    } else if ((v = opt(a, "--grace")) != NULL) {
      ok = parse_u64(v, 3600000, &n);
      p->grace_ms = (unsigned)n;
    } else if ((v = opt(a, "--status-fd")) != NULL) {
      ok = parse_u64(v, 1024, &n);
      p->status_fd = (int)n;
    } else if ((v = opt(a, "--ppid")) != NULL) {
      ok = parse_u64(v, INT32_MAX, &n);
      p->ppid = (long)n;
    } else if ((v = opt(a, "--bpf")) != NULL) {
      p->bpf = v;
    } else if (strcmp(a, "--probe") == 0) {
      p->probe = true;
    } else if ((v = opt(a, "--pretend")) != NULL) {
      if (strcmp(v, "no-landlock") == 0) {
        p->pretend_abi = 0;
      } else if (strcmp(v, "no-seccomp") == 0) {
        p->pretend_no_seccomp = true;
      } else if (strncmp(v, "landlock-abi=", 13) == 0) {
        ok = parse_u64(v + 13, 100, &n);
        p->pretend_abi = (int)n;
      } else {
        ok = false;
      }
    } else {
      ok = false;
    }
    if (!ok) {
      snprintf(why, whylen, "bad option %.200s", a);
      return false;
    }
  }
  if (p->probe) {
    return true;
  }
  if (i + 1 >= argc) {
    snprintf(why, whylen, "no command after --");
    return false;
  }
  p->argv = argv + i + 1;
  if (p->path == NULL) {
    p->path = p->argv[0];
  }
  if (p->path[0] != '/') {
    snprintf(why, whylen, "the file to execute must be an absolute path: %.200s", p->path);
    return false;
  }
  return true;
}

/* ---- the process tree ---- */

typedef struct {
  pid_t pid, ppid;
  bool mine;
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

/* Sends sig to every descendant of this process, found through /proc (re-parented orphans
 * that called setsid() included: as a subreaper we are their ancestor). Returns how many. */
static size_t signal_descendants(int sig)
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
    v[n++] = (proc_t){ .pid = (pid_t)atol(e->d_name), .ppid = ppid };
  }
  closedir(d);
  if (n > 0) {
    qsort(v, n, sizeof(*v), by_pid);
  }
  pid_t self = getpid();
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = 0; i < n; i++) {
      if (v[i].mine) {
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
 * status. */
static int supervise(pid_t target, const confine_policy_t *p, const sigset_t *set)
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
      size_t left = signal_descendants(SIGTERM);
      if (left > 0) {
        say("note", "stopping %zu leftover process%s", left, left == 1 ? "" : "es");
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
      signal_descendants(SIGKILL);
      ts = (struct timespec){ 0, 20 * 1000000 };
      timeout = &ts;
    }
    siginfo_t info;
    int sig = sigtimedwait(set, &info, timeout);
    if ((sig == SIGTERM || sig == SIGINT || sig == SIGHUP) && phase == RUNNING) {
      phase = TERMINATING;
      deadline = now_ms() + p->grace_ms;
      signal_descendants(SIGTERM);
    }
  }
}

int main(int argc, char **argv)
{
  confine_policy_t p;
  char why[600];
  bool args_ok = parse_args(argc, argv, &p, why, sizeof(why));
  status_fd = fcntl(p.status_fd, F_GETFD) >= 0 ? p.status_fd : STDERR_FILENO;
  if (!args_ok) {
    say("error", "EINVAL %s (usage: see src/exec/protocol.h)", why);
    return 2;
  }
  /* Signals are taken synchronously with sigtimedwait; SIGPIPE blocked turns a closed status
   * pipe into EPIPE. The child resets its mask. */
  sigset_t set, pipe_set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pipe_set = set;
  sigaddset(&pipe_set, SIGPIPE);
  sigprocmask(SIG_BLOCK, &pipe_set, NULL);
  if (!p.probe) {
    /* The daemon's death stops the run the same way its timeout does. */
    prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
    if (p.ppid > 0 && getppid() != (pid_t)p.ppid) {
      say("error", "ESANDBOX the daemon (pid %ld) is gone", p.ppid);
      return 1;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
      say("error", "ESANDBOX PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
      return 1;
    }
  }
  confine_t c;
  if (!confine_prepare(&p, &c, why, sizeof(why))) {
    say("error", "%s", why);
    return 1;
  }
  say("tiers", "%s", c.tiers);
  for (int i = 0; i < c.nnotes; i++) {
    say("note", "%s", c.notes[i]);
  }
  if (p.probe) {
    char *hex = c.prog.len > 0 ? confine_bpf_hex(&c) : NULL;
    if (hex != NULL) {
      write_all(status_fd, "bpf ", 4);
      write_all(status_fd, hex, strlen(hex));
      write_all(status_fd, "\n", 1);
      free(hex);
    }
    confine_release(&c);
    return 0;
  }
  /* A vfork-style child: no copy of the address space (a fork costs as much as the rest of
   * the run on small VMs), and the helper sleeps until the child has executed the target or
   * failed, which it reports in cc.failure. */
  static char stack[256 * 1024] __attribute__((aligned(64)));
  confine_child_t cc = { .p = &p, .c = &c, .helper = getpid(), .failure = { .stage = -1 } };
  pid_t child = clone(confine_child, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &cc);
  if (child < 0) {
    say("error", "ESANDBOX clone: %s", strerror(errno));
    return 1;
  }
  confine_release(&c);
  if (cc.failure.stage >= 0) {
    /* Nothing ran; the child is gone. */
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
    }
    confine_describe(&p, &cc.failure, why, sizeof(why));
    say("error", "%s", why);
    return 1;
  }
  say("pid", "%ld", (long)child);
  int st = supervise(child, &p, &set);
  if (WIFSIGNALED(st)) {
    say("signal", "%d", WTERMSIG(st));
  } else {
    say("exit", "%d", WEXITSTATUS(st));
  }
  return 0;
}
