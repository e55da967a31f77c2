/* libFuzzer target: arbitrary bytes through the HTTP request reader of httpd.c (our head scan,
 * http_parser, the limits, pipelined requests), as the server runs it for a connection. Fed
 * whole, then again in pieces whose sizes come from the input's hash: nothing may crash or
 * leak, every request must respect the limits, and both runs must reach the same verdicts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/httpd_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_OUTCOMES 16

typedef struct {
  int rc[MAX_OUTCOMES];
  uint64_t sig[MAX_OUTCOMES];
  size_t n;
  int last; /* 0, or the error that ended the run */
  int phase;
  size_t pending;
} outcome_t;

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h = (h ^ s[i]) * 0x100000001b3ULL;
  }
  return h;
}

static uint64_t fnv_str(const char *s, uint64_t h)
{
  return fnv(s, strlen(s) + 1, h);
}

static void check(int ok)
{
  if (!ok) {
    abort();
  }
}

/* Checks what the header promises about a request and returns its fingerprint. */
static uint64_t msg_sig(const vg_http_msg_t *m, const vg_httpd_limits_t *lim)
{
  const vg_http_request_t *q = &m->req;
  check(q->method != NULL && q->path != NULL && q->query != NULL && q->body != NULL);
  check(q->body_len <= lim->max_body && q->body[q->body_len] == '\0');
  check(q->nheaders <= lim->max_headers);
  check(strcmp(q->peer, "fuzz:1") == 0);
  uint64_t h = 0xcbf29ce484222325ULL;
  h = fnv_str(q->method, h);
  h = fnv_str(q->path, h);
  h = fnv_str(q->query, h);
  for (size_t i = 0; i < q->nheaders; i++) {
    const char *name = q->headers[i].name, *value = q->headers[i].value;
    check(name[0] != '\0');
    for (const char *c = name; *c; c++) {
      check(!(*c >= 'A' && *c <= 'Z') && (unsigned char)*c > ' ');
    }
    size_t vl = strlen(value);
    check(vl == 0 ||
          (value[0] != ' ' && value[0] != '\t' && value[vl - 1] != ' ' && value[vl - 1] != '\t'));
    for (const char *c = value; *c; c++) {
      check((unsigned char)*c >= ' ' || *c == '\t');
    }
    check(vg_http_header(q, name) != NULL);
    h = fnv_str(name, h);
    h = fnv_str(value, h);
  }
  h = fnv(q->body, q->body_len, h);
  h = fnv(&m->keep_alive, sizeof m->keep_alive, h);
  return fnv(&m->is_head, sizeof m->is_head, h);
}

static void run(const uint8_t *data, size_t size, uint64_t seed, outcome_t *out)
{
  vg_httpd_limits_t lim;
  vg_httpd_limits_default(&lim);
  lim.max_body = 2048;
  lim.max_request_line = 512;
  lim.max_header_bytes = 2048;
  lim.max_headers = 24;
  memset(out, 0, sizeof *out);
  vg_http_reader_t *r = vg_http_reader_new(&lim, "fuzz:1");
  check(r != NULL);
  size_t pos = 0;
  int rc = 0;
  while (pos < size && rc < 2) {
    size_t step = size - pos;
    if (seed != 0) {
      seed ^= seed << 13;
      seed ^= seed >> 7;
      seed ^= seed << 17;
      size_t s = 1 + (size_t)(seed % 97);
      step = s < step ? s : step;
    }
    check(vg_http_reader_feed(r, (const char *)data + pos, step) == 0);
    pos += step;
    while ((rc = vg_http_reader_next(r)) == 1) {
      vg_http_msg_t *m = vg_http_reader_take(r);
      check(m != NULL);
      if (out->n < MAX_OUTCOMES) {
        out->rc[out->n] = 1;
        out->sig[out->n++] = msg_sig(m, &lim);
      }
      vg_http_msg_free(m);
    }
    (void)vg_http_reader_want_continue(r);
    if (rc != 0) {
      check(rc >= 400 && rc <= 599 && vg_http_reader_error(r)[0] != '\0');
      check(vg_http_reader_next(r) == rc);
      if (out->n < MAX_OUTCOMES) {
        out->rc[out->n++] = rc;
      }
    }
  }
  out->last = rc;
  out->phase = vg_http_reader_phase(r);
  out->pending = vg_http_reader_pending(r);
  vg_http_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  outcome_t whole, split;
  run(data, size, 0, &whole);
  run(data, size, fnv(data, size, 0xcbf29ce484222325ULL) | 1, &split);
  check(whole.n == split.n);
  check(memcmp(whole.rc, split.rc, sizeof whole.rc) == 0);
  check(memcmp(whole.sig, split.sig, sizeof whole.sig) == 0);
  check(whole.last == split.last);
  if (whole.last == 0) { /* no error: the same state at the end */
    check(whole.phase == split.phase && whole.pending == split.pending);
  }
  return 0;
}
