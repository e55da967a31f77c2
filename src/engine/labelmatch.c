/* Alertmanager label matchers: the parser for `name op value` / `{...}` text, the RE2-subset check,
 * PCRE2 compilation (anchored both ends, JIT when available) and the allocation-free evaluator
 * that decides whether a policy sees an alert. */
#include "engine/labelmatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "engine/errbuf.h"

/* Values that are not valid UTF-8 are rewritten (each stray byte -> U+FFFD, as Go's regexp reads
 * them) into this much scratch before matching; a longer one is matched as is, where PCRE2's
 * invalid-UTF mode lets the stray bytes match nothing. */
#define LM_SCRATCH_SIZE 4096
/* How much of a value or regex an error message quotes. */
#define LM_ERR_QUOTE_MAX 48

struct vg_matcher {
  char *name; /* NUL-terminated copies; lengths are authoritative */
  size_t name_len;
  char *value;
  size_t value_len;
  vg_match_op_t op;
  pcre2_code *re; /* RE and NRE only */
};

struct vg_matchers {
  vg_matcher_t *items; /* in the order added: that is what format, get and equal show */
  size_t *order;       /* evaluation order: literal comparisons before regexes */
  size_t n, cap;
  pcre2_compile_context *cctx;
  pcre2_match_context *mctx;
  pcre2_match_data *md;         /* shared by the set's regexes, so eval never allocates */
  char *scratch;                /* LM_SCRATCH_SIZE bytes, allocated with the first regex */
  vg_labelmatch_stats_t *stats; /* behind a pointer: eval updates it through a const set */
};

/* Length of the valid UTF-8 sequence (RFC 3629: no overlongs, surrogates or > U+10FFFF) starting
 * at s, or 0 when the first byte does not start one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
  unsigned c = s[0];
  if (c < 0x80) {
    return 1;
  }
  if (c < 0xC2) {
    return 0;
  }
  if (c < 0xE0) {
    return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
  }
  if (c < 0xF0) {
    unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return n >= 3 && s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
  }
  if (c < 0xF5) {
    unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return n >= 4 && s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 ? 4
                                                                                                : 0;
  }
  return 0;
}

static bool utf8_valid(const char *str, size_t n)
{
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n) {
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    size_t k = utf8_seq(s + i, n - i);
    if (k == 0) {
      return false;
    }
    i += k;
  }
  return true;
}

/* Writes s as a double-quoted string for an error message: escapes as in format, other control
 * and stray non-UTF-8 bytes as \xNN, cut after LM_ERR_QUOTE_MAX bytes with "...". */
static void err_quote(char *dst, size_t cap, const char *str, size_t n)
{
  const unsigned char *s = (const unsigned char *)str;
  size_t o = 0;
  size_t lim = n > LM_ERR_QUOTE_MAX ? LM_ERR_QUOTE_MAX : n;
  /* Worst case per input byte is 4 output bytes; reserve room for quotes, "..." and NUL. */
  if (cap < 4 * LM_ERR_QUOTE_MAX + 8) {
    if (cap > 0) {
      dst[0] = '\0';
    }
    return;
  }
  dst[o++] = '"';
  size_t i = 0;
  while (i < lim) {
    unsigned c = s[i];
    if (c == '"' || c == '\\') {
      dst[o++] = '\\';
      dst[o++] = (char)c;
      i++;
    } else if (c == '\n') {
      dst[o++] = '\\';
      dst[o++] = 'n';
      i++;
    } else if (c < 0x20 || c == 0x7F) {
      o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
      i++;
    } else if (c < 0x80) {
      dst[o++] = (char)c;
      i++;
    } else {
      size_t k = utf8_seq(s + i, n - i);
      if (k == 0 || i + k > lim) {
        if (k != 0) {
          break; /* do not cut a character in half */
        }
        o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
        i++;
      } else {
        memcpy(dst + o, s + i, k);
        o += k;
        i += k;
      }
    }
  }
  dst[o++] = '"';
  if (i < n) {
    memcpy(dst + o, "...", 3);
    o += 3;
  }
  dst[o] = '\0';
}

static bool is_ident_start(unsigned char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_ident_char(unsigned char c)
{
  return is_ident_start(c) || (c >= '0' && c <= '9');
}

static bool is_ident(const char *s, size_t n)
{
  if (n == 0 || !is_ident_start((unsigned char)s[0])) {
    return false;
  }
  for (size_t i = 1; i < n; i++) {
    if (!is_ident_char((unsigned char)s[i])) {
      return false;
    }
  }
  return true;
}

/* ---- the RE2 subset ---- */

/* Index just past the character class opening at re[i] == '[' (n if unterminated). */
static size_t skip_class(const char *re, size_t n, size_t i)
{
  size_t j = i + 1;
  if (j < n && re[j] == '^') {
    j++;
  }
  if (j < n && re[j] == ']') {
    j++; /* a leading ] is a literal */
  }
  while (j < n) {
    if (re[j] == '\\') {
      j += 2;
    } else if (re[j] == '[' && j + 1 < n && re[j + 1] == ':') {
      size_t k = j + 2;
      while (k + 1 < n && !(re[k] == ':' && re[k + 1] == ']')) {
        k++;
      }
      j = k + 1 < n ? k + 2 : j + 1;
    } else if (re[j] == ']') {
      return j + 1;
    } else {
      j++;
    }
  }
  return n;
}

/* Whether re[i] == '{' starts a counted repetition {n}, {n,} or {n,m}; *end is just past it. */
static bool counted_rep(const char *re, size_t n, size_t i, size_t *end)
{
  size_t j = i + 1, digits = 0;
  while (j < n && re[j] >= '0' && re[j] <= '9') {
    j++, digits++;
  }
  if (digits == 0) {
    return false;
  }
  if (j < n && re[j] == ',') {
    j++;
    while (j < n && re[j] >= '0' && re[j] <= '9') {
      j++;
    }
  }
  if (j < n && re[j] == '}') {
    *end = j + 1;
    return true;
  }
  return false;
}

/* Checks what follows "(?" (p, len bytes); NULL when RE2 has it too. */
static const char *group_unsupported(const char *p, size_t len)
{
  if (len == 0) {
    return NULL; /* PCRE2 reports the truncation */
  }
  switch (p[0]) {
    case ':':
      return NULL;
    case '=':
    case '!':
      return "lookahead assertions are not supported";
    case '<':
      if (len > 1 && (p[1] == '=' || p[1] == '!')) {
        return "lookbehind assertions are not supported";
      }
      return NULL; /* (?<name>...) */
    case 'P':
      if (len > 1 && p[1] == '<') {
        return NULL;
      }
      if (len > 1 && p[1] == '=') {
        return "back-references are not supported";
      }
      return "recursion and subroutine calls are not supported";
    case '>':
      return "atomic groups are not supported";
    case '|':
      return "branch reset groups are not supported";
    case '(':
      return "conditional groups are not supported";
    case 'R':
    case '&':
    case '+':
      return "recursion and subroutine calls are not supported";
    case 'C':
      return "callouts are not supported";
    case '#':
      return "comment groups are not supported";
    case '\'':
      return "(?'name'...) groups are not supported, use (?P<name>...)";
    default:
      break;
  }
  if (p[0] >= '0' && p[0] <= '9') {
    return "recursion and subroutine calls are not supported";
  }
  if (p[0] == '-' && len > 1 && p[1] >= '0' && p[1] <= '9') {
    return "recursion and subroutine calls are not supported";
  }
  for (size_t k = 0; k < len; k++) {
    char c = p[k];
    if (c == ')' || c == ':') {
      return NULL;
    }
    if (c != 'i' && c != 'm' && c != 's' && c != 'U' && c != '-') {
      return "only the inline flags i, m, s and U are supported";
    }
  }
  return NULL;
}

/* Returns why `re` uses a feature Go's RE2 syntax lacks (setting *at to its offset), or NULL.
 * Syntax errors are left for PCRE2 to report. */
static const char *re2_unsupported(const char *re, size_t n, size_t *at)
{
  bool after_quant = false;
  size_t i = 0;
  while (i < n) {
    char c = re[i];
    *at = i;
    if (c == '\\') {
      if (i + 1 >= n) {
        return NULL;
      }
      char e = re[i + 1];
      if (e == 'Q') {
        size_t j = i + 2;
        while (j + 1 < n && !(re[j] == '\\' && re[j + 1] == 'E')) {
          j++;
        }
        i = j + 1 < n ? j + 2 : n;
        after_quant = false;
        continue;
      }
      if ((e >= '1' && e <= '9') || e == 'g' || e == 'k') {
        return "back-references are not supported";
      }
      switch (e) {
        case 'K':
          return "\\K is not supported";
        case 'G':
          return "\\G is not supported";
        case 'C':
          return "\\C is not supported";
        case 'Z':
          return "\\Z is not supported, use \\z";
        case 'R':
          return "\\R is not supported";
        case 'X':
          return "\\X is not supported";
        default:
          break;
      }
      i += 2;
      after_quant = false;
      continue;
    }
    if (c == '[') {
      i = skip_class(re, n, i);
      after_quant = false;
      continue;
    }
    if (c == '(') {
      after_quant = false;
      if (i + 1 < n && re[i + 1] == '*') {
        return "backtracking control verbs are not supported";
      }
      if (i + 1 < n && re[i + 1] == '?') {
        const char *why = group_unsupported(re + i + 2, n - i - 2);
        if (why != NULL) {
          return why;
        }
        i += 2;
        continue;
      }
      i++;
      continue;
    }
    if (c == '*' || c == '+' || c == '?') {
      if (after_quant && c == '+') {
        return "possessive quantifiers are not supported";
      }
      after_quant = !(after_quant && c == '?'); /* a ? after a quantifier makes it lazy */
      i++;
      continue;
    }
    size_t end;
    if (c == '{' && counted_rep(re, n, i, &end)) {
      i = end;
      after_quant = true;
      continue;
    }
    after_quant = false;
    i++;
  }
  return NULL;
}

static pcre2_code *regex_compile(
    vg_matchers_t *m, const char *re, size_t n, char *err, size_t errlen)
{
  char q[4 * LM_ERR_QUOTE_MAX + 8];
  size_t at = 0;
  const char *why = re2_unsupported(re, n, &at);
  if (why != NULL) {
    err_quote(q, sizeof q, re, n);
    vg_errf(err, errlen, "bad regex %s: %s at offset %zu", q, why, at);
    return NULL;
  }
  /* ANCHORED + ENDANCHORED give Alertmanager's ^(?:re)$; DOLLAR_ENDONLY makes $ mean end of text
   * as in RE2 (not "before a final newline"). UTF + MATCH_INVALID_UTF: the regex must be UTF-8,
   * subjects need not be. */
  uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED |
                  PCRE2_DOLLAR_ENDONLY | PCRE2_NEVER_BACKSLASH_C;
  int code = 0;
  PCRE2_SIZE off = 0;
  /* PCRE2 wants a non-NULL pattern even when empty. */
  pcre2_code *rc = pcre2_compile((PCRE2_SPTR)(n ? re : ""), n, opts, &code, &off, m->cctx);
  if (rc == NULL) {
    PCRE2_UCHAR msg[160];
    if (pcre2_get_error_message(code, msg, sizeof msg) < 0) {
      snprintf((char *)msg, sizeof msg, "PCRE2 error %d", code);
    }
    err_quote(q, sizeof q, re, n);
    vg_errf(err, errlen, "bad regex %s: %s at offset %zu", q, (const char *)msg, (size_t)off);
    return NULL;
  }
  (void)pcre2_jit_compile(rc, PCRE2_JIT_COMPLETE); /* the interpreter runs it otherwise */
  return rc;
}

/* ---- the set ---- */

vg_matchers_t *labelmatch_new(void)
{
  vg_matchers_t *m = calloc(1, sizeof *m);
  if (m == NULL) {
    return NULL;
  }
  m->stats = calloc(1, sizeof *m->stats);
  m->cctx = pcre2_compile_context_create(NULL);
  m->mctx = pcre2_match_context_create(NULL);
  /* One ovector pair: eval only needs match or no match. */
  m->md = pcre2_match_data_create(1, NULL);
  if (m->stats == NULL || m->cctx == NULL || m->mctx == NULL || m->md == NULL) {
    goto fail;
  }
  /* Pin what `.` and `$` treat as a newline instead of trusting the library's build default. */
  if (pcre2_set_newline(m->cctx, PCRE2_NEWLINE_LF) != 0 ||
      pcre2_set_match_limit(m->mctx, VG_LABELMATCH_MATCH_LIMIT) != 0 ||
      pcre2_set_depth_limit(m->mctx, VG_LABELMATCH_DEPTH_LIMIT) != 0) {
    goto fail;
  }
  return m;

fail:
  labelmatch_free(m);
  return NULL;
}

static void matcher_clear(vg_matcher_t *mt)
{
  free(mt->name);
  free(mt->value);
  pcre2_code_free(mt->re);
  memset(mt, 0, sizeof *mt);
}

void labelmatch_free(vg_matchers_t *m)
{
  if (m == NULL) {
    return;
  }
  for (size_t i = 0; i < m->n; i++) {
    matcher_clear(&m->items[i]);
  }
  free(m->items);
  free(m->order);
  pcre2_compile_context_free(m->cctx);
  pcre2_match_context_free(m->mctx);
  pcre2_match_data_free(m->md);
  free(m->scratch);
  free(m->stats);
  free(m);
}

/* Literal comparisons first: they are cheap and usually decide. Stable otherwise. */
static void rebuild_order(vg_matchers_t *m)
{
  size_t k = 0;
  for (size_t pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < m->n; i++) {
      bool is_re = m->items[i].re != NULL;
      if (is_re == (pass == 1)) {
        m->order[k++] = i;
      }
    }
  }
}

/* Drops matchers added after the first `keep` (undoing a failed parse). */
static void truncate_to(vg_matchers_t *m, size_t keep)
{
  while (m->n > keep) {
    matcher_clear(&m->items[--m->n]);
  }
  rebuild_order(m);
}

static char *dup_bytes(const char *s, size_t n)
{
  char *d = malloc(n + 1);
  if (d != NULL) {
    if (n > 0) {
      memcpy(d, s, n);
    }
    d[n] = '\0';
  }
  return d;
}

static int add_matcher(vg_matchers_t *m,
                       const char *name,
                       size_t name_len,
                       vg_match_op_t op,
                       const char *value,
                       size_t value_len,
                       char *err,
                       size_t errlen)
{
  if (name == NULL || name_len == 0) {
    vg_errf(err, errlen, "empty label name");
    return -1;
  }
  if (!utf8_valid(name, name_len)) {
    vg_errf(err, errlen, "label name is not valid UTF-8");
    return -1;
  }
  if (op != VG_MATCH_EQ && op != VG_MATCH_NE && op != VG_MATCH_RE && op != VG_MATCH_NRE) {
    vg_errf(err, errlen, "unknown operator %d", (int)op);
    return -1;
  }
  if (value == NULL && value_len > 0) {
    vg_errf(err, errlen, "NULL value with length %zu", value_len);
    return -1;
  }
  bool is_re = op == VG_MATCH_RE || op == VG_MATCH_NRE;
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 4;
    vg_matcher_t *items = realloc(m->items, cap * sizeof *items);
    if (items == NULL) {
      goto oom;
    }
    m->items = items;
    size_t *order = realloc(m->order, cap * sizeof *order);
    if (order == NULL) {
      goto oom;
    }
    m->order = order;
    m->cap = cap;
  }
  if (is_re && m->scratch == NULL) {
    m->scratch = malloc(LM_SCRATCH_SIZE);
    if (m->scratch == NULL) {
      goto oom;
    }
  }
  vg_matcher_t mt = { .name_len = name_len, .value_len = value_len, .op = op };
  mt.name = dup_bytes(name, name_len);
  mt.value = dup_bytes(value, value_len);
  if (mt.name == NULL || mt.value == NULL) {
    matcher_clear(&mt);
    goto oom;
  }
  if (is_re) {
    mt.re = regex_compile(m, value, value_len, err, errlen);
    if (mt.re == NULL) {
      matcher_clear(&mt);
      return -1;
    }
  }
  m->items[m->n++] = mt;
  rebuild_order(m);
  return 0;

oom:
  vg_errf(err, errlen, "out of memory");
  return -1;
}

int labelmatch_add(vg_matchers_t *m,
                   const char *name,
                   vg_match_op_t op,
                   const char *value,
                   size_t value_len,
                   char *err,
                   size_t errlen)
{
  return add_matcher(m, name, name ? strlen(name) : 0, op, value, value_len, err, errlen);
}

/* ---- the parser ---- */

typedef struct {
  const char *s;
  size_t len, pos;
  char *err;
  size_t errlen;
} lm_cursor_t;

static bool is_blank(char ch)
{
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

static void skip_ws(lm_cursor_t *c)
{
  while (c->pos < c->len && is_blank(c->s[c->pos])) {
    c->pos++;
  }
}

static bool at_end(const lm_cursor_t *c)
{
  return c->pos >= c->len;
}

/* A character for an error message: printable ASCII as is, anything else as \xNN. */
static const char *show_char(char ch, char buf[8])
{
  unsigned char u = (unsigned char)ch;
  if (u >= 0x20 && u < 0x7F && u != '"' && u != '\\') {
    snprintf(buf, 8, "%c", u);
  } else if (u == '"' || u == '\\') {
    snprintf(buf, 8, "\\%c", u);
  } else {
    snprintf(buf, 8, "\\x%02x", u);
  }
  return buf;
}

/* Reads the double-quoted string at the cursor into a new buffer (caller frees). Escapes: \" \\ \n;
 * any other backslash stays literal, as in Alertmanager's classic parser. NULL when unterminated
 * (*oom false) or out of memory (*oom true). */
static char *read_quoted(lm_cursor_t *c, size_t *out_len, bool *oom)
{
  *oom = false;
  size_t j = c->pos + 1;
  while (j < c->len && c->s[j] != '"') {
    j += c->s[j] == '\\' ? 2 : 1;
  }
  if (j >= c->len) {
    return NULL;
  }
  const char *raw = c->s + c->pos + 1;
  size_t raw_len = j - c->pos - 1;
  char *out = malloc(raw_len + 1);
  if (out == NULL) {
    *oom = true;
    return NULL;
  }
  size_t o = 0;
  for (size_t i = 0; i < raw_len; i++) {
    if (raw[i] == '\\' && i + 1 < raw_len) {
      char e = raw[i + 1];
      if (e == 'n') {
        out[o++] = '\n';
        i++;
        continue;
      }
      if (e == '"' || e == '\\') {
        out[o++] = e;
        i++;
        continue;
      }
    }
    out[o++] = raw[i];
  }
  out[o] = '\0';
  *out_len = o;
  c->pos = j + 1;
  return out;
}

/* Parses one `name op value` at the cursor and adds it. */
static int parse_one(vg_matchers_t *m, lm_cursor_t *c)
{
  char cb[8];
  char q[4 * LM_ERR_QUOTE_MAX + 8];
  char *qname = NULL, *qvalue = NULL;
  const char *name, *value;
  size_t name_len, value_len;
  bool oom;
  int rc = -1;

  skip_ws(c);
  if (at_end(c)) {
    vg_errf(c->err, c->errlen, "expected label name");
    return -1;
  }
  if (c->s[c->pos] == '"') {
    qname = read_quoted(c, &name_len, &oom);
    if (qname == NULL) {
      vg_errf(c->err, c->errlen, oom ? "out of memory" : "unterminated quoted label name");
      return -1;
    }
    name = qname;
  } else if (is_ident_start((unsigned char)c->s[c->pos])) {
    size_t start = c->pos;
    while (c->pos < c->len && is_ident_char((unsigned char)c->s[c->pos])) {
      c->pos++;
    }
    name = c->s + start;
    name_len = c->pos - start;
  } else {
    vg_errf(c->err, c->errlen, "expected label name, got \"%s\"", show_char(c->s[c->pos], cb));
    return -1;
  }

  skip_ws(c);
  err_quote(q, sizeof q, name, name_len);
  if (at_end(c)) {
    vg_errf(c->err, c->errlen, "missing operator after label name %s", q);
    goto done;
  }
  size_t op_start = c->pos;
  while (c->pos < c->len && strchr("=!~<>", c->s[c->pos]) != NULL && c->s[c->pos] != '\0') {
    c->pos++;
  }
  size_t op_len = c->pos - op_start;
  const char *op_text = c->s + op_start;
  vg_match_op_t op;
  if (op_len == 0) {
    vg_errf(c->err, c->errlen,
            "expected operator after label name %s, got \"%s\" (quote names that are not "
            "[a-zA-Z_][a-zA-Z0-9_]*)",
            q, show_char(c->s[c->pos], cb));
    goto done;
  } else if (op_len == 1 && op_text[0] == '=') {
    op = VG_MATCH_EQ;
  } else if (op_len == 2 && memcmp(op_text, "!=", 2) == 0) {
    op = VG_MATCH_NE;
  } else if (op_len == 2 && memcmp(op_text, "=~", 2) == 0) {
    op = VG_MATCH_RE;
  } else if (op_len == 2 && memcmp(op_text, "!~", 2) == 0) {
    op = VG_MATCH_NRE;
  } else {
    err_quote(q, sizeof q, op_text, op_len);
    vg_errf(c->err, c->errlen, "unknown operator %s", q);
    goto done;
  }

  skip_ws(c);
  if (!at_end(c) && c->s[c->pos] == '"') {
    qvalue = read_quoted(c, &value_len, &oom);
    if (qvalue == NULL) {
      vg_errf(c->err, c->errlen, oom ? "out of memory" : "unterminated quoted value");
      goto done;
    }
    value = qvalue;
  } else {
    /* Unquoted: up to the next , or } with blanks trimmed. */
    size_t start = c->pos;
    while (c->pos < c->len && c->s[c->pos] != ',' && c->s[c->pos] != '}') {
      if (c->s[c->pos] == '"' || c->s[c->pos] == '{') {
        vg_errf(c->err, c->errlen, "unexpected \"%s\" in unquoted value (quote the whole value)",
                show_char(c->s[c->pos], cb));
        goto done;
      }
      c->pos++;
    }
    size_t end = c->pos;
    while (end > start && is_blank(c->s[end - 1])) {
      end--;
    }
    value = c->s + start;
    value_len = end - start;
  }
  rc = add_matcher(m, name, name_len, op, value, value_len, c->err, c->errlen);

done:
  free(qname);
  free(qvalue);
  return rc;
}

int labelmatch_parse(vg_matchers_t *m, const char *text, size_t len, char *err, size_t errlen)
{
  lm_cursor_t c = { .s = text ? text : "", .len = text ? len : 0, .err = err, .errlen = errlen };
  size_t keep = m->n;
  char cb[8];
  bool braced = false;

  skip_ws(&c);
  if (at_end(&c)) {
    vg_errf(err, errlen, "empty matcher");
    return -1;
  }
  if (c.s[c.pos] == '{') {
    braced = true;
    c.pos++;
  }
  for (;;) {
    skip_ws(&c);
    if (braced && !at_end(&c) && c.s[c.pos] == '}') {
      c.pos++; /* `{}` or a trailing comma */
      break;
    }
    if (braced && at_end(&c)) {
      vg_errf(err, errlen, "missing closing \"}\"");
      goto fail;
    }
    if (!braced && at_end(&c) && m->n > keep) {
      break; /* trailing comma */
    }
    if (parse_one(m, &c) != 0) {
      goto fail;
    }
    skip_ws(&c);
    if (at_end(&c)) {
      if (braced) {
        vg_errf(err, errlen, "missing closing \"}\"");
        goto fail;
      }
      break;
    }
    if (c.s[c.pos] == ',') {
      c.pos++;
      continue;
    }
    if (braced && c.s[c.pos] == '}') {
      c.pos++;
      break;
    }
    vg_errf(err, errlen, "unexpected \"%s\" after value, expected \",\"%s",
            show_char(c.s[c.pos], cb), braced ? " or \"}\"" : "");
    goto fail;
  }
  skip_ws(&c);
  if (!at_end(&c)) {
    vg_errf(err, errlen, "unexpected \"%s\" after \"}\"", show_char(c.s[c.pos], cb));
    goto fail;
  }
  return 0;

fail:
  truncate_to(m, keep);
  return -1;
}

/* ---- evaluation ---- */

/* 1 match, 0 no match, -1 stopped by a limit or an error (counted). */
static int regex_run(const vg_matchers_t *m, const pcre2_code *re, const char *v, size_t n)
{
  if (!utf8_valid(v, n)) {
    /* Go's regexp reads each stray byte as U+FFFD (EF BF BD); do the same so `.` matches it. */
    const unsigned char *s = (const unsigned char *)v;
    size_t o = 0, i = 0;
    while (i < n && o + 4 <= LM_SCRATCH_SIZE) {
      size_t k = s[i] < 0x80 ? 1 : utf8_seq(s + i, n - i);
      if (k == 0) {
        memcpy(m->scratch + o, "\xEF\xBF\xBD", 3);
        o += 3;
        i++;
      } else {
        memcpy(m->scratch + o, s + i, k);
        o += k;
        i += k;
      }
    }
    if (i == n) {
      v = m->scratch;
      n = o;
    }
  }
  int rc = pcre2_match(re, (PCRE2_SPTR)v, n, 0, 0, m->md, m->mctx);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    /* The JIT's 32 KiB stack is small; the interpreter uses the heap, bounded by the limits. */
    rc = pcre2_match(re, (PCRE2_SPTR)v, n, 0, PCRE2_NO_JIT, m->md, m->mctx);
  }
  if (rc >= 0) {
    return 1;
  }
  if (rc == PCRE2_ERROR_NOMATCH) {
    return 0;
  }
  if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT ||
      rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    m->stats->limit_hits++;
  } else {
    m->stats->errors++;
  }
  return -1;
}

bool labelmatch_eval(const vg_matchers_t *m, const vg_label_t *labels, size_t nlabels)
{
  for (size_t k = 0; k < m->n; k++) {
    const vg_matcher_t *mt = &m->items[m->order[k]];
    const char *v = "";
    size_t vlen = 0;
    for (size_t j = 0; j < nlabels; j++) {
      const vg_label_t *l = &labels[j];
      if (l->name_len == mt->name_len && l->name[0] == mt->name[0] &&
          memcmp(l->name, mt->name, mt->name_len) == 0) {
        if (l->value != NULL) {
          v = l->value;
          vlen = l->value_len;
        }
        break;
      }
    }
    bool ok;
    switch (mt->op) {
      case VG_MATCH_EQ:
        ok = vlen == mt->value_len && (vlen == 0 || memcmp(v, mt->value, vlen) == 0);
        break;
      case VG_MATCH_NE:
        ok = !(vlen == mt->value_len && (vlen == 0 || memcmp(v, mt->value, vlen) == 0));
        break;
      default: {
        int r = regex_run(m, mt->re, v, vlen);
        if (r < 0) {
          return false; /* fail closed, whatever the operator */
        }
        ok = (r == 1) == (mt->op == VG_MATCH_RE);
        break;
      }
    }
    if (!ok) {
      return false;
    }
  }
  return true;
}

/* ---- inspection ---- */

size_t labelmatch_count(const vg_matchers_t *m)
{
  return m->n;
}

bool labelmatch_get(const vg_matchers_t *m, size_t i, vg_matcher_info_t *out)
{
  if (i >= m->n) {
    return false;
  }
  const vg_matcher_t *mt = &m->items[i];
  *out = (vg_matcher_info_t){ .name = mt->name,
                              .name_len = mt->name_len,
                              .op = mt->op,
                              .value = mt->value,
                              .value_len = mt->value_len };
  return true;
}

bool labelmatch_equal(const vg_matchers_t *a, const vg_matchers_t *b)
{
  if (a->n != b->n) {
    return false;
  }
  for (size_t i = 0; i < a->n; i++) {
    const vg_matcher_t *x = &a->items[i], *y = &b->items[i];
    if (x->op != y->op || x->name_len != y->name_len || x->value_len != y->value_len ||
        memcmp(x->name, y->name, x->name_len) != 0 ||
        memcmp(x->value, y->value, x->value_len) != 0) {
      return false;
    }
  }
  return true;
}

const char *labelmatch_op_name(vg_match_op_t op)
{
  switch (op) {
    case VG_MATCH_EQ:
      return "=";
    case VG_MATCH_NE:
      return "!=";
    case VG_MATCH_RE:
      return "=~";
    case VG_MATCH_NRE:
      return "!~";
  }
  return "?";
}

void labelmatch_stats(const vg_matchers_t *m, vg_labelmatch_stats_t *out)
{
  *out = *m->stats;
}

typedef struct {
  char *buf;
  size_t cap, n;
} lm_writer_t;

static void put(lm_writer_t *w, const char *s, size_t n)
{
  if (w->n + 1 < w->cap) {
    size_t room = w->cap - 1 - w->n;
    memcpy(w->buf + w->n, s, n < room ? n : room);
  }
  w->n += n;
}

/* Writes s quoted the way read_quoted() reads it back. */
static void put_quoted(lm_writer_t *w, const char *s, size_t n)
{
  put(w, "\"", 1);
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    const char *esc = s[i] == '"' ? "\\\"" : s[i] == '\\' ? "\\\\" : s[i] == '\n' ? "\\n" : NULL;
    if (esc != NULL) {
      put(w, s + run, i - run);
      put(w, esc, 2);
      run = i + 1;
    }
  }
  put(w, s + run, n - run);
  put(w, "\"", 1);
}

size_t labelmatch_format(const vg_matchers_t *m, char *buf, size_t buflen)
{
  lm_writer_t w = { .buf = buf, .cap = buf ? buflen : 0 };
  put(&w, "{", 1);
  for (size_t i = 0; i < m->n; i++) {
    const vg_matcher_t *mt = &m->items[i];
    if (i > 0) {
      put(&w, ", ", 2);
    }
    if (is_ident(mt->name, mt->name_len)) {
      put(&w, mt->name, mt->name_len);
    } else {
      put_quoted(&w, mt->name, mt->name_len);
    }
    const char *op = labelmatch_op_name(mt->op);
    put(&w, op, strlen(op));
    put_quoted(&w, mt->value, mt->value_len);
  }
  put(&w, "}", 1);
  if (w.cap > 0) {
    w.buf[w.n < w.cap ? w.n : w.cap - 1] = '\0';
  }
  return w.n;
}
