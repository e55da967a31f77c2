/* The action ledger: what vigil decided and did, in the store (DESIGN.md G3, G5).
 *
 *   actions      one row per decision, with its state machine:
 *                  observed | dry-run | refused                       (nothing ran)
 *                  awaiting_approval -> approved -> claimed | denied | expired
 *                  claimed -> done | failed                            (it ran)
 *                  claimed -> unknown (a restart found it claimed: it may have run)
 *                  unknown -> done | failed                            (an operator reconciled)
 *                `claim_key` holds the idempotency key while it is taken, so a second claim
 *                of the same key finds the first row instead of running again.
 *   audit        append-only events (a trigger refuses UPDATE): who, what, why, outcome.
 *   guard_state  the guard rails' persisted entries (engine/guard.h), written in the same
 *                transaction as the claim or outcome they belong to.
 *   settings     the kill switch and other operator switches.
 *
 * Every write goes through the store's writer (vg_store_call) and is committed before its
 * callback runs, so a claim is durable before the action starts. Pure C on the store; no Lua.
 * Times are ms since the epoch. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/store.h"

/* One guard-state entry to write with an operation (value < 0: delete it). */
typedef struct {
  const char *name;
  double value;
  int64_t at;
} vg_ledger_entry_t;

/* What an action is, as recorded. Strings are copied. */
typedef struct {
  const char *key; /* idempotency key */
  const char *policy;
  const char *policy_version; /* may be NULL */
  const char *subject;        /* incident/alert identity; may be NULL */
  int64_t incident_id;        /* 0: none */
  const char *type;
  const char *target;
  const char *scope;   /* may be NULL */
  const char *mode;    /* observe | dry-run | enforce */
  const char *why;     /* the policy's reason; may be NULL */
  const char *command; /* JSON: the exact argv or request, secrets redacted */
  const char *who;     /* "policy:<name>" or an operator */
} vg_ledger_action_t;

/* The outcome of a run. */
typedef struct {
  bool ok;
  int attempts;
  int exit_code;      /* -1: none */
  int signal;         /* 0: none */
  int http_status;    /* 0: none */
  const char *output; /* excerpt; may be NULL */
  const char *error;  /* "ETIMEDOUT: ..." ; may be NULL */
  int64_t duration_ms;
  const char *detail; /* audit text for the attempts; may be NULL */
} vg_ledger_outcome_t;

/* What a write reports back, on the loop. */
typedef struct {
  int status; /* 0, or < 0 when nothing was committed (err says why) */
  const char *err;
  int64_t id;     /* the action row */
  char state[24]; /* its state after the operation */
  bool duplicate; /* claim: the key was already taken by row `id` */
  /* a duplicate's recorded outcome */
  int exit_code, signal, http_status;
  const char *output, *error;
  /* vg_ledger_recover: rows marked unknown and approvals expired */
  int64_t unknown, expired;
} vg_ledger_result_t;

typedef void (*vg_ledger_done_fn)(void *ud, const vg_ledger_result_t *r);

/* Records a decision where nothing runs: state "observed", "dry-run" or "refused", with the
 * audit text `detail`. */
int vg_ledger_record(vg_store_t *s,
                     const vg_ledger_action_t *a,
                     const char *state,
                     const char *detail,
                     vg_ledger_done_fn done,
                     void *ud);

/* Takes the idempotency key: a new row in `state` ("claimed", or "awaiting_approval" with
 * `expires_at`) with the guard entries, committed before `done` runs. When the key is
 * already held the result is `duplicate` with the earlier row (nothing is written), except a
 * row in "approved" state claimed with "claimed", which moves on to "claimed". */
int vg_ledger_claim(vg_store_t *s,
                    const vg_ledger_action_t *a,
                    const char *state,
                    int64_t expires_at,
                    const vg_ledger_entry_t *entries,
                    size_t nentries,
                    vg_ledger_done_fn done,
                    void *ud);

/* Records a claimed action's outcome ("done" or "failed") and the guard entries. */
int vg_ledger_finish(vg_store_t *s,
                     int64_t id,
                     const vg_ledger_outcome_t *o,
                     const vg_ledger_entry_t *entries,
                     size_t nentries,
                     vg_ledger_done_fn done,
                     void *ud);

/* An operator's or the engine's decision on a row:
 *   "approved" | "denied" | "expired"   from awaiting_approval (expired frees the key);
 *   "done" | "failed"                   from unknown (reconciliation);
 *   "refused"                           from approved (re-checked and no longer allowed;
 *                                       frees the key).
 * A row in another state gives status -EINVAL ("action 7 is done"); a missing one -ENOENT. */
int vg_ledger_decide(vg_store_t *s,
                     int64_t id,
                     const char *to,
                     const char *who,
                     const char *comment,
                     vg_ledger_done_fn done,
                     void *ud);

/* At start-up: every row still "claimed" becomes "unknown" (it may have run: never retried
 * blind), awaiting or approved rows expire, healing runs still "running" become
 * "interrupted"; counts in the result. */
int vg_ledger_recover(vg_store_t *s, vg_ledger_done_fn done, void *ud);

/* Sets an operator switch (e.g. "kill_switch" = "on"), with an audit event. */
int vg_ledger_set(vg_store_t *s,
                  const char *name,
                  const char *value,
                  const char *who,
                  const char *comment,
                  vg_ledger_done_fn done,
                  void *ud);

/* ---- healing runs and local suppressions ---- */

/* A healing run starts ("running"); res.id is its row. */
int vg_ledger_heal_begin(vg_store_t *s,
                         const char *policy,
                         const char *name,
                         const char *subject,
                         int64_t incident_id,
                         vg_ledger_done_fn done,
                         void *ud);

/* It ends: status "succeeded" or "failed", its steps as a JSON array, the error if any. */
int vg_ledger_heal_end(vg_store_t *s,
                       int64_t id,
                       const char *status,
                       const char *steps_json,
                       const char *error,
                       vg_ledger_done_fn done,
                       void *ud);

/* {"healings":[...]} newest first (id 0), or one healing run ({"id":..,"steps":[..],...};
 * -ENOENT when there is none). */
int vg_ledger_healings(vg_store_t *s, int64_t id, size_t limit, vg_store_json_fn done, void *ud);

/* A local suppression: alerts matching `matchers` (labelmatch syntax) are not handed to the
 * policies until `until` (ms). res.id is its row. */
int vg_ledger_suppress(vg_store_t *s,
                       const char *matchers,
                       int64_t until,
                       const char *reason,
                       const char *who,
                       vg_ledger_done_fn done,
                       void *ud);

/* ---- reading (thread pool) ---- */

typedef enum {
  VG_LEDGER_GUARD,       /* name, value, at: a guard entry */
  VG_LEDGER_SETTING,     /* name, text, at */
  VG_LEDGER_SUPPRESSION, /* name = matchers, text = reason, value = id, at = until */
} vg_ledger_item_t;

/* Loads the guard entries, settings and suppressions still in force: fn is called on the loop
 * for each, then done. */
typedef void (*vg_ledger_load_fn)(
    void *ud, vg_ledger_item_t kind, const char *name, const char *text, double value, int64_t at);
int vg_ledger_load(vg_store_t *s, vg_ledger_load_fn each, vg_ledger_done_fn done, void *ud);

typedef struct {
  const char *state;   /* NULL: all */
  const char *policy;  /* NULL: all */
  int64_t incident_id; /* 0: all */
  size_t limit;        /* 0: 100 */
  int64_t before_id;   /* paging: rows with id < this; 0: newest */
} vg_ledger_query_t;

/* {"actions":[{"id":..,"key":..,"policy":..,"type":..,"target":..,"mode":..,"state":..,
 *   "why":..,"command":<json>,"attempts":..,"exitCode":..,"httpStatus":..,"output":..,
 *   "error":..,"createdAt":..,"finishedAt":..,"durationMs":..}, ...]} newest first. */
int vg_ledger_list(vg_store_t *s, const vg_ledger_query_t *q, vg_store_json_fn done, void *ud);

/* One action with "audit":[{"at":..,"event":..,"who":..,"detail":..}, ...] oldest first;
 * -ENOENT when there is none. */
int vg_ledger_get(vg_store_t *s, int64_t id, vg_store_json_fn done, void *ud);
