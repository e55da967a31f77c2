/* Tests for src/engine/snapshot.c against a real store: blobs written in a batch come back by
 * kind, byte for byte (NUL bytes, empty and large blobs); a second write replaces; kinds do not
 * mix; what was written survives a reopen; pruning drops what was not written since; bad
 * names are dropped and counted, not written. */
#include "engine/snapshot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_store.h"

typedef struct {
  test_store_t ts;
  int writes, loads;
  int status;
  char names[16][64];
  size_t lens[16];
  unsigned char *blobs[16];
  size_t n;
} fx_t;

static int setup(void **state)
{
  fx_t *fx = calloc(1, sizeof *fx);
  assert_non_null(fx);
  test_store_open(&fx->ts, "snapshot");
  *state = fx;
  return 0;
}

static void forget(fx_t *fx)
{
  for (size_t i = 0; i < fx->n; i++) {
    free(fx->blobs[i]);
  }
  fx->n = 0;
}

static int teardown(void **state)
{
  fx_t *fx = *state;
  test_store_remove(&fx->ts);
  forget(fx);
  free(fx);
  return 0;
}

static void on_written(void *ud, int status, const char *err)
{
  fx_t *fx = ud;
  (void)err;
  fx->status = status;
  fx->writes++;
}

static void on_each(void *ud, const char *name, const void *blob, size_t len)
{
  fx_t *fx = ud;
  assert_true(fx->n < 16);
  snprintf(fx->names[fx->n], sizeof fx->names[0], "%s", name);
  fx->blobs[fx->n] = malloc(len + 1);
  memcpy(fx->blobs[fx->n], blob, len);
  fx->lens[fx->n++] = len;
}

static void on_loaded(void *ud, int status, const char *err)
{
  fx_t *fx = ud;
  (void)err;
  fx->status = status;
  fx->loads++;
}

static void write_batch(fx_t *fx, vg_snapshot_batch_t *b, int64_t now, int64_t prune)
{
  int before = fx->writes;
  assert_int_equal(vg_snapshot_write(fx->ts.s, b, now, prune, on_written, fx), 0);
  test_run_until(&fx->ts.loop, &fx->writes, before + 1);
  assert_int_equal(fx->status, 0);
}

static void load(fx_t *fx, const char *kind)
{
  forget(fx);
  int before = fx->loads;
  assert_int_equal(vg_snapshot_load(fx->ts.s, kind, on_each, on_loaded, fx), 0);
  test_run_until(&fx->ts.loop, &fx->loads, before + 1);
  assert_int_equal(fx->status, 0);
}

static void test_round_trip(void **state)
{
  fx_t *fx = *state;
  static unsigned char big[300000];
  for (size_t i = 0; i < sizeof big; i++) {
    big[i] = (unsigned char)(i * 7);
  }
  vg_snapshot_batch_t *b = vg_snapshot_batch_new();
  vg_snapshot_batch_kind(b, "series");
  vg_snapshot_batch_add(b, "api-latency", "a\0b", 3);
  vg_snapshot_batch_add(b, "empty", "", 0);
  vg_snapshot_batch_add(b, "big", big, sizeof big);
  vg_snapshot_batch_kind(b, "logs");
  vg_snapshot_batch_add(b, "checkout", "templates", 9);
  assert_int_equal(vg_snapshot_batch_count(b), 4);
  write_batch(fx, b, 1000, 0);

  load(fx, "series");
  assert_int_equal(fx->n, 3);
  /* same write time: by name */
  assert_string_equal(fx->names[0], "api-latency");
  assert_int_equal(fx->lens[0], 3);
  assert_memory_equal(fx->blobs[0], "a\0b", 3);
  assert_string_equal(fx->names[1], "big");
  assert_int_equal(fx->lens[1], sizeof big);
  assert_memory_equal(fx->blobs[1], big, sizeof big);
  assert_string_equal(fx->names[2], "empty");
  assert_int_equal(fx->lens[2], 0);

  load(fx, "logs");
  assert_int_equal(fx->n, 1);
  assert_string_equal(fx->names[0], "checkout");
  assert_memory_equal(fx->blobs[0], "templates", 9);

  load(fx, "nothing");
  assert_int_equal(fx->n, 0);
}

static void test_replace_reopen_and_prune(void **state)
{
  fx_t *fx = *state;
  vg_snapshot_batch_t *b = vg_snapshot_batch_new();
  vg_snapshot_batch_kind(b, "series");
  vg_snapshot_batch_add(b, "old", "1", 1);
  vg_snapshot_batch_add(b, "kept", "1", 1);
  write_batch(fx, b, 1000, 0);

  b = vg_snapshot_batch_new();
  vg_snapshot_batch_kind(b, "series");
  vg_snapshot_batch_add(b, "kept", "22", 2);
  write_batch(fx, b, 5000, 0);

  test_store_close(&fx->ts);
  test_store_reopen(&fx->ts);
  load(fx, "series");
  assert_int_equal(fx->n, 2);
  assert_string_equal(fx->names[0], "old"); /* oldest write first */
  assert_string_equal(fx->names[1], "kept");
  assert_int_equal(fx->lens[1], 2);
  assert_memory_equal(fx->blobs[1], "22", 2);

  /* an empty batch still prunes: "old" was last written at 1000 */
  write_batch(fx, vg_snapshot_batch_new(), 9000, 2000);
  load(fx, "series");
  assert_int_equal(fx->n, 1);
  assert_string_equal(fx->names[0], "kept");
}

static void test_bad_entries_dropped(void **state)
{
  fx_t *fx = *state;
  vg_snapshot_batch_t *b = vg_snapshot_batch_new();
  vg_snapshot_batch_add(b, "no-kind-yet", "x", 1);
  vg_snapshot_batch_kind(b, "series");
  vg_snapshot_batch_add(b, "", "x", 1);
  char name[1100];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  vg_snapshot_batch_add(b, name, "x", 1);
  vg_snapshot_batch_add(b, "fine", "x", 1);
  assert_int_equal(vg_snapshot_batch_count(b), 1);
  assert_int_equal(vg_snapshot_batch_dropped(b), 3);
  write_batch(fx, b, 1000, 0);
  load(fx, "series");
  assert_int_equal(fx->n, 1);
  assert_string_equal(fx->names[0], "fine");

  assert_int_equal(vg_snapshot_load(fx->ts.s, "", on_each, on_loaded, fx), -EINVAL);
  vg_snapshot_batch_free(NULL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
    cmocka_unit_test_setup_teardown(test_replace_reopen_and_prune, setup, teardown),
    cmocka_unit_test_setup_teardown(test_bad_entries_dropped, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
