/* The runtime: owns the libuv loop, the scheduler's ready queue, the clock, the policies and
 * the watchdog. Only this module creates or closes the loop. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/vm.h"

typedef struct vg_config vg_config_t;
typedef struct vg_policies vg_policies_t;
typedef struct vg_watchdog vg_watchdog_t;
typedef struct vg_timer vg_timer_t;

struct vg_runtime {
  uv_loop_t loop_storage;
  uv_loop_t *loop;

  /* scheduler (task.c) */
  uv_idle_t sched_idle;
  bool sched_active;
  vg_task_t *ready_head, *ready_tail;
  size_t ready_len;
  uint64_t tasks_spawned, resumes, task_errors, task_kills;
  struct vg_deferred *deferred; /* vg_sched_defer() calls, oldest first */
  struct vg_deferred *deferred_tail;

  /* clock (clock.c) */
  bool virtual_clock;
  double vclock_ms;
  vg_timer_t *vtimers;

  /* what the watchdog looks at (watchdog.c) */
  atomic_uint_fast64_t heartbeat; /* bumped by the loop; a stalled loop stops bumping it */
  _Atomic(vg_vm_t *) running_vm;  /* VM whose code runs now */
  _Atomic(lua_State *) running_co;
  vg_watchdog_t *watchdog;

  struct vg_httpc *httpc;            /* the HTTP client, made on first use (vg_runtime_httpc) */
  struct vg_sources *sources;        /* named data sources' request policies (vg_runtime_sources) */
  struct vg_exec *exec;              /* the sandboxed process runner, made on first use */
  bool exec_failed;                  /* it could not be made (logged once) */
  struct vg_executor *executor;      /* actions under guard rails (the daemon's has the store) */
  struct vg_escalator *escalator;    /* the daemon's escalation timers; NULL elsewhere */
  struct vg_series_registry *series; /* named streaming detectors (vg_runtime_series) */
  struct vg_logan_registry *logs;    /* named log analysers (vg_runtime_logs) */
  const vg_config_t *logs_config;    /* the config whose logs.analysers it has */
  struct vg_iforest_registry *forests; /* named isolation forests (vg_runtime_forests) */

  vg_limits_t limits; /* defaults for policy VMs */
  vg_config_t *config;
  vg_policies_t *policies;
  void *repl_server;
  bool stopping;
};

/* Creates a runtime with its own loop. Returns NULL on failure. */
vg_runtime_t *vg_runtime_new(void);

/* Cancels everything, closes every handle and the loop, frees the runtime. */
void vg_runtime_free(vg_runtime_t *rt);

/* Runs the loop until nothing is left to do; on a virtual clock, keeps jumping to the next
 * timer while there is one (not past limit_s when limit_s >= 0). */
void vg_runtime_run(vg_runtime_t *rt, double limit_s);

/* The runtime's HTTP client (one curl multi handle for every VM), created on first use.
 * NULL when curl cannot be initialised. */
struct vg_httpc *vg_runtime_httpc(vg_runtime_t *rt);

/* The registry of data sources (breakers, retries, concurrency), created on first use; it
 * lives as long as the runtime, so a policy reload keeps each source's state. */
struct vg_sources *vg_runtime_sources(vg_runtime_t *rt);

/* The named streaming detectors of vigil.detect.series, created on first use (NULL when out
 * of memory); they live as long as the runtime, so a policy reload keeps what they learned. */
struct vg_series_registry *vg_runtime_series(vg_runtime_t *rt);

/* The named isolation forests of vigil.detect.iforest{ name = ... }, created on first use (NULL
 * when out of memory); at most 1000 and 256 MiB of models, living as long as the runtime, so a
 * policy reload keeps the trained models (engine/iforest_registry.h). */
struct vg_iforest_registry *vg_runtime_forests(vg_runtime_t *rt);

/* The named log analysers of vigil.logs.analyser, the intake and log tailing (engine/logan.h),
 * created on first use (NULL when out of memory); at most 256, living as long as the runtime.
 * The analysers declared in the config (logs.analysers) are added when it is first asked for
 * after a config is set. */
struct vg_logan_registry *vg_runtime_logs(vg_runtime_t *rt);

/* The sandboxed process runner configured by `executor = {...}`, created on first use; NULL
 * when it cannot be (the reason is logged once). */
struct vg_exec *vg_runtime_exec(vg_runtime_t *rt);

/* The executor actions go through. The daemon installs one with the store
 * (vg_runtime_set_executor); elsewhere (REPL, `vigil test`) one without a store is made on
 * first use: observe and dry-run work, enforce is refused. */
struct vg_executor *vg_runtime_executor(vg_runtime_t *rt);
void vg_runtime_set_executor(vg_runtime_t *rt, struct vg_executor *ex);

/* Default limits for policy VMs (config `limits`): 64 MiB, 100M instructions per task, 1 s
 * slice, 5 min deadline. */
void vg_limits_default(vg_limits_t *limits);
