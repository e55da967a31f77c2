/* The escalator: fires the persisted escalation timers of contract v2 policies (see
 * escalator.c and lua/vigil/pipeline.lua). Loop thread only. */
#pragma once

#include <stdint.h>

#include "core/runtime.h"
#include "engine/store.h"

typedef struct vg_escalator vg_escalator_t;

/* Checks for due timers every tick_ms (the first check after tick_ms). NULL on OOM. */
vg_escalator_t *vg_escalator_start(vg_runtime_t *rt, vg_store_t *store, uint64_t tick_ms);

/* Stops ticking; calls in flight finish (their outcomes are still recorded) and the escalator
 * frees itself after the last. Call before the store closes. */
void vg_escalator_stop(vg_escalator_t *e);

/* Timers fired and failed since start, for /metrics. */
void vg_escalator_stats(const vg_escalator_t *e, uint64_t *fired, uint64_t *failed);
