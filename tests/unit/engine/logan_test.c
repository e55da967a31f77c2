/* Tests for src/engine/logan.c: templates and counts on constructed logs, the seed's spike rule
 * and the detectors' anomalies on constructed minute series, new templates reported once,
 * snapshots (round trip, collect, refusal of bad blobs, mutated blobs), and the caps. */
#include "engine/logan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

#define T0 1767225600.0 /* 2026-01-01T00:00:00Z, a minute boundary */

static vg_logan_query_t query_at(double now)
{
  vg_logan_query_t q = { NULL, now, NAN, false };
  return q;
}

static vg_logan_t *make(vg_logan_registry_t *r, const char *name, const vg_logan_opts_t *o)
{
  char err[160] = "";
  vg_logan_t *a = logan_registry_add(r, name, o, err, sizeof(err));
  if (a == NULL) {
    fail_msg("logan_registry_add(%s): %s", name, err);
  }
  return a;
}

static void add(vg_logan_t *a, const char *line, double ts, const char *level)
{
  assert_int_equal(logan_add(a, line, strlen(line), ts, level), 0);
}

static const char *text_of(vg_logan_t *a, uint64_t id)
{
  static char buf[512];
  vg_logan_template_t t;
  if (!logan_template(a, id, &t)) {
    return "(none)";
  }
  snprintf(buf, sizeof(buf), "%.*s", (int)t.len, t.text);
  return buf;
}

static void test_levels(void **state)
{
  (void)state;
  char l[VG_LOGAN_LEVEL_MAX + 1];
  logan_guess_level("2026-01-01 12:00:00 ERROR db timeout", 36, l);
  assert_string_equal(l, "error");
  const char *w = "[warning] slow; error budget fine";
  logan_guess_level(w, strlen(w), l);
  assert_string_equal(l, "warn");
  logan_guess_level("no level here", 13, l);
  assert_string_equal(l, "");
  logan_guess_level("ERROR42 INFOx fatal", 19, l); /* whole words only */
  assert_string_equal(l, "fatal");
  assert_true(logan_is_error("ERR"));
  assert_true(logan_is_error("Critical"));
  assert_false(logan_is_error("warn"));
  assert_false(logan_is_error(NULL));
}

static void test_templates_and_counts(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(0);
  vg_logan_t *a = make(r, "checkout", NULL);
  assert_ptr_equal(logan_registry_get(r, "checkout"), a);
  assert_null(logan_registry_get(r, "other"));
  for (int i = 0; i < 6; i++) {
    char line[80];
    snprintf(line, sizeof(line), "ERROR connection to db-%d refused", i);
    add(a, line, T0 + i, NULL);
  }
  for (int i = 0; i < 3; i++) {
    char line[80];
    snprintf(line, sizeof(line), "timeout after %ds calling auth", i + 1);
    add(a, line, T0 + 10, "Error");
  }
  for (int i = 0; i < 20; i++) {
    char line[80];
    snprintf(line, sizeof(line), "INFO served request %d", i);
    add(a, line, T0 + 70, NULL);
  }
  assert_int_equal(logan_add(a, "  \r\n", 4, T0 + 70, "error"), 1); /* blank: ignored */

  vg_logan_stats_t st;
  logan_stats(a, &st);
  assert_int_equal(st.lines, 29);
  assert_int_equal(st.errors, 9);
  assert_int_equal(st.templates, 3);
  assert_int_equal(st.services, 1);
  assert_true(st.minute == T0 + 60);
  assert_string_equal(text_of(a, 1), "ERROR connection to db-<*> refused");
  assert_string_equal(text_of(a, 2), "timeout after <*> calling auth");
  assert_string_equal(text_of(a, 3), "INFO served request <*>");
  vg_logan_template_t t;
  assert_true(logan_template(a, 2, &t));
  assert_int_equal(t.count, 3);
  assert_int_equal(t.errors, 3);
  assert_string_equal(t.level, "error");
  assert_string_equal(t.service, "checkout");
  assert_true(t.first_seen == T0 + 10);

  vg_logan_query_t q = query_at(T0 + 90);
  uint64_t errors, lines;
  assert_true(logan_error_rate(a, &q, &errors, &lines));
  assert_int_equal(errors, 9);
  assert_int_equal(lines, 29);
  q.service = "nope";
  assert_false(logan_error_rate(a, &q, &errors, &lines));
  assert_int_equal(lines, 0);
  q.service = NULL;

  vg_logan_top_t top[5];
  assert_int_equal(logan_top_errors(a, &q, top, 1), 1);
  assert_int_equal(top[0].id, 1);
  assert_int_equal(top[0].count, 6);
  assert_true(fabs(top[0].share - 6.0 / 9.0) < 1e-12);
  assert_int_equal(logan_top_errors(a, &q, top, 5), 2);
  assert_int_equal(top[1].id, 2);
  assert_int_equal(top[1].count, 3);

  /* an hour and a minute later the minutes have left the window; totals stay */
  q = query_at(T0 + 3600 + 120);
  assert_true(logan_error_rate(a, &q, &errors, &lines));
  assert_int_equal(lines, 0);
  assert_int_equal(logan_top_errors(a, &q, top, 5), 2);

  /* a line older than the window counts in the totals only */
  add(a, "INFO served request 99", T0 + 7200, NULL);
  vg_logan_result_t res;
  assert_int_equal(logan_add_ex(a, "INFO served request 7", 21, T0, NULL, NULL, &res), 0);
  assert_true(res.late);
  assert_int_equal(res.mine.id, 3);
  logan_stats(a, &st);
  assert_int_equal(st.late, 1);
  assert_int_equal(logan_add_ex(a, "x", 1, NAN, NULL, NULL, &res), -1);
  logan_registry_free(r);
}

/* Five error templates with 1..5 lines, the biggest last: the top 3 are 5, 4, 3 in that order. */
static void test_top_errors_order(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(0);
  vg_logan_t *a = make(r, "top", NULL);
  const char *lines[] = { "ERROR a", "ERROR a b", "ERROR a b c", "ERROR a b c d",
                          "ERROR a b c d e" };
  for (int i = 0; i < 5; i++) {
    for (int k = 0; k <= i; k++) {
      add(a, lines[i], T0, NULL);
    }
  }
  vg_logan_query_t q = query_at(T0);
  vg_logan_top_t top[3];
  assert_int_equal(logan_top_errors(a, &q, top, 3), 3);
  assert_int_equal(top[0].id, 5);
  assert_int_equal(top[0].count, 5);
  assert_int_equal(top[1].id, 4);
  assert_int_equal(top[2].id, 3);
  assert_true(fabs(top[2].share - 3.0 / 15.0) < 1e-12);
  logan_registry_free(r);
}

static void test_services(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(0);
  vg_logan_opts_t o;
  logan_opts_default(&o);
  o.max_services = 2;
  vg_logan_t *a = make(r, "web", &o);
  vg_logan_result_t res;
  const char *svcs[] = { "api", "pay", "auth", "db" };
  for (int i = 0; i < 4; i++) {
    assert_int_equal(logan_add_ex(a, "ERROR request failed", 20, T0, NULL, svcs[i], &res), 0);
    assert_int_equal(logan_add_ex(a, "INFO request ok", 15, T0, NULL, svcs[i], &res), 0);
  }
  vg_logan_stats_t st;
  logan_stats(a, &st);
  assert_int_equal(st.services, 3); /* api, pay, then "other" for auth and db */
  vg_logan_query_t q = query_at(T0);
  uint64_t errors, lines;
  q.service = "other";
  assert_true(logan_error_rate(a, &q, &errors, &lines));
  assert_int_equal(lines, 4);
  assert_int_equal(errors, 2);
  q.service = "auth";
  assert_false(logan_error_rate(a, &q, &errors, &lines));
  q.service = "api";
  vg_logan_top_t top[2];
  assert_int_equal(logan_top_errors(a, &q, top, 2), 1);
  assert_int_equal(top[0].count, 1);
  assert_true(top[0].share == 1.0);
  logan_registry_free(r);
}

/* The seed's rule: ten quiet minutes with one error each, then twelve in one minute. */
static void test_spike_in_minute_series(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(0);
  vg_logan_t *a = make(r, "api", NULL);
  for (int m = 0; m < 10; m++) {
    add(a, "ERROR upstream reset by peer", T0 + 60 * m, NULL);
    add(a, "INFO healthy", T0 + 60 * m + 1, NULL);
  }
  vg_logan_spike_t sp[62];
  vg_logan_query_t q = query_at(T0 + 600);
  assert_int_equal(logan_spikes(a, &q, sp), 0);
  for (int i = 0; i < 12; i++) {
    add(a, "ERROR upstream reset by peer", T0 + 600 + i, NULL);
  }
  assert_int_equal(logan_spikes(a, &q, sp), 1);
  assert_true(sp[0].minute == T0 + 600);
  assert_int_equal(sp[0].errors, 12);
  assert_true(fabs(sp[0].baseline - 1.0) < 1e-12);
  q = query_at(T0 + 600 + 3700);
  assert_int_equal(logan_spikes(a, &q, sp), 0);
  logan_registry_free(r);
}

/* The detectors: a template steady at 2 lines a minute for 20 minutes, then 30 in one minute;
 * the anomaly shows once that minute closes, and a steady template has none. */
static void test_anomaly_in_minute_series(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(0);
  vg_logan_t *a = make(r, "jobs", NULL);
  for (int m = 0; m < 20; m++) {
    add(a, "job 1 done", T0 + 60 * m, NULL);
    add(a, "job 2 done", T0 + 60 * m + 10, NULL);
    add(a, "cache refreshed", T0 + 60 * m + 20, NULL);
  }
  for (int i = 0; i < 30; i++) {
    add(a, "job 3 done", T0 + 1200 + i, NULL);
  }
  add(a, "cache refreshed", T0 + 1220, NULL);
  vg_logan_anomaly_t an[8];
  vg_logan_query_t q = query_at(T0 + 1230);
  assert_int_equal(logan_anomalies(a, &q, an, 8), 0); /* minute 20 is still open */
  add(a, "cache refreshed", T0 + 1260, NULL);
  q = query_at(T0 + 1260);
  assert_int_equal(logan_anomalies(a, &q, an, 8), 1);
  assert_int_equal(an[0].id, 1);
  assert_true(an[0].minute == T0 + 1200);
  assert_int_equal(an[0].count, 30);
  assert_true(fabs(an[0].baseline - 2.0) < 1e-12);
  assert_true(an[0].score >= 0.5 && an[0].score <= 1.0);
  q.since = T0 + 1260;
  assert_int_equal(logan_anomalies(a, &q, an, 8), 0);
  vg_logan_stats_t st;
  logan_stats(a, &st);
  assert_int_equal(st.anomalies, 1);
  /* ten quiet minutes later (zeros fed) nothing new: a drop is not an anomaly */
  add(a, "cache refreshed", T0 + 1860, NULL);
  logan_stats(a, &st);
  assert_int_equal(st.anomalies, 1);
  logan_registry_free(r);
}

/* A service that goes quiet right after its spike: no later line closes the minute, so only
 * logan_advance does, once a minute has passed after its end (late lines may still come). */
static void test_anomaly_of_the_last_minute(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(0);
  vg_logan_t *a = make(r, "quiet", NULL);
  for (int m = 0; m < 20; m++) {
    add(a, "job 1 done", T0 + 60 * m, NULL);
    add(a, "job 2 done", T0 + 60 * m + 10, NULL);
  }
  for (int i = 0; i < 30; i++) {
    add(a, "job 3 done", T0 + 1200 + i, NULL);
  }
  vg_logan_anomaly_t an[8];
  vg_logan_query_t q = query_at(T0 + 1300);
  logan_advance(a, T0 + 1300); /* 40 s after minute 20 ended: it stays open */
  assert_int_equal(logan_anomalies(a, &q, an, 8), 0);
  q = query_at(T0 + 1320);
  logan_advance(a, T0 + 1320); /* a minute after its end: closed */
  assert_int_equal(logan_anomalies(a, &q, an, 8), 1);
  assert_true(an[0].minute == T0 + 1200);
  assert_int_equal(an[0].count, 30);
  logan_advance(a, T0 + 1320); /* again: nothing more */
  logan_advance(a, NAN);
  vg_logan_stats_t st;
  logan_stats(a, &st);
  assert_int_equal(st.anomalies, 1);
  /* an analyser without lines has nothing to close */
  vg_logan_t *empty = make(r, "empty", NULL);
  logan_advance(empty, T0);
  logan_stats(empty, &st);
  assert_true(isnan(st.minute));
  logan_registry_free(r);
}

static void test_new_template_reported_once(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(0);
  vg_logan_t *a = make(r, "sshd", NULL);
  const char *users[] = { "bob", "alice", "carol", "dave", "erin" };
  vg_logan_result_t res;
  for (int i = 0; i < 5; i++) {
    char line[120];
    snprintf(line, sizeof(line), "Failed password for %s from 10.0.0.7 port 22 ssh2", users[i]);
    assert_int_equal(logan_add_ex(a, line, strlen(line), T0 + i, "warn", NULL, &res), 0);
  }
  add(a, "ERROR TLS handshake failed with peer 1", T0 + 30, NULL);
  add(a, "ERROR TLS handshake failed with peer 2", T0 + 31, NULL);
  vg_logan_event_t ev[8];
  vg_logan_query_t q = query_at(T0 + 60);
  assert_int_equal(logan_new_templates(a, &q, ev, 8), 2);
  assert_int_equal(ev[0].id, 1);
  assert_string_equal(text_of(a, ev[0].id), "Failed password for <*> from <*> port <*> ssh2");
  assert_true(ev[0].first_seen == T0);
  assert_string_equal(ev[0].level, "warn");
  assert_false(ev[0].error);
  assert_string_equal(ev[0].service, "sshd");
  assert_int_equal(ev[0].line_len, strlen("Failed password for bob from 10.0.0.7 port 22 ssh2"));
  assert_true(ev[1].error);
  assert_true(ev[1].first_seen == T0 + 30);
  vg_logan_template_t t;
  assert_true(logan_template(a, 1, &t));
  assert_int_equal(t.count, 5); /* the folded variants' counts moved */
  vg_logan_stats_t st;
  logan_stats(a, &st);
  assert_int_equal(st.templates, 2);
  q.errors_only = true;
  assert_int_equal(logan_new_templates(a, &q, ev, 8), 1);
  q.errors_only = false;
  q.since = T0 + 1;
  assert_int_equal(logan_new_templates(a, &q, ev, 8), 1);
  logan_registry_free(r);
}

static void test_trending(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(0);
  vg_logan_t *a = make(r, "queue", NULL);
  for (int m = 0; m < 30; m++) {
    add(a, "INFO GC pause 12ms", T0 + 60 * m, NULL);
    add(a, "WARN queue depth 100 above soft limit", T0 + 60 * m, NULL);
  }
  for (int i = 0; i < 20; i++) {
    add(a, "WARN queue depth 100 above soft limit", T0 + 1800, NULL);
  }
  vg_logan_trend_t tr[4];
  vg_logan_query_t q = query_at(T0 + 1800);
  assert_int_equal(logan_trending(a, &q, tr), 1);
  assert_int_equal(tr[0].id, 2);
  assert_int_equal(tr[0].recent, 24);
  assert_int_equal(tr[0].before, 26);
  assert_true(fabs(tr[0].growth - (24.0 / 5) / (26.0 / 26)) < 1e-12);
  logan_registry_free(r);
}

typedef struct {
  int n;
  char name[64];
  void *blob;
  size_t len;
} sink_t;

static void sink(void *ctx, const char *name, const void *blob, size_t len)
{
  sink_t *s = ctx;
  s->n++;
  snprintf(s->name, sizeof(s->name), "%s", name);
  free(s->blob);
  s->blob = malloc(len);
  memcpy(s->blob, blob, len);
  s->len = len;
}

static void fill(vg_logan_t *a)
{
  for (int m = 0; m < 20; m++) {
    char line[80];
    snprintf(line, sizeof(line), "worker %d finished batch %d", m % 3, m);
    add(a, line, T0 + 60 * m, NULL);
    add(a, "ERROR disk quota exceeded", T0 + 60 * m + 5, NULL);
    vg_logan_result_t res;
    assert_int_equal(
        logan_add_ex(a, "payment declined for order 5", 28, T0 + 60 * m, "error", "pay", &res), 0);
  }
  for (int i = 0; i < 30; i++) {
    add(a, "worker 1 finished batch 99", T0 + 1200, NULL);
  }
  add(a, "GET /api/v1/items/1 200", T0 + 1260, NULL);
}

static void test_snapshot_round_trip(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(0);
  vg_logan_opts_t o;
  logan_opts_default(&o);
  o.window = 1800;
  o.masks[0] = "req%-%w+";
  o.nmasks = 1;
  vg_logan_t *a = make(r, "checkout", &o);
  fill(a);
  sink_t s = { 0 };
  assert_int_equal(logan_registry_collect(r, sink, &s), 1);
  assert_string_equal(s.name, "checkout");
  assert_int_equal(logan_registry_collect(r, sink, &s), 0); /* clean now */

  vg_logan_registry_t *r2 = logan_registry_new(0);
  char err[160] = "";
  assert_int_equal(logan_registry_restore(r2, "checkout", s.blob, s.len, err, sizeof(err)), 0);
  vg_logan_t *b = logan_registry_get(r2, "checkout");
  assert_non_null(b);
  assert_true(logan_opts_equal(logan_opts(a), logan_opts(b)));
  assert_string_equal(logan_opts(b)->masks[0], "req%-%w+");
  vg_logan_stats_t sa, sb;
  logan_stats(a, &sa);
  logan_stats(b, &sb);
  assert_int_equal(sa.lines, sb.lines);
  assert_int_equal(sa.errors, sb.errors);
  assert_int_equal(sa.templates, sb.templates);
  assert_int_equal(sa.services, sb.services);
  assert_int_equal(sa.anomalies, sb.anomalies);
  assert_int_equal(sa.anomalies, 1);
  assert_true(sa.minute == sb.minute);
  for (uint64_t id = 1; id <= 4; id++) {
    vg_logan_template_t ta, tb;
    assert_true(logan_template(a, id, &ta));
    assert_true(logan_template(b, id, &tb));
    assert_int_equal(ta.count, tb.count);
    assert_int_equal(ta.errors, tb.errors);
    assert_true(ta.first_seen == tb.first_seen);
    assert_string_equal(ta.service, tb.service);
    assert_memory_equal(ta.text, tb.text, ta.len);
  }
  vg_logan_query_t q = query_at(T0 + 1260);
  vg_logan_event_t ea[8], eb[8];
  size_t n = logan_new_templates(a, &q, ea, 8);
  assert_int_equal(n, 4);
  assert_int_equal(logan_new_templates(b, &q, eb, 8), n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(ea[i].id, eb[i].id);
    assert_true(ea[i].first_seen == eb[i].first_seen);
    assert_memory_equal(ea[i].line, eb[i].line, ea[i].line_len);
  }
  uint64_t e1, l1, e2, l2;
  logan_error_rate(a, &q, &e1, &l1);
  logan_error_rate(b, &q, &e2, &l2);
  assert_int_equal(e1, e2);
  assert_int_equal(l1, l2);
  /* known templates are not new after the restore; the detectors go on alike */
  vg_logan_result_t ra, rb;
  assert_int_equal(logan_add_ex(a, "worker 2 finished batch 7", 25, T0 + 1320, NULL, NULL, &ra), 0);
  assert_int_equal(logan_add_ex(b, "worker 2 finished batch 7", 25, T0 + 1320, NULL, NULL, &rb), 0);
  assert_int_equal(rb.status, VG_LOGMINE_MATCHED);
  assert_int_equal(ra.mine.id, rb.mine.id);
  assert_int_equal(logan_new_templates(b, &q, eb, 8), 4);
  assert_int_equal(logan_add_ex(b, "handled req-AbC9 ok", 19, T0 + 1320, NULL, NULL, &rb), 0);
  assert_string_equal(text_of(b, rb.mine.id), "handled <*> ok");
  size_t la, lb;
  assert_int_equal(logan_add(a, "handled req-AbC9 ok", 19, T0 + 1320, NULL), 0);
  void *ba = logan_snapshot(a, &la);
  void *bb = logan_snapshot(b, &lb);
  assert_int_equal(la, lb);
  assert_memory_equal(ba, bb, lb); /* same lines in, same bytes out */
  free(ba);
  free(bb);

  /* restoring into an existing analyser keeps the handle */
  assert_int_equal(logan_registry_collect(r2, sink, &s), 1);
  vg_logan_t *c = make(r, "second", NULL);
  add(c, "something else", T0, NULL);
  assert_int_equal(logan_registry_restore(r, "second", s.blob, s.len, err, sizeof(err)), 0);
  assert_ptr_equal(logan_registry_get(r, "second"), c);
  logan_stats(c, &sa);
  assert_int_equal(sa.lines, sb.lines + 2);
  free(s.blob);
  logan_registry_free(r);
  logan_registry_free(r2);
}

static void test_bad_blobs(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(0);
  vg_logan_t *a = make(r, "src", NULL);
  fill(a);
  size_t len;
  uint8_t *blob = logan_snapshot(a, &len);
  assert_non_null(blob);
  vg_logan_t *t = make(r, "target", NULL);
  add(t, "keep me 1", T0, NULL);
  char err[200];
  /* every truncation */
  for (size_t n = 0; n < len; n++) {
    err[0] = '\0';
    assert_int_equal(logan_registry_restore(r, "target", blob, n, err, sizeof(err)), -1);
    assert_true(err[0] != '\0');
  }
  /* a wrong version */
  uint8_t *copy = malloc(len + 1);
  memcpy(copy, blob, len);
  copy[4] = 2;
  assert_int_equal(logan_registry_restore(r, "target", copy, len, err, sizeof(err)), -1);
  assert_string_equal(err, "snapshot version 2, this build reads 1");
  copy[4] = 1;
  copy[len] = 0;
  assert_int_equal(logan_registry_restore(r, "target", copy, len + 1, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "malformed"));
  /* random bytes, with and without the magic */
  uint64_t seed = 42;
  for (int round = 0; round < 200; round++) {
    size_t n = (size_t)(round * 7 % 400);
    for (size_t i = 0; i < n; i++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      copy[i] = (uint8_t)(seed >> 56);
    }
    if (round % 2 && n >= 8) {
      memcpy(copy, "VGLA\1\0\0\0", 8);
    }
    assert_int_equal(logan_registry_restore(r, "target", copy, n, err, sizeof(err)), -1);
  }
  /* mutated blobs: any outcome but a crash; a refused one leaves the target as it was */
  int refused = 0, taken = 0;
  for (int round = 0; round < 3000; round++) {
    memcpy(copy, blob, len);
    for (int k = 0; k < 1 + round % 3; k++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      size_t at = (size_t)(seed >> 20) % len;
      copy[at] = (uint8_t)(seed >> 8);
    }
    if (logan_registry_restore(r, "target", copy, len, err, sizeof(err)) == 0) {
      taken++;
      vg_logan_query_t q = query_at(T0 + 1260);
      vg_logan_spike_t sp[62];
      vg_logan_trend_t tr[64];
      vg_logan_stats_t st;
      logan_stats(t, &st);
      assert_true(st.templates <= 64);
      logan_spikes(t, &q, sp);
      logan_trending(t, &q, tr);
      logan_add(t, "after a mutated restore 1", 25, T0 + 1300, NULL);
      logan_add(t, "after a mutated restore 2", 25, T0 + 9000, NULL);
    } else {
      refused++;
    }
  }
  assert_int_equal(refused + taken, 3000);
  assert_true(refused > 1000);
  /* after a refusal the target is as it was */
  assert_int_equal(logan_registry_restore(r, "target", blob, 10, err, sizeof(err)), -1);
  vg_logan_stats_t st;
  logan_stats(t, &st);
  assert_true(st.lines > 0);
  free(copy);
  free(blob);
  logan_registry_free(r);
}

static void test_caps_and_options(void **state)
{
  (void)state;
  vg_logan_registry_t *r = logan_registry_new(2);
  char err[160];
  vg_logan_opts_t o;
  logan_opts_default(&o);
  o.miner.max_clusters = 10;
  o.max_events = 3;
  vg_logan_t *a = make(r, "a", &o);
  char line[1200];
  for (int i = 0; i < 100; i++) { /* 100 lines of 1..100 words: 100 templates */
    size_t n = 0;
    for (int w = 0; w <= i; w++) {
      n += (size_t)snprintf(line + n, sizeof(line) - n, "%sword", w ? " " : "");
    }
    add(a, line, T0 + i, NULL);
  }
  vg_logan_stats_t st;
  logan_stats(a, &st);
  assert_int_equal(st.miner.clusters, 10);
  assert_int_equal(st.miner.evicted, 90);
  assert_true(st.templates <= 10 + 1 + 10);
  assert_int_equal(st.lines, 100);
  vg_logan_event_t ev[8];
  vg_logan_query_t q = query_at(T0 + 100);
  assert_int_equal(logan_new_templates(a, &q, ev, 8), 3);
  assert_int_equal(ev[2].id, 100);
  assert_true(ev[0].first_seen == T0 + 97);

  assert_non_null(make(r, "b", NULL));
  assert_null(logan_registry_add(r, "c", NULL, err, sizeof(err)));
  assert_string_equal(err, "full: at most 2 log analysers");
  assert_null(logan_registry_add(r, "a", NULL, err, sizeof(err)));
  assert_string_equal(err, "analyser 'a' exists already");
  assert_int_equal(logan_registry_count(r), 2);
  assert_string_equal(logan_name(logan_registry_at(r, 1)), "b");
  assert_null(logan_registry_at(r, 2));
  logan_registry_free(r);

  r = logan_registry_new(0);
  logan_opts_default(&o);
  o.miner.max_clusters = 500000;
  assert_non_null(make(r, "big", &o));
  o.miner.max_clusters = 30000;
  assert_null(logan_registry_add(r, "more", &o, err, sizeof(err)));
  assert_string_equal(err, "full: the log analysers would hold more than 524288 templates in all");
  assert_null(logan_registry_add(r, "", NULL, err, sizeof(err)));
  assert_string_equal(err, "an analyser name is 1..128 bytes");
  logan_opts_default(&o);
  o.window = 30;
  assert_int_equal(logan_opts_check(&o, err, sizeof(err)), -1);
  assert_string_equal(err, "option 'window' must be 1 minute to 1 day");
  logan_opts_default(&o);
  o.spike_factor = -1;
  assert_int_equal(logan_opts_check(&o, err, sizeof(err)), -1);
  assert_string_equal(err, "option 'spike_factor' must be positive");
  logan_opts_default(&o);
  o.masks[0] = "[a";
  o.nmasks = 1;
  assert_int_equal(logan_opts_check(&o, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "mask 1: "));
  logan_opts_default(&o);
  o.window = 3599;
  o.recent = 7200;
  assert_int_equal(logan_opts_check(&o, err, sizeof(err)), 0);
  assert_int_equal(o.window, 3540);
  assert_int_equal(o.recent, 3540);
  vg_logan_opts_t d;
  logan_opts_default(&d);
  assert_int_equal(logan_opts_check(&d, err, sizeof(err)), 0);
  assert_false(logan_opts_equal(&o, &d));
  o.window = o.recent = 0;
  assert_int_equal(logan_opts_check(&o, err, sizeof(err)), 0);
  assert_true(logan_opts_equal(&o, &d));
  logan_registry_free(r);
  logan_registry_free(NULL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_levels),
    cmocka_unit_test(test_templates_and_counts),
    cmocka_unit_test(test_top_errors_order),
    cmocka_unit_test(test_services),
    cmocka_unit_test(test_spike_in_minute_series),
    cmocka_unit_test(test_anomaly_in_minute_series),
    cmocka_unit_test(test_anomaly_of_the_last_minute),
    cmocka_unit_test(test_new_template_reported_once),
    cmocka_unit_test(test_trending),
    cmocka_unit_test(test_snapshot_round_trip),
    cmocka_unit_test(test_bad_blobs),
    cmocka_unit_test(test_caps_and_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
