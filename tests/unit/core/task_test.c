/* Scheduler tests (core/task.c) with a real runtime and VM: spawning, results and errors,
 * waiting on timers, cancellation (of the pending operation, exactly once, with <close>
 * handlers run), structured concurrency, deadlines, instruction and memory budgets that pcall
 * cannot escape, fairness of the ready queue, the "cannot wait here" errors, and out-of-memory
 * at every allocation of a small task. Each test ends with the loop closed and no handle left. */
#include "core/task.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/runtime.h"
#include "core/vm.h"
#include "lua/lvigil.h"
#include "test_support.h"

/* ---- captured log lines ---- */

#define MAX_LINES 256
static char *g_lines[MAX_LINES];
static int g_nlines;

static void sink(const char *line, void *ud)
{
  (void)ud;
  if (g_nlines < MAX_LINES) {
    g_lines[g_nlines++] = strdup(line);
  }
}

static int log_count(const char *needle)
{
  int n = 0;
  for (int i = 0; i < g_nlines; i++) {
    n += strstr(g_lines[i], needle) != NULL;
  }
  return n;
}

static void log_clear(void)
{
  for (int i = 0; i < g_nlines; i++) {
    free(g_lines[i]);
  }
  g_nlines = 0;
}

/* ---- what Lua code reports back ---- */

static char g_trace[4096];

/* mark(text) [-1, +0, -]: appends "text " to the trace. */
static int l_mark(lua_State *L)
{
  const char *s = luaL_checkstring(L, 1);
  size_t n = strlen(g_trace);
  snprintf(g_trace + n, sizeof(g_trace) - n, "%s ", s);
  return 0;
}

/* An async operation the test completes or cancels by hand: block() suspends the task until
 * complete_block() wakes it (then returns 42) or it is cancelled. The op is heap-allocated and
 * freed by whichever of push/cancel runs, so a second call of either shows up under ASan. */
typedef struct {
  vg_task_t *task;
} block_op_t;

static int g_block_cancels, g_block_pushes, g_blocks;
static vg_task_t *g_blocked;

static void block_cancel(void *op)
{
  g_block_cancels++;
  free(op);
}

static int block_push(lua_State *L, void *op)
{
  g_block_pushes++;
  free(op);
  lua_pushinteger(L, 42);
  return 1;
}

static int l_block(lua_State *L)
{
  vg_task_t *t = vg_task_check_yieldable(L, "block");
  block_op_t *op = malloc(sizeof(*op));
  if (op == NULL) {
    return luaL_error(L, "block: out of memory");
  }
  op->task = t;
  g_blocked = t;
  g_blocks++;
  vg_task_suspend(t, op, block_cancel);
  return vg_task_yield(L);
}

/* cancel_self() [-0, +0, -]: cancels the task that calls it (a running task). */
static int l_cancel_self(lua_State *L)
{
  vg_task_cancel(vg_task_current(L), "self-cancel");
  return 0;
}

/* ---- fixture ---- */

typedef struct {
  int calls;
  vg_task_status_t status;
  char error[2048];
  int nresults;
  int types[4];
  lua_Integer ints[4];
  char strs[4][256];
  uint64_t done_ns;
} done_rec_t;

/* Records a task's end without allocating in its VM (it may be out of memory). */
static void rec_done(vg_task_t *t, void *ud)
{
  done_rec_t *r = ud;
  r->calls++;
  r->status = t->status;
  r->done_ns = uv_hrtime();
  snprintf(r->error, sizeof(r->error), "%s", t->error ? t->error : "");
  r->nresults = t->status == VG_TASK_OK ? t->nresults : 0;
  for (int i = 0; i < r->nresults && i < 4; i++) {
    r->types[i] = lua_type(t->co, i + 1);
    if (r->types[i] == LUA_TNUMBER && lua_isinteger(t->co, i + 1)) {
      r->ints[i] = lua_tointeger(t->co, i + 1);
    } else if (r->types[i] == LUA_TSTRING) {
      snprintf(r->strs[i], sizeof(r->strs[i]), "%s", lua_tostring(t->co, i + 1));
    }
  }
}

/* Every task end in the VM (children included), from vm->on_task_end. */
#define MAX_ENDS 64
typedef struct {
  char name[96];
  int status;
  char error[256];
} end_rec_t;
static end_rec_t g_ends[MAX_ENDS];
static int g_nends;

static void rec_end(vg_vm_t *vm, vg_task_t *t, int status, const char *error)
{
  (void)vm;
  if (g_nends < MAX_ENDS) {
    end_rec_t *e = &g_ends[g_nends++];
    snprintf(e->name, sizeof(e->name), "%s", t->name);
    e->status = status;
    snprintf(e->error, sizeof(e->error), "%s", error ? error : "");
  }
}

typedef struct {
  vg_runtime_t *rt;
  vg_vm_t *vm;
} fx_t;

static int open_p(lua_State *L)
{
  vg_open_modules(L);
  lua_register(L, "mark", l_mark);
  lua_register(L, "block", l_block);
  lua_register(L, "cancel_self", l_cancel_self);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "vigil");
  lua_call(L, 1, 1);
  lua_setglobal(L, "vigil");
  return 0;
}

/* What is open now, for the teardown of a test that failed half-way. */
static vg_runtime_t *g_open_rt;
static vg_vm_t *g_open_vm;

static void fx_open(fx_t *f, const vg_limits_t *limits)
{
  g_trace[0] = '\0';
  g_block_cancels = g_block_pushes = g_blocks = 0;
  g_blocked = NULL;
  g_nends = 0;
  log_clear();
  vg_log_set_sink(sink, NULL);
  vg_log_set_level(VG_LOG_DEBUG);
  f->rt = vg_runtime_new();
  assert_non_null(f->rt);
  vg_limits_t none = { 0 };
  f->vm = vg_vm_new(f->rt, "tasktest", limits ? limits : &none);
  assert_non_null(f->vm);
  f->vm->on_task_end = rec_end;
  g_open_rt = f->rt;
  g_open_vm = f->vm;
  lua_pushcfunction(f->vm->L, open_p);
  if (lua_pcall(f->vm->L, 0, 0, 0) != LUA_OK) {
    fail_msg("setup: %s", lua_tostring(f->vm->L, -1));
  }
}

static void count_handle(uv_handle_t *h, void *arg)
{
  struct {
    int n;
    uv_handle_t *skip;
  } *c = arg;
  if (h != c->skip) {
    c->n++;
  }
}

/* Frees the VM, checks that no handle but the scheduler's own is left, frees the runtime and
 * checks that it closed the loop (vg_runtime_free logs when uv_loop_close fails). */
static void fx_close(fx_t *f)
{
  g_open_rt = NULL;
  g_open_vm = NULL;
  vg_vm_free(f->vm);
  f->vm = NULL;
  uv_run(f->rt->loop, UV_RUN_NOWAIT); /* close callbacks of stopped timers */
  struct {
    int n;
    uv_handle_t *skip;
  } c = { 0, (uv_handle_t *)&f->rt->sched_idle };
  uv_walk(f->rt->loop, count_handle, &c);
  assert_int_equal(c.n, 0);
  assert_null(f->rt->ready_head);
  assert_int_equal(f->rt->ready_len, 0);
  vg_runtime_free(f->rt);
  f->rt = NULL;
  assert_int_equal(log_count("loop closed with handles still open"), 0);
  vg_log_set_sink(NULL, NULL);
  vg_log_set_level(VG_LOG_INFO);
  log_clear();
}

/* Runs after every test: frees what a failed test left open, so that one failure does not
 * show up again as leaks. */
static int fx_teardown(void **state)
{
  (void)state;
  if (g_open_rt != NULL) {
    vg_vm_free(g_open_vm);
    vg_runtime_free(g_open_rt);
    g_open_rt = NULL;
    g_open_vm = NULL;
  }
  vg_log_set_sink(NULL, NULL);
  vg_log_set_level(VG_LOG_INFO);
  log_clear();
  return 0;
}

/* Loads `code` and spawns it as a root task reporting to `rec`. */
static vg_task_t *spawn_code(
    fx_t *f, const char *name, const char *code, done_rec_t *rec, uint64_t timeout_ms)
{
  lua_State *L = f->vm->L;
  if (vg_vm_load_text(L, code, strlen(code), "=task") != LUA_OK) {
    fail_msg("load: %s", lua_tostring(L, -1));
  }
  vg_task_opts_t opts = {
    .name = name, .label = "test", .timeout_ms = timeout_ms, .done = rec_done, .done_ud = rec
  };
  vg_task_t *t = vg_task_spawn(f->vm, 0, &opts);
  assert_non_null(t);
  return t;
}

static bool global_is_true(vg_vm_t *vm, const char *name)
{
  lua_getglobal(vm->L, name);
  bool v = lua_toboolean(vm->L, -1);
  lua_pop(vm->L, 1);
  return v;
}

static lua_Integer global_int(vg_vm_t *vm, const char *name)
{
  lua_getglobal(vm->L, name);
  lua_Integer v = lua_tointeger(vm->L, -1);
  lua_pop(vm->L, 1);
  return v;
}

/* ---- spawning and ending ---- */

static void test_spawn_runs_once_with_results(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  vg_task_t *t = spawn_code(&f, "once", "mark('run') return 7, 'seven'", &r, 0);
  /* spawning only queues: nothing runs inside vg_task_spawn */
  assert_int_equal(t->state, VG_TASK_READY);
  assert_string_equal(g_trace, "");
  assert_int_equal(f.rt->ready_len, 1);
  assert_int_equal(f.vm->ntasks, 1);
  vg_runtime_run(f.rt, -1);
  assert_string_equal(g_trace, "run ");
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_OK);
  assert_int_equal(r.nresults, 2);
  assert_int_equal(r.types[0], LUA_TNUMBER);
  assert_int_equal(r.ints[0], 7);
  assert_int_equal(r.types[1], LUA_TSTRING);
  assert_string_equal(r.strs[1], "seven");
  assert_int_equal(f.rt->resumes, 1);
  assert_int_equal(f.rt->tasks_spawned, 1);
  assert_int_equal(f.rt->task_errors, 0);
  assert_int_equal(f.vm->ntasks, 0);
  assert_null(f.vm->tasks);
  assert_int_equal(g_nends, 1);
  assert_int_equal(g_ends[0].status, VG_TASK_OK);
  fx_close(&f);
}

static void test_spawn_passes_arguments(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  lua_State *L = f.vm->L;
  const char *code = "local a, b = ... return a * b";
  assert_int_equal(vg_vm_load_text(L, code, strlen(code), "=args"), LUA_OK);
  lua_pushinteger(L, 6);
  lua_pushinteger(L, 7);
  vg_task_opts_t opts = { .name = "args", .done = rec_done, .done_ud = &r };
  assert_non_null(vg_task_spawn(f.vm, 2, &opts));
  assert_int_equal(lua_gettop(L), 0); /* function and arguments moved to the task */
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_OK);
  assert_int_equal(r.nresults, 1);
  assert_int_equal(r.ints[0], 42);
  fx_close(&f);
}

static void test_error_has_message_and_traceback(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  spawn_code(&f, "boom", "local function inner() error('boom') end\ninner()", &r, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_ERROR);
  assert_non_null(strstr(r.error, "task:1: boom"));
  assert_non_null(strstr(r.error, "stack traceback:"));
  assert_non_null(strstr(r.error, "inner"));
  assert_int_equal(f.rt->task_errors, 1);
  assert_int_equal(f.rt->task_kills, 0);
  assert_int_equal(f.vm->task_errors, 1);
  assert_int_equal(log_count("msg=\"task failed\""), 1);
  fx_close(&f);
}

static void test_error_objects_never_run_metamethods(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r1 = { 0 }, r2 = { 0 };
  /* a __tostring that would loop forever if the runtime called it */
  spawn_code(&f, "obj",
             "error(setmetatable({}, { __tostring = function() while true do end end }))", &r1, 0);
  spawn_code(&f, "num", "error(12)", &r2, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r1.calls, 1);
  assert_int_equal(r1.status, VG_TASK_ERROR);
  assert_non_null(strstr(r1.error, "(error object is a table value)"));
  assert_int_equal(r2.calls, 1);
  assert_int_equal(r2.status, VG_TASK_ERROR);
  assert_true(strncmp(r2.error, "12", 2) == 0);
  fx_close(&f);
}

/* ---- waiting on a timer ---- */

typedef struct {
  vg_task_t *task;
  int calls;
  vg_task_state_t state_seen;
  uint64_t resumes_seen;
} probe_t;

static void probe_cb(uv_timer_t *h)
{
  probe_t *p = h->data;
  p->calls++;
  p->state_seen = p->task->state;
  p->resumes_seen = ((vg_runtime_t *)h->loop->data)->resumes;
  uv_close((uv_handle_t *)h, NULL);
}

static void test_sleep_resumes_after_timer_never_before(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  uint64_t t0 = uv_hrtime();
  vg_task_t *t = spawn_code(&f, "sleeper",
                            "mark('before') vigil.sleep(0.05) mark('after') return 'woke'", &r, 0);
  vg_task_ref(t); /* keep the struct for the probe */
  /* halfway through the sleep the task must still be waiting, resumed only once */
  uv_timer_t probe;
  probe_t p = { .task = t };
  uv_timer_init(f.rt->loop, &probe);
  probe.data = &p;
  uv_timer_start(&probe, probe_cb, 20, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(p.calls, 1);
  assert_int_equal(p.state_seen, VG_TASK_WAITING);
  assert_int_equal(p.resumes_seen, 1);
  assert_string_equal(g_trace, "before after ");
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_OK);
  assert_string_equal(r.strs[0], "woke");
  assert_int_equal(f.rt->resumes, 2);
  /* a lower bound with margin for libuv's cached loop time: never woken early */
  assert_true(r.done_ns - t0 >= 40 * 1000000ULL);
  assert_int_equal(t->state, VG_TASK_DONE);
  vg_task_unref(t);
  fx_close(&f);
}

static void test_sleep_zero_and_bad_durations(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  spawn_code(&f, "bad",
             "vigil.sleep(0)\n"
             "local ok1, e1 = pcall(vigil.sleep, -1)\n"
             "local ok2, e2 = pcall(vigil.sleep, 'soon')\n"
             "return ok1, e1, ok2, e2",
             &r, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_OK);
  assert_int_equal(r.nresults, 4);
  assert_int_equal(r.types[0], LUA_TBOOLEAN);
  assert_non_null(strstr(r.strs[1], "duration out of range"));
  assert_non_null(strstr(r.strs[3], "invalid duration \"soon\""));
  assert_int_equal(f.rt->resumes, 2); /* sleep(0) yields once */
  fx_close(&f);
}

/* ---- cancellation ---- */

static void test_cancel_waiting_task(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  const char *code =
      "closed = 0\n"
      "local guard <close> = setmetatable({}, { __close = function() closed = closed + 1 end })\n"
      "mark('blocking')\n"
      "local v = block()\n"
      "resumed = true\n"
      "return v";
  vg_task_t *t = spawn_code(&f, "victim", code, &r, 0);
  vg_task_ref(t);
  vg_runtime_run(f.rt, -1); /* runs until block(); nothing else keeps the loop alive */
  assert_int_equal(t->state, VG_TASK_WAITING);
  assert_int_equal(g_blocks, 1);
  assert_int_equal(r.calls, 0);

  vg_task_cancel(t, "operator said stop");
  assert_int_equal(g_block_cancels, 1);
  assert_int_equal(g_block_pushes, 0);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_CANCELLED);
  assert_string_equal(r.error, "operator said stop");
  assert_int_equal(global_int(f.vm, "closed"), 1);
  assert_int_equal(f.vm->ntasks, 0);

  vg_task_cancel(t, "again"); /* harmless */
  vg_task_cancel_all(f.vm, "and again");
  vg_runtime_run(f.rt, -1);
  assert_int_equal(g_block_cancels, 1);
  assert_int_equal(g_block_pushes, 0);
  assert_int_equal(r.calls, 1);
  assert_false(global_is_true(f.vm, "resumed"));
  assert_int_equal(global_int(f.vm, "closed"), 1);
  assert_string_equal(g_trace, "blocking ");
  assert_int_equal(f.rt->resumes, 1);
  vg_task_unref(t);
  fx_close(&f);
}

static void test_cancel_woken_task_before_it_runs(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  vg_task_t *t = spawn_code(&f, "woken", "block() resumed = true", &r, 0);
  vg_task_ref(t);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(t->state, VG_TASK_WAITING);
  /* the operation completes: the task is queued; cancelling now must still free the op once
   * (through cancel, since push never ran) and never resume the task */
  vg_task_wake(t, block_push);
  assert_int_equal(t->state, VG_TASK_READY);
  vg_task_cancel(t, "too late");
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_CANCELLED);
  assert_int_equal(g_block_cancels + g_block_pushes, 1);
  assert_int_equal(g_block_pushes, 0);
  assert_false(global_is_true(f.vm, "resumed"));
  assert_int_equal(f.rt->ready_len, 0);
  vg_task_unref(t);
  fx_close(&f);
}

static void test_wake_completes_operation(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  vg_task_t *t = spawn_code(&f, "completes", "local v = block() return v + 1", &r, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(t->state, VG_TASK_WAITING);
  vg_task_wake(t, block_push);
  vg_task_wake(t, block_push); /* a second completion of the same op is ignored */
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_OK);
  assert_int_equal(r.ints[0], 43);
  assert_int_equal(g_block_pushes, 1);
  assert_int_equal(g_block_cancels, 0);
  fx_close(&f);
}

static void test_cancel_ready_task_never_runs(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  vg_task_t *t = spawn_code(&f, "never", "mark('ran')", &r, 0);
  vg_task_cancel(t, "not wanted");
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_CANCELLED);
  assert_int_equal(f.rt->ready_len, 0);
  vg_runtime_run(f.rt, -1);
  assert_string_equal(g_trace, "");
  assert_int_equal(f.rt->resumes, 0);
  assert_int_equal(r.calls, 1);
  fx_close(&f);
}

static const char SELF_CANCEL[] =
    "closed = 0\n"
    "local guard <close> = setmetatable({}, { __close = function() closed = closed + 1 end })\n"
    "local ok = pcall(function() cancel_self() for i = 1, 100 do end end)\n"
    "escaped = true";

static void test_self_cancel_is_not_catchable(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  spawn_code(&f, "selfish", SELF_CANCEL, &r, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_CANCELLED);
  assert_false(global_is_true(f.vm, "escaped"));
  assert_int_equal(f.rt->task_kills, 0);
  fx_close(&f);
}

/* A cancelled task runs its pending <close> handlers, whether it was waiting (see
 * test_cancel_waiting_task) or running when it was cancelled. */
static void test_self_cancel_runs_close_handlers(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  spawn_code(&f, "selfish", SELF_CANCEL, &r, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.status, VG_TASK_CANCELLED);
  assert_int_equal(global_int(f.vm, "closed"), 1);
  fx_close(&f);
}

/* The reason given to vg_task_cancel is what a cancelled task reports (vigil.wait returns it
 * as "ECANCELED: <reason>"), also when the task was running. */
static void test_self_cancel_keeps_reason(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  spawn_code(&f, "selfish", SELF_CANCEL, &r, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.status, VG_TASK_CANCELLED);
  assert_non_null(strstr(r.error, "self-cancel"));
  fx_close(&f);
}

/* A running task that cancels another (a child it no longer needs, vigil.all's timeout) is
 * still the running task afterwards: it can wait, spawn children and log as itself. */
static void test_running_task_cancels_another(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  spawn_code(&f, "canceller",
             "local c = vigil.spawn(function() block() end)\n"
             "vigil.sleep(0)\n"
             "c:cancel('no longer needed')\n"
             "vigil.sleep(0.001)\n"
             "return c:status()",
             &r, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(g_block_cancels, 1);
  assert_int_equal(r.calls, 1);
  if (r.status != VG_TASK_OK) {
    fail_msg("the cancelling task failed: %s", r.error);
  }
  assert_string_equal(r.strs[0], "cancelled");
  assert_null(f.vm->current);
  fx_close(&f);
}

static void test_children_cancelled_with_parent(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  spawn_code(&f, "parent",
             "local c = vigil.spawn(function()\n"
             "  vigil.spawn(function() block() mark('grandchild-resumed') end)\n"
             "  block() mark('child-resumed')\n"
             "end)\n"
             "vigil.sleep(0) vigil.sleep(0)\n"
             "mark('parent-done')\n"
             "return c:status()",
             &r, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_OK);
  assert_string_equal(r.strs[0], "waiting");
  assert_int_equal(g_blocks, 2);
  assert_int_equal(g_block_cancels, 2);
  assert_int_equal(g_block_pushes, 0);
  assert_string_equal(g_trace, "parent-done ");
  assert_int_equal(g_nends, 3);
  int cancelled = 0;
  for (int i = 0; i < g_nends; i++) {
    if (g_ends[i].status == VG_TASK_CANCELLED) {
      cancelled++;
      assert_non_null(strstr(g_ends[i].error, "parent task ended"));
      assert_non_null(strstr(g_ends[i].name, "parent/spawn-"));
    }
  }
  assert_int_equal(cancelled, 2);
  assert_int_equal(f.vm->ntasks, 0);
  fx_close(&f);
}

static void test_children_cancelled_when_parent_fails(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  spawn_code(&f, "failing-parent",
             "vigil.spawn(function() vigil.sleep(30) mark('child-woke') end)\n"
             "vigil.sleep(0)\n"
             "error('parent broke')",
             &r, 0);
  vg_runtime_run(f.rt, -1); /* ends at once: the child's 30 s timer is stopped */
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_ERROR);
  assert_string_equal(g_trace, "");
  assert_int_equal(g_nends, 2);
  assert_int_equal(g_ends[0].status, VG_TASK_CANCELLED);
  assert_int_equal(g_ends[1].status, VG_TASK_ERROR);
  fx_close(&f);
}

/* ---- budgets ---- */

static void test_deadline_cancels(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  spawn_code(&f, "late", "vigil.sleep(30) mark('woke')", &r, 30);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_CANCELLED);
  assert_non_null(strstr(r.error, "deadline exceeded (30 ms)"));
  assert_string_equal(g_trace, "");
  assert_int_equal(f.rt->task_errors, 1);
  assert_int_equal(log_count("msg=\"task cancelled\""), 1);
  fx_close(&f);
}

static void test_deadline_from_vm_limits(void **state)
{
  (void)state;
  fx_t f;
  vg_limits_t lim = { .timeout_ms = 25 };
  fx_open(&f, &lim);
  done_rec_t r = { 0 }, quick = { 0 };
  spawn_code(&f, "late", "vigil.sleep(30)", &r, 0);
  spawn_code(&f, "quick", "vigil.sleep(0.001) return 1", &quick, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_CANCELLED);
  assert_non_null(strstr(r.error, "deadline exceeded (25 ms)"));
  assert_int_equal(quick.calls, 1);
  assert_int_equal(quick.status, VG_TASK_OK);
  fx_close(&f);
}

static void test_instruction_budget_kills_through_pcall(void **state)
{
  (void)state;
  fx_t f;
  vg_limits_t lim = { .instructions = 200000 };
  fx_open(&f, &lim);
  done_rec_t r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
  spawn_code(&f, "spin-pcall",
             "while true do pcall(function() while true do end end) end\nescaped = true", &r1, 0);
  spawn_code(&f, "spin-xpcall",
             "xpcall(function() while true do end end, function() while true do end end)\n"
             "escaped = true",
             &r2, 0);
  spawn_code(&f, "spin-error",
             "local ok = pcall(error, setmetatable({}, {__index = function() while true do end "
             "end}))\n"
             "for i = 1, 1e9 do end escaped = true",
             &r3, 0);
  vg_runtime_run(f.rt, -1);
  done_rec_t *rs[] = { &r1, &r2, &r3 };
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rs[i]->calls, 1);
    assert_int_equal(rs[i]->status, VG_TASK_KILLED);
    assert_non_null(strstr(rs[i]->error, "instruction budget exceeded (200000 instructions)"));
  }
  assert_false(global_is_true(f.vm, "escaped"));
  assert_int_equal(f.rt->task_kills, 3);
  assert_int_equal(log_count("msg=\"task killed\""), 3);
  fx_close(&f);
}

static void test_memory_cap_kills(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  f.vm->limits.memory = f.vm->mem_used + (2u << 20);
  done_rec_t r1 = { 0 }, r2 = { 0 }, after = { 0 };
  vg_task_t *t = spawn_code(&f, "hog",
                            "local t, i = {}, 0\n"
                            "while true do i = i + 1; t[i] = ('x'):rep(1000) .. i end",
                            &r1, 0);
  vg_task_ref(t);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r1.calls, 1);
  assert_int_equal(r1.status, VG_TASK_KILLED);
  assert_int_equal(t->budget.killed, VG_KILL_MEMORY);
  assert_non_null(strstr(r1.error, "memory limit reached"));
  vg_task_unref(t);

  spawn_code(&f, "hog-pcall",
             "local ok = pcall(function() local t = {} for i = 1, 1e8 do t[i] = {} end end)\n"
             "escaped = true",
             &r2, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r2.calls, 1);
  assert_int_equal(r2.status, VG_TASK_KILLED);
  assert_non_null(strstr(r2.error, "memory limit reached"));
  assert_false(global_is_true(f.vm, "escaped"));
  assert_true(f.vm->mem_peak <= f.vm->limits.memory);

  /* the VM survives: garbage is collected and the next task runs */
  spawn_code(&f, "after", "local s = ('y'):rep(100) return #s", &after, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(after.calls, 1);
  assert_int_equal(after.status, VG_TASK_OK);
  assert_int_equal(after.ints[0], 100);
  assert_int_equal(f.rt->task_kills, 2);
  fx_close(&f);
}

/* Runs fn(arg) in a child process, so that an abort is a test failure rather than the end of
 * the suite. Returns the child's exit code, or 128 + the signal that ended it. */
static int run_in_child(int (*fn)(void *), void *arg)
{
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    _exit(fn(arg));
  }
  int wst;
  assert_int_equal(waitpid(pid, &wst, 0), pid);
  return WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
}

/* A task that reaches the memory cap through many small allocations: the cap leaves no room
 * for the runtime's own report of the kill, which must still not take the process down. */
static int small_allocs_child(void *arg)
{
  (void)arg;
  vg_runtime_t *rt = vg_runtime_new();
  vg_limits_t none = { 0 };
  vg_vm_t *vm = vg_vm_new(rt, "small-allocs", &none);
  lua_pushcfunction(vm->L, open_p);
  if (lua_pcall(vm->L, 0, 0, 0) != LUA_OK) {
    return 2;
  }
  vm->limits.memory = vm->mem_used + (1u << 20);
  const char *code = "local l = nil while true do l = { l } end";
  done_rec_t r = { 0 };
  if (vg_vm_load_text(vm->L, code, strlen(code), "=small") != LUA_OK) {
    return 3;
  }
  vg_task_opts_t opts = { .name = "small", .done = rec_done, .done_ud = &r };
  if (vg_task_spawn(vm, 0, &opts) == NULL) {
    return 4;
  }
  vg_runtime_run(rt, -1);
  int rc = r.calls != 1                               ? 5
           : r.status != VG_TASK_KILLED               ? 6
           : !strstr(r.error, "memory limit reached") ? 7
                                                      : 0;
  vg_vm_free(vm);
  vg_runtime_free(rt);
  return rc;
}

static void test_memory_cap_small_allocations(void **state)
{
  (void)state;
  vg_log_set_sink(sink, NULL);
  int rc = run_in_child(small_allocs_child, NULL);
  vg_log_set_sink(NULL, NULL);
  log_clear();
  assert_int_equal(rc, 0); /* 134: SIGABRT from the Lua panic handler */
}

/* ---- fairness and where waiting is refused ---- */

static void test_ready_queue_is_fair(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t a = { 0 }, b = { 0 };
  spawn_code(&f, "A", "for i = 1, 3 do mark('A' .. i) vigil.sleep(0) end", &a, 0);
  spawn_code(&f, "B", "for i = 1, 3 do mark('B' .. i) vigil.sleep(0) end", &b, 0);
  vg_runtime_run(f.rt, -1);
  assert_string_equal(g_trace, "A1 B1 A2 B2 A3 B3 ");
  assert_int_equal(a.calls, 1);
  assert_int_equal(b.calls, 1);
  assert_int_equal(a.status, VG_TASK_OK);
  assert_int_equal(b.status, VG_TASK_OK);
  assert_int_equal(f.rt->resumes, 8);
  fx_close(&f);
}

/* One turn of the scheduler runs only the tasks that were ready when it began. */
static void test_turn_is_bounded(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t a = { 0 };
  spawn_code(&f, "spinner", "for i = 1, 5 do mark('s' .. i) vigil.sleep(0) end", &a, 0);
  vg_sched_run(f.rt);
  assert_string_equal(g_trace, "s1 ");
  assert_int_equal(f.rt->ready_len, 1);
  vg_sched_run(f.rt);
  assert_string_equal(g_trace, "s1 s2 ");
  vg_runtime_run(f.rt, -1);
  assert_string_equal(g_trace, "s1 s2 s3 s4 s5 ");
  assert_int_equal(a.calls, 1);
  fx_close(&f);
}

static void test_sleep_outside_a_task(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  lua_State *L = f.vm->L;
  const char *code = "vigil.sleep(1)";
  assert_int_equal(vg_vm_load_text(L, code, strlen(code), "=top"), LUA_OK);
  assert_int_equal(lua_pcall(L, 0, 0, 0), LUA_ERRRUN);
  assert_non_null(strstr(lua_tostring(L, -1), "vigil.sleep: not inside a task"));
  lua_pop(L, 1);
  assert_int_equal(f.rt->resumes, 0);
  fx_close(&f);
}

static void test_sleep_where_lua_cannot_yield(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, NULL);
  done_rec_t r = { 0 };
  spawn_code(&f, "noyield",
             "local ok1, e1 = pcall(table.sort, { 3, 1, 2 }, function(a, b)\n"
             "  vigil.sleep(0.01) return a < b end)\n"
             "local ok2, e2 = pcall(string.gsub, 'abc', '%w', function(c) vigil.sleep(0.01) end)\n"
             "vigil.sleep(0) -- allowed again afterwards\n"
             "return e1, e2, ok1 or ok2",
             &r, 0);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, VG_TASK_OK);
  assert_non_null(strstr(r.strs[0], "vigil.sleep: cannot wait inside a table.sort comparator"));
  assert_non_null(
      strstr(r.strs[1], "vigil.sleep: cannot wait inside a string.gsub replacement function"));
  assert_int_equal(r.types[2], LUA_TBOOLEAN);
  assert_null(f.vm->noyield_reason);
  assert_int_equal(f.vm->noyield_depth, 0);
  fx_close(&f);
}

/* ---- out of memory at every allocation ---- */

static const char FAULT_TASK[] =
    "local s = ''\n"
    "for i = 1, 8 do s = s .. i .. ',' end\n"
    "local t = {}\n"
    "for i = 1, 8 do t[i] = { i, tostring(i) } end\n"
    "local h = vigil.spawn(function(x) return x .. '!' end, s)\n"
    "local r, err = vigil.wait(h)\n"
    "if not r then error(err) end\n"
    "return #r + #t";

/* One fault-injection run, in a child process so that an abort (a Lua panic: an allocation
 * failing outside a protected call) is reported for its N instead of ending the suite. No cmocka
 * here: exit codes say what happened. 10 + status: the task ended once with that status; 20: the
 * chunk failed to load; 21: spawn refused; 30+: a broken promise (see below). */
static int fault_child(uint64_t n, uint64_t *allocs)
{
  vg_runtime_t *rt = vg_runtime_new();
  vg_limits_t none = { 0 };
  vg_vm_t *vm = rt ? vg_vm_new(rt, "fault", &none) : NULL;
  if (vm == NULL) {
    return 31;
  }
  lua_pushcfunction(vm->L, open_p);
  if (lua_pcall(vm->L, 0, 0, 0) != LUA_OK) {
    return 32;
  }
  vm->alloc_count = 0;
  vm->alloc_fail_at = n;
  lua_State *L = vm->L;
  done_rec_t r = { 0 };
  int code;
  if (vg_vm_load_text(L, FAULT_TASK, strlen(FAULT_TASK), "=fault") != LUA_OK) {
    lua_pop(L, 1);
    code = 20;
  } else {
    vg_task_opts_t opts = { .name = "fault", .done = rec_done, .done_ud = &r };
    if (vg_task_spawn(vm, 0, &opts) == NULL) {
      code = 21;
    } else {
      vg_runtime_run(rt, -1);
      if (r.calls != 1) {
        return 33; /* done called zero or several times */
      }
      if (r.status == VG_TASK_OK && r.ints[0] != 8 + (lua_Integer)strlen("1,2,3,4,5,6,7,8,!")) {
        return 34; /* "succeeded" with a wrong result */
      }
      code = 10 + (int)r.status;
    }
  }
  *allocs = vm->alloc_count;
  vg_vm_free(vm);
  vg_runtime_free(rt);
  return code;
}

static void test_alloc_failure_at_every_point(void **state)
{
  (void)state;
  vg_log_set_sink(sink, NULL); /* the child's log lines stay in the child */
  int outcomes[4] = { 0 }, load_failed = 0, spawn_failed = 0, broken = 0;
  char crashes[512] = "";
  uint64_t needed = 0;
  for (uint64_t n = 0; n <= 300; n++) { /* n = 0: no injection, to count the allocations */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      uint64_t allocs = 0;
      int code = fault_child(n, &allocs);
      ssize_t w = write(fds[1], &allocs, sizeof(allocs));
      (void)w;
      _exit(code);
    }
    close(fds[1]);
    uint64_t allocs = 0;
    ssize_t got = read(fds[0], &allocs, sizeof(allocs));
    close(fds[0]);
    int wst;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    int code = WIFEXITED(wst) ? WEXITSTATUS(wst) : -1;
    if (n == 0) {
      assert_int_equal(code, 10 + VG_TASK_OK);
      assert_int_equal(got, (ssize_t)sizeof(allocs));
      needed = allocs;
    } else if (code >= 10 && code <= 13) {
      outcomes[code - 10]++;
    } else if (code == 20) {
      load_failed++;
    } else if (code == 21) {
      spawn_failed++;
    } else {
      broken++;
      size_t len = strlen(crashes);
      if (len < sizeof(crashes) - 40) {
        snprintf(crashes + len, sizeof(crashes) - len, " N=%llu:%s%d", (unsigned long long)n,
                 WIFSIGNALED(wst) ? "signal " : "exit ", WIFSIGNALED(wst) ? WTERMSIG(wst) : code);
      }
    }
  }
  vg_log_set_sink(NULL, NULL);
  print_message(
      "fault injection: the task needs %llu allocations; ok %d, error %d, killed %d, "
      "cancelled %d, load failed %d, spawn failed %d, crashed or broken %d:%s\n",
      (unsigned long long)needed, outcomes[VG_TASK_OK], outcomes[VG_TASK_ERROR],
      outcomes[VG_TASK_KILLED], outcomes[VG_TASK_CANCELLED], load_failed, spawn_failed, broken,
      crashes);
  assert_int_equal(broken, 0);              /* no N may abort the process or break a promise */
  assert_true(needed > 20 && needed < 300); /* the sweep covers every allocation of the task */
  assert_true(outcomes[VG_TASK_KILLED] + outcomes[VG_TASK_ERROR] > 0);
  assert_true(outcomes[VG_TASK_OK] > 0);
  assert_true(load_failed > 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(test_spawn_runs_once_with_results, fx_teardown),
    cmocka_unit_test_teardown(test_spawn_passes_arguments, fx_teardown),
    cmocka_unit_test_teardown(test_error_has_message_and_traceback, fx_teardown),
    cmocka_unit_test_teardown(test_error_objects_never_run_metamethods, fx_teardown),
    cmocka_unit_test_teardown(test_sleep_resumes_after_timer_never_before, fx_teardown),
    cmocka_unit_test_teardown(test_sleep_zero_and_bad_durations, fx_teardown),
    cmocka_unit_test_teardown(test_cancel_waiting_task, fx_teardown),
    cmocka_unit_test_teardown(test_cancel_woken_task_before_it_runs, fx_teardown),
    cmocka_unit_test_teardown(test_wake_completes_operation, fx_teardown),
    cmocka_unit_test_teardown(test_cancel_ready_task_never_runs, fx_teardown),
    cmocka_unit_test_teardown(test_self_cancel_is_not_catchable, fx_teardown),
    cmocka_unit_test_teardown(test_self_cancel_runs_close_handlers, fx_teardown),
    cmocka_unit_test_teardown(test_self_cancel_keeps_reason, fx_teardown),
    cmocka_unit_test_teardown(test_running_task_cancels_another, fx_teardown),
    cmocka_unit_test_teardown(test_children_cancelled_with_parent, fx_teardown),
    cmocka_unit_test_teardown(test_children_cancelled_when_parent_fails, fx_teardown),
    cmocka_unit_test_teardown(test_deadline_cancels, fx_teardown),
    cmocka_unit_test_teardown(test_deadline_from_vm_limits, fx_teardown),
    cmocka_unit_test_teardown(test_instruction_budget_kills_through_pcall, fx_teardown),
    cmocka_unit_test_teardown(test_memory_cap_kills, fx_teardown),
    cmocka_unit_test_teardown(test_memory_cap_small_allocations, fx_teardown),
    cmocka_unit_test_teardown(test_ready_queue_is_fair, fx_teardown),
    cmocka_unit_test_teardown(test_turn_is_bounded, fx_teardown),
    cmocka_unit_test_teardown(test_sleep_outside_a_task, fx_teardown),
    cmocka_unit_test_teardown(test_sleep_where_lua_cannot_yield, fx_teardown),
    cmocka_unit_test_teardown(test_alloc_failure_at_every_point, fx_teardown),
  };
  if (getenv("VG_TEST_FILTER") != NULL) { /* run only the tests matching the pattern */
    cmocka_set_test_filter(getenv("VG_TEST_FILTER"));
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
