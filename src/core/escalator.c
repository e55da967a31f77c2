/* The escalator: fires persisted escalation timers (DESIGN.md G4). Once a tick it asks the
 * store for the timers that are due (engine/memory.h "escalations_due", which marks them
 * "due" and cancels those of incidents no longer open), runs each in its policy's VM
 * (lua/vigil/pipeline.lua fire_due: the notification goes through the executor with the
 * timer's own idempotency key) and records the outcome ("escalation_done").
 *
 * Fire once: a timer is "due" from the moment it is taken until its outcome is committed. A
 * run that stops in between leaves it "due"; the next start takes it again, and the
 * executor's claim on the key answers "duplicate" instead of notifying twice. Catch-up after
 * downtime: an overdue timer fires once, however late, and its lateness is on the timeline. */
#include "core/escalator.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/policy.h"
#include "core/task.h"
#include "engine/memory.h"

#define MAX_INFLIGHT 64

typedef struct firing firing_t;

struct vg_escalator {
  vg_runtime_t *rt;
  vg_store_t *store;
  vg_timer_t *timer;
  bool asking;     /* an escalations_due call is in flight */
  bool stopping;   /* no new work; free once nothing is in flight */
  int outstanding; /* store calls and tasks not yet answered */
  int64_t inflight[MAX_INFLIGHT];
  uint64_t fired, failed;
};

struct firing {
  vg_escalator_t *e;
  int64_t id, incident;
  char policy[96];
};

static void maybe_free(vg_escalator_t *e)
{
  if (e->stopping && e->outstanding == 0) {
    free(e);
  }
}

static bool inflight_has(vg_escalator_t *e, int64_t id)
{
  for (int i = 0; i < MAX_INFLIGHT; i++) {
    if (e->inflight[i] == id) {
      return true;
    }
  }
  return false;
}

static bool inflight_add(vg_escalator_t *e, int64_t id)
{
  for (int i = 0; i < MAX_INFLIGHT; i++) {
    if (e->inflight[i] == 0) {
      e->inflight[i] = id;
      return true;
    }
  }
  return false; /* full: it stays due and is taken at a later tick */
}

static void inflight_remove(vg_escalator_t *e, int64_t id)
{
  for (int i = 0; i < MAX_INFLIGHT; i++) {
    if (e->inflight[i] == id) {
      e->inflight[i] = 0;
    }
  }
}

static void done_recorded(void *ud, int status, const char *err, const char *json, size_t len)
{
  (void)json, (void)len;
  firing_t *f = ud;
  vg_escalator_t *e = f->e;
  if (status < 0) {
    char id[24];
    snprintf(id, sizeof id, "%" PRId64, f->id);
    vg_log(VG_LOG_ERROR, "escalation outcome not recorded: it fires again at the next start",
           "escalation", id, "error", err, NULL);
  }
  inflight_remove(e, f->id);
  free(f);
  e->outstanding--;
  maybe_free(e);
}

/* Records the outcome; `f` is freed once the store has answered. */
static void record(firing_t *f, const char *state, int64_t action_id, const char *note)
{
  vg_escalator_t *e = f->e;
  strcmp(state, "fired") == 0 ? e->fired++ : e->failed++;
  char id[24], inc[24];
  snprintf(id, sizeof id, "%" PRId64, f->id);
  snprintf(inc, sizeof inc, "%" PRId64, f->incident);
  vg_log(strcmp(state, "fired") == 0 ? VG_LOG_INFO : VG_LOG_WARN, "escalation", "escalation", id,
         "incident", inc, "policy", f->policy, "state", state, "note", note ? note : "", NULL);
  json_t *args = json_pack("{s:I, s:s}", "id", (json_int_t)f->id, "state", state);
  if (args != NULL && action_id > 0) {
    json_object_set_new(args, "action", json_integer(action_id));
  }
  if (args != NULL && note != NULL) {
    json_object_set_new(args, "note", json_string(note));
  }
  char *text = args != NULL ? json_dumps(args, JSON_COMPACT) : NULL;
  json_decref(args);
  if (text == NULL || vg_memory_call(e->store, "escalation_done", text, done_recorded, f) < 0) {
    done_recorded(f, -1, "cannot record the outcome", NULL, 0);
  }
  free(text);
}

static void task_done(vg_task_t *t, void *ud)
{
  firing_t *f = ud;
  vg_escalator_t *e = f->e;
  if (t->status == VG_TASK_CANCELLED && (e->stopping || e->rt->stopping)) {
    done_recorded(f, 0, NULL, NULL, 0); /* shutting down: it stays due for the next start */
    return;
  }
  if (t->status != VG_TASK_OK) {
    record(f, "failed", 0, t->error != NULL ? t->error : "the escalation task failed");
    return;
  }
  lua_State *co = t->co;
  int base = lua_gettop(co) - t->nresults;
  const char *state = t->nresults >= 1 ? lua_tostring(co, base + 1) : NULL;
  int64_t action = t->nresults >= 2 ? (int64_t)lua_tointeger(co, base + 2) : 0;
  const char *note = t->nresults >= 3 ? lua_tostring(co, base + 3) : NULL;
  bool fired = state != NULL && strcmp(state, "fired") == 0;
  record(f, fired ? "fired" : "failed", action, note);
}

static void fire(vg_escalator_t *e, json_t *row)
{
  json_int_t id = json_integer_value(json_object_get(row, "id"));
  const char *policy = json_string_value(json_object_get(row, "policy"));
  if (id <= 0 || policy == NULL || inflight_has(e, id) || !inflight_add(e, id)) {
    return;
  }
  firing_t *f = calloc(1, sizeof *f);
  if (f == NULL) {
    inflight_remove(e, id);
    return;
  }
  f->e = e;
  f->id = id;
  f->incident = json_integer_value(json_object_get(row, "incident"));
  snprintf(f->policy, sizeof f->policy, "%s", policy);
  e->outstanding++;
  vg_policy_t *p = e->rt->policies != NULL ? vg_policies_find(e->rt->policies, policy) : NULL;
  char *text = json_dumps(row, JSON_COMPACT);
  char name[96];
  snprintf(name, sizeof name, "escalate:%" PRId64, (int64_t)id);
  vg_task_opts_t opts = { .name = name, .label = "escalation", .done = task_done, .done_ud = f };
  vg_task_t *t = p != NULL && text != NULL
                     ? vg_policy_call(p, "vigil.pipeline", "fire_due", text, &opts)
                     : NULL;
  free(text);
  if (t == NULL) {
    char note[160];
    snprintf(note, sizeof note, "policy '%s' is %s", policy,
             p == NULL ? "not loaded" : "disabled or cannot run");
    record(f, "failed", 0, note);
  }
}

static void due_answered(void *ud, int status, const char *err, const char *json, size_t len)
{
  vg_escalator_t *e = ud;
  e->asking = false;
  e->outstanding--;
  if (status < 0) {
    vg_log(VG_LOG_WARN, "cannot read due escalations", "error", err, NULL);
  } else if (!e->stopping) {
    json_t *doc = json_loadb(json, len, 0, NULL);
    json_t *due = json_object_get(doc, "due");
    size_t i;
    json_t *row;
    json_array_foreach(due, i, row)
    {
      fire(e, row);
    }
    json_decref(doc);
  }
  maybe_free(e);
}

static void tick(vg_timer_t *timer, void *ud)
{
  (void)timer;
  vg_escalator_t *e = ud;
  if (e->asking || e->stopping || e->rt->stopping) {
    return;
  }
  char args[64];
  snprintf(args, sizeof args, "{\"now\":%" PRId64 "}", (int64_t)(vg_clock_now(e->rt) * 1000.0));
  e->asking = true;
  e->outstanding++;
  if (vg_memory_call(e->store, "escalations_due", args, due_answered, e) < 0) {
    e->asking = false;
    e->outstanding--;
  }
}

vg_escalator_t *vg_escalator_start(vg_runtime_t *rt, vg_store_t *store, uint64_t tick_ms)
{
  vg_escalator_t *e = calloc(1, sizeof *e);
  if (e == NULL) {
    return NULL;
  }
  e->rt = rt;
  e->store = store;
  e->timer = vg_timer_start(rt, tick_ms, tick_ms, tick, e);
  if (e->timer == NULL) {
    free(e);
    return NULL;
  }
  return e;
}

void vg_escalator_stats(const vg_escalator_t *e, uint64_t *fired, uint64_t *failed)
{
  *fired = e != NULL ? e->fired : 0;
  *failed = e != NULL ? e->failed : 0;
}

void vg_escalator_stop(vg_escalator_t *e)
{
  if (e == NULL) {
    return;
  }
  vg_timer_stop(e->timer);
  e->stopping = true;
  maybe_free(e);
}
