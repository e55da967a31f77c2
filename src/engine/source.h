/* A data source's request policy, in C so a dead or slow backend costs nothing: a concurrency
 * limit (requests beyond it wait in a bounded queue), retries of idempotent requests with
 * exponential backoff and jitter (connection errors, 5xx, 429 honouring Retry-After), and a
 * circuit breaker (open after N consecutive failures: requests fail at once; after a
 * cool-down one probe goes through, and its outcome closes or re-opens the breaker).
 * Sources are named and live in a registry owned by the runtime, so their state survives
 * policy reloads. Pure C over httpc.h and libuv. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/httpc.h"

typedef struct vg_source vg_source_t;
typedef struct vg_source_req vg_source_req_t;
typedef struct vg_sources vg_sources_t;

typedef struct {
  uint32_t max_concurrency;     /* requests in flight at once (8) */
  uint32_t max_queue;           /* waiting beyond that; more fail with EBUSY (1000) */
  uint32_t retries;             /* extra attempts for idempotent requests (2) */
  uint64_t backoff_ms;          /* first retry delay, doubled each time, +-50% jitter (100) */
  uint64_t backoff_max_ms;      /* cap of a delay, Retry-After included (5000) */
  uint32_t breaker_failures;    /* consecutive failed attempts that open the breaker (5) */
  uint64_t breaker_cooldown_ms; /* open this long before a probe (30000) */
} vg_source_opts_t;

void vg_source_opts_default(vg_source_opts_t *o);

typedef enum { VG_BREAKER_CLOSED, VG_BREAKER_OPEN, VG_BREAKER_HALF_OPEN } vg_breaker_t;

typedef struct {
  vg_breaker_t breaker;
  uint32_t consecutive_failures;
  uint32_t inflight, queued;
  uint64_t requests;        /* asked for */
  uint64_t ok, failures;    /* final outcomes (after retries); a 4xx answer is ok */
  uint64_t short_circuited; /* refused: breaker open */
  uint64_t rejected;        /* refused: queue full, or could not start */
  uint64_t cancelled;       /* abandoned by the caller */
  uint64_t attempts, retries;
} vg_source_stats_t;

vg_sources_t *vg_sources_new(uv_loop_t *loop, vg_httpc_t *httpc);
/* Cancels every request (no callback runs) and frees the sources once their timers closed. */
void vg_sources_free(vg_sources_t *ss);

/* The source called `name`, created with `o` the first time (later calls return the same
 * one, with its state; `o` then updates its settings). NULL when out of memory. */
vg_source_t *vg_sources_get(vg_sources_t *ss, const char *name, const vg_source_opts_t *o);

/* Fixes a source's policy and extra request headers (from the config: tokens and API keys
 * stay in C, never reach Lua): later vg_sources_get calls no longer change its policy.
 * Returns 0, or -1 when out of memory. */
int vg_source_configure(vg_source_t *s,
                        const vg_source_opts_t *o,
                        const char *const *headers,
                        size_t nheaders);

/* Visits every source (for /metrics and the REPL). */
void vg_sources_each(vg_sources_t *ss,
                     void (*fn)(void *ud, const char *name, const vg_source_stats_t *st),
                     void *ud);

/* Sends a request under the source's policy; `done` runs once with the final outcome (after
 * retries), never for a cancelled request. Returns NULL with "ECIRCUIT: ..." or "EBUSY: ..."
 * in err when it is refused at once. */
vg_source_req_t *vg_source_request(vg_source_t *s,
                                   const vg_httpc_opts_t *o,
                                   bool idempotent,
                                   vg_httpc_done_fn done,
                                   void *ud,
                                   char *err,
                                   size_t errlen);
void vg_source_cancel(vg_source_req_t *r);

void vg_source_stats(const vg_source_t *s, vg_source_stats_t *out);
const char *vg_breaker_name(vg_breaker_t b);
