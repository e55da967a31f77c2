/* Sandbox construction. Everything a policy can reach is either a plain allowlisted function,
 * a wrapper defined here, or a read-only proxy; the real library tables stay private to the
 * VM's trusted runtime code (lua/vigil). */
#include "core/sandbox.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/embedded.h"
#include "core/log.h"
#include "core/vm.h"
#include "lua/lstrlib_bounded.h"

#define MAX_LOAD_BYTES (4u << 20) /* source text accepted by load() and policy files */

/* ---- kill-aware protected calls ---- */

static int finish_pcall(lua_State *L, int status, lua_KContext extra)
{
  if (status != LUA_OK && status != LUA_YIELD) {
    if (vg_vm_killed(L) || vg_vm_is_kill(L, -1)) {
      return lua_error(L); /* budget kills and memory exhaustion are not catchable */
    }
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - (int)extra;
}

/* pcall(f, ...) [-0, +(1|n), -] */
static int sb_pcall(lua_State *L)
{
  luaL_checkany(L, 1);
  lua_pushboolean(L, 1);
  lua_insert(L, 1);
  int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
  return finish_pcall(L, status, 0);
}

/* The real message handler of xpcall: skips the user's handler when the error is a kill, so
 * a looping handler cannot run with hooks off (reliability-research.md §2.3 #37). */
static int sb_xpcall_handler(lua_State *L)
{
  if (vg_vm_killed(L) || vg_vm_is_kill(L, 1)) {
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* xpcall(f, handler, ...) [-0, +(1|n), -] */
static int sb_xpcall(lua_State *L)
{
  int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, sb_xpcall_handler, 1);
  lua_replace(L, 2);
  lua_pushboolean(L, 1);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 2); /* [f, handler, true, f, args...] */
  int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
  return finish_pcall(L, status, 2);
}

int vg_sandbox_call_noyield(lua_State *L, int nargs, int nresults, const char *reason)
{
  vg_vm_t *vm = vg_vm_of(L);
  const char *saved = vm->noyield_reason;
  vm->noyield_reason = reason;
  int status = lua_pcall(L, nargs, nresults, 0);
  vm->noyield_reason = saved;
  return status;
}

/* ---- wrappers of standard functions ---- */

/* setmetatable(t, mt): refuses __gc, whose finalizers run with hooks off. */
static int sb_setmetatable(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TTABLE);
  int t = lua_type(L, 2);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  if (t == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL) {
      return luaL_error(L, "setmetatable: __gc metamethods are not allowed in policies");
    }
    lua_pop(L, 1);
  }
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL) {
    return luaL_error(L, "cannot change a protected metatable");
  }
  lua_settop(L, 2);
  lua_setmetatable(L, 1);
  return 1;
}

/* table.sort(t, comp): the comparator runs where it cannot wait; large sorts are charged. */
static int sb_sort(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 1);
  if (n > 1) {
    vg_vm_charge(L, (uint64_t)n * 8);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  if (vg_sandbox_call_noyield(L, lua_gettop(L) - 1, 0, "inside a table.sort comparator") !=
      LUA_OK) {
    return lua_error(L);
  }
  return 0;
}

/* ---- C loops the hook cannot see ---- */

/* The count hook runs only between Lua instructions, so a library function that loops in C
 * over a count the caller picks, without growing memory, could stall the loop for hours. */

/* Elements in first..last, saturated (the range may span all of lua_Integer). */
static uint64_t range_count(lua_Integer first, lua_Integer last)
{
  if (last < first) {
    return 0;
  }
  uint64_t span = (uint64_t)last - (uint64_t)first;
  return span == UINT64_MAX ? span : span + 1;
}

/* #t as the real function will read it (through __len), or 0 when t is not a table and the
 * real function will raise its own error. [-0, +0, e] */
static uint64_t table_len(lua_State *L, int idx)
{
  if (lua_type(L, idx) != LUA_TTABLE) {
    return 0;
  }
  lua_Integer n = luaL_len(L, idx);
  return n > 0 ? (uint64_t)n : 0;
}

/* Calls the real function (upvalue 1) with this call's arguments. [-0, +n, e] */
static int call_real(lua_State *L)
{
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* string.rep(s, n [, sep]): Lua's str_rep copies n times even when every copy is empty, so
 * string.rep("", 2^40) would spin in C. An empty result comes back at once; any other result
 * is as large as the work, and the memory cap bounds it. */
static int sb_rep(lua_State *L)
{
  size_t len, seplen;
  luaL_checklstring(L, 1, &len);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &seplen);
  if (n <= 0 || len + seplen == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  return call_real(L);
}

/* Argument idx as the real function will read it (floats such as 2^40 included), or def. */
static lua_Integer int_arg(lua_State *L, int idx, lua_Integer def)
{
  int isnum;
  lua_Integer v = lua_tointegerx(L, idx, &isnum);
  return isnum ? v : def;
}

/* table.move(a1, f, e, t [, a2]): charged e - f + 1 (table.move({}, 1, 2^40, 1) moves nils
 * for ever otherwise). */
static int sb_move(lua_State *L)
{
  vg_vm_charge(L, range_count(int_arg(L, 2, 1), int_arg(L, 3, 0)));
  return call_real(L);
}

/* table.insert(t, pos, v) and table.remove(t [, pos]) shift up to #t elements, and #t comes
 * from __len: charged #t. */
static int sb_insert(lua_State *L)
{
  if (lua_gettop(L) == 3) {
    vg_vm_charge(L, table_len(L, 1));
  }
  return call_real(L);
}

static int sb_remove(lua_State *L)
{
  vg_vm_charge(L, table_len(L, 1));
  return call_real(L);
}

/* table.concat(t [, sep [, i [, j]]]): charged j - i + 1; elements can be "" from a C
 * __index, so neither the buffer nor the memory cap need grow. */
static int sb_concat(lua_State *L)
{
  if (lua_type(L, 1) == LUA_TTABLE) {
    lua_Integer i = int_arg(L, 3, 1);
    lua_Integer j = lua_isnoneornil(L, 4) ? (lua_Integer)table_len(L, 1) : int_arg(L, 4, 0);
    vg_vm_charge(L, range_count(i, j));
  }
  return call_real(L);
}

/* string.format without %p, which would print addresses. */
static int sb_format(lua_State *L)
{
  size_t len;
  const char *f = luaL_checklstring(L, 1, &len);
  for (size_t i = 0; i + 1 < len; i++) {
    if (f[i] != '%') {
      continue;
    }
    size_t j = i + 1;
    if (f[j] == '%') {
      i = j;
      continue;
    }
    while (j < len && strchr("-+ #0123456789.", f[j]) != NULL) {
      j++;
    }
    if (j < len && f[j] == 'p') {
      return luaL_error(L, "string.format: '%%p' is not available in policies");
    }
    i = j;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

const char *vg_sandbox_tostring(lua_State *L, int idx, size_t *len)
{
  idx = lua_absindex(L, idx);
  if (luaL_callmeta(L, idx, "__tostring")) {
    if (!lua_isstring(L, -1)) {
      luaL_error(L, "'__tostring' must return a string");
    }
    return lua_tolstring(L, -1, len);
  }
  switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
    case LUA_TSTRING:
    case LUA_TBOOLEAN:
    case LUA_TNIL:
      return luaL_tolstring(L, idx, len);
    default: {
      /* An opaque id keyed per VM: identity is visible, the address is not. */
      uint64_t p = (uint64_t)(uintptr_t)lua_topointer(L, idx);
      uint32_t h = (uint32_t)((p ^ (p >> 29)) * 0x9E3779B1u) ^ vg_vm_of(L)->id_key;
      int tt = luaL_getmetafield(L, idx, "__name");
      const char *kind = tt == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, idx);
      char id[16];
      snprintf(id, sizeof(id), "%08x", (unsigned)h);
      lua_pushfstring(L, "%s: %s", kind, id);
      if (tt != LUA_TNIL) {
        lua_remove(L, -2);
      }
      return lua_tolstring(L, -1, len);
    }
  }
}

static int sb_tostring(lua_State *L)
{
  luaL_checkany(L, 1);
  vg_sandbox_tostring(L, 1, NULL);
  return 1;
}

/* print(...): to the REPL when one is attached to this VM, else to the log. */
static int sb_print(lua_State *L)
{
  int n = lua_gettop(L);
  /* Convert every argument first: a luaL_Buffer must stay on top of the stack while it
   * grows, so nothing may be pushed between its additions. */
  for (int i = 1; i <= n; i++) {
    vg_sandbox_tostring(L, i, NULL);
    lua_replace(L, i);
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    size_t len;
    const char *s = lua_tolstring(L, i, &len);
    if (i > 1) {
      luaL_addchar(&b, '\t');
    }
    luaL_addlstring(&b, s, len);
  }
  luaL_pushresult(&b);
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  vg_vm_t *vm = vg_vm_of(L);
  if (vm->print != NULL) {
    vm->print(vm, text, len, vm->print_ud);
  } else {
    vg_log(VG_LOG_INFO, "print", "vm", vm->name, "text", text, NULL);
  }
  return 0;
}

/* ---- loading ---- */

typedef struct {
  lua_State *L;
  int fn;
  size_t total;
} reader_state_t;

/* load(chunk [, chunkname [, mode [, env]]]): text only; the environment is the caller's
 * sandbox unless an explicit table is given. Never the VM's real globals. */
static int sb_load(lua_State *L)
{
  size_t len;
  const char *src;
  if (lua_type(L, 1) == LUA_TFUNCTION) {
    /* Collect the pieces ourselves so a reader cannot feed bytecode or unbounded text. */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t total = 0;
    for (;;) {
      lua_pushvalue(L, 1);
      lua_call(L, 0, 1);
      if (lua_isnil(L, -1) || (lua_isstring(L, -1) && lua_rawlen(L, -1) == 0)) {
        lua_pop(L, 1);
        break;
      }
      if (lua_type(L, -1) != LUA_TSTRING) {
        luaL_pushfail(L);
        lua_pushliteral(L, "reader function must return a string");
        return 2;
      }
      total += lua_rawlen(L, -1);
      if (total > MAX_LOAD_BYTES) {
        luaL_pushfail(L);
        lua_pushliteral(L, "chunk too large");
        return 2;
      }
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_replace(L, 1);
  }
  src = luaL_checklstring(L, 1, &len);
  if (len > MAX_LOAD_BYTES) {
    luaL_pushfail(L);
    lua_pushliteral(L, "chunk too large");
    return 2;
  }
  const char *name = luaL_optstring(L, 2, "=(load)");
  const char *mode = luaL_optstring(L, 3, "t");
  if (strchr(mode, 't') == NULL) {
    luaL_pushfail(L);
    lua_pushliteral(L, "binary chunks are not allowed (only text mode 't')");
    return 2;
  }
  bool has_env = !lua_isnone(L, 4);
  if (luaL_loadbufferx(L, src, len, name, "t") != LUA_OK) {
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  if (has_env) {
    lua_pushvalue(L, 4);
  } else {
    vg_sandbox_push_env(L, false);
  }
  if (lua_setupvalue(L, -2, 1) == NULL) {
    lua_pop(L, 1);
  }
  return 1;
}

int vg_sandbox_loadfile(lua_State *L, const char *path, const char *chunkname)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    lua_pop(L, 1);
    lua_pushfstring(L, "%s: cannot open: %s", path, strerror(errno));
    return LUA_ERRFILE;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char chunk[4096];
  size_t n, total = 0;
  bool too_big = false;
  while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    total += n;
    if (total > MAX_LOAD_BYTES) {
      too_big = true;
      break;
    }
    luaL_addlstring(&b, chunk, n);
  }
  fclose(f);
  luaL_pushresult(&b); /* [env, text] */
  if (too_big) {
    lua_pop(L, 2);
    lua_pushfstring(L, "%s: file too large (limit %d bytes)", path, (int)MAX_LOAD_BYTES);
    return LUA_ERRFILE;
  }
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  if (len > 0 && text[0] == LUA_SIGNATURE[0]) {
    lua_pop(L, 2);
    lua_pushfstring(L, "%s: binary chunks are not allowed", path);
    return LUA_ERRSYNTAX;
  }
  const char *skip = text;
  if (len > 0 && text[0] == '#') { /* allow a shebang line, keep line numbers */
    skip = memchr(text, '\n', len);
    skip = skip ? skip : text + len;
  }
  int status = luaL_loadbufferx(L, skip, len - (size_t)(skip - text), chunkname, "t");
  if (status != LUA_OK) { /* [env, text, msg] */
    lua_replace(L, -3);
    lua_pop(L, 1);
    return status;
  }
  lua_replace(L, -2); /* [env, fn] */
  lua_insert(L, -2);  /* [fn, env] */
  if (lua_setupvalue(L, -2, 1) == NULL) {
    lua_pop(L, 1);
  }
  return LUA_OK;
}

/* ---- require ---- */

/* The table of loaded modules of this VM (registry._LOADED). [-0, +1, m] */
static void push_loaded(lua_State *L)
{
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
}

void vg_sandbox_register(lua_State *L, const char *name)
{
  push_loaded(L);
  lua_insert(L, -2);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

static bool valid_module_name(const char *name)
{
  if (*name == '\0' || *name == '.') {
    return false;
  }
  for (const char *p = name; *p; p++) {
    bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || (*p == '.' && p[1] != '.' && p[1] != '\0');
    if (!ok) {
      return false;
    }
  }
  return true;
}

/* Loads and runs a trusted embedded module with the VM's real globals. [-0, +1, e] */
static void require_embedded(lua_State *L, const vg_embedded_t *e, const char *name)
{
  if (luaL_loadbufferx(L, e->source, e->len, e->chunkname, "t") != LUA_OK) {
    lua_error(L);
  }
  lua_pushstring(L, name);
  if (vg_sandbox_call_noyield(L, 1, 1, "inside require (a module's top level)") != LUA_OK) {
    lua_error(L);
  }
}

/* Loads policies/lib/<name>.lua as sandboxed code in a strict environment. [-0, +1, e] */
static void require_lib(lua_State *L, const char *name)
{
  vg_vm_t *vm = vg_vm_of(L);
  if (vm->lib_dir == NULL) {
    luaL_error(L, "module '%s' not found: this VM has no policies/lib directory", name);
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, vm->lib_dir);
  luaL_addchar(&b, '/');
  for (const char *p = name + 4; *p; p++) {
    luaL_addchar(&b, *p == '.' ? '/' : *p);
  }
  luaL_addstring(&b, ".lua");
  luaL_pushresult(&b);
  const char *path = lua_tostring(L, -1);
  const char *chunkname = lua_pushfstring(L, "@%s", path);
  vg_sandbox_push_env(L, true); /* loadfile takes the environment from the top */
  int status = vg_sandbox_loadfile(L, path, chunkname);
  lua_remove(L, -2); /* the chunkname */
  if (status == LUA_ERRFILE) {
    luaL_error(L, "module '%s' not found: %s", name, lua_tostring(L, -1));
  } else if (status != LUA_OK) {
    lua_error(L);
  }
  bool saved_phase = vm->load_phase;
  vm->load_phase = true;
  lua_pushstring(L, name);
  status = vg_sandbox_call_noyield(L, 1, 1, "inside require (a module's top level)");
  vm->load_phase = saved_phase;
  if (status != LUA_OK) {
    lua_error(L);
  }
  lua_remove(L, -2); /* the path */
}

/* require(name): vigil.* (embedded or C) and lib.* (policies/lib) only. [-1, +1, e] */
static int sb_require(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  push_loaded(L);
  if (lua_getfield(L, 2, name) != LUA_TNIL) {
    return 1;
  }
  lua_pop(L, 1);
  const vg_embedded_t *e = NULL;
  if (!valid_module_name(name)) {
    return luaL_error(L, "module '%s' not found: invalid module name", name);
  }
  if (strcmp(name, "vigil") == 0) {
    e = vg_embedded_find("vigil.init");
  } else if (strncmp(name, "vigil.", 6) == 0) {
    e = vg_embedded_find(name);
  }
  if (e != NULL) {
    require_embedded(L, e, name);
  } else if (strncmp(name, "lib.", 4) == 0 && name[4] != '\0') {
    require_lib(L, name);
  } else {
    return luaL_error(L,
                      "module '%s' not found: policies may require vigil.* modules and "
                      "lib.* (policies/lib/*.lua) only",
                      name);
  }
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, 2, name);
  return 1;
}

/* The sandboxed require: vigil modules come back as read-only proxies, so a policy cannot
 * change the runtime library it shares a VM with. */
static int sb_require_sandboxed(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  bool allowed = strcmp(name, "vigil") == 0 || strncmp(name, "vigil.", 6) == 0 ||
                 strncmp(name, "lib.", 4) == 0;
  if (!allowed) {
    return luaL_error(L,
                      "module '%s' not found: policies may require vigil.* modules and "
                      "lib.* (policies/lib/*.lua) only",
                      name);
  }
  lua_pushcfunction(L, sb_require);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  if (lua_type(L, -1) == LUA_TTABLE && strncmp(name, "vigil", 5) == 0) {
    vg_sandbox_push_readonly(L, -1, name);
  }
  return 1;
}

/* ---- read-only proxies ---- */

/* __index of a proxy: upvalues (real table, cache of nested proxies, name). */
static int ro_get(lua_State *L)
{
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) == LUA_TNIL &&
      luaL_getmetafield(L, lua_upvalueindex(1), "__index") != LUA_TNIL) {
    /* The real table is trusted runtime code that loads some members on first use (the
     * vigil module's clients): let it, then proxy what it gives. */
    lua_pop(L, 2);
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(1));
  }
  if (lua_type(L, -1) != LUA_TTABLE) {
    return 1;
  }
  lua_pushvalue(L, -1);
  if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) {
    return 1;
  }
  lua_pop(L, 1);
  const char *parent = lua_tostring(L, lua_upvalueindex(3));
  const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
  lua_pushfstring(L, "%s.%s", parent, key);
  vg_sandbox_push_readonly(L, -2, lua_tostring(L, -1));
  lua_remove(L, -2);
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_rawset(L, lua_upvalueindex(2));
  return 1;
}

static int ro_set(lua_State *L)
{
  return luaL_error(L, "attempt to modify read-only table '%s'",
                    lua_tostring(L, lua_upvalueindex(1)));
}

/* __pairs of a proxy: iterate the real table through the proxy so nested values come back
 * proxied too. */
static int ro_next(lua_State *L)
{
  lua_settop(L, 2);
  if (lua_next(L, lua_upvalueindex(1)) == 0) {
    return 0;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  lua_gettable(L, 1); /* through the proxy's __index */
  return 2;
}

static int ro_pairs(lua_State *L)
{
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, ro_next, 1);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static int ro_len(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)lua_rawlen(L, lua_upvalueindex(1)));
  return 1;
}

void vg_sandbox_push_readonly(lua_State *L, int idx, const char *name)
{
  idx = lua_absindex(L, idx);
  lua_newtable(L);          /* proxy */
  lua_createtable(L, 0, 6); /* its metatable */
  lua_pushvalue(L, idx);
  lua_newtable(L); /* cache of nested proxies */
  lua_pushstring(L, name);
  lua_pushcclosure(L, ro_get, 3);
  lua_setfield(L, -2, "__index");
  lua_pushstring(L, name);
  lua_pushcclosure(L, ro_set, 1);
  lua_setfield(L, -2, "__newindex");
  lua_pushvalue(L, idx);
  lua_pushcclosure(L, ro_pairs, 1);
  lua_setfield(L, -2, "__pairs");
  lua_pushvalue(L, idx);
  lua_pushcclosure(L, ro_len, 1);
  lua_setfield(L, -2, "__len");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
}

/* ---- environments ---- */

/* __index of an environment: upvalues (base, env). */
static int env_index(lua_State *L)
{
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) {
    return 1;
  }
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "_G") == 0) {
    lua_pushvalue(L, 1);
    return 1;
  }
  if (lua_toboolean(L, lua_upvalueindex(2))) {
    return luaL_error(L, "undefined global '%s'",
                      lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
  }
  return 1; /* nil */
}

/* __newindex of a strict environment: globals only at the chunk's top level. */
static int env_newindex(lua_State *L)
{
  if (lua_toboolean(L, lua_upvalueindex(1)) && !vg_vm_of(L)->load_phase) {
    return luaL_error(L,
                      "cannot create global '%s' while running: declare it local (state that "
                      "must outlive a run belongs in the store)",
                      lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
  }
  lua_rawset(L, 1);
  return 0;
}

/* Builds the allowlisted globals shared by this VM's sandboxed chunks. [-0, +1, m] */
static void push_base(lua_State *L)
{
  vg_vm_t *vm = vg_vm_of(L);
  if (vm->sandbox_base_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->sandbox_base_ref);
    return;
  }
  static const char *const plain[] = {
    "assert",       "error",        "ipairs",   "next",   "pairs",    "select", "tonumber",
    "tostring",     "type",         "rawequal", "rawlen", "rawget",   "pcall",  "xpcall",
    "setmetatable", "getmetatable", "load",     "print",  "_VERSION", NULL,
  };
  static const char *const libs[] = { "string", "table", "math", "utf8", "os", NULL };
  lua_newtable(L);
  lua_pushglobaltable(L);
  for (int i = 0; plain[i] != NULL; i++) {
    lua_getfield(L, -1, plain[i]);
    lua_setfield(L, -3, plain[i]);
  }
  lua_pop(L, 1);
  push_loaded(L);
  for (int i = 0; libs[i] != NULL; i++) {
    lua_getfield(L, -1, libs[i]);
    vg_sandbox_push_readonly(L, -1, libs[i]);
    lua_setfield(L, -4, libs[i]);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, sb_require_sandboxed);
  lua_setfield(L, -2, "require");
  /* vigil itself, when this VM has the runtime library (the config VM does not) */
  push_loaded(L);
  bool has_core = lua_getfield(L, -1, "vigil.core") != LUA_TNIL;
  lua_pop(L, 2);
  lua_pushcfunction(L, sb_require_sandboxed);
  lua_pushliteral(L, "vigil");
  if (!has_core) {
    lua_pop(L, 2);
  } else if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
    lua_setfield(L, -2, "vigil");
  } else {
    char buf[64];
    vg_log(VG_LOG_ERROR, "vigil module unavailable in the sandbox", "vm", vm->name, "error",
           vg_vm_error_text(L, -1, buf, sizeof(buf)), NULL);
    lua_pop(L, 1);
  }
  lua_pushvalue(L, -1);
  vm->sandbox_base_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void vg_sandbox_push_env(lua_State *L, bool strict)
{
  push_base(L);    /* [base] */
  lua_newtable(L); /* [base, env] */
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, -3);
  lua_pushboolean(L, strict);
  lua_pushcclosure(L, env_index, 2);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, strict);
  lua_pushcclosure(L, env_newindex, 1);
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_remove(L, -2);
}

/* ---- hardening of the real libraries ---- */

static void wrap_field(lua_State *L, int tbl, const char *name, lua_CFunction wrapper)
{
  lua_getfield(L, tbl, name);
  lua_pushcclosure(L, wrapper, 1);
  lua_setfield(L, tbl, name);
}

/* The bounded matcher reports (reason, then NULL) around gsub replacement functions; nested
 * calls nest, so keep a small stack of reasons on the VM. */
static void strlib_noyield(lua_State *L, const char *reason)
{
  vg_vm_t *vm = vg_vm_of(L);
  if (reason != NULL) {
    if (vm->noyield_depth < VG_NOYIELD_MAX) {
      vm->noyield_stack[vm->noyield_depth] = vm->noyield_reason;
    }
    vm->noyield_depth++;
    vm->noyield_reason = reason;
  } else if (vm->noyield_depth > 0) {
    vm->noyield_depth--;
    if (vm->noyield_depth < VG_NOYIELD_MAX) {
      vm->noyield_reason = vm->noyield_stack[vm->noyield_depth];
    }
  }
}

void vg_sandbox_harden(lua_State *L)
{
  vg_strlib_bounded_set_charge(vg_vm_charge);
  vg_strlib_bounded_set_noyield(strlib_noyield);
  push_loaded(L); /* [loaded] */
  int loaded = lua_gettop(L);

  lua_getfield(L, loaded, "string");
  lua_pushnil(L);
  lua_setfield(L, -2, "dump"); /* reachable through ("").dump otherwise */
  vg_strlib_bounded_install(L);
  wrap_field(L, lua_gettop(L), "format", sb_format);
  wrap_field(L, lua_gettop(L), "rep", sb_rep);
  lua_pop(L, 1);
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable"); /* getmetatable("") -> false */
  lua_pop(L, 2);

  lua_getfield(L, loaded, "table");
  wrap_field(L, lua_gettop(L), "sort", sb_sort);
  wrap_field(L, lua_gettop(L), "move", sb_move);
  wrap_field(L, lua_gettop(L), "insert", sb_insert);
  wrap_field(L, lua_gettop(L), "remove", sb_remove);
  wrap_field(L, lua_gettop(L), "concat", sb_concat);
  lua_pop(L, 1);

  static const char *const os_keep[] = { "clock", "date", "difftime", "time", NULL };
  lua_getfield(L, loaded, "os");
  lua_newtable(L);
  for (int i = 0; os_keep[i] != NULL; i++) {
    lua_getfield(L, -2, os_keep[i]);
    lua_setfield(L, -2, os_keep[i]);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, loaded, "os");
  lua_setglobal(L, "os");
  lua_pop(L, 1);

  static const char *const drop[] = { "dofile", "loadfile", NULL };
  for (int i = 0; drop[i] != NULL; i++) {
    lua_pushnil(L);
    lua_setglobal(L, drop[i]);
  }
  static const luaL_Reg wrappers[] = {
    { "pcall", sb_pcall },
    { "xpcall", sb_xpcall },
    { "setmetatable", sb_setmetatable },
    { "load", sb_load },
    { "require", sb_require },
    { "print", sb_print },
    { "tostring", sb_tostring },
    { NULL, NULL },
  };
  lua_pushglobaltable(L);
  luaL_setfuncs(L, wrappers, 0);
  lua_pop(L, 2);
}
