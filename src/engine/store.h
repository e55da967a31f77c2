/* The durable store: SQLite in WAL mode, one writer thread with group commit, readers on the
 * libuv thread pool. Guarantees (DESIGN.md §5):
 *   G1  a batch's callback reports success only after its transaction is committed and
 *       synced (synchronous=FULL), so a 2xx sent from that callback survives kill -9;
 *   G2  submitting the same alert again is harmless: it is reported as unchanged.
 * Alerts are keyed by fingerprint; incidents group alerts by `group_key` and follow the
 * lifecycle open -> investigating -> identified -> monitoring -> resolved -> closed, with a
 * timeline of every transition. An incident resolves when all its alerts have resolved and
 * reopens when one fires again within `reopen_grace_s`; after that a new incident opens.
 *
 * Pure C (SQLite, libuv, jansson for rendering JSON): no Lua. Every callback runs on the loop
 * thread. The schema is versioned; migrations run at open, in a transaction each. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "engine/labelmatch.h"

typedef struct vg_store vg_store_t;

typedef struct {
  const char *path;         /* "vigil.db" */
  uint64_t group_commit_ms; /* 2: how long the writer waits to gather more batches */
  size_t max_pending;       /* 100000 alerts queued and not yet committed: beyond, busy */
  double reopen_grace_s;    /* 300 */
  double retention_s;       /* 30 days: resolved alerts and closed incidents older go */
  size_t max_alerts;        /* 1000000 rows: the oldest resolved go first */
} vg_store_opts_t;

void vg_store_opts_default(vg_store_opts_t *opts);

/* Opens (creating and migrating) the database and starts the writer thread. Returns NULL with
 * a message in err ("vigil.db: unable to open database file", "schema version 9 is newer than
 * this vigil (3)"). */
vg_store_t *vg_store_open(uv_loop_t *loop, const vg_store_opts_t *opts, char *err, size_t errlen);

/* Finishes every submitted batch (their callbacks run), stops the writer and closes the
 * database. The loop must run until `done` is called (may be NULL). */
void vg_store_close(vg_store_t *s, void (*done)(void *ud), void *ud);

/* ---- alerts ---- */

/* One normalised alert. Strings are copied by vg_store_submit. Labels and annotations are
 * sorted by name, without empty values. */
typedef struct {
  const char *fingerprint; /* 16 hex digits, Alertmanager's (see vg_fingerprint) */
  const char *name;        /* labels.alertname */
  const char *severity;    /* critical|high|medium|low|info */
  const char *status;      /* firing|resolved */
  const vg_label_t *labels;
  size_t nlabels;
  const vg_label_t *annotations;
  size_t nannotations;
  double starts_at;          /* seconds since the epoch */
  double ends_at;            /* 0: none */
  const char *source;        /* "alertmanager", "api-v2", "event", ... */
  const char *generator_url; /* may be NULL */
  const char *group_key;     /* the incident group ("alertname=X,service=Y") */
} vg_store_alert_t;

typedef enum {
  VG_STORE_NEW,       /* first time this fingerprint is seen (or seen again after retention) */
  VG_STORE_CHANGED,   /* status, ends_at, annotations or labels changed */
  VG_STORE_UNCHANGED, /* a duplicate delivery (G2) */
} vg_store_outcome_t;

typedef struct {
  vg_store_outcome_t outcome;
  int64_t incident_id;
  bool incident_opened, incident_reopened, incident_resolved;
  /* NEW or CHANGED: this change's number (> 0, increasing; after a restart it goes on above
     those still undecided), which marks the alert undecided until vg_store_decided names it;
     0 for UNCHANGED */
  int64_t change;
} vg_store_result_t;

/* status 0: committed, results[i] for alerts[i]. status < 0: nothing of the batch was
 * committed (err says why: "disk I/O error", "database is locked", ...). */
typedef void (*vg_store_commit_fn)(
    void *ud, int status, const char *err, const vg_store_result_t *results, size_t n);

/* Queues a batch for the next group commit. Returns 0, or -EBUSY when max_pending alerts are
 * already waiting (answer 503 + Retry-After), or -ENOMEM. The callback always runs once when
 * 0 is returned, never from inside this call. */
int vg_store_submit(
    vg_store_t *s, const vg_store_alert_t *alerts, size_t n, vg_store_commit_fn done, void *ud);

/* Alerts whose endsAt passes while they fire and nobody re-sends them (API v2's resolve
 * timeout) resolve by themselves: the writer checks about once a second, commits the change
 * as it would a submitted resolution (incidents follow), and reports the alerts, now
 * "resolved", to `fn` on the loop. */
typedef void (*vg_store_expired_fn)(void *ud,
                                    const vg_store_alert_t *alerts,
                                    const vg_store_result_t *results,
                                    size_t n);
void vg_store_on_expired(vg_store_t *s, vg_store_expired_fn fn, void *ud);

/* ---- reading and incident actions (answers are JSON documents, ready to send) ---- */

/* status 0 with a JSON text (NUL-terminated, freed after the callback returns), or status < 0
 * with a message in `json`; -ENOENT for an unknown incident, -EINVAL for a refused
 * transition (e.g. "incident 12 is closed"). */
typedef void (*vg_store_json_fn)(void *ud, int status, const char *json, size_t len);

typedef struct {
  const char *status;            /* "firing" | "resolved" | NULL for both */
  const vg_matchers_t *matchers; /* NULL: all */
  size_t limit;                  /* 0: 1000 */
} vg_store_alert_query_t;

/* [{"fingerprint":..,"name":..,"severity":..,"status":..,"labels":{..},"annotations":{..},
 *   "startsAt":"RFC3339","endsAt":..,"source":..,"generatorURL":..,"incidentId":..,
 *   "firstSeen":..,"lastSeen":..}, ...] newest first */
int vg_store_alerts(vg_store_t *s,
                    const vg_store_alert_query_t *q,
                    vg_store_json_fn done,
                    void *ud);

typedef struct {
  const char *status;   /* one lifecycle state, "active" (not resolved or closed), or NULL */
  const char *severity; /* NULL: all */
  size_t limit;         /* 0: 100 */
  size_t offset;
} vg_store_incident_query_t;

/* {"incidents":[{"id":..,"title":..,"groupKey":..,"severity":..,"status":..,"openedAt":..,
 *   "updatedAt":..,"resolvedAt":..,"alerts":N,"firing":N}, ...],"total":N} newest first */
int vg_store_incidents(vg_store_t *s,
                       const vg_store_incident_query_t *q,
                       vg_store_json_fn done,
                       void *ud);

/* One incident with "alerts":[...] and "timeline":[{"at":..,"who":..,"event":..,
 * "from":..,"to":..,"comment":..}, ...] oldest first. */
int vg_store_incident(vg_store_t *s, int64_t id, vg_store_json_fn done, void *ud);

/* An operator's transition: action "ack" (-> investigating, records who), "resolve",
 * "close"; recorded on the timeline with who and comment. Answers with the incident as
 * vg_store_incident does. */
int vg_store_incident_action(vg_store_t *s,
                             int64_t id,
                             const char *action,
                             const char *who,
                             const char *comment,
                             vg_store_json_fn done,
                             void *ud);

/* ---- other engines' tables (the action ledger) ---- */

struct sqlite3;

/* Runs on the writer thread inside the group transaction, in a savepoint of its own: returns
 * SQLITE_OK, or an SQLite error code (with a message in err, or SQLite's own is used) and
 * only its own statements are undone. */
typedef int (*vg_store_work_fn)(struct sqlite3 *db, void *ud, char *err, size_t errlen);

/* On the loop: status 0 once the transaction holding the work is committed and synced; < 0
 * when it was not (err says why). */
typedef void (*vg_store_done_fn)(void *ud, int status, const char *err);

/* Queues `work` for the next group commit. Returns 0 (then `done` runs exactly once, never
 * from inside this call), -EBUSY when the store is closing, -EINVAL or -ENOMEM. */
int vg_store_call(vg_store_t *s, vg_store_work_fn work, vg_store_done_fn done, void *ud);

/* Runs `work` on the thread pool with a read-only connection inside one read transaction;
 * it returns 0 or a negative errno with a message in err. `done` runs on the loop. */
typedef int (*vg_store_read_fn)(struct sqlite3 *db, void *ud, char *err, size_t errlen);
int vg_store_read(vg_store_t *s, vg_store_read_fn work, vg_store_done_fn done, void *ud);

/* ---- decision replay ----
 *
 * G1 keeps what was accepted, but the decision about an alert happens after the commit: a
 * crash in between would leave a stored alert no policy ever saw, and a re-delivery of it is a
 * duplicate (G2) that decides nothing. So every new or changed alert is stored "undecided",
 * in the transaction that stores it (the expiry's resolutions too); the caller names it
 * decided once it has acted on it, and at start-up replays whatever is still undecided. */

typedef struct {
  const char *fingerprint;
  int64_t change; /* vg_store_result_t.change, or the one vg_store_undecided handed out */
} vg_store_decision_t;

/* Marks those alerts decided, in one writer call: an alert whose `change` is no longer its
 * latest (it changed again since, and that change still waits for its decision) stays
 * undecided. Strings are copied. Returns 0 (then `done`, which may be NULL, runs once on the
 * loop, never from inside this call, with status 0 once it is committed), -EBUSY when the
 * store is closing, -EINVAL or -ENOMEM. */
int vg_store_decided(
    vg_store_t *s, const vg_store_decision_t *d, size_t n, vg_store_done_fn done, void *ud);

/* At most this many alerts per vg_store_undecided call: the rest on the next call, once these
 * are decided. */
#define VG_STORE_UNDECIDED_MAX 10000

/* One undecided alert, on the loop: `a` and everything it points to (labels and annotations
 * decoded from the store) are borrowed for the duration of the call. */
typedef void (*vg_store_undecided_fn)(void *ud,
                                      const vg_store_alert_t *a,
                                      int64_t incident_id,
                                      int64_t change);

/* Reads the undecided alerts (at most VG_STORE_UNDECIDED_MAX, oldest change first) on the
 * thread pool, hands each to `each` on the loop, then calls `done` (status 0, or < 0 with a
 * message, and then `each` never ran). Returns 0, or -EBUSY/-EINVAL/-ENOMEM without calling
 * anything. */
int vg_store_undecided(vg_store_t *s, vg_store_undecided_fn each, vg_store_done_fn done, void *ud);

/* ---- health and metrics ---- */

typedef struct {
  uint64_t batches, alerts, commits, commit_failures;
  uint64_t pending;               /* alerts queued now */
  uint64_t commit_us_buckets[12]; /* commit latency histogram: <=100us, 250, 500, 1ms, 2.5,
                                     5, 10, 25, 50, 100, 250, +Inf */
  double commit_us_sum;
  uint64_t pruned;
} vg_store_stats_t;

void vg_store_stats(const vg_store_t *s, vg_store_stats_t *out);

/* True while the last commit succeeded (GET /readyz). */
bool vg_store_writable(const vg_store_t *s);

/* Alertmanager's fingerprint of a label set: FNV-1a 64 over the labels sorted by name, each
 * name and value followed by the 0xff separator byte; 16 lower-case hex digits + NUL in out. */
void vg_fingerprint(const vg_label_t *labels, size_t nlabels, char out[17]);
