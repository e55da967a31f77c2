/* vigil-exec --server: the executor's long-lived exec server. The daemon starts it once; each
 * run is then a message with the run's pipes, and a fork of this small static process (no
 * exec of the helper) becomes the run's supervisor: a child subreaper in a session of its
 * own that does what the one-shot helper does (supervise.c). The confinement is prepared once
 * here (the Landlock ruleset, the seccomp program) and inherited by every supervisor.
 * The server reaps its supervisors as they end, never blocks on the daemon (replies wait in a
 * queue while the socket is full, and requests wait in the socket while replies pile up),
 * and kills whatever a supervisor killed by a signal left behind (as a subreaper itself, the
 * server inherits those processes). Protocol: src/exec/protocol.h. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec/supervise.h"

#define SOCK_FD 3
#define MAX_BACKLOG 4096 /* replies queued before requests are left in the socket */
#define BATCH 32         /* requests taken per wake-up, so reaping keeps up */

typedef struct {
  vg_exec_srv_reply_t r;
  int fd; /* the supervisor's pidfd, sent with the reply; -1: none */
} reply_t;

static reply_t *replies;
static size_t rhead, rlen, rcap;
static pid_t *sups; /* live supervisors */
static size_t nsups, capsups;
static char reqbuf[sizeof(vg_exec_srv_req_t) + VG_EXEC_SRV_MAX_REQ + 1] __attribute__((aligned(8)));
static pid_t server_pid;

/* Closes every fd from `from` up. */
static void close_from(unsigned from)
{
#ifdef SYS_close_range
  if (syscall(SYS_close_range, from, ~0U, 0U) == 0) {
    return;
  }
#endif
  struct rlimit rl;
  rlim_t max =
      getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? rl.rlim_cur : 65536;
  for (rlim_t fd = from; fd < max; fd++) {
    close((int)fd);
  }
}

static bool queue_reply(uint32_t type, uint64_t id, pid_t pid, int err, int fd)
{
  if (rlen == rcap) {
    size_t nc = rcap ? rcap * 2 : 64;
    reply_t *nr = realloc(replies, nc * sizeof(*nr));
    if (nr == NULL) {
      if (fd >= 0) {
        close(fd);
      }
      return false;
    }
    replies = nr;
    rcap = nc;
  }
  replies[rlen++] = (reply_t){
    .r = { .magic = VG_EXEC_SRV_MAGIC, .type = type, .id = id, .pid = pid, .err = err },
    .fd = fd,
  };
  return true;
}

/* Sends the queued replies the socket takes. False when the daemon is gone. */
static bool flush_replies(int sock)
{
  while (rhead < rlen) {
    reply_t *q = &replies[rhead];
    struct iovec iov = { .iov_base = &q->r, .iov_len = sizeof(q->r) };
    union {
      struct cmsghdr h;
      char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (q->fd >= 0) {
      memset(&cm, 0, sizeof(cm));
      mh.msg_control = cm.buf;
      mh.msg_controllen = sizeof(cm.buf);
      struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
      h->cmsg_level = SOL_SOCKET;
      h->cmsg_type = SCM_RIGHTS;
      h->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(h), &q->fd, sizeof(int));
    }
    ssize_t n = sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
      return true; /* POLLOUT says when to go on */
    }
    if (n < 0) {
      return false;
    }
    if (q->fd >= 0) {
      close(q->fd);
    }
    rhead++;
  }
  rhead = rlen = 0;
  return true;
}

/* Reaps every child that has ended. A supervisor that ended on a signal (the daemon's
 * SIGKILL backstop) may have left processes that re-parented to us; an orphan we reap may
 * have left children too: those are killed, every supervisor's tree excepted. */
static void reap(void)
{
  bool sweep = false;
  for (;;) {
    int st;
    pid_t r = waitpid(-1, &st, WNOHANG);
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      break;
    }
    size_t i = 0;
    while (i < nsups && sups[i] != r) {
      i++;
    }
    if (i < nsups) {
      sups[i] = sups[--nsups];
      sweep |= !WIFEXITED(st);
    } else {
      sweep = true;
    }
  }
  if (sweep) {
    exec_signal_descendants(SIGKILL, sups, nsups);
  }
}

/* In the forked supervisor: the run's request (reqbuf, len bytes, NUL-terminated) into the
 * policy; environ becomes the run's environment. */
static bool parse_request(size_t len, const confine_policy_t *base, confine_policy_t *p)
{
  const vg_exec_srv_req_t *h = (const vg_exec_srv_req_t *)(void *)reqbuf;
  char *s = reqbuf + sizeof(*h), *end = reqbuf + len;
  size_t n = 2 + (size_t)h->argc + (size_t)h->nenv;
  if (h->argc < 1 || n > len) {
    return false;
  }
  char **strs = calloc(n + 2, sizeof(*strs));
  if (strs == NULL) {
    return false;
  }
  for (size_t i = 0, k = 0; i < n; i++, k++) {
    char *nul = s < end ? memchr(s, '\0', (size_t)(end - s)) : NULL;
    if (nul == NULL) {
      return false;
    }
    k += i == 2 + h->argc; /* argv's NULL */
    strs[k] = s;
    s = nul + 1;
  }
  *p = *base;
  p->path = strs[0];
  p->cwd = strs[1];
  p->argv = strs + 2;
  environ = strs + 3 + h->argc;
  p->status_fd = VG_EXEC_STATUS_FD;
  return p->path[0] == '/' && p->cwd[0] == '/';
}

/* The forked supervisor of one run: the run's fds on 0-3 (and the Landlock ruleset on 4),
 * nothing else open, then what the one-shot helper does. */
_Noreturn static void supervisor(const confine_policy_t *base,
                                 confine_t *c,
                                 size_t len,
                                 const int *fds,
                                 int devnull,
                                 pid_t server,
                                 const sigset_t *set)
{
  const vg_exec_srv_req_t *h = (const vg_exec_srv_req_t *)(void *)reqbuf;
  setsid();
  int src[4], hi[4];
  int k = 0;
  src[0] = (h->flags & VG_EXEC_REQ_STDIN) ? fds[k++] : devnull;
  for (int i = 1; i < 4; i++) {
    src[i] = fds[k++];
  }
  for (int i = 0; i < 4; i++) {
    hi[i] = fcntl(src[i], F_DUPFD, 10);
    if (hi[i] < 0) {
      _exit(1);
    }
  }
  for (int i = 0; i < 4; i++) {
    if (dup2(hi[i], i) != i) {
      _exit(1);
    }
  }
  if (c->ruleset_fd >= 0) {
    if (dup2(c->ruleset_fd, 4) != 4) {
      _exit(1);
    }
    c->ruleset_fd = 4;
  }
  close_from(c->ruleset_fd >= 0 ? 5 : 4); /* the socket was fd 3 */
  exec_status_fd = VG_EXEC_STATUS_FD;
  /* The server's death stops the run as a timeout would; the server's death is the
   * daemon's too (its PR_SET_PDEATHSIG). */
  prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
  if (getppid() != server) {
    exec_say("error", "EHELPER the exec server is gone");
    _exit(1);
  }
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    exec_say("error", "ESANDBOX PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    _exit(1);
  }
  confine_policy_t p;
  if (!parse_request(len, base, &p)) {
    exec_say("error", "EINVAL bad request to the exec server");
    _exit(2);
  }
  _exit(exec_run_target(&p, c, set, server));
}

/* Takes one request from the socket and starts its supervisor. 1: taken, 0: none waiting,
 * -1: the daemon is gone. */
static int take_request(
    int sock, const confine_policy_t *base, confine_t *c, int devnull, const sigset_t *set)
{
  struct iovec iov = { .iov_base = reqbuf, .iov_len = sizeof(reqbuf) - 1 };
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(4 * sizeof(int))];
  } cm;
  struct msghdr mh = {
    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)
  };
  ssize_t n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0 && errno == EINTR) {
    return 1;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    return 0;
  }
  if (n <= 0) {
    return -1;
  }
  int fds[4] = { -1, -1, -1, -1 }, nfds = 0;
  for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h != NULL; h = CMSG_NXTHDR(&mh, h)) {
    if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) {
      continue;
    }
    int cnt = (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < cnt; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(h) + (size_t)i * sizeof(int), sizeof(int));
      if (nfds < 4) {
        fds[nfds++] = fd;
      } else {
        close(fd);
      }
    }
  }
  const vg_exec_srv_req_t *h = (const vg_exec_srv_req_t *)(void *)reqbuf;
  bool whole = (size_t)n >= sizeof(*h) && !(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
  uint64_t id = (size_t)n >= sizeof(*h) ? h->id : 0;
  int want = whole && (h->flags & VG_EXEC_REQ_STDIN) ? 4 : 3;
  pid_t pid = -1;
  int err = EBADMSG;
  if (whole && h->magic == VG_EXEC_SRV_MAGIC && nfds == want) {
    reqbuf[n] = '\0';
    pid = fork();
    if (pid == 0) {
      supervisor(base, c, (size_t)n, fds, devnull, server_pid, set);
    }
    err = errno;
  }
  for (int i = 0; i < nfds; i++) {
    close(fds[i]);
  }
  if (pid < 0) {
    queue_reply(VG_EXEC_SRV_FAILED, id, 0, err, -1);
    return 1;
  }
  if (nsups == capsups) {
    size_t nc = capsups ? capsups * 2 : 64;
    pid_t *ns = realloc(sups, nc * sizeof(*ns));
    if (ns == NULL) {
      /* cannot keep track of it: it must not run unwatched */
      kill(-pid, SIGKILL);
      queue_reply(VG_EXEC_SRV_FAILED, id, 0, ENOMEM, -1);
      return 1;
    }
    sups = ns;
    capsups = nc;
  }
  sups[nsups++] = pid;
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (!queue_reply(VG_EXEC_SRV_STARTED, id, pid, 0, pidfd)) {
    kill(-pid, SIGKILL);
  }
  return 1;
}

int exec_server(confine_policy_t *p)
{
  exec_status_fd = -1; /* fd 3 is the socket: a stray status line must not go there */
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (p->ppid > 0 && getppid() != (pid_t)p->ppid) {
    return 1; /* the daemon is already gone */
  }
  if (p->sock_fd != SOCK_FD) {
    if (dup2(p->sock_fd, SOCK_FD) != SOCK_FD) {
      return 1;
    }
    close(p->sock_fd);
  }
  int sock = SOCK_FD;
  server_pid = getpid();
  close_from(SOCK_FD + 1); /* whatever the daemon leaked */
  sigset_t set, all;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  all = set;
  sigaddset(&all, SIGPIPE);
  /* Blocked for good: the supervisors inherit the mask, so a stop signal that reaches one
   * before it is ready waits for its sigtimedwait. */
  sigprocmask(SIG_BLOCK, &all, NULL);
  int sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int rc = 1;
  confine_t c;
  char why[600];
  if (sigfd < 0 || devnull < 0 || prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    queue_reply(VG_EXEC_SRV_FAILED, 0, 0, errno, -1);
    flush_replies(sock);
    return 1;
  }
  if (!confine_prepare(p, &c, why, sizeof(why))) {
    queue_reply(VG_EXEC_SRV_FAILED, 0, 0, EINVAL, -1);
    flush_replies(sock);
    return 1;
  }
  queue_reply(VG_EXEC_SRV_READY, 0, getpid(), 0, -1);
  for (;;) {
    if (!flush_replies(sock)) {
      rc = 0;
      break;
    }
    size_t backlog = rlen - rhead;
    struct pollfd pf[2] = {
      { .fd = sock,
        .events = (short)((backlog < MAX_BACKLOG ? POLLIN : 0) | (backlog ? POLLOUT : 0)) },
      { .fd = sigfd, .events = POLLIN },
    };
    if (poll(pf, 2, -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      break;
    }
    if (pf[1].revents & POLLIN) {
      struct signalfd_siginfo si[16];
      ssize_t n = read(sigfd, si, sizeof(si));
      bool stop = false;
      for (ssize_t i = 0; i < n / (ssize_t)sizeof(si[0]); i++) {
        stop |= si[i].ssi_signo != SIGCHLD;
      }
      reap();
      if (stop) {
        rc = 0;
        break;
      }
    }
    if (pf[0].revents & POLLIN) {
      int r = 1;
      for (int i = 0; i < BATCH && r > 0; i++) {
        r = take_request(sock, p, &c, devnull, &set);
      }
      if (r < 0) {
        rc = 0;
        break;
      }
    } else if (pf[0].revents & (POLLHUP | POLLERR | POLLNVAL)) {
      rc = 0;
      break;
    }
  }
  /* The supervisors get SIGTERM (their PR_SET_PDEATHSIG) and stop their trees. */
  confine_release(&c);
  free(replies);
  free(sups);
  return rc;
}
