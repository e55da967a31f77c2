/* The daemon. Start: runtime, store, policies (load + watch), watchdog, REPL socket, the
 * replay of alerts a crash left undecided, HTTP intake. Stop (SIGINT or SIGTERM): no new requests,
 * close the REPL socket, cancel every task, close every VM, let the store finish every batch it
 * took (each gets its answer), close the loop with no handle left behind. */
#include "core/daemon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vigil/version.h"

#include "core/config.h"
#include "core/escalator.h"
#include "core/executor.h"
#include "core/intake.h"
#include "core/log.h"
#include "core/logfeed.h"
#include "core/persist.h"
#include "core/policy.h"
#include "core/runtime.h"
#include "core/watchdog.h"
#include "engine/exec.h"
#include "repl/repl.h"

typedef struct {
  vg_runtime_t *rt;
  uv_signal_t sigint, sigterm;
  vg_repl_server_t *repl;
  vg_store_t *store;
  vg_intake_t *intake;
  vg_persist_t *persist;
  vg_logfeed_t *logfeed;
} daemon_t;

static void on_stop_signal(uv_signal_t *h, int signum)
{
  daemon_t *d = h->data;
  if (d->rt->stopping) {
    return;
  }
  vg_log(VG_LOG_INFO, "shutting down", "signal", signum == SIGINT ? "SIGINT" : "SIGTERM", NULL);
  d->rt->stopping = true;
  vg_intake_stop(d->intake);
  d->intake = NULL;
  vg_repl_server_stop(d->repl);
  d->repl = NULL;
  vg_escalator_stop(d->rt->escalator); /* no new timer is taken; a due one stays due */
  d->rt->escalator = NULL;
  vg_executor_stop(d->rt->executor); /* before the store: its last writes still land */
  vg_exec_free(d->rt->exec);         /* nothing runs any more: its handles may close now */
  d->rt->exec = NULL;
  vg_logfeed_stop(d->logfeed);
  d->logfeed = NULL;
  vg_persist_stop(d->persist); /* its last write goes in before the store closes */
  d->persist = NULL;
  if (d->store != NULL) {
    vg_store_close(d->store, NULL, NULL); /* answers what it took, then closes */
  }
  d->store = NULL;
  vg_policies_free(d->rt->policies);
  d->rt->policies = NULL;
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->sigterm, NULL);
}

static void on_executor_started(void *ud, int64_t unknown)
{
  *(int64_t *)ud = unknown;
}

typedef struct {
  bool done;
  int status;
  size_t replayed;
  char err[256];
} replay_wait_t;

static void on_replayed(void *ud, int status, const char *err, size_t replayed)
{
  replay_wait_t *w = ud;
  w->done = true;
  w->status = status;
  w->replayed = replayed;
  snprintf(w->err, sizeof(w->err), "%s", err != NULL ? err : "");
}

/* Decision replay (G1 up to the policies): alerts stored but never dispatched, because vigil
 * died between the commit and the dispatch, go to the policies now, before anything new. */
static void replay_undecided(vg_runtime_t *rt, vg_store_t *store)
{
  replay_wait_t w = { 0 };
  int rc = vg_intake_replay(rt, store, on_replayed, &w);
  if (rc != 0) {
    snprintf(w.err, sizeof(w.err), "%s", uv_strerror(rc));
  } else {
    while (!w.done && uv_run(rt->loop, UV_RUN_ONCE) != 0) {
    }
    rc = w.done ? w.status : -EIO;
  }
  char n[24];
  snprintf(n, sizeof(n), "%zu", w.replayed);
  if (rc != 0) {
    vg_log(VG_LOG_ERROR, "cannot replay the alerts not decided before the last stop", "error",
           w.err[0] != '\0' ? w.err : "?", "replayed", n, NULL);
  } else if (w.replayed > 0) {
    vg_log(VG_LOG_INFO, "replayed alerts accepted but not decided before the last stop", "count", n,
           NULL);
  }
}

static void print_hello(const vg_config_t *cfg, int npolicies, int port)
{
  printf(
      "\n"
      "vigil %s is running with %d polic%s from %s/ (executor: %s),\n"
      "taking alerts on http://127.0.0.1:%d and storing them in %s.\n"
      "Logs go to stderr as logfmt. Try, in another terminal:\n"
      "\n"
      "  curl -XPOST localhost:%d/api/v2/alerts -H 'Content-Type: application/json' \\\n"
      "       -d '[{\"labels\": {\"alertname\": \"HighCPU\", \"severity\": \"critical\", "
      "\"pod\": \"api-7d9f\"}}]'\n"
      "  build/dev/vigil incidents --url http://127.0.0.1:%d\n"
      "  build/dev/vigil actions --url http://127.0.0.1:%d     (after 30 s: the dry-run "
      "scale-out)\n"
      "  build/dev/vigil repl --attach %s\n"
      "  > vigil.runtime.policies()\n"
      "  > vigil.sleep(1); print(\"tasks run on the loop\")\n"
      "\n"
      "Point Alertmanager at http://127.0.0.1:%d/api/v1/alertmanager (docs/intake.md).\n"
      "Edit a file in %s/ and it reloads within a second. Ctrl-C stops the daemon.\n\n",
      VIGIL_VERSION, npolicies, npolicies == 1 ? "y" : "ies", cfg->policies, cfg->executor_mode,
      port, cfg->store, port, port, port, cfg->repl_socket, port, cfg->policies);
  fflush(stdout);
}

int vg_daemon_run(vg_config_t *cfg, bool hello)
{
  uint64_t t0 = uv_hrtime();
  struct stat st;
  if (stat(cfg->policies, &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr,
            "vigil: the policies directory '%s' does not exist (set `policies` in the "
            "config or pass --policies DIR)\n",
            cfg->policies);
    return 2;
  }
  daemon_t d = { 0 };
  d.rt = vg_runtime_new();
  if (d.rt == NULL) {
    return 1;
  }
  vg_runtime_t *rt = d.rt;
  rt->config = cfg;
  rt->limits = cfg->limits;

  vg_store_opts_t so;
  vg_store_opts_default(&so);
  so.path = cfg->store;
  so.retention_s = (double)cfg->retention_ms / 1000.0;
  so.max_alerts = cfg->max_alerts;
  so.reopen_grace_s = (double)cfg->reopen_grace_ms / 1000.0;
  char err[512];
  d.store = vg_store_open(rt->loop, &so, err, sizeof(err));
  if (d.store == NULL) {
    fprintf(stderr, "vigil: cannot open the store: %s\n", err);
    vg_runtime_free(rt);
    return 1;
  }

  /* the executor: guard state and the kill switch loaded, actions left claimed by a crash
     marked unknown, before any policy can act */
  vg_executor_opts_t eo;
  vg_config_executor_opts(cfg, &eo);
  vg_executor_t *ex = vg_executor_new(rt, d.store, vg_runtime_exec(rt), &eo);
  if (ex == NULL) {
    fprintf(stderr, "vigil: cannot set up the executor (out of memory)\n");
    vg_store_close(d.store, NULL, NULL);
    vg_runtime_run(rt, -1);
    vg_runtime_free(rt);
    return 1;
  }
  vg_runtime_set_executor(rt, ex);
  int64_t started = INT64_MIN;
  vg_executor_start(ex, on_executor_started, &started);
  while (started == INT64_MIN && uv_run(rt->loop, UV_RUN_ONCE) != 0) {
  }

  if (cfg->nsources > 0 &&
      (vg_runtime_sources(rt) == NULL || vg_config_apply_sources(cfg, rt->sources) != 0)) {
    fprintf(stderr, "vigil: cannot set up the data sources (out of memory?)\n");
  }

  /* what detectors and log analysers learned, back before a policy asks for them */
  d.persist = vg_persist_start(rt, d.store, cfg->snapshot_ms);
  d.logfeed = vg_logfeed_start(rt); /* log files declared in the config, into their analysers */

  vg_policies_t *ps = vg_policies_new(rt, cfg->policies);
  ps->budget.max = cfg->error_budget;
  ps->budget.window_ms = cfg->error_window_ms;
  ps->drain_ms = cfg->drain_ms;
  ps->debounce_ms = cfg->debounce_ms;
  ps->max_inflight = cfg->max_policy_tasks;
  size_t qlen = strlen(cfg->store) + 12;
  ps->quarantine_path = malloc(qlen);
  snprintf(ps->quarantine_path, qlen, "%s.quarantine", cfg->store);
  rt->policies = ps;
  vg_policies_reload(ps, "start");
  vg_policies_watch(ps);

  rt->watchdog = vg_watchdog_start(rt, cfg->watchdog_ms, cfg->watchdog_hard_ms);
  d.repl = vg_repl_server_start(rt, cfg->repl_socket);
  replay_undecided(rt, d.store);

  vg_intake_opts_t io;
  vg_intake_opts_default(&io);
  io.listen = cfg->listen;
  io.token = cfg->token;
  io.auth_reads = cfg->auth_reads;
  io.resolve_timeout = (double)cfg->resolve_timeout_ms / 1000.0;
  io.http.max_body = cfg->max_body;
  io.http.header_timeout_ms = cfg->header_timeout_ms;
  io.http.body_timeout_ms = cfg->body_timeout_ms;
  io.http.idle_timeout_ms = cfg->idle_timeout_ms;
  io.http.max_connections = cfg->max_connections;
  d.intake = vg_intake_start(rt, d.store, &io, err, sizeof(err));
  if (d.intake == NULL) {
    fprintf(stderr, "vigil: cannot listen: %s\n", err);
    rt->stopping = true;
    vg_watchdog_stop(rt->watchdog);
    vg_repl_server_stop(d.repl);
    vg_policies_free(rt->policies);
    rt->policies = NULL;
    vg_executor_stop(rt->executor);
    vg_logfeed_stop(d.logfeed);
    vg_persist_stop(d.persist);
    vg_store_close(d.store, NULL, NULL);
    vg_runtime_run(rt, -1);
    vg_runtime_free(rt);
    return 1;
  }
  char port[16];
  snprintf(port, sizeof(port), "%d", vg_intake_port(d.intake));
  /* escalation timers: overdue ones (vigil was down) fire at the first tick */
  rt->escalator = vg_escalator_start(rt, d.store, 1000);

  uv_signal_init(rt->loop, &d.sigint);
  uv_signal_init(rt->loop, &d.sigterm);
  d.sigint.data = d.sigterm.data = &d;
  uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
  uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);

  int npolicies = 0;
  for (vg_policy_t *p = ps->list; p != NULL; p = p->next) {
    npolicies++;
  }
  char n[16], ms[32];
  snprintf(n, sizeof(n), "%d", npolicies);
  snprintf(ms, sizeof(ms), "%.1f", (double)(uv_hrtime() - t0) / 1e6);
  vg_log(VG_LOG_INFO, "vigil started", "version", VIGIL_VERSION, "policies", n, "dir",
         cfg->policies, "listen", cfg->listen, "port", port, "store", cfg->store, "repl_socket",
         d.repl ? cfg->repl_socket : "(off)", "executor", cfg->executor_mode, "startup_ms", ms,
         NULL);
  if (hello) {
    print_hello(cfg, npolicies, vg_intake_port(d.intake));
  }

  vg_runtime_run(rt, -1);

  vg_watchdog_stop(rt->watchdog);
  vg_escalator_stop(rt->escalator);
  rt->escalator = NULL;
  if (rt->policies != NULL) {
    vg_policies_free(rt->policies);
  }
  vg_repl_server_stop(d.repl);
  vg_intake_stop(d.intake);
  vg_executor_stop(rt->executor);
  vg_logfeed_stop(d.logfeed); /* both NULL unless the loop ended without a stop signal */
  vg_persist_stop(d.persist);
  if (d.store != NULL) {
    vg_store_close(d.store, NULL, NULL);
    vg_runtime_run(rt, -1); /* the store's last callbacks, before the executor goes */
  }
  vg_runtime_free(rt);
  vg_log(VG_LOG_INFO, "stopped", NULL);
  return 0;
}
