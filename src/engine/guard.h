/* Guard rails for actions (DESIGN.md G5): token-bucket rate limits per action type and per
 * target, a cooldown per target, concurrency limits per type and per target, a blast-radius
 * cap (distinct targets per scope per window), and a circuit breaker per target (after K
 * failed actions in a row, refuse until a cool-down passes and an operator or a success
 * closes it). Decisions are made here, in C, never by policies.
 *
 * Pure C, no I/O and no clock of its own: every call takes `now_ms` (wall-clock ms since the
 * epoch, so state restored after a restart keeps its meaning). State that must survive a
 * restart is reported as named entries (vg_guard_each_dirty) and restored with
 * vg_guard_restore; the action ledger stores them in the same transaction as the claim they
 * belong to. A clock that steps back never refills a bucket or shortens a wait.
 *
 * Memory is bounded: at most `max_targets` targets, as many blast-window entries and
 * VG_GUARD_MAX_TYPES action types are tracked. State that no longer matters (a full bucket, a
 * cooldown that has passed, a closed breaker with no failures, a blast entry older than the
 * window) is dropped when next touched and by a sweep that check and take advance a little on
 * every call. When a table is full, a take that needs a new entry is refused (EBUSY) rather
 * than forgetting state that protects something else. Not thread-safe: one loop owns it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vg_guard vg_guard_t;

#define VG_GUARD_MAX_NAME 512       /* bytes in a type, target or scope; longer ones: EINVAL */
#define VG_GUARD_MAX_TARGETS 100000 /* the default opts.max_targets */
#define VG_GUARD_MAX_TYPES 1024

/* A rate: `count` per `per_ms`, bursting up to `count` (at least 1, so 0.5 per 1h is one
 * action per 2 h). count 0: unlimited. per_ms 0 with count > 0: `count` actions and no refill
 * (a configuration mistake fails closed). */
typedef struct {
  double count;
  uint64_t per_ms;
} vg_rate_t;

typedef struct {
  const char *type;        /* action type ("scale", "restart", ...) */
  vg_rate_t rate;          /* all zero: type_rate applies; {0, per} is unlimited */
  uint32_t max_concurrent; /* 0: no limit of its own (the default applies) */
} vg_guard_type_t;

typedef struct {
  vg_rate_t type_rate;            /* per action type unless listed in `types`: 30 per hour */
  vg_rate_t target_rate;          /* per target: 6 per hour */
  uint64_t cooldown_ms;           /* after an action on a target, the next waits: 5 min */
  uint32_t max_concurrent_type;   /* 4 (0: no limit) */
  uint32_t max_concurrent_target; /* 1 (0: no limit) */
  uint32_t blast_max_targets;     /* distinct targets per scope per window: 5 (0: no cap) */
  uint64_t blast_window_ms;       /* 30 min (0: no cap) */
  uint32_t breaker_failures;      /* consecutive failures on a target that open it: 3 (0: none) */
  uint64_t breaker_cooldown_ms;   /* open for this long, then one probe is let through: 1 h */
  const vg_guard_type_t *types;   /* per-type overrides (copied; the first of a name wins) */
  size_t ntypes;
  uint32_t max_targets; /* targets and blast entries tracked; 0: VG_GUARD_MAX_TARGETS */
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
  VG_GUARD_CONCURRENCY, /* EBUSY (also: a table is full, or out of memory) */
  VG_GUARD_BLAST,       /* EBLASTRADIUS: too many distinct targets in the scope lately */
  VG_GUARD_BREAKER,     /* EBREAKER: the target's circuit breaker is open */
  VG_GUARD_INVALID,     /* EINVAL: empty or too long a type or target, a scope with 0x1f */
} vg_guard_verdict_t;

/* "ERATELIMIT", "ECOOLDOWN", ...; "" for VG_GUARD_OK. */
const char *vg_guard_verdict_name(vg_guard_verdict_t v);

/* Would an action of `type` on `target` (in `scope`; NULL or "": no blast accounting) be
 * allowed now? Writes a sentence for operators into why, without the verdict's name
 * ("action type 'restart' budget spent: 30 per 1h; next in 112 s"); "" when allowed, or a
 * note when the action would be a breaker's probe. The first rule that refuses is reported,
 * in this order: names, breaker, cooldown, concurrency (target, type), rate (target, type),
 * blast radius, table capacity. Changes no decision (it may drop expired state). */
vg_guard_verdict_t vg_guard_check(vg_guard_t *g,
                                  const char *type,
                                  const char *target,
                                  const char *scope,
                                  int64_t now_ms,
                                  char *why,
                                  size_t whylen);

/* Checks as above and, when allowed, takes one token from both buckets, counts the action as
 * running (concurrency), records the target in the scope's blast window and starts the
 * target's cooldown. A half-open breaker lets this one probe through (and is treated as open
 * for another breaker_cooldown_ms should vigil restart before the probe finishes). Counts the
 * verdict for vg_guard_stats. */
vg_guard_verdict_t vg_guard_take(vg_guard_t *g,
                                 const char *type,
                                 const char *target,
                                 const char *scope,
                                 int64_t now_ms,
                                 char *why,
                                 size_t whylen);

/* Undoes a vg_guard_take whose action never ran (the claim was a duplicate or could not be
 * committed): tokens back, concurrency released, blast and cooldown entries removed, a probe
 * slot given back. A blast entry stays while another take on the same target holds it. */
void vg_guard_refund(
    vg_guard_t *g, const char *type, const char *target, const char *scope, int64_t now_ms);

/* The action taken with vg_guard_take finished: concurrency released; `ok` false counts a
 * failure for the target's breaker (opening it at the threshold; a failure while half-open
 * re-opens it for another cool-down), true closes it and zeroes the count. Failures more
 * than breaker_cooldown_ms apart do not add up (the count is forgotten a cool-down after the
 * last one while the breaker is closed). A finish for a target with nothing running releases
 * no concurrency. Finishes are not matched to takes: with max_concurrent_target 1 (the
 * default) there is no ambiguity. */
void vg_guard_finish(vg_guard_t *g, const char *type, const char *target, bool ok, int64_t now_ms);

/* An operator closes a target's breaker (and zeroes its failure count). Returns false when it
 * was not open or half-open. */
bool vg_guard_reset_breaker(vg_guard_t *g, const char *target, int64_t now_ms);

/* ---- persistence ---- */

/* One persisted entry: a name, a value and a time, meaning per kind:
 *   "bucket:type:<type>"           tokens left, at the time `at`
 *   "bucket:target:<target>"       tokens left, at the time `at`
 *   "cooldown:<target>"            1; at = the end of the cooldown
 *   "breaker:<target>"             consecutive failures, + 0.5 while the breaker is open or
 *                                  half-open (so 3.5: tripped by 3 failures); at = the time it
 *                                  stays open until, or while closed the last failure
 *   "blast:<scope>\x1f<target>"    1; at = when the target was first acted on in the window
 * Running actions (concurrency) are not persisted. A probe in flight shows as an open breaker
 * (its take moved open-until on), so a restart does not let a second probe through at once. */
typedef void (*vg_guard_entry_fn)(void *ud, const char *name, double value, int64_t at);

/* Calls fn for every entry changed since the last call (and clears the marks): what a
 * transaction must write to keep the stored state equal to memory. Entries that expired are
 * reported with value < 0 (delete them), once. The names stay valid until the next call of
 * vg_guard_each_dirty (or vg_guard_free), so they may be collected and copied afterwards.
 * fn must not call into g. */
void vg_guard_each_dirty(vg_guard_t *g, vg_guard_entry_fn fn, void *ud);

/* Restores one stored entry (at start-up, before any check). Unknown names, values < 0 and
 * names over the limits are ignored; so are entries beyond the table caps. */
void vg_guard_restore(vg_guard_t *g, const char *name, double value, int64_t at);

/* ---- inspection (the REPL, /metrics, the actions API) ---- */

typedef struct {
  uint64_t allowed, refused[8]; /* vg_guard_take outcomes; refused indexed by the verdict */
  uint32_t running;             /* actions taken and not finished */
  uint32_t breakers_open;       /* open or half-open */
  uint32_t targets, types, blast_entries; /* tracked now */
} vg_guard_stats_t;

void vg_guard_stats(const vg_guard_t *g, int64_t now_ms, vg_guard_stats_t *out);
