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

#include <stdint.h>

#include "engine/store.h"

/* ---- writing: collect into a batch, then one write ---- */

typedef struct vg_snapshot_batch vg_snapshot_batch_t;

/* An empty batch; NULL when out of memory. */
vg_snapshot_batch_t *vg_snapshot_batch_new(void);

/* The kind the next blobs belong to ("series", "logs"): 1..64 bytes. */
void vg_snapshot_batch_kind(vg_snapshot_batch_t *b, const char *kind);

/* A vg_snapshot_emit_fn (ctx = the batch): adds a copy of the blob under the current kind and
 * `name` (1..1024 bytes). A blob that cannot be copied (out of memory) is counted as dropped
 * and the batch goes on: the next collect of a still-changing object brings it again. */
void vg_snapshot_batch_add(void *batch, const char *name, const void *blob, size_t len);

/* Blobs in the batch, and blobs dropped from it. */
size_t vg_snapshot_batch_count(const vg_snapshot_batch_t *b);
size_t vg_snapshot_batch_dropped(const vg_snapshot_batch_t *b);

/* Frees a batch not handed to vg_snapshot_write; NULL is fine. */
void vg_snapshot_batch_free(vg_snapshot_batch_t *b);

/* Writes the batch in the next group commit (upsert by kind and name, stamped `now_ms`) and
 * deletes the snapshots not written since `prune_before_ms` (0: none), a state nobody has fed
 * for that long. Takes the batch in every case. Returns 0 (then `done` runs exactly once, on
 * the loop, after the commit or its failure), or a negative errno from vg_store_call. */
int vg_snapshot_write(vg_store_t *s,
                      vg_snapshot_batch_t *b,
                      int64_t now_ms,
                      int64_t prune_before_ms,
                      vg_store_done_fn done,
                      void *ud);

/* ---- reading: every blob of a kind, once at start ---- */

/* Called on the loop for each stored blob of the kind asked for, oldest write first. */
typedef void (*vg_snapshot_each_fn)(void *ud, const char *name, const void *blob, size_t len);

/* Reads the snapshots of `kind` on the thread pool, then on the loop calls `each` for every
 * one and `done` once. Returns 0, or a negative errno (then no callback runs). */
int vg_snapshot_load(
    vg_store_t *s, const char *kind, vg_snapshot_each_fn each, vg_store_done_fn done, void *ud);
