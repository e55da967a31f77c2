/* Tests for src/engine/httpd.c: real sockets on 127.0.0.1 (port 0) against a real loop that the
 * test drives. Valid requests (Content-Length, chunked, keep-alive, pipelining with an
 * asynchronous handler, HEAD, 100-continue), every status the server answers by itself with the
 * connection closed after it, the deadlines, the connection cap, a client that leaves before
 * the response, and stopping with a request in flight. The request reader is also driven
 * directly, to show its verdicts do not depend on how the bytes are split. */
#include "engine/httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/httpd_parse.h"
#include "test_support.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define WAIT_MS 3000 /* upper bound for anything that should happen; tests end sooner */

enum { MODE_SYNC, MODE_ASYNC, MODE_HOLD };

typedef struct {
  uv_loop_t loop;
  vg_httpd_t *srv;
  vg_httpd_limits_t lim;
  int port;
  int mode;
  int calls;
  int answered;            /* MODE_ASYNC: responses sent */
  int answered_at_call[4]; /* MODE_ASYNC: how many were sent when call i arrived */
  char method[16], path[256], query[256], ctype[64], peer[64];
  char body[4096];
  size_t body_len;
  vg_http_exchange_t *held[4];
  int nheld;
} fixture_t;

typedef struct {
  char data[1 << 16];
  size_t len;
  bool eof;
} rx_t;

/* ---- the handler ---- */

static void echo_body(const vg_http_request_t *req, char *out, size_t cap)
{
  snprintf(out, cap, "%s %s%s%.*s", req->method, req->path, req->body_len ? " " : "",
           (int)req->body_len, req->body);
}

typedef struct {
  uv_timer_t timer;
  vg_http_exchange_t *x;
  int *answered;
  char body[512];
} later_t;

static void later_closed(uv_handle_t *h)
{
  free(h->data);
}

static void later_fire(uv_timer_t *t)
{
  later_t *l = t->data;
  vg_http_respond(l->x, 200, NULL, 0, l->body, strlen(l->body));
  (*l->answered)++;
  uv_close((uv_handle_t *)&l->timer, later_closed);
}

static void handler(vg_http_exchange_t *x, const vg_http_request_t *req, void *ud)
{
  fixture_t *f = ud;
  f->calls++;
  snprintf(f->method, sizeof f->method, "%s", req->method);
  snprintf(f->path, sizeof f->path, "%s", req->path);
  snprintf(f->query, sizeof f->query, "%s", req->query);
  snprintf(f->peer, sizeof f->peer, "%s", req->peer);
  const char *ct = vg_http_header(req, "content-type");
  snprintf(f->ctype, sizeof f->ctype, "%s", ct != NULL ? ct : "");
  assert_true(req->body_len < sizeof f->body);
  assert_int_equal(req->body[req->body_len], '\0');
  memcpy(f->body, req->body, req->body_len + 1);
  f->body_len = req->body_len;
  if (f->mode == MODE_HOLD) {
    assert_true(f->nheld < (int)COUNT(f->held));
    f->held[f->nheld++] = x;
    return;
  }
  if (f->mode == MODE_ASYNC) {
    /* the first answer comes late: a server that did not serialize would answer the second
     * one first */
    later_t *l = calloc(1, sizeof *l);
    assert_non_null(l);
    l->x = x;
    l->answered = &f->answered;
    if (f->calls <= (int)COUNT(f->answered_at_call)) {
      f->answered_at_call[f->calls - 1] = f->answered;
    }
    echo_body(req, l->body, sizeof l->body);
    uv_timer_init(&f->loop, &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, later_fire, f->calls == 1 ? 40 : 1, 0);
    return;
  }
  char body[512];
  echo_body(req, body, sizeof body);
  const vg_http_header_t h[] = { { "Content-Type", "text/plain" },
                                 { "X-Bad", "a\r\nSet-Cookie: x=1" } };
  vg_http_respond(x, 200, h, COUNT(h), body, strlen(body));
}

/* ---- the fixture: server, loop, client sockets ---- */

static void fx_init(fixture_t *f)
{
  memset(f, 0, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  vg_httpd_limits_default(&f->lim);
  f->lim.port = 0;
  f->lim.max_body = 1024;
  f->lim.max_request_line = 256;
  f->lim.max_header_bytes = 1024;
  f->lim.max_headers = 16;
  f->lim.header_timeout_ms = 2000;
  f->lim.body_timeout_ms = 2000;
  f->lim.idle_timeout_ms = 2000;
}

static void fx_start(fixture_t *f)
{
  char err[256] = "";
  f->srv = vg_httpd_start(&f->loop, &f->lim, handler, f, err, sizeof err);
  if (f->srv == NULL) {
    fail_msg("vg_httpd_start: %s", err);
  }
  f->port = vg_httpd_port(f->srv);
  assert_true(f->port > 0);
}

static void pump(fixture_t *f, int ms)
{
  uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000u;
  do {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    usleep(200);
  } while (uv_hrtime() < end);
}

/* Stops the server and runs the loop until every handle is closed. */
static void fx_finish(fixture_t *f)
{
  vg_httpd_stop(f->srv);
  uint64_t end = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
  while (uv_loop_alive(&f->loop) && uv_hrtime() < end) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    usleep(200);
  }
  assert_false(uv_loop_alive(&f->loop));
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

static int cli_connect(fixture_t *f)
{
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)f->port) };
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
  return fd;
}

static void cli_send(fixture_t *f, int fd, const char *data, size_t len)
{
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n > 0) {
      data += n;
      len -= (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pump(f, 1);
    } else {
      return; /* the server closed: what it answered is still to be read */
    }
  }
}

static void cli_sends(fixture_t *f, int fd, const char *s)
{
  cli_send(f, fd, s, strlen(s));
}

static void rx_poll(int fd, rx_t *rx)
{
  while (!rx->eof && rx->len < sizeof rx->data - 1) {
    ssize_t n = recv(fd, rx->data + rx->len, sizeof rx->data - 1 - rx->len, 0);
    if (n > 0) {
      rx->len += (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      rx->eof = true; /* FIN, or a reset */
    }
  }
  rx->data[rx->len] = '\0';
}

/* Complete responses in rx (HEAD answers carry Content-Length but no body). */
static size_t count_responses(const rx_t *rx, bool head_only)
{
  size_t pos = 0, n = 0;
  while (pos < rx->len) {
    const char *start = rx->data + pos;
    const char *end = strstr(start, "\r\n\r\n");
    if (end == NULL) {
      break;
    }
    size_t hlen = (size_t)(end - start) + 4;
    size_t blen = 0;
    const char *cl = strstr(start, "\r\nContent-Length: ");
    if (cl != NULL && cl < end && !head_only) {
      blen = (size_t)strtoul(cl + 18, NULL, 10);
    }
    if (pos + hlen + blen > rx->len) {
      break;
    }
    pos += hlen + blen;
    n++;
  }
  return n;
}

/* Reads until `want` complete responses (0: until EOF), EOF, or WAIT_MS. */
static void rx_wait(fixture_t *f, int fd, rx_t *rx, size_t want, bool head_only)
{
  uint64_t end = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
  while (uv_hrtime() < end) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    rx_poll(fd, rx);
    if (rx->eof || (want > 0 && count_responses(rx, head_only) >= want)) {
      return;
    }
    usleep(200);
  }
}

/* The body of the response that starts at `resp`. */
static const char *body_of(const char *resp)
{
  const char *e = strstr(resp, "\r\n\r\n");
  assert_non_null(e);
  return e + 4;
}

static void assert_prefix(const char *s, const char *prefix)
{
  if (strncmp(s, prefix, strlen(prefix)) != 0) {
    fail_msg("want a response starting with\n  %s\ngot\n  %.200s", prefix, s);
  }
}

static void assert_contains(const char *s, const char *part)
{
  if (strstr(s, part) == NULL) {
    fail_msg("want %s in\n%.400s", part, s);
  }
}

/* ---- valid requests ---- */

static void test_post_with_content_length(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  fx_start(&f);
  int fd = cli_connect(&f);
  cli_sends(&f, fd,
            "POST /api/v2/alerts?dry=1&x=%20 HTTP/1.1\r\nHost: vigil\r\n"
            "Content-Type:  application/json \r\nContent-Length: 5\r\n\r\nhello");
  rx_t rx = { .len = 0 };
  rx_wait(&f, fd, &rx, 1, false);
  assert_prefix(rx.data, "HTTP/1.1 200 OK\r\n");
  assert_contains(rx.data, "\r\nContent-Length: 25\r\n");
  assert_contains(rx.data, "\r\nConnection: keep-alive\r\n");
  assert_contains(rx.data, "\r\nContent-Type: text/plain\r\n");
  assert_null(strstr(rx.data, "Set-Cookie")); /* a header with CRLF is dropped */
  assert_string_equal(body_of(rx.data), "POST /api/v2/alerts hello");
  /* Date: IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT" */
  const char *d = strstr(rx.data, "\r\nDate: ");
  assert_non_null(d);
  assert_int_equal(strstr(d + 2, "\r\n") - (d + 8), 29);
  assert_memory_equal(d + 8 + 25, " GMT", 4);
  assert_false(rx.eof);
  assert_string_equal(f.method, "POST");
  assert_string_equal(f.path, "/api/v2/alerts");
  assert_string_equal(f.query, "dry=1&x=%20");
  assert_string_equal(f.ctype, "application/json");
  assert_string_equal(f.body, "hello");
  assert_int_equal(strncmp(f.peer, "127.0.0.1:", 10), 0);
  close(fd);
  pump(&f, 20);
  vg_httpd_stats_t st;
  vg_httpd_stats(f.srv, &st);
  assert_int_equal(st.requests, 1);
  assert_int_equal(st.responses[2], 1);
  assert_int_equal(st.connections_accepted, 1);
  assert_int_equal(st.connections_open, 0);
  fx_finish(&f);
}

static void test_chunked_body(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  fx_start(&f);
  int fd = cli_connect(&f);
  cli_sends(&f, fd,
            "POST /in HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
  rx_t rx = { .len = 0 };
  rx_wait(&f, fd, &rx, 1, false);
  assert_prefix(rx.data, "HTTP/1.1 200 OK\r\n");
  assert_string_equal(body_of(rx.data), "POST /in hello world");
  assert_int_equal(f.body_len, 11);
  assert_string_equal(f.body, "hello world");
  close(fd);
  fx_finish(&f);
}

static void test_keep_alive_three_requests(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  fx_start(&f);
  int fd = cli_connect(&f);
  rx_t rx = { .len = 0 };
  for (size_t i = 1; i <= 3; i++) {
    char req[128];
    snprintf(req, sizeof req, "GET /r%zu HTTP/1.1\r\nHost: a\r\n\r\n", i);
    cli_sends(&f, fd, req);
    rx_wait(&f, fd, &rx, i, false);
    assert_int_equal(count_responses(&rx, false), i);
  }
  assert_false(rx.eof);
  const char *r3 = strstr(rx.data, "GET /r3");
  assert_non_null(r3);
  assert_int_equal(f.calls, 3);
  vg_httpd_stats_t st;
  vg_httpd_stats(f.srv, &st);
  assert_int_equal(st.connections_accepted, 1);
  assert_int_equal(st.requests, 3);
  close(fd);
  fx_finish(&f);
}

static void test_pipelined_answered_in_order(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  f.mode = MODE_ASYNC;
  fx_start(&f);
  int fd = cli_connect(&f);
  cli_sends(&f, fd,
            "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
            "POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
  rx_t rx = { .len = 0 };
  rx_wait(&f, fd, &rx, 2, false);
  assert_int_equal(count_responses(&rx, false), 2);
  const char *one = strstr(rx.data, "GET /one");
  const char *two = strstr(rx.data, "POST /two abc");
  assert_non_null(one);
  assert_non_null(two);
  assert_true(one < two);
  assert_int_equal(f.calls, 2);
  /* the second reached the handler only after the first was answered */
  assert_int_equal(f.answered_at_call[0], 0);
  assert_int_equal(f.answered_at_call[1], 1);
  close(fd);
  fx_finish(&f);
}

static void test_head_has_no_body(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  fx_start(&f);
  int fd = cli_connect(&f);
  cli_sends(&f, fd, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n");
  rx_t rx = { .len = 0 };
  rx_wait(&f, fd, &rx, 1, true);
  assert_prefix(rx.data, "HTTP/1.1 200 OK\r\n");
  assert_contains(rx.data, "\r\nContent-Length: 7\r\n"); /* "HEAD /h" */
  assert_string_equal(body_of(rx.data), "");
  /* the next response follows right after the head: no stray body bytes in between */
  cli_sends(&f, fd, "GET /g HTTP/1.1\r\nHost: a\r\n\r\n");
  rx_t rx2 = { .len = 0 };
  rx_wait(&f, fd, &rx2, 1, false);
  assert_prefix(rx2.data, "HTTP/1.1 200 OK\r\n");
  assert_string_equal(body_of(rx2.data), "GET /g");
  close(fd);
  fx_finish(&f);
}

static void test_connection_close_honoured(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  fx_start(&f);
  static const char *const closing[] = {
    "GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET /c HTTP/1.0\r\n\r\n",
  };
  for (size_t i = 0; i < COUNT(closing); i++) {
    int fd = cli_connect(&f);
    cli_sends(&f, fd, closing[i]);
    rx_t rx = { .len = 0 };
    rx_wait(&f, fd, &rx, 0, false);
    assert_prefix(rx.data, "HTTP/1.1 200 OK\r\n");
    assert_contains(rx.data, "\r\nConnection: close\r\n");
    assert_string_equal(body_of(rx.data), "GET /c");
    assert_true(rx.eof);
    close(fd);
  }
  /* HTTP/1.0 asking for keep-alive gets it */
  int fd = cli_connect(&f);
  cli_sends(&f, fd, "GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  rx_t rx = { .len = 0 };
  rx_wait(&f, fd, &rx, 1, false);
  assert_contains(rx.data, "\r\nConnection: keep-alive\r\n");
  pump(&f, 20);
  rx_poll(fd, &rx);
  assert_false(rx.eof);
  close(fd);
  fx_finish(&f);
}

static void test_max_requests_per_connection(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  f.lim.max_requests_per_conn = 2;
  fx_start(&f);
  int fd = cli_connect(&f);
  cli_sends(&f, fd, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
  rx_t rx = { .len = 0 };
  rx_wait(&f, fd, &rx, 0, false);
  assert_int_equal(count_responses(&rx, false), 2);
  assert_contains(rx.data, "\r\nConnection: keep-alive\r\n");
  const char *second = strstr(rx.data, "GET /1") + 6;
  assert_prefix(second, "HTTP/1.1 200 OK\r\n");
  assert_contains(second, "\r\nConnection: close\r\n");
  assert_true(rx.eof);
  close(fd);
  fx_finish(&f);
}

static void test_expect_100_continue(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  fx_start(&f);
  int fd = cli_connect(&f);
  cli_sends(&f, fd,
            "PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  rx_t rx = { .len = 0 };
  rx_wait(&f, fd, &rx, 1, false);
  assert_string_equal(rx.data, "HTTP/1.1 100 Continue\r\n\r\n");
  assert_int_equal(f.calls, 0);
  cli_sends(&f, fd, "data");
  rx_wait(&f, fd, &rx, 2, false);
  assert_contains(rx.data, "\r\n\r\nHTTP/1.1 200 OK\r\n");
  assert_string_equal(f.body, "data");
  close(fd);
  fx_finish(&f);
}

static void respond_error_handler(vg_http_exchange_t *x, const vg_http_request_t *req, void *ud)
{
  (void)req;
  (void)ud;
  vg_http_respond_error(x, 422, "bad \"alert\"\n\\");
}

static void test_respond_error_is_json(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  char err[128];
  f.srv = vg_httpd_start(&f.loop, &f.lim, respond_error_handler, &f, err, sizeof err);
  assert_non_null(f.srv);
  f.port = vg_httpd_port(f.srv);
  int fd = cli_connect(&f);
  cli_sends(&f, fd, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  rx_t rx = { .len = 0 };
  rx_wait(&f, fd, &rx, 1, false);
  assert_prefix(rx.data, "HTTP/1.1 422 Unprocessable Entity\r\n");
  assert_contains(rx.data, "\r\nContent-Type: application/json\r\n");
  assert_contains(rx.data, "\r\nConnection: keep-alive\r\n"); /* the handler's errors keep it */
  assert_string_equal(body_of(rx.data),
                      "{\"status\":\"error\",\"error\":\"bad \\\"alert\\\"\\u000a\\\\\"}");
  close(fd);
  fx_finish(&f);
}

static void test_bind_error(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  fx_start(&f);
  vg_httpd_limits_t lim = f.lim;
  lim.port = f.port;
  char err[128] = "";
  assert_null(vg_httpd_start(&f.loop, &lim, handler, &f, err, sizeof err));
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%d: address already in use", f.port);
  assert_string_equal(err, want);
  lim.host = "not-an-ip";
  assert_null(vg_httpd_start(&f.loop, &lim, handler, &f, err, sizeof err));
  assert_non_null(strstr(err, "not an IP address"));
  fx_finish(&f);
}

/* ---- what the server refuses by itself ---- */

typedef struct {
  const char *name;
  const char *raw;
  size_t len; /* 0: strlen */
  const char *status_line;
} bad_case_t;

static char long_line[400], many_headers[800], big_header[1300];

static void build_big_cases(void)
{
  /* 414: a 300-byte target with max_request_line 256 */
  snprintf(long_line, sizeof long_line, "GET /%0300d HTTP/1.1\r\nHost: a\r\n\r\n", 0);
  /* 431 by count: 20 fields with max_headers 16 */
  size_t n = (size_t)snprintf(many_headers, sizeof many_headers, "GET / HTTP/1.1\r\n");
  for (int i = 0; i < 20; i++) {
    n += (size_t)snprintf(many_headers + n, sizeof many_headers - n, "X-H%d: v\r\n", i);
  }
  snprintf(many_headers + n, sizeof many_headers - n, "\r\n");
  /* 431 by bytes: one 1100-byte field with max_header_bytes 1024 */
  n = (size_t)snprintf(big_header, sizeof big_header, "GET / HTTP/1.1\r\nX-Big: ");
  memset(big_header + n, 'v', 1100);
  snprintf(big_header + n + 1100, sizeof big_header - n - 1100, "\r\n\r\n");
}

#define H400 "HTTP/1.1 400 Bad Request"

static const bad_case_t bad_cases[] = {
  { "bare CR after the request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 0, H400 },
  { "bare CR in a value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 0, H400 },
  { "bare LF line endings", "GET / HTTP/1.1\nHost: a\n\n", 0, H400 },
  { "bare LF after a header", "GET / HTTP/1.1\r\nHost: a\n\r\n", 0, H400 },
  { "obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 0, H400 },
  { "TE obs-fold", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    0, H400 },
  { "space before colon", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 2\r\n\r\nab", 0, H400 },
  { "CL + TE",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    "0\r\n\r\n",
    0, H400 },
  { "duplicate differing CL",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 0, H400 },
  { "duplicate equal CL",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", 0, H400 },
  { "CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nab", 0, H400 },
  { "negative CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 0, H400 },
  { "overflowing CL",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0, H400 },
  { "CVE-2023-30589",
    "POST / HTTP/1.1\r\nHost: a\r\nX-Abc: \rxTransfer-Encoding: chunked\r\n\r\n"
    "1\r\nA\r\n0\r\n\r\n",
    0, H400 },
  { "NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", 33, H400 },
  { "NUL in a name", "GET / HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n", 33, H400 },
  { "control char in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01z\r\n\r\n", 0, H400 },
  { "TE chunked, identity",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 0, H400 },
  { "TE chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    0, H400 },
  { "TE malformed", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n", 0, H400 },
  { "two TE fields",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
    "\r\n",
    0, H400 },
  { "TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, H400 },
  { "chunk-size overflow",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    "ffffffffffffffffffff\r\nx\r\n",
    0, H400 },
  { "HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, H400 },
  { "two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, H400 },
  { "HTTP/0.9 request line", "GET /\r\n\r\n", 0, H400 },
  { "two spaces in the request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 0, H400 },
  { "empty header name", "GET / HTTP/1.1\r\n: v\r\n\r\n", 0, H400 },
  { "411 POST without length", "POST / HTTP/1.1\r\nHost: a\r\n\r\n", 0,
    "HTTP/1.1 411 Length Required" },
  { "411 PUT without length", "PUT /x HTTP/1.1\r\nHost: a\r\n\r\n", 0,
    "HTTP/1.1 411 Length Required" },
  { "413 by Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\nabc", 0,
    "HTTP/1.1 413 Payload Too Large" },
  { "417 Expect", "GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 0,
    "HTTP/1.1 417 Expectation Failed" },
  { "414 request line", long_line, 0, "HTTP/1.1 414 URI Too Long" },
  { "431 header count", many_headers, 0, "HTTP/1.1 431 Request Header Fields Too Large" },
  { "431 header bytes", big_header, 0, "HTTP/1.1 431 Request Header Fields Too Large" },
  { "501 TE gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 0,
    "HTTP/1.1 501 Not Implemented" },
  { "501 TE gzip, chunked",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0,
    "HTTP/1.1 501 Not Implemented" },
  { "501 unknown method", "FROB / HTTP/1.1\r\nHost: a\r\n\r\n", 0, "HTTP/1.1 501 Not Implemented" },
  { "505 HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 0,
    "HTTP/1.1 505 HTTP Version Not Supported" },
  { "505 HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 0,
    "HTTP/1.1 505 HTTP Version Not Supported" },
};

static size_t case_len(const bad_case_t *c)
{
  return c->len ? c->len : strlen(c->raw);
}

static int case_status(const bad_case_t *c)
{
  return atoi(c->status_line + 9);
}

/* Sends `raw` on a new connection; the answer must be `status_line`, JSON, and the last thing
 * on the connection. */
static void expect_refusal(
    fixture_t *f, const char *name, const char *raw, size_t len, const char *status_line)
{
  int fd = cli_connect(f);
  cli_send(f, fd, raw, len);
  rx_t rx = { .len = 0 };
  rx_wait(f, fd, &rx, 0, false);
  char want[128];
  snprintf(want, sizeof want, "%s\r\n", status_line);
  if (strncmp(rx.data, want, strlen(want)) != 0) {
    fail_msg("%s: want %s, got %.120s", name, status_line, rx.data);
  }
  if (!rx.eof) {
    fail_msg("%s: the connection stayed open", name);
  }
  if (strstr(rx.data, "\r\nConnection: close\r\n") == NULL ||
      strstr(rx.data, "\r\nContent-Type: application/json\r\n") == NULL ||
      strncmp(body_of(rx.data), "{\"status\":\"error\",\"error\":\"", 27) != 0) {
    fail_msg("%s: not a closing JSON error:\n%s", name, rx.data);
  }
  assert_int_equal(count_responses(&rx, false), 1);
  close(fd);
}

static void test_refusals(void **state)
{
  (void)state;
  build_big_cases();
  fixture_t f;
  fx_init(&f);
  fx_start(&f);
  uint64_t want[200] = { 0 };
  for (size_t i = 0; i < COUNT(bad_cases); i++) {
    const bad_case_t *c = &bad_cases[i];
    expect_refusal(&f, c->name, c->raw, case_len(c), c->status_line);
    want[case_status(c) - 400]++;
  }
  /* 413 while counting a chunked body */
  char chunked[2048];
  size_t n = (size_t)snprintf(chunked, sizeof chunked,
                              "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 3; i++) {
    n += (size_t)snprintf(chunked + n, sizeof chunked - n, "190\r\n%0400d\r\n", 0);
  }
  expect_refusal(&f, "413 by chunked", chunked, n, "HTTP/1.1 413 Payload Too Large");
  want[13]++;
  assert_int_equal(f.calls, 0); /* the handler never saw any of them */
  pump(&f, 20);
  vg_httpd_stats_t st;
  vg_httpd_stats(f.srv, &st);
  for (size_t s = 0; s < 200; s++) {
    if (st.rejected[s] != want[s]) {
      fail_msg("rejected[%zu]: %llu, want %llu", s + 400, (unsigned long long)st.rejected[s],
               (unsigned long long)want[s]);
    }
  }
  assert_int_equal(st.responses[4] + st.responses[5], COUNT(bad_cases) + 1);
  assert_int_equal(st.requests, 0);
  assert_int_equal(st.connections_open, 0);
  fx_finish(&f);
}

/* The reader's verdict is the same whether the bytes come at once or one by one. */
static void test_reader_split_invariance(void **state)
{
  (void)state;
  build_big_cases();
  vg_httpd_limits_t lim;
  vg_httpd_limits_default(&lim);
  lim.max_body = 1024;
  lim.max_request_line = 256;
  lim.max_header_bytes = 1024;
  lim.max_headers = 16;
  for (size_t i = 0; i < COUNT(bad_cases); i++) {
    const bad_case_t *c = &bad_cases[i];
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      vg_http_reader_t *r = vg_http_reader_new(&lim, "test");
      assert_non_null(r);
      int rc = 0;
      size_t len = case_len(c);
      for (size_t at = 0; at < len && rc == 0;) {
        size_t step = bytewise ? 1 : len;
        assert_int_equal(vg_http_reader_feed(r, c->raw + at, step), 0);
        at += step;
        rc = vg_http_reader_next(r);
      }
      if (rc != case_status(c)) {
        fail_msg("%s (%s): %d (%s), want %d", c->name, bytewise ? "bytewise" : "whole", rc,
                 vg_http_reader_error(r), case_status(c));
      }
      assert_true(vg_http_reader_error(r)[0] != '\0');
      vg_http_reader_free(r);
    }
  }
  /* the reasons name the fault (obs-fold would also fail as a bad field name) */
  static const struct {
    const char *raw, *why;
  } reasons[] = {
    { "GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", "obsolete line folding in the headers" },
    { "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", "bare CR in the request head" },
    { "GET / HTTP/1.1\nHost: a\n\n", "bare LF in the request head" },
    { "PRI * HTTP/2.0\r\n\r\n", "HTTP/2 connection preface on an HTTP/1.1 server" },
  };
  for (size_t i = 0; i < COUNT(reasons); i++) {
    vg_http_reader_t *r = vg_http_reader_new(&lim, NULL);
    assert_int_equal(vg_http_reader_feed(r, reasons[i].raw, strlen(reasons[i].raw)), 0);
    assert_int_equal(vg_http_reader_next(r), 400);
    assert_string_equal(vg_http_reader_error(r), reasons[i].why);
    assert_int_equal(vg_http_reader_next(r), 400); /* it stays failed */
    vg_http_reader_free(r);
  }
  /* two pipelined requests, byte by byte: two messages, then nothing left */
  static const char two[] =
      "\r\nPOST /a?q HTTP/1.1\r\nHost: h\r\nX-Mixed-Case:  v v \r\nContent-Length: 2\r\n\r\nxy"
      "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
  vg_http_reader_t *r = vg_http_reader_new(&lim, "peer");
  int got = 0;
  for (size_t at = 0; at < sizeof two - 1; at++) {
    assert_int_equal(vg_http_reader_feed(r, two + at, 1), 0);
    int rc;
    while ((rc = vg_http_reader_next(r)) == 1) {
      vg_http_msg_t *m = vg_http_reader_take(r);
      assert_non_null(m);
      if (got++ == 0) {
        assert_string_equal(m->req.method, "POST");
        assert_string_equal(m->req.path, "/a");
        assert_string_equal(m->req.query, "q");
        assert_string_equal(vg_http_header(&m->req, "x-mixed-case"), "v v");
        assert_string_equal(m->req.body, "xy");
        assert_string_equal(m->req.peer, "peer");
        assert_true(m->keep_alive);
      } else {
        assert_string_equal(m->req.method, "GET");
        assert_string_equal(m->req.path, "/b");
        assert_string_equal(m->req.query, "");
        assert_int_equal(m->req.body_len, 0);
        assert_string_equal(m->req.body, "");
        assert_null(vg_http_header(&m->req, "content-length"));
      }
      vg_http_msg_free(m);
    }
    assert_int_equal(rc, 0);
  }
  assert_int_equal(got, 2);
  assert_int_equal(vg_http_reader_pending(r), 0);
  assert_int_equal(vg_http_reader_phase(r), VG_HTTP_PHASE_IDLE);
  vg_http_reader_free(r);
}

/* ---- deadlines and caps ---- */

static void test_slowloris_headers_408(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  f.lim.header_timeout_ms = 60;
  fx_start(&f);
  /* a complete, valid request trickled a byte every 10 ms: the deadline is for the whole
   * head, not between bytes, so it never reaches the handler */
  static const char req[] = "GET /slow HTTP/1.1\r\nHost: a\r\nX-Pad: aaaaaaaaaaaaaaaa\r\n\r\n";
  int fd = cli_connect(&f);
  rx_t rx = { .len = 0 };
  for (size_t i = 0; i < sizeof req - 1 && !rx.eof && rx.len == 0; i++) {
    cli_send(&f, fd, req + i, 1);
    pump(&f, 10);
    rx_poll(fd, &rx);
  }
  rx_wait(&f, fd, &rx, 0, false);
  assert_prefix(rx.data, "HTTP/1.1 408 Request Timeout\r\n");
  assert_contains(rx.data, "\r\nConnection: close\r\n");
  assert_true(rx.eof);
  assert_int_equal(f.calls, 0);
  close(fd);
  fx_finish(&f);
}

static void test_slow_body_408(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  f.lim.body_timeout_ms = 40;
  fx_start(&f);
  int fd = cli_connect(&f);
  cli_sends(&f, fd, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
  rx_t rx = { .len = 0 };
  rx_wait(&f, fd, &rx, 0, false);
  assert_prefix(rx.data, "HTTP/1.1 408 Request Timeout\r\n");
  assert_true(rx.eof);
  assert_int_equal(f.calls, 0);
  vg_httpd_stats_t st;
  vg_httpd_stats(f.srv, &st);
  assert_int_equal(st.rejected[8], 1);
  close(fd);
  fx_finish(&f);
}

static void test_idle_timeout_closes(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  f.lim.idle_timeout_ms = 40;
  f.lim.header_timeout_ms = 40;
  fx_start(&f);
  int fd = cli_connect(&f);
  cli_sends(&f, fd, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  rx_t rx = { .len = 0 };
  rx_wait(&f, fd, &rx, 1, false);
  assert_contains(rx.data, "\r\nConnection: keep-alive\r\n");
  rx_wait(&f, fd, &rx, 0, false); /* then nothing: the server closes */
  assert_true(rx.eof);
  assert_int_equal(count_responses(&rx, false), 1);
  close(fd);
  /* a connection that never sends a byte is closed without an answer */
  fd = cli_connect(&f);
  rx_t rx2 = { .len = 0 };
  rx_wait(&f, fd, &rx2, 0, false);
  assert_true(rx2.eof);
  assert_int_equal(rx2.len, 0);
  close(fd);
  pump(&f, 10);
  vg_httpd_stats_t st;
  vg_httpd_stats(f.srv, &st);
  assert_int_equal(st.rejected[8], 0);
  assert_int_equal(st.connections_open, 0);
  fx_finish(&f);
}

static void test_max_connections_503(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  f.lim.max_connections = 1;
  fx_start(&f);
  int a = cli_connect(&f);
  cli_sends(&f, a, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
  rx_t rxa = { .len = 0 };
  rx_wait(&f, a, &rxa, 1, false);
  assert_prefix(rxa.data, "HTTP/1.1 200 OK\r\n");
  int b = cli_connect(&f);
  rx_t rxb = { .len = 0 };
  rx_wait(&f, b, &rxb, 0, false);
  assert_prefix(rxb.data, "HTTP/1.1 503 Service Unavailable\r\n");
  assert_contains(rxb.data, "\r\nRetry-After: 1\r\n");
  assert_contains(rxb.data, "\r\nConnection: close\r\n");
  assert_true(rxb.eof);
  close(b);
  /* the first one is still served */
  cli_sends(&f, a, "GET /a2 HTTP/1.1\r\nHost: a\r\n\r\n");
  rx_wait(&f, a, &rxa, 2, false);
  assert_int_equal(count_responses(&rxa, false), 2);
  pump(&f, 10);
  vg_httpd_stats_t st;
  vg_httpd_stats(f.srv, &st);
  assert_int_equal(st.connections_accepted, 1);
  assert_int_equal(st.connections_refused, 1);
  assert_int_equal(st.connections_open, 1);
  assert_int_equal(st.rejected[103], 1);
  close(a);
  fx_finish(&f);
}

/* ---- lifetimes ---- */

static void test_client_gone_before_async_respond(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  f.mode = MODE_HOLD;
  fx_start(&f);
  int fd = cli_connect(&f);
  cli_sends(&f, fd, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
  uint64_t end = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
  while (f.nheld == 0 && uv_hrtime() < end) {
    pump(&f, 1);
  }
  assert_int_equal(f.nheld, 1);
  assert_true(vg_http_exchange_alive(f.held[0]));
  close(fd);
  end = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
  while (vg_http_exchange_alive(f.held[0]) && uv_hrtime() < end) {
    pump(&f, 1);
  }
  assert_false(vg_http_exchange_alive(f.held[0]));
  vg_http_respond(f.held[0], 200, NULL, 0, "late", 4); /* only frees it */
  vg_httpd_stats_t st;
  vg_httpd_stats(f.srv, &st);
  assert_int_equal(st.requests, 1);
  assert_int_equal(st.responses[2], 0);
  assert_int_equal(st.connections_open, 0);
  fx_finish(&f);
}

/* Stopping closes idle connections now; the one with a request at the handler gets its
 * response (Connection: close), and the server is freed once the respond is done. */
static void test_stop_with_request_in_flight(void **state)
{
  (void)state;
  fixture_t f;
  fx_init(&f);
  f.mode = MODE_HOLD;
  fx_start(&f);
  int busy = cli_connect(&f);
  int idle = cli_connect(&f);
  cli_sends(&f, busy, "GET /busy HTTP/1.1\r\nHost: a\r\n\r\n");
  uint64_t end = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
  while (f.nheld == 0 && uv_hrtime() < end) {
    pump(&f, 1);
  }
  assert_int_equal(f.nheld, 1);
  vg_httpd_stop(f.srv);
  rx_t rxi = { .len = 0 };
  rx_wait(&f, idle, &rxi, 0, false);
  assert_true(rxi.eof);
  assert_int_equal(rxi.len, 0);
  rx_t rxb = { .len = 0 };
  pump(&f, 20);
  rx_poll(busy, &rxb);
  assert_false(rxb.eof);
  assert_true(vg_http_exchange_alive(f.held[0]));
  assert_true(uv_loop_alive(&f.loop));
  vg_http_respond(f.held[0], 200, NULL, 0, "done", 4);
  rx_wait(&f, busy, &rxb, 0, false);
  assert_prefix(rxb.data, "HTTP/1.1 200 OK\r\n");
  assert_contains(rxb.data, "\r\nConnection: close\r\n");
  assert_string_equal(body_of(rxb.data), "done");
  assert_true(rxb.eof);
  close(busy);
  close(idle);
  fx_finish(&f); /* stop again is a no-op; the loop must empty */
}

int main(void)
{
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_post_with_content_length),
    cmocka_unit_test(test_chunked_body),
    cmocka_unit_test(test_keep_alive_three_requests),
    cmocka_unit_test(test_pipelined_answered_in_order),
    cmocka_unit_test(test_head_has_no_body),
    cmocka_unit_test(test_connection_close_honoured),
    cmocka_unit_test(test_max_requests_per_connection),
    cmocka_unit_test(test_expect_100_continue),
    cmocka_unit_test(test_respond_error_is_json),
    cmocka_unit_test(test_bind_error),
    cmocka_unit_test(test_refusals),
    cmocka_unit_test(test_reader_split_invariance),
    cmocka_unit_test(test_slowloris_headers_408),
    cmocka_unit_test(test_slow_body_408),
    cmocka_unit_test(test_idle_timeout_closes),
    cmocka_unit_test(test_max_connections_503),
    cmocka_unit_test(test_client_gone_before_async_respond),
    cmocka_unit_test(test_stop_with_request_in_flight),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
