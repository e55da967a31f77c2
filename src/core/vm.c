/* Lua state factory: capped allocator, budget hook, panic/warn handlers, and the few helpers
 * every part of the runtime needs to call into Lua without letting it take the process down. */
#include "core/vm.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/every.h"
#include "core/log.h"
#include "core/sandbox.h"
#include "core/task.h"

int luaopen_cjson_safe(lua_State *L); /* Debian's liblua5.4-cjson.a */

static const char kill_key = 'k'; /* its address is the uncatchable-error marker */

/* ---- allocator ---- */

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
  vg_vm_t *vm = ud;
  size_t old = ptr ? osize : 0; /* for new blocks osize is a type code */
  if (nsize == 0) {
    free(ptr);
    vm->mem_used -= old;
    return NULL;
  }
  if (nsize > old) { /* Lua assumes shrinking never fails: only growth is checked */
    vm->alloc_count++;
    bool inject = vm->alloc_fail_at != 0 && vm->alloc_count >= vm->alloc_fail_at;
    bool over = vm->limits.memory != 0 && vm->mem_used - old + nsize > vm->limits.memory;
    if (inject || over) {
      vm->alloc_failed = true;
      if (vm->budget != NULL && vm->budget->killed == VG_KILL_NONE) {
        vm->budget->killed = VG_KILL_MEMORY;
      }
      return NULL;
    }
  }
  void *np = realloc(ptr, nsize);
  if (np == NULL) {
    return NULL;
  }
  vm->mem_used = vm->mem_used - old + nsize;
  if (vm->mem_used > vm->mem_peak) {
    vm->mem_peak = vm->mem_used;
  }
  return np;
}

/* ---- budget hook ---- */

static void budget_hook(lua_State *L, lua_Debug *ar)
{
  (void)ar;
  vg_vm_t *vm = vg_vm_of(L);
  vg_budget_t *b = vm->budget;
  int requested = atomic_exchange(&vm->interrupt, VG_KILL_NONE);
  if (b == NULL) {
    return; /* trusted code (VM set-up); the watchdog handles it at the loop level */
  }
  if (requested != VG_KILL_NONE && b->killed == VG_KILL_NONE) {
    b->killed = (vg_kill_t)requested;
  }
  if (b->killed == VG_KILL_NONE) {
    b->instr_used += VG_HOOK_STEP;
    if (b->instr_limit != 0 && b->instr_used > b->instr_limit) {
      b->killed = VG_KILL_INSTRUCTIONS;
    } else if (b->slice_ns != 0 && uv_hrtime() - b->slice_start > b->slice_ns) {
      b->killed = VG_KILL_SLICE;
    }
  }
  if (b->killed != VG_KILL_NONE) {
    /* From now on every instruction raises: handlers and loops around pcall get nowhere. */
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    vg_vm_push_kill(L);
    lua_error(L);
  }
}

void vg_vm_push_kill(lua_State *L)
{
  lua_pushlightuserdata(L, (void *)&kill_key);
}

bool vg_vm_is_kill(lua_State *L, int idx)
{
  return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == &kill_key;
}

bool vg_vm_killed(lua_State *L)
{
  vg_vm_t *vm = vg_vm_of(L);
  return vm->budget != NULL && vm->budget->killed != VG_KILL_NONE;
}

void vg_vm_interrupt(vg_vm_t *vm, lua_State *running, vg_kill_t why)
{
  atomic_store(&vm->interrupt, (int)why);
  lua_sethook(running, budget_hook, LUA_MASKCOUNT, 1);
}

/* The head of struct lua_State in every Lua 5.4 release (lstate.h): CommonHeader (next, tt,
 * marked), then status and allowhook. Only reenable_hooks reads it. */
typedef struct {
  void *next;
  unsigned char tt, marked, status, allowhook;
} lua_state_head_t;

/* A hook that raises (our kill) never returns to luaD_hook, which is what sets allowhook back
 * to 1; luaD_pcall and a yieldable pcall restore it while unwinding, but lua_resume does not.
 * So a task killed outside any pcall is left with hooks off, and the <close> handlers that
 * closing its thread runs could loop forever (reliability-research.md §2.5 B10). Lua has no
 * API to turn them back on, so set the flag directly, after checking that the bytes around
 * it are what that layout says (a thread, with the status lua_status reports). */
static void reenable_hooks(lua_State *co)
{
  unsigned char *head = (unsigned char *)co;
  int status = lua_status(co);
  if (head[offsetof(lua_state_head_t, tt)] == LUA_TTHREAD &&
      head[offsetof(lua_state_head_t, status)] == status &&
      head[offsetof(lua_state_head_t, allowhook)] == 0) {
    head[offsetof(lua_state_head_t, allowhook)] = 1;
  }
}

void vg_vm_arm_hook(lua_State *co)
{
  int status = lua_status(co);
  if (status != LUA_OK && status != LUA_YIELD) {
    reenable_hooks(co); /* a dead thread about to be closed: its handlers must stay bounded */
  }
  lua_sethook(co, budget_hook, LUA_MASKCOUNT, VG_HOOK_STEP);
}

void vg_vm_charge(lua_State *L, uint64_t steps)
{
  vg_vm_t *vm = vg_vm_of(L);
  vg_budget_t *b = vm->budget;
  if (b == NULL || b->instr_limit == 0) {
    return;
  }
  uint64_t room = b->instr_used < b->instr_limit ? b->instr_limit - b->instr_used : 0;
  b->instr_used += steps <= room ? steps : room + 1; /* saturates: steps may be ~2^64 */
  if (steps > room && b->killed == VG_KILL_NONE) {
    b->killed = VG_KILL_INSTRUCTIONS;
  }
  if (b->killed != VG_KILL_NONE) {
    /* Raise now rather than at the next instruction: the caller is about to do the work it
     * was charged for in C, where the hook cannot stop it. */
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    vg_vm_push_kill(L);
    lua_error(L);
  }
}

const char *vg_kill_reason(vg_kill_t why, char *buf, size_t len)
{
  switch (why) {
    case VG_KILL_INSTRUCTIONS:
      snprintf(buf, len, "instruction budget exceeded");
      break;
    case VG_KILL_SLICE:
      snprintf(buf, len, "ran too long without yielding (time slice exceeded)");
      break;
    case VG_KILL_MEMORY:
      snprintf(buf, len, "memory limit reached");
      break;
    case VG_KILL_CANCELLED:
      snprintf(buf, len, "cancelled");
      break;
    case VG_KILL_WATCHDOG:
      snprintf(buf, len, "stopped by the watchdog: the event loop was stalled");
      break;
    default:
      snprintf(buf, len, "killed");
      break;
  }
  return buf;
}

/* ---- panic and warnings ---- */

static int vm_panic(lua_State *L)
{
  char buf[512];
  vg_log(VG_LOG_ERROR, "lua panic: unprotected error", "vm", vg_vm_of(L)->name, "error",
         vg_vm_error_text(L, -1, buf, sizeof(buf)), NULL);
  abort(); /* a bug in vigil: every call into Lua must be protected */
}

static void vm_warn(void *ud, const char *msg, int tocont)
{
  (void)tocont;
  vg_vm_t *vm = ud;
  vg_log(VG_LOG_WARN, "lua warning", "vm", vm->name, "warning", msg, NULL);
}

/* ---- construction ---- */

vg_vm_t *vg_vm_of(lua_State *L)
{
  return *(vg_vm_t **)lua_getextraspace(L);
}

static int vm_open(lua_State *L)
{
  static const luaL_Reg libs[] = {
    { LUA_GNAME, luaopen_base },
    { LUA_STRLIBNAME, luaopen_string },
    { LUA_TABLIBNAME, luaopen_table },
    { LUA_MATHLIBNAME, luaopen_math },
    { LUA_UTF8LIBNAME, luaopen_utf8 },
    { LUA_OSLIBNAME, luaopen_os },
    { NULL, NULL },
  };
  for (const luaL_Reg *lib = libs; lib->func; lib++) {
    luaL_requiref(L, lib->name, lib->func, 1);
    lua_pop(L, 1);
  }
  luaL_requiref(L, "cjson.safe", luaopen_cjson_safe, 0);
  lua_pop(L, 1);
  vg_sandbox_harden(L); /* strips the real libraries before any other code runs */
  return 0;
}

vg_vm_t *vg_vm_new(vg_runtime_t *rt, const char *name, const vg_limits_t *limits)
{
  vg_vm_t *vm = calloc(1, sizeof(*vm));
  if (vm == NULL) {
    return NULL;
  }
  vm->rt = rt;
  vm->sandbox_base_ref = LUA_NOREF;
  vm->id_key = (uint32_t)(uv_hrtime() * 2654435761u) ^ (uint32_t)(uintptr_t)vm;
  vm->name = strdup(name);
  if (limits != NULL) {
    vm->limits = *limits;
  }
  if (vm->name == NULL) {
    goto fail;
  }
  vm->L = lua_newstate(vm_alloc, vm);
  if (vm->L == NULL) {
    goto fail;
  }
  *(vg_vm_t **)lua_getextraspace(vm->L) = vm; /* copied into every thread created later */
  lua_atpanic(vm->L, vm_panic);
  lua_setwarnf(vm->L, vm_warn, vm);
  /* The hook is in place before any code runs; new threads inherit it. */
  lua_sethook(vm->L, budget_hook, LUA_MASKCOUNT, VG_HOOK_STEP);
  lua_gc(vm->L, LUA_GCGEN, 0, 0);
  lua_pushcfunction(vm->L, vm_open);
  if (lua_pcall(vm->L, 0, 0, 0) != LUA_OK) {
    goto fail;
  }
  return vm;
fail:
  vg_vm_free(vm);
  return NULL;
}

void vg_vm_free(vg_vm_t *vm)
{
  if (vm == NULL) {
    return;
  }
  vm->closing = true;
  if (vm->L != NULL) {
    vg_task_cancel_all(vm, "VM closed");
    vg_every_stop_all(vm);
    vm->budget = NULL;
    lua_close(vm->L);
  }
  free(vm->lib_dir);
  free(vm->name);
  free(vm);
}

/* ---- protected calls ---- */

const char *vg_vm_error_text(lua_State *L, int idx, char *buf, size_t len)
{
  switch (lua_type(L, idx)) {
    case LUA_TSTRING:
      return lua_tostring(L, idx);
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        snprintf(buf, len, "%lld", (long long)lua_tointeger(L, idx));
      } else {
        snprintf(buf, len, "%.14g", lua_tonumber(L, idx));
      }
      return buf;
    case LUA_TLIGHTUSERDATA:
      if (vg_vm_is_kill(L, idx)) {
        vg_budget_t *b = vg_vm_of(L)->budget;
        char why[96];
        snprintf(buf, len, "killed: %s",
                 vg_kill_reason(b ? b->killed : VG_KILL_NONE, why, sizeof(why)));
        return buf;
      }
      break;
    case LUA_TNONE:
    case LUA_TNIL:
      return "nil";
    default:
      break;
  }
  /* Never call __tostring here: it is policy code and could loop or raise. */
  snprintf(buf, len, "(error object is a %s value)", luaL_typename(L, idx));
  return buf;
}

int vg_vm_load_handler(lua_State *L)
{
  if (!vg_vm_is_kill(L, 1)) {
    return 1; /* an ordinary error already says where it happened */
  }
  vg_budget_t *b = vg_vm_of(L)->budget; /* still set: the stack has not unwound yet */
  char why[96];
  vg_kill_reason(b ? b->killed : VG_KILL_NONE, why, sizeof(why));
  /* The innermost Lua line running (a C function such as string.rep may be on top). */
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
      const char *src = ar.source[0] == '@' ? ar.source + 1 : ar.short_src;
      lua_pushfstring(L, "%s:%d: loading stopped: %s", src, ar.currentline, why);
      return 1;
    }
  }
  lua_pushfstring(L, "loading stopped: %s", why);
  return 1;
}

static int traceback_handler(lua_State *L)
{
  if (vg_vm_is_kill(L, 1)) {
    return 1; /* keep the marker so callers can tell a kill from an error */
  }
  char buf[128];
  const char *msg = vg_vm_error_text(L, 1, buf, sizeof(buf));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int vg_vm_pcall(lua_State *L, int nargs, int nresults)
{
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback_handler);
  lua_insert(L, base);
  int status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return status;
}

int vg_vm_load_text(lua_State *L, const char *src, size_t len, const char *chunkname)
{
  return luaL_loadbufferx(L, src, len, chunkname, "t");
}
