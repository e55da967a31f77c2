/* The runtime's clock and timers. The daemon and the REPL run on real time (uv_timer); `vigil
 * test` runs on a virtual clock that jumps straight to the next timer whenever nothing else
 * can make progress, so a spec of a policy that waits five minutes finishes in microseconds. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vg_runtime vg_runtime_t;
typedef struct vg_timer vg_timer_t;
typedef void (*vg_timer_fn)(vg_timer_t *timer, void *ud);

/* Starts a timer that calls fn after `ms`, then every `repeat_ms` if that is non-zero. The
 * owner calls vg_timer_stop() exactly once, also for a one-shot timer that fired (it may do so
 * from inside fn). Returns NULL on allocation failure. */
vg_timer_t *vg_timer_start(
    vg_runtime_t *rt, uint64_t ms, uint64_t repeat_ms, vg_timer_fn fn, void *ud);
void vg_timer_stop(vg_timer_t *timer);

/* Wall-clock time in seconds since the epoch (virtual under `vigil test`). */
double vg_clock_now(vg_runtime_t *rt);

/* Monotonic nanoseconds (the same clock as task start times). */
uint64_t vg_clock_mono_ns(void);

/* Switches the runtime to a virtual clock starting at `epoch_s`. Call before any timer. */
void vg_clock_use_virtual(vg_runtime_t *rt, double epoch_s);
bool vg_clock_is_virtual(const vg_runtime_t *rt);

/* Virtual clock only: sets the time; pending timers keep their remaining delay. */
void vg_clock_set(vg_runtime_t *rt, double epoch_s);

/* Virtual clock only: called when the loop has nothing left to do. Moves time to the next
 * timer due (not past `limit_s` if limit_s >= 0) and fires it. Returns true if it fired one. */
bool vg_clock_jump(vg_runtime_t *rt, double limit_s);

/* Number of pending virtual timers (tests). */
int vg_clock_pending(const vg_runtime_t *rt);

/* Parses a duration: a number of seconds, or a string of number+unit groups ("500ms", "30s",
 * "5m", "1h30m", "2d", "1w"). Returns milliseconds, or -1 with a message in err. */
int64_t vg_duration_parse(const char *text, char *err, size_t errlen);
