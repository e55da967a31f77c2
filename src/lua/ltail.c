/* vigil.logs.tail: follows a log file for a sidecar policy. The engine (src/engine/tail.c)
 * follows the file; its lines wait in a bounded C queue until a task reads them, and read()
 * suspends the task while the queue is empty. Only paths under the config's logs.allow can be
 * followed (src/core/logs_allow.c). */
#include <lauxlib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/logs_allow.h"
#include "core/runtime.h"
#include "core/task.h"
#include "engine/tail.h"
#include "lua/lvigil.h"

#define TAIL_MT "vigil.logs.tail"
#define DEFAULT_PENDING 10000
#define DEFAULT_PENDING_BYTES (4u << 20)

typedef struct qline {
  struct qline *next;
  size_t len;
  bool truncated;
  char data[];
} qline_t;

typedef struct read_op read_op_t;

/* Outlives the userdata while the engine closes, and the engine while a collected userdata's
 * reader is being cancelled: freed when neither holds it. */
typedef struct {
  vg_tail_t *eng; /* NULL once closed */
  char *path;     /* the resolved path followed */
  qline_t *head, *last;
  size_t nq, qbytes, max_pending, max_pending_bytes;
  uint64_t dropped;
  uint64_t timeout_ms;   /* of read(); 0: wait for as long as it takes */
  read_op_t *reader;     /* the task waiting in read(), if any */
  vg_tail_stats_t final; /* the engine's counts when it was closed */
  bool ud_alive, eng_alive;
} tail_state_t;

typedef struct {
  tail_state_t *st;
} tail_ud_t;

struct read_op {
  tail_state_t *st;
  vg_task_t *task;
  vg_timer_t *timer;
  lua_Integer max;
  bool timed_out;
};

static void state_maybe_free(tail_state_t *st)
{
  if (st->ud_alive || st->eng_alive || st->reader != NULL) {
    return;
  }
  while (st->head != NULL) {
    qline_t *q = st->head;
    st->head = q->next;
    free(q);
  }
  free(st->path);
  free(st);
}

/* ---- the waiting reader ---- */

/* Inside the task: the queued lines, or nil and why there are none. [-0, +2, m] */
static int push_lines(lua_State *L, tail_state_t *st, lua_Integer max)
{
  lua_Integer n = (lua_Integer)st->nq < max ? (lua_Integer)st->nq : max;
  lua_createtable(L, (int)n, 0);
  lua_newtable(L);
  lua_Integer ntrunc = 0;
  for (lua_Integer i = 1; i <= n && st->head != NULL; i++) {
    qline_t *q = st->head;
    lua_pushlstring(L, q->data, q->len); /* may raise: the line stays queued */
    lua_rawseti(L, -3, i);
    if (q->truncated) {
      lua_pushinteger(L, i);
      lua_rawseti(L, -2, ++ntrunc);
    }
    st->head = q->next;
    st->last = st->head == NULL ? NULL : st->last;
    st->nq--;
    st->qbytes -= q->len;
    free(q);
  }
  return 2;
}

static int read_push(lua_State *L, void *ud)
{
  read_op_t *op = ud;
  tail_state_t *st = op->st;
  lua_Integer max = op->max;
  bool timed_out = op->timed_out;
  uint64_t timeout_ms = st->timeout_ms;
  free(op);
  if (st->nq > 0) {
    return push_lines(L, st, max);
  }
  lua_pushnil(L);
  if (timed_out) {
    lua_pushfstring(L, "ETIMEDOUT: no line within %I ms", (lua_Integer)timeout_ms);
  } else {
    lua_pushliteral(L, "ECLOSED: the tail is closed");
  }
  return 2;
}

static void read_cancel(void *ud)
{
  read_op_t *op = ud;
  tail_state_t *st = op->st;
  vg_timer_stop(op->timer);
  free(op);
  if (st->reader == op) {
    st->reader = NULL;
    state_maybe_free(st);
  }
}

static void wake_reader(tail_state_t *st, bool timed_out)
{
  read_op_t *op = st->reader;
  st->reader = NULL;
  vg_timer_stop(op->timer);
  op->timer = NULL;
  op->timed_out = timed_out;
  vg_task_wake(op->task, read_push);
}

static void read_timeout(vg_timer_t *timer, void *ud)
{
  (void)timer;
  tail_state_t *st = ((read_op_t *)ud)->st;
  wake_reader(st, true);
}

/* ---- engine callbacks ---- */

static void on_lines(void *ud, const vg_tail_line_t *lines, size_t n)
{
  tail_state_t *st = ud;
  for (size_t i = 0; i < n; i++) {
    if (st->nq >= st->max_pending || st->qbytes + lines[i].len > st->max_pending_bytes) {
      st->dropped++; /* nobody reads fast enough: the newest go, the queue stays bounded */
      continue;
    }
    qline_t *q = malloc(sizeof(*q) + lines[i].len);
    if (q == NULL) {
      st->dropped++;
      continue;
    }
    q->next = NULL;
    q->len = lines[i].len;
    q->truncated = lines[i].truncated;
    memcpy(q->data, lines[i].data, lines[i].len);
    if (st->last != NULL) {
      st->last->next = q;
    } else {
      st->head = q;
    }
    st->last = q;
    st->nq++;
    st->qbytes += q->len;
  }
  if (st->reader != NULL && st->nq > 0) {
    wake_reader(st, false);
  }
}

static void on_closed(void *ud)
{
  tail_state_t *st = ud;
  st->eng_alive = false;
  state_maybe_free(st);
}

/* Stops the engine; a reader still waiting gets what is queued, or ECLOSED. */
static void state_close(tail_state_t *st, bool wake)
{
  if (st->eng == NULL) {
    return;
  }
  tail_stats(st->eng, &st->final);
  tail_close(st->eng, on_closed, st);
  st->eng = NULL;
  if (wake && st->reader != NULL) {
    wake_reader(st, false);
  }
}

/* ---- methods ---- */

static tail_state_t *check_tail(lua_State *L)
{
  tail_state_t *st = ((tail_ud_t *)luaL_checkudata(L, 1, TAIL_MT))->st;
  if (st == NULL) {
    luaL_error(L, "vigil.logs.tail: the tail object was freed");
  }
  return st;
}

/* t:read([max]) [-2, +2, e]: the lines that arrived since the last read (at most max, default
 * all queued), as a list of strings and the list of indices of lines cut at max_line. With
 * none queued it suspends the task until one arrives; nil, "ETIMEDOUT: ..." after the tail's
 * timeout, nil, "ECLOSED: ..." once closed. */
static int t_read(lua_State *L)
{
  tail_state_t *st = check_tail(L);
  lua_Integer max = luaL_optinteger(L, 2, LUA_MAXINTEGER);
  luaL_argcheck(L, max >= 1, 2, "max must be at least 1");
  if (st->nq == 0 && st->eng != NULL) {
    tail_check(st->eng); /* look now rather than at the next notification */
  }
  if (st->nq > 0) {
    return push_lines(L, st, max);
  }
  if (st->eng == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "ECLOSED: the tail is closed");
    return 2;
  }
  if (st->reader != NULL) {
    return luaL_error(L, "tail:read: another task is already reading this tail");
  }
  vg_task_t *t = vg_task_check_yieldable(L, "tail:read");
  read_op_t *op = calloc(1, sizeof(*op));
  if (op == NULL) {
    return luaL_error(L, "tail:read: out of memory");
  }
  op->st = st;
  op->task = t;
  op->max = max;
  if (st->timeout_ms > 0) {
    op->timer = vg_timer_start(vg_vm_of(L)->rt, st->timeout_ms, 0, read_timeout, op);
    if (op->timer == NULL) {
      free(op);
      return luaL_error(L, "tail:read: out of memory");
    }
  }
  st->reader = op;
  vg_task_suspend(t, op, read_cancel);
  return vg_task_yield(L);
}

static void set_int(lua_State *L, const char *k, uint64_t v)
{
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* t:stats() [-1, +1, m]: the counts of the tail as a table. */
static int t_stats(lua_State *L)
{
  tail_state_t *st = check_tail(L);
  vg_tail_stats_t s = st->final;
  if (st->eng != NULL) {
    tail_stats(st->eng, &s);
  }
  lua_createtable(L, 0, 14);
  lua_pushstring(L, st->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, st->eng != NULL ? tail_state_name(s.state) : "closed");
  lua_setfield(L, -2, "state");
  set_int(L, "lines", s.lines);
  set_int(L, "bytes", s.bytes);
  set_int(L, "offset", s.offset);
  set_int(L, "rotations", s.rotations);
  set_int(L, "truncations", s.truncations);
  set_int(L, "truncated_lines", s.truncated_lines);
  set_int(L, "reopen_errors", s.reopen_errors);
  set_int(L, "dropped", st->dropped);
  set_int(L, "pending", st->nq);
  if (s.last_error != 0) {
    lua_pushstring(L, strerror(-s.last_error)); /* libuv codes are negated errnos here */
    lua_setfield(L, -2, "last_error");
  }
  return 1;
}

/* t:close() [-1, +1, -]: stops following; queued lines are dropped after a waiting reader
 * got them. Closing twice is harmless. */
static int t_close(lua_State *L)
{
  tail_state_t *st = check_tail(L);
  state_close(st, true);
  lua_pushboolean(L, 1);
  return 1;
}

static int t_gc(lua_State *L)
{
  tail_ud_t *u = luaL_checkudata(L, 1, TAIL_MT);
  if (u->st != NULL) {
    state_close(u->st, false); /* no task can be reading: it would hold the userdata */
    u->st->ud_alive = false;
    state_maybe_free(u->st);
    u->st = NULL;
  }
  return 0;
}

static int t_tostring(lua_State *L)
{
  tail_state_t *st = check_tail(L);
  lua_pushfstring(L, "vigil.logs.tail(%s)", st->path);
  return 1;
}

/* ---- constructor ---- */

static uint64_t opt_count(
    lua_State *L, int idx, const char *k, uint64_t dflt, uint64_t lo, uint64_t hi)
{
  uint64_t v = dflt;
  if (lua_getfield(L, idx, k) != LUA_TNIL) {
    int ok;
    lua_Integer n = lua_tointegerx(L, -1, &ok);
    if (!ok || n < (lua_Integer)lo || (uint64_t)n > hi) {
      luaL_error(L, "bad option '%s' to vigil.logs.tail (an integer from %I to %I)", k,
                 (lua_Integer)lo, (lua_Integer)hi);
    }
    v = (uint64_t)n;
  }
  lua_pop(L, 1);
  return v;
}

/* vigil.logs.tail(path [, opts]) [-2, +(1|2), e]: a tail object following `path`, or nil and
 * "EDENIED: ..." when the path is not under the config's logs.allow. opts: from = "end" |
 * "start", max_line (bytes), timeout (read()'s wait), poll (stat interval), max_pending
 * and max_pending_bytes (the queue between the file and read()). */
static int l_tail(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  vg_tail_opts_t o;
  tail_opts_default(&o);
  uint64_t timeout_ms = 0, max_pending = DEFAULT_PENDING, max_bytes = DEFAULT_PENDING_BYTES;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "from") != LUA_TNIL) {
      const char *from = lua_tostring(L, -1);
      luaL_argcheck(L, from != NULL && (!strcmp(from, "start") || !strcmp(from, "end")), 2,
                    "from must be \"start\" or \"end\"");
      o.from = strcmp(from, "start") == 0 ? VG_TAIL_FROM_START : VG_TAIL_FROM_END;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {
      timeout_ms = vg_check_duration_ms(L, lua_gettop(L));
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "poll") != LUA_TNIL) {
      o.poll_ms = vg_check_duration_ms(L, lua_gettop(L));
      luaL_argcheck(L, o.poll_ms >= 10, 2, "poll must be at least 10ms");
    }
    lua_pop(L, 1);
    o.max_line = (size_t)opt_count(L, 2, "max_line", o.max_line, 1, 16u << 20);
    max_pending = opt_count(L, 2, "max_pending", max_pending, 1, 10000000);
    max_bytes = opt_count(L, 2, "max_pending_bytes", max_bytes, 1, 1u << 30);
  }
  vg_runtime_t *rt = vg_vm_of(L)->rt;
  char real[PATH_MAX], err[PATH_MAX + 128];
  if (!vg_logs_path_resolve(rt, path, real, sizeof(real), err, sizeof(err))) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  o.nofollow = true;
  o.unref = vg_clock_is_virtual(rt); /* a spec's virtual clock advances when the loop idles */
  tail_ud_t *u = lua_newuserdatauv(L, sizeof(*u), 0);
  u->st = NULL;
  luaL_setmetatable(L, TAIL_MT);
  tail_state_t *st = calloc(1, sizeof(*st));
  char *rpath = strdup(real);
  if (st == NULL || rpath == NULL) {
    free(st);
    free(rpath);
    return luaL_error(L, "vigil.logs.tail: out of memory");
  }
  st->path = rpath;
  st->timeout_ms = timeout_ms;
  st->max_pending = (size_t)max_pending;
  st->max_pending_bytes = (size_t)max_bytes;
  st->ud_alive = true;
  u->st = st;
  st->eng = tail_open(rt->loop, real, &o, on_lines, st, err, sizeof(err));
  if (st->eng == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2; /* the userdata's __gc frees st */
  }
  st->eng_alive = true;
  return 1;
}

int vg_open_vigil_tail(lua_State *L)
{
  static const luaL_Reg methods[] = {
    { "read", t_read },
    { "stats", t_stats },
    { "close", t_close },
    { NULL, NULL },
  };
  luaL_newmetatable(L, TAIL_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, t_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, t_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, t_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "vigil.logs.tail");
  lua_setfield(L, -2, "__name");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable"); /* policies cannot reach __gc and call it early */
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {
    { "tail", l_tail },
    { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  return 1;
}
