/* Differences between Lua 5.4 releases. Debian 12 ships 5.4.4, which has lua_resetthread but
 * not lua_closethread (5.4.6). */
#pragma once

#include <lua.h>

#if LUA_VERSION_RELEASE_NUM >= 50406
#  define vg_closethread(co, from) lua_closethread((co), (from))
#else
#  define vg_closethread(co, from) ((void)(from), lua_resetthread(co))
#endif
