/* The Lua runtime library (the files under lua/vigil) compiled into the binary by
 * cmake/EmbedLua.cmake. */
#pragma once

#include <stddef.h>

typedef struct {
  const char *module;    /* "vigil.test" */
  const char *chunkname; /* "@lua/vigil/test.lua", so tracebacks name the source file */
  const char *source;
  size_t len;
} vg_embedded_t;

/* Terminated by an entry whose module is NULL. */
extern const vg_embedded_t vg_embedded_lua[];

/* Returns the embedded module called `module`, or NULL. */
const vg_embedded_t *vg_embedded_find(const char *module);
