/* Intake payload decoding: Alertmanager's v2 alerts and webhook, the generic event, times,
 * severities and fingerprints (Alertmanager's own values). */
#include "engine/alertdec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

static const vg_alertdec_opts_t OPTS = { .now = 1700000000.0, .resolve_timeout = 300 };

static int decode(int (*fn)(const char *,
                            size_t,
                            const vg_alertdec_opts_t *,
                            vg_alert_batch_t *,
                            int *,
                            char *,
                            size_t),
                  const char *body,
                  vg_alert_batch_t *b,
                  int *status,
                  char *err)
{
  return fn(body, strlen(body), &OPTS, b, status, err, 256);
}

static const char *label(const vg_store_alert_t *a, const char *name)
{
  for (size_t i = 0; i < a->nlabels; i++) {
    if (strcmp(a->labels[i].name, name) == 0) {
      return a->labels[i].value;
    }
  }
  return NULL;
}

/* ---- fingerprints, times, severities ---- */

static void test_fingerprint_vectors(void **state)
{
  (void)state;
  char fp[17];
  vg_fingerprint(NULL, 0, fp);
  assert_string_equal(fp, "cbf29ce484222325");
  vg_label_t one[] = { { "alertname", 9, "HighLatency", 11 } };
  vg_fingerprint(one, 1, fp);
  assert_string_equal(fp, "73dbeed5635ea4e4");
  vg_label_t three[] = { { "alertname", 9, "HighLatency", 11 },
                         { "service", 7, "checkout", 8 },
                         { "severity", 8, "critical", 8 } };
  vg_fingerprint(three, 3, fp);
  assert_string_equal(fp, "c75f68922c9ebc87");
  vg_label_t upstream[] = { { "fear", 4, "love is not enough", 18 },
                            { "name", 4, "garland, briggs", 15 } };
  vg_fingerprint(upstream, 2, fp);
  assert_string_equal(fp, "507a62d79ee76c9a");
  vg_label_t empty_value[] = { { "a", 1, "", 0 } };
  vg_fingerprint(empty_value, 1, fp);
  assert_string_equal(fp, "e57e2e1903df23e2");
}

static void test_fingerprint_ignores_input_order(void **state)
{
  (void)state;
  vg_label_t shuffled[] = { { "severity", 8, "critical", 8 },
                            { "alertname", 9, "HighLatency", 11 },
                            { "service", 7, "checkout", 8 } };
  char fp[17];
  vg_fingerprint(shuffled, 3, fp);
  assert_string_equal(fp, "c75f68922c9ebc87");
}

static void test_time_parse(void **state)
{
  (void)state;
  double t;
  assert_true(vg_time_parse("2023-11-14T22:13:20Z", &t));
  assert_true(t == 1700000000.0);
  assert_true(vg_time_parse("2023-11-14T22:13:20.5Z", &t));
  assert_true(t == 1700000000.5);
  assert_true(vg_time_parse("2023-11-14T22:13:20.123456789Z", &t));
  assert_true(t > 1700000000.123 && t < 1700000000.124);
  assert_true(vg_time_parse("2023-11-15T00:13:20+02:00", &t));
  assert_true(t == 1700000000.0);
  assert_true(vg_time_parse("2023-11-14T21:13:20-01:00", &t));
  assert_true(t == 1700000000.0);
  assert_true(vg_time_parse("0001-01-01T00:00:00Z", &t));
  assert_true(t == 0);
  const char *bad[] = { "",
                        "2023-11-14",
                        "2023-11-14T22:13:20",
                        "2023-13-14T22:13:20Z",
                        "2023-11-14T25:13:20Z",
                        "2023-11-14T22:13:20.Z",
                        "2023-11-14T22:13:20Zjunk",
                        "2023-11-14T22:13:20.1234567890Z",
                        "1969-12-31T23:59:59Z",
                        "yesterday" };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    if (vg_time_parse(bad[i], &t)) {
      fail_msg("accepted %s", bad[i]);
    }
  }
  char out[32];
  vg_time_format(1700000000.25, out);
  assert_string_equal(out, "2023-11-14T22:13:20.250Z");
}

static void test_severity_mapping(void **state)
{
  (void)state;
  assert_string_equal(vg_severity_of("critical"), "critical");
  assert_string_equal(vg_severity_of("PAGE"), "critical");
  assert_string_equal(vg_severity_of("error"), "high");
  assert_string_equal(vg_severity_of("warning"), "medium");
  assert_string_equal(vg_severity_of("minor"), "low");
  assert_string_equal(vg_severity_of("info"), "info");
  assert_string_equal(vg_severity_of("none"), "info");
  assert_string_equal(vg_severity_of("bogus"), "medium");
  assert_string_equal(vg_severity_of(NULL), "medium");
}

/* ---- POST /api/v2/alerts ---- */

static void test_v2_defaults_as_alertmanager(void **state)
{
  (void)state;
  vg_alert_batch_t b;
  int status;
  char err[256];
  assert_int_equal(decode(vg_alertdec_v2,
                          "[{\"labels\":{\"alertname\":\"A\",\"severity\":\"warning\"}},"
                          " {\"labels\":{\"alertname\":\"B\"},\"endsAt\":\"2023-11-14T22:00:00Z\"},"
                          " {\"labels\":{\"alertname\":\"C\"},"
                          "  \"startsAt\":\"2023-11-14T22:00:00Z\","
                          "  \"endsAt\":\"2023-11-14T23:00:00Z\",\"generatorURL\":\"http://p\"}]",
                          &b, &status, err),
                   0);
  assert_int_equal(b.n, 3);
  assert_int_equal(b.rejected, 0);
  /* no times: starts now, ends after the resolve timeout, so it fires */
  assert_true(b.alerts[0].starts_at == OPTS.now);
  assert_true(b.alerts[0].ends_at == OPTS.now + 300);
  assert_string_equal(b.alerts[0].status, "firing");
  assert_string_equal(b.alerts[0].severity, "medium");
  assert_string_equal(b.alerts[0].name, "A");
  assert_string_equal(b.alerts[0].source, "api-v2");
  assert_string_equal(b.alerts[0].group_key, "alertname=A");
  /* endsAt in the past, no startsAt: starts at endsAt, resolved */
  assert_true(b.alerts[1].starts_at == b.alerts[1].ends_at);
  assert_string_equal(b.alerts[1].status, "resolved");
  assert_string_equal(b.alerts[2].status, "firing");
  assert_string_equal(b.alerts[2].generator_url, "http://p");
  vg_alert_batch_free(&b);
}

static void test_v2_labels_sorted_empty_dropped(void **state)
{
  (void)state;
  vg_alert_batch_t b;
  int status;
  char err[256];
  assert_int_equal(decode(vg_alertdec_v2,
                          "[{\"labels\":{\"severity\":\"critical\",\"zone\":\"\","
                          "\"alertname\":\"HighLatency\",\"service\":\"checkout\"},"
                          "\"annotations\":{\"summary\":\"slow\",\"empty\":\"\"}}]",
                          &b, &status, err),
                   0);
  assert_int_equal(b.n, 1);
  const vg_store_alert_t *a = &b.alerts[0];
  assert_int_equal(a->nlabels, 3);
  assert_string_equal(a->labels[0].name, "alertname");
  assert_string_equal(a->labels[1].name, "service");
  assert_string_equal(a->labels[2].name, "severity");
  assert_null(label(a, "zone"));
  assert_int_equal(a->nannotations, 1);
  assert_string_equal(a->fingerprint, "c75f68922c9ebc87");
  assert_string_equal(a->severity, "critical");
  assert_string_equal(a->group_key, "alertname=HighLatency,service=checkout");
  vg_alert_batch_free(&b);
}

static void test_v2_partly_invalid_batch_keeps_the_valid(void **state)
{
  (void)state;
  vg_alert_batch_t b;
  int status;
  char err[256];
  assert_int_equal(
      decode(vg_alertdec_v2,
             "[{\"labels\":{\"alertname\":\"ok1\"}},"
             " {\"annotations\":{}},"
             " {\"labels\":{}},"
             " {\"labels\":{\"a\":\"\"}},"
             " {\"labels\":{\"a\":1}},"
             " {\"labels\":{\"alertname\":\"x\"},\"startsAt\":\"2023-11-14T22:00:00Z\","
             "  \"endsAt\":\"2023-11-14T21:00:00Z\"},"
             " {\"labels\":{\"alertname\":\"x\"},\"startsAt\":\"soon\"},"
             " 42,"
             " {\"labels\":{\"alertname\":\"ok2\"}}]",
             &b, &status, err),
      0);
  assert_int_equal(b.total, 9);
  assert_int_equal(b.n, 2);
  assert_int_equal(b.index[0], 0);
  assert_int_equal(b.index[1], 8);
  assert_int_equal(b.rejected, 7);
  assert_int_equal(b.nerrors, 7);
  assert_string_equal(b.errors[0], "alert 1: labels: required");
  assert_string_equal(b.errors[1], "alert 2: labels: at least one label with a value is required");
  assert_string_equal(b.errors[2], "alert 3: labels: at least one label with a value is required");
  assert_string_equal(b.errors[3], "alert 4: labels.a: must be a string");
  assert_string_equal(b.errors[4], "alert 5: endsAt is before startsAt");
  assert_string_equal(b.errors[5], "alert 6: startsAt: not an RFC 3339 time");
  assert_string_equal(b.errors[6], "alert 7: must be an object");
  vg_alert_batch_free(&b);
}

static void test_v2_whole_body_refused(void **state)
{
  (void)state;
  static const struct {
    const char *body;
    int status;
    const char *msg;
  } cases[] = {
    { "{\"labels\":{}}", 400, "must be a JSON array" },
    { "[{\"labels\":", 400, "invalid JSON" },
    { "", 400, "invalid JSON" },
    { "[{\"labels\":{\"a\":\"1\",\"a\":\"2\"}}]", 400, "duplicate" },
    { "[{\"labels\":{\"a\":\"\xff\"}}]", 400, "invalid JSON" },
    { "[{\"labels\":{\"a\":\"x\\u0000y\"}}]", 400, "invalid JSON" },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    vg_alert_batch_t b;
    int status = 0;
    char err[256] = "";
    assert_int_equal(decode(vg_alertdec_v2, cases[i].body, &b, &status, err), -1);
    assert_int_equal(status, cases[i].status);
    if (strstr(err, cases[i].msg) == NULL) {
      fail_msg("case %zu: '%s' does not say '%s'", i, err, cases[i].msg);
    }
    vg_alert_batch_free(&b);
  }
}

static void test_v2_bounds(void **state)
{
  (void)state;
  /* too many alerts: the request as a whole is too large */
  size_t n = VG_BATCH_MAX_ALERTS + 1;
  char *big = malloc(n * 4 + 3);
  size_t k = 0;
  big[k++] = '[';
  for (size_t i = 0; i < n; i++) {
    memcpy(big + k, i ? ",{}" : "{}", i ? 3 : 2);
    k += i ? 3 : 2;
  }
  big[k++] = ']';
  big[k] = '\0';
  vg_alert_batch_t b;
  int status = 0;
  char err[256];
  assert_int_equal(decode(vg_alertdec_v2, big, &b, &status, err), -1);
  assert_int_equal(status, 413);
  vg_alert_batch_free(&b);
  free(big);

  /* a label value over the bound, or too many labels: that alert only */
  size_t vlen = VG_ALERT_MAX_VALUE + 1;
  char *body = malloc(vlen + 200);
  int m = snprintf(body, 200, "[{\"labels\":{\"alertname\":\"ok\"}},{\"labels\":{\"big\":\"");
  memset(body + m, 'x', vlen);
  strcpy(body + m + vlen, "\"}}]");
  assert_int_equal(decode(vg_alertdec_v2, body, &b, &status, err), 0);
  assert_int_equal(b.n, 1);
  assert_non_null(strstr(b.errors[0], "labels.big: 65537 bytes (limit 65536)"));
  vg_alert_batch_free(&b);
  free(body);

  char *many = malloc(20000);
  k = (size_t)snprintf(many, 100, "[{\"labels\":{");
  for (int i = 0; i < VG_ALERT_MAX_LABELS + 1; i++) {
    k += (size_t)snprintf(many + k, 100, "%s\"l%d\":\"v\"", i ? "," : "", i);
  }
  strcpy(many + k, "}}]");
  assert_int_equal(decode(vg_alertdec_v2, many, &b, &status, err), 0);
  assert_int_equal(b.n, 0);
  assert_non_null(strstr(b.errors[0], "257 entries (limit 256)"));
  vg_alert_batch_free(&b);
  free(many);
}

/* ---- the webhook ---- */

static const char WEBHOOK[] =
    "{\"version\":\"4\",\"groupKey\":\"{}/"
    "{severity=\\\"critical\\\"}:{alertname=\\\"HighLatency\\\"}\","
    "\"truncatedAlerts\":0,\"status\":\"firing\",\"receiver\":\"vigil\","
    "\"groupLabels\":{\"alertname\":\"HighLatency\"},\"commonLabels\":{},"
    "\"commonAnnotations\":{},\"externalURL\":\"http://am:9093\","
    "\"notification_reason\":\"new\",\"routeLabels\":{},"
    "\"alerts\":[{\"status\":\"firing\",\"labels\":{\"alertname\":\"HighLatency\","
    "\"service\":\"checkout\",\"severity\":\"critical\"},\"annotations\":{\"summary\":\"slow\"},"
    "\"startsAt\":\"2023-11-14T22:00:00.123456789Z\",\"endsAt\":\"0001-01-01T00:00:00Z\","
    "\"generatorURL\":\"http://prom/graph\",\"fingerprint\":\"c75f68922c9ebc87\"},"
    "{\"status\":\"resolved\",\"labels\":{\"alertname\":\"HighLatency\",\"namespace\":\"prod\"},"
    "\"annotations\":{},\"startsAt\":\"2023-11-14T21:00:00Z\","
    "\"endsAt\":\"2023-11-14T21:30:00Z\",\"fingerprint\":\"ffffffffffffffff\"}]}";

static void test_webhook_version_4(void **state)
{
  (void)state;
  vg_alert_batch_t b;
  int status;
  char err[256];
  assert_int_equal(decode(vg_alertdec_webhook, WEBHOOK, &b, &status, err), 0);
  assert_int_equal(b.n, 2);
  assert_string_equal(b.group_key, "{}/{severity=\"critical\"}:{alertname=\"HighLatency\"}");
  const vg_store_alert_t *f = &b.alerts[0], *r = &b.alerts[1];
  assert_string_equal(f->status, "firing");
  assert_true(f->ends_at == 0);
  assert_true(f->starts_at > 1699999200.123 && f->starts_at < 1699999200.124);
  assert_string_equal(f->fingerprint, "c75f68922c9ebc87");
  assert_string_equal(f->source, "alertmanager");
  assert_string_equal(r->status, "resolved");
  assert_true(r->ends_at == 1699997400.0);
  /* the fingerprint is ours, computed from the labels, whatever the sender claimed */
  assert_string_not_equal(r->fingerprint, "ffffffffffffffff");
  assert_string_equal(r->group_key, "alertname=HighLatency,namespace=prod");
  vg_alert_batch_free(&b);
}

static void test_webhook_refusals(void **state)
{
  (void)state;
  const char *bad[] = {
    "[]",
    "{\"version\":\"4\"}",
    "{\"version\":\"5\",\"alerts\":[]}",
    "{\"version\":4,\"alerts\":[]}",
    "{\"alerts\":{}}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    vg_alert_batch_t b;
    int status = 0;
    char err[256];
    if (decode(vg_alertdec_webhook, bad[i], &b, &status, err) != -1 || status != 400) {
      fail_msg("accepted %s", bad[i]);
    }
    vg_alert_batch_free(&b);
  }
  /* a message without a version, and an alert with a bad status, are read leniently */
  vg_alert_batch_t b;
  int status;
  char err[256];
  assert_int_equal(decode(vg_alertdec_webhook,
                          "{\"alerts\":[{\"labels\":{\"alertname\":\"x\"}},"
                          "{\"status\":\"weird\",\"labels\":{\"alertname\":\"y\"}}]}",
                          &b, &status, err),
                   0);
  assert_int_equal(b.n, 1);
  assert_string_equal(b.alerts[0].status, "firing");
  assert_string_equal(b.errors[0], "alert 1: status: must be \"firing\" or \"resolved\"");
  vg_alert_batch_free(&b);
}

/* ---- the generic event ---- */

static void test_event(void **state)
{
  (void)state;
  vg_alert_batch_t b;
  int status;
  char err[256];
  assert_int_equal(decode(vg_alertdec_event,
                          "{\"name\":\"DiskFull\",\"severity\":\"critical\",\"source\":\"cron\","
                          "\"labels\":{\"host\":\"db1\"},\"annotations\":{\"summary\":\"97%\"},"
                          "\"timestamp\":1700000000}",
                          &b, &status, err),
                   0);
  assert_int_equal(b.n, 1);
  const vg_store_alert_t *a = &b.alerts[0];
  assert_string_equal(label(a, "alertname"), "DiskFull");
  assert_string_equal(label(a, "severity"), "critical");
  assert_string_equal(label(a, "host"), "db1");
  assert_string_equal(a->severity, "critical");
  assert_string_equal(a->status, "firing");
  assert_string_equal(a->source, "cron");
  assert_true(a->starts_at == 1700000000.0);
  char fp[17];
  vg_fingerprint(a->labels, a->nlabels, fp);
  assert_string_equal(a->fingerprint, fp);
  vg_alert_batch_free(&b);

  assert_int_equal(decode(vg_alertdec_event,
                          "{\"name\":\"DiskFull\",\"status\":\"resolved\","
                          "\"timestamp\":\"2023-11-14T22:13:20Z\"}",
                          &b, &status, err),
                   0);
  assert_string_equal(b.alerts[0].status, "resolved");
  assert_true(b.alerts[0].ends_at == OPTS.now);
  vg_alert_batch_free(&b);

  const char *bad[] = { "{}",
                        "{\"name\":\"\"}",
                        "{\"name\":1}",
                        "{\"name\":\"x\",\"severity\":2}",
                        "{\"name\":\"x\",\"status\":\"maybe\"}",
                        "{\"name\":\"x\",\"timestamp\":\"now\"}" };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(decode(vg_alertdec_event, bad[i], &b, &status, err), 0);
    if (b.n != 0 || b.rejected != 1) {
      fail_msg("accepted %s", bad[i]);
    }
    vg_alert_batch_free(&b);
  }
  assert_int_equal(decode(vg_alertdec_event, "[1]", &b, &status, err), -1);
  vg_alert_batch_free(&b);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_fingerprint_vectors),
    cmocka_unit_test(test_fingerprint_ignores_input_order),
    cmocka_unit_test(test_time_parse),
    cmocka_unit_test(test_severity_mapping),
    cmocka_unit_test(test_v2_defaults_as_alertmanager),
    cmocka_unit_test(test_v2_labels_sorted_empty_dropped),
    cmocka_unit_test(test_v2_partly_invalid_batch_keeps_the_valid),
    cmocka_unit_test(test_v2_whole_body_refused),
    cmocka_unit_test(test_v2_bounds),
    cmocka_unit_test(test_webhook_version_4),
    cmocka_unit_test(test_webhook_refusals),
    cmocka_unit_test(test_event),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
