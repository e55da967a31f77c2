/* What the runtime learned, kept across restarts (DESIGN.md §4): the named detector series of
 * vigil.detect.series and the named log analysers of vigil.logs, written to the store
 * (engine/snapshot.h) and restored at start before any policy runs, so a restart resumes
 * rather than relearns. Only what changed since the last write is written. Loop thread only. */
#pragma once

#include <stdint.h>

#include "core/runtime.h"
#include "engine/store.h"

typedef struct vg_persist vg_persist_t;

/* Restores every stored snapshot into the runtime's registries (running the loop until the
 * reads are done; a blob an engine refuses is logged and skipped), then writes what changed
 * every `every_ms`. NULL when out of memory. */
vg_persist_t *vg_persist_start(vg_runtime_t *rt, vg_store_t *store, uint64_t every_ms);

/* Objects restored at start, and written, failed to write or dropped since. */
typedef struct {
  uint64_t restored, refused, written, write_errors, dropped;
} vg_persist_stats_t;
void vg_persist_stats(const vg_persist_t *p, vg_persist_stats_t *out);

/* Stops the timer and writes what changed one last time; frees itself once that write is
 * done, so the loop must run before the store closes. NULL is fine. */
void vg_persist_stop(vg_persist_t *p);
