/* Differential tests of the bounded string.find/match/gmatch/gsub against Lua 5.4's own, on a
 * generated corpus and on hand-picked corner cases, plus the binding's extras: the step-budget
 * error, step charging, and the non-yieldable-context notifications around gsub callbacks. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/lpattern.h"
#include "lua/lstrlib_bounded.h"
#include "test_support.h"

/* A fresh state whose globals O (the original string table) and B (a copy holding the bounded
 * functions) let chunks compare the two. */
static lua_State *new_state(void)
{
  lua_State *L = luaL_newstate();
  assert_non_null(L);
  luaL_openlibs(L);
  lua_getglobal(L, "string");
  lua_setglobal(L, "O");
  lua_newtable(L);
  lua_getglobal(L, "string");
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) { /* B = shallow copy of string */
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_settable(L, -5);
  }
  lua_pop(L, 1);
  vg_strlib_bounded_install(L);
  lua_setglobal(L, "B");
  return L;
}

/* Runs chunk; fails the test with the Lua error if it raises. Leaves its results on the stack. */
static void run(lua_State *L, const char *chunk, int nresults)
{
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, nresults, 0) != LUA_OK) {
    fail_msg("lua: %s", lua_tostring(L, -1));
  }
}

/* The Lua side of the differential test: a deterministic generator (an LCG, independent of
 * math.random) of patterns from atoms, of subjects up to 40 bytes and of init values, and a
 * comparison of every function's results or error message. Returns cases run, mismatches and a
 * report of the first mismatches. */
static const char DIFF_DRIVER[] =
    "local ncases, seed = ...\n"
    "local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648\n"
    "  return (seed >> 8) % n + 1 end\n"
    "local function pick(t) return t[rnd(#t)] end\n"
    "local atoms = { 'a', 'b', 'c', 'x', 'ab', '.', ' ', '%a', '%A', '%d', '%D', '%s', '%S',\n"
    "  '%w', '%W', '%p', '%P', '%l', '%L', '%u', '%U', '%x', '%X', '%c', '%C', '%g', '%G',\n"
    "  '%%', '%.', '%-', '%]', '%q', '%z', '[abc]', '[^ab]', '[a-c]', '[%d_]', '[]]', '[^]]',\n"
    "  '[a-]', '[%a-z]', '[a-%%]', '[-a]', '[%]]', '[^%s]', '[b-a]', '[.]', '[%w_%-]',\n"
    "  '[^%]a]', '[a-%]]', '[%^]', '-', '^', '$', ')', '(', '(', '()', '%1', '%1', '%2', '%0',\n"
    "  '%bab', '%b()', '%b', '%ba', '%f[%w]', '%f[^a]', '%f[a]', '%f[%z]', '%f', '%fa', '%',\n"
    "  '[a', '[^', '[', ']', '\\0', '*', '+', '?', '%f[%W]', '(a)', '(%a+)', '(.-)', '()a',\n"
    "  '%b[]', '[\\0-\\31]', '\\200', '[\\128-\\255]' }\n"
    "local quants = { '', '', '', '', '*', '+', '-', '?' }\n"
    "local function gen_pattern()\n"
    "  for _ = 1, 100 do\n"
    "    local t = {}\n"
    "    if rnd(5) == 1 then t[#t + 1] = '^' end\n"
    "    for _ = 1, rnd(6) do t[#t + 1] = pick(atoms) .. pick(quants) end\n"
    "    if rnd(6) == 1 then t[#t + 1] = '$' end\n"
    "    if rnd(4) == 1 then local i = rnd(#t); t[i] = '(' .. t[i] .. ')' end\n"
    "    local p = table.concat(t)\n"
    "    local _, reps = p:gsub('[*+-]', '')\n"
    "    if reps <= 3 then return p end\n"
    "  end\n"
    "  return 'a'\n"
    "end\n"
    "local alphabets = { 'ab', 'abc ', 'aab()[]', 'abcx1 2_.()[]%-^$AZ9\\n\\0\\200\\255' }\n"
    "local function gen_subject()\n"
    "  local alpha = pick(alphabets)\n"
    "  local n = rnd(3) == 1 and rnd(41) - 1 or rnd(11) - 1\n"
    "  local t = {}\n"
    "  for i = 1, n do local k = rnd(#alpha); t[i] = alpha:sub(k, k) end\n"
    "  return table.concat(t)\n"
    "end\n"
    "local function gen_init() if rnd(2) == 1 then return nil end return rnd(91) - 46 end\n"
    "local repl_table = { a = 'A', b = false, c = 3, x = {}, ab = 'AB', [1] = 'one', [2] = 2.5 }\n"
    "local function repl_fn(...)\n"
    "  local n = select('#', ...)\n"
    "  if n % 3 == 2 then return false end\n"
    "  local t = {} for i = 1, n do t[i] = tostring((select(i, ...))) end\n"
    "  return table.concat(t, ',') .. '#' .. n\n"
    "end\n"
    "local repls = { 'x', '%0', '%1', '<%1>', '%2', '%%', '%', '%a', '[%0%0]', 7, '', 'a%1b%0',\n"
    "  repl_table, repl_fn, function() return nil end, function(a) return a end,\n"
    "  function() return {} end }\n"
    "local function pack(ok, ...)\n"
    "  local t = { ok and 'ok' or 'err' }\n"
    "  for i = 1, select('#', ...) do local v = select(i, ...)\n"
    "    t[#t + 1] = type(v) == 'string' and string.format('%q', v) or tostring(v) end\n"
    "  return table.concat(t, ' ')\n"
    "end\n"
    "local function all_gmatch(T, s, p, init)\n"
    "  local it = T.gmatch(s, p, init)\n"
    "  local out = {}\n"
    "  for _ = 1, 60 do\n"
    "    local r = pack(true, it())\n"
    "    out[#out + 1] = r\n"
    "    if r == 'ok' or r:sub(1, 6) == 'ok nil' then break end\n"
    "  end\n"
    "  return table.concat(out, ' ; ')\n"
    "end\n"
    "local cases, bad, report, matched, errors = 0, 0, {}, 0, 0\n"
    "local function compare(what, f, ...)\n"
    "  cases = cases + 1\n"
    "  local a, b = pack(pcall(f, O, ...)), pack(pcall(f, B, ...))\n"
    "  if a:sub(1, 3) == 'err' then errors = errors + 1\n"
    "  elseif a ~= 'ok nil' and a ~= 'ok \"ok\"' then matched = matched + 1 end\n"
    "  if a ~= b then\n"
    "    bad = bad + 1\n"
    "    if #report < 15 then\n"
    "      local args = {}\n"
    "      for i = 1, select('#', ...) do args[i] = pack(true, (select(i, ...))):sub(4) end\n"
    "      report[#report + 1] = string.format('%s(%s): lua=%s bounded=%s', what,\n"
    "        table.concat(args, ', '), a, b)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function find(T, ...) return T.find(...) end\n"
    "local function match(T, ...) return T.match(...) end\n"
    "local function gmatch(T, ...) return all_gmatch(T, ...) end\n"
    "local function gsub(T, ...) return T.gsub(...) end\n"
    "for _ = 1, ncases do\n"
    "  local p, s, init = gen_pattern(), gen_subject(), gen_init()\n"
    "  local plain = ({ nil, true, false })[rnd(3)]\n"
    "  compare('find', find, s, p, init, plain)\n"
    "  compare('match', match, s, p, init)\n"
    "  compare('gmatch', gmatch, s, p, init)\n"
    "  local r, n = pick(repls), (rnd(3) == 1 and rnd(6) - 2 or nil)\n"
    "  compare('gsub', gsub, s, p, r, n)\n"
    "end\n"
    "-- corner cases: recursion depth, capture counts, anchors, empty matches, long subjects\n"
    "local fixed = {\n"
    "  { ('a'):rep(199), ('a?'):rep(199) }, { ('a'):rep(200), ('a?'):rep(200) },\n"
    "  { ('a'):rep(199), ('(a)'):rep(10) .. ('a?'):rep(180) },\n"
    "  { 'a', ('('):rep(99) .. 'a' .. (')'):rep(99) },\n"
    "  { 'a', ('('):rep(100) .. 'a' .. (')'):rep(100) },\n"
    "  { 'a', ('('):rep(32) .. 'a' .. (')'):rep(32) }, { ('a'):rep(40), ('(a)'):rep(32) },\n"
    "  { ('a'):rep(40), ('(a)'):rep(33) }, { ('a'):rep(40), ('()'):rep(32) },\n"
    "  { '', ('()'):rep(33) }, { ('a'):rep(199), ('a*'):rep(199) },\n"
    "  { ('b'):rep(300), ('a*'):rep(300) }, { ('b'):rep(300), ('a-'):rep(300) },\n"
    "  { ('ab'):rep(150), ('a-b'):rep(120) }, { 'hello world from Lua', '^(%w+)' },\n"
    "  { 'hello world', '%f[%w]%w+' }, { 'THE (quick) fox', '%f[%a]%a+%f[%A]' },\n"
    "  { 'key = value', '(%w+)%s*=%s*(%w+)' }, { 'abc', '' }, { '', '' }, { 'abc', '^' },\n"
    "  { 'abc', '$' }, { 'abc', '^$' }, { '', '^$' }, { 'a$b', 'a$b' }, { 'a^b', 'a^b' },\n"
    "  { '^a', '^^a' }, { 'x(a(b)c)y', '%b()' }, { 'x((a)', '%b()' }, { 'abab', '(ab)%1' },\n"
    "  { 'aXa', '(.)X%1' }, { 'abc', '()b()' }, { 'abc', '()(b)()%2' }, { 'abc', '()%1' },\n"
    "  { 'aaa', 'a-' }, { 'aaa', 'a-$' }, { ('x'):rep(300) .. 'y', '.-y' },\n"
    "  { ('x'):rep(1000), '[^y]*$' }, { 'a.b', 'a.b', 1, true }, { 'a+b', 'a+b', 1, true },\n"
    "  { 'a+b', 'a%+b' }, { 'abc', 'b', -1 }, { 'abc', 'b', -2 }, { 'abc', 'b', 100 },\n"
    "  { 'abc', 'b', -100 }, { 'abc', '', 4 }, { 'abc', '', 5 }, { 'abc', 'c', 0 },\n"
    "  { ('ab'):rep(200) .. ('abc'):rep(20), ('abc'):rep(15) },\n"
    "  { ('ab'):rep(200), ('ab'):rep(17), 3 },\n"
    "  { ('x'):rep(100) .. '.+' .. ('y'):rep(40), '.+' .. ('y'):rep(40), 1, true },\n"
    "}\n"
    "for _, c in ipairs(fixed) do\n"
    "  local s, p, init, plain = c[1], c[2], c[3], c[4]\n"
    "  compare('find', find, s, p, init, plain)\n"
    "  compare('match', match, s, p, init)\n"
    "  compare('gmatch', gmatch, s, p, init)\n"
    "  for _, r in ipairs(repls) do compare('gsub', gsub, s, p, r) end\n"
    "end\n"
    "return cases, bad, table.concat(report, '\\n'), matched, errors\n";

/* Seed and size default to the committed corpus; STRLIB_DIFF_SEED / STRLIB_DIFF_CASES explore
 * others (a mismatch found that way belongs in the driver's fixed cases). */
static void test_differential_corpus(void **state)
{
  (void)state;
  const char *env_seed = getenv("STRLIB_DIFF_SEED");
  const char *env_cases = getenv("STRLIB_DIFF_CASES");
  lua_Integer seed = env_seed ? strtoll(env_seed, NULL, 10) : 20240611;
  lua_Integer ncases = env_cases ? strtoll(env_cases, NULL, 10) : 4000;
  vg_strlib_bounded_set_limit(UINT64_C(1000000000)); /* compare semantics, not the budget */
  lua_State *L = new_state();
  if (luaL_loadstring(L, DIFF_DRIVER) != LUA_OK) {
    fail_msg("driver: %s", lua_tostring(L, -1));
  }
  lua_pushinteger(L, ncases);
  lua_pushinteger(L, seed);
  if (lua_pcall(L, 2, 5, 0) != LUA_OK) {
    fail_msg("driver: %s", lua_tostring(L, -1));
  }
  lua_Integer cases = lua_tointeger(L, -5);
  lua_Integer bad = lua_tointeger(L, -4);
  lua_Integer matched = lua_tointeger(L, -2);
  lua_Integer errors = lua_tointeger(L, -1);
  print_message("%lld cases: %lld with a match, %lld raising in Lua, %lld different\n",
                (long long)cases, (long long)matched, (long long)errors, (long long)bad);
  if (bad != 0) {
    fail_msg("%lld of %lld cases differ:\n%s", (long long)bad, (long long)cases,
             lua_tostring(L, -3));
  }
  assert_true(cases >= 4 * ncases);
  /* the corpus must exercise both outcomes, or agreeing proves little */
  assert_true(matched > cases / 5);
  assert_true(errors > cases / 20);
  lua_close(L);
  vg_strlib_bounded_set_limit(0);
}

/* Charge callback: sums what it is given. */
static uint64_t g_charged;
static int g_charge_calls;

static void count_charge(lua_State *L, uint64_t steps)
{
  (void)L;
  assert_true(steps > 0);
  g_charged += steps;
  g_charge_calls++;
}

static double seconds_since(const struct timespec *t0)
{
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void test_budget_error(void **state)
{
  (void)state;
  vg_strlib_bounded_set_limit(0);
  assert_int_equal(vg_strlib_bounded_limit(), 1000000);
  vg_strlib_bounded_set_charge(count_charge);
  lua_State *L = new_state();
  static const struct {
    const char *chunk, *message;
  } cases[] = {
    { "return pcall(B.find, ('a'):rep(256), '.-.-.-.-b')",
      "string.find: pattern too complex for the step budget (1000000 steps)" },
    { "return pcall(B.match, ('a'):rep(256), '.-.-.-.-b')",
      "string.match: pattern too complex for the step budget (1000000 steps)" },
    { "return pcall(B.gmatch(('a'):rep(256), '.-.-.-.-b'))",
      "string.gmatch: pattern too complex for the step budget (1000000 steps)" },
    { "return pcall(B.gsub, ('a'):rep(256), '.-.-.-.-b', 'x')",
      "string.gsub: pattern too complex for the step budget (1000000 steps)" },
    { "return pcall(B.find, ('a'):rep(5000), '(.*)*b')",
      "string.find: pattern too complex for the step budget (1000000 steps)" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    g_charged = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    run(L, cases[i].chunk, 2);
    double took = seconds_since(&t0);
    assert_false(lua_toboolean(L, -2));
    assert_string_equal(lua_tostring(L, -1), cases[i].message);
    lua_pop(L, 2);
    /* the whole budget, and not much more, was charged */
    assert_true(g_charged > 1000000);
    assert_true(g_charged < 1000000 + 10000);
    assert_true(took < 1.0); /* a guard against a hang, far above the expected milliseconds */
  }

  /* a lower limit applies at once and names itself */
  vg_strlib_bounded_set_limit(5000);
  run(L, "return pcall(B.find, ('a'):rep(64), '.-.-b')", 2);
  assert_string_equal(lua_tostring(L, -1),
                      "string.find: pattern too complex for the step budget (5000 steps)");
  lua_pop(L, 2);
  vg_strlib_bounded_set_limit(0);

  /* ordinary calls charge what they did, once per call */
  g_charged = 0;
  g_charge_calls = 0;
  run(L, "return B.find('severity=critical', '(%w+)=(%w+)')", 4);
  assert_int_equal(lua_tointeger(L, -4), 1);
  assert_int_equal(lua_tointeger(L, -3), 17);
  assert_string_equal(lua_tostring(L, -1), "critical");
  lua_pop(L, 4);
  assert_int_equal(g_charge_calls, 1);
  assert_true(g_charged >= 17 && g_charged < 200);

  /* gsub shares one budget across its matches, gmatch has one per iteration */
  vg_strlib_bounded_set_limit(400);
  run(L, "return pcall(B.gsub, ('ab'):rep(100), 'a(b)', '%1')", 2);
  assert_false(lua_toboolean(L, -2));
  lua_pop(L, 2);
  run(L, "local n = 0 for _ in B.gmatch(('ab'):rep(100), 'a(b)') do n = n + 1 end return n", 1);
  assert_int_equal(lua_tointeger(L, -1), 100);
  lua_pop(L, 1);
  vg_strlib_bounded_set_limit(0);

  vg_strlib_bounded_set_charge(NULL);
  lua_close(L);
}

/* noyield callback: records transitions and checks they nest. */
static const char *g_reason;
static int g_enter, g_leave, g_max_nesting, g_nesting;

static void note_noyield(lua_State *L, const char *reason)
{
  (void)L;
  if (reason != NULL) {
    g_enter++;
    g_nesting++;
    if (g_nesting > g_max_nesting) {
      g_max_nesting = g_nesting;
    }
  } else {
    g_leave++;
    g_nesting--;
    assert_true(g_nesting >= 0);
  }
  g_reason = reason;
}

/* Lua-callable: returns the reason currently set (or nil). [-0, +1, -] */
static int current_reason(lua_State *L)
{
  lua_pushstring(L, g_reason);
  return 1;
}

static void test_noyield_reason(void **state)
{
  (void)state;
  vg_strlib_bounded_set_noyield(note_noyield);
  lua_State *L = new_state();
  lua_register(L, "current_reason", current_reason);
  g_reason = NULL;
  g_enter = g_leave = g_max_nesting = g_nesting = 0;

  /* set while the function runs, cleared after each call */
  run(L,
      "local seen = {}\n"
      "local r, n = B.gsub('a-b-c', '%a', function(c) seen[#seen + 1] = current_reason() return "
      "c:upper() end)\n"
      "return r, n, seen[1], seen[3], #seen",
      5);
  assert_string_equal(lua_tostring(L, -5), "A-B-C");
  assert_int_equal(lua_tointeger(L, -4), 3);
  assert_string_equal(lua_tostring(L, -3), "inside a string.gsub replacement function");
  assert_string_equal(lua_tostring(L, -2), "inside a string.gsub replacement function");
  assert_int_equal(lua_tointeger(L, -1), 3);
  lua_pop(L, 5);
  assert_null(g_reason);
  assert_int_equal(g_enter, 3);
  assert_int_equal(g_leave, 3);

  /* cleared when the function raises, and the error comes through unchanged */
  run(L, "return pcall(B.gsub, 'abc', 'b', function() error({ code = 42 }) end)", 2);
  assert_false(lua_toboolean(L, -2));
  assert_true(lua_istable(L, -1));
  lua_getfield(L, -1, "code");
  assert_int_equal(lua_tointeger(L, -1), 42);
  lua_pop(L, 3);
  assert_null(g_reason);
  assert_int_equal(g_enter, 4);
  assert_int_equal(g_leave, 4);

  /* a yield inside the function fails (that is what the reason explains), and is cleared too */
  run(L,
      "local co = coroutine.wrap(function()\n"
      "  return pcall(B.gsub, 'abc', 'b', function() coroutine.yield(1) end) end)\n"
      "return co()",
      2);
  assert_false(lua_toboolean(L, -2));
  assert_non_null(strstr(lua_tostring(L, -1), "yield across"));
  lua_pop(L, 2);
  assert_null(g_reason);
  assert_int_equal(g_enter, g_leave);

  /* nested gsubs produce nested pairs */
  g_enter = g_leave = g_max_nesting = 0;
  run(L,
      "return (B.gsub('ab', '%a', function(c) return (B.gsub(c, '.', function(d) return d .. d "
      "end)) end))",
      1);
  assert_string_equal(lua_tostring(L, -1), "aabb");
  lua_pop(L, 1);
  assert_int_equal(g_enter, 4);
  assert_int_equal(g_leave, 4);
  assert_int_equal(g_max_nesting, 2);
  assert_null(g_reason);

  /* string and table replacements never run Lua code: no notification */
  g_enter = 0;
  run(L, "return B.gsub('abc', '%a', { a = 1 }), B.gsub('abc', '%a', '%0%0')", 2);
  assert_string_equal(lua_tostring(L, -2), "1bc");
  assert_string_equal(lua_tostring(L, -1), "aabbcc");
  lua_pop(L, 2);
  assert_int_equal(g_enter, 0);

  vg_strlib_bounded_set_noyield(NULL);
  lua_close(L);
}

/* install replaces exactly the four functions of the table on top, leaving the stack as it was */
static void test_install(void **state)
{
  (void)state;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_newtable(L);
  lua_pushliteral(L, "keep");
  lua_setfield(L, -2, "rep");
  int top = lua_gettop(L);
  vg_strlib_bounded_install(L);
  assert_int_equal(lua_gettop(L), top);
  static const char *const names[] = { "find", "match", "gmatch", "gsub" };
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal(lua_getfield(L, -1, names[i]), LUA_TFUNCTION);
    assert_true(lua_iscfunction(L, -1));
    lua_pop(L, 1);
  }
  lua_getfield(L, -1, "rep");
  assert_string_equal(lua_tostring(L, -1), "keep");
  lua_pop(L, 2);
  lua_close(L);
}

/* Works as string methods once installed into the string table itself. */
static void test_methods(void **state)
{
  (void)state;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_getglobal(L, "string");
  vg_strlib_bounded_install(L);
  lua_pop(L, 1);
  vg_strlib_bounded_set_limit(0);
  run(L,
      "local t = {} for k, v in ('a=1, b=2'):gmatch('(%w+)=(%w+)') do t[#t + 1] = k .. v end\n"
      "local r, n = ('x'):rep(3):gsub('x', '%%')\n"
      "return table.concat(t, ' '), r, n, select(2, pcall(string.find, ('a'):rep(256), "
      "'.-.-.-.-b'))",
      4);
  assert_string_equal(lua_tostring(L, -4), "a1 b2");
  assert_string_equal(lua_tostring(L, -3), "%%%");
  assert_int_equal(lua_tointeger(L, -2), 3);
  assert_string_equal(lua_tostring(L, -1),
                      "string.find: pattern too complex for the step budget (1000000 steps)");
  lua_pop(L, 4);
  lua_close(L);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_differential_corpus),
    cmocka_unit_test(test_budget_error),
    cmocka_unit_test(test_noyield_reason),
    cmocka_unit_test(test_install),
    cmocka_unit_test(test_methods),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
