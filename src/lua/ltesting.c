/* vigil.testing: what the spec harness (lua/vigil/test.lua) needs from C: loading a policy
 * file into the spec's VM exactly as the daemon validates it, evaluating its matchers, and
 * the virtual clock. Registered only in spec VMs. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alert.h"
#include "core/clock.h"
#include "core/every.h"
#include "core/executor.h"
#include "core/policy.h"
#include "core/runtime.h"
#include "core/sandbox.h"
#include "core/task.h"
#include "core/vm.h"
#include "engine/alertdec.h"
#include "engine/store.h"
#include "lua/lvigil.h"

#define MATCHERS_MT "vigil.matchers"

typedef struct {
  vg_matchers_t *m;
} matchers_t;

static int matchers_gc(lua_State *L)
{
  matchers_t *u = luaL_checkudata(L, 1, MATCHERS_MT);
  labelmatch_free(u->m);
  u->m = NULL;
  return 0;
}

static int matchers_tostring(lua_State *L)
{
  matchers_t *u = luaL_checkudata(L, 1, MATCHERS_MT);
  char buf[1024];
  labelmatch_format(u->m, buf, sizeof(buf));
  lua_pushstring(L, buf);
  return 1;
}

/* matchers:match(labels) [-2, +1, e]: true when every matcher accepts the label table. */
static int matchers_match(lua_State *L)
{
  matchers_t *u = luaL_checkudata(L, 1, MATCHERS_MT);
  luaL_checktype(L, 2, LUA_TTABLE);
  vg_label_t labels[128];
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, 2) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
      return luaL_error(L, "labels must map strings to strings");
    }
    if (n == 128) {
      return luaL_error(L, "too many labels (limit 128)");
    }
    labels[n].name = lua_tolstring(L, -2, &labels[n].name_len);
    labels[n].value = lua_tolstring(L, -1, &labels[n].value_len);
    n++;
    lua_pop(L, 1);
  }
  lua_pushboolean(L, labelmatch_eval(u->m, labels, n));
  return 1;
}

static void push_matchers(lua_State *L, vg_matchers_t *m)
{
  matchers_t *u = lua_newuserdatauv(L, sizeof(*u), 0);
  u->m = m;
  if (luaL_newmetatable(L, MATCHERS_MT)) {
    lua_pushcfunction(L, matchers_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, matchers_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_newtable(L);
    lua_pushcfunction(L, matchers_match);
    lua_setfield(L, -2, "match");
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
}

/* Pushes the text of the file at `path`, or nil when it cannot be read. [-0, +1, m] */
static void push_file_text(lua_State *L, const char *path)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    lua_pushnil(L);
    return;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    luaL_addlstring(&b, chunk, n);
  }
  fclose(f);
  luaL_pushresult(&b);
}

/* vigil.testing.load_policy(path) [-1, +3, e]: runs the policy file in this VM's sandbox and
 * validates it like the daemon does. Returns its table, its name and its matchers. */
static int l_load_policy(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  vg_vm_t *vm = vg_vm_of(L);
  /* require("lib.x") resolves beside the policy, as the daemon resolves it in its directory */
  const char *slash = strrchr(path, '/');
  int dirlen = slash ? (int)(slash - path) : 1;
  lua_pushfstring(L, "%s/lib", slash ? path : ".");
  if (slash) {
    lua_pop(L, 1);
    lua_pushlstring(L, path, (size_t)dirlen);
    lua_pushliteral(L, "/lib");
    lua_concat(L, 2);
  }
  free(vm->lib_dir);
  vm->lib_dir = strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  vg_sandbox_push_env(L, true);
  lua_pushfstring(L, "@%s", path);
  lua_insert(L, -2);
  int status = vg_sandbox_loadfile(L, path, lua_tostring(L, -2));
  if (status != LUA_OK) {
    return lua_error(L);
  }
  bool saved = vm->load_phase;
  vm->load_phase = true;
  status = vg_sandbox_call_noyield(L, 0, 1, "while a policy file loads");
  vm->load_phase = saved;
  if (status != LUA_OK) {
    return lua_error(L);
  }
  if (lua_type(L, -1) != LUA_TTABLE) {
    return luaL_error(L, "%s: a policy file must return a table, not a %s", path,
                      luaL_typename(L, -1));
  }
  /* the file's text lets validation point at the line of a bad field */
  int tbl = lua_gettop(L);
  push_file_text(L, path);
  char *name = NULL;
  vg_matchers_t *m = vg_policy_validate_table(L, tbl, path, lua_tostring(L, -1), &name);
  lua_pop(L, 1);
  lua_pushstring(L, name);
  free(name);
  push_matchers(L, m);
  return 3;
}

/* vigil.testing.load_spec(path, globals) [-2, +1, e]: compiles a spec file in a fresh
 * sandboxed environment that also holds `globals` (the harness: describe, it, expect...). */
static int l_load_spec(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  vg_sandbox_push_env(L, false);
  lua_pushnil(L);
  while (lua_next(L, 2) != 0) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_pushfstring(L, "@%s", path);
  lua_insert(L, -2);
  if (vg_sandbox_loadfile(L, path, lua_tostring(L, -2)) != LUA_OK) {
    return lua_error(L);
  }
  return 1;
}

/* vigil.testing.matchers(text) [-1, +1, e]: compiles matchers for a spec to use directly. */
static int l_matchers(lua_State *L)
{
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  vg_matchers_t *m = labelmatch_new();
  char err[256];
  if (m == NULL || labelmatch_parse(m, text, len, err, sizeof(err)) != 0) {
    labelmatch_free(m);
    return luaL_error(L, "bad matchers: %s", m ? err : "out of memory");
  }
  push_matchers(L, m);
  return 1;
}

/* vigil.testing.set_time(epoch_seconds) [-1, +0, e]: moves the virtual clock. */
static int l_set_time(lua_State *L)
{
  vg_runtime_t *rt = vg_vm_of(L)->rt;
  if (!vg_clock_is_virtual(rt)) {
    return luaL_error(L, "set_time: only specs run on the virtual clock");
  }
  vg_clock_set(rt, luaL_checknumber(L, 1));
  return 0;
}

/* vigil.testing.pending_timers() [-0, +1, -] */
static int l_pending_timers(lua_State *L)
{
  lua_pushinteger(L, vg_clock_pending(vg_vm_of(L)->rt));
  return 1;
}

/* vigil.testing.stop_jobs() [-0, +0, -]: stops every periodic job of this VM (the harness
 * calls it after each test, so one test's vigil.every cannot leak into the next). */
static int l_stop_jobs(lua_State *L)
{
  vg_every_stop_all(vg_vm_of(L));
  return 0;
}

/* vigil.testing.memory() [-0, +1, -]: bytes this VM uses now. */
static int l_memory(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)vg_vm_of(L)->mem_used);
  return 1;
}

/* ---- running code as a policy would ---- */

#define MAX_RESULTS 16

typedef struct {
  vg_vm_t *vm;       /* the sandbox VM */
  vg_task_t *waiter; /* the spec task, or NULL once it stopped waiting */
  vg_task_t *task;
  bool reaping; /* the VM's free is deferred to the end of the scheduler turn */
  int status;
  char *error;
  vg_kill_t killed;
  int nresults;
  int types[MAX_RESULTS];
  char *results[MAX_RESULTS];
  size_t lens[MAX_RESULTS];
  double numbers[MAX_RESULTS];
  uint64_t instructions;
  size_t memory_peak;
  uint64_t started_ns, elapsed_ns;
  bool done;
} sandbox_run_t;

static void run_free(sandbox_run_t *r)
{
  for (int i = 0; i < r->nresults; i++) {
    free(r->results[i]);
  }
  free(r->error);
  free(r);
}

static void reap(void *ud)
{
  sandbox_run_t *r = ud;
  r->reaping = false;
  vg_vm_free(r->vm);
  r->vm = NULL;
  if (r->waiter == NULL) {
    run_free(r);
  }
}

static void schedule_reap(sandbox_run_t *r)
{
  if (!r->reaping && r->vm != NULL) {
    r->reaping = vg_sched_defer(r->vm->rt, reap, r);
  }
}

static int sandbox_push(lua_State *L, void *op);

/* Results cross VMs as plain values only: strings, numbers, booleans, nil; anything else
 * becomes its type name (read without metamethods). */
static void sandbox_done(vg_task_t *t, void *ud)
{
  sandbox_run_t *r = ud;
  r->done = true;
  r->task = NULL;
  r->status = (int)t->status;
  r->error = t->error ? strdup(t->error) : NULL;
  r->killed = t->budget.killed;
  r->instructions = t->budget.instr_used;
  r->memory_peak = t->vm->mem_peak;
  r->elapsed_ns = vg_clock_mono_ns() - r->started_ns;
  if (t->status == VG_TASK_OK) {
    int n = t->nresults < MAX_RESULTS ? t->nresults : MAX_RESULTS;
    for (int i = 0; i < n; i++) {
      int type = lua_type(t->co, i + 1);
      r->types[i] = type;
      if (type == LUA_TSTRING) {
        const char *s = lua_tolstring(t->co, i + 1, &r->lens[i]);
        r->results[i] = malloc(r->lens[i] + 1);
        if (r->results[i] != NULL) {
          memcpy(r->results[i], s, r->lens[i] + 1);
        }
      } else if (type == LUA_TNUMBER) {
        r->numbers[i] = lua_tonumber(t->co, i + 1);
      } else if (type == LUA_TBOOLEAN) {
        r->numbers[i] = lua_toboolean(t->co, i + 1);
      }
      r->nresults = i + 1;
    }
  }
  if (r->waiter != NULL) {
    vg_task_wake(r->waiter, sandbox_push);
  }
  schedule_reap(r);
}

static void push_outcome(lua_State *L, sandbox_run_t *r)
{
  static const char *const names[] = { "ok", "error", "killed", "cancelled" };
  static const char *const kills[] = { NULL,     "instructions", "slice",
                                       "memory", "cancelled",    "watchdog" };
  lua_createtable(L, 0, 8);
  lua_pushstring(L, names[r->status]);
  lua_setfield(L, -2, "status");
  if (r->error != NULL) {
    lua_pushstring(L, r->error);
    lua_setfield(L, -2, "error");
  }
  if (r->killed != VG_KILL_NONE) {
    lua_pushstring(L, kills[r->killed]);
    lua_setfield(L, -2, "killed");
  }
  lua_createtable(L, r->nresults, 0);
  for (int i = 0; i < r->nresults; i++) {
    switch (r->types[i]) {
      case LUA_TSTRING:
        lua_pushlstring(L, r->results[i] ? r->results[i] : "", r->results[i] ? r->lens[i] : 0);
        break;
      case LUA_TNUMBER:
        lua_pushnumber(L, r->numbers[i]);
        break;
      case LUA_TBOOLEAN:
        lua_pushboolean(L, r->numbers[i] != 0);
        break;
      case LUA_TNIL:
        lua_pushnil(L);
        break;
      default:
        lua_pushfstring(L, "<%s>", lua_typename(L, r->types[i]));
        break;
    }
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "results");
  lua_pushinteger(L, r->nresults);
  lua_setfield(L, -2, "n");
  lua_pushinteger(L, (lua_Integer)r->instructions);
  lua_setfield(L, -2, "instructions");
  lua_pushinteger(L, (lua_Integer)r->memory_peak);
  lua_setfield(L, -2, "memory_peak");
  lua_pushnumber(L, (double)r->elapsed_ns / 1e9);
  lua_setfield(L, -2, "elapsed");
}

static int sandbox_push(lua_State *L, void *op)
{
  sandbox_run_t *r = op;
  r->waiter = NULL;
  push_outcome(L, r);
  if (r->vm == NULL) {
    run_free(r);
  }
  return 1;
}

static void sandbox_release(void *op)
{
  sandbox_run_t *r = op;
  r->waiter = NULL;
  if (!r->done && r->task != NULL) {
    r->task->done = NULL;
    vg_task_cancel_all(r->vm, "the spec stopped waiting");
  }
  if (r->vm != NULL) {
    schedule_reap(r);
  } else {
    run_free(r);
  }
}

/* Sets up the sandbox VM and compiles the code, protected. [-0, +1, e] */
static int sandbox_setup_p(lua_State *L)
{
  size_t len;
  const char *code = lua_tolstring(L, 1, &len);
  vg_open_modules(L);
  if (vg_vm_load_text(L, code, len, "=sandbox") != LUA_OK) {
    return lua_error(L);
  }
  vg_sandbox_push_env(L, lua_toboolean(L, 2));
  lua_setupvalue(L, -2, 1);
  return 1;
}

/* vigil.testing.sandbox(code, opts) [-(1|2), +1, e]: runs `code` the way a policy's on_alert
 * runs (fresh VM, sandbox environment, the given limits) and waits for it. opts: memory
 * (bytes), instructions, slice (duration), timeout (duration), strict (default true),
 * fail_alloc_at (fault injection), args (list of strings/numbers passed as ...). Returns
 * { status = "ok"|"error"|"killed"|"cancelled", killed = "instructions"|"slice"|"memory"|...,
 * error, results = {...}, n, instructions, memory_peak, elapsed }. */
static int l_sandbox(lua_State *L)
{
  size_t len;
  const char *code = luaL_checklstring(L, 1, &len);
  vg_limits_t limits;
  vg_limits_default(&limits);
  limits.timeout_ms = 60000;
  bool strict = true;
  uint64_t fail_at = 0;
  int args = 0;
  if (lua_type(L, 2) == LUA_TTABLE) {
    if (lua_getfield(L, 2, "memory") != LUA_TNIL) {
      limits.memory = (size_t)luaL_checkinteger(L, -1);
    }
    if (lua_getfield(L, 2, "instructions") != LUA_TNIL) {
      limits.instructions = (uint64_t)luaL_checkinteger(L, -1);
    }
    if (lua_getfield(L, 2, "slice") != LUA_TNIL) {
      limits.slice_ms = vg_check_duration_ms(L, -1);
    }
    if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {
      limits.timeout_ms = vg_check_duration_ms(L, -1);
    }
    if (lua_getfield(L, 2, "strict") != LUA_TNIL) {
      strict = lua_toboolean(L, -1);
    }
    if (lua_getfield(L, 2, "fail_alloc_at") != LUA_TNIL) {
      fail_at = (uint64_t)luaL_checkinteger(L, -1);
    }
    if (lua_getfield(L, 2, "args") == LUA_TTABLE) {
      args = lua_gettop(L);
    }
  }
  vg_task_t *self = vg_task_check_yieldable(L, "vigil.testing.sandbox");
  vg_vm_t *me = vg_vm_of(L);
  sandbox_run_t *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return luaL_error(L, "out of memory");
  }
  r->vm = vg_vm_new(me->rt, "sandbox", &limits);
  if (r->vm == NULL) {
    free(r);
    return luaL_error(L, "cannot create the sandbox VM");
  }
  r->vm->lib_dir = me->lib_dir ? strdup(me->lib_dir) : NULL;
  r->vm->quiet = true;
  lua_State *S = r->vm->L;
  lua_pushcfunction(S, sandbox_setup_p);
  lua_pushlstring(S, code, len);
  lua_pushboolean(S, strict);
  if (lua_pcall(S, 2, 1, 0) != LUA_OK) {
    /* a compile error is an outcome too */
    char buf[128];
    r->status = VG_TASK_ERROR;
    r->error = strdup(vg_vm_error_text(S, -1, buf, sizeof(buf)));
    r->done = true;
    lua_pop(S, 1);
    vg_vm_free(r->vm);
    r->vm = NULL;
    push_outcome(L, r);
    run_free(r);
    return 1;
  }
  int nargs = 0;
  if (args != 0) {
    for (lua_Integer i = 1; lua_rawgeti(L, args, i) != LUA_TNIL; i++) {
      size_t alen;
      const char *a = lua_tolstring(L, -1, &alen);
      if (a == NULL) {
        return luaL_error(L, "sandbox: args must be strings or numbers");
      }
      lua_pushlstring(S, a, alen);
      lua_pop(L, 1);
      nargs++;
    }
    lua_pop(L, 1);
  }
  r->vm->alloc_count = 0;
  r->vm->alloc_fail_at = fail_at;
  r->started_ns = vg_clock_mono_ns();
  vg_task_opts_t opts = {
    .name = "sandbox", .label = "sandbox", .done = sandbox_done, .done_ud = r
  };
  r->task = vg_task_spawn(r->vm, nargs, &opts);
  if (r->task == NULL) {
    vg_vm_free(r->vm);
    free(r);
    return luaL_error(L, "cannot start the sandbox task");
  }
  r->waiter = self;
  vg_task_suspend(self, r, sandbox_release);
  return vg_task_yield(L);
}

/* ---- ingest: alerts into the spec's store, as the intake would take them ---- */

typedef struct {
  vg_task_t *task; /* NULL once the task is gone */
  vg_alert_batch_t batch;
  bool answered;
  int status;
  char err[256];
  size_t n;
  int64_t incidents[64];
  int outcomes[64];
  char fingerprints[64][17];
} ingest_t;

static void ingest_free(ingest_t *g)
{
  vg_alert_batch_free(&g->batch);
  free(g);
}

static int ingest_push(lua_State *L, void *ud)
{
  ingest_t *g = ud;
  if (g->status != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "ESTORE: %s", g->err);
    ingest_free(g);
    return 2;
  }
  static const char *const names[] = { "new", "changed", "unchanged" };
  lua_createtable(L, (int)g->n, 0);
  for (size_t i = 0; i < g->n; i++) {
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, g->incidents[i]);
    lua_setfield(L, -2, "incident");
    lua_pushstring(L, names[g->outcomes[i]]);
    lua_setfield(L, -2, "outcome");
    lua_pushstring(L, g->fingerprints[i]);
    lua_setfield(L, -2, "fingerprint");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  ingest_free(g);
  return 1;
}

static void ingest_cancel(void *ud)
{
  ingest_t *g = ud;
  if (g->answered) {
    ingest_free(g);
  } else {
    g->task = NULL;
  }
}

static void ingest_committed(
    void *ud, int status, const char *err, const vg_store_result_t *results, size_t n)
{
  ingest_t *g = ud;
  g->answered = true;
  g->status = status;
  snprintf(g->err, sizeof g->err, "%s", err != NULL ? err : "");
  for (size_t i = 0; status == 0 && i < n && i < 64; i++) {
    g->incidents[i] = results[i].incident_id;
    g->outcomes[i] = (int)results[i].outcome;
    snprintf(g->fingerprints[i], sizeof g->fingerprints[i], "%s", g->batch.alerts[i].fingerprint);
  }
  g->n = n < 64 ? n : 64;
  if (g->task != NULL) {
    vg_task_wake(g->task, ingest_push);
  } else {
    ingest_free(g);
  }
}

/* ingest(v2_json) -> { {incident, outcome}, ... } | nil, err: Alertmanager v2 postable alerts
 * (at most 64) stored in the spec's store, so a policy under test sees real incidents. */
static int l_ingest(lua_State *L)
{
  size_t len;
  const char *body = luaL_checklstring(L, 1, &len);
  vg_task_t *t = vg_task_check_yieldable(L, "vigil.testing.ingest");
  vg_executor_t *ex = vg_runtime_executor(vg_vm_of(L)->rt);
  vg_store_t *store = ex != NULL ? vg_executor_store(ex) : NULL;
  if (store == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "ENOSTORE: this spec runs without a store");
    return 2;
  }
  ingest_t *g = calloc(1, sizeof *g);
  if (g == NULL) {
    return luaL_error(L, "vigil.testing.ingest: out of memory");
  }
  vg_alertdec_opts_t opts = { .now = vg_clock_now(vg_vm_of(L)->rt), .resolve_timeout = 300 };
  int status = 0;
  char err[512];
  if (vg_alertdec_v2(body, len, &opts, &g->batch, &status, err, sizeof err) != 0 ||
      g->batch.n == 0 || g->batch.n > 64) {
    if (g->batch.nerrors > 0) {
      snprintf(err, sizeof err, "%s", g->batch.errors[0]);
    } else if (g->batch.n > 64) {
      snprintf(err, sizeof err, "at most 64 alerts per call");
    }
    ingest_free(g);
    lua_pushnil(L);
    lua_pushfstring(L, "EINVAL: %s", err);
    return 2;
  }
  g->task = t;
  if (vg_store_submit(store, g->batch.alerts, g->batch.n, ingest_committed, g) != 0) {
    ingest_free(g);
    lua_pushnil(L);
    lua_pushliteral(L, "ESTORE: the store is busy");
    return 2;
  }
  vg_task_suspend(t, g, ingest_cancel);
  return vg_task_yield(L);
}

int vg_open_vigil_testing(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    { "load_policy", l_load_policy },
    { "load_spec", l_load_spec },
    { "matchers", l_matchers },
    { "set_time", l_set_time },
    { "pending_timers", l_pending_timers },
    { "memory", l_memory },
    { "sandbox", l_sandbox },
    { "stop_jobs", l_stop_jobs },
    { "ingest", l_ingest },
    { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  return 1;
}
