/* The durable store's writer: opening and migrating the SQLite database, the queue of submitted
 * batches, the one writer thread that group-commits them (alert outcomes, incident grouping,
 * operator actions, retention), and the hand-back of results to the loop thread.
 * Reads and JSON rendering live in store_read.c. */
#include "engine/store.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/store_int.h"

#define PRUNE_EVERY_MS 60000
#define PRUNE_STEP 500          /* rows of each kind deleted per prune transaction */
#define EXPIRY_EVERY_MS 1000    /* how often firing alerts past their endsAt are resolved */
#define GATHER_MAX_ALERTS 20000 /* stop waiting for more once a transaction holds this many */
#define GATHER_QUIET_NS 300000u /* ... or once nothing new arrived for this long (0.3 ms) */
#define BUSY_TIMEOUT_MS 5000

/* ---- schema ---- */

/* Ordered migrations: migrations[i] takes the schema from version i to i + 1, in one
 * transaction with the new user_version. Append; never edit a released one. Times are integer
 * milliseconds since the epoch (0 = none for ends_at); labels and annotations are JSON objects
 * with sorted keys. */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
  /* 1: alerts, incidents, their links and the timeline */
  "CREATE TABLE incidents ("
  "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
  "  group_key TEXT NOT NULL,"
  "  title TEXT NOT NULL,"
  "  severity TEXT NOT NULL,"
  "  status TEXT NOT NULL CHECK (status IN ('open','investigating','identified','monitoring',"
  "                                         'resolved','closed')),"
  "  opened_at INTEGER NOT NULL,"
  "  updated_at INTEGER NOT NULL,"
  "  resolved_at INTEGER,"
  "  closed_at INTEGER,"
  "  acked_by TEXT,"
  "  acked_at INTEGER);"
  "CREATE INDEX incidents_group ON incidents (group_key, status);"
  "CREATE INDEX incidents_status ON incidents (status, id);"
  "CREATE INDEX incidents_closed ON incidents (closed_at) WHERE status = 'closed';"
  "CREATE TABLE alerts ("
  "  fingerprint TEXT NOT NULL PRIMARY KEY,"
  "  name TEXT NOT NULL,"
  "  severity TEXT NOT NULL,"
  "  status TEXT NOT NULL CHECK (status IN ('firing','resolved')),"
  "  labels TEXT NOT NULL,"
  "  annotations TEXT NOT NULL,"
  "  starts_at INTEGER NOT NULL,"
  "  ends_at INTEGER NOT NULL DEFAULT 0,"
  "  source TEXT NOT NULL,"
  "  generator_url TEXT,"
  "  group_key TEXT NOT NULL,"
  "  incident_id INTEGER REFERENCES incidents (id) ON DELETE SET NULL,"
  "  first_seen INTEGER NOT NULL,"
  "  last_seen INTEGER NOT NULL,"
  "  updated_at INTEGER NOT NULL);"
  "CREATE INDEX alerts_starts ON alerts (starts_at);"
  "CREATE INDEX alerts_status_starts ON alerts (status, starts_at);"
  "CREATE INDEX alerts_incident ON alerts (incident_id, status);"
  "CREATE INDEX alerts_resolved_ends ON alerts (ends_at) WHERE status = 'resolved';"
  /* every alert that ever belonged to an incident (an alert moves on when it fires again
     after the grace period; the old incident keeps it in its history) */
  "CREATE TABLE incident_alerts ("
  "  incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,"
  "  fingerprint TEXT NOT NULL REFERENCES alerts (fingerprint) ON DELETE CASCADE,"
  "  attached_at INTEGER NOT NULL,"
  "  PRIMARY KEY (incident_id, fingerprint)) WITHOUT ROWID;"
  "CREATE INDEX incident_alerts_fp ON incident_alerts (fingerprint);"
  "CREATE TABLE timeline ("
  "  id INTEGER PRIMARY KEY,"
  "  incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,"
  "  at INTEGER NOT NULL,"
  "  who TEXT NOT NULL,"
  "  event TEXT NOT NULL,"
  "  from_status TEXT,"
  "  to_status TEXT,"
  "  comment TEXT);"
  "CREATE INDEX timeline_incident ON timeline (incident_id, id);",
  /* 2: the action ledger (src/engine/ledger.c): one row per decision, an append-only audit
     log of every event, guard-rail state and settings that survive restarts */
  "CREATE TABLE actions ("
  "  id INTEGER PRIMARY KEY,"
  "  key TEXT NOT NULL,"
  "  claim_key TEXT UNIQUE," /* set while the key is taken: at most one run per key (G3) */
  "  policy TEXT NOT NULL,"
  "  policy_version TEXT,"
  "  subject TEXT,"
  "  incident_id INTEGER,"
  "  type TEXT NOT NULL,"
  "  target TEXT NOT NULL,"
  "  scope TEXT,"
  "  mode TEXT NOT NULL CHECK (mode IN ('observe','dry-run','enforce')),"
  "  state TEXT NOT NULL CHECK (state IN ('observed','dry-run','refused','awaiting_approval',"
  "    'approved','denied','expired','claimed','done','failed','unknown')),"
  "  why TEXT,"
  "  command TEXT NOT NULL,"
  "  attempts INTEGER NOT NULL DEFAULT 0,"
  "  exit_code INTEGER,"
  "  signal INTEGER,"
  "  http_status INTEGER,"
  "  output TEXT,"
  "  error TEXT,"
  "  created_at INTEGER NOT NULL,"
  "  finished_at INTEGER,"
  "  duration_ms INTEGER,"
  "  expires_at INTEGER,"
  "  decided_by TEXT,"
  "  decided_at INTEGER);"
  "CREATE INDEX actions_state ON actions (state, id);"
  "CREATE INDEX actions_incident ON actions (incident_id, id);"
  "CREATE TABLE audit ("
  "  id INTEGER PRIMARY KEY,"
  "  at INTEGER NOT NULL,"
  "  action_id INTEGER,"
  "  event TEXT NOT NULL,"
  "  who TEXT NOT NULL,"
  "  detail TEXT);"
  "CREATE INDEX audit_action ON audit (action_id, id);"
  "CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit"
  "  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
  "CREATE TABLE guard_state ("
  "  name TEXT PRIMARY KEY,"
  "  value REAL NOT NULL,"
  "  at INTEGER NOT NULL) WITHOUT ROWID;"
  "CREATE TABLE settings ("
  "  name TEXT PRIMARY KEY,"
  "  value TEXT NOT NULL,"
  "  updated_at INTEGER NOT NULL,"
  "  updated_by TEXT) WITHOUT ROWID;",
  /* 3: healing runs (ordered steps with verification) and local suppressions */
  "CREATE TABLE healings ("
  "  id INTEGER PRIMARY KEY,"
  "  policy TEXT NOT NULL,"
  "  name TEXT NOT NULL,"
  "  subject TEXT,"
  "  incident_id INTEGER,"
  "  status TEXT NOT NULL CHECK (status IN ('running','succeeded','failed','interrupted')),"
  "  steps TEXT NOT NULL DEFAULT '[]',"
  "  error TEXT,"
  "  started_at INTEGER NOT NULL,"
  "  finished_at INTEGER,"
  "  duration_ms INTEGER);"
  "CREATE INDEX healings_incident ON healings (incident_id, id);"
  "CREATE TABLE suppressions ("
  "  id INTEGER PRIMARY KEY,"
  "  matchers TEXT NOT NULL,"
  "  reason TEXT,"
  "  created_by TEXT NOT NULL,"
  "  created_at INTEGER NOT NULL,"
  "  until INTEGER NOT NULL);"
  "CREATE INDEX suppressions_until ON suppressions (until);",
  /* 4: the once-a-second expiry scan finds firing alerts past their endsAt through an index of
     their own instead of reading every firing row */
  "CREATE INDEX alerts_firing_ends ON alerts (ends_at) WHERE status = 'firing';",
  /* 5: what the AIOps pipeline remembers (src/engine/memory.c): a JSON detail on timeline
     entries, per-policy key/value state, the knowledge base with its full-text index, known
     fixes and persisted escalation timers (G4) */
  "ALTER TABLE timeline ADD COLUMN detail TEXT;"
  "CREATE TABLE policy_state ("
  "  policy TEXT NOT NULL,"
  "  key TEXT NOT NULL,"
  "  value TEXT NOT NULL,"
  "  updated_at INTEGER NOT NULL,"
  "  expires_at INTEGER,"
  "  PRIMARY KEY (policy, key)) WITHOUT ROWID;"
  "CREATE INDEX policy_state_expires ON policy_state (expires_at) WHERE expires_at IS NOT NULL;"
  /* no foreign key to incidents: what was learnt outlives the incidents' retention */
  "CREATE TABLE kb_incidents ("
  "  incident_id INTEGER PRIMARY KEY,"
  "  policy TEXT,"
  "  alertname TEXT,"
  "  class TEXT,"
  "  confidence REAL,"
  "  labels TEXT,"
  "  fix TEXT,"
  "  outcome TEXT CHECK (outcome IN ('success','failure')),"
  "  text TEXT NOT NULL,"
  "  learned_at INTEGER NOT NULL,"
  "  resolved_at INTEGER,"
  "  ttr_ms INTEGER);"
  /* The index holds no copy of the text (external content); the triggers keep it in step
     with kb_incidents, an update being a delete of the old text and an insert of the new.
     '_' joins words (metric and label names stay whole) but '-' separates them, so that
     "web-7f9c" and "web-x2b1", two pods of one deployment, share "web". */
  "CREATE VIRTUAL TABLE kb_text USING fts5 (text, content = 'kb_incidents',"
  "  content_rowid = 'incident_id', tokenize = \"unicode61 tokenchars '_'\");"
  "CREATE TRIGGER kb_incidents_ai AFTER INSERT ON kb_incidents BEGIN"
  "  INSERT INTO kb_text (rowid, text) VALUES (new.incident_id, new.text); END;"
  "CREATE TRIGGER kb_incidents_ad AFTER DELETE ON kb_incidents BEGIN"
  "  INSERT INTO kb_text (kb_text, rowid, text) VALUES ('delete', old.incident_id, old.text);"
  "  END;"
  "CREATE TRIGGER kb_incidents_au AFTER UPDATE OF text ON kb_incidents BEGIN"
  "  INSERT INTO kb_text (kb_text, rowid, text) VALUES ('delete', old.incident_id, old.text);"
  "  INSERT INTO kb_text (rowid, text) VALUES (new.incident_id, new.text); END;"
  "CREATE TABLE kb_fixes ("
  "  id INTEGER PRIMARY KEY,"
  "  key TEXT NOT NULL,"
  "  name TEXT NOT NULL,"
  "  plan TEXT NOT NULL,"
  "  created_by TEXT NOT NULL,"
  "  created_at INTEGER NOT NULL,"
  "  uses INTEGER NOT NULL DEFAULT 0,"
  "  successes INTEGER NOT NULL DEFAULT 0,"
  "  failures INTEGER NOT NULL DEFAULT 0,"
  "  last_used_at INTEGER,"
  "  UNIQUE (key, name));"
  /* marked_at: when escalations_due last handed the timer out as due (its lease) */
  "CREATE TABLE escalations ("
  "  id INTEGER PRIMARY KEY,"
  "  incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,"
  "  policy TEXT NOT NULL,"
  "  level INTEGER NOT NULL,"
  "  name TEXT,"
  "  due_at INTEGER NOT NULL,"
  "  state TEXT NOT NULL DEFAULT 'pending'"
  "    CHECK (state IN ('pending','due','fired','failed','cancelled')),"
  "  created_at INTEGER NOT NULL,"
  "  marked_at INTEGER,"
  "  fired_at INTEGER,"
  "  action_id INTEGER,"
  "  note TEXT,"
  "  UNIQUE (incident_id, policy, level));"
  "CREATE INDEX escalations_pending ON escalations (due_at) WHERE state IN ('pending','due');",
  /* 6: decision replay (G1 up to the policies): the number of the change that stored the
     alert new or changed, until the intake says the policies had it (vg_store_decided); 0
     once decided. Rows already stored count as decided. The index
     holds only the undecided rows, in the order they changed. */
  "ALTER TABLE alerts ADD COLUMN undecided INTEGER NOT NULL DEFAULT 0;"
  "CREATE INDEX alerts_undecided ON alerts (undecided) WHERE undecided > 0;",
  /* 7: engine state kept across restarts (src/engine/snapshot.c): one versioned blob per
     named object of a kind (a detector series, a log analyser), replaced on each write */
  "CREATE TABLE snapshots ("
  "  kind TEXT NOT NULL,"
  "  name TEXT NOT NULL,"
  "  blob BLOB NOT NULL,"
  "  updated_at INTEGER NOT NULL,"
  "  PRIMARY KEY (kind, name)"
  ") WITHOUT ROWID;"
  "CREATE INDEX snapshots_updated ON snapshots (updated_at);",
};

/* ---- jobs ---- */

typedef enum { JOB_BATCH, JOB_ACTION, JOB_CALL, JOB_DECIDED } job_kind_t;

struct store_job {
  store_job_t *next;
  job_kind_t kind;
  void *ud;
  int status;
  char err[256];
  bool expiry; /* a JOB_BATCH the writer made of alerts whose endsAt passed */
  /* JOB_BATCH: alerts, results and labels live in the same allocation */
  vg_store_alert_t *alerts;
  vg_store_result_t *results;
  size_t n;
  vg_store_commit_fn commit_cb;
  /* JOB_ACTION */
  int64_t id;
  char *action, *who, *comment;
  vg_store_json_fn json_cb;
  char *json; /* the answer (malloc'd) */
  size_t json_len;
  /* JOB_CALL: another engine's statements (vg_store_call) */
  vg_store_work_fn work;
  vg_store_done_fn call_cb; /* JOB_DECIDED too (may be NULL there) */
  /* JOB_DECIDED: n decisions, their strings in the same allocation */
  vg_store_decision_t *decisions;
};

static void job_fail(store_job_t *j, int status, const char *msg)
{
  j->status = status;
  snprintf(j->err, sizeof j->err, "%s", msg);
}

static void job_free(store_job_t *j)
{
  if (j == NULL) {
    return;
  }
  free(j->json);
  free(j); /* every other pointer is into the same block */
}

/* Size bookkeeping for one-block deep copies: rounds up and refuses to overflow. */
static bool grow(size_t *total, size_t add)
{
  const size_t a = alignof(max_align_t);
  if (add > SIZE_MAX - *total - a) {
    return false;
  }
  *total += add;
  *total = (*total + a - 1) / a * a;
  return true;
}

static size_t slen(const char *p)
{
  return p != NULL ? strlen(p) + 1 : 0;
}

/* Copies a NUL-terminated string (or NULL) into the block at *cursor. */
static const char *put_str(char **cursor, const char *p)
{
  if (p == NULL) {
    return NULL;
  }
  size_t n = strlen(p) + 1;
  char *dst = *cursor;
  memcpy(dst, p, n);
  *cursor += n;
  return dst;
}

/* Copies `len` bytes plus a NUL (the label may not be NUL-terminated). */
static const char *put_bytes(char **cursor, const char *p, size_t len)
{
  char *dst = *cursor;
  if (len > 0) {
    memcpy(dst, p, len);
  }
  dst[len] = '\0';
  *cursor += len + 1;
  return dst;
}

static int labels_size(const vg_label_t *ls, size_t n, size_t *strings)
{
  for (size_t i = 0; i < n; i++) {
    size_t add = ls[i].name_len + ls[i].value_len + 2;
    if (ls[i].name_len > SIZE_MAX / 4 || ls[i].value_len > SIZE_MAX / 4 ||
        add > SIZE_MAX / 2 - *strings) {
      return -1;
    }
    *strings += add;
  }
  return 0;
}

static void put_labels(char **cursor, vg_label_t *dst, const vg_label_t *src, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    dst[i].name = put_bytes(cursor, src[i].name, src[i].name_len);
    dst[i].name_len = src[i].name_len;
    dst[i].value = put_bytes(cursor, src[i].value, src[i].value_len);
    dst[i].value_len = src[i].value_len;
  }
}

/* One allocation holding the job, the alerts, their results, labels and strings. */
static store_job_t *job_copy_batch(const vg_store_alert_t *alerts, size_t n)
{
  size_t nlabels = 0, strings = 0;
  for (size_t i = 0; i < n; i++) {
    const vg_store_alert_t *a = &alerts[i];
    if (a->nlabels > SIZE_MAX / 4 - nlabels ||
        a->nannotations > SIZE_MAX / 4 - nlabels - a->nlabels ||
        labels_size(a->labels, a->nlabels, &strings) != 0 ||
        labels_size(a->annotations, a->nannotations, &strings) != 0) {
      return NULL;
    }
    nlabels += a->nlabels + a->nannotations;
    size_t add = slen(a->fingerprint) + slen(a->name) + slen(a->severity) + slen(a->status) +
                 slen(a->source) + slen(a->generator_url) + slen(a->group_key);
    if (add > SIZE_MAX / 2 - strings) {
      return NULL;
    }
    strings += add;
  }
  size_t total = 0;
  if (n > SIZE_MAX / sizeof(vg_store_alert_t) || nlabels > SIZE_MAX / sizeof(vg_label_t) ||
      !grow(&total, sizeof(store_job_t)) || !grow(&total, n * sizeof(vg_store_alert_t)) ||
      !grow(&total, n * sizeof(vg_store_result_t)) || !grow(&total, nlabels * sizeof(vg_label_t)) ||
      !grow(&total, strings)) {
    return NULL;
  }
  char *block = malloc(total);
  if (block == NULL) {
    return NULL;
  }
  size_t off = 0;
  store_job_t *j = (store_job_t *)block;
  grow(&off, sizeof(store_job_t));
  memset(j, 0, sizeof *j);
  j->kind = JOB_BATCH;
  j->n = n;
  j->alerts = (vg_store_alert_t *)(block + off);
  grow(&off, n * sizeof(vg_store_alert_t));
  j->results = (vg_store_result_t *)(block + off);
  memset(j->results, 0, n * sizeof(vg_store_result_t));
  grow(&off, n * sizeof(vg_store_result_t));
  vg_label_t *labels = (vg_label_t *)(block + off);
  grow(&off, nlabels * sizeof(vg_label_t));
  char *cursor = block + off;
  for (size_t i = 0; i < n; i++) {
    const vg_store_alert_t *a = &alerts[i];
    vg_store_alert_t *c = &j->alerts[i];
    *c = *a;
    c->fingerprint = put_str(&cursor, a->fingerprint);
    c->name = put_str(&cursor, a->name);
    c->severity = put_str(&cursor, a->severity);
    c->status = put_str(&cursor, a->status);
    c->source = put_str(&cursor, a->source);
    c->generator_url = put_str(&cursor, a->generator_url);
    c->group_key = put_str(&cursor, a->group_key);
    put_labels(&cursor, labels, a->labels, a->nlabels);
    c->labels = labels;
    labels += a->nlabels;
    put_labels(&cursor, labels, a->annotations, a->nannotations);
    c->annotations = labels;
    labels += a->nannotations;
  }
  return j;
}

/* ---- small helpers ---- */

int64_t store_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t secs_to_ms(double s)
{
  if (!isfinite(s) || s <= 0 || s > 9.2e15) {
    return 0;
  }
  return (int64_t)llround(s * 1000.0);
}

int store_errno(int rc)
{
  switch (rc & 0xff) {
    case SQLITE_OK:
      return 0;
    case SQLITE_FULL:
      return -ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return -EBUSY;
    case SQLITE_NOMEM:
      return -ENOMEM;
    case SQLITE_READONLY:
      return -EROFS;
    default:
      return -EIO;
  }
}

static int severity_rank(const char *s)
{
  static const char *const order[] = { "info", "low", "medium", "high", "critical" };
  for (int i = 0; i < 5; i++) {
    if (s != NULL && strcmp(s, order[i]) == 0) {
      return i + 1;
    }
  }
  return 0;
}

static const char *nz(const char *s)
{
  return s != NULL ? s : "";
}

static bool streq(const char *a, const char *b)
{
  return strcmp(nz(a), nz(b)) == 0;
}

/* Canonical JSON text of a label set (sorted keys, compact): what is stored and compared. */
static char *labels_text(const vg_label_t *ls, size_t n)
{
  json_t *o = store_labels_json(ls, n);
  char *text = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref(o);
  return text;
}

/* ---- the writer's prepared statements ---- */

enum {
  ST_ALERT_GET,
  ST_ALERT_TOUCH,
  ST_ALERT_UPSERT,
  ST_INC_OPEN_FOR_GROUP,
  ST_INC_RESOLVED_FOR_GROUP,
  ST_INC_GET,
  ST_INC_INSERT,
  ST_INC_REOPEN,
  ST_INC_RESOLVE,
  ST_INC_SEVERITY,
  ST_INC_TOUCH,
  ST_INC_ACK,
  ST_INC_CLOSE,
  ST_INC_FIRING,
  ST_LINK,
  ST_TIMELINE,
  ST_ESC_CANCEL,
  ST_ALERT_DECIDED,
  ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
  [ST_ALERT_GET] =
      "SELECT name, severity, status, labels, annotations, starts_at, ends_at,"
      " generator_url, group_key, incident_id FROM alerts WHERE fingerprint = ?1",
  [ST_ALERT_TOUCH] = "UPDATE alerts SET last_seen = ?2, ends_at = ?3 WHERE fingerprint = ?1",
  [ST_ALERT_UPSERT] =
      "INSERT INTO alerts (fingerprint, name, severity, status, labels, annotations, starts_at,"
      " ends_at, source, generator_url, group_key, incident_id, first_seen, last_seen,"
      " updated_at, undecided)"
      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?13, ?14)"
      " ON CONFLICT (fingerprint) DO UPDATE SET name = excluded.name,"
      " severity = excluded.severity, status = excluded.status, labels = excluded.labels,"
      " annotations = excluded.annotations, starts_at = excluded.starts_at,"
      " ends_at = excluded.ends_at, source = excluded.source,"
      " generator_url = excluded.generator_url, group_key = excluded.group_key,"
      " incident_id = excluded.incident_id, last_seen = excluded.last_seen,"
      " updated_at = excluded.updated_at, undecided = excluded.undecided",
  [ST_INC_OPEN_FOR_GROUP] =
      "SELECT id FROM incidents WHERE group_key = ?1"
      " AND status NOT IN ('resolved', 'closed') ORDER BY id DESC LIMIT 1",
  [ST_INC_RESOLVED_FOR_GROUP] =
      "SELECT id, resolved_at FROM incidents WHERE group_key = ?1"
      " AND status = 'resolved' ORDER BY resolved_at DESC LIMIT 1",
  [ST_INC_GET] = "SELECT status, severity FROM incidents WHERE id = ?1",
  [ST_INC_INSERT] =
      "INSERT INTO incidents (group_key, title, severity, status, opened_at,"
      " updated_at) VALUES (?1, ?2, ?3, 'open', ?4, ?4)",
  [ST_INC_REOPEN] =
      "UPDATE incidents SET status = 'open', resolved_at = NULL, updated_at = ?2"
      " WHERE id = ?1",
  [ST_INC_RESOLVE] =
      "UPDATE incidents SET status = 'resolved', resolved_at = ?2,"
      " updated_at = ?3 WHERE id = ?1",
  [ST_INC_SEVERITY] = "UPDATE incidents SET severity = ?2, updated_at = ?3 WHERE id = ?1",
  [ST_INC_TOUCH] = "UPDATE incidents SET updated_at = ?2 WHERE id = ?1",
  [ST_INC_ACK] =
      "UPDATE incidents SET status = 'investigating', acked_by = ?2, acked_at = ?3,"
      " updated_at = ?3 WHERE id = ?1",
  [ST_INC_CLOSE] =
      "UPDATE incidents SET status = 'closed', closed_at = ?2,"
      " resolved_at = coalesce(resolved_at, ?2), updated_at = ?2 WHERE id = ?1",
  [ST_INC_FIRING] = "SELECT count(*) FROM alerts WHERE incident_id = ?1 AND status = 'firing'",
  [ST_LINK] =
      "INSERT OR IGNORE INTO incident_alerts (incident_id, fingerprint, attached_at)"
      " VALUES (?1, ?2, ?3)",
  [ST_TIMELINE] =
      "INSERT INTO timeline (incident_id, at, who, event, from_status, to_status,"
      " comment) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
  [ST_ESC_CANCEL] =
      "UPDATE escalations SET state = 'cancelled', note = ?2"
      " WHERE incident_id = ?1 AND state IN ('pending', 'due')",
  [ST_ALERT_DECIDED] = "UPDATE alerts SET undecided = 0 WHERE fingerprint = ?1 AND undecided = ?2",
};

/* The writer thread's private state. */
typedef struct {
  vg_store_t *s;
  sqlite3 *db;
  sqlite3_stmt *st[ST_COUNT];
  int64_t now;
  int64_t next_prune;
  int64_t next_expiry;
  /* An incident whose updated_at is already w->now in this transaction: alerts of one group
   * arrive together, and touching it again for each one was a statement (and a page copy into
   * the statement journal) per alert for nothing. Kept across alert batches only: cleared when
   * a transaction starts, around other jobs and when a job is rolled back. */
  int64_t touched;
  /* The number of the last change stored (an alert new or changed): what the alert keeps in
   * `undecided`. Starts above every number left in the table, so that a number never names
   * two changes of one alert, even two in one transaction. */
  int64_t change;
} writer_t;

static sqlite3_stmt *stmt(writer_t *w, int which)
{
  sqlite3_stmt *st = w->st[which];
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return st;
}

/* Runs a statement that returns no row (or whose rows are ignored). */
static int step_done(sqlite3_stmt *st)
{
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
  }
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
  if (v == NULL) {
    sqlite3_bind_null(st, i);
  } else {
    sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
  }
}

static int timeline(writer_t *w,
                    int64_t inc,
                    const char *who,
                    const char *event,
                    const char *from,
                    const char *to,
                    const char *comment)
{
  sqlite3_stmt *st = stmt(w, ST_TIMELINE);
  sqlite3_bind_int64(st, 1, inc);
  sqlite3_bind_int64(st, 2, w->now);
  bind_text(st, 3, who);
  bind_text(st, 4, event);
  bind_text(st, 5, from);
  bind_text(st, 6, to);
  bind_text(st, 7, comment);
  return step_done(st);
}

/* Cancels the incident's escalation timers still pending or due, in the transaction of the
 * status change that takes it out of 'open' (G4: a timer of an acknowledged, resolved or
 * closed incident never fires), and says so on the timeline when there were any. */
static int escalations_cancel(writer_t *w, int64_t inc, const char *why)
{
  sqlite3_stmt *st = stmt(w, ST_ESC_CANCEL);
  sqlite3_bind_int64(st, 1, inc);
  bind_text(st, 2, why);
  int rc = step_done(st);
  int64_t n = rc == SQLITE_OK ? sqlite3_changes64(w->db) : 0;
  if (rc != SQLITE_OK || n == 0) {
    return rc;
  }
  char comment[128];
  snprintf(comment, sizeof comment, "%s: %" PRId64 " pending escalation%s cancelled", why, n,
           n == 1 ? "" : "s");
  return timeline(w, inc, "vigil", "escalation cancelled", NULL, NULL, comment);
}

/* Reads an incident's status and severity into the buffers; SQLITE_NOTFOUND when absent. */
static int incident_get(writer_t *w, int64_t id, char status[16], char severity[32])
{
  sqlite3_stmt *st = stmt(w, ST_INC_GET);
  sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    snprintf(status, 16, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(severity, 32, "%s", (const char *)sqlite3_column_text(st, 1));
    sqlite3_reset(st);
    return SQLITE_OK;
  }
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SQLITE_NOTFOUND : rc;
}

static bool status_active(const char *status)
{
  return strcmp(status, "resolved") != 0 && strcmp(status, "closed") != 0;
}

/* Raises the incident's severity to the alert's when higher, and marks it updated. */
static int incident_attach(writer_t *w, int64_t inc, const vg_store_alert_t *a)
{
  char status[16], severity[32];
  int rc = incident_get(w, inc, status, severity);
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_stmt *st;
  if (severity_rank(a->severity) > severity_rank(severity)) {
    st = stmt(w, ST_INC_SEVERITY);
    sqlite3_bind_int64(st, 1, inc);
    bind_text(st, 2, a->severity);
    sqlite3_bind_int64(st, 3, w->now);
    if ((rc = step_done(st)) != SQLITE_OK) {
      return rc;
    }
    w->touched = inc;
    char comment[96];
    snprintf(comment, sizeof comment, "severity %s -> %s", severity, a->severity);
    return timeline(w, inc, "vigil", "severity", NULL, NULL, comment);
  }
  if (w->touched == inc) {
    return SQLITE_OK;
  }
  st = stmt(w, ST_INC_TOUCH);
  sqlite3_bind_int64(st, 1, inc);
  sqlite3_bind_int64(st, 2, w->now);
  if ((rc = step_done(st)) == SQLITE_OK) {
    w->touched = inc;
  }
  return rc;
}

/* Resolves an active incident none of whose alerts fires any more. */
static int incident_check_resolved(writer_t *w, int64_t inc, int64_t at, bool *resolved)
{
  char status[16], severity[32];
  int rc = incident_get(w, inc, status, severity);
  if (rc == SQLITE_NOTFOUND || (rc == SQLITE_OK && !status_active(status))) {
    return SQLITE_OK;
  }
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_stmt *st = stmt(w, ST_INC_FIRING);
  sqlite3_bind_int64(st, 1, inc);
  if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
    sqlite3_reset(st);
    return rc;
  }
  int64_t firing = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  if (firing > 0) {
    return SQLITE_OK;
  }
  st = stmt(w, ST_INC_RESOLVE);
  sqlite3_bind_int64(st, 1, inc);
  sqlite3_bind_int64(st, 2, at);
  sqlite3_bind_int64(st, 3, w->now);
  if ((rc = step_done(st)) != SQLITE_OK) {
    return rc;
  }
  *resolved = true;
  if ((rc = timeline(w, inc, "vigil", "resolved", status, "resolved", "all alerts resolved")) !=
      SQLITE_OK) {
    return rc;
  }
  return escalations_cancel(w, inc, "all alerts resolved");
}

static int64_t select_id(writer_t *w, int which, const char *group_key, int *rc)
{
  sqlite3_stmt *st = stmt(w, which);
  bind_text(st, 1, group_key);
  int64_t id = 0;
  *rc = sqlite3_step(st);
  if (*rc == SQLITE_ROW) {
    id = sqlite3_column_int64(st, 0);
    *rc = SQLITE_OK;
  } else if (*rc == SQLITE_DONE) {
    *rc = SQLITE_OK;
  }
  sqlite3_reset(st);
  return id;
}

static const char *annotation(const vg_store_alert_t *a, const char *name)
{
  for (size_t i = 0; i < a->nannotations; i++) {
    if (a->annotations[i].name_len == strlen(name) &&
        memcmp(a->annotations[i].name, name, a->annotations[i].name_len) == 0) {
      return a->annotations[i].value_len > 0 ? a->annotations[i].value : NULL;
    }
  }
  return NULL;
}

/* Finds the incident a firing alert belongs to: the open one of its group, a resolved one it
 * reopens within the grace period, or a new one. */
static int incident_for_firing(
    writer_t *w, const vg_store_alert_t *a, int64_t starts_ms, vg_store_result_t *res, int64_t *out)
{
  int rc;
  int64_t inc = select_id(w, ST_INC_OPEN_FOR_GROUP, a->group_key, &rc);
  if (rc != SQLITE_OK) {
    return rc;
  }
  if (inc > 0) {
    *out = inc;
    return incident_attach(w, inc, a);
  }
  sqlite3_stmt *st = stmt(w, ST_INC_RESOLVED_FOR_GROUP);
  bind_text(st, 1, a->group_key);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(st, 0), resolved_at = sqlite3_column_int64(st, 1);
    double grace_ms = w->s->opts.reopen_grace_s * 1000.0;
    if ((double)(starts_ms - resolved_at) <= grace_ms) {
      inc = id;
    }
  } else if (rc != SQLITE_DONE) {
    sqlite3_reset(st);
    return rc;
  }
  sqlite3_reset(st);
  if (inc > 0) {
    st = stmt(w, ST_INC_REOPEN);
    sqlite3_bind_int64(st, 1, inc);
    sqlite3_bind_int64(st, 2, w->now);
    if ((rc = step_done(st)) != SQLITE_OK || (rc = timeline(w, inc, "vigil", "reopened", "resolved",
                                                            "open", nz(a->name))) != SQLITE_OK) {
      return rc;
    }
    res->incident_reopened = true;
    *out = inc;
    return incident_attach(w, inc, a);
  }
  const char *title = annotation(a, "summary");
  st = stmt(w, ST_INC_INSERT);
  bind_text(st, 1, nz(a->group_key));
  bind_text(st, 2, title != NULL ? title : nz(a->name));
  bind_text(st, 3, nz(a->severity));
  sqlite3_bind_int64(st, 4, w->now);
  if ((rc = step_done(st)) != SQLITE_OK) {
    return rc;
  }
  inc = sqlite3_last_insert_rowid(w->db);
  res->incident_opened = true;
  *out = inc;
  return timeline(w, inc, "vigil", "opened", NULL, "open", nz(a->name));
}

/* The stored state of an alert, as far as deciding NEW / CHANGED / UNCHANGED needs it. */
typedef struct {
  bool found;
  char *name, *severity, *status, *labels, *annotations, *generator_url, *group_key;
  int64_t starts_at, ends_at, incident_id;
} prior_t;

static char *col_dup(sqlite3_stmt *st, int i)
{
  const char *t = (const char *)sqlite3_column_text(st, i);
  return t != NULL ? strdup(t) : NULL;
}

static void prior_free(prior_t *p)
{
  free(p->name);
  free(p->severity);
  free(p->status);
  free(p->labels);
  free(p->annotations);
  free(p->generator_url);
  free(p->group_key);
}

static int prior_load(writer_t *w, const char *fp, prior_t *p)
{
  memset(p, 0, sizeof *p);
  sqlite3_stmt *st = stmt(w, ST_ALERT_GET);
  bind_text(st, 1, fp);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(st);
    return SQLITE_OK;
  }
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    return rc;
  }
  p->found = true;
  p->name = col_dup(st, 0);
  p->severity = col_dup(st, 1);
  p->status = col_dup(st, 2);
  p->labels = col_dup(st, 3);
  p->annotations = col_dup(st, 4);
  p->starts_at = sqlite3_column_int64(st, 5);
  p->ends_at = sqlite3_column_int64(st, 6);
  p->generator_url = col_dup(st, 7);
  p->group_key = col_dup(st, 8);
  p->incident_id = sqlite3_column_int64(st, 9);
  sqlite3_reset(st);
  if (p->name == NULL || p->severity == NULL || p->status == NULL || p->labels == NULL ||
      p->annotations == NULL || p->group_key == NULL) {
    return SQLITE_NOMEM;
  }
  return SQLITE_OK;
}

/* Applies one alert: decides its outcome, keeps its incident up to date, stores it. */
static int apply_alert(writer_t *w, const vg_store_alert_t *a, vg_store_result_t *res)
{
  int rc;
  char *labels = labels_text(a->labels, a->nlabels);
  char *annotations = labels_text(a->annotations, a->nannotations);
  prior_t p;
  memset(&p, 0, sizeof p);
  if (labels == NULL || annotations == NULL) {
    rc = SQLITE_NOMEM;
    goto out;
  }
  if ((rc = prior_load(w, a->fingerprint, &p)) != SQLITE_OK) {
    goto out;
  }
  const bool firing = strcmp(a->status, "firing") == 0;
  const int64_t starts_ms = secs_to_ms(a->starts_at), ends_ms = secs_to_ms(a->ends_at);
  /* G2: a duplicate delivery changes nothing but when it was last seen */
  /* A firing alert re-sent through API v2 carries a later endsAt each time (its expiry moves
     on), and without a startsAt it gets "now" again: while it fires, that refreshes it (the
     first startsAt stays, as Alertmanager merges them), it does not change it. */
  const bool same_episode = p.starts_at == starts_ms && p.ends_at == ends_ms;
  const bool refresh = firing && streq(p.status, "firing") && starts_ms >= p.starts_at &&
                       ends_ms >= p.ends_at && p.ends_at != 0;
  const bool duplicate = p.found && streq(p.status, a->status) && (same_episode || refresh) &&
                         streq(p.labels, labels) && streq(p.annotations, annotations) &&
                         streq(p.name, a->name) && streq(p.severity, a->severity) &&
                         streq(p.generator_url, a->generator_url) &&
                         streq(p.group_key, a->group_key);
  /* a firing delivery of an episode already resolved (same startsAt) is an HA peer or a retry
     lagging behind the resolution: Prometheus gives a new episode a new startsAt */
  const bool stale =
      p.found && firing && streq(p.status, "resolved") && starts_ms > 0 && p.starts_at == starts_ms;
  if (duplicate || stale) {
    res->outcome = VG_STORE_UNCHANGED;
    res->incident_id = p.incident_id;
    sqlite3_stmt *st = stmt(w, ST_ALERT_TOUCH);
    bind_text(st, 1, a->fingerprint);
    sqlite3_bind_int64(st, 2, w->now);
    sqlite3_bind_int64(st, 3, duplicate && refresh ? ends_ms : p.ends_at);
    rc = step_done(st);
    goto out;
  }
  res->outcome = p.found ? VG_STORE_CHANGED : VG_STORE_NEW;

  int64_t inc = 0, left = 0; /* left: an incident the alert moves away from */
  if (firing) {
    bool keep = false;
    if (p.incident_id > 0 && streq(p.group_key, a->group_key) && streq(p.status, "firing")) {
      char status[16], severity[32];
      rc = incident_get(w, p.incident_id, status, severity);
      if (rc != SQLITE_OK && rc != SQLITE_NOTFOUND) {
        goto out;
      }
      keep = rc == SQLITE_OK && status_active(status);
    }
    if (keep) {
      inc = p.incident_id;
      rc = incident_attach(w, inc, a);
    } else {
      rc = incident_for_firing(w, a, starts_ms, res, &inc);
      left = p.incident_id != inc ? p.incident_id : 0;
    }
  } else {
    /* a resolved alert stays with its incident; one never seen firing joins its group's open
       incident, if any, and opens none */
    inc = p.incident_id;
    if (inc == 0) {
      inc = select_id(w, ST_INC_OPEN_FOR_GROUP, a->group_key, &rc);
    }
  }
  if (rc != SQLITE_OK) {
    goto out;
  }

  sqlite3_stmt *st = stmt(w, ST_ALERT_UPSERT);
  bind_text(st, 1, a->fingerprint);
  bind_text(st, 2, nz(a->name));
  bind_text(st, 3, nz(a->severity));
  bind_text(st, 4, a->status);
  bind_text(st, 5, labels);
  bind_text(st, 6, annotations);
  sqlite3_bind_int64(st, 7, starts_ms);
  sqlite3_bind_int64(st, 8, ends_ms);
  bind_text(st, 9, nz(a->source));
  bind_text(st, 10, a->generator_url);
  bind_text(st, 11, nz(a->group_key));
  if (inc > 0) {
    sqlite3_bind_int64(st, 12, inc);
  } else {
    sqlite3_bind_null(st, 12);
  }
  sqlite3_bind_int64(st, 13, w->now);
  sqlite3_bind_int64(st, 14, ++w->change);
  if ((rc = step_done(st)) != SQLITE_OK) {
    goto out;
  }
  res->incident_id = inc;
  res->change = w->change;
  if (inc > 0) {
    st = stmt(w, ST_LINK);
    sqlite3_bind_int64(st, 1, inc);
    bind_text(st, 2, a->fingerprint);
    sqlite3_bind_int64(st, 3, w->now);
    if ((rc = step_done(st)) != SQLITE_OK) {
      goto out;
    }
  }
  bool ignored = false;
  if (left > 0 && (rc = incident_check_resolved(w, left, w->now, &ignored)) != SQLITE_OK) {
    goto out;
  }
  if (!firing && inc > 0) {
    rc = incident_check_resolved(w, inc, ends_ms > 0 ? ends_ms : w->now, &res->incident_resolved);
  }
out:
  prior_free(&p);
  free(labels);
  free(annotations);
  return rc;
}

/* An operator's transition. Refusals set the job's status and write nothing. */
static int apply_action(writer_t *w, store_job_t *j)
{
  char status[16], severity[32];
  int rc = incident_get(w, j->id, status, severity);
  if (rc == SQLITE_NOTFOUND) {
    char msg[64];
    snprintf(msg, sizeof msg, "no incident %" PRId64, j->id);
    job_fail(j, -ENOENT, msg);
    return SQLITE_OK;
  }
  if (rc != SQLITE_OK) {
    return rc;
  }
  const char *refusal = NULL, *to = NULL, *event = NULL, *why = NULL;
  int which = -1;
  if (strcmp(status, "closed") == 0) {
    refusal = "is closed";
  } else if (strcmp(j->action, "ack") == 0) {
    if (strcmp(status, "open") != 0) {
      refusal = strcmp(status, "resolved") == 0 ? "is resolved" : "is already acknowledged";
    }
    to = "investigating", event = "acknowledged", which = ST_INC_ACK;
    why = "incident acknowledged";
  } else if (strcmp(j->action, "resolve") == 0) {
    if (strcmp(status, "resolved") == 0) {
      refusal = "is already resolved";
    }
    to = "resolved", event = "resolved", which = ST_INC_RESOLVE;
    why = "incident resolved";
  } else {
    to = "closed", event = "closed", which = ST_INC_CLOSE;
    why = "incident closed";
  }
  if (refusal != NULL) {
    snprintf(j->err, sizeof j->err, "incident %" PRId64 " %s", j->id, refusal);
    j->status = -EINVAL;
    return SQLITE_OK;
  }
  sqlite3_stmt *st = stmt(w, which);
  sqlite3_bind_int64(st, 1, j->id);
  if (which == ST_INC_ACK) {
    bind_text(st, 2, j->who);
    sqlite3_bind_int64(st, 3, w->now);
  } else if (which == ST_INC_RESOLVE) {
    sqlite3_bind_int64(st, 2, w->now);
    sqlite3_bind_int64(st, 3, w->now);
  } else {
    sqlite3_bind_int64(st, 2, w->now);
  }
  if ((rc = step_done(st)) != SQLITE_OK ||
      (rc = timeline(w, j->id, j->who, event, status, to, j->comment)) != SQLITE_OK) {
    return rc;
  }
  return escalations_cancel(w, j->id, why);
}

static int exec(sqlite3 *db, const char *sql)
{
  return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static void fail_all(store_job_t *list, int rc, const char *msg)
{
  for (store_job_t *j = list; j != NULL; j = j->next) {
    if (j->status == 0) {
      job_fail(j, store_errno(rc) != 0 ? store_errno(rc) : -EIO, msg);
    }
    if (j->kind == JOB_BATCH) {
      memset(j->results, 0, j->n * sizeof(vg_store_result_t));
    }
  }
}

static void record_commit(vg_store_t *s, store_job_t *list, bool ok, uint64_t us)
{
  static const uint64_t bounds[11] = { 100,   250,   500,   1000,   2500,  5000,
                                       10000, 25000, 50000, 100000, 250000 };
  uv_mutex_lock(&s->mu);
  if (ok) {
    int b = 0;
    while (b < 11 && us > bounds[b]) {
      b++;
    }
    s->stats.commits++;
    s->stats.commit_us_buckets[b]++;
    s->stats.commit_us_sum += (double)us;
    for (store_job_t *j = list; j != NULL; j = j->next) {
      if (j->kind == JOB_BATCH && j->status == 0) {
        s->stats.batches++;
        s->stats.alerts += j->n;
      }
    }
  } else {
    s->stats.commit_failures++;
  }
  uv_mutex_unlock(&s->mu);
  atomic_store(&s->writable, ok);
}

/* Clears the undecided mark of the named alerts whose named change is still their latest. */
static int apply_decided(writer_t *w, const store_job_t *j)
{
  for (size_t i = 0; i < j->n; i++) {
    sqlite3_stmt *st = stmt(w, ST_ALERT_DECIDED);
    bind_text(st, 1, j->decisions[i].fingerprint);
    sqlite3_bind_int64(st, 2, j->decisions[i].change);
    int rc = step_done(st);
    if (rc != SQLITE_OK) {
      return rc;
    }
  }
  return SQLITE_OK;
}

/* ---- expiry ---- */

/* Resolves one expired alert, unless a delivery in the same transaction refreshed it. */
static int apply_expiry(writer_t *w, const vg_store_alert_t *a, vg_store_result_t *res)
{
  prior_t p;
  memset(&p, 0, sizeof p);
  int rc = prior_load(w, a->fingerprint, &p);
  bool still = rc == SQLITE_OK && p.found && streq(p.status, "firing") && p.ends_at > 0 &&
               p.ends_at <= w->now;
  res->incident_id = p.incident_id;
  prior_free(&p);
  if (rc != SQLITE_OK) {
    return rc;
  }
  if (!still) {
    res->outcome = VG_STORE_UNCHANGED;
    return SQLITE_OK;
  }
  return apply_alert(w, a, res);
}

static int labels_from_text(const char *text, json_t **doc, vg_label_t **out, size_t *n)
{
  *doc = json_loads(text != NULL ? text : "{}", JSON_ALLOW_NUL, NULL);
  *out = NULL;
  *n = 0;
  if (!json_is_object(*doc)) {
    return -1;
  }
  *out = calloc(json_object_size(*doc) + 1, sizeof(vg_label_t));
  if (*out == NULL) {
    return -1;
  }
  const char *k;
  json_t *v;
  json_object_foreach(*doc, k, v)
  {
    if (json_is_string(v)) {
      (*out)[(*n)++] = (vg_label_t){ k, strlen(k), json_string_value(v), json_string_length(v) };
    }
  }
  return 0;
}

/* A batch of the firing alerts whose endsAt has passed, as resolutions; NULL when none. */
static store_job_t *expiry_job(writer_t *w)
{
  enum { EXPIRY_MAX = 500 };
  sqlite3_stmt *st = NULL;
  int64_t now = store_now_ms();
  if (sqlite3_prepare_v2(w->db,
                         "SELECT fingerprint, name, severity, labels, annotations, starts_at,"
                         " ends_at, source, generator_url, group_key FROM alerts"
                         " INDEXED BY alerts_firing_ends" /* the planner prefers status alone */
                         " WHERE status = 'firing' AND ends_at > 0 AND ends_at <= ?1 LIMIT ?2",
                         -1, &st, NULL) != SQLITE_OK) {
    return NULL;
  }
  sqlite3_bind_int64(st, 1, now);
  sqlite3_bind_int(st, 2, EXPIRY_MAX);
  vg_store_alert_t alerts[EXPIRY_MAX];
  json_t *docs[2 * EXPIRY_MAX];
  vg_label_t *arrays[2 * EXPIRY_MAX];
  char *strs[5 * EXPIRY_MAX];
  size_t n = 0, nd = 0, ns = 0;
  bool ok = true;
  while (ok && sqlite3_step(st) == SQLITE_ROW) {
    vg_store_alert_t *a = &alerts[n];
    memset(a, 0, sizeof *a);
    char *fp = col_dup(st, 0), *name = col_dup(st, 1), *sev = col_dup(st, 2);
    char *src = col_dup(st, 7), *gk = col_dup(st, 9);
    strs[ns++] = fp, strs[ns++] = name, strs[ns++] = sev, strs[ns++] = src, strs[ns++] = gk;
    char *url = sqlite3_column_type(st, 8) == SQLITE_NULL ? NULL : col_dup(st, 8);
    if (url != NULL) {
      strs[ns++] = url;
    }
    ok = fp != NULL && name != NULL && sev != NULL && src != NULL && gk != NULL &&
         labels_from_text((const char *)sqlite3_column_text(st, 3), &docs[nd], &arrays[nd],
                          &a->nlabels) == 0;
    a->labels = arrays[nd++];
    ok = ok && labels_from_text((const char *)sqlite3_column_text(st, 4), &docs[nd], &arrays[nd],
                                &a->nannotations) == 0;
    a->annotations = arrays[nd++];
    a->fingerprint = fp;
    a->name = name;
    a->severity = sev;
    a->status = "resolved";
    a->starts_at = (double)sqlite3_column_int64(st, 5) / 1000.0;
    a->ends_at = (double)sqlite3_column_int64(st, 6) / 1000.0;
    a->source = src;
    a->generator_url = url;
    a->group_key = gk;
    n++;
    if (ns + 6 > 5 * EXPIRY_MAX) {
      break;
    }
  }
  sqlite3_finalize(st);
  store_job_t *j = ok && n > 0 ? job_copy_batch(alerts, n) : NULL;
  if (j != NULL) {
    j->expiry = true;
  }
  for (size_t i = 0; i < nd; i++) {
    json_decref(docs[i]);
    free(arrays[i]);
  }
  for (size_t i = 0; i < ns; i++) {
    free(strs[i]);
  }
  return j;
}

void vg_store_on_expired(vg_store_t *s, vg_store_expired_fn fn, void *ud)
{
  s->expired_fn = fn;
  s->expired_ud = ud;
}

/* One transaction for every job taken: each job in a savepoint, so a job whose statements
 * fail is undone alone; when the transaction itself is lost (I/O error, disk full) or COMMIT
 * fails, every job fails. Nothing reports success before COMMIT returned. */
static void run_jobs(writer_t *w, store_job_t *list)
{
  sqlite3 *db = w->db;
  w->now = store_now_ms();
  uint64_t t0 = uv_hrtime();
  int rc = exec(db, "BEGIN IMMEDIATE");
  if (rc != SQLITE_OK) {
    fail_all(list, rc, sqlite3_errmsg(db));
    record_commit(w->s, list, false, 0);
    return;
  }
  w->touched = 0;
  for (store_job_t *j = list; j != NULL; j = j->next) {
    if ((rc = exec(db, "SAVEPOINT job")) != SQLITE_OK) {
      break;
    }
    if (j->kind != JOB_BATCH) {
      w->touched = 0; /* another engine's statements may change incidents */
    }
    if (j->kind == JOB_BATCH) {
      for (size_t i = 0; i < j->n && rc == SQLITE_OK; i++) {
        rc = j->expiry ? apply_expiry(w, &j->alerts[i], &j->results[i])
                       : apply_alert(w, &j->alerts[i], &j->results[i]);
      }
    } else if (j->kind == JOB_CALL) {
      rc = j->work(db, j->ud, j->err, sizeof j->err);
    } else if (j->kind == JOB_DECIDED) {
      rc = apply_decided(w, j);
    } else {
      rc = apply_action(w, j);
    }
    if (j->kind != JOB_BATCH) {
      w->touched = 0;
    }
    if (rc == SQLITE_OK) {
      rc = exec(db, "RELEASE job");
      if (rc != SQLITE_OK) {
        break;
      }
      continue;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "%s",
             j->kind == JOB_CALL && j->err[0] != '\0' ? j->err
             : (rc & 0xff) == SQLITE_NOMEM            ? sqlite3_errstr(rc)
                                                      : sqlite3_errmsg(db));
    if (sqlite3_get_autocommit(db)) {
      break; /* SQLite rolled the whole transaction back */
    }
    job_fail(j, store_errno(rc) != 0 ? store_errno(rc) : -EIO, msg);
    if (j->kind == JOB_BATCH) {
      memset(j->results, 0, j->n * sizeof(vg_store_result_t));
    }
    w->touched = 0; /* its touches are undone */
    if ((rc = exec(db, "ROLLBACK TO job")) != SQLITE_OK || (rc = exec(db, "RELEASE job"))) {
      break;
    }
  }
  if (rc == SQLITE_OK) {
    rc = exec(db, "COMMIT");
  }
  if (rc != SQLITE_OK) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
    if (!sqlite3_get_autocommit(db)) {
      exec(db, "ROLLBACK");
    }
    fail_all(list, rc, msg);
    record_commit(w->s, list, false, 0);
    return;
  }
  record_commit(w->s, list, true, (uv_hrtime() - t0) / 1000);
  for (store_job_t *j = list; j != NULL; j = j->next) {
    if (j->kind == JOB_ACTION && j->status == 0) {
      j->status = store_render_incident(db, j->id, &j->json, &j->json_len, j->err, sizeof j->err);
    }
  }
}

/* ---- retention ---- */

static int64_t changes_of(writer_t *w, const char *sql, int64_t a, int64_t b, int *rc)
{
  sqlite3_stmt *st = NULL;
  *rc = sqlite3_prepare_v2(w->db, sql, -1, &st, NULL);
  if (*rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    *rc = step_done(st);
  }
  sqlite3_finalize(st);
  return *rc == SQLITE_OK ? sqlite3_changes64(w->db) : 0;
}

/* One small prune transaction. Returns true when more is left to do. */
static bool prune_step(writer_t *w)
{
  vg_store_t *s = w->s;
  int64_t now = store_now_ms();
  int64_t cutoff = now - (int64_t)(s->opts.retention_s * 1000.0);
  int rc = exec(w->db, "BEGIN IMMEDIATE");
  if (rc != SQLITE_OK) {
    return false;
  }
  int64_t n1 = changes_of(w,
                          "DELETE FROM alerts WHERE rowid IN (SELECT rowid FROM alerts"
                          " WHERE status = 'resolved' AND ends_at < ?1"
                          " AND (ends_at > 0 OR updated_at < ?1) LIMIT ?2)",
                          cutoff, PRUNE_STEP, &rc);
  int64_t n2 = 0, n3 = 0;
  bool more_alerts = false;
  if (rc == SQLITE_OK) {
    n2 = changes_of(w,
                    "DELETE FROM incidents WHERE id IN (SELECT id FROM incidents"
                    " WHERE status = 'closed' AND closed_at < ?1 LIMIT ?2)",
                    cutoff, PRUNE_STEP, &rc);
  }
  if (rc == SQLITE_OK && s->opts.max_alerts > 0) {
    sqlite3_stmt *st = NULL;
    int64_t total = 0;
    rc = sqlite3_prepare_v2(w->db, "SELECT count(*) FROM alerts", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
      total = sqlite3_column_int64(st, 0);
      rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    int64_t excess = total - (int64_t)s->opts.max_alerts;
    if (rc == SQLITE_OK && excess > 0) {
      n3 = changes_of(w,
                      "DELETE FROM alerts WHERE rowid IN (SELECT rowid FROM alerts"
                      " WHERE status = 'resolved' ORDER BY ends_at, updated_at LIMIT ?1)",
                      excess < PRUNE_STEP ? excess : PRUNE_STEP, 0, &rc);
      more_alerts = excess > PRUNE_STEP && n3 == PRUNE_STEP;
    }
  }
  if (rc == SQLITE_OK) {
    rc = exec(w->db, "COMMIT");
  }
  if (rc != SQLITE_OK) {
    exec(w->db, "ROLLBACK");
    return false;
  }
  bool more = n1 == PRUNE_STEP || n2 == PRUNE_STEP || more_alerts;
  uv_mutex_lock(&s->mu);
  s->stats.pruned += (uint64_t)(n1 + n2 + n3);
  uv_mutex_unlock(&s->mu);
  return more;
}

/* ---- the writer thread ---- */

static void writer_main(void *arg)
{
  writer_t *w = arg;
  vg_store_t *s = w->s;
  bool backlog = false; /* jobs arrived while the last transaction committed */
  uv_mutex_lock(&s->mu);
  for (;;) {
    while (s->q_head == NULL && !s->stop) {
      int64_t next = w->next_prune < w->next_expiry ? w->next_prune : w->next_expiry;
      int64_t due = next - store_now_ms();
      if (due <= 0) {
        break;
      }
      uv_cond_timedwait(&s->cond, &s->mu, (uint64_t)due * 1000000u);
    }
    if (s->q_head == NULL && s->stop) {
      break;
    }
    if (store_now_ms() >= w->next_expiry && !s->stop) {
      uv_mutex_unlock(&s->mu);
      store_job_t *ej = expiry_job(w);
      w->next_expiry = store_now_ms() + EXPIRY_EVERY_MS;
      uv_mutex_lock(&s->mu);
      if (ej != NULL) { /* queued like a submission: it commits with the next group */
        s->stats.pending += ej->n;
        if (s->q_tail != NULL) {
          s->q_tail->next = ej;
        } else {
          s->q_head = ej;
        }
        s->q_tail = ej;
      }
    }
    if (store_now_ms() >= w->next_prune) {
      uv_mutex_unlock(&s->mu);
      bool more = prune_step(w);
      w->next_prune = store_now_ms() + (more ? 0 : PRUNE_EVERY_MS);
      uv_mutex_lock(&s->mu);
      continue;
    }
    /* group commit: give other batches up to group_commit_ms to join this transaction, as
     * long as they keep coming (each arrival within GATHER_QUIET_NS of the last); a lone
     * write waits only that quiet time, not the whole window. Batches that queued up while
     * the last transaction committed waited for it already: they go at once, and under load
     * the next transaction gathers what arrives during this one. */
    if (s->opts.group_commit_ms > 0 && !backlog) {
      uint64_t t = uv_hrtime();
      uint64_t deadline = t + s->opts.group_commit_ms * 1000000u;
      uint64_t quiet_until = t + GATHER_QUIET_NS;
      store_job_t *tail = s->q_tail;
      while (!s->stop && s->stats.pending < GATHER_MAX_ALERTS) {
        t = uv_hrtime();
        if (s->q_tail != tail) { /* another arrived: wait for the next a little longer */
          tail = s->q_tail;
          quiet_until = t + GATHER_QUIET_NS;
        }
        uint64_t until = quiet_until < deadline ? quiet_until : deadline;
        if (t >= until) {
          break;
        }
        uv_cond_timedwait(&s->cond, &s->mu, until - t);
      }
    }
    store_job_t *list = s->q_head;
    s->q_head = s->q_tail = NULL;
    uv_mutex_unlock(&s->mu);

    run_jobs(w, list);

    uv_mutex_lock(&s->mu);
    store_job_t *last = list;
    for (store_job_t *j = list; j != NULL; j = j->next) {
      s->stats.pending -= j->kind == JOB_BATCH ? j->n : 0;
      last = j;
    }
    /* a turn with no job (only expiry was due, and nothing expired) appends nothing: setting
       done_tail to NULL while the loop has not taken the list yet would make the next turn
       overwrite done_head, and the jobs there would never be answered */
    if (list != NULL) {
      if (s->done_tail != NULL) {
        s->done_tail->next = list;
      } else {
        s->done_head = list;
      }
      s->done_tail = last;
    }
    uv_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
    uv_mutex_lock(&s->mu);
    backlog = s->q_head != NULL;
  }
  uv_mutex_unlock(&s->mu);

  for (int i = 0; i < ST_COUNT; i++) {
    sqlite3_finalize(w->st[i]);
  }
  sqlite3_close(w->db);
  free(w);

  uv_mutex_lock(&s->mu);
  s->db = NULL;
  s->writer_exited = true;
  uv_mutex_unlock(&s->mu);
  uv_async_send(&s->async);
}

/* ---- WAL write coalescing ----
 *
 * SQLite writes each WAL frame with two pwrite()s (its 24-byte header, then the page), and a
 * busy group commit writes hundreds of frames: most of the writer's time went into those
 * system calls (bench/intake: perf, strace). The writer's connection opens its WAL through
 * this shim, which gathers consecutive writes in memory and hands them to the file in one
 * pwrite() before anything can depend on them: before every sync (so a commit is on disk
 * before SQLite publishes it in the wal-index and before the 2xx, exactly as without the
 * shim), before a read of a buffered range, a truncate, a size query and close. A failed
 * flush fails the operation that needed it (the sync of a commit: the commit fails). Other
 * files, and the readers' connections, use the default VFS untouched. */

#define WALBUF_MAX (2u << 20) /* bytes gathered at most before a write goes out anyway */

typedef struct {
  sqlite3_file base;
  sqlite3_file *real; /* the default VFS's file, in the same allocation */
  unsigned char *buf;
  sqlite3_int64 off; /* file offset of buf[0] */
  size_t len, cap;
} walbuf_file_t;

static sqlite3_vfs walbuf_vfs;

static int walbuf_flush(walbuf_file_t *f)
{
  if (f->len == 0) {
    return SQLITE_OK;
  }
  /* the unix VFS writes less than 128 KiB per call (it never expected more than a page) */
  enum { CHUNK = 31 * 4096 };
  int rc = SQLITE_OK;
  for (size_t at = 0; at < f->len && rc == SQLITE_OK; at += CHUNK) {
    size_t n = f->len - at < CHUNK ? f->len - at : CHUNK;
    rc = f->real->pMethods->xWrite(f->real, f->buf + at, (int)n, f->off + (sqlite3_int64)at);
  }
  f->len = 0; /* on failure too: SQLite fails the transaction and rewrites what it needs */
  return rc;
}

static int walbuf_close(sqlite3_file *p)
{
  walbuf_file_t *f = (walbuf_file_t *)p;
  int rc = walbuf_flush(f);
  int rc2 = f->real->pMethods != NULL ? f->real->pMethods->xClose(f->real) : SQLITE_OK;
  free(f->buf);
  f->buf = NULL;
  return rc != SQLITE_OK ? rc : rc2;
}

static int walbuf_read(sqlite3_file *p, void *out, int amt, sqlite3_int64 off)
{
  walbuf_file_t *f = (walbuf_file_t *)p;
  if (f->len > 0 && off < f->off + (sqlite3_int64)f->len && off + amt > f->off) {
    int rc = walbuf_flush(f);
    if (rc != SQLITE_OK) {
      return rc;
    }
  }
  return f->real->pMethods->xRead(f->real, out, amt, off);
}

static int walbuf_write(sqlite3_file *p, const void *data, int amt, sqlite3_int64 off)
{
  walbuf_file_t *f = (walbuf_file_t *)p;
  if (f->len > 0 && off == f->off + (sqlite3_int64)f->len && f->len + (size_t)amt <= f->cap) {
    memcpy(f->buf + f->len, data, (size_t)amt);
    f->len += (size_t)amt;
    return SQLITE_OK;
  }
  int rc = walbuf_flush(f); /* not contiguous (a rewritten frame, a restarted WAL), or full */
  if (rc != SQLITE_OK) {
    return rc;
  }
  if (f->cap == 0 && (f->buf = malloc(WALBUF_MAX)) != NULL) {
    f->cap = WALBUF_MAX;
  }
  if ((size_t)amt > f->cap / 2) {
    return f->real->pMethods->xWrite(f->real, data, amt, off); /* never: frames are small */
  }
  memcpy(f->buf, data, (size_t)amt);
  f->off = off;
  f->len = (size_t)amt;
  return SQLITE_OK;
}

static int walbuf_truncate(sqlite3_file *p, sqlite3_int64 size)
{
  walbuf_file_t *f = (walbuf_file_t *)p;
  int rc = walbuf_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int walbuf_sync(sqlite3_file *p, int flags)
{
  walbuf_file_t *f = (walbuf_file_t *)p;
  int rc = walbuf_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int walbuf_size(sqlite3_file *p, sqlite3_int64 *size)
{
  walbuf_file_t *f = (walbuf_file_t *)p;
  int rc = walbuf_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int walbuf_lock(sqlite3_file *p, int level)
{
  sqlite3_file *r = ((walbuf_file_t *)p)->real;
  return r->pMethods->xLock(r, level);
}

static int walbuf_unlock(sqlite3_file *p, int level)
{
  sqlite3_file *r = ((walbuf_file_t *)p)->real;
  return r->pMethods->xUnlock(r, level);
}

static int walbuf_reserved(sqlite3_file *p, int *out)
{
  sqlite3_file *r = ((walbuf_file_t *)p)->real;
  return r->pMethods->xCheckReservedLock(r, out);
}

static int walbuf_fcntl(sqlite3_file *p, int op, void *arg)
{
  walbuf_file_t *f = (walbuf_file_t *)p;
  int rc = walbuf_flush(f); /* whatever the control does, it sees the file as SQLite wrote it */
  return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
}

static int walbuf_sector(sqlite3_file *p)
{
  sqlite3_file *r = ((walbuf_file_t *)p)->real;
  return r->pMethods->xSectorSize(r);
}

static int walbuf_devchar(sqlite3_file *p)
{
  sqlite3_file *r = ((walbuf_file_t *)p)->real;
  return r->pMethods->xDeviceCharacteristics(r);
}

/* Version 1 methods: SQLite never maps or shares memory through a WAL file. */
static const sqlite3_io_methods walbuf_methods = {
  .iVersion = 1,
  .xClose = walbuf_close,
  .xRead = walbuf_read,
  .xWrite = walbuf_write,
  .xTruncate = walbuf_truncate,
  .xSync = walbuf_sync,
  .xFileSize = walbuf_size,
  .xLock = walbuf_lock,
  .xUnlock = walbuf_unlock,
  .xCheckReservedLock = walbuf_reserved,
  .xFileControl = walbuf_fcntl,
  .xSectorSize = walbuf_sector,
  .xDeviceCharacteristics = walbuf_devchar,
};

/* Opens WAL files behind the shim and every other file as the default VFS would. */
static int walbuf_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *p, int flags, int *out)
{
  sqlite3_vfs *base = vfs->pAppData;
  if ((flags & SQLITE_OPEN_WAL) == 0) {
    return base->xOpen(base, name, p, flags, out);
  }
  walbuf_file_t *f = (walbuf_file_t *)p;
  memset(f, 0, sizeof *f);
  f->real = (sqlite3_file *)(f + 1);
  int rc = base->xOpen(base, name, f->real, flags, out);
  if (rc == SQLITE_OK) {
    f->base.pMethods = &walbuf_methods;
  }
  return rc;
}

static int walbuf_delete(sqlite3_vfs *vfs, const char *name, int sync)
{
  sqlite3_vfs *base = vfs->pAppData;
  return base->xDelete(base, name, sync);
}

static int walbuf_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
  sqlite3_vfs *base = vfs->pAppData;
  return base->xAccess(base, name, flags, out);
}

static int walbuf_fullname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
  sqlite3_vfs *base = vfs->pAppData;
  return base->xFullPathname(base, name, n, out);
}

static int walbuf_random(sqlite3_vfs *vfs, int n, char *out)
{
  sqlite3_vfs *base = vfs->pAppData;
  return base->xRandomness(base, n, out);
}

static int walbuf_sleep(sqlite3_vfs *vfs, int us)
{
  sqlite3_vfs *base = vfs->pAppData;
  return base->xSleep(base, us);
}

static int walbuf_time(sqlite3_vfs *vfs, double *out)
{
  sqlite3_vfs *base = vfs->pAppData;
  return base->xCurrentTime(base, out);
}

static int walbuf_error(sqlite3_vfs *vfs, int n, char *out)
{
  sqlite3_vfs *base = vfs->pAppData;
  return base->xGetLastError != NULL ? base->xGetLastError(base, n, out) : 0;
}

static int walbuf_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
  sqlite3_vfs *base = vfs->pAppData;
  return base->xCurrentTimeInt64(base, out);
}

static uv_once_t walbuf_once = UV_ONCE_INIT;
static int walbuf_rc = SQLITE_ERROR;

static void walbuf_register(void)
{
  sqlite3_vfs *base = sqlite3_vfs_find(NULL);
  if (base == NULL || base->iVersion < 2 || base->xCurrentTimeInt64 == NULL) {
    return;
  }
  walbuf_vfs = (sqlite3_vfs){
    .iVersion = 2,
    .szOsFile = (int)sizeof(walbuf_file_t) + base->szOsFile,
    .mxPathname = base->mxPathname,
    .zName = "vigil-walbuf",
    .pAppData = base,
    .xOpen = walbuf_open,
    .xDelete = walbuf_delete,
    .xAccess = walbuf_access,
    .xFullPathname = walbuf_fullname,
    .xDlOpen = base->xDlOpen,
    .xDlError = base->xDlError,
    .xDlSym = base->xDlSym,
    .xDlClose = base->xDlClose,
    .xRandomness = walbuf_random,
    .xSleep = walbuf_sleep,
    .xCurrentTime = walbuf_time,
    .xGetLastError = walbuf_error,
    .xCurrentTimeInt64 = walbuf_time64,
  };
  walbuf_rc = sqlite3_vfs_register(&walbuf_vfs, 0);
}

/* The shim's name, or NULL (the default VFS) when it could not be registered. */
static const char *walbuf_name(void)
{
  uv_once(&walbuf_once, walbuf_register);
  return walbuf_rc == SQLITE_OK ? walbuf_vfs.zName : NULL;
}

/* ---- the loop side ---- */

static void on_closed(uv_handle_t *h)
{
  vg_store_t *s = h->data;
  void (*done)(void *) = s->close_done;
  void *ud = s->close_ud;
  uv_mutex_destroy(&s->mu);
  uv_cond_destroy(&s->cond);
  free(s->path);
  free(s);
  if (done != NULL) {
    done(ud);
  }
}

void store_maybe_finish(vg_store_t *s)
{
  if (!s->closing || !s->joined || s->reads_inflight > 0 || s->finishing) {
    return;
  }
  s->finishing = true;
  for (size_t i = 0; i < s->nreaders; i++) {
    sqlite3_close(s->readers[i]);
  }
  s->nreaders = 0;
  uv_close((uv_handle_t *)&s->async, on_closed);
}

static void job_answered(vg_store_t *s)
{
  if (s->jobs_out > 0 && --s->jobs_out == 0 && !s->closing) {
    uv_unref((uv_handle_t *)&s->async);
  }
}

static void on_async(uv_async_t *a)
{
  vg_store_t *s = a->data;
  uv_mutex_lock(&s->mu);
  store_job_t *list = s->done_head;
  s->done_head = s->done_tail = NULL;
  bool exited = s->writer_exited;
  uv_mutex_unlock(&s->mu);
  while (list != NULL) {
    store_job_t *j = list;
    list = j->next;
    if (j->kind == JOB_BATCH && j->expiry) {
      if (j->status == 0 && s->expired_fn != NULL) {
        s->expired_fn(s->expired_ud, j->alerts, j->results, j->n);
      }
    } else if (j->kind == JOB_BATCH) {
      job_answered(s);
      j->commit_cb(j->ud, j->status, j->status == 0 ? NULL : j->err, j->results, j->n);
    } else if (j->kind == JOB_CALL || j->kind == JOB_DECIDED) {
      job_answered(s);
      if (j->call_cb != NULL) {
        j->call_cb(j->ud, j->status, j->status == 0 ? NULL : j->err);
      }
    } else if (j->status == 0) {
      job_answered(s);
      j->json_cb(j->ud, 0, j->json, j->json_len);
    } else {
      job_answered(s);
      j->json_cb(j->ud, j->status, j->err, strlen(j->err));
    }
    job_free(j);
  }
  if (exited && !s->joined) {
    uv_thread_join(&s->thread);
    s->joined = true;
    store_maybe_finish(s);
  }
}

void vg_store_opts_default(vg_store_opts_t *opts)
{
  memset(opts, 0, sizeof *opts);
  opts->path = "vigil.db";
  opts->group_commit_ms = 2;
  opts->max_pending = 100000;
  opts->reopen_grace_s = 300;
  opts->retention_s = 30 * 86400.0;
  opts->max_alerts = 1000000;
}

static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      snprintf(out, outlen, "%s", nz((const char *)sqlite3_column_text(st, 0)));
      rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      out[0] = '\0';
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  return rc;
}

/* The highest change number an undecided alert holds (0: none), through the partial index. */
static int last_change(sqlite3 *db, int64_t *out)
{
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(
      db, "SELECT coalesce(max(undecided), 0) FROM alerts WHERE undecided > 0", -1, &st, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    *out = sqlite3_column_int64(st, 0);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc;
}

/* Brings the schema up to date, one transaction per migration. */
static int migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
{
  char v[32];
  int rc = pragma_text(db, "PRAGMA user_version", v, sizeof v);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
    return -1;
  }
  long version = strtol(v, NULL, 10);
  if (version > STORE_SCHEMA_VERSION) {
    snprintf(err, errlen, "%s: schema version %ld is newer than this vigil (%d)", path, version,
             STORE_SCHEMA_VERSION);
    return -1;
  }
  for (long i = version; i < STORE_SCHEMA_VERSION; i++) {
    char bump[48];
    snprintf(bump, sizeof bump, "PRAGMA user_version = %ld", i + 1);
    if ((rc = exec(db, "BEGIN IMMEDIATE")) != SQLITE_OK || (rc = exec(db, migrations[i])) ||
        (rc = exec(db, bump)) || (rc = exec(db, "COMMIT"))) {
      snprintf(err, errlen, "%s: migration to schema version %ld: %s", path, i + 1,
               sqlite3_errmsg(db));
      if (!sqlite3_get_autocommit(db)) {
        exec(db, "ROLLBACK");
      }
      return -1;
    }
  }
  return 0;
}

static sqlite3 *open_writer(const char *path, char *err, size_t errlen)
{
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(
      path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, walbuf_name());
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", path, db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    goto fail;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
  /* refuse a newer schema before changing anything (even the journal mode) */
  char v[32];
  if (pragma_text(db, "PRAGMA user_version", v, sizeof v) != SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
    goto fail;
  }
  if (strtol(v, NULL, 10) > STORE_SCHEMA_VERSION) {
    snprintf(err, errlen, "%s: schema version %ld is newer than this vigil (%d)", path,
             strtol(v, NULL, 10), STORE_SCHEMA_VERSION);
    goto fail;
  }
  char mode[16];
  if ((rc = pragma_text(db, "PRAGMA journal_mode = WAL", mode, sizeof mode)) != SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
    goto fail;
  }
  if (strcmp(mode, "wal") != 0) {
    snprintf(err, errlen, "%s: cannot use WAL mode (journal_mode is %s)", path, mode);
    goto fail;
  }
  /* A page cache big enough for the indexes of a busy alerts table: with SQLite's default
   * 2 MB, every new fingerprint costs page reads once the table outgrows it (bench/intake).
   * Pages are allocated as used, so an idle store stays small. A busy group commit writes
   * ~1000 WAL pages, which with the default checkpoint threshold (1000) made nearly every
   * commit also copy them into the database and sync it: checkpoint every 8192 pages.
   * temp_store = MEMORY keeps the statement journal in memory: every statement that may abort
   * halfway (foreign keys) inside a transaction, and the savepoint each job runs in, copy
   * there the pages the transaction had already changed before changing them again. On disk
   * it was a temp file created per transaction and two pwrite()s per page, five times as many
   * writes as the WAL's (bench/intake, strace). It is emptied when a job's savepoint is
   * released, so it holds the pages of one job at most. */
  if (exec(db, "PRAGMA synchronous = FULL") != SQLITE_OK ||
      exec(db, "PRAGMA temp_store = MEMORY") != SQLITE_OK ||
      exec(db, "PRAGMA foreign_keys = ON") != SQLITE_OK ||
      exec(db, "PRAGMA cache_size = -32768") != SQLITE_OK ||
      exec(db, "PRAGMA wal_autocheckpoint = 8192") != SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
    goto fail;
  }
  return db;
fail:
  sqlite3_close(db);
  return NULL;
}

vg_store_t *vg_store_open(uv_loop_t *loop, const vg_store_opts_t *opts, char *err, size_t errlen)
{
  char dummy[1];
  if (err == NULL || errlen == 0) {
    err = dummy, errlen = sizeof dummy;
  }
  err[0] = '\0';
  vg_store_t *s = calloc(1, sizeof *s);
  writer_t *w = calloc(1, sizeof *w);
  if (s == NULL || w == NULL) {
    snprintf(err, errlen, "out of memory");
    free(s);
    free(w);
    return NULL;
  }
  s->loop = loop;
  vg_store_opts_default(&s->opts);
  if (opts != NULL) {
    s->opts = *opts;
  }
  /* zero means "the default" where zero would make no sense */
  vg_store_opts_t def;
  vg_store_opts_default(&def);
  if (s->opts.max_pending == 0) {
    s->opts.max_pending = def.max_pending;
  }
  if (!(s->opts.retention_s > 0)) {
    s->opts.retention_s = def.retention_s;
  }
  s->path = strdup(s->opts.path != NULL ? s->opts.path : "vigil.db");
  if (s->path == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  s->opts.path = s->path;
  if ((s->db = open_writer(s->path, err, errlen)) == NULL ||
      migrate(s->db, s->path, err, errlen) != 0) {
    goto fail;
  }
  w->s = s;
  w->db = s->db;
  if (last_change(s->db, &w->change) != SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->db));
    goto fail;
  }
  for (int i = 0; i < ST_COUNT; i++) {
    if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &w->st[i], NULL) !=
        SQLITE_OK) {
      snprintf(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->db));
      goto fail;
    }
  }
  if (uv_mutex_init(&s->mu) != 0) {
    snprintf(err, errlen, "cannot create a mutex");
    goto fail;
  }
  if (uv_cond_init(&s->cond) != 0) {
    uv_mutex_destroy(&s->mu);
    snprintf(err, errlen, "cannot create a condition variable");
    goto fail;
  }
  atomic_init(&s->writable, true);
  int rc = uv_async_init(loop, &s->async, on_async);
  if (rc != 0) {
    snprintf(err, errlen, "uv_async_init: %s", uv_strerror(rc));
    uv_cond_destroy(&s->cond);
    uv_mutex_destroy(&s->mu);
    goto fail;
  }
  s->async.data = s;
  uv_unref((uv_handle_t *)&s->async); /* referenced while jobs are out (job_answered) */
  if ((rc = uv_thread_create(&s->thread, writer_main, w)) != 0) {
    snprintf(err, errlen, "cannot start the store's writer: %s", uv_strerror(rc));
    for (int i = 0; i < ST_COUNT; i++) {
      sqlite3_finalize(w->st[i]);
    }
    sqlite3_close(s->db);
    free(w);
    /* the async handle is the loop's until closed: free the rest from its close callback */
    s->joined = s->closing = s->finishing = true;
    uv_close((uv_handle_t *)&s->async, on_closed);
    return NULL;
  }
  return s;
fail:
  for (int i = 0; i < ST_COUNT; i++) {
    sqlite3_finalize(w->st[i]);
  }
  sqlite3_close(s->db);
  free(w);
  free(s->path);
  free(s);
  return NULL;
}

void vg_store_close(vg_store_t *s, void (*done)(void *ud), void *ud)
{
  if (s == NULL || s->closing) {
    return;
  }
  s->closing = true;
  uv_ref((uv_handle_t *)&s->async); /* until the writer has exited */
  s->close_done = done;
  s->close_ud = ud;
  uv_mutex_lock(&s->mu);
  s->stop = true;
  uv_cond_signal(&s->cond);
  uv_mutex_unlock(&s->mu);
}

/* Appends a job to the writer's queue, refusing it when `alerts` more would exceed the bound
 * (a batch larger than the bound alone is taken when nothing else waits, or it could never go). */
static int enqueue(vg_store_t *s, store_job_t *j, size_t alerts)
{
  uv_mutex_lock(&s->mu);
  uint64_t pending = s->stats.pending;
  if (pending > 0 && pending + alerts > s->opts.max_pending) {
    uv_mutex_unlock(&s->mu);
    return -EBUSY;
  }
  s->stats.pending += alerts;
  if (s->jobs_out++ == 0) {
    uv_ref((uv_handle_t *)&s->async);
  }
  if (s->q_tail != NULL) {
    s->q_tail->next = j;
  } else {
    s->q_head = j;
  }
  s->q_tail = j;
  uv_cond_signal(&s->cond);
  uv_mutex_unlock(&s->mu);
  return 0;
}

int vg_store_submit(
    vg_store_t *s, const vg_store_alert_t *alerts, size_t n, vg_store_commit_fn done, void *ud)
{
  if (s == NULL || done == NULL || (n > 0 && alerts == NULL)) {
    return -EINVAL;
  }
  if (s->closing) {
    return -EBUSY;
  }
  for (size_t i = 0; i < n; i++) {
    const vg_store_alert_t *a = &alerts[i];
    if (a->fingerprint == NULL || a->status == NULL ||
        (strcmp(a->status, "firing") != 0 && strcmp(a->status, "resolved") != 0) ||
        (a->nlabels > 0 && a->labels == NULL) || (a->nannotations > 0 && a->annotations == NULL)) {
      return -EINVAL;
    }
  }
  uv_mutex_lock(&s->mu);
  bool full = s->stats.pending > 0 && s->stats.pending + n > s->opts.max_pending;
  uv_mutex_unlock(&s->mu);
  if (full) {
    return -EBUSY; /* before copying anything */
  }
  store_job_t *j = job_copy_batch(alerts, n);
  if (j == NULL) {
    return -ENOMEM;
  }
  j->commit_cb = done;
  j->ud = ud;
  int rc = enqueue(s, j, n);
  if (rc != 0) {
    job_free(j);
  }
  return rc;
}

int vg_store_incident_action(vg_store_t *s,
                             int64_t id,
                             const char *action,
                             const char *who,
                             const char *comment,
                             vg_store_json_fn done,
                             void *ud)
{
  if (s == NULL || done == NULL || action == NULL ||
      (strcmp(action, "ack") != 0 && strcmp(action, "resolve") != 0 &&
       strcmp(action, "close") != 0)) {
    return -EINVAL;
  }
  if (s->closing) {
    return -EBUSY;
  }
  if (who == NULL || who[0] == '\0') {
    who = "operator";
  }
  size_t total = sizeof(store_job_t), la = strlen(action) + 1, lw = strlen(who) + 1,
         lc = comment != NULL ? strlen(comment) + 1 : 0;
  store_job_t *j = calloc(1, total + la + lw + lc);
  if (j == NULL) {
    return -ENOMEM;
  }
  char *cursor = (char *)(j + 1);
  j->kind = JOB_ACTION;
  j->id = id;
  j->action = (char *)put_str(&cursor, action);
  j->who = (char *)put_str(&cursor, who);
  j->comment = (char *)put_str(&cursor, comment);
  j->json_cb = done;
  j->ud = ud;
  int rc = enqueue(s, j, 0);
  if (rc != 0) {
    job_free(j);
  }
  return rc;
}

int vg_store_call(vg_store_t *s, vg_store_work_fn work, vg_store_done_fn done, void *ud)
{
  if (s == NULL || work == NULL || done == NULL) {
    return -EINVAL;
  }
  if (s->closing) {
    return -EBUSY;
  }
  store_job_t *j = calloc(1, sizeof *j);
  if (j == NULL) {
    return -ENOMEM;
  }
  j->kind = JOB_CALL;
  j->work = work;
  j->call_cb = done;
  j->ud = ud;
  int rc = enqueue(s, j, 0);
  if (rc != 0) {
    free(j);
  }
  return rc;
}

int vg_store_decided(
    vg_store_t *s, const vg_store_decision_t *d, size_t n, vg_store_done_fn done, void *ud)
{
  if (s == NULL || (n > 0 && d == NULL) || n > SIZE_MAX / 4 / sizeof *d) {
    return -EINVAL;
  }
  size_t strings = 0;
  for (size_t i = 0; i < n; i++) {
    if (d[i].fingerprint == NULL) {
      return -EINVAL;
    }
    size_t add = strlen(d[i].fingerprint) + 1;
    if (add > SIZE_MAX / 4 - strings) {
      return -ENOMEM;
    }
    strings += add;
  }
  if (s->closing) {
    return -EBUSY;
  }
  size_t total = 0;
  if (!grow(&total, sizeof(store_job_t)) || !grow(&total, n * sizeof *d) ||
      !grow(&total, strings)) {
    return -ENOMEM;
  }
  char *block = malloc(total);
  if (block == NULL) {
    return -ENOMEM;
  }
  size_t off = 0;
  store_job_t *j = (store_job_t *)block;
  grow(&off, sizeof(store_job_t));
  memset(j, 0, sizeof *j);
  j->kind = JOB_DECIDED;
  j->n = n;
  j->decisions = (vg_store_decision_t *)(block + off);
  grow(&off, n * sizeof *d);
  char *cursor = block + off;
  for (size_t i = 0; i < n; i++) {
    j->decisions[i].fingerprint = put_str(&cursor, d[i].fingerprint);
    j->decisions[i].change = d[i].change;
  }
  j->call_cb = done;
  j->ud = ud;
  int rc = enqueue(s, j, 0);
  if (rc != 0) {
    job_free(j);
  }
  return rc;
}

/* ---- health and metrics ---- */

void vg_store_stats(const vg_store_t *s, vg_store_stats_t *out)
{
  vg_store_t *m = (vg_store_t *)s; /* the mutex is not part of the value */
  uv_mutex_lock(&m->mu);
  *out = s->stats;
  uv_mutex_unlock(&m->mu);
}

bool vg_store_writable(const vg_store_t *s)
{
  return atomic_load(&((vg_store_t *)s)->writable);
}

/* ---- fingerprints ---- */

static int label_cmp(const vg_label_t *a, const vg_label_t *b)
{
  size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
  int c = n > 0 ? memcmp(a->name, b->name, n) : 0;
  if (c != 0) {
    return c;
  }
  return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

static int label_ptr_cmp(const void *a, const void *b)
{
  return label_cmp(*(const vg_label_t *const *)a, *(const vg_label_t *const *)b);
}

static uint64_t fnv_bytes(uint64_t h, const char *p, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

static uint64_t fnv_label(uint64_t h, const vg_label_t *l)
{
  static const char sep = (char)0xff;
  h = fnv_bytes(h, l->name, l->name_len);
  h = fnv_bytes(h, &sep, 1);
  h = fnv_bytes(h, l->value, l->value_len);
  return fnv_bytes(h, &sep, 1);
}

void vg_fingerprint(const vg_label_t *labels, size_t nlabels, char out[17])
{
  uint64_t h = 14695981039346656037ULL;
  const vg_label_t *stack[64];
  const vg_label_t **order = nlabels <= 64 ? stack : malloc(nlabels * sizeof *order);
  if (order != NULL) {
    for (size_t i = 0; i < nlabels; i++) {
      order[i] = &labels[i];
    }
    qsort(order, nlabels, sizeof *order, label_ptr_cmp);
    for (size_t i = 0; i < nlabels; i++) {
      h = fnv_label(h, order[i]);
    }
    if (order != stack) {
      free(order);
    }
  } else {
    /* out of memory: the same order by repeated selection, without allocating */
    const vg_label_t *prev = NULL;
    for (size_t k = 0; k < nlabels; k++) {
      const vg_label_t *best = NULL;
      for (size_t i = 0; i < nlabels; i++) {
        const vg_label_t *c = &labels[i];
        bool after =
            prev == NULL || label_cmp(c, prev) > 0 || (label_cmp(c, prev) == 0 && c > prev);
        if (after &&
            (best == NULL || label_cmp(c, best) < 0 || (label_cmp(c, best) == 0 && c < best))) {
          best = c;
        }
      }
      h = fnv_label(h, best);
      prev = best;
    }
  }
  snprintf(out, 17, "%016" PRIx64, h);
}
