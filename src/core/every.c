/* Periodic jobs on the runtime clock. */
#include "core/every.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/task.h"

static void run_done(vg_task_t *t, void *ud)
{
  vg_every_t *e = ud;
  e->running = NULL;
  if (t->status != VG_TASK_OK) {
    e->failures++;
  }
}

static void tick(vg_timer_t *timer, void *ud)
{
  (void)timer;
  vg_every_t *e = ud;
  vg_vm_t *vm = e->vm;
  if (vm->draining || vm->closing) {
    return;
  }
  if (e->running != NULL) {
    e->skipped++;
    return;
  }
  lua_rawgeti(vm->L, LUA_REGISTRYINDEX, e->fn_ref);
  char name[96];
  snprintf(name, sizeof(name), "every:%s", e->name);
  vg_task_opts_t opts = { .name = name, .label = "every", .done = run_done, .done_ud = e };
  e->running = vg_task_spawn(vm, 0, &opts);
  e->runs++;
}

vg_every_t *vg_every_start(
    vg_vm_t *vm, lua_State *L, const char *name, uint64_t interval_ms, uint64_t first_ms)
{
  vg_every_t *e = calloc(1, sizeof(*e));
  if (e == NULL) {
    lua_pop(L, 1);
    return NULL;
  }
  e->vm = vm;
  e->interval_ms = interval_ms;
  snprintf(e->name, sizeof(e->name), "%s", name);
  e->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  e->timer = vg_timer_start(vm->rt, first_ms, interval_ms, tick, e);
  if (e->timer == NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, e->fn_ref);
    free(e);
    return NULL;
  }
  e->next = vm->every;
  vm->every = e;
  return e;
}

void vg_every_stop(vg_every_t *e)
{
  vg_vm_t *vm = e->vm;
  for (vg_every_t **pp = &vm->every; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == e) {
      *pp = e->next;
      break;
    }
  }
  vg_timer_stop(e->timer);
  if (e->running != NULL) {
    e->running->done = NULL; /* the run goes on without reporting back */
  }
  if (e->handle != NULL) {
    e->handle->e = NULL;
    e->handle->runs = e->runs;
    e->handle->skipped = e->skipped;
    e->handle->failures = e->failures;
  }
  luaL_unref(vm->L, LUA_REGISTRYINDEX, e->fn_ref);
  free(e);
}

void vg_every_stop_all(vg_vm_t *vm)
{
  while (vm->every != NULL) {
    vg_every_stop(vm->every);
  }
}
