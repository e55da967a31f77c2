/* libFuzzer target: intake payload decoding (src/engine/alertdec.c). The first byte picks the
 * decoder ('0' v2 alerts, '1' webhook, '2' event, others modulo 3); the rest is the body.
 * Besides not crashing or leaking, every accepted alert must be normalised: labels sorted by
 * name without empty values, the fingerprint that of its labels, a known status and severity,
 * times in order for v2, and the counts consistent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/alertdec.h"

static void check(int cond)
{
  if (!cond) {
    abort();
  }
}

static int label_order(const vg_label_t *a, const vg_label_t *b)
{
  size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
  int c = memcmp(a->name, b->name, n);
  return c != 0 ? c : (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1) {
    return 0;
  }
  int which = data[0] % 3;
  const char *body = (const char *)data + 1;
  size_t len = size - 1;
  vg_alertdec_opts_t opts = { .now = 1700000000.0, .resolve_timeout = 300 };
  vg_alert_batch_t b;
  int status = 0;
  char err[512];
  int rc = which == 0   ? vg_alertdec_v2(body, len, &opts, &b, &status, err, sizeof(err))
           : which == 1 ? vg_alertdec_webhook(body, len, &opts, &b, &status, err, sizeof(err))
                        : vg_alertdec_event(body, len, &opts, &b, &status, err, sizeof(err));
  if (rc != 0) {
    check(status == 400 || status == 413 || status == 503);
    check(strlen(err) > 0);
    vg_alert_batch_free(&b);
    return 0;
  }
  check(b.n + b.rejected == b.total);
  check(b.nerrors <= VG_BATCH_MAX_ERRORS && b.nerrors <= b.rejected);
  static const char *const severities[] = { "critical", "high", "medium", "low", "info" };
  for (size_t i = 0; i < b.n; i++) {
    const vg_store_alert_t *a = &b.alerts[i];
    check(a->nlabels >= 1 && a->nlabels <= VG_ALERT_MAX_LABELS + 2);
    for (size_t k = 0; k < a->nlabels; k++) {
      check(a->labels[k].value_len > 0 && a->labels[k].name_len > 0);
      check(k == 0 || label_order(&a->labels[k - 1], &a->labels[k]) < 0);
    }
    char fp[17];
    vg_fingerprint(a->labels, a->nlabels, fp);
    check(strcmp(fp, a->fingerprint) == 0);
    check(strcmp(a->status, "firing") == 0 || strcmp(a->status, "resolved") == 0);
    int known = 0;
    for (int s = 0; s < 5; s++) {
      known |= strcmp(a->severity, severities[s]) == 0;
    }
    check(known);
    check(a->name != NULL && a->group_key != NULL && a->source != NULL);
    check(a->starts_at > 0);
    if (which == 0) {
      check(a->ends_at >= a->starts_at);
    }
    if (strcmp(a->status, "firing") == 0 && which != 0) {
      check(a->ends_at == 0);
    }
  }
  vg_alert_batch_free(&b);
  return 0;
}
