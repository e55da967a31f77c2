/* The sandboxed process runner. Each run has a supervisor, in its own session and process
 * group: a fork of the executor's long-lived exec server (`vigil-exec --server`), or, when the
 * server is off or has failed, the helper vigil-exec (src/exec/) spawned for the run. The
 * supervisor confines a child (rlimits, no new privileges, closed fds, an unprivileged uid,
 * Landlock, seccomp), executes the target there, and stops and reaps the whole process tree
 * before it reports. Only allowlisted absolute executables
 * run, with argv only (never a shell), an environment built from an allowlist, output read
 * without blocking the loop and capped, and a timeout that stops the tree with SIGTERM, a
 * grace period and SIGKILL. Pure C on libuv: no Lua. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct vg_exec vg_exec_t;
typedef struct vg_exec_run vg_exec_run_t;

/* How a sandbox tier is wanted: applied when the kernel offers it and said so when not
 * (auto), an error when missing (require), or not applied (off). Zero is auto. */
typedef enum { VG_EXEC_AUTO = 0, VG_EXEC_REQUIRE, VG_EXEC_OFF } vg_exec_mode_t;

/* "auto", "require", "off" -> the mode, or -1. */
int vg_exec_mode_parse(const char *s);

/* Limits of every run (soft = hard). A zero field takes the default. RLIMIT_CORE is 0.
 * RLIMIT_NPROC counts every process of the uid on the host: give runs a uid of their own. */
typedef struct {
  uint64_t cpu_s;       /* CPU seconds: 60 */
  uint64_t as_bytes;    /* address space: 1 GiB */
  uint64_t nofile;      /* open files: 256 */
  uint64_t fsize_bytes; /* largest file written: 64 MiB */
  uint64_t nproc;       /* processes of the uid: 256 */
} vg_exec_limits_t;

/* Tests only: make the helper act as if the kernel lacked a tier. */
enum {
  VG_EXEC_PRETEND_NO_LANDLOCK = 1,
  VG_EXEC_PRETEND_NO_SECCOMP = 2,
  VG_EXEC_PRETEND_LANDLOCK_ABI3 = 4, /* Landlock without TCP rules */
};

/* What the executor says about its exec server (started, died, restarted, given up). */
typedef void (*vg_exec_log_fn)(void *ud, const char *msg);

typedef struct {
  const char *helper;       /* NULL: vigil-exec next to /proc/self/exe */
  const char *const *allow; /* absolute paths of the executables runs may use */
  size_t nallow;
  const char *const *env_allow; /* variables copied from the daemon's environment; NULL: PATH,
                                   HOME, LANG, LC_ALL, TZ, KUBECONFIG */
  size_t nenv_allow;
  const char *scratch; /* the one writable directory (created 0700 if missing); NULL: a new
                          /tmp/vigil-exec-XXXXXX, removed by vg_exec_free if left empty */
  uint64_t timeout_ms; /* per run unless the request says: 0 -> 30 s */
  uint64_t grace_ms;   /* SIGTERM to SIGKILL: 0 -> 5 s */
  size_t max_output;   /* bytes kept of stdout and of stderr each: 0 -> 64 KiB */
  vg_exec_limits_t limits;
  vg_exec_mode_t landlock, seccomp;
  const uint16_t *tcp_ports; /* TCP ports runs may connect to (Landlock ABI >= 4); none: no */
  size_t ntcp_ports;         /* TCP connect at all */
  bool tcp_any;              /* no TCP rule */
  const char *user;          /* user name or uid to run as; NULL: the daemon's own user */
  unsigned pretend;          /* VG_EXEC_PRETEND_* (tests) */
  bool server;               /* runs go through the exec server (executor.server); false: the
                                helper is spawned for every run */
  vg_exec_log_fn log;        /* NULL: the server's events are not told */
  void *log_ud;
} vg_exec_opts_t;

typedef struct {
  const char *const *argv; /* argv[0]: an absolute path on the allowlist (after realpath) */
  size_t argc;
  const char *const *env; /* "NAME=value" added to (or replacing) the allowlisted ones */
  size_t nenv;
  const char *cwd;        /* absolute, existing; NULL: the scratch directory */
  const char *stdin_data; /* written to stdin, which is then closed; NULL: /dev/null */
  size_t stdin_len;
  uint64_t timeout_ms; /* 0: the executor's */
  size_t max_output;   /* 0: the executor's */
} vg_exec_req_t;

typedef struct {
  int code;   /* exit code; -1 when killed by a signal or when nothing ran */
  int signal; /* the signal that ended the target, else 0 */
  const char *stdout_data, *stderr_data; /* NUL-terminated */
  size_t stdout_len, stderr_len;
  bool stdout_truncated, stderr_truncated; /* more was written than max_output */
  bool timed_out;
  const char *killed; /* why vigil stopped it: NULL, "timeout", "output cap" */
  double duration;    /* seconds, spawn to the end of the whole tree */
  const char *error;  /* NULL, or nothing ran: "ENOENT", "EACCES", "ESANDBOX", "ELANDLOCK",
                         "ESECCOMP", "EHELPER" (the helper failed) ... */
  const char *detail; /* the error's words, naming the file: "/usr/bin/x: No such file ..." */
  const char *tiers;  /* what confined it: "rlimits nnp fds landlock=7 landlock-net ..." */
  const char *notes;  /* tiers that fell back, leftovers killed: "; "-separated, "" if none */
} vg_exec_result_t;

/* Called on the loop once per run (never for a cancelled one); the result's memory is valid
 * during the call only. */
typedef void (*vg_exec_done_fn)(void *ud, const vg_exec_result_t *res);

/* Creates an executor: resolves the allowlist (realpath; a relative, missing or
 * non-executable entry is an error naming it), snapshots the allowlisted environment,
 * resolves the user, prepares the scratch directory, runs the helper once to detect the
 * tiers and compile the seccomp filter (a tier that is required but missing fails here), and
 * starts the exec server (with opts->server; when it does not start, runs spawn the helper and
 * the log says why). Blocks for a few milliseconds: call it at start-up. NULL with a reason
 * in err on failure. */
vg_exec_t *vg_exec_new(uv_loop_t *loop, const vg_exec_opts_t *opts, char *err, size_t errlen);

/* Starts a run. Returns NULL with "ENAME: detail" in err when it cannot start: EDENIED (argv[0]
 * not absolute or not on the allowlist), ENOENT (argv[0] is gone), EINVAL (bad cwd or env
 * name; LD_* names are refused), ENOMEM, or the spawn's error; `done` then never runs. */
vg_exec_run_t *vg_exec_run(vg_exec_t *ex,
                           const vg_exec_req_t *req,
                           vg_exec_done_fn done,
                           void *ud,
                           char *err,
                           size_t errlen);

/* Abandons a run before its callback: stops its process tree (SIGTERM, grace, SIGKILL);
 * `done` will not run, and the memory is freed once the helper is reaped. */
void vg_exec_cancel(vg_exec_run_t *run);

/* What the executor's runs get, detected at creation (for the start-up log and /metrics). */
typedef struct {
  int landlock_abi;    /* the Landlock ABI runs get; 0: none (absent or off) */
  bool landlock;       /* applied to runs */
  bool landlock_net;   /* TCP connect rules (ABI >= 4) */
  bool seccomp;        /* applied to runs */
  long uid;            /* runs' uid, -1: the daemon's */
  const char *summary; /* the helper's tiers line: "rlimits nnp fds landlock=7 ... seccomp" */
  const char *notes;   /* fallbacks and tiers switched off, "; "-separated; "" if none */
} vg_exec_tiers_t;

const vg_exec_tiers_t *vg_exec_tiers(const vg_exec_t *ex);

/* The exec server, for the log and /metrics. */
typedef struct {
  bool enabled;          /* runs go through the server (false: not asked for, or fallen back) */
  long pid;              /* the server's pid; 0: none running */
  unsigned restarts;     /* servers started after one died */
  uint64_t server_runs;  /* runs handed to a server */
  uint64_t spawned_runs; /* runs that spawned the helper */
  const char *fallback;  /* why runs spawn the helper; NULL: they do not, or it is off */
} vg_exec_server_info_t;

const vg_exec_server_info_t *vg_exec_server_info(const vg_exec_t *ex);

/* The scratch directory runs write in. */
const char *vg_exec_scratch(const vg_exec_t *ex);

/* Runs not yet freed (including cancelled ones whose helper is not yet reaped). */
size_t vg_exec_active(const vg_exec_t *ex);

/* Cancels every run and frees the executor once their supervisors have ended and their
 * handles closed, the exec server killed and reaped last: the loop must run afterwards (for
 * at most about the grace period). NULL: no-op. */
void vg_exec_free(vg_exec_t *ex);
