/* What store.c (the writer, the queue, the schema) and store_read.c (JSON rendering, readers on
 * the thread pool) share. Not part of the store's API: include only from src/engine/store*.c. */
#pragma once

#include <jansson.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "engine/store.h"

#define STORE_SCHEMA_VERSION 7
#define STORE_READER_POOL 4 /* idle read connections kept; more are opened when needed */

typedef struct store_job store_job_t;

struct vg_store {
  uv_loop_t *loop;
  vg_store_opts_t opts;
  char *path;
  sqlite3 *db; /* the writer's connection: the writer thread's alone once it runs */

  uv_thread_t thread;
  uv_mutex_t mu; /* guards everything down to `stats` */
  uv_cond_t cond;
  store_job_t *q_head, *q_tail;       /* submitted, not yet taken by the writer */
  store_job_t *done_head, *done_tail; /* finished, callbacks not yet run */
  bool stop, writer_exited;
  vg_store_stats_t stats;
  sqlite3 *readers[STORE_READER_POOL]; /* idle read-only connections */
  size_t nreaders;

  atomic_bool writable;
  uv_async_t async;

  /* loop thread only */
  bool closing, joined, finishing;
  size_t reads_inflight;
  /* writer jobs submitted and not yet answered: the async handle keeps the loop alive only
     while there are some (or while closing), so an idle store does not stop a loop from
     ending (the spec runner's virtual clock advances only then) */
  size_t jobs_out;
  void (*close_done)(void *ud);
  void *close_ud;
  vg_store_expired_fn expired_fn;
  void *expired_ud;
};

/* Wall-clock milliseconds since the epoch. */
int64_t store_now_ms(void);

/* RFC3339 UTC with milliseconds ("2026-12-02T10:00:00.000Z"); a JSON string, or NULL on OOM. */
json_t *store_time_json(int64_t ms);

/* The labels as a JSON object; bytes that are not UTF-8 become U+FFFD. NULL on OOM. */
json_t *store_labels_json(const vg_label_t *labels, size_t n);

/* A JSON string from `len` bytes, invalid UTF-8 replaced by U+FFFD; NULL on OOM. */
json_t *store_string_json(const char *s, size_t len);

/* Renders incident `id` with its alerts and timeline, reading through `db` in one read
 * transaction. Returns 0 with a malloc'd text in *json, -ENOENT/-EIO/-ENOMEM with a message. */
int store_render_incident(
    sqlite3 *db, int64_t id, char **json, size_t *len, char *err, size_t errlen);

/* A negative errno for an SQLite result code (SQLITE_FULL -> -ENOSPC, ...). */
int store_errno(int rc);

/* Called on the loop when a read finished: may complete a pending vg_store_close. */
void store_maybe_finish(vg_store_t *s);
