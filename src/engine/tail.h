/* Following a log file like `tail -F` on the loop: reads are uv_fs requests on the thread
 * pool, changes are noticed by uv_fs_event on the file's directory with a uv_fs_poll fallback,
 * and lines reach the owner in batches through a callback. Survives rotation by rename +
 * create, copytruncate, and the file missing for a while. Memory is one read buffer and one
 * line buffer. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct vg_tail vg_tail_t;

typedef enum {
  VG_TAIL_FROM_END,   /* a file present at open is followed from its current end (default) */
  VG_TAIL_FROM_START, /* ... from its first byte */
} vg_tail_from_t;

typedef struct {
  vg_tail_from_t from;
  size_t max_line;  /* bytes kept of one line; longer lines are cut (0: 64 KiB) */
  size_t read_size; /* bytes per read request (0: 64 KiB) */
  uint64_t poll_ms; /* interval of the stat poll behind the change events (0: 1000 ms) */
  bool nofollow;    /* refuse a symlink as the file itself (O_NOFOLLOW) */
  bool unref;       /* the watchers do not keep the loop alive (reads in flight still do) */
} vg_tail_opts_t;

/* One line, without its '\n' (a '\r' before it is kept). Bytes are passed through as they
 * are: NUL and invalid UTF-8 included. `data` is valid only during the callback. */
typedef struct {
  const char *data;
  size_t len;
  bool truncated; /* the line was longer than max_line: this is its start, the rest is gone */
} vg_tail_line_t;

typedef enum {
  VG_TAIL_STARTING,  /* the first open has not completed */
  VG_TAIL_FOLLOWING, /* the file is open and is what the path names */
  VG_TAIL_MISSING,   /* the path does not exist (a rotated-away file may still be drained) */
  VG_TAIL_ERROR,     /* the path exists but cannot be opened or read; retried on change */
  VG_TAIL_CLOSING,
} vg_tail_state_t;

typedef struct {
  uint64_t lines;           /* delivered, truncated ones included */
  uint64_t bytes;           /* read from files */
  uint64_t rotations;       /* the path came to name another file (rename + create) */
  uint64_t truncations;     /* the file became shorter than what was read (copytruncate) */
  uint64_t truncated_lines; /* lines cut at max_line */
  uint64_t reopen_errors;   /* opens and reads that failed for another reason than ENOENT */
  uint64_t offset;          /* read position in the current file */
  int last_error;           /* libuv error code of the last failure, 0 if none */
  vg_tail_state_t state;
} vg_tail_stats_t;

typedef void (*vg_tail_lines_fn)(void *ud, const vg_tail_line_t *lines, size_t n);
typedef void (*vg_tail_closed_fn)(void *ud);

/* Fills `o` with the defaults (from the end, 64 KiB lines and reads, 1 s poll). */
void tail_opts_default(vg_tail_opts_t *o);

/* Starts following `path` (opts may be NULL for the defaults). A missing file is not an error:
 * it is waited for and read from its start once it appears. Lines come in order through
 * on_lines; a last line without '\n' is held until its newline arrives, and delivered as it
 * is when the file is replaced or truncated under it (its end can no longer come); it is
 * dropped at close. on_lines may call tail_close(). Returns NULL with a message in err when
 * the watchers cannot be started or memory runs out. */
vg_tail_t *tail_open(uv_loop_t *loop,
                     const char *path,
                     const vg_tail_opts_t *opts,
                     vg_tail_lines_fn on_lines,
                     void *ud,
                     char *err,
                     size_t errlen);

/* Looks at the file now, as if a change had been notified (the owner wants lines soon). */
void tail_check(vg_tail_t *t);

void tail_stats(const vg_tail_t *t, vg_tail_stats_t *out);

/* "starting", "following", "missing", "error", "closing". */
const char *tail_state_name(vg_tail_state_t state);

/* Stops following: no on_lines after this call. The memory is freed once libuv has released
 * the handles and any read in flight has completed; on_closed(ud) (may be NULL) runs then,
 * from the loop. Call exactly once. */
void tail_close(vg_tail_t *t, vg_tail_closed_fn on_closed, void *ud);
