/* Online log template mining (Drain-style): each line is masked (numbers, addresses, ids, ...
 * become
 * `<*>`), split into tokens and routed through a fixed-depth prefix tree to the most similar
 * template, which absorbs it. Pure C, one pass, bounded memory. Not thread-safe: one miner, one
 * thread at a time.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vg_logmine vg_logmine_t;

/* Built-in maskers (hand-written scanners). A masker only starts where the previous byte is not a
 * letter or digit, so `t761` stays a word while `blk_761` becomes `blk_<*>`. */
enum {
  VG_LOGMINE_MASK_NUM = 1u << 0,    /* -12, 3.5, 1e9, 10ms, 1.2.3 (a number and its unit) */
  VG_LOGMINE_MASK_HEX = 1u << 1,    /* 0x1f, and hex words with a digit (9f4ef63, >= 6 chars) */
  VG_LOGMINE_MASK_IP = 1u << 2,     /* IPv4 and IPv6, with an optional :port; MAC addresses */
  VG_LOGMINE_MASK_UUID = 1u << 3,   /* 8-4-4-4-12 hex */
  VG_LOGMINE_MASK_PATH = 1u << 4,   /* absolute paths with two or more components */
  VG_LOGMINE_MASK_URL = 1u << 5,    /* scheme://... up to a blank or a quote */
  VG_LOGMINE_MASK_TIME = 1u << 6,   /* 2024-01-02[T ]03:04:05[.123][Z|+01:00], 03:04:05,123 */
  VG_LOGMINE_MASK_POD = 1u << 7,    /* k8s generated suffixes: name-7d9f8b6c4-x2x7z */
  VG_LOGMINE_MASK_QUOTED = 1u << 8, /* the text inside "..." or '...' (up to 256 bytes) */
  VG_LOGMINE_MASK_ALL = (1u << 9) - 1,
};

typedef struct {
  double similarity;     /* share of equal tokens needed to join a template (0..1] */
  unsigned depth;        /* leading tokens that route through the prefix tree (1..8) */
  unsigned max_children; /* children per tree node before new keys go to the `<*>` child */
  size_t max_clusters;   /* templates kept; past this the least recently seen is evicted */
  size_t max_line;       /* longer lines are cut here (and flagged) */
  unsigned max_tokens;   /* tokens beyond this are folded into the last one */
  unsigned masks;        /* VG_LOGMINE_MASK_* bits */
  bool match_only;       /* logmine_add() never creates or changes a template */
} vg_logmine_opts_t;

/* One parameter of a line: a byte range of the line as given (before truncation). */
typedef struct {
  size_t off, len;
} vg_logmine_span_t;

typedef enum {
  VG_LOGMINE_MATCHED = 0, /* joined an existing template (possibly generalising it) */
  VG_LOGMINE_CREATED = 1, /* started a new template */
  VG_LOGMINE_EMPTY = 2,   /* blank line: ignored, nothing else set */
  VG_LOGMINE_NOMATCH = 3, /* match-only: no template is similar enough */
  VG_LOGMINE_NOMEM = -1,
} vg_logmine_status_t;

typedef struct {
  uint64_t id;    /* stable cluster id (1, 2, ... in creation order; kept across merges) */
  bool changed;   /* this line turned some template tokens into `<*>` */
  size_t merged;  /* templates folded into this one by this line (their ids become aliases) */
  bool truncated; /* the line was longer than max_line */
  size_t nparams;
  const vg_logmine_span_t *params; /* owned by the miner, valid until its next call */
} vg_logmine_result_t;

typedef struct {
  uint64_t id;
  uint64_t count;     /* lines that joined it */
  uint64_t first_seq; /* line sequence number (logmine_stats().lines) when created */
  uint64_t last_seq;  /* ... when last matched */
  const char *text;   /* the template, e.g. "Invalid user <*> from <*>" (NUL-terminated) */
  size_t len;
  size_t ntokens;
} vg_logmine_template_t;

typedef struct {
  uint64_t lines;     /* non-empty lines seen by add and match */
  uint64_t empty;     /* blank lines ignored */
  uint64_t truncated; /* lines cut at max_line */
  uint64_t created;   /* templates created */
  uint64_t evicted;   /* templates dropped by the max_clusters cap */
  uint64_t merged;    /* templates folded into an older one (their ids resolve to it) */
  uint64_t nomatch;   /* lines no template matched (match and match-only add) */
  size_t clusters;    /* templates held now */
  size_t bytes;       /* approximate memory held */
} vg_logmine_stats_t;

/* Defaults: similarity 0.5, depth 2, max_children 100, max_clusters 10000, max_line 16384,
 * max_tokens 256, every built-in mask, match_only false. */
void logmine_opts_default(vg_logmine_opts_t *o);

/* A new miner, or NULL when out of memory or when `opts` is out of range (message in err).
 * `opts` NULL means the defaults. Zero fields of opts mean their default. */
vg_logmine_t *logmine_new(const vg_logmine_opts_t *opts, char *err, size_t errlen);

/* Adds a user mask, applied before the built-in ones: a Lua 5.4 pattern (bounded matcher, see
 * lpattern.h) whose matches anywhere in a line become `<*>`. Returns 0, or -1 with a message
 * (bad pattern, out of memory). Masks added after lines were mined only affect later lines. */
int logmine_add_mask(vg_logmine_t *m, const char *pattern, size_t len, char *err, size_t errlen);

/* Mines one line (any bytes; no NUL terminator needed; a trailing CR/LF is ignored). Fills `res`
 * unless the status is EMPTY, NOMATCH or NOMEM. In match-only mode behaves like logmine_match()
 * but also counts the line against the template it matches. */
vg_logmine_status_t logmine_add(vg_logmine_t *m,
                                const char *line,
                                size_t len,
                                vg_logmine_result_t *res);

/* Finds the template `line` belongs to without changing anything: MATCHED with res filled, or
 * NOMATCH / EMPTY. */
vg_logmine_status_t logmine_match(vg_logmine_t *m,
                                  const char *line,
                                  size_t len,
                                  vg_logmine_result_t *res);

/* Looks a template up by id; false when unknown (never seen or evicted). out->text stays valid
 * until the next call that adds or restores. Returns false on out of memory too. */
bool logmine_get(vg_logmine_t *m, uint64_t id, vg_logmine_template_t *out);

/* Calls fn for each template, most recently seen first; stops when fn returns false. fn must not
 * call into the miner. Returns false when out of memory (rendering a template). */
bool logmine_foreach(vg_logmine_t *m,
                     bool (*fn)(const vg_logmine_template_t *t, void *ud),
                     void *ud);

void logmine_stats(const vg_logmine_t *m, vg_logmine_stats_t *out);

/* Turns match-only mode on or off. */
void logmine_set_match_only(vg_logmine_t *m, bool on);

/* Serialises the templates (ids, counts, tokens, spacing) into a malloc'd buffer the caller frees;
 * options and user masks are not included. Returns NULL when out of memory. */
char *logmine_snapshot(vg_logmine_t *m, size_t *len);

/* Replaces the miner's templates with those of a snapshot. All or nothing: on a malformed
 * snapshot (any bytes are safe) or out of memory returns -1 with a message and leaves the miner
 * as it was. Templates beyond max_clusters are dropped, least recently seen first. */
int logmine_restore(vg_logmine_t *m, const char *buf, size_t len, char *err, size_t errlen);

/* Frees the miner; NULL is fine. */
void logmine_free(vg_logmine_t *m);
