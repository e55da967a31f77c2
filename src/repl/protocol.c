/* Frame encoding and decoding for the attach protocol (protocol.h). Pure buffer code: the
 * server writes frames with uv_write, the client with send(2). */
#include "repl/protocol.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

char *vg_repl_frame_new(
    int type, const char *a, size_t alen, const char *b, size_t blen, size_t *total)
{
  size_t room = VG_REPL_FRAME_MAX - 1;
  if (alen > room) {
    alen = room;
  }
  if (blen > room - alen) {
    blen = room - alen;
  }
  size_t body = 1 + alen + blen;
  char *f = malloc(4 + body);
  if (f == NULL) {
    return NULL;
  }
  f[0] = (char)((body >> 24) & 0xff);
  f[1] = (char)((body >> 16) & 0xff);
  f[2] = (char)((body >> 8) & 0xff);
  f[3] = (char)(body & 0xff);
  f[4] = (char)type;
  if (alen > 0) {
    memcpy(f + VG_REPL_HEADER, a, alen);
  }
  if (blen > 0) {
    memcpy(f + VG_REPL_HEADER + alen, b, blen);
  }
  *total = 4 + body;
  return f;
}

int vg_repl_rbuf_feed(vg_repl_rbuf_t *rb, const char *data, size_t n)
{
  if (rb->pos > 0) { /* drop the frames already taken */
    memmove(rb->buf, rb->buf + rb->pos, rb->len - rb->pos);
    rb->len -= rb->pos;
    rb->pos = 0;
  }
  if (n == 0) {
    return 0;
  }
  if (rb->len + n > rb->cap) {
    size_t cap = rb->cap ? rb->cap : 4096;
    while (cap < rb->len + n) {
      cap *= 2;
    }
    char *nb = realloc(rb->buf, cap);
    if (nb == NULL) {
      return -1;
    }
    rb->buf = nb;
    rb->cap = cap;
  }
  memcpy(rb->buf + rb->len, data, n);
  rb->len += n;
  return 0;
}

int vg_repl_rbuf_next(vg_repl_rbuf_t *rb, int *type, const char **payload, size_t *len)
{
  size_t avail = rb->len - rb->pos;
  if (avail < 4) {
    return 0;
  }
  const unsigned char *p = (const unsigned char *)rb->buf + rb->pos;
  uint32_t body = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
  if (body == 0 || body > VG_REPL_FRAME_MAX) {
    return -1;
  }
  if (avail < 4 + (size_t)body) {
    return 0;
  }
  *type = p[4];
  *payload = (const char *)p + VG_REPL_HEADER;
  *len = body - 1;
  rb->pos += 4 + body;
  return 1;
}

void vg_repl_rbuf_free(vg_repl_rbuf_t *rb)
{
  free(rb->buf);
  rb->buf = NULL;
  rb->len = rb->cap = rb->pos = 0;
}
