/* Work that would stall the loop (training a model on a large input) run on libuv's thread
 * pool while the calling task waits (DESIGN.md §2): the work sees plain C data only, never a
 * Lua state, and its result comes back to the task on the loop thread. Bindings use this
 * instead of calling uv_* themselves. */
#pragma once

#include <lua.h>

#include "core/task.h"

/* Runs on a pool thread: computes from `data` into `data`. Must not touch any Lua state. */
typedef void (*vg_offload_work_fn)(void *data);
/* Runs in the task on the loop thread once the work is done: pushes the results, frees `data`
 * (before anything that may raise) and returns how many values it pushed. The task's stack is
 * as the offloading function left it below the yield, so its arguments are still there. */
typedef int (*vg_offload_push_fn)(lua_State *L, void *data);
/* Frees `data` when no task will ever see it (cancelled before or while the work ran); runs on
 * the loop thread after the work has finished, never while it runs. */
typedef void (*vg_offload_free_fn)(void *data);

/* The task running on L when it may wait here (inside a task, on its own thread, not in a
 * no-yield section or a metamethod called from C), else NULL: the caller then does the work
 * synchronously. Never raises. */
vg_task_t *vg_offload_task(lua_State *L);

/* Queues work(data) on the thread pool and suspends `t` (from vg_offload_task(L)); the caller
 * ends with `return vg_offload(...)`. When the work is done, push(L, data) gives the task its
 * results; if the task is cancelled first, release(data) runs once the work is done. If the
 * work cannot be queued, it runs here, synchronously, and push gives the results at once. */
int vg_offload(lua_State *L,
               vg_task_t *t,
               void *data,
               vg_offload_work_fn work,
               vg_offload_push_fn push,
               vg_offload_free_fn release);
