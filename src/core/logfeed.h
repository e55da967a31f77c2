/* The daemon's log tails (the sidecar case): each analyser declared in the config with
 * `tail = "/path"` gets that file followed (engine/tail.h: rotation, truncation, partial lines)
 * and every new line added to it, stamped with the time it was read. Loop thread only. */
#pragma once

#include <stdint.h>

#include "core/runtime.h"

typedef struct vg_logfeed vg_logfeed_t;

/* Starts a tail for every declared analyser with a `tail` in rt->config (an analyser that
 * cannot be created or a file that cannot be followed is logged and skipped). NULL when there
 * is nothing to follow or memory runs out. */
vg_logfeed_t *vg_logfeed_start(vg_runtime_t *rt);

/* Lines fed and lines the analysers refused, over every tail. */
void vg_logfeed_stats(const vg_logfeed_t *f, uint64_t *lines, uint64_t *refused);

/* Stops every tail; the memory goes once libuv has released their handles. NULL is fine. */
void vg_logfeed_stop(vg_logfeed_t *f);
