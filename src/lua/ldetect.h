/* vigil.detect: the binding of the detectors (src/engine/{iforest,detect,forecast}.c). */
#pragma once

#include <lua.h>

/* luaopen-style constructor of the vigil.detect module. [-0, +1, m] */
int vg_open_vigil_detect(lua_State *L);
