/* Structured logging: one logfmt line per event on stderr (ts, level, msg, then key=value).
 * Values are quoted and escaped as needed, so attacker-controlled text (alert labels, policy
 * output) can never forge a line or a field. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum { VG_LOG_DEBUG, VG_LOG_INFO, VG_LOG_WARN, VG_LOG_ERROR, VG_LOG_OFF } vg_log_level_t;

/* Sets the minimum level written; returns the previous one. */
vg_log_level_t vg_log_set_level(vg_log_level_t level);
bool vg_log_enabled(vg_log_level_t level);

/* Parses "debug", "info", "warn", "error", "off"; returns -1 for anything else. */
int vg_log_level_parse(const char *name);
const char *vg_log_level_name(vg_log_level_t level);

/* Logs `msg` with key/value string pairs, terminated by NULL:
 *   vg_log(VG_LOG_INFO, "policy loaded", "policy", name, "file", path, NULL);
 * A NULL value is skipped with its key. */
void vg_log(vg_log_level_t level, const char *msg, ...);
void vg_logv(vg_log_level_t level, const char *msg, va_list ap);

/* Same with the pairs in an array: kv[0], kv[1] are the first key and value. */
void vg_log_fields(vg_log_level_t level, const char *msg, const char *const *kv, size_t n);

/* Lets tests and the REPL capture log lines instead of stderr (NULL restores stderr). */
typedef void (*vg_log_sink_fn)(const char *line, void *ud);
void vg_log_set_sink(vg_log_sink_fn fn, void *ud);

/* Appends `value` to `buf` as a logfmt value (quoted when it needs to be). Returns the length
 * the full output would have, like snprintf. */
size_t vg_logfmt_value(char *buf, size_t cap, const char *value);
