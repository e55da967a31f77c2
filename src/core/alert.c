/* Alert <-> Lua table conversion. Reads use raw access so that an alert table built by a
 * policy or the REPL cannot run metamethods in the host. */
#include "core/alert.h"

#include <lauxlib.h>
#include <string.h>

static void push_labels(lua_State *L, const vg_label_t *labels, size_t n)
{
  lua_createtable(L, 0, (int)n);
  for (size_t i = 0; i < n; i++) {
    lua_pushlstring(L, labels[i].name, labels[i].name_len);
    lua_pushlstring(L, labels[i].value, labels[i].value_len);
    lua_rawset(L, -3);
  }
}

static void set_string(lua_State *L, const char *key, const char *value)
{
  if (value != NULL) {
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
  }
}

static const vg_label_t *find_label(const vg_label_t *labels, size_t n, const char *name)
{
  size_t len = strlen(name);
  for (size_t i = 0; i < n; i++) {
    if (labels[i].name_len == len && memcmp(labels[i].name, name, len) == 0) {
      return &labels[i];
    }
  }
  return NULL;
}

void vg_alert_push(lua_State *L, const vg_alert_t *a)
{
  lua_createtable(L, 0, 10);
  push_labels(L, a->labels, a->nlabels);
  lua_setfield(L, -2, "labels");
  push_labels(L, a->annotations, a->nannotations);
  lua_setfield(L, -2, "annotations");
  set_string(L, "status", a->status ? a->status : "firing");
  set_string(L, "fingerprint", a->fingerprint);
  set_string(L, "generator_url", a->generator_url);
  if (a->starts_at > 0) {
    lua_pushnumber(L, a->starts_at);
    lua_setfield(L, -2, "starts_at");
  }
  if (a->ends_at > 0) {
    lua_pushnumber(L, a->ends_at);
    lua_setfield(L, -2, "ends_at");
  }
  if (a->incident_id > 0) {
    lua_pushinteger(L, a->incident_id);
    lua_setfield(L, -2, "incident");
  }
  const vg_label_t *l = find_label(a->labels, a->nlabels, "alertname");
  if (l != NULL) {
    lua_pushlstring(L, l->value, l->value_len);
    lua_setfield(L, -2, "name");
  }
  l = find_label(a->labels, a->nlabels, "severity");
  if (l != NULL) {
    lua_pushlstring(L, l->value, l->value_len);
    lua_setfield(L, -2, "severity");
  }
}

static size_t check_labels(lua_State *L, int alert, const char *field, vg_label_t *out, size_t cap)
{
  size_t n = 0;
  int t = lua_getfield(L, alert, field); /* raw below: alert tables are checked to be plain */
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  if (t != LUA_TTABLE) {
    luaL_error(L, "alert.%s must be a table of strings, not a %s", field, lua_typename(L, t));
  }
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
      luaL_error(L, "alert.%s: keys and values must be strings", field);
    }
    if (n == cap) {
      luaL_error(L, "alert.%s: too many entries (limit %d)", field, (int)cap);
    }
    out[n].name = lua_tolstring(L, -2, &out[n].name_len);
    out[n].value = lua_tolstring(L, -1, &out[n].value_len);
    n++;
    lua_pop(L, 1);
  }
  lua_pop(L, 1); /* the strings stay referenced by the alert table itself */
  return n;
}

void vg_alert_check(
    lua_State *L, int idx, vg_alert_t *out, vg_label_t *labels, vg_label_t *annotations, size_t cap)
{
  idx = lua_absindex(L, idx);
  luaL_checktype(L, idx, LUA_TTABLE);
  if (lua_getmetatable(L, idx)) {
    luaL_error(L, "alert must be a plain table (no metatable)");
  }
  memset(out, 0, sizeof(*out));
  out->labels = labels;
  out->annotations = annotations;
  /* plain table: lua_getfield cannot run metamethods */
  out->nlabels = check_labels(L, idx, "labels", labels, cap);
  out->nannotations = check_labels(L, idx, "annotations", annotations, cap);
  if (out->nlabels == 0) {
    luaL_error(L, "alert.labels is required and must not be empty");
  }
  if (lua_getfield(L, idx, "status") == LUA_TSTRING) {
    out->status = lua_tostring(L, -1);
    if (strcmp(out->status, "firing") != 0 && strcmp(out->status, "resolved") != 0) {
      luaL_error(L, "alert.status must be \"firing\" or \"resolved\", not \"%s\"", out->status);
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "starts_at") == LUA_TNUMBER) {
    out->starts_at = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "ends_at") == LUA_TNUMBER) {
    out->ends_at = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "fingerprint") == LUA_TSTRING) {
    out->fingerprint = lua_tostring(L, -1);
  }
  lua_pop(L, 1);
}
