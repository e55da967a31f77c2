/* Engine state that must outlive a restart (DESIGN.md §4: state lives in C and the store,
 * addressed by name): detector series, log analysers. Each engine turns a named object into a
 * versioned blob and back; this module keeps the blobs in the store's `snapshots` table
 * (kind, name, blob, updated_at), written in batches through the writer's group commit and
 * read back once at start. Pure C on the store; no Lua. */
#pragma once

#include <stddef.h>

/* How an engine hands over one named blob (a registry's "collect"): `name` and `blob` are
 * copied before it returns. */
typedef void (*vg_snapshot_emit_fn)(void *ctx, const char *name, const void *blob, size_t len);
