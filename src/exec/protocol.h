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
 * Exit status of the helper: 0 when it reported an outcome, 1 on an error line, 2 on bad argv. */
#pragma once

#define VG_EXEC_MAX_PORTS 64
#define VG_EXEC_STATUS_FD 3
