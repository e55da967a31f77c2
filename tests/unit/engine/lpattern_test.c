/* Unit tests of the step-bounded Lua pattern matcher (engine/lpattern.c): every pattern item,
 * malformed patterns and when they are noticed, captures and their limits, the recursion limit,
 * and the step budget. Subjects and patterns are copied into exact-size heap buffers so the
 * sanitizers catch any read past their ends. */
#include "engine/lpattern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_support.h"

typedef struct {
  lpattern_status_t status;
  long start, end; /* 0-based start, exclusive end, of the match */
  int ncap;
  char cap[LPATTERN_MAXCAPTURES][48]; /* text, or "@<position>" for a position capture */
  char error[128];
  uint64_t steps;
} result_t;

/* Searches like string.find from 0-based `init`: a leading '^' anchors. */
static result_t find_n(
    const char *s, size_t slen, const char *p, size_t plen, size_t init, uint64_t limit)
{
  result_t r = { 0 };
  r.start = r.end = -1;
  char *sb = malloc(slen ? slen : 1), *pb = malloc(plen ? plen : 1);
  assert_non_null(sb);
  assert_non_null(pb);
  memcpy(sb, s, slen);
  memcpy(pb, p, plen);
  bool anchored = plen > 0 && pb[0] == '^';
  lpattern_state_t st;
  lpattern_init(&st, sb, slen, pb + anchored, plen - anchored, limit);
  const char *ms, *me;
  r.status = lpattern_find(&st, sb + init, anchored, &ms, &me);
  r.steps = st.steps;
  if (r.status == LPATTERN_MATCH) {
    r.start = ms - sb;
    r.end = me - sb;
    r.ncap = lpattern_capture_count(&st, false);
    for (int i = 0; i < r.ncap; i++) {
      lpattern_capture_t c;
      if (lpattern_get_capture(&st, i, ms, me, &c) != LPATTERN_MATCH) {
        r.status = LPATTERN_ERROR;
        break;
      }
      if (c.len == LPATTERN_CAP_POSITION) {
        snprintf(r.cap[i], sizeof r.cap[i], "@%ld", (long)(c.start - sb));
      } else {
        snprintf(r.cap[i], sizeof r.cap[i], "%.*s", (int)c.len, c.start);
      }
    }
  }
  snprintf(r.error, sizeof r.error, "%s", st.error);
  free(sb);
  free(pb);
  return r;
}

static result_t find(const char *s, const char *p)
{
  return find_n(s, strlen(s), p, strlen(p), 0, 0);
}

/* Asserts that p first matches s at [start, end). */
static void expect_match(const char *s, const char *p, long start, long end)
{
  result_t r = find(s, p);
  if (r.status != LPATTERN_MATCH || r.start != start || r.end != end) {
    fail_msg("find(\"%s\", \"%s\"): status %d at [%ld, %ld), expected [%ld, %ld) %s", s, p,
             r.status, r.start, r.end, start, end, r.error);
  }
}

static void expect_nomatch(const char *s, const char *p)
{
  result_t r = find(s, p);
  if (r.status != LPATTERN_NOMATCH) {
    fail_msg("find(\"%s\", \"%s\"): status %d at [%ld, %ld), expected no match %s", s, p, r.status,
             r.start, r.end, r.error);
  }
}

static void expect_error(const char *s, const char *p, const char *message)
{
  result_t r = find(s, p);
  if (r.status != LPATTERN_ERROR || strcmp(r.error, message) != 0) {
    fail_msg("find(\"%s\", \"%s\"): status %d \"%s\", expected error \"%s\"", s, p, r.status,
             r.error, message);
  }
}

/* A NUL-terminated string built by repetition, for long patterns and subjects. */
typedef struct {
  char s[1024];
  size_t len;
} text_t;

/* Appends n copies of unit; returns the text. */
static const char *add(text_t *t, const char *unit, int n)
{
  size_t u = strlen(unit);
  for (int i = 0; i < n; i++) {
    assert_true(t->len + u < sizeof t->s);
    memcpy(t->s + t->len, unit, u);
    t->len += u;
  }
  t->s[t->len] = '\0';
  return t->s;
}

static void test_literals_and_dot(void **state)
{
  (void)state;
  expect_match("hello", "ll", 2, 4);
  expect_match("hello", "hello", 0, 5);
  expect_nomatch("hello", "hellx");
  expect_nomatch("hell", "hello");
  expect_match("hello", ".", 0, 1);
  expect_match("hello", "l.", 2, 4);
  expect_nomatch("", ".");
  expect_match("a]b", "]", 1, 2);    /* ']' outside a set is plain */
  expect_match("a*b", "*", 1, 2);    /* a quantifier with nothing before is plain */
  expect_match("x^y", "x^y", 0, 3);  /* '^' not first is plain */
  expect_match("x$y", "x$y", 0, 3);  /* '$' not last is plain */
  expect_match("100%", "0%%", 2, 4); /* escapes of non-alphanumerics are literal */
  expect_match("a.b", "%.", 1, 2);
  expect_match("q", "%q", 0, 1); /* an escaped letter that is no class is itself */
  /* NUL bytes are ordinary in both subject and pattern */
  result_t r = find_n("a\0b", 3, "\0b", 2, 0, 0);
  assert_int_equal(r.status, LPATTERN_MATCH);
  assert_int_equal(r.start, 1);
  r = find_n("a\0b", 3, ".b", 2, 0, 0);
  assert_int_equal(r.start, 1);
}

static void test_classes(void **state)
{
  (void)state;
  static const struct {
    char cls;
    const char *members, *others;
  } classes[] = {
    { 'a', "azAZ", "09 _.\n" },    { 'c', "\n\t\x7f", "a 0" }, { 'd', "0189", "aZ x" },
    { 'g', "a!~0", " \n" },        { 'l', "az", "AZ0 " },      { 'p', ".,!_~", "a0 " },
    { 's', " \t\n\r\v\f", "a_0" }, { 'u', "AZ", "az0" },       { 'w', "az09AZ", "_ .-" },
    { 'x', "09afAF", "gG z" },
  };
  for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
    char lower[3] = { '%', classes[i].cls, 0 };
    char upper[3] = { '%', (char)(classes[i].cls - 'a' + 'A'), 0 };
    for (const char *c = classes[i].members; *c; c++) {
      char s[2] = { *c, 0 };
      expect_match(s, lower, 0, 1);
      expect_nomatch(s, upper);
    }
    for (const char *c = classes[i].others; *c; c++) {
      char s[2] = { *c, 0 };
      expect_nomatch(s, lower);
      expect_match(s, upper, 0, 1);
    }
  }
  /* %z, deprecated but still in Lua 5.4, is the NUL byte */
  result_t r = find_n("ab\0", 3, "%z", 2, 0, 0);
  assert_int_equal(r.start, 2);
  r = find_n("\0a", 2, "%Z", 2, 0, 0);
  assert_int_equal(r.start, 1);
  /* bytes >= 0x80 are in no class in the C locale */
  expect_nomatch("\xe9", "%a");
  expect_match("\xe9", "%A", 0, 1);
}

static void test_sets(void **state)
{
  (void)state;
  expect_match("xyzb", "[abc]", 3, 4);
  expect_match("abcx", "[^abc]", 3, 4);
  expect_match("--m--", "[k-o]", 2, 3);
  expect_nomatch("az", "[b-y]");
  expect_match("a_1", "[%d_]", 1, 2);
  expect_match("a_1", "[^%a_]", 2, 3);
  expect_match("a]", "[]]", 1, 2); /* ']' first in the body is a member */
  expect_match("]a", "[^]]", 1, 2);
  expect_match("x-", "[a-]", 1, 2); /* a '-' that ends the body is literal */
  expect_match("x-", "[-a]", 1, 2);
  expect_match("-", "[%a-z]", 0, 1); /* a class cannot start a range */
  expect_match("]", "[%]]", 0, 1);
  expect_match("^", "[%^]", 0, 1);
  expect_match("^", "[x^]", 0, 1);
  expect_nomatch("b", "[b-a]"); /* an empty range */
  expect_match(".", "[.]", 0, 1);
  expect_nomatch("a", "[.]");
  /* a range may swallow a '%', leaving the next '%' to escape the closing ']' (Lua does so) */
  expect_match("]", "[a-%%]", 0, 1);
  expect_nomatch("%", "[a-%%]");
  expect_match("\x85", "[\x80-\xff]", 0, 1);
  result_t r = find_n("a\0", 2, "[\0]", 3, 0, 0);
  assert_int_equal(r.start, 1);
}

static void test_quantifiers(void **state)
{
  (void)state;
  expect_match("aaab", "a*", 0, 3);
  expect_match("baaa", "a*", 0, 0); /* empty at the first position */
  expect_match("baaa", "a+", 1, 4);
  expect_nomatch("bbb", "a+");
  expect_match("aaab", "a-b", 0, 4);
  expect_match("aaab", "a-", 0, 0);
  expect_match("<a><b>", "<.->", 0, 3);
  expect_match("<a><b>", "<.*>", 0, 6);
  expect_match("color", "colou?r", 0, 5);
  expect_match("colour", "colou?r", 0, 6);
  expect_match("ab", "a?ab", 0, 2); /* '?' backtracks to zero */
  expect_match("xaaay", "a*y", 1, 5);
  expect_match("  x  ", "^%s*(.-)%s*$", 0, 5);
  result_t r = find("  trim me  ", "^%s*(.-)%s*$");
  assert_int_equal(r.ncap, 1);
  assert_string_equal(r.cap[0], "trim me");
  expect_match("[[x]]", "%[+(.-)%]+", 0, 5);
}

static void test_anchors(void **state)
{
  (void)state;
  expect_match("abc", "^a", 0, 1);
  expect_nomatch("abc", "^b");
  expect_match("abc", "c$", 2, 3);
  expect_nomatch("abc", "b$");
  expect_match("abc", "^abc$", 0, 3);
  expect_match("", "^$", 0, 0);
  expect_match("abc", "$", 3, 3);
  expect_match("abc", "^", 0, 0);
  expect_match("^a", "^^a", 0, 2); /* only the first '^' anchors */
  /* anchored at init, not at the subject's start */
  result_t r = find_n("xab", 3, "^a", 2, 1, 0);
  assert_int_equal(r.status, LPATTERN_MATCH);
  assert_int_equal(r.start, 1);
  r = find_n("xab", 3, "^b", 2, 1, 0);
  assert_int_equal(r.status, LPATTERN_NOMATCH);
}

static void test_empty_matches(void **state)
{
  (void)state;
  expect_match("", "", 0, 0);
  expect_match("abc", "", 0, 0);
  expect_match("", "a*", 0, 0);
  expect_match("", "a-", 0, 0);
  expect_match("", "a?", 0, 0);
  expect_match("", "()", 0, 0);
  result_t r = find_n("abc", 3, "", 0, 3, 0); /* at the very end */
  assert_int_equal(r.status, LPATTERN_MATCH);
  assert_int_equal(r.start, 3);
  assert_int_equal(r.end, 3);
  r = find_n("abc", 3, "x*$", 3, 1, 0);
  assert_int_equal(r.start, 3);
}

static void test_captures(void **state)
{
  (void)state;
  result_t r = find("key = value", "(%w+)%s*=%s*(%w+)");
  assert_int_equal(r.status, LPATTERN_MATCH);
  assert_int_equal(r.ncap, 2);
  assert_string_equal(r.cap[0], "key");
  assert_string_equal(r.cap[1], "value");

  r = find("abc", "()b()");
  assert_int_equal(r.ncap, 2);
  assert_string_equal(r.cap[0], "@1");
  assert_string_equal(r.cap[1], "@2");

  r = find("abcd", "(a(b(c)))(d)");
  assert_int_equal(r.ncap, 4);
  assert_string_equal(r.cap[0], "abc");
  assert_string_equal(r.cap[1], "bc");
  assert_string_equal(r.cap[2], "c");
  assert_string_equal(r.cap[3], "d");

  /* a failed alternative leaves no capture behind */
  r = find("ab", "(x?)b");
  assert_int_equal(r.ncap, 1);
  assert_string_equal(r.cap[0], "");
  assert_int_equal(r.start, 1);

  /* an unclosed capture matches, but cannot be read */
  char sub[] = "abc";
  lpattern_state_t st;
  lpattern_init(&st, sub, 3, "(b", 2, 0);
  const char *ms, *me;
  assert_int_equal(lpattern_find(&st, sub, false, &ms, &me), LPATTERN_MATCH);
  assert_int_equal(lpattern_capture_count(&st, true), 1);
  lpattern_capture_t c;
  assert_int_equal(lpattern_get_capture(&st, 0, ms, me, &c), LPATTERN_ERROR);
  assert_string_equal(st.error, "unfinished capture");

  /* with no captures, index 0 is the whole match and 1 is out of range */
  lpattern_init(&st, sub, 3, "b.", 2, 0);
  assert_int_equal(lpattern_find(&st, sub, false, &ms, &me), LPATTERN_MATCH);
  assert_int_equal(lpattern_capture_count(&st, true), 1);
  assert_int_equal(lpattern_capture_count(&st, false), 0);
  assert_int_equal(lpattern_get_capture(&st, 0, ms, me, &c), LPATTERN_MATCH);
  assert_int_equal(c.len, 2);
  assert_ptr_equal(c.start, sub + 1);
  assert_int_equal(lpattern_get_capture(&st, 1, ms, me, &c), LPATTERN_ERROR);
  assert_string_equal(st.error, "invalid capture index %2");
}

static void test_capture_limit(void **state)
{
  (void)state;
  text_t pat = { 0 }, subj = { 0 };
  add(&pat, "(.)", 32);
  add(&subj, "x", 40);
  result_t r = find(subj.s, pat.s);
  assert_int_equal(r.status, LPATTERN_MATCH);
  assert_int_equal(r.ncap, 32);
  add(&pat, "(.)", 1);
  expect_error(subj.s, pat.s, "too many captures");
  /* 32 position captures are fine, a 33rd is not */
  expect_match("", "()()()()()()()()()()()()()()()()()()()()()()()()()()()()()()()()", 0, 0);
  expect_error("", "()()()()()()()()()()()()()()()()()()()()()()()()()()()()()()()()()",
               "too many captures");
}

static void test_backrefs(void **state)
{
  (void)state;
  expect_match("abab", "(ab)%1", 0, 4);
  expect_match("xaXa", "(.)X%1", 1, 4);
  expect_nomatch("aXb", "(.)X%1");
  result_t r = find("say 'hi' now", "([\"'])(.-)%1");
  assert_int_equal(r.start, 4);
  assert_string_equal(r.cap[1], "hi");
  expect_match("abb", "(a)(b)%2", 0, 3);
  expect_nomatch("aa", "()a%1");      /* a position capture matches no text */
  expect_match("x", "(a*)x%1", 0, 1); /* an empty capture matches empty */
  expect_error("aa", "(a)%2", "invalid capture index %2");
  expect_error("aa", "(a%1)", "invalid capture index %1"); /* still open */
  expect_error("aa", "%0", "invalid capture index %0");
  expect_error("aa", "%1", "invalid capture index %1");
}

static void test_balance(void **state)
{
  (void)state;
  expect_match("f(a(b)c)d", "%b()", 1, 8);
  expect_match("x((a)", "%b()", 2, 5);
  expect_nomatch("((a", "%b()");
  expect_nomatch("", "%b()");
  expect_match("<<>><>", "%b<>%b<>", 0, 6);
  expect_match("aba", "%baa", 0, 3);   /* same open and close: the next one closes */
  expect_match("{x}*", "%b{}*", 0, 4); /* no quantifier applies to %b: '*' is plain */
  expect_error("(x)", "%b", "malformed pattern (missing arguments to '%b')");
  expect_error("(x)", "%b(", "malformed pattern (missing arguments to '%b')");
}

static void test_frontier(void **state)
{
  (void)state;
  expect_match("THE (quick) fox", "%f[%a]%a+", 0, 3);
  result_t r = find("THE (quick) fox", "%f[%a]%a+%f[%A]");
  assert_int_equal(r.start, 0);
  r = find_n("THE (quick) fox", 15, "%f[%l]%a+", 9, 0, 0);
  assert_int_equal(r.start, 5);
  assert_int_equal(r.end, 10);
  expect_match("hello", "%f[%z]", 5, 5);  /* the end counts as a NUL */
  expect_match("hello", "%f[^%z]", 0, 0); /* so does the start */
  expect_match("ab", "%f[b]", 1, 1);
  expect_match("aa", "%f[a]a*", 0, 2);
  expect_error("a", "%fa", "missing '[' after '%f' in pattern");
  expect_error("a", "%f", "missing '[' after '%f' in pattern");
  expect_error("a", "%f[a", "malformed pattern (missing ']')");
}

static void test_malformed(void **state)
{
  (void)state;
  expect_error("abc", "%", "malformed pattern (ends with '%')");
  expect_error("abc", "a*%", "malformed pattern (ends with '%')");
  expect_error("abc", "[a", "malformed pattern (missing ']')");
  expect_error("abc", "[", "malformed pattern (missing ']')");
  expect_error("abc", "[]", "malformed pattern (missing ']')");
  expect_error("abc", "[^]", "malformed pattern (missing ']')");
  expect_error("abc", "[a%]", "malformed pattern (missing ']')");
  expect_error("abc", "[a%", "malformed pattern (missing ']')");
  expect_error("abc", "a)", "invalid pattern capture");
  expect_error("abc", "b)", "invalid pattern capture");
  expect_error("abc", "(a))", "invalid pattern capture");

  /* like Lua, a malformed part is an error only when the matcher gets there */
  expect_nomatch("", "a%"); /* 'a' fails first */
  expect_nomatch("bbb", "a%");
  expect_nomatch("xyz", "a)");
  expect_nomatch("xyz", "a[");
  expect_error("", "a*%", "malformed pattern (ends with '%')"); /* a* matches empty */
}

static void test_recursion_limit(void **state)
{
  (void)state;
  /* one level per quantifier whose continuation is tried: with the first call, 199 matching
   * 'a?' nest 200 deep, Lua's limit */
  text_t subj = { 0 }, pat = { 0 };
  expect_match(add(&subj, "a", 199), add(&pat, "a?", 199), 0, 199);
  expect_error(add(&subj, "a", 1), add(&pat, "a?", 1), "pattern too complex");
  /* an optional item that does not match adds no level */
  pat = (text_t){ 0 };
  add(&pat, "a?", 300);
  expect_match("b", add(&pat, "b", 1), 0, 1);
  /* each capture adds two levels, one to open and one to close: 1 + 30 + 139 + 30 = 200 */
  for (int n = 139; n <= 140; n++) {
    subj = pat = (text_t){ 0 };
    add(&subj, "a", n);
    add(&pat, "(", 30);
    add(&pat, "a?", n);
    add(&pat, ")", 30);
    if (n == 139) {
      expect_match(subj.s, pat.s, 0, 139);
    } else {
      expect_error(subj.s, pat.s, "pattern too complex");
    }
  }
  /* the limit is per match attempt: the failed attempts before the match add nothing */
  subj = pat = (text_t){ 0 };
  add(&subj, "x", 50);
  add(&subj, "a", 199);
  add(&subj, "b", 1);
  add(&pat, "a?", 199);
  add(&pat, "b", 1);
  expect_match(subj.s, pat.s, 50, 250);
}

static void test_step_budget(void **state)
{
  (void)state;
  text_t as = { 0 };
  const char *subj = add(&as, "a", 256);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  result_t r = find_n(subj, 256, ".-.-.-.-b", 9, 0, 1000000);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_int_equal(r.status, LPATTERN_BUDGET);
  assert_true(r.steps > 1000000 && r.steps < 1000000 + 1000);
  assert_string_equal(r.error, "pattern too complex for the step budget");
  /* a hang guard, far above the few milliseconds this takes */
  assert_true((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) < 1000000000L);

  /* the same with the default limit (0) */
  r = find_n(subj, 256, ".-.-.-.-b", 9, 0, 0);
  assert_int_equal(r.status, LPATTERN_BUDGET);
  assert_true(r.steps > LPATTERN_DEFAULT_STEP_LIMIT);

  /* greedy nesting and long scans are bounded too */
  static char big[20001];
  memset(big, 'a', 20000);
  r = find_n(big, 20000, "(.*)*b", 6, 0, 100000);
  assert_int_equal(r.status, LPATTERN_BUDGET);
  r = find_n(big, 20000, "a-b", 3, 0, 100000);
  assert_int_equal(r.status, LPATTERN_BUDGET);
  memset(big, '(', 20000); /* every '(' opens a balance scan to the end */
  r = find_n(big, 20000, "%b()", 4, 0, 100000);
  assert_int_equal(r.status, LPATTERN_BUDGET);

  /* steps are proportional to work: a simple find costs a handful per byte */
  r = find("alertname=HighCPU severity=critical", "severity=(%w+)");
  assert_int_equal(r.status, LPATTERN_MATCH);
  assert_string_equal(r.cap[0], "critical");
  assert_true(r.steps > 10 && r.steps < 200);

  /* a budget just large enough succeeds, one less fails */
  uint64_t need = find_n("abcabc", 6, "(%a+)c%1", 8, 0, 0).steps;
  assert_int_equal(find_n("abcabc", 6, "(%a+)c%1", 8, 0, need).status, LPATTERN_MATCH);
  assert_int_equal(find_n("abcabc", 6, "(%a+)c%1", 8, 0, need - 1).status, LPATTERN_BUDGET);
}

static void test_budget_is_per_state(void **state)
{
  (void)state;
  /* steps accumulate across lpattern_match() calls on one state, as gsub needs */
  const char *s = "ab ab ab ab";
  lpattern_state_t st;
  lpattern_init(&st, s, strlen(s), "ab", 2, 0);
  assert_non_null(lpattern_match(&st, s));
  uint64_t one = st.steps;
  assert_non_null(lpattern_match(&st, s + 3));
  assert_int_equal(st.steps, 2 * one);
  st.step_limit = st.steps + one - 1;
  assert_null(lpattern_match(&st, s + 6));
  assert_int_equal(st.status, LPATTERN_BUDGET);
}

static void test_skip(void **state)
{
  (void)state;
  const char *s = "xxxxaxxa";
  lpattern_state_t st;
  lpattern_init(&st, s, 8, "ab*", 3, 0);
  assert_ptr_equal(lpattern_skip(&st, s), s + 4);
  assert_ptr_equal(lpattern_skip(&st, s + 5), s + 7);
  lpattern_init(&st, s, 8, "z", 1, 0);
  assert_null(lpattern_skip(&st, s));
  /* optional or magic first items skip nothing */
  static const char *const open[] = { "a*", "a?", "a-", ".", "%a", "[a]", "(a)", "$", "" };
  for (size_t i = 0; i < sizeof open / sizeof open[0]; i++) {
    lpattern_init(&st, s, 8, open[i], strlen(open[i]), 0);
    assert_ptr_equal(lpattern_skip(&st, s + 1), s + 1);
  }
  /* "$" alone anchors at the end, but "$x" starts with a plain '$' */
  lpattern_init(&st, s, 8, "$x", 2, 0);
  assert_null(lpattern_skip(&st, s));
}

static void test_plain_helpers(void **state)
{
  (void)state;
  assert_false(lpattern_has_specials("alertname", 9));
  assert_false(lpattern_has_specials("a]b)c", 5));
  assert_false(lpattern_has_specials("", 0));
  static const char specials[] = "^$*+?.([%-";
  for (const char *c = specials; *c; c++) {
    char p[3] = { 'a', *c, 0 };
    assert_true(lpattern_has_specials(p, 2));
  }
  assert_true(lpattern_has_specials("a\0.", 3)); /* past a NUL too */

  const char *hay = "one.two.three";
  assert_ptr_equal(lpattern_find_plain(hay, 13, ".t", 2), hay + 3);
  assert_ptr_equal(lpattern_find_plain(hay, 13, "three", 5), hay + 8);
  assert_null(lpattern_find_plain(hay, 13, "four", 4));
  assert_ptr_equal(lpattern_find_plain(hay, 13, "", 0), hay);
  assert_ptr_equal(lpattern_find_plain(hay, 0, "", 0), hay);
  assert_null(lpattern_find_plain(hay, 3, "one.", 4));
  static const char nuls[] = "a\0b\0c";
  assert_ptr_equal(lpattern_find_plain(nuls, 5, "\0c", 2), nuls + 3);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_literals_and_dot),
    cmocka_unit_test(test_classes),
    cmocka_unit_test(test_sets),
    cmocka_unit_test(test_quantifiers),
    cmocka_unit_test(test_anchors),
    cmocka_unit_test(test_empty_matches),
    cmocka_unit_test(test_captures),
    cmocka_unit_test(test_capture_limit),
    cmocka_unit_test(test_backrefs),
    cmocka_unit_test(test_balance),
    cmocka_unit_test(test_frontier),
    cmocka_unit_test(test_malformed),
    cmocka_unit_test(test_recursion_limit),
    cmocka_unit_test(test_step_budget),
    cmocka_unit_test(test_budget_is_per_state),
    cmocka_unit_test(test_skip),
    cmocka_unit_test(test_plain_helpers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
