/* Guard rails for actions: see guard.h. Targets, action types, blast scopes and blast entries
 * live in string-keyed chained hash tables. Every persisted entry has a dirty and a stored bit,
 * so vg_guard_each_dirty reports each change, and each deletion exactly once; a node whose
 * state is all gone but whose deletion is still to be reported stays until it is reported. */
#include "engine/guard.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(VG_GUARD_INVALID < 8, "vg_guard_stats_t.refused has 8 slots");

#define SWEEP_BUCKETS 8 /* hash buckets per table that each check or take looks at */
#define EPS 1e-9        /* a token short by float rounding only is still a token */
#define SHOWN_NAME 64   /* bytes of a name quoted in a refusal */

enum { K_TARGET, K_TYPE, K_SCOPE, K_MEMBER };

/* Persisted entries of a node (dirty and stored bits). */
enum { E_BUCKET = 1, E_COOLDOWN = 2, E_BREAKER = 4, E_BLAST = 8 };

typedef struct node node_t;
struct node {
  node_t *hnext;         /* hash chain */
  node_t *dprev, *dnext; /* the dirty list, while dirty != 0 */
  uint64_t hash;
  const char *key; /* stored after the node's struct, NUL-terminated */
  size_t klen;
  uint8_t kind;
  uint8_t dirty;  /* entries changed since the last vg_guard_each_dirty */
  uint8_t stored; /* entries the store holds (as far as we told it) */
};

typedef struct {
  node_t **b;
  size_t nb, n, cursor;
} table_t;

typedef struct {
  double tokens;
  int64_t at; /* the time of `tokens` */
  bool live;  /* false: full (nothing to remember) */
} bucket_t;

typedef struct {
  node_t n;
  bucket_t bucket;
  bool cooling;
  bool tripped;   /* open, or half-open once open_until has passed */
  bool probe;     /* a half-open probe is running */
  uint32_t fails; /* consecutive failures */
  uint32_t running;
  int64_t cool_until;
  int64_t open_until;
  int64_t last_fail;
  int64_t probe_prev_until; /* open_until before the probe re-armed it (for a refund) */
} target_t;

typedef struct {
  node_t n;
  bucket_t bucket;
  vg_rate_t rate; /* resolved from the overrides */
  uint32_t max_concurrent;
  uint32_t running;
} type_t;

typedef struct member member_t;

typedef struct {
  node_t n;
  member_t *head; /* the targets in the window */
  uint32_t count;
  int64_t oldest; /* the smallest first_seen among them */
} scope_t;

struct member {
  node_t n;       /* key: scope \x1f target */
  scope_t *scope; /* NULL: out of the window, kept until its deletion is reported */
  member_t *sprev, *snext;
  int64_t first_seen;
  uint32_t refs; /* takes holding it (a refund of the last one removes it) */
};

typedef struct {
  char *name;
  size_t len;
  vg_rate_t rate;
  uint32_t max_concurrent;
} type_conf_t;

typedef struct name_chunk name_chunk_t;
struct name_chunk {
  name_chunk_t *next;
  size_t used, cap;
  char data[];
};

struct vg_guard {
  vg_guard_opts_t o; /* o.types cleared: the copies are in confs */
  type_conf_t *confs;
  size_t nconfs;
  table_t targets, types, scopes, members;
  node_t *dirty_head, *dirty_tail;
  uint64_t seed;
  uint64_t allowed, refused[8];
  uint32_t running, tripped;
  int64_t reclaim_after;
  name_chunk_t *names; /* the names vg_guard_each_dirty reported last */
};

static void set_why(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void names_free(vg_guard_t *g);

static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
  if (why == NULL || whylen == 0) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
}

/* ---- small helpers ---- */

static int64_t add_ms(int64_t t, uint64_t ms)
{
  if (ms > (uint64_t)INT64_MAX || t > INT64_MAX - (int64_t)ms) {
    return INT64_MAX;
  }
  return t + (int64_t)ms;
}

/* strlen that stops looking after max bytes (returns max + 1 then). */
static size_t name_len(const char *s, size_t max)
{
  const char *nul = memchr(s, '\0', max + 1);
  return nul != NULL ? (size_t)(nul - s) : max + 1;
}

/* 'name' for a sentence: unprintable bytes as \xNN, long names cut short with "...". */
static const char *shown(char *out, size_t outlen, const char *s, size_t len)
{
  size_t o = 0;
  out[o++] = '\'';
  for (size_t i = 0; i < len && i < SHOWN_NAME && o + 5 < outlen; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c >= 0x7f || c == '\'' || c == '\\') {
      o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
    } else {
      out[o++] = (char)c;
    }
  }
  if (len > SHOWN_NAME && o + 4 < outlen) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o++] = '\'';
  out[o] = '\0';
  return out;
}

/* "1h", "30m", "90s", "1500ms". */
static const char *duration(char *out, size_t outlen, uint64_t ms)
{
  if (ms >= 3600000 && ms % 3600000 == 0) {
    snprintf(out, outlen, "%lluh", (unsigned long long)(ms / 3600000));
  } else if (ms >= 60000 && ms % 60000 == 0) {
    snprintf(out, outlen, "%llum", (unsigned long long)(ms / 60000));
  } else if (ms >= 1000 && ms % 1000 == 0) {
    snprintf(out, outlen, "%llus", (unsigned long long)(ms / 1000));
  } else {
    snprintf(out, outlen, "%llums", (unsigned long long)ms);
  }
  return out;
}

/* "112 s" (rounded up: asking again that many seconds later succeeds). */
static const char *wait_for(char *out, size_t outlen, double ms)
{
  if (!(ms < 9.2e18)) {
    snprintf(out, outlen, "never (the rate has no period)");
  } else {
    snprintf(out, outlen, "%.0f s", ms > 1e-6 ? ceil((ms - 1e-6) / 1000.0) : 0.0);
  }
  return out;
}

static uint64_t hash_key(uint64_t seed, const char *s, size_t len)
{
  uint64_t h = 1469598103934665603u ^ seed; /* FNV-1a, seeded, then mixed (splitmix64) */
  for (size_t i = 0; i < len; i++) {
    h = (h ^ (unsigned char)s[i]) * 1099511628211u;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9u;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebu;
  return h ^ (h >> 31);
}

/* ---- tables ---- */

static int table_init(table_t *t)
{
  t->nb = 16;
  t->b = calloc(t->nb, sizeof(node_t *));
  return t->b != NULL ? 0 : -1;
}

static node_t *table_find(const table_t *t, const char *key, size_t klen, uint64_t h)
{
  for (node_t *n = t->b[h & (t->nb - 1)]; n != NULL; n = n->hnext) {
    if (n->hash == h && n->klen == klen && memcmp(n->key, key, klen) == 0) {
      return n;
    }
  }
  return NULL;
}

/* On failure keeps the old buckets (still correct, only slower). */
static void table_resize(table_t *t, size_t nb)
{
  node_t **b = calloc(nb, sizeof(node_t *));
  if (b == NULL) {
    return;
  }
  for (size_t i = 0; i < t->nb; i++) {
    for (node_t *n = t->b[i], *next; n != NULL; n = next) {
      next = n->hnext;
      n->hnext = b[n->hash & (nb - 1)];
      b[n->hash & (nb - 1)] = n;
    }
  }
  free(t->b);
  t->b = b;
  t->nb = nb;
}

static void table_add(table_t *t, node_t *n)
{
  if (t->n >= t->nb) {
    table_resize(t, t->nb * 2);
  }
  node_t **head = &t->b[n->hash & (t->nb - 1)];
  n->hnext = *head;
  *head = n;
  t->n++;
}

static void table_del(table_t *t, node_t *n)
{
  for (node_t **pp = &t->b[n->hash & (t->nb - 1)]; *pp != NULL; pp = &(*pp)->hnext) {
    if (*pp == n) {
      *pp = n->hnext;
      t->n--;
      return;
    }
  }
}

static table_t *table_of(vg_guard_t *g, int kind)
{
  return kind == K_TARGET  ? &g->targets
         : kind == K_TYPE  ? &g->types
         : kind == K_SCOPE ? &g->scopes
                           : &g->members;
}

/* ---- nodes and the dirty list ---- */

static void *node_new(
    vg_guard_t *g, size_t size, int kind, const char *key, size_t klen, uint64_t h)
{
  node_t *n = calloc(1, size + klen + 1);
  if (n == NULL) {
    return NULL;
  }
  char *k = (char *)n + size;
  memcpy(k, key, klen);
  k[klen] = '\0';
  n->key = k;
  n->klen = klen;
  n->hash = h;
  n->kind = (uint8_t)kind;
  table_add(table_of(g, kind), n);
  return n;
}

static void mark(vg_guard_t *g, node_t *n, unsigned entry)
{
  if (n->dirty == 0) {
    n->dprev = g->dirty_tail;
    n->dnext = NULL;
    if (g->dirty_tail != NULL) {
      g->dirty_tail->dnext = n;
    } else {
      g->dirty_head = n;
    }
    g->dirty_tail = n;
  }
  n->dirty |= (uint8_t)entry;
}

static void unmark(vg_guard_t *g, node_t *n)
{
  if (n->dirty == 0) {
    return;
  }
  if (n->dprev != NULL) {
    n->dprev->dnext = n->dnext;
  } else {
    g->dirty_head = n->dnext;
  }
  if (n->dnext != NULL) {
    n->dnext->dprev = n->dprev;
  } else {
    g->dirty_tail = n->dprev;
  }
  n->dirty = 0;
  n->dprev = n->dnext = NULL;
}

static bool node_empty(const node_t *n)
{
  switch (n->kind) {
    case K_TARGET: {
      const target_t *t = (const target_t *)n;
      return !t->bucket.live && !t->cooling && t->fails == 0 && !t->tripped && !t->probe &&
             t->running == 0;
    }
    case K_TYPE: {
      const type_t *ty = (const type_t *)n;
      return !ty->bucket.live && ty->running == 0;
    }
    case K_SCOPE:
      return ((const scope_t *)n)->count == 0;
    default:
      return ((const member_t *)n)->scope == NULL;
  }
}

/* Frees a node that holds nothing any more, unless the store still has entries of it to
 * delete (then vg_guard_each_dirty frees it after reporting). NULL is fine. */
static void release(vg_guard_t *g, void *p)
{
  node_t *n = p;
  if (n != NULL && n->stored == 0 && node_empty(n)) {
    unmark(g, n);
    table_del(table_of(g, n->kind), n);
    free(n);
  }
}

/* ---- buckets ---- */

static bool rate_limited(const vg_rate_t *r)
{
  return r->count > 0;
}

static double rate_cap(const vg_rate_t *r)
{
  return r->count < 1 ? 1 : r->count;
}

/* Tokens at now (a clock that went back refills nothing). */
static double bucket_level(const bucket_t *b, const vg_rate_t *r, int64_t now)
{
  double cap = rate_cap(r);
  if (!b->live) {
    return cap;
  }
  double v = b->tokens;
  if (now > b->at && r->per_ms > 0) {
    v += ((double)now - (double)b->at) * r->count / (double)r->per_ms;
  }
  return v < cap ? v : cap;
}

/* ms until the bucket holds a whole token again (inf: never). */
static double bucket_wait(const bucket_t *b, const vg_rate_t *r, int64_t now)
{
  double need = 1 - EPS - bucket_level(b, r, now);
  if (need <= 0) {
    return 0;
  }
  return r->per_ms > 0 ? need * (double)r->per_ms / r->count : INFINITY;
}

static void bucket_add(
    vg_guard_t *g, node_t *n, bucket_t *b, const vg_rate_t *r, double d, int64_t now)
{
  if (!rate_limited(r) || (!b->live && d > 0)) {
    return;
  }
  double v = bucket_level(b, r, now) + d;
  b->tokens = v < 0 ? 0 : v; /* a value < 0 would read as "delete" in the store */
  b->at = b->live && b->at > now ? b->at : now;
  b->live = true;
  mark(g, n, E_BUCKET);
}

/* A full bucket is the same as none. */
static void bucket_settle(vg_guard_t *g, node_t *n, bucket_t *b, const vg_rate_t *r, int64_t now)
{
  if (b->live && (!rate_limited(r) || bucket_level(b, r, now) >= rate_cap(r) - EPS)) {
    b->live = false;
    mark(g, n, E_BUCKET);
  }
}

/* ---- targets ---- */

static bool breaker_on(const vg_guard_t *g)
{
  return g->o.breaker_failures > 0;
}

static void breaker_close(vg_guard_t *g, target_t *t)
{
  if (t->fails != 0 || t->tripped || t->probe) {
    if (t->tripped) {
      g->tripped--;
    }
    t->fails = 0;
    t->tripped = t->probe = false;
    t->open_until = 0;
    mark(g, &t->n, E_BREAKER);
  }
}

/* Drops what expired (without freeing the node). */
static void target_settle(vg_guard_t *g, target_t *t, int64_t now)
{
  bucket_settle(g, &t->n, &t->bucket, &g->o.target_rate, now);
  if (t->cooling && now >= t->cool_until) {
    t->cooling = false;
    mark(g, &t->n, E_COOLDOWN);
  }
  /* failures further apart than the cool-down are not a streak (and a target that failed
     once must not hold a slot for ever) */
  if (!breaker_on(g) || (!t->tripped && t->fails > 0 && g->o.breaker_cooldown_ms > 0 &&
                         now >= add_ms(t->last_fail, g->o.breaker_cooldown_ms))) {
    breaker_close(g, t);
  }
}

static void type_settle(vg_guard_t *g, type_t *ty, int64_t now)
{
  bucket_settle(g, &ty->n, &ty->bucket, &ty->rate, now);
}

/* The type's rate and concurrency limit, from the overrides or the defaults. */
static void type_limits(
    const vg_guard_t *g, const char *name, size_t len, vg_rate_t *rate, uint32_t *maxc)
{
  *rate = g->o.type_rate;
  *maxc = g->o.max_concurrent_type;
  for (size_t i = 0; i < g->nconfs; i++) {
    const type_conf_t *c = &g->confs[i];
    if (c->len == len && memcmp(c->name, name, len) == 0) {
      if (c->rate.count != 0 || c->rate.per_ms != 0) {
        *rate = c->rate;
      }
      if (c->max_concurrent != 0) {
        *maxc = c->max_concurrent;
      }
      return;
    }
  }
}

/* ---- blast scopes ---- */

static bool blast_on(const vg_guard_t *g)
{
  return g->o.blast_max_targets > 0 && g->o.blast_window_ms > 0;
}

static void member_join(vg_guard_t *g, scope_t *s, member_t *m, int64_t first_seen)
{
  m->scope = s;
  m->sprev = NULL;
  m->snext = s->head;
  if (s->head != NULL) {
    s->head->sprev = m;
  }
  s->head = m;
  if (s->count == 0 || first_seen < s->oldest) {
    s->oldest = first_seen;
  }
  s->count++;
  m->first_seen = first_seen;
  m->refs = 1;
  mark(g, &m->n, E_BLAST);
}

/* Out of the window; the node may be freed. */
static void member_leave(vg_guard_t *g, member_t *m)
{
  scope_t *s = m->scope;
  if (m->sprev != NULL) {
    m->sprev->snext = m->snext;
  } else {
    s->head = m->snext;
  }
  if (m->snext != NULL) {
    m->snext->sprev = m->sprev;
  }
  s->count--;
  m->scope = NULL;
  m->sprev = m->snext = NULL;
  m->refs = 0;
  mark(g, &m->n, E_BLAST);
  release(g, m);
}

/* Drops the targets whose window has passed (the scope itself is not freed here). */
static void scope_prune(vg_guard_t *g, scope_t *s, int64_t now)
{
  if (s->count == 0 || now < add_ms(s->oldest, g->o.blast_window_ms)) {
    return;
  }
  int64_t oldest = INT64_MAX;
  for (member_t *m = s->head, *next; m != NULL; m = next) {
    next = m->snext;
    if (now >= add_ms(m->first_seen, g->o.blast_window_ms)) {
      member_leave(g, m);
    } else if (m->first_seen < oldest) {
      oldest = m->first_seen;
    }
  }
  s->oldest = oldest;
}

/* ---- the sweep ---- */

static void sweep_node(vg_guard_t *g, node_t *n, int64_t now)
{
  if (n->kind == K_TARGET) {
    target_settle(g, (target_t *)n, now);
  } else if (n->kind == K_TYPE) {
    type_settle(g, (type_t *)n, now);
  } else {
    scope_prune(g, (scope_t *)n, now);
  }
  release(g, n);
}

static void sweep_bucket(vg_guard_t *g, table_t *t, size_t b, int64_t now)
{
  for (node_t *n = t->b[b], *next; n != NULL; n = next) {
    next = n->hnext;
    sweep_node(g, n, now);
  }
}

/* Looks at a few buckets of each table, so state nobody asks about again still goes. */
static void sweep(vg_guard_t *g, int64_t now)
{
  table_t *tables[] = { &g->targets, &g->types, &g->scopes };
  for (size_t k = 0; k < sizeof(tables) / sizeof(tables[0]); k++) {
    table_t *t = tables[k];
    for (int i = 0; i < SWEEP_BUCKETS; i++) {
      sweep_bucket(g, t, t->cursor++ & (t->nb - 1), now);
    }
    if (t->nb > 16 && t->n < t->nb / 8) {
      table_resize(t, t->nb / 2);
    }
  }
}

/* A table is full: before refusing, look at all of it for expired state (at most once a
 * second, so a guard that is really full does not scan on every request). */
static void reclaim(vg_guard_t *g, int64_t now)
{
  if (now < g->reclaim_after) {
    return;
  }
  g->reclaim_after = add_ms(now, 1000);
  table_t *tables[] = { &g->targets, &g->types, &g->scopes };
  for (size_t k = 0; k < sizeof(tables) / sizeof(tables[0]); k++) {
    for (size_t b = 0; b < tables[k]->nb; b++) {
      sweep_bucket(g, tables[k], b, now);
    }
  }
}

/* ---- one request ---- */

typedef struct {
  const char *type, *target, *scope;
  size_t tylen, tlen, slen;
  bool blast;                           /* a scope, and blast accounting on */
  char mkey[2 * VG_GUARD_MAX_NAME + 2]; /* scope \x1f target */
  size_t mlen;
  target_t *t;
  type_t *ty;
  scope_t *s;
  member_t *m;
  vg_rate_t type_rate;
  uint32_t type_max;
  bool probe; /* allowed as the breaker's probe */
} req_t;

/* A name's length, or false with the refusal in why. */
static bool name_ok(
    const char *what, const char *s, bool required, size_t *len, char *why, size_t whylen)
{
  *len = s != NULL ? name_len(s, VG_GUARD_MAX_NAME) : 0;
  if (*len > VG_GUARD_MAX_NAME) {
    set_why(why, whylen, "%s name is longer than %d bytes", what, VG_GUARD_MAX_NAME);
    return false;
  }
  if (*len == 0 && required) {
    set_why(why, whylen, "empty %s name (an empty selector never means everything)", what);
    return false;
  }
  return true;
}

/* Checks the names and fills in what follows from them. */
static vg_guard_verdict_t req_init(vg_guard_t *g,
                                   req_t *r,
                                   const char *type,
                                   const char *target,
                                   const char *scope,
                                   char *why,
                                   size_t whylen)
{
  memset(r, 0, offsetof(req_t, mkey));
  r->t = NULL;
  r->ty = NULL;
  r->s = NULL;
  r->m = NULL;
  r->probe = false;
  if (!name_ok("action type", type, true, &r->tylen, why, whylen) ||
      !name_ok("target", target, true, &r->tlen, why, whylen) ||
      !name_ok("scope", scope, false, &r->slen, why, whylen)) {
    return VG_GUARD_INVALID;
  }
  if (r->slen > 0 && memchr(scope, 0x1f, r->slen) != NULL) {
    set_why(why, whylen, "scope name contains the byte 0x1f");
    return VG_GUARD_INVALID;
  }
  r->type = type;
  r->target = target;
  r->scope = scope;
  r->blast = r->slen > 0 && blast_on(g);
  type_limits(g, type, r->tylen, &r->type_rate, &r->type_max);
  if (scope != NULL && r->slen > 0) { /* (the analyser cannot tell slen > 0 implies it) */
    memcpy(r->mkey, scope, r->slen);
    r->mkey[r->slen] = 0x1f;
    memcpy(r->mkey + r->slen + 1, target, r->tlen);
    r->mlen = r->slen + 1 + r->tlen;
  }
  return VG_GUARD_OK;
}

static node_t *find(vg_guard_t *g, int kind, const char *key, size_t len)
{
  return table_find(table_of(g, kind), key, len, hash_key(g->seed, key, len));
}

/* Finds what exists of the request's state, dropping what expired. */
static void req_lookup(vg_guard_t *g, req_t *r, int64_t now)
{
  r->t = (target_t *)find(g, K_TARGET, r->target, r->tlen);
  if (r->t != NULL) {
    target_settle(g, r->t, now);
  }
  r->ty = (type_t *)find(g, K_TYPE, r->type, r->tylen);
  if (r->ty != NULL) {
    type_settle(g, r->ty, now);
  }
  if (r->slen > 0) {
    r->s = (scope_t *)find(g, K_SCOPE, r->scope, r->slen);
    if (r->s != NULL) {
      scope_prune(g, r->s, now); /* before looking up the member: it may free it */
    }
    r->m = (member_t *)find(g, K_MEMBER, r->mkey, r->mlen);
  }
}

static void req_release(vg_guard_t *g, req_t *r)
{
  release(g, r->t);
  release(g, r->ty);
  release(g, r->m);
  release(g, r->s);
}

static vg_guard_verdict_t decide(vg_guard_t *g, req_t *r, int64_t now, char *why, size_t whylen)
{
  char tn[SHOWN_NAME * 4 + 8], xn[SHOWN_NAME * 4 + 8], d[32], w[48];
  const target_t *t = r->t;
  const type_t *ty = r->ty;
  if (t != NULL && t->tripped) {
    if (t->probe) {
      set_why(why, whylen,
              "target %s breaker is half-open after %u failed actions in a row: a probe "
              "action is running",
              shown(tn, sizeof(tn), r->target, r->tlen), t->fails);
      return VG_GUARD_BREAKER;
    }
    if (now < t->open_until) {
      set_why(why, whylen,
              "target %s breaker is open after %u failed actions in a row; next probe in %s",
              shown(tn, sizeof(tn), r->target, r->tlen), t->fails,
              wait_for(w, sizeof(w), (double)t->open_until - (double)now));
      return VG_GUARD_BREAKER;
    }
    r->probe = true;
  }
  if (t != NULL && t->cooling && now < t->cool_until) {
    set_why(why, whylen, "target %s is cooling down after an action (cooldown %s); next in %s",
            shown(tn, sizeof(tn), r->target, r->tlen), duration(d, sizeof(d), g->o.cooldown_ms),
            wait_for(w, sizeof(w), (double)t->cool_until - (double)now));
    return VG_GUARD_COOLDOWN;
  }
  uint32_t tmax = g->o.max_concurrent_target;
  if (t != NULL && tmax > 0 && t->running >= tmax) {
    set_why(why, whylen, "target %s has %u actions running (limit %u)",
            shown(tn, sizeof(tn), r->target, r->tlen), t->running, tmax);
    return VG_GUARD_CONCURRENCY;
  }
  if (ty != NULL && r->type_max > 0 && ty->running >= r->type_max) {
    set_why(why, whylen, "%u %s actions running (limit %u)", ty->running,
            shown(xn, sizeof(xn), r->type, r->tylen), r->type_max);
    return VG_GUARD_CONCURRENCY;
  }
  static const bucket_t full = { 0, 0, false };
  const vg_rate_t *rate = &g->o.target_rate;
  const bucket_t *b = t != NULL ? &t->bucket : &full;
  if (rate_limited(rate) && bucket_level(b, rate, now) < 1 - EPS) {
    set_why(why, whylen, "target %s budget spent: %g per %s; next in %s",
            shown(tn, sizeof(tn), r->target, r->tlen), rate->count,
            duration(d, sizeof(d), rate->per_ms),
            wait_for(w, sizeof(w), bucket_wait(b, rate, now)));
    return VG_GUARD_RATE_TARGET;
  }
  rate = &r->type_rate;
  b = ty != NULL ? &ty->bucket : &full;
  if (rate_limited(rate) && bucket_level(b, rate, now) < 1 - EPS) {
    set_why(why, whylen, "action type %s budget spent: %g per %s; next in %s",
            shown(xn, sizeof(xn), r->type, r->tylen), rate->count,
            duration(d, sizeof(d), rate->per_ms),
            wait_for(w, sizeof(w), bucket_wait(b, rate, now)));
    return VG_GUARD_RATE_TYPE;
  }
  bool in_window = r->m != NULL && r->m->scope != NULL;
  if (r->blast && !in_window && r->s != NULL && r->s->count >= g->o.blast_max_targets) {
    set_why(
        why, whylen,
        "scope %s had actions on %u distinct targets in the last %s (limit %u); next new "
        "target in %s",
        shown(xn, sizeof(xn), r->scope, r->slen), r->s->count,
        duration(d, sizeof(d), g->o.blast_window_ms), g->o.blast_max_targets,
        wait_for(w, sizeof(w), (double)add_ms(r->s->oldest, g->o.blast_window_ms) - (double)now));
    return VG_GUARD_BLAST;
  }
  uint32_t max = g->o.max_targets;
  if ((t == NULL && g->targets.n >= max) || (r->blast && r->m == NULL && g->members.n >= max)) {
    set_why(why, whylen,
            "the guard tracks %u %s already (its limit); refusing new target %s rather than "
            "forgetting state that protects others",
            max, t == NULL && g->targets.n >= max ? "targets" : "blast-radius entries",
            shown(tn, sizeof(tn), r->target, r->tlen));
    return VG_GUARD_CONCURRENCY;
  }
  if (ty == NULL && g->types.n >= VG_GUARD_MAX_TYPES) {
    set_why(why, whylen,
            "the guard tracks %d action types already (its limit); refusing new type %s",
            VG_GUARD_MAX_TYPES, shown(xn, sizeof(xn), r->type, r->tylen));
    return VG_GUARD_CONCURRENCY;
  }
  if (r->probe) {
    set_why(why, whylen, "target %s breaker is half-open: this action is the probe",
            shown(tn, sizeof(tn), r->target, r->tlen));
  } else {
    set_why(why, whylen, "%s", "");
  }
  return VG_GUARD_OK;
}

/* Creates the missing nodes a take needs; false when out of memory (nothing changed). */
static bool req_create(vg_guard_t *g, req_t *r)
{
  if (r->t == NULL) {
    r->t = node_new(g, sizeof(target_t), K_TARGET, r->target, r->tlen,
                    hash_key(g->seed, r->target, r->tlen));
  }
  if (r->ty == NULL) {
    r->ty = node_new(g, sizeof(type_t), K_TYPE, r->type, r->tylen,
                     hash_key(g->seed, r->type, r->tylen));
    if (r->ty != NULL) {
      r->ty->rate = r->type_rate;
      r->ty->max_concurrent = r->type_max;
    }
  }
  if (r->blast && r->s == NULL) {
    r->s = node_new(g, sizeof(scope_t), K_SCOPE, r->scope, r->slen,
                    hash_key(g->seed, r->scope, r->slen));
  }
  if (r->blast && r->m == NULL) {
    r->m = node_new(g, sizeof(member_t), K_MEMBER, r->mkey, r->mlen,
                    hash_key(g->seed, r->mkey, r->mlen));
  }
  return r->t != NULL && r->ty != NULL && (!r->blast || (r->s != NULL && r->m != NULL));
}

static void req_apply(vg_guard_t *g, req_t *r, int64_t now)
{
  target_t *t = r->t;
  type_t *ty = r->ty;
  if (r->probe) {
    /* should vigil restart while the probe runs, the breaker is open again for a while */
    t->probe = true;
    t->probe_prev_until = t->open_until;
    t->open_until = add_ms(now, g->o.breaker_cooldown_ms);
    mark(g, &t->n, E_BREAKER);
  }
  if (g->o.cooldown_ms > 0) {
    int64_t until = add_ms(now, g->o.cooldown_ms);
    t->cool_until = t->cooling && t->cool_until > until ? t->cool_until : until;
    t->cooling = true;
    mark(g, &t->n, E_COOLDOWN);
  }
  t->running++;
  ty->running++;
  g->running++;
  bucket_add(g, &t->n, &t->bucket, &g->o.target_rate, -1, now);
  bucket_add(g, &ty->n, &ty->bucket, &ty->rate, -1, now);
  if (r->blast) {
    if (r->m->scope != NULL) {
      r->m->refs++;
    } else {
      member_join(g, r->s, r->m, now);
    }
  }
}

static vg_guard_verdict_t run(vg_guard_t *g,
                              bool take,
                              const char *type,
                              const char *target,
                              const char *scope,
                              int64_t now,
                              char *why,
                              size_t whylen)
{
  sweep(g, now);
  req_t r;
  vg_guard_verdict_t v = req_init(g, &r, type, target, scope, why, whylen);
  if (v == VG_GUARD_OK) {
    if ((g->targets.n >= g->o.max_targets && find(g, K_TARGET, r.target, r.tlen) == NULL) ||
        (g->types.n >= VG_GUARD_MAX_TYPES && find(g, K_TYPE, r.type, r.tylen) == NULL) ||
        (r.blast && g->members.n >= g->o.max_targets &&
         find(g, K_MEMBER, r.mkey, r.mlen) == NULL)) {
      reclaim(g, now); /* before the lookup: it may free what the lookup would find */
    }
    req_lookup(g, &r, now);
    v = decide(g, &r, now, why, whylen);
    if (v == VG_GUARD_OK && take) {
      if (req_create(g, &r)) {
        req_apply(g, &r, now);
      } else {
        set_why(why, whylen, "out of memory for the guard's state; refusing the action");
        v = VG_GUARD_CONCURRENCY;
      }
    }
    req_release(g, &r);
  }
  if (take) {
    if (v == VG_GUARD_OK) {
      g->allowed++;
    } else {
      g->refused[v]++;
    }
  }
  return v;
}

/* The end of a running action: a finish or refund for a target with nothing running
 * releases nothing (a stray call must not free a slot another action holds). */
static void release_running(vg_guard_t *g, req_t *r)
{
  if (r->t != NULL && r->t->running > 0) {
    r->t->running--;
    g->running--;
    if (r->ty != NULL && r->ty->running > 0) {
      r->ty->running--;
    }
  }
}

/* ---- the API ---- */

void vg_guard_opts_default(vg_guard_opts_t *o)
{
  *o = (vg_guard_opts_t){
    .type_rate = { 30, 3600000 },
    .target_rate = { 6, 3600000 },
    .cooldown_ms = 300000,
    .max_concurrent_type = 4,
    .max_concurrent_target = 1,
    .blast_max_targets = 5,
    .blast_window_ms = 1800000,
    .breaker_failures = 3,
    .breaker_cooldown_ms = 3600000,
    .max_targets = VG_GUARD_MAX_TARGETS,
  };
}

const char *vg_guard_verdict_name(vg_guard_verdict_t v)
{
  switch (v) {
    case VG_GUARD_OK:
      return "";
    case VG_GUARD_RATE_TYPE:
    case VG_GUARD_RATE_TARGET:
      return "ERATELIMIT";
    case VG_GUARD_COOLDOWN:
      return "ECOOLDOWN";
    case VG_GUARD_CONCURRENCY:
      return "EBUSY";
    case VG_GUARD_BLAST:
      return "EBLASTRADIUS";
    case VG_GUARD_BREAKER:
      return "EBREAKER";
    case VG_GUARD_INVALID:
      return "EINVAL";
  }
  return "EINVAL";
}

vg_guard_t *vg_guard_new(const vg_guard_opts_t *o)
{
  vg_guard_t *g = calloc(1, sizeof(*g));
  if (g == NULL) {
    return NULL;
  }
  g->o = *o;
  g->o.types = NULL;
  g->o.ntypes = 0;
  if (g->o.max_targets == 0) {
    g->o.max_targets = VG_GUARD_MAX_TARGETS;
  }
  /* the address varies from run to run: chains cannot be lengthened on purpose by names */
  g->reclaim_after = INT64_MIN;
  g->seed = hash_key((uint64_t)(uintptr_t)g, "vigil.guard", 11);
  if (table_init(&g->targets) != 0 || table_init(&g->types) != 0 || table_init(&g->scopes) != 0 ||
      table_init(&g->members) != 0) {
    goto fail;
  }
  if (o->ntypes > 0 && (g->confs = calloc(o->ntypes, sizeof(*g->confs))) == NULL) {
    goto fail;
  }
  for (size_t i = 0; i < o->ntypes; i++) {
    const vg_guard_type_t *ot = &o->types[i];
    size_t len = ot->type != NULL ? name_len(ot->type, VG_GUARD_MAX_NAME) : 0;
    if (len == 0 || len > VG_GUARD_MAX_NAME) {
      continue; /* no action can have that type */
    }
    type_conf_t *c = &g->confs[g->nconfs];
    if ((c->name = malloc(len + 1)) == NULL) {
      goto fail;
    }
    memcpy(c->name, ot->type, len + 1);
    c->len = len;
    c->rate = ot->rate;
    c->max_concurrent = ot->max_concurrent;
    g->nconfs++;
  }
  return g;
fail:
  vg_guard_free(g);
  return NULL;
}

void vg_guard_free(vg_guard_t *g)
{
  if (g == NULL) {
    return;
  }
  table_t *tables[] = { &g->targets, &g->types, &g->scopes, &g->members };
  for (size_t k = 0; k < sizeof(tables) / sizeof(tables[0]); k++) {
    for (size_t i = 0; tables[k]->b != NULL && i < tables[k]->nb; i++) {
      for (node_t *n = tables[k]->b[i], *next; n != NULL; n = next) {
        next = n->hnext;
        free(n);
      }
    }
    free(tables[k]->b);
  }
  for (size_t i = 0; i < g->nconfs; i++) {
    free(g->confs[i].name);
  }
  free(g->confs);
  names_free(g);
  free(g);
}

vg_guard_verdict_t vg_guard_check(vg_guard_t *g,
                                  const char *type,
                                  const char *target,
                                  const char *scope,
                                  int64_t now_ms,
                                  char *why,
                                  size_t whylen)
{
  return run(g, false, type, target, scope, now_ms, why, whylen);
}

vg_guard_verdict_t vg_guard_take(vg_guard_t *g,
                                 const char *type,
                                 const char *target,
                                 const char *scope,
                                 int64_t now_ms,
                                 char *why,
                                 size_t whylen)
{
  return run(g, true, type, target, scope, now_ms, why, whylen);
}

void vg_guard_refund(
    vg_guard_t *g, const char *type, const char *target, const char *scope, int64_t now_ms)
{
  req_t r;
  if (req_init(g, &r, type, target, scope, NULL, 0) != VG_GUARD_OK) {
    return;
  }
  req_lookup(g, &r, now_ms);
  release_running(g, &r);
  target_t *t = r.t;
  if (t != NULL) {
    if (t->probe) {
      t->probe = false;
      t->open_until = t->probe_prev_until;
      mark(g, &t->n, E_BREAKER);
    }
    if (t->cooling) {
      t->cooling = false;
      mark(g, &t->n, E_COOLDOWN);
    }
    bucket_add(g, &t->n, &t->bucket, &g->o.target_rate, 1, now_ms);
    target_settle(g, t, now_ms);
  }
  if (r.ty != NULL) {
    bucket_add(g, &r.ty->n, &r.ty->bucket, &r.ty->rate, 1, now_ms);
    type_settle(g, r.ty, now_ms);
  }
  if (r.m != NULL && r.m->scope != NULL && --r.m->refs == 0) {
    member_t *m = r.m;
    r.m = NULL; /* member_leave may free it */
    member_leave(g, m);
  }
  req_release(g, &r);
}

void vg_guard_finish(vg_guard_t *g, const char *type, const char *target, bool ok, int64_t now_ms)
{
  req_t r;
  if (req_init(g, &r, type, target, NULL, NULL, 0) != VG_GUARD_OK) {
    return;
  }
  req_lookup(g, &r, now_ms);
  release_running(g, &r);
  target_t *t = r.t;
  if (t == NULL && !ok && breaker_on(g) && g->targets.n < g->o.max_targets) {
    t = r.t = node_new(g, sizeof(target_t), K_TARGET, r.target, r.tlen,
                       hash_key(g->seed, r.target, r.tlen));
  }
  if (t != NULL && breaker_on(g)) {
    if (ok) {
      breaker_close(g, t);
    } else {
      if (t->fails < UINT32_MAX) {
        t->fails++;
      }
      t->last_fail = now_ms;
      if (t->probe || (t->tripped && now_ms >= t->open_until)) {
        t->probe = false; /* the probe (or a late action while half-open) failed */
        t->open_until = add_ms(now_ms, g->o.breaker_cooldown_ms);
      } else if (!t->tripped && t->fails >= g->o.breaker_failures) {
        t->tripped = true;
        g->tripped++;
        t->open_until = add_ms(now_ms, g->o.breaker_cooldown_ms);
      }
      mark(g, &t->n, E_BREAKER);
    }
  }
  req_release(g, &r);
}

bool vg_guard_reset_breaker(vg_guard_t *g, const char *target, int64_t now_ms)
{
  size_t len = target != NULL ? name_len(target, VG_GUARD_MAX_NAME) : 0;
  if (len == 0 || len > VG_GUARD_MAX_NAME) {
    return false;
  }
  target_t *t = (target_t *)find(g, K_TARGET, target, len);
  if (t == NULL) {
    return false;
  }
  bool was = t->tripped;
  target_settle(g, t, now_ms);
  breaker_close(g, t);
  release(g, t);
  return was;
}

/* ---- persistence ---- */

static const char *const prefix[] = { "bucket:target:", "cooldown:", "breaker:", "bucket:type:",
                                      "blast:" };

/* Room for a reported name: names stay valid until the next vg_guard_each_dirty (a caller may
 * collect them and copy them into its transaction afterwards). */
static char *name_alloc(vg_guard_t *g, size_t len)
{
  name_chunk_t *c = g->names;
  if (c == NULL || c->cap - c->used < len) {
    size_t cap = len > 8192 ? len : 8192;
    if ((c = malloc(sizeof(*c) + cap)) == NULL) {
      return NULL;
    }
    c->next = g->names;
    c->used = 0;
    c->cap = cap;
    g->names = c;
  }
  char *p = c->data + c->used;
  c->used += len;
  return p;
}

static void names_free(vg_guard_t *g)
{
  while (g->names != NULL) {
    name_chunk_t *c = g->names;
    g->names = c->next;
    free(c);
  }
}

/* Reports one entry of a node if it is dirty; returns it when it could not (out of memory:
 * it stays dirty for the next call). */
static unsigned report(vg_guard_t *g,
                       node_t *n,
                       unsigned dirty,
                       unsigned entry,
                       bool live,
                       double value,
                       int64_t at,
                       vg_guard_entry_fn fn,
                       void *ud)
{
  if (!(dirty & entry) || (!live && !(n->stored & entry))) {
    return 0;
  }
  const char *p = n->kind == K_TYPE     ? prefix[3]
                  : n->kind == K_MEMBER ? prefix[4]
                  : entry == E_BUCKET   ? prefix[0]
                  : entry == E_COOLDOWN ? prefix[1]
                                        : prefix[2];
  size_t len = strlen(p) + n->klen + 1;
  char *name = name_alloc(g, len);
  if (name == NULL) {
    return entry;
  }
  snprintf(name, len, "%s%s", p, n->key);
  if (live) {
    fn(ud, name, value, at);
    n->stored |= (uint8_t)entry;
  } else {
    fn(ud, name, -1, 0);
    n->stored &= (uint8_t)~entry;
  }
  return 0;
}

void vg_guard_each_dirty(vg_guard_t *g, vg_guard_entry_fn fn, void *ud)
{
  names_free(g);
  node_t *n = g->dirty_head;
  g->dirty_head = g->dirty_tail = NULL; /* what cannot be reported now goes on a new list */
  while (n != NULL) {
    node_t *next = n->dnext;
    unsigned dirty = n->dirty, left = 0;
    n->dirty = 0;
    n->dprev = n->dnext = NULL;
    if (n->kind == K_TARGET) {
      target_t *t = (target_t *)n;
      left |= report(g, n, dirty, E_BUCKET, t->bucket.live, t->bucket.tokens, t->bucket.at, fn, ud);
      left |= report(g, n, dirty, E_COOLDOWN, t->cooling, 1, t->cool_until, fn, ud);
      left |= report(g, n, dirty, E_BREAKER, t->fails > 0 || t->tripped,
                     t->fails + (t->tripped ? 0.5 : 0), t->tripped ? t->open_until : t->last_fail,
                     fn, ud);
    } else if (n->kind == K_TYPE) {
      type_t *ty = (type_t *)n;
      left |=
          report(g, n, dirty, E_BUCKET, ty->bucket.live, ty->bucket.tokens, ty->bucket.at, fn, ud);
    } else if (n->kind == K_MEMBER) {
      member_t *m = (member_t *)n;
      left |= report(g, n, dirty, E_BLAST, m->scope != NULL, 1, m->first_seen, fn, ud);
    }
    if (left != 0) {
      mark(g, n, left);
    } else {
      release(g, n);
    }
    n = next;
  }
}

/* The node of a restored name, created if missing and the table has room. */
static node_t *restore_node(
    vg_guard_t *g, int kind, size_t size, const char *key, size_t len, uint32_t cap)
{
  node_t *n = find(g, kind, key, len);
  if (n == NULL && table_of(g, kind)->n < cap) {
    n = node_new(g, size, kind, key, len, hash_key(g->seed, key, len));
  }
  return n;
}

static void restore_bucket(
    vg_guard_t *g, node_t *n, bucket_t *b, const vg_rate_t *r, double value, int64_t at)
{
  b->tokens = value;
  b->at = at;
  b->live = true;
  n->stored |= E_BUCKET;
  if (!rate_limited(r) || value >= rate_cap(r) - EPS) {
    b->live = false; /* full, or no limit any more: the store's row is to go */
    mark(g, n, E_BUCKET);
  }
}

static void restore_member(vg_guard_t *g, const char *key, size_t len, int64_t at)
{
  const char *sep = memchr(key, 0x1f, len);
  if (sep == NULL || sep == key || (size_t)(sep - key) > VG_GUARD_MAX_NAME ||
      len - (size_t)(sep - key) - 1 == 0 || len - (size_t)(sep - key) - 1 > VG_GUARD_MAX_NAME) {
    return;
  }
  size_t slen = (size_t)(sep - key);
  member_t *m = (member_t *)restore_node(g, K_MEMBER, sizeof(member_t), key, len, g->o.max_targets);
  if (m == NULL) {
    return;
  }
  scope_t *s = (scope_t *)restore_node(g, K_SCOPE, sizeof(scope_t), key, slen, UINT32_MAX);
  if (s == NULL) {
    release(g, m);
    return;
  }
  if (m->scope != NULL) {
    member_leave(g, m); /* the same name twice: the last wins */
    m = (member_t *)restore_node(g, K_MEMBER, sizeof(member_t), key, len, g->o.max_targets);
    if (m == NULL) {
      release(g, s);
      return;
    }
  }
  member_join(g, s, m, at);
  m->n.stored |= E_BLAST;
  unmark(g, &m->n);
}

void vg_guard_restore(vg_guard_t *g, const char *name, double value, int64_t at)
{
  if (name == NULL || !(value >= 0) || !isfinite(value)) {
    return;
  }
  int kind = -1;
  size_t plen = 0;
  for (int i = 0; i < 5 && kind < 0; i++) {
    plen = strlen(prefix[i]);
    if (strncmp(name, prefix[i], plen) == 0) {
      kind = i;
    }
  }
  if (kind < 0) {
    return;
  }
  const char *key = name + plen;
  size_t max = kind == 4 ? 2 * VG_GUARD_MAX_NAME + 1 : VG_GUARD_MAX_NAME;
  size_t len = name_len(key, max);
  if (len == 0 || len > max) {
    return;
  }
  if (kind == 4) {
    restore_member(g, key, len, at);
    return;
  }
  if (kind == 3) {
    type_t *ty = (type_t *)restore_node(g, K_TYPE, sizeof(type_t), key, len, VG_GUARD_MAX_TYPES);
    if (ty != NULL) {
      type_limits(g, key, len, &ty->rate, &ty->max_concurrent);
      restore_bucket(g, &ty->n, &ty->bucket, &ty->rate, value, at);
      release(g, ty);
    }
    return;
  }
  target_t *t = (target_t *)restore_node(g, K_TARGET, sizeof(target_t), key, len, g->o.max_targets);
  if (t == NULL) {
    return;
  }
  if (kind == 0) {
    restore_bucket(g, &t->n, &t->bucket, &g->o.target_rate, value, at);
  } else if (kind == 1) {
    t->cooling = true;
    t->cool_until = at;
    t->n.stored |= E_COOLDOWN;
  } else {
    if (t->tripped) {
      g->tripped--;
    }
    double whole = floor(value);
    t->fails = whole >= UINT32_MAX ? UINT32_MAX : (uint32_t)whole;
    t->tripped = value - whole >= 0.25;
    t->open_until = t->tripped ? at : 0;
    t->last_fail = at;
    if (t->tripped) {
      g->tripped++;
    }
    t->n.stored |= E_BREAKER;
    if ((t->fails == 0 && !t->tripped) || !breaker_on(g)) {
      breaker_close(g, t);
      mark(g, &t->n, E_BREAKER); /* nothing to keep: the store's row is to go */
    }
  }
  release(g, t);
}

/* ---- inspection ---- */

void vg_guard_stats(const vg_guard_t *g, int64_t now_ms, vg_guard_stats_t *out)
{
  (void)now_ms;
  *out = (vg_guard_stats_t){
    .allowed = g->allowed,
    .running = g->running,
    .breakers_open = g->tripped,
    .targets = (uint32_t)g->targets.n,
    .types = (uint32_t)g->types.n,
    .blast_entries = (uint32_t)g->members.n,
  };
  memcpy(out->refused, g->refused, sizeof(out->refused));
}
