/* The daemon's REPL socket: a Unix socket (mode 0600, same user only) on the daemon's loop.
 * Each client gets its own session in the daemon's runtime, so its lines see live policies
 * and tasks. Nothing here blocks: replies go out with uv_write, bounded per client. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vigil/version.h"

#include "core/clock.h"
#include "core/log.h"
#include "core/policy.h"
#include "repl/protocol.h"
#include "repl/repl.h"
#include "repl/session.h"

#define MAX_CLIENTS 16
#define OUTPUT_QUEUE_MAX (8u << 20) /* unsent print() output per client before dropping it */

typedef struct client client_t;

struct vg_repl_server {
  vg_runtime_t *rt;
  uv_pipe_t listener;
  char *path;
  client_t *clients;
  int nclients;
  bool stopping;
  bool listener_closed;
};

struct client {
  vg_repl_server_t *srv;
  uv_pipe_t pipe;
  vg_repl_rbuf_t rb;
  vg_repl_session_t *session;
  vg_timer_t *reaper; /* frees the session on the next turn */
  bool closing, pipe_closed;
  bool dropping; /* print() output is being dropped: the client reads too slowly */
  client_t *prev, *next;
};

typedef struct {
  uv_write_t req;
  char *frame;
} write_req_t;

static void client_close(client_t *c);

static void server_maybe_free(vg_repl_server_t *srv)
{
  if (srv->stopping && srv->listener_closed && srv->clients == NULL) {
    free(srv->path);
    free(srv);
  }
}

/* ---- writing ---- */

static void on_written(uv_write_t *req, int status)
{
  write_req_t *w = (write_req_t *)req;
  client_t *c = req->data;
  free(w->frame);
  free(w);
  if (status < 0 && status != UV_ECANCELED) {
    client_close(c);
  }
}

static void send_frame(
    client_t *c, int type, const char *a, size_t alen, const char *b, size_t blen)
{
  if (c->closing) {
    return;
  }
  write_req_t *w = malloc(sizeof(*w));
  size_t total = 0;
  char *frame = w != NULL ? vg_repl_frame_new(type, a, alen, b, blen, &total) : NULL;
  if (frame == NULL) {
    free(w);
    client_close(c);
    return;
  }
  w->frame = frame;
  w->req.data = c;
  uv_buf_t buf = uv_buf_init(frame, (unsigned int)total);
  if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_written) != 0) {
    free(frame);
    free(w);
    client_close(c);
  }
}

/* ---- session events ---- */

static void on_output(void *ud, const char *text, size_t len)
{
  client_t *c = ud;
  size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
  if (queued + len > OUTPUT_QUEUE_MAX) {
    if (!c->dropping) {
      static const char note[] = "[vigil: output dropped: the client reads too slowly]\n";
      c->dropping = true;
      send_frame(c, VG_REPL_OUTPUT, note, sizeof(note) - 1, NULL, 0);
    }
    return;
  }
  c->dropping = false;
  send_frame(c, VG_REPL_OUTPUT, text, len, NULL, 0);
}

static void on_result(void *ud, const char *text, size_t len)
{
  send_frame(ud, VG_REPL_RESULT, text, len, NULL, 0);
}

static void on_error(void *ud, const char *text, size_t len)
{
  send_frame(ud, VG_REPL_ERROR, text, len, NULL, 0);
}

static void on_done(void *ud, bool ok)
{
  send_frame(ud, VG_REPL_DONE, ok ? "1" : "0", 1, NULL, 0);
}

/* ---- closing ---- */

static void client_maybe_free(client_t *c)
{
  if (!c->pipe_closed || c->session != NULL || c->reaper != NULL) {
    return;
  }
  vg_repl_server_t *srv = c->srv;
  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    srv->clients = c->next;
  }
  if (c->next != NULL) {
    c->next->prev = c->prev;
  }
  srv->nclients--;
  vg_repl_rbuf_free(&c->rb);
  free(c);
  server_maybe_free(srv);
}

static void on_pipe_closed(uv_handle_t *h)
{
  client_t *c = h->data;
  c->pipe_closed = true;
  client_maybe_free(c);
}

/* A VM is never freed from inside one of its tasks' callbacks: the session goes on the next
 * loop turn. */
static void reap_session(vg_timer_t *timer, void *ud)
{
  client_t *c = ud;
  vg_timer_stop(timer);
  c->reaper = NULL;
  vg_repl_session_free(c->session);
  c->session = NULL;
  client_maybe_free(c);
}

static void client_close(client_t *c)
{
  if (c->closing) {
    return;
  }
  c->closing = true;
  if (c->session != NULL) {
    vg_repl_session_interrupt(c->session);
    c->reaper = vg_timer_start(c->srv->rt, 0, 0, reap_session, c);
    if (c->reaper == NULL) { /* out of memory: free it now rather than never */
      vg_repl_session_free(c->session);
      c->session = NULL;
    }
  }
  uv_close((uv_handle_t *)&c->pipe, on_pipe_closed);
  vg_log(VG_LOG_INFO, "repl client detached", NULL);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  (void)h;
  (void)suggested;
  size_t n = 65536;
  buf->base = malloc(n);
  buf->len = buf->base != NULL ? n : 0;
}

static void on_frame(client_t *c, int type, const char *p, size_t n)
{
  switch (type) {
    case VG_REPL_CHUNK: {
      bool show = n > 0 && (p[0] & VG_REPL_SHOW_RESULTS) != 0;
      const char *src = n > 0 ? p + 1 : p;
      size_t len = n > 0 ? n - 1 : 0;
      if (vg_repl_session_eval(c->session, src, len, show) != 0) {
        static const char busy[] = "busy: the previous chunk is still running";
        on_error(c, busy, sizeof(busy) - 1);
        on_done(c, false);
      }
      break;
    }
    case VG_REPL_INTERRUPT:
      vg_repl_session_interrupt(c->session);
      break;
    case VG_REPL_COMPLETE: {
      char word[256];
      size_t wlen = n < sizeof(word) - 1 ? n : sizeof(word) - 1;
      memcpy(word, p, wlen);
      word[wlen] = '\0';
      size_t count = 0;
      char **words = vg_repl_session_complete(c->session, word, &count);
      size_t total = 0;
      for (size_t i = 0; i < count; i++) {
        total += strlen(words[i]) + 1;
      }
      char *list = malloc(total + 1);
      if (list != NULL) {
        size_t at = 0;
        for (size_t i = 0; i < count; i++) {
          size_t l = strlen(words[i]);
          memcpy(list + at, words[i], l);
          list[at + l] = '\n';
          at += l + 1;
        }
        send_frame(c, VG_REPL_COMPLETIONS, list, at, NULL, 0);
        free(list);
      }
      vg_repl_words_free(words, count);
      break;
    }
    default:
      vg_log(VG_LOG_WARN, "repl client sent an unknown frame: closing it", NULL);
      client_close(c);
      break;
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
  client_t *c = stream->data;
  if (nread < 0) {
    free(buf->base);
    client_close(c);
    return;
  }
  if (nread == 0 || c->closing) {
    free(buf->base);
    return;
  }
  int rc = vg_repl_rbuf_feed(&c->rb, buf->base, (size_t)nread);
  free(buf->base);
  if (rc != 0) {
    client_close(c);
    return;
  }
  int type, k;
  const char *payload;
  size_t len;
  while (!c->closing && (k = vg_repl_rbuf_next(&c->rb, &type, &payload, &len)) == 1) {
    on_frame(c, type, payload, len);
  }
  if (!c->closing && k < 0) {
    vg_log(VG_LOG_WARN, "repl client broke the protocol (oversized frame): closing it", NULL);
    client_close(c);
  }
}

/* ---- accepting ---- */

/* Only the daemon's own user (or root) may drive it, whatever the socket's mode says. */
static bool peer_allowed(uv_pipe_t *pipe)
{
  uv_os_fd_t fd;
  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (uv_fileno((uv_handle_t *)pipe, &fd) != 0 ||
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return false;
  }
  return cred.uid == geteuid() || cred.uid == 0;
}

static void on_connection(uv_stream_t *server, int status)
{
  vg_repl_server_t *srv = server->data;
  if (status < 0 || srv->stopping) {
    return;
  }
  client_t *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return;
  }
  c->srv = srv;
  uv_pipe_init(srv->rt->loop, &c->pipe, 0);
  c->pipe.data = c;
  c->next = srv->clients;
  if (srv->clients != NULL) {
    srv->clients->prev = c;
  }
  srv->clients = c;
  srv->nclients++;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
    client_close(c);
    return;
  }
  if (!peer_allowed(&c->pipe) || srv->nclients > MAX_CLIENTS) {
    vg_log(VG_LOG_WARN, "repl connection refused", "reason",
           srv->nclients > MAX_CLIENTS ? "too many clients" : "another user", NULL);
    client_close(c);
    return;
  }
  vg_limits_t limits = srv->rt->limits;
  limits.instructions = 0; /* an operator's line may compute at length ... */
  limits.timeout_ms = 0;   /* ... and wait as long as it likes, but the time slice stays:
                              a loop that never yields would stall the daemon's loop */
  static const vg_repl_session_cbs_t cbs = { on_output, on_result, on_error, on_done };
  c->session = vg_repl_session_new(srv->rt, "repl:attach", &limits, &cbs, c);
  if (c->session == NULL) {
    client_close(c);
    return;
  }
  int npolicies = 0;
  for (vg_policy_t *p = srv->rt->policies ? srv->rt->policies->list : NULL; p; p = p->next) {
    npolicies++;
  }
  char hello[256];
  int n = snprintf(hello, sizeof(hello), "attached to vigil %s (pid %ld, %d polic%s)",
                   VIGIL_VERSION, (long)getpid(), npolicies, npolicies == 1 ? "y" : "ies");
  send_frame(c, VG_REPL_HELLO, hello, (size_t)n, NULL, 0);
  uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
  vg_log(VG_LOG_INFO, "repl client attached", NULL);
}

/* Removes a stale socket left by a daemon that died; refuses anything else at `path`. */
static int clear_path(const char *path)
{
  struct stat st;
  if (lstat(path, &st) != 0) {
    return errno == ENOENT ? 0 : -1;
  }
  if (!S_ISSOCK(st.st_mode)) {
    errno = EEXIST;
    return -1;
  }
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  memcpy(addr.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    return -1;
  }
  int rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
  int e = errno;
  close(fd);
  if (rc == 0 || e == EAGAIN || e == EINPROGRESS) {
    errno = EADDRINUSE; /* a live daemon answers there */
    return -1;
  }
  return unlink(path);
}

static void on_listener_closed(uv_handle_t *h)
{
  vg_repl_server_t *srv = h->data;
  srv->listener_closed = true;
  server_maybe_free(srv);
}

vg_repl_server_t *vg_repl_server_start(vg_runtime_t *rt, const char *path)
{
  if (path == NULL || *path == '\0') {
    return NULL;
  }
  if (strlen(path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
    vg_log(VG_LOG_ERROR, "REPL socket not started: path too long", "path", path, NULL);
    return NULL;
  }
  if (clear_path(path) != 0) {
    const char *why = errno == EEXIST       ? "the path exists and is not a socket"
                      : errno == EADDRINUSE ? "another daemon listens there"
                                            : strerror(errno);
    vg_log(VG_LOG_ERROR, "REPL socket not started", "path", path, "error", why, NULL);
    return NULL;
  }
  vg_repl_server_t *srv = calloc(1, sizeof(*srv));
  if (srv == NULL || (srv->path = strdup(path)) == NULL) {
    free(srv);
    return NULL;
  }
  srv->rt = rt;
  uv_pipe_init(rt->loop, &srv->listener, 0);
  srv->listener.data = srv;
  mode_t old = umask(0177); /* born 0600: never a moment when others could connect */
  int rc = uv_pipe_bind(&srv->listener, path);
  umask(old);
  bool bound = rc == 0;
  if (bound) {
    chmod(path, 0600);
    rc = uv_listen((uv_stream_t *)&srv->listener, 16, on_connection);
  }
  if (rc != 0) {
    vg_log(VG_LOG_ERROR, "REPL socket not started", "path", path, "error", uv_strerror(rc), NULL);
    if (bound) {
      unlink(path);
    }
    srv->stopping = true;
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    return NULL;
  }
  rt->repl_server = srv;
  return srv;
}

void vg_repl_server_stop(vg_repl_server_t *srv)
{
  if (srv == NULL || srv->stopping) {
    return;
  }
  srv->stopping = true;
  if (srv->rt->repl_server == srv) {
    srv->rt->repl_server = NULL;
  }
  for (client_t *c = srv->clients; c != NULL; c = c->next) {
    client_close(c);
  }
  unlink(srv->path);
  uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
}
