/* REPL sessions (session.h): the operator VM, chunks compiled the way lua.c does (an
 * expression first, then statements) and run as tasks, their values rendered inside the task
 * (so rendering is under the task's budget and Ctrl-C), and completion by raw table walks. */
#include "repl/session.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/policy.h"
#include "core/sandbox.h"
#include "core/task.h"
#include "lua/lvigil.h"

#define MAX_VALUES 64  /* values of one chunk rendered; the rest are counted */
#define INDEX_DEPTH 8  /* __index links followed when completing */
#define MAX_WORDS 4096 /* completion candidates */

struct vg_repl_session {
  vg_runtime_t *rt;
  vg_vm_t *vm;
  int env_ref;     /* the environment every chunk of this session shares */
  int inspect_ref; /* vigil.inspect.inspect */
  vg_task_t *task; /* the running chunk */
  vg_timer_t *report;
  char *report_text; /* a compile error, reported on the next loop turn */
  bool freeing;
  vg_repl_session_cbs_t cbs;
  void *ud;
};

/* ---- set-up ---- */

static void session_print(vg_vm_t *vm, const char *text, size_t len, void *ud)
{
  (void)vm;
  vg_repl_session_t *s = ud;
  if (s->freeing) {
    return;
  }
  char small[512];
  char *buf = len + 1 <= sizeof(small) ? small : malloc(len + 1);
  if (buf == NULL) {
    s->cbs.output(s->ud, text, len);
    s->cbs.output(s->ud, "\n", 1);
    return;
  }
  memcpy(buf, text, len);
  buf[len] = '\n';
  s->cbs.output(s->ud, buf, len + 1);
  if (buf != small) {
    free(buf);
  }
}

/* [-0, +0, e] Registers the modules, makes vigil.runtime a field of this VM's vigil table,
 * and keeps inspect and a fresh non-strict environment in the registry. */
static int setup_p(lua_State *L)
{
  vg_repl_session_t *s = lua_touserdata(L, 1);
  vg_open_modules(L);
  vg_open_repl_modules(L);
  lua_getglobal(L, "require"); /* the VM's real require: real tables, not proxies */
  lua_pushliteral(L, "vigil");
  lua_call(L, 1, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "vigil.runtime");
  lua_setfield(L, -3, "runtime");
  lua_pop(L, 2);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "vigil.inspect");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "inspect");
  s->inspect_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
  vg_sandbox_push_env(L, false);
  s->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

vg_repl_session_t *vg_repl_session_new(vg_runtime_t *rt,
                                       const char *name,
                                       const vg_limits_t *limits,
                                       const vg_repl_session_cbs_t *cbs,
                                       void *ud)
{
  vg_repl_session_t *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    return NULL;
  }
  s->rt = rt;
  s->cbs = *cbs;
  s->ud = ud;
  s->env_ref = s->inspect_ref = LUA_NOREF;
  s->vm = vg_vm_new(rt, name, limits);
  if (s->vm == NULL) {
    vg_log(VG_LOG_ERROR, "cannot create the REPL VM", "vm", name, NULL);
    free(s);
    return NULL;
  }
  vg_vm_t *vm = s->vm;
  vm->print = session_print;
  vm->print_ud = s;
  vm->quiet = true; /* a failed chunk is reported to the operator, not logged as an error */
  if (rt->policies != NULL && rt->policies->lib_dir != NULL) {
    vm->lib_dir = strdup(rt->policies->lib_dir);
  }
  lua_State *L = vm->L;
  lua_pushcfunction(L, setup_p);
  lua_pushlightuserdata(L, s);
  if (vg_vm_pcall(L, 1, 0) != LUA_OK) {
    char buf[128];
    vg_log(VG_LOG_ERROR, "cannot set up the REPL VM", "vm", name, "error",
           vg_vm_error_text(L, -1, buf, sizeof(buf)), NULL);
    lua_pop(L, 1);
    vg_repl_session_free(s);
    return NULL;
  }
  return s;
}

void vg_repl_session_free(vg_repl_session_t *s)
{
  if (s == NULL) {
    return;
  }
  s->freeing = true;
  if (s->report != NULL) {
    vg_timer_stop(s->report);
    s->report = NULL;
  }
  free(s->report_text);
  vg_vm_free(s->vm); /* cancels the running chunk; line_done stays silent */
  free(s);
}

/* ---- running chunks ---- */

/* Continuation of line_body once the chunk returned: [inspect|nil, values...] -> the values
 * rendered and joined by tabs, or nothing. */
static int line_render_k(lua_State *L, int status, lua_KContext ctx)
{
  (void)status;
  (void)ctx;
  int top = lua_gettop(L);
  if (lua_isnil(L, 1) || top < 2) {
    return 0;
  }
  int nvalues = top - 1;
  int shown = nvalues > MAX_VALUES ? MAX_VALUES : nvalues;
  luaL_checkstack(L, 4, "rendering the results");
  lua_pushliteral(L, "");
  for (int i = 2; i < 2 + shown; i++) {
    if (i > 2) {
      lua_pushliteral(L, "\t");
      lua_concat(L, 2);
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, i);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      lua_pop(L, 1);
      lua_pushliteral(L, "?");
    }
    lua_concat(L, 2);
  }
  if (nvalues > shown) {
    lua_pushfstring(L, "\t... (%d more values)", nvalues - shown);
    lua_concat(L, 2);
  }
  return 1;
}

/* The task of one chunk: [inspect|nil, chunk]. Calls the chunk (which may wait), then
 * renders its values. [-2, +(0|1), e] */
static int line_body(lua_State *L)
{
  lua_callk(L, 0, LUA_MULTRET, 0, line_render_k);
  return line_render_k(L, LUA_OK, 0);
}

/* The error text of a failed chunk, tidied for a person: "interrupted" for a cancelled one,
 * without the frame of line_body at the bottom of the traceback. */
static char *error_text(const vg_task_t *t)
{
  const char *e = t->error != NULL ? t->error : "failed";
  const char *head = "";
  if (t->status == VG_TASK_CANCELLED && strncmp(e, "cancelled", 9) == 0) {
    head = "interrupted";
    e += 9;
  }
  size_t hlen = strlen(head), elen = strlen(e);
  static const char tail[] = "\n\t[C]: in ?";
  size_t tlen = sizeof(tail) - 1;
  if (elen >= tlen && memcmp(e + elen - tlen, tail, tlen) == 0) {
    elen -= tlen;
  }
  static const char empty_tb[] = "\nstack traceback:";
  size_t blen = sizeof(empty_tb) - 1;
  if (elen >= blen && memcmp(e + elen - blen, empty_tb, blen) == 0) {
    elen -= blen;
  }
  char *out = malloc(hlen + elen + 1);
  if (out != NULL) {
    memcpy(out, head, hlen);
    memcpy(out + hlen, e, elen);
    out[hlen + elen] = '\0';
  }
  return out;
}

static void line_done(vg_task_t *t, void *ud)
{
  vg_repl_session_t *s = ud;
  s->task = NULL;
  if (s->freeing) {
    return;
  }
  if (t->status == VG_TASK_OK) {
    if (t->nresults >= 1 && lua_type(t->co, 1) == LUA_TSTRING) {
      size_t len;
      const char *text = lua_tolstring(t->co, 1, &len);
      s->cbs.result(s->ud, text, len);
    }
    s->cbs.done(s->ud, true);
    return;
  }
  char *text = error_text(t);
  const char *msg = text != NULL ? text : "failed (out of memory)";
  s->cbs.error(s->ud, msg, strlen(msg));
  free(text);
  s->cbs.done(s->ud, false);
}

static void report_cb(vg_timer_t *timer, void *ud)
{
  vg_repl_session_t *s = ud;
  vg_timer_stop(timer);
  s->report = NULL;
  char *text = s->report_text;
  s->report_text = NULL;
  const char *msg = text != NULL ? text : "failed (out of memory)";
  s->cbs.error(s->ud, msg, strlen(msg));
  free(text);
  s->cbs.done(s->ud, false);
}

/* Reports `msg` as the chunk's failure on the next loop turn. */
static int report_later(vg_repl_session_t *s, const char *msg)
{
  s->report_text = strdup(msg);
  s->report = vg_timer_start(s->rt, 0, 0, report_cb, s);
  if (s->report == NULL) {
    free(s->report_text);
    s->report_text = NULL;
    return -1;
  }
  return 0;
}

/* [-0, +1] Compiles src (as `return src` first) into a function; on failure pushes the
 * message of the statements' compile and returns its status. */
static int compile_chunk(lua_State *L, const char *src, size_t len)
{
  static const char ret[] = "return ";
  size_t rlen = sizeof(ret) - 1;
  char *buf = malloc(rlen + len);
  if (buf != NULL) {
    memcpy(buf, ret, rlen);
    memcpy(buf + rlen, src, len);
    int status = vg_vm_load_text(L, buf, rlen + len, "=stdin");
    free(buf);
    if (status == LUA_OK) {
      return LUA_OK;
    }
    lua_pop(L, 1);
  }
  return vg_vm_load_text(L, src, len, "=stdin");
}

int vg_repl_session_eval(vg_repl_session_t *s, const char *src, size_t len, bool show_results)
{
  if (vg_repl_session_busy(s)) {
    return -1;
  }
  lua_State *L = s->vm->L;
  if (!lua_checkstack(L, 4)) {
    return report_later(s, "not enough memory");
  }
  if (compile_chunk(L, src, len) != LUA_OK) {
    char buf[128];
    int rc = report_later(s, vg_vm_error_text(L, -1, buf, sizeof(buf)));
    lua_pop(L, 1);
    return rc;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->env_ref);
  if (lua_setupvalue(L, -2, 1) == NULL) {
    lua_pop(L, 1);
  }
  lua_pushcfunction(L, line_body);
  lua_insert(L, -2);
  if (show_results) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->inspect_ref);
  } else {
    lua_pushnil(L);
  }
  lua_insert(L, -2); /* [line_body, inspect|nil, chunk] */
  vg_task_opts_t opts = {
    .name = "repl",
    .label = "repl",
    .timeout_ms = 0,
    .detach_children = true, /* `t = vigil.spawn(...)` on one line, `vigil.wait(t)` later */
    .done = line_done,
    .done_ud = s,
  };
  s->task = vg_task_spawn(s->vm, 2, &opts);
  if (s->task == NULL) {
    return report_later(s, "cannot run the chunk: the runtime is stopping");
  }
  return 0;
}

bool vg_repl_session_busy(const vg_repl_session_t *s)
{
  return s->task != NULL || s->report != NULL;
}

void vg_repl_session_interrupt(vg_repl_session_t *s)
{
  if (s->task != NULL) {
    vg_task_cancel(s->task, "interrupted");
  }
}

void vg_repl_session_interrupt_signal(vg_repl_session_t *s)
{
  vg_vm_t *vm = s->vm;
  vg_runtime_t *rt = vm->rt;
  if (atomic_load(&rt->running_vm) != vm) {
    return;
  }
  lua_State *co = atomic_load(&rt->running_co);
  if (co != NULL) {
    vg_vm_interrupt(vm, co, VG_KILL_CANCELLED);
  }
}

/* ---- completion ---- */

typedef struct {
  const char *word;
  const char *last; /* the word's part after its last '.' or ':' */
  char **v;
  size_t n, cap;
} words_t;

static bool is_ident(const char *s, size_t len)
{
  if (len == 0 || (s[0] >= '0' && s[0] <= '9')) {
    return false;
  }
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) {
      return false;
    }
  }
  return true;
}

/* Adds word[..last) + key when key extends the last part. [-0, +0, m] */
static void add_word(lua_State *L, words_t *w, const char *key, size_t klen)
{
  size_t plen = strlen(w->last);
  if (klen < plen || memcmp(key, w->last, plen) != 0 || !is_ident(key, klen)) {
    return;
  }
  if (w->n == w->cap) {
    if (w->cap >= MAX_WORDS) {
      return;
    }
    size_t cap = w->cap ? w->cap * 2 : 32;
    char **nv = realloc(w->v, cap * sizeof(*nv));
    if (nv == NULL) {
      luaL_error(L, "not enough memory");
    }
    w->v = nv;
    w->cap = cap;
  }
  size_t base = (size_t)(w->last - w->word);
  char *s = malloc(base + klen + 1);
  if (s == NULL) {
    luaL_error(L, "not enough memory");
  }
  memcpy(s, w->word, base);
  memcpy(s + base, key, klen);
  s[base + klen] = '\0';
  w->v[w->n++] = s;
}

/* [-1, +1, m] Replaces the table on top with the table its __index leads to: a table, or the
 * first upvalue of a C closure when that is a table (how the sandbox's environments and
 * read-only proxies reach their real tables). Pushes nil and returns false otherwise. */
static bool index_target(lua_State *L)
{
  if (!lua_getmetatable(L, -1)) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return false;
  }
  lua_pushliteral(L, "__index");
  lua_rawget(L, -2); /* [t, mt, index] */
  if (lua_iscfunction(L, -1)) {
    if (lua_getupvalue(L, -1, 1) == NULL) {
      lua_pushnil(L);
    }
    lua_remove(L, -2);
  }
  lua_replace(L, -3);
  lua_pop(L, 1);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return false;
  }
  return true;
}

/* [-1, +1, m] Replaces the table on top with its field key, read raw along __index links. */
static void raw_field(lua_State *L, const char *key, size_t len)
{
  for (int depth = 0; depth < INDEX_DEPTH && lua_istable(L, -1); depth++) {
    lua_pushlstring(L, key, len);
    if (lua_rawget(L, -2) != LUA_TNIL) {
      lua_remove(L, -2);
      return;
    }
    lua_pop(L, 1);
    if (!index_target(L)) {
      return;
    }
  }
  lua_pop(L, 1);
  lua_pushnil(L);
}

/* [-1, +0, m] Adds the matching string keys of the table on top and of its __index chain. */
static void collect_keys(lua_State *L, words_t *w)
{
  for (int depth = 0; depth < INDEX_DEPTH && lua_istable(L, -1); depth++) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      lua_pop(L, 1);
      if (lua_type(L, -1) == LUA_TSTRING) {
        size_t klen;
        const char *key = lua_tolstring(L, -1, &klen);
        add_word(L, w, key, klen);
      }
    }
    if (!index_target(L)) {
      break;
    }
  }
  lua_pop(L, 1);
}

static int complete_p(lua_State *L)
{
  static const char *const keywords[] = {
    "and",      "break",  "do",   "else", "elseif", "end",   "false", "for",
    "function", "goto",   "if",   "in",   "local",  "nil",   "not",   "or",
    "repeat",   "return", "then", "true", "until",  "while", NULL,
  };
  words_t *w = lua_touserdata(L, 1);
  vg_repl_session_t *s = lua_touserdata(L, 2);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->env_ref);
  const char *p = w->word;
  while (p < w->last) {
    const char *end = p;
    while (end < w->last - 1 && *end != '.' && *end != ':') {
      end++;
    }
    if (!is_ident(p, (size_t)(end - p)) || (*end == ':' && end + 1 != w->last)) {
      return 0;
    }
    raw_field(L, p, (size_t)(end - p));
    p = end + 1;
  }
  collect_keys(L, w);
  if (w->last == w->word) {
    for (int i = 0; keywords[i] != NULL; i++) {
      add_word(L, w, keywords[i], strlen(keywords[i]));
    }
  }
  return 0;
}

static int cmp_words(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

char **vg_repl_session_complete(vg_repl_session_t *s, const char *word, size_t *n)
{
  *n = 0;
  words_t w = { .word = word, .last = word };
  for (const char *p = word; *p; p++) {
    if (*p == '.' || *p == ':') {
      w.last = p + 1;
    }
  }
  lua_State *L = s->vm->L;
  lua_pushcfunction(L, complete_p);
  lua_pushlightuserdata(L, &w);
  lua_pushlightuserdata(L, s);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    vg_repl_words_free(w.v, w.n);
    return NULL;
  }
  if (w.n == 0) {
    free(w.v);
    return NULL;
  }
  qsort(w.v, w.n, sizeof(*w.v), cmp_words);
  size_t out = 0;
  for (size_t i = 0; i < w.n; i++) {
    if (out > 0 && strcmp(w.v[out - 1], w.v[i]) == 0) {
      free(w.v[i]);
    } else {
      w.v[out++] = w.v[i];
    }
  }
  *n = out;
  return w.v;
}

void vg_repl_words_free(char **words, size_t n)
{
  if (words == NULL) {
    return;
  }
  for (size_t i = 0; i < n; i++) {
    free(words[i]);
  }
  free(words);
}
