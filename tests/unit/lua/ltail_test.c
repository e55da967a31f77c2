/* vigil.logs.tail (src/lua/ltail.c) driven from C: a real runtime whose config comes from a
 * config file with logs.allow, a VM, and Lua code run as a task. The C side gives the code
 * two test-only functions that policies do not have (append and rename_file), since a spec
 * cannot write files. Covers reading, suspending until lines arrive, read(max), truncated
 * lines, rotation, timeouts, close with a reader waiting, a cancelled reader never woken,
 * <close>, and the allow list: outside, "..", symlink escapes, prefix boundaries. Each test
 * ends with the loop closed and no handle left. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "core/config.h"
#include "core/logs_allow.h"
#include "core/runtime.h"
#include "core/task.h"
#include "core/vm.h"
#include "lua/lvigil.h"
#include "test_support.h"

#define GUARD_MS 15000

typedef struct {
  char dir[256];
  vg_config_t cfg;
  vg_runtime_t *rt;
  vg_vm_t *vm;
  int done;
  vg_task_status_t status;
  char error[2048];
  char result[512];
} fx_t;

/* append(path, text) [-2, +0, e]: test-only, appends text to the file (creates it). */
static int l_append(lua_State *L)
{
  size_t len;
  const char *path = luaL_checkstring(L, 1);
  const char *text = luaL_checklstring(L, 2, &len);
  FILE *f = fopen(path, "ab");
  if (f == NULL || fwrite(text, 1, len, f) != len) {
    return luaL_error(L, "append: cannot write %s", path);
  }
  fclose(f);
  return 0;
}

/* rename_file(from, to) [-2, +0, e]: test-only. */
static int l_rename_file(lua_State *L)
{
  if (rename(luaL_checkstring(L, 1), luaL_checkstring(L, 2)) != 0) {
    return luaL_error(L, "rename failed");
  }
  return 0;
}

static int open_p(lua_State *L)
{
  vg_open_modules(L);
  lua_register(L, "append", l_append);
  lua_register(L, "rename_file", l_rename_file);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "vigil");
  lua_call(L, 1, 1);
  lua_setglobal(L, "vigil");
  return 0;
}

static void write_text(const char *path, const char *text)
{
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void fx_open(fx_t *f)
{
  memset(f, 0, sizeof(*f));
  snprintf(f->dir, sizeof(f->dir), "/tmp/vg_ltail_test.XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  char p[512], q[512];
  const char *subdirs[] = { "allowed", "outside", "allowedx" };
  for (int i = 0; i < 3; i++) {
    snprintf(p, sizeof(p), "%s/%s", f->dir, subdirs[i]);
    assert_int_equal(mkdir(p, 0755), 0);
  }
  snprintf(p, sizeof(p), "%s/outside/secret.log", f->dir);
  write_text(p, "secret\n");
  snprintf(p, sizeof(p), "%s/allowedx/other.log", f->dir);
  write_text(p, "other\n");
  snprintf(p, sizeof(p), "%s/allowed/link.log", f->dir);
  assert_int_equal(symlink("../outside/secret.log", p), 0);
  snprintf(p, sizeof(p), "%s/allowed/inner.log", f->dir);
  write_text(p, "inner\n");
  snprintf(q, sizeof(q), "%s/allowed/good.link", f->dir);
  assert_int_equal(symlink("inner.log", q), 0);
  snprintf(p, sizeof(p), "%s/vigil.conf.lua", f->dir);
  snprintf(q, sizeof(q), "return { logs = { allow = { \"%s/allowed\" } } }\n", f->dir);
  write_text(p, q);

  vg_config_defaults(&f->cfg);
  char err[512];
  if (vg_config_load(&f->cfg, p, err, sizeof(err)) != 0) {
    fail_msg("config: %s", err);
  }
  assert_int_equal(f->cfg.nlogs_allow, 1);
  f->rt = vg_runtime_new();
  assert_non_null(f->rt);
  f->rt->config = &f->cfg;
  vg_limits_t none = { 0 };
  f->vm = vg_vm_new(f->rt, "ltail", &none);
  assert_non_null(f->vm);
  lua_pushcfunction(f->vm->L, open_p);
  if (lua_pcall(f->vm->L, 0, 0, 0) != LUA_OK) {
    fail_msg("setup: %s", lua_tostring(f->vm->L, -1));
  }
}

static void rm_rf(const char *dir)
{
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static void count_handle(uv_handle_t *h, void *arg)
{
  int *n = arg;
  *n += !uv_is_closing(h);
}

/* Frees the VM (its tails close through __gc), runs the loop until they are gone, checks no
 * handle is left but the scheduler's idle, then frees the runtime and the config. */
static void fx_close(fx_t *f)
{
  vg_vm_free(f->vm);
  uv_run(f->rt->loop, UV_RUN_DEFAULT);
  int n = 0;
  uv_walk(f->rt->loop, count_handle, &n);
  assert_int_equal(n, 1); /* sched_idle, closed by vg_runtime_free */
  f->rt->config = NULL;
  vg_runtime_free(f->rt);
  vg_config_free(&f->cfg);
  rm_rf(f->dir);
}

static void on_done(vg_task_t *t, void *ud)
{
  fx_t *f = ud;
  f->done++;
  f->status = t->status;
  snprintf(f->error, sizeof(f->error), "%s", t->error ? t->error : "");
  const char *r = t->status == VG_TASK_OK && t->nresults > 0 ? lua_tostring(t->co, 1) : NULL;
  snprintf(f->result, sizeof(f->result), "%s", r ? r : "");
}

static void guard_cb(uv_timer_t *h)
{
  *(bool *)h->data = true;
}

/* Runs `code` (given the temp dir as `...`) as a task until it ends; it returns a string. */
static void run_lua(fx_t *f, const char *code)
{
  lua_State *L = f->vm->L;
  if (vg_vm_load_text(L, code, strlen(code), "=ltail") != LUA_OK) {
    fail_msg("load: %s", lua_tostring(L, -1));
  }
  lua_pushstring(L, f->dir);
  vg_task_opts_t o = { .name = "ltail", .label = "test", .done = on_done, .done_ud = f };
  f->done = 0;
  assert_non_null(vg_task_spawn(f->vm, 1, &o));
  bool timed_out = false;
  uv_timer_t guard;
  uv_timer_init(f->rt->loop, &guard);
  guard.data = &timed_out;
  uv_timer_start(&guard, guard_cb, GUARD_MS, 0);
  while (f->done == 0 && !timed_out) {
    uv_run(f->rt->loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(f->rt->loop, UV_RUN_NOWAIT);
  assert_false(timed_out);
  if (f->status != VG_TASK_OK) {
    fail_msg("task failed: %s", f->error);
  }
}

/* Lua helpers every test's code starts with. */
#define PRELUDE                                                                              \
  "local D = ...\n"                                                                          \
  "local function eq(a, b, what)\n"                                                          \
  "  if a ~= b then error((what or '') .. ': ' .. tostring(a) .. ' ~= ' .. tostring(b), 2) " \
  "end\n"                                                                                    \
  "end\n"                                                                                    \
  "local function join(t) return table.concat(t, '|') end\n"

static void test_read_lines(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f);
  run_lua(&f, PRELUDE
          "local path = D .. '/allowed/app.log'\n"
          "append(path, 'a\\nb\\n')\n"
          "local t = assert(vigil.logs.tail(path, { from = 'start', timeout = '10s' }))\n"
          "local lines, trunc = t:read()\n"
          "eq(join(lines), 'a|b', 'first read')\n"
          "eq(#trunc, 0, 'none truncated')\n"
          "vigil.spawn(function() vigil.sleep(0.05) append(path, 'c\\nd\\ne\\n') end)\n"
          "lines = t:read(2)\n" /* suspends until the spawned task appended */
          "eq(join(lines), 'c|d', 'read(2)')\n"
          "eq(join(t:read()), 'e', 'the rest')\n"
          "local s = t:stats()\n"
          "eq(s.lines, 5, 'lines') eq(s.bytes, 10, 'bytes') eq(s.state, 'following', 'state')\n"
          "eq(s.pending, 0, 'pending') eq(s.dropped, 0, 'dropped')\n"
          "eq(s.path, D .. '/allowed/app.log', 'path')\n"
          "eq(tostring(t), 'vigil.logs.tail(' .. s.path .. ')')\n"
          "eq(t:close(), true) eq(t:close(), true)\n"
          "eq(t:stats().state, 'closed', 'closed state')\n"
          "local none, err = t:read()\n"
          "eq(none, nil) eq(err, 'ECLOSED: the tail is closed')\n"
          /* a queue nobody reads is bounded: the newest lines are dropped and counted */
          "local q = D .. '/allowed/q.log'\n"
          "append(q, '1\\n2\\n3\\n4\\n5\\n')\n"
          "local t5 = assert(vigil.logs.tail(q, { from = 'start', max_pending = 2 }))\n"
          "eq(join(t5:read()), '1|2', 'bounded queue')\n"
          "eq(t5:stats().dropped, 3, 'dropped') eq(t5:stats().lines, 5, 'engine lines')\n"
          "t5:close()\n"
          "return 'ok'\n");
  assert_string_equal(f.result, "ok");
  fx_close(&f);
}

static void test_truncation_rotation_timeout(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f);
  run_lua(&f, PRELUDE
          "local path = D .. '/allowed/app.log'\n"
          "append(path, 'skipped\\n')\n"
          "local t = assert(vigil.logs.tail(path, { max_line = 4, timeout = 0.2, poll = 0.05 "
          "}))\n"
          "local lines, err = t:read()\n" /* from the end: nothing there */
          "eq(lines, nil) eq(err, 'ETIMEDOUT: no line within 200 ms')\n"
          "append(path, 'abcdefgh\\nxy\\n')\n"
          "local trunc\n"
          "lines, trunc = t:read()\n"
          "eq(join(lines), 'abcd|xy', 'cut') eq(join(trunc), '1', 'truncated index')\n"
          "rename_file(path, path .. '.1')\n"
          "append(path .. '.1', 'old\\n')\n"
          "append(path, 'new\\n')\n"
          "lines = {}\n"
          "while #lines < 2 do\n"
          "  for _, l in ipairs(t:read() or {}) do lines[#lines + 1] = l end\n"
          "end\n"
          "eq(join(lines), 'old|new', 'across the rotation')\n"
          "local s = t:stats()\n"
          "eq(s.rotations, 1) eq(s.truncated_lines, 1) eq(s.lines, 4)\n"
          "return 'ok'\n");
  assert_string_equal(f.result, "ok");
  fx_close(&f);
}

/* A reader waiting when another task closes the tail gets ECLOSED; a cancelled reader is
 * never woken (lines arriving afterwards go to the queue); <close> closes. */
static void test_close_cancel(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f);
  run_lua(&f, PRELUDE
          "local path = D .. '/allowed/app.log'\n"
          "local t = assert(vigil.logs.tail(path))\n"
          "eq(t:stats().state ~= 'closed', true)\n"
          "local reader = vigil.spawn(function() return t:read() end)\n"
          "vigil.sleep(0.05)\n"
          "eq(reader:status(), 'waiting')\n"
          "t:close()\n"
          "local a, b = reader:wait()\n"
          "eq(a, nil) eq(b, 'ECLOSED: the tail is closed')\n"

          "local t2 = assert(vigil.logs.tail(path, { from = 'start' }))\n"
          "local r2 = vigil.spawn(function() return t2:read() end)\n"
          "vigil.sleep(0.05)\n"
          "r2:cancel('test')\n"
          "eq(r2:status(), 'cancelled')\n"
          "append(path, 'after\\n')\n"
          "local lines = t2:read()\n" /* the queue, not the cancelled task, got it */
          "eq(join(lines), 'after')\n"
          "local ok = pcall(function()\n"
          "  local r3 = vigil.spawn(function() return t2:read() end)\n"
          "  vigil.sleep(0.05)\n"
          "  t2:read()\n" /* a second reader is a caller's mistake */
          "  return r3\n"
          "end)\n"
          "eq(ok, false, 'second reader raises')\n"
          "t2:close()\n"

          "local state\n"
          "do\n"
          "  local t3 <close> = assert(vigil.logs.tail(path))\n"
          "  state = t3\n"
          "end\n"
          "eq(state:stats().state, 'closed', '<close>')\n"
          "local t4 = assert(vigil.logs.tail(path))\n" /* left open: __gc at VM free */
          "return t4 and 'ok'\n");
  assert_string_equal(f.result, "ok");
  fx_close(&f);
}

static void test_allow_list(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f);
  run_lua(&f, PRELUDE
          "local function denied(path, want)\n"
          "  local t, err = vigil.logs.tail(path)\n"
          "  eq(t, nil, path)\n"
          "  if not err:find(want, 1, true) then error(path .. ': ' .. err) end\n"
          "end\n"
          "denied(D .. '/outside/secret.log', 'EDENIED: ')\n"
          "denied(D .. '/allowed/../outside/secret.log', 'is not under a logs.allow prefix')\n"
          "denied(D .. '/allowed/link.log', 'is not under a logs.allow prefix')\n"
          "denied(D .. '/allowedx/other.log', 'is not under a logs.allow prefix')\n"
          "denied(D .. '/allowed/../outside/new.log', 'is not under a logs.allow prefix')\n"
          "denied('allowed/app.log', 'EDENIED: allowed/app.log: not an absolute path')\n"
          "denied(D .. '/allowed/..', 'EDENIED: ')\n"
          "denied(D .. '/allowed/nodir/x.log', 'ENOENT: ')\n"
          /* inside: a missing file is waited for, a symlink inside is followed to its target */
          "local t = assert(vigil.logs.tail(D .. '/allowed/./later.log', { timeout = 0.1 }))\n"
          "eq(t:stats().path, D .. '/allowed/later.log')\n"
          "local l, err = t:read()\n"
          "eq(l, nil) eq(err, 'ETIMEDOUT: no line within 100 ms')\n"
          "eq(t:stats().state, 'missing')\n"
          "append(D .. '/allowed/later.log', 'hello\\n')\n"
          "local lines\n"
          "repeat lines = t:read() until lines\n" /* timeouts until the lines are there */
          "eq(join(lines), 'hello')\n"
          "t:close()\n"
          "local g = assert(vigil.logs.tail(D .. '/allowed/good.link', { from = 'start' }))\n"
          "eq(g:stats().path, D .. '/allowed/inner.log')\n"
          "eq(join(assert(g:read())), 'inner')\n"
          "g:close()\n"
          "return 'ok'\n");
  assert_string_equal(f.result, "ok");

  /* the C check itself, with no config: nothing is allowed */
  char err[256];
  f.rt->config = NULL;
  assert_false(vg_logs_path_allowed(f.rt, "/var/log/syslog", err, sizeof(err)));
  assert_string_equal(err, "EDENIED: /var/log/syslog: no logs.allow prefix in the config");
  f.rt->config = &f.cfg;
  char p[512];
  snprintf(p, sizeof(p), "%s/allowed/inner.log", f.dir);
  assert_true(vg_logs_path_allowed(f.rt, p, err, sizeof(err)));
  fx_close(&f);
}

static void test_config_errors(void **state)
{
  (void)state;
  char dir[] = "/tmp/vg_ltail_cfg.XXXXXX";
  assert_non_null(mkdtemp(dir));
  char p[300];
  snprintf(p, sizeof(p), "%s/c.lua", dir);
  write_text(p, "return { logs = { allow = { \"var/log\" } } }\n");
  vg_config_t cfg;
  vg_config_defaults(&cfg);
  char err[512];
  assert_int_equal(vg_config_load(&cfg, p, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "logs.allow[1]: \"var/log\" is not an absolute path"));
  vg_config_free(&cfg);
  write_text(p, "return { logs = \"/var/log\" }\n");
  vg_config_defaults(&cfg);
  assert_int_equal(vg_config_load(&cfg, p, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "logs must be a table"));
  vg_config_free(&cfg);
  vg_config_defaults(&cfg);
  assert_null(vg_config_logs_allow(&cfg)[0]);
  assert_null(vg_config_logs_allow(NULL)[0]);
  vg_config_free(&cfg);
  rm_rf(dir);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_read_lines),    cmocka_unit_test(test_truncation_rotation_timeout),
    cmocka_unit_test(test_close_cancel),  cmocka_unit_test(test_allow_list),
    cmocka_unit_test(test_config_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
