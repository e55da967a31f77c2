/* Running one confined target and supervising its process tree: what vigil-exec does for a
 * run, shared by the one-shot helper (main.c) and the exec server's per-run supervisors
 * (server.c). The caller is a child subreaper in a session of its own, with the run's stdin,
 * stdout and stderr on 0-2 and its status fd in exec_status_fd. */
#pragma once

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include "exec/confine.h"

/* Where status lines go (src/exec/protocol.h). */
extern int exec_status_fd;

/* Writes all of p to fd, retrying on EINTR; gives up quietly when the reader is gone. */
void exec_write_all(int fd, const char *p, size_t n);

/* Writes one status line "WORD TEXT\n"; newlines in TEXT become spaces. */
void exec_say(const char *word, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sends sig to every descendant of this process found through /proc (re-parented orphans that
 * called setsid() included: as a subreaper we are their ancestor), except the processes in
 * skip and their descendants. Returns how many were signalled. */
size_t exec_signal_descendants(int sig, const pid_t *skip, size_t nskip);

/* Says the tiers and notes, starts the target confined by c (a vfork-style child), waits for
 * it, stops and reaps every descendant, and writes the final status line. set holds the
 * blocked signals taken with sigtimedwait: SIGCHLD and the stop signals (SIGTERM, SIGINT,
 * SIGHUP). When parent > 0, a stop signal that arrives once getppid() is no longer parent
 * means the parent died (its PR_SET_PDEATHSIG): the tree is stopped as on a timeout and the
 * outcome is an EHELPER error, since the run did not end on its own. Releases c. Returns the
 * process's exit status: 0 after an outcome, 1 after an error line. */
int exec_run_target(const confine_policy_t *p, confine_t *c, const sigset_t *set, pid_t parent);

/* The exec server's main loop (server.c): p holds the options shared by every run, with
 * p->sock_fd the socket to the daemon. Returns the exit status. */
int exec_server(confine_policy_t *p);
