/* The REPL: a Lua prompt on the runtime, standalone (`vigil repl`), as a script runner (stdin
 * not a terminal), or attached to a running daemon over its Unix socket. */
#pragma once

#include "core/config.h"
#include "core/runtime.h"

typedef struct vg_repl_server vg_repl_server_t;

/* `vigil repl [-c FILE]`: a prompt (or a script from stdin) on a local runtime. When
 * `load_policies` is set, the config's policies are loaded too, so vigil.runtime.dispatch
 * can drive them. Returns the process exit status. */
int vg_repl_standalone(const vg_config_t *cfg, bool load_policies);

/* `vigil repl --attach PATH`: a prompt whose lines run inside the daemon. */
int vg_repl_attach(const char *path);

/* The daemon side: listens on `path` (mode 0600). Returns NULL (logged) on failure. */
vg_repl_server_t *vg_repl_server_start(vg_runtime_t *rt, const char *path);
void vg_repl_server_stop(vg_repl_server_t *srv);
