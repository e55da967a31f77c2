/* Isolation forest (Liu, Ting, Zhou 2008) with scikit-learn's semantics: random subsamples of
 * max_samples rows, depth limit ceil(log2(max_samples)), path length plus c(n) at the leaves,
 * score 2^(-E[h]/c(psi)) and a contamination threshold. Trees live in one flat node array so a
 * batch is scored without allocating. Pure C, deterministic for a given random_state.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The serialised format's version (iforest_save / iforest_load). */
#define VG_IFOREST_FORMAT 1

typedef struct vg_iforest vg_iforest_t;

typedef struct {
  uint32_t n_estimators; /* trees; 0 means 100 */
  uint32_t max_samples;  /* rows per tree; 0 means min(256, n); above n means n (as sklearn) */
  double max_features;   /* fraction of the columns each tree sees, (0, 1]; 0 means 1.0. A tree
                          * gets max(1, floor(max_features * d)) columns drawn without replacement */
  double contamination;  /* 0: 'auto' (threshold 0.5 on the paper score, sklearn's offset -0.5);
                          * in (0, 0.5]: the threshold is that upper quantile of training scores */
  uint64_t random_state; /* seed: the same seed and data give the same forest */
} vg_iforest_opts_t;

/* Fills `o` with the defaults (sklearn's: 100 trees, 'auto' samples, all features, 'auto'
 * contamination, seed 0). */
void iforest_opts_default(vg_iforest_opts_t *o);

/* c(n), the average path length of an unsuccessful search in a binary search tree of n nodes,
 * as sklearn computes it: 0 for n <= 1, 1 for n = 2, else 2(ln(n-1) + gamma) - 2(n-1)/n. */
double iforest_c(double n);

/* Fits a forest on `n` rows of `d` doubles (row-major `x`). Returns NULL with a message in `err`
 * for bad options or data (n = 0, d = 0, NaN or infinite values, contamination outside
 * [0, 0.5], max_features outside [0, 1]) or when out of memory. `x` is not kept. */
vg_iforest_t *iforest_fit(
    const double *x, size_t n, size_t d, const vg_iforest_opts_t *opts, char *err, size_t errlen);

/* Anomaly scores of `n` rows (row-major, the fitted number of columns) in (0, 1]: the paper's
 * s = 2^(-E[h(x)]/c(psi)), higher is more abnormal; about 0.5 and below is normal. sklearn's
 * score_samples() is -s. Writes out[0..n-1]; does not allocate; rows may hold NaN (a NaN goes
 * right at every split, like a value above every threshold). Safe from several threads. */
void iforest_score(const vg_iforest_t *f, const double *x, size_t n, double *out);

/* sklearn's decision_function: threshold - s, so negative means an outlier. In place is fine
 * (out may alias a buffer holding scores from iforest_score when x is NULL: see below).
 * When x is NULL, out[] must already hold iforest_score() results and is converted in place. */
void iforest_decision(const vg_iforest_t *f, const double *x, size_t n, double *out);

/* sklearn's predict: out[i] = -1 for an outlier (decision < 0), 1 for an inlier. `scratch` holds
 * n doubles (NULL: the outputs are computed one row at a time, slower). */
void iforest_predict(
    const vg_iforest_t *f, const double *x, size_t n, int8_t *out, double *scratch);

/* The paper-score threshold: 0.5 for 'auto', else the (1 - contamination) quantile of the
 * training scores (numpy's linear interpolation), i.e. -offset_ in sklearn. */
double iforest_threshold(const vg_iforest_t *f);

size_t iforest_n_features(const vg_iforest_t *f);   /* d at fit time */
size_t iforest_n_estimators(const vg_iforest_t *f); /* trees */
size_t iforest_max_samples(const vg_iforest_t *f);  /* psi actually used */
size_t iforest_node_count(const vg_iforest_t *f);   /* nodes over all trees */
/* Bytes the model holds in memory (its nodes and the scoring layout); what a registry of named
 * forests counts against its cap. */
size_t iforest_memory(const vg_iforest_t *f);

/* Serialises the forest into a versioned little-endian blob ("VGIF", VG_IFOREST_FORMAT). Returns
 * a malloc'ed buffer (caller frees) and its size in *len, or NULL when out of memory. */
uint8_t *iforest_save(const vg_iforest_t *f, size_t *len);

/* Reads a blob written by iforest_save(). Returns NULL with a message in `err` for a truncated,
 * corrupt or newer-version blob. */
vg_iforest_t *iforest_load(const uint8_t *buf, size_t len, char *err, size_t errlen);

/* NULL is fine. */
void iforest_free(vg_iforest_t *f);

/* The seed's per-metric features: for each point i >= window - 1 of `v`, a row of 5 values over
 * the last `window` points (i included): the value, their mean, standard deviation (population),
 * the value's z-score (0 when the deviation is 0) and range (max - min). Writes
 * (n - window + 1) rows to `out` (5 doubles each) and returns that count; 0 when n < window or
 * window < 2. */
#define VG_IFOREST_WINDOW_FEATURES 5
size_t iforest_window_features(const double *v, size_t n, size_t window, double *out);
