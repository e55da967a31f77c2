/* The HTTP client: one libcurl multi handle driven by the libuv loop (curl's socket and timer
 * callbacks on uv_poll and uv_timer), so requests never block the loop and share connections.
 * Every request has a timeout and a response size cap; only http and https, redirects
 * bounded, TLS verified. Failures come back as a short name (ECONNREFUSED, ETIMEDOUT,
 * ETOOBIG, ...) with curl's detail; an HTTP 4xx or 5xx is a response, not a failure.
 * Pure C on libuv and libcurl: no Lua. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct vg_httpc vg_httpc_t;
typedef struct vg_httpc_req vg_httpc_req_t;

typedef struct {
  const char *method;         /* "GET" when NULL */
  const char *url;            /* http:// or https:// */
  const char *const *headers; /* "Name: value" lines */
  size_t nheaders;
  const char *body; /* sent as is; NULL: none */
  size_t body_len;
  uint64_t timeout_ms; /* whole request; 0: 30 s */
  size_t max_bytes;    /* response body cap; 0: 16 MiB */
  int max_redirects;   /* < 0: 5 */
} vg_httpc_opts_t;

typedef struct {
  long status;         /* 0 on failure */
  const char *headers; /* the final response's header lines, "Name: value\r\n" each */
  size_t headers_len;
  const char *body; /* NUL-terminated */
  size_t body_len;
  double elapsed;     /* seconds */
  const char *error;  /* NULL, or "ECONNREFUSED", "ETIMEDOUT", "ETOOBIG", "ENOTFOUND",
                         "ETLS", "EPROTO", "EREDIRECT", "EINVAL", "EIO" */
  const char *detail; /* curl's words for it */
} vg_httpc_resp_t;

/* Called on the loop once per started request (never for a cancelled one). The response's
 * memory is valid during the call only. */
typedef void (*vg_httpc_done_fn)(void *ud, const vg_httpc_resp_t *resp);

/* Returns NULL when curl cannot be initialised. */
vg_httpc_t *vg_httpc_new(uv_loop_t *loop);

/* Starts a request. Returns NULL with a reason in err when it cannot start (bad URL scheme,
 * out of memory); `done` then never runs. */
vg_httpc_req_t *vg_httpc_start(vg_httpc_t *c,
                               const vg_httpc_opts_t *o,
                               vg_httpc_done_fn done,
                               void *ud,
                               char *err,
                               size_t errlen);

/* Abandons a request: its callback will not run. */
void vg_httpc_cancel(vg_httpc_req_t *r);

/* Requests in flight and open sockets (for leak checks). */
size_t vg_httpc_active(const vg_httpc_t *c);

/* Cancels what is left and closes every handle; the loop must run afterwards for the close
 * callbacks to free the memory. NULL is a no-op. */
void vg_httpc_free(vg_httpc_t *c);
