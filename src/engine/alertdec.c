/* Intake payloads -> normalised alerts. See alertdec.h. Strings of the alerts point into the
 * decoded jansson document, which the batch keeps; arrays the batch allocates are listed in
 * its private part and freed with it. */
#include "engine/alertdec.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct {
  json_t *root;
  void **allocs;
  size_t nallocs, cap;
} dec_priv_t;

/* Registers p to be freed with the batch. Returns p, or NULL (p freed) when out of memory. */
static void *keep(dec_priv_t *d, void *p)
{
  if (p == NULL) {
    return NULL;
  }
  if (d->nallocs == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 64;
    void **a = realloc(d->allocs, cap * sizeof(*a));
    if (a == NULL) {
      free(p);
      return NULL;
    }
    d->allocs = a;
    d->cap = cap;
  }
  d->allocs[d->nallocs++] = p;
  return p;
}

void vg_alert_batch_free(vg_alert_batch_t *b)
{
  if (b == NULL) {
    return;
  }
  dec_priv_t *d = b->priv;
  if (d != NULL) {
    for (size_t i = 0; i < d->nallocs; i++) {
      free(d->allocs[i]);
    }
    free(d->allocs);
    json_decref(d->root);
    free(d);
  }
  for (size_t i = 0; i < b->nerrors; i++) {
    free(b->errors[i]);
  }
  free(b->errors);
  free(b->alerts);
  free(b->index);
  memset(b, 0, sizeof(*b));
}

static void add_error(vg_alert_batch_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add_error(vg_alert_batch_t *b, const char *fmt, ...)
{
  b->rejected++;
  if (b->nerrors >= VG_BATCH_MAX_ERRORS) {
    return;
  }
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  char *copy = strdup(msg);
  if (copy != NULL) {
    b->errors[b->nerrors++] = copy;
  }
}

/* ---- time ---- */

static int digits(const char **p, int n)
{
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (**p < '0' || **p > '9') {
      return -1;
    }
    v = v * 10 + (**p - '0');
    (*p)++;
  }
  return v;
}

bool vg_time_parse(const char *s, double *out)
{
  const char *p = s;
  int year = digits(&p, 4);
  if (year < 0 || *p++ != '-') {
    return false;
  }
  int mon = digits(&p, 2);
  if (mon < 1 || mon > 12 || *p++ != '-') {
    return false;
  }
  int day = digits(&p, 2);
  if (day < 1 || day > 31 || (*p != 'T' && *p != 't' && *p != ' ')) {
    return false;
  }
  p++;
  int hour = digits(&p, 2);
  if (hour < 0 || hour > 23 || *p++ != ':') {
    return false;
  }
  int min = digits(&p, 2);
  if (min < 0 || min > 59 || *p++ != ':') {
    return false;
  }
  int sec = digits(&p, 2);
  if (sec < 0 || sec > 60) {
    return false;
  }
  double frac = 0;
  if (*p == '.') {
    p++;
    double scale = 0.1;
    int n = 0;
    while (*p >= '0' && *p <= '9') {
      frac += (*p - '0') * scale;
      scale /= 10;
      p++;
      n++;
    }
    if (n == 0 || n > 9) {
      return false;
    }
  }
  int offset = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p++ == '-' ? -1 : 1;
    int oh = digits(&p, 2);
    if (oh < 0 || oh > 23 || *p++ != ':') {
      return false;
    }
    int om = digits(&p, 2);
    if (om < 0 || om > 59) {
      return false;
    }
    offset = sign * (oh * 3600 + om * 60);
  } else {
    return false;
  }
  if (*p != '\0') {
    return false;
  }
  if (year == 1 && mon == 1 && day == 1 && hour == 0 && min == 0 && sec == 0 && frac == 0) {
    *out = 0; /* Go's zero time: "not set" */
    return true;
  }
  if (year < 1970) {
    return false;
  }
  struct tm tm = { .tm_year = year - 1900,
                   .tm_mon = mon - 1,
                   .tm_mday = day,
                   .tm_hour = hour,
                   .tm_min = min,
                   .tm_sec = sec };
  time_t t = timegm(&tm);
  if (t == (time_t)-1) {
    return false;
  }
  *out = (double)t - offset + frac;
  return true;
}

void vg_time_format(double t, char out[32])
{
  time_t secs = (time_t)floor(t);
  int ms = (int)((t - (double)secs) * 1000.0 + 0.5);
  if (ms >= 1000) {
    secs++;
    ms -= 1000;
  }
  struct tm tm;
  gmtime_r(&secs, &tm);
  /* strftime keeps the compiler's truncation analysis quiet: real times take 24 bytes */
  size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, 32 - n, ".%03dZ", ms % 1000);
}

/* ---- severity ---- */

const char *vg_severity_of(const char *v)
{
  static const struct {
    const char *word, *severity;
  } map[] = {
    { "critical", "critical" }, { "crit", "critical" },
    { "fatal", "critical" },    { "emergency", "critical" },
    { "page", "critical" },     { "high", "high" },
    { "error", "high" },        { "err", "high" },
    { "major", "high" },        { "severe", "high" },
    { "warning", "medium" },    { "warn", "medium" },
    { "medium", "medium" },     { "moderate", "medium" },
    { "low", "low" },           { "minor", "low" },
    { "info", "info" },         { "informational", "info" },
    { "notice", "info" },       { "none", "info" },
    { "debug", "info" },        { "ok", "info" },
  };
  if (v != NULL) {
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
      if (strcasecmp(v, map[i].word) == 0) {
        return map[i].severity;
      }
    }
  }
  return "medium";
}

/* ---- pieces of an alert ---- */

static int cmp_labels(const void *a, const void *b)
{
  const vg_label_t *x = a, *y = b;
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int c = memcmp(x->name, y->name, n);
  return c != 0 ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

/* Reads a string map ("labels", "annotations") into a sorted array without empty values.
 * Missing or null is an empty map. Returns 0, or -1 with the reason in err. */
static int read_map(dec_priv_t *d,
                    json_t *obj,
                    const char *what,
                    size_t max_value,
                    size_t extra,
                    vg_label_t **out,
                    size_t *n,
                    char *err,
                    size_t errlen)
{
  *out = NULL;
  *n = 0;
  if (obj != NULL && !json_is_null(obj) && !json_is_object(obj)) {
    snprintf(err, errlen, "%s: must be an object of strings", what);
    return -1;
  }
  size_t count = obj != NULL && json_is_object(obj) ? json_object_size(obj) : 0;
  if (count > VG_ALERT_MAX_LABELS) {
    snprintf(err, errlen, "%s: %zu entries (limit %d)", what, count, VG_ALERT_MAX_LABELS);
    return -1;
  }
  vg_label_t *a = keep(d, calloc(count + extra + 1, sizeof(*a)));
  if (a == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  size_t k = 0;
  const char *key;
  json_t *val;
  if (count > 0) {
    json_object_foreach(obj, key, val)
    {
      size_t klen = strlen(key);
      if (klen == 0 || klen > VG_ALERT_MAX_NAME) {
        snprintf(err, errlen, "%s: a name is empty or longer than %d bytes", what,
                 VG_ALERT_MAX_NAME);
        return -1;
      }
      if (!json_is_string(val)) {
        snprintf(err, errlen, "%s.%.64s: must be a string", what, key);
        return -1;
      }
      size_t vlen = json_string_length(val);
      if (vlen > max_value) {
        snprintf(err, errlen, "%s.%.64s: %zu bytes (limit %zu)", what, key, vlen, max_value);
        return -1;
      }
      if (vlen == 0) {
        continue; /* as Alertmanager: an empty value is no label */
      }
      a[k++] = (vg_label_t){ key, klen, json_string_value(val), vlen };
    }
  }
  qsort(a, k, sizeof(*a), cmp_labels);
  *out = a;
  *n = k;
  return 0;
}

static const char *label_value(const vg_label_t *l, size_t n, const char *name)
{
  size_t len = strlen(name);
  for (size_t i = 0; i < n; i++) {
    if (l[i].name_len == len && memcmp(l[i].name, name, len) == 0) {
      return l[i].value;
    }
  }
  return NULL;
}

/* Reads an optional time field: absent, null or "" is 0. */
static int read_time(json_t *obj, const char *field, double *out, char *err, size_t errlen)
{
  json_t *v = json_object_get(obj, field);
  *out = 0;
  if (v == NULL || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0)) {
    return 0;
  }
  if (json_is_number(v)) { /* unix seconds, for the generic event */
    double t = json_number_value(v);
    if (!isfinite(t) || t < 0 || t > 1e11) {
      snprintf(err, errlen, "%s: not a time", field);
      return -1;
    }
    *out = t;
    return 0;
  }
  if (!json_is_string(v) || !vg_time_parse(json_string_value(v), out)) {
    snprintf(err, errlen, "%s: not an RFC 3339 time", field);
    return -1;
  }
  return 0;
}

static const char *opt_string(json_t *obj, const char *field)
{
  json_t *v = json_object_get(obj, field);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Fills the derived fields: fingerprint, name, severity, group key. */
static int finish_alert(dec_priv_t *d, vg_store_alert_t *a, char *err, size_t errlen)
{
  char *fp = keep(d, malloc(17));
  if (fp == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  vg_fingerprint(a->labels, a->nlabels, fp);
  a->fingerprint = fp;
  const char *name = label_value(a->labels, a->nlabels, "alertname");
  a->name = name != NULL ? name : "";
  a->severity = vg_severity_of(label_value(a->labels, a->nlabels, "severity"));
  const char *svc = label_value(a->labels, a->nlabels, "service");
  const char *svc_name = "service";
  if (svc == NULL) {
    svc = label_value(a->labels, a->nlabels, "namespace");
    svc_name = "namespace";
  }
  size_t len = strlen(a->name) + (svc ? strlen(svc) : 0) + 40;
  char *gk = keep(d, malloc(len));
  if (gk == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (svc != NULL) {
    snprintf(gk, len, "alertname=%s,%s=%s", a->name, svc_name, svc);
  } else {
    snprintf(gk, len, "alertname=%s", a->name);
  }
  a->group_key = gk;
  return 0;
}

/* ---- the batch ---- */

static int start(
    const char *body, size_t len, vg_alert_batch_t *out, int *status, char *err, size_t errlen)
{
  memset(out, 0, sizeof(*out));
  *status = 400;
  dec_priv_t *d = calloc(1, sizeof(*d));
  if (d == NULL) {
    snprintf(err, errlen, "out of memory");
    *status = 503;
    return -1;
  }
  out->priv = d;
  json_error_t je;
  d->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
  if (d->root == NULL) {
    snprintf(err, errlen, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
    return -1;
  }
  return 0;
}

static int size_batch(vg_alert_batch_t *out, size_t n, int *status, char *err, size_t errlen)
{
  out->total = n;
  if (n > VG_BATCH_MAX_ALERTS) {
    snprintf(err, errlen, "%zu alerts in one request (limit %d): split the batch", n,
             VG_BATCH_MAX_ALERTS);
    *status = 413;
    return -1;
  }
  out->alerts = calloc(n + 1, sizeof(*out->alerts));
  out->index = calloc(n + 1, sizeof(*out->index));
  out->errors = calloc(VG_BATCH_MAX_ERRORS, sizeof(*out->errors));
  if (out->alerts == NULL || out->index == NULL || out->errors == NULL) {
    snprintf(err, errlen, "out of memory");
    *status = 503;
    return -1;
  }
  return 0;
}

static void accept_alert(vg_alert_batch_t *b, const vg_store_alert_t *a, size_t i)
{
  b->index[b->n] = i;
  b->alerts[b->n++] = *a;
}

/* One element of the v2 array or of the webhook's alerts. */
static int decode_one(dec_priv_t *d,
                      json_t *obj,
                      bool webhook,
                      const vg_alertdec_opts_t *o,
                      vg_store_alert_t *a,
                      char *err,
                      size_t errlen)
{
  memset(a, 0, sizeof(*a));
  if (!json_is_object(obj)) {
    snprintf(err, errlen, "must be an object");
    return -1;
  }
  json_t *labels = json_object_get(obj, "labels");
  if (labels == NULL || json_is_null(labels)) {
    snprintf(err, errlen, "labels: required");
    return -1;
  }
  vg_label_t *l, *an;
  size_t nl, nan;
  if (read_map(d, labels, "labels", VG_ALERT_MAX_VALUE, 0, &l, &nl, err, errlen) != 0 ||
      read_map(d, json_object_get(obj, "annotations"), "annotations", VG_ALERT_MAX_ANNOTATION, 0,
               &an, &nan, err, errlen) != 0) {
    return -1;
  }
  if (nl == 0) {
    snprintf(err, errlen, "labels: at least one label with a value is required");
    return -1;
  }
  a->labels = l;
  a->nlabels = nl;
  a->annotations = an;
  a->nannotations = nan;
  if (read_time(obj, "startsAt", &a->starts_at, err, errlen) != 0 ||
      read_time(obj, "endsAt", &a->ends_at, err, errlen) != 0) {
    return -1;
  }
  json_t *gen = json_object_get(obj, "generatorURL");
  if (gen != NULL && !json_is_null(gen) && !json_is_string(gen)) {
    snprintf(err, errlen, "generatorURL: must be a string");
    return -1;
  }
  a->generator_url = opt_string(obj, "generatorURL");
  if (webhook) {
    const char *st = opt_string(obj, "status");
    if (st != NULL && strcmp(st, "firing") != 0 && strcmp(st, "resolved") != 0) {
      snprintf(err, errlen, "status: must be \"firing\" or \"resolved\"");
      return -1;
    }
    if (st == NULL) {
      st = a->ends_at != 0 && a->ends_at <= o->now ? "resolved" : "firing";
    }
    a->status = st;
    if (a->starts_at == 0) {
      a->starts_at = o->now;
    }
    if (strcmp(st, "firing") == 0) {
      a->ends_at = 0; /* Alertmanager sends Go's zero time for firing alerts */
    } else if (a->ends_at == 0) {
      a->ends_at = o->now;
    }
  } else {
    /* Alertmanager's own defaults for POST /api/v2/alerts */
    if (a->starts_at == 0) {
      a->starts_at = a->ends_at != 0 ? a->ends_at : o->now;
    }
    if (a->ends_at == 0) {
      a->ends_at = o->now + o->resolve_timeout;
    }
    if (a->ends_at < a->starts_at) {
      snprintf(err, errlen, "endsAt is before startsAt");
      return -1;
    }
    a->status = a->ends_at <= o->now ? "resolved" : "firing";
  }
  a->source = webhook ? "alertmanager" : "api-v2";
  return finish_alert(d, a, err, errlen);
}

static int decode_array(vg_alert_batch_t *out,
                        json_t *arr,
                        bool webhook,
                        const vg_alertdec_opts_t *o,
                        int *status,
                        char *err,
                        size_t errlen)
{
  dec_priv_t *d = out->priv;
  size_t n = json_array_size(arr);
  if (size_batch(out, n, status, err, errlen) != 0) {
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    vg_store_alert_t a;
    char why[400];
    if (decode_one(d, json_array_get(arr, i), webhook, o, &a, why, sizeof(why)) != 0) {
      if (strcmp(why, "out of memory") == 0) {
        snprintf(err, errlen, "out of memory");
        *status = 503;
        return -1;
      }
      add_error(out, "alert %zu: %s", i, why);
      continue;
    }
    accept_alert(out, &a, i);
  }
  return 0;
}

int vg_alertdec_v2(const char *body,
                   size_t len,
                   const vg_alertdec_opts_t *o,
                   vg_alert_batch_t *out,
                   int *status,
                   char *err,
                   size_t errlen)
{
  if (start(body, len, out, status, err, errlen) != 0) {
    return -1;
  }
  json_t *root = ((dec_priv_t *)out->priv)->root;
  if (!json_is_array(root)) {
    snprintf(err, errlen, "the body must be a JSON array of alerts");
    return -1;
  }
  return decode_array(out, root, false, o, status, err, errlen);
}

int vg_alertdec_webhook(const char *body,
                        size_t len,
                        const vg_alertdec_opts_t *o,
                        vg_alert_batch_t *out,
                        int *status,
                        char *err,
                        size_t errlen)
{
  if (start(body, len, out, status, err, errlen) != 0) {
    return -1;
  }
  json_t *root = ((dec_priv_t *)out->priv)->root;
  json_t *alerts = json_is_object(root) ? json_object_get(root, "alerts") : NULL;
  if (!json_is_array(alerts)) {
    snprintf(err, errlen,
             "not an Alertmanager webhook message: expected an object with an \"alerts\" array");
    return -1;
  }
  json_t *version = json_object_get(root, "version");
  if (version != NULL &&
      !(json_is_string(version) && strcmp(json_string_value(version), "4") == 0)) {
    snprintf(err, errlen, "unsupported webhook version (vigil reads version \"4\")");
    return -1;
  }
  out->group_key = opt_string(root, "groupKey");
  return decode_array(out, alerts, true, o, status, err, errlen);
}

int vg_alertdec_event(const char *body,
                      size_t len,
                      const vg_alertdec_opts_t *o,
                      vg_alert_batch_t *out,
                      int *status,
                      char *err,
                      size_t errlen)
{
  if (start(body, len, out, status, err, errlen) != 0) {
    return -1;
  }
  dec_priv_t *d = out->priv;
  json_t *e = d->root;
  if (!json_is_object(e)) {
    snprintf(err, errlen, "the body must be a JSON object (an event)");
    return -1;
  }
  if (size_batch(out, 1, status, err, errlen) != 0) {
    return -1;
  }
  char why[400];
  vg_store_alert_t a = { 0 };
  const char *name = opt_string(e, "name");
  const char *severity = opt_string(e, "severity");
  const char *st = opt_string(e, "status");
  vg_label_t *l = NULL, *an = NULL;
  size_t nl = 0, nan = 0;
  if (name == NULL || *name == '\0') {
    snprintf(why, sizeof(why), "name: a non-empty string is required");
  } else if (json_object_get(e, "severity") != NULL && severity == NULL) {
    snprintf(why, sizeof(why), "severity: must be a string");
  } else if (st != NULL && strcmp(st, "firing") != 0 && strcmp(st, "resolved") != 0) {
    snprintf(why, sizeof(why), "status: must be \"firing\" or \"resolved\"");
  } else if (read_map(d, json_object_get(e, "labels"), "labels", VG_ALERT_MAX_VALUE, 2, &l, &nl,
                      why, sizeof(why)) != 0 ||
             read_map(d, json_object_get(e, "annotations"), "annotations", VG_ALERT_MAX_ANNOTATION,
                      0, &an, &nan, why, sizeof(why)) != 0 ||
             read_time(e, "timestamp", &a.starts_at, why, sizeof(why)) != 0 ||
             read_time(e, "endsAt", &a.ends_at, why, sizeof(why)) != 0) {
    /* why says it */
  } else {
    /* the event's name and severity are labels too, unless the labels say otherwise */
    if (label_value(l, nl, "alertname") == NULL) {
      l[nl++] = (vg_label_t){ "alertname", 9, name, strlen(name) };
    }
    if (severity != NULL && *severity != '\0' && label_value(l, nl, "severity") == NULL) {
      l[nl++] = (vg_label_t){ "severity", 8, severity, strlen(severity) };
    }
    qsort(l, nl, sizeof(*l), cmp_labels);
    a.labels = l;
    a.nlabels = nl;
    a.annotations = an;
    a.nannotations = nan;
    a.status = st != NULL ? st : "firing";
    if (a.starts_at == 0) {
      a.starts_at = o->now;
    }
    if (strcmp(a.status, "resolved") == 0 && a.ends_at == 0) {
      a.ends_at = o->now;
    } else if (strcmp(a.status, "firing") == 0) {
      a.ends_at = 0;
    }
    const char *src = opt_string(e, "source");
    a.source = src != NULL && *src != '\0' ? src : "event";
    a.generator_url = opt_string(e, "url");
    if (finish_alert(d, &a, why, sizeof(why)) == 0) {
      accept_alert(out, &a, 0);
      return 0;
    }
  }
  if (strcmp(why, "out of memory") == 0) {
    snprintf(err, errlen, "out of memory");
    *status = 503;
    return -1;
  }
  add_error(out, "event: %s", why);
  return 0;
}
