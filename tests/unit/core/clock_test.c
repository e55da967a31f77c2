/* Clock tests (core/clock.c): duration parsing (every unit, combinations, bare seconds, the
 * errors and their message, range limits); the virtual clock (due order, FIFO among equal
 * times, repeat timers, stopping from inside a callback, jump limits); and real uv timers that
 * fire, repeat and stop with the loop closing cleanly. */
#include "core/clock.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "core/log.h"
#include "core/runtime.h"
#include "test_support.h"

/* ---- durations ---- */

static int64_t parse(const char *text)
{
  char err[160] = "untouched";
  int64_t ms = vg_duration_parse(text, err, sizeof(err));
  if (ms >= 0) {
    assert_string_equal(err, "untouched"); /* success leaves err alone */
  }
  return ms;
}

static void test_duration_units(void **state)
{
  (void)state;
  assert_int_equal(parse("250ms"), 250);
  assert_int_equal(parse("30s"), 30000);
  assert_int_equal(parse("5m"), 300000);
  assert_int_equal(parse("2h"), 7200000);
  assert_int_equal(parse("2d"), 172800000);
  assert_int_equal(parse("1w"), 604800000);
  assert_int_equal(parse("0s"), 0);
  assert_int_equal(parse("0ms"), 0);
}

static void test_duration_combinations(void **state)
{
  (void)state;
  assert_int_equal(parse("1h30m"), 5400000);
  assert_int_equal(parse("1m30s"), 90000);
  assert_int_equal(parse("2m30s500ms"), 150500);
  assert_int_equal(parse("1d12h"), 129600000);
  assert_int_equal(parse("1w1d1h1m1s1ms"), 604800000 + 86400000 + 3600000 + 60000 + 1000 + 1);
  assert_int_equal(parse("1.5s"), 1500);
  assert_int_equal(parse("0.5m"), 30000);
  assert_int_equal(parse(".25s"), 250);
  assert_int_equal(parse("1.0006s"), 1001); /* rounded to the nearest millisecond */
  assert_int_equal(parse("30s30s"), 60000); /* repeated units add up */
}

static void test_duration_bare_number_is_seconds(void **state)
{
  (void)state;
  assert_int_equal(parse("30"), 30000);
  assert_int_equal(parse("0"), 0);
  assert_int_equal(parse("1.5"), 1500);
  assert_int_equal(parse("0.001"), 1);
}

static void expect_bad(const char *text)
{
  char err[160] = "";
  int64_t ms = vg_duration_parse(text, err, sizeof(err));
  if (ms != -1) {
    fail_msg("\"%s\" parsed as %lld ms, expected an error", text, (long long)ms);
  }
  char want[160];
  snprintf(want, sizeof(want), "invalid duration \"%s\" (use e.g. 500ms, 30s, 5m, 1h30m, 2d)",
           text);
  assert_string_equal(err, want);
}

static void test_duration_bad_inputs(void **state)
{
  (void)state;
  expect_bad("");
  expect_bad("soon");
  expect_bad("s");
  expect_bad("5x");
  expect_bad("5 s");
  expect_bad(" 5s");
  expect_bad("5s ");
  expect_bad("-5s");
  expect_bad("+5s");
  expect_bad("1h30"); /* a bare number only on its own */
  expect_bad("30s5");
  expect_bad("5mss");
  expect_bad("5S");
  expect_bad("5sec");
  expect_bad("1h-30m");
  expect_bad(".");
  expect_bad("..5s");
  expect_bad("inf");
  expect_bad("nan");
  expect_bad("1e400");
}

static void test_duration_huge_values(void **state)
{
  (void)state;
  assert_int_equal(parse("9000000000000s"), 9000000000000000LL); /* the largest accepted */
  expect_bad("9000000000001s");
  expect_bad("99999999999999999999w");
  expect_bad("1000000000000000000000000000000000000000000");
  /* many groups whose sum overflows */
  char big[600] = "";
  for (int i = 0; i < 40; i++) {
    strcat(big, "9999999w");
  }
  expect_bad(big);
}

static void test_duration_error_truncated_safely(void **state)
{
  (void)state;
  char err[8];
  memset(err, 'X', sizeof(err));
  assert_int_equal(vg_duration_parse("nonsense", err, sizeof(err)), -1);
  assert_int_equal(err[7], '\0');
  assert_string_equal(err, "invalid");
}

/* ---- virtual clock ---- */

#define EPOCH 1767225600.0

typedef struct {
  char trace[512];
  int calls;
  int stop_after; /* stop from inside the callback at this call; 0: never */
  double times[16];
  vg_runtime_t *rt;
  vg_timer_t *self;
} cb_rec_t;

typedef struct {
  cb_rec_t *rec;
  const char *name;
  bool stop_in_cb;
} named_t;

static void named_cb(vg_timer_t *timer, void *ud)
{
  named_t *n = ud;
  cb_rec_t *r = n->rec;
  if (r->calls < 16) {
    r->times[r->calls] = vg_clock_now(r->rt);
  }
  r->calls++;
  size_t len = strlen(r->trace);
  snprintf(r->trace + len, sizeof(r->trace) - len, "%s ", n->name);
  if (n->stop_in_cb) {
    vg_timer_stop(timer);
  }
}

static void repeat_cb(vg_timer_t *timer, void *ud)
{
  cb_rec_t *r = ud;
  if (r->calls < 16) {
    r->times[r->calls] = vg_clock_now(r->rt);
  }
  r->calls++;
  if (r->stop_after != 0 && r->calls == r->stop_after) {
    vg_timer_stop(timer);
  }
}

static vg_runtime_t *virtual_runtime(void)
{
  vg_runtime_t *rt = vg_runtime_new();
  assert_non_null(rt);
  vg_clock_use_virtual(rt, EPOCH);
  assert_true(vg_clock_is_virtual(rt));
  return rt;
}

static void test_virtual_now_and_set(void **state)
{
  (void)state;
  vg_runtime_t *rt = virtual_runtime();
  assert_true(vg_clock_now(rt) == EPOCH);
  vg_clock_set(rt, EPOCH + 90.5);
  assert_true(vg_clock_now(rt) == EPOCH + 90.5);
  assert_false(vg_clock_jump(rt, -1)); /* nothing pending: time does not move */
  assert_true(vg_clock_now(rt) == EPOCH + 90.5);
  assert_int_equal(vg_clock_pending(rt), 0);
  vg_runtime_free(rt);
}

static void test_virtual_due_order_and_fifo(void **state)
{
  (void)state;
  vg_runtime_t *rt = virtual_runtime();
  cb_rec_t r = { .rt = rt };
  named_t a = { &r, "A30", true }, b = { &r, "B10", true }, c = { &r, "C10", true },
          d = { &r, "D20", true }, e = { &r, "E10", true };
  vg_timer_start(rt, 30, 0, named_cb, &a);
  vg_timer_start(rt, 10, 0, named_cb, &b);
  vg_timer_start(rt, 10, 0, named_cb, &c);
  vg_timer_start(rt, 20, 0, named_cb, &d);
  vg_timer_start(rt, 10, 0, named_cb, &e);
  assert_int_equal(vg_clock_pending(rt), 5);
  assert_int_equal(r.calls, 0); /* nothing fires until the clock jumps */

  assert_true(vg_clock_jump(rt, -1)); /* the three due at +10 ms fire together */
  assert_string_equal(r.trace, "B10 C10 E10 ");
  assert_true(fabs(vg_clock_now(rt) - (EPOCH + 0.010)) < 1e-6);
  assert_int_equal(vg_clock_pending(rt), 2);

  vg_runtime_run(rt, -1);
  assert_string_equal(r.trace, "B10 C10 E10 D20 A30 ");
  assert_int_equal(r.calls, 5);
  assert_true(fabs(r.times[3] - (EPOCH + 0.020)) < 1e-6);
  assert_true(fabs(r.times[4] - (EPOCH + 0.030)) < 1e-6);
  assert_int_equal(vg_clock_pending(rt), 0);
  vg_runtime_free(rt);
}

static void test_virtual_one_shot_stopped_later(void **state)
{
  (void)state;
  vg_runtime_t *rt = virtual_runtime();
  cb_rec_t r = { .rt = rt };
  named_t a = { &r, "A", false };
  vg_timer_t *t = vg_timer_start(rt, 1000, 0, named_cb, &a);
  vg_runtime_run(rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(vg_clock_pending(rt), 0); /* fired: no longer pending, not yet freed */
  vg_timer_stop(t);                          /* the owner's one stop frees it */
  vg_runtime_run(rt, -1);
  assert_int_equal(r.calls, 1);
  vg_runtime_free(rt);
}

static void test_virtual_repeat_and_stop_in_callback(void **state)
{
  (void)state;
  vg_runtime_t *rt = virtual_runtime();
  cb_rec_t r = { .rt = rt, .stop_after = 3 };
  vg_timer_start(rt, 100, 100, repeat_cb, &r);
  vg_runtime_run(rt, -1);
  assert_int_equal(r.calls, 3);
  for (int i = 0; i < 3; i++) {
    assert_true(fabs(r.times[i] - (EPOCH + 0.1 * (i + 1))) < 1e-6);
  }
  assert_int_equal(vg_clock_pending(rt), 0);
  vg_runtime_free(rt);
}

static void test_virtual_stop_before_due(void **state)
{
  (void)state;
  vg_runtime_t *rt = virtual_runtime();
  cb_rec_t r = { .rt = rt };
  named_t a = { &r, "A", true }, b = { &r, "B", true };
  vg_timer_t *ta = vg_timer_start(rt, 10, 0, named_cb, &a);
  vg_timer_start(rt, 20, 0, named_cb, &b);
  vg_timer_stop(ta);
  assert_int_equal(vg_clock_pending(rt), 1);
  vg_runtime_run(rt, -1);
  assert_string_equal(r.trace, "B ");
  vg_runtime_free(rt);
}

/* A callback that stops another timer due at the same instant: that one never fires. */
typedef struct {
  vg_timer_t *victim;
  int calls;
} killer_t;

static void killer_cb(vg_timer_t *timer, void *ud)
{
  killer_t *k = ud;
  k->calls++;
  vg_timer_stop(k->victim);
  vg_timer_stop(timer);
}

static void test_virtual_stop_other_from_callback(void **state)
{
  (void)state;
  vg_runtime_t *rt = virtual_runtime();
  cb_rec_t r = { .rt = rt };
  killer_t k = { 0 };
  named_t v = { &r, "victim", true };
  vg_timer_start(rt, 10, 0, killer_cb, &k);
  k.victim = vg_timer_start(rt, 10, 0, named_cb, &v);
  vg_runtime_run(rt, -1);
  assert_int_equal(k.calls, 1);
  assert_int_equal(r.calls, 0);
  assert_int_equal(vg_clock_pending(rt), 0);
  vg_runtime_free(rt);
}

/* A timer started from a callback with delay 0 is due now and fires in the same jump, after
 * the timers already due. */
typedef struct {
  cb_rec_t *rec;
  named_t child;
} spawner_t;

static void spawner_cb(vg_timer_t *timer, void *ud)
{
  spawner_t *s = ud;
  size_t len = strlen(s->rec->trace);
  snprintf(s->rec->trace + len, sizeof(s->rec->trace) - len, "spawner ");
  vg_timer_start(s->rec->rt, 0, 0, named_cb, &s->child);
  vg_timer_stop(timer);
}

static void test_virtual_zero_delay_from_callback(void **state)
{
  (void)state;
  vg_runtime_t *rt = virtual_runtime();
  cb_rec_t r = { .rt = rt };
  spawner_t s = { &r, { &r, "child", true } };
  named_t other = { &r, "other", true };
  vg_timer_start(rt, 50, 0, spawner_cb, &s);
  vg_timer_start(rt, 50, 0, named_cb, &other);
  assert_true(vg_clock_jump(rt, -1));
  assert_string_equal(r.trace, "spawner other child ");
  assert_true(fabs(vg_clock_now(rt) - (EPOCH + 0.05)) < 1e-6);
  assert_false(vg_clock_jump(rt, -1));
  vg_runtime_free(rt);
}

static void test_virtual_jump_respects_limit(void **state)
{
  (void)state;
  vg_runtime_t *rt = virtual_runtime();
  cb_rec_t r = { .rt = rt };
  named_t a = { &r, "A", true }, b = { &r, "B", true };
  vg_timer_start(rt, 10000, 0, named_cb, &a);
  vg_timer_start(rt, 20000, 0, named_cb, &b);
  assert_true(vg_clock_jump(rt, EPOCH + 15));
  assert_string_equal(r.trace, "A ");
  assert_false(vg_clock_jump(rt, EPOCH + 15)); /* B is due past the limit */
  assert_true(vg_clock_now(rt) == EPOCH + 10); /* and time did not move towards it */
  assert_string_equal(r.trace, "A ");
  assert_int_equal(vg_clock_pending(rt), 1);
  assert_true(vg_clock_jump(rt, EPOCH + 20)); /* the limit itself is included */
  assert_string_equal(r.trace, "A B ");

  /* vg_runtime_run stops at the limit too */
  cb_rec_t rr = { .rt = rt };
  vg_timer_t *rep = vg_timer_start(rt, 1000, 1000, repeat_cb, &rr);
  vg_runtime_run(rt, EPOCH + 25.5);
  assert_int_equal(rr.calls, 5);
  assert_true(vg_clock_now(rt) == EPOCH + 25);
  assert_int_equal(vg_clock_pending(rt), 1);
  vg_timer_stop(rep);
  assert_int_equal(vg_clock_pending(rt), 0);
  vg_runtime_free(rt);
}

static void test_virtual_timer_after_set(void **state)
{
  (void)state;
  vg_runtime_t *rt = virtual_runtime();
  cb_rec_t r = { .rt = rt };
  named_t a = { &r, "A", true };
  vg_clock_set(rt, EPOCH + 3600);
  vg_timer_start(rt, 5000, 0, named_cb, &a);
  vg_runtime_run(rt, -1);
  assert_int_equal(r.calls, 1);
  assert_true(r.times[0] == EPOCH + 3605);
  vg_runtime_free(rt);
}

static void test_virtual_pending_freed_by_runtime(void **state)
{
  (void)state;
  /* timers still pending when the runtime goes are freed with it (ASan checks the leak) */
  vg_runtime_t *rt = virtual_runtime();
  cb_rec_t r = { .rt = rt };
  named_t a = { &r, "A", true };
  vg_timer_start(rt, 5000, 0, named_cb, &a);
  vg_timer_start(rt, 5000, 1000, repeat_cb, &r);
  assert_int_equal(vg_clock_pending(rt), 2);
  vg_runtime_free(rt);
  assert_int_equal(r.calls, 0);
}

/* ---- real timers ---- */

static char *g_lines[64];
static int g_nlines;

static void sink(const char *line, void *ud)
{
  (void)ud;
  if (g_nlines < 64) {
    g_lines[g_nlines++] = strdup(line);
  }
}

static int count_handles(uv_loop_t *loop, uv_handle_t *skip);

/* Frees the runtime and checks that it closed the loop without complaint. */
static void free_and_check(vg_runtime_t *rt)
{
  uv_run(rt->loop, UV_RUN_NOWAIT);
  assert_int_equal(count_handles(rt->loop, (uv_handle_t *)&rt->sched_idle), 0);
  g_nlines = 0;
  vg_log_set_sink(sink, NULL);
  vg_runtime_free(rt);
  vg_log_set_sink(NULL, NULL);
  int warnings = g_nlines;
  for (int i = 0; i < g_nlines; i++) {
    free(g_lines[i]);
  }
  g_nlines = 0;
  assert_int_equal(warnings, 0);
}

static void count_cb(uv_handle_t *h, void *arg)
{
  struct {
    int n;
    uv_handle_t *skip;
  } *c = arg;
  c->n += h != c->skip;
}

static int count_handles(uv_loop_t *loop, uv_handle_t *skip)
{
  struct {
    int n;
    uv_handle_t *skip;
  } c = { 0, skip };
  uv_walk(loop, count_cb, &c);
  return c.n;
}

static void test_real_one_shot(void **state)
{
  (void)state;
  vg_runtime_t *rt = vg_runtime_new();
  assert_false(vg_clock_is_virtual(rt));
  cb_rec_t r = { .rt = rt };
  named_t a = { &r, "A", true }, b = { &r, "B", true };
  uint64_t t0 = uv_hrtime();
  vg_timer_start(rt, 20, 0, named_cb, &b);
  vg_timer_start(rt, 5, 0, named_cb, &a);
  vg_runtime_run(rt, -1);
  assert_string_equal(r.trace, "A B ");
  assert_int_equal(r.calls, 2);
  assert_true(uv_hrtime() - t0 >= 15 * 1000000ULL); /* margin for libuv's cached time */
  /* real time: the epoch in seconds, close to the system clock */
  assert_true(fabs(r.times[0] - (double)time(NULL)) < 5);
  free_and_check(rt);
}

static void test_real_one_shot_stopped_after_firing(void **state)
{
  (void)state;
  vg_runtime_t *rt = vg_runtime_new();
  cb_rec_t r = { .rt = rt };
  named_t a = { &r, "A", false };
  vg_timer_t *t = vg_timer_start(rt, 1, 0, named_cb, &a);
  vg_runtime_run(rt, -1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(count_handles(rt->loop, (uv_handle_t *)&rt->sched_idle), 1);
  vg_timer_stop(t);
  free_and_check(rt);
}

static void test_real_repeat_stop_in_callback(void **state)
{
  (void)state;
  vg_runtime_t *rt = vg_runtime_new();
  cb_rec_t r = { .rt = rt, .stop_after = 4 };
  vg_timer_start(rt, 2, 2, repeat_cb, &r);
  vg_runtime_run(rt, -1); /* returns only once the timer is stopped and closed */
  assert_int_equal(r.calls, 4);
  for (int i = 1; i < 4; i++) {
    assert_true(r.times[i] >= r.times[i - 1]);
  }
  free_and_check(rt);
}

static void test_real_stop_before_firing(void **state)
{
  (void)state;
  vg_runtime_t *rt = vg_runtime_new();
  cb_rec_t r = { .rt = rt };
  named_t a = { &r, "A", true };
  uint64_t t0 = uv_hrtime();
  vg_timer_t *t = vg_timer_start(rt, 60000, 0, named_cb, &a);
  vg_timer_stop(t);
  vg_runtime_run(rt, -1); /* nothing keeps the loop alive */
  assert_int_equal(r.calls, 0);
  assert_true(uv_hrtime() - t0 < 30ULL * 1000000000ULL);
  free_and_check(rt);
}

static void test_real_stop_other_from_callback(void **state)
{
  (void)state;
  vg_runtime_t *rt = vg_runtime_new();
  cb_rec_t r = { .rt = rt };
  killer_t k = { 0 };
  named_t v = { &r, "victim", true };
  vg_timer_start(rt, 1, 0, killer_cb, &k);
  k.victim = vg_timer_start(rt, 60000, 0, named_cb, &v);
  vg_runtime_run(rt, -1);
  assert_int_equal(k.calls, 1);
  assert_int_equal(r.calls, 0);
  free_and_check(rt);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_duration_units),
    cmocka_unit_test(test_duration_combinations),
    cmocka_unit_test(test_duration_bare_number_is_seconds),
    cmocka_unit_test(test_duration_bad_inputs),
    cmocka_unit_test(test_duration_huge_values),
    cmocka_unit_test(test_duration_error_truncated_safely),
    cmocka_unit_test(test_virtual_now_and_set),
    cmocka_unit_test(test_virtual_due_order_and_fifo),
    cmocka_unit_test(test_virtual_one_shot_stopped_later),
    cmocka_unit_test(test_virtual_repeat_and_stop_in_callback),
    cmocka_unit_test(test_virtual_stop_before_due),
    cmocka_unit_test(test_virtual_stop_other_from_callback),
    cmocka_unit_test(test_virtual_zero_delay_from_callback),
    cmocka_unit_test(test_virtual_jump_respects_limit),
    cmocka_unit_test(test_virtual_timer_after_set),
    cmocka_unit_test(test_virtual_pending_freed_by_runtime),
    cmocka_unit_test(test_real_one_shot),
    cmocka_unit_test(test_real_one_shot_stopped_after_firing),
    cmocka_unit_test(test_real_repeat_stop_in_callback),
    cmocka_unit_test(test_real_stop_before_firing),
    cmocka_unit_test(test_real_stop_other_from_callback),
  };
  if (getenv("VG_TEST_FILTER") != NULL) { /* run only the tests matching the pattern */
    cmocka_set_test_filter(getenv("VG_TEST_FILTER"));
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
