/* Decoding of intake payloads into normalised alerts (vg_store_alert_t): Alertmanager's v2
 * postable alerts, its webhook (version 4), and vigil's generic event. Pure C over jansson.
 * Everything here is attacker-controlled input: bodies are decoded strictly (valid UTF-8, no
 * NUL, no duplicate keys), every alert is validated on its own, and one bad alert never
 * spoils the others of its batch. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "engine/store.h"

/* Bounds on one alert (a violation rejects that alert, not the batch). */
#define VG_ALERT_MAX_LABELS 256
#define VG_ALERT_MAX_NAME 1024         /* bytes in a label or annotation name */
#define VG_ALERT_MAX_VALUE (64 * 1024) /* bytes in a label value */
#define VG_ALERT_MAX_ANNOTATION (256 * 1024)
#define VG_BATCH_MAX_ALERTS 50000 /* per request: more is refused as a whole (413) */
#define VG_BATCH_MAX_ERRORS 20    /* listed in the answer; the rest are counted */

typedef struct {
  vg_store_alert_t *alerts; /* the valid ones, in input order */
  size_t n;
  size_t *index;         /* index[i]: position of alerts[i] in the input */
  char **errors;         /* "alert 3: labels: at least one label is required" */
  size_t nerrors;        /* listed */
  size_t rejected;       /* invalid alerts, listed or not */
  size_t total;          /* alerts in the input */
  const char *group_key; /* the webhook's groupKey, or NULL */
  void *priv;            /* the decoded document and allocations */
} vg_alert_batch_t;

typedef struct {
  double now;             /* seconds since the epoch */
  double resolve_timeout; /* v2: endsAt of an alert sent without one is now + this (300) */
} vg_alertdec_opts_t;

/* Each returns 0 with `out` filled (possibly with zero valid alerts and some errors), or -1
 * when the body as a whole is unusable (not JSON, wrong top-level type, too many alerts),
 * with a message in err; *status is the HTTP status to answer then (400 or 413). */
int vg_alertdec_v2(const char *body,
                   size_t len,
                   const vg_alertdec_opts_t *opts,
                   vg_alert_batch_t *out,
                   int *status,
                   char *err,
                   size_t errlen);
int vg_alertdec_webhook(const char *body,
                        size_t len,
                        const vg_alertdec_opts_t *opts,
                        vg_alert_batch_t *out,
                        int *status,
                        char *err,
                        size_t errlen);
int vg_alertdec_event(const char *body,
                      size_t len,
                      const vg_alertdec_opts_t *opts,
                      vg_alert_batch_t *out,
                      int *status,
                      char *err,
                      size_t errlen);

void vg_alert_batch_free(vg_alert_batch_t *b);

/* RFC 3339 ("2024-07-02T09:41:30.123456789Z", "...+02:00") to seconds since the epoch.
 * Go's zero time "0001-01-01T00:00:00Z" gives 0. Returns false when malformed. */
bool vg_time_parse(const char *s, double *out);

/* Seconds since the epoch as "2024-07-02T09:41:30.123Z" (UTC, milliseconds). */
void vg_time_format(double t, char out[32]);

/* The severity vigil uses (critical|high|medium|low|info) for a label value: critical, crit,
 * fatal, emergency, page -> critical; high, error, err, major, severe -> high; warning, warn,
 * medium, moderate -> medium; low, minor -> low; info, informational, notice, none, debug,
 * ok -> info; anything else, or no label -> medium. Case-insensitive. */
const char *vg_severity_of(const char *label_value);
