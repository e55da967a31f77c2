/* Alert intake and vigil's HTTP API. See intake.h and docs/intake.md.
 *
 * A write is answered only from the store's commit callback: 2xx means committed (G1). New and
 * changed alerts then go to the policies, after the answer is on its way, so a slow policy
 * never slows intake (the policies bound their own queues). The store keeps each of them
 * undecided until told, about once a second, that the runs it started have ended; what a crash
 * left undecided is dispatched again at the next start (vg_intake_replay). */
#include "core/intake.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/escalator.h"
#include "core/executor.h"
#include "core/log.h"
#include "core/policy.h"
#include "engine/alertdec.h"
#include "engine/exec.h"
#include "engine/ledger.h"
#include "engine/logan.h"
#include "engine/memory.h"
#include "engine/source.h"

/* ---- routes and their counters ---- */

typedef enum {
  R_ALERTS_V2,
  R_WEBHOOK,
  R_EVENTS,
  R_ALERTS,
  R_INCIDENTS,
  R_INCIDENT,
  R_INCIDENT_ACTION,
  R_ACTIONS,
  R_ACTION,
  R_ACTION_DECIDE,
  R_KILL_SWITCH,
  R_HEALINGS,
  R_HEALING,
  R_INCIDENT_REPORT,
  R_KB_FIXES,
  R_LOGS,
  R_HEALTHZ,
  R_READYZ,
  R_RELOAD,
  R_METRICS,
  R_OTHER,
  R_COUNT
} route_t;

static const char *const ROUTE_NAMES[R_COUNT] = {
  "alerts_v2",       "webhook",         "events",   "alerts",        "incidents",   "incident",
  "incident_action", "actions",         "action",   "action_decide", "kill_switch", "healings",
  "healing",         "incident_report", "kb_fixes", "logs",          "healthz",     "readyz",
  "reload",          "metrics",         "other",
};

enum { OUT_NEW, OUT_CHANGED, OUT_DUPLICATE, OUT_INVALID, OUT_COUNT };
static const char *const OUTCOME_NAMES[OUT_COUNT] = { "new", "changed", "duplicate", "invalid" };

#define FLUSH_EVERY_MS 1000  /* how long a decision waits before the store hears of it */
#define DECISIONS_KEEP 65536 /* entries kept allocated between flushes; a burst's go */

/* A decision taken and not yet flushed: the alert and the change it was about. */
typedef struct {
  char fp[17];
  int64_t change;
} decision_t;

typedef struct {
  decision_t *v;
  size_t n, cap;
} decisions_t;

#define LATENCY_BUCKETS 12
static const double LATENCY_BOUNDS[LATENCY_BUCKETS - 1] = {
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
};

struct vg_intake {
  vg_runtime_t *rt;
  vg_store_t *store;
  vg_httpd_t *httpd;
  char *token;
  bool auth_reads;
  double resolve_timeout;

  uint64_t requests[R_COUNT][6]; /* by status class */
  uint64_t alerts[3][OUT_COUNT]; /* [route: v2, webhook, events][outcome] */
  uint64_t log_lines[2];         /* POST /api/v1/logs: accepted, rejected */
  uint64_t latency[LATENCY_BUCKETS];
  double latency_sum;
  uint64_t store_busy, store_failures, dispatched, expired, decide_failures;
  decisions_t decided; /* dispatched (or decided against) since the last flush */
  uv_timer_t flush_timer;
  int inflight;      /* requests not answered yet and flushes not committed: `in` outlives them */
  bool stopping;     /* freed when the last one is answered */
  bool timer_closed; /* and once the timer is closed */
};

typedef struct {
  vg_intake_t *in;
  vg_http_exchange_t *x;
  route_t route;
  uint64_t started_ns;
  vg_alert_batch_t batch;
  vg_matchers_t *matchers;
} req_t;

static req_t *req_new(vg_intake_t *in, vg_http_exchange_t *x, route_t route)
{
  req_t *r = calloc(1, sizeof(*r));
  if (r != NULL) {
    in->inflight++;
    r->in = in;
    r->x = x;
    r->route = route;
    r->started_ns = vg_clock_mono_ns();
  }
  return r;
}

static void intake_free(vg_intake_t *in)
{
  if (in->token != NULL) {
    memset(in->token, 0, strlen(in->token)); /* a secret: do not leave it in freed memory */
  }
  free(in->token);
  free(in->decided.v);
  free(in);
}

/* One thing `in` waited for is over: frees it when stopped and nothing else is left. */
static void intake_release(vg_intake_t *in)
{
  if (--in->inflight == 0 && in->stopping && in->timer_closed) {
    intake_free(in);
  }
}

static void req_free(req_t *r)
{
  vg_intake_t *in = r->in;
  vg_alert_batch_free(&r->batch);
  labelmatch_free(r->matchers);
  free(r);
  intake_release(in);
}

/* Every answer goes through here: it is counted, timed, sent. */
static void reply(
    req_t *r, int status, const char *type, const char *body, size_t len, const char *retry_after)
{
  vg_intake_t *in = r->in;
  in->requests[r->route][status / 100 % 6]++;
  double secs = (double)(vg_clock_mono_ns() - r->started_ns) / 1e9;
  int b = 0;
  while (b < LATENCY_BUCKETS - 1 && secs > LATENCY_BOUNDS[b]) {
    b++;
  }
  in->latency[b]++;
  in->latency_sum += secs;
  vg_http_header_t h[2];
  size_t nh = 0;
  h[nh++] = (vg_http_header_t){ "content-type", type };
  if (retry_after != NULL) {
    h[nh++] = (vg_http_header_t){ "retry-after", retry_after };
  }
  vg_http_respond(r->x, status, h, nh, body, len);
  r->x = NULL;
}

static void reply_json(req_t *r, int status, json_t *doc, const char *retry_after)
{
  char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (text == NULL) {
    static const char oom[] = "{\"status\":\"error\",\"error\":\"out of memory\"}";
    reply(r, 503, "application/json", oom, sizeof(oom) - 1, "5");
    return;
  }
  reply(r, status, "application/json", text, strlen(text), retry_after);
  free(text);
}

static void reply_error(req_t *r, int status, const char *message)
{
  reply_json(r, status, json_pack("{s:s, s:s}", "status", "error", "error", message),
             status == 503 ? "5" : NULL);
}

/* ---- request helpers ---- */

/* Constant-time comparison of the Authorization header with "Bearer <token>". */
static bool authorized(const vg_intake_t *in, const vg_http_request_t *req)
{
  const char *h = vg_http_header(req, "authorization");
  if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) {
    return false;
  }
  const char *given = h + 7;
  size_t glen = strlen(given), tlen = strlen(in->token);
  unsigned char diff = (unsigned char)(glen != tlen);
  for (size_t i = 0; i < tlen; i++) {
    diff |= (unsigned char)(in->token[i] ^ (i < glen ? given[i] : 0));
  }
  return diff == 0;
}

static bool is_json(const vg_http_request_t *req)
{
  const char *t = vg_http_header(req, "content-type");
  return t != NULL && strncasecmp(t, "application/json", 16) == 0 &&
         (t[16] == '\0' || t[16] == ';' || t[16] == ' ');
}

static int hexval(char c)
{
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* Calls fn(name, value) for each `name=value` of a query string, percent-decoded. Returns -1
 * when one is malformed (or fn says so). */
static int each_param(const char *q,
                      int (*fn)(void *ud, const char *name, const char *value),
                      void *ud)
{
  while (*q != '\0') {
    const char *end = strchr(q, '&');
    size_t len = end != NULL ? (size_t)(end - q) : strlen(q);
    char *pair = malloc(len + 1);
    if (pair == NULL) {
      return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
      char c = q[i];
      if (c == '+') {
        c = ' ';
      } else if (c == '%') {
        int hi = i + 2 < len ? hexval(q[i + 1]) : -1;
        int lo = i + 2 < len ? hexval(q[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
          free(pair);
          return -1;
        }
        c = (char)(hi * 16 + lo);
        i += 2;
      }
      pair[k++] = c;
    }
    pair[k] = '\0';
    char *eq = strchr(pair, '=');
    int rc = 0;
    if (k > 0) {
      if (eq != NULL) {
        *eq = '\0';
      }
      rc = fn(ud, pair, eq != NULL ? eq + 1 : "");
    }
    free(pair);
    if (rc != 0) {
      return -1;
    }
    q += len + (end != NULL ? 1 : 0);
  }
  return 0;
}

static bool parse_size(const char *s, size_t max, size_t *out)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (*s == '\0' || *end != '\0' || errno != 0 || v > max || *s == '-') {
    return false;
  }
  *out = (size_t)v;
  return true;
}

/* ---- writes: alerts in ---- */

/* ---- decisions: what the store is told was dispatched ---- */

/* Appends one; false (and the alert stays undecided) when it cannot. The hot path: a copy of
 * 32 bytes, and a realloc now and then. */
static bool decisions_add(decisions_t *l, const char *fp, int64_t change)
{
  size_t len = strlen(fp);
  if (change <= 0 || len >= sizeof(l->v[0].fp)) {
    return false; /* nothing to decide, or not a fingerprint vigil computed */
  }
  if (l->n == l->cap) {
    size_t cap = l->cap > 0 ? l->cap * 2 : 1024;
    decision_t *v = cap <= SIZE_MAX / sizeof(*v) ? realloc(l->v, cap * sizeof(*v)) : NULL;
    if (v == NULL) {
      return false; /* out of memory: a crash now would replay it, nothing worse */
    }
    l->v = v;
    l->cap = cap;
  }
  memcpy(l->v[l->n].fp, fp, len + 1);
  l->v[l->n].change = change;
  l->n++;
  return true;
}

/* Tells the store about every decision of the list, in one writer call, and empties it.
 * Returns what vg_store_decided returned (0: `done` will run). */
static int decisions_flush(decisions_t *l, vg_store_t *store, vg_store_done_fn done, void *ud)
{
  vg_store_decision_t *d = malloc(l->n * sizeof(*d));
  if (d == NULL) {
    return -ENOMEM; /* kept for the next flush */
  }
  for (size_t i = 0; i < l->n; i++) {
    d[i] = (vg_store_decision_t){ l->v[i].fp, l->v[i].change };
  }
  int rc = vg_store_decided(store, d, l->n, done, ud);
  free(d);
  if (rc != -ENOMEM) {
    l->n = 0; /* taken, or refused for good (the store is closing): replayed at the next start */
  }
  if (l->n == 0 && l->cap > DECISIONS_KEEP) {
    free(l->v);
    l->v = NULL;
    l->cap = 0;
  }
  return rc;
}

static void decide_failed(vg_intake_t *in, const char *err)
{
  in->decide_failures++;
  if ((in->decide_failures & (in->decide_failures - 1)) == 0) { /* 1, 2, 4...: never a flood */
    char n[24];
    snprintf(n, sizeof(n), "%llu", (unsigned long long)in->decide_failures);
    vg_log(VG_LOG_WARN, "cannot mark alerts decided: a restart will replay them", "error",
           err != NULL ? err : "?", "failures_total", n, NULL);
  }
}

static void flushed(void *ud, int status, const char *err)
{
  vg_intake_t *in = ud;
  if (status < 0) {
    decide_failed(in, err);
  }
  intake_release(in);
}

static void flush(vg_intake_t *in)
{
  if (in->decided.n == 0) {
    return;
  }
  int rc = decisions_flush(&in->decided, in->store, flushed, in);
  if (rc == 0) {
    in->inflight++; /* until `flushed` */
  } else {
    decide_failed(in, rc == -EBUSY ? "the store is closing" : "out of memory");
  }
}

static void on_flush_timer(uv_timer_t *t)
{
  flush(t->data);
}

/* The alert was dispatched (or decided against): the store hears of it within a second. */
static void remember(vg_intake_t *in, const char *fp, int64_t change)
{
  if (in->stopping || !decisions_add(&in->decided, fp, change)) {
    return; /* after the last flush: left undecided, replayed at the next start */
  }
  if (!uv_is_active((uv_handle_t *)&in->flush_timer)) {
    uv_timer_start(&in->flush_timer, on_flush_timer, FLUSH_EVERY_MS, 0);
  }
}

int vg_intake_dispatch(vg_runtime_t *rt,
                       const vg_store_alert_t *a,
                       int64_t incident_id,
                       vg_dispatch_done_fn done,
                       void *ud)
{
  vg_policies_t *ps = rt->policies;
  if (rt->stopping) {
    return -1; /* the policies are going: the next start replays it */
  }
  if (ps == NULL) {
    return 0;
  }
  vg_executor_t *ex = rt->executor;
  if (ex != NULL && strcmp(a->status, "firing") == 0) {
    vg_executor_note_alert(ex, a->labels, a->nlabels); /* storm accounting */
  }
  if (ex != NULL && vg_executor_suppressed(ex, a->labels, a->nlabels)) {
    return 0; /* stored, counted, not acted on (a local suppression is in force) */
  }
  vg_alert_t alert = {
    .labels = a->labels,
    .nlabels = a->nlabels,
    .annotations = a->annotations,
    .nannotations = a->nannotations,
    .status = a->status,
    .starts_at = a->starts_at,
    .ends_at = a->ends_at,
    .fingerprint = a->fingerprint,
    .generator_url = a->generator_url,
    .incident_id = incident_id,
  };
  vg_policies_dispatch(ps, &alert, done, ud);
  return 1;
}

/* An alert handed to the policies, until the runs it started have ended. */
typedef struct {
  vg_intake_t *in;
  decision_t d;
} dispatched_t;

/* Decided means every run the alert started ended by itself: a crash (or a stop) before then
 * leaves it undecided, and the next start hands it to the policies again (G1 up to them). */
static void on_runs_ended(void *ud, bool complete)
{
  dispatched_t *x = ud;
  if (complete) {
    remember(x->in, x->d.fp, x->d.change);
  }
  intake_release(x->in);
  free(x);
}

static void dispatch(vg_intake_t *in, const vg_store_alert_t *a, const vg_store_result_t *res)
{
  dispatched_t *x = malloc(sizeof(*x));
  size_t len = strlen(a->fingerprint);
  if (x != NULL && len < sizeof(x->d.fp)) {
    x->in = in;
    memcpy(x->d.fp, a->fingerprint, len + 1);
    x->d.change = res->change;
    in->inflight++; /* until on_runs_ended */
  } else {
    free(x);
    x = NULL;
  }
  int rc = vg_intake_dispatch(in->rt, a, res->incident_id, x ? on_runs_ended : NULL, x);
  in->dispatched += rc > 0;
  if (rc == 0 || (rc > 0 && x == NULL)) {
    remember(in, a->fingerprint, res->change); /* decided against, or no memory to wait */
  }
  if (rc <= 0 && x != NULL) {
    in->inflight--;
    free(x);
  }
}

/* Alerts the store resolved because their endsAt passed unrefreshed: the policies hear of it
 * as of any resolution. */
static void on_expired(void *ud,
                       const vg_store_alert_t *alerts,
                       const vg_store_result_t *results,
                       size_t n)
{
  vg_intake_t *in = ud;
  for (size_t i = 0; i < n; i++) {
    if (results[i].outcome != VG_STORE_UNCHANGED) {
      in->expired++;
      dispatch(in, &alerts[i], &results[i]);
    }
  }
}

static int route_slot(route_t route)
{
  return route == R_ALERTS_V2 ? 0 : route == R_WEBHOOK ? 1 : 2;
}

static void committed(
    void *ud, int status, const char *err, const vg_store_result_t *results, size_t n)
{
  req_t *r = ud;
  vg_intake_t *in = r->in;
  if (status < 0) {
    in->store_failures++;
    char msg[300];
    snprintf(msg, sizeof(msg), "the store cannot commit (%s): retry later", err ? err : "?");
    vg_log(VG_LOG_ERROR, "alerts not stored", "route", ROUTE_NAMES[r->route], "error",
           err ? err : "?", NULL);
    reply_error(r, 503, msg);
    req_free(r);
    return;
  }
  uint64_t *counts = in->alerts[route_slot(r->route)];
  for (size_t i = 0; i < n; i++) {
    counts[results[i].outcome == VG_STORE_NEW       ? OUT_NEW
           : results[i].outcome == VG_STORE_CHANGED ? OUT_CHANGED
                                                    : OUT_DUPLICATE]++;
  }
  vg_alert_batch_t *b = &r->batch;
  if (b->rejected == 0) {
    reply_json(r, 200, json_pack("{s:s, s:I}", "status", "success", "accepted", (json_int_t)n),
               NULL);
  } else {
    json_t *invalid = json_array();
    for (size_t i = 0; i < b->nerrors; i++) {
      json_array_append_new(invalid, json_string(b->errors[i]));
    }
    char msg[160];
    snprintf(msg, sizeof(msg), "%zu of %zu alerts are invalid; the %zu valid ones were stored",
             b->rejected, b->total, n);
    reply_json(r, 400,
               json_pack("{s:s, s:s, s:I, s:o}", "status", "error", "error", msg, "accepted",
                         (json_int_t)n, "invalid", invalid),
               NULL);
  }
  for (size_t i = 0; i < n; i++) {
    if (results[i].outcome != VG_STORE_UNCHANGED) {
      dispatch(in, &b->alerts[i], &results[i]);
    }
  }
  req_free(r);
}

typedef int (*decode_fn)(
    const char *, size_t, const vg_alertdec_opts_t *, vg_alert_batch_t *, int *, char *, size_t);

static void take_alerts(req_t *r, const vg_http_request_t *req, decode_fn decode)
{
  vg_intake_t *in = r->in;
  vg_alertdec_opts_t opts = { .now = vg_clock_now(in->rt), .resolve_timeout = in->resolve_timeout };
  int status = 400;
  char err[512];
  if (decode(req->body, req->body_len, &opts, &r->batch, &status, err, sizeof(err)) != 0) {
    reply_error(r, status, err);
    req_free(r);
    return;
  }
  vg_alert_batch_t *b = &r->batch;
  in->alerts[route_slot(r->route)][OUT_INVALID] += b->rejected;
  if (b->n == 0) {
    json_t *invalid = json_array();
    for (size_t i = 0; i < b->nerrors; i++) {
      json_array_append_new(invalid, json_string(b->errors[i]));
    }
    reply_json(r, 400,
               json_pack("{s:s, s:s, s:i, s:o}", "status", "error", "error",
                         b->total == 0 ? "no alerts in the request" : "no valid alert", "accepted",
                         0, "invalid", invalid),
               NULL);
    req_free(r);
    return;
  }
  int rc = vg_store_submit(in->store, b->alerts, b->n, committed, r);
  if (rc != 0) {
    in->store_busy++;
    reply_error(r, 503,
                rc == -EBUSY ? "too many alerts are waiting to be stored: retry later"
                             : "the store cannot take the alerts now: retry later");
    req_free(r);
  }
}

/* ---- reads and incident actions ---- */

static void store_answered(void *ud, int status, const char *json, size_t len)
{
  req_t *r = ud;
  if (status == 0) {
    reply(r, 200, "application/json", json, len, NULL);
  } else {
    int code = status == -ENOENT ? 404 : status == -EINVAL ? 409 : 503;
    reply_error(r, code, json != NULL ? json : "the store failed");
  }
  req_free(r);
}

typedef struct {
  req_t *r;
  vg_store_alert_query_t *aq;
  vg_store_incident_query_t *iq;
  char *status, *severity;
  char err[300];
} params_t;

static int alert_param(void *ud, const char *name, const char *value)
{
  params_t *p = ud;
  if (strcmp(name, "status") == 0) {
    if (strcmp(value, "firing") != 0 && strcmp(value, "resolved") != 0) {
      snprintf(p->err, sizeof(p->err), "status must be firing or resolved");
      return -1;
    }
    free(p->status);
    p->status = strdup(value);
    p->aq->status = p->status;
  } else if (strcmp(name, "filter") == 0) {
    char why[200];
    if (p->r->matchers == NULL) {
      p->r->matchers = labelmatch_new();
    }
    if (p->r->matchers == NULL ||
        labelmatch_parse(p->r->matchers, value, strlen(value), why, sizeof(why)) != 0) {
      snprintf(p->err, sizeof(p->err), "filter: %s", why);
      return -1;
    }
    p->aq->matchers = p->r->matchers;
  } else if (strcmp(name, "limit") == 0) {
    if (!parse_size(value, 100000, &p->aq->limit)) {
      snprintf(p->err, sizeof(p->err), "limit must be a number up to 100000");
      return -1;
    }
  } else {
    snprintf(p->err, sizeof(p->err), "unknown parameter '%.40s' (status, filter, limit)", name);
    return -1;
  }
  return 0;
}

static int incident_param(void *ud, const char *name, const char *value)
{
  params_t *p = ud;
  static const char *const states[] = { "open",     "investigating", "identified", "monitoring",
                                        "resolved", "closed",        "active",     NULL };
  if (strcmp(name, "status") == 0) {
    bool ok = false;
    for (int i = 0; states[i] != NULL; i++) {
      ok = ok || strcmp(value, states[i]) == 0;
    }
    if (!ok) {
      snprintf(p->err, sizeof(p->err),
               "status must be one of open, investigating, identified, monitoring, resolved, "
               "closed, active");
      return -1;
    }
    free(p->status);
    p->status = strdup(value);
    p->iq->status = p->status;
  } else if (strcmp(name, "severity") == 0) {
    free(p->severity);
    p->severity = strdup(vg_severity_of(value));
    p->iq->severity = p->severity;
  } else if (strcmp(name, "limit") == 0) {
    if (!parse_size(value, 1000, &p->iq->limit)) {
      snprintf(p->err, sizeof(p->err), "limit must be a number up to 1000");
      return -1;
    }
  } else if (strcmp(name, "offset") == 0) {
    if (!parse_size(value, (size_t)1 << 40, &p->iq->offset)) {
      snprintf(p->err, sizeof(p->err), "offset must be a number");
      return -1;
    }
  } else {
    snprintf(p->err, sizeof(p->err), "unknown parameter '%.40s' (status, severity, limit, offset)",
             name);
    return -1;
  }
  return 0;
}

static void get_alerts(req_t *r, const vg_http_request_t *req)
{
  vg_store_alert_query_t q = { 0 };
  params_t p = { .r = r, .aq = &q };
  if (each_param(req->query, alert_param, &p) != 0) {
    reply_error(r, 400, p.err[0] ? p.err : "malformed query string");
    free(p.status);
    req_free(r);
    return;
  }
  int rc = vg_store_alerts(r->in->store, &q, store_answered, r);
  free(p.status); /* the store copied what it keeps */
  if (rc != 0) {
    reply_error(r, 503, "the store cannot answer now");
    req_free(r);
  }
}

static void get_incidents(req_t *r, const vg_http_request_t *req)
{
  vg_store_incident_query_t q = { 0 };
  params_t p = { .r = r, .iq = &q };
  if (each_param(req->query, incident_param, &p) != 0) {
    reply_error(r, 400, p.err[0] ? p.err : "malformed query string");
  } else if (vg_store_incidents(r->in->store, &q, store_answered, r) == 0) {
    r = NULL;
  } else {
    reply_error(r, 503, "the store cannot answer now");
  }
  free(p.status);
  free(p.severity);
  if (r != NULL) {
    req_free(r);
  }
}

/* POST /api/v1/incidents/{id}/{ack,resolve,close} with an optional body {"who","comment"}. */
static void incident_action(req_t *r, const vg_http_request_t *req, int64_t id, const char *action)
{
  const char *who = "api", *comment = NULL;
  json_t *doc = NULL;
  if (req->body_len > 0) {
    json_error_t je;
    doc = is_json(req) ? json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je) : NULL;
    json_t *w = json_object_get(doc, "who"), *c = json_object_get(doc, "comment");
    if (!is_json(req)) {
      reply_error(r, 415, "send the body as Content-Type: application/json");
    } else if (!json_is_object(doc)) {
      reply_error(r, 400, "the body must be a JSON object {\"who\": ..., \"comment\": ...}");
    } else if ((w != NULL && (!json_is_string(w) || json_string_length(w) == 0 ||
                              json_string_length(w) > 256)) ||
               (c != NULL && (!json_is_string(c) || json_string_length(c) > 4096))) {
      reply_error(r, 400, "who must be a string of 1 to 256 bytes, comment at most 4096");
    } else {
      who = w != NULL ? json_string_value(w) : who;
      comment = c != NULL ? json_string_value(c) : NULL;
      goto run;
    }
    json_decref(doc);
    req_free(r);
    return;
  }
run:
  if (vg_store_incident_action(r->in->store, id, action, who, comment, store_answered, r) != 0) {
    reply_error(r, 503, "the store cannot take it now");
    req_free(r);
  }
  json_decref(doc); /* the store copied who and comment */
}

/* ---- the action ledger: list, one, decisions, the kill switch ---- */

typedef struct {
  vg_ledger_query_t *q;
  char *state, *policy;
  char err[200];
} action_params_t;

static int action_param(void *ud, const char *name, const char *value)
{
  action_params_t *p = ud;
  static const char *const states[] = { "observed", "dry-run", "refused", "awaiting_approval",
                                        "approved", "denied",  "expired", "claimed",
                                        "done",     "failed",  "unknown", NULL };
  if (strcmp(name, "state") == 0) {
    bool ok = false;
    for (int i = 0; states[i] != NULL; i++) {
      ok = ok || strcmp(value, states[i]) == 0;
    }
    if (!ok) {
      snprintf(p->err, sizeof p->err,
               "state must be one of observed, dry-run, refused, awaiting_approval, approved,"
               " denied, expired, claimed, done, failed, unknown");
      return -1;
    }
    free(p->state);
    p->q->state = p->state = strdup(value);
  } else if (strcmp(name, "policy") == 0) {
    free(p->policy);
    p->q->policy = p->policy = strdup(value);
  } else if (strcmp(name, "incident") == 0 || strcmp(name, "before") == 0) {
    size_t v;
    if (!parse_size(value, (size_t)1 << 53, &v) || v == 0) {
      snprintf(p->err, sizeof p->err, "%s must be a positive id", name);
      return -1;
    }
    *(strcmp(name, "incident") == 0 ? &p->q->incident_id : &p->q->before_id) = (int64_t)v;
  } else if (strcmp(name, "limit") == 0) {
    if (!parse_size(value, 1000, &p->q->limit)) {
      snprintf(p->err, sizeof p->err, "limit must be a number up to 1000");
      return -1;
    }
  } else {
    snprintf(p->err, sizeof p->err,
             "unknown parameter '%.40s' (state, policy, incident, before, limit)", name);
    return -1;
  }
  return 0;
}

static vg_executor_t *executor_of(req_t *r)
{
  vg_executor_t *ex = vg_runtime_executor(r->in->rt);
  if (ex == NULL || vg_executor_store(ex) == NULL) {
    reply_error(r, 503, "the executor is not available");
    req_free(r);
    return NULL;
  }
  return ex;
}

static void get_actions(req_t *r, const vg_http_request_t *req)
{
  vg_executor_t *ex = executor_of(r);
  if (ex == NULL) {
    return;
  }
  vg_ledger_query_t q = { 0 };
  action_params_t p = { .q = &q };
  if (each_param(req->query, action_param, &p) != 0) {
    reply_error(r, 400, p.err[0] ? p.err : "malformed query string");
    req_free(r);
  } else if (vg_ledger_list(vg_executor_store(ex), &q, store_answered, r) != 0) {
    reply_error(r, 503, "the store cannot answer now");
    req_free(r);
  }
  free(p.state);
  free(p.policy);
}

static void get_action(req_t *r, int64_t id)
{
  vg_executor_t *ex = executor_of(r);
  if (ex != NULL && vg_ledger_get(vg_executor_store(ex), id, store_answered, r) != 0) {
    reply_error(r, 503, "the store cannot answer now");
    req_free(r);
  }
}

/* Reads {"who": ..., "comment": ..., <extra>: ...} into the out-parameters; answers 4xx and
 * returns NULL when the body is wrong. The strings live as long as the returned document. */
static json_t *operator_body(req_t *r,
                             const vg_http_request_t *req,
                             const char **who,
                             const char **comment,
                             const char *extra,
                             json_t **extra_value)
{
  json_error_t je;
  json_t *doc = req->body_len == 0 ? json_object()
                : is_json(req) ? json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je)
                               : NULL;
  json_t *w = json_object_get(doc, "who"), *c = json_object_get(doc, "comment");
  if (req->body_len > 0 && !is_json(req)) {
    reply_error(r, 415, "send the body as Content-Type: application/json");
  } else if (!json_is_object(doc)) {
    reply_error(r, 400, "the body must be a JSON object {\"who\": ..., \"comment\": ...}");
  } else if ((w != NULL &&
              (!json_is_string(w) || json_string_length(w) == 0 || json_string_length(w) > 256)) ||
             (c != NULL && (!json_is_string(c) || json_string_length(c) > 4096))) {
    reply_error(r, 400, "who must be a string of 1 to 256 bytes, comment at most 4096");
  } else {
    *who = w != NULL ? json_string_value(w) : "api";
    *comment = c != NULL ? json_string_value(c) : NULL;
    if (extra != NULL) {
      *extra_value = json_object_get(doc, extra);
    }
    return doc;
  }
  json_decref(doc);
  req_free(r);
  return NULL;
}

static void operator_answered(void *ud, int status, const char *msg)
{
  req_t *r = ud;
  if (status == 0) {
    json_t *doc = json_pack("{s:b,s:s}", "ok", 1, "message", msg != NULL ? msg : "");
    reply_json(r, 200, doc, NULL);
  } else {
    reply_error(r,
                status == -ENOENT   ? 404
                : status == -EINVAL ? 409
                                    : 503,
                msg != NULL ? msg : "failed");
  }
  req_free(r);
}

/* POST /api/v1/actions/{id}/approve | deny | reconcile {"outcome": "done"|"failed"} */
static void action_decide(req_t *r, const vg_http_request_t *req, int64_t id, const char *verb)
{
  vg_executor_t *ex = executor_of(r);
  if (ex == NULL) {
    return;
  }
  const char *who, *comment;
  json_t *outcome = NULL;
  bool reconcile = strcmp(verb, "reconcile") == 0;
  json_t *doc = operator_body(r, req, &who, &comment, reconcile ? "outcome" : NULL, &outcome);
  if (doc == NULL) {
    return;
  }
  const char *decision = strcmp(verb, "approve") == 0 ? "approved"
                         : strcmp(verb, "deny") == 0  ? "denied"
                                                      : json_string_value(outcome);
  if (decision == NULL ||
      (reconcile && strcmp(decision, "done") != 0 && strcmp(decision, "failed") != 0)) {
    reply_error(r, 400,
                "reconcile needs {\"outcome\": \"done\" | \"failed\"}: what the target"
                " shows really happened");
    req_free(r);
  } else {
    vg_executor_decide(ex, id, decision, who, comment, operator_answered, r);
  }
  json_decref(doc);
}

/* GET /api/v1/kill-switch -> {"on": bool}; POST {"on": bool, "who", "comment"} */
static void kill_switch(req_t *r, const vg_http_request_t *req, bool post)
{
  vg_executor_t *ex = vg_runtime_executor(r->in->rt);
  if (ex == NULL) {
    reply_error(r, 503, "the executor is not available");
    req_free(r);
    return;
  }
  if (!post) {
    reply_json(r, 200, json_pack("{s:b}", "on", vg_executor_killed(ex)), NULL);
    req_free(r);
    return;
  }
  const char *who, *comment;
  json_t *on = NULL;
  json_t *doc = operator_body(r, req, &who, &comment, "on", &on);
  if (doc == NULL) {
    return;
  }
  if (!json_is_boolean(on)) {
    reply_error(r, 400, "the body must say {\"on\": true} or {\"on\": false}");
    req_free(r);
  } else {
    vg_executor_kill_switch(ex, json_is_true(on), who, comment, operator_answered, r);
  }
  json_decref(doc);
}

/* ---- health, reload, metrics ---- */

static void readyz(req_t *r)
{
  vg_intake_t *in = r->in;
  const char *why = NULL;
  if (!vg_store_writable(in->store)) {
    why = "the store cannot commit";
  } else if (in->rt->policies == NULL || in->rt->stopping) {
    why = "policies are not loaded";
  }
  if (why != NULL) {
    reply(r, 503, "text/plain; charset=utf-8", why, strlen(why), "5");
  } else {
    reply(r, 200, "text/plain; charset=utf-8", "ready\n", 6, NULL);
  }
  req_free(r);
}

static void reload(req_t *r)
{
  vg_policies_t *ps = r->in->rt->policies;
  if (ps == NULL) {
    reply_error(r, 503, "no policies are loaded");
  } else {
    int failed = vg_policies_reload(ps, "POST /-/reload");
    if (failed == 0) {
      reply_json(r, 200, json_pack("{s:s, s:i}", "status", "success", "failed", 0), NULL);
    } else {
      char msg[120];
      snprintf(msg, sizeof(msg), "%d policy file%s failed to load (see the log)", failed,
               failed == 1 ? "" : "s");
      reply_json(r, 500,
                 json_pack("{s:s, s:s, s:i}", "status", "error", "error", msg, "failed", failed),
                 NULL);
    }
  }
  req_free(r);
}

typedef struct {
  char *buf;
  size_t len, cap;
  bool oom;
} text_t;

static void out(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out(text_t *t, const char *fmt, ...)
{
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->oom = true;
      return;
    }
    if ((size_t)n < t->cap - t->len) {
      t->len += (size_t)n;
      return;
    }
    size_t cap = (t->cap + (size_t)n + 1) * 2;
    char *b = realloc(t->buf, cap);
    if (b == NULL) {
      t->oom = true;
      return;
    }
    t->buf = b;
    t->cap = cap;
  }
}

/* A label value in the exposition format: backslash, quote and newline escaped. */
static void out_label(text_t *t, const char *v)
{
  for (; *v != '\0'; v++) {
    if (*v == '\\' || *v == '"') {
      out(t, "\\%c", *v);
    } else if (*v == '\n') {
      out(t, "\\n");
    } else {
      out(t, "%c", *v);
    }
  }
}

static void metric_head(text_t *t, const char *name, const char *type, const char *help)
{
  out(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void policy_counter(
    text_t *t, vg_policies_t *ps, const char *name, const char *help, size_t offset)
{
  metric_head(t, name, "counter", help);
  for (vg_policy_t *p = ps != NULL ? ps->list : NULL; p != NULL; p = p->next) {
    out(t, "%s{policy=\"", name);
    out_label(t, p->name);
    out(t, "\"} %llu\n", (unsigned long long)*(uint64_t *)((char *)p + offset));
  }
}

static void histogram(text_t *t,
                      const char *name,
                      const char *help,
                      const uint64_t *buckets,
                      const double *bounds,
                      int nb,
                      double sum)
{
  metric_head(t, name, "histogram", help);
  uint64_t cum = 0;
  for (int i = 0; i < nb; i++) {
    cum += buckets[i];
    if (i < nb - 1) {
      out(t, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)cum);
    } else {
      out(t, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
  }
  out(t, "%s_sum %.9g\n%s_count %llu\n", name, sum, name, (unsigned long long)cum);
}

static void source_breaker(void *ud, const char *name, const vg_source_stats_t *st)
{
  text_t *t = ud;
  out(t, "vigil_source_breaker_open{source=\"");
  out_label(t, name);
  out(t, "\"} %s\n",
      st->breaker == VG_BREAKER_OPEN        ? "1"
      : st->breaker == VG_BREAKER_HALF_OPEN ? "0.5"
                                            : "0");
}

static void source_counts(void *ud, const char *name, const vg_source_stats_t *st)
{
  text_t *t = ud;
  const char *outcomes[] = {
    "ok", "failed", "short_circuited", "rejected", "cancelled", "retried"
  };
  uint64_t values[] = { st->ok,       st->failures,  st->short_circuited,
                        st->rejected, st->cancelled, st->retries };
  for (int i = 0; i < 6; i++) {
    out(t, "vigil_source_requests_total{source=\"");
    out_label(t, name);
    out(t, "\",outcome=\"%s\"} %llu\n", outcomes[i], (unsigned long long)values[i]);
  }
}

static void type_counts(void *ud, const char *type, const uint64_t *counts)
{
  text_t *t = ud;
  for (size_t i = 0; i < VG_ACTION_STATES; i++) {
    if (counts[i] > 0) {
      out(t, "vigil_actions_total{type=\"");
      out_label(t, type);
      out(t, "\",state=\"%s\"} %llu\n", vg_action_state_names[i], (unsigned long long)counts[i]);
    }
  }
}

static void executor_metrics(text_t *t, vg_executor_t *ex)
{
  if (ex == NULL) {
    return;
  }
  vg_executor_stats_t s;
  vg_executor_stats(ex, &s);
  metric_head(t, "vigil_actions_total", "counter",
              "Actions by type and outcome: observed and dry-run (nothing ran), refused (guard"
              " rails, kill switch, storm), done, failed, duplicate (key already claimed),"
              " denied, expired.");
  vg_executor_each_type(ex, type_counts, t);
  metric_head(t, "vigil_guard_refusals_total", "counter",
              "Actions the guard rails refused, by rule.");
  static const char *const rules[] = { "",         "rate_type",   "rate_target",
                                       "cooldown", "concurrency", "blast_radius",
                                       "breaker",  "invalid" };
  for (size_t v = 1; v < sizeof rules / sizeof rules[0]; v++) {
    out(t, "vigil_guard_refusals_total{rule=\"%s\"} %llu\n", rules[v],
        (unsigned long long)s.guard.refused[v]);
  }
  metric_head(t, "vigil_actions_running", "gauge", "Actions claimed and not finished.");
  out(t, "vigil_actions_running %u\n", s.running);
  metric_head(t, "vigil_actions_awaiting_approval", "gauge", "Actions waiting for an operator.");
  out(t, "vigil_actions_awaiting_approval %u\n", s.awaiting_approval);
  metric_head(t, "vigil_actions_unknown_at_start", "gauge",
              "Actions found claimed at start-up: they may have run; reconcile them.");
  out(t, "vigil_actions_unknown_at_start %llu\n", (unsigned long long)s.unknown_at_start);
  metric_head(t, "vigil_guard_breakers_open", "gauge", "Targets whose circuit breaker is open.");
  out(t, "vigil_guard_breakers_open %u\n", s.guard.breakers_open);
  metric_head(t, "vigil_actions_storm_refused_total", "counter",
              "Actions refused because their scope was in an alert storm (ESTORM).");
  out(t, "vigil_actions_storm_refused_total %llu\n", (unsigned long long)s.storm_refused);
  metric_head(t, "vigil_suppressions_active", "gauge", "Local suppressions in force.");
  out(t, "vigil_suppressions_active %u\n", s.suppressions);
  metric_head(t, "vigil_alerts_suppressed_total", "counter",
              "Alerts stored but not handed to policies because a suppression matched them.");
  out(t, "vigil_alerts_suppressed_total %llu\n", (unsigned long long)s.suppressed);
  metric_head(t, "vigil_kill_switch", "gauge", "1 while the kill switch stops every action.");
  out(t, "vigil_kill_switch %d\n", s.killed ? 1 : 0);
}

static void metrics(req_t *r)
{
  vg_intake_t *in = r->in;
  vg_runtime_t *rt = in->rt;
  vg_policies_t *ps = rt->policies;
  text_t t = { 0 };

  metric_head(&t, "vigil_http_requests_total", "counter",
              "HTTP requests answered, by route and status class.");
  for (int i = 0; i < R_COUNT; i++) {
    for (int c = 1; c < 6; c++) {
      if (in->requests[i][c] != 0) {
        out(&t, "vigil_http_requests_total{route=\"%s\",code=\"%dxx\"} %llu\n", ROUTE_NAMES[i], c,
            (unsigned long long)in->requests[i][c]);
      }
    }
  }
  metric_head(&t, "vigil_log_lines_total", "counter",
              "Log lines posted to /api/v1/logs, by outcome (accepted: given to an analyser).");
  out(&t, "vigil_log_lines_total{outcome=\"accepted\"} %llu\n",
      (unsigned long long)in->log_lines[0]);
  out(&t, "vigil_log_lines_total{outcome=\"rejected\"} %llu\n",
      (unsigned long long)in->log_lines[1]);
  histogram(&t, "vigil_http_request_duration_seconds",
            "Time from a complete request to its answer (a write includes the commit).",
            in->latency, LATENCY_BOUNDS, LATENCY_BUCKETS, in->latency_sum);

  vg_httpd_stats_t hs = { 0 };
  if (in->httpd != NULL) {
    vg_httpd_stats(in->httpd, &hs);
  }
  metric_head(&t, "vigil_http_connections_open", "gauge", "Open HTTP connections.");
  out(&t, "vigil_http_connections_open %llu\n", (unsigned long long)hs.connections_open);
  metric_head(&t, "vigil_http_connections_refused_total", "counter",
              "Connections refused over the connection cap.");
  out(&t, "vigil_http_connections_refused_total %llu\n",
      (unsigned long long)hs.connections_refused);
  metric_head(&t, "vigil_http_rejected_total", "counter",
              "Requests the server refused itself (malformed, too large, too slow), by status.");
  for (int i = 0; i < 200; i++) {
    if (hs.rejected[i] != 0) {
      out(&t, "vigil_http_rejected_total{code=\"%d\"} %llu\n", 400 + i,
          (unsigned long long)hs.rejected[i]);
    }
  }

  metric_head(&t, "vigil_intake_alerts_total", "counter",
              "Alerts received, by endpoint and outcome (duplicates are harmless re-deliveries).");
  static const char *const slots[3] = { "alerts_v2", "webhook", "events" };
  for (int s = 0; s < 3; s++) {
    for (int o = 0; o < OUT_COUNT; o++) {
      out(&t, "vigil_intake_alerts_total{endpoint=\"%s\",outcome=\"%s\"} %llu\n", slots[s],
          OUTCOME_NAMES[o], (unsigned long long)in->alerts[s][o]);
    }
  }
  metric_head(&t, "vigil_alerts_expired_total", "counter",
              "Firing alerts resolved because their endsAt passed and nobody re-sent them.");
  out(&t, "vigil_alerts_expired_total %llu\n", (unsigned long long)in->expired);
  metric_head(&t, "vigil_intake_refused_total", "counter",
              "Batches answered 503 because the store could not take or commit them.");
  out(&t, "vigil_intake_refused_total{reason=\"busy\"} %llu\n", (unsigned long long)in->store_busy);
  out(&t, "vigil_intake_refused_total{reason=\"commit_failed\"} %llu\n",
      (unsigned long long)in->store_failures);

  vg_store_stats_t ss;
  vg_store_stats(in->store, &ss);
  metric_head(&t, "vigil_store_pending_alerts", "gauge", "Alerts waiting for the next commit.");
  out(&t, "vigil_store_pending_alerts %llu\n", (unsigned long long)ss.pending);
  metric_head(&t, "vigil_store_commits_total", "counter", "Store transactions committed.");
  out(&t, "vigil_store_commits_total %llu\n", (unsigned long long)ss.commits);
  metric_head(&t, "vigil_store_commit_failures_total", "counter",
              "Store transactions that failed.");
  out(&t, "vigil_store_commit_failures_total %llu\n", (unsigned long long)ss.commit_failures);
  static const double commit_bounds[11] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                            0.01,   0.025,   0.05,   0.1,   0.25 };
  histogram(&t, "vigil_store_commit_duration_seconds", "Time of one group commit, fsync included.",
            ss.commit_us_buckets, commit_bounds, 12, ss.commit_us_sum / 1e6);

  policy_counter(&t, ps, "vigil_policy_matched_total", "Alerts a policy's matchers accepted.",
                 offsetof(vg_policy_t, matched));
  policy_counter(&t, ps, "vigil_policy_runs_total", "Runs of a policy (on_alert and every jobs).",
                 offsetof(vg_policy_t, runs));
  policy_counter(&t, ps, "vigil_policy_failures_total", "Runs that raised an error.",
                 offsetof(vg_policy_t, failures));
  policy_counter(&t, ps, "vigil_policy_kills_total",
                 "Runs stopped by a budget (instructions, time, memory) or the watchdog.",
                 offsetof(vg_policy_t, kills));
  policy_counter(&t, ps, "vigil_policy_dropped_alerts_total",
                 "Alerts a policy missed because it had too many tasks already.",
                 offsetof(vg_policy_t, dropped));
  metric_head(&t, "vigil_policy_enabled", "gauge", "1 when the policy runs, 0 when disabled.");
  for (vg_policy_t *p = ps != NULL ? ps->list : NULL; p != NULL; p = p->next) {
    out(&t, "vigil_policy_enabled{policy=\"");
    out_label(&t, p->name);
    out(&t, "\"} %d\n", p->disabled ? 0 : 1);
  }
  metric_head(&t, "vigil_reloads_total", "counter", "Policy reloads.");
  out(&t, "vigil_reloads_total %llu\n", (unsigned long long)(ps ? ps->reloads : 0));
  metric_head(&t, "vigil_reload_failures_total", "counter", "Reloads in which a file failed.");
  out(&t, "vigil_reload_failures_total %llu\n", (unsigned long long)(ps ? ps->reload_failures : 0));

  metric_head(&t, "vigil_source_breaker_open", "gauge",
              "1 while a data source's circuit breaker is open (0.5 half-open).");
  vg_sources_each(rt->sources, source_breaker, &t);
  metric_head(&t, "vigil_source_requests_total", "counter",
              "Requests to a data source by outcome: ok, failed (after retries), "
              "short_circuited (breaker open), rejected (queue full); retries counted apart.");
  vg_sources_each(rt->sources, source_counts, &t);

  int tasks = 0;
  for (vg_policy_t *p = ps != NULL ? ps->list : NULL; p != NULL; p = p->next) {
    tasks += p->vm != NULL ? p->vm->ntasks : 0;
  }
  metric_head(&t, "vigil_tasks_running", "gauge", "Live tasks of the policies.");
  out(&t, "vigil_tasks_running %d\n", tasks);
  metric_head(&t, "vigil_tasks_spawned_total", "counter", "Tasks started.");
  out(&t, "vigil_tasks_spawned_total %llu\n", (unsigned long long)rt->tasks_spawned);
  metric_head(&t, "vigil_task_errors_total", "counter", "Tasks that failed or were killed.");
  out(&t, "vigil_task_errors_total %llu\n", (unsigned long long)rt->task_errors);

  executor_metrics(&t, rt->executor);
  uint64_t fired, failed;
  vg_escalator_stats(rt->escalator, &fired, &failed);
  metric_head(&t, "vigil_escalations_total", "counter",
              "Escalation timers that fired (their notification sent) or failed.");
  out(&t, "vigil_escalations_total{state=\"fired\"} %llu\n", (unsigned long long)fired);
  out(&t, "vigil_escalations_total{state=\"failed\"} %llu\n", (unsigned long long)failed);
  if (rt->exec != NULL) {
    const vg_exec_tiers_t *tiers = vg_exec_tiers(rt->exec);
    metric_head(&t, "vigil_executor_sandbox", "gauge",
                "1 for each confinement tier applied to action processes (0: not available or"
                " switched off); landlock_abi is the kernel's Landlock ABI.");
    out(&t, "vigil_executor_sandbox{tier=\"landlock\"} %d\n", tiers->landlock ? 1 : 0);
    out(&t, "vigil_executor_sandbox{tier=\"landlock_net\"} %d\n", tiers->landlock_net ? 1 : 0);
    out(&t, "vigil_executor_sandbox{tier=\"seccomp\"} %d\n", tiers->seccomp ? 1 : 0);
    out(&t, "vigil_executor_sandbox{tier=\"landlock_abi\"} %d\n", tiers->landlock_abi);
  }

  if (t.oom) {
    reply_error(r, 503, "out of memory");
  } else {
    reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", t.buf, t.len, NULL);
  }
  free(t.buf);
  req_free(r);
}

/* ---- the pipeline's memory: incident reports, known fixes ---- */

static void memory_answered(void *ud, int status, const char *err, const char *json, size_t len)
{
  if (status == 0) {
    store_answered(ud, 0, json, len);
  } else {
    store_answered(ud, status, err, err != NULL ? strlen(err) : 0);
  }
}

/* Runs memory operation `op` with `args` (taken) and answers with its result. */
static void memory_request(req_t *r, const char *op, json_t *args)
{
  vg_executor_t *ex = executor_of(r);
  char *text = args != NULL ? json_dumps(args, JSON_COMPACT) : NULL;
  json_decref(args);
  if (text == NULL) {
    reply_error(r, 503, "out of memory");
    req_free(r);
  } else if (ex == NULL ||
             vg_memory_call(vg_executor_store(ex), op, text, memory_answered, r) != 0) {
    reply_error(r, 503, "the store cannot answer now");
    req_free(r);
  }
  free(text);
}

static int fix_key_param(void *ud, const char *name, const char *value)
{
  if (strcmp(name, "key") != 0) {
    return 0;
  }
  return snprintf(ud, 257, "%s", value) < 257 ? 0 : -1;
}

/* GET /api/v1/kb/fixes?key=HighCPU: known fixes, best first; POST {key, name, plan, who}
 * records one (the pipeline proposes it the next time that alert fires). */
static void kb_fixes(req_t *r, const vg_http_request_t *req, bool post)
{
  if (!post) {
    char key[257] = "";
    if (each_param(req->query, fix_key_param, key) != 0 || key[0] == '\0') {
      reply_error(r, 400, "say which fixes: ?key=<alert name or class> (at most 256 bytes)");
      req_free(r);
      return;
    }
    memory_request(r, "fixes", json_pack("{s:s, s:i}", "key", key, "limit", 20));
    return;
  }
  json_error_t je;
  json_t *doc =
      is_json(req) ? json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je) : NULL;
  if (!json_is_object(doc)) {
    json_decref(doc);
    reply_error(r, 400, "send a JSON object {key, name, plan, who}");
    req_free(r);
    return;
  }
  if (json_object_get(doc, "who") == NULL) {
    json_object_set_new(doc, "who", json_string("api"));
  }
  memory_request(r, "fix_add", doc);
}

/* ---- writes: log lines in (analysed in memory, not stored one by one) ---- */

#define LOGS_MAX_LINES 50000 /* per request, as for alerts: beyond, 413 */
#define LOGS_MAX_ERRORS 10   /* errors listed in the answer; the others are counted */

typedef struct {
  req_t *r;
  vg_logan_registry_t *reg;
  const char *analyser; /* ?analyser= (decoded copy), or NULL */
  double now;
  size_t accepted, rejected;
  json_t *errors;
} logs_batch_t;

static int logs_param(void *ud, const char *name, const char *value)
{
  logs_batch_t *b = ud;
  if (strcmp(name, "analyser") != 0) {
    return -1;
  }
  free((char *)b->analyser);
  b->analyser = strdup(value);
  return b->analyser == NULL ? -1 : 0;
}

static void logs_reject(logs_batch_t *b, const char *what, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void logs_reject(logs_batch_t *b, const char *what, size_t n, const char *fmt, ...)
{
  b->rejected++;
  if (json_array_size(b->errors) >= LOGS_MAX_ERRORS) {
    return;
  }
  char msg[300];
  int k = snprintf(msg, sizeof(msg), "%s %zu: ", what, n);
  k = k < 0 ? 0 : k < (int)sizeof(msg) ? k : (int)sizeof(msg) - 1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg + k, sizeof(msg) - (size_t)k, fmt, ap);
  va_end(ap);
  json_array_append_new(b->errors, json_string(msg));
}

/* One posted line: {"analyser", "line", "ts", "level", "service"}; `n` numbers it in errors. */
static void logs_take_one(logs_batch_t *b, json_t *item, const char *what, size_t n)
{
  if (!json_is_object(item)) {
    logs_reject(b, what, n, "not a JSON object");
    return;
  }
  json_t *jn = json_object_get(item, "analyser"), *jl = json_object_get(item, "line");
  json_t *jt = json_object_get(item, "ts"), *jv = json_object_get(item, "level");
  json_t *js = json_object_get(item, "service");
  const char *name = jn != NULL ? json_string_value(jn) : b->analyser;
  if (name == NULL) {
    logs_reject(b, what, n,
                jn != NULL ? "analyser: a string is required"
                           : "analyser: required (in the line or ?analyser=)");
    return;
  }
  size_t nlen = jn != NULL ? json_string_length(jn) : strlen(name);
  if (nlen == 0 || nlen > VG_LOGAN_NAME_MAX || strlen(name) != nlen) {
    logs_reject(b, what, n, "analyser: 1 to %d bytes, no NUL", VG_LOGAN_NAME_MAX);
    return;
  }
  if (!json_is_string(jl)) {
    logs_reject(b, what, n, "line: a string is required");
    return;
  }
  double ts = b->now;
  if (json_is_number(jt)) {
    ts = json_number_value(jt);
  } else if (json_is_string(jt)) {
    const char *text = json_string_value(jt);
    char *end = NULL;
    ts = strtod(text, &end); /* "1767225600.5" too */
    if ((end == text || *end != '\0') && !vg_time_parse(text, &ts)) {
      logs_reject(b, what, n, "ts: not RFC 3339 or unix seconds");
      return;
    }
  } else if (jt != NULL && !json_is_null(jt)) {
    logs_reject(b, what, n, "ts: unix seconds or an RFC 3339 string");
    return;
  }
  if (!(ts > -1e12 && ts < 1e12)) {
    logs_reject(b, what, n, "ts: out of range");
    return;
  }
  if ((jv != NULL && !json_is_null(jv) && !json_is_string(jv)) ||
      (js != NULL && !json_is_null(js) && !json_is_string(js))) {
    logs_reject(b, what, n, "%s: a string is expected", json_is_string(jv) ? "service" : "level");
    return;
  }
  const char *level = json_string_value(jv), *service = json_string_value(js);
  if (service != NULL && (service[0] == '\0' || json_string_length(js) > VG_LOGAN_NAME_MAX ||
                          strlen(service) != json_string_length(js))) {
    logs_reject(b, what, n, "service: 1 to %d bytes, no NUL", VG_LOGAN_NAME_MAX);
    return;
  }
  vg_logan_t *a = logan_registry_get(b->reg, name);
  if (a == NULL) {
    char err[200];
    a = logan_registry_add(b->reg, name, NULL, err, sizeof(err));
    if (a == NULL) {
      logs_reject(b, what, n, "analyser \"%s\" cannot be created: %s", name, err);
      return;
    }
  }
  if (logan_add_ex(a, json_string_value(jl), json_string_length(jl), ts, level, service, NULL) !=
      0) {
    logs_reject(b, what, n, "out of memory");
    return;
  }
  b->accepted++;
}

static bool is_ndjson(const vg_http_request_t *req)
{
  const char *t = vg_http_header(req, "content-type");
  return t != NULL && strncasecmp(t, "application/x-ndjson", 20) == 0 &&
         (t[20] == '\0' || t[20] == ';' || t[20] == ' ');
}

/* POST /api/v1/logs[?analyser=name]: JSON lines (application/x-ndjson) or a JSON array of
 * {"analyser", "line", "ts", "level", "service"}; each goes to its analyser (made on first
 * use). 202 {"accepted", "rejected", "errors"} when any was taken; 400 when none was. */
static void take_logs(req_t *r, const vg_http_request_t *req)
{
  vg_intake_t *in = r->in;
  bool ndjson = is_ndjson(req);
  if (!ndjson && !is_json(req)) {
    reply_error(r, 415,
                "send log lines as Content-Type: application/x-ndjson (one JSON object a line) "
                "or application/json (an array)");
    req_free(r);
    return;
  }
  logs_batch_t b = { .r = r, .now = vg_clock_now(in->rt), .errors = json_array() };
  b.reg = vg_runtime_logs(in->rt);
  const char *fail = NULL;
  int status = 400;
  if (b.errors == NULL || b.reg == NULL) {
    fail = "out of memory";
    status = 503;
  } else if (each_param(req->query, logs_param, &b) != 0) {
    fail = "malformed query string (only ?analyser=<name> is known)";
  }
  json_t *doc = NULL;
  if (fail == NULL && !ndjson) {
    json_error_t je;
    doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_array(doc)) {
      fail = doc == NULL ? "malformed JSON" : "the body must be a JSON array of log lines";
    } else if (json_array_size(doc) > LOGS_MAX_LINES) {
      fail = "more than 50000 log lines in one request";
      status = 413;
    } else {
      for (size_t i = 0; i < json_array_size(doc); i++) {
        logs_take_one(&b, json_array_get(doc, i), "item", i + 1);
      }
    }
  } else if (fail == NULL) {
    const char *p = req->body, *end = req->body + req->body_len;
    size_t lineno = 0, items = 0;
    while (p < end && fail == NULL) {
      const char *nl = memchr(p, '\n', (size_t)(end - p));
      const char *stop = nl != NULL ? nl : end;
      lineno++;
      const char *q = p;
      while (q < stop && (*q == ' ' || *q == '\t' || *q == '\r')) {
        q++;
      }
      if (q < stop) {
        if (++items > LOGS_MAX_LINES) {
          fail = "more than 50000 log lines in one request";
          status = 413;
          break;
        }
        json_error_t je;
        json_t *item = json_loadb(p, (size_t)(stop - p), JSON_REJECT_DUPLICATES, &je);
        if (item == NULL) {
          logs_reject(&b, "line", lineno, "malformed JSON (%s)", je.text);
        } else {
          logs_take_one(&b, item, "line", lineno);
          json_decref(item);
        }
      }
      p = stop + 1;
    }
  }
  json_decref(doc);
  free((char *)b.analyser);
  in->log_lines[0] += b.accepted;
  in->log_lines[1] += b.rejected;
  if (fail != NULL) {
    json_decref(b.errors);
    reply_error(r, status, fail);
  } else if (b.accepted == 0) {
    reply_json(r, 400,
               json_pack("{s:s, s:s, s:i, s:I, s:o}", "status", "error", "error",
                         b.rejected == 0 ? "no log lines in the request" : "no valid log line",
                         "accepted", 0, "rejected", (json_int_t)b.rejected, "errors", b.errors),
               NULL);
  } else {
    reply_json(
        r, 202,
        json_pack("{s:s, s:I, s:I, s:o}", "status", "accepted", "accepted", (json_int_t)b.accepted,
                  "rejected", (json_int_t)b.rejected, "errors", b.errors),
        NULL);
  }
  req_free(r);
}

/* ---- routing ---- */

typedef struct {
  route_t route;
  int64_t id;
  const char *action;
} target_t;

/* Which route a path is, whatever the method; R_OTHER for none. */
static target_t resolve(const char *path)
{
  static const struct {
    const char *path;
    route_t route;
  } fixed[] = {
    { "/api/v2/alerts", R_ALERTS_V2 },
    { "/api/v1/alertmanager", R_WEBHOOK },
    { "/api/v1/events", R_EVENTS },
    { "/api/v1/alerts", R_ALERTS },
    { "/api/v1/incidents", R_INCIDENTS },
    { "/healthz", R_HEALTHZ },
    { "/readyz", R_READYZ },
    { "/-/reload", R_RELOAD },
    { "/metrics", R_METRICS },
    { "/api/v1/actions", R_ACTIONS },
    { "/api/v1/kill-switch", R_KILL_SWITCH },
    { "/api/v1/healings", R_HEALINGS },
    { "/api/v1/kb/fixes", R_KB_FIXES },
    { "/api/v1/logs", R_LOGS },
  };
  for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
    if (strcmp(path, fixed[i].path) == 0) {
      return (target_t){ fixed[i].route, 0, NULL };
    }
  }
  /* "/api/v1/<collection>/{id}" and "/api/v1/<collection>/{id}/<verb>" */
  static const struct {
    const char *prefix;
    route_t one;
    struct {
      const char *name;
      route_t route;
    } verbs[4];
  } collections[] = {
    { "/api/v1/incidents/",
      R_INCIDENT,
      { { "ack", R_INCIDENT_ACTION },
        { "resolve", R_INCIDENT_ACTION },
        { "close", R_INCIDENT_ACTION },
        { "report", R_INCIDENT_REPORT } } },
    { "/api/v1/actions/",
      R_ACTION,
      { { "approve", R_ACTION_DECIDE },
        { "deny", R_ACTION_DECIDE },
        { "reconcile", R_ACTION_DECIDE } } },
    { "/api/v1/healings/", R_HEALING, { { NULL, R_OTHER } } },
  };
  for (size_t c = 0; c < sizeof(collections) / sizeof(collections[0]); c++) {
    size_t plen = strlen(collections[c].prefix);
    if (strncmp(path, collections[c].prefix, plen) != 0) {
      continue;
    }
    const char *p = path + plen;
    char *end;
    errno = 0;
    long long id = strtoll(p, &end, 10);
    if (end == p || *p == '-' || *p == '+' || errno != 0 || id <= 0) {
      break;
    }
    if (*end == '\0') {
      return (target_t){ collections[c].one, id, NULL };
    }
    for (int i = 0; i < 4 && collections[c].verbs[i].name != NULL; i++) {
      if (end[0] == '/' && strcmp(end + 1, collections[c].verbs[i].name) == 0) {
        return (target_t){ collections[c].verbs[i].route, id, collections[c].verbs[i].name };
      }
    }
    break;
  }
  return (target_t){ R_OTHER, 0, NULL };
}

static bool is_write(route_t r)
{
  return r == R_ALERTS_V2 || r == R_WEBHOOK || r == R_EVENTS || r == R_INCIDENT_ACTION ||
         r == R_RELOAD || r == R_ACTION_DECIDE || r == R_LOGS;
}

static void handle(vg_http_exchange_t *x, const vg_http_request_t *req, void *ud)
{
  vg_intake_t *in = ud;
  target_t t = resolve(req->path);
  req_t *r = req_new(in, x, t.route);
  if (r == NULL) {
    vg_http_respond_error(x, 503, "out of memory");
    return;
  }
  bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
  bool post = strcmp(req->method, "POST") == 0;
  if (t.route == R_OTHER) {
    reply_error(r, 404, "no such endpoint (see docs/intake.md)");
    req_free(r);
    return;
  }
  bool either = t.route == R_KILL_SWITCH || t.route == R_KB_FIXES; /* GET reads, POST sets */
  if (!either && ((is_write(t.route) && !post) || (!is_write(t.route) && !get))) {
    char msg[80];
    snprintf(msg, sizeof(msg), "method %s not allowed here: use %s", req->method,
             is_write(t.route) ? "POST" : "GET");
    reply_error(r, 405, msg);
    req_free(r);
    return;
  }
  if (either && !get && !post) {
    reply_error(r, 405, "method not allowed here: use GET or POST");
    req_free(r);
    return;
  }
  if (in->token != NULL && t.route != R_HEALTHZ && t.route != R_READYZ &&
      (is_write(t.route) || (either && post) || in->auth_reads) && !authorized(in, req)) {
    reply_error(r, 401, "a valid bearer token is required (Authorization: Bearer ...)");
    req_free(r);
    return;
  }
  if ((t.route == R_ALERTS_V2 || t.route == R_WEBHOOK || t.route == R_EVENTS) && !is_json(req)) {
    reply_error(r, 415, "send the body as Content-Type: application/json");
    req_free(r);
    return;
  }
  switch (t.route) {
    case R_ALERTS_V2:
      take_alerts(r, req, vg_alertdec_v2);
      break;
    case R_WEBHOOK:
      take_alerts(r, req, vg_alertdec_webhook);
      break;
    case R_EVENTS:
      take_alerts(r, req, vg_alertdec_event);
      break;
    case R_ALERTS:
      get_alerts(r, req);
      break;
    case R_INCIDENTS:
      get_incidents(r, req);
      break;
    case R_INCIDENT:
      if (vg_store_incident(in->store, t.id, store_answered, r) != 0) {
        reply_error(r, 503, "the store cannot answer now");
        req_free(r);
      }
      break;
    case R_INCIDENT_ACTION:
      incident_action(r, req, t.id, t.action);
      break;
    case R_ACTIONS:
      get_actions(r, req);
      break;
    case R_ACTION:
      get_action(r, t.id);
      break;
    case R_ACTION_DECIDE:
      action_decide(r, req, t.id, t.action);
      break;
    case R_KILL_SWITCH:
      kill_switch(r, req, post);
      break;
    case R_INCIDENT_REPORT:
      memory_request(r, "report", json_pack("{s:I}", "incident", (json_int_t)t.id));
      break;
    case R_KB_FIXES:
      kb_fixes(r, req, post);
      break;
    case R_LOGS:
      take_logs(r, req);
      break;
    case R_HEALINGS:
    case R_HEALING: {
      vg_executor_t *ex = executor_of(r);
      if (ex != NULL && vg_ledger_healings(vg_executor_store(ex), t.route == R_HEALING ? t.id : 0,
                                           100, store_answered, r) != 0) {
        reply_error(r, 503, "the store cannot answer now");
        req_free(r);
      }
      break;
    }
    case R_HEALTHZ:
      reply(r, 200, "text/plain; charset=utf-8", "ok\n", 3, NULL);
      req_free(r);
      break;
    case R_READYZ:
      readyz(r);
      break;
    case R_RELOAD:
      reload(r);
      break;
    case R_METRICS:
      metrics(r);
      break;
    default:
      reply_error(r, 404, "no such endpoint");
      req_free(r);
      break;
  }
}

/* ---- life ---- */

void vg_intake_opts_default(vg_intake_opts_t *o)
{
  memset(o, 0, sizeof(*o));
  o->listen = "127.0.0.1:9095";
  o->resolve_timeout = 300;
  vg_httpd_limits_default(&o->http);
}

vg_intake_t *vg_intake_start(
    vg_runtime_t *rt, vg_store_t *store, const vg_intake_opts_t *o, char *err, size_t errlen)
{
  vg_intake_t *in = calloc(1, sizeof(*in));
  if (in == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  in->rt = rt;
  in->store = store;
  in->auth_reads = o->auth_reads;
  in->resolve_timeout = o->resolve_timeout;
  in->token = o->token != NULL ? strdup(o->token) : NULL;
  vg_httpd_limits_t limits = o->http;
  char host[256];
  const char *colon = strrchr(o->listen, ':');
  char *end = NULL;
  long port = colon != NULL ? strtol(colon + 1, &end, 10) : -1;
  if (colon == NULL || colon == o->listen || (size_t)(colon - o->listen) >= sizeof(host) ||
      end == colon + 1 || *end != '\0' || port < 0 || port > 65535) {
    snprintf(err, errlen, "listen: '%s' is not host:port (e.g. 127.0.0.1:9095)", o->listen);
    free(in->token);
    free(in);
    return NULL;
  }
  snprintf(host, sizeof(host), "%.*s", (int)(colon - o->listen), o->listen);
  limits.host = host;
  limits.port = (int)port;
  in->httpd = vg_httpd_start(rt->loop, &limits, handle, in, err, errlen);
  if (in->httpd == NULL) {
    free(in->token);
    free(in);
    return NULL;
  }
  uv_timer_init(rt->loop, &in->flush_timer);
  in->flush_timer.data = in;
  uv_unref((uv_handle_t *)&in->flush_timer); /* a pending flush alone keeps no loop going */
  vg_store_on_expired(store, on_expired, in);
  return in;
}

static void on_timer_closed(uv_handle_t *h)
{
  vg_intake_t *in = h->data;
  in->timer_closed = true;
  if (in->inflight == 0) {
    intake_free(in);
  }
}

int vg_intake_port(const vg_intake_t *in)
{
  return in->httpd != NULL ? vg_httpd_port(in->httpd) : -1;
}

void vg_intake_stop(vg_intake_t *in)
{
  if (in == NULL) {
    return;
  }
  vg_httpd_stop(in->httpd);
  in->httpd = NULL;
  vg_store_on_expired(in->store, NULL, NULL);
  flush(in); /* the last one: the store, still open, commits it before it closes */
  in->stopping = true;
  uv_close((uv_handle_t *)&in->flush_timer, on_timer_closed);
}

/* ---- decision replay ---- */

typedef struct {
  vg_runtime_t *rt;
  vg_store_t *store;
  decisions_t decided;
  size_t round, total, rounds;
  vg_intake_replay_fn done;
  void *ud;
} replay_t;

static void replay_finish(replay_t *rp, int status, const char *err)
{
  rp->done(rp->ud, status, err, rp->total);
  free(rp->decided.v);
  free(rp);
}

static void replay_round(replay_t *rp);

static void replay_each(void *ud, const vg_store_alert_t *a, int64_t incident_id, int64_t change)
{
  replay_t *rp = ud;
  rp->round++;
  /* decided once dispatched: a replay waits for no run (the next round's read skips it) */
  if (vg_intake_dispatch(rp->rt, a, incident_id, NULL, NULL) >= 0) {
    decisions_add(&rp->decided, a->fingerprint, change);
  }
}

static void replay_decided(void *ud, int status, const char *err)
{
  replay_t *rp = ud;
  /* a full round: there may be more (each round's alerts are decided before the next reads) */
  if (status == 0 && rp->round == VG_STORE_UNDECIDED_MAX && rp->rounds < 100) {
    replay_round(rp);
  } else {
    replay_finish(rp, status, err);
  }
}

static void replay_read(void *ud, int status, const char *err)
{
  replay_t *rp = ud;
  rp->total += rp->round;
  if (status < 0 || rp->decided.n == 0) {
    replay_finish(rp, status, err);
    return;
  }
  int rc = decisions_flush(&rp->decided, rp->store, replay_decided, rp);
  if (rc != 0) {
    replay_finish(rp, rc, "cannot mark the replayed alerts decided");
  }
}

static void replay_round(replay_t *rp)
{
  rp->round = 0;
  rp->rounds++;
  int rc = vg_store_undecided(rp->store, replay_each, replay_read, rp);
  if (rc != 0) {
    replay_finish(rp, rc, "cannot read the undecided alerts");
  }
}

int vg_intake_replay(vg_runtime_t *rt, vg_store_t *store, vg_intake_replay_fn done, void *ud)
{
  if (rt == NULL || store == NULL || done == NULL) {
    return -EINVAL;
  }
  replay_t *rp = calloc(1, sizeof(*rp));
  if (rp == NULL) {
    return -ENOMEM;
  }
  *rp = (replay_t){ .rt = rt, .store = store, .done = done, .ud = ud, .rounds = 1 };
  int rc = vg_store_undecided(store, replay_each, replay_read, rp);
  if (rc != 0) {
    free(rp);
  }
  return rc;
}
