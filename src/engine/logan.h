/* Named log analysers (DESIGN.md §4: state lives in C, addressed by name): each is a template
 * miner (logmine.h) plus per-minute counts per service and per template over a bounded window,
 * first-seen times, new-template events and a streaming detector (detect.h) per template over
 * its per-minute counts. A registry keeps them as long as the runtime, so every policy, a reload
 * and the intake share one analyser per name. Pure C, no Lua; not thread-safe (loop thread).
 *
 * Time: each line carries a timestamp in seconds. Minutes are [60k, 60k + 60). The analyser's
 * current minute is the latest minute a line arrived in; a minute *closes* when a line of a
 * later minute arrives, and only then are the templates' detectors fed its counts (and zeros for
 * the minutes without lines in between). A line older than the current minute is still counted
 * in its minute while that minute is in the window, but no detector sees it; older than the
 * window, it only counts in the totals. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/detect.h"
#include "engine/logmine.h"

/* The hand-over of snapshot.h, repeated (C11 allows the same typedef twice) so that users of
 * this header do not pull in the store and libuv. */
typedef void (*vg_snapshot_emit_fn)(void *ctx, const char *name, const void *blob, size_t len);

typedef struct vg_logan_registry vg_logan_registry_t;
typedef struct vg_logan vg_logan_t;

#define VG_LOGAN_MAX_MASKS 32
#define VG_LOGAN_NAME_MAX 128  /* bytes of an analyser or service name, NUL excluded */
#define VG_LOGAN_LEVEL_MAX 15  /* bytes of a level kept ("error", "warn", ...) */
#define VG_LOGAN_LINE_KEPT 512 /* bytes of the first line of a template kept in its event */
#define VG_LOGAN_TEMPLATES_MAX (1 << 19) /* sum of max_templates over a registry's analysers */

typedef struct {
  uint32_t window;       /* seconds of history, 60..86400, rounded down to whole minutes; 3600 */
  uint32_t recent;       /* trending: the last `recent` seconds against the rest; 300 */
  double spike_factor;   /* a minute is a spike above this many times the baseline; 3 */
  double spike_min;      /* ... and with at least this many errors (also for anomalies); 5 */
  double trend_factor;   /* trending: growth at least this; 2 */
  double trend_min;      /* trending: at least this many lines in `recent`; 5 */
  uint32_t max_events;   /* new-template and anomaly events kept (each); 1..10000; 100 */
  uint32_t max_services; /* services counted apart, 1..1024; later ones count as "other"; 64 */
  vg_detect_kind_t detector; /* kind of the per-template detector; VG_DETECT_ROBUST */
  uint32_t detector_window;  /* its window (robust/default), 3..VG_DETECT_WINDOW_MAX; 32 */
  vg_logmine_opts_t miner;   /* miner options; max_clusters defaults to 2000 here */
  size_t nmasks;             /* user masks (Lua patterns, see logmine_add_mask) */
  const char *masks[VG_LOGAN_MAX_MASKS];
} vg_logan_opts_t;

/* Fills `o` with the defaults above (and the miner's, max_clusters 2000, max_line 16384). */
void logan_opts_default(vg_logan_opts_t *o);

/* Checks `o` and normalises it (zeros become defaults, window and recent whole minutes, recent
 * at most window). Returns 0, or -1 with a message naming the option. */
int logan_opts_check(vg_logan_opts_t *o, char *err, size_t errlen);

/* True when two checked option sets are the same (masks compared as strings). */
bool logan_opts_equal(const vg_logan_opts_t *a, const vg_logan_opts_t *b);

/* ---- registry ---- */

/* A registry of at most `max` analysers (0: 256). NULL when out of memory. */
vg_logan_registry_t *logan_registry_new(size_t max);

/* Frees every analyser and the registry; NULL is fine. */
void logan_registry_free(vg_logan_registry_t *r);

/* The analyser called `name`, or NULL. */
vg_logan_t *logan_registry_get(vg_logan_registry_t *r, const char *name);

/* Creates the analyser `name` (1..VG_LOGAN_NAME_MAX bytes) with options `o` (NULL: defaults;
 * checked and copied, masks included). Returns NULL with a message when it exists already, the
 * name or options are bad, the registry is full (at most `max` analysers and
 * VG_LOGAN_TEMPLATES_MAX templates in all, summing their max_templates; the message then starts
 * with "full:") or memory is out. Memory: about 2 KB per template of a one-hour window. */
vg_logan_t *logan_registry_add(
    vg_logan_registry_t *r, const char *name, const vg_logan_opts_t *o, char *err, size_t errlen);

size_t logan_registry_count(const vg_logan_registry_t *r);
size_t logan_registry_max(const vg_logan_registry_t *r);

/* The i-th analyser in creation order (i < count), for listing. */
vg_logan_t *logan_registry_at(vg_logan_registry_t *r, size_t i);

/* Emits every analyser changed since the last collect (or restore) as a versioned blob
 * (options, masks, counts, minutes, first-seen times, events, detectors and the miner's
 * snapshot) and marks it clean. Returns how many were emitted; an analyser whose blob cannot be
 * built (out of memory) stays dirty for the next collect. */
size_t logan_registry_collect(vg_logan_registry_t *r, vg_snapshot_emit_fn emit, void *ctx);

/* Gives analyser `name` the state of a blob from collect: created (with the blob's options) when
 * absent, replaced in place otherwise (handles on it stay valid; its options become the blob's).
 * All or nothing: -1 with a message for a malformed blob (any bytes are safe), a full registry
 * or out of memory, the analyser unchanged. Not marked dirty. */
int logan_registry_restore(vg_logan_registry_t *r,
                           const char *name,
                           const void *blob,
                           size_t len,
                           char *err,
                           size_t errlen);

/* ---- one analyser ---- */

#define VG_LOGAN_BLOB_VERSION 1

const char *logan_name(const vg_logan_t *a);
const vg_logan_opts_t *logan_opts(const vg_logan_t *a);

/* What logan_add_ex() did with a line. */
typedef struct {
  vg_logmine_status_t status; /* MATCHED, CREATED, EMPTY (ignored) or NOMATCH (match-only) */
  vg_logmine_result_t mine;   /* the miner's result (MATCHED/CREATED); params valid until the
                               * next call on this analyser */
  bool error;                 /* the level counts as an error */
  bool late;                  /* ts was before the window: counted in the totals only */
  char level[VG_LOGAN_LEVEL_MAX + 1]; /* as given (lowercased) or guessed; "" when none */
} vg_logan_result_t;

/* Mines and counts one line (any bytes) at time `ts` (seconds; must be finite) for `service`
 * (NULL: the analyser's name) with `level` (NULL: guessed by logan_guess_level). Returns 0 when
 * counted (or blank, res->status EMPTY), or -1 with res->status NOMEM for out of memory or a
 * non-finite ts (nothing counted). `res` may be NULL. */
int logan_add_ex(vg_logan_t *a,
                 const char *line,
                 size_t len,
                 double ts,
                 const char *level,
                 const char *service,
                 vg_logan_result_t *res);

/* logan_add_ex() for the analyser's own service, without a result: 0 counted, 1 blank line
 * (ignored), -1 out of memory or bad ts. */
int logan_add(vg_logan_t *a, const char *line, size_t len, double ts, const char *level);

/* Closes the minutes that ended at least a minute before `now`, as a line of a later minute
 * would: the templates' detectors see their counts and anomalies are recorded. Without it, an
 * analyser whose lines stopped (a service that went quiet, or died) would never report the
 * anomaly of its last minutes. Nothing happens before the first line, or when those minutes
 * are closed already. The queries of the Lua binding call it with their `now`. */
void logan_advance(vg_logan_t *a, double now);

/* The level of a line from the first level word in its first 256 bytes (FATAL, PANIC,
 * CRITICAL, CRIT, SEVERE, ERROR, ERR, WARNING, WARN, INFO, NOTICE, DEBUG, TRACE, whole words,
 * any case), lowercased, WARNING as "warn"; "" when none. Writes at most VG_LOGAN_LEVEL_MAX + 1
 * bytes to out. */
void logan_guess_level(const char *line, size_t len, char *out);

/* True for the levels counted as errors: error, err, fatal, critical, crit, panic, emerg,
 * emergency, alert, severe (any case). */
bool logan_is_error(const char *level);

/* ---- queries ---- */

/* What every query looks at: one service (NULL: all) and the time `now` that places the window
 * [minute(now) - window, minute(now)]. */
typedef struct {
  const char *service;
  double now;
  double since;     /* new_templates/anomalies: from this time (NaN: the window's start) */
  bool errors_only; /* new_templates: only those first seen on an error line */
} vg_logan_query_t;

typedef struct {
  uint64_t lines, errors;     /* since the start (or restore) */
  uint64_t late;              /* lines older than the window when they came */
  uint64_t anomalies;         /* anomaly events raised since the start */
  size_t templates, services; /* held now */
  double minute;              /* the current (open) minute, NaN before the first line */
  vg_logmine_stats_t miner;
} vg_logan_stats_t;

void logan_stats(const vg_logan_t *a, vg_logan_stats_t *out);

/* Errors and lines over the window; false when the service is unknown (both 0). */
bool logan_error_rate(const vg_logan_t *a,
                      const vg_logan_query_t *q,
                      uint64_t *errors,
                      uint64_t *lines);

typedef struct {
  uint64_t id;
  uint64_t count; /* error lines of the template (of q->service when given), since the start */
  double share;   /* count / all error lines (of the service) */
} vg_logan_top_t;

/* The `n` error templates with the most errors, most first (ties: lower id). Returns how many
 * were written to out (at most n). */
size_t logan_top_errors(const vg_logan_t *a,
                        const vg_logan_query_t *q,
                        vg_logan_top_t *out,
                        size_t n);

typedef struct {
  double minute;   /* start of the minute, seconds */
  uint64_t errors; /* errors in it */
  double baseline; /* average errors per minute of the window's other minutes (empty = 0) */
} vg_logan_spike_t;

/* The seed's rule: minutes of the window (from the service's first minute, the minute of `now`
 * included) whose errors are >= spike_min and > spike_factor * baseline, oldest first. `out`
 * needs room for window/60 + 1 entries; returns how many were written. */
size_t logan_spikes(const vg_logan_t *a, const vg_logan_query_t *q, vg_logan_spike_t *out);

typedef struct {
  uint64_t id;
  double first_seen;
  const char *service; /* valid until the next add or restore */
  char level[VG_LOGAN_LEVEL_MAX + 1];
  bool error;
  const char *line; /* the first line, up to VG_LOGAN_LINE_KEPT bytes; same lifetime */
  size_t line_len;
} vg_logan_event_t;

/* New-template events first seen at or after q->since (NaN: now - window), of q->service when
 * given, only errors when q->errors_only; oldest first, at most max. Each template has at most
 * one event (templates the miner folds together keep the earliest). Returns how many. */
size_t logan_new_templates(const vg_logan_t *a,
                           const vg_logan_query_t *q,
                           vg_logan_event_t *out,
                           size_t max);

typedef struct {
  uint64_t id;
  double minute;   /* the closed minute that was anomalous */
  uint64_t count;  /* lines of the template in it */
  double baseline; /* mean lines per minute of the template over the window before it */
  double score;    /* the detector's score, [0, 1] */
} vg_logan_anomaly_t;

/* Template-count anomalies at or after q->since (NaN: now - window), oldest first, at most
 * max: a closed minute where the template's detector flagged its count, the count was at least
 * spike_min and above the template's baseline (a rise, not a drop). Returns how many. */
size_t logan_anomalies(const vg_logan_t *a,
                       const vg_logan_query_t *q,
                       vg_logan_anomaly_t *out,
                       size_t max);

typedef struct {
  uint64_t id;
  uint64_t recent, before; /* lines in the last `recent` seconds, and earlier in the window */
  double growth;           /* (recent per minute) / (max(before, 1) per minute) */
} vg_logan_trend_t;

/* Templates whose rate over the last `recent` seconds is at least trend_factor times their rate
 * over the rest of the window (or of the time since the service's first line), with at least
 * trend_min recent lines; most growing first. `out` needs room for stats.templates entries;
 * returns how many. q->service only selects the service whose first line bounds "before". */
size_t logan_trending(const vg_logan_t *a, const vg_logan_query_t *q, vg_logan_trend_t *out);

typedef struct {
  uint64_t id;
  const char *text; /* the template; valid until the next call on the analyser */
  size_t len;
  uint64_t count, errors;
  double first_seen, last_seen;
  const char *service; /* where it was first seen */
  char level[VG_LOGAN_LEVEL_MAX + 1];
} vg_logan_template_t;

/* Template `id` (an alias of a folded template resolves to the one it joined); false when
 * unknown, evicted, or out of memory. */
bool logan_template(vg_logan_t *a, uint64_t id, vg_logan_template_t *out);

/* The blob logan_registry_collect() would emit for this analyser (malloc'd; caller frees), or
 * NULL when out of memory. Does not mark it clean. */
void *logan_snapshot(vg_logan_t *a, size_t *len);
