/* Alert intake and vigil's own HTTP API, on the engines' HTTP server and store: routing,
 * authentication, decoding, the durable commit before any 2xx (G1), dispatch of new and
 * changed alerts to the policies, incidents, health and /metrics. docs/intake.md is the
 * user-facing description. */
#pragma once

#include <stdbool.h>

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

/* Stops accepting; requests in flight still get their answer. NULL is a no-op. */
void vg_intake_stop(vg_intake_t *in);
