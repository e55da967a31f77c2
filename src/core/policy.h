/* Policies: one file in the policies directory, one policy, one VM per loaded version.
 * Loading compiles and validates in a fresh VM; a reload swaps the new version in and lets
 * the old one drain its in-flight tasks to a deadline. A broken file never replaces a working
 * version. Matchers are compiled to C so non-matching policies cost nothing per alert. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/alert.h"
#include "core/task.h"
#include "core/vm.h"
#include "engine/labelmatch.h"

typedef struct vg_policy vg_policy_t;
typedef struct vg_policies vg_policies_t;

/* Error budget: a policy with `max` failed runs within `window_ms` is disabled until its file
 * changes or an operator re-enables it. */
typedef struct {
  int max;
  uint64_t window_ms;
} vg_error_budget_t;

#define VG_ERROR_RING 64

struct vg_policy {
  vg_policies_t *set;
  char *name;
  char *path;
  uint64_t hash; /* of the file's content, to make unchanged reloads no-ops */
  vg_vm_t *vm;   /* the active version */
  int table_ref; /* the table the file returned, in vm */
  int on_alert_ref;
  vg_matchers_t *matchers;
  char *description;
  int mode; /* the policy's own executor mode (vg_mode_t), or -1: the global one */

  uint64_t runs, failures, kills, matched;
  uint64_t dropped; /* alerts not run because the policy had max_inflight tasks already */
  uint64_t error_times[VG_ERROR_RING];
  int error_next;
  bool disabled;
  char *disabled_reason;
  char *last_error;
  uint64_t loaded_at_ms;
  int generation;
  vg_policy_t *next;
};

typedef struct vg_drain vg_drain_t;

struct vg_policies {
  vg_runtime_t *rt;
  char *dir;
  char *lib_dir;
  vg_policy_t *list;
  vg_drain_t *draining;
  vg_error_budget_t budget;
  uint64_t drain_ms;
  uint64_t debounce_ms;
  uint32_t max_inflight; /* tasks per policy beyond which new alerts are dropped (counted) */
  vg_limits_t limits;

  uint64_t lib_hash;
  uint64_t reloads, reload_failures, dispatched;
  char *quarantine_path; /* policies the watchdog stopped: "hash name\n" per line */

  uv_fs_event_t watch_dir;
  bool watching_dir;
  struct vg_dirwatch *lib_watches; /* lib/ and its sub-directories, re-scanned on reload */
  struct vg_timer *debounce;
  uv_signal_t sighup;
  bool sighup_on;
  int open_handles; /* embedded handles not yet closed: ps is freed after the last */
  bool freeing;
};

/* Creates an empty set for `dir` (policies/lib beside it is the require("lib.x") path). */
vg_policies_t *vg_policies_new(vg_runtime_t *rt, const char *dir);
void vg_policies_free(vg_policies_t *ps);

/* Loads or reloads every policy file of the directory. Unchanged files are no-ops. Returns
 * the number of files that failed to load (each reported in the log as file:line: message). */
int vg_policies_reload(vg_policies_t *ps, const char *why);

/* Watches the directory (debounced) and SIGHUP, reloading on change. */
int vg_policies_watch(vg_policies_t *ps);

/* Told once every run an alert started has ended: `complete` is false when one was cancelled
 * before it could finish (vigil stopping, or a reload that replaced the policy past its drain
 * time), true when each ended by itself (done, failed, killed by its budget or its deadline). */
typedef void (*vg_dispatch_done_fn)(void *ud, bool complete);

/* Offers an alert to every enabled policy whose matchers accept it; each runs on_alert as
 * its own task. A policy that already has max_inflight tasks misses the alert: it is counted
 * in p->dropped and logged, so a slow policy never holds intake back. Returns how many
 * policies took it. `done` (may be NULL) runs exactly once: when the last of those runs ends,
 * or before this returns when none started. */
int vg_policies_dispatch(vg_policies_t *ps,
                         const vg_alert_t *alert,
                         vg_dispatch_done_fn done,
                         void *ud);

vg_policy_t *vg_policies_find(vg_policies_t *ps, const char *name);

/* Runs require(module)[fn](policy_table, arg, ctx) as a task of the policy's active version
 * (how the engine calls into the runtime library on a policy's behalf, e.g. to fire an
 * escalation). Returns NULL when the policy is disabled or the call cannot start (logged). */
vg_task_t *vg_policy_call(vg_policy_t *p,
                          const char *module,
                          const char *fn,
                          const char *arg,
                          const vg_task_opts_t *opts);
void vg_policy_enable(vg_policy_t *p);
void vg_policy_disable(vg_policy_t *p, const char *reason);

/* Records that the watchdog stopped `p` (it stays off until its file changes, also across
 * restarts). */
void vg_policy_quarantine(vg_policy_t *p, const char *reason);

/* Validates a policy table at `tbl` in any VM (specs use it to load a policy the same way the
 * daemon does). Raises "path:line: message" on a problem; returns its compiled matchers and
 * its name (both owned by the caller). [-0, +0, v] */
vg_matchers_t *vg_policy_validate_table(
    lua_State *L, int tbl, const char *path, const char *text, char **name);

/* Compiles and validates one policy file without activating it (vigil check). Returns 0 with
 * the policy's name in `name`, or -1 with "file:line: message" in err. */
int vg_policy_check_file(vg_runtime_t *rt,
                         const char *path,
                         const char *lib_dir,
                         char *name,
                         size_t namelen,
                         char *err,
                         size_t errlen);
