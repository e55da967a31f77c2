/* vigil.exec.core: the C half of running a process, on the runtime's sandboxed executor
 * (src/engine/exec.c). One function, run(), that suspends the calling task until the process
 * tree has ended; cancelling the task stops the tree. This is the bare runner: it knows
 * nothing of modes, the kill switch or guard rails, which live in the action executor
 * (core/executor.c, vigil.actions) that policies go through. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/runtime.h"
#include "core/task.h"
#include "engine/exec.h"
#include "lua/lvigil.h"

#define MAX_ARGV 4096
#define MAX_ARGV_BYTES (1u << 20)
#define MAX_ENV 256
#define MAX_STDIN (16u << 20)
#define MAX_OUTPUT (64u << 20)

/* The runtime's executor, defined in core/runtime.c; this weak default (no executor) lets the
 * binding link before that wiring exists, and makes run() answer ENOEXEC. */
__attribute__((weak)) struct vg_exec *vg_runtime_exec(vg_runtime_t *rt)
{
  (void)rt;
  return NULL;
}

typedef struct {
  vg_task_t *task;
  vg_exec_run_t *run; /* NULL once answered */
  char *error;        /* "ENAME: detail" when nothing ran */
  int code, signal;
  char *out, *err, *tiers, *notes;
  size_t out_len, err_len;
  bool out_trunc, err_trunc, timed_out;
  const char *killed; /* a literal of exec.c */
  double duration;
} exec_op_t;

static void op_free(exec_op_t *op)
{
  free(op->error);
  free(op->out);
  free(op->err);
  free(op->tiers);
  free(op->notes);
  free(op);
}

/* The task was cancelled (or its VM closed) first. */
static void op_cancel(void *ud)
{
  exec_op_t *op = ud;
  vg_exec_cancel(op->run);
  op_free(op);
}

static char *dup_bytes(const char *p, size_t n)
{
  char *d = malloc(n + 1);
  if (d != NULL) {
    memcpy(d, p, n);
    d[n] = '\0';
  }
  return d;
}

static void set_field_str(lua_State *L, const char *k, const char *v, size_t len)
{
  lua_pushlstring(L, v, len);
  lua_setfield(L, -2, k);
}

static void set_field_bool(lua_State *L, const char *k, bool v)
{
  lua_pushboolean(L, v);
  lua_setfield(L, -2, k);
}

/* Inside the task: { code=, signal=, stdout=, stderr=, stdout_truncated=, stderr_truncated=,
 * timed_out=, killed=, duration=, tiers=, notes= }, or nil, "ENAME: detail". */
static int op_push(lua_State *L, void *ud)
{
  exec_op_t *op = ud;
  if (op->error != NULL || op->out == NULL || op->err == NULL || op->tiers == NULL ||
      op->notes == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, op->error != NULL ? op->error : "ENOMEM: out of memory");
    op_free(op);
    return 2;
  }
  lua_createtable(L, 0, 11);
  if (op->signal == 0) {
    lua_pushinteger(L, op->code);
    lua_setfield(L, -2, "code");
  } else {
    lua_pushinteger(L, op->signal);
    lua_setfield(L, -2, "signal");
  }
  set_field_str(L, "stdout", op->out, op->out_len);
  set_field_str(L, "stderr", op->err, op->err_len);
  set_field_bool(L, "stdout_truncated", op->out_trunc);
  set_field_bool(L, "stderr_truncated", op->err_trunc);
  set_field_bool(L, "timed_out", op->timed_out);
  if (op->killed != NULL) {
    set_field_str(L, "killed", op->killed, strlen(op->killed));
  }
  lua_pushnumber(L, op->duration);
  lua_setfield(L, -2, "duration");
  set_field_str(L, "tiers", op->tiers, strlen(op->tiers));
  if (op->notes[0] != '\0') {
    set_field_str(L, "notes", op->notes, strlen(op->notes));
  }
  op_free(op);
  return 1;
}

static void on_done(void *ud, const vg_exec_result_t *r)
{
  exec_op_t *op = ud;
  op->run = NULL;
  if (r->error != NULL) {
    size_t len = strlen(r->error) + strlen(r->detail) + 3;
    op->error = malloc(len);
    if (op->error != NULL) {
      snprintf(op->error, len, "%s: %s", r->error, r->detail);
    }
  } else {
    op->code = r->code;
    op->signal = r->signal;
    op->out = dup_bytes(r->stdout_data, r->stdout_len);
    op->err = dup_bytes(r->stderr_data, r->stderr_len);
    op->out_len = r->stdout_len;
    op->err_len = r->stderr_len;
    op->out_trunc = r->stdout_truncated;
    op->err_trunc = r->stderr_truncated;
    op->timed_out = r->timed_out;
    op->killed = r->killed;
    op->duration = r->duration;
    op->tiers = dup_bytes(r->tiers, strlen(r->tiers));
    op->notes = dup_bytes(r->notes, strlen(r->notes));
  }
  vg_task_wake(op->task, op_push);
}

/* Pushes t[k] without metamethods; returns its type. [-0, +1, -] */
static int rawfield(lua_State *L, int t, const char *k)
{
  lua_pushstring(L, k);
  return lua_rawget(L, t);
}

static bool env_name_ok(const char *s, size_t len)
{
  if (len == 0 || len > 256 || strncmp(s, "LD_", 3) == 0) {
    return false;
  }
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) {
      return false;
    }
  }
  return true;
}

/* Reads opts.env (name -> string) into "NAME=value" strings kept in a table at the top of
 * the stack (so they live through the call); ptrs gets pointers to them. [-0, +1, e] */
static size_t read_env(lua_State *L, int opts, const char **ptrs)
{
  lua_newtable(L);
  int keep = lua_gettop(L);
  if (rawfield(L, opts, "env") == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  luaL_argcheck(L, lua_istable(L, -1), 2, "env must be a table of name = string");
  int env = lua_gettop(L);
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, env) != 0) {
    size_t klen = 0, vlen = 0;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vlen) : NULL;
    luaL_argcheck(L, k != NULL && env_name_ok(k, klen), 2,
                  "env names must be [A-Za-z_][A-Za-z0-9_]* and not LD_*");
    luaL_argcheck(L, v != NULL && strlen(v) == vlen, 2, "env values must be strings without NUL");
    luaL_argcheck(L, n < MAX_ENV, 2, "at most 256 env entries");
    lua_pushfstring(L, "%s=%s", k, v);
    ptrs[n] = lua_tostring(L, -1);
    lua_rawseti(L, keep, (lua_Integer)(n + 1));
    n++;
    lua_pop(L, 1);
  }
  lua_pop(L, 1); /* env */
  return n;
}

static const char *const option_names[] = { "timeout", "env", "cwd", "stdin", "max_output", NULL };

/* run(argv, opts) [-2, +(1|2), e]: runs argv (a list of strings; argv[1] an absolute path on
 * the executor's allowlist) and returns the result table, or nil, "ENAME: detail" when nothing
 * ran (EDENIED, ENOENT, ESANDBOX, ENOEXEC when no executor is configured, ...). A timeout is
 * a result (timed_out = true), not an error. opts: timeout ("30s" or seconds), env (name ->
 * string, added to the allowlisted environment), cwd, stdin (a string), max_output (bytes
 * kept of stdout and of stderr each). */
static int l_run(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 1);
    lua_newtable(L);
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  /* unknown options are mistakes (a misspelt timeout would silently be 30 s) */
  lua_pushnil(L);
  while (lua_next(L, 2) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    bool known = false;
    for (int i = 0; k != NULL && option_names[i] != NULL; i++) {
      known = known || strcmp(k, option_names[i]) == 0;
    }
    if (!known) {
      return luaL_argerror(
          L, 2, lua_pushfstring(L, "unknown option '%s'", k != NULL ? k : luaL_typename(L, -2)));
    }
    lua_pop(L, 1);
  }

  lua_Unsigned argc = lua_rawlen(L, 1);
  luaL_argcheck(L, argc >= 1 && argc <= MAX_ARGV, 1, "argv must hold 1 to 4096 strings");
  const char **argv = lua_newuserdatauv(L, argc * sizeof(*argv), 0); /* freed by the GC */
  size_t total = 0;
  for (lua_Unsigned i = 0; i < argc; i++) {
    size_t len = 0;
    if (lua_rawgeti(L, 1, (lua_Integer)(i + 1)) != LUA_TSTRING) {
      return luaL_argerror(L, 1, lua_pushfstring(L, "argv[%d] is not a string", (int)(i + 1)));
    }
    argv[i] = lua_tolstring(L, -1, &len);
    luaL_argcheck(L, strlen(argv[i]) == len, 1, "an argv string contains NUL");
    total += len + 1;
    luaL_argcheck(L, total <= MAX_ARGV_BYTES, 1, "argv is larger than 1 MiB");
    lua_pop(L, 1); /* the table at 1 keeps the string */
  }

  vg_exec_req_t req = { .argv = argv, .argc = (size_t)argc };
  if (rawfield(L, 2, "timeout") != LUA_TNIL) {
    uint64_t ms = vg_check_duration_ms(L, lua_gettop(L));
    luaL_argcheck(L, ms > 0 && ms <= 24u * 3600 * 1000, 2, "timeout must be 1 ms to 24 h");
    req.timeout_ms = ms;
  }
  lua_pop(L, 1);
  if (rawfield(L, 2, "cwd") != LUA_TNIL) {
    size_t len = 0;
    req.cwd = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    luaL_argcheck(L, req.cwd != NULL && strlen(req.cwd) == len, 2,
                  "cwd must be a string without NUL");
  }
  lua_pop(L, 1); /* the opts table keeps it */
  if (rawfield(L, 2, "stdin") != LUA_TNIL) {
    req.stdin_data = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &req.stdin_len) : NULL;
    luaL_argcheck(L, req.stdin_data != NULL, 2, "stdin must be a string");
    luaL_argcheck(L, req.stdin_len <= MAX_STDIN, 2, "stdin is larger than 16 MiB");
  }
  lua_pop(L, 1);
  if (rawfield(L, 2, "max_output") != LUA_TNIL) {
    lua_Integer m = luaL_checkinteger(L, -1);
    luaL_argcheck(L, m > 0 && m <= MAX_OUTPUT, 2, "max_output must be 1 byte to 64 MiB");
    req.max_output = (size_t)m;
  }
  lua_pop(L, 1);
  const char **envp = lua_newuserdatauv(L, MAX_ENV * sizeof(*envp), 0);
  req.env = envp;
  req.nenv = read_env(L, 2, envp);

  /* everything that can raise comes before the allocation below */
  vg_task_t *t = vg_task_check_yieldable(L, "vigil.exec.run");
  vg_exec_t *ex = vg_runtime_exec(vg_vm_of(L)->rt);
  if (ex == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "ENOEXEC: no executor configured");
    return 2;
  }
  exec_op_t *op = calloc(1, sizeof(*op));
  if (op == NULL) {
    return luaL_error(L, "vigil.exec.run: out of memory");
  }
  op->task = t;
  char err[512];
  op->run = vg_exec_run(ex, &req, on_done, op, err, sizeof(err));
  if (op->run == NULL) {
    free(op);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  vg_task_suspend(t, op, op_cancel);
  return vg_task_yield(L);
}

int vg_open_vigil_exec(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    { "run", l_run },
    { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  return 1;
}
