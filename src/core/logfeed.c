/* Config-declared log tails feeding the named log analysers. A line is read, added to its
 * analyser (mined, counted in its minute) and forgotten: it is not stored. The file is the
 * operator's choice in the config, so it is not held to `logs.allow` (that list bounds what
 * policies may open). */
#include "core/logfeed.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "engine/logan.h"
#include "engine/tail.h"

typedef struct {
  vg_logfeed_t *feed;
  char analyser[VG_LOGAN_NAME_MAX + 1]; /* a copy: a config reload frees the old config */
  vg_tail_t *tail;
} follow_t;

struct vg_logfeed {
  vg_runtime_t *rt;
  follow_t *v;
  size_t n;
  size_t open; /* tails not yet closed */
  uint64_t lines, refused;
};

static void on_lines(void *ud, const vg_tail_line_t *lines, size_t n)
{
  follow_t *fw = ud;
  vg_logfeed_t *f = fw->feed;
  /* looked up by name each time: a restore replaces state, never the analyser itself, but
     the registry is the one place that says what exists */
  vg_logan_t *a = logan_registry_get(vg_runtime_logs(f->rt), fw->analyser);
  double now = vg_clock_now(f->rt);
  for (size_t i = 0; i < n; i++) {
    if (a != NULL && logan_add(a, lines[i].data, lines[i].len, now, NULL) >= 0) {
      f->lines++;
    } else {
      f->refused++;
    }
  }
}

vg_logfeed_t *vg_logfeed_start(vg_runtime_t *rt)
{
  const vg_config_t *cfg = rt->config;
  size_t want = 0;
  for (size_t i = 0; cfg != NULL && i < cfg->nlog_analysers; i++) {
    want += cfg->log_analysers[i].tail != NULL;
  }
  if (want == 0) {
    return NULL;
  }
  vg_logfeed_t *f = calloc(1, sizeof *f);
  if (f == NULL || (f->v = calloc(want, sizeof *f->v)) == NULL) {
    free(f);
    return NULL;
  }
  f->rt = rt;
  vg_logan_registry_t *r = vg_runtime_logs(rt); /* creates the declared analysers */
  for (size_t i = 0; i < cfg->nlog_analysers; i++) {
    const vg_log_analyser_config_t *la = &cfg->log_analysers[i];
    if (la->tail == NULL) {
      continue;
    }
    if (r == NULL || logan_registry_get(r, la->name) == NULL) {
      vg_log(VG_LOG_ERROR, "log file not followed: its analyser does not exist", "analyser",
             la->name, "path", la->tail, NULL);
      continue;
    }
    follow_t *fw = &f->v[f->n];
    fw->feed = f;
    snprintf(fw->analyser, sizeof fw->analyser, "%s", la->name);
    vg_tail_opts_t o;
    tail_opts_default(&o);
    char err[256];
    fw->tail = tail_open(rt->loop, la->tail, &o, on_lines, fw, err, sizeof err);
    if (fw->tail == NULL) {
      vg_log(VG_LOG_ERROR, "log file not followed", "analyser", la->name, "path", la->tail, "error",
             err, NULL);
      continue;
    }
    vg_log(VG_LOG_INFO, "following a log file", "analyser", la->name, "path", la->tail, NULL);
    f->n++;
    f->open++;
  }
  return f;
}

void vg_logfeed_stats(const vg_logfeed_t *f, uint64_t *lines, uint64_t *refused)
{
  *lines = f != NULL ? f->lines : 0;
  *refused = f != NULL ? f->refused : 0;
}

static void on_closed(void *ud)
{
  vg_logfeed_t *f = ud;
  if (--f->open == 0) {
    free(f->v);
    free(f);
  }
}

void vg_logfeed_stop(vg_logfeed_t *f)
{
  if (f == NULL) {
    return;
  }
  if (f->open == 0) {
    free(f->v);
    free(f);
    return;
  }
  for (size_t i = 0; i < f->n; i++) {
    tail_close(f->v[i].tail, on_closed, f);
  }
}
