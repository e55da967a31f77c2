/* A REPL session: one operator VM (vigil.core + vigil.runtime, a non-strict sandbox
 * environment that persists across chunks) that runs each chunk as a task and renders its
 * values with vigil.inspect. The standalone REPL has one; the daemon's socket one per client. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "core/runtime.h"

typedef struct vg_repl_session vg_repl_session_t;

/* Where a session's events go. None may free the session. */
typedef struct {
  void (*output)(void *ud, const char *text, size_t len); /* print(), newline included */
  void (*result)(void *ud, const char *text, size_t len); /* the chunk's rendered values */
  void (*error)(void *ud, const char *text, size_t len);  /* message and traceback */
  void (*done)(void *ud, bool ok);                        /* once per accepted chunk */
} vg_repl_session_cbs_t;

/* Creates a session VM named `name` in `rt` with `limits`. When rt has policies, require
 * ("lib.x") resolves in their lib directory. Returns NULL (logged) on failure. */
vg_repl_session_t *vg_repl_session_new(vg_runtime_t *rt,
                                       const char *name,
                                       const vg_limits_t *limits,
                                       const vg_repl_session_cbs_t *cbs,
                                       void *ud);

/* Frees the session, cancelling its chunk (no callback runs any more). Never call it from
 * inside one of the session's callbacks or tasks: defer to the loop. NULL is a no-op. */
void vg_repl_session_free(vg_repl_session_t *s);

/* Starts one chunk: compiled as `return <src>` when that compiles (an expression), else as
 * statements, then run as a task. Its values are rendered and reported when `show_results`.
 * Every accepted chunk ends with exactly one done callback, never from inside this call (a
 * syntax error is reported on the next loop turn). Returns 0, or -1 while a chunk runs. */
int vg_repl_session_eval(vg_repl_session_t *s, const char *src, size_t len, bool show_results);

bool vg_repl_session_busy(const vg_repl_session_t *s);

/* Cancels the running chunk (and the tasks it spawned); its done callback reports it as
 * interrupted. Call on the loop. */
void vg_repl_session_interrupt(vg_repl_session_t *s);

/* Async-signal-safe: stops the session's code if it is running right now (a loop that never
 * yields). The caller still calls vg_repl_session_interrupt() from the loop afterwards. */
void vg_repl_session_interrupt_signal(vg_repl_session_t *s);

/* Completions of `word` ("vigil.runtime.po", "pri"): full words naming keys of the
 * environment's tables, found with raw access (no metamethod runs). Returns a malloc'd array
 * of *n malloc'd strings (sorted, no duplicates), or NULL when there are none. */
char **vg_repl_session_complete(vg_repl_session_t *s, const char *word, size_t *n);

/* Frees what vg_repl_session_complete returned. */
void vg_repl_words_free(char **words, size_t n);
