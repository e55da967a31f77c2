/* Daemon configuration: an optional Lua file, evaluated in a sandbox into a table and checked
 * key by key. Nothing is required; defaults are DESIGN.md §1's. Secrets come from `env "NAME"`
 * and `file "PATH"` and are opaque values that never print. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/executor.h"
#include "core/vm.h"
#include "engine/logan.h"
#include "engine/source.h"

/* A data source declared in the config (`sources = { name = { kind = ..., url = ... } }`). */
typedef struct {
  char *name;
  char *kind; /* prometheus | loki | jaeger | datadog | alertmanager | http */
  char *url;
  uint64_t timeout_ms;
  vg_source_opts_t policy;
  char **headers; /* "Name: value" added by C to every request; may hold secrets */
  size_t nheaders;
} vg_source_config_t;

/* A notification target declared in the config (`notifiers = { name = { kind = ..., ... } }`).
 * Unlike a source's, its credentials are plain strings handed to the Lua notify builders:
 * PagerDuty's routing key travels in the event body and a webhook's signing key makes the
 * signature, so neither can be added by C to a finished request (src/lua/lvigil.c). */
typedef struct {
  char *name;
  char *value; /* may come from a secret */
} vg_notifier_header_t;

typedef struct {
  char *name;
  char *kind;        /* pagerduty | slack | webhook */
  char *url;         /* pagerduty: the Events API endpoint (NULL: PagerDuty's); webhook: target */
  char *routing_key; /* pagerduty, secret: the 32-character integration key */
  char *webhook;     /* slack, secret: the incoming-webhook URL (its path is the credential) */
  char *secret;      /* webhook, secret, optional: the HMAC-SHA256 signing key */
  char *channel;     /* slack, optional */
  char *username;    /* slack, optional */
  vg_notifier_header_t *headers; /* webhook, optional: extra request headers */
  size_t nheaders;
} vg_notifier_config_t;

typedef struct vg_config {
  char *path; /* the file it came from, or NULL for defaults */
  char *listen;
  char *store;
  char *policies;
  char *repl_socket;
  char *executor_mode; /* observe | dry-run | enforce */
  char *token;         /* secret; NULL when unset */
  int log_level;
  vg_limits_t limits;
  int error_budget;         /* failed runs ... */
  uint64_t error_window_ms; /* ... within this window disable a policy */
  uint64_t drain_ms;
  uint64_t debounce_ms;
  uint64_t snapshot_ms;      /* how often learned state (detectors, analysers) is written */
  uint64_t watchdog_ms;      /* loop stall that stops the running policy */
  uint64_t watchdog_hard_ms; /* stall that ends the process (stuck in C) */

  /* intake = { ... } */
  uint64_t max_body;           /* bytes of one request body */
  uint64_t resolve_timeout_ms; /* endsAt of a v2 alert sent without one: now + this */
  bool auth_reads;             /* the token also guards GET endpoints */
  uint64_t header_timeout_ms, body_timeout_ms, idle_timeout_ms;
  uint32_t max_connections;
  uint32_t max_policy_tasks; /* per policy, beyond which alerts are dropped (counted) */

  /* retention = { ... } */
  uint64_t retention_ms;    /* resolved alerts and closed incidents older than this go */
  uint64_t max_alerts;      /* rows kept at most */
  uint64_t reopen_grace_ms; /* a resolved incident reopens when an alert fires within this */

  vg_source_config_t *sources;
  size_t nsources;
  vg_notifier_config_t *notifiers;
  size_t nnotifiers;

  /* executor = { ... } and guard = { ... }: modes, approvals, the kill switch file and the
     guard rails (executor.opts.mode mirrors executor_mode) */
  vg_executor_opts_t executor;
  char *kill_switch_file;
  char *storm_label;            /* NULL: the executor's default ("namespace") */
  vg_guard_type_t *guard_types; /* their names are owned here */
  size_t nguard_types;

  /* the sandboxed runner (engine/exec.h), read by vg_config_exec_opts */
  char **exec_allow;
  size_t nexec_allow;
  char **exec_env; /* names passed through from the daemon's environment */
  size_t nexec_env;
  char *exec_helper, *exec_scratch, *exec_user, *exec_landlock, *exec_seccomp;
  uint64_t exec_timeout_ms, exec_grace_ms;
  uint64_t exec_max_output;
  bool exec_server; /* executor.server: runs forked by a long-lived exec server */
  uint16_t *exec_ports;
  size_t nexec_ports;
  uint64_t rl_cpu_s, rl_as, rl_nofile, rl_fsize, rl_nproc; /* 0: the runner's default */

  /* logs = { allow = {...} }: path prefixes vigil.logs.tail may read (NULL-terminated) */
  char **logs_allow;
  size_t nlogs_allow;

  /* logs = { analysers = { name = {...} } }: log analysers declared with their options */
  struct vg_log_analyser_config *log_analysers;
  size_t nlog_analysers;
} vg_config_t;

/* Fills `cfg` with the defaults. */
void vg_config_defaults(vg_config_t *cfg);

/* Loads `path` over the defaults. Returns 0, or -1 with "file:line: message" in err. */
int vg_config_load(vg_config_t *cfg, const char *path, char *err, size_t errlen);

void vg_config_free(vg_config_t *cfg);

/* Gives each declared source its policy and headers in the runtime's registry. Returns 0, or
 * -1 when out of memory. */
int vg_config_apply_sources(const vg_config_t *cfg, struct vg_sources *ss);

/* The executor's options (kill switch file, guard types) point into cfg. */
void vg_config_executor_opts(const vg_config_t *cfg, vg_executor_opts_t *o);

/* Parses a rate: "30/h", "5/10m", "1/30s"; "0" or "unlimited" is no limit. Returns 0, or -1
 * with a message in err. */
int vg_rate_parse(const char *text, vg_rate_t *out, char *err, size_t errlen);

/* The declared source called `name`, or NULL. */
const vg_source_config_t *vg_config_source(const vg_config_t *cfg, const char *name);

/* The declared notifier called `name`, or NULL (also when cfg is NULL). */
const vg_notifier_config_t *vg_config_notifier(const vg_config_t *cfg, const char *name);

/* A log analyser declared in the config: its name and checked options. */
typedef struct vg_log_analyser_config {
  char *name;
  vg_logan_opts_t opts;
  char *tail; /* a file the daemon follows into this analyser (src/core/logfeed.c), or NULL */
} vg_log_analyser_config_t;

/* Creates the declared log analysers missing from `r` (those present keep their options).
 * Returns how many were created; one that cannot be (registry full, out of memory) is logged. */
size_t vg_config_apply_logs(const vg_config_t *cfg, struct vg_logan_registry *r);

/* The prefixes of logs.allow, NULL-terminated; an empty list when cfg is NULL or has none. */
const char *const *vg_config_logs_allow(const vg_config_t *cfg);
