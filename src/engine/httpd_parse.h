/* The byte-level half of httpd.c, without sockets: a strict, incremental HTTP/1.1 request reader
 * (our own scan of the raw head, then http_parser as the tokenizer and body decoder). The server
 * runs every connection through it; the unit tests and the fuzz target drive it directly.
 * Not a public API: only httpd.c, tests/unit/engine/httpd_test.c and tests/fuzz/fuzz_http.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "engine/httpd.h"

typedef struct vg_http_reader vg_http_reader_t;

/* One parsed request. `req` points into the message's own memory. */
typedef struct vg_http_msg {
  vg_http_request_t req;
  bool keep_alive; /* HTTP/1.1 without `Connection: close`, or 1.0 with keep-alive */
  bool is_head;    /* answered without a body */
} vg_http_msg_t;

void vg_http_msg_free(vg_http_msg_t *m);

/* What the reader is in the middle of, for the connection's deadlines. */
enum {
  VG_HTTP_PHASE_IDLE = 0, /* no byte of the next request yet */
  VG_HTTP_PHASE_HEAD = 1, /* request line and headers */
  VG_HTTP_PHASE_BODY = 2
};

/* `limits` is copied. `peer` (may be NULL) is copied into each request. NULL when out of
 * memory. */
vg_http_reader_t *vg_http_reader_new(const vg_httpd_limits_t *limits, const char *peer);
void vg_http_reader_free(vg_http_reader_t *r);

/* Room for at least `want` more bytes at the end of the buffer (*avail says how many); fill it
 * and call vg_http_reader_commit(). NULL when out of memory. */
char *vg_http_reader_space(vg_http_reader_t *r, size_t want, size_t *avail);
void vg_http_reader_commit(vg_http_reader_t *r, size_t n);
/* space + copy + commit. 0, or -1 when out of memory. */
int vg_http_reader_feed(vg_http_reader_t *r, const char *data, size_t len);

/* Parses what is buffered. Returns 0 when it needs more bytes, 1 when a request is complete
 * (vg_http_reader_take() it before calling again), or the status (400..505) the server must
 * answer with before closing; vg_http_reader_error() says why. After an error it stays failed.
 * The result depends only on the byte sequence, never on how it was split. */
int vg_http_reader_next(vg_http_reader_t *r);
const char *vg_http_reader_error(const vg_http_reader_t *r);

/* The complete request (caller frees it); the reader starts on the next one, whose first bytes
 * may already be buffered (pipelining). */
vg_http_msg_t *vg_http_reader_take(vg_http_reader_t *r);

int vg_http_reader_phase(const vg_http_reader_t *r);
/* Bytes buffered and not yet parsed. */
size_t vg_http_reader_pending(const vg_http_reader_t *r);
/* True once per request when the head carried `Expect: 100-continue` and the body is still to
 * come: the server sends "100 Continue" then. */
bool vg_http_reader_want_continue(vg_http_reader_t *r);
