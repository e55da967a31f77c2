/* Tests for src/engine/memory.c against a real SQLite store in a temporary directory and a real
 * uv loop: every operation and its argument errors; the knowledge base's full-text ranking,
 * hostile query text, label overlap and its index kept in step on upsert; fixes ordered by
 * their Laplace-smoothed success rate; state expiry; escalation timers (G4): scheduling is
 * idempotent, due timers are handed out once however late (late_ms), even across a restart,
 * and the store cancels them when their incident is acknowledged, resolved or closed, by an
 * operator or because its alerts resolved. Incidents are made by submitting alerts. */
#include "engine/memory.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "engine/ledger.h"
#include "test_support.h"

#define LBL(n, v)                  \
  {                                \
    (n), strlen(n), (v), strlen(v) \
  }

#define T0 1000000000000LL /* a time for timers: escalations_due is told `now` */

typedef struct {
  char dir[64];
  char path[96];
  uv_loop_t loop;
  vg_store_t *s;
  int closed;
  json_t *keep; /* every answer, freed at teardown */
} fx_t;

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

static void on_closed(void *ud)
{
  ((fx_t *)ud)->closed++;
}

static void open_store(fx_t *fx)
{
  vg_store_opts_t o;
  vg_store_opts_default(&o);
  o.path = fx->path;
  o.group_commit_ms = 1;
  char err[256] = "";
  fx->s = vg_store_open(&fx->loop, &o, err, sizeof err);
  if (fx->s == NULL) {
    fail_msg("vg_store_open: %s", err);
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

static int setup(void **state)
{
  fx_t *fx = calloc(1, sizeof *fx);
  assert_non_null(fx);
  snprintf(fx->dir, sizeof fx->dir, "/tmp/vg-memory-XXXXXX");
  assert_non_null(mkdtemp(fx->dir));
  snprintf(fx->path, sizeof fx->path, "%s/vigil.db", fx->dir);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  fx->keep = json_array();
  open_store(fx);
  *state = fx;
  return 0;
}

static int teardown(void **state)
{
  fx_t *fx = *state;
  close_store(fx);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&fx->loop), 0);
  const char *const files[] = { "vigil.db", "vigil.db-wal", "vigil.db-shm" };
  for (size_t i = 0; i < 3; i++) {
    char p[128];
    snprintf(p, sizeof p, "%s/%s", fx->dir, files[i]);
    unlink(p);
  }
  rmdir(fx->dir);
  json_decref(fx->keep);
  free(fx);
  return 0;
}

static json_t *keep(fx_t *fx, json_t *doc)
{
  assert_non_null(doc);
  assert_int_equal(json_array_append_new(fx->keep, doc), 0);
  return doc;
}

/* ---- direct SQL on the file, beside the store ---- */

__attribute__((format(printf, 2, 3))) static long long sql_int(fx_t *fx, const char *fmt, ...)
{
  char sql[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sql, sizeof sql, fmt, ap);
  va_end(ap);
  sqlite3 *db;
  assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    fail_msg("%s: %s", sql, sqlite3_errmsg(db));
  }
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  long long v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static void sql_exec(fx_t *fx, const char *sql)
{
  sqlite3 *db;
  assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    fail_msg("%s: %s", sql, msg != NULL ? msg : "?");
  }
  sqlite3_close(db);
}

/* ---- memory operations ---- */

typedef struct {
  int calls;
  int status;
  char err[256];
  json_t *doc;
} got_t;

static void on_memory(void *ud, int status, const char *err, const char *json, size_t len)
{
  got_t *g = ud;
  g->calls++;
  g->status = status;
  snprintf(g->err, sizeof g->err, "%s", err != NULL ? err : "");
  if (status == 0) {
    assert_null(err);
    g->doc = json_loadb(json, len, 0, NULL);
    assert_true(json_is_object(g->doc));
  } else {
    assert_null(json);
  }
}

/* Runs `op` with the arguments (printf-style JSON), checks its status and, when given, its
 * message; returns the answer (owned by the fixture) or NULL. */
__attribute__((format(printf, 5, 6))) static json_t *mem(
    fx_t *fx, int want, const char *want_err, const char *op, const char *fmt, ...)
{
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *args = malloc((size_t)n + 1);
  assert_non_null(args);
  vsnprintf(args, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  got_t g = { 0 };
  int rc = vg_memory_call(fx->s, op, args, on_memory, &g);
  if (rc != 0) {
    fail_msg("%s %.200s: refused with %d", op, args, rc);
  }
  assert_int_equal(g.calls, 0); /* never from inside the call */
  run_until(fx, &g.calls, 1);
  if (g.status != want || (want_err != NULL && strcmp(g.err, want_err) != 0)) {
    fail_msg("%s %.200s: status %d \"%s\", wanted %d \"%s\"", op, args, g.status, g.err, want,
             want_err != NULL ? want_err : "");
  }
  free(args);
  assert_int_equal(g.calls, 1);
  return g.doc != NULL ? keep(fx, g.doc) : NULL;
}

#define OK(fx, op, ...) mem((fx), 0, NULL, (op), __VA_ARGS__)
#define REFUSED(fx, status, msg, op, ...) mem((fx), (status), (msg), (op), __VA_ARGS__)

static json_int_t jint(json_t *o, const char *key)
{
  json_t *v = json_object_get(o, key);
  if (!json_is_integer(v)) {
    fail_msg("'%s' is not an integer", key);
  }
  return json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key)
{
  json_t *v = json_object_get(o, key);
  if (!json_is_string(v)) {
    fail_msg("'%s' is not a string", key);
  }
  return json_string_value(v);
}

static double jnum(json_t *o, const char *key)
{
  json_t *v = json_object_get(o, key);
  if (!json_is_number(v)) {
    fail_msg("'%s' is not a number", key);
  }
  return json_number_value(v);
}

/* A string of n copies of c (freed by the caller). */
static char *big(size_t n, char c)
{
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

/* ---- incidents, made the way intake makes them ---- */

typedef struct {
  int calls, status;
  vg_store_result_t res;
} commit_t;

static void on_commit(void *ud, int status, const char *err, const vg_store_result_t *r, size_t n)
{
  (void)err;
  commit_t *c = ud;
  c->calls++;
  c->status = status;
  if (status == 0 && n == 1) {
    c->res = r[0];
  }
}

/* Submits one alert {alertname, instance} of group `group` and returns its result. */
static vg_store_result_t submit(fx_t *fx,
                                const char *name,
                                const char *instance,
                                const char *group,
                                const char *status,
                                double starts,
                                double ends)
{
  vg_label_t labels[3] = { LBL("alertname", name), LBL("instance", instance),
                           LBL("severity", "high") };
  vg_label_t annotations[1] = { LBL("summary", "something is wrong") };
  char fp[17];
  vg_fingerprint(labels, 3, fp);
  vg_store_alert_t a = { .fingerprint = fp,
                         .name = name,
                         .severity = "high",
                         .status = status,
                         .labels = labels,
                         .nlabels = 3,
                         .annotations = annotations,
                         .nannotations = 1,
                         .starts_at = starts,
                         .ends_at = ends,
                         .source = "alertmanager",
                         .group_key = group };
  commit_t c = { 0 };
  assert_int_equal(vg_store_submit(fx->s, &a, 1, on_commit, &c), 0);
  run_until(fx, &c.calls, 1);
  assert_int_equal(c.status, 0);
  return c.res;
}

static int64_t open_incident(fx_t *fx, const char *name, const char *instance, const char *group)
{
  vg_store_result_t r = submit(fx, name, instance, group, "firing", 1.7e9, 0);
  assert_true(r.incident_opened);
  assert_true(r.incident_id > 0);
  return r.incident_id;
}

typedef struct {
  int calls, status;
  json_t *doc;
} answer_t;

static void on_json(void *ud, int status, const char *json, size_t len)
{
  answer_t *a = ud;
  a->calls++;
  a->status = status;
  if (status == 0) {
    a->doc = json_loadb(json, len, 0, NULL);
  }
}

/* An operator's ack/resolve/close through the store; returns the incident document. */
static json_t *transition(fx_t *fx, int64_t id, const char *action)
{
  answer_t a = { 0 };
  assert_int_equal(vg_store_incident_action(fx->s, id, action, "alice", "on it", on_json, &a), 0);
  run_until(fx, &a.calls, 1);
  assert_int_equal(a.status, 0);
  return keep(fx, a.doc);
}

/* GET /api/v1/incidents/{id}'s document. */
static json_t *incident_doc(fx_t *fx, int64_t id)
{
  answer_t a = { 0 };
  assert_int_equal(vg_store_incident(fx->s, id, on_json, &a), 0);
  run_until(fx, &a.calls, 1);
  assert_int_equal(a.status, 0);
  return keep(fx, a.doc);
}

/* The first timeline entry with `event`, or NULL. */
static json_t *find_event(json_t *timeline, const char *event)
{
  size_t i;
  json_t *e;
  json_array_foreach(timeline, i, e)
  {
    if (strcmp(json_string_value(json_object_get(e, "event")), event) == 0) {
      return e;
    }
  }
  return NULL;
}

/* The escalation of `level` in an escalations list. */
static json_t *level_of(json_t *list, int level)
{
  size_t i;
  json_t *e;
  json_array_foreach(list, i, e)
  {
    if (jint(e, "level") == level) {
      return e;
    }
  }
  fail_msg("no escalation of level %d", level);
  return NULL;
}

static json_t *escalations(fx_t *fx, int64_t inc)
{
  json_t *r = OK(fx, "escalations", "{\"incident\":%lld}", (long long)inc);
  return json_object_get(r, "escalations");
}

static int64_t escalate(fx_t *fx, int64_t inc, int level, long long due_at, bool *created)
{
  json_t *r = OK(fx, "escalate",
                 "{\"incident\":%lld,\"policy\":\"page\",\"level\":%d,\"name\":\"oncall-%d\","
                 "\"due_at\":%lld}",
                 (long long)inc, level, level, due_at);
  if (created != NULL) {
    *created = json_is_true(json_object_get(r, "created"));
  }
  return jint(r, "id");
}

static json_t *due(fx_t *fx, long long now)
{
  return json_object_get(OK(fx, "escalations_due", "{\"now\":%lld}", now), "due");
}

static json_t *similar(fx_t *fx, const char *args)
{
  return json_object_get(OK(fx, "kb_similar", "%s", args), "similar");
}

static void learn(fx_t *fx, int64_t inc, const char *text, const char *labels)
{
  OK(fx, "kb_learn", "{\"incident\":%lld,\"text\":\"%s\",\"labels\":%s,\"class\":\"cpu\"}",
     (long long)inc, text, labels != NULL ? labels : "{}");
}

static bool lists_incident(json_t *list, int64_t inc)
{
  size_t i;
  json_t *e;
  json_array_foreach(list, i, e)
  {
    if (jint(e, "incident") == inc) {
      return true;
    }
  }
  return false;
}

/* ---- the calls refused before they start ---- */

static int never_calls;

static void on_never(void *ud, int status, const char *err, const char *json, size_t len)
{
  (void)ud, (void)status, (void)err, (void)json, (void)len;
  never_calls++;
}

static void test_refused_before_start(void **state)
{
  fx_t *fx = *state;
  never_calls = 0;
  assert_int_equal(vg_memory_call(fx->s, "forget", "{}", on_never, NULL), -EINVAL);
  assert_int_equal(vg_memory_call(fx->s, "note", "{", on_never, NULL), -EINVAL);
  assert_int_equal(vg_memory_call(fx->s, "note", "[1]", on_never, NULL), -EINVAL);
  assert_int_equal(vg_memory_call(fx->s, "note", "{\"a\":1,\"a\":2}", on_never, NULL), -EINVAL);
  assert_int_equal(vg_memory_call(fx->s, "note", "{} trailing", on_never, NULL), -EINVAL);
  assert_int_equal(vg_memory_call(fx->s, "note", NULL, on_never, NULL), -EINVAL);
  assert_int_equal(vg_memory_call(fx->s, NULL, "{}", on_never, NULL), -EINVAL);
  assert_int_equal(vg_memory_call(NULL, "note", "{}", on_never, NULL), -EINVAL);
  assert_int_equal(vg_memory_call(fx->s, "note", "{}", NULL, NULL), -EINVAL);
  uv_run(&fx->loop, UV_RUN_NOWAIT);
  assert_int_equal(never_calls, 0);

  const char *const reads[] = { "state_get", "kb_similar", "fixes", "escalations", "report" };
  const char *const writes[] = { "note",        "state_set", "kb_learn",        "fix_add",
                                 "fix_outcome", "escalate",  "escalations_due", "escalation_done" };
  for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
    assert_true(vg_memory_is_read(reads[i]));
  }
  for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
    assert_false(vg_memory_is_read(writes[i]));
  }
  assert_false(vg_memory_is_read("forget"));
  assert_false(vg_memory_is_read(NULL));

  /* a closing store takes nothing more */
  vg_store_close(fx->s, on_closed, fx);
  assert_int_equal(
      vg_memory_call(fx->s, "state_get", "{\"policy\":\"p\",\"key\":\"k\"}", on_never, NULL),
      -EBUSY);
  assert_int_equal(vg_memory_call(fx->s, "note", "{}", on_never, NULL), -EBUSY);
  run_until(fx, &fx->closed, 1);
  fx->s = NULL;
  assert_int_equal(never_calls, 0);
}

/* ---- timeline notes ---- */

static void test_note_and_timeline_detail(void **state)
{
  fx_t *fx = *state;
  int64_t inc = open_incident(fx, "HighCPU", "web-1", "g1");
  json_t *r =
      OK(fx, "note",
         "{\"incident\":%lld,\"who\":\"policy:cpu\",\"event\":\"enrich\","
         "\"comment\":\"took 12 ms\",\"detail\":{\"ms\":12,\"steps\":[\"logs\",\"metrics\"]}}",
         (long long)inc);
  int64_t id = jint(r, "id");
  assert_true(id > 0);
  r = OK(fx, "note", "{\"incident\":%lld.0,\"who\":\"policy:cpu\",\"event\":\"classify\"}",
         (long long)inc); /* an integral real is an integer */
  assert_true(jint(r, "id") > id);

  json_t *tl = json_object_get(incident_doc(fx, inc), "timeline");
  assert_int_equal(json_array_size(tl), 3);
  json_t *e = find_event(tl, "enrich");
  assert_non_null(e);
  assert_string_equal(jstr(e, "who"), "policy:cpu");
  assert_string_equal(jstr(e, "comment"), "took 12 ms");
  json_t *detail = json_object_get(e, "detail");
  assert_true(json_is_object(detail));
  assert_int_equal(jint(detail, "ms"), 12);
  assert_string_equal(json_string_value(json_array_get(json_object_get(detail, "steps"), 1)),
                      "metrics");
  assert_null(json_object_get(find_event(tl, "classify"), "detail")); /* omitted when none */
  assert_null(json_object_get(find_event(tl, "opened"), "detail"));

  REFUSED(fx, -ENOENT, "note: no incident 999", "note",
          "{\"incident\":999,\"who\":\"x\",\"event\":\"e\"}");
  REFUSED(fx, -EINVAL, "note: 'incident' must be an integer", "note",
          "{\"incident\":\"7\",\"who\":\"x\",\"event\":\"e\"}");
  REFUSED(fx, -EINVAL, "note: 'incident' must be an integer", "note",
          "{\"incident\":1.5,\"who\":\"x\",\"event\":\"e\"}");
  REFUSED(fx, -EINVAL, "note: 'incident' must be at least 1", "note",
          "{\"incident\":0,\"who\":\"x\",\"event\":\"e\"}");
  REFUSED(fx, -EINVAL, "note: 'event' is required", "note", "{\"incident\":%lld,\"who\":\"x\"}",
          (long long)inc);
  REFUSED(fx, -EINVAL, "note: 'who' must not be empty", "note",
          "{\"incident\":%lld,\"who\":\"\",\"event\":\"e\"}", (long long)inc);
  REFUSED(fx, -EINVAL, "note: 'event' must be a string", "note",
          "{\"incident\":%lld,\"who\":\"x\",\"event\":{}}", (long long)inc);
  REFUSED(fx, -EINVAL, "note: unknown argument 'colour'", "note",
          "{\"incident\":%lld,\"who\":\"x\",\"event\":\"e\",\"colour\":\"red\"}", (long long)inc);
  char *comment = big(65537, 'c');
  REFUSED(fx, -EINVAL, "note: 'comment' is longer than 65536 bytes", "note",
          "{\"incident\":%lld,\"who\":\"x\",\"event\":\"e\",\"comment\":\"%s\"}", (long long)inc,
          comment);
  REFUSED(fx, -EINVAL, "note: 'detail' is larger than 65536 bytes as JSON", "note",
          "{\"incident\":%lld,\"who\":\"x\",\"event\":\"e\",\"detail\":[\"%s\"]}", (long long)inc,
          comment);
  free(comment);
  /* nothing of the refused notes was written */
  assert_int_equal(
      sql_int(fx, "SELECT count(*) FROM timeline WHERE incident_id = %lld", (long long)inc), 3);
}

/* ---- policy state ---- */

static json_t *state_get(fx_t *fx, const char *policy, const char *key)
{
  json_t *r = OK(fx, "state_get", "{\"policy\":\"%s\",\"key\":\"%s\"}", policy, key);
  return json_object_get(r, "value");
}

static void test_state(void **state)
{
  fx_t *fx = *state;
  assert_null(state_get(fx, "cpu", "last"));
  assert_int_equal(json_object_size(OK(fx, "state_set",
                                       "{\"policy\":\"cpu\",\"key\":\"last\","
                                       "\"value\":{\"n\":1,\"seen\":[1,2]}}")),
                   0);
  json_t *v = state_get(fx, "cpu", "last");
  assert_int_equal(jint(v, "n"), 1);
  assert_int_equal(json_array_size(json_object_get(v, "seen")), 2);
  OK(fx, "state_set", "{\"policy\":\"cpu\",\"key\":\"last\",\"value\":\"text\"}");
  assert_string_equal(json_string_value(state_get(fx, "cpu", "last")), "text");
  OK(fx, "state_set", "{\"policy\":\"cpu\",\"key\":\"count\",\"value\":3}");
  assert_int_equal(json_integer_value(state_get(fx, "cpu", "count")), 3);
  assert_null(state_get(fx, "disk", "last")); /* per policy */

  /* no value deletes (a JSON null too) */
  OK(fx, "state_set", "{\"policy\":\"cpu\",\"key\":\"last\"}");
  assert_null(state_get(fx, "cpu", "last"));
  OK(fx, "state_set", "{\"policy\":\"cpu\",\"key\":\"count\",\"value\":null}");
  assert_null(state_get(fx, "cpu", "count"));
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM policy_state"), 0);

  /* expiry */
  OK(fx, "state_set", "{\"policy\":\"cpu\",\"key\":\"long\",\"value\":true,\"ttl_ms\":600000}");
  OK(fx, "state_set", "{\"policy\":\"cpu\",\"key\":\"short\",\"value\":true,\"ttl_ms\":1}");
  usleep(20 * 1000); /* reads do not sweep: the expired entry is still there, unseen */
  assert_null(state_get(fx, "cpu", "short"));
  assert_true(json_is_true(state_get(fx, "cpu", "long")));
  /* the next write sweeps what expired */
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM policy_state WHERE key = 'short'"), 1);
  OK(fx, "state_set", "{\"policy\":\"other\",\"key\":\"k\",\"value\":1}");
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM policy_state WHERE key = 'short'"), 0);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM policy_state"), 2);

  char *key = big(257, 'k');
  REFUSED(fx, -EINVAL, "state_set: 'key' is longer than 256 bytes", "state_set",
          "{\"policy\":\"cpu\",\"key\":\"%s\",\"value\":1}", key);
  REFUSED(fx, -EINVAL, "state_get: 'key' is longer than 256 bytes", "state_get",
          "{\"policy\":\"cpu\",\"key\":\"%s\"}", key);
  free(key);
  char *value = big(65536, 'v');
  REFUSED(fx, -EINVAL, "state_set: 'value' is larger than 65536 bytes as JSON", "state_set",
          "{\"policy\":\"cpu\",\"key\":\"k\",\"value\":\"%s\"}", value);
  free(value);
  REFUSED(fx, -EINVAL, "state_set: 'ttl_ms' needs a 'value'", "state_set",
          "{\"policy\":\"cpu\",\"key\":\"k\",\"ttl_ms\":10}");
  REFUSED(fx, -EINVAL, "state_set: 'ttl_ms' must be at least 1", "state_set",
          "{\"policy\":\"cpu\",\"key\":\"k\",\"value\":1,\"ttl_ms\":0}");
  REFUSED(fx, -EINVAL, "state_get: 'policy' is required", "state_get", "{\"key\":\"k\"}");
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM policy_state"), 2);
}

/* ---- the knowledge base ---- */

static void test_kb_learn_upsert_keeps_the_index(void **state)
{
  fx_t *fx = *state;
  int64_t a = open_incident(fx, "HighCPU", "web-1", "ga");
  int64_t b = open_incident(fx, "DiskFull", "db-1", "gb");
  OK(fx, "kb_learn",
     "{\"incident\":%lld,\"policy\":\"cpu\",\"alertname\":\"HighCPU\",\"class\":\"saturation\","
     "\"confidence\":0.75,\"labels\":{\"service\":\"checkout\",\"env\":\"prod\"},"
     "\"text\":\"HighCPU cpu saturation walrus\",\"fix\":\"scale-out\"}",
     (long long)a);
  learn(fx, b, "DiskFull disk usage", NULL);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM kb_incidents"), 2);

  /* fields given replace, absent ones stay (text too) */
  OK(fx, "kb_learn", "{\"incident\":%lld,\"outcome\":\"success\"}", (long long)a);
  assert_int_equal(sql_int(fx,
                           "SELECT class = 'saturation' AND fix = 'scale-out' AND confidence = 0.75"
                           " AND outcome = 'success' AND text LIKE '%%walrus' FROM kb_incidents"
                           " WHERE incident_id = %lld",
                           (long long)a),
                   1);
  json_t *list = similar(fx, "{\"text\":\"walrus\"}");
  assert_int_equal(json_array_size(list), 1);
  json_t *hit = json_array_get(list, 0);
  assert_int_equal(jint(hit, "incident"), a);
  assert_string_equal(jstr(hit, "class"), "saturation");
  assert_string_equal(jstr(hit, "alertname"), "HighCPU");
  assert_string_equal(jstr(hit, "fix"), "scale-out");
  assert_string_equal(jstr(hit, "outcome"), "success");
  assert_string_equal(jstr(hit, "title"), "something is wrong");
  assert_null(json_object_get(hit, "ttr_ms")); /* not resolved: left out, not null */

  /* new text: the index forgets the old words and knows the new ones */
  OK(fx, "kb_learn", "{\"incident\":%lld,\"text\":\"HighCPU cpu narwhal\"}", (long long)a);
  assert_int_equal(json_array_size(similar(fx, "{\"text\":\"walrus\"}")), 0);
  assert_int_equal(jint(json_array_get(similar(fx, "{\"text\":\"narwhal\"}"), 0), "incident"), a);
  sql_exec(fx, "INSERT INTO kb_text (kb_text, rank) VALUES ('integrity-check', 1)");

  /* resolved: the time to resolve from the incident's own times */
  submit(fx, "HighCPU", "web-1", "ga", "resolved", 1.7e9, (double)time(NULL) + 1);
  OK(fx, "kb_learn", "{\"incident\":%lld,\"resolved\":true}", (long long)a);
  assert_int_equal(sql_int(fx,
                           "SELECT k.ttr_ms = i.resolved_at - i.opened_at AND k.resolved_at ="
                           " i.resolved_at FROM kb_incidents k JOIN incidents i"
                           " ON i.id = k.incident_id WHERE k.incident_id = %lld",
                           (long long)a),
                   1);
  hit = json_array_get(similar(fx, "{\"text\":\"narwhal\"}"), 0);
  assert_true(json_is_integer(json_object_get(hit, "ttr_ms")));

  int64_t c = open_incident(fx, "HighCPU", "web-2", "gc");
  REFUSED(fx, -EINVAL, "kb_learn: 'text' is required for an incident not yet learnt", "kb_learn",
          "{\"incident\":%lld,\"class\":\"cpu\"}", (long long)c);
  REFUSED(fx, -ENOENT, "kb_learn: no incident 999", "kb_learn",
          "{\"incident\":999,\"text\":\"x\"}");
  REFUSED(fx, -EINVAL, "kb_learn: 'incident' must be an integer", "kb_learn",
          "{\"incident\":\"abc\",\"text\":\"x\"}");
  REFUSED(fx, -EINVAL, "kb_learn: 'confidence' must be between 0 and 1", "kb_learn",
          "{\"incident\":%lld,\"text\":\"x\",\"confidence\":1.5}", (long long)c);
  REFUSED(fx, -EINVAL, "kb_learn: 'confidence' must be a number", "kb_learn",
          "{\"incident\":%lld,\"text\":\"x\",\"confidence\":\"high\"}", (long long)c);
  REFUSED(fx, -EINVAL, "kb_learn: 'outcome' must be one of \"success\", \"failure\"", "kb_learn",
          "{\"incident\":%lld,\"text\":\"x\",\"outcome\":\"maybe\"}", (long long)c);
  REFUSED(fx, -EINVAL, "kb_learn: 'labels' must be an object of strings ('n' is not a string)",
          "kb_learn", "{\"incident\":%lld,\"text\":\"x\",\"labels\":{\"n\":1}}", (long long)c);
  REFUSED(fx, -EINVAL, "kb_learn: 'labels' must be an object of strings", "kb_learn",
          "{\"incident\":%lld,\"text\":\"x\",\"labels\":\"env=prod\"}", (long long)c);
  REFUSED(fx, -EINVAL, "kb_learn: 'resolved' must be a boolean", "kb_learn",
          "{\"incident\":%lld,\"text\":\"x\",\"resolved\":\"yes\"}", (long long)c);
  char *text = big(65537, 't');
  REFUSED(fx, -EINVAL, "kb_learn: 'text' is longer than 65536 bytes", "kb_learn",
          "{\"incident\":%lld,\"text\":\"%s\"}", (long long)c, text);
  free(text);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM kb_incidents"), 2);
  /* an empty array is Lua's empty table: no labels */
  OK(fx, "kb_learn", "{\"incident\":%lld,\"text\":\"x\",\"labels\":[]}", (long long)c);
  assert_int_equal(
      sql_int(fx, "SELECT labels = '{}' FROM kb_incidents WHERE incident_id = %lld", (long long)c),
      1);
}

static void test_similar_ranks_the_closer_incident_first(void **state)
{
  fx_t *fx = *state;
  const char *const texts[] = {
    "HighCPU cpu saturation web payment checkout latency",
    "DiskFull disk usage database volume",
    "HighCPU cpu batch worker nightly",
    "MemoryPressure memory oom kill web",
    "NetworkErrors packet loss switch",
  };
  int64_t ids[5];
  for (int i = 0; i < 5; i++) {
    char group[8], instance[8];
    snprintf(group, sizeof group, "g%d", i);
    snprintf(instance, sizeof instance, "i%d", i);
    ids[i] = open_incident(fx, "Alert", instance, group);
    learn(fx, ids[i], texts[i], NULL);
  }
  json_t *list = similar(fx, "{\"text\":\"HighCPU on the payment checkout web tier\"}");
  assert_true(json_array_size(list) >= 2);
  json_t *first = json_array_get(list, 0);
  assert_int_equal(jint(first, "incident"), ids[0]);
  assert_true(jnum(first, "bm25") > 0);
  assert_true(jnum(first, "score") > 0 && jnum(first, "score") < 1);
  assert_true(jnum(first, "label_overlap") == 0);
  for (size_t i = 1; i < json_array_size(list); i++) {
    double prev = jnum(json_array_get(list, i - 1), "score");
    assert_true(jnum(json_array_get(list, i), "score") <= prev);
    assert_true(jnum(first, "bm25") > jnum(json_array_get(list, i), "bm25"));
  }
  assert_false(lists_incident(list, ids[1])); /* no word in common */
  assert_false(lists_incident(list, ids[4]));

  char args[128];
  snprintf(args, sizeof args,
           "{\"text\":\"HighCPU on the payment checkout web tier\",\"exclude\":%lld}",
           (long long)ids[0]);
  list = similar(fx, args);
  assert_false(lists_incident(list, ids[0]));
  assert_true(json_array_size(list) >= 1);
  assert_int_equal(json_array_size(similar(fx, "{\"text\":\"cpu web\",\"limit\":1}")), 1);
  REFUSED(fx, -EINVAL, "kb_similar: 'limit' must be between 1 and 100", "kb_similar",
          "{\"text\":\"cpu\",\"limit\":0}");
  REFUSED(fx, -EINVAL, "kb_similar: 'text' is required", "kb_similar", "{\"limit\":3}");
  REFUSED(fx, -EINVAL, "kb_similar: 'exclude' must be an integer", "kb_similar",
          "{\"text\":\"cpu\",\"exclude\":true}");
}

static void test_similar_hostile_query_text(void **state)
{
  fx_t *fx = *state;
  int64_t a = open_incident(fx, "HighCPU", "web-1", "ga");
  learn(fx, a, "HighCPU \\\"quoted\\\" NEAR text: kube-system node_cpu_seconds_total", NULL);
  /* FTS5 syntax in the query is only words to it: never an error */
  const char *const finding[] = {
    "\\\"HighCPU",                            /* an unterminated string */
    "HighCPU\\\"",                            /* a quote glued to a word */
    "NEAR(HighCPU quoted, 2)",                /* NEAR groups */
    "HighCPU* OR cpu*",                       /* prefix queries and operators */
    "text: HighCPU",                          /* a column filter */
    "text:HighCPU",                           /* glued */
    "nosuchcolumn:HighCPU",                   /* a column that does not exist */
    "{text}: HighCPU",                        /* a column set */
    "((( HighCPU",                            /* unbalanced parentheses */
    "-HighCPU ^HighCPU +HighCPU",             /* not, initial token, plus */
    "AND OR NOT HighCPU",                     /* bare operators */
    "'; DROP TABLE kb_incidents; -- HighCPU", /* SQL, as words */
    "system",                                 /* '-' separates: kube-system has "system" */
    "NODE_CPU_SECONDS_TOTAL",                 /* '_' joins, case folds */
  };
  for (size_t i = 0; i < sizeof finding / sizeof finding[0]; i++) {
    char args[256];
    snprintf(args, sizeof args, "{\"text\":\"%s\"}", finding[i]);
    json_t *list = similar(fx, args);
    if (!lists_incident(list, a)) {
      fail_msg("%s: incident not found", finding[i]);
    }
  }
  const char *const nothing[] = { "\\\"", "\\\"\\\"", "*",       "()",  ":", "^",
                                  "-",    "",         " \\t\\n", "AND", "€" };
  for (size_t i = 0; i < sizeof nothing / sizeof nothing[0]; i++) {
    char args[64];
    snprintf(args, sizeof args, "{\"text\":\"%s\"}", nothing[i]);
    if (json_array_size(similar(fx, args)) != 0) {
      fail_msg("%s: found something", nothing[i]);
    }
  }
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM kb_incidents"), 1);

  /* bounded: words past the 64th distinct one are not asked for, nor words over 64 bytes */
  size_t cap = 100 * 6 + 32;
  char *many = malloc(cap), *o = many;
  assert_non_null(many);
  o += sprintf(o, "{\"text\":\"");
  for (int i = 0; i < 100; i++) {
    o += sprintf(o, "w%d ", i);
  }
  sprintf(o, "HighCPU\"}");
  assert_int_equal(json_array_size(similar(fx, many)), 0);
  /* the same words repeated count once */
  o = many + sprintf(many, "{\"text\":\"");
  for (int i = 0; i < 100; i++) {
    o += sprintf(o, "w%d ", i % 10);
  }
  sprintf(o, "HighCPU\"}");
  assert_int_equal(json_array_size(similar(fx, many)), 1);
  free(many);
  char *word = big(65, 'x');
  char args[160];
  snprintf(args, sizeof args, "{\"text\":\"%s HighCPU\"}", word);
  assert_int_equal(json_array_size(similar(fx, args)), 1);
  free(word);
}

static void test_similar_label_overlap(void **state)
{
  fx_t *fx = *state;
  int64_t a = open_incident(fx, "HighCPU", "web-1", "ga");
  int64_t b = open_incident(fx, "HighCPU", "web-2", "gb");
  learn(fx, a, "HighCPU cpu high", "{\"service\":\"checkout\",\"env\":\"prod\"}");
  learn(fx, b, "HighCPU cpu high", "{\"service\":\"search\",\"env\":\"prod\"}");
  json_t *list = similar(
      fx, "{\"text\":\"HighCPU cpu\",\"labels\":{\"service\":\"search\",\"env\":\"prod\"}}");
  assert_int_equal(json_array_size(list), 2);
  json_t *first = json_array_get(list, 0), *second = json_array_get(list, 1);
  assert_int_equal(jint(first, "incident"), b);
  assert_true(fabs(jnum(first, "label_overlap") - 1.0) < 1e-9);
  assert_true(fabs(jnum(second, "label_overlap") - 1.0 / 3.0) < 1e-9); /* env=prod of 3 pairs */
  assert_true(jnum(first, "score") > jnum(second, "score"));
  assert_true(fabs(jnum(first, "bm25") - jnum(second, "bm25")) < 1e-9); /* same text */

  /* the label words join the query: labels alone find an incident whose text holds them
     (kb.text_of puts an alert's label pairs in its text) */
  int64_t c = open_incident(fx, "HighCPU", "web-3", "gc");
  learn(fx, c, "HighCPU team=payments", "{\"team\":\"payments\",\"env\":\"prod\"}");
  list = similar(fx, "{\"text\":\"\",\"labels\":{\"team\":\"payments\"}}");
  assert_int_equal(json_array_size(list), 1);
  first = json_array_get(list, 0);
  assert_int_equal(jint(first, "incident"), c);
  assert_true(fabs(jnum(first, "label_overlap") - 0.5) < 1e-9);
}

/* ---- known fixes ---- */

static int64_t fix_add(fx_t *fx, const char *key, const char *name, const char *plan)
{
  json_t *r = OK(fx, "fix_add", "{\"key\":\"%s\",\"name\":\"%s\",\"plan\":%s,\"who\":\"alice\"}",
                 key, name, plan);
  return jint(r, "id");
}

static json_t *fix_outcome(fx_t *fx, int64_t id, bool ok)
{
  return OK(fx, "fix_outcome", "{\"id\":%lld,\"ok\":%s}", (long long)id, ok ? "true" : "false");
}

static void test_fixes_by_smoothed_success_rate(void **state)
{
  fx_t *fx = *state;
  int64_t restart = fix_add(fx, "HighCPU", "restart", "[{\"action\":\"restart\"}]");
  int64_t scale = fix_add(fx, "HighCPU", "scale", "[{\"action\":\"scale\",\"by\":2}]");
  int64_t rollback = fix_add(fx, "HighCPU", "rollback", "{\"action\":\"rollback\"}");
  int64_t bad = fix_add(fx, "HighCPU", "bad", "\"do nothing\"");
  fix_add(fx, "DiskFull", "cleanup", "[]");
  assert_true(restart != scale && scale != rollback && rollback != bad);

  fix_outcome(fx, restart, true); /* 1 of 1: (1+1)/(1+2) = 2/3, not 100% */
  json_t *r = NULL;
  for (int i = 0; i < 9; i++) {
    r = fix_outcome(fx, scale, i != 4); /* 8 of 9: 9/11 */
  }
  assert_int_equal(jint(r, "uses"), 9);
  assert_int_equal(jint(r, "successes"), 8);
  assert_int_equal(jint(r, "failures"), 1);
  fix_outcome(fx, bad, false);
  fix_outcome(fx, bad, false); /* 0 of 2: 1/4; rollback, never tried: 1/2 */

  json_t *list = json_object_get(OK(fx, "fixes", "{\"key\":\"HighCPU\"}"), "fixes");
  assert_int_equal(json_array_size(list), 4);
  const char *const order[] = { "scale", "restart", "rollback", "bad" };
  const double rates[] = { 9.0 / 11.0, 2.0 / 3.0, 0.5, 0.25 };
  for (size_t i = 0; i < 4; i++) {
    json_t *f = json_array_get(list, i);
    assert_string_equal(jstr(f, "name"), order[i]);
    assert_string_equal(jstr(f, "key"), "HighCPU");
    assert_true(fabs(jnum(f, "success_rate") - rates[i]) < 1e-9);
  }
  json_t *f = json_array_get(list, 1);
  assert_int_equal(jint(f, "id"), restart);
  assert_int_equal(jint(f, "uses"), 1);
  assert_true(json_is_integer(json_object_get(f, "last_used_at")));
  assert_string_equal(jstr(json_array_get(json_object_get(f, "plan"), 0), "action"), "restart");
  assert_null(json_object_get(json_array_get(list, 2), "last_used_at")); /* never used */
  assert_string_equal(json_string_value(json_object_get(json_array_get(list, 3), "plan")),
                      "do nothing");

  /* the same key and name: the plan is replaced, the counts stay */
  assert_int_equal(
      fix_add(fx, "HighCPU", "restart", "[{\"action\":\"restart\",\"grace\":\"30s\"}]"), restart);
  list = json_object_get(OK(fx, "fixes", "{\"key\":\"HighCPU\",\"limit\":2}"), "fixes");
  assert_int_equal(json_array_size(list), 2);
  f = json_array_get(list, 1);
  assert_int_equal(jint(f, "uses"), 1);
  assert_string_equal(jstr(json_array_get(json_object_get(f, "plan"), 0), "grace"), "30s");
  assert_int_equal(json_array_size(json_object_get(OK(fx, "fixes", "{\"key\":\"Nope\"}"), "fixes")),
                   0);

  REFUSED(fx, -ENOENT, "fix_outcome: no fix 999", "fix_outcome", "{\"id\":999,\"ok\":true}");
  REFUSED(fx, -EINVAL, "fix_outcome: 'ok' must be a boolean", "fix_outcome",
          "{\"id\":%lld,\"ok\":1}", (long long)restart);
  REFUSED(fx, -EINVAL, "fix_add: 'plan' is required", "fix_add",
          "{\"key\":\"k\",\"name\":\"n\",\"who\":\"alice\"}");
  REFUSED(fx, -EINVAL, "fixes: 'key' is required", "fixes", "{}");
  assert_int_equal(json_array_size(json_object_get(OK(fx, "fixes", "{\"key\":\"\"}"), "fixes")), 0);
  assert_int_equal(sql_int(fx, "SELECT uses FROM kb_fixes WHERE id = %lld", (long long)restart), 1);
}

/* ---- escalation timers ---- */

static void test_escalate_is_idempotent(void **state)
{
  fx_t *fx = *state;
  int64_t inc = open_incident(fx, "HighCPU", "web-1", "g");
  bool created = false;
  int64_t l1 = escalate(fx, inc, 1, T0 + 60000, &created);
  assert_true(created);
  assert_int_equal(escalate(fx, inc, 1, T0 + 90000, &created), l1);
  assert_false(created);
  int64_t l2 = escalate(fx, inc, 2, T0 + 120000, &created);
  assert_true(created);
  assert_true(l2 != l1);
  json_t *list = escalations(fx, inc);
  assert_int_equal(json_array_size(list), 2);
  json_t *e = level_of(list, 1);
  assert_int_equal(jint(e, "due_at"), T0 + 60000); /* a later schedule does not move it */
  assert_string_equal(jstr(e, "state"), "pending");
  assert_string_equal(jstr(e, "name"), "oncall-1");
  assert_string_equal(jstr(e, "policy"), "page");
  assert_int_equal(jint(e, "incident"), inc);
  assert_null(json_object_get(e, "fired_at"));
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM escalations"), 2);

  /* an earlier one brings a pending timer forward ("on doubt, escalate now"), once */
  json_t *r =
      OK(fx, "escalate", "{\"incident\":%lld,\"policy\":\"page\",\"level\":1,\"due_at\":%lld}",
         (long long)inc, T0 + 1000);
  assert_int_equal(jint(r, "id"), l1);
  assert_false(json_is_true(json_object_get(r, "created")));
  assert_string_equal(jstr(r, "state"), "pending");
  assert_int_equal(jint(r, "due_at"), T0 + 1000);
  assert_int_equal(jint(level_of(escalations(fx, inc), 1), "due_at"), T0 + 1000);
  assert_string_equal(jstr(level_of(escalations(fx, inc), 1), "name"), "oncall-1");
  assert_int_equal(json_array_size(due(fx, T0 + 1000)), 1);
  /* a timer handed out as due is not moved */
  assert_int_equal(
      jint(OK(fx, "escalate", "{\"incident\":%lld,\"policy\":\"page\",\"level\":1,\"due_at\":%lld}",
              (long long)inc, T0),
           "due_at"),
      T0 + 1000);
  assert_string_equal(jstr(level_of(escalations(fx, inc), 1), "state"), "due");
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM escalations"), 2);

  REFUSED(fx, -ENOENT, "escalate: no incident 999", "escalate",
          "{\"incident\":999,\"policy\":\"p\",\"level\":1,\"due_at\":1}");
  REFUSED(fx, -EINVAL, "escalate: 'level' must be between 0 and 1000", "escalate",
          "{\"incident\":%lld,\"policy\":\"p\",\"level\":-1,\"due_at\":1}", (long long)inc);
  REFUSED(fx, -EINVAL, "escalate: 'due_at' is required", "escalate",
          "{\"incident\":%lld,\"policy\":\"p\",\"level\":1}", (long long)inc);
  REFUSED(fx, -EINVAL, "escalate: 'policy' must not be empty", "escalate",
          "{\"incident\":%lld,\"policy\":\"\",\"level\":1,\"due_at\":1}", (long long)inc);
  REFUSED(fx, -ENOENT, "escalations: no incident 999", "escalations", "{\"incident\":999}");
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM escalations"), 2);
}

static void test_escalations_due_once_however_late(void **state)
{
  fx_t *fx = *state;
  int64_t inc = open_incident(fx, "HighCPU", "web-1", "g");
  int64_t l1 = escalate(fx, inc, 1, T0, NULL);
  int64_t l2 = escalate(fx, inc, 2, T0 + 5000, NULL);
  int64_t l3 = escalate(fx, inc, 3, T0 + 3600000, NULL);
  assert_int_equal(json_array_size(due(fx, T0 - 1)), 0);

  /* caught up 30 s late: both overdue timers, once, in order, with how late they are */
  json_t *list = due(fx, T0 + 30000);
  assert_int_equal(json_array_size(list), 2);
  json_t *e = json_array_get(list, 0);
  assert_int_equal(jint(e, "id"), l1);
  assert_int_equal(jint(e, "incident"), inc);
  assert_int_equal(jint(e, "level"), 1);
  assert_string_equal(jstr(e, "policy"), "page");
  assert_string_equal(jstr(e, "name"), "oncall-1");
  assert_int_equal(jint(e, "due_at"), T0);
  assert_int_equal(jint(e, "late_ms"), 30000);
  assert_int_equal(jint(json_array_get(list, 1), "id"), l2);
  assert_int_equal(jint(json_array_get(list, 1), "late_ms"), 25000);
  json_t *all = escalations(fx, inc);
  assert_string_equal(jstr(level_of(all, 1), "state"), "due");
  assert_string_equal(jstr(level_of(all, 2), "state"), "due");
  assert_string_equal(jstr(level_of(all, 3), "state"), "pending");
  /* being fired: not handed out again on the next poll */
  assert_int_equal(json_array_size(due(fx, T0 + 31000)), 0);

  assert_int_equal(json_object_size(OK(fx, "escalation_done",
                                       "{\"id\":%lld,\"state\":\"fired\",\"action\":42,"
                                       "\"note\":\"paged alice\"}",
                                       (long long)l1)),
                   0);
  e = level_of(escalations(fx, inc), 1);
  assert_string_equal(jstr(e, "state"), "fired");
  assert_int_equal(jint(e, "action"), 42);
  assert_string_equal(jstr(e, "note"), "paged alice");
  assert_true(json_is_integer(json_object_get(e, "fired_at")));
  char want[96];
  snprintf(want, sizeof want, "escalation_done: escalation %lld is fired", (long long)l1);
  REFUSED(fx, -EINVAL, want, "escalation_done", "{\"id\":%lld,\"state\":\"fired\"}", (long long)l1);
  snprintf(want, sizeof want, "escalation_done: escalation %lld is pending (not due)",
           (long long)l3);
  REFUSED(fx, -EINVAL, want, "escalation_done", "{\"id\":%lld,\"state\":\"fired\"}", (long long)l3);
  REFUSED(fx, -EINVAL, "escalation_done: 'state' must be one of \"fired\", \"failed\"",
          "escalation_done", "{\"id\":%lld,\"state\":\"cancelled\"}", (long long)l2);
  REFUSED(fx, -ENOENT, "escalation_done: no escalation 999", "escalation_done",
          "{\"id\":999,\"state\":\"fired\"}");

  /* level 2 was left due (the run firing it stopped): handed out again after its lease */
  assert_int_equal(json_array_size(due(fx, T0 + 30000 + 59999)), 0);
  list = due(fx, T0 + 30000 + 60000);
  assert_int_equal(json_array_size(list), 1);
  assert_int_equal(jint(json_array_get(list, 0), "id"), l2);
  assert_int_equal(jint(json_array_get(list, 0), "late_ms"), 30000 + 60000 - 5000);
  OK(fx, "escalation_done", "{\"id\":%lld,\"state\":\"failed\",\"note\":\"EHTTP: 503\"}",
     (long long)l2);
  assert_string_equal(jstr(level_of(escalations(fx, inc), 2), "state"), "failed");
  assert_int_equal(json_array_size(due(fx, T0 + 10000000)), 1); /* level 3 at last */

  /* limit */
  int64_t other = open_incident(fx, "HighCPU", "web-2", "g2");
  escalate(fx, other, 1, T0, NULL);
  escalate(fx, other, 2, T0, NULL);
  list = json_object_get(OK(fx, "escalations_due", "{\"now\":%lld,\"limit\":1}", T0), "due");
  assert_int_equal(json_array_size(list), 1);
  assert_int_equal(json_array_size(due(fx, T0)), 1);
  REFUSED(fx, -EINVAL, "escalations_due: 'now' is required", "escalations_due", "{}");
  REFUSED(fx, -EINVAL, "escalations_due: 'limit' must be between 1 and 1000", "escalations_due",
          "{\"now\":1,\"limit\":1001}");
}

/* Checks that the incident's timers of levels 1 and 2 are cancelled with `why`, and the
 * timeline entry that says so. */
static void assert_cancelled(fx_t *fx, int64_t inc, const char *why)
{
  json_t *list = escalations(fx, inc);
  for (int level = 1; level <= 2; level++) {
    json_t *e = level_of(list, level);
    assert_string_equal(jstr(e, "state"), "cancelled");
    assert_string_equal(jstr(e, "note"), why);
  }
  json_t *e =
      find_event(json_object_get(incident_doc(fx, inc), "timeline"), "escalation cancelled");
  assert_non_null(e);
  assert_string_equal(jstr(e, "who"), "vigil");
  char want[128];
  snprintf(want, sizeof want, "%s: 2 pending escalations cancelled", why);
  assert_string_equal(jstr(e, "comment"), want);
  assert_int_equal(sql_int(fx,
                           "SELECT count(*) FROM timeline WHERE incident_id = %lld"
                           " AND event = 'escalation cancelled'",
                           (long long)inc),
                   1);
}

static void test_operator_transitions_cancel_timers(void **state)
{
  fx_t *fx = *state;
  int64_t inc[4];
  for (int i = 0; i < 4; i++) {
    char group[8], instance[8];
    snprintf(group, sizeof group, "g%d", i);
    snprintf(instance, sizeof instance, "i%d", i);
    inc[i] = open_incident(fx, "HighCPU", instance, group);
    if (i < 3) {
      escalate(fx, inc[i], 1, T0 + 60000, NULL);
      escalate(fx, inc[i], 2, T0 + 120000, NULL);
    }
  }
  /* a timer already fired stays fired */
  int64_t fired = escalate(fx, inc[0], 0, T0, NULL);
  assert_int_equal(json_array_size(due(fx, T0)), 1);
  OK(fx, "escalation_done", "{\"id\":%lld,\"state\":\"fired\"}", (long long)fired);

  assert_string_equal(jstr(transition(fx, inc[0], "ack"), "status"), "investigating");
  assert_cancelled(fx, inc[0], "incident acknowledged");
  assert_string_equal(jstr(level_of(escalations(fx, inc[0]), 0), "state"), "fired");
  assert_string_equal(jstr(transition(fx, inc[1], "resolve"), "status"), "resolved");
  assert_cancelled(fx, inc[1], "incident resolved");
  assert_string_equal(jstr(transition(fx, inc[2], "close"), "status"), "closed");
  assert_cancelled(fx, inc[2], "incident closed");
  /* nothing to cancel: no timeline entry */
  transition(fx, inc[3], "ack");
  assert_int_equal(sql_int(fx,
                           "SELECT count(*) FROM timeline WHERE incident_id = %lld"
                           " AND event = 'escalation cancelled'",
                           (long long)inc[3]),
                   0);
  /* none fires, however late */
  assert_int_equal(json_array_size(due(fx, T0 + 86400000)), 0);
  /* scheduling on an incident no longer open records the timer as cancelled */
  json_t *r =
      OK(fx, "escalate", "{\"incident\":%lld,\"policy\":\"page\",\"level\":3,\"due_at\":%lld}",
         (long long)inc[0], T0);
  assert_true(json_is_true(json_object_get(r, "created")));
  assert_string_equal(jstr(r, "state"), "cancelled");
  assert_string_equal(jstr(level_of(escalations(fx, inc[0]), 3), "note"),
                      "incident is investigating");
  assert_int_equal(json_array_size(due(fx, T0 + 86400000)), 0);
}

static void test_automatic_resolution_cancels_timers(void **state)
{
  fx_t *fx = *state;
  int64_t inc = open_incident(fx, "HighCPU", "web-1", "g");
  int64_t l1 = escalate(fx, inc, 1, T0 + 60000, NULL);
  vg_store_result_t r = submit(fx, "HighCPU", "web-1", "g", "resolved", 1.7e9, 1.7e9 + 60);
  assert_true(r.incident_resolved);
  json_t *e = level_of(escalations(fx, inc), 1);
  assert_string_equal(jstr(e, "state"), "cancelled");
  assert_string_equal(jstr(e, "note"), "all alerts resolved");
  json_t *doc = incident_doc(fx, inc);
  assert_string_equal(jstr(doc, "status"), "resolved");
  json_t *t = find_event(json_object_get(doc, "timeline"), "escalation cancelled");
  assert_non_null(t);
  assert_string_equal(jstr(t, "comment"), "all alerts resolved: 1 pending escalation cancelled");
  assert_int_equal(json_array_size(due(fx, T0 + 86400000)), 0);

  /* it fires again within the grace period: the incident reopens and may escalate again */
  r = submit(fx, "HighCPU", "web-1", "g", "firing", 1.7e9 + 120, 0);
  assert_true(r.incident_reopened);
  assert_int_equal(r.incident_id, inc);
  bool created = false;
  assert_int_equal(escalate(fx, inc, 1, T0 + 1000, &created), l1);
  assert_true(created);
  e = level_of(escalations(fx, inc), 1);
  assert_string_equal(jstr(e, "state"), "pending");
  assert_int_equal(jint(e, "due_at"), T0 + 1000);
  assert_null(json_object_get(e, "note"));
  assert_int_equal(json_array_size(due(fx, T0 + 1000)), 1);
}

static void test_due_cancels_timers_of_incidents_not_open(void **state)
{
  fx_t *fx = *state;
  int64_t inc = open_incident(fx, "HighCPU", "web-1", "g");
  int64_t l1 = escalate(fx, inc, 1, T0, NULL);
  transition(fx, inc, "ack");
  /* a timer left pending on an acknowledged incident (written before schema 5 did this) */
  char sql[96];
  snprintf(sql, sizeof sql, "UPDATE escalations SET state = 'pending' WHERE id = %lld",
           (long long)l1);
  sql_exec(fx, sql);
  sql_exec(fx, "DELETE FROM timeline WHERE event = 'escalation cancelled'");
  assert_int_equal(json_array_size(due(fx, T0 + 1)), 0);
  json_t *e = level_of(escalations(fx, inc), 1);
  assert_string_equal(jstr(e, "state"), "cancelled");
  assert_string_equal(jstr(e, "note"), "incident is investigating");
  json_t *t =
      find_event(json_object_get(incident_doc(fx, inc), "timeline"), "escalation cancelled");
  assert_non_null(t);
  assert_string_equal(jstr(t, "comment"),
                      "incident is investigating: 1 pending escalation cancelled");
}

static void test_reopened_store_keeps_timers(void **state)
{
  fx_t *fx = *state;
  int64_t inc = open_incident(fx, "HighCPU", "web-1", "g");
  int64_t pending = escalate(fx, inc, 1, T0 + 100000, NULL);
  int64_t handed = escalate(fx, inc, 2, T0, NULL);
  assert_int_equal(jint(json_array_get(due(fx, T0), 0), "id"), handed);
  close_store(fx); /* down for an hour, level 2 was being fired */
  open_store(fx);
  json_t *list = escalations(fx, inc);
  assert_int_equal(json_array_size(list), 2);
  assert_string_equal(jstr(level_of(list, 1), "state"), "pending");
  assert_string_equal(jstr(level_of(list, 2), "state"), "due");
  long long now = T0 + 100000 + 3600000;
  list = due(fx, now);
  assert_int_equal(json_array_size(list), 2);
  assert_int_equal(jint(json_array_get(list, 0), "id"), handed);
  assert_int_equal(jint(json_array_get(list, 0), "late_ms"), now - T0);
  assert_int_equal(jint(json_array_get(list, 1), "id"), pending);
  assert_int_equal(jint(json_array_get(list, 1), "late_ms"), 3600000);
  assert_int_equal(json_array_size(due(fx, now)), 0); /* once */
}

/* ---- the report ---- */

static void on_ledger(void *ud, const vg_ledger_result_t *r)
{
  assert_int_equal(r->status, 0);
  (*(int *)ud)++;
}

static void test_report(void **state)
{
  fx_t *fx = *state;
  int64_t a = open_incident(fx, "HighCPU", "web-1", "ga");
  int64_t b = open_incident(fx, "HighCPU", "web-2", "gb");
  int64_t c = open_incident(fx, "DiskFull", "db-1", "gc");
  learn(fx, a, "HighCPU cpu web checkout saturation", "{\"service\":\"checkout\"}");
  learn(fx, b, "HighCPU cpu web checkout", "{\"service\":\"checkout\"}");
  learn(fx, c, "DiskFull disk database", NULL);
  OK(fx, "note",
     "{\"incident\":%lld,\"who\":\"policy:cpu\",\"event\":\"plan\",\"detail\":{\"ms\":3}}",
     (long long)a);
  escalate(fx, a, 1, T0, NULL);
  int calls = 0;
  vg_ledger_action_t act = { .key = "k1",
                             .policy = "cpu",
                             .incident_id = a,
                             .type = "scale",
                             .target = "deployment/web",
                             .mode = "dry-run",
                             .why = "cpu saturated",
                             .command = "[\"kubectl\",\"scale\"]" };
  assert_int_equal(vg_ledger_record(fx->s, &act, "dry-run", NULL, on_ledger, &calls), 0);
  assert_int_equal(vg_ledger_heal_begin(fx->s, "cpu", "restart-web", NULL, a, on_ledger, &calls),
                   0);
  run_until(fx, &calls, 2);

  json_t *r = OK(fx, "report", "{\"incident\":%lld}", (long long)a);
  json_t *inc = json_object_get(r, "incident");
  assert_int_equal(jint(inc, "id"), a);
  assert_string_equal(jstr(inc, "status"), "open");
  assert_string_equal(jstr(inc, "groupKey"), "ga");
  /* served as the API serves everything: camelCase keys, RFC 3339 times */
  assert_true(jstr(inc, "openedAt") != NULL && strlen(jstr(inc, "openedAt")) == 24);
  assert_int_equal(jstr(inc, "openedAt")[23], 'Z');
  assert_null(json_object_get(inc, "resolvedAt"));
  assert_null(json_object_get(inc, "opened_at"));
  json_t *alerts = json_object_get(r, "alerts");
  assert_int_equal(json_array_size(alerts), 1);
  assert_string_equal(jstr(json_object_get(json_array_get(alerts, 0), "labels"), "instance"),
                      "web-1");
  assert_null(json_object_get(json_array_get(alerts, 0), "endsAt"));
  json_t *plan = find_event(json_object_get(r, "timeline"), "plan");
  assert_non_null(plan);
  assert_int_equal(jint(json_object_get(plan, "detail"), "ms"), 3);
  assert_string_equal(jstr(find_event(json_object_get(r, "timeline"), "opened"), "to"), "open");
  json_t *actions = json_object_get(r, "actions");
  assert_int_equal(json_array_size(actions), 1);
  assert_string_equal(jstr(json_array_get(actions, 0), "type"), "scale");
  assert_string_equal(jstr(json_array_get(actions, 0), "state"), "dry-run");
  assert_string_equal(jstr(json_array_get(actions, 0), "why"), "cpu saturated");
  json_t *healings = json_object_get(r, "healings");
  assert_int_equal(json_array_size(healings), 1);
  assert_string_equal(jstr(json_array_get(healings, 0), "name"), "restart-web");
  assert_string_equal(jstr(json_array_get(healings, 0), "status"), "running");
  assert_int_equal(json_array_size(json_object_get(r, "escalations")), 1);
  json_t *kb = json_object_get(r, "kb");
  assert_string_equal(jstr(kb, "class"), "cpu");
  assert_string_equal(jstr(json_object_get(kb, "labels"), "service"), "checkout");
  assert_null(json_object_get(kb, "text"));
  json_t *like = json_object_get(r, "similar");
  assert_true(json_array_size(like) >= 1);
  assert_int_equal(jint(json_array_get(like, 0), "incident"), b);
  assert_false(lists_incident(like, a));
  assert_false(lists_incident(like, c));
  assert_true(jint(r, "durationMs") >= 0);

  /* an incident not learnt: similar ones from its alerts; no kb */
  int64_t d = open_incident(fx, "HighCPU", "web-3", "gd");
  submit(fx, "HighCPU", "web-3", "gd", "resolved", 1.7e9, (double)time(NULL) + 1);
  r = OK(fx, "report", "{\"incident\":%lld}", (long long)d);
  assert_null(json_object_get(r, "kb"));
  like = json_object_get(r, "similar");
  assert_true(lists_incident(like, a) && lists_incident(like, b));
  assert_false(lists_incident(like, c));
  inc = json_object_get(r, "incident");
  assert_string_equal(jstr(inc, "status"), "resolved");
  assert_true(jint(r, "durationMs") > 0);
  assert_non_null(jstr(inc, "resolvedAt"));
  assert_int_equal(json_array_size(json_object_get(r, "actions")), 0);

  REFUSED(fx, -ENOENT, "report: no incident 999", "report", "{\"incident\":999}");
  REFUSED(fx, -EINVAL, "report: 'incident' is required", "report", "{}");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_refused_before_start, setup, teardown),
    cmocka_unit_test_setup_teardown(test_note_and_timeline_detail, setup, teardown),
    cmocka_unit_test_setup_teardown(test_state, setup, teardown),
    cmocka_unit_test_setup_teardown(test_kb_learn_upsert_keeps_the_index, setup, teardown),
    cmocka_unit_test_setup_teardown(test_similar_ranks_the_closer_incident_first, setup, teardown),
    cmocka_unit_test_setup_teardown(test_similar_hostile_query_text, setup, teardown),
    cmocka_unit_test_setup_teardown(test_similar_label_overlap, setup, teardown),
    cmocka_unit_test_setup_teardown(test_fixes_by_smoothed_success_rate, setup, teardown),
    cmocka_unit_test_setup_teardown(test_escalate_is_idempotent, setup, teardown),
    cmocka_unit_test_setup_teardown(test_escalations_due_once_however_late, setup, teardown),
    cmocka_unit_test_setup_teardown(test_operator_transitions_cancel_timers, setup, teardown),
    cmocka_unit_test_setup_teardown(test_automatic_resolution_cancels_timers, setup, teardown),
    cmocka_unit_test_setup_teardown(test_due_cancels_timers_of_incidents_not_open, setup, teardown),
    cmocka_unit_test_setup_teardown(test_reopened_store_keeps_timers, setup, teardown),
    cmocka_unit_test_setup_teardown(test_report, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
