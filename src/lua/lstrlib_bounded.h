/* string.find/match/gmatch/gsub for the policy sandbox, run by the step-bounded matcher in
 * engine/lpattern.c: same results and errors as Lua 5.4's, plus an error when a call exceeds its
 * step budget, so an attacker-controlled pattern or subject cannot stall the daemon. */
#pragma once

#include <lua.h>
#include <stdint.h>

/* Receives the matcher steps a call consumed (never 0), so the runtime can charge them to the
 * task's instruction budget. May raise a Lua error; must leave the stack as it found it. */
typedef void (*vg_pattern_charge_fn)(lua_State *L, uint64_t steps);

/* Told when a gsub replacement function starts (`reason` is a static string such as "inside a
 * string.gsub replacement function") and when it ends, normally or by an error (`reason` NULL).
 * Calls come in strict pairs, nested when gsub is used inside a replacement function. Must not
 * raise. */
typedef void (*vg_noyield_fn)(lua_State *L, const char *reason);

/* Replaces find, match, gmatch and gsub in the table at the top of the stack with the bounded
 * versions. [-0, +0, e] */
void vg_strlib_bounded_install(lua_State *L);

/* Process-wide settings, meant to be set once at start-up before any VM runs. */
void vg_strlib_bounded_set_charge(vg_pattern_charge_fn fn); /* NULL: charge nothing */
void vg_strlib_bounded_set_noyield(vg_noyield_fn fn);       /* NULL: no notification */
void vg_strlib_bounded_set_limit(uint64_t steps);           /* 0: LPATTERN_DEFAULT_STEP_LIMIT */
uint64_t vg_strlib_bounded_limit(void);                     /* the limit in force */
