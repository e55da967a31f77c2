/* Policy set tests (core/policy.c) on real files in a temporary directory and a real runtime:
 * loading, every validation error with its file:line, dispatch to matching policies only,
 * reload (unchanged, edited, broken, fixed, removed, lib/ changes), draining of in-flight tasks
 * of an old version to its deadline, error budgets, quarantine, `every` jobs on the virtual
 * clock, and the debounced directory watch on the real clock. What policies do is read back
 * from the log lines they write (vg_log_set_sink). */
#include "core/policy.h"

#include <ftw.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "core/clock.h"
#include "core/every.h"
#include "core/log.h"
#include "core/runtime.h"
#include "core/task.h"
#include "test_support.h"

#define EPOCH 1767225600.0

/* ---- captured log lines ---- */

#define MAX_LINES 2048
static char *g_lines[MAX_LINES];
static int g_nlines;

static void sink(const char *line, void *ud)
{
  (void)ud;
  if (g_nlines < MAX_LINES) {
    g_lines[g_nlines++] = strdup(line);
  }
}

static void log_clear(void)
{
  for (int i = 0; i < g_nlines; i++) {
    free(g_lines[i]);
  }
  g_nlines = 0;
}

/* Lines containing every one of the (up to three) needles. */
static int log_count3(const char *a, const char *b, const char *c)
{
  int n = 0;
  for (int i = 0; i < g_nlines; i++) {
    n += strstr(g_lines[i], a) != NULL && (b == NULL || strstr(g_lines[i], b) != NULL) &&
         (c == NULL || strstr(g_lines[i], c) != NULL);
  }
  return n;
}

static int log_count(const char *a)
{
  return log_count3(a, NULL, NULL);
}

/* The value of `key` in a logfmt line, unescaped, or "" when absent. */
static const char *logfmt_field(const char *line, const char *key, char *out, size_t cap)
{
  char pat[64];
  snprintf(pat, sizeof(pat), " %s=", key);
  const char *p = strstr(line, pat);
  size_t n = 0;
  out[0] = '\0';
  if (p == NULL) {
    return out;
  }
  p += strlen(pat);
  if (*p != '"') {
    while (*p && *p != ' ' && n + 1 < cap) {
      out[n++] = *p++;
    }
  } else {
    for (p++; *p && *p != '"' && n + 1 < cap; p++) {
      if (*p == '\\' && p[1] != '\0') {
        p++;
        out[n++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
      } else {
        out[n++] = *p;
      }
    }
  }
  out[n] = '\0';
  return out;
}

/* The `key` field of the last line containing `needle` (and `also`, if given). */
static const char *last_field(const char *needle, const char *also, const char *key)
{
  static char buf[8192];
  buf[0] = '\0';
  for (int i = g_nlines - 1; i >= 0; i--) {
    if (strstr(g_lines[i], needle) != NULL && (also == NULL || strstr(g_lines[i], also))) {
      return logfmt_field(g_lines[i], key, buf, sizeof(buf));
    }
  }
  return buf;
}

/* ---- fixture: a policies directory, a runtime, a policy set ---- */

typedef struct {
  char dir[64];
  vg_runtime_t *rt;
  vg_policies_t *ps;
} pfx_t;

static void path_of(const pfx_t *f, const char *name, char *out, size_t cap)
{
  snprintf(out, cap, "%s/%s", f->dir, name);
}

static void write_file(const pfx_t *f, const char *name, const char *text)
{
  char path[256];
  path_of(f, name, path, sizeof(path));
  char *slash = strrchr(path, '/');
  *slash = '\0';
  mkdir(path, 0755); /* lib/ and below, one level at a time as the tests need */
  *slash = '/';
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  assert_int_equal(fputs(text, fp) >= 0, 1);
  assert_int_equal(fclose(fp), 0);
}

static void remove_file(const pfx_t *f, const char *name)
{
  char path[256];
  path_of(f, name, path, sizeof(path));
  assert_int_equal(unlink(path), 0);
}

/* What is open now, for the teardown of a test that failed half-way. */
static vg_runtime_t *g_open_rt;
static vg_policies_t *g_open_ps;
static char g_open_dir[64];

static void pfx_open(pfx_t *f, bool virtual_clock)
{
  log_clear();
  vg_log_set_sink(sink, NULL);
  vg_log_set_level(VG_LOG_DEBUG);
  snprintf(f->dir, sizeof(f->dir), "/tmp/vg-policy-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  f->rt = vg_runtime_new();
  assert_non_null(f->rt);
  if (virtual_clock) {
    vg_clock_use_virtual(f->rt, EPOCH);
  }
  f->ps = vg_policies_new(f->rt, f->dir);
  assert_non_null(f->ps);
  g_open_rt = f->rt;
  g_open_ps = f->ps;
  snprintf(g_open_dir, sizeof(g_open_dir), "%s", f->dir);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void count_cb(uv_handle_t *h, void *arg)
{
  struct {
    int n;
    uv_handle_t *skip;
  } *c = arg;
  c->n += h != c->skip;
}

/* Frees the set and the runtime; the loop must close with no handle left and no warning. */
static void pfx_close(pfx_t *f)
{
  g_open_rt = NULL;
  g_open_ps = NULL;
  g_open_dir[0] = '\0';
  vg_policies_free(f->ps);
  f->ps = NULL;
  uv_run(f->rt->loop, UV_RUN_NOWAIT); /* close callbacks (watch handles, timers) */
  struct {
    int n;
    uv_handle_t *skip;
  } c = { 0, (uv_handle_t *)&f->rt->sched_idle };
  uv_walk(f->rt->loop, count_cb, &c);
  assert_int_equal(c.n, 0);
  vg_runtime_free(f->rt);
  f->rt = NULL;
  assert_int_equal(log_count("loop closed with handles still open"), 0);
  vg_log_set_sink(NULL, NULL);
  vg_log_set_level(VG_LOG_INFO);
  log_clear();
  assert_int_equal(nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* Runs after every test: frees what a failed test left open, so that one failure does not
 * show up again as leaks. */
static int pfx_teardown(void **state)
{
  (void)state;
  if (g_open_rt != NULL) {
    vg_policies_free(g_open_ps);
    vg_runtime_free(g_open_rt);
    nftw(g_open_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    g_open_rt = NULL;
    g_open_ps = NULL;
  }
  vg_log_set_sink(NULL, NULL);
  vg_log_set_level(VG_LOG_INFO);
  log_clear();
  return 0;
}

static int dispatch(pfx_t *f, const char *alertname, const char *pod)
{
  vg_label_t labels[2] = {
    { "alertname", 9, alertname, strlen(alertname) },
    { "pod", 3, pod, strlen(pod) },
  };
  vg_alert_t a = { .labels = labels, .nlabels = 2, .status = "firing" };
  return vg_policies_dispatch(f->ps, &a, NULL, NULL);
}

/* A policy that logs `msg` with the alert's pod for every alert named `alertname`. */
static void write_hit_policy(
    pfx_t *f, const char *file, const char *name, const char *alertname, const char *msg)
{
  char text[1024];
  snprintf(text, sizeof(text),
           "return {\n"
           "  name = \"%s\",\n"
           "  match = { 'alertname=\"%s\"' },\n"
           "  on_alert = function(alert, ctx)\n"
           "    ctx.log.info(\"%s\", { pod = alert.labels.pod, policy = ctx.policy })\n"
           "  end,\n"
           "}\n",
           name, alertname, msg);
  write_file(f, file, text);
}

/* ---- loading ---- */

static void test_load_valid_policies(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_hit_policy(&f, "alpha.lua", "alpha", "A", "hit");
  write_hit_policy(&f, "beta.lua", "beta", "B", "hit");
  write_file(&f, "jobs.lua",
             "-- only periodic work\n"
             "return {\n"
             "  name = \"jobs\",\n"
             "  description = \"sweeps\",\n"
             "  match = {},\n"
             "  every = { sweep = { interval = \"5m\", first = \"10s\", run = function() end } },\n"
             "  limits = { memory = \"32MB\", instructions = 50000000, timeout = \"2m\" },\n"
             "}\n");
  /* not policies: specs, hidden files, other extensions */
  write_file(&f, "alpha_spec.lua", "this is not lua");
  write_file(&f, ".scratch.lua", "neither is this");
  write_file(&f, "notes.txt", "nor this");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  int n = 0;
  for (vg_policy_t *p = f.ps->list; p != NULL; p = p->next) {
    n++;
    assert_int_equal(p->generation, 1);
    assert_false(p->disabled);
    assert_null(p->last_error);
    assert_non_null(p->vm);
  }
  assert_int_equal(n, 3);
  vg_policy_t *jobs = vg_policies_find(f.ps, "jobs");
  assert_non_null(jobs);
  assert_string_equal(jobs->description, "sweeps");
  assert_int_equal(jobs->on_alert_ref, LUA_NOREF);
  assert_int_equal(jobs->vm->limits.memory, 32u << 20);
  assert_int_equal(jobs->vm->limits.instructions, 50000000);
  assert_int_equal(jobs->vm->limits.timeout_ms, 120000);
  assert_non_null(jobs->vm->every);
  assert_non_null(vg_policies_find(f.ps, "alpha"));
  assert_non_null(vg_policies_find(f.ps, "beta"));
  assert_null(vg_policies_find(f.ps, "alpha_spec"));
  assert_int_equal(log_count("msg=\"policy loaded\""), 3);
  assert_int_equal(f.ps->reloads, 1);
  assert_int_equal(f.ps->reload_failures, 0);
  pfx_close(&f);
}

static void test_policy_limits_only_tighten(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  f.ps->limits.memory = 16u << 20;
  write_file(&f, "loose.lua",
             "return { name = 'loose', match = {}, on_alert = function() end,\n"
             "  limits = { memory = '1GB', instructions = 900000000000, timeout = '1w' } }\n");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "loose");
  assert_non_null(p);
  assert_int_equal(p->vm->limits.memory, 16u << 20);
  assert_int_equal(p->vm->limits.instructions, f.ps->limits.instructions);
  assert_int_equal(p->vm->limits.timeout_ms, f.ps->limits.timeout_ms);
  pfx_close(&f);
}

static void test_missing_directory(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  vg_policies_t *ps = vg_policies_new(f.rt, "/nonexistent/vigil/policies");
  assert_int_equal(vg_policies_reload(ps, "test"), 1);
  assert_int_equal(log_count("msg=\"cannot read the policies directory\""), 1);
  assert_null(ps->list);
  vg_policies_free(ps);
  pfx_close(&f);
}

/* ---- validation errors: "file:line: message" ---- */

/* Writes bad.lua, reloads, and returns the error the load failure logged. */
static const char *load_error(pfx_t *f, const char *text)
{
  write_file(f, "bad.lua", text);
  int before = log_count("msg=\"policy failed to load\"");
  assert_int_equal(vg_policies_reload(f->ps, "test"), 1);
  assert_int_equal(log_count("msg=\"policy failed to load\""), before + 1);
  assert_null(f->ps->list); /* nothing half-loaded */
  return last_field("msg=\"policy failed to load\"", NULL, "error");
}

static void expect_error(pfx_t *f, const char *text, int line, const char *message)
{
  char want[1024];
  snprintf(want, sizeof(want), "%s/bad.lua:%d: %s", f->dir, line, message);
  const char *got = load_error(f, text);
  if (strncmp(got, want, strlen(want)) != 0) {
    fail_msg("expected an error starting with\n  %s\ngot\n  %s", want, got);
  }
  /* vg_policy_check_file (vigil check) reports the same */
  char path[256], name[80], err[2048];
  path_of(f, "bad.lua", path, sizeof(path));
  assert_int_equal(vg_policy_check_file(f->rt, path, NULL, name, sizeof(name), err, sizeof(err)),
                   -1);
  assert_int_equal(strncmp(err, want, strlen(want)), 0);
}

static void test_validation_errors(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  expect_error(&f,
               "return {\n"
               "  match = {},\n"
               "  on_alert = function() end,\n"
               "}\n",
               1, "missing field 'name' (a string like \"high-cpu\")");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  on_alert = function() end,\n"
               "}\n",
               1, "missing field 'match' (use match = {} to receive every alert)");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = { 'alertname==\"X\"' },\n"
               "  on_alert = function() end,\n"
               "}\n",
               3, "bad match[1]: ");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  on_alert = function() end,\n"
               "  match = 'severity=~\"crit(\"',\n"
               "}\n",
               4, "bad match: bad regex");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = 42,\n"
               "  on_alert = function() end,\n"
               "}\n",
               3, "match must be a list of matchers");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "  on_alrt = function() end,\n"
               "}\n",
               4, "unknown field 'on_alrt' (did you mean 'on_alert'?)");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  mtch = {},\n"
               "  on_alert = function() end,\n"
               "}\n",
               3, "unknown field 'mtch' (did you mean 'match'?)");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "  on_alert = function() end,\n"
               "  frobnicate = true,\n"
               "}\n",
               5,
               "unknown field 'frobnicate' (known: name, match, on_alert, every, description, "
               "limits, mode, and the pipeline's group_by, enrich, classify, plan, auto, "
               "escalate, heal, guard, on_resolve)");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "  on_alert = function() end,\n"
               "  classify = function() end,\n"
               "}\n",
               4,
               "a policy either defines on_alert or the pipeline's hooks (enrich, classify, "
               "plan, escalate, ...), not both");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "  plan = { busy = { { action = 'frobnicate' } } },\n"
               "}\n",
               4,
               "plan.busy[1].action must name an action of vigil.actions (scale, restart, "
               "notify, suppress, ...), got frobnicate");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "  escalate = { { after = 'soon', notify = 'oncall' } },\n"
               "}\n",
               4, "escalate[1].after must be a duration like \"5m\", got soon");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "  on_alert = \"yes\",\n"
               "}\n",
               4, "on_alert must be a function(alert, ctx)");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "}\n",
               1, "the policy does nothing: define on_alert(alert, ctx) or every jobs");
  expect_error(&f,
               "return {\n"
               "  name = 'has space',\n"
               "  match = {},\n"
               "  on_alert = function() end,\n"
               "}\n",
               2, "name must be 1-64 characters of [A-Za-z0-9_.-], got \"has space\"");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "  on_alert = function( end,\n"
               "}\n",
               4, "");
  expect_error(&f,
               "local x = 1\n"
               "error('top level broke')\n"
               "return { name = 'x', match = {}, on_alert = function() end }\n",
               2, "top level broke");
  expect_error(&f,
               "local t = nil\n"
               "local y = t.field\n",
               2, "attempt to index a nil value");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "  on_alert = function() end,\n"
               "  limits = { memory = 'lots' },\n"
               "}\n",
               5, "limits.memory must be a size like \"32MB\" (at least 1MB)");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "  every = {\n"
               "    tick = { run = function() end },\n"
               "  },\n"
               "}\n",
               5, "every.tick.interval is required (e.g. \"30s\")");
  expect_error(&f,
               "return {\n"
               "  name = 'x',\n"
               "  match = {},\n"
               "  every = {\n"
               "    tick = { interval = '1s' },\n"
               "  },\n"
               "}\n",
               5, "every.tick.run must be a function(ctx)");
  expect_error(&f,
               "undefined_helper()\n"
               "return { name = 'x', match = {}, on_alert = function() end }\n",
               1, "undefined global 'undefined_helper'");
  /* the sandbox applies while the file loads */
  expect_error(&f,
               "local f = io.open('/etc/passwd')\n"
               "return { name = 'x', match = {}, on_alert = function() end }\n",
               1, "undefined global 'io'");
  pfx_close(&f);
}

/* A top-level loop is stopped by the load budget, and the report says where and why. */
static void test_load_budget_stops_infinite_loop(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  const char *err = load_error(&f,
                               "local n = 0\n"
                               "while true do n = n + 1 end\n");
  assert_non_null(strstr(err, "loading stopped"));
  assert_null(f.ps->list);
  /* which budget: instructions (or the 2 s slice on a slow machine), not just "killed" */
  if (strstr(err, "instruction budget exceeded") == NULL && strstr(err, "time slice") == NULL) {
    fail_msg("the error does not say which budget stopped the load: %s", err);
  }
  char want[256];
  snprintf(want, sizeof(want), "%s/bad.lua:2: ", f.dir);
  if (strncmp(err, want, strlen(want)) != 0) {
    fail_msg("expected the error to start with \"%s\", got \"%s\"", want, err);
  }
  pfx_close(&f);
}

/* Bad durations in `every` and `limits` are field errors like the others. */
static void test_bad_durations_name_field_and_line(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  const char *err = load_error(&f,
                               "return {\n"
                               "  name = 'x',\n"
                               "  match = {},\n"
                               "  on_alert = function() end,\n"
                               "  limits = { timeout = 'soon' },\n"
                               "}\n");
  char want[256];
  snprintf(want, sizeof(want), "%s/bad.lua:5: ", f.dir);
  if (strncmp(err, want, strlen(want)) != 0 || strstr(err, "timeout") == NULL ||
      strstr(err, "invalid duration \"soon\"") == NULL) {
    fail_msg("limits.timeout: expected \"%s...timeout...invalid duration\", got \"%s\"", want, err);
  }
  err = load_error(&f,
                   "return {\n"
                   "  name = 'x',\n"
                   "  match = {},\n"
                   "  every = {\n"
                   "    tick = { interval = 'soon', run = function() end },\n"
                   "  },\n"
                   "}\n");
  if (strncmp(err, want, strlen(want)) != 0 || strstr(err, "every.tick.interval") == NULL) {
    fail_msg("every.tick.interval: expected \"%s...every.tick.interval...\", got \"%s\"", want,
             err);
  }
  pfx_close(&f);
}

/* `first` of an every job is checked when the file loads, not found broken at activation
 * (which left the policy loaded without its job). */
static void test_bad_every_first_refused(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_file(&f, "bad.lua",
             "return {\n"
             "  name = 'x',\n"
             "  match = {},\n"
             "  every = {\n"
             "    tick = { interval = '1m', first = 'soon', run = function() end },\n"
             "  },\n"
             "}\n");
  int failed = vg_policies_reload(f.ps, "test");
  assert_int_equal(log_count("msg=\"cannot start the policy's every jobs\""), 0);
  assert_int_equal(failed, 1);
  assert_null(vg_policies_find(f.ps, "x"));
  pfx_close(&f);
}

/* A negative memory limit is a mistake, not "no limit". */
static void test_negative_memory_limit_refused(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  const char *err = load_error(&f,
                               "return {\n"
                               "  name = 'x',\n"
                               "  match = {},\n"
                               "  on_alert = function() end,\n"
                               "  limits = { memory = -1 },\n"
                               "}\n");
  assert_non_null(strstr(err, "limits.memory must be a size"));
  pfx_close(&f);
}

static void test_duplicate_names(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_hit_policy(&f, "a.lua", "dup", "A", "from-a");
  write_hit_policy(&f, "b.lua", "dup", "A", "from-b");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 1);
  vg_policy_t *p = vg_policies_find(f.ps, "dup");
  assert_non_null(p);
  assert_non_null(strstr(p->path, "/a.lua"));
  assert_null(p->next); /* only one policy */
  const char *err = last_field("msg=\"policy failed to load\"", NULL, "error");
  char a_path[256];
  path_of(&f, "a.lua", a_path, sizeof(a_path));
  assert_non_null(strstr(err, "duplicate policy name 'dup' (also in "));
  assert_non_null(strstr(err, a_path));
  assert_int_equal(dispatch(&f, "A", "p1"), 1);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(log_count("msg=from-a"), 1);
  assert_int_equal(log_count("msg=from-b"), 0);
  pfx_close(&f);
}

static void test_duplicate_name_error_points_at_name(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_hit_policy(&f, "a.lua", "dup", "A", "from-a");
  write_hit_policy(&f, "b.lua", "dup", "A", "from-b");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 1);
  const char *err = last_field("msg=\"policy failed to load\"", NULL, "error");
  char want[256];
  snprintf(want, sizeof(want), "%s/b.lua:2: duplicate policy name 'dup'", f.dir);
  if (strncmp(err, want, strlen(want)) != 0) {
    fail_msg("expected \"%s...\", got \"%s\"", want, err);
  }
  pfx_close(&f);
}

/* ---- dispatch ---- */

static void test_dispatch_reaches_matching_policies_only(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_hit_policy(&f, "alpha.lua", "alpha", "A", "hit");
  write_hit_policy(&f, "beta.lua", "beta", "B", "hit");
  write_file(
      &f, "all.lua",
      "return { name = 'all', match = {},\n"
      "  on_alert = function(alert, ctx) ctx.log.info('seen', { name = alert.name }) end }\n");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_int_equal(dispatch(&f, "A", "p1"), 2);
  assert_int_equal(dispatch(&f, "A", "p2"), 2);
  assert_int_equal(dispatch(&f, "C", "p3"), 1);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(log_count3("msg=hit", "vm=alpha", "pod=p1"), 1);
  assert_int_equal(log_count3("msg=hit", "vm=alpha", "pod=p2"), 1);
  assert_int_equal(log_count3("msg=hit", "vm=alpha", "policy=alpha"), 2);
  assert_int_equal(log_count3("msg=hit", "vm=beta", NULL), 0);
  assert_int_equal(log_count3("msg=seen", "vm=all", "name=A"), 2);
  assert_int_equal(log_count3("msg=seen", "vm=all", "name=C"), 1);
  assert_int_equal(log_count3("msg=hit", "task=on_alert:A", NULL), 2);
  vg_policy_t *alpha = vg_policies_find(f.ps, "alpha");
  vg_policy_t *beta = vg_policies_find(f.ps, "beta");
  assert_int_equal(alpha->matched, 2);
  assert_int_equal(alpha->runs, 2);
  assert_int_equal(alpha->failures, 0);
  assert_int_equal(beta->matched, 0);
  assert_int_equal(beta->runs, 0);
  assert_int_equal(f.ps->dispatched, 3);
  pfx_close(&f);
}

static void test_disable_and_enable(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_hit_policy(&f, "alpha.lua", "alpha", "A", "hit");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "alpha");
  vg_policy_disable(p, "operator");
  assert_true(p->disabled);
  assert_string_equal(p->disabled_reason, "operator");
  assert_int_equal(dispatch(&f, "A", "p1"), 0);
  vg_policy_enable(p);
  assert_false(p->disabled);
  assert_null(p->disabled_reason);
  assert_int_equal(dispatch(&f, "A", "p2"), 1);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(log_count3("msg=hit", "pod=p1", NULL), 0);
  assert_int_equal(log_count3("msg=hit", "pod=p2", NULL), 1);
  pfx_close(&f);
}

/* ---- reload ---- */

static void test_reload_lifecycle(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_hit_policy(&f, "p.lua", "p", "A", "v1");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "p");
  assert_non_null(p);
  vg_vm_t *vm1 = p->vm;

  /* unchanged: a no-op */
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_ptr_equal(vg_policies_find(f.ps, "p"), p);
  assert_int_equal(p->generation, 1);
  assert_ptr_equal(p->vm, vm1);
  assert_null(f.ps->draining);
  assert_int_equal(log_count("msg=\"policy reloaded\""), 0);

  /* edited: the next generation, the old VM retired */
  write_hit_policy(&f, "p.lua", "p", "A", "v2");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_ptr_equal(vg_policies_find(f.ps, "p"), p);
  assert_int_equal(p->generation, 2);
  assert_ptr_not_equal(p->vm, vm1);
  assert_non_null(f.ps->draining);
  assert_int_equal(log_count("msg=\"policy reloaded\""), 1);
  vg_runtime_run(f.rt, -1); /* the idle old VM is closed on the next turn */
  assert_null(f.ps->draining);
  assert_int_equal(log_count("msg=\"old policy version closed\""), 1);
  assert_int_equal(dispatch(&f, "A", "p1"), 1);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(log_count("msg=v2"), 1);
  assert_int_equal(log_count("msg=v1"), 0);

  /* broken edit: the running version stays, the error is kept */
  write_file(&f, "p.lua",
             "return {\n"
             "  name = 'p',\n"
             "  match = { 'alertname=\"A\"' },\n"
             "  on_alert = function(alert, ctx) ctx.log.info('v3' end,\n"
             "}\n");
  vg_vm_t *vm2 = p->vm;
  assert_int_equal(vg_policies_reload(f.ps, "test"), 1);
  assert_int_equal(p->generation, 2);
  assert_ptr_equal(p->vm, vm2);
  assert_non_null(p->last_error);
  char want[256];
  snprintf(want, sizeof(want), "%s/p.lua:4: ", f.dir);
  assert_int_equal(strncmp(p->last_error, want, strlen(want)), 0);
  assert_int_equal(log_count("msg=\"policy failed to reload: keeping the running version\""), 1);
  assert_int_equal(f.ps->reload_failures, 1);
  assert_int_equal(dispatch(&f, "A", "p2"), 1);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(log_count3("msg=v2", "pod=p2", NULL), 1);

  /* the same broken content again: still failing, still reported */
  assert_int_equal(vg_policies_reload(f.ps, "test"), 1);
  assert_int_equal(p->generation, 2);

  /* fixed */
  write_hit_policy(&f, "p.lua", "p", "A", "v4");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_int_equal(p->generation, 3);
  assert_null(p->last_error);
  assert_int_equal(dispatch(&f, "A", "p3"), 1);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(log_count3("msg=v4", "pod=p3", NULL), 1);

  /* removed */
  remove_file(&f, "p.lua");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_null(vg_policies_find(f.ps, "p"));
  assert_null(f.ps->list);
  assert_int_equal(log_count("msg=\"policy removed\""), 1);
  assert_int_equal(dispatch(&f, "A", "p4"), 0);
  vg_runtime_run(f.rt, -1);
  assert_null(f.ps->draining);
  pfx_close(&f);
}

static void test_reload_renamed_policy(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_hit_policy(&f, "p.lua", "old-name", "A", "hit");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  write_hit_policy(&f, "p.lua", "new-name", "A", "hit");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_null(vg_policies_find(f.ps, "old-name"));
  vg_policy_t *p = vg_policies_find(f.ps, "new-name");
  assert_non_null(p);
  assert_int_equal(p->generation, 2);
  pfx_close(&f);
}

static const char DEP_POLICY[] =
    "local helper = require('lib.helper')\n"
    "return {\n"
    "  name = 'dep',\n"
    "  match = {},\n"
    "  on_alert = function(alert, ctx) ctx.log.info('dep', { tag = helper.tag }) end,\n"
    "}\n";

static void test_reload_on_lib_change(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_file(&f, "lib/helper.lua", "return { tag = 'one' }\n");
  write_file(&f, "dep.lua", DEP_POLICY);
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "dep");
  assert_non_null(p);
  assert_int_equal(p->generation, 1);
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0); /* nothing changed */
  assert_int_equal(p->generation, 1);
  assert_int_equal(dispatch(&f, "X", "p1"), 1);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(log_count3("msg=dep", "tag=one", NULL), 1);

  write_file(&f, "lib/helper.lua", "return { tag = 'two' }\n");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_int_equal(p->generation, 2);
  assert_int_equal(dispatch(&f, "X", "p2"), 1);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(log_count3("msg=dep", "tag=two", NULL), 1);

  /* a lib module that breaks: the dependent keeps its running version */
  write_file(&f, "lib/helper.lua", "return { tag = \n");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 1);
  assert_int_equal(p->generation, 2);
  assert_non_null(strstr(p->last_error, "lib/helper.lua:"));
  pfx_close(&f);
}

/* require('lib.net.util') reads lib/net/util.lua: a change there reloads its dependents too. */
static void test_reload_on_nested_lib_change(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_file(&f, "lib/x.lua", "return {}\n");
  write_file(&f, "lib/net/util.lua", "return { tag = 'one' }\n");
  write_file(&f, "dep.lua",
             "local util = require('lib.net.util')\n"
             "return { name = 'dep', match = {},\n"
             "  on_alert = function(alert, ctx) ctx.log.info('dep', { tag = util.tag }) end }\n");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "dep");
  assert_non_null(p);
  write_file(&f, "lib/net/util.lua", "return { tag = 'two' }\n");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_int_equal(p->generation, 2);
  pfx_close(&f);
}

/* ---- draining the old version ---- */

static void write_slow_policy(pfx_t *f, const char *version, const char *sleep)
{
  char text[1024];
  snprintf(text, sizeof(text),
           "return {\n"
           "  name = 'slow',\n"
           "  match = {},\n"
           "  on_alert = function(alert, ctx)\n"
           "    ctx.log.info('started', { v = '%s' })\n"
           "    vigil.sleep(%s)\n"
           "    ctx.log.info('finished', { v = '%s' })\n"
           "  end,\n"
           "}\n",
           version, sleep, version);
  write_file(f, "slow.lua", text);
}

static void test_inflight_task_drains_on_old_vm(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_slow_policy(&f, "1", "0.2");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "slow");
  vg_vm_t *old = p->vm;
  assert_int_equal(dispatch(&f, "X", "p1"), 1);
  uv_run(f.rt->loop, UV_RUN_NOWAIT); /* the task starts and sleeps */
  assert_int_equal(log_count3("msg=started", "v=1", NULL), 1);
  assert_int_equal(old->ntasks, 1);

  write_slow_policy(&f, "2", "0.2");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_ptr_not_equal(p->vm, old);
  assert_int_equal(p->generation, 2);
  assert_non_null(f.ps->draining);
  assert_true(old->draining);
  assert_int_equal(dispatch(&f, "X", "p2"), 1); /* new alerts go to the new version */

  vg_runtime_run(f.rt, -1);
  assert_int_equal(log_count3("msg=finished", "v=1", NULL), 1);
  assert_int_equal(log_count3("msg=started", "v=2", NULL), 1);
  assert_int_equal(log_count3("msg=finished", "v=2", NULL), 1);
  assert_int_equal(log_count("old policy version still busy"), 0);
  assert_null(f.ps->draining); /* closed once its task finished */
  assert_int_equal(p->failures, 0);
  assert_int_equal(p->runs, 1); /* the old version's run counts for nobody */
  pfx_close(&f);
}

static void test_drain_deadline_cancels(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  f.ps->drain_ms = 50;
  write_slow_policy(&f, "1", "30");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "slow");
  assert_int_equal(dispatch(&f, "X", "p1"), 1);
  uv_run(f.rt->loop, UV_RUN_NOWAIT);
  assert_int_equal(log_count3("msg=started", "v=1", NULL), 1);
  write_slow_policy(&f, "2", "0");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_runtime_run(f.rt, -1); /* returns after the drain deadline, not after 30 s */
  assert_int_equal(log_count3("msg=finished", "v=1", NULL), 0);
  assert_int_equal(log_count3("msg=\"old policy version still busy at drain deadline: cancelling\"",
                              "tasks=1", NULL),
                   1);
  assert_null(f.ps->draining);
  assert_int_equal(p->failures, 0);
  assert_false(p->disabled);
  pfx_close(&f);
}

/* ---- error budget ---- */

static void test_error_budget_disables(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  f.ps->budget.max = 3;
  write_file(&f, "err.lua",
             "return { name = 'err', match = {},\n"
             "  on_alert = function(alert) error('always fails on ' .. alert.labels.pod) end }\n");
  write_hit_policy(&f, "ok.lua", "ok", "A", "hit");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "err");
  for (int i = 0; i < 3; i++) {
    assert_false(p->disabled);
    char pod[16];
    snprintf(pod, sizeof(pod), "p%d", i);
    assert_int_equal(dispatch(&f, "A", pod), 2);
    vg_runtime_run(f.rt, -1);
  }
  assert_true(p->disabled);
  assert_int_equal(p->failures, 3);
  assert_int_equal(p->runs, 3);
  assert_non_null(strstr(p->last_error, "always fails on p2"));
  assert_non_null(strstr(p->disabled_reason, "3 failed runs within 300 s (error budget)"));
  assert_int_equal(log_count3("msg=\"policy disabled\"", "policy=err", NULL), 1);
  assert_int_equal(log_count("msg=\"task failed\""), 3);

  /* no longer dispatched; the others are */
  assert_int_equal(dispatch(&f, "A", "p9"), 1);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(p->runs, 3);
  assert_int_equal(log_count3("msg=hit", "pod=p9", NULL), 1);
  assert_false(vg_policies_find(f.ps, "ok")->disabled);

  /* unchanged file: stays off; edited: on again */
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_true(p->disabled);
  write_file(&f, "err.lua",
             "return { name = 'err', match = {},\n"
             "  on_alert = function(alert, ctx) ctx.log.info('fixed') end }\n");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  assert_false(p->disabled);
  assert_int_equal(dispatch(&f, "A", "p10"), 2);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(log_count("msg=fixed"), 1);
  pfx_close(&f);
}

static void test_deadline_counts_against_budget(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  f.ps->budget.max = 2;
  write_file(&f, "late.lua",
             "return { name = 'late', match = {}, limits = { timeout = '20ms' },\n"
             "  on_alert = function() vigil.sleep(30) end }\n");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "late");
  assert_int_equal(dispatch(&f, "A", "p1"), 1);
  assert_int_equal(dispatch(&f, "A", "p2"), 1);
  vg_runtime_run(f.rt, -1);
  assert_int_equal(p->failures, 2);
  assert_true(p->disabled);
  assert_non_null(strstr(p->last_error, "deadline exceeded (20 ms)"));
  pfx_close(&f);
}

static void test_quarantine_survives_new_set(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  char qpath[256];
  path_of(&f, "quarantine.txt", qpath, sizeof(qpath));
  f.ps->quarantine_path = strdup(qpath);
  write_hit_policy(&f, "q.lua", "q", "A", "hit");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "q");
  vg_policy_quarantine(p, "it stalled the event loop");
  assert_true(p->disabled);
  assert_non_null(strstr(p->disabled_reason, "quarantined: it stalled the event loop"));
  assert_int_equal(dispatch(&f, "A", "p1"), 0);

  /* a restart: a new set reading the same quarantine file does not load it */
  vg_policies_t *again = vg_policies_new(f.rt, f.dir);
  again->quarantine_path = strdup(qpath);
  assert_int_equal(vg_policies_reload(again, "restart"), 0);
  assert_null(vg_policies_find(again, "q"));
  assert_int_equal(log_count("msg=\"policy quarantined by the watchdog: not loaded\""), 1);
  /* until the file changes */
  write_hit_policy(&f, "q.lua", "q", "A", "hit2");
  assert_int_equal(vg_policies_reload(again, "edit"), 0);
  assert_non_null(vg_policies_find(again, "q"));
  vg_policies_free(again);
  pfx_close(&f);
}

/* ---- every jobs (virtual clock) ---- */

static void write_ticker(pfx_t *f, const char *msg, const char *interval)
{
  char text[1024];
  snprintf(text, sizeof(text),
           "return {\n"
           "  name = 'ticker',\n"
           "  match = {},\n"
           "  every = {\n"
           "    tick = { interval = '%s', run = function(ctx)\n"
           "      ctx.log.info('%s', { at = tostring(vigil.now()), policy = ctx.policy })\n"
           "    end },\n"
           "  },\n"
           "}\n",
           interval, msg);
  write_file(f, "ticker.lua", text);
}

static void test_every_jobs_on_schedule_and_stop_on_reload(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, true);
  write_ticker(&f, "tick-v1", "10s");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_runtime_run(f.rt, EPOCH + 35);
  assert_int_equal(log_count("msg=tick-v1"), 3);
  char at[32];
  snprintf(at, sizeof(at), "at=%.0f", EPOCH + 10);
  assert_int_equal(log_count3("msg=tick-v1", at, "policy=ticker"), 1);
  snprintf(at, sizeof(at), "at=%.0f", EPOCH + 30);
  assert_int_equal(log_count3("msg=tick-v1", at, "task=every:ticker/tick"), 1);
  assert_true(vg_clock_now(f.rt) == EPOCH + 30);

  write_ticker(&f, "tick-v2", "50s");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_runtime_run(f.rt, EPOCH + 100);
  assert_int_equal(log_count("msg=tick-v1"), 3); /* the old job stopped with its version */
  assert_int_equal(log_count("msg=tick-v2"), 1); /* at +80 s */
  snprintf(at, sizeof(at), "at=%.0f", EPOCH + 80);
  assert_int_equal(log_count3("msg=tick-v2", at, NULL), 1);
  assert_null(f.ps->draining);
  pfx_close(&f);
}

static void test_every_jobs_stop_when_disabled(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, true);
  f.ps->budget.max = 2;
  write_file(&f, "flaky.lua",
             "return { name = 'flaky', match = {},\n"
             "  every = { tick = { interval = '1m', run = function(ctx)\n"
             "    ctx.log.info('tick') error('tick failed') end } } }\n");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "flaky");
  vg_runtime_run(f.rt, EPOCH + 600);
  assert_int_equal(log_count("msg=tick"), 2);
  assert_true(p->disabled);
  assert_null(p->vm->every);
  assert_int_equal(vg_clock_pending(f.rt), 0);
  pfx_close(&f);
}

static void test_slow_every_job_skips_ticks(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, true);
  write_file(&f, "slowjob.lua",
             "return { name = 'slowjob', match = {},\n"
             "  every = { tick = { interval = '10s', run = function(ctx)\n"
             "    ctx.log.info('run') vigil.sleep('25s') end } } }\n");
  assert_int_equal(vg_policies_reload(f.ps, "test"), 0);
  vg_policy_t *p = vg_policies_find(f.ps, "slowjob");
  vg_runtime_run(f.rt, EPOCH + 65);
  /* runs start at 10 and 40 (busy at 20, 30: skipped); 50, 60 are skipped again */
  assert_int_equal(log_count("msg=run"), 2);
  assert_non_null(p->vm->every);
  assert_int_equal(p->vm->every->runs, 2);
  assert_int_equal(p->vm->every->skipped, 4);
  pfx_close(&f);
}

/* ---- watching the directory (real clock) ---- */

typedef struct {
  pfx_t *f;
  vg_policy_t *p;
  int start_generation;
  int writes_left;
  int version;
  uint64_t last_write_ns;
  uint64_t reload_seen_ns;
  uint64_t give_up_ns;
  uv_timer_t writer, poll;
} watch_t;

static void watch_write(watch_t *w)
{
  char msg[32];
  snprintf(msg, sizeof(msg), "w%d", ++w->version);
  write_hit_policy(w->f, "w.lua", "w", "A", msg);
  w->last_write_ns = uv_hrtime();
}

static void writer_cb(uv_timer_t *h)
{
  watch_t *w = h->data;
  watch_write(w);
  if (--w->writes_left == 0) {
    uv_timer_stop(h);
  }
}

static void poll_cb(uv_timer_t *h)
{
  watch_t *w = h->data;
  if (w->reload_seen_ns == 0 && w->p->generation != w->start_generation) {
    w->reload_seen_ns = uv_hrtime();
  }
  if (uv_hrtime() > w->give_up_ns) {
    uv_stop(h->loop);
  }
}

/* Runs the loop while `writes` edits are made `gap_ms` apart, until `settle_ms` after the
 * last one. */
static void watch_run(watch_t *w, int writes, uint64_t gap_ms, uint64_t settle_ms)
{
  uv_loop_t *loop = w->f->rt->loop;
  w->writes_left = writes;
  w->give_up_ns = uv_hrtime() + (50 + writes * gap_ms + settle_ms) * 1000000ULL;
  uv_timer_init(loop, &w->writer);
  uv_timer_init(loop, &w->poll);
  w->writer.data = w->poll.data = w;
  uv_timer_start(&w->writer, writer_cb, 50, gap_ms);
  uv_timer_start(&w->poll, poll_cb, 5, 5);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&w->writer, NULL);
  uv_close((uv_handle_t *)&w->poll, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

static void test_watch_reloads_within_a_second(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_hit_policy(&f, "w.lua", "w", "A", "w0");
  assert_int_equal(vg_policies_reload(f.ps, "start"), 0);
  assert_int_equal(vg_policies_watch(f.ps), 0);
  watch_t w = { .f = &f, .p = vg_policies_find(f.ps, "w") };
  w.start_generation = w.p->generation;
  uint64_t reloads = f.ps->reloads;
  watch_run(&w, 1, 20, 2000);
  assert_int_equal(w.p->generation, w.start_generation + 1);
  assert_true(w.reload_seen_ns != 0);
  assert_true(w.reload_seen_ns - w.last_write_ns < 1000000000ULL);
  assert_int_equal(f.ps->reloads, reloads + 1);
  assert_string_equal(last_field("msg=\"policies reloaded\"", NULL, "why"), "file changed");
  assert_int_equal(dispatch(&f, "A", "p1"), 1);
  uv_run(f.rt->loop, UV_RUN_NOWAIT); /* not vg_runtime_run: the watch keeps the loop alive */
  assert_int_equal(log_count3("msg=w1", "pod=p1", NULL), 1);
  pfx_close(&f);
}

static void test_watch_debounces_rapid_edits(void **state)
{
  (void)state;
  pfx_t f;
  pfx_open(&f, false);
  write_hit_policy(&f, "w.lua", "w", "A", "w0");
  assert_int_equal(vg_policies_reload(f.ps, "start"), 0);
  assert_int_equal(vg_policies_watch(f.ps), 0);
  watch_t w = { .f = &f, .p = vg_policies_find(f.ps, "w") };
  w.start_generation = w.p->generation;
  uint64_t reloads = f.ps->reloads;
  int reloaded_lines = log_count("msg=\"policy reloaded\"");
  watch_run(&w, 10, 20, 1500);
  assert_int_equal(w.version, 10);
  assert_int_equal(f.ps->reloads, reloads + 1);
  assert_int_equal(w.p->generation, w.start_generation + 1);
  assert_int_equal(log_count("msg=\"policy reloaded\""), reloaded_lines + 1);
  assert_true(w.reload_seen_ns > w.last_write_ns); /* after the last edit, not in between */
  /* the last edit is what runs */
  assert_int_equal(dispatch(&f, "A", "p1"), 1);
  uv_run(f.rt->loop, UV_RUN_NOWAIT);
  assert_int_equal(log_count3("msg=w10", "pod=p1", NULL), 1);
  pfx_close(&f);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(test_load_valid_policies, pfx_teardown),
    cmocka_unit_test_teardown(test_policy_limits_only_tighten, pfx_teardown),
    cmocka_unit_test_teardown(test_missing_directory, pfx_teardown),
    cmocka_unit_test_teardown(test_validation_errors, pfx_teardown),
    cmocka_unit_test_teardown(test_load_budget_stops_infinite_loop, pfx_teardown),
    cmocka_unit_test_teardown(test_bad_durations_name_field_and_line, pfx_teardown),
    cmocka_unit_test_teardown(test_bad_every_first_refused, pfx_teardown),
    cmocka_unit_test_teardown(test_negative_memory_limit_refused, pfx_teardown),
    cmocka_unit_test_teardown(test_duplicate_names, pfx_teardown),
    cmocka_unit_test_teardown(test_duplicate_name_error_points_at_name, pfx_teardown),
    cmocka_unit_test_teardown(test_dispatch_reaches_matching_policies_only, pfx_teardown),
    cmocka_unit_test_teardown(test_disable_and_enable, pfx_teardown),
    cmocka_unit_test_teardown(test_reload_lifecycle, pfx_teardown),
    cmocka_unit_test_teardown(test_reload_renamed_policy, pfx_teardown),
    cmocka_unit_test_teardown(test_reload_on_lib_change, pfx_teardown),
    cmocka_unit_test_teardown(test_reload_on_nested_lib_change, pfx_teardown),
    cmocka_unit_test_teardown(test_inflight_task_drains_on_old_vm, pfx_teardown),
    cmocka_unit_test_teardown(test_drain_deadline_cancels, pfx_teardown),
    cmocka_unit_test_teardown(test_error_budget_disables, pfx_teardown),
    cmocka_unit_test_teardown(test_deadline_counts_against_budget, pfx_teardown),
    cmocka_unit_test_teardown(test_quarantine_survives_new_set, pfx_teardown),
    cmocka_unit_test_teardown(test_every_jobs_on_schedule_and_stop_on_reload, pfx_teardown),
    cmocka_unit_test_teardown(test_every_jobs_stop_when_disabled, pfx_teardown),
    cmocka_unit_test_teardown(test_slow_every_job_skips_ticks, pfx_teardown),
    cmocka_unit_test_teardown(test_watch_reloads_within_a_second, pfx_teardown),
    cmocka_unit_test_teardown(test_watch_debounces_rapid_edits, pfx_teardown),
  };
  if (getenv("VG_TEST_FILTER") != NULL) { /* run only the tests matching the pattern */
    cmocka_set_test_filter(getenv("VG_TEST_FILTER"));
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
