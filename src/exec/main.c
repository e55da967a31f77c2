/* vigil-exec: the sandboxing helper of vigil's executor (src/engine/exec.c). Run once per run,
 * the daemon spawns it detached (its own session and process group); it confines a forked
 * child (confine.c) and executes the target there, supervises the whole process tree as a
 * child subreaper, and when the target ends or a SIGTERM asks it to stop, stops every
 * descendant (SIGTERM, a grace period, SIGKILL), reaps them all and only then writes the
 * outcome on its status fd (supervise.c). With --server it is instead the executor's
 * long-lived exec server, which forks a supervisor doing the same for each run (server.c).
 * Protocol: src/exec/protocol.h. Links libc and libseccomp only, so it starts fast. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "exec/confine.h"
#include "exec/supervise.h"

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
  p->sock_fd = -1;
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
    } else if (strcmp(a, "--server") == 0) {
      p->server = true;
    } else if ((v = opt(a, "--sock-fd")) != NULL) {
      ok = parse_u64(v, 1024, &n);
      p->sock_fd = (int)n;
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
  if (p->server) {
    if (p->sock_fd < 0 || i < argc) {
      snprintf(why, whylen, "--server takes --sock-fd and no command");
      return false;
    }
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

int main(int argc, char **argv)
{
  confine_policy_t p;
  char why[600];
  bool args_ok = parse_args(argc, argv, &p, why, sizeof(why));
  exec_status_fd = fcntl(p.status_fd, F_GETFD) >= 0 ? p.status_fd : STDERR_FILENO;
  if (!args_ok) {
    exec_say("error", "EINVAL %s (usage: see src/exec/protocol.h)", why);
    return 2;
  }
  if (p.server) {
    return exec_server(&p);
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
      exec_say("error", "ESANDBOX the daemon (pid %ld) is gone", p.ppid);
      return 1;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
      exec_say("error", "ESANDBOX PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
      return 1;
    }
  }
  confine_t c;
  if (!confine_prepare(&p, &c, why, sizeof(why))) {
    exec_say("error", "%s", why);
    return 1;
  }
  if (p.probe) {
    exec_say("tiers", "%s", c.tiers);
    for (int i = 0; i < c.nnotes; i++) {
      exec_say("note", "%s", c.notes[i]);
    }
    char *hex = c.prog.len > 0 ? confine_bpf_hex(&c) : NULL;
    if (hex != NULL) {
      exec_write_all(exec_status_fd, "bpf ", 4);
      exec_write_all(exec_status_fd, hex, strlen(hex));
      exec_write_all(exec_status_fd, "\n", 1);
      free(hex);
    }
    confine_release(&c);
    return 0;
  }
  return exec_run_target(&p, &c, &set, 0);
}
