/* The protocol between vigil's executor (src/engine/exec.c) and its sandboxing helper,
 * vigil-exec (src/exec/): the helper's argv and the status lines it writes. Plain C with no
 * dependencies, included by both sides.
 *
 * argv:  vigil-exec [OPTION...] -- ARGV0 [ARG...]
 *   --path=FILE          file to execute, absolute (default ARGV0)
 *   --cwd=DIR            the target's working directory (default /)
 *   --cpu=SECONDS --as=BYTES --nofile=N --fsize=BYTES --nproc=N
 *                        rlimits, soft = hard; RLIMIT_CORE is always 0; absent: unchanged
 *   --uid=N --gid=N      drop to this uid and gid (the only group) before confining
 *   --landlock=MODE --seccomp=MODE
 *                        auto (default): applied when the kernel offers it, else a note says
 *                        so; require: unavailable is an error; off: not applied (noted)
 *   --scratch=DIR        the one directory the target may write in (besides /dev/null)
 *   --tcp=PORT           a TCP port the target may connect to (repeatable, at most
 *                        VG_EXEC_MAX_PORTS); none: no TCP connect at all; --tcp=any: no rule
 *   --grace=MS           SIGTERM-to-SIGKILL grace when the tree is stopped (default 5000)
 *   --status-fd=N        where status lines go (default 3; stderr when N is not open)
 *   --bpf=HEX            the seccomp program a probe printed: loaded as is, so a run does
 *                        not compile the filter again (libseccomp takes ~1 ms for it)
 *   --probe              detect and report the tiers, print the seccomp program, run nothing
 *   --pretend=WHAT       for tests, act as if the kernel lacked something: no-landlock,
 *                        no-seccomp, landlock-abi=N (at most ABI N)
 *
 * Status: lines "WORD[ TEXT]\n" in this order (TEXT never holds a newline):
 *   tiers TEXT           what confines the target, e.g. "rlimits nnp fds landlock=7
 *                        landlock-net landlock-scope seccomp uid=65534"
 *   note TEXT            zero or more: a tier that fell back or is off, leftovers killed, ...
 *   pid N                the target was executed (absent when it never started)
 *   then exactly one final line, written after the whole tree is reaped:
 *   exit CODE            the target exited
 *   signal SIGNO         the target was killed by a signal
 *   error ENAME DETAIL   nothing ran: ENOENT, EACCES, ... (execve or chdir, DETAIL names the
 *                        file), ESANDBOX (a required tier is missing, or a setup step
 *                        failed), ELANDLOCK, ESECCOMP, EINVAL (bad helper argv)
 * --probe writes the tiers and notes, then "bpf HEX" (the compiled seccomp program, when
 * seccomp applies), or an error line, and exits.
 * Exit status of the helper: 0 when it reported an outcome, 1 on an error line, 2 on bad argv.
 *
 * The exec server: vigil-exec --server --sock-fd=N --ppid=PID [OPTION...], no command. The
 * options are the ones every run shares (limits, uid, tiers, scratch, TCP ports, grace, bpf,
 * pretend); the daemon starts it once, in a session of its own, with N one end of a
 * SOCK_SEQPACKET socketpair. It prepares the confinement once (confine_prepare), then says
 * VG_EXEC_SRV_READY (pid: its own) or VG_EXEC_SRV_FAILED (err) and exits. Each message from the
 * daemon is one run: a vg_exec_srv_req_t, then NUL-terminated strings (the file to execute,
 * the cwd, argc argv strings, nenv "NAME=value" strings, at most VG_EXEC_SRV_MAX_REQ bytes in
 * all), with SCM_RIGHTS carrying the run's stdin (only with VG_EXEC_REQ_STDIN, else the target
 * reads /dev/null), stdout, stderr and status fds. The server forks a supervisor, which puts
 * them on 0-3 and does what the one-shot helper does after parsing its argv (status lines as
 * above), and answers, in the order of the requests, VG_EXEC_SRV_STARTED (pid: the
 * supervisor, which leads its own session and process group; SCM_RIGHTS: a pidfd of it) or
 * VG_EXEC_SRV_FAILED (err: an errno, nothing started; the run's fds are closed). A supervisor
 * whose server dies stops its tree and reports "error EHELPER ...". The server exits at EOF
 * on its socket, on SIGTERM, and (PR_SET_PDEATHSIG) with the daemon. */
#pragma once

#include <stdint.h>

#define VG_EXEC_MAX_PORTS 64
#define VG_EXEC_STATUS_FD 3

#define VG_EXEC_SRV_MAGIC 0x76786531u /* "vxe1" */
#define VG_EXEC_SRV_MAX_REQ (64u << 10)

enum { VG_EXEC_REQ_STDIN = 1 };

typedef struct {
  uint32_t magic;
  uint32_t flags; /* VG_EXEC_REQ_* */
  uint64_t id;    /* echoed in the reply */
  uint32_t argc, nenv;
} vg_exec_srv_req_t;

enum { VG_EXEC_SRV_READY = 1, VG_EXEC_SRV_STARTED, VG_EXEC_SRV_FAILED };

typedef struct {
  uint32_t magic;
  uint32_t type; /* VG_EXEC_SRV_* */
  uint64_t id;   /* the request's; 0 for READY */
  int32_t pid;
  int32_t err;
} vg_exec_srv_reply_t;
