/* vigil.runtime: inspect and steer the runtime a REPL or spec runs in: policies and their
 * statistics, live tasks, reload, enable/disable, and dispatching a test alert. Registered
 * only in REPL VMs (never in a policy's). */
#include <lauxlib.h>
#include <string.h>

#include "core/alert.h"
#include "core/clock.h"
#include "core/policy.h"
#include "core/runtime.h"
#include "core/task.h"
#include "engine/httpc.h"
#include "engine/source.h"
#include "lua/lvigil.h"

static vg_policies_t *policies(lua_State *L)
{
  vg_policies_t *ps = vg_vm_of(L)->rt->policies;
  if (ps == NULL) {
    luaL_error(L, "vigil.runtime: no policies are loaded in this runtime");
  }
  return ps;
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v)
{
  if (v != NULL) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
  }
}

/* vigil.runtime.policies() [-0, +1, m]: a list of { name, file, enabled, generation, match,
 * runs, failures, kills, matched, tasks, memory, disabled_reason, last_error }. */
static int l_policies(lua_State *L)
{
  vg_policies_t *ps = vg_vm_of(L)->rt->policies; /* none in a REPL started without them */
  lua_newtable(L);
  int i = 0;
  for (vg_policy_t *p = ps != NULL ? ps->list : NULL; p != NULL; p = p->next) {
    lua_createtable(L, 0, 14);
    set_str(L, "name", p->name);
    set_str(L, "file", p->path);
    set_str(L, "description", p->description);
    lua_pushboolean(L, !p->disabled);
    lua_setfield(L, -2, "enabled");
    set_int(L, "generation", p->generation);
    char m[1024];
    labelmatch_format(p->matchers, m, sizeof(m));
    set_str(L, "match", m);
    set_int(L, "runs", (lua_Integer)p->runs);
    set_int(L, "failures", (lua_Integer)p->failures);
    set_int(L, "kills", (lua_Integer)p->kills);
    set_int(L, "matched", (lua_Integer)p->matched);
    set_int(L, "tasks", p->vm ? p->vm->ntasks : 0);
    set_int(L, "memory", p->vm ? (lua_Integer)p->vm->mem_used : 0);
    set_str(L, "disabled_reason", p->disabled_reason);
    set_str(L, "last_error", p->last_error);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

static int push_tasks_of(lua_State *L, vg_vm_t *vm, const char *policy, int i)
{
  uint64_t now = vg_clock_mono_ns();
  for (vg_task_t *t = vm != NULL ? vm->tasks : NULL; t != NULL; t = t->vm_next) {
    lua_createtable(L, 0, 6);
    set_str(L, "owner", vm->name);
    set_str(L, "policy", policy);
    set_str(L, "name", t->name);
    set_str(L, "state", vg_task_state_name(t->state));
    lua_pushnumber(L, (double)(now - t->started_ns) / 1e9);
    lua_setfield(L, -2, "age");
    set_int(L, "instructions", (lua_Integer)t->budget.instr_used);
    lua_rawseti(L, -2, ++i);
  }
  return i;
}

/* vigil.runtime.tasks() [-0, +1, m]: live tasks of every policy, then of this REPL session:
 * { owner, policy (nil for the REPL's own), name, state, age (s), instructions }. */
static int l_tasks(lua_State *L)
{
  vg_policies_t *ps = vg_vm_of(L)->rt->policies;
  lua_newtable(L);
  int i = 0;
  for (vg_policy_t *p = ps != NULL ? ps->list : NULL; p != NULL; p = p->next) {
    i = push_tasks_of(L, p->vm, p->name, i);
  }
  push_tasks_of(L, vg_vm_of(L), NULL, i);
  return 1;
}

/* vigil.runtime.reload() [-0, +1, e]: reloads changed policy files; returns the number that
 * failed (see the log for each file:line: message). */
static int l_reload(lua_State *L)
{
  lua_pushinteger(L, vg_policies_reload(policies(L), "vigil.runtime.reload()"));
  return 1;
}

static vg_policy_t *check_policy(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  vg_policy_t *p = vg_policies_find(policies(L), name);
  if (p == NULL) {
    luaL_error(L, "no policy named '%s'", name);
  }
  return p;
}

static int l_enable(lua_State *L)
{
  vg_policy_enable(check_policy(L));
  return 0;
}

static int l_disable(lua_State *L)
{
  vg_policy_disable(check_policy(L), luaL_optstring(L, 2, "disabled by an operator"));
  return 0;
}

/* vigil.runtime.dispatch(alert) [-1, +1, e]: offers an alert table ({ labels = {...},
 * annotations = {...}, status = "firing" }) to the policies; returns how many took it. */
static int l_dispatch(lua_State *L)
{
  vg_policies_t *ps = policies(L);
  vg_label_t labels[128], annotations[128];
  vg_alert_t alert;
  vg_alert_check(L, 1, &alert, labels, annotations, 128);
  if (alert.starts_at == 0) {
    alert.starts_at = vg_clock_now(vg_vm_of(L)->rt);
  }
  lua_pushinteger(L, vg_policies_dispatch(ps, &alert, NULL, NULL));
  return 1;
}

/* vigil.runtime.stats() [-0, +1, m]: scheduler counters. */
static int l_stats(lua_State *L)
{
  vg_runtime_t *rt = vg_vm_of(L)->rt;
  lua_createtable(L, 0, 6);
  set_int(L, "tasks_spawned", (lua_Integer)rt->tasks_spawned);
  set_int(L, "resumes", (lua_Integer)rt->resumes);
  set_int(L, "task_errors", (lua_Integer)rt->task_errors);
  set_int(L, "task_kills", (lua_Integer)rt->task_kills);
  set_int(L, "http_active", rt->httpc != NULL ? (lua_Integer)vg_httpc_active(rt->httpc) : 0);
  if (rt->policies != NULL) {
    set_int(L, "reloads", (lua_Integer)rt->policies->reloads);
    set_int(L, "reload_failures", (lua_Integer)rt->policies->reload_failures);
  }
  return 1;
}

static void push_source(void *ud, const char *name, const vg_source_stats_t *st)
{
  lua_State *L = ud;
  lua_createtable(L, 0, 13);
  set_str(L, "name", name);
  set_str(L, "breaker", vg_breaker_name(st->breaker));
  set_int(L, "consecutive_failures", st->consecutive_failures);
  set_int(L, "inflight", st->inflight);
  set_int(L, "queued", st->queued);
  set_int(L, "requests", (lua_Integer)st->requests);
  set_int(L, "attempts", (lua_Integer)st->attempts);
  set_int(L, "retries", (lua_Integer)st->retries);
  set_int(L, "ok", (lua_Integer)st->ok);
  set_int(L, "failures", (lua_Integer)st->failures);
  set_int(L, "cancelled", (lua_Integer)st->cancelled);
  set_int(L, "short_circuited", (lua_Integer)st->short_circuited);
  set_int(L, "rejected", (lua_Integer)st->rejected);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

/* vigil.runtime.sources() [-0, +1, m]: each data source's policy state: { name, breaker
 * ("closed", "open", "half-open"), consecutive_failures, inflight, queued, requests,
 * attempts, retries, failures, short_circuited, rejected }. */
static int l_sources(lua_State *L)
{
  lua_newtable(L);
  vg_sources_each(vg_vm_of(L)->rt->sources, push_source, L);
  return 1;
}

int vg_open_vigil_runtime(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    { "policies", l_policies }, { "tasks", l_tasks },     { "reload", l_reload },
    { "enable", l_enable },     { "disable", l_disable }, { "dispatch", l_dispatch },
    { "stats", l_stats },       { "sources", l_sources }, { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  return 1;
}
