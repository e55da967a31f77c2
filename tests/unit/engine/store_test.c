/* Tests for src/engine/store*.c against a real SQLite database in a temporary directory and a
 * real uv loop: schema migration, durability ordering (G1), duplicates (G2), incident grouping
 * and lifecycle, group commit, back-pressure, queries, I/O failures (through a fault-injecting
 * VFS wrapped around SQLite's own), retention, closing with work in flight, and the undecided
 * marks of decision replay.
 * Times: the reopen grace is decided on alert times (starts_at against the incident's
 * resolution, which is the resolving alert's ends_at), so tests pick the times they need and
 * never sleep for them; only retention, which compares with the wall clock, sleeps ~100 ms. */
#include "engine/store.h"

#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "test_support.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define LBL(n, v)                  \
  {                                \
    (n), strlen(n), (v), strlen(v) \
  }

/* ---- a fault-injecting VFS: SQLite's default one with writes or syncs failing on demand ---- */

static sqlite3_vfs *real_vfs;
static sqlite3_vfs fault_vfs;
static sqlite3_io_methods fault_methods;
static atomic_int fail_writes, fail_syncs;

typedef struct {
  sqlite3_file base;
  sqlite3_file *real;
} fault_file_t;

#define REAL(f) (((fault_file_t *)(f))->real)

static int f_close(sqlite3_file *f)
{
  return REAL(f)->pMethods->xClose(REAL(f));
}
static int f_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
  return REAL(f)->pMethods->xRead(REAL(f), buf, amt, off);
}
static int f_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
  if (atomic_load(&fail_writes)) {
    return SQLITE_FULL;
  }
  return REAL(f)->pMethods->xWrite(REAL(f), buf, amt, off);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 size)
{
  return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int f_sync(sqlite3_file *f, int flags)
{
  if (atomic_load(&fail_syncs)) {
    return SQLITE_IOERR_FSYNC;
  }
  return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int f_size(sqlite3_file *f, sqlite3_int64 *size)
{
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int f_lock(sqlite3_file *f, int l)
{
  return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int f_unlock(sqlite3_file *f, int l)
{
  return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int f_check(sqlite3_file *f, int *out)
{
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_control(sqlite3_file *f, int op, void *arg)
{
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector(sqlite3_file *f)
{
  return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_devchar(sqlite3_file *f)
{
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shmmap(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
  return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, pp);
}
static int f_shmlock(sqlite3_file *f, int offset, int n, int flags)
{
  return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void f_shmbarrier(sqlite3_file *f)
{
  REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shmunmap(sqlite3_file *f, int del)
{
  return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
  return REAL(f)->pMethods->xFetch(REAL(f), off, amt, pp);
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
  return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out)
{
  (void)vfs;
  fault_file_t *p = (fault_file_t *)file;
  p->real = (sqlite3_file *)(p + 1);
  int rc = real_vfs->xOpen(real_vfs, name, p->real, flags, out);
  file->pMethods = p->real->pMethods != NULL ? &fault_methods : NULL;
  return rc;
}

static void fault_vfs_install(void)
{
  real_vfs = sqlite3_vfs_find(NULL);
  assert_non_null(real_vfs);
  fault_vfs = *real_vfs;
  fault_vfs.zName = "vg-fault";
  fault_vfs.szOsFile = (int)sizeof(fault_file_t) + real_vfs->szOsFile;
  fault_vfs.xOpen = v_open;
  fault_methods = (sqlite3_io_methods){
    .iVersion = 3,
    .xClose = f_close,
    .xRead = f_read,
    .xWrite = f_write,
    .xTruncate = f_truncate,
    .xSync = f_sync,
    .xFileSize = f_size,
    .xLock = f_lock,
    .xUnlock = f_unlock,
    .xCheckReservedLock = f_check,
    .xFileControl = f_control,
    .xSectorSize = f_sector,
    .xDeviceCharacteristics = f_devchar,
    .xShmMap = f_shmmap,
    .xShmLock = f_shmlock,
    .xShmBarrier = f_shmbarrier,
    .xShmUnmap = f_shmunmap,
    .xFetch = f_fetch,
    .xUnfetch = f_unfetch,
  };
  assert_int_equal(sqlite3_vfs_register(&fault_vfs, 1), SQLITE_OK);
}

/* ---- fixture: a temporary directory, a loop, a store ---- */

typedef struct {
  char dir[64];
  char path[96];
  uv_loop_t loop;
  vg_store_t *s;
  int closed;
} fx_t;

static int setup(void **state)
{
  fx_t *fx = calloc(1, sizeof *fx);
  assert_non_null(fx);
  snprintf(fx->dir, sizeof fx->dir, "/tmp/vg-store-XXXXXX");
  assert_non_null(mkdtemp(fx->dir));
  snprintf(fx->path, sizeof fx->path, "%s/vigil.db", fx->dir);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  *state = fx;
  return 0;
}

static void on_closed(void *ud)
{
  ((fx_t *)ud)->closed++;
}

static void on_timeout(uv_timer_t *t)
{
  *(bool *)t->data = true;
}

/* Runs the loop until *counter reaches want (at most 20 s). */
static void run_until(fx_t *fx, const int *counter, int want)
{
  bool timed_out = false;
  uv_timer_t t;
  uv_timer_init(&fx->loop, &t);
  t.data = &timed_out;
  uv_timer_start(&t, on_timeout, 20000, 0);
  while (*counter < want && !timed_out) {
    uv_run(&fx->loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&fx->loop, UV_RUN_NOWAIT);
  if (*counter < want) {
    fail_msg("timed out: %d of %d", *counter, want);
  }
}

static void close_store(fx_t *fx)
{
  if (fx->s != NULL) {
    int before = fx->closed;
    vg_store_close(fx->s, on_closed, fx);
    run_until(fx, &fx->closed, before + 1);
    fx->s = NULL;
  }
}

static int teardown(void **state)
{
  fx_t *fx = *state;
  close_store(fx);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&fx->loop), 0);
  char p[128];
  const char *const files[] = { "vigil.db", "vigil.db-wal", "vigil.db-shm" };
  for (size_t i = 0; i < COUNT(files); i++) {
    snprintf(p, sizeof p, "%s/%s", fx->dir, files[i]);
    unlink(p);
  }
  rmdir(fx->dir);
  atomic_store(&fail_writes, 0);
  atomic_store(&fail_syncs, 0);
  free(fx);
  return 0;
}

static void opts_for(fx_t *fx, vg_store_opts_t *o)
{
  vg_store_opts_default(o);
  o->path = fx->path;
  o->group_commit_ms = 1;
}

static void open_with(fx_t *fx, const vg_store_opts_t *o)
{
  char err[256] = "";
  fx->s = vg_store_open(&fx->loop, o, err, sizeof err);
  if (fx->s == NULL) {
    fail_msg("vg_store_open: %s", err);
  }
}

static void open_default(fx_t *fx)
{
  vg_store_opts_t o;
  opts_for(fx, &o);
  open_with(fx, &o);
}

/* ---- alerts ---- */

typedef struct {
  vg_label_t labels[4];
  vg_label_t annotations[1];
  char fp[17];
  char instance[32];
  vg_store_alert_t a;
} talert_t;

/* An alert {alertname, instance, severity} in group `group`. */
static void mk(talert_t *t,
               const char *name,
               const char *instance,
               const char *severity,
               const char *status,
               double starts,
               double ends,
               const char *group)
{
  memset(t, 0, sizeof *t);
  snprintf(t->instance, sizeof t->instance, "%s", instance);
  t->labels[0] = (vg_label_t)LBL("alertname", name);
  t->labels[1] = (vg_label_t)LBL("instance", t->instance);
  t->labels[2] = (vg_label_t)LBL("severity", severity);
  t->annotations[0] = (vg_label_t)LBL("summary", "something is wrong");
  vg_fingerprint(t->labels, 3, t->fp);
  t->a = (vg_store_alert_t){ .fingerprint = t->fp,
                             .name = name,
                             .severity = severity,
                             .status = status,
                             .labels = t->labels,
                             .nlabels = 3,
                             .annotations = t->annotations,
                             .nannotations = 1,
                             .starts_at = starts,
                             .ends_at = ends,
                             .source = "alertmanager",
                             .generator_url = "http://prometheus/graph",
                             .group_key = group };
}

typedef struct {
  int calls;
  int status;
  char err[256];
  vg_store_result_t res[16];
  size_t n;
} commit_t;

static void on_commit(void *ud, int status, const char *err, const vg_store_result_t *r, size_t n)
{
  commit_t *c = ud;
  c->calls++;
  c->status = status;
  snprintf(c->err, sizeof c->err, "%s", err != NULL ? err : "");
  c->n = n;
  if (status == 0) {
    assert_true(n <= COUNT(c->res));
    memcpy(c->res, r, n * sizeof *r);
  }
}

/* Submits one batch and waits for its callback; returns its status. */
static int commit(fx_t *fx, commit_t *c, const vg_store_alert_t *alerts, size_t n)
{
  memset(c, 0, sizeof *c);
  assert_int_equal(vg_store_submit(fx->s, alerts, n, on_commit, c), 0);
  assert_int_equal(c->calls, 0); /* never from inside submit */
  run_until(fx, &c->calls, 1);
  return c->status;
}

static void commit_one(fx_t *fx, commit_t *c, const talert_t *t)
{
  int rc = commit(fx, c, &t->a, 1);
  if (rc != 0) {
    fail_msg("commit failed: %d %s", rc, c->err);
  }
}

/* ---- JSON answers ---- */

typedef struct {
  int calls;
  int status;
  json_t *doc;
  char text[512];
} answer_t;

static void on_json(void *ud, int status, const char *json, size_t len)
{
  answer_t *a = ud;
  a->calls++;
  a->status = status;
  assert_non_null(json);
  assert_int_equal(strlen(json), len);
  if (status == 0) {
    json_error_t e;
    a->doc = json_loadb(json, len, 0, &e);
    if (a->doc == NULL) {
      fail_msg("bad JSON (%s): %s", e.text, json);
    }
  } else {
    snprintf(a->text, sizeof a->text, "%s", json);
  }
}

static void answer_reset(answer_t *a)
{
  json_decref(a->doc);
  memset(a, 0, sizeof *a);
}

static json_t *query_alerts(fx_t *fx, answer_t *a, const vg_store_alert_query_t *q)
{
  answer_reset(a);
  assert_int_equal(vg_store_alerts(fx->s, q, on_json, a), 0);
  run_until(fx, &a->calls, 1);
  assert_int_equal(a->status, 0);
  assert_true(json_is_array(a->doc));
  return a->doc;
}

static json_t *query_incidents(fx_t *fx, answer_t *a, const vg_store_incident_query_t *q)
{
  answer_reset(a);
  assert_int_equal(vg_store_incidents(fx->s, q, on_json, a), 0);
  run_until(fx, &a->calls, 1);
  assert_int_equal(a->status, 0);
  assert_true(json_is_object(a->doc));
  return a->doc;
}

static int get_incident(fx_t *fx, answer_t *a, int64_t id)
{
  answer_reset(a);
  assert_int_equal(vg_store_incident(fx->s, id, on_json, a), 0);
  run_until(fx, &a->calls, 1);
  return a->status;
}

static int action(
    fx_t *fx, answer_t *a, int64_t id, const char *act, const char *who, const char *comment)
{
  answer_reset(a);
  assert_int_equal(vg_store_incident_action(fx->s, id, act, who, comment, on_json, a), 0);
  run_until(fx, &a->calls, 1);
  return a->status;
}

static const char *jstr(json_t *o, const char *key)
{
  json_t *v = json_object_get(o, key);
  if (!json_is_string(v)) {
    fail_msg("%s is not a string", key);
  }
  return json_string_value(v);
}

static json_int_t jint(json_t *o, const char *key)
{
  json_t *v = json_object_get(o, key);
  if (!json_is_integer(v)) {
    fail_msg("%s is not an integer", key);
  }
  return json_integer_value(v);
}

/* ---- direct SQL through a fresh connection ---- */

static int64_t sql_int(fx_t *fx, const char *sql)
{
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    fail_msg("%s: %s", sql, sqlite3_errmsg(db));
  }
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static const char *sql_text(fx_t *fx, const char *sql, char *buf, size_t len)
{
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  snprintf(buf, len, "%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(db);
  return buf;
}

static void sql_exec(const char *path, const char *sql)
{
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    fail_msg("%s: %s", sql, msg);
  }
  sqlite3_close(db);
}

/* ---- tests ---- */

static void test_fingerprint(void **state)
{
  (void)state;
  char fp[17];
  vg_fingerprint(NULL, 0, fp);
  assert_string_equal(fp, "cbf29ce484222325");

  vg_label_t gb[] = { LBL("name", "garland, briggs"), LBL("fear", "love is not enough") };
  vg_fingerprint(gb, 2, fp);
  assert_string_equal(fp, "507a62d79ee76c9a"); /* prometheus/common TestMetricToFingerprint */
  vg_label_t bg[] = { gb[1], gb[0] };
  vg_fingerprint(bg, 2, fp);
  assert_string_equal(fp, "507a62d79ee76c9a");

  vg_label_t hl[] = { LBL("severity", "critical"), LBL("alertname", "HighLatency"),
                      LBL("service", "checkout") };
  vg_fingerprint(hl, 3, fp);
  assert_string_equal(fp, "c75f68922c9ebc87");
  vg_label_t one[] = { LBL("alertname", "HighLatency") };
  vg_fingerprint(one, 1, fp);
  assert_string_equal(fp, "73dbeed5635ea4e4");
  vg_label_t empty[] = { LBL("a", "") };
  vg_fingerprint(empty, 1, fp);
  assert_string_equal(fp, "e57e2e1903df23e2");

  /* more labels than the stack buffer: order still does not matter */
  enum { N = 100 };
  static char names[N][8];
  vg_label_t fwd[N], rev[N];
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "l%03d", i);
    fwd[i] = (vg_label_t)LBL(names[i], names[i]);
    rev[N - 1 - i] = fwd[i];
  }
  char a[17], b[17];
  vg_fingerprint(fwd, N, a);
  vg_fingerprint(rev, N, b);
  assert_string_equal(a, b);
  assert_int_equal(strlen(a), 16);
}

static void test_open_migrate_reopen(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  assert_true(vg_store_writable(fx->s));
  close_store(fx);
  assert_int_equal(fx->closed, 1);
  assert_int_equal(sql_int(fx, "PRAGMA user_version"), 7);
  assert_int_equal(sql_int(fx,
                           "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name"
                           " IN ('alerts', 'incidents', 'incident_alerts', 'timeline')"),
                   4);
  assert_int_equal(
      sql_int(fx, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
  /* reopening an up-to-date database migrates nothing and works */
  open_default(fx);
  commit_t c;
  talert_t t;
  mk(&t, "HighCPU", "a", "high", "firing", 1.7e9, 0, "g");
  commit_one(fx, &c, &t);
  close_store(fx);
  assert_int_equal(sql_int(fx, "PRAGMA user_version"), 7);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts"), 1);
}

static void test_newer_schema_refused(void **state)
{
  fx_t *fx = *state;
  sql_exec(fx->path, "CREATE TABLE x (y); PRAGMA user_version = 9");
  vg_store_opts_t o;
  opts_for(fx, &o);
  char err[256] = "";
  assert_null(vg_store_open(&fx->loop, &o, err, sizeof err));
  char want[256];
  snprintf(want, sizeof want, "%s: schema version 9 is newer than this vigil (7)", fx->path);
  assert_string_equal(err, want);
  assert_int_equal(sql_int(fx, "PRAGMA user_version"), 9); /* left alone */

  snprintf(want, sizeof want, "%s/missing/vigil.db", fx->dir);
  o.path = want;
  assert_null(vg_store_open(&fx->loop, &o, err, sizeof err));
  assert_non_null(strstr(err, "unable to open database file"));
  assert_non_null(strstr(err, "/missing/vigil.db: "));
}

/* The callback runs after COMMIT: a fresh connection sees the rows from inside it. */
typedef struct {
  fx_t *fx;
  int calls;
  int64_t alerts_seen, incidents_seen;
  vg_store_result_t res[2];
} durable_t;

static void on_durable(void *ud, int status, const char *err, const vg_store_result_t *r, size_t n)
{
  durable_t *d = ud;
  assert_int_equal(status, 0);
  assert_null(err);
  assert_int_equal(n, 2);
  memcpy(d->res, r, sizeof d->res);
  d->alerts_seen = sql_int(d->fx, "SELECT count(*) FROM alerts WHERE labels LIKE '%HighCPU%'");
  d->incidents_seen = sql_int(d->fx, "SELECT count(*) FROM incidents");
  d->calls++;
}

static void test_submit_durable_before_callback(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  talert_t t[2];
  mk(&t[0], "HighCPU", "a", "high", "firing", 1.7e9, 0, "alertname=HighCPU");
  mk(&t[1], "HighCPU", "b", "critical", "firing", 1.7e9 + 1, 0, "alertname=HighCPU");
  vg_store_alert_t batch[2] = { t[0].a, t[1].a };
  durable_t d = { .fx = fx };
  assert_int_equal(vg_store_submit(fx->s, batch, 2, on_durable, &d), 0);
  /* the store copied everything: scribble over the caller's memory */
  memset(t, 0x55, sizeof t);
  memset(batch, 0, sizeof batch);
  run_until(fx, &d.calls, 1);
  assert_int_equal(d.alerts_seen, 2);
  assert_int_equal(d.incidents_seen, 1);
  assert_int_equal(d.res[0].outcome, VG_STORE_NEW);
  assert_int_equal(d.res[1].outcome, VG_STORE_NEW);
  assert_true(d.res[0].incident_opened);
  assert_false(d.res[1].incident_opened); /* same group: joins it */
  assert_true(d.res[0].incident_id > 0);
  assert_int_equal(d.res[1].incident_id, d.res[0].incident_id);
  assert_int_equal(sql_int(fx,
                           "SELECT count(*) FROM alerts WHERE source = 'alertmanager'"
                           " AND labels = '{\"alertname\":\"HighCPU\",\"instance\":\"b\","
                           "\"severity\":\"critical\"}'"),
                   1);
  /* the incident took the highest severity and recorded the raise */
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM incidents WHERE severity = 'critical'"), 1);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM timeline WHERE event = 'severity'"), 1);

  vg_store_stats_t st;
  vg_store_stats(fx->s, &st);
  assert_int_equal(st.batches, 1);
  assert_int_equal(st.alerts, 2);
  assert_int_equal(st.commits, 1);
  assert_int_equal(st.commit_failures, 0);
  assert_int_equal(st.pending, 0);
  uint64_t sum = 0;
  for (int i = 0; i < 12; i++) {
    sum += st.commit_us_buckets[i];
  }
  assert_int_equal(sum, 1);
  assert_true(st.commit_us_sum > 0);
}

static void test_duplicate_is_unchanged(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  talert_t t;
  commit_t c;
  mk(&t, "DiskFull", "a", "high", "firing", 1.7e9, 0, "g");
  commit_one(fx, &c, &t);
  assert_int_equal(c.res[0].outcome, VG_STORE_NEW);
  int64_t inc = c.res[0].incident_id;
  int64_t updated = sql_int(fx, "SELECT updated_at FROM alerts");
  int64_t inc_updated = sql_int(fx, "SELECT updated_at FROM incidents");
  int64_t timeline = sql_int(fx, "SELECT count(*) FROM timeline");
  usleep(5000);
  /* an HA pair delivers it twice in one batch, and once more later */
  vg_store_alert_t twice[2] = { t.a, t.a };
  assert_int_equal(commit(fx, &c, twice, 2), 0);
  assert_int_equal(c.res[0].outcome, VG_STORE_UNCHANGED);
  assert_int_equal(c.res[1].outcome, VG_STORE_UNCHANGED);
  assert_int_equal(c.res[0].incident_id, inc);
  assert_false(c.res[0].incident_opened || c.res[0].incident_reopened ||
               c.res[0].incident_resolved);
  commit_one(fx, &c, &t);
  assert_int_equal(c.res[0].outcome, VG_STORE_UNCHANGED);
  assert_int_equal(sql_int(fx, "SELECT updated_at FROM alerts"), updated);
  assert_int_equal(sql_int(fx, "SELECT updated_at FROM incidents"), inc_updated);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM timeline"), timeline);
  assert_true(sql_int(fx, "SELECT last_seen FROM alerts") > updated);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM incidents"), 1);

  /* an annotation change is a change */
  t.annotations[0] = (vg_label_t)LBL("summary", "disk is 99% full");
  commit_one(fx, &c, &t);
  assert_int_equal(c.res[0].outcome, VG_STORE_CHANGED);
  assert_int_equal(c.res[0].incident_id, inc);
  assert_false(c.res[0].incident_opened);
}

static void test_resolve_resolves_incident(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  talert_t a, b;
  commit_t c;
  mk(&a, "Latency", "a", "high", "firing", 1.7e9, 0, "svc=checkout");
  mk(&b, "Errors", "b", "medium", "firing", 1.7e9 + 5, 0, "svc=checkout");
  vg_store_alert_t both[2] = { a.a, b.a };
  assert_int_equal(commit(fx, &c, both, 2), 0);
  int64_t inc = c.res[0].incident_id;
  assert_int_equal(c.res[1].incident_id, inc);

  a.a.status = "resolved";
  a.a.ends_at = 1.7e9 + 60;
  commit_one(fx, &c, &a);
  assert_int_equal(c.res[0].outcome, VG_STORE_CHANGED);
  assert_int_equal(c.res[0].incident_id, inc);
  assert_false(c.res[0].incident_resolved); /* b still fires */
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM incidents WHERE status = 'open'"), 1);

  b.a.status = "resolved";
  b.a.ends_at = 1.7e9 + 90;
  commit_one(fx, &c, &b);
  assert_int_equal(c.res[0].outcome, VG_STORE_CHANGED);
  assert_true(c.res[0].incident_resolved);
  assert_int_equal(sql_int(fx,
                           "SELECT count(*) FROM incidents WHERE status = 'resolved'"
                           " AND resolved_at = 1700000090000"),
                   1);
  /* the resolved re-delivery is a duplicate and resolves nothing again */
  commit_one(fx, &c, &b);
  assert_int_equal(c.res[0].outcome, VG_STORE_UNCHANGED);
  assert_false(c.res[0].incident_resolved);
  /* a lagging HA peer still sends the same episode as firing: harmless, nothing reopens */
  b.a.status = "firing";
  b.a.ends_at = 0;
  commit_one(fx, &c, &b);
  assert_int_equal(c.res[0].outcome, VG_STORE_UNCHANGED);
  assert_false(c.res[0].incident_reopened || c.res[0].incident_opened);
  assert_int_equal(c.res[0].incident_id, inc);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts WHERE status = 'firing'"), 0);

  answer_t ans = { 0 };
  assert_int_equal(get_incident(fx, &ans, inc), 0);
  assert_string_equal(jstr(ans.doc, "status"), "resolved");
  assert_string_equal(jstr(ans.doc, "resolvedAt"), "2023-11-14T22:14:50.000Z");
  assert_int_equal(jint(ans.doc, "firing"), 0);
  json_t *tl = json_object_get(ans.doc, "timeline");
  assert_int_equal(json_array_size(tl), 2);
  assert_string_equal(jstr(json_array_get(tl, 0), "event"), "opened");
  assert_string_equal(jstr(json_array_get(tl, 1), "event"), "resolved");
  assert_string_equal(jstr(json_array_get(tl, 1), "who"), "vigil");
  assert_string_equal(jstr(json_array_get(tl, 1), "from"), "open");
  assert_string_equal(jstr(json_array_get(tl, 1), "to"), "resolved");
  assert_int_equal(json_array_size(json_object_get(ans.doc, "alerts")), 2);
  answer_reset(&ans);
}

static void test_reopen_within_grace_then_new_incident(void **state)
{
  fx_t *fx = *state;
  vg_store_opts_t o;
  opts_for(fx, &o);
  o.reopen_grace_s = 300;
  open_with(fx, &o);
  const double T = 1.8e9;
  talert_t a;
  commit_t c;
  mk(&a, "Flappy", "a", "low", "firing", T, 0, "g");
  commit_one(fx, &c, &a);
  int64_t first = c.res[0].incident_id;
  assert_true(c.res[0].incident_opened);

  mk(&a, "Flappy", "a", "low", "resolved", T, T + 60, "g");
  commit_one(fx, &c, &a);
  assert_true(c.res[0].incident_resolved);

  /* fires again 240 s after the resolution: the same incident reopens */
  mk(&a, "Flappy", "a", "low", "firing", T + 300, 0, "g");
  commit_one(fx, &c, &a);
  assert_int_equal(c.res[0].outcome, VG_STORE_CHANGED);
  assert_true(c.res[0].incident_reopened);
  assert_false(c.res[0].incident_opened);
  assert_int_equal(c.res[0].incident_id, first);

  mk(&a, "Flappy", "a", "low", "resolved", T + 300, T + 400, "g");
  commit_one(fx, &c, &a);
  assert_true(c.res[0].incident_resolved);

  /* 301 s after the resolution: a new incident */
  mk(&a, "Flappy", "a", "low", "firing", T + 701, 0, "g");
  commit_one(fx, &c, &a);
  assert_true(c.res[0].incident_opened);
  assert_false(c.res[0].incident_reopened);
  int64_t second = c.res[0].incident_id;
  assert_true(second != first);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM incidents"), 2);
  assert_int_equal(sql_int(fx,
                           "SELECT count(*) FROM timeline WHERE event = 'reopened'"
                           " AND from_status = 'resolved' AND to_status = 'open'"
                           " AND who = 'vigil'"),
                   1);
  /* the alert belongs to the new incident; the old one keeps it in its history */
  answer_t ans = { 0 };
  assert_int_equal(get_incident(fx, &ans, first), 0);
  assert_string_equal(jstr(ans.doc, "status"), "resolved");
  assert_int_equal(json_array_size(json_object_get(ans.doc, "alerts")), 1);
  assert_int_equal(jint(ans.doc, "firing"), 0);
  assert_int_equal(get_incident(fx, &ans, second), 0);
  assert_int_equal(jint(ans.doc, "firing"), 1);
  answer_reset(&ans);
}

typedef struct {
  int calls;
  int order_errors;
  int failures;
} many_t;

typedef struct {
  many_t *m;
  int seq;
} seq_t;

static void on_seq(void *ud, int status, const char *err, const vg_store_result_t *r, size_t n)
{
  seq_t *q = ud;
  if (q->seq != q->m->calls) {
    q->m->order_errors++;
  }
  if (status != 0) {
    q->m->failures++;
  }
  q->m->calls++;
}

static void test_group_commit(void **state)
{
  fx_t *fx = *state;
  vg_store_opts_t o;
  opts_for(fx, &o);
  o.group_commit_ms = 20;
  open_with(fx, &o);
  enum { N = 50 };
  talert_t t[N];
  seq_t seq[N];
  many_t m = { 0 };
  for (int i = 0; i < N; i++) {
    char inst[16];
    snprintf(inst, sizeof inst, "i%d", i);
    mk(&t[i], "Batch", inst, "info", "firing", 1.7e9 + i, 0, i % 2 ? "odd" : "even");
    seq[i] = (seq_t){ &m, i };
    assert_int_equal(vg_store_submit(fx->s, &t[i].a, 1, on_seq, &seq[i]), 0);
  }
  run_until(fx, &m.calls, N);
  assert_int_equal(m.order_errors, 0);
  assert_int_equal(m.failures, 0);
  vg_store_stats_t st;
  vg_store_stats(fx->s, &st);
  assert_true(st.commits < N);
  assert_true(st.commits >= 1);
  assert_int_equal(st.batches, N);
  assert_int_equal(st.alerts, N);
  assert_int_equal(st.pending, 0);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts"), N);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM incidents"), 2);
}

static void test_busy_beyond_max_pending(void **state)
{
  fx_t *fx = *state;
  vg_store_opts_t o;
  opts_for(fx, &o);
  o.max_pending = 10;
  o.group_commit_ms = 5000; /* the writer holds the first batch; close cuts the wait short */
  open_with(fx, &o);
  talert_t t[11];
  vg_store_alert_t b[11];
  for (int i = 0; i < 11; i++) {
    char inst[16];
    snprintf(inst, sizeof inst, "i%d", i);
    mk(&t[i], "Busy", inst, "info", "firing", 1.7e9, 0, "g");
    b[i] = t[i].a;
  }
  many_t m = { 0 };
  seq_t s0 = { &m, 0 }, s1 = { &m, 1 }, sx = { &m, 99 };
  assert_int_equal(vg_store_submit(fx->s, b, 6, on_seq, &s0), 0);
  assert_int_equal(vg_store_submit(fx->s, b + 6, 5, on_seq, &sx), -EBUSY);
  assert_int_equal(vg_store_submit(fx->s, b + 6, 4, on_seq, &s1), 0);
  vg_store_stats_t st;
  vg_store_stats(fx->s, &st);
  assert_int_equal(st.pending, 10);
  assert_int_equal(vg_store_submit(fx->s, b + 10, 1, on_seq, &sx), -EBUSY);
  uint64_t t0 = uv_hrtime();
  close_store(fx);
  assert_true(uv_hrtime() - t0 < 4000000000u); /* did not wait out group_commit_ms */
  assert_int_equal(m.calls, 2);
  assert_int_equal(m.order_errors, 0);
  assert_int_equal(m.failures, 0);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts"), 10);
}

static void test_incident_actions(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  talert_t a;
  commit_t c;
  mk(&a, "Down", "a", "critical", "firing", 1.7e9, 0, "svc=api");
  commit_one(fx, &c, &a);
  int64_t id = c.res[0].incident_id;
  answer_t ans = { 0 };
  char want[64];

  assert_int_equal(action(fx, &ans, id, "ack", "alice", "looking"), 0);
  assert_string_equal(jstr(ans.doc, "status"), "investigating");
  assert_string_equal(jstr(ans.doc, "ackedBy"), "alice");
  assert_true(json_is_string(json_object_get(ans.doc, "ackedAt")));
  assert_int_equal(jint(ans.doc, "id"), id);

  assert_int_equal(action(fx, &ans, id, "ack", "bob", NULL), -EINVAL);
  snprintf(want, sizeof want, "incident %lld is already acknowledged", (long long)id);
  assert_string_equal(ans.text, want);

  assert_int_equal(action(fx, &ans, id, "resolve", "alice", "restarted"), 0);
  assert_string_equal(jstr(ans.doc, "status"), "resolved");
  assert_true(json_is_string(json_object_get(ans.doc, "resolvedAt")));
  assert_int_equal(action(fx, &ans, id, "resolve", "alice", NULL), -EINVAL);
  snprintf(want, sizeof want, "incident %lld is already resolved", (long long)id);
  assert_string_equal(ans.text, want);

  assert_int_equal(action(fx, &ans, id, "close", "carol", "postmortem filed"), 0);
  assert_string_equal(jstr(ans.doc, "status"), "closed");
  assert_true(json_is_string(json_object_get(ans.doc, "closedAt")));
  json_t *tl = json_object_get(ans.doc, "timeline");
  assert_int_equal(json_array_size(tl), 4);
  json_t *e = json_array_get(tl, 1);
  assert_string_equal(jstr(e, "event"), "acknowledged");
  assert_string_equal(jstr(e, "who"), "alice");
  assert_string_equal(jstr(e, "comment"), "looking");
  assert_string_equal(jstr(e, "from"), "open");
  assert_string_equal(jstr(e, "to"), "investigating");
  e = json_array_get(tl, 3);
  assert_string_equal(jstr(e, "who"), "carol");
  assert_string_equal(jstr(e, "from"), "resolved");
  assert_string_equal(jstr(e, "to"), "closed");

  snprintf(want, sizeof want, "incident %lld is closed", (long long)id);
  assert_int_equal(action(fx, &ans, id, "close", "carol", NULL), -EINVAL);
  assert_string_equal(ans.text, want);
  assert_int_equal(action(fx, &ans, id, "ack", "dave", NULL), -EINVAL);
  assert_string_equal(ans.text, want);
  assert_int_equal(action(fx, &ans, 4242, "ack", "dave", NULL), -ENOENT);
  assert_string_equal(ans.text, "no incident 4242");
  assert_int_equal(get_incident(fx, &ans, 4242), -ENOENT);
  assert_int_equal(vg_store_incident_action(fx->s, id, "reboot", "x", NULL, on_json, &ans),
                   -EINVAL);
  /* refusals wrote nothing */
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM timeline"), 4);

  /* the alert fires again (changed): a closed incident does not reopen, a new one opens */
  a.a.starts_at += 10;
  commit_one(fx, &c, &a);
  assert_true(c.res[0].incident_opened);
  assert_true(c.res[0].incident_id != id);
  answer_reset(&ans);
}

static void test_queries(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  const double T = 1796205600; /* 2026-12-02T10:00:00Z */
  talert_t t[5];
  mk(&t[0], "HighCPU", "web-1", "critical", "firing", T, 0, "alertname=HighCPU");
  mk(&t[1], "HighCPU", "web-2", "high", "firing", T + 1, 0, "alertname=HighCPU");
  mk(&t[2], "DiskFull", "db-1", "medium", "firing", T + 2, 0, "alertname=DiskFull");
  mk(&t[3], "Backup", "db-1", "low", "resolved", T + 3, T + 60.25, "alertname=Backup");
  mk(&t[4], "Latency", "api-1", "high", "firing", T + 4, 0, "alertname=Latency");
  t[4].a.generator_url = NULL;
  vg_store_alert_t b[5];
  for (int i = 0; i < 5; i++) {
    b[i] = t[i].a;
  }
  commit_t c;
  assert_int_equal(commit(fx, &c, b, 5), 0);
  assert_int_equal(c.res[3].incident_id, 0); /* resolved, never seen firing: no incident */

  answer_t ans = { 0 };
  json_t *arr = query_alerts(fx, &ans, NULL);
  assert_int_equal(json_array_size(arr), 5);
  json_t *first = json_array_get(arr, 0); /* newest first */
  assert_string_equal(jstr(first, "name"), "Latency");
  assert_true(json_is_null(json_object_get(first, "generatorURL")));
  assert_true(json_is_null(json_object_get(first, "endsAt")));
  assert_string_equal(jstr(first, "startsAt"), "2026-12-02T10:00:04.000Z");
  json_t *last = json_array_get(arr, 4);
  assert_string_equal(jstr(last, "fingerprint"), t[0].fp);
  assert_string_equal(jstr(last, "severity"), "critical");
  assert_string_equal(jstr(last, "status"), "firing");
  assert_string_equal(jstr(last, "source"), "alertmanager");
  assert_string_equal(jstr(last, "generatorURL"), "http://prometheus/graph");
  assert_string_equal(jstr(json_object_get(last, "labels"), "instance"), "web-1");
  assert_string_equal(jstr(json_object_get(last, "annotations"), "summary"), "something is wrong");
  assert_true(jint(last, "incidentId") > 0);
  assert_true(json_is_string(json_object_get(last, "firstSeen")));
  assert_true(json_is_string(json_object_get(last, "lastSeen")));
  json_t *backup = json_array_get(arr, 1);
  assert_string_equal(jstr(backup, "endsAt"), "2026-12-02T10:01:00.250Z");
  assert_true(json_is_null(json_object_get(backup, "incidentId")));

  vg_store_alert_query_t q = { .status = "resolved" };
  arr = query_alerts(fx, &ans, &q);
  assert_int_equal(json_array_size(arr), 1);
  assert_string_equal(jstr(json_array_get(arr, 0), "name"), "Backup");

  vg_matchers_t *m = labelmatch_new();
  char err[128];
  const char *text = "{severity=~\"critical|high\", instance!~\"api-.*\"}";
  assert_int_equal(labelmatch_parse(m, text, strlen(text), err, sizeof err), 0);
  q = (vg_store_alert_query_t){ .status = "firing", .matchers = m };
  answer_reset(&ans);
  assert_int_equal(vg_store_alerts(fx->s, &q, on_json, &ans), 0);
  labelmatch_free(m); /* the store keeps its own copy */
  run_until(fx, &ans.calls, 1);
  assert_int_equal(ans.status, 0);
  arr = ans.doc;
  assert_int_equal(json_array_size(arr), 2);
  assert_string_equal(jstr(json_object_get(json_array_get(arr, 0), "labels"), "instance"), "web-2");
  assert_string_equal(jstr(json_object_get(json_array_get(arr, 1), "labels"), "instance"), "web-1");
  q = (vg_store_alert_query_t){ .limit = 2 };
  arr = query_alerts(fx, &ans, &q);
  assert_int_equal(json_array_size(arr), 2);
  q = (vg_store_alert_query_t){ .status = "pending" };
  assert_int_equal(vg_store_alerts(fx->s, &q, on_json, &ans), -EINVAL);

  /* incidents: HighCPU (critical, 2 alerts), DiskFull, Latency; newest first */
  json_t *doc = query_incidents(fx, &ans, NULL);
  assert_int_equal(jint(doc, "total"), 3);
  json_t *incs = json_object_get(doc, "incidents");
  assert_int_equal(json_array_size(incs), 3);
  assert_string_equal(jstr(json_array_get(incs, 0), "groupKey"), "alertname=Latency");
  json_t *cpu = json_array_get(incs, 2);
  assert_string_equal(jstr(cpu, "severity"), "critical");
  assert_string_equal(jstr(cpu, "status"), "open");
  assert_string_equal(jstr(cpu, "title"), "something is wrong");
  assert_int_equal(jint(cpu, "alerts"), 2);
  assert_int_equal(jint(cpu, "firing"), 2);
  assert_true(json_is_null(json_object_get(cpu, "resolvedAt")));
  assert_true(json_is_string(json_object_get(cpu, "openedAt")));
  int64_t cpu_id = jint(cpu, "id");

  vg_store_incident_query_t iq = { .limit = 1, .offset = 1 };
  doc = query_incidents(fx, &ans, &iq);
  assert_int_equal(jint(doc, "total"), 3);
  incs = json_object_get(doc, "incidents");
  assert_int_equal(json_array_size(incs), 1);
  assert_string_equal(jstr(json_array_get(incs, 0), "groupKey"), "alertname=DiskFull");

  iq = (vg_store_incident_query_t){ .severity = "high" };
  doc = query_incidents(fx, &ans, &iq);
  assert_int_equal(jint(doc, "total"), 1);

  answer_t act = { 0 };
  assert_int_equal(action(fx, &act, cpu_id, "resolve", "ops", NULL), 0);
  answer_reset(&act);
  iq = (vg_store_incident_query_t){ .status = "active" };
  doc = query_incidents(fx, &ans, &iq);
  assert_int_equal(jint(doc, "total"), 2);
  iq = (vg_store_incident_query_t){ .status = "resolved" };
  doc = query_incidents(fx, &ans, &iq);
  assert_int_equal(jint(doc, "total"), 1);
  assert_int_equal(jint(json_array_get(json_object_get(doc, "incidents"), 0), "id"), cpu_id);
  iq = (vg_store_incident_query_t){ .status = "sleeping" };
  assert_int_equal(vg_store_incidents(fx->s, &iq, on_json, &ans), -EINVAL);

  assert_int_equal(get_incident(fx, &ans, cpu_id), 0);
  json_t *alerts = json_object_get(ans.doc, "alerts");
  assert_int_equal(json_array_size(alerts), 2);
  assert_string_equal(jstr(json_array_get(alerts, 0), "name"), "HighCPU");
  assert_true(json_is_null(json_object_get(ans.doc, "ackedBy")));
  answer_reset(&ans);
}

static void test_io_failure(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  talert_t a, b;
  commit_t c;
  char buf[64];
  mk(&a, "Ok", "a", "info", "firing", 1.7e9, 0, "g");
  commit_one(fx, &c, &a);
  assert_true(vg_store_writable(fx->s));

  /* the disk fills up: nothing of the batch is committed, and it says so */
  mk(&b, "Lost", "b", "info", "firing", 1.7e9, 0, "g");
  atomic_store(&fail_writes, 1);
  int rc = commit(fx, &c, &b.a, 1);
  atomic_store(&fail_writes, 0);
  assert_true(rc < 0);
  assert_int_equal(rc, -ENOSPC);
  assert_string_equal(c.err, "database or disk is full");
  assert_false(vg_store_writable(fx->s));
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts WHERE name = 'Lost'"), 0);

  /* fsync fails: reported as an error too (outcome unknown, never success) */
  atomic_store(&fail_syncs, 1);
  rc = commit(fx, &c, &b.a, 1);
  atomic_store(&fail_syncs, 0);
  assert_true(rc < 0);
  assert_string_equal(c.err, "disk I/O error");
  assert_false(vg_store_writable(fx->s));

  vg_store_stats_t st;
  vg_store_stats(fx->s, &st);
  assert_int_equal(st.commit_failures, 2);
  assert_int_equal(st.commits, 1);
  assert_int_equal(st.pending, 0);

  /* the disk recovers: the next commit succeeds and the store is writable again */
  mk(&b, "Back", "c", "info", "firing", 1.7e9, 0, "g");
  commit_one(fx, &c, &b);
  assert_true(vg_store_writable(fx->s));
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts WHERE name = 'Back'"), 1);
  assert_string_equal(sql_text(fx, "PRAGMA integrity_check", buf, sizeof buf), "ok");
}

static void test_retention(void **state)
{
  fx_t *fx = *state;
  vg_store_opts_t o;
  opts_for(fx, &o);
  o.retention_s = 0.05;
  open_with(fx, &o);
  double now = (double)time(NULL);
  talert_t x, y, z;
  commit_t c;
  mk(&x, "Gone", "x", "high", "firing", now - 10, 0, "gx");
  commit_one(fx, &c, &x);
  int64_t inc = c.res[0].incident_id;
  mk(&x, "Gone", "x", "high", "resolved", now - 10, now - 1, "gx");
  commit_one(fx, &c, &x);
  assert_true(c.res[0].incident_resolved);
  answer_t ans = { 0 };
  assert_int_equal(action(fx, &ans, inc, "close", "ops", NULL), 0);
  answer_reset(&ans);
  mk(&y, "Old", "y", "low", "resolved", 1.5e9, 1.5e9 + 60, "gy");
  mk(&z, "Kept", "z", "low", "firing", 1.5e9, 0, "gz");
  vg_store_alert_t yz[2] = { y.a, z.a };
  assert_int_equal(commit(fx, &c, yz, 2), 0);
  vg_store_stats_t st;
  vg_store_stats(fx->s, &st);
  assert_int_equal(st.pruned, 0); /* at most once a minute: the first ran at open */
  close_store(fx);
  usleep(100 * 1000);

  /* reopened, the writer prunes before its first commit */
  open_with(fx, &o);
  assert_int_equal(commit(fx, &c, NULL, 0), 0);
  assert_int_equal(c.n, 0);
  vg_store_stats(fx->s, &st);
  assert_int_equal(st.pruned, 3); /* x, y and the closed incident */
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts"), 1);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts WHERE name = 'Kept'"), 1);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM incidents WHERE status = 'closed'"), 0);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM timeline"), 1); /* z's incident opened */
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM incident_alerts"), 1);
  close_store(fx);

  /* max_alerts: the oldest resolved alerts go first */
  opts_for(fx, &o);
  open_with(fx, &o);
  talert_t r[5];
  vg_store_alert_t rb[5];
  for (int i = 0; i < 5; i++) {
    char inst[16];
    snprintf(inst, sizeof inst, "r%d", i);
    mk(&r[i], "Res", inst, "info", "resolved", now - 100, now - 50 + i, "gr");
    rb[i] = r[i].a;
  }
  assert_int_equal(commit(fx, &c, rb, 5), 0);
  close_store(fx);
  o.max_alerts = 3;
  open_with(fx, &o);
  assert_int_equal(commit(fx, &c, NULL, 0), 0);
  vg_store_stats(fx->s, &st);
  assert_int_equal(st.pruned, 3);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts"), 3);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts WHERE name = 'Kept'"), 1);
  assert_int_equal(sql_int(fx,
                           "SELECT count(*) FROM alerts WHERE labels LIKE '%\"r3\"%'"
                           " OR labels LIKE '%\"r4\"%'"),
                   2);
}

static void test_close_with_pending(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  enum { N = 20 };
  talert_t t[N];
  seq_t seq[N];
  many_t m = { 0 };
  for (int i = 0; i < N; i++) {
    char inst[16];
    snprintf(inst, sizeof inst, "i%d", i);
    mk(&t[i], "Closing", inst, "info", "firing", 1.7e9, 0, "g");
    seq[i] = (seq_t){ &m, i };
    assert_int_equal(vg_store_submit(fx->s, &t[i].a, 1, on_seq, &seq[i]), 0);
  }
  answer_t ans = { 0 };
  assert_int_equal(vg_store_incidents(fx->s, NULL, on_json, &ans), 0);
  vg_store_close(fx->s, on_closed, fx);
  /* closing: new work is refused, without a callback */
  assert_int_equal(vg_store_submit(fx->s, &t[0].a, 1, on_seq, &seq[0]), -EBUSY);
  assert_int_equal(vg_store_incident(fx->s, 1, on_json, &ans), -EBUSY);
  assert_int_equal(m.calls, 0);
  run_until(fx, &fx->closed, 1);
  fx->s = NULL;
  assert_int_equal(m.calls, N);
  assert_int_equal(m.order_errors, 0);
  assert_int_equal(m.failures, 0);
  assert_int_equal(ans.calls, 1); /* the read in flight answered before done */
  answer_reset(&ans);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts"), N);
}

/* Reads on the thread pool run beside the writer (TSan-friendly stress). */
typedef struct {
  int reads, commits;
} mix_t;

static void on_mix_read(void *ud, int status, const char *json, size_t len)
{
  mix_t *m = ud;
  assert_int_equal(status, 0);
  assert_true(len > 0 && json[0] == '{');
  m->reads++;
}

static void on_mix_commit(
    void *ud, int status, const char *err, const vg_store_result_t *r, size_t n)
{
  mix_t *m = ud;
  assert_int_equal(status, 0);
  m->commits++;
}

static void test_reads_beside_writes(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  enum { N = 40 };
  talert_t t[N];
  mix_t m = { 0 };
  for (int i = 0; i < N; i++) {
    char inst[16];
    snprintf(inst, sizeof inst, "i%d", i);
    mk(&t[i], "Mix", inst, "info", "firing", 1.7e9, 0, i % 3 == 0 ? "a" : "b");
    assert_int_equal(vg_store_submit(fx->s, &t[i].a, 1, on_mix_commit, &m), 0);
    assert_int_equal(vg_store_incidents(fx->s, NULL, on_mix_read, &m), 0);
  }
  run_until(fx, &m.commits, N);
  run_until(fx, &m.reads, N);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts"), N);
}

/* ---- decision replay: undecided marks ---- */

typedef struct {
  int calls;
  int status;
} done_t;

static void on_done(void *ud, int status, const char *err)
{
  done_t *d = ud;
  d->calls++;
  d->status = status;
  assert_true(status == 0 ? err == NULL : err != NULL);
}

/* Marks one alert's change decided and waits for the commit; returns its status. */
static int decide(fx_t *fx, const char *fp, int64_t change)
{
  done_t d = { 0 };
  vg_store_decision_t one = { fp, change };
  assert_int_equal(vg_store_decided(fx->s, &one, 1, on_done, &d), 0);
  assert_int_equal(d.calls, 0); /* never from inside the call */
  run_until(fx, &d.calls, 1);
  return d.status;
}

static int64_t undecided_of(fx_t *fx, const char *fp)
{
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT undecided FROM alerts WHERE fingerprint = '%s'", fp);
  return sql_int(fx, sql);
}

static void test_undecided_marks(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  talert_t a, b;
  commit_t c;
  mk(&a, "Mark", "a", "high", "firing", 1.7e9, 0, "g");
  mk(&b, "Mark", "b", "low", "firing", 1.7e9 + 1, 0, "g");
  vg_store_alert_t ab[2] = { a.a, b.a };
  assert_int_equal(commit(fx, &c, ab, 2), 0);
  int64_t first = c.res[0].change, bfirst = c.res[1].change;
  assert_true(first > 0);
  assert_true(bfirst > first); /* every change its own number */
  assert_int_equal(undecided_of(fx, a.fp), first);
  assert_int_equal(undecided_of(fx, b.fp), bfirst);

  /* an unchanged re-delivery has no change and leaves the mark alone, before and after */
  commit_one(fx, &c, &a);
  assert_int_equal(c.res[0].outcome, VG_STORE_UNCHANGED);
  assert_int_equal(c.res[0].change, 0);
  assert_int_equal(undecided_of(fx, a.fp), first);
  assert_int_equal(decide(fx, a.fp, first), 0);
  assert_int_equal(undecided_of(fx, a.fp), 0);
  assert_int_equal(undecided_of(fx, b.fp), bfirst); /* only the named one */
  commit_one(fx, &c, &a);
  assert_int_equal(c.res[0].outcome, VG_STORE_UNCHANGED);
  assert_int_equal(undecided_of(fx, a.fp), 0);

  /* a change marks it again, with a later number */
  a.annotations[0] = (vg_label_t)LBL("summary", "worse");
  commit_one(fx, &c, &a);
  assert_int_equal(c.res[0].outcome, VG_STORE_CHANGED);
  int64_t second = c.res[0].change;
  assert_true(second > bfirst);
  assert_int_equal(undecided_of(fx, a.fp), second);
  /* deciding its older change (a flush that raced the new one) does not clear the newer */
  assert_int_equal(decide(fx, a.fp, first), 0);
  assert_int_equal(undecided_of(fx, a.fp), second);
  assert_int_equal(decide(fx, a.fp, second), 0);
  assert_int_equal(undecided_of(fx, a.fp), 0);
  /* a resolution is a change too; an unknown fingerprint is no error */
  a.a.status = "resolved";
  a.a.ends_at = 1.7e9 + 60;
  commit_one(fx, &c, &a);
  assert_true(c.res[0].change > second);
  assert_int_equal(undecided_of(fx, a.fp), c.res[0].change);
  assert_int_equal(decide(fx, "0123456789abcdef", 1), 0);

  /* several in one call; an empty call still answers */
  vg_store_decision_t both[2] = { { a.fp, c.res[0].change }, { b.fp, bfirst } };
  done_t d = { 0 };
  assert_int_equal(vg_store_decided(fx->s, both, 2, on_done, &d), 0);
  run_until(fx, &d.calls, 1);
  assert_int_equal(d.status, 0);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts WHERE undecided != 0"), 0);
  assert_int_equal(vg_store_decided(fx->s, NULL, 0, on_done, &d), 0);
  run_until(fx, &d.calls, 2);
  assert_int_equal(vg_store_decided(fx->s, both, 2, NULL, NULL), 0); /* done may be NULL */

  /* two changes of one alert in one batch (one transaction) have two numbers: deciding the
     first alone leaves the alert undecided */
  talert_t f, r;
  mk(&f, "Twice", "t", "high", "firing", 1.7e9, 0, "g2");
  mk(&r, "Twice", "t", "high", "resolved", 1.7e9, 1.7e9 + 5, "g2");
  vg_store_alert_t fr[2] = { f.a, r.a };
  assert_int_equal(commit(fx, &c, fr, 2), 0);
  assert_int_equal(c.res[0].outcome, VG_STORE_NEW);
  assert_int_equal(c.res[1].outcome, VG_STORE_CHANGED);
  assert_true(c.res[1].change > c.res[0].change);
  assert_int_equal(decide(fx, f.fp, c.res[0].change), 0);
  assert_int_equal(undecided_of(fx, f.fp), c.res[1].change);

  /* caller mistakes */
  assert_int_equal(vg_store_decided(fx->s, NULL, 1, on_done, &d), -EINVAL);
  vg_store_decision_t bad = { NULL, 1 };
  assert_int_equal(vg_store_decided(fx->s, &bad, 1, on_done, &d), -EINVAL);
  assert_int_equal(vg_store_decided(NULL, both, 2, on_done, &d), -EINVAL);
  close_store(fx);
  assert_int_equal(d.calls, 2);
}

/* What vg_store_undecided handed out, copied (it is borrowed during the call). */
typedef struct {
  int calls;
  int done, status;
  struct {
    char fp[17], name[32], severity[16], status[16], source[32], group[32];
    char labels[256], summary[64];
    bool url;
    double starts, ends;
    int64_t incident, change;
  } got[8];
} listed_t;

static void on_undecided(void *ud, const vg_store_alert_t *a, int64_t incident_id, int64_t change)
{
  listed_t *l = ud;
  assert_true(l->calls < (int)COUNT(l->got));
  assert_int_equal(l->done, 0);
  int i = l->calls++;
  snprintf(l->got[i].fp, sizeof l->got[i].fp, "%s", a->fingerprint);
  snprintf(l->got[i].name, sizeof l->got[i].name, "%s", a->name);
  snprintf(l->got[i].severity, sizeof l->got[i].severity, "%s", a->severity);
  snprintf(l->got[i].status, sizeof l->got[i].status, "%s", a->status);
  snprintf(l->got[i].source, sizeof l->got[i].source, "%s", a->source);
  snprintf(l->got[i].group, sizeof l->got[i].group, "%s", a->group_key);
  size_t at = 0;
  for (size_t k = 0; k < a->nlabels; k++) {
    at += (size_t)snprintf(l->got[i].labels + at, sizeof l->got[i].labels - at, "%.*s=%.*s,",
                           (int)a->labels[k].name_len, a->labels[k].name,
                           (int)a->labels[k].value_len, a->labels[k].value);
  }
  assert_int_equal(a->nannotations, 1);
  assert_int_equal(a->annotations[0].name_len, 7);
  assert_memory_equal(a->annotations[0].name, "summary", 7);
  snprintf(l->got[i].summary, sizeof l->got[i].summary, "%.*s", (int)a->annotations[0].value_len,
           a->annotations[0].value);
  l->got[i].url = a->generator_url != NULL;
  l->got[i].starts = a->starts_at;
  l->got[i].ends = a->ends_at;
  l->got[i].incident = incident_id;
  l->got[i].change = change;
}

static void on_listed(void *ud, int status, const char *err)
{
  listed_t *l = ud;
  l->done++;
  l->status = status;
  assert_true(status == 0 ? err == NULL : err != NULL);
}

static void list_undecided(fx_t *fx, listed_t *l)
{
  memset(l, 0, sizeof *l);
  assert_int_equal(vg_store_undecided(fx->s, on_undecided, on_listed, l), 0);
  assert_int_equal(l->calls + l->done, 0); /* never from inside the call */
  run_until(fx, &l->done, 1);
  assert_int_equal(l->status, 0);
}

static void test_undecided_listed_across_reopen(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  talert_t a, b, x;
  commit_t c;
  mk(&a, "Replay", "a", "critical", "firing", 1.7e9, 0, "alertname=Replay");
  commit_one(fx, &c, &a);
  int64_t inc = c.res[0].incident_id, ca = c.res[0].change;
  mk(&b, "Gone", "b", "low", "resolved", 1.7e9 + 5, 1.7e9 + 65.5, "alertname=Gone");
  b.a.generator_url = NULL;
  b.annotations[0] = (vg_label_t)LBL("summary", "it was gone");
  commit_one(fx, &c, &b);
  int64_t cb = c.res[0].change;
  assert_true(cb > ca);
  mk(&x, "Decided", "x", "info", "firing", 1.7e9, 0, "alertname=Decided");
  commit_one(fx, &c, &x);
  assert_int_equal(decide(fx, x.fp, c.res[0].change), 0);
  close_store(fx); /* as a crash would leave it: committed, a and b never decided */

  open_default(fx);
  listed_t l;
  list_undecided(fx, &l);
  assert_int_equal(l.calls, 2);
  /* oldest change first, everything the policies need, labels sorted by name */
  assert_string_equal(l.got[0].fp, a.fp);
  assert_string_equal(l.got[0].name, "Replay");
  assert_string_equal(l.got[0].severity, "critical");
  assert_string_equal(l.got[0].status, "firing");
  assert_string_equal(l.got[0].source, "alertmanager");
  assert_string_equal(l.got[0].group, "alertname=Replay");
  assert_string_equal(l.got[0].labels, "alertname=Replay,instance=a,severity=critical,");
  assert_string_equal(l.got[0].summary, "something is wrong");
  assert_true(l.got[0].url);
  assert_true(l.got[0].starts == 1.7e9);
  assert_true(l.got[0].ends == 0);
  assert_int_equal(l.got[0].incident, inc);
  assert_int_equal(l.got[0].change, ca);
  assert_string_equal(l.got[1].fp, b.fp);
  assert_string_equal(l.got[1].status, "resolved");
  assert_string_equal(l.got[1].labels, "alertname=Gone,instance=b,severity=low,");
  assert_string_equal(l.got[1].summary, "it was gone");
  assert_false(l.got[1].url);
  assert_true(l.got[1].starts == 1.7e9 + 5);
  assert_true(l.got[1].ends == 1.7e9 + 65.5);
  assert_int_equal(l.got[1].incident, 0); /* resolved, never seen firing: no incident */
  assert_int_equal(l.got[1].change, cb);

  /* numbers go on above what the table holds, so none names two changes of an alert */
  a.a.status = "resolved";
  a.a.ends_at = 1.7e9 + 30;
  commit_one(fx, &c, &a);
  int64_t ca2 = c.res[0].change;
  assert_true(ca2 > cb);
  /* the replay's decision about the firing a is stale now: the resolution stays undecided */
  vg_store_decision_t d[2] = { { l.got[0].fp, l.got[0].change }, { l.got[1].fp, l.got[1].change } };
  done_t dd = { 0 };
  assert_int_equal(vg_store_decided(fx->s, d, 2, on_done, &dd), 0);
  run_until(fx, &dd.calls, 1);
  assert_int_equal(dd.status, 0);
  list_undecided(fx, &l);
  assert_int_equal(l.calls, 1);
  assert_string_equal(l.got[0].fp, a.fp);
  assert_string_equal(l.got[0].status, "resolved");
  assert_int_equal(l.got[0].change, ca2);
  assert_int_equal(decide(fx, a.fp, ca2), 0);
  list_undecided(fx, &l);
  assert_int_equal(l.calls, 0);

  memset(&l, 0, sizeof l);
  assert_int_equal(vg_store_undecided(fx->s, NULL, on_listed, &l), -EINVAL);
  vg_store_close(fx->s, on_closed, fx);
  assert_int_equal(vg_store_undecided(fx->s, on_undecided, on_listed, &l), -EBUSY);
  assert_int_equal(vg_store_decided(fx->s, d, 2, on_done, &dd), -EBUSY);
  run_until(fx, &fx->closed, 1);
  fx->s = NULL;
  assert_int_equal(l.done, 0);
  assert_int_equal(dd.calls, 1);
}

typedef struct {
  int calls;
  vg_store_outcome_t outcome;
  int64_t change;
  char status[16];
} expired_t;

static void on_expired(void *ud,
                       const vg_store_alert_t *alerts,
                       const vg_store_result_t *results,
                       size_t n)
{
  expired_t *e = ud;
  assert_int_equal(n, 1);
  e->calls++;
  e->outcome = results[0].outcome;
  e->change = results[0].change;
  snprintf(e->status, sizeof e->status, "%s", alerts[0].status);
}

/* The writer's own resolutions (endsAt passed) are changes that wait for a decision too. */
static void test_undecided_expiry(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  double now = (double)time(NULL);
  talert_t a;
  commit_t c;
  mk(&a, "Expires", "a", "high", "firing", now - 60, now - 10, "g");
  commit_one(fx, &c, &a);
  int64_t first = c.res[0].change;
  assert_int_equal(decide(fx, a.fp, first), 0);
  close_store(fx);

  /* reopened, the writer's first expiry scan resolves it */
  open_default(fx);
  expired_t e = { 0 };
  vg_store_on_expired(fx->s, on_expired, &e);
  run_until(fx, &e.calls, 1);
  assert_int_equal(e.outcome, VG_STORE_CHANGED);
  assert_string_equal(e.status, "resolved");
  assert_true(e.change > 0);
  assert_int_equal(undecided_of(fx, a.fp), e.change);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM alerts WHERE status = 'resolved'"), 1);
  assert_int_equal(decide(fx, a.fp, e.change), 0);
  assert_int_equal(undecided_of(fx, a.fp), 0);
}

/* Upgrading a schema-5 database: its alerts count as decided, nothing is replayed. */
static void test_undecided_upgrade(void **state)
{
  fx_t *fx = *state;
  open_default(fx);
  talert_t a;
  commit_t c;
  mk(&a, "Old", "a", "high", "firing", 1.7e9, 0, "g");
  commit_one(fx, &c, &a);
  close_store(fx);
  sql_exec(fx->path,
           "DROP INDEX alerts_undecided; ALTER TABLE alerts DROP COLUMN undecided;"
           " DROP TABLE snapshots; PRAGMA user_version = 5");
  open_default(fx);
  assert_int_equal(sql_int(fx, "PRAGMA user_version"), 7);
  assert_int_equal(undecided_of(fx, a.fp), 0);
  assert_int_equal(sql_int(fx,
                           "SELECT count(*) FROM sqlite_schema WHERE type = 'index'"
                           " AND name = 'alerts_undecided'"),
                   1);
  listed_t l;
  list_undecided(fx, &l);
  assert_int_equal(l.calls, 0);
  /* and the reader finds undecided rows through the partial index, in its order */
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db,
                                      "EXPLAIN QUERY PLAN SELECT * FROM alerts"
                                      " WHERE undecided > 0 ORDER BY undecided LIMIT 10",
                                      -1, &st, NULL),
                   SQLITE_OK);
  char plan[512] = "";
  size_t at = 0;
  while (sqlite3_step(st) == SQLITE_ROW && at < sizeof plan) {
    at += (size_t)snprintf(plan + at, sizeof plan - at, "%s;", sqlite3_column_text(st, 3));
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  assert_non_null(strstr(plan, "USING INDEX alerts_undecided"));
  assert_null(strstr(plan, "TEMP B-TREE")); /* no sort */
}

int main(void)
{
  fault_vfs_install();
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_fingerprint),
    cmocka_unit_test_setup_teardown(test_open_migrate_reopen, setup, teardown),
    cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_submit_durable_before_callback, setup, teardown),
    cmocka_unit_test_setup_teardown(test_duplicate_is_unchanged, setup, teardown),
    cmocka_unit_test_setup_teardown(test_resolve_resolves_incident, setup, teardown),
    cmocka_unit_test_setup_teardown(test_reopen_within_grace_then_new_incident, setup, teardown),
    cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
    cmocka_unit_test_setup_teardown(test_busy_beyond_max_pending, setup, teardown),
    cmocka_unit_test_setup_teardown(test_incident_actions, setup, teardown),
    cmocka_unit_test_setup_teardown(test_queries, setup, teardown),
    cmocka_unit_test_setup_teardown(test_io_failure, setup, teardown),
    cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
    cmocka_unit_test_setup_teardown(test_close_with_pending, setup, teardown),
    cmocka_unit_test_setup_teardown(test_reads_beside_writes, setup, teardown),
    cmocka_unit_test_setup_teardown(test_undecided_marks, setup, teardown),
    cmocka_unit_test_setup_teardown(test_undecided_listed_across_reopen, setup, teardown),
    cmocka_unit_test_setup_teardown(test_undecided_expiry, setup, teardown),
    cmocka_unit_test_setup_teardown(test_undecided_upgrade, setup, teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  sqlite3_vfs_unregister(&fault_vfs);
  return rc;
}
