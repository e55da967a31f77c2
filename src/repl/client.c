/* `vigil repl --attach PATH`: the front end with a remote backend. Frames go to the daemon
 * with send(2) (they are small, and a prompt has nothing better to do); replies are read when
 * a uv_poll on the socket says so, except completions, which libedit needs at once and are
 * awaited with a deadline. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/clock.h"
#include "repl/frontend.h"
#include "repl/protocol.h"
#include "repl/repl.h"
#include "repl/session.h"

#define HELLO_WAIT_MS 5000
#define COMPLETE_WAIT_MS 3000
#define SEND_WAIT_MS 10000

typedef struct {
  vg_runtime_t *rt;
  vg_repl_fe_t *fe; /* NULL until the front end exists */
  int fd;
  uv_poll_t poll;
  bool poll_on;
  vg_repl_rbuf_t rb;
  char *hello;
  char **words; /* the last COMPLETIONS reply */
  size_t nwords;
  bool got_words;
} client_t;

static int send_frame(client_t *c, int type, const char *a, size_t alen, const char *b, size_t blen)
{
  size_t total;
  char *frame = vg_repl_frame_new(type, a, alen, b, blen, &total);
  if (frame == NULL) {
    return -1;
  }
  const char *p = frame;
  size_t left = total;
  while (left > 0) {
    ssize_t w = send(c->fd, p, left, MSG_NOSIGNAL);
    if (w >= 0) {
      p += w;
      left -= (size_t)w;
      continue;
    }
    if (errno == EINTR) {
      continue;
    }
    struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && poll(&pfd, 1, SEND_WAIT_MS) > 0) {
      continue;
    }
    break;
  }
  free(frame);
  return left == 0 ? 0 : -1;
}

static void take_words(client_t *c, const char *p, size_t n)
{
  vg_repl_words_free(c->words, c->nwords);
  c->words = NULL;
  c->nwords = 0;
  c->got_words = true;
  size_t count = 0;
  for (size_t i = 0; i < n; i++) {
    count += p[i] == '\n';
  }
  if (n > 0 && p[n - 1] != '\n') {
    count++;
  }
  if (count == 0 || (c->words = calloc(count, sizeof(char *))) == NULL) {
    return;
  }
  const char *end = p + n;
  while (p < end && c->nwords < count) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
    if (len > 0) {
      c->words[c->nwords] = strndup(p, len);
      if (c->words[c->nwords] != NULL) {
        c->nwords++;
      }
    }
    p += len + 1;
  }
}

static void on_frame(client_t *c, int type, const char *p, size_t n)
{
  switch (type) {
    case VG_REPL_HELLO:
      free(c->hello);
      c->hello = strndup(p, n);
      break;
    case VG_REPL_COMPLETIONS:
      take_words(c, p, n);
      break;
    case VG_REPL_OUTPUT:
      if (c->fe != NULL) {
        vg_repl_fe_output(c->fe, p, n);
      }
      break;
    case VG_REPL_RESULT:
      if (c->fe != NULL) {
        vg_repl_fe_result(c->fe, p, n);
      }
      break;
    case VG_REPL_ERROR:
      if (c->fe != NULL) {
        vg_repl_fe_error(c->fe, p, n);
      }
      break;
    case VG_REPL_DONE:
      if (c->fe != NULL) {
        vg_repl_fe_done(c->fe, n > 0 && p[0] == '1');
      }
      break;
    default:
      break; /* a newer daemon's frame: ignore */
  }
}

/* Reads what the socket has and handles every complete frame. Returns -1 when the connection
 * is closed or the daemon broke the protocol. */
static int pump(client_t *c)
{
  char buf[65536];
  for (;;) {
    ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (r == 0) {
      return -1;
    }
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
    if (vg_repl_rbuf_feed(&c->rb, buf, (size_t)r) != 0) {
      return -1;
    }
    int type, k;
    const char *payload;
    size_t len;
    while ((k = vg_repl_rbuf_next(&c->rb, &type, &payload, &len)) == 1) {
      on_frame(c, type, payload, len);
    }
    if (k < 0) {
      return -1;
    }
  }
}

/* Waits up to ms for *flag, handling frames meanwhile. */
static bool wait_for(client_t *c, const bool *flag, int ms)
{
  uint64_t deadline = vg_clock_mono_ns() + (uint64_t)ms * 1000000u;
  while (!*flag) {
    uint64_t now = vg_clock_mono_ns();
    if (now >= deadline) {
      return false;
    }
    struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
    int r = poll(&pfd, 1, (int)((deadline - now) / 1000000u) + 1);
    if (r < 0 && errno != EINTR) {
      return false;
    }
    if (r > 0 && pump(c) != 0) {
      return false;
    }
  }
  return true;
}

static void on_readable(uv_poll_t *h, int status, int events)
{
  (void)events;
  client_t *c = h->data;
  if (status < 0 || pump(c) != 0) {
    uv_poll_stop(&c->poll);
    vg_repl_fe_lost(c->fe, "the daemon closed the connection");
  }
}

static int be_eval(void *ud, const char *src, size_t len, bool show_results)
{
  char flags = show_results ? VG_REPL_SHOW_RESULTS : 0;
  return send_frame(ud, VG_REPL_CHUNK, &flags, 1, src, len);
}

static void be_interrupt(void *ud)
{
  send_frame(ud, VG_REPL_INTERRUPT, NULL, 0, NULL, 0);
}

static char **be_complete(void *ud, const char *word, size_t *n)
{
  client_t *c = ud;
  *n = 0;
  c->got_words = false;
  if (send_frame(c, VG_REPL_COMPLETE, word, strlen(word), NULL, 0) != 0 ||
      !wait_for(c, &c->got_words, COMPLETE_WAIT_MS)) {
    return NULL;
  }
  char **words = c->words;
  *n = c->nwords;
  c->words = NULL;
  c->nwords = 0;
  return words;
}

static int connect_to(const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (strlen(path) >= sizeof(addr.sun_path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(addr.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  int rc;
  do {
    rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

int vg_repl_attach(const char *path)
{
  client_t c = { .fd = -1 };
  c.fd = connect_to(path);
  if (c.fd < 0) {
    fprintf(stderr, "vigil repl: cannot attach to %s: %s\n", path, strerror(errno));
    return 1;
  }
  /* the daemon greets first: anything else is not a vigil REPL socket */
  uint64_t deadline = vg_clock_mono_ns() + (uint64_t)HELLO_WAIT_MS * 1000000u;
  while (c.hello == NULL && vg_clock_mono_ns() < deadline) {
    struct pollfd pfd = { .fd = c.fd, .events = POLLIN };
    int r = poll(&pfd, 1, 100);
    if (r > 0 && pump(&c) != 0) {
      break;
    }
  }
  if (c.hello == NULL) {
    fprintf(stderr, "vigil repl: %s did not greet like a vigil daemon's REPL socket\n", path);
    close(c.fd);
    vg_repl_rbuf_free(&c.rb);
    return 1;
  }
  int status = 1;
  c.rt = vg_runtime_new();
  c.fe = c.rt != NULL ? vg_repl_fe_new(c.rt) : NULL;
  if (c.fe == NULL || uv_poll_init(c.rt->loop, &c.poll, c.fd) != 0) {
    fputs("vigil repl: out of memory\n", stderr);
  } else {
    c.poll_on = true;
    c.poll.data = &c;
    uv_poll_start(&c.poll, UV_READABLE, on_readable);
    vg_repl_backend_t be = {
      .eval = be_eval,
      .interrupt = be_interrupt,
      .complete = be_complete,
      .ud = &c,
    };
    char banner[512];
    snprintf(banner, sizeof(banner),
             "%s\nLines run inside the daemon. Tab completes, Ctrl-C interrupts, Ctrl-D "
             "detaches.\n",
             c.hello);
    status = vg_repl_fe_run(c.fe, &be, banner);
  }
  if (c.poll_on) {
    uv_close((uv_handle_t *)&c.poll, NULL);
  }
  vg_repl_fe_free(c.fe);
  vg_runtime_free(c.rt); /* runs the close callbacks: c.poll is done with c.fd after it */
  close(c.fd);
  vg_repl_rbuf_free(&c.rb);
  vg_repl_words_free(c.words, c.nwords);
  free(c.hello);
  return status;
}
