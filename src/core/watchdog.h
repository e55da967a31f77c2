/* The last-resort watchdog: a thread that notices the loop stuck in one piece of policy code.
 * Past the soft limit it stops that code at its next instruction (the policy is quarantined
 * when the task ends); past the hard limit, when the loop is stuck in C where no hook can
 * reach, it records the policy in the quarantine file and ends the process so the supervisor
 * restarts it without that policy. */
#pragma once

#include <stdint.h>

#include "core/runtime.h"

vg_watchdog_t *vg_watchdog_start(vg_runtime_t *rt, uint64_t soft_ms, uint64_t hard_ms);
void vg_watchdog_stop(vg_watchdog_t *wd);
