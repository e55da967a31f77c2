/* Runtime lifecycle: loop creation, the scheduler's idle handle, and an orderly close in
 * which every handle is closed and the loop is empty at the end. */
#include "core/runtime.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/task.h"
#include "engine/httpc.h"
#include "engine/source.h"

void vg_limits_default(vg_limits_t *limits)
{
  limits->memory = 64u << 20;
  limits->instructions = 100000000;
  limits->slice_ms = 1000;
  limits->timeout_ms = 5 * 60 * 1000;
}

vg_runtime_t *vg_runtime_new(void)
{
  vg_runtime_t *rt = calloc(1, sizeof(*rt));
  if (rt == NULL) {
    return NULL;
  }
  if (uv_loop_init(&rt->loop_storage) != 0) {
    free(rt);
    return NULL;
  }
  rt->loop = &rt->loop_storage;
  rt->loop->data = rt;
  uv_idle_init(rt->loop, &rt->sched_idle);
  rt->sched_idle.data = rt;
  vg_limits_default(&rt->limits);
  return rt;
}

void vg_runtime_run(vg_runtime_t *rt, double limit_s)
{
  for (;;) {
    uv_run(rt->loop, UV_RUN_DEFAULT);
    if (rt->stopping || !vg_clock_jump(rt, limit_s)) {
      break;
    }
  }
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
  (void)arg;
  if (!uv_is_closing(h)) {
    uv_close(h, NULL); /* handles still open here are embedded in structs we own */
  }
}

void vg_runtime_free(vg_runtime_t *rt)
{
  if (rt == NULL) {
    return;
  }
  vg_sched_run_deferred(rt);
  vg_sources_free(rt->sources); /* cancels their requests, before the client goes */
  rt->sources = NULL;
  vg_httpc_free(rt->httpc); /* its handles close in the runs below */
  rt->httpc = NULL;
  uv_close((uv_handle_t *)&rt->sched_idle, NULL);
  uv_run(rt->loop, UV_RUN_DEFAULT); /* let close callbacks free their memory */
  uv_walk(rt->loop, close_walk_cb, NULL);
  uv_run(rt->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(rt->loop) != 0) {
    vg_log(VG_LOG_WARN, "loop closed with handles still open", NULL);
  }
  while (rt->vtimers != NULL) {
    vg_timer_t *t = rt->vtimers;
    vg_timer_stop(t);
  }
  free(rt);
}

struct vg_httpc *vg_runtime_httpc(vg_runtime_t *rt)
{
  if (rt->httpc == NULL && !rt->stopping) {
    rt->httpc = vg_httpc_new(rt->loop);
  }
  return rt->httpc;
}

struct vg_sources *vg_runtime_sources(vg_runtime_t *rt)
{
  if (rt->sources == NULL && vg_runtime_httpc(rt) != NULL) {
    rt->sources = vg_sources_new(rt->loop, rt->httpc);
  }
  return rt->sources;
}
