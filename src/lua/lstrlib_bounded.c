/* Lua binding of the step-bounded pattern matcher: drop-in string.find, match, gmatch and gsub
 * with Lua 5.4's argument handling and results, each call (each gmatch iteration) limited to a
 * number of matcher steps that are also reported to the runtime's instruction accounting. */
#include "lua/lstrlib_bounded.h"

#include <inttypes.h>
#include <lauxlib.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "engine/lpattern.h"

static const char GSUB_REASON[] = "inside a string.gsub replacement function";

static uint64_t g_limit = LPATTERN_DEFAULT_STEP_LIMIT;
static vg_pattern_charge_fn g_charge;
static vg_noyield_fn g_noyield;

void vg_strlib_bounded_set_charge(vg_pattern_charge_fn fn)
{
  g_charge = fn;
}

void vg_strlib_bounded_set_noyield(vg_noyield_fn fn)
{
  g_noyield = fn;
}

void vg_strlib_bounded_set_limit(uint64_t steps)
{
  g_limit = steps ? steps : LPATTERN_DEFAULT_STEP_LIMIT;
}

uint64_t vg_strlib_bounded_limit(void)
{
  return g_limit;
}

/* Reports the steps taken since the last report. */
static void report_steps(lua_State *L, const lpattern_state_t *st, uint64_t *reported)
{
  uint64_t fresh = st->steps - *reported;
  *reported = st->steps;
  if (g_charge != NULL && fresh > 0) {
    g_charge(L, fresh);
  }
}

/* Raises the error a failed match left in st. [-0, +0, v] */
static int raise_status(lua_State *L, const lpattern_state_t *st, const char *fname)
{
  if (st->status == LPATTERN_BUDGET) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "string.%s: pattern too complex for the step budget (%" PRIu64 " steps)", fname,
             st->step_limit);
    return luaL_error(L, "%s", msg);
  }
  return luaL_error(L, "%s", st->error);
}

/* Lua 5.4's reading of a start position: negative counts from the end, too small means 1.
 * Returns a 1-based position, possibly past the end. */
static size_t start_position(lua_Integer pos, size_t len)
{
  if (pos > 0) {
    return (size_t)pos;
  }
  if (pos == 0 || pos < -(lua_Integer)len) {
    return 1;
  }
  return len - (size_t)(-pos) + 1;
}

/* Pushes capture i of the match s..e. [-0, +1, e] */
static void push_capture(lua_State *L, lpattern_state_t *st, int i, const char *s, const char *e)
{
  lpattern_capture_t cap;
  if (lpattern_get_capture(st, i, s, e, &cap) != LPATTERN_MATCH) {
    luaL_error(L, "%s", st->error);
  }
  if (cap.len == LPATTERN_CAP_POSITION) {
    lua_pushinteger(L, (lua_Integer)(cap.start - st->src) + 1);
  } else {
    lua_pushlstring(L, cap.start, (size_t)cap.len);
  }
}

/* Pushes the captures of the match s..e, or the whole match when there are none and s is not
 * NULL; returns how many. [-0, +n, e] */
static int push_captures(lua_State *L, lpattern_state_t *st, const char *s, const char *e)
{
  int n = lpattern_capture_count(st, s != NULL);
  luaL_checkstack(L, n, "too many captures");
  for (int i = 0; i < n; i++) {
    push_capture(L, st, i, s, e);
  }
  return n;
}

/* find (find=true) and match: (s, pattern [, init [, plain]]). [-(2|3|4), +n, e] */
static int find_or_match(lua_State *L, bool find)
{
  size_t slen, plen;
  const char *s = luaL_checklstring(L, 1, &slen);
  const char *p = luaL_checklstring(L, 2, &plen);
  size_t init = start_position(luaL_optinteger(L, 3, 1), slen) - 1;
  if (init > slen) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || !lpattern_has_specials(p, plen))) {
    const char *at = lpattern_find_plain(s + init, slen - init, p, plen);
    if (at == NULL) {
      luaL_pushfail(L);
      return 1;
    }
    lua_pushinteger(L, (lua_Integer)(at - s) + 1);
    lua_pushinteger(L, (lua_Integer)(at - s) + (lua_Integer)plen);
    return 2;
  }

  bool anchored = plen > 0 && p[0] == '^';
  if (anchored) {
    p++;
    plen--;
  }
  lpattern_state_t st;
  lpattern_init(&st, s, slen, p, plen, g_limit);
  const char *ms = NULL, *me = NULL;
  lpattern_status_t rc = lpattern_find(&st, s + init, anchored, &ms, &me);
  uint64_t reported = 0;
  report_steps(L, &st, &reported);
  if (rc == LPATTERN_NOMATCH) {
    luaL_pushfail(L);
    return 1;
  }
  if (rc != LPATTERN_MATCH) {
    return raise_status(L, &st, find ? "find" : "match");
  }
  if (!find) {
    return push_captures(L, &st, ms, me);
  }
  lua_pushinteger(L, (lua_Integer)(ms - s) + 1);
  lua_pushinteger(L, (lua_Integer)(me - s));
  return push_captures(L, &st, NULL, NULL) + 2;
}

static int bounded_find(lua_State *L)
{
  return find_or_match(L, true);
}

static int bounded_match(lua_State *L)
{
  return find_or_match(L, false);
}

/* The gmatch iterator. Upvalues: subject, pattern, next start offset, end offset of the last
 * match (-1 before the first). [-0, +n, e] */
static int gmatch_next(lua_State *L)
{
  size_t slen, plen;
  const char *s = lua_tolstring(L, lua_upvalueindex(1), &slen);
  const char *p = lua_tolstring(L, lua_upvalueindex(2), &plen);
  lua_Integer from = lua_tointeger(L, lua_upvalueindex(3));
  lua_Integer last = lua_tointeger(L, lua_upvalueindex(4));
  lpattern_state_t st;
  lpattern_init(&st, s, slen, p, plen, g_limit);
  uint64_t reported = 0;
  for (const char *at = s + from; at <= st.src_end; at++) {
    if (st.lead >= 0) {
      at = lpattern_skip(&st, at);
      if (at == NULL) {
        break;
      }
    }
    const char *e = lpattern_match(&st, at);
    if (e != NULL && e - s != last) {
      lua_pushinteger(L, (lua_Integer)(e - s));
      lua_pushvalue(L, -1);
      lua_replace(L, lua_upvalueindex(3));
      lua_replace(L, lua_upvalueindex(4));
      report_steps(L, &st, &reported);
      return push_captures(L, &st, at, e);
    }
    if (st.status != LPATTERN_NOMATCH && st.status != LPATTERN_MATCH) {
      report_steps(L, &st, &reported);
      return raise_status(L, &st, "gmatch");
    }
  }
  /* exhausted: later calls find nothing either, so skip the rescan */
  lua_pushinteger(L, (lua_Integer)slen + 1);
  lua_replace(L, lua_upvalueindex(3));
  report_steps(L, &st, &reported);
  return 0;
}

/* gmatch(s, pattern [, init]) -> iterator. A leading '^' is an ordinary byte here, as in Lua.
 * [-(2|3), +1, e] */
static int bounded_gmatch(lua_State *L)
{
  size_t slen;
  luaL_checklstring(L, 1, &slen);
  luaL_checkstring(L, 2);
  size_t init = start_position(luaL_optinteger(L, 3, 1), slen) - 1;
  if (init > slen) {
    init = slen + 1;
  }
  lua_settop(L, 2);
  lua_pushinteger(L, (lua_Integer)init);
  lua_pushinteger(L, -1);
  lua_pushcclosure(L, gmatch_next, 4);
  return 1;
}

/* Appends a string replacement, expanding %0-%9 and %%. [-0, +0, e] */
static void add_template(
    lua_State *L, luaL_Buffer *b, lpattern_state_t *st, const char *s, const char *e)
{
  size_t len;
  const char *r = lua_tolstring(L, 3, &len);
  const char *rend = r + len;
  for (;;) {
    const char *pct = memchr(r, '%', (size_t)(rend - r));
    if (pct == NULL) {
      luaL_addlstring(b, r, (size_t)(rend - r));
      return;
    }
    luaL_addlstring(b, r, (size_t)(pct - r));
    int c = pct + 1 < rend ? (unsigned char)pct[1] : 0;
    if (c == '%') {
      luaL_addchar(b, '%');
    } else if (c == '0') {
      luaL_addlstring(b, s, (size_t)(e - s));
    } else if (c >= '1' && c <= '9') {
      push_capture(L, st, c - '1', s, e);
      luaL_addvalue(b); /* position captures become their decimal text */
    } else {
      luaL_error(L, "invalid use of '%%' in replacement string");
    }
    r = pct + 2;
  }
}

/* Calls the replacement function with its n arguments above it, telling the runtime that the
 * call cannot yield, and always telling it when the call is over. [-(n+1), +1, e] */
static void call_replacement(lua_State *L, int nargs)
{
  if (g_noyield != NULL) {
    g_noyield(L, GSUB_REASON);
  }
  int rc = lua_pcall(L, nargs, 1, 0);
  if (g_noyield != NULL) {
    g_noyield(L, NULL);
  }
  if (rc != LUA_OK) {
    lua_error(L);
  }
}

/* Appends the replacement for the match s..e; returns false when the original text was kept.
 * [-0, +0, e] */
static bool add_replacement(lua_State *L,
                            luaL_Buffer *b,
                            lpattern_state_t *st,
                            const char *s,
                            const char *e,
                            int repl_type,
                            uint64_t *reported)
{
  if (repl_type == LUA_TFUNCTION) {
    lua_pushvalue(L, 3);
    int n = push_captures(L, st, s, e);
    report_steps(L, st, reported);
    call_replacement(L, n);
  } else if (repl_type == LUA_TTABLE) {
    push_capture(L, st, 0, s, e);
    lua_gettable(L, 3);
  } else {
    add_template(L, b, st, s, e);
    return true;
  }
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
    return false;
  }
  if (!lua_isstring(L, -1)) {
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  }
  luaL_addvalue(b);
  return true;
}

/* gsub(s, pattern, repl [, n]) -> string, count. One step budget covers the whole call.
 * [-(3|4), +2, e] */
static int bounded_gsub(lua_State *L)
{
  size_t slen, plen;
  const char *src = luaL_checklstring(L, 1, &slen);
  const char *p = luaL_checklstring(L, 2, &plen);
  int repl_type = lua_type(L, 3);
  lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)slen + 1);
  luaL_argexpected(L,
                   repl_type == LUA_TNUMBER || repl_type == LUA_TSTRING ||
                       repl_type == LUA_TFUNCTION || repl_type == LUA_TTABLE,
                   3, "string/function/table");
  bool anchored = plen > 0 && p[0] == '^';
  if (anchored) {
    p++;
    plen--;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lpattern_state_t st;
  lpattern_init(&st, src, slen, p, plen, g_limit);
  uint64_t reported = 0;
  const char *s = src, *end = src + slen, *last = NULL;
  lua_Integer n = 0;
  bool changed = false;
  while (n < max_n) {
    if (!anchored && st.lead >= 0) {
      const char *next = lpattern_skip(&st, s);
      if (next == NULL) {
        break; /* no match anywhere further: the rest is copied below */
      }
      luaL_addlstring(&b, s, (size_t)(next - s));
      s = next;
    }
    const char *e = lpattern_match(&st, s);
    if (e != NULL && e != last) {
      n++;
      changed = add_replacement(L, &b, &st, s, e, repl_type, &reported) || changed;
      s = last = e;
    } else if (st.status != LPATTERN_NOMATCH && st.status != LPATTERN_MATCH) {
      report_steps(L, &st, &reported);
      return raise_status(L, &st, "gsub");
    } else if (s < end) {
      luaL_addchar(&b, *s++);
    } else {
      break;
    }
    if (anchored) {
      break;
    }
  }
  report_steps(L, &st, &reported);
  if (!changed) {
    lua_pushvalue(L, 1);
  } else {
    luaL_addlstring(&b, s, (size_t)(end - s));
    luaL_pushresult(&b);
  }
  lua_pushinteger(L, n);
  return 2;
}

void vg_strlib_bounded_install(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    { "find", bounded_find },
    { "match", bounded_match },
    { "gmatch", bounded_gmatch },
    { "gsub", bounded_gsub },
    { NULL, NULL },
  };
  luaL_setfuncs(L, funcs, 0);
}
