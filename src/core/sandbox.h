/* The policy sandbox (DESIGN.md §4, notes/reliability-research.md §2). The real libraries of
 * every VM are hardened before any code runs; policy chunks then see only an allowlist of
 * globals, read-only proxies of the libraries and of vigil.*, and a strict environment of
 * their own. Budget kills cannot be caught by pcall/xpcall. */
#pragma once

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

/* Strips and wraps the real libraries of a fresh VM: no string.dump, bounded pattern
 * matching, no %p in string.format, os reduced to time, kill-aware pcall/xpcall, setmetatable
 * that refuses __gc, text-only load, our require/print/tostring. [-0, +0, m] */
void vg_sandbox_harden(lua_State *L);

/* Pushes a new environment for one sandboxed chunk. A strict environment refuses reads of
 * undefined globals and, outside the chunk's top level, new globals. [-0, +1, m] */
void vg_sandbox_push_env(lua_State *L, bool strict);

/* Pushes a read-only proxy of the table at idx (nested tables are proxied on access); writes
 * raise "attempt to modify read-only table 'name'". [-0, +1, m] */
void vg_sandbox_push_readonly(lua_State *L, int idx, const char *name);

/* Loads file `path` as text into a function whose _ENV is the environment at the top of the
 * stack (popped). On success pushes the function and returns LUA_OK; else pushes a message
 * "path:line: ..." and returns an error status. [-1, +1, m] */
int vg_sandbox_loadfile(lua_State *L, const char *path, const char *chunkname);

/* Runs `fn` with vm->noyield_reason set to `reason`, restoring it whatever happens. */
int vg_sandbox_call_noyield(lua_State *L, int nargs, int nresults, const char *reason);

/* Registers a C module that require("name") returns (e.g. "vigil.core"). [-1, +0, m] */
void vg_sandbox_register(lua_State *L, const char *name);

/* Shown by tostring instead of an address: "table: 5f3a9c21" (keyed, not reversible). */
const char *vg_sandbox_tostring(lua_State *L, int idx, size_t *len);
