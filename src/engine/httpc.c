/* libcurl multi on the libuv loop. See httpc.h.
 *
 * curl tells us which sockets to watch (socket_cb) and when to call it back (timer_cb); we
 * watch with uv_poll and uv_timer and hand every event to curl_multi_socket_action, then
 * collect finished transfers. Each socket's poll handle is closed when curl stops using it;
 * a closed poll handle is freed in its close callback, so an fd number curl reuses gets a
 * fresh handle. */
#include "engine/httpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/curlload.h"

#define DEFAULT_TIMEOUT_MS 30000

static const vg_curl_t *C; /* libcurl, loaded by the first vg_httpc_new */
#define DEFAULT_MAX_BYTES (16u << 20)
#define MAX_HEADER_BYTES (256u << 10)

typedef struct sock_ctx sock_ctx_t;

struct vg_httpc {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  int running;
  size_t active;
  size_t open_handles; /* the timer and the poll handles not yet closed */
  bool freeing;
  vg_httpc_req_t *reqs; /* in flight */
  sock_ctx_t *socks;
};

struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  vg_httpc_t *c;
  sock_ctx_t *prev, *next;
};

typedef struct {
  char *buf;
  size_t len, cap;
} buf_t;

struct vg_httpc_req {
  vg_httpc_t *c;
  CURL *easy;
  struct curl_slist *headers;
  char *body;
  buf_t resp_body, resp_headers;
  size_t max_bytes;
  bool too_big;
  vg_httpc_done_fn done;
  void *ud;
  uint64_t started_ns;
  char errbuf[CURL_ERROR_SIZE];
  vg_httpc_req_t *prev, *next;
};

static void maybe_free(vg_httpc_t *c)
{
  if (c->freeing && c->open_handles == 0) {
    free(c);
  }
}

static void handle_closed(uv_handle_t *h)
{
  vg_httpc_t *c = h->data;
  c->open_handles--;
  maybe_free(c);
}

static void sock_closed(uv_handle_t *h)
{
  sock_ctx_t *s = (sock_ctx_t *)h;
  vg_httpc_t *c = s->c;
  free(s);
  c->open_handles--;
  maybe_free(c);
}

static void sock_close(sock_ctx_t *s)
{
  vg_httpc_t *c = s->c;
  if (s->prev != NULL) {
    s->prev->next = s->next;
  } else {
    c->socks = s->next;
  }
  if (s->next != NULL) {
    s->next->prev = s->prev;
  }
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, sock_closed);
}

static bool buf_add(buf_t *b, const char *p, size_t n)
{
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) {
      cap *= 2;
    }
    char *nb = realloc(b->buf, cap);
    if (nb == NULL) {
      return false;
    }
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, p, n);
  b->len += n;
  b->buf[b->len] = '\0';
  return true;
}

/* ---- requests ---- */

static void req_unlink(vg_httpc_req_t *r)
{
  vg_httpc_t *c = r->c;
  if (r->prev != NULL) {
    r->prev->next = r->next;
  } else {
    c->reqs = r->next;
  }
  if (r->next != NULL) {
    r->next->prev = r->prev;
  }
  c->active--;
}

static void req_free(vg_httpc_req_t *r)
{
  C->multi_remove_handle(r->c->multi, r->easy);
  C->easy_cleanup(r->easy);
  C->slist_free_all(r->headers);
  free(r->body);
  free(r->resp_body.buf);
  free(r->resp_headers.buf);
  free(r);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
  vg_httpc_req_t *r = ud;
  size_t len = size * n;
  if (r->resp_body.len + len > r->max_bytes) {
    r->too_big = true;
    return 0; /* curl aborts with CURLE_WRITE_ERROR */
  }
  return buf_add(&r->resp_body, p, len) ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
  vg_httpc_req_t *r = ud;
  size_t len = size * n;
  if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
    r->resp_headers.len = 0; /* a new response (after a redirect or 100-continue) */
    return len;
  }
  if (r->resp_headers.len + len > MAX_HEADER_BYTES) {
    return 0;
  }
  if (len <= 2) {
    return len; /* the blank line */
  }
  return buf_add(&r->resp_headers, p, len) ? len : 0;
}

static const char *error_name(vg_httpc_req_t *r, CURLcode rc)
{
  switch (rc) {
    case CURLE_OK:
      return NULL;
    case CURLE_COULDNT_CONNECT: {
      long os = 0;
      C->easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os);
      return os == ECONNREFUSED ? "ECONNREFUSED" : "ECONNECT";
    }
    case CURLE_OPERATION_TIMEDOUT:
      return "ETIMEDOUT";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return "ENOTFOUND";
    case CURLE_WRITE_ERROR:
      return r->too_big ? "ETOOBIG" : "EIO";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
      return "ETLS";
    case CURLE_TOO_MANY_REDIRECTS:
      return "EREDIRECT";
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return "EINVAL";
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING:
      return "EPROTO";
    default:
      return "EIO";
  }
}

static void finish(vg_httpc_req_t *r, CURLcode rc)
{
  vg_httpc_resp_t resp = { 0 };
  resp.error = error_name(r, rc);
  if (resp.error == NULL) {
    C->easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
  }
  if (resp.error != NULL) {
    resp.detail = r->too_big             ? "the response is larger than max_bytes"
                  : r->errbuf[0] != '\0' ? r->errbuf
                                         : C->easy_strerror(rc);
  }
  resp.headers = r->resp_headers.buf != NULL ? r->resp_headers.buf : "";
  resp.headers_len = r->resp_headers.len;
  resp.body = r->resp_body.buf != NULL ? r->resp_body.buf : "";
  resp.body_len = r->resp_body.len;
  resp.elapsed = (double)(uv_hrtime() - r->started_ns) / 1e9;
  req_unlink(r);
  r->done(r->ud, &resp);
  req_free(r);
}

static void collect(vg_httpc_t *c)
{
  CURLMsg *m;
  int left;
  while ((m = C->multi_info_read(c->multi, &left)) != NULL) {
    if (m->msg == CURLMSG_DONE) {
      vg_httpc_req_t *r = NULL;
      C->easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
      CURLcode rc = m->data.result;
      finish(r, rc);
    }
  }
}

/* ---- curl's callbacks ---- */

static void on_poll(uv_poll_t *h, int status, int events)
{
  sock_ctx_t *s = (sock_ctx_t *)h;
  vg_httpc_t *c = s->c;
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    flags |= (events & UV_READABLE) ? CURL_CSELECT_IN : 0;
    flags |= (events & UV_WRITABLE) ? CURL_CSELECT_OUT : 0;
  }
  C->multi_socket_action(c->multi, s->fd, flags, &c->running);
  collect(c);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
  (void)easy;
  vg_httpc_t *c = userp;
  sock_ctx_t *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      C->multi_assign(c->multi, fd, NULL);
      sock_close(s);
    }
    return 0;
  }
  if (s == NULL) {
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
      return -1;
    }
    if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->fd = fd;
    s->c = c;
    s->next = c->socks;
    if (c->socks != NULL) {
      c->socks->prev = s;
    }
    c->socks = s;
    c->open_handles++;
    C->multi_assign(c->multi, fd, s);
  }
  int events = 0;
  events |= (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ? UV_READABLE : 0;
  events |= (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ? UV_WRITABLE : 0;
  uv_poll_start(&s->poll, events, on_poll);
  return 0;
}

static void on_timer(uv_timer_t *t)
{
  vg_httpc_t *c = t->data;
  C->multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &c->running);
  collect(c);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
  (void)multi;
  vg_httpc_t *c = userp;
  if (timeout_ms < 0) {
    uv_timer_stop(&c->timer);
  } else {
    uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
  }
  return 0;
}

/* ---- the API ---- */

vg_httpc_t *vg_httpc_new(uv_loop_t *loop)
{
  char why[256];
  if (C == NULL && (C = vg_curl(why, sizeof(why))) == NULL) {
    return NULL;
  }
  vg_httpc_t *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return NULL;
  }
  c->loop = loop;
  c->multi = C->multi_init();
  if (c->multi == NULL) {
    free(c);
    return NULL;
  }
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->open_handles = 1;
  C->multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  C->multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  C->multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  C->multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  C->multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 64L);
  return c;
}

vg_httpc_req_t *vg_httpc_start(vg_httpc_t *c,
                               const vg_httpc_opts_t *o,
                               vg_httpc_done_fn done,
                               void *ud,
                               char *err,
                               size_t errlen)
{
  if (o->url == NULL ||
      (strncasecmp(o->url, "http://", 7) != 0 && strncasecmp(o->url, "https://", 8) != 0)) {
    snprintf(err, errlen, "EINVAL: only http:// and https:// URLs");
    return NULL;
  }
  vg_httpc_req_t *r = calloc(1, sizeof(*r));
  if (r == NULL || (r->easy = C->easy_init()) == NULL) {
    free(r);
    snprintf(err, errlen, "ENOMEM: out of memory");
    return NULL;
  }
  r->c = c;
  r->done = done;
  r->ud = ud;
  r->max_bytes = o->max_bytes ? o->max_bytes : DEFAULT_MAX_BYTES;
  CURL *e = r->easy;
  bool ok = true;
  for (size_t i = 0; i < o->nheaders && ok; i++) {
    struct curl_slist *h = C->slist_append(r->headers, o->headers[i]);
    ok = h != NULL;
    r->headers = h != NULL ? h : r->headers;
  }
  if (ok && o->body != NULL) {
    r->body = malloc(o->body_len + 1);
    ok = r->body != NULL;
    if (ok) {
      memcpy(r->body, o->body, o->body_len);
      C->easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
      C->easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    }
  }
  uint64_t timeout = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
  ok = ok && C->easy_setopt(e, CURLOPT_URL, o->url) == CURLE_OK;
  C->easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method != NULL ? o->method : "GET");
  if (o->method != NULL && strcmp(o->method, "HEAD") == 0) {
    C->easy_setopt(e, CURLOPT_NOBODY, 1L);
  }
  C->easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  C->easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout);
  C->easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout < 10000 ? timeout : 10000));
  C->easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  C->easy_setopt(e, CURLOPT_MAXREDIRS, (long)(o->max_redirects < 0 ? 5 : o->max_redirects));
  C->easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  C->easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  C->easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  C->easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  C->easy_setopt(e, CURLOPT_USERAGENT, "vigil");
  C->easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  C->easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  C->easy_setopt(e, CURLOPT_WRITEDATA, r);
  C->easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  C->easy_setopt(e, CURLOPT_HEADERDATA, r);
  C->easy_setopt(e, CURLOPT_PRIVATE, r);
  if (!ok) {
    snprintf(err, errlen, "EINVAL: cannot use the URL or headers");
    C->easy_cleanup(e);
    C->slist_free_all(r->headers);
    free(r->body);
    free(r);
    return NULL;
  }
  r->started_ns = uv_hrtime();
  r->next = c->reqs;
  if (c->reqs != NULL) {
    c->reqs->prev = r;
  }
  c->reqs = r;
  c->active++;
  if (C->multi_add_handle(c->multi, e) != CURLM_OK) {
    req_unlink(r);
    C->easy_cleanup(e);
    C->slist_free_all(r->headers);
    free(r->body);
    free(r);
    snprintf(err, errlen, "EIO: cannot start the request");
    return NULL;
  }
  return r;
}

void vg_httpc_cancel(vg_httpc_req_t *r)
{
  if (r == NULL) {
    return;
  }
  req_unlink(r);
  req_free(r);
}

size_t vg_httpc_active(const vg_httpc_t *c)
{
  return c->active;
}

void vg_httpc_free(vg_httpc_t *c)
{
  if (c == NULL) {
    return;
  }
  while (c->reqs != NULL) {
    vg_httpc_cancel(c->reqs);
  }
  C->multi_cleanup(c->multi); /* may still report sockets it closes */
  c->multi = NULL;
  while (c->socks != NULL) {
    sock_close(c->socks);
  }
  c->freeing = true;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, handle_closed);
}
