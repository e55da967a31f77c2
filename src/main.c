/* vigil: command-line entry point. Parses the subcommand and its options and hands over to
 * the daemon, the REPL, the spec runner or the checker. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vigil/version.h"

#include "core/config.h"
#include "core/ctl.h"
#include "core/daemon.h"
#include "core/log.h"
#include "core/policy.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "repl/repl.h"

static void usage(FILE *out)
{
  fputs(
      "usage: vigil <command> [options]\n"
      "\n"
      "commands:\n"
      "  run   [-c FILE]             the daemon: HTTP intake, store, policies, REPL socket\n"
      "  repl  [-c FILE] [--attach SOCKET]\n"
      "                              a live Lua prompt, standalone or inside a daemon\n"
      "  test  [PATH...]             run policy specs (*_spec.lua); ends with \"N passed, N "
      "failed\"\n"
      "  check [-c FILE] [PATH...]   validate the config and policies without running them\n"
      "  version                     print the version\n"
      "\n"
      "against a running daemon (--url, or the config's listen):\n"
      "  alerts    [--status S] [--filter M]...   the alerts it holds\n"
      "  incidents [--status S] [--severity S]    its incidents\n"
      "  incident ID                              one incident, its alerts and timeline\n"
      "  report ID                                the incident report, as Markdown\n"
      "  ack|resolve|close ID [--who W] [--comment C]\n"
      "  actions   [--state S] [--policy P]       what the executor decided and did\n"
      "  action ID                                one action with its audit trail\n"
      "  approve|deny ID [--who W] [--comment C]  an action awaiting approval\n"
      "  reconcile ID --outcome done|failed       an action whose outcome is unknown\n"
      "  kill-switch [on|off]                     read or set: no action runs while on\n"
      "\n"
      "`vigil <command> --help` describes each command.\n",
      out);
}

/* Options shared by run, repl and check. */
typedef struct {
  const char *config;
  const char *policies;
  const char *log_level;
  const char *attach;
  bool hello;
} opts_t;

static int parse_opts(int argc, char **argv, opts_t *o, const char *help)
{
  static const struct option longopts[] = {
    { "config", required_argument, NULL, 'c' },
    { "policies", required_argument, NULL, 'p' },
    { "log-level", required_argument, NULL, 'l' },
    { "attach", required_argument, NULL, 'a' },
    { "hello", no_argument, NULL, 'H' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "c:p:l:a:h", longopts, NULL)) != -1) {
    switch (c) {
      case 'c':
        o->config = optarg;
        break;
      case 'p':
        o->policies = optarg;
        break;
      case 'l':
        o->log_level = optarg;
        break;
      case 'a':
        o->attach = optarg;
        break;
      case 'H':
        o->hello = true;
        break;
      case 'h':
        fputs(help, stdout);
        exit(0);
      default:
        fputs(help, stderr);
        exit(2);
    }
  }
  return optind;
}

/* Loads the config (or defaults) and applies command-line overrides. */
static int load_config(vg_config_t *cfg, const opts_t *o)
{
  vg_config_defaults(cfg);
  if (o->config != NULL) {
    char err[1024];
    if (vg_config_load(cfg, o->config, err, sizeof(err)) != 0) {
      fprintf(stderr, "%s\n", err);
      return -1;
    }
  }
  if (o->policies != NULL) {
    free(cfg->policies);
    cfg->policies = strdup(o->policies);
  }
  if (o->log_level != NULL) {
    int lvl = vg_log_level_parse(o->log_level);
    if (lvl < 0) {
      fprintf(stderr, "vigil: --log-level must be debug, info, warn, error or off\n");
      return -1;
    }
    cfg->log_level = lvl;
  }
  vg_log_set_level((vg_log_level_t)cfg->log_level);
  return 0;
}

static const char run_help[] =
    "usage: vigil run [-c FILE] [--policies DIR] [--log-level LEVEL]\n"
    "\n"
    "Runs the daemon: loads every policy in the policies directory (default ./policies),\n"
    "reloads them when their files change (or on SIGHUP), and opens the REPL socket\n"
    "(default ./vigil.sock, mode 0600) for `vigil repl --attach`. SIGINT/SIGTERM stop it cleanly.\n"
    "\n"
    "  -c, --config FILE     Lua config file (docs/configuration.md); defaults need none\n"
    "  -p, --policies DIR    policies directory (overrides the config)\n"
    "  -l, --log-level L     debug, info, warn, error or off\n";

static int cmd_run(int argc, char **argv)
{
  opts_t o = { 0 };
  parse_opts(argc, argv, &o, run_help);
  vg_config_t cfg;
  if (load_config(&cfg, &o) != 0) {
    vg_config_free(&cfg);
    return 2;
  }
  int rc = vg_daemon_run(&cfg, o.hello);
  vg_config_free(&cfg);
  return rc;
}

static const char repl_help[] =
    "usage: vigil repl [-c FILE] [--policies DIR] [--attach SOCKET]\n"
    "\n"
    "A Lua prompt on vigil's runtime: every line runs as a task, so async calls such as\n"
    "vigil.sleep(1) just work; expressions print their value; Ctrl-C interrupts the running\n"
    "line; Tab completes vigil.* names. With input that is not a terminal, runs it as a script\n"
    "(each top-level statement in order) and exits non-zero on the first error.\n"
    "\n"
    "  -c, --config FILE     config file: the REPL gets the same policies and limits\n"
    "  -p, --policies DIR    policies directory\n"
    "  -a, --attach SOCKET   run lines inside a running daemon (its vigil.sock)\n";

static int cmd_repl(int argc, char **argv)
{
  opts_t o = { 0 };
  parse_opts(argc, argv, &o, repl_help);
  if (o.attach != NULL) {
    return vg_repl_attach(o.attach);
  }
  vg_config_t cfg;
  if (load_config(&cfg, &o) != 0) {
    vg_config_free(&cfg);
    return 2;
  }
  int rc = vg_repl_standalone(&cfg, o.config != NULL || o.policies != NULL);
  vg_config_free(&cfg);
  return rc;
}

static const char test_help[] =
    "usage: vigil test [PATH...]\n"
    "\n"
    "Runs *_spec.lua files (each PATH is a spec file or a directory searched recursively;\n"
    "default: ./policies and ./tests if present). Each file runs in a fresh sandboxed VM on a\n"
    "virtual clock. Prints each failure with expected vs actual and file:line, then\n"
    "\"N passed, N failed\"; exits 1 if any failed.\n";

static int cmd_test(int argc, char **argv)
{
  opts_t o = { 0 };
  int first = parse_opts(argc, argv, &o, test_help);
  if (o.log_level != NULL) {
    vg_log_set_level((vg_log_level_t)vg_log_level_parse(o.log_level));
  } else {
    vg_log_set_level(VG_LOG_WARN);
  }
  return vg_spec_main(argc - first, argv + first);
}

static const char check_help[] =
    "usage: vigil check [-c FILE] [PATH...]\n"
    "\n"
    "Compiles and validates the config and policy files (or the policies directory) without\n"
    "running anything. Prints file:line: message for each problem; exits 1 if there is one.\n";

static bool is_policy_name(const char *name)
{
  size_t n = strlen(name);
  return name[0] != '.' && n > 4 && strcmp(name + n - 4, ".lua") == 0 &&
         !(n > 9 && strcmp(name + n - 9, "_spec.lua") == 0);
}

static int cmp_str(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Checks one file, or every policy file of a directory (with duplicate names). require
 * ("lib.x") reads the lib/ beside the file, as the daemon does for its policies directory. */
static int check_path(vg_runtime_t *rt, const char *path, int *checked)
{
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return 1;
  }
  char err[1024], name[80], lib_dir[4096];
  if (S_ISDIR(st.st_mode)) {
    snprintf(lib_dir, sizeof(lib_dir), "%s/lib", path);
  } else {
    const char *slash = strrchr(path, '/');
    snprintf(lib_dir, sizeof(lib_dir), "%.*s/lib", slash ? (int)(slash - path) : 1,
             slash ? path : ".");
  }
  if (!S_ISDIR(st.st_mode)) {
    (*checked)++;
    if (vg_policy_check_file(rt, path, lib_dir, name, sizeof(name), err, sizeof(err)) != 0) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    return 0;
  }
  DIR *d = opendir(path);
  if (d == NULL) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return 1;
  }
  char *files[1024];
  size_t n = 0;
  struct dirent *e;
  while (n < 1024 && (e = readdir(d)) != NULL) {
    if (is_policy_name(e->d_name)) {
      files[n++] = strdup(e->d_name);
    }
  }
  closedir(d);
  qsort(files, n, sizeof(files[0]), cmp_str);
  char names[1024][80];
  int problems = 0;
  for (size_t i = 0; i < n; i++) {
    char file[4096];
    snprintf(file, sizeof(file), "%s/%s", path, files[i]);
    (*checked)++;
    names[i][0] = '\0';
    if (vg_policy_check_file(rt, file, lib_dir, names[i], sizeof(names[i]), err, sizeof(err)) !=
        0) {
      fprintf(stderr, "%s\n", err);
      problems++;
      continue;
    }
    for (size_t j = 0; j < i; j++) {
      if (strcmp(names[j], names[i]) == 0) {
        fprintf(stderr, "%s:1: duplicate policy name '%s' (also in %s/%s)\n", file, names[i], path,
                files[j]);
        problems++;
      }
    }
  }
  for (size_t i = 0; i < n; i++) {
    free(files[i]);
  }
  return problems;
}

static int cmd_check(int argc, char **argv)
{
  opts_t o = { 0 };
  int first = parse_opts(argc, argv, &o, check_help);
  vg_log_set_level(VG_LOG_WARN);
  vg_config_t cfg;
  if (load_config(&cfg, &o) != 0) {
    vg_config_free(&cfg);
    return 1;
  }
  vg_runtime_t *rt = vg_runtime_new();
  if (rt == NULL) {
    vg_config_free(&cfg);
    return 1;
  }
  rt->limits = cfg.limits;
  int problems = 0, checked = 0;
  if (first >= argc) {
    problems += check_path(rt, cfg.policies, &checked);
  }
  for (int i = first; i < argc; i++) {
    problems += check_path(rt, argv[i], &checked);
  }
  vg_runtime_free(rt);
  vg_config_free(&cfg);
  printf("%d checked, %d with problems\n", checked, problems);
  return problems > 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
  /* A client that resets mid-answer must cost an EPIPE, not the process. */
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "run") == 0) {
    return cmd_run(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "repl") == 0) {
    return cmd_repl(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "test") == 0) {
    return cmd_test(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "check") == 0) {
    return cmd_check(argc - 1, argv + 1);
  }
  if (vg_ctl_is_command(cmd)) {
    return vg_ctl_main(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("vigil %s\n", VIGIL_VERSION);
    return 0;
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "vigil: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return 2;
}
