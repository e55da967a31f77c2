/* Config loading. The file runs in its own sandboxed VM with a small budget; its result is
 * read with raw access only. Unknown keys are errors (with a suggestion) because a mistyped
 * key silently ignored is how safety limits get lost. */
#include "core/config.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/runtime.h"
#include "core/sandbox.h"

#define SECRET_MT "vigil.secret"

void vg_config_defaults(vg_config_t *cfg)
{
  memset(cfg, 0, sizeof(*cfg));
  cfg->listen = strdup("127.0.0.1:9095");
  cfg->store = strdup("vigil.db");
  cfg->policies = strdup("policies");
  cfg->repl_socket = strdup("vigil.sock");
  cfg->executor_mode = strdup("dry-run");
  vg_executor_opts_default(&cfg->executor);
  cfg->log_level = VG_LOG_INFO;
  vg_limits_default(&cfg->limits);
  cfg->error_budget = 5;
  cfg->error_window_ms = 5 * 60 * 1000;
  cfg->drain_ms = 30 * 1000;
  cfg->debounce_ms = 200;
  cfg->snapshot_ms = 30 * 1000;
  cfg->watchdog_ms = 5000;
  cfg->watchdog_hard_ms = 30000;
  cfg->max_body = 8u << 20;
  cfg->resolve_timeout_ms = 5 * 60 * 1000;
  cfg->header_timeout_ms = 10 * 1000;
  cfg->body_timeout_ms = 30 * 1000;
  cfg->idle_timeout_ms = 60 * 1000;
  cfg->max_connections = 1024;
  cfg->max_policy_tasks = 256;
  cfg->retention_ms = 30ull * 24 * 3600 * 1000;
  cfg->max_alerts = 1000000;
  cfg->reopen_grace_ms = 5 * 60 * 1000;
}

/* Frees a string that may hold a secret, overwriting it first. */
static void free_secret(char *s)
{
  if (s != NULL) {
    memset(s, 0, strlen(s));
    free(s);
  }
}

void vg_config_free(vg_config_t *cfg)
{
  free(cfg->path);
  free(cfg->listen);
  free(cfg->store);
  free(cfg->policies);
  free(cfg->repl_socket);
  free(cfg->executor_mode);
  free(cfg->kill_switch_file);
  free(cfg->storm_label);
  for (size_t i = 0; i < cfg->nguard_types; i++) {
    free((char *)cfg->guard_types[i].type);
  }
  free(cfg->guard_types);
  for (size_t i = 0; i < cfg->nexec_allow; i++) {
    free(cfg->exec_allow[i]);
  }
  free(cfg->exec_allow);
  for (size_t i = 0; i < cfg->nlogs_allow; i++) {
    free(cfg->logs_allow[i]);
  }
  free(cfg->logs_allow);
  for (size_t i = 0; i < cfg->nlog_analysers; i++) {
    free(cfg->log_analysers[i].name);
    free(cfg->log_analysers[i].tail);
  }
  free(cfg->log_analysers);
  for (size_t i = 0; i < cfg->nexec_env; i++) {
    free(cfg->exec_env[i]);
  }
  free(cfg->exec_env);
  free(cfg->exec_helper);
  free(cfg->exec_scratch);
  free(cfg->exec_user);
  free(cfg->exec_landlock);
  free(cfg->exec_seccomp);
  free(cfg->exec_ports);
  free_secret(cfg->token);
  for (size_t i = 0; i < cfg->nsources; i++) {
    vg_source_config_t *sc = &cfg->sources[i];
    free(sc->name);
    free(sc->kind);
    free(sc->url);
    for (size_t k = 0; k < sc->nheaders; k++) {
      memset(sc->headers[k], 0, strlen(sc->headers[k]));
      free(sc->headers[k]);
    }
    free(sc->headers);
  }
  free(cfg->sources);
  for (size_t i = 0; i < cfg->nnotifiers; i++) {
    vg_notifier_config_t *nc = &cfg->notifiers[i];
    free(nc->name);
    free(nc->kind);
    free(nc->url);
    free_secret(nc->routing_key);
    free_secret(nc->webhook);
    free_secret(nc->secret);
    free(nc->channel);
    free(nc->username);
    for (size_t k = 0; k < nc->nheaders; k++) {
      free(nc->headers[k].name);
      free_secret(nc->headers[k].value);
    }
    free(nc->headers);
  }
  free(cfg->notifiers);
  memset(cfg, 0, sizeof(*cfg));
}

int vg_config_apply_sources(const vg_config_t *cfg, struct vg_sources *ss)
{
  for (size_t i = 0; i < cfg->nsources; i++) {
    const vg_source_config_t *sc = &cfg->sources[i];
    vg_source_t *s = vg_sources_get(ss, sc->name, NULL);
    if (s == NULL ||
        vg_source_configure(s, &sc->policy, (const char *const *)sc->headers, sc->nheaders) != 0) {
      return -1;
    }
  }
  return 0;
}

const vg_source_config_t *vg_config_source(const vg_config_t *cfg, const char *name)
{
  for (size_t i = 0; cfg != NULL && i < cfg->nsources; i++) {
    if (strcmp(cfg->sources[i].name, name) == 0) {
      return &cfg->sources[i];
    }
  }
  return NULL;
}

const vg_notifier_config_t *vg_config_notifier(const vg_config_t *cfg, const char *name)
{
  for (size_t i = 0; cfg != NULL && i < cfg->nnotifiers; i++) {
    if (strcmp(cfg->notifiers[i].name, name) == 0) {
      return &cfg->notifiers[i];
    }
  }
  return NULL;
}

/* ---- secrets ---- */

typedef struct {
  char origin[200]; /* "env:NAME" or "file:/path": safe to show */
  size_t len;
  char value[];
} secret_t;

static int secret_tostring(lua_State *L)
{
  secret_t *s = luaL_checkudata(L, 1, SECRET_MT);
  lua_pushfstring(L, "<secret %s>", s->origin);
  return 1;
}

static void push_secret(lua_State *L, const char *origin, const char *value, size_t len)
{
  secret_t *s = lua_newuserdatauv(L, sizeof(*s) + len + 1, 0);
  snprintf(s->origin, sizeof(s->origin), "%s", origin);
  s->len = len;
  memcpy(s->value, value, len);
  s->value[len] = '\0';
  if (luaL_newmetatable(L, SECRET_MT)) {
    lua_pushcfunction(L, secret_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
}

/* env "NAME": the variable's value as a secret; an unset variable is an error. */
static int cfg_env(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  const char *value = getenv(name);
  if (value == NULL) {
    return luaL_error(L, "env: environment variable %s is not set", name);
  }
  char origin[160];
  snprintf(origin, sizeof(origin), "env:%s", name);
  push_secret(L, origin, value, strlen(value));
  return 1;
}

/* file "PATH": the file's content (one trailing newline trimmed) as a secret. */
static int cfg_file(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    return luaL_error(L, "file: cannot read %s: %s", path, strerror(errno));
  }
  char buf[8192];
  size_t n = fread(buf, 1, sizeof(buf), f);
  bool more = fgetc(f) != EOF;
  fclose(f);
  if (more) {
    return luaL_error(L, "file: %s is larger than 8 KiB, which is not a secret", path);
  }
  if (n > 0 && buf[n - 1] == '\n') {
    n--;
  }
  if (n > 0 && buf[n - 1] == '\r') {
    n--;
  }
  char origin[160];
  snprintf(origin, sizeof(origin), "file:%s", path);
  push_secret(L, origin, buf, n);
  memset(buf, 0, sizeof(buf));
  return 1;
}

/* ---- reading the table ---- */

typedef struct {
  vg_config_t *cfg;
  const char *path;
  const char *text;
  vg_budget_t *budget; /* the file's top level runs under it */
} load_ctx_t;

/* Largest duration and size a config accepts: beyond them a number cannot be converted
 * exactly (or at all), and no real setting comes near (about 285 years; 8 PiB). */
#define MAX_DURATION_MS 9e15
#define MAX_BYTES 0x1p53

static int line_of(const char *text, const char *key)
{
  if (text == NULL) {
    return 1;
  }
  size_t k = strlen(key);
  int line = 1;
  for (const char *p = text; *p; p++) {
    if (*p == '\n') {
      line++;
    } else if (strncmp(p, key, k) == 0 && (p == text || (p[-1] != '_' && p[-1] != '.'))) {
      const char *q = p + k;
      while (*q == ' ' || *q == '\t') {
        q++;
      }
      if (*q == '=' && q[1] != '=') {
        return line;
      }
    }
  }
  return 1;
}

/* Raises "file:line: message" for `key`. Declared noreturn (luaL_error does not return) so
 * that the compiler and the analyzer know a failed check stops there. */
__attribute__((noreturn, format(printf, 4, 5))) static void key_error(
    lua_State *L, load_ctx_t *c, const char *key, const char *fmt, ...)
{
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  luaL_error(L, "%s:%d: %s", c->path, line_of(c->text, key), msg);
  abort(); /* not reached */
}

static void set_str(char **slot, const char *v)
{
  free(*slot);
  *slot = strdup(v);
}

/* String option: the value at the top of the stack, popped. */
static void opt_string(lua_State *L, load_ctx_t *c, const char *key, char **slot)
{
  if (lua_type(L, -1) != LUA_TSTRING) {
    key_error(L, c, key, "%s must be a string, not a %s", key, luaL_typename(L, -1));
  }
  set_str(slot, lua_tostring(L, -1));
}

/* Duration option (seconds as a number, or "30s"): the value at the top of the stack. */
static uint64_t opt_duration(lua_State *L, load_ctx_t *c, const char *key)
{
  char err[160];
  int64_t ms;
  if (lua_type(L, -1) == LUA_TNUMBER) {
    double s = lua_tonumber(L, -1);
    if (isnan(s)) {
      key_error(L, c, key, "%s must be a duration like \"30s\", not NaN", key);
    }
    if (s * 1000.0 > MAX_DURATION_MS) {
      key_error(L, c, key, "%s is too large (at most 9e12 seconds, about 285 years)", key);
    }
    ms = s > 0 ? (int64_t)llround(s * 1000.0) : 0;
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    ms = vg_duration_parse(lua_tostring(L, -1), err, sizeof(err));
    if (ms < 0) {
      key_error(L, c, key, "%s: %s", key, err);
    }
  } else {
    key_error(L, c, key, "%s must be a duration like \"30s\"", key);
    return 0;
  }
  if (ms <= 0) {
    key_error(L, c, key, "%s must be positive", key);
  }
  return (uint64_t)ms;
}

/* Size option (bytes as a number, or "64MB"): the value at the top of the stack. */
static size_t opt_bytes(lua_State *L, load_ctx_t *c, const char *key)
{
  double v = 0, scale = 0;
  if (lua_type(L, -1) == LUA_TNUMBER) {
    v = lua_tonumber(L, -1);
    scale = v >= (1 << 20) ? 1 : 0;
  }
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  char *end = NULL;
  if (s != NULL) {
    v = strtod(s, &end);
  }
  if (end == NULL || end == s) {
    /* a number, or a string that does not start with one */
  } else if (strcmp(end, "MB") == 0 || strcmp(end, "MiB") == 0) {
    scale = 1 << 20;
  } else if (strcmp(end, "GB") == 0 || strcmp(end, "GiB") == 0) {
    scale = 1 << 30;
  } else if (strcmp(end, "KB") == 0 || strcmp(end, "KiB") == 0) {
    scale = 1 << 10;
  }
  if (scale == 0 || !(v * scale >= (1 << 20))) { /* NaN fails too */
    key_error(L, c, key, "%s must be a size like \"64MB\" (at least 1MB)", key);
  }
  if (v * scale > MAX_BYTES || v * scale >= (double)SIZE_MAX) {
    key_error(L, c, key, "%s is too large (at most 8PiB)", key);
  }
  return (size_t)(v * scale);
}

static const char *suggest(const char *key, const char *const *known)
{
  for (int i = 0; known[i] != NULL; i++) {
    size_t a = strlen(key), b = strlen(known[i]);
    size_t common = 0;
    while (common < a && common < b && key[common] == known[i][common]) {
      common++;
    }
    if (common >= 3 || (a == b && a > 2 && strncmp(key + 1, known[i] + 1, a - 1) == 0)) {
      return known[i];
    }
  }
  return NULL;
}

static void check_known(
    lua_State *L, load_ctx_t *c, int tbl, const char *section, const char *const *known)
{
  lua_pushnil(L);
  while (lua_next(L, tbl) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      key_error(L, c, "", "%s: keys must be strings", section);
    }
    const char *key = lua_tostring(L, -1);
    bool ok = false;
    for (int i = 0; known[i] != NULL && !ok; i++) {
      ok = strcmp(key, known[i]) == 0;
    }
    if (!ok) {
      const char *hint = suggest(key, known);
      if (hint != NULL) {
        key_error(L, c, key, "unknown key '%s%s' (did you mean '%s'?)", section, key, hint);
      }
      key_error(L, c, key, "unknown key '%s%s'", section, key);
    }
  }
}

static void read_limits(lua_State *L, load_ctx_t *c, int tbl)
{
  static const char *const known[] = { "memory", "instructions", "slice", "timeout", NULL };
  check_known(L, c, tbl, "limits.", known);
  vg_limits_t *lim = &c->cfg->limits;
  if (lua_getfield(L, tbl, "memory") != LUA_TNIL) {
    lim->memory = opt_bytes(L, c, "memory");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "instructions") != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 100000) {
      key_error(L, c, "instructions", "limits.instructions must be an integer >= 100000");
    }
    lim->instructions = (uint64_t)lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "slice") != LUA_TNIL) {
    lim->slice_ms = opt_duration(L, c, "slice");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "timeout") != LUA_TNIL) {
    lim->timeout_ms = opt_duration(L, c, "timeout");
  }
  lua_pop(L, 1);
}

static void read_intake(lua_State *L, load_ctx_t *c, int tbl)
{
  static const char *const known[] = { "max_body",        "resolve_timeout",  "auth_reads",
                                       "header_timeout",  "body_timeout",     "idle_timeout",
                                       "max_connections", "max_policy_tasks", NULL };
  check_known(L, c, tbl, "intake.", known);
  vg_config_t *cfg = c->cfg;
  if (lua_getfield(L, tbl, "max_body") != LUA_TNIL) {
    cfg->max_body = opt_bytes(L, c, "max_body");
  }
  lua_pop(L, 1);
  uint64_t *durations[] = { &cfg->resolve_timeout_ms, &cfg->header_timeout_ms,
                            &cfg->body_timeout_ms, &cfg->idle_timeout_ms };
  const char *const dnames[] = { "resolve_timeout", "header_timeout", "body_timeout",
                                 "idle_timeout" };
  for (int i = 0; i < 4; i++) {
    if (lua_getfield(L, tbl, dnames[i]) != LUA_TNIL) {
      *durations[i] = opt_duration(L, c, dnames[i]);
    }
    lua_pop(L, 1);
  }
  if (lua_getfield(L, tbl, "auth_reads") != LUA_TNIL) {
    if (!lua_isboolean(L, -1)) {
      key_error(L, c, "auth_reads", "intake.auth_reads must be true or false");
    }
    cfg->auth_reads = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  const char *const counts[] = { "max_connections", "max_policy_tasks" };
  uint32_t *cslots[] = { &cfg->max_connections, &cfg->max_policy_tasks };
  for (int i = 0; i < 2; i++) {
    if (lua_getfield(L, tbl, counts[i]) != LUA_TNIL) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 1000000) {
        key_error(L, c, counts[i], "intake.%s must be an integer from 1 to 1000000", counts[i]);
      }
      *cslots[i] = (uint32_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
  }
}

/* Adds "Name: value" to a source's headers; value may be a secret. */
static void add_header(
    lua_State *L, load_ctx_t *c, vg_source_config_t *sc, const char *name, const char *value)
{
  size_t len = strlen(name) + strlen(value) + 3;
  char *h = malloc(len);
  char **grown = realloc(sc->headers, (sc->nheaders + 1) * sizeof(char *));
  if (h == NULL || grown == NULL) {
    free(h);
    if (grown != NULL) {
      sc->headers = grown;
    }
    key_error(L, c, name, "out of memory");
  }
  sc->headers = grown;
  snprintf(h, len, "%s: %s", name, value);
  sc->headers[sc->nheaders++] = h;
}

/* A header value from the config: a plain string, or a secret (env/file). */
static const char *header_value(
    lua_State *L, load_ctx_t *c, int idx, const char *key, bool must_be_secret)
{
  secret_t *sec = luaL_testudata(L, idx, SECRET_MT);
  if (sec != NULL) {
    return sec->value;
  }
  if (must_be_secret || lua_type(L, idx) != LUA_TSTRING) {
    key_error(L, c, key, "%s must come from env \"NAME\" or file \"PATH\"%s", key,
              must_be_secret ? ", never a literal in the config file" : " or be a string");
  }
  const char *v = lua_tostring(L, idx);
  if (strpbrk(v, "\r\n") != NULL) {
    key_error(L, c, key, "%s must not contain CR or LF", key);
  }
  return v;
}

static void read_source(lua_State *L, load_ctx_t *c, int tbl, vg_source_config_t *sc)
{
  static const char *const known[] = {
    "kind",
    "url",
    "timeout",
    "max_concurrency",
    "max_queue",
    "retries",
    "backoff",
    "backoff_max",
    "breaker_failures",
    "breaker_cooldown",
    "token",
    "api_key",
    "app_key",
    "site",
    "headers",
    NULL,
  };
  char prefix[96];
  snprintf(prefix, sizeof(prefix), "sources.%s.", sc->name);
  check_known(L, c, tbl, prefix, known);
  static const char *const kinds[] = { "prometheus",   "loki", "jaeger", "datadog",
                                       "alertmanager", "http", NULL };
  if (lua_getfield(L, tbl, "kind") != LUA_TSTRING) {
    key_error(L, c, "kind",
              "sources.%s.kind must be one of prometheus, loki, jaeger, datadog, alertmanager, "
              "http",
              sc->name);
  }
  bool known_kind = false;
  for (int i = 0; kinds[i] != NULL; i++) {
    known_kind = known_kind || strcmp(lua_tostring(L, -1), kinds[i]) == 0;
  }
  if (!known_kind) {
    key_error(L, c, "kind",
              "sources.%s.kind must be one of prometheus, loki, jaeger, datadog, alertmanager, "
              "http",
              sc->name);
  }
  sc->kind = strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  bool datadog = strcmp(sc->kind, "datadog") == 0;
  if (lua_getfield(L, tbl, "url") == LUA_TSTRING) {
    const char *u = lua_tostring(L, -1);
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
      key_error(L, c, "url", "sources.%s.url must start with http:// or https://", sc->name);
    }
    sc->url = strdup(u);
  } else if (!lua_isnil(L, -1)) {
    key_error(L, c, "url", "sources.%s.url must be a string", sc->name);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "site") == LUA_TSTRING && datadog && sc->url == NULL) {
    char u[300];
    snprintf(u, sizeof(u), "https://api.%s", lua_tostring(L, -1));
    sc->url = strdup(u);
  }
  lua_pop(L, 1);
  if (sc->url == NULL) {
    sc->url = datadog ? strdup("https://api.datadoghq.com") : NULL;
    if (sc->url == NULL) {
      key_error(L, c, "url", "sources.%s needs a url", sc->name);
    }
  }
  vg_source_opts_default(&sc->policy);
  sc->timeout_ms = 10000;
  if (lua_getfield(L, tbl, "timeout") != LUA_TNIL) {
    sc->timeout_ms = opt_duration(L, c, "timeout");
  }
  lua_pop(L, 1);
  const char *const ints[] = { "max_concurrency", "max_queue", "retries", "breaker_failures" };
  uint32_t *islots[] = { &sc->policy.max_concurrency, &sc->policy.max_queue, &sc->policy.retries,
                         &sc->policy.breaker_failures };
  for (int i = 0; i < 4; i++) {
    if (lua_getfield(L, tbl, ints[i]) != LUA_TNIL) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 100000) {
        key_error(L, c, ints[i], "sources.%s.%s must be an integer from 0 to 100000", sc->name,
                  ints[i]);
      }
      *islots[i] = (uint32_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
  }
  const char *const durs[] = { "backoff", "backoff_max", "breaker_cooldown" };
  uint64_t *dslots[] = { &sc->policy.backoff_ms, &sc->policy.backoff_max_ms,
                         &sc->policy.breaker_cooldown_ms };
  for (int i = 0; i < 3; i++) {
    if (lua_getfield(L, tbl, durs[i]) != LUA_TNIL) {
      *dslots[i] = opt_duration(L, c, durs[i]);
    }
    lua_pop(L, 1);
  }
  if (lua_getfield(L, tbl, "token") != LUA_TNIL) {
    char bearer[16] = "Bearer ";
    const char *v = header_value(L, c, -1, "token", true);
    size_t len = strlen(bearer) + strlen(v) + 1;
    char *val = malloc(len);
    if (val == NULL) {
      key_error(L, c, "token", "out of memory");
    }
    snprintf(val, len, "%s%s", bearer, v);
    add_header(L, c, sc, "Authorization", val);
    memset(val, 0, len);
    free(val);
  }
  lua_pop(L, 1);
  const char *const dd[] = { "api_key", "app_key" };
  const char *const dd_headers[] = { "DD-API-KEY", "DD-APPLICATION-KEY" };
  for (int i = 0; i < 2; i++) {
    if (lua_getfield(L, tbl, dd[i]) != LUA_TNIL) {
      add_header(L, c, sc, dd_headers[i], header_value(L, c, -1, dd[i], true));
    }
    lua_pop(L, 1);
  }
  if (lua_getfield(L, tbl, "headers") == LUA_TTABLE) {
    int ht = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, ht) != 0) {
      if (lua_type(L, -2) != LUA_TSTRING || strpbrk(lua_tostring(L, -2), ":\r\n ") != NULL) {
        key_error(L, c, "headers", "sources.%s.headers must map header names to values", sc->name);
      }
      add_header(L, c, sc, lua_tostring(L, -2), header_value(L, c, -1, "headers", false));
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    key_error(L, c, "headers", "sources.%s.headers must be a table", sc->name);
  }
  lua_pop(L, 1);
}

/* A name for a source or a notifier: 1 to 63 letters, digits, _ and -. */
static bool name_ok(const char *name)
{
  bool ok = name != NULL && *name != '\0' && strlen(name) < 64;
  for (const char *p = name; ok && *p; p++) {
    ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
         *p == '_' || *p == '-';
  }
  return ok;
}

static void read_sources(lua_State *L, load_ctx_t *c, int tbl)
{
  vg_config_t *cfg = c->cfg;
  lua_pushnil(L);
  while (lua_next(L, tbl) != 0) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (!name_ok(name)) {
      key_error(L, c, "sources",
                "sources must map names (letters, digits, _ and -) to tables { kind = ..., url "
                "= ... }");
    }
    if (lua_type(L, -1) != LUA_TTABLE) {
      key_error(L, c, "sources", "sources.%s must be a table { kind = ..., url = ... }", name);
    }
    vg_source_config_t *grown =
        realloc(cfg->sources, (cfg->nsources + 1) * sizeof(vg_source_config_t));
    if (grown == NULL) {
      key_error(L, c, "sources", "out of memory");
    }
    cfg->sources = grown;
    vg_source_config_t *sc = &cfg->sources[cfg->nsources++];
    memset(sc, 0, sizeof(*sc));
    sc->name = strdup(name);
    read_source(L, c, lua_gettop(L), sc);
    lua_pop(L, 1);
  }
}

/* ---- log analysers ---- */

/* A positive number option of a log analyser: the value at the top of the stack. */
static double opt_positive(lua_State *L, load_ctx_t *c, const char *name, const char *key)
{
  int isnum;
  double v = lua_tonumberx(L, -1, &isnum);
  if (!isnum || !(v > 0) || !isfinite(v)) {
    key_error(L, c, key, "logs.analysers.%s.%s must be a positive number", name, key);
  }
  return v;
}

/* logs.analysers = { name = { window = "1h", spike_factor = 3, ... } } (the options of
 * vigil.logs.analyser, docs/logs.md). */
static void read_log_analysers(lua_State *L, load_ctx_t *c, int tbl)
{
  static const char *const known[] = {
    "window",     "recent",        "spike_factor", "spike_min", "trend_factor",
    "trend_min",  "max_events",    "max_services", "detector",  "detector_window",
    "similarity", "max_templates", "tail",         NULL,
  };
  vg_config_t *cfg = c->cfg;
  if (lua_type(L, tbl) != LUA_TTABLE) {
    key_error(L, c, "analysers", "logs.analysers must be a table of name = { options }");
  }
  lua_pushnil(L);
  while (lua_next(L, tbl) != 0) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (name == NULL || name[0] == '\0' || strlen(name) > VG_LOGAN_NAME_MAX) {
      key_error(L, c, "analysers", "logs.analysers must map names (1..%d bytes) to tables",
                VG_LOGAN_NAME_MAX);
    }
    if (lua_type(L, -1) != LUA_TTABLE) {
      key_error(L, c, name, "logs.analysers.%s must be a table of options", name);
    }
    int t = lua_gettop(L);
    char section[VG_LOGAN_NAME_MAX + 32];
    snprintf(section, sizeof(section), "logs.analysers.%s.", name);
    check_known(L, c, t, section, known);
    vg_logan_opts_t o;
    logan_opts_default(&o);
    const char *tail = NULL; /* the table being read keeps the string alive */
    for (int k = 0; known[k] != NULL; k++) {
      const char *key = known[k];
      if (lua_getfield(L, t, key) == LUA_TNIL) {
        lua_pop(L, 1);
        continue;
      }
      if (strcmp(key, "tail") == 0) {
        if (lua_type(L, -1) != LUA_TSTRING || lua_tostring(L, -1)[0] != '/') {
          key_error(L, c, key, "logs.analysers.%s.tail must be an absolute file path", name);
        }
        tail = lua_tostring(L, -1);
        lua_pop(L, 1);
        continue;
      }
      if (strcmp(key, "window") == 0 || strcmp(key, "recent") == 0) {
        uint64_t ms = opt_duration(L, c, key);
        uint32_t secs = ms / 1000 > 86400 * 2 ? 86400 * 2 : (uint32_t)(ms / 1000);
        *(key[0] == 'w' ? &o.window : &o.recent) = secs;
      } else if (strcmp(key, "detector") == 0) {
        int kind = lua_type(L, -1) == LUA_TSTRING ? detect_kind_parse(lua_tostring(L, -1)) : -1;
        if (kind < 0) {
          key_error(L, c, key, "logs.analysers.%s.detector must name a detector kind", name);
        }
        o.detector = (vg_detect_kind_t)kind;
      } else {
        double v = opt_positive(L, c, name, key);
        if (strcmp(key, "spike_factor") == 0) {
          o.spike_factor = v;
        } else if (strcmp(key, "spike_min") == 0) {
          o.spike_min = v;
        } else if (strcmp(key, "trend_factor") == 0) {
          o.trend_factor = v;
        } else if (strcmp(key, "trend_min") == 0) {
          o.trend_min = v;
        } else if (strcmp(key, "similarity") == 0) {
          o.miner.similarity = v;
        } else {
          uint64_t n = v >= 4e9 ? 4000000000u : (uint64_t)v;
          if ((double)n != v) {
            key_error(L, c, key, "logs.analysers.%s.%s must be a positive integer", name, key);
          }
          if (strcmp(key, "max_events") == 0) {
            o.max_events = (uint32_t)n;
          } else if (strcmp(key, "max_services") == 0) {
            o.max_services = (uint32_t)n;
          } else if (strcmp(key, "detector_window") == 0) {
            o.detector_window = (uint32_t)n;
          } else {
            o.miner.max_clusters = (size_t)n;
          }
        }
      }
      lua_pop(L, 1);
    }
    char err[160];
    if (logan_opts_check(&o, err, sizeof(err)) != 0) {
      key_error(L, c, name, "logs.analysers.%s: %s", name, err);
    }
    vg_log_analyser_config_t *grown =
        realloc(cfg->log_analysers, (cfg->nlog_analysers + 1) * sizeof(*grown));
    if (grown == NULL) {
      key_error(L, c, "analysers", "out of memory");
    }
    cfg->log_analysers = grown;
    vg_log_analyser_config_t *la = &cfg->log_analysers[cfg->nlog_analysers];
    la->name = strdup(name);
    if (la->name == NULL) {
      key_error(L, c, "analysers", "out of memory");
    }
    la->opts = o;
    la->tail = tail != NULL ? strdup(tail) : NULL;
    if (tail != NULL && la->tail == NULL) {
      free(la->name);
      key_error(L, c, "analysers", "out of memory");
    }
    cfg->nlog_analysers++;
    lua_pop(L, 1);
  }
}

size_t vg_config_apply_logs(const vg_config_t *cfg, struct vg_logan_registry *r)
{
  size_t n = 0;
  for (size_t i = 0; cfg != NULL && r != NULL && i < cfg->nlog_analysers; i++) {
    const vg_log_analyser_config_t *la = &cfg->log_analysers[i];
    if (logan_registry_get(r, la->name) != NULL) {
      continue;
    }
    char err[160];
    if (logan_registry_add(r, la->name, &la->opts, err, sizeof(err)) == NULL) {
      vg_log(VG_LOG_ERROR, "log analyser from the config not created", "analyser", la->name,
             "error", err, NULL);
      continue;
    }
    n++;
  }
  return n;
}

/* ---- notifiers ---- */

/* What each kind of notifier takes besides `kind`, and which of it is required. */
static const struct {
  const char *kind;
  const char *const keys[5];
  const char *required;
  const char *takes; /* for messages */
} notifier_kinds[] = {
  { "pagerduty", { "kind", "routing_key", "url", NULL }, "routing_key", "routing_key, url" },
  { "slack",
    { "kind", "webhook", "channel", "username", NULL },
    "webhook",
    "webhook, channel, username" },
  { "webhook", { "kind", "url", "secret", "headers", NULL }, "url", "url, secret, headers" },
};

/* An http(s) URL with a host and no blanks or control characters. */
static bool http_url_ok(const char *u)
{
  size_t skip = strncasecmp(u, "http://", 7) == 0 ? 7 : strncasecmp(u, "https://", 8) == 0 ? 8 : 0;
  if (skip == 0 || u[skip] == '\0' || strchr("/?#", u[skip]) != NULL || strlen(u) > 4096) {
    return false;
  }
  for (const unsigned char *p = (const unsigned char *)u; *p; p++) {
    if (*p <= ' ' || *p == 0x7f) {
      return false;
    }
  }
  return true;
}

/* A secret-only option (the value at the top of the stack) into *slot: env "NAME" or
 * file "PATH", never a literal, which is refused as `token` is and not repeated. The copy
 * goes into the config at once, so vg_config_free wipes it even when a later check fails. */
static void opt_secret(lua_State *L, load_ctx_t *c, const char *key, const char *owner, char **slot)
{
  secret_t *s = luaL_testudata(L, -1, SECRET_MT);
  if (s == NULL) {
    key_error(L, c, key,
              "%s.%s must come from env \"NAME\" or file \"PATH\", never a literal in the "
              "config file",
              owner, key);
  }
  if (s->len == 0 || strlen(s->value) != s->len || strpbrk(s->value, "\r\n") != NULL) {
    key_error(L, c, key, "%s.%s must be non-empty, without NUL, CR or LF (value not shown)", owner,
              key);
  }
  if ((*slot = strdup(s->value)) == NULL) {
    key_error(L, c, key, "out of memory");
  }
}

/* A short plain string option (the value at the top of the stack) into *slot. */
static void opt_text(
    lua_State *L, load_ctx_t *c, const char *key, const char *owner, size_t max, char **slot)
{
  const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  bool ok = v != NULL && *v != '\0' && strlen(v) <= max;
  for (const unsigned char *p = (const unsigned char *)v; ok && *p; p++) {
    ok = *p >= ' ' && *p != 0x7f;
  }
  if (!ok) {
    key_error(L, c, key, "%s.%s must be a string of 1 to %zu characters without control codes",
              owner, key, max);
  }
  set_str(slot, v);
}

/* A webhook notifier's headers: names as the notify builder accepts them, values plain
 * strings or secrets; Content-Type and the signature headers are the builder's. */
static void read_notifier_headers(
    lua_State *L, load_ctx_t *c, int tbl, const char *owner, vg_notifier_config_t *nc)
{
  lua_pushnil(L);
  while (lua_next(L, tbl) != 0) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    bool ok = name != NULL && strlen(name) <= 64 &&
              ((*name >= 'A' && *name <= 'Z') || (*name >= 'a' && *name <= 'z'));
    for (const char *p = name; ok && *p; p++) {
      ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
           *p == '-';
    }
    if (!ok) {
      key_error(L, c, "headers",
                "%s.headers must map header names (letters, digits and '-') to values", owner);
    }
    if (strcasecmp(name, "Content-Type") == 0 || strcasecmp(name, "X-Vigil-Signature") == 0 ||
        strcasecmp(name, "X-Vigil-Timestamp") == 0) {
      key_error(L, c, "headers", "%s.headers must not set %s: vigil sets it", owner, name);
    }
    if (nc->nheaders >= 64) {
      key_error(L, c, "headers", "%s.headers has more than 64 entries", owner);
    }
    vg_notifier_header_t *grown = realloc(nc->headers, (nc->nheaders + 1) * sizeof(*grown));
    if (grown == NULL) {
      key_error(L, c, "headers", "out of memory");
    }
    nc->headers = grown;
    vg_notifier_header_t *h = &nc->headers[nc->nheaders++];
    h->name = strdup(name);
    h->value = NULL;
    if (h->name == NULL) {
      key_error(L, c, "headers", "out of memory");
    }
    secret_t *s = luaL_testudata(L, -1, SECRET_MT);
    const char *v = s != NULL                        ? s->value
                    : lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                     : NULL;
    if (v == NULL || (s != NULL && strlen(s->value) != s->len) || strpbrk(v, "\r\n") != NULL ||
        strlen(v) > 8192) {
      key_error(L, c, "headers",
                "%s.headers.%s must be a string or a secret (env/file) of at most 8192 bytes "
                "without NUL, CR or LF (value not shown)",
                owner, name);
    }
    if ((h->value = strdup(v)) == NULL) {
      key_error(L, c, "headers", "out of memory");
    }
    lua_pop(L, 1);
  }
}

static void read_notifier(lua_State *L, load_ctx_t *c, int tbl, vg_notifier_config_t *nc)
{
  static const char *const known[] = {
    "kind", "url", "routing_key", "webhook", "secret", "channel", "username", "headers", NULL,
  };
  char owner[96], prefix[100];
  snprintf(owner, sizeof(owner), "notifiers.%s", nc->name);
  snprintf(prefix, sizeof(prefix), "%s.", owner);
  check_known(L, c, tbl, prefix, known);
  size_t k = 0, nkinds = sizeof(notifier_kinds) / sizeof(notifier_kinds[0]);
  if (lua_getfield(L, tbl, "kind") == LUA_TSTRING) {
    while (k < nkinds && strcmp(lua_tostring(L, -1), notifier_kinds[k].kind) != 0) {
      k++;
    }
  } else {
    k = nkinds;
  }
  if (k == nkinds) {
    key_error(L, c, "kind", "%s.kind must be one of pagerduty, slack, webhook", owner);
  }
  lua_pop(L, 1);
  set_str(&nc->kind, notifier_kinds[k].kind);
  /* keys of another kind: a routing_key on a slack notifier is a mistake, not an extra */
  lua_pushnil(L);
  while (lua_next(L, tbl) != 0) {
    lua_pop(L, 1);
    const char *key = lua_tostring(L, -1);
    bool ok = false;
    for (int i = 0; notifier_kinds[k].keys[i] != NULL && !ok; i++) {
      ok = strcmp(key, notifier_kinds[k].keys[i]) == 0;
    }
    if (!ok) {
      key_error(L, c, key, "%s.%s is not a key of a %s notifier (it takes %s)", owner, key,
                nc->kind, notifier_kinds[k].takes);
    }
  }
  if (lua_getfield(L, tbl, notifier_kinds[k].required) == LUA_TNIL) {
    key_error(L, c, nc->name, "%s needs %s (a %s notifier)", owner, notifier_kinds[k].required,
              nc->kind);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "url") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING || !http_url_ok(lua_tostring(L, -1))) {
      key_error(L, c, "url", "%s.url must be an http:// or https:// URL", owner);
    }
    set_str(&nc->url, lua_tostring(L, -1));
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "routing_key") != LUA_TNIL) {
    opt_secret(L, c, "routing_key", owner, &nc->routing_key);
    bool ok = strlen(nc->routing_key) == 32;
    for (const char *p = nc->routing_key; ok && *p; p++) {
      ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9');
    }
    if (!ok) {
      key_error(L, c, "routing_key",
                "%s.routing_key must be a 32-character integration key (value not shown)", owner);
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "webhook") != LUA_TNIL) {
    opt_secret(L, c, "webhook", owner, &nc->webhook);
    if (!http_url_ok(nc->webhook)) {
      key_error(L, c, "webhook",
                "%s.webhook must be an http:// or https:// URL (value not shown: it is a secret)",
                owner);
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "secret") != LUA_TNIL) {
    opt_secret(L, c, "secret", owner, &nc->secret);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "channel") != LUA_TNIL) {
    opt_text(L, c, "channel", owner, 80, &nc->channel);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "username") != LUA_TNIL) {
    opt_text(L, c, "username", owner, 80, &nc->username);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "headers") == LUA_TTABLE) {
    read_notifier_headers(L, c, lua_gettop(L), owner, nc);
  } else if (!lua_isnil(L, -1)) {
    key_error(L, c, "headers", "%s.headers must be a table { [\"X-Name\"] = value }", owner);
  }
  lua_pop(L, 1);
}

static void read_notifiers(lua_State *L, load_ctx_t *c, int tbl)
{
  vg_config_t *cfg = c->cfg;
  lua_pushnil(L);
  while (lua_next(L, tbl) != 0) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (!name_ok(name)) {
      key_error(L, c, "notifiers",
                "notifiers must map names (letters, digits, _ and -) to tables { kind = ..., "
                "... }");
    }
    if (lua_type(L, -1) != LUA_TTABLE) {
      key_error(L, c, "notifiers", "notifiers.%s must be a table { kind = ..., ... }", name);
    }
    vg_notifier_config_t *grown =
        realloc(cfg->notifiers, (cfg->nnotifiers + 1) * sizeof(vg_notifier_config_t));
    if (grown == NULL) {
      key_error(L, c, "notifiers", "out of memory");
    }
    cfg->notifiers = grown;
    vg_notifier_config_t *nc = &cfg->notifiers[cfg->nnotifiers++];
    memset(nc, 0, sizeof(*nc));
    if ((nc->name = strdup(name)) == NULL) {
      key_error(L, c, "notifiers", "out of memory");
    }
    read_notifier(L, c, lua_gettop(L), nc);
    lua_pop(L, 1);
  }
}

static void read_retention(lua_State *L, load_ctx_t *c, int tbl)
{
  static const char *const known[] = { "horizon", "max_alerts", "reopen_grace", NULL };
  check_known(L, c, tbl, "retention.", known);
  vg_config_t *cfg = c->cfg;
  if (lua_getfield(L, tbl, "horizon") != LUA_TNIL) {
    cfg->retention_ms = opt_duration(L, c, "horizon");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "reopen_grace") != LUA_TNIL) {
    cfg->reopen_grace_ms = opt_duration(L, c, "reopen_grace");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "max_alerts") != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1000) {
      key_error(L, c, "max_alerts", "retention.max_alerts must be an integer >= 1000");
    }
    cfg->max_alerts = (uint64_t)lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
}

int vg_rate_parse(const char *text, vg_rate_t *out, char *err, size_t errlen)
{
  if (strcmp(text, "0") == 0 || strcmp(text, "unlimited") == 0) {
    *out = (vg_rate_t){ 0, 0 };
    return 0;
  }
  char *end;
  double n = strtod(text, &end);
  if (end == text || *end != '/' || !(n > 0) || n > 1e9) {
    snprintf(err, errlen, "a rate is \"<count>/<period>\" like \"30/h\" or \"5/10m\", not \"%s\"",
             text);
    return -1;
  }
  const char *per = end + 1;
  char buf[32];
  /* "h" alone means one hour */
  if (*per != '\0' && strchr("smhdw", *per) != NULL && per[1] == '\0') {
    snprintf(buf, sizeof buf, "1%s", per);
    per = buf;
  }
  int64_t ms = vg_duration_parse(per, err, errlen);
  if (ms <= 0) {
    if (ms == 0) {
      snprintf(err, errlen, "the period of a rate must be positive");
    }
    return -1;
  }
  *out = (vg_rate_t){ n, (uint64_t)ms };
  return 0;
}

/* Rate option: the value at the top of the stack. */
static vg_rate_t opt_rate(lua_State *L, load_ctx_t *c, const char *key)
{
  vg_rate_t r = { 0, 0 };
  char err[200];
  const char *s =
      lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : NULL;
  if (s == NULL || vg_rate_parse(s, &r, err, sizeof err) != 0) {
    key_error(L, c, key, "%s: %s", key, s == NULL ? "a rate is a string like \"30/h\"" : err);
  }
  return r;
}

static uint32_t opt_count(lua_State *L, load_ctx_t *c, const char *key, lua_Integer max)
{
  int ok;
  lua_Integer v = lua_tointegerx(L, -1, &ok);
  if (!ok || v < 0 || v > max) {
    key_error(L, c, key, "%s must be an integer from 0 to %lld", key, (long long)max);
  }
  return (uint32_t)v;
}

/* A list of strings at the top of the stack into a malloc'd array. */
static char **opt_list(lua_State *L, load_ctx_t *c, const char *key, size_t *n)
{
  if (lua_type(L, -1) != LUA_TTABLE) {
    key_error(L, c, key, "%s must be a list of strings", key);
  }
  size_t len = (size_t)luaL_len(L, -1);
  if (len > 1024) {
    key_error(L, c, key, "%s has more than 1024 entries", key);
  }
  char **v = calloc(len + 1, sizeof *v);
  if (v == NULL) {
    luaL_error(L, "out of memory");
  }
  for (size_t i = 0; i < len; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i + 1);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (s == NULL || (v[i] = strdup(s)) == NULL) {
      for (size_t j = 0; j < i; j++) {
        free(v[j]);
      }
      free(v);
      key_error(L, c, key, "%s[%zu] must be a string", key, i + 1);
    }
    lua_pop(L, 1);
  }
  *n = len;
  return v;
}

static void read_guard_types(lua_State *L, load_ctx_t *c, int tbl)
{
  vg_config_t *cfg = c->cfg;
  lua_pushnil(L);
  while (lua_next(L, tbl) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE) {
      key_error(L, c, "types",
                "guard.types maps action types to { rate = ..., concurrency = ... }");
    }
    int t = lua_gettop(L);
    static const char *const known[] = { "rate", "concurrency", NULL };
    check_known(L, c, t, "guard.types.<type>.", known);
    vg_guard_type_t *v = realloc(cfg->guard_types, (cfg->nguard_types + 1) * sizeof *v);
    if (v == NULL) {
      luaL_error(L, "out of memory");
    }
    cfg->guard_types = v;
    vg_guard_type_t *gt = &v[cfg->nguard_types];
    memset(gt, 0, sizeof *gt);
    gt->rate = cfg->executor.guard.type_rate;
    if ((gt->type = strdup(lua_tostring(L, -2))) == NULL) {
      luaL_error(L, "out of memory");
    }
    cfg->nguard_types++;
    if (lua_getfield(L, t, "rate") != LUA_TNIL) {
      gt->rate = opt_rate(L, c, "rate");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, t, "concurrency") != LUA_TNIL) {
      gt->max_concurrent = opt_count(L, c, "concurrency", 100000);
    }
    lua_pop(L, 2);
  }
}

static void read_guard(lua_State *L, load_ctx_t *c, int tbl)
{
  static const char *const known[] = { "rate",
                                       "target_rate",
                                       "cooldown",
                                       "concurrency",
                                       "target_concurrency",
                                       "blast_targets",
                                       "blast_window",
                                       "breaker_failures",
                                       "breaker_cooldown",
                                       "types",
                                       "storm_label",
                                       "storm_alerts",
                                       "storm_window",
                                       NULL };
  check_known(L, c, tbl, "guard.", known);
  vg_guard_opts_t *g = &c->cfg->executor.guard;
  if (lua_getfield(L, tbl, "rate") != LUA_TNIL) {
    g->type_rate = opt_rate(L, c, "rate");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "target_rate") != LUA_TNIL) {
    g->target_rate = opt_rate(L, c, "target_rate");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "cooldown") != LUA_TNIL) {
    g->cooldown_ms =
        lua_tointeger(L, -1) == 0 && lua_isinteger(L, -1) ? 0 : opt_duration(L, c, "cooldown");
  }
  lua_pop(L, 1);
  struct {
    const char *key;
    uint32_t *slot;
  } counts[] = { { "concurrency", &g->max_concurrent_type },
                 { "target_concurrency", &g->max_concurrent_target },
                 { "blast_targets", &g->blast_max_targets },
                 { "breaker_failures", &g->breaker_failures } };
  for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
    if (lua_getfield(L, tbl, counts[i].key) != LUA_TNIL) {
      *counts[i].slot = opt_count(L, c, counts[i].key, 1000000);
    }
    lua_pop(L, 1);
  }
  if (lua_getfield(L, tbl, "blast_window") != LUA_TNIL) {
    g->blast_window_ms = opt_duration(L, c, "blast_window");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "breaker_cooldown") != LUA_TNIL) {
    g->breaker_cooldown_ms = opt_duration(L, c, "breaker_cooldown");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "storm_label") != LUA_TNIL) {
    opt_string(L, c, "storm_label", &c->cfg->storm_label);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "storm_alerts") != LUA_TNIL) {
    c->cfg->executor.storm_alerts = opt_count(L, c, "storm_alerts", 10000000);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "storm_window") != LUA_TNIL) {
    c->cfg->executor.storm_window_ms = opt_duration(L, c, "storm_window");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "types") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TTABLE) {
      key_error(L, c, "types", "guard.types must be a table");
    }
    read_guard_types(L, c, lua_gettop(L));
  }
  lua_pop(L, 1);
}

static void read_executor(lua_State *L, load_ctx_t *c, int tbl)
{
  static const char *const known[] = {
    "mode",      "allow",   "kill_switch_file", "approval_timeout",
    "timeout",   "grace",   "max_output",       "env",
    "scratch",   "user",    "landlock",         "seccomp",
    "net_ports", "rlimits", "helper",           "server",
    NULL
  };
  check_known(L, c, tbl, "executor.", known);
  vg_config_t *cfg = c->cfg;
  if (lua_getfield(L, tbl, "mode") != LUA_TNIL) {
    const char *m = lua_tostring(L, -1);
    if (m == NULL || vg_mode_parse(m) < 0) {
      key_error(L, c, "mode", "executor.mode must be \"observe\", \"dry-run\" or \"enforce\"");
    }
    set_str(&cfg->executor_mode, m);
    cfg->executor.mode = (vg_mode_t)vg_mode_parse(m);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "kill_switch_file") != LUA_TNIL) {
    opt_string(L, c, "kill_switch_file", &cfg->kill_switch_file);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "approval_timeout") != LUA_TNIL) {
    cfg->executor.approval_timeout_ms = opt_duration(L, c, "approval_timeout");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "timeout") != LUA_TNIL) {
    cfg->exec_timeout_ms = opt_duration(L, c, "timeout");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "grace") != LUA_TNIL) {
    cfg->exec_grace_ms = opt_duration(L, c, "grace");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "max_output") != LUA_TNIL) {
    int ok;
    lua_Integer n = lua_tointegerx(L, -1, &ok);
    if (!ok || n < 1024 || n > (64 << 20)) {
      key_error(L, c, "max_output", "max_output must be a byte count from 1024 to 64 MiB");
    }
    cfg->exec_max_output = (uint64_t)n;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "allow") != LUA_TNIL) {
    cfg->exec_allow = opt_list(L, c, "allow", &cfg->nexec_allow);
    for (size_t i = 0; i < cfg->nexec_allow; i++) {
      if (cfg->exec_allow[i][0] != '/') {
        key_error(L, c, "allow", "executor.allow[%zu]: \"%s\" is not an absolute path", i + 1,
                  cfg->exec_allow[i]);
      }
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "server") != LUA_TNIL) {
    if (!lua_isboolean(L, -1)) {
      key_error(L, c, "server", "executor.server must be true or false");
    }
    cfg->exec_server = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "env") != LUA_TNIL) {
    cfg->exec_env = opt_list(L, c, "env", &cfg->nexec_env);
  }
  lua_pop(L, 1);
  struct {
    const char *key;
    char **slot;
  } strs[] = { { "scratch", &cfg->exec_scratch },
               { "user", &cfg->exec_user },
               { "helper", &cfg->exec_helper },
               { "landlock", &cfg->exec_landlock },
               { "seccomp", &cfg->exec_seccomp } };
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    if (lua_getfield(L, tbl, strs[i].key) != LUA_TNIL) {
      opt_string(L, c, strs[i].key, strs[i].slot);
    }
    lua_pop(L, 1);
  }
  for (const char *const *k = (const char *const[]){ "landlock", "seccomp", NULL }; *k; k++) {
    const char *v = strcmp(*k, "landlock") == 0 ? cfg->exec_landlock : cfg->exec_seccomp;
    if (v != NULL && strcmp(v, "auto") != 0 && strcmp(v, "require") != 0 && strcmp(v, "off") != 0) {
      key_error(L, c, *k, "executor.%s must be \"auto\", \"require\" or \"off\"", *k);
    }
  }
  if (lua_getfield(L, tbl, "net_ports") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TTABLE) {
      key_error(L, c, "net_ports", "executor.net_ports must be a list of TCP ports");
    }
    size_t n = (size_t)luaL_len(L, -1);
    cfg->exec_ports = calloc(n + 1, sizeof *cfg->exec_ports);
    if (cfg->exec_ports == NULL) {
      luaL_error(L, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
      lua_rawgeti(L, -1, (lua_Integer)i + 1);
      int ok;
      lua_Integer port = lua_tointegerx(L, -1, &ok);
      if (!ok || port < 1 || port > 65535) {
        key_error(L, c, "net_ports", "executor.net_ports[%zu] must be a port from 1 to 65535",
                  i + 1);
      }
      cfg->exec_ports[cfg->nexec_ports++] = (uint16_t)port;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, tbl, "rlimits") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TTABLE) {
      key_error(L, c, "rlimits", "executor.rlimits must be a table");
    }
    int rt = lua_gettop(L);
    static const char *const rknown[] = { "cpu", "as", "nofile", "fsize", "nproc", NULL };
    check_known(L, c, rt, "executor.rlimits.", rknown);
    if (lua_getfield(L, rt, "cpu") != LUA_TNIL) {
      cfg->rl_cpu_s = (opt_duration(L, c, "cpu") + 999) / 1000;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, rt, "as") != LUA_TNIL) {
      cfg->rl_as = opt_bytes(L, c, "as");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, rt, "fsize") != LUA_TNIL) {
      cfg->rl_fsize = opt_bytes(L, c, "fsize");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, rt, "nofile") != LUA_TNIL) {
      cfg->rl_nofile = opt_count(L, c, "nofile", 1 << 20);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, rt, "nproc") != LUA_TNIL) {
      cfg->rl_nproc = opt_count(L, c, "nproc", 1 << 20);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

void vg_config_executor_opts(const vg_config_t *cfg, vg_executor_opts_t *o)
{
  *o = cfg->executor;
  o->mode = (vg_mode_t)(vg_mode_parse(cfg->executor_mode) >= 0 ? vg_mode_parse(cfg->executor_mode)
                                                               : VG_MODE_DRY_RUN);
  o->kill_switch_file = cfg->kill_switch_file;
  if (cfg->storm_label != NULL) {
    o->storm_label = cfg->storm_label;
  }
  o->guard.types = cfg->guard_types;
  o->guard.ntypes = cfg->nguard_types;
}

static int read_config_p(lua_State *L)
{
  load_ctx_t *c = lua_touserdata(L, 1);
  vg_config_t *cfg = c->cfg;
  lua_settop(L, 2);
  luaL_checktype(L, 2, LUA_TTABLE);
  static const char *const known[] = {
    "listen",    "store",         "policies",      "repl_socket", "log_level",
    "token",     "limits",        "policy_errors", "drain",       "reload_debounce",
    "watchdog",  "watchdog_hard", "executor",      "guard",       "sources",
    "notifiers", "intake",        "retention",     "logs",        "snapshot_interval",
    NULL,
  };
  check_known(L, c, 2, "", known);
  const char *const strings[] = { "listen", "store", "policies", "repl_socket", NULL };
  char **slots[] = { &cfg->listen, &cfg->store, &cfg->policies, &cfg->repl_socket };
  for (int i = 0; strings[i] != NULL; i++) {
    if (lua_getfield(L, 2, strings[i]) != LUA_TNIL) {
      opt_string(L, c, strings[i], slots[i]);
    }
    lua_pop(L, 1);
  }
  if (lua_getfield(L, 2, "log_level") != LUA_TNIL) {
    int lvl = lua_type(L, -1) == LUA_TSTRING ? vg_log_level_parse(lua_tostring(L, -1)) : -1;
    if (lvl < 0) {
      key_error(L, c, "log_level", "log_level must be one of debug, info, warn, error, off");
    }
    cfg->log_level = lvl;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "token") != LUA_TNIL) {
    secret_t *s = luaL_testudata(L, -1, SECRET_MT);
    if (s == NULL) {
      key_error(L, c, "token",
                "token must come from env \"NAME\" or file \"PATH\", never a literal in the "
                "config file");
    }
    cfg->token = strdup(s->value);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "limits") == LUA_TTABLE) {
    read_limits(L, c, lua_gettop(L));
  } else if (!lua_isnil(L, -1)) {
    key_error(L, c, "limits", "limits must be a table");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "policy_errors") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TTABLE) {
      key_error(L, c, "policy_errors", "policy_errors must be { max = 5, window = \"5m\" }");
    }
    static const char *const pe[] = { "max", "window", NULL };
    int t = lua_gettop(L);
    check_known(L, c, t, "policy_errors.", pe);
    if (lua_getfield(L, t, "max") != LUA_TNIL) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0) {
        key_error(L, c, "max",
                  "policy_errors.max must be a non-negative integer (0 = never "
                  "disable)");
      }
      cfg->error_budget = (int)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, t, "window") != LUA_TNIL) {
      cfg->error_window_ms = opt_duration(L, c, "window");
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "drain") != LUA_TNIL) {
    cfg->drain_ms = opt_duration(L, c, "drain");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "reload_debounce") != LUA_TNIL) {
    cfg->debounce_ms = opt_duration(L, c, "reload_debounce");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "snapshot_interval") != LUA_TNIL) {
    cfg->snapshot_ms = opt_duration(L, c, "snapshot_interval");
    if (cfg->snapshot_ms < 1000) {
      key_error(L, c, "snapshot_interval", "snapshot_interval must be at least 1s");
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "watchdog") != LUA_TNIL) {
    cfg->watchdog_ms = opt_duration(L, c, "watchdog");
    if (cfg->watchdog_ms < 100) {
      key_error(L, c, "watchdog", "watchdog must be at least 100ms");
    }
    cfg->watchdog_hard_ms = cfg->watchdog_ms * 6;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "watchdog_hard") != LUA_TNIL) {
    cfg->watchdog_hard_ms = opt_duration(L, c, "watchdog_hard");
    if (cfg->watchdog_hard_ms <= cfg->watchdog_ms) {
      key_error(L, c, "watchdog_hard", "watchdog_hard must be longer than watchdog");
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "executor") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TTABLE) {
      key_error(L, c, "executor", "executor must be a table { mode = \"dry-run\", allow = {...} }");
    }
    read_executor(L, c, lua_gettop(L));
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "guard") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TTABLE) {
      key_error(L, c, "guard", "guard must be a table { rate = \"30/h\", cooldown = \"5m\", ... }");
    }
    read_guard(L, c, lua_gettop(L));
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "intake") == LUA_TTABLE) {
    read_intake(L, c, lua_gettop(L));
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "retention") == LUA_TTABLE) {
    read_retention(L, c, lua_gettop(L));
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "sources") == LUA_TTABLE) {
    read_sources(L, c, lua_gettop(L));
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "notifiers") == LUA_TTABLE) {
    read_notifiers(L, c, lua_gettop(L));
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "logs") == LUA_TTABLE) {
    /* logs.allow and logs.analysers here: other keys of logs belong to their own readers */
    if (lua_getfield(L, -1, "analysers") != LUA_TNIL) {
      read_log_analysers(L, c, lua_gettop(L));
    }
    lua_pop(L, 1);
    if (lua_getfield(L, -1, "allow") != LUA_TNIL) {
      cfg->logs_allow = opt_list(L, c, "allow", &cfg->nlogs_allow);
      for (size_t i = 0; i < cfg->nlogs_allow; i++) {
        if (cfg->logs_allow[i][0] != '/') {
          key_error(L, c, "allow", "logs.allow[%zu]: \"%s\" is not an absolute path", i + 1,
                    cfg->logs_allow[i]);
        }
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  for (const char *const *k =
           (const char *const[]){ "sources", "notifiers", "intake", "retention", "logs", NULL };
       *k; k++) {
    int t = lua_getfield(L, 2, *k);
    if (t != LUA_TNIL && t != LUA_TTABLE) {
      key_error(L, c, *k, "%s must be a table", *k);
    }
    lua_pop(L, 1);
  }
  return 0;
}

/* Runs the file (protected): the table it returns, or the globals it set. */
static int run_config_p(lua_State *L)
{
  load_ctx_t *c = lua_touserdata(L, 1);
  vg_sandbox_push_env(L, false);
  int env = lua_gettop(L);
  lua_pushcfunction(L, cfg_env);
  lua_setfield(L, env, "env");
  lua_pushcfunction(L, cfg_file);
  lua_setfield(L, env, "file");
  lua_pushvalue(L, env);
  char chunk[1100];
  snprintf(chunk, sizeof(chunk), "@%s", c->path);
  if (vg_sandbox_loadfile(L, c->path, chunk) != LUA_OK) {
    return lua_error(L);
  }
  vg_vm_t *vm = vg_vm_of(L);
  c->budget->slice_start = uv_hrtime();
  vm->budget = c->budget;
  vm->load_phase = true;
  lua_call(L, 0, 1);
  vm->budget = NULL;
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L); /* globals the file assigned, minus our two helpers */
    lua_pushnil(L);
    while (lua_next(L, env) != 0) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
    lua_pushnil(L);
    lua_setfield(L, -2, "env");
    lua_pushnil(L);
    lua_setfield(L, -2, "file");
  } else if (lua_type(L, -1) != LUA_TTABLE) {
    return luaL_error(L, "%s: a config file returns a table (or sets globals), not a %s", c->path,
                      luaL_typename(L, -1));
  }
  lua_pushcfunction(L, read_config_p);
  lua_pushlightuserdata(L, c);
  lua_pushvalue(L, -3);
  lua_call(L, 2, 0);
  return 0;
}

int vg_config_load(vg_config_t *cfg, const char *path, char *err, size_t errlen)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(err, errlen, "%s: cannot read the config file: %s", path, strerror(errno));
    return -1;
  }
  char text[65536];
  size_t n = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  text[n] = '\0';
  vg_limits_t limits = { .memory = 16u << 20 };
  vg_vm_t *vm = vg_vm_new(NULL, "config", &limits);
  if (vm == NULL) {
    snprintf(err, errlen, "%s: out of memory", path);
    return -1;
  }
  /* Declared here, not in run_config_p: the message handler reads it after an error. */
  vg_budget_t budget = { .instr_limit = 10000000, .slice_ns = 2000000000ULL };
  load_ctx_t c = { cfg, path, text, &budget };
  lua_pushcfunction(vm->L, vg_vm_load_handler); /* a kill becomes "file:line: ..." */
  lua_pushcfunction(vm->L, run_config_p);
  lua_pushlightuserdata(vm->L, &c);
  int rc = 0;
  int status = lua_pcall(vm->L, 1, 0, 1);
  if (status == LUA_ERRMEM && budget.killed == VG_KILL_MEMORY) {
    /* raised by the allocator, where no message handler runs: say which limit, at least */
    snprintf(err, errlen, "%s: loading stopped: memory limit reached", path);
    rc = -1;
  } else if (status != LUA_OK) {
    char buf[128];
    snprintf(err, errlen, "%s", vg_vm_error_text(vm->L, -1, buf, sizeof(buf)));
    rc = -1;
  } else {
    set_str(&cfg->path, path);
  }
  vm->budget = NULL;
  vg_vm_free(vm);
  return rc;
}

const char *const *vg_config_logs_allow(const vg_config_t *cfg)
{
  static const char *const none[] = { NULL };
  return cfg != NULL && cfg->logs_allow != NULL ? (const char *const *)cfg->logs_allow : none;
}
