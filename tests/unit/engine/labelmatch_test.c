/* Tests for src/engine/labelmatch.c: Alertmanager matcher syntax, RE2 regex semantics (anchoring,
 * rejected PCRE-only features, invalid UTF-8), the match limit, and format/parse round trips. */
#include "engine/labelmatch.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "test_support.h"

/* A label from C strings (no NUL bytes inside). */
#define LBL(n, v)                  \
  {                                \
    (n), strlen(n), (v), strlen(v) \
  }
/* A label whose value is a string literal that may contain NUL bytes. */
#define LBL_BYTES(n, v)                \
  {                                    \
    (n), strlen(n), (v), sizeof(v) - 1 \
  }
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static vg_matchers_t *parse_ok(const char *text)
{
  vg_matchers_t *m = labelmatch_new();
  assert_non_null(m);
  char err[256] = "";
  if (labelmatch_parse(m, text, strlen(text), err, sizeof err) != 0) {
    fail_msg("parse(%s) failed: %s", text, err);
  }
  return m;
}

/* Parses `text` and evaluates it against `labels`. */
static bool matches(const char *text, const vg_label_t *labels, size_t n)
{
  vg_matchers_t *m = parse_ok(text);
  bool r = labelmatch_eval(m, labels, n);
  labelmatch_free(m);
  return r;
}

/* Parses `text`, which must fail with exactly `want`, leaving the set untouched. */
static void expect_parse_error(const char *text, size_t len, const char *want)
{
  vg_matchers_t *m = parse_ok("keep=\"1\"");
  char err[256] = "";
  if (labelmatch_parse(m, text, len, err, sizeof err) != -1) {
    fail_msg("parse(%s) succeeded, want error %s", text, want);
  }
  if (strcmp(err, want) != 0) {
    fail_msg("parse(%s):\n  got  %s\n  want %s", text, err, want);
  }
  assert_int_equal(labelmatch_count(m), 1);
  labelmatch_free(m);
}

static void test_equal_and_not_equal(void **state)
{
  (void)state;
  vg_label_t ls[] = { LBL("job", "node"), LBL("alertname", "HighCPU"), LBL("namespace", "prod") };
  assert_true(matches("alertname=\"HighCPU\"", ls, COUNT(ls)));
  assert_false(matches("alertname=\"HighCpu\"", ls, COUNT(ls)));
  assert_false(matches("alertname=\"HighCPU2\"", ls, COUNT(ls)));
  assert_false(matches("alertname=\"High\"", ls, COUNT(ls)));
  assert_true(matches("namespace!=\"kube-system\"", ls, COUNT(ls)));
  assert_false(matches("namespace!=\"prod\"", ls, COUNT(ls)));
  /* a conjunction: every matcher must hold */
  assert_true(
      matches("{alertname=\"HighCPU\", namespace!=\"kube-system\", job=\"node\"}", ls, COUNT(ls)));
  assert_false(matches("{alertname=\"HighCPU\", namespace!=\"prod\"}", ls, COUNT(ls)));
}

static void test_regex_and_not_regex(void **state)
{
  (void)state;
  vg_label_t ls[] = { LBL("severity", "critical"), LBL("pod", "canary-7f9c"), LBL("msg", "a\nb"),
                      LBL("cr", "a\rb") };
  assert_true(matches("severity=~\"critical|high\"", ls, COUNT(ls)));
  assert_true(matches("severity=~\"crit.*\"", ls, COUNT(ls)));
  assert_false(matches("severity=~\"warning|info\"", ls, COUNT(ls)));
  assert_true(matches("severity!~\"warning|info\"", ls, COUNT(ls)));
  assert_false(matches("pod!~\"canary-.*\"", ls, COUNT(ls)));
  assert_true(matches("pod!~\"stable-.*\"", ls, COUNT(ls)));
  assert_true(matches("severity=~\"(?i)CRIT.*\"", ls, COUNT(ls)));
  assert_true(matches("pod=~\"canary-[0-9a-f]{4}\"", ls, COUNT(ls)));
  assert_true(matches("pod=~\"(?P<kind>canary)-\\\\w+\"", ls, COUNT(ls)));
  /* `.` does not match a newline unless (?s), as in Go */
  assert_false(matches("msg=~\"a.b\"", ls, COUNT(ls)));
  assert_true(matches("msg=~\"(?s)a.b\"", ls, COUNT(ls)));
  assert_true(matches("msg=~\"a\\nb\"", ls, COUNT(ls)));
  /* only \n is a newline: `.` matches \r */
  assert_true(matches("cr=~\"a.b\"", ls, COUNT(ls)));
}

static void test_regex_is_anchored(void **state)
{
  (void)state;
  vg_label_t ls[] = { LBL("severity", "critical"), LBL("nl", "a\n") };
  assert_false(matches("severity=~\"crit\"", ls, COUNT(ls)));
  assert_false(matches("severity=~\"ical\"", ls, COUNT(ls)));
  assert_false(matches("severity=~\"rit\"", ls, COUNT(ls)));
  assert_false(matches("severity=~\"crit|high\"", ls, COUNT(ls)));
  assert_false(matches("severity=~\"high|crit\"", ls, COUNT(ls)));
  assert_true(matches("severity!~\"crit\"", ls, COUNT(ls)));
  assert_true(matches("severity=~\"^critical$\"", ls, COUNT(ls)));
  /* $ is the end of the text, not "before a final newline" as in PCRE by default */
  assert_false(matches("nl=~\"a\"", ls, COUNT(ls)));
  assert_false(matches("nl=~\"a$\"", ls, COUNT(ls)));
  assert_true(matches("nl=~\"a\\n\"", ls, COUNT(ls)));
  assert_false(matches("nl=~\"a$\\n\"", ls, COUNT(ls)));
  assert_true(matches("nl=~\"(?m)a$\\n\"", ls, COUNT(ls)));
}

static void test_missing_label_is_empty(void **state)
{
  (void)state;
  vg_label_t present[] = { LBL("foo", "x"), LBL("empty", "") };
  vg_label_t none[] = { LBL("other", "x") };
  assert_true(matches("missing=\"\"", present, COUNT(present)));
  assert_true(matches("empty=\"\"", present, COUNT(present)));
  assert_false(matches("foo=\"\"", present, COUNT(present)));
  assert_true(matches("foo!=\"\"", present, COUNT(present)));
  assert_false(matches("missing!=\"\"", present, COUNT(present)));
  assert_false(matches("empty!=\"\"", present, COUNT(present)));
  assert_true(matches("foo=~\".*\"", none, COUNT(none)));
  assert_false(matches("foo=~\".+\"", none, COUNT(none)));
  assert_true(matches("foo!~\".+\"", none, COUNT(none)));
  assert_false(matches("foo=\"x\"", none, COUNT(none)));
  /* no labels at all, and the empty set */
  assert_true(matches("foo=\"\"", NULL, 0));
  assert_false(matches("foo!=\"\"", NULL, 0));
  vg_matchers_t *m = labelmatch_new();
  assert_non_null(m);
  assert_int_equal(labelmatch_count(m), 0);
  assert_true(labelmatch_eval(m, none, COUNT(none)));
  assert_true(labelmatch_eval(m, NULL, 0));
  labelmatch_free(m);
}

static void test_first_label_of_a_name_counts(void **state)
{
  (void)state;
  vg_label_t ls[] = { LBL("a", "1"), LBL("a", "2"), LBL("ab", "3"), LBL("b", "4") };
  assert_true(matches("a=\"1\"", ls, COUNT(ls)));
  assert_false(matches("a=\"2\"", ls, COUNT(ls)));
  assert_true(matches("ab=\"3\"", ls, COUNT(ls)));
  assert_true(matches("b=\"4\"", ls, COUNT(ls)));
}

static void expect_one(
    const char *text, const char *name, vg_match_op_t op, const char *value, size_t value_len)
{
  vg_matchers_t *m = parse_ok(text);
  vg_matcher_info_t mi;
  assert_int_equal(labelmatch_count(m), 1);
  assert_true(labelmatch_get(m, 0, &mi));
  assert_int_equal(mi.name_len, strlen(name));
  assert_memory_equal(mi.name, name, mi.name_len);
  assert_int_equal(mi.op, op);
  assert_int_equal(mi.value_len, value_len);
  if (value_len > 0) {
    assert_memory_equal(mi.value, value, value_len);
  }
  assert_int_equal(mi.value[value_len], '\0');
  assert_false(labelmatch_get(m, 1, &mi));
  labelmatch_free(m);
}

static void test_quoting_and_whitespace(void **state)
{
  (void)state;
  expect_one("a=\"b\"", "a", VG_MATCH_EQ, "b", 1);
  expect_one("  a  !=  \"b c\"  ", "a", VG_MATCH_NE, "b c", 3);
  expect_one("a=~\"x\"", "a", VG_MATCH_RE, "x", 1);
  expect_one("\ta!~\"x\"\n", "a", VG_MATCH_NRE, "x", 1);
  /* escapes: \" \\ \n; any other backslash stays, as in Alertmanager */
  expect_one("a=\"q\\\"b\\\\s\\nn\"", "a", VG_MATCH_EQ, "q\"b\\s\nn", 7);
  expect_one("a=~\"\\d+\\.\\d+\"", "a", VG_MATCH_RE, "\\d+\\.\\d+", 8);
  expect_one("a=~\"\\\\d+\"", "a", VG_MATCH_RE, "\\d+", 3);
  /* unquoted values run to the end (or , or }) and are trimmed; empty is allowed */
  expect_one("a = bar baz  ", "a", VG_MATCH_EQ, "bar baz", 7);
  expect_one("a=", "a", VG_MATCH_EQ, "", 0);
  expect_one("a=\"\"", "a", VG_MATCH_EQ, "", 0);
  expect_one("a=~crit.*", "a", VG_MATCH_RE, "crit.*", 6);
  /* names: Prometheus identifiers, or any UTF-8 in quotes */
  expect_one("_a_1=x", "_a_1", VG_MATCH_EQ, "x", 1);
  expect_one("\"name with.dots\"=\"x\"", "name with.dots", VG_MATCH_EQ, "x", 1);
  expect_one("\"k\\\"8s\\u00e9\xc3\xa9\"!=x", "k\"8s\\u00e9\xc3\xa9", VG_MATCH_NE, "x", 1);
  /* a value may hold the operator and list characters when quoted */
  expect_one("a=\"=~!,{}\"", "a", VG_MATCH_EQ, "=~!,{}", 6);

  vg_label_t ls[] = { LBL("name with.dots", "x") };
  assert_true(matches("\"name with.dots\"=\"x\"", ls, COUNT(ls)));
  assert_false(matches("name=\"x\"", ls, COUNT(ls)));
}

static void test_brace_lists(void **state)
{
  (void)state;
  vg_matchers_t *m = parse_ok("{a=\"1\", b=~\"x.*\"}");
  assert_int_equal(labelmatch_count(m), 2);
  vg_matcher_info_t mi;
  assert_true(labelmatch_get(m, 1, &mi));
  assert_string_equal(mi.name, "b");
  assert_int_equal(mi.op, VG_MATCH_RE);
  assert_string_equal(mi.value, "x.*");
  vg_label_t yes[] = { LBL("b", "xyz"), LBL("a", "1") };
  vg_label_t no[] = { LBL("b", "yz"), LBL("a", "1") };
  assert_true(labelmatch_eval(m, yes, COUNT(yes)));
  assert_false(labelmatch_eval(m, no, COUNT(no)));
  /* parse appends to what is there */
  assert_int_equal(labelmatch_parse(m, "c!=\"\"", 5, NULL, 0), 0);
  assert_int_equal(labelmatch_count(m), 3);
  assert_false(labelmatch_eval(m, yes, COUNT(yes)));
  labelmatch_free(m);

  const struct {
    const char *text;
    size_t count;
  } cases[] = {
    { "{}", 0 },         { " { } ", 0 },
    { "{a=\"1\",}", 1 }, { "{ a = 1 , b != 2 , }", 2 },
    { "{a=1,b=2}", 2 },  { "a=\"1\", b=\"2\"", 2 }, /* braces are optional */
    { "a=\"1\",", 1 },   { "{\"x.y\"=~\"a|b\",c!~d}", 2 },
  };
  for (size_t i = 0; i < COUNT(cases); i++) {
    m = parse_ok(cases[i].text);
    if (labelmatch_count(m) != cases[i].count) {
      fail_msg("%s: %zu matchers, want %zu", cases[i].text, labelmatch_count(m), cases[i].count);
    }
    labelmatch_free(m);
  }
  m = parse_ok("{ a = 1 , b != 2 , }");
  assert_true(labelmatch_get(m, 1, &mi));
  assert_string_equal(mi.name, "b");
  assert_int_equal(mi.op, VG_MATCH_NE);
  assert_string_equal(mi.value, "2");
  labelmatch_free(m);
}

static void test_parse_errors(void **state)
{
  (void)state;
  const struct {
    const char *text, *err;
  } cases[] = {
    { "", "empty matcher" },
    { " \t ", "empty matcher" },
    { "foo==\"x\"", "unknown operator \"==\"" },
    { "foo!\"x\"", "unknown operator \"!\"" },
    { "foo=!x", "unknown operator \"=!\"" },
    { "foo~=\"x\"", "unknown operator \"~=\"" },
    { "foo>=1", "unknown operator \">=\"" },
    { "foo", "missing operator after label name \"foo\"" },
    { "foo.bar=\"x\"",
      "expected operator after label name \"foo\", got \".\" (quote names that are not "
      "[a-zA-Z_][a-zA-Z0-9_]*)" },
    { "1foo=\"x\"", "expected label name, got \"1\"" },
    { "=\"x\"", "expected label name, got \"=\"" },
    { "foo=\"abc", "unterminated quoted value" },
    { "foo=\"abc\\\"", "unterminated quoted value" },
    { "\"foo", "unterminated quoted label name" },
    { "\"\"=\"x\"", "empty label name" },
    { "\"\xff\"=\"x\"", "label name is not valid UTF-8" },
    { "foo=ab\"c\"", "unexpected \"\\\"\" in unquoted value (quote the whole value)" },
    { "foo=a{2}", "unexpected \"{\" in unquoted value (quote the whole value)" },
    { "foo=\"x\" bar=\"y\"", "unexpected \"b\" after value, expected \",\"" },
    { "foo=\"x\"}", "unexpected \"}\" after value, expected \",\"" },
    { "{foo=\"x\"", "missing closing \"}\"" },
    { "{foo=\"x\",", "missing closing \"}\"" },
    { "{", "missing closing \"}\"" },
    { "{foo=\"x\" bar}", "unexpected \"b\" after value, expected \",\" or \"}\"" },
    { "{foo=\"x\"} x", "unexpected \"x\" after \"}\"" },
    { "{foo=\"x\"}{", "unexpected \"{\" after \"}\"" },
    { "{,}", "expected label name, got \",\"" },
    { "a=1,,", "expected label name, got \",\"" },
    { "foo=~\"x(\"", "bad regex \"x(\": missing closing parenthesis at offset 2" },
    { "foo!~\"[a\"", "bad regex \"[a\": missing terminating ] for character class at offset 2" },
    { "foo=~\"\\\\\"", "bad regex \"\\\\\": \\ at end of pattern at offset 1" },
    { "foo=~\"*\"", "bad regex \"*\": quantifier does not follow a repeatable item at offset 0" },
    { "foo=~\"\xff\"",
      "bad regex \"\\xff\": UTF-8 error: illegal byte (0xfe or 0xff) at offset 0" },
    /* the first error wins, and the good matchers before it are not kept */
    { "{a=\"1\", b=~\"(\", c==d}", "bad regex \"(\": missing closing parenthesis at offset 1" },
  };
  for (size_t i = 0; i < COUNT(cases); i++) {
    expect_parse_error(cases[i].text, strlen(cases[i].text), cases[i].err);
  }
  /* a NUL byte is just an unexpected character */
  expect_parse_error("fo\0o=\"x\"", 8,
                     "expected operator after label name \"fo\", got \"\\x00\" (quote names that "
                     "are not [a-zA-Z_][a-zA-Z0-9_]*)");
  /* long regexes are cut short in the message */
  char re[60], text[80], want[160];
  memset(re, 'a', 59);
  re[59] = '\0';
  int len = snprintf(text, sizeof text, "x=~\"%s(\"", re);
  assert_int_equal(len, 65);
  snprintf(want, sizeof want, "bad regex \"%.48s\"...: missing closing parenthesis at offset 60",
           re);
  expect_parse_error(text, (size_t)len, want);

  /* a short error buffer is truncated, a NULL one ignored */
  vg_matchers_t *m = labelmatch_new();
  assert_non_null(m);
  char small[8];
  assert_int_equal(labelmatch_parse(m, "foo==x", 6, small, sizeof small), -1);
  assert_string_equal(small, "unknown");
  assert_int_equal(labelmatch_parse(m, "foo==x", 6, NULL, 0), -1);
  assert_int_equal(labelmatch_parse(m, NULL, 0, NULL, 0), -1);
  assert_int_equal(labelmatch_count(m), 0);
  labelmatch_free(m);
}

static void test_add_from_parts(void **state)
{
  (void)state;
  vg_matchers_t *m = labelmatch_new();
  assert_non_null(m);
  char err[256] = "";
  assert_int_equal(labelmatch_add(m, "alertname", VG_MATCH_EQ, "HighCPU", 7, err, sizeof err), 0);
  assert_int_equal(labelmatch_add(m, "severity", VG_MATCH_RE, "critical|high", 13, err, sizeof err),
                   0);
  assert_int_equal(labelmatch_add(m, "namespace", VG_MATCH_NE, "kube-system", 11, err, sizeof err),
                   0);
  assert_int_equal(labelmatch_add(m, "pod", VG_MATCH_NRE, "canary-.*", 9, err, sizeof err), 0);
  assert_int_equal(labelmatch_add(m, "team", VG_MATCH_EQ, NULL, 0, err, sizeof err), 0);
  assert_int_equal(labelmatch_count(m), 5);

  vg_label_t ls[] = { LBL("pod", "web-1"), LBL("severity", "high"), LBL("alertname", "HighCPU"),
                      LBL("namespace", "prod") };
  assert_true(labelmatch_eval(m, ls, COUNT(ls)));
  ls[0].value = "canary-1";
  ls[0].value_len = 8;
  assert_false(labelmatch_eval(m, ls, COUNT(ls)));

  /* errors leave the set unchanged */
  assert_int_equal(labelmatch_add(m, "", VG_MATCH_EQ, "x", 1, err, sizeof err), -1);
  assert_string_equal(err, "empty label name");
  assert_int_equal(labelmatch_add(m, NULL, VG_MATCH_EQ, "x", 1, err, sizeof err), -1);
  assert_string_equal(err, "empty label name");
  assert_int_equal(labelmatch_add(m, "a\xc3", VG_MATCH_EQ, "x", 1, err, sizeof err), -1);
  assert_string_equal(err, "label name is not valid UTF-8");
  assert_int_equal(labelmatch_add(m, "a", (vg_match_op_t)7, "x", 1, err, sizeof err), -1);
  assert_string_equal(err, "unknown operator 7");
  assert_int_equal(labelmatch_add(m, "a", VG_MATCH_EQ, NULL, 3, err, sizeof err), -1);
  assert_string_equal(err, "NULL value with length 3");
  assert_int_equal(labelmatch_add(m, "a", VG_MATCH_RE, "x(", 2, err, sizeof err), -1);
  assert_string_equal(err, "bad regex \"x(\": missing closing parenthesis at offset 2");
  assert_int_equal(labelmatch_count(m), 5);

  /* any UTF-8 is a valid name */
  assert_int_equal(
      labelmatch_add(m, "k8s.io/app \xe2\x9c\x93", VG_MATCH_EQ, "", 0, err, sizeof err), 0);
  assert_int_equal(labelmatch_count(m), 6);
  labelmatch_free(m);
}

static void test_invalid_utf8_and_nul_in_values(void **state)
{
  (void)state;
  vg_label_t ls[] = {
    LBL_BYTES("bad",
              "a\xff"
              "b"),
    LBL_BYTES("nul", "a\0b"),
    LBL_BYTES("trunc", "\xe2\x82"),    /* a cut-off euro sign: two stray bytes */
    LBL_BYTES("surr", "\xed\xa0\x80"), /* an encoded surrogate: three stray bytes */
    LBL_BYTES("over", "\xc0\xaf"),     /* an overlong '/' */
    LBL_BYTES("ok", "\xe2\x82\xac"),   /* a euro sign */
  };
  /* Each stray byte reads as U+FFFD, as in Go's regexp, so `.` matches it */
  assert_true(matches("bad=~\"a.b\"", ls, COUNT(ls)));
  assert_true(matches("bad=~\".*\"", ls, COUNT(ls)));
  assert_true(matches("bad=~\".+\"", ls, COUNT(ls)));
  assert_true(matches("bad=~\"a\\\\x{FFFD}b\"", ls, COUNT(ls)));
  assert_false(matches("bad!~\"a.b\"", ls, COUNT(ls)));
  assert_false(matches("bad=~\"ab\"", ls, COUNT(ls)));
  assert_true(matches("trunc=~\"..\"", ls, COUNT(ls)));
  assert_false(matches("trunc=~\".\"", ls, COUNT(ls)));
  assert_true(matches("surr=~\"...\"", ls, COUNT(ls)));
  assert_true(matches("over=~\"..\"", ls, COUNT(ls)));
  assert_true(matches("ok=~\".\"", ls, COUNT(ls)));
  assert_true(matches("ok=~\"\xe2\x82\xac\"", ls, COUNT(ls)));
  /* NUL is an ordinary character */
  assert_true(matches("nul=~\"a.b\"", ls, COUNT(ls)));
  assert_true(matches("nul=~\"a\\\\x00b\"", ls, COUNT(ls)));
  assert_false(matches("nul=\"a\"", ls, COUNT(ls)));
  assert_true(matches("nul!=\"a\"", ls, COUNT(ls)));

  /* equality compares bytes, NUL and stray bytes included */
  vg_matchers_t *m = parse_ok(
      "bad=\"a\xff"
      "b\"");
  assert_true(labelmatch_eval(m, ls, COUNT(ls)));
  labelmatch_free(m);
  m = labelmatch_new();
  assert_non_null(m);
  const char text[] = "nul=\"a\0b\"";
  assert_int_equal(labelmatch_parse(m, text, sizeof text - 1, NULL, 0), 0);
  assert_true(labelmatch_eval(m, ls, COUNT(ls)));
  assert_int_equal(labelmatch_add(m, "nul", VG_MATCH_NE, "a\0c", 3, NULL, 0), 0);
  assert_true(labelmatch_eval(m, ls, COUNT(ls)));
  labelmatch_free(m);

  /* a value too long to rewrite is matched as is: stray bytes then match nothing, without error */
  static char big[6000];
  memset(big, 0xff, sizeof big);
  vg_label_t bl[] = { { "v", 1, big, sizeof big } };
  m = parse_ok("v=~\".*\"");
  assert_false(labelmatch_eval(m, bl, COUNT(bl)));
  bl[0].value_len = 100;
  assert_true(labelmatch_eval(m, bl, COUNT(bl)));
  vg_labelmatch_stats_t st;
  labelmatch_stats(m, &st);
  assert_int_equal(st.limit_hits, 0);
  assert_int_equal(st.errors, 0);
  labelmatch_free(m);

  /* a NULL value with length 0 reads as "" */
  vg_label_t nv[] = { { "v", 1, NULL, 0 } };
  assert_true(matches("v=\"\"", nv, COUNT(nv)));
  assert_true(matches("v=~\"\"", nv, COUNT(nv)));
  assert_false(matches("v=~\".+\"", nv, COUNT(nv)));
}

static void expect_regex_rejected(const char *re, const char *why)
{
  vg_matchers_t *m = labelmatch_new();
  assert_non_null(m);
  char err[256] = "";
  if (labelmatch_add(m, "a", VG_MATCH_RE, re, strlen(re), err, sizeof err) != -1) {
    fail_msg("regex %s accepted, want rejection: %s", re, why);
  }
  if (strstr(err, why) == NULL || strncmp(err, "bad regex \"", 11) != 0) {
    fail_msg("regex %s: got %s, want ...%s...", re, err, why);
  }
  assert_int_equal(labelmatch_count(m), 0);
  labelmatch_free(m);
}

static void test_rejects_what_re2_lacks(void **state)
{
  (void)state;
  const struct {
    const char *re, *why;
  } bad[] = {
    { "(a)\\1", "back-references are not supported at offset 3" },
    { "(a)\\g1", "back-references are not supported" },
    { "(?<n>a)\\k<n>", "back-references are not supported" },
    { "(?P<n>a)(?P=n)", "back-references are not supported" },
    { "(?=a)a", "lookahead assertions are not supported at offset 0" },
    { "a(?!b)", "lookahead assertions are not supported at offset 1" },
    { "(?<=a)b", "lookbehind assertions are not supported" },
    { "(?<!a)b", "lookbehind assertions are not supported" },
    { "(?>a+)b", "atomic groups are not supported" },
    { "a*+b", "possessive quantifiers are not supported at offset 2" },
    { "a++", "possessive quantifiers are not supported" },
    { "a{2,3}+", "possessive quantifiers are not supported at offset 6" },
    { "(a|(?R))", "recursion and subroutine calls are not supported" },
    { "(a)(?1)", "recursion and subroutine calls are not supported" },
    { "(?(1)a|b)", "conditional groups are not supported" },
    { "(*ACCEPT)a", "backtracking control verbs are not supported" },
    { "(?|(a)|(b))", "branch reset groups are not supported" },
    { "(?x) a b", "only the inline flags i, m, s and U are supported" },
    { "(?C1)a", "callouts are not supported" },
    { "a\\Kb", "\\K is not supported" },
    { "a\\Z", "\\Z is not supported" },
    { "\\C", "\\C is not supported" },
  };
  for (size_t i = 0; i < COUNT(bad); i++) {
    expect_regex_rejected(bad[i].re, bad[i].why);
  }

  /* look-alikes that are fine: escaped, inside a class, quoted, lazy, RE2 groups and flags */
  const char *good[] = {
    "\\(\\?=a\\)",    "[(?=]+",          "[\\1]",   "\\Q(?=a)\\1\\E",
    "a+?b*?c??",      "(?i)x",           "(?i:x)y", "(?is-mU)x",
    "(?P<n>a)",       "(?<n>a)",         "[]a]+",   "[^]a]",
    "[[:alpha:]]+",   "a{2}b{1,}c{1,3}", "x{",      "\\d\\w\\s\\b",
    "\\pL\\p{Greek}", "\\x{263a}",       "",        "a|",
  };
  for (size_t i = 0; i < COUNT(good); i++) {
    vg_matchers_t *m = labelmatch_new();
    assert_non_null(m);
    char err[256] = "";
    if (labelmatch_add(m, "a", VG_MATCH_RE, good[i], strlen(good[i]), err, sizeof err) != 0) {
      fail_msg("regex %s rejected: %s", good[i], err);
    }
    labelmatch_free(m);
  }
  vg_label_t ls[] = { LBL("a", "(?=a)"), LBL("b", "x{") };
  assert_true(matches("a=~\"\\\\(\\\\?=a\\\\)\"", ls, COUNT(ls)));
  assert_true(matches("a=~\"[(?=a)]+\"", ls, COUNT(ls)));
  assert_true(matches("a=~\"\\\\Q(?=a)\\\\E\"", ls, COUNT(ls)));
  assert_true(matches("b=~\"x{\"", ls, COUNT(ls)));
}

static void test_match_limit_stops_catastrophic_regex(void **state)
{
  (void)state;
  static char v[4001];
  memset(v, 'a', sizeof v - 1);
  v[sizeof v - 1] = 'b';
  vg_label_t ls[] = { LBL("job", "x"), { "v", 1, v, sizeof v } };
  assert_int_equal(VG_LABELMATCH_MATCH_LIMIT, 100000);

  vg_matchers_t *m = parse_ok("v=~\"(a+)+$\"");
  vg_labelmatch_stats_t st;
  labelmatch_stats(m, &st);
  assert_int_equal(st.limit_hits, 0);
  /* exponential backtracking, cut off by the match limit: the matcher fails */
  assert_false(labelmatch_eval(m, ls, COUNT(ls)));
  labelmatch_stats(m, &st);
  assert_int_equal(st.limit_hits, 1);
  assert_int_equal(st.errors, 0);
  /* 20 a's need about 2^20 steps: within PCRE2's default limit (10 million), not within ours */
  vg_label_t twenty[] = { LBL("v", "aaaaaaaaaaaaaaaaaaaab") };
  assert_false(labelmatch_eval(m, twenty, COUNT(twenty)));
  labelmatch_stats(m, &st);
  assert_int_equal(st.limit_hits, 2);
  /* a short value still matches normally */
  vg_label_t shortv[] = { LBL("v", "aaaa") };
  assert_true(labelmatch_eval(m, shortv, COUNT(shortv)));
  labelmatch_free(m);

  /* a limit hit fails the matcher for !~ too: hostile input never widens what a policy sees */
  m = parse_ok("v!~\"(a+)+$\"");
  assert_false(labelmatch_eval(m, ls, COUNT(ls)));
  assert_false(labelmatch_eval(m, ls, COUNT(ls)));
  labelmatch_stats(m, &st);
  assert_int_equal(st.limit_hits, 2);
  labelmatch_free(m);

  /* literal matchers run first, so a failing one spares the regex */
  m = parse_ok("{v=~\"(a+)+$\", job=\"y\"}");
  assert_false(labelmatch_eval(m, ls, COUNT(ls)));
  labelmatch_stats(m, &st);
  assert_int_equal(st.limit_hits, 0);
  labelmatch_free(m);
}

static void test_format(void **state)
{
  (void)state;
  char buf[256];
  vg_matchers_t *m = parse_ok("{ alertname = HighCPU , severity=~\"critical|high\",}");
  size_t n = labelmatch_format(m, buf, sizeof buf);
  assert_string_equal(buf, "{alertname=\"HighCPU\", severity=~\"critical|high\"}");
  assert_int_equal(n, strlen(buf));
  /* like snprintf: the full length, with a truncated, terminated buffer */
  assert_int_equal(labelmatch_format(m, NULL, 0), n);
  char small[6];
  memset(small, 'X', sizeof small);
  assert_int_equal(labelmatch_format(m, small, sizeof small), n);
  assert_string_equal(small, "{aler");
  small[0] = 'X';
  assert_int_equal(labelmatch_format(m, small, 1), n);
  assert_int_equal(small[0], '\0');
  labelmatch_free(m);

  m = parse_ok("{\"with.dots\"!=\"a\\\"b\\\\c\\nd\", _x!=\"\"}");
  labelmatch_format(m, buf, sizeof buf);
  assert_string_equal(buf, "{\"with.dots\"!=\"a\\\"b\\\\c\\nd\", _x!=\"\"}");
  labelmatch_free(m);

  m = labelmatch_new();
  assert_non_null(m);
  assert_int_equal(labelmatch_format(m, buf, sizeof buf), 2);
  assert_string_equal(buf, "{}");
  labelmatch_free(m);

  assert_string_equal(labelmatch_op_name(VG_MATCH_EQ), "=");
  assert_string_equal(labelmatch_op_name(VG_MATCH_NE), "!=");
  assert_string_equal(labelmatch_op_name(VG_MATCH_RE), "=~");
  assert_string_equal(labelmatch_op_name(VG_MATCH_NRE), "!~");
  assert_string_equal(labelmatch_op_name((vg_match_op_t)9), "?");
}

/* parse(format(m)) equals m, and formatting that again gives the same text. */
static void expect_round_trip(vg_matchers_t *m)
{
  char buf[512], again[512];
  size_t n = labelmatch_format(m, buf, sizeof buf);
  assert_true(n < sizeof buf);
  vg_matchers_t *m2 = labelmatch_new();
  assert_non_null(m2);
  char err[256] = "";
  if (labelmatch_parse(m2, buf, n, err, sizeof err) != 0) {
    fail_msg("reparse of %s failed: %s", buf, err);
  }
  assert_true(labelmatch_equal(m, m2));
  assert_int_equal(labelmatch_format(m2, again, sizeof again), n);
  assert_memory_equal(buf, again, n);
  labelmatch_free(m2);
}

static void test_format_round_trip(void **state)
{
  (void)state;
  const char *texts[] = {
    "{}",
    "alertname=\"HighCPU\"",
    ("{alertname=\"HighCPU\", severity=~\"critical|high\", namespace!=\"kube-system\", "
     "pod!~\"canary-.*\"}"),
    ("{a=\"q\\\"b\\\\s\\nn\", b=~\"\\d+\\.\\d\", \"x y\"=\"\", "
     "\"\xc3\xa9t\xc3\xa9\"=\"\xe2\x82\xac\"}"),
    "{a=\"}{,=\", b=\"  padded  \", c=~\"(?i)[\\\\]\\\\\\\\\\\"]\"}",
    "{a=\"tab\there\", b=\"\xff\xfe\", c=\"\\\\n literal\"}",
  };
  for (size_t i = 0; i < COUNT(texts); i++) {
    vg_matchers_t *m = parse_ok(texts[i]);
    expect_round_trip(m);
    labelmatch_free(m);
  }
  /* bytes the parser cannot produce unquoted: NUL in values and names */
  vg_matchers_t *m = labelmatch_new();
  assert_non_null(m);
  assert_int_equal(labelmatch_add(m, "n", VG_MATCH_EQ, "a\0\"\n\\", 5, NULL, 0), 0);
  assert_int_equal(labelmatch_parse(m, "\"a\0b\"!=x", 8, NULL, 0), 0);
  expect_round_trip(m);
  labelmatch_free(m);
}

static void test_equal(void **state)
{
  (void)state;
  vg_matchers_t *a = parse_ok("{a=\"1\", b=~\"x\"}");
  vg_matchers_t *same = parse_ok("a=1, b=~x");
  vg_matchers_t *op = parse_ok("{a=\"1\", b!~\"x\"}");
  vg_matchers_t *val = parse_ok("{a=\"1\", b=~\"y\"}");
  vg_matchers_t *name = parse_ok("{a=\"1\", c=~\"x\"}");
  vg_matchers_t *order = parse_ok("{b=~\"x\", a=\"1\"}");
  vg_matchers_t *shorter = parse_ok("{a=\"1\"}");
  assert_true(labelmatch_equal(a, same));
  assert_true(labelmatch_equal(a, a));
  assert_false(labelmatch_equal(a, op));
  assert_false(labelmatch_equal(a, val));
  assert_false(labelmatch_equal(a, name));
  assert_false(labelmatch_equal(a, order));
  assert_false(labelmatch_equal(a, shorter));
  assert_false(labelmatch_equal(shorter, a));
  labelmatch_free(a);
  labelmatch_free(same);
  labelmatch_free(op);
  labelmatch_free(val);
  labelmatch_free(name);
  labelmatch_free(order);
  labelmatch_free(shorter);
  labelmatch_free(NULL);
}

static void test_many_matchers(void **state)
{
  (void)state;
  /* grows past the initial capacity, mixing literal and regex matchers */
  vg_matchers_t *m = labelmatch_new();
  assert_non_null(m);
  vg_label_t ls[40];
  char names[40][8], values[40][8];
  for (int i = 0; i < 40; i++) {
    snprintf(names[i], sizeof names[i], "l%d", i);
    snprintf(values[i], sizeof values[i], "v%d", i);
    ls[i] = (vg_label_t){ names[i], strlen(names[i]), values[i], strlen(values[i]) };
    char text[64];
    int len = snprintf(text, sizeof text, "%s%s\"%s\"", names[i], i % 3 ? "=" : "=~",
                       i % 3 ? values[i] : "v[0-9]+");
    assert_int_equal(labelmatch_parse(m, text, (size_t)len, NULL, 0), 0);
  }
  assert_int_equal(labelmatch_count(m), 40);
  assert_true(labelmatch_eval(m, ls, 40));
  ls[39].value = "other";
  ls[39].value_len = 5;
  assert_false(labelmatch_eval(m, ls, 40));
  vg_matcher_info_t mi;
  assert_true(labelmatch_get(m, 39, &mi));
  assert_string_equal(mi.name, "l39");
  labelmatch_free(m);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_equal_and_not_equal),
    cmocka_unit_test(test_regex_and_not_regex),
    cmocka_unit_test(test_regex_is_anchored),
    cmocka_unit_test(test_missing_label_is_empty),
    cmocka_unit_test(test_first_label_of_a_name_counts),
    cmocka_unit_test(test_quoting_and_whitespace),
    cmocka_unit_test(test_brace_lists),
    cmocka_unit_test(test_parse_errors),
    cmocka_unit_test(test_add_from_parts),
    cmocka_unit_test(test_invalid_utf8_and_nul_in_values),
    cmocka_unit_test(test_rejects_what_re2_lacks),
    cmocka_unit_test(test_match_limit_stops_catastrophic_regex),
    cmocka_unit_test(test_format),
    cmocka_unit_test(test_format_round_trip),
    cmocka_unit_test(test_equal),
    cmocka_unit_test(test_many_matchers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
