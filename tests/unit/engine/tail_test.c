/* Tail engine tests (engine/tail.c) with a real loop and real files in a temp directory:
 * appends, partial lines, rotation by rename + create (none lost, none duplicated), a
 * rotated file still written after the rename, copytruncate, a file (and its directory)
 * created later, long lines, raw bytes, start vs end, and closing with reads in flight.
 * Each test waits on conditions with a guard timer and ends with the loop closed empty. */
#include "engine/tail.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_support.h"

#define MAXL 20000 /* more than the 10486 lines of the 1 MiB file */
#define GUARD_MS 10000

typedef struct {
  uv_loop_t loop;
  char dir[256];
  char path[320];
  vg_tail_t *t;
  char *lines[MAXL];
  size_t lens[MAXL];
  bool trunc[MAXL];
  int n;
  int calls;
  int closed;
  bool close_in_callback;
  bool check_in_callback;
  bool timed_out;
} fx_t;

static void on_lines(void *ud, const vg_tail_line_t *lines, size_t n)
{
  fx_t *f = ud;
  f->calls++;
  for (size_t i = 0; i < n; i++) {
    assert_true(f->n < MAXL);
    f->lines[f->n] = malloc(lines[i].len + 1);
    memcpy(f->lines[f->n], lines[i].data, lines[i].len);
    f->lines[f->n][lines[i].len] = '\0';
    f->lens[f->n] = lines[i].len;
    f->trunc[f->n] = lines[i].truncated;
    f->n++;
  }
  if (f->check_in_callback) {
    tail_check(f->t); /* mid-pass: only marks the pass to run again */
  }
  if (f->close_in_callback && f->t != NULL) {
    vg_tail_t *t = f->t;
    f->t = NULL;
    tail_close(t, NULL, NULL);
  }
}

static void on_closed(void *ud)
{
  ((fx_t *)ud)->closed++;
}

static void guard_cb(uv_timer_t *h)
{
  fx_t *f = h->data;
  f->timed_out = true;
}

typedef bool (*cond_fn)(fx_t *f, uint64_t arg);

/* Runs the loop until cond holds; a guard timer turns a bug into a failure, not a hang. */
static void run_until(fx_t *f, cond_fn cond, uint64_t arg)
{
  uv_timer_t guard;
  uv_timer_init(&f->loop, &guard);
  guard.data = f;
  uv_timer_start(&guard, guard_cb, GUARD_MS, 0);
  f->timed_out = false;
  while (!cond(f, arg) && !f->timed_out) {
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  if (f->timed_out && f->t != NULL) {
    vg_tail_stats_t s;
    tail_stats(f->t, &s);
    print_message("timed out: %d lines, state %s, offset %llu, bytes %llu, error %d\n", f->n,
                  tail_state_name(s.state), (unsigned long long)s.offset,
                  (unsigned long long)s.bytes, s.last_error);
  }
  assert_false(f->timed_out);
}

static bool have_lines(fx_t *f, uint64_t n)
{
  return (uint64_t)f->n >= n;
}

static vg_tail_stats_t stats(fx_t *f)
{
  vg_tail_stats_t s;
  tail_stats(f->t, &s);
  return s;
}

static bool in_state(fx_t *f, uint64_t state)
{
  return stats(f).state == (vg_tail_state_t)state;
}

static bool read_bytes(fx_t *f, uint64_t n)
{
  return stats(f).bytes >= n;
}

static bool is_closed(fx_t *f, uint64_t n)
{
  return (uint64_t)f->closed >= n;
}

static void write_file(const char *path, const char *text, size_t len, int flags)
{
  int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  close(fd);
}

static void append(fx_t *f, const char *text)
{
  write_file(f->path, text, strlen(text), O_APPEND);
}

static void setup(fx_t *f)
{
  memset(f, 0, sizeof(*f));
  assert_int_equal(uv_loop_init(&f->loop), 0);
  snprintf(f->dir, sizeof(f->dir), "/tmp/vg_tail_test.XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof(f->path), "%s/app.log", f->dir);
}

static void open_tail(fx_t *f, vg_tail_from_t from, size_t max_line, size_t read_size)
{
  vg_tail_opts_t o;
  tail_opts_default(&o);
  o.from = from;
  o.poll_ms = 50;
  if (max_line) {
    o.max_line = max_line;
  }
  if (read_size) {
    o.read_size = read_size;
  }
  char err[128];
  f->t = tail_open(&f->loop, f->path, &o, on_lines, f, err, sizeof(err));
  assert_non_null(f->t);
}

static void rm_tree(const char *dir)
{
  DIR *d = opendir(dir);
  if (d == NULL) {
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
      continue;
    }
    char p[600];
    snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
      rm_tree(p);
    } else {
      unlink(p);
    }
  }
  closedir(d);
  rmdir(dir);
}

/* Closes the tail (if open), waits for on_closed, and checks the loop ends with no handle. */
static void teardown(fx_t *f)
{
  if (f->t != NULL) {
    tail_close(f->t, on_closed, f);
    f->t = NULL;
    run_until(f, is_closed, 1);
    assert_int_equal(f->closed, 1);
  }
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  for (int i = 0; i < f->n; i++) {
    free(f->lines[i]);
  }
  rm_tree(f->dir);
}

/* The lines seen so far are exactly `want` (NULL-terminated), none truncated. */
static void expect_lines(fx_t *f, const char *const *want)
{
  int n = 0;
  for (; want[n] != NULL; n++) {
    assert_true(n < f->n);
    assert_string_equal(f->lines[n], want[n]);
    assert_false(f->trunc[n]);
  }
  assert_int_equal(f->n, n);
}

/* Appends a last line and waits for it: everything before it has been delivered, so the
 * count that follows shows duplicates and extras too. */
static bool saw_end(fx_t *f, uint64_t arg)
{
  (void)arg;
  return f->n > 0 && strcmp(f->lines[f->n - 1], "END") == 0;
}

static void sync_end(fx_t *f)
{
  append(f, "END\n");
  run_until(f, saw_end, 0);
}

static void test_append_from_end(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  append(&f, "old1\nold2\n");
  open_tail(&f, VG_TAIL_FROM_END, 0, 0);
  run_until(&f, in_state, VG_TAIL_FOLLOWING);
  assert_int_equal(stats(&f).offset, 10);
  append(&f, "a\nb\n");
  run_until(&f, have_lines, 2);
  append(&f, "c\n");
  sync_end(&f);
  expect_lines(&f, (const char *const[]){ "a", "b", "c", "END", NULL });
  vg_tail_stats_t s = stats(&f);
  assert_int_equal(s.lines, 4);
  assert_int_equal(s.bytes, 10);
  assert_int_equal(s.offset, 20);
  assert_int_equal(s.rotations + s.truncations + s.truncated_lines + s.reopen_errors, 0);
  assert_string_equal(tail_state_name(s.state), "following");
  teardown(&f);
}

static void test_from_start(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  append(&f, "x\n\ny\n");
  f.check_in_callback = true;
  open_tail(&f, VG_TAIL_FROM_START, 0, 0);
  run_until(&f, have_lines, 3);
  append(&f, "z\n");
  sync_end(&f);
  expect_lines(&f, (const char *const[]){ "x", "", "y", "z", "END", NULL });
  teardown(&f);
}

static void test_partial_lines(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  append(&f, "");
  open_tail(&f, VG_TAIL_FROM_START, 0, 0);
  run_until(&f, in_state, VG_TAIL_FOLLOWING);
  append(&f, "hel");
  run_until(&f, read_bytes, 3);
  assert_int_equal(f.n, 0); /* held until its newline */
  append(&f, "lo\nwor");
  run_until(&f, read_bytes, 9);
  expect_lines(&f, (const char *const[]){ "hello", NULL });
  append(&f, "ld\n");
  run_until(&f, have_lines, 2);
  sync_end(&f);
  expect_lines(&f, (const char *const[]){ "hello", "world", "END", NULL });
  teardown(&f);
}

/* Lines written to the old file just before the rename, and after it by a writer that still
 * has it open, come before the new file's lines; none lost, none twice. */
static void test_rotation_rename_create(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  append(&f, "1\n2\n");
  open_tail(&f, VG_TAIL_FROM_START, 0, 0);
  run_until(&f, have_lines, 2);

  int old = open(f.path, O_WRONLY | O_APPEND);
  assert_true(old >= 0);
  assert_int_equal(write(old, "3\n4\n", 4), 4);
  char rotated[400];
  snprintf(rotated, sizeof(rotated), "%s.1", f.path);
  assert_int_equal(rename(f.path, rotated), 0);
  assert_int_equal(write(old, "4b\npart", 7), 7);
  append(&f, "5\n6\n"); /* creates the new file */
  run_until(&f, have_lines, 8);
  assert_int_equal(write(old, "late\n", 5), 5); /* after the switch: not read */
  close(old);
  append(&f, "7\n");
  sync_end(&f);
  expect_lines(
      &f, (const char *const[]){ "1", "2", "3", "4", "4b", "part", "5", "6", "7", "END", NULL });
  vg_tail_stats_t s = stats(&f);
  assert_int_equal(s.rotations, 1);
  assert_int_equal(s.truncations, 0);
  assert_int_equal(s.lines, 10);
  teardown(&f);
}

/* Renamed away and recreated only later: the old file is drained meanwhile. */
static void test_rotation_delayed_create(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  append(&f, "a\n");
  open_tail(&f, VG_TAIL_FROM_START, 0, 0);
  run_until(&f, have_lines, 1);
  char rotated[400];
  snprintf(rotated, sizeof(rotated), "%s.1", f.path);
  assert_int_equal(rename(f.path, rotated), 0);
  run_until(&f, in_state, VG_TAIL_MISSING);
  write_file(rotated, "b\n", 2, O_APPEND);
  /* the directory event names app.log.1: seen while our path is missing */
  run_until(&f, have_lines, 2);
  append(&f, "c\n");
  run_until(&f, have_lines, 3);
  assert_int_equal(stats(&f).state, VG_TAIL_FOLLOWING);
  sync_end(&f);
  expect_lines(&f, (const char *const[]){ "a", "b", "c", "END", NULL });
  assert_int_equal(stats(&f).rotations, 1);
  assert_int_equal(stats(&f).reopen_errors, 0);
  teardown(&f);
}

static void test_copytruncate(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  append(&f, "aaaa\nbbbb\n");
  open_tail(&f, VG_TAIL_FROM_START, 0, 0);
  run_until(&f, have_lines, 2);
  write_file(f.path, "c\n", 2, O_TRUNC);
  run_until(&f, have_lines, 3);
  sync_end(&f);
  expect_lines(&f, (const char *const[]){ "aaaa", "bbbb", "c", "END", NULL });
  vg_tail_stats_t s = stats(&f);
  assert_int_equal(s.truncations, 1);
  assert_int_equal(s.rotations, 0);
  assert_int_equal(s.offset, 6);
  teardown(&f);
}

/* A file missing at open is read from its start when it appears, even in from-end mode; so
 * is one whose directory appears later (only the poll sees that). */
static void test_missing_then_created(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  open_tail(&f, VG_TAIL_FROM_END, 0, 0);
  run_until(&f, in_state, VG_TAIL_MISSING);
  append(&f, "first\nsecond\n");
  run_until(&f, have_lines, 2);
  sync_end(&f);
  expect_lines(&f, (const char *const[]){ "first", "second", "END", NULL });
  assert_int_equal(stats(&f).reopen_errors, 0);
  assert_int_equal(stats(&f).rotations, 0);
  teardown(&f);

  setup(&f);
  char sub[300];
  snprintf(sub, sizeof(sub), "%s/sub", f.dir);
  snprintf(f.path, sizeof(f.path), "%s/app.log", sub);
  open_tail(&f, VG_TAIL_FROM_END, 0, 0);
  run_until(&f, in_state, VG_TAIL_MISSING);
  assert_int_equal(mkdir(sub, 0755), 0);
  append(&f, "in sub\n");
  run_until(&f, have_lines, 1);
  append(&f, "more\n");
  sync_end(&f);
  expect_lines(&f, (const char *const[]){ "in sub", "more", "END", NULL });
  teardown(&f);
}

static bool has_errors(fx_t *f, uint64_t n)
{
  return stats(f).reopen_errors >= n;
}

/* A path that cannot be opened (here a symlink under nofollow) is an error state, counted
 * and retried on the next change; replaced by a file, it is read from its start. */
static void test_error_then_fixed(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  char target[400];
  snprintf(target, sizeof(target), "%s/target.log", f.dir);
  write_file(target, "t\n", 2, 0);
  assert_int_equal(symlink("target.log", f.path), 0);
  vg_tail_opts_t o;
  tail_opts_default(&o);
  o.poll_ms = 50;
  o.nofollow = true;
  char err[128];
  f.t = tail_open(&f.loop, f.path, &o, on_lines, &f, err, sizeof(err));
  assert_non_null(f.t);
  run_until(&f, has_errors, 1);
  vg_tail_stats_t s = stats(&f);
  assert_int_equal(s.state, VG_TAIL_ERROR);
  assert_int_equal(s.last_error, UV_ELOOP);
  assert_int_equal(unlink(f.path), 0);
  append(&f, "real\n");
  run_until(&f, have_lines, 1);
  sync_end(&f);
  expect_lines(&f, (const char *const[]){ "real", "END", NULL });
  assert_int_equal(stats(&f).state, VG_TAIL_FOLLOWING);
  teardown(&f);
}

/* Lines longer than max_line are cut with the flag, also when they span reads or have no
 * newline yet; a line of exactly max_line bytes is whole. */
static void test_long_lines(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  append(&f, "0123456789ABCDEF\nshort\n123456789\n12345678\n");
  open_tail(&f, VG_TAIL_FROM_START, 8, 4);
  run_until(&f, have_lines, 4);
  assert_string_equal(f.lines[0], "01234567");
  assert_true(f.trunc[0]);
  assert_string_equal(f.lines[1], "short");
  assert_false(f.trunc[1]);
  assert_string_equal(f.lines[2], "12345678");
  assert_true(f.trunc[2]);
  assert_string_equal(f.lines[3], "12345678");
  assert_false(f.trunc[3]);
  append(&f, "abcdefghijkl");
  run_until(&f, have_lines, 5); /* no newline yet: the start goes out at once */
  assert_string_equal(f.lines[4], "abcdefgh");
  assert_true(f.trunc[4]);
  append(&f, "mn\nok\n");
  run_until(&f, have_lines, 6);
  assert_string_equal(f.lines[5], "ok");
  assert_false(f.trunc[5]);
  assert_int_equal(f.n, 6);
  vg_tail_stats_t s = stats(&f);
  assert_int_equal(s.truncated_lines, 3);
  assert_int_equal(s.lines, 6);
  teardown(&f);
}

static void test_raw_bytes(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  write_file(f.path, "a\0b\xff\xfe\r\n", 7, 0);
  open_tail(&f, VG_TAIL_FROM_START, 0, 0);
  run_until(&f, have_lines, 1);
  assert_int_equal(f.lens[0], 6);
  assert_memory_equal(f.lines[0], "a\0b\xff\xfe\r", 6);
  teardown(&f);
}

/* Closing while a read is in flight, and from inside the line callback. */
static void test_close_pending(void **state)
{
  (void)state;
  fx_t f;
  setup(&f);
  char *big = malloc(1 << 20);
  memset(big, 'x', 1 << 20);
  for (size_t i = 99; i < (1 << 20); i += 100) {
    big[i] = '\n';
  }
  write_file(f.path, big, 1 << 20, 0);
  free(big);
  open_tail(&f, VG_TAIL_FROM_START, 0, 4096);
  tail_close(f.t, on_closed, &f); /* the open is in flight */
  f.t = NULL;
  run_until(&f, is_closed, 1);
  assert_int_equal(f.closed, 1);
  assert_int_equal(f.n, 0);
  teardown(&f);

  setup(&f); /* a read in flight: 1 MiB in 4 KiB reads, closed after the first bytes */
  big = malloc(1 << 20);
  memset(big, 'y', 1 << 20);
  for (size_t i = 99; i < (1 << 20); i += 100) {
    big[i] = '\n';
  }
  write_file(f.path, big, 1 << 20, 0);
  free(big);
  open_tail(&f, VG_TAIL_FROM_START, 0, 4096);
  run_until(&f, read_bytes, 1);
  tail_close(f.t, on_closed, &f);
  f.t = NULL;
  run_until(&f, is_closed, 1);
  assert_int_equal(f.closed, 1);
  assert_true(f.n >= 40 && f.n < 10486); /* what came before the close, in whole lines */
  for (int i = 0; i < f.n; i++) {
    assert_int_equal(f.lens[i], 99);
  }
  teardown(&f);

  setup(&f);
  append(&f, "one\ntwo\n");
  f.close_in_callback = true;
  open_tail(&f, VG_TAIL_FROM_START, 0, 0);
  run_until(&f, have_lines, 2);
  assert_null(f.t);
  assert_int_equal(f.calls, 1);
  teardown(&f);
}

static void test_open_errors(void **state)
{
  (void)state;
  char err[128];
  uv_loop_t loop;
  uv_loop_init(&loop);
  assert_null(tail_open(&loop, "", NULL, on_lines, NULL, err, sizeof(err)));
  assert_string_equal(err, "EINVAL: a path and a line callback are needed");
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_append_from_end),
    cmocka_unit_test(test_from_start),
    cmocka_unit_test(test_partial_lines),
    cmocka_unit_test(test_rotation_rename_create),
    cmocka_unit_test(test_rotation_delayed_create),
    cmocka_unit_test(test_copytruncate),
    cmocka_unit_test(test_missing_then_created),
    cmocka_unit_test(test_error_then_fixed),
    cmocka_unit_test(test_long_lines),
    cmocka_unit_test(test_raw_bytes),
    cmocka_unit_test(test_close_pending),
    cmocka_unit_test(test_open_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
