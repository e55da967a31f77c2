/* Config tests (core/config.c): the defaults; a full valid file, as a returned table and as
 * globals; every error naming its key at file:line (unknown keys with suggestions, wrong
 * types, bad durations and sizes, literal tokens); secrets from env and from files, which never
 * print; notifiers of each kind and every shape refused; and files that fail to run. */
#include "core/config.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "test_support.h"

static char g_dir[64];

static int setup(void **state)
{
  (void)state;
  snprintf(g_dir, sizeof(g_dir), "/tmp/vg-config-XXXXXX");
  return mkdtemp(g_dir) == NULL ? -1 : 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int teardown(void **state)
{
  (void)state;
  return nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes `text` to <dir>/<name> and returns the path (static buffer). */
static const char *write_conf(const char *name, const char *text)
{
  static char path[256];
  snprintf(path, sizeof(path), "%s/%s", g_dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_true(fputs(text, f) >= 0);
  assert_int_equal(fclose(f), 0);
  return path;
}

/* Loads `text` as a config; returns 0 or -1 with the error in err. cfg is freed unless out. */
static int load_text(const char *text, char *err, size_t errlen, vg_config_t *out)
{
  const char *path = write_conf("vigil.conf.lua", text);
  vg_config_t cfg;
  vg_config_defaults(&cfg);
  err[0] = '\0';
  int rc = vg_config_load(&cfg, path, err, errlen);
  if (out != NULL) {
    *out = cfg;
  } else {
    vg_config_free(&cfg);
  }
  return rc;
}

/* Expects `text` to fail with "<path>:<line>: <message>" (message: a prefix of the rest). */
static void expect_error(const char *text, int line, const char *message)
{
  char err[1024];
  assert_int_equal(load_text(text, err, sizeof(err), NULL), -1);
  char want[1024];
  snprintf(want, sizeof(want), "%s/vigil.conf.lua:%d: %s", g_dir, line, message);
  if (strncmp(err, want, strlen(want)) != 0) {
    fail_msg("expected an error starting with\n  %s\ngot\n  %s", want, err);
  }
}

static void check_defaults(const vg_config_t *cfg)
{
  assert_string_equal(cfg->listen, "127.0.0.1:9095");
  assert_string_equal(cfg->store, "vigil.db");
  assert_string_equal(cfg->policies, "policies");
  assert_string_equal(cfg->repl_socket, "vigil.sock");
  assert_string_equal(cfg->executor_mode, "dry-run");
  assert_null(cfg->token);
  assert_int_equal(cfg->log_level, VG_LOG_INFO);
  assert_int_equal(cfg->limits.memory, 64u << 20);
  assert_int_equal(cfg->limits.instructions, 100000000);
  assert_int_equal(cfg->limits.slice_ms, 1000);
  assert_int_equal(cfg->limits.timeout_ms, 300000);
  assert_int_equal(cfg->error_budget, 5);
  assert_int_equal(cfg->error_window_ms, 300000);
  assert_int_equal(cfg->drain_ms, 30000);
  assert_int_equal(cfg->debounce_ms, 200);
  assert_int_equal(cfg->watchdog_ms, 5000);
  assert_int_equal(cfg->watchdog_hard_ms, 30000);
}

static void test_defaults(void **state)
{
  (void)state;
  vg_config_t cfg;
  vg_config_defaults(&cfg);
  assert_null(cfg.path);
  check_defaults(&cfg);
  vg_config_free(&cfg);
  assert_null(cfg.listen); /* freed and cleared */
}

static void test_empty_file_keeps_defaults(void **state)
{
  (void)state;
  char err[512];
  vg_config_t cfg;
  assert_int_equal(load_text("-- nothing to change\n", err, sizeof(err), &cfg), 0);
  check_defaults(&cfg);
  assert_non_null(cfg.path);
  assert_non_null(strstr(cfg.path, "vigil.conf.lua"));
  vg_config_free(&cfg);
  assert_int_equal(load_text("return {}\n", err, sizeof(err), &cfg), 0);
  check_defaults(&cfg);
  vg_config_free(&cfg);
}

static const char FULL_BODY[] =
    "listen = \"0.0.0.0:9999\"%s\n"
    "store = \"/var/lib/vigil/x.db\"%s\n"
    "policies = \"/etc/vigil/policies\"%s\n"
    "repl_socket = \"/run/vigil.sock\"%s\n"
    "log_level = \"debug\"%s\n"
    "token = env \"VG_CONFIG_TEST_TOKEN\"%s\n"
    "limits = { memory = \"128MB\", instructions = 200000000, slice = \"500ms\", timeout = "
    "\"2m\" }%s\n"
    "policy_errors = { max = 3, window = \"10m\" }%s\n"
    "drain = \"45s\"%s\n"
    "reload_debounce = 0.3%s\n"
    "watchdog = \"2s\"%s\n"
    "executor = { mode = \"enforce\" }%s\n"
    "sources = {}%s\n"
    "notifiers = {}%s\n"
    "intake = {}%s\n";

static void check_full(const vg_config_t *cfg)
{
  assert_string_equal(cfg->listen, "0.0.0.0:9999");
  assert_string_equal(cfg->store, "/var/lib/vigil/x.db");
  assert_string_equal(cfg->policies, "/etc/vigil/policies");
  assert_string_equal(cfg->repl_socket, "/run/vigil.sock");
  assert_int_equal(cfg->log_level, VG_LOG_DEBUG);
  assert_string_equal(cfg->token, "s3cr3t-from-env");
  assert_int_equal(cfg->limits.memory, 128u << 20);
  assert_int_equal(cfg->limits.instructions, 200000000);
  assert_int_equal(cfg->limits.slice_ms, 500);
  assert_int_equal(cfg->limits.timeout_ms, 120000);
  assert_int_equal(cfg->error_budget, 3);
  assert_int_equal(cfg->error_window_ms, 600000);
  assert_int_equal(cfg->drain_ms, 45000);
  assert_int_equal(cfg->debounce_ms, 300);
  assert_int_equal(cfg->watchdog_ms, 2000);
  assert_int_equal(cfg->watchdog_hard_ms, 12000);
  assert_string_equal(cfg->executor_mode, "enforce");
}

static void test_full_config_as_table_and_as_globals(void **state)
{
  (void)state;
  setenv("VG_CONFIG_TEST_TOKEN", "s3cr3t-from-env", 1);
  char text[4096], body[3000], err[512];
  /* as a returned table */
  snprintf(body, sizeof(body), FULL_BODY, ",", ",", ",", ",", ",", ",", ",", ",", ",", ",", ",",
           ",", ",", ",", ",");
  snprintf(text, sizeof(text), "return {\n%s}\n", body);
  vg_config_t a;
  assert_int_equal(load_text(text, err, sizeof(err), &a), 0);
  check_full(&a);
  vg_config_free(&a);
  /* as globals, with locals and helpers that are not keys */
  snprintf(body, sizeof(body), FULL_BODY, "", "", "", "", "", "", "", "", "", "", "", "", "", "",
           "");
  snprintf(text, sizeof(text), "local unused = 'locals are not keys'\n%s", body);
  vg_config_t b;
  assert_int_equal(load_text(text, err, sizeof(err), &b), 0);
  check_full(&b);
  vg_config_free(&b);
  unsetenv("VG_CONFIG_TEST_TOKEN");
}

static void test_numbers_for_durations_and_sizes(void **state)
{
  (void)state;
  char err[512];
  vg_config_t cfg;
  assert_int_equal(load_text("return { drain = 90, limits = { memory = 2097152, timeout = 1.5 },\n"
                             "  policy_errors = { max = 0 } }\n",
                             err, sizeof(err), &cfg),
                   0);
  assert_int_equal(cfg.drain_ms, 90000);
  assert_int_equal(cfg.limits.memory, 2u << 20);
  assert_int_equal(cfg.limits.timeout_ms, 1500);
  assert_int_equal(cfg.error_budget, 0);
  vg_config_free(&cfg);
  assert_int_equal(load_text("limits = { memory = \"1GiB\" }\n", err, sizeof(err), &cfg), 0);
  assert_int_equal(cfg.limits.memory, 1u << 30);
  vg_config_free(&cfg);
}

static void test_unknown_keys(void **state)
{
  (void)state;
  expect_error("return {\n  store = 'x.db',\n  listn = '0.0.0.0:1',\n}\n", 3,
               "unknown key 'listn' (did you mean 'listen'?)");
  expect_error("return {\n  lisen = '0.0.0.0:1',\n}\n", 2,
               "unknown key 'lisen' (did you mean 'listen'?)");
  expect_error("store = 'x.db'\nfrobnicate = true\n", 2, "unknown key 'frobnicate'");
  expect_error("return {\n  limits = {\n    memroy = '1GB',\n  },\n}\n", 3,
               "unknown key 'limits.memroy' (did you mean 'memory'?)");
  expect_error("policy_errors = { max = 1, windw = '1m' }\n", 1,
               "unknown key 'policy_errors.windw' (did you mean 'window'?)");
}

static void test_wrong_types(void **state)
{
  (void)state;
  expect_error("return {\n  listen = 9095,\n}\n", 2, "listen must be a string, not a number");
  expect_error("store = true\n", 1, "store must be a string, not a boolean");
  expect_error("return {\n  log_level = 'loud',\n}\n", 2,
               "log_level must be one of debug, info, warn, error, off");
  expect_error("limits = 5\n", 1, "limits must be a table");
  expect_error("policy_errors = 5\n", 1, "policy_errors must be { max = 5, window = \"5m\" }");
  expect_error("policy_errors = { max = -1 }\n", 1,
               "policy_errors.max must be a non-negative integer (0 = never disable)");
  expect_error("policy_errors = { max = 1.5 }\n", 1, "policy_errors.max must be a non-negative");
  expect_error("executor = 'enforce'\n", 1, "executor must be a table");
  expect_error("executor = { mode = 'yolo' }\n", 1,
               "executor.mode must be \"observe\", \"dry-run\" or \"enforce\"");
  expect_error("store = 'x'\nsources = 'prom'\n", 2, "sources must be a table");
  expect_error("limits = { instructions = 5 }\n", 1,
               "limits.instructions must be an integer >= 100000");
}

static void test_bad_durations_and_sizes(void **state)
{
  (void)state;
  expect_error("store = 'x'\ndrain = 'soon'\n", 2,
               "drain: invalid duration \"soon\" (use e.g. 500ms, 30s, 5m, 1h30m, 2d)");
  expect_error("drain = 0\n", 1, "drain must be positive");
  expect_error("drain = '0s'\n", 1, "drain must be positive");
  expect_error("drain = -5\n", 1, "drain must be positive");
  expect_error("reload_debounce = true\n", 1, "reload_debounce must be a duration like \"30s\"");
  expect_error("limits = { slice = '1 s' }\n", 1, "slice: invalid duration \"1 s\"");
  expect_error("policy_errors = { window = {} }\n", 1, "window must be a duration");
  expect_error("watchdog = '50ms'\n", 1, "watchdog must be at least 100ms");
  expect_error("limits = { memory = '12XB' }\n", 1,
               "memory must be a size like \"64MB\" (at least 1MB)");
  expect_error("limits = { memory = '512KB' }\n", 1, "memory must be a size like \"64MB\"");
  expect_error("limits = { memory = 1000 }\n", 1, "memory must be a size like \"64MB\"");
  expect_error("limits = { memory = true }\n", 1, "memory must be a size like \"64MB\"");
}

/* Numbers too large for a duration or a size are refused as out of range, not converted with
 * undefined behaviour into something else ("must be positive", or a wrapped size). */
static void test_huge_duration_refused(void **state)
{
  (void)state;
  char err[512];
  assert_int_equal(load_text("drain = 1e300\n", err, sizeof(err), NULL), -1);
  if (strstr(err, "must be positive") != NULL) {
    fail_msg("1e300 s reported as not positive: %s", err);
  }
}

static void test_huge_size_refused(void **state)
{
  (void)state;
  char err[512];
  vg_config_t cfg;
  int rc = load_text("limits = { memory = 1e300 }\n", err, sizeof(err), &cfg);
  size_t memory = cfg.limits.memory;
  vg_config_free(&cfg);
  if (rc == 0) {
    fail_msg("limits.memory = 1e300 accepted as %zu bytes", memory);
  }
}

static void test_token_literal_refused(void **state)
{
  (void)state;
  char err[1024];
  expect_error("return {\n  listen = '127.0.0.1:1',\n  token = 'hunter2',\n}\n", 3,
               "token must come from env \"NAME\" or file \"PATH\", never a literal in the "
               "config file");
  assert_int_equal(load_text("token = 'hunter2'\n", err, sizeof(err), NULL), -1);
  assert_null(strstr(err, "hunter2")); /* the literal itself is not repeated */
  expect_error("token = 12345\n", 1, "token must come from env");
}

static void test_token_from_env_and_file(void **state)
{
  (void)state;
  char err[1024], text[512];
  vg_config_t cfg;
  setenv("VG_CONFIG_TEST_TOKEN", "from-env", 1);
  assert_int_equal(load_text("token = env \"VG_CONFIG_TEST_TOKEN\"\n", err, sizeof(err), &cfg), 0);
  assert_string_equal(cfg.token, "from-env");
  vg_config_free(&cfg);
  unsetenv("VG_CONFIG_TEST_TOKEN");

  char tok[256];
  snprintf(tok, sizeof(tok), "%s", write_conf("token", "from-file\n"));
  snprintf(text, sizeof(text), "return { token = file \"%s\" }\n", tok);
  assert_int_equal(load_text(text, err, sizeof(err), &cfg), 0);
  assert_string_equal(cfg.token, "from-file"); /* one trailing newline trimmed */
  vg_config_free(&cfg);

  write_conf("token", "crlf\r\n");
  assert_int_equal(load_text(text, err, sizeof(err), &cfg), 0);
  assert_string_equal(cfg.token, "crlf");
  vg_config_free(&cfg);
}

static void test_secret_prints_only_its_origin(void **state)
{
  (void)state;
  char err[1024];
  vg_config_t cfg;
  setenv("VG_CONFIG_TEST_TOKEN", "do-not-show", 1);
  assert_int_equal(
      load_text("local s = env 'VG_CONFIG_TEST_TOKEN'\n"
                "return { token = s, store = tostring(s), listen = ('%s'):format(s) }\n",
                err, sizeof(err), &cfg),
      0);
  assert_string_equal(cfg.store, "<secret env:VG_CONFIG_TEST_TOKEN>");
  assert_string_equal(cfg.listen, "<secret env:VG_CONFIG_TEST_TOKEN>");
  assert_string_equal(cfg.token, "do-not-show");
  vg_config_free(&cfg);
  /* an error about the secret does not show it either */
  assert_int_equal(load_text("listen = env 'VG_CONFIG_TEST_TOKEN'\n", err, sizeof(err), NULL), -1);
  assert_null(strstr(err, "do-not-show"));
  assert_non_null(strstr(err, "listen must be a string"));
  unsetenv("VG_CONFIG_TEST_TOKEN");
}

static void test_missing_env_and_file(void **state)
{
  (void)state;
  unsetenv("VG_CONFIG_TEST_MISSING");
  expect_error("store = 'x'\ntoken = env \"VG_CONFIG_TEST_MISSING\"\n", 2,
               "env: environment variable VG_CONFIG_TEST_MISSING is not set");
  expect_error("token = file \"/nonexistent/vigil/token\"\n", 1,
               "file: cannot read /nonexistent/vigil/token: No such file or directory");
  char big[10000];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  char text[512], tok[256];
  snprintf(tok, sizeof(tok), "%s", write_conf("bigtoken", big));
  snprintf(text, sizeof(text), "token = file \"%s\"\n", tok);
  char want[512];
  snprintf(want, sizeof(want), "file: %s is larger than 8 KiB", tok);
  expect_error(text, 1, want);
}

static void test_files_that_fail_to_run(void **state)
{
  (void)state;
  char err[1024], want[512];
  expect_error("return {\n  store = 'x',\n  listen = ,\n}\n", 3, "");
  expect_error("store = 'x'\nerror('config broke')\n", 2, "config broke");
  expect_error("local t = nil\nstore = t.x\n", 2, "attempt to index a nil value");
  /* the sandbox: no io, no os.execute */
  expect_error("store = io.open('/etc/passwd'):read('a')\n", 1, "attempt to index a nil value");
  expect_error("os.execute('true')\n", 1, "attempt to call a nil value");

  assert_int_equal(load_text("return 5\n", err, sizeof(err), NULL), -1);
  snprintf(want, sizeof(want),
           "%s/vigil.conf.lua: a config file returns a table (or sets "
           "globals), not a number",
           g_dir);
  assert_string_equal(err, want);

  vg_config_t cfg;
  vg_config_defaults(&cfg);
  assert_int_equal(vg_config_load(&cfg, "/nonexistent/vigil.conf.lua", err, sizeof(err)), -1);
  assert_string_equal(err,
                      "/nonexistent/vigil.conf.lua: cannot read the config file: No such "
                      "file or directory");
  check_defaults(&cfg); /* untouched */
  vg_config_free(&cfg);
}

/* A config that never ends is stopped by its budget and reported at file:line like any other
 * error, with the budget that stopped it. */
static void test_infinite_loop_stopped(void **state)
{
  (void)state;
  char err[1024];
  assert_int_equal(load_text("local n = 0\nwhile true do n = n + 1 end\n", err, sizeof(err), NULL),
                   -1);
  assert_non_null(strstr(err, "instruction budget exceeded"));
  char want[256];
  snprintf(want, sizeof(want), "%s/vigil.conf.lua:2: ", g_dir);
  if (strncmp(err, want, strlen(want)) != 0) {
    fail_msg("expected \"%s...\", got \"%s\"", want, err);
  }
}

static void test_failed_load_keeps_earlier_values(void **state)
{
  (void)state;
  /* keys are applied in order; a failure reports but the caller must not use cfg: it still
   * frees cleanly (ASan checks) */
  char err[512];
  vg_config_t cfg;
  assert_int_equal(load_text("store = 'y.db'\ndrain = 'never'\n", err, sizeof(err), &cfg), -1);
  assert_null(cfg.path);
  vg_config_free(&cfg);
}

/* ---- notifiers ---- */

#define PD_KEY "R0123456789abcdef0123456789abcde" /* 32 characters, as PagerDuty's */
#define SLACK_URL "https://hooks.slack.com/services/T000/B000/SLACKSECRETPATH"

static void set_notifier_env(void)
{
  setenv("VG_CONFIG_TEST_PD", PD_KEY, 1);
  setenv("VG_CONFIG_TEST_SLACK", SLACK_URL, 1);
  setenv("VG_CONFIG_TEST_HOOK", "hook-signing-secret", 1);
  setenv("VG_CONFIG_TEST_AUTH", "Bearer header-secret", 1);
}

static void unset_notifier_env(void)
{
  unsetenv("VG_CONFIG_TEST_PD");
  unsetenv("VG_CONFIG_TEST_SLACK");
  unsetenv("VG_CONFIG_TEST_HOOK");
  unsetenv("VG_CONFIG_TEST_AUTH");
}

static const char *header_of(const vg_notifier_config_t *nc, const char *name)
{
  for (size_t i = 0; i < nc->nheaders; i++) {
    if (strcmp(nc->headers[i].name, name) == 0) {
      return nc->headers[i].value;
    }
  }
  return NULL;
}

static void test_notifiers_of_each_kind(void **state)
{
  (void)state;
  set_notifier_env();
  char err[1024], text[2048], keyfile[256];
  snprintf(keyfile, sizeof(keyfile), "%s", write_conf("pdkey", PD_KEY "\n"));
  snprintf(
      text, sizeof(text),
      "notifiers = {\n"
      "  oncall = { kind = 'pagerduty', routing_key = env 'VG_CONFIG_TEST_PD' },\n"
      "  backup = { kind = 'pagerduty', routing_key = file '%s',\n"
      "             url = 'http://127.0.0.1:8080/v2/enqueue' },\n"
      "  team = { kind = 'slack', webhook = env 'VG_CONFIG_TEST_SLACK', channel = '#sre',\n"
      "           username = 'vigil' },\n"
      "  hook = { kind = 'webhook', url = 'https://hooks.internal/vigil',\n"
      "           secret = env 'VG_CONFIG_TEST_HOOK',\n"
      "           headers = { ['X-Team'] = 'sre', Authorization = env 'VG_CONFIG_TEST_AUTH' } },\n"
      "  bare = { kind = 'webhook', url = 'http://127.0.0.1:9/x' },\n"
      "}\n",
      keyfile);
  vg_config_t cfg;
  assert_int_equal(load_text(text, err, sizeof(err), &cfg), 0);
  assert_int_equal(cfg.nnotifiers, 5);

  const vg_notifier_config_t *pd = vg_config_notifier(&cfg, "oncall");
  assert_non_null(pd);
  assert_string_equal(pd->name, "oncall");
  assert_string_equal(pd->kind, "pagerduty");
  assert_string_equal(pd->routing_key, PD_KEY);
  assert_null(pd->url); /* the builder's default: PagerDuty's Events API */
  assert_null(pd->webhook);
  assert_null(pd->secret);
  assert_int_equal(pd->nheaders, 0);

  const vg_notifier_config_t *backup = vg_config_notifier(&cfg, "backup");
  assert_non_null(backup);
  assert_string_equal(backup->routing_key, PD_KEY); /* from the file, newline trimmed */
  assert_string_equal(backup->url, "http://127.0.0.1:8080/v2/enqueue");

  const vg_notifier_config_t *team = vg_config_notifier(&cfg, "team");
  assert_non_null(team);
  assert_string_equal(team->kind, "slack");
  assert_string_equal(team->webhook, SLACK_URL);
  assert_string_equal(team->channel, "#sre");
  assert_string_equal(team->username, "vigil");
  assert_null(team->routing_key);

  const vg_notifier_config_t *hook = vg_config_notifier(&cfg, "hook");
  assert_non_null(hook);
  assert_string_equal(hook->kind, "webhook");
  assert_string_equal(hook->url, "https://hooks.internal/vigil");
  assert_string_equal(hook->secret, "hook-signing-secret");
  assert_int_equal(hook->nheaders, 2);
  assert_string_equal(header_of(hook, "X-Team"), "sre");
  assert_string_equal(header_of(hook, "Authorization"), "Bearer header-secret");

  const vg_notifier_config_t *bare = vg_config_notifier(&cfg, "bare");
  assert_non_null(bare);
  assert_null(bare->secret);
  assert_int_equal(bare->nheaders, 0);

  assert_null(vg_config_notifier(&cfg, "nobody"));
  assert_null(vg_config_notifier(&cfg, "Oncall")); /* names are exact */
  assert_null(vg_config_source(&cfg, "oncall"));   /* notifiers are not sources */
  vg_config_free(&cfg);
  assert_null(cfg.notifiers);
  assert_int_equal(cfg.nnotifiers, 0);
  assert_null(vg_config_notifier(NULL, "oncall"));
  assert_null(vg_config_notifier(&cfg, "oncall"));
  unset_notifier_env();
}

static void test_notifier_shapes_refused(void **state)
{
  (void)state;
  set_notifier_env();
  expect_error("store = 'x'\nnotifiers = 'oncall'\n", 2, "notifiers must be a table");
  expect_error("notifiers = { { kind = 'slack' } }\n", 1,
               "notifiers must map names (letters, digits, _ and -) to tables");
  expect_error("notifiers = { ['on call'] = { kind = 'slack' } }\n", 1,
               "notifiers must map names (letters, digits, _ and -) to tables");
  expect_error("notifiers = { oncall = 'pagerduty' }\n", 1,
               "notifiers.oncall must be a table { kind = ..., ... }");
  /* unknown keys, with a suggestion, at their line */
  expect_error(
      "return {\n  notifiers = {\n    oncall = { kind = 'pagerduty',\n"
      "      routing_kye = env 'VG_CONFIG_TEST_PD' },\n  },\n}\n",
      4, "unknown key 'notifiers.oncall.routing_kye' (did you mean 'routing_key'?)");
  expect_error(
      "notifiers = { team = { kind = 'slack', webhook = env 'VG_CONFIG_TEST_SLACK',\n"
      "  chanel = '#sre' } }\n",
      2, "unknown key 'notifiers.team.chanel' (did you mean 'channel'?)");
  expect_error(
      "notifiers = { x = { kind = 'slack', webhook = env 'VG_CONFIG_TEST_SLACK', "
      "token = env 'VG_CONFIG_TEST_HOOK' } }\n",
      1, "unknown key 'notifiers.x.token'");
  /* kinds */
  expect_error("notifiers = { oncall = { routing_key = env 'VG_CONFIG_TEST_PD' } }\n", 1,
               "notifiers.oncall.kind must be one of pagerduty, slack, webhook");
  expect_error("notifiers = { oncall = { kind = 'email' } }\n", 1,
               "notifiers.oncall.kind must be one of pagerduty, slack, webhook");
  expect_error("notifiers = { oncall = { kind = 5 } }\n", 1,
               "notifiers.oncall.kind must be one of pagerduty, slack, webhook");
  /* a key of another kind */
  expect_error(
      "notifiers = { team = { kind = 'slack', webhook = env 'VG_CONFIG_TEST_SLACK',\n"
      "  routing_key = env 'VG_CONFIG_TEST_PD' } }\n",
      2,
      "notifiers.team.routing_key is not a key of a slack notifier (it takes webhook, "
      "channel, username)");
  expect_error(
      "notifiers = { oncall = { kind = 'pagerduty', routing_key = env "
      "'VG_CONFIG_TEST_PD', headers = {} } }\n",
      1,
      "notifiers.oncall.headers is not a key of a pagerduty notifier (it takes "
      "routing_key, url)");
  expect_error("notifiers = { hook = { kind = 'webhook', url = 'https://h/x', channel = '#a' } }\n",
               1,
               "notifiers.hook.channel is not a key of a webhook notifier (it takes url, secret, "
               "headers)");
  /* required per kind, at the notifier's line */
  expect_error("store = 'x'\nnotifiers = {\n  oncall = { kind = 'pagerduty' },\n}\n", 3,
               "notifiers.oncall needs routing_key (a pagerduty notifier)");
  expect_error("notifiers = { team = { kind = 'slack', channel = '#sre' } }\n", 1,
               "notifiers.team needs webhook (a slack notifier)");
  expect_error("notifiers = { hook = { kind = 'webhook', secret = env 'VG_CONFIG_TEST_HOOK' } }\n",
               1, "notifiers.hook needs url (a webhook notifier)");
  /* urls */
  expect_error("notifiers = { hook = { kind = 'webhook', url = 'ftp://h/x' } }\n", 1,
               "notifiers.hook.url must be an http:// or https:// URL");
  expect_error("notifiers = { hook = { kind = 'webhook', url = 'https://' } }\n", 1,
               "notifiers.hook.url must be an http:// or https:// URL");
  expect_error("notifiers = { hook = { kind = 'webhook', url = 'https://h/a b' } }\n", 1,
               "notifiers.hook.url must be an http:// or https:// URL");
  expect_error("notifiers = { hook = { kind = 'webhook', url = 80 } }\n", 1,
               "notifiers.hook.url must be an http:// or https:// URL");
  expect_error(
      "notifiers = { oncall = { kind = 'pagerduty', routing_key = env "
      "'VG_CONFIG_TEST_PD', url = 'events.pagerduty.com' } }\n",
      1, "notifiers.oncall.url must be an http:// or https:// URL");
  /* plain options */
  expect_error(
      "notifiers = { team = { kind = 'slack', webhook = env 'VG_CONFIG_TEST_SLACK', "
      "channel = 5 } }\n",
      1,
      "notifiers.team.channel must be a string of 1 to 80 characters without control "
      "codes");
  expect_error(
      "notifiers = { team = { kind = 'slack', webhook = env 'VG_CONFIG_TEST_SLACK', "
      "username = 'a\\nb' } }\n",
      1, "notifiers.team.username must be a string of 1 to 80 characters");
  /* headers */
  expect_error("notifiers = { hook = { kind = 'webhook', url = 'https://h/x', headers = 5 } }\n", 1,
               "notifiers.hook.headers must be a table");
  expect_error(
      "notifiers = { hook = { kind = 'webhook', url = 'https://h/x',\n"
      "  headers = { ['X Team'] = 'sre' } } }\n",
      2, "notifiers.hook.headers must map header names (letters, digits and '-')");
  expect_error(
      "notifiers = { hook = { kind = 'webhook', url = 'https://h/x',\n"
      "  headers = { ['content-type'] = 'text/plain' } } }\n",
      2, "notifiers.hook.headers must not set content-type: vigil sets it");
  expect_error(
      "notifiers = { hook = { kind = 'webhook', url = 'https://h/x',\n"
      "  headers = { ['X-Vigil-Signature'] = 'forged' } } }\n",
      2, "notifiers.hook.headers must not set X-Vigil-Signature: vigil sets it");
  expect_error(
      "notifiers = { hook = { kind = 'webhook', url = 'https://h/x',\n"
      "  headers = { ['X-Team'] = 'a\\r\\nX-Evil: 1' } } }\n",
      2, "notifiers.hook.headers.X-Team must be a string or a secret (env/file)");
  expect_error(
      "notifiers = { hook = { kind = 'webhook', url = 'https://h/x',\n"
      "  headers = { ['X-Team'] = {} } } }\n",
      2, "notifiers.hook.headers.X-Team must be a string or a secret (env/file)");
  unset_notifier_env();
}

/* Credentials come from env or file like `token`; a literal is refused, and neither the
 * literal nor a secret's value ever appears in the error. */
static void test_notifier_secrets(void **state)
{
  (void)state;
  char err[1024];
  set_notifier_env();
  expect_error(
      "return {\n  notifiers = {\n    oncall = { kind = 'pagerduty',\n"
      "      routing_key = '" PD_KEY "' },\n  },\n}\n",
      4,
      "notifiers.oncall.routing_key must come from env \"NAME\" or file \"PATH\", never "
      "a literal in the config file");
  assert_int_equal(
      load_text("notifiers = { oncall = { kind = 'pagerduty', routing_key = '" PD_KEY "' } }\n",
                err, sizeof(err), NULL),
      -1);
  assert_null(strstr(err, PD_KEY));
  expect_error("notifiers = { team = { kind = 'slack', webhook = '" SLACK_URL "' } }\n", 1,
               "notifiers.team.webhook must come from env \"NAME\" or file \"PATH\", never a "
               "literal");
  assert_int_equal(
      load_text("notifiers = { team = { kind = 'slack', webhook = '" SLACK_URL "' } }\n", err,
                sizeof(err), NULL),
      -1);
  assert_null(strstr(err, "SLACKSECRETPATH"));
  expect_error(
      "notifiers = { hook = { kind = 'webhook', url = 'https://h/x', secret = "
      "'hunter2' } }\n",
      1, "notifiers.hook.secret must come from env \"NAME\" or file \"PATH\"");
  assert_int_equal(load_text("notifiers = { hook = { kind = 'webhook', url = 'https://h/x', "
                             "secret = 'hunter2' } }\n",
                             err, sizeof(err), NULL),
                   -1);
  assert_null(strstr(err, "hunter2"));
  expect_error("notifiers = { oncall = { kind = 'pagerduty', routing_key = 42 } }\n", 1,
               "notifiers.oncall.routing_key must come from env");

  /* a secret of the wrong shape: said so, and not shown */
  setenv("VG_CONFIG_TEST_PD", "short-key-do-not-show", 1);
  expect_error(
      "notifiers = { oncall = { kind = 'pagerduty', routing_key = env "
      "'VG_CONFIG_TEST_PD' } }\n",
      1,
      "notifiers.oncall.routing_key must be a 32-character integration key (value not "
      "shown)");
  assert_int_equal(load_text("notifiers = { oncall = { kind = 'pagerduty', routing_key = env "
                             "'VG_CONFIG_TEST_PD' } }\n",
                             err, sizeof(err), NULL),
                   -1);
  assert_null(strstr(err, "short-key-do-not-show"));
  setenv("VG_CONFIG_TEST_SLACK", "hooks.slack.com/services/T/B/NOSCHEME-do-not-show", 1);
  expect_error("notifiers = { team = { kind = 'slack', webhook = env 'VG_CONFIG_TEST_SLACK' } }\n",
               1,
               "notifiers.team.webhook must be an http:// or https:// URL (value not shown: it "
               "is a secret)");
  assert_int_equal(
      load_text("notifiers = { team = { kind = 'slack', webhook = env 'VG_CONFIG_TEST_SLACK' } }\n",
                err, sizeof(err), NULL),
      -1);
  assert_null(strstr(err, "NOSCHEME-do-not-show"));
  setenv("VG_CONFIG_TEST_HOOK", "two\nlines-do-not-show", 1);
  expect_error(
      "notifiers = { hook = { kind = 'webhook', url = 'https://h/x', secret = env "
      "'VG_CONFIG_TEST_HOOK' } }\n",
      1, "notifiers.hook.secret must be non-empty, without NUL, CR or LF (value not shown)");
  setenv("VG_CONFIG_TEST_HOOK", "", 1);
  expect_error(
      "notifiers = { hook = { kind = 'webhook', url = 'https://h/x', secret = env "
      "'VG_CONFIG_TEST_HOOK' } }\n",
      1, "notifiers.hook.secret must be non-empty");
  setenv("VG_CONFIG_TEST_AUTH", "Bearer x\r\nX-Evil: do-not-show", 1);
  assert_int_equal(load_text("notifiers = { hook = { kind = 'webhook', url = 'https://h/x', "
                             "headers = { Authorization = env 'VG_CONFIG_TEST_AUTH' } } }\n",
                             err, sizeof(err), NULL),
                   -1);
  assert_non_null(strstr(err, "notifiers.hook.headers.Authorization must be a string or a secret"));
  assert_null(strstr(err, "do-not-show"));
  unsetenv("VG_CONFIG_TEST_PD");
  expect_error(
      "notifiers = { oncall = { kind = 'pagerduty', routing_key = env "
      "'VG_CONFIG_TEST_PD' } }\n",
      1, "env: environment variable VG_CONFIG_TEST_PD is not set");
  unset_notifier_env();
}

/* A load that fails after some notifiers (and some of their secrets) were copied frees them
 * all (ASan and LSan check). */
static void test_notifier_failure_frees(void **state)
{
  (void)state;
  char err[1024];
  set_notifier_env();
  vg_config_t cfg;
  assert_int_equal(
      load_text("notifiers = {\n"
                "  a = { kind = 'pagerduty', routing_key = env 'VG_CONFIG_TEST_PD' },\n"
                "  b = { kind = 'webhook', url = 'https://h/x', secret = env "
                "'VG_CONFIG_TEST_HOOK', headers = { A = 'x', B = env "
                "'VG_CONFIG_TEST_AUTH', ['C D'] = 'y' } },\n"
                "}\n",
                err, sizeof(err), &cfg),
      -1);
  assert_non_null(strstr(err, "headers must map header names"));
  assert_true(cfg.nnotifiers >= 1);
  vg_config_free(&cfg);
  unset_notifier_env();
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_defaults),
    cmocka_unit_test(test_empty_file_keeps_defaults),
    cmocka_unit_test(test_full_config_as_table_and_as_globals),
    cmocka_unit_test(test_numbers_for_durations_and_sizes),
    cmocka_unit_test(test_unknown_keys),
    cmocka_unit_test(test_wrong_types),
    cmocka_unit_test(test_bad_durations_and_sizes),
    cmocka_unit_test(test_huge_duration_refused),
    cmocka_unit_test(test_huge_size_refused),
    cmocka_unit_test(test_token_literal_refused),
    cmocka_unit_test(test_token_from_env_and_file),
    cmocka_unit_test(test_secret_prints_only_its_origin),
    cmocka_unit_test(test_missing_env_and_file),
    cmocka_unit_test(test_files_that_fail_to_run),
    cmocka_unit_test(test_infinite_loop_stopped),
    cmocka_unit_test(test_failed_load_keeps_earlier_values),
    cmocka_unit_test(test_notifiers_of_each_kind),
    cmocka_unit_test(test_notifier_shapes_refused),
    cmocka_unit_test(test_notifier_secrets),
    cmocka_unit_test(test_notifier_failure_frees),
  };
  if (getenv("VG_TEST_FILTER") != NULL) { /* run only the tests matching the pattern */
    cmocka_set_test_filter(getenv("VG_TEST_FILTER"));
  }
  return cmocka_run_group_tests(tests, setup, teardown);
}
