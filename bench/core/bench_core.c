/* bench/core: the core runtime's figures measured in one run, each next to its peer: task
 * resumes through the real scheduler vs bare Lua coroutines on the same liblua, policy VM
 * creation vs luaL_newstate+luaL_openlibs, and reload of 100 generated policies. Prints rows
 * "ROW|metric|vigil|peer|target|verdict" for bench/core/run, and details on lines starting "#".
 * Timings are medians over repetitions; nothing here asserts a timing. */
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "core/log.h"
#include "core/policy.h"
#include "core/runtime.h"
#include "core/sandbox.h"
#include "core/task.h"
#include "core/vm.h"
#include "lua/lvigil.h"

/* ---- figures ---- */

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Sorts v in place and returns its median. */
static double median(double *v, size_t n)
{
  qsort(v, n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The value at quantile q of a sorted array. */
static double quantile(const double *v, size_t n, double q)
{
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

static double now_s(void)
{
  return (double)uv_hrtime() / 1e9;
}

static void die(const char *what, const char *detail)
{
  fprintf(stderr, "bench_core: %s: %s\n", what, detail ? detail : "");
  exit(1);
}

static void row(
    const char *metric, const char *vigil, const char *peer, const char *target, bool pass)
{
  printf("ROW|%s|%s|%s|%s|%s\n", metric, vigil, peer, target, pass ? "ok" : "MISSED");
  fflush(stdout);
}

/* Log lines are formatted as in the daemon but not written: a terminal would time itself. */
static void discard_line(const char *line, void *ud)
{
  (void)line;
  (void)ud;
}

/* ---- a VM set up the way a policy's is ---- */

/* [-0, +0, v] What compile() in policy.c does before loading the file: C modules, then the
 * strict sandboxed environment (which requires the embedded `vigil` library). Leaves the
 * environment in the registry under "bench.env". */
static int policy_setup_p(lua_State *L)
{
  vg_open_modules(L);
  vg_sandbox_push_env(L, true);
  lua_setfield(L, LUA_REGISTRYINDEX, "bench.env");
  return 0;
}

static vg_vm_t *policy_vm(vg_runtime_t *rt, const char *name)
{
  vg_vm_t *vm = vg_vm_new(rt, name, &rt->limits);
  if (vm == NULL) {
    die("vg_vm_new", "out of memory");
  }
  lua_pushcfunction(vm->L, policy_setup_p);
  if (vg_vm_pcall(vm->L, 0, 0) != LUA_OK) {
    die("policy VM set-up", lua_tostring(vm->L, -1));
  }
  return vm;
}

/* Compiles `src` as policy code (text only, in the sandboxed environment), runs its top level
 * and leaves the function it returns in the registry under `key`. */
static void policy_function(vg_vm_t *vm, const char *src, const char *key)
{
  lua_State *L = vm->L;
  if (vg_vm_load_text(L, src, strlen(src), "=bench") != LUA_OK) {
    die("load", lua_tostring(L, -1));
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "bench.env");
  lua_setupvalue(L, -2, 1);
  vm->load_phase = true;
  if (vg_vm_pcall(L, 0, 1) != LUA_OK) {
    die("run", lua_tostring(L, -1));
  }
  vm->load_phase = false;
  lua_setfield(L, LUA_REGISTRYINDEX, key);
}

/* ---- 1. resumes: vigil's scheduler ---- */

static uint64_t g_done, g_failed;

static void task_done(vg_task_t *t, void *ud)
{
  (void)ud;
  g_done++;
  g_failed += t->status != VG_TASK_OK;
}

/* Steady state: `ntasks` tasks, each `for i = 1, k do vigil.sleep(0) end`, resumed by the
 * scheduler from its uv_idle handle. Returns resumes per second. */
static double vigil_yield_rate(vg_runtime_t *rt, vg_vm_t *vm, int ntasks, int k)
{
  lua_State *L = vm->L;
  g_done = g_failed = 0;
  uint64_t r0 = rt->resumes;
  double t0 = now_s();
  vg_task_opts_t opts = { .name = "bench", .label = "bench", .done = task_done };
  for (int i = 0; i < ntasks; i++) {
    lua_getfield(L, LUA_REGISTRYINDEX, "bench.yield");
    lua_pushinteger(L, k);
    if (vg_task_spawn(vm, 1, &opts) == NULL) {
      die("vg_task_spawn", "failed");
    }
  }
  vg_runtime_run(rt, -1);
  double dt = now_s() - t0;
  if (g_done != (uint64_t)ntasks || g_failed != 0) {
    die("yield tasks", "did not all finish cleanly");
  }
  return (double)(rt->resumes - r0) / dt;
}

/* Spawn cycle: batches of `batch` tasks, each spawned from C (as vg_policies_dispatch does),
 * yielding once with vigil.sleep(0), resumed, finishing. Returns tasks per second; resumes per
 * second are twice that. */
static double vigil_spawn_rate(vg_runtime_t *rt, vg_vm_t *vm, int batches, int batch)
{
  lua_State *L = vm->L;
  g_done = g_failed = 0;
  uint64_t r0 = rt->resumes;
  double t0 = now_s();
  vg_task_opts_t opts = { .name = "bench", .label = "bench", .done = task_done };
  for (int b = 0; b < batches; b++) {
    for (int i = 0; i < batch; i++) {
      lua_getfield(L, LUA_REGISTRYINDEX, "bench.once");
      if (vg_task_spawn(vm, 0, &opts) == NULL) {
        die("vg_task_spawn", "failed");
      }
    }
    vg_runtime_run(rt, -1);
  }
  double dt = now_s() - t0;
  uint64_t n = (uint64_t)batches * (uint64_t)batch;
  if (g_done != n || g_failed != 0 || rt->resumes - r0 != 2 * n) {
    die("spawn tasks", "did not all finish cleanly with two resumes each");
  }
  return (double)n / dt;
}

/* ---- 1'. resumes: the peer, bare coroutines on the same liblua ---- */

static const char peer_src[] =
    "local yield = coroutine.yield\n"
    "return function(k) for i = 1, k do yield() end end, function() yield() end\n";

static lua_State *peer_state(void)
{
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_loadstring(L, peer_src) != LUA_OK || lua_pcall(L, 0, 2, 0) != LUA_OK) {
    die("peer", lua_tostring(L, -1));
  }
  lua_setfield(L, LUA_REGISTRYINDEX, "peer.once");
  lua_setfield(L, LUA_REGISTRYINDEX, "peer.yield");
  return L;
}

/* Same shape as vigil_yield_rate: ntasks coroutines resumed round-robin until all end. */
static double peer_yield_rate(lua_State *L, int ntasks, int k)
{
  lua_State **co = calloc((size_t)ntasks, sizeof(*co));
  int *ref = calloc((size_t)ntasks, sizeof(*ref));
  double t0 = now_s();
  uint64_t resumes = 0;
  for (int i = 0; i < ntasks; i++) {
    co[i] = lua_newthread(L);
    ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(co[i], LUA_REGISTRYINDEX, "peer.yield");
    lua_pushinteger(co[i], k);
  }
  int live = ntasks;
  for (bool first = true; live > 0; first = false) {
    for (int i = 0; i < ntasks; i++) {
      if (co[i] == NULL) {
        continue;
      }
      int nres;
      int st = lua_resume(co[i], NULL, first ? 1 : 0, &nres);
      resumes++;
      if (st == LUA_YIELD) {
        lua_pop(co[i], nres);
      } else if (st == LUA_OK) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref[i]);
        co[i] = NULL;
        live--;
      } else {
        die("peer resume", lua_tostring(co[i], -1));
      }
    }
  }
  double dt = now_s() - t0;
  free(co);
  free(ref);
  return (double)resumes / dt;
}

/* Same shape as vigil_spawn_rate: create, resume (yields), resume (ends), release. */
static double peer_spawn_rate(lua_State *L, int batches, int batch)
{
  lua_State **co = calloc((size_t)batch, sizeof(*co));
  int *ref = calloc((size_t)batch, sizeof(*ref));
  double t0 = now_s();
  for (int b = 0; b < batches; b++) {
    for (int i = 0; i < batch; i++) {
      co[i] = lua_newthread(L);
      ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
      lua_getfield(co[i], LUA_REGISTRYINDEX, "peer.once");
    }
    for (int pass = 0; pass < 2; pass++) {
      for (int i = 0; i < batch; i++) {
        int nres;
        int st = lua_resume(co[i], NULL, 0, &nres);
        if (st != (pass == 0 ? LUA_YIELD : LUA_OK)) {
          die("peer resume", "unexpected status");
        }
        lua_pop(co[i], nres);
      }
    }
    for (int i = 0; i < batch; i++) {
      luaL_unref(L, LUA_REGISTRYINDEX, ref[i]);
    }
  }
  double dt = now_s() - t0;
  free(co);
  free(ref);
  return (double)batches * batch / dt;
}

/* ---- 2. VM creation ---- */

static void bench_vm_creation(vg_runtime_t *rt, int n)
{
  double *bare = malloc(sizeof(double) * (size_t)n);
  double *ready = malloc(sizeof(double) * (size_t)n);
  double *peer = malloc(sizeof(double) * (size_t)n);
  double *closes = malloc(sizeof(double) * (size_t)n);
  size_t mem = 0;
  /* Interleaved, so drift on a noisy machine hits all three alike. */
  for (int i = 0; i < n; i++) {
    double t0 = now_s();
    vg_vm_t *vm = vg_vm_new(rt, "bench", &rt->limits);
    bare[i] = now_s() - t0;
    if (vm == NULL) {
      die("vg_vm_new", "out of memory");
    }
    vg_vm_free(vm);

    t0 = now_s();
    vm = policy_vm(rt, "bench");
    ready[i] = now_s() - t0;
    mem = vm->mem_used;
    t0 = now_s();
    vg_vm_free(vm);
    closes[i] = now_s() - t0;

    t0 = now_s();
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    peer[i] = now_s() - t0;
    lua_close(L);
  }
  double mb = median(bare, (size_t)n) * 1e3, mr = median(ready, (size_t)n) * 1e3;
  double mp = median(peer, (size_t)n) * 1e3, mc = median(closes, (size_t)n) * 1e3;
  printf("# vm: vg_vm_new alone (libraries, cjson, sandbox hardening): median %.3f ms, p90 %.3f\n",
         mb, quantile(bare, (size_t)n, 0.9) * 1e3);
  printf(
      "# vm: ready for a policy file (+ vigil.core, embedded vigil library, strict env): "
      "median %.3f ms, p90 %.3f, %zu KiB of Lua heap; vg_vm_free %.3f ms\n",
      mr, quantile(ready, (size_t)n, 0.9) * 1e3, mem / 1024, mc);
  printf("# vm: peer luaL_newstate+luaL_openlibs: median %.3f ms, p90 %.3f (n=%d each)\n", mp,
         quantile(peer, (size_t)n, 0.9) * 1e3, n);
  char v[64], p[64];
  snprintf(v, sizeof(v), "%.3f ms (%.1fx)", mr, mr / mp);
  snprintf(p, sizeof(p), "%.3f ms", mp);
  row("policy VM creation, median of 1000", v, p, "<= 1 ms", mr <= 1.0);
  snprintf(v, sizeof(v), "%.3f ms (%.1fx)", mb, mb / mp);
  row("  of which vg_vm_new alone", v, p, "-", true);
  free(bare);
  free(ready);
  free(peer);
  free(closes);
}

/* ---- 3. reload of 100 policies ---- */

#define NPOLICIES 100

/* A small policy like the shipped examples; `rev` changes its content. */
static void write_policy(const char *dir, int i, int rev)
{
  char path[4096];
  snprintf(path, sizeof(path), "%s/bench_%03d.lua", dir, i);
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    die(path, strerror(errno));
  }
  fprintf(f,
          "-- generated by bench/core (revision %d)\n"
          "local severity = require(\"lib.severity\")\n"
          "\n"
          "return {\n"
          "  name = \"bench-%03d\",\n"
          "  description = \"generated policy %d: note the alert, wait, recommend\",\n"
          "  match = { 'alertname=\"Bench%d\"', 'severity=~\"critical|warning\"' },\n"
          "\n"
          "  on_alert = function(alert, ctx)\n"
          "    local pod = alert.labels.pod or \"unknown\"\n"
          "    ctx.log.info(\"bench alert\", { pod = pod, urgency = severity.of(alert) })\n"
          "    if alert.status == \"resolved\" then return end\n"
          "    vigil.sleep(\"30s\")\n"
          "    ctx.log.warn(\"still firing: would scale out\", { pod = pod })\n"
          "  end,\n"
          "}\n",
          rev, i, i, i);
  fclose(f);
}

static void write_lib(const char *dir)
{
  char path[4096];
  snprintf(path, sizeof(path), "%s/lib", dir);
  if (mkdir(path, 0700) != 0 && errno != EEXIST) {
    die(path, strerror(errno));
  }
  snprintf(path, sizeof(path), "%s/lib/severity.lua", dir);
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    die(path, strerror(errno));
  }
  fputs(
      "-- shared helper of the generated policies\n"
      "local M = {}\n"
      "function M.of(alert)\n"
      "  local s = alert.labels.severity\n"
      "  if s == \"critical\" then return 2 elseif s == \"warning\" then return 1 end\n"
      "  return 0\n"
      "end\n"
      "return M\n",
      f);
  fclose(f);
}

static int count_policies(vg_policies_t *ps)
{
  int n = 0;
  for (vg_policy_t *p = ps->list; p != NULL; p = p->next) {
    n++;
  }
  return n;
}

/* One timed reload, then (untimed) the loop turns that close the drained versions. */
static double timed_reload(vg_runtime_t *rt, vg_policies_t *ps, double *reap_s)
{
  double t0 = now_s();
  int failures = vg_policies_reload(ps, "bench");
  double dt = now_s() - t0;
  if (failures != 0 || count_policies(ps) != NPOLICIES) {
    die("reload", "a generated policy failed to load (run with VG_BENCH_LOG=1 to see why)");
  }
  t0 = now_s();
  vg_runtime_run(rt, -1);
  if (reap_s != NULL) {
    *reap_s = now_s() - t0;
  }
  if (ps->draining != NULL) {
    die("reload", "old versions still draining after the loop ran");
  }
  return dt;
}

static void bench_reload(vg_runtime_t *rt, int reps)
{
  char dir[] = "/tmp/vigil-bench-XXXXXX";
  if (mkdtemp(dir) == NULL) {
    die("mkdtemp", strerror(errno));
  }
  write_lib(dir);
  for (int i = 0; i < NPOLICIES; i++) {
    write_policy(dir, i, 0);
  }
  vg_policies_t *ps = vg_policies_new(rt, dir);
  double first = timed_reload(rt, ps, NULL);

  double *changed = malloc(sizeof(double) * (size_t)reps);
  double *same = malloc(sizeof(double) * (size_t)reps);
  double *reap = malloc(sizeof(double) * (size_t)reps);
  for (int r = 0; r < reps; r++) {
    for (int i = 0; i < NPOLICIES; i++) {
      write_policy(dir, i, r + 1);
    }
    uint64_t gen0 = ps->reloads;
    changed[r] = timed_reload(rt, ps, &reap[r]);
    if (ps->reloads != gen0 + 1 || ps->list->generation != r + 2) {
      die("reload", "the changed files were not all reloaded");
    }
    same[r] = timed_reload(rt, ps, NULL);
    if (ps->list->generation != r + 2) {
      die("reload", "an unchanged reload replaced a policy");
    }
  }
  double mc = median(changed, (size_t)reps) * 1e3, ms = median(same, (size_t)reps) * 1e3;
  double mr = median(reap, (size_t)reps) * 1e3;
  printf(
      "# reload: first load of %d policies %.1f ms; all changed: median %.1f ms (min %.1f, "
      "max %.1f, n=%d), then closing the %d drained VMs %.1f ms on the loop; none changed: "
      "median %.2f ms\n",
      NPOLICIES, first * 1e3, mc, changed[0] * 1e3, changed[reps - 1] * 1e3, reps, NPOLICIES, mr,
      ms);
  char v[64];
  snprintf(v, sizeof(v), "%.1f ms", mc);
  row("reload 100 policies, all changed", v, "-", "<= 100 ms", mc <= 100.0);
  snprintf(v, sizeof(v), "%.2f ms", ms);
  row("reload 100 policies, none changed", v, "-", "<= 100 ms", ms <= 100.0);

  vg_policies_free(ps);
  vg_runtime_run(rt, -1);
  for (int i = 0; i < NPOLICIES; i++) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/bench_%03d.lua", dir, i);
    unlink(path);
  }
  char path[4096];
  snprintf(path, sizeof(path), "%s/lib/severity.lua", dir);
  unlink(path);
  snprintf(path, sizeof(path), "%s/lib", dir);
  rmdir(path);
  rmdir(dir);
  free(changed);
  free(same);
  free(reap);
}

/* ---- main ---- */

/* Policy code as an SRE writes it: globals through the sandbox's environment. */
static const char yield_src[] = "return function(k) for i = 1, k do vigil.sleep(0) end end\n";
static const char once_src[] = "return function() vigil.sleep(0) end\n";

int main(int argc, char **argv)
{
  bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
  int reps = quick ? 3 : 7;
  /* For perf: "resume", "vm" or "reload" runs one part; "spawn" or "yield" runs only vigil's
   * side of one resume workload, with no peer in the profile. */
  const char *only = getenv("VG_BENCH_ONLY");
  if (getenv("VG_BENCH_LOG") == NULL) {
    vg_log_set_sink(discard_line, NULL);
  }
  vg_runtime_t *rt = vg_runtime_new();
  if (rt == NULL) {
    die("vg_runtime_new", "failed");
  }

  if (only != NULL && (strcmp(only, "spawn") == 0 || strcmp(only, "yield") == 0)) {
    vg_vm_t *vm = policy_vm(rt, "bench");
    policy_function(vm, yield_src, "bench.yield");
    policy_function(vm, once_src, "bench.once");
    for (int r = 0; r < reps; r++) {
      if (strcmp(only, "spawn") == 0) {
        printf("# spawn: %.0f tasks/s\n", vigil_spawn_rate(rt, vm, 100, 1000));
      } else {
        printf("# yield: %.0f resumes/s\n", vigil_yield_rate(rt, vm, 100, 10000));
      }
    }
    vg_vm_free(vm);
  }
  if (only == NULL || strcmp(only, "resume") == 0) {
    vg_vm_t *vm = policy_vm(rt, "bench");
    policy_function(vm, yield_src, "bench.yield");
    policy_function(vm, once_src, "bench.once");
    lua_State *pl = peer_state();
    const int ntasks = 100, k = quick ? 2000 : 10000, batches = quick ? 20 : 100, batch = 1000;
    double *vy = malloc(sizeof(double) * (size_t)reps), *py = malloc(sizeof(double) * (size_t)reps);
    double *vs = malloc(sizeof(double) * (size_t)reps),
           *pspawn = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
      vy[r] = vigil_yield_rate(rt, vm, ntasks, k);
      py[r] = peer_yield_rate(pl, ntasks, k);
      vs[r] = vigil_spawn_rate(rt, vm, batches, batch);
      pspawn[r] = peer_spawn_rate(pl, batches, batch);
    }
    double mvy = median(vy, (size_t)reps), mpy = median(py, (size_t)reps);
    double mvs = median(vs, (size_t)reps), mps = median(pspawn, (size_t)reps);
    printf(
        "# resume: %d tasks x %d vigil.sleep(0) through the scheduler (uv_idle), policy limits "
        "and sandboxed env: median %.0f resumes/s (min %.0f, max %.0f, n=%d)\n",
        ntasks, k, mvy, vy[0], vy[reps - 1], reps);
    printf(
        "# resume: peer, %d coroutines x %d coroutine.yield() resumed round-robin from C: "
        "median %.0f resumes/s\n",
        ntasks, k, mpy);
    printf(
        "# spawn: %d x %d tasks spawned from C, each vigil.sleep(0) once: median %.0f tasks/s "
        "= %.0f resumes/s; peer (lua_newthread, resume, resume, unref): %.0f/s\n",
        batches, batch, mvs, 2 * mvs, mps);
    char v[64], p[64];
    snprintf(v, sizeof(v), "%.2f M/s (%.2fx)", mvy / 1e6, mvy / mpy);
    snprintf(p, sizeof(p), "%.2f M/s", mpy / 1e6);
    row("yield+resume, resumes/s", v, p, ">= 1 M/s", mvy >= 1e6);
    snprintf(v, sizeof(v), "%.2f M/s (%.2fx)", 2 * mvs / 1e6, mvs / mps);
    snprintf(p, sizeof(p), "%.2f M/s", 2 * mps / 1e6);
    row("spawn+yield+resume+end, resumes/s", v, p, ">= 1 M/s", 2 * mvs >= 1e6);
    free(vy);
    free(py);
    free(vs);
    free(pspawn);
    lua_close(pl);
    vg_vm_free(vm);
    vg_runtime_run(rt, -1);
  }
  if (only == NULL || strcmp(only, "vm") == 0) {
    bench_vm_creation(rt, 1000);
  }
  if (only == NULL || strcmp(only, "reload") == 0) {
    bench_reload(rt, reps);
  }
  vg_runtime_free(rt);
  return 0;
}
