/* The executor (see executor.h): one vg_action_t per request, moving through
 *   decide -> [approval] -> guard -> claim (committed) -> attempt [-> backoff -> attempt]...
 *   -> finish (committed) -> answer.
 * The guard rails and the kill switch are checked here, in C, where no policy can skip them. */
#include "core/executor.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/runtime.h"
#include "engine/exec.h"
#include "engine/httpc.h"
#include "engine/ledger.h"
#include "engine/store.h"

#define KEY_MAX 1024
#define EXCERPT 2048 /* bytes of output or body kept in the ledger */

typedef struct suppression {
  struct suppression *next;
  vg_matchers_t *matchers;
  int64_t until_ms;
} suppression_t;

#define STORM_SLOTS 4096 /* scopes tracked at once; beyond, the oldest quiet ones are reused */
#define STORM_PROBE 8

/* Alerts per scope in a sliding window, estimated from the current and the previous window. */
typedef struct {
  char *scope;
  int64_t window_start;
  uint32_t count, prev;
} storm_slot_t;

#define MAX_TYPES 64

const char *const vg_action_state_names[VG_ACTION_STATES] = {
  "observed", "dry-run", "refused", "done", "failed", "duplicate", "denied", "expired",
};

typedef struct {
  char name[48];
  uint64_t counts[VG_ACTION_STATES];
} type_count_t;

struct vg_executor {
  vg_runtime_t *rt;
  vg_store_t *store;
  vg_exec_t *exec;
  vg_executor_opts_t o;
  char *kill_switch_file;
  vg_guard_t *guard;
  bool killed; /* the switch as set through the API (the file is checked each time) */
  vg_action_t *acts;
  suppression_t *suppressions;
  type_count_t types[MAX_TYPES]; /* outcomes per action type, for /metrics */
  size_t ntypes;
  char *storm_label;
  storm_slot_t *storm; /* STORM_SLOTS, or NULL when storms are not watched */
  vg_executor_stats_t st;
  int reads_running; /* read-only runs in progress (MAX_READS at most; the rest queue) */
  bool freeing;
};

/* Read-only runs (kubectl get before a relative scale, rollout status) pass no guard rail, so
 * an alert storm would start one sandboxed process per alert at once, and the loop would
 * spend its time starting them instead of answering. They queue beyond this many. */
#define MAX_READS 4

typedef enum {
  STEP_RECORD,   /* writing a decision where nothing runs */
  STEP_APPROVAL, /* waiting for an operator */
  STEP_CLAIM,    /* the claim is being committed */
  STEP_RUN,      /* an attempt is running */
  STEP_BACKOFF,  /* waiting before the next attempt */
  STEP_FINISH,   /* the outcome is being committed */
  STEP_QUEUED,   /* a read-only run waiting for one of the MAX_READS slots */
} step_t;

struct vg_action {
  vg_executor_t *ex;
  vg_action_t *prev, *next;
  vg_action_done_fn done; /* NULL once detached */
  void *ud;
  step_t step;

  char *policy, *version, *type, *target, *scope, *subject, *key, *why, *command;
  int64_t incident_id;
  vg_mode_t mode;
  bool notify, approve, read_only;
  uint64_t approval_timeout_ms, timeout_ms;
  int retries;
  char **argv, **env, **headers;
  size_t argc, nenv, nheaders, max_output;
  char *stdin_data, *method, *url, *body;
  size_t stdin_len, body_len;

  int64_t id;
  bool taken; /* holds guard resources (vg_guard_take) */
  int attempts;
  uint64_t t0;
  vg_timer_t *timer;
  vg_exec_run_t *run;
  vg_httpc_req_t *hreq;

  /* the answer */
  const char *state;
  char *error, *would;
  bool ran_process, ran_http, timed_out;
  int code, signal;
  long status;
  char *out, *err, *resp_headers, *resp_body;
  size_t out_len, err_len, resp_headers_len, resp_body_len;
  int64_t dup_id;
};

static void attempt(vg_action_t *a);

int vg_mode_parse(const char *s)
{
  static const char *const names[] = { "observe", "dry-run", "enforce" };
  for (int i = 0; s != NULL && i < 3; i++) {
    if (strcmp(s, names[i]) == 0) {
      return i;
    }
  }
  return -1;
}

const char *vg_mode_name(vg_mode_t m)
{
  return m == VG_MODE_OBSERVE ? "observe" : m == VG_MODE_DRY_RUN ? "dry-run" : "enforce";
}

void vg_executor_opts_default(vg_executor_opts_t *o)
{
  memset(o, 0, sizeof *o);
  o->mode = VG_MODE_DRY_RUN;
  vg_guard_opts_default(&o->guard);
  o->approval_timeout_ms = 30 * 60 * 1000;
  o->backoff_ms = 1000;
  o->backoff_max_ms = 60000;
  o->storm_label = "namespace";
  o->storm_alerts = 100;
  o->storm_window_ms = 60000;
}

static int64_t now_ms(vg_executor_t *ex)
{
  return (int64_t)(vg_clock_now(ex->rt) * 1000.0);
}

static char *sdup(const char *s)
{
  return s != NULL ? strdup(s) : NULL;
}

static char *bdup(const char *p, size_t n)
{
  char *d = malloc(n + 1);
  if (d != NULL) {
    if (n > 0) {
      memcpy(d, p, n);
    }
    d[n] = '\0';
  }
  return d;
}

static char **vdup(const char *const *v, size_t n, bool *ok)
{
  if (n == 0) {
    return NULL;
  }
  char **d = calloc(n + 1, sizeof *d);
  *ok = *ok && d != NULL;
  for (size_t i = 0; d != NULL && i < n; i++) {
    d[i] = sdup(v[i]);
    *ok = *ok && d[i] != NULL;
  }
  return d;
}

static void vfree(char **v, size_t n)
{
  for (size_t i = 0; v != NULL && i < n; i++) {
    free(v[i]);
  }
  free(v);
}

static void action_free(vg_action_t *a)
{
  vg_executor_t *ex = a->ex;
  if (a->prev != NULL) {
    a->prev->next = a->next;
  } else if (ex->acts == a) {
    ex->acts = a->next;
  }
  if (a->next != NULL) {
    a->next->prev = a->prev;
  }
  if (a->timer != NULL) {
    vg_timer_stop(a->timer);
  }
  char *owned[] = { a->policy,  a->version, a->type,         a->target,   a->scope,
                    a->subject, a->key,     a->why,          a->command,  a->stdin_data,
                    a->method,  a->url,     a->body,         a->error,    a->would,
                    a->out,     a->err,     a->resp_headers, a->resp_body };
  for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) {
    free(owned[i]);
  }
  vfree(a->argv, a->argc);
  vfree(a->env, a->nenv);
  vfree(a->headers, a->nheaders);
  free(a);
}

static void set_error(vg_action_t *a, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_error(vg_action_t *a, const char *name, const char *fmt, ...)
{
  char detail[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  size_t len = strlen(name) + strlen(detail) + 3;
  free(a->error);
  a->error = malloc(len);
  if (a->error != NULL) {
    snprintf(a->error, len, "%s: %s", name, detail);
  }
}

/* The end: count, log, answer the caller (if still there), free. */
static void answer(vg_action_t *a, const char *state)
{
  vg_executor_t *ex = a->ex;
  a->state = state;
  uint64_t *totals[VG_ACTION_STATES] = { &ex->st.observed, &ex->st.dry_run, &ex->st.refused,
                                         &ex->st.done,     &ex->st.failed,  &ex->st.duplicate,
                                         &ex->st.denied,   &ex->st.expired };
  size_t si = 4; /* failed, for anything unexpected */
  for (size_t i = 0; i < VG_ACTION_STATES; i++) {
    si = strcmp(state, vg_action_state_names[i]) == 0 ? i : si;
  }
  (*totals[si])++;
  type_count_t *tc = NULL;
  for (size_t i = 0; i < ex->ntypes && tc == NULL; i++) {
    tc = strcmp(ex->types[i].name, a->type) == 0 ? &ex->types[i] : NULL;
  }
  if (tc == NULL && ex->ntypes < MAX_TYPES) {
    tc = &ex->types[ex->ntypes++];
    snprintf(tc->name, sizeof tc->name, "%s",
             ex->ntypes == MAX_TYPES || strlen(a->type) >= sizeof tc->name ? "other" : a->type);
  } else if (tc == NULL) {
    tc = &ex->types[MAX_TYPES - 1]; /* "other" */
  }
  tc->counts[si]++;
  char id[24];
  snprintf(id, sizeof id, "%lld", (long long)a->id);
  vg_log(strcmp(state, "failed") == 0 || strcmp(state, "refused") == 0 ? VG_LOG_WARN : VG_LOG_INFO,
         "action", "policy", a->policy, "type", a->type, "target", a->target, "mode",
         vg_mode_name(a->mode), "state", state, "id", id, "error", a->error != NULL ? a->error : "",
         NULL);
  if (a->done != NULL) {
    vg_action_result_t r = {
      .state = state,
      .id = a->dup_id > 0 ? a->dup_id : a->id,
      .key = a->key,
      .mode = vg_mode_name(a->mode),
      .error = a->error,
      .would = a->would,
      .attempts = a->attempts,
      .duration = a->t0 > 0 ? (double)(uv_hrtime() - a->t0) / 1e9 : 0,
      .ran_process = a->ran_process,
      .code = a->code,
      .signal = a->signal,
      .timed_out = a->timed_out,
      .out = a->out,
      .err = a->err,
      .out_len = a->out_len,
      .err_len = a->err_len,
      .ran_http = a->ran_http,
      .status = a->status,
      .resp_headers = a->resp_headers,
      .resp_body = a->resp_body,
      .resp_headers_len = a->resp_headers_len,
      .resp_body_len = a->resp_body_len,
    };
    a->done(a->ud, &r);
  }
  action_free(a);
}

static bool kill_switch_on(vg_executor_t *ex)
{
  struct stat sb;
  return ex->killed || (ex->kill_switch_file != NULL && stat(ex->kill_switch_file, &sb) == 0);
}

bool vg_executor_killed(vg_executor_t *ex)
{
  return kill_switch_on(ex);
}

static vg_ledger_action_t ledger_action(const vg_action_t *a, char *who, size_t wholen)
{
  snprintf(who, wholen, "policy:%s", a->policy);
  return (vg_ledger_action_t){
    .key = a->key,
    .policy = a->policy,
    .policy_version = a->version,
    .subject = a->subject,
    .incident_id = a->incident_id,
    .type = a->type,
    .target = a->target,
    .scope = a->scope,
    .mode = vg_mode_name(a->mode),
    .why = a->why,
    .command = a->command,
    .who = who,
  };
}

/* ---- guard state to persist with the next write ---- */

typedef struct {
  vg_ledger_entry_t *v;
  size_t n, cap;
  bool oom;
} entries_t;

static void entry_add(void *ud, const char *name, double value, int64_t at)
{
  entries_t *e = ud;
  if (e->n == e->cap) {
    size_t cap = e->cap != 0 ? e->cap * 2 : 8;
    vg_ledger_entry_t *v = realloc(e->v, cap * sizeof *v);
    if (v == NULL) {
      e->oom = true;
      return;
    }
    e->v = v;
    e->cap = cap;
  }
  e->v[e->n++] = (vg_ledger_entry_t){ .name = name, .value = value, .at = at };
}

/* ---- recording a decision where nothing runs ---- */

static void recorded(void *ud, const vg_ledger_result_t *r)
{
  vg_action_t *a = ud;
  a->id = r->status == 0 ? r->id : 0;
  if (r->status != 0) {
    vg_log(VG_LOG_ERROR, "action not recorded", "policy", a->policy, "error", r->err, NULL);
  }
  answer(a, a->state);
}

/* Records `state` (observed | dry-run | refused) when there is a store, then answers. */
static void record(vg_action_t *a, const char *state, const char *detail)
{
  a->state = state;
  if (a->ex->store == NULL) {
    answer(a, state);
    return;
  }
  char who[160];
  vg_ledger_action_t la = ledger_action(a, who, sizeof who);
  a->step = STEP_RECORD;
  if (vg_ledger_record(a->ex->store, &la, state, detail, recorded, a) != 0) {
    answer(a, state);
  }
}

/* ---- the outcome ---- */

static void finished(void *ud, const vg_ledger_result_t *r)
{
  vg_action_t *a = ud;
  if (r->status != 0) {
    /* the action ran but its outcome is not stored: the row stays claimed and becomes unknown
       at the next start, which is the truth */
    vg_log(VG_LOG_ERROR, "action outcome not recorded", "policy", a->policy, "target", a->target,
           "error", r->err, NULL);
  }
  answer(a, a->error == NULL ? "done" : "failed");
}

static void read_start(vg_action_t *a)
{
  a->ex->reads_running++;
  a->ex->st.running++;
  a->t0 = uv_hrtime();
  attempt(a);
}

/* A read-only run ended: the one that waited longest takes its slot. */
static void read_over(vg_executor_t *ex)
{
  ex->reads_running--;
  vg_action_t *oldest = NULL;
  for (vg_action_t *q = ex->acts; q != NULL && !ex->freeing; q = q->next) {
    oldest = q->step == STEP_QUEUED ? q : oldest; /* the list is newest first */
  }
  if (oldest != NULL) {
    read_start(oldest);
  }
}

static void finish(vg_action_t *a)
{
  vg_executor_t *ex = a->ex;
  bool ok = a->error == NULL;
  if (a->taken) {
    vg_guard_finish(ex->guard, a->type, a->target, ok, now_ms(ex));
    a->taken = false;
  }
  ex->st.running--;
  const char *output = a->ran_process ? (a->out_len > 0 ? a->out : a->err) : a->resp_body;
  vg_ledger_outcome_t o = {
    .ok = ok,
    .attempts = a->attempts,
    .exit_code = a->ran_process && a->signal == 0 ? a->code : -1,
    .signal = a->signal,
    .http_status = a->ran_http ? (int)a->status : 0,
    .output = output,
    .error = a->error,
    .duration_ms = (int64_t)((uv_hrtime() - a->t0) / 1000000u),
  };
  if (a->read_only) {
    answer(a, ok ? "done" : "failed");
    read_over(ex);
    return;
  }
  entries_t e = { 0 };
  vg_guard_each_dirty(ex->guard, entry_add, &e);
  a->step = STEP_FINISH;
  int rc = ex->store != NULL ? vg_ledger_finish(ex->store, a->id, &o, e.v, e.n, finished, a) : -1;
  free(e.v);
  if (rc != 0) {
    vg_ledger_result_t r = { .status = rc, .err = "the store refused the outcome" };
    finished(a, &r);
  }
}

/* ---- attempts ---- */

/* A bare tool name ("kubectl") is the allowlisted path with that base name; anything else is
 * passed as it is (the runner refuses what is not allowlisted). */
static const char *resolve_tool(vg_executor_t *ex, const char *name)
{
  const vg_config_t *cfg = ex->rt->config;
  if (strchr(name, '/') != NULL || cfg == NULL) {
    return name;
  }
  for (size_t i = 0; i < cfg->nexec_allow; i++) {
    const char *base = strrchr(cfg->exec_allow[i], '/');
    if (base != NULL && strcmp(base + 1, name) == 0) {
      return cfg->exec_allow[i];
    }
  }
  return name;
}

static uint64_t backoff_ms(vg_executor_t *ex, int attempt_no)
{
  double d = (double)ex->o.backoff_ms * pow(2.0, attempt_no - 1);
  if (d > (double)ex->o.backoff_max_ms) {
    d = (double)ex->o.backoff_max_ms;
  }
  /* full jitter over the upper half: spreads retries without ever retrying at once */
  return (uint64_t)(d / 2 + (d / 2) * ((double)rand() / RAND_MAX));
}

static void on_backoff(vg_timer_t *t, void *ud)
{
  vg_action_t *a = ud;
  vg_timer_stop(t);
  a->timer = NULL;
  attempt(a);
}

/* An attempt ended; `retryable` when a failure may be tried again. */
static void attempt_over(vg_action_t *a, bool retryable)
{
  if (a->error != NULL && retryable && a->attempts <= a->retries && !a->ex->freeing) {
    a->step = STEP_BACKOFF;
    a->timer = vg_timer_start(a->ex->rt, backoff_ms(a->ex, a->attempts), 0, on_backoff, a);
    if (a->timer != NULL) {
      vg_log(VG_LOG_INFO, "action retry", "policy", a->policy, "target", a->target, "error",
             a->error, NULL);
      return;
    }
  }
  finish(a);
}

static void exec_done(void *ud, const vg_exec_result_t *r)
{
  vg_action_t *a = ud;
  a->run = NULL;
  a->ran_process = true;
  free(a->out);
  free(a->err);
  a->out = bdup(r->stdout_data != NULL ? r->stdout_data : "", r->stdout_len);
  a->err = bdup(r->stderr_data != NULL ? r->stderr_data : "", r->stderr_len);
  a->out_len = a->out != NULL ? r->stdout_len : 0;
  a->err_len = a->err != NULL ? r->stderr_len : 0;
  a->code = r->code;
  a->signal = r->signal;
  a->timed_out = r->timed_out;
  free(a->error);
  a->error = NULL;
  bool retryable = false;
  if (r->error != NULL) {
    set_error(a, r->error, "%s", r->detail != NULL ? r->detail : "");
  } else if (r->timed_out) {
    set_error(a, "ETIMEDOUT", "%s ran past its timeout and was killed", a->argv[0]);
  } else if (r->killed != NULL) {
    set_error(a, "EKILLED", "%s was stopped: %s", a->argv[0], r->killed);
  } else if (r->signal != 0) {
    set_error(a, "ESIGNAL", "%s was killed by signal %d", a->argv[0], r->signal);
  } else if (r->code != 0) {
    /* the first line of stderr says more than the code */
    int len = 0;
    const char *e = a->err != NULL ? a->err : "";
    while (e[len] != '\0' && e[len] != '\n' && len < 200) {
      len++;
    }
    set_error(a, "EEXIT", "%s exited with %d%s%.*s", a->argv[0], r->code, len > 0 ? ": " : "", len,
              e);
    retryable = true;
  }
  attempt_over(a, retryable);
}

static void http_done(void *ud, const vg_httpc_resp_t *r)
{
  vg_action_t *a = ud;
  a->hreq = NULL;
  a->ran_http = true;
  free(a->error);
  a->error = NULL;
  free(a->resp_headers);
  free(a->resp_body);
  a->resp_headers = NULL;
  a->resp_body = NULL;
  a->resp_headers_len = a->resp_body_len = 0;
  a->status = r->status;
  bool retryable = false;
  if (r->error != NULL) {
    set_error(a, r->error, "%s", r->detail != NULL ? r->detail : "");
    retryable = strcmp(r->error, "ECONNREFUSED") == 0 || strcmp(r->error, "ENOTFOUND") == 0;
  } else {
    a->resp_headers = bdup(r->headers, r->headers_len);
    a->resp_body = bdup(r->body, r->body_len);
    a->resp_headers_len = a->resp_headers != NULL ? r->headers_len : 0;
    a->resp_body_len = a->resp_body != NULL ? r->body_len : 0;
    if (r->status < 200 || r->status > 299) {
      /* not the URL: a webhook's URL is its secret */
      set_error(a, "EHTTP", "%s answered %ld", a->target, r->status);
      retryable = r->status >= 500 || r->status == 429;
    }
  }
  attempt_over(a, retryable);
}

static void attempt(vg_action_t *a)
{
  vg_executor_t *ex = a->ex;
  a->attempts++;
  a->step = STEP_RUN;
  free(a->error);
  a->error = NULL;
  /* checked right before each attempt, not only at decision time */
  if (!a->notify && !a->read_only && kill_switch_on(ex)) {
    set_error(a, "EKILLSWITCH", "the kill switch is on: nothing runs");
    finish(a);
    return;
  }
  char err[256] = "";
  if (a->argv != NULL) {
    if (ex->exec == NULL) {
      set_error(a, "ENOEXEC", "no process executor is configured");
      finish(a);
      return;
    }
    /* the idempotency key reaches the tool, so it can refuse a duplicate on its side */
    size_t nenv = a->nenv + 1;
    const char **env = calloc(nenv, sizeof *env);
    size_t klen = strlen(a->key) + sizeof "VIGIL_IDEMPOTENCY_KEY=";
    char *kenv = malloc(klen);
    if (env == NULL || kenv == NULL) {
      free(env);
      free(kenv);
      set_error(a, "ENOMEM", "out of memory");
      finish(a);
      return;
    }
    for (size_t i = 0; i < a->nenv; i++) {
      env[i] = a->env[i];
    }
    snprintf(kenv, klen, "VIGIL_IDEMPOTENCY_KEY=%s", a->key);
    env[a->nenv] = kenv;
    const char *tool = a->argv[0];
    a->argv[0] = (char *)resolve_tool(ex, tool);
    vg_exec_req_t req = {
      .argv = (const char *const *)a->argv,
      .argc = a->argc,
      .env = env,
      .nenv = nenv,
      .stdin_data = a->stdin_data,
      .stdin_len = a->stdin_len,
      .timeout_ms = a->timeout_ms,
      .max_output = a->max_output,
    };
    a->run = vg_exec_run(ex->exec, &req, exec_done, a, err, sizeof err);
    a->argv[0] = (char *)tool; /* ours to free */
    free(env);
    free(kenv);
    if (a->run == NULL) {
      set_error(a, "ESPAWN", "%s", err);
      finish(a);
    }
    return;
  }
  vg_httpc_t *hc = vg_runtime_httpc(ex->rt);
  size_t nh = a->nheaders + 1;
  const char **hs = calloc(nh, sizeof *hs);
  size_t klen = strlen(a->key) + sizeof "Idempotency-Key: ";
  char *kh = malloc(klen);
  if (hc == NULL || hs == NULL || kh == NULL) {
    free(hs);
    free(kh);
    set_error(a, hc == NULL ? "ENOHTTP" : "ENOMEM", "%s",
              hc == NULL ? "the HTTP client is unavailable" : "out of memory");
    finish(a);
    return;
  }
  for (size_t i = 0; i < a->nheaders; i++) {
    hs[i] = a->headers[i];
  }
  snprintf(kh, klen, "Idempotency-Key: %s", a->key);
  hs[a->nheaders] = kh;
  vg_httpc_opts_t ho = {
    .method = a->method,
    .url = a->url,
    .headers = hs,
    .nheaders = nh,
    .body = a->body,
    .body_len = a->body_len,
    .timeout_ms = a->timeout_ms,
    .max_bytes = 1 << 20,
    .max_redirects = 0, /* an action goes where it was told, nowhere else */
  };
  a->hreq = vg_httpc_start(hc, &ho, http_done, a, err, sizeof err);
  free(hs);
  free(kh);
  if (a->hreq == NULL) {
    set_error(a, "EINVAL", "%s", err);
    finish(a);
  }
}

/* ---- alert storms ---- */

static uint64_t fnv(const char *p, size_t n)
{
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
  }
  return h;
}

/* Rolls a slot's windows forward to `now`. */
static void storm_roll(vg_executor_t *ex, storm_slot_t *sl, int64_t now)
{
  int64_t w = (int64_t)ex->o.storm_window_ms;
  if (now - sl->window_start >= 2 * w) {
    sl->prev = sl->count = 0;
    sl->window_start = now - (now % w);
  } else if (now - sl->window_start >= w) {
    sl->prev = sl->count;
    sl->count = 0;
    sl->window_start += w;
  }
}

static storm_slot_t *storm_find(
    vg_executor_t *ex, const char *scope, size_t len, bool add, int64_t now)
{
  uint64_t h = fnv(scope, len);
  storm_slot_t *reuse = NULL;
  for (int i = 0; i < STORM_PROBE; i++) {
    storm_slot_t *sl = &ex->storm[(h + (uint64_t)i) % STORM_SLOTS];
    if (sl->scope != NULL && strlen(sl->scope) == len && memcmp(sl->scope, scope, len) == 0) {
      storm_roll(ex, sl, now);
      return sl;
    }
    if (reuse == NULL &&
        (sl->scope == NULL || now - sl->window_start >= 2 * (int64_t)ex->o.storm_window_ms)) {
      reuse = sl; /* empty, or quiet for two windows: its count is 0 anyway */
    }
  }
  if (!add || reuse == NULL) {
    return NULL;
  }
  char *copy = malloc(len + 1);
  if (copy == NULL) {
    return NULL;
  }
  memcpy(copy, scope, len);
  copy[len] = '\0';
  free(reuse->scope);
  *reuse =
      (storm_slot_t){ .scope = copy, .window_start = now - (now % (int64_t)ex->o.storm_window_ms) };
  return reuse;
}

void vg_executor_note_alert(vg_executor_t *ex, const vg_label_t *labels, size_t nlabels)
{
  if (ex->storm == NULL) {
    return;
  }
  size_t ll = strlen(ex->storm_label);
  for (size_t i = 0; i < nlabels; i++) {
    if (labels[i].name_len == ll && memcmp(labels[i].name, ex->storm_label, ll) == 0 &&
        labels[i].value_len > 0 && labels[i].value_len <= 256) {
      storm_slot_t *sl = storm_find(ex, labels[i].value, labels[i].value_len, true, now_ms(ex));
      if (sl != NULL && sl->count < UINT32_MAX) {
        sl->count++;
      }
      return;
    }
  }
}

/* True (with a sentence in why) when the action's scope is in an alert storm. */
static bool storming(vg_executor_t *ex, const char *scope, char *why, size_t whylen)
{
  if (ex->storm == NULL || scope == NULL || scope[0] == '\0') {
    return false;
  }
  int64_t now = now_ms(ex);
  storm_slot_t *sl = storm_find(ex, scope, strlen(scope), false, now);
  if (sl == NULL) {
    return false;
  }
  double w = (double)ex->o.storm_window_ms;
  double into = (double)(now - sl->window_start) / w;
  double estimate = sl->prev * (1.0 - (into < 1 ? into : 1)) + sl->count;
  if (estimate <= ex->o.storm_alerts) {
    return false;
  }
  snprintf(why, whylen,
           "alert storm in %s=%s: about %.0f alerts in the last %.0f s (limit %u); acting on"
           " that much at once is likelier to hurt than help: a human should look",
           ex->storm_label, scope, estimate, w / 1000, ex->o.storm_alerts);
  return true;
}

/* ---- claiming ---- */

static void claimed(void *ud, const vg_ledger_result_t *r)
{
  vg_action_t *a = ud;
  vg_executor_t *ex = a->ex;
  if (r->status != 0 || r->duplicate) {
    if (a->taken) {
      vg_guard_refund(ex->guard, a->type, a->target, a->scope, now_ms(ex));
      a->taken = false;
    }
    ex->st.running--;
    if (r->status != 0) {
      /* fail closed: without a committed claim nothing runs */
      set_error(a, "ELEDGER", "the claim was not committed: %s", r->err != NULL ? r->err : "");
      answer(a, "failed");
      return;
    }
    a->dup_id = r->id;
    a->code = r->exit_code;
    a->signal = r->signal;
    a->status = r->http_status;
    a->out = sdup(r->output);
    a->out_len = a->out != NULL ? strlen(a->out) : 0;
    set_error(a, "EDUPLICATE", "key %s was claimed by action %lld (%s)", a->key, (long long)r->id,
              r->state);
    answer(a, "duplicate");
    return;
  }
  a->id = r->id;
  a->t0 = uv_hrtime();
  if (ex->freeing) {
    /* shutting down: it never starts, but the claim stays (read as unknown at the next
       start, the safe reading) */
    ex->st.running--;
    answer(a, "failed");
    return;
  }
  attempt(a);
}

/* Takes the guard rails and claims the key; `after_approval` when an operator said yes. */
/* The approved row is refused in its turn (which frees its key for a later request). */
static void refused_after_approval(void *ud, const vg_ledger_result_t *r)
{
  vg_action_t *a = ud;
  (void)r;
  answer(a, "refused");
}

/* Refuses the action: a new "refused" row, or, for an action an operator approved, that row
 * moves to "refused" (the approval was for a state of the world that is gone). */
static void refuse(vg_action_t *a)
{
  if (a->approve && a->id > 0 && a->ex->store != NULL) {
    a->step = STEP_FINISH;
    if (vg_ledger_decide(a->ex->store, a->id, "refused", "vigil", a->error, refused_after_approval,
                         a) == 0) {
      return;
    }
  }
  record(a, "refused", a->error);
}

/* Takes the guard rails and claims the key (again after an operator approved it). */
static void take_and_claim(vg_action_t *a)
{
  vg_executor_t *ex = a->ex;
  char why[256] = "";
  if (!a->notify && kill_switch_on(ex)) {
    set_error(a, "EKILLSWITCH", "the kill switch is on: nothing runs");
    refuse(a);
    return;
  }
  if (!a->notify && storming(ex, a->scope, why, sizeof why)) {
    ex->st.storm_refused++;
    set_error(a, "ESTORM", "%s", why);
    refuse(a);
    return;
  }
  if (!a->notify) {
    vg_guard_verdict_t v =
        vg_guard_take(ex->guard, a->type, a->target, a->scope, now_ms(ex), why, sizeof why);
    if (v != VG_GUARD_OK) {
      set_error(a, vg_guard_verdict_name(v), "%s", why);
      refuse(a);
      return;
    }
    a->taken = true;
  }
  ex->st.running++;
  entries_t e = { 0 };
  vg_guard_each_dirty(ex->guard, entry_add, &e);
  char who[160];
  vg_ledger_action_t la = ledger_action(a, who, sizeof who);
  a->step = STEP_CLAIM;
  int rc = vg_ledger_claim(ex->store, &la, "claimed", 0, e.v, e.n, claimed, a);
  free(e.v);
  if (rc != 0) {
    vg_ledger_result_t r = { .status = rc, .err = strerror(-rc) };
    claimed(a, &r);
  }
}

/* ---- approvals ---- */

static void approval_expired(void *ud, const vg_ledger_result_t *r)
{
  vg_action_t *a = ud;
  (void)r;
  set_error(a, "EEXPIRED", "nobody approved it within %llu s",
            (unsigned long long)(a->approval_timeout_ms / 1000));
  answer(a, "expired");
}

static void on_approval_timeout(vg_timer_t *t, void *ud)
{
  vg_action_t *a = ud;
  vg_timer_stop(t);
  a->timer = NULL;
  a->ex->st.awaiting_approval--;
  a->step = STEP_FINISH;
  if (vg_ledger_decide(a->ex->store, a->id, "expired", "vigil", "approval timed out",
                       approval_expired, a) != 0) {
    approval_expired(a, NULL);
  }
}

static void approval_requested(void *ud, const vg_ledger_result_t *r)
{
  vg_action_t *a = ud;
  if (r->status != 0) {
    set_error(a, "ELEDGER", "the approval request was not committed: %s",
              r->err != NULL ? r->err : "");
    answer(a, "failed");
    return;
  }
  if (r->duplicate) {
    if (strcmp(r->state, "approved") == 0) {
      a->id = r->id;
      take_and_claim(a); /* approved while we were away: claim it now */
      return;
    }
    a->dup_id = r->id;
    set_error(a, "EDUPLICATE", "key %s was claimed by action %lld (%s)", a->key, (long long)r->id,
              r->state);
    answer(a, "duplicate");
    return;
  }
  a->id = r->id;
  a->step = STEP_APPROVAL;
  a->ex->st.awaiting_approval++;
  a->timer = vg_timer_start(a->ex->rt, a->approval_timeout_ms, 0, on_approval_timeout, a);
  vg_log(VG_LOG_WARN, "action awaits approval", "policy", a->policy, "type", a->type, "target",
         a->target, NULL);
  if (a->timer == NULL) {
    on_approval_timeout(NULL, a);
  }
}

static void request_approval(vg_action_t *a)
{
  char who[160];
  vg_ledger_action_t la = ledger_action(a, who, sizeof who);
  int64_t expires = now_ms(a->ex) + (int64_t)a->approval_timeout_ms;
  a->step = STEP_CLAIM;
  if (vg_ledger_claim(a->ex->store, &la, "awaiting_approval", expires, NULL, 0, approval_requested,
                      a) != 0) {
    vg_ledger_result_t r = { .status = -EIO, .err = "the store refused the request" };
    approval_requested(a, &r);
  }
}

/* ---- reads ---- */

bool vg_executor_is_read_only(const char *const *argv, size_t argc)
{
  if (argc < 2) {
    return false;
  }
  const char *base = strrchr(argv[0], '/');
  base = base != NULL ? base + 1 : argv[0];
  if (strcmp(base, "kubectl") != 0) {
    return false;
  }
  static const char *const reads[] = { "get",  "describe", "version",       "top",
                                       "logs", "explain",  "api-resources", NULL };
  size_t i = 1;
  while (i < argc && argv[i][0] == '-') {
    i++; /* global flags before the subcommand: only the -n/--namespace=x forms take no value */
    if (strcmp(argv[i - 1], "-n") == 0 || strcmp(argv[i - 1], "--namespace") == 0) {
      i++;
    }
  }
  if (i >= argc) {
    return false;
  }
  for (const char *const *r = reads; *r != NULL; r++) {
    if (strcmp(argv[i], *r) == 0) {
      return true;
    }
  }
  if (strcmp(argv[i], "rollout") == 0 && i + 1 < argc) {
    return strcmp(argv[i + 1], "status") == 0 || strcmp(argv[i + 1], "history") == 0;
  }
  if (strcmp(argv[i], "auth") == 0 && i + 1 < argc) {
    return strcmp(argv[i + 1], "can-i") == 0;
  }
  return false;
}

/* ---- submitting ---- */

static bool copy_request(vg_action_t *a, const vg_action_origin_t *o, const vg_action_req_t *r)
{
  bool ok = true;
  const char *src[] = { o->policy, o->version, r->type, r->target,
                        r->scope,  r->subject, r->why,  r->command };
  char **dst[] = { &a->policy, &a->version, &a->type, &a->target,
                   &a->scope,  &a->subject, &a->why,  &a->command };
  for (size_t i = 0; i < sizeof src / sizeof src[0]; i++) {
    *dst[i] = sdup(src[i]);
    ok = ok && (src[i] == NULL || *dst[i] != NULL);
  }
  a->incident_id = r->incident_id;
  a->argv = vdup(r->argv, r->argc, &ok);
  a->argc = r->argc;
  a->env = vdup(r->env, r->nenv, &ok);
  a->nenv = r->nenv;
  a->headers = vdup(r->headers, r->nheaders, &ok);
  a->nheaders = r->nheaders;
  if (r->stdin_data != NULL) {
    ok = ok && (a->stdin_data = bdup(r->stdin_data, r->stdin_len)) != NULL;
    a->stdin_len = r->stdin_len;
  }
  if (r->url != NULL) {
    ok = ok && (a->url = strdup(r->url)) != NULL &&
         (a->method = strdup(r->method != NULL ? r->method : "POST")) != NULL;
  }
  if (r->body != NULL) {
    ok = ok && (a->body = bdup(r->body, r->body_len)) != NULL;
    a->body_len = r->body_len;
  }
  return ok;
}

vg_action_t *vg_executor_submit(vg_executor_t *ex,
                                const vg_action_origin_t *origin,
                                const vg_action_req_t *req,
                                vg_action_done_fn done,
                                void *ud,
                                char *err,
                                size_t errlen)
{
  if (req->type == NULL || req->type[0] == '\0' || req->target == NULL || req->target[0] == '\0') {
    /* never "all": an empty target is an error (the Diskerase lesson) */
    snprintf(err, errlen, "an action needs a type and a non-empty target");
    return NULL;
  }
  if ((req->argc > 0) == (req->url != NULL)) {
    snprintf(err, errlen, "an action runs either a process (argv) or an HTTP request (url)");
    return NULL;
  }
  if (req->argc > 0 && (req->argv == NULL || req->argv[0] == NULL)) {
    snprintf(err, errlen, "argv is empty");
    return NULL;
  }
  if (req->approve && req->notify) {
    snprintf(err, errlen, "a notification cannot wait for approval");
    return NULL;
  }
  if (ex->freeing) {
    snprintf(err, errlen, "the executor is shutting down");
    return NULL;
  }
  vg_action_t *a = calloc(1, sizeof *a);
  if (a == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  a->ex = ex;
  a->next = ex->acts;
  if (ex->acts != NULL) {
    ex->acts->prev = a;
  }
  ex->acts = a;
  a->done = done;
  a->ud = ud;
  a->code = -1;
  if (!copy_request(a, origin, req)) {
    action_free(a);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (a->policy == NULL && (a->policy = strdup("repl")) == NULL) {
    action_free(a);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  a->command = a->command != NULL ? a->command : strdup("null");
  if (req->key != NULL) {
    a->key = strdup(req->key);
  } else {
    size_t len = strlen(a->policy) + strlen(a->type) + strlen(a->target) +
                 (a->subject != NULL ? strlen(a->subject) : 1) + 4;
    if ((a->key = malloc(len)) != NULL) {
      snprintf(a->key, len, "%s/%s/%s/%s", a->policy, a->subject != NULL ? a->subject : "-",
               a->type, a->target);
    }
  }
  if (a->key == NULL || a->command == NULL || strlen(a->key) > KEY_MAX) {
    snprintf(
        err, errlen,
        a->key != NULL && a->command != NULL ? "the key is longer than %d bytes" : "out of memory",
        KEY_MAX);
    action_free(a);
    return NULL;
  }
  a->notify = req->notify;
  a->approve = req->approve;
  a->read_only = req->read_only;
  a->approval_timeout_ms =
      req->approval_timeout_ms > 0 ? req->approval_timeout_ms : ex->o.approval_timeout_ms;
  a->retries = req->retries < 0 ? 3 : req->retries;
  a->timeout_ms = req->timeout_ms;
  a->max_output = req->max_output;
  /* the least of the three: a policy or an action can only make things safer */
  vg_mode_t mode = ex->o.mode;
  if (origin->mode >= 0 && origin->mode < (int)mode) {
    mode = (vg_mode_t)origin->mode;
  }
  if (req->mode >= 0 && req->mode < (int)mode) {
    mode = (vg_mode_t)req->mode;
  }
  a->mode = mode;
  ex->st.submitted++;

  if (a->read_only) {
    if (a->argv == NULL || !vg_executor_is_read_only((const char *const *)a->argv, a->argc)) {
      set_error(a, "EDENIED",
                "only commands known to read (kubectl get, describe, rollout"
                " status, ...) may run as read_only");
      answer(a, "refused");
    } else {
      /* a query: nothing to claim or guard, nothing to record */
      a->retries = 0;
      a->step = STEP_QUEUED;
      if (ex->reads_running < MAX_READS) {
        read_start(a);
      }
    }
  } else if (!a->notify && kill_switch_on(ex) && mode == VG_MODE_ENFORCE) {
    set_error(a, "EKILLSWITCH", "the kill switch is on: nothing runs");
    record(a, "refused", a->error);
  } else if (mode == VG_MODE_OBSERVE) {
    record(a, "observed", a->why);
  } else if (mode == VG_MODE_DRY_RUN) {
    char why[256] = "";
    vg_guard_verdict_t v = a->notify ? VG_GUARD_OK
                                     : vg_guard_check(ex->guard, a->type, a->target, a->scope,
                                                      now_ms(ex), why, sizeof why);
    char storm[256];
    if (v == VG_GUARD_OK && !a->notify && kill_switch_on(ex)) {
      snprintf(why, sizeof why, "EKILLSWITCH: the kill switch is on");
    } else if (v == VG_GUARD_OK && !a->notify && storming(ex, a->scope, storm, sizeof storm)) {
      snprintf(why, sizeof why, "ESTORM: %.240s", storm);
    } else if (v != VG_GUARD_OK) {
      char tmp[sizeof why];
      snprintf(tmp, sizeof tmp, "%s", why);
      snprintf(why, sizeof why, "%s: %.200s", vg_guard_verdict_name(v), tmp);
    }
    a->would = strdup(why[0] != '\0' ? why : "allowed");
    record(a, "dry-run", a->would);
  } else if (ex->store == NULL) {
    set_error(a, "ENOLEDGER",
              "enforce needs the store to claim the action first; run it in"
              " the daemon (or attach the REPL to it)");
    answer(a, "refused");
  } else if (a->approve) {
    char why[256] = "";
    vg_guard_verdict_t v =
        vg_guard_check(ex->guard, a->type, a->target, a->scope, now_ms(ex), why, sizeof why);
    if (v != VG_GUARD_OK) {
      set_error(a, vg_guard_verdict_name(v), "%s", why);
      record(a, "refused", a->error);
    } else {
      request_approval(a);
    }
  } else {
    take_and_claim(a);
  }
  return a;
}

void vg_action_detach(vg_action_t *a)
{
  if (a != NULL) {
    a->done = NULL;
  }
}

/* ---- operators ---- */

typedef struct {
  vg_executor_t *ex;
  vg_executor_answer_fn done;
  void *ud;
  char decision[16];
} decide_t;

static vg_action_t *find_waiting(vg_executor_t *ex, int64_t id)
{
  for (vg_action_t *a = ex->acts; a != NULL; a = a->next) {
    if (a->id == id && a->step == STEP_APPROVAL) {
      return a;
    }
  }
  return NULL;
}

static void decided(void *ud, const vg_ledger_result_t *r)
{
  decide_t *d = ud;
  vg_executor_t *ex = d->ex;
  if (r->status == 0) {
    vg_action_t *a = find_waiting(ex, r->id);
    if (a != NULL && (strcmp(d->decision, "approved") == 0 || strcmp(d->decision, "denied") == 0)) {
      vg_timer_stop(a->timer);
      a->timer = NULL;
      ex->st.awaiting_approval--;
      if (strcmp(d->decision, "approved") == 0) {
        take_and_claim(a); /* kill switch and guard rails are checked again, now */
      } else {
        set_error(a, "EDENIED", "an operator denied it");
        answer(a, "denied");
      }
    }
    char msg[96];
    snprintf(msg, sizeof msg, "action %lld is %s", (long long)r->id, r->state);
    d->done(d->ud, 0, msg);
  } else {
    d->done(d->ud, r->status, r->err != NULL ? r->err : "the store failed");
  }
  free(d);
}

void vg_executor_decide(vg_executor_t *ex,
                        int64_t id,
                        const char *decision,
                        const char *who,
                        const char *comment,
                        vg_executor_answer_fn done,
                        void *ud)
{
  static const char *const ok[] = { "approved", "denied", "done", "failed" };
  bool known = false;
  for (size_t i = 0; decision != NULL && i < 4; i++) {
    known = known || strcmp(decision, ok[i]) == 0;
  }
  if (!known) {
    done(ud, -EINVAL, "the decision must be approved, denied, done or failed");
    return;
  }
  if (ex->store == NULL) {
    done(ud, -ENOTSUP, "there is no store: nothing awaits a decision");
    return;
  }
  decide_t *d = calloc(1, sizeof *d);
  if (d == NULL) {
    done(ud, -ENOMEM, "out of memory");
    return;
  }
  d->ex = ex;
  d->done = done;
  d->ud = ud;
  snprintf(d->decision, sizeof d->decision, "%s", decision);
  int rc = vg_ledger_decide(ex->store, id, decision, who, comment, decided, d);
  if (rc != 0) {
    free(d);
    done(ud, rc, "the store refused the decision");
  }
}

typedef struct {
  vg_executor_answer_fn done;
  void *ud;
  bool on;
} switch_t;

static void switched(void *ud, const vg_ledger_result_t *r)
{
  switch_t *s = ud;
  if (s->done != NULL) {
    s->done(s->ud, r->status,
            r->status == 0 ? (s->on ? "kill switch on" : "kill switch off")
                           : "the switch is set in memory but could not be stored");
  }
  free(s);
}

void vg_executor_kill_switch(vg_executor_t *ex,
                             bool on,
                             const char *who,
                             const char *comment,
                             vg_executor_answer_fn done,
                             void *ud)
{
  ex->killed = on; /* at once, whatever the store does */
  vg_log(VG_LOG_WARN, on ? "kill switch on: no action will run" : "kill switch off", "who",
         who != NULL ? who : "operator", NULL);
  switch_t *s = ex->store != NULL ? calloc(1, sizeof *s) : NULL;
  if (s == NULL) {
    if (done != NULL) {
      done(ud, 0, on ? "kill switch on (not persisted: no store)" : "kill switch off");
    }
    return;
  }
  s->done = done;
  s->ud = ud;
  s->on = on;
  if (vg_ledger_set(ex->store, "kill_switch", on ? "on" : "off", who, comment, switched, s) != 0) {
    vg_ledger_result_t r = { .status = -EIO };
    switched(s, &r);
  }
}

bool vg_executor_reset_breaker(vg_executor_t *ex, const char *target)
{
  return vg_guard_reset_breaker(ex->guard, target, now_ms(ex));
}

/* ---- local suppressions ---- */

/* Parses and keeps a suppression; refuses one that could match every alert. */
static bool add_suppression(
    vg_executor_t *ex, const char *text, int64_t until_ms, char *err, size_t errlen)
{
  vg_matchers_t *m = labelmatch_new();
  if (m == NULL) {
    snprintf(err, errlen, "out of memory");
    return false;
  }
  if (labelmatch_parse(m, text, strlen(text), err, errlen) != 0) {
    labelmatch_free(m);
    return false;
  }
  bool narrowing = false;
  for (size_t i = 0; i < labelmatch_count(m); i++) {
    vg_matcher_info_t info;
    narrowing =
        narrowing || (labelmatch_get(m, i, &info) && info.op == VG_MATCH_EQ && info.value_len > 0);
  }
  suppression_t *sp = narrowing ? calloc(1, sizeof *sp) : NULL;
  if (sp == NULL) {
    snprintf(err, errlen,
             narrowing ? "out of memory"
                       : "a suppression needs at least one name=\"value\" matcher:"
                         " it must never match every alert");
    labelmatch_free(m);
    return false;
  }
  sp->matchers = m;
  sp->until_ms = until_ms;
  sp->next = ex->suppressions;
  ex->suppressions = sp;
  return true;
}

bool vg_executor_suppressed(vg_executor_t *ex, const vg_label_t *labels, size_t nlabels)
{
  int64_t now = now_ms(ex);
  for (suppression_t **p = &ex->suppressions; *p != NULL;) {
    suppression_t *sp = *p;
    if (sp->until_ms <= now) {
      *p = sp->next;
      labelmatch_free(sp->matchers);
      free(sp);
      continue;
    }
    if (labelmatch_eval(sp->matchers, labels, nlabels)) {
      ex->st.suppressed++;
      return true;
    }
    p = &sp->next;
  }
  return false;
}

typedef struct {
  void (*done)(void *ud, int status, const char *msg, int64_t id);
  void *ud;
} id_answer_t;

static void id_answered(void *ud, const vg_ledger_result_t *r)
{
  id_answer_t *a = ud;
  a->done(a->ud, r->status, r->status == 0 ? "stored" : (r->err != NULL ? r->err : "failed"),
          r->status == 0 ? r->id : 0);
  free(a);
}

static id_answer_t *id_answer(void (*done)(void *, int, const char *, int64_t), void *ud)
{
  id_answer_t *a = calloc(1, sizeof *a);
  if (a == NULL) {
    done(ud, -ENOMEM, "out of memory", 0);
  } else {
    a->done = done;
    a->ud = ud;
  }
  return a;
}

void vg_executor_suppress(vg_executor_t *ex,
                          const char *matchers,
                          int64_t until_ms,
                          const char *reason,
                          const char *who,
                          void (*done)(void *ud, int status, const char *msg, int64_t id),
                          void *ud)
{
  char err[256];
  if (until_ms <= now_ms(ex)) {
    done(ud, -EINVAL, "the suppression would already have expired", 0);
    return;
  }
  if (!add_suppression(ex, matchers, until_ms, err, sizeof err)) {
    done(ud, -EINVAL, err, 0);
    return;
  }
  vg_log(VG_LOG_INFO, "suppression", "matchers", matchers, "who", who != NULL ? who : "vigil",
         "reason", reason != NULL ? reason : "", NULL);
  if (ex->store == NULL) {
    done(ud, 0, "in force (not stored: no store)", 0);
    return;
  }
  id_answer_t *a = id_answer(done, ud);
  if (a != NULL &&
      vg_ledger_suppress(ex->store, matchers, until_ms, reason, who, id_answered, a) != 0) {
    vg_ledger_result_t r = { .status = -EIO, .err = "in force, but the store refused it" };
    id_answered(a, &r);
  }
}

/* ---- healing runs ---- */

void vg_executor_heal_begin(vg_executor_t *ex,
                            const char *policy,
                            const char *name,
                            const char *subject,
                            int64_t incident_id,
                            vg_heal_done_fn done,
                            void *ud)
{
  if (ex->store == NULL) {
    done(ud, 0, "not stored: no store", 0);
    return;
  }
  id_answer_t *a = id_answer(done, ud);
  if (a != NULL &&
      vg_ledger_heal_begin(ex->store, policy, name, subject, incident_id, id_answered, a) != 0) {
    vg_ledger_result_t r = { .status = -EIO, .err = "the store refused the healing record" };
    id_answered(a, &r);
  }
}

void vg_executor_heal_end(vg_executor_t *ex,
                          int64_t id,
                          const char *status,
                          const char *steps_json,
                          const char *error,
                          vg_heal_done_fn done,
                          void *ud)
{
  if (ex->store == NULL || id <= 0) {
    done(ud, 0, "not stored: no store", id);
    return;
  }
  id_answer_t *a = id_answer(done, ud);
  if (a != NULL &&
      vg_ledger_heal_end(ex->store, id, status, steps_json, error, id_answered, a) != 0) {
    vg_ledger_result_t r = { .status = -EINVAL, .err = "the store refused the healing record" };
    id_answered(a, &r);
  }
}

/* ---- life cycle ---- */

vg_executor_t *vg_executor_new(vg_runtime_t *rt,
                               struct vg_store *store,
                               struct vg_exec *exec,
                               const vg_executor_opts_t *o)
{
  vg_executor_t *ex = calloc(1, sizeof *ex);
  if (ex == NULL) {
    return NULL;
  }
  ex->rt = rt;
  ex->store = store;
  ex->exec = exec;
  if (o != NULL) {
    ex->o = *o;
  } else {
    vg_executor_opts_default(&ex->o);
  }
  ex->o.kill_switch_file = NULL;
  ex->o.storm_label = NULL;
  if (o != NULL && o->storm_alerts > 0 && o->storm_window_ms > 0 && o->storm_label != NULL &&
      o->storm_label[0] != '\0') {
    ex->storm_label = strdup(o->storm_label);
    ex->storm = calloc(STORM_SLOTS, sizeof *ex->storm);
    if (ex->storm_label == NULL || ex->storm == NULL) {
      free(ex->storm_label);
      free(ex->storm);
      free(ex);
      return NULL;
    }
  }
  ex->guard = vg_guard_new(&ex->o.guard);
  ex->o.guard.types = NULL; /* copied by the guard */
  ex->o.guard.ntypes = 0;
  if (ex->guard == NULL || (o != NULL && o->kill_switch_file != NULL &&
                            (ex->kill_switch_file = strdup(o->kill_switch_file)) == NULL)) {
    vg_guard_free(ex->guard);
    free(ex->storm_label);
    free(ex->storm);
    free(ex);
    return NULL;
  }
  return ex;
}

typedef struct {
  vg_executor_t *ex;
  void (*done)(void *ud, int64_t unknown);
  void *ud;
} start_t;

static void on_loaded_entry(
    void *ud, vg_ledger_item_t kind, const char *name, const char *text, double value, int64_t at)
{
  start_t *s = ud;
  char err[200];
  (void)value;
  if (kind == VG_LEDGER_SETTING) {
    if (strcmp(name, "kill_switch") == 0 && text != NULL && strcmp(text, "on") == 0) {
      s->ex->killed = true;
      vg_log(VG_LOG_WARN, "kill switch is on (set before the restart): no action will run", NULL);
    }
  } else if (kind == VG_LEDGER_SUPPRESSION) {
    if (!add_suppression(s->ex, name, at, err, sizeof err)) {
      vg_log(VG_LOG_WARN, "stored suppression not restored", "matchers", name, "error", err, NULL);
    }
  } else {
    vg_guard_restore(s->ex->guard, name, value, at);
  }
}

static void on_recovered(void *ud, const vg_ledger_result_t *r)
{
  start_t *s = ud;
  int64_t unknown = r->status == 0 ? r->unknown : r->status;
  if (r->status == 0) {
    s->ex->st.unknown_at_start = (uint64_t)r->unknown;
    if (r->unknown > 0) {
      char n[24];
      snprintf(n, sizeof n, "%lld", (long long)r->unknown);
      vg_log(VG_LOG_WARN,
             "actions with an unknown outcome: they may have run before the restart; reconcile"
             " them (GET /api/v1/actions?state=unknown)",
             "count", n, NULL);
    }
  } else {
    vg_log(VG_LOG_ERROR, "action ledger recovery failed", "error", r->err, NULL);
  }
  if (s->done != NULL) {
    s->done(s->ud, unknown);
  }
  free(s);
}

static void on_loaded(void *ud, const vg_ledger_result_t *r)
{
  start_t *s = ud;
  if (r->status != 0) {
    vg_log(VG_LOG_ERROR, "guard state not loaded", "error", r->err, NULL);
  }
  if (vg_ledger_recover(s->ex->store, on_recovered, s) != 0) {
    vg_ledger_result_t f = { .status = -EIO, .err = "the store refused the recovery" };
    on_recovered(s, &f);
  }
}

void vg_executor_start(vg_executor_t *ex, void (*done)(void *ud, int64_t unknown), void *ud)
{
  start_t *s = ex->store != NULL ? calloc(1, sizeof *s) : NULL;
  if (s == NULL) {
    if (done != NULL) {
      done(ud, ex->store != NULL ? -ENOMEM : 0);
    }
    return;
  }
  s->ex = ex;
  s->done = done;
  s->ud = ud;
  if (vg_ledger_load(ex->store, on_loaded_entry, on_loaded, s) != 0) {
    vg_ledger_result_t r = { .status = -EIO, .err = "the store refused the read" };
    on_loaded(s, &r);
  }
}

void vg_executor_stop(vg_executor_t *ex)
{
  if (ex == NULL || ex->freeing) {
    return;
  }
  ex->freeing = true;
  for (vg_action_t *a = ex->acts, *next; a != NULL; a = next) {
    next = a->next;
    if (a->step == STEP_RUN || a->step == STEP_BACKOFF || a->step == STEP_APPROVAL) {
      /* no ledger write is pending for these: abandon them now, and say so to the caller (who
         must not hold on to the action) */
      if (a->run != NULL) {
        vg_exec_cancel(a->run);
        a->run = NULL;
      }
      if (a->hreq != NULL) {
        vg_httpc_cancel(a->hreq);
        a->hreq = NULL;
      }
      if (a->step == STEP_APPROVAL) {
        ex->st.awaiting_approval--;
      } else {
        ex->st.running--;
      }
      set_error(a, "ESHUTDOWN", "vigil is stopping: the action was abandoned%s",
                a->step == STEP_APPROVAL ? "" : " (its outcome reads unknown at the next start)");
      answer(a, "failed");
    } else if (a->step == STEP_QUEUED) {
      set_error(a, "ESHUTDOWN", "vigil is stopping: the read did not run");
      answer(a, "failed");
    }
  }
}

void vg_executor_free(vg_executor_t *ex)
{
  if (ex == NULL) {
    return;
  }
  vg_executor_stop(ex);
  while (ex->acts != NULL) {
    action_free(ex->acts); /* only possible when a ledger callback never came */
  }
  while (ex->suppressions != NULL) {
    suppression_t *sp = ex->suppressions;
    ex->suppressions = sp->next;
    labelmatch_free(sp->matchers);
    free(sp);
  }
  for (size_t i = 0; ex->storm != NULL && i < STORM_SLOTS; i++) {
    free(ex->storm[i].scope);
  }
  free(ex->storm);
  free(ex->storm_label);
  vg_guard_free(ex->guard);
  free(ex->kill_switch_file);
  free(ex);
}

void vg_executor_stats(vg_executor_t *ex, vg_executor_stats_t *out)
{
  *out = ex->st;
  out->killed = kill_switch_on(ex);
  out->suppressions = 0;
  for (suppression_t *sp = ex->suppressions; sp != NULL; sp = sp->next) {
    out->suppressions += sp->until_ms > now_ms(ex);
  }
  vg_guard_stats(ex->guard, now_ms(ex), &out->guard);
}

void vg_executor_each_type(vg_executor_t *ex,
                           void (*fn)(void *ud, const char *type, const uint64_t *counts),
                           void *ud)
{
  for (size_t i = 0; i < ex->ntypes; i++) {
    fn(ud, ex->types[i].name, ex->types[i].counts);
  }
}

struct vg_store *vg_executor_store(vg_executor_t *ex)
{
  return ex->store;
}
