/* Lua 5.4 patterns (reference manual §6.4.1) matched under a step budget, for the policy sandbox:
 * a hostile pattern such as ".-.-.-.-b" stops with LPATTERN_BUDGET after a bounded amount of work
 * instead of backtracking for minutes inside one C call. Pure C; the Lua binding is
 * src/lua/lstrlib_bounded.c. Results, including which malformed patterns raise, match Lua 5.4. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LPATTERN_MAXCAPTURES 32
/* Nesting limit of the matcher's recursion, as in Lua (one level per quantifier or capture
 * whose continuation is being tried); deeper patterns fail with "pattern too complex". */
#define LPATTERN_MAXDEPTH 200
#define LPATTERN_DEFAULT_STEP_LIMIT 1000000u

/* Capture lengths that are not lengths. */
#define LPATTERN_CAP_UNFINISHED (-1) /* '(' seen, ')' not yet */
#define LPATTERN_CAP_POSITION (-2)   /* a position capture "()" */

typedef enum {
  LPATTERN_NOMATCH = 0,
  LPATTERN_MATCH = 1,
  LPATTERN_ERROR = -1,  /* malformed pattern or bad capture use; message in state.error */
  LPATTERN_BUDGET = -2, /* step_limit exceeded; state.error holds a generic message */
} lpattern_status_t;

typedef struct {
  const char *start;
  ptrdiff_t len; /* bytes, or LPATTERN_CAP_UNFINISHED / LPATTERN_CAP_POSITION */
} lpattern_capture_t;

/* One matching session over one subject and one pattern. Fields are public so callers can read
 * captures and counters; set them through lpattern_init(). Subject and pattern may contain any
 * bytes, NUL included, and need no terminator. */
typedef struct {
  const char *src, *src_end; /* subject */
  const char *pat, *pat_end; /* pattern, without any anchor the caller stripped */
  int level;                 /* captures opened by the last match attempt */
  lpattern_capture_t capture[LPATTERN_MAXCAPTURES];
  uint64_t steps;      /* work done since lpattern_init(); callers may reset it */
  uint64_t step_limit; /* steps beyond this stop the match with LPATTERN_BUDGET */
  int depth;           /* current recursion depth, < LPATTERN_MAXDEPTH */
  int lead;            /* a byte every match must start with, or -1 (see lpattern_skip) */
  lpattern_status_t status;
  char error[128];
} lpattern_state_t;

/* Prepares `st` to match `pat` against `src`. Nothing is validated here: like Lua, a malformed
 * part of a pattern is reported only when the matcher reaches it. step_limit 0 means
 * LPATTERN_DEFAULT_STEP_LIMIT. Does not allocate. */
void lpattern_init(lpattern_state_t *st,
                   const char *src,
                   size_t src_len,
                   const char *pat,
                   size_t pat_len,
                   uint64_t step_limit);

/* Matches the pattern at exactly `s` (src <= s <= src_end). Returns the end of the match, or NULL
 * with st->status telling NOMATCH, ERROR or BUDGET. On a match st->status is LPATTERN_MATCH and
 * st->capture[0 .. st->level) hold the captures. Steps accumulate in st->steps across calls. */
const char *lpattern_match(lpattern_state_t *st, const char *s);

/* Looks for the first match starting at `from` or later (at `from` only when `anchored`), which is
 * the scan loop of string.find and string.match. On LPATTERN_MATCH sets *mstart and *mend;
 * otherwise returns LPATTERN_NOMATCH, LPATTERN_ERROR or LPATTERN_BUDGET. */
lpattern_status_t lpattern_find(
    lpattern_state_t *st, const char *from, bool anchored, const char **mstart, const char **mend);

/* Returns the first position at or after `s` where a match could start, or NULL when none can
 * (not even at src_end). Only skips positions that lpattern_match() would reject without any
 * other effect, so callers scanning position by position may jump there. */
const char *lpattern_skip(lpattern_state_t *st, const char *s);

/* Number of values a match yields: its captures, or 1 (the whole match) when it has none and
 * `whole` is true. */
int lpattern_capture_count(const lpattern_state_t *st, bool whole);

/* Capture `i` (0-based) of the match s..e just found; with no captures, index 0 is the whole
 * match. Returns LPATTERN_MATCH and fills *out (out->len == LPATTERN_CAP_POSITION for "()", whose
 * 1-based position is out->start - st->src + 1), or LPATTERN_ERROR with st->error set to
 * "invalid capture index %N" or "unfinished capture". */
lpattern_status_t lpattern_get_capture(
    lpattern_state_t *st, int i, const char *s, const char *e, lpattern_capture_t *out);

/* True when `pat` holds none of Lua's magic characters ^$*+?.([%- and so can be searched for
 * literally. */
bool lpattern_has_specials(const char *pat, size_t len);

/* First occurrence of needle in hay (memmem semantics; an empty needle is found at hay), or NULL.
 * Linear time. */
const char *lpattern_find_plain(const char *hay, size_t hay_len, const char *needle, size_t len);
