/* Runtime lifecycle: loop creation, the scheduler's idle handle, and an orderly close in
 * which every handle is closed and the loop is empty at the end. */
#include "core/runtime.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/executor.h"
#include "core/log.h"
#include "core/task.h"
#include "engine/detect.h"
#include "engine/exec.h"
#include "engine/httpc.h"
#include "engine/iforest_registry.h"
#include "engine/logan.h"
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
  vg_executor_free(rt->executor); /* before the runner and the HTTP client it uses */
  rt->executor = NULL;
  vg_exec_free(rt->exec);
  rt->exec = NULL;
  vg_sources_free(rt->sources); /* cancels their requests, before the client goes */
  rt->sources = NULL;
  detect_registry_free(rt->series);
  rt->series = NULL;
  iforest_registry_free(rt->forests);
  rt->forests = NULL;
  logan_registry_free(rt->logs);
  rt->logs = NULL;
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

struct vg_series_registry *vg_runtime_series(vg_runtime_t *rt)
{
  if (rt->series == NULL) {
    rt->series = detect_registry_new(0);
  }
  return rt->series;
}

struct vg_iforest_registry *vg_runtime_forests(vg_runtime_t *rt)
{
  if (rt->forests == NULL) {
    rt->forests = iforest_registry_new(0, 0);
  }
  return rt->forests;
}

struct vg_logan_registry *vg_runtime_logs(vg_runtime_t *rt)
{
  if (rt->logs == NULL) {
    rt->logs = logan_registry_new(0);
  }
  if (rt->logs != NULL && rt->config != rt->logs_config) { /* new config: its declared ones */
    rt->logs_config = rt->config;
    vg_config_apply_logs(rt->config, rt->logs);
  }
  return rt->logs;
}

struct vg_executor *vg_runtime_executor(vg_runtime_t *rt)
{
  if (rt->executor == NULL && !rt->stopping) {
    vg_executor_opts_t o;
    if (rt->config != NULL) {
      vg_config_executor_opts(rt->config, &o);
    } else {
      vg_executor_opts_default(&o);
    }
    rt->executor = vg_executor_new(rt, NULL, vg_runtime_exec(rt), &o);
  }
  return rt->executor;
}

void vg_runtime_set_executor(vg_runtime_t *rt, struct vg_executor *ex)
{
  vg_executor_free(rt->executor);
  rt->executor = ex;
}

static void exec_log(void *ud, const char *msg)
{
  (void)ud;
  vg_log(VG_LOG_WARN, "exec server", "event", msg, NULL);
}

struct vg_exec *vg_runtime_exec(vg_runtime_t *rt)
{
  if (rt->exec != NULL || rt->stopping || rt->exec_failed) {
    return rt->exec;
  }
  const vg_config_t *cfg = rt->config;
  vg_exec_opts_t o = { 0 };
  if (cfg != NULL) {
    o.helper = cfg->exec_helper;
    o.allow = (const char *const *)cfg->exec_allow;
    o.nallow = cfg->nexec_allow;
    o.env_allow = (const char *const *)cfg->exec_env;
    o.nenv_allow = cfg->nexec_env;
    o.scratch = cfg->exec_scratch;
    o.timeout_ms = cfg->exec_timeout_ms;
    o.grace_ms = cfg->exec_grace_ms;
    o.max_output = (size_t)cfg->exec_max_output;
    o.limits = (vg_exec_limits_t){ .cpu_s = cfg->rl_cpu_s,
                                   .as_bytes = cfg->rl_as,
                                   .nofile = cfg->rl_nofile,
                                   .fsize_bytes = cfg->rl_fsize,
                                   .nproc = cfg->rl_nproc };
    o.landlock = cfg->exec_landlock != NULL ? (vg_exec_mode_t)vg_exec_mode_parse(cfg->exec_landlock)
                                            : VG_EXEC_AUTO;
    o.seccomp = cfg->exec_seccomp != NULL ? (vg_exec_mode_t)vg_exec_mode_parse(cfg->exec_seccomp)
                                          : VG_EXEC_AUTO;
    o.tcp_ports = cfg->exec_ports;
    o.ntcp_ports = cfg->nexec_ports;
    o.tcp_any = cfg->exec_ports == NULL; /* no net_ports: TCP is not restricted */
    o.user = cfg->exec_user;
    o.server = cfg->exec_server;
    o.log = exec_log;
  } else {
    o.tcp_any = true;
  }
  char err[512];
  rt->exec = vg_exec_new(rt->loop, &o, err, sizeof err);
  if (rt->exec == NULL) {
    rt->exec_failed = true;
    vg_log(VG_LOG_ERROR, "the process executor is not available: process actions will fail",
           "error", err, NULL);
  } else {
    const vg_exec_tiers_t *t = vg_exec_tiers(rt->exec);
    vg_log(VG_LOG_INFO, "executor sandbox", "tiers", t->summary != NULL ? t->summary : "", "notes",
           t->notes != NULL ? t->notes : "", NULL);
  }
  return rt->exec;
}
