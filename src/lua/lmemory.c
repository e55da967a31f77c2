/* vigil.memory.core: the C half of lua/vigil/memory.lua. call(op, args_json) hands one
 * operation to the store-backed memory (src/engine/memory.h: timeline notes, policy state,
 * knowledge base, escalation timers) and suspends the task until it is answered. JSON text
 * crosses the boundary both ways; memory.lua encodes and decodes. */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/executor.h"
#include "core/runtime.h"
#include "core/task.h"
#include "engine/memory.h"
#include "lua/lvigil.h"

typedef struct {
  vg_task_t *task; /* NULL once the task is gone: the callback frees */
  bool answered;
  int status;
  char *json;
  size_t len;
  char err[256];
} call_t;

static int call_push(lua_State *L, void *ud)
{
  call_t *c = ud;
  if (c->status == 0 && c->json != NULL) {
    lua_pushlstring(L, c->json, c->len);
    lua_pushnil(L);
  } else {
    lua_pushnil(L);
    const char *code = c->status == -EINVAL ? "EINVAL" : c->status == -ENOENT ? "ENOENT" : "ESTORE";
    lua_pushfstring(L, "%s: %s", code,
                    c->json == NULL && c->status == 0 ? "out of memory" : c->err);
  }
  free(c->json);
  free(c);
  return 2;
}

static void call_cancel(void *ud)
{
  call_t *c = ud;
  if (c->answered) {
    free(c->json);
    free(c);
  } else {
    c->task = NULL;
  }
}

static void call_done(void *ud, int status, const char *err, const char *json, size_t len)
{
  call_t *c = ud;
  c->answered = true;
  c->status = status;
  snprintf(c->err, sizeof c->err, "%s", err != NULL ? err : "failed");
  if (status == 0 && json != NULL) {
    c->json = malloc(len + 1);
    if (c->json != NULL) {
      memcpy(c->json, json, len);
      c->json[len] = '\0';
      c->len = len;
    }
  }
  if (c->task != NULL) {
    vg_task_wake(c->task, call_push);
  } else {
    free(c->json);
    free(c);
  }
}

/* call(op, args_json) -> result_json | nil, "ECODE: message" */
static int l_call(lua_State *L)
{
  const char *op = luaL_checkstring(L, 1);
  const char *args = luaL_checkstring(L, 2);
  vg_task_t *t = vg_task_check_yieldable(L, "vigil.memory");
  vg_executor_t *ex = vg_runtime_executor(vg_vm_of(L)->rt);
  vg_store_t *store = ex != NULL ? vg_executor_store(ex) : NULL;
  if (store == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L,
                    "ENOSTORE: this runtime has no store (the daemon and `vigil test` have one)");
    return 2;
  }
  call_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return luaL_error(L, "vigil.memory: out of memory");
  }
  c->task = t;
  int rc = vg_memory_call(store, op, args, call_done, c);
  if (rc < 0) {
    free(c);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: vigil.memory: cannot start '%s'", rc == -EINVAL ? "EINVAL" : "ESTORE",
                    op);
    return 2;
  }
  vg_task_suspend(t, c, call_cancel);
  return vg_task_yield(L);
}

/* available() -> true when this runtime has a store to remember in */
static int l_available(lua_State *L)
{
  vg_executor_t *ex = vg_runtime_executor(vg_vm_of(L)->rt);
  lua_pushboolean(L, ex != NULL && vg_executor_store(ex) != NULL);
  return 1;
}

int vg_open_vigil_memory(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    { "call", l_call },
    { "available", l_available },
    { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  return 1;
}
