/* libFuzzer target: arbitrary bytes as a policy file. Compiles them as sandboxed text, runs
 * the top level under the load budget, and validates whatever table comes back, exactly as
 * the daemon would. Nothing may crash, leak or hang (budgets bound every run). */
#include <lauxlib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

#include "core/policy.h"
#include "core/runtime.h"
#include "core/sandbox.h"
#include "core/vm.h"
#include "lua/lvigil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_p(lua_State *L)
{
  const char *src = lua_touserdata(L, 1);
  size_t len = (size_t)lua_tointeger(L, 2);
  vg_vm_t *vm = vg_vm_of(L);
  vg_open_modules(L);
  if (vg_vm_load_text(L, src, len, "=fuzz") != LUA_OK) {
    return 0; /* a syntax error is a fine outcome */
  }
  vg_sandbox_push_env(L, true);
  lua_setupvalue(L, -2, 1);
  vg_budget_t budget = { .instr_limit = 200000,
                         .slice_ns = 200000000ULL,
                         .slice_start = uv_hrtime() };
  vm->budget = &budget;
  vm->load_phase = true;
  lua_call(L, 0, 1);
  vm->load_phase = false;
  if (lua_type(L, -1) == LUA_TTABLE) {
    char *name = NULL;
    vg_matchers_t *m = vg_policy_validate_table(L, -1, "fuzz.lua", NULL, &name);
    labelmatch_free(m);
    free(name);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static vg_runtime_t *rt; /* one runtime for the process, as in the daemon */
  if (rt == NULL) {
    rt = vg_runtime_new();
  }
  vg_limits_t limits = { .memory = 16u << 20 };
  vg_vm_t *vm = vg_vm_new(rt, "fuzz", &limits);
  if (vm == NULL) {
    return 0;
  }
  lua_pushcfunction(vm->L, run_p);
  lua_pushlightuserdata(vm->L, (void *)data);
  lua_pushinteger(vm->L, (lua_Integer)size);
  (void)lua_pcall(vm->L, 2, 0, 0);
  vm->budget = NULL;
  vm->load_phase = false;
  vg_vm_free(vm);
  return 0;
}
