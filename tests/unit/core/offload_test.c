/* Tests for core/offload.c with a real runtime, VM and thread pool: a task gets the work's
 * result; a task cancelled while the work runs, or after it finished but before the task
 * resumed, never resumes and the work's data is released exactly once (ASan sees the rest);
 * outside a task the caller is told to work synchronously. The work waits on a gate the test
 * opens, so "while it runs" is a fact, not a race. */
#include "core/offload.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/runtime.h"
#include "core/vm.h"
#include "test_support.h"

static uv_sem_t g_started, g_gate;
static bool g_gated;
static int g_pushes, g_releases, g_works;

typedef struct {
  lua_Integer n, sum;
} job_t;

static void job_work(void *p)
{
  job_t *j = p;
  if (g_gated) {
    uv_sem_post(&g_started);
    uv_sem_wait(&g_gate);
  }
  for (lua_Integer i = 1; i <= j->n; i++) {
    j->sum += i;
  }
  g_works++; /* read by the test only after the after-work callback ran */
}

static int job_push(lua_State *L, void *p)
{
  job_t *j = p;
  lua_Integer sum = j->sum;
  free(j);
  g_pushes++;
  lua_pushinteger(L, sum);
  return 1;
}

static void job_release(void *p)
{
  free(p);
  g_releases++;
}

/* crunch(n) [-1, +1, e]: 1 + ... + n, on the pool inside a task, here outside one. */
static int l_crunch(lua_State *L)
{
  job_t *j = calloc(1, sizeof(*j));
  if (j == NULL) {
    return luaL_error(L, "out of memory");
  }
  j->n = luaL_checkinteger(L, 1);
  vg_task_t *t = vg_offload_task(L);
  if (t == NULL) {
    job_work(j);
    return job_push(L, j);
  }
  return vg_offload(L, t, j, job_work, job_push, job_release);
}

typedef struct {
  vg_runtime_t *rt;
  vg_vm_t *vm;
} fx_t;

static void fx_open(fx_t *f, bool gated)
{
  g_pushes = g_releases = g_works = 0;
  g_gated = gated;
  assert_int_equal(uv_sem_init(&g_started, 0), 0);
  assert_int_equal(uv_sem_init(&g_gate, 0), 0);
  f->rt = vg_runtime_new();
  assert_non_null(f->rt);
  vg_limits_t none = { 0 };
  f->vm = vg_vm_new(f->rt, "offloadtest", &none);
  assert_non_null(f->vm);
  lua_register(f->vm->L, "crunch", l_crunch);
}

static void fx_close(fx_t *f)
{
  vg_vm_free(f->vm);
  vg_runtime_free(f->rt); /* runs the loop until pending work is done */
  uv_sem_destroy(&g_started);
  uv_sem_destroy(&g_gate);
}

static vg_task_t *spawn_code(fx_t *f, const char *code)
{
  lua_State *L = f->vm->L;
  if (vg_vm_load_text(L, code, strlen(code), "=task") != LUA_OK) {
    fail_msg("load: %s", lua_tostring(L, -1));
  }
  vg_task_opts_t opts = { .name = "offload", .label = "test" };
  vg_task_t *t = vg_task_spawn(f->vm, 0, &opts);
  assert_non_null(t);
  vg_task_ref(t);
  return t;
}

static lua_Integer global_int(vg_vm_t *vm, const char *name)
{
  lua_getglobal(vm->L, name);
  lua_Integer v = lua_tointeger(vm->L, -1);
  lua_pop(vm->L, 1);
  return v;
}

static void test_task_gets_the_result(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, false);
  vg_task_t *t = spawn_code(&f, "result = crunch(100) after = true");
  vg_runtime_run(f.rt, -1);
  assert_int_equal(t->state, VG_TASK_DONE);
  assert_int_equal(t->status, VG_TASK_OK);
  assert_int_equal(global_int(f.vm, "result"), 5050);
  assert_int_equal(g_works, 1);
  assert_int_equal(g_pushes, 1);
  assert_int_equal(g_releases, 0);
  vg_task_unref(t);
  fx_close(&f);
}

static void test_cancel_while_the_work_runs(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, true);
  vg_task_t *t = spawn_code(&f, "result = crunch(10) resumed = true");
  while (t->state != VG_TASK_WAITING) {
    uv_run(f.rt->loop, UV_RUN_NOWAIT);
  }
  uv_sem_wait(&g_started); /* the work is running on a pool thread */
  vg_task_cancel(t, "no longer wanted");
  assert_int_equal(t->status, VG_TASK_CANCELLED);
  assert_int_equal(g_releases, 0); /* the pool still owns the data */
  uv_sem_post(&g_gate);
  vg_runtime_run(f.rt, -1); /* the work finishes: released, never pushed */
  assert_int_equal(g_works, 1);
  assert_int_equal(g_releases, 1);
  assert_int_equal(g_pushes, 0);
  assert_int_equal(global_int(f.vm, "resumed"), 0);
  vg_task_unref(t);
  fx_close(&f);
}

static void test_cancel_after_the_work_before_the_resume(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, true);
  vg_task_t *t = spawn_code(&f, "result = crunch(10) resumed = true");
  while (t->state != VG_TASK_WAITING) {
    uv_run(f.rt->loop, UV_RUN_NOWAIT);
  }
  uv_sem_post(&g_gate);
  while (t->state == VG_TASK_WAITING) { /* until the after-work callback woke it */
    uv_run(f.rt->loop, UV_RUN_ONCE);
  }
  assert_int_equal(t->state, VG_TASK_READY);
  assert_int_equal(g_works, 1);
  vg_task_cancel(t, "too late");
  assert_int_equal(g_releases, 1); /* released at once: the pool is done with it */
  vg_runtime_run(f.rt, -1);
  assert_int_equal(g_pushes, 0);
  assert_int_equal(g_releases, 1);
  assert_int_equal(global_int(f.vm, "resumed"), 0);
  vg_task_unref(t);
  fx_close(&f);
}

static void test_outside_a_task_works_synchronously(void **state)
{
  (void)state;
  fx_t f;
  fx_open(&f, false);
  lua_State *L = f.vm->L;
  assert_null(vg_offload_task(L));
  const char *code = "return crunch(4)";
  assert_int_equal(vg_vm_load_text(L, code, strlen(code), "=main"), LUA_OK);
  assert_int_equal(lua_pcall(L, 0, 1, 0), LUA_OK);
  assert_int_equal(lua_tointeger(L, -1), 10);
  lua_pop(L, 1);
  assert_int_equal(g_pushes, 1);
  assert_int_equal(g_releases, 0);
  /* inside a task but under a metamethod called from C: synchronous too */
  vg_task_t *t =
      spawn_code(&f,
                 "local mt = { __tostring = function() return tostring(crunch(3)) end }\n"
                 "result = tonumber(tostring(setmetatable({}, mt)))");
  vg_runtime_run(f.rt, -1);
  assert_int_equal(t->status, VG_TASK_OK);
  assert_int_equal(global_int(f.vm, "result"), 6);
  assert_int_equal(g_pushes, 2);
  vg_task_unref(t);
  fx_close(&f);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_task_gets_the_result),
    cmocka_unit_test(test_cancel_while_the_work_runs),
    cmocka_unit_test(test_cancel_after_the_work_before_the_resume),
    cmocka_unit_test(test_outside_a_task_works_synchronously),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
