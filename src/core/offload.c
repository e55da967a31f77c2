/* vg_offload: a uv_work_t per call, owned by whichever of the task (until cancelled) and the
 * pool (until its after-work callback) lets go last. */
#include "core/offload.h"

#include <stdbool.h>
#include <stdlib.h>
#include <uv.h>

#include "core/runtime.h"
#include "core/vm.h"

typedef struct {
  uv_work_t req;
  vg_task_t *task; /* NULL once the task was cancelled */
  bool finished;   /* the after-work callback ran */
  void *data;
  vg_offload_work_fn work;
  vg_offload_push_fn push;
  vg_offload_free_fn release;
} offload_t;

vg_task_t *vg_offload_task(lua_State *L)
{
  vg_vm_t *vm = vg_vm_of(L);
  if (vm == NULL || vm->current == NULL || vm->noyield_reason != NULL || vm->current->co != L ||
      !lua_isyieldable(L)) {
    return NULL;
  }
  return vm->current;
}

static void work_cb(uv_work_t *req)
{
  offload_t *o = req->data;
  o->work(o->data);
}

static int push_cb(lua_State *L, void *op)
{
  offload_t *o = op;
  void *data = o->data;
  vg_offload_push_fn push = o->push;
  free(o);
  return push(L, data);
}

static void after_cb(uv_work_t *req, int status)
{
  (void)status; /* UV_ECANCELED only if uv_cancel ran: then the task is gone too */
  offload_t *o = req->data;
  o->finished = true;
  if (o->task == NULL) {
    o->release(o->data);
    free(o);
    return;
  }
  vg_task_wake(o->task, push_cb);
}

/* The task was cancelled: the pool still owns o until the work is done, unless it is. */
static void cancel_cb(void *op)
{
  offload_t *o = op;
  o->task = NULL;
  if (o->finished) {
    o->release(o->data);
    free(o);
  } else {
    uv_cancel((uv_req_t *)&o->req); /* saves the work if it has not started; fine if it has */
  }
}

int vg_offload(lua_State *L,
               vg_task_t *t,
               void *data,
               vg_offload_work_fn work,
               vg_offload_push_fn push,
               vg_offload_free_fn release)
{
  offload_t *o = calloc(1, sizeof(*o));
  if (o == NULL) {
    work(data);
    return push(L, data);
  }
  o->req.data = o;
  o->task = t;
  o->data = data;
  o->work = work;
  o->push = push;
  o->release = release;
  if (uv_queue_work(vg_vm_of(L)->rt->loop, &o->req, work_cb, after_cb) != 0) {
    free(o);
    work(data);
    return push(L, data);
  }
  vg_task_suspend(t, o, cancel_cb);
  return vg_task_yield(L);
}
