/* vigil.core: the C half of the `vigil` module (lua/vigil/init.lua adds the Lua half).
 * Time, tasks and periodic jobs: sleep, now, spawn, wait, every, duration, log; and what the
 * config declares of sources and notifiers. */
#include "lua/lvigil.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vigil/version.h"

#include "core/clock.h"
#include "core/config.h"
#include "core/every.h"
#include "core/log.h"
#include "core/runtime.h"
#include "core/sandbox.h"
#include "core/task.h"

#define TASK_MT "vigil.task"
#define EVERY_MT "vigil.every"

/* Reads a duration argument (seconds as a number, or "30s"/"5m"...) in milliseconds. */
uint64_t vg_check_duration_ms(lua_State *L, int arg)
{
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Number s = lua_tonumber(L, arg);
    luaL_argcheck(L, s >= 0 && isfinite(s) && s < 9e12, arg, "duration out of range");
    return (uint64_t)llround(s * 1000.0);
  }
  const char *text = luaL_checkstring(L, arg);
  char err[128];
  int64_t ms = vg_duration_parse(text, err, sizeof(err));
  if (ms < 0) {
    luaL_argerror(L, arg, err);
  }
  return (uint64_t)ms;
}

/* ---- sleep ---- */

typedef struct {
  vg_timer_t *timer;
  vg_task_t *task;
} sleep_op_t;

static void sleep_release(void *ud)
{
  sleep_op_t *op = ud;
  vg_timer_stop(op->timer);
  free(op);
}

static int sleep_push(lua_State *L, void *ud)
{
  (void)L;
  sleep_release(ud);
  return 0;
}

static void sleep_fired_push(vg_timer_t *timer, void *ud)
{
  (void)timer;
  sleep_op_t *op = ud;
  vg_task_wake(op->task, sleep_push);
}

/* vigil.sleep(duration) [-1, +0, e]: suspends the task; 0 just lets others run. */
static int l_sleep(lua_State *L)
{
  uint64_t ms = vg_check_duration_ms(L, 1);
  vg_task_t *t = vg_task_check_yieldable(L, "vigil.sleep");
  if (ms == 0) {
    return vg_task_yield_now(L);
  }
  sleep_op_t *op = malloc(sizeof(*op));
  if (op == NULL) {
    return luaL_error(L, "vigil.sleep: out of memory");
  }
  op->task = t;
  op->timer = vg_timer_start(vg_vm_of(L)->rt, ms, 0, sleep_fired_push, op);
  if (op->timer == NULL) {
    free(op);
    return luaL_error(L, "vigil.sleep: out of memory");
  }
  vg_task_suspend(t, op, sleep_release);
  return vg_task_yield(L);
}

/* vigil.core.source_info(name) [-1, +1, m]: what the config declares of a data source, without
 * its secrets: { name, kind, url, timeout (seconds) }, or nil when it declares none. */
static int l_source_info(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  const vg_source_config_t *sc = vg_config_source(vg_vm_of(L)->rt->config, name);
  if (sc == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 4);
  lua_pushstring(L, sc->name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, sc->kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, sc->url);
  lua_setfield(L, -2, "url");
  lua_pushnumber(L, (lua_Number)sc->timeout_ms / 1000.0);
  lua_setfield(L, -2, "timeout");
  return 1;
}

/* Sets t[key] = s (t at the top of the stack) when s is not NULL. */
static void set_opt_string(lua_State *L, const char *key, const char *s)
{
  if (s != NULL) {
    lua_pushstring(L, s);
    lua_setfield(L, -2, key);
  }
}

/* vigil.core.notifier(name) [-1, +1, m]: the config's notifier `name` as a fresh table
 * { name, kind, url, routing_key, webhook, secret, channel, username, headers = { [n] = v } }
 * (absent fields are nil), or nil when the config declares none. vigil.actions.notify hands it
 * to the notify builders.
 *
 * Sources keep their credentials in C and add them to each request; notifiers cannot: the
 * PagerDuty routing key is part of the event body the builder encodes, and a webhook's
 * signing key is needed to compute the signature over the body. So the secrets are returned
 * as plain strings. What keeps them out of sight is the builders (no secret in an error or a
 * redacted_url) and the executor (the ledger records the redacted command, never the body):
 * a notifier keeps secrets out of policy files and the ledger, not out of the policy's VM. */
static int l_notifier(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  const vg_notifier_config_t *nc = vg_config_notifier(vg_vm_of(L)->rt->config, name);
  if (nc == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 9);
  set_opt_string(L, "name", nc->name);
  set_opt_string(L, "kind", nc->kind);
  set_opt_string(L, "url", nc->url);
  set_opt_string(L, "routing_key", nc->routing_key);
  set_opt_string(L, "webhook", nc->webhook);
  set_opt_string(L, "secret", nc->secret);
  set_opt_string(L, "channel", nc->channel);
  set_opt_string(L, "username", nc->username);
  if (nc->nheaders > 0) {
    lua_createtable(L, 0, (int)nc->nheaders);
    for (size_t i = 0; i < nc->nheaders; i++) {
      set_opt_string(L, nc->headers[i].name, nc->headers[i].value);
    }
    lua_setfield(L, -2, "headers");
  }
  return 1;
}

/* vigil.now() [-0, +1, -]: seconds since the epoch, millisecond precision (virtual in specs). */
static int l_now(lua_State *L)
{
  lua_pushnumber(L, vg_clock_now(vg_vm_of(L)->rt));
  return 1;
}

/* vigil.duration(d) [-1, +1, e]: "1h30m" -> 5400 (seconds). */
static int l_duration(lua_State *L)
{
  lua_pushnumber(L, (lua_Number)vg_check_duration_ms(L, 1) / 1000.0);
  return 1;
}

/* ---- tasks ---- */

typedef struct {
  vg_task_t *t;
} task_handle_t;

static vg_task_t *check_task(lua_State *L, int idx)
{
  task_handle_t *h = luaL_checkudata(L, idx, TASK_MT);
  return h->t;
}

static void push_task_handle(lua_State *L, vg_task_t *t)
{
  task_handle_t *h = lua_newuserdatauv(L, sizeof(*h), 0);
  h->t = t;
  vg_task_ref(t);
  luaL_setmetatable(L, TASK_MT);
}

/* vigil.spawn(fn, ...) [-n, +1, e]: runs fn(...) as a child task of the caller; returns its
 * handle. Children are cancelled when their parent task ends, except those of a REPL line,
 * which run on in the background until they end or the session does. */
static int l_spawn(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TFUNCTION);
  vg_vm_t *vm = vg_vm_of(L);
  vg_task_t *parent = vg_task_current(L);
  static unsigned long counter;
  char name[96];
  snprintf(name, sizeof(name), "%.60s/spawn-%lu", parent ? parent->name : "spawn", ++counter);
  vg_task_opts_t opts = {
    .name = name,
    .label = "spawn",
    .parent = parent != NULL && !parent->detach_children ? parent : NULL,
  };
  int nargs = lua_gettop(L) - 1;
  vg_task_t *t = vg_task_spawn_on(vm, L, nargs, &opts);
  if (t == NULL) {
    return luaL_error(L, "vigil.spawn: cannot create a task (shutting down or out of memory)");
  }
  push_task_handle(L, t);
  return 1;
}

static void wait_release(void *ud)
{
  vg_waiter_t *w = ud;
  vg_task_t *target = w->target;
  vg_task_remove_waiter(w);
  vg_task_unref(target);
}

static int wait_timeout_push(lua_State *L, void *ud)
{
  vg_waiter_t *w = ud;
  lua_pushnil(L);
  lua_pushfstring(L, "ETIMEDOUT: task '%s' still running", w->target->name);
  wait_release(w);
  return 2;
}

static void wait_timer_fired(vg_timer_t *timer, void *ud)
{
  (void)timer;
  vg_waiter_t *w = ud;
  w->timed_out = true;
  vg_task_wake(w->waiter, wait_timeout_push);
}

/* vigil.wait(task [, timeout]) [-(1|2), +n, e]: the task's results; nil, "ETASK: ..." if it
 * failed, nil, "ECANCELED: ..." if it was cancelled, nil, "ETIMEDOUT: ..." if `timeout`
 * passed first (the task keeps running). */
static int l_wait(lua_State *L)
{
  vg_task_t *target = check_task(L, 1);
  uint64_t timeout_ms = lua_isnoneornil(L, 2) ? 0 : vg_check_duration_ms(L, 2);
  if (target->state == VG_TASK_DONE) {
    return vg_task_push_outcome(L, target);
  }
  vg_task_t *self = vg_task_check_yieldable(L, "vigil.wait");
  if (self == target) {
    return luaL_error(L, "vigil.wait: a task cannot wait for itself");
  }
  vg_waiter_t *w = vg_task_add_waiter(target, self);
  if (w == NULL) {
    return luaL_error(L, "vigil.wait: out of memory");
  }
  if (lua_isnoneornil(L, 2) == 0) {
    w->timer = vg_timer_start(vg_vm_of(L)->rt, timeout_ms, 0, wait_timer_fired, w);
  }
  vg_task_suspend(self, w, wait_release);
  return vg_task_yield(L);
}

/* task:cancel([reason]) [-(1|2), +0, e] */
static int task_cancel(lua_State *L)
{
  vg_task_t *t = check_task(L, 1);
  vg_task_cancel(t, luaL_optstring(L, 2, "cancelled by vigil.task:cancel()"));
  return 0;
}

/* task:status() [-1, +1, e]: "ready", "running", "waiting", or "ok"/"error"/"killed"/"cancelled".
 */
static int task_status(lua_State *L)
{
  vg_task_t *t = check_task(L, 1);
  lua_pushstring(
      L, t->state == VG_TASK_DONE ? vg_task_status_name(t->status) : vg_task_state_name(t->state));
  return 1;
}

static int task_index(lua_State *L)
{
  vg_task_t *t = check_task(L, 1);
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "name") == 0) {
    lua_pushstring(L, t->name);
    return 1;
  }
  if (strcmp(key, "error") == 0) {
    if (t->error != NULL) {
      lua_pushstring(L, t->error);
    } else {
      lua_pushnil(L);
    }
    return 1;
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__methods");
  lua_getfield(L, -1, key);
  return 1;
}

static int task_tostring(lua_State *L)
{
  vg_task_t *t = check_task(L, 1);
  lua_pushfstring(
      L, "vigil.task(%s, %s)", t->name,
      t->state == VG_TASK_DONE ? vg_task_status_name(t->status) : vg_task_state_name(t->state));
  return 1;
}

static int task_gc(lua_State *L)
{
  task_handle_t *h = luaL_checkudata(L, 1, TASK_MT);
  if (h->t != NULL) {
    vg_task_unref(h->t);
    h->t = NULL;
  }
  return 0;
}

/* ---- every ---- */

typedef vg_every_handle_t every_handle_t;

/* vigil.every(interval, fn [, opts]) [-(2|3), +1, e]: runs fn every interval as its own task
 * until the handle's :stop() or the policy reloads. opts.name, opts.first (delay of the first
 * run; default one interval). */
static int l_every(lua_State *L)
{
  uint64_t interval = vg_check_duration_ms(L, 1);
  luaL_argcheck(L, interval >= 10, 1, "interval must be at least 10ms");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  const char *name = "job";
  uint64_t first = interval;
  if (lua_type(L, 3) == LUA_TTABLE) {
    if (lua_getfield(L, 3, "name") == LUA_TSTRING) {
      name = lua_tostring(L, -1);
    }
    if (lua_getfield(L, 3, "first") != LUA_TNIL) {
      first = vg_check_duration_ms(L, lua_gettop(L));
    }
  }
  vg_vm_t *vm = vg_vm_of(L);
  if (vm->current == NULL || vm->load_phase) {
    return luaL_error(L,
                      "vigil.every: call it from a task (on_alert, the REPL, a spec), or declare "
                      "the job in the policy's `every` table");
  }
  every_handle_t *h = lua_newuserdatauv(L, sizeof(*h), 0);
  memset(h, 0, sizeof(*h));
  luaL_setmetatable(L, EVERY_MT);
  lua_pushvalue(L, 2);
  h->e = vg_every_start(vm, L, name, interval, first);
  if (h->e == NULL) {
    return luaL_error(L, "vigil.every: out of memory");
  }
  h->e->handle = h;
  return 1;
}

static every_handle_t *check_every(lua_State *L)
{
  return luaL_checkudata(L, 1, EVERY_MT);
}

static int every_stop(lua_State *L)
{
  every_handle_t *h = check_every(L);
  if (h->e != NULL) {
    vg_every_stop(h->e);
  }
  return 0;
}

static int every_index(lua_State *L)
{
  every_handle_t *h = check_every(L);
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "stop") == 0) {
    lua_pushcfunction(L, every_stop);
  } else if (strcmp(key, "runs") == 0) {
    lua_pushinteger(L, (lua_Integer)(h->e ? h->e->runs : h->runs));
  } else if (strcmp(key, "skipped") == 0) {
    lua_pushinteger(L, (lua_Integer)(h->e ? h->e->skipped : h->skipped));
  } else if (strcmp(key, "failures") == 0) {
    lua_pushinteger(L, (lua_Integer)(h->e ? h->e->failures : h->failures));
  } else if (strcmp(key, "active") == 0) {
    lua_pushboolean(L, h->e != NULL);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

static int every_gc(lua_State *L)
{
  every_handle_t *h = check_every(L);
  if (h->e != NULL) {
    h->e->handle = NULL; /* the job keeps running: it is owned by the VM, not the handle */
  }
  return 0;
}

/* ---- log ---- */

/* vigil.core.log(level, msg [, fields]) [-(2|3), +0, e] */
static int l_log(lua_State *L)
{
  static const char *const levels[] = { "debug", "info", "warn", "error", NULL };
  int level = luaL_checkoption(L, 1, NULL, levels);
  const char *msg = luaL_checkstring(L, 2);
  if (!vg_log_enabled((vg_log_level_t)level)) {
    return 0;
  }
  vg_vm_t *vm = vg_vm_of(L);
  vg_task_t *t = vm->current;
  const char *kv[2 * 32 + 4];
  size_t n = 0;
  kv[n++] = "vm";
  kv[n++] = vm->name;
  if (t != NULL) {
    kv[n++] = "task";
    kv[n++] = t->name;
  }
  if (lua_type(L, 3) == LUA_TTABLE) {
    lua_settop(L, 3);
    lua_pushnil(L);
    while (n < sizeof(kv) / sizeof(kv[0]) - 1 && lua_next(L, 3) != 0) {
      if (lua_type(L, -2) != LUA_TSTRING) {
        lua_pop(L, 1);
        continue;
      }
      luaL_checkstack(L, 4, "too many log fields");
      vg_sandbox_tostring(L, -1, NULL); /* [.. k v s] */
      lua_replace(L, -2);               /* [.. k s]: s stays on the stack, alive */
      kv[n++] = lua_tostring(L, -2);
      kv[n++] = lua_tostring(L, -1);
      lua_pushvalue(L, -2); /* [.. k s k]: next key */
    }
  }
  vg_log_fields((vg_log_level_t)level, msg, kv, n);
  return 0;
}

/* ---- registration ---- */

int vg_open_vigil_core(lua_State *L)
{
  static const luaL_Reg task_methods[] = {
    { "cancel", task_cancel },
    { "status", task_status },
    { "wait", l_wait },
    { NULL, NULL },
  };
  static const luaL_Reg task_meta[] = {
    { "__index", task_index },
    { "__tostring", task_tostring },
    { "__gc", task_gc },
    { "__close", task_gc },
    { NULL, NULL },
  };
  luaL_newmetatable(L, TASK_MT);
  luaL_setfuncs(L, task_meta, 0);
  luaL_newlib(L, task_methods);
  lua_setfield(L, -2, "__methods");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);

  static const luaL_Reg every_meta[] = {
    { "__index", every_index },
    { "__gc", every_gc },
    { NULL, NULL },
  };
  luaL_newmetatable(L, EVERY_MT);
  luaL_setfuncs(L, every_meta, 0);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);

  static const luaL_Reg funcs[] = {
    { "sleep", l_sleep },
    { "now", l_now },
    { "duration", l_duration },
    { "spawn", l_spawn },
    { "wait", l_wait },
    { "every", l_every },
    { "log", l_log },
    { "source_info", l_source_info },
    { "notifier", l_notifier }, /* secrets included: see l_notifier */
    { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  lua_pushliteral(L, VIGIL_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
