/* Periodic jobs owned by a VM: `vigil.every` and a policy's `every` table. Each tick runs the
 * job as a new task; a tick that comes while the previous run is still going is skipped and
 * counted, so a slow job never piles up. Jobs stop with their VM (reload, disable, shutdown). */
#pragma once

#include <lua.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/vm.h"

typedef struct vg_every vg_every_t;

/* What a Lua handle holds: the job while it runs, its final counts after it stopped. */
typedef struct {
  vg_every_t *e;
  uint64_t runs, skipped, failures;
} vg_every_handle_t;

struct vg_every {
  vg_vm_t *vm;
  struct vg_timer *timer;
  int fn_ref;
  char name[64];
  uint64_t interval_ms;
  vg_task_t *running;
  uint64_t runs, skipped, failures;
  vg_every_handle_t *handle; /* the Lua handle, told when we go */
  vg_every_t *next;
};

/* Starts a job running the function at the top of L (popped) every interval_ms, first after
 * first_ms. Returns NULL (function popped) on allocation failure. [-1, +0, m] */
vg_every_t *vg_every_start(
    vg_vm_t *vm, lua_State *L, const char *name, uint64_t interval_ms, uint64_t first_ms);

/* Stops the job; a run in progress finishes. Frees the job. */
void vg_every_stop(vg_every_t *e);
void vg_every_stop_all(vg_vm_t *vm);
