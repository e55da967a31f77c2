/* Real timers are uv_timers; virtual timers live in a list sorted by due time that
 * vg_clock_jump() walks. Both share one handle type so callers never care which is in use. */
#include "core/clock.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "core/runtime.h"

struct vg_timer {
  uv_timer_t uv; /* real clock only */
  vg_runtime_t *rt;
  vg_timer_fn fn;
  void *ud;
  double due_ms; /* virtual clock only */
  uint64_t repeat_ms;
  bool firing, stopped, linked;
  vg_timer_t *next;
};

static void real_timer_cb(uv_timer_t *h)
{
  vg_timer_t *t = h->data;
  t->firing = true;
  t->fn(t, t->ud);
  t->firing = false;
  if (t->stopped) {
    uv_close((uv_handle_t *)&t->uv, (uv_close_cb)free);
  }
}

static void vlink(vg_runtime_t *rt, vg_timer_t *t)
{
  vg_timer_t **pp = &rt->vtimers;
  while (*pp != NULL && (*pp)->due_ms <= t->due_ms) { /* FIFO among equal due times */
    pp = &(*pp)->next;
  }
  t->next = *pp;
  *pp = t;
  t->linked = true;
}

static void vunlink(vg_runtime_t *rt, vg_timer_t *t)
{
  for (vg_timer_t **pp = &rt->vtimers; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == t) {
      *pp = t->next;
      t->linked = false;
      return;
    }
  }
}

vg_timer_t *vg_timer_start(
    vg_runtime_t *rt, uint64_t ms, uint64_t repeat_ms, vg_timer_fn fn, void *ud)
{
  vg_timer_t *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    return NULL;
  }
  t->rt = rt;
  t->fn = fn;
  t->ud = ud;
  t->repeat_ms = repeat_ms;
  if (rt->virtual_clock) {
    t->due_ms = rt->vclock_ms + (double)ms;
    vlink(rt, t);
    return t;
  }
  uv_timer_init(rt->loop, &t->uv);
  t->uv.data = t;
  uv_timer_start(&t->uv, real_timer_cb, ms, repeat_ms);
  return t;
}

void vg_timer_stop(vg_timer_t *t)
{
  if (t == NULL || t->stopped) {
    return;
  }
  t->stopped = true;
  if (t->rt->virtual_clock) {
    if (t->linked) {
      vunlink(t->rt, t);
    }
    if (!t->firing) {
      free(t);
    }
    return;
  }
  uv_timer_stop(&t->uv);
  if (!t->firing) {
    uv_close((uv_handle_t *)&t->uv, (uv_close_cb)free);
  }
}

double vg_clock_now(vg_runtime_t *rt)
{
  if (rt->virtual_clock) {
    return rt->vclock_ms / 1000.0;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1000.0;
}

uint64_t vg_clock_mono_ns(void)
{
  return uv_hrtime();
}

void vg_clock_use_virtual(vg_runtime_t *rt, double epoch_s)
{
  rt->virtual_clock = true;
  rt->vclock_ms = epoch_s * 1000.0;
}

bool vg_clock_is_virtual(const vg_runtime_t *rt)
{
  return rt->virtual_clock;
}

void vg_clock_set(vg_runtime_t *rt, double epoch_s)
{
  /* Like setting a machine's date: pending timers keep their remaining delay (the order of
   * the list does not change), so a spec can move to any date without firing everything. */
  double delta = epoch_s * 1000.0 - rt->vclock_ms;
  for (vg_timer_t *t = rt->vtimers; t != NULL; t = t->next) {
    t->due_ms += delta;
  }
  rt->vclock_ms = epoch_s * 1000.0;
}

int vg_clock_pending(const vg_runtime_t *rt)
{
  int n = 0;
  for (const vg_timer_t *t = rt->vtimers; t != NULL; t = t->next) {
    n++;
  }
  return n;
}

static void fire_virtual(vg_runtime_t *rt, vg_timer_t *t)
{
  vunlink(rt, t);
  t->firing = true;
  t->fn(t, t->ud);
  t->firing = false;
  if (t->stopped) {
    free(t);
  } else if (t->repeat_ms != 0) {
    t->due_ms += (double)t->repeat_ms;
    vlink(rt, t);
  }
}

bool vg_clock_jump(vg_runtime_t *rt, double limit_s)
{
  vg_timer_t *t = rt->vtimers;
  if (!rt->virtual_clock || t == NULL) {
    return false;
  }
  if (limit_s >= 0 && t->due_ms > limit_s * 1000.0) {
    return false;
  }
  double due = t->due_ms;
  if (due > rt->vclock_ms) {
    rt->vclock_ms = due;
  }
  /* Everything due at this instant fires together, in FIFO order, before any task runs:
   * a task woken at time T sees every other timer of time T as fired. */
  while ((t = rt->vtimers) != NULL && t->due_ms <= due) {
    fire_virtual(rt, t);
  }
  return true;
}

int64_t vg_duration_parse(const char *text, char *err, size_t errlen)
{
  static const struct {
    const char *unit;
    double ms;
  } units[] = {
    { "ms", 1 },       { "s", 1000 },      { "m", 60000 }, { "h", 3600000 },
    { "d", 86400000 }, { "w", 604800000 }, { NULL, 0 },
  };
  const char *p = text;
  double total = 0;
  bool any = false;
  while (*p != '\0') {
    char *end;
    if (!isdigit((unsigned char)*p) && *p != '.') {
      break;
    }
    double v = strtod(p, &end);
    if (end == p) {
      break;
    }
    p = end;
    size_t ulen = 0;
    while (isalpha((unsigned char)p[ulen])) {
      ulen++;
    }
    double scale = -1;
    if (ulen == 0 && p[0] == '\0' && !any) {
      scale = 1000; /* a bare number is seconds */
    }
    for (int i = 0; units[i].unit != NULL && ulen > 0; i++) {
      if (strlen(units[i].unit) == ulen && strncmp(p, units[i].unit, ulen) == 0) {
        scale = units[i].ms;
      }
    }
    if (scale < 0) {
      snprintf(err, errlen, "invalid duration \"%s\" (use e.g. 500ms, 30s, 5m, 1h30m, 2d)", text);
      return -1;
    }
    total += v * scale;
    p += ulen;
    any = true;
  }
  if (!any || *p != '\0' || !isfinite(total) || total > 9.0e15) {
    snprintf(err, errlen, "invalid duration \"%s\" (use e.g. 500ms, 30s, 5m, 1h30m, 2d)", text);
    return -1;
  }
  return (int64_t)llround(total);
}
