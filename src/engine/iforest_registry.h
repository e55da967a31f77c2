/* Named isolation forests: models that outlive the Lua states using them (DESIGN.md §4, state
 * lives in C and the store, addressed by name). The runtime owns one registry; each entry has
 * a name, its options and the current fitted model (or none yet). A fit replaces the model
 * whole, so a reader sees the old model or the new one, never half of one. Bounded in count
 * and in model bytes. Pure C; used from the loop thread only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/iforest.h"
#include "engine/snapshot.h"

/* Defaults of iforest_registry_new: named forests, and bytes of their models together. */
#define VG_IFOREST_REGISTRY_MAX 1000
#define VG_IFOREST_REGISTRY_BYTES ((size_t)256 << 20)
/* A forest used since its last write is written again after this long (see iforest_named_used):
 * the store prunes a snapshot not written for 30 days, and a model may only be scored. */
#define VG_IFOREST_REFRESH_MS (24LL * 3600 * 1000)

/* A named forest blob: "VGNF", version, flags (bit 0: a model follows), the options
 * (n_estimators, max_samples, max_features, contamination, random_state), then the model as
 * iforest_save() writes it when bit 0 is set. */
#define VG_IFOREST_NAMED_VERSION 1
#define VG_IFOREST_NAMED_HEADER (4 + 4 + 4 + 4 + 4 + 8 + 8 + 8)

typedef struct vg_iforest_registry vg_iforest_registry_t;
typedef struct vg_iforest_named vg_iforest_named_t;

/* A registry of at most `max_count` forests (0: VG_IFOREST_REGISTRY_MAX) whose models take at
 * most `max_bytes` together (0: VG_IFOREST_REGISTRY_BYTES). NULL when out of memory. */
vg_iforest_registry_t *iforest_registry_new(size_t max_count, size_t max_bytes);

/* Frees the registry, every entry and every model; NULL is fine. */
void iforest_registry_free(vg_iforest_registry_t *r);

/* The forest called `name`, or NULL. Entries are never removed: a pointer stays valid as long
 * as the registry. */
vg_iforest_named_t *iforest_registry_get(vg_iforest_registry_t *r, const char *name);

/* Creates the forest `name` (1..1024 bytes) with options `o` and no model yet. Returns NULL with
 * a message in `err` when it exists already, the options are bad (iforest_opts_check), the
 * registry is full or memory is out. */
vg_iforest_named_t *iforest_registry_add(vg_iforest_registry_t *r,
                                         const char *name,
                                         const vg_iforest_opts_t *o,
                                         char *err,
                                         size_t errlen);

size_t iforest_registry_count(const vg_iforest_registry_t *r);
/* Bytes of every model together (iforest_memory), and the cap on them. */
size_t iforest_registry_bytes(const vg_iforest_registry_t *r);
size_t iforest_registry_max_bytes(const vg_iforest_registry_t *r);

/* 0 when `o` is a valid set of options (n_estimators in [1, 100000], max_features in (0, 1],
 * contamination 0 or in (0, 0.5]), else -1 with a message in `err`. */
int iforest_opts_check(const vg_iforest_opts_t *o, char *err, size_t errlen);

const char *iforest_named_name(const vg_iforest_named_t *e);
const vg_iforest_opts_t *iforest_named_opts(const vg_iforest_named_t *e);

/* The current model, NULL until the first fit (or restore with one). It stays valid until the
 * next iforest_named_set or iforest_registry_restore of this name: callers read it again after
 * anything that may run other code (a Lua allocation may run a finalizer that fits). */
const vg_iforest_t *iforest_named_model(const vg_iforest_named_t *e);

/* Fits done so far (iforest_named_set calls that succeeded), 0 after a restore. */
uint64_t iforest_named_fits(const vg_iforest_named_t *e);

/* Replaces the model of `e` with `f` (fitted with e's options) and marks it changed; the old
 * model is freed. Returns 0 (the registry now owns f), or -1 with a message in `err` when the
 * models would pass the registry's byte cap (the caller still owns f; the old model stays). */
int iforest_named_set(
    vg_iforest_registry_t *r, vg_iforest_named_t *e, vg_iforest_t *f, char *err, size_t errlen);

/* Records a use (a fit or a score) at `now_ms` (the runtime's clock, milliseconds). A forest
 * used VG_IFOREST_REFRESH_MS or more after its last write (or, when restored, after its first
 * use) is collected again though it did not change, so the store keeps a model that is only
 * scored. */
void iforest_named_used(vg_iforest_named_t *e, int64_t now_ms);

/* ---- persistence: what changed goes to the store, and comes back at start ---- */

/* Emits a blob of every forest changed (created, fitted) since the last collect, or due for a
 * refresh (iforest_named_used), and marks them clean. A forest whose blob cannot be made (out of
 * memory) stays changed for the next collect. Returns how many were emitted. */
size_t iforest_registry_collect(vg_iforest_registry_t *r, vg_snapshot_emit_fn emit, void *ctx);

/* Creates (or replaces the options and model of) the forest `name` from a blob made by
 * iforest_registry_collect. The forest is left clean. Returns 0, or -1 with a message in `err`
 * (bad name, truncated, corrupt or newer-version blob, registry full, byte cap, out of memory);
 * then nothing changed. */
int iforest_registry_restore(vg_iforest_registry_t *r,
                             const char *name,
                             const void *blob,
                             size_t len,
                             char *err,
                             size_t errlen);
