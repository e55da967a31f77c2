/* vigil.httpc: the C half of vigil.http (lua/vigil/http.lua shapes requests and responses).
 * One function, request(), that suspends the calling task until the runtime's HTTP client
 * (src/engine/httpc.c) answers; cancelling the task abandons the request. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/runtime.h"
#include "core/task.h"
#include "engine/httpc.h"
#include "engine/source.h"
#include "lua/lvigil.h"

#define MAX_HEADERS 64

typedef struct {
  vg_task_t *task;
  vg_httpc_req_t *req;   /* NULL once answered */
  vg_source_req_t *sreq; /* the same, through a source's policy */
  long status;
  char *headers, *body, *error;
  size_t headers_len, body_len;
  double elapsed;
} http_op_t;

static void op_free(http_op_t *op)
{
  free(op->headers);
  free(op->body);
  free(op->error);
  free(op);
}

/* The task was cancelled (or its VM closed) first. */
static void op_cancel(void *ud)
{
  http_op_t *op = ud;
  vg_httpc_cancel(op->req);
  vg_source_cancel(op->sreq);
  op_free(op);
}

/* Inside the task: status, headers, body, elapsed; or nil, "ENAME: detail". */
static int op_push(lua_State *L, void *ud)
{
  http_op_t *op = ud;
  int n;
  if (op->error != NULL || op->headers == NULL || op->body == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, op->error != NULL ? op->error : "ENOMEM: out of memory");
    n = 2;
  } else {
    lua_pushinteger(L, op->status);
    lua_pushlstring(L, op->headers, op->headers_len);
    lua_pushlstring(L, op->body, op->body_len);
    lua_pushnumber(L, op->elapsed);
    n = 4;
  }
  op_free(op);
  return n;
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

static void on_done(void *ud, const vg_httpc_resp_t *r)
{
  http_op_t *op = ud;
  op->req = NULL;
  op->sreq = NULL;
  if (r->error != NULL) {
    size_t len = strlen(r->error) + strlen(r->detail) + 3;
    op->error = malloc(len);
    if (op->error != NULL) {
      snprintf(op->error, len, "%s: %s", r->error, r->detail);
    }
  } else {
    op->status = r->status;
    op->headers = dup_bytes(r->headers, r->headers_len);
    op->body = dup_bytes(r->body, r->body_len);
    op->headers_len = r->headers_len;
    op->body_len = r->body_len;
    op->elapsed = r->elapsed;
    if (op->headers == NULL || op->body == NULL) {
      op->error = dup_bytes("ENOMEM: out of memory", 21);
    }
  }
  vg_task_wake(op->task, op_push);
}

/* Reads the source policy table at idx over the defaults. */
static void read_source_opts(lua_State *L, int idx, vg_source_opts_t *o)
{
  vg_source_opts_default(o);
  if (lua_type(L, idx) != LUA_TTABLE) {
    return;
  }
  static const char *const ints[] = { "max_concurrency", "max_queue", "retries",
                                      "breaker_failures" };
  uint32_t *islots[] = { &o->max_concurrency, &o->max_queue, &o->retries, &o->breaker_failures };
  for (int i = 0; i < 4; i++) {
    if (lua_getfield(L, idx, ints[i]) != LUA_TNIL) {
      lua_Integer v = luaL_checkinteger(L, -1);
      luaL_argcheck(L, v >= 0 && v <= 100000, idx, ints[i]);
      *islots[i] = (uint32_t)v;
    }
    lua_pop(L, 1);
  }
  static const char *const durs[] = { "backoff", "backoff_max", "breaker_cooldown" };
  uint64_t *dslots[] = { &o->backoff_ms, &o->backoff_max_ms, &o->breaker_cooldown_ms };
  for (int i = 0; i < 3; i++) {
    if (lua_getfield(L, idx, durs[i]) != LUA_TNIL) {
      *dslots[i] = vg_check_duration_ms(L, lua_gettop(L));
    }
    lua_pop(L, 1);
  }
}

/* request(method, url, headers, body|nil, timeout_ms, max_bytes [, source, policy,
 * idempotent]) [-9, +(2|4), e]: with a source name, the request goes through that source's
 * policy (concurrency, retries when idempotent, circuit breaker). */
static int l_request(lua_State *L)
{
  const char *method = luaL_checkstring(L, 1);
  const char *url = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  size_t body_len = 0;
  const char *body = luaL_optlstring(L, 4, NULL, &body_len);
  lua_Integer timeout_ms = luaL_checkinteger(L, 5);
  lua_Integer max_bytes = luaL_checkinteger(L, 6);
  luaL_argcheck(L, timeout_ms > 0 && timeout_ms <= 3600000, 5, "timeout must be 1 ms to 1 h");
  luaL_argcheck(L, max_bytes >= 0 && max_bytes <= (1 << 30), 6, "max_bytes must be 0 to 1 GiB");
  const char *headers[MAX_HEADERS];
  size_t nh = 0;
  for (lua_Integer i = 1; lua_rawgeti(L, 3, i) != LUA_TNIL; i++) {
    size_t len;
    const char *h = lua_tolstring(L, -1, &len);
    luaL_argcheck(L, h != NULL && nh < MAX_HEADERS, 3, "at most 64 header strings");
    luaL_argcheck(L, strpbrk(h, "\r\n") == NULL && strlen(h) == len, 3,
                  "a header contains CR, LF or NUL");
    headers[nh++] = h; /* the strings stay referenced by the table at 3 during this call */
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  /* everything that can raise comes before the allocation below */
  const char *source = luaL_optstring(L, 7, NULL);
  vg_source_t *src = NULL;
  if (source != NULL) {
    vg_source_opts_t so;
    read_source_opts(L, 8, &so);
    vg_sources_t *ss = vg_runtime_sources(vg_vm_of(L)->rt);
    src = ss != NULL ? vg_sources_get(ss, source, lua_istable(L, 8) ? &so : NULL) : NULL;
    if (src == NULL) {
      return luaL_error(L, "vigil.http.request: out of memory");
    }
  }
  vg_task_t *t = vg_task_check_yieldable(L, "vigil.http.request");
  vg_httpc_t *c = vg_runtime_httpc(vg_vm_of(L)->rt);
  if (c == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "EIO: the HTTP client is not available (shutting down?)");
    return 2;
  }
  http_op_t *op = calloc(1, sizeof(*op));
  if (op == NULL) {
    return luaL_error(L, "vigil.http.request: out of memory");
  }
  op->task = t;
  vg_httpc_opts_t o = {
    .method = method,
    .url = url,
    .headers = headers,
    .nheaders = nh,
    .body = body,
    .body_len = body_len,
    .timeout_ms = (uint64_t)timeout_ms,
    .max_bytes = (size_t)max_bytes,
    .max_redirects = 5,
  };
  char err[256];
  if (source != NULL) {
    op->sreq = vg_source_request(src, &o, lua_toboolean(L, 9), on_done, op, err, sizeof(err));
  } else {
    op->req = vg_httpc_start(c, &o, on_done, op, err, sizeof(err));
  }
  if (op->req == NULL && op->sreq == NULL) {
    free(op);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  vg_task_suspend(t, op, op_cancel);
  return vg_task_yield(L);
}

int vg_open_vigil_httpc(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    { "request", l_request },
    { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  return 1;
}
