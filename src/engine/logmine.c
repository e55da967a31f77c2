/* The Drain-style template miner: the maskers (one left-to-right scan of the line), the
 * tokenizer, the prefix tree (one open-addressing table of edges, nodes reference-counted so an
 * evicted template frees its path), templates in an LRU list, and the snapshot format. */
#include "engine/logmine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errbuf.h"
#include "engine/lpattern.h"

#define WILD "<*>"
#define WILD_LEN 3
#define WILD_H 0x9e3779b97f4a7c15ull /* tree key and token hash of `<*>` */
#define NO_NODE UINT32_MAX
#define QUOTE_MAX 256
#define USER_MASK_MAX 32
#define USER_MASK_STEPS 100000u
#define SNAP_MAGIC "VGLM1\n"
/* Distinct words a template position must show before it becomes `<*>` (see merge_siblings). */
#define WORD_VARIANTS 4

typedef struct {
  uint64_t h;   /* hash of the text; WILD_H when wild */
  uint32_t off; /* text in the cluster's buffer */
  uint32_t len;
  uint32_t soff; /* the blank run before the token (as first seen) */
  uint32_t slen;
  bool wild;
  bool word; /* no digit and no mask: a difference here is a different message, for a while */
} lm_tok_t;

typedef struct lm_idref lm_idref_t;

typedef struct lm_cluster lm_cluster_t;
struct lm_cluster {
  uint64_t id, count, first_seq, last_seq;
  uint32_t ntok;
  uint32_t leaf;
  lm_tok_t *toks;
  char *text; /* token and blank texts */
  size_t text_len;
  char *rendered; /* the template string, built on demand; NULL when stale */
  size_t rendered_len;
  lm_cluster_t *lru_prev, *lru_next; /* head = most recently seen */
  lm_cluster_t *leaf_prev, *leaf_next;
  lm_idref_t *ids; /* its own id first, then ids of templates merged into it */
};

/* An entry of the id table: a cluster's id or an alias of it. */
struct lm_idref {
  uint64_t id;
  lm_cluster_t *c;
  lm_idref_t *next; /* hash chain */
  lm_idref_t *sib;  /* the cluster's next id */
};

typedef struct {
  uint32_t parent;
  uint32_t nchildren;
  uint32_t refs; /* clusters below; the node goes when this drops to 0 */
  uint64_t key;
  lm_cluster_t *clusters; /* at a leaf */
} lm_node_t;

typedef struct {
  uint64_t key;
  uint32_t parent; /* NO_NODE marks a free slot */
  uint32_t child;
} lm_edge_t;

/* One token of the line being mined: its masked text and where it came from. */
typedef struct {
  uint32_t off, len;   /* in the masked buffer */
  uint32_t soff, slen; /* blank run before it, in the masked buffer */
  uint32_t ostart, oend;
  uint32_t mask0, nmask; /* its masks in lm->masks */
  uint64_t h;
  bool var;  /* has a digit or a mask: routes through the `<*>` child */
  bool word; /* not var and not a dotted or slashed name: see lm_tok_t.word */
} lm_ltok_t;

typedef struct {
  uint32_t ostart, oend; /* in the line */
  uint32_t moff;         /* where its `<*>` starts in the masked buffer */
} lm_mask_t;

typedef struct {
  char *pat;
  size_t len;
} lm_user_mask_t;

struct vg_logmine {
  vg_logmine_opts_t o;
  lm_node_t *nodes;
  size_t nnodes, nodes_cap;
  uint32_t free_node; /* a free list threaded through parent */
  lm_edge_t *edges;
  size_t nedges, edges_cap; /* cap is a power of two */
  lm_idref_t **ids;         /* id -> cluster, chained */
  size_t ids_cap, nids;
  lm_cluster_t *lru_head, *lru_tail;
  uint64_t next_id;
  vg_logmine_stats_t st;
  lm_user_mask_t umask[USER_MASK_MAX];
  size_t numask;
  /* per-line scratch, sized for max_line */
  char *mbuf;     /* masked line */
  uint32_t *omap; /* masked byte -> line offset */
  size_t mcap;
  lm_ltok_t *toks;
  lm_mask_t *masks;
  size_t masks_cap;
  vg_logmine_span_t *params;
  size_t params_cap;
  uint32_t *uspans; /* user mask matches: start, end pairs */
  size_t uspans_cap;
};

/* ---- hashing ---- */

static uint64_t mix64(uint64_t x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
  uint64_t h = 0xcbf29ce484222325ull ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    h = (h ^ mix64(w)) * 0x100000001b3ull;
  }
  uint64_t w = 0;
  memcpy(&w, s + i, n - i);
  h = mix64(h ^ w ^ ((uint64_t)(n - i) << 59));
  return h == WILD_H ? h + 1 : h;
}

/* ---- character classes ---- */

static bool is_digit(unsigned char c)
{
  return c >= '0' && c <= '9';
}
static bool is_alpha(unsigned char c)
{
  return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}
static bool is_alnum(unsigned char c)
{
  return is_digit(c) || is_alpha(c);
}
static bool is_hex(unsigned char c)
{
  return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}
/* Token separators: blanks and every other control byte. */
static bool is_blank(unsigned char c)
{
  return c <= ' ' || c == 0x7f;
}
/* Letters of Kubernetes' generated names (no vowels, no confusable digits). */
static bool is_k8s(unsigned char c)
{
  return c != 0 && strchr("bcdfghjklmnpqrstvwxz2456789", c) != NULL;
}

/* ---- maskers: each returns the length of its match at s[0..n), or 0 ---- */

static size_t run(const unsigned char *s, size_t n, bool (*cls)(unsigned char))
{
  size_t i = 0;
  while (i < n && cls(s[i])) {
    i++;
  }
  return i;
}

/* Digits, exactly k of them. */
static bool digits_k(const unsigned char *s, size_t n, size_t k)
{
  if (n < k) {
    return false;
  }
  for (size_t i = 0; i < k; i++) {
    if (!is_digit(s[i])) {
      return false;
    }
  }
  return true;
}

/* A match must not run into a word: end of input or a byte that is not a letter or digit. */
static bool ends_word(const unsigned char *s, size_t n, size_t i)
{
  return i >= n || !is_alnum(s[i]);
}

static size_t scan_url(const unsigned char *s, size_t n)
{
  size_t i = 0;
  if (n == 0 || !is_alpha(s[0])) {
    return 0;
  }
  while (i < n && i < 16 && (is_alnum(s[i]) || s[i] == '+' || s[i] == '.' || s[i] == '-')) {
    i++;
  }
  if (i + 3 > n || memcmp(s + i, "://", 3) != 0) {
    return 0;
  }
  i += 3;
  size_t body = i;
  while (i < n && !is_blank(s[i]) && s[i] != '"' && s[i] != '\'' && s[i] != '<' && s[i] != '>') {
    i++;
  }
  while (i > body && strchr(").,;]}", s[i - 1]) != NULL) {
    i--;
  }
  return i > body ? i : 0;
}

static size_t scan_path(const unsigned char *s, size_t n)
{
  if (n < 4 || s[0] != '/') {
    return 0;
  }
  size_t i = 0, comps = 0;
  while (i < n && s[i] == '/') {
    size_t j = i + 1;
    while (j < n && (is_alnum(s[j]) || strchr("._-~+%@", s[j]) != NULL)) {
      j++;
    }
    if (j == i + 1) {
      break;
    }
    comps++;
    i = j;
  }
  if (i < n && s[i] == '/') {
    i++; /* a trailing slash belongs to the path */
  }
  return comps >= 2 ? i : 0;
}

static size_t scan_uuid(const unsigned char *s, size_t n)
{
  static const size_t groups[] = { 8, 4, 4, 4, 12 };
  size_t i = 0;
  for (size_t g = 0; g < 5; g++) {
    if (g > 0) {
      if (i >= n || s[i] != '-') {
        return 0;
      }
      i++;
    }
    if (run(s + i, n - i, is_hex) < groups[g]) {
      return 0;
    }
    i += groups[g];
  }
  return ends_word(s, n, i) ? i : 0;
}

/* hh:mm:ss with an optional fraction (.123 or ,123) */
static size_t scan_clock(const unsigned char *s, size_t n)
{
  if (!digits_k(s, n, 2) || n < 8 || s[2] != ':' || !digits_k(s + 3, n - 3, 2) || s[5] != ':' ||
      !digits_k(s + 6, n - 6, 2)) {
    return 0;
  }
  size_t i = 8;
  if (i + 1 < n && (s[i] == '.' || s[i] == ',') && is_digit(s[i + 1])) {
    i += 1 + run(s + i + 1, n - i - 1, is_digit);
  }
  return i;
}

static bool name3(const unsigned char *s, size_t n, const char *names)
{
  if (n < 3) {
    return false;
  }
  for (const char *p = names; *p; p += 3) {
    if (s[0] == (unsigned char)p[0] && s[1] == (unsigned char)p[1] && s[2] == (unsigned char)p[2]) {
      return true;
    }
  }
  return false;
}

/* syslog and ctime dates: [Www ]Mmm d[d] hh:mm:ss[ yyyy] */
static size_t scan_textdate(const unsigned char *s, size_t n)
{
  size_t i = 0;
  if (n < 12 || s[0] < 'A' || s[0] > 'W' || s[3] != ' ') {
    return 0; /* the common case: not a capitalised three-letter word */
  }
  if (name3(s, n, "MonTueWedThuFriSatSun") && n > 4 && s[3] == ' ') {
    i = 4;
  }
  if (!name3(s + i, n - i, "JanFebMarAprMayJunJulAugSepOctNovDec")) {
    return 0;
  }
  i += 3;
  size_t sp = run(s + i, n - i, is_blank);
  if (sp == 0 || sp > 2) {
    return 0;
  }
  i += sp;
  size_t d = run(s + i, n - i, is_digit);
  if (d == 0 || d > 2 || i + d >= n || s[i + d] != ' ') {
    return 0;
  }
  i += d + 1;
  size_t c = scan_clock(s + i, n - i);
  if (c == 0) {
    return 0;
  }
  i += c;
  if (i + 5 <= n && s[i] == ' ' && digits_k(s + i + 1, n - i - 1, 4) && ends_word(s, n, i + 5)) {
    i += 5;
  }
  return ends_word(s, n, i) ? i : 0;
}

static size_t scan_time(const unsigned char *s, size_t n)
{
  size_t i = 0;
  /* yyyy-mm-dd or yyyy/mm/dd, then optionally [T ]clock and a zone */
  if (digits_k(s, n, 4) && n >= 10 && (s[4] == '-' || s[4] == '/') && digits_k(s + 5, n - 5, 2) &&
      s[7] == s[4] && digits_k(s + 8, n - 8, 2)) {
    i = 10;
    if (i < n && (s[i] == 'T' || s[i] == ' ')) {
      size_t c = scan_clock(s + i + 1, n - i - 1);
      if (c > 0) {
        i += 1 + c;
        if (i < n && s[i] == 'Z') {
          i++;
        } else if (i + 6 <= n && (s[i] == '+' || s[i] == '-') &&
                   digits_k(s + i + 1, n - i - 1, 2) && s[i + 3] == ':' &&
                   digits_k(s + i + 4, n - i - 4, 2)) {
          i += 6;
        }
      }
    }
    return ends_word(s, n, i) ? i : 0;
  }
  i = scan_clock(s, n);
  return i > 0 && ends_word(s, n, i) ? i : 0;
}

static size_t scan_port(const unsigned char *s, size_t n, size_t i)
{
  if (i + 1 < n && s[i] == ':' && is_digit(s[i + 1])) {
    size_t d = run(s + i + 1, n - i - 1, is_digit);
    if (d <= 5 && ends_word(s, n, i + 1 + d)) {
      return i + 1 + d;
    }
  }
  return i;
}

static size_t scan_ipv4(const unsigned char *s, size_t n)
{
  size_t i = 0;
  for (int part = 0; part < 4; part++) {
    if (part > 0) {
      if (i >= n || s[i] != '.') {
        return 0;
      }
      i++;
    }
    size_t d = run(s + i, n - i, is_digit);
    if (d == 0 || d > 3) {
      return 0;
    }
    i += d;
  }
  if (!ends_word(s, n, i) || (i < n && s[i] == '.' && i + 1 < n && is_digit(s[i + 1]))) {
    return 0;
  }
  return scan_port(s, n, i);
}

/* IPv6 (and MAC addresses): hex groups of 1-4 separated by ':', with "::" or at least five colons,
 * optionally in brackets with a port. */
static size_t scan_ipv6(const unsigned char *s, size_t n)
{
  size_t i = 0, colons = 0, groups = 0;
  bool dbl = false, bracket = n > 0 && s[0] == '[';
  if (bracket) {
    i++;
  }
  while (i < n) {
    size_t h = run(s + i, n - i, is_hex);
    if (h > 4) {
      return 0;
    }
    if (h > 0) {
      groups++;
      i += h;
    }
    if (i < n && s[i] == ':') {
      if (i + 1 < n && s[i + 1] == ':') {
        if (dbl) {
          return 0;
        }
        dbl = true;
        colons += 2;
        i += 2;
        continue;
      }
      if (h == 0 && !(i > 0 && s[i - 1] == ':')) {
        break;
      }
      colons++;
      i++;
      continue;
    }
    break;
  }
  while (i > 0 && s[i - 1] == ':' && !(i > 1 && s[i - 2] == ':')) {
    i--; /* a trailing single colon is punctuation */
    colons--;
  }
  if (groups == 0 || !(dbl || colons >= 5) || colons > 8 || !ends_word(s, n, i)) {
    return 0;
  }
  if (bracket) {
    if (i >= n || s[i] != ']') {
      return 0;
    }
    return scan_port(s, n, i + 1);
  }
  return i;
}

static size_t scan_hex(const unsigned char *s, size_t n)
{
  if (n >= 3 && s[0] == '0' && (s[1] | 0x20) == 'x' && is_hex(s[2])) {
    size_t i = 2 + run(s + 2, n - 2, is_hex);
    return ends_word(s, n, i) ? i : 0;
  }
  size_t i = run(s, n, is_hex);
  if (i < 6 || !ends_word(s, n, i)) {
    return 0;
  }
  size_t d = 0;
  for (size_t k = 0; k < i; k++) {
    d += is_digit(s[k]);
  }
  return d > 0 && d < i ? i : 0; /* has a digit and a letter; all digits is a number */
}

/* A Kubernetes generated suffix after a '-': <5-10 k8s chars>-<5 k8s chars>, or <5 k8s chars>
 * holding a digit. */
static size_t scan_pod(const unsigned char *s, size_t n)
{
  size_t a = run(s, n, is_k8s);
  if (a >= 5 && a <= 10 && a + 6 <= n && s[a] == '-' && run(s + a + 1, n - a - 1, is_k8s) == 5 &&
      ends_word(s, n, a + 6)) {
    return a + 6;
  }
  if (a == 5 && ends_word(s, n, a)) {
    for (size_t k = 0; k < a; k++) {
      if (is_digit(s[k])) {
        return a;
      }
    }
  }
  return 0;
}

/* Numbers: an optional sign, digits, more .digits groups (versions), an exponent, and whatever
 * letters and digits follow (units: 10ms, 5s, 32KB; ids that start with a digit). */
static size_t scan_num(const unsigned char *s, size_t n)
{
  size_t i = 0;
  if (i < n && (s[i] == '-' || s[i] == '+')) {
    i++;
  }
  if (i >= n || !is_digit(s[i])) {
    return 0;
  }
  for (;;) {
    i += run(s + i, n - i, is_alnum);
    if (i + 1 < n && (s[i] == '.' || s[i] == ',') && is_digit(s[i + 1])) {
      i++;
      continue;
    }
    if (i + 1 < n && (s[i] == '-' || s[i] == '+') && (s[i - 1] | 0x20) == 'e' &&
        is_digit(s[i + 1])) {
      i++;
      continue;
    }
    break;
  }
  return i;
}

static size_t scan_quoted(const unsigned char *s, size_t n)
{
  unsigned char q = s[0];
  size_t lim = n < QUOTE_MAX + 2 ? n : QUOTE_MAX + 2;
  for (size_t i = 1; i < lim; i++) {
    if (s[i] == q) {
      if (i == 1 || (q == '\'' && !ends_word(s, n, i + 1))) {
        return 0;
      }
      return i + 1;
    }
    if (s[i] < ' ' && s[i] != '\t') {
      return 0;
    }
  }
  return 0;
}

/* ---- the per-line pass: mask, then split ---- */

static bool grow(void **p, size_t *cap, size_t want, size_t elem)
{
  if (want <= *cap) {
    return true;
  }
  size_t nc = *cap ? *cap : 16;
  while (nc < want) {
    nc *= 2;
  }
  void *np = realloc(*p, nc * elem);
  if (np == NULL) {
    return false;
  }
  *p = np;
  *cap = nc;
  return true;
}

typedef struct {
  vg_logmine_t *m;
  const unsigned char *s;
  size_t n;
  size_t j; /* bytes written to mbuf */
  size_t nmask;
  size_t last_end; /* mbuf offset just past the last mask written, or SIZE_MAX */
} lm_out_t;

static bool out_mask(lm_out_t *o, size_t ostart, size_t oend)
{
  vg_logmine_t *m = o->m;
  /* <*>.<*>, <*>:<*>, <*>_<*>, <*>-<*>: one parameter (a version, a compound id, ip:port) */
  if (o->last_end != SIZE_MAX && o->j == o->last_end + 1 && o->nmask > 0 &&
      strchr("._:-", m->mbuf[o->j - 1]) != NULL && m->masks[o->nmask - 1].oend + 1 == ostart) {
    o->j--;
    m->masks[o->nmask - 1].oend = (uint32_t)oend;
    m->omap[o->j - 1] = (uint32_t)(oend - 1);
    o->last_end = o->j;
    return true;
  }
  if (!grow((void **)&m->masks, &m->masks_cap, o->nmask + 1, sizeof *m->masks)) {
    return false;
  }
  m->masks[o->nmask++] = (lm_mask_t){ (uint32_t)ostart, (uint32_t)oend, (uint32_t)o->j };
  memcpy(m->mbuf + o->j, WILD, WILD_LEN);
  m->omap[o->j] = (uint32_t)ostart;
  m->omap[o->j + 1] = (uint32_t)ostart;
  m->omap[o->j + 2] = (uint32_t)(oend - 1);
  o->j += WILD_LEN;
  o->last_end = o->j;
  return true;
}

static void out_byte(lm_out_t *o, size_t i)
{
  unsigned char c = o->s[i];
  /* control bytes are blanks anyway; as spaces they never reach a template (NUL, escapes) */
  o->m->mbuf[o->j] = (char)((c < ' ' && c != '\t') || c == 0x7f ? ' ' : c);
  o->m->omap[o->j] = (uint32_t)i;
  o->j++;
}

/* Finds the user masks' matches in the line: sorted, non-overlapping [start, end) pairs. */
static size_t find_user_masks(vg_logmine_t *m, const char *line, size_t n)
{
  size_t k = 0;
  for (size_t u = 0; u < m->numask; u++) {
    lpattern_state_t st;
    lpattern_init(&st, line, n, m->umask[u].pat, m->umask[u].len, USER_MASK_STEPS);
    const char *from = line;
    while (from <= line + n) {
      const char *a, *b;
      if (lpattern_find(&st, from, false, &a, &b) != LPATTERN_MATCH) {
        break;
      }
      if (b > a) {
        size_t sa = (size_t)(a - line), sb = (size_t)(b - line);
        bool overlap = false;
        for (size_t q = 0; q < k && !overlap; q++) {
          overlap = sa < m->uspans[2 * q + 1] && sb > m->uspans[2 * q];
        }
        if (!overlap && grow((void **)&m->uspans, &m->uspans_cap, 2 * k + 2, sizeof *m->uspans)) {
          m->uspans[2 * k] = (uint32_t)sa;
          m->uspans[2 * k + 1] = (uint32_t)sb;
          k++;
        }
        from = b;
      } else {
        from = a + 1;
      }
    }
  }
  /* insertion sort: few matches */
  for (size_t a = 1; a < k; a++) {
    uint32_t s0 = m->uspans[2 * a], s1 = m->uspans[2 * a + 1];
    size_t b = a;
    while (b > 0 && m->uspans[2 * (b - 1)] > s0) {
      m->uspans[2 * b] = m->uspans[2 * (b - 1)];
      m->uspans[2 * b + 1] = m->uspans[2 * (b - 1) + 1];
      b--;
    }
    m->uspans[2 * b] = s0;
    m->uspans[2 * b + 1] = s1;
  }
  return k;
}

/* Masks line[0..n) into m->mbuf. Returns the masked length, or SIZE_MAX when out of memory. */
static size_t mask_line(vg_logmine_t *m, const char *line, size_t n, size_t *nmask)
{
  lm_out_t o = { m, (const unsigned char *)line, n, 0, 0, SIZE_MAX };
  const unsigned char *s = o.s;
  unsigned mk = m->o.masks;
  size_t nus = m->numask ? find_user_masks(m, line, n) : 0, us = 0;
  for (size_t i = 0; i < n;) {
    if (us < nus && i >= m->uspans[2 * us]) {
      if (i == m->uspans[2 * us]) {
        if (!out_mask(&o, i, m->uspans[2 * us + 1])) {
          return SIZE_MAX;
        }
        i = m->uspans[2 * us + 1];
      }
      us++;
      continue;
    }
    unsigned char c = s[i];
    if (i > 0 && is_alnum(s[i - 1]) &&
        !(c == '-' && s[i - 1] != '-' && (mk & VG_LOGMINE_MASK_POD))) {
      out_byte(&o, i++);
      continue;
    }
    size_t k = 0, rest = n - i;
    if (i > 0 && is_alnum(s[i - 1])) {
      /* only a pod suffix may follow a word directly: name-<hash>-<suffix> */
      if (rest > 1 && (k = scan_pod(s + i + 1, rest - 1)) > 0) {
        out_byte(&o, i);
        if (!out_mask(&o, i + 1, i + 1 + k)) {
          return SIZE_MAX;
        }
        i += 1 + k;
      } else {
        out_byte(&o, i++);
      }
      continue;
    }
    if ((c == '"' || c == '\'') && (mk & VG_LOGMINE_MASK_QUOTED) &&
        (k = scan_quoted(s + i, rest))) {
      out_byte(&o, i);
      if (!out_mask(&o, i + 1, i + k - 1)) {
        return SIZE_MAX;
      }
      out_byte(&o, i + k - 1);
      i += k;
      continue;
    }
    if (is_alpha(c)) {
      if ((mk & VG_LOGMINE_MASK_URL) && (k = scan_url(s + i, rest)) > 0) {
        goto masked;
      }
      if ((mk & VG_LOGMINE_MASK_TIME) && (k = scan_textdate(s + i, rest)) > 0) {
        goto masked;
      }
      if (is_hex(c) && ((mk & VG_LOGMINE_MASK_UUID) && (k = scan_uuid(s + i, rest)) > 0)) {
        goto masked;
      }
      if (is_hex(c) && ((mk & VG_LOGMINE_MASK_IP) && (k = scan_ipv6(s + i, rest)) > 0)) {
        goto masked;
      }
      if (is_hex(c) && ((mk & VG_LOGMINE_MASK_HEX) && (k = scan_hex(s + i, rest)) > 0)) {
        goto masked;
      }
      out_byte(&o, i++);
      continue;
    }
    if (is_digit(c)) {
      if ((mk & VG_LOGMINE_MASK_TIME) && (k = scan_time(s + i, rest)) > 0) {
        goto masked;
      }
      if ((mk & VG_LOGMINE_MASK_UUID) && (k = scan_uuid(s + i, rest)) > 0) {
        goto masked;
      }
      if ((mk & VG_LOGMINE_MASK_IP) &&
          ((k = scan_ipv4(s + i, rest)) > 0 || (k = scan_ipv6(s + i, rest)) > 0)) {
        goto masked;
      }
      if ((mk & VG_LOGMINE_MASK_HEX) && (k = scan_hex(s + i, rest)) > 0) {
        goto masked;
      }
      if ((mk & VG_LOGMINE_MASK_NUM) && (k = scan_num(s + i, rest)) > 0) {
        goto masked;
      }
      out_byte(&o, i++);
      continue;
    }
    if (c == '/' && (mk & VG_LOGMINE_MASK_PATH) && (k = scan_path(s + i, rest)) > 0) {
      goto masked;
    }
    if ((c == '-' || c == '+') && (mk & VG_LOGMINE_MASK_NUM) && (k = scan_num(s + i, rest)) > 0) {
      goto masked;
    }
    if ((c == ':' || c == '[') && (mk & VG_LOGMINE_MASK_IP) && (k = scan_ipv6(s + i, rest)) > 0) {
      goto masked;
    }
    out_byte(&o, i++);
    continue;
  masked:
    if (!out_mask(&o, i, i + k)) {
      return SIZE_MAX;
    }
    i += k;
  }
  *nmask = o.nmask;
  return o.j;
}

/* Dotted or slashed names (com.example.Foo, a/b, user@host) are identifiers, not words; so is
 * punctuation without letters. */
static bool is_ident(const unsigned char *s, size_t n)
{
  size_t letters = 0;
  for (size_t i = 0; i < n; i++) {
    letters += is_alpha(s[i]);
  }
  if (letters == 0) {
    return true;
  }
  for (size_t i = 0; i + 1 < n; i++) {
    if ((s[i] == '.' || s[i] == '/' || s[i] == '\\' || s[i] == '@') && is_alnum(s[i + 1])) {
      return true;
    }
  }
  return false;
}

/* Splits the masked line into tokens; returns how many (0 for a blank line). */
static size_t tokenize(vg_logmine_t *m, size_t mlen, size_t nmask)
{
  const unsigned char *b = (const unsigned char *)m->mbuf;
  size_t nt = 0, i = 0, mi = 0;
  while (i < mlen) {
    size_t sep = i;
    while (i < mlen && is_blank(b[i])) {
      i++;
    }
    if (i >= mlen) {
      break;
    }
    size_t start = i;
    bool var = false;
    if (nt + 1 == m->o.max_tokens) {
      i = mlen; /* the last token takes the rest of the line */
      while (i > start && is_blank(b[i - 1])) {
        i--;
      }
      for (size_t k = start; k < i; k++) {
        var = var || is_digit(b[k]);
      }
    } else {
      while (i < mlen && !is_blank(b[i])) {
        var = var || is_digit(b[i]);
        i++;
      }
    }
    lm_ltok_t *t = &m->toks[nt++];
    t->off = (uint32_t)start;
    t->len = (uint32_t)(i - start);
    t->soff = (uint32_t)sep;
    t->slen = (uint32_t)(start - sep);
    t->ostart = m->omap[start];
    t->oend = m->omap[i - 1] + 1;
    while (mi < nmask && m->masks[mi].moff < start) {
      mi++;
    }
    t->mask0 = (uint32_t)mi;
    while (mi < nmask && m->masks[mi].moff < i) {
      mi++;
    }
    t->nmask = (uint32_t)(mi - t->mask0);
    t->var = var || t->nmask > 0;
    t->word = !t->var && !is_ident(b + start, t->len);
    t->h = (t->len == WILD_LEN && memcmp(b + start, WILD, WILD_LEN) == 0 && t->nmask == 1)
               ? WILD_H
               : hash_bytes((const char *)b + start, t->len);
  }
  return nt;
}

/* ---- the prefix tree ---- */

static size_t edge_slot(uint32_t parent, uint64_t key, size_t cap)
{
  return (size_t)mix64(key ^ ((uint64_t)parent * 0x9e3779b97f4a7c15ull)) & (cap - 1);
}

static uint32_t edge_find(const vg_logmine_t *m, uint32_t parent, uint64_t key)
{
  for (size_t i = edge_slot(parent, key, m->edges_cap);; i = (i + 1) & (m->edges_cap - 1)) {
    const lm_edge_t *e = &m->edges[i];
    if (e->parent == NO_NODE) {
      return NO_NODE;
    }
    if (e->parent == parent && e->key == key) {
      return e->child;
    }
  }
}

static void edge_put(lm_edge_t *tab, size_t cap, uint32_t parent, uint64_t key, uint32_t child)
{
  size_t i = edge_slot(parent, key, cap);
  while (tab[i].parent != NO_NODE) {
    i = (i + 1) & (cap - 1);
  }
  tab[i] = (lm_edge_t){ key, parent, child };
}

static bool edges_reserve(vg_logmine_t *m)
{
  if ((m->nedges + 1) * 4 <= m->edges_cap * 3) {
    return true;
  }
  size_t nc = m->edges_cap * 2;
  lm_edge_t *t = malloc(nc * sizeof *t);
  if (t == NULL) {
    return false;
  }
  for (size_t i = 0; i < nc; i++) {
    t[i].parent = NO_NODE;
  }
  for (size_t i = 0; i < m->edges_cap; i++) {
    if (m->edges[i].parent != NO_NODE) {
      edge_put(t, nc, m->edges[i].parent, m->edges[i].key, m->edges[i].child);
    }
  }
  free(m->edges);
  m->edges = t;
  m->edges_cap = nc;
  return true;
}

/* Linear probing deletion with backward shift, so lookups never need tombstones. */
static void edge_del(vg_logmine_t *m, uint32_t parent, uint64_t key)
{
  size_t cap = m->edges_cap, i = edge_slot(parent, key, cap);
  while (!(m->edges[i].parent == parent && m->edges[i].key == key)) {
    if (m->edges[i].parent == NO_NODE) {
      return;
    }
    i = (i + 1) & (cap - 1);
  }
  m->edges[i].parent = NO_NODE;
  m->nedges--;
  for (size_t j = (i + 1) & (cap - 1); m->edges[j].parent != NO_NODE; j = (j + 1) & (cap - 1)) {
    size_t home = edge_slot(m->edges[j].parent, m->edges[j].key, cap);
    /* move j back to i when its home is not in (i, j] cyclically */
    bool stays = (i < j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!stays) {
      m->edges[i] = m->edges[j];
      m->edges[j].parent = NO_NODE;
      i = j;
    }
  }
}

static uint32_t node_new(vg_logmine_t *m, uint32_t parent, uint64_t key)
{
  uint32_t id;
  if (m->free_node != NO_NODE) {
    id = m->free_node;
    m->free_node = m->nodes[id].parent;
  } else {
    if (!grow((void **)&m->nodes, &m->nodes_cap, m->nnodes + 1, sizeof *m->nodes)) {
      return NO_NODE;
    }
    id = (uint32_t)m->nnodes++;
  }
  m->nodes[id] = (lm_node_t){ parent, 0, 0, key, NULL };
  return id;
}

/* The tree keys of a line: its token count, then up to depth leading tokens (`<*>` for tokens
 * with digits or masks). Returns how many keys. */
static size_t line_keys(const vg_logmine_t *m, const lm_ltok_t *t, size_t nt, uint64_t *keys)
{
  size_t nk = 0;
  keys[nk++] = mix64(nt + 1);
  for (size_t i = 0; i < nt && i < m->o.depth; i++) {
    keys[nk++] = t[i].var ? WILD_H : t[i].h;
  }
  return nk;
}

/* Walks to the leaf for `keys` without creating anything: NO_NODE when there is none. */
static uint32_t tree_find(const vg_logmine_t *m, const uint64_t *keys, size_t nk)
{
  uint32_t n = 0;
  for (size_t i = 0; i < nk && n != NO_NODE; i++) {
    uint32_t c = edge_find(m, n, keys[i]);
    n = (c == NO_NODE && i > 0) ? edge_find(m, n, WILD_H) : c;
  }
  return n;
}

/* Walks to the leaf for `keys`, creating nodes (a full node sends new keys to its `<*>` child). */
static uint32_t tree_make(vg_logmine_t *m, const uint64_t *keys, size_t nk)
{
  uint32_t n = 0;
  for (size_t i = 0; i < nk; i++) {
    uint64_t key = keys[i];
    uint32_t c = edge_find(m, n, key);
    if (c == NO_NODE && i > 0 && key != WILD_H && m->nodes[n].nchildren >= m->o.max_children) {
      key = WILD_H;
      c = edge_find(m, n, key);
    }
    if (c == NO_NODE) {
      if (!edges_reserve(m) || (c = node_new(m, n, key)) == NO_NODE) {
        return NO_NODE;
      }
      edge_put(m->edges, m->edges_cap, n, key, c);
      m->nedges++;
      m->nodes[n].nchildren++;
    }
    n = c;
  }
  return n;
}

/* Drops one reference from the leaf up, freeing nodes nothing uses any more. */
static void tree_unref(vg_logmine_t *m, uint32_t n)
{
  while (n != 0) {
    lm_node_t *nd = &m->nodes[n];
    uint32_t parent = nd->parent;
    if (--nd->refs == 0) {
      edge_del(m, parent, nd->key);
      m->nodes[parent].nchildren--;
      nd->parent = m->free_node;
      m->free_node = n;
    }
    n = parent;
  }
}

static void tree_ref(vg_logmine_t *m, uint32_t n)
{
  for (; n != 0; n = m->nodes[n].parent) {
    m->nodes[n].refs++;
  }
}

/* ---- clusters ---- */

static void lru_unlink(vg_logmine_t *m, lm_cluster_t *c)
{
  if (c->lru_prev) {
    c->lru_prev->lru_next = c->lru_next;
  } else {
    m->lru_head = c->lru_next;
  }
  if (c->lru_next) {
    c->lru_next->lru_prev = c->lru_prev;
  } else {
    m->lru_tail = c->lru_prev;
  }
  c->lru_prev = c->lru_next = NULL;
}

static void lru_front(vg_logmine_t *m, lm_cluster_t *c)
{
  c->lru_next = m->lru_head;
  c->lru_prev = NULL;
  if (m->lru_head) {
    m->lru_head->lru_prev = c;
  } else {
    m->lru_tail = c;
  }
  m->lru_head = c;
}

static lm_cluster_t *id_find(const vg_logmine_t *m, uint64_t id)
{
  lm_idref_t *r = m->ids[mix64(id) & (m->ids_cap - 1)];
  while (r != NULL && r->id != id) {
    r = r->next;
  }
  return r ? r->c : NULL;
}

/* Files `id` (the cluster's own, or an alias) for c. */
static bool id_insert(vg_logmine_t *m, lm_cluster_t *c, uint64_t id)
{
  if (m->nids + 1 > m->ids_cap) {
    size_t nc = m->ids_cap * 2;
    lm_idref_t **t = calloc(nc, sizeof *t);
    if (t == NULL) {
      return false;
    }
    for (size_t i = 0; i < m->ids_cap; i++) {
      for (lm_idref_t *x = m->ids[i], *next; x != NULL; x = next) {
        next = x->next;
        size_t b = mix64(x->id) & (nc - 1);
        x->next = t[b];
        t[b] = x;
      }
    }
    free(m->ids);
    m->ids = t;
    m->ids_cap = nc;
  }
  lm_idref_t *r = malloc(sizeof *r);
  if (r == NULL) {
    return false;
  }
  size_t b = mix64(id) & (m->ids_cap - 1);
  *r = (lm_idref_t){ id, c, m->ids[b], NULL };
  m->ids[b] = r;
  /* keep the own id first */
  lm_idref_t **tail = &c->ids;
  while (*tail != NULL) {
    tail = &(*tail)->sib;
  }
  *tail = r;
  m->nids++;
  return true;
}

/* Unfiles every id of c. */
static void id_remove(vg_logmine_t *m, lm_cluster_t *c)
{
  for (lm_idref_t *r = c->ids, *sib; r != NULL; r = sib) {
    sib = r->sib;
    lm_idref_t **p = &m->ids[mix64(r->id) & (m->ids_cap - 1)];
    while (*p != r) {
      p = &(*p)->next;
    }
    *p = r->next;
    free(r);
    m->nids--;
  }
  c->ids = NULL;
}

/* Moves every id of `from` to `to` (merging templates). */
static void id_move(lm_cluster_t *from, lm_cluster_t *to)
{
  lm_idref_t **tail = &to->ids;
  while (*tail != NULL) {
    tail = &(*tail)->sib;
  }
  *tail = from->ids;
  for (lm_idref_t *r = from->ids; r != NULL; r = r->sib) {
    r->c = to;
  }
  from->ids = NULL;
}

static size_t cluster_bytes(const lm_cluster_t *c)
{
  return sizeof *c + c->ntok * sizeof *c->toks + c->text_len + c->rendered_len + 64;
}

static void cluster_free(lm_cluster_t *c)
{
  if (c != NULL) {
    for (lm_idref_t *r = c->ids, *sib; r != NULL; r = sib) {
      sib = r->sib; /* only set when the table was torn down first (logmine_free) */
      free(r);
    }
    free(c->toks);
    free(c->text);
    free(c->rendered);
    free(c);
  }
}

/* Takes a cluster out of every index and frees it. */
static void cluster_drop(vg_logmine_t *m, lm_cluster_t *c)
{
  lru_unlink(m, c);
  id_remove(m, c);
  if (c->leaf_prev) {
    c->leaf_prev->leaf_next = c->leaf_next;
  } else {
    m->nodes[c->leaf].clusters = c->leaf_next;
  }
  if (c->leaf_next) {
    c->leaf_next->leaf_prev = c->leaf_prev;
  }
  tree_unref(m, c->leaf);
  m->st.clusters--;
  m->st.bytes -= cluster_bytes(c);
  cluster_free(c);
}

/* Files a built cluster under `leaf`; on failure the caller still owns it. */
static bool cluster_link(vg_logmine_t *m, lm_cluster_t *c, uint32_t leaf)
{
  if (!id_insert(m, c, c->id)) {
    return false;
  }
  c->leaf = leaf;
  c->leaf_prev = NULL;
  c->leaf_next = m->nodes[leaf].clusters;
  if (c->leaf_next) {
    c->leaf_next->leaf_prev = c;
  }
  m->nodes[leaf].clusters = c;
  tree_ref(m, leaf);
  lru_front(m, c);
  m->st.clusters++;
  m->st.bytes += cluster_bytes(c);
  return true;
}

static void evict_to(vg_logmine_t *m, size_t keep)
{
  while (m->st.clusters > keep && m->lru_tail != NULL) {
    cluster_drop(m, m->lru_tail);
    m->st.evicted++;
  }
}

/* A cluster whose template is the line's tokens. */
static lm_cluster_t *cluster_from_line(vg_logmine_t *m, size_t nt)
{
  lm_cluster_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return NULL;
  }
  size_t tl = 0;
  for (size_t i = 0; i < nt; i++) {
    tl += m->toks[i].len + (i > 0 ? m->toks[i].slen : 0);
  }
  c->toks = malloc(nt * sizeof *c->toks);
  c->text = malloc(tl + 1);
  if (c->toks == NULL || c->text == NULL) {
    cluster_free(c);
    return NULL;
  }
  c->ntok = (uint32_t)nt;
  size_t p = 0;
  for (size_t i = 0; i < nt; i++) {
    const lm_ltok_t *t = &m->toks[i];
    lm_tok_t *ct = &c->toks[i];
    ct->soff = (uint32_t)p;
    ct->slen = i > 0 ? t->slen : 0;
    for (size_t k = 0; k < ct->slen; k++) {
      char b = m->mbuf[t->soff + k]; /* keep spaces and tabs; other control bytes read as ' ' */
      c->text[p + k] = b == '\t' ? '\t' : ' ';
    }
    p += ct->slen;
    ct->off = (uint32_t)p;
    ct->len = t->len;
    memcpy(c->text + p, m->mbuf + t->off, t->len);
    p += t->len;
    ct->h = t->h;
    ct->wild = t->h == WILD_H;
    ct->word = t->word;
  }
  c->text_len = p;
  return c;
}

static bool tok_equal(const lm_cluster_t *c,
                      const lm_tok_t *ct,
                      const char *mbuf,
                      const lm_ltok_t *t)
{
  return ct->h == t->h && ct->len == t->len &&
         memcmp(c->text + ct->off, mbuf + t->off, t->len) == 0;
}

/* How a line compares with a template of the same length. */
typedef struct {
  size_t eq;   /* equal constants, and masked tokens under a `<*>` */
  size_t wild; /* `<*>` positions */
  size_t hard; /* differences that involve a word (no digits, no mask) */
} lm_cmp_t;

static lm_cmp_t compare(const vg_logmine_t *m, const lm_cluster_t *c, size_t nt)
{
  lm_cmp_t r = { 0, 0, 0 };
  for (size_t i = 0; i < nt; i++) {
    const lm_tok_t *ct = &c->toks[i];
    const lm_ltok_t *lt = &m->toks[i];
    if (ct->wild) {
      /* a wildcard only vouches for a token that is itself masked, as in Drain where a
       * wildcard adds nothing to the similarity: a template of `<*>`s must not absorb text */
      r.wild++;
      r.eq += lt->h == WILD_H;
    } else if (tok_equal(c, ct, m->mbuf, lt)) {
      r.eq++;
    } else if (ct->word || lt->word) {
      r.hard++;
    }
  }
  return r;
}

/* The most similar cluster at `leaf` (at least the similarity threshold), or NULL. Templates
 * that differ from the line only in variable tokens come first. */
static lm_cluster_t *best_in_leaf(const vg_logmine_t *m, uint32_t leaf, size_t nt, lm_cmp_t *out)
{
  lm_cluster_t *best = NULL;
  lm_cmp_t b = { 0, 0, 0 };
  size_t need = (size_t)(m->o.similarity * (double)nt + 0.999999);
  if (need == 0) {
    need = 1;
  }
  for (lm_cluster_t *c = m->nodes[leaf].clusters; c != NULL; c = c->leaf_next) {
    lm_cmp_t r = compare(m, c, nt);
    if (r.eq < need) {
      continue;
    }
    if (best == NULL || (r.hard == 0) > (b.hard == 0) ||
        ((r.hard == 0) == (b.hard == 0) && (r.eq > b.eq || (r.eq == b.eq && r.wild > b.wild)))) {
      best = c;
      b = r;
    }
  }
  *out = b;
  return best;
}

/* Generalises c's template with the line: differing tokens become `<*>`. */
static bool cluster_merge(vg_logmine_t *m, lm_cluster_t *c, size_t nt)
{
  bool changed = false;
  for (size_t i = 0; i < nt; i++) {
    lm_tok_t *ct = &c->toks[i];
    if (!ct->wild && !tok_equal(c, ct, m->mbuf, &m->toks[i])) {
      ct->wild = true;
      ct->h = WILD_H;
      changed = true;
    }
  }
  if (changed && c->rendered != NULL) {
    m->st.bytes -= c->rendered_len;
    free(c->rendered);
    c->rendered = NULL;
    c->rendered_len = 0;
  }
  return changed;
}

static bool cluster_render(vg_logmine_t *m, lm_cluster_t *c)
{
  if (c->rendered != NULL) {
    return true;
  }
  size_t len = 0;
  for (size_t i = 0; i < c->ntok; i++) {
    len += c->toks[i].slen + (c->toks[i].wild ? WILD_LEN : c->toks[i].len);
  }
  char *r = malloc(len + 1);
  if (r == NULL) {
    return false;
  }
  size_t p = 0;
  for (size_t i = 0; i < c->ntok; i++) {
    const lm_tok_t *t = &c->toks[i];
    memcpy(r + p, c->text + t->soff, t->slen);
    p += t->slen;
    if (t->wild) {
      memcpy(r + p, WILD, WILD_LEN);
      p += WILD_LEN;
    } else {
      memcpy(r + p, c->text + t->off, t->len);
      p += t->len;
    }
  }
  r[p] = '\0';
  c->rendered = r;
  c->rendered_len = p;
  m->st.bytes += p;
  return true;
}

/* Fills res->params: the whole token where the template has `<*>`, else the token's masks. */
static bool extract_params(vg_logmine_t *m,
                           const lm_cluster_t *c,
                           size_t nt,
                           vg_logmine_result_t *res)
{
  size_t np = 0;
  for (size_t i = 0; i < nt; i++) {
    const lm_ltok_t *t = &m->toks[i];
    size_t want = np + (c->toks[i].wild ? 1 : t->nmask);
    if (!grow((void **)&m->params, &m->params_cap, want, sizeof *m->params)) {
      return false;
    }
    if (c->toks[i].wild) {
      m->params[np++] = (vg_logmine_span_t){ t->ostart, t->oend - t->ostart };
    } else {
      for (size_t k = 0; k < t->nmask; k++) {
        const lm_mask_t *mk = &m->masks[t->mask0 + k];
        m->params[np++] = (vg_logmine_span_t){ mk->ostart, mk->oend - mk->ostart };
      }
    }
  }
  res->nparams = np;
  res->params = m->params;
  return true;
}

/* Masks and tokenizes a line; 0 tokens means blank. SIZE_MAX when out of memory. */
static size_t prepare(vg_logmine_t *m, const char *line, size_t len, bool *truncated)
{
  *truncated = false;
  if (len > m->o.max_line) {
    len = m->o.max_line;
    *truncated = true;
  }
  while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
    len--;
  }
  size_t nmask = 0, mlen = mask_line(m, line, len, &nmask);
  if (mlen == SIZE_MAX) {
    return SIZE_MAX;
  }
  return tokenize(m, mlen, nmask);
}

/* True when x agrees with c wherever the line agrees with c (positions not in `diff`). */
static bool sibling_of(const lm_cluster_t *x, const lm_cluster_t *c, const bool *diff, size_t nt)
{
  for (size_t i = 0; i < nt; i++) {
    const lm_tok_t *a = &x->toks[i], *b = &c->toks[i];
    if (diff[i] || a->wild || b->wild) {
      continue;
    }
    if (a->h != b->h || a->len != b->len ||
        memcmp(x->text + a->off, c->text + b->off, a->len) != 0) {
      return false;
    }
  }
  return true;
}

/* True when every line of x also fits t: t has x's tokens or `<*>` (same length). */
static bool covers(const lm_cluster_t *t, const lm_cluster_t *x)
{
  for (size_t i = 0; i < t->ntok; i++) {
    const lm_tok_t *a = &t->toks[i], *b = &x->toks[i];
    if (a->wild) {
      continue;
    }
    if (b->wild || a->h != b->h || a->len != b->len ||
        memcmp(t->text + a->off, x->text + b->off, a->len) != 0) {
      return false;
    }
  }
  return true;
}

/* A line differs from its best template c in a word (`Too many failures for root` after `... for
 * admin`). Drain would generalise at once; here a position becomes `<*>` only once
 * WORD_VARIANTS different words were seen there, so `stored as bytes` and `stored as values`
 * stay two messages while `Invalid user <*>` forms after a few user names. The templates that
 * differ from c only where the line does (its siblings) are counted; at the threshold they all
 * fold into the oldest, whose id the others become aliases of. Returns that cluster, or NULL
 * when the line should start a template of its own. *merged counts the templates folded. */
static lm_cluster_t *merge_siblings(
    vg_logmine_t *m, lm_cluster_t *c, size_t nt, size_t *merged, bool *oom)
{
  bool *d = calloc(nt, sizeof *d);
  *merged = 0;
  *oom = d == NULL;
  if (d == NULL) {
    return NULL;
  }
  for (size_t i = 0; i < nt; i++) {
    const lm_tok_t *ct = &c->toks[i];
    d[i] = !ct->wild && !tok_equal(c, ct, m->mbuf, &m->toks[i]);
  }
  size_t n = 0;
  lm_cluster_t *oldest = c;
  for (lm_cluster_t *x = m->nodes[c->leaf].clusters; x != NULL; x = x->leaf_next) {
    if (sibling_of(x, c, d, nt)) {
      n++;
      if (x->id < oldest->id) {
        oldest = x;
      }
    }
  }
  if (n + 1 < WORD_VARIANTS) {
    free(d);
    return NULL;
  }
  for (size_t i = 0; i < nt; i++) {
    if (d[i]) {
      oldest->toks[i].wild = true;
      oldest->toks[i].word = false;
      oldest->toks[i].h = WILD_H;
    }
  }
  /* fold the siblings, and any template the generalised one now covers; decide before freeing
   * anything, since c itself may go */
  size_t nf = 0;
  lm_cluster_t **fold = malloc((n + m->st.clusters) * sizeof *fold);
  if (fold == NULL) {
    *oom = true;
    free(d);
    return NULL;
  }
  for (lm_cluster_t *x = m->nodes[c->leaf].clusters; x != NULL; x = x->leaf_next) {
    if (x != oldest && (sibling_of(x, c, d, nt) || covers(oldest, x))) {
      fold[nf++] = x;
    }
  }
  for (size_t k = 0; k < nf; k++) {
    lm_cluster_t *x = fold[k];
    oldest->count += x->count;
    oldest->first_seq = x->first_seq < oldest->first_seq ? x->first_seq : oldest->first_seq;
    oldest->last_seq = x->last_seq > oldest->last_seq ? x->last_seq : oldest->last_seq;
    id_move(x, oldest);
    cluster_drop(m, x);
    (*merged)++;
  }
  free(fold);
  free(d);
  return oldest;
}

static vg_logmine_status_t mine(
    vg_logmine_t *m, const char *line, size_t len, vg_logmine_result_t *res, bool learn)
{
  bool truncated;
  size_t nt = prepare(m, line, len, &truncated);
  if (nt == SIZE_MAX) {
    return VG_LOGMINE_NOMEM;
  }
  if (nt == 0) {
    m->st.empty++;
    return VG_LOGMINE_EMPTY;
  }
  m->st.lines++;
  m->st.truncated += truncated;
  bool count = learn; /* match-only add still counts the line against its template */
  learn = learn && !m->o.match_only;
  uint64_t keys[10];
  size_t nk = line_keys(m, m->toks, nt, keys);
  uint32_t leaf = tree_find(m, keys, nk);
  lm_cmp_t cmp;
  lm_cluster_t *c = leaf == NO_NODE ? NULL : best_in_leaf(m, leaf, nt, &cmp);
  vg_logmine_status_t status = VG_LOGMINE_MATCHED;
  bool changed = false;
  size_t merged = 0;
  if (c != NULL && cmp.hard > 0) {
    bool oom = false;
    c = learn ? merge_siblings(m, c, nt, &merged, &oom) : NULL;
    if (oom) {
      return VG_LOGMINE_NOMEM;
    }
    changed = c != NULL;
    m->st.merged += merged;
  }
  if (c == NULL) {
    if (!learn) {
      m->st.nomatch++;
      return VG_LOGMINE_NOMATCH;
    }
    if ((leaf = tree_make(m, keys, nk)) == NO_NODE || (c = cluster_from_line(m, nt)) == NULL) {
      return VG_LOGMINE_NOMEM;
    }
    c->id = m->next_id;
    c->first_seq = m->st.lines;
    if (!cluster_link(m, c, leaf)) {
      cluster_free(c);
      return VG_LOGMINE_NOMEM;
    }
    m->next_id++;
    m->st.created++;
    status = VG_LOGMINE_CREATED;
    evict_to(m, m->o.max_clusters);
  } else if (learn) {
    changed = cluster_merge(m, c, nt) || changed;
  }
  if (changed && c->rendered != NULL) {
    m->st.bytes -= c->rendered_len;
    free(c->rendered);
    c->rendered = NULL;
    c->rendered_len = 0;
  }
  if (count) {
    c->count++;
    c->last_seq = m->st.lines;
    lru_unlink(m, c);
    lru_front(m, c);
  }
  res->id = c->id;
  res->changed = changed;
  res->merged = merged;
  res->truncated = truncated;
  if (!extract_params(m, c, nt, res)) {
    return VG_LOGMINE_NOMEM;
  }
  return status;
}

vg_logmine_status_t logmine_add(vg_logmine_t *m,
                                const char *line,
                                size_t len,
                                vg_logmine_result_t *res)
{
  return mine(m, line, len, res, true);
}

vg_logmine_status_t logmine_match(vg_logmine_t *m,
                                  const char *line,
                                  size_t len,
                                  vg_logmine_result_t *res)
{
  return mine(m, line, len, res, false);
}

static void fill_template(const lm_cluster_t *c, vg_logmine_template_t *out)
{
  *out = (vg_logmine_template_t){ c->id,       c->count,        c->first_seq, c->last_seq,
                                  c->rendered, c->rendered_len, c->ntok };
}

bool logmine_get(vg_logmine_t *m, uint64_t id, vg_logmine_template_t *out)
{
  lm_cluster_t *c = id_find(m, id);
  if (c == NULL || !cluster_render(m, c)) {
    return false;
  }
  fill_template(c, out);
  return true;
}

bool logmine_foreach(vg_logmine_t *m,
                     bool (*fn)(const vg_logmine_template_t *t, void *ud),
                     void *ud)
{
  for (lm_cluster_t *c = m->lru_head; c != NULL; c = c->lru_next) {
    if (!cluster_render(m, c)) {
      return false;
    }
  }
  for (lm_cluster_t *c = m->lru_head; c != NULL; c = c->lru_next) {
    vg_logmine_template_t t;
    fill_template(c, &t);
    if (!fn(&t, ud)) {
      break;
    }
  }
  return true;
}

void logmine_stats(const vg_logmine_t *m, vg_logmine_stats_t *out)
{
  *out = m->st;
}

void logmine_set_match_only(vg_logmine_t *m, bool on)
{
  m->o.match_only = on;
}

/* ---- construction ---- */

void logmine_opts_default(vg_logmine_opts_t *o)
{
  *o = (vg_logmine_opts_t){
    .similarity = 0.5,
    .depth = 2,
    .max_children = 100,
    .max_clusters = 10000,
    .max_line = 16384,
    .max_tokens = 256,
    .masks = VG_LOGMINE_MASK_ALL,
    .match_only = false,
  };
}

vg_logmine_t *logmine_new(const vg_logmine_opts_t *opts, char *err, size_t errlen)
{
  vg_logmine_opts_t o;
  logmine_opts_default(&o);
  if (opts != NULL) {
    if (opts->similarity != 0) {
      o.similarity = opts->similarity;
    }
    o.depth = opts->depth ? opts->depth : o.depth;
    o.max_children = opts->max_children ? opts->max_children : o.max_children;
    o.max_clusters = opts->max_clusters ? opts->max_clusters : o.max_clusters;
    o.max_line = opts->max_line ? opts->max_line : o.max_line;
    o.max_tokens = opts->max_tokens ? opts->max_tokens : o.max_tokens;
    o.masks = opts->masks & VG_LOGMINE_MASK_ALL;
    o.match_only = opts->match_only;
  }
  if (!(o.similarity > 0 && o.similarity <= 1)) {
    vg_errf(err, errlen, "similarity must be in (0, 1]");
    return NULL;
  }
  if (o.depth > 8) {
    vg_errf(err, errlen, "depth must be 1..8");
    return NULL;
  }
  if (o.max_line > (1u << 24)) {
    vg_errf(err, errlen, "max_line must be at most 16 MiB");
    return NULL;
  }
  if (o.max_tokens > 65536) {
    vg_errf(err, errlen, "max_tokens must be at most 65536");
    return NULL;
  }
  if (o.max_clusters > (1u << 30)) {
    vg_errf(err, errlen, "max_clusters must be at most 2^30");
    return NULL;
  }
  vg_logmine_t *m = calloc(1, sizeof *m);
  if (m == NULL) {
    goto nomem;
  }
  m->o = o;
  m->next_id = 1;
  m->free_node = NO_NODE;
  /* a mask's `<*>` (3 bytes) can replace a single byte */
  m->mcap = 3 * o.max_line + 8;
  m->mbuf = malloc(m->mcap);
  m->omap = malloc(m->mcap * sizeof *m->omap);
  m->toks = malloc((o.max_tokens + 1) * sizeof *m->toks);
  m->edges_cap = 64;
  m->edges = malloc(m->edges_cap * sizeof *m->edges);
  m->ids_cap = 64;
  m->ids = calloc(m->ids_cap, sizeof *m->ids);
  if (m->mbuf == NULL || m->omap == NULL || m->toks == NULL || m->edges == NULL || m->ids == NULL) {
    goto nomem;
  }
  for (size_t i = 0; i < m->edges_cap; i++) {
    m->edges[i].parent = NO_NODE;
  }
  if (node_new(m, NO_NODE, 0) != 0) { /* the root */
    goto nomem;
  }
  return m;
nomem:
  vg_errf(err, errlen, "out of memory");
  logmine_free(m);
  return NULL;
}

int logmine_add_mask(vg_logmine_t *m, const char *pattern, size_t len, char *err, size_t errlen)
{
  if (m->numask >= USER_MASK_MAX) {
    vg_errf(err, errlen, "too many masks (at most %d)", USER_MASK_MAX);
    return -1;
  }
  if (len == 0) {
    vg_errf(err, errlen, "empty mask pattern");
    return -1;
  }
  /* Try it once so a malformed pattern is reported now, not silently per line. */
  lpattern_state_t st;
  const char *a, *b;
  lpattern_init(&st, "x", 1, pattern, len, USER_MASK_STEPS);
  if (lpattern_find(&st, "x", false, &a, &b) == LPATTERN_ERROR) {
    vg_errf(err, errlen, "bad mask pattern: %s", st.error);
    return -1;
  }
  char *p = malloc(len);
  if (p == NULL) {
    vg_errf(err, errlen, "out of memory");
    return -1;
  }
  memcpy(p, pattern, len);
  m->umask[m->numask++] = (lm_user_mask_t){ p, len };
  return 0;
}

static void clusters_free_all(vg_logmine_t *m)
{
  for (lm_cluster_t *c = m->lru_head, *next; c != NULL; c = next) {
    next = c->lru_next;
    cluster_free(c);
  }
}

void logmine_free(vg_logmine_t *m)
{
  if (m == NULL) {
    return;
  }
  clusters_free_all(m);
  for (size_t i = 0; i < m->numask; i++) {
    free(m->umask[i].pat);
  }
  free(m->nodes);
  free(m->edges);
  free(m->ids);
  free(m->mbuf);
  free(m->omap);
  free(m->toks);
  free(m->masks);
  free(m->params);
  free(m->uspans);
  free(m);
}

/* ---- snapshot: "VGLM1\n", next_id u64, lines u64, count u32, then per cluster (least recently
 * seen first) id, count, first_seq, last_seq u64, ntok u32, and per token wild u8, slen u32,
 * blank bytes, len u32, text bytes. Integers little-endian. ---- */

typedef struct {
  char *p;
  size_t len, cap;
  bool oom;
} lm_buf_t;

static void put(lm_buf_t *b, const void *src, size_t n)
{
  if (b->oom || !grow((void **)&b->p, &b->cap, b->len + n, 1)) {
    b->oom = true;
    return;
  }
  memcpy(b->p + b->len, src, n);
  b->len += n;
}

static void put_u64(lm_buf_t *b, uint64_t v)
{
  unsigned char x[8];
  for (int i = 0; i < 8; i++) {
    x[i] = (unsigned char)(v >> (8 * i));
  }
  put(b, x, 8);
}

static void put_u32(lm_buf_t *b, uint32_t v)
{
  unsigned char x[4];
  for (int i = 0; i < 4; i++) {
    x[i] = (unsigned char)(v >> (8 * i));
  }
  put(b, x, 4);
}

char *logmine_snapshot(vg_logmine_t *m, size_t *len)
{
  lm_buf_t b = { 0 };
  put(&b, SNAP_MAGIC, strlen(SNAP_MAGIC));
  put_u64(&b, m->next_id);
  put_u64(&b, m->st.lines);
  put_u32(&b, (uint32_t)m->st.clusters);
  for (lm_cluster_t *c = m->lru_tail; c != NULL; c = c->lru_prev) {
    put_u64(&b, c->id);
    put_u64(&b, c->count);
    put_u64(&b, c->first_seq);
    put_u64(&b, c->last_seq);
    put_u32(&b, c->ntok);
    for (size_t i = 0; i < c->ntok; i++) {
      const lm_tok_t *t = &c->toks[i];
      unsigned char w = t->wild;
      put(&b, &w, 1);
      put_u32(&b, t->slen);
      put(&b, c->text + t->soff, t->slen);
      put_u32(&b, t->wild ? 0 : t->len);
      if (!t->wild) {
        put(&b, c->text + t->off, t->len);
      }
    }
    uint32_t na = 0;
    for (const lm_idref_t *r = c->ids->sib; r != NULL; r = r->sib) {
      na++;
    }
    put_u32(&b, na);
    for (const lm_idref_t *r = c->ids->sib; r != NULL; r = r->sib) {
      put_u64(&b, r->id);
    }
  }
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  *len = b.len;
  return b.p;
}

typedef struct {
  const unsigned char *p;
  size_t len, pos;
  bool bad;
} lm_rd_t;

static const unsigned char *take(lm_rd_t *r, size_t n)
{
  if (r->bad || n > r->len - r->pos) {
    r->bad = true;
    return NULL;
  }
  const unsigned char *p = r->p + r->pos;
  r->pos += n;
  return p;
}

static uint64_t get_u64(lm_rd_t *r)
{
  const unsigned char *x = take(r, 8);
  uint64_t v = 0;
  for (int i = 0; x != NULL && i < 8; i++) {
    v |= (uint64_t)x[i] << (8 * i);
  }
  return v;
}

static uint32_t get_u32(lm_rd_t *r)
{
  const unsigned char *x = take(r, 4);
  uint32_t v = 0;
  for (int i = 0; x != NULL && i < 4; i++) {
    v |= (uint32_t)x[i] << (8 * i);
  }
  return v;
}

/* Whether a template token would route through the `<*>` child (as a line's would). */
static bool tok_var(const lm_cluster_t *c, const lm_tok_t *t)
{
  if (t->wild) {
    return true;
  }
  for (size_t k = 0; k < t->len; k++) {
    if (is_digit((unsigned char)c->text[t->off + k]) ||
        (k + WILD_LEN <= t->len && memcmp(c->text + t->off + k, WILD, WILD_LEN) == 0)) {
      return true;
    }
  }
  return false;
}

/* Reads one cluster into a new allocation, recomputing the routing keys from its tokens. */
static lm_cluster_t *read_cluster(lm_rd_t *r, const vg_logmine_t *m, const char **why)
{
  uint64_t id = get_u64(r), count = get_u64(r), first = get_u64(r), last = get_u64(r);
  uint32_t ntok = get_u32(r);
  if (r->bad) {
    *why = "truncated";
    return NULL;
  }
  if (id == 0 || ntok == 0 || ntok > m->o.max_tokens || ntok > r->len - r->pos) {
    *why = "bad cluster header";
    return NULL;
  }
  /* first pass: find the text size */
  size_t save = r->pos, tl = 0;
  for (uint32_t i = 0; i < ntok && !r->bad; i++) {
    const unsigned char *w = take(r, 1);
    uint32_t sl = get_u32(r);
    take(r, sl);
    uint32_t tlen = get_u32(r);
    take(r, tlen);
    if (!r->bad && (*w > 1 || (*w == 1 && tlen != 0) || (*w == 0 && tlen == 0))) {
      *why = "bad token";
      return NULL;
    }
    tl += sl + tlen;
  }
  if (r->bad) {
    *why = "truncated";
    return NULL;
  }
  r->pos = save;
  lm_cluster_t *c = calloc(1, sizeof *c);
  if (c == NULL || (c->toks = malloc(ntok * sizeof *c->toks)) == NULL ||
      (c->text = malloc(tl + 1)) == NULL) {
    cluster_free(c);
    *why = "out of memory";
    return NULL;
  }
  c->id = id;
  c->count = count;
  c->first_seq = first;
  c->last_seq = last;
  c->ntok = ntok;
  size_t p = 0;
  for (uint32_t i = 0; i < ntok; i++) {
    lm_tok_t *t = &c->toks[i];
    t->wild = *take(r, 1) == 1;
    t->slen = get_u32(r);
    t->soff = (uint32_t)p;
    memcpy(c->text + p, take(r, t->slen), t->slen);
    p += t->slen;
    t->len = get_u32(r);
    t->off = (uint32_t)p;
    memcpy(c->text + p, take(r, t->len), t->len);
    p += t->len;
    t->h = t->wild ? WILD_H : hash_bytes(c->text + t->off, t->len);
  }
  c->text_len = p;
  for (uint32_t i = 0; i < ntok; i++) {
    const lm_tok_t *t = &c->toks[i];
    c->toks[i].word = !tok_var(c, t) && !is_ident((const unsigned char *)c->text + t->off, t->len);
  }
  return c;
}

int logmine_restore(vg_logmine_t *m, const char *buf, size_t len, char *err, size_t errlen)
{
  lm_rd_t r = { (const unsigned char *)buf, len, 0, false };
  const unsigned char *magic = take(&r, strlen(SNAP_MAGIC));
  if (magic == NULL || memcmp(magic, SNAP_MAGIC, strlen(SNAP_MAGIC)) != 0) {
    vg_errf(err, errlen, "not a log miner snapshot");
    return -1;
  }
  uint64_t next_id = get_u64(&r), lines = get_u64(&r);
  uint32_t n = get_u32(&r);
  if (r.bad || n > (len - r.pos) / 40) {
    vg_errf(err, errlen, "bad snapshot header");
    return -1;
  }
  /* Build into a fresh miner with the same options, then swap its insides in. */
  vg_logmine_opts_t o = m->o;
  o.max_clusters = (size_t)n + 1;
  vg_logmine_t *fresh = logmine_new(&o, err, errlen);
  if (fresh == NULL) {
    return -1;
  }
  for (uint32_t i = 0; i < n; i++) {
    const char *why = "truncated";
    lm_cluster_t *c = read_cluster(&r, m, &why);
    if (c == NULL || id_find(fresh, c->id) != NULL || c->id >= next_id) {
      vg_errf(err, errlen, "bad snapshot: %s at template %u", c ? "bad id" : why, (unsigned)i);
      cluster_free(c);
      logmine_free(fresh);
      return -1;
    }
    uint64_t keys[10];
    size_t nk = 0;
    keys[nk++] = mix64((uint64_t)c->ntok + 1);
    for (size_t k = 0; k < c->ntok && k < m->o.depth; k++) {
      keys[nk++] = tok_var(c, &c->toks[k]) ? WILD_H : c->toks[k].h;
    }
    uint32_t leaf = tree_make(fresh, keys, nk);
    if (leaf == NO_NODE || !cluster_link(fresh, c, leaf)) {
      vg_errf(err, errlen, "out of memory");
      cluster_free(c);
      logmine_free(fresh);
      return -1;
    }
    uint32_t na = get_u32(&r);
    if (r.bad || na > (len - r.pos) / 8) {
      vg_errf(err, errlen, "bad snapshot: truncated at template %u", (unsigned)i);
      logmine_free(fresh);
      return -1;
    }
    for (uint32_t k = 0; k < na; k++) {
      uint64_t alias = get_u64(&r);
      if (alias == 0 || alias >= next_id || id_find(fresh, alias) != NULL) {
        vg_errf(err, errlen, "bad snapshot: bad id at template %u", (unsigned)i);
        logmine_free(fresh);
        return -1;
      }
      if (!id_insert(fresh, c, alias)) {
        vg_errf(err, errlen, "out of memory");
        logmine_free(fresh);
        return -1;
      }
    }
  }
  if (r.pos != len) {
    vg_errf(err, errlen, "bad snapshot: trailing bytes");
    logmine_free(fresh);
    return -1;
  }
  fresh->next_id = next_id;
  fresh->o = m->o;
  fresh->st = m->st;
  fresh->st.clusters = 0;
  fresh->st.bytes = 0;
  for (lm_cluster_t *c = fresh->lru_head; c != NULL; c = c->lru_next) {
    fresh->st.clusters++;
    fresh->st.bytes += cluster_bytes(c);
  }
  if (fresh->st.lines < lines) {
    fresh->st.lines = lines;
  }
  evict_to(fresh, m->o.max_clusters);
  /* swap: the old templates go with `fresh`, user masks and scratch stay with m */
  vg_logmine_t tmp = *m;
  m->nodes = fresh->nodes;
  m->nnodes = fresh->nnodes;
  m->nodes_cap = fresh->nodes_cap;
  m->free_node = fresh->free_node;
  m->edges = fresh->edges;
  m->nedges = fresh->nedges;
  m->edges_cap = fresh->edges_cap;
  m->ids = fresh->ids;
  m->ids_cap = fresh->ids_cap;
  m->nids = fresh->nids;
  m->lru_head = fresh->lru_head;
  m->lru_tail = fresh->lru_tail;
  m->next_id = fresh->next_id;
  m->st = fresh->st;
  fresh->nodes = tmp.nodes;
  fresh->edges = tmp.edges;
  fresh->ids = tmp.ids;
  fresh->lru_head = tmp.lru_head;
  fresh->lru_tail = tmp.lru_tail;
  logmine_free(fresh);
  return 0;
}
