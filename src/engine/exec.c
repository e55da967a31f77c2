/* The sandboxed process runner. See exec.h; the helper, the exec server and their protocol are
 * in src/exec/.
 *
 * Runs go through the exec server (below) unless it is off or failed; otherwise a run is the
 * helper, started with posix_spawn in a session of its own (so it leads its own
 * process group) and watched through a pidfd on a uv_poll; three pipes read with uv_read
 * (stdout, stderr, the helper's status on fd 3); an optional stdin pipe written with uv_write
 * and closed; and one timer that is, in turn, the run's timeout,
 * the backstop after the grace period (SIGKILL to the group in case the helper itself hangs)
 * and, once the helper has exited, a bound on the wait for the pipes' EOF. A run finishes
 * when the helper has exited and every pipe is at EOF; the helper only exits after the whole
 * process tree is reaped, so by then nothing of the run is left. Output past max_output is
 * dropped, flagged, and stops the run ("output cap"): a process that floods its output is
 * stuck or hostile, and letting it go on would cost the loop reads for nothing.
 *
 * Why not uv_spawn: libuv 1.44 starts a child with fork(), which copies the daemon's page
 * tables and blocks the loop for it; on a small VM that costs about as much as the whole rest
 * of a run. posix_spawn is a vfork-style clone, and POSIX_SPAWN_SETSID gives what
 * UV_PROCESS_DETACHED gave. A pidfd (Linux >= 5.4, which Landlock's 5.13 exceeds anyway) says
 * when the helper exits, and waitid(P_PIDFD) reaps exactly it.
 *
 * The exec server: even posix_spawn of a small static helper costs an exec per run, most of
 * what a run of /bin/true costs. So the executor starts `vigil-exec --server` once and sends
 * each run to it as one message on a SOCK_SEQPACKET socketpair, with the run's pipes attached
 * (SCM_RIGHTS); the server forks a supervisor that confines and supervises exactly as the
 * helper does (the same code, src/exec/supervise.c) and answers with its pid and a pidfd. The
 * supervisor is not our child: its status pipe's EOF says it has ended (it holds the pipe until
 * its whole tree is reaped), and the pidfd makes signalling it safe from pid reuse. Messages
 * the socket cannot take yet wait in a queue here, as do runs made while a restarted server
 * has not said it is ready. When the server dies, the runs it had are stopped by their
 * supervisors (their PR_SET_PDEATHSIG) and reported as EHELPER errors, and the server is
 * started again once; when that fails, or it keeps dying, runs go back to one helper per
 * run, which confines them with the same code: never silently less. */
#include "engine/exec.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec/protocol.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_GRACE_MS 5000
#define DEFAULT_MAX_OUTPUT (64u << 10)
#define STATUS_MAX 8192  /* of status lines kept per run: a few hundred bytes are used */
#define BACKSTOP_MS 1000 /* past the grace: the helper had its chance to stop the tree */
#define DRAIN_MS 1000    /* past the helper's exit: a pipe still open is someone else's */
#define PROBE_MAX (64u << 10)
#define SERVER_HELLO_MS 5000 /* for the first server's READY, at creation */
#define SERVER_WINDOW_NS (60 * 1000000000ull)
#define SERVER_MAX_DEATHS 3 /* in SERVER_WINDOW_NS: then one helper per run for good */

static const char *const default_env_allow[] = { "PATH",   "HOME", "LANG",
                                                 "LC_ALL", "TZ",   "KUBECONFIG" };

typedef struct {
  char *buf;
  size_t len, cap, max;
  bool truncated, eof;
} sink_t;

typedef enum { RUN_RUNNING, RUN_STOPPING, RUN_EXITED, RUN_DONE } run_phase_t;

struct vg_exec_run {
  vg_exec_t *ex;
  uv_poll_t exit_poll; /* on the helper's pidfd */
  int pidfd;
  uv_pipe_t in, out, err, status;
  uv_timer_t timer;
  uv_write_t write_req;
  char *stdin_buf;
  bool has_stdin;
  sink_t sout, serr, sstat;
  int pid;
  int open_handles;
  run_phase_t phase;
  bool stopping; /* SIGTERM sent to the group */
  bool exited;
  int64_t exit_status;
  int term_signal;
  bool cancelled, timed_out;
  const char *killed;
  uint64_t started_ns, ended_ns;
  vg_exec_done_fn done;
  void *ud;
  vg_exec_run_t *prev, *next;
  int far[4];    /* the helper's or supervisor's ends of the pipes, until handed over */
  char *msg;     /* the request (protocol.h's server form, also read by the spawn path) */
  size_t msglen; /* until sent */
  uint64_t id;
  bool via_server; /* started (or to be started) by the exec server */
  bool queued;     /* waiting in ex's send queue */
  bool sent;       /* given to the server of generation gen */
  bool replied;    /* the server said STARTED or FAILED */
  bool srv_lost;   /* the server died before answering */
  unsigned gen;
  int pending_sig; /* to send once the supervisor is known */
  char *why;       /* nothing ran for a reason found here (EHELPER detail) */
  vg_exec_run_t *qnext;
};

typedef enum { SRV_STARTING, SRV_UP } srv_state_t;

/* One exec server process; a restart makes a new one. Freed once its poll handle closes. */
typedef struct {
  vg_exec_t *ex;
  uv_poll_t poll; /* on sock */
  int sock, pidfd;
  pid_t pid;
  unsigned gen;
  srv_state_t state;
  bool want_out; /* the send queue waits for the socket */
  bool closed;
} srv_t;

struct vg_exec {
  uv_loop_t *loop;
  char *helper;
  char **allow; /* realpaths */
  size_t nallow;
  char **env; /* "NAME=value" taken from the daemon at creation */
  size_t nenv;
  char *tmpdir_env; /* "TMPDIR=<scratch>" */
  char *scratch;
  bool scratch_made;
  uint64_t timeout_ms, grace_ms;
  size_t max_output;
  char **hargs; /* helper options shared by every run */
  size_t nhargs;
  vg_exec_tiers_t tiers;
  char *summary, *notes;
  vg_exec_run_t *runs;
  size_t active;
  bool freeing;
  bool use_server; /* runs go to the exec server */
  srv_t *srv;      /* the current server; NULL: none */
  size_t srv_open; /* server structs not yet freed */
  unsigned srv_gen;
  uint64_t next_id;
  vg_exec_run_t *q_head, *q_tail; /* runs waiting to be sent */
  uint64_t deaths[SERVER_MAX_DEATHS];
  unsigned ndeaths;
  vg_exec_log_fn log;
  void *log_ud;
  vg_exec_server_info_t info;
  char *fallback;
};

static char discard[64 << 10]; /* bytes past a cap land here; the loop is single-threaded */

int vg_exec_mode_parse(const char *s)
{
  if (s == NULL) {
    return -1;
  }
  return strcmp(s, "auto") == 0      ? VG_EXEC_AUTO
         : strcmp(s, "require") == 0 ? VG_EXEC_REQUIRE
         : strcmp(s, "off") == 0     ? VG_EXEC_OFF
                                     : -1;
}

static const char *mode_name(vg_exec_mode_t m)
{
  return m == VG_EXEC_REQUIRE ? "require" : m == VG_EXEC_OFF ? "off" : "auto";
}

static char *dupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dupf(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) {
    s = NULL;
  }
  va_end(ap);
  return s;
}

static void free_strv(char **v, size_t n)
{
  for (size_t i = 0; v != NULL && i < n; i++) {
    free(v[i]);
  }
  free(v);
}

static bool push_str(char ***v, size_t *n, char *s)
{
  if (s == NULL) {
    return false;
  }
  char **nv = realloc(*v, (*n + 2) * sizeof(**v));
  if (nv == NULL) {
    free(s);
    return false;
  }
  nv[(*n)++] = s;
  nv[*n] = NULL;
  *v = nv;
  return true;
}

/* ---- status lines (src/exec/protocol.h) ---- */

typedef struct {
  char *tiers, *bpf, *error;
  const char *detail;
  char *notes; /* "; "-joined, malloc'd */
  bool final;
  int code, signal;
} status_t;

/* Splits buf (NUL-terminated, modified in place) into its lines; strings point into buf. */
static void status_parse(char *buf, size_t len, status_t *st)
{
  memset(st, 0, sizeof(*st));
  st->code = -1;
  st->notes = calloc(1, len + 1);
  size_t nlen = 0;
  for (char *line = buf; line != NULL && *line != '\0';) {
    char *nl = strchr(line, '\n');
    if (nl == NULL) {
      break; /* a partial line: the helper died while writing */
    }
    *nl = '\0';
    char *sp = strchr(line, ' ');
    char *text = sp != NULL ? sp + 1 : line + strlen(line);
    if (sp != NULL) {
      *sp = '\0';
    }
    if (strcmp(line, "tiers") == 0) {
      st->tiers = text;
    } else if (strcmp(line, "note") == 0 && st->notes != NULL) {
      nlen += (size_t)sprintf(st->notes + nlen, "%s%s", nlen > 0 ? "; " : "", text);
    } else if (strcmp(line, "bpf") == 0) {
      st->bpf = text;
    } else if (strcmp(line, "exit") == 0) {
      st->final = true;
      st->code = atoi(text);
    } else if (strcmp(line, "signal") == 0) {
      st->final = true;
      st->signal = atoi(text);
    } else if (strcmp(line, "error") == 0) {
      st->final = true;
      char *d = strchr(text, ' ');
      if (d != NULL) {
        *d++ = '\0';
      }
      st->error = text;
      st->detail = d != NULL ? d : "";
    }
    line = nl + 1;
  }
}

/* ---- runs ---- */

static void ex_destroy(vg_exec_t *ex);
static void ex_maybe_destroy(vg_exec_t *ex);
static void srv_pump(vg_exec_t *ex);
static void srv_died(srv_t *s, const char *why);

static void sink_free(sink_t *k)
{
  free(k->buf);
  k->buf = NULL;
}

static void close_fd(int *fd)
{
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

static void close_far(vg_exec_run_t *run)
{
  for (int i = 0; i < 4; i++) {
    close_fd(&run->far[i]);
  }
}

static void unqueue(vg_exec_run_t *run)
{
  if (!run->queued) {
    return;
  }
  vg_exec_t *ex = run->ex;
  vg_exec_run_t **pp = &ex->q_head, *prev = NULL;
  while (*pp != run) {
    prev = *pp;
    pp = &(*pp)->qnext;
  }
  *pp = run->qnext;
  if (ex->q_tail == run) {
    ex->q_tail = prev;
  }
  run->qnext = NULL;
  run->queued = false;
}

static void run_closed(uv_handle_t *h)
{
  vg_exec_run_t *run = h->data;
  if (--run->open_handles > 0) {
    return;
  }
  vg_exec_t *ex = run->ex;
  unqueue(run);
  if (run->prev != NULL) {
    run->prev->next = run->next;
  } else {
    ex->runs = run->next;
  }
  if (run->next != NULL) {
    run->next->prev = run->prev;
  }
  ex->active--;
  sink_free(&run->sout);
  sink_free(&run->serr);
  sink_free(&run->sstat);
  free(run->stdin_buf);
  free(run->msg);
  free(run->why);
  close_far(run);
  if (run->pidfd >= 0) {
    close(run->pidfd); /* after its poll handle is closed */
  }
  free(run);
  ex_maybe_destroy(ex);
}

static void close_handle(vg_exec_run_t *run, uv_handle_t *h)
{
  if (h->data == run && !uv_is_closing(h)) {
    uv_close(h, run_closed);
  }
}

static void close_all(vg_exec_run_t *run)
{
  close_handle(run, (uv_handle_t *)&run->timer);
  close_handle(run, (uv_handle_t *)&run->exit_poll);
  close_handle(run, (uv_handle_t *)&run->out);
  close_handle(run, (uv_handle_t *)&run->err);
  close_handle(run, (uv_handle_t *)&run->status);
  if (run->has_stdin) {
    close_handle(run, (uv_handle_t *)&run->in);
  }
}

static void on_timer(uv_timer_t *t);
static void maybe_finish(vg_exec_run_t *run);

/* The supervisor (the helper or the server's fork) has ended, or never will start: what is
 * left is the pipes' EOF, bounded by DRAIN_MS. */
static void mark_exited(vg_exec_run_t *run)
{
  if (run->exited) {
    return;
  }
  run->exited = true;
  run->ended_ns = uv_hrtime();
  run->phase = RUN_EXITED;
  uv_timer_start(&run->timer, on_timer, DRAIN_MS, 0);
}

/* Nothing ran, for a reason found here: the run reports EHELPER with detail once its pipes
 * (whose far ends are closed now) are at EOF. */
static void fail_run(vg_exec_run_t *run, const char *detail)
{
  unqueue(run);
  close_far(run);
  if (run->why == NULL) {
    run->why = strdup(detail);
  }
  mark_exited(run);
  maybe_finish(run);
}

/* sig to the supervisor's process group, checked through the pidfd first: once the
 * supervisor is reaped its pid may name another process. A run the server has not answered
 * for yet gets it with the answer; one still in the send queue is never sent. */
static void signal_run(vg_exec_run_t *run, int sig)
{
  if (run->exited) {
    return;
  }
  if (run->pidfd >= 0) {
    if (syscall(SYS_pidfd_send_signal, run->pidfd, 0, NULL, 0) == 0) {
      kill(-run->pid, sig);
    }
  } else if (run->queued) {
    fail_run(run, "stopped before the exec server started it");
  } else if (run->sent && !run->replied) {
    run->pending_sig = sig == SIGKILL || run->pending_sig == SIGKILL ? SIGKILL : sig;
  }
}

/* SIGTERM to the supervisor's group: the supervisor stops the tree (it finds the setsid()
 * escapees), the rest of the group gets it at once. SIGKILL follows if the supervisor has not
 * exited when the grace period and a margin are over. */
static void stop_tree(vg_exec_run_t *run)
{
  if (run->stopping || run->exited) {
    return;
  }
  run->stopping = true;
  run->phase = RUN_STOPPING;
  uv_timer_start(&run->timer, on_timer, run->ex->grace_ms + BACKSTOP_MS, 0);
  signal_run(run, SIGTERM);
}

static void finish(vg_exec_run_t *run)
{
  if (run->phase == RUN_DONE) {
    return;
  }
  run->phase = RUN_DONE;
  uv_timer_stop(&run->timer);
  if (run->ended_ns == 0) {
    run->ended_ns = uv_hrtime();
  }
  if (!run->cancelled) {
    sink_t *k = &run->sstat;
    status_t st;
    status_parse(k->buf != NULL ? k->buf : (char *)"", k->len, &st);
    vg_exec_result_t res = {
      .code = st.final && st.error == NULL && st.signal == 0 ? st.code : -1,
      .signal = st.signal,
      .stdout_data = run->sout.buf != NULL ? run->sout.buf : "",
      .stdout_len = run->sout.len,
      .stdout_truncated = run->sout.truncated,
      .stderr_data = run->serr.buf != NULL ? run->serr.buf : "",
      .stderr_len = run->serr.len,
      .stderr_truncated = run->serr.truncated,
      .timed_out = run->timed_out,
      .killed = run->killed,
      .duration = (double)(run->ended_ns - run->started_ns) / 1e9,
      .error = st.error,
      .detail = st.detail,
      .tiers = st.tiers != NULL ? st.tiers : "",
      .notes = st.notes != NULL ? st.notes : "",
    };
    char detail[160];
    if (!st.final) {
      /* The supervisor died without a word: killed by our backstop, its server gone before
       * it started, not started at all, or a bug. */
      if (run->stopping && run->term_signal != 0) {
        res.signal = run->term_signal;
      } else {
        res.error = "EHELPER";
        if (run->why != NULL) {
          res.detail = run->why;
        } else if (run->srv_lost) {
          res.detail = "the exec server died before it started the run";
        } else if (run->via_server) {
          res.detail = "the exec server's supervisor ended without an outcome";
        } else {
          if (run->term_signal != 0) {
            snprintf(detail, sizeof(detail), "vigil-exec ended by signal %d without an outcome",
                     run->term_signal);
          } else {
            snprintf(detail, sizeof(detail), "vigil-exec exited %lld without an outcome",
                     (long long)run->exit_status);
          }
          res.detail = detail;
        }
      }
    }
    run->done(run->ud, &res);
    free(st.notes);
  }
  close_all(run);
}

static void maybe_finish(vg_exec_run_t *run)
{
  if (run->exited && run->sout.eof && run->serr.eof && run->sstat.eof) {
    finish(run);
  }
}

static void on_timer(uv_timer_t *t)
{
  vg_exec_run_t *run = t->data;
  switch (run->phase) {
    case RUN_RUNNING:
      run->timed_out = true;
      run->killed = "timeout";
      stop_tree(run);
      break;
    case RUN_STOPPING:
      signal_run(run, SIGKILL);
      break;
    case RUN_EXITED:
      finish(run); /* some pipe is held open by a process outside the tree: stop waiting */
      break;
    case RUN_DONE:
      break;
  }
}

static void on_helper_exit(uv_poll_t *h, int status, int events)
{
  (void)status;
  (void)events;
  vg_exec_run_t *run = h->data;
  siginfo_t si;
  memset(&si, 0, sizeof(si));
  int rc = waitid(P_PIDFD, (id_t)run->pidfd, &si, WEXITED | WNOHANG);
  if (rc == 0 && si.si_pid == 0) {
    return; /* not yet */
  }
  uv_poll_stop(h);
  if (rc == 0 && si.si_code == CLD_EXITED) {
    run->exit_status = si.si_status;
  } else if (rc == 0) {
    run->term_signal = si.si_status;
  } else {
    run->exit_status = -1; /* reaped by someone else: the status lines tell the outcome */
  }
  mark_exited(run);
  maybe_finish(run);
}

static sink_t *sink_of(vg_exec_run_t *run, uv_handle_t *h)
{
  return h == (uv_handle_t *)&run->out   ? &run->sout
         : h == (uv_handle_t *)&run->err ? &run->serr
                                         : &run->sstat;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  vg_exec_run_t *run = h->data;
  sink_t *k = sink_of(run, h);
  if (k->len >= k->max) {
    *buf = uv_buf_init(discard, sizeof(discard));
    return;
  }
  if (k->cap - k->len < 4096 + 1 && k->cap < k->max + 1) {
    size_t cap = k->cap ? k->cap * 2 : 16384;
    cap = cap > k->max + 1 ? k->max + 1 : cap;
    char *nb = realloc(k->buf, cap);
    if (nb != NULL) {
      k->buf = nb;
      k->cap = cap;
    }
  }
  if (k->buf == NULL || k->cap <= k->len + 1) {
    *buf = uv_buf_init(discard, sizeof(discard)); /* out of memory: counts as truncated */
    return;
  }
  size_t room = k->cap - k->len - 1; /* the NUL */
  room = room > k->max - k->len ? k->max - k->len : room;
  *buf = uv_buf_init(k->buf + k->len, (unsigned)room);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  vg_exec_run_t *run = s->data;
  sink_t *k = sink_of(run, (uv_handle_t *)s);
  if (n > 0) {
    if (buf->base == discard) {
      k->truncated = true;
      if (k != &run->sstat && run->killed == NULL && !run->cancelled) {
        run->killed = "output cap";
        stop_tree(run);
      }
    } else {
      k->len += (size_t)n;
      k->buf[k->len] = '\0';
    }
  } else if (n < 0) {
    k->eof = true;
    uv_read_stop(s);
    if (k == &run->sstat && run->via_server) {
      /* The server's supervisor holds its status pipe until its whole tree is reaped. */
      mark_exited(run);
    }
    maybe_finish(run);
  }
}

static void on_written(uv_write_t *w, int status)
{
  (void)status; /* EPIPE when the target does not read it all: its business */
  vg_exec_run_t *run = w->data;
  free(run->stdin_buf);
  run->stdin_buf = NULL;
  close_handle(run, (uv_handle_t *)&run->in);
}

/* ---- starting a run ---- */

static bool env_name_ok(const char *kv, size_t *namelen)
{
  const char *eq = strchr(kv, '=');
  if (eq == NULL || eq == kv) {
    return false;
  }
  for (const char *c = kv; c < eq; c++) {
    bool alpha = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || *c == '_';
    if (!alpha && !(c > kv && *c >= '0' && *c <= '9')) {
      return false;
    }
  }
  *namelen = (size_t)(eq - kv);
  /* The dynamic loader's variables would run code of the caller's choosing in the target. */
  return strncmp(kv, "LD_", 3) != 0;
}

/* The target's environment: the snapshot, TMPDIR, then the request's (same name: replaced).
 * The array holds borrowed pointers. */
static const char **build_env(vg_exec_t *ex, const vg_exec_req_t *req, char *err, size_t errlen)
{
  const char **env = calloc(ex->nenv + req->nenv + 2, sizeof(*env));
  if (env == NULL) {
    snprintf(err, errlen, "ENOMEM: out of memory");
    return NULL;
  }
  size_t n = 0;
  for (size_t i = 0; i < ex->nenv; i++) {
    env[n++] = ex->env[i];
  }
  env[n++] = ex->tmpdir_env;
  for (size_t i = 0; i < req->nenv; i++) {
    size_t nl;
    if (req->env[i] == NULL || !env_name_ok(req->env[i], &nl)) {
      snprintf(err, errlen, "EINVAL: bad environment entry %.60s", req->env[i] ? req->env[i] : "");
      free(env);
      return NULL;
    }
    size_t j = 0;
    while (j < n && !(strncmp(env[j], req->env[i], nl + 1) == 0)) {
      j++;
    }
    env[j] = req->env[i];
    n += j == n;
  }
  env[n] = NULL;
  return env;
}

/* argv[0] after realpath, when it is on the allowlist; else NULL with err set. */
static const char *resolve_allowed(vg_exec_t *ex, const char *path, char *err, size_t errlen)
{
  if (path == NULL || path[0] != '/') {
    snprintf(err, errlen, "EDENIED: %.200s: not an absolute path", path ? path : "(null)");
    return NULL;
  }
  char real[PATH_MAX];
  if (realpath(path, real) == NULL) {
    int e = errno;
    snprintf(err, errlen, "%s: %.200s: %s", e == ENOENT ? "ENOENT" : "EDENIED", path, strerror(e));
    return NULL;
  }
  for (size_t i = 0; i < ex->nallow; i++) {
    if (strcmp(ex->allow[i], real) == 0) {
      return ex->allow[i];
    }
  }
  snprintf(err, errlen, "EDENIED: %.200s is not on the executor's allowlist", path);
  return NULL;
}

/* The run's pipes: our ends opened as its uv pipes, the far ends (the supervisor's: it reads 0,
 * writes 1-3) kept in run->far, above 10 so that placing them on 0-3 in the helper cannot
 * overwrite one another. "ENAME: detail" in err on failure. */
static bool make_pipes(vg_exec_run_t *run, char *err, size_t errlen)
{
  uv_pipe_t *pipes[] = { &run->in, &run->out, &run->err, &run->status };
  for (int i = run->has_stdin ? 0 : 1; i < 4; i++) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
      snprintf(err, errlen, "EHELPER: pipe: %s", strerror(errno));
      return false;
    }
    int near = i == 0 ? p[1] : p[0], f = i == 0 ? p[0] : p[1];
    run->far[i] = fcntl(f, F_DUPFD_CLOEXEC, 10);
    close(f);
    int rc = run->far[i] >= 0 ? uv_pipe_open(pipes[i], near) : -errno;
    if (rc != 0) {
      close(near);
      snprintf(err, errlen, "EHELPER: pipe: %s", uv_strerror(rc));
      return false;
    }
  }
  return true;
}

/* The request in the server's form (protocol.h): the header, then the file, the cwd, argv
 * and env as NUL-terminated strings. */
static char *encode_req(const char *file,
                        const char *cwd,
                        const vg_exec_req_t *req,
                        const char **env,
                        uint32_t flags,
                        uint64_t id,
                        size_t *len)
{
  size_t nenv = 0, n = sizeof(vg_exec_srv_req_t) + strlen(file) + strlen(cwd) + 2;
  for (size_t i = 0; i < req->argc; i++) {
    n += strlen(req->argv[i]) + 1;
  }
  for (; env[nenv] != NULL; nenv++) {
    n += strlen(env[nenv]) + 1;
  }
  char *m = malloc(n);
  if (m == NULL) {
    return NULL;
  }
  vg_exec_srv_req_t h = { .magic = VG_EXEC_SRV_MAGIC,
                          .flags = flags,
                          .id = id,
                          .argc = (uint32_t)req->argc,
                          .nenv = (uint32_t)nenv };
  memcpy(m, &h, sizeof(h));
  char *p = m + sizeof(h);
  p = stpcpy(p, file) + 1;
  p = stpcpy(p, cwd) + 1;
  for (size_t i = 0; i < req->argc; i++) {
    p = stpcpy(p, req->argv[i]) + 1;
  }
  for (size_t i = 0; i < nenv; i++) {
    p = stpcpy(p, env[i]) + 1;
  }
  *len = n;
  return m;
}

/* How the helper (or the exec server) is spawned: a session of its own, no signal blocked or
 * ignored (the daemon ignores SIGPIPE). The caller adds its file actions and destroys both. */
static void helper_spawn_init(posix_spawn_file_actions_t *fa, posix_spawnattr_t *attr)
{
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawn_file_actions_init(fa);
  posix_spawnattr_init(attr);
  posix_spawnattr_setflags(attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setsigmask(attr, &none);
  posix_spawnattr_setsigdefault(attr, &all);
}

/* Spawns the helper for the run, from its request, with run->far on its fds 0-3 (stdin:
 * /dev/null when the request gives none), and watches it through a pidfd. */
static bool spawn_helper(vg_exec_run_t *run, char *err, size_t errlen)
{
  vg_exec_t *ex = run->ex;
  vg_exec_srv_req_t h;
  memcpy(&h, run->msg, sizeof(h));
  const char **strs = calloc(2 + h.argc + 1 + h.nenv + 1, sizeof(*strs));
  const char **args = calloc(ex->nhargs + h.argc + 6, sizeof(*args));
  char *path_opt = NULL, *cwd_opt = NULL;
  if (strs != NULL && args != NULL) {
    const char *p = run->msg + sizeof(h);
    for (size_t i = 0, k = 0; i < 2 + (size_t)h.argc + h.nenv; i++, k++) {
      k += i == 2 + h.argc; /* argv's NULL */
      strs[k] = p;
      p += strlen(p) + 1;
    }
    path_opt = dupf("--path=%s", strs[0]);
    cwd_opt = dupf("--cwd=%s", strs[1]);
  }
  if (path_opt == NULL || cwd_opt == NULL) {
    free(strs);
    free(args);
    free(path_opt);
    free(cwd_opt);
    snprintf(err, errlen, "ENOMEM: out of memory");
    return false;
  }
  char ppid_opt[32];
  snprintf(ppid_opt, sizeof(ppid_opt), "--ppid=%ld", (long)getpid());
  size_t na = 0;
  args[na++] = ex->helper;
  for (size_t i = 0; i < ex->nhargs; i++) {
    args[na++] = ex->hargs[i];
  }
  args[na++] = path_opt;
  args[na++] = cwd_opt;
  args[na++] = ppid_opt;
  args[na++] = "--";
  for (size_t i = 0; i < h.argc; i++) {
    args[na++] = strs[2 + i];
  }
  args[na] = NULL;
  const char **env = strs + 3 + h.argc;

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  pid_t pid = -1;
  helper_spawn_init(&fa, &attr);
  if (run->has_stdin) {
    posix_spawn_file_actions_adddup2(&fa, run->far[0], 0);
  } else {
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  }
  for (int i = 1; i < 4; i++) {
    posix_spawn_file_actions_adddup2(&fa, run->far[i], i);
  }
  const char *what = "spawn";
  int rc = posix_spawn(&pid, ex->helper, &fa, &attr, (char *const *)args, (char *const *)env);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  free(strs);
  free(args);
  free(path_opt);
  free(cwd_opt);
  close_far(run);
  if (rc == 0) {
    what = "pidfd_open";
    run->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    rc = errno;
    if (run->pidfd < 0) {
      /* started but cannot be watched: stop it now rather than leave it unsupervised */
      kill(-pid, SIGKILL);
      while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
      }
    }
  }
  if (rc != 0 && run->pidfd < 0) {
    snprintf(err, errlen, "EHELPER: cannot start %s: %s: %s", ex->helper, what, strerror(rc));
    return false;
  }
  free(run->msg);
  run->msg = NULL;
  run->via_server = false;
  run->pid = pid;
  ex->info.spawned_runs++;
  uv_poll_init(ex->loop, &run->exit_poll, run->pidfd);
  run->exit_poll.data = run;
  run->open_handles++;
  uv_poll_start(&run->exit_poll, UV_READABLE, on_helper_exit);
  return true;
}

/* ---- the exec server ---- */

static void srv_log(vg_exec_t *ex, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_log(vg_exec_t *ex, const char *fmt, ...)
{
  if (ex->log == NULL) {
    return;
  }
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  ex->log(ex->log_ud, msg);
}

static void srv_closed(uv_handle_t *h)
{
  srv_t *s = h->data;
  vg_exec_t *ex = s->ex;
  free(s);
  ex->srv_open--;
  ex_maybe_destroy(ex);
}

/* Stops the server process and reaps it (it is our child; killed, it is gone at once), then
 * closes its handle. */
static void srv_close(srv_t *s)
{
  vg_exec_t *ex = s->ex;
  if (s->closed) {
    return;
  }
  s->closed = true;
  if (ex->srv == s) {
    ex->srv = NULL;
    ex->info.pid = 0;
  }
  if (s->pidfd >= 0) {
    syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL, NULL, 0);
    siginfo_t si;
    while (waitid(P_PIDFD, (id_t)s->pidfd, &si, WEXITED) < 0 && errno == EINTR) {
    }
    close(s->pidfd);
    s->pidfd = -1;
  }
  uv_close((uv_handle_t *)&s->poll, srv_closed);
  close(s->sock); /* uv_poll does not own it; epoll forgot it when the poll stopped */
}

static void on_srv(uv_poll_t *h, int status, int events);

/* Hands the queued runs to the server while its socket takes them. */
static void srv_pump(vg_exec_t *ex)
{
  srv_t *s = ex->srv;
  while (s != NULL && s->state == SRV_UP && ex->q_head != NULL) {
    vg_exec_run_t *run = ex->q_head;
    int fds[4], nfds = 0;
    for (int i = run->has_stdin ? 0 : 1; i < 4; i++) {
      fds[nfds++] = run->far[i];
    }
    union {
      struct cmsghdr h;
      char buf[CMSG_SPACE(4 * sizeof(int))];
    } cm;
    memset(&cm, 0, sizeof(cm));
    struct iovec iov = { .iov_base = run->msg, .iov_len = run->msglen };
    struct msghdr mh = { .msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = cm.buf,
                         .msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int)) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    ssize_t n = sendmsg(s->sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
      if (!s->want_out) {
        s->want_out = true;
        uv_poll_start(&s->poll, UV_READABLE | UV_WRITABLE | UV_DISCONNECT, on_srv);
      }
      return;
    }
    if (n < 0) {
      char why[128];
      snprintf(why, sizeof(why), "sending a run: %s", strerror(errno));
      srv_died(s, why);
      return;
    }
    unqueue(run);
    close_far(run);
    free(run->msg);
    run->msg = NULL;
    run->sent = true;
    run->gen = s->gen;
    ex->info.server_runs++;
  }
  if (s != NULL && s->want_out) {
    s->want_out = false;
    uv_poll_start(&s->poll, UV_READABLE | UV_DISCONNECT, on_srv);
  }
}

/* Runs still queued when the server is given up: the helper, one per run. */
static void srv_route_queue(vg_exec_t *ex)
{
  while (ex->q_head != NULL) {
    vg_exec_run_t *run = ex->q_head;
    unqueue(run);
    char err[512];
    if (!spawn_helper(run, err, sizeof(err))) {
      fail_run(run, err);
    }
  }
}

static void srv_fall_back(vg_exec_t *ex, const char *why)
{
  ex->use_server = false;
  ex->info.enabled = false;
  free(ex->fallback);
  ex->fallback = strdup(why);
  ex->info.fallback = ex->fallback;
  srv_log(ex, "exec server: %s; runs spawn the helper from now on (the same confinement)", why);
  srv_route_queue(ex);
}

static vg_exec_run_t *run_by_id(vg_exec_t *ex, uint64_t id)
{
  for (vg_exec_run_t *r = ex->runs; r != NULL; r = r->next) {
    if (r->id == id) {
      return r;
    }
  }
  return NULL;
}

static void srv_reply(srv_t *s, const vg_exec_srv_reply_t *r, int fd)
{
  vg_exec_t *ex = s->ex;
  if (r->type == VG_EXEC_SRV_READY && s->state == SRV_STARTING) {
    s->state = SRV_UP;
    srv_log(ex, "exec server: pid %ld is ready", (long)s->pid);
    srv_pump(ex);
    return;
  }
  vg_exec_run_t *run = r->id != 0 ? run_by_id(ex, r->id) : NULL;
  if (run == NULL || !run->sent || run->gen != s->gen || run->replied) {
    if (fd >= 0) {
      close(fd); /* a run that has finished already */
    }
    return;
  }
  run->replied = true;
  if (r->type == VG_EXEC_SRV_STARTED && fd >= 0) {
    run->pid = r->pid;
    run->pidfd = fd;
    if (run->pending_sig != 0) {
      signal_run(run, run->pending_sig);
    }
  } else if (r->type == VG_EXEC_SRV_STARTED) {
    /* no pidfd (the server could not open one): not signalled safely, so not at all; its
     * status pipe still says when it ends */
    kill(-r->pid, SIGKILL);
  } else {
    char why[160];
    snprintf(why, sizeof(why), "the exec server could not start the run: %s", strerror(r->err));
    fail_run(run, why);
  }
}

static void on_srv(uv_poll_t *h, int status, int events)
{
  srv_t *s = h->data;
  if (status < 0) {
    srv_died(s, uv_strerror(status));
    return;
  }
  if (events & (UV_READABLE | UV_DISCONNECT)) {
    for (;;) {
      vg_exec_srv_reply_t r;
      struct iovec iov = { .iov_base = &r, .iov_len = sizeof(r) };
      union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
      } cm;
      struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)
      };
      ssize_t n = recvmsg(s->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      }
      int fd = -1;
      struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
      if (c != NULL && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
          c->cmsg_len == CMSG_LEN(sizeof(int))) {
        memcpy(&fd, CMSG_DATA(c), sizeof(int));
      }
      if (n <= 0 || (size_t)n != sizeof(r) || r.magic != VG_EXEC_SRV_MAGIC ||
          (r.type == VG_EXEC_SRV_FAILED && r.id == 0)) {
        if (fd >= 0) {
          close(fd);
        }
        char why[128];
        snprintf(why, sizeof(why), "%s",
                 n == 0                         ? "it exited"
                 : n < 0                        ? strerror(errno)
                 : r.magic == VG_EXEC_SRV_MAGIC ? "it could not prepare the sandbox"
                                                : "it said something unintelligible");
        srv_died(s, why);
        return;
      }
      srv_reply(s, &r, fd);
      if (s->closed) {
        return;
      }
    }
  }
  if (events & UV_WRITABLE) {
    srv_pump(s->ex);
  }
}

/* Starts a server: a socketpair, the helper with --server on fd 3 of it, in a session of its
 * own. wait: block (at creation) until it says READY; else it is SRV_STARTING and runs queue
 * until it does. NULL with why set on failure. */
static srv_t *srv_start(vg_exec_t *ex, bool wait, char *why, size_t whylen)
{
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
    snprintf(why, whylen, "socketpair: %s", strerror(errno));
    return NULL;
  }
  char **argv = NULL;
  size_t n = 0;
  bool ok = push_str(&argv, &n, strdup(ex->helper));
  for (size_t i = 0; ok && i < ex->nhargs; i++) {
    ok = push_str(&argv, &n, strdup(ex->hargs[i]));
  }
  ok = ok && push_str(&argv, &n, strdup("--server")) &&
       push_str(&argv, &n, strdup("--sock-fd=3")) &&
       push_str(&argv, &n, dupf("--ppid=%ld", (long)getpid()));
  srv_t *s = ok ? calloc(1, sizeof(*s)) : NULL;
  if (s == NULL) {
    free_strv(argv, n);
    close(sv[0]);
    close(sv[1]);
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  /* The server's end is made blocking: it polls, and a SEQPACKET send is whole or not at all. */
  int fl = fcntl(sv[1], F_GETFL);
  fcntl(sv[1], F_SETFL, fl & ~O_NONBLOCK);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  helper_spawn_init(&fa, &attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
  char *envp[] = { NULL };
  pid_t pid = -1;
  int rc = posix_spawn(&pid, ex->helper, &fa, &attr, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  free_strv(argv, n);
  close(sv[1]);
  s->ex = ex;
  s->sock = sv[0];
  s->pid = pid;
  s->pidfd = rc == 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
  if (rc != 0 || s->pidfd < 0) {
    snprintf(why, whylen, "cannot start %s --server: %s", ex->helper,
             strerror(rc != 0 ? rc : errno));
    if (rc == 0) {
      kill(pid, SIGKILL);
      while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
      }
    }
    close(sv[0]);
    free(s);
    return NULL;
  }
  s->state = SRV_STARTING;
  if (wait) {
    vg_exec_srv_reply_t r = { 0 };
    struct pollfd pf = { .fd = s->sock, .events = POLLIN };
    int pr;
    while ((pr = poll(&pf, 1, SERVER_HELLO_MS)) < 0 && errno == EINTR) {
    }
    ssize_t got = pr == 1 ? recv(s->sock, &r, sizeof(r), MSG_DONTWAIT) : -1;
    if (got != (ssize_t)sizeof(r) || r.magic != VG_EXEC_SRV_MAGIC || r.type != VG_EXEC_SRV_READY) {
      snprintf(why, whylen, "%s --server did not start (%s)", ex->helper,
               pr == 0 ? "no answer"
               : got == (ssize_t)sizeof(r) && r.magic == VG_EXEC_SRV_MAGIC
                   ? "it could not prepare the sandbox"
                   : "it exited");
      syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL, NULL, 0);
      siginfo_t si;
      while (waitid(P_PIDFD, (id_t)s->pidfd, &si, WEXITED) < 0 && errno == EINTR) {
      }
      close(s->pidfd);
      close(s->sock);
      free(s);
      return NULL;
    }
    s->state = SRV_UP;
  }
  s->gen = ++ex->srv_gen;
  uv_poll_init(ex->loop, &s->poll, s->sock);
  s->poll.data = s;
  uv_poll_start(&s->poll, UV_READABLE | UV_DISCONNECT, on_srv);
  uv_unref((uv_handle_t *)&s->poll); /* an idle server does not keep the loop running */
  ex->srv_open++;
  ex->srv = s;
  ex->info.pid = (long)pid;
  return s;
}

/* The server is gone (EOF on its socket) or unusable: reap it; the runs it had not answered
 * for are lost (their pipes are at EOF or soon will be), the ones it had are being stopped by
 * their supervisors. Then start another once; when that fails, or when servers keep dying,
 * fall back to one helper per run. */
static void srv_died(srv_t *s, const char *why)
{
  vg_exec_t *ex = s->ex;
  bool was_up = s->state == SRV_UP;
  long pid = (long)s->pid;
  unsigned gen = s->gen;
  srv_close(s);
  for (vg_exec_run_t *r = ex->runs; r != NULL; r = r->next) {
    if (r->sent && r->gen == gen && !r->replied) {
      r->srv_lost = true;
    }
  }
  if (ex->freeing) {
    return;
  }
  char msg[700];
  if (!was_up) {
    snprintf(msg, sizeof(msg), "the restarted server (pid %ld) failed before it was ready: %s", pid,
             why);
    srv_fall_back(ex, msg);
    return;
  }
  uint64_t now = uv_hrtime();
  unsigned recent = 0;
  for (unsigned i = 0; i < ex->ndeaths && i < SERVER_MAX_DEATHS; i++) {
    recent += now - ex->deaths[i] < SERVER_WINDOW_NS;
  }
  ex->deaths[ex->ndeaths++ % SERVER_MAX_DEATHS] = now;
  if (recent + 1 >= SERVER_MAX_DEATHS) {
    snprintf(msg, sizeof(msg), "pid %ld died (%s), the %u%s time within a minute", pid, why,
             recent + 1, recent + 1 == 3 ? "rd" : "th");
    srv_fall_back(ex, msg);
    return;
  }
  srv_log(ex, "exec server: pid %ld died (%s); starting another", pid, why);
  char err[300];
  if (srv_start(ex, false, err, sizeof(err)) == NULL) {
    snprintf(msg, sizeof(msg), "pid %ld died (%s) and another did not start: %s", pid, why, err);
    srv_fall_back(ex, msg);
    return;
  }
  ex->info.restarts++;
}

vg_exec_run_t *vg_exec_run(vg_exec_t *ex,
                           const vg_exec_req_t *req,
                           vg_exec_done_fn done,
                           void *ud,
                           char *err,
                           size_t errlen)
{
  if (ex->freeing) {
    snprintf(err, errlen, "ECANCELED: the executor is shutting down");
    return NULL;
  }
  if (req->argc == 0 || req->argv == NULL) {
    snprintf(err, errlen, "EINVAL: empty argv");
    return NULL;
  }
  for (size_t i = 0; i < req->argc; i++) {
    if (req->argv[i] == NULL) {
      snprintf(err, errlen, "EINVAL: argv[%zu] is NULL", i);
      return NULL;
    }
  }
  const char *file = resolve_allowed(ex, req->argv[0], err, errlen);
  if (file == NULL) {
    return NULL;
  }
  const char *cwd = req->cwd != NULL ? req->cwd : ex->scratch;
  struct stat sb;
  if (cwd[0] != '/' || stat(cwd, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    snprintf(err, errlen, "EINVAL: cwd %.200s is not an absolute path to a directory", cwd);
    return NULL;
  }
  const char **env = build_env(ex, req, err, errlen);
  if (env == NULL) {
    return NULL;
  }
  vg_exec_run_t *run = calloc(1, sizeof(*run));
  bool has_stdin = req->stdin_data != NULL;
  if (run != NULL) {
    run->id = ++ex->next_id;
    run->msg =
        encode_req(file, cwd, req, env, has_stdin ? VG_EXEC_REQ_STDIN : 0, run->id, &run->msglen);
  }
  free(env);
  if (run != NULL && req->stdin_data != NULL && req->stdin_len > 0) {
    run->stdin_buf = malloc(req->stdin_len);
    if (run->stdin_buf != NULL) {
      memcpy(run->stdin_buf, req->stdin_data, req->stdin_len);
    }
  }
  if (run == NULL || run->msg == NULL ||
      (req->stdin_data != NULL && req->stdin_len > 0 && run->stdin_buf == NULL)) {
    if (run != NULL) {
      free(run->stdin_buf);
      free(run->msg);
    }
    free(run);
    snprintf(err, errlen, "ENOMEM: out of memory");
    return NULL;
  }

  size_t max = req->max_output ? req->max_output : ex->max_output;
  run->pidfd = -1;
  for (int i = 0; i < 4; i++) {
    run->far[i] = -1;
  }
  run->ex = ex;
  run->done = done;
  run->ud = ud;
  run->sout.max = run->serr.max = max;
  run->sstat.max = STATUS_MAX;
  run->has_stdin = has_stdin;
  run->next = ex->runs;
  if (ex->runs != NULL) {
    ex->runs->prev = run;
  }
  ex->runs = run;
  ex->active++;

  uv_pipe_t *pipes[] = { &run->out, &run->err, &run->status, &run->in };
  for (int i = 0; i < (run->has_stdin ? 4 : 3); i++) {
    uv_pipe_init(ex->loop, pipes[i], 0);
    pipes[i]->data = run;
    run->open_handles++;
  }
  uv_timer_init(ex->loop, &run->timer);
  run->timer.data = run;
  run->open_handles++;

  run->started_ns = uv_hrtime();
  bool ok = make_pipes(run, err, errlen);
  /* A request too big for one message spawns the helper, like every run without a server. */
  run->via_server = ok && ex->use_server && run->msglen <= VG_EXEC_SRV_MAX_REQ;
  if (run->via_server) {
    run->queued = true;
    if (ex->q_tail != NULL) {
      ex->q_tail->qnext = run;
    } else {
      ex->q_head = run;
    }
    ex->q_tail = run;
    srv_pump(ex);
  } else if (ok) {
    ok = spawn_helper(run, err, errlen);
  }
  if (!ok) {
    close_far(run);
    run->cancelled = true;
    run->phase = RUN_DONE;
    close_all(run);
    return NULL;
  }
  uv_read_start((uv_stream_t *)&run->out, on_alloc, on_read);
  uv_read_start((uv_stream_t *)&run->err, on_alloc, on_read);
  uv_read_start((uv_stream_t *)&run->status, on_alloc, on_read);
  if (run->has_stdin) {
    if (req->stdin_len > 0) {
      uv_buf_t b = uv_buf_init(run->stdin_buf, (unsigned)req->stdin_len);
      run->write_req.data = run;
      if (uv_write(&run->write_req, (uv_stream_t *)&run->in, &b, 1, on_written) != 0) {
        close_handle(run, (uv_handle_t *)&run->in);
      }
    } else {
      close_handle(run, (uv_handle_t *)&run->in); /* empty stdin: EOF at once */
    }
  }
  /* The loop's clock is as old as its last wake-up, and callers may have blocked since (this
   * executor's creation does): the timeout counts from now. */
  uv_update_time(ex->loop);
  uv_timer_start(&run->timer, on_timer, req->timeout_ms ? req->timeout_ms : ex->timeout_ms, 0);
  return run;
}

void vg_exec_cancel(vg_exec_run_t *run)
{
  if (run == NULL || run->cancelled || run->phase == RUN_DONE) {
    return;
  }
  run->cancelled = true;
  if (run->exited) {
    finish(run); /* only the pipes were left */
  } else {
    stop_tree(run);
  }
}

/* ---- the executor ---- */

static char *default_helper(void)
{
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    return NULL;
  }
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  if (slash == NULL) {
    return NULL;
  }
  *slash = '\0';
  return dupf("%s/vigil-exec", self);
}

static bool resolve_user(const char *user, long *uid, long *gid, char *err, size_t errlen)
{
  char buf[4096];
  struct passwd pw, *res = NULL;
  char *end;
  errno = 0;
  unsigned long n = strtoul(user, &end, 10);
  bool numeric = *user != '\0' && *end == '\0' && errno == 0 && n < UINT32_MAX;
  if (numeric) {
    getpwuid_r((uid_t)n, &pw, buf, sizeof(buf), &res);
    *uid = (long)n;
    *gid = res != NULL ? (long)res->pw_gid : (long)n;
    return true;
  }
  getpwnam_r(user, &pw, buf, sizeof(buf), &res);
  if (res == NULL) {
    snprintf(err, errlen, "executor: no such user %.100s", user);
    return false;
  }
  *uid = (long)res->pw_uid;
  *gid = (long)res->pw_gid;
  return true;
}

/* Runs the helper with --probe and reads its lines (blocking, once, at creation). */
static bool probe(vg_exec_t *ex, char *err, size_t errlen)
{
  char **argv = NULL;
  size_t n = 0;
  bool ok = push_str(&argv, &n, strdup(ex->helper));
  for (size_t i = 0; ok && i < ex->nhargs; i++) {
    ok = push_str(&argv, &n, strdup(ex->hargs[i]));
  }
  ok = ok && push_str(&argv, &n, strdup("--probe")) && push_str(&argv, &n, strdup("--status-fd=1"));
  int p[2] = { -1, -1 };
  if (!ok || pipe2(p, O_CLOEXEC) != 0) {
    free_strv(argv, n);
    snprintf(err, errlen, "executor: out of memory or fds");
    return false;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  char *envp[] = { NULL };
  pid_t pid;
  int rc = posix_spawn(&pid, ex->helper, &fa, NULL, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  free_strv(argv, n);
  close(p[1]);
  if (rc != 0) {
    close(p[0]);
    snprintf(err, errlen, "executor: cannot run the helper %s: %s", ex->helper, strerror(rc));
    return false;
  }
  char *buf = malloc(PROBE_MAX + 1);
  size_t len = 0;
  for (;;) {
    ssize_t r = buf != NULL ? read(p[0], buf + len, PROBE_MAX - len) : 0;
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0 || (len += (size_t)r) == PROBE_MAX) {
      break;
    }
  }
  close(p[0]);
  int wst = 0;
  while (waitpid(pid, &wst, 0) < 0 && errno == EINTR) {
  }
  if (buf == NULL) {
    snprintf(err, errlen, "executor: out of memory");
    return false;
  }
  buf[len] = '\0';
  status_t st;
  status_parse(buf, len, &st);
  ok = false;
  if (st.error != NULL) {
    snprintf(err, errlen, "%s: %s", st.error, st.detail);
  } else if (st.tiers == NULL || !WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
    snprintf(err, errlen, "executor: the helper %s does not work (status %d)", ex->helper, wst);
  } else {
    ex->summary = strdup(st.tiers);
    ex->notes = strdup(st.notes != NULL ? st.notes : "");
    ok = ex->summary != NULL && ex->notes != NULL &&
         (st.bpf == NULL || push_str(&ex->hargs, &ex->nhargs, dupf("--bpf=%s", st.bpf)));
    if (!ok) {
      snprintf(err, errlen, "executor: out of memory");
    }
  }
  free(st.notes);
  free(buf);
  if (!ok) {
    return false;
  }
  /* The tiers line's words, for vg_exec_tiers. */
  ex->tiers.summary = ex->summary;
  ex->tiers.notes = ex->notes;
  const char *s = ex->summary;
  const char *ll = strstr(s, "landlock=");
  ex->tiers.landlock_abi = ll != NULL ? atoi(ll + 9) : 0;
  ex->tiers.landlock = ll != NULL;
  ex->tiers.landlock_net = strstr(s, "landlock-net") != NULL;
  ex->tiers.seccomp = strstr(s, "seccomp") != NULL;
  return true;
}

static bool add_opt(vg_exec_t *ex, char *s)
{
  return push_str(&ex->hargs, &ex->nhargs, s);
}

vg_exec_t *vg_exec_new(uv_loop_t *loop, const vg_exec_opts_t *o, char *err, size_t errlen)
{
  vg_exec_t *ex = calloc(1, sizeof(*ex));
  if (ex == NULL) {
    snprintf(err, errlen, "executor: out of memory");
    return NULL;
  }
  ex->loop = loop;
  ex->tiers.uid = -1;
  ex->timeout_ms = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
  ex->grace_ms = o->grace_ms ? o->grace_ms : DEFAULT_GRACE_MS;
  ex->max_output = o->max_output ? o->max_output : DEFAULT_MAX_OUTPUT;
  char why[PATH_MAX + 200];
  why[0] = '\0';

  ex->helper = o->helper != NULL ? strdup(o->helper) : default_helper();
  if (ex->helper == NULL || access(ex->helper, X_OK) != 0) {
    snprintf(why, sizeof(why), "executor: helper %s: %s",
             ex->helper != NULL ? ex->helper : "vigil-exec", strerror(errno));
    goto fail;
  }

  for (size_t i = 0; i < o->nallow; i++) {
    const char *a = o->allow[i];
    char real[PATH_MAX];
    struct stat sb;
    if (a == NULL || a[0] != '/') {
      snprintf(why, sizeof(why), "executor: allowlist entry %.200s is not an absolute path",
               a != NULL ? a : "(null)");
      goto fail;
    }
    if (realpath(a, real) == NULL) {
      snprintf(why, sizeof(why), "executor: allowlist entry %.200s: %s", a, strerror(errno));
      goto fail;
    }
    if (stat(real, &sb) != 0 || !S_ISREG(sb.st_mode) || access(real, X_OK) != 0) {
      snprintf(why, sizeof(why), "executor: allowlist entry %.200s is not an executable file", a);
      goto fail;
    }
    if (!push_str(&ex->allow, &ex->nallow, strdup(real))) {
      goto oom;
    }
  }

  const char *const *names = o->env_allow != NULL ? o->env_allow : default_env_allow;
  size_t nnames = o->env_allow != NULL ? o->nenv_allow
                                       : sizeof(default_env_allow) / sizeof(default_env_allow[0]);
  for (size_t i = 0; i < nnames; i++) {
    const char *v = names[i] != NULL ? getenv(names[i]) : NULL;
    if (v != NULL && !push_str(&ex->env, &ex->nenv, dupf("%s=%s", names[i], v))) {
      goto oom;
    }
  }

  long uid = -1, gid = -1;
  if (o->user != NULL && !resolve_user(o->user, &uid, &gid, why, sizeof(why))) {
    goto fail;
  }
  ex->tiers.uid = uid;

  if (o->scratch != NULL) {
    if (o->scratch[0] != '/') {
      snprintf(why, sizeof(why), "executor: scratch %.200s is not an absolute path", o->scratch);
      goto fail;
    }
    if (mkdir(o->scratch, 0700) == 0) {
      if (uid >= 0 && chown(o->scratch, (uid_t)uid, (gid_t)gid) != 0) {
        snprintf(why, sizeof(why), "executor: chown %.200s: %s", o->scratch, strerror(errno));
        goto fail;
      }
    } else if (errno != EEXIST) {
      snprintf(why, sizeof(why), "executor: scratch %.200s: %s", o->scratch, strerror(errno));
      goto fail;
    }
    char real[PATH_MAX];
    if (realpath(o->scratch, real) == NULL || (ex->scratch = strdup(real)) == NULL) {
      snprintf(why, sizeof(why), "executor: scratch %.200s: %s", o->scratch, strerror(errno));
      goto fail;
    }
  } else {
    char tmpl[] = "/tmp/vigil-exec-XXXXXX";
    if (mkdtemp(tmpl) == NULL) {
      snprintf(why, sizeof(why), "executor: cannot make a scratch directory: %s", strerror(errno));
      goto fail;
    }
    ex->scratch_made = true;
    if ((ex->scratch = strdup(tmpl)) == NULL) {
      rmdir(tmpl);
      goto oom;
    }
    if (uid >= 0 && chown(tmpl, (uid_t)uid, (gid_t)gid) != 0) {
      snprintf(why, sizeof(why), "executor: chown %s: %s", tmpl, strerror(errno));
      goto fail;
    }
  }
  if ((ex->tmpdir_env = dupf("TMPDIR=%s", ex->scratch)) == NULL) {
    goto oom;
  }

  const vg_exec_limits_t *l = &o->limits;
  bool ok =
      add_opt(ex, dupf("--cpu=%llu", (unsigned long long)(l->cpu_s ? l->cpu_s : 60))) &&
      add_opt(ex,
              dupf("--as=%llu", (unsigned long long)(l->as_bytes ? l->as_bytes : 1ull << 30))) &&
      add_opt(ex, dupf("--nofile=%llu", (unsigned long long)(l->nofile ? l->nofile : 256))) &&
      add_opt(ex, dupf("--fsize=%llu",
                       (unsigned long long)(l->fsize_bytes ? l->fsize_bytes : 64ull << 20))) &&
      add_opt(ex, dupf("--nproc=%llu", (unsigned long long)(l->nproc ? l->nproc : 256))) &&
      add_opt(ex, dupf("--grace=%llu", (unsigned long long)ex->grace_ms)) &&
      add_opt(ex, dupf("--scratch=%s", ex->scratch)) &&
      add_opt(ex, dupf("--landlock=%s", mode_name(o->landlock))) &&
      add_opt(ex, dupf("--seccomp=%s", mode_name(o->seccomp)));
  if (ok && uid >= 0) {
    ok = add_opt(ex, dupf("--uid=%ld", uid)) && add_opt(ex, dupf("--gid=%ld", gid));
  }
  if (ok && o->tcp_any) {
    ok = add_opt(ex, strdup("--tcp=any"));
  }
  if (o->ntcp_ports > VG_EXEC_MAX_PORTS) {
    snprintf(why, sizeof(why), "executor: at most %d TCP ports", VG_EXEC_MAX_PORTS);
    goto fail;
  }
  for (size_t i = 0; ok && !o->tcp_any && i < o->ntcp_ports; i++) {
    if (o->tcp_ports[i] == 0) {
      snprintf(why, sizeof(why), "executor: TCP port 0");
      goto fail;
    }
    ok = add_opt(ex, dupf("--tcp=%u", (unsigned)o->tcp_ports[i]));
  }
  if (ok && (o->pretend & VG_EXEC_PRETEND_NO_LANDLOCK)) {
    ok = add_opt(ex, strdup("--pretend=no-landlock"));
  }
  if (ok && (o->pretend & VG_EXEC_PRETEND_LANDLOCK_ABI3)) {
    ok = add_opt(ex, strdup("--pretend=landlock-abi=3"));
  }
  if (ok && (o->pretend & VG_EXEC_PRETEND_NO_SECCOMP)) {
    ok = add_opt(ex, strdup("--pretend=no-seccomp"));
  }
  if (!ok) {
    goto oom;
  }
  if (!probe(ex, why, sizeof(why))) {
    goto fail;
  }
  ex->log = o->log;
  ex->log_ud = o->log_ud;
  ex->use_server = o->server;
  if (ex->use_server) {
    char serr[400];
    if (srv_start(ex, true, serr, sizeof(serr)) == NULL) {
      srv_fall_back(ex, serr);
    } else {
      srv_log(ex, "exec server: pid %ld is ready", ex->info.pid);
    }
  }
  ex->info.enabled = ex->use_server;
  /* A target that stops reading its stdin must not kill the daemon with SIGPIPE. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
  return ex;

oom:
  snprintf(why, sizeof(why), "executor: out of memory");
fail:
  snprintf(err, errlen, "%s", why);
  ex_destroy(ex);
  return NULL;
}

static void ex_destroy(vg_exec_t *ex)
{
  if (ex->scratch_made && ex->scratch != NULL) {
    rmdir(ex->scratch); /* only when empty: runs' files are the operator's to read */
  }
  free(ex->helper);
  free_strv(ex->allow, ex->nallow);
  free_strv(ex->env, ex->nenv);
  free_strv(ex->hargs, ex->nhargs);
  free(ex->tmpdir_env);
  free(ex->scratch);
  free(ex->summary);
  free(ex->notes);
  free(ex->fallback);
  free(ex);
}

/* Once freeing and every run is gone: the server is stopped, and the executor freed when its
 * handle has closed. */
static void ex_maybe_destroy(vg_exec_t *ex)
{
  if (!ex->freeing || ex->active > 0) {
    return;
  }
  if (ex->srv != NULL) {
    srv_close(ex->srv);
  }
  if (ex->srv_open == 0) {
    ex_destroy(ex);
  }
}

const vg_exec_server_info_t *vg_exec_server_info(const vg_exec_t *ex)
{
  return &ex->info;
}

const vg_exec_tiers_t *vg_exec_tiers(const vg_exec_t *ex)
{
  return &ex->tiers;
}

const char *vg_exec_scratch(const vg_exec_t *ex)
{
  return ex->scratch;
}

size_t vg_exec_active(const vg_exec_t *ex)
{
  return ex->active;
}

void vg_exec_free(vg_exec_t *ex)
{
  if (ex == NULL) {
    return;
  }
  ex->freeing = true;
  for (vg_exec_run_t *r = ex->runs; r != NULL; r = r->next) {
    vg_exec_cancel(r);
  }
  ex_maybe_destroy(ex);
}
