/* Alertmanager-style label matchers (`alertname="X"`, `severity=~"crit|high"`, ...) compiled once
 * and evaluated in C, so a policy whose matchers reject an alert costs a few comparisons.
 * Regexes follow Alertmanager: fully anchored, RE2 syntax only, run by PCRE2 under a match limit.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* PCRE2 limits applied to every regex match; hitting one makes the matcher fail (see eval). */
#define VG_LABELMATCH_MATCH_LIMIT 100000u
#define VG_LABELMATCH_DEPTH_LIMIT 100000u

/* One label of an alert. Neither string needs a NUL terminator; values may hold any bytes. */
typedef struct {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} vg_label_t;

typedef enum { VG_MATCH_EQ, VG_MATCH_NE, VG_MATCH_RE, VG_MATCH_NRE } vg_match_op_t;

typedef struct vg_matcher vg_matcher_t;   /* one compiled matcher */
typedef struct vg_matchers vg_matchers_t; /* a conjunction: every matcher must match */

/* A read-only view of one matcher; the pointers live as long as the set. Both strings are also
 * NUL-terminated, but may contain NUL bytes, so use the lengths. */
typedef struct {
  const char *name;
  size_t name_len;
  vg_match_op_t op;
  const char *value; /* the literal, or the regex as written (unanchored) */
  size_t value_len;
} vg_matcher_info_t;

typedef struct {
  uint64_t limit_hits; /* regex matches stopped by the match, depth, heap or JIT stack limit */
  uint64_t errors;     /* regex matches that failed otherwise (e.g. out of memory) */
} vg_labelmatch_stats_t;

/* Returns an empty set (which matches every alert), or NULL when out of memory. */
vg_matchers_t *labelmatch_new(void);

/* Parses matchers in Alertmanager syntax and appends them to `m`. `text` is either one matcher,
 * `name op value`, or a list `{m1, m2, ...}` (braces optional, trailing comma allowed, `{}` adds
 * nothing). op is = != =~ !~. Names are [a-zA-Z_][a-zA-Z0-9_]* or any non-empty UTF-8 in double
 * quotes. Values are double-quoted (escapes \" \\ \n; any other backslash is kept literally, as
 * Alertmanager does) or unquoted (up to the next `,` or `}`, surrounding blanks trimmed).
 * `text` need not be NUL-terminated. All or nothing: on error nothing is added, -1 is returned and
 * `err` (if errlen > 0) holds a message such as `unknown operator "=="` or
 * `bad regex "x(": missing closing parenthesis at offset 2`. Returns 0 on success. */
int labelmatch_parse(vg_matchers_t *m, const char *text, size_t len, char *err, size_t errlen);

/* Appends one matcher from parts (the Lua table form `{ label = "value" }`). `name` is a
 * NUL-terminated, non-empty UTF-8 string; `value` holds `value_len` bytes (NULL when 0). For
 * VG_MATCH_RE / VG_MATCH_NRE `value` is an RE2-syntax regex, anchored at both ends; features RE2
 * lacks (back-references, lookaround, atomic groups, possessive quantifiers, recursion,
 * conditionals, verbs, \K \G \C \Z \R \X, inline flags other than imsU) are rejected. Returns 0, or
 * -1 with a message in `err`, leaving `m` unchanged. */
int labelmatch_add(vg_matchers_t *m,
                   const char *name,
                   vg_match_op_t op,
                   const char *value,
                   size_t value_len,
                   char *err,
                   size_t errlen);

/* True when every matcher matches `labels` (unsorted; the first label of a given name counts).
 * A label absent from `labels` has the value "", as in Alertmanager: `foo=""` matches an alert
 * without foo, `foo!=""` requires it. Label values may be any bytes: a regex sees each byte that
 * is not part of valid UTF-8 as U+FFFD, like Go's regexp. A regex match that hits a PCRE2 limit
 * or fails makes its matcher fail whatever the operator (so the set does not match) and is
 * counted in the stats. Does not allocate. Not reentrant for one set: evaluate a given set from
 * one thread at a time. `eval(m, NULL, 0)` tells whether every matcher matches the empty alert. */
bool labelmatch_eval(const vg_matchers_t *m, const vg_label_t *labels, size_t nlabels);

size_t labelmatch_count(const vg_matchers_t *m);

/* Fills `out` with matcher `i` in the order added. Returns false when i >= count. */
bool labelmatch_get(const vg_matchers_t *m, size_t i, vg_matcher_info_t *out);

/* True when both sets hold the same matchers (name, operator, value) in the same order. */
bool labelmatch_equal(const vg_matchers_t *a, const vg_matchers_t *b);

/* "=", "!=", "=~" or "!~"; "?" for a value outside the enum. */
const char *labelmatch_op_name(vg_match_op_t op);

/* Renders the set as canonical text that labelmatch_parse() reads back to an equal set, e.g.
 * {alertname="HighCPU", severity=~"critical|high"}; `{}` when empty. Like snprintf: writes at most
 * buflen - 1 bytes plus a NUL (nothing when buflen is 0) and returns the full length without the
 * NUL. Values are written as stored, so the text can contain NUL or non-UTF-8 bytes if they do. */
size_t labelmatch_format(const vg_matchers_t *m, char *buf, size_t buflen);

/* Copies the counters accumulated by labelmatch_eval() on this set. */
void labelmatch_stats(const vg_matchers_t *m, vg_labelmatch_stats_t *out);

/* Frees the set and its compiled regexes; NULL is fine. */
void labelmatch_free(vg_matchers_t *m);
