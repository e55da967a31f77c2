/* logfmt logger. Lines are assembled in one buffer and written with a single write(2), so
 * lines from the loop and the watchdog thread never interleave. */
#include "core/log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static vg_log_level_t min_level = VG_LOG_INFO;
static vg_log_sink_fn sink;
static void *sink_ud;

static const char *const level_names[] = { "debug", "info", "warn", "error", "off" };

vg_log_level_t vg_log_set_level(vg_log_level_t level)
{
  vg_log_level_t old = min_level;
  min_level = level;
  return old;
}

bool vg_log_enabled(vg_log_level_t level)
{
  return level >= min_level && level < VG_LOG_OFF;
}

int vg_log_level_parse(const char *name)
{
  for (int i = 0; i <= VG_LOG_OFF; i++) {
    if (strcmp(name, level_names[i]) == 0) {
      return i;
    }
  }
  return -1;
}

const char *vg_log_level_name(vg_log_level_t level)
{
  return level_names[level];
}

void vg_log_set_sink(vg_log_sink_fn fn, void *ud)
{
  sink = fn;
  sink_ud = ud;
}

static bool needs_quotes(const char *s)
{
  if (*s == '\0') {
    return true;
  }
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p >= 0x7f) {
      return true;
    }
  }
  return false;
}

size_t vg_logfmt_value(char *buf, size_t cap, const char *value)
{
  size_t n = 0;
#define PUT(c)         \
  do {                 \
    if (n + 1 < cap) { \
      buf[n] = (c);    \
    }                  \
    n++;               \
  } while (0)
  if (!needs_quotes(value)) {
    for (const char *p = value; *p; p++) {
      PUT(*p);
    }
  } else {
    PUT('"');
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
      unsigned char c = *p;
      if (c == '"' || c == '\\') {
        PUT('\\');
        PUT((char)c);
      } else if (c == '\n') {
        PUT('\\');
        PUT('n');
      } else if (c == '\t') {
        PUT('\\');
        PUT('t');
      } else if (c < ' ' || c == 0x7f) {
        static const char hex[] = "0123456789abcdef";
        PUT('\\');
        PUT('x');
        PUT(hex[c >> 4]);
        PUT(hex[c & 15]);
      } else {
        PUT((char)c); /* UTF-8 passes through; control bytes never do */
      }
    }
    PUT('"');
  }
#undef PUT
  if (cap > 0) {
    buf[n < cap ? n : cap - 1] = '\0';
  }
  return n;
}

void vg_log_fields(vg_log_level_t level, const char *msg, const char *const *kv, size_t n)
{
  if (!vg_log_enabled(level)) {
    return;
  }
  char line[8192];
  size_t cap = sizeof(line) - 2; /* room for the newline */
  size_t len = 0;

  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  len += strftime(line, cap, "ts=%Y-%m-%dT%H:%M:%S", &tm);
  len += (size_t)snprintf(line + len, cap - len, ".%03ldZ level=%s msg=", ts.tv_nsec / 1000000L,
                          level_names[level]);
  if (len < cap) {
    len += vg_logfmt_value(line + len, cap - len, msg);
  }
  for (size_t i = 0; i + 1 < n && len < cap; i += 2) {
    if (kv[i + 1] == NULL) {
      continue;
    }
    /* keys come from our code or from a policy's table: render them as safe tokens too */
    line[len++] = ' ';
    for (const char *k = kv[i]; *k && len < cap; k++) {
      unsigned char c = (unsigned char)*k;
      line[len++] = (c > ' ' && c < 0x7f && c != '=' && c != '"') ? (char)c : '_';
    }
    if (len < cap) {
      line[len++] = '=';
    }
    if (len < cap) {
      len += vg_logfmt_value(line + len, cap - len, kv[i + 1]);
    }
  }
  if (len >= cap) {
    len = cap - 1; /* truncated: still one well-formed line */
  }
  if (sink != NULL) {
    line[len] = '\0';
    sink(line, sink_ud);
    return;
  }
  line[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}

void vg_logv(vg_log_level_t level, const char *msg, va_list ap)
{
  if (!vg_log_enabled(level)) {
    return;
  }
  const char *kv[64];
  size_t n = 0;
  for (;;) {
    const char *key = va_arg(ap, const char *);
    if (key == NULL || n + 2 > sizeof(kv) / sizeof(kv[0])) {
      break;
    }
    kv[n++] = key;
    kv[n++] = va_arg(ap, const char *);
  }
  vg_log_fields(level, msg, kv, n);
}

void vg_log(vg_log_level_t level, const char *msg, ...)
{
  va_list ap;
  va_start(ap, msg);
  vg_logv(level, msg, ap);
  va_end(ap);
}
