/* Keeps the runtime's registries in the store: one table of kinds, each a registry with a
 * "collect what changed" and a "restore one" (the engines own their blob formats). Writes are
 * one batch per tick through the group commit; a tick while the last write is still in flight
 * is skipped, so writes never pile up behind a slow disk. */
#include "core/persist.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/log.h"
#include "engine/detect.h"
#include "engine/iforest_registry.h"
#include "engine/logan.h"
#include "engine/snapshot.h"

/* A snapshot nobody has written for this long belongs to an object no policy feeds any more. */
#define PRUNE_AFTER_MS (30LL * 24 * 3600 * 1000)

typedef struct {
  const char *kind;
  size_t (*collect)(vg_runtime_t *rt, vg_snapshot_emit_fn emit, void *ctx);
  int (*restore)(
      vg_runtime_t *rt, const char *name, const void *blob, size_t len, char *err, size_t errlen);
} kind_t;

static size_t series_collect(vg_runtime_t *rt, vg_snapshot_emit_fn emit, void *ctx)
{
  vg_series_registry_t *r = vg_runtime_series(rt);
  return r != NULL ? detect_registry_collect(r, emit, ctx) : 0;
}

static int series_restore(
    vg_runtime_t *rt, const char *name, const void *blob, size_t len, char *err, size_t errlen)
{
  vg_series_registry_t *r = vg_runtime_series(rt);
  if (r == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return detect_registry_restore(r, name, blob, len, err, errlen);
}

static size_t logs_collect(vg_runtime_t *rt, vg_snapshot_emit_fn emit, void *ctx)
{
  vg_logan_registry_t *r = vg_runtime_logs(rt);
  return r != NULL ? logan_registry_collect(r, emit, ctx) : 0;
}

static int logs_restore(
    vg_runtime_t *rt, const char *name, const void *blob, size_t len, char *err, size_t errlen)
{
  vg_logan_registry_t *r = vg_runtime_logs(rt);
  if (r == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return logan_registry_restore(r, name, blob, len, err, errlen);
}

static size_t forests_collect(vg_runtime_t *rt, vg_snapshot_emit_fn emit, void *ctx)
{
  vg_iforest_registry_t *r = vg_runtime_forests(rt);
  return r != NULL ? iforest_registry_collect(r, emit, ctx) : 0;
}

static int forests_restore(
    vg_runtime_t *rt, const char *name, const void *blob, size_t len, char *err, size_t errlen)
{
  vg_iforest_registry_t *r = vg_runtime_forests(rt);
  if (r == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return iforest_registry_restore(r, name, blob, len, err, errlen);
}

static const kind_t kinds[] = {
  { "series", series_collect, series_restore },
  { "logs", logs_collect, logs_restore },
  { "forests", forests_collect, forests_restore },
};
#define NKINDS (sizeof kinds / sizeof kinds[0])

struct vg_persist {
  vg_runtime_t *rt;
  vg_store_t *store;
  vg_timer_t *timer;
  bool writing, stopping;
  vg_persist_stats_t stats;
  /* loading */
  const kind_t *loading;
  bool loaded;
  int load_status;
};

/* ---- start: restore ---- */

static void on_blob(void *ud, const char *name, const void *blob, size_t len)
{
  vg_persist_t *p = ud;
  char err[256] = "";
  if (p->loading->restore(p->rt, name, blob, len, err, sizeof err) == 0) {
    p->stats.restored++;
    return;
  }
  p->stats.refused++;
  vg_log(VG_LOG_WARN, "a stored snapshot was refused; it starts afresh", "kind", p->loading->kind,
         "name", name, "error", err, NULL);
}

static void on_loaded(void *ud, int status, const char *err)
{
  vg_persist_t *p = ud;
  p->loaded = true;
  p->load_status = status;
  if (status != 0) {
    vg_log(VG_LOG_ERROR, "cannot read the stored snapshots; they start afresh", "kind",
           p->loading->kind, "error", err != NULL ? err : "?", NULL);
  }
}

static void restore_all(vg_persist_t *p)
{
  for (size_t i = 0; i < NKINDS; i++) {
    p->loading = &kinds[i];
    p->loaded = false;
    if (vg_snapshot_load(p->store, kinds[i].kind, on_blob, on_loaded, p) != 0) {
      vg_log(VG_LOG_ERROR, "cannot read the stored snapshots; they start afresh", "kind",
             kinds[i].kind, NULL);
      continue;
    }
    while (!p->loaded && uv_run(p->rt->loop, UV_RUN_ONCE) != 0) {
    }
  }
  /* restoring is not a change: the first write carries only what policies change from here */
  vg_snapshot_batch_t *b = vg_snapshot_batch_new();
  for (size_t i = 0; b != NULL && i < NKINDS; i++) {
    vg_snapshot_batch_kind(b, kinds[i].kind);
    kinds[i].collect(p->rt, vg_snapshot_batch_add, b);
  }
  vg_snapshot_batch_free(b);
  char n[24], r[24];
  snprintf(n, sizeof n, "%" PRIu64, p->stats.restored);
  snprintf(r, sizeof r, "%" PRIu64, p->stats.refused);
  vg_log(VG_LOG_INFO, "learned state restored", "objects", n, "refused", r, NULL);
}

/* ---- writing what changed ---- */

static bool write_changed(vg_persist_t *p);

static void on_written(void *ud, int status, const char *err)
{
  vg_persist_t *p = ud;
  p->writing = false;
  if (status != 0) {
    p->stats.write_errors++;
    vg_log(VG_LOG_ERROR, "cannot write the learned state", "error", err != NULL ? err : "?", NULL);
  }
  /* stopping: what changed while this write was in flight goes too, then we are done */
  if (p->stopping && !write_changed(p)) {
    free(p);
  }
}

/* Collects every kind into one batch and writes it. False when nothing was started. */
static bool write_changed(vg_persist_t *p)
{
  if (p->writing) {
    return false;
  }
  vg_snapshot_batch_t *b = vg_snapshot_batch_new();
  if (b == NULL) {
    return false;
  }
  for (size_t i = 0; i < NKINDS; i++) {
    vg_snapshot_batch_kind(b, kinds[i].kind);
    kinds[i].collect(p->rt, vg_snapshot_batch_add, b);
  }
  p->stats.dropped += vg_snapshot_batch_dropped(b);
  size_t n = vg_snapshot_batch_count(b);
  int64_t now = (int64_t)(vg_clock_now(p->rt) * 1000.0);
  if (n == 0) {
    vg_snapshot_batch_free(b);
    return false;
  }
  p->writing = true;
  if (vg_snapshot_write(p->store, b, now, now - PRUNE_AFTER_MS, on_written, p) != 0) {
    p->writing = false;
    p->stats.write_errors++;
    return false;
  }
  p->stats.written += n;
  return true;
}

static void tick(vg_timer_t *timer, void *ud)
{
  (void)timer;
  write_changed(ud);
}

vg_persist_t *vg_persist_start(vg_runtime_t *rt, vg_store_t *store, uint64_t every_ms)
{
  vg_persist_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    return NULL;
  }
  p->rt = rt;
  p->store = store;
  restore_all(p);
  p->timer = vg_timer_start(rt, every_ms, every_ms, tick, p);
  if (p->timer == NULL) {
    free(p);
    return NULL;
  }
  return p;
}

void vg_persist_stats(const vg_persist_t *p, vg_persist_stats_t *out)
{
  *out = p->stats;
}

void vg_persist_stop(vg_persist_t *p)
{
  if (p == NULL) {
    return;
  }
  vg_timer_stop(p->timer);
  p->timer = NULL;
  p->stopping = true;
  if (!p->writing && !write_changed(p)) {
    free(p);
  }
}
