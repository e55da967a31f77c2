/* vigil-exec's tiers: rlimits, no new privileges, fd hygiene, uid/gid, Landlock and seccomp.
 * See confine.h. Everything that allocates or can be slow (the Landlock ruleset, the seccomp
 * program) is made in the helper before it starts the child; the child only makes system
 * calls. libseccomp compiles the filter in about a millisecond, as long as an exec here, so
 * the executor compiles it once (the probe prints it) and hands the program to every run. */
#include "exec/confine.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- Landlock definitions newer than Debian 12's linux/landlock.h (ABI 2) ---- */

#ifndef __NR_landlock_create_ruleset
#  define __NR_landlock_create_ruleset 444
#  define __NR_landlock_add_rule 445
#  define __NR_landlock_restrict_self 446
#endif
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#  define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif
#ifndef LANDLOCK_ACCESS_FS_REFER
#  define LANDLOCK_ACCESS_FS_REFER (1ULL << 13)
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#  define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#  define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#endif
#ifndef LANDLOCK_ACCESS_NET_CONNECT_TCP
#  define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1) /* ABI 4 */
#endif
#ifndef LANDLOCK_RULE_NET_PORT
#  define LANDLOCK_RULE_NET_PORT 2
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#  define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
#  define LANDLOCK_SCOPE_SIGNAL (1ULL << 1)
#endif

/* The ruleset attribute as of ABI 6; the kernel is told the size the ABI knows. */
typedef struct {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
} ll_ruleset_attr_t;

typedef struct {
  uint64_t allowed_access;
  uint64_t port;
} ll_net_port_attr_t;

typedef struct __attribute__((packed)) {
  uint64_t allowed_access;
  int32_t parent_fd;
} ll_path_beneath_attr_t;

#define LL_READ_EXEC \
  (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)

/* Every filesystem right the ABI knows: all of them are handled, so what is not granted by a
 * rule is denied. */
static uint64_t ll_fs_rights(int abi)
{
  uint64_t r = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1; /* ABI 1: bits 0..12 */
  if (abi >= 2) {
    r |= LANDLOCK_ACCESS_FS_REFER;
  }
  if (abi >= 3) {
    r |= LANDLOCK_ACCESS_FS_TRUNCATE;
  }
  if (abi >= 5) {
    r |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
  }
  return r;
}

static void note(confine_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(confine_t *c, const char *fmt, ...)
{
  if (c->nnotes >= CONFINE_MAX_NOTES) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->notes[c->nnotes++], sizeof(c->notes[0]), fmt, ap);
  va_end(ap);
}

static void tier(confine_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tier(confine_t *c, const char *fmt, ...)
{
  size_t len = strlen(c->tiers);
  if (len + 2 >= sizeof(c->tiers)) {
    return;
  }
  if (len > 0) {
    c->tiers[len++] = ' ';
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->tiers + len, sizeof(c->tiers) - len, fmt, ap);
  va_end(ap);
}

static const char *errname(int err)
{
  const char *n = strerrorname_np(err);
  return n != NULL ? n : "EIO";
}

/* The kernel's Landlock ABI, or 0 with the reason in why. */
static int ll_abi(const confine_policy_t *p, char *why, size_t whylen)
{
  if (p->pretend_abi == 0) {
    snprintf(why, whylen, "pretended absent");
    return 0;
  }
  long abi = syscall(__NR_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 0) {
    snprintf(why, whylen, "%s: %s", errname(errno), strerror(errno));
    return 0;
  }
  if (p->pretend_abi > 0 && abi > p->pretend_abi) {
    abi = p->pretend_abi;
  }
  return (int)abi;
}

static bool ll_add_path(int ruleset, const char *path, uint64_t access, char *why, size_t whylen)
{
  int fd = open(path, O_PATH | O_CLOEXEC);
  if (fd < 0) {
    snprintf(why, whylen, "ELANDLOCK %s: %s", path, strerror(errno));
    return false;
  }
  ll_path_beneath_attr_t pb = { .allowed_access = access, .parent_fd = fd };
  long rc = syscall(__NR_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
  int e = errno;
  close(fd);
  if (rc != 0) {
    snprintf(why, whylen, "ELANDLOCK landlock_add_rule %s: %s", path, strerror(e));
    return false;
  }
  return true;
}

/* Builds the ruleset: read and execute under /, everything in the scratch directory, write to
 * /dev/null; TCP connect to the listed ports (ABI >= 4); no signals to or abstract sockets of
 * processes outside the sandbox (ABI >= 6). */
static bool ll_build(const confine_policy_t *p, int abi, confine_t *c, char *why, size_t whylen)
{
  uint64_t fs = ll_fs_rights(abi);
  ll_ruleset_attr_t attr = { .handled_access_fs = fs };
  size_t size = sizeof(uint64_t);
  bool net = abi >= 4 && !p->tcp_any;
  if (net) {
    attr.handled_access_net = LANDLOCK_ACCESS_NET_CONNECT_TCP;
    size = 2 * sizeof(uint64_t);
  }
  if (abi >= 6) {
    attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL;
    size = sizeof(attr);
  }
  long fd = syscall(__NR_landlock_create_ruleset, &attr, size, 0);
  if (fd < 0) {
    snprintf(why, whylen, "ELANDLOCK landlock_create_ruleset: %s", strerror(errno));
    return false;
  }
  c->ruleset_fd = (int)fd;
  uint64_t devnull = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE;
  devnull |= abi >= 3 ? LANDLOCK_ACCESS_FS_TRUNCATE : 0;
  devnull |= abi >= 5 ? LANDLOCK_ACCESS_FS_IOCTL_DEV : 0;
  if (!ll_add_path(c->ruleset_fd, "/", LL_READ_EXEC, why, whylen) ||
      !ll_add_path(c->ruleset_fd, "/dev/null", devnull, why, whylen) ||
      (p->scratch != NULL && !ll_add_path(c->ruleset_fd, p->scratch, fs, why, whylen))) {
    return false;
  }
  for (size_t i = 0; net && i < p->nports; i++) {
    ll_net_port_attr_t np = { .allowed_access = LANDLOCK_ACCESS_NET_CONNECT_TCP,
                              .port = p->ports[i] };
    if (syscall(__NR_landlock_add_rule, c->ruleset_fd, LANDLOCK_RULE_NET_PORT, &np, 0) != 0) {
      snprintf(why, whylen, "ELANDLOCK landlock_add_rule port %u: %s", (unsigned)p->ports[i],
               strerror(errno));
      return false;
    }
  }
  return true;
}

/* What Landlock at this ABI gives, in the tiers line and notes. */
static void ll_describe(const confine_policy_t *p, int abi, confine_t *c)
{
  tier(c, "landlock=%d", abi);
  if (abi >= 4 && !p->tcp_any) {
    tier(c, "landlock-net");
  } else if (!p->tcp_any) {
    note(c, "landlock: ABI %d has no TCP rules, TCP connects are not restricted", abi);
  }
  if (abi >= 6) {
    tier(c, "landlock-scope");
  }
}

/* ---- seccomp ---- */

/* Denied with EPERM: what lets a process change the kernel's or other processes' state, or
 * leave its namespaces and filesystem view. The new mount API, open_by_handle_at and
 * process_vm_* close the obvious ways around mount, chroot and ptrace. */
static const char *const denied_syscalls[] = {
  "ptrace",
  "process_vm_readv",
  "process_vm_writev",
  "mount",
  "umount",
  "umount2",
  "pivot_root",
  "chroot",
  "open_tree",
  "move_mount",
  "fsopen",
  "fsconfig",
  "fsmount",
  "fspick",
  "mount_setattr",
  "unshare",
  "setns",
  "bpf",
  "perf_event_open",
  "keyctl",
  "add_key",
  "request_key",
  "userfaultfd",
  "io_uring_setup",
  "io_uring_enter",
  "io_uring_register",
  "kexec_load",
  "kexec_file_load",
  "init_module",
  "finit_module",
  "delete_module",
  "swapon",
  "swapoff",
  "reboot",
  "open_by_handle_at",
};

/* clone() flags that make new namespaces (unshare by another name). */
static const uint64_t clone_ns_flags[] = {
  CLONE_NEWNS,   CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
  CLONE_NEWUSER, CLONE_NEWPID,    CLONE_NEWNET,
};

static bool sc_available(const confine_policy_t *p, char *why, size_t whylen)
{
  if (p->pretend_no_seccomp) {
    snprintf(why, whylen, "pretended absent");
    return false;
  }
  if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0) {
    snprintf(why, whylen, "%s: %s", errname(errno), strerror(errno));
    return false;
  }
  if (p->bpf != NULL) {
    return true; /* the probe that compiled it asked libseccomp already */
  }
  const struct scmp_version *v = seccomp_version();
  if (seccomp_api_get() < 1) {
    snprintf(why, whylen, "libseccomp %u.%u.%u finds no filter support", v->major, v->minor,
             v->micro);
    return false;
  }
  return true;
}

/* Compiles the filter with libseccomp and exports the BPF, which the child loads with one
 * prctl (no allocation after the fork). */
static bool sc_build(confine_t *c, char *why, size_t whylen)
{
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  int pfd[2] = { -1, -1 };
  int rc = ctx == NULL ? -ENOMEM : 0;
  const char *what = "seccomp_init";
  for (size_t i = 0; rc == 0 && i < sizeof(denied_syscalls) / sizeof(denied_syscalls[0]); i++) {
    int nr = seccomp_syscall_resolve_name(denied_syscalls[i]);
    if (nr != __NR_SCMP_ERROR) {
      rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
      what = denied_syscalls[i];
    }
  }
  /* Packet and raw sockets: the low 32 bits only, since the kernel reads int arguments. */
  if (rc == 0) {
    what = "socket";
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, AF_PACKET));
  }
  if (rc == 0) {
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
                          SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW));
  }
  if (rc == 0) {
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
                          SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_PACKET));
  }
  for (size_t i = 0; rc == 0 && i < sizeof(clone_ns_flags) / sizeof(clone_ns_flags[0]); i++) {
    what = "clone";
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]));
  }
  /* clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc use clone. */
  if (rc == 0 && seccomp_syscall_resolve_name("clone3") != __NR_SCMP_ERROR) {
    what = "clone3";
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), seccomp_syscall_resolve_name("clone3"), 0);
  }
  if (rc == 0) {
    what = "export";
    rc = pipe2(pfd, O_CLOEXEC | O_NONBLOCK) == 0 ? seccomp_export_bpf(ctx, pfd[1]) : -errno;
  }
  if (rc == 0) {
    /* A few hundred instructions: far below a pipe's capacity. */
    size_t cap = 65536;
    struct sock_filter *f = malloc(cap);
    ssize_t n = f != NULL ? read(pfd[0], f, cap) : -1;
    if (n <= 0 || n % (ssize_t)sizeof(*f) != 0) {
      free(f);
      rc = -EIO;
    } else {
      c->prog.filter = f;
      c->prog.len = (unsigned short)(n / (ssize_t)sizeof(*f));
    }
  }
  if (pfd[0] >= 0) {
    close(pfd[0]);
    close(pfd[1]);
  }
  seccomp_release(ctx);
  if (rc != 0) {
    snprintf(why, whylen, "ESECCOMP %s: %s", what, strerror(-rc));
    return false;
  }
  tier(c, "seccomp");
  return true;
}

static int hexval(char ch)
{
  return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* The program handed over with --bpf. */
static bool sc_from_hex(const char *hex, confine_t *c, char *why, size_t whylen)
{
  size_t len = strlen(hex);
  size_t n = len / 2;
  if (len % 2 != 0 || n == 0 || n % sizeof(struct sock_filter) != 0 ||
      n / sizeof(struct sock_filter) > BPF_MAXINSNS) {
    snprintf(why, whylen, "ESECCOMP --bpf: not a program");
    return false;
  }
  unsigned char *b = malloc(n);
  if (b == NULL) {
    snprintf(why, whylen, "ESECCOMP --bpf: out of memory");
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      free(b);
      snprintf(why, whylen, "ESECCOMP --bpf: not hex");
      return false;
    }
    b[i] = (unsigned char)(hi << 4 | lo);
  }
  c->prog.filter = (struct sock_filter *)b;
  c->prog.len = (unsigned short)(n / sizeof(struct sock_filter));
  tier(c, "seccomp");
  return true;
}

char *confine_bpf_hex(const confine_t *c)
{
  size_t n = (size_t)c->prog.len * sizeof(struct sock_filter);
  char *hex = malloc(2 * n + 1);
  const unsigned char *b = (const unsigned char *)c->prog.filter;
  for (size_t i = 0; hex != NULL && i < n; i++) {
    hex[2 * i] = "0123456789abcdef"[b[i] >> 4];
    hex[2 * i + 1] = "0123456789abcdef"[b[i] & 15];
  }
  if (hex != NULL) {
    hex[2 * n] = '\0';
  }
  return hex;
}

bool confine_prepare(const confine_policy_t *p, confine_t *c, char *why, size_t whylen)
{
  memset(c, 0, sizeof(*c));
  c->ruleset_fd = -1;
  tier(c, "rlimits nnp fds");
  if (p->uid >= 0) {
    tier(c, "uid=%ld", p->uid);
  }
  char reason[160];
  if (p->landlock == CONFINE_OFF) {
    note(c, "landlock: off by configuration");
  } else {
    int abi = ll_abi(p, reason, sizeof(reason));
    if (abi < 1 && p->landlock == CONFINE_REQUIRE) {
      snprintf(why, whylen, "ESANDBOX landlock is required but not available (%s)", reason);
      return false;
    }
    if (abi < 1) {
      note(c, "landlock: not available (%s), running without it (landlock=auto)", reason);
    } else if (!p->probe && !ll_build(p, abi, c, why, whylen)) {
      confine_release(c);
      return false;
    } else {
      ll_describe(p, abi, c);
    }
  }
  if (p->seccomp == CONFINE_OFF) {
    note(c, "seccomp: off by configuration");
  } else if (!sc_available(p, reason, sizeof(reason))) {
    if (p->seccomp == CONFINE_REQUIRE) {
      snprintf(why, whylen, "ESANDBOX seccomp is required but not available (%s)", reason);
      confine_release(c);
      return false;
    }
    note(c, "seccomp: not available (%s), running without it (seccomp=auto)", reason);
  } else if (p->bpf != NULL ? !sc_from_hex(p->bpf, c, why, whylen) : !sc_build(c, why, whylen)) {
    confine_release(c);
    return false;
  }
  return true;
}

void confine_release(confine_t *c)
{
  if (c->ruleset_fd >= 0) {
    close(c->ruleset_fd);
    c->ruleset_fd = -1;
  }
  free(c->prog.filter);
  c->prog.filter = NULL;
  c->prog.len = 0;
}

/* ---- the child ---- */

/* The child runs on a stack of its own under an address-space limit: a sanitizer's runtime
 * would want memory (and warn about the stack) on the way to _exit, so none in this part. */
#define CHILD_CODE __attribute__((no_sanitize_address))

CHILD_CODE _Noreturn static void fail(confine_child_t *cc, confine_stage_t stage)
{
  cc->failure.stage = (int)stage;
  cc->failure.err = errno;
  _exit(127);
}

/* Marks every fd from 3 up close-on-exec. */
CHILD_CODE static int fds_cloexec(void)
{
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) == 0) {
    return 0;
  }
#endif
  struct rlimit rl;
  rlim_t max =
      getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? rl.rlim_cur : 65536;
  for (rlim_t fd = 3; fd < max; fd++) {
    (void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
  }
  return 0;
}

CHILD_CODE int confine_child(void *arg)
{
  confine_child_t *cc = arg;
  const confine_policy_t *p = cc->p;
  const confine_t *c = cc->c;
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) {
    fail(cc, STAGE_SIGNALS);
  }
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) {
    fail(cc, STAGE_PDEATHSIG);
  }
  if (getppid() != cc->helper) {
    _exit(127); /* the helper is already gone */
  }
  static const int res[LIM_COUNT] = { RLIMIT_CPU, RLIMIT_AS, RLIMIT_NOFILE, RLIMIT_FSIZE,
                                      RLIMIT_NPROC };
  struct rlimit zero = { 0, 0 };
  if (setrlimit(RLIMIT_CORE, &zero) != 0) {
    fail(cc, STAGE_RLIMIT);
  }
  for (int i = 0; i < LIM_COUNT; i++) {
    struct rlimit rl = { p->lim[i], p->lim[i] };
    if (p->lim_set[i] && setrlimit(res[i], &rl) != 0) {
      fail(cc, STAGE_RLIMIT);
    }
  }
  /* Raw system calls: glibc's setgroups/setresuid would signal every thread of the
   * process, and with CLONE_VM the helper's threads look like ours. */
  if (p->gid >= 0) {
    gid_t g = (gid_t)p->gid;
    if (syscall(SYS_setgroups, 1, &g) != 0) {
      fail(cc, STAGE_GROUPS);
    }
    if (syscall(SYS_setresgid, g, g, g) != 0) {
      fail(cc, STAGE_SETGID);
    }
  }
  if (p->uid >= 0) {
    uid_t u = (uid_t)p->uid;
    if (syscall(SYS_setresuid, u, u, u) != 0) {
      fail(cc, STAGE_SETUID);
    }
  }
  if (chdir(p->cwd) != 0) {
    fail(cc, STAGE_CHDIR);
  }
  if (fds_cloexec() != 0) {
    fail(cc, STAGE_FDS);
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    fail(cc, STAGE_NNP);
  }
  if (c->ruleset_fd >= 0 && syscall(__NR_landlock_restrict_self, c->ruleset_fd, 0) != 0) {
    fail(cc, STAGE_LANDLOCK);
  }
  if (c->prog.len > 0 && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &c->prog, 0, 0) != 0) {
    fail(cc, STAGE_SECCOMP);
  }
  execv(p->path, p->argv);
  fail(cc, STAGE_EXEC);
}

void confine_describe(const confine_policy_t *p,
                      const confine_failure_t *f,
                      char *out,
                      size_t outlen)
{
  const char *msg = strerror(f->err);
  switch ((confine_stage_t)f->stage) {
    case STAGE_EXEC:
      snprintf(out, outlen, "%s %s: %s", errname(f->err), p->path, msg);
      return;
    case STAGE_CHDIR:
      snprintf(out, outlen, "%s chdir %s: %s", errname(f->err), p->cwd, msg);
      return;
    case STAGE_LANDLOCK:
      snprintf(out, outlen, "ELANDLOCK landlock_restrict_self: %s", msg);
      return;
    case STAGE_SECCOMP:
      snprintf(out, outlen, "ESECCOMP loading the filter: %s", msg);
      return;
    case STAGE_SETUID:
      snprintf(out, outlen, "ESANDBOX setuid %ld: %s", p->uid, msg);
      return;
    case STAGE_SETGID:
    case STAGE_GROUPS:
      snprintf(out, outlen, "ESANDBOX setgid %ld: %s", p->gid, msg);
      return;
    case STAGE_RLIMIT:
      snprintf(out, outlen, "ESANDBOX setrlimit: %s", msg);
      return;
    case STAGE_NNP:
      snprintf(out, outlen, "ESANDBOX no_new_privs: %s", msg);
      return;
    case STAGE_SIGNALS:
    case STAGE_PDEATHSIG:
    case STAGE_FDS:
      break;
  }
  snprintf(out, outlen, "ESANDBOX child set-up step %d: %s", f->stage, msg);
}
