/* Policy loading, validation, dispatch, error budgets, hot reload and draining. */
#include "core/policy.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/every.h"
#include "core/executor.h"
#include "core/log.h"
#include "core/runtime.h"
#include "core/sandbox.h"
#include "core/task.h"
#include "lua/lvigil.h"

#define LOAD_INSTRUCTIONS 50000000ULL /* a policy file's top level must finish within this */
#define LOAD_SLICE_MS 2000
#define MAX_BYTES 0x1p53    /* 8 PiB: beyond it a size is a mistake (and not exact) */
#define MAX_DURATION_S 9e12 /* about 285 years, as vg_duration_parse allows */

struct vg_drain {
  vg_policies_t *ps;
  vg_vm_t *vm;
  vg_timer_t *deadline;
  vg_timer_t *reaper;
  vg_drain_t *next;
};

/* What compiling one file produces, before it is activated. */
typedef struct {
  const char *path;
  const char *text; /* for locating fields in error messages */
  vg_vm_t *vm;
  int table_ref;
  int on_alert_ref;
  int ctx_ref;
  vg_matchers_t *matchers;
  char *name;
  char *description;
  int mode;           /* the policy's executor mode, or -1 */
  vg_limits_t limits; /* the runtime's, tightened by the policy's `limits` */
  char err[8192];
} compiled_t;

static uint64_t fnv1a(const char *data, size_t len, uint64_t h)
{
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)data[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

#define FNV_SEED 0xcbf29ce484222325ULL

static char *read_text(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf != NULL) {
    size_t r = fread(buf + n, 1, cap - n - 1, f);
    n += r;
    if (r == 0) {
      break;
    }
    if (n + 1 == cap) {
      char *nb = realloc(buf, cap * 2);
      if (nb == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (buf != NULL) {
    buf[n] = '\0';
    *len = n;
  }
  return buf;
}

static bool isalnum_ascii(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Line of the first `key =` in the source, so validation errors point somewhere useful. */
static int line_of_field(const char *text, const char *key)
{
  if (text == NULL) {
    return 1;
  }
  size_t klen = strlen(key);
  int line = 1;
  for (const char *p = text; *p; p++) {
    if (*p == '\n') {
      line++;
      continue;
    }
    if (strncmp(p, key, klen) == 0 && (p == text || !(p[-1] == '_' || isalnum_ascii(p[-1])))) {
      const char *q = p + klen;
      while (*q == ' ' || *q == '\t') {
        q++;
      }
      if (*q == '=' && q[1] != '=') {
        return line;
      }
    }
  }
  return 1;
}

static const char *const known_fields[] = {
  "name",     "match",      "on_alert",     "every",          "description", "limits",   "mode",
  "group_by", "enrich",     "classify",     "plan",           "auto",        "escalate", "heal",
  "guard",    "on_resolve", "known_issues", "enrich_timeout", NULL,
};
/* Fields of policy contract v2: a policy with any of them (and no on_alert) is run by the AIOps
 * pipeline (lua/vigil/pipeline.lua), which also validates them. */
static const char *const v2_fields[] = {
  "group_by", "enrich", "classify",   "plan",         "auto",           "escalate",
  "heal",     "guard",  "on_resolve", "known_issues", "enrich_timeout", NULL,
};

static size_t edit_distance(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b);
  if (la > 32 || lb > 32) {
    return 99;
  }
  size_t d[33][33];
  for (size_t i = 0; i <= la; i++) {
    d[i][0] = i;
  }
  for (size_t j = 0; j <= lb; j++) {
    d[0][j] = j;
  }
  for (size_t i = 1; i <= la; i++) {
    for (size_t j = 1; j <= lb; j++) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      size_t best = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < best) {
        best = d[i][j - 1] + 1;
      }
      if (d[i - 1][j - 1] + cost < best) {
        best = d[i - 1][j - 1] + cost;
      }
      d[i][j] = best;
    }
  }
  return d[la][lb];
}

/* Raises "path:line: message" for a problem with field `key`. */
__attribute__((format(printf, 4, 5))) static int field_error(
    lua_State *L, compiled_t *c, const char *key, const char *fmt, ...)
{
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return luaL_error(L, "%s:%d: %s", c->path, line_of_field(c->text, key), msg);
}

static void compile_matchers(lua_State *L, compiled_t *c, int idx)
{
  char err[256];
  c->matchers = labelmatch_new();
  if (c->matchers == NULL) {
    luaL_error(L, "out of memory");
  }
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING) {
    size_t len;
    const char *text = lua_tolstring(L, idx, &len);
    if (labelmatch_parse(c->matchers, text, len, err, sizeof(err)) != 0) {
      field_error(L, c, "match", "bad match: %s", err);
    }
    return;
  }
  if (t != LUA_TTABLE) {
    field_error(L, c, "match",
                "match must be a list of matchers like { 'alertname=\"HighCPU\"' } or a table "
                "like { alertname = \"HighCPU\" }, not a %s",
                lua_typename(L, t));
  }
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING) {
      field_error(L, c, "match", "match[%d] must be a matcher string like 'severity=~\"crit.*\"'",
                  (int)i);
    }
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    if (labelmatch_parse(c->matchers, text, len, err, sizeof(err)) != 0) {
      field_error(L, c, "match", "bad match[%d]: %s", (int)i, err);
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) == LUA_TNUMBER) {
      lua_Integer k = lua_tointeger(L, -2);
      if (lua_isinteger(L, -2) && k >= 1 && k <= n) {
        lua_pop(L, 1);
        continue;
      }
    }
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
      field_error(L, c, "match", "match: label = \"value\" entries must both be strings");
    }
    size_t len;
    const char *value = lua_tolstring(L, -1, &len);
    if (labelmatch_add(c->matchers, lua_tostring(L, -2), VG_MATCH_EQ, value, len, err,
                       sizeof(err)) != 0) {
      field_error(L, c, "match", "bad match: %s", err);
    }
    lua_pop(L, 1);
  }
}

/* "32MB", "1GiB", "4096" in bytes, or NaN when it is not a size. */
static double parse_bytes(const char *s)
{
  char *end;
  double v = strtod(s, &end);
  double scale = 1;
  if (strcmp(end, "") == 0 || strcmp(end, "B") == 0) {
    scale = 1;
  } else if (strcmp(end, "KB") == 0 || strcmp(end, "KiB") == 0) {
    scale = 1024;
  } else if (strcmp(end, "MB") == 0 || strcmp(end, "MiB") == 0) {
    scale = 1024 * 1024;
  } else if (strcmp(end, "GB") == 0 || strcmp(end, "GiB") == 0) {
    scale = 1024.0 * 1024 * 1024;
  } else {
    return NAN;
  }
  return end != s ? v * scale : NAN;
}

/* The raw value of t[key] pushed (validation never runs the policy's metamethods). */
static int raw_field(lua_State *L, int t, const char *key)
{
  lua_pushstring(L, key);
  return lua_rawget(L, t);
}

/* A duration (seconds as a number, or "30s") at idx, in ms. Raises a field error naming `what`
 * at the line of `key`. */
static uint64_t field_duration(
    lua_State *L, compiled_t *c, int idx, const char *key, const char *what)
{
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Number sec = lua_tonumber(L, idx);
    if (!(sec >= 0 && sec <= MAX_DURATION_S)) { /* NaN too */
      field_error(L, c, key, "%s must be a duration from 0 to 9e12 seconds", what);
    }
    return (uint64_t)llround(sec * 1000.0);
  }
  if (lua_type(L, idx) != LUA_TSTRING) {
    field_error(L, c, key, "%s must be a duration like \"30s\", not a %s", what,
                luaL_typename(L, idx));
  }
  char err[160];
  int64_t ms = vg_duration_parse(lua_tostring(L, idx), err, sizeof(err));
  if (ms < 0) {
    field_error(L, c, key, "%s: %s", what, err);
  }
  return (uint64_t)ms;
}

/* A policy's `limits` may only tighten the runtime's. */
static void check_limits(lua_State *L, compiled_t *c, int idx)
{
  vg_limits_t *lim = &c->limits;
  if (raw_field(L, idx, "memory") != LUA_TNIL) {
    int t = lua_type(L, -1);
    double bytes = t == LUA_TNUMBER   ? lua_tonumber(L, -1)
                   : t == LUA_TSTRING ? parse_bytes(lua_tostring(L, -1))
                                      : NAN;
    if (!(bytes >= (1u << 20))) { /* negative, NaN, not a size at all */
      field_error(L, c, "memory", "limits.memory must be a size like \"32MB\" (at least 1MB)");
    }
    if (bytes > MAX_BYTES || bytes >= (double)SIZE_MAX) {
      field_error(L, c, "memory", "limits.memory is too large (at most 8PiB)");
    }
    if (lim->memory == 0 || (size_t)bytes < lim->memory) {
      lim->memory = (size_t)bytes;
    }
  }
  lua_pop(L, 1);
  if (raw_field(L, idx, "instructions") != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 100000) {
      field_error(L, c, "instructions", "limits.instructions must be an integer >= 100000");
    }
    uint64_t n = (uint64_t)lua_tointeger(L, -1);
    if (lim->instructions == 0 || n < lim->instructions) {
      lim->instructions = n;
    }
  }
  lua_pop(L, 1);
  if (raw_field(L, idx, "timeout") != LUA_TNIL) {
    uint64_t ms = field_duration(L, c, lua_gettop(L), "timeout", "limits.timeout");
    if (ms == 0) { /* 0 is "no deadline" in vg_limits_t: it would loosen, not tighten */
      field_error(L, c, "timeout", "limits.timeout must be positive");
    }
    if (lim->timeout_ms == 0 || ms < lim->timeout_ms) {
      lim->timeout_ms = ms;
    }
  }
  lua_pop(L, 1);
}

static void check_every(lua_State *L, compiled_t *c, int idx)
{
  if (lua_type(L, idx) != LUA_TTABLE) {
    field_error(L, c, "every",
                "every must be a table of jobs: every = { name = { interval = \"30s\", run = "
                "function(ctx) ... end } }");
  }
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE) {
      field_error(L, c, "every", "every: each job is name = { interval = ..., run = function }");
    }
    const char *job = lua_tostring(L, -2);
    int j = lua_gettop(L);
    char what[96];
    lua_pushliteral(L, "interval");
    lua_rawget(L, j);
    int t = lua_type(L, -1);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
      field_error(L, c, job, "every.%s.interval is required (e.g. \"30s\")", job);
    }
    snprintf(what, sizeof(what), "every.%s.interval", job);
    if (field_duration(L, c, lua_gettop(L), job, what) < 10) {
      field_error(L, c, job, "every.%s.interval must be at least 10ms", job);
    }
    lua_pop(L, 1);
    /* checked here: a bad `first` found only when the jobs start would leave the policy
     * loaded without its job */
    lua_pushliteral(L, "first");
    if (lua_rawget(L, j) != LUA_TNIL) {
      snprintf(what, sizeof(what), "every.%s.first", job);
      field_duration(L, c, lua_gettop(L), job, what);
    }
    lua_pop(L, 1);
    lua_pushliteral(L, "run");
    if (lua_rawget(L, j) != LUA_TFUNCTION) {
      field_error(L, c, job, "every.%s.run must be a function(ctx)", job);
    }
    lua_pop(L, 2);
  }
}

/* Validates the table a policy file returned (raw reads only). [-0, +0, v] */
/* A contract v2 policy: the pipeline validates its hooks (a mistake is reported like any
 * other field's) and becomes its on_alert. [-0, +0, v] */
static void install_pipeline(lua_State *L, compiled_t *c, int tbl)
{
  if (c->on_alert_ref != LUA_NOREF) {
    field_error(L, c, "on_alert",
                "a policy either defines on_alert or the pipeline's hooks (enrich, classify, "
                "plan, escalate, ...), not both");
  }
  lua_getglobal(L, "require");
  lua_pushliteral(L, "vigil.pipeline");
  lua_call(L, 1, 1);
  int mod = lua_gettop(L);
  lua_getfield(L, mod, "validate");
  lua_pushvalue(L, tbl);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    if (lua_type(L, -1) != LUA_TTABLE) {
      lua_error(L);
    }
    lua_getfield(L, -1, "field");
    lua_getfield(L, -2, "msg");
    const char *field = lua_tostring(L, -2), *msg = lua_tostring(L, -1);
    field_error(L, c, field != NULL ? field : "name", "%s", msg != NULL ? msg : "invalid");
  }
  lua_getfield(L, mod, "handler");
  lua_pushvalue(L, tbl);
  lua_call(L, 1, 1);
  c->on_alert_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
}

static void validate(lua_State *L, compiled_t *c, int tbl)
{
  lua_pushnil(L);
  while (lua_next(L, tbl) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      luaL_error(L, "%s: the policy table may only have string keys", c->path);
    }
    const char *key = lua_tostring(L, -1);
    bool known = false;
    for (int i = 0; known_fields[i] != NULL; i++) {
      known = known || strcmp(key, known_fields[i]) == 0;
    }
    if (!known) {
      const char *best = NULL;
      for (int i = 0; known_fields[i] != NULL; i++) {
        if (edit_distance(key, known_fields[i]) <= 2) {
          best = known_fields[i];
        }
      }
      if (best != NULL) {
        field_error(L, c, key, "unknown field '%s' (did you mean '%s'?)", key, best);
      }
      field_error(L, c, key,
                  "unknown field '%s' (known: name, match, on_alert, every, description, "
                  "limits, mode, and the pipeline's group_by, enrich, classify, plan, auto, "
                  "escalate, heal, guard, on_resolve)",
                  key);
    }
  }

  lua_pushliteral(L, "name");
  if (lua_rawget(L, tbl) != LUA_TSTRING) {
    luaL_error(L, "%s:1: missing field 'name' (a string like \"high-cpu\")", c->path);
  }
  const char *name = lua_tostring(L, -1);
  size_t nlen = strlen(name);
  bool name_ok = nlen > 0 && nlen <= 64;
  for (const char *p = name; *p && name_ok; p++) {
    name_ok = isalnum_ascii(*p) || *p == '_' || *p == '-' || *p == '.';
  }
  if (!name_ok) {
    field_error(L, c, "name", "name must be 1-64 characters of [A-Za-z0-9_.-], got \"%s\"", name);
  }
  c->name = strdup(name);
  lua_pop(L, 1);

  lua_pushliteral(L, "description");
  int t = lua_rawget(L, tbl);
  if (t == LUA_TSTRING) {
    c->description = strdup(lua_tostring(L, -1));
  } else if (t != LUA_TNIL) {
    field_error(L, c, "description", "description must be a string");
  }
  lua_pop(L, 1);

  c->mode = -1;
  lua_pushliteral(L, "mode");
  t = lua_rawget(L, tbl);
  if (t != LUA_TNIL) {
    c->mode = t == LUA_TSTRING ? vg_mode_parse(lua_tostring(L, -1)) : -1;
    if (c->mode < 0) {
      field_error(L, c, "mode",
                  "mode must be \"observe\", \"dry-run\" or \"enforce\" (it can only lower the"
                  " executor's mode)");
    }
  }
  lua_pop(L, 1);

  lua_pushliteral(L, "match");
  if (lua_rawget(L, tbl) == LUA_TNIL) {
    luaL_error(L, "%s:1: missing field 'match' (use match = {} to receive every alert)", c->path);
  }
  compile_matchers(L, c, lua_gettop(L));
  lua_pop(L, 1);

  lua_pushliteral(L, "on_alert");
  t = lua_rawget(L, tbl);
  if (t != LUA_TNIL && t != LUA_TFUNCTION) {
    field_error(L, c, "on_alert", "on_alert must be a function(alert, ctx)");
  }
  bool has_on_alert = t == LUA_TFUNCTION;
  if (has_on_alert) {
    c->on_alert_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    lua_pop(L, 1);
  }
  bool v2 = false;
  for (int i = 0; v2_fields[i] != NULL; i++) {
    lua_pushstring(L, v2_fields[i]);
    v2 = lua_rawget(L, tbl) != LUA_TNIL || v2;
    lua_pop(L, 1);
  }
  if (v2) {
    install_pipeline(L, c, tbl);
    has_on_alert = true;
  }

  lua_pushliteral(L, "every");
  t = lua_rawget(L, tbl);
  if (t != LUA_TNIL) {
    check_every(L, c, lua_gettop(L));
  } else if (!has_on_alert) {
    luaL_error(L, "%s:1: the policy does nothing: define on_alert(alert, ctx) or every jobs",
               c->path);
  }
  lua_pop(L, 1);

  lua_pushliteral(L, "limits");
  t = lua_rawget(L, tbl);
  if (t == LUA_TTABLE) {
    check_limits(L, c, lua_gettop(L));
  } else if (t != LUA_TNIL) {
    field_error(L, c, "limits", "limits must be a table { memory, instructions, timeout }");
  }
  lua_pop(L, 1);
}

/* Runs protected in the new VM: registers modules, loads and runs the file's top level
 * under a load budget, validates the result. [-1, +0, v] */
static int compile_p(lua_State *L)
{
  compiled_t *c = lua_touserdata(L, 1);
  vg_vm_t *vm = c->vm;
  vg_open_modules(L);
  vg_sandbox_push_env(L, true);
  char chunkname[1100];
  snprintf(chunkname, sizeof(chunkname), "@%s", c->path);
  if (vg_sandbox_loadfile(L, c->path, chunkname) != LUA_OK) {
    return lua_error(L);
  }
  vg_budget_t budget = { .instr_limit = LOAD_INSTRUCTIONS,
                         .slice_ns = LOAD_SLICE_MS * 1000000ULL,
                         .slice_start = uv_hrtime() };
  vm->budget = &budget;
  vm->load_phase = true;
  lua_call(L, 0, 1); /* errors unwind to compile()'s pcall, which resets budget and phase */
  vm->load_phase = false;
  vm->budget = NULL;
  if (lua_type(L, -1) != LUA_TTABLE) {
    return luaL_error(L,
                      "%s: a policy file must return a table { name = ..., match = ..., "
                      "on_alert = function(alert, ctx) ... end }, not a %s",
                      c->path, luaL_typename(L, -1));
  }
  int tbl = lua_gettop(L);
  c->limits = vm->limits;
  validate(L, c, tbl);
  vm->limits = c->limits;
  /* The context its handlers receive, from the runtime library. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "vigil.policy");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "context");
  lua_pushstring(L, c->name);
  lua_call(L, 1, 1);
  c->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
  c->table_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static void compiled_discard(compiled_t *c)
{
  vg_vm_free(c->vm);
  labelmatch_free(c->matchers);
  free(c->name);
  free(c->description);
  c->vm = NULL;
  c->matchers = NULL;
  c->name = c->description = NULL;
}

/* Compiles `path` into c (c->path and c->text set by the caller). Returns 0 or -1 (c->err). */
static int compile(vg_runtime_t *rt, const vg_limits_t *limits, const char *lib_dir, compiled_t *c)
{
  const char *base = strrchr(c->path, '/');
  c->vm = vg_vm_new(rt, base ? base + 1 : c->path, limits);
  c->table_ref = c->on_alert_ref = c->ctx_ref = LUA_NOREF;
  if (c->vm == NULL) {
    snprintf(c->err, sizeof(c->err), "%s: out of memory creating its VM", c->path);
    return -1;
  }
  c->vm->lib_dir = lib_dir ? strdup(lib_dir) : NULL;
  lua_State *L = c->vm->L;
  int handler = lua_gettop(L) + 1;
  lua_pushcfunction(L, vg_vm_load_handler); /* a kill becomes "file:line: loading stopped" */
  lua_pushcfunction(L, compile_p);
  lua_pushlightuserdata(L, c);
  if (rt != NULL) { /* the watchdog also watches a file's top level */
    atomic_store(&rt->running_vm, c->vm);
    atomic_store(&rt->running_co, L);
  }
  int status = lua_pcall(L, 1, 0, handler);
  if (rt != NULL) {
    atomic_store(&rt->running_vm, NULL);
    atomic_store(&rt->running_co, NULL);
    atomic_fetch_add(&rt->heartbeat, 1);
  }
  c->vm->budget = NULL;
  c->vm->load_phase = false;
  lua_sethook(L, lua_gethook(L), LUA_MASKCOUNT, VG_HOOK_STEP); /* a kill may have sped it up */
  if (status == LUA_ERRMEM && c->vm->alloc_failed) {
    /* raised by the capped allocator, where no message handler runs */
    snprintf(c->err, sizeof(c->err), "%s: loading stopped: memory limit reached", c->path);
  } else if (status != LUA_OK) {
    char buf[256];
    snprintf(c->err, sizeof(c->err), "%s", vg_vm_error_text(L, -1, buf, sizeof(buf)));
  }
  if (status != LUA_OK) {
    lua_pop(L, 2);
    compiled_discard(c);
    return -1;
  }
  lua_pop(L, 1);
  return 0;
}

static int validate_p(lua_State *L)
{
  validate(L, lua_touserdata(L, 1), 2);
  return 0;
}

vg_matchers_t *vg_policy_validate_table(
    lua_State *L, int tbl, const char *path, const char *text, char **name)
{
  compiled_t c = { .path = path, .text = text, .on_alert_ref = LUA_NOREF };
  vg_limits_default(&c.limits);
  tbl = lua_absindex(L, tbl);
  lua_pushcfunction(L, validate_p); /* protected: what validate allocated is freed on error */
  lua_pushlightuserdata(L, &c);
  lua_pushvalue(L, tbl);
  int status = lua_pcall(L, 2, 0, 0);
  if (c.on_alert_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, c.on_alert_ref);
  }
  free(c.description);
  if (status != LUA_OK) {
    free(c.name);
    labelmatch_free(c.matchers);
    lua_error(L); /* the same error (or kill marker) */
  }
  *name = c.name;
  return c.matchers;
}

int vg_policy_check_file(vg_runtime_t *rt,
                         const char *path,
                         const char *lib_dir,
                         char *name,
                         size_t namelen,
                         char *err,
                         size_t errlen)
{
  compiled_t c = { .path = path };
  size_t len;
  char *text = read_text(path, &len);
  if (text == NULL) {
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    return -1;
  }
  c.text = text;
  int rc = compile(rt, &rt->limits, lib_dir, &c);
  if (rc != 0) {
    snprintf(err, errlen, "%s", c.err);
  } else {
    snprintf(name, namelen, "%s", c.name);
    compiled_discard(&c);
  }
  free(text);
  return rc;
}

/* ---- draining old versions ---- */

static void drain_reap(vg_timer_t *timer, void *ud)
{
  vg_drain_t *d = ud;
  vg_timer_stop(timer);
  d->reaper = NULL;
  for (vg_drain_t **pp = &d->ps->draining; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == d) {
      *pp = d->next;
      break;
    }
  }
  if (d->deadline != NULL) {
    vg_timer_stop(d->deadline);
  }
  vg_log(VG_LOG_DEBUG, "old policy version closed", "vm", d->vm->name, NULL);
  vg_vm_free(d->vm);
  free(d);
}

static void drain_schedule_reap(vg_drain_t *d)
{
  if (d->reaper == NULL) {
    d->reaper = vg_timer_start(d->ps->rt, 0, 0, drain_reap, d);
  }
}

static void drain_deadline(vg_timer_t *timer, void *ud)
{
  vg_drain_t *d = ud;
  vg_timer_stop(timer);
  d->deadline = NULL;
  if (d->vm->ntasks > 0) {
    char n[16];
    snprintf(n, sizeof(n), "%d", d->vm->ntasks);
    vg_log(VG_LOG_WARN, "old policy version still busy at drain deadline: cancelling", "vm",
           d->vm->name, "tasks", n, NULL);
    vg_task_cancel_all(d->vm, "policy reloaded: drain deadline passed");
  }
  drain_schedule_reap(d);
}

static void retire_vm(vg_policies_t *ps, vg_vm_t *vm)
{
  vm->draining = true;
  vm->owner = NULL;
  vg_every_stop_all(vm);
  vg_drain_t *d = calloc(1, sizeof(*d));
  if (d == NULL) {
    vg_task_cancel_all(vm, "policy reloaded");
    vg_vm_free(vm); /* not inside one of its tasks: reload never runs in a policy VM */
    return;
  }
  d->ps = ps;
  d->vm = vm;
  vm->drain = d; /* found again by on_task_end */
  d->next = ps->draining;
  ps->draining = d;
  if (vm->ntasks == 0) {
    drain_schedule_reap(d);
  } else {
    d->deadline = vg_timer_start(ps->rt, ps->drain_ms, 0, drain_deadline, d);
  }
}

/* ---- error budget and task accounting ---- */

static void on_task_end(vg_vm_t *vm, vg_task_t *t, int status, const char *error)
{
  if (vm->draining) {
    if (vm->ntasks == 0) {
      drain_schedule_reap(vm->drain);
    }
    return;
  }
  vg_policy_t *p = vm->owner;
  if (p == NULL || t->parent != NULL) {
    return; /* children report through the task that waits for them */
  }
  p->runs++;
  bool failed = status == VG_TASK_ERROR || status == VG_TASK_KILLED ||
                (status == VG_TASK_CANCELLED && error && strncmp(error, "deadline", 8) == 0);
  if (!failed) {
    return;
  }
  p->failures++;
  if (status == VG_TASK_KILLED) {
    p->kills++;
  }
  free(p->last_error);
  p->last_error = error ? strdup(error) : NULL;
  if (t->budget.killed == VG_KILL_WATCHDOG) {
    vg_policy_quarantine(p, "it stalled the event loop");
    return;
  }
  vg_error_budget_t *b = &p->set->budget;
  uint64_t now = uv_now(p->set->rt->loop);
  p->error_times[p->error_next] = now;
  p->error_next = (p->error_next + 1) % VG_ERROR_RING;
  int recent = 0;
  for (int i = 0; i < VG_ERROR_RING; i++) {
    if (p->error_times[i] != 0 && now - p->error_times[i] <= b->window_ms) {
      recent++;
    }
  }
  if (b->max > 0 && recent >= b->max && !p->disabled) {
    char reason[128];
    snprintf(reason, sizeof(reason), "%d failed runs within %llu s (error budget)", recent,
             (unsigned long long)(b->window_ms / 1000));
    vg_policy_disable(p, reason);
  }
}

/* ---- the set ---- */

vg_policies_t *vg_policies_new(vg_runtime_t *rt, const char *dir)
{
  vg_policies_t *ps = calloc(1, sizeof(*ps));
  if (ps == NULL) {
    return NULL;
  }
  ps->rt = rt;
  ps->dir = strdup(dir);
  size_t n = strlen(dir) + 5;
  ps->lib_dir = malloc(n);
  if (ps->dir == NULL || ps->lib_dir == NULL) {
    free(ps->dir);
    free(ps->lib_dir);
    free(ps);
    return NULL;
  }
  snprintf(ps->lib_dir, n, "%s/lib", dir);
  ps->budget.max = 5;
  ps->budget.window_ms = 5 * 60 * 1000;
  ps->drain_ms = 30 * 1000;
  ps->debounce_ms = 200;
  ps->max_inflight = 256;
  ps->limits = rt->limits;
  return ps;
}

static void policy_free(vg_policy_t *p)
{
  labelmatch_free(p->matchers);
  free(p->name);
  free(p->path);
  free(p->description);
  free(p->disabled_reason);
  free(p->last_error);
  free(p);
}

static void policy_set_vm(vg_policy_t *p, compiled_t *c)
{
  p->vm = c->vm;
  p->vm->owner = p;
  p->vm->on_task_end = on_task_end;
  p->table_ref = c->table_ref;
  p->on_alert_ref = c->on_alert_ref;
  labelmatch_free(p->matchers);
  p->matchers = c->matchers;
  free(p->name);
  p->name = c->name;
  char *vm_name = strdup(p->name); /* logs name the policy, not its file */
  if (vm_name != NULL) {
    free(p->vm->name);
    p->vm->name = vm_name;
  }
  free(p->description);
  p->description = c->description;
  p->mode = c->mode;
  c->vm = NULL;
  c->matchers = NULL;
  c->name = c->description = NULL;
  p->generation++;
  p->loaded_at_ms = uv_now(p->set->rt->loop);
}

/* A C closure that calls upvalue 1 with upvalue 2 (the ctx), yieldable. */
static int call_with_ctx_k(lua_State *L, int status, lua_KContext ctx)
{
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

static int call_with_ctx(lua_State *L)
{
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_callk(L, 1, LUA_MULTRET, 0, call_with_ctx_k);
  return lua_gettop(L);
}

/* Starts the policy's `every` jobs in its active VM. */
static int start_jobs_p(lua_State *L)
{
  vg_policy_t *p = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->table_ref);
  lua_pushliteral(L, "every");
  if (lua_rawget(L, -2) != LUA_TTABLE) {
    return 0;
  }
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    const char *job = lua_tostring(L, -2);
    int j = lua_gettop(L);
    lua_pushliteral(L, "interval");
    lua_rawget(L, j);
    uint64_t interval = vg_check_duration_ms(L, lua_gettop(L));
    lua_pushliteral(L, "first");
    uint64_t first = interval;
    if (lua_rawget(L, j) != LUA_TNIL) {
      first = vg_check_duration_ms(L, lua_gettop(L));
    }
    lua_pop(L, 2);
    lua_pushliteral(L, "run");
    lua_rawget(L, j);
    lua_getfield(L, LUA_REGISTRYINDEX, "vigil.ctx");
    lua_pushcclosure(L, call_with_ctx, 2);
    char name[64];
    snprintf(name, sizeof(name), "%s/%s", p->name, job);
    vg_every_start(p->vm, L, name, interval, first);
    lua_pop(L, 1);
  }
  return 0;
}

static void activate(vg_policies_t *ps, vg_policy_t *p, compiled_t *c)
{
  lua_State *L = c->vm->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ctx_ref);
  lua_setfield(L, LUA_REGISTRYINDEX, "vigil.ctx");
  luaL_unref(L, LUA_REGISTRYINDEX, c->ctx_ref);
  vg_vm_t *old = p->vm;
  policy_set_vm(p, c);
  p->disabled = false;
  free(p->disabled_reason);
  p->disabled_reason = NULL;
  free(p->last_error);
  p->last_error = NULL;
  memset(p->error_times, 0, sizeof(p->error_times));
  lua_pushcfunction(L, start_jobs_p);
  lua_pushlightuserdata(L, p);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    char buf[128];
    vg_log(VG_LOG_ERROR, "cannot start the policy's every jobs", "policy", p->name, "error",
           vg_vm_error_text(L, -1, buf, sizeof(buf)), NULL);
    lua_pop(L, 1);
  }
  if (old != NULL) {
    retire_vm(ps, old);
  }
}

/* ---- quarantine ---- */

static bool is_quarantined(vg_policies_t *ps, uint64_t hash)
{
  if (ps->quarantine_path == NULL) {
    return false;
  }
  FILE *f = fopen(ps->quarantine_path, "r");
  if (f == NULL) {
    return false;
  }
  char line[256];
  bool found = false;
  while (!found && fgets(line, sizeof(line), f) != NULL) {
    found = strtoull(line, NULL, 16) == hash;
  }
  fclose(f);
  return found;
}

void vg_policy_quarantine(vg_policy_t *p, const char *reason)
{
  vg_policies_t *ps = p->set;
  if (ps->quarantine_path != NULL) {
    FILE *f = fopen(ps->quarantine_path, "a");
    if (f != NULL) {
      fprintf(f, "%016llx %s\n", (unsigned long long)p->hash, p->name);
      fflush(f);
      fsync(fileno(f));
      fclose(f);
    }
  }
  char why[256];
  snprintf(why, sizeof(why), "quarantined: %s (edit the file to load it again)", reason);
  vg_policy_disable(p, why);
}

/* ---- enable / disable ---- */

void vg_policy_disable(vg_policy_t *p, const char *reason)
{
  if (p->disabled) {
    return;
  }
  p->disabled = true;
  free(p->disabled_reason);
  p->disabled_reason = strdup(reason);
  if (p->vm != NULL) {
    vg_every_stop_all(p->vm);
  }
  vg_log(VG_LOG_ERROR, "policy disabled", "policy", p->name, "reason", reason, "last_error",
         p->last_error, NULL);
}

void vg_policy_enable(vg_policy_t *p)
{
  if (!p->disabled || p->vm == NULL) {
    return;
  }
  p->disabled = false;
  free(p->disabled_reason);
  p->disabled_reason = NULL;
  memset(p->error_times, 0, sizeof(p->error_times));
  lua_pushcfunction(p->vm->L, start_jobs_p);
  lua_pushlightuserdata(p->vm->L, p);
  if (lua_pcall(p->vm->L, 1, 0, 0) != LUA_OK) {
    lua_pop(p->vm->L, 1);
  }
  vg_log(VG_LOG_INFO, "policy enabled", "policy", p->name, NULL);
}

vg_policy_t *vg_policies_find(vg_policies_t *ps, const char *name)
{
  for (vg_policy_t *p = ps->list; p != NULL; p = p->next) {
    if (strcmp(p->name, name) == 0) {
      return p;
    }
  }
  return NULL;
}

/* ---- reload ---- */

static int cmp_names(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_policy_file(const char *name)
{
  size_t n = strlen(name);
  return name[0] != '.' && n > 4 && strcmp(name + n - 4, ".lua") == 0 &&
         !(n > 9 && strcmp(name + n - 9, "_spec.lua") == 0);
}

/* Sorted list of the directory's policy files (caller frees each and the array). */
static char **list_files(const char *dir, size_t *count, bool recursive_names)
{
  (void)recursive_names;
  *count = 0;
  DIR *d = opendir(dir);
  if (d == NULL) {
    return NULL;
  }
  size_t cap = 16, n = 0;
  char **names = malloc(cap * sizeof(*names));
  struct dirent *e;
  while (names != NULL && (e = readdir(d)) != NULL) {
    if (!is_policy_file(e->d_name)) {
      continue;
    }
    if (n == cap) {
      char **nn = realloc(names, cap * 2 * sizeof(*names));
      if (nn == NULL) {
        break;
      }
      names = nn;
      cap *= 2;
    }
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  if (names != NULL) {
    qsort(names, n, sizeof(*names), cmp_names);
  }
  *count = n;
  return names;
}

/* Hashes the .lua files under `dir` and its sub-directories (require("lib.net.util") reads
 * lib/net/util.lua) by relative name and content, in a stable order, so that a change anywhere
 * in lib/ reloads the policies. `rel` is dir's name relative to lib/ ("" or "net/"). */
static uint64_t hash_tree(const char *dir, const char *rel, uint64_t h, int depth)
{
  struct dirent **ents;
  int n = scandir(dir, &ents, NULL, alphasort);
  for (int i = 0; i < n; i++) {
    const char *name = ents[i]->d_name;
    char path[4096], relname[1024];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(relname, sizeof(relname), "%s%s", rel, name);
    if (name[0] == '.' || stat(path, &st) != 0) {
      /* hidden (editor files, . and ..) or gone meanwhile */
    } else if (S_ISDIR(st.st_mode) && depth < 8) {
      strncat(relname, "/", sizeof(relname) - strlen(relname) - 1);
      h = fnv1a(relname, strlen(relname) + 1, h);
      h = hash_tree(path, relname, h, depth + 1);
    } else if (S_ISREG(st.st_mode) && is_policy_file(name)) {
      size_t len;
      char *text = read_text(path, &len);
      h = fnv1a(relname, strlen(relname) + 1, h);
      if (text != NULL) {
        h = fnv1a(text, len, h);
      }
      free(text);
    }
    free(ents[i]);
  }
  if (n >= 0) {
    free(ents);
  }
  return h;
}

static uint64_t hash_lib(const char *lib_dir)
{
  return hash_tree(lib_dir, "", FNV_SEED, 0);
}

static vg_policy_t *find_by_path(vg_policies_t *ps, const char *path)
{
  for (vg_policy_t *p = ps->list; p != NULL; p = p->next) {
    if (strcmp(p->path, path) == 0) {
      return p;
    }
  }
  return NULL;
}

static void remove_policy(vg_policies_t *ps, vg_policy_t *p)
{
  for (vg_policy_t **pp = &ps->list; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  }
  if (p->vm != NULL) {
    retire_vm(ps, p->vm);
  }
  policy_free(p);
}

static void sync_lib_watches(vg_policies_t *ps);

int vg_policies_reload(vg_policies_t *ps, const char *why)
{
  uint64_t started = uv_hrtime();
  size_t n;
  char **names = list_files(ps->dir, &n, false);
  if (names == NULL) {
    vg_log(VG_LOG_ERROR, "cannot read the policies directory", "dir", ps->dir, "error",
           strerror(errno), NULL);
    ps->reload_failures++;
    return 1;
  }
  uint64_t lib_hash = hash_lib(ps->lib_dir);
  bool lib_changed = lib_hash != ps->lib_hash;
  ps->lib_hash = lib_hash;
  int failures = 0, loaded = 0, unchanged = 0;
  bool *seen = calloc(1, sizeof(bool) * 1024);
  vg_policy_t *seen_list[1024];
  size_t nseen = 0;
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", ps->dir, names[i]);
    size_t len;
    char *text = read_text(path, &len);
    vg_policy_t *p = find_by_path(ps, path);
    if (text == NULL) {
      if (p != NULL && nseen < 1024) {
        seen_list[nseen++] = p; /* unreadable for a moment (editor saving): keep it */
      }
      continue;
    }
    uint64_t h = fnv1a(text, len, FNV_SEED);
    if (p != NULL && nseen < 1024) {
      seen_list[nseen++] = p;
    }
    if (p != NULL && p->hash == h && !lib_changed) {
      unchanged++;
      free(text);
      continue;
    }
    if (is_quarantined(ps, h)) {
      vg_log(VG_LOG_WARN, "policy quarantined by the watchdog: not loaded", "file", path, "hint",
             "edit the file to load it again", NULL);
      free(text);
      continue;
    }
    compiled_t c = { .path = path, .text = text };
    int rc = compile(ps->rt, &ps->limits, ps->lib_dir, &c);
    if (rc == 0) {
      vg_policy_t *other = vg_policies_find(ps, c.name);
      if (other != NULL && other != p) {
        snprintf(c.err, sizeof(c.err), "%s:%d: duplicate policy name '%s' (also in %s)", path,
                 line_of_field(text, "name"), c.name, other->path);
        compiled_discard(&c);
        rc = -1;
      }
    }
    free(text);
    if (rc != 0) {
      failures++;
      vg_log(VG_LOG_ERROR,
             p ? "policy failed to reload: keeping the running version" : "policy failed to load",
             "file", path, "error", c.err, NULL);
      if (p != NULL) {
        free(p->last_error);
        p->last_error = strdup(c.err);
      }
      continue;
    }
    bool fresh = p == NULL;
    if (fresh) {
      p = calloc(1, sizeof(*p));
      if (p == NULL) {
        compiled_discard(&c);
        failures++;
        continue;
      }
      p->set = ps;
      p->path = strdup(path);
      p->table_ref = p->on_alert_ref = LUA_NOREF;
      p->next = ps->list;
      ps->list = p;
      if (nseen < 1024) {
        seen_list[nseen++] = p;
      }
    }
    p->hash = h;
    activate(ps, p, &c);
    loaded++;
    char gen[16];
    snprintf(gen, sizeof(gen), "%d", p->generation);
    vg_log(VG_LOG_INFO, fresh ? "policy loaded" : "policy reloaded", "policy", p->name, "file",
           path, "generation", gen, NULL);
  }
  /* Files that are gone: their policies go too. */
  for (vg_policy_t *p = ps->list, *next; p != NULL; p = next) {
    next = p->next;
    bool keep = false;
    for (size_t i = 0; i < nseen && !keep; i++) {
      keep = seen_list[i] == p;
    }
    if (!keep) {
      vg_log(VG_LOG_INFO, "policy removed", "policy", p->name, "file", p->path, NULL);
      remove_policy(ps, p);
    }
  }
  free(seen);
  for (size_t i = 0; i < n; i++) {
    free(names[i]);
  }
  free(names);
  if (ps->watching_dir) {
    sync_lib_watches(ps); /* lib/ may have gained or lost directories */
  }
  ps->reloads++;
  if (failures > 0) {
    ps->reload_failures++;
  }
  if (loaded > 0 || failures > 0) {
    char ms[32], a[16], b[16], u[16];
    snprintf(ms, sizeof(ms), "%.2f", (double)(uv_hrtime() - started) / 1e6);
    snprintf(a, sizeof(a), "%d", loaded);
    snprintf(b, sizeof(b), "%d", failures);
    snprintf(u, sizeof(u), "%d", unchanged);
    vg_log(VG_LOG_INFO, "policies reloaded", "why", why, "loaded", a, "failed", b, "unchanged", u,
           "ms", ms, NULL);
  }
  return failures;
}

static void set_free(vg_policies_t *ps)
{
  free(ps->quarantine_path);
  free(ps->lib_dir);
  free(ps->dir);
  free(ps);
}

static void handle_closed(uv_handle_t *h)
{
  vg_policies_t *ps = h->data;
  if (--ps->open_handles == 0 && ps->freeing) {
    set_free(ps);
  }
}

/* ---- watching ---- */

static void debounce_fired(vg_timer_t *timer, void *ud)
{
  vg_policies_t *ps = ud;
  vg_timer_stop(timer);
  ps->debounce = NULL;
  vg_policies_reload(ps, "file changed");
}

static void fs_changed(uv_fs_event_t *h, const char *filename, int events, int status)
{
  (void)filename;
  (void)events;
  (void)status;
  vg_policies_t *ps = h->data;
  if (ps->debounce != NULL) {
    vg_timer_stop(ps->debounce);
  }
  ps->debounce = vg_timer_start(ps->rt, ps->debounce_ms, 0, debounce_fired, ps);
}

static void sighup(uv_signal_t *h, int signum)
{
  (void)signum;
  vg_policies_reload(h->data, "SIGHUP");
}

/* uv_fs_event watches one directory (inotify is not recursive), so lib/ gets one watcher per
 * directory, kept in step with the tree after every reload: a directory made later is
 * watched from the reload its creation causes. */
typedef struct vg_dirwatch {
  uv_fs_event_t handle; /* first: the close callback casts back */
  char *path;
  bool seen;
  struct vg_dirwatch *next;
} vg_dirwatch_t;

enum { LIB_WATCH_MAX = 64, LIB_DEPTH_MAX = 8 };

static void dirwatch_closed(uv_handle_t *h)
{
  vg_dirwatch_t *w = (vg_dirwatch_t *)h;
  free(w->path);
  free(w);
}

static void watch_lib_dir(vg_policies_t *ps, const char *path, int *count)
{
  for (vg_dirwatch_t *w = ps->lib_watches; w != NULL; w = w->next) {
    if (strcmp(w->path, path) == 0) {
      w->seen = true;
      (*count)++;
      return;
    }
  }
  if (*count >= LIB_WATCH_MAX) {
    return;
  }
  vg_dirwatch_t *w = calloc(1, sizeof(*w));
  if (w == NULL || (w->path = strdup(path)) == NULL) {
    free(w);
    return;
  }
  uv_fs_event_init(ps->rt->loop, &w->handle);
  w->handle.data = ps;
  if (uv_fs_event_start(&w->handle, fs_changed, path, 0) != 0) {
    uv_close((uv_handle_t *)&w->handle, dirwatch_closed);
    return;
  }
  w->seen = true;
  w->next = ps->lib_watches;
  ps->lib_watches = w;
  (*count)++;
}

static void watch_lib_tree(vg_policies_t *ps, const char *dir, int depth, int *count)
{
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    return;
  }
  watch_lib_dir(ps, dir, count);
  if (depth >= LIB_DEPTH_MAX) {
    return;
  }
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    if (e->d_name[0] != '.') {
      char path[4096];
      snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
      watch_lib_tree(ps, path, depth + 1, count);
    }
  }
  if (d != NULL) {
    closedir(d);
  }
}

/* Watches every directory under lib/ and stops watching those that are gone. */
static void sync_lib_watches(vg_policies_t *ps)
{
  for (vg_dirwatch_t *w = ps->lib_watches; w != NULL; w = w->next) {
    w->seen = false;
  }
  int count = 0;
  watch_lib_tree(ps, ps->lib_dir, 0, &count);
  if (count >= LIB_WATCH_MAX) {
    vg_log(VG_LOG_WARN, "lib/ has too many directories to watch them all: SIGHUP reloads", "dir",
           ps->lib_dir, NULL);
  }
  for (vg_dirwatch_t **pp = &ps->lib_watches; *pp != NULL;) {
    vg_dirwatch_t *w = *pp;
    if (w->seen) {
      pp = &w->next;
    } else {
      *pp = w->next;
      uv_close((uv_handle_t *)&w->handle, dirwatch_closed);
    }
  }
}

static void close_lib_watches(vg_policies_t *ps)
{
  while (ps->lib_watches != NULL) {
    vg_dirwatch_t *w = ps->lib_watches;
    ps->lib_watches = w->next;
    uv_close((uv_handle_t *)&w->handle, dirwatch_closed);
  }
}

int vg_policies_watch(vg_policies_t *ps)
{
  uv_loop_t *loop = ps->rt->loop;
  uv_fs_event_init(loop, &ps->watch_dir);
  ps->watch_dir.data = ps;
  int rc = uv_fs_event_start(&ps->watch_dir, fs_changed, ps->dir, 0);
  if (rc != 0) {
    ps->open_handles++;
    uv_close((uv_handle_t *)&ps->watch_dir, handle_closed);
    vg_log(VG_LOG_ERROR, "cannot watch the policies directory", "dir", ps->dir, "error",
           uv_strerror(rc), NULL);
    return rc;
  }
  ps->watching_dir = true;
  ps->open_handles++;
  sync_lib_watches(ps);
  uv_signal_init(loop, &ps->sighup);
  ps->sighup.data = ps;
  uv_signal_start(&ps->sighup, sighup, SIGHUP);
  ps->sighup_on = true;
  ps->open_handles++;
  return 0;
}

/* ---- dispatch ---- */

static int push_alert_p(lua_State *L)
{
  vg_alert_push(L, lua_touserdata(L, 1));
  return 1;
}

/* The runs one dispatch started, until the last ends. */
typedef struct {
  int pending; /* runs not ended, plus one while vg_policies_dispatch still spawns */
  bool interrupted;
  vg_dispatch_done_fn done;
  void *ud;
} dispatch_t;

static void dispatch_release(dispatch_t *d)
{
  if (--d->pending == 0) {
    d->done(d->ud, !d->interrupted);
    free(d);
  }
}

static void on_run_end(vg_task_t *t, void *ud)
{
  dispatch_t *d = ud;
  /* a deadline is the run's own end; any other cancel came from outside, before it finished */
  if (t->status == VG_TASK_CANCELLED && (t->error == NULL || strncmp(t->error, "deadline", 8))) {
    d->interrupted = true;
  }
  dispatch_release(d);
}

int vg_policies_dispatch(vg_policies_t *ps,
                         const vg_alert_t *alert,
                         vg_dispatch_done_fn done,
                         void *ud)
{
  int taken = 0;
  ps->dispatched++;
  dispatch_t *d = NULL;
  if (done != NULL) {
    d = malloc(sizeof(*d));
    if (d == NULL) {
      done(ud, false); /* out of memory: not decided, so a restart replays it */
      done = NULL;
    } else {
      *d = (dispatch_t){ .pending = 1, .done = done, .ud = ud };
    }
  }
  for (vg_policy_t *p = ps->list; p != NULL; p = p->next) {
    if (p->disabled || p->on_alert_ref == LUA_NOREF ||
        !labelmatch_eval(p->matchers, alert->labels, alert->nlabels)) {
      continue;
    }
    p->matched++;
    if (ps->max_inflight != 0 && p->vm->ntasks >= (int)ps->max_inflight) {
      p->dropped++;
      if ((p->dropped & (p->dropped - 1)) == 0) { /* 1, 2, 4, 8...: visible, never a flood */
        char n[24], t[16];
        snprintf(n, sizeof(n), "%llu", (unsigned long long)p->dropped);
        snprintf(t, sizeof(t), "%d", p->vm->ntasks);
        vg_log(VG_LOG_WARN, "alert dropped: the policy is behind", "policy", p->name, "tasks", t,
               "dropped_total", n, NULL);
      }
      continue;
    }
    lua_State *L = p->vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->on_alert_ref);
    lua_pushcfunction(L, push_alert_p);
    lua_pushlightuserdata(L, (void *)alert);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      char buf[64];
      vg_log(VG_LOG_ERROR, "cannot pass the alert to the policy", "policy", p->name, "error",
             vg_vm_error_text(L, -1, buf, sizeof(buf)), NULL);
      lua_pop(L, 2);
      continue;
    }
    lua_getfield(L, LUA_REGISTRYINDEX, "vigil.ctx");
    char name[96] = "on_alert";
    for (size_t i = 0; i < alert->nlabels; i++) {
      if (alert->labels[i].name_len == 9 && memcmp(alert->labels[i].name, "alertname", 9) == 0) {
        snprintf(name, sizeof(name), "on_alert:%.*s",
                 (int)(alert->labels[i].value_len > 80 ? 80 : alert->labels[i].value_len),
                 alert->labels[i].value);
      }
    }
    vg_task_opts_t opts = { .name = name, .label = "on_alert" };
    if (d != NULL) {
      opts.done = on_run_end;
      opts.done_ud = d;
    }
    if (vg_task_spawn(p->vm, 2, &opts) != NULL) {
      taken++;
      if (d != NULL) {
        d->pending++;
      }
    }
  }
  if (d != NULL) {
    dispatch_release(d);
  }
  return taken;
}

/* [-2, +1, e]: require(module)[fn], checked to be a function. */
static int module_fn_p(lua_State *L)
{
  const char *fn = lua_tostring(L, 2);
  lua_getglobal(L, "require");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  if (lua_getfield(L, -1, fn) != LUA_TFUNCTION) {
    return luaL_error(L, "%s.%s is not a function", lua_tostring(L, 1), fn);
  }
  return 1;
}

vg_task_t *vg_policy_call(
    vg_policy_t *p, const char *module, const char *fn, const char *arg, const vg_task_opts_t *opts)
{
  if (p->disabled || p->vm == NULL || p->table_ref == LUA_NOREF) {
    return NULL;
  }
  lua_State *L = p->vm->L;
  lua_pushcfunction(L, module_fn_p);
  lua_pushstring(L, module);
  lua_pushstring(L, fn);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    char buf[128];
    vg_log(VG_LOG_ERROR, "cannot call into the policy", "policy", p->name, "error",
           vg_vm_error_text(L, -1, buf, sizeof(buf)), NULL);
    lua_pop(L, 1);
    return NULL;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->table_ref);
  lua_pushstring(L, arg);
  lua_getfield(L, LUA_REGISTRYINDEX, "vigil.ctx");
  return vg_task_spawn(p->vm, 3, opts);
}

/* ---- teardown ---- */

void vg_policies_free(vg_policies_t *ps)
{
  if (ps == NULL) {
    return;
  }
  while (ps->list != NULL) {
    vg_policy_t *p = ps->list;
    ps->list = p->next;
    if (p->vm != NULL) {
      vg_vm_free(p->vm);
    }
    policy_free(p);
  }
  while (ps->draining != NULL) {
    vg_drain_t *d = ps->draining;
    ps->draining = d->next;
    vg_timer_stop(d->deadline);
    vg_timer_stop(d->reaper);
    vg_vm_free(d->vm);
    free(d);
  }
  vg_timer_stop(ps->debounce);
  if (ps->watching_dir) {
    uv_close((uv_handle_t *)&ps->watch_dir, handle_closed);
  }
  close_lib_watches(ps);
  if (ps->sighup_on) {
    uv_close((uv_handle_t *)&ps->sighup, handle_closed);
  }
  ps->freeing = true;
  if (ps->open_handles == 0) {
    set_free(ps);
  } /* else the last close callback frees it: the handles are embedded in ps */
}
