/* The attach protocol spoken on the daemon's REPL socket: length-prefixed frames, each a
 * 4-byte big-endian length (of what follows), a type byte and a payload. Frames are bounded
 * (VG_REPL_FRAME_MAX); a peer that sends a larger one is disconnected. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Largest type + payload accepted or produced. */
#define VG_REPL_FRAME_MAX (1u << 20)
#define VG_REPL_HEADER 5 /* length (4) + type (1) */

enum {
  /* client -> server */
  VG_REPL_CHUNK = 'C',     /* flags byte (VG_REPL_SHOW_RESULTS), then Lua source */
  VG_REPL_INTERRUPT = 'I', /* cancel the running chunk (Ctrl-C); no payload */
  VG_REPL_COMPLETE = 'T',  /* the word before the cursor: answered by COMPLETIONS */
  /* server -> client */
  VG_REPL_HELLO = 'H',       /* banner, sent once on connect */
  VG_REPL_OUTPUT = 'O',      /* what print() wrote, newline included */
  VG_REPL_RESULT = 'R',      /* the chunk's values, rendered by vigil.inspect */
  VG_REPL_ERROR = 'E',       /* an error message (with traceback) */
  VG_REPL_DONE = 'D',        /* the chunk ended: payload "1" (ran) or "0" (failed) */
  VG_REPL_COMPLETIONS = 'L', /* candidates, one per line */
};

#define VG_REPL_SHOW_RESULTS 0x01

/* Builds one frame whose payload is `a` then `b` (either may be empty), truncated to fit
 * VG_REPL_FRAME_MAX. Returns a malloc'd buffer of *total bytes, or NULL when out of memory. */
char *vg_repl_frame_new(
    int type, const char *a, size_t alen, const char *b, size_t blen, size_t *total);

/* Accumulates received bytes and cuts them into frames. */
typedef struct {
  char *buf;
  size_t len, cap;
  size_t pos; /* start of the first frame not yet taken */
} vg_repl_rbuf_t;

/* Appends received bytes. Returns 0, or -1 when out of memory. Invalidates payloads returned
 * by vg_repl_rbuf_next() before. */
int vg_repl_rbuf_feed(vg_repl_rbuf_t *rb, const char *data, size_t n);

/* Takes the next complete frame: returns 1 with its type and payload (valid until the next
 * feed), 0 when no complete frame is buffered, -1 when the peer broke the protocol (an
 * empty or oversized frame). */
int vg_repl_rbuf_next(vg_repl_rbuf_t *rb, int *type, const char **payload, size_t *len);

void vg_repl_rbuf_free(vg_repl_rbuf_t *rb);
