/* vigil.testing: what the spec harness (lua/vigil/test.lua) needs from C: loading a policy
 * file into the spec's VM exactly as the daemon validates it, evaluating its matchers, and
 * the virtual clock. Registered only in spec VMs. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "core/alert.h"
#include "core/clock.h"
#include "core/policy.h"
#include "core/runtime.h"
#include "core/sandbox.h"
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

/* vigil.testing.load_policy(path) [-1, +3, e]: runs the policy file in this VM's sandbox and
 * validates it like the daemon does. Returns its table, its name and its matchers. */
static int l_load_policy(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  vg_vm_t *vm = vg_vm_of(L);
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
  char *name = NULL;
  vg_matchers_t *m = vg_policy_validate_table(L, -1, path, NULL, &name);
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

/* vigil.testing.memory() [-0, +1, -]: bytes this VM uses now. */
static int l_memory(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)vg_vm_of(L)->mem_used);
  return 1;
}

int vg_open_vigil_testing(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    { "load_policy", l_load_policy }, { "load_spec", l_load_spec }, { "matchers", l_matchers }, { "set_time", l_set_time },
    { "pending_timers", l_pending_timers }, { "memory", l_memory }, { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  return 1;
}
