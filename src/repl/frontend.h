/* The REPL front end, shared by the standalone REPL and `--attach`: a libedit prompt in
 * callback mode on the runtime's loop (a terminal), or a script runner (anything else). It
 * cuts input into chunks and hands each to a backend that runs it locally or in a daemon. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "core/runtime.h"

typedef struct vg_repl_fe vg_repl_fe_t;

/* What runs the chunks. Every function is called on the loop, except interrupt_signal. */
typedef struct {
  /* Starts one chunk; the backend reports through vg_repl_fe_output/result/error and ends
   * with vg_repl_fe_done(), never from inside this call. Returns 0, or -1 (nothing runs). */
  int (*eval)(void *ud, const char *src, size_t len, bool show_results);
  /* Ctrl-C while a chunk runs. */
  void (*interrupt)(void *ud);
  /* Optional, async-signal-safe: Ctrl-C, from the SIGINT handler, for code that never
   * yields to the loop. */
  void (*interrupt_signal)(void *ud);
  /* Completions of a word; see vg_repl_session_complete for the result's shape. */
  char **(*complete)(void *ud, const char *word, size_t *n);
  void *ud;
} vg_repl_backend_t;

/* Creates a front end on rt's loop. Returns NULL when out of memory. */
vg_repl_fe_t *vg_repl_fe_new(vg_runtime_t *rt);

/* Runs until the user leaves (Ctrl-D) or the script ends or fails, or the backend is lost.
 * `banner` is shown above the first prompt (terminal only). Returns the exit status: 0, or
 * 1 after a script's first error or a lost backend. */
int vg_repl_fe_run(vg_repl_fe_t *fe, const vg_repl_backend_t *be, const char *banner);

/* Closes the front end's handles; its memory goes in their close callbacks, so the loop must
 * run afterwards (vg_runtime_free does). */
void vg_repl_fe_free(vg_repl_fe_t *fe);

/* Events from the backend. */
void vg_repl_fe_output(vg_repl_fe_t *fe, const char *text, size_t len);
void vg_repl_fe_result(vg_repl_fe_t *fe, const char *text, size_t len);
void vg_repl_fe_error(vg_repl_fe_t *fe, const char *text, size_t len);
void vg_repl_fe_done(vg_repl_fe_t *fe, bool ok);
/* The backend is gone (the daemon closed the connection): ends the run with status 1. */
void vg_repl_fe_lost(vg_repl_fe_t *fe, const char *why);

/* True while a terminal prompt is shown (not while a chunk runs). */
bool vg_repl_fe_interactive(const vg_repl_fe_t *fe);
