/* Alert intake and vigil's own HTTP API, on the engines' HTTP server and store: routing,
 * authentication, decoding, the durable commit before any 2xx (G1), dispatch of new and
 * changed alerts to the policies, incidents, health and /metrics. docs/intake.md is the
 * user-facing description. */
#pragma once

#include <stdbool.h>

#include "core/policy.h"
#include "core/runtime.h"
#include "engine/httpd.h"
#include "engine/store.h"

typedef struct vg_intake vg_intake_t;

typedef struct {
  const char *listen;     /* "127.0.0.1:9095" ("host:port"; port 0 = any, for tests) */
  const char *token;      /* bearer token for writes (and reads when auth_reads); NULL: none */
  bool auth_reads;        /* the token also guards GET endpoints (not /healthz, /readyz) */
  double resolve_timeout; /* seconds: endsAt of a v2 alert sent without one (300) */
  vg_httpd_limits_t http;
} vg_intake_opts_t;

void vg_intake_opts_default(vg_intake_opts_t *o);

/* Starts listening. Returns NULL with a message in err ("127.0.0.1:9095: address already in
 * use"). */
vg_intake_t *vg_intake_start(
    vg_runtime_t *rt, vg_store_t *store, const vg_intake_opts_t *o, char *err, size_t errlen);

/* The port listened on. */
int vg_intake_port(const vg_intake_t *in);

/* Stops accepting; requests in flight still get their answer. Tells the store about the
 * decisions not yet flushed, so call it before the store closes. NULL is a no-op. */
void vg_intake_stop(vg_intake_t *in);

/* Hands one stored (new or changed) alert to the policies as the intake does after a commit:
 * storm accounting, local suppressions, then every matching policy. Returns 1 when it was
 * dispatched (then `done`, if given, runs once when the runs it started have ended, see
 * vg_policies_dispatch), 0 when it was decided against (suppressed, no policies), -1 when
 * nothing was decided (the runtime is stopping: the alert stays undecided for the next start).
 * `done` does not run unless 1 is returned. */
int vg_intake_dispatch(vg_runtime_t *rt,
                       const vg_store_alert_t *a,
                       int64_t incident_id,
                       vg_dispatch_done_fn done,
                       void *ud);

/* Decision replay, at start-up once the policies are loaded and before vg_intake_start: every
 * alert the store still holds undecided (accepted, and a crash came before its runs had ended
 * and that was recorded) is dispatched as by vg_intake_dispatch, then marked decided (without
 * waiting for its runs). Policies see such an alert again when the crash cut a run short, or
 * came after the runs ended but before the store heard of it (within about a second): their
 * decisions must be idempotent (actions are, by their keys). `done` runs once on the loop with
 * how many were replayed, status 0, or < 0 with a message.
 * Returns 0, or -EINVAL/-ENOMEM/-EBUSY without calling `done`. */
typedef void (*vg_intake_replay_fn)(void *ud, int status, const char *err, size_t replayed);
int vg_intake_replay(vg_runtime_t *rt, vg_store_t *store, vg_intake_replay_fn done, void *ud);
