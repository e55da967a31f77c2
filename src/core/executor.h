/* The executor: runs one action a policy asked for, under the guard rails, at most once.
 *
 *   mode       the least of the global mode, the policy's and the action's own
 *              (observe < dry-run < enforce); observe and dry-run record and return the
 *              exact command, nothing runs.
 *   kill       the kill switch (API, REPL, or a file that exists) refuses every action but
 *              notifications; it is checked at decision time and again right before each
 *              attempt, and works without the store.
 *   guard      rate limits, cooldowns, concurrency, blast radius, breakers (engine/guard.h).
 *   approval   an action marked `approve` waits for an operator (API, CLI, REPL) until it
 *              expires; on approval the kill switch and guard rails are checked again.
 *   at most    the idempotency key is claimed and committed (engine/ledger.h) before the first
 *   once       attempt; a second request with the same key answers with the first outcome.
 *   retries    failed attempts (non-zero exit, HTTP 5xx/429, connection refused) are retried
 *              under the same claim with exponential backoff and jitter; a timeout is not
 *              retried (it may have done its work).
 *
 * What runs is either a process (argv, through the sandboxed runner engine/exec.h) or an
 * HTTP request (engine/httpc.h). Everything is recorded in the ledger: decision, claim,
 * outcome, with the policy, why and the exact command. Loop thread only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vm.h"
#include "engine/guard.h"
#include "engine/labelmatch.h"

typedef struct vg_executor vg_executor_t;
typedef struct vg_action vg_action_t;
struct vg_store;
struct vg_exec;

typedef enum { VG_MODE_OBSERVE = 0, VG_MODE_DRY_RUN = 1, VG_MODE_ENFORCE = 2 } vg_mode_t;

/* "observe" | "dry-run" | "enforce" -> 0..2, or -1. */
int vg_mode_parse(const char *s);
const char *vg_mode_name(vg_mode_t m);

typedef struct {
  vg_mode_t mode;               /* dry-run */
  vg_guard_opts_t guard;        /* engine/guard.h defaults */
  const char *kill_switch_file; /* NULL: none */
  uint64_t approval_timeout_ms; /* 30 min */
  uint64_t backoff_ms;          /* first retry delay: 1 s */
  uint64_t backoff_max_ms;      /* 60 s */
  /* alert storms: more than storm_alerts alerts carrying the same value of storm_label within
     storm_window refuse actions in that scope (ESTORM): when that much is broken at once, the
     detector or the monitoring is likelier wrong than every target, and a human should look */
  const char *storm_label;  /* "namespace" */
  uint32_t storm_alerts;    /* 100; 0: off */
  uint64_t storm_window_ms; /* 1 min */
} vg_executor_opts_t;

void vg_executor_opts_default(vg_executor_opts_t *o);

/* `store` NULL: observe and dry-run work, enforce is refused ("ENOLEDGER": there is nowhere
 * to claim the key); `exec` NULL: process actions fail with "ENOEXEC". Returns NULL on OOM. */
vg_executor_t *vg_executor_new(vg_runtime_t *rt,
                               struct vg_store *store,
                               struct vg_exec *exec,
                               const vg_executor_opts_t *o);

/* Loads persisted guard state and the kill switch, marks actions left claimed by a previous
 * run as unknown; `done` gets the number of unknown ones (or < 0 on failure). */
void vg_executor_start(vg_executor_t *ex, void (*done)(void *ud, int64_t unknown), void *ud);

/* Shutting down, before the store closes: no new action is taken, running processes and
 * requests are abandoned (their claims stay and read "unknown" at the next start: they may
 * have done their work), callers are detached. Ledger writes in flight still complete. */
void vg_executor_stop(vg_executor_t *ex);

/* Frees the executor; call after vg_executor_stop and once the store has closed (so no ledger
 * callback is pending). */
void vg_executor_free(vg_executor_t *ex);

/* ---- one action ---- */

typedef struct {
  const char *type;    /* "scale", "restart", "notify", "run", ... */
  const char *target;  /* what it acts on ("deployment/prod/web") */
  const char *scope;   /* blast-radius scope ("prod"); may be NULL */
  const char *subject; /* incident/alert identity for the key; may be NULL */
  int64_t incident_id;
  const char *key; /* explicit idempotency key; NULL: policy/subject/type/target */
  const char *why;
  const char *command; /* JSON for the ledger: the exact argv or request, secrets redacted */
  int mode;            /* -1: no opinion; else a vg_mode_t that may only lower the mode */
  bool notify;         /* a notification: fails open, not stopped by the kill switch, no
                          guard rails but its key */
  bool approve;
  bool read_only; /* a query (kubectl get, rollout status): no claim, no guard rails, runs in
                     every mode, refused unless the command is one the engine knows reads */
  uint64_t approval_timeout_ms; /* 0: the executor's */
  int retries;                  /* extra attempts after a failure; < 0: 3 */
  uint64_t timeout_ms;          /* per attempt; 0: the runner's default */

  /* a process ... */
  const char *const *argv;
  size_t argc;
  const char *const *env; /* "NAME=value" added to the allowlisted environment */
  size_t nenv;
  const char *stdin_data;
  size_t stdin_len;
  size_t max_output;
  /* ... or an HTTP request */
  const char *method;
  const char *url;
  const char *const *headers;
  size_t nheaders;
  const char *body;
  size_t body_len;
} vg_action_req_t;

typedef struct {
  const char *state; /* observed | dry-run | refused | done | failed | duplicate | denied |
                        expired */
  int64_t id;        /* ledger row; 0 without a store */
  const char *key;
  const char *mode;
  const char *error; /* "ERATELIMIT: ..." etc.; NULL when done */
  const char *would; /* dry-run: "allowed" or the refusal the guard would give */
  int attempts;
  double duration; /* seconds, all attempts */
  /* a process */
  bool ran_process;
  int code, signal;
  bool timed_out;
  const char *out, *err; /* stdout, stderr */
  size_t out_len, err_len;
  /* an HTTP request */
  bool ran_http;
  long status;
  const char *resp_headers, *resp_body;
  size_t resp_headers_len, resp_body_len;
} vg_action_result_t;

/* Called on the loop once per submitted action, unless detached. The result is valid during
 * the call only. */
typedef void (*vg_action_done_fn)(void *ud, const vg_action_result_t *r);

/* True when argv is a command known to only read: kubectl get, describe, rollout status, ...
 * (the subcommand is the first argument that is not a flag). */
bool vg_executor_is_read_only(const char *const *argv, size_t argc);

/* Who asks: the policy's name and version and its own mode (-1: none). */
typedef struct {
  const char *policy;
  const char *version;
  int mode;
} vg_action_origin_t;

/* Starts an action. Returns NULL with a message in err for a malformed request (no target,
 * both or neither of argv and url, ...). */
vg_action_t *vg_executor_submit(vg_executor_t *ex,
                                const vg_action_origin_t *origin,
                                const vg_action_req_t *req,
                                vg_action_done_fn done,
                                void *ud,
                                char *err,
                                size_t errlen);

/* The caller goes away (its task was cancelled): `done` will not run. An action that already
 * claimed its key still runs to its end and records the outcome. */
void vg_action_detach(vg_action_t *a);

/* ---- operators ---- */

typedef void (*vg_executor_answer_fn)(void *ud, int status, const char *msg);

/* Approve or deny an action awaiting approval (`approve`), or reconcile an unknown one
 * (`outcome` "done" | "failed"). */
void vg_executor_decide(vg_executor_t *ex,
                        int64_t id,
                        const char *decision, /* approved | denied | done | failed */
                        const char *who,
                        const char *comment,
                        vg_executor_answer_fn done,
                        void *ud);

/* Turns the kill switch on or off: effective at once, persisted when the store allows. */
void vg_executor_kill_switch(vg_executor_t *ex,
                             bool on,
                             const char *who,
                             const char *comment,
                             vg_executor_answer_fn done,
                             void *ud);

/* True when the switch is on (set here or the file exists). */
bool vg_executor_killed(vg_executor_t *ex);

bool vg_executor_reset_breaker(vg_executor_t *ex, const char *target);

/* ---- local suppressions: vigil stops acting on matching alerts until they expire ---- */

/* `matchers` in label-matcher syntax ({alertname="DiskFull",host="db-1"}); at least one
 * equality matcher with a value, never "everything". In force at once; stored when there is a
 * store (done gets its id, or 0). */
void vg_executor_suppress(vg_executor_t *ex,
                          const char *matchers,
                          int64_t until_ms,
                          const char *reason,
                          const char *who,
                          void (*done)(void *ud, int status, const char *msg, int64_t id),
                          void *ud);

/* Intake tells the executor of every new or changed alert (storm accounting). */
void vg_executor_note_alert(vg_executor_t *ex, const vg_label_t *labels, size_t nlabels);

/* True when a suppression in force matches the labels (the alert is not handed to policies). */
bool vg_executor_suppressed(vg_executor_t *ex, const vg_label_t *labels, size_t nlabels);

/* ---- healing runs: records of ordered steps (lua/vigil/heal.lua runs them) ---- */

typedef void (*vg_heal_done_fn)(void *ud, int status, const char *msg, int64_t id);
void vg_executor_heal_begin(vg_executor_t *ex,
                            const char *policy,
                            const char *name,
                            const char *subject,
                            int64_t incident_id,
                            vg_heal_done_fn done,
                            void *ud);
void vg_executor_heal_end(vg_executor_t *ex,
                          int64_t id,
                          const char *status,
                          const char *steps_json,
                          const char *error,
                          vg_heal_done_fn done,
                          void *ud);

typedef struct {
  uint64_t submitted, observed, dry_run, refused, done, failed, duplicate, denied, expired;
  uint64_t unknown_at_start;
  uint32_t running, awaiting_approval, suppressions;
  uint64_t suppressed;    /* alerts not handed to policies because of a suppression */
  uint64_t storm_refused; /* actions refused because their scope is in an alert storm */
  bool killed;
  vg_guard_stats_t guard;
} vg_executor_stats_t;

void vg_executor_stats(vg_executor_t *ex, vg_executor_stats_t *out);

/* The states an action can end in, in the order of vg_executor_each_type's counts. */
#define VG_ACTION_STATES 8
extern const char *const vg_action_state_names[VG_ACTION_STATES];

/* Calls fn for each action type seen (at most 64; later ones count as "other") with its
 * counts per final state. */
void vg_executor_each_type(vg_executor_t *ex,
                           void (*fn)(void *ud, const char *type, const uint64_t *counts),
                           void *ud);

struct vg_store *vg_executor_store(vg_executor_t *ex);
