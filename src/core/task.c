/* The scheduler. Tasks are resumed only from the ready queue, drained by an idle handle on
 * the loop, never from inside Lua; an operation's completion just queues its task. An async
 * function yields with a continuation (resume_k) that pushes the operation's results from
 * inside the task, so even an out-of-memory error there is an ordinary error of that task. */
#include "core/task.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/compat.h"
#include "core/log.h"
#include "core/runtime.h"

static void task_finish(vg_task_t *t, vg_task_status_t status, char *error);

/* What the <close> handlers of a task that failed, was killed or was cancelled may spend. */
enum { VG_CLEANUP_INSTRUCTIONS = 1000000, VG_CLEANUP_SLICE_MS = 100 };

/* ---- ready queue ---- */

static void sched_idle_cb(uv_idle_t *h)
{
  vg_sched_run(h->data);
}

static void sched_wake(vg_runtime_t *rt)
{
  if (!rt->sched_active) {
    rt->sched_idle.data = rt;
    uv_idle_start(&rt->sched_idle, sched_idle_cb);
    rt->sched_active = true;
  }
}

static void ready_push(vg_task_t *t)
{
  vg_runtime_t *rt = t->vm->rt;
  t->state = VG_TASK_READY;
  if (t->queued) {
    return;
  }
  t->queued = true;
  t->next_ready = NULL;
  rt->ready_len++;
  if (rt->ready_tail != NULL) {
    rt->ready_tail->next_ready = t;
  } else {
    rt->ready_head = t;
  }
  rt->ready_tail = t;
  sched_wake(rt);
}

static void ready_remove(vg_task_t *t)
{
  vg_runtime_t *rt = t->vm->rt;
  vg_task_t *prev = NULL;
  for (vg_task_t *p = rt->ready_head; p != NULL; prev = p, p = p->next_ready) {
    if (p == t) {
      if (prev != NULL) {
        prev->next_ready = t->next_ready;
      } else {
        rt->ready_head = t->next_ready;
      }
      if (rt->ready_tail == t) {
        rt->ready_tail = prev;
      }
      rt->ready_len--;
      break;
    }
  }
  t->queued = false;
  t->next_ready = NULL;
}

/* ---- creation ---- */

typedef struct {
  vg_task_t *t;
  int n; /* function + arguments */
} spawn_args_t;

/* [-(n), +0, m] Runs protected: moves the function and arguments into a new thread. */
static int spawn_thread_p(lua_State *L)
{
  spawn_args_t *a = lua_touserdata(L, -1);
  lua_pop(L, 1);
  lua_State *co = lua_newthread(L);
  lua_insert(L, -(a->n + 1));
  luaL_checkstack(co, a->n + LUA_MINSTACK, "too many arguments for a task");
  lua_xmove(L, co, a->n);
  a->t->co = co;
  a->t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* The loop's time in ms, the clock timers count on. */
static double clock_ms(vg_runtime_t *rt)
{
  return rt->virtual_clock ? rt->vclock_ms : (double)uv_now(rt->loop);
}

static void deadline_cb(vg_timer_t *timer, void *ud)
{
  vg_task_t *t = ud;
  char reason[96];
  snprintf(reason, sizeof(reason), "deadline exceeded (%llu ms)",
           (unsigned long long)t->timeout_ms);
  vg_timer_stop(timer);
  t->deadline = NULL;
  vg_task_cancel(t, reason);
}

vg_task_t *vg_task_spawn_on(vg_vm_t *vm, lua_State *L, int nargs, const vg_task_opts_t *opts)
{
  vg_runtime_t *rt = vm->rt;
  if (vm->closing || rt->stopping) {
    lua_pop(L, nargs + 1);
    return NULL;
  }
  vg_task_t *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    lua_pop(L, nargs + 1);
    return NULL;
  }
  spawn_args_t a = { t, nargs + 1 };
  lua_pushcfunction(L, spawn_thread_p);
  lua_insert(L, -(nargs + 2));
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, nargs + 2, 0, 0) != LUA_OK) {
    char buf[64];
    vg_log(VG_LOG_ERROR, "cannot create task", "vm", vm->name, "error",
           vg_vm_error_text(L, -1, buf, sizeof(buf)), NULL);
    lua_pop(L, 1);
    free(t);
    return NULL;
  }
  t->vm = vm;
  vg_vm_arm_hook(t->co);
  snprintf(t->name, sizeof(t->name), "%s", opts && opts->name ? opts->name : "task");
  t->label = opts && opts->label ? opts->label : "task";
  t->budget.instr_limit = vm->limits.instructions;
  t->budget.slice_ns = vm->limits.slice_ms * 1000000ULL;
  t->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : vm->limits.timeout_ms;
  t->nargs = nargs;
  t->started_ns = uv_hrtime();
  if (opts != NULL) {
    t->done = opts->done;
    t->done_ud = opts->done_ud;
    t->parent = opts->parent;
    t->detach_children = opts->detach_children;
  }
  t->vm_next = vm->tasks;
  if (vm->tasks != NULL) {
    vm->tasks->vm_prev = t;
  }
  vm->tasks = t;
  vm->ntasks++;
  if (t->parent != NULL) {
    t->sib_next = t->parent->children;
    if (t->parent->children != NULL) {
      t->parent->children->sib_prev = t;
    }
    t->parent->children = t;
  }
  if (t->timeout_ms != 0) {
    t->deadline_ms = clock_ms(rt) + (double)t->timeout_ms;
  }
  rt->tasks_spawned++;
  ready_push(t);
  return t;
}

vg_task_t *vg_task_spawn(vg_vm_t *vm, int nargs, const vg_task_opts_t *opts)
{
  return vg_task_spawn_on(vm, vm->L, nargs, opts);
}

/* ---- running ---- */

vg_task_t *vg_task_current(lua_State *L)
{
  vg_task_t *t = vg_vm_of(L)->current;
  return t != NULL && t->co == L ? t : NULL;
}

vg_task_t *vg_task_check_yieldable(lua_State *L, const char *fname)
{
  vg_vm_t *vm = vg_vm_of(L);
  if (vm->current == NULL) {
    luaL_error(L,
               "%s: not inside a task (code that runs while a policy or config file loads "
               "cannot wait; call it from on_alert, an every job, the REPL or a spec)",
               fname);
  }
  if (vm->noyield_reason != NULL) {
    luaL_error(L, "%s: cannot wait %s; move the call out of that function", fname,
               vm->noyield_reason);
  }
  if (vm->current->co != L || !lua_isyieldable(L)) {
    luaL_error(L,
               "%s: cannot wait here: called from C code that cannot be suspended (a "
               "metamethod such as __index/__tostring/__close, or an iterator); move the call "
               "out of that function",
               fname);
  }
  return vm->current;
}

void vg_task_suspend(vg_task_t *t, void *op, vg_cancel_fn cancel)
{
  t->state = VG_TASK_WAITING;
  t->op = op;
  t->cancel = cancel;
  t->push = NULL;
}

void vg_task_wake(vg_task_t *t, vg_push_fn push)
{
  if (t->state != VG_TASK_WAITING) {
    return;
  }
  t->push = push;
  ready_push(t);
}

static int resume_k(lua_State *L, int status, lua_KContext ctx)
{
  (void)status;
  (void)ctx;
  vg_task_t *t = vg_vm_of(L)->current;
  vg_push_fn push = t->push;
  void *op = t->op;
  t->push = NULL;
  t->op = NULL;
  t->cancel = NULL;
  return push != NULL ? push(L, op) : 0;
}

int vg_task_yield(lua_State *L)
{
  return lua_yieldk(L, 0, 0, resume_k);
}

static int push_nothing(lua_State *L, void *op)
{
  (void)L;
  (void)op;
  return 0;
}

int vg_task_yield_now(lua_State *L)
{
  vg_task_t *t = vg_task_check_yieldable(L, "vigil.sleep");
  vg_task_suspend(t, NULL, NULL);
  vg_task_wake(t, push_nothing);
  return vg_task_yield(L);
}

/* Builds "message\nstack traceback:..." from the dead task's thread, protected. */
static int traceback_p(lua_State *L)
{
  vg_task_t *t = lua_touserdata(L, 1);
  luaL_traceback(L, t->co, lua_touserdata(L, 2), 0);
  return 1;
}

/* What stopped a killed task, with the limit it hit. */
static void kill_text(vg_task_t *t, char *buf, size_t len)
{
  const vg_limits_t *lim = &t->vm->limits;
  switch (t->budget.killed) {
    case VG_KILL_INSTRUCTIONS:
      snprintf(buf, len, "killed: instruction budget exceeded (%llu instructions)",
               (unsigned long long)t->budget.instr_limit);
      break;
    case VG_KILL_SLICE:
      snprintf(buf, len, "killed: ran %llu ms without yielding (time slice)",
               (unsigned long long)lim->slice_ms);
      break;
    case VG_KILL_MEMORY:
      if (t->vm->alloc_fail_at != 0 && t->vm->alloc_count >= t->vm->alloc_fail_at) {
        snprintf(buf, len, "killed: out of memory (fault injection from allocation %llu)",
                 (unsigned long long)t->vm->alloc_fail_at);
      } else {
        snprintf(buf, len, "killed: memory limit reached (%zu MiB for this VM)", lim->memory >> 20);
      }
      break;
    default: {
      char why[96];
      snprintf(buf, len, "killed: %s", vg_kill_reason(t->budget.killed, why, sizeof(why)));
      break;
    }
  }
}

static char *task_error_text(vg_task_t *t, bool killed)
{
  lua_State *L = t->vm->L;
  char msg[512], buf[160];
  if (killed && t->budget.killed == VG_KILL_CANCELLED) {
    snprintf(msg, sizeof(msg), "%s", t->cancel_reason ? t->cancel_reason : "cancelled");
  } else if (killed) {
    kill_text(t, msg, sizeof(msg));
  } else {
    snprintf(msg, sizeof(msg), "%s", vg_vm_error_text(t->co, -1, buf, sizeof(buf)));
  }
  char *out = NULL;
  vg_budget_t *saved = t->vm->budget;
  t->vm->budget = NULL; /* our own C code: no budget */
  lua_pushcfunction(L, traceback_p);
  lua_pushlightuserdata(L, t);
  lua_pushlightuserdata(L, msg); /* pushing a string could fail here, unprotected */
  if (lua_pcall(L, 2, 1, 0) == LUA_OK) {
    out = strdup(lua_tostring(L, -1));
  }
  lua_pop(L, 1);
  t->vm->budget = saved;
  return out != NULL ? out : strdup(msg);
}

static void task_resume(vg_task_t *t)
{
  vg_vm_t *vm = t->vm;
  vg_runtime_t *rt = vm->rt;
  int nargs = t->nargs;
  t->nargs = 0;
  t->state = VG_TASK_RUNNING;
  atomic_store(&vm->interrupt, VG_KILL_NONE); /* a stale watchdog request was for another run */
  vm->current = t;
  vm->budget = &t->budget;
  t->budget.slice_start = uv_hrtime();
  atomic_store(&rt->running_vm, vm);
  atomic_store(&rt->running_co, t->co);
  int nres = 0;
  int status = lua_resume(t->co, NULL, nargs, &nres);
  atomic_store(&rt->running_co, NULL);
  atomic_store(&rt->running_vm, NULL);
  atomic_fetch_add(&rt->heartbeat, 1);
  vm->current = NULL;
  vm->budget = NULL;
  rt->resumes++;

  if (status == LUA_YIELD) {
    lua_pop(t->co, nres);
    if (t->timeout_ms != 0 && t->deadline == NULL) {
      /* Running, a task is bounded by its slice; waiting, by its deadline, armed only now
       * since a timer per task costs more than the many that end in their first run. */
      double left = t->deadline_ms - clock_ms(rt);
      t->deadline = vg_timer_start(rt, left > 0 ? (uint64_t)left : 0, 0, deadline_cb, t);
    }
    if (t->state == VG_TASK_RUNNING) {
      /* A raw coroutine.yield: only the scheduler may suspend a task. */
      task_finish(t, VG_TASK_ERROR, strdup("task yielded outside the scheduler"));
    } else if (t->budget.killed == VG_KILL_CANCELLED) {
      vg_task_cancel(t, t->cancel_reason ? t->cancel_reason : "cancelled");
    }
    return;
  }
  if (status == LUA_OK) {
    t->nresults = lua_gettop(t->co);
    task_finish(t, VG_TASK_OK, NULL);
    return;
  }
  bool killed = vg_vm_is_kill(t->co, -1) || t->budget.killed != VG_KILL_NONE;
  if (killed && t->budget.killed == VG_KILL_NONE) {
    t->budget.killed = VG_KILL_CANCELLED; /* a kill marker thrown without a budget: treat so */
  }
  char *error = task_error_text(t, killed);
  if (killed && t->budget.killed == VG_KILL_CANCELLED) {
    task_finish(t, VG_TASK_CANCELLED, error);
  } else {
    task_finish(t, killed ? VG_TASK_KILLED : VG_TASK_ERROR, error);
  }
}

void vg_sched_run(vg_runtime_t *rt)
{
  /* Run as many tasks as were ready when the turn began; tasks made ready meanwhile wait
   * for the next turn, so a task that keeps yielding cannot starve the loop's I/O. */
  size_t budget = rt->ready_len;
  while (budget-- > 0 && rt->ready_head != NULL) {
    vg_task_t *t = rt->ready_head;
    rt->ready_head = t->next_ready;
    if (rt->ready_head == NULL) {
      rt->ready_tail = NULL;
    }
    rt->ready_len--;
    t->queued = false;
    t->next_ready = NULL;
    task_resume(t);
  }
  vg_sched_run_deferred(rt);
  if (rt->ready_head == NULL && rt->sched_active) {
    uv_idle_stop(&rt->sched_idle);
    rt->sched_active = false;
  }
}

struct vg_deferred {
  void (*fn)(void *ud);
  void *ud;
  struct vg_deferred *next;
};

bool vg_sched_defer(vg_runtime_t *rt, void (*fn)(void *ud), void *ud)
{
  struct vg_deferred *d = malloc(sizeof(*d));
  if (d == NULL) {
    return false;
  }
  *d = (struct vg_deferred){ .fn = fn, .ud = ud };
  if (rt->deferred_tail != NULL) {
    rt->deferred_tail->next = d;
  } else {
    rt->deferred = d;
  }
  rt->deferred_tail = d;
  sched_wake(rt);
  return true;
}

void vg_sched_run_deferred(vg_runtime_t *rt)
{
  /* A deferred call may defer another; the loop picks it up in the same pass. */
  while (rt->deferred != NULL) {
    struct vg_deferred *d = rt->deferred;
    rt->deferred = d->next;
    if (rt->deferred == NULL) {
      rt->deferred_tail = NULL;
    }
    d->fn(d->ud);
    free(d);
  }
}

/* ---- ending ---- */

static void task_free(vg_task_t *t)
{
  vg_vm_t *vm = t->vm;
  if (!vm->closing || vm->L != NULL) {
    luaL_unref(vm->L, LUA_REGISTRYINDEX, t->co_ref);
  }
  free(t->error);
  free(t->cancel_reason);
  free(t);
}

void vg_task_ref(vg_task_t *t)
{
  t->refs++;
}

void vg_task_unref(vg_task_t *t)
{
  if (--t->refs == 0 && t->state == VG_TASK_DONE) {
    task_free(t);
  }
}

static int push_outcome_of_target(lua_State *L, void *op)
{
  vg_waiter_t *w = op;
  vg_task_t *target = w->target;
  vg_task_remove_waiter(w);
  int n = vg_task_push_outcome(L, target);
  vg_task_unref(target);
  return n;
}

static void task_finish(vg_task_t *t, vg_task_status_t status, char *error)
{
  vg_vm_t *vm = t->vm;
  vg_runtime_t *rt = vm->rt;
  /* a child someone can still wait on reports to it; so do sandbox runs of specs */
  bool quiet = (t->parent != NULL && t->refs > 0) || vm->quiet;
  t->state = VG_TASK_DONE;
  t->status = status;
  t->error = error;
  if (t->deadline != NULL) {
    vg_timer_stop(t->deadline);
    t->deadline = NULL;
  }
  if (t->queued) {
    ready_remove(t);
  }
  while (t->children != NULL) { /* structured concurrency: children end with their parent */
    vg_task_t *c = t->children;
    vg_task_cancel(c, "parent task ended");
    if (t->children == c) { /* still running: it unlinks itself when it stops */
      t->children = c->sib_next;
      c->parent = NULL;
    }
  }
  if (t->parent != NULL) {
    if (t->sib_prev != NULL) {
      t->sib_prev->sib_next = t->sib_next;
    } else {
      t->parent->children = t->sib_next;
    }
    if (t->sib_next != NULL) {
      t->sib_next->sib_prev = t->sib_prev;
    }
    /* t->parent stays set until the callbacks below have run: on_task_end tells a child
       (reported through the task that waits for it) from a run of its own by it */
  }
  if (t->vm_prev != NULL) {
    t->vm_prev->vm_next = t->vm_next;
  } else {
    vm->tasks = t->vm_next;
  }
  if (t->vm_next != NULL) {
    t->vm_next->vm_prev = t->vm_prev;
  }
  vm->ntasks--;

  if (status != VG_TASK_OK) {
    /* Pending <close> handlers run exactly once, under a small budget of their own: cleanup
     * must happen even after a kill or a self-cancel (the task's own budget would stop the
     * handler at its first instruction), and a handler that loops is stopped as well. Another
     * task may be the one running (it cancelled t): it is current again afterwards. */
    vg_budget_t cleanup = {
      .instr_limit = VG_CLEANUP_INSTRUCTIONS,
      .slice_start = uv_hrtime(),
      .slice_ns = VG_CLEANUP_SLICE_MS * 1000000ull,
    };
    vg_budget_t *saved = vm->budget;
    vg_task_t *saved_current = vm->current;
    vm->budget = &cleanup;
    vm->current = t;
    vg_vm_arm_hook(t->co);
    vg_closethread(t->co, vm->L);
    vm->current = saved_current;
    vm->budget = saved;
    t->budget.instr_used += cleanup.instr_used;
    lua_settop(t->co, 0);
  }
  if (status == VG_TASK_ERROR || status == VG_TASK_KILLED) {
    if (status == VG_TASK_KILLED) {
      rt->task_kills++;
    }
    rt->task_errors++;
    vm->task_errors++;
    /* A child whose handle is alive reports to whoever waits on it; log it quietly. */
    vg_log_level_t level = quiet ? VG_LOG_DEBUG : VG_LOG_ERROR;
    vg_log(level, status == VG_TASK_KILLED ? "task killed" : "task failed", "vm", vm->name, "task",
           t->name, "error", error ? error : "?", NULL);
  } else if (status == VG_TASK_CANCELLED && error != NULL && strncmp(error, "deadline", 8) == 0) {
    rt->task_errors++;
    vm->task_errors++;
    vg_log(VG_LOG_WARN, "task cancelled", "vm", vm->name, "task", t->name, "reason", error, NULL);
  }
  t->refs++; /* keep t alive through the callbacks below */
  for (vg_waiter_t *w = t->waiters; w != NULL; w = w->next) {
    vg_task_wake(w->waiter, push_outcome_of_target);
  }
  if (vm->on_task_end != NULL) {
    vm->on_task_end(vm, t, (int)status, error);
  }
  if (t->done != NULL) {
    t->done(t, t->done_ud);
  }
  t->parent = NULL;
  vg_task_unref(t);
}

void vg_task_cancel(vg_task_t *t, const char *reason)
{
  if (t->state == VG_TASK_DONE) {
    return;
  }
  if (t->state == VG_TASK_RUNNING) {
    /* Only the task itself can be running now: stop it at its next instruction. */
    if (t->cancel_reason == NULL) {
      t->cancel_reason = strdup(reason);
    }
    t->budget.killed = VG_KILL_CANCELLED;
    vg_vm_interrupt(t->vm, t->co, VG_KILL_CANCELLED);
    return;
  }
  if (t->cancel != NULL) {
    vg_cancel_fn cancel = t->cancel;
    t->cancel = NULL;
    cancel(t->op);
  }
  t->op = NULL;
  t->push = NULL;
  task_finish(t, VG_TASK_CANCELLED, strdup(reason));
}

void vg_task_cancel_all(vg_vm_t *vm, const char *reason)
{
  vg_task_t *t = vm->tasks;
  while (t != NULL) {
    if (t->state == VG_TASK_RUNNING) {
      t = t->vm_next;
      continue;
    }
    vg_task_cancel(t, reason);
    t = vm->tasks; /* the list changed: children may have gone too */
  }
}

/* ---- waiting on another task ---- */

vg_waiter_t *vg_task_add_waiter(vg_task_t *target, vg_task_t *waiter)
{
  vg_waiter_t *w = calloc(1, sizeof(*w));
  if (w == NULL) {
    return NULL;
  }
  w->waiter = waiter;
  w->target = target;
  w->next = target->waiters;
  target->waiters = w;
  vg_task_ref(target);
  return w;
}

void vg_task_remove_waiter(vg_waiter_t *w)
{
  for (vg_waiter_t **pp = &w->target->waiters; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  }
  if (w->timer != NULL) {
    vg_timer_stop(w->timer);
  }
  free(w);
}

int vg_task_push_outcome(lua_State *L, vg_task_t *t)
{
  switch (t->status) {
    case VG_TASK_OK: {
      int n = t->nresults;
      luaL_checkstack(L, n, "too many results");
      for (int i = 1; i <= n; i++) {
        lua_pushvalue(t->co, i);
        lua_xmove(t->co, L, 1);
      }
      return n;
    }
    case VG_TASK_CANCELLED:
      lua_pushnil(L);
      lua_pushfstring(L, "ECANCELED: %s", t->error ? t->error : "cancelled");
      return 2;
    default:
      lua_pushnil(L);
      lua_pushfstring(L, "ETASK: %s", t->error ? t->error : "failed");
      return 2;
  }
}

const char *vg_task_status_name(vg_task_status_t status)
{
  static const char *const names[] = { "ok", "error", "killed", "cancelled" };
  return names[status];
}

const char *vg_task_state_name(vg_task_state_t state)
{
  static const char *const names[] = { "ready", "running", "waiting", "done" };
  return names[state];
}
