/* Guard rails for actions (DESIGN.md G5): token-bucket rate limits per action type and per
 * target, a cooldown per target, concurrency limits per type and per target, a blast-radius
 * cap (distinct targets per scope per window), and a circuit breaker per target (after K
 * failed actions in a row, refuse until a cool-down passes and an operator or a success
 * closes it). Decisions are made here, in C, never by policies.
 *
 * Pure C, no I/O and no clock of its own: every call takes `now_ms` (wall-clock ms since the
 * epoch, so state restored after a restart keeps its meaning). State that must survive a
 * restart is reported as named entries (vg_guard_each) and restored with vg_guard_restore;
 * the action ledger stores them in the same transaction as the claim they belong to. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vg_guard vg_guard_t;

/* A rate: `count` per `per_ms`, bursting up to `count`. count 0: unlimited. */
typedef struct {
  double count;
  uint64_t per_ms;
} vg_rate_t;

typedef struct {
  const char *type; /* action type ("scale", "restart", ...) */
  vg_rate_t rate;
  uint32_t max_concurrent; /* 0: no limit of its own (the default applies) */
} vg_guard_type_t;

typedef struct {
  vg_rate_t type_rate;          /* per action type unless listed in `types`: 30 per hour */
  vg_rate_t target_rate;        /* per target: 6 per hour */
  uint64_t cooldown_ms;         /* after an action on a target, the next waits: 5 min */
  uint32_t max_concurrent_type; /* 4 */
  uint32_t max_concurrent_target; /* 1 */
  uint32_t blast_max_targets;   /* distinct targets per scope per window: 5 (0: no cap) */
  uint64_t blast_window_ms;     /* 30 min */
  uint32_t breaker_failures;    /* consecutive failures on a target that open it: 3 */
  uint64_t breaker_cooldown_ms; /* open for this long, then one probe is let through: 1 h */
  const vg_guard_type_t *types; /* per-type overrides (copied) */
  size_t ntypes;
} vg_guard_opts_t;

void vg_guard_opts_default(vg_guard_opts_t *o);

/* Returns NULL when out of memory. */
vg_guard_t *vg_guard_new(const vg_guard_opts_t *o);
void vg_guard_free(vg_guard_t *g);

typedef enum {
  VG_GUARD_OK = 0,
  VG_GUARD_RATE_TYPE,   /* ERATELIMIT: the type's budget is spent */
  VG_GUARD_RATE_TARGET, /* ERATELIMIT: the target's budget is spent */
  VG_GUARD_COOLDOWN,    /* ECOOLDOWN */
  VG_GUARD_CONCURRENCY, /* EBUSY */
  VG_GUARD_BLAST,       /* EBLASTRADIUS: too many distinct targets in the scope lately */
  VG_GUARD_BREAKER,     /* EBREAKER: the target's circuit breaker is open */
} vg_guard_verdict_t;

/* "ERATELIMIT", "ECOOLDOWN", ...; "" for VG_GUARD_OK. */
const char *vg_guard_verdict_name(vg_guard_verdict_t v);

/* Would an action of `type` on `target` (in `scope`, may be NULL) be allowed now? Writes a
 * sentence for operators into why ("restart budget spent: 30 per 1h; next in 112 s"). Changes
 * nothing. */
vg_guard_verdict_t vg_guard_check(vg_guard_t *g,
                                  const char *type,
                                  const char *target,
                                  const char *scope,
                                  int64_t now_ms,
                                  char *why,
                                  size_t whylen);

/* Checks as above and, when allowed, takes one token from both buckets, counts the action as
 * running (concurrency), records the target in the scope's blast window and starts the
 * target's cooldown. A half-open breaker lets this one probe through. */
vg_guard_verdict_t vg_guard_take(vg_guard_t *g,
                                 const char *type,
                                 const char *target,
                                 const char *scope,
                                 int64_t now_ms,
                                 char *why,
                                 size_t whylen);

/* Undoes a vg_guard_take whose action never ran (the claim was a duplicate or could not be
 * committed): tokens back, concurrency released, blast and cooldown entries removed. */
void vg_guard_refund(vg_guard_t *g,
                     const char *type,
                     const char *target,
                     const char *scope,
                     int64_t now_ms);

/* The action taken with vg_guard_take finished: concurrency released; `ok` false counts a
 * failure for the target's breaker (opening it at the threshold), true closes it. */
void vg_guard_finish(vg_guard_t *g, const char *type, const char *target, bool ok, int64_t now_ms);

/* An operator closes a target's breaker. Returns false when it was not open. */
bool vg_guard_reset_breaker(vg_guard_t *g, const char *target, int64_t now_ms);

/* ---- persistence ---- */

/* One persisted entry: name ("bucket:type:restart", "bucket:target:<t>", "cooldown:<t>",
 * "breaker:<t>", "blast:<scope>\x1f<target>"), a value and a time, meaning per kind. */
typedef void (*vg_guard_entry_fn)(void *ud, const char *name, double value, int64_t at);

/* Calls fn for every entry changed since the last call (and clears the marks): what a
 * transaction must write to keep the stored state equal to memory. Entries that expired are
 * reported with value < 0 (delete them). */
void vg_guard_each_dirty(vg_guard_t *g, vg_guard_entry_fn fn, void *ud);

/* Restores one stored entry (at start-up, before any check). Unknown names are ignored. */
void vg_guard_restore(vg_guard_t *g, const char *name, double value, int64_t at);

/* ---- inspection (the REPL, /metrics, the actions API) ---- */

typedef struct {
  uint64_t allowed, refused[8]; /* indexed by vg_guard_verdict_t */
  uint32_t running;             /* actions taken and not finished */
  uint32_t breakers_open;
} vg_guard_stats_t;

void vg_guard_stats(const vg_guard_t *g, int64_t now_ms, vg_guard_stats_t *out);
