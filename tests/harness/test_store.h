/* A real store in a temporary directory, on a loop of its own, for the C unit tests. */
#pragma once

#include <stdbool.h>
#include <uv.h>

#include "engine/store.h"
#include "test_support.h"

typedef struct {
  char dir[64];
  char path[96];
  uv_loop_t loop;
  vg_store_t *s;
  int closed;
} test_store_t;

/* Makes the directory and the loop and opens the store (group commit 1 ms); fails the test on
 * error. `tag` names the directory (/tmp/vg-<tag>-XXXXXX). */
void test_store_open(test_store_t *ts, const char *tag);

/* Opens the store again on the same file (after test_store_close). */
void test_store_reopen(test_store_t *ts);

/* Closes the store and runs the loop until it is closed. */
void test_store_close(test_store_t *ts);

/* Closes everything, checks the loop closes clean and removes the files. */
void test_store_remove(test_store_t *ts);

/* Runs the loop until *counter reaches want; fails the test after 20 s. */
void test_run_until(uv_loop_t *loop, const int *counter, int want);
