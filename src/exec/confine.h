/* vigil-exec's confinement: the policy read from argv, detection of the kernel's tiers, the
 * Landlock ruleset and the seccomp program built in the helper before it starts the child,
 * and what the child does before execve. The child shares the helper's memory (a vfork-style
 * clone), so it only makes system calls: no allocation, no stdio. */
#pragma once

#include <linux/filter.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "exec/protocol.h"

typedef enum { CONFINE_AUTO, CONFINE_REQUIRE, CONFINE_OFF } confine_mode_t;

enum { LIM_CPU, LIM_AS, LIM_NOFILE, LIM_FSIZE, LIM_NPROC, LIM_COUNT };

typedef struct {
  const char *path; /* file to execute */
  char **argv;      /* the target's argv, NULL-terminated */
  const char *cwd;
  const char *scratch; /* NULL: no writable directory */
  rlim_t lim[LIM_COUNT];
  bool lim_set[LIM_COUNT];
  long uid, gid; /* -1: keep */
  confine_mode_t landlock, seccomp;
  uint16_t ports[VG_EXEC_MAX_PORTS];
  size_t nports;
  bool tcp_any;
  unsigned grace_ms;
  int status_fd;
  bool probe;
  int pretend_abi; /* -1: the kernel's */
  bool pretend_no_seccomp;
  const char *bpf; /* --bpf: the seccomp program as hex, compiled by an earlier probe */
  long ppid;       /* --ppid: the daemon, which must still be the parent; 0: not checked */
  bool server;     /* --server: the exec server (server.c) */
  int sock_fd;     /* --sock-fd: the server's socket to the daemon; -1: none */
} confine_policy_t;

#define CONFINE_MAX_NOTES 4

typedef struct {
  int ruleset_fd;         /* Landlock ruleset to enforce; -1: none */
  struct sock_fprog prog; /* seccomp program; len 0: none */
  char tiers[256];
  char notes[CONFINE_MAX_NOTES][200];
  int nnotes;
} confine_t;

/* Detects the tiers and prepares what the child applies. Returns false with why set to
 * "ENAME detail" when a required tier is missing or a step fails. */
bool confine_prepare(const confine_policy_t *p, confine_t *c, char *why, size_t whylen);

/* Releases what confine_prepare made (in the helper, after the fork). */
void confine_release(confine_t *c);

/* Steps of the child's set-up, reported through the error pipe when one fails. */
typedef enum {
  STAGE_SIGNALS,
  STAGE_PDEATHSIG,
  STAGE_RLIMIT,
  STAGE_GROUPS,
  STAGE_SETGID,
  STAGE_SETUID,
  STAGE_CHDIR,
  STAGE_FDS,
  STAGE_NNP,
  STAGE_LANDLOCK,
  STAGE_SECCOMP,
  STAGE_EXEC,
} confine_stage_t;

typedef struct {
  int stage;
  int err;
} confine_failure_t;

/* The child's arguments; it writes failure (shared memory) when a step fails. */
typedef struct {
  const confine_policy_t *p;
  const confine_t *c;
  pid_t helper;
  confine_failure_t failure; /* stage -1: none */
} confine_child_t;

/* The child, started with clone(CLONE_VM | CLONE_VFORK): confines itself and executes the
 * target; on failure fills arg->failure and exits 127. Never returns. */
int confine_child(void *arg);

/* The seccomp program as hex (for the probe's "bpf" line); NULL when out of memory. */
char *confine_bpf_hex(const confine_t *c);

/* "ENAME detail" for a failure reported by the child. */
void confine_describe(const confine_policy_t *p,
                      const confine_failure_t *f,
                      char *out,
                      size_t outlen);
