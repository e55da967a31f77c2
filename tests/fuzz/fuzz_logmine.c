/* libFuzzer target for src/engine/logmine.c: the input's lines are mined (add, match, match-only)
 * by a miner with small caps, its snapshot is restored into a second miner, and the raw input is
 * also offered as a snapshot. Any crash, leak or sanitizer report is a bug. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/logmine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  vg_logmine_opts_t o;
  logmine_opts_default(&o);
  o.max_clusters = 8; /* small caps so eviction and folding run often */
  o.max_line = 256;
  o.max_tokens = 16;
  o.depth = size > 0 ? 1 + data[0] % 4 : 2;
  char err[128];
  vg_logmine_t *m = logmine_new(&o, err, sizeof err);
  vg_logmine_t *m2 = logmine_new(&o, err, sizeof err);
  if (m == NULL || m2 == NULL) {
    abort();
  }
  if (size > 1 && data[1] == '%') {
    (void)logmine_add_mask(m, "%d%d%a+", 7, err, sizeof err);
  }
  const char *p = (const char *)data, *end = p + size;
  size_t n = 0;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
    vg_logmine_result_t r;
    vg_logmine_status_t s =
        (n % 7 == 6) ? logmine_match(m, p, len, &r) : logmine_add(m, p, len, &r);
    if (s == VG_LOGMINE_MATCHED || s == VG_LOGMINE_CREATED) {
      for (size_t i = 0; i < r.nparams; i++) {
        if (r.params[i].off + r.params[i].len > len) {
          abort(); /* a parameter must lie inside its line */
        }
      }
      vg_logmine_template_t t;
      if (!logmine_get(m, r.id, &t) || strlen(t.text) != t.len) {
        abort();
      }
    }
    logmine_set_match_only(m, n % 13 == 12);
    p += len + 1;
    n++;
  }
  logmine_set_match_only(m, false);
  size_t slen;
  char *snap = logmine_snapshot(m, &slen);
  if (snap != NULL) {
    if (logmine_restore(m2, snap, slen, err, sizeof err) != 0) {
      abort(); /* our own snapshot must restore */
    }
    free(snap);
  }
  (void)logmine_restore(m2, (const char *)data, size, err, sizeof err);
  logmine_free(m);
  logmine_free(m2);
  return 0;
}
