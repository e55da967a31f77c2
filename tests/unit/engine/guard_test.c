/* Tests for src/engine/guard.c: each guard rail alone (bucket math and bursts, overrides,
 * cooldown, concurrency, blast radius, the breaker's open -> half-open -> closed cycle), the
 * refusal sentences, refunds, persistence (dirty export, deletions reported once, a restart
 * that keeps every budget), name limits, table caps, and random sequences that never exceed
 * the rate and decide the same with and without restarts. Time is driven by now_ms only. */
#include "engine/guard.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

#define T0 1700000000000LL /* a wall-clock time in ms */
#define MIN 60000LL
#define HOUR 3600000LL

/* Everything off: each test turns on the rail it looks at. */
static void opts_none(vg_guard_opts_t *o)
{
  vg_guard_opts_default(o);
  o->type_rate = (vg_rate_t){ 0, 0 };
  o->target_rate = (vg_rate_t){ 0, 0 };
  o->cooldown_ms = 0;
  o->max_concurrent_type = 0;
  o->max_concurrent_target = 0;
  o->blast_max_targets = 0;
  o->breaker_failures = 0;
}

static vg_guard_t *guard(const vg_guard_opts_t *o)
{
  vg_guard_t *g = vg_guard_new(o);
  assert_non_null(g);
  return g;
}

static char why[512];

static vg_guard_verdict_t take(
    vg_guard_t *g, const char *type, const char *target, const char *scope, int64_t now)
{
  return vg_guard_take(g, type, target, scope, now, why, sizeof(why));
}

static vg_guard_verdict_t check(
    vg_guard_t *g, const char *type, const char *target, const char *scope, int64_t now)
{
  return vg_guard_check(g, type, target, scope, now, why, sizeof(why));
}

/* ---- a stand-in for the guard_state table ---- */

typedef struct {
  char *name;
  double value;
  int64_t at;
} row_t;

typedef struct {
  row_t rows[4096];
  size_t n;
  size_t writes, deletes, deletes_of_missing;
} store_t;

static row_t *store_find(store_t *s, const char *name)
{
  for (size_t i = 0; i < s->n; i++) {
    if (strcmp(s->rows[i].name, name) == 0) {
      return &s->rows[i];
    }
  }
  return NULL;
}

static void store_put(void *ud, const char *name, double value, int64_t at)
{
  store_t *s = ud;
  row_t *r = store_find(s, name);
  if (value < 0) {
    s->deletes++;
    if (r == NULL) {
      s->deletes_of_missing++;
      return;
    }
    free(r->name);
    *r = s->rows[--s->n];
    return;
  }
  s->writes++;
  if (r == NULL) {
    assert_true(s->n < sizeof(s->rows) / sizeof(s->rows[0]));
    r = &s->rows[s->n++];
    r->name = strdup(name);
    assert_non_null(r->name);
  }
  r->value = value;
  r->at = at;
}

static void store_clear(store_t *s)
{
  for (size_t i = 0; i < s->n; i++) {
    free(s->rows[i].name);
  }
  memset(s, 0, sizeof(*s));
}

static store_t *store_new(void)
{
  store_t *s = calloc(1, sizeof(*s));
  assert_non_null(s);
  return s;
}

static void store_free(store_t *s)
{
  store_clear(s);
  free(s);
}

/* A new guard from what the store holds. */
static vg_guard_t *restored(const store_t *s, const vg_guard_opts_t *o)
{
  vg_guard_t *g = guard(o);
  for (size_t i = 0; i < s->n; i++) {
    vg_guard_restore(g, s->rows[i].name, s->rows[i].value, s->rows[i].at);
  }
  return g;
}

/* A restart: everything written, the process gone, a new one from the store. */
static vg_guard_t *restart(vg_guard_t *g, store_t *s, const vg_guard_opts_t *o)
{
  vg_guard_each_dirty(g, store_put, s);
  vg_guard_free(g);
  return restored(s, o);
}

/* ---- the rails ---- */

static void test_bucket_refill_and_burst(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  opts_none(&o);
  o.type_rate = (vg_rate_t){ 3, MIN }; /* one every 20 s, bursting to 3 */
  vg_guard_t *g = guard(&o);
  for (int i = 0; i < 10; i++) { /* checking takes nothing */
    assert_int_equal(check(g, "restart", "a", NULL, T0), VG_GUARD_OK);
  }
  assert_int_equal(take(g, "restart", "a", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "b", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "c", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "d", NULL, T0), VG_GUARD_RATE_TYPE);
  assert_string_equal(why, "action type 'restart' budget spent: 3 per 1m; next in 20 s");
  assert_string_equal(vg_guard_verdict_name(VG_GUARD_RATE_TYPE), "ERATELIMIT");
  assert_int_equal(take(g, "restart", "d", NULL, T0 + 5000), VG_GUARD_RATE_TYPE);
  assert_string_equal(why, "action type 'restart' budget spent: 3 per 1m; next in 15 s");
  assert_int_equal(take(g, "restart", "d", NULL, T0 + 19999), VG_GUARD_RATE_TYPE);
  assert_string_equal(why, "action type 'restart' budget spent: 3 per 1m; next in 1 s");
  assert_int_equal(take(g, "restart", "d", NULL, T0 + 20000), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "e", NULL, T0 + 20000), VG_GUARD_RATE_TYPE);
  /* 30 s later: 1.5 tokens, one whole */
  assert_int_equal(take(g, "restart", "e", NULL, T0 + 50000), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "f", NULL, T0 + 50000), VG_GUARD_RATE_TYPE);
  assert_string_equal(why, "action type 'restart' budget spent: 3 per 1m; next in 10 s");
  assert_int_equal(take(g, "restart", "f", NULL, T0 + 60000), VG_GUARD_OK);
  /* a long idle time refills up to the burst, not beyond */
  int64_t t = T0 + 10 * HOUR;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(take(g, "restart", "g", NULL, t), VG_GUARD_OK);
  }
  assert_int_equal(take(g, "restart", "g", NULL, t), VG_GUARD_RATE_TYPE);
  /* other types have their own budget */
  assert_int_equal(take(g, "scale", "g", NULL, t), VG_GUARD_OK);
  vg_guard_stats_t st;
  vg_guard_stats(g, t, &st);
  assert_int_equal(st.allowed, 10);
  assert_int_equal(st.refused[VG_GUARD_RATE_TYPE], 6);
  assert_int_equal(st.running, 10);
  vg_guard_free(g);
}

static void test_fractional_rate(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  opts_none(&o);
  o.type_rate = (vg_rate_t){ 0.5, HOUR }; /* one per 2 h */
  vg_guard_t *g = guard(&o);
  assert_int_equal(take(g, "drain", "n1", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "n2", NULL, T0 + HOUR), VG_GUARD_RATE_TYPE);
  assert_string_equal(why, "action type 'drain' budget spent: 0.5 per 1h; next in 3600 s");
  assert_int_equal(take(g, "drain", "n2", NULL, T0 + 2 * HOUR), VG_GUARD_OK);
  vg_guard_free(g);
  /* no period: a budget that never refills (fails closed) */
  o.type_rate = (vg_rate_t){ 2, 0 };
  g = guard(&o);
  assert_int_equal(take(g, "drain", "n1", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "n1", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "n1", NULL, T0 + 1000 * HOUR), VG_GUARD_RATE_TYPE);
  assert_non_null(strstr(why, "never"));
  vg_guard_free(g);
}

static void test_per_type_override(void **state)
{
  (void)state;
  char drain[] = "drain"; /* the guard keeps its own copy */
  vg_guard_type_t types[] = {
    { .type = drain, .rate = { 1, HOUR } },
    { .type = "scale", .rate = { 0, MIN } },    /* unlimited */
    { .type = "restart", .max_concurrent = 3 }, /* the default rate */
    { .type = "drain", .rate = { 50, HOUR } },  /* a second entry for a name: ignored */
    { .type = NULL, .rate = { 1, HOUR } },      /* ignored */
  };
  vg_guard_opts_t o;
  opts_none(&o);
  o.type_rate = (vg_rate_t){ 2, HOUR };
  o.max_concurrent_type = 1;
  o.types = types;
  o.ntypes = sizeof(types) / sizeof(types[0]);
  vg_guard_t *g = guard(&o);
  strcpy(drain, "xxxxx");
  assert_int_equal(take(g, "drain", "n1", NULL, T0), VG_GUARD_OK);
  vg_guard_finish(g, "drain", "n1", true, T0);
  assert_int_equal(take(g, "drain", "n2", NULL, T0), VG_GUARD_RATE_TYPE);
  assert_string_equal(why, "action type 'drain' budget spent: 1 per 1h; next in 3600 s");
  for (int i = 0; i < 100; i++) {
    char t[16];
    snprintf(t, sizeof(t), "web-%d", i);
    assert_int_equal(take(g, "scale", t, NULL, T0), VG_GUARD_OK);
    vg_guard_finish(g, "scale", t, true, T0);
  }
  /* restart: the default rate (2 per hour), its own concurrency limit (3) */
  assert_int_equal(take(g, "restart", "a", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "b", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "c", NULL, T0), VG_GUARD_RATE_TYPE);
  assert_string_equal(why, "action type 'restart' budget spent: 2 per 1h; next in 1800 s");
  /* the default concurrency limit for others */
  assert_int_equal(take(g, "exec", "a", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "exec", "b", NULL, T0), VG_GUARD_CONCURRENCY);
  assert_string_equal(why, "1 'exec' actions running (limit 1)");
  vg_guard_free(g);
}

static void test_target_bucket_is_its_own(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  opts_none(&o);
  o.type_rate = (vg_rate_t){ 3, HOUR };
  o.target_rate = (vg_rate_t){ 2, HOUR };
  vg_guard_t *g = guard(&o);
  /* the target's budget covers all types */
  assert_int_equal(take(g, "restart", "a", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "scale", "a", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "a", NULL, T0), VG_GUARD_RATE_TARGET);
  assert_string_equal(why, "target 'a' budget spent: 2 per 1h; next in 1800 s");
  /* ... and a refusal by the target takes nothing from the type */
  assert_int_equal(take(g, "restart", "b", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "c", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "d", NULL, T0), VG_GUARD_RATE_TYPE);
  /* ... nor the other way round: d's own budget is whole */
  assert_int_equal(take(g, "scale", "d", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "d", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "d", NULL, T0), VG_GUARD_RATE_TARGET);
  assert_int_equal(take(g, "drain", "a", NULL, T0 + HOUR / 2), VG_GUARD_OK);
  vg_guard_free(g);
}

static void test_cooldown(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  opts_none(&o);
  o.cooldown_ms = 5 * MIN;
  vg_guard_t *g = guard(&o);
  assert_int_equal(take(g, "restart", "web-1", NULL, T0), VG_GUARD_OK);
  assert_int_equal(check(g, "restart", "web-1", NULL, T0 + 1), VG_GUARD_COOLDOWN);
  assert_string_equal(
      why, "target 'web-1' is cooling down after an action (cooldown 5m); next in 300 s");
  assert_string_equal(vg_guard_verdict_name(VG_GUARD_COOLDOWN), "ECOOLDOWN");
  assert_int_equal(take(g, "scale", "web-1", NULL, T0 + 2 * MIN), VG_GUARD_COOLDOWN);
  assert_string_equal(
      why, "target 'web-1' is cooling down after an action (cooldown 5m); next in 180 s");
  assert_int_equal(take(g, "restart", "web-2", NULL, T0 + 1), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "web-1", NULL, T0 + 5 * MIN - 1), VG_GUARD_COOLDOWN);
  assert_int_equal(take(g, "restart", "web-1", NULL, T0 + 5 * MIN), VG_GUARD_OK);
  /* a clock that steps back does not shorten the wait */
  assert_int_equal(check(g, "restart", "web-1", NULL, T0), VG_GUARD_COOLDOWN);
  assert_string_equal(
      why, "target 'web-1' is cooling down after an action (cooldown 5m); next in 600 s");
  vg_guard_stats_t st;
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.refused[VG_GUARD_COOLDOWN], 2); /* checks are not counted */
  assert_int_equal(st.allowed, 3);
  vg_guard_free(g);
}

static void test_concurrency(void **state)
{
  (void)state;
  vg_guard_type_t types[] = { { .type = "drain", .max_concurrent = 1 } };
  vg_guard_opts_t o;
  opts_none(&o);
  o.max_concurrent_type = 2;
  o.max_concurrent_target = 1;
  o.types = types;
  o.ntypes = 1;
  vg_guard_t *g = guard(&o);
  assert_int_equal(take(g, "restart", "a", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "b", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "c", NULL, T0), VG_GUARD_CONCURRENCY);
  assert_string_equal(why, "2 'restart' actions running (limit 2)");
  assert_string_equal(vg_guard_verdict_name(VG_GUARD_CONCURRENCY), "EBUSY");
  assert_int_equal(take(g, "scale", "a", NULL, T0), VG_GUARD_CONCURRENCY);
  assert_string_equal(why, "target 'a' has 1 actions running (limit 1)");
  assert_int_equal(take(g, "drain", "n1", NULL, T0), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "n2", NULL, T0), VG_GUARD_CONCURRENCY);
  assert_string_equal(why, "1 'drain' actions running (limit 1)");
  vg_guard_stats_t st;
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.running, 3);
  vg_guard_finish(g, "restart", "a", true, T0 + 1);
  assert_int_equal(take(g, "restart", "c", NULL, T0 + 1), VG_GUARD_OK);
  assert_int_equal(take(g, "scale", "a", NULL, T0 + 1), VG_GUARD_OK);
  assert_int_equal(take(g, "scale", "d", NULL, T0 + 1), VG_GUARD_OK);
  vg_guard_finish(g, "drain", "n1", false, T0 + 1); /* a failure releases too */
  assert_int_equal(take(g, "drain", "n2", NULL, T0 + 1), VG_GUARD_OK);
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.running, 5);
  /* a finish or refund for something not running releases nothing */
  vg_guard_finish(g, "restart", "zzz", true, T0 + 2);
  vg_guard_finish(g, "nothing", "zzz", true, T0 + 2);
  vg_guard_refund(g, "restart", "zzz", NULL, T0 + 2);
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.running, 5);
  assert_int_equal(take(g, "restart", "e", NULL, T0 + 2), VG_GUARD_CONCURRENCY);
  vg_guard_free(g);
}

static void test_refund_restores_everything(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  vg_guard_opts_default(&o);
  o.type_rate = (vg_rate_t){ 1, HOUR };
  o.target_rate = (vg_rate_t){ 1, HOUR };
  o.blast_max_targets = 1;
  vg_guard_t *g = guard(&o);
  store_t *s = store_new();
  assert_int_equal(take(g, "restart", "a", "prod", T0), VG_GUARD_OK);
  vg_guard_each_dirty(g, store_put, s);
  assert_int_equal(s->n, 4); /* two buckets, a cooldown, a blast entry */
  assert_non_null(store_find(s, "bucket:type:restart"));
  assert_non_null(store_find(s, "bucket:target:a"));
  assert_non_null(store_find(s, "cooldown:a"));
  assert_non_null(store_find(s,
                             "blast:prod\x1f"
                             "a"));
  assert_int_equal(check(g, "restart", "b", "prod", T0), VG_GUARD_RATE_TYPE);
  /* the claim was a duplicate: give it all back */
  vg_guard_refund(g, "restart", "a", "prod", T0 + 10);
  vg_guard_stats_t st;
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.running, 0);
  assert_int_equal(st.targets, 1); /* until the deletions are reported */
  vg_guard_each_dirty(g, store_put, s);
  assert_int_equal(s->n, 0);
  assert_int_equal(s->deletes, 4);
  assert_int_equal(s->deletes_of_missing, 0);
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.targets + st.types + st.blast_entries, 0);
  /* as if it never happened: the same action again, or another target in the scope */
  assert_int_equal(check(g, "restart", "b", "prod", T0 + 10), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "a", "prod", T0 + 10), VG_GUARD_OK);
  vg_guard_free(g);

  /* a half-open breaker's probe slot comes back */
  o.type_rate = o.target_rate = (vg_rate_t){ 0, 0 };
  o.cooldown_ms = 0;
  o.max_concurrent_target = 0;
  g = guard(&o);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(take(g, "restart", "a", "prod", T0), VG_GUARD_OK);
    vg_guard_finish(g, "restart", "a", false, T0);
  }
  assert_int_equal(take(g, "restart", "a", "prod", T0 + HOUR), VG_GUARD_OK); /* the probe */
  assert_int_equal(take(g, "restart", "a", "prod", T0 + HOUR), VG_GUARD_BREAKER);
  vg_guard_refund(g, "restart", "a", "prod", T0 + HOUR);
  assert_int_equal(check(g, "restart", "b", "prod", T0 + HOUR), VG_GUARD_OK); /* a left */
  assert_int_equal(take(g, "restart", "a", "prod", T0 + HOUR), VG_GUARD_OK);  /* probe again */
  vg_guard_finish(g, "restart", "a", true, T0 + HOUR);
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.breakers_open, 0);
  assert_int_equal(st.running, 0);
  vg_guard_free(g);

  /* a blast entry stays while another take holds it */
  g = guard(&o);
  assert_int_equal(take(g, "restart", "a", "prod", T0), VG_GUARD_OK);
  vg_guard_finish(g, "restart", "a", true, T0);
  assert_int_equal(take(g, "scale", "a", "prod", T0 + 1), VG_GUARD_OK);
  vg_guard_refund(g, "scale", "a", "prod", T0 + 1);
  assert_int_equal(check(g, "restart", "b", "prod", T0 + 2), VG_GUARD_BLAST);
  vg_guard_refund(g, "restart", "a", "prod", T0 + 2); /* (not one a ledger would make) */
  assert_int_equal(check(g, "restart", "b", "prod", T0 + 2), VG_GUARD_OK);
  vg_guard_free(g);
  store_free(s);
}

static void test_blast_radius(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  opts_none(&o);
  o.blast_max_targets = 3;
  o.blast_window_ms = 30 * MIN;
  vg_guard_t *g = guard(&o);
  assert_int_equal(take(g, "drain", "n1", "prod", T0), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "n2", "prod", T0 + 1000), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "n3", "prod", T0 + 2000), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "n4", "prod", T0 + 3000), VG_GUARD_BLAST);
  assert_string_equal(why,
                      "scope 'prod' had actions on 3 distinct targets in the last 30m "
                      "(limit 3); next new target in 1797 s");
  assert_string_equal(vg_guard_verdict_name(VG_GUARD_BLAST), "EBLASTRADIUS");
  /* a target already in the window does not count again, whatever the type */
  assert_int_equal(take(g, "drain", "n1", "prod", T0 + 4000), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "n2", "prod", T0 + 4000), VG_GUARD_OK);
  /* other scopes, and no scope, are not limited by it */
  assert_int_equal(take(g, "drain", "n4", "stage", T0 + 4000), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "n4", NULL, T0 + 4000), VG_GUARD_OK);
  assert_int_equal(take(g, "drain", "n5", "", T0 + 4000), VG_GUARD_OK);
  /* the window is counted from the first action on a target */
  assert_int_equal(take(g, "drain", "n4", "prod", T0 + 30 * MIN - 1), VG_GUARD_BLAST);
  assert_string_equal(why,
                      "scope 'prod' had actions on 3 distinct targets in the last 30m "
                      "(limit 3); next new target in 1 s");
  assert_int_equal(take(g, "drain", "n4", "prod", T0 + 30 * MIN), VG_GUARD_OK); /* n1 left */
  assert_int_equal(take(g, "drain", "n1", "prod", T0 + 30 * MIN), VG_GUARD_BLAST);
  assert_string_equal(why,
                      "scope 'prod' had actions on 3 distinct targets in the last 30m "
                      "(limit 3); next new target in 1 s");
  assert_int_equal(take(g, "drain", "n1", "prod", T0 + 30 * MIN + 2000), VG_GUARD_OK);
  /* all gone after a window */
  for (int i = 0; i < 3; i++) {
    char t[8];
    snprintf(t, sizeof(t), "m%d", i);
    assert_int_equal(take(g, "drain", t, "prod", T0 + 2 * HOUR), VG_GUARD_OK);
  }
  assert_int_equal(take(g, "drain", "m3", "prod", T0 + 2 * HOUR), VG_GUARD_BLAST);
  vg_guard_stats_t st;
  vg_guard_stats(g, T0 + 2 * HOUR, &st);
  assert_int_equal(st.refused[VG_GUARD_BLAST], 4);
  vg_guard_free(g);
}

static void fail_n(vg_guard_t *g, const char *target, int n, int64_t now)
{
  for (int i = 0; i < n; i++) {
    assert_int_equal(take(g, "restart", target, NULL, now), VG_GUARD_OK);
    vg_guard_finish(g, "restart", target, false, now);
  }
}

static void test_breaker(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  opts_none(&o);
  o.max_concurrent_target = 1;
  o.breaker_failures = 3;
  o.breaker_cooldown_ms = HOUR;
  vg_guard_t *g = guard(&o);
  vg_guard_stats_t st;
  /* a success in between starts the count again */
  fail_n(g, "db", 2, T0);
  assert_int_equal(take(g, "restart", "db", NULL, T0), VG_GUARD_OK);
  vg_guard_finish(g, "restart", "db", true, T0);
  fail_n(g, "db", 2, T0);
  assert_int_equal(take(g, "restart", "db", NULL, T0), VG_GUARD_OK);
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.breakers_open, 0);
  vg_guard_finish(g, "restart", "db", false, T0 + 1000); /* the third in a row */
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.breakers_open, 1);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 1000), VG_GUARD_BREAKER);
  assert_string_equal(why,
                      "target 'db' breaker is open after 3 failed actions in a row; next "
                      "probe in 3600 s");
  assert_string_equal(vg_guard_verdict_name(VG_GUARD_BREAKER), "EBREAKER");
  assert_int_equal(take(g, "scale", "db", NULL, T0 + HOUR), VG_GUARD_BREAKER);
  assert_int_equal(take(g, "restart", "web", NULL, T0 + HOUR), VG_GUARD_OK); /* its own */
  /* half-open: exactly one probe */
  assert_int_equal(check(g, "restart", "db", NULL, T0 + 1000 + HOUR), VG_GUARD_OK);
  assert_string_equal(why, "target 'db' breaker is half-open: this action is the probe");
  assert_int_equal(check(g, "restart", "db", NULL, T0 + 1000 + HOUR), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 1000 + HOUR), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 1000 + HOUR), VG_GUARD_BREAKER);
  assert_string_equal(why,
                      "target 'db' breaker is half-open after 3 failed actions in a row: a "
                      "probe action is running");
  assert_int_equal(take(g, "scale", "db", NULL, T0 + 5 * HOUR), VG_GUARD_BREAKER);
  /* the probe fails: open for another cool-down */
  vg_guard_finish(g, "restart", "db", false, T0 + 2 * HOUR);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 2 * HOUR), VG_GUARD_BREAKER);
  assert_string_equal(why,
                      "target 'db' breaker is open after 4 failed actions in a row; next "
                      "probe in 3600 s");
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 3 * HOUR - 1), VG_GUARD_BREAKER);
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.breakers_open, 1);
  /* the next probe succeeds: closed, and the count starts again */
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 3 * HOUR), VG_GUARD_OK);
  vg_guard_finish(g, "restart", "db", true, T0 + 3 * HOUR);
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.breakers_open, 0);
  fail_n(g, "db", 2, T0 + 3 * HOUR);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 3 * HOUR), VG_GUARD_OK);
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.refused[VG_GUARD_BREAKER], 6);
  vg_guard_free(g);
}

static void test_reset_breaker(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  opts_none(&o);
  o.breaker_failures = 2;
  vg_guard_t *g = guard(&o);
  assert_false(vg_guard_reset_breaker(g, "db", T0)); /* never seen */
  fail_n(g, "db", 1, T0);
  assert_false(vg_guard_reset_breaker(g, "db", T0)); /* closed (the count is zeroed) */
  fail_n(g, "db", 1, T0);
  assert_int_equal(take(g, "restart", "db", NULL, T0), VG_GUARD_OK); /* still closed */
  vg_guard_finish(g, "restart", "db", false, T0);
  assert_int_equal(take(g, "restart", "db", NULL, T0), VG_GUARD_BREAKER);
  assert_true(vg_guard_reset_breaker(g, "db", T0 + 1));
  assert_false(vg_guard_reset_breaker(g, "db", T0 + 1));
  vg_guard_stats_t st;
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.breakers_open, 0);
  assert_int_equal(st.targets, 0); /* nothing left to remember */
  fail_n(g, "db", 1, T0 + 2);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 2), VG_GUARD_OK);
  /* resetting while the probe runs: the probe's failure counts as the first again */
  vg_guard_finish(g, "restart", "db", false, T0 + 2);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 2 + HOUR), VG_GUARD_OK);
  assert_true(vg_guard_reset_breaker(g, "db", T0 + 2 + HOUR));
  vg_guard_finish(g, "restart", "db", false, T0 + 2 + HOUR);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 2 + HOUR), VG_GUARD_OK);
  vg_guard_free(g);
}

/* ---- persistence ---- */

static void test_restart_keeps_budgets(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  vg_guard_opts_default(&o);
  o.type_rate = (vg_rate_t){ 3, HOUR };
  o.blast_max_targets = 2;
  o.breaker_failures = 2;
  vg_guard_t *g = guard(&o);
  store_t *s = store_new();
  assert_int_equal(take(g, "restart", "a", "prod", T0), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "b", "prod", T0 + 1000), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "c", "stage", T0 + 2000), VG_GUARD_OK);
  vg_guard_finish(g, "restart", "a", true, T0 + 3000);
  vg_guard_finish(g, "restart", "b", false, T0 + 3000);
  vg_guard_finish(g, "restart", "c", false, T0 + 3000);
  assert_int_equal(take(g, "scale", "d", NULL, T0 + 3000), VG_GUARD_OK);
  vg_guard_finish(g, "scale", "d", false, T0 + 3000);
  assert_int_equal(take(g, "scale", "d", NULL, T0 + 6 * MIN), VG_GUARD_OK);
  vg_guard_finish(g, "scale", "d", false, T0 + 6 * MIN); /* d's breaker opens */
  vg_guard_each_dirty(g, store_put, s);
  row_t *r = store_find(s, "bucket:type:restart");
  assert_non_null(r);
  assert_true(fabs(r->value - 2000 * 3.0 / HOUR) < 1e-12); /* 3, less 3, plus 2 s' worth */
  assert_true(r->at == T0 + 2000);
  r = store_find(s, "breaker:d");
  assert_non_null(r);
  assert_true(r->value == 2.5);
  assert_true(r->at == T0 + 6 * MIN + HOUR);
  r = store_find(s, "breaker:b");
  assert_non_null(r);
  assert_true(r->value == 1 && r->at == T0 + 3000); /* closed: at is the last failure */
  assert_null(store_find(s, "breaker:a"));
  r = store_find(s, "cooldown:d");
  assert_non_null(r);
  assert_true(r->value == 1 && r->at == T0 + 11 * MIN);

  /* the same questions before and after a restart get the same answers */
  static const struct {
    const char *type, *target, *scope;
  } q[] = {
    { "restart", "e", NULL }, { "restart", "a", "prod" }, { "scale", "a", "prod" },
    { "scale", "e", "prod" }, { "scale", "d", NULL },     { "scale", "c", "stage" },
    { "scale", "b", NULL },   { "scale", "f", "stage" },  { "exec", "a", NULL },
  };
  static const int64_t at[] = { 10000,    4 * MIN, 5 * MIN + 2000, 20 * MIN,
                                31 * MIN, HOUR,    HOUR + 6 * MIN, 2 * HOUR };
  enum { NQ = sizeof(q) / sizeof(q[0]), NAT = sizeof(at) / sizeof(at[0]) };
  /* the budget is not reset: the restart type's 3 tokens are spent, and so on */
  vg_guard_t *g2 = restored(s, &o);
  assert_int_equal(take(g2, "restart", "e", NULL, T0 + 10000), VG_GUARD_RATE_TYPE);
  assert_int_equal(take(g2, "restart", "f", "prod", T0 + 20 * MIN), VG_GUARD_BLAST);
  assert_int_equal(take(g2, "scale", "d", NULL, T0 + 20 * MIN), VG_GUARD_BREAKER);
  vg_guard_stats_t st;
  vg_guard_stats(g2, T0, &st);
  assert_int_equal(st.breakers_open, 1);
  vg_guard_free(g2);
  g2 = restored(s, &o); /* before the checks below drop what they see expire */
  vg_guard_verdict_t before[NAT][NQ];
  char before_why[NAT][NQ][sizeof(why)];
  for (size_t i = 0; i < NAT; i++) {
    for (size_t k = 0; k < NQ; k++) {
      before[i][k] = check(g, q[k].type, q[k].target, q[k].scope, T0 + at[i]);
      snprintf(before_why[i][k], sizeof(before_why[i][k]), "%s", why);
    }
  }
  vg_guard_free(g);
  g = g2;
  int refused = 0;
  for (size_t i = 0; i < NAT; i++) {
    for (size_t k = 0; k < NQ; k++) {
      vg_guard_verdict_t v = check(g, q[k].type, q[k].target, q[k].scope, T0 + at[i]);
      if (v != before[i][k] || strcmp(why, before_why[i][k]) != 0) {
        fail_msg("%s %s at +%lld: %d '%s' before the restart, %d '%s' after", q[k].type,
                 q[k].target, (long long)at[i], (int)before[i][k], before_why[i][k], (int)v, why);
      }
      refused += v != VG_GUARD_OK;
    }
  }
  assert_true(refused >= 10); /* the questions do hit the rails */
  vg_guard_free(g);
  store_free(s);
}

static void test_restart_during_probe_stays_closed(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  opts_none(&o);
  o.breaker_failures = 1;
  vg_guard_t *g = guard(&o);
  store_t *s = store_new();
  fail_n(g, "db", 1, T0);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + HOUR), VG_GUARD_OK); /* the probe */
  g = restart(g, s, &o); /* crashed while it ran: its outcome is unknown */
  assert_int_equal(take(g, "restart", "db", NULL, T0 + HOUR), VG_GUARD_BREAKER);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 2 * HOUR - 1), VG_GUARD_BREAKER);
  assert_int_equal(take(g, "restart", "db", NULL, T0 + 2 * HOUR), VG_GUARD_OK);
  vg_guard_free(g);
  store_free(s);
}

static void test_deletions_reported_once(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  vg_guard_opts_default(&o);
  o.blast_max_targets = 20;
  vg_guard_t *g = guard(&o);
  store_t *s = store_new();
  /* 200 targets nobody asks about again: the sweep has to find them */
  for (int i = 0; i < 200; i++) {
    char t[16];
    snprintf(t, sizeof(t), "pod-%d", i);
    int64_t now = T0 + (int64_t)i * 2 * MIN; /* within the type's 30 per hour */
    assert_int_equal(take(g, "restart", t, "prod", now), VG_GUARD_OK);
    vg_guard_finish(g, "restart", t, i % 2 == 0, now);
    vg_guard_each_dirty(g, store_put, s);
  }
  /* cooldowns and blast entries went as time passed, buckets and breakers are recent */
  /* what is left: the type's bucket, the last half hour's blast entries, the last hour's
     failures, recent cooldowns and target buckets */
  assert_true(s->n >= 30 && s->n <= 60);
  assert_true(s->deletes >= 570); /* 190 each of cooldowns, target buckets, blast entries */
  assert_int_equal(s->deletes_of_missing, 0);
  size_t deleted = s->deletes;
  /* a day later every entry is obsolete; a few calls sweep them all */
  int64_t later = T0 + 24 * HOUR;
  vg_guard_stats_t st;
  int calls;
  for (calls = 0; calls < 1000; calls++) {
    assert_int_equal(check(g, "noop", "elsewhere", NULL, later), VG_GUARD_OK);
    vg_guard_each_dirty(g, store_put, s);
    vg_guard_stats(g, later, &st);
    if (s->n == 0 && st.targets + st.types + st.blast_entries == 0) {
      break;
    }
  }
  assert_true(calls < 100);
  assert_int_equal(s->n, 0);
  assert_int_equal(s->deletes_of_missing, 0);
  assert_true(s->deletes > deleted);
  size_t writes = s->writes, deletes = s->deletes;
  vg_guard_each_dirty(g, store_put, s); /* nothing more: each deletion once */
  assert_int_equal(check(g, "restart", "pod-1", "prod", later), VG_GUARD_OK);
  vg_guard_each_dirty(g, store_put, s);
  assert_int_equal(s->writes, writes);
  assert_int_equal(s->deletes, deletes);
  vg_guard_free(g);
  store_free(s);
}

/* The executor collects the entries and copies them into its transaction after the call. */
typedef struct {
  const char *name[16];
  double value[16];
  size_t n;
} kept_t;

static void keep(void *ud, const char *name, double value, int64_t at)
{
  kept_t *k = ud;
  (void)at;
  assert_true(k->n < 16);
  k->name[k->n] = name;
  k->value[k->n++] = value;
}

static void test_reported_names_outlive_the_call(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  vg_guard_opts_default(&o);
  vg_guard_t *g = guard(&o);
  kept_t k = { .n = 0 };
  assert_int_equal(take(g, "restart", "web-1", "prod", T0), VG_GUARD_OK);
  vg_guard_each_dirty(g, keep, &k);
  assert_int_equal(k.n, 4);
  const char *want[] = { "cooldown:web-1", "bucket:target:web-1", "bucket:type:restart",
                         "blast:prod\x1fweb-1" };
  for (size_t i = 0; i < 4; i++) {
    size_t j = 0;
    while (j < k.n && strcmp(k.name[j], want[i]) != 0) {
      j++;
    }
    if (j == k.n) {
      fail_msg("%s not reported", want[i]);
    }
    assert_true(k.value[j] >= 0);
  }
  vg_guard_refund(g, "restart", "web-1", "prod", T0);
  k.n = 0;
  vg_guard_each_dirty(g, keep, &k);
  assert_int_equal(k.n, 4);
  for (size_t i = 0; i < k.n; i++) {
    assert_true(k.value[i] < 0);
    assert_non_null(strchr(k.name[i], ':'));
  }
  vg_guard_free(g);
}

static void test_deletion_on_access(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  opts_none(&o);
  o.cooldown_ms = MIN;
  o.target_rate = (vg_rate_t){ 2, 2 * MIN };
  vg_guard_t *g = guard(&o);
  store_t *s = store_new();
  assert_int_equal(take(g, "restart", "a", NULL, T0), VG_GUARD_OK);
  vg_guard_each_dirty(g, store_put, s);
  assert_int_equal(s->n, 2);
  row_t *r = store_find(s, "bucket:target:a");
  assert_non_null(r);
  assert_true(r->value == 1 && r->at == T0);
  /* half a minute: the cooldown still runs; the bucket is not full; nothing changed */
  assert_int_equal(check(g, "restart", "a", NULL, T0 + 30000), VG_GUARD_COOLDOWN);
  vg_guard_each_dirty(g, store_put, s);
  assert_int_equal(s->writes, 2);
  assert_int_equal(s->deletes, 0);
  /* a minute: both gone, reported once each */
  assert_int_equal(check(g, "restart", "a", NULL, T0 + MIN), VG_GUARD_OK);
  vg_guard_each_dirty(g, store_put, s);
  assert_int_equal(s->n, 0);
  assert_int_equal(s->deletes, 2);
  vg_guard_each_dirty(g, store_put, s);
  assert_int_equal(s->deletes, 2);
  vg_guard_free(g);
  store_free(s);
}

static void test_restore_ignores_junk(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  vg_guard_opts_default(&o);
  o.target_rate = (vg_rate_t){ 0, 0 }; /* stored target buckets are obsolete now */
  vg_guard_t *g = guard(&o);
  char longname[600];
  memset(longname, 'x', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  memcpy(longname, "cooldown:", 9);
  vg_guard_restore(g, longname, 1, T0 + HOUR);
  vg_guard_restore(g, "cooldown:", 1, T0 + HOUR);
  vg_guard_restore(g, "nonsense:a", 1, T0 + HOUR);
  vg_guard_restore(g, "cooldown:a", -1, T0 + HOUR);
  vg_guard_restore(g, "cooldown:a", NAN, T0 + HOUR);
  vg_guard_restore(g, "blast:noseparator", 1, T0);
  vg_guard_restore(g,
                   "blast:\x1f"
                   "a",
                   1, T0);
  vg_guard_restore(g, NULL, 1, T0);
  vg_guard_stats_t st;
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.targets + st.types + st.blast_entries, 0);
  /* obsolete rows come back as deletions: a full bucket, a closed breaker, no limit */
  vg_guard_restore(g, "bucket:type:restart", 30, T0);
  vg_guard_restore(g, "bucket:target:a", 1, T0);
  vg_guard_restore(g, "breaker:b", 0, 0);
  vg_guard_restore(g, "breaker:c", 1, 0); /* one failure: kept */
  vg_guard_restore(g, "breaker:d", 3.5, T0 + HOUR);
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.breakers_open, 1);
  store_t *s = store_new();
  vg_guard_each_dirty(g, store_put, s);
  assert_int_equal(s->deletes, 3);
  assert_int_equal(s->writes, 0);
  assert_int_equal(check(g, "restart", "d", NULL, T0 + HOUR - 1), VG_GUARD_BREAKER);
  assert_string_equal(why,
                      "target 'd' breaker is open after 3 failed actions in a row; next "
                      "probe in 1 s");
  vg_guard_free(g);
  store_free(s);
}

/* ---- names and caps ---- */

static void test_names(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  vg_guard_opts_default(&o);
  vg_guard_t *g = guard(&o);
  char name[VG_GUARD_MAX_NAME + 2];
  memset(name, 'n', sizeof(name));
  name[VG_GUARD_MAX_NAME + 1] = '\0';
  assert_int_equal(take(g, "restart", name, NULL, T0), VG_GUARD_INVALID);
  assert_string_equal(why, "target name is longer than 512 bytes");
  assert_string_equal(vg_guard_verdict_name(VG_GUARD_INVALID), "EINVAL");
  assert_int_equal(take(g, name, "a", NULL, T0), VG_GUARD_INVALID);
  assert_int_equal(take(g, "restart", "a", name, T0), VG_GUARD_INVALID);
  assert_int_equal(take(g, "restart", "", NULL, T0), VG_GUARD_INVALID);
  assert_string_equal(why, "empty target name (an empty selector never means everything)");
  assert_int_equal(take(g, "restart", NULL, NULL, T0), VG_GUARD_INVALID);
  assert_int_equal(take(g, NULL, "a", NULL, T0), VG_GUARD_INVALID);
  assert_int_equal(take(g, "restart", "a", "pr\x1fod", T0), VG_GUARD_INVALID);
  assert_string_equal(why, "scope name contains the byte 0x1f");
  vg_guard_stats_t st;
  vg_guard_stats(g, T0, &st);
  assert_int_equal(st.refused[VG_GUARD_INVALID], 7);
  assert_int_equal(st.targets + st.types, 0);
  vg_guard_refund(g, "restart", name, NULL, T0); /* ignored */
  vg_guard_finish(g, "restart", name, false, T0);
  assert_false(vg_guard_reset_breaker(g, name, T0));

  /* 512 bytes is fine, and so are odd bytes; the sentence shows them escaped and cut */
  name[VG_GUARD_MAX_NAME] = '\0';
  name[0] = '\n';
  name[1] = '\'';
  name[2] = (char)0xff;
  assert_int_equal(take(g, "restart", name,
                        "a\x1e"
                        "b",
                        T0),
                   VG_GUARD_OK);
  assert_int_equal(take(g, "restart", name,
                        "a\x1e"
                        "b",
                        T0),
                   VG_GUARD_COOLDOWN);
  char want[256];
  snprintf(want, sizeof(want),
           "target '\\x0a\\x27\\xff%.61s...' is cooling down after an action (cooldown 5m); "
           "next in 300 s",
           name + 3);
  assert_string_equal(why, want);
  store_t *s = store_new();
  vg_guard_each_dirty(g, store_put, s);
  char key[VG_GUARD_MAX_NAME + 32];
  snprintf(key, sizeof(key), "cooldown:%s", name);
  assert_non_null(store_find(s, key));
  snprintf(key, sizeof(key),
           "blast:a\x1e"
           "b\x1f%s",
           name);
  assert_non_null(store_find(s, key));
  vg_guard_finish(g, "restart", name, true, T0);
  g = restart(g, s, &o);
  assert_int_equal(take(g, "restart", name,
                        "a\x1e"
                        "b",
                        T0 + 1),
                   VG_GUARD_COOLDOWN);
  vg_guard_free(g);
  store_free(s);
}

static void test_target_cap(void **state)
{
  (void)state;
  vg_guard_opts_t o;
  opts_none(&o);
  o.cooldown_ms = MIN;
  o.max_targets = 50;
  vg_guard_t *g = guard(&o);
  char t[16];
  for (int i = 0; i < 50; i++) {
    snprintf(t, sizeof(t), "t%d", i);
    int64_t now = i == 0 ? T0 : T0 + 30000; /* t0's cooldown ends first */
    assert_int_equal(take(g, "restart", t, NULL, now), VG_GUARD_OK);
    vg_guard_finish(g, "restart", t, true, now);
  }
  /* full of state that protects something: refuse the newcomer, forget nothing */
  assert_int_equal(take(g, "restart", "new", NULL, T0 + 30001), VG_GUARD_CONCURRENCY);
  assert_string_equal(why,
                      "the guard tracks 50 targets already (its limit); refusing new "
                      "target 'new' rather than forgetting state that protects others");
  assert_int_equal(take(g, "restart", "t7", NULL, T0 + 30001), VG_GUARD_COOLDOWN);
  /* once t0's cooldown has passed, its room is found at once (wherever the sweep is) */
  assert_int_equal(take(g, "restart", "new", NULL, T0 + MIN), VG_GUARD_OK);
  assert_int_equal(take(g, "restart", "new2", NULL, T0 + MIN), VG_GUARD_CONCURRENCY);
  assert_int_equal(take(g, "restart", "t0", NULL, T0 + MIN), VG_GUARD_CONCURRENCY);
  vg_guard_stats_t st;
  vg_guard_stats(g, T0 + MIN, &st);
  assert_true(st.targets <= 50);
  vg_guard_free(g);

  /* blast entries count against the same cap */
  opts_none(&o);
  o.blast_max_targets = 1000;
  o.max_targets = 20;
  g = guard(&o);
  for (int i = 0; i < 20; i++) {
    snprintf(t, sizeof(t), "t%d", i);
    assert_int_equal(take(g, "restart", t, "prod", T0), VG_GUARD_OK);
    vg_guard_finish(g, "restart", t, true, T0);
  }
  assert_int_equal(take(g, "restart", "t20", "prod", T0), VG_GUARD_CONCURRENCY);
  assert_non_null(strstr(why, "20 blast-radius entries"));
  assert_int_equal(take(g, "restart", "t20", NULL, T0), VG_GUARD_OK);
  vg_guard_free(g);

  /* and so do action types */
  opts_none(&o);
  g = guard(&o);
  for (int i = 0; i < VG_GUARD_MAX_TYPES; i++) {
    snprintf(t, sizeof(t), "type-%d", i);
    assert_int_equal(take(g, t, "a", NULL, T0), VG_GUARD_OK);
  }
  assert_int_equal(take(g, "one-more", "a", NULL, T0), VG_GUARD_CONCURRENCY);
  assert_string_equal(why,
                      "the guard tracks 1024 action types already (its limit); refusing "
                      "new type 'one-more'");
  vg_guard_free(g);
}

/* ---- properties ---- */

static uint64_t rng;

static uint32_t rnd(uint32_t n)
{
  rng = rng * 6364136223846793005u + 1442695040888963407u;
  return (uint32_t)((rng >> 33) % n);
}

/* Random takes at random times: no more than count + elapsed * rate for the type, ever; as
 * many as that allows, about; and a twin guard restarted at random moments from its stored
 * state decides exactly the same. */
static void test_property_rate_and_restarts(void **state)
{
  (void)state;
  store_t *s = store_new();
  for (uint64_t seed = 1; seed <= 20; seed++) {
    rng = seed;
    vg_guard_opts_t o;
    opts_none(&o);
    o.type_rate = (vg_rate_t){ 1 + rnd(10), (uint64_t)(1000 + rnd(600000)) };
    o.target_rate = (vg_rate_t){ 1 + rnd(3), (uint64_t)(1000 + rnd(600000)) };
    o.cooldown_ms = rnd(2) ? rnd(60000) : 0;
    o.blast_max_targets = rnd(5);
    o.blast_window_ms = rnd(600000);
    o.breaker_failures = rnd(4);
    o.breaker_cooldown_ms = rnd(600000);
    double rate = o.type_rate.count / (double)o.type_rate.per_ms;
    vg_guard_t *g = guard(&o), *twin = guard(&o);
    store_clear(s);
    int64_t now = T0 - (int64_t)rnd(1000000) * 1000, start = now;
    int taken = 0, refused = 0;
    for (int step = 0; step < 3000; step++) {
      now += rnd(4) == 0 ? rnd(100000) : rnd(3000);
      if (step == 0) {
        start = now; /* the bound counts from the first ask */
      }
      char target[16], scope[8];
      snprintf(target, sizeof(target), "t%u", rnd(40));
      snprintf(scope, sizeof(scope), "s%u", rnd(3));
      const char *type = rnd(3) ? "restart" : "scale";
      vg_guard_verdict_t v = take(g, type, target, scope, now);
      char first[sizeof(why)];
      snprintf(first, sizeof(first), "%s", why);
      vg_guard_verdict_t w = take(twin, type, target, scope, now);
      if (v != w || strcmp(why, first) != 0) {
        fail_msg("seed %llu step %d: %d '%s' without restarts, %d '%s' with",
                 (unsigned long long)seed, step, (int)v, first, (int)w, why);
      }
      if (v == VG_GUARD_OK) {
        bool ok = rnd(3) != 0;
        if (rnd(10) == 0) { /* the claim did not commit */
          vg_guard_refund(g, type, target, scope, now);
          vg_guard_refund(twin, type, target, scope, now);
        } else {
          vg_guard_finish(g, type, target, ok, now);
          vg_guard_finish(twin, type, target, ok, now);
          if (strcmp(type, "restart") == 0) {
            taken++;
          }
        }
      } else if (strcmp(type, "restart") == 0) {
        refused++;
      }
      double bound = o.type_rate.count + (double)(now - start) * rate;
      if (taken > bound + 1e-6) {
        fail_msg("seed %llu step %d: %d restarts in %lld ms, the rate allows %.3f",
                 (unsigned long long)seed, step, taken, (long long)(now - start), bound);
      }
      vg_guard_each_dirty(twin, store_put, s); /* as the ledger does with every claim */
      if (rnd(50) == 0) {
        twin = restart(twin, s, &o);
      }
    }
    assert_true(taken > 0);
    assert_true(refused > 0); /* the sequence does reach the limits */
    vg_guard_free(g);
    vg_guard_free(twin);
  }
  store_free(s);
}

/* Saturating demand: the bucket lets through what the rate allows, to the action. */
static void test_property_rate_is_reached(void **state)
{
  (void)state;
  for (uint64_t seed = 1; seed <= 20; seed++) {
    rng = seed * 7919;
    vg_guard_opts_t o;
    opts_none(&o);
    double count = 1 + rnd(20);
    o.type_rate = (vg_rate_t){ count, (uint64_t)(count * (10000 + rnd(3600000))) };
    vg_guard_t *g = guard(&o); /* at most one token per 10 s, asked every 2 s at most */
    int64_t now = T0, start = now;
    int taken = 0;
    for (int step = 0; step < 5000; step++) {
      now += rnd(2000);
      char target[16];
      snprintf(target, sizeof(target), "t%u", rnd(1000));
      if (take(g, "restart", target, NULL, now) == VG_GUARD_OK) {
        vg_guard_finish(g, "restart", target, true, now);
        taken++;
      }
      double bound = o.type_rate.count +
                     (double)(now - start) * o.type_rate.count / (double)o.type_rate.per_ms;
      assert_true(taken <= bound + 1e-6);
      /* no token wasted but what came before the first ask and since the last: < 1 + 2 gaps */
      if (step >= 20) { /* the burst is spent */
        assert_true(taken >= bound - 1 - 4000.0 * o.type_rate.count / (double)o.type_rate.per_ms);
      }
    }
    vg_guard_free(g);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_bucket_refill_and_burst),
    cmocka_unit_test(test_fractional_rate),
    cmocka_unit_test(test_per_type_override),
    cmocka_unit_test(test_target_bucket_is_its_own),
    cmocka_unit_test(test_cooldown),
    cmocka_unit_test(test_concurrency),
    cmocka_unit_test(test_refund_restores_everything),
    cmocka_unit_test(test_blast_radius),
    cmocka_unit_test(test_breaker),
    cmocka_unit_test(test_reset_breaker),
    cmocka_unit_test(test_restart_keeps_budgets),
    cmocka_unit_test(test_restart_during_probe_stays_closed),
    cmocka_unit_test(test_deletions_reported_once),
    cmocka_unit_test(test_reported_names_outlive_the_call),
    cmocka_unit_test(test_deletion_on_access),
    cmocka_unit_test(test_restore_ignores_junk),
    cmocka_unit_test(test_names),
    cmocka_unit_test(test_target_cap),
    cmocka_unit_test(test_property_rate_and_restarts),
    cmocka_unit_test(test_property_rate_is_reached),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
