/* A real store in a temporary directory, for the C unit tests. */
#include "test_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_guard(uv_timer_t *t)
{
  *(bool *)t->data = true;
}

void test_run_until(uv_loop_t *loop, const int *counter, int want)
{
  bool timed_out = false;
  uv_timer_t t;
  uv_timer_init(loop, &t);
  t.data = &timed_out;
  uv_timer_start(&t, on_guard, 20000, 0);
  while (*counter < want && !timed_out) {
    uv_run(loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  if (*counter < want) {
    fail_msg("timed out: %d of %d", *counter, want);
  }
}

void test_store_reopen(test_store_t *ts)
{
  vg_store_opts_t o;
  vg_store_opts_default(&o);
  o.path = ts->path;
  o.group_commit_ms = 1;
  char err[256] = "";
  ts->s = vg_store_open(&ts->loop, &o, err, sizeof err);
  if (ts->s == NULL) {
    fail_msg("vg_store_open: %s", err);
  }
}

void test_store_open(test_store_t *ts, const char *tag)
{
  memset(ts, 0, sizeof *ts);
  snprintf(ts->dir, sizeof ts->dir, "/tmp/vg-%s-XXXXXX", tag);
  assert_non_null(mkdtemp(ts->dir));
  snprintf(ts->path, sizeof ts->path, "%s/vigil.db", ts->dir);
  assert_int_equal(uv_loop_init(&ts->loop), 0);
  test_store_reopen(ts);
}

static void on_store_closed(void *ud)
{
  ((test_store_t *)ud)->closed++;
}

void test_store_close(test_store_t *ts)
{
  if (ts->s != NULL) {
    int before = ts->closed;
    vg_store_close(ts->s, on_store_closed, ts);
    test_run_until(&ts->loop, &ts->closed, before + 1);
    ts->s = NULL;
  }
}

void test_store_remove(test_store_t *ts)
{
  test_store_close(ts);
  uv_run(&ts->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&ts->loop), 0);
  const char *const files[] = { "vigil.db", "vigil.db-wal", "vigil.db-shm" };
  for (size_t i = 0; i < 3; i++) {
    char p[128];
    snprintf(p, sizeof p, "%s/%s", ts->dir, files[i]);
    unlink(p);
  }
  rmdir(ts->dir);
}
