/* Watchdog thread. It reads only atomics published by the loop (heartbeat, running VM and
 * thread) and calls lua_sethook, which Lua documents as safe to call asynchronously. */
#include "core/watchdog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "core/log.h"
#include "core/policy.h"

struct vg_watchdog {
  vg_runtime_t *rt;
  uv_thread_t thread;
  uv_mutex_t lock;
  uv_cond_t wake;
  bool stop;
  uint64_t soft_ms, hard_ms;
};

static void hard_stall(vg_watchdog_t *wd, vg_vm_t *vm, uint64_t stalled_ms)
{
  char ms[32];
  snprintf(ms, sizeof(ms), "%llu", (unsigned long long)stalled_ms);
  vg_policy_t *p = vm->owner;
  vg_log(VG_LOG_ERROR, "event loop stuck in C code past the hard limit: exiting", "vm", vm->name,
         "stalled_ms", ms, NULL);
  if (p != NULL && p->set != NULL && p->set->quarantine_path != NULL) {
    FILE *f = fopen(p->set->quarantine_path, "a");
    if (f != NULL) {
      fprintf(f, "%016llx %s\n", (unsigned long long)p->hash, p->name);
      fclose(f);
    }
  }
  (void)wd;
  _exit(70); /* EX_SOFTWARE: the supervisor restarts us without the quarantined policy */
}

static void watch(void *arg)
{
  vg_watchdog_t *wd = arg;
  uint64_t seen_beat = 0, since = 0;
  vg_vm_t *seen_vm = NULL;
  bool interrupted = false;
  uv_mutex_lock(&wd->lock);
  while (!wd->stop) {
    uv_cond_timedwait(&wd->wake, &wd->lock, 50 * 1000000ULL);
    if (wd->stop) {
      break;
    }
    uint64_t beat = atomic_load(&wd->rt->heartbeat);
    vg_vm_t *vm = atomic_load(&wd->rt->running_vm);
    uint64_t now = uv_hrtime() / 1000000ULL;
    if (vm == NULL || beat != seen_beat || vm != seen_vm) {
      seen_beat = beat;
      seen_vm = vm;
      since = now;
      interrupted = false;
      continue;
    }
    uint64_t stalled = now - since;
    if (!interrupted && stalled >= wd->soft_ms) {
      lua_State *co = atomic_load(&wd->rt->running_co);
      char ms[32];
      snprintf(ms, sizeof(ms), "%llu", (unsigned long long)stalled);
      vg_log(VG_LOG_ERROR, "event loop stalled by policy code: stopping it", "vm", vm->name,
             "stalled_ms", ms, NULL);
      if (co != NULL) {
        vg_vm_interrupt(vm, co, VG_KILL_WATCHDOG);
      }
      interrupted = true;
    } else if (stalled >= wd->hard_ms) {
      hard_stall(wd, vm, stalled);
    }
  }
  uv_mutex_unlock(&wd->lock);
}

vg_watchdog_t *vg_watchdog_start(vg_runtime_t *rt, uint64_t soft_ms, uint64_t hard_ms)
{
  vg_watchdog_t *wd = calloc(1, sizeof(*wd));
  if (wd == NULL) {
    return NULL;
  }
  wd->rt = rt;
  wd->soft_ms = soft_ms;
  wd->hard_ms = hard_ms > soft_ms ? hard_ms : soft_ms * 2;
  uv_mutex_init(&wd->lock);
  uv_cond_init(&wd->wake);
  if (uv_thread_create(&wd->thread, watch, wd) != 0) {
    uv_cond_destroy(&wd->wake);
    uv_mutex_destroy(&wd->lock);
    free(wd);
    return NULL;
  }
  return wd;
}

void vg_watchdog_stop(vg_watchdog_t *wd)
{
  if (wd == NULL) {
    return;
  }
  uv_mutex_lock(&wd->lock);
  wd->stop = true;
  uv_cond_signal(&wd->wake);
  uv_mutex_unlock(&wd->lock);
  uv_thread_join(&wd->thread);
  uv_cond_destroy(&wd->wake);
  uv_mutex_destroy(&wd->lock);
  free(wd);
}
