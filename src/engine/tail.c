/* tail -F on libuv (see tail.h). One state machine driven by uv_fs requests with at most one in
 * flight; change notifications only start a pass or mark the running one dirty, so a burst of
 * events costs one extra pass. A pass: open if needed, fstat (copytruncate shows as a size below
 * our offset), read to EOF, stat the path (another inode means rotation: drain the old file to
 * EOF once more, then close it and open the new one from its start). */
#include "engine/tail.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_LINE (64u << 10)
#define DEFAULT_READ (64u << 10)
#define DEFAULT_POLL_MS 1000
#define BATCH 256

typedef enum { OP_NONE, OP_OPEN, OP_FSTAT, OP_READ, OP_STAT, OP_CLOSE } op_t;

struct vg_tail {
  uv_loop_t *loop;
  char *path, *dir, *base;
  vg_tail_opts_t o;
  vg_tail_lines_fn on_lines;
  void *ud;
  vg_tail_closed_fn on_closed;
  void *closed_ud;

  uv_fs_event_t ev; /* on the directory: sees creates and renames the file watch would miss */
  uv_fs_poll_t poll;
  bool ev_active;
  int open_handles; /* handles not yet through their close callback */

  uv_fs_t req;
  op_t op;    /* the request in flight, OP_NONE when idle */
  bool dirty; /* a change was notified while a pass ran */
  bool in_cb; /* on_lines runs: a pass is mid-way and owns t->req */
  bool closing;

  uv_file fd; /* -1 when none */
  uint64_t dev, ino;
  uint64_t offset;
  bool first;        /* the first open has not completed: opts.from applies to it */
  bool opened;       /* the fd was just opened: the next fstat places the offset */
  bool resume;       /* closed after an error: continue at offset if it is the same file */
  bool switching;    /* the path names another file: drain fd to EOF, then switch */
  bool reopen;       /* the close in flight is a switch: open the path after it */
  bool discarding;   /* dropping the rest of a line cut at max_line */
  char *rbuf, *lbuf; /* one read buffer; the start of a line that spans reads */
  size_t llen;
  vg_tail_line_t batch[BATCH];
  size_t nbatch;
  vg_tail_stats_t st;
};

static void pass_start(vg_tail_t *t);
static void req_cb(uv_fs_t *req);
static void ev_cb(uv_fs_event_t *h, const char *filename, int events, int status);

void tail_opts_default(vg_tail_opts_t *o)
{
  memset(o, 0, sizeof(*o));
  o->from = VG_TAIL_FROM_END;
  o->max_line = DEFAULT_LINE;
  o->read_size = DEFAULT_READ;
  o->poll_ms = DEFAULT_POLL_MS;
}

const char *tail_state_name(vg_tail_state_t state)
{
  switch (state) {
    case VG_TAIL_STARTING:
      return "starting";
    case VG_TAIL_FOLLOWING:
      return "following";
    case VG_TAIL_MISSING:
      return "missing";
    case VG_TAIL_ERROR:
      return "error";
    case VG_TAIL_CLOSING:
      return "closing";
  }
  return "?";
}

static void tail_free(vg_tail_t *t)
{
  free(t->path);
  free(t->dir);
  free(t->base);
  free(t->rbuf);
  free(t->lbuf);
  free(t);
}

/* ---- lines ---- */

/* Hands the batch to the owner. The caller checks t->closing afterwards. */
static void deliver(vg_tail_t *t)
{
  if (t->nbatch == 0 || t->closing) {
    t->nbatch = 0;
    return;
  }
  size_t n = t->nbatch;
  t->nbatch = 0;
  t->st.lines += n;
  t->in_cb = true;
  t->on_lines(t->ud, t->batch, n);
  t->in_cb = false;
}

static void add_line(vg_tail_t *t, const char *p, size_t len, bool truncated)
{
  t->batch[t->nbatch++] = (vg_tail_line_t){ .data = p, .len = len, .truncated = truncated };
  t->st.truncated_lines += truncated;
  if (t->nbatch == BATCH) {
    deliver(t);
  }
}

/* The held start of a line is all of it that will ever come (file replaced or truncated). */
static void flush_partial(vg_tail_t *t)
{
  t->discarding = false;
  if (t->llen > 0) {
    size_t n = t->llen;
    t->llen = 0;
    add_line(t, t->lbuf, n, false);
    deliver(t);
  }
}

/* Splits freshly read bytes into lines. Lines wholly inside the chunk are delivered from the
 * read buffer; only the first line of a chunk can continue the line buffer, and the chunk's
 * unterminated tail is copied there after the batch went out, so both buffers are stable
 * while on_lines runs. */
static void process(vg_tail_t *t, const char *data, size_t n)
{
  const char *p = data, *end = data + n;
  size_t max = t->o.max_line;
  while (p < end && !t->closing) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL) {
      break;
    }
    size_t len = (size_t)(nl - p);
    if (t->discarding) {
      t->discarding = false;
    } else if (t->llen > 0) {
      size_t room = max - t->llen;
      size_t take = len < room ? len : room;
      memcpy(t->lbuf + t->llen, p, take);
      size_t total = t->llen + take;
      t->llen = 0;
      add_line(t, t->lbuf, total, len > room);
    } else {
      add_line(t, p, len < max ? len : max, len > max);
    }
    p = nl + 1;
  }
  deliver(t);
  if (t->closing || p == end || t->discarding) {
    return;
  }
  size_t rem = (size_t)(end - p), room = max - t->llen;
  if (rem <= room) {
    memcpy(t->lbuf + t->llen, p, rem);
    t->llen += rem;
    return;
  }
  /* longer than max_line without a newline yet: deliver its start now, drop the rest */
  memcpy(t->lbuf + t->llen, p, room);
  t->llen = 0;
  t->discarding = true;
  add_line(t, t->lbuf, max, true);
  deliver(t);
}

/* ---- closing ---- */

static void maybe_free(vg_tail_t *t)
{
  if (!t->closing || t->op != OP_NONE || t->fd >= 0 || t->open_handles > 0) {
    return;
  }
  vg_tail_closed_fn cb = t->on_closed;
  void *ud = t->closed_ud;
  tail_free(t);
  if (cb != NULL) {
    cb(ud);
  }
}

/* Starts a request; a synchronous failure is reported through req_cb like an async one. */
static void submitted(vg_tail_t *t, op_t op, int rc)
{
  t->op = op;
  if (rc < 0) {
    t->req.result = rc;
    req_cb(&t->req);
  }
}

static void close_fd(vg_tail_t *t)
{
  t->req.data = t;
  submitted(t, OP_CLOSE, uv_fs_close(t->loop, &t->req, t->fd, req_cb));
}

/* While closing: closes the file once no request is in flight, then frees when all is done. */
static void close_step(vg_tail_t *t)
{
  if (t->op != OP_NONE) {
    return;
  }
  if (t->fd >= 0) {
    close_fd(t);
    return;
  }
  maybe_free(t);
}

static void handle_closed(uv_handle_t *h)
{
  vg_tail_t *t = h->data;
  t->open_handles--;
  close_step(t);
}

/* ---- the pass ---- */

static void watch_dir(vg_tail_t *t)
{
  if (!t->ev_active && !t->closing) {
    t->ev_active = uv_fs_event_start(&t->ev, ev_cb, t->dir, 0) == 0;
  }
}

static void pass_end(vg_tail_t *t)
{
  if (t->st.state == VG_TAIL_FOLLOWING) {
    watch_dir(t); /* the directory may have been missing when we started */
  }
  if (t->dirty && !t->closing) {
    t->dirty = false;
    pass_start(t);
  }
}

static void set_error(vg_tail_t *t, int rc)
{
  t->st.reopen_errors++;
  t->st.last_error = rc;
  t->st.state = VG_TAIL_ERROR;
}

static void start_read(vg_tail_t *t)
{
  uv_buf_t b = uv_buf_init(t->rbuf, (unsigned)t->o.read_size);
  t->req.data = t;
  submitted(t, OP_READ, uv_fs_read(t->loop, &t->req, t->fd, &b, 1, (int64_t)t->offset, req_cb));
}

static void start_open(vg_tail_t *t)
{
  int flags = O_RDONLY | O_CLOEXEC | (t->o.nofollow ? O_NOFOLLOW : 0);
  t->req.data = t;
  submitted(t, OP_OPEN, uv_fs_open(t->loop, &t->req, t->path, flags, 0, req_cb));
}

static void pass_start(vg_tail_t *t)
{
  t->req.data = t;
  if (t->fd < 0) {
    start_open(t);
  } else {
    submitted(t, OP_FSTAT, uv_fs_fstat(t->loop, &t->req, t->fd, req_cb));
  }
}

/* A failure on the open file: close it, remember where we were, retry on the next change. */
static void fail_fd(vg_tail_t *t, int rc)
{
  set_error(t, rc);
  t->resume = true;
  t->reopen = false;
  close_fd(t);
}

static void on_open(vg_tail_t *t, ssize_t r)
{
  if (r < 0) {
    t->first = false; /* a file that appears later is read from its start */
    if (r == UV_ENOENT) {
      t->st.state = VG_TAIL_MISSING;
    } else {
      set_error(t, (int)r);
    }
    pass_end(t);
    return;
  }
  t->fd = (uv_file)r;
  t->opened = true;
  t->req.data = t;
  submitted(t, OP_FSTAT, uv_fs_fstat(t->loop, &t->req, t->fd, req_cb));
}

static void on_fstat(vg_tail_t *t, ssize_t r, const uv_stat_t *sb)
{
  if (r < 0) {
    fail_fd(t, (int)r);
    return;
  }
  if (t->opened) {
    bool same =
        t->resume && sb->st_dev == t->dev && sb->st_ino == t->ino && sb->st_size >= t->offset;
    if (!same) {
      flush_partial(t); /* another file: what was held of the old one is complete */
      if (t->closing) {
        close_step(t);
        return;
      }
      t->offset = t->first && t->o.from == VG_TAIL_FROM_END ? sb->st_size : 0;
    }
    t->opened = t->resume = t->first = false;
    t->dev = sb->st_dev;
    t->ino = sb->st_ino;
    t->st.state = VG_TAIL_FOLLOWING;
  } else if (sb->st_size < t->offset) {
    t->st.truncations++;
    t->offset = 0;
    flush_partial(t);
    if (t->closing) {
      close_step(t);
      return;
    }
  }
  start_read(t);
}

static void on_read(vg_tail_t *t, ssize_t r)
{
  if (r < 0) {
    fail_fd(t, (int)r);
    return;
  }
  if (r == 0) {
    if (t->switching) { /* the old file is drained: the new one is read from its start */
      t->switching = false;
      t->st.rotations++;
      flush_partial(t);
      if (t->closing) {
        close_step(t);
        return;
      }
      t->reopen = true;
      close_fd(t);
      return;
    }
    t->req.data = t;
    submitted(t, OP_STAT, uv_fs_stat(t->loop, &t->req, t->path, req_cb));
    return;
  }
  t->st.bytes += (uint64_t)r;
  t->offset += (uint64_t)r;
  process(t, t->rbuf, (size_t)r);
  if (t->closing) {
    close_step(t);
    return;
  }
  start_read(t);
}

static void on_stat(vg_tail_t *t, ssize_t r, const uv_stat_t *sb)
{
  if (r < 0) {
    /* renamed or deleted: keep the open file (its writer may still append) and wait */
    t->st.state = r == UV_ENOENT ? VG_TAIL_MISSING : VG_TAIL_ERROR;
    t->st.last_error = r == UV_ENOENT ? t->st.last_error : (int)r;
    pass_end(t);
    return;
  }
  if (sb->st_dev != t->dev || sb->st_ino != t->ino) {
    t->switching = true; /* lines written to the old file just before the rename come first */
    start_read(t);
    return;
  }
  t->st.state = VG_TAIL_FOLLOWING;
  pass_end(t);
}

static void on_close(vg_tail_t *t)
{
  t->fd = -1;
  if (t->closing) {
    close_step(t);
    return;
  }
  if (t->reopen) {
    t->reopen = false;
    start_open(t);
    return;
  }
  pass_end(t);
}

static void req_cb(uv_fs_t *req)
{
  vg_tail_t *t = req->data;
  op_t op = t->op;
  ssize_t r = req->result;
  uv_stat_t sb = req->statbuf;
  uv_fs_req_cleanup(req);
  t->op = OP_NONE;
  if (t->closing) {
    if (op == OP_OPEN && r >= 0) {
      t->fd = (uv_file)r;
    } else if (op == OP_CLOSE) {
      t->fd = -1;
    }
    close_step(t);
    return;
  }
  switch (op) {
    case OP_OPEN:
      on_open(t, r);
      break;
    case OP_FSTAT:
      on_fstat(t, r, &sb);
      break;
    case OP_READ:
      on_read(t, r);
      break;
    case OP_STAT:
      on_stat(t, r, &sb);
      break;
    case OP_CLOSE:
      on_close(t);
      break;
    case OP_NONE:
      break;
  }
}

/* ---- notifications ---- */

void tail_check(vg_tail_t *t)
{
  if (t->closing) {
    return;
  }
  if (t->op != OP_NONE || t->in_cb) { /* in_cb: called from on_lines, mid-pass */
    t->dirty = true;
    return;
  }
  pass_start(t);
}

static void ev_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
  (void)events;
  vg_tail_t *t = h->data;
  /* while the path is missing, the renamed-away file may still grow under another name */
  bool orphan = t->fd >= 0 && t->st.state == VG_TAIL_MISSING;
  if (status == 0 && (filename == NULL || orphan || strcmp(filename, t->base) == 0)) {
    tail_check(t);
  }
}

static void poll_cb(uv_fs_poll_t *h, int status, const uv_stat_t *prev, const uv_stat_t *curr)
{
  (void)status;
  (void)prev;
  (void)curr;
  tail_check(h->data);
}

/* ---- lifecycle ---- */

vg_tail_t *tail_open(uv_loop_t *loop,
                     const char *path,
                     const vg_tail_opts_t *opts,
                     vg_tail_lines_fn on_lines,
                     void *ud,
                     char *err,
                     size_t errlen)
{
  if (path == NULL || path[0] == '\0' || on_lines == NULL) {
    snprintf(err, errlen, "EINVAL: a path and a line callback are needed");
    return NULL;
  }
  vg_tail_t *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    snprintf(err, errlen, "ENOMEM: out of memory");
    return NULL;
  }
  if (opts != NULL) {
    t->o = *opts;
  } else {
    tail_opts_default(&t->o);
  }
  t->o.max_line = t->o.max_line ? t->o.max_line : DEFAULT_LINE;
  t->o.read_size = t->o.read_size ? t->o.read_size : DEFAULT_READ;
  t->o.read_size = t->o.read_size > (1u << 30) ? (1u << 30) : t->o.read_size;
  t->o.poll_ms = t->o.poll_ms ? t->o.poll_ms : DEFAULT_POLL_MS;
  t->loop = loop;
  t->on_lines = on_lines;
  t->ud = ud;
  t->fd = -1;
  t->first = true;
  t->st.state = VG_TAIL_STARTING;
  t->path = strdup(path);
  const char *slash = strrchr(path, '/');
  if (slash == NULL) {
    t->dir = strdup(".");
    t->base = strdup(path);
  } else {
    t->dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
    t->base = strdup(slash + 1);
  }
  t->rbuf = malloc(t->o.read_size);
  t->lbuf = malloc(t->o.max_line);
  if (t->path == NULL || t->dir == NULL || t->base == NULL || t->rbuf == NULL || t->lbuf == NULL) {
    tail_free(t);
    snprintf(err, errlen, "ENOMEM: out of memory");
    return NULL;
  }
  /* from here on the handles exist and only tail_close can free t */
  uv_fs_event_init(loop, &t->ev);
  t->ev.data = t;
  uv_fs_poll_init(loop, &t->poll);
  t->poll.data = t;
  t->open_handles = 2;
  if (t->o.unref) {
    uv_unref((uv_handle_t *)&t->ev);
    uv_unref((uv_handle_t *)&t->poll);
  }
  t->ev_active = uv_fs_event_start(&t->ev, ev_cb, t->dir, 0) == 0;
  int rc = uv_fs_poll_start(&t->poll, poll_cb, t->path, (unsigned)t->o.poll_ms);
  if (rc != 0) {
    t->st.last_error = rc; /* the directory events still work */
  }
  pass_start(t);
  return t;
}

void tail_stats(const vg_tail_t *t, vg_tail_stats_t *out)
{
  *out = t->st;
  out->offset = t->offset;
}

void tail_close(vg_tail_t *t, vg_tail_closed_fn on_closed, void *ud)
{
  t->closing = true;
  t->nbatch = 0;
  t->st.state = VG_TAIL_CLOSING;
  t->on_closed = on_closed;
  t->closed_ud = ud;
  uv_close((uv_handle_t *)&t->ev, handle_closed);
  uv_close((uv_handle_t *)&t->poll, handle_closed);
  close_step(t);
}
