/* Isolation forest: fitting random isolation trees into one flat preorder node array (left child
 * = next node), scoring batches tree by tree over blocks of rows so a tree stays in cache, the
 * contamination threshold, and a versioned binary format. */
#include "engine/iforest.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errbuf.h"

#define EULER_GAMMA 0.5772156649015329
/* Rows scored per tree before moving to the next tree: small enough that the block's rows and
 * its path-length sums stay in L1, large enough to amortise loading a tree. */
#define SCORE_BLOCK 64
#define LEAF (-1)

/* One node: a split (feat >= 0: x[feat] <= v goes to the next node, else to `right`) or a leaf
 * (feat = LEAF, v = its depth + c(training rows that reached it)). 16 bytes. That canonical form
 * is what fitting builds and the blob holds; for scoring, finish() turns every leaf into a node
 * that loops on itself (v = NaN, feat = 0, right = itself) and moves its path length to
 * leafv[], so a row can take a fixed number of branch-free steps per tree and several rows can
 * walk one tree at once. */
typedef struct {
  double v;
  int32_t feat;
  uint32_t right;
} if_node_t;

struct vg_iforest {
  uint32_t d, ntrees, psi;
  double contamination, threshold, cpsi;
  uint64_t seed;
  uint32_t nnodes;
  uint32_t *root;  /* ntrees offsets into nodes */
  uint32_t *depth; /* ntrees: steps that reach a leaf from the root (the tree's height) */
  if_node_t *nodes;
  double *leafv; /* nnodes: a leaf's path length, 0 for splits */

  /* The layout batch scoring uses when every tree is at most IMPLICIT_MAX_HEIGHT deep: each tree
   * as a complete binary tree of height H (node p has children 2p+1, 2p+2), 2^H - 1 splits and
   * 2^H leaves, a leaf above the bottom copied into every leaf below it. A step is then two
   * loads and a compare, with no child pointer to fetch. */
  uint32_t height; /* H; 0 when the layout is absent */
  uint32_t *ifeat; /* ntrees x (2^H - 1) */
  double *ithr;    /* ntrees x (2^H - 1); +inf under a copied leaf */
  double *ileaf;   /* ntrees x 2^H */
};

#define IMPLICIT_MAX_HEIGHT 12

static bool is_leaf(const vg_iforest_t *f, uint32_t k)
{
  return isnan(f->nodes[k].v) && f->nodes[k].right == k;
}

/* Copies canonical node k (a leaf or split, see if_node_t) to position p at `level` of tree t's
 * complete layout. */
static void implicit_fill(vg_iforest_t *f, uint32_t t, uint32_t k, uint32_t p, uint32_t level)
{
  uint32_t nsplit = (1u << f->height) - 1;
  uint32_t *feat = f->ifeat + (size_t)t * nsplit;
  double *thr = f->ithr + (size_t)t * nsplit;
  double *leaf = f->ileaf + (size_t)t * (nsplit + 1);
  if (level == f->height) {
    leaf[p - nsplit] = f->leafv[k];
    return;
  }
  if (is_leaf(f, k)) { /* every leaf under p gets this leaf's value, whatever the way down */
    feat[p] = 0;
    thr[p] = INFINITY;
    implicit_fill(f, t, k, 2 * p + 1, level + 1);
    implicit_fill(f, t, k, 2 * p + 2, level + 1);
    return;
  }
  feat[p] = (uint32_t)f->nodes[k].feat;
  thr[p] = f->nodes[k].v;
  implicit_fill(f, t, k + 1, 2 * p + 1, level + 1);
  implicit_fill(f, t, f->nodes[k].right, 2 * p + 2, level + 1);
}

/* Builds the complete layout when the trees are shallow enough. Returns false when out of
 * memory. */
static bool implicit_build(vg_iforest_t *f)
{
  uint32_t h = 0;
  for (uint32_t t = 0; t < f->ntrees; t++) {
    h = f->depth[t] > h ? f->depth[t] : h;
  }
  if (h == 0 || h > IMPLICIT_MAX_HEIGHT) {
    return true; /* a forest of single leaves, or deep trees: the pointer layout does */
  }
  f->height = h;
  size_t nsplit = ((size_t)1 << h) - 1;
  f->ifeat = malloc(f->ntrees * nsplit * sizeof(*f->ifeat));
  f->ithr = malloc(f->ntrees * nsplit * sizeof(*f->ithr));
  f->ileaf = malloc(f->ntrees * (nsplit + 1) * sizeof(*f->ileaf));
  if (f->ifeat == NULL || f->ithr == NULL || f->ileaf == NULL) {
    return false;
  }
  for (uint32_t t = 0; t < f->ntrees; t++) {
    implicit_fill(f, t, f->root[t], 0, 0);
  }
  return true;
}

/* Builds the scoring layout from the canonical one (see if_node_t). Returns false when out of
 * memory. */
static bool finish(vg_iforest_t *f)
{
  f->leafv = calloc(f->nnodes, sizeof(*f->leafv));
  f->depth = calloc(f->ntrees, sizeof(*f->depth));
  uint32_t *nd = calloc(f->nnodes, sizeof(*nd));
  if (f->leafv == NULL || f->depth == NULL || nd == NULL) {
    free(nd);
    return false;
  }
  for (uint32_t t = 0; t < f->ntrees; t++) {
    uint32_t end = t + 1 < f->ntrees ? f->root[t + 1] : f->nnodes;
    for (uint32_t k = f->root[t]; k < end; k++) { /* preorder: parents come first */
      if_node_t *n = &f->nodes[k];
      if (n->feat == LEAF) {
        f->leafv[k] = n->v;
        n->v = NAN;
        n->feat = 0;
        n->right = k;
        f->depth[t] = nd[k] > f->depth[t] ? nd[k] : f->depth[t];
      } else {
        nd[k + 1] = nd[k] + 1;
        nd[n->right] = nd[k] + 1;
      }
    }
  }
  free(nd);
  return implicit_build(f);
}

/* ---- a small PRNG: splitmix64 to seed xoshiro256** (no rand(): deterministic everywhere) ---- */

typedef struct {
  uint64_t s[4];
} if_rng_t;

static uint64_t splitmix64(uint64_t *x)
{
  uint64_t z = (*x += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static void rng_seed(if_rng_t *r, uint64_t seed)
{
  for (int i = 0; i < 4; i++) {
    r->s[i] = splitmix64(&seed);
  }
}

static uint64_t rotl(uint64_t x, int k)
{
  return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(if_rng_t *r)
{
  uint64_t *s = r->s;
  uint64_t out = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return out;
}

/* Uniform in [0, 1). */
static double rng_unit(if_rng_t *r)
{
  return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, n), n > 0 (Lemire's multiply-shift; the bias for n < 2^32 is negligible). */
static uint32_t rng_below(if_rng_t *r, uint32_t n)
{
  return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

void iforest_opts_default(vg_iforest_opts_t *o)
{
  memset(o, 0, sizeof(*o));
  o->n_estimators = 100;
  o->max_features = 1.0;
}

double iforest_c(double n)
{
  if (n <= 1) {
    return 0.0;
  }
  if (n <= 2) {
    return 1.0;
  }
  return 2.0 * (log(n - 1.0) + EULER_GAMMA) - 2.0 * (n - 1.0) / n;
}

/* ---- fitting ---- */

typedef struct {
  const double *x;
  uint32_t d;
  uint32_t *rows;  /* the tree's sample, partitioned in place */
  uint32_t *feats; /* the tree's columns */
  uint32_t nfeats;
  uint32_t *cand; /* max_depth+1 rows of nfeats: candidates still untried at each depth */
  uint32_t max_depth;
  if_node_t *nodes; /* room for 2*psi - 1 nodes */
  uint32_t nn;
  if_rng_t *rng;
} if_build_t;

static uint32_t build(if_build_t *b, uint32_t lo, uint32_t hi, uint32_t depth)
{
  uint32_t id = b->nn++;
  if_node_t *node = &b->nodes[id];
  uint32_t size = hi - lo;
  node->feat = LEAF;
  node->right = 0;
  node->v = (double)depth + iforest_c((double)size);
  if (depth >= b->max_depth || size <= 1) {
    return id;
  }
  /* Draw columns without replacement until one is not constant on this node (sklearn's random
   * splitter with max_features=1 does the same); all constant makes a leaf. */
  uint32_t *cand = b->cand + (size_t)depth * b->nfeats;
  memcpy(cand, b->feats, b->nfeats * sizeof(*cand));
  uint32_t m = b->nfeats, f = 0;
  double lo_v = 0, hi_v = 0;
  bool found = false;
  while (m > 0 && !found) {
    uint32_t j = rng_below(b->rng, m);
    f = cand[j];
    cand[j] = cand[m - 1];
    m--;
    lo_v = hi_v = b->x[(size_t)b->rows[lo] * b->d + f];
    for (uint32_t i = lo + 1; i < hi; i++) {
      double v = b->x[(size_t)b->rows[i] * b->d + f];
      lo_v = v < lo_v ? v : lo_v;
      hi_v = v > hi_v ? v : hi_v;
    }
    found = hi_v > lo_v;
  }
  if (!found) {
    return id;
  }
  double thr = lo_v + (hi_v - lo_v) * rng_unit(b->rng);
  if (thr >= hi_v) { /* rounding; sklearn falls back to the minimum too */
    thr = lo_v;
  }
  /* partition: x <= thr first; both sides are non-empty since lo_v <= thr < hi_v */
  uint32_t i = lo, k = hi;
  while (i < k) {
    if (b->x[(size_t)b->rows[i] * b->d + f] <= thr) {
      i++;
    } else {
      uint32_t t = b->rows[i];
      b->rows[i] = b->rows[--k];
      b->rows[k] = t;
    }
  }
  node->feat = (int32_t)f;
  node->v = thr;
  build(b, lo, i, depth + 1);
  uint32_t right = build(b, i, hi, depth + 1);
  b->nodes[id].right = right;
  return id;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

vg_iforest_t *iforest_fit(
    const double *x, size_t n, size_t d, const vg_iforest_opts_t *opts, char *err, size_t errlen)
{
  vg_iforest_opts_t o;
  if (opts != NULL) {
    o = *opts;
  } else {
    iforest_opts_default(&o);
  }
  if (o.n_estimators == 0) {
    o.n_estimators = 100;
  }
  if (o.max_features == 0) {
    o.max_features = 1.0;
  }
  if (n == 0 || d == 0) {
    vg_errf(err, errlen, "no data (%zu rows of %zu columns)", n, d);
    return NULL;
  }
  if (n > UINT32_MAX / 2 || d > INT32_MAX) {
    vg_errf(err, errlen, "too much data (%zu rows of %zu columns)", n, d);
    return NULL;
  }
  if (!(o.contamination >= 0 && o.contamination <= 0.5)) {
    vg_errf(err, errlen, "contamination must be 'auto' (0) or in (0, 0.5], got %g",
            o.contamination);
    return NULL;
  }
  if (!(o.max_features > 0 && o.max_features <= 1)) {
    vg_errf(err, errlen, "max_features must be in (0, 1], got %g", o.max_features);
    return NULL;
  }
  for (size_t i = 0; i < n * d; i++) {
    if (!isfinite(x[i])) {
      vg_errf(err, errlen, "row %zu column %zu is not a finite number", i / d + 1, i % d + 1);
      return NULL;
    }
  }
  uint32_t psi = o.max_samples == 0 ? (n < 256 ? (uint32_t)n : 256)
                                    : (o.max_samples > n ? (uint32_t)n : o.max_samples);
  uint32_t max_depth = (uint32_t)ceil(log2(psi > 2 ? (double)psi : 2.0));
  uint32_t nfeats = (uint32_t)floor(o.max_features * (double)d);
  nfeats = nfeats < 1 ? 1 : nfeats;
  size_t max_nodes = 2 * (size_t)psi - 1;

  vg_iforest_t *f = calloc(1, sizeof(*f));
  uint32_t *all = malloc(n * sizeof(*all));
  uint32_t *rows = malloc(psi * sizeof(*rows));
  uint32_t *feats = malloc(d * sizeof(*feats));
  uint32_t *cand = malloc((size_t)(max_depth + 1) * nfeats * sizeof(*cand));
  double *train = NULL;
  if (f == NULL || all == NULL || rows == NULL || feats == NULL || cand == NULL) {
    goto oom;
  }
  f->d = (uint32_t)d;
  f->ntrees = o.n_estimators;
  f->psi = psi;
  f->cpsi = iforest_c(psi);
  f->contamination = o.contamination;
  f->seed = o.random_state;
  f->root = malloc(f->ntrees * sizeof(*f->root));
  f->nodes = malloc(f->ntrees * max_nodes * sizeof(*f->nodes));
  if (f->root == NULL || f->nodes == NULL) {
    goto oom;
  }
  for (size_t i = 0; i < n; i++) {
    all[i] = (uint32_t)i;
  }
  for (size_t j = 0; j < d; j++) {
    feats[j] = (uint32_t)j;
  }
  if_rng_t rng;
  rng_seed(&rng, o.random_state);
  if_build_t b = { .x = x,
                   .d = (uint32_t)d,
                   .rows = rows,
                   .feats = feats,
                   .nfeats = nfeats,
                   .cand = cand,
                   .max_depth = max_depth,
                   .rng = &rng };
  for (uint32_t t = 0; t < f->ntrees; t++) {
    /* the sample: a partial Fisher-Yates shuffle of the row indices (without replacement) */
    for (uint32_t i = 0; i < psi; i++) {
      uint32_t j = i + rng_below(&rng, (uint32_t)(n - i));
      uint32_t tmp = all[i];
      all[i] = all[j];
      all[j] = tmp;
    }
    memcpy(rows, all, psi * sizeof(*rows));
    if (nfeats < d) { /* the tree's columns come first in feats */
      for (uint32_t i = 0; i < nfeats; i++) {
        uint32_t j = i + rng_below(&rng, (uint32_t)(d - i));
        uint32_t tmp = feats[i];
        feats[i] = feats[j];
        feats[j] = tmp;
      }
    }
    f->root[t] = f->nnodes;
    b.nodes = f->nodes + f->nnodes;
    b.nn = 0;
    build(&b, 0, psi, 0);
    for (uint32_t k = 0; k < b.nn; k++) { /* make `right` absolute */
      if (b.nodes[k].feat != LEAF) {
        b.nodes[k].right += f->nnodes;
      }
    }
    f->nnodes += b.nn;
  }
  if_node_t *shrunk = realloc(f->nodes, f->nnodes * sizeof(*f->nodes));
  if (shrunk != NULL) {
    f->nodes = shrunk;
  }
  if (!finish(f)) {
    goto oom;
  }
  f->threshold = 0.5;
  if (o.contamination > 0) {
    train = malloc(n * sizeof(*train));
    if (train == NULL) {
      goto oom;
    }
    iforest_score(f, x, n, train);
    qsort(train, n, sizeof(*train), cmp_double);
    /* numpy.percentile(score_samples, 100 * c), linear interpolation, on s = -score_samples */
    double pos = (double)(n - 1) * (1.0 - o.contamination);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    f->threshold = train[lo] + (train[hi] - train[lo]) * (pos - (double)lo);
  }
  free(train);
  free(all);
  free(rows);
  free(feats);
  free(cand);
  return f;
oom:
  vg_errf(err, errlen, "out of memory");
  free(train);
  free(all);
  free(rows);
  free(feats);
  free(cand);
  iforest_free(f);
  return NULL;
}

/* ---- scoring ---- */

/* Walks GROUP rows through one tree in lockstep: the rows' steps are independent, so their
 * node and value loads overlap instead of each waiting on the last. */
#define GROUP 8

/* One step down from node k: written with a mask, not `?:`, so the compiler emits no branch
 * (the direction is a coin toss; a mispredicted branch costs more than the whole step). */
static inline uint32_t step(uint32_t k, const if_node_t *p, double v)
{
  uint32_t left = (uint32_t) - (int32_t)(v <= p->v);
  return ((k + 1) & left) | (p->right & ~left);
}

/* Adds each row's path lengths over all trees to ob[] (the complete layout). */
static void score_implicit(const vg_iforest_t *f, const double *xb, size_t bn, double *ob)
{
  const size_t d = f->d;
  const uint32_t h = f->height, nsplit = (1u << h) - 1;
  for (uint32_t t = 0; t < f->ntrees; t++) {
    const uint32_t *feat = f->ifeat + (size_t)t * nsplit;
    const double *thr = f->ithr + (size_t)t * nsplit;
    const double *leaf = f->ileaf + (size_t)t * (nsplit + 1) - nsplit;
    size_t i = 0;
    for (; i + GROUP <= bn; i += GROUP) {
      const double *rows = xb + i * d;
      uint32_t p[GROUP] = { 0 };
      for (uint32_t s = 0; s < h; s++) {
        for (int r = 0; r < GROUP; r++) {
          p[r] = 2 * p[r] + 2 - (rows[(size_t)r * d + feat[p[r]]] <= thr[p[r]]);
        }
      }
      for (int r = 0; r < GROUP; r++) {
        ob[i + (size_t)r] += leaf[p[r]];
      }
    }
    for (; i < bn; i++) {
      const double *row = xb + i * d;
      uint32_t p = 0;
      for (uint32_t s = 0; s < h; s++) {
        p = 2 * p + 2 - (row[feat[p]] <= thr[p]);
      }
      ob[i] += leaf[p];
    }
  }
}

void iforest_score(const vg_iforest_t *f, const double *x, size_t n, double *out)
{
  const if_node_t *nodes = f->nodes;
  const double *leafv = f->leafv;
  const size_t d = f->d;
  for (size_t b0 = 0; b0 < n; b0 += SCORE_BLOCK) {
    size_t bn = n - b0 < SCORE_BLOCK ? n - b0 : SCORE_BLOCK;
    const double *xb = x + b0 * d;
    double *ob = out + b0;
    for (size_t i = 0; i < bn; i++) {
      ob[i] = 0;
    }
    if (f->height > 0) {
      score_implicit(f, xb, bn, ob);
    }
    for (uint32_t t = 0; t < f->ntrees && f->height == 0; t++) {
      uint32_t root = f->root[t], steps = f->depth[t];
      size_t i = 0;
      for (; i + GROUP <= bn; i += GROUP) {
        const double *rows = xb + i * d;
        uint32_t k[GROUP];
        for (int r = 0; r < GROUP; r++) {
          k[r] = root;
        }
        for (uint32_t s = 0; s < steps; s++) {
          for (int r = 0; r < GROUP; r++) {
            const if_node_t *p = &nodes[k[r]];
            k[r] = step(k[r], p, rows[(size_t)r * d + (uint32_t)p->feat]);
          }
        }
        for (int r = 0; r < GROUP; r++) {
          ob[i + (size_t)r] += leafv[k[r]];
        }
      }
      for (; i < bn; i++) {
        const double *row = xb + i * d;
        uint32_t k = root;
        for (uint32_t s = 0; s < steps; s++) {
          const if_node_t *p = &nodes[k];
          k = step(k, p, row[(uint32_t)p->feat]);
        }
        ob[i] += leafv[k];
      }
    }
    double scale = -1.0 / ((double)f->ntrees * f->cpsi);
    for (size_t i = 0; i < bn; i++) {
      /* psi = 1 makes c(psi) 0: every point is equally (un)isolated, s = 2^0 = 1 as sklearn */
      ob[i] = f->cpsi > 0 ? exp2(ob[i] * scale) : 1.0;
    }
  }
}

void iforest_decision(const vg_iforest_t *f, const double *x, size_t n, double *out)
{
  if (x != NULL) {
    iforest_score(f, x, n, out);
  }
  for (size_t i = 0; i < n; i++) {
    out[i] = f->threshold - out[i];
  }
}

void iforest_predict(const vg_iforest_t *f, const double *x, size_t n, int8_t *out, double *scratch)
{
  if (scratch != NULL) {
    iforest_score(f, x, n, scratch);
  }
  for (size_t i = 0; i < n; i++) {
    double s;
    if (scratch != NULL) {
      s = scratch[i];
    } else {
      iforest_score(f, x + i * f->d, 1, &s);
    }
    out[i] = f->threshold - s < 0 ? -1 : 1;
  }
}

double iforest_threshold(const vg_iforest_t *f)
{
  return f->threshold;
}

size_t iforest_n_features(const vg_iforest_t *f)
{
  return f->d;
}

size_t iforest_n_estimators(const vg_iforest_t *f)
{
  return f->ntrees;
}

size_t iforest_max_samples(const vg_iforest_t *f)
{
  return f->psi;
}

size_t iforest_node_count(const vg_iforest_t *f)
{
  return f->nnodes;
}

size_t iforest_memory(const vg_iforest_t *f)
{
  size_t bytes = sizeof(*f) + (size_t)f->ntrees * 2 * sizeof(uint32_t) +
                 (size_t)f->nnodes * (sizeof(if_node_t) + sizeof(double));
  if (f->height > 0) {
    size_t nsplit = ((size_t)1 << f->height) - 1;
    bytes += (size_t)f->ntrees *
             (nsplit * (sizeof(uint32_t) + sizeof(double)) + (nsplit + 1) * sizeof(double));
  }
  return bytes;
}

void iforest_free(vg_iforest_t *f)
{
  if (f == NULL) {
    return;
  }
  free(f->root);
  free(f->depth);
  free(f->nodes);
  free(f->leafv);
  free(f->ifeat);
  free(f->ithr);
  free(f->ileaf);
  free(f);
}

/* ---- serialisation: little-endian, fixed-width fields ---- */

#define HEADER_SIZE (4 + 4 * 5 + 8 * 3)
#define NODE_SIZE 16

static void put_u32(uint8_t **p, uint32_t v)
{
  for (int i = 0; i < 4; i++) {
    *(*p)++ = (uint8_t)(v >> (8 * i));
  }
}

static void put_u64(uint8_t **p, uint64_t v)
{
  for (int i = 0; i < 8; i++) {
    *(*p)++ = (uint8_t)(v >> (8 * i));
  }
}

static void put_f64(uint8_t **p, double v)
{
  uint64_t u;
  memcpy(&u, &v, sizeof(u));
  put_u64(p, u);
}

static uint32_t get_u32(const uint8_t **p)
{
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    v |= (uint32_t) * (*p)++ << (8 * i);
  }
  return v;
}

static uint64_t get_u64(const uint8_t **p)
{
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    v |= (uint64_t) * (*p)++ << (8 * i);
  }
  return v;
}

static double get_f64(const uint8_t **p)
{
  uint64_t u = get_u64(p);
  double v;
  memcpy(&v, &u, sizeof(v));
  return v;
}

uint8_t *iforest_save(const vg_iforest_t *f, size_t *len)
{
  size_t size = HEADER_SIZE + (size_t)f->ntrees * 4 + (size_t)f->nnodes * NODE_SIZE;
  uint8_t *buf = malloc(size);
  if (buf == NULL) {
    return NULL;
  }
  uint8_t *p = buf;
  memcpy(p, "VGIF", 4);
  p += 4;
  put_u32(&p, VG_IFOREST_FORMAT);
  put_u32(&p, f->d);
  put_u32(&p, f->ntrees);
  put_u32(&p, f->psi);
  put_u32(&p, f->nnodes);
  put_f64(&p, f->contamination);
  put_f64(&p, f->threshold);
  put_u64(&p, f->seed);
  for (uint32_t t = 0; t < f->ntrees; t++) {
    put_u32(&p, f->root[t]);
  }
  for (uint32_t k = 0; k < f->nnodes; k++) {
    bool leaf = is_leaf(f, k);
    put_f64(&p, leaf ? f->leafv[k] : f->nodes[k].v);
    put_u32(&p, leaf ? (uint32_t)LEAF : (uint32_t)f->nodes[k].feat);
    put_u32(&p, leaf ? 0 : f->nodes[k].right);
  }
  *len = size;
  return buf;
}

vg_iforest_t *iforest_load(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
  const uint8_t *p = buf;
  if (len < HEADER_SIZE || memcmp(p, "VGIF", 4) != 0) {
    vg_errf(err, errlen, "not an isolation forest blob");
    return NULL;
  }
  p += 4;
  uint32_t version = get_u32(&p);
  if (version != VG_IFOREST_FORMAT) {
    vg_errf(err, errlen, "isolation forest format %u, this build reads %d", version,
            VG_IFOREST_FORMAT);
    return NULL;
  }
  uint32_t d = get_u32(&p), ntrees = get_u32(&p), psi = get_u32(&p), nnodes = get_u32(&p);
  double contamination = get_f64(&p), threshold = get_f64(&p);
  uint64_t seed = get_u64(&p);
  if (d == 0 || ntrees == 0 || psi == 0 || nnodes < ntrees ||
      len != HEADER_SIZE + (size_t)ntrees * 4 + (size_t)nnodes * NODE_SIZE) {
    vg_errf(err, errlen, "corrupt isolation forest blob (sizes)");
    return NULL;
  }
  vg_iforest_t *f = calloc(1, sizeof(*f));
  if (f == NULL || (f->root = calloc(ntrees, sizeof(*f->root))) == NULL ||
      (f->nodes = calloc(nnodes, sizeof(*f->nodes))) == NULL) {
    iforest_free(f);
    vg_errf(err, errlen, "out of memory");
    return NULL;
  }
  f->d = d;
  f->ntrees = ntrees;
  f->psi = psi;
  f->nnodes = nnodes;
  f->cpsi = iforest_c(psi);
  f->contamination = contamination;
  f->threshold = threshold;
  f->seed = seed;
  for (uint32_t t = 0; t < ntrees; t++) {
    f->root[t] = get_u32(&p);
  }
  for (uint32_t k = 0; k < nnodes; k++) {
    f->nodes[k].v = get_f64(&p);
    f->nodes[k].feat = (int32_t)get_u32(&p);
    f->nodes[k].right = get_u32(&p);
  }
  /* Scoring trusts the structure, so check it: roots in range, splits on a known column that
   * point forward (preorder: the tree is finite), leaves with a finite path length. */
  bool ok = true;
  for (uint32_t t = 0; t < ntrees && ok; t++) {
    uint32_t start = f->root[t], end = t + 1 < ntrees ? f->root[t + 1] : nnodes;
    ok = (t > 0 || start == 0) && start < end && end <= nnodes;
    for (uint32_t k = f->root[t]; k < end && ok; k++) {
      const if_node_t *nd = &f->nodes[k];
      if (nd->feat == LEAF) {
        ok = isfinite(nd->v) && nd->v >= 0;
      } else {
        ok = nd->feat >= 0 && (uint32_t)nd->feat < d && k + 1 < end && nd->right > k + 1 &&
             nd->right < end && !isnan(nd->v);
      }
    }
  }
  if (ok && !finish(f)) {
    iforest_free(f);
    vg_errf(err, errlen, "out of memory");
    return NULL;
  }
  if (!ok) {
    iforest_free(f);
    vg_errf(err, errlen, "corrupt isolation forest blob (nodes)");
    return NULL;
  }
  return f;
}

/* ---- the seed's windowed features ---- */

size_t iforest_window_features(const double *v, size_t n, size_t window, double *out)
{
  if (window < 2 || n < window) {
    return 0;
  }
  size_t rows = n - window + 1;
  for (size_t r = 0; r < rows; r++) {
    const double *w = v + r;
    double mean = 0, lo = w[0], hi = w[0], ss = 0;
    for (size_t j = 0; j < window; j++) {
      mean += w[j];
      lo = w[j] < lo ? w[j] : lo;
      hi = w[j] > hi ? w[j] : hi;
    }
    mean /= (double)window;
    for (size_t j = 0; j < window; j++) {
      ss += (w[j] - mean) * (w[j] - mean);
    }
    double sd = sqrt(ss / (double)window), x = w[window - 1];
    double *o = out + r * VG_IFOREST_WINDOW_FEATURES;
    o[0] = x;
    o[1] = mean;
    o[2] = sd;
    o[3] = sd > 0 ? (x - mean) / sd : 0;
    o[4] = hi - lo;
  }
  return rows;
}
