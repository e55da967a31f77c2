/* Tasks: every unit of Lua work (alert handler, timer tick, REPL line, test case) runs in a
 * coroutine owned by the scheduler. Async C functions start an operation and yield; the
 * operation's completion only marks the task ready, and the scheduler resumes it from the
 * loop. Cancellation calls the operation's cancel function exactly once and never resumes. */
#pragma once

#include <lua.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/vm.h"

typedef enum { VG_TASK_READY, VG_TASK_RUNNING, VG_TASK_WAITING, VG_TASK_DONE } vg_task_state_t;

typedef enum {
  VG_TASK_OK,        /* returned normally; results on its thread */
  VG_TASK_ERROR,     /* raised an error */
  VG_TASK_KILLED,    /* stopped by a budget (instructions, time slice, memory, watchdog) */
  VG_TASK_CANCELLED, /* cancelled: deadline, parent ended, reload drain, shutdown, Ctrl-C */
} vg_task_status_t;

/* Pushes the values an operation resumes the task with; returns how many. Runs in the task. */
typedef int (*vg_push_fn)(lua_State *L, void *op);
/* Releases a pending operation whose results will never be pushed: aborts it if it is still
 * in flight, frees it if it already completed. Called at most once; never after push ran. */
typedef void (*vg_cancel_fn)(void *op);
/* Called once when a task ends; on VG_TASK_OK its nresults results are on its thread. */
typedef void (*vg_task_done_fn)(vg_task_t *t, void *ud);

typedef struct vg_waiter vg_waiter_t;

struct vg_task {
  vg_vm_t *vm;
  lua_State *co;
  int co_ref;
  char name[96];
  vg_task_state_t state;
  vg_task_status_t status;
  vg_budget_t budget;
  uint64_t timeout_ms;
  struct vg_timer *deadline; /* armed at the first yield: most tasks never wait */
  double deadline_ms;        /* on the runtime's clock (virtual in specs) */
  uint64_t started_ns;

  /* the pending operation, while WAITING */
  void *op;
  vg_cancel_fn cancel;
  vg_push_fn push;
  int nargs; /* arguments for the first resume */

  /* links: ready queue, the VM's task list, the parent's children */
  vg_task_t *next_ready;
  bool queued;
  vg_task_t *vm_prev, *vm_next;
  vg_task_t *parent, *children, *sib_prev, *sib_next;
  vg_waiter_t *waiters; /* tasks blocked in vigil.wait on this one */

  vg_task_done_fn done;
  void *done_ud;
  int refs;             /* Lua handles and waiters that still need this struct */
  int nresults;         /* results left on co after VG_TASK_OK */
  char *error;          /* message (with traceback) for ERROR/KILLED/CANCELLED */
  char *cancel_reason;  /* given to vg_task_cancel while the task ran; reported when it stops */
  const char *label;    /* what the task is for, in logs: "on_alert", "every", "repl" */
  bool detach_children; /* what it spawns belongs to the VM, not to it (a REPL line) */
};

typedef struct {
  const char *name;
  const char *label;
  uint64_t timeout_ms;  /* 0: the VM's default */
  vg_task_t *parent;    /* cancelled with its parent; NULL for a root task */
  bool detach_children; /* tasks it spawns outlive it (they end with the VM) */
  vg_task_done_fn done;
  void *done_ud;
} vg_task_opts_t;

/* Creates a task running the function below `nargs` arguments on vm->L's stack (both are
 * popped) and queues it. Returns NULL (stack popped) on failure, with a message logged. */
vg_task_t *vg_task_spawn(vg_vm_t *vm, int nargs, const vg_task_opts_t *opts);

/* Same, with the function and arguments on another thread of the VM (the caller's). */
vg_task_t *vg_task_spawn_on(vg_vm_t *vm, lua_State *L, int nargs, const vg_task_opts_t *opts);

/* The task running on L, or NULL outside tasks. */
vg_task_t *vg_task_current(lua_State *L);

/* For async functions, before `return lua_yield(L, 0)`: raises a clear error naming `fname`
 * when L cannot yield here (not in a task, inside require, a table.sort comparator, a gsub
 * replacement function, a metamethod called from C), else returns the current task. */
vg_task_t *vg_task_check_yieldable(lua_State *L, const char *fname);

/* Marks the current task as waiting on an operation. */
void vg_task_suspend(vg_task_t *t, void *op, vg_cancel_fn cancel);

/* Completion of the pending operation: `push` will run inside the task (as the yield's
 * continuation, so its errors are ordinary Lua errors of the task) and must free the op. */
void vg_task_wake(vg_task_t *t, vg_push_fn push);

/* The tail call an async function ends with, after vg_task_suspend(). */
int vg_task_yield(lua_State *L);

/* Yields the running task to the scheduler and resumes it on a later turn (fairness). */
int vg_task_yield_now(lua_State *L);

/* Cancels a task (and its children). A running task is stopped at its next instruction. */
void vg_task_cancel(vg_task_t *t, const char *reason);
void vg_task_cancel_all(vg_vm_t *vm, const char *reason);

/* Handles and waiters keep a finished task's results alive. */
void vg_task_ref(vg_task_t *t);
void vg_task_unref(vg_task_t *t);

/* Registers `waiter` (the running task) to be woken when `t` ends; see lvigil.c wait(). */
struct vg_waiter {
  vg_task_t *waiter, *target;
  vg_waiter_t *next;
  struct vg_timer *timer;
  bool timed_out;
};
vg_waiter_t *vg_task_add_waiter(vg_task_t *target, vg_task_t *waiter);
void vg_task_remove_waiter(vg_waiter_t *w);

/* Pushes the outcome of a finished task the way vigil.wait returns it: its results, or nil and
 * "ETASK: ..."/"ECANCELED: ...". Returns the number of values pushed. */
int vg_task_push_outcome(lua_State *L, vg_task_t *t);

/* Drains the ready queue once, then runs the deferred calls (the scheduler's idle callback
 * does this). */
void vg_sched_run(vg_runtime_t *rt);

/* Calls fn(ud) at the end of the current scheduler turn, outside any Lua call: for freeing
 * what a completion callback cannot free while its VM is still on the C stack. Calls still
 * pending when the runtime is freed run then. Returns false when out of memory. */
bool vg_sched_defer(vg_runtime_t *rt, void (*fn)(void *ud), void *ud);
void vg_sched_run_deferred(vg_runtime_t *rt);

const char *vg_task_status_name(vg_task_status_t status);
const char *vg_task_state_name(vg_task_state_t state);
