/* `vigil repl` standalone: a local session (its own runtime, optionally the config's policies)
 * behind the shared front end. The attach client is client.c, the daemon's side server.c. */
#include "repl/repl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vigil/version.h"

#include "core/config.h"
#include "core/policy.h"
#include "repl/frontend.h"
#include "repl/session.h"

static void on_output(void *ud, const char *text, size_t len)
{
  vg_repl_fe_output(ud, text, len);
}

static void on_result(void *ud, const char *text, size_t len)
{
  vg_repl_fe_result(ud, text, len);
}

static void on_error(void *ud, const char *text, size_t len)
{
  vg_repl_fe_error(ud, text, len);
}

static void on_done(void *ud, bool ok)
{
  vg_repl_fe_done(ud, ok);
}

static int be_eval(void *ud, const char *src, size_t len, bool show_results)
{
  return vg_repl_session_eval(ud, src, len, show_results);
}

static void be_interrupt(void *ud)
{
  vg_repl_session_interrupt(ud);
}

static void be_interrupt_signal(void *ud)
{
  vg_repl_session_interrupt_signal(ud);
}

static char **be_complete(void *ud, const char *word, size_t *n)
{
  return vg_repl_session_complete(ud, word, n);
}

/* The config's policies, loaded once (no file watching: vigil.runtime.reload() reloads). */
static vg_policies_t *load_policies_of(vg_runtime_t *rt, const vg_config_t *cfg, int *count)
{
  vg_policies_t *ps = vg_policies_new(rt, cfg->policies);
  if (ps == NULL) {
    return NULL;
  }
  ps->budget.max = cfg->error_budget;
  ps->budget.window_ms = cfg->error_window_ms;
  ps->drain_ms = cfg->drain_ms;
  ps->debounce_ms = cfg->debounce_ms;
  rt->policies = ps;
  vg_policies_reload(ps, "repl");
  *count = 0;
  for (vg_policy_t *p = ps->list; p != NULL; p = p->next) {
    (*count)++;
  }
  return ps;
}

int vg_repl_standalone(const vg_config_t *cfg, bool load_policies)
{
  vg_runtime_t *rt = vg_runtime_new();
  if (rt == NULL) {
    fputs("vigil repl: out of memory\n", stderr);
    return 1;
  }
  rt->limits = cfg->limits;
  rt->config = (vg_config_t *)cfg;
  if (cfg->nsources > 0 &&
      (vg_runtime_sources(rt) == NULL || vg_config_apply_sources(cfg, rt->sources) != 0)) {
    fputs("vigil repl: cannot set up the data sources\n", stderr);
  }
  vg_policies_t *ps = NULL;
  int npolicies = 0;
  if (load_policies) {
    ps = load_policies_of(rt, cfg, &npolicies);
  }
  /* Long computations are fine at a prompt: no instruction budget, time slice or deadline;
   * Ctrl-C stops them (also a loop that never yields, from the SIGINT handler). */
  vg_limits_t limits = cfg->limits;
  limits.instructions = 0;
  limits.slice_ms = 0;
  limits.timeout_ms = 0;

  int status = 1;
  vg_repl_fe_t *fe = vg_repl_fe_new(rt);
  static const vg_repl_session_cbs_t cbs = { on_output, on_result, on_error, on_done };
  vg_repl_session_t *s = fe != NULL ? vg_repl_session_new(rt, "repl", &limits, &cbs, fe) : NULL;
  if (s == NULL) {
    fputs("vigil repl: cannot create the REPL's Lua state\n", stderr);
  } else {
    vg_repl_backend_t be = {
      .eval = be_eval,
      .interrupt = be_interrupt,
      .interrupt_signal = be_interrupt_signal,
      .complete = be_complete,
      .ud = s,
    };
    char banner[512], loaded[256] = "";
    if (ps != NULL) {
      snprintf(loaded, sizeof(loaded), " %d polic%s from %s/ (vigil.runtime.policies()).",
               npolicies, npolicies == 1 ? "y" : "ies", cfg->policies);
    }
    snprintf(banner, sizeof(banner),
             "vigil %s: Lua on the runtime; every line runs as a task.%s\n"
             "Tab completes, Ctrl-C interrupts, Ctrl-D exits.\n",
             VIGIL_VERSION, loaded);
    status = vg_repl_fe_run(fe, &be, banner);
  }
  vg_repl_session_free(s);
  vg_policies_free(ps);
  rt->policies = NULL;
  vg_repl_fe_free(fe);
  vg_runtime_free(rt);
  return status;
}
