/* vigil.detect: isolation forests, named streaming detectors and forecasts for policies. Thin
 * over src/engine/{iforest,detect,forecast}.c: argument checks and conversions only. Caller
 * mistakes (bad rows, NaN, wrong types) raise; a blob that does not load returns nil, message. */
#include "lua/ldetect.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/offload.h"
#include "core/runtime.h"
#include "core/vm.h"
#include "engine/detect.h"
#include "engine/forecast.h"
#include "engine/iforest.h"
#include "engine/iforest_registry.h"
#include "lua/lvigil.h"

#define IFOREST_MT "vigil.detect.iforest"
#define SERIES_MT "vigil.detect.series"
#define MAX_CELLS ((size_t)1 << 26)  /* 64 M numbers (512 MB) per call: beyond, a caller's bug */
#define MAX_FOREST_SAMPLES (1 << 22) /* trees x samples per tree: ~128 MB of nodes at most */
/* A fit this big runs on the thread pool (when in a task): from 50k rows, or from about 2 M
 * tree-node visits (trees x (samples + rows scored for a contamination threshold)), a few ms
 * and more of work that would otherwise stall the loop. */
#define FIT_OFFLOAD_ROWS 50000
#define FIT_OFFLOAD_COST 2e6

/* Named series outlive every Lua state (policy reloads create new states): the runtime owns
 * them, and they are used from the loop thread only, like the states themselves. */
static vg_series_registry_t *get_registry(lua_State *L)
{
  vg_series_registry_t *r = vg_runtime_series(vg_vm_of(L)->rt);
  if (r == NULL) {
    luaL_error(L, "vigil.detect: out of memory");
  }
  return r;
}

/* ---- reading arguments ---- */

/* Reads opts[key] as a number in [lo, hi] (def when absent). [-0, +0, e] */
static double opt_number(lua_State *L, int opts, const char *key, double def, double lo, double hi)
{
  if (opts == 0 || lua_getfield(L, opts, key) == LUA_TNIL) {
    if (opts != 0) {
      lua_pop(L, 1);
    }
    return def;
  }
  int isnum = 0;
  double v = lua_tonumberx(L, -1, &isnum);
  lua_pop(L, 1);
  if (!isnum || !(v >= lo && v <= hi)) {
    luaL_error(L, "bad option '%s' (a number in [%f, %f] expected)", key, lo, hi);
  }
  return v;
}

/* Reads opts[key] as a string (def when absent). [-0, +0, e] */
static const char *opt_string(lua_State *L, int opts, const char *key, const char *def)
{
  if (opts == 0) {
    return def;
  }
  int t = lua_getfield(L, opts, key);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return def;
  }
  if (t != LUA_TSTRING) {
    luaL_error(L, "bad option '%s' (string expected, got %s)", key, lua_typename(L, t));
  }
  const char *s = lua_tostring(L, -1); /* stays alive: opts holds it */
  lua_pop(L, 1);
  return s;
}

/* The options table at `arg` (0 when absent). [-0, +0, e] */
static int check_opts(lua_State *L, int arg)
{
  if (lua_isnoneornil(L, arg)) {
    return 0;
  }
  luaL_checktype(L, arg, LUA_TTABLE);
  return lua_absindex(L, arg);
}

/* Reads the array of rows at `arg` (each an array of numbers, all the same length; want_d > 0
 * imposes it) into a buffer pushed as a userdata. [-0, +1, e] */
static double *check_rows(lua_State *L, int arg, size_t want_d, size_t *np, size_t *dp)
{
  luaL_checktype(L, arg, LUA_TTABLE);
  size_t n = lua_rawlen(L, arg);
  if (n == 0) {
    luaL_argerror(L, arg, "no rows");
  }
  if (lua_rawgeti(L, arg, 1) != LUA_TTABLE) {
    luaL_argerror(L, arg, "row 1 is not a table of numbers");
  }
  size_t d = lua_rawlen(L, -1);
  lua_pop(L, 1);
  if (d == 0) {
    luaL_argerror(L, arg, "row 1 is empty");
  }
  if (want_d > 0 && d != want_d) {
    luaL_argerror(L, arg,
                  lua_pushfstring(L, "rows have %d columns, the model was fitted on %d", (int)d,
                                  (int)want_d));
  }
  if (n > MAX_CELLS / (d > 0 ? d : 1)) {
    luaL_argerror(L, arg, "too many rows");
  }
  double *x = lua_newuserdatauv(L, n * d * sizeof(*x), 0);
  for (size_t i = 0; i < n; i++) {
    if (lua_rawgeti(L, arg, (lua_Integer)i + 1) != LUA_TTABLE) {
      luaL_argerror(L, arg, lua_pushfstring(L, "row %d is not a table of numbers", (int)i + 1));
    }
    if (lua_rawlen(L, -1) != d) {
      luaL_argerror(L, arg,
                    lua_pushfstring(L, "row %d has %d columns, row 1 has %d", (int)i + 1,
                                    (int)lua_rawlen(L, -1), (int)d));
    }
    for (size_t j = 0; j < d; j++) {
      int t = lua_rawgeti(L, -1, (lua_Integer)j + 1);
      double v = lua_tonumber(L, -1);
      lua_pop(L, 1);
      if (t != LUA_TNUMBER || !isfinite(v)) {
        luaL_argerror(
            L, arg,
            lua_pushfstring(L, "row %d column %d is not a finite number", (int)i + 1, (int)j + 1));
      }
      x[i * d + j] = v;
    }
    lua_pop(L, 1);
  }
  *np = n;
  *dp = d;
  return x;
}

/* Reads an array of finite numbers at stack index `idx` into a pushed userdata buffer. `what`
 * names it in errors. [-0, +1, e] */
static double *check_numbers(lua_State *L, int idx, const char *what, size_t *np)
{
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE) {
    luaL_error(L, "bad argument (%s: table of numbers expected, got %s)", what,
               luaL_typename(L, idx));
  }
  size_t n = lua_rawlen(L, idx);
  if (n > MAX_CELLS) {
    luaL_error(L, "bad argument (%s: too many values)", what);
  }
  double *v = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*v), 0);
  for (size_t i = 0; i < n; i++) {
    int isnum = 0;
    int t = lua_rawgeti(L, idx, (lua_Integer)i + 1);
    v[i] = lua_tonumberx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || t != LUA_TNUMBER || !isfinite(v[i])) {
      luaL_error(L, "bad argument (%s: value %d is not a finite number)", what, (int)i + 1);
    }
  }
  *np = n;
  return v;
}

/* Reads the array of numbers at `idx` into a pushed buffer, keeping NaN and infinities (a
 * Prometheus gap: detectors skip them). `what` names it in errors. [-0, +1, e] */
static double *check_raw_numbers(lua_State *L, int idx, const char *what, size_t *np)
{
  size_t n = lua_rawlen(L, idx);
  if (n > MAX_CELLS) {
    luaL_error(L, "bad argument (%s: too many values)", what);
  }
  double *v = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*v), 0);
  for (size_t i = 0; i < n; i++) {
    int t = lua_rawgeti(L, idx, (lua_Integer)i + 1);
    if (t == LUA_TTABLE && i == 0 && lua_getfield(L, -1, "values") == LUA_TTABLE) {
      luaL_error(L,
                 "bad argument (%s: a whole matrix result of %d series; pass one of its "
                 "entries, result[i])",
                 what, (int)n);
    }
    if (t != LUA_TNUMBER) {
      luaL_error(L, "bad argument (%s: value %d is not a number, got %s)", what, (int)i + 1,
                 lua_typename(L, t));
    }
    v[i] = lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  *np = n;
  return v;
}

/* Reads a series at `idx`: an array of numbers, or one entry of a vigil.prom matrix result
 * ({ labels, ts = { t1, ... }, values = { v1, ... } }). NaN and infinities are kept (gaps).
 * Pushes the values and, for an entry with times, the times (*tp; else NULL). An empty series
 * raises. [-0, +(1|2), e] */
static double *check_points(lua_State *L, int idx, const char *what, size_t *np, double **tp)
{
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE) {
    luaL_error(L,
               "bad argument (%s: table of numbers or a vigil.prom matrix entry expected, got %s)",
               what, luaL_typename(L, idx));
  }
  *tp = NULL;
  if (lua_getfield(L, idx, "values") != LUA_TTABLE) {
    lua_pop(L, 1);
    double *v = check_raw_numbers(L, idx, what, np);
    if (*np == 0) {
      luaL_error(L, "bad argument (%s: no values)", what);
    }
    return v;
  }
  int vals = lua_gettop(L);
  double *v = check_raw_numbers(L, vals, what, np);
  lua_replace(L, vals); /* [values buffer] */
  if (*np == 0) {
    luaL_error(L, "bad argument (%s: the entry has no values)", what);
  }
  if (lua_getfield(L, idx, "ts") == LUA_TNIL) {
    lua_pop(L, 1);
    return v;
  }
  if (lua_type(L, -1) != LUA_TTABLE) {
    luaL_error(L, "bad argument (%s: field ts is not a table of times)", what);
  }
  size_t nt;
  *tp = check_numbers(L, -1, "ts", &nt);
  lua_remove(L, -2); /* the ts table */
  if (nt != *np) {
    luaL_error(L, "bad argument (%s: %d times for %d values)", what, (int)nt, (int)*np);
  }
  return v;
}

/* Pushes out[0..n-1] as a Lua array. [-0, +1, m] */
static void push_numbers(lua_State *L, const double *out, size_t n)
{
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushnumber(L, out[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* ---- iforest ---- */

/* A forest handle: an unnamed forest owns its model; a named one points at the runtime's entry
 * (never freed while the runtime lives) and reads the entry's current model on each call, so a
 * fit from another handle or policy is seen at once and a replaced model is never touched. */
typedef struct {
  vg_iforest_opts_t opts;
  vg_iforest_t *f;           /* unnamed: NULL until fit; named: always NULL */
  vg_iforest_named_t *named; /* named: the registry's entry (not owned), else NULL */
  int background;            /* fit on the thread pool: -1 by size, 0 never, 1 always (in a task) */
} lforest_t;

/* The handle's current model, NULL until fitted. Pointer valid until other Lua code runs. */
static const vg_iforest_t *forest_model(const lforest_t *m)
{
  return m->named != NULL ? iforest_named_model(m->named) : m->f;
}

static lforest_t *check_forest(lua_State *L, bool fitted, const char *method)
{
  lforest_t *m = luaL_checkudata(L, 1, IFOREST_MT);
  if (fitted && forest_model(m) == NULL) {
    if (m->named != NULL) {
      luaL_error(L,
                 "iforest:%s(): the named forest \"%s\" is not fitted yet (a :fit(rows) on any "
                 "handle of that name trains it)",
                 method, iforest_named_name(m->named));
    }
    luaL_error(L, "iforest:%s(): the model is not fitted (call :fit(rows) first)", method);
  }
  return m;
}

/* Records a use of a named forest (the registry writes a used model again now and then, so the
 * store keeps one that is only scored). */
static void forest_used(lua_State *L, const lforest_t *m)
{
  if (m->named != NULL) {
    iforest_named_used(m->named, (int64_t)(vg_clock_now(vg_vm_of(L)->rt) * 1000.0));
  }
}

/* The model to use now, after the allocations that read the rows: they may run a finalizer
 * that refits this forest (then its column count may differ). [-0, +0, e] */
static const vg_iforest_t *model_now(lua_State *L, const lforest_t *m, size_t d, const char *method)
{
  const vg_iforest_t *f = forest_model(m);
  if (f == NULL || iforest_n_features(f) != d) {
    luaL_error(L, "iforest:%s(): the model changed while the rows were read", method);
  }
  forest_used(L, m);
  return f;
}

static vg_iforest_registry_t *get_forests(lua_State *L)
{
  vg_iforest_registry_t *r = vg_runtime_forests(vg_vm_of(L)->rt);
  if (r == NULL) {
    luaL_error(L, "vigil.detect: out of memory");
  }
  return r;
}

/* Raises unless every option given (`given` bits: 1 n_estimators, 2 max_samples, 4
 * max_features, 8 contamination, 16 random_state) agrees with what the named forest has. */
static void check_same_opts(lua_State *L,
                            const vg_iforest_named_t *e,
                            const vg_iforest_opts_t *o,
                            unsigned given)
{
  const vg_iforest_opts_t *h = iforest_named_opts(e);
  const char *key = NULL;
  double has = 0, want = 0;
  if ((given & 1) && h->n_estimators != o->n_estimators) {
    key = "n_estimators", has = h->n_estimators, want = o->n_estimators;
  } else if ((given & 2) && h->max_samples != o->max_samples) {
    key = "max_samples", has = h->max_samples, want = o->max_samples;
  } else if ((given & 4) && h->max_features != o->max_features) {
    key = "max_features", has = h->max_features, want = o->max_features;
  } else if ((given & 8) && h->contamination != o->contamination) {
    key = "contamination", has = h->contamination, want = o->contamination;
  } else if ((given & 16) && h->random_state != o->random_state) {
    key = "random_state", has = (double)h->random_state, want = (double)o->random_state;
  }
  if (key != NULL) {
    char a[32], b[32];
    bool c = strcmp(key, "contamination") == 0; /* 0 is "auto" */
    snprintf(a, sizeof(a), c && has == 0 ? "\"auto\"" : "%.14g", has);
    snprintf(b, sizeof(b), c && want == 0 ? "\"auto\"" : "%.14g", want);
    luaL_error(L, "vigil.detect.iforest{ name = \"%s\" }: exists with %s = %s, not %s",
               iforest_named_name(e), key, a, b);
  }
}

/* vigil.detect.iforest([opts]) [-(0|1), +1, e]: an unfitted model. opts: n_estimators (100),
 * max_samples (min(256, n)), max_features (1.0), contamination ("auto" or (0, 0.5]),
 * random_state (0), background (fit on the thread pool: nil by size, true always, false
 * never; only inside a task), name (the runtime's named forest: the same model for every
 * policy and across reloads and restarts, created on first use; options given must agree with
 * the ones it has). */
static int l_iforest(lua_State *L)
{
  int opts = check_opts(L, 1);
  lforest_t *m = lua_newuserdatauv(L, sizeof(*m), 0);
  memset(m, 0, sizeof(*m));
  luaL_setmetatable(L, IFOREST_MT);
  iforest_opts_default(&m->opts);
  static const char *const keys[] = { "n_estimators", "max_samples", "max_features",
                                      "contamination", "random_state" };
  unsigned given = 0;
  for (unsigned i = 0; opts != 0 && i < sizeof(keys) / sizeof(keys[0]); i++) {
    given |= lua_getfield(L, opts, keys[i]) != LUA_TNIL ? 1u << i : 0;
    lua_pop(L, 1);
  }
  m->opts.n_estimators = (uint32_t)opt_number(L, opts, "n_estimators", 100, 1, 100000);
  m->opts.max_samples = (uint32_t)opt_number(L, opts, "max_samples", 0, 0, 1e9);
  m->opts.max_features = opt_number(L, opts, "max_features", 1.0, 1e-9, 1.0);
  m->opts.random_state = (uint64_t)opt_number(L, opts, "random_state", 0, 0, 9007199254740992.0);
  m->background = -1;
  if (opts != 0) {
    int t = lua_getfield(L, opts, "background");
    if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
      luaL_error(L, "bad option 'background' (boolean expected, got %s)", lua_typename(L, t));
    }
    m->background = t == LUA_TNIL ? -1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (opts != 0) {
    int t = lua_getfield(L, opts, "contamination");
    if (t == LUA_TNUMBER) {
      double c = lua_tonumber(L, -1);
      if (!(c > 0 && c <= 0.5)) {
        luaL_error(L, "bad option 'contamination' (\"auto\" or a number in (0, 0.5] expected)");
      }
      m->opts.contamination = c;
    } else if (t != LUA_TNIL && !(t == LUA_TSTRING && strcmp(lua_tostring(L, -1), "auto") == 0)) {
      luaL_error(L, "bad option 'contamination' (\"auto\" or a number in (0, 0.5] expected)");
    }
    lua_pop(L, 1);
  }
  if (opts != 0) {
    int t = lua_getfield(L, opts, "name");
    if (t != LUA_TNIL) {
      size_t len;
      const char *name = lua_tolstring(L, -1, &len);
      if (t != LUA_TSTRING || len == 0 || len > 1024 || strlen(name) != len) {
        luaL_error(L, "bad option 'name' (a string of 1 to 1024 bytes without NUL expected)");
      }
      vg_iforest_registry_t *r = get_forests(L);
      vg_iforest_named_t *e = iforest_registry_get(r, name);
      if (e == NULL) {
        char err[160];
        e = iforest_registry_add(r, name, &m->opts, err, sizeof(err));
        if (e == NULL) {
          luaL_error(L, "vigil.detect.iforest{ name = \"%s\" }: %s", name, err);
        }
      } else {
        check_same_opts(L, e, &m->opts, given);
      }
      m->named = e;
      m->opts = *iforest_named_opts(e);
    }
    lua_pop(L, 1);
  }
  return 1;
}

/* A fit handed to the thread pool: its own copy of the rows, its result. */
typedef struct {
  double *x;
  size_t n, d;
  vg_iforest_opts_t opts;
  vg_iforest_t *f;
  char err[160];
} fit_job_t;

static void fit_work(void *p)
{
  fit_job_t *j = p;
  j->f = iforest_fit(j->x, j->n, j->d, &j->opts, j->err, sizeof(j->err));
}

static void fit_release(void *p)
{
  fit_job_t *j = p;
  iforest_free(j->f);
  free(j->x);
  free(j);
}

/* Makes `f` the handle's model: its own, or the named forest's for everyone (the old model is
 * freed; readers look the model up on each call). Frees f and raises when the registry refuses
 * it (byte cap). [-0, +0, e] */
static void forest_install(lua_State *L, lforest_t *m, vg_iforest_t *f)
{
  if (m->named == NULL) {
    iforest_free(m->f);
    m->f = f;
    return;
  }
  char err[200];
  if (iforest_named_set(get_forests(L), m->named, f, err, sizeof(err)) != 0) {
    iforest_free(f);
    luaL_error(L, "iforest:fit(): named forest \"%s\": %s", iforest_named_name(m->named), err);
  }
  forest_used(L, m);
}

/* The fit's continuation, in the task: the model is still argument 1. [-0, +1, e] */
static int fit_push(lua_State *L, void *p)
{
  fit_job_t *j = p;
  vg_iforest_t *f = j->f;
  char err[sizeof(j->err)];
  memcpy(err, j->err, sizeof(err));
  free(j->x);
  free(j);
  lforest_t *m = luaL_checkudata(L, 1, IFOREST_MT);
  if (f == NULL) {
    return luaL_error(L, "iforest:fit(): %s", err);
  }
  forest_install(L, m, f);
  lua_settop(L, 1);
  return 1;
}

/* model:fit(rows) [-2, +1, e]: fits on the rows (replacing an earlier fit); returns the model.
 * A large fit inside a task runs on the thread pool while the task waits (others run); a named
 * forest keeps serving its old model until the new one is installed. */
static int forest_fit(lua_State *L)
{
  lforest_t *m = check_forest(L, false, "fit");
  size_t n, d;
  double *x = check_rows(L, 2, 0, &n, &d);
  /* The forest lives outside the VM's memory cap: bound it here (about 32 bytes a sample);
   * named forests are also bounded together by the registry's byte cap. */
  size_t psi = m->opts.max_samples == 0 ? (n < 256 ? n : 256)
                                        : (m->opts.max_samples < n ? m->opts.max_samples : n);
  if ((double)m->opts.n_estimators * (double)psi > MAX_FOREST_SAMPLES) {
    return luaL_error(L, "iforest:fit(): n_estimators x max_samples = %d x %d is above %d",
                      (int)m->opts.n_estimators, (int)psi, MAX_FOREST_SAMPLES);
  }
  double cost =
      (double)m->opts.n_estimators * ((double)psi + (m->opts.contamination > 0 ? (double)n : 0));
  bool big = n >= FIT_OFFLOAD_ROWS || cost >= FIT_OFFLOAD_COST;
  vg_task_t *task = m->background == 0 || (m->background < 0 && !big) ? NULL : vg_offload_task(L);
  if (task != NULL) {
    /* the pool gets plain memory: the rows' userdata dies with the task if it is cancelled */
    fit_job_t *j = calloc(1, sizeof(*j));
    double *copy = malloc(n * d * sizeof(*copy));
    if (j == NULL || copy == NULL) {
      free(j);
      free(copy);
      return luaL_error(L, "iforest:fit(): out of memory");
    }
    memcpy(copy, x, n * d * sizeof(*copy));
    *j = (fit_job_t){ .x = copy, .n = n, .d = d, .opts = m->opts };
    return vg_offload(L, task, j, fit_work, fit_push, fit_release);
  }
  char err[160];
  vg_iforest_t *f = iforest_fit(x, n, d, &m->opts, err, sizeof(err));
  if (f == NULL) {
    return luaL_error(L, "iforest:fit(): %s", err);
  }
  forest_install(L, m, f);
  lua_settop(L, 1);
  return 1;
}

/* model:score(rows) [-2, +1, e]: anomaly scores in (0, 1], higher is more abnormal. */
static int forest_score(lua_State *L)
{
  lforest_t *m = check_forest(L, true, "score");
  size_t n, d;
  double *x = check_rows(L, 2, iforest_n_features(forest_model(m)), &n, &d);
  double *out = lua_newuserdatauv(L, n * sizeof(*out), 0);
  iforest_score(model_now(L, m, d, "score"), x, n, out);
  push_numbers(L, out, n);
  return 1;
}

/* model:decision(rows) [-2, +1, e]: scikit-learn's decision_function (negative: outlier). */
static int forest_decision(lua_State *L)
{
  lforest_t *m = check_forest(L, true, "decision");
  size_t n, d;
  double *x = check_rows(L, 2, iforest_n_features(forest_model(m)), &n, &d);
  double *out = lua_newuserdatauv(L, n * sizeof(*out), 0);
  iforest_decision(model_now(L, m, d, "decision"), x, n, out);
  push_numbers(L, out, n);
  return 1;
}

/* model:predict(rows) [-2, +1, e]: a boolean per row, true for an outlier. */
static int forest_predict(lua_State *L)
{
  lforest_t *m = check_forest(L, true, "predict");
  size_t n, d;
  double *x = check_rows(L, 2, iforest_n_features(forest_model(m)), &n, &d);
  double *scratch = lua_newuserdatauv(L, n * sizeof(*scratch), 0);
  int8_t *out = lua_newuserdatauv(L, n, 0);
  iforest_predict(model_now(L, m, d, "predict"), x, n, out, scratch);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushboolean(L, out[i] < 0);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* model:info() [-1, +1, m]: { fitted, n_estimators, max_samples, n_features, nodes,
 * threshold, name (named forests), fits (named: fits since the start or restore) }. */
static int forest_info(lua_State *L)
{
  lforest_t *m = check_forest(L, false, "info");
  lua_createtable(L, 0, 8);
  if (m->named != NULL) {
    lua_pushstring(L, iforest_named_name(m->named));
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)iforest_named_fits(m->named));
    lua_setfield(L, -2, "fits");
  }
  const vg_iforest_t *f = forest_model(m); /* no Lua code runs from here */
  lua_pushboolean(L, f != NULL);
  lua_setfield(L, -2, "fitted");
  lua_pushinteger(L, f ? (lua_Integer)iforest_n_estimators(f) : m->opts.n_estimators);
  lua_setfield(L, -2, "n_estimators");
  if (f != NULL) {
    size_t samples = iforest_max_samples(f), features = iforest_n_features(f);
    size_t nodes = iforest_node_count(f);
    double threshold = iforest_threshold(f);
    lua_pushinteger(L, (lua_Integer)samples);
    lua_setfield(L, -2, "max_samples");
    lua_pushinteger(L, (lua_Integer)features);
    lua_setfield(L, -2, "n_features");
    lua_pushinteger(L, (lua_Integer)nodes);
    lua_setfield(L, -2, "nodes");
    lua_pushnumber(L, threshold);
    lua_setfield(L, -2, "threshold");
  }
  return 1;
}

/* model:save() [-1, +1, e]: the fitted model as a binary string (vigil.detect.load reads it). */
static int forest_save(lua_State *L)
{
  lforest_t *m = check_forest(L, true, "save");
  size_t len;
  uint8_t *blob = iforest_save(forest_model(m), &len);
  if (blob == NULL) {
    return luaL_error(L, "iforest:save(): out of memory");
  }
  lua_pushlstring(L, (const char *)blob, len); /* may raise: then blob leaks; rare (OOM) */
  free(blob);
  return 1;
}

/* vigil.detect.load(blob) [-1, +(1|2), e]: a model saved by model:save(), or nil,
 * "EDETECT: ..." when the blob is not one. */
static int l_load(lua_State *L)
{
  size_t len;
  const char *blob = luaL_checklstring(L, 1, &len);
  lforest_t *m = lua_newuserdatauv(L, sizeof(*m), 0);
  memset(m, 0, sizeof(*m));
  luaL_setmetatable(L, IFOREST_MT);
  char err[160];
  m->f = iforest_load((const uint8_t *)blob, len, err, sizeof(err));
  if (m->f == NULL) {
    luaL_pushfail(L);
    lua_pushfstring(L, "EDETECT: %s", err);
    return 2;
  }
  return 1;
}

/* Frees an unnamed forest's model; a named forest's belongs to the runtime. */
static int forest_gc(lua_State *L)
{
  lforest_t *m = luaL_checkudata(L, 1, IFOREST_MT);
  iforest_free(m->f);
  m->f = NULL;
  return 0;
}

static int forest_tostring(lua_State *L)
{
  lforest_t *m = luaL_checkudata(L, 1, IFOREST_MT);
  const vg_iforest_t *f = forest_model(m);
  if (m->named != NULL) {
    lua_pushfstring(L, "vigil.detect.iforest \"%s\" ", iforest_named_name(m->named));
  } else {
    lua_pushliteral(L, "vigil.detect.iforest ");
  }
  if (f == NULL) {
    lua_pushliteral(L, "(not fitted)");
  } else {
    lua_pushfstring(L, "(%d trees, %d features)", (int)iforest_n_estimators(f),
                    (int)iforest_n_features(f));
  }
  lua_concat(L, 2);
  return 1;
}

/* vigil.detect.window_features(values, window) [-2, +1, e]: the seed's per-metric rows, one
 * per point from the window-th on: { value, mean, sd, z, range } over the last `window` values. */
static int l_window_features(lua_State *L)
{
  size_t n;
  lua_Integer w = luaL_checkinteger(L, 2);
  luaL_argcheck(L, w >= 2 && w <= 100000, 2, "window must be in [2, 100000]");
  double *v = check_numbers(L, 1, "values", &n);
  if (n < (size_t)w) {
    return luaL_error(L, "bad argument #1 to 'window_features' (%d values for a window of %d)",
                      (int)n, (int)w);
  }
  size_t rows = n - (size_t)w + 1;
  double *out = lua_newuserdatauv(L, rows * VG_IFOREST_WINDOW_FEATURES * sizeof(*out), 0);
  iforest_window_features(v, n, (size_t)w, out);
  lua_createtable(L, (int)rows, 0);
  for (size_t r = 0; r < rows; r++) {
    push_numbers(L, out + r * VG_IFOREST_WINDOW_FEATURES, VG_IFOREST_WINDOW_FEATURES);
    lua_rawseti(L, -2, (lua_Integer)r + 1);
  }
  return 1;
}

/* ---- named series ---- */

typedef struct {
  vg_series_t *s;
} lseries_t;

static vg_series_t *check_series(lua_State *L)
{
  return ((lseries_t *)luaL_checkudata(L, 1, SERIES_MT))->s;
}

/* Reads the detector options in the table at `opts` (0: none) into *o, kind included.
 * [-0, +0, e] */
static void check_detect_opts(lua_State *L, int opts, vg_detect_opts_t *o)
{
  const char *kind_name = opt_string(L, opts, "kind", "default");
  int kind = detect_kind_parse(kind_name);
  if (kind < 0) {
    luaL_error(L,
               "bad option 'kind' (\"%s\" is not one of default, ewma, robust, cusum, "
               "zscore5, seasonal)",
               kind_name);
  }
  memset(o, 0, sizeof(*o));
  o->kind = (vg_detect_kind_t)kind;
  o->alpha = opt_number(L, opts, "alpha", 0, 0, 1);
  o->window = (uint32_t)opt_number(L, opts, "window", 0, 0, 1e6);
  o->warmup = (uint32_t)opt_number(L, opts, "warmup", 0, 0, 1e6);
  o->threshold = opt_number(L, opts, "threshold", 0, 0, 1);
  o->cusum_k = opt_number(L, opts, "cusum_k", 0, 0, 1e6);
  o->cusum_h = opt_number(L, opts, "cusum_h", 0, 0, 1e6);
  o->half_life = opt_number(L, opts, "half_life", 0, 0, 1e9);
  o->buckets = (uint32_t)opt_number(L, opts, "buckets", 0, 0, 1e6);
  o->utc_offset = (int32_t)opt_number(L, opts, "utc_offset", 0, -1e6, 1e6);
  if (opts != 0) {
    int t = lua_getfield(L, opts, "weekend");
    if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
      luaL_error(L, "bad option 'weekend' (boolean expected, got %s)", lua_typename(L, t));
    }
    o->weekend = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
}

/* vigil.detect.series(name [, opts]) [-(1|2), +1, e]: the live detector called `name`, created
 * on first use with opts { kind = "default"|"ewma"|"robust"|"cusum"|"zscore5"|"seasonal",
 * alpha, window, warmup, threshold, cusum_k, cusum_h, half_life, buckets, weekend,
 * utc_offset }. Later calls (from any policy, after any
 * reload) return the same detector; a different kind than it has raises. */
static int l_series(lua_State *L)
{
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len > 0 && len <= 1024 && strlen(name) == len, 1,
                "a name of 1 to 1024 bytes without NUL expected");
  int opts = check_opts(L, 2);
  vg_detect_opts_t o;
  check_detect_opts(L, opts, &o);
  vg_series_registry_t *r = get_registry(L);
  vg_series_t *s = detect_registry_get(r, name);
  if (s == NULL) {
    char err[160];
    s = detect_registry_add(r, name, &o, err, sizeof(err));
    if (s == NULL) {
      return luaL_error(L, "vigil.detect.series(\"%s\"): %s", name, err);
    }
  } else if (opts != 0 && detect_series_detector(s)->o.kind != o.kind) {
    return luaL_error(L, "vigil.detect.series(\"%s\"): exists with kind %s, not %s", name,
                      detect_kind_name(detect_series_detector(s)->o.kind),
                      detect_kind_name(o.kind));
  }
  lseries_t *h = lua_newuserdatauv(L, sizeof(*h), 0);
  h->s = s;
  luaL_setmetatable(L, SERIES_MT);
  return 1;
}

/* series:update(value [, ts]) or series:update(entry) [-(2|3), +2, e]: score in [0, 1] and
 * whether it is an anomaly. `entry` is one of a vigil.prom vector result ({ labels, ts, value });
 * its NaN or infinite value is a gap (0, false, nothing learnt), where a plain NaN raises. */
static int series_update(lua_State *L)
{
  vg_series_t *s = check_series(L);
  double v, ts = NAN;
  bool entry = lua_type(L, 2) == LUA_TTABLE;
  if (entry) {
    if (lua_getfield(L, 2, "value") != LUA_TNUMBER) {
      if (lua_rawgeti(L, 2, 1) == LUA_TTABLE) {
        return luaL_argerror(L, 2,
                             lua_pushfstring(L,
                                             "a whole vector result of %d series; pass one of "
                                             "its entries, result[i]",
                                             (int)lua_rawlen(L, 2)));
      }
      return luaL_argerror(L, 2, "a vigil.prom vector entry has a number in field value");
    }
    v = lua_tonumber(L, -1);
    int t = lua_getfield(L, 2, "ts");
    ts = t == LUA_TNIL ? NAN : lua_tonumber(L, -1);
    if (t != LUA_TNIL && (t != LUA_TNUMBER || !isfinite(ts))) {
      return luaL_argerror(L, 2, "the entry's ts is not a finite number");
    }
    lua_pop(L, 2);
    if (!isfinite(v)) { /* Prometheus says NaN (0/0) or +Inf: no data this time */
      lua_pushnumber(L, 0);
      lua_pushboolean(L, 0);
      return 2;
    }
  } else {
    v = luaL_checknumber(L, 2);
    luaL_argcheck(L, isfinite(v), 2, "value is not a finite number");
    if (!lua_isnoneornil(L, 3)) {
      ts = luaL_checknumber(L, 3);
      luaL_argcheck(L, isfinite(ts), 3, "timestamp is not a finite number");
    }
  }
  if (isnan(ts) && detect_needs_time(detect_series_detector(s))) {
    luaL_argerror(L, entry ? 2 : 3, "a seasonal detector needs the point's timestamp");
  }
  bool flag = false;
  double score = detect_series_update(s, v, ts, &flag);
  lua_pushnumber(L, score);
  lua_pushboolean(L, flag);
  return 2;
}

/* series:feed(points [, opts]) [-(2|3), +2, e]: updates the series with every point of an
 * array of numbers (times in opts.times) or of a vigil.prom matrix entry (its ts), and returns
 * the array of scores and the array of flags. NaN or infinite values are gaps (0, false). */
static int series_feed(lua_State *L)
{
  vg_series_t *s = check_series(L);
  int opts = check_opts(L, 3);
  size_t n, nt;
  double *t, *v = check_points(L, 2, "points", &n, &t);
  if (opts != 0 && lua_getfield(L, opts, "times") != LUA_TNIL) {
    if (t != NULL) {
      return luaL_error(L, "bad option 'times' (the matrix entry has its own ts)");
    }
    t = check_numbers(L, -1, "times", &nt);
    if (nt != n) {
      return luaL_error(L, "bad option 'times' (%d times for %d values)", (int)nt, (int)n);
    }
  }
  if (t == NULL && detect_needs_time(detect_series_detector(s))) {
    return luaL_error(L,
                      "series:feed(): a seasonal detector needs times (a vigil.prom matrix "
                      "entry, or opts.times)");
  }
  lua_createtable(L, (int)n, 0);
  int scores = lua_gettop(L);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    bool flag = false;
    double sc = 0;
    if (isfinite(v[i])) {
      sc = detect_series_update(s, v[i], t != NULL ? t[i] : NAN, &flag);
    }
    lua_pushnumber(L, sc);
    lua_rawseti(L, scores, (lua_Integer)i + 1);
    lua_pushboolean(L, flag);
    lua_rawseti(L, scores + 1, (lua_Integer)i + 1);
  }
  return 2;
}

/* series:state() [-1, +1, m]: { name, kind, updates, warm, n, mean, sd, last_ts, threshold }. */
static int series_state(lua_State *L)
{
  vg_series_t *s = check_series(L);
  const vg_detector_t *d = detect_series_detector(s);
  lua_createtable(L, 0, 9);
  lua_pushstring(L, detect_series_name(s));
  lua_setfield(L, -2, "name");
  lua_pushstring(L, detect_kind_name(d->o.kind));
  lua_setfield(L, -2, "kind");
  lua_pushinteger(L, (lua_Integer)detect_series_updates(s));
  lua_setfield(L, -2, "updates");
  lua_pushinteger(L, (lua_Integer)d->n);
  lua_setfield(L, -2, "n");
  lua_pushboolean(L, detect_warm(d));
  lua_setfield(L, -2, "warm");
  if (d->o.kind == VG_DETECT_SEASONAL) { /* the profile has a mean per bucket, not one */
    lua_pushinteger(L, (lua_Integer)d->o.buckets);
    lua_setfield(L, -2, "buckets");
  } else {
    lua_pushnumber(L, d->mean);
    lua_setfield(L, -2, "mean");
  }
  lua_pushnumber(L, sqrt(d->var)); /* seasonal: of the residuals against the profile */
  lua_setfield(L, -2, "sd");
  lua_pushnumber(L, d->o.threshold);
  lua_setfield(L, -2, "threshold");
  if (!isnan(detect_series_last_ts(s))) {
    lua_pushnumber(L, detect_series_last_ts(s));
    lua_setfield(L, -2, "last_ts");
  }
  return 1;
}

/* series:reset() [-1, +0, -]: forgets what was learnt (same options). */
static int series_reset(lua_State *L)
{
  detect_series_reset(check_series(L));
  return 0;
}

/* series:snapshot() [-1, +1, m]: the detector's state as a versioned binary string, for the
 * store; series:restore(blob) puts it back. */
static int series_snapshot(lua_State *L)
{
  uint8_t blob[VG_DETECT_SNAPSHOT_SIZE];
  detect_snapshot(detect_series_detector(check_series(L)), blob);
  lua_pushlstring(L, (const char *)blob, sizeof(blob));
  return 1;
}

/* series:restore(blob) [-2, +(1|2), e]: replaces the state with a snapshot; true, or nil,
 * "EDETECT: ..." when the blob is not a valid snapshot (the state is then unchanged). */
static int series_restore(lua_State *L)
{
  vg_series_t *s = check_series(L);
  size_t len;
  const char *blob = luaL_checklstring(L, 2, &len);
  char err[160];
  if (detect_series_restore(s, (const uint8_t *)blob, len, err, sizeof(err)) != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "EDETECT: %s", err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int series_tostring(lua_State *L)
{
  vg_series_t *s = check_series(L);
  lua_pushfstring(L, "vigil.detect.series (%s, %s)", detect_series_name(s),
                  detect_kind_name(detect_series_detector(s)->o.kind));
  return 1;
}

static int series_eq(lua_State *L)
{
  lseries_t *a = luaL_testudata(L, 1, SERIES_MT), *b = luaL_testudata(L, 2, SERIES_MT);
  lua_pushboolean(L, a != NULL && b != NULL && a->s == b->s);
  return 1;
}

/* vigil.detect.scan(values [, opts]) [-(1|2), +2, e]: runs a fresh detector (opts as for
 * series(), plus `times` for a plain array) over `values`, an array of numbers or a vigil.prom
 * matrix entry, and returns the array of scores and the array of flags. A NaN or infinite value
 * is a gap: score 0, no flag, state unchanged. */
static int l_scan(lua_State *L)
{
  int opts = check_opts(L, 2);
  vg_detect_opts_t o;
  check_detect_opts(L, opts, &o);
  vg_detector_t *d = lua_newuserdatauv(L, sizeof(*d), 0);
  char err[160];
  if (detect_init(d, &o, err, sizeof(err)) != 0) {
    return luaL_error(L, "vigil.detect.scan(): %s", err);
  }
  size_t n, nt;
  double *t, *v = check_points(L, 1, "values", &n, &t);
  if (opts != 0 && lua_getfield(L, opts, "times") != LUA_TNIL) {
    if (t != NULL) {
      return luaL_error(L, "bad option 'times' (the matrix entry has its own ts)");
    }
    t = check_numbers(L, -1, "times", &nt);
    if (nt != n) {
      return luaL_error(L, "bad option 'times' (%d times for %d values)", (int)nt, (int)n);
    }
  }
  if (t == NULL && detect_needs_time(d)) {
    return luaL_error(L,
                      "vigil.detect.scan(): a seasonal detector needs times (a vigil.prom "
                      "matrix entry, or opts.times)");
  }
  lua_createtable(L, (int)n, 0);
  int scores = lua_gettop(L);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    bool flag = false;
    double sc = detect_update_at(d, t != NULL ? t[i] : NAN, v[i], &flag);
    lua_pushnumber(L, sc);
    lua_rawseti(L, scores, (lua_Integer)i + 1);
    lua_pushboolean(L, flag);
    lua_rawseti(L, scores + 1, (lua_Integer)i + 1);
  }
  return 2;
}

/* ---- forecast ---- */

/* vigil.detect.forecast(values [, opts]) [-(1|2), +1, e]: fits a trend to `values` (an array,
 * or a vigil.prom matrix entry whose ts are the times; else at opts.times, or every opts.step
 * seconds, default 1) and returns { method, level, slope, sigma, r2, horizon, forecast, lo, hi,
 * growth, tier, time_to_threshold, alpha, beta, gamma, season }. opts: method ("linear" |
 * "holt" | "holt_winters"), season (holt_winters: points per season), horizon (seconds or
 * "7d"-style duration, default: the span of the data), threshold, z (interval width in sd,
 * 1.96), alpha, beta, gamma. */
static int l_forecast(lua_State *L)
{
  int opts = check_opts(L, 2);
  size_t n, nt = 0;
  double *y, *t = NULL;
  if (lua_type(L, 1) == LUA_TTABLE && lua_getfield(L, 1, "values") == LUA_TTABLE) {
    y = check_numbers(L, -1, "values", &n); /* a matrix entry */
    if (lua_getfield(L, 1, "ts") != LUA_TNIL) {
      t = check_numbers(L, -1, "ts", &nt);
      if (nt != n) {
        return luaL_error(L, "bad argument (values: %d times for %d values)", (int)nt, (int)n);
      }
    }
  } else {
    y = check_numbers(L, 1, "values", &n);
  }
  if (opts != 0 && lua_getfield(L, opts, "times") != LUA_TNIL) {
    if (t != NULL) {
      return luaL_error(L, "bad option 'times' (the matrix entry has its own ts)");
    }
    t = check_numbers(L, -1, "times", &nt);
    if (nt != n) {
      return luaL_error(L, "bad option 'times' (%d times for %d values)", (int)nt, (int)n);
    }
  } else if (t == NULL) {
    double step = opt_number(L, opts, "step", 1, 1e-9, 1e12);
    t = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*t), 0);
    for (size_t i = 0; i < n; i++) {
      t[i] = (double)i * step;
    }
  }
  const char *method = opt_string(L, opts, "method", "linear");
  vg_forecast_opts_t fo = { 0 };
  if (strcmp(method, "linear") == 0) {
    fo.method = VG_FORECAST_LINEAR;
  } else if (strcmp(method, "holt") == 0) {
    fo.method = VG_FORECAST_HOLT;
    fo.alpha = opt_number(L, opts, "alpha", 0, 0, 1);
    fo.beta = opt_number(L, opts, "beta", 0, 0, 1);
  } else if (strcmp(method, "holt_winters") == 0) {
    fo.method = VG_FORECAST_HOLT_WINTERS;
    if (opts == 0 || lua_getfield(L, opts, "season") == LUA_TNIL) {
      return luaL_error(L, "bad option 'season' (holt_winters needs the points per season)");
    }
    lua_pop(L, 1);
    fo.season = (size_t)opt_number(L, opts, "season", 0, 2, VG_FORECAST_SEASON_MAX);
    fo.alpha = opt_number(L, opts, "alpha", 0, 0, 1);
    fo.beta = opt_number(L, opts, "beta", 0, 0, 1);
    fo.gamma = opt_number(L, opts, "gamma", 0, 0, 1);
  } else {
    return luaL_error(L, "bad option 'method' (\"%s\" is not linear, holt or holt_winters)",
                      method);
  }
  double horizon = n > 1 ? t[n - 1] - t[0] : 0;
  if (opts != 0 && lua_getfield(L, opts, "horizon") != LUA_TNIL) {
    horizon = (double)vg_check_duration_ms(L, lua_gettop(L)) / 1000.0;
  }
  double z = opt_number(L, opts, "z", 1.96, 0, 10);
  double thr = NAN;
  if (opts != 0) {
    int isnum = 0;
    lua_getfield(L, opts, "threshold");
    thr = lua_tonumberx(L, -1, &isnum);
    if (!lua_isnil(L, -1) && (!isnum || !isfinite(thr))) {
      return luaL_error(L, "bad option 'threshold' (a finite number expected)");
    }
    thr = isnum ? thr : NAN;
    lua_pop(L, 1);
  }
  /* Everything that may raise is above: the Holt-Winters model owns memory until freed. */
  vg_forecast_t m;
  char err[160];
  if (forecast_fit(t, y, n, &fo, &m, err, sizeof(err)) != 0) {
    return luaL_error(L, "vigil.detect.forecast(): %s", err);
  }
  double lo, hi, at = forecast_at(&m, m.t_last + horizon, z, &lo, &hi);
  double growth = forecast_growth(&m, horizon);
  double left = isnan(thr) ? INFINITY : forecast_time_to(&m, thr);
  forecast_free(&m);
  lua_createtable(L, 0, 16);
  lua_pushstring(L, method);
  lua_setfield(L, -2, "method");
  lua_pushnumber(L, m.level);
  lua_setfield(L, -2, "level");
  lua_pushnumber(L, m.slope);
  lua_setfield(L, -2, "slope");
  lua_pushnumber(L, m.sigma);
  lua_setfield(L, -2, "sigma");
  lua_pushnumber(L, m.r2);
  lua_setfield(L, -2, "r2");
  lua_pushnumber(L, horizon);
  lua_setfield(L, -2, "horizon");
  lua_pushnumber(L, at);
  lua_setfield(L, -2, "forecast");
  lua_pushnumber(L, lo);
  lua_setfield(L, -2, "lo");
  lua_pushnumber(L, hi);
  lua_setfield(L, -2, "hi");
  lua_pushnumber(L, growth);
  lua_setfield(L, -2, "growth");
  lua_pushstring(L, forecast_tier(growth));
  lua_setfield(L, -2, "tier");
  if (fo.method != VG_FORECAST_LINEAR) {
    lua_pushnumber(L, m.alpha);
    lua_setfield(L, -2, "alpha");
    lua_pushnumber(L, m.beta);
    lua_setfield(L, -2, "beta");
  }
  if (fo.method == VG_FORECAST_HOLT_WINTERS) {
    lua_pushnumber(L, m.gamma);
    lua_setfield(L, -2, "gamma");
    lua_pushinteger(L, (lua_Integer)m.period);
    lua_setfield(L, -2, "season");
  }
  if (isfinite(left)) { /* never: the field stays nil */
    lua_pushnumber(L, left);
    lua_setfield(L, -2, "time_to_threshold");
  }
  return 1;
}

/* ---- registration ---- */

int vg_open_vigil_detect(lua_State *L)
{
  static const luaL_Reg forest_methods[] = {
    { "fit", forest_fit },
    { "score", forest_score },
    { "decision", forest_decision },
    { "predict", forest_predict },
    { "info", forest_info },
    { "save", forest_save },
    { NULL, NULL },
  };
  static const luaL_Reg forest_meta[] = {
    { "__gc", forest_gc },
    { "__close", forest_gc },
    { "__tostring", forest_tostring },
    { NULL, NULL },
  };
  luaL_newmetatable(L, IFOREST_MT);
  luaL_setfuncs(L, forest_meta, 0);
  luaL_newlib(L, forest_methods);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);

  static const luaL_Reg series_methods[] = {
    { "update", series_update },
    { "feed", series_feed },
    { "state", series_state },
    { "reset", series_reset },
    { "snapshot", series_snapshot },
    { "restore", series_restore },
    { NULL, NULL },
  };
  static const luaL_Reg series_meta[] = {
    { "__tostring", series_tostring },
    { "__eq", series_eq },
    { NULL, NULL },
  };
  luaL_newmetatable(L, SERIES_MT);
  luaL_setfuncs(L, series_meta, 0);
  luaL_newlib(L, series_methods);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);

  static const luaL_Reg funcs[] = {
    { "iforest", l_iforest }, { "load", l_load },
    { "series", l_series },   { "forecast", l_forecast },
    { "scan", l_scan },       { "window_features", l_window_features },
    { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  return 1;
}
