/* A strict HTTP/1.1 server on the libuv loop (alert intake and vigil's own API). Parsing is
 * Debian's libhttp-parser; the strictness is ours, on top (notes/reliability-research.md §5):
 * bare CR or LF, obs-fold, whitespace before a colon, CL+TE, any TE but `chunked`, oversized
 * request lines, headers and bodies are refused with the right status and the connection is
 * closed. Per-connection deadlines for headers and body (slowloris), an idle keep-alive
 * timeout, and a global connection cap. Requests on one connection are answered in order:
 * reading pauses while a request waits for its response.
 *
 * Pure C on libuv: no Lua, no store. The handler decides what a well-formed request means;
 * the server answers everything that is malformed itself, without calling it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct vg_httpd vg_httpd_t;
typedef struct vg_http_exchange vg_http_exchange_t; /* one request waiting for its response */

typedef struct {
  const char *name;  /* lower-cased, NUL-terminated */
  const char *value; /* NUL-terminated; surrounding whitespace removed */
} vg_http_header_t;

typedef struct {
  const char *method; /* "GET", "POST", ... */
  const char *path;   /* the target up to '?', not percent-decoded */
  const char *query;  /* after '?', not decoded; "" when none */
  const vg_http_header_t *headers;
  size_t nheaders;
  const char *body; /* the whole body (chunked decoded), NUL-terminated; "" when none */
  size_t body_len;
  const char *peer; /* "127.0.0.1:54321" */
} vg_http_request_t;

typedef struct {
  const char *host;               /* "127.0.0.1" */
  int port;                       /* 0: any free port (tests); see vg_httpd_port() */
  size_t max_body;                /* 8 MiB: 413 */
  size_t max_request_line;        /* 8 KiB: 414 */
  size_t max_header_bytes;        /* 32 KiB, all header lines together: 431 */
  size_t max_headers;             /* 100: 431 */
  uint64_t header_timeout_ms;     /* 10 s from the first byte to the end of the headers: 408 */
  uint64_t body_timeout_ms;       /* 30 s for the whole body: 408 */
  uint64_t idle_timeout_ms;       /* 60 s between requests on a kept-alive connection: close */
  uint32_t max_requests_per_conn; /* 1000, then Connection: close */
  uint32_t max_connections;       /* 1024 open at once; beyond: 503 + Retry-After, close */
} vg_httpd_limits_t;

void vg_httpd_limits_default(vg_httpd_limits_t *limits);

/* Called on the loop for each complete, well-formed request. The handler calls
 * vg_http_respond() exactly once for `x`, now or later (after an asynchronous commit); the
 * request's memory stays valid until then. */
typedef void (*vg_http_handler_fn)(vg_http_exchange_t *x, const vg_http_request_t *req, void *ud);

/* Binds and listens. Returns NULL with a message in err (e.g. "127.0.0.1:9095: address
 * already in use"). */
vg_httpd_t *vg_httpd_start(uv_loop_t *loop,
                           const vg_httpd_limits_t *limits,
                           vg_http_handler_fn handler,
                           void *ud,
                           char *err,
                           size_t errlen);

/* The port actually bound (useful with port 0). */
int vg_httpd_port(const vg_httpd_t *srv);

/* Stops accepting and closes idle connections; connections with a request in flight close
 * after its response. Frees everything once the last handle is closed (the loop must run).
 * NULL is a no-op. */
void vg_httpd_stop(vg_httpd_t *srv);

/* Sends the response and releases `x`. The server adds Content-Length, Date and Connection;
 * `headers` are extra ones (Content-Type, Retry-After, ...). When the client has gone away
 * meanwhile, this only frees `x`. */
void vg_http_respond(vg_http_exchange_t *x,
                     int status,
                     const vg_http_header_t *headers,
                     size_t nheaders,
                     const char *body,
                     size_t len);

/* A JSON error response: {"status":"error","error":"<message>"} (message JSON-escaped). */
void vg_http_respond_error(vg_http_exchange_t *x, int status, const char *message);

/* False once the client closed its connection (a handler may skip work nobody will read). */
bool vg_http_exchange_alive(const vg_http_exchange_t *x);

/* Looks up a request header by lower-case name; NULL when absent. */
const char *vg_http_header(const vg_http_request_t *req, const char *name);

typedef struct {
  uint64_t connections_accepted;
  uint64_t connections_refused; /* over max_connections */
  uint64_t connections_open;
  uint64_t requests;      /* handed to the handler */
  uint64_t rejected[200]; /* answered by the server itself, by status - 400 */
  uint64_t responses[6];  /* by class: [2] = 2xx ... [5] = 5xx, handler and server */
} vg_httpd_stats_t;

void vg_httpd_stats(const vg_httpd_t *srv, vg_httpd_stats_t *out);
