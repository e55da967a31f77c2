/* Lua modules implemented in C, and helpers shared by the bindings. */
#pragma once

#include <lua.h>
#include <stdint.h>

/* luaopen-style constructors, registered as require-able modules by vg_open_modules(). */
int vg_open_vigil_core(lua_State *L);
int vg_open_vigil_httpc(lua_State *L);   /* the C half of vigil.http (lua/vigil/http.lua) */
int vg_open_vigil_logs(lua_State *L);    /* vigil.logs.core, the C half of lua/vigil/logs.lua */
int vg_open_vigil_crypto(lua_State *L);  /* sha256 and hmac_sha256 as hex (src/engine/sha256.c) */
int vg_open_vigil_actions(lua_State *L); /* vigil.actions.core (lua/vigil/actions.lua) */
int vg_open_vigil_memory(lua_State *L);  /* vigil.memory.core (lua/vigil/memory.lua) */
int vg_open_vigil_runtime(lua_State *L); /* REPL VMs only: see vg_open_repl_modules */
int vg_open_vigil_testing(lua_State *L); /* spec VMs only */
/* vigil.logs.tail: following a log file (src/lua/ltail.c) */
int vg_open_vigil_tail(lua_State *L);

/* Registers every C module of vigil in the VM (vigil.core, ...). [-0, +0, m] */
void vg_open_modules(lua_State *L);

/* Registers the modules only operator VMs get (vigil.runtime). [-0, +0, m] */
void vg_open_repl_modules(lua_State *L);

/* Duration argument (number of seconds, or "30s", "5m", "1h30m") in ms; raises on bad input. */
uint64_t vg_check_duration_ms(lua_State *L, int arg);
