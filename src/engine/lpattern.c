/* A backtracking matcher for Lua 5.4 patterns that charges every step of work to a budget.
 * Written from the reference manual. Alternatives are explored in Lua's order and recursion nests
 * where Lua's does, so which malformed parts are reached and when "pattern too complex" strikes
 * are the same too (tests/unit/lua/strlib_bounded_test.c compares the two). */
#include "engine/lpattern.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* A single-character class as decoded from the pattern. */
typedef enum {
  ITEM_ANY,   /* . */
  ITEM_BYTE,  /* a literal byte, also %<non-class> */
  ITEM_CLASS, /* %a %d ... and their complements */
  ITEM_SET,   /* [...] */
} item_kind_t;

typedef enum {
  CLASS_ALPHA,
  CLASS_CNTRL,
  CLASS_DIGIT,
  CLASS_GRAPH,
  CLASS_LOWER,
  CLASS_PUNCT,
  CLASS_SPACE,
  CLASS_UPPER,
  CLASS_ALNUM,
  CLASS_XDIGIT,
  CLASS_NUL, /* %z: deprecated since Lua 5.2 but still accepted by 5.4 */
} class_id_t;

typedef struct {
  item_kind_t kind;
  int byte;                  /* ITEM_BYTE */
  class_id_t cls;            /* ITEM_CLASS */
  bool negate;               /* ITEM_CLASS, ITEM_SET */
  const unsigned char *body; /* ITEM_SET: first byte of the set's body */
  const unsigned char *last; /* ITEM_SET: its closing ']' */
  const char *next;          /* first pattern byte after the item: a quantifier, maybe */
} item_t;

static inline const char *descend(lpattern_state_t *st, const char *s, const char *p);

static const char *fail(lpattern_state_t *st, const char *msg)
{
  if (st->status != LPATTERN_ERROR && st->status != LPATTERN_BUDGET) {
    st->status = LPATTERN_ERROR;
    snprintf(st->error, sizeof st->error, "%s", msg);
  }
  return NULL;
}

static const char *bad_capture_index(lpattern_state_t *st, int index)
{
  char msg[48];
  snprintf(msg, sizeof msg, "invalid capture index %%%d", index + 1);
  return fail(st, msg);
}

/* Adds n steps; false (and status BUDGET) once the limit is passed. */
static inline bool charge(lpattern_state_t *st, uint64_t n)
{
  st->steps += n;
  if (st->steps <= st->step_limit) {
    return true;
  }
  if (st->status != LPATTERN_ERROR) {
    st->status = LPATTERN_BUDGET;
    snprintf(st->error, sizeof st->error, "pattern too complex for the step budget");
  }
  return false;
}

/* Maps a class letter (either case) to its id; false for bytes that name no class. Class letters
 * are ASCII, so the case folding needs no locale. */
static bool class_of(int letter, class_id_t *out)
{
  switch (letter >= 'A' && letter <= 'Z' ? letter + ('a' - 'A') : letter) {
    case 'a':
      *out = CLASS_ALPHA;
      return true;
    case 'c':
      *out = CLASS_CNTRL;
      return true;
    case 'd':
      *out = CLASS_DIGIT;
      return true;
    case 'g':
      *out = CLASS_GRAPH;
      return true;
    case 'l':
      *out = CLASS_LOWER;
      return true;
    case 'p':
      *out = CLASS_PUNCT;
      return true;
    case 's':
      *out = CLASS_SPACE;
      return true;
    case 'u':
      *out = CLASS_UPPER;
      return true;
    case 'w':
      *out = CLASS_ALNUM;
      return true;
    case 'x':
      *out = CLASS_XDIGIT;
      return true;
    case 'z':
      *out = CLASS_NUL;
      return true;
    default:
      return false;
  }
}

static bool class_has(class_id_t cls, int c)
{
  switch (cls) {
    case CLASS_ALPHA:
      return isalpha(c) != 0;
    case CLASS_CNTRL:
      return iscntrl(c) != 0;
    case CLASS_DIGIT:
      return isdigit(c) != 0;
    case CLASS_GRAPH:
      return isgraph(c) != 0;
    case CLASS_LOWER:
      return islower(c) != 0;
    case CLASS_PUNCT:
      return ispunct(c) != 0;
    case CLASS_SPACE:
      return isspace(c) != 0;
    case CLASS_UPPER:
      return isupper(c) != 0;
    case CLASS_ALNUM:
      return isalnum(c) != 0;
    case CLASS_XDIGIT:
      return isxdigit(c) != 0;
    case CLASS_NUL:
      return c == 0;
  }
  return false;
}

/* What "%<esc>" matches inside a set: a class, or the byte itself. */
static bool escape_has(int esc, int c)
{
  class_id_t cls;
  if (!class_of(esc, &cls)) {
    return esc == c;
  }
  return class_has(cls, c) != (esc >= 'A' && esc <= 'Z');
}

/* Membership in a set body [body, last). Items are read left to right: "%x" escapes, "a-z" ranges
 * (only when the upper bound lies before the closing ']') and single bytes. */
static bool set_has(const unsigned char *q, const unsigned char *last, int c)
{
  while (q < last) {
    if (*q == '%') {
      /* the escaped byte may be the closing ']' itself when a range swallowed the '%' before */
      if (escape_has(q[1], c)) {
        return true;
      }
      q += 2;
    } else if (q + 2 < last && q[1] == '-') {
      if (q[0] <= c && c <= q[2]) {
        return true;
      }
      q += 3;
    } else {
      if (*q == c) {
        return true;
      }
      q++;
    }
  }
  return false;
}

static inline bool item_has(const item_t *it, int c)
{
  switch (it->kind) {
    case ITEM_ANY:
      return true;
    case ITEM_BYTE:
      return it->byte == c;
    case ITEM_CLASS:
      return class_has(it->cls, c) != it->negate;
    case ITEM_SET:
      return set_has(it->body, it->last, c) != it->negate;
  }
  return false;
}

/* Decodes the single-character class at p (p < pat_end). False, with the error set, when it is
 * malformed. */
static bool item_decode(lpattern_state_t *st, const char *p, item_t *it)
{
  const char *end = st->pat_end;
  switch (*p) {
    case '.':
      it->kind = ITEM_ANY;
      it->next = p + 1;
      return true;
    case '%':
      if (p + 1 == end) {
        fail(st, "malformed pattern (ends with '%')");
        return false;
      }
      if (class_of((unsigned char)p[1], &it->cls)) {
        it->kind = ITEM_CLASS;
        it->negate = p[1] >= 'A' && p[1] <= 'Z';
      } else {
        it->kind = ITEM_BYTE;
        it->byte = (unsigned char)p[1];
      }
      it->next = p + 2;
      return true;
    case '[': {
      const char *q = p + 1;
      it->kind = ITEM_SET;
      it->negate = q < end && *q == '^';
      if (it->negate) {
        q++;
      }
      it->body = (const unsigned char *)q;
      /* The body's first byte never closes the set, so "[]]" and "[^]]" hold ']'. A '%' takes
       * the next byte with it. */
      do {
        if (q == end) {
          fail(st, "malformed pattern (missing ']')");
          return false;
        }
        if (*q++ == '%' && q < end) {
          q++;
        }
      } while (q == end || *q != ']');
      it->last = (const unsigned char *)q;
      it->next = q + 1;
      return true;
    }
    default:
      it->kind = ITEM_BYTE;
      it->byte = (unsigned char)*p;
      it->next = p + 1;
      return true;
  }
}

/* Length of the run of bytes from s that satisfy pred, stopping at end. */
#define RUN_WHILE(pred)                            \
  do {                                             \
    while (t < end && (pred((unsigned char)*t))) { \
      t++;                                         \
    }                                              \
  } while (0)

/* How many consecutive bytes from s (up to end) the item matches. The common classes get their
 * own loops: this is the inner loop of every greedy repetition. */
static size_t item_run(const item_t *it, const char *s, const char *end)
{
  const char *t = s;
  if (it->kind == ITEM_ANY) {
    return (size_t)(end - s);
  }
  if (it->kind == ITEM_BYTE) {
    while (t < end && (unsigned char)*t == it->byte) {
      t++;
    }
  } else if (it->kind == ITEM_CLASS && !it->negate && it->cls == CLASS_ALPHA) {
    RUN_WHILE(isalpha);
  } else if (it->kind == ITEM_CLASS && !it->negate && it->cls == CLASS_ALNUM) {
    RUN_WHILE(isalnum);
  } else if (it->kind == ITEM_CLASS && !it->negate && it->cls == CLASS_DIGIT) {
    RUN_WHILE(isdigit);
  } else if (it->kind == ITEM_CLASS && !it->negate && it->cls == CLASS_SPACE) {
    RUN_WHILE(isspace);
  } else {
    while (t < end && item_has(it, (unsigned char)*t)) {
      t++;
    }
  }
  return (size_t)(t - s);
}
#undef RUN_WHILE

/* item* or item+ once the first repetition is known to match: longest run first. */
static const char *repeat_greedy(lpattern_state_t *st,
                                 const char *s,
                                 const item_t *it,
                                 const char *rest)
{
  size_t n = item_run(it, s, st->src_end);
  if (!charge(st, n)) {
    return NULL;
  }
  for (size_t k = n + 1; k-- > 0;) {
    const char *r = descend(st, s + k, rest);
    if (r != NULL || st->status != LPATTERN_NOMATCH) {
      return r;
    }
  }
  return NULL;
}

/* item- once the first repetition is known to match: shortest run first. */
static const char *repeat_lazy(lpattern_state_t *st,
                               const char *s,
                               const item_t *it,
                               const char *rest)
{
  for (;;) {
    const char *r = descend(st, s, rest);
    if (r != NULL || st->status != LPATTERN_NOMATCH) {
      return r;
    }
    if (!charge(st, 1)) {
      return NULL;
    }
    if (s == st->src_end || !item_has(it, (unsigned char)*s)) {
      return NULL;
    }
    s++;
  }
}

/* %bxy at s; args points at x. */
static const char *balanced(lpattern_state_t *st, const char *s, const char *args)
{
  if (args + 1 >= st->pat_end) {
    return fail(st, "malformed pattern (missing arguments to '%b')");
  }
  if (s == st->src_end || *s != args[0]) {
    return NULL;
  }
  const char open = args[0], close = args[1];
  size_t nest = 1;
  for (const char *t = s + 1; t < st->src_end; t++) {
    if (*t == close) {
      if (--nest == 0) {
        return charge(st, (uint64_t)(t - s)) ? t + 1 : NULL;
      }
    } else if (*t == open) {
      nest++;
    }
  }
  charge(st, (uint64_t)(st->src_end - s));
  return NULL;
}

/* %1..%9 (and the invalid %0) at s. */
static const char *backref(lpattern_state_t *st, const char *s, int digit)
{
  int i = digit - '1';
  if (i < 0 || i >= st->level || st->capture[i].len == LPATTERN_CAP_UNFINISHED) {
    return bad_capture_index(st, i);
  }
  ptrdiff_t len = st->capture[i].len;
  if (len < 0 || st->src_end - s < len) {
    return NULL; /* a position capture never matches text */
  }
  if (!charge(st, (uint64_t)len)) {
    return NULL;
  }
  return memcmp(s, st->capture[i].start, (size_t)len) == 0 ? s + len : NULL;
}

static const char *capture_open(lpattern_state_t *st, const char *s, const char *p, ptrdiff_t kind)
{
  if (st->level >= LPATTERN_MAXCAPTURES) {
    return fail(st, "too many captures");
  }
  int i = st->level++;
  st->capture[i].start = s;
  st->capture[i].len = kind;
  const char *r = descend(st, s, p);
  if (r == NULL) {
    st->level--;
  }
  return r;
}

static const char *capture_close(lpattern_state_t *st, const char *s, const char *p)
{
  int i = st->level - 1;
  while (i >= 0 && st->capture[i].len != LPATTERN_CAP_UNFINISHED) {
    i--;
  }
  if (i < 0) {
    return fail(st, "invalid pattern capture");
  }
  st->capture[i].len = s - st->capture[i].start;
  const char *r = descend(st, s, p);
  if (r == NULL) {
    st->capture[i].len = LPATTERN_CAP_UNFINISHED;
  }
  return r;
}

/* Matches the pattern from p at s without adding a recursion level. Items that leave no choice
 * loop here; quantifiers and captures try their continuation one level deeper. */
static const char *match_here(lpattern_state_t *st, const char *s, const char *p)
{
  const char *pend = st->pat_end;
  for (;;) {
    if (p == pend) {
      return s;
    }
    switch (*p) {
      case '(':
        if (p + 1 < pend && p[1] == ')') {
          return capture_open(st, s, p + 2, LPATTERN_CAP_POSITION);
        }
        return capture_open(st, s, p + 1, LPATTERN_CAP_UNFINISHED);
      case ')':
        return capture_close(st, s, p + 1);
      case '$':
        if (p + 1 == pend) {
          return s == st->src_end ? s : NULL;
        }
        break;
      case '%':
        if (p + 1 == pend) {
          break; /* item_decode reports it */
        }
        if (p[1] == 'b') {
          s = balanced(st, s, p + 2);
          if (s == NULL) {
            return NULL;
          }
          p += 4;
          continue;
        }
        if (p[1] == 'f') {
          item_t set;
          p += 2;
          if (p == pend || *p != '[') {
            return fail(st, "missing '[' after '%f' in pattern");
          }
          if (!item_decode(st, p, &set)) {
            return NULL;
          }
          int before = s == st->src ? 0 : (unsigned char)s[-1];
          int here = s == st->src_end ? 0 : (unsigned char)*s;
          if (item_has(&set, before) || !item_has(&set, here)) {
            return NULL;
          }
          p = set.next;
          continue;
        }
        if (p[1] >= '0' && p[1] <= '9') {
          s = backref(st, s, p[1]);
          if (s == NULL) {
            return NULL;
          }
          p += 2;
          continue;
        }
        break;
      default:
        break;
    }

    item_t it;
    if (!charge(st, 1) || !item_decode(st, p, &it)) {
      return NULL;
    }
    const char *q = it.next;
    int quant = q < pend ? *q : 0;
    bool hit = s < st->src_end && item_has(&it, (unsigned char)*s);
    switch (quant) {
      case '?':
        if (hit) {
          const char *r = descend(st, s + 1, q + 1);
          if (r != NULL || st->status != LPATTERN_NOMATCH) {
            return r;
          }
        }
        p = q + 1;
        continue;
      case '*':
        if (!hit) {
          p = q + 1;
          continue;
        }
        return repeat_greedy(st, s, &it, q + 1);
      case '+':
        return hit ? repeat_greedy(st, s + 1, &it, q + 1) : NULL;
      case '-':
        if (!hit) {
          p = q + 1;
          continue;
        }
        return repeat_lazy(st, s, &it, q + 1);
      default:
        if (!hit) {
          return NULL;
        }
        s++;
        p = q;
        continue;
    }
  }
}

/* One recursion level: the unit Lua's depth limit counts. */
static inline const char *descend(lpattern_state_t *st, const char *s, const char *p)
{
  if (st->depth >= LPATTERN_MAXDEPTH) {
    return fail(st, "pattern too complex");
  }
  if (!charge(st, 1)) {
    return NULL;
  }
  st->depth++;
  const char *r = match_here(st, s, p);
  st->depth--;
  return r;
}

void lpattern_init(lpattern_state_t *st,
                   const char *src,
                   size_t src_len,
                   const char *pat,
                   size_t pat_len,
                   uint64_t step_limit)
{
  st->src = src;
  st->src_end = src + src_len;
  st->pat = pat;
  st->pat_end = pat + pat_len;
  st->level = 0;
  st->steps = 0;
  st->step_limit = step_limit ? step_limit : LPATTERN_DEFAULT_STEP_LIMIT;
  st->depth = 0;
  st->status = LPATTERN_NOMATCH;
  st->error[0] = '\0';
  /* A plain byte that is not optional ('*', '?', '-') must be the first byte of any match. */
  st->lead = -1;
  if (pat_len > 0) {
    int first = (unsigned char)pat[0];
    int after = pat_len > 1 ? (unsigned char)pat[1] : 0;
    bool magic = first == '(' || first == ')' || first == '%' || first == '[' || first == '.' ||
                 (first == '$' && pat_len == 1);
    if (!magic && after != '*' && after != '?' && after != '-') {
      st->lead = first;
    }
  }
}

const char *lpattern_match(lpattern_state_t *st, const char *s)
{
  st->level = 0;
  st->depth = 0;
  st->status = LPATTERN_NOMATCH;
  const char *r = descend(st, s, st->pat);
  if (r != NULL) {
    st->status = LPATTERN_MATCH;
  }
  return r;
}

const char *lpattern_skip(lpattern_state_t *st, const char *s)
{
  if (st->lead < 0 || s >= st->src_end || (unsigned char)*s == st->lead) {
    return s;
  }
  const char *t = memchr(s, st->lead, (size_t)(st->src_end - s));
  /* charged without a check: the next match attempt checks */
  st->steps += (uint64_t)((t ? t : st->src_end) - s);
  return t;
}

lpattern_status_t lpattern_find(
    lpattern_state_t *st, const char *from, bool anchored, const char **mstart, const char **mend)
{
  const char *s = from;
  for (;;) {
    if (!anchored) {
      s = lpattern_skip(st, s);
      if (s == NULL) {
        return LPATTERN_NOMATCH;
      }
    }
    const char *e = lpattern_match(st, s);
    if (e != NULL) {
      *mstart = s;
      *mend = e;
      return LPATTERN_MATCH;
    }
    if (st->status != LPATTERN_NOMATCH || anchored || s == st->src_end) {
      return st->status;
    }
    s++;
  }
}

int lpattern_capture_count(const lpattern_state_t *st, bool whole)
{
  return st->level == 0 && whole ? 1 : st->level;
}

lpattern_status_t lpattern_get_capture(
    lpattern_state_t *st, int i, const char *s, const char *e, lpattern_capture_t *out)
{
  if (i >= st->level) {
    if (i != 0) {
      bad_capture_index(st, i);
      return LPATTERN_ERROR;
    }
    out->start = s;
    out->len = e - s;
    return LPATTERN_MATCH;
  }
  if (st->capture[i].len == LPATTERN_CAP_UNFINISHED) {
    fail(st, "unfinished capture");
    return LPATTERN_ERROR;
  }
  *out = st->capture[i];
  return LPATTERN_MATCH;
}

bool lpattern_has_specials(const char *pat, size_t len)
{
  for (size_t i = 0; i < len; i++) {
    switch (pat[i]) {
      case '^':
      case '$':
      case '*':
      case '+':
      case '?':
      case '.':
      case '(':
      case '[':
      case '%':
      case '-':
        return true;
      default:
        break;
    }
  }
  return false;
}

const char *lpattern_find_plain(const char *hay, size_t hay_len, const char *needle, size_t len)
{
  if (len == 0) {
    return hay;
  }
  if (len > hay_len) {
    return NULL;
  }
  if (len > 32) {
    return memmem(hay, hay_len, needle, len); /* linear whatever the input */
  }
  /* Short needles, the common case, are cheaper found this way than with memmem's set-up, and
   * the cost stays below 32 comparisons per byte. */
  const char *last = hay + (hay_len - len);
  for (const char *s = hay; s <= last; s++) {
    s = memchr(s, needle[0], (size_t)(last - s) + 1);
    if (s == NULL) {
      return NULL;
    }
    if (memcmp(s + 1, needle + 1, len - 1) == 0) {
      return s;
    }
  }
  return NULL;
}
