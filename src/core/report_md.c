/* The incident report as Markdown (`vigil report ID`), from the JSON the daemon answers at
 * GET /api/v1/incidents/{id}/report (engine/memory.h "report"). Everything printed comes from
 * alerts, so it is escaped: a label value cannot open a link, a heading or a table cell. */
#include "core/report_md.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s(json_t *o, const char *k)
{
  json_t *v = json_object_get(o, k);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Text safe inside Markdown prose and table cells: one line, no markup characters. */
static void put(FILE *out, const char *text)
{
  if (text == NULL) {
    fputs("-", out);
    return;
  }
  for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
    /* inside a word (snake_case) an underscore cannot start emphasis: keep it readable */
    bool inner = *p == '_' && p > (const unsigned char *)text && isalnum(p[-1]) && isalnum(p[1]);
    if (inner) {
      fputc('_', out);
    } else if (*p == '\n' || *p == '\r' || *p == '\t') {
      fputc(' ', out);
    } else if (*p < 0x20 || *p == 0x7f) {
      continue;
    } else if (strchr("\\`*_[]<>|~", *p) != NULL) {
      fputc('\\', out);
      fputc(*p, out);
    } else {
      fputc(*p, out);
    }
  }
}

/* An RFC 3339 time as the API gives it, shortened to the second: "2026-12-02 16:05:17Z". */
static void put_time(FILE *out, json_t *t)
{
  const char *text = json_is_string(t) ? json_string_value(t) : NULL;
  if (text == NULL || strlen(text) < 19) {
    fputs("-", out);
    return;
  }
  fprintf(out, "%.10s %.8sZ", text, text + 11);
}

static void put_duration(FILE *out, long long ms)
{
  long long sec = ms / 1000;
  if (sec >= 3600) {
    fprintf(out, "%lldh %02lldm", sec / 3600, sec % 3600 / 60);
  } else if (sec >= 60) {
    fprintf(out, "%lldm %02llds", sec / 60, sec % 60);
  } else {
    fprintf(out, "%lld.%llds", sec, ms % 1000 / 100);
  }
}

/* The services an incident touches: distinct values of the labels that name one. */
static void services(FILE *out, json_t *alerts)
{
  static const char *const names[] = { "service",    "app",       "job",
                                       "deployment", "namespace", "instance" };
  json_t *seen = json_object();
  size_t i;
  json_t *a;
  json_array_foreach(alerts, i, a)
  {
    json_t *labels = json_object_get(a, "labels");
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
      const char *v = s(labels, names[k]);
      if (v != NULL) {
        char key[512];
        snprintf(key, sizeof key, "%s=%s", names[k], v);
        json_object_set_new(seen, key, json_true());
      }
    }
  }
  const char *key;
  json_t *v;
  int n = 0;
  json_object_foreach(seen, key, v)
  {
    fputs(n++ ? ", " : "", out);
    put(out, key);
  }
  fputs(n ? "\n" : "-\n", out);
  json_decref(seen);
}

/* The pipeline's own entries carry the analysis: class, evidence, metrics seen. */
static json_t *last_pipeline(json_t *timeline)
{
  json_t *found = NULL;
  size_t i;
  json_t *e;
  json_array_foreach(timeline, i, e)
  {
    const char *ev = s(e, "event");
    if (ev != NULL && strcmp(ev, "pipeline") == 0) {
      found = json_object_get(e, "detail");
    }
  }
  return found;
}

static void put_json(FILE *out, json_t *v)
{
  char *text = v != NULL ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
  put(out, text);
  free(text);
}

int vg_report_markdown(json_t *doc, FILE *out)
{
  json_t *inc = json_object_get(doc, "incident");
  if (!json_is_object(inc)) {
    return -1;
  }
  json_t *alerts = json_object_get(doc, "alerts"), *timeline = json_object_get(doc, "timeline");
  json_t *actions = json_object_get(doc, "actions"), *esc = json_object_get(doc, "escalations");
  json_t *analysis = last_pipeline(timeline);

  fprintf(out, "# Incident %lld: ", (long long)json_integer_value(json_object_get(inc, "id")));
  put(out, s(inc, "title"));
  fputs("\n\n## Summary\n\n", out);
  fputs("- **Status:** ", out);
  put(out, s(inc, "status"));
  fputs("\n- **Severity:** ", out);
  put(out, s(inc, "severity"));
  fputs("\n- **Opened:** ", out);
  put_time(out, json_object_get(inc, "openedAt"));
  fputs("\n- **Resolved:** ", out);
  put_time(out, json_object_get(inc, "resolvedAt"));
  fputs("\n- **Duration:** ", out);
  put_duration(out, json_integer_value(json_object_get(doc, "durationMs")));
  if (s(inc, "ackedBy") != NULL) {
    fputs("\n- **Acknowledged by:** ", out);
    put(out, s(inc, "ackedBy"));
  }
  fputs("\n- **Affected services:** ", out);
  services(out, alerts);

  fputs("\n## Classification and evidence\n\n", out);
  if (analysis != NULL) {
    fputs("- **Class:** ", out);
    put(out, s(analysis, "class"));
    json_t *conf = json_object_get(analysis, "confidence");
    fprintf(out, " (confidence %.2f)\n- **Evidence:** ", json_number_value(conf));
    put_json(out, json_object_get(analysis, "evidence"));
    fputs("\n- **Anomalies in the data:** ", out);
    put_json(out, json_object_get(analysis, "anomalies"));
    fputs("\n- **Metrics around the incident:** ", out);
    put_json(out, json_object_get(analysis, "metrics"));
    fputs("\n", out);
  } else {
    fputs("No policy analysed this incident.\n", out);
  }

  fputs("\n## Actions and outcomes\n\n", out);
  if (json_array_size(actions) == 0) {
    fputs("None.\n", out);
  } else {
    fputs("| id | type | target | state | mode | why | error |\n|---|---|---|---|---|---|---|\n",
          out);
    size_t i;
    json_t *a;
    json_array_foreach(actions, i, a)
    {
      fprintf(out, "| %lld | ", (long long)json_integer_value(json_object_get(a, "id")));
      const char *cols[] = { "type", "target", "state", "mode", "why", "error" };
      for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++) {
        put(out, s(a, cols[c]));
        fputs(" | ", out);
      }
      fputs("\n", out);
    }
  }

  fputs("\n## Escalations\n\n", out);
  if (json_array_size(esc) == 0) {
    fputs("None.\n", out);
  } else {
    size_t i;
    json_t *e;
    json_array_foreach(esc, i, e)
    {
      fputs("- ", out);
      put(out, s(e, "name"));
      fputs(" (", out);
      put(out, s(e, "policy"));
      fputs("): ", out);
      put(out, s(e, "state"));
      fputs(", due ", out);
      put_time(out, json_object_get(e, "dueAt"));
      if (s(e, "note") != NULL) {
        fputs(": ", out);
        put(out, s(e, "note"));
      }
      fputs("\n", out);
    }
  }

  fputs("\n## Timeline\n\n", out);
  size_t i;
  json_t *e;
  json_array_foreach(timeline, i, e)
  {
    fputs("- ", out);
    put_time(out, json_object_get(e, "at"));
    fputs(" **", out);
    put(out, s(e, "event"));
    fputs("** by ", out);
    put(out, s(e, "who"));
    if (s(e, "comment") != NULL) {
      fputs(": ", out);
      put(out, s(e, "comment"));
    }
    fputs("\n", out);
  }

  fputs("\n## Similar past incidents\n\n", out);
  json_t *similar = json_object_get(doc, "similar");
  if (json_array_size(similar) == 0) {
    fputs("None recorded.\n", out);
  }
  json_array_foreach(similar, i, e)
  {
    fprintf(out, "- incident %lld (score %.2f): ",
            (long long)json_integer_value(json_object_get(e, "incident")),
            json_number_value(json_object_get(e, "score")));
    put(out, s(e, "title"));
    fputs(", class ", out);
    put(out, s(e, "class"));
    fputs(", fix ", out);
    put(out, s(e, "fix"));
    fputs(", outcome ", out);
    put(out, s(e, "outcome"));
    fputs("\n", out);
  }

  fputs("\n## Follow-ups\n\n", out);
  int n = 0;
  json_array_foreach(actions, i, e)
  {
    const char *st = s(e, "state");
    const char *what = st == NULL                             ? NULL
                       : strcmp(st, "unknown") == 0           ? "reconcile: it may have run"
                       : strcmp(st, "awaiting_approval") == 0 ? "approve or deny"
                       : strcmp(st, "failed") == 0            ? "failed: find out why"
                       : strcmp(st, "refused") == 0           ? "refused by the guard rails"
                                                              : NULL;
    if (what != NULL) {
      fprintf(out, "- action %lld ", (long long)json_integer_value(json_object_get(e, "id")));
      put(out, s(e, "type"));
      fputs(" ", out);
      put(out, s(e, "target"));
      fprintf(out, ": %s\n", what);
      n++;
    }
  }
  json_array_foreach(esc, i, e)
  {
    const char *st = s(e, "state");
    if (st != NULL && strcmp(st, "failed") == 0) {
      fputs("- escalation ", out);
      put(out, s(e, "name"));
      fputs(" failed: check the notifier\n", out);
      n++;
    }
  }
  json_t *kb = json_object_get(doc, "kb");
  if (s(inc, "status") != NULL && strcmp(s(inc, "status"), "resolved") == 0 &&
      (kb == NULL || s(kb, "outcome") == NULL)) {
    fputs("- record what fixed it, so vigil proposes it next time (POST /api/v1/kb/fixes)\n", out);
    n++;
  }
  if (n == 0) {
    fputs("None.\n", out);
  }
  return 0;
}
