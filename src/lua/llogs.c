/* vigil.logs.core: the C half of vigil.logs (lua/vigil/logs.lua builds the analyser on it).
 * Template miners (src/engine/logmine.c) as userdata: the miner's memory is the engine's own
 * malloc: ballast in each userdata makes the VM cap see its buffers, a per-VM budget bounds the
 * templates (max_templates), and the userdata's __gc frees it all. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "core/vm.h"
#include "engine/logmine.h"
#include "lua/lvigil.h"

#define MINER_MT "vigil.logs.miner"

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
      size_t len;
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
    { "miner", l_miner },
    { "restore", l_restore },
    { "live", l_live },
    { NULL, NULL },
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
  lua_pop(L, 1);              /* [vm] */
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
