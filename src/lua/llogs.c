/* vigil.logs.core: the C half of vigil.logs (lua/vigil/logs.lua presents the analyser).
 * Template miners (src/engine/logmine.c) as userdata: the miner's memory is the engine's own
 * malloc: ballast in each userdata makes the VM cap see its buffers, a per-VM budget bounds the
 * templates (max_templates), and the userdata's __gc frees it all.
 * Named analysers (src/engine/logan.c) as handles on the runtime's registry: their state lives
 * in C as long as the runtime, shared by every VM, the intake and log tailing. */
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/runtime.h"
#include "core/vm.h"
#include "engine/logan.h"
#include "engine/logmine.h"
#include "lua/lvigil.h"

#define MINER_MT "vigil.logs.miner"
#define ANALYSER_MT "vigil.logs.analyser"

/* Limits of the binding, tighter than the engine's: the miner's buffers are about 15 bytes per
 * byte of max_line, and none of it is charged to the VM's memory cap. */
#define MAX_LINE_CAP (1u << 20)
#define MAX_TEMPLATES_CAP 1000000u
#define MAX_CHILDREN_CAP 100000u
#define MAX_TOKENS_CAP 4096u
#define MAX_MASKS 32

static const char *const mask_names[] = {
  "num", "hex", "ip", "uuid", "path", "url", "time", "pod", "quoted", NULL,
};

/* Per-VM counters, one userdata shared as upvalue 1 by every function of the module. */
typedef struct {
  lua_Integer live;      /* miners not yet freed */
  lua_Integer templates; /* sum of their max_templates, at most MAX_TEMPLATES_CAP */
} llogs_vm_t;

/* The userdata is followed by ballast as large as the miner's line buffers, never touched:
 * it makes the VM's memory cap (and its garbage collector) see what the engine mallocs. */
typedef struct {
  vg_logmine_t *m; /* NULL once closed */
  int nmasks;      /* user masks, for charging the work of a line */
  size_t max_templates;
  llogs_vm_t *vm;
} miner_t;

/* ---- options ---- */

static lua_Integer opt_int(lua_State *L, int idx, const char *key, lua_Integer lo, lua_Integer hi)
{
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (!isint || v < lo || v > hi) {
    luaL_error(L, "bad option '%s' to 'vigil.logs.miner' (an integer in %d..%d expected)", key,
               (int)lo, (int)hi);
  }
  return v;
}

static unsigned opt_builtin(lua_State *L, int idx)
{
  if (lua_type(L, idx) == LUA_TBOOLEAN) {
    return lua_toboolean(L, idx) ? VG_LOGMINE_MASK_ALL : 0;
  }
  if (lua_type(L, idx) != LUA_TTABLE) {
    luaL_error(L, "bad option 'builtin' to 'vigil.logs.miner' (boolean or list of names expected)");
  }
  unsigned bits = 0;
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    const char *name = lua_rawgeti(L, idx, i) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int k = 0;
    while (name != NULL && mask_names[k] != NULL && strcmp(mask_names[k], name) != 0) {
      k++;
    }
    if (name == NULL || mask_names[k] == NULL) {
      luaL_error(L,
                 "bad option 'builtin' to 'vigil.logs.miner' (unknown mask '%s'; known: num, hex, "
                 "ip, uuid, path, url, time, pod, quoted)",
                 name != NULL ? name : luaL_typename(L, -1));
    }
    bits |= 1u << k;
    lua_pop(L, 1);
  }
  return bits;
}

/* Reads the options table at idx (absent: defaults) into *o. Raises on an unknown key or a
 * value out of range, naming the option. [-0, +0, e] */
static void check_opts(lua_State *L, int idx, vg_logmine_opts_t *o)
{
  logmine_opts_default(o);
  o->max_line = 16384;
  if (lua_isnoneornil(L, idx)) {
    return;
  }
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    int v = lua_gettop(L);
    if (strcmp(key, "similarity") == 0) {
      int isnum;
      lua_Number s = lua_tonumberx(L, v, &isnum);
      if (!isnum || !(s > 0 && s <= 1)) {
        luaL_error(L,
                   "bad option 'similarity' to 'vigil.logs.miner' (a number in (0, 1] "
                   "expected)");
      }
      o->similarity = s;
    } else if (strcmp(key, "depth") == 0) {
      o->depth = (unsigned)opt_int(L, v, key, 1, 8);
    } else if (strcmp(key, "max_children") == 0) {
      o->max_children = (unsigned)opt_int(L, v, key, 1, MAX_CHILDREN_CAP);
    } else if (strcmp(key, "max_templates") == 0) {
      o->max_clusters = (size_t)opt_int(L, v, key, 1, MAX_TEMPLATES_CAP);
    } else if (strcmp(key, "max_line") == 0) {
      o->max_line = (size_t)opt_int(L, v, key, 16, MAX_LINE_CAP);
    } else if (strcmp(key, "max_tokens") == 0) {
      o->max_tokens = (unsigned)opt_int(L, v, key, 1, MAX_TOKENS_CAP);
    } else if (strcmp(key, "builtin") == 0) {
      o->masks = opt_builtin(L, v);
    } else if (strcmp(key, "match_only") == 0) {
      if (lua_type(L, v) != LUA_TBOOLEAN) {
        luaL_error(L, "bad option 'match_only' to 'vigil.logs.miner' (boolean expected)");
      }
      o->match_only = lua_toboolean(L, v);
    } else if (strcmp(key, "masks") == 0) {
      if (lua_type(L, v) != LUA_TTABLE) {
        luaL_error(L, "bad option 'masks' to 'vigil.logs.miner' (list of Lua patterns expected)");
      }
    } else {
      luaL_error(L,
                 "bad option '%s' to 'vigil.logs.miner' (known: similarity, depth, max_children, "
                 "max_templates, max_line, max_tokens, builtin, masks, match_only)",
                 key);
    }
    lua_settop(L, v - 1);
  }
}

/* ---- miners ---- */

static miner_t *check_miner(lua_State *L)
{
  miner_t *u = luaL_checkudata(L, 1, MINER_MT);
  if (u->m == NULL) {
    luaL_error(L, "vigil.logs: the miner is closed");
  }
  return u;
}

static void miner_release(miner_t *u)
{
  if (u->m != NULL) {
    logmine_free(u->m);
    u->m = NULL;
    u->vm->live--;
    u->vm->templates -= (lua_Integer)u->max_templates;
  }
}

/* Pushes a new miner built from the options at opts_idx, user masks included. [-0, +1, e] */
static miner_t *push_miner(lua_State *L, int opts_idx)
{
  vg_logmine_opts_t o;
  check_opts(L, opts_idx, &o);
  llogs_vm_t *vm = lua_touserdata(L, lua_upvalueindex(1));
  if (vm->templates + (lua_Integer)o.max_clusters > MAX_TEMPLATES_CAP) {
    lua_gc(L, LUA_GCCOLLECT); /* miners nobody references may be holding the budget */
  }
  if (vm->templates + (lua_Integer)o.max_clusters > MAX_TEMPLATES_CAP) {
    luaL_error(L,
               "vigil.logs.miner: the miners of this VM would hold more than %d templates in "
               "all (close some, or lower max_templates)",
               (int)MAX_TEMPLATES_CAP);
  }
  size_t ballast = 15 * o.max_line + 32 * (size_t)o.max_tokens;
  miner_t *u = lua_newuserdatauv(L, sizeof(*u) + ballast, 0);
  u->m = NULL;
  u->nmasks = 0;
  u->max_templates = o.max_clusters;
  u->vm = vm;
  luaL_setmetatable(L, MINER_MT);
  char err[160];
  u->m = logmine_new(&o, err, sizeof(err));
  if (u->m == NULL) {
    luaL_error(L, "vigil.logs.miner: %s", err);
  }
  u->vm->live++;
  u->vm->templates += (lua_Integer)o.max_clusters;
  if (lua_isnoneornil(L, opts_idx)) {
    return u;
  }
  if (lua_getfield(L, opts_idx, "masks") == LUA_TTABLE) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (n > MAX_MASKS) {
      luaL_error(L, "bad option 'masks' to 'vigil.logs.miner' (at most %d patterns)", MAX_MASKS);
    }
    for (lua_Integer i = 1; i <= n; i++) {
      size_t len = 0;
      lua_rawgeti(L, -1, i);
      const char *pat = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
      if (pat == NULL) {
        luaL_error(L, "bad option 'masks' to 'vigil.logs.miner' (item %d is not a string)", (int)i);
      }
      if (logmine_add_mask(u->m, pat, len, err, sizeof(err)) != 0) {
        luaL_error(L, "bad option 'masks' to 'vigil.logs.miner' (item %d: %s)", (int)i, err);
      }
      u->nmasks++;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return u;
}

/* miner([opts]) [-(0|1), +1, e] */
static int l_miner(lua_State *L)
{
  lua_settop(L, 1);
  push_miner(L, 1);
  return 1;
}

/* Pushes the result of a mined line: { id, template, params, new, changed, truncated, merged }
 * (merged: older templates folded into this one, whose ids now resolve to it), or nil
 * for a blank line and, when matching only, a line no template matches. [-0, +1, e] */
static int push_result(lua_State *L,
                       miner_t *u,
                       vg_logmine_status_t st,
                       const vg_logmine_result_t *r,
                       const char *line,
                       size_t len)
{
  if (st == VG_LOGMINE_NOMEM) {
    return luaL_error(L, "vigil.logs: out of memory (miner)");
  }
  if (st == VG_LOGMINE_EMPTY || st == VG_LOGMINE_NOMATCH) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 6);
  /* the params first: they are the miner's until its next call, logmine_get included */
  size_t nparams = r->nparams;
  lua_createtable(L, (int)(nparams < 64 ? nparams : 64), 0);
  for (size_t i = 0; i < nparams; i++) {
    const vg_logmine_span_t *s = &r->params[i];
    size_t off = s->off < len ? s->off : len;
    size_t n = s->len < len - off ? s->len : len - off;
    lua_pushlstring(L, line + off, n);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "params");
  lua_pushinteger(L, (lua_Integer)r->id);
  lua_setfield(L, -2, "id");
  lua_pushboolean(L, st == VG_LOGMINE_CREATED);
  lua_setfield(L, -2, "new");
  lua_pushboolean(L, r->changed);
  lua_setfield(L, -2, "changed");
  lua_pushboolean(L, r->truncated);
  lua_setfield(L, -2, "truncated");
  lua_pushinteger(L, (lua_Integer)r->merged);
  lua_setfield(L, -2, "merged");
  vg_logmine_template_t t;
  if (!logmine_get(u->m, r->id, &t)) {
    return luaL_error(L, "vigil.logs: out of memory (miner)");
  }
  lua_pushlstring(L, t.text, t.len);
  lua_setfield(L, -2, "template");
  return 1;
}

/* Charges the C work of mining one line to the running task's instruction budget. */
static void charge_line(lua_State *L, const miner_t *u, size_t len)
{
  vg_vm_charge(L, 16 + (uint64_t)(len / 8) * (1 + (uint64_t)u->nmasks));
}

static int mine(lua_State *L, bool learn)
{
  miner_t *u = check_miner(L);
  size_t len;
  const char *line = luaL_checklstring(L, 2, &len);
  charge_line(L, u, len);
  vg_logmine_result_t r;
  vg_logmine_status_t st =
      learn ? logmine_add(u->m, line, len, &r) : logmine_match(u->m, line, len, &r);
  return push_result(L, u, st, &r, line, len);
}

/* m:add(line) [-2, +1, e]: learns from the line; see push_result. */
static int miner_add(lua_State *L)
{
  return mine(L, true);
}

/* m:match(line) [-2, +1, e]: the template the line belongs to, changing nothing. */
static int miner_match(lua_State *L)
{
  return mine(L, false);
}

static void push_template(lua_State *L, const vg_logmine_template_t *t)
{
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)t->id);
  lua_setfield(L, -2, "id");
  lua_pushlstring(L, t->text, t->len);
  lua_setfield(L, -2, "template");
  lua_pushinteger(L, (lua_Integer)t->count);
  lua_setfield(L, -2, "count");
  lua_pushinteger(L, (lua_Integer)t->first_seq);
  lua_setfield(L, -2, "first_line");
  lua_pushinteger(L, (lua_Integer)t->last_seq);
  lua_setfield(L, -2, "last_line");
  lua_pushinteger(L, (lua_Integer)t->ntokens);
  lua_setfield(L, -2, "tokens");
}

/* m:template(id) [-2, +1, e]: one template, or nil when unknown or evicted. */
static int miner_template(lua_State *L)
{
  miner_t *u = check_miner(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  vg_logmine_template_t t;
  if (id <= 0 || !logmine_get(u->m, (uint64_t)id, &t)) {
    lua_pushnil(L);
    return 1;
  }
  push_template(L, &t);
  return 1;
}

typedef struct {
  uint64_t *ids;
  size_t n, cap;
} id_list_t;

static bool collect_id(const vg_logmine_template_t *t, void *ud)
{
  id_list_t *l = ud;
  l->ids[l->n++] = t->id;
  return l->n < l->cap;
}

/* m:templates([n]) [-(1|2), +1, e]: up to n templates (all by default), most recently seen
 * first, each { id, template, count, first_line, last_line, tokens }. */
static int miner_templates(lua_State *L)
{
  miner_t *u = check_miner(L);
  vg_logmine_stats_t st;
  logmine_stats(u->m, &st);
  lua_Integer want = luaL_optinteger(L, 2, (lua_Integer)st.clusters);
  luaL_argcheck(L, want >= 0, 2, "count must not be negative");
  size_t n = (size_t)want < st.clusters ? (size_t)want : st.clusters;
  vg_vm_charge(L, 16 + 8 * (uint64_t)n);
  lua_createtable(L, (int)(n < 100000 ? n : 100000), 0);
  if (n == 0) {
    return 1;
  }
  /* ids first (the callback must not call Lua), in memory the VM's cap sees */
  id_list_t l = { lua_newuserdatauv(L, n * sizeof(uint64_t), 0), 0, n };
  if (!logmine_foreach(u->m, collect_id, &l)) {
    return luaL_error(L, "vigil.logs: out of memory (miner)");
  }
  for (size_t i = 0; i < l.n; i++) {
    vg_logmine_template_t t;
    if (!logmine_get(u->m, l.ids[i], &t)) {
      return luaL_error(L, "vigil.logs: out of memory (miner)");
    }
    push_template(L, &t);
    lua_rawseti(L, -3, (lua_Integer)i + 1);
  }
  lua_pop(L, 1);
  return 1;
}

/* m:stats() [-1, +1, e]: the miner's counters (see vg_logmine_stats_t). */
static int miner_stats(lua_State *L)
{
  miner_t *u = check_miner(L);
  vg_logmine_stats_t st;
  logmine_stats(u->m, &st);
  const struct {
    const char *name;
    uint64_t v;
  } f[] = {
    { "lines", st.lines },     { "empty", st.empty },        { "truncated", st.truncated },
    { "created", st.created }, { "evicted", st.evicted },    { "merged", st.merged },
    { "nomatch", st.nomatch }, { "templates", st.clusters }, { "bytes", st.bytes },
  };
  lua_createtable(L, 0, (int)(sizeof(f) / sizeof(f[0])));
  for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
    lua_pushinteger(L, (lua_Integer)f[i].v);
    lua_setfield(L, -2, f[i].name);
  }
  return 1;
}

/* m:set_match_only(on) [-2, +0, e] */
static int miner_set_match_only(lua_State *L)
{
  miner_t *u = check_miner(L);
  luaL_checktype(L, 2, LUA_TBOOLEAN);
  logmine_set_match_only(u->m, lua_toboolean(L, 2));
  return 0;
}

static int push_bytes(lua_State *L)
{
  lua_pushlstring(L, lua_touserdata(L, 1), (size_t)lua_tointeger(L, 2));
  return 1;
}

/* m:snapshot() [-1, +1, e]: the templates as a string for m:restore or vigil.logs.restore
 * (options and user masks are not included). */
static int miner_snapshot(lua_State *L)
{
  miner_t *u = check_miner(L);
  size_t len;
  char *buf = logmine_snapshot(u->m, &len);
  if (buf == NULL) {
    return luaL_error(L, "vigil.logs: out of memory (snapshot)");
  }
  vg_vm_charge(L, 16 + len / 16); /* the copy below; a kill here must not leak buf */
  lua_pushcfunction(L, push_bytes);
  lua_pushlightuserdata(L, buf);
  lua_pushinteger(L, (lua_Integer)len);
  int status = lua_pcall(L, 2, 1, 0);
  free(buf);
  if (status != LUA_OK) {
    return lua_error(L); /* memory errors and kills go on up */
  }
  return 1;
}

/* Restores snapshot s (at idx) into u. Pushes true, or nil and "EINVAL: ...". [-0, +(1|2), e] */
static int restore_into(lua_State *L, miner_t *u, int idx)
{
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  vg_vm_charge(L, 16 + len / 8);
  char err[160];
  if (logmine_restore(u->m, s, len, err, sizeof(err)) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "EINVAL: not a miner snapshot (%s)", err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* m:restore(snapshot) [-2, +(1|2), e]: replaces the templates; true, or nil, "EINVAL: ..."
 * leaving the miner as it was. */
static int miner_restore(lua_State *L)
{
  miner_t *u = check_miner(L);
  return restore_into(L, u, 2);
}

/* restore(snapshot [, opts]) [-(1|2), +(1|2), e]: a new miner with the templates of a snapshot,
 * or nil, "EINVAL: ...". opts as for miner(); give the ones the snapshot was made with. */
static int l_restore(lua_State *L)
{
  luaL_checkstring(L, 1);
  lua_settop(L, 2);
  miner_t *u = push_miner(L, 2);
  int n = restore_into(L, u, 1);
  if (n == 2) {
    miner_release(u); /* free the engine's memory now rather than at the next cycle */
    return 2;
  }
  lua_pop(L, 1);
  return 1;
}

/* m:close() / __gc / __close [-1, +0, -]: frees the miner; later calls raise. */
static int miner_gc(lua_State *L)
{
  miner_t *u = luaL_checkudata(L, 1, MINER_MT);
  miner_release(u);
  return 0;
}

static int miner_tostring(lua_State *L)
{
  miner_t *u = luaL_checkudata(L, 1, MINER_MT);
  if (u->m == NULL) {
    lua_pushliteral(L, "vigil.logs.miner(closed)");
  } else {
    vg_logmine_stats_t st;
    logmine_stats(u->m, &st);
    lua_pushfstring(L, "vigil.logs.miner(%I templates)", (lua_Integer)st.clusters);
  }
  return 1;
}

/* live() [-0, +1, -]: miners of this VM not yet freed (collected or closed). */
static int l_live(lua_State *L)
{
  llogs_vm_t *vm = lua_touserdata(L, lua_upvalueindex(1));
  lua_pushinteger(L, vm->live);
  return 1;
}

/* ---- named analysers ---- */

static vg_logan_registry_t *get_registry(lua_State *L)
{
  vg_logan_registry_t *r = vg_runtime_logs(vg_vm_of(L)->rt);
  if (r == NULL) {
    luaL_error(L, "vigil.logs: out of memory");
  }
  return r;
}

/* opts[key] as a positive number, or seconds of a duration ("1h") when `duration`. */
static double an_positive(lua_State *L, int v, const char *key, bool duration)
{
  int isnum;
  double x = lua_tonumberx(L, v, &isnum);
  if (!isnum && duration && lua_type(L, v) == LUA_TSTRING) {
    char err[128];
    int64_t ms = vg_duration_parse(lua_tostring(L, v), err, sizeof(err));
    isnum = ms > 0;
    x = (double)ms / 1000.0;
  }
  if (!isnum || !(x > 0) || !isfinite(x)) {
    luaL_error(L, "vigil.logs.analyser: option '%s' must be positive", key);
  }
  return x;
}

static uint32_t an_count(lua_State *L, int v, const char *key, double max)
{
  double x = an_positive(L, v, key, false);
  if (x != floor(x) || x > max) {
    luaL_error(L, "vigil.logs.analyser: option '%s' must be an integer in 1..%d", key, (int)max);
  }
  return (uint32_t)x;
}

/* Reads the analyser options at idx (nil: defaults) into *o; masks point into the table, which
 * must stay on the stack while *o is used. Raises naming the option. [-0, +0, e] */
static void an_opts(lua_State *L, int idx, vg_logan_opts_t *o)
{
  logan_opts_default(o);
  if (lua_isnoneornil(L, idx)) {
    return;
  }
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    int v = lua_gettop(L);
    if (strcmp(key, "window") == 0 || strcmp(key, "recent") == 0) {
      double secs = fmin(an_positive(L, v, key, true), 86400.0 * 2);
      *(key[0] == 'w' ? &o->window : &o->recent) = (uint32_t)secs;
    } else if (strcmp(key, "spike_factor") == 0) {
      o->spike_factor = an_positive(L, v, key, false);
    } else if (strcmp(key, "spike_min") == 0) {
      o->spike_min = an_positive(L, v, key, false);
    } else if (strcmp(key, "trend_factor") == 0) {
      o->trend_factor = an_positive(L, v, key, false);
    } else if (strcmp(key, "trend_min") == 0) {
      o->trend_min = an_positive(L, v, key, false);
    } else if (strcmp(key, "max_events") == 0) {
      o->max_events = an_count(L, v, key, 10000);
    } else if (strcmp(key, "max_services") == 0) {
      o->max_services = an_count(L, v, key, 1024);
    } else if (strcmp(key, "detector_window") == 0) {
      o->detector_window = an_count(L, v, key, VG_DETECT_WINDOW_MAX);
    } else if (strcmp(key, "detector") == 0) {
      int kind = lua_type(L, v) == LUA_TSTRING ? detect_kind_parse(lua_tostring(L, v)) : -1;
      if (kind < 0) {
        luaL_error(L,
                   "vigil.logs.analyser: option 'detector' must name a detector kind "
                   "(default, ewma, robust, cusum, zscore5, ...)");
      }
      o->detector = (vg_detect_kind_t)kind;
    } else if (strcmp(key, "miner") != 0) {
      luaL_error(L, "vigil.logs.analyser: unknown option '%s'", key);
    }
    lua_settop(L, v - 1);
  }
  if (lua_getfield(L, idx, "miner") != LUA_TNIL) {
    int m = lua_gettop(L);
    if (lua_type(L, m) != LUA_TTABLE) {
      luaL_error(L, "vigil.logs.analyser: opts.miner must be a table");
    }
    check_opts(L, m, &o->miner);
    if (lua_getfield(L, m, "max_templates") == LUA_TNIL) {
      o->miner.max_clusters = 0; /* the analysers' default */
    }
    lua_pop(L, 1);
    if (lua_getfield(L, m, "masks") == LUA_TTABLE) {
      lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
      if (n > VG_LOGAN_MAX_MASKS) {
        luaL_error(L, "bad option 'masks' to 'vigil.logs.analyser' (at most %d patterns)",
                   VG_LOGAN_MAX_MASKS);
      }
      for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, -1, i) != LUA_TSTRING) {
          luaL_error(L, "bad option 'masks' to 'vigil.logs.analyser' (item %d is not a string)",
                     (int)i);
        }
        o->masks[o->nmasks++] = lua_tostring(L, -1); /* anchored by opts.miner.masks */
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  char err[160];
  if (logan_opts_check(o, err, sizeof(err)) != 0) {
    luaL_error(L, "vigil.logs.analyser: %s", err);
  }
}

static vg_logan_t *check_an(lua_State *L)
{
  return *(vg_logan_t **)luaL_checkudata(L, 1, ANALYSER_MT);
}

/* analyser(name [, opts]) [-(1|2), +1, e]: a handle on the runtime's analyser `name`, created
 * on first use with opts; opts given for an existing one must be the same as its own. */
static int l_analyser(lua_State *L)
{
  size_t len = 0;
  const char *name = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
  if (name == NULL || len == 0 || len > VG_LOGAN_NAME_MAX || strlen(name) != len) {
    return luaL_error(L,
                      "bad argument #1 to 'analyser' (non-empty string expected, at most %d "
                      "bytes)",
                      VG_LOGAN_NAME_MAX);
  }
  lua_settop(L, 2);
  vg_logan_opts_t o;
  an_opts(L, 2, &o);
  vg_logan_registry_t *r = get_registry(L);
  vg_logan_t *a = logan_registry_get(r, name);
  if (a == NULL) {
    char err[200];
    a = logan_registry_add(r, name, &o, err, sizeof(err));
    if (a == NULL) {
      return luaL_error(L, "vigil.logs.analyser(\"%s\"): %s", name, err);
    }
  } else if (!lua_isnil(L, 2) && !logan_opts_equal(logan_opts(a), &o)) {
    return luaL_error(L,
                      "vigil.logs.analyser(\"%s\"): exists with other options (see "
                      "analyser:options()); give the same or none",
                      name);
  }
  vg_logan_t **u = lua_newuserdatauv(L, sizeof(vg_logan_t *), 0);
  *u = a;
  luaL_setmetatable(L, ANALYSER_MT);
  return 1;
}

/* analysers() [-0, +1, m]: the names of the runtime's analysers, sorted by Lua. */
static int l_analysers(lua_State *L)
{
  vg_logan_registry_t *r = get_registry(L);
  size_t n = logan_registry_count(r);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, logan_name(logan_registry_at(r, i)));
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* guess_level(line) [-1, +1, e]: the level word of a line ("error", "warn", ...) or nil. */
static int l_guess_level(lua_State *L)
{
  size_t len;
  const char *line = luaL_checklstring(L, 1, &len);
  char level[VG_LOGAN_LEVEL_MAX + 1];
  logan_guess_level(line, len, level);
  if (level[0] == '\0') {
    lua_pushnil(L);
  } else {
    lua_pushstring(L, level);
  }
  return 1;
}

/* is_error(level) [-1, +1, -] */
static int l_is_error(lua_State *L)
{
  lua_pushboolean(L, lua_type(L, 1) == LUA_TSTRING && logan_is_error(lua_tostring(L, 1)));
  return 1;
}

static void push_level(lua_State *L, const char *level)
{
  if (level[0] == '\0') {
    lua_pushnil(L);
  } else {
    lua_pushstring(L, level);
  }
}

/* Pushes the text of template id, or `fallback` when the miner no longer has it. */
static void push_text(lua_State *L, vg_logan_t *a, uint64_t id, const char *fallback, size_t n)
{
  vg_logan_template_t t;
  if (logan_template(a, id, &t)) {
    lua_pushlstring(L, t.text, t.len);
  } else {
    lua_pushlstring(L, fallback, n);
  }
}

static void set_num(lua_State *L, const char *k, double v)
{
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, uint64_t v)
{
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* Integral seconds as integers (minutes, first-seen times given as integers), others as
 * floats, so that Lua compares them with what it gave. */
static void set_time(lua_State *L, const char *k, double v)
{
  if (v == floor(v) && fabs(v) < 9e15) {
    lua_pushinteger(L, (lua_Integer)v);
  } else {
    lua_pushnumber(L, v);
  }
  lua_setfield(L, -2, k);
}

/* a:add(line, ts, level|nil, service|nil) [-5, +1, e]: the miner's result { id, template,
 * params, new, changed, truncated, merged } plus error, or nil for a blank line. */
static int an_add(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  size_t len;
  const char *line = luaL_checklstring(L, 2, &len);
  double ts = luaL_checknumber(L, 3);
  const char *level = luaL_optstring(L, 4, NULL);
  const char *service = luaL_optstring(L, 5, NULL);
  luaL_argcheck(L, isfinite(ts) && fabs(ts) <= 1e13, 3, "a finite time in seconds expected");
  if (service != NULL && (service[0] == '\0' || strlen(service) > VG_LOGAN_NAME_MAX)) {
    return luaL_error(L, "vigil.logs: service must be 1..%d bytes", VG_LOGAN_NAME_MAX);
  }
  vg_vm_charge(L, 16 + (uint64_t)(len / 8) * (1 + logan_opts(a)->nmasks));
  vg_logan_result_t r;
  if (logan_add_ex(a, line, len, ts, level, service, &r) != 0) {
    return luaL_error(L, "vigil.logs: out of memory (analyser)");
  }
  if (r.status == VG_LOGMINE_EMPTY || r.status == VG_LOGMINE_NOMATCH) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 8);
  size_t nparams = r.mine.nparams; /* the params first: valid until the next engine call */
  lua_createtable(L, (int)(nparams < 64 ? nparams : 64), 0);
  for (size_t i = 0; i < nparams; i++) {
    const vg_logmine_span_t *sp = &r.mine.params[i];
    size_t off = sp->off < len ? sp->off : len;
    size_t n = sp->len < len - off ? sp->len : len - off;
    lua_pushlstring(L, line + off, n);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "params");
  set_int(L, "id", r.mine.id);
  lua_pushboolean(L, r.status == VG_LOGMINE_CREATED);
  lua_setfield(L, -2, "new");
  lua_pushboolean(L, r.mine.changed);
  lua_setfield(L, -2, "changed");
  lua_pushboolean(L, r.mine.truncated);
  lua_setfield(L, -2, "truncated");
  set_int(L, "merged", r.mine.merged);
  lua_pushboolean(L, r.error);
  lua_setfield(L, -2, "error");
  push_text(L, a, r.mine.id, "", 0);
  lua_setfield(L, -2, "template");
  return 1;
}

/* Reads the query arguments (service, now [, since [, errors_only]]) from idx on, and charges
 * the work of a query over every template to the task. [-0, +0, e] */
static vg_logan_query_t an_query(lua_State *L, vg_logan_t *a, int idx)
{
  vg_logan_query_t q;
  q.service = luaL_optstring(L, idx, NULL);
  q.now = luaL_checknumber(L, idx + 1);
  q.since = luaL_optnumber(L, idx + 2, NAN);
  q.errors_only = lua_toboolean(L, idx + 3);
  luaL_argcheck(L, isfinite(q.now), idx + 1, "a finite time expected");
  logan_advance(a, q.now); /* minutes past by now are closed, lines or not */
  vg_logan_stats_t st;
  logan_stats(a, &st);
  vg_vm_charge(L, 16 + 4 * (uint64_t)st.templates);
  return q;
}

static size_t an_templates(vg_logan_t *a)
{
  vg_logan_stats_t st;
  logan_stats(a, &st);
  return st.templates;
}

/* a:error_rate(service, now) [-3, +3, e]: rate, errors, lines over the window. */
static int an_error_rate(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  vg_logan_query_t q = an_query(L, a, 2);
  uint64_t errors, lines;
  logan_error_rate(a, &q, &errors, &lines);
  lua_pushnumber(L, lines > 0 ? (double)errors / (double)lines : 0);
  lua_pushinteger(L, (lua_Integer)errors);
  lua_pushinteger(L, (lua_Integer)lines);
  return 3;
}

/* a:top_errors(n, service, now) [-4, +1, e]: { { id, template, count, share }, ... } */
static int an_top_errors(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  lua_Integer want = luaL_checkinteger(L, 2);
  vg_logan_query_t q = an_query(L, a, 3);
  size_t nt = an_templates(a);
  size_t n = want < 0 ? 0 : (size_t)want < nt ? (size_t)want : nt;
  vg_logan_top_t *out = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*out), 0);
  n = logan_top_errors(a, &q, out, n);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 4);
    set_int(L, "id", out[i].id);
    push_text(L, a, out[i].id, "", 0);
    lua_setfield(L, -2, "template");
    set_int(L, "count", out[i].count);
    set_num(L, "share", out[i].share);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* a:spikes(service, now) [-3, +1, e]: { { minute, errors, baseline }, ... } */
static int an_spikes(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  vg_logan_query_t q = an_query(L, a, 2);
  size_t room = logan_opts(a)->window / 60 + 1;
  vg_logan_spike_t *out = lua_newuserdatauv(L, room * sizeof(*out), 0);
  size_t n = logan_spikes(a, &q, out);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 3);
    set_time(L, "minute", out[i].minute);
    set_int(L, "errors", out[i].errors);
    set_num(L, "baseline", out[i].baseline);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* a:new_templates(service, now, since, errors_only) [-5, +1, e]:
 * { { id, template, first_seen, service, level, error, line }, ... } */
static int an_new_templates(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  vg_logan_query_t q = an_query(L, a, 2);
  size_t room = logan_opts(a)->max_events;
  vg_logan_event_t *out = lua_newuserdatauv(L, room * sizeof(*out), 0);
  size_t n = logan_new_templates(a, &q, out, room);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    const vg_logan_event_t *e = &out[i];
    lua_createtable(L, 0, 7);
    set_int(L, "id", e->id);
    push_text(L, a, e->id, e->line, e->line_len);
    lua_setfield(L, -2, "template");
    set_time(L, "first_seen", e->first_seen);
    lua_pushstring(L, e->service[0] != '\0' ? e->service : logan_name(a));
    lua_setfield(L, -2, "service");
    push_level(L, e->level);
    lua_setfield(L, -2, "level");
    lua_pushboolean(L, e->error);
    lua_setfield(L, -2, "error");
    lua_pushlstring(L, e->line, e->line_len);
    lua_setfield(L, -2, "line");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* a:anomalies(service, now, since) [-4, +1, e]:
 * { { id, template, minute, count, baseline, score }, ... } (service is not used: templates
 * are counted over all services) */
static int an_anomalies(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  vg_logan_query_t q = an_query(L, a, 2);
  size_t room = logan_opts(a)->max_events;
  vg_logan_anomaly_t *out = lua_newuserdatauv(L, room * sizeof(*out), 0);
  size_t n = logan_anomalies(a, &q, out, room);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 6);
    set_int(L, "id", out[i].id);
    push_text(L, a, out[i].id, "", 0);
    lua_setfield(L, -2, "template");
    set_time(L, "minute", out[i].minute);
    set_int(L, "count", out[i].count);
    set_num(L, "baseline", out[i].baseline);
    set_num(L, "score", out[i].score);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* a:trending(service, now) [-3, +1, e]: { { id, template, recent, before, growth }, ... } */
static int an_trending(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  vg_logan_query_t q = an_query(L, a, 2);
  size_t nt = an_templates(a);
  vg_logan_trend_t *out = lua_newuserdatauv(L, (nt ? nt : 1) * sizeof(*out), 0);
  size_t n = logan_trending(a, &q, out);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 5);
    set_int(L, "id", out[i].id);
    push_text(L, a, out[i].id, "", 0);
    lua_setfield(L, -2, "template");
    set_int(L, "recent", out[i].recent);
    set_int(L, "before", out[i].before);
    set_num(L, "growth", out[i].growth);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* a:template(id) [-2, +1, e]: { id, template, count, errors, first_seen, last_seen, service,
 * level }, or nil when unknown or evicted. */
static int an_template(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  vg_logan_template_t t;
  if (id <= 0 || !logan_template(a, (uint64_t)id, &t)) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 8);
  set_int(L, "id", t.id);
  lua_pushlstring(L, t.text, t.len);
  lua_setfield(L, -2, "template");
  set_int(L, "count", t.count);
  set_int(L, "errors", t.errors);
  if (!isnan(t.first_seen)) {
    set_time(L, "first_seen", t.first_seen);
    set_time(L, "last_seen", t.last_seen);
  }
  lua_pushstring(L, t.service[0] != '\0' ? t.service : logan_name(a));
  lua_setfield(L, -2, "service");
  push_level(L, t.level);
  lua_setfield(L, -2, "level");
  return 1;
}

/* a:stats() [-1, +1, m]: { lines, errors, late, anomalies, templates, services, evicted }. */
static int an_stats(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  vg_logan_stats_t st;
  logan_stats(a, &st);
  lua_createtable(L, 0, 7);
  set_int(L, "lines", st.lines);
  set_int(L, "errors", st.errors);
  set_int(L, "late", st.late);
  set_int(L, "anomalies", st.anomalies);
  set_int(L, "templates", st.templates);
  set_int(L, "services", st.services);
  set_int(L, "evicted", st.miner.evicted);
  return 1;
}

/* a:options() [-1, +1, m]: the analyser's options, durations in seconds. */
static int an_options(lua_State *L)
{
  const vg_logan_opts_t *o = logan_opts(check_an(L));
  lua_createtable(L, 0, 12);
  set_int(L, "window", o->window);
  set_int(L, "recent", o->recent);
  set_num(L, "spike_factor", o->spike_factor);
  set_num(L, "spike_min", o->spike_min);
  set_num(L, "trend_factor", o->trend_factor);
  set_num(L, "trend_min", o->trend_min);
  set_int(L, "max_events", o->max_events);
  set_int(L, "max_services", o->max_services);
  lua_pushstring(L, detect_kind_name(o->detector));
  lua_setfield(L, -2, "detector");
  set_int(L, "detector_window", o->detector_window);
  set_int(L, "max_templates", o->miner.max_clusters);
  set_num(L, "similarity", o->miner.similarity);
  return 1;
}

/* a:snapshot() [-1, +1, e]: the analyser's state as a string (what the store keeps). */
static int an_snapshot(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  size_t len;
  char *buf = logan_snapshot(a, &len);
  if (buf == NULL) {
    return luaL_error(L, "vigil.logs: out of memory (snapshot)");
  }
  vg_vm_charge(L, 16 + len / 16); /* the copy below; a kill here must not leak buf */
  lua_pushcfunction(L, push_bytes);
  lua_pushlightuserdata(L, buf);
  lua_pushinteger(L, (lua_Integer)len);
  int status = lua_pcall(L, 2, 1, 0);
  free(buf);
  if (status != LUA_OK) {
    return lua_error(L);
  }
  return 1;
}

/* a:restore(snapshot) [-2, +(1|2), e]: true, or nil, "EINVAL: ..." leaving it as it was. */
static int an_restore(lua_State *L)
{
  vg_logan_t *a = check_an(L);
  size_t len;
  const char *blob = luaL_checklstring(L, 2, &len);
  vg_vm_charge(L, 16 + len / 8);
  char err[200];
  if (logan_registry_restore(get_registry(L), logan_name(a), blob, len, err, sizeof(err)) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "EINVAL: %s", err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int an_tostring(lua_State *L)
{
  lua_pushfstring(L, "vigil.logs.analyser(%s)", logan_name(check_an(L)));
  return 1;
}

static int an_eq(lua_State *L)
{
  vg_logan_t **x = luaL_testudata(L, 1, ANALYSER_MT), **y = luaL_testudata(L, 2, ANALYSER_MT);
  lua_pushboolean(L, x != NULL && y != NULL && *x == *y);
  return 1;
}

static void open_analysers(lua_State *L)
{
  static const luaL_Reg methods[] = {
    { "add", an_add },
    { "error_rate", an_error_rate },
    { "top_errors", an_top_errors },
    { "spikes", an_spikes },
    { "new_templates", an_new_templates },
    { "anomalies", an_anomalies },
    { "trending", an_trending },
    { "template", an_template },
    { "stats", an_stats },
    { "options", an_options },
    { "snapshot", an_snapshot },
    { "restore", an_restore },
    { NULL, NULL },
  };
  luaL_newmetatable(L, ANALYSER_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, an_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, an_eq);
  lua_setfield(L, -2, "__eq");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}

int vg_open_vigil_logs(lua_State *L)
{
  static const luaL_Reg methods[] = {
    { "add", miner_add },           { "match", miner_match },
    { "template", miner_template }, { "templates", miner_templates },
    { "stats", miner_stats },       { "set_match_only", miner_set_match_only },
    { "snapshot", miner_snapshot }, { "restore", miner_restore },
    { "close", miner_gc },          { NULL, NULL },
  };
  static const luaL_Reg meta[] = {
    { "__gc", miner_gc },
    { "__close", miner_gc },
    { "__tostring", miner_tostring },
    { NULL, NULL },
  };
  static const luaL_Reg funcs[] = {
    { "miner", l_miner },         { "restore", l_restore },
    { "live", l_live },           { "analyser", l_analyser },
    { "analysers", l_analysers }, { "guess_level", l_guess_level },
    { "is_error", l_is_error },   { NULL, NULL },
  };
  llogs_vm_t *vm = lua_newuserdatauv(L, sizeof(*vm), 0); /* [vm] */
  vm->live = 0;
  vm->templates = 0;
  luaL_newmetatable(L, MINER_MT); /* [vm, mt] */
  lua_pushvalue(L, -2);           /* the metatable keeps the counters alive as long as any miner */
  luaL_setfuncs(L, meta, 1);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1); /* [vm] */
  open_analysers(L);
  luaL_newlibtable(L, funcs); /* [vm, lib] */
  lua_rotate(L, -2, 1);       /* [lib, vm] */
  luaL_setfuncs(L, funcs, 1); /* [lib] */
  lua_createtable(L, 9, 0);
  for (int i = 0; mask_names[i] != NULL; i++) {
    lua_pushstring(L, mask_names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "builtin_masks");
  return 1;
}
