/* An alert as the runtime passes it between C and policies. Strings are borrowed: whoever
 * builds a vg_alert_t keeps them alive until the dispatch returns (each policy VM gets its
 * own copy as a plain Lua table). */
#pragma once

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/labelmatch.h"

typedef struct {
  const vg_label_t *labels;
  size_t nlabels;
  const vg_label_t *annotations;
  size_t nannotations;
  const char *status; /* "firing" | "resolved" */
  double starts_at;   /* seconds since the epoch; 0 = unknown */
  double ends_at;
  const char *fingerprint;   /* may be NULL */
  const char *generator_url; /* may be NULL */
  int64_t incident_id;       /* the incident it belongs to; 0: none (specs, the REPL) */
} vg_alert_t;

/* Pushes the alert as a plain table: { labels = {...}, annotations = {...}, status, starts_at,
 * ends_at, fingerprint, generator_url, incident, name = labels.alertname,
 * severity = labels.severity }.
 * [-0, +1, m] */
void vg_alert_push(lua_State *L, const vg_alert_t *alert);

/* Reads the alert table at idx (raw access only, strings only) into `out`, whose strings
 * point into the Lua strings of that table: keep it on the stack while `out` is in use.
 * `labels` and `annotations` are caller-provided arrays of `cap` entries each. Raises a
 * clear error on a malformed alert. [-0, +0, v] */
void vg_alert_check(lua_State *L,
                    int idx,
                    vg_alert_t *out,
                    vg_label_t *labels,
                    vg_label_t *annotations,
                    size_t cap);
