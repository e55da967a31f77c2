/* The strict HTTP/1.1 server of httpd.h. Two halves: the request reader (our byte scan of the
 * raw head, then http_parser as tokenizer and body decoder, cross-checked against each other),
 * which knows nothing of sockets, and the libuv connections that feed it, answer in order and
 * enforce the deadlines and the connection cap. */
#include "engine/httpd.h"

#include <http_parser.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/httpd_parse.h"

/* Leading empty lines before a request line that we skip (RFC 9112 §2.2 asks for at least one). */
#define READER_MAX_EMPTY_LINES 8
/* Chunked framing (sizes, extensions, CRLFs) may add this much to a body on the wire. */
#define READER_FRAMING_SLACK ((size_t)64 * 1024)

/* ---- small growable buffers ---- */

typedef struct {
  char *p;
  size_t len, cap;
} sbuf_t;

static int sbuf_reserve(sbuf_t *b, size_t more)
{
  if (b->cap - b->len >= more) {
    return 0;
  }
  if (more > SIZE_MAX / 2 - b->len) {
    return -1;
  }
  size_t cap = b->cap ? b->cap : 64;
  while (cap - b->len < more) {
    cap *= 2;
  }
  char *p = realloc(b->p, cap);
  if (p == NULL) {
    return -1;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

static int sbuf_append(sbuf_t *b, const void *data, size_t n)
{
  if (sbuf_reserve(b, n) != 0) {
    return -1;
  }
  if (n > 0) {
    memcpy(b->p + b->len, data, n);
  }
  b->len += n;
  return 0;
}

static int sbuf_nul(sbuf_t *b)
{
  return sbuf_append(b, "", 1);
}

/* ---- character classes (RFC 9110 §5.6.2) ---- */

static bool is_tchar(unsigned char c)
{
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
    return true;
  }
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_ows(unsigned char c)
{
  return c == ' ' || c == '\t';
}

static char lower(char c)
{
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool eq_nocase(const char *a, size_t alen, const char *b)
{
  size_t blen = strlen(b);
  if (alen != blen) {
    return false;
  }
  for (size_t i = 0; i < alen; i++) {
    if (lower(a[i]) != b[i]) {
      return false;
    }
  }
  return true;
}

/* ---- the request reader ---- */

typedef struct {
  vg_http_msg_t pub; /* first: a msg_t* is a vg_http_msg_t* */
  sbuf_t strs;       /* names, values, method, path, query, peer: NUL-terminated */
  sbuf_t url;
  sbuf_t body;
  size_t (*hoff)[2]; /* per header: offsets of name and value in strs */
  size_t nh, hcap;
  vg_http_header_t *headers;
  int last_cb; /* 0 none, 1 a header name, 2 a header value */
} msg_t;

enum { R_HEAD, R_BODY, R_READY, R_FAILED };

struct vg_http_reader {
  vg_httpd_limits_t lim;
  char *peer;
  char *buf; /* buf[off..len): bytes not yet consumed; in R_HEAD, off is the request's start */
  size_t off, len, cap;
  int state;
  int status;
  char err[160];
  /* the head scan; offsets relative to off */
  size_t scan, line_start, hdr_start, head_len;
  size_t method_len, target_off, target_len;
  size_t nhdr;
  unsigned empty_lines;
  int minor;
  bool has_cl, has_te, has_host, expect_continue, want_continue, chunked;
  uint64_t cl;
  size_t te_off, te_len;
  /* the body, through http_parser */
  http_parser parser;
  size_t wire; /* bytes of this request given to the parser */
  msg_t *msg;
  bool headers_done, msg_done;
  size_t trailer_bytes;
  int cb_status; /* set by a callback that stops the parser */
  const char *cb_err;
};

static void msg_free(msg_t *m)
{
  if (m == NULL) {
    return;
  }
  free(m->strs.p);
  free(m->url.p);
  free(m->body.p);
  free(m->hoff);
  free(m->headers);
  free(m);
}

void vg_http_msg_free(vg_http_msg_t *m)
{
  msg_free((msg_t *)m);
}

static int reader_fail(vg_http_reader_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int reader_fail(vg_http_reader_t *r, int status, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err, sizeof r->err, fmt, ap);
  va_end(ap);
  r->state = R_FAILED;
  r->status = status;
  return status;
}

static void reader_reset(vg_http_reader_t *r)
{
  r->state = R_HEAD;
  r->scan = r->line_start = r->hdr_start = r->head_len = 0;
  r->method_len = r->target_off = r->target_len = 0;
  r->nhdr = 0;
  r->empty_lines = 0;
  r->minor = 1;
  r->has_cl = r->has_te = r->has_host = r->expect_continue = r->want_continue = false;
  r->chunked = false;
  r->cl = 0;
  r->te_off = r->te_len = 0;
  r->wire = 0;
  r->msg = NULL;
  r->headers_done = r->msg_done = false;
  r->trailer_bytes = 0;
  r->cb_status = 0;
  r->cb_err = NULL;
}

vg_http_reader_t *vg_http_reader_new(const vg_httpd_limits_t *limits, const char *peer)
{
  vg_http_reader_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    return NULL;
  }
  r->lim = *limits;
  r->peer = strdup(peer != NULL ? peer : "");
  if (r->peer == NULL) {
    free(r);
    return NULL;
  }
  reader_reset(r);
  return r;
}

void vg_http_reader_free(vg_http_reader_t *r)
{
  if (r == NULL) {
    return;
  }
  msg_free(r->msg);
  free(r->buf);
  free(r->peer);
  free(r);
}

char *vg_http_reader_space(vg_http_reader_t *r, size_t want, size_t *avail)
{
  if (r->cap - r->len < want && r->off > 0) {
    memmove(r->buf, r->buf + r->off, r->len - r->off);
    r->len -= r->off;
    r->off = 0;
  }
  if (r->cap - r->len < want) {
    if (want > SIZE_MAX / 2 - r->len) {
      return NULL;
    }
    size_t cap = r->cap ? r->cap : 4096;
    while (cap - r->len < want) {
      cap *= 2;
    }
    char *p = realloc(r->buf, cap);
    if (p == NULL) {
      return NULL;
    }
    r->buf = p;
    r->cap = cap;
  }
  *avail = r->cap - r->len;
  return r->buf + r->len;
}

void vg_http_reader_commit(vg_http_reader_t *r, size_t n)
{
  r->len += n;
}

int vg_http_reader_feed(vg_http_reader_t *r, const char *data, size_t len)
{
  size_t avail;
  char *p = vg_http_reader_space(r, len, &avail);
  if (p == NULL) {
    return -1;
  }
  if (len > 0) {
    memcpy(p, data, len);
  }
  vg_http_reader_commit(r, len);
  return 0;
}

const char *vg_http_reader_error(const vg_http_reader_t *r)
{
  return r->err;
}

int vg_http_reader_phase(const vg_http_reader_t *r)
{
  switch (r->state) {
    case R_HEAD:
      return r->len > r->off ? VG_HTTP_PHASE_HEAD : VG_HTTP_PHASE_IDLE;
    case R_BODY:
    case R_READY:
      return VG_HTTP_PHASE_BODY;
    default:
      return VG_HTTP_PHASE_HEAD;
  }
}

size_t vg_http_reader_pending(const vg_http_reader_t *r)
{
  return r->len - r->off;
}

bool vg_http_reader_want_continue(vg_http_reader_t *r)
{
  bool w = r->want_continue && r->state == R_BODY;
  r->want_continue = false;
  return w;
}

/* "METHOD SP request-target SP HTTP/d.d", nothing else (RFC 9112 §3). */
static int on_request_line(vg_http_reader_t *r, size_t ls, size_t le)
{
  const char *line = r->buf + r->off + ls;
  size_t len = le - ls;
  if (len == 0) {
    if (++r->empty_lines > READER_MAX_EMPTY_LINES) {
      return reader_fail(r, 400, "too many empty lines before the request line");
    }
    return 0;
  }
  if (len == 14 && memcmp(line, "PRI * HTTP/2.0", 14) == 0) {
    return reader_fail(r, 400, "HTTP/2 connection preface on an HTTP/1.1 server");
  }
  size_t j = 0;
  while (j < len && is_tchar((unsigned char)line[j])) {
    j++;
  }
  if (j == 0 || j >= len || line[j] != ' ') {
    return reader_fail(r, 400, "malformed request line (method)");
  }
  size_t k = j + 1;
  while (k < len && (unsigned char)line[k] > ' ') {
    k++;
  }
  if (k == j + 1 || k >= len || line[k] != ' ') {
    return reader_fail(r, 400, "malformed request line (target)");
  }
  const char *v = line + k + 1;
  size_t vlen = len - k - 1;
  if (vlen != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
      v[7] < '0' || v[7] > '9') {
    return reader_fail(r, 400, "malformed request line (version)");
  }
  if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) {
    return reader_fail(r, 505, "HTTP version %.3s is not supported", v + 5);
  }
  r->minor = v[7] - '0';
  r->method_len = j;
  r->target_off = ls + j + 1;
  r->target_len = k - j - 1;
  r->hdr_start = le + 2;
  return 0;
}

static int parse_content_length(const char *v, size_t n, uint64_t *out)
{
  uint64_t x = 0;
  if (n == 0) {
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') {
      return -1;
    }
    unsigned d = (unsigned)(v[i] - '0');
    if (x > (UINT64_MAX - d) / 10) {
      return -1;
    }
    x = x * 10 + d;
  }
  *out = x;
  return 0;
}

static int on_header_line(vg_http_reader_t *r, size_t ls, size_t le)
{
  const char *b = r->buf + r->off;
  if (is_ows((unsigned char)b[ls])) {
    return reader_fail(r, 400, "obsolete line folding in the headers");
  }
  if (++r->nhdr > r->lim.max_headers) {
    return reader_fail(r, 431, "more than %zu header fields", r->lim.max_headers);
  }
  size_t j = ls;
  while (j < le && is_tchar((unsigned char)b[j])) {
    j++;
  }
  if (j == ls || j == le || b[j] != ':') {
    return reader_fail(r, 400, "invalid header field name");
  }
  const char *name = b + ls;
  size_t nlen = j - ls;
  size_t vs = j + 1, ve = le;
  while (vs < ve && is_ows((unsigned char)b[vs])) {
    vs++;
  }
  while (ve > vs && is_ows((unsigned char)b[ve - 1])) {
    ve--;
  }
  const char *val = b + vs;
  size_t vlen = ve - vs;
  if (eq_nocase(name, nlen, "content-length")) {
    if (r->has_cl) {
      return reader_fail(r, 400, "more than one Content-Length");
    }
    if (parse_content_length(val, vlen, &r->cl) != 0) {
      return reader_fail(r, 400, "invalid Content-Length");
    }
    r->has_cl = true;
  } else if (eq_nocase(name, nlen, "transfer-encoding")) {
    if (r->has_te) {
      return reader_fail(r, 400, "more than one Transfer-Encoding");
    }
    r->has_te = true;
    r->te_off = vs;
    r->te_len = vlen;
  } else if (eq_nocase(name, nlen, "host")) {
    if (r->has_host) {
      return reader_fail(r, 400, "more than one Host");
    }
    r->has_host = true;
  } else if (eq_nocase(name, nlen, "expect")) {
    if (!eq_nocase(val, vlen, "100-continue")) {
      return reader_fail(r, 417, "only Expect: 100-continue is supported");
    }
    r->expect_continue = true;
  }
  return 0;
}

/* Transfer-Encoding: exactly `chunked`. A well-formed list with another coding is 501; chunked
 * twice, not last, or a malformed list is 400 (RFC 9112 §6.1, §6.3). */
static int check_transfer_encoding(vg_http_reader_t *r)
{
  const char *v = r->buf + r->off + r->te_off;
  size_t n = r->te_len, i = 0, nchunked = 0, nother = 0;
  bool chunked_last = false;
  for (;;) {
    while (i < n && is_ows((unsigned char)v[i])) {
      i++;
    }
    size_t s = i;
    while (i < n && is_tchar((unsigned char)v[i])) {
      i++;
    }
    size_t e = i;
    while (i < n && is_ows((unsigned char)v[i])) {
      i++;
    }
    if (e == s || (i < n && v[i] != ',')) {
      return reader_fail(r, 400, "malformed Transfer-Encoding");
    }
    chunked_last = eq_nocase(v + s, e - s, "chunked");
    if (chunked_last) {
      nchunked++;
    } else {
      nother++;
    }
    if (i >= n) {
      break;
    }
    i++; /* the comma */
  }
  if (nchunked > 1 || (nchunked == 1 && !chunked_last)) {
    return reader_fail(r, 400, "chunked must be the last transfer coding, once");
  }
  if (nother > 0) {
    return reader_fail(r, 501, "transfer codings other than chunked are not supported");
  }
  r->chunked = true;
  return 0;
}

static bool method_needs_length(const char *m, size_t n)
{
  return (n == 4 && memcmp(m, "POST", 4) == 0) || (n == 3 && memcmp(m, "PUT", 3) == 0) ||
         (n == 5 && memcmp(m, "PATCH", 5) == 0);
}

/* The empty line: decide the framing before a byte of the body is read. */
static int on_head_complete(vg_http_reader_t *r)
{
  if (r->has_te) {
    if (r->minor == 0) {
      return reader_fail(r, 400, "Transfer-Encoding in an HTTP/1.0 request");
    }
    if (r->has_cl) {
      return reader_fail(r, 400, "both Content-Length and Transfer-Encoding");
    }
    int rc = check_transfer_encoding(r);
    if (rc != 0) {
      return rc;
    }
  } else if (!r->has_cl && method_needs_length(r->buf + r->off, r->method_len)) {
    return reader_fail(r, 411, "%.*s needs Content-Length or chunked", (int)r->method_len,
                       r->buf + r->off);
  }
  if (r->has_cl && r->cl > r->lim.max_body) {
    return reader_fail(r, 413, "body of %llu bytes is over the limit of %zu",
                       (unsigned long long)r->cl, r->lim.max_body);
  }
  r->want_continue = r->expect_continue && r->minor == 1 && (r->chunked || r->cl > 0);
  return 1;
}

/* Our scan of the raw head, byte by byte: CRLF line endings only, no control characters, the
 * limits. Returns 0 (needs more), 1 (head complete, well-formed) or an error status. */
static int scan_head(vg_http_reader_t *r)
{
  const unsigned char *b = (const unsigned char *)r->buf + r->off;
  size_t n = r->len - r->off;
  while (r->scan < n) {
    size_t i = r->scan;
    unsigned char c = b[i];
    if (c == '\r') {
      if (i + 1 >= n) {
        return 0;
      }
      if (b[i + 1] != '\n') {
        return reader_fail(r, 400, "bare CR in the request head");
      }
      r->scan = i + 1;
      continue;
    }
    if (c == '\n') {
      if (i == 0 || b[i - 1] != '\r') {
        return reader_fail(r, 400, "bare LF in the request head");
      }
      size_t ls = r->line_start, le = i - 1;
      r->scan = r->line_start = i + 1;
      int rc;
      if (r->hdr_start == 0) {
        rc = on_request_line(r, ls, le);
      } else if (ls == le) {
        r->head_len = i + 1;
        return on_head_complete(r);
      } else {
        rc = on_header_line(r, ls, le);
      }
      if (rc != 0) {
        return rc;
      }
      continue;
    }
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      return reader_fail(r, 400, "control character 0x%02x in the request head", c);
    }
    if (r->hdr_start == 0) {
      if (i - r->line_start >= r->lim.max_request_line) {
        return reader_fail(r, 414, "request line longer than %zu bytes", r->lim.max_request_line);
      }
    } else if (i - r->hdr_start >= r->lim.max_header_bytes) {
      return reader_fail(r, 431, "headers larger than %zu bytes", r->lim.max_header_bytes);
    }
    r->scan = i + 1;
  }
  return 0;
}

/* http_parser callbacks: collect, and check that its reading agrees with ours. */

static vg_http_reader_t *reader_of(http_parser *p)
{
  return p->data;
}

static int cb_stop(vg_http_reader_t *r, int status, const char *why)
{
  r->cb_status = status;
  r->cb_err = why;
  return -1;
}

static int cb_url(http_parser *p, const char *at, size_t n)
{
  vg_http_reader_t *r = reader_of(p);
  return sbuf_append(&r->msg->url, at, n) == 0 ? 0 : cb_stop(r, 500, "out of memory");
}

static int cb_header_field(http_parser *p, const char *at, size_t n)
{
  vg_http_reader_t *r = reader_of(p);
  msg_t *m = r->msg;
  if (r->headers_done) { /* trailers: counted, then dropped (too many: 431 at the end) */
    r->trailer_bytes += n;
    return 0;
  }
  if (m->last_cb != 1) {
    if (m->last_cb == 2 && sbuf_nul(&m->strs) != 0) {
      return cb_stop(r, 500, "out of memory");
    }
    if (m->nh == m->hcap) {
      size_t cap = m->hcap ? m->hcap * 2 : 16;
      void *h = realloc(m->hoff, cap * sizeof *m->hoff);
      if (h == NULL) {
        return cb_stop(r, 500, "out of memory");
      }
      m->hoff = h;
      m->hcap = cap;
    }
    m->hoff[m->nh][0] = m->strs.len;
    m->hoff[m->nh][1] = SIZE_MAX;
    m->nh++;
    m->last_cb = 1;
  }
  return sbuf_append(&m->strs, at, n) == 0 ? 0 : cb_stop(r, 500, "out of memory");
}

static int cb_header_value(http_parser *p, const char *at, size_t n)
{
  vg_http_reader_t *r = reader_of(p);
  msg_t *m = r->msg;
  if (r->headers_done) {
    r->trailer_bytes += n;
    return 0;
  }
  if (m->nh == 0) {
    return cb_stop(r, 400, "header value without a name");
  }
  if (m->last_cb != 2) {
    if (sbuf_nul(&m->strs) != 0) {
      return cb_stop(r, 500, "out of memory");
    }
    m->hoff[m->nh - 1][1] = m->strs.len;
    m->last_cb = 2;
  }
  return sbuf_append(&m->strs, at, n) == 0 ? 0 : cb_stop(r, 500, "out of memory");
}

static size_t strs_add(msg_t *m, const char *s, size_t n, bool *oom)
{
  size_t at = m->strs.len;
  if (sbuf_append(&m->strs, s, n) != 0 || sbuf_nul(&m->strs) != 0) {
    *oom = true;
  }
  return at;
}

static int cb_headers_complete(http_parser *p)
{
  vg_http_reader_t *r = reader_of(p);
  msg_t *m = r->msg;
  bool oom = false;
  if (m->last_cb != 0 && sbuf_nul(&m->strs) != 0) {
    return cb_stop(r, 500, "out of memory");
  }
  size_t empty = strs_add(m, "", 0, &oom);
  /* the parser's reading must be ours: same fields, target and framing */
  if (m->nh != r->nhdr) {
    return cb_stop(r, 400, "header fields disagree");
  }
  if (m->url.len != r->target_len ||
      memcmp(m->url.p, r->buf + r->off + r->target_off, r->target_len) != 0) {
    return cb_stop(r, 400, "request target disagrees");
  }
  if (((p->flags & F_CHUNKED) != 0) != r->chunked || (r->has_cl && p->content_length != r->cl)) {
    return cb_stop(r, 400, "message framing disagrees");
  }
  p->upgrade = 0; /* Upgrade is ignored: the bytes after this request are HTTP */
  m->pub.keep_alive = http_should_keep_alive(p) != 0;
  m->pub.is_head = p->method == HTTP_HEAD;
  const char *method = http_method_str((enum http_method)p->method);
  size_t method_off = strs_add(m, method, strlen(method), &oom);
  const char *q = m->url.len > 0 ? memchr(m->url.p, '?', m->url.len) : NULL;
  size_t plen = q != NULL ? (size_t)(q - m->url.p) : m->url.len;
  size_t path_off = strs_add(m, m->url.p, plen, &oom);
  size_t query_off =
      q != NULL ? strs_add(m, q + 1, m->url.len - plen - 1, &oom) : strs_add(m, "", 0, &oom);
  size_t peer_off = strs_add(m, r->peer, strlen(r->peer), &oom);
  m->headers = calloc(m->nh ? m->nh : 1, sizeof *m->headers);
  if (oom || m->headers == NULL) {
    return cb_stop(r, 500, "out of memory");
  }
  /* strs is final now: point into it */
  char *s = m->strs.p;
  for (size_t i = 0; i < m->nh; i++) {
    char *name = s + m->hoff[i][0];
    for (char *c = name; *c; c++) {
      *c = lower(*c);
    }
    char *val = s + (m->hoff[i][1] == SIZE_MAX ? empty : m->hoff[i][1]);
    while (is_ows((unsigned char)*val)) {
      val++;
    }
    size_t vl = strlen(val);
    while (vl > 0 && is_ows((unsigned char)val[vl - 1])) {
      val[--vl] = '\0';
    }
    m->headers[i].name = name;
    m->headers[i].value = val;
  }
  m->pub.req.method = s + method_off;
  m->pub.req.path = s + path_off;
  m->pub.req.query = s + query_off;
  m->pub.req.peer = s + peer_off;
  m->pub.req.headers = m->headers;
  m->pub.req.nheaders = m->nh;
  r->headers_done = true;
  return 0;
}

static int cb_body(http_parser *p, const char *at, size_t n)
{
  vg_http_reader_t *r = reader_of(p);
  msg_t *m = r->msg;
  if (n > r->lim.max_body - m->body.len) {
    return cb_stop(r, 413, "body over the limit");
  }
  return sbuf_append(&m->body, at, n) == 0 ? 0 : cb_stop(r, 500, "out of memory");
}

static int cb_message_complete(http_parser *p)
{
  vg_http_reader_t *r = reader_of(p);
  r->msg_done = true;
  http_parser_pause(p, 1); /* one request at a time: the next one's bytes stay buffered */
  return 0;
}

static const http_parser_settings reader_settings = {
  .on_url = cb_url,
  .on_header_field = cb_header_field,
  .on_header_value = cb_header_value,
  .on_headers_complete = cb_headers_complete,
  .on_body = cb_body,
  .on_message_complete = cb_message_complete,
};

static int status_of_errno(enum http_errno e)
{
  switch (e) {
    case HPE_INVALID_METHOD:
      return 501;
    case HPE_HEADER_OVERFLOW:
      return 431;
    default:
      return 400;
  }
}

static size_t body_wire_cap(const vg_http_reader_t *r)
{
  size_t cap = r->head_len;
  size_t extra = r->lim.max_body > (SIZE_MAX - READER_FRAMING_SLACK) / 2
                     ? SIZE_MAX
                     : 2 * r->lim.max_body + READER_FRAMING_SLACK;
  return cap > SIZE_MAX - extra ? SIZE_MAX : cap + extra;
}

static int read_body(vg_http_reader_t *r)
{
  size_t cap = body_wire_cap(r);
  size_t n = r->len - r->off;
  if (r->wire <= cap && n > cap - r->wire + 1) {
    n = cap - r->wire + 1; /* at most one byte past the cap */
  }
  size_t got = n > 0 ? http_parser_execute(&r->parser, &reader_settings, r->buf + r->off, n) : 0;
  r->off += got;
  r->wire += got;
  if (r->cb_status != 0) {
    return reader_fail(r, r->cb_status, "%s", r->cb_err);
  }
  /* Trailers over the limit are judged once the message is whole, not as their bytes arrive:
     http_parser reports a span at its end or at the end of the buffer, so a check on arrival
     would make a request that is both malformed and too large a 400 or a 431 depending on
     how it was split. Their bytes are dropped, and the framing cap bounds them meanwhile. */
  if (r->msg_done && r->trailer_bytes > r->lim.max_header_bytes) {
    return reader_fail(r, 431, "trailers too large");
  }
  if (r->msg_done) {
    r->state = R_READY;
    return 1;
  }
  enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
  if (e != HPE_OK) {
    return reader_fail(r, status_of_errno(e), "malformed request (%s)", http_errno_name(e));
  }
  if (got != n) {
    return reader_fail(r, 400, "malformed request");
  }
  if (r->wire > cap) {
    return reader_fail(r, 413, "chunked framing over the limit");
  }
  return 0;
}

int vg_http_reader_next(vg_http_reader_t *r)
{
  switch (r->state) {
    case R_FAILED:
      return r->status;
    case R_READY:
      return 1;
    case R_HEAD: {
      int rc = scan_head(r);
      if (rc != 1) {
        return rc;
      }
      r->msg = calloc(1, sizeof *r->msg);
      if (r->msg == NULL) {
        return reader_fail(r, 500, "out of memory");
      }
      http_parser_init(&r->parser, HTTP_REQUEST);
      r->parser.data = r;
      r->state = R_BODY;
    }
      /* fall through */
    default:
      return read_body(r);
  }
}

vg_http_msg_t *vg_http_reader_take(vg_http_reader_t *r)
{
  if (r->state != R_READY) {
    return NULL;
  }
  msg_t *m = r->msg;
  if (sbuf_nul(&m->body) != 0) {
    reader_fail(r, 500, "out of memory");
    return NULL;
  }
  m->pub.req.body = m->body.p;
  m->pub.req.body_len = m->body.len - 1;
  r->msg = NULL;
  reader_reset(r);
  return &m->pub;
}

/* ---- the server ---- */

/* Bytes one read asks for. */
#define HTTPD_READ_CHUNK ((size_t)16 * 1024)
/* While a request waits for its response, reading goes on (to notice a client that leaves)
 * until this much is buffered unparsed; then it pauses until the response is written. */
#define HTTPD_PAUSE_CAP ((size_t)64 * 1024)
/* After an answer that closes: FIN, then read and drop what the client still sends, for at
 * most this long or this much, so the answer is not lost to a RST. */
#define HTTPD_LINGER_MS 1000
#define HTTPD_LINGER_BYTES ((size_t)1 << 20)

typedef enum { C_READ, C_HANDLER, C_WRITE, C_CLOSING } conn_state_t;
typedef enum { T_NONE, T_FRESH, T_HEADER, T_BODY, T_IDLE, T_LINGER } timer_kind_t;
typedef enum { SLOT_NONE, SLOT_SERVING, SLOT_REFUSING } slot_t;

typedef struct http_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown;
  vg_httpd_t *srv;
  struct http_conn *prev, *next;
  vg_http_reader_t *rd;
  vg_http_exchange_t *x; /* the request at the handler */
  conn_state_t state;
  timer_kind_t timer_kind;
  slot_t slot;
  int open_handles;
  uint32_t nrequests;
  size_t discarded;
  bool reading, closed;
  char peer[64];
} http_conn_t;

struct vg_http_exchange {
  vg_httpd_t *srv;
  http_conn_t *conn;  /* NULL once the connection is gone */
  vg_http_msg_t *msg; /* NULL for the server's own answers */
};

struct vg_httpd {
  uv_loop_t *loop;
  uv_tcp_t listener;
  vg_httpd_limits_t lim;
  vg_http_handler_fn handler;
  void *ud;
  http_conn_t *conns;
  size_t refs; /* the listener, each connection, each exchange */
  size_t nserving, nrefusing;
  bool stopping;
  int port;
  vg_httpd_stats_t stats;
  char scratch[HTTPD_READ_CHUNK]; /* what lingering connections read is dropped here */
};

typedef struct {
  uv_write_t req;
  http_conn_t *conn;
  bool interim;
  char data[];
} http_write_t;

void vg_httpd_limits_default(vg_httpd_limits_t *limits)
{
  *limits = (vg_httpd_limits_t){
    .host = "127.0.0.1",
    .port = 9095,
    .max_body = (size_t)8 << 20,
    .max_request_line = (size_t)8 << 10,
    .max_header_bytes = (size_t)32 << 10,
    .max_headers = 100,
    .header_timeout_ms = 10000,
    .body_timeout_ms = 30000,
    .idle_timeout_ms = 60000,
    .max_requests_per_conn = 1000,
    .max_connections = 1024,
  };
}

static void srv_unref(vg_httpd_t *srv)
{
  if (--srv->refs == 0) {
    free(srv);
  }
}

static void conn_on_close(uv_handle_t *h)
{
  http_conn_t *c = h->data;
  if (--c->open_handles > 0) {
    return;
  }
  vg_httpd_t *srv = c->srv;
  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    srv->conns = c->next;
  }
  if (c->next != NULL) {
    c->next->prev = c->prev;
  }
  if (c->slot == SLOT_SERVING) {
    srv->nserving--;
  } else if (c->slot == SLOT_REFUSING) {
    srv->nrefusing--;
  }
  srv->stats.connections_open--;
  vg_http_reader_free(c->rd);
  free(c);
  srv_unref(srv);
}

static void conn_close(http_conn_t *c)
{
  if (c->closed) {
    return;
  }
  c->closed = true;
  if (c->x != NULL) { /* the handler still has it: vg_http_respond only frees it */
    c->x->conn = NULL;
    c->x = NULL;
  }
  uv_close((uv_handle_t *)&c->tcp, conn_on_close);
  uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

static void conn_on_timer(uv_timer_t *t);

static void conn_arm(http_conn_t *c, timer_kind_t kind)
{
  const vg_httpd_limits_t *l = &c->srv->lim;
  uint64_t ms = kind == T_BODY   ? l->body_timeout_ms
                : kind == T_IDLE ? l->idle_timeout_ms
                : kind == T_LINGER
                    ? (l->idle_timeout_ms < HTTPD_LINGER_MS ? l->idle_timeout_ms : HTTPD_LINGER_MS)
                    : l->header_timeout_ms;
  c->timer_kind = kind;
  uv_timer_start(&c->timer, conn_on_timer, ms, 0);
}

static void conn_disarm(http_conn_t *c)
{
  c->timer_kind = T_NONE;
  uv_timer_stop(&c->timer);
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  (void)suggested;
  http_conn_t *c = h->data;
  if (c->state == C_CLOSING) {
    *buf = uv_buf_init(c->srv->scratch, sizeof c->srv->scratch);
    return;
  }
  size_t avail = 0;
  char *p = vg_http_reader_space(c->rd, HTTPD_READ_CHUNK, &avail);
  *buf =
      uv_buf_init(p, p != NULL ? (unsigned)(avail < HTTPD_PAUSE_CAP ? avail : HTTPD_PAUSE_CAP) : 0);
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(http_conn_t *c)
{
  if (!c->reading && !c->closed) {
    if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read) != 0) {
      conn_close(c);
      return;
    }
    c->reading = true;
  }
}

static void conn_read_stop(http_conn_t *c)
{
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
  }
}

static const char *reason_phrase(int status)
{
  const char *s = http_status_str((enum http_status)status);
  return s != NULL && strcmp(s, "<unknown>") != 0 ? s : "Unknown";
}

/* RFC 7231 §7.1.1.1 IMF-fixdate, independent of the locale. */
static void imf_date(char out[64])
{
  static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
  static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  snprintf(out, 64, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
           months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* An extra header the handler may set: a token name that is not ours, a value without CR, LF
 * or other control characters (no response splitting). */
static bool header_ok(const vg_http_header_t *h)
{
  if (h->name == NULL || h->value == NULL || h->name[0] == '\0') {
    return false;
  }
  for (const char *p = h->name; *p; p++) {
    if (!is_tchar((unsigned char)*p)) {
      return false;
    }
  }
  for (const unsigned char *p = (const unsigned char *)h->value; *p; p++) {
    if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
      return false;
    }
  }
  static const char *const ours[] = { "content-length", "connection", "date", "transfer-encoding" };
  for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++) {
    if (eq_nocase(h->name, strlen(h->name), ours[i])) {
      return false;
    }
  }
  return true;
}

static void conn_on_write(uv_write_t *req, int status);
static void conn_on_shutdown(uv_shutdown_t *req, int status);

static void conn_write(http_conn_t *c, http_write_t *w, size_t len)
{
  w->conn = c;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write) != 0) {
    free(w);
    conn_close(c);
  }
}

static void send_response(http_conn_t *c,
                          const vg_http_msg_t *msg,
                          int status,
                          const vg_http_header_t *headers,
                          size_t nheaders,
                          const char *body,
                          size_t len)
{
  vg_httpd_t *srv = c->srv;
  if (status < 200 || status > 599) {
    status = 500; /* 1xx are the server's; anything else is not a status */
    body = NULL;
    len = 0;
  }
  bool keep = msg != NULL && msg->keep_alive && !srv->stopping &&
              c->nrequests < srv->lim.max_requests_per_conn;
  bool with_length = status != 204 && status != 304;
  bool with_body = with_length && !(msg != NULL && msg->is_head);
  if (body == NULL) {
    len = 0;
  }
  size_t size = 256 + (with_body ? len : 0);
  for (size_t i = 0; i < nheaders; i++) {
    if (header_ok(&headers[i])) {
      size += strlen(headers[i].name) + strlen(headers[i].value) + 4;
    }
  }
  http_write_t *w = malloc(sizeof *w + size);
  if (w == NULL) {
    conn_close(c);
    return;
  }
  w->interim = false;
  char date[64];
  imf_date(date);
  char *p = w->data;
  p += sprintf(p, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, reason_phrase(status), date);
  if (with_length) {
    p += sprintf(p, "Content-Length: %zu\r\n", len);
  }
  p += sprintf(p, "Connection: %s\r\n", keep ? "keep-alive" : "close");
  for (size_t i = 0; i < nheaders; i++) {
    if (header_ok(&headers[i])) {
      p += sprintf(p, "%s: %s\r\n", headers[i].name, headers[i].value);
    }
  }
  *p++ = '\r';
  *p++ = '\n';
  if (with_body && len > 0) {
    memcpy(p, body, len);
    p += len;
  }
  srv->stats.responses[status / 100]++;
  if (msg == NULL && status >= 400) {
    srv->stats.rejected[status - 400]++;
  }
  if (keep) {
    c->state = C_WRITE;
    conn_arm(c, T_IDLE); /* a client that does not read its response */
  } else {
    c->state = C_CLOSING;
    conn_arm(c, T_LINGER); /* bounds the write and the lingering read */
    conn_read_start(c);
  }
  conn_write(c, w, (size_t)(p - w->data));
}

static void respond_error_with(vg_http_exchange_t *x,
                               int status,
                               const char *message,
                               const vg_http_header_t *extra);

/* The server's own answer: a JSON error, then close. */
static void conn_fail(http_conn_t *c, int status, const char *message, const vg_http_header_t *h)
{
  vg_http_exchange_t *x = calloc(1, sizeof *x);
  if (x == NULL) {
    conn_close(c);
    return;
  }
  conn_disarm(c);
  c->state = C_CLOSING;
  x->srv = c->srv;
  x->conn = c;
  c->srv->refs++;
  c->x = x;
  respond_error_with(x, status, message, h);
}

static void send_continue(http_conn_t *c)
{
  static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
  http_write_t *w = malloc(sizeof *w + sizeof line);
  if (w == NULL) {
    conn_close(c);
    return;
  }
  w->interim = true;
  memcpy(w->data, line, sizeof line);
  conn_write(c, w, sizeof line - 1);
}

static void conn_dispatch(http_conn_t *c)
{
  vg_httpd_t *srv = c->srv;
  vg_http_msg_t *msg = vg_http_reader_take(c->rd);
  vg_http_exchange_t *x = msg != NULL ? calloc(1, sizeof *x) : NULL;
  if (x == NULL) {
    vg_http_msg_free(msg);
    conn_close(c);
    return;
  }
  conn_disarm(c);
  c->nrequests++;
  x->srv = srv;
  x->conn = c;
  x->msg = msg;
  srv->refs++;
  c->x = x;
  c->state = C_HANDLER;
  srv->stats.requests++;
  srv->handler(x, &msg->req, srv->ud);
}

/* Parses what is buffered: a request goes to the handler, an error is answered, otherwise the
 * deadline of the phase we are in runs and reading goes on. */
static void conn_process(http_conn_t *c)
{
  int rc = vg_http_reader_next(c->rd);
  if (rc == 1) {
    conn_dispatch(c);
    return;
  }
  if (rc != 0) {
    conn_fail(c, rc, vg_http_reader_error(c->rd), NULL);
    return;
  }
  if (vg_http_reader_want_continue(c->rd)) {
    send_continue(c);
  }
  switch (vg_http_reader_phase(c->rd)) {
    case VG_HTTP_PHASE_IDLE:
      if (c->timer_kind != T_IDLE && c->timer_kind != T_FRESH) {
        conn_arm(c, c->nrequests == 0 ? T_FRESH : T_IDLE);
      }
      break;
    case VG_HTTP_PHASE_HEAD:
      if (c->timer_kind != T_HEADER) {
        conn_arm(c, T_HEADER);
      }
      break;
    default:
      if (c->timer_kind != T_BODY) {
        conn_arm(c, T_BODY);
      }
      break;
  }
  conn_read_start(c);
}

static void conn_on_timer(uv_timer_t *t)
{
  http_conn_t *c = t->data;
  timer_kind_t kind = c->timer_kind;
  c->timer_kind = T_NONE;
  if (c->state == C_READ && (kind == T_HEADER || kind == T_BODY)) {
    conn_fail(c, 408,
              kind == T_HEADER ? "request headers not received in time"
                               : "request body not received in time",
              NULL);
    return;
  }
  conn_close(c); /* idle, never spoke, or done lingering */
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  (void)buf;
  http_conn_t *c = s->data;
  if (nread < 0) {
    conn_close(c); /* EOF or error; a request at the handler is detached */
    return;
  }
  if (nread == 0) {
    return;
  }
  if (c->state == C_CLOSING) {
    c->discarded += (size_t)nread;
    if (c->discarded > HTTPD_LINGER_BYTES) {
      conn_close(c);
    }
    return;
  }
  vg_http_reader_commit(c->rd, (size_t)nread);
  if (c->state == C_READ) {
    conn_process(c);
  } else if (vg_http_reader_pending(c->rd) >= HTTPD_PAUSE_CAP) {
    conn_read_stop(c);
  }
}

static void conn_on_write(uv_write_t *req, int status)
{
  http_write_t *w = (http_write_t *)req;
  http_conn_t *c = w->conn;
  bool interim = w->interim;
  free(w);
  if (c->closed) {
    return;
  }
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (interim) {
    return;
  }
  if (c->state == C_CLOSING) {
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, conn_on_shutdown) != 0) {
      conn_close(c);
    }
    return;
  }
  if (c->srv->stopping) {
    conn_close(c);
    return;
  }
  c->state = C_READ;
  conn_disarm(c);
  conn_process(c); /* a pipelined request may be buffered already */
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
  http_conn_t *c = req->handle->data;
  if (status < 0) {
    conn_close(c);
  }
  /* otherwise wait for the client's EOF or the linger deadline */
}

static void srv_on_connection(uv_stream_t *server, int status)
{
  vg_httpd_t *srv = server->data;
  if (status < 0 || srv->stopping) {
    return;
  }
  http_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return; /* libuv retries the pending connection on the next accept */
  }
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  c->srv = srv;
  c->state = C_CLOSING;
  srv->refs++;
  c->next = srv->conns;
  if (srv->conns != NULL) {
    srv->conns->prev = c;
  }
  srv->conns = c;
  srv->stats.connections_open++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  struct sockaddr_storage ss;
  int sslen = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
    char ip[48] = "";
    int port;
    if (ss.ss_family == AF_INET6) {
      const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
      uv_ip6_name(a, ip, sizeof ip);
      port = ntohs(a->sin6_port);
      snprintf(c->peer, sizeof c->peer, "[%s]:%d", ip, port);
    } else {
      const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
      uv_ip4_name(a, ip, sizeof ip);
      port = ntohs(a->sin_port);
      snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
    }
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (srv->nserving >= srv->lim.max_connections) {
    srv->stats.connections_refused++;
    c->slot = SLOT_REFUSING;
    if (++srv->nrefusing > srv->lim.max_connections) {
      conn_close(c); /* a flood: not even an answer */
      return;
    }
    static const vg_http_header_t retry = { "Retry-After", "1" };
    conn_fail(c, 503, "too many connections", &retry);
    return;
  }
  c->slot = SLOT_SERVING;
  srv->nserving++;
  srv->stats.connections_accepted++;
  c->rd = vg_http_reader_new(&srv->lim, c->peer);
  if (c->rd == NULL) {
    conn_close(c);
    return;
  }
  c->state = C_READ;
  conn_arm(c, T_FRESH);
  conn_read_start(c);
}

static void srv_on_listener_close(uv_handle_t *h)
{
  srv_unref(h->data);
}

vg_httpd_t *vg_httpd_start(uv_loop_t *loop,
                           const vg_httpd_limits_t *limits,
                           vg_http_handler_fn handler,
                           void *ud,
                           char *err,
                           size_t errlen)
{
  vg_httpd_t *srv = calloc(1, sizeof *srv);
  if (srv == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (limits != NULL) {
    srv->lim = *limits;
  } else {
    vg_httpd_limits_default(&srv->lim);
  }
  const char *host = srv->lim.host != NULL ? srv->lim.host : "127.0.0.1";
  srv->lim.host = NULL; /* not ours to keep */
  /* a client that resets while we write must cost an EPIPE, not the process */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
  srv->loop = loop;
  srv->handler = handler;
  srv->ud = ud;
  struct sockaddr_storage ss;
  if (uv_ip4_addr(host, srv->lim.port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, srv->lim.port, (struct sockaddr_in6 *)&ss) != 0) {
    snprintf(err, errlen, "%s:%d: not an IP address", host, srv->lim.port);
    free(srv);
    return NULL;
  }
  uv_tcp_init(loop, &srv->listener);
  srv->listener.data = srv;
  srv->refs = 1;
  int rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
  if (rc == 0) {
    rc = uv_listen((uv_stream_t *)&srv->listener, 511, srv_on_connection);
  }
  int len = sizeof ss;
  if (rc == 0) {
    rc = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
  }
  if (rc != 0) {
    snprintf(err, errlen, "%s:%d: %s", host, srv->lim.port, uv_strerror(rc));
    uv_close((uv_handle_t *)&srv->listener, srv_on_listener_close);
    return NULL;
  }
  srv->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return srv;
}

int vg_httpd_port(const vg_httpd_t *srv)
{
  return srv->port;
}

void vg_httpd_stop(vg_httpd_t *srv)
{
  if (srv == NULL || srv->stopping) {
    return;
  }
  srv->stopping = true;
  uv_close((uv_handle_t *)&srv->listener, srv_on_listener_close);
  for (http_conn_t *c = srv->conns; c != NULL; c = c->next) {
    if (c->state == C_READ) {
      conn_close(c); /* nothing at the handler; lingering ones finish on their own */
    }
  }
}

void vg_http_respond(vg_http_exchange_t *x,
                     int status,
                     const vg_http_header_t *headers,
                     size_t nheaders,
                     const char *body,
                     size_t len)
{
  vg_httpd_t *srv = x->srv;
  http_conn_t *c = x->conn;
  if (c != NULL) {
    c->x = NULL;
    send_response(c, x->msg, status, headers, nheaders, body, len);
  }
  vg_http_msg_free(x->msg);
  free(x);
  srv_unref(srv);
}

static void respond_error_with(vg_http_exchange_t *x,
                               int status,
                               const char *message,
                               const vg_http_header_t *extra)
{
  static const char head[] = "{\"status\":\"error\",\"error\":\"";
  static const char tail[] = "\"}";
  vg_http_header_t hs[2] = { { "Content-Type", "application/json" } };
  size_t nh = 1;
  if (extra != NULL) {
    hs[nh++] = *extra;
  }
  if (message == NULL) {
    message = "";
  }
  size_t n = strlen(message);
  char *body = malloc(sizeof head + sizeof tail + 6 * n);
  if (body == NULL) {
    vg_http_respond(x, status, hs, nh, NULL, 0);
    return;
  }
  char *p = body;
  memcpy(p, head, sizeof head - 1);
  p += sizeof head - 1;
  for (const unsigned char *s = (const unsigned char *)message; *s; s++) {
    if (*s == '"' || *s == '\\') {
      *p++ = '\\';
      *p++ = (char)*s;
    } else if (*s < 0x20 || *s == 0x7f) {
      p += sprintf(p, "\\u%04x", *s);
    } else {
      *p++ = (char)*s;
    }
  }
  memcpy(p, tail, sizeof tail - 1);
  p += sizeof tail - 1;
  vg_http_respond(x, status, hs, nh, body, (size_t)(p - body));
  free(body);
}

void vg_http_respond_error(vg_http_exchange_t *x, int status, const char *message)
{
  respond_error_with(x, status, message, NULL);
}

bool vg_http_exchange_alive(const vg_http_exchange_t *x)
{
  return x->conn != NULL;
}

const char *vg_http_header(const vg_http_request_t *req, const char *name)
{
  for (size_t i = 0; i < req->nheaders; i++) {
    if (strcmp(req->headers[i].name, name) == 0) {
      return req->headers[i].value;
    }
  }
  return NULL;
}

void vg_httpd_stats(const vg_httpd_t *srv, vg_httpd_stats_t *out)
{
  *out = srv->stats;
}
