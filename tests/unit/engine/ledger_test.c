/* Tests for src/engine/ledger.c against a real SQLite store in a temporary directory and a real
 * uv loop: a claim is committed once per key (G3) and a second claim finds the first row; the
 * outcome is recorded; a restart turns rows left claimed into "unknown" and expires pending
 * approvals; decisions move only along the allowed transitions; the audit log refuses
 * updates; guard state and settings round-trip; the list and one-action JSON. */
#include "engine/ledger.h"

#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "test_support.h"

typedef struct {
  char dir[64];
  char path[96];
  uv_loop_t loop;
  vg_store_t *s;
  int closed;
} fx_t;

typedef struct {
  int calls;
  vg_ledger_result_t r;
  char state[24];
  char err[256];
  char output[256];
} got_t;

static void on_result(void *ud, const vg_ledger_result_t *r)
{
  got_t *g = ud;
  g->calls++;
  g->r = *r;
  snprintf(g->state, sizeof g->state, "%s", r->state);
  snprintf(g->err, sizeof g->err, "%s", r->err != NULL ? r->err : "");
  snprintf(g->output, sizeof g->output, "%s", r->output != NULL ? r->output : "");
  g->r.err = NULL;
  g->r.output = g->r.error = NULL;
}

static void run_until(fx_t *fx, const int *counter, int want)
{
  while (*counter < want) {
    uv_run(&fx->loop, UV_RUN_ONCE);
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
  char err[256];
  fx->s = vg_store_open(&fx->loop, &o, err, sizeof err);
  assert_non_null(fx->s);
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
  snprintf(fx->dir, sizeof fx->dir, "/tmp/vg-ledger-XXXXXX");
  assert_non_null(mkdtemp(fx->dir));
  snprintf(fx->path, sizeof fx->path, "%s/vigil.db", fx->dir);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
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
  free(fx);
  return 0;
}

static vg_ledger_action_t action(const char *key, const char *target)
{
  return (vg_ledger_action_t){ .key = key,
                               .policy = "crash-loop",
                               .policy_version = "abc",
                               .subject = "incident-7",
                               .incident_id = 7,
                               .type = "restart",
                               .target = target,
                               .scope = "prod",
                               .mode = "enforce",
                               .why = "crash looping",
                               .command =
                                   "[\"kubectl\",\"rollout\",\"restart\",\"deployment/web\"]",
                               .who = "policy:crash-loop" };
}

static got_t claim(fx_t *fx, const char *key, const char *state)
{
  got_t g = { 0 };
  vg_ledger_action_t a = action(key, "prod/deployment/web");
  vg_ledger_entry_t e = { .name = "bucket:type:restart", .value = 5, .at = 1000 };
  assert_int_equal(vg_ledger_claim(fx->s, &a, state, 0, &e, 1, on_result, &g), 0);
  run_until(fx, &g.calls, 1);
  return g;
}

static long long sql_int(fx_t *fx, const char *sql)
{
  sqlite3 *db;
  assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  long long v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static got_t finish(fx_t *fx, int64_t id, bool ok)
{
  got_t g = { 0 };
  vg_ledger_outcome_t o = { .ok = ok,
                            .attempts = 1,
                            .exit_code = ok ? 0 : 1,
                            .output = "deployment.apps/web restarted",
                            .error = ok ? NULL : "EEXIT: kubectl exited with 1",
                            .duration_ms = 12 };
  assert_int_equal(vg_ledger_finish(fx->s, id, &o, NULL, 0, on_result, &g), 0);
  run_until(fx, &g.calls, 1);
  return g;
}

static got_t decide(fx_t *fx, int64_t id, const char *to)
{
  got_t g = { 0 };
  assert_int_equal(vg_ledger_decide(fx->s, id, to, "alice", "looked at it", on_result, &g), 0);
  run_until(fx, &g.calls, 1);
  return g;
}

static void test_claim_once_per_key(void **state)
{
  fx_t *fx = *state;
  got_t first = claim(fx, "k1", "claimed");
  assert_int_equal(first.r.status, 0);
  assert_false(first.r.duplicate);
  assert_string_equal(first.state, "claimed");
  assert_true(first.r.id > 0);

  got_t second = claim(fx, "k1", "claimed");
  assert_int_equal(second.r.status, 0);
  assert_true(second.r.duplicate);
  assert_int_equal(second.r.id, first.r.id);
  assert_string_equal(second.state, "claimed");

  got_t done = finish(fx, first.r.id, true);
  assert_int_equal(done.r.status, 0);
  assert_string_equal(done.state, "done");
  got_t third = claim(fx, "k1", "claimed");
  assert_true(third.r.duplicate);
  assert_string_equal(third.state, "done");
  assert_string_equal(third.output, "deployment.apps/web restarted");
  assert_int_equal(third.r.exit_code, 0);

  assert_int_equal(sql_int(fx, "SELECT count(*) FROM actions"), 1);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM audit WHERE event IN ('claimed','done')"), 2);
  assert_int_equal(sql_int(fx, "SELECT value FROM guard_state WHERE name = 'bucket:type:restart'"),
                   5);
  /* finishing twice is refused */
  got_t again = finish(fx, first.r.id, false);
  assert_int_equal(again.r.status, -EINVAL);
  assert_string_equal(again.err, "action 1 is not claimed");
}

static void test_record_does_not_take_the_key(void **state)
{
  fx_t *fx = *state;
  got_t g = { 0 };
  vg_ledger_action_t a = action("k2", "prod/deployment/api");
  a.mode = "dry-run";
  assert_int_equal(vg_ledger_record(fx->s, &a, "dry-run", "allowed", on_result, &g), 0);
  run_until(fx, &g.calls, 1);
  assert_int_equal(g.r.status, 0);
  assert_string_equal(g.state, "dry-run");
  got_t c = claim(fx, "k2", "claimed");
  assert_false(c.r.duplicate); /* a dry run earlier does not stop the real one */
  assert_int_equal(vg_ledger_record(fx->s, &a, "claimed", NULL, on_result, &g), -EINVAL);
}

static void test_recover_marks_unknown(void **state)
{
  fx_t *fx = *state;
  got_t running = claim(fx, "k3", "claimed");
  got_t waiting = claim(fx, "k4", "awaiting_approval");
  got_t finished = claim(fx, "k5", "claimed");
  finish(fx, finished.r.id, false);
  close_store(fx); /* "the crash" */
  open_store(fx);
  got_t g = { 0 };
  assert_int_equal(vg_ledger_recover(fx->s, on_result, &g), 0);
  run_until(fx, &g.calls, 1);
  assert_int_equal(g.r.status, 0);
  assert_int_equal(g.r.unknown, 1);
  assert_int_equal(g.r.expired, 1);
  close_store(fx);
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT state = 'unknown' FROM actions WHERE id = %lld",
           (long long)running.r.id);
  assert_int_equal(sql_int(fx, sql), 1);
  snprintf(sql, sizeof sql,
           "SELECT state = 'expired' AND claim_key IS NULL FROM actions WHERE id = %lld",
           (long long)waiting.r.id);
  assert_int_equal(sql_int(fx, sql), 1);
  snprintf(sql, sizeof sql, "SELECT state = 'failed' FROM actions WHERE id = %lld",
           (long long)finished.r.id);
  assert_int_equal(sql_int(fx, sql), 1);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM audit WHERE event = 'unknown'"), 1);
  open_store(fx);
  /* an unknown action still holds its key: it is never run again blind */
  got_t dup = claim(fx, "k3", "claimed");
  assert_true(dup.r.duplicate);
  assert_string_equal(dup.state, "unknown");
  /* only an operator's reconciliation moves it */
  got_t rec = decide(fx, running.r.id, "done");
  assert_int_equal(rec.r.status, 0);
  assert_string_equal(rec.state, "done");
  got_t twice = decide(fx, running.r.id, "failed");
  assert_int_equal(twice.r.status, -EINVAL);
}

static void test_approval_transitions(void **state)
{
  fx_t *fx = *state;
  got_t w = claim(fx, "k6", "awaiting_approval");
  assert_string_equal(w.state, "awaiting_approval");
  assert_int_equal(decide(fx, w.r.id, "done").r.status, -EINVAL); /* not unknown */
  got_t ok = decide(fx, w.r.id, "approved");
  assert_int_equal(ok.r.status, 0);
  assert_string_equal(ok.state, "approved");
  /* the approved row is claimed by the next claim of its key, not duplicated */
  got_t c = claim(fx, "k6", "claimed");
  assert_false(c.r.duplicate);
  assert_int_equal(c.r.id, w.r.id);
  assert_string_equal(c.state, "claimed");

  got_t d = claim(fx, "k7", "awaiting_approval");
  assert_string_equal(decide(fx, d.r.id, "denied").state, "denied");
  assert_true(claim(fx, "k7", "awaiting_approval").r.duplicate); /* denied stays denied */

  got_t e = claim(fx, "k8", "awaiting_approval");
  assert_string_equal(decide(fx, e.r.id, "expired").state, "expired");
  assert_false(claim(fx, "k8", "awaiting_approval").r.duplicate); /* asked again */

  got_t missing = decide(fx, 999, "approved");
  assert_int_equal(missing.r.status, -ENOENT);
  assert_string_equal(missing.err, "no action 999");
}

static void test_audit_is_append_only(void **state)
{
  fx_t *fx = *state;
  claim(fx, "k9", "claimed");
  close_store(fx);
  sqlite3 *db;
  assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
  char *msg = NULL;
  int rc = sqlite3_exec(db, "UPDATE audit SET who = 'mallory'", NULL, NULL, &msg);
  assert_int_not_equal(rc, SQLITE_OK);
  assert_non_null(strstr(msg, "append-only"));
  sqlite3_free(msg);
  sqlite3_close(db);
}

typedef struct {
  int entries, settings, suppressions, calls;
  bool kill_on;
  double bucket;
} load_got_t;

static void on_entry(
    void *ud, vg_ledger_item_t kind, const char *name, const char *text, double value, int64_t at)
{
  load_got_t *g = ud;
  (void)at;
  if (kind == VG_LEDGER_SUPPRESSION) {
    g->suppressions++;
  } else if (kind == VG_LEDGER_SETTING) {
    g->settings++;
    g->kill_on = strcmp(name, "kill_switch") == 0 && strcmp(text, "on") == 0;
  } else {
    g->entries++;
    if (strcmp(name, "bucket:type:restart") == 0) {
      g->bucket = value;
    }
  }
}

static void on_loaded(void *ud, const vg_ledger_result_t *r)
{
  load_got_t *g = ud;
  assert_int_equal(r->status, 0);
  g->calls++;
}

static void test_settings_and_guard_state_round_trip(void **state)
{
  fx_t *fx = *state;
  claim(fx, "k10", "claimed");
  got_t g = { 0 };
  assert_int_equal(vg_ledger_set(fx->s, "kill_switch", "on", "sre", "incident 42", on_result, &g),
                   0);
  run_until(fx, &g.calls, 1);
  assert_int_equal(g.r.status, 0);
  close_store(fx);
  open_store(fx);
  load_got_t l = { 0 };
  assert_int_equal(vg_ledger_load(fx->s, on_entry, on_loaded, &l), 0);
  run_until(fx, &l.calls, 1);
  assert_int_equal(l.entries, 1);
  assert_true(l.bucket == 5);
  assert_int_equal(l.settings, 1);
  assert_true(l.kill_on);
  assert_int_equal(sql_int(fx, "SELECT count(*) FROM audit WHERE event = 'setting'"), 1);
}

typedef struct {
  int calls, status;
  char *json;
} json_got_t;

static void on_json(void *ud, int status, const char *json, size_t len)
{
  json_got_t *g = ud;
  g->calls++;
  g->status = status;
  g->json = strndup(json, len);
}

static void test_list_and_get(void **state)
{
  fx_t *fx = *state;
  got_t a = claim(fx, "k11", "claimed");
  finish(fx, a.r.id, false);
  claim(fx, "k12", "claimed");
  json_got_t g = { 0 };
  vg_ledger_query_t q = { .state = "failed" };
  assert_int_equal(vg_ledger_list(fx->s, &q, on_json, &g), 0);
  run_until(fx, &g.calls, 1);
  assert_int_equal(g.status, 0);
  json_t *doc = json_loads(g.json, 0, NULL);
  assert_non_null(doc);
  json_t *arr = json_object_get(doc, "actions");
  assert_int_equal(json_array_size(arr), 1);
  json_t *row = json_array_get(arr, 0);
  assert_string_equal(json_string_value(json_object_get(row, "state")), "failed");
  assert_string_equal(json_string_value(json_object_get(row, "error")),
                      "EEXIT: kubectl exited with 1");
  assert_true(json_is_array(json_object_get(row, "command")));
  assert_int_equal(json_integer_value(json_object_get(row, "incidentId")), 7);
  json_decref(doc);
  free(g.json);

  json_got_t one = { 0 };
  assert_int_equal(vg_ledger_get(fx->s, a.r.id, on_json, &one), 0);
  run_until(fx, &one.calls, 1);
  doc = json_loads(one.json, 0, NULL);
  json_t *audit = json_object_get(doc, "audit");
  assert_int_equal(json_array_size(audit), 2);
  assert_string_equal(json_string_value(json_object_get(json_array_get(audit, 0), "event")),
                      "claimed");
  assert_string_equal(json_string_value(json_object_get(json_array_get(audit, 1), "event")),
                      "failed");
  json_decref(doc);
  free(one.json);

  json_got_t none = { 0 };
  assert_int_equal(vg_ledger_get(fx->s, 4242, on_json, &none), 0);
  run_until(fx, &none.calls, 1);
  assert_int_equal(none.status, -ENOENT);
  free(none.json);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_claim_once_per_key, setup, teardown),
    cmocka_unit_test_setup_teardown(test_record_does_not_take_the_key, setup, teardown),
    cmocka_unit_test_setup_teardown(test_recover_marks_unknown, setup, teardown),
    cmocka_unit_test_setup_teardown(test_approval_transitions, setup, teardown),
    cmocka_unit_test_setup_teardown(test_audit_is_append_only, setup, teardown),
    cmocka_unit_test_setup_teardown(test_settings_and_guard_state_round_trip, setup, teardown),
    cmocka_unit_test_setup_teardown(test_list_and_get, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
