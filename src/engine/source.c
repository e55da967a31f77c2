/* Per-source request policy: concurrency, retries with backoff and jitter, circuit breaker.
 * See source.h. Every request of a source is on its `reqs` list while it lives; a request
 * waits in the queue (concurrency), on a retry timer, or on an attempt (an httpc request). */
#include "engine/source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct vg_sources {
  uv_loop_t *loop;
  vg_httpc_t *httpc;
  vg_source_t *list;
  uint64_t rng;
  int open_timers;
  bool freeing;
};

struct vg_source {
  vg_sources_t *ss;
  char *name;
  vg_source_opts_t o;
  vg_source_stats_t st;
  uint64_t open_until_ms;
  bool probe_inflight;
  vg_source_req_t *reqs;
  vg_source_req_t *q_head, *q_tail;
  bool configured;
  char **headers; /* added to every request (configured sources) */
  size_t nheaders;
  vg_source_t *next;
};

typedef struct {
  uv_timer_t timer; /* first: the close callback casts back */
  vg_sources_t *ss;
  vg_source_req_t *req; /* NULL once cancelled */
} retry_timer_t;

struct vg_source_req {
  vg_source_t *s;
  vg_httpc_opts_t o; /* deep copy */
  char *method, *url, *body;
  char **headers;
  bool idempotent, probe, queued;
  uint32_t attempt;
  vg_httpc_done_fn done;
  void *ud;
  vg_httpc_req_t *http;
  retry_timer_t *retry;
  vg_source_req_t *q_next;
  vg_source_req_t *prev, *next;
};

void vg_source_opts_default(vg_source_opts_t *o)
{
  *o = (vg_source_opts_t){
    .max_concurrency = 8,
    .max_queue = 1000,
    .retries = 2,
    .backoff_ms = 100,
    .backoff_max_ms = 5000,
    .breaker_failures = 5,
    .breaker_cooldown_ms = 30000,
  };
}

const char *vg_breaker_name(vg_breaker_t b)
{
  return b == VG_BREAKER_OPEN ? "open" : b == VG_BREAKER_HALF_OPEN ? "half-open" : "closed";
}

static uint64_t now_ms(const vg_sources_t *ss)
{
  return uv_now(ss->loop);
}

static double jitter(vg_sources_t *ss)
{
  /* xorshift64*: only to spread retries, not for anything secret */
  uint64_t x = ss->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  ss->rng = x;
  return 0.5 + (double)((x * 0x2545F4914F6CDD1Dull) >> 11) / (double)(1ull << 53);
}

/* ---- requests ---- */

static void req_free(vg_source_req_t *r)
{
  vg_source_t *s = r->s;
  if (r->prev != NULL) {
    r->prev->next = r->next;
  } else {
    s->reqs = r->next;
  }
  if (r->next != NULL) {
    r->next->prev = r->prev;
  }
  for (size_t i = 0; r->headers != NULL && i < r->o.nheaders; i++) {
    if (r->headers[i] != NULL) {
      memset(r->headers[i], 0, strlen(r->headers[i])); /* a configured header may be a secret */
    }
    free(r->headers[i]);
  }
  free(r->headers);
  free(r->method);
  free(r->url);
  free(r->body);
  free(r);
}

static void timer_closed(uv_handle_t *h)
{
  retry_timer_t *t = (retry_timer_t *)h;
  vg_sources_t *ss = t->ss;
  free(t);
  if (--ss->open_timers == 0 && ss->freeing) {
    free(ss);
  }
}

static void start_attempt(vg_source_req_t *r);

static void pump(vg_source_t *s)
{
  if (s->ss->freeing) {
    return; /* everything is being cancelled */
  }
  while (s->q_head != NULL && s->st.inflight < s->o.max_concurrency) {
    vg_source_req_t *r = s->q_head;
    s->q_head = r->q_next;
    if (s->q_head == NULL) {
      s->q_tail = NULL;
    }
    r->q_next = NULL;
    r->queued = false;
    s->st.queued--;
    start_attempt(r);
  }
}

static void enqueue(vg_source_req_t *r, bool front)
{
  vg_source_t *s = r->s;
  r->queued = true;
  s->st.queued++;
  if (front) {
    r->q_next = s->q_head;
    s->q_head = r;
    if (s->q_tail == NULL) {
      s->q_tail = r;
    }
  } else {
    r->q_next = NULL;
    if (s->q_tail != NULL) {
      s->q_tail->q_next = r;
    } else {
      s->q_head = r;
    }
    s->q_tail = r;
  }
}

static void breaker_failed(vg_source_t *s, bool probe)
{
  s->st.consecutive_failures++;
  if (probe ||
      (s->st.breaker == VG_BREAKER_CLOSED && s->st.consecutive_failures >= s->o.breaker_failures)) {
    s->st.breaker = VG_BREAKER_OPEN;
    s->open_until_ms = now_ms(s->ss) + s->o.breaker_cooldown_ms;
  }
}

/* Seconds from a "Retry-After: N" header, or -1. */
static long retry_after(const vg_httpc_resp_t *resp)
{
  const char *h = resp->headers;
  while (h != NULL && *h != '\0') {
    if (strncasecmp(h, "retry-after:", 12) == 0) {
      char *end;
      long v = strtol(h + 12, &end, 10);
      return end != h + 12 && v >= 0 ? v : -1;
    }
    h = strchr(h, '\n');
    h = h != NULL ? h + 1 : NULL;
  }
  return -1;
}

static void on_retry_timer(uv_timer_t *t)
{
  retry_timer_t *rt = (retry_timer_t *)t;
  vg_source_req_t *r = rt->req;
  uv_close((uv_handle_t *)t, timer_closed);
  if (r == NULL) {
    return;
  }
  r->retry = NULL;
  if (r->s->st.inflight < r->s->o.max_concurrency) {
    start_attempt(r);
  } else {
    enqueue(r, true);
  }
}

static void on_attempt(void *ud, const vg_httpc_resp_t *resp)
{
  vg_source_req_t *r = ud;
  vg_source_t *s = r->s;
  r->http = NULL;
  s->st.inflight--;
  bool failed = resp->error != NULL || resp->status >= 500 || resp->status == 429;
  if (failed) {
    breaker_failed(s, r->probe);
  } else {
    s->st.consecutive_failures = 0;
    s->st.breaker = VG_BREAKER_CLOSED;
  }
  if (r->probe) {
    s->probe_inflight = false;
    r->probe = false;
  }
  long after = failed ? retry_after(resp) : -1;
  bool retry = failed && r->idempotent && r->attempt <= s->o.retries &&
               s->st.breaker == VG_BREAKER_CLOSED &&
               (after < 0 || (uint64_t)after * 1000 <= s->o.backoff_max_ms) && !s->ss->freeing;
  if (retry) {
    double delay = (double)s->o.backoff_ms * (double)(1u << (r->attempt - 1)) * jitter(s->ss);
    if (after >= 0 && (double)after * 1000 > delay) {
      delay = (double)after * 1000;
    }
    if (delay > (double)s->o.backoff_max_ms) {
      delay = (double)s->o.backoff_max_ms;
    }
    retry_timer_t *t = calloc(1, sizeof(*t));
    if (t != NULL) {
      uv_timer_init(s->ss->loop, &t->timer);
      t->ss = s->ss;
      t->req = r;
      s->ss->open_timers++;
      r->retry = t;
      s->st.retries++;
      uv_timer_start(&t->timer, on_retry_timer, (uint64_t)delay, 0);
      pump(s);
      return;
    }
  }
  if (failed) {
    s->st.failures++;
  } else {
    s->st.ok++;
  }
  r->done(r->ud, resp);
  req_free(r);
  pump(s);
}

/* Starts the next attempt; false (with the reason in err) when it cannot even start. */
static bool try_attempt(vg_source_req_t *r, char *err, size_t errlen)
{
  vg_source_t *s = r->s;
  r->http = vg_httpc_start(s->ss->httpc, &r->o, on_attempt, r, err, errlen);
  if (r->http == NULL) {
    return false;
  }
  r->attempt++;
  s->st.attempts++;
  s->st.inflight++;
  return true;
}

/* From the queue or a retry timer: a request that cannot start ends with that failure. */
static void start_attempt(vg_source_req_t *r)
{
  vg_source_t *s = r->s;
  char err[256];
  if (!try_attempt(r, err, sizeof(err))) {
    s->st.inflight++; /* on_attempt takes it back */
    /* could not even start: an attempt that failed at once */
    const char *sep = strchr(err, ':');
    char name[32];
    snprintf(name, sizeof(name), "%.*s", sep ? (int)(sep - err) : 3, sep ? err : "EIO");
    vg_httpc_resp_t resp = {
      .error = name, .detail = sep ? sep + 2 : err, .headers = "", .body = ""
    };
    r->idempotent = false; /* the same request would fail the same way */
    on_attempt(r, &resp);
  }
}

static char *dup_n(const char *p, size_t n)
{
  char *d = malloc(n + 1);
  if (d != NULL) {
    memcpy(d, p, n);
    d[n] = '\0';
  }
  return d;
}

vg_source_req_t *vg_source_request(vg_source_t *s,
                                   const vg_httpc_opts_t *o,
                                   bool idempotent,
                                   vg_httpc_done_fn done,
                                   void *ud,
                                   char *err,
                                   size_t errlen)
{
  s->st.requests++;
  bool probe = false;
  if (s->st.breaker == VG_BREAKER_OPEN && now_ms(s->ss) >= s->open_until_ms) {
    s->st.breaker = VG_BREAKER_HALF_OPEN;
  }
  if (s->st.breaker == VG_BREAKER_OPEN ||
      (s->st.breaker == VG_BREAKER_HALF_OPEN && s->probe_inflight)) {
    s->st.short_circuited++;
    uint64_t left = s->open_until_ms > now_ms(s->ss) ? s->open_until_ms - now_ms(s->ss) : 0;
    snprintf(err, errlen,
             "ECIRCUIT: source '%s' is failing (%u failures in a row); next try in %.1f s", s->name,
             s->st.consecutive_failures, (double)left / 1000.0);
    return NULL;
  }
  if (s->st.breaker == VG_BREAKER_HALF_OPEN) {
    probe = true;
  }
  if (s->st.inflight >= s->o.max_concurrency && s->st.queued >= s->o.max_queue) {
    s->st.rejected++;
    snprintf(err, errlen, "EBUSY: source '%s' has %u requests waiting already", s->name,
             s->st.queued);
    return NULL;
  }
  vg_source_req_t *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    snprintf(err, errlen, "ENOMEM: out of memory");
    return NULL;
  }
  r->s = s;
  r->o = *o;
  r->idempotent = idempotent;
  r->done = done;
  r->ud = ud;
  r->method = o->method ? strdup(o->method) : NULL;
  r->url = o->url ? strdup(o->url) : NULL;
  r->body = o->body ? dup_n(o->body, o->body_len) : NULL;
  r->headers = calloc(o->nheaders + s->nheaders + 1, sizeof(char *));
  bool ok = r->url != NULL && r->headers != NULL && (o->method == NULL || r->method != NULL) &&
            (o->body == NULL || r->body != NULL);
  for (size_t i = 0; ok && i < o->nheaders + s->nheaders; i++) {
    r->headers[i] = strdup(i < o->nheaders ? o->headers[i] : s->headers[i - o->nheaders]);
    ok = r->headers[i] != NULL;
  }
  r->o.nheaders = o->nheaders + s->nheaders;
  r->o.method = r->method;
  r->o.url = r->url;
  r->o.body = r->body;
  r->o.headers = (const char *const *)r->headers;
  r->next = s->reqs;
  if (s->reqs != NULL) {
    s->reqs->prev = r;
  }
  s->reqs = r;
  if (!ok) {
    req_free(r);
    snprintf(err, errlen, "ENOMEM: out of memory");
    return NULL;
  }
  if (probe) {
    r->probe = true;
    s->probe_inflight = true;
  }
  if (s->st.inflight >= s->o.max_concurrency) {
    enqueue(r, false);
  } else if (!try_attempt(r, err, errlen)) {
    if (r->probe) {
      s->probe_inflight = false;
    }
    s->st.rejected++;
    req_free(r); /* refused at once: the caller hears it now, `done` never runs */
    return NULL;
  }
  return r;
}

void vg_source_cancel(vg_source_req_t *r)
{
  if (r == NULL) {
    return;
  }
  vg_source_t *s = r->s;
  if (r->http != NULL) {
    vg_httpc_cancel(r->http);
    s->st.inflight--;
  }
  if (r->retry != NULL) {
    r->retry->req = NULL;
    uv_timer_stop(&r->retry->timer);
    uv_close((uv_handle_t *)&r->retry->timer, timer_closed);
  }
  if (r->queued) {
    for (vg_source_req_t **pp = &s->q_head; *pp != NULL; pp = &(*pp)->q_next) {
      if (*pp == r) {
        *pp = r->q_next;
        break;
      }
    }
    s->q_tail = NULL;
    for (vg_source_req_t *q = s->q_head; q != NULL; q = q->q_next) {
      s->q_tail = q;
    }
    s->st.queued--;
  }
  if (r->probe) {
    s->probe_inflight = false;
  }
  s->st.cancelled++;
  req_free(r);
  pump(s);
}

/* ---- the registry ---- */

vg_sources_t *vg_sources_new(uv_loop_t *loop, vg_httpc_t *httpc)
{
  vg_sources_t *ss = calloc(1, sizeof(*ss));
  if (ss != NULL) {
    ss->loop = loop;
    ss->httpc = httpc;
    ss->rng = uv_hrtime() | 1;
  }
  return ss;
}

vg_source_t *vg_sources_get(vg_sources_t *ss, const char *name, const vg_source_opts_t *o)
{
  vg_source_t *s = ss->list;
  while (s != NULL && strcmp(s->name, name) != 0) {
    s = s->next;
  }
  if (s == NULL) {
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->name = strdup(name)) == NULL) {
      free(s);
      return NULL;
    }
    s->ss = ss;
    s->next = ss->list;
    ss->list = s;
  }
  if (o != NULL && !s->configured) {
    s->o = *o;
  } else if (s->o.max_concurrency == 0) {
    vg_source_opts_default(&s->o);
  }
  if (s->o.max_concurrency == 0) {
    s->o.max_concurrency = 1;
  }
  pump(s);
  return s;
}

int vg_source_configure(vg_source_t *s,
                        const vg_source_opts_t *o,
                        const char *const *headers,
                        size_t nheaders)
{
  char **copy = calloc(nheaders + 1, sizeof(char *));
  if (copy == NULL) {
    return -1;
  }
  for (size_t i = 0; i < nheaders; i++) {
    if ((copy[i] = strdup(headers[i])) == NULL) {
      while (i-- > 0) {
        free(copy[i]);
      }
      free(copy);
      return -1;
    }
  }
  for (size_t i = 0; i < s->nheaders; i++) {
    free(s->headers[i]);
  }
  free(s->headers);
  s->headers = copy;
  s->nheaders = nheaders;
  s->o = *o;
  if (s->o.max_concurrency == 0) {
    s->o.max_concurrency = 1;
  }
  s->configured = true;
  pump(s);
  return 0;
}

void vg_sources_each(vg_sources_t *ss,
                     void (*fn)(void *, const char *, const vg_source_stats_t *),
                     void *ud)
{
  for (vg_source_t *s = ss != NULL ? ss->list : NULL; s != NULL; s = s->next) {
    vg_source_stats_t st;
    vg_source_stats(s, &st);
    fn(ud, s->name, &st);
  }
}

void vg_source_stats(const vg_source_t *s, vg_source_stats_t *out)
{
  *out = s->st;
  if (out->breaker == VG_BREAKER_OPEN && now_ms(s->ss) >= s->open_until_ms) {
    out->breaker = VG_BREAKER_HALF_OPEN; /* the next request will be the probe */
  }
}

void vg_sources_free(vg_sources_t *ss)
{
  if (ss == NULL) {
    return;
  }
  ss->freeing = true;
  while (ss->list != NULL) {
    vg_source_t *s = ss->list;
    ss->list = s->next;
    while (s->reqs != NULL) {
      vg_source_cancel(s->reqs);
    }
    for (size_t i = 0; i < s->nheaders; i++) {
      memset(s->headers[i], 0, strlen(s->headers[i])); /* may hold a secret */
      free(s->headers[i]);
    }
    free(s->headers);
    free(s->name);
    free(s);
  }
  if (ss->open_timers == 0) {
    free(ss);
  }
}
