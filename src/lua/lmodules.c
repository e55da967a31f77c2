/* The table of C-implemented Lua modules; each VM registers them at creation. */
#include <lauxlib.h>

#include "core/sandbox.h"
#include "lua/ldetect.h"
#include "lua/lvigil.h"

void vg_open_modules(lua_State *L)
{
  static const luaL_Reg modules[] = {
    { "vigil.core", vg_open_vigil_core },
    { "vigil.httpc", vg_open_vigil_httpc },
    { "vigil.logs.core", vg_open_vigil_logs },
    { "vigil.detect", vg_open_vigil_detect },
    { "vigil.crypto", vg_open_vigil_crypto },
    { "vigil.actions.core", vg_open_vigil_actions },
    { "vigil.memory.core", vg_open_vigil_memory },
    { "vigil.logs.tail", vg_open_vigil_tail },
    { NULL, NULL },
  };
  for (const luaL_Reg *m = modules; m->name != NULL; m++) {
    lua_pushcfunction(L, m->func);
    lua_call(L, 0, 1);
    vg_sandbox_register(L, m->name);
  }
}

void vg_open_repl_modules(lua_State *L)
{
  lua_pushcfunction(L, vg_open_vigil_runtime);
  lua_call(L, 0, 1);
  vg_sandbox_register(L, "vigil.runtime");
}
