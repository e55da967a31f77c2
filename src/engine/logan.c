/* Named log analysers: a miner, per-minute rings per service and per template, events, and a
 * detector per template fed when a minute closes; the registry that keeps them by name; and
 * their snapshot format ("VGLA" + version, little-endian). See logan.h for the time model. */
#include "engine/logan.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errbuf.h"

#define NO_MINUTE INT64_MIN
#define ALL 0u /* service index of "all services" */
#define BLOB_MAGIC "VGLA"
#define DEFAULT_MAX_ANALYSERS 256
#define DEFAULT_MAX_TEMPLATES 2000
#define OTHER_SERVICE "other"
/* logan_advance leaves a minute open this long after its end, for lines that come late */
#define ADVANCE_GRACE_S 60.0

typedef struct {
  int64_t minute; /* NO_MINUTE: unused slot */
  uint32_t lines, errors;
} minute_t;

typedef struct {
  char *name;
  uint64_t lines, errors;
  int64_t first; /* first minute with a line in the window (NO_MINUTE: none) */
  minute_t *ring;
} service_t;

typedef struct {
  uint32_t svc;
  uint64_t errors;
} by_service_t;

typedef struct {
  uint64_t id;
  uint64_t count, errors;
  double first_seen, last_seen;
  uint32_t service; /* where first seen */
  char level[VG_LOGAN_LEVEL_MAX + 1];
  int64_t fed; /* last minute its detector absorbed */
  uint32_t nby;
  by_service_t *by; /* error lines per service */
  minute_t *ring;
  vg_detector_t det;
} tmpl_t;

typedef struct {
  uint64_t id;
  double first_seen;
  uint32_t service;
  char level[VG_LOGAN_LEVEL_MAX + 1];
  bool error;
  char *line;
  size_t line_len;
} event_t;

/* Everything an analyser holds but its name: what a restore replaces at once. */
typedef struct {
  vg_logan_opts_t o; /* masks point into mask_store */
  char *mask_store[VG_LOGAN_MAX_MASKS];
  uint32_t w; /* ring slots: window minutes + 1 */
  vg_logmine_t *miner;
  uint64_t lines, errors, late, nanomalies;
  int64_t cur; /* the open minute */
  service_t *svc;
  uint32_t nsvc, capsvc;
  uint32_t last_svc; /* cache of the last service looked up */
  tmpl_t **tv;
  size_t nt, capt;
  uint32_t *hash; /* index + 1 into tv by id; 0 empty */
  size_t hcap;
  event_t *ev;
  size_t nev;
  vg_logan_anomaly_t *an; /* minute in minutes here; seconds when read */
  size_t nan;
} state_t;

struct vg_logan {
  char *name;
  bool dirty;
  state_t s;
};

struct vg_logan_registry {
  vg_logan_t **v;
  size_t n, cap, max;
};

static char *dup_n(const char *s, size_t n)
{
  char *d = malloc(n + 1);
  if (d != NULL) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static int64_t minute_of(double ts)
{
  return (int64_t)floor(ts / 60.0);
}

/* ---- options ---- */

void logan_opts_default(vg_logan_opts_t *o)
{
  memset(o, 0, sizeof(*o));
  o->window = 3600;
  o->recent = 300;
  o->spike_factor = 3;
  o->spike_min = 5;
  o->trend_factor = 2;
  o->trend_min = 5;
  o->max_events = 100;
  o->max_services = 64;
  o->detector = VG_DETECT_ROBUST;
  o->detector_window = 32;
  logmine_opts_default(&o->miner);
  o->miner.max_clusters = DEFAULT_MAX_TEMPLATES;
  o->miner.max_line = 16384;
}

int logan_opts_check(vg_logan_opts_t *o, char *err, size_t errlen)
{
  vg_logan_opts_t d;
  logan_opts_default(&d);
  if (o->window == 0) {
    o->window = d.window;
  }
  if (o->recent == 0) {
    o->recent = d.recent;
  }
  if (o->window < 60 || o->window > 86400) {
    vg_errf(err, errlen, "option 'window' must be 1 minute to 1 day");
    return -1;
  }
  o->window -= o->window % 60;
  if (o->recent < 60) {
    o->recent = 60;
  }
  o->recent -= o->recent % 60;
  if (o->recent > o->window) {
    o->recent = o->window;
  }
  const struct {
    const char *name;
    double *v, def;
  } pos[] = {
    { "spike_factor", &o->spike_factor, d.spike_factor },
    { "spike_min", &o->spike_min, d.spike_min },
    { "trend_factor", &o->trend_factor, d.trend_factor },
    { "trend_min", &o->trend_min, d.trend_min },
  };
  for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++) {
    if (*pos[i].v == 0) {
      *pos[i].v = pos[i].def;
    }
    if (!(*pos[i].v > 0) || !isfinite(*pos[i].v)) {
      vg_errf(err, errlen, "option '%s' must be positive", pos[i].name);
      return -1;
    }
  }
  if (o->max_events == 0) {
    o->max_events = d.max_events;
  }
  if (o->max_events > 10000) {
    vg_errf(err, errlen, "option 'max_events' must be 1..10000");
    return -1;
  }
  if (o->max_services == 0) {
    o->max_services = d.max_services;
  }
  if (o->max_services > 1024) {
    vg_errf(err, errlen, "option 'max_services' must be 1..1024");
    return -1;
  }
  if (detect_kind_name(o->detector) == NULL) {
    vg_errf(err, errlen, "option 'detector' is not a detector kind");
    return -1;
  }
  if (o->detector_window == 0) {
    o->detector_window = d.detector_window;
  }
  if (o->detector_window < 3 || o->detector_window > VG_DETECT_WINDOW_MAX) {
    vg_errf(err, errlen, "option 'detector_window' must be 3..%d", VG_DETECT_WINDOW_MAX);
    return -1;
  }
  if (o->miner.max_clusters == 0) {
    o->miner.max_clusters = DEFAULT_MAX_TEMPLATES;
  }
  if (o->miner.max_clusters > 1000000) {
    vg_errf(err, errlen, "option 'max_templates' must be 1..1000000");
    return -1;
  }
  if (o->nmasks > VG_LOGAN_MAX_MASKS) {
    vg_errf(err, errlen, "at most %d masks", VG_LOGAN_MAX_MASKS);
    return -1;
  }
  for (size_t i = 0; i < o->nmasks; i++) {
    if (o->masks[i] == NULL) {
      vg_errf(err, errlen, "mask %zu is missing", i + 1);
      return -1;
    }
  }
  /* the miner's own ranges, checked by building one (cheap next to an analyser) */
  vg_logmine_t *m = logmine_new(&o->miner, err, errlen);
  if (m == NULL) {
    return -1;
  }
  for (size_t i = 0; i < o->nmasks; i++) {
    char e[128];
    if (logmine_add_mask(m, o->masks[i], strlen(o->masks[i]), e, sizeof(e)) != 0) {
      vg_errf(err, errlen, "mask %zu: %s", i + 1, e);
      logmine_free(m);
      return -1;
    }
  }
  logmine_free(m);
  return 0;
}

bool logan_opts_equal(const vg_logan_opts_t *a, const vg_logan_opts_t *b)
{
  const vg_logmine_opts_t *x = &a->miner, *y = &b->miner;
  if (a->window != b->window || a->recent != b->recent || a->spike_factor != b->spike_factor ||
      a->spike_min != b->spike_min || a->trend_factor != b->trend_factor ||
      a->trend_min != b->trend_min || a->max_events != b->max_events ||
      a->max_services != b->max_services || a->detector != b->detector ||
      a->detector_window != b->detector_window || a->nmasks != b->nmasks) {
    return false;
  }
  vg_logmine_opts_t dx = *x, dy = *y; /* zero fields of miner options mean their default */
  vg_logmine_opts_t def;
  logmine_opts_default(&def);
  vg_logmine_opts_t *pair[2] = { &dx, &dy };
  for (int i = 0; i < 2; i++) {
    vg_logmine_opts_t *p = pair[i];
    p->similarity = p->similarity == 0 ? def.similarity : p->similarity;
    p->depth = p->depth == 0 ? def.depth : p->depth;
    p->max_children = p->max_children == 0 ? def.max_children : p->max_children;
    p->max_line = p->max_line == 0 ? def.max_line : p->max_line;
    p->max_tokens = p->max_tokens == 0 ? def.max_tokens : p->max_tokens;
  }
  if (dx.similarity != dy.similarity || dx.depth != dy.depth ||
      dx.max_children != dy.max_children || dx.max_clusters != dy.max_clusters ||
      dx.max_line != dy.max_line || dx.max_tokens != dy.max_tokens || dx.masks != dy.masks ||
      dx.match_only != dy.match_only) {
    return false;
  }
  for (size_t i = 0; i < a->nmasks; i++) {
    if (strcmp(a->masks[i], b->masks[i]) != 0) {
      return false;
    }
  }
  return true;
}

/* ---- levels ---- */

static const char *const level_words[] = {
  "FATAL",   "PANIC", "CRITICAL", "CRIT",   "SEVERE", "ERROR", "ERR",
  "WARNING", "WARN",  "INFO",     "NOTICE", "DEBUG",  "TRACE", NULL,
};

static bool is_alnum(unsigned char c)
{
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

void logan_guess_level(const char *line, size_t len, char *out)
{
  out[0] = '\0';
  size_t n = len < 256 ? len : 256;
  size_t i = 0;
  while (i < n) {
    if (!is_alnum((unsigned char)line[i])) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < n && is_alnum((unsigned char)line[j])) {
      j++;
    }
    /* a word cut at byte 256 still counts when it is whole there, as in the Lua original */
    for (int k = 0; level_words[k] != NULL; k++) {
      size_t wl = strlen(level_words[k]);
      if (wl == j - i && strncasecmp(line + i, level_words[k], wl) == 0) {
        const char *w = strcmp(level_words[k], "WARNING") == 0 ? "warn" : level_words[k];
        size_t o = 0;
        for (; w[o] != '\0' && o < VG_LOGAN_LEVEL_MAX; o++) {
          out[o] = (char)tolower((unsigned char)w[o]);
        }
        out[o] = '\0';
        return;
      }
    }
    i = j;
  }
}

bool logan_is_error(const char *level)
{
  static const char *const errs[] = {
    "error", "err",       "fatal", "critical", "crit", "panic",
    "emerg", "emergency", "alert", "severe",   NULL,
  };
  if (level == NULL) {
    return false;
  }
  for (int i = 0; errs[i] != NULL; i++) {
    if (strcasecmp(level, errs[i]) == 0) {
      return true;
    }
  }
  return false;
}

static void copy_level(char *dst, const char *src)
{
  size_t i = 0;
  for (; src[i] != '\0' && i < VG_LOGAN_LEVEL_MAX; i++) {
    dst[i] = (char)tolower((unsigned char)src[i]);
  }
  dst[i] = '\0';
}

/* ---- state ---- */

static minute_t *ring_new(uint32_t w)
{
  minute_t *r = malloc(sizeof(*r) * w);
  if (r != NULL) {
    for (uint32_t i = 0; i < w; i++) {
      r[i] = (minute_t){ NO_MINUTE, 0, 0 };
    }
  }
  return r;
}

static minute_t *ring_at(minute_t *ring, uint32_t w, int64_t m)
{
  int64_t iw = (int64_t)w;
  if (iw <= 0) {
    return ring; /* not reached: every state has a window of at least 2 minutes */
  }
  int64_t k = m % iw;
  return &ring[k < 0 ? k + iw : k];
}

static uint32_t ring_count(const minute_t *ring, uint32_t w, int64_t m)
{
  const minute_t *e = ring_at((minute_t *)ring, w, m);
  return e->minute == m ? e->lines : 0;
}

static void tmpl_free(tmpl_t *t)
{
  if (t != NULL) {
    free(t->by);
    free(t->ring);
    free(t);
  }
}

static void state_free(state_t *s)
{
  logmine_free(s->miner);
  for (uint32_t i = 0; i < s->nsvc; i++) {
    free(s->svc[i].name);
    free(s->svc[i].ring);
  }
  free(s->svc);
  for (size_t i = 0; i < s->nt; i++) {
    tmpl_free(s->tv[i]);
  }
  free(s->tv);
  free(s->hash);
  for (size_t i = 0; i < s->nev; i++) {
    free(s->ev[i].line);
  }
  free(s->ev);
  free(s->an);
  for (size_t i = 0; i < VG_LOGAN_MAX_MASKS; i++) {
    free(s->mask_store[i]);
  }
  memset(s, 0, sizeof(*s));
}

static int add_service(state_t *s, const char *name, size_t len)
{
  if (s->nsvc == s->capsvc) {
    uint32_t cap = s->capsvc ? s->capsvc * 2 : 8;
    service_t *v = realloc(s->svc, sizeof(*v) * cap);
    if (v == NULL) {
      return -1;
    }
    s->svc = v;
    s->capsvc = cap;
  }
  service_t *v = &s->svc[s->nsvc];
  memset(v, 0, sizeof(*v));
  v->first = NO_MINUTE;
  v->name = dup_n(name, len);
  v->ring = ring_new(s->w);
  if (v->name == NULL || v->ring == NULL) {
    free(v->name);
    free(v->ring);
    return -1;
  }
  return (int)s->nsvc++;
}

/* A state with the checked options `o` (masks copied) and a fresh miner; -1 on out of memory
 * or a mask the miner refuses. */
static int state_init(state_t *s, const vg_logan_opts_t *o, char *err, size_t errlen)
{
  memset(s, 0, sizeof(*s));
  s->o = *o;
  s->cur = NO_MINUTE;
  s->w = o->window / 60 + 1;
  for (size_t i = 0; i < o->nmasks; i++) {
    s->mask_store[i] = dup_n(o->masks[i], strlen(o->masks[i]));
    if (s->mask_store[i] == NULL) {
      goto nomem;
    }
    s->o.masks[i] = s->mask_store[i];
  }
  for (size_t i = o->nmasks; i < VG_LOGAN_MAX_MASKS; i++) {
    s->o.masks[i] = NULL;
  }
  s->miner = logmine_new(&s->o.miner, err, errlen);
  if (s->miner == NULL) {
    goto fail;
  }
  for (size_t i = 0; i < o->nmasks; i++) {
    if (logmine_add_mask(s->miner, s->o.masks[i], strlen(s->o.masks[i]), err, errlen) != 0) {
      goto fail;
    }
  }
  s->ev = calloc(o->max_events, sizeof(*s->ev));
  s->an = calloc(o->max_events, sizeof(*s->an));
  if (s->ev == NULL || s->an == NULL || add_service(s, "", 0) < 0) {
    goto nomem;
  }
  return 0;
nomem:
  vg_errf(err, errlen, "out of memory");
fail:
  state_free(s);
  return -1;
}

static size_t hslot(uint64_t id, size_t hcap)
{
  return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 17) & (hcap - 1);
}

static int rehash(state_t *s, size_t need)
{
  size_t cap = 64;
  while (cap < need * 2) {
    cap *= 2;
  }
  uint32_t *h = calloc(cap, sizeof(*h));
  if (h == NULL) {
    return -1;
  }
  for (size_t i = 0; i < s->nt; i++) {
    size_t k = hslot(s->tv[i]->id, cap);
    while (h[k] != 0) {
      k = (k + 1) & (cap - 1);
    }
    h[k] = (uint32_t)i + 1;
  }
  free(s->hash);
  s->hash = h;
  s->hcap = cap;
  return 0;
}

static tmpl_t *find_tmpl(const state_t *s, uint64_t id)
{
  if (s->hcap == 0) {
    return NULL;
  }
  for (size_t k = hslot(id, s->hcap); s->hash[k] != 0; k = (k + 1) & (s->hcap - 1)) {
    tmpl_t *t = s->tv[s->hash[k] - 1];
    if (t->id == id) {
      return t;
    }
  }
  return NULL;
}

static tmpl_t *new_tmpl(state_t *s, uint64_t id, int64_t minute)
{
  if (s->nt == s->capt) {
    size_t cap = s->capt ? s->capt * 2 : 16;
    tmpl_t **v = realloc(s->tv, sizeof(tmpl_t *) * cap);
    if (v == NULL) {
      return NULL;
    }
    s->tv = v;
    s->capt = cap;
  }
  if ((s->nt + 1) * 2 > s->hcap && rehash(s, s->nt + 1) != 0) {
    return NULL;
  }
  tmpl_t *t = calloc(1, sizeof(*t));
  if (t == NULL || (t->ring = ring_new(s->w)) == NULL) {
    free(t);
    return NULL;
  }
  vg_detect_opts_t d;
  detect_opts_default(&d, s->o.detector);
  d.window = s->o.detector_window;
  d.warmup = 0; /* the kind's default for this window */
  if (detect_init(&t->det, &d, NULL, 0) != 0) {
    tmpl_free(t);
    return NULL;
  }
  t->id = id;
  t->fed = (s->cur != NO_MINUTE && minute < s->cur ? s->cur : minute) - 1;
  s->tv[s->nt] = t;
  size_t k = hslot(id, s->hcap);
  while (s->hash[k] != 0) {
    k = (k + 1) & (s->hcap - 1);
  }
  s->hash[k] = (uint32_t)++s->nt;
  return t;
}

/* Drops the templates for which keep() is false and rebuilds the index. */
static void drop_tmpls(state_t *s, bool (*keep)(state_t *s, tmpl_t *t, void *ud), void *ud)
{
  size_t j = 0;
  for (size_t i = 0; i < s->nt; i++) {
    if (keep(s, s->tv[i], ud)) {
      s->tv[j++] = s->tv[i];
    } else {
      tmpl_free(s->tv[i]);
    }
  }
  s->nt = j;
  if (rehash(s, s->nt) != 0) {
    /* keep the old table's size: rebuild in place (cannot fail) */
    memset(s->hash, 0, sizeof(*s->hash) * s->hcap);
    for (size_t i = 0; i < s->nt; i++) {
      size_t k = hslot(s->tv[i]->id, s->hcap);
      while (s->hash[k] != 0) {
        k = (k + 1) & (s->hcap - 1);
      }
      s->hash[k] = (uint32_t)i + 1;
    }
  }
}

static int add_by(tmpl_t *t, uint32_t svc, uint64_t n)
{
  for (uint32_t i = 0; i < t->nby; i++) {
    if (t->by[i].svc == svc) {
      t->by[i].errors += n;
      return 0;
    }
  }
  by_service_t *v = realloc(t->by, sizeof(*v) * (t->nby + 1));
  if (v == NULL) {
    return -1;
  }
  t->by = v;
  t->by[t->nby++] = (by_service_t){ svc, n };
  return 0;
}

/* The service index of `name`, created on first use; past max_services, "other". */
static int service_of(state_t *s, const char *name, size_t len)
{
  if (s->last_svc != ALL && s->last_svc < s->nsvc && strlen(s->svc[s->last_svc].name) == len &&
      memcmp(s->svc[s->last_svc].name, name, len) == 0) {
    return (int)s->last_svc;
  }
  for (uint32_t i = 1; i < s->nsvc; i++) {
    if (strlen(s->svc[i].name) == len && memcmp(s->svc[i].name, name, len) == 0) {
      s->last_svc = i;
      return (int)i;
    }
  }
  if (s->nsvc - 1 >= s->o.max_services) {
    for (uint32_t i = 1; i < s->nsvc; i++) {
      if (strcmp(s->svc[i].name, OTHER_SERVICE) == 0) {
        return (int)i;
      }
    }
    return add_service(s, OTHER_SERVICE, strlen(OTHER_SERVICE));
  }
  int i = add_service(s, name, len);
  if (i > 0) {
    s->last_svc = (uint32_t)i;
  }
  return i;
}

static int service_find(const state_t *s, const char *name)
{
  if (name == NULL) {
    return ALL;
  }
  for (uint32_t i = 1; i < s->nsvc; i++) {
    if (strcmp(s->svc[i].name, name) == 0) {
      return (int)i;
    }
  }
  return -1;
}

static void push_anomaly(state_t *s, const vg_logan_anomaly_t *an)
{
  if (s->nan == s->o.max_events) {
    memmove(s->an, s->an + 1, sizeof(*s->an) * (s->nan - 1));
    s->nan--;
  }
  s->an[s->nan++] = *an;
  s->nanomalies++;
}

/* Mean lines per minute of t over the window before minute m (since its first minute). */
static double tmpl_baseline(const state_t *s, const tmpl_t *t, int64_t m)
{
  int64_t from = m - (int64_t)s->w + 1;
  int64_t first = minute_of(t->first_seen);
  if (first > from) {
    from = first;
  }
  if (from >= m) {
    return 0;
  }
  uint64_t sum = 0;
  for (int64_t k = from; k < m; k++) {
    sum += ring_count(t->ring, s->w, k);
  }
  return (double)sum / (double)(m - from);
}

/* Closes the minutes before `m`: each template's detector absorbs its counts of the minutes it
 * has not seen yet (at most a window of them), anomalies are recorded. */
static void close_minutes(state_t *s, int64_t m)
{
  if (s->cur == NO_MINUTE || m <= s->cur) {
    if (s->cur == NO_MINUTE) {
      s->cur = m;
    }
    return;
  }
  int64_t from = m - (int64_t)s->w;
  for (size_t i = 0; i < s->nt; i++) {
    tmpl_t *t = s->tv[i];
    int64_t k = t->fed + 1 > from ? t->fed + 1 : from;
    for (; k < m; k++) {
      uint32_t x = ring_count(t->ring, s->w, k);
      bool flag = false;
      double score = detect_update(&t->det, (double)x, &flag);
      if (flag && x >= s->o.spike_min) {
        double base = tmpl_baseline(s, t, k);
        if ((double)x > base) {
          vg_logan_anomaly_t an = { t->id, (double)k, x, base, score };
          push_anomaly(s, &an);
        }
      }
    }
    t->fed = m - 1;
  }
  s->cur = m;
}

void logan_advance(vg_logan_t *a, double now)
{
  state_t *s = &a->s;
  if (!isfinite(now) || s->cur == NO_MINUTE) {
    return;
  }
  int64_t m = minute_of(now - ADVANCE_GRACE_S);
  if (m > s->cur) {
    close_minutes(s, m);
    a->dirty = true;
  }
}

static bool keep_known(state_t *s, tmpl_t *t, void *ud)
{
  (void)ud;
  vg_logmine_template_t mt;
  return logmine_get(s->miner, t->id, &mt) && mt.id == t->id;
}

/* Once the table holds 10 % more than the miner keeps, forgets the evicted templates. */
static void prune_evicted(state_t *s)
{
  size_t cap = s->o.miner.max_clusters;
  if (s->nt > cap + cap / 10 + 10) {
    drop_tmpls(s, keep_known, NULL);
  }
}

static void fold_ring(state_t *s, minute_t *into, const minute_t *from)
{
  for (uint32_t i = 0; i < s->w; i++) {
    if (from[i].minute == NO_MINUTE) {
      continue;
    }
    if (into[i].minute == from[i].minute) {
      into[i].lines += from[i].lines;
      into[i].errors += from[i].errors;
    } else if (into[i].minute == NO_MINUTE || into[i].minute < from[i].minute) {
      into[i] = from[i];
    }
  }
}

typedef struct {
  tmpl_t *into;
  bool failed;
} fold_t;

static bool keep_unfolded(state_t *s, tmpl_t *t, void *ud)
{
  fold_t *f = ud;
  vg_logmine_template_t mt;
  if (t == f->into || !logmine_get(s->miner, t->id, &mt) || mt.id != f->into->id) {
    return true;
  }
  tmpl_t *d = f->into;
  d->count += t->count;
  d->errors += t->errors;
  if (t->first_seen < d->first_seen) {
    d->first_seen = t->first_seen;
    d->service = t->service;
    memcpy(d->level, t->level, sizeof(d->level));
  }
  if (t->last_seen > d->last_seen) {
    d->last_seen = t->last_seen;
  }
  for (uint32_t i = 0; i < t->nby; i++) {
    if (add_by(d, t->by[i].svc, t->by[i].errors) != 0) {
      f->failed = true; /* those errors stay counted in d->errors, not per service */
    }
  }
  fold_ring(s, d->ring, t->ring);
  return false;
}

/* The miner folded templates into `into`: moves their counts there and keeps one new-template
 * event for the pattern, the earliest. The detector of `into` goes on; theirs are dropped. */
static void fold(state_t *s, tmpl_t *into)
{
  fold_t f = { into, false };
  drop_tmpls(s, keep_unfolded, &f);
  size_t j = 0;
  bool seen = false;
  for (size_t i = 0; i < s->nev; i++) {
    event_t *e = &s->ev[i];
    vg_logmine_template_t mt;
    bool same = e->id == into->id || (logmine_get(s->miner, e->id, &mt) && mt.id == into->id);
    if (same && seen) {
      free(e->line);
      continue;
    }
    if (same) {
      seen = true;
      e->id = into->id;
    }
    s->ev[j++] = *e;
  }
  s->nev = j;
}

static int push_event(state_t *s, const event_t *e, const char *line, size_t len)
{
  size_t keep = len < VG_LOGAN_LINE_KEPT ? len : VG_LOGAN_LINE_KEPT;
  char *copy = dup_n(line, keep);
  if (copy == NULL) {
    return -1;
  }
  if (s->nev == s->o.max_events) {
    free(s->ev[0].line);
    memmove(s->ev, s->ev + 1, sizeof(*s->ev) * (s->nev - 1));
    s->nev--;
  }
  s->ev[s->nev] = *e;
  s->ev[s->nev].line = copy;
  s->ev[s->nev].line_len = keep;
  s->nev++;
  return 0;
}

static void count_minute(minute_t *ring, uint32_t w, int64_t m, bool err)
{
  minute_t *e = ring_at(ring, w, m);
  if (e->minute != m) {
    *e = (minute_t){ m, 0, 0 };
  }
  e->lines++;
  e->errors += err ? 1 : 0;
}

int logan_add_ex(vg_logan_t *a,
                 const char *line,
                 size_t len,
                 double ts,
                 const char *level,
                 const char *service,
                 vg_logan_result_t *res)
{
  vg_logan_result_t tmp;
  if (res == NULL) {
    res = &tmp;
  }
  memset(res, 0, sizeof(*res));
  state_t *s = &a->s;
  if (!isfinite(ts) || fabs(ts) > 1e13) {
    res->status = VG_LOGMINE_NOMEM;
    return -1;
  }
  int64_t m = minute_of(ts);
  if (level != NULL) {
    copy_level(res->level, level);
  } else {
    logan_guess_level(line, len, res->level);
  }
  res->error = logan_is_error(res->level);
  if (service == NULL) {
    service = a->name;
  }
  res->status = logmine_add(s->miner, line, len, &res->mine);
  if (res->status == VG_LOGMINE_NOMEM) {
    return -1;
  }
  if (res->status == VG_LOGMINE_EMPTY || res->status == VG_LOGMINE_NOMATCH) {
    return 0;
  }
  close_minutes(s, m);
  int svc = service_of(s, service, strlen(service));
  if (svc < 0) {
    res->status = VG_LOGMINE_NOMEM;
    return -1;
  }
  a->dirty = true;
  tmpl_t *t = find_tmpl(s, res->mine.id);
  if (t == NULL) {
    t = new_tmpl(s, res->mine.id, m);
    if (t == NULL) {
      res->status = VG_LOGMINE_NOMEM; /* the miner learned it; the counts start next time */
      return -1;
    }
    t->first_seen = t->last_seen = ts;
    t->service = (uint32_t)svc;
    memcpy(t->level, res->level, sizeof(t->level));
  }
  bool late = s->cur != NO_MINUTE && m <= s->cur - (int64_t)s->w;
  res->late = late;
  s->lines++;
  s->late += late ? 1 : 0;
  s->errors += res->error ? 1 : 0;
  uint32_t both[2] = { ALL, (uint32_t)svc };
  for (int i = 0; i < 2; i++) {
    service_t *v = &s->svc[both[i]];
    v->lines++;
    v->errors += res->error ? 1 : 0;
    if (!late) {
      count_minute(v->ring, s->w, m, res->error);
      if (v->first == NO_MINUTE || m < v->first) {
        v->first = m;
      }
    }
  }
  t->count++;
  if (ts > t->last_seen) {
    t->last_seen = ts;
  }
  if (!late) {
    count_minute(t->ring, s->w, m, res->error);
  }
  if (res->error) {
    t->errors++;
    add_by(t, (uint32_t)svc, 1); /* out of memory: counted in the totals only */
  }
  if (res->status == VG_LOGMINE_CREATED) {
    event_t e = { .id = t->id, .first_seen = ts, .service = (uint32_t)svc, .error = res->error };
    memcpy(e.level, res->level, sizeof(e.level));
    push_event(s, &e, line, len); /* out of memory: no event, the counts are kept */
  }
  if (res->mine.merged > 0) {
    fold(s, t);
  }
  if (res->status == VG_LOGMINE_CREATED) {
    prune_evicted(s);
  }
  return 0;
}

int logan_add(vg_logan_t *a, const char *line, size_t len, double ts, const char *level)
{
  vg_logan_result_t r;
  if (logan_add_ex(a, line, len, ts, level, NULL, &r) != 0) {
    return -1;
  }
  return r.status == VG_LOGMINE_EMPTY || r.status == VG_LOGMINE_NOMATCH ? 1 : 0;
}

const char *logan_name(const vg_logan_t *a)
{
  return a->name;
}

const vg_logan_opts_t *logan_opts(const vg_logan_t *a)
{
  return &a->s.o;
}

/* ---- queries ---- */

void logan_stats(const vg_logan_t *a, vg_logan_stats_t *out)
{
  const state_t *s = &a->s;
  memset(out, 0, sizeof(*out));
  out->lines = s->lines;
  out->errors = s->errors;
  out->late = s->late;
  out->anomalies = s->nanomalies;
  out->templates = s->nt;
  out->services = s->nsvc - 1;
  out->minute = s->cur == NO_MINUTE ? NAN : (double)s->cur * 60.0;
  logmine_stats(s->miner, &out->miner);
}

static int64_t oldest_of(const state_t *s, const vg_logan_query_t *q)
{
  return minute_of(q->now) - (int64_t)(s->o.window / 60);
}

bool logan_error_rate(const vg_logan_t *a,
                      const vg_logan_query_t *q,
                      uint64_t *errors,
                      uint64_t *lines)
{
  const state_t *s = &a->s;
  *errors = *lines = 0;
  int i = service_find(s, q->service);
  if (i < 0) {
    return false;
  }
  int64_t oldest = oldest_of(s, q);
  const minute_t *r = s->svc[i].ring;
  for (uint32_t k = 0; k < s->w; k++) {
    if (r[k].minute != NO_MINUTE && r[k].minute >= oldest) {
      *errors += r[k].errors;
      *lines += r[k].lines;
    }
  }
  return true;
}

static int cmp_top(const void *x, const void *y)
{
  const vg_logan_top_t *a = x, *b = y;
  if (a->count != b->count) {
    return a->count > b->count ? -1 : 1;
  }
  return a->id < b->id ? -1 : a->id > b->id;
}

size_t logan_top_errors(const vg_logan_t *a,
                        const vg_logan_query_t *q,
                        vg_logan_top_t *out,
                        size_t n)
{
  const state_t *s = &a->s;
  int svc = service_find(s, q->service);
  if (svc < 0 || n == 0) {
    return 0;
  }
  uint64_t total = s->svc[svc].errors;
  size_t k = 0;
  for (size_t i = 0; i < s->nt; i++) {
    const tmpl_t *t = s->tv[i];
    uint64_t c = 0;
    if (svc == ALL) {
      c = t->errors;
    } else {
      for (uint32_t j = 0; j < t->nby; j++) {
        c += t->by[j].svc == (uint32_t)svc ? t->by[j].errors : 0;
      }
    }
    if (c == 0) {
      continue;
    }
    vg_logan_top_t e = { t->id, c, total > 0 ? (double)c / (double)total : 0 };
    if (k < n) { /* filling: sorted once full */
      out[k++] = e;
      if (k == n) {
        qsort(out, k, sizeof(*out), cmp_top);
      }
    } else if (cmp_top(&e, &out[n - 1]) < 0) { /* better than the last: insert in order */
      size_t at = n - 1;
      while (at > 0 && cmp_top(&e, &out[at - 1]) < 0) {
        out[at] = out[at - 1];
        at--;
      }
      out[at] = e;
    }
  }
  if (k < n) {
    qsort(out, k, sizeof(*out), cmp_top);
  }
  return k;
}

static int cmp_spike(const void *x, const void *y)
{
  const vg_logan_spike_t *a = x, *b = y;
  return a->minute < b->minute ? -1 : a->minute > b->minute;
}

size_t logan_spikes(const vg_logan_t *a, const vg_logan_query_t *q, vg_logan_spike_t *out)
{
  const state_t *s = &a->s;
  int svc = service_find(s, q->service);
  if (svc < 0 || s->svc[svc].first == NO_MINUTE) {
    return 0;
  }
  const service_t *v = &s->svc[svc];
  int64_t oldest = oldest_of(s, q);
  int64_t first = v->first > oldest ? v->first : oldest;
  int64_t span = minute_of(q->now) - first + 1;
  uint64_t total = 0;
  for (uint32_t k = 0; k < s->w; k++) {
    if (v->ring[k].minute != NO_MINUTE && v->ring[k].minute >= first) {
      total += v->ring[k].errors;
    }
  }
  size_t n = 0;
  for (uint32_t k = 0; k < s->w; k++) {
    const minute_t *e = &v->ring[k];
    if (e->minute == NO_MINUTE || e->minute < first) {
      continue;
    }
    double base = span > 1 ? (double)(total - e->errors) / (double)(span - 1) : 0;
    if ((double)e->errors >= s->o.spike_min && (double)e->errors > s->o.spike_factor * base) {
      out[n++] = (vg_logan_spike_t){ (double)e->minute * 60.0, e->errors, base };
    }
  }
  qsort(out, n, sizeof(*out), cmp_spike);
  return n;
}

static double since_of(const state_t *s, const vg_logan_query_t *q)
{
  return isnan(q->since) ? q->now - (double)s->o.window : q->since;
}

size_t logan_new_templates(const vg_logan_t *a,
                           const vg_logan_query_t *q,
                           vg_logan_event_t *out,
                           size_t max)
{
  const state_t *s = &a->s;
  double since = since_of(s, q);
  int svc = service_find(s, q->service);
  if (svc < 0) {
    return 0;
  }
  size_t n = 0;
  for (size_t i = 0; i < s->nev && n < max; i++) {
    const event_t *e = &s->ev[i];
    if (e->first_seen < since || (q->errors_only && !e->error) ||
        (svc != ALL && e->service != (uint32_t)svc)) {
      continue;
    }
    vg_logan_event_t *o = &out[n++];
    o->id = e->id;
    o->first_seen = e->first_seen;
    o->service = s->svc[e->service].name;
    memcpy(o->level, e->level, sizeof(o->level));
    o->error = e->error;
    o->line = e->line;
    o->line_len = e->line_len;
  }
  return n;
}

size_t logan_anomalies(const vg_logan_t *a,
                       const vg_logan_query_t *q,
                       vg_logan_anomaly_t *out,
                       size_t max)
{
  const state_t *s = &a->s;
  double since = since_of(s, q);
  size_t n = 0;
  for (size_t i = 0; i < s->nan && n < max; i++) {
    vg_logan_anomaly_t e = s->an[i];
    e.minute *= 60.0;
    if (e.minute + 60.0 > since) { /* the minute ends after `since` */
      out[n++] = e;
    }
  }
  return n;
}

static int cmp_trend(const void *x, const void *y)
{
  const vg_logan_trend_t *a = x, *b = y;
  if (a->growth != b->growth) {
    return a->growth > b->growth ? -1 : 1;
  }
  return a->id < b->id ? -1 : a->id > b->id;
}

size_t logan_trending(const vg_logan_t *a, const vg_logan_query_t *q, vg_logan_trend_t *out)
{
  const state_t *s = &a->s;
  int svc = service_find(s, q->service);
  if (svc < 0 || s->svc[svc].first == NO_MINUTE) {
    return 0;
  }
  int64_t oldest = oldest_of(s, q);
  int64_t recent_from = minute_of(q->now) - (int64_t)(s->o.recent / 60) + 1;
  int64_t start = s->svc[svc].first > oldest ? s->svc[svc].first : oldest;
  int64_t before_minutes = recent_from - start < 1 ? 1 : recent_from - start;
  double recent_minutes = (double)s->o.recent / 60.0; /* a whole number */
  size_t n = 0;
  for (size_t i = 0; i < s->nt; i++) {
    const tmpl_t *t = s->tv[i];
    uint64_t recent = 0, before = 0;
    for (uint32_t k = 0; k < s->w; k++) {
      const minute_t *e = &t->ring[k];
      if (e->minute == NO_MINUTE) {
        continue;
      }
      if (e->minute >= recent_from) {
        recent += e->lines;
      } else if (e->minute >= oldest) {
        before += e->lines;
      }
    }
    double growth = ((double)recent / recent_minutes) /
                    ((double)(before > 0 ? before : 1) / (double)before_minutes);
    if ((double)recent >= s->o.trend_min && growth >= s->o.trend_factor) {
      out[n++] = (vg_logan_trend_t){ t->id, recent, before, growth };
    }
  }
  qsort(out, n, sizeof(*out), cmp_trend);
  return n;
}

bool logan_template(vg_logan_t *a, uint64_t id, vg_logan_template_t *out)
{
  state_t *s = &a->s;
  vg_logmine_template_t mt;
  if (!logmine_get(s->miner, id, &mt)) {
    return false;
  }
  const tmpl_t *t = find_tmpl(s, mt.id);
  memset(out, 0, sizeof(*out));
  out->id = mt.id;
  out->text = mt.text;
  out->len = mt.len;
  out->service = s->svc[ALL].name;
  if (t != NULL) {
    out->count = t->count;
    out->errors = t->errors;
    out->first_seen = t->first_seen;
    out->last_seen = t->last_seen;
    out->service = s->svc[t->service].name;
    memcpy(out->level, t->level, sizeof(out->level));
  } else {
    out->count = mt.count; /* learned before a restore that had no counts for it */
    out->first_seen = out->last_seen = NAN;
  }
  return true;
}

/* ---- snapshot format ---- */

typedef struct {
  uint8_t *p;
  size_t len, cap;
  bool oom;
} wbuf_t;

static void put(wbuf_t *b, const void *src, size_t n)
{
  if (b->oom) {
    return;
  }
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n) {
      cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, src, n);
  b->len += n;
}

static void put_u64(wbuf_t *b, uint64_t v)
{
  uint8_t x[8];
  for (int i = 0; i < 8; i++) {
    x[i] = (uint8_t)(v >> (8 * i));
  }
  put(b, x, 8);
}

static void put_u32(wbuf_t *b, uint32_t v)
{
  uint8_t x[4];
  for (int i = 0; i < 4; i++) {
    x[i] = (uint8_t)(v >> (8 * i));
  }
  put(b, x, 4);
}

static void put_f64(wbuf_t *b, double d)
{
  uint64_t v;
  memcpy(&v, &d, 8);
  put_u64(b, v);
}

static void put_str(wbuf_t *b, const char *s, size_t n)
{
  put_u32(b, (uint32_t)n);
  put(b, s, n);
}

static void put_ring(wbuf_t *b, const minute_t *r, uint32_t w)
{
  uint32_t used = 0;
  for (uint32_t i = 0; i < w; i++) {
    used += r[i].minute != NO_MINUTE;
  }
  put_u32(b, used);
  for (uint32_t i = 0; i < w; i++) {
    if (r[i].minute != NO_MINUTE) {
      put_u64(b, (uint64_t)r[i].minute);
      put_u32(b, r[i].lines);
      put_u32(b, r[i].errors);
    }
  }
}

void *logan_snapshot(vg_logan_t *a, size_t *len)
{
  state_t *s = &a->s;
  const vg_logan_opts_t *o = &s->o;
  wbuf_t b = { 0 };
  put(&b, BLOB_MAGIC, 4);
  put_u32(&b, VG_LOGAN_BLOB_VERSION);
  put_u32(&b, o->window);
  put_u32(&b, o->recent);
  put_f64(&b, o->spike_factor);
  put_f64(&b, o->spike_min);
  put_f64(&b, o->trend_factor);
  put_f64(&b, o->trend_min);
  put_u32(&b, o->max_events);
  put_u32(&b, o->max_services);
  put_u32(&b, (uint32_t)o->detector);
  put_u32(&b, o->detector_window);
  put_f64(&b, o->miner.similarity);
  put_u32(&b, o->miner.depth);
  put_u32(&b, o->miner.max_children);
  put_u64(&b, o->miner.max_clusters);
  put_u64(&b, o->miner.max_line);
  put_u32(&b, o->miner.max_tokens);
  put_u32(&b, o->miner.masks);
  put_u32(&b, o->miner.match_only);
  put_u32(&b, (uint32_t)o->nmasks);
  for (size_t i = 0; i < o->nmasks; i++) {
    put_str(&b, o->masks[i], strlen(o->masks[i]));
  }
  put_u64(&b, s->lines);
  put_u64(&b, s->errors);
  put_u64(&b, s->late);
  put_u64(&b, s->nanomalies);
  put_u64(&b, (uint64_t)s->cur);
  put_u32(&b, s->nsvc);
  for (uint32_t i = 0; i < s->nsvc; i++) {
    const service_t *v = &s->svc[i];
    put_str(&b, v->name, strlen(v->name));
    put_u64(&b, v->lines);
    put_u64(&b, v->errors);
    put_u64(&b, (uint64_t)v->first);
    put_ring(&b, v->ring, s->w);
  }
  put_u32(&b, (uint32_t)s->nt);
  for (size_t i = 0; i < s->nt; i++) {
    const tmpl_t *t = s->tv[i];
    put_u64(&b, t->id);
    put_u64(&b, t->count);
    put_u64(&b, t->errors);
    put_f64(&b, t->first_seen);
    put_f64(&b, t->last_seen);
    put_u32(&b, t->service);
    put_str(&b, t->level, strlen(t->level));
    put_u64(&b, (uint64_t)t->fed);
    put_u32(&b, t->nby);
    for (uint32_t j = 0; j < t->nby; j++) {
      put_u32(&b, t->by[j].svc);
      put_u64(&b, t->by[j].errors);
    }
    put_ring(&b, t->ring, s->w);
    uint8_t det[VG_DETECT_SNAPSHOT_SIZE];
    detect_snapshot(&t->det, det);
    put(&b, det, sizeof(det));
  }
  put_u32(&b, (uint32_t)s->nev);
  for (size_t i = 0; i < s->nev; i++) {
    const event_t *e = &s->ev[i];
    put_u64(&b, e->id);
    put_f64(&b, e->first_seen);
    put_u32(&b, e->service);
    put_str(&b, e->level, strlen(e->level));
    put_u32(&b, e->error);
    put_str(&b, e->line, e->line_len);
  }
  put_u32(&b, (uint32_t)s->nan);
  for (size_t i = 0; i < s->nan; i++) {
    const vg_logan_anomaly_t *e = &s->an[i];
    put_u64(&b, e->id);
    put_f64(&b, e->minute);
    put_u64(&b, e->count);
    put_f64(&b, e->baseline);
    put_f64(&b, e->score);
  }
  size_t mlen = 0;
  char *mblob = logmine_snapshot(s->miner, &mlen);
  if (mblob == NULL) {
    free(b.p);
    return NULL;
  }
  put_u64(&b, mlen);
  put(&b, mblob, mlen);
  free(mblob);
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  *len = b.len;
  return b.p;
}

typedef struct {
  const uint8_t *p;
  size_t len, off;
  const char *bad; /* first problem, NULL while fine */
} rbuf_t;

static const uint8_t *take(rbuf_t *r, size_t n)
{
  if (r->bad != NULL || n > r->len - r->off) {
    if (r->bad == NULL) {
      r->bad = "truncated";
    }
    return NULL;
  }
  const uint8_t *p = r->p + r->off;
  r->off += n;
  return p;
}

static uint64_t get_u64(rbuf_t *r)
{
  const uint8_t *p = take(r, 8);
  uint64_t v = 0;
  for (int i = 0; p != NULL && i < 8; i++) {
    v |= (uint64_t)p[i] << (8 * i);
  }
  return v;
}

static uint32_t get_u32(rbuf_t *r)
{
  const uint8_t *p = take(r, 4);
  uint32_t v = 0;
  for (int i = 0; p != NULL && i < 4; i++) {
    v |= (uint32_t)p[i] << (8 * i);
  }
  return v;
}

static double get_f64(rbuf_t *r)
{
  uint64_t v = get_u64(r);
  double d;
  memcpy(&d, &v, 8);
  return d;
}

/* A string of at most `max` bytes: pointer into the blob, length in *n. */
static const char *get_str(rbuf_t *r, size_t max, size_t *n)
{
  uint32_t l = get_u32(r);
  if (r->bad == NULL && l > max) {
    r->bad = "string too long";
    return NULL;
  }
  *n = l;
  return (const char *)take(r, l);
}

static bool check(rbuf_t *r, bool ok, const char *what)
{
  if (!ok && r->bad == NULL) {
    r->bad = what;
  }
  return r->bad == NULL;
}

/* A count of entries, each at least `min_size` bytes, that the rest of the blob can hold. */
static uint32_t get_count(rbuf_t *r, size_t min_size, size_t max)
{
  uint32_t n = get_u32(r);
  check(r, n <= max && (size_t)n * min_size <= r->len - r->off, "count out of range");
  return r->bad == NULL ? n : 0;
}

/* Minutes of timestamps logan_add accepts (|ts| <= 1e13 s), and one below. */
static bool sane_minute(int64_t m)
{
  return m >= -200000000000LL && m <= 200000000000LL;
}

static void get_ring(rbuf_t *r, minute_t *ring, uint32_t w, int64_t cur)
{
  uint32_t n = get_count(r, 16, w);
  for (uint32_t i = 0; i < n && r->bad == NULL; i++) {
    int64_t m = (int64_t)get_u64(r);
    uint32_t lines = get_u32(r);
    uint32_t errors = get_u32(r);
    if (!check(r, cur != NO_MINUTE && m <= cur && m > cur - (int64_t)w && errors <= lines,
               "minute out of range")) {
      return;
    }
    minute_t *e = ring_at(ring, w, m);
    if (!check(r, e->minute == NO_MINUTE, "minute twice")) {
      return;
    }
    *e = (minute_t){ m, lines, errors };
  }
}

static void get_level(rbuf_t *r, char *out)
{
  size_t n = 0;
  const char *p = get_str(r, VG_LOGAN_LEVEL_MAX, &n);
  if (p == NULL) {
    out[0] = '\0';
    return;
  }
  memcpy(out, p, n);
  out[n] = '\0';
  check(r, strlen(out) == n, "NUL in a level");
}

/* Parses a blob into a new state *s (options from the blob). -1 with a message, nothing held. */
static int parse_blob(state_t *s, const void *blob, size_t len, char *err, size_t errlen)
{
  rbuf_t r = { blob, len, 0, NULL };
  memset(s, 0, sizeof(*s));
  const uint8_t *magic = take(&r, 4);
  if (magic == NULL || memcmp(magic, BLOB_MAGIC, 4) != 0) {
    vg_errf(err, errlen, "not a log analyser snapshot");
    return -1;
  }
  uint32_t version = get_u32(&r);
  if (r.bad == NULL && version != VG_LOGAN_BLOB_VERSION) {
    vg_errf(err, errlen, "snapshot version %u, this build reads %d", version,
            VG_LOGAN_BLOB_VERSION);
    return -1;
  }
  vg_logan_opts_t o;
  memset(&o, 0, sizeof(o));
  o.window = get_u32(&r);
  o.recent = get_u32(&r);
  o.spike_factor = get_f64(&r);
  o.spike_min = get_f64(&r);
  o.trend_factor = get_f64(&r);
  o.trend_min = get_f64(&r);
  o.max_events = get_u32(&r);
  o.max_services = get_u32(&r);
  o.detector = (vg_detect_kind_t)get_u32(&r);
  o.detector_window = get_u32(&r);
  o.miner.similarity = get_f64(&r);
  o.miner.depth = get_u32(&r);
  o.miner.max_children = get_u32(&r);
  o.miner.max_clusters = (size_t)get_u64(&r);
  o.miner.max_line = (size_t)get_u64(&r);
  o.miner.max_tokens = get_u32(&r);
  o.miner.masks = get_u32(&r);
  uint32_t mo = get_u32(&r);
  o.miner.match_only = mo != 0;
  o.nmasks = get_count(&r, 4, VG_LOGAN_MAX_MASKS);
  char *masks[VG_LOGAN_MAX_MASKS] = { 0 };
  int rc = -1;
  for (size_t i = 0; i < o.nmasks && r.bad == NULL; i++) {
    size_t n = 0;
    const char *p = get_str(&r, 4096, &n);
    if (p != NULL && (masks[i] = dup_n(p, n)) == NULL) {
      vg_errf(err, errlen, "out of memory");
      goto done;
    }
    o.masks[i] = masks[i];
    check(&r, p == NULL || strlen(masks[i]) == n, "NUL in a mask");
  }
  if (r.bad != NULL) {
    goto bad;
  }
  vg_logan_opts_t checked = o;
  char ebuf[160];
  if (mo > 1 || o.window == 0 || o.window % 60 != 0 || o.recent % 60 != 0 ||
      logan_opts_check(&checked, ebuf, sizeof(ebuf)) != 0 || !logan_opts_equal(&checked, &o)) {
    r.bad = "options out of range";
    goto bad;
  }
  if (state_init(s, &o, err, errlen) != 0) {
    goto done;
  }
  s->lines = get_u64(&r);
  s->errors = get_u64(&r);
  s->late = get_u64(&r);
  s->nanomalies = get_u64(&r);
  s->cur = (int64_t)get_u64(&r);
  check(&r, s->errors <= s->lines && s->late <= s->lines, "counts out of range");
  check(&r, s->cur == NO_MINUTE || sane_minute(s->cur), "minute out of range");
  uint32_t nsvc = get_count(&r, 4 + 8 * 3 + 4, (size_t)o.max_services + 2);
  check(&r, nsvc >= 1, "no services");
  for (uint32_t i = 0; i < nsvc && r.bad == NULL; i++) {
    size_t n = 0;
    const char *name = get_str(&r, VG_LOGAN_NAME_MAX, &n);
    if (name == NULL) {
      break;
    }
    service_t *v;
    if (i == 0) {
      check(&r, n == 0, "bad service list");
    } else {
      check(&r, n > 0 && memchr(name, 0, n) == NULL, "bad service name");
      if (r.bad == NULL && add_service(s, name, n) < 0) {
        vg_errf(err, errlen, "out of memory");
        goto fail;
      }
    }
    v = &s->svc[i < s->nsvc ? i : 0];
    v->lines = get_u64(&r);
    v->errors = get_u64(&r);
    v->first = (int64_t)get_u64(&r);
    check(&r, v->first == NO_MINUTE || sane_minute(v->first), "minute out of range");
    get_ring(&r, v->ring, s->w, s->cur);
  }
  uint32_t nt = get_count(&r, 8 * 5 + 4 * 3 + 8 + 4 + VG_DETECT_SNAPSHOT_SIZE,
                          o.miner.max_clusters + o.miner.max_clusters / 10 + 11);
  for (uint32_t i = 0; i < nt && r.bad == NULL; i++) {
    uint64_t id = get_u64(&r);
    if (!check(&r, id > 0 && find_tmpl(s, id) == NULL, "template id twice")) {
      break;
    }
    tmpl_t *t = new_tmpl(s, id, 0);
    if (t == NULL) {
      vg_errf(err, errlen, "out of memory");
      goto fail;
    }
    t->count = get_u64(&r);
    t->errors = get_u64(&r);
    t->first_seen = get_f64(&r);
    t->last_seen = get_f64(&r);
    t->service = get_u32(&r);
    get_level(&r, t->level);
    t->fed = (int64_t)get_u64(&r);
    check(&r, sane_minute(t->fed) && (s->cur == NO_MINUTE || t->fed < s->cur),
          "minute out of range");
    check(&r,
          t->errors <= t->count && t->service < s->nsvc && isfinite(t->first_seen) &&
              isfinite(t->last_seen),
          "template out of range");
    uint32_t nby = get_count(&r, 12, s->nsvc);
    if (nby > 0) {
      t->by = malloc(sizeof(*t->by) * nby);
      if (t->by == NULL) {
        vg_errf(err, errlen, "out of memory");
        goto fail;
      }
    }
    for (uint32_t j = 0; j < nby && r.bad == NULL; j++) {
      t->by[j].svc = get_u32(&r);
      t->by[j].errors = get_u64(&r);
      t->nby = j + 1;
      check(&r, t->by[j].svc < s->nsvc, "service out of range");
    }
    get_ring(&r, t->ring, s->w, s->cur);
    const uint8_t *det = take(&r, VG_DETECT_SNAPSHOT_SIZE);
    if (det != NULL &&
        detect_restore(&t->det, det, VG_DETECT_SNAPSHOT_SIZE, ebuf, sizeof(ebuf)) != 0) {
      r.bad = "bad detector";
    }
    check(&r, t->det.o.kind == o.detector, "detector of another kind");
  }
  uint32_t nev = get_count(&r, 8 + 8 + 4 + 4 + 4 + 4, o.max_events);
  for (uint32_t i = 0; i < nev && r.bad == NULL; i++) {
    event_t ev = { 0 };
    ev.id = get_u64(&r);
    ev.first_seen = get_f64(&r);
    ev.service = get_u32(&r);
    get_level(&r, ev.level);
    uint32_t iserr = get_u32(&r);
    ev.error = iserr != 0;
    size_t n = 0;
    const char *line = get_str(&r, VG_LOGAN_LINE_KEPT, &n);
    if (!check(&r, ev.service < s->nsvc && iserr <= 1 && isfinite(ev.first_seen),
               "event out of range")) {
      break;
    }
    if (push_event(s, &ev, line, n) != 0) {
      vg_errf(err, errlen, "out of memory");
      goto fail;
    }
  }
  uint32_t nan_ = get_count(&r, 40, o.max_events);
  for (uint32_t i = 0; i < nan_ && r.bad == NULL; i++) {
    vg_logan_anomaly_t *e = &s->an[i];
    e->id = get_u64(&r);
    e->minute = get_f64(&r);
    e->count = get_u64(&r);
    e->baseline = get_f64(&r);
    e->score = get_f64(&r);
    s->nan = i + 1;
    check(&r, isfinite(e->minute) && isfinite(e->baseline) && e->score >= 0 && e->score <= 1,
          "anomaly out of range");
  }
  uint64_t mlen = get_u64(&r);
  if (check(&r, mlen == r.len - r.off, "miner snapshot length")) {
    const uint8_t *m = take(&r, (size_t)mlen);
    if (m != NULL &&
        logmine_restore(s->miner, (const char *)m, (size_t)mlen, ebuf, sizeof(ebuf)) != 0) {
      r.bad = "bad miner snapshot";
    }
  }
  if (r.bad != NULL) {
    goto fail_bad;
  }
  rc = 0;
  goto done;
fail_bad:
  state_free(s);
bad:
  vg_errf(err, errlen, "malformed log analyser snapshot (%s)", r.bad);
  goto done;
fail:
  state_free(s);
done:
  for (size_t i = 0; i < VG_LOGAN_MAX_MASKS; i++) {
    free(masks[i]);
  }
  return rc;
}

/* ---- registry ---- */

vg_logan_registry_t *logan_registry_new(size_t max)
{
  vg_logan_registry_t *r = calloc(1, sizeof(*r));
  if (r != NULL) {
    r->max = max ? max : DEFAULT_MAX_ANALYSERS;
  }
  return r;
}

static void logan_free(vg_logan_t *a)
{
  if (a != NULL) {
    state_free(&a->s);
    free(a->name);
    free(a);
  }
}

void logan_registry_free(vg_logan_registry_t *r)
{
  if (r == NULL) {
    return;
  }
  for (size_t i = 0; i < r->n; i++) {
    logan_free(r->v[i]);
  }
  free(r->v);
  free(r);
}

vg_logan_t *logan_registry_get(vg_logan_registry_t *r, const char *name)
{
  for (size_t i = 0; i < r->n; i++) {
    if (strcmp(r->v[i]->name, name) == 0) {
      return r->v[i];
    }
  }
  return NULL;
}

size_t logan_registry_count(const vg_logan_registry_t *r)
{
  return r->n;
}

size_t logan_registry_max(const vg_logan_registry_t *r)
{
  return r->max;
}

vg_logan_t *logan_registry_at(vg_logan_registry_t *r, size_t i)
{
  return i < r->n ? r->v[i] : NULL;
}

/* Templates the analysers of r may hold in all (sum of max_templates), `skip` left out. */
static size_t templates_held(const vg_logan_registry_t *r, const vg_logan_t *skip)
{
  size_t n = 0;
  for (size_t i = 0; i < r->n; i++) {
    n += r->v[i] != skip ? r->v[i]->s.o.miner.max_clusters : 0;
  }
  return n;
}

static int check_budget(
    const vg_logan_registry_t *r, const vg_logan_t *skip, size_t want, char *err, size_t errlen)
{
  if (templates_held(r, skip) + want > VG_LOGAN_TEMPLATES_MAX) {
    vg_errf(err, errlen, "full: the log analysers would hold more than %d templates in all",
            VG_LOGAN_TEMPLATES_MAX);
    return -1;
  }
  return 0;
}

/* Room for one more and a checked name; -1 with a message otherwise. */
static int can_add(vg_logan_registry_t *r, const char *name, char *err, size_t errlen)
{
  size_t n = name != NULL ? strlen(name) : 0;
  if (n == 0 || n > VG_LOGAN_NAME_MAX) {
    vg_errf(err, errlen, "an analyser name is 1..%d bytes", VG_LOGAN_NAME_MAX);
    return -1;
  }
  if (logan_registry_get(r, name) != NULL) {
    vg_errf(err, errlen, "analyser '%s' exists already", name);
    return -1;
  }
  if (r->n >= r->max) {
    vg_errf(err, errlen, "full: at most %zu log analysers", r->max);
    return -1;
  }
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 8;
    vg_logan_t **v = realloc(r->v, sizeof(vg_logan_t *) * cap);
    if (v == NULL) {
      vg_errf(err, errlen, "out of memory");
      return -1;
    }
    r->v = v;
    r->cap = cap;
  }
  return 0;
}

static vg_logan_t *insert(vg_logan_registry_t *r, const char *name, state_t *s)
{
  vg_logan_t *a = calloc(1, sizeof(*a));
  if (a == NULL || (a->name = dup_n(name, strlen(name))) == NULL) {
    free(a);
    return NULL;
  }
  a->s = *s;
  r->v[r->n++] = a;
  return a;
}

vg_logan_t *logan_registry_add(
    vg_logan_registry_t *r, const char *name, const vg_logan_opts_t *o, char *err, size_t errlen)
{
  if (can_add(r, name, err, errlen) != 0) {
    return NULL;
  }
  vg_logan_opts_t opts;
  if (o == NULL) {
    logan_opts_default(&opts);
  } else {
    opts = *o;
  }
  if (logan_opts_check(&opts, err, errlen) != 0 ||
      check_budget(r, NULL, opts.miner.max_clusters, err, errlen) != 0) {
    return NULL;
  }
  state_t s;
  if (state_init(&s, &opts, err, errlen) != 0) {
    return NULL;
  }
  vg_logan_t *a = insert(r, name, &s);
  if (a == NULL) {
    state_free(&s);
    vg_errf(err, errlen, "out of memory");
  }
  return a;
}

size_t logan_registry_collect(vg_logan_registry_t *r, vg_snapshot_emit_fn emit, void *ctx)
{
  size_t n = 0;
  for (size_t i = 0; i < r->n; i++) {
    vg_logan_t *a = r->v[i];
    if (!a->dirty) {
      continue;
    }
    size_t len;
    void *blob = logan_snapshot(a, &len);
    if (blob == NULL) {
      continue;
    }
    emit(ctx, a->name, blob, len);
    free(blob);
    a->dirty = false;
    n++;
  }
  return n;
}

int logan_registry_restore(vg_logan_registry_t *r,
                           const char *name,
                           const void *blob,
                           size_t len,
                           char *err,
                           size_t errlen)
{
  vg_logan_t *a = name != NULL ? logan_registry_get(r, name) : NULL;
  if (a == NULL && can_add(r, name, err, errlen) != 0) {
    return -1;
  }
  state_t s;
  if (parse_blob(&s, blob, len, err, errlen) != 0) {
    return -1;
  }
  if (check_budget(r, a, s.o.miner.max_clusters, err, errlen) != 0) {
    state_free(&s);
    return -1;
  }
  if (a != NULL) {
    state_free(&a->s);
    a->s = s;
    a->dirty = false;
    return 0;
  }
  if (insert(r, name, &s) == NULL) {
    state_free(&s);
    vg_errf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}
