/* Engine state kept across restarts: named blobs per kind in the `snapshots` table (schema 7).
 * A batch is written in the writer's group commit (one upsert per blob); loading reads a kind
 * on the thread pool and hands the blobs to the loop, where the engines restore them. The
 * blobs are opaque here: each engine versions and checks its own. */
#include "engine/snapshot.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIND_MAX 64
#define NAME_MAX_BYTES 1024

typedef struct {
  char *kind, *name;
  void *blob;
  size_t len;
} entry_t;

struct vg_snapshot_batch {
  char kind[KIND_MAX + 1];
  entry_t *v;
  size_t n, cap, dropped;
  int64_t now_ms, prune_before_ms;
  vg_store_done_fn done;
  void *ud;
};

vg_snapshot_batch_t *vg_snapshot_batch_new(void)
{
  return calloc(1, sizeof(vg_snapshot_batch_t));
}

void vg_snapshot_batch_kind(vg_snapshot_batch_t *b, const char *kind)
{
  snprintf(b->kind, sizeof b->kind, "%s", kind);
}

static char *dup_bytes(const void *p, size_t len)
{
  char *d = malloc(len + 1);
  if (d != NULL) {
    memcpy(d, p, len);
    d[len] = '\0';
  }
  return d;
}

void vg_snapshot_batch_add(void *batch, const char *name, const void *blob, size_t len)
{
  vg_snapshot_batch_t *b = batch;
  size_t nlen = strlen(name);
  if (b->kind[0] == '\0' || nlen == 0 || nlen > NAME_MAX_BYTES || blob == NULL) {
    b->dropped++;
    return;
  }
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 16;
    entry_t *v = realloc(b->v, cap * sizeof *v);
    if (v == NULL) {
      b->dropped++;
      return;
    }
    b->v = v;
    b->cap = cap;
  }
  entry_t *e = &b->v[b->n];
  e->kind = dup_bytes(b->kind, strlen(b->kind));
  e->name = dup_bytes(name, nlen);
  e->blob = dup_bytes(blob, len);
  e->len = len;
  if (e->kind == NULL || e->name == NULL || e->blob == NULL) {
    free(e->kind);
    free(e->name);
    free(e->blob);
    b->dropped++;
    return;
  }
  b->n++;
}

size_t vg_snapshot_batch_count(const vg_snapshot_batch_t *b)
{
  return b->n;
}

size_t vg_snapshot_batch_dropped(const vg_snapshot_batch_t *b)
{
  return b->dropped;
}

void vg_snapshot_batch_free(vg_snapshot_batch_t *b)
{
  if (b == NULL) {
    return;
  }
  for (size_t i = 0; i < b->n; i++) {
    free(b->v[i].kind);
    free(b->v[i].name);
    free(b->v[i].blob);
  }
  free(b->v);
  free(b);
}

/* On the writer thread, inside the group transaction. */
static int write_work(sqlite3 *db, void *ud, char *err, size_t errlen)
{
  vg_snapshot_batch_t *b = ud;
  sqlite3_stmt *up = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "INSERT INTO snapshots (kind, name, blob, updated_at)"
                              " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (kind, name) DO UPDATE"
                              " SET blob = excluded.blob, updated_at = excluded.updated_at",
                              -1, &up, NULL);
  for (size_t i = 0; rc == SQLITE_OK && i < b->n; i++) {
    const entry_t *e = &b->v[i];
    sqlite3_bind_text(up, 1, e->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(up, 2, e->name, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(up, 3, e->blob, e->len, SQLITE_STATIC);
    sqlite3_bind_int64(up, 4, b->now_ms);
    rc = sqlite3_step(up) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    sqlite3_reset(up);
  }
  sqlite3_finalize(up);
  if (rc == SQLITE_OK && b->prune_before_ms > 0) {
    sqlite3_stmt *del = NULL;
    rc = sqlite3_prepare_v2(db, "DELETE FROM snapshots WHERE updated_at < ?1", -1, &del, NULL);
    if (rc == SQLITE_OK) {
      sqlite3_bind_int64(del, 1, b->prune_before_ms);
      rc = sqlite3_step(del) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    }
    sqlite3_finalize(del);
  }
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "snapshots: %s", sqlite3_errmsg(db));
  }
  return rc;
}

static void write_done(void *ud, int status, const char *err)
{
  vg_snapshot_batch_t *b = ud;
  if (b->done != NULL) {
    b->done(b->ud, status, err);
  }
  vg_snapshot_batch_free(b);
}

int vg_snapshot_write(vg_store_t *s,
                      vg_snapshot_batch_t *b,
                      int64_t now_ms,
                      int64_t prune_before_ms,
                      vg_store_done_fn done,
                      void *ud)
{
  b->now_ms = now_ms;
  b->prune_before_ms = prune_before_ms;
  b->done = done;
  b->ud = ud;
  int rc = vg_store_call(s, write_work, write_done, b);
  if (rc != 0) {
    vg_snapshot_batch_free(b);
  }
  return rc;
}

/* ---- loading ---- */

typedef struct {
  char kind[KIND_MAX + 1];
  vg_snapshot_batch_t *rows; /* what the read found, handed to `each` on the loop */
  vg_snapshot_each_fn each;
  vg_store_done_fn done;
  void *ud;
} load_t;

/* On the thread pool, in a read transaction. */
static int load_work(sqlite3 *db, void *ud, char *err, size_t errlen)
{
  load_t *l = ud;
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT name, blob FROM snapshots WHERE kind = ?1"
                              " ORDER BY updated_at, name",
                              -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, l->kind, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const void *blob = sqlite3_column_blob(st, 1);
      int len = sqlite3_column_bytes(st, 1);
      vg_snapshot_batch_add(l->rows, (const char *)sqlite3_column_text(st, 0),
                            blob != NULL ? blob : "", (size_t)len);
    }
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "snapshots: %s", sqlite3_errmsg(db));
  }
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? 0 : -EIO;
}

static void load_done(void *ud, int status, const char *err)
{
  load_t *l = ud;
  for (size_t i = 0; status == 0 && i < l->rows->n; i++) {
    const entry_t *e = &l->rows->v[i];
    l->each(l->ud, e->name, e->blob, e->len);
  }
  if (status == 0 && l->rows->dropped > 0) {
    status = -ENOMEM;
    err = "snapshots: out of memory while reading";
  }
  l->done(l->ud, status, err);
  vg_snapshot_batch_free(l->rows);
  free(l);
}

int vg_snapshot_load(
    vg_store_t *s, const char *kind, vg_snapshot_each_fn each, vg_store_done_fn done, void *ud)
{
  if (s == NULL || kind == NULL || strlen(kind) == 0 || strlen(kind) > KIND_MAX || each == NULL ||
      done == NULL) {
    return -EINVAL;
  }
  load_t *l = calloc(1, sizeof *l);
  if (l == NULL || (l->rows = vg_snapshot_batch_new()) == NULL) {
    free(l);
    return -ENOMEM;
  }
  snprintf(l->kind, sizeof l->kind, "%s", kind);
  vg_snapshot_batch_kind(l->rows, kind);
  l->each = each;
  l->done = done;
  l->ud = ud;
  int rc = vg_store_read(s, load_work, load_done, l);
  if (rc != 0) {
    vg_snapshot_batch_free(l->rows);
    free(l);
  }
  return rc;
}
