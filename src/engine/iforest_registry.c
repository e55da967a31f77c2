/* Named isolation forests: a small array of entries (looked up when a policy asks for a name,
 * not on every score), each owning its current model, with a count and a byte cap, and the
 * versioned blob the store keeps for each. */
#include "engine/iforest_registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errbuf.h"

#define NAME_MAX_BYTES 1024
#define FLAG_MODEL 1u

struct vg_iforest_named {
  vg_iforest_opts_t opts;
  vg_iforest_t *model; /* NULL until fitted */
  size_t bytes;        /* iforest_memory(model), 0 without one */
  uint64_t fits;
  bool dirty;         /* changed since the last iforest_registry_collect */
  bool clock;         /* used_ms and written_ms are known (a use was recorded) */
  int64_t used_ms;    /* the latest use */
  int64_t written_ms; /* the last collect, or the first use when none since */
  char name[];        /* NUL-terminated */
};

struct vg_iforest_registry {
  vg_iforest_named_t **v;
  size_t count, cap, max_count;
  size_t bytes, max_bytes;
};

vg_iforest_registry_t *iforest_registry_new(size_t max_count, size_t max_bytes)
{
  vg_iforest_registry_t *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return NULL;
  }
  r->max_count = max_count ? max_count : VG_IFOREST_REGISTRY_MAX;
  r->max_bytes = max_bytes ? max_bytes : VG_IFOREST_REGISTRY_BYTES;
  return r;
}

void iforest_registry_free(vg_iforest_registry_t *r)
{
  if (r == NULL) {
    return;
  }
  for (size_t i = 0; i < r->count; i++) {
    iforest_free(r->v[i]->model);
    free(r->v[i]);
  }
  free(r->v);
  free(r);
}

vg_iforest_named_t *iforest_registry_get(vg_iforest_registry_t *r, const char *name)
{
  for (size_t i = 0; i < r->count; i++) {
    if (strcmp(r->v[i]->name, name) == 0) {
      return r->v[i];
    }
  }
  return NULL;
}

int iforest_opts_check(const vg_iforest_opts_t *o, char *err, size_t errlen)
{
  if (o->n_estimators < 1 || o->n_estimators > 100000) {
    vg_errf(err, errlen, "n_estimators must be in [1, 100000], got %u", (unsigned)o->n_estimators);
    return -1;
  }
  if (!(o->max_features > 0 && o->max_features <= 1)) {
    vg_errf(err, errlen, "max_features must be in (0, 1], got %g", o->max_features);
    return -1;
  }
  if (!(o->contamination >= 0 && o->contamination <= 0.5)) {
    vg_errf(err, errlen, "contamination must be 'auto' (0) or in (0, 0.5], got %g",
            o->contamination);
    return -1;
  }
  return 0;
}

static bool name_ok(const char *name, char *err, size_t errlen)
{
  size_t len = name != NULL ? strlen(name) : 0;
  if (len == 0 || len > NAME_MAX_BYTES) {
    vg_errf(err, errlen, "a forest name has 1 to %d bytes", NAME_MAX_BYTES);
    return false;
  }
  return true;
}

vg_iforest_named_t *iforest_registry_add(vg_iforest_registry_t *r,
                                         const char *name,
                                         const vg_iforest_opts_t *o,
                                         char *err,
                                         size_t errlen)
{
  if (!name_ok(name, err, errlen) || iforest_opts_check(o, err, errlen) != 0) {
    return NULL;
  }
  if (iforest_registry_get(r, name) != NULL) {
    vg_errf(err, errlen, "forest \"%s\" exists already", name);
    return NULL;
  }
  if (r->count >= r->max_count) {
    vg_errf(err, errlen, "too many named forests (%zu)", r->max_count);
    return NULL;
  }
  if (r->count == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    vg_iforest_named_t **v = realloc(r->v, cap * sizeof(vg_iforest_named_t *));
    if (v == NULL) {
      vg_errf(err, errlen, "out of memory");
      return NULL;
    }
    r->v = v;
    r->cap = cap;
  }
  size_t len = strlen(name);
  vg_iforest_named_t *e = calloc(1, sizeof(*e) + len + 1);
  if (e == NULL) {
    vg_errf(err, errlen, "out of memory");
    return NULL;
  }
  e->opts = *o;
  e->dirty = true;
  memcpy(e->name, name, len + 1);
  r->v[r->count++] = e;
  return e;
}

size_t iforest_registry_count(const vg_iforest_registry_t *r)
{
  return r->count;
}

size_t iforest_registry_bytes(const vg_iforest_registry_t *r)
{
  return r->bytes;
}

size_t iforest_registry_max_bytes(const vg_iforest_registry_t *r)
{
  return r->max_bytes;
}

const char *iforest_named_name(const vg_iforest_named_t *e)
{
  return e->name;
}

const vg_iforest_opts_t *iforest_named_opts(const vg_iforest_named_t *e)
{
  return &e->opts;
}

const vg_iforest_t *iforest_named_model(const vg_iforest_named_t *e)
{
  return e->model;
}

uint64_t iforest_named_fits(const vg_iforest_named_t *e)
{
  return e->fits;
}

/* Whether a model of `bytes` may replace e's under the cap; else says why. */
static bool fits_cap(const vg_iforest_registry_t *r,
                     const vg_iforest_named_t *e,
                     size_t bytes,
                     char *err,
                     size_t errlen)
{
  size_t others = r->bytes - (e != NULL ? e->bytes : 0);
  if (bytes > r->max_bytes || others > r->max_bytes - bytes) {
    vg_errf(err, errlen,
            "the model of %zu bytes would take named forests past their cap of %zu bytes "
            "(%zu in use by the others)",
            bytes, r->max_bytes, others);
    return false;
  }
  return true;
}

/* Installs f (NULL: none) as e's model, freeing the old one. */
static void install(vg_iforest_registry_t *r, vg_iforest_named_t *e, vg_iforest_t *f)
{
  size_t bytes = f != NULL ? iforest_memory(f) : 0;
  r->bytes = r->bytes - e->bytes + bytes;
  iforest_free(e->model);
  e->model = f;
  e->bytes = bytes;
}

int iforest_named_set(
    vg_iforest_registry_t *r, vg_iforest_named_t *e, vg_iforest_t *f, char *err, size_t errlen)
{
  if (!fits_cap(r, e, iforest_memory(f), err, errlen)) {
    return -1;
  }
  install(r, e, f);
  e->fits++;
  e->dirty = true;
  return 0;
}

void iforest_named_used(vg_iforest_named_t *e, int64_t now_ms)
{
  if (!e->clock) {
    e->clock = true;
    e->written_ms = now_ms;
  }
  e->used_ms = now_ms > e->used_ms ? now_ms : e->used_ms;
}

/* ---- persistence ---- */

static void put_le(uint8_t **p, uint64_t v, int bytes)
{
  for (int i = 0; i < bytes; i++) {
    *(*p)++ = (uint8_t)(v >> (8 * i));
  }
}

static void put_double(uint8_t **p, double v)
{
  uint64_t u;
  memcpy(&u, &v, sizeof(u));
  put_le(p, u, 8);
}

static uint64_t get_le(const uint8_t **p, int bytes)
{
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) {
    v |= (uint64_t) * (*p)++ << (8 * i);
  }
  return v;
}

static double get_double(const uint8_t **p)
{
  uint64_t u = get_le(p, 8);
  double v;
  memcpy(&v, &u, sizeof(v));
  return v;
}

/* e's blob (malloc'ed, *len its size), or NULL when out of memory. */
static uint8_t *entry_blob(const vg_iforest_named_t *e, size_t *len)
{
  size_t mlen = 0;
  uint8_t *model = NULL;
  if (e->model != NULL && (model = iforest_save(e->model, &mlen)) == NULL) {
    return NULL;
  }
  uint8_t *blob = malloc(VG_IFOREST_NAMED_HEADER + mlen);
  if (blob == NULL) {
    free(model);
    return NULL;
  }
  uint8_t *p = blob;
  memcpy(p, "VGNF", 4);
  p += 4;
  put_le(&p, VG_IFOREST_NAMED_VERSION, 4);
  put_le(&p, e->model != NULL ? FLAG_MODEL : 0, 4);
  put_le(&p, e->opts.n_estimators, 4);
  put_le(&p, e->opts.max_samples, 4);
  put_double(&p, e->opts.max_features);
  put_double(&p, e->opts.contamination);
  put_le(&p, e->opts.random_state, 8);
  if (mlen > 0) {
    memcpy(p, model, mlen);
  }
  free(model);
  *len = VG_IFOREST_NAMED_HEADER + mlen;
  return blob;
}

size_t iforest_registry_collect(vg_iforest_registry_t *r, vg_snapshot_emit_fn emit, void *ctx)
{
  size_t count = 0;
  for (size_t i = 0; i < r->count; i++) {
    vg_iforest_named_t *e = r->v[i];
    bool refresh = e->clock && e->used_ms - e->written_ms >= VG_IFOREST_REFRESH_MS;
    if (!e->dirty && !refresh) {
      continue;
    }
    size_t len;
    uint8_t *blob = entry_blob(e, &len);
    if (blob == NULL) {
      continue; /* still dirty: the next collect tries again */
    }
    emit(ctx, e->name, blob, len);
    free(blob);
    e->dirty = false;
    e->written_ms = e->used_ms;
    count++;
  }
  return count;
}

int iforest_registry_restore(vg_iforest_registry_t *r,
                             const char *name,
                             const void *blob,
                             size_t len,
                             char *err,
                             size_t errlen)
{
  if (!name_ok(name, err, errlen)) {
    return -1;
  }
  const uint8_t *p = blob;
  if (len < 4 || memcmp(p, "VGNF", 4) != 0) {
    vg_errf(err, errlen, "forest snapshot \"%s\": not a named forest blob", name);
    return -1;
  }
  if (len < VG_IFOREST_NAMED_HEADER) {
    vg_errf(err, errlen, "forest snapshot \"%s\": truncated", name);
    return -1;
  }
  p += 4;
  uint32_t version = (uint32_t)get_le(&p, 4);
  if (version != VG_IFOREST_NAMED_VERSION) {
    vg_errf(err, errlen, "forest snapshot \"%s\": version %u, this build reads %d", name, version,
            VG_IFOREST_NAMED_VERSION);
    return -1;
  }
  uint32_t flags = (uint32_t)get_le(&p, 4);
  vg_iforest_opts_t o;
  iforest_opts_default(&o);
  o.n_estimators = (uint32_t)get_le(&p, 4);
  o.max_samples = (uint32_t)get_le(&p, 4);
  o.max_features = get_double(&p);
  o.contamination = get_double(&p);
  o.random_state = get_le(&p, 8);
  char why[160];
  if ((flags & ~FLAG_MODEL) != 0) {
    vg_errf(err, errlen, "forest snapshot \"%s\": corrupt (flags %#x)", name, flags);
    return -1;
  }
  if (iforest_opts_check(&o, why, sizeof(why)) != 0) {
    vg_errf(err, errlen, "forest snapshot \"%s\": corrupt (%s)", name, why);
    return -1;
  }
  size_t rest = len - VG_IFOREST_NAMED_HEADER;
  vg_iforest_t *f = NULL;
  if (flags & FLAG_MODEL) {
    f = iforest_load(p, rest, why, sizeof(why));
    if (f == NULL) {
      vg_errf(err, errlen, "forest snapshot \"%s\": %s", name, why);
      return -1;
    }
    if (iforest_n_estimators(f) != o.n_estimators) {
      vg_errf(err, errlen, "forest snapshot \"%s\": corrupt (%zu trees, options say %u)", name,
              iforest_n_estimators(f), (unsigned)o.n_estimators);
      iforest_free(f);
      return -1;
    }
  } else if (rest != 0) {
    vg_errf(err, errlen, "forest snapshot \"%s\": corrupt (%zu bytes after the options)", name,
            rest);
    return -1;
  }
  vg_iforest_named_t *e = iforest_registry_get(r, name);
  if (!fits_cap(r, e, f != NULL ? iforest_memory(f) : 0, why, sizeof(why))) {
    vg_errf(err, errlen, "forest snapshot \"%s\": %s", name, why);
    iforest_free(f);
    return -1;
  }
  if (e == NULL && (e = iforest_registry_add(r, name, &o, err, errlen)) == NULL) {
    iforest_free(f);
    return -1;
  }
  e->opts = o;
  install(r, e, f);
  e->fits = 0;
  e->dirty = false;
  e->clock = false; /* when it was written is not known: count from the first use */
  return 0;
}
