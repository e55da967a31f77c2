/* vigil.actions.core: the C half of lua/vigil/actions.lua. execute() hands one action to the
 * runtime's executor (src/core/executor.c: modes, kill switch, guard rails, claim, run,
 * record) and suspends the task until it is answered; the operator functions (decide,
 * kill_switch, reset_breaker, stats) are what the REPL and tests use. */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/executor.h"
#include "core/policy.h"
#include "core/runtime.h"
#include "core/task.h"
#include "lua/lvigil.h"

#define MAX_ARGV 4096
#define MAX_ARGV_BYTES (1u << 20)
#define MAX_HEADERS 64
#define MAX_ENV 256

/* ---- the answer, kept until the task resumes ---- */

typedef struct {
  vg_task_t *task;
  vg_action_t *action; /* NULL once answered */
  char *state, *key, *mode, *error, *would, *out, *err, *resp_headers, *resp_body;
  size_t out_len, err_len, resp_headers_len, resp_body_len;
  int64_t id;
  int attempts, code, signal;
  double duration;
  bool ran_process, ran_http, timed_out;
  long status;
  bool oom, answered;
  bool rejected; /* the request was malformed: nil, error */
} op_t;

static void op_free(op_t *op)
{
  char *owned[] = { op->state, op->key, op->mode,         op->error,    op->would,
                    op->out,   op->err, op->resp_headers, op->resp_body };
  for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) {
    free(owned[i]);
  }
  free(op);
}

static char *keep(op_t *op, const char *p, size_t n)
{
  if (p == NULL) {
    return NULL;
  }
  char *d = malloc(n + 1);
  if (d == NULL) {
    op->oom = true;
    return NULL;
  }
  memcpy(d, p, n);
  d[n] = '\0';
  return d;
}

static char *keep_str(op_t *op, const char *s)
{
  return s != NULL ? keep(op, s, strlen(s)) : NULL;
}

static void set_str(lua_State *L, const char *name, const char *v, size_t len)
{
  if (v != NULL) {
    lua_pushlstring(L, v, len);
    lua_setfield(L, -2, name);
  }
}

static int op_push(lua_State *L, void *ud)
{
  op_t *op = ud;
  if (op->rejected || op->oom || op->state == NULL) {
    lua_pushnil(L);
    if (op->rejected && op->error != NULL) {
      lua_pushstring(L, op->error);
    } else {
      lua_pushliteral(L, "ENOMEM: out of memory");
    }
    op_free(op);
    return 2;
  }
  lua_createtable(L, 0, 16);
  set_str(L, "state", op->state, strlen(op->state));
  set_str(L, "key", op->key, op->key != NULL ? strlen(op->key) : 0);
  set_str(L, "mode", op->mode, op->mode != NULL ? strlen(op->mode) : 0);
  set_str(L, "error", op->error, op->error != NULL ? strlen(op->error) : 0);
  set_str(L, "would", op->would, op->would != NULL ? strlen(op->would) : 0);
  lua_pushinteger(L, op->id);
  lua_setfield(L, -2, "id");
  lua_pushinteger(L, op->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushnumber(L, op->duration);
  lua_setfield(L, -2, "duration");
  if (op->ran_process) {
    lua_pushinteger(L, op->code);
    lua_setfield(L, -2, "code");
    if (op->signal != 0) {
      lua_pushinteger(L, op->signal);
      lua_setfield(L, -2, "signal");
    }
    lua_pushboolean(L, op->timed_out);
    lua_setfield(L, -2, "timed_out");
    set_str(L, "stdout", op->out, op->out_len);
    set_str(L, "stderr", op->err, op->err_len);
  }
  if (op->ran_http) {
    lua_pushinteger(L, op->status);
    lua_setfield(L, -2, "status");
    set_str(L, "headers", op->resp_headers, op->resp_headers_len);
    set_str(L, "body", op->resp_body, op->resp_body_len);
  }
  op_free(op);
  return 1;
}

static void op_cancel(void *ud)
{
  op_t *op = ud;
  vg_action_detach(op->action); /* a claimed action still runs to its end and records */
  op_free(op);
}

static void on_answer(void *ud, const vg_action_result_t *r)
{
  op_t *op = ud;
  op->action = NULL;
  op->answered = true;
  op->state = keep_str(op, r->state);
  op->key = keep_str(op, r->key);
  op->mode = keep_str(op, r->mode);
  op->error = keep_str(op, r->error);
  op->would = keep_str(op, r->would);
  op->id = r->id;
  op->attempts = r->attempts;
  op->duration = r->duration;
  op->ran_process = r->ran_process;
  op->code = r->code;
  op->signal = r->signal;
  op->timed_out = r->timed_out;
  op->out = keep(op, r->out, r->out_len);
  op->out_len = r->out_len;
  op->err = keep(op, r->err, r->err_len);
  op->err_len = r->err_len;
  op->ran_http = r->ran_http;
  op->status = r->status;
  op->resp_headers = keep(op, r->resp_headers, r->resp_headers_len);
  op->resp_headers_len = r->resp_headers_len;
  op->resp_body = keep(op, r->resp_body, r->resp_body_len);
  op->resp_body_len = r->resp_body_len;
  vg_task_wake(op->task, op_push);
}

/* ---- reading the spec ---- */

static const char *opt_string(lua_State *L, int t, const char *name, size_t max)
{
  lua_getfield(L, t, name);
  size_t len = 0;
  const char *s = NULL;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) {
      luaL_error(L, "action.%s must be a string", name);
    }
    s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len || len > max) {
      luaL_error(L, "action.%s contains NUL or is longer than %d bytes", name, (int)max);
    }
  }
  lua_pop(L, 1); /* the string stays referenced by the spec table */
  return s;
}

/* Strings of the list field `name` into out (at most max); returns the count. */
static size_t string_list(
    lua_State *L, int t, const char *name, const char **out, size_t max, size_t *bytes)
{
  size_t n = 0;
  if (lua_getfield(L, t, name) == LUA_TTABLE) {
    int list = lua_gettop(L);
    for (lua_Integer i = 1; lua_rawgeti(L, list, i) != LUA_TNIL; i++) {
      size_t len;
      const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
      if (s == NULL || strlen(s) != len) {
        luaL_error(L, "action.%s[%d] must be a string without NUL", name, (int)i);
      }
      if (n == max || (*bytes += len) > MAX_ARGV_BYTES) {
        luaL_error(L, "action.%s has more than %d elements or 1 MiB", name, (int)max);
      }
      out[n++] = s;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "action.%s must be a list of strings", name);
  } else {
    lua_pop(L, 1);
  }
  return n;
}

static bool opt_bool(lua_State *L, int t, const char *name)
{
  lua_getfield(L, t, name);
  bool b = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return b;
}

static uint64_t opt_duration(lua_State *L, int t, const char *name)
{
  uint64_t ms = 0;
  if (lua_getfield(L, t, name) != LUA_TNIL) {
    ms = vg_check_duration_ms(L, lua_gettop(L));
  }
  lua_pop(L, 1);
  return ms;
}

static lua_Integer opt_int(
    lua_State *L, int t, const char *name, lua_Integer dflt, lua_Integer lo, lua_Integer hi)
{
  lua_Integer v = dflt;
  if (lua_getfield(L, t, name) != LUA_TNIL) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < lo || v > hi) {
      luaL_error(L, "action.%s must be an integer from %d to %d", name, (int)lo, (int)hi);
    }
  }
  lua_pop(L, 1);
  return v;
}

static int opt_mode(lua_State *L, int t)
{
  const char *m = opt_string(L, t, "mode", 16);
  if (m == NULL) {
    return -1;
  }
  int mode = vg_mode_parse(m);
  if (mode < 0) {
    luaL_error(L, "action.mode must be observe, dry-run or enforce");
  }
  return mode;
}

/* Who is asking: the policy (name, version, mode) of the running VM, or the REPL/test. */
static vg_action_origin_t origin_of(lua_State *L, char *version, size_t vlen)
{
  vg_vm_t *vm = vg_vm_of(L);
  vg_action_origin_t o = { .policy = vm->name, .version = NULL, .mode = -1 };
  vg_policy_t *p = vm->owner;
  if (p != NULL) {
    snprintf(version, vlen, "%016llx", (unsigned long long)p->hash);
    o.policy = p->name;
    o.version = version;
    o.mode = p->mode;
  }
  return o;
}

/* execute(spec) [-1, +(1|2), e]: the result table, or nil, "ENAME: detail" when the request
 * itself is malformed. */
static int l_execute(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TTABLE);
  vg_task_t *t = vg_task_check_yieldable(L, "vigil.actions.execute");
  vg_executor_t *ex = vg_runtime_executor(vg_vm_of(L)->rt);
  if (ex == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "ENOEXEC: the executor is not available");
    return 2;
  }
  vg_action_req_t req = { .mode = -1, .retries = -1 };
  req.type = opt_string(L, 1, "type", 64);
  req.target = opt_string(L, 1, "target", 512);
  req.scope = opt_string(L, 1, "scope", 256);
  req.subject = opt_string(L, 1, "subject", 256);
  req.key = opt_string(L, 1, "key", 1024);
  req.why = opt_string(L, 1, "why", 4096);
  req.command = opt_string(L, 1, "command", 1 << 20);
  req.incident_id = opt_int(L, 1, "incident", 0, 0, INT64_MAX);
  req.mode = opt_mode(L, 1);
  req.notify = opt_bool(L, 1, "notify");
  req.approve = opt_bool(L, 1, "approve");
  req.read_only = opt_bool(L, 1, "read_only");
  req.approval_timeout_ms = opt_duration(L, 1, "approval_timeout");
  req.retries = (int)opt_int(L, 1, "retries", -1, -1, 10);
  req.timeout_ms = opt_duration(L, 1, "timeout");
  req.max_output = (size_t)opt_int(L, 1, "max_output", 0, 0, 64 << 20);
  req.stdin_data = NULL;
  lua_getfield(L, 1, "stdin");
  if (!lua_isnil(L, -1)) {
    req.stdin_data = luaL_checklstring(L, -1, &req.stdin_len);
  }
  lua_pop(L, 1);
  req.method = opt_string(L, 1, "method", 16);
  req.url = opt_string(L, 1, "url", 8192);
  lua_getfield(L, 1, "body");
  if (!lua_isnil(L, -1)) {
    req.body = luaL_checklstring(L, -1, &req.body_len);
  }
  lua_pop(L, 1);

  /* GC-owned scratch: nothing leaks when a malformed field raises an error below */
  const char **argv = lua_newuserdatauv(L, MAX_ARGV * sizeof *argv, 0);
  const char **headers = lua_newuserdatauv(L, MAX_HEADERS * sizeof *headers, 0);
  const char **env = lua_newuserdatauv(L, MAX_ENV * sizeof *env, 0);
  lua_createtable(L, 8, 0); /* keeps the "NAME=value" strings alive during the call */
  int env_strings = lua_gettop(L);
  size_t bytes = 0;
  req.argc = string_list(L, 1, "argv", argv, MAX_ARGV, &bytes);
  req.argv = argv;
  req.nheaders = string_list(L, 1, "headers", headers, MAX_HEADERS, &bytes);
  req.headers = headers;
  for (size_t i = 0; i < req.nheaders; i++) {
    if (strpbrk(headers[i], "\r\n") != NULL) {
      return luaL_error(L, "action.headers[%d] contains CR or LF", (int)i + 1);
    }
  }
  size_t nenv = 0;
  if (lua_getfield(L, 1, "env") == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      size_t kl, vl;
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kl) : NULL;
      const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vl) : NULL;
      bool name_ok =
          k != NULL && kl > 0 && kl < 128 && strlen(k) == kl &&
          strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == kl &&
          !(k[0] >= '0' && k[0] <= '9');
      if (!name_ok || v == NULL || strlen(v) != vl || nenv == MAX_ENV) {
        return luaL_error(L,
                          "action.env must map at most 256 names ([A-Za-z_][A-Za-z0-9_]*) to"
                          " strings without NUL");
      }
      env[nenv] = lua_pushfstring(L, "%s=%s", k, v);
      lua_rawseti(L, env_strings, (lua_Integer)++nenv);
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    return luaL_error(L, "action.env must be a table");
  }
  lua_pop(L, 1);
  req.env = env;
  req.nenv = nenv;

  op_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    return luaL_error(L, "vigil.actions.execute: out of memory");
  }
  char version[24];
  vg_action_origin_t origin = origin_of(L, version, sizeof version);
  op->task = t;
  /* suspended first: the executor may answer before submit returns (no store, refusals) */
  vg_task_suspend(t, op, op_cancel);
  char err[256];
  op->action = vg_executor_submit(ex, &origin, &req, on_answer, op, err, sizeof err);
  if (op->action == NULL && !op->answered) {
    size_t len = strlen(err) + sizeof "EINVAL: ";
    op->error = malloc(len);
    if (op->error != NULL) {
      snprintf(op->error, len, "EINVAL: %s", err);
    }
    op->rejected = true;
    vg_task_wake(t, op_push);
  }
  return vg_task_yield(L);
}

/* ---- operator calls and records: one small answer each, kept until the task resumes ---- */

typedef struct {
  vg_task_t *task; /* NULL once the task is gone: the callback frees */
  bool answered;
  bool with_id; /* success is `id, msg` (records) rather than `true, msg` (operator calls) */
  int status;
  int64_t id;
  char msg[256];
} reply_t;

static int reply_push(lua_State *L, void *ud)
{
  reply_t *r = ud;
  if (r->status == 0) {
    if (r->with_id) {
      lua_pushinteger(L, r->id);
    } else {
      lua_pushboolean(L, 1);
    }
    lua_pushstring(L, r->msg);
  } else {
    lua_pushnil(L);
    if (r->with_id) {
      lua_pushfstring(L, "%s: %s", r->status == -EINVAL ? "EINVAL" : "ELEDGER", r->msg);
    } else {
      lua_pushstring(L, r->msg);
    }
  }
  free(r);
  return 2;
}

static void reply_cancel(void *ud)
{
  reply_t *r = ud;
  if (r->answered) {
    free(r);
  } else {
    r->task = NULL;
  }
}

static void on_id(void *ud, int status, const char *msg, int64_t id)
{
  reply_t *r = ud;
  r->answered = true;
  r->status = status;
  r->id = id;
  snprintf(r->msg, sizeof r->msg, "%s", msg != NULL ? msg : "");
  if (r->task != NULL) {
    vg_task_wake(r->task, reply_push);
  } else {
    free(r);
  }
}

static void on_operator_answer(void *ud, int status, const char *msg)
{
  on_id(ud, status, msg, 0);
}

/* A reply for the calling task, which is suspended on it. */
static reply_t *reply_new(lua_State *L, const char *fname, bool with_id)
{
  vg_task_t *t = vg_task_check_yieldable(L, fname);
  reply_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    luaL_error(L, "%s: out of memory", fname);
  }
  r->task = t;
  r->with_id = with_id;
  vg_task_suspend(t, r, reply_cancel);
  return r;
}

/* decide(id, "approved"|"denied"|"done"|"failed" [, who [, comment]]) -> true, msg | nil, err */
static int l_decide(lua_State *L)
{
  lua_Integer id = luaL_checkinteger(L, 1);
  const char *decision = luaL_checkstring(L, 2);
  const char *who = luaL_optstring(L, 3, "repl");
  const char *comment = luaL_optstring(L, 4, NULL);
  vg_executor_t *ex = vg_runtime_executor(vg_vm_of(L)->rt);
  if (ex == NULL) {
    return luaL_error(L, "vigil.actions.decide: the executor is not available");
  }
  reply_t *r = reply_new(L, "vigil.actions.decide", false);
  vg_executor_decide(ex, id, decision, who, comment, on_operator_answer, r);
  return vg_task_yield(L);
}

/* kill_switch() -> on; kill_switch(on [, who [, comment]]) -> true, msg */
static int l_kill_switch(lua_State *L)
{
  vg_executor_t *ex = vg_runtime_executor(vg_vm_of(L)->rt);
  if (ex == NULL) {
    return luaL_error(L, "vigil.actions.kill_switch: the executor is not available");
  }
  if (lua_isnoneornil(L, 1)) {
    lua_pushboolean(L, vg_executor_killed(ex));
    return 1;
  }
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  bool on = lua_toboolean(L, 1);
  const char *who = luaL_optstring(L, 2, "repl");
  const char *comment = luaL_optstring(L, 3, NULL);
  reply_t *r = reply_new(L, "vigil.actions.kill_switch", false);
  vg_executor_kill_switch(ex, on, who, comment, on_operator_answer, r);
  return vg_task_yield(L);
}

/* ---- suppressions and healing records ---- */

static vg_executor_t *check_executor(lua_State *L, const char *fname)
{
  vg_executor_t *ex = vg_runtime_executor(vg_vm_of(L)->rt);
  if (ex == NULL) {
    luaL_error(L, "%s: the executor is not available", fname);
  }
  return ex;
}

/* suppress(matchers, until_s [, reason [, who]]) -> id, msg | nil, err */
static int l_suppress(lua_State *L)
{
  const char *matchers = luaL_checkstring(L, 1);
  lua_Number until = luaL_checknumber(L, 2);
  const char *reason = luaL_optstring(L, 3, NULL);
  char who[160];
  char version[24];
  vg_action_origin_t o = origin_of(L, version, sizeof version);
  snprintf(who, sizeof who, "policy:%s", o.policy);
  vg_executor_t *ex = check_executor(L, "vigil.actions.suppress");
  reply_t *op = reply_new(L, "vigil.actions.suppress", true);
  vg_executor_suppress(ex, matchers, (int64_t)(until * 1000.0), reason, luaL_optstring(L, 4, who),
                       on_id, op);
  return vg_task_yield(L);
}

/* heal_begin(name [, subject [, incident]]) -> id (0 without a store), msg */
static int l_heal_begin(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  const char *subject = luaL_optstring(L, 2, NULL);
  lua_Integer incident = luaL_optinteger(L, 3, 0);
  char version[24];
  vg_action_origin_t o = origin_of(L, version, sizeof version);
  vg_executor_t *ex = check_executor(L, "vigil.actions.heal_begin");
  reply_t *op = reply_new(L, "vigil.actions.heal_begin", true);
  vg_executor_heal_begin(ex, o.policy, name, subject, incident, on_id, op);
  return vg_task_yield(L);
}

/* heal_end(id, "succeeded"|"failed", steps_json [, error]) -> id, msg | nil, err */
static int l_heal_end(lua_State *L)
{
  lua_Integer id = luaL_checkinteger(L, 1);
  const char *status = luaL_checkstring(L, 2);
  const char *steps = luaL_checkstring(L, 3);
  const char *error = luaL_optstring(L, 4, NULL);
  vg_executor_t *ex = check_executor(L, "vigil.actions.heal_end");
  reply_t *op = reply_new(L, "vigil.actions.heal_end", true);
  vg_executor_heal_end(ex, id, status, steps, error, on_id, op);
  return vg_task_yield(L);
}

static int l_reset_breaker(lua_State *L)
{
  const char *target = luaL_checkstring(L, 1);
  vg_executor_t *ex = vg_runtime_executor(vg_vm_of(L)->rt);
  lua_pushboolean(L, ex != NULL && vg_executor_reset_breaker(ex, target));
  return 1;
}

static int l_stats(lua_State *L)
{
  vg_executor_t *ex = vg_runtime_executor(vg_vm_of(L)->rt);
  if (ex == NULL) {
    return 0;
  }
  vg_executor_stats_t s;
  vg_executor_stats(ex, &s);
  lua_createtable(L, 0, 16);
  struct {
    const char *name;
    uint64_t v;
  } f[] = { { "submitted", s.submitted },
            { "observed", s.observed },
            { "dry_run", s.dry_run },
            { "refused", s.refused },
            { "done", s.done },
            { "failed", s.failed },
            { "duplicate", s.duplicate },
            { "denied", s.denied },
            { "expired", s.expired },
            { "unknown_at_start", s.unknown_at_start },
            { "running", s.running },
            { "awaiting_approval", s.awaiting_approval },
            { "breakers_open", s.guard.breakers_open },
            { "suppressions", s.suppressions },
            { "suppressed", s.suppressed } };
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
    lua_pushinteger(L, (lua_Integer)f[i].v);
    lua_setfield(L, -2, f[i].name);
  }
  lua_pushboolean(L, s.killed);
  lua_setfield(L, -2, "kill_switch");
  return 1;
}

int vg_open_vigil_actions(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    { "execute", l_execute },
    { "decide", l_decide },
    { "kill_switch", l_kill_switch },
    { "reset_breaker", l_reset_breaker },
    { "suppress", l_suppress },
    { "heal_begin", l_heal_begin },
    { "heal_end", l_heal_end },
    { "stats", l_stats },
    { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  return 1;
}
