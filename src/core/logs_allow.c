/* logs.allow: the check behind vigil.logs.tail (see logs_allow.h). The realpath calls run on
 * the loop thread once per tail() call, not per read. */
#include "core/logs_allow.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/runtime.h"

/* True when `path` (resolved) is `prefix` itself or inside it; the prefix is resolved too when
 * it exists (it may itself go through a symlink, as /var/log does on some systems). */
static bool under_prefix(const char *path, const char *prefix)
{
  char real[PATH_MAX];
  const char *p = realpath(prefix, real) != NULL ? real : prefix;
  size_t n = strlen(p);
  while (n > 0 && p[n - 1] == '/') {
    n--;
  }
  if (n == 0) {
    return true; /* "/" */
  }
  return strncmp(path, p, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

bool vg_logs_path_resolve(
    vg_runtime_t *rt, const char *path, char *out, size_t outlen, char *err, size_t errlen)
{
  if (path == NULL || path[0] != '/') {
    snprintf(err, errlen, "EDENIED: %s: not an absolute path", path ? path : "(null)");
    return false;
  }
  const char *const *allow = vg_config_logs_allow(rt != NULL ? rt->config : NULL);
  if (allow[0] == NULL) {
    snprintf(err, errlen, "EDENIED: %s: no logs.allow prefix in the config", path);
    return false;
  }
  char real[PATH_MAX];
  if (realpath(path, real) == NULL) {
    if (errno != ENOENT) {
      snprintf(err, errlen, "EDENIED: %s: cannot be resolved (%s)", path, strerror(errno));
      return false;
    }
    /* a file that does not exist yet: resolve its directory, keep its name */
    const char *slash = strrchr(path, '/');
    const char *base = slash + 1;
    if (base[0] == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
      snprintf(err, errlen, "EDENIED: %s: not a file name", path);
      return false;
    }
    char dir[PATH_MAX];
    size_t dlen = slash == path ? 1 : (size_t)(slash - path);
    if (dlen >= sizeof(dir)) {
      snprintf(err, errlen, "EDENIED: %s: path too long", path);
      return false;
    }
    memcpy(dir, path, dlen);
    dir[dlen] = '\0';
    if (realpath(dir, real) == NULL) {
      snprintf(err, errlen, "%s: %s: its directory cannot be resolved (%s)",
               errno == ENOENT ? "ENOENT" : "EDENIED", path, strerror(errno));
      return false;
    }
    size_t rlen = strlen(real);
    if (rlen + 1 + strlen(base) >= sizeof(real)) {
      snprintf(err, errlen, "EDENIED: %s: path too long", path);
      return false;
    }
    snprintf(real + rlen, sizeof(real) - rlen, "%s%s", real[rlen - 1] == '/' ? "" : "/", base);
  }
  for (size_t i = 0; allow[i] != NULL; i++) {
    if (under_prefix(real, allow[i])) {
      if (strlen(real) >= outlen) {
        snprintf(err, errlen, "EDENIED: %s: path too long", path);
        return false;
      }
      memcpy(out, real, strlen(real) + 1);
      return true;
    }
  }
  snprintf(err, errlen, "EDENIED: %s is not under a logs.allow prefix", path);
  return false;
}

bool vg_logs_path_allowed(vg_runtime_t *rt, const char *path, char *err, size_t errlen)
{
  char out[PATH_MAX];
  return vg_logs_path_resolve(rt, path, out, sizeof(out), err, errlen);
}
