/* The spec runner behind `vigil test`. One runtime on a virtual clock per spec file, one
 * fresh VM per file; the harness itself (describe/it/expect) is lua/vigil/test.lua, which
 * runs as a task so specs can wait, sleep and spawn like policies do. */
#include "core/spec.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/every.h"
#include "core/executor.h"
#include "core/log.h"
#include "core/runtime.h"
#include "core/sandbox.h"
#include "core/task.h"
#include "core/watchdog.h"
#include "engine/store.h"
#include "lua/lvigil.h"

#define VIRTUAL_EPOCH 1767225600.0 /* 2026-01-01T00:00:00Z: specs see a fixed start time */

typedef struct {
  char **files;
  size_t n, cap;
} file_list_t;

static void add_file(file_list_t *l, const char *path)
{
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 16;
    l->files = realloc(l->files, l->cap * sizeof(*l->files));
  }
  l->files[l->n++] = strdup(path);
}

static bool is_spec(const char *name)
{
  size_t n = strlen(name);
  return n > 9 && strcmp(name + n - 9, "_spec.lua") == 0;
}

static int cmp_str(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void collect(file_list_t *l, const char *path, bool explicit_path)
{
  struct stat st;
  if (stat(path, &st) != 0) {
    if (explicit_path) {
      fprintf(stderr, "vigil test: %s: %s\n", path, strerror(errno));
      add_file(l, path); /* reported as a failed file */
    }
    return;
  }
  if (!S_ISDIR(st.st_mode)) {
    add_file(l, path);
    return;
  }
  DIR *d = opendir(path);
  if (d == NULL) {
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || strcmp(e->d_name, "build") == 0) {
      continue;
    }
    char sub[4096];
    snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
    if (stat(sub, &st) != 0) {
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      collect(l, sub, false);
    } else if (is_spec(e->d_name)) {
      add_file(l, sub);
    }
  }
  closedir(d);
}

typedef struct {
  bool finished;
  long passed, failed, pending;
  char *error;
} file_result_t;

static void spec_done(vg_task_t *t, void *ud)
{
  file_result_t *r = ud;
  r->finished = true;
  /* Periodic jobs would keep the virtual clock jumping forever: the file is done. */
  t->vm->rt->stopping = true;
  vg_every_stop_all(t->vm);
  if (t->status != VG_TASK_OK) {
    r->error = strdup(t->error ? t->error : "spec file failed");
    return;
  }
  lua_State *co = t->co;
  r->passed = (long)lua_tointeger(co, 1);
  r->failed = (long)lua_tointeger(co, 2);
  r->pending = (long)lua_tointeger(co, 3);
}

static void print_stdout(vg_vm_t *vm, const char *text, size_t len, void *ud)
{
  (void)vm;
  (void)ud;
  fwrite(text, 1, len, stdout);
  fputc('\n', stdout);
}

static int setup_p(lua_State *L)
{
  const char *path = lua_tostring(L, 1);
  vg_open_modules(L);
  lua_pushcfunction(L, vg_open_vigil_testing);
  lua_call(L, 0, 1);
  vg_sandbox_register(L, "vigil.testing");
  lua_getglobal(L, "require");
  lua_pushliteral(L, "vigil.test");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "run_file");
  lua_pushstring(L, path);
  return 2; /* run_file, path: the task's function and argument */
}

/* Each spec file gets a store of its own in a temporary directory, so what policies remember
 * (timeline, knowledge base, escalation timers, the action ledger) works in specs as in the
 * daemon, and no file sees another's. Returns NULL (specs then run without one) on failure. */
static vg_store_t *open_spec_store(vg_runtime_t *rt, char *dir, size_t dirlen)
{
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, dirlen, "%s/vigil-spec-XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
  if (mkdtemp(dir) == NULL) {
    dir[0] = '\0';
    return NULL;
  }
  char db[4200], err[512];
  snprintf(db, sizeof db, "%s/spec.db", dir);
  vg_store_opts_t so;
  vg_store_opts_default(&so);
  so.path = db;
  vg_store_t *store = vg_store_open(rt->loop, &so, err, sizeof err);
  if (store == NULL) {
    fprintf(stderr, "vigil test: no store for the specs: %s\n", err);
    return NULL;
  }
  vg_executor_opts_t eo;
  vg_executor_opts_default(&eo);
  vg_executor_t *ex = vg_executor_new(rt, store, vg_runtime_exec(rt), &eo);
  if (ex == NULL) {
    vg_store_close(store, NULL, NULL);
    return NULL;
  }
  vg_runtime_set_executor(rt, ex);
  vg_executor_start(ex, NULL, NULL);
  return store;
}

static void close_spec_store(vg_runtime_t *rt, vg_store_t *store, const char *dir)
{
  if (store != NULL) {
    vg_executor_stop(rt->executor);
    vg_store_close(store, NULL, NULL);
    vg_runtime_run(rt, -1);
  }
  if (dir[0] != '\0') {
    const char *names[] = { "spec.db", "spec.db-wal", "spec.db-shm", "spec.db.quarantine" };
    char f[4200];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
      snprintf(f, sizeof f, "%s/%s", dir, names[i]);
      unlink(f);
    }
    rmdir(dir);
  }
}

static void run_file(const char *path, file_result_t *r)
{
  vg_runtime_t *rt = vg_runtime_new();
  vg_clock_use_virtual(rt, VIRTUAL_EPOCH);
  vg_limits_t limits = { .memory = 512u << 20, .instructions = 0, .slice_ms = 30000 };
  vg_vm_t *vm = vg_vm_new(rt, path, &limits);
  if (rt == NULL || vm == NULL) {
    r->error = strdup("out of memory");
    vg_vm_free(vm);
    vg_runtime_free(rt);
    return;
  }
  char store_dir[4096];
  vg_store_t *store = open_spec_store(rt, store_dir, sizeof store_dir);
  vm->lib_dir = strdup("policies/lib");
  vm->print = print_stdout;
  lua_State *L = vm->L;
  lua_pushcfunction(L, setup_p);
  lua_pushstring(L, path);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
    char buf[128];
    r->error = strdup(vg_vm_error_text(L, -1, buf, sizeof(buf)));
    lua_pop(L, 1);
  } else {
    vg_task_opts_t opts = { .name = "spec", .label = "spec", .done = spec_done, .done_ud = r };
    if (vg_task_spawn(vm, 1, &opts) == NULL) {
      r->error = strdup("cannot start the spec task");
    } else {
      /* A hang in C (where no hook reaches) must fail the run, not stall CI. */
      rt->watchdog = vg_watchdog_start(rt, 10000, 30000);
      vg_runtime_run(rt, -1);
      vg_watchdog_stop(rt->watchdog);
      if (!r->finished) {
        r->error = strdup(
            "the spec never finished: a test waits for something that cannot "
            "happen (a task that never ends, with no timer pending)");
      }
    }
  }
  vg_vm_free(vm);
  close_spec_store(rt, store, store_dir);
  vg_runtime_free(rt);
}

int vg_spec_main(int npaths, char **paths)
{
  file_list_t list = { 0 };
  if (npaths == 0) {
    collect(&list, "policies", false);
    collect(&list, "tests", false);
  }
  for (int i = 0; i < npaths; i++) {
    collect(&list, paths[i], true);
  }
  if (list.n == 0) {
    fprintf(stderr, "vigil test: no *_spec.lua files found\n");
    printf("0 passed, 0 failed\n");
    return 1;
  }
  qsort(list.files, list.n, sizeof(char *), cmp_str);
  long passed = 0, failed = 0, pending = 0, broken = 0;
  for (size_t i = 0; i < list.n; i++) {
    file_result_t r = { 0 };
    run_file(list.files[i], &r);
    if (r.error != NULL) {
      printf("%s: ERROR\n  %s\n", list.files[i], r.error);
      broken++;
      free(r.error);
    }
    passed += r.passed;
    failed += r.failed;
    pending += r.pending;
    free(list.files[i]);
  }
  free(list.files);
  failed += broken;
  if (pending > 0) {
    printf("%ld passed, %ld failed, %ld pending\n", passed, failed, pending);
  } else {
    printf("%ld passed, %ld failed\n", passed, failed);
  }
  fflush(stdout);
  return failed > 0 ? 1 : 0;
}
