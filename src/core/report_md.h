/* The incident report as Markdown, for `vigil report ID`. */
#pragma once

#include <jansson.h>
#include <stdio.h>

/* Writes the report document (GET /api/v1/incidents/{id}/report) to `out`: summary, duration,
 * affected services, classification and evidence, metrics, actions and outcomes,
 * escalations, timeline, similar past incidents, follow-ups. Returns -1 when `doc` is not a
 * report. */
int vg_report_markdown(json_t *doc, FILE *out);
